"""The Unsloth / bitsandbytes peer (../shared/bench/peers/peer_qlora.py, carried in .peer-kit/peers)
on a random Qwen2-7B shape (assets/qwen2-7b/config.json) instead of its built-in Qwen2-1.5B:
the peer's own model maker and runner, with its config swapped before it runs.
usage: python3 tests/gpu/peer_7b.py PEERS_DIR CONFIG_JSON [peer_qlora.py arguments...]"""
import json, os, sys

peers, config = sys.argv[1], sys.argv[2]
sys.path.insert(0, peers)
import peer_qlora as p  # noqa: E402

cfg = json.load(open(config))
p.QWEN2_1P5B = cfg  # the maker checks the saved config against this dict, the runner keys its cache on it
args = sys.argv[3:]
# --adopt DIR: take DIR's existing files (written by `loratune init-random` from the same config) as the
# peer's model, so that both stacks load one checkpoint: the peer's cache marker is written for them
if args[:1] == ["--adopt"]:
    d = args[1]
    args = args[2:]
    json.dump({"seed": 3407, "config": p.config_digest(), "adopted": "loratune init-random"},
              open(os.path.join(d, "peer_model.json"), "w"))
sys.argv = [os.path.join(peers, "peer_qlora.py")] + args
sys.exit(p.main())

"""test_dist_python.py - loratune.distributed (the Python face of data parallel), CPU backend:
  - 2 ranks as threads (ProcessGroup.local) with grad_accum 2 train the losses and adapter of one
    plain Trainer with grad_accum 4 (within 1e-6);
  - 2 processes launched as torchrun does (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR,
    MASTER_PORT) with init_from_env() give the same, and rank 0 alone writes output_dir;
  - the group's broadcast gives rank 0's bytes; an abort reaches the other rank as NcclError.
Run by ctest with LORATUNE_LIBRARY and PYTHONPATH=bindings/python."""
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading

ROOT = os.environ.get("LT_REPO_ROOT") or os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
try:
    import loratune as lt
    from loratune import distributed as dist
except Exception as e:  # no library built
    print("SKIP: loratune does not load: %s" % e)
    sys.exit(77)

MODEL = os.path.join(ROOT, "tests", "fixtures", "data", "tiny-untied")
TOK = os.path.join(ROOT, "assets", "qwen2-tokenizer")
STEPS = 6


def make_data(path):
    with open(path, "w") as f:
        for i in range(24):
            n = 5 + i % 9
            f.write(json.dumps({"input_ids": [3 + (i * 31 + k * 17) % 250 for k in range(n)]}) + "\n")


def weights(path):
    b = open(os.path.join(path, "adapter_model.safetensors"), "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k != "__metadata__":
            s, e = v["data_offsets"]
            raw = b[8 + n + s:8 + n + e]
            out[k] = struct.unpack("<%df" % (len(raw) // 4), raw)
    return out


def train(data, out, group=None, rank=None, grad_accum=4):
    """one rank's run: losses per step; the adapter in out (rank 0 / alone)"""
    tok = lt.Tokenizer(TOK)
    ds = lt.Dataset(tok, path=data)
    model = lt.Model(MODEL, device="cpu")
    model.add_lora(lora_r=8, lora_dropout=0.1, seed=3)
    kw = dict(grad_accum=grad_accum, batch_size=2, max_steps=STEPS, lr=2e-4, warmup_steps=1, optim="adamw_torch",
              fuse_micro_batches=0, log_every=1, output_dir=out)
    tr = dist.Trainer(group, model, ds, rank=rank, dist_timeout_s=20, **kw) if group else lt.Trainer(model, ds, **kw)
    losses = []
    for m in tr:
        losses.append(m.loss)
    if rank in (None, 0):
        model.save_adapter(out, overwrite=True)
    tr.close()
    return losses


def child():
    """a torchrun-style rank process"""
    data, out = sys.argv[2], sys.argv[3]
    g = dist.init_from_env(timeout_s=30)
    losses = train(data, out, group=g, rank=g.rank, grad_accum=2)
    print(json.dumps({"rank": g.rank, "world": g.world_size, "losses": losses}))
    g.close()


def compare(what, ref_losses, losses, ref_dir, out_dir):
    dl = max(abs(a - b) for a, b in zip(ref_losses, losses))
    wa, wb = weights(ref_dir), weights(out_dir)
    dw = max(abs(x - y) for k in wa for x, y in zip(wa[k], wb[k]))
    print("%s: max |loss diff| %.3g, max |adapter diff| %.3g" % (what, dl, dw))
    assert len(losses) == STEPS and dl <= 1e-6 and dw <= 1e-6, what


def main():
    t = tempfile.mkdtemp()
    data = os.path.join(t, "data.jsonl")
    make_data(data)
    ref = train(data, os.path.join(t, "one"))

    # two threads, one in-process group
    g = dist.ProcessGroup.local(2)
    res = {}

    def rank_main(r):
        res[r] = train(data, os.path.join(t, "threads"), group=g, rank=r, grad_accum=2)

    th = [threading.Thread(target=rank_main, args=(r,)) for r in range(2)]
    for x in th:
        x.start()
    for x in th:
        x.join()
    assert res[0] == res[1], "the ranks report different losses"
    compare("2 threads (ProcessGroup.local)", ref, res[0], os.path.join(t, "one"), os.path.join(t, "threads"))

    # broadcast and abort on an in-process group
    g2 = dist.ProcessGroup.local(2, timeout_s=10)
    got = {}

    def bc(r):
        got[r] = g2.broadcast(b"rank0-bytes" if r == 0 else b"xxxxxxxxxxx", rank=r)

    th = [threading.Thread(target=bc, args=(r,)) for r in range(2)]
    for x in th:
        x.start()
    for x in th:
        x.join()
    assert got == {0: b"rank0-bytes", 1: b"rank0-bytes"}, got
    g2.abort("stopping on purpose", rank=1)
    try:
        g2.barrier(rank=0)
        raise AssertionError("a barrier after an abort returned")
    except lt.LoratuneError as e:
        assert "rank 1 aborted: stopping on purpose" in str(e), str(e)
        print("after an abort: %s: %s" % (type(e).__name__, e))
    g2.close()

    # two processes, as torchrun starts them
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    procs = []
    for r in range(2):
        envr = dict(os.environ, WORLD_SIZE="2", RANK=str(r), LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                    MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, __file__, "child", data, os.path.join(t, "procs")],
                                      env=envr, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e
    rows = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    assert rows[0]["world"] == 2 and rows[0]["losses"] == rows[1]["losses"]
    compare("2 processes (init_from_env)", ref, rows[0]["losses"], os.path.join(t, "one"), os.path.join(t, "procs"))
    logs = [json.loads(x) for x in open(os.path.join(t, "procs", "log.jsonl"))]
    assert [r["step"] for r in logs if "loss" in r] == list(range(1, STEPS + 1)), "log.jsonl: one row per step"
    subprocess.run(["rm", "-rf", t])
    print("test_dist_python: ok")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child()
    else:
        main()

"""test_offload.py - checkpoint offload from Python: loratune.estimate_memory(offload_checkpoints=True)
on Qwen2-1.5B's config (assets/qwen2-1.5b) for the CUDA backend: the activations drop by the 27
(N,C) checkpoints and 26 LoRA A output sets that go to host memory (two device slots stay), and by
the MLP buffers that now hold one token chunk of 512 (gate, up, act, dact: (N,I) each without
offload, the attention's gradients inside gate and up; with it (512,I) each, the attention's
gradients in their own buffers); without gradient checkpointing nothing changes. Needs no model weights (the estimate
reads config.json only); SFTConfig(activation_offloading=True) training is in test_hf_args."""
import os
import unittest

import loratune as lt

ROOT = os.environ.get("LT_REPO_ROOT", os.path.join(os.path.dirname(__file__), "..", "..", ".."))
CONFIG = os.path.join(ROOT, "assets", "qwen2-1.5b")


class TestOffloadEstimate(unittest.TestCase):
    def test_estimate(self):
        if not os.path.exists(os.path.join(CONFIG, "config.json")):
            self.skipTest("%s is missing" % CONFIG)
        kw = dict(device="cuda", batch_size=1, max_seq_len=32768, r=16, targets="all")
        on = lt.estimate_memory(CONFIG, **kw)
        off = lt.estimate_memory(CONFIG, offload_checkpoints=True, **kw)
        n, c, ab = 32768, 1536, 2  # tokens, hidden, bf16
        i, qd, kd, chunk = 8960, 1536, 256, 512  # intermediate, q and kv widths, MLP chunk
        moved = (28 + 1 - 2) * n * c * ab + (28 - 2) * 7 * n * 16 * ab
        moved += 4 * i * (n - chunk) * ab - n * (2 * qd + 2 * kd) * ab
        self.assertEqual(on["activations"] - off["activations"], moved)
        self.assertEqual(on["total"] - off["total"], moved)
        self.assertEqual(on["weights"], off["weights"])
        self.assertEqual(lt.estimate_memory(CONFIG, offload_checkpoints=True, gradient_checkpointing=False, **kw),
                         lt.estimate_memory(CONFIG, gradient_checkpointing=False, **kw))  # nothing to move


if __name__ == "__main__":
    unittest.main()

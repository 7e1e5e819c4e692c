"""test_interrupt.py - how training stops from Python (issue 15): Ctrl-C (a real SIGINT from a
timer thread) during run() with and without an on_step callback and while iterating the trainer
raises KeyboardInterrupt within one step, with a checkpoint in output_dir that resumes to the same
losses, and leaves the model usable; a second Ctrl-C stops at once; an exception raised in any
callback stops the call and comes back from it as itself (never "Exception ignored"); parameters
that a C field cannot hold, or that the library refuses, raise an error naming them.

Run with the rest of the suite (tests/bindings/run_python.sh, ctest -R bindings_python).
"""
import contextlib
import io
import math
import os
import signal
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import loratune as lt  # noqa: E402
from loratune import _ffi  # noqa: E402
from test_loratune import DATA, tiny_model  # noqa: E402

MAX_STEPS = 400  # ~0.1 s a step on the tiny model: an interrupt that waited for the end would take a minute


class _Unraisable:
    """Records what ctypes would print as "Exception ignored on calling ctypes callback"."""

    def __enter__(self):
        self.seen = []
        self._prev = sys.unraisablehook
        sys.unraisablehook = lambda u: self.seen.append(u)
        return self

    def __exit__(self, *exc):
        sys.unraisablehook = self._prev


class Base(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tiny_model()
        cls.tok = lt.Tokenizer(cls.dir)
        cls.ds = lt.Dataset(cls.tok, path=DATA, max_seq_len=64)

    def setUp(self):
        self.prev_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
        self.model = lt.Model(self.dir, device="cpu", max_seq_len=128)
        self.model.add_lora(r=4, alpha=8, seed=3407)
        self.out = tempfile.mkdtemp(prefix="loratune-int-")

    def tearDown(self):
        self.model.close()
        signal.signal(signal.SIGINT, self.prev_handler)

    def trainer(self, **kw):
        kw.setdefault("output_dir", self.out)
        return lt.Trainer(self.model, self.ds, batch_size=2, grad_accum=2, max_steps=MAX_STEPS, warmup_steps=2,
                          lr=1e-3, **kw)

    def interrupt_later(self, tr, after_steps=2, delay=0.05, steps_done=None):
        """SIGINT to this process from a timer thread once the trainer has reported after_steps
        steps (and `delay` s more, to land inside a step); returns a dict with the step count the
        trainer had reported when the signal went out, and the time it went."""
        sent = {}
        stop = threading.Event()
        steps_done = steps_done or (lambda: tr.last_metrics.step if tr.last_metrics is not None else 0)

        def fire():
            t_end = time.perf_counter() + 120
            while not stop.is_set() and time.perf_counter() < t_end:
                if steps_done() >= after_steps:
                    break
                time.sleep(0.005)
            if stop.is_set():
                return
            time.sleep(delay)
            sent["step"] = steps_done()
            sent["t"] = time.perf_counter()
            os.kill(os.getpid(), signal.SIGINT)
        t = threading.Thread(target=fire, daemon=True)
        t.start()
        self.addCleanup(stop.set)
        return sent, t

    def check_interrupt(self, cm, sent, tr):
        e = cm.exception
        got = time.perf_counter()
        self.assertIsInstance(e, KeyboardInterrupt)
        self.assertIsInstance(e, lt.TrainingInterrupted)
        self.assertIn("step", sent, "the timer never fired: training ended before it")
        # within one step: the step in progress when the signal came is the last one taken
        self.assertGreaterEqual(e.step, max(sent["step"], 1))
        self.assertLessEqual(e.step, sent["step"] + 1, "the interrupt came %d steps late" % (e.step - sent["step"]))
        self.assertEqual(tr.last_metrics.step, e.step)
        self.assertLess(got - sent["t"], 30.0)
        sent["latency"] = got - sent["t"]
        self.assertFalse(tr.finished)
        # the checkpoint: named in the message, written whole, for the step reported
        self.assertEqual(e.checkpoint, os.path.join(self.out, "checkpoint-%d" % e.step))
        self.assertIn(e.checkpoint, str(e))
        self.assertTrue(os.path.isdir(e.checkpoint), e.checkpoint)
        self.assertTrue(os.listdir(e.checkpoint))
        return e

    def check_usable(self, tr, e):
        """The model generates, the trainer goes on, and a trainer resumed from the checkpoint
        takes the same next step."""
        prompt = self.tok.encode("海绵宝宝的书法是不是叫做海绵体")
        new = self.model.generate(prompt, max_new_tokens=4)
        self.assertTrue(0 < len(new) <= 4)
        nxt = tr.step()
        self.assertEqual(nxt.step, e.step + 1)
        self.assertTrue(math.isfinite(nxt.loss))
        tr.close()
        tr2 = lt.Trainer(self.model, self.ds, batch_size=2, grad_accum=2, max_steps=MAX_STEPS, warmup_steps=2,
                         lr=1e-3)
        tr2.load_checkpoint(e.checkpoint)
        again = tr2.step()
        self.assertEqual(again.step, e.step + 1)
        self.assertAlmostEqual(again.loss, nxt.loss, delta=1e-6)
        tr2.close()


class TestCtrlC(Base):
    def test_run_without_callback(self):
        tr = self.trainer()
        sent, _ = self.interrupt_later(tr)
        with _Unraisable() as unr, self.assertRaises(KeyboardInterrupt) as cm:
            tr.run()
        e = self.check_interrupt(cm, sent, tr)
        self.assertEqual(unr.seen, [])
        print("run() without a callback: SIGINT after step %d -> KeyboardInterrupt after step %d (%.3f s later), %s"
              % (sent["step"], e.step, sent["latency"], e.checkpoint))
        self.check_usable(tr, e)

    def test_run_with_callback(self):
        seen = []
        tr = self.trainer(on_step=lambda m: seen.append(m.step))
        sent, _ = self.interrupt_later(tr)
        with _Unraisable() as unr, self.assertRaises(KeyboardInterrupt) as cm:
            tr.run()
        e = self.check_interrupt(cm, sent, tr)
        self.assertEqual(unr.seen, [], "a callback dropped an exception")
        self.assertEqual(seen, list(range(1, e.step + 1)))  # every step taken was reported once
        print("run() with a callback: SIGINT after step %d -> KeyboardInterrupt after step %d (%.3f s later), %s"
              % (sent["step"], e.step, sent["latency"], e.checkpoint))
        self.check_usable(tr, e)

    def test_iterating(self):
        tr = self.trainer()
        sent, _ = self.interrupt_later(tr)
        steps = []
        with _Unraisable() as unr, self.assertRaises(KeyboardInterrupt) as cm:
            for m in tr:
                steps.append(m.step)
        e = self.check_interrupt(cm, sent, tr)
        self.assertEqual(unr.seen, [])
        # the step the interrupt ended is kept (in the checkpoint) though the loop never saw it
        self.assertIn(steps[-1], (e.step, e.step - 1))
        print("iterating: SIGINT after step %d -> KeyboardInterrupt after step %d (%.3f s later), %s"
              % (sent["step"], e.step, sent["latency"], e.checkpoint))
        self.check_usable(tr, e)

    def test_without_output_dir_says_so(self):
        tr = self.trainer(output_dir=None)
        sent, _ = self.interrupt_later(tr, after_steps=1)
        with self.assertRaises(lt.TrainingInterrupted) as cm:
            tr.run()
        self.assertIsNone(cm.exception.checkpoint)
        self.assertIn("no output_dir", str(cm.exception))
        self.assertLessEqual(cm.exception.step, sent["step"] + 1)
        self.assertEqual(tr.step().step, cm.exception.step + 1)

    def test_second_ctrl_c_stops_at_once(self):
        def twice(m):
            if m.step == 3:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
        tr = self.trainer(on_step=twice)
        with _Unraisable() as unr, self.assertRaises(KeyboardInterrupt) as cm:
            tr.run()
        self.assertNotIsInstance(cm.exception, lt.TrainingInterrupted)
        self.assertIn("second Ctrl-C", str(cm.exception))
        self.assertEqual(unr.seen, [])
        self.assertEqual(tr.last_metrics.step, 3)
        self.assertEqual([d for d in os.listdir(self.out) if d.startswith("checkpoint")], [],
                         "a second Ctrl-C writes no checkpoint")
        self.assertEqual(tr.step().step, 4)

    def test_request_stop_from_another_thread(self):
        tr = self.trainer(output_dir=None)
        t = threading.Timer(0.5, tr.request_stop)
        t.start()
        self.addCleanup(t.cancel)
        self.assertEqual(tr.run(), "stopped")
        done = tr.global_step
        self.assertLess(done, MAX_STEPS)
        self.assertEqual(tr.step().step, done + 1)  # the request was used up: training goes on

    def test_default_handler_is_back_after(self):
        tr = self.trainer(output_dir=None)
        tr.step()
        self.assertIs(signal.getsignal(signal.SIGINT), signal.default_int_handler)


class TestNotebookLayer(Base):
    def test_sft_trainer_train(self):
        from loratune import FastLanguageModel, SFTTrainer, TrainingArguments
        model, tok = FastLanguageModel.from_pretrained(self.dir, max_seq_length=64, device="cpu")
        FastLanguageModel.get_peft_model(model, r=4, lora_alpha=8)
        rows = [{"text": "问题 %d 的回答<|im_end|>" % i} for i in range(64)]
        tr = SFTTrainer(model=model, tokenizer=tok, train_dataset=rows, dataset_text_field="text",
                        args=TrainingArguments(per_device_train_batch_size=2, gradient_accumulation_steps=2,
                                               max_steps=MAX_STEPS, logging_steps=1, output_dir=self.out,
                                               disable_tqdm=True))
        sent, _ = self.interrupt_later(tr, steps_done=lambda: tr.state.global_step)
        with self.assertRaises(lt.TrainingInterrupted) as cm, contextlib.redirect_stdout(io.StringIO()):
            tr.train()
        e = cm.exception
        self.assertGreaterEqual(e.step, sent["step"])
        self.assertLessEqual(e.step, sent["step"] + 1)
        self.assertEqual(tr.state.global_step, e.step)
        self.assertTrue(os.path.isdir(e.checkpoint))
        with contextlib.redirect_stdout(io.StringIO()):  # resumes from the checkpoint the interrupt wrote
            tr.args.max_steps = e.step + 1
            self.assertEqual(tr.train(resume_from_checkpoint=True).global_step, e.step + 1)


    def test_sft_trainer_between_steps(self):
        # a first Ctrl-C that lands in the loop's own Python code (here: a callback of the
        # trainer's progress output) between two steps gets the same checkpoint and exception
        from loratune import FastLanguageModel, SFTTrainer, TrainingArguments
        model, tok = FastLanguageModel.from_pretrained(self.dir, max_seq_length=64, device="cpu")
        FastLanguageModel.get_peft_model(model, r=4, lora_alpha=8)
        rows = [{"text": "问题 %d 的回答<|im_end|>" % i} for i in range(16)]
        tr = SFTTrainer(model=model, tokenizer=tok, train_dataset=rows, dataset_text_field="text",
                        args=TrainingArguments(per_device_train_batch_size=2, max_steps=20, logging_steps=1,
                                               output_dir=self.out, disable_tqdm=True))
        real_log = tr._log

        def log_then_ctrl_c(bar, logs):
            real_log(bar, logs)
            if logs.get("loss") is not None and tr.state.global_step == 3:
                raise KeyboardInterrupt  # what the default handler raises between two steps
        tr._log = log_then_ctrl_c
        with self.assertRaises(lt.TrainingInterrupted) as cm, contextlib.redirect_stdout(io.StringIO()):
            tr.train()
        self.assertEqual(cm.exception.step, 3)
        self.assertEqual(cm.exception.checkpoint, os.path.join(self.out, "checkpoint-3"))
        self.assertTrue(os.path.isdir(cm.exception.checkpoint))


class TestNonFinite(Base):
    def test_nonfinite_loss_raises_nonfinite_error(self):
        tr = lt.Trainer(self.model, self.ds, batch_size=2, grad_accum=1, max_steps=20, warmup_steps=0, lr=1e30,
                        optim="adamw_torch", max_grad_norm=0, save_every=1, output_dir=self.out)
        with self.assertRaises(lt.NonFiniteError) as cm:
            tr.run()
        e = cm.exception
        self.assertIsInstance(e, FloatingPointError)
        self.assertEqual(e.status, _ffi.LT_ERR_NONFINITE)
        self.assertIn("non-finite", str(e))
        self.assertIn(self.out, str(e))  # the message names the checkpoint (the last good one)
        self.assertGreaterEqual(tr.last_metrics.step, 1)


class TestCallbackErrors(Base):
    def test_on_step_exception_comes_back_from_run(self):
        err = ValueError("stop here")

        def boom(m):
            if m.step == 2:
                raise err
        tr = self.trainer(on_step=boom, output_dir=None)
        with _Unraisable() as unr, self.assertRaises(ValueError) as cm:
            tr.run()
        self.assertIs(cm.exception, err)
        self.assertEqual(unr.seen, [])
        self.assertEqual(tr.last_metrics.step, 2)  # the step whose callback raised is taken and kept
        self.assertEqual(tr.step().step, 3)  # usable after

    def test_keyboard_interrupt_raised_by_a_callback(self):
        def ctrl_c(m):
            raise KeyboardInterrupt("from the callback")
        tr = self.trainer(on_step=ctrl_c, output_dir=None)
        with _Unraisable() as unr, self.assertRaises(KeyboardInterrupt) as cm:
            tr.run()
        self.assertEqual(str(cm.exception), "from the callback")
        self.assertEqual(unr.seen, [])

    def test_progress_exception(self):
        def progress(what, done, total):
            raise RuntimeError("progress says no")
        with _Unraisable() as unr, self.assertRaises(RuntimeError) as cm:
            lt.Dataset(self.tok, path=DATA, max_seq_len=64, progress=progress)
        self.assertEqual(str(cm.exception), "progress says no")
        self.assertEqual(unr.seen, [])

    def test_streaming_exception(self):
        def on_text(piece, token):
            raise LookupError("streamer failed")
        with _Unraisable() as unr, self.assertRaises(LookupError):
            self.model.generate(self.tok.encode("你好"), max_new_tokens=4, tokenizer=self.tok, on_text=on_text)
        self.assertEqual(unr.seen, [])
        self.assertTrue(self.model.generate(self.tok.encode("你好"), max_new_tokens=2))

    def test_log_callback_exception(self):
        def log(level, msg):
            raise OSError("log sink full")
        lt.set_log_callback(log)
        try:
            tr = self.trainer(output_dir=None)
            with _Unraisable() as unr, self.assertRaises(OSError) as cm:
                tr.run()
            self.assertEqual(str(cm.exception), "log sink full")
            self.assertEqual(unr.seen, [])
            self.assertLessEqual(tr.last_metrics.step if tr.last_metrics else 1, 1)
        finally:
            lt.set_log_callback(None)


class TestBadParameters(Base):
    def refused(self, named=None, **kw):
        """lt.Trainer(**kw) refused with InvalidArgumentError, its message naming the parameter
        (`named`: the words the message uses for it, when not its keyword)."""
        with self.assertRaises(lt.InvalidArgumentError) as cm:
            lt.Trainer(self.model, self.ds, **kw)
        e = cm.exception
        self.assertIsInstance(e, ValueError)
        self.assertEqual(e.status, _ffi.LT_ERR_INVALID_ARGUMENT)
        self.assertIn(named or next(iter(kw)), str(e))
        return str(e)

    def test_integers_that_do_not_fit(self):
        msg = self.refused(batch_size=99999999999)
        self.assertIn("99999999999", msg)
        self.assertIn("32-bit", msg)
        self.refused(grad_accum=2 ** 31)
        self.refused(max_steps=-2 ** 31 - 1)
        self.refused(seed=-1)
        self.refused(batch_size=2.5)
        self.refused(log_every="1")

    def test_values_the_library_refuses(self):
        # the library's checks (one set for every front end); the issue's list first
        for kw in ({"weight_decay": float("nan")}, {"max_grad_norm": float("nan")}, {"warmup_steps": -1},
                   {"lr": float("inf")}, {"lr": float("nan")}, {"batch_size": 0}, {"epochs": float("nan"), "max_steps": 0},
                   {"adam_beta1": 1.5, "named": "adam betas"}, {"warmup_ratio": float("nan"), "warmup_steps": -1}):
            with self.subTest(**kw):
                print(self.refused(**kw))


if __name__ == "__main__":
    unittest.main()

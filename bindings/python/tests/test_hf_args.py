"""test_hf_args.py - the notebook layer's arguments (issue 16): the notebook's names import from
`loratune`; every transformers / TRL argument loratune cannot honour is refused with a message
naming it; the ones it honours change what happens (eval_dataset with eval_strategy / eval_steps,
evaluate(), save_steps + save_total_limit, load_best_model_at_end, EarlyStoppingCallback,
logging_steps, num_train_epochs, report_to, resume_from_checkpoint, TrainOutput's fields); the
keyword names of loratune.Dataset / Trainer / Model / add_lora are the ones of
tests/train/option_names.txt, the list the CLI flags and --config keys are checked against.
"""
import contextlib
import inspect
import io
import json
import os
import sys
import tempfile
import unittest
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import loratune as lt  # noqa: E402
from loratune import _ffi  # noqa: E402
from test_loratune import DATA, ROOT, tiny_model  # noqa: E402


def records(n, start=0):
    with open(DATA, encoding="utf-8") as f:
        rows = json.load(f)[start:start + n]
    return [{"text": "### Q: %s\n### A: %s<|im_end|>" % (r["instruction"], r["output"])} for r in rows]


class TestImports(unittest.TestCase):
    def test_notebook_names_from_loratune(self):
        from loratune import (FastLanguageModel, SFTConfig, SFTTrainer, TextStreamer,  # noqa: F401
                              TrainingArguments, is_bfloat16_supported)
        from loratune import transformers, trl, unsloth
        self.assertIs(unsloth.FastLanguageModel, FastLanguageModel)
        self.assertIs(unsloth.is_bfloat16_supported, is_bfloat16_supported)
        self.assertIs(trl.SFTTrainer, SFTTrainer)
        self.assertIs(trl.SFTConfig, SFTConfig)
        self.assertIs(transformers.TrainingArguments, TrainingArguments)
        self.assertIs(transformers.TextStreamer, TextStreamer)
        self.assertIs(transformers.EarlyStoppingCallback, lt.hf.EarlyStoppingCallback)
        from loratune.datasets import load_dataset  # noqa: F401


class TestRefused(unittest.TestCase):
    """Each argument loratune cannot honour: refused, the message naming it."""

    @classmethod
    def setUpClass(cls):
        from loratune import FastLanguageModel
        cls.model, cls.tok = FastLanguageModel.from_pretrained(tiny_model(), max_seq_length=64, device="cpu")
        FastLanguageModel.get_peft_model(cls.model, r=4, lora_alpha=8)
        cls.data = records(8)

    def refused(self, make, name, exc=lt.UnsupportedError):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with self.assertRaises(exc) as cm:
                make()
        msg = str(cm.exception)
        self.assertIn(name, msg)
        if exc is lt.UnsupportedError:
            self.assertEqual(cm.exception.status, _ffi.LT_ERR_UNSUPPORTED)
            self.assertIn("not supported", msg)
        return msg

    def args(self, **kw):
        kw.setdefault("output_dir", None)
        kw.setdefault("max_steps", 1)
        kw.setdefault("per_device_train_batch_size", 1)
        kw.setdefault("disable_tqdm", True)
        return lt.TrainingArguments(**kw)

    def trainer(self, args=None, **kw):
        return lt.SFTTrainer(model=self.model, tokenizer=self.tok, train_dataset=self.data,
                             dataset_text_field="text", args=args or self.args(), **kw)

    def test_training_arguments(self):
        cases = {
            "neftune_noise_alpha": 5, "group_by_length": True, "lr_scheduler_kwargs": {"num_cycles": 2},
            "optim_args": "foo=1", "label_smoothing_factor": 0.1, "push_to_hub": True, "torch_compile": True,
            "use_cpu": True, "no_cuda": True, "tf32": True, "deepspeed": "ds.json", "fsdp": "full_shard",
            "auto_find_batch_size": True, "eval_on_start": True, "eval_delay": 5, "data_seed": 1,
            "dataloader_drop_last": True, "save_safetensors": False, "use_liger_kernel": True,
            "ignore_data_skip": True, "adafactor": True, "per_gpu_train_batch_size": 4,
        }
        for name, value in cases.items():
            with self.subTest(name=name):
                msg = self.refused(lambda: self.args(**{name: value}), name)
                self.assertIn("leave it at", msg)

    def test_choices(self):
        for name, value in (("report_to", "wandb"), ("report_to", ["tensorboard"]), ("report_to", "all"),
                            ("eval_strategy", "epoch"), ("evaluation_strategy", "epoch"),
                            ("save_strategy", "epoch"), ("save_strategy", "best"), ("logging_strategy", "epoch"),
                            ("metric_for_best_model", "accuracy"), ("greater_is_better", True)):
            with self.subTest(name=name, value=value):
                self.refused(lambda: self.args(**{name: value}), name.replace("evaluation_", "eval_"))
        self.refused(lambda: self.args(fp16=True, bf16=True), "fp16")
        # the defaults, and the no-effect arguments, pass
        a = self.args(report_to=["none"], eval_strategy="no", save_strategy="no", neftune_noise_alpha=None,
                      lr_scheduler_kwargs={}, dataloader_num_workers=4, logging_dir="runs", run_name="x")
        self.assertEqual(a.report_to, "none")
        self.assertEqual(self.args(report_to="csv").report_to, "csv")

    def test_sft_config(self):
        self.refused(lambda: lt.SFTConfig(packing=True), "packing")
        self.refused(lambda: lt.SFTConfig(neftune_noise_alpha=5), "neftune_noise_alpha")
        self.refused(lambda: lt.SFTConfig(completion_only_loss=True), "completion_only_loss")
        self.refused(lambda: lt.SFTConfig(assistant_only_loss=True), "assistant_only_loss")
        self.assertTrue(lt.SFTConfig(activation_offloading=True).activation_offloading)  # offload_checkpoints
        self.refused(lambda: lt.SFTConfig(dataset_kwargs={"skip_prepare_dataset": True}), "dataset_kwargs")
        self.refused(lambda: lt.SFTConfig(max_seq_length=64, max_length=128), "max_length", lt.InvalidArgumentError)
        c = lt.SFTConfig(max_length=48, padding_free=True, dataset_num_proc=2, output_dir=None)
        self.assertEqual(c.max_seq_length, 48)

    def test_unknown_names_are_type_errors(self):
        self.refused(lambda: self.args(learning_rat=1e-4), "learning_rat", TypeError)
        self.refused(lambda: self.trainer(formating_func=None), "formating_func", TypeError)
        self.refused(lambda: self.trainer().train(resume_from_checkpiont=True), "resume_from_checkpiont", TypeError)

    def test_trainer_arguments(self):
        self.refused(lambda: self.trainer(packing=True), "packing")
        self.refused(lambda: self.trainer(neftune_noise_alpha=5), "neftune_noise_alpha")
        self.refused(lambda: self.trainer(data_collator=object()), "data_collator")
        self.refused(lambda: self.trainer(compute_metrics=lambda p: {}), "compute_metrics")
        self.refused(lambda: self.trainer(preprocess_logits_for_metrics=lambda a, b: a), "preprocess_logits_for_metrics")
        self.refused(lambda: self.trainer(peft_config={"r": 8}), "peft_config")
        self.refused(lambda: self.trainer(model_init=lambda: None), "model_init")
        self.refused(lambda: self.trainer(optimizers=(object(), None)), "optimizers")
        self.refused(lambda: self.trainer(compute_loss_func=lambda *a: 0), "compute_loss_func")

        class InsideTheStep:  # a TrainerCallback event that happens inside loratune's C step
            def on_substep_end(self, args, state, control, **kw):
                pass
        msg = self.refused(lambda: self.trainer(callbacks=[InsideTheStep()]), "callbacks")
        self.assertIn("on_substep_end", msg)
        self.refused(lambda: self.trainer(callbacks=[42]), "callbacks")
        self.refused(lambda: self.trainer(eval_dataset={"a": self.data, "b": self.data}), "eval_dataset")
        self.refused(lambda: self.trainer(args=self.args(load_best_model_at_end=True)), "load_best_model_at_end")
        self.refused(lambda: self.trainer(args=self.args(eval_strategy="steps")), "eval_strategy")
        self.refused(lambda: self.trainer(args=self.args(report_to="csv")), "report_to")
        self.refused(lambda: self.trainer(args=self.args(logging_steps=0.1)).train(), "logging_steps")
        tr = self.trainer()
        self.refused(lambda: tr.evaluate(), "eval_dataset", lt.LoratuneError)
        self.refused(lambda: tr.evaluate(eval_dataset=self.data, ignore_keys=["logits"]), "ignore_keys")

    def test_model_loading_lora_and_generation_arguments(self):
        from loratune import FastLanguageModel
        load = lambda **kw: FastLanguageModel.from_pretrained(tiny_model(), max_seq_length=64, device="cpu", **kw)  # noqa: E731
        for name, value in (("load_in_8bit", True), ("full_finetuning", True), ("fast_inference", True),
                            ("rope_scaling", {"type": "linear", "factor": 2.0}), ("device_map", {"": 0})):
            with self.subTest(name=name):
                self.refused(lambda: load(**{name: value}), name)
        self.refused(lambda: load(max_seq_lenght=64), "max_seq_lenght", TypeError)
        m, _ = load(trust_remote_code=False, fix_tokenizer=True, device_map="sequential", load_in_8bit=False)
        peft = lambda **kw: FastLanguageModel.get_peft_model(m, r=4, **kw)  # noqa: E731
        for name, value in (("use_dora", True), ("modules_to_save", ["lm_head"]), ("layers_to_transform", [0]),
                            ("init_lora_weights", "gaussian"), ("bias", "all"), ("loftq_config", {"loftq_bits": 4})):
            with self.subTest(name=name):
                self.refused(lambda: peft(**{name: value}), name)
        self.refused(lambda: peft(lora_alpah=8), "lora_alpah", TypeError)
        peft(temporary_location="x", max_seq_length=64)
        ids = self.tok(["你好"], return_tensors=None)["input_ids"]
        gen = lambda **kw: m.generate(input_ids=ids, max_new_tokens=2, **kw)  # noqa: E731
        for name, value in (("num_beams", 4), ("num_return_sequences", 2), ("output_scores", True),
                            ("no_repeat_ngram_size", 3), ("logits_processor", [object()]), ("min_new_tokens", 2)):
            with self.subTest(name=name):
                self.refused(lambda: gen(**{name: value}), name)
        self.refused(lambda: gen(max_new_tokns=2), "max_new_tokns", TypeError)
        # tokenizer and saving
        self.refused(lambda: self.tok("你好", return_offsets_mapping=True), "return_offsets_mapping")
        self.refused(lambda: self.tok("你好", text_pair="世界"), "text_pair")
        self.refused(lambda: self.tok.decode([1, 2], skip_specail_tokens=True), "skip_specail_tokens", TypeError)
        out = tempfile.mkdtemp(prefix="loratune-save-")
        self.refused(lambda: m.save_pretrained(out, push_to_hub=True), "push_to_hub")
        self.refused(lambda: m.save_pretrained_merged(out, self.tok, save_method="merged_4bit"), "save_method")
        m.save_pretrained(out, safe_serialization=True)
        self.assertTrue(os.path.exists(os.path.join(out, "adapter_model.safetensors")))
        self.assertEqual(len(gen(use_cache=True, num_beams=1, pad_token_id=0)[0]), len(ids[0]) + 2)

    def test_precision_contradiction(self):
        # on the CPU the model computes in fp32: fp16 / bf16 say so in a warning, not silently
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            self.trainer(args=self.args(fp16=True))
        self.assertTrue(any("fp16=True" in str(x.message) and "fp32" in str(x.message) for x in w), [str(x.message) for x in w])

    def test_bad_values_name_the_parameter(self):
        for name, value in (("per_device_train_batch_size", 99999999999), ("weight_decay", float("nan")),
                            ("max_grad_norm", float("nan")), ("gradient_accumulation_steps", 0),
                            ("learning_rate", float("inf")), ("warmup_ratio", 2.0), ("logging_steps", 2 ** 40)):
            with self.subTest(name=name):
                with self.assertRaises(lt.InvalidArgumentError) as cm, contextlib.redirect_stdout(io.StringIO()):
                    self.trainer(args=self.args(**{name: value})).train()
                self.assertIn("TrainingArguments." + name, str(cm.exception))


class TestHonoured(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from loratune import FastLanguageModel
        cls.FLM = FastLanguageModel
        cls.model, cls.tok = FastLanguageModel.from_pretrained(tiny_model(), max_seq_length=64, device="cpu")

    def setUp(self):
        self.FLM.get_peft_model(self.model, r=4, lora_alpha=8, lora_dropout=0.0)
        self.out = tempfile.mkdtemp(prefix="loratune-hf-")

    def run_trainer(self, train, eval=None, callbacks=None, **kw):
        kw.setdefault("output_dir", self.out)
        kw.setdefault("per_device_train_batch_size", 2)
        kw.setdefault("learning_rate", 1e-3)
        kw.setdefault("disable_tqdm", True)
        tr = lt.SFTTrainer(model=self.model, tokenizer=self.tok, train_dataset=train, eval_dataset=eval,
                           dataset_text_field="text", callbacks=callbacks, args=lt.TrainingArguments(**kw))
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            stats = tr.train()
        return tr, stats, log.getvalue()

    def test_activation_offloading(self):
        """SFTConfig(activation_offloading=True) trains with the checkpoints in host memory
        (lt_train_params.offload_checkpoints): on the CPU the same losses, bit for bit."""
        losses = []
        for off in (False, True):
            self.FLM.get_peft_model(self.model, r=4, lora_alpha=8, lora_dropout=0.1, random_state=5)
            tr = lt.SFTTrainer(model=self.model, tokenizer=self.tok, train_dataset=records(8), dataset_text_field="text",
                               args=lt.SFTConfig(output_dir=None, max_steps=3, per_device_train_batch_size=2,
                                                 learning_rate=1e-3, logging_steps=1, disable_tqdm=True,
                                                 activation_offloading=off))
            with contextlib.redirect_stdout(io.StringIO()):
                tr.train()
            self.assertEqual(tr._trainer._params.offload_checkpoints, int(off))
            losses.append([h["loss"] for h in tr.state.log_history if "loss" in h])
        self.assertEqual(len(losses[0]), 3)
        self.assertEqual(losses[0], losses[1])

    def test_eval_save_limit_best_and_evaluate(self):
        tr, stats, log = self.run_trainer(records(16), records(6, 100), max_steps=6, logging_steps=2,
                                          eval_strategy="steps", eval_steps=2, save_steps=2, save_total_limit=2,
                                          load_best_model_at_end=True, report_to="csv")
        self.assertEqual(stats.global_step, 6)
        evals = [h for h in tr.state.log_history if "eval_loss" in h]
        self.assertEqual([h["step"] for h in evals], [2, 4, 6])
        self.assertEqual(log.count("'eval_loss': "), 3)
        self.assertEqual(log.count("{'loss': "), 3)  # logging_steps=2
        ckpts = sorted(d for d in os.listdir(self.out) if d.startswith("checkpoint-"))
        self.assertEqual(len(ckpts), 2, ckpts)  # save_total_limit
        best = min(evals, key=lambda h: h["eval_loss"])
        self.assertAlmostEqual(tr.state.best_metric, best["eval_loss"], places=4)
        # load_best_model_at_end: the weights now give the best evaluation's loss
        again = tr.evaluate()
        self.assertAlmostEqual(again["eval_loss"], best["eval_loss"], places=4)
        for key in ("eval_loss", "eval_mean_token_accuracy", "eval_runtime", "eval_samples_per_second",
                    "eval_steps_per_second", "epoch"):
            self.assertIn(key, again)
        # evaluate() is a no-grad pass over the eval records: the same as the model's own loss on each
        ds = tr.eval_dataset
        total = n = 0
        for i in range(len(ds)):
            ids, labels = ds[i]
            k = sum(1 for x in labels[1:] if x != -100)
            total += self.model.lt.loss(ids, labels) * k
            n += k
        self.assertAlmostEqual(again["eval_loss"], total / n, delta=1e-4)
        # another eval_dataset, given to evaluate()
        other = tr.evaluate(eval_dataset=records(3, 200), metric_key_prefix="test")
        self.assertIn("test_loss", other)
        self.assertNotAlmostEqual(other["test_loss"], again["eval_loss"], places=6)
        # report_to="csv": the CSV log beside log.jsonl
        self.assertTrue(os.path.exists(os.path.join(self.out, "log.csv")), os.listdir(self.out))
        # TrainOutput as TRL returns it
        self.assertEqual(stats._fields, ("global_step", "training_loss", "metrics"))
        for key in ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "epoch"):
            self.assertIn(key, stats.metrics)
        self.assertAlmostEqual(stats.metrics["train_steps_per_second"] * stats.metrics["train_runtime"], 6, delta=0.1)
        self.assertAlmostEqual(stats.training_loss, stats.metrics["train_loss"])

    def test_early_stopping_callback(self):
        from loratune.transformers import EarlyStoppingCallback
        # no evaluation improves the best by more than the threshold: patience 2 ends it at the third
        tr, stats, _ = self.run_trainer(records(16), records(4, 100), max_steps=20, eval_strategy="steps",
                                        eval_steps=1, logging_steps=1, save_strategy="no",
                                        callbacks=[EarlyStoppingCallback(early_stopping_patience=2,
                                                                         early_stopping_threshold=1e9)])
        self.assertEqual(stats.global_step, 3)

    def test_trainer_callback(self):
        class TrainerCallback:  # stands for transformers.TrainerCallback, the empty base class
            pass

        class Recorder(TrainerCallback):
            def __init__(self):
                self.events = []

            def on_train_begin(self, args, state, control, **kw):
                self.events.append(("train_begin", state.global_step))

            def on_step_end(self, args, state, control, **kw):
                self.events.append(("step_end", state.global_step))
                if state.global_step == 3:
                    control.should_training_stop = True
                return control

            def on_log(self, args, state, control, logs=None, **kw):
                self.events.append(("log", state.global_step, sorted(logs)))

            def on_evaluate(self, args, state, control, metrics=None, **kw):
                self.events.append(("evaluate", state.global_step, round(metrics["eval_loss"], 4)))

            def on_train_end(self, args, state, control, **kw):
                self.events.append(("train_end", state.global_step))
        rec = Recorder()
        tr, stats, _ = self.run_trainer(records(16), records(4, 100), callbacks=[rec], max_steps=10, logging_steps=2,
                                        eval_strategy="steps", eval_steps=2, save_strategy="no")
        self.assertEqual(stats.global_step, 3)  # should_training_stop after step 3
        evals = [h for h in tr.state.log_history if "eval_loss" in h]
        self.assertEqual(rec.events, [
            ("train_begin", 0), ("step_end", 1), ("step_end", 2), ("log", 2, ["epoch", "grad_norm", "learning_rate", "loss"]),
            ("evaluate", 2, evals[0]["eval_loss"]), ("log", 2, ["epoch", "eval_loss", "eval_mean_token_accuracy"]),
            ("step_end", 3), ("train_end", 3)])

    def test_epochs_and_resume(self):
        tr, stats, _ = self.run_trainer(records(8), max_steps=-1, num_train_epochs=2, logging_steps=1,
                                        save_steps=3, gradient_accumulation_steps=1)
        self.assertEqual(stats.global_step, 8)  # 8 records / (2 x 1) a step, two epochs
        losses = [h["loss"] for h in tr.state.log_history if "loss" in h]
        # a new trainer on the same output_dir resumes from its latest checkpoint (checkpoint-6)
        resumed = lt.SFTTrainer(model=self.model, tokenizer=self.tok, train_dataset=records(8),
                                dataset_text_field="text",
                                args=lt.TrainingArguments(output_dir=self.out, per_device_train_batch_size=2,
                                                          learning_rate=1e-3, max_steps=-1, num_train_epochs=2,
                                                          logging_steps=1, save_steps=3,
                                                          gradient_accumulation_steps=1, disable_tqdm=True))
        with contextlib.redirect_stdout(io.StringIO()):
            st = resumed.train(resume_from_checkpoint=True)  # the latest: checkpoint-6
        self.assertEqual(st.global_step, 8)
        after = [h["loss"] for h in resumed.state.log_history if "loss" in h]
        self.assertEqual(len(after), 2)
        for a, b in zip(after, losses[6:]):
            self.assertAlmostEqual(a, b, places=4)


class TestOptionNames(unittest.TestCase):
    """loratune.Dataset / Trainer / Model / Model.add_lora take each option of
    tests/train/option_names.txt that sets their params struct, under its name; and every keyword
    they take that sets a params field is in the list (the exceptions are named here)."""
    OWNER = {"lt_dataset_params": lambda: lt.Dataset, "lt_train_params": lambda: lt.Trainer,
             "lt_model_params": lambda: lt.Model, "lt_lora_params": lambda: lt.Model.add_lora}
    # keywords that are no --config key: handles and paths given another way, callbacks, older
    # spellings, and fields the CLI does not expose
    NOT_OPTIONS = {
        lt.Dataset: {"tokenizer", "path", "progress", "template_text", "n_threads"},
        lt.Trainer: {"model", "dataset", "output_dir", "on_step", "optimizer", "packing", "fp16_initial_loss_scale"},
        lt.Model: {"path", "progress", "double_quant", "n_threads"},
        lt.Model.add_lora: {"r", "alpha", "dropout"},
    }

    def test_python_keywords_match_the_list(self):
        path = os.path.join(ROOT, "tests", "train", "option_names.txt")
        if not os.path.exists(path):
            self.skipTest("%s is missing" % path)
        want = {fn: set() for fn in self.NOT_OPTIONS}
        listed = set()
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if not parts or parts[0].startswith("#") or parts[0] == "alias":
                    continue
                name, field = parts[0], parts[-1]
                listed.add(name)
                for struct in {x.split(".")[0] for x in field.split("+")}:
                    if struct in self.OWNER:
                        want[self.OWNER[struct]()].add(name)
        self.assertTrue(want[lt.Trainer] and want[lt.Dataset] and want[lt.Model] and want[lt.Model.add_lora])
        for fn, names in want.items():
            params = set(inspect.signature(fn).parameters) - {"self"}
            self.assertEqual(sorted(names - params), [], "%s lacks keywords of option_names.txt" % fn.__qualname__)
            extra = params - self.NOT_OPTIONS[fn] - listed
            self.assertEqual(sorted(extra), [], "%s takes keywords that option_names.txt does not list"
                             % fn.__qualname__)


if __name__ == "__main__":
    unittest.main()

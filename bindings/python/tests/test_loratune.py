"""test_loratune.py - the Python binding's suite: the ctypes mirror against include/loratune.h,
the load-time checks, errors, and the whole job on the tiny model through both layers (the
handles, and the notebook's FastLanguageModel / SFTTrainer names).

Run: LORATUNE_LIBRARY=build/libloratune.so PYTHONPATH=bindings/python python3 -m unittest discover
-s bindings/python/tests. LT_TINY_MODEL names the tiny model folder; without it the suite makes
one with tests/bindings/tiny_model.py (which needs the `loratune` command: LORATUNE_CLI).
"""
import contextlib
import ctypes
import gc
import io
import json
import os
import re
import struct
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("LT_REPO_ROOT") or os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.dirname(HERE))

import loratune as lt  # noqa: E402
from loratune import _ffi  # noqa: E402

DATA = os.path.join(ROOT, "assets", "ruozhiba", "ruozhiba_qa.json")
_tiny = None


def tiny_model():
    """The tiny model folder, made once per run; skips the test when it cannot be made."""
    global _tiny
    if _tiny is None:
        path = os.environ.get("LT_TINY_MODEL")
        if not path:
            sys.path.insert(0, os.path.join(ROOT, "tests", "bindings"))
            import tiny_model as tm
            path = os.path.join(tempfile.gettempdir(), "loratune-tiny-%d" % os.getpid())
            try:
                tm.make(path)
            except RuntimeError as e:
                _tiny = e
        _tiny = _tiny or path
    if isinstance(_tiny, Exception):
        raise unittest.SkipTest(str(_tiny))
    return _tiny


def parse_header():
    """{function: [param names]} and {struct: [field names]} from include/loratune.h."""
    with open(os.path.join(ROOT, "include", "loratune.h"), encoding="utf-8") as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    funcs = {}
    for m in re.finditer(r"LT_API\s+[^;(]*?\b(lt_\w+)\s*\(([^)]*)\)\s*;", text):
        params = [p.strip() for p in m.group(2).split(",") if p.strip() and p.strip() != "void"]
        funcs[m.group(1)] = params
    structs = {}
    for m in re.finditer(r"typedef struct (lt_\w+)\s*\{(.*?)\}\s*\1\s*;", text, flags=re.S):
        fields = []
        for decl in m.group(2).split(";"):
            decl = decl.strip()
            if not decl:
                continue
            decl = re.sub(r"\[[^\]]*\]", "", decl)
            head, *rest = decl.split(",")
            fields.append(re.findall(r"\w+", head)[-1])
            fields += [r.strip().lstrip("*").strip() for r in rest]
        structs[m.group(1)] = fields
    return funcs, structs


class TestMirror(unittest.TestCase):
    def test_every_function_is_declared_with_its_arity(self):
        funcs, _ = parse_header()
        ours = {name: args for name, _, args in _ffi.PROTOTYPES}
        self.assertEqual(sorted(funcs), sorted(ours), "functions differ from include/loratune.h")
        for name, params in funcs.items():
            self.assertEqual(len(params), len(ours[name]), "%s: %d params in the header, %d here"
                             % (name, len(params), len(ours[name])))

    def test_every_struct_has_the_header_fields_in_order(self):
        _, structs = parse_header()
        self.assertEqual(sorted(structs), sorted(_ffi.STRUCTS))
        for name, fields in structs.items():
            self.assertEqual([f for f, _ in _ffi.STRUCTS[name]._fields_], fields, name)

    def test_sizes_match_the_loaded_library(self):
        lib = _ffi.lib()
        for name, cls in _ffi.STRUCTS.items():
            self.assertEqual(lib.lt_struct_size(name.encode()), ctypes.sizeof(cls), name)


class TestLoadChecks(unittest.TestCase):
    def sizes(self, name):
        return _ffi.lib().lt_struct_size(name.encode())

    def test_real_library_is_accepted(self):
        lt.check_library(lt.version_number(), self.sizes)
        self.assertEqual(lt.version_number() // 10000, _ffi.BINDING_VERSION_MAJOR)

    def test_other_major_is_refused(self):
        with self.assertRaises(lt.LibraryMismatchError) as cm:
            lt.check_library((_ffi.BINDING_VERSION_MAJOR + 1) * 10000 + 2, self.sizes)
        e = cm.exception
        self.assertEqual(e.status, _ffi.LT_ERR_VERSION)
        self.assertIn("major %d" % (_ffi.BINDING_VERSION_MAJOR + 1), str(e))
        self.assertIsInstance(e, ImportError)

    def test_other_struct_size_is_refused(self):
        fake = lambda name: self.sizes(name) + (8 if name == "lt_metrics" else 0)  # noqa: E731
        with self.assertRaises(lt.LibraryMismatchError) as cm:
            lt.check_library(lt.version_number(), fake)
        self.assertIn("lt_metrics", str(cm.exception))
        self.assertIn("%d bytes in the library" % (self.sizes("lt_metrics") + 8), str(cm.exception))

    def fake_library(self, version_number, grow):
        """A stand-in libloratune (built with the system C compiler) that reports
        `version_number` and the real struct sizes, `grow` bytes more for lt_metrics."""
        import shutil
        import subprocess
        cc = shutil.which("cc") or shutil.which("gcc")
        if not cc:
            self.skipTest("no C compiler")
        d = tempfile.mkdtemp(prefix="loratune-fake-")
        sizes = "".join('if (!strcmp(n, "%s")) return %d;\n' % (name, ctypes.sizeof(cls) + (grow if name == "lt_metrics" else 0))
                        for name, cls in _ffi.STRUCTS.items())
        src = os.path.join(d, "fake.c")
        with open(src, "w") as f:
            f.write("#include <stddef.h>\n#include <stdint.h>\n#include <string.h>\n"
                    "const char *lt_version(void) { return \"x\"; }\n"
                    "uint32_t lt_version_number(void) { return %d; }\n"
                    "size_t lt_struct_size(const char *n) {\n%s return 0; }\n"
                    "const char *lt_status_string(int s) { return \"LT_ERR_VERSION\"; }\n"
                    "const char *lt_last_error(void) { return \"\"; }\n" % (version_number, sizes))
        lib = os.path.join(d, "libloratune.so")
        subprocess.run([cc, "-shared", "-fPIC", "-o", lib, src], check=True)
        return lib

    def import_with(self, lib):
        import subprocess
        env = dict(os.environ, LORATUNE_LIBRARY=lib, PYTHONPATH=os.path.dirname(HERE))
        return subprocess.run([sys.executable, "-c", "import loratune"], env=env, stderr=subprocess.PIPE, text=True)

    def test_import_refuses_a_library_of_another_major_version(self):
        r = self.import_with(self.fake_library(10000 * (_ffi.BINDING_VERSION_MAJOR + 1) + 203, 0))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("LibraryMismatchError", r.stderr)
        self.assertIn("(major %d) but these Python bindings were written for major %d"
                      % (_ffi.BINDING_VERSION_MAJOR + 1, _ffi.BINDING_VERSION_MAJOR), r.stderr)

    def test_import_refuses_a_library_with_other_struct_sizes(self):
        r = self.import_with(self.fake_library(lt.version_number(), 16))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("struct lt_metrics is %d bytes in the library" % (ctypes.sizeof(_ffi.lt_metrics) + 16), r.stderr)

    def test_import_without_a_library_says_how_to_fix(self):
        # A library path that is not a loratune library at all is refused with a clear message.
        import subprocess
        env = dict(os.environ, LORATUNE_LIBRARY="/nonexistent/libloratune.so", PYTHONPATH=os.path.dirname(HERE))
        r = subprocess.run([sys.executable, "-c", "import loratune"], env=env, stderr=subprocess.PIPE, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("LibraryNotFoundError", r.stderr)
        self.assertIn("LORATUNE_LIBRARY", r.stderr)


class TestErrors(unittest.TestCase):
    def test_status_and_message(self):
        with self.assertRaises(lt.LoratuneError) as cm:
            lt.Tokenizer("/nonexistent/loratune-tok")
        e = cm.exception
        self.assertLess(e.status, 0)
        self.assertIn("nonexistent", e.message)
        self.assertTrue(e.status_name.startswith("LT_ERR_"))
        self.assertIn(e.message, str(e))

    def test_bad_target_name(self):
        with self.assertRaises(lt.LoratuneError) as cm:
            lt.parse_targets("q_proj,not_a_module")
        self.assertEqual(cm.exception.status, _ffi.LT_ERR_INVALID_ARGUMENT)
        self.assertIn("not_a_module", cm.exception.message)
        self.assertEqual(lt.parse_targets(["q_proj", "v_proj"]), _ffi.LT_TARGET_Q | _ffi.LT_TARGET_V)


class TestCoreLayer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tiny_model()
        cls.tok = lt.Tokenizer(cls.dir)
        cls.out = tempfile.mkdtemp(prefix="loratune-py-")

    def test_tokenizer(self):
        text = "只剩一个心脏了还能活吗？ Hello world"
        ids = self.tok.encode(text)
        self.assertTrue(ids)
        self.assertEqual(self.tok.decode(ids), text)
        self.assertEqual(self.tok.eos_token, "<|im_end|>")
        self.assertEqual(self.tok.token_to_id("<|im_end|>"), 151645)
        self.assertEqual(self.tok.special_tokens()["eos_id"], 151645)
        # streaming decode of a multi-byte character, one token at a time
        with self.tok.stream() as st:
            pieces = [st.push(i) for i in ids] + [st.flush()]
        self.assertEqual("".join(pieces), text)

    def test_whole_job(self):
        model = lt.Model(self.dir, device="cpu", max_seq_len=256)
        model.add_lora(r=8, alpha=16, dropout=0.1, targets="all", seed=3407)
        info = model.info()
        self.assertEqual(info.model_type, "qwen2")
        self.assertGreater(info.n_lora_params, 0)
        ds = lt.Dataset(self.tok, path=DATA, max_seq_len=64)
        self.assertEqual(len(ds), 1475)
        ids, labels = ds[0]
        self.assertEqual(len(ids), len(labels))
        self.assertEqual(ids[-1], 151645)  # the EOS the dataset appends (record 0 is short)

        recorded = []
        tr = lt.Trainer(model, ds, batch_size=2, grad_accum=1, max_steps=5, warmup_steps=1, lr=1e-3,
                        on_step=lambda m: recorded.append(m.loss))
        gc.collect()  # the lambda lives on only through the trainer: it must survive this
        stepped = [m.loss for m in tr]
        self.assertTrue(tr.finished)
        self.assertEqual(len(stepped), 5)
        self.assertEqual(recorded, stepped)
        self.assertTrue(all(x > 0 for x in stepped))
        tr.close()

        seen = []
        tr2 = lt.Trainer(model, ds, batch_size=2, grad_accum=1, max_steps=5, warmup_steps=1,
                         on_step=lambda m: seen.append(m.step) or m.step >= 2)
        self.assertEqual(tr2.run(), "stopped")
        self.assertEqual(seen, [1, 2])
        tr2.close()

        prompt = self.tok.encode("海绵宝宝的书法是不是叫做海绵体")
        pieces = []
        new = model.generate(prompt, max_new_tokens=12, tokenizer=self.tok,
                             on_text=lambda piece, token: pieces.append(piece))
        self.assertTrue(0 < len(new) <= 12)
        self.assertEqual("".join(pieces), self.tok.decode(new))
        streamed = "".join(model.generate_stream(prompt, self.tok, max_new_tokens=12))
        self.assertEqual(streamed, self.tok.decode(new))  # greedy: the same text again
        # several prompts at once: each as alone (greedy), sampling with seed + i
        prompts = [prompt, self.tok.encode("你好"), prompt[:3]]
        rows = model.generate(prompts, max_new_tokens=6, stop_ids=[])
        self.assertEqual(rows, [model.generate(p, max_new_tokens=6, stop_ids=[]) for p in prompts])
        rows = model.generate(prompts, max_new_tokens=6, stop_ids=[], do_sample=True, seed=11)
        self.assertEqual(rows, [model.generate(p, max_new_tokens=6, stop_ids=[], do_sample=True, seed=11 + i)
                                for i, p in enumerate(prompts)])
        with self.assertRaises(lt.LoratuneError) as cm:
            model.generate(prompts, tokenizer=self.tok, on_text=lambda piece, token: None)
        self.assertIn("one prompt", str(cm.exception))

        adapter = os.path.join(self.out, "lora_model")
        model.save_adapter(adapter, overwrite=True)
        with open(os.path.join(adapter, "adapter_config.json")) as f:
            cfg = json.load(f)
        self.assertEqual(cfg["r"], 8)
        with self.assertRaises(lt.LoratuneError) as cm:
            model.save_adapter(adapter, overwrite=False)
        self.assertEqual(cm.exception.status, _ffi.LT_ERR_EXISTS)

        gguf = os.path.join(self.out, "model.gguf")
        lt.export(model, gguf, self.tok, format="gguf", quant="q4_k_m", overwrite=True)
        with open(gguf, "rb") as f:
            magic, version = struct.unpack("<4sI", f.read(8))
        self.assertEqual((magic, version), (b"GGUF", 3))
        model.close()

    def test_callback_exception_is_raised_again(self):
        model = lt.Model(self.dir, device="cpu", max_seq_len=128)
        model.add_lora(r=4)
        ds = lt.Dataset(self.tok, max_seq_len=64)
        ds.add_alpaca("问题", "", "回答")
        ds.add({"instruction": "第二个", "input": "", "output": "答"})

        def boom(m):
            raise ValueError("boom at step %d" % m.step)
        tr = lt.Trainer(model, ds, batch_size=1, grad_accum=1, max_steps=3, on_step=boom)
        with self.assertRaises(ValueError) as cm:
            tr.step()
        self.assertIn("boom at step 1", str(cm.exception))
        model.close()
        self.assertTrue(tr.closed)  # closing the model closed its trainer first
        with self.assertRaises(lt.LoratuneError) as cm:
            tr.step()
        self.assertEqual(cm.exception.status, _ffi.LT_ERR_STATE)

    def test_bad_record(self):
        ds = lt.Dataset(self.tok)
        with self.assertRaises(lt.LoratuneError) as cm:
            ds.add_json('{"instruction": "x", "output": ')
        self.assertLess(cm.exception.status, 0)
        self.assertTrue(cm.exception.message)


class TestNotebookLayer(unittest.TestCase):
    """The notebook's calls, on the tiny model."""

    def test_fast_language_model_flow(self):
        from loratune.datasets import Dataset as HFDataset
        from loratune.transformers import TextStreamer, TrainingArguments
        from loratune.trl import SFTTrainer
        from loratune.unsloth import FastLanguageModel, is_bfloat16_supported

        out = tempfile.mkdtemp(prefix="loratune-nb-")
        model, tokenizer = FastLanguageModel.from_pretrained(model_name=tiny_model(), max_seq_length=256, dtype=None,
                                                             load_in_4bit=True, device="cpu")
        self.assertEqual(tokenizer.eos_token, "<|im_end|>")
        inputs = tokenizer(["下面是一个问题：\n地球是圆的吗？"], return_tensors="pt").to("cuda")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            out_ids = model.generate(**inputs, streamer=TextStreamer(tokenizer), max_new_tokens=8)
        rows = out_ids.tolist() if hasattr(out_ids, "tolist") else out_ids
        prompt_len = len(tokenizer("下面是一个问题：\n地球是圆的吗？")["input_ids"])
        self.assertTrue(prompt_len < len(rows[0]) <= prompt_len + 8)
        self.assertTrue(buf.getvalue().startswith("下面是一个问题：\n地球是圆的吗？"))
        self.assertEqual(buf.getvalue().rstrip("\n"), tokenizer.decode(rows[0]))

        model = FastLanguageModel.get_peft_model(
            model, r=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            lora_alpha=32, lora_dropout=0.1, bias="none", use_gradient_checkpointing="unsloth", random_state=3407,
            use_rslora=False, loftq_config=None)
        with open(DATA, encoding="utf-8") as f:
            records = json.load(f)[:40]
        eos = tokenizer.eos_token

        def fmt(examples):
            return {"text": ["### Instruction:\n%s\n\n### Response:\n%s" % (i, o) + eos
                             for i, o in zip(examples["instruction"], examples["output"])]}
        dataset = HFDataset.from_list(records).map(fmt, batched=True)
        self.assertEqual(len(dataset["text"]), 40)
        steps = []
        trainer = SFTTrainer(model=model, tokenizer=tokenizer, train_dataset=dataset, dataset_text_field="text",
                             max_seq_length=128, dataset_num_proc=2, packing=False,
                             callbacks=[lambda m: steps.append(m.step)],
                             args=TrainingArguments(per_device_train_batch_size=2, gradient_accumulation_steps=2,
                                                    warmup_steps=1, max_steps=5, learning_rate=4e-5,
                                                    fp16=not is_bfloat16_supported(), bf16=is_bfloat16_supported(),
                                                    logging_steps=1, optim="adamw_8bit", weight_decay=0.01,
                                                    lr_scheduler_type="cosine", seed=3407,
                                                    output_dir=os.path.join(out, "outputs"), disable_tqdm=True))
        ids, labels = trainer.train_dataset[0]
        self.assertEqual(ids[-1], tokenizer.eos_token_id)  # EOS once: the text's own, none added
        self.assertNotEqual(ids[-2], tokenizer.eos_token_id)
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            stats = trainer.train()
        self.assertEqual(stats.global_step, 5)
        self.assertEqual(steps, [1, 2, 3, 4, 5])
        self.assertEqual(len(re.findall(r"\{'loss': ", log.getvalue())), 5)
        self.assertGreater(stats.training_loss, 0)
        self.assertIn("train_runtime", stats.metrics)

        FastLanguageModel.for_inference(model)
        model.save_pretrained(os.path.join(out, "lora_model"))
        tokenizer.save_pretrained(os.path.join(out, "lora_model"))
        for f in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json"):
            self.assertTrue(os.path.exists(os.path.join(out, "lora_model", f)), f)
        with contextlib.redirect_stdout(io.StringIO()):
            gguf = model.save_pretrained_gguf(os.path.join(out, "model"), tokenizer, quantization_method="q4_k_m")
        with open(gguf, "rb") as f:
            self.assertEqual(f.read(4), b"GGUF")

    def test_dataset_inputs_and_generic_streamer(self):
        from loratune.transformers import TrainingArguments
        from loratune.trl import SFTTrainer
        from loratune.unsloth import FastLanguageModel
        model, tokenizer = FastLanguageModel.from_pretrained(tiny_model(), max_seq_length=64, device="cpu")
        model = FastLanguageModel.get_peft_model(model, r=4, lora_alpha=8)
        args = TrainingArguments(per_device_train_batch_size=1, gradient_accumulation_steps=1, max_steps=1,
                                 output_dir=None, disable_tqdm=True, save_strategy="no")
        rows = [{"instruction": "问%d" % i, "input": "", "output": "答%d" % i} for i in range(4)]
        by_rows = SFTTrainer(model=model, tokenizer=tokenizer, train_dataset=rows, max_seq_length=64, args=args)
        by_file = SFTTrainer(model=model, tokenizer=tokenizer, train_dataset=DATA, max_seq_length=64, args=args)
        by_func = SFTTrainer(model=model, tokenizer=tokenizer, train_dataset=rows, max_seq_length=64, args=args,
                             formatting_func=lambda b: ["Q: %s A: %s" % x for x in zip(b["instruction"], b["output"])])
        self.assertEqual(len(by_rows.train_dataset), 4)
        self.assertEqual(len(by_file.train_dataset), 1475)
        # Alpaca records go through the library's template, which appends EOS; texts go as they are.
        self.assertEqual(by_rows.train_dataset[0][0][-1], tokenizer.eos_token_id)
        self.assertEqual(tokenizer.decode(by_func.train_dataset[0][0]), "Q: 问0 A: 答0")
        with contextlib.redirect_stdout(io.StringIO()):
            self.assertEqual(by_rows.train().global_step, 1)

        class Collect:  # transformers' streamer protocol: put(ids) for the prompt, then each token
            def __init__(self):
                self.calls = []

            def put(self, value):
                self.calls.append(list(value[0]) if isinstance(value[0], list) else list(value))

            def end(self):
                self.calls.append("end")
        st = Collect()
        ids = tokenizer("你好")["input_ids"]
        out = model.generate(input_ids=[ids], streamer=st, max_new_tokens=4)
        self.assertEqual(st.calls[0], ids)
        self.assertEqual(st.calls[-1], "end")
        self.assertEqual([c[0] for c in st.calls[1:-1]], out[0][len(ids):])
        # several rows at once (lt_generate_batch): each row as generated alone, right-padded
        ids2 = tokenizer("天空为什么是蓝色的")["input_ids"]
        both = model.generate(input_ids=[ids, ids2], max_new_tokens=4, eos_token_id=[])
        one = [model.generate(input_ids=[r], max_new_tokens=4, eos_token_id=[])[0] for r in (ids, ids2)]
        self.assertEqual([r[:len(o)] for r, o in zip(both, one)], one)

    def test_unsupported_options_are_refused(self):
        from loratune.unsloth import FastLanguageModel
        model, _ = FastLanguageModel.from_pretrained(tiny_model(), max_seq_length=64, device="cpu")
        with self.assertRaises(lt.LoratuneError) as cm:
            FastLanguageModel.get_peft_model(model, bias="all")
        self.assertEqual(cm.exception.status, _ffi.LT_ERR_UNSUPPORTED)
        with self.assertRaises(lt.LoratuneError):
            model.save_pretrained(tempfile.mkdtemp())  # no adapter yet

    def test_minimal_datasets(self):
        from loratune import datasets
        ds = datasets.load_dataset("json", data_files=DATA, split="train")
        self.assertEqual(len(ds), 1475)
        if not datasets.HAVE_HF_DATASETS:
            self.assertEqual(ds.column_names, ["instruction", "input", "output"])
        m = ds.map(lambda b: {"n": [len(x) for x in b["instruction"]]}, batched=True)
        self.assertEqual(m["n"][0], len(ds[0]["instruction"]))


if __name__ == "__main__":
    unittest.main()

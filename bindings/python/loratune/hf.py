"""hf.py - the notebook's workflow (Unsloth + TRL + transformers names) over loratune's handles:
FastLanguageModel, a callable tokenizer, TextStreamer, TrainingArguments / SFTConfig, SFTTrainer,
EarlyStoppingCallback. A notebook written for Unsloth changes its import lines, not its code:
`from loratune import ...`, or the modules loratune.unsloth, loratune.trl, loratune.transformers
and loratune.datasets, which re-export these under the original module names. Every argument of
those APIs is honoured, listed as having nothing to steer here (the *_NO_EFFECT sets), or refused
with UnsupportedError naming it unless left at its default (the *_DEFAULT_ONLY tables); a name
the original API does not have is a TypeError.
"""
import math
import os
import re
import shutil
import time
import warnings
from collections import namedtuple

from . import _ffi, core
from ._ffi import LoratuneError


def _torch():
    try:
        import torch
        return torch
    except ImportError:
        return None


def _rows(x):
    """input_ids as a tensor / array / list / list of lists -> (list of lists of ints, was_tensor)."""
    if x is None:
        return [], False
    was_tensor = hasattr(x, "tolist") and not isinstance(x, list)
    v = x.tolist() if hasattr(x, "tolist") else x
    if v and isinstance(v[0], int):
        v = [v]
    return [list(map(int, r)) for r in v], was_tensor


def _as_tensor(rows, return_tensors):
    if return_tensors == "pt":
        torch = _torch()
        if torch is not None:
            return torch.tensor(rows, dtype=torch.long)
    elif return_tensors == "np":
        import numpy as np
        return np.array(rows, dtype=np.int64)
    return rows


class BatchEncoding(dict):
    """input_ids / attention_mask, reachable as keys or attributes. .to(device) keeps the ids
    where they are: libloratune reads them from host memory whatever the device."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)

    def to(self, device):
        return self


# ---- tokenizer -------------------------------------------------------------------------------
class Tokenizer:
    """A transformers-style tokenizer over loratune.Tokenizer: call it on a text (or a list of
    texts), decode, apply_chat_template, save_pretrained, .eos_token."""

    def __init__(self, path, model_max_length=2048):
        self.name_or_path = os.fspath(path)
        self._tok = core.Tokenizer(path)
        self.model_max_length = model_max_length
        self.padding_side = "right"
        sp = self._tok.special_tokens()
        self.eos_token_id = sp["eos_id"]
        self.bos_token_id = sp["bos_id"]
        self.pad_token_id = sp["pad_id"] if sp["pad_id"] is not None else sp["eos_id"]
        self.eos_token = self._tok.eos_token
        self.bos_token = self._tok.id_to_token(self.bos_token_id) if self.bos_token_id is not None else None
        self.pad_token = self._tok.id_to_token(self.pad_token_id) if self.pad_token_id is not None else None
        self.stop_token_ids = sp["stop_ids"]

    @property
    def vocab_size(self):
        return self._tok.vocab_size

    def __len__(self):
        return self._tok.vocab_size

    def encode(self, text, add_special_tokens=True, **kwargs):
        _check_extra("tokenizer.encode", kwargs, _TOK_NO_EFFECT, _TOK_DEFAULT_ONLY, "a transformers tokenizer argument")
        return self._tok.encode(text, add_special=add_special_tokens)

    def __call__(self, text, add_special_tokens=True, padding=False, truncation=False, max_length=None,
                 return_tensors=None, return_attention_mask=True, **kwargs):
        _check_extra("tokenizer", kwargs, _TOK_NO_EFFECT, _TOK_DEFAULT_ONLY, "a transformers tokenizer argument")
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        rows = [self._tok.encode(t, add_special=add_special_tokens) for t in texts]
        if truncation and (max_length or self.model_max_length):
            limit = max_length or self.model_max_length
            rows = [r[:limit] for r in rows]
        masks = [[1] * len(r) for r in rows]
        lengths = {len(r) for r in rows}
        if padding or (return_tensors is not None and len(lengths) > 1):
            width = max_length if padding == "max_length" and max_length else max(lengths, default=0)
            pad = self.pad_token_id if self.pad_token_id is not None else 0
            for i, r in enumerate(rows):
                fill = width - len(r)
                if self.padding_side == "left":
                    rows[i], masks[i] = [pad] * fill + r, [0] * fill + masks[i]
                else:
                    rows[i], masks[i] = r + [pad] * fill, masks[i] + [0] * fill
        if return_tensors is None and single:
            out = BatchEncoding(input_ids=rows[0])
            if return_attention_mask:
                out["attention_mask"] = masks[0]
            return out
        out = BatchEncoding(input_ids=_as_tensor(rows, return_tensors))
        if return_attention_mask:
            out["attention_mask"] = _as_tensor(masks, return_tensors)
        return out

    def decode(self, token_ids, skip_special_tokens=False, **kwargs):
        _check_extra("tokenizer.decode", kwargs, _TOK_NO_EFFECT, _TOK_DEFAULT_ONLY, "a transformers decode argument")
        rows, _ = _rows(token_ids)
        return self._tok.decode(rows[0] if rows else [], skip_special=skip_special_tokens)

    def batch_decode(self, sequences, skip_special_tokens=False, **kwargs):
        _check_extra("tokenizer.batch_decode", kwargs, _TOK_NO_EFFECT, _TOK_DEFAULT_ONLY,
                     "a transformers decode argument")
        rows, _ = _rows(sequences)
        return [self._tok.decode(r, skip_special=skip_special_tokens) for r in rows]

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            return self._tok.token_to_id(tokens)
        return [self._tok.token_to_id(t) for t in tokens]

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return self._tok.id_to_token(ids)
        return [self._tok.id_to_token(i) for i in ids]

    def apply_chat_template(self, conversation, tokenize=True, add_generation_prompt=False, return_tensors=None,
                            chat_template=None, **kwargs):
        text = self._tok.apply_chat_template(conversation, add_generation_prompt, chat_template)
        if not tokenize:
            return text
        ids = self._tok.encode(text)
        return _as_tensor([ids], return_tensors) if return_tensors else ids

    def save_pretrained(self, save_directory, **kwargs):
        """Copies the tokenizer files it was loaded from into save_directory."""
        os.makedirs(save_directory, exist_ok=True)
        written = []
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                     "vocab.json", "merges.txt"):
            src = os.path.join(self.name_or_path, name)
            if os.path.isfile(src):
                dst = os.path.join(save_directory, name)
                if os.path.abspath(src) != os.path.abspath(dst):
                    shutil.copyfile(src, dst)
                written.append(dst)
        return tuple(written)

    def __repr__(self):
        return "loratune.Tokenizer(%r, vocab_size=%d)" % (self.name_or_path, self.vocab_size)


# ---- streaming -------------------------------------------------------------------------------
class TextStreamer:
    """Prints the text of a generation as it comes (transformers.TextStreamer's behaviour):
    the prompt first unless skip_prompt, then each new piece, then a newline."""

    def __init__(self, tokenizer, skip_prompt=False, **decode_kwargs):
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.decode_kwargs = decode_kwargs
        self._ids = []
        self._printed = 0
        self._next_is_prompt = True

    # the fast path loratune's generate uses: complete pieces of text from the library
    def _lt_prompt(self, ids):
        if not self.skip_prompt:
            text = self.tokenizer.decode(ids, skip_special_tokens=self.decode_kwargs.get("skip_special_tokens", False))
            self.on_finalized_text(text)
        self._next_is_prompt = False

    def _lt_piece(self, piece):
        self.on_finalized_text(piece)

    # transformers' streamer protocol, for callers that feed ids themselves
    def put(self, value):
        rows, _ = _rows(value)
        ids = [i for r in rows for i in r]
        if self._next_is_prompt:
            self._next_is_prompt = False
            if self.skip_prompt:
                return
        self._ids += ids
        text = self.tokenizer.decode(self._ids, **self.decode_kwargs)
        if text.endswith("\ufffd"):
            return  # an incomplete UTF-8 character: wait for the next token
        self.on_finalized_text(text[self._printed:])
        self._printed = len(text)

    def end(self):
        if self._ids:
            text = self.tokenizer.decode(self._ids, **self.decode_kwargs)
            self.on_finalized_text(text[self._printed:])
        self._ids, self._printed, self._next_is_prompt = [], 0, True
        self.on_finalized_text("", stream_end=True)

    def on_finalized_text(self, text, stream_end=False):
        print(text, flush=True, end="" if not stream_end else None)


# ---- model -----------------------------------------------------------------------------------
def _resolve_model_dir(model_name, token=None, revision=None):
    if os.path.isdir(model_name):
        return os.fspath(model_name)
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise LoratuneError(_ffi.LT_ERR_NOT_FOUND,
                            "%r is not a local folder and huggingface_hub is not installed to fetch it from the "
                            "Hub; pip install huggingface_hub, or pass a folder with config.json and "
                            "*.safetensors" % model_name, "from_pretrained")
    return snapshot_download(repo_id=model_name, token=token, revision=revision,
                             allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])


class PeftConfig:
    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __repr__(self):
        return "LoraConfig(%s)" % ", ".join("%s=%r" % kv for kv in self.__dict__.items())


class FastModel:
    """A loaded model as the notebook uses it: generate(**inputs, streamer=...),
    save_pretrained, save_pretrained_gguf, save_pretrained_merged. `.lt` is the loratune.Model."""

    def __init__(self, model, tokenizer, path, max_seq_length):
        self.lt = model
        self._tokenizer = tokenizer
        self.name_or_path = path
        self.max_seq_length = max_seq_length
        self.config = model.info()
        self.peft_config = None
        self.gradient_checkpointing = True
        self.training = False

    # -- inference
    def generate(self, input_ids=None, attention_mask=None, streamer=None, max_new_tokens=None, max_length=None,
                 do_sample=False, temperature=1.0, top_k=None, top_p=1.0, min_p=None, repetition_penalty=1.0,
                 eos_token_id=None, seed=3407, stop_strings=None, **kwargs):
        """Like transformers' generate: returns prompt + new ids per row (a tensor when the
        input was one). Greedy unless do_sample; stops at the tokenizer's stop ids. Several rows
        (no streamer, one max_new_tokens for all) are generated together, row i sampling with
        seed + i; greedy rows are what each gives alone. Other
        generation arguments change nothing here (_GEN_NO_EFFECT) or are refused unless left at
        their default (_GEN_DEFAULT_ONLY)."""
        _check_extra("generate", kwargs, _GEN_NO_EFFECT, _GEN_DEFAULT_ONLY, "a transformers generate argument")
        rows, was_tensor = _rows(input_ids)
        masks, _ = _rows(attention_mask)
        if not rows:
            raise LoratuneError(_ffi.LT_ERR_INVALID_ARGUMENT, "generate needs input_ids", "generate")
        if streamer is not None and len(rows) > 1:
            raise LoratuneError(_ffi.LT_ERR_INVALID_ARGUMENT, "a streamer takes one sequence, not a batch", "generate")
        stop_ids = None
        if eos_token_id is not None:
            stop_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
        tok = getattr(streamer, "tokenizer", None) or self._tokenizer
        tok_handle = tok._tok if isinstance(tok, Tokenizer) else self._tokenizer._tok
        outs = []
        if masks:
            rows = [[t for t, m in zip(row, masks[i]) if m] for i, row in enumerate(rows)]
        n_news = [max_new_tokens if max_new_tokens is not None else (
            max_length - len(row) if max_length is not None else 20) for row in rows]
        batched = streamer is None and len(rows) > 1 and len(set(n_news)) == 1
        if batched:
            # several rows at once (lt_generate_batch): row i samples with seed + i
            news = self.lt.generate(rows, max_new_tokens=n_news[0], tokenizer=tok_handle, do_sample=do_sample,
                                    temperature=temperature, top_k=top_k or 0,
                                    top_p=top_p if top_p is not None else 1.0, min_p=min_p or 0.0,
                                    repetition_penalty=repetition_penalty or 1.0, seed=seed, stop_ids=stop_ids,
                                    stop_strings=stop_strings)
            outs = [list(row) + new for row, new in zip(rows, news)]
        for i, row in enumerate([] if batched else rows):
            n_new = n_news[i]
            on_text = None
            if streamer is not None:
                if hasattr(streamer, "_lt_prompt"):
                    streamer._lt_prompt(row)
                    on_text = lambda piece, token: streamer._lt_piece(piece)  # noqa: E731
                else:
                    streamer.put(_as_tensor([row], "pt" if was_tensor else None))
                    on_text = lambda piece, token: streamer.put(  # noqa: E731
                        _as_tensor([[token]], "pt" if was_tensor else None))
            try:
                new = self.lt.generate(row, max_new_tokens=n_new, tokenizer=tok_handle, on_text=on_text,
                                       do_sample=do_sample, temperature=temperature, top_k=top_k or 0,
                                       top_p=top_p if top_p is not None else 1.0, min_p=min_p or 0.0,
                                       repetition_penalty=repetition_penalty or 1.0, seed=seed,
                                       stop_ids=stop_ids, stop_strings=stop_strings)
            finally:
                if streamer is not None:
                    streamer.end()
            outs.append(row + new)
        width = max(len(r) for r in outs)
        pad = self._tokenizer.pad_token_id or 0
        outs = [r + [pad] * (width - len(r)) for r in outs]
        return _as_tensor(outs, "pt") if was_tensor else outs

    # -- saving
    def save_pretrained(self, save_directory, tokenizer=None, **kwargs):
        """The LoRA adapter as PEFT writes it (adapter_config.json + adapter_model.safetensors)."""
        _check_extra("save_pretrained", kwargs, _SAVE_NO_EFFECT, _SAVE_DEFAULT_ONLY, "a save_pretrained argument")
        if self.peft_config is None:
            raise LoratuneError(_ffi.LT_ERR_STATE, "the model has no LoRA adapter to save; call "
                                "FastLanguageModel.get_peft_model first", "save_pretrained")
        os.makedirs(save_directory, exist_ok=True)
        self.lt.save_adapter(save_directory, overwrite=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(save_directory)

    def push_to_hub(self, *args, **kwargs):
        raise LoratuneError(_ffi.LT_ERR_UNSUPPORTED, "push_to_hub is not part of loratune: save_pretrained and "
                            "upload the folder with huggingface_hub", "push_to_hub")

    def save_pretrained_merged(self, save_directory, tokenizer=None, save_method="merged_16bit", **kwargs):
        """save_method "lora": the adapter; "merged_16bit": the merged safetensors checkpoint
        ("merged_4bit" is refused: the merged weights are written in 16 bits)."""
        _check_extra("save_pretrained_merged", kwargs, _SAVE_NO_EFFECT, _SAVE_DEFAULT_ONLY,
                     "a save_pretrained_merged argument")
        if save_method not in ("lora", "merged_16bit"):
            _refuse("save_pretrained_merged", "save_method", save_method, "use \"merged_16bit\" (the merged weights "
                    "in 16 bits) or \"lora\" (the adapter)")
        if save_method == "lora":
            return self.save_pretrained(save_directory, tokenizer)
        os.makedirs(save_directory, exist_ok=True)
        tok = tokenizer._tok if isinstance(tokenizer, Tokenizer) else None
        core.export(self.lt, save_directory, tok, format="merged", quant=None, overwrite=True,
                    tokenizer_dir=None if tok else self.name_or_path)
        return save_directory

    def save_pretrained_gguf(self, save_directory, tokenizer=None, quantization_method="q4_k_m", template=None,
                             **kwargs):
        """Merges LoRA into the base and writes <save_directory>/model-<QUANT>.gguf with an Ollama
        Modelfile beside it. Returns the GGUF's path."""
        _check_extra("save_pretrained_gguf", kwargs, _SAVE_NO_EFFECT, _SAVE_DEFAULT_ONLY,
                     "a save_pretrained_gguf argument")
        methods = quantization_method if isinstance(quantization_method, (list, tuple)) else [quantization_method]
        os.makedirs(save_directory, exist_ok=True)
        tok = tokenizer._tok if isinstance(tokenizer, Tokenizer) else self._tokenizer._tok
        paths = []
        for q in methods:
            q = {"not_quantized": "f16", "fast_quantized": "q8_0", "quantized": "q4_k_m"}.get(q, q).lower()
            path = os.path.join(save_directory, "model-%s.gguf" % q.upper())
            kw = {"template": template} if template else {}
            core.export(self.lt, path, tok, format="gguf", quant=q, overwrite=True, **kw)
            print("loratune: wrote %s (+ Modelfile)" % path)
            paths.append(path)
        return paths[0] if len(paths) == 1 else paths

    def print_trainable_parameters(self):
        info = self.lt.info()
        total = info.n_params + info.n_lora_params
        print("trainable params: {:,} || all params: {:,} || trainable%: {:.4f}".format(
            info.n_lora_params, total, 100.0 * info.n_lora_params / max(total, 1)))

    def __repr__(self):
        c = self.config
        return "loratune.FastModel(%s, layers=%d, hidden=%d, device=%d, lora=%s)" % (
            self.name_or_path, c.num_layers, c.hidden_size, c.device, self.peft_config is not None)


# Unsloth's from_pretrained / get_peft_model and transformers' generate: arguments with nothing to
# steer in loratune, and arguments whose non-default values ask for what it does not do.
_UNSUPPORTED = "loratune does not implement it"
_LOAD_NO_EFFECT = frozenset(("fix_tokenizer", "trust_remote_code", "use_exact_model_name", "gpu_memory_utilization",
                             "disable_log_stats", "random_state", "max_lora_rank", "attn_implementation",
                             "low_cpu_mem_usage", "cache_dir", "local_files_only"))
_LOAD_DEFAULT_ONLY = {
    "load_in_8bit": (False, "the base is NF4 (load_in_4bit=True) or 16-bit (load_in_4bit=False)"),
    "full_finetuning": (False, "loratune trains LoRA adapters"),
    "rope_scaling": (None, "the model's config.json rope_scaling is used as it is"),
    "resize_model_vocab": (None, "the vocabulary is the checkpoint's"),
    "fast_inference": (False, "generation is loratune's own (no vLLM)"),
    "float8_kv_cache": (False, "the KV cache is in the compute type"),
    "qat_scheme": (None, "quantization-aware training is not implemented"),
    "quantization_config": (None, "use load_in_4bit"),
}
_PEFT_NO_EFFECT = frozenset(("temporary_location", "task_type", "inference_mode"))
_PEFT_DEFAULT_ONLY = {
    "layers_to_transform": (None, "LoRA goes on every layer"),
    "layers_pattern": (None, "LoRA goes on every layer"),
    "modules_to_save": (None, "only the LoRA matrices are trained and saved"),
    "init_lora_weights": (True, "the initialisation is PEFT's default (Kaiming A, zero B)"),
    "use_dora": (False, "DoRA is not implemented"),
    "qat_scheme": (None, "quantization-aware training is not implemented"),
    "lora_bias": (False, "loratune trains LoRA matrices only"),
    "rank_pattern": ({}, "one rank for every module"),
    "alpha_pattern": ({}, "one alpha for every module"),
    "fan_in_fan_out": (False, "the projections are nn.Linear's layout"),
}
_GEN_NO_EFFECT = frozenset(("use_cache", "pad_token_id", "bos_token_id", "early_stopping", "length_penalty",
                            "synced_gpus", "tokenizer", "output_attentions", "output_hidden_states"))
_GEN_DEFAULT_ONLY = {
    "num_beams": (1, "generation is greedy or sampled, without beam search"),
    "num_return_sequences": (1, "one sequence per prompt"),
    "num_beam_groups": (1, "no beam search"),
    "output_scores": (False, "generate returns ids"),
    "output_logits": (False, "generate returns ids; model.lt.logits(ids) gives logits"),
    "return_dict_in_generate": (False, "generate returns ids"),
    "no_repeat_ngram_size": (0, _UNSUPPORTED),
    "encoder_no_repeat_ngram_size": (0, _UNSUPPORTED),
    "typical_p": (1.0, _UNSUPPORTED),
    "epsilon_cutoff": (0.0, _UNSUPPORTED),
    "eta_cutoff": (0.0, _UNSUPPORTED),
    "diversity_penalty": (0.0, _UNSUPPORTED),
    "bad_words_ids": (None, _UNSUPPORTED),
    "force_words_ids": (None, _UNSUPPORTED),
    "min_new_tokens": (None, _UNSUPPORTED),
    "min_length": (0, _UNSUPPORTED),
    "logits_processor": (None, _UNSUPPORTED),
    "stopping_criteria": (None, "use eos_token_id or stop_strings"),
    "prefix_allowed_tokens_fn": (None, _UNSUPPORTED),
    "suppress_tokens": (None, _UNSUPPORTED),
    "begin_suppress_tokens": (None, _UNSUPPORTED),
    "forced_bos_token_id": (None, _UNSUPPORTED),
    "forced_eos_token_id": (None, _UNSUPPORTED),
    "guidance_scale": (None, _UNSUPPORTED),
    "assistant_model": (None, _UNSUPPORTED),
    "generation_config": (None, "pass the settings as arguments"),
}

_TOK_NO_EFFECT = frozenset(("verbose", "clean_up_tokenization_spaces", "spaces_between_special_tokens"))
_TOK_DEFAULT_ONLY = {
    "text_pair": (None, "one text per sequence"),
    "text_target": (None, "one text per sequence"),
    "is_split_into_words": (False, "texts are whole strings"),
    "stride": (0, "no overflowing windows"),
    "return_overflowing_tokens": (False, "no overflowing windows"),
    "return_token_type_ids": (None, "Qwen2 / Llama tokenizers have no token types"),
    "return_special_tokens_mask": (False, _UNSUPPORTED),
    "return_offsets_mapping": (False, _UNSUPPORTED),
    "return_length": (False, _UNSUPPORTED),
    "pad_to_multiple_of": (None, _UNSUPPORTED),
    "padding_side": (None, "set tokenizer.padding_side"),
}
_SAVE_NO_EFFECT = frozenset(("safe_serialization", "max_shard_size", "maximum_memory_usage", "temporary_location",
                             "is_main_process", "state_dict", "save_function", "tags", "private", "token",
                             "first_conversion", "commit_message"))
_SAVE_DEFAULT_ONLY = {
    "push_to_hub": (False, "save the folder and upload it with huggingface_hub"),
    "selected_adapters": (None, "a model has one adapter"),
    "save_embedding_layers": ("auto", "only the LoRA matrices are trained"),
}

_TARGET_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class FastLanguageModel:
    """Unsloth's entry points, over libloratune."""

    @staticmethod
    def from_pretrained(model_name, max_seq_length=2048, dtype=None, load_in_4bit=True, token=None,
                        device=None, tokenizer_name=None, revision=None, n_threads=0, device_map=None,
                        use_gradient_checkpointing=None, **kwargs):
        """(model, tokenizer) from a local folder or a Hub id (fetched with huggingface_hub).
        device: "auto" (default; $LORATUNE_DEVICE overrides), "cpu", "cuda", "cuda:N"; a
        device_map of one of these names the same. Unsloth's other arguments: _LOAD_NO_EFFECT ones
        change nothing here, _LOAD_DEFAULT_ONLY ones are refused unless left at their default."""
        _check_extra("from_pretrained", kwargs, _LOAD_NO_EFFECT, _LOAD_DEFAULT_ONLY,
                     "an Unsloth FastLanguageModel.from_pretrained argument")
        if isinstance(device_map, dict):
            _refuse("from_pretrained", "device_map", device_map, "the whole model goes on one device; pass "
                    "device=\"cpu\" or \"cuda:N\"")
        if device is None and isinstance(device_map, str) and device_map.split(":")[0] in ("cpu", "cuda"):
            device = device_map
        path = _resolve_model_dir(model_name, token, revision)
        tok_path = _resolve_model_dir(tokenizer_name, token, revision) if tokenizer_name else path
        device = device or os.environ.get("LORATUNE_DEVICE") or "auto"
        model = core.Model(path, device=device, quant="nf4" if load_in_4bit else "none",
                           dtype=str(dtype) if dtype is not None else "auto", max_seq_len=max_seq_length,
                           threads=n_threads)
        tokenizer = Tokenizer(tok_path, model_max_length=max_seq_length)
        fm = FastModel(model, tokenizer, path, max_seq_length)
        if use_gradient_checkpointing is not None:
            fm.gradient_checkpointing = bool(use_gradient_checkpointing)
        return fm, tokenizer

    @staticmethod
    def get_peft_model(model, r=16, target_modules=None, lora_alpha=16, lora_dropout=0.0, bias="none",
                       use_gradient_checkpointing=True, random_state=3407, use_rslora=False, loftq_config=None,
                       max_seq_length=None, **kwargs):
        """Attaches a fresh LoRA adapter (PEFT's initialisation) and returns the model. Unsloth's
        and PEFT's other arguments are refused unless left at their defaults (_PEFT_DEFAULT_ONLY)."""
        _check_extra("get_peft_model", kwargs, _PEFT_NO_EFFECT, _PEFT_DEFAULT_ONLY,
                     "an Unsloth get_peft_model / PEFT LoraConfig argument")
        if bias not in (None, "none"):
            _refuse("get_peft_model", "bias", bias, "loratune trains LoRA matrices only; use bias=\"none\"")
        if loftq_config:
            _refuse("get_peft_model", "loftq_config", loftq_config, "LoftQ initialisation is not implemented; "
                    "pass loftq_config=None")
        targets = list(target_modules) if target_modules else list(_TARGET_NAMES)
        model.lt.add_lora(lora_r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, targets=targets,
                          use_rslora=use_rslora, seed=random_state)
        model.peft_config = PeftConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                       target_modules=targets, bias="none", use_rslora=use_rslora,
                                       random_state=random_state)
        model.gradient_checkpointing = bool(use_gradient_checkpointing)
        model.config = model.lt.info()
        return model

    @staticmethod
    def for_inference(model):
        """Inference mode: the training graph's activation buffers are freed until the next step."""
        model.lt.release_buffers()
        model.training = False
        return model

    @staticmethod
    def for_training(model, use_gradient_checkpointing=True):
        model.training = True
        return model


def is_bfloat16_supported():
    """True where the CUDA device computes in bf16 (compute capability 8.0 or newer)."""
    try:
        if core.cuda_device_count() > 0:
            return core.cuda_device_info(0)[1] >= 80
    except LoratuneError:
        pass
    return False


# ---- training arguments ----------------------------------------------------------------------
# Every argument of transformers.TrainingArguments and trl.SFTConfig is one of three kinds here;
# none is ignored:
#   - honoured: the named parameters of TrainingArguments / SFTConfig below, mapped onto
#     loratune's trainer, dataset and progress output by SFTTrainer;
#   - _NO_EFFECT: arguments that steer machinery loratune does not have (data loader workers,
#     logging folders, hub names used only by push_to_hub, distributed backends' knobs ...):
#     accepted at any value, they change nothing because there is nothing for them to change;
#   - _DEFAULT_ONLY: behaviour loratune does not implement: accepted at transformers' / TRL's
#     default, refused with UnsupportedError naming the argument at any other value.
# A name that is none of these is not a transformers / TRL argument: TypeError, as there.
_NO_EFFECT = frozenset("""
    overwrite_output_dir do_train do_eval do_predict prediction_loss_only logging_dir run_name log_level
    log_level_replica log_on_each_node logging_nan_inf_filter save_on_each_node save_only_model skip_memory_metrics
    dataloader_num_workers dataloader_pin_memory dataloader_persistent_workers dataloader_prefetch_factor
    remove_unused_columns label_names length_column_name hub_model_id hub_strategy hub_token hub_private_repo
    hub_always_push push_to_hub_model_id push_to_hub_organization push_to_hub_token resume_from_checkpoint
    include_tokens_per_second include_num_input_tokens_seen eval_accumulation_steps torch_empty_cache_steps
    gradient_checkpointing_kwargs ddp_timeout local_rank past_index eval_do_concat_batches include_inputs_for_metrics
    include_for_metrics batch_eval_metrics use_legacy_prediction_loop ray_scope mp_parameters tpu_metrics_debug
    fp16_opt_level half_precision_backend fp16_backend dataset_batch_size packing_strategy padding_free
    eval_use_gather_object average_tokens_across_devices""".split())

_DEFAULT_ONLY = {
    "eval_delay": (0, "evaluation starts with the first eval step"),
    "eval_on_start": (False, _UNSUPPORTED),
    "lr_scheduler_kwargs": ({}, "the schedulers (linear, cosine, constant) take no options"),
    "optim_args": (None, "the optimizers take their settings from adam_beta1/adam_beta2/adam_epsilon"),
    "optim_target_modules": (None, _UNSUPPORTED),
    "adafactor": (False, "the optimizers are adamw_torch and adamw_8bit"),
    "group_by_length": (False, "records are taken in the seeded shuffled order"),
    "label_smoothing_factor": (0.0, _UNSUPPORTED),
    "push_to_hub": (False, "save the adapter with save_pretrained and upload the folder with huggingface_hub"),
    "bf16_full_eval": (False, "evaluation computes in the model's compute type"),
    "fp16_full_eval": (False, "evaluation computes in the model's compute type"),
    "tf32": (None, "the CUDA backend picks its matmul precision from the compute type"),
    "jit_mode_eval": (False, _UNSUPPORTED),
    "use_ipex": (False, _UNSUPPORTED),
    "use_mps_device": (False, "the devices are cpu and cuda"),
    "no_cuda": (False, "the device is chosen when the model is loaded: from_pretrained(..., device=\"cpu\")"),
    "use_cpu": (False, "the device is chosen when the model is loaded: from_pretrained(..., device=\"cpu\")"),
    "data_seed": (None, "seed sets the data order"),
    "dataloader_drop_last": (False, "the last short window of an epoch is trained on"),
    "debug": ("", _UNSUPPORTED),
    "fsdp": ("", "data parallel training is loratune's own (lt_train_params.world_size)"),
    "fsdp_config": (None, _UNSUPPORTED),
    "fsdp_min_num_params": (0, _UNSUPPORTED),
    "fsdp_transformer_layer_cls_to_wrap": (None, _UNSUPPORTED),
    "deepspeed": (None, _UNSUPPORTED),
    "accelerator_config": (None, _UNSUPPORTED),
    "ddp_backend": (None, _UNSUPPORTED),
    "ddp_find_unused_parameters": (None, _UNSUPPORTED),
    "ddp_bucket_cap_mb": (None, _UNSUPPORTED),
    "ddp_broadcast_buffers": (None, _UNSUPPORTED),
    "tpu_num_cores": (None, _UNSUPPORTED),
    "auto_find_batch_size": (False, "loratune.estimate_memory tells the memory a batch size needs"),
    "torchdynamo": (None, _UNSUPPORTED),
    "torch_compile": (False, "loratune's kernels are compiled already"),
    "torch_compile_backend": (None, _UNSUPPORTED),
    "torch_compile_mode": (None, _UNSUPPORTED),
    "dispatch_batches": (None, _UNSUPPORTED),
    "split_batches": (None, _UNSUPPORTED),
    "neftune_noise_alpha": (None, "NEFTune noise on the embeddings is not implemented"),
    "use_liger_kernel": (False, "loratune's kernels are its own"),
    "restore_callback_states_from_checkpoint": (False, _UNSUPPORTED),
    "save_safetensors": (True, "checkpoints and adapters are safetensors"),
    "per_gpu_train_batch_size": (None, "use per_device_train_batch_size"),
    "per_gpu_eval_batch_size": (None, "use per_device_eval_batch_size"),
    "ignore_data_skip": (False, "a checkpoint resumes the data order where it stopped"),
    # trl.SFTConfig
    "completion_only_loss": (None, "the loss is on every token of the text; loratune.Dataset(loss_on=\"response\") "
                             "trains on responses only"),
    "assistant_only_loss": (False, "the loss is on every token of the text; loratune.Dataset(loss_on=\"response\") "
                            "trains on responses only"),
    "eval_packing": (None, "packing is not implemented"),
    "dataset_kwargs": (None, _UNSUPPORTED),
    "model_init_kwargs": (None, "the model is loaded by FastLanguageModel.from_pretrained"),
    "pad_token": (None, "records are not padded (padding-free micro-batches)"),
    "eos_token": (None, "the texts carry their own EOS (the notebook appends tokenizer.eos_token)"),
    "pad_to_multiple_of": (None, "records are not padded (padding-free micro-batches)"),
    "use_liger": (False, "loratune's kernels are its own"),
    "num_of_sequences": (1024, "packing is not implemented"),
    "chars_per_token": (3.6, "packing is not implemented"),
    "infinite": (False, "packing is not implemented"),
}


def _empty(v):
    return v is None or (isinstance(v, (str, list, tuple, dict)) and len(v) == 0)


def _is_default(value, default):
    """value asks for nothing but the default: equal to it, or both empty (None, "", [], {})."""
    try:
        if value == default:
            return True
    except Exception:
        return False
    return _empty(value) and _empty(default)


def _refuse(where, name, value, why):
    raise _ffi.UnsupportedError(_ffi.LT_ERR_UNSUPPORTED, "%s=%r is not supported: %s" % (name, value, why), where)


def _check_extra(where, kwargs, no_effect=_NO_EFFECT, default_only=_DEFAULT_ONLY,
                 kind="a transformers TrainingArguments / trl SFTConfig argument"):
    """The arguments past the honoured ones: no-effect ones kept, default-only ones checked,
    anything else a TypeError naming it."""
    for name, value in kwargs.items():
        if name in no_effect:
            continue
        if name in default_only:
            default, why = default_only[name]
            if not _is_default(value, default):
                _refuse(where, name, value, "%s; leave it at %r" % (why, default))
            continue
        raise TypeError("%s got an unexpected keyword argument %r (not %s)" % (where, name, kind))


def _choice(where, name, value, allowed, why=""):
    v = getattr(value, "value", value)  # transformers' IntervalStrategy enums
    v = "no" if v is None else str(v).lower()
    if v not in allowed:
        _refuse(where, name, value, "use %s%s" % (" or ".join(repr(a) for a in allowed), why))
    return v


def _report_to(where, value):
    vals = [] if value is None else ([value] if isinstance(value, str) else list(value))
    vals = [v for v in vals if v != "none"]
    for v in vals:
        if v != "csv":
            _refuse(where, "report_to", value, "loratune reports to \"csv\" (log.csv and log.jsonl in output_dir) "
                    "or \"none\"")
    return "csv" if vals else "none"


class TrainingArguments:
    """transformers.TrainingArguments: the same names and defaults. Each argument is honoured
    (the ones named here), has nothing to steer in loratune (_NO_EFFECT, kept as an attribute)
    or is refused unless left at its default (_DEFAULT_ONLY): UnsupportedError names it."""

    def __init__(self, output_dir="trainer_output", per_device_train_batch_size=8, per_device_eval_batch_size=8,
                 gradient_accumulation_steps=1, warmup_steps=0, warmup_ratio=0.0, max_steps=-1,
                 num_train_epochs=3.0, learning_rate=5e-5, fp16=False, bf16=False, logging_steps=500,
                 logging_strategy="steps", logging_first_step=False, optim="adamw_torch", weight_decay=0.0,
                 lr_scheduler_type="linear", seed=42, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
                 max_grad_norm=1.0, save_strategy="steps", save_steps=500, save_total_limit=None,
                 eval_strategy="no", evaluation_strategy=None, eval_steps=None, load_best_model_at_end=False,
                 metric_for_best_model=None, greater_is_better=None, disable_tqdm=False, report_to=None,
                 gradient_checkpointing=None, full_determinism=False, **kwargs):
        where = type(self).__name__
        _check_extra(where, kwargs)
        self.__dict__.update(kwargs)
        self.output_dir = output_dir
        self.per_device_train_batch_size = per_device_train_batch_size
        self.per_device_eval_batch_size = per_device_eval_batch_size
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.warmup_steps = warmup_steps
        self.warmup_ratio = warmup_ratio
        self.max_steps = max_steps
        self.num_train_epochs = num_train_epochs
        self.learning_rate = learning_rate
        if fp16 and bf16:
            _refuse(where, "fp16", fp16, "fp16=True and bf16=True ask for two compute types; pass one")
        self.fp16, self.bf16 = fp16, bf16
        self.logging_steps = logging_steps
        self.logging_strategy = _choice(where, "logging_strategy", logging_strategy, ("steps", "no"),
                                        " (logging by epoch is not implemented)")
        self.logging_first_step = logging_first_step
        self.optim = optim
        self.weight_decay = weight_decay
        self.lr_scheduler_type = getattr(lr_scheduler_type, "value", lr_scheduler_type)
        self.seed = seed
        self.adam_beta1, self.adam_beta2, self.adam_epsilon = adam_beta1, adam_beta2, adam_epsilon
        self.max_grad_norm = max_grad_norm
        self.save_strategy = _choice(where, "save_strategy", save_strategy, ("steps", "no"),
                                     " (saving by epoch or on the best eval is not implemented; load_best_model_at_end "
                                     "keeps the best)")
        self.save_steps = save_steps
        self.save_total_limit = save_total_limit
        if evaluation_strategy is not None:  # the older name
            eval_strategy = evaluation_strategy
        self.eval_strategy = _choice(where, "eval_strategy", eval_strategy, ("no", "steps"),
                                     " (evaluating by epoch is not implemented)")
        self.evaluation_strategy = self.eval_strategy
        self.eval_steps = eval_steps
        self.load_best_model_at_end = load_best_model_at_end
        if metric_for_best_model not in (None, "loss", "eval_loss"):
            _refuse(where, "metric_for_best_model", metric_for_best_model, "the best checkpoint is the one with the "
                    "lowest eval loss; use \"eval_loss\"")
        self.metric_for_best_model = metric_for_best_model
        if greater_is_better:
            _refuse(where, "greater_is_better", greater_is_better, "a lower eval loss is better")
        self.greater_is_better = greater_is_better
        self.disable_tqdm = disable_tqdm
        self.report_to = _report_to(where, report_to)
        self.gradient_checkpointing = gradient_checkpointing
        self.full_determinism = full_determinism

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join("%s=%r" % kv for kv in self.__dict__.items()))


class SFTConfig(TrainingArguments):
    """trl.SFTConfig: TrainingArguments plus the dataset options. packing=True is refused (not
    implemented; micro-batches are padding-free already); max_length is max_seq_length's newer
    name (None: the model's max_seq_length)."""

    def __init__(self, dataset_text_field="text", max_seq_length=None, max_length=None, packing=False,
                 dataset_num_proc=None, activation_offloading=False, **kwargs):
        super().__init__(**kwargs)
        # the gradient checkpoints in host memory (lt_train_params.offload_checkpoints)
        self.activation_offloading = bool(activation_offloading)
        if packing:
            _refuse(type(self).__name__, "packing", packing, "packing is not implemented (micro-batches are "
                    "padding-free: records are laid end to end without padding anyway); use packing=False")
        if max_seq_length is not None and max_length is not None and max_seq_length != max_length:
            raise _ffi.InvalidArgumentError(_ffi.LT_ERR_INVALID_ARGUMENT, "max_seq_length=%r and max_length=%r "
                                            "disagree: pass one" % (max_seq_length, max_length), type(self).__name__)
        self.dataset_text_field = dataset_text_field
        self.max_seq_length = self.max_length = max_seq_length if max_seq_length is not None else max_length
        self.packing = packing
        self.dataset_num_proc = dataset_num_proc


class EarlyStoppingCallback:
    """transformers.EarlyStoppingCallback: SFTTrainer(callbacks=[EarlyStoppingCallback(3)]) stops
    training once `early_stopping_patience` evaluations in a row did not lower the best eval loss by
    more than early_stopping_threshold (the library's early stopping)."""

    def __init__(self, early_stopping_patience=1, early_stopping_threshold=0.0):
        self.early_stopping_patience = early_stopping_patience
        self.early_stopping_threshold = early_stopping_threshold


TrainOutput = namedtuple("TrainOutput", ["global_step", "training_loss", "metrics"])


def _columns(ds, what="train_dataset"):
    names = getattr(ds, "column_names", None)
    if isinstance(names, dict):  # a DatasetDict
        raise LoratuneError(_ffi.LT_ERR_INVALID_ARGUMENT, "%s is a DatasetDict; pass one split "
                            "(dataset[\"train\"] or load_dataset(..., split=\"train\"))" % what, "SFTTrainer")
    return list(names) if names is not None else None


def _iter_records(ds):
    for r in ds:
        yield dict(r)


def build_dataset(tokenizer, train_dataset, dataset_text_field=None, max_seq_length=2048, formatting_func=None,
                  seed=3407, n_threads=0, what="train_dataset"):
    """A loratune.Dataset from a datasets.Dataset (or anything with column access / iteration
    of dicts), a list of dicts, or a JSON / JSONL path. With dataset_text_field the texts go in
    as they are (the notebook appends EOS itself); without it, records go in as JSON and the
    library applies its prompt template and EOS."""
    tok = tokenizer._tok
    if isinstance(train_dataset, (str, os.PathLike)):
        return core.Dataset(tok, path=train_dataset, max_seq_len=max_seq_length, seed=seed, threads=n_threads,
                            text_field=dataset_text_field)
    texts = None
    cols = _columns(train_dataset, what)
    if formatting_func is not None:
        batch = {c: list(train_dataset[c]) for c in cols} if cols else None
        if batch is None:
            recs = list(_iter_records(train_dataset))
            batch = {k: [r.get(k) for r in recs] for k in (recs[0] if recs else {})}
        texts = formatting_func(batch)
        if isinstance(texts, str):
            texts = [texts]
    elif dataset_text_field and cols is not None and dataset_text_field in cols:
        texts = list(train_dataset[dataset_text_field])
    if texts is not None:
        ds = core.Dataset(tok, format="text", max_seq_len=max_seq_length, add_eos=False, seed=seed,
                          threads=n_threads, text_field=dataset_text_field)
        for t in texts:
            ds.add_text(t)
        return ds
    recs = _iter_records(train_dataset)
    first = None
    for first in recs:
        break
    if first is None:
        raise LoratuneError(_ffi.LT_ERR_DATA, "%s is empty" % what, "SFTTrainer")
    if dataset_text_field and dataset_text_field in first:
        ds = core.Dataset(tok, format="text", max_seq_len=max_seq_length, add_eos=False, seed=seed,
                          threads=n_threads, text_field=dataset_text_field)
        ds.add_text(first[dataset_text_field])
        for r in recs:
            ds.add_text(r[dataset_text_field])
        return ds
    ds = core.Dataset(tok, max_seq_len=max_seq_length, seed=seed, threads=n_threads)
    ds.add(first)
    for r in recs:
        ds.add(r)
    return ds


def _in_notebook():
    try:
        from IPython import get_ipython
        ip = get_ipython()
        return ip is not None and hasattr(ip, "kernel")
    except Exception:
        return False


class _Progress:
    """tqdm when installed, else a line per logging step."""

    def __init__(self, total, disable):
        self.bar = None
        if not disable:
            try:
                with warnings.catch_warnings():  # tqdm.auto warns where ipywidgets is missing
                    warnings.simplefilter("ignore")
                    from tqdm.auto import tqdm
                    self.bar = tqdm(total=total, desc="training", unit="step")
            except ImportError:
                pass

    def set_total(self, total):
        if self.bar is not None and self.bar.total != total:
            self.bar.total = total
            self.bar.refresh()

    def update(self, m):
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss="%.4f" % m.loss, refresh=False)

    def write(self, line):
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# loratune.Trainer's keyword (and lt_train_params field) -> the TrainingArguments name it comes from
_HF_NAMES = (("batch_size", "per_device_train_batch_size"), ("grad_accum", "gradient_accumulation_steps"),
             ("max_steps", "max_steps"), ("epochs", "num_train_epochs"), ("lr", "learning_rate"),
             ("warmup_steps", "warmup_steps"), ("warmup_ratio", "warmup_ratio"), ("weight_decay", "weight_decay"),
             ("adam betas", "adam_beta1/adam_beta2"), ("adam_beta1", "adam_beta1"), ("adam_beta2", "adam_beta2"),
             ("adam_eps", "adam_epsilon"), ("max_grad_norm", "max_grad_norm"), ("seed", "seed"),
             ("log_every", "logging_steps"), ("save_every", "save_steps"), ("save_total_limit", "save_total_limit"),
             ("eval_every", "eval_steps"), ("eval_batch_size", "per_device_eval_batch_size"),
             ("load_best_at_end", "load_best_model_at_end"), ("scheduler", "lr_scheduler_type"),
             ("optimizer", "optim"), ("offload_checkpoints", "activation_offloading"))


_HF_EVENTS = frozenset(("on_init_end", "on_train_begin", "on_train_end", "on_step_begin", "on_step_end", "on_log",
                        "on_evaluate", "on_save", "on_epoch_begin", "on_epoch_end"))


def _callback_events(cb):
    """The on_* methods a TrainerCallback-like object defines (beyond transformers' empty base
    class): what it wants to be called for."""
    events = set()
    for klass in type(cb).__mro__:
        if klass.__name__ == "TrainerCallback" or klass is object:
            continue
        events |= {n for n in vars(klass) if n.startswith("on_") and callable(vars(klass)[n])}
    return events


class TrainerControl:
    """transformers' TrainerControl: a callback sets should_training_stop to end training after
    the step (the other flags are kept, with nothing to steer: saving and logging follow the
    arguments)."""

    def __init__(self):
        self.should_training_stop = False
        self.should_epoch_stop = False
        self.should_save = False
        self.should_evaluate = False
        self.should_log = False


class TrainerState:
    """transformers' TrainerState: global_step, max_steps, log_history, best_metric,
    best_model_checkpoint."""

    def __init__(self):
        self.global_step = 0
        self.max_steps = 0
        self.epoch = 0.0
        self.log_history = []
        self.best_metric = None
        self.best_model_checkpoint = None


_SFT_LEGACY = ("neftune_noise_alpha", "dataset_kwargs", "dataset_batch_size", "infinite", "num_of_sequences",
               "chars_per_token", "model_init_kwargs", "eval_packing")


def _latest_checkpoint(output_dir):
    best = None
    if output_dir and os.path.isdir(output_dir):
        for name in os.listdir(output_dir):
            if name.startswith("checkpoint-") and name[11:].isdigit():
                if best is None or int(name[11:]) > int(best[11:]):
                    best = name
    return os.path.join(output_dir, best) if best else None


class SFTTrainer:
    """TRL's SFTTrainer over loratune's trainer. callbacks: callables called with each step's
    loratune Metrics (a truthy return stops training), EarlyStoppingCallback and transformers
    TrainerCallback objects (see add_callback); eval_dataset is
    evaluated every eval_steps with eval_strategy="steps" and by evaluate(). Arguments of TRL's
    that loratune cannot honour are refused by name (UnsupportedError), never ignored."""

    def __init__(self, model=None, args=None, data_collator=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, tokenizer=None, model_init=None, compute_metrics=None, callbacks=None,
                 optimizers=(None, None), preprocess_logits_for_metrics=None, peft_config=None, formatting_func=None,
                 compute_loss_func=None, dataset_text_field=None, max_seq_length=None, dataset_num_proc=None,
                 packing=None, **kwargs):
        where = "SFTTrainer"
        legacy = {k: kwargs.pop(k) for k in list(kwargs) if k in _SFT_LEGACY}
        if kwargs:
            raise TypeError("SFTTrainer got an unexpected keyword argument %r" % next(iter(kwargs)))
        _check_extra(where, legacy)
        for name, value, why in (
                ("data_collator", data_collator, "loratune batches the records itself (padding-free micro-batches, "
                 "labels from the dataset)"),
                ("model_init", model_init, "pass the model from FastLanguageModel.from_pretrained"),
                ("compute_metrics", compute_metrics, "evaluation reports eval_loss and eval_mean_token_accuracy"),
                ("preprocess_logits_for_metrics", preprocess_logits_for_metrics, "compute_metrics is not supported"),
                ("peft_config", peft_config, "the LoRA adapter comes from FastLanguageModel.get_peft_model"),
                ("compute_loss_func", compute_loss_func, "the loss is the causal LM cross-entropy")):
            if value is not None:
                _refuse(where, name, value, why)
        if optimizers is not None and any(o is not None for o in optimizers):
            _refuse(where, "optimizers", optimizers, "the optimizer is chosen with TrainingArguments(optim=...)")
        if packing:
            _refuse(where, "packing", packing, "packing is not implemented (micro-batches are padding-free: records "
                    "are laid end to end without padding anyway); use packing=False")
        if model is None or not isinstance(model, FastModel):
            raise LoratuneError(_ffi.LT_ERR_INVALID_ARGUMENT, "SFTTrainer needs a model from "
                                "FastLanguageModel.from_pretrained", where)
        if model.peft_config is None:
            raise LoratuneError(_ffi.LT_ERR_STATE, "the model has no LoRA adapter; call "
                                "FastLanguageModel.get_peft_model first", where)
        self.model = model
        self.tokenizer = self.processing_class = tokenizer or processing_class or model._tokenizer
        self.args = args if args is not None else TrainingArguments()
        a = self.args
        self._check_precision(a)
        self.text_field = dataset_text_field or getattr(a, "dataset_text_field", None)
        self.max_seq_length = max_seq_length or getattr(a, "max_seq_length", None) or model.max_seq_length
        self.packing = False
        self.n_threads = dataset_num_proc or getattr(a, "dataset_num_proc", None) or 0
        self.formatting_func = formatting_func
        self.callbacks, self._early, self._hf_callbacks = [], None, []
        self._control = TrainerControl()
        for cb in callbacks or []:
            self.add_callback(cb)
        if a.load_best_model_at_end and eval_dataset is None:
            _refuse(where, "load_best_model_at_end", True, "it needs an eval_dataset")
        if a.eval_strategy != "no" and eval_dataset is None:
            _refuse(where, "eval_strategy", a.eval_strategy, "it needs an eval_dataset")
        if a.report_to == "csv" and not a.output_dir:
            _refuse(where, "report_to", "csv", "log.csv is written in output_dir; set output_dir")
        self.train_dataset = build_dataset(self.tokenizer, train_dataset, self.text_field, self.max_seq_length,
                                           formatting_func, seed=a.seed, n_threads=self.n_threads)
        self.eval_dataset = self._eval_data(eval_dataset) if eval_dataset is not None else None
        self.state = TrainerState()
        self._trainer = None
        self._event("on_init_end")

    def _eval_data(self, eval_dataset):
        if isinstance(eval_dataset, dict):
            _refuse("SFTTrainer", "eval_dataset", "{%s}" % ", ".join(map(repr, eval_dataset)),
                    "pass one eval dataset, not a dict of them")
        return build_dataset(self.tokenizer, eval_dataset, self.text_field, self.max_seq_length,
                             self.formatting_func, seed=self.args.seed, n_threads=self.n_threads,
                             what="eval_dataset")

    def _check_precision(self, a):
        """fp16 / bf16 say which compute type training uses; in loratune the model chose it when it
        was loaded (dtype=...). A contradiction is refused; where the CPU computes in fp32 it says so."""
        dt = self.model.config.compute_dtype
        names = {_ffi.LT_DTYPE_F32: "fp32", _ffi.LT_DTYPE_F16: "fp16", _ffi.LT_DTYPE_BF16: "bf16"}
        have = names.get(dt, "fp32")
        want = "fp16" if a.fp16 else "bf16" if a.bf16 else None
        if want is None or want == have:
            return
        if self.model.config.device == _ffi.LT_DEVICE_CPU:
            warnings.warn("%s=True: the CPU backend computes in fp32 (%s applies on CUDA)" % (want, want), stacklevel=3)
            return
        _refuse("SFTTrainer", want, True, "the model computes in %s (from_pretrained(dtype=...) chose it); load it "
                "with dtype=%r or pass %s=False" % (have, "float16" if want == "fp16" else "bfloat16", want))

    def add_callback(self, callback):
        """A callable called with each step's Metrics; an EarlyStoppingCallback (the library's
        early stopping); or a transformers TrainerCallback (an instance or its class) whose
        on_train_begin / on_step_begin / on_step_end / on_log / on_evaluate / on_save /
        on_train_end run at those points, with control.should_training_stop honoured. A callback
        overriding an event loratune has no Python moment for (inside a step) is refused."""
        if isinstance(callback, type):
            callback = callback()
        if type(callback).__name__ == "EarlyStoppingCallback" and hasattr(callback, "early_stopping_patience"):
            self._early = callback
            return
        events = _callback_events(callback)
        if events:
            unsupported = sorted(events - _HF_EVENTS)
            if unsupported:
                _refuse("SFTTrainer", "callbacks", callback, "%s: loratune runs a whole optimizer step in the library "
                        "and has no moment for %s; use on_step_end / on_log" % (type(callback).__name__,
                                                                                ", ".join(unsupported)))
            self._hf_callbacks.append(callback)
        elif callable(callback):
            self.callbacks.append(callback)
        else:
            _refuse("SFTTrainer", "callbacks", callback, "a callback is a callable f(metrics) -> stop?, an "
                    "EarlyStoppingCallback or a TrainerCallback")

    def _event(self, name, **kw):
        """Runs a TrainerCallback event; True when one asked training to stop."""
        for cb in self._hf_callbacks:
            fn = getattr(cb, name, None)
            if fn is not None:
                out = fn(self.args, self.state, self._control, model=self.model, processing_class=self.tokenizer,
                         tokenizer=self.tokenizer, train_dataloader=None, eval_dataloader=None, **kw)
                if out is not None:
                    self._control = out
        return bool(getattr(self._control, "should_training_stop", False))

    def _make_trainer(self):
        a = self.args
        warmup_steps, warmup_ratio = int(a.warmup_steps or 0), float(a.warmup_ratio or 0.0)
        if warmup_steps <= 0 and warmup_ratio > 0:
            warmup_steps = -1  # lt_train_params: warmup_ratio applies when warmup_steps < 0
        logging = a.logging_strategy == "steps" and a.logging_steps
        # a float below 1 is a fraction of the training steps in transformers; loratune counts steps
        for name in ("logging_steps", "save_steps", "eval_steps"):
            v = getattr(a, name)
            if isinstance(v, float) and 0 < v < 1:
                _refuse("SFTTrainer", name, v, "give a number of steps (a fraction of the run is not supported)")
        eval_every = -1
        if self.eval_dataset is not None and a.eval_strategy == "steps":
            eval_every = int(a.eval_steps or a.logging_steps or 0) or -1
        try:
            return self._core_trainer(a, warmup_steps, warmup_ratio, logging, eval_every)
        except LoratuneError as e:  # name the TrainingArguments field beside the library's word for it
            named = [hf for lt_name, hf in _HF_NAMES if re.search(r"\b%s\b" % lt_name, e.message or "")]
            if not named:
                raise
            err = type(e)(e.status, "%s (TrainingArguments.%s)" % (e.message, ", ".join(named)), e.call)
            raise err from None

    def _core_trainer(self, a, warmup_steps, warmup_ratio, logging, eval_every):
        early = self._early
        return core.Trainer(
            self.model.lt, self.train_dataset, batch_size=a.per_device_train_batch_size,
            grad_accum=a.gradient_accumulation_steps, max_steps=a.max_steps if a.max_steps and a.max_steps > 0 else 0,
            epochs=a.num_train_epochs, lr=a.learning_rate, warmup_steps=warmup_steps, warmup_ratio=warmup_ratio,
            scheduler=a.lr_scheduler_type, optim=a.optim, weight_decay=a.weight_decay,
            adam_beta1=a.adam_beta1, adam_beta2=a.adam_beta2, adam_eps=a.adam_epsilon,
            max_grad_norm=a.max_grad_norm, seed=a.seed,
            gradient_checkpointing=bool(a.gradient_checkpointing) or self.model.gradient_checkpointing,
            offload_checkpoints=bool(getattr(a, "activation_offloading", False)),
            deterministic=a.full_determinism, log_every=int(a.logging_steps) if logging else 0,
            save_every=int(a.save_steps) if a.save_strategy == "steps" and a.save_steps else 0,
            save_total_limit=a.save_total_limit or 0, output_dir=a.output_dir,
            eval_data=self.eval_dataset, eval_every=eval_every, eval_batch_size=a.per_device_eval_batch_size,
            early_stopping_patience=early.early_stopping_patience if early else None,
            early_stopping_threshold=early.early_stopping_threshold if early else None,
            load_best_at_end=bool(a.load_best_model_at_end), on_step=self.callbacks or None)

    def _log(self, bar, logs):
        self.state.log_history.append(dict(logs, step=self.state.global_step))
        bar.write(str(logs))

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """Runs the training; logs every logging_steps (and each evaluation); returns
        TrainOutput(global_step, training_loss, metrics) as TRL does. resume_from_checkpoint: a
        checkpoint folder, or True for the latest in output_dir. Ctrl-C raises
        loratune.TrainingInterrupted (a KeyboardInterrupt) naming the checkpoint it wrote."""
        if kwargs:
            raise TypeError("train() got an unexpected keyword argument %r" % next(iter(kwargs)))
        if trial is not None:
            _refuse("train", "trial", trial, "hyper-parameter search is not implemented")
        if ignore_keys_for_eval:
            _refuse("train", "ignore_keys_for_eval", ignore_keys_for_eval, "evaluation returns no model outputs "
                    "to ignore")
        if self._trainer is not None:
            self._trainer.close()
        tr = self._trainer = self._make_trainer()
        a = self.args
        if resume_from_checkpoint is True:
            resume_from_checkpoint = _latest_checkpoint(a.output_dir)
            if resume_from_checkpoint is None:
                raise LoratuneError(_ffi.LT_ERR_NOT_FOUND, "resume_from_checkpoint=True: no checkpoint-N folder in "
                                    "output_dir %r" % a.output_dir, "train")
        if resume_from_checkpoint:
            tr.load_checkpoint(resume_from_checkpoint)
        every = int(a.logging_steps or 0) if a.logging_strategy == "steps" else 0
        since = []
        t0 = time.perf_counter()
        bar = _Progress(a.max_steps if a.max_steps and a.max_steps > 0 else None, a.disable_tqdm)
        try:
            self._control = TrainerControl()
            self.state.global_step = tr.global_step
            if self._event("on_train_begin"):
                return self._output(tr, t0)
            save_every = int(a.save_steps) if a.save_strategy == "steps" and a.save_steps else 0
            epoch_begun = False
            while True:
                if not epoch_begun:
                    epoch_begun = True
                    if self._event("on_epoch_begin"):
                        break
                if self._event("on_step_begin"):
                    break
                before = self.state.epoch
                m = tr.step()
                if m is None:
                    break
                bar.set_total(m.max_steps)
                self.state.max_steps = m.max_steps
                self.state.global_step = m.step
                self.state.epoch = m.epoch
                since.append(m.loss)
                bar.update(m)
                stop = self._event("on_step_end")
                if every and (m.step % every == 0 or m.step == m.max_steps or (a.logging_first_step and m.step == 1)):
                    logs = {"loss": round(sum(since) / len(since), 4), "grad_norm": round(m.grad_norm, 4),
                            "learning_rate": m.lr, "epoch": round(m.epoch, 4)}
                    self._log(bar, logs)
                    stop = self._event("on_log", logs=logs) or stop
                    since = []
                if not math.isnan(m.eval_loss):
                    logs = {"eval_loss": round(m.eval_loss, 4), "eval_mean_token_accuracy": round(m.eval_accuracy, 4),
                            "epoch": round(m.epoch, 4)}
                    self._log(bar, logs)
                    self.state.best_metric = m.best_eval_loss
                    best = os.path.join(a.output_dir, "checkpoint-%d" % m.best_eval_step) if a.output_dir else None
                    self.state.best_model_checkpoint = best if best and os.path.isdir(best) else None
                    stop = self._event("on_evaluate", metrics=dict(logs, eval_loss=m.eval_loss)) or stop
                    stop = self._event("on_log", logs=logs) or stop
                if save_every and a.output_dir and m.step % save_every == 0:
                    stop = self._event("on_save") or stop
                if math.floor(m.epoch + 1e-9) > math.floor(before + 1e-9):  # an epoch of the data ended here
                    stop = self._event("on_epoch_end") or stop
                    epoch_begun = False
                if stop or m.stopped:
                    break
        except core.TrainingInterrupted as e:
            self.state.global_step = e.step  # the step the interrupt ended is kept (and checkpointed)
            raise
        except KeyboardInterrupt as e:
            if getattr(e, "loratune_second", False) or tr.closed:
                raise
            # a first Ctrl-C that came between two steps (while this loop logged): the same protocol
            try:
                tr._interrupted()
            except core.TrainingInterrupted as ti:
                self.state.global_step = ti.step
                raise ti from None
        finally:
            bar.close()
        self._event("on_train_end")
        return self._output(tr, t0)

    def _output(self, tr, t0):
        a = self.args
        runtime = time.perf_counter() - t0
        sm = tr.summary()
        samples = sm.steps_run * a.per_device_train_batch_size * a.gradient_accumulation_steps
        metrics = {"train_runtime": round(runtime, 4),
                   "train_samples_per_second": round(samples / runtime, 3) if runtime > 0 else 0.0,
                   "train_steps_per_second": round(sm.steps_run / runtime, 3) if runtime > 0 else 0.0,
                   "total_flos": 0.0, "train_loss": sm.mean_loss, "epoch": round(self.state.epoch, 4)}
        self.state.global_step = sm.steps
        self.state.log_history.append(dict(metrics, step=sm.steps))
        if sm.steps_run and _in_notebook():
            self._plot(self.state.log_history)
        return TrainOutput(sm.steps, sm.mean_loss, metrics)

    def _plot(self, history):
        try:
            import matplotlib.pyplot as plt
        except ImportError:
            return
        rows = [h for h in history if "loss" in h]
        evals = [h for h in history if "eval_loss" in h]
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot([h["step"] for h in rows], [h["loss"] for h in rows], label="training loss")
        if evals:
            ax.plot([h["step"] for h in evals], [h["eval_loss"] for h in evals], "o-", label="eval loss")
            ax.legend()
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
        try:
            from IPython.display import display
            display(fig)
        finally:
            plt.close(fig)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """{"eval_loss", "eval_mean_token_accuracy", "eval_runtime", "eval_samples_per_second",
        "eval_steps_per_second", "epoch"} over eval_dataset (this call's, else the trainer's):
        a forward pass without gradient or dropout that leaves training as it was."""
        if ignore_keys:
            _refuse("evaluate", "ignore_keys", ignore_keys, "evaluation returns no model outputs to ignore")
        data = self._eval_data(eval_dataset) if eval_dataset is not None else self.eval_dataset
        if data is None:
            raise LoratuneError(_ffi.LT_ERR_STATE, "evaluate() needs eval records: SFTTrainer(eval_dataset=...) or "
                                "evaluate(eval_dataset=...)", "evaluate")
        if data is self.eval_dataset and self._trainer is not None and not self._trainer.closed:
            r = self._trainer.evaluate()
        else:
            with core.Trainer(self.model.lt, self.train_dataset, eval_data=data, max_steps=1, eval_every=-1,
                              eval_batch_size=self.args.per_device_eval_batch_size) as tmp:
                r = tmp.evaluate()
        bs = max(int(self.args.per_device_eval_batch_size or 1), 1)
        p = metric_key_prefix + "_"
        out = {p + "loss": r.loss, p + "mean_token_accuracy": r.accuracy, p + "runtime": round(r.seconds, 4),
               p + "samples_per_second": round(r.n_records / r.seconds, 3) if r.seconds > 0 else 0.0,
               p + "steps_per_second": round(math.ceil(r.n_records / bs) / r.seconds, 3) if r.seconds > 0 else 0.0,
               "epoch": round(self.state.epoch, 4)}
        self.state.log_history.append(dict(out, step=self.state.global_step))
        return out

    def save_model(self, output_dir=None):
        self.model.save_pretrained(output_dir or self.args.output_dir)

//! Raw FFI declarations of libloratune, field for field and parameter for parameter as in
//! include/loratune.h. The declarations are written through two macros that also record every
//! function's parameter names (`FUNCTIONS`) and every struct's fields and size (`STRUCTS`), so
//! that tests/header.rs can compare them with the header and with the loaded library's
//! `lt_struct_size`. The safe API is the `loratune` crate.
#![allow(non_camel_case_types)]

use std::os::raw::{c_char, c_int, c_void};

pub const LT_VERSION_MAJOR: u32 = 0;
pub const LT_VERSION_MINOR: u32 = 1;
pub const LT_VERSION_PATCH: u32 = 0;
pub const LT_VERSION_NUMBER: u32 = LT_VERSION_MAJOR * 10000 + LT_VERSION_MINOR * 100 + LT_VERSION_PATCH;

/// `lt_status` (a C enum: an int). Values are pinned forever.
pub type lt_status = c_int;
pub const LT_OK: lt_status = 0;
pub const LT_DONE: lt_status = 1;
pub const LT_STOPPED: lt_status = 2;
pub const LT_ERR_INVALID_ARGUMENT: lt_status = -1;
pub const LT_ERR_IO: lt_status = -2;
pub const LT_ERR_FORMAT: lt_status = -3;
pub const LT_ERR_UNSUPPORTED: lt_status = -4;
pub const LT_ERR_OUT_OF_MEMORY: lt_status = -5;
pub const LT_ERR_CUDA: lt_status = -6;
pub const LT_ERR_NOT_FOUND: lt_status = -7;
pub const LT_ERR_STATE: lt_status = -8;
pub const LT_ERR_DATA: lt_status = -9;
pub const LT_ERR_EXISTS: lt_status = -10;
pub const LT_ERR_VERSION: lt_status = -11;
pub const LT_ERR_BUFFER_TOO_SMALL: lt_status = -12;
pub const LT_ERR_UTF8: lt_status = -13;
pub const LT_ERR_NCCL: lt_status = -14;
pub const LT_ERR_NO_DEVICE: lt_status = -15;
pub const LT_ERR_NONFINITE: lt_status = -16;
pub const LT_ERR_INTERNAL: lt_status = -99;

pub const LT_LOG_ERROR: i32 = 0;
pub const LT_LOG_WARN: i32 = 1;
pub const LT_LOG_INFO: i32 = 2;
pub const LT_LOG_DEBUG: i32 = 3;
pub const LT_DEVICE_AUTO: i32 = 0;
pub const LT_DEVICE_CPU: i32 = 1;
pub const LT_DEVICE_CUDA: i32 = 2;
pub const LT_DTYPE_AUTO: i32 = 0;
pub const LT_DTYPE_F32: i32 = 1;
pub const LT_DTYPE_F16: i32 = 2;
pub const LT_DTYPE_BF16: i32 = 3;
pub const LT_QUANT_NF4: i32 = 0;
pub const LT_QUANT_NONE: i32 = 1;
pub const LT_TARGET_Q: u32 = 1 << 0;
pub const LT_TARGET_K: u32 = 1 << 1;
pub const LT_TARGET_V: u32 = 1 << 2;
pub const LT_TARGET_O: u32 = 1 << 3;
pub const LT_TARGET_GATE: u32 = 1 << 4;
pub const LT_TARGET_UP: u32 = 1 << 5;
pub const LT_TARGET_DOWN: u32 = 1 << 6;
pub const LT_TARGET_ALL: u32 = 0x7F;
pub const LT_DATA_AUTO: i32 = 0;
pub const LT_DATA_ALPACA: i32 = 1;
pub const LT_DATA_CHAT: i32 = 2;
pub const LT_DATA_TEXT: i32 = 3;
pub const LT_DATA_TOKENS: i32 = 4;
pub const LT_LOSS_ALL: i32 = 0;
pub const LT_LOSS_RESPONSE: i32 = 1;
pub const LT_SCHED_LINEAR: i32 = 0;
pub const LT_SCHED_COSINE: i32 = 1;
pub const LT_SCHED_CONSTANT: i32 = 2;
pub const LT_OPTIM_ADAMW: i32 = 0;
pub const LT_OPTIM_ADAMW_8BIT: i32 = 1;
pub const LT_EXPORT_PEFT: i32 = 0;
pub const LT_EXPORT_MERGED: i32 = 1;
pub const LT_EXPORT_GGUF: i32 = 2;
pub const LT_EXPORT_GGUF_LORA: i32 = 3;
pub const LT_MERGE_AUTO: i32 = 0;
pub const LT_MERGE_ORIGINAL: i32 = 1;
pub const LT_MERGE_DEQUANTIZED: i32 = 2;
pub const LT_NCCL_ID_BYTES: usize = 128;

/// Opaque handles.
#[repr(C)]
pub struct lt_model {
    _private: [u8; 0],
}
#[repr(C)]
pub struct lt_tokenizer {
    _private: [u8; 0],
}
#[repr(C)]
pub struct lt_dataset {
    _private: [u8; 0],
}
#[repr(C)]
pub struct lt_trainer {
    _private: [u8; 0],
}
#[repr(C)]
pub struct lt_exporter {
    _private: [u8; 0],
}
#[repr(C)]
pub struct lt_token_stream {
    _private: [u8; 0],
}
#[repr(C)]
pub struct lt_comm {
    _private: [u8; 0],
}

pub type lt_log_fn = Option<unsafe extern "C" fn(level: i32, message: *const c_char, user_data: *mut c_void)>;
pub type lt_progress_fn =
    Option<unsafe extern "C" fn(what: *const c_char, done: u64, total: u64, user_data: *mut c_void) -> c_int>;
pub type lt_step_fn = Option<unsafe extern "C" fn(metrics: *const lt_metrics, user_data: *mut c_void) -> c_int>;
pub type lt_stream_fn =
    Option<unsafe extern "C" fn(piece: *const c_char, len: usize, token: i32, user_data: *mut c_void) -> c_int>;

macro_rules! lt_structs {
    ($( $(#[$meta:meta])* pub struct $name:ident { $( pub $field:ident : $ty:ty ),* $(,)? } )*) => {
        $(
            $(#[$meta])*
            #[repr(C)]
            #[derive(Copy, Clone)]
            pub struct $name { $( pub $field: $ty ),* }
        )*
        /// (name, size in these declarations, field names in order) of every public struct.
        pub const STRUCTS: &[(&str, usize, &[&str])] = &[
            $( (stringify!($name), std::mem::size_of::<$name>(), &[ $( stringify!($field) ),* ]) ),*
        ];
    };
}

lt_structs! {
    pub struct lt_model_params {
        pub struct_size: u32,
        pub device: i32,
        pub device_index: i32,
        pub quant: i32,
        pub compute_dtype: i32,
        pub double_quant: i32,
        pub max_seq_len: i32,
        pub n_threads: i32,
        pub progress: lt_progress_fn,
        pub progress_user_data: *mut c_void,
    }
    pub struct lt_model_info {
        pub struct_size: u32,
        pub architecture: [c_char; 64],
        pub model_type: [c_char; 32],
        pub vocab_size: i32,
        pub hidden_size: i32,
        pub intermediate_size: i32,
        pub num_layers: i32,
        pub num_heads: i32,
        pub num_kv_heads: i32,
        pub head_dim: i32,
        pub max_position_embeddings: i32,
        pub rope_theta: f64,
        pub rms_norm_eps: f64,
        pub tie_word_embeddings: i32,
        pub attention_bias: i32,
        pub device: i32,
        pub compute_dtype: i32,
        pub quant: i32,
        pub n_params: u64,
        pub n_lora_params: u64,
        pub weight_bytes: u64,
    }
    pub struct lt_lora_params {
        pub struct_size: u32,
        pub r: i32,
        pub alpha: f32,
        pub dropout: f32,
        pub use_rslora: i32,
        pub targets: u32,
        pub seed: u64,
    }
    pub struct lt_memory_estimate {
        pub struct_size: u32,
        pub weights: u64,
        pub lora: u64,
        pub activations: u64,
        pub workspace: u64,
        pub total: u64,
    }
    pub struct lt_special_tokens {
        pub struct_size: u32,
        pub bos_id: i32,
        pub eos_id: i32,
        pub pad_id: i32,
        pub n_stop_ids: i32,
        pub stop_ids: [i32; 8],
    }
    pub struct lt_chat_message {
        pub role: *const c_char,
        pub content: *const c_char,
    }
    pub struct lt_dataset_params {
        pub struct_size: u32,
        pub format: i32,
        pub template_name: *const c_char,
        pub template_text: *const c_char,
        pub instruction_field: *const c_char,
        pub input_field: *const c_char,
        pub output_field: *const c_char,
        pub text_field: *const c_char,
        pub max_seq_len: i32,
        pub loss_on: i32,
        pub add_eos: i32,
        pub skip_bad_records: i32,
        pub eval_fraction: f64,
        pub seed: u64,
        pub n_threads: i32,
        pub progress: lt_progress_fn,
        pub progress_user_data: *mut c_void,
    }
    pub struct lt_dataset_stats {
        pub struct_size: u32,
        pub n_records: u64,
        pub n_eval: u64,
        pub n_skipped: u64,
        pub n_truncated: u64,
        pub n_tokens: u64,
        pub n_label_tokens: u64,
        pub min_len: i32,
        pub max_len: i32,
        pub mean_len: f64,
    }
    pub struct lt_metrics {
        pub struct_size: u32,
        pub step: i64,
        pub max_steps: i64,
        pub epoch: f64,
        pub loss: f64,
        pub lr: f64,
        pub grad_norm: f64,
        pub tokens: i64,
        pub total_tokens: i64,
        pub tokens_per_s: f64,
        pub elapsed_s: f64,
        pub peak_memory: u64,
        pub eval_loss: f64,
        pub eval_accuracy: f64,
        pub best_eval_loss: f64,
        pub best_eval_step: i64,
        pub early_stop: i32,
    }
    pub struct lt_train_params {
        pub struct_size: u32,
        pub batch_size: i32,
        pub grad_accum: i32,
        pub max_steps: i32,
        pub epochs: f64,
        pub lr: f64,
        pub warmup_steps: i32,
        pub warmup_ratio: f64,
        pub scheduler: i32,
        pub optimizer: i32,
        pub weight_decay: f64,
        pub adam_beta1: f64,
        pub adam_beta2: f64,
        pub adam_eps: f64,
        pub max_grad_norm: f64,
        pub seed: u64,
        pub packing: i32,
        pub gradient_checkpointing: i32,
        pub offload_checkpoints: i32,
        pub deterministic: i32,
        pub log_every: i32,
        pub save_every: i32,
        pub output_dir: *const c_char,
        pub on_step: lt_step_fn,
        pub user_data: *mut c_void,
        pub rank: i32,
        pub world_size: i32,
        pub nccl_id: *const u8,
        pub fp16_initial_loss_scale: f64,
        pub fuse_micro_batches: i32,
        pub eval_data: *const lt_dataset,
        pub eval_every: i32,
        pub eval_batch_size: i32,
        pub early_stopping_patience: i32,
        pub early_stopping_threshold: f64,
        pub save_total_limit: i32,
        pub load_best_at_end: i32,
        pub comm: *mut lt_comm,
        pub dist_timeout_s: f64,
        pub bucket_passes: i32,
    }
    pub struct lt_eval_result {
        pub struct_size: u32,
        pub loss: f64,
        pub accuracy: f64,
        pub n_records: i64,
        pub n_tokens: i64,
        pub seconds: f64,
    }
    pub struct lt_train_summary {
        pub struct_size: u32,
        pub steps: i64,
        pub max_steps: i64,
        pub steps_run: i64,
        pub total_tokens: i64,
        pub records_seen: i64,
        pub elapsed_s: f64,
        pub tokens_per_s: f64,
        pub mean_loss: f64,
        pub last_loss: f64,
        pub best_eval_loss: f64,
        pub best_eval_step: i64,
        pub n_evals: i32,
        pub early_stopped: i32,
        pub best_loaded: i32,
    }
    pub struct lt_comm_params {
        pub struct_size: u32,
        pub world_size: i32,
        pub rank: i32,
        pub master_addr: *const c_char,
        pub master_port: i32,
        pub timeout_s: f64,
    }
    pub struct lt_generate_params {
        pub struct_size: u32,
        pub max_new_tokens: i32,
        pub do_sample: i32,
        pub temperature: f32,
        pub top_k: i32,
        pub top_p: f32,
        pub min_p: f32,
        pub repetition_penalty: f32,
        pub seed: u64,
        pub stop_ids: *const i32,
        pub n_stop_ids: i32,
        pub stop_strings: *const *const c_char,
        pub n_stop_strings: i32,
        pub tokenizer: *const lt_tokenizer,
        pub on_text: lt_stream_fn,
        pub user_data: *mut c_void,
    }
    pub struct lt_export_params {
        pub struct_size: u32,
        pub format: i32,
        pub quant: *const c_char,
        pub merge_base: i32,
        pub template_name: *const c_char,
        pub template_text: *const c_char,
        pub tokenizer_dir: *const c_char,
        pub overwrite: i32,
        pub write_modelfile: i32,
        pub n_threads: i32,
        pub max_shard_bytes: u64,
        pub progress: lt_progress_fn,
        pub progress_user_data: *mut c_void,
    }
}

macro_rules! lt_functions {
    ($( pub fn $name:ident ( $( $arg:ident : $ty:ty ),* $(,)? ) $( -> $ret:ty )? ; )*) => {
        extern "C" {
            $( pub fn $name( $( $arg: $ty ),* ) $( -> $ret )?; )*
        }
        /// (name, parameter names) of every declared function, in header order.
        pub const FUNCTIONS: &[(&str, &[&str])] = &[
            $( (stringify!($name), &[ $( stringify!($arg) ),* ]) ),*
        ];
    };
}

lt_functions! {
    pub fn lt_version() -> *const c_char;
    pub fn lt_version_number() -> u32;
    pub fn lt_struct_size(struct_name: *const c_char) -> usize;
    pub fn lt_status_string(status: lt_status) -> *const c_char;
    pub fn lt_last_error() -> *const c_char;
    pub fn lt_clear_error();
    pub fn lt_set_log_callback(fn_: lt_log_fn, max_level: i32, user_data: *mut c_void);
    pub fn lt_cuda_device_count() -> i32;
    pub fn lt_cuda_device_info(index: i32, name: *mut c_char, cap: usize, compute_capability: *mut i32,
                               total_bytes: *mut u64, free_bytes: *mut u64) -> lt_status;
    pub fn lt_model_params_init(params: *mut lt_model_params);
    pub fn lt_model_load(dir: *const c_char, params: *const lt_model_params, out: *mut *mut lt_model) -> lt_status;
    pub fn lt_model_free(model: *mut lt_model);
    pub fn lt_model_get_info(model: *const lt_model, out: *mut lt_model_info) -> lt_status;
    pub fn lt_lora_params_init(params: *mut lt_lora_params);
    pub fn lt_lora_targets_parse(names: *const c_char, mask: *mut u32) -> lt_status;
    pub fn lt_model_add_lora(model: *mut lt_model, params: *const lt_lora_params) -> lt_status;
    pub fn lt_model_load_adapter(model: *mut lt_model, dir: *const c_char) -> lt_status;
    pub fn lt_model_save_adapter(model: *const lt_model, dir: *const c_char, overwrite: i32) -> lt_status;
    pub fn lt_model_set_lora_enabled(model: *mut lt_model, enabled: i32) -> lt_status;
    pub fn lt_model_logits(model: *mut lt_model, ids: *const i32, n: usize, logits: *mut f32) -> lt_status;
    pub fn lt_model_loss(model: *mut lt_model, ids: *const i32, labels: *const i32, n: usize, loss: *mut f64)
        -> lt_status;
    pub fn lt_estimate_memory(model_dir: *const c_char, model_params: *const lt_model_params,
                              lora: *const lt_lora_params, train: *const lt_train_params,
                              out: *mut lt_memory_estimate) -> lt_status;
    pub fn lt_tokenizer_load(dir: *const c_char, out: *mut *mut lt_tokenizer) -> lt_status;
    pub fn lt_tokenizer_free(tok: *mut lt_tokenizer);
    pub fn lt_tokenizer_encode(tok: *const lt_tokenizer, text: *const c_char, len: usize, add_special: i32,
                               ids: *mut i32, cap: usize, n_ids: *mut usize) -> lt_status;
    pub fn lt_tokenizer_decode(tok: *const lt_tokenizer, ids: *const i32, n: usize, skip_special: i32,
                               text: *mut c_char, cap: usize, len: *mut usize) -> lt_status;
    pub fn lt_tokenizer_vocab_size(tok: *const lt_tokenizer) -> i32;
    pub fn lt_tokenizer_token_to_id(tok: *const lt_tokenizer, token: *const c_char) -> i32;
    pub fn lt_tokenizer_id_to_token(tok: *const lt_tokenizer, id: i32) -> *const c_char;
    pub fn lt_tokenizer_special_tokens(tok: *const lt_tokenizer, out: *mut lt_special_tokens) -> lt_status;
    pub fn lt_tokenizer_eos_token(tok: *const lt_tokenizer) -> *const c_char;
    pub fn lt_token_stream_new(tok: *const lt_tokenizer, skip_special: i32, out: *mut *mut lt_token_stream)
        -> lt_status;
    pub fn lt_token_stream_free(stream: *mut lt_token_stream);
    pub fn lt_token_stream_push(stream: *mut lt_token_stream, id: i32, text: *mut c_char, cap: usize,
                                len: *mut usize) -> lt_status;
    pub fn lt_token_stream_flush(stream: *mut lt_token_stream, text: *mut c_char, cap: usize, len: *mut usize)
        -> lt_status;
    pub fn lt_tokenizer_apply_chat_template(tok: *const lt_tokenizer, messages: *const lt_chat_message,
                                            n_messages: usize, add_generation_prompt: i32,
                                            template_override: *const c_char, text: *mut c_char, cap: usize,
                                            len: *mut usize) -> lt_status;
    pub fn lt_template_builtin(name: *const c_char) -> *const c_char;
    pub fn lt_template_render(template_name_or_text: *const c_char, instruction: *const c_char,
                              input: *const c_char, output: *const c_char, text: *mut c_char, cap: usize,
                              len: *mut usize) -> lt_status;
    pub fn lt_dataset_params_init(params: *mut lt_dataset_params);
    pub fn lt_dataset_load(path: *const c_char, tok: *const lt_tokenizer, params: *const lt_dataset_params,
                           out: *mut *mut lt_dataset) -> lt_status;
    pub fn lt_dataset_new(tok: *const lt_tokenizer, params: *const lt_dataset_params, out: *mut *mut lt_dataset)
        -> lt_status;
    pub fn lt_dataset_add_json(ds: *mut lt_dataset, json_record: *const c_char) -> lt_status;
    pub fn lt_dataset_add_alpaca(ds: *mut lt_dataset, instruction: *const c_char, input: *const c_char,
                                 output: *const c_char) -> lt_status;
    pub fn lt_dataset_add_text(ds: *mut lt_dataset, text: *const c_char) -> lt_status;
    pub fn lt_dataset_add_tokens(ds: *mut lt_dataset, ids: *const i32, labels: *const i32, n: usize) -> lt_status;
    pub fn lt_dataset_free(ds: *mut lt_dataset);
    pub fn lt_dataset_get_stats(ds: *const lt_dataset, out: *mut lt_dataset_stats) -> lt_status;
    pub fn lt_dataset_size(ds: *const lt_dataset) -> usize;
    pub fn lt_dataset_get(ds: *const lt_dataset, index: usize, ids: *mut i32, labels: *mut i32, cap: usize,
                          n: *mut usize) -> lt_status;
    pub fn lt_train_params_init(params: *mut lt_train_params);
    pub fn lt_scheduler_parse(name: *const c_char, out: *mut i32) -> lt_status;
    pub fn lt_optimizer_parse(name: *const c_char, out: *mut i32) -> lt_status;
    pub fn lt_trainer_new(model: *mut lt_model, ds: *mut lt_dataset, params: *const lt_train_params,
                          out: *mut *mut lt_trainer) -> lt_status;
    pub fn lt_trainer_step(tr: *mut lt_trainer, metrics: *mut lt_metrics) -> lt_status;
    pub fn lt_trainer_run(tr: *mut lt_trainer) -> lt_status;
    pub fn lt_trainer_request_stop(tr: *mut lt_trainer);
    pub fn lt_trainer_get_step(tr: *const lt_trainer) -> i64;
    pub fn lt_trainer_evaluate(tr: *mut lt_trainer, loss: *mut f64) -> lt_status;
    pub fn lt_trainer_evaluate_v2(tr: *mut lt_trainer, out: *mut lt_eval_result) -> lt_status;
    pub fn lt_trainer_get_summary(tr: *const lt_trainer, out: *mut lt_train_summary) -> lt_status;
    pub fn lt_trainer_save_checkpoint(tr: *mut lt_trainer, dir: *const c_char) -> lt_status;
    pub fn lt_trainer_load_checkpoint(tr: *mut lt_trainer, dir: *const c_char) -> lt_status;
    pub fn lt_trainer_free(tr: *mut lt_trainer);
    pub fn lt_nccl_get_unique_id(id: *mut u8) -> lt_status;
    pub fn lt_comm_params_init(params: *mut lt_comm_params);
    pub fn lt_comm_new(params: *const lt_comm_params, out: *mut *mut lt_comm) -> lt_status;
    pub fn lt_comm_get_info(comm: *const lt_comm, world_size: *mut i32, rank: *mut i32) -> lt_status;
    pub fn lt_comm_broadcast(comm: *mut lt_comm, rank: i32, buf: *mut c_void, bytes: usize) -> lt_status;
    pub fn lt_comm_barrier(comm: *mut lt_comm, rank: i32) -> lt_status;
    pub fn lt_comm_abort(comm: *mut lt_comm, rank: i32, reason: *const c_char);
    pub fn lt_comm_free(comm: *mut lt_comm);
    pub fn lt_generate_params_init(params: *mut lt_generate_params);
    pub fn lt_generate(model: *mut lt_model, prompt: *const i32, n_prompt: usize, params: *const lt_generate_params,
                       out_ids: *mut i32, cap: usize, n_out: *mut usize) -> lt_status;
    pub fn lt_generate_batch(model: *mut lt_model, prompts: *const *const i32, n_prompt: *const usize, n_seq: usize,
                             params: *const lt_generate_params, out_ids: *mut i32, cap: usize,
                             n_out: *mut usize) -> lt_status;
    pub fn lt_model_release_buffers(model: *mut lt_model) -> lt_status;
    pub fn lt_export_params_init(params: *mut lt_export_params);
    pub fn lt_export_format_parse(name: *const c_char, out: *mut i32) -> lt_status;
    pub fn lt_exporter_new(model: *mut lt_model, tok: *const lt_tokenizer, params: *const lt_export_params,
                           out: *mut *mut lt_exporter) -> lt_status;
    pub fn lt_exporter_write(ex: *mut lt_exporter, path: *const c_char) -> lt_status;
    pub fn lt_exporter_free(ex: *mut lt_exporter);
}

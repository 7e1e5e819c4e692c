/*
 * loratune.h - the public C API of libloratune: LoRA fine-tuning of Hugging Face causal
 * language models on a frozen 4-bit (NF4) base, on NVIDIA GPUs (CUDA) or the CPU reference.
 *
 * The only public header. Compiles as C99 and C++. Conventions (docs/STYLE.md):
 *   - handles are opaque; every handle has a create/free pair and free accepts NULL;
 *   - every call that can fail returns lt_status; results come through out-parameters;
 *     on failure lt_last_error() gives a message naming what and where (thread-local);
 *   - params structs start with struct_size, are filled by lt_<x>_params_init(), only grow at
 *     the end and hold only fixed-width integers, floats, doubles, pointers and C strings;
 *   - callbacks take user_data last and return 0 to go on, non-zero to stop; they are called
 *     on the thread that made the call that triggers them and must not re-enter that handle;
 *   - buffers the caller passes stay the caller's; strings returned as `const char *` are
 *     owned by the library and live as long as the handle they came from;
 *   - variable-length results use the two-call pattern: pass a buffer and its capacity; when
 *     it is too small the call returns LT_ERR_BUFFER_TOO_SMALL and writes the needed count.
 * The library never exits, aborts or prints: logging goes through lt_set_log_callback().
 */
#ifndef LORATUNE_H
#define LORATUNE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#  define LT_API __declspec(dllexport)
#elif defined(__GNUC__)
#  define LT_API __attribute__((visibility("default")))
#else
#  define LT_API
#endif

/* ---- versions ---------------------------------------------------------------------------- */
#define LT_VERSION_MAJOR 0
#define LT_VERSION_MINOR 1
#define LT_VERSION_PATCH 0
#define LT_VERSION_NUMBER (LT_VERSION_MAJOR * 10000 + LT_VERSION_MINOR * 100 + LT_VERSION_PATCH)

/* "MAJOR.MINOR.PATCH" of the library loaded at run time. */
LT_API const char *lt_version(void);
/* LT_VERSION_NUMBER of the library loaded at run time (bindings compare the major part). */
LT_API uint32_t lt_version_number(void);
/* The size the loaded library gives a public struct, by its name ("lt_train_params", ...);
 * 0 for an unknown name. Bindings check their struct layouts against it at load. */
LT_API size_t lt_struct_size(const char *struct_name);

/* ---- status ------------------------------------------------------------------------------ */
/* Values are pinned forever; retired values are never reused. */
typedef enum lt_status {
    LT_OK = 0,
    LT_DONE = 1,                  /* lt_trainer_step: training finished, no step was taken */
    LT_STOPPED = 2,               /* a callback asked to stop */
    LT_ERR_INVALID_ARGUMENT = -1, /* a NULL handle, a parameter out of range */
    LT_ERR_IO = -2,               /* a file could not be opened, read, written or renamed */
    LT_ERR_FORMAT = -3,           /* a file is malformed: JSON, safetensors, tokenizer.json ... */
    LT_ERR_UNSUPPORTED = -4,      /* a valid input this version cannot handle (arch, dtype ...) */
    LT_ERR_OUT_OF_MEMORY = -5,    /* host or device memory */
    LT_ERR_CUDA = -6,             /* a CUDA, cuBLAS or cuBLASLt failure */
    LT_ERR_NOT_FOUND = -7,        /* a file, tensor, token or key that should exist does not */
    LT_ERR_STATE = -8,            /* the call does not fit the handle's state */
    LT_ERR_DATA = -9,             /* a training record is bad (the message names file:line) */
    LT_ERR_EXISTS = -10,          /* the output exists and overwrite was not asked */
    LT_ERR_VERSION = -11,         /* a library / struct size / file version mismatch */
    LT_ERR_BUFFER_TOO_SMALL = -12,/* the caller's buffer is too small; the needed size was written */
    LT_ERR_UTF8 = -13,            /* invalid UTF-8 (the message gives the byte offset) */
    LT_ERR_NCCL = -14,            /* a NCCL failure, or a data-parallel rank that died, hung or aborted */
    LT_ERR_NO_DEVICE = -15,       /* CUDA was asked for and no usable GPU is there */
    LT_ERR_NONFINITE = -16,       /* a loss, gradient norm or value to be saved is NaN or infinite
                                   * (the message names the step or tensor, the value and the last
                                   * good checkpoint); nothing non-finite is ever written */
    LT_ERR_INTERNAL = -99         /* a bug in loratune: please report it with the message */
} lt_status;

/* A static English name for a status ("LT_ERR_FORMAT: malformed file"). Never NULL. */
LT_API const char *lt_status_string(lt_status status);
/* The message of the last failed call on this thread ("" when none). Owned by the library,
 * valid until the next loratune call on this thread. */
LT_API const char *lt_last_error(void);
LT_API void lt_clear_error(void);

/* ---- logging and progress ---------------------------------------------------------------- */
typedef enum lt_log_level {
    LT_LOG_ERROR = 0, LT_LOG_WARN = 1, LT_LOG_INFO = 2, LT_LOG_DEBUG = 3
} lt_log_level;
/* Called for every message at or below the level set; any thread may call it (serialised by
 * the library). With no callback set, the library says nothing. */
typedef void (*lt_log_fn)(int32_t level, const char *message, void *user_data);
LT_API void lt_set_log_callback(lt_log_fn fn, int32_t max_level, void *user_data);

/* Long work (loading, quantizing, tokenizing, exporting) reports progress: `what` names the
 * phase, done/total count its units. Return non-zero to cancel (the call then returns
 * LT_STOPPED and leaves nothing half-written). */
typedef int (*lt_progress_fn)(const char *what, uint64_t done, uint64_t total, void *user_data);

/* ---- devices ----------------------------------------------------------------------------- */
typedef enum lt_device {
    LT_DEVICE_AUTO = 0, /* CUDA where a GPU and the CUDA backend are there, else the CPU */
    LT_DEVICE_CPU = 1,  /* the fp32 reference backend */
    LT_DEVICE_CUDA = 2
} lt_device;

/* Number of CUDA devices usable by this build (0 for a CPU-only build or no GPU). */
LT_API int32_t lt_cuda_device_count(void);
/* The device's name and compute capability (major*10+minor) into name[cap]. */
LT_API lt_status lt_cuda_device_info(int32_t index, char *name, size_t cap, int32_t *compute_capability,
                                     uint64_t *total_bytes, uint64_t *free_bytes);

typedef enum lt_dtype {
    LT_DTYPE_AUTO = 0, LT_DTYPE_F32 = 1, LT_DTYPE_F16 = 2, LT_DTYPE_BF16 = 3
} lt_dtype;

typedef enum lt_quant {
    LT_QUANT_NF4 = 0,  /* bitsandbytes NF4, blocksize 64 (the notebook's load_in_4bit) */
    LT_QUANT_NONE = 1  /* keep the base in 16 bits (LoRA on a 16-bit base) */
} lt_quant;

/* ---- handles ----------------------------------------------------------------------------- */
typedef struct lt_model lt_model;         /* config + frozen base weights + LoRA adapter */
typedef struct lt_tokenizer lt_tokenizer; /* tokenizer.json + tokenizer_config.json */
typedef struct lt_dataset lt_dataset;     /* tokenized training records */
typedef struct lt_trainer lt_trainer;     /* optimizer, schedule, data cursor, step loop */
typedef struct lt_exporter lt_exporter;   /* PEFT / merged / GGUF writer */
typedef struct lt_token_stream lt_token_stream; /* incremental, UTF-8 safe decoding */
typedef struct lt_comm lt_comm;           /* a data-parallel group (threads or processes over TCP) */

/* ---- model ------------------------------------------------------------------------------- */
typedef struct lt_model_params {
    uint32_t struct_size;
    int32_t device;         /* lt_device; default LT_DEVICE_AUTO */
    int32_t device_index;   /* CUDA device ordinal; default 0 */
    int32_t quant;          /* lt_quant; default LT_QUANT_NF4. The CPU backend honours it too: it rounds
                             * the base through NF4 (the numerics of a 4-bit base) in fp32 */
    int32_t compute_dtype;  /* lt_dtype; AUTO: bf16 where the GPU has it, else f16; f32 on CPU */
    int32_t double_quant;   /* NF4 double quantization of absmax; default 1 */
    int32_t max_seq_len;    /* longest sequence to train or generate; default 2048 */
    int32_t n_threads;      /* CPU threads; 0 = all cores */
    lt_progress_fn progress;
    void *progress_user_data;
} lt_model_params;
LT_API void lt_model_params_init(lt_model_params *params);

/* Loads a Hugging Face model folder: config.json + model.safetensors (or sharded with
 * model.safetensors.index.json). The folder must outlive nothing: weights are copied or
 * quantized at load. */
LT_API lt_status lt_model_load(const char *dir, const lt_model_params *params, lt_model **out);
LT_API void lt_model_free(lt_model *model);

typedef struct lt_model_info {
    uint32_t struct_size;
    char architecture[64];  /* "Qwen2ForCausalLM" */
    char model_type[32];    /* "qwen2" */
    int32_t vocab_size, hidden_size, intermediate_size, num_layers;
    int32_t num_heads, num_kv_heads, head_dim, max_position_embeddings;
    double rope_theta, rms_norm_eps;
    int32_t tie_word_embeddings, attention_bias;
    int32_t device;         /* lt_device actually used */
    int32_t compute_dtype;  /* lt_dtype actually used */
    int32_t quant;          /* lt_quant actually used */
    uint64_t n_params;      /* base parameters */
    uint64_t n_lora_params; /* trainable LoRA parameters (0 before lt_model_add_lora) */
    uint64_t weight_bytes;  /* bytes the base weights take on the device */
} lt_model_info;
LT_API lt_status lt_model_get_info(const lt_model *model, lt_model_info *out);

/* LoRA targets, a bit mask. */
#define LT_TARGET_Q    (1u << 0)
#define LT_TARGET_K    (1u << 1)
#define LT_TARGET_V    (1u << 2)
#define LT_TARGET_O    (1u << 3)
#define LT_TARGET_GATE (1u << 4)
#define LT_TARGET_UP   (1u << 5)
#define LT_TARGET_DOWN (1u << 6)
#define LT_TARGET_ALL  0x7Fu

typedef struct lt_lora_params {
    uint32_t struct_size;
    int32_t r;              /* rank; default 16 */
    float alpha;            /* default 32 */
    float dropout;          /* on the LoRA branch's input; default 0.1 */
    int32_t use_rslora;     /* scaling alpha/sqrt(r) instead of alpha/r; default 0 */
    uint32_t targets;       /* LT_TARGET_* mask; default LT_TARGET_ALL */
    uint64_t seed;          /* PEFT init (A kaiming-uniform a=sqrt(5), B = 0); default 3407 */
} lt_lora_params;
LT_API void lt_lora_params_init(lt_lora_params *params);
/* Parses "q_proj,k_proj,..." or "q,k,v,o,gate,up,down" or "all" into a LT_TARGET_* mask. */
LT_API lt_status lt_lora_targets_parse(const char *names, uint32_t *mask);

/* Attaches a fresh LoRA adapter (replacing any). */
LT_API lt_status lt_model_add_lora(lt_model *model, const lt_lora_params *params);
/* Loads a PEFT adapter folder (adapter_config.json + adapter_model.safetensors). */
LT_API lt_status lt_model_load_adapter(lt_model *model, const char *dir);
/* Writes the adapter as PEFT does: adapter_config.json + adapter_model.safetensors (F32).
 * Whole or absent: a new folder is built as "<dir>.tmp-<pid>-<n>/" and renamed into place; into
 * an existing folder (a training output) the pair is committed through "<dir>/.adapter-pending/"
 * so that a kill at any point leaves the previous adapter or the new one, never a mix
 * (lt_model_load_adapter reads a committed pair still in .adapter-pending/; the next save
 * finishes it). overwrite=0 refuses a folder that holds an adapter. A NaN/Inf weight is refused
 * with LT_ERR_NONFINITE naming the tensor, and nothing is written. */
LT_API lt_status lt_model_save_adapter(const lt_model *model, const char *dir, int32_t overwrite);
/* Enables (1) or disables (0) the LoRA branch in forward passes (training needs it on). */
LT_API lt_status lt_model_set_lora_enabled(lt_model *model, int32_t enabled);

/* Logits of one sequence: ids[n] in, logits[n * vocab_size] (float32, row-major) out.
 * LoRA is applied when attached and enabled; dropout is off. */
LT_API lt_status lt_model_logits(lt_model *model, const int32_t *ids, size_t n, float *logits);
/* Mean cross-entropy of labels (-100 ignored) under the model, no gradient. */
LT_API lt_status lt_model_loss(lt_model *model, const int32_t *ids, const int32_t *labels, size_t n,
                               double *loss);

typedef struct lt_memory_estimate {
    uint32_t struct_size;
    uint64_t weights;       /* base weights as stored on the device */
    uint64_t lora;          /* LoRA weights, gradients and optimizer state */
    uint64_t activations;   /* checkpoints + one layer's recompute + the chunked head */
    uint64_t workspace;     /* GEMM / dequantization workspace */
    uint64_t total;
} lt_memory_estimate;
/* Estimates device memory for training a config (no weights loaded). lora/train may be NULL
 * for the defaults. Evaluation during training adds a 64 MiB logits chunk, counted when
 * train->eval_data is set or early stopping / load_best_at_end are on; a held-out split of the
 * training data (lt_dataset_params.eval_fraction) cannot be seen here. */
struct lt_train_params;
LT_API lt_status lt_estimate_memory(const char *model_dir, const lt_model_params *model_params,
                                    const lt_lora_params *lora, const struct lt_train_params *train,
                                    lt_memory_estimate *out);

/* ---- tokenizer --------------------------------------------------------------------------- */
/* Loads tokenizer.json (+ tokenizer_config.json, generation_config.json where present). */
LT_API lt_status lt_tokenizer_load(const char *dir, lt_tokenizer **out);
LT_API void lt_tokenizer_free(lt_tokenizer *tok);

/* Encodes UTF-8 text. Added/special tokens in the text are recognised. add_special=1 adds
 * what the tokenizer's post-processor adds (nothing for Qwen2). */
LT_API lt_status lt_tokenizer_encode(const lt_tokenizer *tok, const char *text, size_t len, int32_t add_special,
                                     int32_t *ids, size_t cap, size_t *n_ids);
/* Decodes ids to UTF-8 (invalid byte sequences become U+FFFD as in `tokenizers`); the text is
 * NUL-terminated when it fits (cap > *len). */
LT_API lt_status lt_tokenizer_decode(const lt_tokenizer *tok, const int32_t *ids, size_t n, int32_t skip_special,
                                     char *text, size_t cap, size_t *len);
LT_API int32_t lt_tokenizer_vocab_size(const lt_tokenizer *tok);
/* -1 when the token is unknown. */
LT_API int32_t lt_tokenizer_token_to_id(const lt_tokenizer *tok, const char *token);
/* The token's string as stored in the vocabulary, or NULL. Owned by the tokenizer. */
LT_API const char *lt_tokenizer_id_to_token(const lt_tokenizer *tok, int32_t id);

typedef struct lt_special_tokens {
    uint32_t struct_size;
    int32_t bos_id, eos_id, pad_id;  /* -1 when absent */
    int32_t n_stop_ids;              /* eos + generation_config's eos_token_id list */
    int32_t stop_ids[8];
} lt_special_tokens;
LT_API lt_status lt_tokenizer_special_tokens(const lt_tokenizer *tok, lt_special_tokens *out);
/* The EOS token's text ("<|im_end|>"), or NULL. Owned by the tokenizer. */
LT_API const char *lt_tokenizer_eos_token(const lt_tokenizer *tok);

/* Incremental decoding for streaming: push ids one by one, get only complete UTF-8. */
LT_API lt_status lt_token_stream_new(const lt_tokenizer *tok, int32_t skip_special, lt_token_stream **out);
LT_API void lt_token_stream_free(lt_token_stream *stream);
/* Writes the text that became complete with `id` (maybe empty) into text[cap]. */
LT_API lt_status lt_token_stream_push(lt_token_stream *stream, int32_t id, char *text, size_t cap, size_t *len);
/* Writes what is left (an incomplete tail becomes U+FFFD) and resets the stream. */
LT_API lt_status lt_token_stream_flush(lt_token_stream *stream, char *text, size_t cap, size_t *len);

typedef struct lt_chat_message {
    const char *role;     /* "system", "user", "assistant" */
    const char *content;
} lt_chat_message;
/* Renders tokenizer_config.json's chat_template (or `template_override` when non-NULL). */
LT_API lt_status lt_tokenizer_apply_chat_template(const lt_tokenizer *tok, const lt_chat_message *messages,
                                                  size_t n_messages, int32_t add_generation_prompt,
                                                  const char *template_override, char *text, size_t cap,
                                                  size_t *len);

/* ---- prompt templates -------------------------------------------------------------------- */
/* Built-in templates by name: "alpaca-zh" (the notebook's, the default), "alpaca", "chatml".
 * Returns the template text with {instruction}, {input}, {output}, or NULL for an unknown name. */
LT_API const char *lt_template_builtin(const char *name);
/* Fills {instruction}, {input}, {output} of a template (a name or a template text). */
LT_API lt_status lt_template_render(const char *template_name_or_text, const char *instruction, const char *input,
                                    const char *output, char *text, size_t cap, size_t *len);

/* ---- dataset ----------------------------------------------------------------------------- */
typedef enum lt_data_format {
    LT_DATA_AUTO = 0,    /* by the first record's fields */
    LT_DATA_ALPACA = 1,  /* instruction / input / output through the prompt template */
    LT_DATA_CHAT = 2,    /* messages (role/content) or conversations (from/value) */
    LT_DATA_TEXT = 3,    /* a plain text field */
    LT_DATA_TOKENS = 4   /* input_ids (+ optional labels) */
} lt_data_format;

typedef enum lt_loss_on {
    LT_LOSS_ALL = 0,      /* every token (the notebook's behaviour) */
    LT_LOSS_RESPONSE = 1  /* only the response. Alpaca: as TRL's prompt-completion records, by token
                           * count: the prompt (the template up to {output}) is also encoded alone,
                           * and that many leading tokens carry no loss, every later one does. Chat:
                           * the tokens that overlap an assistant turn. Not for plain text. */
} lt_loss_on;

typedef struct lt_dataset_params {
    uint32_t struct_size;
    int32_t format;               /* lt_data_format; default AUTO */
    const char *template_name;    /* built-in name; default "alpaca-zh" */
    const char *template_text;    /* custom template (overrides the name) */
    const char *instruction_field;/* default "instruction" */
    const char *input_field;      /* default "input" */
    const char *output_field;     /* default "output" */
    const char *text_field;       /* default "text" */
    int32_t max_seq_len;          /* default 2048; longer records are truncated and counted */
    int32_t loss_on;              /* lt_loss_on; default LT_LOSS_ALL */
    int32_t add_eos;              /* default 1: append the EOS text to text and Alpaca records unless
                                   * the text (for loss_on=response, its part after the prompt)
                                   * already ends with it, as TRL; chat records get none (their
                                   * template ends the turns); pre-tokenized ones are used as given */
    int32_t skip_bad_records;     /* 0 = strict (stop at the first bad record); default 0 */
    double eval_fraction;         /* held out for evaluation; default 0 */
    uint64_t seed;                /* shuffling; default 3407 */
    int32_t n_threads;            /* tokenization threads; 0 = all cores */
    lt_progress_fn progress;
    void *progress_user_data;
} lt_dataset_params;
LT_API void lt_dataset_params_init(lt_dataset_params *params);

/* Reads a JSON array or JSONL file. The tokenizer must outlive the dataset. */
LT_API lt_status lt_dataset_load(const char *path, const lt_tokenizer *tok, const lt_dataset_params *params,
                                 lt_dataset **out);
/* An empty dataset that records are added to (bindings pass lists or datasets.Dataset). */
LT_API lt_status lt_dataset_new(const lt_tokenizer *tok, const lt_dataset_params *params, lt_dataset **out);
/* Adds one record given as a JSON object text ({"instruction":..}, {"text":..}, {"messages":..}). */
LT_API lt_status lt_dataset_add_json(lt_dataset *ds, const char *json_record);
LT_API lt_status lt_dataset_add_alpaca(lt_dataset *ds, const char *instruction, const char *input, const char *output);
LT_API lt_status lt_dataset_add_text(lt_dataset *ds, const char *text);
/* labels may be NULL (= ids). */
LT_API lt_status lt_dataset_add_tokens(lt_dataset *ds, const int32_t *ids, const int32_t *labels, size_t n);
LT_API void lt_dataset_free(lt_dataset *ds);

typedef struct lt_dataset_stats {
    uint32_t struct_size;
    uint64_t n_records;       /* kept for training */
    uint64_t n_eval;          /* held out */
    uint64_t n_skipped;       /* bad records skipped (skip_bad_records=1) */
    uint64_t n_truncated;
    uint64_t n_tokens;        /* after truncation */
    uint64_t n_label_tokens;  /* tokens that carry loss */
    int32_t min_len, max_len;
    double mean_len;
} lt_dataset_stats;
LT_API lt_status lt_dataset_get_stats(const lt_dataset *ds, lt_dataset_stats *out);
LT_API size_t lt_dataset_size(const lt_dataset *ds);
/* Record i's ids and labels (-100 = no loss); either buffer may be NULL. */
LT_API lt_status lt_dataset_get(const lt_dataset *ds, size_t index, int32_t *ids, int32_t *labels, size_t cap,
                                size_t *n);

/* ---- training ---------------------------------------------------------------------------- */
typedef enum lt_scheduler {
    LT_SCHED_LINEAR = 0, LT_SCHED_COSINE = 1, LT_SCHED_CONSTANT = 2
} lt_scheduler;
typedef enum lt_optimizer {
    LT_OPTIM_ADAMW = 0,       /* torch.optim.AdamW, fp32 states */
    LT_OPTIM_ADAMW_8BIT = 1   /* bitsandbytes AdamW8bit (blockwise, blocksize 256) */
} lt_optimizer;

typedef struct lt_metrics {
    uint32_t struct_size;
    int64_t step;             /* optimizer steps done (1-based after the first) */
    int64_t max_steps;
    double epoch;             /* fractional epochs of data consumed */
    double loss;              /* the step's loss: sum over the window / labelled tokens */
    double lr;                /* the learning rate this step used */
    double grad_norm;         /* global L2 norm before clipping */
    int64_t tokens;           /* tokens processed in this step */
    int64_t total_tokens;
    double tokens_per_s;      /* this step */
    double elapsed_s;         /* since the trainer was created */
    uint64_t peak_memory;     /* device bytes (CUDA) or 0 */
    /* evaluation (lt_train_params.eval_every): filled on steps after which an evaluation ran */
    double eval_loss;         /* mean cross-entropy per labelled eval token; NaN when no eval ran */
    double eval_accuracy;     /* labelled eval tokens whose argmax prediction is the label, as a
                               * share in [0, 1]; NaN when no eval ran */
    double best_eval_loss;    /* the lowest eval loss so far; NaN before the first evaluation */
    int64_t best_eval_step;   /* the step of best_eval_loss; 0 before the first evaluation */
    int32_t early_stop;       /* 1: early stopping ends training after this step (the next
                               * lt_trainer_step returns LT_DONE) */
} lt_metrics;

/* Called after every optimizer step. Return non-zero to stop: lt_trainer_step then returns
 * LT_STOPPED (the step it reports is complete and kept). */
typedef int (*lt_step_fn)(const lt_metrics *metrics, void *user_data);

/* lt_trainer_new checks every field and refuses a bad one with LT_ERR_INVALID_ARGUMENT and a
 * message naming it: numbers must be finite and in range (lr, weight_decay, warmup_ratio >= 0,
 * adam_eps > 0, betas in [0, 1), max_grad_norm finite), counts in range (batch_size and
 * grad_accum in [1, 2^20], log_every/save_every >= 0), switches 0 or 1. */
typedef struct lt_train_params {
    uint32_t struct_size;
    int32_t batch_size;           /* per device micro-batch; default 2 */
    int32_t grad_accum;           /* default 8 */
    int32_t max_steps;            /* default 100; <= 0: run `epochs` */
    double epochs;                /* default 1 (used when max_steps <= 0) */
    double lr;                    /* default 4e-5 */
    int32_t warmup_steps;         /* default 50 */
    double warmup_ratio;          /* used when warmup_steps < 0: ceil(total*ratio); then in (0, 1] */
    int32_t scheduler;            /* lt_scheduler; default COSINE */
    int32_t optimizer;            /* lt_optimizer; default ADAMW_8BIT */
    double weight_decay;          /* default 0.01 */
    double adam_beta1, adam_beta2, adam_eps;  /* 0.9, 0.999, 1e-8 */
    double max_grad_norm;         /* default 1.0; <= 0 disables clipping */
    uint64_t seed;                /* data order and dropout; default 3407 */
    int32_t packing;              /* TRL packing=True (fixed-length sequences): not implemented, must be 0;
                                   * micro-batches are padding-free (records end to end) anyway */
    int32_t gradient_checkpointing; /* default 1 */
    int32_t offload_checkpoints;  /* 1 (needs gradient_checkpointing): the checkpoints (each layer's
                                   * input and its LoRA A outputs) live in pinned host memory, copied
                                   * out while the forward runs and back one layer ahead of the
                                   * backward's recompute; the device keeps two layers' worth.
                                   * The MLP then runs over chunks of 512 tokens and the LM head
                                   * over smaller chunks: the same arithmetic per token (the same
                                   * dropout masks), the LoRA gradients of gate/up/down summed
                                   * chunk by chunk (bit for bit below 512 tokens a pass with
                                   * deterministic kernels); less device memory (long contexts);
                                   * default 0 */
    int32_t deterministic;        /* bitwise repeatable kernels (the model's backend keeps them from
                                   * then on; the CPU backend always is); default 0 */
    int32_t log_every;            /* steps between log lines / log.jsonl rows; default 1 */
    int32_t save_every;           /* steps between checkpoints in output_dir; 0 = never */
    const char *output_dir;       /* checkpoints, log.jsonl, loss.svg; NULL = none */
    lt_step_fn on_step;
    void *user_data;
    /* data parallel: rank in [0, world_size) (see comm below); nccl_id (CUDA) from
     * lt_nccl_get_unique_id on rank 0, passed to every rank (set with world_size 1 it still
     * trains through NCCL). world_size <= 1 trains on one device. */
    int32_t rank, world_size;
    const uint8_t *nccl_id;
    double fp16_initial_loss_scale; /* default 65536 (fp16 compute only) */
    /* Run consecutive micro-batches of a window as one pass while their tokens fit the budget
     * one micro-batch is sized for (batch_size x the longest record, or 4096 tokens where
     * batch_size x max_seq_len allows that many): the same records and loss normalisation, far
     * fewer passes when records are short. Default 1; 0 = one pass each. */
    int32_t fuse_micro_batches;
    /* ---- evaluation, early stopping, checkpoint retention ----
     * Eval records: every training-split record of eval_data when it is set (load it with
     * eval_fraction 0), else the held-out split of the training dataset
     * (lt_dataset_params.eval_fraction). Evaluation is a forward pass without gradient or dropout,
     * on the trainer's backend, eval_batch_size records per pass; it draws no random numbers, so
     * the training losses are the same with and without it. */
    const lt_dataset *eval_data;  /* NULL (default): the training dataset's held-out split. Must
                                   * outlive the trainer; its tokenizer must be the model's */
    int32_t eval_every;           /* 0 (default): evaluate at every log step (log_every) when there
                                   * are eval records; N > 0: every N steps; < 0: never on its own
                                   * (lt_trainer_evaluate_v2 still works). With eval records and
                                   * eval_every >= 0, the last step is always evaluated */
    int32_t eval_batch_size;      /* records per evaluation pass; 0 (default): as many as fit the
                                   * token budget of one training pass (at least one) */
    int32_t early_stopping_patience; /* stop once this many evaluations in a row did not lower the
                                   * best eval loss by more than early_stopping_threshold; the step
                                   * that saw it reports early_stop = 1. 0 (default) = off; > 0
                                   * needs eval records */
    double early_stopping_threshold; /* default 0 */
    int32_t save_total_limit;     /* keep at most N checkpoint-<step> folders in output_dir: after
                                   * each save the oldest are deleted (with load_best_at_end the
                                   * best eval step's folder is kept and counts among the N).
                                   * 0 (default) = keep all */
    int32_t load_best_at_end;     /* 1: when training ends (the lt_trainer_step call that returns
                                   * LT_DONE, after the last step or early stopping) the LoRA
                                   * weights become those of the best evaluation, so the adapter
                                   * saved next is the best one. Not on LT_STOPPED (an interrupt).
                                   * Default 0; 1 needs eval records */
    /* ---- data parallel (world_size > 1) ----
     * Every rank builds the whole window of world_size x grad_accum micro-batches from the one
     * seeded permutation and runs its share of the passes; the LoRA gradients and losses are
     * summed over the ranks after the window, then every rank takes the same optimizer step. The
     * records, dropout masks and loss normalisation of a step do not depend on world_size:
     * world_size W with grad_accum A trains as world size 1 with grad_accum W x A (to floating-
     * point summation order), and a checkpoint resumes on any world size. Only rank 0 writes
     * output_dir (log.jsonl, loss.svg, checkpoints). CPU backend: set comm. CUDA: NCCL, with
     * nccl_id, or comm to share rank 0's id. A rank that fails aborts the group; one that dies or
     * hangs makes the others fail after dist_timeout_s, with LT_ERR_NCCL naming it. */
    lt_comm *comm;                /* the group (lt_comm_new), or NULL; must outlive the trainer */
    double dist_timeout_s;        /* a collective of the trainer waiting longer fails on every rank;
                                   * default 30 */
    /* Token-budget buckets: each pass (a micro-batch, or fused ones) is padded to one of a few
     * token counts (multiples of 128 at most 1/8 above it, up to the pass budget) with dummy
     * sequences that carry no loss and attend only to themselves, and the pass's gradient scale is
     * a power of two (the 1/labelled-tokens factor applied after the window), so that passes of
     * varying records have few distinct shapes, which a backend with graphs (CUDA) records once and
     * replays. The same records, losses, dropout masks and (to rounding) gradients as 0. Default 0
     * (every pass exactly its records' tokens): on an H100 the notebook's recipe ran at 30,443
     * tokens/s with buckets and 31,221 without (steps 11-40), so they stay opt-in. */
    int32_t bucket_passes;
} lt_train_params;
LT_API void lt_train_params_init(lt_train_params *params);
/* Parses a lt_scheduler / lt_optimizer name ("cosine", "adamw_8bit", "adamw_torch" ...). */
LT_API lt_status lt_scheduler_parse(const char *name, int32_t *out);
LT_API lt_status lt_optimizer_parse(const char *name, int32_t *out);

/* The model (with LoRA attached) and the dataset must outlive the trainer. */
LT_API lt_status lt_trainer_new(lt_model *model, lt_dataset *ds, const lt_train_params *params, lt_trainer **out);
/* One optimizer step (grad_accum micro-batches). LT_OK: a step was taken (metrics filled);
 * LT_DONE: training is complete; LT_STOPPED: the callback or lt_trainer_request_stop asked to
 * stop; < 0: an error. LT_ERR_NONFINITE: this step's loss or global gradient norm is NaN/Inf
 * (fp16 loss scaling's overflow excepted: that step is skipped and the scale halved); the update
 * was not applied, the trainer's state is the last step's, and the message names the step, the
 * value and the last checkpoint saved or resumed from. A failed write of log.jsonl saves a
 * checkpoint of the completed step before the error is returned (the message names it). */
LT_API lt_status lt_trainer_step(lt_trainer *tr, lt_metrics *metrics);
/* Runs steps until done, stopped or failed. */
LT_API lt_status lt_trainer_run(lt_trainer *tr);
/* Asks the trainer to stop, from any thread or a signal handler (it only sets a flag: async-
 * signal-safe). The running (or next) lt_trainer_step checks it between micro-batch passes and
 * returns LT_STOPPED: either the step it had begun is abandoned (no update; the data cursor,
 * dropout stream and metrics stay those of the last complete step, so that a checkpoint saved
 * now and resumed gives the same losses as an uninterrupted run), or, when the request came
 * after the last pass, the step is completed and reported as with an on_step stop. The request
 * is consumed by the LT_STOPPED it causes: a later lt_trainer_step trains on. A front end's
 * SIGINT/SIGTERM handler calls this, then saves a checkpoint with lt_trainer_save_checkpoint. */
LT_API void lt_trainer_request_stop(lt_trainer *tr);
/* Optimizer steps done so far (after a resume: counted from the checkpoint's), 0 for NULL. */
LT_API int64_t lt_trainer_get_step(const lt_trainer *tr);
/* Mean loss on the eval records (lt_train_params.eval_data, else the held-out split);
 * LT_ERR_STATE when there are none. */
LT_API lt_status lt_trainer_evaluate(lt_trainer *tr, double *loss);

typedef struct lt_eval_result {
    uint32_t struct_size;
    double loss;              /* sum of cross-entropy over labelled tokens / labelled tokens */
    double accuracy;          /* labelled tokens whose argmax prediction is the label, in [0, 1] */
    int64_t n_records;
    int64_t n_tokens;         /* labelled tokens */
    double seconds;
} lt_eval_result;
/* Evaluates the eval records now (no gradient, no dropout, no effect on training or its random
 * streams); also what the trainer runs every eval_every steps. Data parallel: the records are
 * dealt to the ranks and the sums added up, so every rank calls it and gets the same result. */
LT_API lt_status lt_trainer_evaluate_v2(lt_trainer *tr, lt_eval_result *out);

typedef struct lt_train_summary {
    uint32_t struct_size;
    int64_t steps;            /* optimizer steps done (a resumed run counts the checkpoint's) */
    int64_t max_steps;
    int64_t steps_run;        /* steps this trainer ran (after a resume: since it) */
    int64_t total_tokens;     /* tokens trained on */
    int64_t records_seen;     /* training records consumed (an epoch = the training split) */
    double elapsed_s;         /* training time, a resumed run's earlier time included */
    double tokens_per_s;      /* total_tokens / elapsed_s */
    double mean_loss;         /* mean of the step losses this trainer ran (TRL's training_loss) */
    double last_loss;
    double best_eval_loss;    /* NaN when no evaluation ran */
    int64_t best_eval_step;
    int32_t n_evals;          /* evaluations run */
    int32_t early_stopped;    /* training ended by early stopping */
    int32_t best_loaded;      /* load_best_at_end put the best evaluation's weights back */
} lt_train_summary;
/* Where training stands; for the end-of-run report (CLI summary, TRL's TrainOutput). */
LT_API lt_status lt_trainer_get_summary(const lt_trainer *tr, lt_train_summary *out);
/* Full state: adapter, optimizer (8-bit too), schedule, RNG, data cursor. Whole or absent: built
 * as "<dir>.tmp-<pid>-<n>/" and renamed over dir as one (an older checkpoint of that name is
 * swapped out); NaN/Inf values are refused (LT_ERR_NONFINITE). Loading truncates output_dir's
 * log.jsonl to the checkpoint's step. Data parallel:
 * every rank holds the same state; rank 0 writes it (other ranks return LT_OK, writing nothing)
 * and every rank loads it, on any world size. */
LT_API lt_status lt_trainer_save_checkpoint(lt_trainer *tr, const char *dir);
LT_API lt_status lt_trainer_load_checkpoint(lt_trainer *tr, const char *dir);
LT_API void lt_trainer_free(lt_trainer *tr);

/* NCCL unique id for data parallel training (128 bytes). */
#define LT_NCCL_ID_BYTES 128
LT_API lt_status lt_nccl_get_unique_id(uint8_t id[LT_NCCL_ID_BYTES]);

/* ---- data-parallel groups ----
 * An lt_comm is a group of world_size ranks as this process takes part in it: with master_addr
 * NULL, an in-process group whose ranks are threads of this process (one trainer each, the CPU
 * backend; they share the one lt_comm and pass their own rank); with master_addr set, this
 * process is rank `rank` and reaches the others over TCP: rank 0 listens on
 * master_addr:master_port (torchrun's MASTER_ADDR / MASTER_PORT), the others connect. Over TCP
 * it carries the CPU backend's collectives, and on CUDA shares rank 0's NCCL id. Collectives
 * wait at most timeout_s for the other ranks: one that dies, hangs or aborts makes every other
 * rank fail with LT_ERR_NCCL and a message naming it and the operation. */
typedef struct lt_comm_params {
    uint32_t struct_size;
    int32_t world_size;           /* ranks in the group; default 1 */
    int32_t rank;                 /* TCP: this process's rank in [0, world_size); default 0 */
    const char *master_addr;      /* rank 0's host name or address; NULL (default): in-process */
    int32_t master_port;          /* default 29500 */
    double timeout_s;             /* rendezvous, lt_comm_broadcast and lt_comm_barrier; default 30 */
} lt_comm_params;
LT_API void lt_comm_params_init(lt_comm_params *params);
/* TCP: returns once every rank has joined (or fails after timeout_s). */
LT_API lt_status lt_comm_new(const lt_comm_params *params, lt_comm **out);
/* The group's size, and this process's rank (-1 for an in-process group); either may be NULL. */
LT_API lt_status lt_comm_get_info(const lt_comm *comm, int32_t *world_size, int32_t *rank);
/* Copies rank 0's buf[bytes] into every rank's buf (e.g. an NCCL id). rank: the caller's. */
LT_API lt_status lt_comm_broadcast(lt_comm *comm, int32_t rank, void *buf, size_t bytes);
LT_API lt_status lt_comm_barrier(lt_comm *comm, int32_t rank);
/* Makes every rank's current and later collectives fail with "rank R aborted: reason". */
LT_API void lt_comm_abort(lt_comm *comm, int32_t rank, const char *reason);
/* Free the trainers using it first. NULL-safe. */
LT_API void lt_comm_free(lt_comm *comm);

/* ---- generation -------------------------------------------------------------------------- */
/* Receives each new piece of text (complete UTF-8) and the token that completed it. The pieces
 * join to what decoding prompt + new ids gives beyond the prompt's own decoded text (so a
 * SentencePiece vocabulary keeps the space before the first new word), special tokens skipped.
 * Return non-zero to stop generation. */
typedef int (*lt_stream_fn)(const char *piece, size_t len, int32_t token, void *user_data);

typedef struct lt_generate_params {
    uint32_t struct_size;
    int32_t max_new_tokens;       /* default 128 */
    int32_t do_sample;            /* 0 = greedy (default) */
    float temperature;            /* default 1.0 */
    int32_t top_k;                /* 0 = off */
    float top_p;                  /* 1.0 = off */
    float min_p;                  /* 0 = off */
    float repetition_penalty;     /* 1.0 = off (transformers' semantics) */
    uint64_t seed;                /* default 3407 */
    const int32_t *stop_ids;      /* NULL: the tokenizer's / generation_config's stop ids */
    int32_t n_stop_ids;
    const char *const *stop_strings;
    int32_t n_stop_strings;
    const lt_tokenizer *tokenizer;/* needed for on_text and stop_strings */
    lt_stream_fn on_text;
    void *user_data;
} lt_generate_params;
LT_API void lt_generate_params_init(lt_generate_params *params);

/* Generates after prompt[n_prompt]; the new ids (stop token included when one ended it) go to
 * out_ids[cap]. Usable between trainer steps (dropout is off, LoRA unmerged). */
LT_API lt_status lt_generate(lt_model *model, const int32_t *prompt, size_t n_prompt, const lt_generate_params *params,
                             int32_t *out_ids, size_t cap, size_t *n_out);

/* Generates for n_seq prompts at once (prompts[i], n_prompt[i] tokens each, >= 1), each as
 * lt_generate would alone: greedy gives the ids of n_seq separate calls, and sampling draws
 * prompt i with seed params->seed + i. Every sequence stops on its own (stop ids, stop strings,
 * max_new_tokens); the call returns when all have. Row i of out_ids (out_ids + i * cap, cap ids
 * per row; out_ids may be NULL) receives prompt i's new ids, n_out[i] (n_seq entries) their
 * count; LT_ERR_BUFFER_TOO_SMALL when a row needed more than cap. on_text (streaming) needs
 * n_seq == 1. The decode steps of all sequences run as one batched step where the backend has
 * a batched decoder (CUDA: the weights are read once per step for all of them); memory: one
 * KV cache of (longest prompt + max_new_tokens) positions per prompt. */
LT_API lt_status lt_generate_batch(lt_model *model, const int32_t *const *prompts, const size_t *n_prompt,
                                   size_t n_seq, const lt_generate_params *params, int32_t *out_ids, size_t cap,
                                   size_t *n_out);

/* Inference mode: frees the training graph's activation buffers (checkpoints, recompute and
 * head workspaces) now; generation keeps its own KV cache per call. A later trainer step or
 * lt_model_logits/loss allocates them again. */
LT_API lt_status lt_model_release_buffers(lt_model *model);

/* ---- export ------------------------------------------------------------------------------ */
typedef enum lt_export_format {
    LT_EXPORT_PEFT = 0,      /* adapter_config.json + adapter_model.safetensors */
    LT_EXPORT_MERGED = 1,    /* merged HF checkpoint (safetensors + config + tokenizer files) */
    LT_EXPORT_GGUF = 2,      /* merged GGUF v3 (+ Ollama Modelfile beside it) */
    LT_EXPORT_GGUF_LORA = 3  /* GGUF LoRA adapter */
} lt_export_format;

typedef enum lt_merge_base {
    LT_MERGE_AUTO = 0,       /* the original 16-bit weights where at hand, else dequantized NF4 */
    LT_MERGE_ORIGINAL = 1,
    LT_MERGE_DEQUANTIZED = 2 /* the NF4 weights that were trained, dequantized */
} lt_merge_base;

typedef struct lt_export_params {
    uint32_t struct_size;
    int32_t format;               /* lt_export_format; default GGUF */
    const char *quant;            /* "f32","f16","bf16","q8_0","q4_k_m","q4_k_s","q5_k_m","q6_k"; default "q4_k_m" */
    int32_t merge_base;           /* lt_merge_base */
    const char *template_name;    /* Ollama Modelfile TEMPLATE: built-in name; default "alpaca-zh" */
    const char *template_text;    /* or a custom template */
    const char *tokenizer_dir;    /* tokenizer files to embed / copy; default: the model folder */
    int32_t overwrite;            /* default 0: refuse an existing output */
    int32_t write_modelfile;      /* default 1 (GGUF) */
    int32_t n_threads;            /* 0 = all cores */
    uint64_t max_shard_bytes;     /* merged safetensors; default 5e9 */
    lt_progress_fn progress;
    void *progress_user_data;
} lt_export_params;
LT_API void lt_export_params_init(lt_export_params *params);
/* Parses "q4_k_m", "peft", "gguf" ... */
LT_API lt_status lt_export_format_parse(const char *name, int32_t *out);

/* The model must outlive the exporter; tok may be NULL (then tokenizer_dir is read). */
LT_API lt_status lt_exporter_new(lt_model *model, const lt_tokenizer *tok, const lt_export_params *params,
                                 lt_exporter **out);
/* Writes to path (a folder for PEFT/merged, a file for GGUF). Whole or absent: files through a
 * temporary name and a rename, the merged folder built aside and renamed as one (an existing
 * one is replaced only with overwrite, and only when it is empty or a model folder); the folders
 * a failed call created are removed, and temporaries a killed export of the same path left are
 * removed first. A NaN/Inf value is refused with LT_ERR_NONFINITE naming the tensor. With a
 * Modelfile: "Modelfile" beside the GGUF, or "<gguf name>.Modelfile" when a Modelfile of another
 * GGUF is already there (without overwrite), so that several quantizations share a folder.
 * A progress callback's cancel returns LT_STOPPED with nothing written. */
LT_API lt_status lt_exporter_write(lt_exporter *ex, const char *path);
LT_API void lt_exporter_free(lt_exporter *ex);

#ifdef __cplusplus
}
#endif
#endif /* LORATUNE_H */

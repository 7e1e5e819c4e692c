/* model.h - the internal lt_model: the parsed config.json, the frozen base weights on a
 * backend, the LoRA adapter (fp32 master weights + gradients), and the source safetensors kept
 * mapped for merges and exports. The graph (forward/backward) lives in graph.h. */
#ifndef LT_MODEL_H
#define LT_MODEL_H
#include "core/core.h"
#include "backend/backend.h"
#include "io/safetensors.h"

/* Families: the config reader that filled an lt_config (config.c). */
enum { LT_FAMILY_QWEN2, LT_FAMILY_LLAMA, LT_FAMILY_MISTRAL, LT_FAMILY_QWEN3, LT_FAMILY_GEMMA2, LT_FAMILY_GEMMA3,
       LT_FAMILY_PHI3, LT_FAMILY_COUNT };
enum { LT_ACT_SILU = 0, LT_ACT_GELU_TANH = 1 };
/* rope_type of rope_scaling / rope_parameters as transformers names them */
enum { LT_ROPE_DEFAULT = 0, LT_ROPE_LINEAR, LT_ROPE_DYNAMIC, LT_ROPE_YARN, LT_ROPE_LLAMA3, LT_ROPE_LONGROPE };
#define LT_MAX_LAYERS 1024
#define LT_ROPE_MAX_HALF 256     /* head_dim / 2 */

typedef struct lt_rope_desc {
    int32_t kind;                /* LT_ROPE_* */
    double theta;                /* rope_theta (base) */
    double factor;               /* linear, dynamic, yarn, llama3, longrope */
    int32_t original_max_pos;    /* original_max_position_embeddings (llama3, yarn, longrope) */
    int32_t max_pos;             /* the config's max_position_embeddings (dynamic, yarn, longrope) */
    double low_freq_factor, high_freq_factor;           /* llama3 */
    double beta_fast, beta_slow, mscale, mscale_all_dim; /* yarn */
    double attention_factor;     /* yarn / longrope attention_factor; 0: computed */
    int32_t truncate;            /* yarn: round the correction range (default true) */
    float short_factor[LT_ROPE_MAX_HALF], long_factor[LT_ROPE_MAX_HALF]; /* longrope */
} lt_rope_desc;

typedef struct lt_config {
    char architecture[64];       /* "Qwen2ForCausalLM", "LlamaForCausalLM", ... */
    char model_type[32];         /* "qwen2", "llama", ... */
    int32_t vocab_size, hidden_size, intermediate_size, num_layers;
    int32_t num_heads, num_kv_heads, head_dim, max_position_embeddings;
    double rope_theta, rms_norm_eps;
    int32_t tie_word_embeddings;
    int32_t attention_bias;      /* q/k/v carry biases (Qwen2) */
    int32_t torch_dtype;         /* lt_dtype of the checkpoint (torch_dtype or dtype) */
    int32_t bos_token_id;        /* -1 when absent */
    int32_t n_eos;
    int32_t eos_token_ids[8];
    /* a pre-quantized bitsandbytes checkpoint (quantization_config) */
    int32_t bnb_4bit;
    /* ---- the decoder layer and the model around it (config.c fills it per family; the graph,
     * generation and the backends' decoders all run from these fields) ---- */
    int32_t family;              /* LT_FAMILY_* */
    int32_t norm_one_plus;       /* RMSNorm weights applied as (1 + w) (Gemma) */
    int32_t sandwich_norm;       /* post_attention_layernorm on the attention output, then
                                  * pre_feedforward_layernorm / post_feedforward_layernorm (Gemma 2/3) */
    int32_t qk_norm;             /* RMSNorm over each head of q and k before rope (Qwen3, Gemma 3) */
    int32_t act;                 /* LT_ACT_*: the MLP's gate activation */
    int32_t fused_qkv;           /* one qkv_proj [QD+2KD, C] (Phi-3) */
    int32_t fused_gate_up;       /* one gate_up_proj [2I, C], gate rows first (Phi-3) */
    float attn_scale;            /* attention score scale: 1/sqrt(head_dim), or query_pre_attn_scalar^-0.5 */
    float attn_softcap;          /* scores -> cap * tanh(scores / cap); 0: none (Gemma 2) */
    float final_softcap;         /* logits -> cap * tanh(logits / cap); 0: none (Gemma 2) */
    float embed_scale;           /* embeddings times this (Gemma: sqrt(hidden)); 1 otherwise */
    int32_t sliding_window;      /* keys within this many positions for sliding layers; 0: none */
    lt_rope_desc rope;           /* rotary embedding of full-attention layers */
    lt_rope_desc rope_local;     /* of sliding-window layers (Gemma 3: its own base); = rope otherwise */
    uint8_t layer_sliding[LT_MAX_LAYERS]; /* 1: layer l attends within sliding_window */
} lt_config;

/* The rotary embedding's inverse frequencies f32 [head_dim/2] and attention factor (the cos/sin
 * multiplier) as transformers computes them (modeling_rope_utils) for sequences of up to
 * seq_len positions (dynamic NTK and longrope depend on it). */
void lt_rope_inv_freq(const lt_rope_desc *r, int32_t head_dim, int64_t seq_len, float *inv_freq,
                      float *attention_factor);
/* 1 when rope r is the default rotary embedding at every length up to seq_len (the backends'
 * rope_fwd with theta alone computes it). */
int lt_rope_is_plain(const lt_rope_desc *r, int64_t seq_len);

/* Parses config.json text (Hub style and transformers-5 style); `path` names it in errors. */
lt_status lt_config_parse(const char *json, size_t len, const char *path, lt_config *cfg);
lt_status lt_config_load(const char *dir, lt_config *cfg);

/* The seven LoRA targets, in PEFT's module names. */
enum { LT_PROJ_Q, LT_PROJ_K, LT_PROJ_V, LT_PROJ_O, LT_PROJ_GATE, LT_PROJ_UP, LT_PROJ_DOWN, LT_PROJ_COUNT };
extern const char *const lt_proj_names[LT_PROJ_COUNT];  /* "q_proj", ... */
extern const char *const lt_proj_parent[LT_PROJ_COUNT]; /* "self_attn", ..., "mlp" */
/* The module of slot p in this family (PEFT's name): "qkv_proj" in slot Q and "gate_up_proj" in
 * slot GATE of fused families, whose K, V and UP slots hold nothing (NULL). */
const char *lt_proj_name(const lt_config *c, int p);
/* The LoRA target bit (LT_TARGET_*) that selects slot p: a fused slot is targeted when any of
 * the projections it holds is. */
uint32_t lt_proj_target_mask(const lt_config *c, int p);

typedef struct lt_lora_tensor {
    int64_t in, out, r;          /* A [r, in], B [out, r] */
    float *A, *B;                /* backend f32 master weights (NULL when not targeted) */
    float *dA, *dB;              /* backend f32 gradients */
} lt_lora_tensor;

typedef struct lt_layer {
    float *ln1, *ln2;            /* backend f32 [C] input_layernorm and the norm before the MLP
                                  * (post_attention_layernorm; pre_feedforward_layernorm with
                                  * sandwich_norm), as the forward applies them ((1 + w) included) */
    float *ln_post_attn, *ln_post_ff; /* sandwich_norm: post_attention_layernorm on the attention
                                  * output, post_feedforward_layernorm on the MLP output; else NULL */
    float *q_norm, *k_norm;      /* qk_norm: backend f32 [HD]; else NULL */
    lt_bweight *proj[LT_PROJ_COUNT];
    float *bias[3];              /* backend f32 q/k/v biases, NULL without attention_bias */
    lt_lora_tensor lora[LT_PROJ_COUNT];
} lt_layer;

struct lt_model {
    lt_config cfg;
    char *dir;
    lt_model_params params;
    lt_backend *be;
    lt_st_set *st;               /* the source checkpoint, kept mapped (original 16-bit weights) */
    lt_bweight *embed;           /* [V, C], 16-bit / f32 */
    lt_bweight *head;            /* == embed when tied */
    float *final_norm;           /* backend f32 [C] */
    lt_layer *layers;            /* [num_layers] */
    /* LoRA */
    int32_t has_lora;
    int32_t lora_enabled;
    lt_lora_params lora;
    float lora_scale;            /* alpha/r or alpha/sqrt(r) */
    /* the graph's buffers (allocated on first use for a token budget), see graph.h */
    struct lt_graph *graph;
};

/* Weight names as Hugging Face writes them. */
void lt_layer_tensor_name(char *buf, size_t cap, int layer, const char *suffix);

/* Iterates the attached LoRA tensors in PEFT's order (layer, then q,k,v,o,gate,up,down). */
typedef void (*lt_lora_visit_fn)(lt_model *m, int layer, int proj, lt_lora_tensor *t, void *ctx);
void lt_model_foreach_lora(lt_model *m, lt_lora_visit_fn fn, void *ctx);
uint64_t lt_model_lora_numel(const lt_model *m);
#endif

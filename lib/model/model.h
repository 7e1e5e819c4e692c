/* model.h - the internal lt_model: the parsed config.json, the frozen base weights on a
 * backend, the LoRA adapter (fp32 master weights + gradients), and the source safetensors kept
 * mapped for merges and exports. The graph (forward/backward) lives in graph.h. */
#ifndef LT_MODEL_H
#define LT_MODEL_H
#include "core/core.h"
#include "backend/backend.h"
#include "io/safetensors.h"

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
} lt_config;

/* Parses config.json text (Hub style and transformers-5 style); `path` names it in errors. */
lt_status lt_config_parse(const char *json, size_t len, const char *path, lt_config *cfg);
lt_status lt_config_load(const char *dir, lt_config *cfg);

/* The seven LoRA targets, in PEFT's module names. */
enum { LT_PROJ_Q, LT_PROJ_K, LT_PROJ_V, LT_PROJ_O, LT_PROJ_GATE, LT_PROJ_UP, LT_PROJ_DOWN, LT_PROJ_COUNT };
extern const char *const lt_proj_names[LT_PROJ_COUNT];  /* "q_proj", ... */
extern const char *const lt_proj_parent[LT_PROJ_COUNT]; /* "self_attn", ..., "mlp" */

typedef struct lt_lora_tensor {
    int64_t in, out, r;          /* A [r, in], B [out, r] */
    float *A, *B;                /* backend f32 master weights (NULL when not targeted) */
    float *dA, *dB;              /* backend f32 gradients */
} lt_lora_tensor;

typedef struct lt_layer {
    float *ln1, *ln2;            /* backend f32 [C] input_layernorm, post_attention_layernorm */
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

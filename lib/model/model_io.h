/* model_io.h - internal helpers shared by the model loader (loader.c), the LoRA code (lora.c),
 * the memory estimate (memory.c) and the `info` / `init-random` commands: projection shapes,
 * parameter counts, and the check of a checkpoint's tensors against its config. */
#ifndef LT_MODEL_IO_H
#define LT_MODEL_IO_H
#include "model/model.h"

/* in / out features of projection `proj` (LT_PROJ_*) of one layer. */
void lt_proj_dims(const lt_config *cfg, int proj, int64_t *in, int64_t *out);
/* The norm weights of one layer as the checkpoint names them ("input_layernorm.weight", ...), in
 * lt_layer order, into names[]; returns their count (2, or 4 with sandwich_norm). The q/k norms
 * (qk_norm: "self_attn.q_norm.weight", "self_attn.k_norm.weight", [head_dim]) are not among them. */
int lt_layer_norm_names(const lt_config *cfg, const char *names[6]);
/* Base parameters of a config (embeddings, lm_head when untied, layers, final norm). */
uint64_t lt_config_n_params(const lt_config *cfg);
/* LoRA parameters for rank r on the targets in `mask` (LT_TARGET_*). */
uint64_t lt_config_lora_numel(const lt_config *cfg, int32_t r, uint32_t mask);
/* Checks that the checkpoint holds every tensor the config needs, with the right shape and a
 * usable dtype (F32/F16/BF16, or the bitsandbytes NF4 set when cfg->bnb_4bit). */
lt_status lt_model_check_tensors(const lt_config *cfg, const lt_st_set *st);
/* Frees the attached LoRA tensors (lora.c). */
void lt_model_lora_release(lt_model *m);
/* The dtype of a safetensors tensor as lt_dtype (F32/F16/BF16), or -1. */
int lt_st_to_lt_dtype(int st_dtype);
/* lt_model_load without uploading the frozen q..down projections (they stay NULL): for an
 * export that merges into the checkpoint's original weights, which reads those from the mapped
 * safetensors. The model cannot run forward passes. */
lt_status lt_model_load_without_projections(const char *dir, const lt_model_params *params, lt_model **out);
#endif

/* mixture.c - which ggml type each tensor gets in a GGUF of a given file type: the rules of
 * convert_hf_to_gguf.py for F32/F16/BF16/Q8_0 and of llama-quantize (llama-quant.cpp
 * llama_tensor_get_type) for the K mixtures, including its fallbacks for rows that are not a
 * multiple of 256 (specs/gguf-export.md §3, §4). */
#include "export/export.h"
#include <string.h>
#include <strings.h>

static const lt_gguf_ftype lt_ftypes[] = {
    {"f32", 0, LT_GGML_F32, 0},
    {"f16", 1, LT_GGML_F16, 0},
    {"bf16", 32, LT_GGML_BF16, 0},
    {"q8_0", 7, LT_GGML_Q8_0, 0},
    {"q4_k_s", 14, LT_GGML_Q4_K, 1},
    {"q4_k_m", 15, LT_GGML_Q4_K, 1},
    {"q5_k_m", 17, LT_GGML_Q5_K, 1},
    {"q6_k", 18, LT_GGML_Q6_K, 1},
};

lt_status lt_gguf_ftype_parse(const char *name, lt_gguf_ftype *out) {
    LT_CHECK_ARG(name && out, "GGUF: NULL quantization name");
    for (size_t i = 0; i < sizeof lt_ftypes / sizeof lt_ftypes[0]; i++)
        if (!strcasecmp(name, lt_ftypes[i].name)) {
            *out = lt_ftypes[i];
            return LT_OK;
        }
    return lt_error(LT_ERR_INVALID_ARGUMENT,
                    "unknown GGUF quantization '%s' (use f32, f16, bf16, q8_0, q4_k_m, q4_k_s, q5_k_m or q6_k)", name);
}

/* llama-quantize's use_more_bits: the first and last eighth of the layers and every third
 * layer in between get more bits. */
static int lt_use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

static int lt_fits(int type, int64_t ne0) { return ne0 % lt_ggml_block_size(type) == 0; }

int lt_gguf_tensor_type(const lt_gguf_ftype *ft, const lt_export_tensor *t, int n_layer, int has_output) {
    /* Norms, biases and vectors stay F32 in every file type. */
    if (t->ndim < 2 || t->kind == LT_XT_BIAS || t->kind == LT_XT_LN1 || t->kind == LT_XT_LN2 ||
        t->kind == LT_XT_FINAL_NORM || t->kind == LT_XT_NORM)
        return LT_GGML_F32;
    const int64_t ne0 = t->shape[1]; /* HF [out, in] -> ne = [in, out] */
    if (!ft->llama_quantize) {
        /* convert_hf_to_gguf: every 2-D weight in the out type; F16 when a row does not split into blocks */
        return lt_fits(ft->base_type, ne0) ? ft->base_type : LT_GGML_F16;
    }
    const uint32_t f = ft->file_type;
    int type = ft->base_type;
    if (t->kind == LT_XT_HEAD || (!has_output && t->kind == LT_XT_EMBED)) {
        /* the output matrix (or the tied embedding that serves as it) */
        if (!lt_fits(type, ne0)) type = LT_GGML_Q8_0;
        else type = LT_GGML_Q6_K;
    } else if (t->kind == LT_XT_PROJ && (t->proj == LT_PROJ_V || strstr(t->gguf, ".attn_qkv."))) {
        /* attn_v, and a fused attn_qkv (Phi-3): llama-quantize's tensor categories count attn_qkv as
         * attn_v (category_is_attn_v), so it takes attn_v's rule, layer by layer (checked byte for
         * byte against llama-quantize of ggml-org/llama.cpp@0c1e57098 by
         * tests/export/llamacpp_quantize_families.py). Older llama-quantize had an attn_qkv rule of
         * its own (Q5_K in every layer of Q4_K_M, Q6_K of Q5_K_M) that the categories left unreached. */
        if ((f == 15 || f == 17) && lt_use_more_bits(t->layer, n_layer)) type = LT_GGML_Q6_K;
        else if (f == 14 && t->layer < 4) type = LT_GGML_Q5_K;
    } else if (t->kind == LT_XT_PROJ && t->proj == LT_PROJ_DOWN) {
        if (f == 15 && lt_use_more_bits(t->layer, n_layer)) type = LT_GGML_Q6_K;
        else if (f == 17 && lt_use_more_bits(t->layer, n_layer)) type = LT_GGML_Q6_K;
        else if (f == 14 && t->layer < n_layer / 8) type = LT_GGML_Q5_K;
    }
    if (!lt_fits(type, ne0)) {
        switch (type) {
        case LT_GGML_Q4_K: type = LT_GGML_Q5_0; break;
        case LT_GGML_Q5_K: type = LT_GGML_Q5_1; break;
        case LT_GGML_Q6_K: type = LT_GGML_Q8_0; break;
        default: break;
        }
        if (!lt_fits(type, ne0)) type = LT_GGML_F16;
    }
    return type;
}

/* loader.c - lt_model_load: config.json + safetensors (single or sharded, 16-bit or
 * bitsandbytes NF4) into a backend. Every tensor is checked (present, shape, dtype) before
 * anything is uploaded; any failure frees everything. Also the model's accessors: info,
 * tensor names, LoRA iteration and counts. */
#include "model/model_io.h"
#include "model/graph.h"
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const lt_proj_names[LT_PROJ_COUNT] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                  "gate_proj", "up_proj", "down_proj"};
const char *const lt_proj_parent[LT_PROJ_COUNT] = {"self_attn", "self_attn", "self_attn", "self_attn",
                                                   "mlp", "mlp", "mlp"};


void lt_model_params_init(lt_model_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->device = LT_DEVICE_AUTO;
    p->device_index = 0;
    p->quant = LT_QUANT_NF4;
    p->compute_dtype = LT_DTYPE_AUTO;
    p->double_quant = 1;
    p->max_seq_len = 2048;
    p->n_threads = 0;
}

void lt_layer_tensor_name(char *buf, size_t cap, int layer, const char *suffix) {
    snprintf(buf, cap, "model.layers.%d.%s", layer, suffix);
}

const char *lt_proj_name(const lt_config *c, int p) {
    if (c->fused_qkv && p == LT_PROJ_Q) return "qkv_proj";
    if (c->fused_qkv && (p == LT_PROJ_K || p == LT_PROJ_V)) return NULL;
    if (c->fused_gate_up && p == LT_PROJ_GATE) return "gate_up_proj";
    if (c->fused_gate_up && p == LT_PROJ_UP) return NULL;
    return lt_proj_names[p];
}

uint32_t lt_proj_target_mask(const lt_config *c, int p) {
    if (c->fused_qkv && p == LT_PROJ_Q) return LT_TARGET_Q | LT_TARGET_K | LT_TARGET_V;
    if (c->fused_gate_up && p == LT_PROJ_GATE) return LT_TARGET_GATE | LT_TARGET_UP;
    if (!lt_proj_name(c, p)) return 0;
    return 1u << p;
}

void lt_proj_dims(const lt_config *c, int proj, int64_t *in, int64_t *out) {
    int64_t C = c->hidden_size, Q = (int64_t)c->num_heads * c->head_dim, KV = (int64_t)c->num_kv_heads * c->head_dim,
            I = c->intermediate_size;
    switch (proj) {
    case LT_PROJ_Q: *in = C; *out = c->fused_qkv ? Q + 2 * KV : Q; break;
    case LT_PROJ_K: case LT_PROJ_V: *in = C; *out = c->fused_qkv ? 0 : KV; break;
    case LT_PROJ_O: *in = Q; *out = C; break;
    case LT_PROJ_GATE: *in = C; *out = c->fused_gate_up ? 2 * I : I; break;
    case LT_PROJ_UP: *in = C; *out = c->fused_gate_up ? 0 : I; break;
    default: *in = I; *out = C; break;
    }
}

int lt_layer_norm_names(const lt_config *c, const char *names[6]) {
    int n = 0;
    names[n++] = "input_layernorm.weight";
    names[n++] = c->sandwich_norm ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight";
    if (c->sandwich_norm) {
        names[n++] = "post_attention_layernorm.weight";
        names[n++] = "post_feedforward_layernorm.weight";
    }
    return n;
}

uint64_t lt_config_n_params(const lt_config *c) {
    uint64_t V = (uint64_t)c->vocab_size, C = (uint64_t)c->hidden_size;
    uint64_t n = V * C * (c->tie_word_embeddings ? 1 : 2) + C;
    uint64_t layer = (c->sandwich_norm ? 4 : 2) * C + (c->qk_norm ? 2 * (uint64_t)c->head_dim : 0);
    for (int p = 0; p < LT_PROJ_COUNT; p++) {
        int64_t in, out;
        lt_proj_dims(c, p, &in, &out);
        layer += (uint64_t)in * (uint64_t)out;
        if (c->attention_bias && p <= LT_PROJ_V) layer += (uint64_t)out;
    }
    return n + layer * (uint64_t)c->num_layers;
}

uint64_t lt_config_lora_numel(const lt_config *c, int32_t r, uint32_t mask) {
    uint64_t n = 0;
    for (int p = 0; p < LT_PROJ_COUNT; p++) {
        if (!(mask & lt_proj_target_mask(c, p))) continue;
        int64_t in, out;
        lt_proj_dims(c, p, &in, &out);
        n += (uint64_t)r * (uint64_t)(in + out);
    }
    return n * (uint64_t)c->num_layers;
}

int lt_st_to_lt_dtype(int d) {
    return d == LT_ST_F32 ? LT_DTYPE_F32 : d == LT_ST_F16 ? LT_DTYPE_F16 : d == LT_ST_BF16 ? LT_DTYPE_BF16 : -1;
}

static void fmt_shape(char *buf, size_t cap, const int64_t *shape, int ndim) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && k < cap; i++) k += (size_t)snprintf(buf + k, cap - k, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

/* A float tensor of exactly `ndim` sizes `shape`. */
static lt_status check_float(const lt_st_set *st, const char *name, int ndim, const int64_t *shape,
                             const lt_st_tensor **out) {
    const lt_st_tensor *t = lt_st_find(st, name);
    if (!t)
        return lt_error(LT_ERR_NOT_FOUND, "%s: tensor '%s' is missing (is the folder complete, and does config.json "
                        "belong to these weights?)", lt_st_source(st), name);
    if (lt_st_to_lt_dtype(t->dtype) < 0)
        return lt_error(LT_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s; loratune reads F32, F16 and BF16 weights",
                        t->file, name, lt_st_dtype_name(t->dtype));
    int ok = t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = t->shape[d] == shape[d];
    if (!ok) {
        char a[96], b[96];
        fmt_shape(a, sizeof a, t->shape, t->ndim);
        fmt_shape(b, sizeof b, shape, ndim);
        return lt_error(LT_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s from config.json", t->file, name, a, b);
    }
    if (out) *out = t;
    return LT_OK;
}

/* An auxiliary tensor of a bnb-4bit weight: dtype `dt`, `numel` elements (any shape). */
static lt_status check_aux(const lt_st_set *st, const char *name, int dt, int64_t numel, const lt_st_tensor **out) {
    const lt_st_tensor *t = lt_st_find(st, name);
    if (!t)
        return lt_error(LT_ERR_NOT_FOUND, "%s: tensor '%s' of the bitsandbytes 4-bit weight is missing",
                        lt_st_source(st), name);
    if (t->dtype != dt)
        return lt_error(LT_ERR_FORMAT, "%s: tensor '%s' has dtype %s, expected %s", t->file, name,
                        lt_st_dtype_name(t->dtype), lt_st_dtype_name(dt));
    if (numel >= 0 && t->numel != numel)
        return lt_error(LT_ERR_FORMAT, "%s: tensor '%s' has %lld elements, expected %lld", t->file, name,
                        (long long)t->numel, (long long)numel);
    *out = t;
    return LT_OK;
}

/* The pieces of one bitsandbytes NF4 weight (BNB-N QuantState.as_dict(packed=True)). */
typedef struct bnb_parts {
    const lt_st_tensor *packed, *absmax, *quant_map, *nested_absmax, *nested_map;
    int double_quant;
    float nested_offset;
    int32_t dtype;         /* quant_state's dtype: what the dequantized weight is cast to */
} bnb_parts;

static lt_status check_bnb(const lt_st_set *st, const char *prefix, int64_t rows, int64_t cols, bnb_parts *bp) {
    char name[256];
    memset(bp, 0, sizeof *bp);
    const lt_st_tensor *qs = NULL;
    snprintf(name, sizeof name, "%s.weight.quant_state.bitsandbytes__nf4", prefix);
    LT_TRY(check_aux(st, name, LT_ST_U8, -1, &qs));
    json_error_t je;
    json_t *j = json_loadb((const char *)qs->data, qs->nbytes, 0, &je);
    if (!json_is_object(j)) {
        json_decref(j);
        return lt_error(LT_ERR_FORMAT, "%s: tensor '%s' is not a JSON object (%s)", qs->file, name, je.text);
    }
    lt_status s = LT_OK;
    json_t *qt = json_object_get(j, "quant_type"), *bs = json_object_get(j, "blocksize"),
           *sh = json_object_get(j, "shape"), *nb = json_object_get(j, "nested_blocksize"),
           *no = json_object_get(j, "nested_offset");
    if (!json_is_string(qt) || strcmp(json_string_value(qt), "nf4"))
        s = lt_error(LT_ERR_UNSUPPORTED, "%s: '%s' quant_type is %s; only nf4 is supported", qs->file, name,
                     json_is_string(qt) ? json_string_value(qt) : "missing");
    else if (!json_is_integer(bs) || json_integer_value(bs) != 64)
        s = lt_error(LT_ERR_UNSUPPORTED, "%s: '%s' blocksize is not 64 (the only NF4 block size loratune reads)",
                     qs->file, name);
    else if (!json_is_array(sh) || json_array_size(sh) != 2 || json_integer_value(json_array_get(sh, 0)) != rows ||
             json_integer_value(json_array_get(sh, 1)) != cols)
        s = lt_error(LT_ERR_FORMAT, "%s: '%s' shape is not [%lld,%lld] as config.json implies", qs->file, name,
                     (long long)rows, (long long)cols);
    else if (nb && (!json_is_integer(nb) || json_integer_value(nb) != 256))
        s = lt_error(LT_ERR_UNSUPPORTED, "%s: '%s' nested_blocksize is not 256", qs->file, name);
    json_t *dt = json_object_get(j, "dtype");
    const char *dts = json_is_string(dt) ? json_string_value(dt) : "bfloat16";
    bp->dtype = !strcmp(dts, "float16") ? LT_DTYPE_F16 : !strcmp(dts, "float32") ? LT_DTYPE_F32 : LT_DTYPE_BF16;
    if (s == LT_OK) {
        bp->double_quant = nb != NULL;
        bp->nested_offset = json_is_number(no) ? (float)json_number_value(no) : 0.0f;
    }
    json_decref(j);
    LT_TRY(s);
    int64_t numel = rows * cols, nblocks = (numel + 63) / 64;
    snprintf(name, sizeof name, "%s.weight", prefix);
    LT_TRY(check_aux(st, name, LT_ST_U8, (numel + 1) / 2, &bp->packed));
    snprintf(name, sizeof name, "%s.weight.absmax", prefix);
    LT_TRY(check_aux(st, name, bp->double_quant ? LT_ST_U8 : LT_ST_F32, nblocks, &bp->absmax));
    snprintf(name, sizeof name, "%s.weight.quant_map", prefix);
    LT_TRY(check_aux(st, name, LT_ST_F32, 16, &bp->quant_map));
    if (bp->double_quant) {
        snprintf(name, sizeof name, "%s.weight.nested_absmax", prefix);
        LT_TRY(check_aux(st, name, LT_ST_F32, (nblocks + 255) / 256, &bp->nested_absmax));
        snprintf(name, sizeof name, "%s.weight.nested_quant_map", prefix);
        LT_TRY(check_aux(st, name, LT_ST_F32, 256, &bp->nested_map));
    }
    return LT_OK;
}

lt_status lt_model_check_tensors(const lt_config *c, const lt_st_set *st) {
    char name[256];
    int64_t V = c->vocab_size, C = c->hidden_size;
    int64_t shp[2] = {V, C};
    LT_TRY(check_float(st, "model.embed_tokens.weight", 2, shp, NULL));
    if (!c->tie_word_embeddings) LT_TRY(check_float(st, "lm_head.weight", 2, shp, NULL));
    LT_TRY(check_float(st, "model.norm.weight", 1, &C, NULL));
    const char *norms[6];
    const int nn = lt_layer_norm_names(c, norms);
    int64_t HD = c->head_dim;
    for (int l = 0; l < c->num_layers; l++) {
        for (int k = 0; k < nn; k++) {
            lt_layer_tensor_name(name, sizeof name, l, norms[k]);
            LT_TRY(check_float(st, name, 1, &C, NULL));
        }
        if (c->qk_norm) {
            lt_layer_tensor_name(name, sizeof name, l, "self_attn.q_norm.weight");
            LT_TRY(check_float(st, name, 1, &HD, NULL));
            lt_layer_tensor_name(name, sizeof name, l, "self_attn.k_norm.weight");
            LT_TRY(check_float(st, name, 1, &HD, NULL));
        }
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            int64_t in, out;
            lt_proj_dims(c, p, &in, &out);
            if (!lt_proj_name(c, p)) continue;
            char suffix[64], prefix[200];
            snprintf(suffix, sizeof suffix, "%s.%s", lt_proj_parent[p], lt_proj_name(c, p));
            lt_layer_tensor_name(prefix, sizeof prefix, l, suffix);
            if (c->bnb_4bit) {
                bnb_parts bp;
                LT_TRY(check_bnb(st, prefix, out, in, &bp));
            } else {
                int64_t ws[2] = {out, in};
                snprintf(name, sizeof name, "%s.weight", prefix);
                LT_TRY(check_float(st, name, 2, ws, NULL));
            }
            snprintf(name, sizeof name, "%s.bias", prefix);
            if (c->attention_bias && p <= LT_PROJ_V) LT_TRY(check_float(st, name, 1, &out, NULL));
            else if (lt_st_find(st, name) && p <= LT_PROJ_V)
                return lt_error(LT_ERR_FORMAT, "%s: tensor '%s' is there but config.json does not set "
                                "attention_bias (does config.json belong to these weights?)", lt_st_source(st), name);
            else if (lt_st_find(st, name))
                return lt_error(LT_ERR_UNSUPPORTED, "%s: tensor '%s': a bias on %s is not supported (only q/k/v "
                                "biases)", lt_st_source(st), name, lt_proj_name(c, p));
        }
    }
    return LT_OK;
}

/* ---- upload ---------------------------------------------------------------------------- */

/* A copy of t's data when its address is not aligned to its element size (the CPU backend
 * reads elements directly); NULL when no copy is needed. */
static lt_status aligned_copy(const lt_st_tensor *t, const void **data, void **owned) {
    int es = lt_st_dtype_size(t->dtype);
    *owned = NULL;
    *data = t->data;
    if (((uintptr_t)t->data % (uintptr_t)es) == 0) return LT_OK;
    *owned = lt_malloc(t->nbytes ? t->nbytes : 1, t->name);
    if (!*owned) return LT_ERR_OUT_OF_MEMORY;
    memcpy(*owned, t->data, t->nbytes);
    *data = *owned;
    return LT_OK;
}

/* A weight that holds a NaN or an infinity is refused (LT_ERR_NONFINITE, naming the file and the
 * tensor): NF4 quantization would make it finite without a word, and in float it poisons every
 * loss. `data` holds the tensor's t->numel elements in t->dtype (aligned), or `f32` the same as
 * floats; it is checked just before the backend converts it, while it is in cache (the file is
 * read once). Only the exponent bits are looked at: all set is NaN or Inf. */
static lt_status check_finite_weight(const lt_st_tensor *t, const void *data, const float *f32) {
    const int64_t n = t->numel;
    const int wide = f32 || t->dtype == LT_ST_F32;
    const uint32_t *w = f32 ? (const uint32_t *)f32 : (const uint32_t *)data;
    const uint16_t *h = (const uint16_t *)data;
    const uint32_t m32 = 0x7f800000u;
    const uint16_t m16 = t->dtype == LT_ST_F16 ? 0x7c00u : 0x7f80u;
    int64_t i = 0;
    /* fixed-size blocks that the compiler vectorizes; the first bad block ends the scan */
    enum { BLK = 256 };
    for (; i + BLK <= n; i += BLK) {
        unsigned any = 0;
        if (wide) for (int k = 0; k < BLK; k++) any |= (w[i + k] & m32) == m32;
        else for (int k = 0; k < BLK; k++) any |= (h[i + k] & m16) == m16;
        if (any) break;
    }
    int64_t first = -1, bad = 0;
    double v = 0;
    for (; i < n; i++) {
        int nonfinite = wide ? (w[i] & m32) == m32 : (h[i] & m16) == m16;
        if (!nonfinite) continue;
        if (!bad++) {
            first = i;
            if (wide) { float f; memcpy(&f, &w[i], 4); v = f; }
            else v = t->dtype == LT_ST_F16 ? lt_f16_to_f32(h[i]) : lt_bf16_to_f32(h[i]);
        }
    }
    if (!bad) return LT_OK;
    int64_t cols = t->ndim == 2 ? t->shape[1] : 0;
    char where[64];
    if (cols > 0) snprintf(where, sizeof where, "[%lld, %lld]", (long long)(first / cols), (long long)(first % cols));
    else snprintf(where, sizeof where, "index %lld", (long long)first);
    return lt_error(LT_ERR_NONFINITE, "%s: tensor '%s' holds %lld non-finite value%s (the first, %g, at %s); a "
                    "model's weights must be finite (quantization would hide it): is the checkpoint damaged?",
                    t->file, t->name, (long long)bad, bad == 1 ? "" : "s", v, where);
}

static lt_status upload_f32_plus(lt_model *m, const lt_st_tensor *t, float add, float **out) {
    lt_backend *be = m->be;
    float *host = lt_malloc((size_t)t->numel * 4 + 4, t->name);
    if (!host) return LT_ERR_OUT_OF_MEMORY;
    lt_status s = lt_st_to_f32(t, host);
    if (s == LT_OK) s = check_finite_weight(t, NULL, host);
    if (s != LT_OK) { free(host); return s; }
    /* Gemma's RMSNorm multiplies by (1 + w) in float32: the frozen weight is stored that way */
    for (int64_t i = 0; add != 0.0f && i < t->numel; i++) host[i] = add + host[i];
    void *dev = NULL;
    if (s == LT_OK) s = be->ops.alloc(be, (size_t)t->numel * 4, &dev);
    if (s == LT_OK) s = be->ops.upload(be, dev, host, (size_t)t->numel * 4);
    free(host);
    if (s != LT_OK) {
        if (dev) be->ops.free(be, dev);
        return lt_error_wrap(s, "uploading %s", t->name);
    }
    *out = dev;
    return LT_OK;
}

static lt_status upload_f32(lt_model *m, const lt_st_tensor *t, float **out) {
    return upload_f32_plus(m, t, 0.0f, out);
}

/* A norm weight as the forward applies it: w, or 1 + w (norm_one_plus). */
static lt_status upload_norm(lt_model *m, const lt_st_tensor *t, float **out) {
    return upload_f32_plus(m, t, m->cfg.norm_one_plus ? 1.0f : 0.0f, out);
}

static lt_status upload_weight16(lt_model *m, const lt_st_tensor *t, int quant, lt_bweight **out) {
    lt_weight_desc d;
    memset(&d, 0, sizeof d);
    void *owned = NULL;
    LT_TRY(aligned_copy(t, &d.host, &owned));
    lt_status s = check_finite_weight(t, d.host, NULL);
    if (s != LT_OK) { free(owned); return s; }
    d.dtype = lt_st_to_lt_dtype(t->dtype);
    d.rows = t->shape[0];
    d.cols = t->shape[1];
    d.quant = quant;
    d.double_quant = m->params.double_quant;
    s = m->be->ops.weight_create(m->be, &d, out);
    free(owned);
    if (s != LT_OK) return lt_error_wrap(s, "%s: tensor '%s'", t->file, t->name);
    return LT_OK;
}

static lt_status upload_bnb(lt_model *m, const char *prefix, int64_t rows, int64_t cols, lt_bweight **out) {
    bnb_parts bp;
    LT_TRY(check_bnb(m->st, prefix, rows, cols, &bp));
    lt_weight_desc d;
    memset(&d, 0, sizeof d);
    d.host = NULL;
    d.dtype = bp.dtype;
    d.rows = rows;
    d.cols = cols;
    d.quant = LT_QUANT_NF4;
    d.double_quant = bp.double_quant;
    d.nf4_packed = bp.packed->data;
    d.nested_offset = bp.nested_offset;
    /* the float arrays are copied so that they are aligned whatever the file's layout */
    float *qmap = lt_malloc(16 * 4, "quant_map"), *absf = NULL, *nabs = NULL, *nmap = NULL;
    lt_status s = qmap ? lt_st_to_f32(bp.quant_map, qmap) : LT_ERR_OUT_OF_MEMORY;
    if (s == LT_OK && bp.double_quant) {
        nabs = lt_malloc((size_t)bp.nested_absmax->numel * 4, "nested_absmax");
        nmap = lt_malloc(256 * 4, "nested_quant_map");
        s = nabs && nmap ? lt_st_to_f32(bp.nested_absmax, nabs) : LT_ERR_OUT_OF_MEMORY;
        if (s == LT_OK) s = lt_st_to_f32(bp.nested_map, nmap);
        d.absmax_u8 = bp.absmax->data;
    } else if (s == LT_OK) {
        absf = lt_malloc((size_t)bp.absmax->numel * 4, "absmax");
        s = absf ? lt_st_to_f32(bp.absmax, absf) : LT_ERR_OUT_OF_MEMORY;
    }
    /* the 4-bit codes are indices; the scales and maps are the floats that can be NaN/Inf */
    if (s == LT_OK) s = check_finite_weight(bp.quant_map, NULL, qmap);
    if (s == LT_OK && absf) s = check_finite_weight(bp.absmax, NULL, absf);
    if (s == LT_OK && nabs) s = check_finite_weight(bp.nested_absmax, NULL, nabs);
    if (s == LT_OK && nmap) s = check_finite_weight(bp.nested_map, NULL, nmap);
    d.quant_map = qmap;
    d.absmax_f32 = absf;
    d.nested_absmax = nabs;
    d.nested_code = nmap;
    if (s == LT_OK) {
        s = m->be->ops.weight_create(m->be, &d, out);
        if (s != LT_OK) s = lt_error_wrap(s, "%s.weight (bitsandbytes NF4)", prefix);
    }
    free(qmap); free(absf); free(nabs); free(nmap);
    return s;
}

static lt_status pick_backend(lt_model *m) {
    const lt_model_params *p = &m->params;
    if (p->device == LT_DEVICE_CPU) return lt_backend_cpu_create(p->n_threads, &m->be);
    if (p->device == LT_DEVICE_CUDA) return lt_backend_cuda_create(p->device_index, p->compute_dtype, &m->be);
    if (p->device != LT_DEVICE_AUTO)
        return lt_error(LT_ERR_INVALID_ARGUMENT, "lt_model_params.device %d is not an lt_device", p->device);
    if (lt_cuda_device_count() > 0) {
        lt_status s = lt_backend_cuda_create(p->device_index, p->compute_dtype, &m->be);
        if (s == LT_OK) return LT_OK;
        LT_LOGW("CUDA backend unavailable (%s); using the CPU backend", lt_last_error());
        m->be = NULL;
    }
    return lt_backend_cpu_create(p->n_threads, &m->be);
}

static lt_status report(lt_model *m, uint64_t done, uint64_t total) {
    if (m->params.progress && m->params.progress("loading", done, total, m->params.progress_user_data))
        return lt_error(LT_STOPPED, "loading %s was cancelled by the progress callback", m->dir);
    return LT_OK;
}

/* Set by lt_model_load_unquantized_base(): the frozen projections are not uploaded (an export
 * that merges into the checkpoint's own weights never reads them). */
static _Thread_local int lt_load_skip_projections;

static lt_status load_weights(lt_model *m) {
    const lt_config *c = &m->cfg;
    lt_backend *be = m->be;
    char name[256];
    int quant = m->params.quant;
    lt_status s;
    /* report() returns LT_STOPPED (> 0), which LT_TRY would let through */
#define LT_TRY_STOP(x) do { s = (x); if (s != LT_OK) return s; } while (0)
    LT_TRY_STOP(report(m, 0, (uint64_t)c->num_layers));
    LT_TRY(upload_weight16(m, lt_st_find(m->st, "model.embed_tokens.weight"), LT_QUANT_NONE, &m->embed));
    if (c->tie_word_embeddings) m->head = m->embed;
    else LT_TRY(upload_weight16(m, lt_st_find(m->st, "lm_head.weight"), LT_QUANT_NONE, &m->head));
    LT_TRY(upload_norm(m, lt_st_find(m->st, "model.norm.weight"), &m->final_norm));
    m->layers = lt_calloc((size_t)c->num_layers, sizeof *m->layers, "the layer table");
    if (!m->layers) return LT_ERR_OUT_OF_MEMORY;
    for (int l = 0; l < c->num_layers; l++) {
        lt_layer *L = &m->layers[l];
        const char *norms[6];
        const int nn = lt_layer_norm_names(c, norms);
        float **dst[4] = {&L->ln1, &L->ln2, &L->ln_post_attn, &L->ln_post_ff};
        for (int k = 0; k < nn; k++) {
            lt_layer_tensor_name(name, sizeof name, l, norms[k]);
            LT_TRY(upload_norm(m, lt_st_find(m->st, name), dst[k]));
        }
        if (c->qk_norm) {
            lt_layer_tensor_name(name, sizeof name, l, "self_attn.q_norm.weight");
            LT_TRY(upload_norm(m, lt_st_find(m->st, name), &L->q_norm));
            lt_layer_tensor_name(name, sizeof name, l, "self_attn.k_norm.weight");
            LT_TRY(upload_norm(m, lt_st_find(m->st, name), &L->k_norm));
        }
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            int64_t in, out;
            lt_proj_dims(c, p, &in, &out);
            if (!lt_proj_name(c, p)) continue;
            char suffix[64], prefix[200];
            snprintf(suffix, sizeof suffix, "%s.%s", lt_proj_parent[p], lt_proj_name(c, p));
            lt_layer_tensor_name(prefix, sizeof prefix, l, suffix);
            if (lt_load_skip_projections && !c->bnb_4bit) {
                /* left NULL: see lt_model_load_without_projections() */
            } else if (c->bnb_4bit) {
                LT_TRY(upload_bnb(m, prefix, out, in, &L->proj[p]));
            } else {
                snprintf(name, sizeof name, "%s.weight", prefix);
                LT_TRY(upload_weight16(m, lt_st_find(m->st, name), quant, &L->proj[p]));
            }
            if (c->attention_bias && p <= LT_PROJ_V) {
                snprintf(name, sizeof name, "%s.bias", prefix);
                LT_TRY(upload_f32(m, lt_st_find(m->st, name), &L->bias[p]));
            }
            L->lora[p].in = in;
            L->lora[p].out = out;
        }
        LT_TRY_STOP(report(m, (uint64_t)l + 1, (uint64_t)c->num_layers));
    }
#undef LT_TRY_STOP
    (void)be;
    return LT_OK;
}

lt_status lt_model_load(const char *dir, const lt_model_params *params, lt_model **out) {
    LT_CHECK_ARG(dir && out, "lt_model_load: NULL %s", dir ? "out" : "dir");
    *out = NULL;
    lt_model_params p;
    lt_model_params_init(&p);
    if (params) {
        LT_CHECK_ARG(params->struct_size >= offsetof(lt_model_params, progress),
                     "lt_model_load: params->struct_size %u is too small (call lt_model_params_init)",
                     params->struct_size);
        memcpy(&p, params, params->struct_size < sizeof p ? params->struct_size : sizeof p);
        p.struct_size = sizeof p;
    }
    LT_CHECK_ARG(p.quant == LT_QUANT_NF4 || p.quant == LT_QUANT_NONE, "lt_model_load: quant %d is not an lt_quant",
                 p.quant);
    lt_model *m = lt_calloc(1, sizeof *m, "a model");
    if (!m) return LT_ERR_OUT_OF_MEMORY;
    m->params = p;
    char *rp = realpath(dir, NULL);
    m->dir = rp ? rp : lt_strdup(dir);
    lt_status s = m->dir ? LT_OK : LT_ERR_OUT_OF_MEMORY;
    if (s == LT_OK) s = lt_config_load(dir, &m->cfg);
    if (s == LT_OK) s = lt_st_open_dir(dir, &m->st);
    if (s == LT_OK) s = lt_model_check_tensors(&m->cfg, m->st);
    if (s == LT_OK) s = pick_backend(m);
    if (s == LT_OK) s = load_weights(m);
    if (s != LT_OK) {
        lt_model_free(m);
        return s;
    }
    m->lora_enabled = 1;
    LT_LOGI("loaded %s: %s, %d layers, hidden %d, on the %s backend", m->dir, m->cfg.architecture, m->cfg.num_layers,
            m->cfg.hidden_size, m->be->ops.name);
    *out = m;
    return LT_OK;
}

lt_status lt_model_load_without_projections(const char *dir, const lt_model_params *params, lt_model **out) {
    lt_load_skip_projections = 1;
    lt_status s = lt_model_load(dir, params, out);
    lt_load_skip_projections = 0;
    return s;
}

void lt_model_free(lt_model *m) {
    if (!m) return;
    lt_graph_free(m->graph); /* before the backend it lives on */
    m->graph = NULL;
    if (m->be) {
        lt_model_lora_release(m);
        lt_backend *be = m->be;
        if (m->head && m->head != m->embed) be->ops.weight_free(be, m->head);
        if (m->embed) be->ops.weight_free(be, m->embed);
        if (m->final_norm) be->ops.free(be, m->final_norm);
        for (int l = 0; m->layers && l < m->cfg.num_layers; l++) {
            lt_layer *L = &m->layers[l];
            if (L->ln1) be->ops.free(be, L->ln1);
            if (L->ln2) be->ops.free(be, L->ln2);
            float *extra[4] = {L->ln_post_attn, L->ln_post_ff, L->q_norm, L->k_norm};
            for (int k = 0; k < 4; k++)
                if (extra[k]) be->ops.free(be, extra[k]);
            for (int p = 0; p < LT_PROJ_COUNT; p++)
                if (L->proj[p]) be->ops.weight_free(be, L->proj[p]);
            for (int b = 0; b < 3; b++)
                if (L->bias[b]) be->ops.free(be, L->bias[b]);
        }
        lt_backend_free(be);
    }
    free(m->layers);
    lt_st_close(m->st);
    free(m->dir);
    free(m);
}

lt_status lt_model_get_info(const lt_model *m, lt_model_info *out) {
    LT_CHECK_ARG(m && out, "lt_model_get_info: NULL %s", m ? "out" : "model");
    uint32_t size = out->struct_size ? out->struct_size : (uint32_t)sizeof *out;
    lt_model_info i;
    memset(&i, 0, sizeof i);
    i.struct_size = (uint32_t)sizeof i;
    const lt_config *c = &m->cfg;
    snprintf(i.architecture, sizeof i.architecture, "%s", c->architecture);
    snprintf(i.model_type, sizeof i.model_type, "%s", c->model_type);
    i.vocab_size = c->vocab_size;
    i.hidden_size = c->hidden_size;
    i.intermediate_size = c->intermediate_size;
    i.num_layers = c->num_layers;
    i.num_heads = c->num_heads;
    i.num_kv_heads = c->num_kv_heads;
    i.head_dim = c->head_dim;
    i.max_position_embeddings = c->max_position_embeddings;
    i.rope_theta = c->rope_theta;
    i.rms_norm_eps = c->rms_norm_eps;
    i.tie_word_embeddings = c->tie_word_embeddings;
    i.attention_bias = c->attention_bias;
    i.device = m->be->device;
    i.compute_dtype = m->be->act_dtype;
    /* (the CPU reference honours NF4 too: it rounds the weights through NF4 at load) */
    i.quant = c->bnb_4bit ? LT_QUANT_NF4 : m->params.quant;
    i.n_params = lt_config_n_params(c);
    i.n_lora_params = lt_model_lora_numel(m);
    uint64_t wb = m->be->ops.weight_bytes(m->embed) + (uint64_t)c->hidden_size * 4;
    if (m->head != m->embed) wb += m->be->ops.weight_bytes(m->head);
    for (int l = 0; l < c->num_layers; l++) {
        wb += (c->sandwich_norm ? 4ull : 2ull) * (uint64_t)c->hidden_size * 4 + (c->qk_norm ? 8ull * c->head_dim : 0);
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            if (m->layers[l].proj[p]) wb += m->be->ops.weight_bytes(m->layers[l].proj[p]);
            if (p <= LT_PROJ_V && m->layers[l].bias[p]) wb += (uint64_t)m->layers[l].lora[p].out * 4;
        }
    }
    i.weight_bytes = wb;
    memcpy(out, &i, size < sizeof i ? size : sizeof i);
    out->struct_size = size < sizeof i ? size : (uint32_t)sizeof i;
    return LT_OK;
}

void lt_model_foreach_lora(lt_model *m, lt_lora_visit_fn fn, void *ctx) {
    if (!m || !m->layers || !m->has_lora) return;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++)
            if (m->layers[l].lora[p].A) fn(m, l, p, &m->layers[l].lora[p], ctx);
}

uint64_t lt_model_lora_numel(const lt_model *m) {
    uint64_t n = 0;
    if (!m || !m->layers || !m->has_lora) return 0;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            const lt_lora_tensor *t = &m->layers[l].lora[p];
            if (t->A) n += (uint64_t)(t->r * (t->in + t->out));
        }
    return n;
}

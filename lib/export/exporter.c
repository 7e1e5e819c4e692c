/* exporter.c - the public export API (lt_export_params_init, lt_export_format_parse,
 * lt_exporter_new / write / free), the tensor plan, and the merged weights: for every adapted
 * projection W += scale * B @ A (PEFT's merge) over either the original 16-bit weights kept
 * mapped or the dequantized NF4 weights the adapter was trained on. */
#include "export/export.h"
#include "model/model_io.h"
#include "tok/tok.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void lt_export_params_init(lt_export_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->format = LT_EXPORT_GGUF;
    p->quant = "q4_k_m";
    p->merge_base = LT_MERGE_AUTO;
    p->template_name = "alpaca-zh";
    p->write_modelfile = 1;
    p->max_shard_bytes = 5000000000ull;
}

lt_status lt_export_format_parse(const char *name, int32_t *out) {
    LT_CHECK_ARG(name && out, "lt_export_format_parse: NULL argument");
    static const struct { const char *name; int32_t v; } names[] = {
        {"peft", LT_EXPORT_PEFT}, {"adapter", LT_EXPORT_PEFT}, {"merged", LT_EXPORT_MERGED},
        {"hf", LT_EXPORT_MERGED}, {"gguf", LT_EXPORT_GGUF}, {"gguf-lora", LT_EXPORT_GGUF_LORA},
        {"gguf_lora", LT_EXPORT_GGUF_LORA},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcasecmp(name, names[i].name)) {
            *out = names[i].v;
            return LT_OK;
        }
    /* a GGUF quantization name means a GGUF export */
    lt_gguf_ftype ft;
    if (lt_gguf_ftype_parse(name, &ft) == LT_OK) {
        lt_clear_error();
        *out = LT_EXPORT_GGUF;
        return LT_OK;
    }
    return lt_error(LT_ERR_INVALID_ARGUMENT, "unknown export format '%s' (use peft, merged, gguf or gguf-lora)", name);
}

/* ---- plan -------------------------------------------------------------------------------- */
static const char *const lt_gguf_proj[LT_PROJ_COUNT] = {"attn_q", "attn_k", "attn_v", "attn_output",
                                                        "ffn_gate", "ffn_up", "ffn_down"};

static lt_export_tensor *lt_plan_push(lt_exporter *ex, int kind, int layer, int proj, int ndim, int64_t d0, int64_t d1) {
    lt_export_tensor *t = &ex->t[ex->n_t++];
    memset(t, 0, sizeof *t);
    t->kind = kind;
    t->layer = layer;
    t->proj = proj;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = ndim > 1 ? d1 : 1;
    t->numel = d0 * (ndim > 1 ? d1 : 1);
    return t;
}

lt_status lt_export_plan(lt_exporter *ex) {
    const lt_config *c = &ex->model->cfg;
    size_t cap = 3 + (size_t)c->num_layers * 16;
    ex->t = lt_calloc(cap, sizeof *ex->t, "the export plan");
    if (!ex->t) return LT_ERR_OUT_OF_MEMORY;
    int64_t V = c->vocab_size, C = c->hidden_size;
    lt_export_tensor *t = lt_plan_push(ex, LT_XT_EMBED, -1, 0, 2, V, C);
    strcpy(t->hf, "model.embed_tokens.weight");
    strcpy(t->gguf, "token_embd.weight");
    for (int l = 0; l < c->num_layers; l++) {
        t = lt_plan_push(ex, LT_XT_LN1, l, 0, 1, C, 1);
        lt_layer_tensor_name(t->hf, sizeof t->hf, l, "input_layernorm.weight");
        snprintf(t->gguf, sizeof t->gguf, "blk.%d.attn_norm.weight", l);
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            int64_t in, out;
            lt_proj_dims(c, p, &in, &out);
            if (!lt_proj_name(c, p)) continue; /* held by a fused module */
            char suffix[64];
            t = lt_plan_push(ex, LT_XT_PROJ, l, p, 2, out, in);
            snprintf(suffix, sizeof suffix, "%s.%s.weight", lt_proj_parent[p], lt_proj_name(c, p));
            lt_layer_tensor_name(t->hf, sizeof t->hf, l, suffix);
            snprintf(t->gguf, sizeof t->gguf, "blk.%d.%s.weight", l,
                     c->fused_qkv && p == LT_PROJ_Q          ? "attn_qkv"
                     : c->fused_gate_up && p == LT_PROJ_GATE ? "ffn_up" /* Phi-3: gate rows first, as llama.cpp splits it */
                                                             : lt_gguf_proj[p]);
            if (c->attention_bias && p <= LT_PROJ_V) {
                t = lt_plan_push(ex, LT_XT_BIAS, l, p, 1, out, 1);
                snprintf(suffix, sizeof suffix, "%s.%s.bias", lt_proj_parent[p], lt_proj_name(c, p));
                lt_layer_tensor_name(t->hf, sizeof t->hf, l, suffix);
                snprintf(t->gguf, sizeof t->gguf, "blk.%d.%s.bias", l, lt_gguf_proj[p]);
            }
        }
        if (c->qk_norm) {
            int64_t HD = c->head_dim;
            t = lt_plan_push(ex, LT_XT_NORM, l, 0, 1, HD, 1);
            lt_layer_tensor_name(t->hf, sizeof t->hf, l, "self_attn.q_norm.weight");
            snprintf(t->gguf, sizeof t->gguf, "blk.%d.attn_q_norm.weight", l);
            t = lt_plan_push(ex, LT_XT_NORM, l, 1, 1, HD, 1);
            lt_layer_tensor_name(t->hf, sizeof t->hf, l, "self_attn.k_norm.weight");
            snprintf(t->gguf, sizeof t->gguf, "blk.%d.attn_k_norm.weight", l);
        }
        t = lt_plan_push(ex, LT_XT_LN2, l, 0, 1, C, 1);
        lt_layer_tensor_name(t->hf, sizeof t->hf, l,
                             c->sandwich_norm ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight");
        snprintf(t->gguf, sizeof t->gguf, "blk.%d.ffn_norm.weight", l);
        if (c->sandwich_norm) {
            t = lt_plan_push(ex, LT_XT_NORM, l, 2, 1, C, 1);
            lt_layer_tensor_name(t->hf, sizeof t->hf, l, "post_attention_layernorm.weight");
            snprintf(t->gguf, sizeof t->gguf, "blk.%d.post_attention_norm.weight", l);
            t = lt_plan_push(ex, LT_XT_NORM, l, 3, 1, C, 1);
            lt_layer_tensor_name(t->hf, sizeof t->hf, l, "post_feedforward_layernorm.weight");
            snprintf(t->gguf, sizeof t->gguf, "blk.%d.post_ffw_norm.weight", l);
        }
    }
    t = lt_plan_push(ex, LT_XT_FINAL_NORM, -1, 0, 1, C, 1);
    strcpy(t->hf, "model.norm.weight");
    strcpy(t->gguf, "output_norm.weight");
    if (!c->tie_word_embeddings) {
        t = lt_plan_push(ex, LT_XT_HEAD, -1, 0, 2, V, C);
        strcpy(t->hf, "lm_head.weight");
        strcpy(t->gguf, "output.weight");
    }
    return LT_OK;
}

/* ---- merged weights ---------------------------------------------------------------------- */
lt_status lt_export_fetch_lora(lt_exporter *ex) {
    lt_model *m = ex->model;
    if (ex->lora_A || !m->has_lora) return LT_OK;
    size_t n = (size_t)m->cfg.num_layers * LT_PROJ_COUNT;
    ex->lora_A = lt_calloc(n, sizeof *ex->lora_A, "LoRA A copies");
    ex->lora_B = lt_calloc(n, sizeof *ex->lora_B, "LoRA B copies");
    if (!ex->lora_A || !ex->lora_B) return LT_ERR_OUT_OF_MEMORY;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            const lt_lora_tensor *t = &m->layers[l].lora[p];
            if (!t->A || !t->B) continue;
            size_t k = (size_t)l * LT_PROJ_COUNT + p;
            ex->lora_A[k] = lt_malloc((size_t)(t->r * t->in) * 4, "a LoRA A copy");
            ex->lora_B[k] = lt_malloc((size_t)(t->out * t->r) * 4, "a LoRA B copy");
            if (!ex->lora_A[k] || !ex->lora_B[k]) return LT_ERR_OUT_OF_MEMORY;
            LT_TRY(m->be->ops.download(m->be, ex->lora_A[k], t->A, (size_t)(t->r * t->in) * 4));
            LT_TRY(m->be->ops.download(m->be, ex->lora_B[k], t->B, (size_t)(t->out * t->r) * 4));
        }
    LT_TRY(m->be->ops.sync ? m->be->ops.sync(m->be) : LT_OK);
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            const lt_lora_tensor *t = &m->layers[l].lora[p];
            size_t k = (size_t)l * LT_PROJ_COUNT + p;
            if (!ex->lora_A[k]) continue;
            char name[128];
            snprintf(name, sizeof name, "layer %d %s.lora_A", l, lt_proj_name(&m->cfg, p));
            LT_TRY(lt_export_check_finite(name, ex->lora_A[k], t->r * t->in));
            snprintf(name, sizeof name, "layer %d %s.lora_B", l, lt_proj_name(&m->cfg, p));
            LT_TRY(lt_export_check_finite(name, ex->lora_B[k], t->out * t->r));
        }
    return LT_OK;
}

lt_status lt_export_check_finite(const char *name, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) {
            int64_t bad = 0;
            for (int64_t j = i; j < n; j++) bad += !isfinite(x[j]);
            return lt_error(LT_ERR_NONFINITE, "tensor %s holds %lld non-finite value%s (the first, %g, at index %lld); "
                            "refusing to export it (was the adapter trained into NaN, or does the base hold NaN/Inf?)",
                            name, (long long)bad, bad == 1 ? "" : "s", (double)x[i], (long long)i);
        }
    return LT_OK;
}

typedef struct {
    float *W;            /* [out, in] */
    const float *A, *B;  /* A [r, in], B [out, r] */
    int64_t in, r;
    float scale;
} lt_merge_job;

/* One output row: W[o, :] += scale * (B[o, :] @ A). The delta is summed over the rank first, as
 * PEFT's get_delta_weight computes B @ A before scaling; columns go in chunks so that the sum
 * over the rank (in rank order) vectorises across columns. */
static void lt_merge_row(void *ctx, int64_t o) {
    const lt_merge_job *j = ctx;
    float *w = j->W + o * j->in;
    const float *b = j->B + o * j->r;
    float acc[256];
    for (int64_t i0 = 0; i0 < j->in; i0 += 256) {
        int64_t m = j->in - i0 < 256 ? j->in - i0 : 256;
        for (int64_t i = 0; i < m; i++) acc[i] = 0.f;
        for (int64_t k = 0; k < j->r; k++) {
            const float bk = b[k], *a = j->A + k * j->in + i0;
            for (int64_t i = 0; i < m; i++) acc[i] += bk * a[i];
        }
        for (int64_t i = 0; i < m; i++) w[i0 + i] += j->scale * acc[i];
    }
}

int lt_export_ckpt_dtype(const lt_exporter *ex) {
    int d = ex->model->cfg.torch_dtype;
    if (d == LT_DTYPE_F32 || d == LT_DTYPE_F16 || d == LT_DTYPE_BF16) return d;
    const lt_st_tensor *t = ex->model->st ? lt_st_find(ex->model->st, "model.embed_tokens.weight") : NULL;
    int sd = t ? lt_st_to_lt_dtype(t->dtype) : -1;
    return sd > 0 ? sd : LT_DTYPE_BF16;
}

void lt_export_round_to_dtype(float *x, int64_t n, int dtype) {
    if (dtype == LT_DTYPE_BF16) {
        /* lt_f32_to_bf16 then widened, inline: round to nearest even, NaN kept quiet */
        for (int64_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, &x[i], 4);
            if ((u & 0x7fffffffu) > 0x7f800000u) u = (u & 0xffff0000u) | 0x00400000u;
            else u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
            memcpy(&x[i], &u, 4);
        }
    } else if (dtype == LT_DTYPE_F16) {
        for (int64_t i = 0; i < n; i++) x[i] = lt_f16_to_f32(lt_f32_to_f16(x[i]));
    }
}

typedef struct { const uint8_t *src; float *dst; int dtype; int64_t n, chunk; } lt_widen_job;

static void lt_widen_chunk(void *ctx, int64_t c) {
    const lt_widen_job *j = ctx;
    int64_t b = c * j->chunk, e = b + j->chunk < j->n ? b + j->chunk : j->n;
    if (j->dtype == LT_ST_BF16) {
        for (int64_t i = b; i < e; i++) {
            uint16_t h;
            memcpy(&h, j->src + 2 * i, 2);
            uint32_t u = (uint32_t)h << 16;
            memcpy(&j->dst[i], &u, 4);
        }
    } else {
        for (int64_t i = b; i < e; i++) {
            uint16_t h;
            memcpy(&h, j->src + 2 * i, 2);
            j->dst[i] = lt_f16_to_f32(h);
        }
    }
}

/* A 16-bit checkpoint tensor widened to f32 on all threads (the export's largest single pass). */
static lt_status lt_export_st_f32(const lt_st_tensor *t, float *out, int n_threads) {
    if (t->dtype != LT_ST_BF16 && t->dtype != LT_ST_F16) return lt_st_to_f32(t, out);
    lt_widen_job j = {t->data, out, t->dtype, t->numel, 1 << 16};
    lt_parallel_for((t->numel + j.chunk - 1) / j.chunk, n_threads, lt_widen_chunk, &j);
    return LT_OK;
}

/* The base values of a plan tensor before the merge. */
static lt_status lt_export_base_f32(lt_exporter *ex, const lt_export_tensor *t, float *out) {
    lt_model *m = ex->model;
    lt_backend *be = m->be;
    const lt_st_tensor *st = m->st ? lt_st_find(m->st, t->hf) : NULL;
    int st_float = st && lt_st_to_lt_dtype(st->dtype) > 0 && st->numel == t->numel;
    if (t->kind == LT_XT_PROJ && !ex->use_original) {
        const lt_bweight *w = m->layers[t->layer].proj[t->proj];
        if (!w) return lt_error(LT_ERR_STATE, "export: %s is not loaded", t->hf);
        return be->ops.weight_read(be, w, out);
    }
    if (st_float) return lt_export_st_f32(st, out, ex->n_threads);
    /* not in the checkpoint as floats (a bnb-4bit file): what the backend holds; its norm
     * weights are stored as the forward applies them, 1 + w with norm_one_plus */
    if (m->cfg.norm_one_plus && (t->kind == LT_XT_FINAL_NORM || t->kind == LT_XT_LN1 || t->kind == LT_XT_LN2)) {
        const float *src = t->kind == LT_XT_FINAL_NORM ? m->final_norm
                           : t->kind == LT_XT_LN1      ? m->layers[t->layer].ln1
                                                       : m->layers[t->layer].ln2;
        LT_TRY(be->ops.download(be, out, src, (size_t)t->numel * 4));
        for (int64_t i = 0; i < t->numel; i++) out[i] -= 1.0f;
        return LT_OK;
    }
    switch (t->kind) {
    case LT_XT_PROJ: return be->ops.weight_read(be, m->layers[t->layer].proj[t->proj], out);
    case LT_XT_EMBED: return be->ops.weight_read(be, m->embed, out);
    case LT_XT_HEAD: return be->ops.weight_read(be, m->head, out);
    case LT_XT_FINAL_NORM: return be->ops.download(be, out, m->final_norm, (size_t)t->numel * 4);
    case LT_XT_LN1: return be->ops.download(be, out, m->layers[t->layer].ln1, (size_t)t->numel * 4);
    case LT_XT_LN2: return be->ops.download(be, out, m->layers[t->layer].ln2, (size_t)t->numel * 4);
    case LT_XT_BIAS: return be->ops.download(be, out, m->layers[t->layer].bias[t->proj], (size_t)t->numel * 4);
    case LT_XT_NORM: return lt_error(LT_ERR_NOT_FOUND, "export: %s is not in the checkpoint as floats", t->hf);
    }
    return lt_error(LT_ERR_INTERNAL, "export: tensor kind %d of %s", t->kind, t->hf);
}

lt_status lt_export_merged_f32(lt_exporter *ex, const lt_export_tensor *t, float *out) {
    LT_TRY(lt_export_base_f32(ex, t, out));
    size_t k = t->kind == LT_XT_PROJ ? (size_t)t->layer * LT_PROJ_COUNT + t->proj : 0;
    if (t->kind != LT_XT_PROJ || !ex->lora_A || !ex->lora_A[k]) return lt_export_check_finite(t->hf, out, t->numel);
    const lt_lora_tensor *lt = &ex->model->layers[t->layer].lora[t->proj];
    if (lt->in != t->shape[1] || lt->out != t->shape[0])
        return lt_error(LT_ERR_STATE, "export: LoRA of %s is [%lld x %lld], the weight [%lld x %lld]", t->hf,
                        (long long)lt->out, (long long)lt->in, (long long)t->shape[0], (long long)t->shape[1]);
    lt_merge_job j = {out, ex->lora_A[k], ex->lora_B[k], lt->in, lt->r, ex->model->lora_scale};
    lt_parallel_for(t->shape[0], ex->n_threads, lt_merge_row, &j);
    return lt_export_check_finite(t->hf, out, t->numel);
}

lt_status lt_export_progress(lt_exporter *ex, uint64_t units) {
    ex->progress_done += units;
    if (ex->p.progress &&
        ex->p.progress(ex->phase ? ex->phase : "export", ex->progress_done, ex->progress_total, ex->p.progress_user_data))
        return lt_error(LT_STOPPED, "export stopped by the progress callback");
    return LT_OK;
}

lt_status lt_export_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path) return LT_OK;
    char *dir = lt_strndup(path, (size_t)(slash - path));
    if (!dir) return LT_ERR_OUT_OF_MEMORY;
    lt_status st = lt_mkdirs(dir);
    free(dir);
    return st;
}

const char *lt_export_tokenizer_dir(const lt_exporter *ex) {
    if (ex->tokenizer_dir) return ex->tokenizer_dir;
    if (ex->tok && ex->tok->dir) return ex->tok->dir; /* the folder the caller's tokenizer came from */
    return ex->model->dir;
}

/* ---- public API -------------------------------------------------------------------------- */
void lt_exporter_free(lt_exporter *ex) {
    if (!ex) return;
    if (ex->lora_A) {
        size_t n = (size_t)ex->model->cfg.num_layers * LT_PROJ_COUNT;
        for (size_t i = 0; i < n; i++) {
            free(ex->lora_A[i]);
            free(ex->lora_B[i]);
        }
    }
    free(ex->lora_A);
    free(ex->lora_B);
    free(ex->t);
    free(ex->quant);
    free(ex->template_name);
    free(ex->template_text);
    free(ex->tokenizer_dir);
    free(ex);
}

static int lt_has_original(const lt_model *m) {
    if (!m->st || m->cfg.bnb_4bit) return 0;
    char name[160];
    snprintf(name, sizeof name, "model.layers.0.%s.%s.weight", lt_proj_parent[0], lt_proj_name(&m->cfg, 0));
    const lt_st_tensor *t = lt_st_find(m->st, name);
    return t && lt_st_to_lt_dtype(t->dtype) > 0;
}

lt_status lt_exporter_new(lt_model *model, const lt_tokenizer *tok, const lt_export_params *params,
                          lt_exporter **out) {
    LT_CHECK_ARG(model && out, "lt_exporter_new: NULL %s", model ? "out" : "model");
    *out = NULL;
    lt_exporter *ex = lt_calloc(1, sizeof *ex, "an exporter");
    if (!ex) return LT_ERR_OUT_OF_MEMORY;
    lt_export_params_init(&ex->p);
    if (params) {
        if (params->struct_size < offsetof(lt_export_params, progress)) {
            free(ex);
            return lt_error(LT_ERR_INVALID_ARGUMENT,
                            "lt_exporter_new: params->struct_size %u is too small (call lt_export_params_init)",
                            params->struct_size);
        }
        memcpy(&ex->p, params, params->struct_size < sizeof ex->p ? params->struct_size : sizeof ex->p);
        ex->p.struct_size = sizeof ex->p;
    }
    ex->model = model;
    ex->tok = tok;
    lt_status s = LT_OK;
    const lt_export_params *p = &ex->p;
    if (p->format < LT_EXPORT_PEFT || p->format > LT_EXPORT_GGUF_LORA)
        s = lt_error(LT_ERR_INVALID_ARGUMENT, "lt_exporter_new: format %d is not an lt_export_format", p->format);
    if (s == LT_OK && p->n_threads < 0)
        s = lt_error(LT_ERR_INVALID_ARGUMENT, "lt_exporter_new: n_threads must be >= 0 (0 = all cores; got %d)",
                     p->n_threads);
    if (s == LT_OK && (p->overwrite != 0 && p->overwrite != 1))
        s = lt_error(LT_ERR_INVALID_ARGUMENT, "lt_exporter_new: overwrite must be 0 or 1 (got %d)", p->overwrite);
    if (s == LT_OK && (p->write_modelfile != 0 && p->write_modelfile != 1))
        s = lt_error(LT_ERR_INVALID_ARGUMENT, "lt_exporter_new: write_modelfile must be 0 or 1 (got %d)",
                     p->write_modelfile);
    if (s == LT_OK && (p->merge_base < LT_MERGE_AUTO || p->merge_base > LT_MERGE_DEQUANTIZED))
        s = lt_error(LT_ERR_INVALID_ARGUMENT, "lt_exporter_new: merge_base %d is not an lt_merge_base", p->merge_base);
    lt_gguf_ftype ft;
    if (s == LT_OK && p->format == LT_EXPORT_GGUF) s = lt_gguf_ftype_parse(p->quant ? p->quant : "q4_k_m", &ft);
    if (s == LT_OK && (p->format == LT_EXPORT_PEFT || p->format == LT_EXPORT_GGUF_LORA) && !model->has_lora)
        s = lt_error(LT_ERR_STATE, "there is no LoRA adapter to export (train one, or load one with --adapter)");
    if (s == LT_OK) {
        ex->quant = lt_strdup(p->quant ? p->quant : "q4_k_m");
        ex->template_name = lt_strdup(p->template_name ? p->template_name : "alpaca-zh");
        ex->template_text = p->template_text ? lt_strdup(p->template_text) : NULL;
        ex->tokenizer_dir = p->tokenizer_dir ? lt_strdup(p->tokenizer_dir) : NULL;
        if (!ex->quant || !ex->template_name || (p->template_text && !ex->template_text) ||
            (p->tokenizer_dir && !ex->tokenizer_dir))
            s = LT_ERR_OUT_OF_MEMORY;
        ex->p.quant = ex->quant;
        ex->p.template_name = ex->template_name;
        ex->p.template_text = ex->template_text;
        ex->p.tokenizer_dir = ex->tokenizer_dir;
    }
    if (s == LT_OK) {
        int orig = lt_has_original(model);
        if (p->merge_base == LT_MERGE_ORIGINAL && !orig)
            s = lt_error(LT_ERR_NOT_FOUND, "merge into the original weights: %s holds no 16-bit weights (a 4-bit "
                                           "checkpoint); use merge_base dequantized", model->dir ? model->dir : "the model");
        ex->use_original = p->merge_base == LT_MERGE_DEQUANTIZED ? 0 : orig;
        if (p->merge_base == LT_MERGE_AUTO && !orig)
            LT_LOGI("export: the original weights are not at hand; merging into the dequantized NF4 weights");
    }
    ex->n_threads = lt_threads(p->n_threads);
    if (s == LT_OK) s = lt_export_plan(ex);
    if (s != LT_OK) {
        lt_exporter_free(ex);
        return s;
    }
    *out = ex;
    return LT_OK;
}

static lt_status lt_exporter_dispatch(lt_exporter *ex, const char *path) {
    switch (ex->p.format) {
    case LT_EXPORT_PEFT: {
        lt_status s = lt_model_save_adapter(ex->model, path, ex->p.overwrite);
        return s == LT_OK ? s : lt_error_wrap(s, "PEFT export to %s", path);
    }
    case LT_EXPORT_MERGED: return lt_export_write_merged(ex, path);
    case LT_EXPORT_GGUF: return lt_export_write_gguf(ex, path);
    case LT_EXPORT_GGUF_LORA: return lt_export_write_gguf_lora(ex, path);
    }
    return lt_error(LT_ERR_INVALID_ARGUMENT, "lt_exporter_write: format %d", ex->p.format);
}

lt_status lt_exporter_write(lt_exporter *ex, const char *path) {
    LT_CHECK_ARG(ex && path && *path, "lt_exporter_write: NULL %s", ex ? "path" : "exporter");
    ex->progress_done = ex->progress_total = 0;
    /* temporaries of this output left by a killed export go first; folders this call creates
     * (the output's missing parents) go again when it fails */
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    char *clean = lt_strndup(path, n);
    if (!clean) return LT_ERR_OUT_OF_MEMORY;
    const char *slash = strrchr(clean, '/');
    char *parent = slash ? lt_strndup(clean, slash == clean ? 1 : (size_t)(slash - clean)) : lt_strdup(".");
    char *created = lt_fs_first_missing(clean);
    if (parent) lt_fs_clean_stale(parent, slash ? slash + 1 : clean);
    lt_status st = lt_exporter_dispatch(ex, clean);
    if (st != LT_OK && created && lt_dir_exists(created)) lt_fs_remove_tree(created);
    free(created);
    free(parent);
    free(clean);
    return st;
}

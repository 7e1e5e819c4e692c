/* gguf_export.c - the merged model as a GGUF v3 file: each family's llama.cpp architecture
 * (llama, qwen2, qwen3, gemma2, gemma3, phi3), its metadata and tokenizer keys as
 * convert_hf_to_gguf.py writes them (llama's permuted q/k rows and rope_freqs, Gemma's 1 + w
 * norms), tensors named and typed as llama.cpp expects, quantized
 * per llama-quantize's mixture rules (specs/gguf-export.md §2-§5). Each tensor goes through the
 * pipeline llama.cpp users run: merged weights rounded to the checkpoint's dtype (what a merged
 * Hugging Face checkpoint holds), widened to f32, then converted or quantized. */
#include "export/export.h"
#include "export/quant.h"
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float *x;          /* [rows, n] */
    uint8_t *out;
    int64_t n;
    size_t row_bytes;
    int type, dtype;
} lt_gguf_job;

static void lt_gguf_row(void *ctx, int64_t r) {
    const lt_gguf_job *j = ctx;
    float *x = j->x + r * j->n;
    lt_export_round_to_dtype(x, j->n, j->dtype);
    lt_quant_row(j->type, x, j->out + (size_t)r * j->row_bytes, j->n);
}

static const char *lt_basename(const char *p) {
    const char *s = strrchr(p, '/');
    return s && s[1] ? s + 1 : p;
}

/* llama.cpp's architecture of a family (the converter's model_arch): Mistral is written as llama */
const char *lt_gguf_arch(const lt_config *c) {
    switch (c->family) {
    case LT_FAMILY_QWEN2: return "qwen2";
    case LT_FAMILY_LLAMA: case LT_FAMILY_MISTRAL: return "llama";
    case LT_FAMILY_QWEN3: return "qwen3";
    case LT_FAMILY_GEMMA2: return "gemma2";
    case LT_FAMILY_GEMMA3: return "gemma3";
    case LT_FAMILY_PHI3: return "phi3";
    }
    return NULL;
}

static lt_status add_u32a(lt_gguf_writer *w, const char *arch, const char *key, uint32_t v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return lt_gguf_add_u32(w, k, v);
}
static lt_status add_f32a(lt_gguf_writer *w, const char *arch, const char *key, float v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return lt_gguf_add_f32(w, k, v);
}

/* llama3's rope_freqs.weight as the converter computes it: per frequency the factor it is
 * divided by (1 high, factor low, smoothed between) */
static void llama3_rope_factors(const lt_rope_desc *r, int32_t hd, float *out) {
    const double old = r->original_max_pos, lo = old / r->low_freq_factor, hi = old / r->high_freq_factor;
    for (int i = 0; i < hd / 2; i++) {
        const float f = 1.0f / powf((float)r->theta, (float)(2 * i) / (float)hd);
        const double wl = 2 * M_PI / (double)f;
        if (wl < hi) out[i] = 1.0f;
        else if (wl > lo) out[i] = (float)r->factor;
        else {
            const double sm = (old / wl - r->low_freq_factor) / (r->high_freq_factor - r->low_freq_factor);
            out[i] = (float)(1.0 / ((1 - sm) / r->factor + sm));
        }
    }
}

/* llama.cpp's vocabulary loader (llama-vocab.cpp, the per-token attributes it sets by model name)
 * lowercases general.name and, where it holds "phi3" or "phi-3", looks up Phi-3's </s>, <unk>, <s>
 * and <|endoftext|> with unordered_map::at: a model so named whose vocabulary lacks one of them
 * (a Phi-3 architecture with another tokenizer, or any model in a folder named so) does not load
 * ("unordered_map::at"). *missing = the first such token the vocabulary lacks, else NULL; the
 * caller then leaves general.name out (an optional key), which llama.cpp loads. */
static lt_status lt_gguf_name_loadable(lt_exporter *ex, const char *name, const char **missing) {
    *missing = NULL;
    char *low = lt_strdup(name);
    if (!low) return LT_ERR_OUT_OF_MEMORY;
    for (char *p = low; *p; p++) *p = (char)tolower((unsigned char)*p);
    const int phi3 = strstr(low, "phi3") || strstr(low, "phi-3");
    free(low);
    if (!phi3) return LT_OK;
    static const char *const need[] = {"</s>", "<unk>", "<s>", "<|endoftext|>"};
    return lt_export_vocab_missing(ex, need, sizeof need / sizeof need[0], missing);
}

static lt_status lt_gguf_metadata(lt_exporter *ex, lt_gguf_writer *w, const lt_gguf_ftype *ft) {
    const lt_config *c = &ex->model->cfg;
    const char *arch = lt_gguf_arch(c);
    LT_TRY(lt_gguf_add_str(w, "general.architecture", arch));
    LT_TRY(lt_gguf_add_str(w, "general.type", "model"));
    if (ex->model->dir) {
        const char *name = lt_basename(ex->model->dir), *missing = NULL;
        LT_TRY(lt_gguf_name_loadable(ex, name, &missing));
        if (missing)
            LT_LOGW("GGUF: general.name '%s' left out: llama.cpp looks up Phi-3's tokens </s> <unk> <s> <|endoftext|> "
                    "in a model whose name holds \"phi3\" or \"phi-3\" and does not load it without them; "
                    "%s/tokenizer.json lacks '%s'", name, lt_export_tokenizer_dir(ex), missing);
        else
            LT_TRY(lt_gguf_add_str(w, "general.name", name));
    }
    LT_TRY(add_u32a(w, arch, "block_count", (uint32_t)c->num_layers));
    LT_TRY(add_u32a(w, arch, "context_length", (uint32_t)c->max_position_embeddings));
    LT_TRY(add_u32a(w, arch, "embedding_length", (uint32_t)c->hidden_size));
    LT_TRY(add_u32a(w, arch, "feed_forward_length", (uint32_t)c->intermediate_size));
    LT_TRY(add_u32a(w, arch, "attention.head_count", (uint32_t)c->num_heads));
    LT_TRY(add_u32a(w, arch, "attention.head_count_kv", (uint32_t)c->num_kv_heads));
    if ((int64_t)c->head_dim * c->num_heads != c->hidden_size || c->family == LT_FAMILY_GEMMA2 ||
        c->family == LT_FAMILY_GEMMA3) {
        /* llama.cpp assumes head_dim = hidden / heads unless these say otherwise */
        LT_TRY(add_u32a(w, arch, "attention.key_length", (uint32_t)c->head_dim));
        LT_TRY(add_u32a(w, arch, "attention.value_length", (uint32_t)c->head_dim));
    }
    LT_TRY(add_f32a(w, arch, "rope.freq_base", (float)c->rope.theta));
    LT_TRY(add_f32a(w, arch, "attention.layer_norm_rms_epsilon", (float)c->rms_norm_eps));
    if (c->family == LT_FAMILY_LLAMA || c->family == LT_FAMILY_MISTRAL) {
        LT_TRY(add_u32a(w, arch, "vocab_size", (uint32_t)c->vocab_size));
        LT_TRY(add_u32a(w, arch, "rope.dimension_count", (uint32_t)c->head_dim));
    }
    if (c->family == LT_FAMILY_PHI3) {
        LT_TRY(add_u32a(w, arch, "rope.dimension_count", (uint32_t)c->head_dim));
        LT_TRY(add_u32a(w, arch, "rope.scaling.original_context_length", (uint32_t)c->rope.original_max_pos));
    }
    if (c->rope.kind == LT_ROPE_LINEAR || c->rope.kind == LT_ROPE_YARN) {
        char k[128];
        snprintf(k, sizeof k, "%s.rope.scaling.type", arch);
        LT_TRY(lt_gguf_add_str(w, k, c->rope.kind == LT_ROPE_LINEAR ? "linear" : "yarn"));
        LT_TRY(add_f32a(w, arch, "rope.scaling.factor", (float)c->rope.factor));
        if (c->rope.kind == LT_ROPE_YARN)
            LT_TRY(add_u32a(w, arch, "rope.scaling.original_context_length", (uint32_t)c->rope.original_max_pos));
    }
    if (c->sliding_window > 0 && (c->family == LT_FAMILY_GEMMA2 || c->family == LT_FAMILY_GEMMA3 ||
                                  c->family == LT_FAMILY_PHI3))
        LT_TRY(add_u32a(w, arch, "attention.sliding_window", (uint32_t)c->sliding_window));
    if (c->attn_softcap > 0) LT_TRY(add_f32a(w, arch, "attn_logit_softcapping", c->attn_softcap));
    if (c->final_softcap > 0) LT_TRY(add_f32a(w, arch, "final_logit_softcapping", c->final_softcap));
    LT_TRY(lt_gguf_add_u32(w, "general.file_type", ft->file_type));
    LT_TRY(lt_export_gguf_vocab(ex, w));
    LT_TRY(lt_gguf_add_u32(w, "general.quantization_version", 2));
    return LT_OK;
}

/* What the converter does to a tensor's values beyond the merge: llama's q/k rows reordered
 * for its interleaved rope (LlamaModel.permute), Gemma's norm weights stored as 1 + w. */
static lt_status lt_gguf_transform(const lt_exporter *ex, const lt_export_tensor *t, float *x) {
    const lt_config *c = &ex->model->cfg;
    if ((c->family == LT_FAMILY_GEMMA2 || c->family == LT_FAMILY_GEMMA3) &&
        (t->kind == LT_XT_LN1 || t->kind == LT_XT_LN2 || t->kind == LT_XT_FINAL_NORM || t->kind == LT_XT_NORM)) {
        for (int64_t i = 0; i < t->numel; i++) x[i] += 1.0f;
        return LT_OK;
    }
    if (!(t->kind == LT_XT_PROJ || t->kind == LT_XT_BIAS)) return LT_OK;
    return lt_gguf_permute_rows(c, t->proj, x, t->shape[0], t->ndim > 1 ? t->shape[1] : 1);
}

lt_status lt_gguf_permute_rows(const lt_config *c, int proj, float *x, int64_t rows, int64_t cols) {
    const int llama = c->family == LT_FAMILY_LLAMA || c->family == LT_FAMILY_MISTRAL;
    if (!llama || !(proj == LT_PROJ_Q || proj == LT_PROJ_K)) return LT_OK;
    const int64_t nh = proj == LT_PROJ_Q ? c->num_heads : c->num_kv_heads, hd = rows / nh, half = hd / 2;
    float *tmp = lt_malloc((size_t)(hd * cols) * sizeof(float), "a permuted head");
    if (!tmp) return LT_ERR_OUT_OF_MEMORY;
    for (int64_t h = 0; h < nh; h++) {
        float *head = x + h * hd * cols;
        memcpy(tmp, head, (size_t)(hd * cols) * sizeof(float));
        for (int64_t i = 0; i < half; i++)
            for (int64_t j = 0; j < 2; j++)
                memcpy(head + (i * 2 + j) * cols, tmp + (j * half + i) * cols, (size_t)cols * sizeof(float));
    }
    free(tmp);
    return LT_OK;
}

lt_status lt_export_write_gguf(lt_exporter *ex, const char *path) {
    const lt_config *c = &ex->model->cfg;
    if (!lt_gguf_arch(c))
        return lt_error(LT_ERR_UNSUPPORTED, "GGUF export of %s: no llama.cpp architecture for it", c->architecture);
    if (c->rope.kind != LT_ROPE_DEFAULT && c->rope.kind != LT_ROPE_LINEAR && c->rope.kind != LT_ROPE_YARN &&
        !(c->rope.kind == LT_ROPE_LLAMA3 && (c->family == LT_FAMILY_LLAMA || c->family == LT_FAMILY_MISTRAL)))
        return lt_error(LT_ERR_UNSUPPORTED, "GGUF export of %s with rope_type %d: not written yet (default, linear, "
                        "yarn, and llama3 on Llama)", c->architecture, c->rope.kind);
    lt_gguf_ftype ft;
    LT_TRY(lt_gguf_ftype_parse(ex->quant, &ft));
    if (!ex->p.overwrite && lt_file_exists(path))
        return lt_error(LT_ERR_EXISTS, "%s already exists (pass --overwrite, or overwrite=1, to replace it)", path);
    LT_TRY(lt_export_parent_dir(path));
    if (ex->p.write_modelfile) { /* refuse before the GGUF is written, not after */
        char *mf = NULL;
        LT_TRY(lt_export_modelfile_path(ex, path, &mf));
        free(mf);
    }
    lt_gguf_writer *w = NULL;
    float *buf = NULL;
    uint8_t *qbuf = NULL;
    int *types = NULL;
    size_t *index = NULL;
    lt_status st = lt_gguf_writer_new(&w);
    if (st == LT_OK) st = lt_gguf_metadata(ex, w, &ft);
    if (st == LT_OK) st = lt_export_fetch_lora(ex);
    /* tensor infos, in the order llama.cpp's converter writes them: token_embd, the blocks, then the
     * output norm and head */
    int has_output = !c->tie_word_embeddings;
    int64_t max_numel = 0;
    /* llama3 rope scaling: the converter's rope_freqs.weight (F32 [HD/2]) before the model's tensors */
    float rope_factors[LT_ROPE_MAX_HALF];
    size_t rope_index = 0;
    const int has_rope_freqs = c->rope.kind == LT_ROPE_LLAMA3;
    if (st == LT_OK && has_rope_freqs) {
        llama3_rope_factors(&c->rope, c->head_dim, rope_factors);
        int64_t ne[1] = {c->head_dim / 2};
        st = lt_gguf_add_tensor(w, "rope_freqs.weight", 1, ne, LT_GGML_F32, &rope_index);
    }
    size_t max_bytes = 0;
    types = lt_calloc(ex->n_t ? ex->n_t : 1, sizeof *types, "GGUF tensor types");
    index = lt_calloc(ex->n_t ? ex->n_t : 1, sizeof *index, "GGUF tensor indices");
    if (st == LT_OK && (!types || !index)) st = LT_ERR_OUT_OF_MEMORY;
    ex->progress_total = 0;
    for (size_t i = 0; st == LT_OK && i < ex->n_t; i++) {
        const lt_export_tensor *t = &ex->t[i];
        types[i] = lt_gguf_tensor_type(&ft, t, c->num_layers, has_output);
        int64_t ne[2] = {t->ndim > 1 ? t->shape[1] : t->shape[0], t->shape[0]};
        st = lt_gguf_add_tensor(w, t->gguf, t->ndim, ne, types[i], &index[i]);
        size_t nb = (size_t)(t->numel / ne[0]) * lt_ggml_row_size(types[i], ne[0]);
        if (t->numel > max_numel) max_numel = t->numel;
        if (nb > max_bytes) max_bytes = nb;
        ex->progress_total += (uint64_t)t->numel;
    }
    if (st == LT_OK) {
        buf = lt_malloc((size_t)max_numel * 4, "a merged tensor");
        qbuf = lt_malloc(max_bytes, "a quantized tensor");
        if (!buf || !qbuf) st = LT_ERR_OUT_OF_MEMORY;
    }
    if (st == LT_OK) st = lt_gguf_writer_begin(w, path, ex->p.overwrite);
    ex->phase = "export gguf";
    int dtype = lt_export_ckpt_dtype(ex);
    if (st == LT_OK && has_rope_freqs)
        st = lt_gguf_writer_put(w, rope_index, rope_factors, (size_t)(c->head_dim / 2) * sizeof(float));
    for (size_t i = 0; st == LT_OK && i < ex->n_t; i++) {
        const lt_export_tensor *t = &ex->t[i];
        st = lt_export_merged_f32(ex, t, buf);
        if (st == LT_OK) st = lt_gguf_transform(ex, t, buf);
        if (st != LT_OK) break;
        int64_t n = t->ndim > 1 ? t->shape[1] : t->shape[0], rows = t->numel / n;
        lt_gguf_job j = {buf, qbuf, n, lt_ggml_row_size(types[i], n), types[i], dtype};
        lt_parallel_for(rows, ex->n_threads, lt_gguf_row, &j);
        st = lt_gguf_writer_put(w, index[i], qbuf, (size_t)rows * j.row_bytes);
        if (st == LT_OK) st = lt_export_progress(ex, (uint64_t)t->numel);
    }
    if (st == LT_OK) st = lt_gguf_writer_finish(w);
    free(buf);
    free(qbuf);
    free(types);
    free(index);
    lt_gguf_writer_free(w); /* removes the temporary file after a failure */
    if (st != LT_OK) return st == LT_STOPPED ? st : lt_error_wrap(st, "GGUF export to %s", path);
    LT_LOGI("wrote %s (%s)", path, ft.name);
    if (ex->p.write_modelfile) LT_TRY(lt_export_write_modelfile(ex, path));
    return LT_OK;
}

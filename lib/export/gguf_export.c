/* gguf_export.c - the merged model as a GGUF v3 file: Qwen2 metadata and tokenizer keys as
 * convert_hf_to_gguf.py writes them, tensors named and typed as llama.cpp expects, quantized
 * per llama-quantize's mixture rules (specs/gguf-export.md §2-§5). Each tensor goes through the
 * pipeline llama.cpp users run: merged weights rounded to the checkpoint's dtype (what a merged
 * Hugging Face checkpoint holds), widened to f32, then converted or quantized. */
#include "export/export.h"
#include "export/quant.h"
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

static lt_status lt_gguf_metadata(lt_exporter *ex, lt_gguf_writer *w, const lt_gguf_ftype *ft) {
    const lt_config *c = &ex->model->cfg;
    LT_TRY(lt_gguf_add_str(w, "general.architecture", "qwen2"));
    LT_TRY(lt_gguf_add_str(w, "general.type", "model"));
    if (ex->model->dir) LT_TRY(lt_gguf_add_str(w, "general.name", lt_basename(ex->model->dir)));
    LT_TRY(lt_gguf_add_u32(w, "qwen2.block_count", (uint32_t)c->num_layers));
    LT_TRY(lt_gguf_add_u32(w, "qwen2.context_length", (uint32_t)c->max_position_embeddings));
    LT_TRY(lt_gguf_add_u32(w, "qwen2.embedding_length", (uint32_t)c->hidden_size));
    LT_TRY(lt_gguf_add_u32(w, "qwen2.feed_forward_length", (uint32_t)c->intermediate_size));
    LT_TRY(lt_gguf_add_u32(w, "qwen2.attention.head_count", (uint32_t)c->num_heads));
    LT_TRY(lt_gguf_add_u32(w, "qwen2.attention.head_count_kv", (uint32_t)c->num_kv_heads));
    if ((int64_t)c->head_dim * c->num_heads != c->hidden_size) {
        /* llama.cpp assumes head_dim = hidden / heads unless these say otherwise */
        LT_TRY(lt_gguf_add_u32(w, "qwen2.attention.key_length", (uint32_t)c->head_dim));
        LT_TRY(lt_gguf_add_u32(w, "qwen2.attention.value_length", (uint32_t)c->head_dim));
    }
    LT_TRY(lt_gguf_add_f32(w, "qwen2.rope.freq_base", (float)c->rope_theta));
    LT_TRY(lt_gguf_add_f32(w, "qwen2.attention.layer_norm_rms_epsilon", (float)c->rms_norm_eps));
    LT_TRY(lt_gguf_add_u32(w, "general.file_type", ft->file_type));
    LT_TRY(lt_export_gguf_vocab(ex, w));
    LT_TRY(lt_gguf_add_u32(w, "general.quantization_version", 2));
    return LT_OK;
}

lt_status lt_export_write_gguf(lt_exporter *ex, const char *path) {
    const lt_config *c = &ex->model->cfg;
    if (strcmp(c->model_type, "qwen2"))
        return lt_error(LT_ERR_UNSUPPORTED, "GGUF export of model_type '%s': only qwen2 is supported", c->model_type);
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
    for (size_t i = 0; st == LT_OK && i < ex->n_t; i++) {
        const lt_export_tensor *t = &ex->t[i];
        st = lt_export_merged_f32(ex, t, buf);
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

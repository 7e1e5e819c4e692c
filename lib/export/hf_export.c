/* hf_export.c - the merged model as a Hugging Face checkpoint folder: model.safetensors (or
 * model-0000K-of-0000N.safetensors shards + model.safetensors.index.json past max_shard_bytes,
 * as huggingface_hub splits them) in the checkpoint's dtype, config.json (without a
 * quantization_config: the merged weights are plain floats), generation_config.json and the
 * tokenizer files copied. The folder is built as "<dir>.tmp-<pid>-<n>/" and renamed into place
 * as one (lib/core/fs.c): it is whole or absent. */
#include "export/export.h"
#include "model/model_io.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { lt_exporter *ex; const lt_export_tensor *t; int st_dtype; float *buf; } lt_fill_ctx;

static lt_status lt_merged_fill(void *ctx, const char *name, void *out, size_t nbytes) {
    lt_fill_ctx *c = ctx;
    (void)name;
    const lt_export_tensor *t = c->t;
    size_t es = (size_t)lt_st_dtype_size(c->st_dtype);
    if (nbytes != (size_t)t->numel * es)
        return lt_error(LT_ERR_INTERNAL, "merged export: %s: %zu bytes asked, %lld elements", t->hf, nbytes,
                        (long long)t->numel);
    float *x = c->st_dtype == LT_ST_F32 ? (float *)out : c->buf;
    LT_TRY(lt_export_merged_f32(c->ex, t, x));
    if (c->st_dtype == LT_ST_BF16) {
        uint16_t *o = out;
        for (int64_t i = 0; i < t->numel; i++) o[i] = lt_f32_to_bf16(x[i]);
    } else if (c->st_dtype == LT_ST_F16) {
        uint16_t *o = out;
        for (int64_t i = 0; i < t->numel; i++) o[i] = lt_f32_to_f16(x[i]);
    }
    return lt_export_progress(c->ex, (uint64_t)t->numel);
}

/* config.json of the merged model: the source's, minus a bitsandbytes quantization_config. */
static lt_status lt_write_config(lt_exporter *ex, const char *dir, int st_dtype) {
    char *src = lt_path_join(ex->model->dir, "config.json"), *dst = lt_path_join(dir, "config.json");
    lt_status st = (src && dst) ? LT_OK : LT_ERR_OUT_OF_MEMORY;
    char *text = NULL;
    size_t len = 0;
    if (st == LT_OK) st = lt_read_file(src, &text, &len);
    if (st == LT_OK) {
        json_error_t err;
        json_t *j = json_loadb(text, len, 0, &err);
        if (!j) st = lt_error(LT_ERR_FORMAT, "%s:%d: %s", src, err.line, err.text);
        else if (json_object_get(j, "quantization_config")) {
            json_object_del(j, "quantization_config");
            const char *dt = st_dtype == LT_ST_F32 ? "float32" : st_dtype == LT_ST_F16 ? "float16" : "bfloat16";
            if (json_object_get(j, "torch_dtype")) json_object_set_new(j, "torch_dtype", json_string(dt));
            if (json_object_get(j, "dtype")) json_object_set_new(j, "dtype", json_string(dt));
            char *out = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            if (!out) st = LT_ERR_OUT_OF_MEMORY;
            else {
                st = lt_write_file_atomic(dst, out, strlen(out), 1);
                free(out);
            }
            json_decref(j);
        } else {
            json_decref(j);
            st = lt_write_file_atomic(dst, text, len, 1);
        }
    }
    free(text);
    free(src);
    free(dst);
    return st;
}

static lt_status lt_copy_file(const char *from_dir, const char *to_dir, const char *name) {
    char *src = lt_path_join(from_dir, name), *dst = lt_path_join(to_dir, name);
    lt_status st = (src && dst) ? LT_OK : LT_ERR_OUT_OF_MEMORY;
    if (st == LT_OK && lt_file_exists(src)) {
        char *text = NULL;
        size_t len = 0;
        st = lt_read_file(src, &text, &len);
        if (st == LT_OK) st = lt_write_file_atomic(dst, text, len, 1);
        free(text);
    }
    free(src);
    free(dst);
    return st;
}

static const char *const lt_tokenizer_files[] = {"tokenizer.json", "tokenizer_config.json", "vocab.json",
                                                 "merges.txt", "special_tokens_map.json", "added_tokens.json"};

lt_status lt_export_write_merged(lt_exporter *ex, const char *out_dir) {
    /* an existing folder is replaced only with overwrite, and only when it is empty or a model
     * folder (a training output with checkpoints is never swept away) */
    lt_status st = LT_OK;
    if (lt_file_exists(out_dir)) return lt_error(LT_ERR_EXISTS, "merged export: %s exists and is a file", out_dir);
    if (lt_dir_exists(out_dir) && !lt_fs_dir_is_empty(out_dir)) {
        char *cfg = lt_path_join(out_dir, "config.json");
        int is_model = cfg && lt_file_exists(cfg);
        free(cfg);
        if (!ex->p.overwrite)
            return lt_error(LT_ERR_EXISTS, "merged export: %s already exists and is not empty (pass --overwrite, or "
                            "overwrite=1, to replace it)", out_dir);
        if (!is_model)
            return lt_error(LT_ERR_EXISTS, "merged export: %s holds files but no config.json, so it is not a model "
                            "folder that overwrite may replace; choose another output folder", out_dir);
    }
    char *dir = NULL;
    st = lt_fs_dir_begin(out_dir, &dir);
    if (st != LT_OK) return lt_error_wrap(st, "merged export");
    int dt = lt_export_ckpt_dtype(ex);
    int st_dtype = dt == LT_DTYPE_F32 ? LT_ST_F32 : dt == LT_DTYPE_F16 ? LT_ST_F16 : LT_ST_BF16;
    size_t es = (size_t)lt_st_dtype_size(st_dtype);
    /* shards: a tensor goes to the next shard when it would push the current one past the limit */
    uint64_t limit = ex->p.max_shard_bytes ? ex->p.max_shard_bytes : 5000000000ull;
    int *shard = lt_calloc(ex->n_t ? ex->n_t : 1, sizeof *shard, "shard map");
    lt_fill_ctx *fc = lt_calloc(ex->n_t ? ex->n_t : 1, sizeof *fc, "fill contexts");
    if (!shard || !fc) { free(shard); free(fc); lt_fs_dir_abort(dir); return LT_ERR_OUT_OF_MEMORY; }
    int n_shards = 1;
    uint64_t cur = 0, total = 0;
    int64_t max_numel = 0;
    for (size_t i = 0; i < ex->n_t; i++) {
        uint64_t b = (uint64_t)ex->t[i].numel * es;
        if (cur && cur + b > limit) { n_shards++; cur = 0; }
        cur += b;
        total += b;
        shard[i] = n_shards - 1;
        if (ex->t[i].numel > max_numel) max_numel = ex->t[i].numel;
    }
    char **names = lt_calloc((size_t)n_shards, sizeof *names, "shard names");
    if (!names) { free(shard); free(fc); lt_fs_dir_abort(dir); return LT_ERR_OUT_OF_MEMORY; }
    for (int s = 0; s < n_shards; s++) {
        char nm[64];
        if (n_shards == 1) snprintf(nm, sizeof nm, "model.safetensors");
        else snprintf(nm, sizeof nm, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
        names[s] = lt_strdup(nm);
        if (!names[s]) st = LT_ERR_OUT_OF_MEMORY;
    }
    float *buf = NULL;
    if (st == LT_OK) st = lt_export_fetch_lora(ex);
    if (st == LT_OK && st_dtype != LT_ST_F32) {
        buf = lt_malloc((size_t)max_numel * 4, "a merged tensor");
        if (!buf) st = LT_ERR_OUT_OF_MEMORY;
    }
    ex->progress_total = 0;
    for (size_t i = 0; i < ex->n_t; i++) ex->progress_total += (uint64_t)ex->t[i].numel;
    ex->phase = "export merged";
    for (int s = 0; st == LT_OK && s < n_shards; s++) {
        lt_st_writer *w = NULL;
        st = lt_st_writer_new(&w);
        lt_st_writer_require_finite(w);
        for (size_t i = 0; st == LT_OK && i < ex->n_t; i++) {
            if (shard[i] != s) continue;
            fc[i] = (lt_fill_ctx){ex, &ex->t[i], st_dtype, buf};
            st = lt_st_writer_add_fill(w, ex->t[i].hf, st_dtype, ex->t[i].ndim, ex->t[i].shape, lt_merged_fill, &fc[i]);
        }
        char *path = lt_path_join(dir, names[s]);
        if (!path && st == LT_OK) st = LT_ERR_OUT_OF_MEMORY;
        if (st == LT_OK) st = lt_st_writer_write(w, path, 1);
        free(path);
        lt_st_writer_free(w);
    }
    if (st == LT_OK && n_shards > 1) {
        json_t *idx = json_object(), *meta = json_object(), *map = json_object();
        json_object_set_new(meta, "total_size", json_integer((json_int_t)total));
        for (size_t i = 0; i < ex->n_t; i++) json_object_set_new(map, ex->t[i].hf, json_string(names[shard[i]]));
        json_object_set_new(idx, "metadata", meta);
        json_object_set_new(idx, "weight_map", map);
        char *text = json_dumps(idx, JSON_INDENT(2) | JSON_SORT_KEYS);
        char *path = lt_path_join(dir, "model.safetensors.index.json");
        if (!text || !path) st = LT_ERR_OUT_OF_MEMORY;
        else st = lt_write_file_atomic(path, text, strlen(text), 1);
        free(text);
        free(path);
        json_decref(idx);
    }
    if (st == LT_OK) st = lt_write_config(ex, dir, st_dtype);
    if (st == LT_OK) st = lt_copy_file(ex->model->dir, dir, "generation_config.json");
    for (size_t k = 0; st == LT_OK && k < sizeof lt_tokenizer_files / sizeof lt_tokenizer_files[0]; k++)
        st = lt_copy_file(lt_export_tokenizer_dir(ex), dir, lt_tokenizer_files[k]);
    free(buf);
    for (int s = 0; s < n_shards; s++) free(names[s]);
    free(names);
    free(shard);
    free(fc);
    if (st == LT_OK) {
        st = lt_fs_dir_commit(dir, out_dir);
        return st == LT_OK ? st : lt_error_wrap(st, "merged export to %s", out_dir);
    }
    lt_fs_dir_abort(dir);
    if (st != LT_STOPPED) return lt_error_wrap(st, "merged export to %s", out_dir);
    return st;
}

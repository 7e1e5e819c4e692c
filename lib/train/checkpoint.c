/* checkpoint.c - the trainer's full state in a folder, written whole or not at all (built as
 * "<dir>.tmp-<pid>-<n>/" and renamed over <dir> as one, lib/core/fs.c):
 *   adapter_config.json + adapter_model.safetensors  the adapter as PEFT loads it
 *   optimizer.safetensors  per LoRA tensor "<layer>.<proj>.lora_<A|B>": .weight (F32, the exact
 *                          master weights), .exp_avg/.exp_avg_sq (F32) or, for 8-bit state,
 *                          .state1/.state2 (U8) and .absmax1/.absmax2 (F32)
 *   trainer_state.json     step, schedule, data cursor (epoch, position), dropout RNG position
 *                          (seed, micro-batch index), token counts, the logged loss history,
 *                          the evaluations so far ("eval": best loss and step, patience count,
 *                          history; eval.c), and with load_best_at_end the best eval's weights
 *                          as ".best" tensors in optimizer.safetensors.
 * Resuming restores all of it, so N steps + save + resume + M steps == N+M straight steps. */
#include "train/trainer_impl.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LT_CKPT_FORMAT "loratune-trainer-state"
#define LT_CKPT_VERSION 1

static void tensor_key(char *buf, size_t cap, const lt_opt_tensor *o, const char *field) {
    snprintf(buf, cap, "%d.%s.lora_%c.%s", o->layer, lt_proj_names[o->proj], o->is_b ? 'B' : 'A', field);
}

void lt_trainer_note_checkpoint(lt_trainer *tr, const char *dir) {
    char *d = lt_strdup(dir);
    if (!d) return; /* only the message's "last good checkpoint" would be missing */
    free(tr->last_checkpoint);
    tr->last_checkpoint = d;
}

/* ---- save ---- */

typedef struct host_bufs { void **p; size_t n, cap; } host_bufs;

static void *hb_alloc(host_bufs *h, size_t bytes) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? 2 * h->cap : 64;
        void **q = realloc(h->p, cap * sizeof *q);
        if (!q) return NULL;
        h->p = q;
        h->cap = cap;
    }
    void *b = lt_malloc(bytes ? bytes : 1, "checkpoint buffer");
    if (b) h->p[h->n++] = b;
    return b;
}
static void hb_free(host_bufs *h) {
    for (size_t i = 0; i < h->n; i++) free(h->p[i]);
    free(h->p);
}

/* Downloads n bytes of backend memory and adds them as a tensor. */
static lt_status add_tensor(lt_trainer *tr, lt_st_writer *w, host_bufs *h, const lt_opt_tensor *o, const char *field,
                            int dtype, const void *src, int64_t numel) {
    lt_backend *be = tr->m->be;
    size_t bytes = (size_t)numel * (size_t)lt_st_dtype_size(dtype);
    void *buf = hb_alloc(h, bytes);
    if (!buf) return LT_ERR_OUT_OF_MEMORY;
    LT_TRY(be->ops.download(be, buf, src, bytes));
    char key[128];
    tensor_key(key, sizeof key, o, field);
    int64_t shape[1] = {numel};
    return lt_st_writer_add(w, key, dtype, 1, shape, buf, 1);
}

static lt_status write_optimizer(lt_trainer *tr, const char *path) {
    lt_st_writer *w = NULL;
    LT_TRY(lt_st_writer_new(&w));
    lt_st_writer_require_finite(w);
    host_bufs h = {0};
    lt_status st = LT_OK;
    for (int i = 0; i < tr->n_tensors && st == LT_OK; i++) {
        const lt_opt_tensor *o = &tr->t[i];
        int64_t nb = (o->n + LT_BNB_BLOCK - 1) / LT_BNB_BLOCK;
        st = add_tensor(tr, w, &h, o, "weight", LT_ST_F32, o->p, o->n);
        if (st == LT_OK && o->is8bit) {
            st = add_tensor(tr, w, &h, o, "state1", LT_ST_U8, o->s1, o->n);
            if (st == LT_OK) st = add_tensor(tr, w, &h, o, "state2", LT_ST_U8, o->s2, o->n);
            if (st == LT_OK) st = add_tensor(tr, w, &h, o, "absmax1", LT_ST_F32, o->a1, nb);
            if (st == LT_OK) st = add_tensor(tr, w, &h, o, "absmax2", LT_ST_F32, o->a2, nb);
        } else if (st == LT_OK) {
            st = add_tensor(tr, w, &h, o, "exp_avg", LT_ST_F32, o->m, o->n);
            if (st == LT_OK) st = add_tensor(tr, w, &h, o, "exp_avg_sq", LT_ST_F32, o->v, o->n);
        }
    }
    if (st == LT_OK) st = lt_eval_save_best(tr, w); /* load_best_at_end's weights */
    if (st == LT_OK) st = lt_st_writer_set_metadata(w, "format", "pt");
    if (st == LT_OK) st = lt_st_writer_set_metadata(w, "loratune", "optimizer state");
    if (st == LT_OK) st = lt_st_writer_write(w, path, 1);
    lt_st_writer_free(w);
    hb_free(&h);
    return st;
}

static lt_status write_state(lt_trainer *tr, const char *path) {
    json_t *j = json_object();
    if (!j) return lt_error(LT_ERR_OUT_OF_MEMORY, "trainer state");
    json_object_set_new(j, "format", json_string(LT_CKPT_FORMAT));
    json_object_set_new(j, "version", json_integer(LT_CKPT_VERSION));
    json_object_set_new(j, "step", json_integer(tr->step));
    json_object_set_new(j, "max_steps", json_integer(tr->max_steps));
    json_object_set_new(j, "warmup_steps", json_integer(tr->warmup));
    json_object_set_new(j, "epoch", json_integer(tr->epoch));
    json_object_set_new(j, "cursor", json_integer((json_int_t)tr->cursor));
    json_object_set_new(j, "n_records", json_integer((json_int_t)tr->n_records));
    json_object_set_new(j, "records_seen", json_integer(tr->records_seen));
    json_object_set_new(j, "micro_index", json_integer(tr->micro_index));
    /* the seed as a string: JSON integers are signed 64-bit */
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)tr->p.seed);
    json_object_set_new(j, "seed", json_string(seed));
    json_object_set_new(j, "total_tokens", json_integer(tr->total_tokens));
    json_object_set_new(j, "elapsed_s", json_real(tr->elapsed_before + (lt_time_s() - tr->t_start)));
    json_object_set_new(j, "optimizer", json_string(tr->p.optimizer == LT_OPTIM_ADAMW ? "adamw_torch" : "adamw_8bit"));
    json_object_set_new(j, "scheduler", json_integer(tr->p.scheduler));
    json_object_set_new(j, "lr", json_real(tr->p.lr));
    json_object_set_new(j, "batch_size", json_integer(tr->p.batch_size));
    json_object_set_new(j, "grad_accum", json_integer(tr->p.grad_accum));
    json_object_set_new(j, "log_loss_sum", json_real(tr->log_loss_sum));
    json_object_set_new(j, "log_n", json_integer(tr->log_n));
    json_object_set_new(j, "loss_scale", json_real(tr->loss_scale));
    json_object_set_new(j, "loss_scale_good_steps", json_integer(tr->good_steps));
    json_object_set_new(j, "eval", lt_eval_state_json(tr));
    json_t *hist = json_array();
    for (size_t i = 0; i < tr->hist_n; i++) {
        json_t *pt = json_array();
        json_array_append_new(pt, json_integer(tr->hist_step[i]));
        json_array_append_new(pt, json_real(tr->hist_loss[i]));
        json_array_append_new(hist, pt);
    }
    json_object_set_new(j, "loss_history", hist);
    char *text = json_dumps(j, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
    json_decref(j);
    if (!text) return lt_error(LT_ERR_OUT_OF_MEMORY, "trainer state text");
    lt_status st = lt_write_file_atomic(path, text, strlen(text), 1);
    free(text);
    return st;
}

LT_API lt_status lt_trainer_save_checkpoint(lt_trainer *tr, const char *dir) {
    LT_CHECK_ARG(tr && dir && *dir, "lt_trainer_save_checkpoint: trainer and dir must not be NULL/empty");
    if (tr->rank != 0) return LT_OK; /* data parallel: every rank holds the same state; rank 0 writes it */
    /* a killed earlier save of this folder left its temporary beside it */
    const char *slash = strrchr(dir, '/');
    char *parent = slash ? lt_strndup(dir, slash == dir ? 1 : (size_t)(slash - dir)) : lt_strdup(".");
    if (parent) {
        lt_fs_clean_stale(parent, slash ? slash + 1 : dir);
        free(parent);
    }
    char *tmp = NULL, *opt = NULL, *state = NULL;
    lt_status st = lt_fs_dir_begin(dir, &tmp);
    if (st == LT_OK) {
        opt = lt_path_join(tmp, "optimizer.safetensors");
        state = lt_path_join(tmp, "trainer_state.json");
        if (!opt || !state) st = lt_error(LT_ERR_OUT_OF_MEMORY, "checkpoint paths");
    }
    if (st == LT_OK) st = tr->m->be->ops.sync(tr->m->be);
    if (st == LT_OK) st = lt_model_save_adapter(tr->m, tmp, 1);
    if (st == LT_OK) st = write_optimizer(tr, opt);
    if (st == LT_OK) st = write_state(tr, state);
    free(opt);
    free(state);
    if (st == LT_OK) {
        st = lt_fs_dir_commit(tmp, dir); /* replaces an older checkpoint of the same name as one */
    } else {
        lt_fs_dir_abort(tmp);
    }
    if (st != LT_OK) return lt_error_wrap(st, "saving checkpoint %s", dir);
    lt_trainer_note_checkpoint(tr, dir);
    return LT_OK;
}

/* ---- load ---- */

static lt_status load_tensor(lt_trainer *tr, const lt_st_set *set, const char *file, const lt_opt_tensor *o,
                             const char *field, int dtype, void *dst, int64_t numel) {
    char key[128];
    tensor_key(key, sizeof key, o, field);
    const lt_st_tensor *t = lt_st_find(set, key);
    if (!t) return lt_error(LT_ERR_FORMAT, "%s: tensor '%s' is missing (was the checkpoint written with another "
                            "optimizer or LoRA config?)", file, key);
    if (t->dtype != dtype || t->numel != numel)
        return lt_error(LT_ERR_FORMAT, "%s: tensor '%s' is %s with %lld elements, expected %s with %lld", file, key,
                        lt_st_dtype_name(t->dtype), (long long)t->numel, lt_st_dtype_name(dtype), (long long)numel);
    return tr->m->be->ops.upload(tr->m->be, dst, t->data, t->nbytes);
}

static int64_t jint(json_t *j, const char *key, int *missing) {
    json_t *v = json_object_get(j, key);
    if (!json_is_integer(v)) { *missing = 1; return 0; }
    return (int64_t)json_integer_value(v);
}

LT_API lt_status lt_trainer_load_checkpoint(lt_trainer *tr, const char *dir) {
    LT_CHECK_ARG(tr && dir, "lt_trainer_load_checkpoint: trainer and dir must not be NULL");
    if (!lt_dir_exists(dir)) return lt_error(LT_ERR_NOT_FOUND, "%s: no such checkpoint folder", dir);
    char *state_path = lt_path_join(dir, "trainer_state.json"), *opt_path = lt_path_join(dir, "optimizer.safetensors");
    if (!state_path || !opt_path) { free(state_path); free(opt_path); return lt_error(LT_ERR_OUT_OF_MEMORY, "paths"); }
    lt_status st = LT_OK;
    json_t *j = NULL;
    lt_st_set *set = NULL;
    char *text = NULL;
    size_t len = 0;
    st = lt_read_file(state_path, &text, &len);
    if (st == LT_OK) {
        json_error_t err;
        j = json_loadb(text, len, 0, &err);
        if (!j) st = lt_error(LT_ERR_FORMAT, "%s:%d:%d: %s", state_path, err.line, err.column, err.text);
    }
    if (st == LT_OK) {
        const char *fmt = json_string_value(json_object_get(j, "format"));
        if (!fmt || strcmp(fmt, LT_CKPT_FORMAT))
            st = lt_error(LT_ERR_FORMAT, "%s: not a loratune trainer state (format '%s')", state_path, fmt ? fmt : "");
        else if (jint(j, "version", &(int){0}) != LT_CKPT_VERSION)
            st = lt_error(LT_ERR_VERSION, "%s: trainer state version %lld, this library reads %d", state_path,
                          (long long)jint(j, "version", &(int){0}), LT_CKPT_VERSION);
    }
    int missing = 0;
    int64_t step = 0, epoch = 0, cursor = 0, n_records = 0, records_seen = 0, micro = 0, total_tokens = 0, log_n = 0;
    if (st == LT_OK) {
        step = jint(j, "step", &missing);
        epoch = jint(j, "epoch", &missing);
        cursor = jint(j, "cursor", &missing);
        n_records = jint(j, "n_records", &missing);
        records_seen = jint(j, "records_seen", &missing);
        micro = jint(j, "micro_index", &missing);
        total_tokens = jint(j, "total_tokens", &missing);
        log_n = jint(j, "log_n", &missing);
        if (missing || step < 0 || epoch < 0 || cursor < 0 || micro < 0)
            st = lt_error(LT_ERR_FORMAT, "%s: a field (step, epoch, cursor, micro_index ...) is missing or negative",
                          state_path);
        const char *opt = json_string_value(json_object_get(j, "optimizer"));
        const char *mine = tr->p.optimizer == LT_OPTIM_ADAMW ? "adamw_torch" : "adamw_8bit";
        if (st == LT_OK && (!opt || strcmp(opt, mine)))
            st = lt_error(LT_ERR_STATE, "%s: the checkpoint's optimizer is '%s' but this trainer uses '%s'; resume "
                          "with the same optimizer", state_path, opt ? opt : "?", mine);
        const char *seed = json_string_value(json_object_get(j, "seed"));
        if (st == LT_OK && seed && strtoull(seed, NULL, 10) != tr->p.seed)
            LT_LOGW("%s: the checkpoint was trained with seed %s, this trainer uses %llu: data order and dropout "
                    "follow this trainer's seed", state_path, seed, (unsigned long long)tr->p.seed);
    }
    if (st == LT_OK) st = lt_st_open_file(opt_path, &set);
    /* weights and states: validate everything before touching the trainer */
    for (int i = 0; i < tr->n_tensors && st == LT_OK; i++) {
        const lt_opt_tensor *o = &tr->t[i];
        int64_t nb = (o->n + LT_BNB_BLOCK - 1) / LT_BNB_BLOCK;
        const char *f32[] = {"weight", o->is8bit ? "absmax1" : "exp_avg", o->is8bit ? "absmax2" : "exp_avg_sq"};
        for (int k = 0; k < 3 && st == LT_OK; k++) {
            char key[128];
            tensor_key(key, sizeof key, o, f32[k]);
            const lt_st_tensor *t = lt_st_find(set, key);
            int64_t want = k == 0 || !o->is8bit ? o->n : nb;
            if (!t || t->dtype != LT_ST_F32 || t->numel != want)
                st = lt_error(LT_ERR_FORMAT, "%s: tensor '%s' is missing or not F32 with %lld elements (a checkpoint "
                              "of another LoRA config or optimizer?)", opt_path, key, (long long)want);
        }
    }
    for (int i = 0; i < tr->n_tensors && st == LT_OK; i++) {
        const lt_opt_tensor *o = &tr->t[i];
        int64_t nb = (o->n + LT_BNB_BLOCK - 1) / LT_BNB_BLOCK;
        st = load_tensor(tr, set, opt_path, o, "weight", LT_ST_F32, o->p, o->n);
        if (st == LT_OK && o->is8bit) {
            st = load_tensor(tr, set, opt_path, o, "state1", LT_ST_U8, o->s1, o->n);
            if (st == LT_OK) st = load_tensor(tr, set, opt_path, o, "state2", LT_ST_U8, o->s2, o->n);
            if (st == LT_OK) st = load_tensor(tr, set, opt_path, o, "absmax1", LT_ST_F32, o->a1, nb);
            if (st == LT_OK) st = load_tensor(tr, set, opt_path, o, "absmax2", LT_ST_F32, o->a2, nb);
        } else if (st == LT_OK) {
            st = load_tensor(tr, set, opt_path, o, "exp_avg", LT_ST_F32, o->m, o->n);
            if (st == LT_OK) st = load_tensor(tr, set, opt_path, o, "exp_avg_sq", LT_ST_F32, o->v, o->n);
        }
    }
    if (st == LT_OK) {
        if ((size_t)n_records != tr->n_records) {
            LT_LOGW("%s: the checkpoint's dataset had %lld records, this one has %zu: the data order restarts at "
                    "epoch %lld", dir, (long long)n_records, tr->n_records, (long long)epoch);
            cursor = 0;
        }
        tr->step = step;
        tr->epoch = epoch;
        tr->cursor = (size_t)cursor;
        tr->records_seen = records_seen;
        tr->micro_index = micro;
        tr->total_tokens = total_tokens;
        tr->log_n = log_n;
        json_t *ls = json_object_get(j, "log_loss_sum");
        tr->log_loss_sum = json_is_number(ls) ? json_number_value(ls) : 0;
        json_t *lsc = json_object_get(j, "loss_scale"), *gs = json_object_get(j, "loss_scale_good_steps");
        if (json_is_number(lsc) && json_number_value(lsc) > 0) tr->loss_scale = json_number_value(lsc);
        if (json_is_integer(gs)) tr->good_steps = (int64_t)json_integer_value(gs);
        json_t *el = json_object_get(j, "elapsed_s");
        tr->elapsed_before = json_is_number(el) ? json_number_value(el) : 0;
        tr->t_start = lt_time_s();
        tr->log_fresh = 0;
        lt_trainer_shuffle(tr);
        lt_trainer_note_checkpoint(tr, dir);
        tr->hist_n = 0;
        json_t *hist = json_object_get(j, "loss_history");
        size_t hi;
        json_t *pt;
        json_array_foreach(hist, hi, pt) {
            json_t *s0 = json_array_get(pt, 0), *l0 = json_array_get(pt, 1);
            if (!json_is_integer(s0) || !json_is_number(l0)) continue;
            if (tr->hist_n == tr->hist_cap) {
                size_t cap = tr->hist_cap ? tr->hist_cap * 2 : 64;
                int64_t *s = lt_realloc(tr->hist_step, cap * sizeof *s, "loss history");
                double *l = s ? lt_realloc(tr->hist_loss, cap * sizeof *l, "loss history") : NULL;
                if (s) tr->hist_step = s;
                if (!l) { st = LT_ERR_OUT_OF_MEMORY; break; }
                tr->hist_loss = l;
                tr->hist_cap = cap;
            }
            tr->hist_step[tr->hist_n] = (int64_t)json_integer_value(s0);
            tr->hist_loss[tr->hist_n] = json_number_value(l0);
            tr->hist_n++;
        }
    }
    if (st == LT_OK) st = lt_eval_state_load(tr, json_object_get(j, "eval"), set, opt_path);
    if (st == LT_OK) st = tr->m->be->ops.sync(tr->m->be);
    /* the rows logged after the checkpoint by the interrupted run are logged again from here */
    if (st == LT_OK) st = lt_report_truncate_log(tr, step);
    if (st != LT_OK) st = lt_error_wrap(st, "resuming from %s", dir);
    lt_st_close(set);
    json_decref(j);
    free(text);
    free(state_path);
    free(opt_path);
    return st;
}

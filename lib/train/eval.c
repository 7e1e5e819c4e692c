/* eval.c - evaluation during training: the eval records (lt_train_params.eval_data, else the
 * training dataset's held-out split) in passes of eval_batch_size records, forward only (no
 * gradient, no dropout, no random draws), giving the mean cross-entropy per labelled token and
 * the token accuracy; the best evaluation and its LoRA weights (host copies, for
 * load_best_at_end); early stopping on the eval loss; save_total_limit's pruning of
 * checkpoint-<step> folders; the eval state in checkpoints; the run summary. */
#include "train/trainer_impl.h"
#include "dist/dist.h"
#include "io/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

lt_status lt_eval_init(lt_trainer *tr) {
    const lt_train_params *p = &tr->p;
    tr->best_eval_loss = NAN;
    if (p->eval_data) {
        tr->eval_ds = p->eval_data;
        tr->eval_split = 0;
        tr->n_eval = lt_dataset_size(p->eval_data);
        if (tr->n_eval == 0) return lt_error(LT_ERR_DATA, "eval_data holds no records");
    } else {
        tr->eval_ds = tr->ds;
        tr->eval_split = 1;
        tr->n_eval = lt_dataset_eval_size(tr->ds);
    }
    LT_CHECK_ARG(p->eval_batch_size >= 0, "eval_batch_size must be >= 0 (got %d)", p->eval_batch_size);
    LT_CHECK_ARG(p->early_stopping_patience >= 0, "early_stopping_patience must be >= 0 (got %d)",
                 p->early_stopping_patience);
    LT_CHECK_ARG(isfinite(p->early_stopping_threshold) && p->early_stopping_threshold >= 0,
                 "early_stopping_threshold must be a finite number >= 0 (got %g)", p->early_stopping_threshold);
    LT_CHECK_ARG(p->save_total_limit >= 0, "save_total_limit must be >= 0 (got %d)", p->save_total_limit);
    const char *needs = p->early_stopping_patience > 0 ? "early_stopping_patience" : p->load_best_at_end ? "load_best_at_end" : NULL;
    if (needs && tr->n_eval == 0)
        return lt_error(LT_ERR_INVALID_ARGUMENT, "%s needs evaluation records: set eval_data, or eval_fraction > 0 "
                        "in the dataset's params", needs);
    if (needs && p->eval_every < 0)
        return lt_error(LT_ERR_INVALID_ARGUMENT, "%s needs evaluations during training, but eval_every is %d "
                        "(never): set eval_every >= 0", needs, p->eval_every);
    if (p->load_best_at_end) {
        tr->best_w = lt_calloc((size_t)tr->n_tensors, sizeof *tr->best_w, "best weights");
        if (!tr->best_w) return LT_ERR_OUT_OF_MEMORY;
        for (int i = 0; i < tr->n_tensors; i++) {
            tr->best_w[i] = lt_malloc((size_t)tr->t[i].n * sizeof(float), "best weights");
            if (!tr->best_w[i]) return LT_ERR_OUT_OF_MEMORY;
        }
    }
    return LT_OK;
}

void lt_eval_free(lt_trainer *tr) {
    for (int i = 0; tr->best_w && i < tr->n_tensors; i++) free(tr->best_w[i]);
    free(tr->best_w);
    free(tr->hist_eval_step);
    free(tr->hist_eval_loss);
}

static lt_status eval_run(lt_trainer *tr, lt_eval_result *r) {
    memset(r, 0, sizeof *r);
    r->struct_size = sizeof *r;
    size_t n = tr->n_eval;
    if (n == 0)
        return lt_error(LT_ERR_STATE, "there are no evaluation records: set lt_train_params.eval_data, or "
                        "eval_fraction > 0 in lt_dataset_params");
    double t0 = lt_time_s();
    /* a pass: eval_batch_size records, or (0) as many as fit one training pass's token budget
     * (tr->fuse_cap: batch_size x the longest training record, or the fused budget), at least one */
    size_t fixed = tr->p.eval_batch_size > 0 ? (size_t)tr->p.eval_batch_size : 0;
    int64_t cap = tr->fuse_cap > 0 ? tr->fuse_cap : 0;
    size_t *idx = lt_malloc((fixed && fixed < n ? fixed : n) * sizeof(size_t), "eval indices");
    if (!idx) return LT_ERR_OUT_OF_MEMORY;
    lt_batch b;
    memset(&b, 0, sizeof b);
    double sum = 0;
    int64_t items = 0, correct = 0;
    lt_status st = LT_OK;
    /* data parallel: the passes are dealt to the ranks and the sums added up (in rank order, so
     * every rank gets the same bits and takes the same early-stopping decision) */
    size_t world = tr->coll ? (size_t)tr->coll->world : 1, rank = tr->coll ? (size_t)tr->coll->rank : 0;
    for (size_t i = 0, pass = 0; i < n && st == LT_OK; pass++) {
        size_t k = 0;
        int64_t tokens = 0;
        while (i + k < n && st == LT_OK) {
            if (fixed && k == fixed) break;
            size_t len = 0;
            st = tr->eval_split ? lt_dataset_eval_record(tr->eval_ds, i + k, NULL, NULL, &len)
                                : lt_dataset_record(tr->eval_ds, i + k, NULL, NULL, &len);
            if (!fixed && k > 0 && tokens + (int64_t)len > cap) break;
            idx[k] = i + k;
            tokens += (int64_t)len;
            k++;
        }
        i += k;
        if (st != LT_OK || pass % world != rank) continue;
        st = lt_batch_from_dataset(&b, tr->eval_ds, idx, (int)k, tr->eval_split);
        if (st == LT_OK && b.n_targets > 0) {
            st = lt_graph_eval(tr->m, &b, &sum, &correct);
            items += b.n_targets;
        }
    }
    lt_batch_free(&b);
    free(idx);
    if (st == LT_OK && tr->coll) {
        double v[3] = {sum, (double)correct, (double)items};
        st = tr->coll->ops.allreduce_host(tr->coll, v, 3, LT_DIST_F64, "evaluation");
        sum = v[0];
        correct = (int64_t)v[1];
        items = (int64_t)v[2];
    }
    if (st != LT_OK) return lt_error_wrap(st, "evaluating %zu records", n);
    if (items == 0) return lt_error(LT_ERR_DATA, "the evaluation records carry no labelled tokens");
    r->loss = sum / (double)items;
    r->accuracy = (double)correct / (double)items;
    r->n_records = (int64_t)n;
    r->n_tokens = items;
    r->seconds = lt_time_s() - t0;
    return LT_OK;
}

LT_API lt_status lt_trainer_evaluate_v2(lt_trainer *tr, lt_eval_result *out) {
    LT_CHECK_ARG(tr && out, "lt_trainer_evaluate_v2: trainer and out must not be NULL");
    LT_CHECK_ARG(out->struct_size == 0 || out->struct_size >= sizeof(uint32_t) + sizeof(double),
                 "lt_eval_result.struct_size is %u", out->struct_size);
    lt_eval_result r;
    LT_TRY(eval_run(tr, &r));
    size_t sz = out->struct_size && out->struct_size < sizeof r ? out->struct_size : sizeof r;
    memcpy(out, &r, sz);
    out->struct_size = (uint32_t)sz;
    return LT_OK;
}

LT_API lt_status lt_trainer_evaluate(lt_trainer *tr, double *loss) {
    LT_CHECK_ARG(tr && loss, "lt_trainer_evaluate: trainer and loss must not be NULL");
    lt_eval_result r;
    LT_TRY(eval_run(tr, &r));
    *loss = r.loss;
    return LT_OK;
}

/* host copies of the LoRA weights (the trained master weights) */
static lt_status keep_best_weights(lt_trainer *tr) {
    lt_backend *be = tr->m->be;
    for (int i = 0; i < tr->n_tensors; i++)
        LT_TRY(be->ops.download(be, tr->best_w[i], tr->t[i].p, (size_t)tr->t[i].n * sizeof(float)));
    return LT_OK;
}

static lt_status eval_history_add(lt_trainer *tr, int64_t step, double loss) {
    return lt_history_push(&tr->hist_eval_step, &tr->hist_eval_loss, &tr->hist_eval_n, &tr->hist_eval_cap, step, loss,
                           "eval history");
}

int lt_eval_track(lt_trainer *tr, int64_t step, double loss) {
    /* improvement as transformers' EarlyStoppingCallback: lower than the best by more than the
     * threshold; the first evaluation is the first best */
    if (isnan(tr->best_eval_loss) || loss < tr->best_eval_loss - tr->p.early_stopping_threshold) {
        tr->best_eval_loss = loss;
        tr->best_eval_step = step;
        tr->evals_no_better = 0;
        return 1;
    }
    tr->evals_no_better++;
    if (tr->p.early_stopping_patience > 0 && tr->evals_no_better >= tr->p.early_stopping_patience &&
        step < tr->max_steps)
        tr->early_stopped = 1;
    return 0;
}

static int eval_due(const lt_trainer *tr) {
    if (tr->n_eval == 0 || tr->p.eval_every < 0) return 0;
    if (tr->step >= tr->max_steps) return 1;
    int64_t every = tr->p.eval_every > 0 ? tr->p.eval_every : tr->p.log_every;
    return every > 0 && tr->step % every == 0;
}

lt_status lt_eval_after_step(lt_trainer *tr, lt_metrics *mt) {
    mt->eval_loss = NAN;
    mt->eval_accuracy = NAN;
    if (eval_due(tr)) {
        lt_eval_result r;
        LT_TRY(eval_run(tr, &r));
        tr->n_evals++;
        mt->eval_loss = r.loss;
        mt->eval_accuracy = r.accuracy;
        LT_TRY(eval_history_add(tr, tr->step, r.loss));
        if (lt_eval_track(tr, tr->step, r.loss) && tr->best_w) LT_TRY(keep_best_weights(tr));
        if (tr->early_stopped)
            LT_LOGI("early stopping after step %lld: the eval loss has not improved on %.4f (step %lld) for %d "
                    "evaluations", (long long)tr->step, tr->best_eval_loss, (long long)tr->best_eval_step,
                    tr->evals_no_better);
    }
    mt->best_eval_loss = tr->best_eval_loss;
    mt->best_eval_step = tr->best_eval_step;
    mt->early_stop = tr->early_stopped;
    return LT_OK;
}

lt_status lt_eval_finish(lt_trainer *tr) {
    if (!tr->best_w || tr->best_loaded || tr->best_eval_step <= 0) return LT_OK;
    lt_backend *be = tr->m->be;
    if (tr->best_eval_step != tr->step)
        for (int i = 0; i < tr->n_tensors; i++)
            LT_TRY(be->ops.upload(be, tr->t[i].p, tr->best_w[i], (size_t)tr->t[i].n * sizeof(float)));
    LT_TRY(be->ops.sync(be));
    tr->best_loaded = 1;
    LT_LOGI("load_best_at_end: the LoRA weights are those of step %lld (eval loss %.4f)", (long long)tr->best_eval_step,
            tr->best_eval_loss);
    return LT_OK;
}

/* ---- save_total_limit ---- */

/* Removes a folder and what it holds (a checkpoint: plain files, maybe one level of folders). */
static int remove_tree(const char *dir, int depth) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = lt_path_join(dir, e->d_name);
        if (!p) { rc = -1; break; }
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode)) rc |= depth < 4 ? remove_tree(p, depth + 1) : -1;
        else if (unlink(p) != 0) rc = -1;
        free(p);
    }
    closedir(d);
    if (rmdir(dir) != 0) rc = -1;
    return rc;
}

/* step of a "checkpoint-<digits>" name, or -1 */
static int64_t checkpoint_step(const char *name) {
    static const char pre[] = "checkpoint-";
    if (strncmp(name, pre, sizeof pre - 1)) return -1;
    const char *s = name + sizeof pre - 1;
    if (!*s) return -1;
    int64_t v = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > INT64_MAX / 10 - 10) return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

static int cmp_i64_desc(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x > y ? -1 : x < y;
}

lt_status lt_checkpoints_prune(lt_trainer *tr) {
    int32_t limit = tr->p.save_total_limit;
    if (limit <= 0 || !tr->output_dir || (tr->p.world_size > 1 && tr->p.rank != 0)) return LT_OK; /* rank 0 writes */
    DIR *d = opendir(tr->output_dir);
    if (!d) return lt_error(LT_ERR_IO, "%s: cannot list checkpoints: %s", tr->output_dir, strerror(errno));
    int64_t *steps = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    lt_status st = LT_OK;
    while ((e = readdir(d))) {
        int64_t s = checkpoint_step(e->d_name);
        if (s < 0) continue;
        char *p = lt_path_join(tr->output_dir, e->d_name);
        struct stat sb;
        int is_dir = p && stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
        free(p);
        if (!is_dir) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *q = lt_realloc(steps, cap * sizeof *q, "checkpoint list");
            if (!q) { st = LT_ERR_OUT_OF_MEMORY; break; }
            steps = q;
        }
        steps[n++] = s;
    }
    closedir(d);
    if (st != LT_OK) { free(steps); return st; }
    qsort(steps, n, sizeof *steps, cmp_i64_desc);
    /* keep the newest `limit`, the best evaluation's among them when load_best_at_end */
    int64_t keep_best = tr->p.load_best_at_end && tr->best_eval_step > 0 ? tr->best_eval_step : -1;
    int have_best = 0;
    for (size_t i = 0; i < n; i++) have_best |= steps[i] == keep_best;
    size_t kept = have_best ? 1 : 0;
    for (size_t i = 0; i < n; i++) {
        if (steps[i] == keep_best) continue;
        if (kept < (size_t)limit) { kept++; continue; }
        char name[64];
        snprintf(name, sizeof name, "checkpoint-%lld", (long long)steps[i]);
        char *p = lt_path_join(tr->output_dir, name);
        if (!p) { st = LT_ERR_OUT_OF_MEMORY; break; }
        if (remove_tree(p, 0) != 0) LT_LOGW("save_total_limit: could not remove all of %s: %s", p, strerror(errno));
        else LT_LOGD("save_total_limit: removed %s", p);
        free(p);
    }
    free(steps);
    return st;
}

/* ---- summary ---- */

LT_API lt_status lt_trainer_get_summary(const lt_trainer *tr, lt_train_summary *out) {
    LT_CHECK_ARG(tr && out, "lt_trainer_get_summary: trainer and out must not be NULL");
    LT_CHECK_ARG(out->struct_size == 0 || out->struct_size >= sizeof(uint32_t) + sizeof(int64_t),
                 "lt_train_summary.struct_size is %u", out->struct_size);
    lt_train_summary s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    s.steps = tr->step;
    s.max_steps = tr->max_steps;
    s.steps_run = tr->steps_run;
    s.total_tokens = tr->total_tokens;
    s.records_seen = tr->records_seen;
    s.elapsed_s = tr->elapsed_before + (lt_time_s() - tr->t_start);
    s.tokens_per_s = s.elapsed_s > 0 ? (double)s.total_tokens / s.elapsed_s : 0;
    s.mean_loss = tr->steps_run > 0 ? tr->run_loss_sum / (double)tr->steps_run : NAN;
    s.last_loss = tr->steps_run > 0 ? tr->last_loss : NAN;
    s.best_eval_loss = tr->best_eval_loss;
    s.best_eval_step = tr->best_eval_step;
    s.n_evals = tr->n_evals;
    s.early_stopped = tr->early_stopped;
    s.best_loaded = tr->best_loaded;
    size_t sz = out->struct_size && out->struct_size < sizeof s ? out->struct_size : sizeof s;
    memcpy(out, &s, sz);
    out->struct_size = (uint32_t)sz;
    return LT_OK;
}

/* ---- the eval state in checkpoints (trainer_state.json "eval", optimizer.safetensors "*.best") ---- */

static void best_key(char *buf, size_t cap, const lt_opt_tensor *o) {
    snprintf(buf, cap, "%d.%s.lora_%c.best", o->layer, lt_proj_names[o->proj], o->is_b ? 'B' : 'A');
}

json_t *lt_eval_state_json(const lt_trainer *tr) {
    json_t *e = json_object();
    if (!e) return NULL;
    json_object_set_new(e, "n_evals", json_integer(tr->n_evals));
    json_object_set_new(e, "best_loss", isnan(tr->best_eval_loss) ? json_null() : json_real(tr->best_eval_loss));
    json_object_set_new(e, "best_step", json_integer(tr->best_eval_step));
    json_object_set_new(e, "evals_no_better", json_integer(tr->evals_no_better));
    json_object_set_new(e, "early_stopped", json_boolean(tr->early_stopped));
    json_object_set_new(e, "best_weights", json_boolean(tr->best_w && tr->best_eval_step > 0));
    json_t *hist = json_array();
    for (size_t i = 0; i < tr->hist_eval_n; i++) {
        json_t *pt = json_array();
        json_array_append_new(pt, json_integer(tr->hist_eval_step[i]));
        json_array_append_new(pt, json_real(tr->hist_eval_loss[i]));
        json_array_append_new(hist, pt);
    }
    json_object_set_new(e, "history", hist);
    return e;
}

lt_status lt_eval_save_best(const lt_trainer *tr, lt_st_writer *w) {
    if (!tr->best_w || tr->best_eval_step <= 0) return LT_OK;
    for (int i = 0; i < tr->n_tensors; i++) {
        char key[128];
        best_key(key, sizeof key, &tr->t[i]);
        int64_t shape[1] = {tr->t[i].n};
        LT_TRY(lt_st_writer_add(w, key, LT_ST_F32, 1, shape, tr->best_w[i], 1));
    }
    return LT_OK;
}

lt_status lt_eval_state_load(lt_trainer *tr, json_t *e, const lt_st_set *set, const char *file) {
    if (!json_is_object(e)) return LT_OK; /* a checkpoint without evaluations */
    json_t *bl = json_object_get(e, "best_loss");
    int64_t best_step = json_integer_value(json_object_get(e, "best_step"));
    int has_w = json_is_true(json_object_get(e, "best_weights"));
    if (tr->best_w && best_step > 0) {
        if (!has_w)
            return lt_error(LT_ERR_STATE, "%s: load_best_at_end is set but the checkpoint holds no best-eval weights "
                            "(it was written without load_best_at_end); resume without it", file);
        for (int i = 0; i < tr->n_tensors; i++) {
            char key[128];
            best_key(key, sizeof key, &tr->t[i]);
            const lt_st_tensor *t = lt_st_find(set, key);
            if (!t || t->dtype != LT_ST_F32 || t->numel != tr->t[i].n)
                return lt_error(LT_ERR_FORMAT, "%s: tensor '%s' is missing or not F32 with %lld elements", file, key,
                                (long long)tr->t[i].n);
            memcpy(tr->best_w[i], t->data, (size_t)t->numel * sizeof(float));
        }
    }
    tr->n_evals = (int32_t)json_integer_value(json_object_get(e, "n_evals"));
    tr->best_eval_loss = json_is_number(bl) ? json_number_value(bl) : NAN;
    tr->best_eval_step = best_step;
    tr->evals_no_better = (int32_t)json_integer_value(json_object_get(e, "evals_no_better"));
    tr->early_stopped = json_is_true(json_object_get(e, "early_stopped"));
    tr->hist_eval_n = 0;
    size_t i;
    json_t *pt;
    json_array_foreach(json_object_get(e, "history"), i, pt) {
        json_t *s0 = json_array_get(pt, 0), *l0 = json_array_get(pt, 1);
        if (json_is_integer(s0) && json_is_number(l0))
            LT_TRY(eval_history_add(tr, (int64_t)json_integer_value(s0), json_number_value(l0)));
    }
    return LT_OK;
}

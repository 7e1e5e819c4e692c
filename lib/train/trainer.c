/* trainer.c - the step-driven training loop: data order and cursor, gradient accumulation with
 * the window-wide token count (transformers >= 5.17: sum of CE over the window / shifted labels
 * in the window), global-norm clipping, AdamW (torch) or 8-bit AdamW (bitsandbytes), the
 * schedule, metrics, the step callback. Checkpoints are in checkpoint.c, evaluation in eval.c. */
#include "train/trainer_impl.h"
#include "dist/dist.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- tensors and optimizer state ---- */

static void free_state(lt_backend *be, lt_opt_tensor *t) {
    void *bufs[] = {t->m, t->v, t->s1, t->s2, t->a1, t->a2};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) be->ops.free(be, bufs[i]);
    t->m = t->v = t->a1 = t->a2 = NULL;
    t->s1 = t->s2 = NULL;
}

lt_status lt_trainer_bind_tensors(lt_trainer *tr) {
    lt_model *m = tr->m;
    lt_backend *be = m->be;
    int n = 0;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++)
            if (m->layers[l].lora[p].A) n += 2;
    if (n == 0) return lt_error(LT_ERR_STATE, "the model's LoRA adapter has no tensors: attach one with "
                                "lt_model_add_lora before creating a trainer");
    lt_opt_tensor *t = lt_calloc((size_t)n, sizeof *t, "optimizer tensors");
    if (!t) return LT_ERR_OUT_OF_MEMORY;
    tr->t = t;
    tr->n_tensors = n;
    tr->grad = lt_calloc((size_t)n, sizeof *tr->grad, "gradient pointers");
    tr->grad_n = lt_calloc((size_t)n, sizeof *tr->grad_n, "gradient sizes");
    tr->grad_bytes = lt_calloc((size_t)n, sizeof *tr->grad_bytes, "gradient sizes");
    if (!tr->grad || !tr->grad_n || !tr->grad_bytes) return LT_ERR_OUT_OF_MEMORY;
    int k = 0;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            lt_lora_tensor *lt = &m->layers[l].lora[p];
            if (!lt->A) continue;
            for (int b = 0; b < 2; b++, k++) {
                lt_opt_tensor *o = &t[k];
                o->layer = l; o->proj = p; o->is_b = b;
                o->n = b ? lt->out * lt->r : lt->r * lt->in;
                o->p = b ? lt->B : lt->A;
                o->g = b ? lt->dB : lt->dA;
                if (!o->g)
                    return lt_error(LT_ERR_STATE, "layer %d %s lora_%c has no gradient buffer (an adapter loaded "
                                    "for inference?)", l, lt_proj_names[p], b ? 'B' : 'A');
                tr->grad[k] = o->g;
                tr->grad_n[k] = o->n;
                tr->grad_bytes[k] = (size_t)o->n * 4;
                o->is8bit = tr->p.optimizer == LT_OPTIM_ADAMW_8BIT && o->n >= LT_BNB_MIN_8BIT_SIZE;
                size_t nb = (size_t)((o->n + LT_BNB_BLOCK - 1) / LT_BNB_BLOCK);
                lt_status st;
                if (o->is8bit) {
                    st = be->ops.alloc(be, (size_t)o->n, (void **)&o->s1);
                    if (st == LT_OK) st = be->ops.alloc(be, (size_t)o->n, (void **)&o->s2);
                    if (st == LT_OK) st = be->ops.alloc(be, nb * 4, (void **)&o->a1);
                    if (st == LT_OK) st = be->ops.alloc(be, nb * 4, (void **)&o->a2);
                } else {
                    st = be->ops.alloc(be, (size_t)o->n * 4, (void **)&o->m);
                    if (st == LT_OK) st = be->ops.alloc(be, (size_t)o->n * 4, (void **)&o->v);
                }
                if (st != LT_OK) return lt_error_wrap(st, "allocating the optimizer state");
            }
        }
    return LT_OK;
}

void lt_trainer_shuffle(lt_trainer *tr) {
    lt_dataset_permutation(tr->n_records, tr->p.seed, tr->epoch, tr->perm);
}

/* ---- token-budget buckets ---- */

static int ceil_log2(int64_t v) {
    int k = 0;
    while (k < 62 && ((int64_t)1 << k) < v) k++;
    return k;
}

/* the largest of 128 and the power of two at most n/8 */
static int64_t bucket_granule(int64_t n) {
    int64_t g = 128;
    while (g * 16 <= n) g *= 2;
    return g;
}

int64_t lt_bucket_tokens(int64_t n, int64_t cap) {
    if (n <= 0 || n >= cap) return n;
    const int64_t g = bucket_granule(n), b = (n + g - 1) / g * g;
    return b < cap ? b : cap;
}

/* Buckets for passes of at most tr->fuse_cap tokens and records of at most max_len: every
 * padded pass gets max_seqlen max_len (the attention's launch shape) and as many sequences as
 * the most records a pass holds plus the dummy ones the largest padding needs. Off where the
 * rotary embedding depends on the longest sequence (dynamic NTK beyond max_pos). */
static void bucket_setup(lt_trainer *tr, int64_t max_len) {
    const lt_rope_desc *ropes[2] = {&tr->m->cfg.rope, &tr->m->cfg.rope_local};
    for (int i = 0; i < 2; i++)
        if (ropes[i]->kind == LT_ROPE_DYNAMIC && max_len > ropes[i]->max_pos) return;
    const int fusing = tr->p.fuse_micro_batches && tr->n_micro > 1;
    const int64_t records = (int64_t)tr->p.batch_size * (fusing ? tr->n_micro : 1);
    const int64_t segs = (bucket_granule(tr->fuse_cap) - 1 + max_len - 1) / max_len;
    if (max_len <= 0 || max_len > INT32_MAX || records + segs > INT32_MAX) return;
    tr->bucket = 1;
    tr->bucket_seg = (int32_t)max_len;
    tr->bucket_nseq = (int32_t)(records + segs);
    /* a fixed power of two at or above any window's labelled tokens: one gradient scale */
    tr->bucket_exp = ceil_log2((int64_t)tr->n_micro * tr->p.batch_size * max_len);
}

/* ---- create / free ---- */

LT_API lt_status lt_trainer_new(lt_model *model, lt_dataset *ds, const lt_train_params *params, lt_trainer **out) {
    LT_CHECK_ARG(model && ds && out, "lt_trainer_new: model, dataset and out must not be NULL");
    *out = NULL;
    lt_train_params p;
    lt_train_params_init(&p);
    if (params) {
        LT_CHECK_ARG(params->struct_size >= offsetof(lt_train_params, rank),
                     "lt_train_params.struct_size is %u: call lt_train_params_init first", params->struct_size);
        memcpy(&p, params, params->struct_size < sizeof p ? params->struct_size : sizeof p);
        p.struct_size = sizeof p;
    }
    LT_TRY(lt_train_params_check(&p));
    if (params && params->struct_size < offsetof(lt_train_params, fuse_micro_batches) + sizeof(int32_t))
        p.fuse_micro_batches = 1; /* a caller built against an older header */
    if (p.packing)
        return lt_error(LT_ERR_UNSUPPORTED, "packing=1 (TRL's fixed-length sequence packing) is not implemented; "
                        "loratune's micro-batches are already padding-free (records end to end, block-diagonal "
                        "attention) and short micro-batches are fused (fuse_micro_batches): set packing to 0");
    if (p.offload_checkpoints != 0 && p.offload_checkpoints != 1)
        return lt_error(LT_ERR_INVALID_ARGUMENT, "offload_checkpoints must be 0 or 1 (got %d)", p.offload_checkpoints);
    if (p.offload_checkpoints && !p.gradient_checkpointing)
        return lt_error(LT_ERR_INVALID_ARGUMENT, "offload_checkpoints=1 needs gradient_checkpointing=1: the "
                        "checkpoints it moves to host memory are those of gradient checkpointing");
    LT_TRY(lt_dist_check(&p, model));
    if (!model->has_lora)
        return lt_error(LT_ERR_STATE, "the model has no LoRA adapter: call lt_model_add_lora (or "
                        "lt_model_load_adapter) before lt_trainer_new");
    if (!model->lora_enabled)
        return lt_error(LT_ERR_STATE, "the model's LoRA branch is disabled: call lt_model_set_lora_enabled(model, 1)");
    size_t n = lt_dataset_size(ds);
    if (n == 0) return lt_error(LT_ERR_DATA, "the dataset has no training records");

    lt_trainer *tr = lt_calloc(1, sizeof *tr, "trainer");
    if (!tr) return LT_ERR_OUT_OF_MEMORY;
    tr->m = model;
    tr->ds = ds;
    tr->p = p;
    tr->n_records = n;
    tr->world = p.world_size > 1 ? p.world_size : 1;
    tr->rank = tr->world > 1 ? p.rank : 0;
    tr->n_micro = p.grad_accum * tr->world; /* the window over every rank */
    if (p.max_steps > 0) {
        tr->max_steps = p.max_steps;
    } else { /* transformers: len(dataloader) // accum update steps per epoch (at least 1) */
        int64_t batches = (int64_t)((n + (size_t)p.batch_size - 1) / (size_t)p.batch_size);
        int64_t per_epoch = batches / tr->n_micro;
        if (per_epoch < 1) per_epoch = 1;
        tr->max_steps = (int64_t)ceil(p.epochs * (double)per_epoch);
    }
    tr->warmup = p.warmup_steps >= 0 ? p.warmup_steps : (int64_t)ceil((double)tr->max_steps * p.warmup_ratio);
    lt_status st = LT_OK;
    tr->perm = lt_malloc(n * sizeof(size_t), "data order");
    tr->batches = lt_calloc((size_t)tr->n_micro, sizeof(lt_batch), "micro-batches");
    tr->fused = lt_calloc((size_t)tr->n_micro, sizeof(lt_batch), "fused micro-batches");
    tr->pass_owner = lt_calloc((size_t)tr->n_micro, sizeof(int), "pass owners");
    if (!tr->perm || !tr->batches || !tr->fused || !tr->pass_owner) st = LT_ERR_OUT_OF_MEMORY;
    if (st == LT_OK && p.output_dir && tr->rank == 0) { /* only rank 0 writes */
        tr->output_dir = lt_strdup(p.output_dir);
        if (!tr->output_dir) st = LT_ERR_OUT_OF_MEMORY;
        else st = lt_mkdirs(p.output_dir);
        if (st == LT_OK) lt_fs_clean_stale(p.output_dir, NULL); /* what a killed run left */
    }
    tr->p.output_dir = tr->output_dir;
    if (st == LT_OK) st = lt_trainer_bind_tensors(tr);
    if (st == LT_OK) st = lt_dist_trainer_init(tr);
    if (st == LT_OK) st = lt_eval_init(tr);
    if (st == LT_OK) {
        lt_dataset_stats ds_stats;
        memset(&ds_stats, 0, sizeof ds_stats);
        ds_stats.struct_size = sizeof ds_stats;
        int64_t max_len = 0;
        if (lt_dataset_get_stats(ds, &ds_stats) == LT_OK) max_len = ds_stats.max_len;
        /* a pass holds batch_size x the longest record, or (fused short records) up to
         * LT_FUSE_TOKENS tokens where batch_size x max_seq_len (what the memory estimate and
         * the user's settings allow for) is at least that: the notebook's ruozhiba window of
         * 16 records (~1,400 tokens) is then one pass instead of two */
        int64_t cap = (int64_t)p.batch_size * max_len;
        int64_t allowed = (int64_t)p.batch_size * lt_dataset_max_seq_len(ds);
        int64_t fused = allowed < LT_FUSE_TOKENS ? allowed : LT_FUSE_TOKENS;
        if (p.fuse_micro_batches && tr->n_micro > 1 && fused > cap) cap = fused;
        tr->fuse_cap = max_len > 0 ? cap : 0;
        if (p.bucket_passes && tr->fuse_cap > 0) bucket_setup(tr, max_len);
        if (max_len > 0)
            st = lt_graph_reserve(model, cap, !p.gradient_checkpointing ? LT_GRAPH_TRAIN_KEEP
                                              : p.offload_checkpoints   ? LT_GRAPH_TRAIN_OFFLOAD
                                                                        : LT_GRAPH_TRAIN);
    }
    if (st != LT_OK) {
        lt_trainer_free(tr);
        return st;
    }
    lt_trainer_shuffle(tr);
    lt_schedule_warn(tr);
    tr->t_start = lt_time_s();
    tr->log_fresh = 1;
    tr->use_loss_scale = model->be->act_dtype == LT_DTYPE_F16;
    if (p.deterministic) model->be->deterministic = 1; /* the CPU backend always is */
    tr->loss_scale = p.fp16_initial_loss_scale > 0 ? p.fp16_initial_loss_scale : 65536.0;
    *out = tr;
    return LT_OK;
}

LT_API void lt_trainer_free(lt_trainer *tr) {
    if (!tr) return;
    for (int i = 0; tr->t && i < tr->n_tensors; i++) free_state(tr->m->be, &tr->t[i]);
    free(tr->t);
    free(tr->grad);
    free(tr->grad_n);
    free(tr->grad_bytes);
    for (int a = 0; tr->batches && a < tr->n_micro; a++) lt_batch_free(&tr->batches[a]);
    free(tr->batches);
    for (int a = 0; tr->fused && a < tr->n_micro; a++) lt_batch_free(&tr->fused[a]);
    free(tr->fused);
    free(tr->pass_owner);
    lt_coll_free(tr->coll);
    free(tr->perm);
    free(tr->hist_step);
    free(tr->hist_loss);
    lt_eval_free(tr);
    free(tr->last_checkpoint);
    free(tr->output_dir);
    free(tr);
}

/* ---- one step ---- */

static int take_stop_request(lt_trainer *tr) {
    return __atomic_exchange_n(&tr->stop_requested, 0, __ATOMIC_SEQ_CST) != 0;
}

typedef struct cursor_state { int64_t epoch; size_t cursor; int64_t records_seen, micro_index; } cursor_state;

static void restore_cursor(lt_trainer *tr, const cursor_state *c) {
    int reshuffle = tr->epoch != c->epoch;
    tr->epoch = c->epoch;
    tr->cursor = c->cursor;
    tr->records_seen = c->records_seen;
    tr->micro_index = c->micro_index;
    if (reshuffle) lt_trainer_shuffle(tr);
}

/* A log write failed (disk full?): the step is complete, so checkpoint it before stopping. */
static lt_status log_failed(lt_trainer *tr, lt_status log_st) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", lt_last_error());
    char name[64];
    snprintf(name, sizeof name, "checkpoint-%lld", (long long)tr->step);
    char *dir = tr->output_dir ? lt_path_join(tr->output_dir, name) : NULL;
    lt_status st = dir ? lt_trainer_save_checkpoint(tr, dir) : LT_ERR_OUT_OF_MEMORY;
    if (st == LT_OK)
        lt_error(log_st, "step %lld: writing the training log failed: %s; the run stopped after saving checkpoint %s",
                 (long long)tr->step, msg, dir);
    else {
        char why[1024];
        snprintf(why, sizeof why, "%s", lt_last_error());
        lt_error(log_st, "step %lld: writing the training log failed: %s; saving a checkpoint failed too: %s",
                 (long long)tr->step, msg, why);
    }
    free(dir);
    return log_st;
}

/* The next micro-batch's records: up to batch_size from the current epoch's order (the last
 * micro-batch of an epoch may be short, as a DataLoader without drop_last). */
static int next_records(lt_trainer *tr, size_t *idx) {
    if (tr->cursor >= tr->n_records) {
        tr->epoch++;
        tr->cursor = 0;
        lt_trainer_shuffle(tr);
    }
    size_t left = tr->n_records - tr->cursor, k = left < (size_t)tr->p.batch_size ? left : (size_t)tr->p.batch_size;
    memcpy(idx, tr->perm + tr->cursor, k * sizeof(size_t));
    tr->cursor += k;
    tr->records_seen += (int64_t)k;
    return (int)k;
}

/* sum of g^2 over every trained tensor: one backend call (one device sync) when the backend
 * has sumsq_many, else one call per tensor */
static lt_status grad_sumsq(lt_trainer *tr, double *sumsq) {
    lt_backend *be = tr->m->be;
    if (be->ops.sumsq_many && tr->n_tensors > 1)
        return be->ops.sumsq_many(be, tr->n_tensors, (const float *const *)tr->grad, tr->grad_n, sumsq);
    for (int i = 0; i < tr->n_tensors; i++) LT_TRY(be->ops.sumsq(be, tr->grad[i], tr->grad_n[i], sumsq));
    return LT_OK;
}

static lt_status apply_update(lt_trainer *tr, lt_opt_tensor *o, float lr, int64_t t) {
    lt_backend *be = tr->m->be;
    float b1 = (float)tr->p.adam_beta1, b2 = (float)tr->p.adam_beta2, eps = (float)tr->p.adam_eps;
    float wd = (float)tr->p.weight_decay;
    if (o->is8bit)
        return be->ops.adamw8bit(be, o->p, o->g, o->s1, o->s2, o->a1, o->a2, o->n, lr, b1, b2, eps, wd, t);
    if (tr->p.optimizer == LT_OPTIM_ADAMW) return be->ops.adamw(be, o->p, o->g, o->m, o->v, o->n, lr, b1, b2, eps, wd, t);
    /* bitsandbytes' exact 32-bit Adam for small tensors: the Adam step, then p *= 1 - lr*wd */
    LT_TRY(be->ops.adamw(be, o->p, o->g, o->m, o->v, o->n, lr, b1, b2, eps, 0.0f, t));
    if (wd > 0) LT_TRY(be->ops.scale(be, o->p, o->n, 1.0f - lr * wd));
    return LT_OK;
}

/* every gradient times s: one backend call where it has scale_many */
static lt_status scale_grads(lt_trainer *tr, float s) {
    lt_backend *be = tr->m->be;
    if (be->ops.scale_many && tr->n_tensors > 1) return be->ops.scale_many(be, tr->n_tensors, tr->grad, tr->grad_n, s);
    for (int i = 0; i < tr->n_tensors; i++) LT_TRY(be->ops.scale(be, tr->grad[i], tr->grad_n[i], s));
    return LT_OK;
}

/* every gradient to zero: one backend call where it has memset0_many */
static lt_status zero_grads(lt_trainer *tr) {
    lt_backend *be = tr->m->be;
    if (be->ops.memset0_many && tr->n_tensors > 1)
        return be->ops.memset0_many(be, tr->n_tensors, (void *const *)tr->grad, tr->grad_bytes);
    for (int i = 0; i < tr->n_tensors; i++) LT_TRY(be->ops.memset0(be, tr->grad[i], tr->grad_bytes[i]));
    return LT_OK;
}

/* *bad = 1 when a gradient holds inf/nan: one backend call (one sync) where it has nonfinite_many */
static lt_status grads_nonfinite(lt_trainer *tr, int *bad) {
    lt_backend *be = tr->m->be;
    *bad = 0;
    if (be->ops.nonfinite_many && tr->n_tensors > 1)
        return be->ops.nonfinite_many(be, tr->n_tensors, (const float *const *)tr->grad, tr->grad_n, bad);
    for (int i = 0; i < tr->n_tensors && !*bad; i++) LT_TRY(be->ops.nonfinite(be, tr->grad[i], tr->grad_n[i], bad));
    return LT_OK;
}

/* the 8-bit tensors in one backend call (adamw8bit_many), the exact fp32 ones one by one */
static lt_status apply_updates_8bit(lt_trainer *tr, float lr, int64_t t) {
    lt_backend *be = tr->m->be;
    const int n = tr->n_tensors;
    float **p = (float **)lt_malloc((size_t)n * sizeof *p, "optimizer pointers");
    const float **g = (const float **)lt_malloc((size_t)n * sizeof *g, "optimizer pointers");
    uint8_t **s1 = (uint8_t **)lt_malloc((size_t)n * sizeof *s1, "optimizer pointers");
    uint8_t **s2 = (uint8_t **)lt_malloc((size_t)n * sizeof *s2, "optimizer pointers");
    float **a1 = (float **)lt_malloc((size_t)n * sizeof *a1, "optimizer pointers");
    float **a2 = (float **)lt_malloc((size_t)n * sizeof *a2, "optimizer pointers");
    int64_t *len = (int64_t *)lt_malloc((size_t)n * sizeof *len, "optimizer sizes");
    lt_status st = p && g && s1 && s2 && a1 && a2 && len ? LT_OK : LT_ERR_OUT_OF_MEMORY;
    int k = 0;
    for (int i = 0; st == LT_OK && i < n; i++) {
        lt_opt_tensor *o = &tr->t[i];
        if (!o->is8bit) {
            st = apply_update(tr, o, lr, t);
            continue;
        }
        p[k] = o->p; g[k] = o->g; s1[k] = o->s1; s2[k] = o->s2; a1[k] = o->a1; a2[k] = o->a2; len[k] = o->n;
        k++;
    }
    if (st == LT_OK && k > 0)
        st = be->ops.adamw8bit_many(be, k, p, g, s1, s2, a1, a2, len, lr, (float)tr->p.adam_beta1,
                                    (float)tr->p.adam_beta2, (float)tr->p.adam_eps, (float)tr->p.weight_decay, t);
    free(p); free(g); free(s1); free(s2); free(a1); free(a2); free(len);
    return st;
}

/* the optimizer step of every tensor: AdamW (fp32 or 8-bit) in one backend call where it has
 * adamw_many / adamw8bit_many (the same arithmetic), else tensor by tensor */
static lt_status apply_updates(lt_trainer *tr, float lr, int64_t t) {
    lt_backend *be = tr->m->be;
    if (tr->p.optimizer == LT_OPTIM_ADAMW_8BIT && be->ops.adamw8bit_many && tr->n_tensors > 1)
        return apply_updates_8bit(tr, lr, t);
    if (tr->p.optimizer != LT_OPTIM_ADAMW || !be->ops.adamw_many || tr->n_tensors <= 1) {
        for (int i = 0; i < tr->n_tensors; i++) LT_TRY(apply_update(tr, &tr->t[i], lr, t));
        return LT_OK;
    }
    const int n = tr->n_tensors;
    float **p = (float **)lt_malloc((size_t)n * sizeof *p, "optimizer pointers");
    const float **g = (const float **)lt_malloc((size_t)n * sizeof *g, "optimizer pointers");
    float **m = (float **)lt_malloc((size_t)n * sizeof *m, "optimizer pointers");
    float **v = (float **)lt_malloc((size_t)n * sizeof *v, "optimizer pointers");
    int64_t *len = (int64_t *)lt_malloc((size_t)n * sizeof *len, "optimizer sizes");
    lt_status st = p && g && m && v && len ? LT_OK : LT_ERR_OUT_OF_MEMORY;
    for (int i = 0; st == LT_OK && i < n; i++) {
        p[i] = tr->t[i].p; g[i] = tr->t[i].g; m[i] = tr->t[i].m; v[i] = tr->t[i].v; len[i] = tr->t[i].n;
    }
    if (st == LT_OK)
        st = be->ops.adamw_many(be, n, p, g, m, v, len, lr, (float)tr->p.adam_beta1, (float)tr->p.adam_beta2,
                                (float)tr->p.adam_eps, (float)tr->p.weight_decay, t);
    free(p); free(g); free(m); free(v); free(len);
    return st;
}

/* remembers a pass shape the first time it runs (the first LT_SHAPE_LOG; n_shapes stops there) */
static void log_shape(lt_trainer *tr, const lt_batch *b, int scale_exp) {
    const struct lt_pass_shape sh = {b->n_tokens, b->nseq, b->max_seqlen, scale_exp};
    for (int i = 0; i < tr->n_shapes; i++)
        if (!memcmp(&tr->shapes[i], &sh, sizeof sh)) return;
    if (tr->n_shapes >= LT_SHAPE_LOG) return;
    tr->shapes[tr->n_shapes++] = sh;
    lt_log(LT_LOG_DEBUG, "pass shape %d: %d tokens, %d sequences, longest %d, gradient scale exponent %d",
           tr->n_shapes, (int)sh.n_tokens, (int)sh.nseq, (int)sh.max_seqlen, scale_exp);
}

lt_status lt_trainer_form_window(lt_trainer *tr, const lt_batch **runs_out, int *R_out, int64_t *items_out,
                                 int64_t *tokens_out, int *scale_exp) {
    const int A = tr->n_micro;
    size_t *idx = lt_malloc((size_t)tr->p.batch_size * sizeof(size_t), "batch indices");
    if (!idx) return LT_ERR_OUT_OF_MEMORY;
    /* the whole window first: its label count normalises every micro-batch */
    int64_t items = 0, tokens = 0;
    for (int a = 0; a < A; a++) {
        int k = next_records(tr, idx);
        lt_status st = lt_batch_from_dataset(&tr->batches[a], tr->ds, idx, k, 0);
        if (st != LT_OK) {
            free(idx);
            return lt_error_wrap(st, "step %lld: packing micro-batch %d", (long long)tr->step + 1, a);
        }
        items += tr->batches[a].n_targets;
        tokens += tr->batches[a].n_tokens;
    }
    free(idx);
    /* the passes: the micro-batches as they are, or consecutive ones fused while their tokens fit
     * the budget one micro-batch was sized for (ruozhiba's ~130-token records make the notebook's
     * 8 micro-batches of 2 records one pass of 16) */
    lt_batch *runs = tr->batches;
    int R = A;
    if (tr->p.fuse_micro_batches && A > 1 && tr->fuse_cap > 0) {
        R = 0;
        for (int a = 0; a < A; a++) {
            if (R == 0 || (int64_t)tr->fused[R - 1].n_tokens + tr->batches[a].n_tokens > tr->fuse_cap) {
                tr->fused[R].n_tokens = tr->fused[R].nseq = 0;
                R++;
            }
            lt_status st = lt_batch_append(&tr->fused[R - 1], &tr->batches[a]);
            if (st != LT_OK) return lt_error_wrap(st, "step %lld: fusing micro-batch %d", (long long)tr->step + 1, a);
        }
        runs = tr->fused;
    }
    /* buckets: each pass padded to its token bucket, bucket_nseq sequences and max_seqlen
     * bucket_seg; the records keep their tokens' places (and so their dropout masks) */
    int exp = -1;
    if (tr->bucket) {
        exp = tr->bucket_exp < 0 ? -1 : tr->use_loss_scale ? ceil_log2(items > 0 ? items : 1) : tr->bucket_exp;
        for (int r = 0; r < R; r++) {
            lt_batch *b = &runs[r];
            if (b->max_seqlen > tr->bucket_seg) continue; /* not reached: bucket_seg is the longest record */
            const int64_t n = b->n_tokens, nb = lt_bucket_tokens(n, tr->fuse_cap);
            const int64_t need = b->nseq + (nb - n + tr->bucket_seg - 1) / tr->bucket_seg;
            int64_t ns = tr->bucket_nseq < nb ? tr->bucket_nseq : nb;
            if (ns < need) ns = need; /* not reached: bucket_nseq holds a pass's records and padding */
            lt_status st = lt_batch_pad(b, (int32_t)nb, (int32_t)ns, tr->bucket_seg, 0);
            if (st != LT_OK) return lt_error_wrap(st, "step %lld: padding pass %d to %lld tokens",
                                                  (long long)tr->step + 1, r, (long long)nb);
            tr->pad_tokens += nb - n;
        }
    }
    for (int r = 0; r < R; r++) log_shape(tr, &runs[r], exp);
    *runs_out = runs;
    *R_out = R;
    *items_out = items;
    *tokens_out = tokens;
    *scale_exp = exp;
    return LT_OK;
}

static lt_status trainer_step(lt_trainer *tr, lt_metrics *metrics) {
    if (tr->step >= tr->max_steps || tr->early_stopped) {
        LT_TRY(lt_eval_finish(tr));
        return LT_DONE;
    }
    if (!tr->coll && take_stop_request(tr)) return LT_STOPPED; /* data parallel: the ranks vote after the step */
    lt_model *m = tr->m;
    lt_backend *be = m->be;
    double t0 = lt_time_s();
    /* where the data cursor and dropout stream stand before this step: an abandoned step (a stop
     * request, a non-finite loss) puts them back, so the state is exactly the last step's */
    cursor_state before = {tr->epoch, tr->cursor, tr->records_seen, tr->micro_index};
    const lt_batch *runs = NULL;
    int R = 0, scale_exp = -1;
    int64_t items = 0, tokens = 0;
    lt_status fst = lt_trainer_form_window(tr, &runs, &R, &items, &tokens, &scale_exp);
    if (fst != LT_OK) {
        restore_cursor(tr, &before);
        return fst;
    }
    if (items == 0)
        LT_LOGW("step %lld: no labelled tokens in the window; the step only applies weight decay",
                (long long)tr->step + 1);
    LT_TRY(zero_grads(tr));
    double loss_sum = 0;
    double ls = tr->use_loss_scale ? tr->loss_scale : 1.0;
    float grad_scale = items > 0 ? (float)(ls / (double)items) : 0.0f;
    /* buckets: a power-of-two scale in the passes (one key for their graphs), the rest after */
    double post = 1.0;
    if (scale_exp >= 0 && items > 0) {
        grad_scale = (float)ldexp(ls, -scale_exp);
        post = ldexp(1.0, scale_exp) / (double)items;
    }
    /* data parallel: each pass keeps its world-size-1 dropout stream (micro_index counts every
     * rank's passes) and runs on the rank lt_dist_plan deals it to */
    double *pass_loss = NULL;
    if (tr->coll) {
        lt_dist_plan(runs, R, tr->world, tr->pass_owner);
        pass_loss = lt_calloc((size_t)R, sizeof *pass_loss, "pass losses");
        if (!pass_loss) return LT_ERR_OUT_OF_MEMORY;
    }
    for (int a = 0; a < R; a++) {
        if (!tr->coll && take_stop_request(tr)) { /* between passes: abandon the step */
            restore_cursor(tr, &before);
            return LT_STOPPED;
        }
        /* shapes_recur: bucket shapes come back, not always in a row */
        lt_graph_pass pass = {1, tr->p.seed, (uint64_t)tr->micro_index, tr->p.gradient_checkpointing ? 0 : 1,
                              tr->p.offload_checkpoints, tr->bucket};
        tr->micro_index++;
        if (tr->coll && tr->pass_owner[a] != tr->rank) continue;
        lt_status st = lt_graph_forward_backward(m, &runs[a], grad_scale, &pass, tr->coll ? &pass_loss[a] : &loss_sum);
        if (st < 0) { restore_cursor(tr, &before); free(pass_loss); return st; }
    }
    if (tr->coll) {
        lt_status st = lt_dist_reduce_window(tr, pass_loss, R, &loss_sum);
        free(pass_loss);
        if (st < 0) { restore_cursor(tr, &before); return st; }
    }
    /* loss scaling: skip a step whose gradients overflowed, else unscale them */
    int skip = 0;
    if (tr->use_loss_scale) {
        LT_TRY(grads_nonfinite(tr, &skip));
        if (skip) {
            LT_LOGW("step %lld: gradients overflowed at loss scale %g: the update is skipped and the scale halved",
                    (long long)tr->step + 1, ls);
            tr->loss_scale = ls * 0.5;
            tr->good_steps = 0;
        } else {
            LT_TRY(scale_grads(tr, (float)(post / ls)));
            if (++tr->good_steps >= LT_LOSS_SCALE_INTERVAL) {
                tr->loss_scale = ls * 2.0;
                tr->good_steps = 0;
            }
        }
    } else if (post != 1.0) {
        LT_TRY(scale_grads(tr, (float)post));
    }
    /* global norm before clipping; clip when the coefficient is below 1 */
    double norm = INFINITY;
    if (!skip) {
        double sumsq = 0;
        LT_TRY(grad_sumsq(tr, &sumsq));
        norm = sqrt(sumsq);
        if (tr->p.max_grad_norm > 0) {
            double coef = tr->p.max_grad_norm / (norm + 1e-6);
            if (coef < 1.0) LT_TRY(scale_grads(tr, (float)coef));
        }
    }
    /* a non-finite loss or norm stops the run before the update touches the weights (fp16 loss
     * scaling's overflow is not that: the step above was skipped and the scale halved) */
    double step_loss = items > 0 ? loss_sum / (double)items : 0.0;
    if (!skip && (!isfinite(step_loss) || !isfinite(norm))) {
        restore_cursor(tr, &before);
        double bad = !isfinite(step_loss) ? step_loss : norm;
        return lt_error(LT_ERR_NONFINITE, "step %lld: the %s is %s: training stopped before this update, so the "
                        "weights are those after step %lld; last good checkpoint: %s (lower lr, check the data and "
                        "the base weights for NaN/Inf)", (long long)tr->step + 1,
                        !isfinite(step_loss) ? "loss" : "global gradient norm",
                        isnan(bad) ? "NaN" : bad > 0 ? "+Inf" : "-Inf",
                        (long long)tr->step, tr->last_checkpoint ? tr->last_checkpoint : "none (set save_every)");
    }
    double lr = tr->p.lr * lt_schedule_lambda(tr->p.scheduler, tr->step, tr->warmup, tr->max_steps);
    if (!skip) LT_TRY(apply_updates(tr, (float)lr, tr->step + 1));
    LT_TRY(be->ops.sync(be));
    tr->step++;
    double dt = lt_time_s() - t0;
    tr->total_tokens += tokens;

    lt_metrics mt;
    memset(&mt, 0, sizeof mt);
    mt.struct_size = sizeof mt;
    mt.step = tr->step;
    mt.max_steps = tr->max_steps;
    mt.epoch = (double)tr->records_seen / (double)tr->n_records;
    mt.loss = items > 0 ? loss_sum / (double)items : 0.0;
    mt.lr = lr;
    mt.grad_norm = norm;
    mt.tokens = tokens;
    mt.total_tokens = tr->total_tokens;
    mt.tokens_per_s = dt > 0 ? (double)tokens / dt : 0;
    mt.elapsed_s = tr->elapsed_before + (lt_time_s() - tr->t_start);
    if (be->ops.memory) {
        uint64_t in_use = 0, peak = 0;
        be->ops.memory(be, &in_use, &peak);
        mt.peak_memory = peak;
    }
    tr->steps_run++;
    tr->run_loss_sum += mt.loss;
    tr->last_loss = mt.loss;
    LT_TRY(lt_eval_after_step(tr, &mt));
    if (metrics) {
        uint32_t sz = metrics->struct_size && metrics->struct_size < sizeof mt ? metrics->struct_size : sizeof mt;
        memcpy(metrics, &mt, sz);
        metrics->struct_size = sz;
    }
    /* the logged loss is the mean of the step losses since the last log (transformers) */
    tr->log_loss_sum += mt.loss;
    tr->log_n++;
    int log_now = tr->p.log_every > 0 && (tr->step % tr->p.log_every == 0 || tr->step == tr->max_steps);
    if (log_now) {
        double logged = tr->log_loss_sum / (double)tr->log_n;
        tr->log_loss_sum = 0;
        tr->log_n = 0;
        if (tr->rank == 0)
            LT_LOGI("step %lld/%lld loss %.4f lr %.3g grad_norm %.4f tok/s %.0f", (long long)mt.step,
                    (long long)mt.max_steps, logged, mt.lr, mt.grad_norm, mt.tokens_per_s);
        lt_status st = lt_report_log(tr, &mt, 1, logged);
        if (st < 0) return log_failed(tr, st);
    } else if (!isnan(mt.eval_loss)) { /* an evaluation between log steps: a row of its own */
        lt_status st = lt_report_log(tr, &mt, 0, NAN);
        if (st < 0) return log_failed(tr, st);
    }
    if (tr->output_dir && tr->p.save_every > 0 && tr->step % tr->p.save_every == 0) {
        char name[64];
        snprintf(name, sizeof name, "checkpoint-%lld", (long long)tr->step);
        char *dir = lt_path_join(tr->output_dir, name);
        if (!dir) return lt_error(LT_ERR_OUT_OF_MEMORY, "checkpoint path");
        lt_status st = lt_trainer_save_checkpoint(tr, dir);
        free(dir);
        LT_TRY(st);
        LT_TRY(lt_checkpoints_prune(tr));
    }
    if (tr->coll) { /* data parallel: any rank's stop (callback or request) stops every rank after this step */
        int stop = tr->p.on_step && tr->p.on_step(&mt, tr->p.user_data) != 0;
        if (take_stop_request(tr)) stop = 1;
        LT_TRY(lt_dist_vote_stop(tr, &stop));
        return stop ? LT_STOPPED : LT_OK;
    }
    if (tr->p.on_step && tr->p.on_step(&mt, tr->p.user_data) != 0) return LT_STOPPED;
    if (take_stop_request(tr)) return LT_STOPPED; /* it came after the last pass: the step is kept */
    return LT_OK;
}

LT_API lt_status lt_trainer_step(lt_trainer *tr, lt_metrics *metrics) {
    LT_CHECK_ARG(tr, "lt_trainer_step: trainer is NULL");
    lt_status st = trainer_step(tr, metrics);
    if (st < 0) lt_dist_abort(tr, st); /* data parallel: the other ranks stop now, naming this one */
    return st;
}


LT_API lt_status lt_trainer_run(lt_trainer *tr) {
    LT_CHECK_ARG(tr, "lt_trainer_run: trainer is NULL");
    for (;;) {
        lt_status st = lt_trainer_step(tr, NULL);
        if (st == LT_OK) continue;
        return st == LT_DONE ? LT_OK : st;
    }
}

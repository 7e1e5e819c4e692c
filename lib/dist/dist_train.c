/* dist_train.c - what the trainer does differently with world_size > 1 (data parallel).
 *
 * Same samples, any world size: every rank builds the whole window of world_size x grad_accum
 * micro-batches from the one seeded permutation (host packing only) and forms the passes exactly
 * as one rank with grad_accum x world_size would (fused or not). Each pass keeps the dropout
 * stream it has at world size 1 (its index in the global pass order), so the masks do not depend
 * on the world size; the passes are dealt to the ranks (lt_dist_plan) and each rank runs its
 * own. After the window the LoRA gradients (each rank's sum over its passes, already divided by
 * the window's global label count) are summed over the ranks, and so are the per-pass losses;
 * the clip, the optimizer step and the schedule then run identically on every rank. The data
 * cursor, step and dropout position are the same on every rank, so a checkpoint (written by
 * rank 0) resumes on any world size. */
#include "dist/dist.h"
#include "train/trainer_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

lt_status lt_dist_check(const lt_train_params *p, const lt_model *m) {
    int32_t W = p->world_size > 1 ? p->world_size : 1;
    int dist = W > 1 || p->comm || p->nccl_id;
    if (!dist) return LT_OK;
    LT_CHECK_ARG(p->rank >= 0 && p->rank < W, "rank %d must be in [0, world_size %d)", p->rank, W);
    LT_CHECK_ARG(p->dist_timeout_s > 0, "dist_timeout_s must be > 0 (got %g)", p->dist_timeout_s);
    if (p->comm) {
        int32_t cw = lt_comm_world(p->comm), cr = lt_comm_rank(p->comm);
        if (cw != W)
            return lt_error(LT_ERR_INVALID_ARGUMENT, "world_size %d, but the comm's group has %d ranks", W, cw);
        if (cr >= 0 && cr != p->rank)
            return lt_error(LT_ERR_INVALID_ARGUMENT, "rank %d, but this process joined the comm as rank %d", p->rank, cr);
    }
    if (m->be->device == LT_DEVICE_CPU) {
        if (!p->comm)
            return lt_error(LT_ERR_INVALID_ARGUMENT, "world_size %d on the CPU backend needs lt_train_params.comm "
                            "(lt_comm_new: threads of this process, or processes over TCP); nccl_id is for CUDA", W);
    } else if (!p->comm && !p->nccl_id) {
        return lt_error(LT_ERR_INVALID_ARGUMENT, "world_size %d on CUDA needs nccl_id (lt_nccl_get_unique_id on rank 0, "
                        "passed to every rank) or comm (to share it)", W);
    }
    return LT_OK;
}

/* what every rank must agree on, checked once at set-up */
enum { AGREE_RECORDS, AGREE_LORA, AGREE_SEED, AGREE_BATCH, AGREE_ACCUM, AGREE_STEPS, AGREE_FUSE, AGREE_BUCKET, AGREE_N };

lt_status lt_dist_trainer_init(lt_trainer *tr) {
    const lt_train_params *p = &tr->p;
    tr->world = p->world_size > 1 ? p->world_size : 1;
    tr->rank = tr->world > 1 ? p->rank : 0;
    if (tr->world == 1 && !p->comm && !p->nccl_id) return LT_OK;
    lt_backend *be = tr->m->be;
    if (be->device == LT_DEVICE_CPU) {
        LT_TRY(lt_coll_from_comm(p->comm, tr->rank, p->dist_timeout_s, &tr->coll));
    } else {
        uint8_t id[LT_NCCL_ID_BYTES];
        if (p->nccl_id) {
            memcpy(id, p->nccl_id, sizeof id);
        } else {
            memset(id, 0, sizeof id);
            lt_status st = tr->rank == 0 ? lt_nccl_get_unique_id(id) : LT_OK;
            if (st != LT_OK) {
                lt_comm_abort(p->comm, tr->rank, lt_last_error());
                return st;
            }
            LT_TRY(lt_comm_broadcast(p->comm, tr->rank, id, sizeof id));
        }
        LT_TRY(lt_coll_nccl_new(be, id, tr->rank, tr->world, p->dist_timeout_s, &tr->coll));
    }
    /* the same data, adapter and recipe everywhere, else the ranks would train different things */
    int64_t lora = 0;
    for (int i = 0; i < tr->n_tensors; i++) lora += tr->grad_n[i];
    double mine[AGREE_N] = {(double)tr->n_records, (double)lora, (double)(p->seed & 0xFFFFFFFFFFFFull),
                            (double)p->batch_size, (double)p->grad_accum, (double)tr->max_steps,
                            (double)p->fuse_micro_batches, (double)p->bucket_passes};
    static const char *names[AGREE_N] = {"training records", "LoRA parameters", "seed", "batch_size", "grad_accum",
                                         "max_steps", "fuse_micro_batches", "bucket_passes"};
    double r0[AGREE_N];
    memcpy(r0, mine, sizeof r0);
    LT_TRY(tr->coll->ops.broadcast_host(tr->coll, r0, sizeof r0, "trainer set-up (comparing the ranks' settings)"));
    int bad = -1;
    for (int k = 0; k < AGREE_N && bad < 0; k++)
        if (r0[k] != mine[k]) bad = k;
    double votes[2] = {bad >= 0 ? 1.0 : 0.0, bad >= 0 ? (double)(tr->rank + 1) : 0.0};
    LT_TRY(tr->coll->ops.allreduce_host(tr->coll, votes, 2, LT_DIST_F64, "trainer set-up (comparing the ranks' settings)"));
    if (votes[0] > 0) {
        if (bad >= 0)
            return lt_error(LT_ERR_INVALID_ARGUMENT, "data parallel: rank %d has %s = %.0f but rank 0 has %.0f; every "
                            "rank needs the same data, adapter and training settings", tr->rank, names[bad], mine[bad],
                            r0[bad]);
        return lt_error(LT_ERR_INVALID_ARGUMENT, "data parallel: %.0f rank(s) have other data, adapter or training "
                        "settings than rank 0 (their own error names which)", votes[0]);
    }
    return LT_OK;
}

void lt_dist_plan(const lt_batch *runs, int R, int world, int *owner) {
    int64_t load[256];
    int W = world < 256 ? world : 256;
    for (int k = 0; k < W; k++) load[k] = 0;
    for (int j = 0; j < R; j++) {
        int best = 0;
        for (int k = 1; k < W; k++)
            if (load[k] < load[best]) best = k;
        owner[j] = world > 256 ? j % world : best;
        load[best] += runs[j].n_tokens + 1;
    }
}

lt_status lt_dist_reduce_window(lt_trainer *tr, double *pass_loss, int R, double *loss_sum) {
    if (R < tr->world && !tr->coll->warned_idle) {
        tr->coll->warned_idle = 1;
        if (tr->rank == 0)
            LT_LOGW("data parallel: step %lld's window of %d micro-batches fused into %d pass(es) for %d ranks, so "
                    "%d rank(s) had nothing to run (passes are formed as on one GPU, to keep the dropout masks and "
                    "losses of world size 1): raise grad_accum, or set fuse_micro_batches 0", (long long)tr->step + 1,
                    tr->n_micro, R, tr->world, tr->world - R);
    }
    char what[96];
    snprintf(what, sizeof what, "step %lld: LoRA gradient all-reduce", (long long)tr->step + 1);
    LT_TRY(tr->coll->ops.allreduce_many(tr->coll, tr->n_tensors, tr->grad, tr->grad_n, what));
    snprintf(what, sizeof what, "step %lld: loss all-reduce", (long long)tr->step + 1);
    LT_TRY(tr->coll->ops.allreduce_host(tr->coll, pass_loss, R, LT_DIST_F64, what));
    for (int j = 0; j < R; j++) *loss_sum += pass_loss[j];
    return LT_OK;
}

lt_status lt_dist_vote_stop(lt_trainer *tr, int *stop) {
    char what[64];
    snprintf(what, sizeof what, "step %lld: stop vote", (long long)tr->step);
    /* a stop (callback, request) and early stopping (each rank evaluates the same records with
     * the same weights; a rank whose kernels round differently must not leave the others) */
    double v[2] = {*stop ? 1.0 : 0.0, tr->early_stopped ? 1.0 : 0.0};
    LT_TRY(tr->coll->ops.allreduce_host(tr->coll, v, 2, LT_DIST_F64, what));
    *stop = v[0] > 0;
    if (v[1] > 0) tr->early_stopped = 1;
    return LT_OK;
}

void lt_dist_abort(lt_trainer *tr, lt_status st) {
    if (!tr->coll) return;
    char why[600];
    snprintf(why, sizeof why, "%s: %s", lt_status_string(st), lt_last_error());
    char msg[600];
    snprintf(msg, sizeof msg, "%s", lt_last_error());
    tr->coll->ops.abort(tr->coll, why);
    lt_error(st, "%s", msg); /* the caller's error, not the abort's */
}

/* test_stop_pass.c - a stop request that arrives between two micro-batch passes of a step
 * (fuse_micro_batches 0, grad_accum 4, CPU, the tiny fixture model): the trainer abandons the
 * step. The request is made from inside the step, right after its 2nd pass has computed its loss
 * (the backend's lm_head_ce_cap, called once per training pass, is wrapped to count passes), as
 * a signal handler or another thread would make it. Checked:
 *   - lt_trainer_step returns LT_STOPPED, the 3rd and 4th passes never run, the step counter
 *     stays, the data cursor, epoch, records seen and dropout stream are those after the last
 *     step (the window crosses an epoch end, so the order is reshuffled back too), and the LoRA
 *     weights are untouched;
 *   - training on in the same trainer, and resuming from a checkpoint saved after the stop in a
 *     fresh model + trainer, both give the uninterrupted run's losses (within 1e-6) and weights. */
#include "../train/train_common.h"
#include "train/trainer_impl.h"
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#define STEPS 5
#define STOP_STEP 3 /* the step whose passes are interrupted */
#define STOP_AFTER_PASS 2

static lt_model *model_with_lora(void) {
    lt_model *m = fx_model("tiny-tied", 0);
    lt_lora_params lp;
    lt_lora_params_init(&lp);
    lp.r = 8;
    lp.dropout = 0.1f; /* the dropout streams follow micro_index: a wrong restore changes the losses */
    lp.seed = 5;
    CHECK_OK(lt_model_add_lora(m, &lp));
    return m;
}

static lt_dataset *dataset(lt_tokenizer *tok) {
    lt_dataset *ds = fx_dataset(tok);
    for (int i = 0; i < 9; i++) { /* 9 records, 4 a step: step 3 runs over the end of the first epoch */
        int32_t ids[16];
        int n = 5 + i % 7;
        for (int t = 0; t < n; t++) ids[t] = 3 + (i * 29 + t * 13) % 250;
        CHECK_OK(lt_dataset_add_tokens(ds, ids, NULL, (size_t)n));
    }
    return ds;
}

static void params(lt_train_params *tp) {
    lt_train_params_init(tp);
    tp->batch_size = 1;
    tp->grad_accum = 4;
    tp->fuse_micro_batches = 0; /* four passes a step */
    tp->max_steps = STEPS;
    tp->lr = 2e-3;
    tp->warmup_steps = 1;
    tp->optimizer = LT_OPTIM_ADAMW;
    tp->seed = 7;
}

/* Every LoRA tensor's A and B, end to end (malloc'ed). */
typedef struct { float *v; int64_t n; } lora_copy;
static void collect(lt_model *m, int l, int p, lt_lora_tensor *t, void *ctx) {
    lora_copy *c = ctx;
    int64_t na = (int64_t)t->r * t->in, nb = (int64_t)t->out * t->r;
    c->v = realloc(c->v, (size_t)(c->n + na + nb) * sizeof(float));
    CHECK_OK(m->be->ops.download(m->be, c->v + c->n, t->A, (size_t)na * 4));
    CHECK_OK(m->be->ops.download(m->be, c->v + c->n + na, t->B, (size_t)nb * 4));
    c->n += na + nb;
}
static lora_copy weights(lt_model *m) {
    lora_copy c = {NULL, 0};
    lt_model_foreach_lora(m, collect, &c);
    return c;
}

/* the pass counter: the wrapped lm_head_ce_cap requests the stop after the STOP_AFTER_PASS-th
 * pass of step STOP_STEP */
static lt_trainer *g_tr;
static int g_passes, g_armed;
static lt_status (*g_ce)(lt_backend *, float *, void *, const void *, const lt_bweight *, const int32_t *, int64_t,
                         int64_t, int64_t, float, float);
static lt_status counting_ce(lt_backend *be, float *loss_sum, void *dh, const void *h, const lt_bweight *head,
                             const int32_t *targets, int64_t N, int64_t C, int64_t V, float grad_scale, float softcap) {
    g_passes++;
    if (g_armed && g_passes == STOP_AFTER_PASS) lt_trainer_request_stop(g_tr);
    return g_ce(be, loss_sum, dh, h, head, targets, N, C, V, grad_scale, softcap);
}

int main(void) {
    lt_tokenizer *tok = fx_tokenizer();
    lt_dataset *ds = dataset(tok);
    double straight[STEPS + 1] = {0}, went_on[STEPS + 1] = {0}, resumed[STEPS + 1] = {0};
    lt_metrics mt = {sizeof mt};
    lt_train_params tp;

    /* the run nobody stops */
    lt_model *m = model_with_lora();
    params(&tp);
    lt_trainer *tr = NULL;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    for (int s = 1; s <= STEPS; s++) {
        CHECK_OK(lt_trainer_step(tr, &mt));
        straight[s] = mt.loss;
    }
    lora_copy w_straight = weights(m);
    lt_trainer_free(tr);
    lt_model_free(m);

    /* the stopped run */
    m = model_with_lora();
    CHECK(m->be->ops.lm_head_ce_cap != NULL);
    g_ce = m->be->ops.lm_head_ce_cap;
    m->be->ops.lm_head_ce_cap = counting_ce;
    params(&tp);
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    g_tr = tr;
    for (int s = 1; s < STOP_STEP; s++) {
        g_passes = 0;
        CHECK_OK(lt_trainer_step(tr, &mt));
        CHECK_MSG(g_passes == 4, "step %d ran %d passes, want 4 (fuse_micro_batches 0, grad_accum 4)", s, g_passes);
        went_on[s] = mt.loss;
    }
    const int64_t epoch = tr->epoch, records_seen = tr->records_seen, micro_index = tr->micro_index;
    const size_t cursor = tr->cursor;
    size_t *perm = malloc(tr->n_records * sizeof *perm);
    memcpy(perm, tr->perm, tr->n_records * sizeof *perm);
    lora_copy w_before = weights(m);

    g_passes = 0;
    g_armed = 1;
    lt_status st = lt_trainer_step(tr, &mt);
    g_armed = 0;
    CHECK_MSG(st == LT_STOPPED, "the interrupted step returned %s (%s)", lt_status_string(st), lt_last_error());
    CHECK_MSG(g_passes == STOP_AFTER_PASS, "%d passes ran; the stop should have come after pass %d", g_passes,
              STOP_AFTER_PASS);
    CHECK(lt_trainer_get_step(tr) == STOP_STEP - 1);
    CHECK(mt.step == STOP_STEP - 1); /* the metrics still those of the last step */
    CHECK_MSG(tr->epoch == epoch && tr->cursor == cursor && tr->records_seen == records_seen &&
              tr->micro_index == micro_index,
              "cursor not restored: epoch %lld/%lld cursor %zu/%zu records_seen %lld/%lld micro_index %lld/%lld",
              (long long)tr->epoch, (long long)epoch, tr->cursor, cursor, (long long)tr->records_seen,
              (long long)records_seen, (long long)tr->micro_index, (long long)micro_index);
    CHECK_MSG(memcmp(perm, tr->perm, tr->n_records * sizeof *perm) == 0, "the epoch's order was not restored");
    lora_copy w_after = weights(m);
    CHECK(w_after.n == w_before.n && w_after.n > 0);
    CHECK_MSG(w_after.n == w_before.n && !memcmp(w_after.v, w_before.v, (size_t)w_after.n * 4),
              "the abandoned step changed the LoRA weights");
    free(w_after.v);
    free(w_before.v);
    free(perm);

    /* a checkpoint of the stopped state, then the same trainer trains on */
    char ckpt[512];
    snprintf(ckpt, sizeof ckpt, "%s/test_stop_pass_%ld", LT_BUILD_DIR, (long)getpid());
    CHECK_OK(lt_trainer_save_checkpoint(tr, ckpt));
    for (int s = STOP_STEP; s <= STEPS; s++) {
        g_passes = 0;
        CHECK_OK(lt_trainer_step(tr, &mt));
        CHECK(mt.step == s && g_passes == 4);
        went_on[s] = mt.loss;
    }
    CHECK(lt_trainer_step(tr, &mt) == LT_DONE);
    lora_copy w_went_on = weights(m);
    lt_trainer_free(tr);
    lt_model_free(m);

    /* resumed from that checkpoint in a fresh model and trainer */
    m = model_with_lora();
    params(&tp);
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    CHECK_OK(lt_trainer_load_checkpoint(tr, ckpt));
    CHECK(lt_trainer_get_step(tr) == STOP_STEP - 1);
    for (int s = STOP_STEP; s <= STEPS; s++) {
        CHECK_OK(lt_trainer_step(tr, &mt));
        resumed[s] = mt.loss;
    }
    lora_copy w_resumed = weights(m);
    lt_trainer_free(tr);
    lt_model_free(m);

    for (int s = 1; s <= STEPS; s++) {
        if (s < STOP_STEP) printf("step %d: loss %.9f straight, %.9f in the stopped run\n", s, straight[s], went_on[s]);
        else printf("step %d: loss %.9f straight, %.9f stopped and went on, %.9f resumed\n", s, straight[s], went_on[s],
                    resumed[s]);
        CHECK_MSG(fabs(went_on[s] - straight[s]) <= 1e-6, "step %d: %.9g after the stop, %.9g straight", s, went_on[s],
                  straight[s]);
        if (s >= STOP_STEP)
            CHECK_MSG(fabs(resumed[s] - straight[s]) <= 1e-6, "step %d: %.9g resumed, %.9g straight", s, resumed[s],
                      straight[s]);
    }
    double dw = 0, dr = 0;
    CHECK(w_went_on.n == w_straight.n && w_resumed.n == w_straight.n);
    for (int64_t i = 0; i < w_straight.n && w_went_on.n == w_straight.n && w_resumed.n == w_straight.n; i++) {
        dw = fmax(dw, fabs((double)w_went_on.v[i] - w_straight.v[i]));
        dr = fmax(dr, fabs((double)w_resumed.v[i] - w_straight.v[i]));
    }
    printf("final LoRA weights: max |diff| %.3g (went on), %.3g (resumed) from the straight run\n", dw, dr);
    CHECK(dw <= 1e-6 && dr <= 1e-6);
    free(w_straight.v);
    free(w_went_on.v);
    free(w_resumed.v);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", ckpt);
    if (!lt_test_failures && system(cmd) != 0) fprintf(stderr, "%s failed\n", cmd);
    lt_dataset_free(ds);
    lt_tokenizer_free(tok);
    return lt_test_done("test_stop_pass");
}

/* dist_common.h - helpers of the data-parallel tests: the tiny fixture model with a LoRA
 * adapter (dropout on), a token dataset whose records vary in
 * length (short last micro-batches at epoch ends), and a job that trains world_size ranks as
 * threads of this process over an in-process lt_comm, returning rank 0's losses and weights. */
#ifndef LT_DIST_COMMON_H
#define LT_DIST_COMMON_H
#include "../train/train_common.h"
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#define MAX_STEPS 16

/* the optimizer of every run (the tests set it); lr keeps a tiny random model's training sane */
static int32_t dist_optimizer = LT_OPTIM_ADAMW;

static inline lt_model *dist_model(void) {
    lt_model *m = fx_model("tiny-tied", 0);
    lt_lora_params lp;
    lt_lora_params_init(&lp);
    lp.r = 64; /* with 8-bit AdamW the lora_A tensors then keep 8-bit state, the small lora_B ones fp32 */
    lp.alpha = 16;
    lp.dropout = 0.1f;
    lp.seed = 5;
    if (lt_model_add_lora(m, &lp) != LT_OK) { fprintf(stderr, "lt_model_add_lora: %s\n", lt_last_error()); exit(1); }
    return m;
}

/* 23 records of 3..30 tokens, labels on every token */
static inline lt_dataset *dist_dataset(const lt_tokenizer *tok) {
    lt_dataset *ds = fx_dataset(tok);
    uint64_t x = 1234;
    for (int i = 0; i < 23; i++) {
        int32_t ids[32];
        int n = 3 + (i * 11) % 28;
        for (int t = 0; t < n; t++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            ids[t] = 3 + (int32_t)((x >> 33) % 250);
        }
        if (lt_dataset_add_tokens(ds, ids, NULL, (size_t)n) != LT_OK) {
            fprintf(stderr, "lt_dataset_add_tokens: %s\n", lt_last_error());
            exit(1);
        }
    }
    return ds;
}

/* world size 1 x grad_accum `window` is the reference; world_size W runs grad_accum window / W */
static inline void dist_params(lt_train_params *tp, int window, int world, int fuse, int steps) {
    lt_train_params_init(tp);
    tp->batch_size = 2;
    tp->grad_accum = window / world;
    tp->max_steps = steps;
    tp->lr = 2e-4; /* Unsloth's LoRA default */
    tp->warmup_steps = 2;
    tp->optimizer = dist_optimizer;
    tp->seed = 17;
    tp->fuse_micro_batches = fuse;
    tp->log_every = 0;
    tp->world_size = world;
}

/* every LoRA weight, concatenated (malloc'ed) */
static inline float *dist_weights(lt_model *m, size_t *n_out) {
    size_t n = 0;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            lt_lora_tensor *t = &m->layers[l].lora[p];
            if (t->A) n += (size_t)(t->r * t->in + t->out * t->r);
        }
    float *w = malloc(n * 4), *q = w;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            lt_lora_tensor *t = &m->layers[l].lora[p];
            if (!t->A) continue;
            m->be->ops.download(m->be, q, t->A, (size_t)(t->r * t->in) * 4);
            q += t->r * t->in;
            m->be->ops.download(m->be, q, t->B, (size_t)(t->out * t->r) * 4);
            q += t->out * t->r;
        }
    *n_out = n;
    return w;
}

/* One rank's run. */
typedef struct dist_rank {
    int rank;
    lt_model *m;
    lt_dataset *ds;
    lt_train_params tp;
    const char *resume;        /* checkpoint to load first, or NULL */
    int stop_after;            /* > 0: this rank stops calling the trainer after that many steps */
    double losses[MAX_STEPS];
    int steps;                 /* steps taken */
    lt_status st;              /* the last lt_trainer_step status */
    char err[1024];
    double t_fail;             /* lt_time-like seconds when it failed (0 = did not) */
    float *w;
    size_t nw;
} dist_rank;

static inline double dist_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline void *dist_rank_main(void *arg) {
    dist_rank *r = arg;
    lt_trainer *tr = NULL;
    r->st = lt_trainer_new(r->m, r->ds, &r->tp, &tr);
    if (r->st == LT_OK && r->resume) r->st = lt_trainer_load_checkpoint(tr, r->resume);
    lt_metrics mt = {sizeof mt};
    while (r->st == LT_OK) {
        if (r->stop_after > 0 && r->steps == r->stop_after) break; /* stops participating, says nothing */
        r->st = lt_trainer_step(tr, &mt);
        if (r->st == LT_OK && r->steps < MAX_STEPS) r->losses[r->steps++] = mt.loss;
    }
    if (r->st < 0) {
        snprintf(r->err, sizeof r->err, "%s", lt_last_error());
        r->t_fail = dist_now();
    }
    r->w = dist_weights(r->m, &r->nw);
    lt_trainer_free(tr);
    return NULL;
}

/* Trains world ranks (threads) of one in-process group; each rank gets its own model. Returns
 * the ranks (caller frees with dist_free). The ranks must end with LT_DONE unless stop_after /
 * timeout tests say otherwise. */
static inline dist_rank *dist_run(lt_dataset *ds, int window, int world, int fuse, int steps, const char *resume,
                           const char *out, int save_every, double timeout_s, int stop_rank, int stop_after) {
    lt_comm *comm = NULL;
    lt_comm_params cp;
    lt_comm_params_init(&cp);
    cp.world_size = world;
    if (lt_comm_new(&cp, &comm) != LT_OK) { fprintf(stderr, "lt_comm_new: %s\n", lt_last_error()); exit(1); }
    dist_rank *r = calloc((size_t)world, sizeof *r);
    pthread_t th[16];
    for (int k = 0; k < world; k++) {
        r[k].rank = k;
        r[k].m = dist_model();
        r[k].ds = ds;
        dist_params(&r[k].tp, window, world, fuse, steps);
        r[k].tp.rank = k;
        r[k].tp.comm = comm;
        r[k].tp.dist_timeout_s = timeout_s;
        r[k].tp.output_dir = out;
        r[k].tp.save_every = save_every;
        r[k].resume = resume;
        r[k].stop_after = k == stop_rank ? stop_after : 0;
    }
    for (int k = 0; k < world; k++) pthread_create(&th[k], NULL, dist_rank_main, &r[k]);
    for (int k = 0; k < world; k++) pthread_join(th[k], NULL);
    for (int k = 0; k < world; k++) lt_model_free(r[k].m);
    lt_comm_free(comm);
    return r;
}

static inline void dist_free(dist_rank *r, int world) {
    for (int k = 0; k < world; k++) free(r[k].w);
    free(r);
}

/* The reference: one rank, no communicator at all (the plain trainer). */
static inline dist_rank *dist_run_single(lt_dataset *ds, int window, int fuse, int steps, const char *resume) {
    dist_rank *r = calloc(1, sizeof *r);
    r->m = dist_model();
    r->ds = ds;
    dist_params(&r->tp, window, 1, fuse, steps);
    r->resume = resume;
    dist_rank_main(r);
    lt_model_free(r->m);
    return r;
}

static inline double max_abs_diff(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (!(e <= d)) d = isnan(e) ? INFINITY : e;
    }
    return d;
}
#endif

/* test_dist_nccl.c - the NCCL path on one GPU (exits 77 where no GPU or no NCCL is there, as in
 * CI): the tiny fixture model trains 10 steps on CUDA (deterministic kernels, LoRA dropout on,
 * grad_accum 4, fused and unfused passes, 8-bit AdamW) three ways:
 *   a) the plain trainer (no collective), twice (the kernels repeat bit for bit),
 *   b) world size 1 through NCCL (nccl_id from lt_nccl_get_unique_id),
 *   c) world size 1 through NCCL with the id shared over an in-process lt_comm;
 * b and c must equal a bit for bit: losses, gradient norms and every LoRA weight. */
#include "dist_common.h"

#define STEPS 10

/* the repository root at run time (the GPU machine runs a copy of the tree elsewhere) */
static const char *root(void) {
    const char *r = getenv("LT_REPO_ROOT");
    return r && *r ? r : LT_REPO_ROOT;
}

typedef struct run_out {
    double loss[STEPS], norm[STEPS];
    float *w;
    size_t nw;
    int steps;
} run_out;

static int cuda_model(lt_model **out) {
    lt_model_params mp;
    lt_model_params_init(&mp);
    mp.device = LT_DEVICE_CUDA;
    char dir[2048];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/data/tiny-untied", root());
    lt_status st = lt_model_load(dir, &mp, out);
    if (st != LT_OK) {
        fprintf(stderr, "lt_model_load (cuda): %s\n", lt_last_error());
        return 0;
    }
    lt_lora_params lp;
    lt_lora_params_init(&lp);
    lp.r = 16;
    lp.dropout = 0.1f;
    lp.seed = 5;
    CHECK_OK(lt_model_add_lora(*out, &lp));
    return 1;
}

/* mode 0: plain; 1: nccl_id; 2: comm */
static void run(lt_dataset *ds, int fuse, int mode, run_out *o) {
    memset(o, 0, sizeof *o);
    lt_model *m = NULL;
    if (!cuda_model(&m)) exit(1);
    lt_train_params tp;
    lt_train_params_init(&tp);
    tp.batch_size = 2;
    tp.grad_accum = 4;
    tp.max_steps = STEPS;
    tp.lr = 2e-4;
    tp.warmup_steps = 2;
    tp.seed = 17;
    tp.deterministic = 1;
    tp.fuse_micro_batches = fuse;
    tp.log_every = 0;
    uint8_t id[LT_NCCL_ID_BYTES];
    lt_comm *comm = NULL;
    if (mode == 1) {
        CHECK_OK(lt_nccl_get_unique_id(id));
        tp.nccl_id = id;
    } else if (mode == 2) {
        lt_comm_params cp;
        lt_comm_params_init(&cp);
        CHECK_OK(lt_comm_new(&cp, &comm));
        tp.comm = comm;
    }
    lt_trainer *tr = NULL;
    lt_status st = lt_trainer_new(m, ds, &tp, &tr);
    CHECK_MSG(st == LT_OK, "lt_trainer_new (mode %d): %s", mode, lt_last_error());
    lt_metrics mt = {sizeof mt};
    while (st == LT_OK && (st = lt_trainer_step(tr, &mt)) == LT_OK) {
        o->loss[o->steps] = mt.loss;
        o->norm[o->steps] = mt.grad_norm;
        o->steps++;
    }
    CHECK_MSG(st == LT_DONE, "training (mode %d) ended with %s: %s", mode, lt_status_string(st), lt_last_error());
    o->w = dist_weights(m, &o->nw);
    lt_trainer_free(tr);
    lt_comm_free(comm);
    lt_model_free(m);
}

static void same(const char *what, const run_out *a, const run_out *b) {
    int eq = a->steps == b->steps && a->nw == b->nw && !memcmp(a->loss, b->loss, sizeof a->loss) &&
             !memcmp(a->norm, b->norm, sizeof a->norm) && !memcmp(a->w, b->w, a->nw * 4);
    double dl = 0;
    for (int s = 0; s < STEPS; s++) dl = fmax(dl, fabs(a->loss[s] - b->loss[s]));
    CHECK_MSG(eq, "%s: not bit for bit (max |loss diff| %g, max |weight diff| %g)", what, dl,
              a->nw == b->nw ? max_abs_diff(a->w, b->w, a->nw) : INFINITY);
    printf("%-52s %s (final loss %.6f)\n", what, eq ? "bit for bit" : "DIFFERENT", b->loss[STEPS - 1]);
}

int main(void) {
    if (lt_cuda_device_count() == 0) LT_TEST_SKIP("no CUDA device (or a CPU-only build)");
    uint8_t probe[LT_NCCL_ID_BYTES];
    if (lt_nccl_get_unique_id(probe) != LT_OK) LT_TEST_SKIP("no NCCL: %s", lt_last_error());
    char tdir[2048];
    snprintf(tdir, sizeof tdir, "%s/assets/qwen2-tokenizer", root());
    lt_tokenizer *tok = NULL;
    if (lt_tokenizer_load(tdir, &tok) != LT_OK) {
        fprintf(stderr, "lt_tokenizer_load(%s): %s\n", tdir, lt_last_error());
        return 1;
    }
    lt_dataset *ds = dist_dataset(tok);
    for (int fuse = 1; fuse >= 0; fuse--) {
        run_out a, a2, b, c;
        run(ds, fuse, 0, &a);
        run(ds, fuse, 0, &a2);
        run(ds, fuse, 1, &b);
        run(ds, fuse, 2, &c);
        char what[96];
        snprintf(what, sizeof what, "fuse %d: plain trainer, run twice", fuse);
        same(what, &a, &a2);
        snprintf(what, sizeof what, "fuse %d: world size 1 through NCCL vs plain", fuse);
        same(what, &a, &b);
        snprintf(what, sizeof what, "fuse %d: NCCL with the id shared by lt_comm vs plain", fuse);
        same(what, &a, &c);
        free(a.w); free(a2.w); free(b.w); free(c.w);
    }
    lt_dataset_free(ds);
    lt_tokenizer_free(tok);
    return lt_test_done("test_dist_nccl");
}

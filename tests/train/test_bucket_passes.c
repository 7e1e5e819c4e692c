/* test_bucket_passes.c - token-budget buckets (lt_train_params.bucket_passes) change nothing but
 * the passes' shapes:
 *   1. training with buckets gives the losses, gradient norms and LoRA weights of training
 *      without them (records of varying lengths, LoRA dropout 0.1, a few steps of AdamW and of
 *      8-bit AdamW, fused and unfused micro-batches; within 1e-6), while the passes really are
 *      padded (dummy tokens run) and have fewer distinct shapes;
 *   2. the notebook's recipe on the bundled ruozhiba data (batch 2, accumulation 8, max 2048,
 *      alpaca-zh, the Qwen2 tokenizer): a whole epoch of windows forms passes of at most 6
 *      distinct shapes with at most 1/8 padding (without buckets: nearly every window its own).
 * The CPU backend has no graphs: that replays follow from few shapes is the CUDA tests' part. */
#include "train_common.h"
#include "train/trainer_impl.h"
#include <math.h>

#define STEPS 4

typedef struct run {
    double loss[STEPS], norm[STEPS];
    float *w[64];
    int64_t n[64];
    int k, shapes;
    int64_t pad, tokens;
} run;

static lt_dataset *varied_dataset(lt_tokenizer *tok) {
    lt_dataset *ds = fx_dataset(tok);
    uint64_t x = 777;
    for (int i = 0; i < 48; i++) {
        int32_t ids[80], labels[80];
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        int n = 4 + (int)((x >> 33) % 70); /* 4..73 tokens */
        for (int t = 0; t < n; t++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            ids[t] = 3 + (int32_t)((x >> 33) % 250);
            labels[t] = (i % 3 == 0 && t < n / 2) ? -100 : ids[t]; /* some prompts without loss */
        }
        CHECK_OK(lt_dataset_add_tokens(ds, ids, labels, (size_t)n));
    }
    return ds;
}

static void train(lt_tokenizer *tok, int bucket, int fuse, int optim, int exact_scale, run *r) {
    memset(r, 0, sizeof *r);
    lt_model *m = fx_model("tiny-untied", 1);
    m->lora.dropout = 0.1f; /* the masks must be the same with and without padding */
    lt_dataset *ds = varied_dataset(tok);
    lt_train_params tp;
    lt_train_params_init(&tp);
    tp.batch_size = 2;
    tp.grad_accum = 4;
    tp.max_steps = STEPS;
    tp.lr = 1e-3;
    tp.warmup_steps = 0;
    tp.scheduler = LT_SCHED_CONSTANT;
    tp.optimizer = optim;
    tp.max_grad_norm = 0.5;
    tp.fuse_micro_batches = fuse;
    tp.bucket_passes = bucket;
    lt_trainer *tr = NULL;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    CHECK(tr->bucket == bucket);
    if (exact_scale) tr->bucket_exp = -1; /* the passes' gradient scale 1/labelled tokens, as without buckets */
    for (int s = 0; s < STEPS; s++) {
        lt_metrics mt;
        memset(&mt, 0, sizeof mt);
        mt.struct_size = sizeof mt;
        CHECK_OK(lt_trainer_step(tr, &mt));
        r->loss[s] = mt.loss;
        r->norm[s] = mt.grad_norm;
        r->tokens += mt.tokens;
    }
    r->shapes = tr->n_shapes;
    r->pad = tr->pad_tokens;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++)
            for (int isb = 0; isb < 2; isb++) {
                lt_lora_tensor *t = &m->layers[l].lora[p];
                if (!t->A) continue;
                int64_t n = isb ? t->out * t->r : t->r * t->in;
                r->w[r->k] = fx_download(m, isb ? t->B : t->A, n);
                r->n[r->k++] = n;
            }
    lt_trainer_free(tr);
    lt_dataset_free(ds);
    lt_model_free(m);
}

/* exact_scale: the passes scale the gradient as without buckets: then the padding changes no bit */
static void same_training(lt_tokenizer *tok, int fuse, int optim, int exact_scale) {
    run a, b;
    train(tok, 0, fuse, optim, 0, &a);
    train(tok, 1, fuse, optim, exact_scale, &b);
    const char *oname = optim == LT_OPTIM_ADAMW ? "adamw" : "adamw_8bit";
    double dl = 0, dn = 0, dw = 0, wmax = 0;
    for (int s = 0; s < STEPS; s++) {
        dl = fmax(dl, fabs(a.loss[s] - b.loss[s]));
        dn = fmax(dn, fabs(a.norm[s] - b.norm[s]) / fmax(a.norm[s], 1e-30));
    }
    CHECK(a.k == b.k && a.k > 0);
    int64_t moved = 0;
    for (int i = 0; i < a.k && a.k == b.k; i++) {
        CHECK(a.n[i] == b.n[i]);
        for (int64_t j = 0; j < a.n[i]; j++) {
            dw = fmax(dw, fabs((double)a.w[i][j] - b.w[i][j]));
            wmax = fmax(wmax, fabs((double)a.w[i][j]));
            moved += a.w[i][j] != 0.0f;
        }
    }
    printf("fuse %d %-10s%s: losses", fuse, oname, exact_scale ? " (1/labels scale in the passes)" : "");
    for (int s = 0; s < STEPS; s++) printf(" %.7f/%.7f", a.loss[s], b.loss[s]);
    printf("\n  max |loss diff| %.3g, grad-norm rel diff %.3g, LoRA weight max |diff| %.3g (max |w| %.3g); "
           "shapes %d -> %d, %lld dummy tokens beside %lld\n", dl, dn, dw, wmax, a.shapes, b.shapes,
           (long long)b.pad, (long long)b.tokens);
    if (exact_scale) CHECK_MSG(dl == 0 && dn == 0 && dw == 0, "padding alone changed bits: loss %.3g, norm %.3g, "
                               "weights %.3g", dl, dn, dw);
    CHECK_MSG(dl <= 1e-6, "fuse %d %s: the losses differ by %.3g with buckets", fuse, oname, dl);
    CHECK_MSG(dn <= 1e-5, "fuse %d %s: the gradient norms differ by %.3g (relative) with buckets", fuse, oname, dn);
    CHECK_MSG(dw <= 1e-6, "fuse %d %s: LoRA weights differ by %.3g with buckets", fuse, oname, dw);
    CHECK_MSG(a.tokens == b.tokens, "tokens reported: %lld vs %lld (dummy tokens must not count)",
              (long long)a.tokens, (long long)b.tokens);
    CHECK_MSG(b.pad > 0, "no pass was padded: the test does not exercise buckets");
    CHECK_MSG(b.shapes < a.shapes, "buckets did not reduce the distinct pass shapes (%d -> %d)", a.shapes, b.shapes);
    CHECK(moved > 0 && a.loss[0] != a.loss[STEPS - 1]); /* training moved */
    for (int i = 0; i < a.k; i++) free(a.w[i]);
    for (int i = 0; i < b.k; i++) free(b.w[i]);
}

/* One epoch of the notebook's windows, formed but not run: distinct shapes and padding. */
static void notebook_shapes(lt_tokenizer *tok, int bucket, int *shapes, double *pad_share, int64_t *windows) {
    lt_dataset_params dp;
    lt_dataset_params_init(&dp); /* alpaca-zh, max 2048, EOS: the notebook's */
    lt_dataset *ds = NULL;
    CHECK_OK(lt_dataset_load(LT_REPO_ROOT "/assets/ruozhiba/ruozhiba_qa.json", tok, &dp, &ds));
    lt_model *m = fx_model("tiny-untied", 1); /* only the trainer's set-up: no pass runs */
    lt_train_params tp;
    lt_train_params_init(&tp); /* batch 2, accumulation 8: the notebook's */
    tp.bucket_passes = bucket;
    lt_trainer *tr = NULL;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    const size_t n = lt_dataset_size(ds);
    const int64_t per_window = (int64_t)tp.batch_size * tp.grad_accum;
    int64_t tokens = 0, w = 0;
    for (; (w + 1) * per_window <= (int64_t)n; w++) {
        const lt_batch *runs = NULL;
        int R = 0, exp = 0;
        int64_t items = 0, tok_w = 0;
        CHECK_OK(lt_trainer_form_window(tr, &runs, &R, &items, &tok_w, &exp));
        tokens += tok_w;
        if (bucket) {
            CHECK(exp >= 0 && ((int64_t)1 << exp) >= items);
            for (int r = 0; r < R; r++) {
                CHECK(runs[r].n_tokens == lt_bucket_tokens(runs[r].n_tokens, tr->fuse_cap));
                CHECK(runs[r].cu_seqlens[runs[r].nseq] == runs[r].n_tokens);
            }
        }
    }
    *shapes = tr->n_shapes;
    *pad_share = tokens > 0 ? (double)tr->pad_tokens / (double)tokens : 0;
    *windows = w;
    if (bucket) {
        printf("notebook recipe, buckets: %d shapes:", tr->n_shapes);
        for (int i = 0; i < tr->n_shapes; i++)
            printf(" %dx%d/%d", (int)tr->shapes[i].n_tokens, (int)tr->shapes[i].nseq, (int)tr->shapes[i].max_seqlen);
        printf(" (tokens x sequences / longest)\n");
    }
    lt_trainer_free(tr);
    lt_model_free(m);
    lt_dataset_free(ds);
}

/* lt_bucket_tokens: at most 1/8 above, multiples of 128 (and more for large passes), capped */
static void bucket_sizes(void) {
    CHECK(lt_bucket_tokens(1, 4096) == 128);
    CHECK(lt_bucket_tokens(1400, 4096) == 1408);
    CHECK(lt_bucket_tokens(2049, 4096) == 2304);
    CHECK(lt_bucket_tokens(4000, 4096) == 4096);
    CHECK(lt_bucket_tokens(4096, 4096) == 4096);
    CHECK(lt_bucket_tokens(500, 450) == 500); /* beyond the budget: as it is */
    CHECK(lt_bucket_tokens(300, 320) == 320);
    for (int64_t n = 1; n <= 20000; n++) {
        const int64_t b = lt_bucket_tokens(n, 1 << 20);
        if (!(b >= n && (b % 128) == 0 && (n < 1024 || b - n <= n / 8))) {
            CHECK_MSG(0, "lt_bucket_tokens(%lld) = %lld", (long long)n, (long long)b);
            break;
        }
    }
}

int main(void) {
    bucket_sizes();
    lt_tokenizer *tok = fx_tokenizer();
    same_training(tok, 1, LT_OPTIM_ADAMW, 0);
    same_training(tok, 1, LT_OPTIM_ADAMW_8BIT, 0);
    same_training(tok, 0, LT_OPTIM_ADAMW, 0);
    same_training(tok, 1, LT_OPTIM_ADAMW_8BIT, 1);
    same_training(tok, 0, LT_OPTIM_ADAMW, 1);
    int s1 = 0, s0 = 0;
    double p1 = 0, p0 = 0;
    int64_t w1 = 0, w0 = 0;
    notebook_shapes(tok, 1, &s1, &p1, &w1);
    notebook_shapes(tok, 0, &s0, &p0, &w0);
    printf("notebook recipe on ruozhiba, %lld windows: %d distinct pass shapes with buckets (%.1f%% dummy tokens), "
           "%d%s without\n", (long long)w1, s1, 100 * p1, s0, s0 >= LT_SHAPE_LOG ? " or more" : "");
    CHECK(w1 == w0 && w1 >= 90);
    CHECK_MSG(s1 >= 1 && s1 <= 6, "%d distinct pass shapes with buckets (want <= 6)", s1);
    CHECK_MSG(p1 <= 0.125, "%.1f%% of the tokens are padding", 100 * p1);
    CHECK_MSG(s0 > 3 * s1, "without buckets only %d shapes: the data do not vary as expected", s0);
    CHECK(p0 == 0);
    lt_tokenizer_free(tok);
    return lt_test_done("test_bucket_passes");
}

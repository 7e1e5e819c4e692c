/* test_trainer_accum.c - gradient accumulation is exact: 4 micro-batches of 4 records with
 * accumulation 4 give the same step as one micro-batch of 16 (same loss, grad norm, clipped
 * gradients and updated adapter, relative error <= 1e-5), because both normalise by the
 * labelled tokens of the whole window. The same holds with the window's short micro-batches fused
 * into fewer passes (fuse_micro_batches, the default), which must actually fuse here. */
#include "train_common.h"
#include "train/trainer_impl.h"

typedef struct result { lt_metrics mt; float *w[64], *g[64]; int64_t n[64]; int k; int64_t passes; } result;

static void one_step(lt_tokenizer *tok, int batch, int accum, int fuse, result *r) {
    lt_model *m = fx_model("tiny-untied", 1); /* adapter with dropout 0: both runs see the same branch */
    lt_dataset *ds = fx_dataset(tok);
    uint64_t x = 12345;
    for (int i = 0; i < 16; i++) {
        int32_t ids[40], labels[40];
        int n = i == 15 ? 38 : 5 + (i % 5) * 2; /* short records and one long one: micro-batches fuse */
        for (int t = 0; t < n; t++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            ids[t] = 3 + (int32_t)((x >> 33) % 250);
            labels[t] = (i % 3 == 0 && t < n / 2) ? -100 : ids[t];
        }
        CHECK_OK(lt_dataset_add_tokens(ds, ids, labels, (size_t)n));
    }
    lt_train_params tp;
    lt_train_params_init(&tp);
    tp.batch_size = batch;
    tp.grad_accum = accum;
    tp.max_steps = 1;
    tp.lr = 1e-2;
    tp.warmup_steps = 0;
    tp.scheduler = LT_SCHED_CONSTANT;
    tp.optimizer = LT_OPTIM_ADAMW;
    tp.max_grad_norm = 0.25;
    tp.fuse_micro_batches = fuse;
    lt_trainer *tr = NULL;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    r->mt.struct_size = sizeof r->mt;
    CHECK_OK(lt_trainer_step(tr, &r->mt));
    r->passes = (int64_t)tr->micro_index;
    r->k = 0;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++)
            for (int isb = 0; isb < 2; isb++) {
                lt_lora_tensor *t = &m->layers[l].lora[p];
                int64_t n = isb ? t->out * t->r : t->r * t->in;
                r->w[r->k] = fx_download(m, isb ? t->B : t->A, n);
                r->g[r->k] = fx_download(m, isb ? t->dB : t->dA, n);
                r->n[r->k++] = n;
            }
    lt_trainer_free(tr);
    lt_dataset_free(ds);
    lt_model_free(m);
}

static void compare(const char *what, result *a, result *b) {
    printf("%s: loss %.8f grad_norm %.8f tokens %lld passes %lld; 16 x 1: loss %.8f grad_norm %.8f tokens %lld\n", what,
           a->mt.loss, a->mt.grad_norm, (long long)a->mt.tokens, (long long)a->passes, b->mt.loss, b->mt.grad_norm,
           (long long)b->mt.tokens);
    CHECK(a->mt.tokens == b->mt.tokens);
    CHECK(fabs(a->mt.loss - b->mt.loss) <= 1e-5 * fabs(b->mt.loss));
    CHECK(fabs(a->mt.grad_norm - b->mt.grad_norm) <= 1e-5 * b->mt.grad_norm);
    CHECK(b->mt.grad_norm > 0.25); /* clipping was active */
    double wg = 0, ww = 0;
    CHECK(a->k == b->k);
    for (int i = 0; i < a->k; i++) {
        double eg = lt_rel_err(a->g[i], b->g[i], (size_t)a->n[i]), ew = lt_rel_err(a->w[i], b->w[i], (size_t)a->n[i]);
        if (eg > wg) wg = eg;
        if (ew > ww) ww = ew;
        CHECK_MSG(eg <= 1e-5, "%s: tensor %d gradient rel err %g", what, i, eg);
        CHECK_MSG(ew <= 1e-5, "%s: tensor %d weight rel err %g", what, i, ew);
    }
    printf("%s: worst relative error: gradients %.3g, updated weights %.3g\n", what, wg, ww);
}

static void release(result *r) {
    for (int i = 0; i < r->k; i++) { free(r->g[i]); free(r->w[i]); }
}

int main(void) {
    lt_tokenizer *tok = fx_tokenizer();
    result a, f, b;
    one_step(tok, 4, 4, 0, &a);
    one_step(tok, 4, 4, 1, &f);
    one_step(tok, 16, 1, 1, &b);
    CHECK_MSG(a.passes == 4, "unfused: %lld passes, expected 4", (long long)a.passes);
    CHECK_MSG(f.passes < 4 && f.passes >= 1, "fused: %lld passes, expected fewer than 4", (long long)f.passes);
    compare("4 x 4, one pass each", &a, &b);
    compare("4 x 4, fused", &f, &b);
    release(&a); release(&f); release(&b);
    lt_tokenizer_free(tok);
    return lt_test_done("test_trainer_accum");
}

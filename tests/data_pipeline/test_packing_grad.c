/* test_packing_grad.c - a padding-free packed micro-batch gives the same loss and LoRA
 * gradients as its sequences run one by one (batch of one each, gradients summed), on the
 * CPU backend with the tiny Qwen2 fixture and its PEFT adapter (B != 0, so every gradient is
 * non-zero): relative error <= 1e-5. The records come from a dataset through
 * lt_batch_from_dataset in a seeded epoch order, some with masked prompts (-100). */
#include "lt_test.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "model/graph.h"
#include <stdlib.h>

#define FIX LT_REPO_ROOT "/tests/fixtures/data/tiny-untied"

typedef struct { float *g; int64_t n; } grad;

/* Zeroes every LoRA gradient (uploads zeros). */
static void zero_grads(lt_model *m) {
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            lt_lora_tensor *t = &m->layers[l].lora[p];
            if (!t->A) continue;
            size_t na = (size_t)(t->r * t->in), nb = (size_t)(t->out * t->r);
            float *z = calloc(na > nb ? na : nb, 4);
            m->be->ops.upload(m->be, t->dA, z, na * 4);
            m->be->ops.upload(m->be, t->dB, z, nb * 4);
            free(z);
        }
}

/* Downloads every LoRA gradient into one host array [total]. */
static float *all_grads(lt_model *m, int64_t *total) {
    int64_t n = 0;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++)
            if (m->layers[l].lora[p].A) n += m->layers[l].lora[p].r * (m->layers[l].lora[p].in + m->layers[l].lora[p].out);
    float *h = malloc((size_t)n * 4), *w = h;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            lt_lora_tensor *t = &m->layers[l].lora[p];
            if (!t->A) continue;
            m->be->ops.download(m->be, w, t->dA, (size_t)(t->r * t->in) * 4);
            w += t->r * t->in;
            m->be->ops.download(m->be, w, t->dB, (size_t)(t->out * t->r) * 4);
            w += t->out * t->r;
        }
    *total = n;
    return h;
}

int main(void) {
    lt_model_params mp;
    lt_model_params_init(&mp);
    mp.device = LT_DEVICE_CPU;
    mp.quant = LT_QUANT_NONE;
    lt_model *m;
    if (lt_model_load(FIX, &mp, &m) != LT_OK) { fprintf(stderr, "model: %s\n", lt_last_error()); return 1; }
    if (lt_model_load_adapter(m, FIX "/adapter") != LT_OK) { fprintf(stderr, "adapter: %s\n", lt_last_error()); return 1; }
    lt_tokenizer *tok;
    if (lt_tokenizer_load(LT_REPO_ROOT "/assets/qwen2-tokenizer", &tok) != LT_OK) {
        fprintf(stderr, "tokenizer: %s\n", lt_last_error());
        return 1;
    }
    /* six records of different lengths; odd ones have a masked prompt (response-only style) */
    lt_dataset_params dp;
    lt_dataset_params_init(&dp);
    dp.format = LT_DATA_TOKENS;
    lt_dataset *ds;
    CHECK_OK(lt_dataset_new(tok, &dp, &ds));
    int lens[] = {7, 19, 3, 33, 12, 26};
    int V = m->cfg.vocab_size;
    uint64_t k = 0;
    for (int r = 0; r < 6; r++) {
        int32_t ids[64], labels[64];
        for (int t = 0; t < lens[r]; t++) {
            ids[t] = (int32_t)(lt_rng_u32(7, 1, k++) % (uint32_t)V);
            labels[t] = (r & 1) && t < lens[r] / 2 ? -100 : ids[t];
        }
        CHECK_OK(lt_dataset_add_tokens(ds, ids, labels, (size_t)lens[r]));
    }
    size_t order[6];
    lt_dataset_permutation(6, 3407, 0, order);
    lt_graph_pass pass = {0, 3407, 0}; /* dropout off: the same function either way */

    /* packed: one micro-batch of all six */
    lt_batch b = {0};
    CHECK_OK(lt_batch_from_dataset(&b, ds, order, 6, 0));
    CHECK(b.nseq == 6 && b.n_tokens == 100);
    zero_grads(m);
    double loss_packed = 0;
    CHECK_OK(lt_graph_forward_backward(m, &b, 1.0f, &pass, &loss_packed));
    int64_t n_g;
    float *g_packed = all_grads(m, &n_g);
    int64_t targets_packed = b.n_targets;

    /* one by one, gradients summed */
    zero_grads(m);
    double loss_single = 0;
    int64_t targets_single = 0;
    for (int r = 0; r < 6; r++) {
        CHECK_OK(lt_batch_from_dataset(&b, ds, &order[r], 1, 0));
        targets_single += b.n_targets;
        CHECK_OK(lt_graph_forward_backward(m, &b, 1.0f, &pass, &loss_single));
        /* and the per-sequence loss through the public API agrees */
        const int32_t *ids, *labels;
        size_t n;
        lt_dataset_record(ds, order[r], &ids, &labels, &n);
        double mean = 0, sum1 = 0;
        CHECK_OK(lt_model_loss(m, ids, labels, n, &mean));
        lt_batch one = {0};
        lt_batch_pack(&one, 1, &ids, &labels, &n);
        CHECK_OK(lt_graph_loss(m, &one, &sum1));
        CHECK_MSG(fabs(mean * (double)one.n_targets - sum1) <= 1e-5 * fabs(sum1), "record %zu: %g vs %g", order[r],
                  mean * (double)one.n_targets, sum1);
        lt_batch_free(&one);
    }
    int64_t n_g2;
    float *g_single = all_grads(m, &n_g2);
    CHECK(targets_packed == targets_single && n_g == n_g2 && n_g > 0);
    double rel_loss = fabs(loss_packed - loss_single) / fabs(loss_single);
    double rel_grad = lt_rel_err(g_packed, g_single, (size_t)n_g);
    double norm = 0;
    for (int64_t i = 0; i < n_g; i++) norm += (double)g_single[i] * g_single[i];
    printf("packed vs one by one: loss sum %.9g vs %.9g (rel %.2g); %lld LoRA gradient values, rel err %.2g "
           "(|g| = %.4g)\n", loss_packed, loss_single, rel_loss, (long long)n_g, rel_grad, sqrt(norm));
    CHECK(norm > 0);
    CHECK_MSG(rel_loss <= 1e-5, "loss rel err %g", rel_loss);
    CHECK_MSG(rel_grad <= 1e-5, "gradient rel err %g", rel_grad);
    /* a control that shows the check can fail: the same tokens and targets as one long sequence
     * (attention crossing records, positions not restarting) give another loss */
    CHECK_OK(lt_batch_from_dataset(&b, ds, order, 6, 0));
    for (int32_t t = 0; t < b.n_tokens; t++) b.pos[t] = t;
    b.cu_seqlens[1] = b.n_tokens;
    b.nseq = 1;
    b.max_seqlen = b.n_tokens;
    double loss_merged = 0;
    CHECK_OK(lt_graph_loss(m, &b, &loss_merged));
    printf("control: the records merged into one sequence give %.9g (rel %.2g)\n", loss_merged,
           fabs(loss_merged - loss_single) / fabs(loss_single));
    CHECK(fabs(loss_merged - loss_single) > 1e-4 * fabs(loss_single));
    free(g_packed);
    free(g_single);
    lt_batch_free(&b);
    lt_dataset_free(ds);
    lt_tokenizer_free(tok);
    lt_model_free(m);
    return lt_test_done("test_packing_grad");
}

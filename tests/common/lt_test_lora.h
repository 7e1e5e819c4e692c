/* lt_test_lora.h - LoRA helpers shared by the tests that train on two devices or two ways and compare
 * (lt_model_foreach_lora callbacks): every LoRA gradient downloaded into one growing array, and the B
 * matrices of a fresh adapter seeded so that dA is not zero. Include after lt_test.h. */
#ifndef LT_TEST_LORA_H
#define LT_TEST_LORA_H
#include "model/model.h"
#include "model/graph.h"
#include "data/dataset.h"
#include "core/rng.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

long lt_cuda_graph_launches(lt_backend *be); /* cuda/cuda_test.h */

typedef struct lt_test_grads {
    float *v;
    size_t n, cap;
} lt_test_grads;

/* lt_model_foreach_lora callback, ctx: lt_test_grads: appends dA then dB of each LoRA tensor */
static inline void lt_test_collect_grads(lt_model *m, int layer, int proj, lt_lora_tensor *t, void *ctx) {
    lt_test_grads *g = (lt_test_grads *)ctx;
    (void)layer; (void)proj;
    size_t need = g->n + (size_t)(t->r * t->in + t->out * t->r);
    if (need > g->cap) {
        g->cap = need * 2;
        g->v = (float *)realloc(g->v, g->cap * sizeof(float));
    }
    CHECK_OK(m->be->ops.download(m->be, g->v + g->n, t->dA, (size_t)(t->r * t->in) * 4));
    g->n += (size_t)(t->r * t->in);
    CHECK_OK(m->be->ops.download(m->be, g->v + g->n, t->dB, (size_t)(t->out * t->r) * 4));
    g->n += (size_t)(t->out * t->r);
}

/* lt_model_foreach_lora callback, ctx: a const uint64_t seed: B = 0.05 x uniform(-1, 1), the same
 * values on every device */
static inline void lt_test_seed_b(lt_model *m, int layer, int proj, lt_lora_tensor *t, void *ctx) {
    uint64_t seed = *(const uint64_t *)ctx;
    size_t n = (size_t)(t->out * t->r);
    float *h = (float *)malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = 0.05f * (2.0f * lt_rng_uniform(seed, (uint64_t)(layer * 16 + proj), i) - 1.0f);
    CHECK_OK(m->be->ops.upload(m->be, t->B, h, n * sizeof(float)));
    free(h);
}
/* lt_model_foreach_lora callback: B *= 0.75, as an optimizer step would change it */
static inline void lt_test_shrink_b(lt_model *m, int layer, int proj, lt_lora_tensor *t, void *ctx) {
    (void)layer; (void)proj; (void)ctx;
    CHECK_OK(m->be->ops.scale(m->be, t->B, (int64_t)(t->out * t->r), 0.75f));
}

/* lt_test_cuda_passes' three batches, ids (labels alike) lo + (a deterministic sequence) % span:
 * b3[0] and b3[1] two records of n0 and n1 tokens each (one shape, other tokens), b3[2] three of n2
 * (the larger pass that makes the graph buffers grow). n0, n1 <= 64, n2 <= 128. */
static inline void lt_test_graph_batches(lt_batch *b3, int lo, int span, int n0, int n1, int n2) {
    for (int v = 0; v < 2; v++) {
        int32_t r0[64], r1[64];
        for (int i = 0; i < n0; i++) r0[i] = lo + (i * (37 + 2 * v) + 11 + v) % span;
        for (int i = 0; i < n1; i++) r1[i] = lo + (i * (91 - 4 * v) + 5) % span;
        const int32_t *ids[2] = {r0, r1};
        const size_t lens[2] = {(size_t)n0, (size_t)n1};
        memset(&b3[v], 0, sizeof b3[v]);
        CHECK_OK(lt_batch_pack(&b3[v], 2, ids, ids, lens));
    }
    int32_t r[3][128];
    for (int q = 0; q < 3; q++)
        for (int i = 0; i < n2; i++) r[q][i] = lo + (i * (13 + 6 * q) + 7 * q) % span;
    const int32_t *ids[3] = {r[0], r[1], r[2]};
    const size_t lens[3] = {(size_t)n2, (size_t)n2, (size_t)n2};
    memset(&b3[2], 0, sizeof b3[2]);
    CHECK_OK(lt_batch_pack(&b3[2], 3, ids, ids, lens));
}

/* npass forward+backward passes on CUDA of the model in dir (NF4, max 256 tokens) with a fresh
 * r=16 adapter (B seeded with b_seed), LoRA dropout 0.1 and deterministic kernels: b3[0] and b3[1]
 * alternate, b3[2] (larger: the graph buffers grow) is the fifth; B shrinks after each pass.
 * graphs 0: loaded with LT_CUDA_GRAPHS=0; offload: the checkpoints in host memory. loss[i]: each
 * pass's loss sum; g: the accumulated LoRA gradients; *launches: passes that ran as a graph.
 * Returns 1 when every pass ran. */
static inline int lt_test_cuda_passes(const char *dir, int npass, uint64_t b_seed, int graphs, int offload,
                                      const lt_batch *b3, double *loss, lt_test_grads *g, long *launches) {
    if (!graphs) setenv("LT_CUDA_GRAPHS", "0", 1);
    lt_model_params mp;
    lt_model_params_init(&mp);
    mp.device = LT_DEVICE_CUDA;
    mp.quant = LT_QUANT_NF4;
    mp.max_seq_len = 256;
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(dir, &mp, &m));
    unsetenv("LT_CUDA_GRAPHS");
    if (!m) return 0;
    lt_lora_params lp;
    lt_lora_params_init(&lp);
    lp.r = 16;
    lp.alpha = 32;
    CHECK_OK(lt_model_add_lora(m, &lp));
    lt_model_foreach_lora(m, lt_test_seed_b, &b_seed);
    m->lora.dropout = 0.1f;
    m->be->deterministic = 1; /* no atomics: two op-by-op runs give the same bits too */
    lt_status st = LT_OK;
    for (int i = 0; i < npass && st == LT_OK; i++) {
        lt_graph_pass pass = {1, 42, (uint64_t)(3 + i), 0, offload};
        double sum = 0;
        const lt_batch *b = i == 4 ? &b3[2] : &b3[i & 1];
        st = lt_graph_forward_backward(m, b, (float)(1.0 / (double)b->n_targets), &pass, &sum);
        CHECK_OK(st);
        loss[i] = sum;
        lt_model_foreach_lora(m, lt_test_shrink_b, NULL);
    }
    *launches = lt_cuda_graph_launches(m->be);
    memset(g, 0, sizeof *g);
    lt_model_foreach_lora(m, lt_test_collect_grads, g);
    lt_model_free(m);
    return st == LT_OK;
}
#endif

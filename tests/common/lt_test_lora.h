/* lt_test_lora.h - LoRA helpers shared by the tests that train on two devices or two ways and compare
 * (lt_model_foreach_lora callbacks): every LoRA gradient downloaded into one growing array, and the B
 * matrices of a fresh adapter seeded so that dA is not zero. Include after lt_test.h. */
#ifndef LT_TEST_LORA_H
#define LT_TEST_LORA_H
#include "model/model.h"
#include "core/rng.h"
#include <stdint.h>
#include <stdlib.h>

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
#endif

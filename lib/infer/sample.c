/* sample.c - logits processors and the token draw (see sample.h). Each processor follows the
 * transformers class of the same name, min_tokens_to_keep = 1. */
#include "infer/sample.h"
#include "core/rng.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void repetition_penalty(float *x, int32_t V, float penalty, const int32_t *hist, size_t nh) {
    /* RepetitionPenaltyLogitsProcessor: gather, scale once per distinct token, scatter */
    for (size_t i = 0; i < nh; i++) {
        int32_t t = hist[i];
        if (t < 0 || t >= V) continue;
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++) seen = hist[j] == t;
        if (seen) continue;
        x[t] = x[t] < 0 ? x[t] * penalty : x[t] / penalty;
    }
}

typedef struct { float v; int32_t i; } lt_vi;
static int cmp_desc(const void *a, const void *b) {
    const lt_vi *x = a, *y = b;
    if (x->v > y->v) return -1;
    if (x->v < y->v) return 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

static void top_k(float *x, int32_t V, int32_t k) {
    if (k <= 0 || k >= V) return;
    lt_vi *s = malloc(sizeof *s * V);
    if (!s) return;
    for (int32_t i = 0; i < V; i++) s[i] = (lt_vi){x[i], i};
    qsort(s, V, sizeof *s, cmp_desc);
    float kth = s[k - 1].v; /* TopKLogitsWarper removes scores < the k-th largest (ties stay) */
    for (int32_t i = 0; i < V; i++) if (x[i] < kth) x[i] = -INFINITY;
    free(s);
}

static void softmax_sorted(const lt_vi *s, int32_t V, double *prob) {
    double mx = s[0].v, sum = 0;
    for (int32_t i = 0; i < V; i++) { prob[i] = isinf(s[i].v) && s[i].v < 0 ? 0 : exp((double)s[i].v - mx); sum += prob[i]; }
    for (int32_t i = 0; i < V; i++) prob[i] /= sum;
}

static void top_p(float *x, int32_t V, float p) {
    if (!(p < 1.0f)) return;
    lt_vi *s = malloc(sizeof *s * V);
    double *prob = malloc(sizeof *prob * V);
    if (!s || !prob) { free(s); free(prob); return; }
    for (int32_t i = 0; i < V; i++) s[i] = (lt_vi){x[i], i};
    qsort(s, V, sizeof *s, cmp_desc);
    softmax_sorted(s, V, prob);
    /* TopPLogitsWarper sorts ascending and removes cumulative <= 1 - top_p; walking the
     * descending order that is: remove a token when the mass of all tokens below it
     * (itself included) is <= 1 - p. Keep the top token always. */
    double below = 1.0;
    for (int32_t r = 0; r < V; r++) {
        if (r > 0 && below <= 1.0 - (double)p) x[s[r].i] = -INFINITY;
        below -= prob[r];
    }
    free(s); free(prob);
}

static void min_p(float *x, int32_t V, float mp) {
    if (!(mp > 0)) return;
    double mx = -INFINITY, sum = 0;
    for (int32_t i = 0; i < V; i++) if (x[i] > mx) mx = x[i];
    for (int32_t i = 0; i < V; i++) sum += isinf(x[i]) ? 0 : exp((double)x[i] - mx);
    double top = 1.0 / sum, thr = mp * top;
    int32_t best = 0;
    for (int32_t i = 1; i < V; i++) if (x[i] > x[best]) best = i;
    for (int32_t i = 0; i < V; i++) {
        double pi = isinf(x[i]) ? 0 : exp((double)x[i] - mx) / sum;
        if (pi < thr && i != best) x[i] = -INFINITY;
    }
}

void lt_sample_process(float *x, int32_t V, const lt_generate_params *p, const int32_t *hist, size_t nh) {
    if (p->repetition_penalty > 0 && p->repetition_penalty != 1.0f) repetition_penalty(x, V, p->repetition_penalty, hist, nh);
    if (!p->do_sample) return;
    if (p->temperature > 0 && p->temperature != 1.0f)
        for (int32_t i = 0; i < V; i++) x[i] /= p->temperature;
    top_k(x, V, p->top_k);
    top_p(x, V, p->top_p);
    min_p(x, V, p->min_p);
}

int32_t lt_sample_pick(const float *x, int32_t V, const lt_generate_params *p, uint64_t draw) {
    int32_t best = 0;
    for (int32_t i = 1; i < V; i++) if (x[i] > x[best]) best = i;
    if (!p->do_sample) return best;
    double mx = x[best], sum = 0;
    for (int32_t i = 0; i < V; i++) sum += isinf(x[i]) ? 0 : exp((double)x[i] - mx);
    double u = lt_rng_uniform(p->seed, draw, 0) * sum, acc = 0;
    int32_t last = best;
    for (int32_t i = 0; i < V; i++) {
        if (isinf(x[i])) continue;
        acc += exp((double)x[i] - mx);
        last = i;
        if (acc > u) return i;
    }
    return last;
}

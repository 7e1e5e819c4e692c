/* sample.c - logits processors and the token draw (see sample.h). Each processor follows the
 * transformers class of the same name with min_tokens_to_keep = 1, and does no more work than
 * it must per step (a vocabulary of 150k): a mask for the repetition penalty, selection for
 * top-k, and top-p sorting only the tokens that can survive. */
#include "infer/sample.h"
#include "core/rng.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* RepetitionPenaltyLogitsProcessor: gather the scores of the ids seen, scale each distinct
 * one once (x * penalty when < 0, else x / penalty), scatter back */
static void repetition_penalty(float *x, int32_t V, float penalty, const int32_t *hist, size_t nh) {
    unsigned char *seen = calloc((size_t)V, 1);
    for (size_t i = 0; i < nh; i++) {
        int32_t t = hist[i];
        if (t < 0 || t >= V) continue;
        if (seen) {
            if (seen[t]) continue;
            seen[t] = 1;
        } else { /* out of memory: the quadratic way */
            bool dup = false;
            for (size_t j = 0; j < i && !dup; j++) dup = hist[j] == t;
            if (dup) continue;
        }
        x[t] = x[t] < 0 ? x[t] * penalty : x[t] / penalty;
    }
    free(seen);
}

/* the k-th largest of v[n] (1-based k), by quickselect; v is reordered */
static float kth_largest(float *v, int32_t n, int32_t k) {
    int32_t lo = 0, hi = n - 1, want = k - 1; /* index in descending order */
    while (lo < hi) {
        float pivot = v[lo + (hi - lo) / 2];
        int32_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] > pivot) i++;
            while (v[j] < pivot) j--;
            if (i <= j) { float t = v[i]; v[i] = v[j]; v[j] = t; i++; j--; }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else break;
    }
    return v[want];
}

/* TopKLogitsWarper: remove scores below the k-th largest (ties with it stay) */
static void top_k(float *x, int32_t V, int32_t k) {
    if (k <= 0 || k >= V) return;
    float *v = malloc(sizeof *v * (size_t)V);
    if (!v) return;
    for (int32_t i = 0; i < V; i++) v[i] = isnan(x[i]) ? -INFINITY : x[i];
    float kth = kth_largest(v, V, k);
    for (int32_t i = 0; i < V; i++) if (x[i] < kth) x[i] = -INFINITY;
    free(v);
}

typedef struct { double p; int32_t i; } lt_pi;
static int cmp_prob_asc(const void *a, const void *b) {
    const lt_pi *x = a, *y = b;
    if (x->p < y->p) return -1;
    if (x->p > y->p) return 1;
    return x->i > y->i ? -1 : x->i < y->i; /* equal: the higher id first, so the lowest id is kept longest */
}

/* softmax of x[V] (f64), -inf -> 0; returns the max logit */
static void softmax(const float *x, int32_t V, double *prob) {
    double mx = -INFINITY, sum = 0;
    for (int32_t i = 0; i < V; i++) if (x[i] > mx) mx = x[i];
    for (int32_t i = 0; i < V; i++) { prob[i] = isinf(x[i]) && x[i] < 0 ? 0 : exp((double)x[i] - mx); sum += prob[i]; }
    for (int32_t i = 0; i < V; i++) prob[i] /= sum;
}

/* TopPLogitsWarper: sort ascending, cumulate the probabilities, remove the tokens whose
 * cumulative mass (themselves and all below) is <= 1 - top_p; the top token always stays.
 * A token with probability < (1 - top_p) / V is removed whatever else holds (all tokens at or
 * below it hold less than V times that), so only the others are sorted. */
static void top_p(float *x, int32_t V, float p) {
    if (!(p < 1.0f)) return;
    double *prob = malloc(sizeof *prob * (size_t)V);
    lt_pi *s = malloc(sizeof *s * (size_t)V);
    if (!prob || !s) { free(prob); free(s); return; }
    softmax(x, V, prob);
    const double thr = (double)(float)(1.0 - (double)p); /* torch compares in the scores' f32 */
    const double floor_p = (1.0 - (double)p) / (double)V;
    double below = 0; /* mass of the tokens certainly removed */
    int32_t n = 0, best = 0;
    for (int32_t i = 0; i < V; i++) {
        if (prob[i] > prob[best]) best = i;
        if (prob[i] < floor_p) below += prob[i];
        else s[n++] = (lt_pi){prob[i], i};
    }
    for (int32_t i = 0; i < V; i++)
        if (prob[i] < floor_p && i != best) x[i] = -INFINITY;
    qsort(s, (size_t)n, sizeof *s, cmp_prob_asc);
    double cum = below;
    for (int32_t r = 0; r < n; r++) {
        cum += s[r].p;
        if (r < n - 1 && (double)(float)cum <= thr) x[s[r].i] = -INFINITY;
    }
    free(prob);
    free(s);
}

/* MinPLogitsWarper: remove tokens with probability < min_p * (the top probability) */
static void min_p(float *x, int32_t V, float mp) {
    if (!(mp > 0)) return;
    double mx = -INFINITY, sum = 0;
    int32_t best = 0;
    for (int32_t i = 0; i < V; i++) if (x[i] > mx) { mx = x[i]; best = i; }
    for (int32_t i = 0; i < V; i++) sum += isinf(x[i]) ? 0 : exp((double)x[i] - mx);
    double thr = (double)mp * (1.0 / sum);
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
    for (int32_t i = 0; i < V; i++) sum += isinf(x[i]) || isnan(x[i]) ? 0 : exp((double)x[i] - mx);
    /* inverse CDF over the vocabulary in id order, with one Philox uniform per draw */
    double u = lt_rng_uniform(p->seed, draw, 0) * sum, acc = 0;
    int32_t last = best;
    for (int32_t i = 0; i < V; i++) {
        if (isinf(x[i]) || isnan(x[i])) continue;
        acc += exp((double)x[i] - mx);
        last = i;
        if (acc > u) return i;
    }
    return last;
}

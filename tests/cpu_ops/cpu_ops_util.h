/* cpu_ops_util.h - what the CPU-op tests share: a seeded generator, the finite-difference
 * checker (central differences of a double objective around the f32 ops), and small helpers. */
#ifndef LT_CPU_OPS_UTIL_H
#define LT_CPU_OPS_UTIL_H
#include "lt_test.h"
#include "backend/backend.h"
#include "core/rng.h"
#include <stdint.h>

static uint64_t t_rng_state = 0x9E3779B97F4A7C15ull;
static inline void t_seed(uint64_t s) { t_rng_state = s * 0x9E3779B97F4A7C15ull + 1; }
static inline uint64_t t_next(void) { /* splitmix64 */
    uint64_t z = (t_rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static inline double t_unif(void) { return (double)(t_next() >> 11) * (1.0 / 9007199254740992.0); }
static inline void t_fill(float *x, int64_t n, float lo, float hi) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * t_unif());
}
static inline float *t_rand(int64_t n, float lo, float hi) {
    float *x = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    t_fill(x, n, lo, hi);
    return x;
}
static inline float *t_zeros(int64_t n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(float)); }

/* sum w*out in double */
static inline double t_wsum(const float *w, const float *out, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)w[i] * out[i];
    return s;
}

typedef double (*t_objective)(void *ctx);

/* Compares analytic[i] with (J(x+h e_i) - J(x-h e_i)) / (2h) on up to `nsample` elements of x
 * (all of them when n is small); returns ||analytic - numeric|| / ||numeric||. */
static inline double t_fd_check(const char *name, float *x, int64_t n, const float *analytic, t_objective J,
                                void *ctx, int nsample, float h) {
    double num2 = 0, err2 = 0, worst = 0;
    int64_t worst_i = -1;
    for (int s = 0; s < (n <= nsample ? n : nsample); s++) {
        int64_t i = n <= nsample ? s : (int64_t)(t_next() % (uint64_t)n);
        const float save = x[i];
        const float xp = save + h, xm = save - h;
        x[i] = xp; double fp = J(ctx);
        x[i] = xm; double fm = J(ctx);
        x[i] = save;
        const double num = (fp - fm) / ((double)xp - (double)xm);
        const double e = analytic[i] - num;
        num2 += num * num;
        err2 += e * e;
        if (fabs(e) > worst) { worst = fabs(e); worst_i = i; }
    }
    double rel = num2 > 0 ? sqrt(err2 / num2) : sqrt(err2);
    printf("  fd %-28s rel err %.3e (worst abs %.2e at %lld)\n", name, rel, worst, (long long)worst_i);
    return rel;
}

static inline lt_bweight *t_weight(lt_backend *be, const float *w, int64_t rows, int64_t cols, int quant) {
    lt_weight_desc d;
    memset(&d, 0, sizeof d);
    d.host = w; d.dtype = LT_DTYPE_F32; d.rows = rows; d.cols = cols; d.quant = quant;
    lt_bweight *out = NULL;
    if (be->ops.weight_create(be, &d, &out) != LT_OK) {
        fprintf(stderr, "weight_create failed: %s\n", lt_last_error());
        exit(1);
    }
    return out;
}
#endif

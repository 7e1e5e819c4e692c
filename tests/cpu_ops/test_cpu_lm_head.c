/* test_cpu_lm_head.c - the CPU LM head and SIMD kernels at shapes the small op tests do not reach:
 * several vocabulary segments (the last one partial), several token chunks and blocks (partial
 * ones, ignored targets, a chunk with no targets), hidden sizes that are not multiples of the
 * kernel tile. Checks, with the SIMD kernels and again with the portable ones: the loss and dh
 * against a double reference, bit-identical results for 1, 2 and 3 threads, lm_head_logits
 * against linear_fwd bit for bit, and linear_bwd_input (gemm_nn) against double. */
#include "cpu_ops_util.h"
#include "backend/cpu/cpu_internal.h"

typedef struct { float loss; float *dh; } ce_out;

static ce_out run_ce(int threads, const float *h, const float *W, const int32_t *tg, int64_t N, int64_t C,
                     int64_t V, float gs) {
    lt_backend *be = NULL;
    CHECK_OK(lt_backend_cpu_create(threads, &be));
    lt_bweight *head = t_weight(be, W, V, C, LT_QUANT_NONE);
    ce_out o = {0, t_rand(N * C, -1, 1)};
    CHECK_OK(be->ops.lm_head_ce(be, &o.loss, o.dh, h, head, tg, N, C, V, gs));
    be->ops.weight_free(be, head);
    be->ops.destroy(be);
    return o;
}

static void check_shape(int64_t N, int64_t C, int64_t V) {
    printf("lm_head_ce N=%lld C=%lld V=%lld (%s)\n", (long long)N, (long long)C, (long long)V,
           lt_cpu_kernels_get()->name);
    float *h = t_rand(N * C, -1, 1), *W = t_rand(V * C, -0.5f, 0.5f);
    int32_t *tg = malloc((size_t)N * sizeof(int32_t));
    for (int64_t n = 0; n < N; n++) tg[n] = (n % 11 == 4) ? -100 : (int32_t)(t_next() % (uint64_t)V);
    for (int64_t n = 64; n < 128 && n < N; n++) tg[n] = -100; /* chunk 1 has nothing to learn */
    const float gs = 0.01f;
    ce_out r1 = run_ce(1, h, W, tg, N, C, V, gs), r2 = run_ce(2, h, W, tg, N, C, V, gs),
           r3 = run_ce(3, h, W, tg, N, C, V, gs);
    CHECK_MSG(r1.loss == r2.loss && r1.loss == r3.loss, "loss differs between 1/2/3 threads: %.9g %.9g %.9g",
              (double)r1.loss, (double)r2.loss, (double)r3.loss);
    CHECK_MSG(!memcmp(r1.dh, r2.dh, (size_t)(N * C) * sizeof(float)) &&
              !memcmp(r1.dh, r3.dh, (size_t)(N * C) * sizeof(float)), "dh differs between 1/2/3 threads");
    /* double reference */
    double ref = 0, maxe = 0, maxd = 0;
    double *lg = malloc((size_t)V * sizeof(double)), *d = malloc((size_t)C * sizeof(double));
    for (int64_t n = 0; n < N; n++) {
        if (tg[n] < 0) {
            for (int64_t c = 0; c < C; c++) CHECK(r1.dh[n * C + c] == 0.0f);
            continue;
        }
        double mx = -1e300, s = 0;
        for (int64_t v = 0; v < V; v++) {
            double a = 0;
            for (int64_t c = 0; c < C; c++) a += (double)h[n * C + c] * W[v * C + c];
            lg[v] = a;
            mx = fmax(mx, a);
        }
        for (int64_t v = 0; v < V; v++) s += exp(lg[v] - mx);
        const double lse = mx + log(s);
        ref += lse - lg[tg[n]];
        for (int64_t c = 0; c < C; c++) d[c] = 0;
        for (int64_t v = 0; v < V; v++) {
            const double p = (exp(lg[v] - lse) - (v == tg[n])) * gs;
            for (int64_t c = 0; c < C; c++) d[c] += p * W[v * C + c];
        }
        for (int64_t c = 0; c < C; c++) {
            maxe = fmax(maxe, fabs(d[c] - r1.dh[n * C + c]));
            maxd = fmax(maxd, fabs(d[c]));
        }
    }
    printf("  loss %.7f (reference %.7f, rel %.2e), dh max abs err %.2e (max |dh| %.2e)\n", (double)r1.loss, ref,
           fabs(r1.loss - ref) / ref, maxe, maxd);
    CHECK_MSG(fabs(r1.loss - ref) <= 2e-6 * ref, "loss %.8f vs %.8f", (double)r1.loss, ref);
    CHECK_MSG(maxe <= 1e-5 * maxd, "dh max abs err %g (max |dh| %g)", maxe, maxd);
    free(lg); free(d); free(h); free(W); free(tg); free(r1.dh); free(r2.dh); free(r3.dh);
}

/* lm_head_logits == linear_fwd bit for bit; the backward product (gemm_nn, through
 * linear_bwd_input) against double */
static void check_logits(int64_t N, int64_t C, int64_t V) {
    lt_backend *be = NULL;
    CHECK_OK(lt_backend_cpu_create(2, &be));
    float *h = t_rand(N * C, -1, 1), *W = t_rand(V * C, -0.5f, 0.5f);
    float *l1 = t_zeros(N * V), *l2 = t_zeros(N * V), *dx = t_zeros(N * C);
    lt_bweight *w = t_weight(be, W, V, C, LT_QUANT_NONE);
    CHECK_OK(be->ops.lm_head_logits(be, l1, h, w, N, C, V));
    CHECK_OK(be->ops.linear_fwd(be, l2, h, w, NULL, N));
    CHECK(!memcmp(l1, l2, (size_t)(N * V) * sizeof(float)));
    double e = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t v = 0; v < V; v++) {
            double a = 0;
            for (int64_t c = 0; c < C; c++) a += (double)h[n * C + c] * W[v * C + c];
            e = fmax(e, fabs(a - l1[n * V + v]));
        }
    CHECK_MSG(e < 1e-5, "logits abs err %g", e);
    /* dx(N,C) = l1(N,V) @ W(V,C) */
    for (int64_t i = 0; i < N * V; i++) l1[i] *= 0.01f;
    CHECK_OK(be->ops.linear_bwd_input(be, dx, l1, w, N, 0));
    e = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < C; c++) {
            double a = 0;
            for (int64_t v = 0; v < V; v++) a += (double)l1[n * V + v] * W[v * C + c];
            e = fmax(e, fabs(a - dx[n * C + c]));
        }
    printf("logits N=%lld C=%lld V=%lld: identical to linear_fwd; linear_bwd_input max abs err %.2e\n",
           (long long)N, (long long)C, (long long)V, e);
    CHECK_MSG(e < 1e-4, "linear_bwd_input abs err %g", e);
    be->ops.weight_free(be, w);
    be->ops.destroy(be);
    free(h); free(W); free(l1); free(l2); free(dx);
}

int main(void) {
    t_seed(7);
    const int simd = lt_cpu_kernels_force(1);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            if (!simd) break; /* the portable path was the only one */
            lt_cpu_kernels_force(0);
        }
        check_shape(300, 64, 4100);  /* 5 chunks (2 blocks), 5 segments (last one 4 rows) */
        check_shape(37, 40, 2050);   /* one partial chunk, C not a multiple of 6 or 16 */
        check_logits(37, 64, 1000);
        check_logits(20, 48, 257);
    }
    lt_cpu_kernels_force(1);
    return lt_test_done("test_cpu_lm_head");
}

/* bench_cpu.c - timings of the CPU backend's heavy ops at the tiny Qwen2's shapes (hidden 64,
 * vocabulary 151,936): lm_head_ce with dh, lm_head_logits, and a linear layer, with the SIMD and
 * the portable kernels and 1..n threads. Built with the tests, not run by ctest:
 *   build/tests/cpu_ops/bench_cpu [tokens] [max threads] [1 = SIMD only]
 * Prints wall time, CPU time (all threads) and tokens/s for each. */
#include "cpu_ops_util.h"
#include "backend/cpu/cpu_internal.h"
#include <time.h>

static double now(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct { float *h, *dh, *lg; lt_bweight *head; int32_t *tg; int64_t N, C, V; } bench_in;

static void run(lt_backend *be, const char *what, const bench_in *in, int reps) {
    double best_w = 1e30, cpu_at_best = 0;
    float loss = 0;
    for (int r = 0; r < reps; r++) {
        double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
        if (!strcmp(what, "lm_head_ce+dh"))
            CHECK_OK(be->ops.lm_head_ce(be, &loss, in->dh, in->h, in->head, in->tg, in->N, in->C, in->V, 1e-3f));
        else if (!strcmp(what, "lm_head_ce"))
            CHECK_OK(be->ops.lm_head_ce(be, &loss, NULL, in->h, in->head, in->tg, in->N, in->C, in->V, 1e-3f));
        else
            CHECK_OK(be->ops.lm_head_logits(be, in->lg, in->h, in->head, in->N, in->C, in->V));
        double w = now(CLOCK_MONOTONIC) - w0, c = now(CLOCK_PROCESS_CPUTIME_ID) - c0;
        if (w < best_w) best_w = w;
        if (r == 0 || c < cpu_at_best) cpu_at_best = c;
    }
    const double flop = 2.0 * (double)in->N * (double)in->V * (double)in->C * (strcmp(what, "lm_head_ce+dh") ? 1 : 2);
    printf("  %-14s %-11s threads %d: %8.1f ms wall, %8.1f ms cpu (best of each), %8.0f tokens/s, %6.1f GFLOP/s\n", what,
           lt_cpu_kernels_get()->name, be->n_threads, best_w * 1e3, cpu_at_best * 1e3, (double)in->N / best_w,
           flop / best_w * 1e-9);
}

/* the micro-kernel alone on data in L1: the ceiling the LM head can reach */
static void bench_kernel(void) {
    const lt_cpu_kernels *kk = lt_cpu_kernels_get();
    float *a = t_rand(6 * 64, -1, 1), *b = t_rand(64 * 16, -1, 1), c[6 * 16];
    const int reps = 200000;
    double c0 = now(CLOCK_PROCESS_CPUTIME_ID);
    for (int r = 0; r < reps; r++) kk->kern(64, a, 64, 1, b, 16, c, 16, 1, 6, 16, r & 1);
    double t = now(CLOCK_PROCESS_CPUTIME_ID) - c0;
    printf("  kernel 6x16 K=64 %-11s (L1):  %6.1f GFLOP/s of cpu time\n", kk->name, 2.0 * 6 * 16 * 64 * reps / t * 1e-9);
    free(a); free(b);
}

int main(int argc, char **argv) {
    const int64_t N = argc > 1 ? atoll(argv[1]) : 512, C = 64, V = 151936;
    const int maxt = argc > 2 ? atoi(argv[2]) : 2;
    bench_in in = {0};
    in.N = N; in.C = C; in.V = V;
    in.h = t_rand(N * C, -1, 1);
    in.dh = t_zeros(N * C);
    in.tg = malloc((size_t)N * sizeof(int32_t));
    for (int64_t n = 0; n < N; n++) in.tg[n] = (int32_t)(t_next() % (uint64_t)V);
    float *w = t_rand(V * C, -0.05f, 0.05f);
    const int simd_lo = argc > 3 ? atoi(argv[3]) : 0;
    for (int simd = 1; simd >= simd_lo; simd--) {
        lt_cpu_kernels_force(simd);
        bench_kernel();
        for (int th = 1; th <= maxt; th++) {
            lt_backend *be = NULL;
            CHECK_OK(lt_backend_cpu_create(th, &be));
            in.head = t_weight(be, w, V, C, LT_QUANT_NONE);
            run(be, "lm_head_ce+dh", &in, simd ? 5 : 1);
            run(be, "lm_head_ce", &in, simd ? 3 : 1);
            if (!in.lg) in.lg = malloc((size_t)(N * V) * sizeof(float));
            run(be, "lm_head_logits", &in, simd ? 3 : 1);
            be->ops.weight_free(be, in.head);
            be->ops.destroy(be);
        }
    }
    free(in.h); free(in.dh); free(in.tg); free(in.lg); free(w);
    return lt_test_failures ? 1 : 0;
}

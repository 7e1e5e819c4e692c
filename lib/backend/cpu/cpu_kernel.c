/* cpu_kernel.c - the CPU backend's inner loops in two builds: a register-blocked 6x16 SGEMM
 * micro-kernel and a column softmax (max, exp, sum) for the LM head, as portable C (the
 * reference, and the path on any CPU) and as AVX2+FMA code chosen at run time on x86-64 CPUs
 * that have it. Each build sums in a fixed order, so results never depend on the thread count;
 * the two builds round differently (FMA, exp polynomial) and agree to ~1e-7 relative. */
#include "backend/cpu/cpu_internal.h"
#include <math.h>
#include <stdlib.h>

/* ---- portable C ---- */

static void kern_c(int64_t K, const float *a, int64_t sa, int64_t sk, const float *b, int64_t ldb, float *c,
                   int64_t rsc, int64_t csc, int mr, int nr, int accumulate) {
    float acc[LT_CPU_MR][LT_CPU_NR] = {{0}};
    if (accumulate)
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < nr; j++) acc[i][j] = c[i * rsc + j * csc];
    const float *ap[LT_CPU_MR];
    for (int i = 0; i < LT_CPU_MR; i++) ap[i] = a + (i < mr ? i : mr - 1) * sa; /* extra rows repeat the last */
    for (int64_t k = 0; k < K; k++) {
        const float *bk = b + k * ldb;
        for (int i = 0; i < LT_CPU_MR; i++) {
            const float av = ap[i][k * sk];
            for (int j = 0; j < LT_CPU_NR; j++) acc[i][j] += av * bk[j];
        }
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) c[i * rsc + j * csc] = acc[i][j];
}

static void colmax_c(const float *e, int64_t rows, int64_t ld, float *mx) {
    for (int j = 0; j < LT_CPU_NR; j++) mx[j] = e[j];
    for (int64_t r = 1; r < rows; r++)
        for (int j = 0; j < LT_CPU_NR; j++) mx[j] = e[r * ld + j] > mx[j] ? e[r * ld + j] : mx[j];
}

static void colexp_c(float *e, int64_t rows, int64_t ld, const float *mx, double *sum) {
    for (int j = 0; j < LT_CPU_NR; j++) sum[j] = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int j = 0; j < LT_CPU_NR; j++) {
            const float x = expf(e[r * ld + j] - mx[j]);
            e[r * ld + j] = x;
            sum[j] += x;
        }
}

static const lt_cpu_kernels k_portable = {"portable C", kern_c, colmax_c, colexp_c};

/* ---- AVX2 + FMA ---- */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define LT_AVX2 __attribute__((target("avx2,fma")))

/* one k step of the 6x16 block: rows' values x0..x5 times the 16 columns at b */
#define K6X16_STEP(x0, x1, x2, x3, x4, x5, bp)                                                        \
    do {                                                                                            \
        const __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps((bp) + 8);                        \
        __m256 x;                                                                                   \
        x = _mm256_broadcast_ss(x0); c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01); \
        x = _mm256_broadcast_ss(x1); c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11); \
        x = _mm256_broadcast_ss(x2); c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21); \
        x = _mm256_broadcast_ss(x3); c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31); \
        x = _mm256_broadcast_ss(x4); c40 = _mm256_fmadd_ps(x, b0, c40); c41 = _mm256_fmadd_ps(x, b1, c41); \
        x = _mm256_broadcast_ss(x5); c50 = _mm256_fmadd_ps(x, b0, c50); c51 = _mm256_fmadd_ps(x, b1, c51); \
    } while (0)

LT_AVX2 static void kern_avx2(int64_t K, const float *a, int64_t sa, int64_t sk, const float *b, int64_t ldb,
                              float *c, int64_t rsc, int64_t csc, int mr, int nr, int accumulate) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    if (accumulate) { /* go on with the sums in c: the k order stays one chain */
        float t[LT_CPU_MR][LT_CPU_NR] = {{0}};
        const int direct = csc == 1 && nr == LT_CPU_NR && mr == LT_CPU_MR;
        const float *src = direct ? c : t[0];
        const int64_t ld = direct ? rsc : LT_CPU_NR;
        if (!direct)
            for (int i = 0; i < mr; i++)
                for (int j = 0; j < nr; j++) t[i][j] = c[i * rsc + j * csc];
        c00 = _mm256_loadu_ps(src); c01 = _mm256_loadu_ps(src + 8);
        c10 = _mm256_loadu_ps(src + ld); c11 = _mm256_loadu_ps(src + ld + 8);
        c20 = _mm256_loadu_ps(src + 2 * ld); c21 = _mm256_loadu_ps(src + 2 * ld + 8);
        c30 = _mm256_loadu_ps(src + 3 * ld); c31 = _mm256_loadu_ps(src + 3 * ld + 8);
        c40 = _mm256_loadu_ps(src + 4 * ld); c41 = _mm256_loadu_ps(src + 4 * ld + 8);
        c50 = _mm256_loadu_ps(src + 5 * ld); c51 = _mm256_loadu_ps(src + 5 * ld + 8);
    }
    if (sa == 1 && mr == LT_CPU_MR) {
        /* the 6 rows' values of one k are adjacent: one pointer walks k */
        const float *ak = a;
#pragma GCC unroll 4
        for (int64_t k = 0; k < K; k++) {
            K6X16_STEP(ak, ak + 1, ak + 2, ak + 3, ak + 4, ak + 5, b);
            ak += sk;
            b += ldb;
        }
    } else {
        /* rows past mr repeat row mr-1 (never stored); index arithmetic keeps pointer bumps few */
        const float *a0 = a, *a1 = a + (1 < mr ? 1 : mr - 1) * sa, *a2 = a + (2 < mr ? 2 : mr - 1) * sa;
        const float *a3 = a + (3 < mr ? 3 : mr - 1) * sa, *a4 = a + (4 < mr ? 4 : mr - 1) * sa;
        const float *a5 = a + (5 < mr ? 5 : mr - 1) * sa;
        if (sk == 1) {
#pragma GCC unroll 4
            for (int64_t k = 0; k < K; k++) {
                K6X16_STEP(a0 + k, a1 + k, a2 + k, a3 + k, a4 + k, a5 + k, b);
                b += ldb;
            }
        } else {
            for (int64_t k = 0; k < K; k++) {
                const int64_t o = k * sk;
                K6X16_STEP(a0 + o, a1 + o, a2 + o, a3 + o, a4 + o, a5 + o, b);
                b += ldb;
            }
        }
    }
    float t[LT_CPU_MR][LT_CPU_NR];
    const int direct = csc == 1 && nr == LT_CPU_NR;
    float *dst = direct ? c : t[0];
    const int64_t ld = direct ? rsc : LT_CPU_NR;
    /* rows past mr are never stored (they may lie past the end of c) */
    _mm256_storeu_ps(dst, c00); _mm256_storeu_ps(dst + 8, c01);
    if (mr > 1) { _mm256_storeu_ps(dst + ld, c10); _mm256_storeu_ps(dst + ld + 8, c11); }
    if (mr > 2) { _mm256_storeu_ps(dst + 2 * ld, c20); _mm256_storeu_ps(dst + 2 * ld + 8, c21); }
    if (mr > 3) { _mm256_storeu_ps(dst + 3 * ld, c30); _mm256_storeu_ps(dst + 3 * ld + 8, c31); }
    if (mr > 4) { _mm256_storeu_ps(dst + 4 * ld, c40); _mm256_storeu_ps(dst + 4 * ld + 8, c41); }
    if (mr > 5) { _mm256_storeu_ps(dst + 5 * ld, c50); _mm256_storeu_ps(dst + 5 * ld + 8, c51); }
    if (!direct)
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < nr; j++) c[i * rsc + j * csc] = t[i][j];
}

LT_AVX2 static void colmax_avx2(const float *e, int64_t rows, int64_t ld, float *mx) {
    __m256 m0 = _mm256_loadu_ps(e), m1 = _mm256_loadu_ps(e + 8);
    for (int64_t r = 1; r < rows; r++) {
        m0 = _mm256_max_ps(m0, _mm256_loadu_ps(e + r * ld));
        m1 = _mm256_max_ps(m1, _mm256_loadu_ps(e + r * ld + 8));
    }
    _mm256_storeu_ps(mx, m0);
    _mm256_storeu_ps(mx + 8, m1);
}

/* exp(x) for x <= 0 (Cephes' expf: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial, then
 * times 2^n), within 2 ulp of expf; inputs below -87.3 give 2^-126 * exp(r) ~ 1e-38, which the
 * softmax sums never notice. */
LT_AVX2 static inline __m256 exp_neg_avx2(__m256 x) {
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.33f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500E-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

LT_AVX2 static void colexp_avx2(float *e, int64_t rows, int64_t ld, const float *mx, double *sum) {
    const __m256 m0 = _mm256_loadu_ps(mx), m1 = _mm256_loadu_ps(mx + 8);
    __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
    /* float sums of up to 32 rows (values <= 1), then added into doubles */
    for (int64_t r0 = 0; r0 < rows; r0 += 32) {
        const int64_t r1 = r0 + 32 < rows ? r0 + 32 : rows;
        __m256 f0 = _mm256_setzero_ps(), f1 = f0;
        for (int64_t r = r0; r < r1; r++) {
            float *row = e + r * ld;
            const __m256 x0 = exp_neg_avx2(_mm256_sub_ps(_mm256_loadu_ps(row), m0));
            const __m256 x1 = exp_neg_avx2(_mm256_sub_ps(_mm256_loadu_ps(row + 8), m1));
            _mm256_storeu_ps(row, x0);
            _mm256_storeu_ps(row + 8, x1);
            f0 = _mm256_add_ps(f0, x0);
            f1 = _mm256_add_ps(f1, x1);
        }
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(f0)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(f0, 1)));
        s2 = _mm256_add_pd(s2, _mm256_cvtps_pd(_mm256_castps256_ps128(f1)));
        s3 = _mm256_add_pd(s3, _mm256_cvtps_pd(_mm256_extractf128_ps(f1, 1)));
    }
    _mm256_storeu_pd(sum, s0); _mm256_storeu_pd(sum + 4, s1);
    _mm256_storeu_pd(sum + 8, s2); _mm256_storeu_pd(sum + 12, s3);
}

static const lt_cpu_kernels k_avx2 = {"AVX2+FMA", kern_avx2, colmax_avx2, colexp_avx2};
#endif

/* 0 = not chosen yet, 1 = portable, 2 = AVX2 */
static int k_choice;

static int k_detect(void) {
    const char *env = getenv("LT_CPU_SIMD"); /* "0" forces the portable C path */
    if (env && env[0] == '0') return 1;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 2;
#endif
    return 1;
}

const lt_cpu_kernels *lt_cpu_kernels_get(void) {
    int c = __atomic_load_n(&k_choice, __ATOMIC_RELAXED);
    if (!c) {
        c = k_detect();
        __atomic_store_n(&k_choice, c, __ATOMIC_RELAXED);
    }
#if defined(__x86_64__) && defined(__GNUC__)
    if (c == 2) return &k_avx2;
#endif
    return &k_portable;
}

int lt_cpu_kernels_force(int simd) {
    int want = simd ? k_detect() : 1;
    __atomic_store_n(&k_choice, want, __ATOMIC_RELAXED);
    return want == 2;
}

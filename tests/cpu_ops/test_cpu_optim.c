/* test_cpu_optim.c - the optimizer ops of the CPU backend: AdamW against the textbook formula in
 * double, bitsandbytes' 8-bit AdamW against an independent double-precision derivation of its
 * per-block rules (two steps from zero state), and sumsq / scale / nonfinite. */
#include "cpu_ops_util.h"
#include "backend/adam8bit.h"

static void test_adamw(lt_backend *be) {
    const int64_t n = 1000;
    const float lr = 1e-3f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.01f;
    float *p = t_rand(n, -1, 1), *m = t_zeros(n), *v = t_zeros(n), *g = t_zeros(n);
    double *P = malloc(n * sizeof(double)), *M = calloc(n, sizeof(double)), *V = calloc(n, sizeof(double));
    for (int64_t i = 0; i < n; i++) P[i] = p[i];
    for (int t = 1; t <= 3; t++) {
        t_fill(g, n, -0.1f, 0.1f);
        CHECK_OK(be->ops.adamw(be, p, g, m, v, n, lr, b1, b2, eps, wd, t));
        double worst = 0, merr = 0;
        for (int64_t i = 0; i < n; i++) {
            P[i] *= 1.0 - (double)lr * wd;
            M[i] = b1 * M[i] + (1 - (double)b1) * g[i];
            V[i] = b2 * V[i] + (1 - (double)b2) * g[i] * g[i];
            double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
            P[i] -= (double)lr / bc1 * M[i] / (sqrt(V[i]) / sqrt(bc2) + eps);
            worst = fmax(worst, fabs(P[i] - p[i]));
            merr = fmax(merr, fmax(fabs(M[i] - m[i]), fabs(V[i] - v[i])));
        }
        printf("  adamw step %d: max |dp| %.2e, max |dm|,|dv| %.2e\n", t, worst, merr);
        CHECK_MSG(worst < 2e-7, "adamw step %d: max abs err %g", t, worst);
        CHECK_MSG(merr < 1e-8, "adamw step %d: moment err %g", t, merr);
    }
    CHECK_FAIL(be->ops.adamw(be, p, g, m, v, n, lr, b1, b2, eps, wd, 0), LT_ERR_INVALID_ARGUMENT, "step 0");
    free(p); free(m); free(v); free(g); free(P); free(M); free(V);
}

static int nearest(const float *code, double x) {
    int best = 0;
    for (int i = 1; i < 256; i++) if (fabs(x - code[i]) < fabs(x - code[best])) best = i;
    return best;
}
static int near_tie(const float *code, double x) {
    for (int i = 0; i + 1 < 256; i++)
        if (fabs(x - 0.5 * ((double)code[i] + code[i + 1])) < 1e-5 * (fabs(x) + 1e-7)) return 1;
    return 0;
}

/* One step of the rules (hf-formats.md section 4) in double, from the test's own state. */
static void adam8_model(double *P, const float *g, uint8_t *c1, uint8_t *c2, double *a1, double *a2, int64_t n,
                        double lr, double b1, double b2, double eps, double wd, int t, const float *code1,
                        const float *code2, int *ties) {
    int64_t nb = (n + 255) / 256;
    double *m = malloc(n * sizeof(double)), *v = malloc(n * sizeof(double));
    for (int64_t b = 0; b < nb; b++) {
        int64_t lo = b * 256, hi = lo + 256 < n ? lo + 256 : n;
        double am1 = 0, am2 = 0;
        for (int64_t i = lo; i < hi; i++) {
            if (!isfinite(g[i])) { m[i] = v[i] = 0; continue; }
            m[i] = b1 * code1[c1[i]] * a1[b] + (1 - b1) * g[i];
            v[i] = b2 * code2[c2[i]] * a2[b] + (1 - b2) * (double)g[i] * g[i];
            am1 = fmax(am1, fabs(m[i]));
            am2 = fmax(am2, v[i]);
        }
        a1[b] = am1; a2[b] = am2;
        for (int64_t i = lo; i < hi; i++) {
            if (isfinite(g[i])) {
                double c2t = sqrt(1 - pow(b2, t));
                P[i] += -lr * c2t / (1 - pow(b1, t)) * m[i] / (sqrt(v[i]) + c2t * eps);
                P[i] *= 1 - lr * wd;
            }
            double x1 = m[i] / am1, x2 = v[i] / am2;
            *ties += near_tie(code1, x1) + near_tie(code2, x2);
            int q = nearest(code1, x1);
            if ((code1[q] < 0 || (code1[q] == 0 && signbit(code1[q]))) != (m[i] < 0 || (m[i] == 0 && signbit(m[i]))))
                q += m[i] > 0 ? 1 : -1; /* m keeps its sign */
            c1[i] = (uint8_t)q;
            c2[i] = (uint8_t)nearest(code2, x2);
        }
    }
    free(m); free(v);
}

static void test_adamw8bit(lt_backend *be) {
    const int64_t n = 700, nb = 3; /* two full blocks and a short one */
    const float lr = 2e-3f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.05f;
    float code1[256], code2[256];
    lt_dynamic_map(1, code1);
    lt_dynamic_map(0, code2);
    float *p = t_rand(n, -1, 1), *g = t_zeros(n);
    uint8_t *s1 = calloc(n, 1), *s2 = calloc(n, 1), *c1 = calloc(n, 1), *c2 = calloc(n, 1);
    float a1[3] = {0}, a2[3] = {0};
    double A1[3] = {0}, A2[3] = {0}, *P = malloc(n * sizeof(double));
    for (int64_t i = 0; i < n; i++) P[i] = p[i];
    for (int t = 1; t <= 2; t++) {
        t_fill(g, n, -0.05f, 0.05f);
        for (int64_t i = 600; i < n; i++) g[i] *= 1e-3f; /* a block of small gradients */
        if (t == 2) g[5] = NAN;
        int ties = 0;
        CHECK_OK(be->ops.adamw8bit(be, p, g, s1, s2, a1, a2, n, lr, b1, b2, eps, wd, t));
        adam8_model(P, g, c1, c2, A1, A2, n, lr, b1, b2, eps, wd, t, code1, code2, &ties);
        double perr = 0;
        int64_t code_mismatch = 0;
        for (int64_t i = 0; i < n; i++) {
            perr = fmax(perr, fabs(P[i] - p[i]));
            code_mismatch += (s1[i] != c1[i]) + (s2[i] != c2[i]);
        }
        double aerr = 0;
        for (int b = 0; b < nb; b++) aerr = fmax(aerr, fmax(fabs(a1[b] - A1[b]) / A1[b], fabs(a2[b] - A2[b]) / A2[b]));
        printf("  adamw8bit step %d: max |dp| %.2e, absmax rel err %.2e, code mismatches %lld (near-ties %d)\n", t,
               perr, aerr, (long long)code_mismatch, ties);
        CHECK_MSG(perr < 1e-6, "adamw8bit step %d: param error %g", t, perr);
        CHECK_MSG(aerr < 1e-5, "adamw8bit step %d: absmax error %g", t, aerr);
        CHECK_MSG(code_mismatch <= ties, "adamw8bit step %d: %lld code mismatches beyond %d ties", t,
                  (long long)code_mismatch, ties);
    }
    /* a non-finite gradient leaves the parameter alone and zeroes its states */
    CHECK(fabsf(p[5] - (float)P[5]) < 1e-6f);
    CHECK(code1[s1[5]] * a1[0] == 0.0f || fabsf(code1[s1[5]]) < 1e-6f);
    CHECK(code2[s2[5]] == 0.0f);
    /* decay comes after the Adam step: one element, lr 0.1, wd 1: (1 - 0.1) * (1 - 0.1) = 0.81,
     * where torch's order (decay first) would give 1 * 0.9 - 0.1 = 0.8 */
    float p1 = 1.0f, g1 = 0.1f, am1 = 0, am2 = 0;
    uint8_t q1 = 0, q2 = 0;
    CHECK_OK(be->ops.adamw8bit(be, &p1, &g1, &q1, &q2, &am1, &am2, 1, 0.1f, b1, b2, eps, 1.0f, 1));
    CHECK_NEAR(p1, 0.81, 1e-5);
    printf("  decay-after check: p %.7f q1 %d q2 %d absmax %.9g %.9g\n", p1, q1, q2, am1, am2);
    CHECK(q1 == 255 && q2 == 255 && am1 == (1.0f - b1) * 0.1f && am2 == (1.0f - b2) * 0.1f * 0.1f);
    /* results do not depend on the thread count */
    lt_backend *be1;
    CHECK_OK(lt_backend_cpu_create(1, &be1));
    float *pa = t_rand(n * 4, -1, 1), *pb = malloc(n * 16), *ga = t_rand(n * 4, -1, 1);
    memcpy(pb, pa, n * 16);
    uint8_t *x1 = calloc(n * 4, 1), *x2 = calloc(n * 4, 1), *y1 = calloc(n * 4, 1), *y2 = calloc(n * 4, 1);
    float ax1[11] = {0}, ax2[11] = {0}, ay1[11] = {0}, ay2[11] = {0};
    CHECK_OK(be1->ops.adamw8bit(be1, pa, ga, x1, x2, ax1, ax2, n * 4, lr, b1, b2, eps, wd, 1));
    lt_adamw8bit_ref(pb, ga, y1, y2, ay1, ay2, n * 4, lr, b1, b2, eps, wd, 1, 3);
    CHECK(memcmp(pa, pb, n * 16) == 0 && memcmp(x1, y1, n * 4) == 0 && memcmp(x2, y2, n * 4) == 0);
    lt_backend_free(be1);
    free(pa); free(pb); free(ga); free(x1); free(x2); free(y1); free(y2);
    free(p); free(g); free(s1); free(s2); free(c1); free(c2); free(P);
}

/* bnb's 32-bit path (tensors under 4096 elements): decay after the step, eps scaled by sqrt(bc2) */
static void test_adamw32_bnb(void) {
    const int64_t n = 300;
    const float lr = 1e-2f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.1f;
    float *p = t_rand(n, -1, 1), *m = t_zeros(n), *v = t_zeros(n), *g = t_zeros(n);
    double *P = malloc(n * sizeof(double)), *M = calloc(n, sizeof(double)), *V = calloc(n, sizeof(double));
    for (int64_t i = 0; i < n; i++) P[i] = p[i];
    double worst = 0;
    for (int t = 1; t <= 3; t++) {
        t_fill(g, n, -0.1f, 0.1f);
        lt_adamw32_bnb_ref(p, g, m, v, n, lr, b1, b2, eps, wd, t);
        for (int64_t i = 0; i < n; i++) {
            M[i] = b1 * M[i] + (1 - (double)b1) * g[i];
            V[i] = b2 * V[i] + (1 - (double)b2) * g[i] * g[i];
            double c2 = sqrt(1 - pow(b2, t));
            P[i] += -(double)lr * c2 / (1 - pow(b1, t)) * M[i] / (sqrt(V[i]) + eps * c2);
            P[i] *= 1 - (double)lr * wd;
            worst = fmax(worst, fabs(P[i] - p[i]));
        }
    }
    CHECK_MSG(worst < 5e-7, "bnb 32-bit adam: max |dp| %g", worst);
    free(p); free(m); free(v); free(g); free(P); free(M); free(V);
}

static void test_misc(lt_backend *be) {
    const int64_t n = 513;
    float *g = t_rand(n, -2, 2);
    double ss = 0.25, ref = 0.25;
    for (int64_t i = 0; i < n; i++) ref += (double)g[i] * g[i];
    CHECK_OK(be->ops.sumsq(be, g, n, &ss));
    CHECK_NEAR(ss, ref, 1e-12 * ref);
    int flag = -1;
    CHECK_OK(be->ops.nonfinite(be, g, n, &flag));
    CHECK(flag == 0);
    g[200] = INFINITY;
    CHECK_OK(be->ops.nonfinite(be, g, n, &flag));
    CHECK(flag == 1);
    g[200] = 1.0f;
    float g0 = g[7];
    CHECK_OK(be->ops.scale(be, g, n, 0.5f));
    CHECK(g[7] == g0 * 0.5f);
    free(g);
}

int main(void) {
    t_seed(11);
    lt_backend *be;
    CHECK_OK(lt_backend_cpu_create(2, &be));
    test_adamw(be);
    test_adamw8bit(be);
    test_adamw32_bnb();
    test_misc(be);
    lt_backend_free(be);
    return lt_test_done("test_cpu_optim");
}

/* lt_test.h - the tiny assertion kit of loratune's C tests: CHECK macros that count failures,
 * relative-error helpers, and the skip convention (exit 77, which ctest reports as skipped). */
#ifndef LT_TEST_H
#define LT_TEST_H
#include "loratune.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int lt_test_failures = 0;
static int lt_test_checks = 0;

#define CHECK(cond) do { lt_test_checks++; if (!(cond)) { lt_test_failures++; \
    fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECK_MSG(cond, ...) do { lt_test_checks++; if (!(cond)) { lt_test_failures++; \
    fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)
/* A call that must succeed; prints lt_last_error() otherwise. */
#define CHECK_OK(expr) do { lt_test_checks++; lt_status s_ = (expr); if (s_ != LT_OK) { lt_test_failures++; \
    fprintf(stderr, "%s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #expr, lt_status_string(s_), lt_last_error()); } } while (0)
/* A call that must fail with `st`, and whose message contains `needle`. */
#define CHECK_FAIL(expr, st, needle) do { lt_test_checks++; lt_status s_ = (expr); \
    if (s_ != (st) || !strstr(lt_last_error(), (needle))) { lt_test_failures++; \
    fprintf(stderr, "%s:%d: %s -> %s (want %s), message '%s' (want '%s')\n", __FILE__, __LINE__, #expr, \
            lt_status_string(s_), lt_status_string(st), lt_last_error(), (needle)); } } while (0)
#define CHECK_NEAR(a, b, tol) do { lt_test_checks++; double a_ = (a), b_ = (b); \
    if (!(fabs(a_ - b_) <= (tol))) { lt_test_failures++; \
    fprintf(stderr, "%s:%d: %s = %.9g vs %s = %.9g (tol %g)\n", __FILE__, __LINE__, #a, a_, #b, b_, (double)(tol)); } } while (0)

/* ||a - b|| / ||b|| over n floats (NaN anywhere gives +inf). */
static inline double lt_rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) || isnan(b[i])) return INFINITY;
        double d = (double)a[i] - b[i]; num += d * d; den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

#define LT_TEST_SKIP(...) do { fprintf(stderr, "SKIP: "); fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(77); } while (0)

static inline int lt_test_done(const char *name) {
    if (lt_test_failures) { fprintf(stderr, "%s: %d of %d checks failed\n", name, lt_test_failures, lt_test_checks); return 1; }
    printf("%s: all %d checks passed\n", name, lt_test_checks);
    return 0;
}
#endif

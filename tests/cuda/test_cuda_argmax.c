/* test_cuda_argmax.c - argmax_rows of the CUDA backend (cuda/argmax.cu) against the CPU's
 * (the portable default): random rows as wide as Qwen2's vocabulary, rows with equal maxima in
 * several places (the lowest column wins), a row whose maximum is its last column, short rows.
 * The ids must be equal. Exits 77 where no GPU is visible. */
#include "lt_test.h"
#include "backend/backend.h"
#include "core/core.h"

#ifndef LT_HAVE_CUDA
int main(void) { LT_TEST_SKIP("this build has no CUDA backend (nvcc was not found)"); }
#else

static uint64_t rs = 88172645463325252ull;
static float frand(void) {
    rs ^= rs >> 12; rs ^= rs << 25; rs ^= rs >> 27;
    return (float)((rs * 2685821657736338717ull) >> 40) / 8388608.0f - 1.0f;
}

static void check(lt_backend *cpu, lt_backend *gpu, int64_t rows, int64_t cols, int ties) {
    size_t n = (size_t)rows * (size_t)cols;
    float *x = malloc(n * 4);
    for (size_t i = 0; i < n; i++) x[i] = frand() * 20.0f;
    if (ties)
        for (int64_t r = 0; r < rows; r++) { /* the maximum three times; the first must win */
            float *v = x + (size_t)r * (size_t)cols;
            int64_t a = (r * 7919) % cols, b = (a + cols / 3) % cols, c = cols - 1;
            v[a] = v[b] = v[c] = 100.0f;
        }
    else if (rows > 1)
        x[(size_t)cols - 1] = 100.0f; /* row 0: its last column */
    int32_t *want = malloc((size_t)rows * 4), *got = malloc((size_t)rows * 4);
    void *gx = NULL, *gids = NULL, *cids = NULL;
    CHECK_OK(cpu->ops.alloc(cpu, (size_t)rows * 4, &cids));
    CHECK_OK(cpu->ops.argmax_rows(cpu, cids, x, rows, cols));
    CHECK_OK(cpu->ops.download(cpu, want, cids, (size_t)rows * 4));
    CHECK_OK(gpu->ops.alloc(gpu, n * 4, &gx));
    CHECK_OK(gpu->ops.alloc(gpu, (size_t)rows * 4, &gids));
    CHECK_OK(gpu->ops.upload(gpu, gx, x, n * 4));
    CHECK_OK(gpu->ops.argmax_rows(gpu, gids, gx, rows, cols));
    CHECK_OK(gpu->ops.download(gpu, got, gids, (size_t)rows * 4));
    CHECK_OK(gpu->ops.sync(gpu));
    int64_t bad = 0;
    for (int64_t r = 0; r < rows; r++) bad += want[r] != got[r];
    CHECK_MSG(bad == 0, "%lld x %lld%s: %lld rows differ", (long long)rows, (long long)cols, ties ? " (ties)" : "",
              (long long)bad);
    printf("argmax_rows %lld x %lld%s: %lld of %lld rows differ\n", (long long)rows, (long long)cols,
           ties ? " (ties)" : "", (long long)bad, (long long)rows);
    gpu->ops.free(gpu, gx);
    gpu->ops.free(gpu, gids);
    cpu->ops.free(cpu, cids);
    free(x); free(want); free(got);
}

int main(void) {
    if (lt_cuda_device_count() <= 0) LT_TEST_SKIP("no CUDA device visible (or a CPU-only build)");
    lt_backend *cpu = NULL, *gpu = NULL;
    CHECK_OK(lt_backend_cpu_create(0, &cpu));
    CHECK_OK(lt_backend_cuda_create(0, LT_DTYPE_BF16, &gpu));
    check(cpu, gpu, 110, 151936, 0);
    check(cpu, gpu, 37, 151936, 1);
    check(cpu, gpu, 300, 1000, 1);
    check(cpu, gpu, 5, 3, 0);
    check(cpu, gpu, 4, 1, 0);
    lt_backend_free(gpu);
    lt_backend_free(cpu);
    return lt_test_done("test_cuda_argmax");
}
#endif

/* argmax.cu - the row-wise argmax of f32 logits (backend.h argmax_rows): evaluation's token
 * accuracy reads one id per row instead of a row of the vocabulary. Its CPU twin is the portable
 * default in lib/backend/backend_common.c; tests/cuda/test_cuda_argmax.c compares them. */
#include "cuda_common.h"

#define LT_ARGMAX_THREADS 256

/* the better of two (value, column) candidates: larger value, then lower column */
__device__ __forceinline__ void better(float &v, int64_t &c, float v2, int64_t c2) {
    if (v2 > v || (v2 == v && c2 < c)) { v = v2; c = c2; }
}

/* one block per row: each thread scans a strided part of the row, then a reduction in shared memory */
__global__ void k_argmax_rows(int32_t *out, const float *x, int64_t cols) {
    __shared__ float sv[LT_ARGMAX_THREADS];
    __shared__ int64_t sc[LT_ARGMAX_THREADS];
    const float *row = x + (int64_t)blockIdx.x * cols;
    float v = -INFINITY;
    int64_t c = cols; /* no candidate yet: any column wins over it */
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
        float y = row[j];
        if (c == cols || y > v) { v = y; c = j; } /* ascending j: an equal value keeps the lower column */
    }
    sv[threadIdx.x] = v;
    sc[threadIdx.x] = c;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            float v2 = sv[threadIdx.x + s];
            int64_t c2 = sc[threadIdx.x + s];
            if (c2 < cols) {
                if (sc[threadIdx.x] == cols) { sv[threadIdx.x] = v2; sc[threadIdx.x] = c2; }
                else {
                    float v1 = sv[threadIdx.x];
                    int64_t c1 = sc[threadIdx.x];
                    better(v1, c1, v2, c2);
                    sv[threadIdx.x] = v1;
                    sc[threadIdx.x] = c1;
                }
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = (int32_t)(sc[0] < cols ? sc[0] : 0);
}

lt_status lt_cuda_argmax_rows(lt_backend *be, int32_t *out, const float *x, int64_t rows, int64_t cols) {
    if (rows <= 0) return LT_OK;
    if (rows > 2147483647 || cols <= 0)
        return lt_error(LT_ERR_INVALID_ARGUMENT, "argmax_rows: %lld rows of %lld columns", (long long)rows,
                        (long long)cols);
    cudaStream_t st = lt_cuda_of(be)->stream;
    k_argmax_rows<<<(unsigned)rows, LT_ARGMAX_THREADS, 0, st>>>(out, x, cols);
    LT_LAUNCH_CHECK("k_argmax_rows");
    return LT_OK;
}

/* lm_head_ce.cu - the LM head fused with cross-entropy, over chunks of tokens so that the
 * full-vocabulary logits of a batch never exist: for each chunk a GEMM writes f32 logits
 * (T,V), one block per row takes the log-sum-exp, the loss and the gradient of the logits
 * (bf16/fp16, scaled by grad_scale), and a second GEMM turns that into dh. Per-row losses are
 * summed in a fixed order at the end, so the loss is deterministic. */
#include "cuda_common.h"
#include <math.h>

/* ---------------------------------------------------------------- kernels */
/* one block per row: online max/sum, then the loss and softmax - onehot */
template <typename T>
__global__ void k_ce_rows(const float *logits, T *dlogits, const int32_t *targets, float *losses, int64_t V,
                          float grad_scale) {
    __shared__ float sm[32], ss[32];
    __shared__ float s_lse;
    const float *l = logits + blockIdx.x * V;
    float m = -INFINITY, s = 0.0f;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        const float x = l[j];
        if (x > m) { s = s * expf(m - x) + 1.0f; m = x; }
        else s += expf(x - m);
    }
    /* combine (m, s) pairs: warp, then block */
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        const float mm = fmaxf(m, m2);
        s = (m == -INFINITY ? 0.0f : s * expf(m - mm)) + (m2 == -INFINITY ? 0.0f : s2 * expf(m2 - mm));
        m = mm;
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
    if (lane == 0) { sm[warp] = m; ss[warp] = s; }
    __syncthreads();
    if (warp == 0) {
        m = lane < nw ? sm[lane] : -INFINITY;
        s = lane < nw ? ss[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) {
            const float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
            const float mm = fmaxf(m, m2);
            s = (m == -INFINITY ? 0.0f : s * expf(m - mm)) + (m2 == -INFINITY ? 0.0f : s2 * expf(m2 - mm));
            m = mm;
        }
        if (lane == 0) s_lse = m + logf(s);
    }
    __syncthreads();
    const float lse = s_lse;
    const int32_t tgt = targets[blockIdx.x];
    const bool valid = tgt >= 0 && tgt < V;
    if (threadIdx.x == 0) losses[blockIdx.x] = valid ? lse - l[tgt] : 0.0f;
    if (!dlogits) return;
    T *d = dlogits + blockIdx.x * V;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        float g = 0.0f;
        if (valid) g = (expf(l[j] - lse) - (j == tgt ? 1.0f : 0.0f)) * grad_scale;
        d[j] = lt_fromf<T>(g);
    }
}

/* *sum += sum(x[0..n)) in a fixed order (one block) */
__global__ void k_sum_into(float *sum, const float *x, int64_t n) {
    __shared__ double part[1024];
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += x[i];
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) *sum += (float)part[0];
}

/* ---------------------------------------------------------------- launcher */
lt_status lt_cuda_lm_head_ce(lt_backend *be, float *loss_sum, void *dh, const void *h, const lt_bweight *head,
                             const int32_t *targets, int64_t N, int64_t C, int64_t V, float grad_scale) {
    LT_CHECK_ARG(head->rows == V && head->cols == C, "lm_head_ce: weight is [%lld, %lld], expected [%lld, %lld]",
                 (long long)head->rows, (long long)head->cols, (long long)V, (long long)C);
    if (N <= 0) return LT_OK;
    lt_cuda *c = lt_cuda_of(be);
    const cudaDataType_t t = c->act_type;
    /* a chunk of rows whose f32 logits + 16-bit gradient take about 192 MiB */
    int64_t T = (int64_t)((192ull << 20) / ((size_t)V * 6));
    if (T < 16) T = 16;
    if (T > N) T = N;
    const size_t head_b = head->quant != LT_QUANT_NONE ? lt_align256((size_t)(V * C) * 2) : 0;
    const size_t need = head_b + lt_align256((size_t)(T * V) * 4) + (dh ? lt_align256((size_t)(T * V) * 2) : 0) +
                        lt_align256((size_t)N * 4);
    void *scr;
    LT_TRY(lt_cuda_scratch(c, need, &scr));
    char *cur = (char *)scr;
    void *head16_buf = head_b ? lt_carve(&cur, (size_t)(V * C) * 2) : NULL;
    float *logits = (float *)lt_carve(&cur, (size_t)(T * V) * 4);
    void *dlog = dh ? lt_carve(&cur, (size_t)(T * V) * 2) : NULL;
    float *losses = (float *)lt_carve(&cur, (size_t)N * 4);
    const void *W16;
    LT_TRY(lt_cuda_weight_16(be, head, head16_buf, &W16));
    const int th = V >= 4096 ? 1024 : 128;
    for (int64_t r0 = 0; r0 < N; r0 += T) {
        const int64_t rows = N - r0 < T ? N - r0 : T;
        const char *hc = (const char *)h + (size_t)(r0 * C) * 2;
        /* logits^T (V x rows) = head (col-major C x V)^T . h^T */
        LT_TRY(lt_cuda_gemm(be, CUBLAS_OP_T, CUBLAS_OP_N, V, rows, C, 1.0f, W16, t, C, hc, t, C, 0.0f, logits,
                            CUDA_R_32F, V));
        if (be->act_dtype == LT_DTYPE_BF16)
            k_ce_rows<<<(unsigned)rows, th, 0, c->stream>>>(logits, (__nv_bfloat16 *)dlog, targets + r0, losses + r0, V,
                                                            grad_scale);
        else
            k_ce_rows<<<(unsigned)rows, th, 0, c->stream>>>(logits, (__half *)dlog, targets + r0, losses + r0, V,
                                                            grad_scale);
        LT_LAUNCH_CHECK("k_ce_rows");
        if (dh) {
            /* dh^T (C x rows) = head^T (C x V) . dlogits^T (V x rows) */
            LT_TRY(lt_cuda_gemm(be, CUBLAS_OP_N, CUBLAS_OP_N, C, rows, V, 1.0f, W16, t, C, dlog, t, V, 0.0f,
                                (char *)dh + (size_t)(r0 * C) * 2, t, C));
        }
    }
    k_sum_into<<<1, 1024, 0, c->stream>>>(loss_sum, losses, N);
    LT_LAUNCH_CHECK("k_sum_into");
    return LT_OK;
}

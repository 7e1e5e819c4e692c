/* lm_head_ce.cu - the LM head fused with cross-entropy, over chunks of tokens so that the
 * full-vocabulary logits of a batch never exist: for each chunk a GEMM writes the logits (T,V)
 * in the activation type, as transformers' lm_head does before its loss upcasts them, one
 * block per row takes the log-sum-exp in f32, the loss and the
 * gradient of the logits (bf16/fp16, scaled by grad_scale, written in place over the row it
 * came from), and a split-K GEMM turns that into dh: the dh product is only C x T wide but V
 * long, so the vocabulary is cut into slices multiplied side by side (one batched GEMM) and the
 * f32 partials summed in a fixed order. Per-row losses are summed in a fixed order at the end,
 * so the loss is deterministic. */
#include "cuda_common.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- kernels */
/* eight 16-bit values of a 16-byte piece as f32, and back */
template <typename T> __device__ __forceinline__ void ce_unpack8(uint4 v, float x[8]) {
    const T *h = reinterpret_cast<const T *>(&v);
#pragma unroll
    for (int u = 0; u < 8; u++) x[u] = lt_tof<T>(h[u]);
}
template <typename T> __device__ __forceinline__ uint4 ce_pack8(const float x[8]) {
    uint4 v;
    T *h = reinterpret_cast<T *>(&v);
#pragma unroll
    for (int u = 0; u < 8; u++) h[u] = lt_fromf<T>(x[u]);
    return v;
}

/* one block per row: online max/sum, then the loss and softmax - onehot */
template <typename T>
__global__ void k_ce_rows(const T *logits, T *dlogits, const int32_t *targets, float *losses, int64_t V,
                          float grad_scale) {
    __shared__ float sm[32], ss[32];
    __shared__ float s_lse;
    const T *l = logits + blockIdx.x * V;
    float m = -INFINITY, s = 0.0f;
    if (V % 8 == 0) {
        /* eight at a time (16-byte loads) */
        const uint4 *l8 = reinterpret_cast<const uint4 *>(l);
        for (int64_t j = threadIdx.x; j < V / 8; j += blockDim.x) {
            float x[8];
            ce_unpack8<T>(l8[j], x);
            float mx = x[0];
#pragma unroll
            for (int u = 1; u < 8; u++) mx = fmaxf(mx, x[u]);
            if (mx > m) { s *= expf(m - mx); m = mx; }
#pragma unroll
            for (int u = 0; u < 8; u++) s += expf(x[u] - m);
        }
    } else {
        for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
            const float x = lt_tof<T>(l[j]);
            if (x > m) { s = s * expf(m - x) + 1.0f; m = x; }
            else s += expf(x - m);
        }
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
    if (threadIdx.x == 0) losses[blockIdx.x] = valid ? lse - lt_tof<T>(l[tgt]) : 0.0f;
    if (!dlogits) return;
    /* the gradient overwrites the row in place: each round reads its 4 x blockDim values into
     * registers before anyone writes (one barrier per round) */
    T *d = dlogits + blockIdx.x * V;
    __syncthreads(); /* the target logit and the first pass are read */
    if (V % 8 == 0) {
        /* each thread overwrites only the eight it read, no barrier needed */
        const uint4 *l8 = reinterpret_cast<const uint4 *>(l);
        uint4 *d8 = reinterpret_cast<uint4 *>(d);
        for (int64_t j = threadIdx.x; j < V / 8; j += blockDim.x) {
            float x[8];
            ce_unpack8<T>(l8[j], x);
#pragma unroll
            for (int u = 0; u < 8; u++) {
                const int64_t col = 8 * j + u;
                x[u] = valid ? (expf(x[u] - lse) - (col == tgt ? 1.0f : 0.0f)) * grad_scale : 0.0f;
            }
            d8[j] = ce_pack8<T>(x);
        }
        return;
    }
    for (int64_t base = 0; base < V; base += 4 * (int64_t)blockDim.x) {
        float x[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int64_t j = base + u * (int64_t)blockDim.x + threadIdx.x;
            x[u] = j < V ? lt_tof<T>(l[j]) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int64_t j = base + u * (int64_t)blockDim.x + threadIdx.x;
            if (j >= V) continue;
            float g = 0.0f;
            if (valid) g = (expf(x[u] - lse) - (j == tgt ? 1.0f : 0.0f)) * grad_scale;
            d[j] = lt_fromf<T>(g);
        }
    }
}

/* out[i] (16-bit) = sum over s < S of part[s][i], in order */
template <typename T>
__global__ void k_sum_slices(T *out, const float *part, int S, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < S; s++) acc += part[(int64_t)s * n + i];
        out[i] = lt_fromf<T>(acc);
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

lt_status lt_cuda_sum_into(lt_backend *be, float *sum, const float *x, int64_t n) {
    if (n <= 0) return LT_OK;
    k_sum_into<<<1, 1024, 0, lt_cuda_of(be)->stream>>>(sum, x, n);
    LT_LAUNCH_CHECK("k_sum_into");
    return LT_OK;
}

/* ---------------------------------------------------------------- launcher */
/* Vocabulary slices for the dh product: the most (<= 16) that divide V into 16-byte aligned
 * pieces, so that C x T x S output tiles fill the GPU; 1 means one plain GEMM. */
static int dh_slices(int64_t V) {
    for (int s = 16; s > 1; s >>= 1)
        if (V % (8 * s) == 0) return s;
    return 1;
}

lt_status lt_cuda_lm_head_ce(lt_backend *be, float *loss_sum, void *dh, const void *h, const lt_bweight *head,
                             const int32_t *targets, int64_t N, int64_t C, int64_t V, float grad_scale) {
    LT_CHECK_ARG(head->rows == V && head->cols == C, "lm_head_ce: weight is [%lld, %lld], expected [%lld, %lld]",
                 (long long)head->rows, (long long)head->cols, (long long)V, (long long)C);
    if (N <= 0) return LT_OK;
    lt_cuda *c = lt_cuda_of(be);
    const cudaDataType_t t = c->act_type;
    /* 16-bit logits, as transformers' lm_head writes them before its loss upcasts them: half the
     * traffic of f32 logits, and twice the rows per chunk in the same memory */
    const size_t lb = 2; /* bytes per logit */
    /* a chunk of rows whose logits take about 224 MiB (the 16-bit gradient reuses them), or
     * what the caller asks for (be->head_chunk_bytes: the memory-saving mode's smaller chunks),
     * in 64-row steps: wide enough for the dh product to fill the GPU; evened out over the
     * chunks N takes, so that a short batch holds no more logits than it has rows */
    const int64_t T = lt_head_chunk_rows(N, V, (int64_t)lb, be->head_chunk_bytes);
    /* vocabulary slices: no more than 16 x 384 slice-rows of partials */
    int S = dh ? dh_slices(V) : 1;
    while (S > 1 && (int64_t)S * T > 16 * 384) S /= 2;
    const size_t head_b = head->quant != LT_QUANT_NONE ? lt_align256((size_t)(V * C) * 2) : 0;
    const size_t part_b = S > 1 ? lt_align256((size_t)S * (size_t)(C * T) * 4) : 0;
    const size_t need = head_b + lt_align256((size_t)(T * V) * lb) + part_b + lt_align256((size_t)N * 4);
    void *scr;
    LT_TRY(lt_cuda_scratch(c, need, &scr));
    char *cur = (char *)scr;
    void *head16_buf = head_b ? lt_carve(&cur, (size_t)(V * C) * 2) : NULL;
    void *logits = lt_carve(&cur, (size_t)(T * V) * lb);
    float *part = part_b ? (float *)lt_carve(&cur, (size_t)S * (size_t)(C * T) * 4) : NULL;
    float *losses = (float *)lt_carve(&cur, (size_t)N * 4);
    void *dlog = dh ? logits : NULL; /* in place: row r at offset r V */
    const void *W16;
    LT_TRY(lt_cuda_weight_16(be, head, head16_buf, &W16));
    /* a chunk's rows in one wave where possible: 512 threads (four rows per SM) when the chunk
     * fits that, else 256 (eight per SM: 768 rows of 16-bit logits); a second, partly filled
     * wave cost ~45% more time per row */
    const int th = V < 4096 ? 128 : T <= 4 * (int64_t)c->sm_count ? 512 : 256;
    const float one = 1.0f, zero = 0.0f;
    const int64_t ldd = V; /* gradient row stride (in place over the logits) */
    for (int64_t r0 = 0; r0 < N; r0 += T) {
        const int64_t rows = N - r0 < T ? N - r0 : T;
        const char *hc = (const char *)h + (size_t)(r0 * C) * 2;
        /* logits^T (V x rows) = head (col-major C x V)^T . h^T */
        LT_TRY(lt_cuda_gemm(be, CUBLAS_OP_T, CUBLAS_OP_N, V, rows, C, 1.0f, W16, t, C, hc, t, C, 0.0f, logits, t, V));
        int slot = lt_prof_begin(c, LT_PROF_CE);
        if (be->act_dtype == LT_DTYPE_BF16)
            k_ce_rows<<<(unsigned)rows, th, 0, c->stream>>>((const __nv_bfloat16 *)logits, (__nv_bfloat16 *)dlog,
                                                            targets + r0, losses + r0, V, grad_scale);
        else
            k_ce_rows<<<(unsigned)rows, th, 0, c->stream>>>((const __half *)logits, (__half *)dlog, targets + r0,
                                                            losses + r0, V, grad_scale);
        LT_LAUNCH_CHECK("k_ce_rows");
        lt_prof_end(c, slot);
        if (!dh) continue;
        char *dhc = (char *)dh + (size_t)(r0 * C) * 2;
        if (S == 1) {
            /* dh^T (C x rows) = head^T (C x V) . dlogits^T (V x rows) */
            LT_TRY(lt_cuda_gemm(be, CUBLAS_OP_N, CUBLAS_OP_N, C, rows, V, 1.0f, W16, t, C, dlog, t, ldd, 0.0f, dhc,
                                t, C));
            continue;
        }
        /* part[s]^T (C x rows) = head[slice s]^T (C x V/S) . dlogits[:, slice s]^T */
        const int64_t VS = V / S;
        slot = lt_prof_begin(c, LT_PROF_HEAD_GEMM);
        LT_CUBLAS_TRY(cublasGemmStridedBatchedEx(c->cublas, CUBLAS_OP_N, CUBLAS_OP_N, (int)C, (int)rows, (int)VS, &one,
                                                 W16, t, (int)C, (long long)(VS * C), dlog, t, (int)ldd,
                                                 (long long)VS, &zero, part, CUDA_R_32F, (int)C,
                                                 (long long)(C * rows), S, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        lt_prof_end(c, slot);
        const int64_t n = C * rows;
        if (be->act_dtype == LT_DTYPE_BF16)
            k_sum_slices<<<lt_blocks(n, 256), 256, 0, c->stream>>>((__nv_bfloat16 *)dhc, part, S, n);
        else
            k_sum_slices<<<lt_blocks(n, 256), 256, 0, c->stream>>>((__half *)dhc, part, S, n);
        LT_LAUNCH_CHECK("k_sum_slices");
    }
    k_sum_into<<<1, 1024, 0, c->stream>>>(loss_sum, losses, N);
    LT_LAUNCH_CHECK("k_sum_into");
    return LT_OK;
}

/* attn_gemm.cu - attention on cuBLAS products for what the flash kernels of attention.cu do not
 * take: any head dim, a score scale, soft-capping (Gemma 2), a sliding window, GQA, packed
 * sequences (cu_seqlens), causal; forward and backward (family.cu's attention_opt_* call it).
 *
 * The host knows nseq and max_seqlen (they are in the key of a recorded pass graph) but not
 * where the sequences start (cu_seqlens lives on the device and changes between replays), so
 * the packed rows are first copied into a padded layout, one block of Lp rows
 * (Lp = max_seqlen rounded up to 16) per (sequence, kv head) "pair", zeros past the sequence:
 *   Qp[pair][t][r][HD]  (the G = NH/NKV query heads of a kv head are consecutive rows, so the
 *                        rows of a pair are (t, r) = t*G + r and one product serves the group)
 *   Kp, Vp[pair][t][HD]
 * A batch of many short records under a long max_seqlen would pad far (the trainer's buckets
 * keep max_seqlen at the longest record of the data set): there the layout is "packed", all N
 * tokens as one sequence (pairs = kv heads, no padding), the mask also keeps each query within
 * its own record (its start by binary search in cu_seqlens), and a block's key columns reach
 * back max_seqlen (or the window) from its first query. ag_make_plan takes the layout with
 * fewer score elements.
 * Then per block of TB query positions [t0, t1) (rows t0*G .. t1*G of every pair; batched over
 * the pairs with cublasGemmStridedBatchedEx) only the key columns [c0, c1) that the causal
 * mask and the window can reach (multiples of 16) are multiplied:
 *   S  = Q K^T                  f32 (raw dot products)
 *   P  = softmax(cap * tanh(scale * S / cap)) masked    -> 16 bits, in place over S (k_ag_softmax,
 *        which also saves the log-sum-exp as attention_fwd does: lse(NH, N))
 *   O  = P V                    written over the block's Q rows (no longer needed), then
 *                               copied back to the packed (N, NH, HD) output
 * Backward, per block: S = Q K^T and dP = dO V^T (f32), then P = exp(score - lse) and
 * dS = P (dP - D) (1 - tanh^2) in 16 bits in place (k_ag_bwd; D = rowsum(dO * O)),
 *   dV += P^T dO,  dK += scale dS^T Q   (f32, over the blocks; the sum over the G query heads of
 *                                        a kv head is the product's inner dimension)
 *   dQ  = scale dS K                    (over the block's Q rows)
 * Products accumulate in f32; P and dS are rounded to 16 bits for them, as flash attention does.
 * The score buffer is at most LT_AG_SCORE_BYTES (the pairs of a block go in several products
 * beyond it, and TB shrinks when one pair's block alone is larger); workspace: ag_plan and
 * lt_estimate_memory (lib/model/memory.c). Everything is stream-ordered device work: it records
 * into a CUDA graph like any other op. */
#include "cuda_common.h"
#include "family.h"
#include "backend/attn_plan.h" /* the plan and its workspace, shared with memory.c */
#include <math.h>


static size_t g_ag_budget = LT_AG_SCORE_BYTES;
static int g_ag_off = 0;
extern "C" void lt_cuda_attention_gemm_budget(size_t bytes) { g_ag_budget = bytes ? bytes : LT_AG_SCORE_BYTES; }
extern "C" void lt_cuda_attention_gemm_force_off(int on) { g_ag_off = on; }

typedef lt_ag_plan ag_plan;

/* the plan (backend/attn_plan.h, which lt_estimate_memory counts by as well) */
static void ag_make_plan(int64_t nseq, int64_t N, int64_t Lmax, int64_t NKV, int64_t G, int64_t window, size_t budget,
                         ag_plan *p) {
    lt_ag_make_plan(nseq, N, Lmax, NKV, G, window, budget, p);
}

__device__ __forceinline__ float ag_warp_sum(float v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}
__device__ float ag_block_max(float v, float *red) {
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    __syncthreads();
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
    __syncthreads();
    float s = -INFINITY;
    for (int k = 0; k < (int)blockDim.x / 32; k++) s = fmaxf(s, red[k]);
    return s;
}
__device__ float ag_block_sum(float v, float *red) {
    v = ag_warp_sum(v);
    __syncthreads();
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
    __syncthreads();
    float s = 0;
    for (int k = 0; k < (int)blockDim.x / 32; k++) s += red[k];
    return s;
}

/* 8 or 1 values as floats from 16-bit or f32 memory, and back to 16 bits */
template <typename S, int V> struct ag_io;
template <typename S> struct ag_io<S, 8> {
    static __device__ __forceinline__ void load(const S *p, float f[8]) { lt_unpack8<S>(*(const uint4 *)p, f); }
};
template <> struct ag_io<float, 8> {
    static __device__ __forceinline__ void load(const float *p, float f[8]) {
        const float4 a = ((const float4 *)p)[0], b = ((const float4 *)p)[1];
        f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w; f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
    }
};
template <typename S> struct ag_io<S, 1> {
    static __device__ __forceinline__ void load(const S *p, float f[1]) { f[0] = lt_tof<S>(*p); }
};
template <> struct ag_io<float, 1> {
    static __device__ __forceinline__ void load(const float *p, float f[1]) { f[0] = *p; }
};
template <typename T, int V> __device__ __forceinline__ void ag_store(T *p, const float f[V]) {
    if (V == 8) *(uint4 *)p = lt_pack8<T>(f);
    else
        for (int j = 0; j < V; j++) p[j] = lt_fromf<T>(f[j]);
}

/* packed src (N, NKV*Gp, HD) -> padded dst [pair = b*NKV + g][t < Lp][r < Gp][HD], zeros past
 * each sequence (packedN > 0: one sequence of packedN tokens); U: 8 or 1 16-bit values */
template <typename U>
__global__ void k_ag_pad(U *dst, const U *src, const int32_t *cu, int64_t nseq, int64_t NKV, int64_t Gp, int64_t Lp,
                         int64_t hdu, int64_t packedN) {
    const int64_t total = nseq * NKV * Lp * Gp * hdu;
    for (int64_t u = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; u < total; u += (int64_t)gridDim.x * blockDim.x) {
        int64_t x = u / hdu;
        const int64_t e = u - x * hdu;
        const int64_t r = x % Gp;
        x /= Gp;
        const int64_t t = x % Lp;
        x /= Lp;
        const int64_t g = x % NKV, b = x / NKV;
        const int64_t s = packedN ? 0 : cu[b], len = packedN ? packedN : cu[b + 1] - s;
        U val;
        memset(&val, 0, sizeof val);
        if (t < len) val = src[((s + t) * NKV * Gp + g * Gp + r) * hdu + e];
        dst[u] = val;
    }
}

/* padded src (16-bit T or f32, layout of k_ag_pad) -> packed dst (N, NKV*Gp, HD); tokens past
 * the last sequence get zeros (packed: src holds all N tokens as one sequence) */
template <typename T, typename S, int V>
__global__ void k_ag_unpad(T *dst, const S *src, const int32_t *cu, int32_t nseq, int64_t N, int64_t NKV, int64_t Gp,
                           int64_t Lp, int64_t HD, int packed) {
    const int64_t hdv = HD / V, H = NKV * Gp, total = N * H * hdv;
    for (int64_t u = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; u < total; u += (int64_t)gridDim.x * blockDim.x) {
        int64_t x = u / hdv;
        const int64_t e = (u - x * hdv) * V;
        const int64_t h = x % H, i = x / H;
        int lo = 0, hi = packed ? 0 : nseq - 1;
        while (lo < hi) { /* the last sequence starting at or before i */
            const int mid = (lo + hi + 1) / 2;
            if (cu[mid] <= i) lo = mid;
            else hi = mid - 1;
        }
        const int64_t t = packed ? i : i - cu[lo];
        float f[V];
        if ((packed || i < cu[nseq]) && t >= 0 && t < Lp) {
            const int64_t g = h / Gp, r = h % Gp;
            ag_io<S, V>::load(src + ((((int64_t)lo * NKV + g) * Lp + t) * Gp + r) * HD + e, f);
        } else {
            for (int j = 0; j < V; j++) f[j] = 0.0f;
        }
        ag_store<T, V>(dst + i * H * HD + h * HD + e, f);
    }
}

/* D(NH, N) = rowsum(dout * out): one warp per (token, head) */
template <typename T>
__global__ void k_ag_D(float *D, const T *dout, const T *out, int64_t N, int64_t NH, int64_t HD) {
    const int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (w >= N * NH) return;
    const int64_t i = w / NH, h = w % NH;
    const T *a = dout + w * HD, *b = out + w * HD;
    float s = 0;
    for (int64_t e = lane; e < HD; e += 32) s += lt_tof<T>(a[e]) * lt_tof<T>(b[e]);
    s = ag_warp_sum(s);
    if (lane == 0) D[h * N + i] = s;
}

/* what a block of the score products covers */
typedef struct {
    const int32_t *cu;
    int32_t nseq;
    int packed; /* the plan's layout: rows are tokens of the whole batch */
    int64_t N, NKV, G;
    int64_t m0, mr, p0; /* first row (t*G + r) and rows of the block; first pair of the product */
    int64_t c0, nc;     /* key columns [c0, c0 + nc) */
    float scale, cap;
    int64_t window;
} ag_blk;

/* the row's token and head, and its allowed columns [lo, hi] relative to c0 (empty: lo > hi);
 * the plan's columns [c0, ...) always start at or before the first allowed key */
struct ag_row {
    int64_t tok, h, lo, hi;
    bool valid;
};
__device__ __forceinline__ ag_row ag_row_of(const ag_blk &k, int64_t i, int64_t pc) {
    ag_row w;
    const int64_t m = k.m0 + i, t = m / k.G, r = m % k.G, pair = k.p0 + pc, b = pair / k.NKV, g = pair % k.NKV;
    int64_t first = 0; /* the sequence's first key, in the row coordinates t */
    w.h = g * k.G + r;
    if (k.packed) { /* t is the token; its sequence by binary search */
        int lo = 0, hi = k.nseq - 1;
        while (lo < hi) {
            const int mid = (lo + hi + 1) / 2;
            if (k.cu[mid] <= t) lo = mid;
            else hi = mid - 1;
        }
        first = k.cu[lo];
        w.tok = t;
        w.valid = t < k.cu[k.nseq];
    } else {
        const int64_t s = k.cu[b], len = k.cu[b + 1] - s;
        w.tok = s + t;
        w.valid = t < len;
    }
    w.lo = 1;
    w.hi = 0;
    if (w.valid) {
        int64_t lo = k.window > 0 && t - k.window + 1 > first ? t - k.window + 1 : first;
        w.lo = lo - k.c0 > 0 ? lo - k.c0 : 0;
        w.hi = t - k.c0 < k.nc - 1 ? t - k.c0 : k.nc - 1;
    }
    return w;
}

__device__ __forceinline__ float ag_score(float dot, const ag_blk &k, float *th) {
    float s = dot * k.scale;
    if (k.cap > 0) {
        *th = tanhf(s / k.cap);
        s = *th * k.cap;
    }
    return s;
}

/* One block per score row (grid: rows of the block, pairs of the product): softmax over the
 * allowed columns, P written in place as 16 bits (row ld 2*nc in T units). The columns are
 * rewritten in chunks of blockDim: a chunk's 16-bit values only cover f32 values of the row
 * before the chunk's end, which every thread has read before the barrier. */
template <typename T>
__global__ void k_ag_softmax(float *S, float *lse, ag_blk k) {
    __shared__ float red[32];
    const int64_t i = blockIdx.x, pc = blockIdx.y;
    float *row = S + (pc * k.mr + i) * k.nc;
    T *prow = reinterpret_cast<T *>(row);
    const ag_row w = ag_row_of(k, i, pc);
    float mx = -INFINITY, sm = 0, th = 0;
    for (int64_t j = w.lo + threadIdx.x; j <= w.hi; j += blockDim.x) {
        const float s = ag_score(row[j], k, &th);
        if (s > mx) {
            sm = sm * expf(mx - s) + 1.0f;
            mx = s;
        } else {
            sm += expf(s - mx);
        }
    }
    const float M = ag_block_max(mx, red);
    const float tot = ag_block_sum(mx == -INFINITY ? 0.0f : sm * expf(mx - M), red);
    const float L = w.valid ? M + logf(tot) : 0.0f;
    for (int64_t j0 = 0; j0 < k.nc; j0 += blockDim.x) {
        const int64_t j = j0 + threadIdx.x;
        float p = 0;
        if (j >= w.lo && j <= w.hi) p = expf(ag_score(row[j], k, &th) - L);
        __syncthreads();
        if (j < k.nc) prow[j] = lt_fromf<T>(p);
    }
    if (lse && w.valid && threadIdx.x == 0) lse[w.h * k.N + w.tok] = L;
}

/* backward rows: P = exp(score - lse) over S, dS = P (dP - D) (1 - tanh^2) over dP, both in
 * place as 16 bits (same chunked rewrite as k_ag_softmax) */
template <typename T>
__global__ void k_ag_bwd(float *S, float *dP, const float *lse, const float *D, ag_blk k) {
    const int64_t i = blockIdx.x, pc = blockIdx.y;
    float *row = S + (pc * k.mr + i) * k.nc, *drow = dP + (pc * k.mr + i) * k.nc;
    T *prow = reinterpret_cast<T *>(row), *dsrow = reinterpret_cast<T *>(drow);
    const ag_row w = ag_row_of(k, i, pc);
    float L = 0, Dv = 0;
    if (w.valid) {
        L = lse[w.h * k.N + w.tok];
        Dv = D[w.h * k.N + w.tok];
    }
    for (int64_t j0 = 0; j0 < k.nc; j0 += blockDim.x) {
        const int64_t j = j0 + threadIdx.x;
        float p = 0, ds = 0, th = 0;
        if (j >= w.lo && j <= w.hi) {
            p = expf(ag_score(row[j], k, &th) - L);
            ds = p * (drow[j] - Dv);
            if (k.cap > 0) ds *= 1.0f - th * th;
        }
        __syncthreads();
        if (j < k.nc) {
            prow[j] = lt_fromf<T>(p);
            dsrow[j] = lt_fromf<T>(ds);
        }
    }
}

/* column-major C = alpha op(A) op(B) + beta C, A and B in the act type, batched with strides */
static lt_status ag_gemm(lt_cuda *c, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k,
                         float alpha, const void *A, int64_t lda, int64_t sA, const void *B, int64_t ldb, int64_t sB,
                         float beta, void *C, cudaDataType_t ct, int64_t ldc, int64_t sC, int64_t batch) {
    LT_CUBLAS_TRY(cublasGemmStridedBatchedEx(c->cublas, ta, tb, (int)m, (int)n, (int)k, &alpha, A, c->act_type, (int)lda,
                                             (long long)sA, B, c->act_type, (int)ldb, (long long)sB, &beta, C, ct,
                                             (int)ldc, (long long)sC, (int)batch, CUBLAS_COMPUTE_32F,
                                             CUBLAS_GEMM_DEFAULT));
    return LT_OK;
}

static bool ag_vec8(int64_t HD, const void *a, const void *b) {
    return HD % 8 == 0 && ((uintptr_t)a % 16) == 0 && ((uintptr_t)b % 16) == 0;
}

/* src packed (N, NKV*Gp, HD) of 16-bit values -> padded dst */
static lt_status ag_pad(lt_cuda *c, void *dst, const void *src, const int32_t *cu, int64_t nseq, int64_t NKV,
                        int64_t Gp, int64_t Lp, int64_t HD, int64_t packedN) {
    if (ag_vec8(HD, dst, src)) {
        const int64_t n = nseq * NKV * Lp * Gp * (HD / 8);
        k_ag_pad<uint4><<<lt_blocks(n, 256), 256, 0, c->stream>>>((uint4 *)dst, (const uint4 *)src, cu, nseq, NKV, Gp,
                                                                  Lp, HD / 8, packedN);
    } else {
        const int64_t n = nseq * NKV * Lp * Gp * HD;
        k_ag_pad<uint16_t><<<lt_blocks(n, 256), 256, 0, c->stream>>>((uint16_t *)dst, (const uint16_t *)src, cu, nseq,
                                                                     NKV, Gp, Lp, HD, packedN);
    }
    LT_LAUNCH_CHECK("k_ag_pad");
    return LT_OK;
}

template <typename T, typename S>
static lt_status ag_unpad(lt_cuda *c, T *dst, const S *src, const int32_t *cu, int32_t nseq, int64_t N, int64_t NKV,
                          int64_t Gp, int64_t Lp, int64_t HD, int packed) {
    if (ag_vec8(HD, dst, src)) {
        const int64_t n = N * NKV * Gp * (HD / 8);
        k_ag_unpad<T, S, 8><<<lt_blocks(n, 256), 256, 0, c->stream>>>(dst, src, cu, nseq, N, NKV, Gp, Lp, HD, packed);
    } else {
        const int64_t n = N * NKV * Gp * HD;
        k_ag_unpad<T, S, 1><<<lt_blocks(n, 256), 256, 0, c->stream>>>(dst, src, cu, nseq, N, NKV, Gp, Lp, HD, packed);
    }
    LT_LAUNCH_CHECK("k_ag_unpad");
    return LT_OK;
}

/* the key columns a block of query positions [t0, t1) can reach: [c0, c1), multiples of 16 */
static void ag_cols(const ag_plan &p, int64_t t0, int64_t t1, int64_t *c0, int64_t *nc) {
    int64_t c1 = (t1 + 15) / 16 * 16;
    if (c1 > p.Lp) c1 = p.Lp;
    int64_t a = p.Wc > 0 && t0 - p.Wc + 1 > 0 ? t0 - p.Wc + 1 : 0;
    a = a / 16 * 16;
    *c0 = a;
    *nc = c1 - a;
}

static unsigned ag_threads(int64_t nc) { return nc >= 1024 ? 256 : 128; }

int lt_cuda_attention_gemm_ok(lt_backend *be, int64_t N, int32_t nseq, int32_t max_seqlen) {
    lt_cuda *c = lt_cuda_of(be);
    return !g_ag_off && c->cublas && nseq > 0 && max_seqlen > 0;
}

template <typename T>
static lt_status ag_fwd(lt_backend *be, T *out, float *lse, const T *q, const T *k, const T *v, const int32_t *cu,
                        int32_t nseq, int64_t Lmax, int64_t N, int64_t NH, int64_t NKV, int64_t HD, float scale,
                        float cap, int64_t window) {
    lt_cuda *c = lt_cuda_of(be);
    cudaStream_t s = c->stream;
    const int64_t G = NH / NKV;
    ag_plan p;
    ag_make_plan(nseq, N, Lmax, NKV, G, window, g_ag_budget, &p);
    const int64_t Lp = p.Lp, ns = p.nseq_e, pN = p.packed ? N : 0;
    const size_t qb = lt_align256((size_t)(ns * NH * Lp * HD) * sizeof(T)),
                 kb = lt_align256((size_t)(ns * NKV * Lp * HD) * sizeof(T));
    void *scr;
    LT_TRY(lt_cuda_scratch(c, qb + 2 * kb + lt_align256(p.score_bytes), &scr));
    char *cur = (char *)scr;
    T *Qp = (T *)lt_carve(&cur, qb), *Kp = (T *)lt_carve(&cur, kb), *Vp = (T *)lt_carve(&cur, kb);
    float *S = (float *)lt_carve(&cur, p.score_bytes);
    LT_TRY(ag_pad(c, Qp, q, cu, ns, NKV, G, Lp, HD, pN));
    LT_TRY(ag_pad(c, Kp, k, cu, ns, NKV, 1, Lp, HD, pN));
    LT_TRY(ag_pad(c, Vp, v, cu, ns, NKV, 1, Lp, HD, pN));
    ag_blk kb_;
    kb_.cu = cu; kb_.nseq = nseq; kb_.packed = p.packed; kb_.N = N; kb_.NKV = NKV; kb_.G = G;
    kb_.scale = scale; kb_.cap = cap; kb_.window = window;
    const int64_t sQ = G * Lp * HD, sK = Lp * HD;
    for (int64_t p0 = 0; p0 < p.pairs; p0 += p.np) {
        const int64_t npc = p.pairs - p0 < p.np ? p.pairs - p0 : p.np;
        for (int64_t t0 = 0; t0 < p.Lt; t0 += p.TB) {
            const int64_t t1 = t0 + p.TB < p.Lt ? t0 + p.TB : p.Lt;
            int64_t c0, nc;
            ag_cols(p, t0, t1, &c0, &nc);
            const int64_t m0 = t0 * G, mr = (t1 - t0) * G;
            T *QB = Qp + p0 * sQ + m0 * HD;
            const T *KB = Kp + p0 * sK + c0 * HD, *VB = Vp + p0 * sK + c0 * HD;
            LT_TRY(ag_gemm(c, CUBLAS_OP_T, CUBLAS_OP_N, nc, mr, HD, 1.0f, KB, HD, sK, QB, HD, sQ, 0.0f, S, CUDA_R_32F,
                           nc, mr * nc, npc));
            kb_.m0 = m0; kb_.mr = mr; kb_.p0 = p0; kb_.c0 = c0; kb_.nc = nc;
            k_ag_softmax<T><<<dim3((unsigned)mr, (unsigned)npc), ag_threads(nc), 0, s>>>(S, lse, kb_);
            LT_LAUNCH_CHECK("k_ag_softmax");
            LT_TRY(ag_gemm(c, CUBLAS_OP_N, CUBLAS_OP_N, HD, mr, nc, 1.0f, VB, HD, sK, S, 2 * nc, 2 * mr * nc, 0.0f, QB,
                           c->act_type, HD, sQ, npc));
        }
    }
    return ag_unpad<T, T>(c, out, Qp, cu, nseq, N, NKV, G, Lp, HD, p.packed);
}

template <typename T>
static lt_status ag_bwd(lt_backend *be, T *dq, T *dk, T *dv, const T *dout, const T *q, const T *k, const T *v,
                        const T *out, const float *lse, const int32_t *cu, int32_t nseq, int64_t Lmax, int64_t N,
                        int64_t NH, int64_t NKV, int64_t HD, float scale, float cap, int64_t window) {
    lt_cuda *c = lt_cuda_of(be);
    cudaStream_t s = c->stream;
    const int64_t G = NH / NKV;
    ag_plan p;
    ag_make_plan(nseq, N, Lmax, NKV, G, window, g_ag_budget, &p);
    const int64_t Lp = p.Lp, ns = p.nseq_e, pN = p.packed ? N : 0;
    const size_t qb = lt_align256((size_t)(ns * NH * Lp * HD) * sizeof(T)),
                 kb = lt_align256((size_t)(ns * NKV * Lp * HD) * sizeof(T)),
                 kf = lt_align256((size_t)(ns * NKV * Lp * HD) * 4), db = lt_align256((size_t)(NH * N) * 4);
    void *scr;
    LT_TRY(lt_cuda_scratch(c, lt_ag_bwd_bytes(&p, N, NH, NKV, HD, sizeof(T)), &scr)); /* carved below */
    char *cur = (char *)scr;
    T *Qp = (T *)lt_carve(&cur, qb), *dOp = (T *)lt_carve(&cur, qb);
    T *Kp = (T *)lt_carve(&cur, kb), *Vp = (T *)lt_carve(&cur, kb);
    float *dKf = (float *)lt_carve(&cur, kf), *dVf = (float *)lt_carve(&cur, kf), *D = (float *)lt_carve(&cur, db);
    float *S = (float *)lt_carve(&cur, p.score_bytes), *dP = (float *)lt_carve(&cur, p.score_bytes);
    LT_TRY(ag_pad(c, Qp, q, cu, ns, NKV, G, Lp, HD, pN));
    LT_TRY(ag_pad(c, dOp, dout, cu, ns, NKV, G, Lp, HD, pN));
    LT_TRY(ag_pad(c, Kp, k, cu, ns, NKV, 1, Lp, HD, pN));
    LT_TRY(ag_pad(c, Vp, v, cu, ns, NKV, 1, Lp, HD, pN));
    k_ag_D<T><<<(unsigned)((N * NH * 32 + 255) / 256), 256, 0, s>>>(D, dout, out, N, NH, HD);
    LT_LAUNCH_CHECK("k_ag_D");
    LT_CUDA_TRY(cudaMemsetAsync(dKf, 0, 2 * kf, s)); /* dKf and dVf are adjacent */
    ag_blk kb_;
    kb_.cu = cu; kb_.nseq = nseq; kb_.packed = p.packed; kb_.N = N; kb_.NKV = NKV; kb_.G = G;
    kb_.scale = scale; kb_.cap = cap; kb_.window = window;
    const int64_t sQ = G * Lp * HD, sK = Lp * HD;
    for (int64_t p0 = 0; p0 < p.pairs; p0 += p.np) {
        const int64_t npc = p.pairs - p0 < p.np ? p.pairs - p0 : p.np;
        for (int64_t t0 = 0; t0 < p.Lt; t0 += p.TB) {
            const int64_t t1 = t0 + p.TB < p.Lt ? t0 + p.TB : p.Lt;
            int64_t c0, nc;
            ag_cols(p, t0, t1, &c0, &nc);
            const int64_t m0 = t0 * G, mr = (t1 - t0) * G;
            T *QB = Qp + p0 * sQ + m0 * HD;
            const T *dOB = dOp + p0 * sQ + m0 * HD;
            const T *KB = Kp + p0 * sK + c0 * HD, *VB = Vp + p0 * sK + c0 * HD;
            float *dKB = dKf + p0 * sK + c0 * HD, *dVB = dVf + p0 * sK + c0 * HD;
            LT_TRY(ag_gemm(c, CUBLAS_OP_T, CUBLAS_OP_N, nc, mr, HD, 1.0f, KB, HD, sK, QB, HD, sQ, 0.0f, S, CUDA_R_32F,
                           nc, mr * nc, npc));
            LT_TRY(ag_gemm(c, CUBLAS_OP_T, CUBLAS_OP_N, nc, mr, HD, 1.0f, VB, HD, sK, dOB, HD, sQ, 0.0f, dP,
                           CUDA_R_32F, nc, mr * nc, npc));
            kb_.m0 = m0; kb_.mr = mr; kb_.p0 = p0; kb_.c0 = c0; kb_.nc = nc;
            k_ag_bwd<T><<<dim3((unsigned)mr, (unsigned)npc), ag_threads(nc), 0, s>>>(S, dP, lse, D, kb_);
            LT_LAUNCH_CHECK("k_ag_bwd");
            /* P and dS: 16-bit rows of ld 2*nc over the f32 buffers */
            LT_TRY(ag_gemm(c, CUBLAS_OP_N, CUBLAS_OP_T, HD, nc, mr, 1.0f, dOB, HD, sQ, S, 2 * nc, 2 * mr * nc, 1.0f, dVB,
                           CUDA_R_32F, HD, sK, npc));
            LT_TRY(ag_gemm(c, CUBLAS_OP_N, CUBLAS_OP_T, HD, nc, mr, scale, QB, HD, sQ, dP, 2 * nc, 2 * mr * nc, 1.0f,
                           dKB, CUDA_R_32F, HD, sK, npc));
            /* the block's Q rows have had their last reader: dQ goes over them */
            LT_TRY(ag_gemm(c, CUBLAS_OP_N, CUBLAS_OP_N, HD, mr, nc, scale, KB, HD, sK, dP, 2 * nc, 2 * mr * nc, 0.0f, QB,
                           c->act_type, HD, sQ, npc));
        }
    }
    LT_TRY((ag_unpad<T, T>(c, dq, Qp, cu, nseq, N, NKV, G, Lp, HD, p.packed)));
    LT_TRY((ag_unpad<T, float>(c, dk, dKf, cu, nseq, N, NKV, 1, Lp, HD, p.packed)));
    return ag_unpad<T, float>(c, dv, dVf, cu, nseq, N, NKV, 1, Lp, HD, p.packed);
}

lt_status lt_cuda_attention_gemm_fwd(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                                     const int32_t *cu, int32_t nseq, int32_t max_seqlen, int64_t N, int64_t NH,
                                     int64_t NKV, int64_t HD, const lt_attn_opts *o) {
    LT_CHECK_ARG(NKV > 0 && NH % NKV == 0 && HD > 0, "attention: %lld query heads, %lld kv heads, head dim %lld",
                 (long long)NH, (long long)NKV, (long long)HD);
    if (N <= 0 || nseq <= 0) return LT_OK;
    const int64_t win = o->window > 0 && o->window < max_seqlen ? o->window : 0;
    typedef __nv_bfloat16 B;
    typedef __half H;
    if (be->act_dtype == LT_DTYPE_BF16)
        return ag_fwd<B>(be, (B *)out, lse, (const B *)q, (const B *)k, (const B *)v, cu, nseq, max_seqlen, N, NH, NKV,
                         HD, o->scale, o->softcap, win);
    return ag_fwd<H>(be, (H *)out, lse, (const H *)q, (const H *)k, (const H *)v, cu, nseq, max_seqlen, N, NH, NKV, HD,
                     o->scale, o->softcap, win);
}

lt_status lt_cuda_attention_gemm_bwd(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                                     const void *k, const void *v, const void *out, const float *lse, const int32_t *cu,
                                     int32_t nseq, int32_t max_seqlen, int64_t N, int64_t NH, int64_t NKV, int64_t HD,
                                     const lt_attn_opts *o) {
    LT_CHECK_ARG(NKV > 0 && NH % NKV == 0 && HD > 0, "attention: %lld query heads, %lld kv heads, head dim %lld",
                 (long long)NH, (long long)NKV, (long long)HD);
    if (N <= 0 || nseq <= 0) return LT_OK;
    const int64_t win = o->window > 0 && o->window < max_seqlen ? o->window : 0;
    typedef __nv_bfloat16 B;
    typedef __half H;
    if (be->act_dtype == LT_DTYPE_BF16)
        return ag_bwd<B>(be, (B *)dq, (B *)dk, (B *)dv, (const B *)dout, (const B *)q, (const B *)k, (const B *)v,
                         (const B *)out, lse, cu, nseq, max_seqlen, N, NH, NKV, HD, o->scale, o->softcap, win);
    return ag_bwd<H>(be, (H *)dq, (H *)dk, (H *)dv, (const H *)dout, (const H *)q, (const H *)k, (const H *)v,
                     (const H *)out, lse, cu, nseq, max_seqlen, N, NH, NKV, HD, o->scale, o->softcap, win);
}

/* attention.cu - causal GQA attention over padding-free packed sequences (block-diagonal by
 * cu_seqlens), and the KV-cache attention of generation.
 *
 * Fast path (sm_80+, head dim 64 or 128): flash-attention-2 style kernels on mma.sync
 * m16n8k16 tensor cores (v7, below the v6 backward). Forward (k_flash_fwd2): a block takes 128
 * queries of one head (32 per warp), walks 64-key tiles with an online softmax kept in
 * registers, and saves lse. Backward (k_flash_bwd2): a block takes 128 keys of one query head,
 * walks the 64-query tiles at and after it recomputing P from lse, accumulates dK/dV in
 * registers (per query head; a second kernel sums each GQA group in a fixed order) and adds dQ
 * with f32 atomics; with be->deterministic, dQ comes instead from k_flash_bwd_dq (no atomics,
 * bit-reproducible). The v6 backward (k_flash_bwd, 64-key blocks of 4 warps) remains where the
 * v7 one needs more shared memory than the GPU has (A100, sm_86/89); the v6 forward is gone
 * (cuda/NOTES.md, removed A/B paths).
 * Portable path (any head dim <= 256, any GPU): one warp per (query, head) with the same online
 * softmax, used for other shapes, sm_75, attention_kv and as the tests' second opinion
 * (its backward adds dK/dV with atomics: not bit-reproducible). Softmax statistics are f32; P
 * is rounded to 16 bits for the P@V product as flash attention does. */
#include "cuda_common.h"
#include "mma.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int g_force_portable = 0, g_force_bwd_v6 = 0;
void lt_cuda_attention_force_portable(int on) { g_force_portable = on; }
void lt_cuda_attention_force_bwd_v6(int on) { g_force_bwd_v6 = on; }

#define LT_LOG2E 1.4426950408889634f
#define LT_LN2 0.6931471805599453f

/* ================================================================ portable kernels */
#define LT_PD 8 /* head-dim values per lane: HD <= 256 */

__device__ __forceinline__ int find_seq(const int32_t *cu, int nseq, int64_t t) {
    int lo = 0, hi = nseq - 1;
    while (lo < hi) { /* last s with cu[s] <= t */
        int mid = (lo + hi + 1) / 2;
        if (cu[mid] <= t) lo = mid; else hi = mid - 1;
    }
    return lo;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* o = softmax(q . K^T * scale) V over nkeys keys at kbase + j*kstride; lse optional */
template <typename T>
__device__ void attend_row(T *o, float *lse_out, const T *qrow, const T *kbase, const T *vbase, int64_t kstride,
                           int64_t nkeys, int HD, float scale) {
    const int lane = threadIdx.x % 32;
    float qv[LT_PD], acc[LT_PD];
#pragma unroll
    for (int i = 0; i < LT_PD; i++) {
        int d = lane + 32 * i;
        qv[i] = d < HD ? lt_tof<T>(qrow[d]) : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int64_t j = 0; j < nkeys; j++) {
        const T *kr = kbase + j * kstride, *vr = vbase + j * kstride;
        float part = 0.0f;
#pragma unroll
        for (int i = 0; i < LT_PD; i++) {
            int d = lane + 32 * i;
            if (d < HD) part += qv[i] * lt_tof<T>(kr[d]);
        }
        const float s = warp_sum(part) * scale;
        const float mn = fmaxf(m, s);
        const float corr = expf(m - mn), p = expf(s - mn);
        l = l * corr + p;
#pragma unroll
        for (int i = 0; i < LT_PD; i++) {
            int d = lane + 32 * i;
            if (d < HD) acc[i] = acc[i] * corr + p * lt_tof<T>(vr[d]);
        }
        m = mn;
    }
    const float inv = 1.0f / l;
#pragma unroll
    for (int i = 0; i < LT_PD; i++) {
        int d = lane + 32 * i;
        if (d < HD) o[d] = lt_fromf<T>(acc[i] * inv);
    }
    if (lse_out && lane == 0) *lse_out = m + logf(l);
}

/* one warp per (token, head) of the packed batch */
template <typename T>
__global__ void k_attn_fwd_portable(T *out, float *lse, const T *q, const T *k, const T *v, const int32_t *cu,
                                    int nseq, int64_t N, int NH, int NKV, int HD, float scale) {
    const int64_t w = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32;
    if (w >= N * NH) return;
    const int64_t t = w / NH;
    const int h = (int)(w % NH), kvh = h / (NH / NKV);
    const int s = find_seq(cu, nseq, t);
    const int64_t s0 = cu[s];
    attend_row<T>(out + (t * NH + h) * HD, lse + (int64_t)h * N + t, q + (t * NH + h) * HD,
                  k + (s0 * NKV + kvh) * HD, v + (s0 * NKV + kvh) * HD, (int64_t)NKV * HD, t - s0 + 1, HD, scale);
}

/* one warp per (new token, head): keys [0, past + i] of the cache */
template <typename T>
__global__ void k_attn_kv(T *out, const T *q, const T *kc, const T *vc, int64_t past, int64_t n, int NH, int NKV,
                          int HD, float scale) {
    const int64_t w = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32;
    if (w >= n * NH) return;
    const int64_t i = w / NH;
    const int h = (int)(w % NH), kvh = h / (NH / NKV);
    attend_row<T>(out + (i * NH + h) * HD, NULL, q + (i * NH + h) * HD, kc + (int64_t)kvh * HD,
                  vc + (int64_t)kvh * HD, (int64_t)NKV * HD, past + i + 1, HD, scale);
}

/* D[h*N + t] = sum_d dO * O (the softmax backward's row term), one warp per (token, head) */
template <typename T>
__global__ void k_attn_D(float *D, const T *dout, const T *out, int64_t N, int NH, int HD) {
    const int64_t w = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (w >= N * NH) return;
    const int64_t t = w / NH;
    const int h = (int)(w % NH);
    const T *a = dout + (t * NH + h) * HD, *b = out + (t * NH + h) * HD;
    float s = 0.0f;
    for (int d = lane; d < HD; d += 32) s += lt_tof<T>(a[d]) * lt_tof<T>(b[d]);
    s = warp_sum(s);
    if (lane == 0) D[(int64_t)h * N + t] = s;
}

/* the same with 16-byte loads: R = HD/8 lanes per (token, head) row (HD 64 or 128) */
template <typename T, int R>
__global__ void k_attn_D8(float *D, const T *dout, const T *out, int64_t N, int NH) {
    const int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    const int64_t row = i / R; /* t * NH + h */
    float s = 0.0f;
    if (row < N * NH) {
        const uint4 a = *reinterpret_cast<const uint4 *>(dout + i * 8);
        const uint4 b = *reinterpret_cast<const uint4 *>(out + i * 8);
        const T *ta = reinterpret_cast<const T *>(&a), *tb = reinterpret_cast<const T *>(&b);
#pragma unroll
        for (int e = 0; e < 8; e++) s += lt_tof<T>(ta[e]) * lt_tof<T>(tb[e]);
    }
#pragma unroll
    for (int o = R / 2; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (row < N * NH && i % R == 0) {
        const int64_t t = row / NH;
        const int h = (int)(row % NH);
        D[(int64_t)h * N + t] = s;
    }
}

/* one warp per (token, head): dq directly, dk/dv by f32 atomics into dkf/dvf (N,NKV,HD), or
 * not at all when dkf is NULL (deterministic mode: k_attn_bwd_portable_kv makes them) */
template <typename T>
__global__ void k_attn_bwd_portable(T *dq, float *dkf, float *dvf, const T *dout, const T *q, const T *k, const T *v,
                                    const float *lse, const float *D, const int32_t *cu, int nseq, int64_t N, int NH,
                                    int NKV, int HD, float scale) {
    const int64_t w = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (w >= N * NH) return;
    const int64_t t = w / NH;
    const int h = (int)(w % NH), kvh = h / (NH / NKV);
    const int s = find_seq(cu, nseq, t);
    const int64_t s0 = cu[s];
    float qv[LT_PD], dov[LT_PD], dqv[LT_PD];
#pragma unroll
    for (int i = 0; i < LT_PD; i++) {
        int d = lane + 32 * i;
        qv[i] = d < HD ? lt_tof<T>(q[(t * NH + h) * HD + d]) : 0.0f;
        dov[i] = d < HD ? lt_tof<T>(dout[(t * NH + h) * HD + d]) : 0.0f;
        dqv[i] = 0.0f;
    }
    const float L = lse[(int64_t)h * N + t], Dt = D[(int64_t)h * N + t];
    for (int64_t j = s0; j <= t; j++) {
        const T *kr = k + (j * NKV + kvh) * HD, *vr = v + (j * NKV + kvh) * HD;
        float sp = 0.0f, dpp = 0.0f;
#pragma unroll
        for (int i = 0; i < LT_PD; i++) {
            int d = lane + 32 * i;
            if (d < HD) { sp += qv[i] * lt_tof<T>(kr[d]); dpp += dov[i] * lt_tof<T>(vr[d]); }
        }
        const float p = expf(warp_sum(sp) * scale - L);
        const float ds = p * (warp_sum(dpp) - Dt);
        float *dkr = dkf + (j * NKV + kvh) * HD, *dvr = dvf + (j * NKV + kvh) * HD;
#pragma unroll
        for (int i = 0; i < LT_PD; i++) {
            int d = lane + 32 * i;
            if (d < HD) {
                dqv[i] += ds * lt_tof<T>(kr[d]);
                if (dkf) {
                    atomicAdd(dkr + d, ds * qv[i] * scale);
                    atomicAdd(dvr + d, p * dov[i]);
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < LT_PD; i++) {
        int d = lane + 32 * i;
        if (d < HD) dq[(t * NH + h) * HD + d] = lt_fromf<T>(dqv[i] * scale);
    }
}

/* deterministic dk/dv of the portable path: one warp per (key token, kv head) sums over the
 * group's query heads and the sequence's later tokens in a fixed order (no atomics); the
 * probabilities are recomputed as k_attn_bwd_portable computes them */
template <typename T>
__global__ void k_attn_bwd_portable_kv(float *dkf, float *dvf, const T *dout, const T *q, const T *k, const T *v,
                                       const float *lse, const float *D, const int32_t *cu, int nseq, int64_t N,
                                       int NH, int NKV, int HD, float scale) {
    const int64_t w = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (w >= N * NKV) return;
    const int64_t j = w / NKV;
    const int kvh = (int)(w % NKV), G = NH / NKV;
    float kv[LT_PD], vv[LT_PD], dk[LT_PD], dv[LT_PD];
#pragma unroll
    for (int i = 0; i < LT_PD; i++) {
        const int d = lane + 32 * i;
        kv[i] = d < HD ? lt_tof<T>(k[(j * NKV + kvh) * HD + d]) : 0.0f;
        vv[i] = d < HD ? lt_tof<T>(v[(j * NKV + kvh) * HD + d]) : 0.0f;
        dk[i] = dv[i] = 0.0f;
    }
    const int64_t end = j < cu[nseq] ? cu[find_seq(cu, nseq, j) + 1] : j; /* past the last sequence: zeros */
    for (int gi = 0; gi < G; gi++) {
        const int h = kvh * G + gi;
        for (int64_t t = j; t < end; t++) {
            const T *qr = q + (t * NH + h) * HD, *dor = dout + (t * NH + h) * HD;
            float qv[LT_PD], dov[LT_PD], sp = 0.0f, dpp = 0.0f;
#pragma unroll
            for (int i = 0; i < LT_PD; i++) {
                const int d = lane + 32 * i;
                qv[i] = d < HD ? lt_tof<T>(qr[d]) : 0.0f;
                dov[i] = d < HD ? lt_tof<T>(dor[d]) : 0.0f;
                sp += qv[i] * kv[i];
                dpp += dov[i] * vv[i];
            }
            const float p = expf(warp_sum(sp) * scale - lse[(int64_t)h * N + t]);
            const float ds = p * (warp_sum(dpp) - D[(int64_t)h * N + t]);
#pragma unroll
            for (int i = 0; i < LT_PD; i++) {
                dk[i] += ds * qv[i] * scale;
                dv[i] += p * dov[i];
            }
        }
    }
#pragma unroll
    for (int i = 0; i < LT_PD; i++) {
        const int d = lane + 32 * i;
        if (d < HD) {
            dkf[(j * NKV + kvh) * HD + d] = dk[i];
            dvf[(j * NKV + kvh) * HD + d] = dv[i];
        }
    }
}

template <typename T>
__global__ void k_f32_to_t(T *dst, const float *src, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = lt_fromf<T>(src[i]);
}

/* eight f32 values (16-byte aligned) as one 16-byte piece of 16-bit values */
template <typename T> __device__ __forceinline__ uint4 f32x8_to_t(float4 a, float4 b) {
    uint4 v;
    T *h = reinterpret_cast<T *>(&v);
    h[0] = lt_fromf<T>(a.x); h[1] = lt_fromf<T>(a.y); h[2] = lt_fromf<T>(a.z); h[3] = lt_fromf<T>(a.w);
    h[4] = lt_fromf<T>(b.x); h[5] = lt_fromf<T>(b.y); h[6] = lt_fromf<T>(b.z); h[7] = lt_fromf<T>(b.w);
    return v;
}

/* k_f32_to_t eight at a time (n % 8 == 0, both buffers 16-byte aligned) */
template <typename T>
__global__ void k_f32_to_t8(T *dst, const float *src, int64_t n8) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8; i += (int64_t)gridDim.x * blockDim.x) {
        const float4 *s4 = reinterpret_cast<const float4 *>(src) + 2 * i;
        reinterpret_cast<uint4 *>(dst)[i] = f32x8_to_t<T>(s4[0], s4[1]);
    }
}

/* dk[t, g, d] = sum over the G query heads of group g of part[t, g*G + j, d]; zero for tokens
 * past the last sequence (the kernels write part only inside sequences, so it is not cleared).
 * Eight d at a time (HD % 8 == 0): i runs over N * NKV * HD / 8 pieces. */
template <typename T>
__global__ void k_group_sum(T *dst, const float *part, int64_t N, int NKV, int G, int HD, const int32_t *cu,
                            int nseq) {
    const int64_t n8 = N * NKV * HD / 8, end = cu[nseq];
    const int hd8 = HD / 8;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = i / ((int64_t)NKV * hd8);
        const int r = (int)(i % ((int64_t)NKV * hd8));
        const int g = r / hd8, d = (r % hd8) * 8;
        float4 a = make_float4(0.0f, 0.0f, 0.0f, 0.0f), b = a;
        if (t < end) {
            const float *p = part + ((t * NKV + g) * G) * HD + d;
            for (int j = 0; j < G; j++) {
                const float4 *q = reinterpret_cast<const float4 *>(p + (int64_t)j * HD);
                const float4 x = q[0], y = q[1];
                a.x += x.x; a.y += x.y; a.z += x.z; a.w += x.w;
                b.x += y.x; b.y += y.y; b.z += y.z; b.w += y.w;
            }
        }
        reinterpret_cast<uint4 *>(dst)[i] = f32x8_to_t<T>(a, b);
    }
}

/* ================================================================ tensor-core kernels */

template <typename T> __device__ __forceinline__ uint32_t ld32(const T *p) { return *reinterpret_cast<const uint32_t *>(p); }

/* two 16-bit values from two addresses, lo first */
template <typename T> __device__ __forceinline__ uint32_t pack16(const T *lo, const T *hi) {
    return (uint32_t)*reinterpret_cast<const uint16_t *>(lo) | ((uint32_t)*reinterpret_cast<const uint16_t *>(hi) << 16);
}

/* rows [r0, r0+R) of a (tokens, heads, HD) tensor for one head into smem [R][LD], zero past `len` */
template <typename T, int HD, int R, int LD>
__device__ __forceinline__ void load_tile(T *dst, const T *src, int64_t s0, int r0, int len, int heads, int head) {
    for (int i = threadIdx.x; i < R * (HD / 8); i += blockDim.x) {
        const int r = i / (HD / 8), c8 = (i % (HD / 8)) * 8;
        uint4 val = make_uint4(0, 0, 0, 0);
        if (r0 + r < len) val = *reinterpret_cast<const uint4 *>(src + ((s0 + r0 + r) * heads + head) * HD + c8);
        *reinterpret_cast<uint4 *>(dst + r * LD + c8) = val;
    }
}

/* the same with cp.async (16 bytes per copy, zero-filled past `len`); commit/wait by the caller */
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool pred) {
#if __CUDA_ARCH__ >= 800
    uint32_t a = (uint32_t)__cvta_generic_to_shared(smem);
    int sz = pred ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(a), "l"(gmem), "r"(sz));
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N> __device__ __forceinline__ void cp_async_wait() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}
template <typename T, int HD, int R, int LD>
__device__ __forceinline__ void load_tile_async(T *dst, const T *src, int64_t s0, int r0, int len, int heads,
                                                int head) {
    for (int i = threadIdx.x; i < R * (HD / 8); i += blockDim.x) {
        const int r = i / (HD / 8), c8 = (i % (HD / 8)) * 8;
        const bool ok = r0 + r < len;
        cp_async16(dst + r * LD + c8, ok ? src + ((s0 + r0 + r) * heads + head) * HD + c8 : src, ok);
    }
}

template <typename T, int HD>
__global__ void __launch_bounds__(128) k_flash_bwd(float *dkp, float *dvp, float *dqacc, const T *dout, const T *q,
                                                   const T *k, const T *v, const float *lse, const float *D,
                                                   const int32_t *cu, int tiles_per_seq, int64_t N, int NH, int NKV,
                                                   float scale, float scale_log2) {
#if __CUDA_ARCH__ >= 800
    constexpr int BC = 64, BR = 32, LD = HD + 8, LDS = BR + 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Ks = reinterpret_cast<T *>(smem_raw);
    T *Vs = Ks + BC * LD;
    T *QdOst = Vs + BC * LD;           /* two stages of Q then dO tiles */
    T *dSs = QdOst + 4 * BR * LD;
    float *lsDst = reinterpret_cast<float *>(dSs + BC * LDS); /* two stages of lse then D */
    const int seq = blockIdx.x / tiles_per_seq, tile = blockIdx.x % tiles_per_seq;
    const int h = blockIdx.y, kvh = h / (NH / NKV);
    const int64_t s0 = cu[seq];
    const int len = cu[seq + 1] - (int)s0;
    const int k0 = tile * BC;
    if (k0 >= len) return;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;

    load_tile<T, HD, BC, LD>(Ks, k, s0, k0, len, NKV, kvh);
    load_tile<T, HD, BC, LD>(Vs, v, s0, k0, len, NKV, kvh);
    float dv[HD / 8][4], dk[HD / 8][4];
#pragma unroll
    for (int n = 0; n < HD / 8; n++) {
        dv[n][0] = dv[n][1] = dv[n][2] = dv[n][3] = 0.0f;
        dk[n][0] = dk[n][1] = dk[n][2] = dk[n][3] = 0.0f;
    }
    const int kr0 = k0 + warp * 16 + g; /* this thread's keys: kr0 and kr0 + 8 */
    const int nqt = (len + BR - 1) / BR;
    const int qt0 = k0 / BR;
    /* stage loader: Q, dO tiles async, lse/D by plain loads (seen after the barrier) */
    auto issue = [&](int qt) {
        T *Qn = QdOst + (qt & 1) * 2 * BR * LD;
        float *ls = lsDst + (qt & 1) * 2 * BR;
        const int qb = qt * BR;
        load_tile_async<T, HD, BR, LD>(Qn, q, s0, qb, len, NH, h);
        load_tile_async<T, HD, BR, LD>(Qn + BR * LD, dout, s0, qb, len, NH, h);
        cp_async_commit();
        if (threadIdx.x < BR) {
            const int r = qb + threadIdx.x;
            ls[threadIdx.x] = r < len ? lse[(int64_t)h * N + s0 + r] * LT_LOG2E : 0.0f;
            ls[BR + threadIdx.x] = r < len ? D[(int64_t)h * N + s0 + r] : 0.0f;
        }
    };
    issue(qt0);
    for (int qt = qt0; qt < nqt; qt++) {
        const int qb0 = qt * BR;
        T *Qs = QdOst + (qt & 1) * 2 * BR * LD;
        T *dOs = Qs + BR * LD;
        const float *lse_s = lsDst + (qt & 1) * 2 * BR;
        const float *D_s = lse_s + BR;
        if (qt + 1 < nqt) { issue(qt + 1); cp_async_wait<1>(); }
        else cp_async_wait<0>();
        __syncthreads();
        float st[BR / 8][4], dp[BR / 8][4];
#pragma unroll
        for (int j = 0; j < BR / 8; j++)
            st[j][0] = st[j][1] = st[j][2] = st[j][3] = dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.0f;
        /* S^T = K Q^T and dP^T = V dO^T, 16 keys x BR queries per warp */
        const int mi = lane / 8, rr = lane % 8;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {
            uint32_t ak[4], av[4];
            ldsm4(ak, Ks + (warp * 16 + (mi % 2) * 8 + rr) * LD + kk * 16 + (mi / 2) * 8);
            ldsm4(av, Vs + (warp * 16 + (mi % 2) * 8 + rr) * LD + kk * 16 + (mi / 2) * 8);
#pragma unroll
            for (int j = 0; j < BR / 8; j += 2) {
                uint32_t bq[4], bo[4];
                ldsm4(bq, Qs + (j * 8 + (mi / 2) * 8 + rr) * LD + kk * 16 + (mi % 2) * 8);
                ldsm4(bo, dOs + (j * 8 + (mi / 2) * 8 + rr) * LD + kk * 16 + (mi % 2) * 8);
                mma16816<T>(st[j], ak, bq);
                mma16816<T>(st[j + 1], ak, bq + 2);
                mma16816<T>(dp[j], av, bo);
                mma16816<T>(dp[j + 1], av, bo + 2);
            }
        }
        /* P^T from lse, dS^T = P^T (dP^T - D) */
#pragma unroll
        for (int j = 0; j < BR / 8; j++) {
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int key = kr0 + (e >= 2 ? 8 : 0);
                const int ql = j * 8 + tq * 2 + (e & 1);
                const int qq = qb0 + ql;
                const bool valid = key <= qq && qq < len && key < len;
                const float p = valid ? exp2f(st[j][e] * scale_log2 - lse_s[ql]) : 0.0f;
                st[j][e] = p;
                dp[j][e] = p * (dp[j][e] - D_s[ql]);
            }
        }
        /* dV += P^T dO, dK += dS^T Q (over the BR queries) */
#pragma unroll
        for (int kk = 0; kk < BR / 16; kk++) {
            uint32_t ap[4], as[4];
            ap[0] = lt_t16<T>::pack2(st[2 * kk][0], st[2 * kk][1]);
            ap[1] = lt_t16<T>::pack2(st[2 * kk][2], st[2 * kk][3]);
            ap[2] = lt_t16<T>::pack2(st[2 * kk + 1][0], st[2 * kk + 1][1]);
            ap[3] = lt_t16<T>::pack2(st[2 * kk + 1][2], st[2 * kk + 1][3]);
            as[0] = lt_t16<T>::pack2(dp[2 * kk][0], dp[2 * kk][1]);
            as[1] = lt_t16<T>::pack2(dp[2 * kk][2], dp[2 * kk][3]);
            as[2] = lt_t16<T>::pack2(dp[2 * kk + 1][0], dp[2 * kk + 1][1]);
            as[3] = lt_t16<T>::pack2(dp[2 * kk + 1][2], dp[2 * kk + 1][3]);
#pragma unroll
            for (int n = 0; n < HD / 8; n += 2) {
                uint32_t bo[4], bq[4];
                ldsm4t(bo, dOs + (kk * 16 + (mi % 2) * 8 + rr) * LD + (n + mi / 2) * 8);
                ldsm4t(bq, Qs + (kk * 16 + (mi % 2) * 8 + rr) * LD + (n + mi / 2) * 8);
                mma16816<T>(dv[n], ap, bo);
                mma16816<T>(dv[n + 1], ap, bo + 2);
                mma16816<T>(dk[n], as, bq);
                mma16816<T>(dk[n + 1], as, bq + 2);
            }
        }
        /* dS^T to shared memory for dQ = dS K */
#pragma unroll
        for (int j = 0; j < BR / 8; j++) {
            *reinterpret_cast<uint32_t *>(dSs + (warp * 16 + g) * LDS + j * 8 + tq * 2) =
                lt_t16<T>::pack2(dp[j][0], dp[j][1]);
            *reinterpret_cast<uint32_t *>(dSs + (warp * 16 + g + 8) * LDS + j * 8 + tq * 2) =
                lt_t16<T>::pack2(dp[j][2], dp[j][3]);
        }
        __syncthreads();
        if (dqacc) { /* NULL: dQ comes from k_flash_bwd_dq (deterministic) */
            const int qr = (warp & 1) * 16, dc = (warp >> 1) * (HD / 2);
            float acc[HD / 16][4];
#pragma unroll
            for (int n = 0; n < HD / 16; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < BC / 16; kk++) {
                uint32_t a[4];
                ldsm4t(a, dSs + (kk * 16 + (mi / 2) * 8 + rr) * LDS + qr + (mi % 2) * 8);
#pragma unroll
                for (int n = 0; n < HD / 16; n += 2) {
                    uint32_t b[4];
                    ldsm4t(b, Ks + (kk * 16 + (mi % 2) * 8 + rr) * LD + dc + (n + mi / 2) * 8);
                    mma16816<T>(acc[n], a, b);
                    mma16816<T>(acc[n + 1], a, b + 2);
                }
            }
#if __CUDA_ARCH__ >= 900
            /* one 16-byte reduction per lane and n: the even lane of a pair adds row g
             * (its two columns and its partner's), the odd lane row g + 8 */
            {
                const bool odd = tq & 1;
                const int row = qb0 + qr + g + (odd ? 8 : 0);
                float *dst = dqacc + ((s0 + row) * NH + h) * HD + dc + (tq & ~1) * 2;
#pragma unroll
                for (int n = 0; n < HD / 16; n++) {
                    const float r0 = __shfl_xor_sync(0xffffffffu, odd ? acc[n][0] : acc[n][2], 1);
                    const float r1 = __shfl_xor_sync(0xffffffffu, odd ? acc[n][1] : acc[n][3], 1);
                    const float4 v = odd ? make_float4(r0 * scale, r1 * scale, acc[n][2] * scale, acc[n][3] * scale)
                                         : make_float4(acc[n][0] * scale, acc[n][1] * scale, r0 * scale, r1 * scale);
                    if (row < len) atomicAdd(reinterpret_cast<float4 *>(dst + n * 8), v);
                }
            }
#else
#pragma unroll
            for (int half = 0; half < 2; half++) {
                const int row = qb0 + qr + g + half * 8;
                if (row >= len) continue;
                float *dst = dqacc + ((s0 + row) * NH + h) * HD + dc + tq * 2;
#pragma unroll
                for (int n = 0; n < HD / 16; n++) {
                    atomicAdd(dst + n * 8, acc[n][2 * half] * scale);
                    atomicAdd(dst + n * 8 + 1, acc[n][2 * half + 1] * scale);
                }
            }
#endif
        }
        __syncthreads(); /* dS and this stage are overwritten next */
    }
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int key = kr0 + half * 8;
        if (key >= len) continue;
        float *dkr = dkp + ((s0 + key) * NH + h) * HD + tq * 2;
        float *dvr = dvp + ((s0 + key) * NH + h) * HD + tq * 2;
#pragma unroll
        for (int n = 0; n < HD / 8; n++) {
            *reinterpret_cast<float2 *>(dkr + n * 8) = make_float2(dk[n][2 * half] * scale, dk[n][2 * half + 1] * scale);
            *reinterpret_cast<float2 *>(dvr + n * 8) = make_float2(dv[n][2 * half], dv[n][2 * half + 1]);
        }
    }
#endif
}

/* ---------------------------------------------------------------- v7 kernels (FA2 layouts)
 * The v6 kernels above give each warp 16 query rows (forward) or 16 keys (backward), so every
 * shared-memory fragment feeds two mma and the loops are bound by ldmatrix traffic. These give
 * each warp 32 rows, so a fragment feeds four. Blocks are numbered heaviest first over all
 * heads and sequences (a 1-D grid: tile slowest), so the causal tail is short. */

/* ldmatrix from a shared-memory address (bytes). The kernels below derive every address from
 * a base that an empty asm makes opaque at the top of each loop iteration, so the compiler
 * cannot hoist dozens of base + constant addresses out of the loop into registers (ptxas
 * folds the constants into the instruction instead). */
__device__ __forceinline__ void ldsm4s(uint32_t r[4], uint32_t a) {
#if __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
#endif
}
__device__ __forceinline__ void ldsm4ts(uint32_t r[4], uint32_t a) {
#if __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
#endif
}
/* mma.sync m16n8k16 (f32 accumulate) without `volatile`: a pure register op the compiler may
 * schedule freely */
template <typename T> __device__ __forceinline__ void mma_nv(float c[4], const uint32_t a[4], const uint32_t b[4]);
template <> __device__ __forceinline__ void mma_nv<__nv_bfloat16>(float c[4], const uint32_t a[4], const uint32_t b[4]) {
#if __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
template <> __device__ __forceinline__ void mma_nv<__half>(float c[4], const uint32_t a[4], const uint32_t b[4]) {
#if __CUDA_ARCH__ >= 800
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
/* 2^x by one MUFU.EX2 (flushes denormal results to zero, as flash attention's fast-math build
 * does): exp2f adds a range test and two multiplies to every exponential */
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ uint32_t opaque_smem(const void *p) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("" : "+r"(a));
    return a;
}

/* the linear block index -> (tile, seq, head): tile varies slowest */
__device__ __forceinline__ void attn_block_ids(int nseq, int NH, int *tile, int *seq, int *h) {
    const int b = blockIdx.x, per = nseq * NH;
    *tile = b / per;
    *seq = (b % per) / NH;
    *h = b % NH;
}

/* Forward: 4 warps, 64*MT queries per block (16*MT per warp: MT = 2 16-row mma tiles, or 1 with
 * fewer registers and 3 blocks per SM), BC-key tiles; the launcher uses MT = 2, BC = 64.
 * Q stays in shared memory (re-read per tile: 32 rows of registers would not fit beside the
 * 32x128 f32 output). K and V have one buffer each, loaded as flash-attention-2 does: V of
 * tile j streams in while S = Q K_j^T is computed, K of tile j+1 while P V_j is. */
template <typename T, int HD, int BC, int MT>
__global__ void __launch_bounds__(128, MT == 2 ? 2 : 3) k_flash_fwd2(T *out, float *lse, const T *q, const T *k, const T *v,
                                                       const int32_t *cu, int tiles_per_seq, int nseq, int64_t N,
                                                       int NH, int NKV, float scale_log2) {
#if __CUDA_ARCH__ >= 800
    constexpr int BR = 64 * MT, LD = HD + 8, NO = HD / 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Qs = reinterpret_cast<T *>(smem_raw);
    T *Ks = Qs + BR * LD;
    T *Vs = Ks + BC * LD;
    int tile, seq, h;
    attn_block_ids(nseq, NH, &tile, &seq, &h);
    const int kvh = h / (NH / NKV);
    const int64_t s0 = cu[seq];
    const int len = cu[seq + 1] - (int)s0;
    const int q0 = (tiles_per_seq - 1 - tile) * BR; /* the longest query tiles first */
    if (q0 >= len) return;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    const int mi = lane / 8, rr = lane % 8;
    const int wq = q0 + warp * 16 * MT; /* this warp's rows: wq + mt*16 + g (+8) */
    /* per-lane byte offsets of ldmatrix rows: A / trans-B fragments (oA), B fragments (oB) */
    const uint32_t oA = (((mi % 2) * 8 + rr) * LD + (mi / 2) * 8) * 2;
    const uint32_t oB = (((mi / 2) * 8 + rr) * LD + (mi % 2) * 8) * 2;

    load_tile_async<T, HD, BR, LD>(Qs, q, s0, q0, len, NH, h);
    load_tile_async<T, HD, BC, LD>(Ks, k, s0, 0, len, NKV, kvh);
    cp_async_commit();
    float o[MT][NO][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int n = 0; n < NO; n++) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.0f;
    float mrow[2 * MT], lrow[2 * MT];
#pragma unroll
    for (int i = 0; i < 2 * MT; i++) { mrow[i] = -INFINITY; lrow[i] = 0.0f; }
    const int qlast = min(q0 + BR, len) - 1;
    const int nkt = qlast / BC + 1;
    for (int kt = 0; kt < nkt; kt++) {
        const int k0 = kt * BC;
        cp_async_wait<0>();
        __syncthreads(); /* K_j (and Q) visible; every warp is done with V_{j-1} */
        load_tile_async<T, HD, BC, LD>(Vs, v, s0, k0, len, NKV, kvh);
        cp_async_commit();
        /* a warp whose rows all lie before this key tile (causal) or past the sequence only
         * keeps the barriers (k0 and wq are multiples of 16 * MT: no row of a live warp is fully masked) */
        const bool live = k0 <= wq + 16 * MT - 1 && wq < len;
        const uint32_t sb = opaque_smem(smem_raw);
        uint32_t pa[MT][BC / 16][4]; /* P as 16-bit mma A fragments (held across the barrier) */
        if (live) {
            float s[MT][BC / 8][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int j = 0; j < BC / 8; j++) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk++) {
                uint32_t a[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
                    ldsm4s(a[mt], sb + oA + ((warp * 16 * MT + mt * 16) * LD + kk * 16) * 2);
#pragma unroll
                for (int j = 0; j < BC / 8; j += 2) {
                    uint32_t b[4];
                    ldsm4s(b, sb + oB + ((BR + j * 8) * LD + kk * 16) * 2);
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        mma_nv<T>(s[mt][j], a[mt], b);
                        mma_nv<T>(s[mt][j + 1], a[mt], b + 2);
                    }
                }
            }
            /* masking only on the diagonal tile and the sequence's tail; the running max m is kept
             * in raw score units, so each exponent is one FFMA: 2^(s*scale_log2 - m*scale_log2) */
            const bool need_mask = (k0 + BC - 1 > wq) || (k0 + BC > len);
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                if (need_mask) {
#pragma unroll
                    for (int j = 0; j < BC / 8; j++)
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            const int col = k0 + j * 8 + tq * 2 + (e & 1);
                            const int row = wq + mt * 16 + g + (e >= 2 ? 8 : 0);
                            if (col > row || col >= len) s[mt][j][e] = -INFINITY;
                        }
                }
                float mx[2] = {mrow[2 * mt], mrow[2 * mt + 1]};
#pragma unroll
                for (int j = 0; j < BC / 8; j++) {
                    mx[0] = fmaxf(mx[0], fmaxf(s[mt][j][0], s[mt][j][1]));
                    mx[1] = fmaxf(mx[1], fmaxf(s[mt][j][2], s[mt][j][3]));
                }
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 1));
                    mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 2));
                }
                const float corr0 = fast_exp2((mrow[2 * mt] - mx[0]) * scale_log2);
                const float corr1 = fast_exp2((mrow[2 * mt + 1] - mx[1]) * scale_log2);
                mrow[2 * mt] = mx[0];
                mrow[2 * mt + 1] = mx[1];
                const float ms0 = mx[0] * scale_log2, ms1 = mx[1] * scale_log2;
                float ls0 = 0.0f, ls1 = 0.0f;
#pragma unroll
                for (int j = 0; j < BC / 8; j++) {
                    s[mt][j][0] = fast_exp2(fmaf(s[mt][j][0], scale_log2, -ms0));
                    s[mt][j][1] = fast_exp2(fmaf(s[mt][j][1], scale_log2, -ms0));
                    s[mt][j][2] = fast_exp2(fmaf(s[mt][j][2], scale_log2, -ms1));
                    s[mt][j][3] = fast_exp2(fmaf(s[mt][j][3], scale_log2, -ms1));
                    ls0 += s[mt][j][0] + s[mt][j][1];
                    ls1 += s[mt][j][2] + s[mt][j][3];
                }
                lrow[2 * mt] = lrow[2 * mt] * corr0 + ls0;
                lrow[2 * mt + 1] = lrow[2 * mt + 1] * corr1 + ls1;
#pragma unroll
                for (int n = 0; n < NO; n++) {
                    o[mt][n][0] *= corr0; o[mt][n][1] *= corr0;
                    o[mt][n][2] *= corr1; o[mt][n][3] *= corr1;
                }
#pragma unroll
                for (int kk = 0; kk < BC / 16; kk++) {
                    pa[mt][kk][0] = lt_t16<T>::pack2(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                    pa[mt][kk][1] = lt_t16<T>::pack2(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                    pa[mt][kk][2] = lt_t16<T>::pack2(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                    pa[mt][kk][3] = lt_t16<T>::pack2(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
                }
            }
        }
        cp_async_wait<0>();
        __syncthreads(); /* V_j visible; every warp is done with K_j */
        if (kt + 1 < nkt) {
            load_tile_async<T, HD, BC, LD>(Ks, k, s0, k0 + BC, len, NKV, kvh);
            cp_async_commit();
        }
        if (live) {
            const uint32_t sb2 = opaque_smem(smem_raw);
#pragma unroll
            for (int kk = 0; kk < BC / 16; kk++) {
#pragma unroll
                for (int n = 0; n < NO; n += 2) {
                    uint32_t b[4];
                    ldsm4ts(b, sb2 + oA + ((BR + BC + kk * 16) * LD + n * 8) * 2);
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        mma_nv<T>(o[mt][n], pa[mt][kk], b);
                        mma_nv<T>(o[mt][n + 1], pa[mt][kk], b + 2);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < 2 * MT; i++) {
        lrow[i] += __shfl_xor_sync(0xffffffffu, lrow[i], 1);
        lrow[i] += __shfl_xor_sync(0xffffffffu, lrow[i], 2);
    }
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int row = wq + mt * 16 + g + half * 8;
            if (row >= len) continue;
            const float inv = 1.0f / lrow[2 * mt + half];
            T *orow = out + ((s0 + row) * NH + h) * HD;
#pragma unroll
            for (int n = 0; n < NO; n++)
                *reinterpret_cast<uint32_t *>(orow + n * 8 + tq * 2) =
                    lt_t16<T>::pack2(o[mt][n][2 * half] * inv, o[mt][n][2 * half + 1] * inv);
            if (tq == 0)
                lse[(int64_t)h * N + s0 + row] = (mrow[2 * mt + half] * scale_log2 + log2f(lrow[2 * mt + half])) * LT_LN2;
        }
    }
#endif
}

/* dQ += scale * acc for one 16-row mma tile (rows row0 + g, +8 of the sequence), NT n-tiles of
 * 8 columns from column c0. sm_90: one 16-byte reduction per lane and n-tile (the even lane of
 * a pair adds row g with its partner's two columns, the odd lane row g + 8). */
template <int NT>
__device__ __forceinline__ void dq_add(float *dqacc, const float (*acc)[4], int64_t s0, int row0, int len, int NH,
                                       int h, int HD, int c0, float scale) {
    const int lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
#if __CUDA_ARCH__ >= 900
    {
        const bool odd = tq & 1;
        const int row = row0 + g + (odd ? 8 : 0);
        float *dst = dqacc + ((s0 + row) * NH + h) * HD + c0 + (tq & ~1) * 2;
#pragma unroll
        for (int n = 0; n < NT; n++) {
            const float r0 = __shfl_xor_sync(0xffffffffu, odd ? acc[n][0] : acc[n][2], 1);
            const float r1 = __shfl_xor_sync(0xffffffffu, odd ? acc[n][1] : acc[n][3], 1);
            const float4 v = odd ? make_float4(r0 * scale, r1 * scale, acc[n][2] * scale, acc[n][3] * scale)
                                 : make_float4(acc[n][0] * scale, acc[n][1] * scale, r0 * scale, r1 * scale);
            if (row < len) atomicAdd(reinterpret_cast<float4 *>(dst + n * 8), v);
        }
    }
#else
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int row = row0 + g + half * 8;
        if (row >= len) continue;
        float *dst = dqacc + ((s0 + row) * NH + h) * HD + c0 + tq * 2;
#pragma unroll
        for (int n = 0; n < NT; n++) {
            atomicAdd(dst + n * 8, acc[n][2 * half] * scale);
            atomicAdd(dst + n * 8 + 1, acc[n][2 * half + 1] * scale);
        }
    }
#endif
}

/* Backward: NW warps, 16*NW keys of one query head per block (8 warps, 128 keys; or 4 warps, 64
 * keys, two blocks per SM; the launcher uses 8), 64-query tiles (Q, dO in STAGES buffers). Per tile: (1) warp (kg, hf)
 * computes S^T and dP^T for 32 keys x 32 queries and writes P^T, dS^T to shared memory; (2)
 * warp (kg, hf) adds P^T dO and dS^T Q into its 32 keys x HD/2 columns of dV, dK (registers);
 * (3) warp (qw, dc) computes dS K for 32 queries x 2*HD/NW columns and adds it to dQ (f32
 * atomics; with 128-key blocks half as many per key as with 64-key blocks). When
 * dqacc is NULL step (3) is skipped (the deterministic path computes dQ in k_flash_bwd_dq). */
template <typename T, int HD, int NW, int STAGES>
__global__ void __launch_bounds__(NW * 32, NW == 8 ? 1 : 2) k_flash_bwd2(float *dkp, float *dvp, float *dqacc, const T *dout,
                                                       const T *q, const T *k, const T *v, const float *lse,
                                                       const float *D, const int32_t *cu, int nseq, int64_t N, int NH,
                                                       int NKV, float scale, float scale_log2) {
#if __CUDA_ARCH__ >= 800
    constexpr int BC = 16 * NW, BR = 64, LD = HD + 8, LDP = BR + 8;
    constexpr int N2 = HD / 16;           /* n-tiles of a phase-2 warp (HD/2 columns) */
    constexpr int ND = NW / 2;            /* phase-3 column groups */
    constexpr int N3 = HD / (8 * ND);     /* n-tiles of a phase-3 warp (HD/ND columns) */
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Ks = reinterpret_cast<T *>(smem_raw);
    T *Vs = Ks + BC * LD;
    T *QdOst = Vs + BC * LD; /* two stages of Q then dO tiles */
    T *Ps = QdOst + 2 * STAGES * BR * LD;
    T *dSs = Ps + BC * LDP;
    float *lsDst = reinterpret_cast<float *>(dSs + BC * LDP); /* two stages of lse then D */
    int tile, seq, h;
    attn_block_ids(nseq, NH, &tile, &seq, &h);
    const int kvh = h / (NH / NKV);
    const int64_t s0 = cu[seq];
    const int len = cu[seq + 1] - (int)s0;
    const int k0 = tile * BC; /* tile 0 (the most query tiles) first */
    if (k0 >= len) return;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    const int mi = lane / 8, rr = lane % 8;
    const int kg = warp / 2, hf = warp % 2; /* phases 1-2: keys kg*32.., query half / column half */
    const int qw = warp / ND, dc = (warp % ND) * (HD / ND); /* phase 3 */
    const uint32_t oA = (((mi % 2) * 8 + rr) * LD + (mi / 2) * 8) * 2;
    const uint32_t oB = (((mi / 2) * 8 + rr) * LD + (mi % 2) * 8) * 2;
    const uint32_t oAP = (((mi % 2) * 8 + rr) * LDP + (mi / 2) * 8) * 2;
    const uint32_t oBP = (((mi / 2) * 8 + rr) * LDP + (mi % 2) * 8) * 2;
    constexpr uint32_t K_B = 0, V_B = BC * LD * 2, QD_B = 2 * BC * LD * 2, P_B = (2 * BC + 2 * STAGES * BR) * LD * 2,
                       DS_B = P_B + BC * LDP * 2; /* byte offsets of the shared arrays */

    load_tile_async<T, HD, BC, LD>(Ks, k, s0, k0, len, NKV, kvh);
    load_tile_async<T, HD, BC, LD>(Vs, v, s0, k0, len, NKV, kvh);
    const int nqt = (len + BR - 1) / BR;
    const int qt0 = k0 / BR;
    auto issue = [&](int qt) {
        const int st = STAGES == 2 ? (qt & 1) : 0;
        T *Qn = QdOst + st * 2 * BR * LD;
        float *ls = lsDst + st * 2 * BR;
        const int qb = qt * BR;
        load_tile_async<T, HD, BR, LD>(Qn, q, s0, qb, len, NH, h);
        load_tile_async<T, HD, BR, LD>(Qn + BR * LD, dout, s0, qb, len, NH, h);
        cp_async_commit();
        const int i = threadIdx.x % BR, r = qb + i;
        if (threadIdx.x < BR) ls[i] = r < len ? lse[(int64_t)h * N + s0 + r] * LT_LOG2E : 0.0f;
        else if (threadIdx.x < 2 * BR) ls[BR + i] = r < len ? D[(int64_t)h * N + s0 + r] : 0.0f;
    };
    issue(qt0); /* one group with K and V */
    float dv[2][N2][4], dk[2][N2][4];
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int n = 0; n < N2; n++) {
            dv[mt][n][0] = dv[mt][n][1] = dv[mt][n][2] = dv[mt][n][3] = 0.0f;
            dk[mt][n][0] = dk[mt][n][1] = dk[mt][n][2] = dk[mt][n][3] = 0.0f;
        }
    for (int qt = qt0; qt < nqt; qt++) {
        const int qb0 = qt * BR;
        const int st = STAGES == 2 ? (qt & 1) : 0;
        const float *lse_s = lsDst + st * 2 * BR;
        const float *D_s = lse_s + BR;
        const uint32_t sb = opaque_smem(smem_raw);
        const uint32_t sQ = sb + QD_B + st * (2 * BR * LD * 2), sO = sQ + BR * LD * 2;
        if (STAGES == 2 && qt + 1 < nqt) { issue(qt + 1); cp_async_wait<1>(); }
        else cp_async_wait<0>();
        __syncthreads();
        /* (1) S^T = K Q^T, P^T, dP^T = V dO^T, dS^T = P^T (dP^T - D): keys kg*32.., queries hf*32.. */
        {
            const int kl = kg * 32, ql = hf * 32;
            /* some key of the warp at or before some query of it (else P = 0) */
            const bool live = k0 + kl <= qb0 + ql + 31;
            float p[2][4][4], ds[2][4][4];
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    p[mt][j][0] = p[mt][j][1] = p[mt][j][2] = p[mt][j][3] = ds[mt][j][0] = ds[mt][j][1] =
                        ds[mt][j][2] = ds[mt][j][3] = 0.0f;
            if (live) {
#pragma unroll
                for (int kk = 0; kk < HD / 16; kk++) {
                    uint32_t a[2][4];
#pragma unroll
                    for (int mt = 0; mt < 2; mt++)
                        ldsm4s(a[mt], sb + K_B + oA + ((kl + mt * 16) * LD + kk * 16) * 2);
#pragma unroll
                    for (int j = 0; j < 4; j += 2) {
                        uint32_t b[4];
                        ldsm4s(b, sQ + oB + ((ql + j * 8) * LD + kk * 16) * 2);
#pragma unroll
                        for (int mt = 0; mt < 2; mt++) {
                            mma_nv<T>(p[mt][j], a[mt], b);
                            mma_nv<T>(p[mt][j + 1], a[mt], b + 2);
                        }
                    }
                }
                /* masks only where some key of the warp follows some query, or past the end */
                const bool need_mask = k0 + kl + 31 > qb0 + ql || qb0 + ql + 31 >= len || k0 + kl + 31 >= len;
#pragma unroll
                for (int mt = 0; mt < 2; mt++)
#pragma unroll
                    for (int j = 0; j < 4; j++)
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            const int qi = ql + j * 8 + tq * 2 + (e & 1);
                            float pe = fast_exp2(fmaf(p[mt][j][e], scale_log2, -lse_s[qi]));
                            if (need_mask) {
                                const int key = k0 + kl + mt * 16 + g + (e >= 2 ? 8 : 0);
                                const int qq = qb0 + qi;
                                if (!(key <= qq && qq < len && key < len)) pe = 0.0f;
                            }
                            p[mt][j][e] = pe;
                        }
#pragma unroll
                for (int kk = 0; kk < HD / 16; kk++) {
                    uint32_t a[2][4];
#pragma unroll
                    for (int mt = 0; mt < 2; mt++)
                        ldsm4s(a[mt], sb + V_B + oA + ((kl + mt * 16) * LD + kk * 16) * 2);
#pragma unroll
                    for (int j = 0; j < 4; j += 2) {
                        uint32_t b[4];
                        ldsm4s(b, sO + oB + ((ql + j * 8) * LD + kk * 16) * 2);
#pragma unroll
                        for (int mt = 0; mt < 2; mt++) {
                            mma_nv<T>(ds[mt][j], a[mt], b);
                            mma_nv<T>(ds[mt][j + 1], a[mt], b + 2);
                        }
                    }
                }
#pragma unroll
                for (int mt = 0; mt < 2; mt++)
#pragma unroll
                    for (int j = 0; j < 4; j++)
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            const int qi = ql + j * 8 + tq * 2 + (e & 1);
                            ds[mt][j][e] = p[mt][j][e] * (ds[mt][j][e] - D_s[qi]);
                        }
            }
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const int r = kl + mt * 16 + g, c = ql + j * 8 + tq * 2;
                    *reinterpret_cast<uint32_t *>(Ps + r * LDP + c) = lt_t16<T>::pack2(p[mt][j][0], p[mt][j][1]);
                    *reinterpret_cast<uint32_t *>(Ps + (r + 8) * LDP + c) = lt_t16<T>::pack2(p[mt][j][2], p[mt][j][3]);
                    *reinterpret_cast<uint32_t *>(dSs + r * LDP + c) = lt_t16<T>::pack2(ds[mt][j][0], ds[mt][j][1]);
                    *reinterpret_cast<uint32_t *>(dSs + (r + 8) * LDP + c) =
                        lt_t16<T>::pack2(ds[mt][j][2], ds[mt][j][3]);
                }
        }
        __syncthreads();
        /* (2) dV += P^T dO, dK += dS^T Q: keys kg*32.., columns hf*HD/2.. */
        if (k0 + kg * 32 <= qb0 + BR - 1) {
            const int kl = kg * 32, cl = hf * (HD / 2);
#pragma unroll
            for (int kk = 0; kk < BR / 16; kk++) {
                uint32_t ap[2][4], as[2][4];
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    ldsm4s(ap[mt], sb + P_B + oAP + ((kl + mt * 16) * LDP + kk * 16) * 2);
                    ldsm4s(as[mt], sb + DS_B + oAP + ((kl + mt * 16) * LDP + kk * 16) * 2);
                }
#pragma unroll
                for (int n = 0; n < N2; n += 2) {
                    uint32_t bo[4], bq[4];
                    ldsm4ts(bo, sO + oA + (kk * 16 * LD + cl + n * 8) * 2);
                    ldsm4ts(bq, sQ + oA + (kk * 16 * LD + cl + n * 8) * 2);
#pragma unroll
                    for (int mt = 0; mt < 2; mt++) {
                        mma_nv<T>(dv[mt][n], ap[mt], bo);
                        mma_nv<T>(dv[mt][n + 1], ap[mt], bo + 2);
                        mma_nv<T>(dk[mt][n], as[mt], bq);
                        mma_nv<T>(dk[mt][n + 1], as[mt], bq + 2);
                    }
                }
            }
        }
        /* (3) dQ += scale dS K: queries qw*32.., columns dc.. (key chunks past the warp's last
         * query are all zero) */
        if (dqacc) {
            float acc[2][N3][4];
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int n = 0; n < N3; n++) acc[mt][n][0] = acc[mt][n][1] = acc[mt][n][2] = acc[mt][n][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < BC / 16; kk++) {
                if (k0 + kk * 16 > qb0 + qw * 32 + 31) break;
                uint32_t a[2][4];
#pragma unroll
                for (int mt = 0; mt < 2; mt++)
                    ldsm4ts(a[mt], sb + DS_B + oBP + (kk * 16 * LDP + qw * 32 + mt * 16) * 2);
#pragma unroll
                for (int n = 0; n < N3; n += 2) {
                    uint32_t b[4];
                    ldsm4ts(b, sb + K_B + oA + (kk * 16 * LD + dc + n * 8) * 2);
#pragma unroll
                    for (int mt = 0; mt < 2; mt++) {
                        mma_nv<T>(acc[mt][n], a[mt], b);
                        mma_nv<T>(acc[mt][n + 1], a[mt], b + 2);
                    }
                }
            }
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
                dq_add<N3>(dqacc, acc[mt], s0, qb0 + qw * 32 + mt * 16, len, NH, h, HD, dc, scale);
        }
        __syncthreads(); /* P, dS and this stage are overwritten next */
        if (STAGES == 1 && qt + 1 < nqt) issue(qt + 1);
    }
    const int kl = kg * 32, cl = hf * (HD / 2);
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int key = k0 + kl + mt * 16 + g + half * 8;
            if (key >= len) continue;
            float *dkr = dkp + ((s0 + key) * NH + h) * HD + cl + tq * 2;
            float *dvr = dvp + ((s0 + key) * NH + h) * HD + cl + tq * 2;
#pragma unroll
            for (int n = 0; n < N2; n++) {
                *reinterpret_cast<float2 *>(dkr + n * 8) =
                    make_float2(dk[mt][n][2 * half] * scale, dk[mt][n][2 * half + 1] * scale);
                *reinterpret_cast<float2 *>(dvr + n * 8) = make_float2(dv[mt][n][2 * half], dv[mt][n][2 * half + 1]);
            }
        }
#endif
}

/* Deterministic dQ (no atomics): 4 warps, 64 queries of one head per block (16 per warp), walks
 * the 64-key tiles up to the diagonal recomputing P from lse and dS = P (dO V^T - D), and writes
 * dq = scale dS K in one pass: every dQ element is summed in one fixed order. */
template <typename T, int HD>
__global__ void __launch_bounds__(128) k_flash_bwd_dq(T *dq, const T *dout, const T *q, const T *k, const T *v,
                                                      const float *lse, const float *D, const int32_t *cu,
                                                      int tiles_per_seq, int nseq, int64_t N, int NH, int NKV,
                                                      float scale, float scale_log2) {
#if __CUDA_ARCH__ >= 800
    constexpr int BR = 64, BC = 64, LD = HD + 8, NO = HD / 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Qs = reinterpret_cast<T *>(smem_raw);
    T *dOs = Qs + BR * LD;
    T *Ks = dOs + BR * LD;
    T *Vs = Ks + BC * LD;
    int tile, seq, h;
    attn_block_ids(nseq, NH, &tile, &seq, &h);
    const int kvh = h / (NH / NKV);
    const int64_t s0 = cu[seq];
    const int len = cu[seq + 1] - (int)s0;
    const int q0 = (tiles_per_seq - 1 - tile) * BR;
    if (q0 >= len) return;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    const int mi = lane / 8, rr = lane % 8;
    const int wq = q0 + warp * 16;
    const uint32_t oA = (((mi % 2) * 8 + rr) * LD + (mi / 2) * 8) * 2;
    const uint32_t oB = (((mi / 2) * 8 + rr) * LD + (mi % 2) * 8) * 2;
    load_tile_async<T, HD, BR, LD>(Qs, q, s0, q0, len, NH, h);
    load_tile_async<T, HD, BR, LD>(dOs, dout, s0, q0, len, NH, h);
    cp_async_commit();
    float L[2], Dr[2];
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int row = wq + g + half * 8;
        L[half] = row < len ? lse[(int64_t)h * N + s0 + row] * LT_LOG2E : 0.0f;
        Dr[half] = row < len ? D[(int64_t)h * N + s0 + row] : 0.0f;
    }
    float acc[NO][4];
#pragma unroll
    for (int n = 0; n < NO; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    const int nkt = (min(q0 + BR, len) - 1) / BC + 1;
    for (int kt = 0; kt < nkt; kt++) {
        const int k0 = kt * BC;
        __syncthreads(); /* every warp is done with the previous K, V */
        load_tile_async<T, HD, BC, LD>(Ks, k, s0, k0, len, NKV, kvh);
        load_tile_async<T, HD, BC, LD>(Vs, v, s0, k0, len, NKV, kvh);
        cp_async_commit();
        cp_async_wait<0>();
        __syncthreads();
        if (!(k0 <= wq + 15 && wq < len)) continue;
        const uint32_t sb = opaque_smem(smem_raw);
        float s[BC / 8][4], dp[BC / 8][4];
#pragma unroll
        for (int j = 0; j < BC / 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = dp[j][0] = dp[j][1] = dp[j][2] = dp[j][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {
            uint32_t aq[4], ao[4];
            ldsm4s(aq, sb + oA + (warp * 16 * LD + kk * 16) * 2);
            ldsm4s(ao, sb + oA + ((BR + warp * 16) * LD + kk * 16) * 2);
#pragma unroll
            for (int j = 0; j < BC / 8; j += 2) {
                uint32_t bk[4], bv[4];
                ldsm4s(bk, sb + oB + ((2 * BR + j * 8) * LD + kk * 16) * 2);
                ldsm4s(bv, sb + oB + ((2 * BR + BC + j * 8) * LD + kk * 16) * 2);
                mma_nv<T>(s[j], aq, bk);
                mma_nv<T>(s[j + 1], aq, bk + 2);
                mma_nv<T>(dp[j], ao, bv);
                mma_nv<T>(dp[j + 1], ao, bv + 2);
            }
        }
#pragma unroll
        for (int j = 0; j < BC / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int col = k0 + j * 8 + tq * 2 + (e & 1);
                const int row = wq + g + (e >= 2 ? 8 : 0);
                const bool valid = col <= row && row < len;
                const float p = valid ? fast_exp2(fmaf(s[j][e], scale_log2, -L[e >> 1])) : 0.0f;
                s[j][e] = p * (dp[j][e] - Dr[e >> 1]);
            }
#pragma unroll
        for (int kk = 0; kk < BC / 16; kk++) {
            uint32_t a[4];
            a[0] = lt_t16<T>::pack2(s[2 * kk][0], s[2 * kk][1]);
            a[1] = lt_t16<T>::pack2(s[2 * kk][2], s[2 * kk][3]);
            a[2] = lt_t16<T>::pack2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            a[3] = lt_t16<T>::pack2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int n = 0; n < NO; n += 2) {
                uint32_t b[4];
                ldsm4ts(b, sb + oA + ((2 * BR + kk * 16) * LD + n * 8) * 2);
                mma_nv<T>(acc[n], a, b);
                mma_nv<T>(acc[n + 1], a, b + 2);
            }
        }
    }
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int row = wq + g + half * 8;
        if (row >= len) continue;
        T *dr = dq + ((s0 + row) * NH + h) * HD + tq * 2;
#pragma unroll
        for (int n = 0; n < NO; n++)
            *reinterpret_cast<uint32_t *>(dr + n * 8) =
                lt_t16<T>::pack2(acc[n][2 * half] * scale, acc[n][2 * half + 1] * scale);
    }
#endif
}

/* ================================================================ launchers */
/* v6 backward (where the v7 one does not fit) */
static size_t bwd_smem(int HD) { return (size_t)(2 * 64 + 4 * 32) * (HD + 8) * 2 + 64 * 40 * 2 + 4 * 32 * 4; }
/* v7: Q + K + V; K + V + two Q/dO stages + P^T + dS^T + lse/D stages; Q + dO + K + V */
static size_t fwd2_smem(int HD, int BC, int MT) { return (size_t)(64 * MT + 2 * BC) * (HD + 8) * 2; }
static size_t bwd2_smem(int HD, int NW, int STAGES) {
    const int BC = 16 * NW;
    return (size_t)(2 * BC + 2 * STAGES * 64) * (HD + 8) * 2 + 2 * BC * 72 * 2 + STAGES * 2 * 64 * 4;
}
static size_t dq_smem(int HD) { return (size_t)(4 * 64) * (HD + 8) * 2; }

static bool use_tc(lt_cuda *c, int64_t HD) {
    if (g_force_portable || c->cc < 80 || (HD != 64 && HD != 128)) return false;
    return bwd_smem((int)HD) <= c->smem_optin && fwd2_smem((int)HD, 64, 2) <= c->smem_optin &&
           dq_smem((int)HD) <= c->smem_optin;
}

extern "C" int lt_cuda_attention_flash_ok(lt_backend *be, int64_t HD) { return use_tc(lt_cuda_of(be), HD); }

static lt_status check_shapes(int64_t NH, int64_t NKV, int64_t HD) {
    LT_CHECK_ARG(NKV > 0 && NH % NKV == 0, "attention: %lld query heads is not a multiple of %lld kv heads",
                 (long long)NH, (long long)NKV);
    LT_CHECK_ARG(HD > 0 && HD <= 32 * LT_PD, "attention: head dim %lld must be in [1, %d]", (long long)HD,
                 32 * LT_PD);
    return LT_OK;
}

template <typename T, int HD>
static lt_status fwd_tc(lt_cuda *c, T *out, float *lse, const T *q, const T *k, const T *v, const int32_t *cu,
                        int32_t nseq, int32_t max_seqlen, int64_t N, int NH, int NKV, float scale) {
    /* 32 rows per warp, 64-key tiles: measured faster than 16 rows (3 blocks per SM) and
     * than 32-key tiles (see NOTES.md, v7) */
    const int tiles = (max_seqlen + 127) / 128;
    const unsigned blocks = (unsigned)(tiles * nseq * NH);
    const size_t smem = fwd2_smem(HD, 64, 2);
    LT_CUDA_TRY(cudaFuncSetAttribute(k_flash_fwd2<T, HD, 64, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     (int)smem));
    k_flash_fwd2<T, HD, 64, 2><<<blocks, 128, smem, c->stream>>>(out, lse, q, k, v, cu, tiles, nseq, N, NH, NKV,
                                                                 scale * LT_LOG2E);
    LT_LAUNCH_CHECK("k_flash_fwd2");
    return LT_OK;
}

template <typename T>
static lt_status fwd_t(lt_backend *be, T *out, float *lse, const T *q, const T *k, const T *v, const int32_t *cu,
                       int32_t nseq, int32_t max_seqlen, int64_t N, int NH, int NKV, int HD) {
    lt_cuda *c = lt_cuda_of(be);
    const float scale = 1.0f / sqrtf((float)HD);
    if (use_tc(c, HD)) {
        if (HD == 128) return fwd_tc<T, 128>(c, out, lse, q, k, v, cu, nseq, max_seqlen, N, NH, NKV, scale);
        return fwd_tc<T, 64>(c, out, lse, q, k, v, cu, nseq, max_seqlen, N, NH, NKV, scale);
    }
    const int64_t threads = N * NH * 32;
    k_attn_fwd_portable<T><<<(unsigned)((threads + 127) / 128), 128, 0, c->stream>>>(out, lse, q, k, v, cu, nseq, N, NH,
                                                                                   NKV, HD, scale);
    LT_LAUNCH_CHECK("k_attn_fwd_portable");
    return LT_OK;
}

lt_status lt_cuda_attention_fwd(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                                const int32_t *cu_seqlens, int32_t nseq, int32_t max_seqlen, int64_t N, int64_t NH,
                                int64_t NKV, int64_t HD) {
    LT_TRY(check_shapes(NH, NKV, HD));
    if (N <= 0 || nseq <= 0) return LT_OK;
    if (be->act_dtype == LT_DTYPE_BF16)
        return fwd_t(be, (__nv_bfloat16 *)out, lse, (const __nv_bfloat16 *)q, (const __nv_bfloat16 *)k,
                     (const __nv_bfloat16 *)v, cu_seqlens, nseq, max_seqlen, N, (int)NH, (int)NKV, (int)HD);
    return fwd_t(be, (__half *)out, lse, (const __half *)q, (const __half *)k, (const __half *)v, cu_seqlens, nseq,
                 max_seqlen, N, (int)NH, (int)NKV, (int)HD);
}

/* dK/dV per query head into dkf/dvf (N,NH,HD) f32; dQ added into dqacc, or (dqacc NULL) written
 * to dq by k_flash_bwd_dq */
template <typename T, int HD>
static lt_status bwd_tc(lt_cuda *c, T *dq, float *dkf, float *dvf, float *dqacc, const T *dout, const T *q,
                        const T *k, const T *v, const float *lse, const float *D, const int32_t *cu, int32_t nseq,
                        int32_t max_seqlen, int64_t N, int NH, int NKV, float scale) {
    cudaStream_t s = c->stream;
    /* 128-key blocks of 8 warps, two Q/dO stages (faster than 64-key blocks of 4 warps, two
     * blocks per SM: NOTES.md, v7); the v6 kernel where that does not fit (A100, sm_86/89) */
    if (!g_force_bwd_v6 && bwd2_smem(HD, 8, 2) <= c->smem_optin) {
        const int tiles = (max_seqlen + 127) / 128;
        const unsigned blocks = (unsigned)(tiles * nseq * NH);
        const size_t smem = bwd2_smem(HD, 8, 2);
        LT_CUDA_TRY(cudaFuncSetAttribute(k_flash_bwd2<T, HD, 8, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)smem));
        k_flash_bwd2<T, HD, 8, 2><<<blocks, 256, smem, s>>>(dkf, dvf, dqacc, dout, q, k, v, lse, D, cu, nseq, N, NH,
                                                            NKV, scale, scale * LT_LOG2E);
        LT_LAUNCH_CHECK("k_flash_bwd2");
    } else {
        const int tiles = (max_seqlen + 63) / 64;
        dim3 grid((unsigned)(nseq * tiles), (unsigned)NH);
        const size_t smem = bwd_smem(HD);
        LT_CUDA_TRY(cudaFuncSetAttribute(k_flash_bwd<T, HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        k_flash_bwd<T, HD><<<grid, 128, smem, s>>>(dkf, dvf, dqacc, dout, q, k, v, lse, D, cu, tiles, N, NH, NKV, scale,
                                                   scale * LT_LOG2E);
        LT_LAUNCH_CHECK("k_flash_bwd");
    }
    if (!dqacc) {
        const int tiles = (max_seqlen + 63) / 64;
        const size_t smem = dq_smem(HD);
        LT_CUDA_TRY(cudaFuncSetAttribute(k_flash_bwd_dq<T, HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        k_flash_bwd_dq<T, HD><<<(unsigned)(tiles * nseq * NH), 128, smem, s>>>(
            dq, dout, q, k, v, lse, D, cu, tiles, nseq, N, NH, NKV, scale, scale * LT_LOG2E);
        LT_LAUNCH_CHECK("k_flash_bwd_dq");
    }
    return LT_OK;
}

template <typename T>
static lt_status bwd_t(lt_backend *be, T *dq, T *dk, T *dv, const T *dout, const T *q, const T *k, const T *v,
                       const T *out, const float *lse, const int32_t *cu, int32_t nseq, int32_t max_seqlen, int64_t N,
                       int NH, int NKV, int HD) {
    lt_cuda *c = lt_cuda_of(be);
    cudaStream_t s = c->stream;
    const float scale = 1.0f / sqrtf((float)HD);
    const bool tc = use_tc(c, HD);
    /* deterministic: dQ without atomics */
    const bool det = be->deterministic;
    const size_t D_b = lt_align256((size_t)(N * NH) * 4);
    const size_t q_b = lt_align256((size_t)(N * NH * HD) * 4);
    const size_t kv_b = lt_align256((size_t)(N * (tc ? NH : NKV) * HD) * 4);
    const bool need_dqacc = tc && !det;
    void *scr;
    LT_TRY(lt_cuda_scratch(c, D_b + (need_dqacc ? q_b : 0) + 2 * kv_b, &scr));
    char *cur = (char *)scr;
    float *D = (float *)lt_carve(&cur, D_b);
    float *dqacc = need_dqacc ? (float *)lt_carve(&cur, q_b) : NULL;
    float *dkf = (float *)lt_carve(&cur, kv_b);
    float *dvf = (float *)lt_carve(&cur, kv_b);
    const int64_t wthreads = N * NH * 32;
    if (HD == 128)
        k_attn_D8<T, 16><<<(unsigned)((N * NH * 16 + 255) / 256), 256, 0, s>>>(D, dout, out, N, NH);
    else if (HD == 64)
        k_attn_D8<T, 8><<<(unsigned)((N * NH * 8 + 255) / 256), 256, 0, s>>>(D, dout, out, N, NH);
    else
        k_attn_D<T><<<(unsigned)((wthreads + 127) / 128), 128, 0, s>>>(D, dout, out, N, NH, HD);
    LT_LAUNCH_CHECK("k_attn_D");
    if (tc) {
        if (dqacc) LT_CUDA_TRY(cudaMemsetAsync(dqacc, 0, q_b, s));
        /* every (token, head) row of dkf/dvf is written by the kernel (zero where no query sees
         * the key), so they need no clearing */
        if (HD == 128)
            LT_TRY((bwd_tc<T, 128>(c, dq, dkf, dvf, dqacc, dout, q, k, v, lse, D, cu, nseq, max_seqlen, N, NH, NKV,
                                   scale)));
        else
            LT_TRY((bwd_tc<T, 64>(c, dq, dkf, dvf, dqacc, dout, q, k, v, lse, D, cu, nseq, max_seqlen, N, NH, NKV,
                                  scale)));
        /* HD is 64 or 128 here: whole 16-byte pieces */
        if (dqacc) {
            k_f32_to_t8<T><<<lt_blocks(N * NH * HD / 8, 256), 256, 0, s>>>(dq, dqacc, N * NH * HD / 8);
            LT_LAUNCH_CHECK("k_f32_to_t8");
        }
        const int G = NH / NKV;
        k_group_sum<T><<<lt_blocks(N * NKV * HD / 8, 256), 256, 0, s>>>(dk, dkf, N, NKV, G, HD, cu, nseq);
        k_group_sum<T><<<lt_blocks(N * NKV * HD / 8, 256), 256, 0, s>>>(dv, dvf, N, NKV, G, HD, cu, nseq);
        LT_LAUNCH_CHECK("k_group_sum");
        return LT_OK;
    }
    if (det) {
        k_attn_bwd_portable<T><<<(unsigned)((wthreads + 127) / 128), 128, 0, s>>>(
            dq, NULL, NULL, dout, q, k, v, lse, D, cu, nseq, N, NH, NKV, HD, scale);
        k_attn_bwd_portable_kv<T><<<(unsigned)((N * NKV * 32 + 127) / 128), 128, 0, s>>>(
            dkf, dvf, dout, q, k, v, lse, D, cu, nseq, N, NH, NKV, HD, scale);
    } else {
        LT_CUDA_TRY(cudaMemsetAsync(dkf, 0, 2 * kv_b, s));
        k_attn_bwd_portable<T><<<(unsigned)((wthreads + 127) / 128), 128, 0, s>>>(dq, dkf, dvf, dout, q, k, v, lse, D,
                                                                                cu, nseq, N, NH, NKV, HD, scale);
    }
    LT_LAUNCH_CHECK("k_attn_bwd_portable");
    k_f32_to_t<T><<<lt_blocks(N * NKV * HD, 256), 256, 0, s>>>(dk, dkf, N * NKV * HD);
    k_f32_to_t<T><<<lt_blocks(N * NKV * HD, 256), 256, 0, s>>>(dv, dvf, N * NKV * HD);
    LT_LAUNCH_CHECK("k_f32_to_t");
    return LT_OK;
}

lt_status lt_cuda_attention_bwd(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                                const void *k, const void *v, const void *out, const float *lse,
                                const int32_t *cu_seqlens, int32_t nseq, int32_t max_seqlen, int64_t N, int64_t NH,
                                int64_t NKV, int64_t HD) {
    LT_TRY(check_shapes(NH, NKV, HD));
    if (N <= 0 || nseq <= 0) return LT_OK;
    typedef __nv_bfloat16 B;
    if (be->act_dtype == LT_DTYPE_BF16)
        return bwd_t(be, (B *)dq, (B *)dk, (B *)dv, (const B *)dout, (const B *)q, (const B *)k, (const B *)v,
                     (const B *)out, lse, cu_seqlens, nseq, max_seqlen, N, (int)NH, (int)NKV, (int)HD);
    typedef __half H;
    return bwd_t(be, (H *)dq, (H *)dk, (H *)dv, (const H *)dout, (const H *)q, (const H *)k, (const H *)v,
                 (const H *)out, lse, cu_seqlens, nseq, max_seqlen, N, (int)NH, (int)NKV, (int)HD);
}

lt_status lt_cuda_attention_kv(lt_backend *be, void *out, const void *q, const void *kcache, const void *vcache,
                               int64_t past, int64_t n, int64_t NH, int64_t NKV, int64_t HD) {
    LT_TRY(check_shapes(NH, NKV, HD));
    if (n <= 0) return LT_OK;
    lt_cuda *c = lt_cuda_of(be);
    const float scale = 1.0f / sqrtf((float)HD);
    const int64_t threads = n * NH * 32;
    const unsigned blocks = (unsigned)((threads + 127) / 128);
    if (be->act_dtype == LT_DTYPE_BF16)
        k_attn_kv<<<blocks, 128, 0, c->stream>>>((__nv_bfloat16 *)out, (const __nv_bfloat16 *)q,
                                                 (const __nv_bfloat16 *)kcache, (const __nv_bfloat16 *)vcache, past, n,
                                                 (int)NH, (int)NKV, (int)HD, scale);
    else
        k_attn_kv<<<blocks, 128, 0, c->stream>>>((__half *)out, (const __half *)q, (const __half *)kcache,
                                                 (const __half *)vcache, past, n, (int)NH, (int)NKV, (int)HD, scale);
    LT_LAUNCH_CHECK("k_attn_kv");
    return LT_OK;
}

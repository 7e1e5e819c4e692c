/* lora.cu - the skinny products of the LoRA branch (rank R = 8, 16 or 32) that cuBLAS runs
 * poorly because one side is only R wide while the reduction is thousands long. All three
 * read the big operand once, with the dropout mask applied on the fly (the dropped input is
 * never written out), and use mma.sync m16n8k16 tensor cores (f32 accumulation):
 *   rowdot: y(N,R) = alpha * drop(x)(N,M) @ W(R,M)^T   (xa in forward, dxa in backward);
 *           a block takes 16 tokens, its warps split the M reduction and meet in shared memory;
 *   wgrad:  G += alpha * drop(x)(N,M)^T @ coef(N,R)     (dA and dB): a block takes 64 columns
 *           of M and a chunk of tokens; per-chunk f32 partials are summed by a second kernel
 *           in a fixed order (deterministic);
 *   addmul: y(N,M) += alpha * drop(coef(N,R) @ W(R,M))  (the LoRA part of dinp): the
 *           read-modify-write of y is the only big traffic; no temporary, no second pass.
 * The mask is lt_rng_keep(seed, stream, t*M + m) as everywhere: one lt_drop_bits draw under
 * key = lt_drop_key(seed, stream) (computed by the launchers) covers four consecutive elements, so M must be a multiple of 8. Kernels first, launchers after. */
#include "cuda_common.h"
#include "mma.h"
#include <stdlib.h>
extern "C" {
#include "core/rng.h"
}

/* ---------------------------------------------------------------- helpers */
/* the keep factors (inv or 0) of elements i0..i0+7 (i0 % 4 == 0) */
__device__ __forceinline__ void keep8(uint64_t key, uint64_t i0, float p, float inv, float s[8]) {
    const uint64_t a = lt_drop_bits(key, i0 >> 2), b = lt_drop_bits(key, (i0 >> 2) + 1);
    const uint32_t thr = lt_drop_threshold(p);
#pragma unroll
    for (int j = 0; j < 4; j++) {
        s[j] = (uint32_t)((a >> (16 * j)) & 0xFFFFu) >= thr ? inv : 0.0f;
        s[j + 4] = (uint32_t)((b >> (16 * j)) & 0xFFFFu) >= thr ? inv : 0.0f;
    }
}

/* eight consecutive 16-bit values of row t at column c (zeros outside), through the mask */
template <typename T>
__device__ __forceinline__ uint4 load8_masked(const T *x, int64_t t, int64_t c, int64_t N, int64_t M, float p,
                                              float inv, uint64_t key) {
    if (t >= N || c >= M) return make_uint4(0, 0, 0, 0);
    uint4 v = *reinterpret_cast<const uint4 *>(x + t * M + c);
    if (p > 0.0f) {
        float f[8], s[8];
        lt_unpack8<T>(v, f);
        keep8(key, (uint64_t)(t * M + c), p, inv, s);
#pragma unroll
        for (int j = 0; j < 8; j++) f[j] *= s[j];
        v = lt_pack8<T>(f);
    }
    return v;
}

/* ---------------------------------------------------------------- rowdot */
#define RD_WARPS 8 /* warps per block, splitting the M reduction; 16 tokens per block */

/* The reduction order inside a 32-column step is free, so thread (g, tq) loads the eight
 * contiguous columns 8tq..8tq+7 of rows g and g+8 (one 16-byte load each, one Philox pair
 * each) and feeds columns {0,1 | 2,3} to the first mma and {4,5 | 6,7} to the second, with
 * W's columns permuted the same way. */
template <typename T, int R>
__global__ void __launch_bounds__(RD_WARPS * 32) k_lora_rowdot(T *y, const T *x, const T *W, int64_t N, int64_t M,
                                                               float alpha, float p, float inv, uint64_t key) {
#if __CUDA_ARCH__ >= 800
    constexpr int NT = R / 8;
    __shared__ float red[RD_WARPS][16][R + 1];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    const int64_t t0 = (int64_t)blockIdx.x * 16;
    float acc[NT][4];
#pragma unroll
    for (int n = 0; n < NT; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    const int64_t nsteps = (M + 31) / 32;
    for (int64_t st = warp; st < nsteps; st += 2 * RD_WARPS) {
        /* two steps in flight: loads of both first */
        uint4 xa[2], xb[2], wv[2][NT];
#pragma unroll
        for (int u = 0; u < 2; u++) {
            const int64_t s2 = st + u * RD_WARPS;
            const int64_t c = s2 * 32 + tq * 8;
            const bool ok = s2 < nsteps;
            xa[u] = ok ? load8_masked<T>(x, t0 + g, c, N, M, p, inv, key) : make_uint4(0, 0, 0, 0);
            xb[u] = ok ? load8_masked<T>(x, t0 + g + 8, c, N, M, p, inv, key) : make_uint4(0, 0, 0, 0);
#pragma unroll
            for (int n = 0; n < NT; n++)
                wv[u][n] = ok && c < M ? __ldg(reinterpret_cast<const uint4 *>(W + (int64_t)(n * 8 + g) * M + c))
                                       : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < 2; u++) {
            const uint32_t a1[4] = {xa[u].x, xb[u].x, xa[u].y, xb[u].y};
            const uint32_t a2[4] = {xa[u].z, xb[u].z, xa[u].w, xb[u].w};
#pragma unroll
            for (int n = 0; n < NT; n++) {
                mma16816<T>(acc[n], a1, reinterpret_cast<const uint32_t *>(&wv[u][n]));
                mma16816<T>(acc[n], a2, reinterpret_cast<const uint32_t *>(&wv[u][n]) + 2);
            }
        }
    }
    /* c0,c1: (row g, r = 8n + 2tq, +1); c2,c3: row g + 8 */
#pragma unroll
    for (int n = 0; n < NT; n++) {
        red[warp][g][n * 8 + tq * 2] = acc[n][0];
        red[warp][g][n * 8 + tq * 2 + 1] = acc[n][1];
        red[warp][g + 8][n * 8 + tq * 2] = acc[n][2];
        red[warp][g + 8][n * 8 + tq * 2 + 1] = acc[n][3];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < 16 * R; i += blockDim.x) {
        const int row = i / R, r = i % R;
        if (t0 + row >= N) continue;
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < RD_WARPS; w++) s += red[w][row][r];
        y[(t0 + row) * R + r] = lt_fromf<T>(alpha * s);
    }
#endif
}

/* ---------------------------------------------------------------- wgrad */
#define WG_BM 64   /* columns of M per block (16 per warp) */
#define WG_BT 64   /* tokens per shared-memory tile */
#define WG_THREADS 128

/* part[chunk][m][r] = sum over the chunk's tokens of drop(x)[t][m] * coef[t][r]. The x tile
 * is stored [token][m] and the coef tile [token][r]; ldmatrix.trans turns both into the
 * fragments of x^T (m x tokens) and coef (tokens x r). */
template <typename T, int R>
__global__ void __launch_bounds__(WG_THREADS) k_lora_wgrad(float *part, const T *x, const T *coef, int64_t N,
                                                           int64_t M, int tok_chunk, float p, float inv,
                                                           uint64_t key) {
#if __CUDA_ARCH__ >= 800
    constexpr int RP = R < 16 ? 16 : R; /* coef columns in shared memory (zero past R) */
    constexpr int LDX = WG_BM + 8, LDC = RP + 8;
    __shared__ __align__(16) T xs[WG_BT * LDX];
    __shared__ __align__(16) T cs[WG_BT * LDC];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    const int mi = lane / 8, rr = lane % 8;
    const int64_t m0 = (int64_t)blockIdx.x * WG_BM;
    const int64_t tb = (int64_t)blockIdx.y * tok_chunk;
    const int64_t te = tb + tok_chunk < N ? tb + tok_chunk : N;
    float acc[RP / 8][4];
#pragma unroll
    for (int n = 0; n < RP / 8; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
    for (int64_t ts = tb; ts < te; ts += WG_BT) {
        uint4 xv[WG_BT * WG_BM / 8 / WG_THREADS];
#pragma unroll
        for (int u = 0; u < WG_BT * WG_BM / 8 / WG_THREADS; u++) {
            const int i = threadIdx.x + u * WG_THREADS;
            const int tt = i / (WG_BM / 8), c8 = (i % (WG_BM / 8)) * 8;
            xv[u] = load8_masked<T>(x, ts + tt, m0 + c8, te, M, p, inv, key);
        }
        constexpr int CV = WG_BT * RP / 8; /* 16-byte pieces of the coef tile */
        uint4 cv[(CV + WG_THREADS - 1) / WG_THREADS];
#pragma unroll
        for (int u = 0; u < (CV + WG_THREADS - 1) / WG_THREADS; u++) {
            const int i = threadIdx.x + u * WG_THREADS;
            const int tt = i / (RP / 8), c8 = (i % (RP / 8)) * 8;
            cv[u] = make_uint4(0, 0, 0, 0);
            if (i < CV && ts + tt < te && c8 < R) cv[u] = *reinterpret_cast<const uint4 *>(coef + (ts + tt) * R + c8);
        }
        __syncthreads(); /* the previous tile is consumed */
#pragma unroll
        for (int u = 0; u < WG_BT * WG_BM / 8 / WG_THREADS; u++) {
            const int i = threadIdx.x + u * WG_THREADS;
            const int tt = i / (WG_BM / 8), c8 = (i % (WG_BM / 8)) * 8;
            *reinterpret_cast<uint4 *>(xs + tt * LDX + c8) = xv[u];
        }
#pragma unroll
        for (int u = 0; u < (CV + WG_THREADS - 1) / WG_THREADS; u++) {
            const int i = threadIdx.x + u * WG_THREADS;
            const int tt = i / (RP / 8), c8 = (i % (RP / 8)) * 8;
            if (i < CV) *reinterpret_cast<uint4 *>(cs + tt * LDC + c8) = cv[u];
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < WG_BT / 16; kk++) {
            uint32_t a[4];
            ldsm4t(a, xs + (kk * 16 + (mi / 2) * 8 + rr) * LDX + warp * 16 + (mi % 2) * 8);
#pragma unroll
            for (int n = 0; n < RP / 8; n += 2) {
                uint32_t b[4];
                ldsm4t(b, cs + (kk * 16 + (mi % 2) * 8 + rr) * LDC + (n + mi / 2) * 8);
                mma16816<T>(acc[n], a, b);
                mma16816<T>(acc[n + 1], a, b + 2);
            }
        }
    }
    /* c0,c1: (m = warp*16 + g, r = 8n + 2tq, +1); c2,c3: m + 8 */
    float *dst = part + (int64_t)blockIdx.y * M * R;
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int64_t m = m0 + warp * 16 + g + half * 8;
        if (m >= M) continue;
#pragma unroll
        for (int n = 0; n < RP / 8; n++) {
            const int r = n * 8 + tq * 2;
            if (r < R) *reinterpret_cast<float2 *>(dst + m * R + r) = make_float2(acc[n][2 * half], acc[n][2 * half + 1]);
        }
    }
#endif
}

/* G[m*sm + r*sr] += alpha * sum over chunks of part[chunk][m][r], chunks in order */
__global__ void k_lora_wgrad_reduce(float *G, const float *part, int nchunks, int64_t M, int R, int64_t sm,
                                    int64_t sr, float alpha) {
    const int64_t n = M * R;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int c = 0; c < nchunks; c++) s += part[(int64_t)c * n + i];
        const int64_t m = i / R, r = i % R;
        G[m * sm + r * sr] += alpha * s;
    }
}

/* ---------------------------------------------------------------- addmul */
#define AM_THREADS 128
#define AM_TOK 16 /* tokens per block: W's slice stays in registers across them */

/* y[t][m..m+7] += mask * alpha * sum_r coef[t][r] W(r, m..m+7), W(r, m) = W[r*wr + m*wm] in f32
 * (A as stored for dinp: wr = M, wm = 1; B as stored for the forward: wr = 1, wm = R), read
 * once per block and kept in registers as 16-bit pairs (the rounding cuBLAS operands had) */
template <typename T, int R>
__global__ void __launch_bounds__(AM_THREADS) k_lora_addmul(T *y, const T *coef, const float *W, int64_t wr,
                                                            int64_t wm, int64_t N, int64_t M, float alpha, float p,
                                                            float inv, uint64_t key) {
    __shared__ float cs[AM_TOK][R];
    const int64_t t0 = (int64_t)blockIdx.y * AM_TOK;
    for (int i = threadIdx.x; i < AM_TOK * R; i += blockDim.x) {
        const int tt = i / R, r = i % R;
        cs[tt][r] = t0 + tt < N ? alpha * lt_tof<T>(coef[(t0 + tt) * R + r]) : 0.0f;
    }
    __syncthreads();
    const int64_t m = ((int64_t)blockIdx.x * AM_THREADS + threadIdx.x) * 8;
    if (m >= M) return;
    uint4 wv[R];
    if (wm == 1) {
#pragma unroll
        for (int r = 0; r < R; r++) {
            const float4 a = __ldg(reinterpret_cast<const float4 *>(W + r * wr + m));
            const float4 b = __ldg(reinterpret_cast<const float4 *>(W + r * wr + m + 4));
            const float f[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
            wv[r] = lt_pack8<T>(f);
        }
    } else { /* wr == 1: the R values of each column are contiguous */
#pragma unroll
        for (int r4 = 0; r4 < R; r4 += 4) {
            float f[4][8];
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const float4 a = __ldg(reinterpret_cast<const float4 *>(W + (m + j) * wm + r4));
                f[0][j] = a.x; f[1][j] = a.y; f[2][j] = a.z; f[3][j] = a.w;
            }
#pragma unroll
            for (int i = 0; i < 4; i++) wv[r4 + i] = lt_pack8<T>(f[i]);
        }
    }
    /* two tokens at a time: both rows of y are loaded before either is computed */
    for (int tt = 0; tt < AM_TOK; tt += 2) {
        const int64_t t = t0 + tt;
        if (t >= N) break;
        const bool two = t + 1 < N;
        uint4 *yp0 = reinterpret_cast<uint4 *>(y + t * M + m);
        uint4 *yp1 = reinterpret_cast<uint4 *>(y + (t + 1) * M + m);
        const uint4 y0 = *yp0;
        const uint4 y1 = two ? *yp1 : make_uint4(0, 0, 0, 0);
        float acc0[8], acc1[8];
#pragma unroll
        for (int j = 0; j < 8; j++) acc0[j] = acc1[j] = 0.0f;
#pragma unroll
        for (int r = 0; r < R; r++) {
            float w[8];
            lt_unpack8<T>(wv[r], w);
            const float c0 = cs[tt][r], c1 = cs[tt + 1][r];
#pragma unroll
            for (int j = 0; j < 8; j++) {
                acc0[j] += c0 * w[j];
                acc1[j] += c1 * w[j];
            }
        }
        if (p > 0.0f) {
            float s[8];
            keep8(key, (uint64_t)(t * M + m), p, inv, s);
#pragma unroll
            for (int j = 0; j < 8; j++) acc0[j] *= s[j];
            keep8(key, (uint64_t)((t + 1) * M + m), p, inv, s);
#pragma unroll
            for (int j = 0; j < 8; j++) acc1[j] *= s[j];
        }
        float yv[8];
        lt_unpack8<T>(y0, yv);
#pragma unroll
        for (int j = 0; j < 8; j++) yv[j] += acc0[j];
        *yp0 = lt_pack8<T>(yv);
        if (two) {
            lt_unpack8<T>(y1, yv);
#pragma unroll
            for (int j = 0; j < 8; j++) yv[j] += acc1[j];
            *yp1 = lt_pack8<T>(yv);
        }
    }
}

/* dst(R,M) = act(src(M,R))^T */
template <typename T>
__global__ void k_transpose_to_act(T *dst, const float *src, int64_t M, int R) {
    const int64_t n = M * R;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / M, m = i % M;
        dst[i] = lt_fromf<T>(src[m * R + r]);
    }
}

/* ---------------------------------------------------------------- launchers */
/* On by default (tensor-core kernels, cuda/NOTES.md v5); LT_CUDA_LORA_SKINNY=0 or the test
 * hook selects dropout + cuBLAS instead. */
static int g_skinny = -1;
void lt_cuda_lora_set_skinny(int on) { g_skinny = on ? 1 : 0; }

bool lt_cuda_lora_fast_ok(int64_t R, int64_t C, int64_t OC) {
    if (g_skinny < 0) g_skinny = !(getenv("LT_CUDA_LORA_SKINNY") && atoi(getenv("LT_CUDA_LORA_SKINNY")) == 0);
    return g_skinny && (R == 8 || R == 16 || R == 32) && C % 8 == 0 && OC % 8 == 0;
}

/* token chunks of the split-K weight gradient over M columns: enough blocks to fill the GPU
 * (~4 waves of 132 SMs), at least 128 tokens per chunk */
int lt_cuda_lora_wg_chunks(int64_t N, int64_t M) {
    const int64_t bx = (M + WG_BM - 1) / WG_BM;
    int64_t want = (528 + bx - 1) / bx;
    const int64_t most = (N + 127) / 128;
    if (want > most) want = most;
    return (int)(want < 1 ? 1 : want > 1024 ? 1024 : want);
}

template <typename T, int R>
static lt_status rowdot_t(lt_cuda *c, void *y, const void *x, const void *W, int64_t N, int64_t M, float alpha,
                          float p, uint64_t seed, uint64_t stream) {
    const unsigned blocks = (unsigned)((N + 15) / 16);
    k_lora_rowdot<T, R><<<blocks, RD_WARPS * 32, 0, c->stream>>>((T *)y, (const T *)x, (const T *)W, N, M, alpha, p,
                                                                p > 0.0f ? 1.0f / (1.0f - p) : 1.0f, lt_drop_key(seed, stream));
    LT_LAUNCH_CHECK("k_lora_rowdot");
    return LT_OK;
}

lt_status lt_cuda_lora_rowdot(lt_backend *be, void *y, const void *x, const void *W, int64_t N, int64_t M, int64_t R,
                              float alpha, float p, uint64_t seed, uint64_t stream) {
    if (N <= 0) return LT_OK;
    lt_cuda *c = lt_cuda_of(be);
    const bool bf = be->act_dtype == LT_DTYPE_BF16;
    const int slot = lt_prof_begin(c, LT_PROF_ROWDOT);
    lt_status st = LT_OK;
#define RD(TT, RR) st = rowdot_t<TT, RR>(c, y, x, W, N, M, alpha, p, seed, stream)
    if (R == 8) { if (bf) RD(__nv_bfloat16, 8); else RD(__half, 8); }
    else if (R == 16) { if (bf) RD(__nv_bfloat16, 16); else RD(__half, 16); }
    else if (R == 32) { if (bf) RD(__nv_bfloat16, 32); else RD(__half, 32); }
    else st = lt_error(LT_ERR_INTERNAL, "lora rowdot: rank %lld has no kernel", (long long)R);
#undef RD
    lt_prof_end(c, slot);
    return st;
}

template <typename T, int R>
static void wgrad_launch(lt_cuda *c, float *part, const void *x, const void *coef, int64_t N, int64_t M, int chunk,
                         int nchunks, float p, uint64_t seed, uint64_t stream) {
    dim3 grid((unsigned)((M + WG_BM - 1) / WG_BM), (unsigned)nchunks);
    k_lora_wgrad<T, R><<<grid, WG_THREADS, 0, c->stream>>>(part, (const T *)x, (const T *)coef, N, M, chunk, p,
                                                          p > 0.0f ? 1.0f / (1.0f - p) : 1.0f, lt_drop_key(seed, stream));
}

/* G (+)= alpha * drop(x)^T @ coef with G[m*sm + r*sr]; part is scratch of nchunks*M*R floats */
lt_status lt_cuda_lora_wgrad(lt_backend *be, float *G, int64_t sm, int64_t sr, const void *x, const void *coef,
                             int64_t N, int64_t M, int64_t R, float alpha, float p, uint64_t seed, uint64_t stream,
                             float *part, int nchunks) {
    if (N <= 0) return LT_OK;
    lt_cuda *c = lt_cuda_of(be);
    /* whole shared-memory tiles per chunk */
    int chunk = (int)((N + nchunks - 1) / nchunks);
    chunk = (chunk + WG_BT - 1) / WG_BT * WG_BT;
    nchunks = (int)((N + chunk - 1) / chunk);
    const bool bf = be->act_dtype == LT_DTYPE_BF16;
    const int slot = lt_prof_begin(c, LT_PROF_WGRAD);
#define WG(TT, RR) wgrad_launch<TT, RR>(c, part, x, coef, N, M, chunk, nchunks, p, seed, stream)
    if (R == 8) { if (bf) WG(__nv_bfloat16, 8); else WG(__half, 8); }
    else if (R == 16) { if (bf) WG(__nv_bfloat16, 16); else WG(__half, 16); }
    else if (R == 32) { if (bf) WG(__nv_bfloat16, 32); else WG(__half, 32); }
    else return lt_error(LT_ERR_INTERNAL, "lora wgrad: rank %lld has no kernel", (long long)R);
#undef WG
    LT_LAUNCH_CHECK("k_lora_wgrad");
    k_lora_wgrad_reduce<<<lt_blocks(M * R, 256), 256, 0, c->stream>>>(G, part, nchunks, M, (int)R, sm, sr, alpha);
    LT_LAUNCH_CHECK("k_lora_wgrad_reduce");
    lt_prof_end(c, slot);
    return LT_OK;
}

template <typename T, int R>
static void addmul_launch(lt_cuda *c, void *y, const void *coef, const float *W, int64_t wr, int64_t wm, int64_t N,
                          int64_t M, float alpha, float p, uint64_t seed, uint64_t stream) {
    dim3 grid((unsigned)((M / 8 + AM_THREADS - 1) / AM_THREADS), (unsigned)((N + AM_TOK - 1) / AM_TOK));
    k_lora_addmul<T, R><<<grid, AM_THREADS, 0, c->stream>>>((T *)y, (const T *)coef, W, wr, wm, N, M, alpha, p,
                                                            p > 0.0f ? 1.0f / (1.0f - p) : 1.0f, lt_drop_key(seed, stream));
}

/* y(N,M) += alpha * drop(coef(N,R) @ W(R,M)), W(r, m) = W[r*wr + m*wm] f32 (wm == 1 or wr == 1) */
lt_status lt_cuda_lora_addmul(lt_backend *be, void *y, const void *coef, const float *W, int64_t wr, int64_t wm,
                              int64_t N, int64_t M, int64_t R, float alpha, float p, uint64_t seed,
                              uint64_t stream) {
    if (N <= 0) return LT_OK;
    LT_CHECK_ARG(wm == 1 || wr == 1, "lora addmul: W strides (%lld, %lld) need one of them 1", (long long)wr,
                 (long long)wm);
    lt_cuda *c = lt_cuda_of(be);
    const bool bf = be->act_dtype == LT_DTYPE_BF16;
    const int slot = lt_prof_begin(c, LT_PROF_ADDMUL);
#define AM(TT, RR) addmul_launch<TT, RR>(c, y, coef, W, wr, wm, N, M, alpha, p, seed, stream)
    if (R == 8) { if (bf) AM(__nv_bfloat16, 8); else AM(__half, 8); }
    else if (R == 16) { if (bf) AM(__nv_bfloat16, 16); else AM(__half, 16); }
    else if (R == 32) { if (bf) AM(__nv_bfloat16, 32); else AM(__half, 32); }
    else return lt_error(LT_ERR_INTERNAL, "lora addmul: rank %lld has no kernel", (long long)R);
#undef AM
    LT_LAUNCH_CHECK("k_lora_addmul");
    lt_prof_end(c, slot);
    return LT_OK;
}

lt_status lt_cuda_transpose_to_act(lt_backend *be, void *dst, const float *src, int64_t M, int64_t R) {
    lt_cuda *c = lt_cuda_of(be);
    if (be->act_dtype == LT_DTYPE_BF16)
        k_transpose_to_act<<<lt_blocks(M * R, 256), 256, 0, c->stream>>>((__nv_bfloat16 *)dst, src, M, (int)R);
    else
        k_transpose_to_act<<<lt_blocks(M * R, 256), 256, 0, c->stream>>>((__half *)dst, src, M, (int)R);
    LT_LAUNCH_CHECK("k_transpose_to_act");
    return LT_OK;
}

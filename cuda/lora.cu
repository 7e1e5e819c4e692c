/* lora.cu - the skinny products of the LoRA branch (rank R = 8, 16 or 32) that cuBLAS runs
 * poorly because one side is only R wide while the reduction is thousands long. All three
 * read the big operand once, with the dropout mask applied on the fly (the dropped input is
 * never written out), and use mma.sync m16n8k16 tensor cores (f32 accumulation):
 *   rowdot: y(N,R) = alpha * drop(x)(N,M) @ W(R,M)^T   (xa in forward, dxa in backward);
 *           a block takes 16 tokens, its warps split the M reduction and meet in shared memory;
 *   wgrad:  G += alpha * drop(x)(N,M)^T @ coef(N,R)     (dA and dB): a block takes 64 columns
 *           of M and a chunk of tokens and stores its f32 partial sums; a second launch sums
 *           the chunks in order into G (deterministic);
 *   addmul: y(N,M) += alpha * drop(coef(N,R) @ W(R,M))  (the LoRA part of dinp): the
 *           read-modify-write of y is the only big traffic; no temporary, no second pass;
 *           W^T comes from the 16-bit copy cache (gemm.cu).
 * rowdot and wgrad also serve up to LT_LORA_MULTI modules over one shared input (q/k/v over
 * ln1, gate/up over ln2): x is read once, each module applies its own mask to the loaded
 * values and keeps its own accumulators, in the order a single call has, so each module's
 * result is bit for bit that of a single call (the single calls are the NM = 1 kernels).
 * addmul_multi reads and writes y once for all modules (each module's contribution computed
 * as the single kernel computes it, summed in f32, one rounding of y).
 * The mask is lt_rng_keep(seed, stream, t*M + m) as everywhere: one lt_drop_bits draw under
 * key = lt_drop_key_rows(seed, stream, M) (computed by the launchers; a stream's row offset
 * counts rows of M, rng.h) covers four consecutive
 * elements, so M must be a multiple of 8. Kernels first, launchers after, test hooks last. */
#include "cuda_common.h"
#include "mma.h"
#include <stdlib.h>
#include <string.h>
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

/* eight consecutive 16-bit values of row t at column c (zeros outside), unmasked */
template <typename T>
__device__ __forceinline__ uint4 load8(const T *x, int64_t t, int64_t c, int64_t N, int64_t M) {
    if (t >= N || c >= M) return make_uint4(0, 0, 0, 0);
    return *reinterpret_cast<const uint4 *>(x + t * M + c);
}

/* v (eight elements from flat index i0) through one module's mask: the dropped 16-bit values
 * zeroed by bit masks, the kept ones as they are; the kernels scale their f32 sums by
 * 1 / (1 - p) instead (cheaper than unpacking, scaling and rounding every element, and the
 * kept values are not rounded a second time) */
__device__ __forceinline__ uint4 mask8(uint4 v, uint64_t key, uint64_t i0, float p) {
    const uint64_t a = lt_drop_bits(key, i0 >> 2), b = lt_drop_bits(key, (i0 >> 2) + 1);
    const uint32_t thr = lt_drop_threshold(p);
    uint32_t w[4];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const uint64_t q = j < 2 ? a : b;
        const int sh = 32 * (j & 1);
        const uint32_t lo = (uint32_t)((q >> sh) & 0xFFFFu) >= thr ? 0x0000FFFFu : 0u;
        const uint32_t hi = (uint32_t)((q >> (sh + 16)) & 0xFFFFu) >= thr ? 0xFFFF0000u : 0u;
        w[j] = lo | hi;
    }
    return make_uint4(v.x & w[0], v.y & w[1], v.z & w[2], v.w & w[3]);
}

/* swiglu of eight gate and eight up values, rounded as k_swiglu_fwd rounds them */
template <typename T>
__device__ __forceinline__ uint4 swiglu8(uint4 g, uint4 u) {
    const T *gp = reinterpret_cast<const T *>(&g), *up = reinterpret_cast<const T *>(&u);
    uint4 r;
    T *rp = reinterpret_cast<T *>(&r);
#pragma unroll
    for (int j = 0; j < 8; j++) rp[j] = lt_fromf<T>(lt_silu_mul(lt_tof<T>(gp[j]), lt_tof<T>(up[j])));
    return r;
}

/* per-module pointers and mask keys, passed by value (kernel parameters). Inside a CUDA graph
 * capture the keys cannot be kernel parameters (a replay would draw one micro-batch's masks
 * forever): then dev points at (seed, stream xor) in device memory, written before each replay,
 * k[s] holds the stream of the captured pass, and the kernel derives its keys itself. */
template <typename T> struct lora_ptrs { T *p[LT_LORA_MULTI]; };
struct lora_keys {
    uint64_t k[LT_LORA_MULTI];
    const uint64_t *dev;
};

template <int NM>
__device__ __forceinline__ void keys_resolve(lora_keys &key, int64_t M) {
    if (!key.dev) return;
    const uint64_t seed = key.dev[0], sx = key.dev[1];
#pragma unroll
    for (int s = 0; s < NM; s++) key.k[s] = lt_drop_key_rows(seed, key.k[s] ^ sx, (uint64_t)M);
}

/* ---------------------------------------------------------------- rowdot */
#define RD_WARPS 8 /* warps per block, splitting the M reduction; 16 tokens per block */

/* The reduction order inside a 32-column step is free, so thread (g, tq) loads the eight
 * contiguous columns 8tq..8tq+7 of rows g and g+8 (one 16-byte load each, one Philox pair
 * each) and feeds columns {0,1 | 2,3} to the first mma and {4,5 | 6,7} to the second, with
 * W's columns permuted the same way. Warp w takes the steps w, w + 8, w + 16, ... in order
 * (U of them in flight); the warps' sums meet in shared memory in warp order. Each of the NM
 * modules masks the loaded x with its own key and has its own accumulators, so module s gets
 * exactly the sums a single (NM = 1) launch gives. */
template <typename T, int R, int NM>
__global__ void __launch_bounds__(RD_WARPS * 32, 2) k_lora_rowdot(lora_ptrs<T> y, const T *x, lora_ptrs<const T> W,
                                                               int64_t N, int64_t M, float alpha, float p, float inv,
                                                               lora_keys key) {
#if __CUDA_ARCH__ >= 800
    keys_resolve<NM>(key, M);
    constexpr int NT = R / 8;
    /* steps in flight per warp: as many as 128 registers hold without spilling (sm_90 ptxas;
     * W fragments take U * NM * NT of them) */
    constexpr int U = NM * R <= 16 ? 4 : NM * R <= 48 ? 2 : 1;
    __shared__ float red[RD_WARPS][16][R + 1];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    const int64_t t0 = (int64_t)blockIdx.x * 16, ta = t0 + g, tb = t0 + g + 8;
    float acc[NM][NT][4];
#pragma unroll
    for (int s = 0; s < NM; s++)
#pragma unroll
        for (int n = 0; n < NT; n++) acc[s][n][0] = acc[s][n][1] = acc[s][n][2] = acc[s][n][3] = 0.0f;
    const int64_t nsteps = (M + 31) / 32;
    for (int64_t st = warp; st < nsteps; st += U * RD_WARPS) {
        /* the loads of all U steps first */
        uint4 xa[U], xb[U], wv[U][NM][NT];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int64_t s2 = st + u * RD_WARPS;
            const int64_t c = s2 * 32 + tq * 8;
            const bool ok = s2 < nsteps && c < M;
            xa[u] = ok ? load8<T>(x, ta, c, N, M) : make_uint4(0, 0, 0, 0);
            xb[u] = ok ? load8<T>(x, tb, c, N, M) : make_uint4(0, 0, 0, 0);
#pragma unroll
            for (int s = 0; s < NM; s++)
#pragma unroll
                for (int n = 0; n < NT; n++)
                    wv[u][s][n] = ok ? __ldg(reinterpret_cast<const uint4 *>(W.p[s] + (int64_t)(n * 8 + g) * M + c))
                                     : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int64_t c = (st + u * RD_WARPS) * 32 + tq * 8; /* >= M past the last step */
#pragma unroll
            for (int s = 0; s < NM; s++) {
                uint4 va = xa[u], vb = xb[u];
                if (p > 0.0f && c < M) {
                    if (ta < N) va = mask8(va, key.k[s], (uint64_t)(ta * M + c), p);
                    if (tb < N) vb = mask8(vb, key.k[s], (uint64_t)(tb * M + c), p);
                }
                const uint32_t a1[4] = {va.x, vb.x, va.y, vb.y};
                const uint32_t a2[4] = {va.z, vb.z, va.w, vb.w};
#pragma unroll
                for (int n = 0; n < NT; n++) {
                    mma16816<T>(acc[s][n], a1, reinterpret_cast<const uint32_t *>(&wv[u][s][n]));
                    mma16816<T>(acc[s][n], a2, reinterpret_cast<const uint32_t *>(&wv[u][s][n]) + 2);
                }
            }
        }
    }
    /* c0,c1: (row g, r = 8n + 2tq, +1); c2,c3: row g + 8; one module at a time through red;
     * the mask kept values unscaled: 1 / (1 - p) comes in here */
    const float ascale = p > 0.0f ? alpha * inv : alpha;
#pragma unroll
    for (int s = 0; s < NM; s++) {
        if (s > 0) __syncthreads(); /* the previous module's sums are read */
#pragma unroll
        for (int n = 0; n < NT; n++) {
            red[warp][g][n * 8 + tq * 2] = acc[s][n][0];
            red[warp][g][n * 8 + tq * 2 + 1] = acc[s][n][1];
            red[warp][g + 8][n * 8 + tq * 2] = acc[s][n][2];
            red[warp][g + 8][n * 8 + tq * 2 + 1] = acc[s][n][3];
        }
        __syncthreads();
        for (int i = threadIdx.x; i < 16 * R; i += blockDim.x) {
            const int row = i / R, r = i % R;
            if (t0 + row >= N) continue;
            float sum = 0.0f;
#pragma unroll
            for (int w = 0; w < RD_WARPS; w++) sum += red[w][row][r];
            y.p[s][(t0 + row) * R + r] = lt_fromf<T>(ascale * sum);
        }
    }
#endif
}

/* ---------------------------------------------------------------- wgrad */
#define WG_BM 64   /* columns of M per block (16 per warp) */
#define WG_BT 64   /* tokens per shared-memory tile */
#define WG_THREADS 128

/* part[s][chunk][m][r] = sum over the chunk's tokens of drop_s(x)[t][m] * coef_s[t][r]
 * (modules pstride floats apart). The x tile is stored [token][m] once per module (each
 * through its own mask) and the coef tiles [token][r]; ldmatrix.trans turns both into the
 * fragments of x^T (m x tokens) and coef (tokens x r). The next tile's global loads are in
 * flight while the current one is multiplied. k_lora_wgrad_reduce then adds the chunks into G
 * in a second launch. */
template <typename T, int R, int NM, bool SW = false>
__global__ void __launch_bounds__(WG_THREADS, SW ? 5 : 4) k_lora_wgrad(float *part, int64_t pstride, const T *x,
                                                           lora_ptrs<const T> coef, int64_t N, int64_t M, int tok_chunk,
                                                           float p, float inv, lora_keys key, const T *x2) {
#if __CUDA_ARCH__ >= 800
    keys_resolve<NM>(key, M);
    constexpr int RP = R < 16 ? 16 : R; /* coef columns in shared memory (zero past R) */
    constexpr int LDX = WG_BM + 8, LDC = RP + 8;
    constexpr int XU = WG_BT * WG_BM / 8 / WG_THREADS; /* 16-byte pieces of the x tile per thread */
    constexpr int CV = WG_BT * RP / 8;                 /* 16-byte pieces of a coef tile */
    constexpr int CU = (CV + WG_THREADS - 1) / WG_THREADS;
    __shared__ __align__(16) T xs[NM][WG_BT * LDX];
    __shared__ __align__(16) T cs[NM][WG_BT * LDC];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    const int mi = lane / 8, rr = lane % 8;
    const int64_t m0 = (int64_t)blockIdx.x * WG_BM;
    const int64_t tb = (int64_t)blockIdx.y * tok_chunk;
    const int64_t te = tb + tok_chunk < N ? tb + tok_chunk : N;
    float acc[NM][RP / 8][4];
#pragma unroll
    for (int s = 0; s < NM; s++)
#pragma unroll
        for (int n = 0; n < RP / 8; n++) acc[s][n][0] = acc[s][n][1] = acc[s][n][2] = acc[s][n][3] = 0.0f;
    uint4 xv[XU], xv2[SW ? XU : 1], cv[NM][CU];
    /* the raw x pieces (SW: gate's, and up's in xv2) and the coef pieces of the tile at token
     * ts, into registers */
    auto load_tile = [&](int64_t ts) {
#pragma unroll
        for (int u = 0; u < XU; u++) {
            const int i = threadIdx.x + u * WG_THREADS;
            const int tt = i / (WG_BM / 8), c8 = (i % (WG_BM / 8)) * 8;
            xv[u] = load8<T>(x, ts + tt, m0 + c8, te, M);
            if (SW) xv2[u] = load8<T>(x2, ts + tt, m0 + c8, te, M);
        }
#pragma unroll
        for (int s = 0; s < NM; s++)
#pragma unroll
            for (int u = 0; u < CU; u++) {
                const int i = threadIdx.x + u * WG_THREADS;
                const int tt = i / (RP / 8), c8 = (i % (RP / 8)) * 8;
                cv[s][u] = make_uint4(0, 0, 0, 0);
                if (i < CV && ts + tt < te && c8 < R)
                    cv[s][u] = *reinterpret_cast<const uint4 *>(coef.p[s] + (ts + tt) * R + c8);
            }
    };
    if (tb < te) load_tile(tb);
    for (int64_t ts = tb; ts < te; ts += WG_BT) {
        __syncthreads(); /* the previous tile is consumed */
#pragma unroll
        for (int u = 0; u < XU; u++) {
            const int i = threadIdx.x + u * WG_THREADS;
            const int tt = i / (WG_BM / 8), c8 = (i % (WG_BM / 8)) * 8;
            const bool in = ts + tt < te && m0 + c8 < M;
            if (SW) xv[u] = swiglu8<T>(xv[u], xv2[u]); /* zeros (outside) stay zeros */
#pragma unroll
            for (int s = 0; s < NM; s++) {
                uint4 v = xv[u];
                if (p > 0.0f && in) v = mask8(v, key.k[s], (uint64_t)((ts + tt) * M + m0 + c8), p);
                *reinterpret_cast<uint4 *>(&xs[s][tt * LDX + c8]) = v;
            }
        }
#pragma unroll
        for (int s = 0; s < NM; s++)
#pragma unroll
            for (int u = 0; u < CU; u++) {
                const int i = threadIdx.x + u * WG_THREADS;
                const int tt = i / (RP / 8), c8 = (i % (RP / 8)) * 8;
                if (i < CV) *reinterpret_cast<uint4 *>(&cs[s][tt * LDC + c8]) = cv[s][u];
            }
        __syncthreads();
        if (ts + WG_BT < te) load_tile(ts + WG_BT);
#pragma unroll
        for (int kk = 0; kk < WG_BT / 16; kk++) {
#pragma unroll
            for (int s = 0; s < NM; s++) {
                uint32_t a[4];
                ldsm4t(a, &xs[s][(kk * 16 + (mi / 2) * 8 + rr) * LDX + warp * 16 + (mi % 2) * 8]);
#pragma unroll
                for (int n = 0; n < RP / 8; n += 2) {
                    uint32_t b[4];
                    ldsm4t(b, &cs[s][(kk * 16 + (mi % 2) * 8 + rr) * LDC + (n + mi / 2) * 8]);
                    mma16816<T>(acc[s][n], a, b);
                    mma16816<T>(acc[s][n + 1], a, b + 2);
                }
            }
        }
    }
    /* c0,c1: (m = warp*16 + g, r = 8n + 2tq, +1); c2,c3: m + 8 */
#pragma unroll
    for (int s = 0; s < NM; s++) {
        float *dst = part + s * pstride + (int64_t)blockIdx.y * M * R;
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int64_t m = m0 + warp * 16 + g + half * 8;
            if (m >= M) continue;
#pragma unroll
            for (int n = 0; n < RP / 8; n++) {
                const int r = n * 8 + tq * 2;
                if (r < R)
                    *reinterpret_cast<float2 *>(dst + m * R + r) =
                        make_float2(acc[s][n][2 * half], acc[s][n][2 * half + 1]);
            }
        }
    }
#endif
}

/* G[s][m*sm + r*sr] += alpha * sum over chunks of part[s][chunk][m][r], chunks in order (from
 * 0.0f, one fma into G): the second launch of the weight gradient */
__global__ void k_lora_wgrad_reduce(lora_ptrs<float> G, const float *part, int n, int nchunks, int64_t M, int R,
                                    int64_t sm, int64_t sr, float alpha) {
    const int64_t per = M * R, total = per * n;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int s = (int)(i / per);
        const int64_t j = i - s * per;
        const float *ps = part + s * nchunks * per + j;
        float sum = 0.0f;
        for (int c = 0; c < nchunks; c++) sum += ps[(int64_t)c * per];
        const int64_t m = j / R, r = j % R;
        float *g = s == 0 ? G.p[0] : s == 1 ? G.p[1] : G.p[2];
        g[m * sm + r * sr] = __fmaf_rn(alpha, sum, g[m * sm + r * sr]);
    }
}

/* ---------------------------------------------------------------- addmul */
/* y(N,M) += alpha * sum_s drop_s(coef[s](N,R) @ W[s](R,M)) on tensor cores: a product with a
 * reduction only R long, which the CUDA-core kernels this replaced (k_lora_addmul,
 * k_lora_addmul_multi: in git history) spent most of their time on (R FMAs per output element
 * and module, plus unpacking W). A warp takes 16 tokens x 64 columns: per module, mma.sync with A =
 * coef rows (loaded straight from global) and B = W^T (16-bit, (M, R): each column's R values
 * contiguous), the mask applied in the fragment layout, the modules summed in f32; then the
 * tile goes through shared memory so that y is read and written in 16-byte pieces. */
#define ATC_WARPS 4
template <typename T, int R, int NM, bool SWB = false>
__global__ void __launch_bounds__(ATC_WARPS * 32) k_lora_addmul_tc(T *y, lora_ptrs<const T> coef, lora_ptrs<const T> WT,
                                                                   int64_t N, int64_t M, float alpha, float p,
                                                                   float inv, lora_keys key, const T *gate,
                                                                   const T *up, T *dgate, T *dup) {
#if __CUDA_ARCH__ >= 800
    keys_resolve<NM>(key, M);
    constexpr int KS = (R + 15) / 16; /* k-steps of 16 (rank 8: one, upper half zero) */
    __shared__ float tile[ATC_WARPS][16][64 + 4];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, tq = lane % 4;
    const int64_t t0 = (int64_t)blockIdx.y * 16, m0 = ((int64_t)blockIdx.x * ATC_WARPS + warp) * 64;
    /* this lane's four 8-column pieces of y (row i / 8, columns (i % 8) * 8), loaded first so
     * that their latency hides behind the products */
    uint4 yv[4];
    float res[4][8];
#pragma unroll
    for (int u = 0; u < 4; u++) {
        const int i = lane + 32 * u;
        const int64_t t = t0 + i / 8, m = m0 + (i % 8) * 8;
        yv[u] = t < N && m < M ? *reinterpret_cast<const uint4 *>(y + t * M + m) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int q = 0; q < 8; q++) res[u][q] = 0.0f;
    }
#pragma unroll
    for (int s = 0; s < NM; s++) {
        float acc[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KS; kk++) {
            const int k0 = kk * 16 + 2 * tq;
            uint32_t a[4];
            const T *c0 = coef.p[s] + (t0 + g) * R, *c1 = coef.p[s] + (t0 + g + 8) * R;
            const bool r0 = t0 + g < N, r1 = t0 + g + 8 < N, hi = k0 + 8 < R;
            a[0] = r0 ? *reinterpret_cast<const uint32_t *>(c0 + k0) : 0u;
            a[1] = r1 ? *reinterpret_cast<const uint32_t *>(c1 + k0) : 0u;
            a[2] = r0 && hi ? *reinterpret_cast<const uint32_t *>(c0 + k0 + 8) : 0u;
            a[3] = r1 && hi ? *reinterpret_cast<const uint32_t *>(c1 + k0 + 8) : 0u;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const int64_t col = m0 + j * 8 + g;
                uint32_t b[2] = {0u, 0u};
                if (col < M) {
                    const T *w = WT.p[s] + col * R;
                    b[0] = __ldg(reinterpret_cast<const unsigned int *>(w + k0));
                    if (hi) b[1] = __ldg(reinterpret_cast<const unsigned int *>(w + k0 + 8));
                }
                mma16816<T>(acc[j], a, b);
            }
        }
        /* acc[j]: (row g, cols 8j + 2tq, +1) and (row g + 8, the same cols) into the warp's tile,
         * then each lane takes its pieces back with the module's mask (one draw per 4 columns) */
        if (s > 0) __syncwarp();
#pragma unroll
        for (int j = 0; j < 8; j++) {
            tile[warp][g][8 * j + 2 * tq] = acc[j][0];
            tile[warp][g][8 * j + 2 * tq + 1] = acc[j][1];
            tile[warp][g + 8][8 * j + 2 * tq] = acc[j][2];
            tile[warp][g + 8][8 * j + 2 * tq + 1] = acc[j][3];
        }
        __syncwarp();
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int i = lane + 32 * u, row = i / 8, c8 = (i % 8) * 8;
            float kf[8];
            if (p > 0.0f) keep8(key.k[s], (uint64_t)((t0 + row) * M + m0 + c8), p, inv, kf);
#pragma unroll
            for (int q = 0; q < 8; q++) res[u][q] += tile[warp][row][c8 + q] * (p > 0.0f ? kf[q] : 1.0f);
        }
    }
#pragma unroll
    for (int u = 0; u < 4; u++) {
        const int i = lane + 32 * u;
        const int64_t t = t0 + i / 8, m = m0 + (i % 8) * 8;
        if (t >= N || m >= M) continue;
        float f[8];
        lt_unpack8<T>(yv[u], f);
#pragma unroll
        for (int q = 0; q < 8; q++) f[q] += alpha * res[u][q];
        if (!SWB) {
            *reinterpret_cast<uint4 *>(y + t * M + m) = lt_pack8<T>(f);
            continue;
        }
        /* SWB: y is swiglu's output gradient; its 16-bit value goes through swiglu's backward
         * (as k_swiglu_bwd would read it back) into dgate and dup instead of being stored */
        lt_unpack8<T>(lt_pack8<T>(f), f);
        float gf[8], uf[8], dg[8], du[8];
        lt_unpack8<T>(*reinterpret_cast<const uint4 *>(gate + t * M + m), gf);
        lt_unpack8<T>(*reinterpret_cast<const uint4 *>(up + t * M + m), uf);
#pragma unroll
        for (int q = 0; q < 8; q++) lt_swiglu_bwd1(f[q], gf[q], uf[q], &dg[q], &du[q]);
        *reinterpret_cast<uint4 *>(dgate + t * M + m) = lt_pack8<T>(dg);
        *reinterpret_cast<uint4 *>(dup + t * M + m) = lt_pack8<T>(du);
    }
#endif
}

/* ---------------------------------------------------------------- launchers */
/* On (tensor-core kernels, cuda/NOTES.md v5); the test hook selects dropout + cuBLAS instead,
 * the path shapes without a kernel take (rank not 8/16/32, widths not multiples of 8, sm_75) */
static int g_skinny = 1;
void lt_cuda_lora_set_skinny(int on) { g_skinny = on ? 1 : 0; }
/* whether the current device runs the mma.sync kernels (compute capability 8.0+); on an older
 * one (sm_75) rowdot and wgrad are compiled empty, so the callers must take the cuBLAS path */
static int g_mma_ok = -1;

bool lt_cuda_lora_fast_ok(int64_t R, int64_t C, int64_t OC) {
    if (g_mma_ok < 0) {
        int d = 0, major = 0;
        g_mma_ok = cudaGetDevice(&d) == cudaSuccess &&
                   cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, d) == cudaSuccess && major >= 8;
    }
    return g_skinny && g_mma_ok && (R == 8 || R == 16 || R == 32) && C % 8 == 0 && OC % 8 == 0;
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

/* F<T, R, NM>(args) for the act type, rank (8, 16, 32; checked before) and module count (1..3) */
#define LORA_DISPATCH_N(F, T, RR, n, ...) do { \
    if ((n) == 1) F<T, RR, 1>(__VA_ARGS__); \
    else if ((n) == 2) F<T, RR, 2>(__VA_ARGS__); \
    else F<T, RR, 3>(__VA_ARGS__); } while (0)
#define LORA_DISPATCH_T(F, T, R, n, ...) do { \
    if ((R) == 8) LORA_DISPATCH_N(F, T, 8, n, __VA_ARGS__); \
    else if ((R) == 16) LORA_DISPATCH_N(F, T, 16, n, __VA_ARGS__); \
    else LORA_DISPATCH_N(F, T, 32, n, __VA_ARGS__); } while (0)
#define LORA_DISPATCH(F, bf, R, n, ...) do { \
    if (bf) LORA_DISPATCH_T(F, __nv_bfloat16, R, n, __VA_ARGS__); \
    else LORA_DISPATCH_T(F, __half, R, n, __VA_ARGS__); } while (0)

/* what every launcher checks: module count, rank, width, and (mma kernels) the architecture */
static lt_status lora_check(const lt_cuda *c, const char *what, int n, int64_t M, int64_t R, bool mma) {
    if (n < 1 || n > LT_LORA_MULTI)
        return lt_error(LT_ERR_INVALID_ARGUMENT, "lora %s: %d modules, expected 1 to %d", what, n, LT_LORA_MULTI);
    if (R != 8 && R != 16 && R != 32)
        return lt_error(LT_ERR_INTERNAL, "lora %s: rank %lld has no kernel (8, 16 or 32; check lt_cuda_lora_fast_ok)",
                        what, (long long)R);
    if (M % 8 != 0)
        return lt_error(LT_ERR_INTERNAL, "lora %s: %lld columns is not a multiple of 8 (check lt_cuda_lora_fast_ok)",
                        what, (long long)M);
    if (mma && c->cc < 80)
        return lt_error(LT_ERR_UNSUPPORTED,
                        "lora %s: the tensor-core kernels need compute capability 8.0 or newer (this GPU is %d.%d); "
                        "check lt_cuda_lora_fast_ok and take the cuBLAS path", what, c->cc / 10, c->cc % 10);
    return LT_OK;
}

static inline float keep_inv(float p) { return p > 0.0f ? 1.0f / (1.0f - p) : 1.0f; }

static lora_keys lora_keys_of(const lt_cuda *c, int n, uint64_t seed, const uint64_t *streams, int64_t M) {
    lora_keys k = {};
    k.dev = c->graph_capture ? c->drop_dev : NULL;
    for (int s = 0; s < n; s++) k.k[s] = k.dev ? streams[s] : lt_drop_key_rows(seed, streams[s], (uint64_t)M);
    return k;
}

template <typename T, int R, int NM>
static void rowdot_launch(lt_cuda *c, void *const *y, const void *x, const void *const *W, int64_t N, int64_t M,
                          float alpha, float p, const lora_keys &key) {
    lora_ptrs<T> yp = {};
    lora_ptrs<const T> wp = {};
    for (int s = 0; s < NM; s++) { yp.p[s] = (T *)y[s]; wp.p[s] = (const T *)W[s]; }
    const unsigned blocks = (unsigned)((N + 15) / 16);
    k_lora_rowdot<T, R, NM><<<blocks, RD_WARPS * 32, 0, c->stream>>>(yp, (const T *)x, wp, N, M, alpha, p,
                                                                    keep_inv(p), key);
}

lt_status lt_cuda_lora_rowdot_multi(lt_backend *be, int n, void *const *y, const void *x, const void *const *W,
                                    int64_t N, int64_t M, int64_t R, float alpha, float p, uint64_t seed,
                                    const uint64_t *streams) {
    lt_cuda *c = lt_cuda_of(be);
    LT_TRY(lora_check(c, "rowdot", n, M, R, true));
    if (N <= 0) return LT_OK;
    const bool bf = be->act_dtype == LT_DTYPE_BF16;
    const lora_keys key = lora_keys_of(c, n, seed, streams, M);
    const int slot = lt_prof_begin(c, LT_PROF_ROWDOT);
    LORA_DISPATCH(rowdot_launch, bf, R, n, c, y, x, W, N, M, alpha, p, key);
    LT_LAUNCH_CHECK("k_lora_rowdot");
    lt_prof_end(c, slot);
    return LT_OK;
}

lt_status lt_cuda_lora_rowdot(lt_backend *be, void *y, const void *x, const void *W, int64_t N, int64_t M, int64_t R,
                              float alpha, float p, uint64_t seed, uint64_t stream) {
    void *yy[1] = {y};
    const void *ww[1] = {W};
    return lt_cuda_lora_rowdot_multi(be, 1, yy, x, ww, N, M, R, alpha, p, seed, &stream);
}

template <typename T, int R, int NM>
static void wgrad_launch(lt_cuda *c, float *part, int64_t pstride, const void *x, const void *x2,
                         const void *const *coef, int64_t N, int64_t M, int chunk, int nchunks, float p,
                         const lora_keys &key) {
    lora_ptrs<const T> cp = {};
    for (int s = 0; s < NM; s++) cp.p[s] = (const T *)coef[s];
    dim3 grid((unsigned)((M + WG_BM - 1) / WG_BM), (unsigned)nchunks);
    if (NM == 1 && x2) /* x = swiglu(x, x2) */
        k_lora_wgrad<T, R, 1, true><<<grid, WG_THREADS, 0, c->stream>>>(part, pstride, (const T *)x, cp, N, M, chunk,
                                                                        p, keep_inv(p), key, (const T *)x2);
    else
        k_lora_wgrad<T, R, NM><<<grid, WG_THREADS, 0, c->stream>>>(part, pstride, (const T *)x, cp, N, M, chunk, p,
                                                                  keep_inv(p), key, (const T *)NULL);
}

/* G[s] (+)= alpha * drop_s(x)^T @ coef[s] with G[s][m*sm + r*sr]; part: scratch of
 * n*nchunks*M*R floats (nchunks from lt_cuda_lora_wg_chunks; the same nchunks gives the same
 * bits as single calls) */
static lt_status wgrad_any(lt_backend *be, int n, float *const *G, int64_t sm, int64_t sr, const void *x,
                           const void *x2, const void *const *coef, int64_t N, int64_t M, int64_t R, float alpha,
                           float p, uint64_t seed, const uint64_t *streams, float *part, int nchunks) {
    lt_cuda *c = lt_cuda_of(be);
    LT_TRY(lora_check(c, "wgrad", n, M, R, true));
    LT_CHECK_ARG(!x2 || n == 1, "lora wgrad: a swiglu input serves one module, not %d", n);
    if (N <= 0) return LT_OK;
    LT_CHECK_ARG(part && nchunks >= 1, "lora wgrad: no partial-sum scratch (%d chunks)", nchunks);
    /* whole shared-memory tiles per chunk */
    int chunk = (int)((N + nchunks - 1) / nchunks);
    chunk = (chunk + WG_BT - 1) / WG_BT * WG_BT;
    nchunks = (int)((N + chunk - 1) / chunk);
    const int64_t pstride = (int64_t)nchunks * M * R;
    const bool bf = be->act_dtype == LT_DTYPE_BF16;
    const lora_keys key = lora_keys_of(c, n, seed, streams, M);
    lora_ptrs<float> gp = {};
    for (int s = 0; s < n; s++) gp.p[s] = G[s];
    /* the masked x tiles hold the kept values unscaled: 1 / (1 - p) comes in with alpha */
    const float galpha = alpha * keep_inv(p);
    const int slot = lt_prof_begin(c, LT_PROF_WGRAD);
    LORA_DISPATCH(wgrad_launch, bf, R, n, c, part, pstride, x, x2, coef, N, M, chunk, nchunks, p, key);
    LT_LAUNCH_CHECK("k_lora_wgrad");
    k_lora_wgrad_reduce<<<lt_blocks(n * M * R, 256), 256, 0, c->stream>>>(gp, part, n, nchunks, M, (int)R, sm, sr,
                                                                         galpha);
    LT_LAUNCH_CHECK("k_lora_wgrad_reduce");
    lt_prof_end(c, slot);
    return LT_OK;
}

lt_status lt_cuda_lora_wgrad_multi(lt_backend *be, int n, float *const *G, int64_t sm, int64_t sr, const void *x,
                                   const void *const *coef, int64_t N, int64_t M, int64_t R, float alpha, float p,
                                   uint64_t seed, const uint64_t *streams, float *part, int nchunks) {
    return wgrad_any(be, n, G, sm, sr, x, NULL, coef, N, M, R, alpha, p, seed, streams, part, nchunks);
}

/* lt_cuda_lora_wgrad with x = swiglu(gate, up), made tile by tile as it is read: the bits of
 * swiglu_fwd into a buffer, then lt_cuda_lora_wgrad over it */
lt_status lt_cuda_lora_wgrad_swiglu(lt_backend *be, float *G, int64_t sm, int64_t sr, const void *gate,
                                    const void *up, const void *coef, int64_t N, int64_t M, int64_t R, float alpha,
                                    float p, uint64_t seed, uint64_t stream, float *part, int nchunks) {
    float *gg[1] = {G};
    const void *cc[1] = {coef};
    return wgrad_any(be, 1, gg, sm, sr, gate, up, cc, N, M, R, alpha, p, seed, &stream, part, nchunks);
}

/* G (+)= alpha * drop(x)^T @ coef with G[m*sm + r*sr]; part is scratch of nchunks*M*R floats */
lt_status lt_cuda_lora_wgrad(lt_backend *be, float *G, int64_t sm, int64_t sr, const void *x, const void *coef,
                             int64_t N, int64_t M, int64_t R, float alpha, float p, uint64_t seed, uint64_t stream,
                             float *part, int nchunks) {
    float *gg[1] = {G};
    const void *cc[1] = {coef};
    return lt_cuda_lora_wgrad_multi(be, 1, gg, sm, sr, x, cc, N, M, R, alpha, p, seed, &stream, part, nchunks);
}

/* y(N,M) += alpha * drop(coef(N,R) @ W(R,M)), W(r, m) = W[r*wr + m*wm] f32 (wm == 1 or wr == 1) */
lt_status lt_cuda_lora_addmul(lt_backend *be, void *y, const void *coef, const float *W, int64_t wr, int64_t wm,
                              int64_t N, int64_t M, int64_t R, float alpha, float p, uint64_t seed,
                              uint64_t stream) {
    const void *cc[1] = {coef};
    const float *ww[1] = {W};
    return lt_cuda_lora_addmul_multi(be, 1, y, cc, ww, wr, wm, N, M, R, alpha, p, seed, &stream);
}

template <typename T, int R, int NM>
static void addmul_tc_launch(lt_cuda *c, void *y, const void *const *coef, const void *const *wt, int64_t N, int64_t M,
                             float alpha, float p, const lora_keys &key) {
    lora_ptrs<const T> cp = {}, wp = {};
    for (int s = 0; s < NM; s++) { cp.p[s] = (const T *)coef[s]; wp.p[s] = (const T *)wt[s]; }
    dim3 grid((unsigned)((M + 64 * ATC_WARPS - 1) / (64 * ATC_WARPS)), (unsigned)((N + 15) / 16));
    k_lora_addmul_tc<T, R, NM><<<grid, ATC_WARPS * 32, 0, c->stream>>>(
        (T *)y, cp, wp, N, M, alpha, p, keep_inv(p), key, (const T *)NULL, (const T *)NULL, (T *)NULL, (T *)NULL);
}

template <typename T, int R>
static void addmul_swb_launch(lt_cuda *c, const void *y, const void *coef, const void *wt, int64_t N, int64_t M,
                              float alpha, float p, const lora_keys &key, const void *gate, const void *up, void *dgate,
                              void *dup) {
    lora_ptrs<const T> cp = {}, wp = {};
    cp.p[0] = (const T *)coef;
    wp.p[0] = (const T *)wt;
    dim3 grid((unsigned)((M + 64 * ATC_WARPS - 1) / (64 * ATC_WARPS)), (unsigned)((N + 15) / 16));
    k_lora_addmul_tc<T, R, 1, true><<<grid, ATC_WARPS * 32, 0, c->stream>>>(
        (T *)y, cp, wp, N, M, alpha, p, keep_inv(p), key, (const T *)gate, (const T *)up, (T *)dgate, (T *)dup);
}

/* y(N,M) += alpha * sum_s drop_s(coef[s](N,R) @ W[s](R,M)), one read and one rounding of y */
lt_status lt_cuda_lora_addmul_multi(lt_backend *be, int n, void *y, const void *const *coef, const float *const *W,
                                    int64_t wr, int64_t wm, int64_t N, int64_t M, int64_t R, float alpha, float p,
                                    uint64_t seed, const uint64_t *streams) {
    lt_cuda *c = lt_cuda_of(be);
    LT_TRY(lora_check(c, "addmul", n, M, R, true));
    LT_CHECK_ARG(wm == 1 || wr == 1, "lora addmul: W strides (%lld, %lld) need one of them 1", (long long)wr,
                 (long long)wm);
    if (N <= 0) return LT_OK;
    const bool bf = be->act_dtype == LT_DTYPE_BF16;
    const lora_keys key = lora_keys_of(c, n, seed, streams, M);
    /* W^T in 16 bits, (M, R): A (wm == 1, rows M apart) transposed, or B (wr == 1) as stored */
    const void *wt[LT_LORA_MULTI];
    for (int s = 0; s < n; s++)
        LT_TRY(wm == 1 ? lt_cuda_w16(be, W[s], R, M, 1, &wt[s]) : lt_cuda_w16(be, W[s], M, R, 0, &wt[s]));
    const int slot = lt_prof_begin(c, LT_PROF_ADDMUL);
    LORA_DISPATCH(addmul_tc_launch, bf, R, n, c, y, coef, wt, N, M, alpha, p, key);
    LT_LAUNCH_CHECK("k_lora_addmul_tc");
    lt_prof_end(c, slot);
    return LT_OK;
}

/* whether lt_cuda_lora_addmul_swiglu runs here (the tensor-core kernel: sm_80+) */
bool lt_cuda_lora_addmul_swiglu_ok(const lt_cuda *c) { return c->cc >= 80; }

/* lt_cuda_lora_addmul (one module, W = A as stored: wr = M, wm = 1) followed by swiglu_bwd:
 * y = dact + alpha drop(coef A), rounded, then dgate and dup from it, gate and up, in one pass;
 * y is read, not written. The bits of the two calls. LT_ERR_UNSUPPORTED where the tensor-core
 * kernel does not run (lt_cuda_lora_addmul_swiglu_ok: the caller composes the two). */
lt_status lt_cuda_lora_addmul_swiglu(lt_backend *be, const void *y, const void *coef, const float *A, int64_t N,
                                     int64_t M, int64_t R, float alpha, float p, uint64_t seed, uint64_t stream,
                                     const void *gate, const void *up, void *dgate, void *dup) {
    lt_cuda *c = lt_cuda_of(be);
    LT_TRY(lora_check(c, "addmul", 1, M, R, false));
    if (!lt_cuda_lora_addmul_swiglu_ok(c))
        return lt_error(LT_ERR_UNSUPPORTED, "lora addmul + swiglu backward: needs the tensor-core kernel");
    if (N <= 0) return LT_OK;
    const void *wt;
    LT_TRY(lt_cuda_w16(be, A, R, M, 1, &wt));
    const lora_keys key = lora_keys_of(c, 1, seed, &stream, M);
    const int slot = lt_prof_begin(c, LT_PROF_ADDMUL);
    if (be->act_dtype == LT_DTYPE_BF16) {
        if (R == 8) addmul_swb_launch<__nv_bfloat16, 8>(c, y, coef, wt, N, M, alpha, p, key, gate, up, dgate, dup);
        else if (R == 16) addmul_swb_launch<__nv_bfloat16, 16>(c, y, coef, wt, N, M, alpha, p, key, gate, up, dgate, dup);
        else addmul_swb_launch<__nv_bfloat16, 32>(c, y, coef, wt, N, M, alpha, p, key, gate, up, dgate, dup);
    } else {
        if (R == 8) addmul_swb_launch<__half, 8>(c, y, coef, wt, N, M, alpha, p, key, gate, up, dgate, dup);
        else if (R == 16) addmul_swb_launch<__half, 16>(c, y, coef, wt, N, M, alpha, p, key, gate, up, dgate, dup);
        else addmul_swb_launch<__half, 32>(c, y, coef, wt, N, M, alpha, p, key, gate, up, dgate, dup);
    }
    LT_LAUNCH_CHECK("k_lora_addmul_tc (swiglu backward)");
    lt_prof_end(c, slot);
    return LT_OK;
}

/* ---------------------------------------------------------------- test hooks */
/* C-callable for tests/cuda/test_cuda_ops.c (declared there): one multi call (multi = 1) or
 * n single calls on the same arguments (multi = 0). The wgrad hook uses lt_cuda_lora_wg_chunks(N, M) chunks, as the graph does, with
 * the partial sums in `scratch` (n * chunks * M * R floats) or, when NULL, in a buffer of its own
 * (then it waits for the stream). */
extern "C" int lt_cuda_lora_test_wg_chunks(int64_t N, int64_t M) { return lt_cuda_lora_wg_chunks(N, M); }

extern "C" lt_status lt_cuda_lora_test_rowdot(lt_backend *be, int multi, int n, void *const *y, const void *x,
                                              const void *const *W, int64_t N, int64_t M, int64_t R, float alpha,
                                              float p, uint64_t seed, const uint64_t *streams) {
    if (multi) return lt_cuda_lora_rowdot_multi(be, n, y, x, W, N, M, R, alpha, p, seed, streams);
    for (int s = 0; s < n; s++) LT_TRY(lt_cuda_lora_rowdot(be, y[s], x, W[s], N, M, R, alpha, p, seed, streams[s]));
    return LT_OK;
}

extern "C" lt_status lt_cuda_lora_test_wgrad(lt_backend *be, int multi, int n, float *const *G, int64_t sm, int64_t sr,
                                             const void *x, const void *const *coef, int64_t N, int64_t M, int64_t R,
                                             float alpha, float p, uint64_t seed, const uint64_t *streams,
                                             float *scratch) {
    lt_cuda *c = lt_cuda_of(be);
    const int nch = lt_cuda_lora_wg_chunks(N, M);
    if (scratch) { /* the caller's n * nch * M * R floats: no allocation, no wait (timing) */
        if (multi)
            return lt_cuda_lora_wgrad_multi(be, n, G, sm, sr, x, coef, N, M, R, alpha, p, seed, streams, scratch, nch);
        for (int s = 0; s < n; s++)
            LT_TRY(lt_cuda_lora_wgrad(be, G[s], sm, sr, x, coef[s], N, M, R, alpha, p, seed, streams[s], scratch, nch));
        return LT_OK;
    }
    void *part = NULL;
    LT_TRY(lt_cuda_malloc(c, (size_t)n * nch * M * R * 4, "lora wgrad test partial sums", &part));
    lt_status st = LT_OK;
    if (multi)
        st = lt_cuda_lora_wgrad_multi(be, n, G, sm, sr, x, coef, N, M, R, alpha, p, seed, streams, (float *)part, nch);
    else
        for (int s = 0; s < n && st == LT_OK; s++)
            st = lt_cuda_lora_wgrad(be, G[s], sm, sr, x, coef[s], N, M, R, alpha, p, seed, streams[s], (float *)part,
                                    nch);
    const cudaError_t e = cudaStreamSynchronize(c->stream);
    lt_cuda_free(c, part);
    if (st == LT_OK && e != cudaSuccess) st = lt_cuda_err(e, "lora wgrad test", __FILE__, __LINE__);
    return st;
}

extern "C" lt_status lt_cuda_lora_test_addmul(lt_backend *be, int multi, int n, void *y, const void *const *coef,
                                              const float *const *W, int64_t wr, int64_t wm, int64_t N, int64_t M,
                                              int64_t R, float alpha, float p, uint64_t seed, const uint64_t *streams) {
    if (multi) return lt_cuda_lora_addmul_multi(be, n, y, coef, W, wr, wm, N, M, R, alpha, p, seed, streams);
    for (int s = 0; s < n; s++)
        LT_TRY(lt_cuda_lora_addmul(be, y, coef[s], W[s], wr, wm, N, M, R, alpha, p, seed, streams[s]));
    return LT_OK;
}

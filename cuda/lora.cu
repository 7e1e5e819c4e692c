/* lora.cu - the skinny products of the LoRA branch (rank R <= 32) that cuBLAS runs poorly
 * because one side is only R wide while the reduction is thousands long:
 *   rowdot: y(N,R) = alpha * drop(x)(N,M) @ W(R,M)^T   (xa in forward, dxa in backward); the
 *           dropout mask is applied on the fly, so the dropped input is never written out;
 *   wgrad:  G += alpha * drop(x)(N,M)^T @ coef(N,R)     (dA and dB), split over token chunks
 *           into f32 partials that a second kernel sums in a fixed order (deterministic).
 * The mask is lt_rng_keep(seed, stream, t*M + m) as everywhere: one Philox block covers four
 * consecutive elements, so M must be a multiple of 8. Kernels first, launchers after. */
#include "cuda_common.h"
#include <stdlib.h>
extern "C" {
#include "core/rng.h"
}

/* ---------------------------------------------------------------- kernels */
#define RD_TOK 2    /* tokens per warp */
#define RD_WARPS 8
#define RD_CHUNK 256 /* columns of W staged in shared memory per step */

template <typename T> __device__ __forceinline__ void unpack8(const uint4 &v, float f[8]) {
    const T *h = reinterpret_cast<const T *>(&v);
#pragma unroll
    for (int j = 0; j < 8; j++) f[j] = lt_tof<T>(h[j]);
}

/* the keep decisions of elements i0..i0+7 (i0 % 4 == 0) */
__device__ __forceinline__ void keep8(uint64_t seed, uint64_t stream, uint64_t i0, float p, float inv, float s[8]) {
    const lt_u32x4 a = lt_philox(seed, stream, i0 >> 2), b = lt_philox(seed, stream, (i0 >> 2) + 1);
#pragma unroll
    for (int j = 0; j < 4; j++) {
        s[j] = (float)(a.v[j] >> 8) * (1.0f / 16777216.0f) >= p ? inv : 0.0f;
        s[j + 4] = (float)(b.v[j] >> 8) * (1.0f / 16777216.0f) >= p ? inv : 0.0f;
    }
}

template <typename T, int R>
__global__ void __launch_bounds__(RD_WARPS * 32) k_lora_rowdot(T *y, const T *x, const T *W, int64_t N, int64_t M,
                                                               float alpha, float p, float inv, uint64_t seed,
                                                               uint64_t stream) {
    __shared__ __align__(16) T ws[R * RD_CHUNK];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t t0 = (blockIdx.x * (int64_t)RD_WARPS + warp) * RD_TOK;
    float acc[RD_TOK][R];
#pragma unroll
    for (int k = 0; k < RD_TOK; k++)
#pragma unroll
        for (int r = 0; r < R; r++) acc[k][r] = 0.0f;
    for (int64_t c0 = 0; c0 < M; c0 += RD_CHUNK) {
        const int w = (int)(M - c0 < RD_CHUNK ? M - c0 : RD_CHUNK);
        __syncthreads();
        for (int i = threadIdx.x; i < R * (RD_CHUNK / 8); i += blockDim.x) {
            const int r = i / (RD_CHUNK / 8), c = (i % (RD_CHUNK / 8)) * 8;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (c < w) v = *reinterpret_cast<const uint4 *>(W + (int64_t)r * M + c0 + c);
            *reinterpret_cast<uint4 *>(ws + r * RD_CHUNK + c) = v;
        }
        __syncthreads();
        const int c = lane * 8;
        if (c >= w) continue;
        float xv[RD_TOK][8];
#pragma unroll
        for (int k = 0; k < RD_TOK; k++) {
            const int64_t t = t0 + k;
            if (t < N) {
                unpack8<T>(*reinterpret_cast<const uint4 *>(x + t * M + c0 + c), xv[k]);
                if (p > 0.0f) {
                    float s[8];
                    keep8(seed, stream, (uint64_t)(t * M + c0 + c), p, inv, s);
#pragma unroll
                    for (int j = 0; j < 8; j++) xv[k][j] *= s[j];
                }
            } else {
#pragma unroll
                for (int j = 0; j < 8; j++) xv[k][j] = 0.0f;
            }
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
            float wv[8];
            unpack8<T>(*reinterpret_cast<const uint4 *>(ws + r * RD_CHUNK + c), wv);
#pragma unroll
            for (int k = 0; k < RD_TOK; k++)
#pragma unroll
                for (int j = 0; j < 8; j++) acc[k][r] += xv[k][j] * wv[j];
        }
    }
#pragma unroll
    for (int k = 0; k < RD_TOK; k++)
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) acc[k][r] += __shfl_xor_sync(0xffffffffu, acc[k][r], o);
#pragma unroll
    for (int k = 0; k < RD_TOK; k++) {
        const int64_t t = t0 + k;
        if (t >= N) continue;
#pragma unroll
        for (int r = 0; r < R; r++)
            if (lane == r % 32) y[t * R + r] = lt_fromf<T>(alpha * acc[k][r]);
    }
}

/* part[chunk][m][r] = sum over the chunk's tokens of drop(x)[t][m] * coef[t][r]; each thread
 * owns 4 consecutive columns (one Philox block) */
#define WG_THREADS 64
template <typename T, int R>
__global__ void __launch_bounds__(WG_THREADS) k_lora_wgrad(float *part, const T *x, const T *coef, int64_t N,
                                                           int64_t M, int tok_chunk, float p, float inv,
                                                           uint64_t seed, uint64_t stream) {
    __shared__ float cs[64][R];
    const int64_t m0 = (blockIdx.x * (int64_t)WG_THREADS + threadIdx.x) * 4;
    const int64_t tb = (int64_t)blockIdx.y * tok_chunk;
    const int64_t te = tb + tok_chunk < N ? tb + tok_chunk : N;
    float acc[4][R];
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int r = 0; r < R; r++) acc[j][r] = 0.0f;
    for (int64_t ts = tb; ts < te; ts += 64) {
        const int nt = (int)(te - ts < 64 ? te - ts : 64);
        __syncthreads();
        for (int i = threadIdx.x; i < 64 * R; i += WG_THREADS) {
            const int tt = i / R, r = i % R;
            cs[tt][r] = tt < nt ? lt_tof<T>(coef[(ts + tt) * R + r]) : 0.0f;
        }
        __syncthreads();
        if (m0 >= M) continue;
        for (int tt = 0; tt < nt; tt++) {
            const int64_t t = ts + tt;
            const uint2 raw = *reinterpret_cast<const uint2 *>(x + t * M + m0);
            const T *h = reinterpret_cast<const T *>(&raw);
            float xv[4];
#pragma unroll
            for (int j = 0; j < 4; j++) xv[j] = lt_tof<T>(h[j]);
            if (p > 0.0f) {
                const lt_u32x4 rb = lt_philox(seed, stream, (uint64_t)(t * M + m0) >> 2);
#pragma unroll
                for (int j = 0; j < 4; j++) xv[j] *= (float)(rb.v[j] >> 8) * (1.0f / 16777216.0f) >= p ? inv : 0.0f;
            }
#pragma unroll
            for (int r = 0; r < R; r++) {
                const float cv = cs[tt][r];
#pragma unroll
                for (int j = 0; j < 4; j++) acc[j][r] += xv[j] * cv;
            }
        }
    }
    if (m0 >= M) return;
    float *dst = part + (int64_t)blockIdx.y * M * R + m0 * R;
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int r = 0; r < R; r++) dst[j * R + r] = acc[j][r];
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
/* Off by default: measured slower than dropout + cuBLAS on an H200 (cuda/NOTES.md, v3); on with
 * LT_CUDA_LORA_SKINNY=1 or the test hook, for tuning. */
static int g_skinny = -1;
void lt_cuda_lora_set_skinny(int on) { g_skinny = on ? 1 : 0; }

bool lt_cuda_lora_fast_ok(int64_t R, int64_t C, int64_t OC) {
    if (g_skinny < 0) g_skinny = getenv("LT_CUDA_LORA_SKINNY") && atoi(getenv("LT_CUDA_LORA_SKINNY")) > 0;
    return g_skinny && (R == 8 || R == 16 || R == 32) && C % 8 == 0 && OC % 8 == 0;
}

/* token chunks of the split-K weight gradients: about 64 tokens each, at most 256 */
int lt_cuda_lora_wg_chunks(int64_t N) {
    int64_t c = N / 64;
    return (int)(c < 1 ? 1 : c > 256 ? 256 : c);
}

template <typename T, int R>
static lt_status rowdot_t(lt_cuda *c, void *y, const void *x, const void *W, int64_t N, int64_t M, float alpha,
                          float p, uint64_t seed, uint64_t stream) {
    const unsigned blocks = (unsigned)((N + RD_WARPS * RD_TOK - 1) / (RD_WARPS * RD_TOK));
    k_lora_rowdot<T, R><<<blocks, RD_WARPS * 32, 0, c->stream>>>((T *)y, (const T *)x, (const T *)W, N, M, alpha, p,
                                                                p > 0.0f ? 1.0f / (1.0f - p) : 1.0f, seed, stream);
    LT_LAUNCH_CHECK("k_lora_rowdot");
    return LT_OK;
}

lt_status lt_cuda_lora_rowdot(lt_backend *be, void *y, const void *x, const void *W, int64_t N, int64_t M, int64_t R,
                              float alpha, float p, uint64_t seed, uint64_t stream) {
    if (N <= 0) return LT_OK;
    lt_cuda *c = lt_cuda_of(be);
    const bool bf = be->act_dtype == LT_DTYPE_BF16;
#define RD(TT, RR) return rowdot_t<TT, RR>(c, y, x, W, N, M, alpha, p, seed, stream)
    if (R == 8) { if (bf) RD(__nv_bfloat16, 8); RD(__half, 8); }
    if (R == 16) { if (bf) RD(__nv_bfloat16, 16); RD(__half, 16); }
    if (R == 32) { if (bf) RD(__nv_bfloat16, 32); RD(__half, 32); }
#undef RD
    return lt_error(LT_ERR_INTERNAL, "lora rowdot: rank %lld has no kernel", (long long)R);
}

template <typename T, int R>
static void wgrad_launch(lt_cuda *c, float *part, const void *x, const void *coef, int64_t N, int64_t M, int chunk,
                         int nchunks, float p, uint64_t seed, uint64_t stream) {
    dim3 grid((unsigned)((M / 4 + WG_THREADS - 1) / WG_THREADS), (unsigned)nchunks);
    k_lora_wgrad<T, R><<<grid, WG_THREADS, 0, c->stream>>>(part, (const T *)x, (const T *)coef, N, M, chunk, p,
                                                          p > 0.0f ? 1.0f / (1.0f - p) : 1.0f, seed, stream);
}

/* G (+)= alpha * drop(x)^T @ coef with G[m*sm + r*sr]; part is scratch of nchunks*M*R floats */
lt_status lt_cuda_lora_wgrad(lt_backend *be, float *G, int64_t sm, int64_t sr, const void *x, const void *coef,
                             int64_t N, int64_t M, int64_t R, float alpha, float p, uint64_t seed, uint64_t stream,
                             float *part, int nchunks) {
    if (N <= 0) return LT_OK;
    lt_cuda *c = lt_cuda_of(be);
    const int chunk = (int)((N + nchunks - 1) / nchunks);
    nchunks = (int)((N + chunk - 1) / chunk);
    const bool bf = be->act_dtype == LT_DTYPE_BF16;
#define WG(TT, RR) wgrad_launch<TT, RR>(c, part, x, coef, N, M, chunk, nchunks, p, seed, stream)
    if (R == 8) { if (bf) WG(__nv_bfloat16, 8); else WG(__half, 8); }
    else if (R == 16) { if (bf) WG(__nv_bfloat16, 16); else WG(__half, 16); }
    else if (R == 32) { if (bf) WG(__nv_bfloat16, 32); else WG(__half, 32); }
    else return lt_error(LT_ERR_INTERNAL, "lora wgrad: rank %lld has no kernel", (long long)R);
#undef WG
    LT_LAUNCH_CHECK("k_lora_wgrad");
    k_lora_wgrad_reduce<<<lt_blocks(M * R, 256), 256, 0, c->stream>>>(G, part, nchunks, M, (int)R, sm, sr, alpha);
    LT_LAUNCH_CHECK("k_lora_wgrad_reduce");
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

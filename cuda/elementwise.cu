/* elementwise.cu - the per-element and per-row layers on the GPU: f32 <-> act conversion,
 * RMSNorm forward/backward, half-split RoPE and its inverse, SwiGLU forward/backward, add,
 * bias add and the LoRA dropout (mask from lt_rng_keep, the same numbers as the CPU).
 * All arithmetic is f32; act buffers are bf16 or fp16. Kernels first, launchers after. */
#include "cuda_common.h"
#include <stdlib.h>
#include <string.h>
extern "C" {
#include "core/rng.h"
}

/* ---------------------------------------------------------------- kernels */
template <typename T>
__global__ void k_to_act(T *dst, const float *src, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = lt_fromf<T>(src[i]);
}
template <typename T>
__global__ void k_from_act(float *dst, const T *src, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = lt_tof<T>(src[i]);
}

/* block-wide sum of one float per thread (blockDim a multiple of 32, <= 1024) */
__device__ __forceinline__ float block_sum(float v, float *shared32) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();
    if (lane == 0) shared32[warp] = v;
    __syncthreads();
    int nw = blockDim.x / 32;
    float t = lane < nw ? shared32[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
    return t;
}

/* one block per row: out = w * (x * rstd) */
template <typename T>
__global__ void k_rmsnorm_fwd(T *out, float *rstd, const T *inp, const float *w, int64_t C, float eps) {
    __shared__ float red[32];
    const T *x = inp + blockIdx.x * C;
    T *y = out + blockIdx.x * C;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) { float v = lt_tof<T>(x[i]); ss += v * v; }
    ss = block_sum(ss, red);
    const float r = 1.0f / sqrtf(ss / (float)C + eps);
    if (threadIdx.x == 0) rstd[blockIdx.x] = r;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) y[i] = lt_fromf<T>(w[i] * (lt_tof<T>(x[i]) * r));
}

/* dx_i += r * w_i * g_i - x_i * r^3 / C * sum_k g_k w_k x_k */
template <typename T>
__global__ void k_rmsnorm_bwd(T *dinp, const T *dout, const T *inp, const float *w, const float *rstd, int64_t C) {
    __shared__ float red[32];
    const T *x = inp + blockIdx.x * C, *g = dout + blockIdx.x * C;
    T *dx = dinp + blockIdx.x * C;
    float dot = 0.0f;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) dot += lt_tof<T>(g[i]) * w[i] * lt_tof<T>(x[i]);
    dot = block_sum(dot, red);
    const float r = rstd[blockIdx.x];
    const float k = dot * r * r * r / (float)C;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x)
        dx[i] = lt_fromf<T>(lt_tof<T>(dx[i]) + (r * w[i] * lt_tof<T>(g[i]) - lt_tof<T>(x[i]) * k));
}

/* RMSNorm with one warp per row (8 rows per 256-thread block): the row stays in registers as
 * 16-byte pieces (C % 8 == 0, C <= 32 * 8 * NV_MAX), one warp-shuffle sum, no block barrier.
 * The block-per-row kernels above made 4096 blocks of 512 threads for a 1536-wide row and ran
 * at ~1/5 of the memory bandwidth. */
#define NV_MAX 16
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ void load_w8(const float *w, int64_t c, float f[8]) {
    const float4 a = __ldg(reinterpret_cast<const float4 *>(w + c)), b = __ldg(reinterpret_cast<const float4 *>(w + c + 4));
    f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w; f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
}

template <typename T, int NV>
__global__ void __launch_bounds__(256) k_rmsnorm_fwd_w(T *out, float *rstd, const T *inp, const float *w, int64_t N,
                                                       int64_t C, float eps) {
    const int64_t row = (int64_t)blockIdx.x * 8 + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= N) return;
    const int64_t nvec = C / 8;
    const uint4 *x = reinterpret_cast<const uint4 *>(inp + row * C);
    uint4 xv[NV];
    float ss = 0.0f;
#pragma unroll
    for (int v = 0; v < NV; v++) {
        const int64_t i = v * 32 + lane;
        if (i < nvec) {
            xv[v] = x[i];
            float f[8];
            lt_unpack8<T>(xv[v], f);
#pragma unroll
            for (int j = 0; j < 8; j++) ss += f[j] * f[j];
        }
    }
    ss = warp_sum(ss);
    const float r = 1.0f / sqrtf(ss / (float)C + eps);
    if (lane == 0) rstd[row] = r;
    uint4 *y = reinterpret_cast<uint4 *>(out + row * C);
#pragma unroll
    for (int v = 0; v < NV; v++) {
        const int64_t i = v * 32 + lane;
        if (i < nvec) {
            float f[8], wf[8];
            lt_unpack8<T>(xv[v], f);
            load_w8(w, i * 8, wf);
#pragma unroll
            for (int j = 0; j < 8; j++) f[j] = wf[j] * (f[j] * r);
            y[i] = lt_pack8<T>(f);
        }
    }
}

template <typename T, int NV>
__global__ void __launch_bounds__(256) k_rmsnorm_bwd_w(T *dinp, const T *dout, const T *inp, const float *w,
                                                       const float *rstd, int64_t N, int64_t C) {
    const int64_t row = (int64_t)blockIdx.x * 8 + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= N) return;
    const int64_t nvec = C / 8;
    const uint4 *x = reinterpret_cast<const uint4 *>(inp + row * C);
    const uint4 *g = reinterpret_cast<const uint4 *>(dout + row * C);
    uint4 xv[NV], gv[NV];
    float dot = 0.0f;
#pragma unroll
    for (int v = 0; v < NV; v++) {
        const int64_t i = v * 32 + lane;
        if (i < nvec) {
            xv[v] = x[i];
            gv[v] = g[i];
            float xf[8], gf[8], wf[8];
            lt_unpack8<T>(xv[v], xf);
            lt_unpack8<T>(gv[v], gf);
            load_w8(w, i * 8, wf);
#pragma unroll
            for (int j = 0; j < 8; j++) dot += gf[j] * wf[j] * xf[j];
        }
    }
    dot = warp_sum(dot);
    const float r = rstd[row];
    const float k = dot * r * r * r / (float)C;
    uint4 *dx = reinterpret_cast<uint4 *>(dinp + row * C);
#pragma unroll
    for (int v = 0; v < NV; v++) {
        const int64_t i = v * 32 + lane;
        if (i < nvec) {
            float xf[8], gf[8], wf[8], df[8];
            lt_unpack8<T>(xv[v], xf);
            lt_unpack8<T>(gv[v], gf);
            lt_unpack8<T>(dx[i], df);
            load_w8(w, i * 8, wf);
#pragma unroll
            for (int j = 0; j < 8; j++) df[j] += r * wf[j] * gf[j] - xf[j] * k;
            dx[i] = lt_pack8<T>(df);
        }
    }
}

/* the warp-per-row kernels serve rows of 16-byte pieces up to 32 x NV_MAX of them */
static bool norm_warp_ok(int64_t C) { return C % 8 == 0 && C / 8 <= 32 * NV_MAX; }

/* 16-byte pieces per lane for a row of C: the kernels are instantiated for the exact count of
 * common widths (1536 -> 6), so that the row's registers are no more than it needs */
static int norm_pieces(int64_t C) {
    const int v = (int)((C / 8 + 31) / 32);
    return v <= 8 ? v : v <= 12 ? 12 : NV_MAX;
}

/* one block per token; cos/sin of the token's angles in shared memory, then every head */
template <typename T>
__global__ void k_rope(T *x, const int32_t *pos, int64_t H, int64_t HD, float theta, int dir) {
    extern __shared__ float cs[]; /* [half] cos, then [half] sin */
    const int64_t half = HD / 2;
    float *sn = cs + half;
    const float p = (float)pos[blockIdx.x];
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
        const float inv = 1.0f / powf(theta, (float)(2 * i) / (float)HD);
        float s, c;
        sincosf(p * inv, &s, &c);
        cs[i] = c; sn[i] = s;
    }
    __syncthreads();
    T *base = x + blockIdx.x * H * HD;
    for (int64_t j = threadIdx.x; j < H * half; j += blockDim.x) {
        const int64_t h = j / half, i = j % half;
        T *v = base + h * HD;
        const float a = lt_tof<T>(v[i]), b = lt_tof<T>(v[i + half]);
        float lo, hi;
        if (dir > 0) { lo = a * cs[i] - b * sn[i]; hi = b * cs[i] + a * sn[i]; }
        else { lo = a * cs[i] + b * sn[i]; hi = b * cs[i] - a * sn[i]; }
        v[i] = lt_fromf<T>(lo);
        v[i + half] = lt_fromf<T>(hi);
    }
}

/* 4 elements per thread with 8-byte accesses when n % 4 == 0 (every quad aligned), else 1 */
#define LT_VEC4_LOOP(n, ...)                                                                              \
    if (((n) & 3) == 0) {                                                                                  \
        for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < (n) / 4;                     \
             q += (int64_t)gridDim.x * blockDim.x) {                                                       \
            const int64_t i0 = q * 4; const int W = 4; __VA_ARGS__                                                \
        }                                                                                                  \
    } else {                                                                                               \
        for (int64_t i0 = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i0 < (n);                       \
             i0 += (int64_t)gridDim.x * blockDim.x) { const int W = 1; __VA_ARGS__ }                              \
    }

template <typename T> struct vec4 { T v[4]; };
template <typename T> __device__ __forceinline__ vec4<T> ld4(const T *p, int W) {
    vec4<T> r;
    if (W == 4) *reinterpret_cast<uint2 *>(r.v) = *reinterpret_cast<const uint2 *>(p);
    else r.v[0] = p[0];
    return r;
}
template <typename T> __device__ __forceinline__ void st4(T *p, const vec4<T> &r, int W) {
    if (W == 4) *reinterpret_cast<uint2 *>(p) = *reinterpret_cast<const uint2 *>(r.v);
    else p[0] = r.v[0];
}

template <typename T>
__global__ void k_swiglu_fwd(T *out, const T *gate, const T *up, int64_t n) {
    LT_VEC4_LOOP(n, {
        vec4<T> g = ld4(gate + i0, W), u = ld4(up + i0, W), o;
        for (int j = 0; j < W; j++) {
            o.v[j] = lt_fromf<T>(lt_silu_mul(lt_tof<T>(g.v[j]), lt_tof<T>(u.v[j])));
        }
        st4(out + i0, o, W);
    })
}
template <typename T>
__global__ void k_swiglu_bwd(T *dgate, T *dup, const T *dout, const T *gate, const T *up, int64_t n) {
    LT_VEC4_LOOP(n, {
        vec4<T> g = ld4(gate + i0, W), u = ld4(up + i0, W), d = ld4(dout + i0, W), dg, du;
        for (int j = 0; j < W; j++) {
            float dgf, duf;
            lt_swiglu_bwd1(lt_tof<T>(d.v[j]), lt_tof<T>(g.v[j]), lt_tof<T>(u.v[j]), &dgf, &duf);
            du.v[j] = lt_fromf<T>(duf);
            dg.v[j] = lt_fromf<T>(dgf);
        }
        st4(dup + i0, du, W);
        st4(dgate + i0, dg, W);
    })
}
template <typename T>
__global__ void k_add(T *out, const T *a, const T *b, int64_t n) {
    LT_VEC4_LOOP(n, {
        vec4<T> x = ld4(a + i0, W), y = ld4(b + i0, W), o;
        for (int j = 0; j < W; j++) o.v[j] = lt_fromf<T>(lt_tof<T>(x.v[j]) + lt_tof<T>(y.v[j]));
        st4(out + i0, o, W);
    })
}
template <typename T>
__global__ void k_bias_add(T *out, const float *bias, int64_t N, int64_t OC) {
    const int64_t n = N * OC;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        out[i] = lt_fromf<T>(lt_tof<T>(out[i]) + bias[i % OC]);
}
/* dst = (dst +) keep(i) ? src * 1/(1-p) : 0, index i = token*C + feature (the key of
 * lt_drop_key_rows: a stream's row offset counts rows of C). One lt_drop_bits draw
 * gives the four 16-bit numbers of elements 4j..4j+3 (lt_rng_keep's mapping), so each thread
 * takes four consecutive elements. */
template <typename T>
__global__ void k_dropout(T *dst, const T *src, int64_t n, int64_t C, float p, float inv_keep, uint64_t seed,
                          uint64_t stream, int accumulate, const uint64_t *kdev) {
    const int64_t nq = (n + 3) / 4;
    /* kdev: captured into a CUDA graph, (seed, stream xor) come from device memory (lora.cu) */
    const uint64_t key = kdev ? lt_drop_key_rows(kdev[0], stream ^ kdev[1], (uint64_t)C)
                              : lt_drop_key_rows(seed, stream, (uint64_t)C);
    const uint32_t thr = lt_drop_threshold(p);
    for (int64_t qi = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; qi < nq; qi += (int64_t)gridDim.x * blockDim.x) {
        const uint64_t r = lt_drop_bits(key, (uint64_t)qi);
        const int64_t i0 = qi * 4;
        if (i0 + 4 <= n && (n & 3) == 0) {
            /* 8-byte vector access: n divisible by 4 keeps every quad aligned */
            uint2 sv = *reinterpret_cast<const uint2 *>(src + i0);
            const T *sp = reinterpret_cast<const T *>(&sv);
            uint2 dv;
            T *dp = reinterpret_cast<T *>(&dv);
            if (accumulate) dv = *reinterpret_cast<const uint2 *>(dst + i0);
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const bool keep = (uint32_t)((r >> (16 * j)) & 0xFFFFu) >= thr;
                const float v = keep ? lt_tof<T>(sp[j]) * inv_keep : 0.0f;
                dp[j] = lt_fromf<T>(accumulate ? lt_tof<T>(dp[j]) + v : v);
            }
            *reinterpret_cast<uint2 *>(dst + i0) = dv;
        } else {
            for (int j = 0; j < 4 && i0 + j < n; j++) {
                const bool keep = (uint32_t)((r >> (16 * j)) & 0xFFFFu) >= thr;
                const float v = keep ? lt_tof<T>(src[i0 + j]) * inv_keep : 0.0f;
                dst[i0 + j] = lt_fromf<T>(accumulate ? lt_tof<T>(dst[i0 + j]) + v : v);
            }
        }
    }
}

/* ---------------------------------------------------------------- launchers */
#define LT_EW_THREADS 256

lt_status lt_cuda_to_act(lt_backend *be, void *dst, const float *src, int64_t n) {
    if (n <= 0) return LT_OK;
    cudaStream_t s = lt_cuda_of(be)->stream;
    if (be->act_dtype == LT_DTYPE_BF16)
        k_to_act<<<lt_blocks(n, LT_EW_THREADS), LT_EW_THREADS, 0, s>>>((__nv_bfloat16 *)dst, src, n);
    else
        k_to_act<<<lt_blocks(n, LT_EW_THREADS), LT_EW_THREADS, 0, s>>>((__half *)dst, src, n);
    LT_LAUNCH_CHECK("k_to_act");
    return LT_OK;
}
lt_status lt_cuda_f32_to_act(lt_backend *be, void *dst, const float *src, int64_t n) {
    return lt_cuda_to_act(be, dst, src, n);
}

lt_status lt_cuda_from_act(lt_backend *be, float *dst, const void *src, int64_t n) {
    if (n <= 0) return LT_OK;
    lt_cuda_w16_invalidate(lt_cuda_of(be), dst, (size_t)n * 4);
    cudaStream_t s = lt_cuda_of(be)->stream;
    if (be->act_dtype == LT_DTYPE_BF16)
        k_from_act<<<lt_blocks(n, LT_EW_THREADS), LT_EW_THREADS, 0, s>>>(dst, (const __nv_bfloat16 *)src, n);
    else
        k_from_act<<<lt_blocks(n, LT_EW_THREADS), LT_EW_THREADS, 0, s>>>(dst, (const __half *)src, n);
    LT_LAUNCH_CHECK("k_from_act");
    return LT_OK;
}

static int row_threads(int64_t C) { return C >= 1024 ? 512 : C >= 256 ? 256 : 64; }

lt_status lt_cuda_rmsnorm_fwd(lt_backend *be, void *out, float *rstd, const void *inp, const float *w, int64_t N,
                              int64_t C, float eps) {
    if (N <= 0) return LT_OK;
    LT_CHECK_ARG(N < (1ll << 31), "rmsnorm: %lld rows is too many", (long long)N);
    cudaStream_t s = lt_cuda_of(be)->stream;
    if (norm_warp_ok(C)) {
        const unsigned g = (unsigned)((N + 7) / 8);
        const bool bf = be->act_dtype == LT_DTYPE_BF16;
#define NF(NV)                                                                                                     \
    case NV:                                                                                                       \
        if (bf) k_rmsnorm_fwd_w<__nv_bfloat16, NV><<<g, 256, 0, s>>>((__nv_bfloat16 *)out, rstd,                   \
                                                                      (const __nv_bfloat16 *)inp, w, N, C, eps);   \
        else k_rmsnorm_fwd_w<__half, NV><<<g, 256, 0, s>>>((__half *)out, rstd, (const __half *)inp, w, N, C, eps); \
        break;
        switch (norm_pieces(C)) { NF(1) NF(2) NF(3) NF(4) NF(5) NF(6) NF(7) NF(8) NF(12) default: NF(NV_MAX) }
#undef NF
        LT_LAUNCH_CHECK("k_rmsnorm_fwd_w");
        return LT_OK;
    }
    int th = row_threads(C);
    if (be->act_dtype == LT_DTYPE_BF16)
        k_rmsnorm_fwd<<<(unsigned)N, th, 0, s>>>((__nv_bfloat16 *)out, rstd, (const __nv_bfloat16 *)inp, w, C, eps);
    else
        k_rmsnorm_fwd<<<(unsigned)N, th, 0, s>>>((__half *)out, rstd, (const __half *)inp, w, C, eps);
    LT_LAUNCH_CHECK("k_rmsnorm_fwd");
    return LT_OK;
}

lt_status lt_cuda_rmsnorm_bwd(lt_backend *be, void *dinp, const void *dout, const void *inp, const float *w,
                              const float *rstd, int64_t N, int64_t C) {
    if (N <= 0) return LT_OK;
    cudaStream_t s = lt_cuda_of(be)->stream;
    if (norm_warp_ok(C)) {
        const unsigned g = (unsigned)((N + 7) / 8);
        const bool bf = be->act_dtype == LT_DTYPE_BF16;
#define NB(NV)                                                                                                     \
    case NV:                                                                                                       \
        if (bf) k_rmsnorm_bwd_w<__nv_bfloat16, NV><<<g, 256, 0, s>>>((__nv_bfloat16 *)dinp,                        \
                                                                      (const __nv_bfloat16 *)dout,                 \
                                                                      (const __nv_bfloat16 *)inp, w, rstd, N, C);  \
        else k_rmsnorm_bwd_w<__half, NV><<<g, 256, 0, s>>>((__half *)dinp, (const __half *)dout,                   \
                                                           (const __half *)inp, w, rstd, N, C);                    \
        break;
        switch (norm_pieces(C)) { NB(1) NB(2) NB(3) NB(4) NB(5) NB(6) NB(7) NB(8) NB(12) default: NB(NV_MAX) }
#undef NB
        LT_LAUNCH_CHECK("k_rmsnorm_bwd_w");
        return LT_OK;
    }
    int th = row_threads(C);
    if (be->act_dtype == LT_DTYPE_BF16)
        k_rmsnorm_bwd<<<(unsigned)N, th, 0, s>>>((__nv_bfloat16 *)dinp, (const __nv_bfloat16 *)dout,
                                                  (const __nv_bfloat16 *)inp, w, rstd, C);
    else
        k_rmsnorm_bwd<<<(unsigned)N, th, 0, s>>>((__half *)dinp, (const __half *)dout, (const __half *)inp, w,
                                                  rstd, C);
    LT_LAUNCH_CHECK("k_rmsnorm_bwd");
    return LT_OK;
}

/* Eight rotation pairs per thread with 16-byte accesses (HD % 16 == 0): unit u = (token, head,
 * i0) rotates elements i0..i0+7 with i0+half..i0+half+7 of one head. The frequencies are the
 * per-block table of k_rope's formula; the angles are computed per element as there. */
template <typename T>
__global__ void __launch_bounds__(256) k_rope8(T *x, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                                               float theta, int dir) {
    __shared__ float inv[512];
    const int64_t half = HD / 2, per_head = half / 8, units = N * H * per_head;
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x) inv[i] = 1.0f / powf(theta, (float)(2 * i) / (float)HD);
    __syncthreads();
    for (int64_t u = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; u < units; u += (int64_t)gridDim.x * blockDim.x) {
        const int64_t t = u / (H * per_head), rem = u % (H * per_head), h = rem / per_head, i0 = (rem % per_head) * 8;
        T *v = x + (t * H + h) * HD;
        const uint4 lo4 = *reinterpret_cast<const uint4 *>(v + i0), hi4 = *reinterpret_cast<const uint4 *>(v + i0 + half);
        float a[8], b[8];
        lt_unpack8<T>(lo4, a);
        lt_unpack8<T>(hi4, b);
        const float p = (float)pos[t];
#pragma unroll
        for (int j = 0; j < 8; j++) {
            float sn, cs;
            sincosf(p * inv[i0 + j], &sn, &cs);
            const float lo = dir > 0 ? a[j] * cs - b[j] * sn : a[j] * cs + b[j] * sn;
            const float hi = dir > 0 ? b[j] * cs + a[j] * sn : b[j] * cs - a[j] * sn;
            a[j] = lo;
            b[j] = hi;
        }
        *reinterpret_cast<uint4 *>(v + i0) = lt_pack8<T>(a);
        *reinterpret_cast<uint4 *>(v + i0 + half) = lt_pack8<T>(b);
    }
}

/* one block per token (k_rope), or k_rope8 when the head dimension allows 16-byte accesses */
static lt_status rope(lt_backend *be, void *x, const int32_t *pos, int64_t N, int64_t H, int64_t HD, float theta,
                      int dir) {
    LT_CHECK_ARG(HD > 0 && HD % 2 == 0 && HD <= 1024, "rope: head dim %lld must be even and at most 1024",
                 (long long)HD);
    if (N <= 0) return LT_OK;
    cudaStream_t s = lt_cuda_of(be)->stream;
    const bool bf = be->act_dtype == LT_DTYPE_BF16;
    if (HD % 16 == 0) {
        const unsigned g = lt_blocks(N * H * (HD / 16), 256);
        if (bf) k_rope8<<<g, 256, 0, s>>>((__nv_bfloat16 *)x, pos, N, H, HD, theta, dir);
        else k_rope8<<<g, 256, 0, s>>>((__half *)x, pos, N, H, HD, theta, dir);
        LT_LAUNCH_CHECK("k_rope8");
        return LT_OK;
    }
    size_t smem = (size_t)HD * sizeof(float);
    int th = H * HD / 2 >= 256 ? 256 : 64;
    if (bf)
        k_rope<<<(unsigned)N, th, smem, s>>>((__nv_bfloat16 *)x, pos, H, HD, theta, dir);
    else
        k_rope<<<(unsigned)N, th, smem, s>>>((__half *)x, pos, H, HD, theta, dir);
    LT_LAUNCH_CHECK("k_rope");
    return LT_OK;
}
lt_status lt_cuda_rope_fwd(lt_backend *be, void *x, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                           float theta) {
    return rope(be, x, pos, N, H, HD, theta, +1);
}
lt_status lt_cuda_rope_bwd(lt_backend *be, void *dx, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                           float theta) {
    return rope(be, dx, pos, N, H, HD, theta, -1);
}

lt_status lt_cuda_swiglu_fwd(lt_backend *be, void *out, const void *gate, const void *up, int64_t n) {
    if (n <= 0) return LT_OK;
    cudaStream_t s = lt_cuda_of(be)->stream;
    if (be->act_dtype == LT_DTYPE_BF16)
        k_swiglu_fwd<<<lt_blocks((n + 3) / 4, LT_EW_THREADS), LT_EW_THREADS, 0, s>>>(
            (__nv_bfloat16 *)out, (const __nv_bfloat16 *)gate, (const __nv_bfloat16 *)up, n);
    else
        k_swiglu_fwd<<<lt_blocks((n + 3) / 4, LT_EW_THREADS), LT_EW_THREADS, 0, s>>>((__half *)out, (const __half *)gate,
                                                                             (const __half *)up, n);
    LT_LAUNCH_CHECK("k_swiglu_fwd");
    return LT_OK;
}

lt_status lt_cuda_swiglu_bwd(lt_backend *be, void *dgate, void *dup, const void *dout, const void *gate,
                             const void *up, int64_t n) {
    if (n <= 0) return LT_OK;
    cudaStream_t s = lt_cuda_of(be)->stream;
    if (be->act_dtype == LT_DTYPE_BF16)
        k_swiglu_bwd<<<lt_blocks((n + 3) / 4, LT_EW_THREADS), LT_EW_THREADS, 0, s>>>(
            (__nv_bfloat16 *)dgate, (__nv_bfloat16 *)dup, (const __nv_bfloat16 *)dout, (const __nv_bfloat16 *)gate,
            (const __nv_bfloat16 *)up, n);
    else
        k_swiglu_bwd<<<lt_blocks((n + 3) / 4, LT_EW_THREADS), LT_EW_THREADS, 0, s>>>(
            (__half *)dgate, (__half *)dup, (const __half *)dout, (const __half *)gate, (const __half *)up, n);
    LT_LAUNCH_CHECK("k_swiglu_bwd");
    return LT_OK;
}

lt_status lt_cuda_add(lt_backend *be, void *out, const void *a, const void *b, int64_t n) {
    if (n <= 0) return LT_OK;
    cudaStream_t s = lt_cuda_of(be)->stream;
    if (be->act_dtype == LT_DTYPE_BF16)
        k_add<<<lt_blocks((n + 3) / 4, LT_EW_THREADS), LT_EW_THREADS, 0, s>>>((__nv_bfloat16 *)out, (const __nv_bfloat16 *)a,
                                                                      (const __nv_bfloat16 *)b, n);
    else
        k_add<<<lt_blocks((n + 3) / 4, LT_EW_THREADS), LT_EW_THREADS, 0, s>>>((__half *)out, (const __half *)a,
                                                                      (const __half *)b, n);
    LT_LAUNCH_CHECK("k_add");
    return LT_OK;
}

lt_status lt_cuda_bias_add(lt_backend *be, void *out, const float *bias, int64_t N, int64_t OC) {
    const int64_t n = N * OC;
    if (n <= 0) return LT_OK;
    cudaStream_t s = lt_cuda_of(be)->stream;
    if (be->act_dtype == LT_DTYPE_BF16)
        k_bias_add<<<lt_blocks(n, LT_EW_THREADS), LT_EW_THREADS, 0, s>>>((__nv_bfloat16 *)out, bias, N, OC);
    else
        k_bias_add<<<lt_blocks(n, LT_EW_THREADS), LT_EW_THREADS, 0, s>>>((__half *)out, bias, N, OC);
    LT_LAUNCH_CHECK("k_bias_add");
    return LT_OK;
}

lt_status lt_cuda_dropout_apply(lt_backend *be, void *dst, const void *src, int64_t N, int64_t C, float p,
                                uint64_t seed, uint64_t stream, int accumulate) {
    const int64_t n = N * C;
    if (n <= 0) return LT_OK;
    lt_cuda *c = lt_cuda_of(be);
    cudaStream_t s = c->stream;
    const float inv_keep = 1.0f / (1.0f - p);
    const uint64_t *kdev = c->graph_capture ? c->drop_dev : NULL;
    int slot = lt_prof_begin(c, LT_PROF_DROPOUT);
    if (be->act_dtype == LT_DTYPE_BF16)
        k_dropout<<<lt_blocks((n + 3) / 4, LT_EW_THREADS), LT_EW_THREADS, 0, s>>>(
            (__nv_bfloat16 *)dst, (const __nv_bfloat16 *)src, n, C, p, inv_keep, seed, stream, accumulate, kdev);
    else
        k_dropout<<<lt_blocks((n + 3) / 4, LT_EW_THREADS), LT_EW_THREADS, 0, s>>>((__half *)dst, (const __half *)src, n, C, p,
                                                                          inv_keep, seed, stream, accumulate, kdev);
    lt_prof_end(lt_cuda_of(be), slot);
    LT_LAUNCH_CHECK("k_dropout");
    return LT_OK;
}

/* ---- gradient norm of many tensors with one synchronization ----
 * The trainer asks for sum(g^2) over every LoRA tensor each step; one sumsq per tensor cost
 * one stream sync each (~400 per step). The tensor list travels in the kernel parameters
 * (LT_SQM_BATCH per launch), each of LT_SQM_BLOCKS blocks per tensor writes one f64 partial,
 * and the host sums the partials in a fixed order after a single copy back. */
#define LT_SQM_BATCH 128
#define LT_SQM_BLOCKS 8
struct lt_sqm_args {
    const float *g[LT_SQM_BATCH];
    int64_t n[LT_SQM_BATCH];
};

__global__ void __launch_bounds__(256) k_sumsq_many(lt_sqm_args a, double *part) {
    const float *g = a.g[blockIdx.y];
    const int64_t n = a.n[blockIdx.y];
    double s = 0.0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const double v = g[i];
        s += v * v;
    }
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    __shared__ double red[8];
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (int w = 0; w < 8; w++) t += red[w];
        part[blockIdx.y * LT_SQM_BLOCKS + blockIdx.x] = t;
    }
}

lt_status lt_cuda_sumsq_many(lt_backend *be, int count, const float *const *g, const int64_t *n, double *host_sumsq) {
    if (count <= 0) return LT_OK;
    lt_cuda *c = lt_cuda_of(be);
    const size_t pb = (size_t)count * LT_SQM_BLOCKS * sizeof(double);
    void *scr, *hb;
    LT_TRY(lt_cuda_scratch(c, pb, &scr));
    LT_TRY(lt_cuda_host_buf(c, pb, &hb));
    for (int b0 = 0; b0 < count; b0 += LT_SQM_BATCH) {
        const int nb = count - b0 < LT_SQM_BATCH ? count - b0 : LT_SQM_BATCH;
        lt_sqm_args a;
        memset(&a, 0, sizeof a);
        for (int i = 0; i < nb; i++) {
            a.g[i] = g[b0 + i];
            a.n[i] = n[b0 + i];
        }
        k_sumsq_many<<<dim3(LT_SQM_BLOCKS, (unsigned)nb), 256, 0, c->stream>>>(a, (double *)scr +
                                                                                 (size_t)b0 * LT_SQM_BLOCKS);
        LT_LAUNCH_CHECK("k_sumsq_many");
    }
    LT_CUDA_TRY(cudaMemcpyAsync(hb, scr, pb, cudaMemcpyDeviceToHost, c->stream));
    LT_CUDA_TRY(lt_cuda_stream_sync(c));
    double s = 0.0;
    for (size_t i = 0; i < (size_t)count * LT_SQM_BLOCKS; i++) s += ((const double *)hb)[i];
    *host_sumsq += s;
    return LT_OK;
}

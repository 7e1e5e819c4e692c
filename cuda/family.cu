/* family.cu - the CUDA kernels of the model-family ops (backend.h "model families"): rotary
 * embedding with given inverse frequencies and attention factor (llama3 / yarn / linear /
 * dynamic / longrope scaling), the GELU-tanh gated MLP (Gemma) and the in-place scale of
 * activations (Gemma's embedding scale). Their CPU twins are in lib/backend/cpu/cpu_layers.c;
 * tests/cuda/test_cuda_family_ops.c compares them. The options these kernels do not cover
 * (attention soft-capping or a window shorter than the sequence, soft-capped logits) keep the
 * portable defaults, which report LT_ERR_UNSUPPORTED. */
#include "cuda_common.h"
#include "family.h"
#include "model/model.h"
#include <math.h>

/* the frequencies travel by value in the launch (captured into a graph with it) */
typedef struct { float f[LT_ROPE_MAX_HALF]; } rope_table;

/* one block per token: cos/sin of the token's angles in shared memory, then every head */
template <typename T>
__global__ void k_rope_freq(T *x, const int32_t *pos, int64_t H, int64_t HD, rope_table tab, float af, int dir) {
    extern __shared__ float cs[]; /* [half] cos, then [half] sin */
    const int64_t half = HD / 2;
    float *sn = cs + half;
    const float p = (float)pos[blockIdx.x];
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
        float s, c;
        sincosf(p * tab.f[i], &s, &c);
        cs[i] = c * af;
        sn[i] = s * af;
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

static lt_status rope_freq(lt_backend *be, void *x, const int32_t *pos, int64_t N, int64_t H, int64_t HD, float theta,
                           const float *inv_freq, float af, int dir) {
    if (!inv_freq && af == 1.0f)
        return dir > 0 ? lt_cuda_rope_fwd(be, x, pos, N, H, HD, theta) : lt_cuda_rope_bwd(be, x, pos, N, H, HD, theta);
    LT_CHECK_ARG(HD > 0 && HD % 2 == 0 && HD / 2 <= LT_ROPE_MAX_HALF, "rope: head dim %lld must be even and at most %d",
                 (long long)HD, 2 * LT_ROPE_MAX_HALF);
    if (N <= 0) return LT_OK;
    rope_table tab;
    for (int64_t i = 0; i < HD / 2; i++)
        tab.f[i] = inv_freq ? inv_freq[i] : 1.0f / powf(theta, (float)(2 * i) / (float)HD);
    cudaStream_t s = lt_cuda_of(be)->stream;
    const size_t smem = (size_t)HD * sizeof(float);
    const int th = H * HD / 2 >= 256 ? 256 : 64;
    if (be->act_dtype == LT_DTYPE_BF16)
        k_rope_freq<<<(unsigned)N, th, smem, s>>>((__nv_bfloat16 *)x, pos, H, HD, tab, af, dir);
    else
        k_rope_freq<<<(unsigned)N, th, smem, s>>>((__half *)x, pos, H, HD, tab, af, dir);
    LT_LAUNCH_CHECK("k_rope_freq");
    return LT_OK;
}

lt_status lt_cuda_rope_freq_fwd(lt_backend *be, void *x, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                                float theta, const float *inv_freq, float af) {
    return rope_freq(be, x, pos, N, H, HD, theta, inv_freq, af, +1);
}
lt_status lt_cuda_rope_freq_bwd(lt_backend *be, void *dx, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                                float theta, const float *inv_freq, float af) {
    return rope_freq(be, dx, pos, N, H, HD, theta, inv_freq, af, -1);
}

/* ---- GELU-tanh gating: out = gelu_tanh(gate) * up, torch's approximate="tanh" in f32 ---- */
#define GELU_BETA 0.7978845608028654f
#define GELU_KAPPA 0.044715f

template <typename T>
__global__ void k_geglu_fwd(T *out, const T *gate, const T *up, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float x = lt_tof<T>(gate[i]), u = lt_tof<T>(up[i]);
        const float t = tanhf(GELU_BETA * (x + GELU_KAPPA * x * x * x));
        out[i] = lt_fromf<T>(0.5f * x * (1.0f + t) * u);
    }
}

template <typename T>
__global__ void k_geglu_bwd(T *dgate, T *dup, const T *dout, const T *gate, const T *up, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float x = lt_tof<T>(gate[i]), u = lt_tof<T>(up[i]), d = lt_tof<T>(dout[i]);
        const float t = tanhf(GELU_BETA * (x + GELU_KAPPA * x * x * x));
        const float y = 0.5f * x * (1.0f + t);
        const float dy = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_BETA * (1.0f + 3.0f * GELU_KAPPA * x * x);
        dup[i] = lt_fromf<T>(d * y);
        dgate[i] = lt_fromf<T>(d * u * dy);
    }
}

lt_status lt_cuda_glu_fwd(lt_backend *be, int act, void *out, const void *gate, const void *up, int64_t n) {
    if (act == LT_BACT_SILU) return lt_cuda_swiglu_fwd(be, out, gate, up, n);
    LT_CHECK_ARG(act == LT_BACT_GELU_TANH, "glu_fwd: activation %d is not an LT_BACT_*", act);
    if (n <= 0) return LT_OK;
    cudaStream_t s = lt_cuda_of(be)->stream;
    if (be->act_dtype == LT_DTYPE_BF16)
        k_geglu_fwd<<<lt_blocks(n, 256), 256, 0, s>>>((__nv_bfloat16 *)out, (const __nv_bfloat16 *)gate,
                                                     (const __nv_bfloat16 *)up, n);
    else
        k_geglu_fwd<<<lt_blocks(n, 256), 256, 0, s>>>((__half *)out, (const __half *)gate, (const __half *)up, n);
    LT_LAUNCH_CHECK("k_geglu_fwd");
    return LT_OK;
}

lt_status lt_cuda_glu_bwd(lt_backend *be, int act, void *dgate, void *dup, const void *dout, const void *gate,
                          const void *up, int64_t n) {
    if (act == LT_BACT_SILU) return lt_cuda_swiglu_bwd(be, dgate, dup, dout, gate, up, n);
    LT_CHECK_ARG(act == LT_BACT_GELU_TANH, "glu_bwd: activation %d is not an LT_BACT_*", act);
    if (n <= 0) return LT_OK;
    cudaStream_t s = lt_cuda_of(be)->stream;
    if (be->act_dtype == LT_DTYPE_BF16)
        k_geglu_bwd<<<lt_blocks(n, 256), 256, 0, s>>>((__nv_bfloat16 *)dgate, (__nv_bfloat16 *)dup,
                                                     (const __nv_bfloat16 *)dout, (const __nv_bfloat16 *)gate,
                                                     (const __nv_bfloat16 *)up, n);
    else
        k_geglu_bwd<<<lt_blocks(n, 256), 256, 0, s>>>((__half *)dgate, (__half *)dup, (const __half *)dout,
                                                     (const __half *)gate, (const __half *)up, n);
    LT_LAUNCH_CHECK("k_geglu_bwd");
    return LT_OK;
}

/* ---- x *= s (the product rounded to the act dtype) ---- */
template <typename T>
__global__ void k_scale_act(T *x, int64_t n, float s) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] = lt_fromf<T>(lt_tof<T>(x[i]) * s);
}

lt_status lt_cuda_scale_act(lt_backend *be, void *x, int64_t n, float s) {
    if (n <= 0 || s == 1.0f) return LT_OK;
    cudaStream_t st = lt_cuda_of(be)->stream;
    if (be->act_dtype == LT_DTYPE_BF16) k_scale_act<<<lt_blocks(n, 256), 256, 0, st>>>((__nv_bfloat16 *)x, n, s);
    else k_scale_act<<<lt_blocks(n, 256), 256, 0, st>>>((__half *)x, n, s);
    LT_LAUNCH_CHECK("k_scale_act");
    return LT_OK;
}

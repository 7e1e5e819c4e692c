/* family.cu - the CUDA kernels of the model-family ops (backend.h "model families"): rotary
 * embedding with given inverse frequencies and attention factor (llama3 / yarn / linear /
 * dynamic / longrope scaling), the GELU-tanh gated MLP (Gemma) and the in-place scale of
 * activations (Gemma's embedding scale); attention with a score scale, soft-capping or a sliding
 * window (the flash kernels of attention.cu take the plain case at head dim 64/128, the cuBLAS
 * path of attn_gemm.cu everything else, these plain per-query kernels only where that cannot
 * run (no cuBLAS handle), and the KV-cache case) and the soft-capped LM head (lm_head_logits
 * chunks, a capped CE kernel, linear_bwd_input back through the head). The CPU twins are in
 * lib/backend/cpu (cpu_layers.c, cpu_attention.c, cpu_lm_head.c); tests/cuda/test_cuda_families.c
 * compares them. */
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

/* ---- attention with options (score scale, soft-capping, sliding window) ----
 * A plain kernel per (query, head): the fallback where neither the flash kernels of
 * attention.cu nor the cuBLAS path of attn_gemm.cu take the batch (attn_route), and the
 * KV-cache attention of generation. Scores of one query's keys live in shared
 * memory (at most LT_FAM_MAX_KEYS keys), f32 throughout, softmax with the log-sum-exp saved as
 * attention_fwd saves it. The backward gathers dk/dv per key row (no atomics): the same bits
 * for any launch. */
#define LT_FAM_MAX_KEYS 12288 /* floats of shared memory: scores, or p and ds of one key */
#define LT_FAM_THREADS 128

typedef struct {
    float scale, cap;
    int64_t window; /* 0: none */
} fam_attn;

/* the first token of query i's sequence (cu_seqlens of nseq sequences) */
__device__ __forceinline__ int64_t seq_start(const int32_t *cu, int32_t nseq, int64_t i) {
    int lo = 0, hi = nseq - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (cu[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    return cu[lo];
}
__device__ __forceinline__ int64_t seq_end(const int32_t *cu, int32_t nseq, int64_t i) {
    int lo = 0, hi = nseq - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (cu[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    return cu[lo + 1];
}

__device__ __forceinline__ float fam_score(float dot, const fam_attn &o, float *t) {
    float s = dot * o.scale;
    if (o.cap > 0) {
        *t = tanhf(s / o.cap);
        s = *t * o.cap;
    }
    return s;
}

template <typename T>
__device__ float block_sum(float v, float *red) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
    const int w = threadIdx.x / 32, l = threadIdx.x % 32;
    __syncthreads();
    if (l == 0) red[w] = v;
    __syncthreads();
    float s = 0;
    for (int k = 0; k < (int)blockDim.x / 32; k++) s += red[k];
    return s;
}
template <typename T>
__device__ float block_max(float v, float *red) {
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    const int w = threadIdx.x / 32, l = threadIdx.x % 32;
    __syncthreads();
    if (l == 0) red[w] = v;
    __syncthreads();
    float s = -INFINITY;
    for (int k = 0; k < (int)blockDim.x / 32; k++) s = fmaxf(s, red[k]);
    return s;
}

/* forward. Training (cu != NULL): q, k, v (N, H*, HD) packed sequences. KV cache (cu == NULL):
 * query i at position past + i over cache rows [0, past + i]. grid (N, NH). */
template <typename T>
__global__ void k_attn_opt_fwd(T *out, float *lse, const T *q, const T *k, const T *v, const int32_t *cu,
                               int32_t nseq, int64_t N, int64_t NH, int64_t NKV, int64_t HD, int64_t past,
                               fam_attn o) {
    extern __shared__ float sm[]; /* [keys] scores, then [32] reduction */
    const int64_t i = blockIdx.x, h = blockIdx.y, g = h / (NH / NKV);
    const int64_t pos = cu ? i : past + i;
    int64_t k0 = cu ? seq_start(cu, nseq, i) : 0;
    if (o.window > 0 && pos - o.window + 1 > k0) k0 = pos - o.window + 1;
    const int64_t nk = pos - k0 + 1;
    float *sc = sm, *red = sm + nk;
    const T *qi = q + (i * NH + h) * HD;
    const int64_t ks = NKV * HD;
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < nk; j += blockDim.x) {
        const T *kj = k + (k0 + j) * ks + g * HD;
        float d = 0, t = 0;
        for (int64_t e = 0; e < HD; e++) d += lt_tof<T>(qi[e]) * lt_tof<T>(kj[e]);
        sc[j] = fam_score(d, o, &t);
        mx = fmaxf(mx, sc[j]);
    }
    mx = block_max<T>(mx, red);
    float sum = 0;
    for (int64_t j = threadIdx.x; j < nk; j += blockDim.x) {
        sc[j] = expf(sc[j] - mx);
        sum += sc[j];
    }
    sum = block_sum<T>(sum, red);
    const float inv = 1.0f / sum;
    for (int64_t e = threadIdx.x; e < HD; e += blockDim.x) {
        float acc = 0;
        for (int64_t j = 0; j < nk; j++) acc += sc[j] * lt_tof<T>(v[(k0 + j) * ks + g * HD + e]);
        out[(i * NH + h) * HD + e] = lt_fromf<T>(acc * inv);
    }
    if (lse && threadIdx.x == 0) lse[h * N + i] = mx + logf(sum);
}

/* dq: grid (N, NH); ds of every key in shared memory, then dq[e] = scale * sum_j ds_j k_j[e] */
template <typename T>
__global__ void k_attn_opt_dq(T *dq, const T *dout, const T *q, const T *k, const T *v, const T *out, const float *lse,
                              const int32_t *cu, int32_t nseq, int64_t N, int64_t NH, int64_t NKV, int64_t HD,
                              fam_attn o) {
    extern __shared__ float sm[];
    const int64_t i = blockIdx.x, h = blockIdx.y, g = h / (NH / NKV);
    int64_t k0 = seq_start(cu, nseq, i);
    if (o.window > 0 && i - o.window + 1 > k0) k0 = i - o.window + 1;
    const int64_t nk = i - k0 + 1, ks = NKV * HD;
    float *ds = sm, *red = sm + nk;
    const T *qi = q + (i * NH + h) * HD, *doi = dout + (i * NH + h) * HD, *oi = out + (i * NH + h) * HD;
    float D = 0;
    for (int64_t e = threadIdx.x; e < HD; e += blockDim.x) D += lt_tof<T>(doi[e]) * lt_tof<T>(oi[e]);
    D = block_sum<T>(D, red);
    const float L = lse[h * N + i];
    for (int64_t j = threadIdx.x; j < nk; j += blockDim.x) {
        const T *kj = k + (k0 + j) * ks + g * HD, *vj = v + (k0 + j) * ks + g * HD;
        float d = 0, dv = 0, t = 0;
        for (int64_t e = 0; e < HD; e++) {
            d += lt_tof<T>(qi[e]) * lt_tof<T>(kj[e]);
            dv += lt_tof<T>(doi[e]) * lt_tof<T>(vj[e]);
        }
        const float p = expf(fam_score(d, o, &t) - L);
        float s = p * (dv - D);
        if (o.cap > 0) s *= 1.0f - t * t;
        ds[j] = s;
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < HD; e += blockDim.x) {
        float acc = 0;
        for (int64_t j = 0; j < nk; j++) acc += ds[j] * lt_tof<T>(k[(k0 + j) * ks + g * HD + e]);
        dq[(i * NH + h) * HD + e] = lt_fromf<T>(acc * o.scale);
    }
}

/* dk, dv: grid (N, NKV); for key j every (query, head of the group) that sees it */
template <typename T>
__global__ void k_attn_opt_dkv(T *dk, T *dv, const T *dout, const T *q, const T *k, const T *v, const T *out,
                               const float *lse, const int32_t *cu, int32_t nseq, int64_t N, int64_t NH, int64_t NKV,
                               int64_t HD, fam_attn o) {
    extern __shared__ float sm[];
    const int64_t j = blockIdx.x, g = blockIdx.y, grp = NH / NKV, ks = NKV * HD;
    int64_t q1 = seq_end(cu, nseq, j);
    if (o.window > 0 && j + o.window < q1) q1 = j + o.window;
    const int64_t nq = (q1 - j) * grp;
    float *pp = sm, *ds = sm + nq;
    const T *kj = k + j * ks + g * HD, *vj = v + j * ks + g * HD;
    for (int64_t r = threadIdx.x; r < nq; r += blockDim.x) {
        const int64_t i = j + r / grp, h = g * grp + r % grp;
        const T *qi = q + (i * NH + h) * HD, *doi = dout + (i * NH + h) * HD, *oi = out + (i * NH + h) * HD;
        float d = 0, dvv = 0, D = 0, t = 0;
        for (int64_t e = 0; e < HD; e++) {
            d += lt_tof<T>(qi[e]) * lt_tof<T>(kj[e]);
            dvv += lt_tof<T>(doi[e]) * lt_tof<T>(vj[e]);
            D += lt_tof<T>(doi[e]) * lt_tof<T>(oi[e]);
        }
        const float p = expf(fam_score(d, o, &t) - lse[h * N + i]);
        float s = p * (dvv - D);
        if (o.cap > 0) s *= 1.0f - t * t;
        pp[r] = p;
        ds[r] = s;
    }
    __syncthreads();
    for (int64_t e = threadIdx.x; e < HD; e += blockDim.x) {
        float ak = 0, av = 0;
        for (int64_t r = 0; r < nq; r++) {
            const int64_t i = j + r / grp, h = g * grp + r % grp;
            ak += ds[r] * lt_tof<T>(q[(i * NH + h) * HD + e]);
            av += pp[r] * lt_tof<T>(dout[(i * NH + h) * HD + e]);
        }
        dk[j * ks + g * HD + e] = lt_fromf<T>(ak * o.scale);
        dv[j * ks + g * HD + e] = lt_fromf<T>(av);
    }
}

static int attn_plain(const lt_attn_opts *o, int64_t HD, int64_t len) {
    return o->scale == (float)(1.0 / sqrt((double)HD)) && o->softcap == 0.0f && (o->window <= 0 || o->window >= len);
}

/* which kernels take a training / prefill attention: the flash kernels for the plain options at
 * the head dims they have; else the cuBLAS path; else (no cuBLAS handle, max_seqlen unknown)
 * the portable kernels of attention.cu for plain options and this file's for the others */
enum { FAM_FLASH, FAM_GEMM, FAM_PLAIN };
static int attn_route(lt_backend *be, const lt_attn_opts *o, int64_t N, int32_t nseq, int32_t max_seqlen,
                      int64_t HD) {
    const int plain = attn_plain(o, HD, max_seqlen);
    if (plain && lt_cuda_attention_flash_ok(be, HD)) return FAM_FLASH;
    if (lt_cuda_attention_gemm_ok(be, N, nseq, max_seqlen)) return FAM_GEMM;
    return plain ? FAM_FLASH : FAM_PLAIN;
}

static lt_status attn_smem(int64_t floats, size_t *bytes) {
    *bytes = (size_t)(floats + 32) * sizeof(float);
    if (floats + 32 > LT_FAM_MAX_KEYS) /* 48 KiB of dynamic shared memory, no opt-in needed */
        return lt_error(LT_ERR_UNSUPPORTED, "CUDA attention with options: %lld keys per query are more than its "
                        "kernels hold", (long long)floats);
    return LT_OK;
}

static fam_attn fam_opts(const lt_attn_opts *o) {
    fam_attn f;
    f.scale = o->scale;
    f.cap = o->softcap;
    f.window = o->window > 0 ? o->window : 0;
    return f;
}

lt_status lt_cuda_attention_opt_fwd(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                                    const int32_t *cu, int32_t nseq, int32_t max_seqlen, int64_t N, int64_t NH,
                                    int64_t NKV, int64_t HD, const lt_attn_opts *o) {
    const int route = attn_route(be, o, N, nseq, max_seqlen, HD);
    if (route == FAM_FLASH) return lt_cuda_attention_fwd(be, out, lse, q, k, v, cu, nseq, max_seqlen, N, NH, NKV, HD);
    if (route == FAM_GEMM)
        return lt_cuda_attention_gemm_fwd(be, out, lse, q, k, v, cu, nseq, max_seqlen, N, NH, NKV, HD, o);
    if (N <= 0) return LT_OK;
    size_t smem;
    LT_TRY(attn_smem(max_seqlen, &smem));
    cudaStream_t s = lt_cuda_of(be)->stream;
    dim3 grid((unsigned)N, (unsigned)NH);
    if (be->act_dtype == LT_DTYPE_BF16)
        k_attn_opt_fwd<<<grid, LT_FAM_THREADS, smem, s>>>((__nv_bfloat16 *)out, lse, (const __nv_bfloat16 *)q,
                                                          (const __nv_bfloat16 *)k, (const __nv_bfloat16 *)v, cu, nseq,
                                                          N, NH, NKV, HD, 0, fam_opts(o));
    else
        k_attn_opt_fwd<<<grid, LT_FAM_THREADS, smem, s>>>((__half *)out, lse, (const __half *)q, (const __half *)k,
                                                          (const __half *)v, cu, nseq, N, NH, NKV, HD, 0, fam_opts(o));
    LT_LAUNCH_CHECK("k_attn_opt_fwd");
    return LT_OK;
}

lt_status lt_cuda_attention_opt_kv(lt_backend *be, void *out, const void *q, const void *kc, const void *vc,
                                   int64_t past, int64_t n, int64_t NH, int64_t NKV, int64_t HD,
                                   const lt_attn_opts *o) {
    if (attn_plain(o, HD, past + n)) return lt_cuda_attention_kv(be, out, q, kc, vc, past, n, NH, NKV, HD);
    if (n <= 0) return LT_OK;
    size_t smem;
    LT_TRY(attn_smem(past + n, &smem));
    cudaStream_t s = lt_cuda_of(be)->stream;
    dim3 grid((unsigned)n, (unsigned)NH);
    if (be->act_dtype == LT_DTYPE_BF16)
        k_attn_opt_fwd<<<grid, LT_FAM_THREADS, smem, s>>>((__nv_bfloat16 *)out, NULL, (const __nv_bfloat16 *)q,
                                                          (const __nv_bfloat16 *)kc, (const __nv_bfloat16 *)vc, NULL, 0,
                                                          n, NH, NKV, HD, past, fam_opts(o));
    else
        k_attn_opt_fwd<<<grid, LT_FAM_THREADS, smem, s>>>((__half *)out, NULL, (const __half *)q, (const __half *)kc,
                                                          (const __half *)vc, NULL, 0, n, NH, NKV, HD, past,
                                                          fam_opts(o));
    LT_LAUNCH_CHECK("k_attn_opt_fwd (cache)");
    return LT_OK;
}

lt_status lt_cuda_attention_opt_bwd(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                                    const void *k, const void *v, const void *out, const float *lse, const int32_t *cu,
                                    int32_t nseq, int32_t max_seqlen, int64_t N, int64_t NH, int64_t NKV, int64_t HD,
                                    const lt_attn_opts *o) {
    const int route = attn_route(be, o, N, nseq, max_seqlen, HD);
    if (route == FAM_FLASH)
        return lt_cuda_attention_bwd(be, dq, dk, dv, dout, q, k, v, out, lse, cu, nseq, max_seqlen, N, NH, NKV, HD);
    if (route == FAM_GEMM)
        return lt_cuda_attention_gemm_bwd(be, dq, dk, dv, dout, q, k, v, out, lse, cu, nseq, max_seqlen, N, NH, NKV,
                                          HD, o);
    if (N <= 0) return LT_OK;
    size_t smq, smk;
    LT_TRY(attn_smem(max_seqlen, &smq));
    LT_TRY(attn_smem(2 * (int64_t)max_seqlen * (NH / NKV), &smk));
    cudaStream_t s = lt_cuda_of(be)->stream;
    dim3 gq((unsigned)N, (unsigned)NH), gk((unsigned)N, (unsigned)NKV);
    const fam_attn f = fam_opts(o);
    if (be->act_dtype == LT_DTYPE_BF16) {
        typedef __nv_bfloat16 B;
        k_attn_opt_dq<<<gq, LT_FAM_THREADS, smq, s>>>((B *)dq, (const B *)dout, (const B *)q, (const B *)k,
                                                      (const B *)v, (const B *)out, lse, cu, nseq, N, NH, NKV, HD, f);
        k_attn_opt_dkv<<<gk, LT_FAM_THREADS, smk, s>>>((B *)dk, (B *)dv, (const B *)dout, (const B *)q, (const B *)k,
                                                       (const B *)v, (const B *)out, lse, cu, nseq, N, NH, NKV, HD, f);
    } else {
        typedef __half H;
        k_attn_opt_dq<<<gq, LT_FAM_THREADS, smq, s>>>((H *)dq, (const H *)dout, (const H *)q, (const H *)k,
                                                      (const H *)v, (const H *)out, lse, cu, nseq, N, NH, NKV, HD, f);
        k_attn_opt_dkv<<<gk, LT_FAM_THREADS, smk, s>>>((H *)dk, (H *)dv, (const H *)dout, (const H *)q, (const H *)k,
                                                       (const H *)v, (const H *)out, lse, cu, nseq, N, NH, NKV, HD, f);
    }
    LT_LAUNCH_CHECK("k_attn_opt_dq / k_attn_opt_dkv");
    return LT_OK;
}

/* ---- soft-capped LM head: logits of a chunk of tokens (lm_head_logits, f32), then per token
 * the capped CE and d(logits) * (1 - tanh^2) in the act dtype, multiplied back through the head
 * with linear_bwd_input ---- */

template <typename T>
__global__ void k_ce_cap(float *losses, T *dlog, const float *logits, const int32_t *targets, int64_t V, float cap,
                         float grad_scale) {
    __shared__ float red[32];
    const int64_t r = blockIdx.x;
    const float *z = logits + r * V;
    const int32_t y = targets[r];
    float mx = -INFINITY;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, tanhf(z[v] / cap) * cap);
    mx = block_max<T>(mx, red);
    float sum = 0;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) sum += expf(tanhf(z[v] / cap) * cap - mx);
    sum = block_sum<T>(sum, red);
    const float lse = mx + logf(sum);
    /* the row's loss, summed with the others in a fixed order by k_sum_into (lm_head_ce.cu), so
     * that the loss is deterministic (and CUDA graph replays equal op by op passes) */
    if (threadIdx.x == 0) losses[r] = y >= 0 && y < V ? lse - tanhf(z[y] / cap) * cap : 0.0f;
    if (!dlog) return;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
        float g = 0;
        if (y >= 0 && y < V) {
            const float t = tanhf(z[v] / cap);
            g = (expf(t * cap - lse) - (v == y ? 1.0f : 0.0f)) * grad_scale * (1.0f - t * t);
        }
        dlog[r * V + v] = lt_fromf<T>(g);
    }
}

template <typename T>
__global__ void k_cap_logits(float *logits, int64_t n, float cap) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        logits[i] = tanhf(logits[i] / cap) * cap;
}

lt_status lt_cuda_lm_head_logits_cap(lt_backend *be, float *logits, const void *h, const lt_bweight *head, int64_t N,
                                     int64_t C, int64_t V, float cap) {
    LT_TRY(lt_cuda_lm_head_logits(be, logits, h, head, N, C, V));
    if (!(cap > 0) || N <= 0) return LT_OK;
    k_cap_logits<float><<<lt_blocks(N * V, 256), 256, 0, lt_cuda_of(be)->stream>>>(logits, N * V, cap);
    LT_LAUNCH_CHECK("k_cap_logits");
    return LT_OK;
}

/* The capped head's chunk buffers (and its per-row losses), grown to `bytes` (c->cap_ce: kept across calls, never freed
 * by a pass; growing frees the old one, as lt_cuda_scratch does, which a pass's first, unrecorded
 * run of a shape does). */
static lt_status cap_ce_buffers(lt_cuda *c, size_t bytes, void **out) {
    if (bytes > c->cap_ce_bytes) {
        if (c->cap_ce) {
            LT_CUDA_TRY(cudaStreamSynchronize(c->stream));
            lt_cuda_free(c, c->cap_ce);
            c->cap_ce = NULL;
            c->cap_ce_bytes = 0;
        }
        /* 1 MiB more: the per-token losses grow with every longer pass (the logits stop growing at
         * the chunk's rows), and each free ends the memory epoch of every recorded CUDA graph;
         * lt_estimate_memory counts the same */
        const size_t want = bytes + (1u << 20);
        LT_TRY(lt_cuda_malloc(c, want, "the soft-capped LM head's logits", &c->cap_ce));
        c->cap_ce_bytes = want;
    }
    *out = c->cap_ce;
    return LT_OK;
}

lt_status lt_cuda_lm_head_ce_cap(lt_backend *be, float *loss_sum, void *dh, const void *h, const lt_bweight *head,
                                 const int32_t *targets, int64_t N, int64_t C, int64_t V, float grad_scale, float cap) {
    if (!(cap > 0)) return lt_cuda_lm_head_ce(be, loss_sum, dh, h, head, targets, N, C, V, grad_scale);
    if (N <= 0) return LT_OK;
    const size_t ab = (size_t)be->act_bytes;
    /* tokens per chunk as the uncapped head takes them (be->head_chunk_bytes: the memory-saving
     * mode's smaller chunks), for f32 logits + 16-bit d(logits) a logit; lt_estimate_memory
     * counts the same */
    const int64_t rows = lt_head_chunk_rows(N, V, (int64_t)(4 + ab), be->head_chunk_bytes);
    const size_t lg_b = lt_align256((size_t)(rows * V) * sizeof(float));
    const size_t dl_b = dh ? lt_align256((size_t)(rows * V) * ab) : 0;
    const size_t ls_b = lt_align256((size_t)N * sizeof(float));
    void *buf = NULL;
    LT_TRY(cap_ce_buffers(lt_cuda_of(be), lg_b + dl_b + ls_b, &buf));
    float *lg = (float *)buf;
    void *dl = dh ? (void *)((char *)buf + lg_b) : NULL;
    float *losses = (float *)((char *)buf + lg_b + dl_b);
    cudaStream_t s = lt_cuda_of(be)->stream;
    lt_status st = LT_OK;
    for (int64_t r0 = 0; st == LT_OK && r0 < N; r0 += rows) {
        const int64_t n = N - r0 < rows ? N - r0 : rows;
        st = lt_cuda_lm_head_logits(be, lg, (const char *)h + (size_t)(r0 * C) * ab, head, n, C, V);
        if (st != LT_OK) break;
        if (be->act_dtype == LT_DTYPE_BF16)
            k_ce_cap<__nv_bfloat16><<<(unsigned)n, 256, 0, s>>>(losses + r0, (__nv_bfloat16 *)dl, lg, targets + r0, V, cap,
                                                                grad_scale);
        else
            k_ce_cap<__half><<<(unsigned)n, 256, 0, s>>>(losses + r0, (__half *)dl, lg, targets + r0, V, cap, grad_scale);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) { st = lt_cuda_err(e, "k_ce_cap", __FILE__, __LINE__); break; }
        if (dh) st = lt_cuda_linear_bwd_input(be, (char *)dh + (size_t)(r0 * C) * ab, dl, head, n, 0);
    }
    if (st == LT_OK) st = lt_cuda_sum_into(be, loss_sum, losses, N);
    return st;
}

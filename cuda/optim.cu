/* optim.cu - the optimizer ops on the GPU: squared norm (f64 partials summed on the host),
 * scaling, the non-finite check, torch.optim.AdamW and bitsandbytes' blockwise 8-bit AdamW
 * (blocksize 256, signed/unsigned dynamic maps). Both AdamW kernels follow the CPU reference
 * (lib/backend/cpu/cpu_optim.c, adam8bit_ref.c) operation by operation with explicitly rounded
 * intrinsics (no fused multiply-adds), and take the step scalars computed on the host the same
 * way, so their results are bit-identical to it. The AdamW kernels also write the 16-bit copies
 * of the LoRA weights the products read (gemm.cu's cache: lt_cuda_w16_outputs) from the new
 * values, the cast a refresh would make, so no refresh pass follows an optimizer step. */
#include "cuda_common.h"
#include <math.h>
#include <string.h>
extern "C" {
#include "backend/adam8bit.h"
}

/* ---------------------------------------------------------------- kernels */
#define LT_SUMSQ_BLOCKS 256
__global__ void k_sumsq(const float *g, int64_t n, double *partials) {
    __shared__ double part[256];
    double acc = 0.0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        acc += (double)g[i] * (double)g[i];
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) part[threadIdx.x] += part[threadIdx.x + w];
        __syncthreads();
    }
    if (threadIdx.x == 0) partials[blockIdx.x] = part[0];
}

__global__ void k_scale(float *x, int64_t n, float s) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] = __fmul_rn(x[i], s);
}

__global__ void k_nonfinite(const float *g, int64_t n, int *flag) {
    int bad = 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        bad |= !isfinite(g[i]);
    if (__any_sync(0xffffffffu, bad) && threadIdx.x % 32 == 0) *flag = 1;
}

/* the 16-bit copies of one tensor an AdamW kernel writes with it (lt_w16_out) */
struct lt_w16_dst {
    void *plain, *trans; /* NULL: none */
    int64_t rows, cols;  /* of the transposed copy's source: element i = r * cols + c goes to c * rows + r */
};
__device__ __forceinline__ void w16_store(const lt_w16_dst &d, int bf, int64_t i, float v) {
    if (d.plain) {
        if (bf) ((__nv_bfloat16 *)d.plain)[i] = lt_fromf<__nv_bfloat16>(v);
        else ((__half *)d.plain)[i] = lt_fromf<__half>(v);
    }
    if (d.trans) {
        const int64_t j = (i % d.cols) * d.rows + i / d.cols;
        if (bf) ((__nv_bfloat16 *)d.trans)[j] = lt_fromf<__nv_bfloat16>(v);
        else ((__half *)d.trans)[j] = lt_fromf<__half>(v);
    }
}
static lt_w16_dst w16_dst_of(lt_cuda *c, const float *p, int64_t n) {
    lt_w16_out o;
    lt_cuda_w16_outputs(c, p, n, &o);
    lt_w16_dst d = {o.plain, o.trans, o.rows, o.cols};
    return d;
}

/* torch's _single_tensor_adamw in the CPU reference's order */
/* the step scalars, as the CPU reference computes them (doubles rounded to f32) */
static void adamw_scalars(float lr, float beta1, float beta2, float wd, int64_t t, float *decay, float *w1, float *w2,
                          float *step_size, float *bc2_sqrt) {
    const double dlr = lr, db1 = beta1, db2 = beta2;
    *decay = (float)(1.0 - dlr * (double)wd);
    *w1 = (float)(1.0 - db1);
    *w2 = (float)(1.0 - db2);
    const double bc1 = 1.0 - pow(db1, (double)t), bc2 = 1.0 - pow(db2, (double)t);
    *step_size = (float)(dlr / bc1);
    *bc2_sqrt = (float)sqrt(bc2);
}

/* one element of torch's AdamW, operation by operation as the CPU reference does it; returns
 * the new p[i] */
__device__ __forceinline__ float adamw_elem(float *p, const float *g, float *m, float *v, int64_t i, float decay,
                                           float w1, float w2, float beta2, float step_size, float bc2_sqrt,
                                           float eps) {
    float pi = __fmul_rn(p[i], decay);
    const float gi = g[i];
    float mi = m[i];
    mi = w1 < 0.5f ? __fadd_rn(mi, __fmul_rn(w1, __fsub_rn(gi, mi)))
                   : __fsub_rn(gi, __fmul_rn(__fsub_rn(gi, mi), __fsub_rn(1.0f, w1)));
    const float vi = __fadd_rn(__fmul_rn(v[i], beta2), __fmul_rn(__fmul_rn(w2, gi), gi));
    const float denom = __fadd_rn(__fdiv_rn(sqrtf(vi), bc2_sqrt), eps);
    pi = __fadd_rn(pi, __fmul_rn(-step_size, __fdiv_rn(mi, denom)));
    p[i] = pi; m[i] = mi; v[i] = vi;
    return pi;
}

/* many tensors per launch: blockIdx.y picks the tensor; single calls are batches of one.
 * LT_ADAMW_BATCH keeps the arguments under 4 KB with the copies' pointers. */
#define LT_MT_BATCH 64
#define LT_ADAMW_BATCH 48
struct lt_adamw_args {
    float *p[LT_ADAMW_BATCH];
    const float *g[LT_ADAMW_BATCH];
    float *m[LT_ADAMW_BATCH], *v[LT_ADAMW_BATCH];
    int64_t n[LT_ADAMW_BATCH];
    lt_w16_dst w16[LT_ADAMW_BATCH];
    int bf; /* the copies are bf16 (else fp16) */
};
__global__ void k_adamw_many(lt_adamw_args a, float decay, float w1, float w2, float beta2, float step_size,
                             float bc2_sqrt, float eps) {
    const int k = blockIdx.y;
    float *p = a.p[k], *m = a.m[k], *v = a.v[k];
    const float *g = a.g[k];
    const int64_t n = a.n[k];
    const lt_w16_dst d = a.w16[k];
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float pi = adamw_elem(p, g, m, v, i, decay, w1, w2, beta2, step_size, bc2_sqrt, eps);
        w16_store(d, a.bf, i, pi);
    }
}
struct lt_zero_args {
    uint4 *p[LT_MT_BATCH];
    int64_t n16[LT_MT_BATCH]; /* 16-byte words */
};
__global__ void k_zero_many(lt_zero_args a) {
    const int k = blockIdx.y;
    uint4 *p = a.p[k];
    const int64_t n = a.n16[k];
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        p[i] = make_uint4(0, 0, 0, 0);
}

/* the CPU reference's lt_quantize_2d_ref (bnb quantize_2D as a plain binary search) */
__device__ __forceinline__ uint8_t quantize_2d(const float *code, int is_signed, float x) {
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = is_signed ? -1.0f : 0.0f, upper = 1.0f;
    float val = code[127];
    for (int i = 64; i > 0; i >>= 1) {
        if (x > val) { lower_pivot = pivot; lower = val; pivot += i; }
        else { upper_pivot = pivot; upper = val; pivot -= i; }
        val = code[pivot];
    }
    if (x > val) {
        float midpoint = __fmul_rn(__fadd_rn(upper, val), 0.5f);
        return (uint8_t)(x > midpoint ? upper_pivot : pivot);
    } else {
        float midpoint = __fmul_rn(__fadd_rn(lower, val), 0.5f);
        return (uint8_t)(x < midpoint ? lower_pivot : pivot);
    }
}

/* one block of 256 threads per 256-element block: block b of a tensor (k_adamw8bit_many,
 * after it found the tensor) */
__device__ __forceinline__ void adamw8bit_block(float *p, const float *g, uint8_t *state1, uint8_t *state2,
                                                float *absmax1, float *absmax2, int64_t n, int64_t b,
                                                const float *code1, const float *code2, float *red1, float *red2,
                                                float lr, float beta1, float beta2, float eps, float wd,
                                                float correction2, float step_size, const lt_w16_dst &w16, int bf) {
    const int64_t i = b * LT_ADAM8BIT_BLOCK + threadIdx.x;
    const float am1 = absmax1[b], am2 = absmax2[b];
    const float gv = i < n ? g[i] : 0.0f;
    const uint8_t q1 = i < n ? state1[i] : 128, q2 = i < n ? state2[i] : 0;
    __syncthreads(); /* the codes are in shared memory */
    float s1 = 0.0f, s2 = 0.0f;
    if (isfinite(gv)) {
        float vv = __fmul_rn(code2[q2], am2);
        vv = __fadd_rn(__fmul_rn(vv, beta2), __fmul_rn(__fmul_rn(__fsub_rn(1.0f, beta2), gv), gv));
        float mm = __fmul_rn(code1[q1], am1);
        mm = __fadd_rn(__fmul_rn(mm, beta1), __fmul_rn(__fsub_rn(1.0f, beta1), gv));
        s1 = mm; s2 = vv;
    }
    float m1 = fabsf(s1), m2 = fabsf(s2);
    for (int o = 16; o > 0; o >>= 1) {
        m1 = fmaxf(m1, __shfl_xor_sync(0xffffffffu, m1, o));
        m2 = fmaxf(m2, __shfl_xor_sync(0xffffffffu, m2, o));
    }
    if (threadIdx.x % 32 == 0) { red1[threadIdx.x / 32] = m1; red2[threadIdx.x / 32] = m2; }
    __syncthreads();
    float new1 = red1[0], new2 = red2[0];
    for (int w = 1; w < 8; w++) { new1 = fmaxf(new1, red1[w]); new2 = fmaxf(new2, red2[w]); }
    if (threadIdx.x == 0) { absmax1[b] = new1; absmax2[b] = new2; }
    if (i >= n) return;
    float pv = p[i];
    if (isfinite(gv)) {
        pv = __fadd_rn(pv, __fmul_rn(step_size, __fdiv_rn(s1, __fadd_rn(sqrtf(s2), __fmul_rn(correction2, eps)))));
        if (wd > 0.0f) pv = __fmul_rn(pv, __fsub_rn(1.0f, __fmul_rn(lr, wd)));
        p[i] = pv;
    }
    w16_store(w16, bf, i, pv); /* the copies hold p[i], updated or not */
    uint8_t c1 = quantize_2d(code1, 1, __fdiv_rn(s1, new1));
    uint8_t c2 = quantize_2d(code2, 0, __fdiv_rn(s2, new2));
    if (signbit(code1[c1]) != signbit(s1)) {
        if (s1 > 0.0f) c1 += 1; else c1 -= 1;
    }
    state1[i] = c1;
    state2[i] = c2;
}

/* many tensors per launch (single calls are batches of one): block x is block x - first[k] of
 * the tensor k with first[k] <= x < first[k + 1] (first: the tensors' 256-element blocks,
 * summed) */
#define LT_A8_BATCH 32
struct lt_adamw8_args {
    float *p[LT_A8_BATCH];
    const float *g[LT_A8_BATCH];
    uint8_t *s1[LT_A8_BATCH], *s2[LT_A8_BATCH];
    float *a1[LT_A8_BATCH], *a2[LT_A8_BATCH];
    int64_t n[LT_A8_BATCH];
    int64_t first[LT_A8_BATCH + 1];
    lt_w16_dst w16[LT_A8_BATCH];
    int count;
    int bf; /* the copies are bf16 (else fp16) */
};
__global__ void k_adamw8bit_many(lt_adamw8_args a, const float *code1_g, const float *code2_g, float lr, float beta1,
                                 float beta2, float eps, float wd, float correction2, float step_size) {
    __shared__ float code1[256], code2[256];
    __shared__ float red1[8], red2[8];
    code1[threadIdx.x] = code1_g[threadIdx.x];
    code2[threadIdx.x] = code2_g[threadIdx.x];
    const int64_t x = blockIdx.x;
    int k = 0;
    while (k + 1 < a.count && a.first[k + 1] <= x) k++;
    adamw8bit_block(a.p[k], a.g[k], a.s1[k], a.s2[k], a.a1[k], a.a2[k], a.n[k], x - a.first[k], code1, code2, red1,
                    red2, lr, beta1, beta2, eps, wd, correction2, step_size, a.w16[k], a.bf);
}

/* up to LT_MT_BATCH f32 tensors for the check and the scaling of many gradients (blockIdx.y
 * picks the tensor) */
struct lt_f32_many {
    float *x[LT_MT_BATCH];
    int64_t n[LT_MT_BATCH];
};
__global__ void k_nonfinite_many(lt_f32_many a, int *flag) {
    const int k = blockIdx.y;
    const float *g = a.x[k];
    const int64_t n = a.n[k];
    int bad = 0;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        bad |= !isfinite(g[i]);
    if (__any_sync(0xffffffffu, bad) && threadIdx.x % 32 == 0) *flag = 1;
}
__global__ void k_scale_many(lt_f32_many a, float s) {
    const int k = blockIdx.y;
    float *x = a.x[k];
    const int64_t n = a.n[k];
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        x[i] = __fmul_rn(x[i], s);
}

/* ---------------------------------------------------------------- launchers */
lt_status lt_cuda_sumsq(lt_backend *be, const float *g, int64_t n, double *host_sumsq) {
    if (n <= 0) return LT_OK;
    lt_cuda *c = lt_cuda_of(be);
    void *scr, *hb;
    LT_TRY(lt_cuda_scratch(c, LT_SUMSQ_BLOCKS * sizeof(double), &scr));
    LT_TRY(lt_cuda_host_buf(c, LT_SUMSQ_BLOCKS * sizeof(double), &hb));
    k_sumsq<<<LT_SUMSQ_BLOCKS, 256, 0, c->stream>>>(g, n, (double *)scr);
    LT_LAUNCH_CHECK("k_sumsq");
    LT_CUDA_TRY(cudaMemcpyAsync(hb, scr, LT_SUMSQ_BLOCKS * sizeof(double), cudaMemcpyDeviceToHost, c->stream));
    LT_CUDA_TRY(lt_cuda_stream_sync(c));
    double s = 0;
    for (int i = 0; i < LT_SUMSQ_BLOCKS; i++) s += ((double *)hb)[i];
    *host_sumsq += s;
    return LT_OK;
}

lt_status lt_cuda_scale(lt_backend *be, float *x, int64_t n, float s) {
    if (n <= 0) return LT_OK;
    lt_cuda_w16_invalidate(lt_cuda_of(be), x, (size_t)n * 4);
    k_scale<<<lt_blocks(n, 256), 256, 0, lt_cuda_of(be)->stream>>>(x, n, s);
    LT_LAUNCH_CHECK("k_scale");
    return LT_OK;
}

lt_status lt_cuda_nonfinite(lt_backend *be, const float *g, int64_t n, int *host_flag) {
    *host_flag = 0;
    if (n <= 0) return LT_OK;
    lt_cuda *c = lt_cuda_of(be);
    void *scr, *hb;
    LT_TRY(lt_cuda_scratch(c, sizeof(int), &scr));
    LT_TRY(lt_cuda_host_buf(c, sizeof(int), &hb));
    LT_CUDA_TRY(cudaMemsetAsync(scr, 0, sizeof(int), c->stream));
    unsigned blocks = lt_blocks(n, 256);
    if (blocks > 1024) blocks = 1024;
    k_nonfinite<<<blocks, 256, 0, c->stream>>>(g, n, (int *)scr);
    LT_LAUNCH_CHECK("k_nonfinite");
    LT_CUDA_TRY(cudaMemcpyAsync(hb, scr, sizeof(int), cudaMemcpyDeviceToHost, c->stream));
    LT_CUDA_TRY(lt_cuda_stream_sync(c));
    *host_flag = *(int *)hb != 0;
    return LT_OK;
}

/* launch(a, grid) once per batch of LT_MT_BATCH tensors: a holds the batch, the grid has a
 * row of blocks per tensor sized for the longest */
template <typename Launch>
static lt_status f32_many(int count, float *const *x, const int64_t *n, Launch launch) {
    for (int b0 = 0; b0 < count; b0 += LT_MT_BATCH) {
        const int nb = count - b0 < LT_MT_BATCH ? count - b0 : LT_MT_BATCH;
        lt_f32_many a;
        memset(&a, 0, sizeof a);
        int64_t most = 1;
        for (int i = 0; i < nb; i++) {
            a.x[i] = x[b0 + i]; a.n[i] = n[b0 + i];
            if (a.n[i] > most) most = a.n[i];
        }
        unsigned bx = lt_blocks(most, 256);
        if (bx > 64) bx = 64;
        LT_TRY(launch(a, dim3(bx, (unsigned)nb)));
    }
    return LT_OK;
}

lt_status lt_cuda_nonfinite_many(lt_backend *be, int count, const float *const *g, const int64_t *n, int *host_flag) {
    *host_flag = 0;
    lt_cuda *c = lt_cuda_of(be);
    void *scr, *hb;
    LT_TRY(lt_cuda_scratch(c, sizeof(int), &scr));
    LT_TRY(lt_cuda_host_buf(c, sizeof(int), &hb));
    LT_CUDA_TRY(cudaMemsetAsync(scr, 0, sizeof(int), c->stream));
    LT_TRY(f32_many(count, (float *const *)g, n, [&](const lt_f32_many &a, dim3 grid) -> lt_status {
        k_nonfinite_many<<<grid, 256, 0, c->stream>>>(a, (int *)scr);
        LT_LAUNCH_CHECK("k_nonfinite_many");
        return LT_OK;
    }));
    LT_CUDA_TRY(cudaMemcpyAsync(hb, scr, sizeof(int), cudaMemcpyDeviceToHost, c->stream));
    LT_CUDA_TRY(lt_cuda_stream_sync(c));
    *host_flag = *(int *)hb != 0;
    return LT_OK;
}

lt_status lt_cuda_adamw(lt_backend *be, float *p, const float *g, float *m, float *v, int64_t n, float lr,
                        float beta1, float beta2, float eps, float wd, int64_t t) {
    LT_CHECK_ARG(t >= 1, "adamw: step %lld must be >= 1", (long long)t);
    if (n <= 0) return LT_OK;
    return lt_cuda_adamw_many(be, 1, &p, &g, &m, &v, &n, lr, beta1, beta2, eps, wd, t);
}

/* the signed and unsigned dynamic maps on the device, made on first use */
static lt_status dyn_maps(lt_cuda *c) {
    if (c->dyn_maps) return LT_OK;
    float maps[512];
    lt_dynamic_map(1, maps);
    lt_dynamic_map(0, maps + 256);
    LT_TRY(lt_cuda_malloc(c, sizeof maps, "the 8-bit dynamic maps", (void **)&c->dyn_maps));
    LT_CUDA_TRY(cudaMemcpyAsync(c->dyn_maps, maps, sizeof maps, cudaMemcpyHostToDevice, c->stream));
    LT_CUDA_TRY(lt_cuda_stream_sync(c));
    return LT_OK;
}

/* the step scalars exactly as lt_adamw8bit_ref takes them */
static void adamw8bit_scalars(float lr, float beta1, float beta2, int64_t t, float *correction2, float *step_size) {
    const float correction1 = 1.0f - powf(beta1, (float)t);
    *correction2 = sqrtf(1.0f - powf(beta2, (float)t));
    *step_size = (-lr * *correction2) / correction1;
}

lt_status lt_cuda_adamw8bit(lt_backend *be, float *p, const float *g, uint8_t *state1, uint8_t *state2,
                            float *absmax1, float *absmax2, int64_t n, float lr, float beta1, float beta2, float eps,
                            float wd, int64_t t) {
    LT_CHECK_ARG(t >= 1, "adamw8bit: step %lld must be >= 1", (long long)t);
    if (n <= 0) return LT_OK;
    return lt_cuda_adamw8bit_many(be, 1, &p, &g, &state1, &state2, &absmax1, &absmax2, &n, lr, beta1, beta2, eps, wd,
                                  t);
}

lt_status lt_cuda_adamw8bit_many(lt_backend *be, int count, float *const *p, const float *const *g,
                                 uint8_t *const *state1, uint8_t *const *state2, float *const *absmax1,
                                 float *const *absmax2, const int64_t *n, float lr, float beta1, float beta2,
                                 float eps, float wd, int64_t t) {
    LT_CHECK_ARG(t >= 1, "adamw8bit: step %lld must be >= 1", (long long)t);
    lt_cuda *c = lt_cuda_of(be);
    LT_TRY(dyn_maps(c));
    float correction2, step_size;
    adamw8bit_scalars(lr, beta1, beta2, t, &correction2, &step_size);
    lt_adamw8_args a;
    memset(&a, 0, sizeof a);
    const int bf = be->act_dtype == LT_DTYPE_BF16;
    a.bf = bf;
    for (int i = 0; i <= count; i++) {
        /* the batch goes when it is full or the tensors are done */
        if (a.count > 0 && (i == count || a.count == LT_A8_BATCH)) {
            LT_CHECK_ARG(a.first[a.count] < (1ll << 31), "adamw8bit: %lld blocks is too many",
                         (long long)a.first[a.count]);
            k_adamw8bit_many<<<(unsigned)a.first[a.count], LT_ADAM8BIT_BLOCK, 0, c->stream>>>(
                a, c->dyn_maps, c->dyn_maps + 256, lr, beta1, beta2, eps, wd, correction2, step_size);
            LT_LAUNCH_CHECK("k_adamw8bit_many");
            memset(&a, 0, sizeof a);
            a.bf = bf;
        }
        if (i == count || n[i] <= 0) continue;
        const int k = a.count++;
        a.p[k] = p[i]; a.g[k] = g[i]; a.s1[k] = state1[i]; a.s2[k] = state2[i]; a.a1[k] = absmax1[i];
        a.a2[k] = absmax2[i]; a.n[k] = n[i];
        a.w16[k] = w16_dst_of(c, p[i], n[i]); /* written by this launch */
        a.first[k + 1] = a.first[k] + (n[i] + LT_ADAM8BIT_BLOCK - 1) / LT_ADAM8BIT_BLOCK;
    }
    return LT_OK;
}

lt_status lt_cuda_scale_many(lt_backend *be, int count, float *const *x, const int64_t *n, float s) {
    lt_cuda *c = lt_cuda_of(be);
    for (int i = 0; i < count; i++) lt_cuda_w16_invalidate(c, x[i], (size_t)n[i] * 4);
    return f32_many(count, x, n, [&](const lt_f32_many &a, dim3 grid) -> lt_status {
        k_scale_many<<<grid, 256, 0, c->stream>>>(a, s);
        LT_LAUNCH_CHECK("k_scale_many");
        return LT_OK;
    });
}

lt_status lt_cuda_adamw_many(lt_backend *be, int count, float *const *p, const float *const *g, float *const *m,
                             float *const *v, const int64_t *n, float lr, float beta1, float beta2, float eps, float wd,
                             int64_t t) {
    LT_CHECK_ARG(t >= 1, "adamw: step %lld must be >= 1", (long long)t);
    lt_cuda *c = lt_cuda_of(be);
    /* the scalars of lt_cuda_adamw */
    float decay, w1, w2, step_size, bc2_sqrt;
    adamw_scalars(lr, beta1, beta2, wd, t, &decay, &w1, &w2, &step_size, &bc2_sqrt);
    for (int b0 = 0; b0 < count; b0 += LT_ADAMW_BATCH) {
        const int nb = count - b0 < LT_ADAMW_BATCH ? count - b0 : LT_ADAMW_BATCH;
        lt_adamw_args a;
        memset(&a, 0, sizeof a);
        a.bf = be->act_dtype == LT_DTYPE_BF16;
        int64_t most = 1;
        for (int i = 0; i < nb; i++) {
            a.p[i] = p[b0 + i]; a.g[i] = g[b0 + i]; a.m[i] = m[b0 + i]; a.v[i] = v[b0 + i]; a.n[i] = n[b0 + i];
            if (a.n[i] > most) most = a.n[i];
            a.w16[i] = w16_dst_of(c, a.p[i], a.n[i]); /* written by this launch */
        }
        unsigned bx = lt_blocks(most, 256);
        if (bx > 64) bx = 64;
        k_adamw_many<<<dim3(bx, (unsigned)nb), 256, 0, c->stream>>>(a, decay, w1, w2, beta2, step_size, bc2_sqrt, eps);
        LT_LAUNCH_CHECK("k_adamw_many");
    }
    return LT_OK;
}

lt_status lt_cuda_memset0_many(lt_backend *be, int count, void *const *p, const size_t *bytes) {
    lt_cuda *c = lt_cuda_of(be);
    lt_zero_args a;
    int nb = 0;
    int64_t most = 1;
    for (int i = 0; i < count; i++) {
        if (!bytes[i]) continue;
        lt_cuda_w16_invalidate(c, p[i], bytes[i]);
        if (((uintptr_t)p[i] & 15) || (bytes[i] & 15)) { /* not whole 16-byte words: plain memset */
            LT_CUDA_TRY(cudaMemsetAsync(p[i], 0, bytes[i], c->stream));
            continue;
        }
        a.p[nb] = (uint4 *)p[i];
        a.n16[nb] = (int64_t)(bytes[i] / 16);
        if (a.n16[nb] > most) most = a.n16[nb];
        if (++nb == LT_MT_BATCH || i == count - 1) {
            unsigned bx = lt_blocks(most, 256);
            if (bx > 64) bx = 64;
            k_zero_many<<<dim3(bx, (unsigned)nb), 256, 0, c->stream>>>(a);
            LT_LAUNCH_CHECK("k_zero_many");
            nb = 0;
            most = 1;
        }
    }
    if (nb > 0) { /* the last buffers were skipped or plain */
        unsigned bx = lt_blocks(most, 256);
        if (bx > 64) bx = 64;
        k_zero_many<<<dim3(bx, (unsigned)nb), 256, 0, c->stream>>>(a);
        LT_LAUNCH_CHECK("k_zero_many");
    }
    return LT_OK;
}

/* cuda_common.h - what every cuda/*.cu file of the CUDA backend shares: the backend's private
 * state (stream, cuBLAS handle, scratch, allocation tracking), error-to-status macros, the
 * 16-bit type helpers the templated kernels use, and the op entry points each file defines
 * (cuda_backend.cu puts them into the lt_backend_ops table). Internal: C++ (nvcc) only. */
#ifndef LT_CUDA_COMMON_H
#define LT_CUDA_COMMON_H

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cublas_v2.h>
#include <stdint.h>
#include <stddef.h>

extern "C" {
#include "core/core.h"
#include "backend/backend.h"
}
#include "cuda_test.h"
#include "knobs.h"

/* One allocation made through the backend (for in_use / peak accounting). */
typedef struct lt_cuda_alloc {
    void *ptr;
    size_t bytes;
} lt_cuda_alloc;

typedef struct lt_cuda {
    int device;
    int cc;                     /* compute capability major*10+minor */
    int sm_count;
    size_t smem_optin;          /* max dynamic shared memory per block */
    char name[256];
    lt_cuda_knobs knobs;        /* the LT_CUDA_* switches, read once at creation (knobs.h) */
    cudaStream_t stream;
    cublasHandle_t cublas;
    void *cublas_ws;            /* cuBLAS workspace */
    size_t cublas_ws_bytes;
    /* one growable scratch buffer: every op carves its temporaries from it (stream order
     * makes reuse between ops safe) */
    void *scratch;
    size_t scratch_bytes;
    /* the soft-capped LM head's chunk buffers (family.cu): f32 logits and 16-bit d(logits) of
     * one chunk, kept from call to call and only grown, so that a training pass of a capped
     * model allocates and frees nothing and can be recorded as a CUDA graph */
    void *cap_ce;
    size_t cap_ce_bytes;
    /* small pinned host buffer for scalars coming back (sumsq partials, flags) */
    void *host_pinned;
    size_t host_pinned_bytes;
    /* allocation tracking */
    lt_cuda_alloc *allocs;
    size_t n_allocs, cap_allocs;
    uint64_t in_use, peak;
    cudaDataType_t act_type;    /* CUDA_R_16BF or CUDA_R_16F */
    float *dyn_maps;            /* [512] signed then unsigned dynamic map (8-bit AdamW), made on first use */
    /* knobs.profile: GPU time per op from event pairs, logged (LT_LOG_INFO) at destroy */
    cudaEvent_t *prof_ev;       /* [2 * LT_PROF_PENDING] */
    int prof_id[16384];         /* [LT_PROF_PENDING] */
    int prof_pending, prof_depth;
    long prof_heads;            /* LM head calls seen (LT_CUDA_PROFILE=k restarts at the k-th) */
    double prof_ms[64];
    long prof_calls[64];
    double prof_host_s[64]; /* host wall time inside each op (launch cost, host work, hidden waits) */
    /* GEMM algorithm choices per shape (gemm.cu), made on first use by timing cuBLASLt's
     * candidates unless deterministic; freed by lt_cuda_gemm_tuner_free */
    struct lt_gemm_tuner *gemm_tuner;
    /* 16-bit copies of the f32 LoRA weights the products read (gemm.cu), made on first use and
     * then written by the optimizer kernels together with the weights (lt_cuda_w16_outputs);
     * other ops that write f32 buffers mark the copies they overlap stale */
    struct lt_w16_cache *w16;
    /* the dequantized 16-bit copies of the last few frozen weights used (gemm.cu): the
     * checkpoint recompute of a layer and its backward, which follows at once, dequantize
     * each weight once between them instead of twice */
    struct lt_wcache *wcache;
    /* knobs.synctime 1: wall time the host spent waiting in stream synchronizations, logged at
     * destroy (a host that hardly waits is the bottleneck: the GPU idles between kernels);
     * 2 also logs each synchronization: the host's time since the previous one (enqueueing
     * work) and the wait */
    double sync_wait_s, sync_last_s;
    long syncs, mallocs;
    /* CUDA graphs of whole training passes (graph_begin/end/launch): while capturing, the dropout
     * kernels read (seed, stream xor) from drop_dev (lora.cu); mem_epoch counts frees, so that a
     * graph holding a pointer to freed memory is never replayed; off with knobs.graphs = 0 */
    int graph_capture;
    uint64_t *drop_dev;
    uint64_t mem_epoch;
    long graph_launches;
    /* checkpoint offload (offload_copy / offload_wait, cuda_backend.cu): a copy stream beside
     * the compute stream and two rings of events, the compute stream's point that copy t
     * starts after and copy t's end, in slot t % LT_OFFLOAD_EVENTS (the copy stream runs its
     * copies in order, so waiting on a later copy of a slot also waits for t); off_capture:
     * copies were queued while recording a graph (its end joins the copy stream back) */
    cudaStream_t copy_stream;
    cudaEvent_t *off_ev_main, *off_ev_copy;
    uint64_t off_tickets;
    int off_capture;
} lt_cuda;

static inline lt_cuda *lt_cuda_of(lt_backend *be) { return (lt_cuda *)be->impl; }

/* ---- profiling (knobs.profile: LT_CUDA_PROFILE) ---- */
/* events in flight before a harvest (a host sync): large, so that profiling does not make the
 * host wait every few ops and inflate the small ops' times with launch gaps */
#define LT_PROF_PENDING 16384
#define LT_OFFLOAD_EVENTS 64 /* checkpoint offload: events per ring */
enum { LT_PROF_DEQUANT = 40, LT_PROF_GEMM = 41, LT_PROF_DROPOUT = 42, LT_PROF_CE = 43, LT_PROF_HEAD_GEMM = 44,
       LT_PROF_ROWDOT = 45, LT_PROF_WGRAD = 46, LT_PROF_ADDMUL = 47 };
/* returns a slot to pass to lt_prof_end, or -1 when not profiling */
int lt_prof_begin(lt_cuda *c, int id);
void lt_prof_end(lt_cuda *c, int slot);

lt_status lt_cuda_adamw_many(lt_backend *be, int count, float *const *p, const float *const *g, float *const *m,
                             float *const *v, const int64_t *n, float lr, float beta1, float beta2, float eps, float wd,
                             int64_t t);
lt_status lt_cuda_memset0_many(lt_backend *be, int count, void *const *p, const size_t *bytes);
lt_status lt_cuda_scale_many(lt_backend *be, int count, float *const *x, const int64_t *n, float s);
lt_status lt_cuda_nonfinite_many(lt_backend *be, int count, const float *const *g, const int64_t *n, int *host_flag);
lt_status lt_cuda_adamw8bit_many(lt_backend *be, int count, float *const *p, const float *const *g,
                                 uint8_t *const *state1, uint8_t *const *state2, float *const *absmax1,
                                 float *const *absmax2, const int64_t *n, float lr, float beta1, float beta2,
                                 float eps, float wd, int64_t t);
void lt_cuda_gemm_tuner_free(lt_cuda *c);
/* *out = the 16-bit copy of the f32 matrix src (rows, cols), transposed when transpose (then
 * (cols, rows)), made on first use and after src changes through a backend op */
lt_status lt_cuda_w16(lt_backend *be, const float *src, int64_t rows, int64_t cols, int transpose, const void **out);
/* marks the copies of anything overlapping [p, p + bytes) stale (a write through an op) */
void lt_cuda_w16_invalidate(lt_cuda *c, const void *p, size_t bytes);
/* Where a kernel that rewrites the f32 tensor [p, p + n) (the optimizer's) writes its 16-bit
 * copies too, as lt_fromf of the new values (the bits a refresh would give): plain = the copy as
 * stored, trans = the transposed copy of the (rows, cols) matrix, NULL where there is none. The
 * caller must launch that kernel: the copies are marked fresh; any other copy overlapping the
 * tensor is marked stale. */
typedef struct lt_w16_out {
    void *plain, *trans;
    int64_t rows, cols;
} lt_w16_out;
void lt_cuda_w16_outputs(lt_cuda *c, const float *p, int64_t n, lt_w16_out *o);
void lt_cuda_w16_free(lt_cuda *c);
/* drops the copies made from [p, p + bytes) (an allocation being freed) */
void lt_cuda_w16_forget(lt_cuda *c, const void *p, size_t bytes);
/* forget W's cached 16-bit copy (called when W is freed: its address may come back) */
void lt_cuda_wcache_forget(lt_cuda *c, const lt_bweight *W);
void lt_cuda_wcache_free(lt_cuda *c);
/* every stale 16-bit copy made again now (before a graph replay that reads them) */
lt_status lt_cuda_w16_refresh(lt_backend *be);
/* every 16-bit copy marked stale (a capture that failed may have marked copies fresh whose
 * refresh it only recorded) */
void lt_cuda_w16_stale_all(lt_cuda *c);
/* the dequantized-weight cache forgets what its slots hold (the buffers stay): a graph captured
 * after this dequantizes every weight itself instead of relying on what an earlier pass left */
void lt_cuda_wcache_drop(lt_cuda *c);
/* 1 when every dequantized weight stays cached for the run (LT_CUDA_WCACHE=2, gemm.cu) */
int lt_cuda_wcache_resident(const lt_cuda *c);
/* a recording ended (ok: its graph is launched next): the cache slots it filled are kept, else
 * forgotten (gemm.cu) */
void lt_cuda_wcache_capture_end(lt_cuda *c, int ok);
/* cudaStreamSynchronize on the backend's stream, timed when knobs.synctime is set */
cudaError_t lt_cuda_stream_sync(lt_cuda *c);

/* ---- errors ---- */
lt_status lt_cuda_err(cudaError_t e, const char *what, const char *file, int line);
lt_status lt_cublas_err(cublasStatus_t s, const char *what, const char *file, int line);
#define LT_CUDA_TRY(call) do { cudaError_t e_ = (call); \
    if (e_ != cudaSuccess) return lt_cuda_err(e_, #call, __FILE__, __LINE__); } while (0)
#define LT_CUBLAS_TRY(call) do { cublasStatus_t s_ = (call); \
    if (s_ != CUBLAS_STATUS_SUCCESS) return lt_cublas_err(s_, #call, __FILE__, __LINE__); } while (0)
/* After every kernel launch. */
#define LT_LAUNCH_CHECK(name) do { cudaError_t e_ = cudaGetLastError(); \
    if (e_ != cudaSuccess) return lt_cuda_err(e_, "launch of " name, __FILE__, __LINE__); } while (0)

/* ---- memory ---- */
/* Tracked device allocation (not zero-filled); a failure says what was asked and what is free. */
lt_status lt_cuda_malloc(lt_cuda *c, size_t bytes, const char *what, void **out);
void lt_cuda_free(lt_cuda *c, void *p);
/* The scratch buffer, grown to at least `bytes` (contents are not kept across growth). */
lt_status lt_cuda_scratch(lt_cuda *c, size_t bytes, void **out);
/* Pinned host buffer of at least `bytes`. */
lt_status lt_cuda_host_buf(lt_cuda *c, size_t bytes, void **out);
/* Carves aligned pieces off a scratch region. */
static inline void *lt_carve(char **cursor, size_t bytes) {
    void *p = *cursor;
    *cursor += (bytes + 255) & ~(size_t)255;
    return p;
}
static inline size_t lt_align256(size_t b) { return (b + 255) & ~(size_t)255; }

static inline unsigned lt_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    if (b > 1048576) b = 1048576; /* kernels loop grid-stride past this */
    return (unsigned)(b < 1 ? 1 : b);
}

/* ---- 16-bit helpers for templated kernels ---- */
template <typename T> struct lt_t16;
template <> struct lt_t16<__nv_bfloat16> {
    static __device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
    static __device__ __forceinline__ __nv_bfloat16 from_f(float x) { return __float2bfloat16_rn(x); }
    /* two floats -> one 32-bit register, lo in the low half */
    static __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
        __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&v);
    }
};
template <> struct lt_t16<__half> {
    static __device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
    static __device__ __forceinline__ __half from_f(float x) { return __float2half_rn(x); }
    static __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
        __half2 v = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&v);
    }
};
template <typename T> __device__ __forceinline__ float lt_tof(T x) { return lt_t16<T>::to_f(x); }
template <typename T> __device__ __forceinline__ T lt_fromf(float x) { return lt_t16<T>::from_f(x); }
/* swiglu's value silu(g) * u before rounding: k_swiglu_fwd and the LoRA weight gradient that
 * makes down_proj's input on the fly (lora.cu) share it, so both round the same number. The
 * fast exponential and division (a few ulp of f32, far below the 16-bit rounding that follows)
 * keep the on-the-fly version cheap next to its memory traffic. */
__device__ __forceinline__ float lt_silu_mul(float g, float u) { return __fdividef(g, 1.0f + __expf(-g)) * u; }
/* swiglu's backward for one element: d = dL/d(silu(g) u) -> dL/dg, dL/du (k_swiglu_bwd and the
 * LoRA input-gradient kernel that ends in it, lora.cu, share it) */
__device__ __forceinline__ void lt_swiglu_bwd1(float d, float g, float u, float *dg, float *du) {
    const float sg = 1.0f / (1.0f + expf(-g));
    *du = d * (g * sg);
    *dg = d * u * sg * (1.0f + g * (1.0f - sg));
}
/* eight 16-bit values in one 16-byte word <-> eight floats */
template <typename T> __device__ __forceinline__ void lt_unpack8(const uint4 &v, float f[8]) {
    const T *h = reinterpret_cast<const T *>(&v);
#pragma unroll
    for (int j = 0; j < 8; j++) f[j] = lt_tof<T>(h[j]);
}
template <typename T> __device__ __forceinline__ uint4 lt_pack8(const float f[8]) {
    uint4 v;
    v.x = lt_t16<T>::pack2(f[0], f[1]);
    v.y = lt_t16<T>::pack2(f[2], f[3]);
    v.z = lt_t16<T>::pack2(f[4], f[5]);
    v.w = lt_t16<T>::pack2(f[6], f[7]);
    return v;
}

/* Calls `launch.template operator()<T>()` with T the backend's activation type. */
#define LT_DISPATCH_ACT(be, ...) \
    ((be)->act_dtype == LT_DTYPE_BF16 ? __VA_ARGS__(__nv_bfloat16{}) : __VA_ARGS__(__half{}))

/* ---- the frozen weight ---- */
struct lt_bweight {
    int64_t rows, cols;
    int32_t quant;          /* LT_QUANT_NF4 or LT_QUANT_NONE */
    int32_t double_quant;
    void *data16;           /* NONE: act dtype [rows, cols] */
    uint8_t *packed;        /* NF4: [rows*cols/2], high nibble = even element */
    float *absmax_f32;      /* NF4 without double quant: [nblocks] */
    uint8_t *absmax_u8;     /* with double quant: [nblocks] */
    float *nested_absmax;   /* [ceil(nblocks/256)] */
    float *nested_code;     /* [256] */
    float nested_offset;
    float *quant_map;       /* [16] */
    int64_t nblocks;
    size_t bytes;
};
#define LT_NF4_BLOCK 64
#define LT_NF4_NESTED_BLOCK 256

/* Dequantizes (or copies) W into a 16-bit act-dtype buffer [rows, cols]; *out points into the
 * scratch at `scratch_off` bytes unless W is already 16-bit (then *out = W->data16). */
/* the extra columns [lo, hi) of the wider rows the grouped LoRA products read (gemm.cu): row o
 * holds scale * B[o][j - offB] at j in [offB, offB + R), bias[o] at offBias (B, bias may be
 * NULL), zero elsewhere; written by the same launch that dequantizes W into the row */
typedef struct lt_wext {
    int64_t lo, hi, offB, R, offBias;
    const float *B, *bias;
    float scale;
} lt_wext;
lt_status lt_cuda_weight_16_into(lt_backend *be, const lt_bweight *W, void *dst, int64_t ld, int64_t off,
                                 const lt_wext *ext);
/* the extra columns alone, into rows ld elements apart of dst */
lt_status lt_cuda_weight_ext(lt_backend *be, int64_t rows, void *dst, int64_t ld, const lt_wext *e);
lt_status lt_cuda_linear_lora_group_fwd(lt_backend *be, int n, void *const *out, const void *inp,
                                        const lt_bweight *const *W, const float *const *bias, const void *const *xa,
                                        const float *const *B, int64_t N, int64_t R, float scale);
lt_status lt_cuda_lora_xa_multi(lt_backend *be, int n, void *const *xa, const void *inp, const float *const *A,
                                int64_t N, int64_t C, int64_t R, float p, uint64_t seed, const uint64_t *streams);
lt_status lt_cuda_lora_bwd_multi(lt_backend *be, int n, float *const *dA, float *const *dB, void *dinp,
                                 const void *const *dout, const void *inp, const void *const *xa,
                                 const float *const *A, const float *const *B, int64_t N, int64_t C,
                                 const int64_t *OC, int64_t R, float scale, float p, uint64_t seed,
                                 const uint64_t *streams);
lt_status lt_cuda_add_lora(lt_backend *be, void *out, const void *a, const void *b, const void *xa, const float *B,
                           int64_t N, int64_t OC, int64_t R, float scale);
lt_status lt_cuda_weight_16(lt_backend *be, const lt_bweight *W, void *dst, const void **out);
/* f32 dequantization on the device (code * absmax exactly as bitsandbytes computes it). */
lt_status lt_cuda_weight_dequant_f32(lt_backend *be, const lt_bweight *W, float *dev_out);

/* cuBLAS GEMM in column-major terms, fp32 accumulation. */
lt_status lt_cuda_gemm(lt_backend *be, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n,
                       int64_t k, float alpha, const void *A, cudaDataType_t at, int64_t lda, const void *B,
                       cudaDataType_t bt, int64_t ldb, float beta, void *C, cudaDataType_t ct, int64_t ldc);
/* the same with a separate output: D = alpha op(A) op(B) + beta C (C is read, D written) */
lt_status lt_cuda_gemm_cd(lt_backend *be, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n,
                          int64_t k, float alpha, const void *A, cudaDataType_t at, int64_t lda, const void *B,
                          cudaDataType_t bt, int64_t ldb, float beta, const void *C, void *D, cudaDataType_t ct,
                          int64_t ldc);
lt_status lt_cuda_linear_fwd_add(lt_backend *be, void *out, const void *inp, const lt_bweight *W, const void *resid,
                                 int64_t N);
lt_status lt_cuda_lora_up_add(lt_backend *be, void *out, const void *xa, const float *B, int64_t N, int64_t OC,
                              int64_t R, float scale);
/* f32 -> act conversion of n values on the stream (used for LoRA weights in GEMMs). */
lt_status lt_cuda_f32_to_act(lt_backend *be, void *dst, const float *src, int64_t n);

/* ---- op entry points (one .cu per family) ---- */
/* nf4.cu */
lt_status lt_cuda_weight_create(lt_backend *be, const lt_weight_desc *desc, lt_bweight **out);
void lt_cuda_weight_free(lt_backend *be, lt_bweight *w);
lt_status lt_cuda_weight_read(lt_backend *be, const lt_bweight *w, float *host_out);
size_t lt_cuda_weight_bytes(const lt_bweight *w);
lt_status lt_cuda_embedding(lt_backend *be, void *out, const int32_t *ids, const lt_bweight *table, int64_t N,
                            int64_t C);
/* elementwise.cu */
lt_status lt_cuda_to_act(lt_backend *be, void *act_dst, const float *f32_src, int64_t n);
lt_status lt_cuda_from_act(lt_backend *be, float *f32_dst, const void *act_src, int64_t n);
lt_status lt_cuda_rmsnorm_fwd(lt_backend *be, void *out, float *rstd, const void *inp, const float *w, int64_t N,
                              int64_t C, float eps);
lt_status lt_cuda_rmsnorm_bwd(lt_backend *be, void *dinp, const void *dout, const void *inp, const float *w,
                              const float *rstd, int64_t N, int64_t C);
lt_status lt_cuda_rope_fwd(lt_backend *be, void *x, const int32_t *pos, int64_t N, int64_t H, int64_t HD, float theta);
lt_status lt_cuda_rope_bwd(lt_backend *be, void *dx, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                           float theta);
lt_status lt_cuda_swiglu_fwd(lt_backend *be, void *out, const void *gate, const void *up, int64_t n);
lt_status lt_cuda_swiglu_bwd(lt_backend *be, void *dgate, void *dup, const void *dout, const void *gate,
                             const void *up, int64_t n);
lt_status lt_cuda_add(lt_backend *be, void *out, const void *a, const void *b, int64_t n);
lt_status lt_cuda_bias_add(lt_backend *be, void *out, const float *bias, int64_t N, int64_t OC);
lt_status lt_cuda_dropout_apply(lt_backend *be, void *dst, const void *src, int64_t N, int64_t C, float p,
                                uint64_t seed, uint64_t stream, int accumulate);
/* gemm.cu */
lt_status lt_cuda_linear_fwd(lt_backend *be, void *out, const void *inp, const lt_bweight *W, const float *bias,
                             int64_t N);
lt_status lt_cuda_linear_bwd_input(lt_backend *be, void *dinp, const void *dout, const lt_bweight *W, int64_t N,
                                   int accumulate);
lt_status lt_cuda_lora_fwd(lt_backend *be, void *out, void *xa, const void *inp, const float *A, const float *B,
                           int64_t N, int64_t C, int64_t OC, int64_t R, float scale, float p, uint64_t seed,
                           uint64_t stream);
lt_status lt_cuda_lora_bwd(lt_backend *be, float *dA, float *dB, void *dinp, const void *dout, const void *inp,
                           const void *xa, const float *A, const float *B, int64_t N, int64_t C, int64_t OC,
                           int64_t R, float scale, float p, uint64_t seed, uint64_t stream);
/* lt_cuda_lora_bwd for an input swiglu(gate, up) that is not in memory (down_proj in the
 * checkpoint recompute): made on the fly where it is read, or written into act first when the
 * module has no fast path; with dgate/dup, swiglu_bwd of the total input gradient follows
 * (fused into the input-gradient kernel where it runs) */
lt_status lt_cuda_lora_bwd_swiglu(lt_backend *be, float *dA, float *dB, void *dinp, const void *dout,
                                  const void *gate, const void *up, void *act, const void *xa, const float *A,
                                  const float *B, int64_t N, int64_t C, int64_t OC, int64_t R, float scale, float p,
                                  uint64_t seed, uint64_t stream, void *dgate, void *dup);
bool lt_cuda_lora_addmul_swiglu_ok(const lt_cuda *c);
lt_status lt_cuda_lora_addmul_swiglu(lt_backend *be, const void *y, const void *coef, const float *A, int64_t N,
                                     int64_t M, int64_t R, float alpha, float p, uint64_t seed, uint64_t stream,
                                     const void *gate, const void *up, void *dgate, void *dup);
lt_status lt_cuda_lm_head_logits(lt_backend *be, float *logits, const void *h, const lt_bweight *head, int64_t N,
                                 int64_t C, int64_t V);
/* argmax.cu: out[r] = the column of row r's largest value (the lowest among equals) */
lt_status lt_cuda_argmax_rows(lt_backend *be, int32_t *out, const float *x, int64_t rows, int64_t cols);
/* lora.cu: the skinny LoRA products on tensor cores (rank 8, 16 or 32; C and OC multiples of 8) */
bool lt_cuda_lora_fast_ok(int64_t R, int64_t C, int64_t OC);
lt_status lt_cuda_lora_rowdot(lt_backend *be, void *y, const void *x, const void *W, int64_t N, int64_t M, int64_t R,
                              float alpha, float p, uint64_t seed, uint64_t stream);
lt_status lt_cuda_lora_wgrad(lt_backend *be, float *G, int64_t sm, int64_t sr, const void *x, const void *coef,
                             int64_t N, int64_t M, int64_t R, float alpha, float p, uint64_t seed, uint64_t stream,
                             float *part, int nchunks);
lt_status lt_cuda_lora_wgrad_swiglu(lt_backend *be, float *G, int64_t sm, int64_t sr, const void *gate,
                                    const void *up, const void *coef, int64_t N, int64_t M, int64_t R, float alpha,
                                    float p, uint64_t seed, uint64_t stream, float *part, int nchunks);
int lt_cuda_lora_wg_chunks(int64_t N, int64_t M);
/* y(N,M) += alpha * drop(coef(N,R) @ W(R,M)) in place, W(r, m) = W[r*wr + m*wm] f32 (the LoRA
 * output of the forward with W = B^T, and the LoRA part of dinp with W = A) */
lt_status lt_cuda_lora_addmul(lt_backend *be, void *y, const void *coef, const float *W, int64_t wr, int64_t wm,
                              int64_t N, int64_t M, int64_t R, float alpha, float p, uint64_t seed,
                              uint64_t stream);
/* Up to LT_LORA_MULTI LoRA modules over one shared input x(N,M) (q/k/v over ln1, gate/up over
 * ln2): x is read once for all of them; module s keeps its own dropout mask (the one a single
 * call with streams[s] draws). Each result equals that of n single calls (addmul: one rounding
 * of y instead of n). W/coef/G/y of different modules never alias. */
#define LT_LORA_MULTI 3
/* y[s](N,R) = alpha * drop_s(x)(N,M) @ W[s](R,M)^T */
lt_status lt_cuda_lora_rowdot_multi(lt_backend *be, int n, void *const *y, const void *x, const void *const *W,
                                    int64_t N, int64_t M, int64_t R, float alpha, float p, uint64_t seed,
                                    const uint64_t *streams);
/* G[s][m*sm + r*sr] += alpha * (drop_s(x)^T @ coef[s])[m][r]; part: scratch of n*nchunks*M*R floats */
lt_status lt_cuda_lora_wgrad_multi(lt_backend *be, int n, float *const *G, int64_t sm, int64_t sr, const void *x,
                                   const void *const *coef, int64_t N, int64_t M, int64_t R, float alpha, float p,
                                   uint64_t seed, const uint64_t *streams, float *part, int nchunks);
/* y(N,M) += alpha * sum_s drop_s(coef[s](N,R) @ W[s](R,M)), W[s](r, m) = W[s][r*wr + m*wm] f32 */
lt_status lt_cuda_lora_addmul_multi(lt_backend *be, int n, void *y, const void *const *coef, const float *const *W,
                                    int64_t wr, int64_t wm, int64_t N, int64_t M, int64_t R, float alpha, float p,
                                    uint64_t seed, const uint64_t *streams);
/* lm_head_ce.cu */
lt_status lt_cuda_lm_head_ce(lt_backend *be, float *loss_sum, void *dh, const void *h, const lt_bweight *head,
                             const int32_t *targets, int64_t N, int64_t C, int64_t V, float grad_scale);
/* *sum += x[0] + ... + x[n-1] (device f32), summed in a fixed order on the stream */
lt_status lt_cuda_sum_into(lt_backend *be, float *sum, const float *x, int64_t n);
/* attention.cu */
lt_status lt_cuda_attention_fwd(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                                const int32_t *cu_seqlens, int32_t nseq, int32_t max_seqlen, int64_t N, int64_t NH,
                                int64_t NKV, int64_t HD);
lt_status lt_cuda_attention_bwd(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                                const void *k, const void *v, const void *out, const float *lse,
                                const int32_t *cu_seqlens, int32_t nseq, int32_t max_seqlen, int64_t N, int64_t NH,
                                int64_t NKV, int64_t HD);
lt_status lt_cuda_attention_kv(lt_backend *be, void *out, const void *q, const void *kcache, const void *vcache,
                               int64_t past, int64_t n, int64_t NH, int64_t NKV, int64_t HD);
/* optim.cu */
lt_status lt_cuda_sumsq(lt_backend *be, const float *g, int64_t n, double *host_sumsq);
lt_status lt_cuda_scale(lt_backend *be, float *x, int64_t n, float s);
lt_status lt_cuda_adamw(lt_backend *be, float *p, const float *g, float *m, float *v, int64_t n, float lr,
                        float beta1, float beta2, float eps, float wd, int64_t t);
lt_status lt_cuda_adamw8bit(lt_backend *be, float *p, const float *g, uint8_t *state1, uint8_t *state2,
                            float *absmax1, float *absmax2, int64_t n, float lr, float beta1, float beta2, float eps,
                            float wd, int64_t t);
lt_status lt_cuda_nonfinite(lt_backend *be, const float *g, int64_t n, int *host_flag);
/* elementwise.cu: sum of squares of many f32 tensors, one sync (lt_backend_ops.sumsq_many) */
lt_status lt_cuda_sumsq_many(lt_backend *be, int count, const float *const *g, const int64_t *n, double *host_sumsq);

#endif

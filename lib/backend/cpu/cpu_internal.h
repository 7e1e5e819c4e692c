/* cpu_internal.h - what the files of the CPU fp32 reference backend share: the weight type,
 * the backend's private state, small dot/axpy kernels, and the op functions that cpu_backend.c
 * puts into the op table. Activations are float32 (act_bytes 4). */
#ifndef LT_CPU_INTERNAL_H
#define LT_CPU_INTERNAL_H
#include "backend/backend.h"
#include "core/core.h"
#include <stdint.h>

struct lt_bweight {
    float *w;            /* [rows, cols] f32, the values the forward pass sees */
    int64_t rows, cols;
};

typedef struct lt_cpu {
    uint64_t in_use, peak; /* bytes of alloc'd buffers and weights */
    uint64_t offload_copies; /* offload_copy calls made (their tickets) */
} lt_cpu;

#define LT_CPU_THREADS(be) ((be)->n_threads > 0 ? (be)->n_threads : 1)
/* Threads for `items` independent items of about `work` flops each: starting threads costs
 * tens of microseconds, so small ops run inline. */
static inline int lt_cpu_threads_for(const lt_backend *be, int64_t items, int64_t work) {
    return items * work < 65536 ? 1 : LT_CPU_THREADS(be);
}

/* sum a[i]*b[i] with 8 independent partial sums added in a fixed order, so that the compiler
 * can vectorize it and the result never depends on threads. */
static inline float lt_cpu_dot(const float *a, const float *b, int64_t n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    float tail = 0.0f;
    for (; i < n; i++) tail += a[i] * b[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}
/* y += a * x */
static inline void lt_cpu_axpy(float *y, float a, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

/* cpu_kernel.c: inner loops, as portable C and (x86-64 with AVX2+FMA, chosen at run time) SIMD.
 * kern: c[i*rsc + j*csc] = sum_k a[i*sa + k*sk] * b[k*ldb + j] for i < mr <= 6, j < nr <= 16,
 *       summed in k order from 0 (rows i >= mr are not read, all 16 columns of b are read, only
 *       i < mr, j < nr are stored), so an element's value never depends on its tile; with
 *       accumulate the sums start from c's values instead of 0 (the same chain as one longer k).
 * colmax: mx[j] = max over r < rows of e[r*ld + j], j < 16.
 * colexp: e[r*ld + j] = exp(e[r*ld + j] - mx[j]) in place, sum[j] = their sum (double), j < 16. */
#define LT_CPU_MR 6
#define LT_CPU_NR 16
typedef struct lt_cpu_kernels {
    const char *name;
    void (*kern)(int64_t K, const float *a, int64_t sa, int64_t sk, const float *b, int64_t ldb, float *c,
                 int64_t rsc, int64_t csc, int mr, int nr, int accumulate);
    void (*colmax)(const float *e, int64_t rows, int64_t ld, float *mx);
    void (*colexp)(float *e, int64_t rows, int64_t ld, const float *mx, double *sum);
} lt_cpu_kernels;
const lt_cpu_kernels *lt_cpu_kernels_get(void);
/* tests and benchmarks: simd 0 = portable C from now on, 1 = the best the CPU has (and what
 * LT_CPU_SIMD=0 allows); returns 1 when SIMD kernels are in use. */
int lt_cpu_kernels_force(int simd);

/* weights and memory (cpu_backend.c) */
void lt_cpu_account(lt_backend *be, int64_t delta);

/* cpu_matmul.c */
/* out(N,M) = a(N,K) @ b(M,K)^T (+ bias[M]) with the SIMD kernel; LT_ERR_OUT_OF_MEMORY only */
lt_status lt_cpu_gemm_nt(lt_backend *be, float *out, const float *a, const float *b, const float *bias, int64_t N,
                         int64_t M, int64_t K);
lt_status lt_cpu_linear_fwd(lt_backend *be, void *out, const void *inp, const lt_bweight *W, const float *bias,
                            int64_t N);
lt_status lt_cpu_linear_fwd_add(lt_backend *be, void *out, const void *inp, const lt_bweight *W, const void *resid,
                                int64_t N);
lt_status lt_cpu_lora_up_add(lt_backend *be, void *out, const void *xa, const float *B, int64_t N, int64_t OC,
                             int64_t R, float scale);
lt_status lt_cpu_linear_bwd_input(lt_backend *be, void *dinp, const void *dout, const lt_bweight *W, int64_t N,
                                  int accumulate);
lt_status lt_cpu_linear_lora_group_fwd(lt_backend *be, int n, void *const *out, const void *inp,
                                       const lt_bweight *const *W, const float *const *bias, const void *const *xa,
                                       const float *const *B, int64_t N, int64_t R, float scale);
lt_status lt_cpu_lora_xa_multi(lt_backend *be, int n, void *const *xa, const void *inp, const float *const *A,
                               int64_t N, int64_t C, int64_t R, float p, uint64_t seed, const uint64_t *streams);
lt_status lt_cpu_lora_bwd_multi(lt_backend *be, int n, float *const *dA, float *const *dB, void *dinp,
                                const void *const *dout, const void *inp, const void *const *xa,
                                const float *const *A, const float *const *B, int64_t N, int64_t C,
                                const int64_t *OC, int64_t R, float scale, float p, uint64_t seed,
                                const uint64_t *streams);
lt_status lt_cpu_add_lora(lt_backend *be, void *out, const void *a, const void *b, const void *xa, const float *B,
                          int64_t N, int64_t OC, int64_t R, float scale);
lt_status lt_cpu_lora_fwd(lt_backend *be, void *out, void *xa, const void *inp, const float *A, const float *B,
                          int64_t N, int64_t C, int64_t OC, int64_t R, float scale, float p, uint64_t seed,
                          uint64_t stream);
lt_status lt_cpu_lora_bwd_swiglu(lt_backend *be, float *dA, float *dB, void *dinp, const void *dout, const void *gate,
                                 const void *up, void *act, const void *xa, const float *A, const float *B, int64_t N,
                                 int64_t C, int64_t OC, int64_t R, float scale, float p, uint64_t seed,
                                 uint64_t stream, void *dgate, void *dup);
lt_status lt_cpu_lora_bwd(lt_backend *be, float *dA, float *dB, void *dinp, const void *dout, const void *inp,
                          const void *xa, const float *A, const float *B, int64_t N, int64_t C, int64_t OC,
                          int64_t R, float scale, float p, uint64_t seed, uint64_t stream);
/* cpu_lm_head.c */
lt_status lt_cpu_lm_head_ce(lt_backend *be, float *loss_sum, void *dh, const void *h, const lt_bweight *head,
                            const int32_t *targets, int64_t N, int64_t C, int64_t V, float grad_scale);
lt_status lt_cpu_lm_head_logits(lt_backend *be, float *logits, const void *h, const lt_bweight *head, int64_t N,
                                int64_t C, int64_t V);
lt_status lt_cpu_lm_head_ce_cap(lt_backend *be, float *loss_sum, void *dh, const void *h, const lt_bweight *head,
                                const int32_t *targets, int64_t N, int64_t C, int64_t V, float grad_scale,
                                float softcap);
lt_status lt_cpu_lm_head_logits_cap(lt_backend *be, float *logits, const void *h, const lt_bweight *head, int64_t N,
                                    int64_t C, int64_t V, float softcap);

/* cpu_layers.c */
lt_status lt_cpu_embedding(lt_backend *be, void *out, const int32_t *ids, const lt_bweight *table, int64_t N,
                           int64_t C);
lt_status lt_cpu_rmsnorm_fwd(lt_backend *be, void *out, float *rstd, const void *inp, const float *w, int64_t N,
                             int64_t C, float eps);
lt_status lt_cpu_rmsnorm_bwd(lt_backend *be, void *dinp, const void *dout, const void *inp, const float *w,
                             const float *rstd, int64_t N, int64_t C);
lt_status lt_cpu_rope_fwd(lt_backend *be, void *x, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                          float theta);
lt_status lt_cpu_rope_bwd(lt_backend *be, void *dx, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                          float theta);
lt_status lt_cpu_swiglu_fwd(lt_backend *be, void *out, const void *gate, const void *up, int64_t n);
lt_status lt_cpu_swiglu_bwd(lt_backend *be, void *dgate, void *dup, const void *dout, const void *gate,
                            const void *up, int64_t n);
lt_status lt_cpu_add(lt_backend *be, void *out, const void *a, const void *b, int64_t n);
lt_status lt_cpu_rope_freq_fwd(lt_backend *be, void *x, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                               float theta, const float *inv_freq, float af);
lt_status lt_cpu_rope_freq_bwd(lt_backend *be, void *dx, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                               float theta, const float *inv_freq, float af);
lt_status lt_cpu_glu_fwd(lt_backend *be, int act, void *out, const void *gate, const void *up, int64_t n);
lt_status lt_cpu_glu_bwd(lt_backend *be, int act, void *dgate, void *dup, const void *dout, const void *gate,
                         const void *up, int64_t n);
lt_status lt_cpu_scale_act(lt_backend *be, void *x, int64_t n, float s);

/* cpu_attention.c */
lt_status lt_cpu_attention_fwd(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                               const int32_t *cu_seqlens, int32_t nseq, int32_t max_seqlen, int64_t N, int64_t NH,
                               int64_t NKV, int64_t HD);
lt_status lt_cpu_attention_bwd(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                               const void *k, const void *v, const void *out, const float *lse,
                               const int32_t *cu_seqlens, int32_t nseq, int32_t max_seqlen, int64_t N, int64_t NH,
                               int64_t NKV, int64_t HD);
lt_status lt_cpu_attention_kv(lt_backend *be, void *out, const void *q, const void *kcache, const void *vcache,
                              int64_t past, int64_t n, int64_t NH, int64_t NKV, int64_t HD);
lt_status lt_cpu_attention_opt_fwd(lt_backend *be, void *out, float *lse, const void *q, const void *k,
                                   const void *v, const int32_t *cu_seqlens, int32_t nseq, int32_t max_seqlen,
                                   int64_t N, int64_t NH, int64_t NKV, int64_t HD, const lt_attn_opts *o);
lt_status lt_cpu_attention_opt_bwd(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                                   const void *k, const void *v, const void *out, const float *lse,
                                   const int32_t *cu_seqlens, int32_t nseq, int32_t max_seqlen, int64_t N,
                                   int64_t NH, int64_t NKV, int64_t HD, const lt_attn_opts *o);
lt_status lt_cpu_attention_opt_kv(lt_backend *be, void *out, const void *q, const void *kcache, const void *vcache,
                                  int64_t past, int64_t n, int64_t NH, int64_t NKV, int64_t HD,
                                  const lt_attn_opts *o);

/* cpu_optim.c */
lt_status lt_cpu_sumsq(lt_backend *be, const float *g, int64_t n, double *host_sumsq);
lt_status lt_cpu_scale(lt_backend *be, float *x, int64_t n, float s);
lt_status lt_cpu_adamw(lt_backend *be, float *p, const float *g, float *m, float *v, int64_t n, float lr,
                       float beta1, float beta2, float eps, float wd, int64_t t);
lt_status lt_cpu_adamw8bit(lt_backend *be, float *p, const float *g, uint8_t *state1, uint8_t *state2,
                           float *absmax1, float *absmax2, int64_t n, float lr, float beta1, float beta2, float eps,
                           float wd, int64_t t);
lt_status lt_cpu_nonfinite(lt_backend *be, const float *g, int64_t n, int *host_flag);
#endif

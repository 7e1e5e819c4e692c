/* family.h - the model-family ops of the CUDA backend (family.cu), installed in the op table by
 * cuda_backend.cu. */
#ifndef LT_CUDA_FAMILY_H
#define LT_CUDA_FAMILY_H
#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif
lt_status lt_cuda_rope_freq_fwd(lt_backend *be, void *x, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                                float theta, const float *inv_freq, float af);
lt_status lt_cuda_rope_freq_bwd(lt_backend *be, void *dx, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                                float theta, const float *inv_freq, float af);
lt_status lt_cuda_glu_fwd(lt_backend *be, int act, void *out, const void *gate, const void *up, int64_t n);
lt_status lt_cuda_glu_bwd(lt_backend *be, int act, void *dgate, void *dup, const void *dout, const void *gate,
                          const void *up, int64_t n);
lt_status lt_cuda_scale_act(lt_backend *be, void *x, int64_t n, float s);
lt_status lt_cuda_attention_opt_fwd(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                                    const int32_t *cu, int32_t nseq, int32_t max_seqlen, int64_t N, int64_t NH,
                                    int64_t NKV, int64_t HD, const lt_attn_opts *o);
lt_status lt_cuda_attention_opt_bwd(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                                    const void *k, const void *v, const void *out, const float *lse, const int32_t *cu,
                                    int32_t nseq, int32_t max_seqlen, int64_t N, int64_t NH, int64_t NKV, int64_t HD,
                                    const lt_attn_opts *o);
lt_status lt_cuda_attention_opt_kv(lt_backend *be, void *out, const void *q, const void *kc, const void *vc,
                                   int64_t past, int64_t n, int64_t NH, int64_t NKV, int64_t HD,
                                   const lt_attn_opts *o);
/* attn_gemm.cu: attention with options on cuBLAS products over a padded (or, for many short
 * records, packed) copy of the sequences (any head dim, scale, soft-cap, window, GQA); _ok:
 * whether it can take the batch (a cuBLAS handle, max_seqlen known) */
int lt_cuda_attention_gemm_ok(lt_backend *be, int64_t N, int32_t nseq, int32_t max_seqlen);
lt_status lt_cuda_attention_gemm_fwd(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                                     const int32_t *cu, int32_t nseq, int32_t max_seqlen, int64_t N, int64_t NH,
                                     int64_t NKV, int64_t HD, const lt_attn_opts *o);
lt_status lt_cuda_attention_gemm_bwd(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                                     const void *k, const void *v, const void *out, const float *lse, const int32_t *cu,
                                     int32_t nseq, int32_t max_seqlen, int64_t N, int64_t NH, int64_t NKV, int64_t HD,
                                     const lt_attn_opts *o);
/* test hook: bytes of one f32 score buffer of attn_gemm.cu (0: the default, 128 MiB); small
 * values force several products per block and short blocks */
void lt_cuda_attention_gemm_budget(size_t bytes);
/* test hook: 1 sends attention with options to the fallback kernels (family.cu's per-query
 * kernels, attention.cu's portable ones), so that the tests still cover them */
void lt_cuda_attention_gemm_force_off(int on);
/* attention.cu: whether its flash (tensor-core) kernels take head dim HD on this GPU */
int lt_cuda_attention_flash_ok(lt_backend *be, int64_t HD);
lt_status lt_cuda_lm_head_logits_cap(lt_backend *be, float *logits, const void *h, const lt_bweight *head, int64_t N,
                                     int64_t C, int64_t V, float cap);
lt_status lt_cuda_lm_head_ce_cap(lt_backend *be, float *loss_sum, void *dh, const void *h, const lt_bweight *head,
                                 const int32_t *targets, int64_t N, int64_t C, int64_t V, float grad_scale, float cap);
#ifdef __cplusplus
}
#endif
#endif

/* backend.h - the op table every backend fills (cpu/ the fp32 reference, cuda/ the fast one).
 *
 * The model code (lib/model) writes the decoder layer's forward and backward once, from the
 * config's layer description, in terms of these ops.
 * Conventions:
 *   - "act" buffers hold activations in the backend's activation dtype (be->act_dtype: F32 on
 *     the CPU, BF16 or F16 on CUDA); their element size is be->act_bytes.
 *   - "f32" buffers are float32 on the device (LoRA weights, their gradients, optimizer
 *     states, norm weights, biases, rstd, lse, losses).
 *   - "i32" buffers are int32 on the device (token ids, positions, targets, cu_seqlens).
 *   - All pointers are backend memory from be->ops.alloc (host memory for the CPU backend),
 *     except where a parameter is named host_*.
 *   - Shapes in comments: N tokens (a packed micro-batch: sequences end to end, each with its
 *     own positions; cu_seqlens[nseq+1] gives the boundaries), C hidden, OC out features,
 *     NH query heads, NKV kv heads, HD head dim, I intermediate, V vocab, R LoRA rank.
 *   - Backward ops ACCUMULATE (+=) into parameter gradients and into dinp where noted
 *     "(+=)"; others overwrite.
 *   - Every op returns lt_status; a CUDA/cuBLAS failure becomes LT_ERR_CUDA with a message.
 *   - Ops are asynchronous on the backend's stream; ops.sync waits.
 */
#ifndef LT_BACKEND_H
#define LT_BACKEND_H

#include "loratune.h"
#include <stddef.h>
#include <stdint.h>

typedef struct lt_backend lt_backend;
struct lt_model;

/* Options of attention_opt_*: scale of the scores, soft-capping (0: none), sliding window
 * (0: none). */
typedef struct lt_attn_opts {
    float scale;
    float softcap;
    int32_t window;
} lt_attn_opts;

/* glu_fwd / glu_bwd activations */
enum { LT_BACT_SILU = 0, LT_BACT_GELU_TANH = 1 };

/* A frozen base matrix W[OC, C] (row-major as Hugging Face stores it), kept as the backend
 * likes: f32 on the CPU; NF4 (bitsandbytes layout) or 16-bit on CUDA. */
typedef struct lt_bweight lt_bweight;

typedef struct lt_weight_desc {
    const void *host;      /* row-major [rows, cols] in `dtype`, or NULL for pre-quantized */
    int32_t dtype;         /* LT_DTYPE_F32 / F16 / BF16 */
    int64_t rows, cols;    /* OC, C */
    int32_t quant;         /* lt_quant: NF4 quantizes at upload (CUDA); NONE keeps 16 bits */
    int32_t double_quant;
    /* pre-quantized bitsandbytes NF4 (host pointers; NULL unless loading a bnb-4bit file) */
    const uint8_t *nf4_packed;      /* [rows*cols/2] high nibble first */
    const float *absmax_f32;        /* [nblocks] without double quant */
    const uint8_t *absmax_u8;       /* [nblocks] with double quant */
    const float *nested_absmax;     /* [ceil(nblocks/256)] */
    const float *nested_code;       /* [256] */
    float nested_offset;
    const float *quant_map;         /* [16] */
} lt_weight_desc;

typedef struct lt_backend_ops {
    const char *name; /* "cpu", "cuda" */
    void (*destroy)(lt_backend *be);

    /* ---- memory ---- */
    lt_status (*alloc)(lt_backend *be, size_t bytes, void **out);   /* zero-filled */
    void (*free)(lt_backend *be, void *p);
    lt_status (*upload)(lt_backend *be, void *dst, const void *host_src, size_t bytes);
    lt_status (*download)(lt_backend *be, void *host_dst, const void *src, size_t bytes);
    lt_status (*memset0)(lt_backend *be, void *p, size_t bytes);
    lt_status (*copy)(lt_backend *be, void *dst, const void *src, size_t bytes);
    lt_status (*sync)(lt_backend *be);
    /* converts n values between f32 and the act dtype */
    lt_status (*to_act)(lt_backend *be, void *act_dst, const float *f32_src, int64_t n);
    lt_status (*from_act)(lt_backend *be, float *f32_dst, const void *act_src, int64_t n);

    /* ---- frozen weights ---- */
    lt_status (*weight_create)(lt_backend *be, const lt_weight_desc *desc, lt_bweight **out);
    void (*weight_free)(lt_backend *be, lt_bweight *w);
    /* Writes the weight as the forward pass sees it (dequantized), f32 [rows, cols], on the host. */
    lt_status (*weight_read)(lt_backend *be, const lt_bweight *w, float *host_out);
    size_t (*weight_bytes)(const lt_bweight *w);

    /* ---- layers ---- */
    /* out(N,C) = table[ids] ; table is a weight created with quant NONE (rows = V) */
    lt_status (*embedding)(lt_backend *be, void *out, const int32_t *ids, const lt_bweight *table,
                           int64_t N, int64_t C);
    /* out(N,C) = x / rms(x) * w ; rstd(N) f32 saved for backward */
    lt_status (*rmsnorm_fwd)(lt_backend *be, void *out, float *rstd, const void *inp, const float *w,
                             int64_t N, int64_t C, float eps);
    /* dinp(N,C) (+=) from dout(N,C); the norm weight is frozen */
    lt_status (*rmsnorm_bwd)(lt_backend *be, void *dinp, const void *dout, const void *inp, const float *w,
                             const float *rstd, int64_t N, int64_t C);
    /* out(N,OC) = inp(N,C) @ W^T + bias (bias f32 [OC] or NULL) */
    lt_status (*linear_fwd)(lt_backend *be, void *out, const void *inp, const lt_bweight *W, const float *bias,
                            int64_t N);
    /* dinp(N,C) = dout(N,OC) @ W, or += when accumulate */
    lt_status (*linear_bwd_input)(lt_backend *be, void *dinp, const void *dout, const lt_bweight *W, int64_t N,
                                  int accumulate);
    /* LoRA branch, added to a base output:
     *   xd = dropout(inp) (keep prob 1-p, scaled 1/(1-p); element i's mask from the key
     *        lt_drop_key_rows(seed, stream, C): lt_rng_keep(seed, stream, i) for a plain stream;
     *        a stream made by lt_drop_stream_rows(s, r0) (row0 a multiple of LT_DROP_ROW_UNIT, 64:
     *        the remainder is dropped, not checked) draws the masks rows [r0, r0 + N) have in a
     *        wider input of width C, as every LoRA op below with a stream does)
     *   xa(N,R) = xd @ A^T (act dtype, saved) ; out(N,OC) += scale * xa @ B^T
     * A f32 [R,C], B f32 [OC,R]. p = 0 disables dropout. out == NULL: xa only (the checkpoint
     * recompute of down_proj, whose output the backward does not need). */
    lt_status (*lora_fwd)(lt_backend *be, void *out, void *xa, const void *inp, const float *A, const float *B,
                          int64_t N, int64_t C, int64_t OC, int64_t R, float scale, float p, uint64_t seed,
                          uint64_t stream);
    /* dB(OC,R) += scale * dout^T @ xa ; dxa = scale * dout @ B ; dA(R,C) += dxa^T @ xd ;
     * dinp(N,C) (+=) dropout_bwd(dxa @ A)  (same mask as forward: same seed/stream); dinp NULL:
     * no input gradient (dA and dB only) */
    lt_status (*lora_bwd)(lt_backend *be, float *dA, float *dB, void *dinp, const void *dout, const void *inp,
                          const void *xa, const float *A, const float *B, int64_t N, int64_t C, int64_t OC,
                          int64_t R, float scale, float p, uint64_t seed, uint64_t stream);
    /* half-split (NeoX) rotary embedding in place on x(N,H,HD) at positions pos(N) */
    lt_status (*rope_fwd)(lt_backend *be, void *x, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                          float theta);
    /* the inverse rotation on the gradient dx(N,H,HD), in place */
    lt_status (*rope_bwd)(lt_backend *be, void *dx, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                          float theta);
    /* causal attention within each packed sequence (block-diagonal), GQA (head h uses kv head
     * h / (NH/NKV)), scale 1/sqrt(HD), softmax in f32.
     * q(N,NH,HD) k,v(N,NKV,HD) -> out(N,NH,HD); lse(NH,N) f32 saved (log-sum-exp of scores) */
    lt_status (*attention_fwd)(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                               const int32_t *cu_seqlens, int32_t nseq, int32_t max_seqlen, int64_t N,
                               int64_t NH, int64_t NKV, int64_t HD);
    /* dq(N,NH,HD), dk, dv(N,NKV,HD) overwritten */
    lt_status (*attention_bwd)(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                               const void *k, const void *v, const void *out, const float *lse,
                               const int32_t *cu_seqlens, int32_t nseq, int32_t max_seqlen, int64_t N, int64_t NH,
                               int64_t NKV, int64_t HD);
    /* out(N,I) = silu(gate) * up */
    lt_status (*swiglu_fwd)(lt_backend *be, void *out, const void *gate, const void *up, int64_t n);
    /* dgate, dup (may alias gate, up) from dout = d(silu(gate) * up) */
    lt_status (*swiglu_bwd)(lt_backend *be, void *dgate, void *dup, const void *dout, const void *gate,
                            const void *up, int64_t n);
    /* out = a + b (n elements; out may alias a) */
    lt_status (*add)(lt_backend *be, void *out, const void *a, const void *b, int64_t n);
    /* The LM head fused with cross-entropy, over token chunks so that full-vocabulary logits
     * for the batch never exist. targets(N) i32 (-100 = ignored). Adds the sum of CE (computed
     * on f32 logits) to loss_sum (a backend f32 buffer of one element, +=), and writes
     * dh(N,C) = grad_scale * d(sum CE)/dh (zero rows for ignored targets); dh may be NULL. */
    lt_status (*lm_head_ce)(lt_backend *be, float *loss_sum, void *dh, const void *h, const lt_bweight *head,
                            const int32_t *targets, int64_t N, int64_t C, int64_t V, float grad_scale);
    /* logits(N,V) f32 = h(N,C) @ head^T */
    lt_status (*lm_head_logits)(lt_backend *be, float *logits, const void *h, const lt_bweight *head, int64_t N,
                                int64_t C, int64_t V);

    /* ---- KV-cache attention for generation ----
     * q(n,NH,HD) for positions [past, past+n) of one sequence; kcache/vcache (max_len,NKV,HD)
     * already hold keys/values for positions [0, past+n). out(n,NH,HD). */
    lt_status (*attention_kv)(lt_backend *be, void *out, const void *q, const void *kcache, const void *vcache,
                              int64_t past, int64_t n, int64_t NH, int64_t NKV, int64_t HD);

    /* ---- optimizer ---- */
    /* *host_sumsq += sum(g^2) over n f32 values (computed in f64 on the CPU, f32 partials on GPU) */
    lt_status (*sumsq)(lt_backend *be, const float *g, int64_t n, double *host_sumsq);
    lt_status (*scale)(lt_backend *be, float *x, int64_t n, float s);
    /* torch.optim.AdamW (decoupled decay before the update), step t >= 1 */
    lt_status (*adamw)(lt_backend *be, float *p, const float *g, float *m, float *v, int64_t n, float lr,
                       float beta1, float beta2, float eps, float wd, int64_t t);
    /* bitsandbytes AdamW8bit, blocksize 256 (see docs: decay after the step, codes from the
     * signed / unsigned dynamic maps). state1/state2 u8 [n], absmax1/absmax2 f32 [ceil(n/256)]. */
    lt_status (*adamw8bit)(lt_backend *be, float *p, const float *g, uint8_t *state1, uint8_t *state2,
                           float *absmax1, float *absmax2, int64_t n, float lr, float beta1, float beta2, float eps,
                           float wd, int64_t t);
    /* fp16: 1 if any of n values of g is inf/nan (host flag) */
    lt_status (*nonfinite)(lt_backend *be, const float *g, int64_t n, int *host_flag);

    /* bytes in use and peak (0 when the backend does not track) */
    void (*memory)(lt_backend *be, uint64_t *in_use, uint64_t *peak);

    /* *host_sumsq += sum over the count tensors g[i] (n[i] f32 values each) of g^2: the
     * gradient norm of all LoRA tensors with one synchronization (g and n are host arrays of
     * device pointers and lengths). Optional: NULL means call sumsq per tensor. */
    lt_status (*sumsq_many)(lt_backend *be, int count, const float *const *g, const int64_t *n, double *host_sumsq);

    /* n (2 or 3) projections of one input with their LoRA up-projections folded into the base
     * products (q/k/v, gate/up): out[s](N,OC_s) = inp(N,C) @ W[s]^T + bias[s] + scale * xa[s](N,R)
     * @ B[s]^T; xa[s] come from lora_fwd (out = NULL) or lora_xa_multi; bias[s] f32 or NULL.
     * Optional: NULL means linear_fwd + lora_fwd per projection. */
    lt_status (*linear_lora_group_fwd)(lt_backend *be, int n, void *const *out, const void *inp,
                                       const lt_bweight *const *W, const float *const *bias, const void *const *xa,
                                       const float *const *B, int64_t N, int64_t R, float scale);

    /* memset0 of count buffers (host arrays of device pointers and byte counts) and AdamW
     * (as adamw) over count tensors with the same step scalars, in few launches: the per-step
     * gradient reset and update of ~400 LoRA tensors. Optional: NULL means one call each. */
    lt_status (*memset0_many)(lt_backend *be, int count, void *const *p, const size_t *bytes);
    lt_status (*adamw_many)(lt_backend *be, int count, float *const *p, const float *const *g, float *const *m,
                            float *const *v, const int64_t *n, float lr, float beta1, float beta2, float eps, float wd,
                            int64_t t);

    /* The LoRA branches of n (<= 3) modules over one input, the input read once:
     * lora_xa_multi: xa[s](N,R) = drop_s(inp) @ A[s]^T (lora_fwd with out = NULL, per module);
     * lora_bwd_multi: lora_bwd per module (dA[s], dB[s] +=, dxa from dout[s](N,OC[s])), with
     * dinp(N,C) += the sum of their input gradients (dinp required). Module s uses dropout stream
     * streams[s]. Optional: NULL means one lora_fwd / lora_bwd per module. */
    lt_status (*lora_xa_multi)(lt_backend *be, int n, void *const *xa, const void *inp, const float *const *A,
                               int64_t N, int64_t C, int64_t R, float p, uint64_t seed, const uint64_t *streams);
    lt_status (*lora_bwd_multi)(lt_backend *be, int n, float *const *dA, float *const *dB, void *dinp,
                                const void *const *dout, const void *inp, const void *const *xa,
                                const float *const *A, const float *const *B, int64_t N, int64_t C,
                                const int64_t *OC, int64_t R, float scale, float p, uint64_t seed,
                                const uint64_t *streams);
    /* out(N,OC) = a + b + scale * xa(N,R) @ B^T (a residual add with the LoRA up-projection of
     * the product b, for o_proj and down_proj; out may alias a). Optional: NULL means lora_fwd
     * on b, then add. */
    lt_status (*add_lora)(lt_backend *be, void *out, const void *a, const void *b, const void *xa, const float *B,
                          int64_t N, int64_t OC, int64_t R, float scale);
    /* out(N,OC) = inp(N,C) @ W^T + resid(N,OC) (no bias; out may alias resid, not inp): the
     * residual add of o_proj and down_proj inside the product */
    lt_status (*linear_fwd_add)(lt_backend *be, void *out, const void *inp, const lt_bweight *W, const void *resid,
                                int64_t N);
    /* out(N,OC) += scale * xa(N,R) @ B^T: lora_fwd's up-projection alone, for an xa kept from
     * the forward pass (the checkpoint recompute) */
    lt_status (*lora_up_add)(lt_backend *be, void *out, const void *xa, const float *B, int64_t N, int64_t OC,
                             int64_t R, float scale);
    /* scale (x[i] *= s over n[i] values) and adamw8bit over count tensors with the same step
     * scalars, in few launches: the gradient clipping and the 8-bit update of ~400 LoRA tensors
     * (the notebook's optimizer). The bits of one call per tensor. Optional: NULL means one call
     * each. */
    lt_status (*scale_many)(lt_backend *be, int count, float *const *x, const int64_t *n, float s);
    /* *host_flag = 1 if any value of the count tensors is inf/nan (fp16's overflow check: one
     * synchronization instead of one per tensor). Optional: NULL means nonfinite per tensor. */
    lt_status (*nonfinite_many)(lt_backend *be, int count, const float *const *g, const int64_t *n, int *host_flag);
    lt_status (*adamw8bit_many)(lt_backend *be, int count, float *const *p, const float *const *g,
                                uint8_t *const *state1, uint8_t *const *state2, float *const *absmax1,
                                float *const *absmax2, const int64_t *n, float lr, float beta1, float beta2, float eps,
                                float wd, int64_t t);
    /* lora_bwd of a module whose input is swiglu(gate, up) (down_proj), that input not read from
     * memory (the checkpoint recompute skips it): the backend makes it where it reads it, or
     * writes it into act (N,C) first. With dgate and dup (else NULL), swiglu_bwd of the total
     * input gradient follows into them (dinp's content is then unspecified; dgate/dup may alias
     * gate/up). The bits of swiglu_fwd into act, lora_bwd, then swiglu_bwd. */
    lt_status (*lora_bwd_swiglu)(lt_backend *be, float *dA, float *dB, void *dinp, const void *dout,
                                 const void *gate, const void *up, void *act, const void *xa, const float *A,
                                 const float *B, int64_t N, int64_t C, int64_t OC, int64_t R, float scale, float p,
                                 uint64_t seed, uint64_t stream, void *dgate, void *dup);
    /* Graphs of a whole pass (optional; NULL: none). graph_begin: the ops that follow are
     * recorded instead of run (LT_ERR_UNSUPPORTED: not now); the dropout ops record their
     * streams, not their keys. graph_end(ok): recording stops; when ok and every op could be
     * recorded, *graph = a replayable graph; else an error, nothing kept, and the backend as if
     * nothing had been recorded. graph_launch runs the graph with the masks of seed and each
     * recorded stream xor stream_xor. graph_epoch changes whenever backend memory is freed: a
     * graph recorded in an older epoch may point at freed memory and must not be launched. */
    lt_status (*graph_begin)(lt_backend *be);
    lt_status (*graph_end)(lt_backend *be, int ok, void **graph);
    lt_status (*graph_launch)(lt_backend *be, void *graph, uint64_t seed, uint64_t stream_xor);
    void (*graph_free)(lt_backend *be, void *graph);
    uint64_t (*graph_epoch)(lt_backend *be);

    /* ---- checkpoint offload (gradient checkpoints kept in host memory) ----
     * host_alloc: bytes of host memory that offload_copy moves at full speed (pinned on CUDA,
     * plain memory on the CPU), zero-filled; host_free releases it (NULL-safe; it waits for the
     * copies in flight and, like free, changes graph_epoch).
     * offload_copy: dst = src (bytes) between backend memory and host_alloc memory, either way.
     * The copy starts once every op queued before it is done and runs beside the ops queued
     * after it (a copy stream on CUDA, which a graph recording captures as a branch); *ticket
     * names it. Nothing orders later ops after it: until offload_wait(ticket), they must not
     * write src or touch dst.
     * offload_wait: the ops queued after it start once copy `ticket` and every copy before it
     * are done. A pass (and a graph recording) waits for every copy it made before it ends.
     * Defaults: host_alloc/host_free = alloc/free, offload_copy = copy (in stream order),
     * offload_wait does nothing. */
    lt_status (*host_alloc)(lt_backend *be, size_t bytes, void **out);
    void (*host_free)(lt_backend *be, void *p);
    lt_status (*offload_copy)(lt_backend *be, void *dst, const void *src, size_t bytes, uint64_t *ticket);
    lt_status (*offload_wait)(lt_backend *be, uint64_t ticket);

    /* ---- model families (lt_config's layer description) ----
     * Every op of this group has a portable default (lt_backend_fill_defaults) that runs the
     * older op where the options reduce to it and otherwise returns LT_ERR_UNSUPPORTED naming
     * the feature; a backend replaces them with its own. */
    /* rotary embedding with explicit inverse frequencies: host_inv_freq f32 [HD/2] (host memory,
     * read during the call) and cos/sin scaled by attention_factor; host_inv_freq NULL means
     * the default frequencies of theta (rope_fwd / rope_bwd) */
    lt_status (*rope_freq_fwd)(lt_backend *be, void *x, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                               float theta, const float *host_inv_freq, float attention_factor);
    lt_status (*rope_freq_bwd)(lt_backend *be, void *dx, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                               float theta, const float *host_inv_freq, float attention_factor);
    /* attention_fwd / attention_bwd / attention_kv with options: scores times scale, then
     * softcap * tanh(s / softcap) when softcap > 0, and keys limited to the window positions
     * before the query (q - k < window) when window > 0 */
    lt_status (*attention_opt_fwd)(lt_backend *be, void *out, float *lse, const void *q, const void *k,
                                   const void *v, const int32_t *cu_seqlens, int32_t nseq, int32_t max_seqlen,
                                   int64_t N, int64_t NH, int64_t NKV, int64_t HD, const lt_attn_opts *o);
    lt_status (*attention_opt_bwd)(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                                   const void *k, const void *v, const void *out, const float *lse,
                                   const int32_t *cu_seqlens, int32_t nseq, int32_t max_seqlen, int64_t N,
                                   int64_t NH, int64_t NKV, int64_t HD, const lt_attn_opts *o);
    lt_status (*attention_opt_kv)(lt_backend *be, void *out, const void *q, const void *kcache, const void *vcache,
                                  int64_t past, int64_t n, int64_t NH, int64_t NKV, int64_t HD,
                                  const lt_attn_opts *o);
    /* out(n) = act(gate) * up for act LT_BACT_SILU (swiglu_fwd) or LT_BACT_GELU_TANH (torch's
     * gelu approximate="tanh"), and its backward (dgate/dup may alias gate/up) */
    lt_status (*glu_fwd)(lt_backend *be, int act, void *out, const void *gate, const void *up, int64_t n);
    lt_status (*glu_bwd)(lt_backend *be, int act, void *dgate, void *dup, const void *dout, const void *gate,
                         const void *up, int64_t n);
    /* x(n) *= s in place, the product rounded to the act dtype (Gemma's embedding scale) */
    lt_status (*scale_act)(lt_backend *be, void *x, int64_t n, float s);
    /* lm_head_ce / lm_head_logits with the logits soft-capped (cap * tanh(z / cap)) when
     * softcap > 0 */
    lt_status (*lm_head_ce_cap)(lt_backend *be, float *loss_sum, void *dh, const void *h, const lt_bweight *head,
                                const int32_t *targets, int64_t N, int64_t C, int64_t V, float grad_scale,
                                float softcap);
    lt_status (*lm_head_logits_cap)(lt_backend *be, float *logits, const void *h, const lt_bweight *head,
                                    int64_t N, int64_t C, int64_t V, float softcap);
    /* rows x width_bytes from src (row pitch spitch bytes) to dst (row pitch dpitch): the split
     * of a fused projection's output and the join of its gradients */
    lt_status (*copy2d)(lt_backend *be, void *dst, size_t dpitch, const void *src, size_t spitch,
                        size_t width_bytes, int64_t rows);
    /* out[r] (int32, rows) = the column of the largest x[r * cols + c] (f32, rows x cols), the
     * lowest column among equals: the argmax of logits for evaluation's token accuracy, so that
     * only `rows` ids leave the device */
    lt_status (*argmax_rows)(lt_backend *be, int32_t *out, const float *x, int64_t rows, int64_t cols);

    /* ---- single-token decoding (generation) ----
     * decoder_create prepares a decoder of model (an lt_model, which the backend reads) over
     * the caller's KV cache kcache[l] / vcache[l] (act, (max_len, NKV*HD), filled for earlier
     * positions); LT_ERR_UNSUPPORTED (with a message) when the backend has no decoder for
     * this model, and then the caller runs the layer ops. decoder_step runs token tok at
     * position pos: appends its keys and values, host_logits (V f32, may be NULL) and
     * *host_argmax get the next-token logits and their argmax. The default: no decoder. */
    lt_status (*decoder_create)(lt_backend *be, struct lt_model *model, void *const *kcache, void *const *vcache,
                                int64_t max_len, void **decoder);
    lt_status (*decoder_step)(lt_backend *be, void *decoder, int32_t tok, int64_t pos, float *host_logits,
                              int32_t *host_argmax);
    void (*decoder_free)(lt_backend *be, void *decoder);
    /* The same for nseq sequences at once (freed by decoder_free): kcache/vcache hold
     * nseq * num_layers buffers (sequence s, layer l at [s * num_layers + l]), each as above;
     * decoder_step_batch runs tok[s] at pos[s] for every s; host_logits (nseq x V f32, may be
     * NULL) and host_argmax[nseq] get each sequence's next-token logits and argmax. The default:
     * decoder_create for nseq = 1, else no decoder. */
    lt_status (*decoder_create_batch)(lt_backend *be, struct lt_model *model, int32_t nseq, void *const *kcache,
                                      void *const *vcache, int64_t max_len, void **decoder);
    lt_status (*decoder_step_batch)(lt_backend *be, void *decoder, const int32_t *tok, const int64_t *pos,
                                    float *host_logits, int32_t *host_argmax);
} lt_backend_ops;

struct lt_backend {
    lt_backend_ops ops;
    int32_t device;       /* lt_device */
    int32_t act_dtype;    /* lt_dtype of act buffers */
    int32_t act_bytes;    /* 4, or 2 */
    int32_t n_threads;    /* CPU threads */
    int32_t deterministic;
    void *impl;           /* backend private */
    /* bytes of logits per chunk of the fused LM head + cross-entropy that the next lm_head_ce
     * calls aim at (lt_head_chunk_rows), set by the caller around them; 0: the default.
     * The CPU backend chunks by its own fixed rows and ignores it. */
    uint64_t head_chunk_bytes;
};

/* Fills the empty slots of the checkpoint-offload, model-family and decoder groups with their
 * portable defaults (every backend constructor calls it last). */
void lt_backend_fill_defaults(lt_backend *be);

/* Constructors. lt_backend_cuda_create returns LT_ERR_UNSUPPORTED in a CPU-only build. */
lt_status lt_backend_cpu_create(int n_threads, lt_backend **out);
lt_status lt_backend_cuda_create(int device_index, int compute_dtype, lt_backend **out);
void lt_backend_free(lt_backend *be);

/* Rows per chunk of the CUDA backend's fused LM head + cross-entropy (lm_head_ce.cu) for N
 * tokens, V logits of logit_bytes each: about chunk_bytes of logits per chunk (0: the default,
 * LT_HEAD_CHUNK_BYTES; be->head_chunk_bytes) in 64-row steps, evened out over the chunks N
 * takes (as many chunks, fewer rows each), or N when it fits one. lt_estimate_memory sizes the
 * scratch buffer with it too. */
#define LT_HEAD_CHUNK_BYTES (224ull << 20)
static inline int64_t lt_head_chunk_rows(int64_t N, int64_t V, int64_t logit_bytes, uint64_t chunk_bytes) {
    if (chunk_bytes == 0) chunk_bytes = LT_HEAD_CHUNK_BYTES;
    int64_t T = (int64_t)(chunk_bytes / ((uint64_t)V * (uint64_t)logit_bytes)) / 64 * 64;
    if (T < 64) T = 64;
    if (T >= N) return N;
    const int64_t chunks = (N + T - 1) / T, even = ((N + chunks - 1) / chunks + 63) / 64 * 64;
    return even < T ? even : T;
}

/* The dynamic 8-bit maps of bitsandbytes (create_dynamic_map), 256 floats each. */
void lt_dynamic_map(int is_signed, float out[256]);
/* The NF4 code table. */
extern const float lt_nf4_code[16];

#endif

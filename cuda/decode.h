/* decode.h - the CUDA backend's single-token decoder (cuda/decode.cu), installed as the
 * backend's decoder_create / decoder_step / decoder_free ops (cuda_backend.cu); generation
 * reaches it only through the op table.
 *
 * One step runs one token through the whole model with kernels made for a single token: NF4
 * (or 16-bit) GEMVs that read each packed weight once, dequantize in registers (double-quant
 * absmax included) and accumulate in f32, with the bias, the unmerged LoRA branch (x @ A^T fused
 * into the kernel that makes x: the RMSNorm for q/k/v and gate/up, the attention merge for o,
 * the gate/up epilogue for down; @ B^T fused into the GEMV's epilogue), rotary embedding + KV-cache append,
 * the gated activation and the residual add fused into the GEMVs; split-K attention over the bf16/f16 KV
 * cache; a 16-bit GEMV for the (tied) LM head; an on-device argmax. It runs the model's layer
 * description (lt_config): SiLU / GELU-tanh, q/k norms, sandwich post-norms, rope of every
 * rope_type per layer (scaled ones from lt_rope_inv_freq's table), attention scale, soft-caps and
 * sliding windows, embedding scale, fused qkv / gate_up projections (Llama 3.x, Mistral, Qwen2/3,
 * Gemma 2/3, Phi-3). The token and position
 * live in device memory and the argmax kernel advances them, so the step is captured once
 * into a CUDA graph and replayed unchanged; on sm_90+ each kernel is launched while the one
 * before drains (programmatic dependent launch) and prefetches its first weights meanwhile. A batched decoder runs one token of each of B
 * sequences per step (own caches and positions): every GEMV reads each weight once for up to
 * 8 sequences, and each sequence's sums are formed in the same order as alone.
 *
 * What it needs from the CUDA backend: the lt_bweight layout and lt_cuda state declared in
 * cuda/cuda_common.h (packed/absmax/nested pointers, data16, the stream) - read only. */
#ifndef LT_CUDA_DECODE_H
#define LT_CUDA_DECODE_H

#include "loratune.h"
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct lt_model;
typedef struct lt_cuda_decoder lt_cuda_decoder;

/* Prepares the decode step of model m (CUDA backend) over the caller's KV cache:
 * kcache[l], vcache[l] are act-dtype device buffers (max_len, NKV*HD), filled by the prefill
 * for positions before the first step. LoRA is applied when attached and enabled at this
 * call (its weights are read live at every step). Returns LT_ERR_UNSUPPORTED (with a
 * message) for a shape or layout the kernels do not cover (e.g. dynamic NTK rope past
 * max_position_embeddings): the caller then decodes with the generic backend ops. The caches must outlive the decoder. */
lt_status lt_cuda_decoder_create(struct lt_model *m, void *const *kcache, void *const *vcache, int64_t max_len,
                                 lt_cuda_decoder **out);
void lt_cuda_decoder_free(lt_cuda_decoder *d);
/* The same for nseq sequences (1 to 1024): kcache/vcache hold nseq * num_layers buffers,
 * sequence s's layer l at [s * num_layers + l]. */
lt_status lt_cuda_decoder_create_batch(struct lt_model *m, int32_t nseq, void *const *kcache, void *const *vcache,
                                       int64_t max_len, lt_cuda_decoder **out);

/* Runs token `tok` at position `pos` (< max_len): appends its keys/values to the caches and
 * computes the next-token logits. host_logits (V floats) receives them when non-NULL;
 * *host_argmax receives their argmax (lowest index among equals). */
lt_status lt_cuda_decoder_step(lt_cuda_decoder *d, int32_t tok, int64_t pos, float *host_logits,
                               int32_t *host_argmax);
/* One step of every sequence: tok[s] at pos[s]; host_logits (nseq x V, may be NULL),
 * host_argmax[nseq]. A sequence that has finished may repeat its last (tok, pos). */
lt_status lt_cuda_decoder_step_batch(lt_cuda_decoder *d, const int32_t *tok, const int64_t *pos, float *host_logits,
                                     int32_t *host_argmax);

/* Times steps kernel by kernel (for benchmarks): each of `reps` steps is queued behind a spin
 * kernel, so that its kernels run back to back as in a graph, with an event after each group;
 * ms[k] gets the mean milliseconds per step of group k (names[k] its name, may be NULL) for the
 * *n_kinds groups (cap >= 13), *graph_ms (may be NULL) the mean time of `reps` graph replays
 * (0 before the graph is recorded, i.e. before two steps). The steps advance the device's
 * tokens and positions (the next lt_cuda_decoder_step_batch uploads its own again); call it
 * with positions far enough below max_len for 2 * reps more steps. */
lt_status lt_cuda_decoder_profile(lt_cuda_decoder *d, int reps, double *ms, const char **names, int cap,
                                  int *n_kinds, double *graph_ms);

/* 0 disables CUDA-graph capture (every step launches its kernels), for tests; default 1. */
void lt_cuda_decoder_use_graphs(int on);
/* 1 enables programmatic dependent launch (sm_90+ only: each kernel of a step launched while the
 * one before drains; default 0 until a GPU has checked and timed it), 0 disables it (each kernel
 * launched once the one before has finished), for the decoders created after the call: for tests
 * and bench_generate's A/B. */
void lt_cuda_decoder_use_pdl(int on);

#ifdef __cplusplus
}
#endif
#endif

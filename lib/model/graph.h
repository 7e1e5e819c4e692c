/* graph.h - the decoder's forward and backward passes, written out by hand over the backend ops
 * (llm.c style) from the config's layer description, on one padding-free packed micro-batch
 * (lt_batch); and the same layers over a KV cache for generation.
 *
 * Memory: buffers are allocated once for a token budget and reused; they grow (reallocated)
 * when a batch exceeds the budget. Gradient checkpointing: the forward keeps only the residual
 * stream entering each layer (and leaving the last one); the backward recomputes each layer's
 * forward from its checkpoint, then runs its backward. Checkpoint offload: those checkpoints
 * (and the layers' LoRA A outputs) are copied to host memory while the forward goes on, and
 * back one layer ahead of the backward's recompute, through two device slots. The LM head and
 * cross-entropy are fused over token chunks (lm_head_ce), so full-vocabulary logits of a batch
 * never exist. The memory-saving mode (checkpoint offload) goes further: the MLP of each layer
 * (gate/up, activation, down, post-norm, and their backward) runs over token chunks of at most
 * LT_GRAPH_MLP_CHUNK tokens, so its (tokens, intermediate) buffers hold one chunk; and the LM
 * head + CE takes chunks of LT_GRAPH_HEAD_LEAN_BYTES of logits.
 *
 * LoRA dropout: the mask of layer l, projection p is drawn from Philox(seed, stream) with
 * stream = lt_graph_stream(stream_base, l, p); the recompute in backward reuses the same stream,
 * so forward and backward see the same mask. The trainer picks stream_base from the global
 * micro-batch index, so masks differ per call and repeat exactly for the same seed. An MLP token
 * chunk adds its first row to the stream (rng.h's row offset), so chunked or not, every token
 * draws the same mask. */
#ifndef LT_GRAPH_H
#define LT_GRAPH_H
#include "model/model.h"
#include "data/dataset.h"

typedef struct lt_graph lt_graph;

/* Buffer modes of lt_graph_reserve, each holding what the ones before it need: forward only;
 * forward + backward with gradient checkpointing and the checkpoints in host memory (two device
 * slots that the forward copies out of and the backward copies back into, one layer ahead);
 * forward + backward with gradient checkpointing (one activation set, each layer recomputed in
 * backward, every checkpoint on the device); forward + backward keeping every layer's
 * activations (no recompute, L activation sets). */
enum { LT_GRAPH_INFER = 0, LT_GRAPH_TRAIN_OFFLOAD = 1, LT_GRAPH_TRAIN = 2, LT_GRAPH_TRAIN_KEEP = 3 };

/* Options of one pass. */
typedef struct lt_graph_pass {
    int32_t train;          /* 1: LoRA dropout on (model's lora.dropout) */
    uint64_t seed;          /* dropout seed */
    uint64_t stream_base;   /* dropout stream base, see lt_graph_stream */
    int32_t keep_activations; /* 1: gradient checkpointing off (keep every layer's activations) */
    int32_t offload_checkpoints; /* 1 (with checkpointing): the checkpoints in host memory */
    int32_t shapes_recur;   /* 1: passes of few shapes that recur (the trainer's token-budget
                             * buckets): a shape seen among the last LT_GRAPH_SEEN passes is
                             * recorded as a backend graph, not only one seen in the pass before */
} lt_graph_pass;

/* backend graphs of pass shapes kept per model, and pass keys remembered (graph.c) */
#define LT_GRAPH_RECS 16
#define LT_GRAPH_SEEN 32

/* The dropout stream of (micro-batch stream base, layer, projection). Xor-linear in the base:
 * a pass recorded as a backend graph with base b0 replays with base b1's masks by xoring every
 * recorded stream with lt_graph_stream(b1, 0, 0) ^ lt_graph_stream(b0, 0, 0) (graph.c). */
static inline uint64_t lt_graph_stream(uint64_t stream_base, int layer, int proj) {
    return (stream_base << 24) ^ ((uint64_t)layer << 4) ^ (uint64_t)proj;
}

/* The memory-saving mode's (LT_GRAPH_TRAIN_OFFLOAD's) sizes: tokens per MLP chunk (a multiple
 * of rng.h's LT_DROP_ROW_UNIT), and bytes of logits per LM-head + CE chunk (be->head_chunk_bytes,
 * lt_head_chunk_rows): on a Qwen2-1.5B shape 128 rows, whose logits and split-K partials (51 MB)
 * stay below the attention backward's workspace at 2 x 2048 tokens (76 MB), so that the CUDA
 * backend's scratch buffer is not sized by the head. */
#define LT_GRAPH_MLP_CHUNK 512
#define LT_GRAPH_HEAD_LEAN_BYTES (48ull << 20)
/* f32 logits per chunk of the evaluation's token accuracy and of lt_graph_logits (64 MiB): a
 * buffer of its own (g->logits), which evaluation during training adds to the peak */
#define LT_GRAPH_LOGITS_CHUNK_FLOATS (16u << 20)
/* Device bytes of that buffer and its argmax ids for n_tokens a pass of a vocab_size vocabulary. */
uint64_t lt_graph_eval_bytes(int64_t n_tokens, int64_t vocab_size);
/* Rows of the MLP's token-chunk buffers for a token budget of n_tokens in mode `train`: the
 * budget, or at most the MLP chunk in mode LT_GRAPH_TRAIN_OFFLOAD. */
int64_t lt_graph_mlp_rows(int64_t n_tokens, int train);
/* Bytes of logits per LM-head + CE chunk in mode `train` (0: the backend's default). */
uint64_t lt_graph_head_chunk_bytes(int train);
/* Tests only: the MLP chunk of graphs reserved from now on (a positive multiple of
 * LT_DROP_ROW_UNIT; 0: LT_GRAPH_MLP_CHUNK), so that a small test model runs several chunks.
 * Process-wide; not for use while another thread reserves graphs. */
lt_status lt_graph_test_set_mlp_chunk(int64_t rows);

/* Makes sure m->graph has buffers for n_tokens tokens in mode `train` (LT_GRAPH_*).
 * Allocates on first use, grows when needed (a richer mode is kept), never shrinks. */
lt_status lt_graph_reserve(lt_model *m, int64_t n_tokens, int train);
/* Frees a graph and its buffers (NULL-safe). lt_model_free calls it (before freeing the backend)
 * and sets m->graph = NULL. */
void lt_graph_free(lt_graph *g);
/* Bytes the graph buffers take for n_tokens in mode `train` (for memory estimates): on the
 * device, and in host memory (the offloaded checkpoints; 0 in other modes). */
uint64_t lt_graph_bytes(const lt_config *cfg, int32_t act_bytes, int32_t lora_r, int64_t n_tokens, int train);
uint64_t lt_graph_host_bytes(const lt_config *cfg, int32_t act_bytes, int32_t lora_r, int64_t n_tokens, int train);

/* Forward + backward of one micro-batch. Adds sum(CE over b->targets) to *loss_sum and
 * accumulates (+=) grad_scale * d(sum CE)/d(LoRA) into every attached lora dA/dB.
 * LoRA must be attached and enabled. */
lt_status lt_graph_forward_backward(lt_model *m, const lt_batch *b, float grad_scale, const lt_graph_pass *pass,
                                    double *loss_sum);
/* Forward only: adds sum(CE over b->targets) to *loss_sum (dropout off). */
lt_status lt_graph_loss(lt_model *m, const lt_batch *b, double *loss_sum);
/* lt_graph_loss, and (n_correct non-NULL) adds the labelled tokens whose argmax logit is the
 * target (lowest index among equals) to *n_correct. */
lt_status lt_graph_eval(lt_model *m, const lt_batch *b, double *loss_sum, int64_t *n_correct);
/* Forward only: logits of every token of b, f32 [b->n_tokens, V] into host memory. */
lt_status lt_graph_logits(lt_model *m, const lt_batch *b, float *host_logits);

/* Generation: runs tokens host_ids[n] at positions [past, past+n) of one sequence through the
 * layers (LoRA unmerged, no dropout), appending their keys and values to kcache[l] / vcache[l]
 * (act, (max_len, NKV*HD) per layer, holding positions [0, past) already); the prompt (past 0)
 * uses the training attention, later tokens attend over the cache. The last token's logits go
 * to `logits` (backend f32 [V]) and, when host_logits is not NULL, to the host too. */
lt_status lt_graph_forward_cached(lt_model *m, const int32_t *host_ids, int64_t n, int64_t past, void *const *kcache,
                                  void *const *vcache, float *logits, float *host_logits);

#endif

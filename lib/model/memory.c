/* memory.c - lt_estimate_memory: device bytes a training run needs, from config.json alone.
 *
 *   weights      NF4 projections (packed nibbles + absmax, double-quantized or not) or 16-bit
 *                ones, 16-bit embeddings (and lm_head when untied), f32 norms and biases;
 *                the CPU reference keeps everything in f32.
 *   lora         f32 A and B, their f32 gradients, and AdamW state: fp32 m and v (8 bytes per
 *                value), or bitsandbytes 8-bit (2 bytes + two f32 absmax per 256-block; tensors
 *                under 4096 values keep fp32 state, as bnb does); on CUDA also the 16-bit copies
 *                the products read: A as it is and transposed, B transposed (gemm.cu, lora.cu).
 *   activations  the graph's buffers (lt_graph_bytes, what lt_graph_reserve allocates): with
 *                gradient checkpointing one (N,C) tensor per layer (two device slots when
 *                they are offloaded to host memory), plus one layer's recomputed activations
 *                and their gradients (with offload, the MLP's for one token chunk:
 *                lt_graph_mlp_rows); without it every layer keeps its activations. Plus, on
 *                the CPU, one chunk of the fused LM head + cross-entropy (f32 logits of 1024
 *                tokens); on CUDA the backend's one scratch buffer, as large as its largest
 *                user for this shape and grown by an eighth + 1 MiB (lt_cuda_scratch): the head
 *                + CE chunk (lt_head_chunk_rows of 16-bit logits, of the size the graph asks for
 *                in its mode: lt_graph_head_chunk_bytes; the split-K partials of the
 *                gradient product, the per-token losses: lm_head_ce.cu), the attention
 *                backward's f32 workspace (D, the dQ accumulator and dK/dV per query head:
 *                attention.cu's tensor-core path) or, where the attention takes cuBLAS products
 *                (attn_gemm.cu: head dims other than 64/128, a score scale, soft-capping, a window
 *                shorter than the sequence), its backward's padded copies of q, dO (16-bit),
 *                k, v (16-bit) and dK, dV (f32), D and two f32 score buffers of at most
 *                128 MiB (batch_size sequences of max_seq_len), the grouped projections' packed
 *                input and a dequantized weight (gemm.cu); where the final logits are
 *                soft-capped (Gemma 2), the capped head's own chunk buffers (f32 logits and
 *                16-bit d(logits) of lt_head_chunk_rows tokens: family.cu).
 *   workspace    on CUDA the GEMM library's workspace and the cache of one layer's 16-bit
 *                projections (the recompute of a layer and its backward share them), in rows
 *                widened by the folded LoRA up-projection and bias (gemm.cu).
 *                Evaluation during training adds the token accuracy's f32 logits chunk (64 MiB,
 *                lt_graph_eval_bytes), counted when train->eval_data is set or early stopping /
 *                load_best_at_end ask for evaluations (a held-out split of the training data
 *                is not visible here: `loratune info` prints that figure on its own line).
 * N = batch_size * max_seq_len tokens (padding-free packing never exceeds it). Host memory
 * (pinned, the offloaded checkpoints) is not counted: lt_graph_host_bytes gives it. */
#include "model/model_io.h"
#include "model/graph.h"
#include "backend/attn_plan.h"
#include <math.h>
#include <stddef.h>
#include <string.h>

#define LT_MEM_HEAD_CHUNK 1024          /* tokens per LM-head chunk */
#define LT_MEM_GEMM_WORKSPACE (32ull << 20)

static uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }
static uint64_t align256(uint64_t b) { return (b + 255) & ~(uint64_t)255; }

/* the bytes cuda/attn_gemm.cu's backward asks for (its plan: backend/attn_plan.h): nseq sequences
 * of at most Lmax tokens, N in all, window 0 (none) or < Lmax */
static uint64_t ag_bwd_bytes(uint64_t ab, uint64_t HD, uint64_t NH, uint64_t NKV, uint64_t nseq, uint64_t Lmax,
                             uint64_t N, uint64_t window) {
    lt_ag_plan p;
    lt_ag_make_plan((int64_t)nseq, (int64_t)N, (int64_t)Lmax, (int64_t)NKV, (int64_t)(NH / NKV), (int64_t)window,
                    LT_AG_SCORE_BYTES, &p);
    return lt_ag_bwd_bytes(&p, (int64_t)N, (int64_t)NH, (int64_t)NKV, (int64_t)HD, ab);
}

/* the backward workspace of cuda/attn_gemm.cu for the layers it takes (family.cu's attn_route:
 * every layer where the flash kernels are absent (flash 0: compute capability below 8.0) or the
 * options are not plain, else the layers whose window is shorter than Lmax); the most of them */
static uint64_t attn_gemm_bytes(const lt_config *c, uint64_t ab, uint64_t nseq, uint64_t Lmax, uint64_t N,
                                int flash) {
    const uint64_t HD = (uint64_t)c->head_dim, NH = (uint64_t)c->num_heads, NKV = (uint64_t)c->num_kv_heads;
    if (NKV == 0) return 0;
    const int all = !flash || (HD != 64 && HD != 128) || c->attn_softcap > 0 ||
                    c->attn_scale != (float)(1.0 / sqrt((double)HD));
    uint64_t most = 0;
    int done_plain = 0, done_win = 0;
    for (int l = 0; l < c->num_layers; l++) {
        const uint64_t w = c->layer_sliding[l] && c->sliding_window > 0 && (uint64_t)c->sliding_window < Lmax
                               ? (uint64_t)c->sliding_window : 0;
        if ((w ? done_win : done_plain) || (!w && !all)) continue;
        const uint64_t b = ag_bwd_bytes(ab, HD, NH, NKV, nseq, Lmax, N, w);
        if (b > most) most = b;
        if (w) done_win = 1;
        else done_plain = 1;
    }
    return most;
}

static uint64_t adam_bytes(uint64_t n, int eight_bit) {
    if (eight_bit && n >= 4096) return 2 * n + 2 * ceil_div(n, 256) * 4;
    return 8 * n;
}

lt_status lt_estimate_memory(const char *model_dir, const lt_model_params *mp, const lt_lora_params *lp,
                             const struct lt_train_params *tp, lt_memory_estimate *out) {
    LT_CHECK_ARG(model_dir && out, "lt_estimate_memory: NULL %s", model_dir ? "out" : "model_dir");
    lt_config c;
    LT_TRY(lt_config_load(model_dir, &c));
    lt_model_params m;
    lt_model_params_init(&m);
    if (mp) memcpy(&m, mp, mp->struct_size && mp->struct_size < sizeof m ? mp->struct_size : sizeof m);
    lt_lora_params l;
    lt_lora_params_init(&l);
    if (lp) memcpy(&l, lp, lp->struct_size && lp->struct_size < sizeof l ? lp->struct_size : sizeof l);
    int32_t batch = 2, optim8 = 1, ckpt = 1, offload = 0;
    if (tp) {
        batch = tp->batch_size > 0 ? tp->batch_size : 1;
        optim8 = tp->optimizer == LT_OPTIM_ADAMW_8BIT;
        ckpt = tp->gradient_checkpointing != 0;
        offload = ckpt && tp->offload_checkpoints != 0;
    }
    const int mode = !ckpt ? LT_GRAPH_TRAIN_KEEP : offload ? LT_GRAPH_TRAIN_OFFLOAD : LT_GRAPH_TRAIN;
    int cpu = m.device == LT_DEVICE_CPU || (m.device == LT_DEVICE_AUTO && lt_cuda_device_count() == 0);
    int nf4 = !cpu && (c.bnb_4bit || m.quant == LT_QUANT_NF4);
    uint64_t ab = cpu ? 4 : (m.compute_dtype == LT_DTYPE_F32 ? 4 : 2); /* activation bytes */
    uint64_t wb16 = cpu ? 4 : 2;                                       /* "16-bit" weights */
    uint64_t V = (uint64_t)c.vocab_size, C = (uint64_t)c.hidden_size, Lyr = (uint64_t)c.num_layers;
    const uint64_t I = (uint64_t)c.intermediate_size;
    uint64_t N = (uint64_t)batch * (uint64_t)(m.max_seq_len > 0 ? m.max_seq_len : 2048);

    memset(out, 0, sizeof *out);
    out->struct_size = sizeof *out;

    /* weights */
    uint64_t w = V * C * wb16 * (c.tie_word_embeddings ? 1 : 2) + C * 4, largest = 0;
    for (int p = 0; p < LT_PROJ_COUNT; p++) {
        int64_t in, o;
        lt_proj_dims(&c, p, &in, &o);
        uint64_t n = (uint64_t)in * (uint64_t)o, nb = ceil_div(n, 64);
        if (n > largest) largest = n;
        uint64_t b;
        if (nf4 && (m.double_quant || c.bnb_4bit)) b = n / 2 + nb + ceil_div(nb, 256) * 4 + 256 * 4 + 16 * 4;
        else if (nf4) b = n / 2 + nb * 4 + 16 * 4;
        else b = n * wb16;
        if (c.attention_bias && p <= LT_PROJ_V) b += (uint64_t)o * 4;
        w += b * Lyr;
    }
    w += Lyr * 2 * C * 4;
    out->weights = w;

    /* LoRA: weights + gradients (f32) + optimizer state */
    uint64_t lora = 0, R = (uint64_t)l.r;
    for (int p = 0; p < LT_PROJ_COUNT; p++) {
        if (!(l.targets & (1u << p))) continue;
        int64_t in, o;
        lt_proj_dims(&c, p, &in, &o);
        uint64_t na = R * (uint64_t)in, nbb = (uint64_t)o * R;
        lora += Lyr * ((na + nbb) * (cpu ? 8 : 10) + (cpu ? 0 : 2 * na) + adam_bytes(na, optim8) + adam_bytes(nbb, optim8));
    }
    out->lora = lora;

    /* activations: the graph's own buffers (graph.c sizes them with lt_graph_bytes), plus the
     * LM head chunk (CPU) or the scratch buffer (CUDA) */
    uint64_t scratch = 0;
    if (cpu) {
        scratch = (N < LT_MEM_HEAD_CHUNK ? N : LT_MEM_HEAD_CHUNK) * V * 4;
    } else {
        const uint64_t QD = (uint64_t)c.num_heads * (uint64_t)c.head_dim;
        /* head + CE: logits of one chunk, slices x C x chunk f32 partials (the most of 16, 8,
         * ... dividing V into 8-element multiples, at most 16 x 384 slice-rows), N losses */
        const uint64_t T = (uint64_t)lt_head_chunk_rows((int64_t)N, (int64_t)V, (int64_t)ab,
                                                        lt_graph_head_chunk_bytes(mode));
        uint64_t S = 16;
        while (S > 1 && V % (8 * S)) S /= 2;
        while (S > 1 && S * T > 16 * 384) S /= 2;
        const uint64_t head = align256(T * V * ab) + (S > 1 ? align256(S * C * T * 4) : 0) + align256(N * 4);
        /* attention backward: D (N,NH), the dQ accumulator and dK, dV per query head, f32 */
        uint64_t attn = align256(N * (uint64_t)c.num_heads * 4) + 3 * align256(N * QD * 4);
        /* the flash kernels of attention.cu need compute capability 8.0 (attention.cu's use_tc) */
        int32_t cc = 80;
        if (lt_cuda_device_count() > m.device_index)
            (void)lt_cuda_device_info(m.device_index, NULL, 0, &cc, NULL, NULL);
        const uint64_t agemm = attn_gemm_bytes(&c, ab, (uint64_t)batch, N / (uint64_t)batch, N, cc >= 80);
        if (agemm > attn) attn = agemm;
        /* grouped projections (q/k/v, gate/up): the input with the LoRA A outputs and the bias
         * column packed beside it, and the widest weight dequantized in those rows */
        const uint64_t XW = C + 3 * R + 16, OCm = I > QD ? I : QD;
        const uint64_t group = align256(N * XW * 2) + align256(OCm * XW * 2);
        uint64_t need = head > attn ? head : attn;
        if (group > need) need = group;
        /* loading: a projection's source values (the checkpoint's dtype) and its f32 absmax before
         * NF4 quantization, 64 MiB pieces of a 16-bit table (nf4.cu); a dequantized projection */
        const uint64_t eb = c.torch_dtype == LT_DTYPE_F32 ? 4 : 2;
        const uint64_t load = nf4 && !c.bnb_4bit ? align256(largest * eb) + align256(ceil_div(largest, 64) * 4) : 0;
        const uint64_t table = V * C * eb < (64ull << 20) ? V * C * eb : (64ull << 20);
        if (load > need) need = load;
        if (table > need) need = table;
        if (largest * 2 > need) need = largest * 2;
        scratch = need + need / 8 + (1u << 20);
        /* a soft-capped head (Gemma 2) keeps its own chunk buffers: f32 logits + 16-bit
         * d(logits) of lt_head_chunk_rows tokens, an f32 loss per token and 1 MiB to grow into
         * (family.cu's cap_ce_buffers) */
        if (c.final_softcap > 0) {
            const uint64_t rows = (uint64_t)lt_head_chunk_rows((int64_t)N, (int64_t)V, (int64_t)(4 + ab),
                                                               lt_graph_head_chunk_bytes(mode));
            scratch += align256(rows * V * 4) + align256(rows * V * ab) + align256((uint64_t)N * 4) + (1u << 20);
        }
    }
    out->activations = lt_graph_bytes(&c, (int32_t)ab, l.r, (int64_t)N, mode) + scratch;
    /* evaluation during training (eval_data given, or early stopping / load_best_at_end, which
     * need it): the token accuracy's logits chunk and argmax ids, a buffer of their own */
    if (tp && tp->struct_size >= offsetof(lt_train_params, load_best_at_end) + sizeof(int32_t) &&
        (tp->eval_data || tp->early_stopping_patience > 0 || tp->load_best_at_end))
        out->activations += lt_graph_eval_bytes((int64_t)N, (int64_t)V);

    uint64_t layer16 = 0; /* one layer's projections in 16 bits, rows widened by 2R + 8 */
    for (int p = 0; p < LT_PROJ_COUNT; p++) {
        int64_t in, o;
        lt_proj_dims(&c, p, &in, &o);
        layer16 += (uint64_t)o * ((uint64_t)in + 2 * R + 8) * 2;
    }
    out->workspace = cpu ? 0 : LT_MEM_GEMM_WORKSPACE + layer16;
    out->total = out->weights + out->lora + out->activations + out->workspace;
    return LT_OK;
}

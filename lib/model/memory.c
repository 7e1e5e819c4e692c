/* memory.c - lt_estimate_memory: device bytes a training run needs, from config.json alone.
 *
 *   weights      NF4 projections (packed nibbles + absmax, double-quantized or not) or 16-bit
 *                ones, 16-bit embeddings (and lm_head when untied), f32 norms and biases;
 *                the CPU reference keeps everything in f32.
 *   lora         f32 A and B, their f32 gradients, and AdamW state: fp32 m and v (8 bytes per
 *                value), or bitsandbytes 8-bit (2 bytes + two f32 absmax per 256-block; tensors
 *                under 4096 values keep fp32 state, as bnb does); on CUDA also the 16-bit copies
 *                of A and B the products read (2 bytes per value).
 *   activations  the graph's buffers (lt_graph_bytes): with gradient checkpointing one (N,C)
 *                tensor per layer, plus one layer's recomputed activations and their
 *                gradients; without it every layer keeps its activations; plus one chunk of
 *                the fused LM head + cross-entropy (f32 logits of a chunk of tokens: 1024 on the
 *                CPU; on CUDA ~224 MiB of logits in 64-token steps plus the split-K partials of
 *                the gradient product, as lm_head_ce.cu sizes them).
 *   workspace    one dequantized projection in the compute dtype + the GEMM library's workspace;
 *                on CUDA also the cache of one layer's 16-bit projections (the
 *                recompute of a layer and its backward share them), in rows widened by the
 *                folded LoRA up-projection and bias (gemm.cu).
 * N = batch_size * max_seq_len tokens (padding-free packing never exceeds it). */
#include "model/model_io.h"
#include "model/graph.h"
#include <string.h>

#define LT_MEM_HEAD_CHUNK 1024          /* tokens per LM-head chunk */
#define LT_MEM_GEMM_WORKSPACE (32ull << 20)

static uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

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
        lora += Lyr * ((na + nbb) * (cpu ? 8 : 10) + adam_bytes(na, optim8) + adam_bytes(nbb, optim8));
    }
    out->lora = lora;

    /* activations: the graph's own buffers (graph.c sizes them with lt_graph_bytes), plus one
     * chunk of logits inside the fused LM head + cross-entropy (f32 on the CPU, 16-bit on CUDA) */
    uint64_t chunk = N < LT_MEM_HEAD_CHUNK ? N : LT_MEM_HEAD_CHUNK, head = 0;
    if (cpu) {
        head = chunk * V * 4;
    } else {
        chunk = ((224ull << 20) / (V * ab)) / 64 * 64;
        if (chunk < 64) chunk = 64;
        if (chunk > N) chunk = N;
        uint64_t slices = 16; /* lm_head_ce.cu: at most 16 x 384 slice-rows of f32 partials */
        while (slices > 1 && slices * chunk > 16 * 384) slices /= 2;
        head = chunk * V * ab + slices * (uint64_t)C * chunk * 4;
    }
    out->activations = lt_graph_bytes(&c, (int32_t)ab, l.r, (int64_t)N, mode) + head;

    uint64_t layer16 = 0; /* one layer's projections in 16 bits, rows widened by 2R + 8 */
    for (int p = 0; p < LT_PROJ_COUNT; p++) {
        int64_t in, o;
        lt_proj_dims(&c, p, &in, &o);
        layer16 += (uint64_t)o * ((uint64_t)in + 2 * R + 8) * 2;
    }
    out->workspace = cpu ? 0 : largest * ab + LT_MEM_GEMM_WORKSPACE + layer16;
    out->total = out->weights + out->lora + out->activations + out->workspace;
    return LT_OK;
}

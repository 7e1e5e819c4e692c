/* cmd_info.c - `loratune info`: a model folder's config, parameter counts (from the config and,
 * where the weights are there, from the safetensors headers, which are checked against the
 * config), the LoRA parameter count for the chosen rank/targets, and the training memory
 * estimate for a shape (lt_estimate_memory: the graph's own buffer sizes, lt_graph_bytes, plus
 * the backend's workspaces), with the host memory that offloaded checkpoints take. Reads
 * config.json and the safetensors headers only; no weight is loaded. */
#include "cli.h"
#include "model/graph.h"
#include "model/model_io.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(void) {
    printf("usage: loratune info --model DIR [flags]\n\n"
           "Shows a Hugging Face model folder's config, parameter counts and a training memory estimate.\n\n"
           "  --model DIR          model folder (config.json [+ model.safetensors or an index])\n"
           "  --device D           auto | cpu | cuda (for the memory estimate; default auto)\n"
           "  --quant Q            nf4 | none (default nf4)\n"
           "  --r N                LoRA rank (default 16)\n"
           "  --alpha A            LoRA alpha (default 32)\n"
           "  --targets LIST       LoRA targets, e.g. q_proj,v_proj or all (default all)\n"
           "  --batch-size N       micro-batch (default 2)\n"
           "  --max-seq-len N      tokens per sequence (default 2048)\n"
           "  --optim NAME         adamw_8bit | adamw_torch (default adamw_8bit)\n"
           "  --no-gradient-checkpointing\n"
           "  --offload-checkpoints  the checkpoints in pinned host memory (less device memory)\n");
}

/* 1234567 -> "1,234,567" */
static const char *commas(uint64_t v, char *buf) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v), k = 0;
    for (int i = 0; i < n; i++) {
        if (i && (n - i) % 3 == 0) buf[k++] = ',';
        buf[k++] = tmp[i];
    }
    buf[k] = 0;
    return buf;
}

static const char *human(uint64_t b, char *buf) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int i = 0;
    while (v >= 1024 && i < 4) { v /= 1024; i++; }
    snprintf(buf, 32, i ? "%.2f %s" : "%.0f %s", v, u[i]);
    return buf;
}

static const char *dtype_name(int d) {
    return d == LT_DTYPE_BF16 ? "bfloat16" : d == LT_DTYPE_F16 ? "float16" : d == LT_DTYPE_F32 ? "float32" : "?";
}

int lt_cmd_info(int argc, char **argv) {
    const char *cmd = "info", *dir = NULL, *v;
    lt_model_params mp;
    lt_model_params_init(&mp);
    lt_lora_params lp;
    lt_lora_params_init(&lp);
    lt_train_params tp;
    memset(&tp, 0, sizeof tp);
    tp.struct_size = sizeof tp;
    tp.batch_size = 2;
    tp.optimizer = LT_OPTIM_ADAMW_8BIT;
    tp.gradient_checkpointing = 1;
    double alpha = lp.alpha;
    for (int i = 1; i < argc; i++) {
        if (cli_switch(argv, i, "--help") || cli_switch(argv, i, "-h")) { usage(); return 0; }
        else if ((v = cli_flag(argc, argv, &i, "--model"))) dir = v;
        else if ((v = cli_flag(argc, argv, &i, "--device"))) {
            if (!strcmp(v, "auto")) mp.device = LT_DEVICE_AUTO;
            else if (!strcmp(v, "cpu")) mp.device = LT_DEVICE_CPU;
            else if (!strcmp(v, "cuda")) mp.device = LT_DEVICE_CUDA;
            else return cli_usage_error(cmd, "--device must be auto, cpu or cuda, got '%s'", v);
        } else if ((v = cli_flag(argc, argv, &i, "--quant"))) {
            if (!strcmp(v, "nf4")) mp.quant = LT_QUANT_NF4;
            else if (!strcmp(v, "none")) mp.quant = LT_QUANT_NONE;
            else return cli_usage_error(cmd, "--quant must be nf4 or none, got '%s'", v);
        } else if ((v = cli_flag(argc, argv, &i, "--r"))) { if (!cli_int(cmd, "--r", v, &lp.r)) return 2; }
        else if ((v = cli_flag(argc, argv, &i, "--alpha"))) { if (!cli_double(cmd, "--alpha", v, &alpha)) return 2; }
        else if ((v = cli_flag(argc, argv, &i, "--targets"))) {
            lt_status st = lt_lora_targets_parse(v, &lp.targets);
            if (st != LT_OK) return cli_usage_error(cmd, "%s", lt_last_error());
        } else if ((v = cli_flag(argc, argv, &i, "--batch-size"))) { if (!cli_int(cmd, "--batch-size", v, &tp.batch_size)) return 2; }
        else if ((v = cli_flag(argc, argv, &i, "--max-seq-len"))) { if (!cli_int(cmd, "--max-seq-len", v, &mp.max_seq_len)) return 2; }
        else if ((v = cli_flag(argc, argv, &i, "--optim"))) {
            if (!strcmp(v, "adamw_8bit") || !strcmp(v, "adamw_bnb_8bit")) tp.optimizer = LT_OPTIM_ADAMW_8BIT;
            else if (!strcmp(v, "adamw_torch") || !strcmp(v, "adamw")) tp.optimizer = LT_OPTIM_ADAMW;
            else return cli_usage_error(cmd, "--optim must be adamw_8bit or adamw_torch, got '%s'", v);
        } else if (cli_switch(argv, i, "--no-gradient-checkpointing")) tp.gradient_checkpointing = 0;
        else if (cli_switch(argv, i, "--offload-checkpoints")) tp.offload_checkpoints = 1;
        else return cli_usage_error(cmd, "unknown flag '%s'", argv[i]);
    }
    if (!dir) return cli_usage_error(cmd, "--model DIR is required");
    if (lp.r <= 0 || tp.batch_size <= 0 || mp.max_seq_len <= 0)
        return cli_usage_error(cmd, "--r, --batch-size and --max-seq-len must be positive");
    if (tp.offload_checkpoints && !tp.gradient_checkpointing)
        return cli_usage_error(cmd, "--offload-checkpoints moves gradient checkpointing's tensors: drop "
                               "--no-gradient-checkpointing");
    lp.alpha = (float)alpha;

    lt_config c;
    lt_status st = lt_config_load(dir, &c);
    if (st != LT_OK) return cli_fail(cmd, st, "reading config.json");
    char b1[48], b2[48];
    int Q = c.num_heads * c.head_dim;
    printf("model          %s\n", dir);
    printf("architecture   %s (model_type %s)%s\n", c.architecture, c.model_type,
           c.bnb_4bit ? ", bitsandbytes NF4 checkpoint" : "");
    printf("layers         %d, hidden %d, intermediate %d, vocab %d\n", c.num_layers, c.hidden_size,
           c.intermediate_size, c.vocab_size);
    printf("attention      %d heads, %d kv heads (GQA group %d), head_dim %d%s\n", c.num_heads, c.num_kv_heads,
           c.num_heads / c.num_kv_heads, c.head_dim, c.attention_bias ? ", q/k/v bias" : "");
    printf("rope_theta     %g, rms_norm_eps %g, max positions %d\n", c.rope_theta, c.rms_norm_eps,
           c.max_position_embeddings);
    printf("embeddings     %s, dtype %s\n", c.tie_word_embeddings ? "tied (lm_head = embed_tokens)" : "untied",
           dtype_name(c.torch_dtype));
    (void)Q;
    uint64_t n_params = lt_config_n_params(&c);
    printf("parameters     %s (%.2fB)\n", commas(n_params, b1), (double)n_params / 1e9);

    /* the checkpoint's headers, when the weights are there */
    lt_st_set *set = NULL;
    int rc = 0;
    st = lt_st_open_dir(dir, &set);
    if (st == LT_ERR_NOT_FOUND && !strstr(lt_last_error(), "shard")) {
        printf("weights        none in the folder (config only)\n");
    } else if (st != LT_OK) {
        printf("weights        UNREADABLE: %s\n", lt_last_error());
        rc = 1;
    } else {
        uint64_t bytes = 0;
        int counts[LT_ST_DTYPE_COUNT] = {0};
        for (size_t i = 0; i < lt_st_count(set); i++) {
            const lt_st_tensor *t = lt_st_at(set, i);
            bytes += t->nbytes;
            counts[t->dtype]++;
        }
        printf("weights        %zu tensors, %s (", lt_st_count(set), human(bytes, b1));
        int first = 1;
        for (int d = 0; d < LT_ST_DTYPE_COUNT; d++)
            if (counts[d]) { printf("%s%d %s", first ? "" : ", ", counts[d], lt_st_dtype_name(d)); first = 0; }
        printf(")\n");
        st = lt_model_check_tensors(&c, set);
        if (st == LT_OK) printf("check          every tensor config.json needs is there with the right shape\n");
        else { printf("check          FAILED: %s\n", lt_last_error()); rc = 1; }
        lt_st_close(set);
    }

    uint64_t n_lora = lt_config_lora_numel(&c, lp.r, lp.targets);
    printf("LoRA           r=%d alpha=%g on", lp.r, (double)lp.alpha);
    for (int p = 0; p < LT_PROJ_COUNT; p++)
        if (lp.targets & (1u << p)) printf(" %s", lt_proj_names[p]);
    printf("\n               trainable params: %s || all params: %s || trainable%%: %.4f\n", commas(n_lora, b1),
           commas(n_params + n_lora, b2), 100.0 * (double)n_lora / (double)(n_params + n_lora));

    lt_memory_estimate me;
    st = lt_estimate_memory(dir, &mp, &lp, &tp, &me);
    if (st != LT_OK) return cli_fail(cmd, st, "estimating memory");
    int cpu = mp.device == LT_DEVICE_CPU || (mp.device == LT_DEVICE_AUTO && lt_cuda_device_count() == 0);
    printf("memory         estimate for training on %s: %s weights, batch %d x %d tokens, %s, %s\n",
           cpu ? "the CPU" : "CUDA", cpu ? "f32" : (c.bnb_4bit || mp.quant == LT_QUANT_NF4) ? "NF4" : "16-bit",
           tp.batch_size, mp.max_seq_len, tp.optimizer == LT_OPTIM_ADAMW_8BIT ? "8-bit AdamW" : "fp32 AdamW",
           !tp.gradient_checkpointing ? "no checkpointing"
           : tp.offload_checkpoints  ? "gradient checkpointing, checkpoints in host memory"
                                     : "gradient checkpointing");
    printf("  weights      %s\n", human(me.weights, b1));
    printf("  lora         %s (weights, gradients, optimizer state)\n", human(me.lora, b1));
    printf("  activations  %s\n", human(me.activations, b1));
    printf("  workspace    %s\n", human(me.workspace, b1));
    printf("  total        %s\n", human(me.total, b1));
    if (tp.offload_checkpoints) {
        const int32_t ab = cpu || mp.compute_dtype == LT_DTYPE_F32 ? 4 : 2;
        const uint64_t host = lt_graph_host_bytes(&c, ab, lp.r, (int64_t)tp.batch_size * mp.max_seq_len,
                                                  LT_GRAPH_TRAIN_OFFLOAD);
        printf("  host         %s (pinned: the offloaded checkpoints, outside the total)\n", human(host, b1));
    }
    printf("  evaluation   + %s while training evaluates (--eval-fraction / --eval-data: its logits chunk)\n",
           human(lt_graph_eval_bytes((int64_t)tp.batch_size * mp.max_seq_len, c.vocab_size), b1));
    return rc;
}

/* cmd_bench.c - `loratune bench`: training throughput of the real trainer on fixed shapes.
 *
 * On a randomly initialised model of Qwen2-1.5B's exact shape (made once with init-random when
 * the folder holds no checkpoint), with LoRA r=16, alpha=32, dropout 0.1 on all seven
 * projections and AdamW (the peer script bench/hf_peft_lora_baseline.py uses the same), it
 * times optimizer steps of batch x seq random tokens (grad_accum 1, gradient checkpointing on
 * unless --no-checkpointing; --offload-checkpoints keeps the checkpoints in pinned host memory),
 * reporting the median step's tokens/s, the MFU (6 x parameters x tokens/s over the card's
 * dense bf16 peak from a table by device name), the peak device memory (the CUDA backend's
 * allocator high-water mark) and lt_estimate_memory's figure for the same run (what `loratune
 * info` prints). Long shapes (1x16384, 1x32768) run as any other. A fresh model is loaded per shape so that each peak is that shape's own. With --data
 * it also runs the notebook's recipe (batch 2, grad_accum 8, max_seq_len 2048, 8-bit AdamW) on
 * that Alpaca file. The table goes to stdout last; --json writes the same rows.
 *
 * --gpus N|LIST: data-parallel scaling. The one-GPU benchmark runs first (a child process),
 * then one rank process per GPU (launch.c) runs the same shapes with the batch of each shape on
 * every GPU (the step's window is GPUs x batch); rank 0 reports the step's tokens over all GPUs.
 * The table gives tokens/s in total and per GPU, and the scaling efficiency: tokens/s on N GPUs
 * over N x tokens/s on one. */
#include "cli.h"
#include "launch.h"
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void usage(void) {
    printf("usage: loratune bench [flags]\n\n"
           "Times LoRA training steps on a random Qwen2-1.5B-shaped model.\n\n"
           "  --model DIR        model folder (default /tmp/loratune-bench-qwen2-1.5b; made with init-random\n"
           "                     when the folder holds no model: no config.json, no weights)\n"
           "  --shapes LIST      batch x seq shapes (default 2x512,2x2048,16x512)\n"
           "  --steps N          timed steps per shape (default 8)\n"
           "  --warmup N         untimed steps first (default 3)\n"
           "  --quant Q          nf4 | none (default nf4)\n"
           "  --no-checkpointing keep every layer's activations\n"
           "  --offload-checkpoints  keep the checkpoints in pinned host memory (less GPU memory, e.g. 1x32768)\n"
           "  --optim NAME       adamw_torch (default: fp32 states, as the PEFT peer) or adamw_8bit (the\n"
           "                     notebook's and Unsloth's: compare peak memory with Unsloth this way)\n"
           "  --data FILE        also run the notebook recipe on this Alpaca JSON (batch 2, accum 8, 2048)\n"
           "  --data-steps N     optimizer steps of that run after one warm-up step (default 3)\n"
           "  --tokenizer DIR    tokenizer folder (default assets/qwen2-tokenizer)\n"
           "  --device-index N   CUDA device (default 0)\n"
           "  --json FILE        write the results as JSON\n"
           "  --profile          log the GPU time of every backend op per run (LT_CUDA_PROFILE=1)\n"
           "  --verbose          log the library's information messages (e.g. LT_CUDA_SYNCTIME=1's host waits)\n"
           "  --gpus N|LIST      data-parallel scaling: one GPU first, then N GPUs (0..N-1) or those listed\n"
           "                     (0,2,3), the shape's batch on each; prints tokens/s per GPU and the scaling\n"
           "                     efficiency (tokens/s on N GPUs / (N x tokens/s on one))\n");
}

/* Dense bf16 tensor-core peak (FLOP/s) by device name; 0 when unknown. */
static double peak_flops(const char *name) {
    static const struct { const char *key; double flops; } table[] = {
        {"H200", 989e12}, {"H100 PCIe", 756e12}, {"H100 NVL", 835e12}, {"H100", 989e12}, {"H800", 989e12},
        {"GH200", 989e12}, {"B200", 2250e12}, {"A100", 312e12}, {"A800", 312e12}, {"L40S", 362e12},
        {"L40", 181e12}, {"A6000", 155e12}, {"A10G", 70e12}, {"A10", 125e12}, {"L4", 121e12},
        {"RTX 4090", 165e12}, {"RTX 3090", 71e12}, {"T4", 65e12}, {"V100", 125e12},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strstr(name, table[i].key)) return table[i].flops;
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct bench_row {
    char shape[32];
    int ckpt, offload;
    double tok_s, mfu, peak_gib, step_s, loss;
    double est_gib; /* lt_estimate_memory's total for the run (0: none) */
    int ok;
    char err[256];
} bench_row;

typedef struct bench_opts {
    const char *model_dir, *tok_dir;
    int steps, warmup, quant, ckpt, device_index, profile;
    double peak;
    /* a rank of a data-parallel run (launched by --gpus): the group, its size and this rank */
    lt_comm *comm;
    int32_t world, rank;
    int offload; /* --offload-checkpoints */
    int32_t optim; /* --optim: the fixed shapes' optimizer (the --data recipe keeps adamw_8bit) */
} bench_opts;

/* lt_estimate_memory's total (GiB) for batch B x L tokens with the run's settings: the model
 * folder's config, NF4 or not, LoRA r 16 on all projections, the optimizer, checkpointing */
static double estimate_gib(const bench_opts *o, int B, int L, int optimizer) {
    lt_model_params mp;
    lt_model_params_init(&mp);
    mp.device = LT_DEVICE_CUDA;
    mp.quant = o->quant;
    mp.max_seq_len = L;
    lt_lora_params lp;
    lt_lora_params_init(&lp);
    lp.r = 16; lp.alpha = 32; lp.targets = LT_TARGET_ALL;
    lt_train_params tp;
    lt_train_params_init(&tp);
    tp.batch_size = B;
    tp.optimizer = optimizer;
    tp.gradient_checkpointing = o->ckpt;
    tp.offload_checkpoints = o->offload;
    lt_memory_estimate e;
    memset(&e, 0, sizeof e);
    e.struct_size = sizeof e;
    return lt_estimate_memory(o->model_dir, &mp, &lp, &tp, &e) == LT_OK ? (double)e.total / 1073741824.0 : 0;
}

/* the data-parallel fields of tp for a rank of o's group */
static void set_dist(const bench_opts *o, lt_train_params *tp) {
    if (!o->comm) return;
    tp->world_size = o->world;
    tp->rank = o->rank;
    tp->comm = o->comm;
}

static lt_status load_model(const bench_opts *o, int max_seq, lt_model **m) {
    lt_model_params mp;
    lt_model_params_init(&mp);
    mp.device = LT_DEVICE_CUDA;
    mp.device_index = o->device_index;
    mp.quant = o->quant;
    mp.max_seq_len = max_seq;
    lt_status st = lt_model_load(o->model_dir, &mp, m);
    if (st != LT_OK) return st;
    lt_lora_params lp;
    lt_lora_params_init(&lp);
    lp.r = 16; lp.alpha = 32; lp.dropout = 0.1f; lp.targets = LT_TARGET_ALL;
    st = lt_model_add_lora(*m, &lp);
    if (st != LT_OK) { lt_model_free(*m); *m = NULL; }
    return st;
}

/* one batch x seq shape of random tokens */
static void bench_shape(const bench_opts *o, const lt_tokenizer *tok, int B, int L, uint64_t n_params,
                        bench_row *row) {
    snprintf(row->shape, sizeof row->shape, "%dx%d", B, L);
    row->ckpt = o->ckpt;
    row->offload = o->offload;
    lt_model *m = NULL;
    lt_dataset *ds = NULL;
    lt_trainer *tr = NULL;
    int32_t *ids = NULL;
    double *times = NULL;
    const int total = o->warmup + o->steps;
    lt_status st = load_model(o, L, &m);
    if (st == LT_OK) {
        lt_dataset_params dp;
        lt_dataset_params_init(&dp);
        dp.format = LT_DATA_TOKENS;
        dp.max_seq_len = L;
        dp.add_eos = 0;
        st = lt_dataset_new(tok, &dp, &ds);
    }
    ids = malloc((size_t)L * sizeof *ids);
    times = malloc((size_t)total * sizeof *times);
    /* ids below the model's vocabulary as well as below Qwen2's ordinary tokens (151643): a
     * Llama-3.1-8B shape has 128,256 */
    int64_t vocab = 151643;
    if (m) {
        lt_model_info mi;
        memset(&mi, 0, sizeof mi);
        mi.struct_size = sizeof mi;
        if (lt_model_get_info(m, &mi) == LT_OK && mi.vocab_size > 0 && mi.vocab_size < vocab) vocab = mi.vocab_size;
    }
    uint64_t x = 0x9E3779B97F4A7C15ull ^ (uint64_t)(B * 100000 + L);
    for (int r = 0; st == LT_OK && r < total * B * o->world; r++) { /* every rank the same records */
        for (int i = 0; i < L; i++) {
            x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
            ids[i] = (int32_t)(((x * 2685821657736338717ull) >> 33) % (uint64_t)vocab);
        }
        st = lt_dataset_add_tokens(ds, ids, NULL, (size_t)L);
    }
    if (st == LT_OK) {
        lt_train_params tp;
        lt_train_params_init(&tp);
        tp.batch_size = B;
        tp.grad_accum = 1;
        tp.max_steps = total;
        tp.lr = 4e-5;
        tp.warmup_steps = 0;
        tp.optimizer = o->optim;
        tp.weight_decay = 0.01;
        tp.gradient_checkpointing = o->ckpt;
        tp.offload_checkpoints = o->offload;
        tp.log_every = 1000000;
        set_dist(o, &tp);
        st = lt_trainer_new(m, ds, &tp, &tr);
    }
    lt_metrics mt;
    memset(&mt, 0, sizeof mt);
    mt.struct_size = sizeof mt;
    for (int s = 0; st == LT_OK && s < total; s++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        st = lt_trainer_step(tr, &mt);
        clock_gettime(CLOCK_MONOTONIC, &b);
        times[s] = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
        if (st == LT_DONE) {
            snprintf(row->err, sizeof row->err, "the trainer finished after %d of %d steps", s, total);
            st = LT_ERR_STATE;
            break;
        }
        if (st == LT_OK && o->rank == 0)
            fprintf(stderr, "  %s step %d: %.3f s, loss %.4f\n", row->shape, s + 1, times[s], mt.loss);
    }
    if (st == LT_OK) {
        qsort(times + o->warmup, (size_t)o->steps, sizeof *times, cmp_double);
        row->step_s = times[o->warmup + o->steps / 2];
        row->tok_s = (double)o->world * B * L / row->step_s; /* every rank's tokens */
        row->mfu = o->peak > 0 ? 6.0 * (double)n_params * row->tok_s / o->peak : 0;
        row->peak_gib = (double)mt.peak_memory / 1073741824.0;
        row->est_gib = estimate_gib(o, B, L, o->optim);
        row->loss = mt.loss;
        row->ok = 1;
    } else if (!row->err[0]) {
        snprintf(row->err, sizeof row->err, "%s", lt_last_error());
    }
    lt_trainer_free(tr);
    lt_dataset_free(ds);
    lt_model_free(m);
    free(ids);
    free(times);
}

/* the notebook's recipe on an Alpaca file */
static void bench_data(const bench_opts *o, const lt_tokenizer *tok, const char *path, int steps, uint64_t n_params,
                       bench_row *row) {
    snprintf(row->shape, sizeof row->shape, "data 2x<=2048 ga8");
    row->ckpt = o->ckpt;
    row->offload = o->offload;
    lt_model *m = NULL;
    lt_dataset *ds = NULL;
    lt_trainer *tr = NULL;
    lt_status st = load_model(o, 2048, &m);
    if (st == LT_OK) {
        lt_dataset_params dp;
        lt_dataset_params_init(&dp);
        dp.max_seq_len = 2048;
        st = lt_dataset_load(path, tok, &dp, &ds);
    }
    if (st == LT_OK) {
        lt_train_params tp;
        lt_train_params_init(&tp);
        tp.batch_size = 2;
        tp.grad_accum = 8;
        tp.max_steps = steps + 1;
        tp.gradient_checkpointing = o->ckpt;
        tp.offload_checkpoints = o->offload;
        tp.log_every = 1000000;
        set_dist(o, &tp);
        st = lt_trainer_new(m, ds, &tp, &tr);
    }
    lt_metrics mt;
    memset(&mt, 0, sizeof mt);
    mt.struct_size = sizeof mt;
    double tsum = 0, toks = 0;
    for (int s = 0; st == LT_OK && s <= steps; s++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        st = lt_trainer_step(tr, &mt);
        clock_gettime(CLOCK_MONOTONIC, &b);
        double dt = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
        if (st == LT_DONE) {
            snprintf(row->err, sizeof row->err, "the trainer finished after %d steps", s);
            st = LT_ERR_STATE;
            break;
        }
        if (st != LT_OK) break;
        if (o->rank == 0)
            fprintf(stderr, "  data step %d: %.3f s, %lld tokens, loss %.4f\n", s + 1, dt, (long long)mt.tokens, mt.loss);
        if (s > 0) { tsum += dt; toks += (double)mt.tokens; }
    }
    if (st == LT_OK && tsum > 0) {
        row->step_s = tsum / steps;
        row->tok_s = toks / tsum;
        row->mfu = o->peak > 0 ? 6.0 * (double)n_params * row->tok_s / o->peak : 0;
        row->peak_gib = (double)mt.peak_memory / 1073741824.0;
        row->est_gib = estimate_gib(o, 2, 2048, LT_OPTIM_ADAMW_8BIT);
        row->loss = mt.loss;
        row->ok = 1;
    } else if (st != LT_OK && !row->err[0]) {
        snprintf(row->err, sizeof row->err, "%s", lt_last_error());
    }
    lt_trainer_free(tr);
    lt_dataset_free(ds);
    lt_model_free(m);
}

/* writes Qwen2-1.5B's config (the peer script's values) and runs init-random into dir */
static int make_model(const char *dir, const char *tok_dir) {
    char cfg[4096], path[4096];
    snprintf(path, sizeof path, "%s.config.json", dir);
    snprintf(cfg, sizeof cfg,
             "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", \"vocab_size\": 151936,\n"
             " \"hidden_size\": 1536, \"intermediate_size\": 8960, \"num_hidden_layers\": 28,\n"
             " \"num_attention_heads\": 12, \"num_key_value_heads\": 2, \"max_position_embeddings\": 32768,\n"
             " \"rope_theta\": 1000000.0, \"rms_norm_eps\": 1e-06, \"tie_word_embeddings\": true,\n"
             " \"hidden_act\": \"silu\", \"use_sliding_window\": false, \"sliding_window\": null,\n"
             " \"max_window_layers\": 28, \"bos_token_id\": 151643, \"eos_token_id\": 151645,\n"
             " \"initializer_range\": 0.02, \"torch_dtype\": \"bfloat16\"}\n");
    FILE *f = fopen(path, "w");
    if (!f) { fprintf(stderr, "loratune bench: cannot write %s\n", path); return 1; }
    fputs(cfg, f);
    fclose(f);
    char *argv[] = {"init-random", "--config", path, "--output", (char *)dir, "--seed", "3407", "--dtype", "bf16",
                    "--tokenizer", (char *)tok_dir, "--overwrite", NULL};
    fprintf(stderr, "loratune bench: writing a random Qwen2-1.5B-shaped model to %s\n", dir);
    return lt_cmd_init_random(12, argv);
}

/* the rows of a --json file by shape: tokens/s (0 where the row failed or is missing) */
static double json_tok_s(json_t *rows, const char *shape) {
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r) {
        const char *sh = json_string_value(json_object_get(r, "shape"));
        if (sh && !strcmp(sh, shape) && json_integer_value(json_object_get(r, "ok")))
            return json_number_value(json_object_get(r, "tok_per_s"));
    }
    return 0;
}

/* --gpus: one GPU, then the ranks; the scaling table */
static int bench_scaling(const char *cmd, const char *spec, int argc, char **argv, const char *json_out) {
    if (lt_cuda_device_count() <= 0) {
        fprintf(stderr, "loratune bench: no CUDA device (or a CPU-only build); the benchmark needs a GPU\n");
        return 1;
    }
    int n = 1;
    if (strchr(spec, ',')) {
        for (const char *p = spec; *p; p++) n += *p == ',' && p[1];
    } else if (sscanf(spec, "%d", &n) != 1 || n < 1) {
        return cli_usage_error(cmd, "--gpus '%s': give a count or a device list", spec);
    }
    char dir[] = "/tmp/loratune-bench-scaling-XXXXXX";
    if (!mkdtemp(dir)) return cli_usage_error(cmd, "cannot make a temporary folder");
    char j1[128], jn[128];
    snprintf(j1, sizeof j1, "%s/one.json", dir);
    snprintf(jn, sizeof jn, "%s/ranks.json", dir);
    fprintf(stderr, "loratune bench: one GPU first, then %d\n", n);
    const char *e1[] = {"--json", j1, NULL};
    int rc1 = cli_run_self(cmd, argc, argv, e1);
    char **argv2 = calloc((size_t)argc + 3, sizeof *argv2);
    if (!argv2) return 1;
    for (int i = 0; i < argc; i++) argv2[i] = argv[i];
    argv2[argc] = "--json";
    argv2[argc + 1] = jn;
    int rcn = cli_launch(cmd, spec, argc + 2, argv2);
    free(argv2);
    json_error_t e;
    json_t *r1 = json_load_file(j1, 0, &e), *rn = json_load_file(jn, 0, &e);
    int bad = rc1 != 0 || rcn != 0 || !r1 || !rn;
    printf("\nloratune bench --gpus %s: data-parallel scaling (each GPU runs the shape's batch; tokens/s of all GPUs)\n",
           spec);
    printf("%-20s %12s %12s %12s %9s\n", "shape", "1 GPU tok/s", "total tok/s", "per GPU", "scaling");
    json_t *out = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(rn ? rn : r1, i, r) {
        const char *sh = json_string_value(json_object_get(r, "shape"));
        if (!sh) continue;
        double t1 = r1 ? json_tok_s(r1, sh) : 0, tn = rn ? json_tok_s(rn, sh) : 0;
        if (t1 > 0 && tn > 0)
            printf("%-20s %12.0f %12.0f %12.0f %8.1f%%\n", sh, t1, tn, tn / n, 100.0 * tn / (n * t1));
        else
            printf("%-20s %12s %12s %12s %9s\n", sh, t1 > 0 ? "ok" : "FAILED", tn > 0 ? "ok" : "FAILED", "-", "-");
        json_array_append_new(out, json_pack("{s:s, s:i, s:f, s:f, s:f, s:f}", "shape", sh, "gpus", n,
                                             "tok_per_s_1gpu", t1, "tok_per_s", tn, "tok_per_s_per_gpu", tn / n,
                                             "scaling", t1 > 0 ? tn / (n * t1) : 0.0));
    }
    if (json_out) json_dump_file(out, json_out, JSON_INDENT(1));
    json_decref(out);
    json_decref(r1);
    json_decref(rn);
    remove(j1);
    remove(jn);
    rmdir(dir);
    return bad ? (rcn ? rcn : rc1 ? rc1 : 1) : 0;
}

int lt_cmd_bench(int argc, char **argv) {
    const char *cmd = "bench", *v;
    bench_opts o = {"/tmp/loratune-bench-qwen2-1.5b", "assets/qwen2-tokenizer", 8, 3, LT_QUANT_NF4, 1, 0, 0, 0, NULL,
                    1, 0, 0, LT_OPTIM_ADAMW};
    const char *gpus = cli_take_gpus_flag(&argc, argv);
    if (gpus) { /* the scaling run: --json is written here, from the two runs' rows */
        const char *json_out = NULL;
        int n = 0;
        for (int i = 0; i < argc; i++) {
            if (i > 0 && !strcmp(argv[i], "--json") && i + 1 < argc) { json_out = argv[++i]; continue; }
            if (i > 0 && !strncmp(argv[i], "--json=", 7)) { json_out = argv[i] + 7; continue; }
            argv[n++] = argv[i];
        }
        argv[n] = NULL;
        return bench_scaling(cmd, gpus, n, argv, json_out);
    }
    cli_dist dist;
    {
        int drc = cli_dist_from_env(cmd, &dist);
        if (drc >= 0) return drc;
    }
    const char *shapes = "2x512,2x2048,16x512", *data = NULL, *json = NULL;
    int32_t data_steps = 3;
    for (int i = 1; i < argc; i++) {
        if (cli_switch(argv, i, "--help") || cli_switch(argv, i, "-h")) { usage(); return 0; }
        else if ((v = cli_flag(argc, argv, &i, "--model"))) o.model_dir = v;
        else if ((v = cli_flag(argc, argv, &i, "--shapes"))) shapes = v;
        else if ((v = cli_flag(argc, argv, &i, "--steps"))) { if (!cli_int(cmd, "--steps", v, &o.steps)) return 2; }
        else if ((v = cli_flag(argc, argv, &i, "--warmup"))) { if (!cli_int(cmd, "--warmup", v, &o.warmup)) return 2; }
        else if ((v = cli_flag(argc, argv, &i, "--quant"))) {
            if (!strcmp(v, "nf4")) o.quant = LT_QUANT_NF4;
            else if (!strcmp(v, "none")) o.quant = LT_QUANT_NONE;
            else return cli_usage_error(cmd, "--quant must be nf4 or none, got '%s'", v);
        }
        else if (cli_switch(argv, i, "--no-checkpointing")) o.ckpt = 0;
        else if (cli_switch(argv, i, "--offload-checkpoints")) o.offload = 1;
        else if ((v = cli_flag(argc, argv, &i, "--optim"))) {
            if (lt_optimizer_parse(v, &o.optim) != LT_OK)
                return cli_usage_error(cmd, "--optim must be adamw_torch or adamw_8bit, got '%s'", v);
        }
        else if ((v = cli_flag(argc, argv, &i, "--data"))) data = v;
        else if ((v = cli_flag(argc, argv, &i, "--data-steps"))) { if (!cli_int(cmd, "--data-steps", v, &data_steps)) return 2; }
        else if ((v = cli_flag(argc, argv, &i, "--tokenizer"))) o.tok_dir = v;
        else if ((v = cli_flag(argc, argv, &i, "--device-index"))) { if (!cli_int(cmd, "--device-index", v, &o.device_index)) return 2; }
        else if ((v = cli_flag(argc, argv, &i, "--json"))) json = v;
        else if (cli_switch(argv, i, "--profile")) { o.profile = 1; cli_enable_logging(LT_LOG_INFO); }
        else if (cli_switch(argv, i, "--verbose")) cli_enable_logging(LT_LOG_INFO);
        else return cli_usage_error(cmd, "unknown flag '%s'", argv[i]);
    }
    if (o.steps < 1 || o.warmup < 0) return cli_usage_error(cmd, "--steps must be >= 1 and --warmup >= 0");
    if (o.offload && !o.ckpt)
        return cli_usage_error(cmd, "--offload-checkpoints moves gradient checkpointing's tensors: drop --no-checkpointing");
    if (o.profile) { /* count from the second timed micro-batch's LM head on: warm-up stays out */
        char v[32];
        snprintf(v, sizeof v, "%d", o.warmup + 2);
        setenv("LT_CUDA_PROFILE", v, 1);
    }
    if (lt_cuda_device_count() <= 0) {
        fprintf(stderr, "loratune bench: no CUDA device (or a CPU-only build); the benchmark needs a GPU\n");
        return 1;
    }
    if (dist.active) { /* a rank of --gpus: join the others; rank 0 reports */
        o.world = dist.world;
        o.rank = dist.rank;
        o.device_index = dist.device_index;
        if (o.rank != 0 && !freopen("/dev/null", "w", stdout)) { /* keep stdout */ }
        lt_status cst = cli_dist_join(&dist, &o.comm);
        if (cst != LT_OK) return cli_fail(cmd, cst, "joining the data-parallel run");
    }
    char name[256];
    int32_t cc = 0;
    uint64_t total = 0;
    lt_status st = lt_cuda_device_info(o.device_index, name, sizeof name, &cc, &total, NULL);
    if (st != LT_OK) return cli_fail(cmd, st, "device");
    o.peak = peak_flops(name);
    char probe[4096];
    /* a random model is made only where the folder holds no model at all: a user's checkpoint
     * (one file, shards with an index, or a config alone) is never replaced */
    struct stat sb;
    int has_model = 0;
    static const char *const model_files[] = {"model.safetensors", "model.safetensors.index.json", "config.json"};
    for (int i = 0; i < 3 && !has_model; i++) {
        snprintf(probe, sizeof probe, "%s/%s", o.model_dir, model_files[i]);
        has_model = stat(probe, &sb) == 0;
    }
    if (!has_model && make_model(o.model_dir, o.tok_dir) != 0) return 1;
    lt_tokenizer *tok = NULL;
    st = lt_tokenizer_load(o.tok_dir, &tok);
    if (st != LT_OK) return cli_fail(cmd, st, o.tok_dir);
    uint64_t n_params = 0;
    {
        lt_model *m = NULL;
        st = load_model(&o, 512, &m);
        if (st != LT_OK) { lt_tokenizer_free(tok); return cli_fail(cmd, st, o.model_dir); }
        lt_model_info info;
        memset(&info, 0, sizeof info);
        info.struct_size = sizeof info;
        lt_model_get_info(m, &info);
        n_params = info.n_params;
        fprintf(stderr, "loratune bench: %s (cc %d.%d, %.0f GiB), %.3f B parameters, %.2f GiB of base weights, "
                "LoRA %.2f M\n", name, cc / 10, cc % 10, total / 1073741824.0, n_params / 1e9,
                info.weight_bytes / 1073741824.0, info.n_lora_params / 1e6);
        lt_model_free(m);
    }
    bench_row rows[16];
    int nrows = 0;
    char *list = strdup(shapes);
    for (char *tokp = strtok(list, ","); tokp && nrows < 15; tokp = strtok(NULL, ",")) {
        int B = 0, L = 0;
        if (sscanf(tokp, "%dx%d", &B, &L) != 2 || B < 1 || L < 2) {
            free(list);
            lt_tokenizer_free(tok);
            return cli_usage_error(cmd, "--shapes: '%s' is not BATCHxSEQ", tokp);
        }
        memset(&rows[nrows], 0, sizeof rows[nrows]);
        bench_shape(&o, tok, B, L, n_params, &rows[nrows]);
        nrows++;
    }
    free(list);
    if (data) {
        memset(&rows[nrows], 0, sizeof rows[nrows]);
        bench_data(&o, tok, data, data_steps, n_params, &rows[nrows]);
        nrows++;
    }
    lt_tokenizer_free(tok);
    lt_comm_free(o.comm);
    if (json && o.rank == 0) {
        FILE *f = fopen(json, "w");
        if (f) {
            fprintf(f, "[\n");
            for (int i = 0; i < nrows; i++)
                fprintf(f, " {\"shape\": \"%s\", \"ckpt\": %d, \"offload\": %d, \"ok\": %d, \"tok_per_s\": %.1f, "
                        "\"mfu\": %.4f, \"peak_gib\": %.3f, \"est_gib\": %.3f, \"step_s\": %.4f, \"loss\": %.4f, "
                        "\"device\": \"%s\"}%s\n",
                        rows[i].shape, rows[i].ckpt, rows[i].offload, rows[i].ok, rows[i].tok_s, rows[i].mfu,
                        rows[i].peak_gib, rows[i].est_gib, rows[i].step_s, rows[i].loss, name,
                        i + 1 < nrows ? "," : "");
            fprintf(f, "]\n");
            fclose(f);
        }
    }
    printf("\nloratune bench on %s (peak %.0f TFLOP/s bf16 dense; MFU = 6 x %.3fB params x tokens/s / peak)\n", name,
           o.peak / 1e12, n_params / 1e9);
    printf("(ckpt: on, off, or host = on with the checkpoints offloaded; est GiB: lt_estimate_memory, as `loratune info`;\n"
           " optimizer of the shapes: %s)\n", o.optim == LT_OPTIM_ADAMW ? "adamw_torch (fp32 states)" : "adamw_8bit");
    printf("%-20s %-5s %10s %7s %9s %8s %8s %8s\n", "shape", "ckpt", "tokens/s", "MFU", "peak GiB", "est GiB", "step s",
           "loss");
    int bad = 0;
    for (int i = 0; i < nrows; i++) {
        const char *ck = !rows[i].ckpt ? "off" : rows[i].offload ? "host" : "on";
        if (!rows[i].ok) {
            printf("%-20s %-5s FAILED: %s\n", rows[i].shape, ck, rows[i].err);
            bad = 1;
            continue;
        }
        printf("%-20s %-5s %10.0f %6.1f%% %9.2f %8.2f %8.3f %8.4f\n", rows[i].shape, ck, rows[i].tok_s,
               100 * rows[i].mfu, rows[i].peak_gib, rows[i].est_gib, rows[i].step_s, rows[i].loss);
    }
    return bad;
}

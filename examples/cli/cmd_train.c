/* cmd_train.c - `loratune train`: LoRA fine-tuning of a Hugging Face model folder on an Alpaca /
 * chat / text JSON(L) file, with the notebook's recipe as defaults. Options come from
 * --config FILE.json (the same names, '-' or '_') and flags, flags winning. Shows a progress bar
 * on a terminal and a line per logged step otherwise; writes log.jsonl, loss.svg, checkpoints and
 * finally the adapter (PEFT files) into --output; Ctrl-C stops after the current step and saves a
 * checkpoint to resume from. */
#include "cli.h"

#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *usage_text =
    "usage: loratune train --model DIR --data FILE --output DIR [flags]\n"
    "\n"
    "Fine-tunes a LoRA adapter on a frozen (4-bit on CUDA) base. Defaults are the notebook's recipe.\n"
    "\n"
    "  --model DIR          Hugging Face model folder (config.json + *.safetensors)\n"
    "  --data FILE          training records: JSON array or JSONL (Alpaca, chat messages, text, input_ids)\n"
    "  --output DIR         where log.jsonl, loss.svg, checkpoints and the adapter go\n"
    "  --config FILE.json   options as JSON ({\"lr\": 1e-4, \"batch_size\": 4, ...}); flags override it\n"
    "  --tokenizer DIR      tokenizer.json folder (default: the model folder)\n"
    "  --template NAME|TEXT prompt template: alpaca-zh (default), alpaca, chatml, or a text with\n"
    "                       {instruction}, {input}, {output}\n"
    "  --max-seq-len N      truncate records to N tokens (2048)\n"
    "  --batch-size N       records per micro-batch (2)\n"
    "  --grad-accum N       micro-batches per optimizer step (8)\n"
    "  --max-steps N        optimizer steps (100); 0 = train --epochs\n"
    "  --epochs X           epochs when --max-steps is 0 (1)\n"
    "  --lr X               peak learning rate (4e-5)\n"
    "  --warmup-steps N     linear warmup steps (50)\n"
    "  --scheduler NAME     cosine (default), linear, constant\n"
    "  --optim NAME         adamw_8bit (default, bitsandbytes) or adamw_torch\n"
    "  --weight-decay X     (0.01)\n"
    "  --max-grad-norm X    global-norm clipping, 0 = off (1.0)\n"
    "  --lora-r N           LoRA rank (16)\n"
    "  --lora-alpha X       LoRA alpha (32)\n"
    "  --lora-dropout X     dropout on the LoRA input (0.1)\n"
    "  --targets LIST       q,k,v,o,gate,up,down or all (all)\n"
    "  --seed N             data order, LoRA init and dropout (3407)\n"
    "  --fuse-micro-batches 0|1  run a window's short micro-batches as one pass while they fit\n"
    "                       batch-size x the longest record, or 4096 tokens where batch-size x\n"
    "                       max-seq-len allows (1; same records and loss)\n"
    "  --log-every N        steps between log lines / log.jsonl rows (1)\n"
    "  --save-every N       steps between checkpoints in --output, 0 = none (0)\n"
    "  --resume DIR         continue from a checkpoint folder (same model, data and LoRA settings)\n"
    "  --init-adapter DIR   start from an existing PEFT adapter instead of a fresh one\n"
    "  --device NAME        auto (default), cpu or cuda\n"
    "  --quant NAME         base weights: nf4 (default) or none (16-bit / f32)\n"
    "  --dtype NAME         compute type on CUDA: auto (bf16 where the GPU has it, else fp16 with\n"
    "                       loss scaling), bf16 or fp16\n"
    "  --threads N          CPU threads (0 = all cores)\n"
    "  --gen-instruction T  the instruction generated for before and after training, through the\n"
    "                       template, as the notebook does (a ruozhiba question); \"\" = no generation\n"
    "  --gen-input T        its input (\"\")\n"
    "  --gen-max-new-tokens N  (128)\n";

typedef enum { O_STR, O_INT, O_DBL, O_U64 } opt_kind;

typedef struct train_opts {
    const char *model, *data, *output, *tokenizer, *tmpl, *resume, *init_adapter, *device, *scheduler, *optim,
        *targets, *quant, *gen_instruction, *gen_input, *dtype;
    int32_t max_seq_len, batch_size, grad_accum, max_steps, warmup_steps, lora_r, log_every, save_every, threads,
        gen_max_new_tokens, fuse_micro_batches;
    double epochs, lr, weight_decay, max_grad_norm, lora_alpha, lora_dropout;
    uint64_t seed;
} train_opts;

typedef struct opt_def { const char *name; opt_kind kind; size_t off; } opt_def;
#define OPT(name, kind, field) {name, kind, offsetof(train_opts, field)}
static const opt_def opt_defs[] = {
    OPT("model", O_STR, model), OPT("data", O_STR, data), OPT("output", O_STR, output),
    OPT("tokenizer", O_STR, tokenizer), OPT("template", O_STR, tmpl), OPT("resume", O_STR, resume),
    OPT("init-adapter", O_STR, init_adapter), OPT("device", O_STR, device), OPT("scheduler", O_STR, scheduler),
    OPT("optim", O_STR, optim), OPT("targets", O_STR, targets), OPT("quant", O_STR, quant), OPT("dtype", O_STR, dtype),
    OPT("max-seq-len", O_INT, max_seq_len), OPT("batch-size", O_INT, batch_size),
    OPT("grad-accum", O_INT, grad_accum), OPT("max-steps", O_INT, max_steps),
    OPT("warmup-steps", O_INT, warmup_steps), OPT("lora-r", O_INT, lora_r), OPT("log-every", O_INT, log_every),
    OPT("save-every", O_INT, save_every), OPT("threads", O_INT, threads), OPT("epochs", O_DBL, epochs),
    OPT("lr", O_DBL, lr), OPT("weight-decay", O_DBL, weight_decay), OPT("max-grad-norm", O_DBL, max_grad_norm),
    OPT("lora-alpha", O_DBL, lora_alpha), OPT("lora-dropout", O_DBL, lora_dropout), OPT("seed", O_U64, seed),
    OPT("gen-instruction", O_STR, gen_instruction), OPT("gen-input", O_STR, gen_input),
    OPT("gen-max-new-tokens", O_INT, gen_max_new_tokens), OPT("fuse-micro-batches", O_INT, fuse_micro_batches),
};
#define N_OPTS (sizeof opt_defs / sizeof opt_defs[0])

static void opts_defaults(train_opts *o) {
    memset(o, 0, sizeof *o);
    o->tmpl = "alpaca-zh";
    o->device = "auto";
    o->scheduler = "cosine";
    o->optim = "adamw_8bit";
    o->targets = "all";
    o->quant = "nf4";
    o->dtype = "auto";
    o->max_seq_len = 2048;
    o->batch_size = 2;
    o->grad_accum = 8;
    o->max_steps = 100;
    o->warmup_steps = 50;
    o->lora_r = 16;
    o->log_every = 1;
    o->save_every = 0;
    o->epochs = 1;
    o->lr = 4e-5;
    o->weight_decay = 0.01;
    o->max_grad_norm = 1.0;
    o->lora_alpha = 32;
    o->lora_dropout = 0.1;
    o->seed = 3407;
    o->gen_instruction = "只剩一个心脏了还能活吗？";
    o->gen_input = "";
    o->gen_max_new_tokens = 128;
    o->fuse_micro_batches = 1;
}

/* Sets option `d` from text (a flag's value). */
static bool opt_set_text(const char *cmd, const opt_def *d, const char *v, train_opts *o) {
    char flag[64];
    snprintf(flag, sizeof flag, "--%s", d->name);
    void *dst = (char *)o + d->off;
    switch (d->kind) {
    case O_STR: *(const char **)dst = v; return true;
    case O_INT: return cli_int(cmd, flag, v, (int32_t *)dst);
    case O_DBL: return cli_double(cmd, flag, v, (double *)dst);
    case O_U64: return cli_u64(cmd, flag, v, (uint64_t *)dst);
    }
    return false;
}

/* Applies a --config JSON object; strings stay owned by `root` (kept alive by the caller). */
static bool opts_from_json(const char *cmd, const char *path, json_t *root, train_opts *o) {
    if (!json_is_object(root)) {
        cli_usage_error(cmd, "%s: the config must be a JSON object of option names", path);
        return false;
    }
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        char name[64];
        snprintf(name, sizeof name, "%s", key);
        for (char *c = name; *c; c++)
            if (*c == '_') *c = '-';
        const opt_def *d = NULL;
        for (size_t i = 0; i < N_OPTS; i++)
            if (!strcmp(opt_defs[i].name, name)) d = &opt_defs[i];
        if (!d || !strcmp(name, "config")) {
            cli_usage_error(cmd, "%s: unknown option \"%s\"", path, key);
            return false;
        }
        void *dst = (char *)o + d->off;
        bool ok = true;
        switch (d->kind) {
        case O_STR: ok = json_is_string(v); if (ok) *(const char **)dst = json_string_value(v); break;
        case O_INT: ok = json_is_integer(v); if (ok) *(int32_t *)dst = (int32_t)json_integer_value(v); break;
        case O_DBL: ok = json_is_number(v); if (ok) *(double *)dst = json_number_value(v); break;
        case O_U64: ok = json_is_integer(v) && json_integer_value(v) >= 0;
            if (ok) *(uint64_t *)dst = (uint64_t)json_integer_value(v);
            break;
        }
        if (!ok) {
            cli_usage_error(cmd, "%s: \"%s\" must be %s", path, key,
                            d->kind == O_STR ? "a string" : d->kind == O_DBL ? "a number" : "an integer");
            return false;
        }
    }
    return true;
}

/* ---- progress ---- */

typedef struct progress {
    bool tty;
    int32_t log_every;
    double loss_sum;
    int n;
    double t0;
    int64_t first_step; /* the step before this run's first (resume), -1 until known */
} progress;

static volatile sig_atomic_t interrupted = 0;
static void on_sigint(int sig) {
    (void)sig;
    if (interrupted) _exit(130); /* a second Ctrl-C quits at once */
    interrupted = 1;
}

static void fmt_duration(char *buf, size_t cap, double s) {
    if (!(s >= 0) || s > 1e7) { snprintf(buf, cap, "?"); return; }
    int h = (int)(s / 3600), m = (int)(s / 60) % 60, sec = (int)s % 60;
    if (h) snprintf(buf, cap, "%dh%02dm", h, m);
    else snprintf(buf, cap, "%dm%02ds", m, sec);
}

static int on_step(const lt_metrics *mt, void *ud) {
    progress *p = ud;
    p->loss_sum += mt->loss;
    p->n++;
    if (p->first_step < 0) p->first_step = mt->step - 1;
    double elapsed = now_s() - p->t0;
    double per_step = (double)(mt->step - p->first_step) > 0 ? elapsed / (double)(mt->step - p->first_step) : 0;
    char eta[32];
    fmt_duration(eta, sizeof eta, per_step * (double)(mt->max_steps - mt->step));
    if (p->tty) {
        int width = 24, fill = (int)(width * (double)mt->step / (double)(mt->max_steps > 0 ? mt->max_steps : 1));
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = 0;
        fprintf(stderr, "\r\033[Kstep %lld/%lld [%s] loss %.4f lr %.2e tok/s %.0f eta %s", (long long)mt->step,
                (long long)mt->max_steps, bar, mt->loss, mt->lr, mt->tokens_per_s, eta);
        if (mt->step == mt->max_steps) fputc('\n', stderr);
        fflush(stderr);
    }
    bool log_now = p->log_every > 0 && (mt->step % p->log_every == 0 || mt->step == mt->max_steps);
    if (log_now) {
        if (!p->tty)
            printf("step %lld/%lld loss %.4f lr %.3e grad_norm %.4f tok/s %.0f epoch %.2f eta %s\n",
                   (long long)mt->step, (long long)mt->max_steps, p->loss_sum / p->n, mt->lr, mt->grad_norm,
                   mt->tokens_per_s, mt->epoch, eta);
        fflush(stdout);
        p->loss_sum = 0;
        p->n = 0;
    }
    return interrupted ? 1 : 0;
}

/* ---- hook for sample generations (the generation command's helper fills this in) ----
 * Called with phase "before" (model loaded, adapter attached, before the first step) and
 * "after" (after the last step, before the adapter is saved). Returns 0 to go on. */
static int print_stream(const char *piece, size_t len, int32_t token, void *ud) {
    (void)token; (void)ud;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return 0;
}

/* The notebook's check: the same prompt generated (greedy, streamed) before and after training,
 * through the training template with an empty response. Returns non-zero only on a hard error. */
static int train_generation_hook(const char *phase, lt_model *model, const lt_tokenizer *tok, const train_opts *o) {
    if (!o->gen_instruction || !*o->gen_instruction || o->gen_max_new_tokens <= 0) return 0;
    size_t len = 0, n = 0;
    lt_status st = lt_template_render(o->tmpl, o->gen_instruction, o->gen_input ? o->gen_input : "", "", NULL, 0, &len);
    if (st != LT_OK && st != LT_ERR_BUFFER_TOO_SMALL) return cli_fail("train", st, "rendering the generation prompt");
    char *text = malloc(len + 1);
    int32_t *ids = malloc(sizeof *ids * (len + 8)), *out = malloc(sizeof *out * ((size_t)o->gen_max_new_tokens + 1));
    int rc = 0;
    if (!text || !ids || !out) { rc = 1; goto done; }
    if ((st = lt_template_render(o->tmpl, o->gen_instruction, o->gen_input ? o->gen_input : "", "", text, len + 1, &len)) != LT_OK ||
        (st = lt_tokenizer_encode(tok, text, len, 0, ids, len + 8, &n)) != LT_OK) {
        rc = cli_fail("train", st, "tokenizing the generation prompt");
        goto done;
    }
    lt_model_info info = {.struct_size = sizeof info};
    if (lt_model_get_info(model, &info) == LT_OK)
        for (size_t i = 0; i < n; i++)
            if (ids[i] >= info.vocab_size) {
                printf("(no generation %s training: the tokenizer gives id %d, beyond the model's %d-token vocabulary)\n",
                       phase, ids[i], info.vocab_size);
                goto done;
            }
    lt_generate_params gp;
    lt_generate_params_init(&gp);
    gp.max_new_tokens = o->gen_max_new_tokens;
    gp.tokenizer = tok;
    gp.on_text = print_stream;
    printf("\n---- generation %s training (greedy, %d new tokens) ----\n%s", phase, o->gen_max_new_tokens, text);
    fflush(stdout);
    size_t n_out = 0;
    st = lt_generate(model, ids, n, &gp, out, (size_t)o->gen_max_new_tokens + 1, &n_out);
    printf("\n---- end of generation %s training ----\n\n", phase);
    if (st < 0) /* a failed demo generation does not stop the training job */
        fprintf(stderr, "loratune train: generation %s training failed (%s): %s\n", phase, lt_status_string(st), lt_last_error());
done:
    free(text); free(ids); free(out);
    return rc;
}

int lt_cmd_train(int argc, char **argv) {
    const char *cmd = "train";
    train_opts o;
    opts_defaults(&o);
    json_t *config = NULL;
    /* --config first, so that flags override it wherever they stand */
    for (int i = 1; i < argc; i++) {
        const char *v = cli_flag(argc, argv, &i, "--config");
        if (!v) continue;
        json_error_t e;
        json_decref(config);
        config = json_load_file(v, 0, &e);
        if (!config) return cli_usage_error(cmd, "%s:%d:%d: %s", v, e.line, e.column, e.text);
        if (!opts_from_json(cmd, v, config, &o)) { json_decref(config); return 2; }
    }
    for (int i = 1; i < argc; i++) {
        if (cli_switch(argv, i, "--help") || cli_switch(argv, i, "-h")) {
            fputs(usage_text, stdout);
            json_decref(config);
            return 0;
        }
        if (cli_flag(argc, argv, &i, "--config")) continue;
        bool matched = false;
        for (size_t k = 0; k < N_OPTS && !matched; k++) {
            char flag[64];
            snprintf(flag, sizeof flag, "--%s", opt_defs[k].name);
            const char *v = cli_flag(argc, argv, &i, flag);
            if (!v) continue;
            matched = true;
            if (!opt_set_text(cmd, &opt_defs[k], v, &o)) { json_decref(config); return 2; }
        }
        if (!matched) { json_decref(config); return cli_usage_error(cmd, "unknown flag '%s'", argv[i]); }
    }
    int rc = 2;
    lt_tokenizer *tok = NULL;
    lt_dataset *ds = NULL;
    lt_model *model = NULL;
    lt_trainer *tr = NULL;
    lt_status st;
#define USAGE(...) do { rc = cli_usage_error(cmd, __VA_ARGS__); goto done; } while (0)
#define FAIL(st_, what) do { rc = cli_fail(cmd, (st_), (what)); goto done; } while (0)
    if (!o.model) USAGE("--model DIR is required");
    if (!o.data) USAGE("--data FILE is required");
    if (!o.output) USAGE("--output DIR is required");
    lt_model_params mp;
    lt_model_params_init(&mp);
    if (!strcmp(o.device, "cpu")) mp.device = LT_DEVICE_CPU;
    else if (!strcmp(o.device, "cuda")) mp.device = LT_DEVICE_CUDA;
    else if (strcmp(o.device, "auto")) USAGE("--device is auto, cpu or cuda, not '%s'", o.device);
    if (!strcmp(o.quant, "none")) mp.quant = LT_QUANT_NONE;
    else if (strcmp(o.quant, "nf4")) USAGE("--quant is nf4 or none, not '%s'", o.quant);
    if (!strcmp(o.dtype, "bf16")) mp.compute_dtype = LT_DTYPE_BF16;
    else if (!strcmp(o.dtype, "fp16") || !strcmp(o.dtype, "f16")) mp.compute_dtype = LT_DTYPE_F16;
    else if (strcmp(o.dtype, "auto")) USAGE("--dtype is auto, bf16 or fp16, not '%s'", o.dtype);
    mp.max_seq_len = o.max_seq_len;
    mp.n_threads = o.threads;
    mp.progress = cli_progress;
    lt_train_params tp;
    lt_train_params_init(&tp);
    if ((st = lt_scheduler_parse(o.scheduler, &tp.scheduler)) != LT_OK) USAGE("%s", lt_last_error());
    if ((st = lt_optimizer_parse(o.optim, &tp.optimizer)) != LT_OK) USAGE("%s", lt_last_error());
    lt_lora_params lp;
    lt_lora_params_init(&lp);
    if ((st = lt_lora_targets_parse(o.targets, &lp.targets)) != LT_OK) USAGE("%s", lt_last_error());
    lp.r = o.lora_r;
    lp.alpha = (float)o.lora_alpha;
    lp.dropout = (float)o.lora_dropout;
    lp.seed = o.seed;
    tp.batch_size = o.batch_size;
    tp.grad_accum = o.grad_accum;
    tp.max_steps = o.max_steps;
    tp.epochs = o.epochs;
    tp.lr = o.lr;
    tp.warmup_steps = o.warmup_steps;
    tp.weight_decay = o.weight_decay;
    tp.max_grad_norm = o.max_grad_norm;
    tp.seed = o.seed;
    tp.fuse_micro_batches = o.fuse_micro_batches;
    tp.log_every = o.log_every;
    tp.save_every = o.save_every;
    tp.output_dir = o.output;
    rc = 1;
    cli_enable_logging(LT_LOG_WARN);

    /* tokenizer, data, model, adapter */
    const char *tok_dir = o.tokenizer ? o.tokenizer : o.model;
    if ((st = lt_tokenizer_load(tok_dir, &tok)) != LT_OK)
        FAIL(st, o.tokenizer ? "loading the tokenizer" : "loading the tokenizer from the model folder (or pass --tokenizer DIR)");
    lt_dataset_params dp;
    lt_dataset_params_init(&dp);
    if (strchr(o.tmpl, '{')) dp.template_text = o.tmpl;
    else dp.template_name = o.tmpl;
    dp.max_seq_len = o.max_seq_len;
    dp.seed = o.seed;
    dp.n_threads = o.threads;
    dp.progress = cli_progress;
    if ((st = lt_dataset_load(o.data, tok, &dp, &ds)) != LT_OK) FAIL(st, "loading the training data");
    lt_dataset_stats dst = {sizeof dst};
    if (lt_dataset_get_stats(ds, &dst) == LT_OK)
        printf("data: %s: %llu records, %llu tokens (%llu with loss), lengths %d..%d (mean %.0f), %llu truncated to %d\n",
               o.data, (unsigned long long)dst.n_records, (unsigned long long)dst.n_tokens,
               (unsigned long long)dst.n_label_tokens, dst.min_len, dst.max_len, dst.mean_len,
               (unsigned long long)dst.n_truncated, o.max_seq_len);
    if ((st = lt_model_load(o.model, &mp, &model)) != LT_OK) FAIL(st, "loading the model");
    if (o.init_adapter) {
        if ((st = lt_model_load_adapter(model, o.init_adapter)) != LT_OK) FAIL(st, "loading --init-adapter");
    } else if ((st = lt_model_add_lora(model, &lp)) != LT_OK) {
        FAIL(st, "adding the LoRA adapter");
    }
    lt_model_info info = {sizeof info};
    if (lt_model_get_info(model, &info) == LT_OK)
        printf("model: %s (%s), %d layers, hidden %d, %.1fM base parameters, %.2fM trainable LoRA parameters, "
               "device %s\n", o.model, info.architecture, info.num_layers, info.hidden_size, info.n_params / 1e6,
               info.n_lora_params / 1e6, info.device == LT_DEVICE_CUDA ? "cuda" : "cpu");

    progress prog = {cli_is_tty(stderr), o.log_every, 0, 0, 0, -1};
    tp.on_step = on_step;
    tp.user_data = &prog;
    if ((st = lt_trainer_new(model, ds, &tp, &tr)) != LT_OK) FAIL(st, "setting up training");
    if (o.resume) {
        if ((st = lt_trainer_load_checkpoint(tr, o.resume)) != LT_OK) FAIL(st, "resuming");
        printf("resumed from %s\n", o.resume);
    }
    if (train_generation_hook("before", model, tok, &o) != 0) goto done;
    printf("training: batch %d x accumulation %d, lr %g (%s, warmup %d), %s, weight decay %g, clip %g, LoRA r %d "
           "alpha %g dropout %g, seed %llu\n", tp.batch_size, tp.grad_accum, tp.lr, o.scheduler, tp.warmup_steps,
           o.optim, tp.weight_decay, tp.max_grad_norm, lp.r, lp.alpha, lp.dropout, (unsigned long long)tp.seed);
    fflush(stdout);

    signal(SIGINT, on_sigint);
    prog.t0 = now_s();
    lt_metrics mt = {sizeof mt};
    while ((st = lt_trainer_step(tr, &mt)) == LT_OK) {
    }
    signal(SIGINT, SIG_DFL);
    if (st < 0) FAIL(st, "training");
    if (st == LT_STOPPED) {
        if (prog.tty) fputc('\n', stderr);
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/checkpoint-%lld", o.output, (long long)mt.step);
        if ((st = lt_trainer_save_checkpoint(tr, dir)) != LT_OK) FAIL(st, "saving the checkpoint after the interrupt");
        printf("interrupted after step %lld; checkpoint saved to %s\n  resume with: loratune train ... --resume %s\n",
               (long long)mt.step, dir, dir);
    }
    if (train_generation_hook("after", model, tok, &o) != 0) goto done;
    if ((st = lt_model_save_adapter(model, o.output, 1)) != LT_OK) FAIL(st, "saving the adapter");
    printf("\ndone: %lld steps, %lld tokens, final loss %.4f\n", (long long)mt.step, (long long)mt.total_tokens,
           mt.loss);
    printf("  adapter:     %s/adapter_config.json, %s/adapter_model.safetensors (PEFT)\n", o.output, o.output);
    printf("  loss log:    %s/log.jsonl   chart: %s/loss.svg\n", o.output, o.output);
    if (tp.save_every > 0) printf("  checkpoints: %s/checkpoint-N (resume with --resume DIR)\n", o.output);
    printf("next:\n");
    printf("  loratune generate --model %s --adapter %s --instruction \"...\"\n", o.model, o.output);
    printf("  loratune export --model %s --adapter %s --format gguf --quant q4_k_m --output %s/model.gguf\n", o.model,
           o.output, o.output);
    printf("  loratune export --model %s --adapter %s --format merged --output %s/merged\n", o.model, o.output,
           o.output);
    rc = st == LT_STOPPED ? 130 : 0;
done:
    lt_trainer_free(tr);
    lt_model_free(model);
    lt_dataset_free(ds);
    lt_tokenizer_free(tok);
    json_decref(config);
    return rc;
#undef USAGE
#undef FAIL
}

/* cmd_train.c - `loratune train`: LoRA fine-tuning of a Hugging Face model folder on an Alpaca /
 * chat / text JSON(L) file, with the notebook's recipe as defaults. Options come from
 * --config FILE.json (the same names, '-' or '_') and flags, flags winning: the table of
 * options.c, whose data options are those of `loratune dataset`. Shows a progress bar on a
 * terminal and a line per logged step otherwise; writes log.jsonl, loss.svg, checkpoints and
 * finally the adapter (PEFT files) into --output; Ctrl-C stops after the current step and saves a
 * checkpoint to resume from. */
#include "cli.h"
#include "options.h"
#include "launch.h"
#include "tok/tok.h"

#include <jansson.h>
#include <math.h>
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(void) {
    fputs("usage: loratune train --model DIR --data FILE --output DIR [flags]\n"
          "\n"
          "Fine-tunes a LoRA adapter on a frozen (4-bit on CUDA) base. Defaults are the notebook's recipe.\n",
          stdout);
    cli_opts_help(stdout, CLI_CMD_TRAIN);
    fputs("\ndata parallel (one process per GPU; --grad-accum is per GPU: the step sees GPUs x grad-accum micro-batches)\n"
          "  --gpus N|LIST        on this host: N GPUs (0..N-1) or those listed (0,2,3); with --device cpu, N CPU\n"
          "                       processes. Sets NCCL_NVLS_ENABLE=0 unless set. Across hosts, start one process per\n"
          "                       GPU with torchrun / srun instead: WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR,\n"
          "                       MASTER_PORT (or SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID) are read.\n"
          "                       LORATUNE_DIST_TIMEOUT=S: a rank that dies or hangs stops the others after S s (30)\n",
          stdout);
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
        if (!isnan(mt->eval_loss)) /* a line of its own above the bar */
            fprintf(stderr, "\r\033[Kstep %lld/%lld eval_loss %.4f eval_acc %.4f (best %.4f at step %lld)\n",
                    (long long)mt->step, (long long)mt->max_steps, mt->eval_loss, mt->eval_accuracy,
                    mt->best_eval_loss, (long long)mt->best_eval_step);
        fprintf(stderr, "\r\033[Kstep %lld/%lld [%s] loss %.4f lr %.2e tok/s %.0f eta %s", (long long)mt->step,
                (long long)mt->max_steps, bar, mt->loss, mt->lr, mt->tokens_per_s, eta);
        if (mt->step == mt->max_steps || mt->early_stop) fputc('\n', stderr);
        fflush(stderr);
    }
    bool log_now = p->log_every > 0 && (mt->step % p->log_every == 0 || mt->step == mt->max_steps);
    if (!p->tty && !isnan(mt->eval_loss) && !log_now)
        printf("step %lld/%lld eval_loss %.4f eval_acc %.4f\n", (long long)mt->step, (long long)mt->max_steps,
               mt->eval_loss, mt->eval_accuracy);
    if (log_now) {
        if (!p->tty) {
            printf("step %lld/%lld loss %.4f lr %.3e grad_norm %.4f tok/s %.0f epoch %.2f", (long long)mt->step,
                   (long long)mt->max_steps, p->loss_sum / p->n, mt->lr, mt->grad_norm, mt->tokens_per_s, mt->epoch);
            if (!isnan(mt->eval_loss)) printf(" eval_loss %.4f eval_acc %.4f", mt->eval_loss, mt->eval_accuracy);
            printf(" eta %s\n", eta);
        }
        fflush(stdout);
        p->loss_sum = 0;
        p->n = 0;
    }
    if (mt->early_stop)
        printf("early stopping after step %lld: no better eval loss than %.4f (step %lld) in the last evaluations\n",
               (long long)mt->step, mt->best_eval_loss, (long long)mt->best_eval_step);
    return cli_stop_signal() ? 1 : 0;
}

/* The end-of-run summary: steps, tokens, time, throughput, losses and the best evaluation. */
static void print_summary(const lt_trainer *tr) {
    lt_train_summary s = {sizeof s};
    if (lt_trainer_get_summary(tr, &s) != LT_OK) return;
    char t[32];
    fmt_duration(t, sizeof t, s.elapsed_s);
    printf("\ndone: %lld of %lld steps%s, %lld tokens in %s (%.0f tokens/s), final loss %.4f, mean loss %.4f\n",
           (long long)s.steps, (long long)s.max_steps, s.early_stopped ? " (early stopping)" : "",
           (long long)s.total_tokens, t, s.tokens_per_s, s.last_loss, s.mean_loss);
    if (s.n_evals > 0)
        printf("  eval:        best loss %.4f at step %lld (%d evaluations)%s\n", s.best_eval_loss,
               (long long)s.best_eval_step, s.n_evals,
               s.best_loaded ? "; the adapter is that step's (--load-best-at-end)" : "");
}

/* ---- hook for sample generations (the generation command's helper fills this in) ----
 * Called with phase "before" (model loaded, adapter attached, before the first step) and
 * "after" (after the last step, before the adapter is saved). Returns 0 to go on. */
static int print_stream(const char *piece, size_t len, int32_t token, void *ud) {
    (void)token; (void)ud;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return cli_stop_signal() ? 1 : 0; /* Ctrl-C / SIGTERM end the sample generation too */
}

/* The notebook's check: the same prompt generated (greedy, streamed) before and after training,
 * through the training template with an empty response, encoded as `loratune generate` encodes
 * prompts (lt_tokenizer_encode_prompt: transformers' tokenizer(prompt), so the BOS that training
 * records begin with for Llama / Gemma / Phi-3 tokenizers; nothing added for Qwen2). Returns
 * non-zero only on a hard error. */
static int train_generation_hook(const char *phase, lt_model *model, const lt_tokenizer *tok, const cli_opts *o) {
    if (!o->gen_instruction || !*o->gen_instruction || o->gen_max_new_tokens <= 0) return 0;
    size_t len = 0, n = 0;
    lt_status st = lt_template_render(o->template_resolved, o->gen_instruction, o->gen_input ? o->gen_input : "", "", NULL, 0, &len);
    if (st != LT_OK && st != LT_ERR_BUFFER_TOO_SMALL) return cli_fail("train", st, "rendering the generation prompt");
    char *text = malloc(len + 1);
    int32_t *ids = NULL, *out = malloc(sizeof *out * ((size_t)o->gen_max_new_tokens + 1));
    int rc = 0;
    if (!text || !out) { rc = 1; goto done; }
    if ((st = lt_template_render(o->template_resolved, o->gen_instruction, o->gen_input ? o->gen_input : "", "", text, len + 1, &len)) != LT_OK ||
        (st = lt_tokenizer_encode_prompt(tok, text, len, &ids, &n)) != LT_OK) {
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

/* --output already holds a run: an adapter, a log or checkpoints */
static bool holds_run(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return false;
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d)))
        found = !strcmp(e->d_name, "adapter_config.json") || !strcmp(e->d_name, "adapter_model.safetensors") ||
                !strcmp(e->d_name, "log.jsonl") || !strncmp(e->d_name, "checkpoint-", 11);
    closedir(d);
    return found;
}

/* --resume names a checkpoint inside --output (resuming a run in its own folder) */
static bool resume_inside(const char *resume, const char *output) {
    if (!resume) return false;
    char *r = realpath(resume, NULL), *o = realpath(output, NULL);
    bool inside = false;
    if (r && o) {
        char *slash = strrchr(r, '/');
        if (slash && slash != r) *slash = 0;
        inside = !strcmp(r, o);
    }
    free(r);
    free(o);
    return inside;
}

/* internal (lib/core/core.h): the outermost missing part of a path, to remove after a failure */
char *lt_fs_first_missing(const char *path);

int lt_cmd_train(int argc, char **argv) {
    const char *cmd = "train";
    { /* --gpus N|LIST: this process launches one rank process per device (launch.c) */
        const char *gpus = cli_take_gpus_flag(&argc, argv);
        if (gpus) return cli_launch(cmd, gpus, argc, argv);
    }
    char *created = NULL;     /* the folder this run created for --output (removed if setup fails) */
    int64_t first_step = -1;  /* the step training started from (-1: it did not start) */
    for (int i = 1; i < argc; i++)
        if (cli_switch(argv, i, "--help") || cli_switch(argv, i, "-h")) { usage(); return 0; }
    cli_opts o;
    cli_opts_init(&o, CLI_CMD_TRAIN);
    {
        int prc = cli_opts_parse(&o, cmd, argc, argv);
        if (prc < 0) prc = cli_opts_finish(&o, cmd);
        if (prc >= 0) { cli_opts_free(&o); return prc; }
    }
    bool overwrite = o.overwrite;
    int rc = 2;
    lt_tokenizer *tok = NULL;
    lt_dataset *ds = NULL, *eval_ds = NULL;
    lt_model *model = NULL;
    lt_trainer *tr = NULL;
    lt_comm *comm = NULL;
    cli_dist dist = {.world = 1};
    lt_status st;
#define USAGE(...) do { rc = cli_usage_error(cmd, __VA_ARGS__); goto done; } while (0)
#define FAIL(st_, what) do { rc = cli_fail(cmd, (st_), (what)); goto done; } while (0)
    if (!o.model) USAGE("--model DIR is required");
    if (!o.data) USAGE("--data FILE is required");
    if (!o.output) USAGE("--output DIR is required");
    struct stat sb;
    if (stat(o.model, &sb) != 0 || !S_ISDIR(sb.st_mode))
        USAGE("--model %s: no such folder (a Hugging Face model folder with config.json and *.safetensors)", o.model);
    if (stat(o.output, &sb) != 0) {
        created = lt_fs_first_missing(o.output);
    } else if (!S_ISDIR(sb.st_mode)) {
        USAGE("--output %s exists and is not a folder", o.output);
    } else if (!overwrite && holds_run(o.output) && !resume_inside(o.resume, o.output)) {
        USAGE("--output %s already holds a training run (an adapter, log.jsonl or checkpoints): pass --overwrite to "
              "train into it anyway (its adapter is replaced when the new run completes), or --resume %s/checkpoint-N "
              "to continue it", o.output, o.output);
    }
    lt_model_params mp = o.mp;
    mp.progress = cli_progress;
    lt_lora_params lp = o.lp;
    lt_train_params tp = o.tp;
    tp.output_dir = o.output;
    { /* a rank of a data-parallel run (--gpus, torchrun, srun): join the others first */
        int drc = cli_dist_from_env(cmd, &dist);
        if (drc >= 0) { rc = drc; goto done; }
    }
    rc = 1;
    cli_enable_logging(LT_LOG_WARN);
    if (dist.active) {
        mp.device_index = dist.device_index;
        tp.world_size = dist.world;
        tp.rank = dist.rank;
        tp.dist_timeout_s = dist.timeout_s;
        if (dist.rank != 0) { /* rank 0 reports and writes; the others only say why they fail (stderr) */
            free(created);
            created = NULL;
            if (!freopen("/dev/null", "w", stdout)) { /* keep stdout as it is */ }
        }
        if ((st = cli_dist_join(&dist, &comm)) != LT_OK) FAIL(st, "joining the data-parallel run");
        tp.comm = comm;
        printf("data parallel: %d ranks (rendezvous %s:%d), this is rank %d; generation before/after training is "
               "skipped\n", dist.world, dist.addr, dist.port, dist.rank);
    }

    /* tokenizer, data, model, adapter */
    const char *tok_dir = o.tokenizer ? o.tokenizer : o.model;
    if ((st = lt_tokenizer_load(tok_dir, &tok)) != LT_OK)
        FAIL(st, o.tokenizer ? "loading the tokenizer" : "loading the tokenizer from the model folder (or pass --tokenizer DIR)");
    lt_dataset_params dp = o.dp;
    dp.progress = cli_progress;
    if ((st = lt_dataset_load(o.data, tok, &dp, &ds)) != LT_OK) FAIL(st, "loading the training data");
    lt_dataset_stats dst = {sizeof dst};
    if (lt_dataset_get_stats(ds, &dst) == LT_OK)
        printf("data: %s: %llu records, %llu tokens (%llu with loss), lengths %d..%d (mean %.0f), %llu truncated to %d, "
               "%llu bad records skipped\n", o.data, (unsigned long long)dst.n_records,
               (unsigned long long)dst.n_tokens, (unsigned long long)dst.n_label_tokens, dst.min_len, dst.max_len,
               dst.mean_len, (unsigned long long)dst.n_truncated, dp.max_seq_len, (unsigned long long)dst.n_skipped);
    if (o.eval_data) { /* read with the same data options; every record is evaluated */
        lt_dataset_params ep = dp;
        ep.eval_fraction = 0;
        if ((st = lt_dataset_load(o.eval_data, tok, &ep, &eval_ds)) != LT_OK) FAIL(st, "loading --eval-data");
        tp.eval_data = eval_ds;
        printf("eval: %s: %zu records%s\n", o.eval_data, lt_dataset_size(eval_ds),
               dst.n_eval ? " (the records --eval-fraction held out are not trained on and not evaluated)" : "");
    } else if (dst.n_eval) {
        printf("eval: %llu records held out of %s (--eval-fraction %g, seed %llu)\n", (unsigned long long)dst.n_eval,
               o.data, dp.eval_fraction, (unsigned long long)dp.seed);
    }
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

    progress prog = {dist.rank == 0 && cli_is_tty(stderr), tp.log_every, 0, 0, 0, -1};
    tp.on_step = on_step;
    tp.user_data = &prog;
    if ((st = lt_trainer_new(model, ds, &tp, &tr)) != LT_OK) FAIL(st, "setting up training");
    if (o.resume) {
        if ((st = lt_trainer_load_checkpoint(tr, o.resume)) != LT_OK) FAIL(st, "resuming");
        printf("resumed from %s\n", o.resume);
    }
    /* from here Ctrl-C / SIGTERM stop after (or abandon) the current step and save a checkpoint */
    cli_stop_install();
    cli_stop_set_trainer(tr);
    if (dist.world <= 1 && train_generation_hook("before", model, tok, &o) != 0) goto done;
    printf("training: batch %d x accumulation %d, lr %g (%s, warmup %d), %s, weight decay %g, clip %g, LoRA r %d "
           "alpha %g dropout %g, seed %llu\n", tp.batch_size, tp.grad_accum, tp.lr, cli_opts_enum_name("scheduler", tp.scheduler),
           tp.warmup_steps, cli_opts_enum_name("optim", tp.optimizer), tp.weight_decay, tp.max_grad_norm, lp.r, lp.alpha, lp.dropout, (unsigned long long)tp.seed);
    fflush(stdout);

    prog.t0 = now_s();
    lt_metrics mt = {sizeof mt};
    first_step = lt_trainer_get_step(tr);
    st = cli_stop_signal() ? LT_STOPPED : LT_OK; /* a signal during the "before" generation */
    while (st == LT_OK && (st = lt_trainer_step(tr, &mt)) == LT_OK) {
    }
    if (st < 0) {
        /* the final adapter stays what it was: a failed run never replaces it */
        rc = cli_fail(cmd, st, "training");
        if (cli_stop_signal()) rc = cli_stop_exit_code();
        goto done;
    }
    if (st == LT_STOPPED) {
        if (prog.tty) fputc('\n', stderr);
        int64_t step = lt_trainer_get_step(tr);
        char dir[4096];
        snprintf(dir, sizeof dir, "%s/checkpoint-%lld", o.output, (long long)step);
        rc = cli_stop_exit_code() ? cli_stop_exit_code() : 130;
        if ((st = lt_trainer_save_checkpoint(tr, dir)) != LT_OK) {
            cli_fail(cmd, st, "saving the checkpoint after the stop");
            goto done;
        }
        printf("stopped by %s at step %lld of %lld; the adapter in %s was left as it was.\n", cli_stop_signal_name(),
               (long long)step, (long long)(mt.max_steps > 0 ? mt.max_steps : tp.max_steps), o.output);
        printf("checkpoint: %s\nresume with:\n  ", dir);
        cli_print_resume_command(stdout, argc, argv, dir);
        fflush(stdout);
        goto done;
    }
    if (dist.world <= 1 && train_generation_hook("after", model, tok, &o) != 0) goto done;
    if (dist.rank == 0 && (st = lt_model_save_adapter(model, o.output, 1)) != LT_OK) FAIL(st, "saving the adapter");
    print_summary(tr);
    printf("  adapter:     %s/adapter_config.json, %s/adapter_model.safetensors (PEFT)\n", o.output, o.output);
    printf("  loss log:    %s/log.jsonl, %s/log.csv   chart: %s/loss.svg\n", o.output, o.output, o.output);
    if (tp.save_every > 0) printf("  checkpoints: %s/checkpoint-N (resume with --resume DIR)\n", o.output);
    printf("next:\n");
    printf("  loratune generate --model ");
    cli_print_quoted(stdout, o.model);
    printf(" --adapter ");
    cli_print_quoted(stdout, o.output);
    printf(" --instruction '...'\n");
    char *gguf = malloc(strlen(o.output) + 32), *merged = malloc(strlen(o.output) + 32);
    if (gguf && merged) {
        sprintf(gguf, "%s/model.gguf", o.output);
        sprintf(merged, "%s/merged", o.output);
        printf("  loratune export --model ");
        cli_print_quoted(stdout, o.model);
        printf(" --adapter ");
        cli_print_quoted(stdout, o.output);
        printf(" --format gguf --quant q4_k_m --output ");
        cli_print_quoted(stdout, gguf);
        printf("\n  loratune export --model ");
        cli_print_quoted(stdout, o.model);
        printf(" --adapter ");
        cli_print_quoted(stdout, o.output);
        printf(" --format merged --output ");
        cli_print_quoted(stdout, merged);
        printf("\n");
    }
    free(gguf);
    free(merged);
    rc = cli_stop_exit_code(); /* a signal after the last step: the run is complete and saved, yet say it came */
done:
    /* setup failed (nothing trained): the folder this run created goes again */
    if (rc != 0 && first_step < 0 && !cli_stop_signal() && created) cli_remove_created(created);
    free(created);
    lt_trainer_free(tr);
    lt_comm_free(comm);
    lt_model_free(model);
    lt_dataset_free(ds);
    lt_dataset_free(eval_ds);
    lt_tokenizer_free(tok);
    cli_opts_free(&o);
    return rc;
#undef USAGE
#undef FAIL
}

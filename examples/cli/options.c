/* options.c - the option table of `loratune dataset` and `loratune train` (see options.h):
 * parsing flags and --config JSON into the lt_*_params structs, --help lines with the library's
 * defaults, --list-options and --print-options for the test that keeps the names in one list. */
#include "options.h"
#include "cli.h"
#include "data/template.h"

#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef enum { K_STR, K_INT, K_DBL, K_FLT, K_U64, K_BOOL, K_ENUM } opt_kind;
typedef enum { W_CLI, W_MODEL, W_LORA, W_DATA, W_TRAIN } opt_where;
typedef struct enum_val { const char *name; int32_t v; } enum_val;

typedef struct opt_def {
    const char *name;          /* snake_case; NULL: a section title (help) */
    int cmds;                  /* CLI_CMD_* mask */
    opt_kind kind;
    opt_where where;
    size_t off;                /* into the struct `where` names */
    const enum_val *values;    /* K_ENUM: the names shown and accepted (first per value = canonical) */
    lt_status (*parse)(const char *, int32_t *); /* K_ENUM: the library's parser, when it has one */
    const char *arg;           /* the value's placeholder in --help */
    const char *help;
} opt_def;

static const enum_val v_format[] = {{"auto", LT_DATA_AUTO}, {"alpaca", LT_DATA_ALPACA}, {"chat", LT_DATA_CHAT},
                                    {"text", LT_DATA_TEXT}, {"tokens", LT_DATA_TOKENS}, {NULL, 0}};
static const enum_val v_loss_on[] = {{"all", LT_LOSS_ALL}, {"response", LT_LOSS_RESPONSE}, {NULL, 0}};
static const enum_val v_device[] = {{"auto", LT_DEVICE_AUTO}, {"cpu", LT_DEVICE_CPU}, {"cuda", LT_DEVICE_CUDA},
                                    {NULL, 0}};
static const enum_val v_quant[] = {{"nf4", LT_QUANT_NF4}, {"none", LT_QUANT_NONE}, {NULL, 0}};
static const enum_val v_dtype[] = {{"auto", LT_DTYPE_AUTO}, {"f32", LT_DTYPE_F32}, {"fp16", LT_DTYPE_F16},
                                   {"bf16", LT_DTYPE_BF16}, {"f16", LT_DTYPE_F16}, {"fp32", LT_DTYPE_F32},
                                   {NULL, 0}};
static const enum_val v_sched[] = {{"linear", LT_SCHED_LINEAR}, {"cosine", LT_SCHED_COSINE},
                                   {"constant", LT_SCHED_CONSTANT}, {NULL, 0}};
static const enum_val v_optim[] = {{"adamw_8bit", LT_OPTIM_ADAMW_8BIT}, {"adamw_torch", LT_OPTIM_ADAMW}, {NULL, 0}};

#define DS CLI_CMD_DATASET
#define TR CLI_CMD_TRAIN
#define BOTH (CLI_CMD_DATASET | CLI_CMD_TRAIN)
#define C_(f) W_CLI, offsetof(cli_opts, f)
#define M_(f) W_MODEL, offsetof(lt_model_params, f)
#define L_(f) W_LORA, offsetof(lt_lora_params, f)
#define D_(f) W_DATA, offsetof(lt_dataset_params, f)
#define T_(f) W_TRAIN, offsetof(lt_train_params, f)
#define SECTION(cmds, title) {NULL, cmds, K_STR, W_CLI, 0, NULL, NULL, NULL, title}

static const opt_def opts[] = {
    SECTION(TR, "model and output"),
    {"model", TR, K_STR, C_(model), NULL, NULL, "DIR", "Hugging Face model folder (config.json + *.safetensors)"},
    {"output", TR, K_STR, C_(output), NULL, NULL, "DIR", "where log.jsonl, log.csv, loss.svg, checkpoints and the adapter go"},
    {"config", TR, K_STR, C_(config), NULL, NULL, "FILE.json", "options as JSON ({\"lr\": 1e-4, \"batch_size\": 4, ...}, the names "
     "below with '_' or '-'); flags override it"},
    {"overwrite", TR, K_BOOL, C_(overwrite), NULL, NULL, NULL, "train into an --output that already holds a run (its adapter "
     "is replaced only when the new run completes; --resume implies it for its own folder)"},
    {"resume", TR, K_STR, C_(resume), NULL, NULL, "DIR", "continue from a checkpoint folder (same model, data and LoRA settings); "
     "Ctrl-C / SIGTERM save one and print the command that resumes"},
    {"init_adapter", TR, K_STR, C_(init_adapter), NULL, NULL, "DIR", "start from an existing PEFT adapter instead of a fresh one"},
    {"device", TR, K_ENUM, M_(device), v_device, NULL, "NAME", "auto, cpu or cuda"},
    {"quant", TR, K_ENUM, M_(quant), v_quant, NULL, "NAME", "base weights: nf4 or none (16-bit / f32)"},
    {"dtype", TR, K_ENUM, M_(compute_dtype), v_dtype, NULL, "NAME", "compute type: auto (bf16 where the GPU has it, else fp16 "
     "with loss scaling; f32 on the CPU), bf16, fp16 or f32"},

    SECTION(BOTH, "data (the same options for `loratune dataset` and `loratune train`)"),
    {"data", BOTH, K_STR, C_(data), NULL, NULL, "FILE", "records: JSON array or JSONL (Alpaca, chat messages, text, input_ids)"},
    {"tokenizer", BOTH, K_STR, C_(tokenizer), NULL, NULL, "DIR", "folder with tokenizer.json (train: default the model folder)"},
    {"template", BOTH, K_STR, C_(tmpl), NULL, NULL, "T", "prompt template: alpaca-zh, alpaca, chatml, a text with "
     "{instruction} {input} {output} (then EOS; Python str.format rules), or a file holding one"},
    {"format", BOTH, K_ENUM, D_(format), v_format, NULL, "F", "record format: auto (by the first record), alpaca, chat, text, tokens"},
    {"instruction_field", BOTH, K_STR, D_(instruction_field), NULL, NULL, "KEY", "the instruction's field name (map other data sets' names)"},
    {"input_field", BOTH, K_STR, D_(input_field), NULL, NULL, "KEY", "the input's field name"},
    {"output_field", BOTH, K_STR, D_(output_field), NULL, NULL, "KEY", "the response's field name"},
    {"text_field", BOTH, K_STR, D_(text_field), NULL, NULL, "KEY", "the plain-text field name"},
    {"max_seq_len", BOTH, K_INT, D_(max_seq_len), NULL, NULL, "N", "truncate longer records to N tokens (counted)"},
    {"loss_on", BOTH, K_ENUM, D_(loss_on), v_loss_on, NULL, "WHAT", "loss on all tokens or the response only "
     "(--response-only)"},
    {"add_eos", BOTH, K_BOOL, D_(add_eos), NULL, NULL, NULL, "append the tokenizer's EOS to each record (--no-eos: don't)"},
    {"skip_bad_records", BOTH, K_BOOL, D_(skip_bad_records), NULL, NULL, NULL, "skip bad records (warned, counted) instead "
     "of stopping at the first (--skip-bad)"},
    {"eval_fraction", BOTH, K_DBL, D_(eval_fraction), NULL, NULL, "X", "hold out this fraction of the records for evaluation "
     "(chosen by --seed)"},
    {"seed", BOTH, K_U64, D_(seed), NULL, NULL, "N", "eval split, data order, LoRA init and dropout"},
    {"threads", BOTH, K_INT, D_(n_threads), NULL, NULL, "N", "CPU threads (tokenization; the CPU backend); 0 = all cores"},
    {"show", DS, K_INT, C_(show), NULL, NULL, "N", "examples to print"},
    {"color", DS, K_BOOL, C_(color), NULL, NULL, NULL, "dim the text that carries no loss (default: when stdout is a terminal)"},

    SECTION(TR, "training"),
    {"batch_size", TR, K_INT, T_(batch_size), NULL, NULL, "N", "records per micro-batch"},
    {"grad_accum", TR, K_INT, T_(grad_accum), NULL, NULL, "N", "micro-batches per optimizer step"},
    {"max_steps", TR, K_INT, T_(max_steps), NULL, NULL, "N", "optimizer steps; 0 = train --epochs"},
    {"epochs", TR, K_DBL, T_(epochs), NULL, NULL, "X", "epochs when --max-steps is 0"},
    {"lr", TR, K_DBL, T_(lr), NULL, NULL, "X", "peak learning rate"},
    {"warmup_steps", TR, K_INT, T_(warmup_steps), NULL, NULL, "N", "linear warmup steps; < 0: --warmup-ratio"},
    {"warmup_ratio", TR, K_DBL, T_(warmup_ratio), NULL, NULL, "X", "warmup as a share of the steps (when --warmup-steps < 0)"},
    {"scheduler", TR, K_ENUM, T_(scheduler), v_sched, lt_scheduler_parse, "NAME", "cosine, linear or constant"},
    {"optim", TR, K_ENUM, T_(optimizer), v_optim, lt_optimizer_parse, "NAME", "adamw_8bit (bitsandbytes) or adamw_torch"},
    {"weight_decay", TR, K_DBL, T_(weight_decay), NULL, NULL, "X", "AdamW weight decay"},
    {"adam_beta1", TR, K_DBL, T_(adam_beta1), NULL, NULL, "X", "AdamW beta1"},
    {"adam_beta2", TR, K_DBL, T_(adam_beta2), NULL, NULL, "X", "AdamW beta2"},
    {"adam_eps", TR, K_DBL, T_(adam_eps), NULL, NULL, "X", "AdamW epsilon"},
    {"max_grad_norm", TR, K_DBL, T_(max_grad_norm), NULL, NULL, "X", "global-norm clipping; 0 = off"},
    {"gradient_checkpointing", TR, K_BOOL, T_(gradient_checkpointing), NULL, NULL, NULL, "keep one tensor per layer and "
     "recompute the rest in backward"},
    {"offload_checkpoints", TR, K_BOOL, T_(offload_checkpoints), NULL, NULL, NULL, "keep those tensors in host memory "
     "(copied out during the forward, back one layer ahead of the backward): less GPU memory, long contexts"},
    {"deterministic", TR, K_BOOL, T_(deterministic), NULL, NULL, NULL, "bitwise repeatable kernels"},
    {"fuse_micro_batches", TR, K_BOOL, T_(fuse_micro_batches), NULL, NULL, NULL, "run a window's short micro-batches as one "
     "pass while they fit batch-size x the longest record, or 4096 tokens (same records and loss)"},
    {"bucket_passes", TR, K_BOOL, T_(bucket_passes), NULL, NULL, NULL, "pad each pass to one of a few token counts with "
     "dummy sequences that carry no loss, so that CUDA graphs replay (same records, losses and dropout; off by default)"},
    {"lora_r", TR, K_INT, L_(r), NULL, NULL, "N", "LoRA rank"},
    {"lora_alpha", TR, K_FLT, L_(alpha), NULL, NULL, "X", "LoRA alpha"},
    {"lora_dropout", TR, K_FLT, L_(dropout), NULL, NULL, "X", "dropout on the LoRA branch's input"},
    {"use_rslora", TR, K_BOOL, L_(use_rslora), NULL, NULL, NULL, "scale by alpha/sqrt(r) instead of alpha/r"},
    {"targets", TR, K_STR, C_(targets), NULL, NULL, "LIST", "q,k,v,o,gate,up,down or all"},

    SECTION(TR, "logging, evaluation, checkpoints"),
    {"log_every", TR, K_INT, T_(log_every), NULL, NULL, "N", "steps between log lines / log.jsonl and log.csv rows"},
    {"save_every", TR, K_INT, T_(save_every), NULL, NULL, "N", "steps between checkpoints in --output; 0 = none"},
    {"save_total_limit", TR, K_INT, T_(save_total_limit), NULL, NULL, "N", "keep only the newest N checkpoints (with "
     "--load-best-at-end the best one among them); 0 = all"},
    {"eval_data", TR, K_STR, C_(eval_data), NULL, NULL, "FILE", "evaluation records (read with the data options); "
     "or use --eval-fraction"},
    {"eval_every", TR, K_INT, T_(eval_every), NULL, NULL, "N", "steps between evaluations; 0 = at every log step (and the "
     "last); < 0 = never"},
    {"eval_batch_size", TR, K_INT, T_(eval_batch_size), NULL, NULL, "N", "records per evaluation pass; 0 = as many as fit one training pass's tokens"},
    {"early_stopping_patience", TR, K_INT, T_(early_stopping_patience), NULL, NULL, "N", "stop after N evaluations without "
     "a better eval loss; 0 = off"},
    {"early_stopping_threshold", TR, K_DBL, T_(early_stopping_threshold), NULL, NULL, "X", "what counts as better: "
     "lower than the best by more than X"},
    {"load_best_at_end", TR, K_BOOL, T_(load_best_at_end), NULL, NULL, NULL, "the adapter written is the best evaluation's, "
     "not the last step's"},

    SECTION(TR, "generation before and after training (the notebook's check)"),
    {"gen_instruction", TR, K_STR, C_(gen_instruction), NULL, NULL, "T", "the instruction generated for, through the template "
     "(\"\" = no generation)"},
    {"gen_input", TR, K_STR, C_(gen_input), NULL, NULL, "T", "its input"},
    {"gen_max_new_tokens", TR, K_INT, C_(gen_max_new_tokens), NULL, NULL, "N", "tokens to generate"},
};
#define N_OPTS (sizeof opts / sizeof opts[0])

/* flag shorthands: {flag, option, value} */
static const struct { const char *flag, *name, *value; } aliases[] = {
    {"--skip-bad", "skip_bad_records", "1"},
    {"--response-only", "loss_on", "response"},
    {"--no-eos", "add_eos", "0"},
};

static void *field(cli_opts *o, const opt_def *d) {
    switch (d->where) {
    case W_CLI: return (char *)o + d->off;
    case W_MODEL: return (char *)&o->mp + d->off;
    case W_LORA: return (char *)&o->lp + d->off;
    case W_DATA: return (char *)&o->dp + d->off;
    case W_TRAIN: return (char *)&o->tp + d->off;
    }
    return NULL;
}

static const char *kind_name(const opt_def *d) {
    static const char *names[] = {"string", "int", "number", "number", "u64", "bool", "enum"};
    return names[d->kind];
}

static const opt_def *find(int cmd, const char *name) {
    for (size_t i = 0; i < N_OPTS; i++)
        if (opts[i].name && (opts[i].cmds & cmd) && !strcmp(opts[i].name, name)) return &opts[i];
    return NULL;
}

static void flag_of(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "--%s", name);
    for (char *c = buf + 2; *c; c++)
        if (*c == '_') *c = '-';
}

void cli_opts_init(cli_opts *o, int cmd) {
    memset(o, 0, sizeof *o);
    o->cmd = cmd;
    lt_model_params_init(&o->mp);
    lt_lora_params_init(&o->lp);
    lt_dataset_params_init(&o->dp);
    lt_train_params_init(&o->tp);
    o->show = 3;
    o->color = cli_is_tty(stdout);
    o->gen_instruction = "只剩一个心脏了还能活吗？";
    o->gen_input = "";
    o->gen_max_new_tokens = 128;
}

void cli_opts_free(cli_opts *o) {
    free(o->template_file_text);
    json_decref((json_t *)o->config_json);
    o->template_file_text = NULL;
    o->config_json = NULL;
}

const char *cli_opts_enum_name(const char *option, int32_t value) {
    const opt_def *d = find(CLI_CMD_DATASET | CLI_CMD_TRAIN, option);
    if (!d || d->kind != K_ENUM) return "?";
    for (const enum_val *e = d->values; e->name; e++)
        if (e->v == value) return e->name;
    return "?";
}

static int parse_bool(const char *v, int32_t *out) {
    if (!strcmp(v, "1") || !strcmp(v, "true")) { *out = 1; return 1; }
    if (!strcmp(v, "0") || !strcmp(v, "false")) { *out = 0; return 1; }
    return 0;
}

static int parse_enum(const char *cmd, const char *flag, const opt_def *d, const char *v, int32_t *out) {
    for (const enum_val *e = d->values; e->name; e++)
        if (!strcmp(e->name, v)) { *out = e->v; return 1; }
    if (d->parse && d->parse(v, out) == LT_OK) return 1;
    char names[256] = "";
    for (const enum_val *e = d->values; e->name; e++) {
        int dup = 0;
        for (const enum_val *f = d->values; f < e; f++) dup |= f->v == e->v;
        if (dup) continue;
        strncat(names, names[0] ? ", " : "", sizeof names - strlen(names) - 1);
        strncat(names, e->name, sizeof names - strlen(names) - 1);
    }
    cli_usage_error(cmd, "%s: unknown value '%s' (use %s)", flag, v, names);
    return 0;
}

/* Sets option d from text (a flag's value). */
static int set_text(cli_opts *o, const char *cmd, const opt_def *d, const char *v) {
    char flag[64];
    flag_of(flag, sizeof flag, d->name);
    void *dst = field(o, d);
    double x;
    switch (d->kind) {
    case K_STR: *(const char **)dst = v; return 1;
    case K_INT: return cli_int(cmd, flag, v, (int32_t *)dst);
    case K_DBL: return cli_double(cmd, flag, v, (double *)dst);
    case K_FLT:
        if (!cli_double(cmd, flag, v, &x)) return 0;
        *(float *)dst = (float)x;
        return 1;
    case K_U64: return cli_u64(cmd, flag, v, (uint64_t *)dst);
    case K_BOOL:
        if (parse_bool(v, (int32_t *)dst)) return 1;
        cli_usage_error(cmd, "%s expects 0, 1, true or false, got '%s'", flag, v);
        return 0;
    case K_ENUM: return parse_enum(cmd, flag, d, v, (int32_t *)dst);
    }
    return 0;
}

/* Sets option d from a --config JSON value. */
static int set_json(cli_opts *o, const char *cmd, const char *path, const char *key, const opt_def *d, json_t *v) {
    void *dst = field(o, d);
    int ok = 1;
    switch (d->kind) {
    case K_STR: ok = json_is_string(v); if (ok) *(const char **)dst = json_string_value(v); break;
    case K_INT:
        ok = json_is_integer(v) && json_integer_value(v) >= INT32_MIN && json_integer_value(v) <= INT32_MAX;
        if (ok) *(int32_t *)dst = (int32_t)json_integer_value(v);
        break;
    case K_DBL: ok = json_is_number(v); if (ok) *(double *)dst = json_number_value(v); break;
    case K_FLT: ok = json_is_number(v); if (ok) *(float *)dst = (float)json_number_value(v); break;
    case K_U64:
        ok = json_is_integer(v) && json_integer_value(v) >= 0;
        if (ok) *(uint64_t *)dst = (uint64_t)json_integer_value(v);
        break;
    case K_BOOL:
        ok = json_is_boolean(v) || (json_is_integer(v) && (json_integer_value(v) == 0 || json_integer_value(v) == 1));
        if (ok) *(int32_t *)dst = json_is_boolean(v) ? json_is_true(v) : (int32_t)json_integer_value(v);
        break;
    case K_ENUM: {
        if (!json_is_string(v)) { ok = 0; break; }
        char what[160];
        snprintf(what, sizeof what, "%s: \"%s\"", path, key);
        return parse_enum(cmd, what, d, json_string_value(v), (int32_t *)dst);
    }
    }
    if (!ok) {
        static const char *want[] = {"a string", "a 32-bit integer", "a number", "a number", "a non-negative integer",
                                     "true, false, 0 or 1", "a string"};
        cli_usage_error(cmd, "%s: \"%s\" must be %s", path, key, want[d->kind]);
    }
    return ok;
}

static int load_config(cli_opts *o, const char *cmd, const char *path) {
    json_error_t e;
    json_t *root = json_load_file(path, 0, &e);
    if (!root) return cli_usage_error(cmd, "--config %s:%d:%d: %s", path, e.line, e.column, e.text);
    json_decref((json_t *)o->config_json);
    o->config_json = root;
    if (!json_is_object(root)) return cli_usage_error(cmd, "%s: the config must be a JSON object of option names", path);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        char name[64];
        snprintf(name, sizeof name, "%s", key);
        for (char *c = name; *c; c++)
            if (*c == '-') *c = '_';
        const opt_def *d = find(o->cmd, name);
        if (!d || !strcmp(name, "config"))
            return cli_usage_error(cmd, "%s: unknown option \"%s\" (the options are those of 'loratune %s --help', "
                                   "with '_' or '-')", path, key, cmd);
        if (!set_json(o, cmd, path, key, d, v)) return 2;
    }
    return -1;
}

static void print_list(int cmd) {
    for (size_t i = 0; i < N_OPTS; i++)
        if (opts[i].name && (opts[i].cmds & cmd)) printf("%s %s\n", opts[i].name, kind_name(&opts[i]));
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (find(cmd, aliases[i].name)) printf("alias %s %s=%s\n", aliases[i].flag, aliases[i].name, aliases[i].value);
}

int cli_opts_parse(cli_opts *o, const char *cmd, int argc, char **argv) {
    /* --config first, so that flags override it wherever they stand */
    if (o->cmd & CLI_CMD_TRAIN)
        for (int i = 1; i < argc; i++) {
            const char *v = cli_flag(argc, argv, &i, "--config");
            if (!v) continue;
            o->config = v;
            int rc = load_config(o, cmd, v);
            if (rc >= 0) return rc;
        }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--list-options")) { print_list(o->cmd); return 0; }
        if (!strcmp(a, "--print-options")) { o->print_only = 1; continue; }
        if ((o->cmd & CLI_CMD_TRAIN) && cli_flag(argc, argv, &i, "--config")) continue;
        int done = 0;
        for (size_t k = 0; k < sizeof aliases / sizeof aliases[0] && !done; k++)
            if (!strcmp(a, aliases[k].flag) && find(o->cmd, aliases[k].name)) {
                if (!set_text(o, cmd, find(o->cmd, aliases[k].name), aliases[k].value)) return 2;
                done = 1;
            }
        for (size_t k = 0; k < N_OPTS && !done; k++) {
            const opt_def *d = &opts[k];
            if (!d->name || !(d->cmds & o->cmd) || !strcmp(d->name, "config")) continue;
            char flag[64];
            flag_of(flag, sizeof flag, d->name);
            if (d->kind == K_BOOL) {
                size_t n = strlen(flag);
                if (!strcmp(a, flag)) { /* --name, or --name 0|1|true|false */
                    int32_t b;
                    if (i + 1 < argc && parse_bool(argv[i + 1], &b)) i++;
                    else b = 1;
                    *(int32_t *)field(o, d) = b;
                    done = 1;
                } else if (!strncmp(a, flag, n) && a[n] == '=') {
                    if (!set_text(o, cmd, d, a + n + 1)) return 2;
                    done = 1;
                } else if (!strncmp(a, "--no-", 5) && !strcmp(a + 5, flag + 2)) {
                    *(int32_t *)field(o, d) = 0;
                    done = 1;
                }
                continue;
            }
            const char *v = cli_flag(argc, argv, &i, flag);
            if (!v) continue;
            if (!set_text(o, cmd, d, v)) return 2;
            done = 1;
        }
        if (!done) return cli_usage_error(cmd, "unknown flag '%s'", a);
    }
    return -1;
}

int cli_opts_finish(cli_opts *o, const char *cmd) {
    const char *t = o->tmpl;
    if (t && *t) {
        struct stat sb;
        if (lt_template_builtin(t)) {
            o->dp.template_name = t;
        } else if (strchr(t, '{')) {
            o->dp.template_text = t;
        } else if (stat(t, &sb) == 0) {
            lt_status st = lt_template_read_file(t, &o->template_file_text);
            if (st != LT_OK) return cli_fail(cmd, st, "reading the --template file");
            o->dp.template_text = o->template_file_text;
        } else {
            return cli_usage_error(cmd, "--template: '%s' is neither a built-in name (alpaca-zh, alpaca, chatml), a "
                                   "template text with {instruction} {input} {output}, nor a file", t);
        }
    }
    o->template_resolved = o->dp.template_text ? o->dp.template_text : o->dp.template_name;
    if (o->targets && lt_lora_targets_parse(o->targets, &o->lp.targets) != LT_OK)
        return cli_usage_error(cmd, "--targets: %s", lt_last_error());
    /* one value, several structs */
    o->mp.max_seq_len = o->dp.max_seq_len;
    o->mp.n_threads = o->dp.n_threads;
    o->tp.seed = o->dp.seed;
    o->lp.seed = o->dp.seed;
    if (o->print_only) {
        cli_opts_print_json(stdout, o);
        return 0;
    }
    return -1;
}

/* the default of d as text, from a freshly initialised cli_opts ("" when none worth showing) */
static void default_text(char *buf, size_t cap, const cli_opts *def, const opt_def *d) {
    const void *p = field((cli_opts *)def, d);
    buf[0] = 0;
    switch (d->kind) {
    case K_STR: {
        const char *s = *(const char *const *)p;
        if (d->where == W_CLI && d->off == offsetof(cli_opts, tmpl)) s = def->dp.template_name;
        if (d->where == W_CLI && d->off == offsetof(cli_opts, targets)) s = "all";
        if (s) snprintf(buf, cap, "%s", *s ? s : "\"\"");
        break;
    }
    case K_INT: snprintf(buf, cap, "%d", *(const int32_t *)p); break;
    case K_DBL: snprintf(buf, cap, "%g", *(const double *)p); break;
    case K_FLT: snprintf(buf, cap, "%g", (double)*(const float *)p); break;
    case K_U64: snprintf(buf, cap, "%llu", (unsigned long long)*(const uint64_t *)p); break;
    case K_BOOL: snprintf(buf, cap, "%s", *(const int32_t *)p ? "on" : "off"); break;
    case K_ENUM:
        for (const enum_val *e = d->values; e->name; e++)
            if (e->v == *(const int32_t *)p) { snprintf(buf, cap, "%s", e->name); break; }
        break;
    }
}

void cli_opts_help(FILE *f, int cmd) {
    cli_opts def;
    cli_opts_init(&def, cmd);
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_def *d = &opts[i];
        if (!(d->cmds & cmd)) continue;
        if (!d->name) { fprintf(f, "\n%s:\n", d->help); continue; }
        char flag[64], lhs[160], dflt[96];
        flag_of(flag, sizeof flag, d->name);
        if (d->kind == K_BOOL) snprintf(lhs, sizeof lhs, "%s, --no-%s", flag, flag + 2);
        else snprintf(lhs, sizeof lhs, "%s %s", flag, d->arg ? d->arg : "V");
        default_text(dflt, sizeof dflt, &def, d);
        if ((d->where == W_CLI && d->off == offsetof(cli_opts, color)) ||
            (d->where == W_CLI && d->off == offsetof(cli_opts, tokenizer) && cmd == CLI_CMD_TRAIN))
            dflt[0] = 0; /* depends on the terminal / the model folder */
        if (strlen(lhs) > 28) fprintf(f, "  %s\n  %-28s ", lhs, "");
        else fprintf(f, "  %-28s ", lhs);
        char text[640];
        snprintf(text, sizeof text, "%s%s%s%s", d->help, dflt[0] ? " (default " : "", dflt, dflt[0] ? ")" : "");
        /* words wrapped at column 100, continued under the help column */
        const char *w = text;
        int col = 31;
        while (*w) {
            size_t n = strcspn(w, " ");
            if (col > 31 && col + 1 + (int)n > 100) { fprintf(f, "\n%31s", ""); col = 31; }
            else if (col > 31) { fputc(' ', f); col++; }
            fwrite(w, 1, n, f);
            col += (int)n;
            w += n;
            while (*w == ' ') w++;
        }
        fputc('\n', f);
    }
    cli_opts_free(&def);
}

static void json_str(FILE *f, const char *s) {
    json_t *j = s ? json_string(s) : NULL;
    char *e = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    fputs(e ? e : "null", f);
    free(e);
    json_decref(j);
}

void cli_opts_print_json(FILE *f, const cli_opts *o) {
    fputs("{", f);
    int first = 1;
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_def *d = &opts[i];
        if (!d->name || !(d->cmds & o->cmd)) continue;
        fprintf(f, "%s\n  \"%s\": ", first ? "" : ",", d->name);
        first = 0;
        const void *p = field((cli_opts *)o, d);
        switch (d->kind) {
        case K_STR: json_str(f, *(const char *const *)p); break;
        case K_INT: fprintf(f, "%d", *(const int32_t *)p); break;
        case K_DBL: fprintf(f, "%.17g", *(const double *)p); break;
        case K_FLT: fprintf(f, "%.9g", (double)*(const float *)p); break;
        case K_U64: fprintf(f, "%llu", (unsigned long long)*(const uint64_t *)p); break;
        case K_BOOL: fputs(*(const int32_t *)p ? "true" : "false", f); break;
        case K_ENUM: {
            const char *name = "?";
            for (const enum_val *e = d->values; e->name; e++)
                if (e->v == *(const int32_t *)p) { name = e->name; break; }
            json_str(f, name);
            break;
        }
        }
    }
    fputs("\n}\n", f);
}

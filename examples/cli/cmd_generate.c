/* cmd_generate.c - `loratune generate`: streams a completion to the terminal, with or without a
 * LoRA adapter, for a raw prompt or an instruction rendered through a prompt template. */
#include "cli.h"
#include "infer/infer.h"

/* internal (lib/core/core.h) */
lt_status lt_read_file(const char *path, char **data, size_t *len);
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char *usage_text =
    "usage: loratune generate --model DIR [--adapter DIR] (--prompt TEXT | --instruction T [--input T])\n"
    "         [--template alpaca-zh|alpaca|chatml|none|FILE] [--max-new-tokens 128]\n"
    "         [--greedy | --temperature T --top-p P --top-k K --min-p P] [--repetition-penalty R]\n"
    "         [--seed S] [--stop TEXT]... [--stop-id N]... [--device auto|cpu|cuda] [--quant nf4|none]\n"
    "         [--tokenizer DIR] [--ids]\n"
    "  --prompt is used as is; --instruction/--input go through the template (default alpaca-zh,\n"
    "  the notebook's). --ids prints the generated ids as JSON instead of streaming text.\n"
    "  Stops at the tokenizer's / generation_config.json's EOS ids unless --stop-id is given.\n";

static int print_piece(const char *piece, size_t len, int32_t token, void *ud) {
    (void)token; (void)ud;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return 0;
}

int lt_cmd_generate(int argc, char **argv) {
    const char *cmd = "generate", *model_dir = NULL, *adapter = NULL, *prompt = NULL, *instr = NULL, *input = "";
    const char *tmpl = "alpaca-zh", *device = "auto", *quant = "nf4", *tok_dir = NULL;
    lt_generate_params gp;
    lt_generate_params_init(&gp);
    bool ids_only = false, sample_flag = false;
    const char *stop_strings[16];
    int32_t stop_ids[16];
    int n_stop_strings = 0, n_stop_ids = 0;
    for (int i = 1; i < argc; i++) {
        const char *v;
        double d;
        if (cli_switch(argv, i, "--help") || cli_switch(argv, i, "-h")) { fputs(usage_text, stdout); return 0; }
        else if ((v = cli_flag(argc, argv, &i, "--model"))) model_dir = v;
        else if ((v = cli_flag(argc, argv, &i, "--adapter"))) adapter = v;
        else if ((v = cli_flag(argc, argv, &i, "--prompt"))) prompt = v;
        else if ((v = cli_flag(argc, argv, &i, "--instruction"))) instr = v;
        else if ((v = cli_flag(argc, argv, &i, "--input"))) input = v;
        else if ((v = cli_flag(argc, argv, &i, "--template"))) tmpl = v;
        else if ((v = cli_flag(argc, argv, &i, "--device"))) device = v;
        else if ((v = cli_flag(argc, argv, &i, "--quant"))) quant = v;
        else if ((v = cli_flag(argc, argv, &i, "--tokenizer"))) tok_dir = v;
        else if ((v = cli_flag(argc, argv, &i, "--max-new-tokens"))) { if (!cli_int(cmd, "--max-new-tokens", v, &gp.max_new_tokens)) return 2; }
        else if ((v = cli_flag(argc, argv, &i, "--temperature"))) { if (!cli_double(cmd, "--temperature", v, &d)) return 2; gp.temperature = (float)d; sample_flag = true; }
        else if ((v = cli_flag(argc, argv, &i, "--top-p"))) { if (!cli_double(cmd, "--top-p", v, &d)) return 2; gp.top_p = (float)d; sample_flag = true; }
        else if ((v = cli_flag(argc, argv, &i, "--min-p"))) { if (!cli_double(cmd, "--min-p", v, &d)) return 2; gp.min_p = (float)d; sample_flag = true; }
        else if ((v = cli_flag(argc, argv, &i, "--top-k"))) { if (!cli_int(cmd, "--top-k", v, &gp.top_k)) return 2; sample_flag = true; }
        else if ((v = cli_flag(argc, argv, &i, "--repetition-penalty"))) { if (!cli_double(cmd, "--repetition-penalty", v, &d)) return 2; gp.repetition_penalty = (float)d; }
        else if ((v = cli_flag(argc, argv, &i, "--seed"))) { if (!cli_u64(cmd, "--seed", v, &gp.seed)) return 2; }
        else if ((v = cli_flag(argc, argv, &i, "--stop"))) {
            if (n_stop_strings >= 16) return cli_usage_error(cmd, "at most 16 --stop strings");
            stop_strings[n_stop_strings++] = v;
        } else if ((v = cli_flag(argc, argv, &i, "--stop-id"))) {
            if (n_stop_ids >= 16) return cli_usage_error(cmd, "at most 16 --stop-id values");
            if (!cli_int(cmd, "--stop-id", v, &stop_ids[n_stop_ids++])) return 2;
        }
        else if (cli_switch(argv, i, "--greedy")) gp.do_sample = 0;
        else if (cli_switch(argv, i, "--ids")) ids_only = true;
        else return cli_usage_error(cmd, "unknown flag '%s'", argv[i]);
    }
    if (!model_dir) return cli_usage_error(cmd, "--model DIR is required");
    struct stat sb;
    if (stat(model_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return cli_usage_error(cmd, "--model %s: no such folder (a Hugging Face model folder)", model_dir);
    if (!prompt && !instr) return cli_usage_error(cmd, "give --prompt TEXT or --instruction TEXT");
    if (prompt && instr) return cli_usage_error(cmd, "--prompt and --instruction exclude each other");
    gp.do_sample = sample_flag;

    lt_model_params mp;
    lt_model_params_init(&mp);
    /* two independent checks (they were one else-if chain, which refused --device cuda/cpu) */
    if (!strcmp(device, "cpu")) mp.device = LT_DEVICE_CPU;
    else if (!strcmp(device, "cuda")) mp.device = LT_DEVICE_CUDA;
    else if (strcmp(device, "auto")) return cli_usage_error(cmd, "--device is auto, cpu or cuda, not '%s'", device);
    if (!strcmp(quant, "none")) mp.quant = LT_QUANT_NONE;
    else if (strcmp(quant, "nf4")) return cli_usage_error(cmd, "--quant is nf4 or none, not '%s'", quant);
    mp.progress = cli_progress;
    cli_enable_logging(LT_LOG_WARN);

    int rc = 1;
    lt_model *model = NULL;
    lt_tokenizer *tok = NULL;
    char *text = NULL, *tmpl_file = NULL;
    int32_t *ids = NULL, *out = NULL;
    lt_status st = lt_tokenizer_load(tok_dir ? tok_dir : model_dir, &tok);
    if (st != LT_OK) { rc = cli_fail(cmd, st, "loading the tokenizer"); goto done; }
    st = lt_model_load(model_dir, &mp, &model);
    if (st != LT_OK) { rc = cli_fail(cmd, st, "loading the model"); goto done; }
    if (adapter && (st = lt_model_load_adapter(model, adapter)) != LT_OK) { rc = cli_fail(cmd, st, "loading the adapter"); goto done; }

    size_t tlen = 0;
    if (prompt) text = strdup(prompt);
    else if (!strcmp(tmpl, "none")) {
        size_t a = strlen(instr), b = strlen(input);
        text = malloc(a + b + 2);
        if (text) { memcpy(text, instr, a); text[a] = b ? '\n' : 0; memcpy(text + a + (b ? 1 : 0), input, b + 1); }
    } else {
        /* --template FILE: a file holding the template text (as `export --template FILE`) */
        if (!lt_template_builtin(tmpl) && !strchr(tmpl, '{')) {
            char *ftext = NULL;
            size_t flen = 0;
            if (lt_read_file(tmpl, &ftext, &flen) != LT_OK) {
                rc = cli_usage_error(cmd, "--template '%s' is neither a built-in (alpaca-zh, alpaca, chatml, none), a "
                                     "template text with {instruction}, nor a readable file", tmpl);
                goto done;
            }
            tmpl_file = ftext;
            tmpl = ftext;
        }
        st = lt_template_render(tmpl, instr, input, "", NULL, 0, &tlen);
        if (st != LT_OK && st != LT_ERR_BUFFER_TOO_SMALL) { rc = cli_fail(cmd, st, "rendering the template"); goto done; }
        text = malloc(tlen + 1);
        if (text && (st = lt_template_render(tmpl, instr, input, "", text, tlen + 1, &tlen)) != LT_OK) {
            rc = cli_fail(cmd, st, "rendering the template");
            goto done;
        }
    }
    if (!text) { fprintf(stderr, "loratune generate: out of memory\n"); goto done; }
    size_t n = 0, len = strlen(text);
    ids = malloc(sizeof *ids * (len + 16));
    if (!ids) goto done;
    if ((st = lt_tokenizer_encode(tok, text, len, 0, ids, len + 16, &n)) != LT_OK) { rc = cli_fail(cmd, st, "tokenizing the prompt"); goto done; }
    out = malloc(sizeof *out * ((size_t)gp.max_new_tokens + 1));
    if (!out) goto done;
    gp.tokenizer = tok;
    if (n_stop_strings) { gp.stop_strings = stop_strings; gp.n_stop_strings = n_stop_strings; }
    if (n_stop_ids) { gp.stop_ids = stop_ids; gp.n_stop_ids = n_stop_ids; }
    if (!ids_only) {
        gp.on_text = print_piece;
        fputs(text, stdout);
        fflush(stdout);
    }
    size_t n_out = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    st = lt_generate(model, ids, n, &gp, out, (size_t)gp.max_new_tokens + 1, &n_out);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (st < 0) { rc = cli_fail(cmd, st, "generating"); goto done; }
    if (ids_only) {
        printf("[");
        for (size_t i = 0; i < n_out; i++) printf("%s%d", i ? ", " : "", out[i]);
        printf("]\n");
    } else {
        fputc('\n', stdout);
    }
    lt_generate_timing tm;
    lt_generate_last_timing(&tm);
    fprintf(stderr, "[%zu prompt tokens, %zu new tokens in %.2f s; first token after %.1f ms, then %.1f tokens/s%s]\n",
            n, n_out, secs, 1e3 * tm.prefill_s, tm.decode_s > 0 ? (double)tm.n_decoded / tm.decode_s : 0.0,
            tm.fast_decode ? ", CUDA decode kernels" : "");
    rc = 0;
done:
    free(tmpl_file);
    free(text);
    free(ids);
    free(out);
    lt_model_free(model);
    lt_tokenizer_free(tok);
    return rc;
}

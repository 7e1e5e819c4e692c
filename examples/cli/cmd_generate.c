/* cmd_generate.c - `loratune generate`: streams a completion to the terminal, with or without a
 * LoRA adapter, for a raw prompt or an instruction rendered through a prompt template; or
 * generates for every prompt of a file at once (--prompts-file: lt_generate_batch) and prints
 * one JSON line per prompt. */
#include "cli.h"
#include "infer/infer.h"
#include "tok/tok.h"
#include <jansson.h>

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
    "       loratune generate --model DIR [--adapter DIR] --prompts-file FILE [--batch-size N] [same flags]\n"
    "  --prompt is used as is; --instruction/--input go through the template (default alpaca-zh,\n"
    "  the notebook's). --ids prints the generated ids as JSON instead of streaming text.\n"
    "  The prompt is encoded as transformers' tokenizer(prompt) does: with the BOS token where the\n"
    "  tokenizer's post-processor adds one (Llama, Gemma, Mistral, Phi-3; not Qwen2), once when the\n"
    "  text already starts with it.\n"
    "  Stops at the tokenizer's / generation_config.json's EOS ids unless --stop-id is given.\n"
    "  --prompts-file: one prompt per line, generated together (N at a time; default all): a plain\n"
    "  line is an instruction through the template (--template none: used as is), a JSON line is\n"
    "  {\"instruction\": T, \"input\": T} or {\"prompt\": T} (used as is). Prints one JSON line per\n"
    "  prompt, in order: {\"index\", \"text\", \"n_tokens\"} (+ \"ids\" with --ids); sampling draws\n"
    "  prompt i with --seed + i.\n";

/* The prompt text of a raw prompt (used as is) or of instruction + input through tmpl ("none":
 * instruction and input joined by a newline); malloc'd into *out. */
static lt_status render_prompt(const char *tmpl, const char *prompt, const char *instr, const char *input,
                               char **out) {
    *out = NULL;
    if (prompt) {
        *out = strdup(prompt);
        return *out ? LT_OK : LT_ERR_OUT_OF_MEMORY;
    }
    if (!strcmp(tmpl, "none")) {
        size_t a = strlen(instr), b = strlen(input);
        char *t = malloc(a + b + 2);
        if (!t) return LT_ERR_OUT_OF_MEMORY;
        memcpy(t, instr, a);
        t[a] = b ? '\n' : 0;
        memcpy(t + a + (b ? 1 : 0), input, b + 1);
        *out = t;
        return LT_OK;
    }
    size_t tlen = 0;
    lt_status st = lt_template_render(tmpl, instr, input, "", NULL, 0, &tlen);
    if (st != LT_OK && st != LT_ERR_BUFFER_TOO_SMALL) return st;
    char *t = malloc(tlen + 1);
    if (!t) return LT_ERR_OUT_OF_MEMORY;
    if ((st = lt_template_render(tmpl, instr, input, "", t, tlen + 1, &tlen)) != LT_OK) { free(t); return st; }
    *out = t;
    return LT_OK;
}

/* The prompts of a --prompts-file (see the usage) tokenized: ids[i] (malloc'd), lens[i]. */
typedef struct prompt_set {
    int32_t **ids;
    size_t *lens;
    size_t n, cap;
} prompt_set;

static void prompt_set_free(prompt_set *ps) {
    for (size_t i = 0; i < ps->n; i++) free(ps->ids[i]);
    free(ps->ids);
    free(ps->lens);
}

static int read_prompts(const char *cmd, const char *path, const char *tmpl, const lt_tokenizer *tok, prompt_set *ps) {
    char *data = NULL;
    size_t len = 0;
    lt_status st = lt_read_file(path, &data, &len);
    if (st != LT_OK) return cli_fail(cmd, st, "reading --prompts-file");
    int rc = 0;
    size_t line_no = 0;
    for (char *line = data, *next; line && line < data + len && rc == 0; line = next) {
        char *nl = memchr(line, '\n', (size_t)(data + len - line));
        next = nl ? nl + 1 : NULL;
        if (nl) *nl = 0;
        line_no++;
        size_t ll = strlen(line);
        if (ll && line[ll - 1] == '\r') line[--ll] = 0;
        const char *p = line;
        while (*p == ' ' || *p == '\t') p++;
        if (!*p) continue; /* blank lines separate nothing */
        const char *raw = NULL, *instr = line, *input = "";
        json_t *j = NULL;
        if (*p == '{') {
            json_error_t je;
            j = json_loads(p, 0, &je);
            json_t *jp = j ? json_object_get(j, "prompt") : NULL, *ji = j ? json_object_get(j, "instruction") : NULL;
            json_t *jn = j ? json_object_get(j, "input") : NULL;
            if (!j) rc = cli_usage_error(cmd, "--prompts-file %s line %zu: not JSON (%s)", path, line_no, je.text);
            else if (!(jp && json_is_string(jp)) && !(ji && json_is_string(ji)))
                rc = cli_usage_error(cmd, "--prompts-file %s line %zu: needs a string \"prompt\" or \"instruction\"", path,
                                     line_no);
            else if (jn && !json_is_string(jn))
                rc = cli_usage_error(cmd, "--prompts-file %s line %zu: \"input\" is not a string", path, line_no);
            else if (jp && json_is_string(jp)) raw = json_string_value(jp);
            else {
                instr = json_string_value(ji);
                if (jn) input = json_string_value(jn);
            }
        } else if (!strcmp(tmpl, "none")) {
            raw = line;
        }
        char *text = NULL;
        if (rc == 0 && (st = render_prompt(tmpl, raw, instr, input, &text)) != LT_OK)
            rc = cli_fail(cmd, st, "rendering a prompt of --prompts-file");
        size_t tl = text ? strlen(text) : 0, n = 0;
        int32_t *ids = NULL;
        if (rc == 0 && (st = lt_tokenizer_encode_prompt(tok, text, tl, &ids, &n)) != LT_OK)
            rc = cli_fail(cmd, st, "tokenizing a prompt of --prompts-file");
        if (rc == 0 && n == 0)
            rc = cli_usage_error(cmd, "--prompts-file %s line %zu: the prompt has no tokens", path, line_no);
        if (rc == 0 && ps->n == ps->cap) {
            size_t cap = ps->cap ? 2 * ps->cap : 16;
            int32_t **a = realloc(ps->ids, cap * sizeof *a);
            if (a) ps->ids = a;
            size_t *b = a ? realloc(ps->lens, cap * sizeof *b) : NULL;
            if (b) ps->lens = b;
            if (a && b) ps->cap = cap;
            else rc = cli_fail(cmd, LT_ERR_OUT_OF_MEMORY, "reading --prompts-file");
        }
        if (rc == 0) {
            ps->ids[ps->n] = ids;
            ps->lens[ps->n++] = n;
            ids = NULL;
        }
        free(ids);
        free(text);
        json_decref(j);
    }
    free(data);
    if (rc == 0 && ps->n == 0) rc = cli_usage_error(cmd, "--prompts-file %s holds no prompt", path);
    return rc;
}

/* --prompts-file: every prompt through lt_generate_batch, batch_size at a time (0: all), one
 * JSON line per prompt on stdout */
static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int generate_file(const char *cmd, lt_model *model, const lt_tokenizer *tok, const prompt_set *ps,
                         const lt_generate_params *gp, int32_t batch_size, bool with_ids) {
    size_t bs = batch_size > 0 ? (size_t)batch_size : ps->n, cap = (size_t)gp->max_new_tokens + 1;
    if (bs > ps->n) bs = ps->n;
    int32_t *out = malloc(sizeof *out * cap * bs);
    size_t *n_out = malloc(sizeof *n_out * bs);
    if (!out || !n_out) { free(out); free(n_out); return cli_fail(cmd, LT_ERR_OUT_OF_MEMORY, "generating"); }
    int rc = 0;
    size_t total_new = 0, total_decoded = 0;
    double secs = 0, decode_s = 0;
    for (size_t b0 = 0; b0 < ps->n && rc == 0; b0 += bs) {
        size_t nb = ps->n - b0 < bs ? ps->n - b0 : bs;
        lt_generate_params p = *gp;
        p.seed = gp->seed + b0; /* prompt i draws with seed + i whatever the batch size */
        double t0 = now_s();
        lt_status st = lt_generate_batch(model, (const int32_t *const *)ps->ids + b0, ps->lens + b0, nb, &p, out, cap,
                                         n_out);
        secs += now_s() - t0;
        if (st < 0) { rc = cli_fail(cmd, st, "generating"); break; }
        lt_generate_timing tm;
        lt_generate_last_timing(&tm);
        decode_s += tm.decode_s;
        total_decoded += (size_t)tm.n_decoded;
        for (size_t i = 0; i < nb && rc == 0; i++) {
            /* the text decoding prompt + new ids adds to the prompt's, as the stream gives it */
            size_t tl = 0;
            char *text = NULL;
            st = lt_tokenizer_decode_continuation(tok, ps->ids[b0 + i], ps->lens[b0 + i], out + i * cap, n_out[i], 1,
                                                  &text, &tl);
            if (st != LT_OK) { rc = cli_fail(cmd, st, "decoding the generated ids"); break; }
            json_t *o = json_object();
            json_object_set_new(o, "index", json_integer((json_int_t)(b0 + i)));
            json_object_set_new(o, "text", json_stringn(text, tl));
            free(text);
            json_object_set_new(o, "n_tokens", json_integer((json_int_t)n_out[i]));
            if (with_ids) {
                json_t *a = json_array();
                for (size_t k = 0; k < n_out[i]; k++) json_array_append_new(a, json_integer(out[i * cap + k]));
                json_object_set_new(o, "ids", a);
            }
            char *line = json_dumps(o, JSON_COMPACT);
            json_decref(o);
            if (!line) { rc = cli_fail(cmd, LT_ERR_OUT_OF_MEMORY, "printing"); break; }
            printf("%s\n", line);
            free(line);
            total_new += n_out[i];
        }
        fflush(stdout);
    }
    if (rc == 0)
        fprintf(stderr, "[%zu prompts, %zu new tokens in %.2f s (%.1f tokens/s overall; decode steps %.1f tokens/s), "
                "batches of %zu]\n", ps->n, total_new, secs, secs > 0 ? (double)total_new / secs : 0.0,
                decode_s > 0 ? (double)total_decoded / decode_s : 0.0, bs);
    free(out);
    free(n_out);
    return rc;
}

static int print_piece(const char *piece, size_t len, int32_t token, void *ud) {
    (void)token; (void)ud;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return 0;
}

int lt_cmd_generate(int argc, char **argv) {
    const char *cmd = "generate", *model_dir = NULL, *adapter = NULL, *prompt = NULL, *instr = NULL, *input = "";
    const char *tmpl = "alpaca-zh", *device = "auto", *quant = "nf4", *tok_dir = NULL, *prompts_file = NULL;
    int32_t batch_size = 0;
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
        else if ((v = cli_flag(argc, argv, &i, "--prompts-file"))) prompts_file = v;
        else if ((v = cli_flag(argc, argv, &i, "--batch-size"))) { if (!cli_int(cmd, "--batch-size", v, &batch_size)) return 2; }
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
    if (!prompt && !instr && !prompts_file)
        return cli_usage_error(cmd, "give --prompt TEXT, --instruction TEXT or --prompts-file FILE");
    if (!!prompt + !!instr + !!prompts_file > 1)
        return cli_usage_error(cmd, "--prompt, --instruction and --prompts-file exclude each other");
    if (batch_size < 0) return cli_usage_error(cmd, "--batch-size is %d, it must be >= 1 (or 0: all at once)", batch_size);
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

    if (!prompt && strcmp(tmpl, "none")) {
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
    }
    if (n_stop_strings) { gp.stop_strings = stop_strings; gp.n_stop_strings = n_stop_strings; }
    if (n_stop_ids) { gp.stop_ids = stop_ids; gp.n_stop_ids = n_stop_ids; }
    if (prompts_file) {
        prompt_set ps = {0};
        gp.tokenizer = tok;
        rc = read_prompts(cmd, prompts_file, tmpl, tok, &ps);
        if (rc == 0) rc = generate_file(cmd, model, tok, &ps, &gp, batch_size, ids_only);
        prompt_set_free(&ps);
        goto done;
    }
    if ((st = render_prompt(tmpl, prompt, instr, input, &text)) != LT_OK) {
        rc = cli_fail(cmd, st, "rendering the template");
        goto done;
    }
    size_t n = 0, len = strlen(text);
    /* as transformers' tokenizer(prompt): the post-processor's BOS where the tokenizer adds one */
    if ((st = lt_tokenizer_encode_prompt(tok, text, len, &ids, &n)) != LT_OK) { rc = cli_fail(cmd, st, "tokenizing the prompt"); goto done; }
    out = malloc(sizeof *out * ((size_t)gp.max_new_tokens + 1));
    if (!out) goto done;
    gp.tokenizer = tok;
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

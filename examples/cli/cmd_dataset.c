/* cmd_dataset.c - `loratune dataset`: loads a training file through the same pipeline as
 * `loratune train` (lt_dataset_load) and prints its statistics and the first N examples with
 * their loss mask made visible (masked text dimmed on a terminal, else inside ⟦ ⟧). */
#include "cli.h"
#include "data/dataset.h"
#include "data/template.h"
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static void usage(void) {
    printf("usage: loratune dataset --data FILE --tokenizer DIR [flags]\n\n"
           "Reads a JSON array or JSONL training file, renders and tokenizes every record as training\n"
           "would, and prints statistics and the first examples with their loss mask.\n\n"
           "  --data FILE             .json (array of objects) or .jsonl (one object per line)\n"
           "  --tokenizer DIR         folder with tokenizer.json (+ tokenizer_config.json)\n"
           "  --template T            alpaca-zh (default), alpaca, chatml, a template text with\n"
           "                          {instruction} {input} {output}, or a file holding one\n"
           "                          (chatml is '<|im_start|>user\\n{instruction}\\n{input}<|im_end|>\\n"
           "<|im_start|>assistant\\n{output}',\n"
           "                          then EOS; Python str.format rules: {} positional, {{ }} literal braces)\n"
           "  --format F              auto (default), alpaca, chat, text, tokens\n"
           "  --max-seq-len N         truncate longer records (default 2048; counted)\n"
           "  --response-only         loss on the response only (default: every token)\n"
           "  --skip-bad              skip bad records (counted, warned) instead of stopping\n"
           "  --no-eos                do not append the tokenizer's EOS\n"
           "  --eval-fraction F       hold out a fraction for evaluation (default 0)\n"
           "  --seed N                split seed (default 3407)\n"
           "  --instruction-field K, --input-field K, --output-field K, --text-field K\n"
           "  --threads N             tokenization threads (default: all cores)\n"
           "  --show N                examples to print (default 3)\n"
           "  --color / --no-color    dim masked text (default: when stdout is a terminal)\n");
}

static int parse_format(const char *s, int32_t *out) {
    static const char *names[] = {"auto", "alpaca", "chat", "text", "tokens"};
    for (int i = 0; i < 5; i++)
        if (!strcmp(s, names[i])) { *out = i; return 1; }
    return 0;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

/* Prints ids[n] with the runs that carry no loss dimmed (color) or inside ⟦ ⟧. */
static void show_example(const lt_tokenizer *tok, const int32_t *ids, const int32_t *labels, size_t n, int color) {
    size_t cap = 1 << 16;
    char *buf = malloc(cap);
    if (!buf) return;
    for (size_t i = 0; i < n;) {
        int masked = labels[i] == -100;
        size_t j = i;
        while (j < n && (labels[j] == -100) == masked) j++;
        size_t len = 0;
        lt_status st = lt_tokenizer_decode(tok, ids + i, j - i, 0, buf, cap, &len);
        if (st == LT_ERR_BUFFER_TOO_SMALL) {
            char *b2 = realloc(buf, len + 1);
            if (!b2) break;
            buf = b2;
            cap = len + 1;
            st = lt_tokenizer_decode(tok, ids + i, j - i, 0, buf, cap, &len);
        }
        if (st != LT_OK) { printf("<decode failed: %s>", lt_last_error()); break; }
        if (masked) printf(color ? "\x1b[2m%.*s\x1b[0m" : "⟦%.*s⟧", (int)len, buf);
        else printf("%.*s", (int)len, buf);
        i = j;
    }
    printf("\n");
    free(buf);
}

int lt_cmd_dataset(int argc, char **argv) {
    const char *cmd = argv[0], *data = NULL, *tokdir = NULL, *tpl = NULL;
    lt_dataset_params p;
    lt_dataset_params_init(&p);
    int32_t show = 3, color = cli_is_tty(stdout);
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (cli_switch(argv, i, "--help") || cli_switch(argv, i, "-h")) { usage(); return 0; }
        else if ((v = cli_flag(argc, argv, &i, "--data"))) data = v;
        else if ((v = cli_flag(argc, argv, &i, "--tokenizer"))) tokdir = v;
        else if ((v = cli_flag(argc, argv, &i, "--template"))) tpl = v;
        else if ((v = cli_flag(argc, argv, &i, "--format"))) {
            if (!parse_format(v, &p.format)) return cli_usage_error(cmd, "--format: unknown format '%s'", v);
        } else if ((v = cli_flag(argc, argv, &i, "--max-seq-len"))) { if (!cli_int(cmd, "--max-seq-len", v, &p.max_seq_len)) return 2; }
        else if ((v = cli_flag(argc, argv, &i, "--show"))) { if (!cli_int(cmd, "--show", v, &show)) return 2; }
        else if ((v = cli_flag(argc, argv, &i, "--threads"))) { if (!cli_int(cmd, "--threads", v, &p.n_threads)) return 2; }
        else if ((v = cli_flag(argc, argv, &i, "--eval-fraction"))) { if (!cli_double(cmd, "--eval-fraction", v, &p.eval_fraction)) return 2; }
        else if ((v = cli_flag(argc, argv, &i, "--seed"))) { if (!cli_u64(cmd, "--seed", v, &p.seed)) return 2; }
        else if ((v = cli_flag(argc, argv, &i, "--instruction-field"))) p.instruction_field = v;
        else if ((v = cli_flag(argc, argv, &i, "--input-field"))) p.input_field = v;
        else if ((v = cli_flag(argc, argv, &i, "--output-field"))) p.output_field = v;
        else if ((v = cli_flag(argc, argv, &i, "--text-field"))) p.text_field = v;
        else if (cli_switch(argv, i, "--response-only")) p.loss_on = LT_LOSS_RESPONSE;
        else if (cli_switch(argv, i, "--skip-bad")) p.skip_bad_records = 1;
        else if (cli_switch(argv, i, "--no-eos")) p.add_eos = 0;
        else if (cli_switch(argv, i, "--color")) color = 1;
        else if (cli_switch(argv, i, "--no-color")) color = 0;
        else return cli_usage_error(cmd, "unknown flag '%s'", argv[i]);
    }
    if (!data || !tokdir) return cli_usage_error(cmd, "--data and --tokenizer are required");
    cli_enable_logging(LT_LOG_WARN);
    char *tpl_file = NULL;
    struct stat sb;
    if (tpl && !lt_template_builtin(tpl) && !strchr(tpl, '{')) {
        if (stat(tpl, &sb) != 0) return cli_usage_error(cmd, "--template: '%s' is neither a built-in name (alpaca-zh, "
                                                        "alpaca, chatml), a template text nor a file", tpl);
        lt_status st = lt_template_read_file(tpl, &tpl_file);
        if (st != LT_OK) return cli_fail(cmd, st, "reading the template");
        p.template_text = tpl_file;
    } else if (tpl && lt_template_builtin(tpl)) p.template_name = tpl;
    else if (tpl) p.template_text = tpl;
    p.progress = cli_progress;

    lt_tokenizer *tok = NULL;
    lt_dataset *ds = NULL;
    int rc = 0;
    lt_status st = lt_tokenizer_load(tokdir, &tok);
    if (st != LT_OK) { rc = cli_fail(cmd, st, "loading the tokenizer"); goto out; }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    st = lt_dataset_load(data, tok, &p, &ds);
    clock_gettime(CLOCK_MONOTONIC, &b);
    if (st != LT_OK) { rc = cli_fail(cmd, st, "loading the dataset"); goto out; }
    double secs = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
    lt_dataset_stats s = {.struct_size = sizeof s};
    if ((st = lt_dataset_get_stats(ds, &s)) != LT_OK) { rc = cli_fail(cmd, st, "reading statistics"); goto out; }
    uint64_t n_all = s.n_records + s.n_eval;
    double mb = stat(data, &sb) == 0 ? (double)sb.st_size / 1e6 : 0;
    /* length percentiles over the training split */
    size_t n = lt_dataset_size(ds);
    int32_t *lens = malloc((n ? n : 1) * sizeof *lens);
    for (size_t i = 0; lens && i < n; i++) {
        size_t len = 0;
        lt_dataset_record(ds, i, NULL, NULL, &len);
        lens[i] = (int32_t)len;
    }
    if (lens) qsort(lens, n, sizeof *lens, cmp_i32);
    printf("dataset %s\n", data);
    static const char *fmt_names[] = {"auto", "alpaca", "chat", "text", "tokens"};
    int32_t fmt = lt_dataset_format(ds);
    printf("  format        %s", fmt_names[fmt >= 0 && fmt <= 4 ? fmt : 0]);
    if (fmt == LT_DATA_ALPACA)
        printf(" (template %s)", tpl_file ? tpl : p.template_text ? "given as text" : p.template_name);
    else if (fmt == LT_DATA_CHAT) printf(" (the tokenizer's chat template)");
    printf("\n");
    printf("  records       %llu (train %llu, eval %llu)\n", (unsigned long long)n_all,
           (unsigned long long)s.n_records, (unsigned long long)s.n_eval);
    printf("  skipped       %llu%s\n", (unsigned long long)s.n_skipped, p.skip_bad_records ? "" : " (strict mode)");
    printf("  truncated     %llu (max_seq_len %d)\n", (unsigned long long)s.n_truncated, p.max_seq_len);
    printf("  tokens        %llu, with loss %llu (%.1f%%; %s)\n", (unsigned long long)s.n_tokens,
           (unsigned long long)s.n_label_tokens, s.n_tokens ? 100.0 * s.n_label_tokens / s.n_tokens : 0.0,
           p.loss_on == LT_LOSS_RESPONSE ? "response only" : "every token");
    printf("  length        min %d, mean %.1f, max %d tokens", s.min_len, s.mean_len, s.max_len);
    if (lens && n) printf("; p50 %d, p90 %d, p99 %d", lens[n / 2], lens[(n * 9) / 10], lens[(n * 99) / 100]);
    printf("\n  prepared in   %.2f s (%.0f records/s, %.1f MB/s)\n", secs, secs > 0 ? n_all / secs : 0,
           secs > 0 ? mb / secs : 0);
    free(lens);
    if (show > 0 && n > 0) {
        printf("\n%s\n", color ? "examples (dimmed text carries no loss):" : "examples (text inside ⟦ ⟧ carries no loss):");
        for (size_t i = 0; i < n && i < (size_t)show; i++) {
            const int32_t *ids, *labels;
            size_t len;
            if (lt_dataset_record(ds, i, &ids, &labels, &len) != LT_OK) break;
            size_t nl = 0;
            for (size_t t = 0; t < len; t++) nl += labels[t] != -100;
            printf("--- record %zu: %zu tokens, %zu with loss ---\n", i, len, nl);
            show_example(tok, ids, labels, len, color);
        }
    }
out:
    lt_dataset_free(ds);
    lt_tokenizer_free(tok);
    free(tpl_file);
    return rc;
}

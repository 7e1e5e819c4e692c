/* cmd_dataset.c - `loratune dataset`: loads a training file through the same pipeline as
 * `loratune train` (lt_dataset_load) and prints its statistics and the first N examples with
 * their loss mask made visible (masked text dimmed on a terminal, else inside ⟦ ⟧). */
#include "cli.h"
#include "options.h"
#include "data/dataset.h"
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static void usage(void) {
    printf("usage: loratune dataset --data FILE --tokenizer DIR [flags]\n\n"
           "Reads a JSON array or JSONL training file, renders and tokenizes every record as training\n"
           "would (the data flags are those of `loratune train`), and prints statistics and the first\n"
           "examples with their loss mask.\n");
    cli_opts_help(stdout, CLI_CMD_DATASET);
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
    const char *cmd = argv[0];
    for (int i = 1; i < argc; i++)
        if (cli_switch(argv, i, "--help") || cli_switch(argv, i, "-h")) { usage(); return 0; }
    cli_opts o;
    cli_opts_init(&o, CLI_CMD_DATASET);
    int rc = cli_opts_parse(&o, cmd, argc, argv);
    if (rc < 0) rc = cli_opts_finish(&o, cmd);
    if (rc >= 0) { cli_opts_free(&o); return rc; }
    const char *data = o.data, *tokdir = o.tokenizer;
    if (!data || !tokdir) { cli_opts_free(&o); return cli_usage_error(cmd, "--data and --tokenizer are required"); }
    cli_enable_logging(LT_LOG_WARN);
    lt_dataset_params p = o.dp;
    p.progress = cli_progress;
    int32_t show = o.show, color = o.color;
    struct stat sb;

    lt_tokenizer *tok = NULL;
    lt_dataset *ds = NULL;
    rc = 0;
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
        printf(" (template %s)", o.template_file_text ? o.tmpl : p.template_text ? "given as text" : p.template_name);
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
    cli_opts_free(&o);
    return rc;
}

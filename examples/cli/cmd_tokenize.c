/* cmd_tokenize.c - `loratune tokenize`: encodes stdin to ids (or --decode ids to text) with an
 * HF tokenizer folder. Plain mode takes all of stdin as one text and prints the ids on one line;
 * --jsonl reads one {"text": ...} object per line and writes {"ids": [...]} per line (encoded on
 * several threads, output in input order); --decode reverses either form. */
#include "cli.h"
#include "tok/tok.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(void) {
    printf("usage: loratune tokenize --tokenizer DIR [--jsonl] [--decode] [flags] < in > out\n\n"
           "Encodes stdin with a Hugging Face tokenizer folder (tokenizer.json [+ tokenizer_config.json]).\n\n"
           "  --tokenizer DIR   the folder (or a model folder holding tokenizer.json)\n"
           "  --jsonl           one JSON object per line: {\"text\": ...} -> {\"ids\": [...]}\n"
           "                    (with --decode: {\"ids\": [...]} -> {\"text\": ...})\n"
           "  --decode          ids to text (plain mode: whitespace-separated ids on stdin)\n"
           "  --add-special     add the post-processor's tokens (BOS for Llama-3; nothing for Qwen2)\n"
           "  --skip-special    leave special tokens out when decoding\n"
           "  --offsets         with --jsonl: also write \"offsets\": [[start, end], ...] (byte ranges)\n"
           "  --threads N       encoding threads for --jsonl (default: all cores)\n");
}

static char *read_all(FILE *f, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) return NULL;
    for (;;) {
        if (n + 4096 > cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) { free(buf); return NULL; }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static void print_ids(FILE *out, const int32_t *ids, size_t n) {
    for (size_t i = 0; i < n; i++) fprintf(out, i ? ", %d" : "%d", ids[i]);
}

/* One batch of JSONL lines: parse, encode on several threads, write in order. */
static int encode_batch(const char *cmd, const lt_tokenizer *tok, char **lines, size_t n, size_t first_line,
                        int add_special, int offsets, int threads) {
    json_t **docs = calloc(n, sizeof *docs);
    const char **texts = calloc(n, sizeof *texts);
    size_t *lens = calloc(n, sizeof *lens);
    int32_t **ids = calloc(n, sizeof *ids);
    size_t *n_ids = calloc(n, sizeof *n_ids);
    int rc = 0;
    if (!docs || !texts || !lens || !ids || !n_ids) { fprintf(stderr, "loratune %s: out of memory\n", cmd); rc = 1; goto out; }
    for (size_t i = 0; i < n; i++) {
        json_error_t err;
        docs[i] = json_loads(lines[i], JSON_ALLOW_NUL, &err);
        json_t *t = json_object_get(docs[i], "text");
        if (!json_is_string(t)) {
            fprintf(stderr, "loratune %s: stdin line %zu: expected an object with a \"text\" string%s%s\n", cmd,
                    first_line + i, docs[i] ? "" : ": ", docs[i] ? "" : err.text);
            rc = 1; goto out;
        }
        texts[i] = json_string_value(t);
        lens[i] = json_string_length(t);
    }
    if (offsets) {
        for (size_t i = 0; i < n; i++) {
            uint32_t *off = NULL;
            lt_status st = lt_tokenizer_encode_offsets(tok, texts[i], lens[i], add_special, &ids[i], &off, &n_ids[i]);
            if (st != LT_OK) { fprintf(stderr, "loratune %s: stdin line %zu: %s\n", cmd, first_line + i, lt_last_error()); rc = 1; goto out; }
            printf("{\"ids\": [");
            print_ids(stdout, ids[i], n_ids[i]);
            printf("], \"offsets\": [");
            for (size_t k = 0; k < n_ids[i]; k++) printf(k ? ", [%u, %u]" : "[%u, %u]", off[2 * k], off[2 * k + 1]);
            printf("]}\n");
            free(off);
        }
    } else {
        lt_status st = lt_tokenizer_encode_many(tok, texts, lens, n, add_special, threads, ids, n_ids);
        if (st != LT_OK) { fprintf(stderr, "loratune %s: stdin lines from %zu: %s\n", cmd, first_line, lt_last_error()); rc = 1; goto out; }
        for (size_t i = 0; i < n; i++) {
            printf("{\"ids\": [");
            print_ids(stdout, ids[i], n_ids[i]);
            printf("]}\n");
        }
    }
out:
    for (size_t i = 0; i < n; i++) { if (docs) json_decref(docs[i]); if (ids) free(ids[i]); }
    free(docs); free(texts); free(lens); free(ids); free(n_ids);
    return rc;
}

static int decode_ids(const char *cmd, const lt_tokenizer *tok, const int32_t *ids, size_t n, int skip, char **text, size_t *len) {
    size_t cap = 4 * n + 64;
    *text = malloc(cap);
    if (!*text) return 1;
    lt_status st = lt_tokenizer_decode(tok, ids, n, skip, *text, cap, len);
    if (st == LT_ERR_BUFFER_TOO_SMALL) {
        free(*text);
        cap = *len + 1;
        *text = malloc(cap);
        if (!*text) return 1;
        st = lt_tokenizer_decode(tok, ids, n, skip, *text, cap, len);
    }
    if (st != LT_OK) { fprintf(stderr, "loratune %s: %s\n", cmd, lt_last_error()); return 1; }
    return 0;
}

int lt_cmd_tokenize(int argc, char **argv) {
    const char *cmd = "tokenize", *dir = NULL, *v;
    int jsonl = 0, decode = 0, add_special = 0, skip = 0, offsets = 0;
    int32_t threads = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_switch(argv, i, "--help") || cli_switch(argv, i, "-h")) { usage(); return 0; }
        else if ((v = cli_flag(argc, argv, &i, "--tokenizer"))) dir = v;
        else if (cli_switch(argv, i, "--jsonl")) jsonl = 1;
        else if (cli_switch(argv, i, "--decode")) decode = 1;
        else if (cli_switch(argv, i, "--add-special")) add_special = 1;
        else if (cli_switch(argv, i, "--skip-special")) skip = 1;
        else if (cli_switch(argv, i, "--offsets")) offsets = 1;
        else if ((v = cli_flag(argc, argv, &i, "--threads"))) { if (!cli_int(cmd, "--threads", v, &threads)) return 2; }
        else return cli_usage_error(cmd, "unknown flag '%s'", argv[i]);
    }
    if (!dir) return cli_usage_error(cmd, "--tokenizer DIR is required");
    lt_tokenizer *tok = NULL;
    lt_status st = lt_tokenizer_load(dir, &tok);
    if (st != LT_OK) return cli_fail(cmd, st, "loading the tokenizer");
    size_t len = 0;
    char *in = read_all(stdin, &len);
    int rc = 0;
    if (!in) { lt_tokenizer_free(tok); fprintf(stderr, "loratune %s: out of memory reading stdin\n", cmd); return 1; }

    if (!jsonl && !decode) {
        int32_t *ids = NULL;
        size_t n = 0;
        st = lt_tokenizer_encode_offsets(tok, in, len, add_special, &ids, NULL, &n);
        if (st != LT_OK) rc = cli_fail(cmd, st, "encoding stdin");
        else { for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]); printf("\n"); }
        free(ids);
    } else if (!jsonl && decode) {
        size_t cap = 1024, n = 0;
        int32_t *ids = malloc(cap * sizeof *ids);
        char *p = in, *end;
        while (ids) {
            while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r' || *p == ',') p++;
            if (!*p) break;
            long x = strtol(p, &end, 10);
            if (end == p) { rc = cli_usage_error(cmd, "stdin: '%.20s' is not a token id", p); break; }
            if (n == cap) { int32_t *ni = realloc(ids, (cap *= 2) * sizeof *ids); if (!ni) break; ids = ni; }
            ids[n++] = (int32_t)x;
            p = end;
        }
        char *text = NULL;
        size_t tl = 0;
        if (!rc && ids && !(rc = decode_ids(cmd, tok, ids, n, skip, &text, &tl))) fwrite(text, 1, tl, stdout);
        free(text); free(ids);
    } else {
        /* JSONL: split into lines, work in batches */
        enum { BATCH = 4096 };
        char **lines = malloc(BATCH * sizeof *lines);
        size_t nl = 0, line_no = 0, first = 1;
        char *p = in;
        while (!rc && lines && p < in + len) {
            char *e = memchr(p, '\n', (size_t)(in + len - p));
            if (!e) e = in + len;
            *e = 0;
            line_no++;
            int blank = 1;
            for (char *q = p; q < e; q++) if (*q != ' ' && *q != '\t' && *q != '\r') { blank = 0; break; }
            if (blank) { if (!decode) { /* keep line numbers in step; blank lines produce nothing */ } }
            else if (decode) {
                json_error_t err;
                json_t *d = json_loads(p, 0, &err);
                json_t *a = json_object_get(d, "ids");
                if (!json_is_array(a)) { fprintf(stderr, "loratune %s: stdin line %zu: expected {\"ids\": [...]}\n", cmd, line_no); rc = 1; }
                else {
                    size_t n = json_array_size(a);
                    int32_t *ids = malloc((n + 1) * sizeof *ids);
                    for (size_t k = 0; ids && k < n; k++) ids[k] = (int32_t)json_integer_value(json_array_get(a, k));
                    char *text = NULL;
                    size_t tl = 0;
                    if (ids && !(rc = decode_ids(cmd, tok, ids, n, skip, &text, &tl))) {
                        json_t *o = json_object();
                        json_object_set_new(o, "text", json_stringn(text, tl));
                        char *s = json_dumps(o, JSON_COMPACT);
                        if (s) printf("%s\n", s);
                        free(s);
                        json_decref(o);
                    }
                    free(text); free(ids);
                }
                json_decref(d);
            } else {
                if (nl == 0) first = line_no;
                lines[nl++] = p;
                if (nl == BATCH) { rc = encode_batch(cmd, tok, lines, nl, first, add_special, offsets, threads); nl = 0; }
            }
            p = e + 1;
        }
        if (!rc && nl) rc = encode_batch(cmd, tok, lines, nl, first, add_special, offsets, threads);
        free(lines);
    }
    free(in);
    lt_tokenizer_free(tok);
    fflush(stdout);
    return rc;
}

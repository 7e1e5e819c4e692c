/* fuzz_dataset.c - libFuzzer target for the dataset readers (built with -DLT_FUZZ=ON and
 * clang). Each input is written to a file and loaded through lt_dataset_load with a tiny read
 * chunk (so every record straddles chunks), options picked by the first byte; the same bytes
 * also go through lt_dataset_add_json and, as a template text, through the template parser.
 * Anything but a clean status or a clean error is a finding (ASan/UBSan abort). */
#include "loratune.h"
#include "data/dataset.h"
#include "data/reader.h"
#include "data/template.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static lt_tokenizer *tok;
static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    if (lt_tokenizer_load(LT_REPO_ROOT "/assets/qwen2-tokenizer", &tok) != LT_OK) {
        fprintf(stderr, "fuzz_dataset: cannot load the tokenizer: %s\n", lt_last_error());
        exit(1);
    }
    snprintf(path, sizeof path, "/tmp/lt_fuzz_%d.json", (int)getpid());
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t opt = data[0];
    data++, size--;
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    lt_dataset_params p;
    lt_dataset_params_init(&p);
    p.skip_bad_records = opt & 1;
    p.loss_on = (opt >> 1) & 1;
    p.max_seq_len = opt & 4 ? 16 : 2048;
    p.eval_fraction = opt & 8 ? 0.25 : 0;
    p.n_threads = 1;
    p.format = (opt >> 4) % 5;
    lt_reader_chunk_bytes = 1 + (opt >> 5);
    lt_dataset *ds = NULL;
    if (lt_dataset_load(path, tok, &p, &ds) == LT_OK) {
        size_t n = lt_dataset_size(ds);
        for (size_t i = 0; i < n; i++) {
            const int32_t *ids, *labels;
            size_t len;
            if (lt_dataset_record(ds, i, &ids, &labels, &len) != LT_OK || len == 0) abort();
        }
        lt_dataset_stats s = {.struct_size = sizeof s};
        lt_dataset_get_stats(ds, &s);
        if (n) {
            lt_batch b = {0};
            size_t idx[2] = {0, n - 1};
            if (lt_batch_from_dataset(&b, ds, idx, 2, 0) != LT_OK) abort();
            lt_batch_free(&b);
        }
    }
    lt_dataset_free(ds);
    /* the same bytes as one API record and as a template */
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = 0;
    if (lt_dataset_new(tok, &p, &ds) == LT_OK) {
        lt_dataset_add_json(ds, s);
        lt_dataset_free(ds);
    }
    char *out, *pre, *suf;
    size_t len, at;
    if (lt_template_render_alloc(s, "ins", "inp", "out", &out, &len, &at) == LT_OK) {
        if (at > len) abort();
        free(out);
    }
    if (lt_template_split(s, &pre, &suf) == LT_OK) { free(pre); free(suf); }
    free(s);
    lt_reader_chunk_bytes = (size_t)1 << 20;
    return 0;
}

/* fuzz_tok_encode.c - libFuzzer target: arbitrary bytes through the shipped Qwen2 tokenizer:
 * encode (invalid UTF-8 must be a clean LT_ERR_UTF8), encode with offsets (ranges in order and in
 * bounds), decode of the ids and of the raw bytes read as ids, and the token stream (only complete
 * UTF-8 comes out). The tokenizer is loaded once (LT_FUZZ_TOKENIZER overrides the folder). */
#include "tok/tok.h"
#include <stdlib.h>
#include <string.h>

#ifndef LT_REPO_ROOT
#define LT_REPO_ROOT "."
#endif

static lt_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    const char *dir = getenv("LT_FUZZ_TOKENIZER");
    if (lt_tokenizer_load(dir ? dir : LT_REPO_ROOT "/assets/qwen2-tokenizer", &tok) != LT_OK) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    int32_t *ids = NULL;
    uint32_t *off = NULL;
    size_t n = 0;
    lt_status st = lt_tokenizer_encode_offsets(tok, text, size, 0, &ids, &off, &n);
    int valid = lt_utf8_check(text, size) == size;
    if (valid != (st == LT_OK)) abort();
    if (st == LT_OK) {
        for (size_t i = 0; i < n; i++) {
            if (off[2 * i] > off[2 * i + 1] || off[2 * i + 1] > size) abort();
            if (i && off[2 * i] < off[2 * (i - 1)]) abort();
        }
        size_t cap = size * 3 + 64, len = 0;
        char *out = malloc(cap);
        if (lt_tokenizer_decode(tok, ids, n, 0, out, cap, &len) != LT_OK) abort();
        if (lt_utf8_check(out, len) != len) abort();
        free(out);
    }
    free(ids);
    free(off);
    /* the bytes as ids: decode and stream must cope with any id */
    size_t k = size / 4;
    int32_t *raw = malloc((k + 1) * sizeof(int32_t));
    memcpy(raw, data, k * 4);
    for (size_t i = 0; i < k; i++) raw[i] %= 160000;
    size_t cap = k * 64 + 64, len = 0;
    char *out = malloc(cap);
    if (lt_tokenizer_decode(tok, raw, k, (int)(size & 1), out, cap, &len) != LT_OK) abort();
    lt_token_stream *s = NULL;
    if (lt_token_stream_new(tok, 0, &s) != LT_OK) abort();
    char piece[1024];
    for (size_t i = 0; i < k; i++) {
        if (lt_token_stream_push(s, raw[i], piece, sizeof piece, &len) != LT_OK) abort();
        if (lt_utf8_check(piece, len) != len) abort();
    }
    if (lt_token_stream_flush(s, piece, sizeof piece, &len) != LT_OK) abort();
    lt_token_stream_free(s);
    free(out);
    free(raw);
    return 0;
}

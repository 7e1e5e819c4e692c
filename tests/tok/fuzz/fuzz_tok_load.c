/* fuzz_tok_load.c - libFuzzer target: tokenizer.json text -> lt_tokenizer_load_json. Whatever the
 * bytes, loading must return a status (no crash, leak or sanitizer report); when it loads, a short
 * encode / decode round must work too. Seeds: tests/tok/fuzz/corpus_load/. */
#include "tok/tok.h"
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lt_tokenizer *tok = NULL;
    if (lt_tokenizer_load_json((const char *)data, size, &tok) != LT_OK) return 0;
    static const char *texts[] = {"Hello, world! 123", "  a\n\nb\t中文 <s> ", "", "'s 'LL ١٢٣ é"};
    for (int i = 0; i < 4; i++) {
        int32_t *ids = NULL;
        uint32_t *off = NULL;
        size_t n = 0;
        if (lt_tokenizer_encode_offsets(tok, texts[i], strlen(texts[i]), i & 1, &ids, &off, &n) == LT_OK) {
            char out[4096];
            size_t len;
            lt_tokenizer_decode(tok, ids, n, i & 1, out, sizeof out, &len);
        }
        free(ids);
        free(off);
    }
    lt_tokenizer_free(tok);
    return 0;
}

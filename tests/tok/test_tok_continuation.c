/* test_tok_continuation.c - generation prompts and streamed text against Hugging Face
 * (tests/tok/continuation/refs.json, made by make_refs.py with tokenizers + transformers):
 *  - lt_tokenizer_encode_prompt(prompt) == transformers' tokenizer(prompt).input_ids (the
 *    post-processor's BOS for the SentencePiece-style vocabularies, nothing for Qwen2), and a text
 *    that starts with the BOS text keeps one BOS (tokenizer(text, add_special_tokens=False));
 *  - a token stream seeded with the prompt emits decode(prompt + new) minus decode(prompt), for
 *    byte-level and SentencePiece vocabularies, across characters split over byte tokens: the
 *    pieces joined equal the reference and each piece is whole UTF-8;
 *  - lt_tokenizer_decode_continuation gives the same text; for Qwen2 that is the new ids'
 *    decode alone (byte-level text does not depend on what comes before). */
#include "lt_test.h"
#include "tok/tok.h"
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static int32_t *ids_of(json_t *a, size_t *n) {
    *n = json_array_size(a);
    int32_t *v = malloc(sizeof *v * (*n + 1));
    for (size_t i = 0; i < *n; i++) v[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return v;
}

static int same_ids(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    return na == nb && (na == 0 || !memcmp(a, b, na * sizeof *a));
}

static void check_prompt_ids(const lt_tokenizer *tok, const char *vname, const char *text, json_t *want) {
    size_t nw = 0, n = 0;
    int32_t *w = ids_of(want, &nw), *got = NULL;
    CHECK_OK(lt_tokenizer_encode_prompt(tok, text, strlen(text), &got, &n));
    CHECK_MSG(got && same_ids(got, n, w, nw), "%s: prompt %.30s...: %zu ids (first %d), transformers %zu (first %d)",
              vname, text, n, n ? got[0] : -1, nw, nw ? w[0] : -1);
    free(w);
    free(got);
}

/* the stream seeded with the prompt: pieces joined == want, each piece whole UTF-8 */
static void check_stream(const lt_tokenizer *tok, const char *vname, const int32_t *prompt, size_t np,
                         const int32_t *ids, size_t n, const char *want, size_t wl) {
    lt_token_stream *s = NULL;
    CHECK_OK(lt_token_stream_new(tok, 1, &s));
    if (!s) return;
    CHECK_OK(lt_token_stream_prefill(s, prompt, np));
    size_t cap = wl + 64, used = 0;
    char *all = calloc(1, cap + 256), piece[256];
    for (size_t i = 0; i <= n; i++) {
        size_t len = 0;
        lt_status st = i < n ? lt_token_stream_push(s, ids[i], piece, sizeof piece, &len)
                             : lt_token_stream_flush(s, piece, sizeof piece, &len);
        CHECK_MSG(st == LT_OK, "%s: stream step %zu: %s", vname, i, lt_last_error());
        if (st != LT_OK) break;
        CHECK_MSG(lt_utf8_check(piece, len) == len, "%s: piece %zu is not whole UTF-8", vname, i);
        if (used + len <= cap) memcpy(all + used, piece, len);
        used += len;
    }
    CHECK_MSG(used == wl && !memcmp(all, want, used), "%s: streamed '%.*s', Hugging Face '%s'", vname,
              (int)(used < cap ? used : cap), all, want);
    free(all);
    lt_token_stream_free(s);
}

int main(void) {
    json_error_t je;
    json_t *root = json_load_file(LT_REPO_ROOT "/tests/tok/continuation/refs.json", JSON_ALLOW_NUL, &je);
    if (!root) { fprintf(stderr, "refs.json: %s\n", je.text); return 1; }
    size_t vi, n_cases = 0, n_differ = 0;
    json_t *v;
    json_array_foreach(json_object_get(root, "vocabs"), vi, v) {
        const char *vname = json_string_value(json_object_get(v, "name"));
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/%s", LT_REPO_ROOT, json_string_value(json_object_get(v, "dir")));
        lt_tokenizer *tok = NULL;
        CHECK_OK(lt_tokenizer_load(dir, &tok));
        if (!tok) continue;
        int byte_level = !strcmp(vname, "qwen2") || !strcmp(vname, "bpe256");
        size_t pi;
        json_t *p;
        json_array_foreach(json_object_get(v, "prompts"), pi, p) {
            const char *prompt = json_string_value(json_object_get(p, "prompt"));
            check_prompt_ids(tok, vname, prompt, json_object_get(p, "prompt_ids"));
            if (json_object_get(p, "chat_text"))
                check_prompt_ids(tok, vname, json_string_value(json_object_get(p, "chat_text")),
                                 json_object_get(p, "chat_ids"));
            size_t np = 0, ci;
            int32_t *pids = ids_of(json_object_get(p, "prompt_ids"), &np);
            json_t *c;
            json_array_foreach(json_object_get(p, "cases"), ci, c) {
                size_t n = 0, tl = 0;
                int32_t *ids = ids_of(json_object_get(c, "new"), &n);
                const char *want = json_string_value(json_object_get(c, "text"));
                size_t wl = json_string_length(json_object_get(c, "text"));
                const char *alone = json_string_value(json_object_get(c, "alone"));
                size_t al = json_string_length(json_object_get(c, "alone"));
                int differ = wl != al || memcmp(want, alone, wl);
                check_stream(tok, vname, pids, np, ids, n, want, wl);
                char *text = NULL;
                CHECK_OK(lt_tokenizer_decode_continuation(tok, pids, np, ids, n, 1, &text, &tl));
                CHECK_MSG(text && tl == wl && !memcmp(text, want, tl),
                          "%s: decode_continuation '%s', Hugging Face '%s'", vname, text ? text : "(null)", want);
                if (byte_level) CHECK_MSG(!differ, "%s: byte-level text depends on the prompt", vname);
                n_differ += differ;
                n_cases++;
                free(text);
                free(ids);
            }
            free(pids);
        }
        lt_tokenizer_free(tok);
    }
    /* the references must hold cases where decoding the new ids alone is wrong (the bug) */
    CHECK_MSG(n_differ > 0, "no case where the prompt changes the text: the references test nothing");
    printf("%zu cases, %zu where decoding the new ids alone gives another text\n", n_cases, n_differ);
    json_decref(root);
    return lt_test_done("test_tok_continuation");
}

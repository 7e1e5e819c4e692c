/* tok_decode.c - decode (ids -> token strings -> ByteLevel bytes -> lossy UTF-8, as tokenizers'
 * TokenizerImpl::decode with the ByteLevel decoder) and the incremental token stream that only
 * releases complete UTF-8. Unknown ids are skipped, as tokenizers' filter_map does. */
#include "tok/tok.h"
#include <stdlib.h>
#include <string.h>

/* Appends the bytes of token `id` (ByteLevel: each character back to its byte; a token with a
 * character outside the byte alphabet is emitted as its own UTF-8). */
static lt_status lt_tok_token_bytes(const lt_tokenizer *tok, int32_t id, int skip_special, lt_tok_buf *out) {
    if (id < 0 || id >= tok->n_ids || !tok->tokens[id]) return LT_OK;
    if (skip_special && tok->is_special[id]) return LT_OK;
    const unsigned char *s = (const unsigned char *)tok->tokens[id];
    size_t len = tok->token_len[id];
    size_t start = out->len;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int l = lt_utf8_decode(s + i, &cp);
        if (cp >= 0x180 || tok->char_byte[cp] < 0) { /* not byte-level: the raw text */
            out->len = start;
            return lt_tok_buf_put(out, s, len);
        }
        unsigned char b = (unsigned char)tok->char_byte[cp];
        LT_TRY(lt_tok_buf_put(out, &b, 1));
        i += (size_t)l;
    }
    return LT_OK;
}

static lt_status lt_tok_copy_out(const lt_tok_buf *b, char *text, size_t cap, size_t *len, const char *fn) {
    *len = b->len;
    if (text && cap > b->len) { memcpy(text, b->data ? b->data : "", b->len); text[b->len] = 0; return LT_OK; }
    if (text && cap == b->len) { memcpy(text, b->data ? b->data : "", b->len); return LT_OK; } /* fits without the NUL */
    return lt_error(LT_ERR_BUFFER_TOO_SMALL, "%s: %zu bytes of text do not fit in %zu (the needed size is in *len)", fn, b->len, cap);
}

lt_status lt_tokenizer_decode(const lt_tokenizer *tok, const int32_t *ids, size_t n, int32_t skip_special,
                              char *text, size_t cap, size_t *len) {
    LT_CHECK_ARG(tok && len && (ids || !n), "lt_tokenizer_decode: tok, len (and ids when n > 0) must not be NULL");
    LT_CHECK_ARG(text || !cap, "lt_tokenizer_decode: text is NULL with cap %zu", cap);
    lt_tok_buf raw = {0}, out = {0};
    lt_status st = LT_OK;
    for (size_t i = 0; i < n && st == LT_OK; i++) st = lt_tok_token_bytes(tok, ids[i], skip_special, &raw);
    if (st == LT_OK) lt_utf8_lossy_append(&out, (const unsigned char *)(raw.data ? raw.data : ""), raw.len, 0, &st);
    if (st == LT_OK) st = lt_tok_copy_out(&out, text, cap, len, "lt_tokenizer_decode");
    free(raw.data); free(out.data);
    return st;
}

/* ---- streaming ---- */
struct lt_token_stream {
    const lt_tokenizer *tok;
    int skip_special;
    lt_tok_buf pending; /* bytes not yet released: an incomplete UTF-8 sequence at most */
    lt_tok_buf out;
};

lt_status lt_token_stream_new(const lt_tokenizer *tok, int32_t skip_special, lt_token_stream **out) {
    LT_CHECK_ARG(tok && out, "lt_token_stream_new: tok and out must not be NULL");
    *out = calloc(1, sizeof **out);
    if (!*out) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory creating a token stream");
    (*out)->tok = tok;
    (*out)->skip_special = skip_special;
    return LT_OK;
}

void lt_token_stream_free(lt_token_stream *s) {
    if (!s) return;
    free(s->pending.data); free(s->out.data);
    free(s);
}

/* Releases what is complete; keeps an incomplete tail unless `final`. The output is kept in
 * s->out until it has been copied, so that a too-small buffer loses nothing. */
static lt_status lt_stream_release(lt_token_stream *s, int final, char *text, size_t cap, size_t *len, const char *fn) {
    lt_status st = LT_OK;
    size_t used = lt_utf8_lossy_append(&s->out, (const unsigned char *)(s->pending.data ? s->pending.data : ""),
                                       s->pending.len, !final, &st);
    if (st != LT_OK) return st;
    if (s->pending.data) { /* keep the unreleased tail at the front */
        memmove(s->pending.data, s->pending.data + used, s->pending.len - used);
        s->pending.len -= used;
        s->pending.data[s->pending.len] = 0;
    }
    st = lt_tok_copy_out(&s->out, text, cap, len, fn);
    if (st == LT_OK) s->out.len = 0;
    return st;
}

lt_status lt_token_stream_push(lt_token_stream *s, int32_t id, char *text, size_t cap, size_t *len) {
    LT_CHECK_ARG(s && len, "lt_token_stream_push: stream and len must not be NULL");
    LT_CHECK_ARG(text || !cap, "lt_token_stream_push: text is NULL with cap %zu", cap);
    LT_TRY(lt_tok_token_bytes(s->tok, id, s->skip_special, &s->pending));
    return lt_stream_release(s, 0, text, cap, len, "lt_token_stream_push");
}

lt_status lt_token_stream_flush(lt_token_stream *s, char *text, size_t cap, size_t *len) {
    LT_CHECK_ARG(s && len, "lt_token_stream_flush: stream and len must not be NULL");
    LT_CHECK_ARG(text || !cap, "lt_token_stream_flush: text is NULL with cap %zu", cap);
    return lt_stream_release(s, 1, text, cap, len, "lt_token_stream_flush");
}

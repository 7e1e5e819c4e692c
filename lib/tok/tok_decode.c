/* tok_decode.c - decode (ids -> token strings -> ByteLevel bytes -> lossy UTF-8, as tokenizers'
 * TokenizerImpl::decode with the ByteLevel decoder; for SentencePiece-style tokenizers the
 * Replace / ByteFallback / Fuse / Strip / Metaspace chain) and the incremental token stream that only
 * releases complete UTF-8, optionally seeded with the prompt it continues (then it emits what
 * decoding prompt + new ids gives beyond the prompt's text). Unknown ids are skipped, as
 * tokenizers' filter_map does. */
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

/* ---- decoders of the SentencePiece-style tokenizers ---- */
typedef struct lt_dec_list { lt_tok_buf *v; size_t n, cap; } lt_dec_list;

static void lt_dec_list_free(lt_dec_list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->v[i].data);
    free(l->v);
    l->v = NULL; l->n = l->cap = 0;
}
static lt_status lt_dec_list_push(lt_dec_list *l, const void *s, size_t len) {
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 16;
        lt_tok_buf *nv = realloc(l->v, nc * sizeof *nv);
        if (!nv) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory decoding");
        l->v = nv; l->cap = nc;
    }
    l->v[l->n] = (lt_tok_buf){0};
    lt_status st = lt_tok_buf_put(&l->v[l->n], s, len);
    if (st == LT_OK && !l->v[l->n].data) st = lt_tok_buf_put(&l->v[l->n], "", 1), l->v[l->n].len = 0;
    if (st != LT_OK) { free(l->v[l->n].data); return st; }
    l->n++;
    return LT_OK;
}

/* <0xNN> as tokenizers' ByteFallback reads it: 6 bytes, "<0x", two characters u8::from_str_radix
 * accepts in base 16 (an optional '+' then hex digits), ">". */
static int lt_dec_byte_token(const char *t, size_t len, unsigned char *out) {
    if (len != 6 || memcmp(t, "<0x", 3) || t[5] != '>') return 0;
    unsigned v = 0;
    for (int i = 3; i < 5; i++) {
        char c = t[i];
        if (i == 3 && c == '+') continue;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return 0;
        v = v * 16 + (unsigned)d;
    }
    *out = (unsigned char)v;
    return 1;
}

static lt_status lt_dec_replace(lt_tok_buf *b, const char *a, size_t al, const char *r, size_t rl) {
    if (b->len < al) return LT_OK;
    lt_tok_buf o = {0};
    lt_status st = LT_OK;
    size_t i = 0, from = 0;
    while (i + al <= b->len && st == LT_OK) {
        if (!memcmp(b->data + i, a, al)) {
            st = lt_tok_buf_put(&o, b->data + from, i - from);
            if (st == LT_OK) st = lt_tok_buf_put(&o, r, rl);
            i += al; from = i;
        } else i++;
    }
    if (st == LT_OK) st = lt_tok_buf_put(&o, b->data + from, b->len - from);
    if (st == LT_OK && !o.data) st = lt_tok_buf_put(&o, "", 1), o.len = 0;
    if (st != LT_OK) { free(o.data); return st; }
    free(b->data);
    *b = o;
    return LT_OK;
}

/* Runs the decoder steps over the token strings (tokenizers' decode_chain) and joins them. */
static lt_status lt_dec_chain(const lt_tokenizer *tok, const int32_t *ids, size_t n, int skip_special, lt_tok_buf *out) {
    lt_dec_list l = {0}, nl = {0};
    lt_status st = LT_OK;
    for (size_t i = 0; i < n && st == LT_OK; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= tok->n_ids || !tok->tokens[id]) continue;
        if (skip_special && tok->is_special[id]) continue;
        st = lt_dec_list_push(&l, tok->tokens[id], tok->token_len[id]);
    }
    for (int d = 0; d < tok->n_dec && st == LT_OK; d++) {
        const lt_tok_dec *dec = &tok->dec[d];
        switch (dec->kind) {
        case LT_DEC_REPLACE:
            for (size_t i = 0; i < l.n && st == LT_OK; i++) st = lt_dec_replace(&l.v[i], dec->a, dec->al, dec->b, dec->bl);
            break;
        case LT_DEC_METASPACE:
            for (size_t i = 0; i < l.n && st == LT_OK; i++)
                st = lt_dec_replace(&l.v[i], dec->a, dec->al, i == 0 && dec->start ? "" : " ", i == 0 && dec->start ? 0 : 1);
            break;
        case LT_DEC_FUSE:
            if (l.n <= 1) break;
            for (size_t i = 1; i < l.n && st == LT_OK; i++) st = lt_tok_buf_put(&l.v[0], l.v[i].data, l.v[i].len);
            for (size_t i = 1; i < l.n; i++) free(l.v[i].data);
            l.n = 1;
            break;
        case LT_DEC_STRIP:
            for (size_t i = 0; i < l.n; i++) {
                lt_tok_buf *b = &l.v[i];
                size_t s0 = 0, e0 = b->len;
                for (int k = 0; k < dec->start && s0 + dec->al <= e0 && !memcmp(b->data + s0, dec->a, dec->al); k++) s0 += dec->al;
                for (int k = 0; k < dec->stop && e0 >= s0 + dec->al && !memcmp(b->data + e0 - dec->al, dec->a, dec->al); k++) e0 -= dec->al;
                memmove(b->data, b->data + s0, e0 - s0);
                b->len = e0 - s0;
                b->data[b->len] = 0;
            }
            break;
        case LT_DEC_BYTEFALLBACK: {
            unsigned char *bytes = malloc(l.n + 1);
            size_t nb = 0;
            if (!bytes) { st = lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory decoding"); break; }
            for (size_t i = 0; i <= l.n && st == LT_OK; i++) {
                unsigned char b;
                if (i < l.n && lt_dec_byte_token(l.v[i].data, l.v[i].len, &b)) { bytes[nb++] = b; continue; }
                if (nb) {
                    if (lt_utf8_check((const char *)bytes, nb) == nb) st = lt_dec_list_push(&nl, bytes, nb);
                    else for (size_t k = 0; k < nb && st == LT_OK; k++) st = lt_dec_list_push(&nl, "\xEF\xBF\xBD", 3);
                    nb = 0;
                }
                if (i < l.n && st == LT_OK) st = lt_dec_list_push(&nl, l.v[i].data, l.v[i].len);
            }
            free(bytes);
            lt_dec_list_free(&l);
            l = nl;
            nl = (lt_dec_list){0};
            break;
        }
        }
    }
    for (size_t i = 0; i < l.n && st == LT_OK; i++) {
        if (i && tok->dec_join_space) st = lt_tok_buf_put(out, " ", 1);
        if (st == LT_OK) st = lt_tok_buf_put(out, l.v[i].data, l.v[i].len);
    }
    lt_dec_list_free(&l);
    lt_dec_list_free(&nl);
    return st;
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
    if (tok->char_level) st = lt_dec_chain(tok, ids, n, skip_special, &out);
    else {
        for (size_t i = 0; i < n && st == LT_OK; i++) st = lt_tok_token_bytes(tok, ids[i], skip_special, &raw);
        if (st == LT_OK) lt_utf8_lossy_append(&out, (const unsigned char *)(raw.data ? raw.data : ""), raw.len, 0, &st);
    }
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
    /* SentencePiece-style decoders (tokenizers' DecodeStream): the ids since the window start,
     * how many of them form the prefix, and the prefix's decoded text */
    int32_t *ids;
    size_t n_ids, cap_ids, prefix_index;
    lt_tok_buf prefix;
};

/* Decodes ids[0..n) into a fresh buffer (data may stay NULL when empty). */
static lt_status lt_stream_decode(const lt_token_stream *s, const int32_t *ids, size_t n, lt_tok_buf *b) {
    *b = (lt_tok_buf){0};
    lt_status st = lt_dec_chain(s->tok, ids, n, s->skip_special, b);
    if (st != LT_OK) { free(b->data); *b = (lt_tok_buf){0}; }
    return st;
}

/* One step of the window decode: when the text of the window grew and does not end in U+FFFD
 * (or `final`), the new part beyond the prefix is appended to s->out and the window moves on. */
static lt_status lt_stream_step(lt_token_stream *s, int final) {
    lt_tok_buf all;
    LT_TRY(lt_stream_decode(s, s->ids, s->n_ids, &all));
    lt_status st = LT_OK;
    int ends_bad = all.len >= 3 && !memcmp(all.data + all.len - 3, "\xEF\xBF\xBD", 3);
    /* a window that ends in a <0xNN> byte token waits for the next token: ByteFallback turns a
     * run of bytes that is not valid UTF-8 as a whole into one U+FFFD per byte, so a byte that
     * reads as text now (0x15) can still become U+FFFD when a stray continuation byte follows */
    const lt_tokenizer *tok = s->tok;
    size_t k = s->n_ids;
    while (k > 0 && (s->ids[k - 1] < 0 || s->ids[k - 1] >= tok->n_ids || !tok->tokens[s->ids[k - 1]] ||
                     (s->skip_special && tok->is_special[s->ids[k - 1]])))
        k--; /* skipped ids do not separate byte runs */
    if (tok->is_fb && k > 0 && tok->is_fb[s->ids[k - 1]]) ends_bad = 1;
    /* the text beyond the prefix; where the prefix's text changed (a prompt that ended inside a
     * character, now completed), beyond the part both share, on a character boundary */
    size_t keep = 0;
    while (keep < s->prefix.len && keep < all.len && all.data[keep] == s->prefix.data[keep]) keep++;
    while (keep > 0 && keep < all.len && ((unsigned char)all.data[keep] & 0xC0) == 0x80) keep--;
    if (all.len > keep && (!ends_bad || final)) {
        st = lt_tok_buf_put(&s->out, all.data + keep, all.len - keep);
        if (st == LT_OK) {
            size_t drop = s->prefix_index;
            memmove(s->ids, s->ids + drop, (s->n_ids - drop) * sizeof(int32_t));
            s->n_ids -= drop;
            s->prefix_index = s->n_ids;
            free(s->prefix.data);
            st = lt_stream_decode(s, s->ids, s->n_ids, &s->prefix);
        }
    }
    free(all.data);
    return st;
}

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
    free(s->pending.data); free(s->out.data); free(s->ids); free(s->prefix.data);
    free(s);
}

/* Moves what became complete with `id` (or, with `final`, everything left: an incomplete tail
 * becomes U+FFFD) into s->out. The output is kept in s->out until it has been copied, so that a
 * too-small buffer loses nothing. */
static lt_status lt_stream_advance(lt_token_stream *s, int32_t id, int final) {
    if (s->tok->char_level) {
        if (!final) {
            if (s->n_ids == s->cap_ids) {
                size_t nc = s->cap_ids ? s->cap_ids * 2 : 16;
                int32_t *ni = realloc(s->ids, nc * sizeof *ni);
                if (!ni) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory in a token stream");
                s->ids = ni; s->cap_ids = nc;
            }
            s->ids[s->n_ids++] = id;
        }
        return lt_stream_step(s, final);
    }
    if (!final) LT_TRY(lt_tok_token_bytes(s->tok, id, s->skip_special, &s->pending));
    lt_status st = LT_OK;
    size_t used = lt_utf8_lossy_append(&s->out, (const unsigned char *)(s->pending.data ? s->pending.data : ""),
                                       s->pending.len, !final, &st);
    if (st != LT_OK) return st;
    if (s->pending.data) { /* keep the unreleased tail at the front */
        memmove(s->pending.data, s->pending.data + used, s->pending.len - used);
        s->pending.len -= used;
        s->pending.data[s->pending.len] = 0;
    }
    return LT_OK;
}

static lt_status lt_stream_take(lt_token_stream *s, char *text, size_t cap, size_t *len, const char *fn) {
    lt_status st = lt_tok_copy_out(&s->out, text, cap, len, fn);
    if (st == LT_OK) s->out.len = 0;
    return st;
}

lt_status lt_token_stream_push(lt_token_stream *s, int32_t id, char *text, size_t cap, size_t *len) {
    LT_CHECK_ARG(s && len, "lt_token_stream_push: stream and len must not be NULL");
    LT_CHECK_ARG(text || !cap, "lt_token_stream_push: text is NULL with cap %zu", cap);
    LT_TRY(lt_stream_advance(s, id, 0));
    return lt_stream_take(s, text, cap, len, "lt_token_stream_push");
}

lt_status lt_token_stream_flush(lt_token_stream *s, char *text, size_t cap, size_t *len) {
    LT_CHECK_ARG(s && len, "lt_token_stream_flush: stream and len must not be NULL");
    LT_CHECK_ARG(text || !cap, "lt_token_stream_flush: text is NULL with cap %zu", cap);
    LT_TRY(lt_stream_advance(s, -1, 1));
    return lt_stream_take(s, text, cap, len, "lt_token_stream_flush");
}

/* A prompt token where the window may start: one that decodes to text of its own (not skipped,
 * not a <0xNN> byte that may continue a character begun before it). */
static int lt_stream_window_start(const lt_token_stream *s, int32_t id) {
    const lt_tokenizer *tok = s->tok;
    if (id < 0 || id >= tok->n_ids || !tok->tokens[id]) return 0;
    if (s->skip_special && tok->is_special[id]) return 0;
    return !(tok->is_fb && tok->is_fb[id]);
}

lt_status lt_token_stream_prefill(lt_token_stream *s, const int32_t *ids, size_t n) {
    LT_CHECK_ARG(s && (ids || !n), "lt_token_stream_prefill: stream (and ids when n > 0) must not be NULL");
    s->pending.len = 0;
    s->out.len = 0;
    s->n_ids = s->prefix_index = 0;
    free(s->prefix.data);
    s->prefix = (lt_tok_buf){0};
    if (!n) return LT_OK;
    if (s->tok->char_level) {
        /* the last few prompt tokens, from one that starts a piece of text: the decoder's
         * start-of-text rules (Strip's leading space, Metaspace's prepend) then act on the window's
         * first token in both the prefix and the longer decode, never on a new token */
        size_t w = n > 4 ? n - 4 : 0;
        while (w > 0 && !lt_stream_window_start(s, ids[w])) w--;
        size_t k = n - w;
        if (k > s->cap_ids) {
            int32_t *ni = realloc(s->ids, k * sizeof *ni);
            if (!ni) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory in a token stream");
            s->ids = ni;
            s->cap_ids = k;
        }
        memcpy(s->ids, ids + w, k * sizeof *ids);
        s->n_ids = s->prefix_index = k;
        lt_status st = lt_stream_decode(s, s->ids, s->n_ids, &s->prefix);
        if (st != LT_OK) s->n_ids = s->prefix_index = 0;
        return st;
    }
    /* byte-level: the bytes of a character the prompt leaves unfinished wait for the new tokens
     * (nothing when the prompt ends on a whole character, as an encoded text always does) */
    lt_tok_buf raw = {0}, tmp = {0};
    lt_status st = LT_OK;
    for (size_t i = 0; i < n && st == LT_OK; i++) st = lt_tok_token_bytes(s->tok, ids[i], s->skip_special, &raw);
    size_t used = 0;
    if (st == LT_OK && raw.len) used = lt_utf8_lossy_append(&tmp, (const unsigned char *)raw.data, raw.len, 1, &st);
    if (st == LT_OK && used < raw.len) st = lt_tok_buf_put(&s->pending, raw.data + used, raw.len - used);
    free(raw.data);
    free(tmp.data);
    return st;
}

lt_status lt_tokenizer_decode_continuation(const lt_tokenizer *tok, const int32_t *prompt, size_t n_prompt,
                                           const int32_t *ids, size_t n, int32_t skip_special, char **text,
                                           size_t *len) {
    LT_CHECK_ARG(tok && text && len && (prompt || !n_prompt) && (ids || !n),
                 "lt_tokenizer_decode_continuation: tok, text, len (and the id arrays) must not be NULL");
    *text = NULL;
    *len = 0;
    lt_token_stream *s = NULL;
    LT_TRY(lt_token_stream_new(tok, skip_special, &s));
    lt_status st = lt_token_stream_prefill(s, prompt, n_prompt);
    for (size_t i = 0; i <= n && st == LT_OK; i++) st = lt_stream_advance(s, i < n ? ids[i] : -1, i == n);
    if (st == LT_OK && !s->out.data) st = lt_tok_buf_put(&s->out, "", 1), s->out.len = 0;
    lt_tok_buf out = {0};
    if (st == LT_OK) { out = s->out; s->out = (lt_tok_buf){0}; }
    lt_token_stream_free(s);
    if (st != LT_OK) { free(out.data); return st; }
    *text = out.data;
    *len = out.len;
    return LT_OK;
}

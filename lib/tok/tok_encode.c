/* tok_encode.c - the encode pipeline (tokenizers' TokenizerImpl::encode_single_sequence):
 * added tokens matched on the raw text first (leftmost-longest, with lstrip / rstrip /
 * single_word), then per remaining segment the normalizer, the added tokens marked normalized,
 * the pre-tokenizer and byte-level BPE; the post-processor's tokens when add_special.
 * Also the internal entry points with byte offsets and on several threads (tok.h). */
#include "tok/tok.h"
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

typedef struct lt_enc {
    const lt_tokenizer *tok;
    int want_offsets;
    int32_t *ids; uint16_t *lens; size_t n, cap; /* lens: bytes of the piece (scratch per piece) */
    uint32_t *offs;                              /* [2*cap] when want_offsets */
    size_t offs_cap;
    pcre2_match_data *md;
    lt_tok_pieces pieces, tmp;
} lt_enc;

static lt_status lt_enc_offs_reserve(lt_enc *e, size_t need) {
    if (need <= e->offs_cap) return LT_OK;
    size_t nc = e->offs_cap ? e->offs_cap * 2 : 64;
    while (nc < need) nc *= 2;
    uint32_t *no = realloc(e->offs, nc * 2 * sizeof(uint32_t));
    if (!no) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory growing token offsets");
    e->offs = no; e->offs_cap = nc;
    return LT_OK;
}

static lt_status lt_enc_push(lt_enc *e, int32_t id, uint32_t s, uint32_t end) {
    if (e->n == e->cap) {
        size_t nc = e->cap ? e->cap * 2 : 64;
        int32_t *ni = realloc(e->ids, nc * sizeof(int32_t));
        if (!ni) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory growing a token list");
        e->ids = ni;
        uint16_t *nl = realloc(e->lens, nc * sizeof(uint16_t));
        if (!nl) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory growing a token list");
        e->lens = nl;
        e->cap = nc;
    }
    e->ids[e->n] = id;
    if (e->want_offsets) {
        LT_TRY(lt_enc_offs_reserve(e, e->n + 1));
        e->offs[2 * e->n] = s; e->offs[2 * e->n + 1] = end;
    }
    e->n++;
    return LT_OK;
}

/* ---- added tokens ---- */
/* Rust regex's Unicode \w, which tokenizers' single_word check uses: Alphabetic, marks, decimal
 * digits, connector punctuation and the join controls. */
static inline int lt_is_word_char(uint32_t cp) {
    if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
    if (cp == 0x200C || cp == 0x200D || (cp >= 0x24B6 && cp <= 0x24E9)) return 1;
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) || (c >= UTF8PROC_CATEGORY_MN && c <= UTF8PROC_CATEGORY_ME) ||
           c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_PC;
}
static inline int lt_is_space(uint32_t cp) {
    return (cp >= 9 && cp <= 13) || cp == 32 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}
/* The code point that ends at s[end) (s[0..end) valid UTF-8). */
static uint32_t lt_last_cp(const char *s, size_t end) {
    size_t i = end;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--;
    if (i > 0) i--;
    uint32_t cp;
    lt_utf8_decode((const unsigned char *)s + i, &cp);
    return cp;
}

typedef struct lt_added_match { uint32_t s, e; int32_t id; } lt_added_match;

/* tokenizers' AddedVocabulary::find_matches over text[len] for the tokens of one kind
 * (normalized = 0: content on raw text; 1: normalized content on normalized text). */
static lt_status lt_find_added(const lt_tokenizer *tok, const char *text, size_t len, int normalized,
                               lt_added_match **out, size_t *n_out) {
    const uint8_t *first = normalized ? tok->added_norm_first : tok->added_first;
    lt_added_match *m = NULL;
    size_t n = 0, cap = 0;
    size_t start_offset = 0;
    for (size_t pos = 0; pos < len;) {
        if (!first[(unsigned char)text[pos]]) { pos++; continue; }
        int best = -1;
        size_t best_len = 0;
        for (int i = 0; i < tok->n_added; i++) {
            const lt_tok_added *a = &tok->added[i];
            if (a->normalized != normalized) continue;
            const char *c = normalized ? a->norm : a->content;
            size_t cl = normalized ? a->norm_len : a->len;
            if (cl > best_len && cl <= len - pos && !memcmp(text + pos, c, cl)) { best = i; best_len = cl; }
        }
        if (best < 0) { pos++; continue; }
        const lt_tok_added *a = &tok->added[best];
        size_t s = pos, e = pos + best_len;
        pos = e; /* non-overlapping: the next search starts after this match, kept or not */
        if (a->single_word) {
            int start_space = s == 0 || !lt_is_word_char(lt_last_cp(text, s));
            uint32_t nx = 0;
            if (e < len) lt_utf8_decode((const unsigned char *)text + e, &nx);
            int stop_space = e == len || !lt_is_word_char(nx);
            if (!start_space || !stop_space) continue;
        }
        if (a->lstrip) {
            size_t ns = s;
            while (ns > start_offset) {
                uint32_t cp = lt_last_cp(text, ns);
                if (!lt_is_space(cp)) break;
                size_t k = ns - 1;
                while (k > 0 && ((unsigned char)text[k] & 0xC0) == 0x80) k--;
                ns = k;
            }
            s = ns;
        }
        if (a->rstrip) {
            while (e < len) {
                uint32_t cp;
                int l = lt_utf8_decode((const unsigned char *)text + e, &cp);
                if (!lt_is_space(cp)) break;
                e += (size_t)l;
            }
            pos = e;
        }
        if (s < start_offset) s = start_offset;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            lt_added_match *nm = realloc(m, cap * sizeof *nm);
            if (!nm) { free(m); return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory matching added tokens"); }
            m = nm;
        }
        m[n++] = (lt_added_match){(uint32_t)s, (uint32_t)e, a->id};
        start_offset = e;
    }
    *out = m; *n_out = n;
    return LT_OK;
}

/* ---- one normalized text segment ---- */
static lt_status lt_enc_pieces(lt_enc *e, const char *norm, size_t nlen, const uint32_t *align, uint32_t base);

/* Pre-tokenizes and BPE-encodes norm[nlen]; offsets map through align (or base + identity).
 * A Metaspace pre-tokenizer first rewrites the segment (' ' -> replacement, then the replacement
 * put in front when the scheme says so: always, or first = only the segment that starts the
 * original text; never when it already starts with one), as tokenizers' Metaspace does per split. */
static lt_status lt_enc_normalized(lt_enc *e, const char *norm, size_t nlen, const uint32_t *align, uint32_t base) {
    const lt_tokenizer *tok = e->tok;
    if (!tok->metaspace) return lt_enc_pieces(e, norm, nlen, align, base);
    size_t spaces = 0;
    for (size_t i = 0; i < nlen; i++) spaces += norm[i] == ' ';
    size_t rl = (size_t)tok->ms_rep_len, cap = nlen + spaces * rl + rl;
    char *d = malloc(cap + 1);
    uint32_t *al = e->want_offsets ? malloc((cap + 1) * 2 * sizeof(uint32_t)) : NULL;
    if (!d || (e->want_offsets && !al)) { free(d); free(al); return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory encoding"); }
    size_t o = 0;
    uint32_t orig0 = base + (align && nlen ? align[0] : 0);
    int starts = (nlen >= rl && !memcmp(norm, tok->ms_rep, rl)) || (nlen && norm[0] == ' ');
    int prepend = !starts && (tok->ms_scheme == 0 || (tok->ms_scheme == 1 && orig0 == 0));
    if (prepend) {
        memcpy(d, tok->ms_rep, rl);
        if (al) for (size_t j = 0; j < rl; j++) al[2 * j] = al[2 * j + 1] = nlen ? (align ? align[0] : 0) : 0;
        o = rl;
    }
    for (size_t i = 0; i < nlen; i++) {
        uint32_t s0 = align ? align[2 * i] : (uint32_t)i, s1 = align ? align[2 * i + 1] : (uint32_t)i + 1;
        if (norm[i] == ' ') {
            memcpy(d + o, tok->ms_rep, rl);
            if (al) for (size_t j = 0; j < rl; j++) { al[2 * (o + j)] = s0; al[2 * (o + j) + 1] = s1; }
            o += rl;
        } else {
            d[o] = norm[i];
            if (al) { al[2 * o] = s0; al[2 * o + 1] = s1; }
            o++;
        }
    }
    d[o] = 0;
    lt_status st = lt_enc_pieces(e, d, o, al, base);
    free(d); free(al);
    return st;
}

static lt_status lt_enc_pieces(lt_enc *e, const char *norm, size_t nlen, const uint32_t *align, uint32_t base) {
    LT_TRY(lt_tok_pretokenize(e->tok, norm, nlen, e->md, &e->pieces, &e->tmp));
    unsigned char small[256];
    for (size_t i = 0; i < e->pieces.n; i++) {
        lt_tok_piece p = e->pieces.p[i];
        const unsigned char *bytes = (const unsigned char *)norm + p.start;
        size_t bl = p.end - p.start;
        unsigned char *heap = NULL;
        if (p.prefix) {
            bl += 1;
            unsigned char *buf = bl <= sizeof small ? small : (heap = malloc(bl));
            if (!buf) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory encoding");
            buf[0] = ' ';
            memcpy(buf + 1, norm + p.start, bl - 1);
            bytes = buf;
        }
        size_t n0 = e->n;
        lt_status st = lt_tok_bpe(e->tok, bytes, bl, &e->ids, e->want_offsets ? &e->lens : NULL, &e->n, &e->cap);
        free(heap);
        if (st != LT_OK) return st;
        if (e->want_offsets) {
            LT_TRY(lt_enc_offs_reserve(e, e->n));
            /* also keep lens' capacity in step with ids (lt_tok_bpe grew both) */
            int64_t at = p.prefix ? -1 : 0; /* byte position in the piece, -1 = the virtual space */
            for (size_t k = n0; k < e->n; k++) {
                int64_t s = at, en = at + e->lens[k];
                at = en;
                /* piece bytes [s, en) -> normalized [p.start + s, p.start + en), the virtual space clamps */
                int64_t ns = (int64_t)p.start + (s < 0 ? 0 : s), ne = (int64_t)p.start + en;
                uint32_t os, oe;
                if (ne <= ns) { /* only the virtual space: an empty range where it was put */
                    if (!align) os = base + (uint32_t)ns;
                    else os = base + (ns < (int64_t)nlen ? align[2 * ns] : (nlen ? align[2 * (nlen - 1) + 1] : 0));
                    oe = os;
                } else if (align) {
                    os = base + align[2 * ns]; oe = base + align[2 * (ne - 1) + 1];
                } else {
                    os = base + (uint32_t)ns; oe = base + (uint32_t)ne;
                }
                e->offs[2 * k] = os; e->offs[2 * k + 1] = oe;
            }
        }
    }
    return LT_OK;
}

/* A raw segment text[s, end) without non-normalized added tokens. */
static lt_status lt_enc_segment(lt_enc *e, const char *text, size_t s, size_t end) {
    const lt_tokenizer *tok = e->tok;
    if (end <= s) return LT_OK;
    if (!tok->n_norms && !tok->has_normalized_added)
        return lt_enc_normalized(e, text + s, end - s, NULL, (uint32_t)s);
    char *norm = NULL;
    size_t nl = 0;
    uint32_t *align = NULL;
    lt_status st = lt_tok_normalize(tok, text + s, end - s, &norm, &nl, e->want_offsets ? &align : NULL);
    if (st != LT_OK) return st;
    if (!tok->has_normalized_added) {
        st = lt_enc_normalized(e, norm, nl, align, (uint32_t)s);
    } else {
        lt_added_match *m = NULL;
        size_t nm = 0;
        st = lt_find_added(tok, norm, nl, 1, &m, &nm);
        size_t prev = 0;
        for (size_t i = 0; i <= nm && st == LT_OK; i++) {
            size_t ms = i < nm ? m[i].s : nl;
            if (ms > prev) {
                /* a sub-range of the normalized text: shift the alignment with it */
                /* align values count from the segment start; without align, offsets are identity */
                st = lt_enc_normalized(e, norm + prev, ms - prev, align ? align + 2 * prev : NULL,
                                       (uint32_t)(align ? s : s + prev));
            }
            if (i < nm && st == LT_OK) {
                uint32_t os = (uint32_t)s + (align ? align[2 * m[i].s] : m[i].s);
                uint32_t oe = (uint32_t)s + (align ? align[2 * (m[i].e - 1) + 1] : m[i].e);
                st = lt_enc_push(e, m[i].id, os, oe);
                prev = m[i].e;
            }
        }
        free(m);
    }
    free(norm);
    free(align);
    return st;
}

static lt_status lt_enc_run(lt_enc *e, const char *text, size_t len, int add_special) {
    const lt_tokenizer *tok = e->tok;
    if (len > 0xFFFFFF00u) return lt_error(LT_ERR_INVALID_ARGUMENT, "a text of %zu bytes is too long to encode (4 GiB at most)", len);
    size_t bad = lt_utf8_check(text, len);
    if (bad != len) return lt_error(LT_ERR_UTF8, "text to encode: invalid UTF-8 at byte %zu (0x%02x)", bad, (unsigned char)text[bad]);
    e->md = pcre2_match_data_create(64, NULL);
    if (!e->md) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory creating regex match data");
    if (add_special)
        for (int i = 0; i < tok->n_post_prefix; i++) LT_TRY(lt_enc_push(e, tok->post_prefix[i], 0, 0));
    lt_added_match *m = NULL;
    size_t nm = 0;
    if (tok->n_added) LT_TRY(lt_find_added(tok, text, len, 0, &m, &nm));
    size_t prev = 0;
    lt_status st = LT_OK;
    for (size_t i = 0; i <= nm && st == LT_OK; i++) {
        size_t ms = i < nm ? m[i].s : len;
        st = lt_enc_segment(e, text, prev, ms);
        if (i < nm && st == LT_OK) {
            st = lt_enc_push(e, m[i].id, m[i].s, m[i].e);
            prev = m[i].e;
        }
    }
    free(m);
    if (st == LT_OK && add_special)
        for (int i = 0; i < tok->n_post_suffix && st == LT_OK; i++) st = lt_enc_push(e, tok->post_suffix[i], (uint32_t)len, (uint32_t)len);
    return st;
}

static void lt_enc_free(lt_enc *e) {
    free(e->ids); free(e->lens); free(e->offs);
    free(e->pieces.p); free(e->tmp.p);
    if (e->md) pcre2_match_data_free(e->md);
}

lt_status lt_tokenizer_encode_offsets(const lt_tokenizer *tok, const char *text, size_t len, int32_t add_special,
                                      int32_t **ids, uint32_t **offsets, size_t *n) {
    LT_CHECK_ARG(tok && ids && n && (text || !len), "lt_tokenizer_encode_offsets: tok, ids and n must not be NULL");
    *ids = NULL; *n = 0;
    if (offsets) *offsets = NULL;
    lt_enc e = {.tok = tok, .want_offsets = offsets != NULL};
    lt_status st = lt_enc_run(&e, text ? text : "", len, add_special);
    if (st != LT_OK) { lt_enc_free(&e); return st; }
    if (offsets) {
        /* widen to whole characters: a token holding part of a character gets all of it */
        for (size_t k = 0; k < e.n; k++) {
            uint32_t s = e.offs[2 * k], en = e.offs[2 * k + 1];
            while (s > 0 && s < len && ((unsigned char)text[s] & 0xC0) == 0x80) s--;
            while (en > 0 && en < len && ((unsigned char)text[en] & 0xC0) == 0x80) en++;
            e.offs[2 * k] = s; e.offs[2 * k + 1] = en;
        }
        *offsets = e.offs;
        e.offs = NULL;
        if (!*offsets) *offsets = calloc(2, sizeof(uint32_t));
    }
    *ids = e.ids ? e.ids : calloc(1, sizeof(int32_t));
    e.ids = NULL;
    *n = e.n;
    lt_enc_free(&e);
    if (!*ids || (offsets && !*offsets)) { free(*ids); *ids = NULL; if (offsets) { free(*offsets); *offsets = NULL; }
        return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory"); }
    return LT_OK;
}

lt_status lt_tokenizer_encode(const lt_tokenizer *tok, const char *text, size_t len, int32_t add_special,
                              int32_t *ids, size_t cap, size_t *n_ids) {
    LT_CHECK_ARG(tok && n_ids && (text || !len), "lt_tokenizer_encode: tok and n_ids must not be NULL");
    LT_CHECK_ARG(ids || !cap, "lt_tokenizer_encode: ids is NULL with cap %zu", cap);
    int32_t *v = NULL;
    size_t n = 0;
    LT_TRY(lt_tokenizer_encode_offsets(tok, text, len, add_special, &v, NULL, &n));
    *n_ids = n;
    if (n > cap) {
        free(v);
        return lt_error(LT_ERR_BUFFER_TOO_SMALL, "lt_tokenizer_encode: %zu ids do not fit in %zu (the needed count is in *n_ids)", n, cap);
    }
    if (n) memcpy(ids, v, n * sizeof(int32_t));
    free(v);
    return LT_OK;
}

/* ---- many texts on several threads ---- */
typedef struct lt_many_ctx {
    const lt_tokenizer *tok;
    const char *const *texts;
    const size_t *lens;
    size_t n;
    int32_t add_special;
    int32_t **ids;
    size_t *n_ids;
    atomic_size_t next;
    atomic_int failed;
    size_t fail_index;
    lt_status fail_status;
    char fail_msg[512];
    pthread_mutex_t mu;
} lt_many_ctx;

static void lt_many_worker(void *arg, int64_t t) {
    (void)t;
    lt_many_ctx *c = arg;
    for (;;) {
        if (atomic_load(&c->failed)) return;
        size_t i = atomic_fetch_add(&c->next, 1);
        if (i >= c->n) return;
        const char *s = c->texts[i];
        size_t len = c->lens ? c->lens[i] : (s ? strlen(s) : 0);
        lt_status st = lt_tokenizer_encode_offsets(c->tok, s, len, c->add_special, &c->ids[i], NULL, &c->n_ids[i]);
        if (st != LT_OK) {
            pthread_mutex_lock(&c->mu);
            if (!atomic_load(&c->failed) || i < c->fail_index) {
                c->fail_index = i; c->fail_status = st;
                snprintf(c->fail_msg, sizeof c->fail_msg, "%s", lt_last_error());
            }
            atomic_store(&c->failed, 1);
            pthread_mutex_unlock(&c->mu);
            return;
        }
    }
}

lt_status lt_tokenizer_encode_many(const lt_tokenizer *tok, const char *const *texts, const size_t *lens,
                                   size_t n_texts, int32_t add_special, int n_threads, int32_t **ids, size_t *n_ids) {
    LT_CHECK_ARG(tok && (texts || !n_texts) && ids && n_ids, "lt_tokenizer_encode_many: NULL argument");
    for (size_t i = 0; i < n_texts; i++) { ids[i] = NULL; n_ids[i] = 0; }
    lt_many_ctx c = {.tok = tok, .texts = texts, .lens = lens, .n = n_texts, .add_special = add_special,
                     .ids = ids, .n_ids = n_ids};
    atomic_init(&c.next, 0);
    atomic_init(&c.failed, 0);
    pthread_mutex_init(&c.mu, NULL);
    int nt = lt_threads(n_threads);
    if ((size_t)nt > n_texts) nt = (int)(n_texts ? n_texts : 1);
    lt_parallel_for(nt, nt, lt_many_worker, &c);
    pthread_mutex_destroy(&c.mu);
    if (atomic_load(&c.failed)) {
        for (size_t i = 0; i < n_texts; i++) { free(ids[i]); ids[i] = NULL; n_ids[i] = 0; }
        return lt_error(c.fail_status, "text %zu: %s", c.fail_index, c.fail_msg);
    }
    return LT_OK;
}

lt_status lt_tokenizer_encode_prompt(const lt_tokenizer *tok, const char *text, size_t len, int32_t **ids, size_t *n) {
    LT_CHECK_ARG(tok && ids && n && (text || !len), "lt_tokenizer_encode_prompt: tok, ids and n must not be NULL");
    *ids = NULL; *n = 0;
    int32_t *v = NULL;
    size_t nv = 0;
    LT_TRY(lt_tokenizer_encode_offsets(tok, text, len, 1, &v, NULL, &nv));
    /* the text's own tokens begin with the post-processor's leading ones (BOS text written by a
     * chat template): keep one copy, as apply_chat_template + add_special_tokens=False gives */
    size_t np = (size_t)tok->n_post_prefix;
    if (np && nv >= 2 * np && !memcmp(v, v + np, np * sizeof *v)) {
        memmove(v, v + np, (nv - np) * sizeof *v);
        nv -= np;
    }
    *ids = v;
    *n = nv;
    return LT_OK;
}

/* tok_norm.c - the normalizers of tokenizer.json (NFC, NFD, NFKC, NFKD through utf8proc,
 * Lowercase, Prepend and Replace with a String pattern), with an optional alignment from normalized bytes back to the original text so that
 * token offsets can be given in the caller's bytes. */
#include "tok/tok.h"
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

static utf8proc_option_t lt_norm_options(lt_tok_norm_kind k) {
    switch (k) {
    case LT_NORM_NFC: return UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    case LT_NORM_NFD: return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE;
    case LT_NORM_NFKC: return UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    case LT_NORM_NFKD: return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    default: return 0;
    }
}

/* One Unicode normalization of s[len] into a fresh buffer. */
static lt_status lt_norm_unicode(lt_tok_norm_kind k, const char *s, size_t len, char **out, size_t *out_len) {
    if (len == 0) {
        *out = calloc(1, 1); *out_len = 0;
        return *out ? LT_OK : lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory normalizing text");
    }
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &dst, lt_norm_options(k));
    if (n < 0) {
        free(dst);
        if (n == UTF8PROC_ERROR_NOMEM) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory normalizing text");
        return lt_error(LT_ERR_UTF8, "normalizing text: %s", utf8proc_errmsg(n));
    }
    *out = (char *)dst; *out_len = (size_t)n;
    return LT_OK;
}

/* Code points that NFC leaves alone wherever they stand: NFC_QC=Yes, combining class 0, and never
 * the second half of a canonical composition (checked against Python's unicodedata for Unicode 14:
 * Latin below U+0300, CJK symbols and kana without the combining marks, CJK ideographs, full-width
 * forms). Text made only of these is already NFC; most Chinese and English text is. */
static inline int lt_nfc_inert(uint32_t c) {
    return c < 0x300 || (c >= 0x4E00 && c < 0xA000) || (c >= 0x3000 && c < 0x302A) || (c >= 0x3030 && c < 0x3099) ||
           (c >= 0x309B && c < 0x3100) || (c >= 0xFF00 && c < 0xFFF0);
}

/* True when the normalization cannot change s. ASCII is stable under all four forms. */
static int lt_norm_is_identity(lt_tok_norm_kind k, const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    if (k != LT_NORM_NFC) {
        for (size_t i = 0; i < len; i++) if (u[i] >= 0x80) return 0;
        return 1;
    }
    for (size_t i = 0; i < len;) {
        if (u[i] < 0x80) { i++; continue; }
        uint32_t cp;
        i += (size_t)lt_utf8_decode(u + i, &cp);
        if (!lt_nfc_inert(cp)) return 0;
    }
    return 1;
}

static lt_status lt_norm_lower(const char *s, size_t len, const uint32_t *in_align, char **out, size_t *out_len,
                               uint32_t **out_align) {
    char *d = malloc(len * 2 + 4); /* a lowercase form needs at most twice the UTF-8 bytes (U+0130: 2 -> 3) */
    uint32_t *al = out_align ? malloc((len * 2 + 4) * 2 * sizeof(uint32_t)) : NULL;
    if (!d || (out_align && !al)) { free(d); free(al); return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory lowercasing text"); }
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int l = lt_utf8_decode((const unsigned char *)s + i, &cp);
        int w;
        /* Rust's char::to_lowercase, as tokenizers applies it char by char: the simple mapping,
         * except U+0130 whose full lowercase is two code points */
        if (cp == 0x130) { memcpy(d + o, "i\xcc\x87", 3); w = 3; }
        else w = lt_utf8_encode((uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), d + o);
        if (al) for (int j = 0; j < w; j++) { al[2 * (o + j)] = in_align[2 * i]; al[2 * (o + j) + 1] = in_align[2 * (i + l - 1) + 1]; }
        o += (size_t)w; i += (size_t)l;
    }
    d[o] = 0;
    *out = d; *out_len = o;
    if (out_align) *out_align = al;
    return LT_OK;
}

/* Normalizes chunk by chunk, each chunk starting where `boundary` says; returns 1 when the
 * concatenation equals `whole` (then out_align maps every output byte to its chunk's input range). */
static int lt_norm_chunked(lt_tok_norm_kind k, const char *s, size_t len, const uint32_t *in_align, const char *whole,
                           size_t whole_len, uint32_t *out_align, int ascii_only, lt_status *st) {
    size_t o = 0, cs = 0;
    *st = LT_OK;
    for (size_t i = 0; i <= len;) {
        uint32_t cp = 0;
        int l = 1;
        int cut = i == len;
        if (!cut) {
            l = lt_utf8_decode((const unsigned char *)s + i, &cp);
            if (i > cs) {
                if (ascii_only) cut = cp < 0x80;
                else cut = utf8proc_get_property((utf8proc_int32_t)cp)->combining_class == 0;
            }
        }
        if (cut && i > cs) {
            char *piece = NULL; size_t pl = 0;
            if ((*st = lt_norm_unicode(k, s + cs, i - cs, &piece, &pl)) != LT_OK) return 0;
            int ok = o + pl <= whole_len && !memcmp(whole + o, piece, pl);
            free(piece);
            if (!ok) return 0;
            for (size_t j = 0; j < pl; j++) { out_align[2 * (o + j)] = in_align[2 * cs]; out_align[2 * (o + j) + 1] = in_align[2 * (i - 1) + 1]; }
            o += pl;
            cs = i;
        }
        if (i == len) break;
        i += (size_t)l;
    }
    return o == whole_len;
}

/* Prepend (a before a non-empty text) and Replace (every a -> b, left to right, non-overlapping):
 * added bytes align with the first character, a replacement with the bytes it replaced. */
static lt_status lt_norm_edit(const lt_tok_norm *k, const char *s, size_t len, const uint32_t *in_align, char **out,
                              size_t *out_len, uint32_t **out_align) {
    size_t cap;
    if (k->kind == LT_NORM_PREPEND) cap = len + k->al;
    else {
        size_t hits = 0;
        for (size_t i = 0; i + k->al <= len;) {
            if (!memcmp(s + i, k->a, k->al)) { hits++; i += k->al; } else i++;
        }
        cap = len + hits * k->bl;
    }
    char *d = malloc(cap + 1);
    uint32_t *al = out_align ? malloc((cap + 1) * 2 * sizeof(uint32_t)) : NULL;
    if (!d || (out_align && !al)) { free(d); free(al); return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory normalizing text"); }
    size_t o = 0;
    if (k->kind == LT_NORM_PREPEND) {
        if (len) {
            memcpy(d, k->a, k->al);
            if (al) for (size_t j = 0; j < k->al; j++) { al[2 * j] = in_align[0]; al[2 * j + 1] = in_align[0]; }
            o = k->al;
        }
        memcpy(d + o, s, len);
        if (al) memcpy(al + 2 * o, in_align, len * 2 * sizeof(uint32_t));
        o += len;
    } else {
        for (size_t i = 0; i < len;) {
            if (i + k->al <= len && !memcmp(s + i, k->a, k->al)) {
                memcpy(d + o, k->b, k->bl);
                if (al) for (size_t j = 0; j < k->bl; j++) { al[2 * (o + j)] = in_align[2 * i]; al[2 * (o + j) + 1] = in_align[2 * (i + k->al - 1) + 1]; }
                o += k->bl; i += k->al;
            } else {
                d[o] = s[i];
                if (al) { al[2 * o] = in_align[2 * i]; al[2 * o + 1] = in_align[2 * i + 1]; }
                o++; i++;
            }
        }
    }
    d[o] = 0;
    *out = d; *out_len = o;
    if (out_align) *out_align = al;
    return LT_OK;
}

lt_status lt_tok_normalize(const lt_tokenizer *tok, const char *text, size_t len, char **out, size_t *out_len,
                           uint32_t **align) {
    char *cur = lt_strndup(text, len);
    size_t cl = len;
    uint32_t *cal = NULL;
    if (!cur) return LT_ERR_OUT_OF_MEMORY;
    if (align) {
        cal = malloc((len + 1) * 2 * sizeof(uint32_t));
        if (!cal) { free(cur); return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory normalizing text"); }
        /* identity: each byte maps to its whole character */
        for (size_t i = 0; i < len;) {
            uint32_t cp;
            int l = lt_utf8_decode((const unsigned char *)text + i, &cp);
            for (int j = 0; j < l; j++) { cal[2 * (i + j)] = (uint32_t)i; cal[2 * (i + j) + 1] = (uint32_t)(i + l); }
            i += (size_t)l;
        }
    }
    lt_status st = LT_OK;
    for (int n = 0; n < tok->n_norms && st == LT_OK; n++) {
        lt_tok_norm_kind k = tok->norms[n].kind;
        char *next = NULL;
        size_t nl = 0;
        uint32_t *nal = NULL;
        if (k == LT_NORM_PREPEND || k == LT_NORM_REPLACE) {
            st = lt_norm_edit(&tok->norms[n], cur, cl, cal, &next, &nl, align ? &nal : NULL);
        } else if (k == LT_NORM_LOWERCASE) {
            st = lt_norm_lower(cur, cl, cal, &next, &nl, align ? &nal : NULL);
        } else {
            if (lt_norm_is_identity(k, cur, cl)) continue;
            st = lt_norm_unicode(k, cur, cl, &next, &nl);
            if (st == LT_OK && align) {
                if (nl == cl && !memcmp(next, cur, cl)) { free(next); continue; }
                nal = malloc((nl + 1) * 2 * sizeof(uint32_t));
                if (!nal) st = lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory normalizing text");
                else if (!lt_norm_chunked(k, cur, cl, cal, next, nl, nal, 0, &st) && st == LT_OK &&
                         !lt_norm_chunked(k, cur, cl, cal, next, nl, nal, 1, &st) && st == LT_OK) {
                    /* no safe cut point: the whole text maps to the whole range */
                    for (size_t j = 0; j < nl; j++) { nal[2 * j] = cl ? cal[0] : 0; nal[2 * j + 1] = cl ? cal[2 * (cl - 1) + 1] : 0; }
                }
            }
        }
        if (st != LT_OK) { free(next); free(nal); break; }
        free(cur); cur = next; cl = nl;
        if (align) { free(cal); cal = nal; }
    }
    if (st != LT_OK) { free(cur); free(cal); return st; }
    *out = cur; *out_len = cl;
    if (align) *align = cal;
    return LT_OK;
}

/* tok_utf8.c - UTF-8 checks, decoding and the lossy conversion that decode uses (each maximal
 * invalid subpart becomes one U+FFFD, the policy of Rust's String::from_utf8_lossy, which
 * `tokenizers` applies after the ByteLevel decoder). */
#include "tok/tok.h"
#include <stdlib.h>
#include <string.h>

/* Length of the valid sequence at s[0..avail) (>0), 0 when invalid with `*bad` bytes to replace,
 * or -1 when the sequence is a valid but incomplete prefix running into the end. */
static int lt_utf8_seq(const unsigned char *s, size_t avail, size_t *bad) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    int need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) { need = 2; if (c == 0xE0) lo = 0xA0; else if (c == 0xED) hi = 0x9F; }
    else if (c >= 0xF0 && c <= 0xF4) { need = 3; if (c == 0xF0) lo = 0x90; else if (c == 0xF4) hi = 0x8F; }
    else { *bad = 1; return 0; }
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= avail) return -1;
        unsigned char d = s[k];
        unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (d < l || d > h) { *bad = (size_t)k; return 0; }
    }
    return need + 1;
}

size_t lt_utf8_check(const char *str, size_t len) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        /* ASCII fast path, 8 bytes at a time */
        while (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= len) break;
        if (s[i] < 0x80) { i++; continue; }
        size_t bad = 0;
        int n = lt_utf8_seq(s + i, len - i, &bad);
        if (n <= 0) return i;
        i += (size_t)n;
    }
    return len;
}

int lt_utf8_decode(const unsigned char *s, uint32_t *cp) {
    unsigned char c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    if (c < 0xE0) { *cp = ((uint32_t)(c & 0x1F) << 6) | (s[1] & 0x3F); return 2; }
    if (c < 0xF0) { *cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F); return 3; }
    *cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) | ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    return 4;
}

int lt_utf8_encode(uint32_t c, char *w) {
    if (c < 0x80) { w[0] = (char)c; return 1; }
    if (c < 0x800) { w[0] = (char)(0xC0 | (c >> 6)); w[1] = (char)(0x80 | (c & 63)); return 2; }
    if (c < 0x10000) {
        w[0] = (char)(0xE0 | (c >> 12)); w[1] = (char)(0x80 | ((c >> 6) & 63)); w[2] = (char)(0x80 | (c & 63));
        return 3;
    }
    w[0] = (char)(0xF0 | (c >> 18)); w[1] = (char)(0x80 | ((c >> 12) & 63));
    w[2] = (char)(0x80 | ((c >> 6) & 63)); w[3] = (char)(0x80 | (c & 63));
    return 4;
}

lt_status lt_tok_buf_put(lt_tok_buf *b, const void *data, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 256;
        while (nc < b->len + n + 1) nc *= 2;
        char *d = realloc(b->data, nc);
        if (!d) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory growing a text buffer to %zu bytes", nc);
        b->data = d; b->cap = nc;
    }
    if (n) memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = 0;
    return LT_OK;
}

size_t lt_utf8_lossy_append(lt_tok_buf *out, const unsigned char *s, size_t len, int keep_tail, lt_status *st) {
    static const char repl[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    size_t i = 0, run = 0; /* run: start of the pending valid bytes */
    *st = LT_OK;
    while (i < len) {
        if (s[i] < 0x80) { i++; continue; }
        size_t bad = 0;
        int n = lt_utf8_seq(s + i, len - i, &bad);
        if (n > 0) { i += (size_t)n; continue; }
        if ((*st = lt_tok_buf_put(out, s + run, i - run)) != LT_OK) return run;
        if (n < 0) {
            if (keep_tail) return i;
            *st = lt_tok_buf_put(out, repl, 3);
            return len;
        }
        if ((*st = lt_tok_buf_put(out, repl, 3)) != LT_OK) return i;
        i += bad;
        run = i;
    }
    *st = lt_tok_buf_put(out, s + run, len - run);
    return len;
}

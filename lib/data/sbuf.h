/* sbuf.h - a growable byte buffer for building strings inside lib/data (header-only). */
#ifndef LT_SBUF_H
#define LT_SBUF_H
#include "core/core.h"
#include <stdlib.h>
#include <string.h>

typedef struct lt_sbuf { char *p; size_t len, cap; } lt_sbuf; /* p[len] is kept NUL */

static inline lt_status lt_sbuf_reserve(lt_sbuf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return LT_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *p = lt_realloc(b->p, cap, "a text buffer");
    if (!p) return LT_ERR_OUT_OF_MEMORY;
    b->p = p;
    b->cap = cap;
    return LT_OK;
}
static inline lt_status lt_sbuf_add(lt_sbuf *b, const char *s, size_t n) {
    LT_TRY(lt_sbuf_reserve(b, n));
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
    return LT_OK;
}
static inline lt_status lt_sbuf_adds(lt_sbuf *b, const char *s) { return lt_sbuf_add(b, s, strlen(s)); }
static inline void lt_sbuf_free(lt_sbuf *b) { free(b->p); b->p = NULL; b->len = b->cap = 0; }
#endif

/* tok_json.c - the in-place JSON parser of tok_json.h: recursive descent over the buffer,
 * children collected on a scratch stack and copied into an arena when their container closes. */
#include "tok/tok_json.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LTJ_MAX_DEPTH 200

typedef struct ltj_block { struct ltj_block *next; size_t used, cap; ltj items[]; } ltj_block;

struct ltj_doc {
    const char *src;    /* the caller's buffer */
    size_t len;
    ltj_block *blocks;
    ltj root;
};

typedef struct ltj_parser {
    char *p, *end, *start;
    const char *name;
    ltj_doc *doc;
    ltj *stack;         /* pending children of open containers */
    size_t sp, scap;
    int depth;
} ltj_parser;

void ltj_where(const ltj_doc *doc, uint32_t pos, char *out, size_t cap) {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < pos && i < doc->len; i++) {
        if (doc->src[i] == '\n') { line++; col = 1; } else col++;
    }
    snprintf(out, cap, "line %zu, column %zu", line, col);
}

static lt_status ltj_fail(ltj_parser *ps, const char *p, const char *what) {
    char where[64];
    ltj_where(ps->doc, (uint32_t)(p - ps->start), where, sizeof where);
    return lt_error(LT_ERR_FORMAT, "%s: invalid JSON at %s (byte %zu): %s", ps->name, where, (size_t)(p - ps->start), what);
}

static ltj *ltj_alloc(ltj_doc *doc, size_t n) {
    ltj_block *b = doc->blocks;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        b = malloc(sizeof(ltj_block) + cap * sizeof(ltj));
        if (!b) return NULL;
        b->used = 0; b->cap = cap; b->next = doc->blocks; doc->blocks = b;
    }
    ltj *r = b->items + b->used;
    b->used += n;
    return r;
}

static lt_status ltj_push(ltj_parser *ps, const ltj *v) {
    if (ps->sp == ps->scap) {
        size_t nc = ps->scap ? ps->scap * 2 : 1024;
        ltj *ns = realloc(ps->stack, nc * sizeof(ltj));
        if (!ns) return lt_error(LT_ERR_OUT_OF_MEMORY, "%s: out of memory parsing JSON", ps->name);
        ps->stack = ns; ps->scap = nc;
    }
    ps->stack[ps->sp++] = *v;
    return LT_OK;
}

static void ltj_ws(ltj_parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t')) ps->p++;
}

static int ltj_hex4(const char *s, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

static char *ltj_put_utf8(char *w, uint32_t c) {
    if (c < 0x80) *w++ = (char)c;
    else if (c < 0x800) { *w++ = (char)(0xC0 | (c >> 6)); *w++ = (char)(0x80 | (c & 63)); }
    else if (c < 0x10000) { *w++ = (char)(0xE0 | (c >> 12)); *w++ = (char)(0x80 | ((c >> 6) & 63)); *w++ = (char)(0x80 | (c & 63)); }
    else { *w++ = (char)(0xF0 | (c >> 18)); *w++ = (char)(0x80 | ((c >> 12) & 63)); *w++ = (char)(0x80 | ((c >> 6) & 63)); *w++ = (char)(0x80 | (c & 63)); }
    return w;
}

/* At the opening quote. The unescaped text is written over the source (it is never longer). */
static lt_status ltj_string(ltj_parser *ps, ltj *out) {
    char *s = ++ps->p, *w = s;
    for (;;) {
        /* fast scan of the plain run */
        char *q = ps->p;
        while (q < ps->end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20) q++;
        if (w != ps->p) memmove(w, ps->p, (size_t)(q - ps->p));
        w += q - ps->p;
        ps->p = q;
        if (q >= ps->end) return ltj_fail(ps, s - 1, "unterminated string");
        if (*q == '"') break;
        if ((unsigned char)*q < 0x20) return ltj_fail(ps, q, "control character inside a string (escape it)");
        /* backslash */
        if (q + 1 >= ps->end) return ltj_fail(ps, q, "unterminated escape");
        char e = q[1];
        ps->p = q + 2;
        switch (e) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '/': *w++ = '/'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'n': *w++ = '\n'; break;
        case 'r': *w++ = '\r'; break;
        case 't': *w++ = '\t'; break;
        case 'u': {
            uint32_t c;
            if (ps->end - ps->p < 4 || !ltj_hex4(ps->p, &c)) return ltj_fail(ps, q, "bad \\u escape (want 4 hex digits)");
            ps->p += 4;
            if (c >= 0xD800 && c < 0xDC00) {
                uint32_t lo;
                if (ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u' && ltj_hex4(ps->p + 2, &lo) &&
                    lo >= 0xDC00 && lo < 0xE000) {
                    c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
                    ps->p += 6;
                } else return ltj_fail(ps, q, "lone UTF-16 high surrogate in \\u escape");
            } else if (c >= 0xDC00 && c < 0xE000) return ltj_fail(ps, q, "lone UTF-16 low surrogate in \\u escape");
            w = ltj_put_utf8(w, c);
            break;
        }
        default: return ltj_fail(ps, q, "unknown escape");
        }
    }
    out->type = LTJ_STR;
    out->n = (uint32_t)(w - s);
    out->u.str = s;
    ps->p++; /* the quote */
    *w = 0;  /* w <= closing quote position, which is consumed */
    return LT_OK;
}

static lt_status ltj_value(ltj_parser *ps, ltj *out);

static lt_status ltj_container(ltj_parser *ps, ltj *out, int is_obj) {
    char *open = ps->p++;
    if (++ps->depth > LTJ_MAX_DEPTH) return ltj_fail(ps, open, "nesting deeper than 200");
    size_t base = ps->sp;
    char close = is_obj ? '}' : ']';
    ltj_ws(ps);
    if (ps->p < ps->end && *ps->p == close) ps->p++;
    else {
        for (;;) {
            ltj v;
            ltj_ws(ps);
            if (is_obj) {
                if (ps->p >= ps->end || *ps->p != '"') return ltj_fail(ps, ps->p, "expected a string key");
                v.pos = (uint32_t)(ps->p - ps->start);
                LT_TRY(ltj_string(ps, &v));
                LT_TRY(ltj_push(ps, &v));
                ltj_ws(ps);
                if (ps->p >= ps->end || *ps->p != ':') return ltj_fail(ps, ps->p, "expected ':' after a key");
                ps->p++;
            }
            LT_TRY(ltj_value(ps, &v));
            LT_TRY(ltj_push(ps, &v));
            ltj_ws(ps);
            if (ps->p >= ps->end) return ltj_fail(ps, open, is_obj ? "unterminated object" : "unterminated array");
            if (*ps->p == ',') { ps->p++; continue; }
            if (*ps->p == close) { ps->p++; break; }
            return ltj_fail(ps, ps->p, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    size_t n = ps->sp - base;
    out->type = is_obj ? LTJ_OBJ : LTJ_ARR;
    out->n = (uint32_t)(is_obj ? n / 2 : n);
    out->u.items = NULL;
    if (n) {
        ltj *items = ltj_alloc(ps->doc, n);
        if (!items) return lt_error(LT_ERR_OUT_OF_MEMORY, "%s: out of memory parsing JSON", ps->name);
        memcpy(items, ps->stack + base, n * sizeof(ltj));
        out->u.items = items;
    }
    ps->sp = base;
    ps->depth--;
    return LT_OK;
}

static lt_status ltj_value(ltj_parser *ps, ltj *out) {
    ltj_ws(ps);
    if (ps->p >= ps->end) return ltj_fail(ps, ps->p, "unexpected end of input (a value was expected)");
    out->pos = (uint32_t)(ps->p - ps->start);
    char c = *ps->p;
    switch (c) {
    case '"': return ltj_string(ps, out);
    case '{': return ltj_container(ps, out, 1);
    case '[': return ltj_container(ps, out, 0);
    case 't': if (ps->end - ps->p >= 4 && !memcmp(ps->p, "true", 4)) { ps->p += 4; out->type = LTJ_TRUE; out->n = 0; return LT_OK; } break;
    case 'f': if (ps->end - ps->p >= 5 && !memcmp(ps->p, "false", 5)) { ps->p += 5; out->type = LTJ_FALSE; out->n = 0; return LT_OK; } break;
    case 'n': if (ps->end - ps->p >= 4 && !memcmp(ps->p, "null", 4)) { ps->p += 4; out->type = LTJ_NULL; out->n = 0; return LT_OK; } break;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            /* validate the JSON number grammar, then convert */
            char *q = ps->p;
            if (*q == '-') q++;
            if (q >= ps->end || !(*q >= '0' && *q <= '9')) return ltj_fail(ps, ps->p, "bad number");
            if (*q == '0') q++; else while (q < ps->end && *q >= '0' && *q <= '9') q++;
            if (q < ps->end && *q == '.') {
                q++;
                if (q >= ps->end || !(*q >= '0' && *q <= '9')) return ltj_fail(ps, ps->p, "bad number (digits must follow '.')");
                while (q < ps->end && *q >= '0' && *q <= '9') q++;
            }
            if (q < ps->end && (*q == 'e' || *q == 'E')) {
                q++;
                if (q < ps->end && (*q == '+' || *q == '-')) q++;
                if (q >= ps->end || !(*q >= '0' && *q <= '9')) return ltj_fail(ps, ps->p, "bad number exponent");
                while (q < ps->end && *q >= '0' && *q <= '9') q++;
            }
            char tmp[64];
            size_t nl = (size_t)(q - ps->p);
            if (nl <= 15 && *ps->p != '-') { /* a plain integer (vocabulary ids): no strtod */
                int plain = 1;
                uint64_t iv = 0;
                for (char *d = ps->p; d < q; d++) {
                    if (*d < '0' || *d > '9') { plain = 0; break; }
                    iv = iv * 10 + (uint64_t)(*d - '0');
                }
                if (plain) { out->u.num = (double)iv; out->type = LTJ_NUM; out->n = 0; ps->p = q; return LT_OK; }
            }
            if (nl >= sizeof tmp) {
                char *big = lt_strndup(ps->p, nl);
                if (!big) return LT_ERR_OUT_OF_MEMORY;
                out->u.num = strtod(big, NULL);
                free(big);
            } else {
                memcpy(tmp, ps->p, nl); tmp[nl] = 0;
                out->u.num = strtod(tmp, NULL);
            }
            out->type = LTJ_NUM; out->n = 0;
            ps->p = q;
            return LT_OK;
        }
    }
    return ltj_fail(ps, ps->p, "unexpected character (a value was expected)");
}

lt_status ltj_parse(char *buf, size_t len, const char *name, ltj_doc **out, const ltj **root) {
    *out = NULL; *root = NULL;
    if (len > 0xFFFFFFF0u) return lt_error(LT_ERR_FORMAT, "%s: larger than 4 GiB", name);
    ltj_doc *doc = calloc(1, sizeof *doc);
    if (!doc) return lt_error(LT_ERR_OUT_OF_MEMORY, "%s: out of memory", name);
    doc->src = buf; doc->len = len;
    ltj_parser ps = {.p = buf, .end = buf + len, .start = buf, .name = name, .doc = doc};
    if (len >= 3 && !memcmp(buf, "\xEF\xBB\xBF", 3)) ps.p += 3; /* a UTF-8 BOM */
    lt_status st = ltj_value(&ps, &doc->root);
    if (st == LT_OK) {
        ltj_ws(&ps);
        if (ps.p != ps.end) st = ltj_fail(&ps, ps.p, "trailing characters after the JSON value");
    }
    free(ps.stack);
    if (st != LT_OK) { ltj_free(doc); return st; }
    *out = doc; *root = &doc->root;
    return LT_OK;
}

void ltj_free(ltj_doc *doc) {
    if (!doc) return;
    ltj_block *b = doc->blocks;
    while (b) { ltj_block *n = b->next; free(b); b = n; }
    free(doc);
}

const ltj *ltj_get(const ltj *v, const char *key) {
    if (!v || v->type != LTJ_OBJ) return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < v->n; i++) {
        const ltj *k = &v->u.items[2 * i];
        if (k->n == kl && !memcmp(k->u.str, key, kl)) return &v->u.items[2 * i + 1];
    }
    return NULL;
}

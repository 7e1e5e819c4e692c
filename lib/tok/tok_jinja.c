/* tok_jinja.c - the chat-template interpreter of tok_jinja.h. Three stages: the template is cut
 * into text / {{ expression }} / {% statement %} parts with Jinja's whitespace rules
 * (trim_blocks, lstrip_blocks, '-' markers, one trailing newline dropped); the parts are parsed
 * into a small tree; the tree is evaluated over dynamically typed values. Everything lives in an
 * arena freed at the end of the render. */
#include "tok/tok_jinja.h"
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LT_JINJA_MAX_DEPTH 100        /* nesting of expressions and blocks */
#define LT_JINJA_MAX_STEPS 20000000u  /* evaluations per render */

/* ---- arena ---- */
typedef struct jblk { struct jblk *next; size_t used, cap; _Alignas(16) char data[]; } jblk;

typedef struct jv jv;
typedef struct jx jx;
typedef struct js js;
typedef struct jbody { js **s; size_t n; } jbody;

enum { JV_UNDEF, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT, JV_FUNC };
enum { JF_RAISE = 1, JF_NAMESPACE, JF_RANGE, JF_STRFTIME };
struct jv {
    int t;
    int64_t i;        /* bool, int, func id */
    double f;
    const char *s;    /* str */
    size_t n;         /* str bytes, list/dict entries */
    size_t cap;
    jv **items;       /* list items; dict keys */
    jv **vals;        /* dict values */
};

enum { E_LIT, E_VAR, E_ATTR, E_INDEX, E_SLICE, E_CALL, E_FILTER, E_TEST, E_NOT, E_NEG, E_BIN, E_AND, E_OR, E_COND,
       E_LIST, E_DICT };
enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_CAT, OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN };
struct jx {
    int k, op, neg;
    jv *lit;
    const char *name; size_t name_len;
    jx *a, *b, *c;
    jx **args; size_t nargs;
    const char **kwn; size_t *kwl; jx **kwv; size_t nkw;
    size_t pos;       /* offset in the template, for messages */
};

enum { S_TEXT, S_OUT, S_IF, S_FOR, S_SET, S_BREAK, S_CONTINUE };
struct js {
    int k;
    size_t pos;
    const char *text; size_t len;        /* TEXT */
    jx *e;                                /* OUT, SET value, FOR iterable */
    jx **conds; jbody *bodies; size_t nc; /* IF: conds[i] (NULL = else) */
    const char *tn[2]; size_t tl[2]; int nt; jbody body, els; jx *filter; /* FOR */
    const char *sn; size_t sl; const char *sa; size_t sal;               /* SET name[.attr] */
};

/* a part of the template */
enum { P_TEXT, P_EXPR, P_STMT };
typedef struct jpart { int k; const char *s; size_t n; size_t pos; } jpart;

typedef struct jvar { const char *name; size_t len; jv *v; } jvar;

typedef struct J {
    jblk *arena;
    const char *src; size_t src_len;
    jpart *parts; size_t np, pi;
    jvar *vars; size_t nv, vcap;
    lt_tok_buf *out;
    lt_status st;
    int brk, cont;      /* pending break / continue */
    int depth;          /* parser nesting (expressions and blocks), bounded against stack overflow */
    uint64_t steps;     /* statements and expressions evaluated, bounded against runaway loops */
    /* expression lexer: the part being read */
    const char *p, *end;
} J;

static void *ja(J *j, size_t n) {
    n = (n + 15) & ~(size_t)15;
    jblk *b = j->arena;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        b = malloc(sizeof(jblk) + cap);
        if (!b) return NULL;
        b->used = 0; b->cap = cap; b->next = j->arena; j->arena = b;
    }
    void *r = b->data + b->used;
    b->used += n;
    memset(r, 0, n);
    return r;
}

static void jline(J *j, size_t pos, int *line, int *col) {
    *line = 1; *col = 1;
    for (size_t i = 0; i < pos && i < j->src_len; i++) { if (j->src[i] == '\n') { (*line)++; *col = 1; } else (*col)++; }
}

/* Records an error naming the template position and a snippet of the offending text. */
static lt_status jerr(J *j, lt_status st, size_t pos, const char *fmt, ...) LT_PRINTF(4, 5);
static lt_status jerr(J *j, lt_status st, size_t pos, const char *fmt, ...) {
    if (j->st != LT_OK) return j->st;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int line, col;
    jline(j, pos, &line, &col);
    size_t sn = pos < j->src_len ? j->src_len - pos : 0;
    if (sn > 40) sn = 40;
    j->st = lt_error(st, "chat template, line %d column %d: %s (at \"%.*s\")", line, col, msg, (int)sn, j->src + (pos < j->src_len ? pos : 0));
    return j->st;
}

/* ---- values ---- */
static jv J_UNDEF = {.t = JV_UNDEF}, J_NONE = {.t = JV_NONE}, J_TRUE = {.t = JV_BOOL, .i = 1}, J_FALSE = {.t = JV_BOOL, .i = 0};

static jv *jv_str(J *j, const char *s, size_t n) {
    jv *v = ja(j, sizeof *v);
    char *c = ja(j, n + 1);
    if (!v || !c) return NULL;
    memcpy(c, s, n);
    v->t = JV_STR; v->s = c; v->n = n;
    return v;
}
static jv *jv_concat(J *j, const jv *a, const jv *b) {
    jv *v = ja(j, sizeof *v);
    char *c = ja(j, a->n + b->n + 1);
    if (!v || !c) return NULL;
    memcpy(c, a->s, a->n);
    memcpy(c + a->n, b->s, b->n);
    v->t = JV_STR; v->s = c; v->n = a->n + b->n;
    return v;
}
static jv *jv_int(J *j, int64_t i) { jv *v = ja(j, sizeof *v); if (v) { v->t = JV_INT; v->i = i; } return v; }
static jv *jv_float(J *j, double f) { jv *v = ja(j, sizeof *v); if (v) { v->t = JV_FLOAT; v->f = f; } return v; }
static jv *jv_bool(int b) { return b ? &J_TRUE : &J_FALSE; }
static jv *jv_list(J *j, size_t cap) {
    jv *v = ja(j, sizeof *v);
    if (!v) return NULL;
    v->t = JV_LIST; v->cap = cap ? cap : 1;
    v->items = ja(j, v->cap * sizeof(jv *));
    return v->items ? v : NULL;
}
static int jv_push(J *j, jv *l, jv *x) {
    if (l->n == l->cap) {
        size_t nc = l->cap * 2 + 4;
        jv **ni = ja(j, nc * sizeof(jv *));
        if (!ni) return 0;
        memcpy(ni, l->items, l->n * sizeof(jv *));
        l->items = ni;
        if (l->t == JV_DICT) {
            jv **nv = ja(j, nc * sizeof(jv *));
            if (!nv) return 0;
            memcpy(nv, l->vals, l->n * sizeof(jv *));
            l->vals = nv;
        }
        l->cap = nc;
    }
    l->items[l->n++] = x;
    return 1;
}
static jv *jv_dict(J *j) {
    jv *v = ja(j, sizeof *v);
    if (!v) return NULL;
    v->t = JV_DICT; v->cap = 4;
    v->items = ja(j, 4 * sizeof(jv *));
    v->vals = ja(j, 4 * sizeof(jv *));
    return v->items && v->vals ? v : NULL;
}
static jv *jv_dict_get(const jv *d, const char *k, size_t kl) {
    for (size_t i = 0; i < d->n; i++)
        if (d->items[i]->t == JV_STR && d->items[i]->n == kl && !memcmp(d->items[i]->s, k, kl)) return d->vals[i];
    return NULL;
}
static int jv_dict_set(J *j, jv *d, jv *k, jv *v) {
    if (k->t == JV_STR) {
        for (size_t i = 0; i < d->n; i++)
            if (d->items[i]->t == JV_STR && d->items[i]->n == k->n && !memcmp(d->items[i]->s, k->s, k->n)) { d->vals[i] = v; return 1; }
    }
    if (!jv_push(j, d, k)) return 0;
    d->vals[d->n - 1] = v;
    return 1;
}

static int jv_truthy(const jv *v) {
    switch (v->t) {
    case JV_UNDEF: case JV_NONE: return 0;
    case JV_BOOL: case JV_INT: return v->i != 0;
    case JV_FLOAT: return v->f != 0;
    case JV_STR: case JV_LIST: case JV_DICT: return v->n != 0;
    default: return 1;
    }
}

static int jv_eq(const jv *a, const jv *b) {
    int an = a->t == JV_INT || a->t == JV_BOOL || a->t == JV_FLOAT, bn = b->t == JV_INT || b->t == JV_BOOL || b->t == JV_FLOAT;
    if (an && bn) {
        double x = a->t == JV_FLOAT ? a->f : (double)a->i, y = b->t == JV_FLOAT ? b->f : (double)b->i;
        if (a->t != JV_FLOAT && b->t != JV_FLOAT) return a->i == b->i;
        return x == y;
    }
    if (a->t != b->t) return 0;
    switch (a->t) {
    case JV_UNDEF: case JV_NONE: return 1;
    case JV_STR: return a->n == b->n && !memcmp(a->s, b->s, a->n);
    case JV_LIST:
        if (a->n != b->n) return 0;
        for (size_t i = 0; i < a->n; i++) if (!jv_eq(a->items[i], b->items[i])) return 0;
        return 1;
    case JV_DICT:
        if (a->n != b->n) return 0;
        for (size_t i = 0; i < a->n; i++) {
            jv *o = a->items[i]->t == JV_STR ? jv_dict_get(b, a->items[i]->s, a->items[i]->n) : NULL;
            if (!o || !jv_eq(a->vals[i], o)) return 0;
        }
        return 1;
    default: return a == b;
    }
}

/* Python's str() / repr() of a value. */
static lt_status jv_write(J *j, lt_tok_buf *b, const jv *v, int repr);
static lt_status jv_write_str_repr(lt_tok_buf *b, const char *s, size_t n) {
    /* Python picks single quotes unless the text has a single quote and no double quote */
    int sq = memchr(s, '\'', n) != NULL, dq = memchr(s, '"', n) != NULL;
    char q = sq && !dq ? '"' : '\'';
    LT_TRY(lt_tok_buf_put(b, &q, 1));
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '\\') LT_TRY(lt_tok_buf_put(b, "\\\\", 2));
        else if (c == (unsigned char)q) { esc[0] = '\\'; esc[1] = (char)c; LT_TRY(lt_tok_buf_put(b, esc, 2)); }
        else if (c == '\n') LT_TRY(lt_tok_buf_put(b, "\\n", 2));
        else if (c == '\r') LT_TRY(lt_tok_buf_put(b, "\\r", 2));
        else if (c == '\t') LT_TRY(lt_tok_buf_put(b, "\\t", 2));
        else if (c < 0x20 || c == 0x7f) { snprintf(esc, sizeof esc, "\\x%02x", c); LT_TRY(lt_tok_buf_put(b, esc, 4)); }
        else LT_TRY(lt_tok_buf_put(b, s + i, 1));
    }
    return lt_tok_buf_put(b, &q, 1);
}
static lt_status jv_write_float(lt_tok_buf *b, double f) {
    char tmp[64];
    if (f == floor(f) && fabs(f) < 1e16) snprintf(tmp, sizeof tmp, "%.1f", f);
    else snprintf(tmp, sizeof tmp, "%.17g", f);
    return lt_tok_buf_put(b, tmp, strlen(tmp));
}
static lt_status jv_write(J *j, lt_tok_buf *b, const jv *v, int repr) {
    char tmp[64];
    switch (v->t) {
    case JV_UNDEF: return LT_OK;
    case JV_NONE: return lt_tok_buf_put(b, "None", 4);
    case JV_BOOL: return v->i ? lt_tok_buf_put(b, "True", 4) : lt_tok_buf_put(b, "False", 5);
    case JV_INT: snprintf(tmp, sizeof tmp, "%lld", (long long)v->i); return lt_tok_buf_put(b, tmp, strlen(tmp));
    case JV_FLOAT: return jv_write_float(b, v->f);
    case JV_STR: return repr ? jv_write_str_repr(b, v->s, v->n) : lt_tok_buf_put(b, v->s, v->n);
    case JV_LIST:
        LT_TRY(lt_tok_buf_put(b, "[", 1));
        for (size_t i = 0; i < v->n; i++) {
            if (i) LT_TRY(lt_tok_buf_put(b, ", ", 2));
            LT_TRY(jv_write(j, b, v->items[i], 1));
        }
        return lt_tok_buf_put(b, "]", 1);
    case JV_DICT:
        LT_TRY(lt_tok_buf_put(b, "{", 1));
        for (size_t i = 0; i < v->n; i++) {
            if (i) LT_TRY(lt_tok_buf_put(b, ", ", 2));
            LT_TRY(jv_write(j, b, v->items[i], 1));
            LT_TRY(lt_tok_buf_put(b, ": ", 2));
            LT_TRY(jv_write(j, b, v->vals[i], 1));
        }
        return lt_tok_buf_put(b, "}", 1);
    default: return lt_tok_buf_put(b, "<function>", 10);
    }
}

/* json.dumps(v, ensure_ascii=False, indent=indent) as transformers' tojson filter. */
static lt_status jv_json(J *j, lt_tok_buf *b, const jv *v, int indent, int depth) {
    char tmp[64];
    switch (v->t) {
    case JV_UNDEF: case JV_NONE: return lt_tok_buf_put(b, "null", 4);
    case JV_BOOL: return v->i ? lt_tok_buf_put(b, "true", 4) : lt_tok_buf_put(b, "false", 5);
    case JV_INT: snprintf(tmp, sizeof tmp, "%lld", (long long)v->i); return lt_tok_buf_put(b, tmp, strlen(tmp));
    case JV_FLOAT: return jv_write_float(b, v->f);
    case JV_STR:
        LT_TRY(lt_tok_buf_put(b, "\"", 1));
        for (size_t i = 0; i < v->n; i++) {
            unsigned char c = (unsigned char)v->s[i];
            if (c == '"') LT_TRY(lt_tok_buf_put(b, "\\\"", 2));
            else if (c == '\\') LT_TRY(lt_tok_buf_put(b, "\\\\", 2));
            else if (c == '\n') LT_TRY(lt_tok_buf_put(b, "\\n", 2));
            else if (c == '\r') LT_TRY(lt_tok_buf_put(b, "\\r", 2));
            else if (c == '\t') LT_TRY(lt_tok_buf_put(b, "\\t", 2));
            else if (c == '\b') LT_TRY(lt_tok_buf_put(b, "\\b", 2));
            else if (c == '\f') LT_TRY(lt_tok_buf_put(b, "\\f", 2));
            else if (c < 0x20) { snprintf(tmp, sizeof tmp, "\\u%04x", c); LT_TRY(lt_tok_buf_put(b, tmp, 6)); }
            else LT_TRY(lt_tok_buf_put(b, v->s + i, 1));
        }
        return lt_tok_buf_put(b, "\"", 1);
    case JV_LIST: case JV_DICT: {
        int d = v->t == JV_DICT;
        LT_TRY(lt_tok_buf_put(b, d ? "{" : "[", 1));
        if (v->n == 0) return lt_tok_buf_put(b, d ? "}" : "]", 1);
        for (size_t i = 0; i < v->n; i++) {
            if (i) LT_TRY(lt_tok_buf_put(b, indent >= 0 ? "," : ", ", indent >= 0 ? 1 : 2));
            if (indent >= 0) {
                LT_TRY(lt_tok_buf_put(b, "\n", 1));
                for (int k = 0; k < indent * (depth + 1); k++) LT_TRY(lt_tok_buf_put(b, " ", 1));
            }
            if (d) {
                jv ks = *v->items[i];
                if (ks.t != JV_STR) { lt_tok_buf kb = {0}; LT_TRY(jv_write(j, &kb, &ks, 0)); ks.t = JV_STR; ks.s = kb.data ? kb.data : ""; ks.n = kb.len;
                    lt_status st = jv_json(j, b, &ks, indent, depth + 1); free(kb.data); LT_TRY(st); }
                else LT_TRY(jv_json(j, b, &ks, indent, depth + 1));
                LT_TRY(lt_tok_buf_put(b, ": ", 2));
                LT_TRY(jv_json(j, b, v->vals[i], indent, depth + 1));
            } else LT_TRY(jv_json(j, b, v->items[i], indent, depth + 1));
        }
        if (indent >= 0) {
            LT_TRY(lt_tok_buf_put(b, "\n", 1));
            for (int k = 0; k < indent * depth; k++) LT_TRY(lt_tok_buf_put(b, " ", 1));
        }
        return lt_tok_buf_put(b, d ? "}" : "]", 1);
    }
    default: return lt_tok_buf_put(b, "null", 4);
    }
}

static jv *jv_to_str(J *j, const jv *v) {
    if (v->t == JV_STR) return (jv *)v;
    lt_tok_buf b = {0};
    if (jv_write(j, &b, v, 0) != LT_OK) { free(b.data); return NULL; }
    jv *r = jv_str(j, b.data ? b.data : "", b.len);
    free(b.data);
    return r;
}

/* ---- cutting the template into parts ---- */
static int jis_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

/* The end of a tag's content: the offset of `close` outside string literals, or 0. */
static size_t jfind_close(const char *s, size_t from, size_t len, char close) {
    char q = 0;
    for (size_t i = from; i + 1 < len; i++) {
        char c = s[i];
        if (q) { if (c == '\\') i++; else if (c == q) q = 0; continue; }
        if (close != '#' && (c == '\'' || c == '"')) { q = c; continue; }
        if (c == close && s[i + 1] == '}') return i;
    }
    return 0;
}

static lt_status jcut(J *j) {
    const char *s = j->src;
    size_t len = j->src_len, i = 0, cap = 64;
    j->parts = ja(j, cap * sizeof(jpart));
    if (!j->parts) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory parsing the chat template");
    int strip_next = 0;   /* the previous tag ended with '-': strip leading whitespace of the text */
    while (i <= len) {
        /* the next tag */
        size_t t = i;
        while (t + 1 < len && !(s[t] == '{' && (s[t + 1] == '{' || s[t + 1] == '%' || s[t + 1] == '#'))) t++;
        if (t + 1 >= len) t = len;
        size_t ts = i, te = t;
        if (strip_next) while (ts < te && jis_space(s[ts])) ts++;
        int kind = t < len ? s[t + 1] : 0;
        size_t cs = t + 2;
        char mark = t < len && t + 2 < len ? s[t + 2] : 0;
        if (t < len) {
            if (mark == '-') { while (te > ts && jis_space(s[te - 1])) te--; cs++; }
            else if (mark == '+') cs++;
            else if (kind != '{') {
                /* lstrip_blocks: blanks between a line start and a block or comment tag go */
                size_t l = te;
                while (l > ts && (s[l - 1] == ' ' || s[l - 1] == '\t')) l--;
                int line_start = l > ts ? s[l - 1] == '\n' : (ts == 0 || s[ts - 1] == '\n');
                if (line_start) te = l;
            }
        }
        if (te > ts) {
            if (j->np + 2 >= cap) {
                jpart *np = ja(j, cap * 2 * sizeof(jpart));
                if (!np) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory parsing the chat template");
                memcpy(np, j->parts, j->np * sizeof(jpart));
                j->parts = np; cap *= 2;
            }
            j->parts[j->np++] = (jpart){P_TEXT, s + ts, te - ts, ts};
        }
        if (t >= len) break;
        char close = kind == '{' ? '}' : kind == '%' ? '%' : '#';
        size_t ce = jfind_close(s, cs, len, close);
        if (!ce) return jerr(j, LT_ERR_FORMAT, t, "unterminated tag '{%c'", kind);
        size_t after = ce + 2;
        size_t cend = ce;
        strip_next = 0;
        if (cend > cs && s[cend - 1] == '-') { cend--; strip_next = 1; }
        else if (kind != '{' && after < len && s[after] == '\n') after++; /* trim_blocks */
        if (kind != '#') {
            if (j->np + 2 >= cap) {
                jpart *np = ja(j, cap * 2 * sizeof(jpart));
                if (!np) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory parsing the chat template");
                memcpy(np, j->parts, j->np * sizeof(jpart));
                j->parts = np; cap *= 2;
            }
            j->parts[j->np++] = (jpart){kind == '{' ? P_EXPR : P_STMT, s + cs, cend - cs, cs};
        }
        i = after;
    }
    return LT_OK;
}

/* ---- the expression lexer ---- */
enum { T_END, T_NAME, T_INT, T_FLOAT, T_STR, T_OP };
typedef struct jtok { int k; const char *s; size_t n; size_t pos; } jtok;

static jtok jpeek(J *j) {
    const char *p = j->p;
    while (p < j->end && jis_space(*p)) p++;
    jtok t = {T_END, p, 0, (size_t)(p - j->src)};
    if (p >= j->end) return t;
    char c = *p;
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
        const char *q = p;
        while (q < j->end && ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') || *q == '_')) q++;
        t.k = T_NAME; t.n = (size_t)(q - p);
        return t;
    }
    if (c >= '0' && c <= '9') {
        const char *q = p;
        while (q < j->end && ((*q >= '0' && *q <= '9') || *q == '_')) q++;
        t.k = T_INT;
        if (q + 1 < j->end && *q == '.' && q[1] >= '0' && q[1] <= '9') {
            q++;
            while (q < j->end && *q >= '0' && *q <= '9') q++;
            t.k = T_FLOAT;
        }
        t.n = (size_t)(q - p);
        return t;
    }
    if (c == '\'' || c == '"') {
        const char *q = p + 1;
        while (q < j->end && *q != c) { if (*q == '\\') q++; q++; }
        t.k = T_STR; t.n = (size_t)(q + 1 - p);
        if (q >= j->end) t.n = (size_t)(j->end - p);
        return t;
    }
    static const char *ops2[] = {"==", "!=", "<=", ">=", "//", "**"};
    for (int i = 0; i < 6; i++)
        if (p + 1 < j->end && p[0] == ops2[i][0] && p[1] == ops2[i][1]) { t.k = T_OP; t.n = 2; return t; }
    t.k = T_OP; t.n = 1;
    return t;
}
static jtok jnext(J *j) { jtok t = jpeek(j); j->p = t.s + t.n; return t; }
static int jtok_is(jtok t, const char *s) { return (t.k == T_OP || t.k == T_NAME) && t.n == strlen(s) && !memcmp(t.s, s, t.n); }
static int jaccept(J *j, const char *s) { jtok t = jpeek(j); if (jtok_is(t, s)) { j->p = t.s + t.n; return 1; } return 0; }
static int jexpect(J *j, const char *s) {
    jtok t = jpeek(j);
    if (jtok_is(t, s)) { j->p = t.s + t.n; return 1; }
    jerr(j, LT_ERR_FORMAT, t.pos, "expected '%s'", s);
    return 0;
}

static jx *jnode(J *j, int k, size_t pos) { jx *n = ja(j, sizeof *n); if (n) { n->k = k; n->pos = pos; } return n; }

/* A string literal's value (Python escapes). */
static jv *jstr_lit(J *j, jtok t) {
    const char *s = t.s + 1, *e = t.s + t.n - 1;
    char *buf = ja(j, t.n + 1);
    size_t n = 0;
    if (!buf) return NULL;
    for (const char *p = s; p < e; p++) {
        if (*p != '\\' || p + 1 >= e) { buf[n++] = *p; continue; }
        char c = *++p;
        uint32_t cp;
        int digits = 0;
        switch (c) {
        case 'n': buf[n++] = '\n'; break;
        case 't': buf[n++] = '\t'; break;
        case 'r': buf[n++] = '\r'; break;
        case '0': buf[n++] = '\0'; break;
        case 'a': buf[n++] = '\a'; break;
        case 'b': buf[n++] = '\b'; break;
        case 'f': buf[n++] = '\f'; break;
        case 'v': buf[n++] = '\v'; break;
        case '\\': case '\'': case '"': buf[n++] = c; break;
        case 'x': digits = 2; break;
        case 'u': digits = 4; break;
        case 'U': digits = 8; break;
        case '\n': break;
        default: buf[n++] = '\\'; buf[n++] = c;
        }
        if (digits) {
            cp = 0;
            int k = 0;
            for (; k < digits && p + 1 < e; k++) {
                char h = p[1];
                int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                if (d < 0) break;
                cp = cp * 16 + (uint32_t)d; p++;
            }
            if (k != digits || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) { jerr(j, LT_ERR_FORMAT, t.pos, "bad escape in a string"); return NULL; }
            n += (size_t)lt_utf8_encode(cp, buf + n);
        }
    }
    jv *v = ja(j, sizeof *v);
    if (!v) return NULL;
    v->t = JV_STR; v->s = buf; v->n = n;
    return v;
}

static jx *jexpr(J *j);
static jx *junary(J *j);

/* (args, kw=args) after '(' */
static int jcall_args(J *j, jx *n) {
    size_t cap = 8;
    n->args = ja(j, cap * sizeof(jx *));
    n->kwn = ja(j, cap * sizeof(char *));
    n->kwl = ja(j, cap * sizeof(size_t));
    n->kwv = ja(j, cap * sizeof(jx *));
    if (!n->args || !n->kwn || !n->kwl || !n->kwv) return 0;
    if (jaccept(j, ")")) return 1;
    for (;;) {
        if (n->nargs + n->nkw >= cap) { jerr(j, LT_ERR_UNSUPPORTED, n->pos, "more than 8 call arguments"); return 0; }
        jtok t = jpeek(j);
        const char *save = j->p;
        if (t.k == T_NAME) {
            jnext(j);
            jtok eq = jpeek(j);
            if (jtok_is(eq, "=") ) {
                jnext(j);
                n->kwn[n->nkw] = t.s; n->kwl[n->nkw] = t.n;
                if (!(n->kwv[n->nkw++] = jexpr(j))) return 0;
                goto next;
            }
            j->p = save;
        }
        if (n->nkw) { jerr(j, LT_ERR_FORMAT, t.pos, "a positional argument after a keyword argument"); return 0; }
        if (!(n->args[n->nargs++] = jexpr(j))) return 0;
    next:
        if (jaccept(j, ",")) { if (jaccept(j, ")")) return 1; continue; }
        return jexpect(j, ")");
    }
}

static jx *jprimary(J *j) {
    jtok t = jnext(j);
    jx *n = NULL;
    if (t.k == T_END) { jerr(j, LT_ERR_FORMAT, t.pos, "an expression was expected"); return NULL; }
    if (t.k == T_STR) {
        if (t.n < 2 || t.s[t.n - 1] != t.s[0]) { jerr(j, LT_ERR_FORMAT, t.pos, "unterminated string"); return NULL; }
        n = jnode(j, E_LIT, t.pos);
        if (!n || !(n->lit = jstr_lit(j, t))) return NULL;
        /* adjacent literals concatenate, as in Python */
        for (jtok u = jpeek(j); u.k == T_STR; u = jpeek(j)) {
            jnext(j);
            jv *more = jstr_lit(j, u);
            if (!more) return NULL;
            char *c = ja(j, n->lit->n + more->n + 1);
            if (!c) return NULL;
            memcpy(c, n->lit->s, n->lit->n); memcpy(c + n->lit->n, more->s, more->n);
            jv *v = ja(j, sizeof *v);
            if (!v) return NULL;
            v->t = JV_STR; v->s = c; v->n = n->lit->n + more->n;
            n->lit = v;
        }
    } else if (t.k == T_INT || t.k == T_FLOAT) {
        char tmp[64];
        size_t k = 0;
        for (size_t i = 0; i < t.n && k < 63; i++) if (t.s[i] != '_') tmp[k++] = t.s[i];
        tmp[k] = 0;
        n = jnode(j, E_LIT, t.pos);
        if (!n) return NULL;
        n->lit = t.k == T_INT ? jv_int(j, strtoll(tmp, NULL, 10)) : jv_float(j, strtod(tmp, NULL));
    } else if (t.k == T_NAME) {
        if (jtok_is(t, "true") || jtok_is(t, "True")) { n = jnode(j, E_LIT, t.pos); if (n) n->lit = &J_TRUE; }
        else if (jtok_is(t, "false") || jtok_is(t, "False")) { n = jnode(j, E_LIT, t.pos); if (n) n->lit = &J_FALSE; }
        else if (jtok_is(t, "none") || jtok_is(t, "None")) { n = jnode(j, E_LIT, t.pos); if (n) n->lit = &J_NONE; }
        else { n = jnode(j, E_VAR, t.pos); if (n) { n->name = t.s; n->name_len = t.n; } }
    } else if (jtok_is(t, "(")) {
        n = jexpr(j);
        if (!n) return NULL;
        if (jaccept(j, ",")) { /* a tuple: treat as a list */
            jx *l = jnode(j, E_LIST, t.pos);
            if (!l) return NULL;
            l->args = ja(j, 64 * sizeof(jx *));
            l->args[l->nargs++] = n;
            while (!jtok_is(jpeek(j), ")")) {
                if (l->nargs >= 64 || !(l->args[l->nargs++] = jexpr(j))) return NULL;
                if (!jaccept(j, ",")) break;
            }
            n = l;
        }
        if (!jexpect(j, ")")) return NULL;
    } else if (jtok_is(t, "[")) {
        n = jnode(j, E_LIST, t.pos);
        if (!n) return NULL;
        size_t cap = 16;
        n->args = ja(j, cap * sizeof(jx *));
        while (!jtok_is(jpeek(j), "]")) {
            if (n->nargs == cap) { jx **na = ja(j, cap * 2 * sizeof(jx *)); if (!na) return NULL; memcpy(na, n->args, cap * sizeof(jx *)); n->args = na; cap *= 2; }
            if (!(n->args[n->nargs++] = jexpr(j))) return NULL;
            if (!jaccept(j, ",")) break;
        }
        if (!jexpect(j, "]")) return NULL;
    } else if (jtok_is(t, "{")) {
        n = jnode(j, E_DICT, t.pos);
        if (!n) return NULL;
        size_t cap = 16;
        n->args = ja(j, cap * sizeof(jx *)); n->kwv = ja(j, cap * sizeof(jx *));
        while (!jtok_is(jpeek(j), "}")) {
            if (n->nargs == cap) { jerr(j, LT_ERR_UNSUPPORTED, t.pos, "a dict literal of more than 16 entries"); return NULL; }
            if (!(n->args[n->nargs] = jexpr(j))) return NULL;
            if (!jexpect(j, ":")) return NULL;
            if (!(n->kwv[n->nargs++] = jexpr(j))) return NULL;
            if (!jaccept(j, ",")) break;
        }
        if (!jexpect(j, "}")) return NULL;
    } else { jerr(j, LT_ERR_UNSUPPORTED, t.pos, "unexpected '%.*s' in an expression", (int)t.n, t.s); return NULL; }
    return n;
}

static jx *jpostfix(J *j, jx *n) {
    for (;;) {
        if (!n) return NULL;
        jtok t = jpeek(j);
        if (jtok_is(t, ".")) {
            jnext(j);
            jtok name = jnext(j);
            if (name.k != T_NAME && name.k != T_INT) { jerr(j, LT_ERR_FORMAT, name.pos, "a name was expected after '.'"); return NULL; }
            jx *a = jnode(j, E_ATTR, t.pos);
            if (!a) return NULL;
            a->a = n; a->name = name.s; a->name_len = name.n;
            n = a;
        } else if (jtok_is(t, "[")) {
            jnext(j);
            jx *ix = jnode(j, E_INDEX, t.pos);
            if (!ix) return NULL;
            ix->a = n;
            jx *parts[3] = {0};
            int colons = 0;
            for (;;) {
                jtok u = jpeek(j);
                if (jtok_is(u, ":")) { jnext(j); if (++colons > 2) { jerr(j, LT_ERR_FORMAT, u.pos, "bad slice"); return NULL; } continue; }
                if (jtok_is(u, "]")) break;
                if (parts[colons]) { jerr(j, LT_ERR_FORMAT, u.pos, "expected ']'"); return NULL; }
                if (!(parts[colons] = jexpr(j))) return NULL;
            }
            jnext(j);
            if (colons) { ix->k = E_SLICE; ix->b = parts[0]; ix->c = parts[1]; ix->args = ja(j, sizeof(jx *)); ix->args[0] = parts[2]; }
            else { if (!parts[0]) { jerr(j, LT_ERR_FORMAT, t.pos, "empty subscript"); return NULL; } ix->b = parts[0]; }
            n = ix;
        } else if (jtok_is(t, "(")) {
            jnext(j);
            jx *c = jnode(j, E_CALL, t.pos);
            if (!c) return NULL;
            c->a = n;
            if (!jcall_args(j, c)) return NULL;
            n = c;
        } else return n;
    }
}

/* filters and tests bind to the unary expression: x|trim, x is defined */
static jx *jfilters(J *j, jx *n) {
    for (;;) {
        if (!n) return NULL;
        jtok t = jpeek(j);
        if (jtok_is(t, "|")) {
            jnext(j);
            jtok name = jnext(j);
            if (name.k != T_NAME) { jerr(j, LT_ERR_FORMAT, name.pos, "a filter name was expected after '|'"); return NULL; }
            jx *f = jnode(j, E_FILTER, t.pos);
            if (!f) return NULL;
            f->a = n; f->name = name.s; f->name_len = name.n;
            if (jaccept(j, "(")) { if (!jcall_args(j, f)) return NULL; }
            n = f;
        } else if (jtok_is(t, "is")) {
            jnext(j);
            jx *f = jnode(j, E_TEST, t.pos);
            if (!f) return NULL;
            f->a = n;
            if (jaccept(j, "not")) f->neg = 1;
            jtok name = jnext(j);
            if (name.k != T_NAME) { jerr(j, LT_ERR_FORMAT, name.pos, "a test name was expected after 'is'"); return NULL; }
            f->name = name.s; f->name_len = name.n;
            if (jaccept(j, "(")) { if (!jcall_args(j, f)) return NULL; }
            else {
                /* one bare argument: "x is sameas y", "x is divisibleby 3" */
                jtok u = jpeek(j);
                if (u.k == T_STR || u.k == T_INT || u.k == T_FLOAT || (u.k == T_NAME && !jtok_is(u, "and") && !jtok_is(u, "or") &&
                    !jtok_is(u, "else") && !jtok_is(u, "if") && !jtok_is(u, "in") && !jtok_is(u, "not") && !jtok_is(u, "is"))) {
                    f->args = ja(j, sizeof(jx *));
                    if (!(f->args[0] = jpostfix(j, jprimary(j)))) return NULL;
                    f->nargs = 1;
                }
            }
            n = f;
        } else return n;
    }
}

static jx *junary(J *j) {
    jtok t = jpeek(j);
    if (jtok_is(t, "-") || jtok_is(t, "+")) {
        jnext(j);
        if (j->depth > LT_JINJA_MAX_DEPTH) { jerr(j, LT_ERR_UNSUPPORTED, t.pos, "expressions nested too deeply"); return NULL; }
        j->depth++;
        jx *inner = junary(j);
        j->depth--;
        if (!inner) return NULL;
        jx *u = jnode(j, E_NEG, t.pos);
        if (!u) return NULL;
        u->a = inner;
        u->neg = t.s[0] == '-';
        return u->a ? u : NULL;
    }
    return jfilters(j, jpostfix(j, jprimary(j)));
}

static jx *jbin(J *j, int op, jx *a, jx *b, size_t pos) {
    if (!a || !b) return NULL;
    jx *n = jnode(j, E_BIN, pos);
    if (n) { n->op = op; n->a = a; n->b = b; }
    return n;
}

static jx *jpow(J *j) {
    jx *a = junary(j);
    jtok t = jpeek(j);
    if (a && jtok_is(t, "**")) { jerr(j, LT_ERR_UNSUPPORTED, t.pos, "'**' is not supported"); return NULL; }
    return a;
}
static jx *jmul(J *j) {
    jx *a = jpow(j);
    for (;;) {
        jtok t = jpeek(j);
        int op = jtok_is(t, "*") ? OP_MUL : jtok_is(t, "//") ? OP_FLOORDIV : jtok_is(t, "/") ? OP_DIV : jtok_is(t, "%") ? OP_MOD : -1;
        if (op < 0 || !a) return a;
        jnext(j);
        a = jbin(j, op, a, jpow(j), t.pos);
    }
}
static jx *jadd(J *j) {
    jx *a = jmul(j);
    for (;;) {
        jtok t = jpeek(j);
        int op = jtok_is(t, "+") ? OP_ADD : jtok_is(t, "-") ? OP_SUB : -1;
        if (op < 0 || !a) return a;
        jnext(j);
        a = jbin(j, op, a, jmul(j), t.pos);
    }
}
static jx *jconcat(J *j) {
    jx *a = jadd(j);
    for (;;) {
        jtok t = jpeek(j);
        if (!jtok_is(t, "~") || !a) return a;
        jnext(j);
        a = jbin(j, OP_CAT, a, jadd(j), t.pos);
    }
}
static jx *jcompare(J *j) {
    jx *a = jconcat(j);
    for (;;) {
        jtok t = jpeek(j);
        int op = jtok_is(t, "==") ? OP_EQ : jtok_is(t, "!=") ? OP_NE : jtok_is(t, "<=") ? OP_LE : jtok_is(t, ">=") ? OP_GE
               : jtok_is(t, "<") ? OP_LT : jtok_is(t, ">") ? OP_GT : jtok_is(t, "in") ? OP_IN : -1;
        if (op < 0 && jtok_is(t, "not")) {
            const char *save = j->p;
            jnext(j);
            if (jtok_is(jpeek(j), "in")) op = OP_NOTIN;
            else { j->p = save; return a; }
        }
        if (op < 0 || !a) return a;
        jnext(j);
        a = jbin(j, op, a, jconcat(j), t.pos);
    }
}
static jx *jnot(J *j) {
    jtok t = jpeek(j);
    if (jtok_is(t, "not")) {
        jnext(j);
        jx *n = jnode(j, E_NOT, t.pos);
        if (!n) return NULL;
        if (j->depth > LT_JINJA_MAX_DEPTH) { jerr(j, LT_ERR_UNSUPPORTED, t.pos, "expressions nested too deeply"); return NULL; }
        j->depth++;
        n->a = jnot(j);
        j->depth--;
        return n->a ? n : NULL;
    }
    return jcompare(j);
}
static jx *jand(J *j) {
    jx *a = jnot(j);
    while (a && jtok_is(jpeek(j), "and")) {
        jtok t = jnext(j);
        jx *n = jnode(j, E_AND, t.pos);
        if (!n) return NULL;
        n->a = a; n->b = jnot(j);
        if (!n->b) return NULL;
        a = n;
    }
    return a;
}
static jx *jor(J *j) {
    jx *a = jand(j);
    while (a && jtok_is(jpeek(j), "or")) {
        jtok t = jnext(j);
        jx *n = jnode(j, E_OR, t.pos);
        if (!n) return NULL;
        n->a = a; n->b = jand(j);
        if (!n->b) return NULL;
        a = n;
    }
    return a;
}
static jx *jexpr_inner(J *j);
static jx *jexpr(J *j) {
    if (++j->depth > LT_JINJA_MAX_DEPTH) {
        jerr(j, LT_ERR_UNSUPPORTED, (size_t)(j->p - j->src), "expressions nested deeper than %d", LT_JINJA_MAX_DEPTH);
        j->depth--;
        return NULL;
    }
    jx *r = jexpr_inner(j);
    j->depth--;
    return r;
}
static jx *jexpr_inner(J *j) {
    jx *a = jor(j);
    if (a && jtok_is(jpeek(j), "if")) {
        jtok t = jnext(j);
        jx *n = jnode(j, E_COND, t.pos);
        if (!n) return NULL;
        n->a = a;
        n->b = jor(j);
        if (!n->b) return NULL;
        if (jaccept(j, "else")) { n->c = jexpr(j); if (!n->c) return NULL; }
        return n;
    }
    return a;
}

/* Parses a whole part's content as one expression. */
static jx *jparse_expr_in(J *j, const char *s, size_t n) {
    j->p = s; j->end = s + n;
    jx *e = jexpr(j);
    if (!e) { if (j->st == LT_OK) jerr(j, LT_ERR_FORMAT, (size_t)(s - j->src), "bad expression"); return NULL; }
    jtok t = jpeek(j);
    if (t.k != T_END) { jerr(j, LT_ERR_UNSUPPORTED, t.pos, "unexpected '%.*s' after an expression", (int)t.n, t.s); return NULL; }
    return e;
}

/* ---- statements ---- */
static int jbody_push(J *j, jbody *b, js *s, size_t *cap) {
    if (b->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 16;
        js **ns = ja(j, nc * sizeof(js *));
        if (!ns) return 0;
        if (b->n) memcpy(ns, b->s, b->n * sizeof(js *));
        b->s = ns; *cap = nc;
    }
    b->s[b->n++] = s;
    return 1;
}

/* The keyword a statement part starts with. */
static jtok jstmt_kw(J *j, const jpart *p) {
    j->p = p->s; j->end = p->s + p->n;
    return jnext(j);
}

/* Parses parts into body until a statement whose keyword is one of `stops` (returned in *stop). */
static int jparse_body_inner(J *j, jbody *body, const char *const *stops, int nstops, int *stop);
static int jparse_body(J *j, jbody *body, const char *const *stops, int nstops, int *stop) {
    if (++j->depth > LT_JINJA_MAX_DEPTH) {
        jerr(j, LT_ERR_UNSUPPORTED, j->pi < j->np ? j->parts[j->pi].pos : 0, "blocks nested deeper than %d", LT_JINJA_MAX_DEPTH);
        j->depth--;
        return 0;
    }
    int r = jparse_body_inner(j, body, stops, nstops, stop);
    j->depth--;
    return r;
}
static int jparse_body_inner(J *j, jbody *body, const char *const *stops, int nstops, int *stop) {
    size_t cap = 0;
    *stop = -1;
    while (j->pi < j->np) {
        jpart *p = &j->parts[j->pi];
        js *s = ja(j, sizeof *s);
        if (!s) return 0;
        s->pos = p->pos;
        if (p->k == P_TEXT) { s->k = S_TEXT; s->text = p->s; s->len = p->n; j->pi++; if (!jbody_push(j, body, s, &cap)) return 0; continue; }
        if (p->k == P_EXPR) {
            s->k = S_OUT;
            if (!(s->e = jparse_expr_in(j, p->s, p->n))) return 0;
            j->pi++;
            if (!jbody_push(j, body, s, &cap)) return 0;
            continue;
        }
        jtok kw = jstmt_kw(j, p);
        for (int i = 0; i < nstops; i++) if (jtok_is(kw, stops[i])) { *stop = i; return 1; }
        j->pi++;
        if (jtok_is(kw, "if")) {
            s->k = S_IF;
            size_t ccap = 8;
            s->conds = ja(j, ccap * sizeof(jx *)); s->bodies = ja(j, ccap * sizeof(jbody));
            const char *st2[] = {"elif", "else", "endif"};
            jx *cond = jparse_expr_in(j, j->p, (size_t)(j->end - j->p));
            if (!cond) return 0;
            for (;;) {
                if (s->nc == ccap) { jerr(j, LT_ERR_UNSUPPORTED, p->pos, "more than 7 elif branches"); return 0; }
                s->conds[s->nc] = cond;
                int which;
                if (!jparse_body(j, &s->bodies[s->nc++], st2, 3, &which)) return 0;
                if (which < 0) { jerr(j, LT_ERR_FORMAT, p->pos, "'if' without 'endif'"); return 0; }
                jpart *q = &j->parts[j->pi++];
                jstmt_kw(j, q);
                if (which == 0) { if (!(cond = jparse_expr_in(j, j->p, (size_t)(j->end - j->p)))) return 0; continue; }
                if (which == 1) {
                    if (s->nc == ccap) { jerr(j, LT_ERR_UNSUPPORTED, p->pos, "more than 7 elif branches"); return 0; }
                    s->conds[s->nc] = NULL;
                    const char *st3[] = {"endif"};
                    if (!jparse_body(j, &s->bodies[s->nc++], st3, 1, &which)) return 0;
                    if (which < 0) { jerr(j, LT_ERR_FORMAT, p->pos, "'if' without 'endif'"); return 0; }
                    j->pi++;
                }
                break;
            }
        } else if (jtok_is(kw, "for")) {
            s->k = S_FOR;
            for (;;) {
                jtok name = jnext(j);
                if (name.k != T_NAME || s->nt == 2) { jerr(j, LT_ERR_UNSUPPORTED, name.pos, "a loop target must be one or two names"); return 0; }
                s->tn[s->nt] = name.s; s->tl[s->nt++] = name.n;
                if (!jaccept(j, ",")) break;
            }
            if (!jexpect(j, "in")) return 0;
            /* the iterable (no conditional expression there: "if" starts the loop filter) */
            jx *it = jor(j);
            if (!it) return 0;
            s->e = it;
            if (jaccept(j, "if")) { if (!(s->filter = jexpr(j))) return 0; }
            jtok rest = jpeek(j);
            if (rest.k != T_END) { jerr(j, LT_ERR_UNSUPPORTED, rest.pos, "unsupported '%.*s' in a for statement", (int)rest.n, rest.s); return 0; }
            const char *st2[] = {"else", "endfor"};
            int which;
            if (!jparse_body(j, &s->body, st2, 2, &which)) return 0;
            if (which < 0) { jerr(j, LT_ERR_FORMAT, p->pos, "'for' without 'endfor'"); return 0; }
            j->pi++;
            if (which == 0) {
                const char *st3[] = {"endfor"};
                if (!jparse_body(j, &s->els, st3, 1, &which)) return 0;
                if (which < 0) { jerr(j, LT_ERR_FORMAT, p->pos, "'for' without 'endfor'"); return 0; }
                j->pi++;
            }
        } else if (jtok_is(kw, "set")) {
            s->k = S_SET;
            jtok name = jnext(j);
            if (name.k != T_NAME) { jerr(j, LT_ERR_FORMAT, name.pos, "a name was expected after 'set'"); return 0; }
            s->sn = name.s; s->sl = name.n;
            if (jaccept(j, ".")) {
                jtok at = jnext(j);
                if (at.k != T_NAME) { jerr(j, LT_ERR_FORMAT, at.pos, "an attribute name was expected"); return 0; }
                s->sa = at.s; s->sal = at.n;
            }
            if (jtok_is(jpeek(j), ",")) { jerr(j, LT_ERR_UNSUPPORTED, p->pos, "'set' of several names"); return 0; }
            if (!jtok_is(jpeek(j), "=")) { jerr(j, LT_ERR_UNSUPPORTED, p->pos, "block 'set' (without '=')"); return 0; }
            jnext(j);
            if (!(s->e = jparse_expr_in(j, j->p, (size_t)(j->end - j->p)))) return 0;
        } else if (jtok_is(kw, "break") || jtok_is(kw, "continue")) {
            s->k = jtok_is(kw, "break") ? S_BREAK : S_CONTINUE;
        } else {
            jerr(j, LT_ERR_UNSUPPORTED, p->pos, "the statement '%.*s' is not supported (for, if, set, break and continue are)",
                 (int)kw.n, kw.s);
            return 0;
        }
        if (!jbody_push(j, body, s, &cap)) return 0;
    }
    return 1;
}

/* ---- evaluation ---- */
static jv *jeval(J *j, jx *n);

static jv *jlookup(J *j, const char *name, size_t len) {
    for (size_t i = j->nv; i-- > 0;)
        if (j->vars[i].name && j->vars[i].len == len && !memcmp(j->vars[i].name, name, len)) return j->vars[i].v;
    static const struct { const char *n; int id; } fns[] = {
        {"raise_exception", JF_RAISE}, {"namespace", JF_NAMESPACE}, {"range", JF_RANGE}, {"strftime_now", JF_STRFTIME}};
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++)
        if (strlen(fns[i].n) == len && !memcmp(fns[i].n, name, len)) {
            jv *v = ja(j, sizeof *v);
            if (v) { v->t = JV_FUNC; v->i = fns[i].id; }
            return v;
        }
    return &J_UNDEF;
}
/* frame markers are entries with name NULL */
static int jset(J *j, const char *name, size_t len, jv *v) {
    for (size_t i = j->nv; i-- > 0;) {
        if (!j->vars[i].name) break;
        if (j->vars[i].len == len && !memcmp(j->vars[i].name, name, len)) { j->vars[i].v = v; return 1; }
    }
    if (j->nv == j->vcap) {
        size_t nc = j->vcap * 2 + 32;
        jvar *nv = realloc(j->vars, nc * sizeof *nv);
        if (!nv) return 0;
        j->vars = nv; j->vcap = nc;
    }
    j->vars[j->nv++] = (jvar){name, len, v};
    return 1;
}
static int jpush_frame(J *j) { /* a marker entry: set writes stop at it */
    if (j->nv == j->vcap) {
        size_t nc = j->vcap * 2 + 32;
        jvar *nv = realloc(j->vars, nc * sizeof *nv);
        if (!nv) return 0;
        j->vars = nv; j->vcap = nc;
    }
    j->vars[j->nv++] = (jvar){NULL, 0, NULL};
    return 1;
}

static int jname_is(const char *s, size_t n, const char *lit) { return n == strlen(lit) && !memcmp(s, lit, n); }

static jv *jkwarg(J *j, jx *n, const char *name, int pos_index) {
    for (size_t i = 0; i < n->nkw; i++) if (jname_is(n->kwn[i], n->kwl[i], name)) return jeval(j, n->kwv[i]);
    if (pos_index >= 0 && (size_t)pos_index < n->nargs) return jeval(j, n->args[pos_index]);
    return NULL;
}

static jv *jstrip(J *j, const jv *s, const jv *chars, int left, int right) {
    size_t a = 0, b = s->n;
    if (chars && chars->t == JV_STR) {
        while (a < b && memchr(chars->s, s->s[a], chars->n)) a++;
        while (b > a && memchr(chars->s, s->s[b - 1], chars->n)) b--;
    } else {
        /* Python's str.strip: Unicode whitespace */
        for (;;) {
            if (!left || a >= b) break;
            uint32_t cp; int l = lt_utf8_decode((const unsigned char *)s->s + a, &cp);
            if (!((cp >= 9 && cp <= 13) || cp == 32 || cp == 0x1c || cp == 0x1d || cp == 0x1e || cp == 0x1f || cp == 0x85 || cp == 0xA0 ||
                  cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000)) break;
            a += (size_t)l;
        }
        for (;;) {
            if (!right || b <= a) break;
            size_t k = b - 1;
            while (k > a && ((unsigned char)s->s[k] & 0xC0) == 0x80) k--;
            uint32_t cp; lt_utf8_decode((const unsigned char *)s->s + k, &cp);
            if (!((cp >= 9 && cp <= 13) || cp == 32 || cp == 0x1c || cp == 0x1d || cp == 0x1e || cp == 0x1f || cp == 0x85 || cp == 0xA0 ||
                  cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000)) break;
            b = k;
        }
        return jv_str(j, s->s + a, b - a);
    }
    if (!left) a = 0;
    if (!right) b = s->n;
    return jv_str(j, s->s + a, b - a);
}

static jv *jcase(J *j, const jv *s, int upper) {
    jv *r = jv_str(j, s->s, s->n);
    if (!r) return NULL;
    char *c = (char *)r->s;
    for (size_t i = 0; i < r->n; i++) {
        if (upper && c[i] >= 'a' && c[i] <= 'z') c[i] = (char)(c[i] - 32);
        if (!upper && c[i] >= 'A' && c[i] <= 'Z') c[i] = (char)(c[i] + 32);
    }
    return r;
}

static size_t jlen_chars(const jv *s) {
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++) n += ((unsigned char)s->s[i] & 0xC0) != 0x80;
    return n;
}

static jv *jmethod(J *j, jv *obj, const char *m, size_t ml, jx *call) {
    if (obj->t == JV_STR) {
        if (jname_is(m, ml, "strip") || jname_is(m, ml, "lstrip") || jname_is(m, ml, "rstrip")) {
            jv *chars = call->nargs ? jeval(j, call->args[0]) : NULL;
            return jstrip(j, obj, chars, m[0] != 'r', m[0] != 'l');
        }
        if (jname_is(m, ml, "upper") || jname_is(m, ml, "lower")) return jcase(j, obj, m[0] == 'u');
        if (jname_is(m, ml, "startswith") || jname_is(m, ml, "endswith")) {
            jv *x = call->nargs ? jeval(j, call->args[0]) : NULL;
            if (!x) return NULL;
            if (x->t != JV_STR) { jerr(j, LT_ERR_UNSUPPORTED, call->pos, "%.*s() wants a string", (int)ml, m); return NULL; }
            if (x->n > obj->n) return &J_FALSE;
            return jv_bool(m[0] == 's' ? !memcmp(obj->s, x->s, x->n) : !memcmp(obj->s + obj->n - x->n, x->s, x->n));
        }
        if (jname_is(m, ml, "replace")) {
            jv *a = call->nargs > 0 ? jeval(j, call->args[0]) : NULL, *b = call->nargs > 1 ? jeval(j, call->args[1]) : NULL;
            if (!a || !b || a->t != JV_STR || b->t != JV_STR || !a->n) { jerr(j, LT_ERR_UNSUPPORTED, call->pos, "replace() wants two strings"); return NULL; }
            lt_tok_buf o = {0};
            for (size_t i = 0; i < obj->n;) {
                if (i + a->n <= obj->n && !memcmp(obj->s + i, a->s, a->n)) { lt_tok_buf_put(&o, b->s, b->n); i += a->n; }
                else { lt_tok_buf_put(&o, obj->s + i, 1); i++; }
            }
            jv *r = jv_str(j, o.data ? o.data : "", o.len);
            free(o.data);
            return r;
        }
        if (jname_is(m, ml, "split")) {
            jv *sep = call->nargs ? jeval(j, call->args[0]) : NULL;
            jv *l = jv_list(j, 8);
            if (!l) return NULL;
            if (!sep || sep->t != JV_STR || !sep->n) { /* whitespace split */
                size_t i = 0;
                while (i < obj->n) {
                    while (i < obj->n && jis_space(obj->s[i])) i++;
                    size_t k = i;
                    while (k < obj->n && !jis_space(obj->s[k])) k++;
                    if (k > i && !jv_push(j, l, jv_str(j, obj->s + i, k - i))) return NULL;
                    i = k;
                }
                return l;
            }
            size_t i = 0;
            for (;;) {
                const char *hit = NULL;
                for (size_t k = i; k + sep->n <= obj->n; k++) if (!memcmp(obj->s + k, sep->s, sep->n)) { hit = obj->s + k; break; }
                size_t e = hit ? (size_t)(hit - obj->s) : obj->n;
                if (!jv_push(j, l, jv_str(j, obj->s + i, e - i))) return NULL;
                if (!hit) return l;
                i = e + sep->n;
            }
        }
        if (jname_is(m, ml, "title") || jname_is(m, ml, "capitalize")) {
            jv *r = jv_str(j, obj->s, obj->n);
            char *c = (char *)r->s;
            int start = 1;
            for (size_t i = 0; i < r->n; i++) {
                int alpha = (c[i] >= 'a' && c[i] <= 'z') || (c[i] >= 'A' && c[i] <= 'Z');
                if (alpha && start && c[i] >= 'a') c[i] = (char)(c[i] - 32);
                else if (alpha && !start && c[i] <= 'Z') c[i] = (char)(c[i] + 32);
                start = m[0] == 't' ? !alpha : 0;
            }
            return r;
        }
    } else if (obj->t == JV_DICT) {
        if (jname_is(m, ml, "items") || jname_is(m, ml, "keys") || jname_is(m, ml, "values")) {
            jv *l = jv_list(j, obj->n);
            if (!l) return NULL;
            for (size_t i = 0; i < obj->n; i++) {
                jv *x;
                if (m[0] == 'k') x = obj->items[i];
                else if (m[0] == 'v') x = obj->vals[i];
                else { x = jv_list(j, 2); if (!x) return NULL; jv_push(j, x, obj->items[i]); jv_push(j, x, obj->vals[i]); }
                if (!jv_push(j, l, x)) return NULL;
            }
            return l;
        }
        if (jname_is(m, ml, "get")) {
            jv *k = call->nargs ? jeval(j, call->args[0]) : NULL;
            if (!k) return NULL;
            jv *v = k->t == JV_STR ? jv_dict_get(obj, k->s, k->n) : NULL;
            if (v) return v;
            return call->nargs > 1 ? jeval(j, call->args[1]) : &J_NONE;
        }
    }
    jerr(j, LT_ERR_UNSUPPORTED, call->pos, "the method '%.*s' is not supported here", (int)ml, m);
    return NULL;
}

static jv *jcall(J *j, jx *n) {
    if (n->a->k == E_ATTR) {
        jv *obj = jeval(j, n->a->a);
        if (!obj) return NULL;
        if (obj->t != JV_DICT || !jv_dict_get(obj, n->a->name, n->a->name_len))
            return jmethod(j, obj, n->a->name, n->a->name_len, n);
    }
    jv *f = jeval(j, n->a);
    if (!f) return NULL;
    if (f->t != JV_FUNC) { jerr(j, LT_ERR_UNSUPPORTED, n->pos, "calling something that is not a function"); return NULL; }
    switch (f->i) {
    case JF_RAISE: {
        jv *m = n->nargs ? jeval(j, n->args[0]) : NULL;
        jv *s = m ? jv_to_str(j, m) : NULL;
        lt_error(LT_ERR_INVALID_ARGUMENT, "the chat template raised an exception: %.*s", s ? (int)s->n : 0, s ? s->s : "");
        j->st = LT_ERR_INVALID_ARGUMENT;
        return NULL;
    }
    case JF_NAMESPACE: {
        jv *d = jv_dict(j);
        if (!d) return NULL;
        for (size_t i = 0; i < n->nkw; i++) {
            jv *v = jeval(j, n->kwv[i]);
            if (!v || !jv_dict_set(j, d, jv_str(j, n->kwn[i], n->kwl[i]), v)) return NULL;
        }
        return d;
    }
    case JF_RANGE: {
        int64_t a = 0, b = 0, step = 1;
        jv *x[3] = {0};
        for (size_t i = 0; i < n->nargs && i < 3; i++) {
            x[i] = jeval(j, n->args[i]);
            if (!x[i]) return NULL;
            if (x[i]->t != JV_INT) { jerr(j, LT_ERR_UNSUPPORTED, n->pos, "range() wants integers"); return NULL; }
        }
        if (n->nargs == 1) b = x[0]->i;
        else if (n->nargs >= 2) { a = x[0]->i; b = x[1]->i; if (n->nargs == 3) step = x[2]->i; }
        if (step == 0 || (b - a) / step > 100000) { jerr(j, LT_ERR_UNSUPPORTED, n->pos, "range() too long or with step 0"); return NULL; }
        jv *l = jv_list(j, 16);
        for (int64_t i = a; step > 0 ? i < b : i > b; i += step) if (!jv_push(j, l, jv_int(j, i))) return NULL;
        return l;
    }
    case JF_STRFTIME: {
        jv *fmt = n->nargs ? jeval(j, n->args[0]) : NULL;
        if (!fmt || fmt->t != JV_STR) { jerr(j, LT_ERR_UNSUPPORTED, n->pos, "strftime_now() wants a format string"); return NULL; }
        char f[128], out[256];
        snprintf(f, sizeof f, "%.*s", (int)fmt->n, fmt->s);
        time_t now = time(NULL);
        struct tm tmv;
        localtime_r(&now, &tmv);
        size_t k = strftime(out, sizeof out, f, &tmv);
        return jv_str(j, out, k);
    }
    }
    return NULL;
}

static jv *jfilter(J *j, jx *n) {
    jv *x = jeval(j, n->a);
    if (!x) return NULL;
    const char *f = n->name;
    size_t fl = n->name_len;
    if (jname_is(f, fl, "trim")) {
        if (x->t != JV_STR) x = jv_to_str(j, x);
        jv *chars = n->nargs ? jeval(j, n->args[0]) : NULL;
        return x ? jstrip(j, x, chars, 1, 1) : NULL;
    }
    if (jname_is(f, fl, "length") || jname_is(f, fl, "count")) {
        if (x->t == JV_STR) return jv_int(j, (int64_t)jlen_chars(x));
        if (x->t == JV_LIST || x->t == JV_DICT) return jv_int(j, (int64_t)x->n);
        if (x->t == JV_UNDEF) return jv_int(j, 0);
        jerr(j, LT_ERR_UNSUPPORTED, n->pos, "length of a value that has none");
        return NULL;
    }
    if (jname_is(f, fl, "upper") || jname_is(f, fl, "lower")) { x = jv_to_str(j, x); return x ? jcase(j, x, f[0] == 'u') : NULL; }
    if (jname_is(f, fl, "string")) return jv_to_str(j, x);
    if (jname_is(f, fl, "safe") || (jname_is(f, fl, "list") && x->t == JV_LIST)) return x;
    if (jname_is(f, fl, "tojson")) {
        jv *ind = jkwarg(j, n, "indent", 0);
        int indent = ind && ind->t == JV_INT ? (int)ind->i : -1;
        lt_tok_buf b = {0};
        lt_status st = jv_json(j, &b, x, indent, 0);
        if (st != LT_OK) { free(b.data); j->st = st; return NULL; }
        jv *r = jv_str(j, b.data ? b.data : "", b.len);
        free(b.data);
        return r;
    }
    if (jname_is(f, fl, "first") || jname_is(f, fl, "last")) {
        if (x->t == JV_LIST) return x->n ? x->items[f[0] == 'f' ? 0 : x->n - 1] : &J_UNDEF;
        if (x->t == JV_STR && x->n) {
            if (f[0] == 'f') { uint32_t cp; int l = lt_utf8_decode((const unsigned char *)x->s, &cp); return jv_str(j, x->s, (size_t)l); }
            size_t k = x->n - 1;
            while (k > 0 && ((unsigned char)x->s[k] & 0xC0) == 0x80) k--;
            return jv_str(j, x->s + k, x->n - k);
        }
        return &J_UNDEF;
    }
    if (jname_is(f, fl, "join")) {
        jv *sep = jkwarg(j, n, "d", 0);
        if (x->t != JV_LIST) { jerr(j, LT_ERR_UNSUPPORTED, n->pos, "join of something that is not a list"); return NULL; }
        lt_tok_buf b = {0};
        for (size_t i = 0; i < x->n; i++) {
            if (i && sep && sep->t == JV_STR) lt_tok_buf_put(&b, sep->s, sep->n);
            jv_write(j, &b, x->items[i], 0);
        }
        jv *r = jv_str(j, b.data ? b.data : "", b.len);
        free(b.data);
        return r;
    }
    if (jname_is(f, fl, "default") || jname_is(f, fl, "d")) {
        jv *dflt = jkwarg(j, n, "default_value", 0);
        jv *boolean = jkwarg(j, n, "boolean", 1);
        if (x->t == JV_UNDEF || (boolean && jv_truthy(boolean) && !jv_truthy(x))) return dflt ? dflt : jv_str(j, "", 0);
        return x;
    }
    if (jname_is(f, fl, "capitalize") || jname_is(f, fl, "title")) {
        jx call = {0};
        call.pos = n->pos;
        x = jv_to_str(j, x);
        return x ? jmethod(j, x, f, fl, &call) : NULL;
    }
    if (jname_is(f, fl, "int")) {
        if (x->t == JV_INT) return x;
        if (x->t == JV_FLOAT) return jv_int(j, (int64_t)x->f);
        if (x->t == JV_BOOL) return jv_int(j, x->i);
        if (x->t == JV_STR) { char t[64]; snprintf(t, sizeof t, "%.*s", (int)(x->n < 63 ? x->n : 63), x->s); return jv_int(j, strtoll(t, NULL, 10)); }
        return jv_int(j, 0);
    }
    if (jname_is(f, fl, "reverse")) {
        if (x->t == JV_LIST) {
            jv *l = jv_list(j, x->n);
            for (size_t i = x->n; i-- > 0;) if (!jv_push(j, l, x->items[i])) return NULL;
            return l;
        }
    }
    if (jname_is(f, fl, "items") && x->t == JV_DICT) {
        jx call = {0};
        call.pos = n->pos;
        return jmethod(j, x, "items", 5, &call);
    }
    jerr(j, LT_ERR_UNSUPPORTED, n->pos, "the filter '%.*s' is not supported", (int)fl, f);
    return NULL;
}

static jv *jtest(J *j, jx *n) {
    jv *x = jeval(j, n->a);
    if (!x) return NULL;
    const char *t = n->name;
    size_t tl = n->name_len;
    int r;
    if (jname_is(t, tl, "defined")) r = x->t != JV_UNDEF;
    else if (jname_is(t, tl, "undefined")) r = x->t == JV_UNDEF;
    else if (jname_is(t, tl, "none")) r = x->t == JV_NONE;
    else if (jname_is(t, tl, "string")) r = x->t == JV_STR;
    else if (jname_is(t, tl, "number")) r = x->t == JV_INT || x->t == JV_FLOAT;
    else if (jname_is(t, tl, "integer")) r = x->t == JV_INT;
    else if (jname_is(t, tl, "float")) r = x->t == JV_FLOAT;
    else if (jname_is(t, tl, "boolean")) r = x->t == JV_BOOL;
    else if (jname_is(t, tl, "true")) r = x->t == JV_BOOL && x->i;
    else if (jname_is(t, tl, "false")) r = x->t == JV_BOOL && !x->i;
    else if (jname_is(t, tl, "mapping")) r = x->t == JV_DICT;
    else if (jname_is(t, tl, "sequence")) r = x->t == JV_LIST || x->t == JV_STR || x->t == JV_DICT;
    else if (jname_is(t, tl, "iterable")) r = x->t == JV_LIST || x->t == JV_STR || x->t == JV_DICT;
    else if (jname_is(t, tl, "callable")) r = x->t == JV_FUNC;
    else if (jname_is(t, tl, "even") || jname_is(t, tl, "odd")) {
        if (x->t != JV_INT) { jerr(j, LT_ERR_UNSUPPORTED, n->pos, "even/odd of a non-integer"); return NULL; }
        r = (x->i % 2 == 0) == (t[0] == 'e');
    } else if (jname_is(t, tl, "eq") || jname_is(t, tl, "equalto") || jname_is(t, tl, "sameas") || jname_is(t, tl, "ne")) {
        jv *y = n->nargs ? jeval(j, n->args[0]) : NULL;
        if (!y) { if (j->st == LT_OK) jerr(j, LT_ERR_FORMAT, n->pos, "the test needs an argument"); return NULL; }
        r = jv_eq(x, y);
        if (t[0] == 'n') r = !r;
    } else { jerr(j, LT_ERR_UNSUPPORTED, n->pos, "the test '%.*s' is not supported", (int)tl, t); return NULL; }
    return jv_bool(n->neg ? !r : r);
}

static int jnum(const jv *v) { return v->t == JV_INT || v->t == JV_FLOAT || v->t == JV_BOOL; }
static double jdbl(const jv *v) { return v->t == JV_FLOAT ? v->f : (double)v->i; }

static jv *jbinop(J *j, jx *n) {
    jv *a = jeval(j, n->a);
    if (!a) return NULL;
    jv *b = jeval(j, n->b);
    if (!b) return NULL;
    switch (n->op) {
    case OP_EQ: return jv_bool(jv_eq(a, b));
    case OP_NE: return jv_bool(!jv_eq(a, b));
    case OP_CAT: {
        jv *x = jv_to_str(j, a), *y = jv_to_str(j, b);
        if (!x || !y) return NULL;
        return jv_concat(j, x, y);
    }
    case OP_IN: case OP_NOTIN: {
        int r = 0;
        if (b->t == JV_STR && a->t == JV_STR) {
            if (!a->n) r = 1;
            for (size_t i = 0; !r && i + a->n <= b->n; i++) r = !memcmp(b->s + i, a->s, a->n);
        } else if (b->t == JV_LIST) { for (size_t i = 0; !r && i < b->n; i++) r = jv_eq(a, b->items[i]); }
        else if (b->t == JV_DICT) { r = a->t == JV_STR && jv_dict_get(b, a->s, a->n) != NULL; }
        else if (b->t == JV_UNDEF) r = 0;
        else { jerr(j, LT_ERR_UNSUPPORTED, n->pos, "'in' on a value that is not a string, list or dict"); return NULL; }
        return jv_bool(n->op == OP_IN ? r : !r);
    }
    case OP_LT: case OP_LE: case OP_GT: case OP_GE: {
        int c;
        if (jnum(a) && jnum(b)) { double x = jdbl(a), y = jdbl(b); c = x < y ? -1 : x > y; }
        else if (a->t == JV_STR && b->t == JV_STR) {
            size_t m = a->n < b->n ? a->n : b->n;
            c = memcmp(a->s, b->s, m);
            if (!c) c = a->n < b->n ? -1 : a->n > b->n;
        } else { jerr(j, LT_ERR_UNSUPPORTED, n->pos, "ordering comparison of unlike values"); return NULL; }
        int r = n->op == OP_LT ? c < 0 : n->op == OP_LE ? c <= 0 : n->op == OP_GT ? c > 0 : c >= 0;
        return jv_bool(r);
    }
    case OP_ADD:
        if (a->t == JV_STR && b->t == JV_STR) {
            return jv_concat(j, a, b);
        }
        if (a->t == JV_LIST && b->t == JV_LIST) {
            jv *l = jv_list(j, a->n + b->n);
            for (size_t i = 0; i < a->n; i++) jv_push(j, l, a->items[i]);
            for (size_t i = 0; i < b->n; i++) jv_push(j, l, b->items[i]);
            return l;
        }
        __attribute__((fallthrough)); /* to numbers */
    default:
        if (jnum(a) && jnum(b)) {
            int ints = a->t != JV_FLOAT && b->t != JV_FLOAT;
            switch (n->op) {
            case OP_ADD: return ints ? jv_int(j, a->i + b->i) : jv_float(j, jdbl(a) + jdbl(b));
            case OP_SUB: return ints ? jv_int(j, a->i - b->i) : jv_float(j, jdbl(a) - jdbl(b));
            case OP_MUL: return ints ? jv_int(j, a->i * b->i) : jv_float(j, jdbl(a) * jdbl(b));
            case OP_DIV: if (jdbl(b) == 0) break; return jv_float(j, jdbl(a) / jdbl(b));
            case OP_FLOORDIV:
                if (jdbl(b) == 0) break;
                if (ints) { int64_t q = a->i / b->i; if ((a->i % b->i != 0) && ((a->i < 0) != (b->i < 0))) q--; return jv_int(j, q); }
                return jv_float(j, floor(jdbl(a) / jdbl(b)));
            case OP_MOD:
                if (jdbl(b) == 0) break;
                if (ints) { int64_t m = a->i % b->i; if (m && ((m < 0) != (b->i < 0))) m += b->i; return jv_int(j, m); }
                return jv_float(j, fmod(jdbl(a), jdbl(b)));
            }
            jerr(j, LT_ERR_INVALID_ARGUMENT, n->pos, "division by zero");
            return NULL;
        }
        if (n->op == OP_MUL && ((a->t == JV_STR && b->t == JV_INT) || (a->t == JV_INT && b->t == JV_STR))) {
            const jv *s = a->t == JV_STR ? a : b;
            int64_t k = a->t == JV_INT ? a->i : b->i;
            if (k < 0) k = 0;
            if ((uint64_t)k * s->n > (1u << 24)) { jerr(j, LT_ERR_UNSUPPORTED, n->pos, "string repetition too long"); return NULL; }
            jv *r = jv_str(j, "", 0);
            char *c = ja(j, (size_t)k * s->n + 1);
            if (!r || !c) return NULL;
            for (int64_t i = 0; i < k; i++) memcpy(c + i * s->n, s->s, s->n);
            r->s = c; r->n = (size_t)k * s->n;
            return r;
        }
        jerr(j, LT_ERR_UNSUPPORTED, n->pos, "arithmetic on unlike values (e.g. a string + a number)");
        return NULL;
    }
}

static jv *jindex(J *j, jv *obj, jv *ix, size_t pos) {
    if (obj->t == JV_DICT) {
        if (ix->t == JV_STR) { jv *v = jv_dict_get(obj, ix->s, ix->n); return v ? v : &J_UNDEF; }
        for (size_t i = 0; i < obj->n; i++) if (jv_eq(obj->items[i], ix)) return obj->vals[i];
        return &J_UNDEF;
    }
    if ((obj->t == JV_LIST || obj->t == JV_STR) && ix->t == JV_INT) {
        if (obj->t == JV_STR) {
            /* by characters */
            size_t nch = jlen_chars(obj);
            int64_t k = ix->i < 0 ? ix->i + (int64_t)nch : ix->i;
            if (k < 0 || (size_t)k >= nch) return &J_UNDEF;
            size_t b = 0, c = 0;
            while (c < (size_t)k) { b++; while (b < obj->n && ((unsigned char)obj->s[b] & 0xC0) == 0x80) b++; c++; }
            size_t e = b + 1;
            while (e < obj->n && ((unsigned char)obj->s[e] & 0xC0) == 0x80) e++;
            return jv_str(j, obj->s + b, e - b);
        }
        int64_t k = ix->i < 0 ? ix->i + (int64_t)obj->n : ix->i;
        if (k < 0 || (size_t)k >= obj->n) return &J_UNDEF;
        return obj->items[k];
    }
    if (obj->t == JV_UNDEF) { jerr(j, LT_ERR_INVALID_ARGUMENT, pos, "subscript of an undefined value"); return NULL; }
    return &J_UNDEF;
}

static jv *jslice(J *j, jx *n) {
    jv *obj = jeval(j, n->a);
    if (!obj) return NULL;
    jv *a = n->b ? jeval(j, n->b) : &J_NONE, *b = n->c ? jeval(j, n->c) : &J_NONE;
    jv *c = n->args && n->args[0] ? jeval(j, n->args[0]) : &J_NONE;
    if (!a || !b || !c) return NULL;
    if (obj->t != JV_LIST) { jerr(j, LT_ERR_UNSUPPORTED, n->pos, "slicing is supported on lists only"); return NULL; }
    int64_t len = (int64_t)obj->n, step = c->t == JV_INT ? c->i : 1;
    if (step == 0) { jerr(j, LT_ERR_INVALID_ARGUMENT, n->pos, "slice step 0"); return NULL; }
    int64_t lo, hi;
    if (step > 0) {
        lo = a->t == JV_INT ? a->i : 0; hi = b->t == JV_INT ? b->i : len;
        if (lo < 0) lo += len;
        if (hi < 0) hi += len;
        if (lo < 0) lo = 0;
        if (hi > len) hi = len;
    } else {
        lo = a->t == JV_INT ? a->i : len - 1; hi = b->t == JV_INT ? b->i : -len - 1;
        if (a->t == JV_INT && lo < 0) lo += len;
        if (b->t == JV_INT && hi < 0) hi += len;
        if (lo >= len) lo = len - 1;
        if (hi < -1) hi = -1;
    }
    jv *l = jv_list(j, 8);
    if (!l) return NULL;
    for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step) if (!jv_push(j, l, obj->items[i])) return NULL;
    return l;
}

static jv *jeval(J *j, jx *n) {
    if (j->st != LT_OK) return NULL;
    if (++j->steps > LT_JINJA_MAX_STEPS) {
        jerr(j, LT_ERR_UNSUPPORTED, n->pos, "the template runs too long (more than %u steps)", LT_JINJA_MAX_STEPS);
        return NULL;
    }
    switch (n->k) {
    case E_LIT: return n->lit;
    case E_VAR: return jlookup(j, n->name, n->name_len);
    case E_ATTR: {
        jv *o = jeval(j, n->a);
        if (!o) return NULL;
        if (o->t == JV_DICT) { jv *v = jv_dict_get(o, n->name, n->name_len); return v ? v : &J_UNDEF; }
        if (o->t == JV_UNDEF) { jerr(j, LT_ERR_INVALID_ARGUMENT, n->pos, "'.%.*s' of an undefined value", (int)n->name_len, n->name); return NULL; }
        return &J_UNDEF;
    }
    case E_INDEX: {
        jv *o = jeval(j, n->a);
        jv *ix = o ? jeval(j, n->b) : NULL;
        return ix ? jindex(j, o, ix, n->pos) : NULL;
    }
    case E_SLICE: return jslice(j, n);
    case E_CALL: return jcall(j, n);
    case E_FILTER: return jfilter(j, n);
    case E_TEST: return jtest(j, n);
    case E_NOT: { jv *x = jeval(j, n->a); return x ? jv_bool(!jv_truthy(x)) : NULL; }
    case E_NEG: {
        jv *x = jeval(j, n->a);
        if (!x) return NULL;
        if (x->t == JV_INT || x->t == JV_BOOL) return jv_int(j, n->neg ? -x->i : x->i);
        if (x->t == JV_FLOAT) return jv_float(j, n->neg ? -x->f : x->f);
        jerr(j, LT_ERR_UNSUPPORTED, n->pos, "unary minus of a non-number");
        return NULL;
    }
    case E_BIN: return jbinop(j, n);
    case E_AND: { jv *a = jeval(j, n->a); if (!a || !jv_truthy(a)) return a; return jeval(j, n->b); }
    case E_OR: { jv *a = jeval(j, n->a); if (!a || jv_truthy(a)) return a; return jeval(j, n->b); }
    case E_COND: {
        jv *c = jeval(j, n->b);
        if (!c) return NULL;
        if (jv_truthy(c)) return jeval(j, n->a);
        return n->c ? jeval(j, n->c) : &J_UNDEF;
    }
    case E_LIST: {
        jv *l = jv_list(j, n->nargs);
        if (!l) return NULL;
        for (size_t i = 0; i < n->nargs; i++) { jv *x = jeval(j, n->args[i]); if (!x || !jv_push(j, l, x)) return NULL; }
        return l;
    }
    case E_DICT: {
        jv *d = jv_dict(j);
        if (!d) return NULL;
        for (size_t i = 0; i < n->nargs; i++) {
            jv *k = jeval(j, n->args[i]), *v = k ? jeval(j, n->kwv[i]) : NULL;
            if (!v || !jv_dict_set(j, d, k, v)) return NULL;
        }
        return d;
    }
    }
    return NULL;
}

static lt_status jexec(J *j, const jbody *b);

static lt_status jexec_for(J *j, const js *s) {
    jv *it = jeval(j, s->e);
    if (!it) return j->st ? j->st : LT_ERR_INTERNAL;
    jv *seq = it;
    if (it->t == JV_DICT) { /* iterating a dict gives its keys */
        seq = jv_list(j, it->n);
        for (size_t i = 0; i < it->n; i++) jv_push(j, seq, it->items[i]);
    } else if (it->t == JV_STR) {
        seq = jv_list(j, it->n);
        for (size_t i = 0; i < it->n;) {
            uint32_t cp; int l = lt_utf8_decode((const unsigned char *)it->s + i, &cp);
            jv_push(j, seq, jv_str(j, it->s + i, (size_t)l));
            i += (size_t)l;
        }
    } else if (it->t == JV_UNDEF || it->t == JV_NONE) {
        if (it->t == JV_NONE) return jerr(j, LT_ERR_INVALID_ARGUMENT, s->pos, "'for' over None");
        seq = jv_list(j, 1);
    } else if (it->t != JV_LIST) return jerr(j, LT_ERR_UNSUPPORTED, s->pos, "'for' over a value that is not a list, dict or string");
    if (!seq) return LT_ERR_OUT_OF_MEMORY;
    size_t mark = j->nv;
    if (!jpush_frame(j)) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory rendering the chat template");
    /* the filtered items first, so that loop.length / loop.last count only those */
    jv *items = seq;
    if (s->filter) {
        items = jv_list(j, seq->n);
        for (size_t i = 0; i < seq->n; i++) {
            if (s->nt == 1) jset(j, s->tn[0], s->tl[0], seq->items[i]);
            else if (seq->items[i]->t == JV_LIST && seq->items[i]->n == 2) { jset(j, s->tn[0], s->tl[0], seq->items[i]->items[0]); jset(j, s->tn[1], s->tl[1], seq->items[i]->items[1]); }
            jv *c = jeval(j, s->filter);
            if (!c) { j->nv = mark; return j->st; }
            if (jv_truthy(c)) jv_push(j, items, seq->items[i]);
        }
    }
    lt_status st = LT_OK;
    for (size_t i = 0; i < items->n && st == LT_OK; i++) {
        jv *x = items->items[i];
        if (s->nt == 1) jset(j, s->tn[0], s->tl[0], x);
        else {
            if (x->t != JV_LIST || x->n != 2) { st = jerr(j, LT_ERR_INVALID_ARGUMENT, s->pos, "cannot unpack a loop item into two names"); break; }
            jset(j, s->tn[0], s->tl[0], x->items[0]);
            jset(j, s->tn[1], s->tl[1], x->items[1]);
        }
        jv *loop = jv_dict(j);
        if (!loop) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory rendering the chat template");
        size_t n = items->n;
        jv_dict_set(j, loop, jv_str(j, "index", 5), jv_int(j, (int64_t)i + 1));
        jv_dict_set(j, loop, jv_str(j, "index0", 6), jv_int(j, (int64_t)i));
        jv_dict_set(j, loop, jv_str(j, "revindex", 8), jv_int(j, (int64_t)(n - i)));
        jv_dict_set(j, loop, jv_str(j, "revindex0", 9), jv_int(j, (int64_t)(n - i - 1)));
        jv_dict_set(j, loop, jv_str(j, "first", 5), jv_bool(i == 0));
        jv_dict_set(j, loop, jv_str(j, "last", 4), jv_bool(i + 1 == n));
        jv_dict_set(j, loop, jv_str(j, "length", 6), jv_int(j, (int64_t)n));
        jv_dict_set(j, loop, jv_str(j, "previtem", 8), i ? items->items[i - 1] : &J_UNDEF);
        jv_dict_set(j, loop, jv_str(j, "nextitem", 8), i + 1 < n ? items->items[i + 1] : &J_UNDEF);
        jset(j, "loop", 4, loop);
        st = jexec(j, &s->body);
        if (j->cont) j->cont = 0;
        if (j->brk) { j->brk = 0; break; }
    }
    if (st == LT_OK && items->n == 0 && s->els.n) st = jexec(j, &s->els);
    j->nv = mark;
    return st;
}

static lt_status jexec(J *j, const jbody *b) {
    for (size_t i = 0; i < b->n; i++) {
        const js *s = b->s[i];
        switch (s->k) {
        case S_TEXT:
            if (j->out->len > (64u << 20)) return jerr(j, LT_ERR_UNSUPPORTED, s->pos, "the rendered text exceeds 64 MiB");
            LT_TRY(lt_tok_buf_put(j->out, s->text, s->len));
            break;
        case S_OUT: {
            jv *v = jeval(j, s->e);
            if (!v) return j->st ? j->st : LT_ERR_INTERNAL;
            if (j->out->len > (64u << 20)) return jerr(j, LT_ERR_UNSUPPORTED, s->pos, "the rendered text exceeds 64 MiB");
            LT_TRY(jv_write(j, j->out, v, 0));
            break;
        }
        case S_IF:
            for (size_t c = 0; c < s->nc; c++) {
                int take = 1;
                if (s->conds[c]) {
                    jv *v = jeval(j, s->conds[c]);
                    if (!v) return j->st ? j->st : LT_ERR_INTERNAL;
                    take = jv_truthy(v);
                }
                if (take) { LT_TRY(jexec(j, &s->bodies[c])); break; }
            }
            break;
        case S_FOR: LT_TRY(jexec_for(j, s)); break;
        case S_SET: {
            jv *v = jeval(j, s->e);
            if (!v) return j->st ? j->st : LT_ERR_INTERNAL;
            if (s->sa) {
                jv *ns = jlookup(j, s->sn, s->sl);
                if (ns->t != JV_DICT) return jerr(j, LT_ERR_INVALID_ARGUMENT, s->pos, "'set %.*s.%.*s' needs a namespace", (int)s->sl, s->sn, (int)s->sal, s->sa);
                if (!jv_dict_set(j, ns, jv_str(j, s->sa, s->sal), v)) return LT_ERR_OUT_OF_MEMORY;
            } else if (!jset(j, s->sn, s->sl, v)) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory rendering the chat template");
            break;
        }
        case S_BREAK: j->brk = 1; return LT_OK;
        case S_CONTINUE: j->cont = 1; return LT_OK;
        }
        if (j->brk || j->cont) return LT_OK;
    }
    return LT_OK;
}

lt_status lt_jinja_render_chat(const char *tmpl, const lt_chat_message *messages, size_t n, int add_generation_prompt,
                               const lt_jinja_var *vars, size_t n_vars, lt_tok_buf *out) {
    J j;
    memset(&j, 0, sizeof j);
    j.out = out;
    /* newlines normalised to \n and one trailing newline dropped, as Jinja's lexer does */
    size_t tl = strlen(tmpl);
    char *src = malloc(tl + 1);
    if (!src) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory rendering the chat template");
    size_t k = 0;
    for (size_t i = 0; i < tl; i++) {
        if (tmpl[i] == '\r') { src[k++] = '\n'; if (i + 1 < tl && tmpl[i + 1] == '\n') i++; }
        else src[k++] = tmpl[i];
    }
    if (k && src[k - 1] == '\n') k--;
    src[k] = 0;
    j.src = src; j.src_len = k;
    lt_status st = jcut(&j);
    jbody root = {0};
    if (st == LT_OK) {
        int stop;
        if (!jparse_body(&j, &root, NULL, 0, &stop)) st = j.st ? j.st : lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory parsing the chat template");
        else if (j.pi < j.np) {
            jtok kw = jstmt_kw(&j, &j.parts[j.pi]);
            st = jerr(&j, LT_ERR_FORMAT, j.parts[j.pi].pos, "unexpected '%.*s'", (int)kw.n, kw.s);
        }
    }
    if (st == LT_OK) {
        /* globals: messages, add_generation_prompt, the special token strings */
        jv *msgs = jv_list(&j, n);
        for (size_t i = 0; msgs && i < n; i++) {
            jv *d = jv_dict(&j);
            if (!d) { msgs = NULL; break; }
            jv_dict_set(&j, d, jv_str(&j, "role", 4), messages[i].role ? jv_str(&j, messages[i].role, strlen(messages[i].role)) : &J_NONE);
            jv_dict_set(&j, d, jv_str(&j, "content", 7), messages[i].content ? jv_str(&j, messages[i].content, strlen(messages[i].content)) : &J_NONE);
            jv_push(&j, msgs, d);
        }
        if (!msgs) st = lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory rendering the chat template");
        else {
            jset(&j, "messages", 8, msgs);
            jset(&j, "add_generation_prompt", 21, jv_bool(add_generation_prompt));
            /* transformers passes these as None when the caller gives none */
            jset(&j, "tools", 5, &J_NONE);
            jset(&j, "documents", 9, &J_NONE);
            for (size_t i = 0; i < n_vars; i++)
                if (vars[i].value) jset(&j, vars[i].name, strlen(vars[i].name), jv_str(&j, vars[i].value, strlen(vars[i].value)));
            jpush_frame(&j);
            st = jexec(&j, &root);
        }
    }
    free(j.vars);
    while (j.arena) { jblk *b = j.arena->next; free(j.arena); j.arena = b; }
    free(src);
    return st;
}

/* tok_pretok.c - the pre-tokenizer steps of tokenizer.json: Split (a regex run by PCRE2 in UTF +
 * UCP mode with JIT, the five delimiter behaviours and invert), ByteLevel (add_prefix_space, the
 * GPT-2 regex when use_regex) and Digits. Patterns are written for Oniguruma (what `tokenizers`
 * uses); the one difference that matters for these patterns, \s, is rewritten to Oniguruma's
 * Unicode White_Space set (PCRE2's UCP \s lacks U+0085). */
#include "tok/tok.h"
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* Unicode White_Space, as Oniguruma's \s, without the brackets (for use inside a class). */
static const char LT_WS_CLASS[] = "\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

lt_status lt_tok_compile_regex(const char *pattern, size_t len, int literal, const char *field, pcre2_code **out) {
    *out = NULL;
    /* rewrite \s and \S (outside classes: [..] / [^..]; inside a class: the members) */
    size_t cap = len * 1 + 64, n = 0;
    for (size_t i = 0; i + 1 < len; i++) if (pattern[i] == '\\' && (pattern[i + 1] == 's' || pattern[i + 1] == 'S')) cap += sizeof LT_WS_CLASS + 4;
    char *pat = malloc(cap);
    if (!pat) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory compiling %s", field);
    if (literal) { memcpy(pat, pattern, len); n = len; }
    else {
        int in_class = 0;
        for (size_t i = 0; i < len; i++) {
            char c = pattern[i];
            if (c == '\\' && i + 1 < len) {
                char e = pattern[i + 1];
                if (e == 's' || e == 'S') {
                    if (in_class && e == 'S') { free(pat); return lt_error(LT_ERR_UNSUPPORTED, "tokenizer.json: %s: \\S inside a character class is not supported", field); }
                    if (in_class) { memcpy(pat + n, LT_WS_CLASS, sizeof LT_WS_CLASS - 1); n += sizeof LT_WS_CLASS - 1; }
                    else {
                        pat[n++] = '[';
                        if (e == 'S') pat[n++] = '^';
                        memcpy(pat + n, LT_WS_CLASS, sizeof LT_WS_CLASS - 1); n += sizeof LT_WS_CLASS - 1;
                        pat[n++] = ']';
                    }
                    i++;
                    continue;
                }
                pat[n++] = c; pat[n++] = e; i++;
                continue;
            }
            if (c == '[' && !in_class) {
                in_class = 1;
                pat[n++] = c;
                /* a ']' right after '[' or '[^' is a literal member */
                if (i + 1 < len && pattern[i + 1] == '^') { pat[n++] = '^'; i++; }
                if (i + 1 < len && pattern[i + 1] == ']') { pat[n++] = ']'; i++; }
                continue;
            }
            if (c == '[' && in_class && i + 1 < len && pattern[i + 1] == ':') { /* [:alpha:] */
                const char *e = memchr(pattern + i + 2, ']', len - i - 2);
                if (e) { size_t k = (size_t)(e - (pattern + i)) + 1; memcpy(pat + n, pattern + i, k); n += k; i += k - 1; continue; }
            }
            if (c == ']' && in_class) in_class = 0;
            pat[n++] = c;
        }
    }
    int err;
    PCRE2_SIZE erroff;
    uint32_t opts = PCRE2_UTF | PCRE2_NO_UTF_CHECK | (literal ? PCRE2_LITERAL : PCRE2_UCP); /* LITERAL refuses UCP */
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, n, opts, &err, &erroff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        lt_status st = lt_error(LT_ERR_FORMAT, "tokenizer.json: %s: the regex does not compile at offset %zu: %s (pattern: %.*s)",
                                field, (size_t)erroff, (const char *)msg, (int)(n > 200 ? 200 : n), pat);
        free(pat);
        return st;
    }
    free(pat);
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* without JIT, pcre2_match interprets */
    *out = re;
    return LT_OK;
}

static lt_status lt_pieces_push(lt_tok_pieces *v, uint32_t s, uint32_t e, uint32_t prefix) {
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 64;
        lt_tok_piece *np = realloc(v->p, nc * sizeof *np);
        if (!np) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory splitting text");
        v->p = np; v->cap = nc;
    }
    v->p[v->n++] = (lt_tok_piece){s, e, prefix};
    return LT_OK;
}

/* Intervals of one piece's subject (offsets into the subject): is_match per interval. */
typedef struct lt_ival { uint32_t s, e; int m; } lt_ival;
typedef struct lt_ivals { lt_ival *v; size_t n, cap; } lt_ivals;
static lt_status lt_ivals_push(lt_ivals *iv, uint32_t s, uint32_t e, int m) {
    if (iv->n == iv->cap) {
        size_t nc = iv->cap ? iv->cap * 2 : 64;
        lt_ival *nv = realloc(iv->v, nc * sizeof *nv);
        if (!nv) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory splitting text");
        iv->v = nv; iv->cap = nc;
    }
    iv->v[iv->n++] = (lt_ival){s, e, m};
    return LT_OK;
}

static inline int lt_is_numeric(uint32_t cp) {
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

/* The matches of one step over subj[len] as intervals covering it (tokenizers' find_matches). */
static lt_status lt_step_matches(const lt_tok_pre *st, const char *subj, size_t len, pcre2_match_data *md, lt_ivals *iv) {
    iv->n = 0;
    uint32_t prev = 0;
    if (st->kind == LT_PRE_DIGITS) {
        for (size_t i = 0; i < len;) {
            uint32_t cp;
            int l = lt_utf8_decode((const unsigned char *)subj + i, &cp);
            if (lt_is_numeric(cp)) {
                if (prev < i) LT_TRY(lt_ivals_push(iv, prev, (uint32_t)i, 0));
                LT_TRY(lt_ivals_push(iv, (uint32_t)i, (uint32_t)(i + l), 1));
                prev = (uint32_t)(i + l);
            }
            i += (size_t)l;
        }
    } else {
        PCRE2_SIZE start = 0;
        while (start <= len) {
            int rc = pcre2_jit_match(st->re, (PCRE2_SPTR)subj, len, start, PCRE2_NO_UTF_CHECK, md, NULL);
            if (rc == PCRE2_ERROR_JIT_BADOPTION)
                rc = pcre2_match(st->re, (PCRE2_SPTR)subj, len, start, PCRE2_NO_UTF_CHECK, md, NULL);
            if (rc == PCRE2_ERROR_NOMATCH) break;
            if (rc < 0) {
                PCRE2_UCHAR msg[256];
                pcre2_get_error_message(rc, msg, sizeof msg);
                return lt_error(LT_ERR_INTERNAL, "pre-tokenizer regex failed: %s", (const char *)msg);
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            uint32_t ms = (uint32_t)ov[0], me = (uint32_t)ov[1];
            if (ms > prev) LT_TRY(lt_ivals_push(iv, prev, ms, 0));
            LT_TRY(lt_ivals_push(iv, ms, me, 1));
            prev = me;
            if (me == ms) { /* an empty match: step over one character */
                if (me >= len) break;
                uint32_t cp;
                start = me + (PCRE2_SIZE)lt_utf8_decode((const unsigned char *)subj + me, &cp);
            } else start = me;
        }
    }
    if (prev < len) LT_TRY(lt_ivals_push(iv, prev, (uint32_t)len, 0));
    return LT_OK;
}

/* Applies a delimiter behaviour in place (tokenizers' NormalizedString::split). */
static void lt_apply_behavior(lt_ivals *iv, int behavior) {
    size_t n = iv->n, w = 0;
    lt_ival *v = iv->v;
    switch (behavior) {
    case LT_SPLIT_ISOLATED: return;
    case LT_SPLIT_REMOVED:
        for (size_t i = 0; i < n; i++) if (!v[i].m) v[w++] = v[i];
        iv->n = w;
        return;
    case LT_SPLIT_MERGED_PREV: {
        int prev_match = 0;
        for (size_t i = 0; i < n; i++) {
            lt_ival x = v[i];
            if (x.m && !prev_match && w > 0) v[w - 1].e = x.e;
            else if (x.m && !prev_match) v[w++] = (lt_ival){x.s, x.e, 1};
            else v[w++] = (lt_ival){x.s, x.e, 0};
            prev_match = x.m;
        }
        iv->n = w;
        return;
    }
    case LT_SPLIT_MERGED_NEXT: {
        /* tokenizers folds from the end; the result is built from the back of the array (a slot is
         * written only after it has been read) and moved to the front */
        int next_match = 0;
        size_t cnt = 0;
        for (size_t i = n; i-- > 0;) {
            lt_ival x = v[i];
            if (x.m && !next_match && cnt > 0) v[n - cnt].s = x.s; /* joins the interval after it */
            else { cnt++; v[n - cnt] = (lt_ival){x.s, x.e, 0}; }
            next_match = x.m;
        }
        memmove(v, v + (n - cnt), cnt * sizeof *v);
        iv->n = cnt;
        return;
    }
    case LT_SPLIT_CONTIGUOUS: {
        int prev_match = 0;
        for (size_t i = 0; i < n; i++) {
            lt_ival x = v[i];
            if (x.m == prev_match && w > 0) v[w - 1].e = x.e;
            else v[w++] = (lt_ival){x.s, x.e, 0};
            prev_match = x.m;
        }
        iv->n = w;
        return;
    }
    }
}

lt_status lt_tok_pretokenize(const lt_tokenizer *tok, const char *text, size_t len, pcre2_match_data *md,
                             lt_tok_pieces *out, lt_tok_pieces *tmp) {
    out->n = 0;
    if (len == 0) return LT_OK;
    LT_TRY(lt_pieces_push(out, 0, (uint32_t)len, 0));
    lt_ivals iv = {0};
    char small[256];
    lt_status st = LT_OK;
    for (int k = 0; k < tok->n_pre && st == LT_OK; k++) {
        const lt_tok_pre *step = &tok->pre[k];
        if (step->kind == LT_PRE_BYTELEVEL) {
            if (step->add_prefix_space)
                for (size_t i = 0; i < out->n; i++) {
                    lt_tok_piece *p = &out->p[i];
                    if (!p->prefix && !(p->end > p->start && text[p->start] == ' ')) p->prefix = 1;
                }
            if (!step->re) continue;
        }
        tmp->n = 0;
        for (size_t i = 0; i < out->n && st == LT_OK; i++) {
            lt_tok_piece p = out->p[i];
            const char *subj = text + p.start;
            size_t sl = p.end - p.start;
            char *heap = NULL;
            if (p.prefix) { /* the virtual space takes part in the matching */
                sl += 1;
                char *buf = sl <= sizeof small ? small : (heap = malloc(sl));
                if (!buf) { st = lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory splitting text"); break; }
                buf[0] = ' ';
                memcpy(buf + 1, text + p.start, sl - 1);
                subj = buf;
            }
            int behavior = step->kind == LT_PRE_SPLIT ? step->behavior : LT_SPLIT_ISOLATED;
            if (step->kind == LT_PRE_DIGITS && !step->individual) behavior = LT_SPLIT_CONTIGUOUS;
            st = lt_step_matches(step, subj, sl, md, &iv);
            if (st == LT_OK && step->kind == LT_PRE_SPLIT && step->invert)
                for (size_t j = 0; j < iv.n; j++) iv.v[j].m = !iv.v[j].m;
            if (st == LT_OK) lt_apply_behavior(&iv, behavior);
            for (size_t j = 0; j < iv.n && st == LT_OK; j++) {
                lt_ival x = iv.v[j];
                if (x.e <= x.s) continue;
                if (p.prefix) {
                    if (x.s == 0) st = lt_pieces_push(tmp, p.start, p.start + x.e - 1, 1);
                    else st = lt_pieces_push(tmp, p.start + x.s - 1, p.start + x.e - 1, 0);
                } else st = lt_pieces_push(tmp, p.start + x.s, p.start + x.e, 0);
            }
            free(heap);
        }
        lt_tok_pieces sw = *out; *out = *tmp; *tmp = sw;
    }
    free(iv.v);
    return st;
}

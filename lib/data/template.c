/* template.c - the built-in prompt templates and the {instruction}/{input}/{output} renderer
 * (Python str.format rules, so a notebook's alpaca_prompt.format(...) renders byte for byte). */
#include "data/template.h"
#include "data/reader.h"
#include "data/sbuf.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The notebook's Chinese Alpaca prompt (its "{}" fields named), the default. */
static const char TPL_ALPACA_ZH[] =
    "\n下面是描述一个任务，以一个输入然后提供一个回复"
    "\n### Instruction:\n{instruction}\n### Input:\n{input}\n### Response:\n{output}\n";
/* The Stanford Alpaca prompt (with input). */
static const char TPL_ALPACA[] =
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{output}";
/* ChatML as Qwen2-Instruct was trained on, one user turn: the instruction, a newline, the
 * input (empty for most records, leaving a trailing newline), then the assistant's turn. The
 * appended EOS of Qwen2 (<|im_end|>) closes the assistant turn. No system turn. */
static const char TPL_CHATML[] =
    "<|im_start|>user\n{instruction}\n{input}<|im_end|>\n<|im_start|>assistant\n{output}";

static const struct { const char *name; const char *text; } builtins[] = {
    {"alpaca-zh", TPL_ALPACA_ZH},
    {"alpaca", TPL_ALPACA},
    {"chatml", TPL_CHATML},
};

LT_API const char *lt_template_builtin(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < sizeof builtins / sizeof builtins[0]; i++)
        if (!strcmp(name, builtins[i].name)) return builtins[i].text;
    return NULL;
}

const char *lt_template_resolve(const char *name_or_text) {
    if (!name_or_text || !*name_or_text) return TPL_ALPACA_ZH;
    const char *b = lt_template_builtin(name_or_text);
    if (b) return b;
    if (strchr(name_or_text, '{')) return name_or_text;
    lt_error(LT_ERR_NOT_FOUND,
             "unknown template '%s': use a built-in name (alpaca-zh, alpaca, chatml) or a template text "
             "with {instruction}, {input} and {output}", name_or_text);
    return NULL;
}

/* The parser behind every function here: calls fn for each literal run and placeholder. */
lt_status lt_template_walk(const char *tpl, lt_template_piece_fn fn, void *user) {
    if (!tpl) return lt_error(LT_ERR_INVALID_ARGUMENT, "template is NULL");
    int next_pos = 0, n_output = 0, saw_after_output = 0;
    const char *p = tpl, *lit = tpl;
    lt_sbuf litbuf = {0};
    lt_status st = LT_OK;
#define FLUSH_LIT() do { if (p > lit) { if ((st = lt_sbuf_add(&litbuf, lit, (size_t)(p - lit))) < 0) goto done; } } while (0)
#define EMIT_LIT() do { if (litbuf.len) { if (fn) fn(LT_TPL_LITERAL, litbuf.p, litbuf.len, user); litbuf.len = 0; } } while (0)
    while (*p) {
        if (*p == '{' && p[1] == '{') { FLUSH_LIT(); p++; lit = p; p++; continue; } /* keep one '{' */
        if (*p == '}' && p[1] == '}') { FLUSH_LIT(); p++; lit = p; p++; continue; }
        if (*p == '}') {
            st = lt_error(LT_ERR_FORMAT, "template: single '}' at offset %zu (write '}}' for a literal brace)",
                          (size_t)(p - tpl));
            goto done;
        }
        if (*p != '{') { p++; continue; }
        FLUSH_LIT();
        const char *close = strchr(p, '}');
        if (!close) {
            st = lt_error(LT_ERR_FORMAT, "template: '{' at offset %zu is never closed (write '{{' for a literal brace)",
                          (size_t)(p - tpl));
            goto done;
        }
        size_t n = (size_t)(close - p - 1);
        int kind = 0;
        if (n == 0) {
            if (next_pos > 2) {
                st = lt_error(LT_ERR_FORMAT, "template: a 4th positional '{}' at offset %zu (only instruction, input, "
                              "output)", (size_t)(p - tpl));
                goto done;
            }
            kind = LT_TPL_INSTRUCTION + next_pos++;
        } else if (n == 11 && !strncmp(p + 1, "instruction", 11)) kind = LT_TPL_INSTRUCTION;
        else if (n == 5 && !strncmp(p + 1, "input", 5)) kind = LT_TPL_INPUT;
        else if (n == 6 && !strncmp(p + 1, "output", 6)) kind = LT_TPL_OUTPUT;
        else {
            st = lt_error(LT_ERR_FORMAT, "template: unknown placeholder '%.*s' at offset %zu (known: {instruction}, "
                          "{input}, {output}; write '{{' for a literal brace)", (int)(n + 2 > 40 ? 40 : n + 2), p,
                          (size_t)(p - tpl));
            goto done;
        }
        if (kind == LT_TPL_OUTPUT) n_output++;
        else if (n_output) saw_after_output = 1;
        if (n_output > 1) {
            st = lt_error(LT_ERR_FORMAT, "template: {output} appears twice (second at offset %zu)", (size_t)(p - tpl));
            goto done;
        }
        if (saw_after_output) {
            st = lt_error(LT_ERR_FORMAT, "template: a placeholder at offset %zu comes after {output}; the response "
                          "must be the last field", (size_t)(p - tpl));
            goto done;
        }
        EMIT_LIT();
        if (fn) fn(kind, NULL, 0, user);
        p = close + 1;
        lit = p;
    }
    FLUSH_LIT();
    EMIT_LIT();
    if (!n_output) st = lt_error(LT_ERR_FORMAT, "template has no {output}: the response would be missing from the text");
done:
    lt_sbuf_free(&litbuf);
    return st;
#undef FLUSH_LIT
#undef EMIT_LIT
}

lt_status lt_template_check(const char *tpl) { return lt_template_walk(tpl, NULL, NULL); }

typedef struct {
    const char *field[4];
    lt_sbuf out;
    size_t output_at;
    int stop_at_output, stopped;
    lt_status st;
} render_ctx;

static void render_piece(int kind, const char *text, size_t len, void *user) {
    render_ctx *c = user;
    if (c->st < 0 || c->stopped) return;
    if (kind == LT_TPL_LITERAL) { c->st = lt_sbuf_add(&c->out, text, len); return; }
    if (kind == LT_TPL_OUTPUT) {
        c->output_at = c->out.len;
        if (c->stop_at_output) { c->stopped = 1; return; }
    }
    c->st = lt_sbuf_adds(&c->out, c->field[kind] ? c->field[kind] : "");
}

static lt_status render(const char *tpl, const char *ins, const char *inp, const char *outp, int stop, char **out,
                        size_t *len, size_t *output_at) {
    render_ctx c = {{NULL, ins, inp, outp}, {0}, 0, stop, 0, LT_OK};
    LT_TRY(lt_sbuf_reserve(&c.out, 0));
    lt_status st = lt_template_walk(tpl, render_piece, &c);
    if (st >= 0) st = c.st;
    if (st < 0) { lt_sbuf_free(&c.out); return st; }
    *out = c.out.p;
    if (len) *len = c.out.len;
    if (output_at) *output_at = c.output_at;
    return LT_OK;
}

lt_status lt_template_render_alloc(const char *tpl, const char *instruction, const char *input, const char *output,
                                   char **out, size_t *len, size_t *output_at) {
    return render(tpl, instruction, input, output, 0, out, len, output_at);
}

lt_status lt_template_render_prompt(const char *tpl, const char *instruction, const char *input, char **out) {
    return render(tpl, instruction, input, "", 1, out, NULL, NULL);
}

LT_API lt_status lt_template_render(const char *template_name_or_text, const char *instruction, const char *input,
                                    const char *output, char *text, size_t cap, size_t *len) {
    LT_CHECK_ARG(len, "lt_template_render: len is NULL");
    const char *tpl = lt_template_resolve(template_name_or_text);
    if (!tpl) return LT_ERR_NOT_FOUND;
    char *s;
    size_t n;
    LT_TRY(lt_template_render_alloc(tpl, instruction, input, output, &s, &n, NULL));
    *len = n;
    if (!text || cap <= n) {
        free(s);
        return lt_error(LT_ERR_BUFFER_TOO_SMALL, "lt_template_render: the text needs %zu bytes + NUL, cap is %zu", n,
                        cap);
    }
    memcpy(text, s, n + 1);
    free(s);
    return LT_OK;
}

typedef struct { lt_sbuf pre, suf; int after; lt_status st; } split_ctx;
static void split_piece(int kind, const char *text, size_t len, void *user) {
    split_ctx *c = user;
    if (c->st < 0) return;
    if (kind == LT_TPL_OUTPUT) { c->after = 1; return; }
    if (c->after) { c->st = lt_sbuf_add(&c->suf, text, len); return; }
    if (kind == LT_TPL_INSTRUCTION) { c->st = lt_sbuf_adds(&c->pre, "{instruction}"); return; }
    if (kind == LT_TPL_INPUT) { c->st = lt_sbuf_adds(&c->pre, "{input}"); return; }
    for (size_t i = 0; i < len && c->st >= 0; i++) {
        c->st = lt_sbuf_add(&c->pre, text + i, 1);
        if (c->st >= 0 && (text[i] == '{' || text[i] == '}')) c->st = lt_sbuf_add(&c->pre, text + i, 1);
    }
}

lt_status lt_template_split(const char *tpl, char **prefix, char **suffix) {
    split_ctx c = {{0}, {0}, 0, LT_OK};
    lt_status st = lt_sbuf_reserve(&c.pre, 0);
    if (st >= 0) st = lt_sbuf_reserve(&c.suf, 0);
    if (st >= 0) st = lt_template_walk(tpl, split_piece, &c);
    if (st >= 0) st = c.st;
    if (st < 0) { lt_sbuf_free(&c.pre); lt_sbuf_free(&c.suf); return st; }
    *prefix = c.pre.p;
    *suffix = c.suf.p;
    return LT_OK;
}

lt_status lt_template_read_file(const char *path, char **out) {
    char *data;
    size_t len;
    LT_TRY(lt_read_file(path, &data, &len));
    if (len == 0) { free(data); return lt_error(LT_ERR_FORMAT, "%s: the template file is empty", path); }
    if (strlen(data) != len) {
        free(data);
        return lt_error(LT_ERR_FORMAT, "%s: the template file holds a NUL byte", path);
    }
    size_t bad = lt_data_utf8_check((const unsigned char *)data, len);
    if (bad < len) {
        free(data);
        return lt_error(LT_ERR_UTF8, "%s: invalid UTF-8 at byte offset %zu", path, bad);
    }
    lt_status st = lt_template_check(data);
    if (st < 0) { free(data); return lt_error_wrap(st, "%s", path); }
    *out = data;
    return LT_OK;
}

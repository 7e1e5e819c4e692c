/* tok_jinja.h - a small interpreter for the Jinja subset that chat templates use (Qwen2,
 * Qwen2.5, Llama-3, ChatML): text, {{ }}, {% for/if/elif/else/set/break/continue %}, comments,
 * whitespace control (-), and transformers' environment (trim_blocks, lstrip_blocks, tojson,
 * raise_exception, namespace, strftime_now). Anything else is LT_ERR_UNSUPPORTED naming the text. */
#ifndef LT_TOK_JINJA_H
#define LT_TOK_JINJA_H
#include "tok/tok.h"

typedef struct lt_jinja_var { const char *name; const char *value; } lt_jinja_var; /* string globals */

/* Renders `tmpl` with messages[n] (role/content dicts), add_generation_prompt and the string
 * globals vars[n_vars] (bos_token, eos_token ...), appending to *out. */
lt_status lt_jinja_render_chat(const char *tmpl, const lt_chat_message *messages, size_t n, int add_generation_prompt,
                               const lt_jinja_var *vars, size_t n_vars, lt_tok_buf *out);
#endif

/* tok_chat.c - lt_tokenizer_apply_chat_template: renders tokenizer_config.json's chat_template
 * (or an override) through the Jinja subset of tok_jinja.c, with the globals transformers passes
 * (messages, add_generation_prompt, bos_token, eos_token, pad_token). */
#include "tok/tok_jinja.h"
#include <stdlib.h>
#include <string.h>

lt_status lt_tokenizer_apply_chat_template(const lt_tokenizer *tok, const lt_chat_message *messages, size_t n_messages,
                                           int32_t add_generation_prompt, const char *template_override, char *text,
                                           size_t cap, size_t *len) {
    LT_CHECK_ARG(len && (messages || !n_messages), "lt_tokenizer_apply_chat_template: len (and messages) must not be NULL");
    LT_CHECK_ARG(text || !cap, "lt_tokenizer_apply_chat_template: text is NULL with cap %zu", cap);
    const char *tmpl = template_override ? template_override : tok ? tok->chat_template : NULL;
    if (!tmpl)
        return lt_error(LT_ERR_NOT_FOUND, "%s: tokenizer_config.json has no chat_template (pass a template)",
                        tok && tok->dir ? tok->dir : "tokenizer");
    for (size_t i = 0; i < n_messages; i++)
        if (!messages[i].role || !messages[i].content)
            return lt_error(LT_ERR_INVALID_ARGUMENT, "chat message %zu has a NULL role or content", i);
    lt_jinja_var vars[3] = {
        {"bos_token", tok ? tok->bos_text : NULL}, {"eos_token", tok ? tok->eos_text : NULL}, {"pad_token", tok ? tok->pad_text : NULL}};
    lt_tok_buf out = {0};
    lt_status st = lt_jinja_render_chat(tmpl, messages, n_messages, add_generation_prompt, vars, 3, &out);
    if (st == LT_OK) {
        *len = out.len;
        if (cap > out.len) { memcpy(text, out.data ? out.data : "", out.len); text[out.len] = 0; }
        else if (cap == out.len && cap) memcpy(text, out.data, out.len);
        else if (out.len || !text)
            st = lt_error(LT_ERR_BUFFER_TOO_SMALL, "lt_tokenizer_apply_chat_template: %zu bytes do not fit in %zu (the needed size is in *len)",
                          out.len, cap);
    }
    free(out.data);
    return st;
}

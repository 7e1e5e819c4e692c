/* generate_text.c - lt_generate_text: one instruction through a prompt template to generated
 * text (what `loratune generate --instruction` and the before/after samples of
 * `loratune train` show). The prompt is encoded as transformers' tokenizer(prompt) encodes it
 * (the post-processor's BOS included), the text is what decoding prompt + new ids adds. */
#include "infer/infer.h"
#include "tok/tok.h"
#include <stdlib.h>
#include <string.h>

typedef struct text_sink {
    char *buf;
    size_t len, cap;
    lt_stream_fn user_fn;
    void *user_data;
    lt_status err;
} text_sink;

static int sink_piece(const char *piece, size_t len, int32_t token, void *ud) {
    text_sink *s = ud;
    if (s->len + len + 1 > s->cap) {
        size_t cap = (s->len + len + 1) * 2;
        char *b = realloc(s->buf, cap);
        if (!b) { s->err = LT_ERR_OUT_OF_MEMORY; return 1; }
        s->buf = b;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, piece, len);
    s->len += len;
    s->buf[s->len] = 0;
    return s->user_fn ? s->user_fn(piece, len, token, s->user_data) : 0;
}

lt_status lt_generate_text(lt_model *model, const lt_tokenizer *tok, const char *tmpl, const char *instruction,
                           const char *input, const lt_generate_params *params, char **out_text,
                           size_t *out_n_tokens) {
    LT_CHECK_ARG(model && tok && instruction && params && out_text,
                 "lt_generate_text: model, tokenizer, instruction, params and out_text are required");
    *out_text = NULL;
    if (out_n_tokens) *out_n_tokens = 0;
    if (!tmpl) tmpl = "alpaca-zh";
    if (!input) input = "";
    size_t plen = 0;
    lt_status st = lt_template_render(tmpl, instruction, input, "", NULL, 0, &plen);
    if (st != LT_OK && st != LT_ERR_BUFFER_TOO_SMALL) return st;
    char *prompt = malloc(plen + 1);
    int32_t *ids = NULL, *out = NULL;
    text_sink sink = {0};
    if (!prompt) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory for the prompt");
    st = lt_template_render(tmpl, instruction, input, "", prompt, plen + 1, &plen);
    size_t n = 0, n_out = 0;
    /* as transformers' tokenizer(prompt): with the post-processor's BOS where it adds one */
    if (st == LT_OK) st = lt_tokenizer_encode_prompt(tok, prompt, plen, &ids, &n);
    size_t cap_out = (size_t)(params->max_new_tokens > 0 ? params->max_new_tokens : 0) + 1;
    if (st == LT_OK && !(out = malloc(sizeof *out * cap_out))) st = lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory");
    if (st == LT_OK) {
        lt_generate_params gp = *params;
        gp.tokenizer = tok;
        sink.user_fn = params->on_text;
        sink.user_data = params->user_data;
        gp.on_text = sink_piece;
        gp.user_data = &sink;
        st = lt_generate(model, ids, n, &gp, out, cap_out, &n_out);
        if (sink.err) st = lt_error(sink.err, "out of host memory for the generated text");
    }
    if (st == LT_OK || st == LT_STOPPED) {
        if (!sink.buf && !(sink.buf = calloc(1, 1))) st = lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory");
        else {
            *out_text = sink.buf;
            sink.buf = NULL;
            if (out_n_tokens) *out_n_tokens = n_out;
        }
    }
    free(sink.buf);
    free(prompt);
    free(ids);
    free(out);
    return st;
}

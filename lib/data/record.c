/* record.c - record kinds: turns one JSON object (or API arguments) into the text to tokenize
 * and what of it carries loss, or into pre-tokenized ids. Alpaca records go through the prompt
 * template, chat records through the tokenizer's chat template.
 *
 * What each kind becomes is what TRL's SFTTrainer makes of the same data (checked against
 * trl/trainer/sft_trainer.py, SFTTrainer._prepare_dataset, at v0.29.1 (lines ~1020-1131), the
 * same code from v0.20.0 on; transformers 5.17's apply_chat_template for the chat case):
 *  - text (and Alpaca with loss on every token, i.e. the notebook's formatting function writing
 *    a "text" field): EOS text appended unless the text already ends with it (no blanks
 *    skipped), then encoded as tokenizer(text) with the default add_special_tokens=True: the
 *    post-processor's BOS for Llama / Gemma / Mistral / Phi-3, nothing for Qwen2. A text that
 *    itself begins with the BOS text gets two (TRL does not guard against that here);
 *  - Alpaca with loss on the response only = TRL's prompt-completion records (prompt: the
 *    template up to {output}; completion: the rest, with the EOS appended to it unless it ends
 *    with it): prompt + completion encoded as one text with special tokens, and the loss mask is
 *    by token count, as TRL's: the prompt is also encoded alone, with special tokens (so a BOS
 *    the tokenizer adds is counted), and the first len(tokenizer(prompt)) tokens of the record
 *    carry no loss, every later one does (lt_prep.mask_prompt; dataset.c encodes the prompt on
 *    the same thread as the record: one extra encode of the prompt, for this record kind only).
 *    That is "the tokens of the completion" whenever the prompt's own tokens begin the whole
 *    record's. Where a token merges across the boundary (TRL logs a "Mismatch between tokenized
 *    prompt and the start of tokenized prompt+completion" warning there, loratune a debug line;
 *    e.g. 2 of the 1475 ruozhiba records with Qwen2's BPE, ':\n' + '\n\n...' -> ':\n\n\n'),
 *    the count still decides: that merged token carries no loss although it holds completion
 *    bytes, as in TRL (a byte-overlap rule, loratune's before, would label it);
 *  - chat (messages / conversations): apply_chat_template(messages, tokenize=True), which
 *    encodes the rendered text with add_special_tokens=False (the template writes its own BOS
 *    text where the family has one, so no second BOS), and no EOS is appended: TRL's add_eos
 *    step only runs on non-conversational data. Loss on the assistant turns only is loratune's
 *    own span rule (TRL needs {% generation %} markers in the template for that): a token
 *    carries loss when its byte offsets overlap an assistant turn's span (a BOS or other added
 *    token, of no width, never does);
 *  - pre-tokenized input_ids (+ labels): used as they are. */
#include "data/dataset_impl.h"
#include "data/reader.h"
#include "data/sbuf.h"
#include "data/template.h"
#include <stdlib.h>
#include <string.h>

void lt_prep_free(lt_prep *p) {
    if (!p) return;
    free(p->text);
    free(p->spans);
    free(p->ids);
    free(p->labels);
    memset(p, 0, sizeof *p);
}

static const char *json_kind(const json_t *v) {
    if (!v) return "missing";
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

/* A required or optional string field. *s = NULL when absent (or null, if null_ok). */
static lt_status get_str(json_t *obj, const char *key, int required, int null_ok, const char **s) {
    json_t *v = json_object_get(obj, key);
    *s = NULL;
    if (!v || (null_ok && json_is_null(v))) {
        if (required) return lt_error(LT_ERR_DATA, "missing field '%s'", key);
        return LT_OK;
    }
    if (!json_is_string(v)) return lt_error(LT_ERR_DATA, "field '%s' is %s, expected a string", key, json_kind(v));
    *s = json_string_value(v);
    return LT_OK;
}

/* Appends EOS unless the text from byte `from` on already ends with it (TRL's add_eos: the
 * text, or a prompt-completion record's completion, is checked as it is). */
static lt_status add_eos(const lt_dataset *ds, lt_sbuf *b, size_t from) {
    if (!ds->p.add_eos || !ds->eos) return LT_OK;
    size_t e = strlen(ds->eos), n = b->len;
    if (n - from >= e && !memcmp(b->p + n - e, ds->eos, e)) return LT_OK;
    return lt_sbuf_add(b, ds->eos, e);
}

lt_status lt_prep_alpaca(const lt_dataset *ds, const char *ins, const char *inp, const char *outp, lt_prep *out) {
    memset(out, 0, sizeof *out);
    if (!ins) return lt_error(LT_ERR_DATA, "missing field '%s'", ds->p.instruction_field);
    if (!outp) return lt_error(LT_ERR_DATA, "missing field '%s'", ds->p.output_field);
    if (!*outp)
        return lt_error(LT_ERR_DATA, "field '%s' is empty: a record without a response teaches nothing",
                        ds->p.output_field);
    lt_sbuf b = {0};
    size_t at;
    LT_TRY(lt_template_render_alloc(ds->tpl, ins, inp ? inp : "", outp, &b.p, &b.len, &at));
    b.cap = b.len + 1;
    /* loss on the response only is TRL's prompt-completion record: EOS goes on the completion,
     * and the labels go by the token count of the prompt b.p[0, at) encoded alone (dataset.c) */
    int resp = ds->p.loss_on == LT_LOSS_RESPONSE;
    lt_status st = add_eos(ds, &b, resp ? at : 0);
    if (st < 0) { lt_sbuf_free(&b); return st; }
    out->text = b.p;
    out->len = b.len;
    out->add_special = 1;
    out->mask_prompt = resp;
    out->prompt_len = at;
    return LT_OK;
}

lt_status lt_prep_text(const lt_dataset *ds, const char *text, lt_prep *out) {
    memset(out, 0, sizeof *out);
    if (!text) return lt_error(LT_ERR_DATA, "missing field '%s'", ds->p.text_field);
    if (!*text) return lt_error(LT_ERR_DATA, "field '%s' is empty", ds->p.text_field);
    if (ds->p.loss_on == LT_LOSS_RESPONSE)
        return lt_error(LT_ERR_DATA, "a plain '%s' record has no response span for loss_on=response; use loss on "
                        "every token, or Alpaca / chat records", ds->p.text_field);
    lt_sbuf b = {0};
    lt_status st = lt_sbuf_adds(&b, text);
    if (st >= 0) st = add_eos(ds, &b, 0);
    if (st < 0) { lt_sbuf_free(&b); return st; }
    out->text = b.p;
    out->len = b.len;
    out->add_special = 1;
    return LT_OK;
}

/* ---- chat ---- */
static lt_status chat_render(const lt_dataset *ds, const lt_chat_message *m, size_t n, int gen, lt_sbuf *b) {
    b->len = 0;
    LT_TRY(lt_sbuf_reserve(b, 1024));
    size_t len = 0;
    lt_status st = lt_tokenizer_apply_chat_template(ds->tok, m, n, gen, NULL, b->p, b->cap, &len);
    if (st == LT_ERR_BUFFER_TOO_SMALL || (st == LT_OK && len >= b->cap)) {
        LT_TRY(lt_sbuf_reserve(b, len + 1));
        st = lt_tokenizer_apply_chat_template(ds->tok, m, n, gen, NULL, b->p, b->cap, &len);
    }
    if (st < 0) return lt_error_wrap(st, "rendering the chat template");
    b->len = len;
    b->p[len] = 0;
    return LT_OK;
}

static lt_status prep_chat(lt_dataset *ds, json_t *obj, lt_prep *out) {
    json_t *msgs = json_object_get(obj, "messages");
    const char *key = "messages", *rk = "role", *ck = "content";
    int sharegpt = 0;
    if (!msgs) {
        msgs = json_object_get(obj, "conversations");
        key = "conversations"; rk = "from"; ck = "value"; sharegpt = 1;
    }
    if (!msgs) return lt_error(LT_ERR_DATA, "missing field 'messages' (or 'conversations')");
    if (!json_is_array(msgs)) return lt_error(LT_ERR_DATA, "field '%s' is %s, expected an array", key, json_kind(msgs));
    size_t n = json_array_size(msgs);
    if (n == 0) return lt_error(LT_ERR_DATA, "field '%s' is an empty array", key);
    lt_chat_message *m = lt_calloc(n, sizeof *m, "chat messages");
    if (!m) return LT_ERR_OUT_OF_MEMORY;
    lt_status st = LT_OK;
    size_t n_asst = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(msgs, i);
        if (!json_is_object(e)) {
            st = lt_error(LT_ERR_DATA, "%s[%zu] is %s, expected an object with '%s' and '%s'", key, i, json_kind(e), rk, ck);
            goto done;
        }
        const char *role, *content;
        if ((st = get_str(e, rk, 1, 0, &role)) < 0 || (st = get_str(e, ck, 1, 0, &content)) < 0) {
            st = lt_error_wrap(st, "%s[%zu]", key, i);
            goto done;
        }
        if (sharegpt) {
            if (!strcmp(role, "human") || !strcmp(role, "user")) role = "user";
            else if (!strcmp(role, "gpt") || !strcmp(role, "assistant") || !strcmp(role, "model")) role = "assistant";
            else if (strcmp(role, "system") != 0) {
                st = lt_error(LT_ERR_DATA, "%s[%zu]: unknown speaker '%s' (ShareGPT 'from' is human, gpt or system)", key,
                              i, role);
                goto done;
            }
        } else if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant") && strcmp(role, "tool")) {
            st = lt_error(LT_ERR_DATA, "%s[%zu]: unknown role '%s' (system, user, assistant or tool)", key, i, role);
            goto done;
        }
        if (!strcmp(role, "assistant")) n_asst++;
        m[i].role = role;
        m[i].content = content;
    }
    if (!n_asst) {
        st = lt_error(LT_ERR_DATA, "field '%s' has no assistant message: nothing to learn from", key);
        goto done;
    }
    lt_sbuf full = {0}, part = {0};
    if ((st = chat_render(ds, m, n, 0, &full)) < 0) goto chat_done;
    if (ds->p.loss_on == LT_LOSS_RESPONSE) {
        /* Each assistant turn's span: the render of the turns before it with the generation
         * prompt, up to the render that includes it (its trailing newline left out). This
         * needs a template that renders conversations prefix by prefix. */
        out->spans = lt_malloc(2 * n_asst * sizeof(size_t), "response spans");
        if (!out->spans) { st = LT_ERR_OUT_OF_MEMORY; goto chat_done; }
        for (size_t i = 0; i < n; i++) {
            if (strcmp(m[i].role, "assistant")) continue;
            if ((st = chat_render(ds, m, i, 1, &part)) < 0) goto chat_done;
            size_t a = part.len;
            int ok = a <= full.len && !memcmp(part.p, full.p, a);
            if ((st = chat_render(ds, m, i + 1, 0, &part)) < 0) goto chat_done;
            size_t b = part.len;
            ok = ok && b >= a && b <= full.len && !memcmp(part.p, full.p, b);
            if (!ok) {
                st = lt_error(LT_ERR_UNSUPPORTED, "the chat template does not render this conversation turn by turn "
                              "(message %zu), so the response spans cannot be found; use loss on every token", i);
                goto chat_done;
            }
            while (b > a && (full.p[b - 1] == '\n' || full.p[b - 1] == ' ')) b--;
            out->spans[2 * out->n_spans] = a;
            out->spans[2 * out->n_spans + 1] = b;
            out->n_spans++;
        }
    }
    /* no EOS appended and no special tokens added: what apply_chat_template(tokenize=True) gives */
    out->text = full.p;
    out->len = full.len;
    full.p = NULL;
chat_done:
    lt_sbuf_free(&full);
    lt_sbuf_free(&part);
done:
    free(m);
    return st;
}

/* ---- pre-tokenized ---- */
static lt_status int_array(const lt_dataset *ds, json_t *obj, const char *key, int labels, int32_t **out, size_t *n) {
    json_t *a = json_object_get(obj, key);
    *out = NULL;
    if (!a) return lt_error(LT_ERR_DATA, "missing field '%s'", key);
    if (!json_is_array(a)) return lt_error(LT_ERR_DATA, "field '%s' is %s, expected an array of token ids", key, json_kind(a));
    size_t len = json_array_size(a);
    if (len == 0) return lt_error(LT_ERR_DATA, "field '%s' is an empty array", key);
    int32_t *v = lt_malloc(len * sizeof *v, key);
    if (!v) return LT_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; i < len; i++) {
        json_t *e = json_array_get(a, i);
        json_int_t x = json_is_integer(e) ? json_integer_value(e) : 0;
        if (!json_is_integer(e) || (labels && x == -100 ? 0 : (x < 0 || x >= ds->vocab))) {
            free(v);
            if (!json_is_integer(e))
                return lt_error(LT_ERR_DATA, "field '%s'[%zu] is %s, expected an integer", key, i, json_kind(e));
            return lt_error(LT_ERR_DATA, "field '%s'[%zu] = %lld is outside the vocabulary [0, %d)%s", key, i,
                            (long long)x, ds->vocab, labels ? " (or -100)" : "");
        }
        v[i] = (int32_t)x;
    }
    *out = v;
    *n = len;
    return LT_OK;
}

static lt_status prep_tokens(lt_dataset *ds, json_t *obj, lt_prep *out) {
    LT_TRY(int_array(ds, obj, "input_ids", 0, &out->ids, &out->n));
    if (json_object_get(obj, "labels") && !json_is_null(json_object_get(obj, "labels"))) {
        size_t nl;
        lt_status st = int_array(ds, obj, "labels", 1, &out->labels, &nl);
        if (st < 0) return st;
        if (nl != out->n)
            return lt_error(LT_ERR_DATA, "field 'labels' has %zu entries but 'input_ids' has %zu", nl, out->n);
    }
    return LT_OK;
}

static lt_status detect_format(lt_dataset *ds, json_t *obj) {
    if (json_object_get(obj, "messages") || json_object_get(obj, "conversations")) ds->format = LT_DATA_CHAT;
    else if (json_object_get(obj, "input_ids")) ds->format = LT_DATA_TOKENS;
    else if (json_object_get(obj, ds->p.instruction_field) || json_object_get(obj, ds->p.output_field))
        ds->format = LT_DATA_ALPACA;
    else if (json_object_get(obj, ds->p.text_field)) ds->format = LT_DATA_TEXT;
    else {
        char keys[256] = "";
        size_t k = 0;
        const char *name;
        json_t *v;
        json_object_foreach(obj, name, v) {
            (void)v;
            int w = snprintf(keys + k, sizeof keys - k, "%s'%s'", k ? ", " : "", name);
            if (w < 0 || (size_t)w >= sizeof keys - k) break;
            k += (size_t)w;
        }
        return lt_error(LT_ERR_DATA, "the record has none of the known fields ('%s'/'%s' for Alpaca, '%s', 'messages', "
                        "'conversations', 'input_ids'); it has %s. Map the field names (instruction_field, input_field, "
                        "output_field, text_field: --instruction-field ... in the CLI) or set the format",
                        ds->p.instruction_field, ds->p.output_field, ds->p.text_field, k ? keys : "no fields");
    }
    return LT_OK;
}

lt_status lt_prep_from_json(lt_dataset *ds, json_t *obj, lt_prep *out) {
    memset(out, 0, sizeof *out);
    if (!json_is_object(obj)) return lt_error(LT_ERR_DATA, "the record is %s, expected an object", json_kind(obj));
    if (ds->format == LT_DATA_AUTO) LT_TRY(detect_format(ds, obj));
    lt_status st;
    switch (ds->format) {
    case LT_DATA_ALPACA: {
        const char *ins, *inp, *outp;
        LT_TRY(get_str(obj, ds->p.instruction_field, 1, 0, &ins));
        LT_TRY(get_str(obj, ds->p.input_field, 0, 1, &inp));
        LT_TRY(get_str(obj, ds->p.output_field, 1, 0, &outp));
        st = lt_prep_alpaca(ds, ins, inp, outp, out);
        break;
    }
    case LT_DATA_TEXT: {
        const char *text;
        LT_TRY(get_str(obj, ds->p.text_field, 1, 0, &text));
        st = lt_prep_text(ds, text, out);
        break;
    }
    case LT_DATA_CHAT: st = prep_chat(ds, obj, out); break;
    case LT_DATA_TOKENS: st = prep_tokens(ds, obj, out); break;
    default: st = lt_error(LT_ERR_INVALID_ARGUMENT, "unknown dataset format %d", ds->format);
    }
    if (st < 0) lt_prep_free(out);
    return st;
}

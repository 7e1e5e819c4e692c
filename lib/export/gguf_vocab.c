/* gguf_vocab.c - the tokenizer keys of a GGUF: for a SentencePiece-style tokenizer.json (Gemma,
 * Llama 2, Mistral, Phi-3) llama.cpp's "llama" model with scores (lt_export_gguf_vocab_spm); for a
 * byte-level BPE (gpt2-style) tokenizer as convert_hf_to_gguf.py writes it: tokens padded to vocab_size with [PAD{id}], token
 * types, merges as "a b" strings, special token ids from tokenizer_config.json and config.json,
 * add_bos_token and the chat template (specs/gguf-export.md §2). Read with jansson from
 * tokenizer.json / tokenizer_config.json in the tokenizer folder. */
#include "export/export.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <ctype.h>
#include <string.h>

enum { LT_TOK_NORMAL = 1, LT_TOK_UNKNOWN = 2, LT_TOK_CONTROL = 3, LT_TOK_USER_DEFINED = 4, LT_TOK_UNUSED = 5, LT_TOK_BYTE = 6 };

static json_t *lt_load_json(const char *dir, const char *name, int required, lt_status *st) {
    char *path = lt_path_join(dir, name);
    if (!path) { *st = LT_ERR_OUT_OF_MEMORY; return NULL; }
    if (!lt_file_exists(path)) {
        if (required)
            *st = lt_error(LT_ERR_NOT_FOUND, "%s not found: a GGUF needs the tokenizer (pass tokenizer_dir / --tokenizer)", path);
        free(path);
        return NULL;
    }
    json_error_t err;
    json_t *j = json_load_file(path, 0, &err);
    if (!j) *st = lt_error(LT_ERR_FORMAT, "%s:%d:%d: %s", path, err.line, err.column, err.text);
    free(path);
    return j;
}

/* convert_hf_to_gguf does_token_look_special */
static int lt_looks_special(const char *s) {
    size_t n = strlen(s);
    if (!strcmp(s, "<pad>") || !strcmp(s, "<mask>") || !strcmp(s, "<2mass>") || !strcmp(s, "[@BOS@]")) return 1;
    if (n >= 4 && !strncmp(s, "<|", 2) && !strcmp(s + n - 2, "|>")) return 1;
    /* "<｜" ... "｜>" (fullwidth bar, U+FF5C) */
    if (n >= 8 && !strncmp(s, "<\xef\xbd\x9c", 4) && !strcmp(s + n - 4, "\xef\xbd\x9c>")) return 1;
    if (n >= 8 && !strncmp(s, "<unused", 7) && s[n - 1] == '>') return 1;
    return 0;
}

/* "▁" (U+2581) -> " " in a fresh string */
static char *lt_unsentencepiece(const char *s) {
    char *o = lt_malloc(strlen(s) + 1, "a token");
    if (!o) return NULL;
    char *w = o;
    while (*s) {
        if (!strncmp(s, "\xe2\x96\x81", 3)) { *w++ = ' '; s += 3; }
        else *w++ = *s++;
    }
    *w = 0;
    return o;
}

/* The text of tokenizer_config.json's "<typ>_token" (a string or {"content": ...}). */
static const char *lt_special_text(json_t *tc, const char *typ) {
    char key[32];
    snprintf(key, sizeof key, "%s_token", typ);
    json_t *e = tc ? json_object_get(tc, key) : NULL;
    if (json_is_string(e)) return json_string_value(e);
    if (json_is_object(e) && json_is_string(json_object_get(e, "content"))) return json_string_value(json_object_get(e, "content"));
    return NULL;
}

static int lt_added_id(json_t *added, const char *content) {
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a) {
        json_t *c = json_object_get(a, "content"), *id = json_object_get(a, "id");
        if (json_is_string(c) && json_is_integer(id) && !strcmp(json_string_value(c), content))
            return (int)json_integer_value(id);
    }
    return -1;
}

/* True when node (a pre-tokenizer, or a Sequence of them) has a step of this type. */
static int lt_json_has_step(json_t *node, const char *list_key, const char *type) {
    if (!json_is_object(node)) return 0;
    const char *t = json_string_value(json_object_get(node, "type"));
    if (t && !strcmp(t, type)) return 1;
    json_t *list = json_object_get(node, list_key);
    size_t i;
    json_t *a;
    json_array_foreach(list, i, a) if (lt_json_has_step(a, list_key, type)) return 1;
    return 0;
}

/* Whether the tokenizer puts "▁" in front of the text: a Prepend normalizer, or a Metaspace
 * pre-tokenizer whose prepend_scheme is not "never" (older files: add_prefix_space). */
static int lt_spm_adds_prefix(json_t *tj) {
    json_t *norm = json_object_get(tj, "normalizer");
    if (lt_json_has_step(norm, "normalizers", "Prepend")) return 1;
    json_t *pre = json_object_get(tj, "pre_tokenizer");
    json_t *list = json_object_get(pre, "pretokenizers");
    json_t *ms = NULL;
    if (json_is_object(pre) && json_string_value(json_object_get(pre, "type")) &&
        !strcmp(json_string_value(json_object_get(pre, "type")), "Metaspace"))
        ms = pre;
    size_t i;
    json_t *a;
    json_array_foreach(list, i, a) {
        const char *t = json_string_value(json_object_get(a, "type"));
        if (t && !strcmp(t, "Metaspace")) ms = a;
    }
    if (!ms) return 0;
    const char *scheme = json_string_value(json_object_get(ms, "prepend_scheme"));
    if (scheme) return strcmp(scheme, "never") != 0;
    json_t *aps = json_object_get(ms, "add_prefix_space");
    return !json_is_false(aps);
}

/* True when tokenizer.json's post-processor puts a special token before the text. */
static int lt_post_adds_prefix(json_t *tj) {
    json_t *pp = json_object_get(tj, "post_processor");
    const char *t = json_string_value(json_object_get(pp, "type"));
    if (!t) return 0;
    if (!strcmp(t, "Sequence")) {
        size_t i;
        json_t *a;
        json_array_foreach(json_object_get(pp, "processors"), i, a) {
            const char *at = json_string_value(json_object_get(a, "type"));
            if (at && !strcmp(at, "TemplateProcessing")) { pp = a; t = at; break; }
        }
    }
    if (strcmp(t, "TemplateProcessing")) return 0;
    json_t *first = json_array_get(json_object_get(pp, "single"), 0);
    return json_object_get(first, "SpecialToken") != NULL;
}

/* The SentencePiece-style vocabulary (BPE with byte_fallback / no ByteLevel step: Llama 2,
 * Mistral, Gemma, Phi-3) as llama.cpp's "llama" (SPM) tokenizer model reads it: the tokens with
 * their "▁" as in tokenizer.json, token types NORMAL / UNKNOWN (the unk token) / CONTROL (special
 * added tokens) / USER_DEFINED (other added tokens) / BYTE (<0xNN>) / UNUSED (padding ids), and
 * scores. llama.cpp's SPM tokenizer merges the adjacent pair whose concatenation has the highest
 * score; a token made by BPE merge r gets score -r, so that it merges in the order of the
 * merges (the order SentencePiece's own scores give, and what tokenizers' BPE does); tokens that
 * no merge makes (characters, bytes, specials) get -(n_merges + id). convert_hf_to_gguf's
 * LlamaHfVocab (tokenizer.json without tokenizer.model) writes -1000 for every score, which makes
 * llama.cpp tokenize differently from the model's tokenizer. No merges key: the "llama" model
 * has none. add_space_prefix says whether "▁" goes in front of the text (and after each
 * special token, as llama.cpp does and the Prepend normalizer does per segment). */
/* Fills tokens[id] (owned copies) and types[id] = NORMAL from tokenizer.json's model.vocab; with
 * `byte_tokens`, the <0xNN> tokens of a byte-fallback vocabulary get BYTE. */
static lt_status lt_vocab_read(json_t *vocab, int64_t V, const char *dir, int byte_tokens, char **tokens,
                               int32_t *types) {
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        json_int_t id = json_integer_value(val);
        if (!json_is_integer(val) || id < 0 || id >= V)
            return lt_error(LT_ERR_FORMAT, "%s/tokenizer.json: token '%s' has id %lld; the model's vocab_size is %lld",
                            dir, key, (long long)id, (long long)V);
        if (!(tokens[id] = lt_strdup(key))) return LT_ERR_OUT_OF_MEMORY;
        types[id] = LT_TOK_NORMAL;
        if (byte_tokens && strlen(key) == 6 && !strncmp(key, "<0x", 3) && key[5] == '>' && isxdigit((unsigned char)key[3]) &&
            isxdigit((unsigned char)key[4]))
            types[id] = LT_TOK_BYTE;
    }
    return LT_OK;
}

/* The id of added token `a` (0 <= id < V), or -1 for an entry without content/id to skip. */
static lt_status lt_added_token_id(json_t *a, int64_t V, const char *dir, int64_t *id) {
    json_t *c = json_object_get(a, "content"), *idj = json_object_get(a, "id");
    *id = -1;
    if (!json_is_string(c) || !json_is_integer(idj)) return LT_OK;
    json_int_t v = json_integer_value(idj);
    if (v < 0 || v >= V)
        return lt_error(LT_ERR_FORMAT, "%s/tokenizer.json: added token '%s' has id %lld; the model's vocab_size is %lld",
                        dir, json_string_value(c), (long long)v, (long long)V);
    *id = v;
    return LT_OK;
}

/* Ids no token names (a vocab_size padded past the tokenizer) become [PADid], UNUSED. */
static lt_status lt_vocab_pad(int64_t V, char **tokens, int32_t *types) {
    for (int64_t id = 0; id < V; id++) {
        if (tokens[id]) continue;
        char pad[32];
        snprintf(pad, sizeof pad, "[PAD%lld]", (long long)id);
        if (!(tokens[id] = lt_strdup(pad))) return LT_ERR_OUT_OF_MEMORY;
        types[id] = LT_TOK_UNUSED;
    }
    return LT_OK;
}

static lt_status lt_export_gguf_vocab_spm(lt_exporter *ex, lt_gguf_writer *w, json_t *tj, json_t *tc, const char *dir) {
    const lt_config *cfg = &ex->model->cfg;
    const int64_t V = cfg->vocab_size;
    lt_status st = LT_OK;
    json_t *model = json_object_get(tj, "model");
    json_t *vocab = json_object_get(model, "vocab");
    json_t *added = json_object_get(tj, "added_tokens");
    json_t *jm = json_object_get(model, "merges");
    json_t *rank = json_object();
    char **tokens = lt_calloc((size_t)V, sizeof *tokens, "GGUF tokens");
    int32_t *types = lt_calloc((size_t)V, sizeof *types, "GGUF token types");
    float *scores = lt_calloc((size_t)V, sizeof *scores, "GGUF token scores");
    if (!tokens || !types || !scores || !rank) { st = LT_ERR_OUT_OF_MEMORY; goto done; }
    if ((st = lt_vocab_read(vocab, V, dir, 1, tokens, types)) != LT_OK) goto done;
    /* merge ranks of the merged tokens */
    size_t i, n_merges = json_is_array(jm) ? json_array_size(jm) : 0;
    json_t *a;
    json_array_foreach(jm, i, a) {
        char buf[512];
        const char *p0, *p1;
        size_t l0, l1;
        if (json_is_string(a)) {
            p0 = json_string_value(a);
            const char *sp = strchr(p0, ' ');
            if (!sp) { st = lt_error(LT_ERR_FORMAT, "%s/tokenizer.json: merge %zu is not \"a b\"", dir, i); goto done; }
            l0 = (size_t)(sp - p0); p1 = sp + 1; l1 = strlen(p1);
        } else if (json_is_array(a) && json_array_size(a) == 2 && json_is_string(json_array_get(a, 0)) &&
                   json_is_string(json_array_get(a, 1))) {
            p0 = json_string_value(json_array_get(a, 0)); l0 = strlen(p0);
            p1 = json_string_value(json_array_get(a, 1)); l1 = strlen(p1);
        } else {
            st = lt_error(LT_ERR_FORMAT, "%s/tokenizer.json: merge %zu is neither \"a b\" nor [a, b]", dir, i);
            goto done;
        }
        if (l0 + l1 >= sizeof buf) continue;
        memcpy(buf, p0, l0); memcpy(buf + l0, p1, l1); buf[l0 + l1] = 0;
        if (!json_object_get(rank, buf) && json_object_set_new(rank, buf, json_integer((json_int_t)i))) {
            st = LT_ERR_OUT_OF_MEMORY;
            goto done;
        }
    }
    for (int64_t id = 0; id < V; id++) {
        json_t *r = tokens[id] ? json_object_get(rank, tokens[id]) : NULL;
        scores[id] = r ? -(float)json_integer_value(r) : -(float)((int64_t)n_merges + id);
    }
    const char *unk = json_string_value(json_object_get(model, "unk_token"));
    int unk_id = -1;
    if (unk && json_is_integer(json_object_get(vocab, unk))) unk_id = (int)json_integer_value(json_object_get(vocab, unk));
    json_array_foreach(added, i, a) {
        int64_t id;
        if ((st = lt_added_token_id(a, V, dir, &id)) != LT_OK) goto done;
        if (id < 0) continue;
        free(tokens[id]);
        if (!(tokens[id] = lt_strdup(json_string_value(json_object_get(a, "content"))))) {
            st = LT_ERR_OUT_OF_MEMORY;
            goto done;
        }
        types[id] = json_is_true(json_object_get(a, "special")) ? LT_TOK_CONTROL : LT_TOK_USER_DEFINED;
        scores[id] = -(float)((int64_t)n_merges + id);
    }
    if (unk_id >= 0 && unk_id < V) types[unk_id] = LT_TOK_UNKNOWN;
    if ((st = lt_vocab_pad(V, tokens, types)) != LT_OK) goto done;
    st = lt_gguf_add_str(w, "tokenizer.ggml.model", "llama");
    if (st == LT_OK) st = lt_gguf_add_str(w, "tokenizer.ggml.pre", "default");
    if (st == LT_OK) st = lt_gguf_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tokens, (size_t)V);
    if (st == LT_OK) st = lt_gguf_add_arr_f32(w, "tokenizer.ggml.scores", scores, (size_t)V);
    if (st == LT_OK) st = lt_gguf_add_arr_i32(w, "tokenizer.ggml.token_type", types, (size_t)V);
    static const struct { const char *typ, *key; } specials[] = {
        {"bos", "tokenizer.ggml.bos_token_id"}, {"eos", "tokenizer.ggml.eos_token_id"},
        {"unk", "tokenizer.ggml.unknown_token_id"}, {"pad", "tokenizer.ggml.padding_token_id"},
    };
    int ids[4];
    for (int k = 0; k < 4; k++) {
        const char *text = lt_special_text(tc, specials[k].typ);
        ids[k] = text ? lt_added_id(added, text) : -1;
        if (ids[k] < 0 && text && json_is_integer(json_object_get(vocab, text))) ids[k] = (int)json_integer_value(json_object_get(vocab, text));
        if (ids[k] >= V) ids[k] = -1;
    }
    if (ids[0] < 0 && cfg->bos_token_id >= 0 && cfg->bos_token_id < V) ids[0] = cfg->bos_token_id;
    if (ids[1] < 0 && cfg->n_eos >= 1 && cfg->eos_token_ids[0] >= 0 && cfg->eos_token_ids[0] < V) ids[1] = cfg->eos_token_ids[0];
    if (ids[2] < 0) ids[2] = unk_id < V ? unk_id : -1;
    for (int k = 0; st == LT_OK && k < 4; k++)
        if (ids[k] >= 0) st = lt_gguf_add_u32(w, specials[k].key, (uint32_t)ids[k]);
    json_t *abos = tc ? json_object_get(tc, "add_bos_token") : NULL;
    json_t *aeos = tc ? json_object_get(tc, "add_eos_token") : NULL;
    int add_bos = json_is_boolean(abos) ? json_is_true(abos) : lt_post_adds_prefix(tj);
    if (st == LT_OK) st = lt_gguf_add_bool(w, "tokenizer.ggml.add_bos_token", add_bos);
    if (st == LT_OK) st = lt_gguf_add_bool(w, "tokenizer.ggml.add_eos_token", json_is_true(aeos));
    if (st == LT_OK) st = lt_gguf_add_bool(w, "tokenizer.ggml.add_space_prefix", lt_spm_adds_prefix(tj));
    json_t *ct = tc ? json_object_get(tc, "chat_template") : NULL;
    if (st == LT_OK && json_is_string(ct)) st = lt_gguf_add_str(w, "tokenizer.chat_template", json_string_value(ct));
done:
    if (tokens)
        for (int64_t k = 0; k < V; k++) free(tokens[k]);
    free(tokens);
    free(types);
    free(scores);
    json_decref(rank);
    return st;
}

lt_status lt_export_gguf_vocab(lt_exporter *ex, lt_gguf_writer *w) {
    const lt_config *cfg = &ex->model->cfg;
    const char *dir = lt_export_tokenizer_dir(ex);
    lt_status st = LT_OK;
    json_t *tj = lt_load_json(dir, "tokenizer.json", 1, &st);
    if (!tj) return st;
    json_t *tc = lt_load_json(dir, "tokenizer_config.json", 0, &st);
    if (st != LT_OK) { json_decref(tj); return st; }
    const int64_t V = cfg->vocab_size;
    char **tokens = lt_calloc((size_t)V, sizeof *tokens, "GGUF tokens");
    int32_t *types = lt_calloc((size_t)V, sizeof *types, "GGUF token types");
    const char **merges = NULL;
    char **owned = NULL; /* merge strings built from pairs */
    size_t n_merges = 0;
    if (!tokens || !types) { st = LT_ERR_OUT_OF_MEMORY; goto done; }
    json_t *model = json_object_get(tj, "model");
    json_t *vocab = json_object_get(model, "vocab");
    json_t *added = json_object_get(tj, "added_tokens");
    const char *mtype = json_string_value(json_object_get(model, "type"));
    if (!json_is_object(vocab) || (mtype && strcmp(mtype, "BPE"))) {
        st = lt_error(LT_ERR_UNSUPPORTED, "%s/tokenizer.json: model type %s; GGUF export handles byte-level BPE", dir,
                      mtype ? mtype : "(none)");
        goto done;
    }
    if (json_is_true(json_object_get(model, "byte_fallback")) ||
        !lt_json_has_step(json_object_get(tj, "pre_tokenizer"), "pretokenizers", "ByteLevel")) {
        /* Gemma, Phi-3, Mistral, Llama 2: a SentencePiece vocabulary, llama.cpp's "llama" model */
        st = lt_export_gguf_vocab_spm(ex, w, tj, tc, dir);
        goto done;
    }
    if ((st = lt_vocab_read(vocab, V, dir, 0, tokens, types)) != LT_OK) goto done;
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a) {
        int64_t id;
        if ((st = lt_added_token_id(a, V, dir, &id)) != LT_OK) goto done;
        if (id < 0) continue;
        free(tokens[id]);
        const char *text = json_string_value(json_object_get(a, "content"));
        if (json_is_true(json_object_get(a, "special")) || lt_looks_special(text)) {
            tokens[id] = lt_strdup(text);
            types[id] = LT_TOK_CONTROL;
        } else {
            tokens[id] = lt_unsentencepiece(text);
            types[id] = LT_TOK_USER_DEFINED;
        }
        if (!tokens[id]) { st = LT_ERR_OUT_OF_MEMORY; goto done; }
    }
    if ((st = lt_vocab_pad(V, tokens, types)) != LT_OK) goto done;
    /* merges: "a b" strings, or [a, b] pairs where a space inside a part becomes U+0120 */
    json_t *jm = json_object_get(model, "merges");
    n_merges = json_is_array(jm) ? json_array_size(jm) : 0;
    merges = lt_calloc(n_merges ? n_merges : 1, sizeof *merges, "GGUF merges");
    owned = lt_calloc(n_merges ? n_merges : 1, sizeof *owned, "GGUF merges");
    if (!merges || !owned) { st = LT_ERR_OUT_OF_MEMORY; goto done; }
    json_array_foreach(jm, i, a) {
        if (json_is_string(a)) {
            merges[i] = json_string_value(a);
        } else if (json_is_array(a) && json_array_size(a) == 2 && json_is_string(json_array_get(a, 0)) &&
                   json_is_string(json_array_get(a, 1))) {
            const char *p0 = json_string_value(json_array_get(a, 0)), *p1 = json_string_value(json_array_get(a, 1));
            char *m = lt_malloc(2 * (strlen(p0) + strlen(p1)) + 2, "a merge");
            if (!m) { st = LT_ERR_OUT_OF_MEMORY; goto done; }
            char *o = m;
            for (int part = 0; part < 2; part++) {
                for (const char *s = part ? p1 : p0; *s; s++) {
                    if (*s == ' ') { *o++ = (char)0xc4; *o++ = (char)0xa0; } /* U+0120 */
                    else *o++ = *s;
                }
                if (!part) *o++ = ' ';
            }
            *o = 0;
            merges[i] = owned[i] = m;
        } else {
            st = lt_error(LT_ERR_FORMAT, "%s/tokenizer.json: merge %zu is neither \"a b\" nor [a, b]", dir, i);
            goto done;
        }
    }
    if (!n_merges) {
        st = lt_error(LT_ERR_FORMAT, "%s/tokenizer.json: no merges (llama.cpp cannot load a BPE vocabulary without them)", dir);
        goto done;
    }
    /* the converter's pre-tokenizer names (its tokenizer hashes): Qwen2/2.5/3 "qwen2", Llama 3 "llama-bpe" */
    const char *pre = cfg->family == LT_FAMILY_QWEN2 || cfg->family == LT_FAMILY_QWEN3 ? "qwen2"
                      : cfg->family == LT_FAMILY_LLAMA                                  ? "llama-bpe"
                                                                                        : "default";
    st = lt_gguf_add_str(w, "tokenizer.ggml.model", "gpt2");
    if (st == LT_OK) st = lt_gguf_add_str(w, "tokenizer.ggml.pre", pre);
    if (st == LT_OK) st = lt_gguf_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tokens, (size_t)V);
    if (st == LT_OK) st = lt_gguf_add_arr_i32(w, "tokenizer.ggml.token_type", types, (size_t)V);
    if (st == LT_OK) st = lt_gguf_add_arr_str(w, "tokenizer.ggml.merges", merges, n_merges);
    /* special ids: tokenizer_config.json first (matched against added tokens), then config.json */
    static const struct { const char *typ, *key; } specials[] = {
        {"bos", "tokenizer.ggml.bos_token_id"}, {"eos", "tokenizer.ggml.eos_token_id"},
        {"unk", "tokenizer.ggml.unknown_token_id"}, {"sep", "tokenizer.ggml.seperator_token_id"},
        {"pad", "tokenizer.ggml.padding_token_id"}, {"cls", "tokenizer.ggml.cls_token_id"},
        {"mask", "tokenizer.ggml.mask_token_id"},
    };
    int ids[7];
    for (int k = 0; k < 7; k++) {
        const char *text = lt_special_text(tc, specials[k].typ);
        ids[k] = text ? lt_added_id(added, text) : -1;
        if (ids[k] >= V) ids[k] = -1;
    }
    if (ids[0] < 0 && cfg->bos_token_id >= 0 && cfg->bos_token_id < V) ids[0] = cfg->bos_token_id;
    if (ids[1] < 0 && cfg->n_eos == 1 && cfg->eos_token_ids[0] >= 0 && cfg->eos_token_ids[0] < V) ids[1] = cfg->eos_token_ids[0];
    /* eos, pad, then the rest: the order the converter writes them in for Qwen2 */
    static const int order[7] = {1, 4, 0, 2, 3, 5, 6};
    for (int k = 0; st == LT_OK && k < 7; k++)
        if (ids[order[k]] >= 0) st = lt_gguf_add_u32(w, specials[order[k]].key, (uint32_t)ids[order[k]]);
    json_t *abos = tc ? json_object_get(tc, "add_bos_token") : NULL;
    json_t *aeos = tc ? json_object_get(tc, "add_eos_token") : NULL;
    if (st == LT_OK) st = lt_gguf_add_bool(w, "tokenizer.ggml.add_bos_token", json_is_true(abos));
    if (st == LT_OK && json_is_boolean(aeos)) st = lt_gguf_add_bool(w, "tokenizer.ggml.add_eos_token", json_is_true(aeos));
    json_t *ct = tc ? json_object_get(tc, "chat_template") : NULL;
    if (st == LT_OK && json_is_string(ct)) st = lt_gguf_add_str(w, "tokenizer.chat_template", json_string_value(ct));
done:
    if (tokens)
        for (int64_t k = 0; k < V; k++) free(tokens[k]);
    free(tokens);
    free(types);
    if (owned)
        for (size_t k = 0; k < n_merges; k++) free(owned[k]);
    free(owned);
    free(merges);
    json_decref(tj);
    json_decref(tc);
    return st;
}

lt_status lt_export_vocab_missing(lt_exporter *ex, const char *const *texts, size_t n, const char **missing) {
    *missing = NULL;
    const char *dir = lt_export_tokenizer_dir(ex);
    lt_status st = LT_OK;
    json_t *tj = lt_load_json(dir, "tokenizer.json", 1, &st);
    if (!tj) return st;
    json_t *vocab = json_object_get(json_object_get(tj, "model"), "vocab");
    json_t *added = json_object_get(tj, "added_tokens");
    for (size_t i = 0; i < n && !*missing; i++)
        if (!json_object_get(vocab, texts[i]) && lt_added_id(added, texts[i]) < 0) *missing = texts[i];
    json_decref(tj);
    return LT_OK;
}

lt_status lt_export_stop_tokens(lt_exporter *ex, char ***out, size_t *n) {
    *out = NULL;
    *n = 0;
    const char *dir = lt_export_tokenizer_dir(ex);
    lt_status st = LT_OK;
    json_t *tj = lt_load_json(dir, "tokenizer.json", 0, &st);
    if (st != LT_OK) return st;
    json_t *tc = lt_load_json(dir, "tokenizer_config.json", 0, &st);
    if (st != LT_OK) { json_decref(tj); return st; }
    char **s = lt_calloc(8, sizeof *s, "stop tokens");
    if (!s) { json_decref(tj); json_decref(tc); return LT_ERR_OUT_OF_MEMORY; }
    size_t k = 0;
    const char *eos = lt_special_text(tc, "eos");
    if (eos) s[k++] = lt_strdup(eos);
    /* the end-of-generation texts llama.cpp recognises, where the tokenizer has them */
    static const char *const eog[] = {"<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>",
                                      "<|eom_id|>", "<|end|>"};
    json_t *added = tj ? json_object_get(tj, "added_tokens") : NULL;
    for (size_t e = 0; e < sizeof eog / sizeof eog[0] && k < 8; e++) {
        if (lt_added_id(added, eog[e]) < 0) continue;
        int dup = 0;
        for (size_t j = 0; j < k; j++) dup |= s[j] && !strcmp(s[j], eog[e]);
        if (!dup) s[k++] = lt_strdup(eog[e]);
    }
    json_decref(tj);
    json_decref(tc);
    for (size_t j = 0; j < k; j++)
        if (!s[j]) {
            for (size_t q = 0; q < k; q++) free(s[q]);
            free(s);
            return LT_ERR_OUT_OF_MEMORY;
        }
    *out = s;
    *n = k;
    return LT_OK;
}

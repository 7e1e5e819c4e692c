/* tok_load.c - lt_tokenizer_load/free: reads tokenizer.json (model vocabulary and merges, added
 * tokens, normalizer, pre-tokenizer, post-processor, decoder), tokenizer_config.json (eos, bos,
 * pad, chat template) and generation_config.json (eos_token_id list), and builds the lookup
 * tables. Two BPE families are read: byte-level (a ByteLevel pre-tokenizer: GPT-2, Llama 3, Qwen)
 * and character-level as transformers converts SentencePiece models (Llama 2, Mistral, Gemma,
 * Phi-3: byte_fallback with <0xNN> tokens, Prepend / Replace normalizers or a Metaspace
 * pre-tokenizer, the Replace / ByteFallback / Fuse / Strip / Metaspace decoders). Anything else is
 * refused with LT_ERR_UNSUPPORTED naming the component. */
#include "tok/tok.h"
#include "tok/tok_json.h"
#include <stdlib.h>
#include <string.h>

#define TJ "tokenizer.json"

/* ---- string map ---- */
uint64_t lt_tok_hash(const void *data, size_t len) {
    /* FNV-1a over 8-byte words then a murmur finalizer: fast on short tokens, good spread */
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ull ^ (len * 0x9E3779B97F4A7C15ull);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
        p += 8; len -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, len);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 33; h *= 0xff51afd7ed558ccdull; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53ull; h ^= h >> 33;
    return h;
}

static inline void lt_tok_key(const char *s, size_t len, uint64_t *head, uint32_t *tag, uint32_t *pos, uint32_t mask) {
    uint64_t h = lt_tok_hash(s, len), w = 0;
    memcpy(&w, s, len < 8 ? len : 8);
    *head = w;
    *tag = (uint32_t)(h >> 40) << 8 | (uint32_t)(len < 255 ? len : 255);
    *pos = (uint32_t)h & mask;
}

int32_t lt_tok_smap_find(const lt_tokenizer *tok, const char *s, size_t len) {
    const lt_tok_smap *m = &tok->vocab;
    uint64_t head;
    uint32_t tag, i;
    lt_tok_key(s, len, &head, &tag, &i, m->mask);
    for (;;) {
        const lt_tok_slot *sl = &m->slots[i];
        if (!sl->id1) return -1;
        if (sl->tag == tag && sl->head == head) {
            int32_t id = (int32_t)(sl->id1 - 1);
            if (len <= 8 || (tok->token_len[id] == len && !memcmp(tok->tokens[id], s, len))) return id;
        }
        i = (i + 1) & m->mask;
    }
}

/* Inserts id (keys[id]); a later id with the same string replaces the earlier one. */
static void lt_tok_smap_put(lt_tokenizer *tok, int32_t id) {
    lt_tok_smap *m = &tok->vocab;
    const char *s = tok->tokens[id];
    size_t len = tok->token_len[id];
    uint64_t head;
    uint32_t tag, i;
    lt_tok_key(s, len, &head, &tag, &i, m->mask);
    for (;;) {
        lt_tok_slot *sl = &m->slots[i];
        if (!sl->id1 || (sl->tag == tag && sl->head == head &&
                         (len <= 8 || (tok->token_len[sl->id1 - 1] == len && !memcmp(tok->tokens[sl->id1 - 1], s, len))))) {
            *sl = (lt_tok_slot){head, (uint32_t)id + 1, tag};
            return;
        }
        i = (i + 1) & m->mask;
    }
}

/* Loading does ~450k random lookups into a table of several MB: touching the slot of a key a few
 * iterations ahead hides most of the cache misses. */
static inline void lt_tok_smap_prefetch(const lt_tokenizer *tok, const char *s, size_t len) {
    uint64_t head;
    uint32_t tag, i;
    lt_tok_key(s, len, &head, &tag, &i, tok->vocab.mask);
    __builtin_prefetch(&tok->vocab.slots[i]);
}

/* The two halves of merge m, or 0 when it is malformed. */
static int lt_tok_merge_halves(const ltj *m, const char **a, size_t *al, const char **b, size_t *bl) {
    if (m->type == LTJ_STR) {
        const char *sp = memchr(m->u.str, ' ', m->n);
        if (!sp) return 0;
        *a = m->u.str; *al = (size_t)(sp - *a); *b = sp + 1; *bl = m->n - *al - 1;
        return memchr(*b, ' ', *bl) == NULL;
    }
    if (m->type == LTJ_ARR && m->n == 2 && m->u.items[0].type == LTJ_STR && m->u.items[1].type == LTJ_STR) {
        *a = m->u.items[0].u.str; *al = m->u.items[0].n; *b = m->u.items[1].u.str; *bl = m->u.items[1].n;
        return 1;
    }
    return 0;
}

/* ---- merges ---- */
static inline uint64_t lt_tok_mix(uint64_t k) {
    k ^= k >> 33; k *= 0xff51afd7ed558ccdull; k ^= k >> 33; return k;
}
static void lt_tok_merge_put(lt_tokenizer *tok, int32_t a, int32_t b, int32_t rank, int32_t id) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint64_t i = lt_tok_mix(key) & tok->merge_mask;
    while (tok->merges[i].rank >= 0 && tok->merges[i].key != key) i = (i + 1) & tok->merge_mask;
    tok->merges[i] = (lt_tok_merge_slot){key, rank, id};
}

/* ---- helpers for fields ---- */
static const char *ltj_str_or(const ltj *v, const char *dflt) { return ltj_is(v, LTJ_STR) ? v->u.str : dflt; }

static lt_status lt_tok_bool(const ltj *obj, const char *key, int dflt, const char *where, int *out) {
    const ltj *v = ltj_get(obj, key);
    if (!v || v->type == LTJ_NULL) { *out = dflt; return LT_OK; }
    if (v->type != LTJ_TRUE && v->type != LTJ_FALSE)
        return lt_error(LT_ERR_FORMAT, TJ ": %s.%s must be true or false", where, key);
    *out = v->type == LTJ_TRUE;
    return LT_OK;
}

static lt_status lt_tok_id(const ltj *v, const char *where, int32_t *out) {
    if (!ltj_is(v, LTJ_NUM) || v->u.num < 0 || v->u.num > 0x7FFFFFF0 || v->u.num != (double)(int64_t)v->u.num)
        return lt_error(LT_ERR_FORMAT, TJ ": %s must be a non-negative integer id", where);
    *out = (int32_t)v->u.num;
    return LT_OK;
}

/* ---- normalizer ---- */
static lt_status lt_tok_load_normalizer(lt_tokenizer *tok, const ltj *n, const char *where) {
    if (!n || n->type == LTJ_NULL) return LT_OK;
    if (n->type != LTJ_OBJ) return lt_error(LT_ERR_FORMAT, TJ ": %s must be an object or null", where);
    const char *type = ltj_str_or(ltj_get(n, "type"), NULL);
    if (!type) return lt_error(LT_ERR_FORMAT, TJ ": %s.type is missing", where);
    if (!strcmp(type, "Sequence")) {
        const ltj *list = ltj_get(n, "normalizers");
        if (!ltj_is(list, LTJ_ARR)) return lt_error(LT_ERR_FORMAT, TJ ": %s.normalizers must be an array", where);
        for (uint32_t i = 0; i < list->n; i++) {
            char sub[128];
            snprintf(sub, sizeof sub, "%s.normalizers[%u]", where, i);
            LT_TRY(lt_tok_load_normalizer(tok, &list->u.items[i], sub));
        }
        return LT_OK;
    }
    lt_tok_norm_kind k;
    lt_tok_norm step = {0};
    if (!strcmp(type, "Prepend")) {
        const ltj *pp = ltj_get(n, "prepend");
        if (!ltj_is(pp, LTJ_STR)) return lt_error(LT_ERR_FORMAT, TJ ": %s.prepend must be a string", where);
        k = LT_NORM_PREPEND; step.a = pp->u.str; step.al = pp->n;
    } else if (!strcmp(type, "Replace")) {
        const ltj *pat = ltj_get(n, "pattern"), *c = ltj_get(n, "content");
        const ltj *lit = ltj_get(pat, "String");
        if (ltj_get(pat, "Regex"))
            return lt_error(LT_ERR_UNSUPPORTED, TJ ": %s: a Replace normalizer with a Regex pattern is not supported "
                            "(a String pattern is)", where);
        if (!ltj_is(lit, LTJ_STR) || !lit->n || !ltj_is(c, LTJ_STR))
            return lt_error(LT_ERR_FORMAT, TJ ": %s: Replace needs pattern {\"String\": \"...\"} (non-empty) and content", where);
        k = LT_NORM_REPLACE; step.a = lit->u.str; step.al = lit->n; step.b = c->u.str; step.bl = c->n;
    } else if (!strcmp(type, "NFC")) k = LT_NORM_NFC;
    else if (!strcmp(type, "NFD")) k = LT_NORM_NFD;
    else if (!strcmp(type, "NFKC")) k = LT_NORM_NFKC;
    else if (!strcmp(type, "NFKD")) k = LT_NORM_NFKD;
    else if (!strcmp(type, "Lowercase")) k = LT_NORM_LOWERCASE;
    else return lt_error(LT_ERR_UNSUPPORTED, TJ ": %s: normalizer '%s' is not supported (NFC, NFD, NFKC, NFKD, "
                         "Lowercase, Prepend, Replace and Sequence are)", where, type);
    lt_tok_norm *nn = realloc(tok->norms, (size_t)(tok->n_norms + 1) * sizeof *nn);
    if (!nn) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory loading the normalizer");
    tok->norms = nn;
    step.kind = k;
    tok->norms[tok->n_norms++] = step;
    return LT_OK;
}

/* ---- pre-tokenizer ---- */
static const char LT_GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static lt_status lt_tok_pre_add(lt_tokenizer *tok, lt_tok_pre p) {
    lt_tok_pre *np = realloc(tok->pre, (size_t)(tok->n_pre + 1) * sizeof *np);
    if (!np) { if (p.re) pcre2_code_free(p.re); return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory loading the pre-tokenizer"); }
    tok->pre = np;
    tok->pre[tok->n_pre++] = p;
    return LT_OK;
}

static lt_status lt_tok_load_pre(lt_tokenizer *tok, const ltj *n, const char *where, int *has_byte_level) {
    if (!n || n->type == LTJ_NULL) return LT_OK;
    if (n->type != LTJ_OBJ) return lt_error(LT_ERR_FORMAT, TJ ": %s must be an object or null", where);
    const char *type = ltj_str_or(ltj_get(n, "type"), NULL);
    if (!type) return lt_error(LT_ERR_FORMAT, TJ ": %s.type is missing", where);
    if (!strcmp(type, "Sequence")) {
        const ltj *list = ltj_get(n, "pretokenizers");
        if (!ltj_is(list, LTJ_ARR)) return lt_error(LT_ERR_FORMAT, TJ ": %s.pretokenizers must be an array", where);
        for (uint32_t i = 0; i < list->n; i++) {
            char sub[128];
            snprintf(sub, sizeof sub, "%s.pretokenizers[%u]", where, i);
            LT_TRY(lt_tok_load_pre(tok, &list->u.items[i], sub, has_byte_level));
        }
        return LT_OK;
    }
    lt_tok_pre p = {0};
    char field[160];
    if (!strcmp(type, "Split")) {
        p.kind = LT_PRE_SPLIT;
        const ltj *pat = ltj_get(n, "pattern");
        const ltj *re = ltj_get(pat, "Regex"), *lit = ltj_get(pat, "String");
        if (!ltj_is(re, LTJ_STR) && !ltj_is(lit, LTJ_STR))
            return lt_error(LT_ERR_FORMAT, TJ ": %s.pattern must be {\"Regex\": \"...\"} or {\"String\": \"...\"}", where);
        const char *beh = ltj_str_or(ltj_get(n, "behavior"), NULL);
        if (!beh) return lt_error(LT_ERR_FORMAT, TJ ": %s.behavior is missing", where);
        if (!strcmp(beh, "Removed")) p.behavior = LT_SPLIT_REMOVED;
        else if (!strcmp(beh, "Isolated")) p.behavior = LT_SPLIT_ISOLATED;
        else if (!strcmp(beh, "MergedWithPrevious")) p.behavior = LT_SPLIT_MERGED_PREV;
        else if (!strcmp(beh, "MergedWithNext")) p.behavior = LT_SPLIT_MERGED_NEXT;
        else if (!strcmp(beh, "Contiguous")) p.behavior = LT_SPLIT_CONTIGUOUS;
        else return lt_error(LT_ERR_FORMAT, TJ ": %s.behavior '%s' is not a Split behavior", where, beh);
        LT_TRY(lt_tok_bool(n, "invert", 0, where, &p.invert));
        snprintf(field, sizeof field, "%s.pattern", where);
        const ltj *s = ltj_is(re, LTJ_STR) ? re : lit;
        LT_TRY(lt_tok_compile_regex(s->u.str, s->n, s == lit, field, &p.re));
        return lt_tok_pre_add(tok, p);
    }
    if (!strcmp(type, "ByteLevel")) {
        p.kind = LT_PRE_BYTELEVEL;
        int use_regex = 1;
        LT_TRY(lt_tok_bool(n, "add_prefix_space", 1, where, &p.add_prefix_space));
        LT_TRY(lt_tok_bool(n, "use_regex", 1, where, &use_regex));
        if (use_regex) {
            snprintf(field, sizeof field, "%s (ByteLevel's GPT-2 regex)", where);
            LT_TRY(lt_tok_compile_regex(LT_GPT2_PATTERN, strlen(LT_GPT2_PATTERN), 0, field, &p.re));
        }
        *has_byte_level = 1;
        return lt_tok_pre_add(tok, p);
    }
    if (!strcmp(type, "Metaspace")) {
        if (tok->n_pre || tok->metaspace)
            return lt_error(LT_ERR_UNSUPPORTED, TJ ": %s: Metaspace is supported only as the first pre-tokenizer step", where);
        const ltj *rep = ltj_get(n, "replacement");
        const char *scheme = ltj_str_or(ltj_get(n, "prepend_scheme"), NULL);
        if (!ltj_is(rep, LTJ_STR) || !rep->n || rep->n >= sizeof tok->ms_rep)
            return lt_error(LT_ERR_FORMAT, TJ ": %s: Metaspace.replacement must be one character", where);
        uint32_t cp;
        if ((size_t)lt_utf8_decode((const unsigned char *)rep->u.str, &cp) != rep->n)
            return lt_error(LT_ERR_FORMAT, TJ ": %s: Metaspace.replacement must be one character", where);
        memcpy(tok->ms_rep, rep->u.str, rep->n);
        tok->ms_rep_len = (int)rep->n;
        if (!scheme) { /* older files: add_prefix_space */
            int aps = 1;
            LT_TRY(lt_tok_bool(n, "add_prefix_space", 1, where, &aps));
            tok->ms_scheme = aps ? 0 : 2;
        } else if (!strcmp(scheme, "always")) tok->ms_scheme = 0;
        else if (!strcmp(scheme, "first")) tok->ms_scheme = 1;
        else if (!strcmp(scheme, "never")) tok->ms_scheme = 2;
        else return lt_error(LT_ERR_FORMAT, TJ ": %s.prepend_scheme '%s' is not always, first or never", where, scheme);
        int split = 1;
        LT_TRY(lt_tok_bool(n, "split", 1, where, &split));
        tok->metaspace = 1;
        if (!split) return LT_OK;
        p.kind = LT_PRE_SPLIT;
        p.behavior = LT_SPLIT_MERGED_NEXT;
        snprintf(field, sizeof field, "%s.replacement", where);
        LT_TRY(lt_tok_compile_regex(rep->u.str, rep->n, 1, field, &p.re));
        return lt_tok_pre_add(tok, p);
    }
    if (!strcmp(type, "Digits")) {
        p.kind = LT_PRE_DIGITS;
        LT_TRY(lt_tok_bool(n, "individual_digits", 0, where, &p.individual));
        return lt_tok_pre_add(tok, p);
    }
    return lt_error(LT_ERR_UNSUPPORTED, TJ ": %s: pre-tokenizer '%s' is not supported (Sequence, Split, ByteLevel, "
                    "Metaspace and Digits are)", where, type);
}

/* ---- post-processor ---- */
static lt_status lt_tok_append_ids(int32_t **arr, int *n, const int32_t *ids, int k) {
    int32_t *na = realloc(*arr, (size_t)(*n + k + 1) * sizeof(int32_t));
    if (!na) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory loading the post-processor");
    memcpy(na + *n, ids, (size_t)k * sizeof(int32_t));
    *arr = na; *n += k;
    return LT_OK;
}

static lt_status lt_tok_load_post(lt_tokenizer *tok, const ltj *n, const char *where) {
    if (!n || n->type == LTJ_NULL) return LT_OK;
    const char *type = ltj_str_or(ltj_get(n, "type"), NULL);
    if (!type) return lt_error(LT_ERR_FORMAT, TJ ": %s.type is missing", where);
    if (!strcmp(type, "ByteLevel")) return LT_OK; /* only trims offsets; adds no token */
    if (!strcmp(type, "Sequence")) {
        const ltj *list = ltj_get(n, "processors");
        if (!ltj_is(list, LTJ_ARR)) return lt_error(LT_ERR_FORMAT, TJ ": %s.processors must be an array", where);
        for (uint32_t i = 0; i < list->n; i++) {
            char sub[128];
            snprintf(sub, sizeof sub, "%s.processors[%u]", where, i);
            LT_TRY(lt_tok_load_post(tok, &list->u.items[i], sub));
        }
        return LT_OK;
    }
    if (!strcmp(type, "TemplateProcessing")) {
        const ltj *single = ltj_get(n, "single"), *specials = ltj_get(n, "special_tokens");
        if (!ltj_is(single, LTJ_ARR)) return lt_error(LT_ERR_FORMAT, TJ ": %s.single must be an array", where);
        int seen_seq = 0;
        for (uint32_t i = 0; i < single->n; i++) {
            const ltj *it = &single->u.items[i];
            const ltj *sp = ltj_get(it, "SpecialToken"), *sq = ltj_get(it, "Sequence");
            if (sq) { seen_seq = 1; continue; }
            const char *name = ltj_str_or(ltj_get(sp, "id"), NULL);
            if (!name) return lt_error(LT_ERR_FORMAT, TJ ": %s.single[%u] must be a SpecialToken or a Sequence", where, i);
            const ltj *ids = ltj_get(ltj_get(specials, name), "ids");
            if (!ltj_is(ids, LTJ_ARR))
                return lt_error(LT_ERR_FORMAT, TJ ": %s.special_tokens has no ids for '%s'", where, name);
            for (uint32_t k = 0; k < ids->n; k++) {
                int32_t id = 0;
                char sub[160];
                snprintf(sub, sizeof sub, "%s.special_tokens.%s.ids[%u]", where, name, k);
                LT_TRY(lt_tok_id(&ids->u.items[k], sub, &id));
                if (seen_seq) LT_TRY(lt_tok_append_ids(&tok->post_suffix, &tok->n_post_suffix, &id, 1));
                else LT_TRY(lt_tok_append_ids(&tok->post_prefix, &tok->n_post_prefix, &id, 1));
            }
        }
        return LT_OK;
    }
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        /* a single sequence becomes cls $A sep; "cls" and "sep" are [token, id] pairs */
        static const char *const keys[2] = {"cls", "sep"};
        for (int k = 0; k < 2; k++) {
            const ltj *pair = ltj_get(n, keys[k]);
            if (!ltj_is(pair, LTJ_ARR) || pair->n != 2)
                return lt_error(LT_ERR_FORMAT, TJ ": %s.%s must be a [token, id] pair", where, keys[k]);
            int32_t id = 0;
            char sub[128];
            snprintf(sub, sizeof sub, "%s.%s[1]", where, keys[k]);
            LT_TRY(lt_tok_id(&pair->u.items[1], sub, &id));
            if (k == 0) LT_TRY(lt_tok_append_ids(&tok->post_prefix, &tok->n_post_prefix, &id, 1));
            else LT_TRY(lt_tok_append_ids(&tok->post_suffix, &tok->n_post_suffix, &id, 1));
        }
        return LT_OK;
    }
    return lt_error(LT_ERR_UNSUPPORTED, TJ ": %s: post-processor '%s' is not supported (ByteLevel, "
                    "TemplateProcessing, RobertaProcessing, BertProcessing and Sequence are)", where, type);
}

static lt_status lt_tok_dec_add(lt_tokenizer *tok, lt_tok_dec d) {
    lt_tok_dec *nd = realloc(tok->dec, (size_t)(tok->n_dec + 1) * sizeof *nd);
    if (!nd) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory loading the decoder");
    tok->dec = nd;
    tok->dec[tok->n_dec++] = d;
    return LT_OK;
}

static lt_status lt_tok_dec_count(const ltj *n, const char *key, const char *where, int *out) {
    const ltj *v = ltj_get(n, key);
    *out = 0;
    if (!v || v->type == LTJ_NULL) return LT_OK;
    if (!ltj_is(v, LTJ_NUM) || v->u.num < 0 || v->u.num > 1e6 || v->u.num != (double)(int64_t)v->u.num)
        return lt_error(LT_ERR_FORMAT, TJ ": %s.%s must be a non-negative integer", where, key);
    *out = (int)v->u.num;
    return LT_OK;
}

/* ByteLevel (alone) for byte-level tokenizers; Replace (String), ByteFallback, Fuse, Strip and
 * Metaspace, in a Sequence, for the SentencePiece-derived ones. */
static lt_status lt_tok_load_decoder(lt_tokenizer *tok, const ltj *n, const char *where, int depth) {
    if (!n || n->type == LTJ_NULL) {
        if (!tok->char_level)
            return lt_error(LT_ERR_UNSUPPORTED, TJ ": %s is null: a byte-level tokenizer needs the ByteLevel decoder", where);
        tok->dec_join_space = depth == 0; /* tokenizers joins the tokens with spaces when there is no decoder */
        return LT_OK;
    }
    const char *type = ltj_str_or(ltj_get(n, "type"), NULL);
    if (!type) return lt_error(LT_ERR_FORMAT, TJ ": %s.type is missing", where);
    if (!strcmp(type, "Sequence")) {
        const ltj *list = ltj_get(n, "decoders");
        if (!ltj_is(list, LTJ_ARR) || depth > 4) return lt_error(LT_ERR_FORMAT, TJ ": %s.decoders must be an array", where);
        for (uint32_t i = 0; i < list->n; i++) {
            char sub[128];
            snprintf(sub, sizeof sub, "%s.decoders[%u]", where, i);
            LT_TRY(lt_tok_load_decoder(tok, &list->u.items[i], sub, depth + 1));
        }
        if (!tok->char_level && (!tok->byte_level_decoder || tok->n_dec))
            return lt_error(LT_ERR_UNSUPPORTED, TJ ": %s: a byte-level tokenizer supports only a Sequence holding one "
                            "ByteLevel decoder", where);
        return LT_OK;
    }
    if (!strcmp(type, "ByteLevel")) {
        if (tok->char_level)
            return lt_error(LT_ERR_UNSUPPORTED, TJ ": %s: a ByteLevel decoder without a ByteLevel pre-tokenizer is not supported", where);
        tok->byte_level_decoder = 1;
        return LT_OK;
    }
    if (!tok->char_level)
        return lt_error(LT_ERR_UNSUPPORTED, TJ ": %s: decoder '%s' is not supported with a byte-level pre-tokenizer "
                        "(ByteLevel is)", where, type);
    lt_tok_dec d = {0};
    if (!strcmp(type, "Replace")) {
        const ltj *pat = ltj_get(n, "pattern"), *c = ltj_get(n, "content");
        const ltj *lit = ltj_get(pat, "String");
        if (!ltj_is(lit, LTJ_STR) || !lit->n || !ltj_is(c, LTJ_STR))
            return lt_error(LT_ERR_UNSUPPORTED, TJ ": %s: only a Replace decoder with a non-empty String pattern is supported", where);
        d.kind = LT_DEC_REPLACE; d.a = lit->u.str; d.al = lit->n; d.b = c->u.str; d.bl = c->n;
    } else if (!strcmp(type, "ByteFallback")) d.kind = LT_DEC_BYTEFALLBACK;
    else if (!strcmp(type, "Fuse")) d.kind = LT_DEC_FUSE;
    else if (!strcmp(type, "Strip")) {
        const ltj *c = ltj_get(n, "content");
        uint32_t cp;
        if (!ltj_is(c, LTJ_STR) || !c->n || (size_t)lt_utf8_decode((const unsigned char *)c->u.str, &cp) != c->n)
            return lt_error(LT_ERR_FORMAT, TJ ": %s.content must be one character", where);
        d.kind = LT_DEC_STRIP; d.a = c->u.str; d.al = c->n;
        LT_TRY(lt_tok_dec_count(n, "start", where, &d.start));
        LT_TRY(lt_tok_dec_count(n, "stop", where, &d.stop));
    } else if (!strcmp(type, "Metaspace")) {
        const ltj *rep = ltj_get(n, "replacement");
        const char *scheme = ltj_str_or(ltj_get(n, "prepend_scheme"), NULL);
        uint32_t cp;
        if (!ltj_is(rep, LTJ_STR) || !rep->n || (size_t)lt_utf8_decode((const unsigned char *)rep->u.str, &cp) != rep->n)
            return lt_error(LT_ERR_FORMAT, TJ ": %s.replacement must be one character", where);
        d.kind = LT_DEC_METASPACE; d.a = rep->u.str; d.al = rep->n;
        if (scheme) d.start = strcmp(scheme, "never") != 0;
        else LT_TRY(lt_tok_bool(n, "add_prefix_space", 1, where, &d.start));
    } else return lt_error(LT_ERR_UNSUPPORTED, TJ ": %s: decoder '%s' is not supported (Replace, ByteFallback, Fuse, "
                           "Strip, Metaspace and Sequence are)", where, type);
    return lt_tok_dec_add(tok, d);
}

/* ---- the model ---- */
static void lt_tok_bytes_to_unicode(lt_tokenizer *tok) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) tok->byte_char[b] = (uint16_t)b;
        else tok->byte_char[b] = (uint16_t)(256 + n++);
    }
    for (int c = 0; c < 0x180; c++) tok->char_byte[c] = -1;
    for (int b = 0; b < 256; b++) tok->char_byte[tok->byte_char[b]] = (int16_t)b;
}

static lt_status lt_tok_load_model(lt_tokenizer *tok, const ltj *model, const ltj *added) {
    if (!ltj_is(model, LTJ_OBJ)) return lt_error(LT_ERR_FORMAT, TJ ": 'model' is missing or not an object");
    const char *type = ltj_str_or(ltj_get(model, "type"), "BPE");
    if (strcmp(type, "BPE"))
        return lt_error(LT_ERR_UNSUPPORTED, TJ ": model.type '%s' is not supported (byte-level BPE is)", type);
    const ltj *vocab = ltj_get(model, "vocab"), *merges = ltj_get(model, "merges");
    if (!ltj_is(vocab, LTJ_OBJ)) return lt_error(LT_ERR_FORMAT, TJ ": model.vocab is missing or not an object");
    if (!ltj_is(merges, LTJ_ARR)) return lt_error(LT_ERR_FORMAT, TJ ": model.merges is missing or not an array");
    const ltj *v;
    if ((v = ltj_get(model, "dropout")) && v->type != LTJ_NULL && !(v->type == LTJ_NUM && v->u.num == 0))
        return lt_error(LT_ERR_UNSUPPORTED, TJ ": model.dropout is set: BPE dropout is not supported");
    LT_TRY(lt_tok_bool(model, "byte_fallback", 0, "model", &tok->byte_fallback));
    LT_TRY(lt_tok_bool(model, "fuse_unk", 0, "model", &tok->fuse_unk));
    if ((v = ltj_get(model, "continuing_subword_prefix")) && ltj_is(v, LTJ_STR) && v->n)
        return lt_error(LT_ERR_UNSUPPORTED, TJ ": model.continuing_subword_prefix '%s' is not supported", v->u.str);
    if ((v = ltj_get(model, "end_of_word_suffix")) && ltj_is(v, LTJ_STR) && v->n)
        return lt_error(LT_ERR_UNSUPPORTED, TJ ": model.end_of_word_suffix '%s' is not supported", v->u.str);
    LT_TRY(lt_tok_bool(model, "ignore_merges", 0, "model", &tok->ignore_merges));

    /* ids: the largest over vocab and added tokens */
    int32_t max_id = -1;
    for (uint32_t i = 0; i < vocab->n; i++) {
        int32_t id = 0;
        const ltj *k = &vocab->u.items[2 * i], *val = &vocab->u.items[2 * i + 1];
        if (!ltj_is(val, LTJ_NUM) || val->u.num < 0 || val->u.num > 0x7FFFFFF0 || val->u.num != (double)(int64_t)val->u.num)
            return lt_error(LT_ERR_FORMAT, TJ ": model.vocab['%s'] must be a non-negative integer id", k->u.str);
        id = (int32_t)val->u.num;
        if (id > max_id) max_id = id;
    }
    if (ltj_is(added, LTJ_ARR)) {
        for (uint32_t i = 0; i < added->n; i++) {
            int32_t id = 0;
            char where[64];
            snprintf(where, sizeof where, "added_tokens[%u].id", i);
            LT_TRY(lt_tok_id(ltj_get(&added->u.items[i], "id"), where, &id));
            if (id > max_id) max_id = id;
        }
    } else if (added && added->type != LTJ_NULL) return lt_error(LT_ERR_FORMAT, TJ ": added_tokens must be an array");
    if ((int64_t)max_id + 1 > 16 * ((int64_t)vocab->n + 1024))
        return lt_error(LT_ERR_FORMAT, TJ ": ids go up to %d for %u tokens: the ids are implausibly sparse", max_id, vocab->n);
    tok->n_ids = max_id + 1;
    tok->model_vocab = (int32_t)vocab->n;
    tok->tokens = calloc((size_t)tok->n_ids + 1, sizeof(char *));
    tok->token_len = calloc((size_t)tok->n_ids + 1, sizeof(uint32_t));
    tok->is_special = calloc((size_t)tok->n_ids + 1, 1);
    uint32_t cap = 1024;
    while (cap < 2 * ((uint32_t)tok->n_ids + 1)) cap *= 2;
    tok->vocab.slots = calloc(cap, sizeof(lt_tok_slot));
    tok->vocab.mask = cap - 1;
    if (!tok->tokens || !tok->token_len || !tok->is_special || !tok->vocab.slots)
        return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory loading a vocabulary of %d ids", tok->n_ids);
    for (uint32_t i = 0; i < vocab->n; i++) {
        const ltj *k = &vocab->u.items[2 * i];
        int32_t id = (int32_t)vocab->u.items[2 * i + 1].u.num;
        if (i + 16 < vocab->n) lt_tok_smap_prefetch(tok, vocab->u.items[2 * (i + 16)].u.str, vocab->u.items[2 * (i + 16)].n);
        if (tok->tokens[id])
            return lt_error(LT_ERR_FORMAT, TJ ": model.vocab: id %d is given to both '%s' and '%s'", id, tok->tokens[id], k->u.str);
        tok->tokens[id] = k->u.str;
        tok->token_len[id] = k->n;
        lt_tok_smap_put(tok, id);
    }

    /* added tokens */
    if (ltj_is(added, LTJ_ARR) && added->n) {
        tok->added = calloc(added->n, sizeof(lt_tok_added));
        if (!tok->added) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory loading added tokens");
        for (uint32_t i = 0; i < added->n; i++) {
            const ltj *a = &added->u.items[i];
            lt_tok_added *t = &tok->added[tok->n_added];
            char where[64];
            snprintf(where, sizeof where, "added_tokens[%u]", i);
            const ltj *c = ltj_get(a, "content");
            if (!ltj_is(c, LTJ_STR) || !c->n) return lt_error(LT_ERR_FORMAT, TJ ": %s.content must be a non-empty string", where);
            t->content = c->u.str; t->len = c->n;
            t->id = (int32_t)ltj_get(a, "id")->u.num;
            int b;
            LT_TRY(lt_tok_bool(a, "special", 0, where, &b)); t->special = (uint8_t)b;
            LT_TRY(lt_tok_bool(a, "normalized", !t->special, where, &b)); t->normalized = (uint8_t)b;
            LT_TRY(lt_tok_bool(a, "lstrip", 0, where, &b)); t->lstrip = (uint8_t)b;
            LT_TRY(lt_tok_bool(a, "rstrip", 0, where, &b)); t->rstrip = (uint8_t)b;
            LT_TRY(lt_tok_bool(a, "single_word", 0, where, &b)); t->single_word = (uint8_t)b;
            /* the added vocabulary wins over the model for both lookups, as in tokenizers */
            tok->tokens[t->id] = t->content;
            tok->token_len[t->id] = (uint32_t)t->len;
            tok->is_special[t->id] = t->special;
            lt_tok_smap_put(tok, t->id);
            if (t->normalized) tok->has_normalized_added = 1;
            else tok->added_first[(unsigned char)t->content[0]] = 1;
            tok->n_added++;
        }
    }

    /* byte-level alphabet */
    lt_tok_bytes_to_unicode(tok);
    for (int b = 0; b < 256; b++) {
        char u[4];
        int n = lt_utf8_encode(tok->byte_char[b], u);
        tok->byte_id[b] = lt_tok_smap_find(tok, u, (size_t)n);
    }
    /* byte-fallback tokens <0x00>..<0xFF> (tokenizers formats them as "<{b:#04X}>") */
    tok->is_fb = calloc((size_t)tok->n_ids + 1, 1);
    if (!tok->is_fb) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory loading a vocabulary of %d ids", tok->n_ids);
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        tok->fb_id[b] = lt_tok_smap_find(tok, name, 6);
        if (tok->fb_id[b] >= 0) tok->is_fb[tok->fb_id[b]] = 1;
    }
    const ltj *unk = ltj_get(model, "unk_token");
    tok->unk_id = -1;
    if (ltj_is(unk, LTJ_STR)) {
        tok->unk_id = lt_tok_smap_find(tok, unk->u.str, unk->n);
        if (tok->unk_id < 0) return lt_error(LT_ERR_FORMAT, TJ ": model.unk_token '%s' is not in the vocabulary", unk->u.str);
    }

    /* merges: rank = position; both halves and their concatenation must be in the vocabulary */
    uint64_t mcap = 1024;
    while (mcap < 2 * ((uint64_t)merges->n + 1)) mcap *= 2;
    tok->merges = malloc(mcap * sizeof(lt_tok_merge_slot));
    if (!tok->merges) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory loading %u merges", merges->n);
    for (uint64_t i = 0; i < mcap; i++) tok->merges[i].rank = -1;
    tok->merge_mask = mcap - 1;
    tok->n_merges = (int32_t)merges->n;
    char *cat = NULL;
    size_t cat_cap = 0;
    lt_status st = LT_OK;
    enum { AHEAD = 12 };
    for (uint32_t i = 0; i < merges->n && st == LT_OK; i++) {
        const ltj *m = &merges->u.items[i];
        const char *a, *b;
        size_t al, bl;
        if (i + AHEAD < merges->n && lt_tok_merge_halves(&merges->u.items[i + AHEAD], &a, &al, &b, &bl)) {
            char pc[128];
            lt_tok_smap_prefetch(tok, a, al);
            lt_tok_smap_prefetch(tok, b, bl);
            if (al + bl <= sizeof pc) { memcpy(pc, a, al); memcpy(pc + al, b, bl); lt_tok_smap_prefetch(tok, pc, al + bl); }
        }
        if (m->type == LTJ_STR) {
            const char *sp = memchr(m->u.str, ' ', m->n);
            if (!sp) { st = lt_error(LT_ERR_FORMAT, TJ ": model.merges[%u] '%s' is not two tokens separated by a space", i, m->u.str); break; }
            a = m->u.str; al = (size_t)(sp - a); b = sp + 1; bl = m->n - al - 1;
            if (memchr(b, ' ', bl)) { st = lt_error(LT_ERR_FORMAT, TJ ": model.merges[%u] '%s' has more than two tokens", i, m->u.str); break; }
        } else if (m->type == LTJ_ARR && m->n == 2 && m->u.items[0].type == LTJ_STR && m->u.items[1].type == LTJ_STR) {
            a = m->u.items[0].u.str; al = m->u.items[0].n; b = m->u.items[1].u.str; bl = m->u.items[1].n;
        } else { st = lt_error(LT_ERR_FORMAT, TJ ": model.merges[%u] must be \"a b\" or [\"a\", \"b\"]", i); break; }
        int32_t ia = lt_tok_smap_find(tok, a, al), ib = lt_tok_smap_find(tok, b, bl);
        if (ia < 0 || ib < 0) {
            st = lt_error(LT_ERR_FORMAT, TJ ": model.merges[%u]: token '%.*s' is not in model.vocab", i,
                          (int)(ia < 0 ? al : bl), ia < 0 ? a : b);
            break;
        }
        if (al + bl > cat_cap) {
            cat_cap = 2 * (al + bl) + 64;
            char *nc = realloc(cat, cat_cap);
            if (!nc) { st = lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory loading merges"); break; }
            cat = nc;
        }
        memcpy(cat, a, al); memcpy(cat + al, b, bl);
        int32_t ic = lt_tok_smap_find(tok, cat, al + bl);
        if (ic < 0) {
            st = lt_error(LT_ERR_FORMAT, TJ ": model.merges[%u]: the merged token '%.*s' is not in model.vocab", i,
                          (int)(al + bl), cat);
            break;
        }
        lt_tok_merge_put(tok, ia, ib, (int32_t)i, ic);
    }
    free(cat);
    return st;
}

/* ---- tokenizer_config.json / generation_config.json ---- */
static const char *lt_tok_cfg_token(const ltj *v) {
    if (ltj_is(v, LTJ_STR)) return v->u.str;
    if (ltj_is(v, LTJ_OBJ)) return ltj_str_or(ltj_get(v, "content"), NULL);
    return NULL;
}

static void lt_tok_add_stop(lt_tokenizer *tok, int32_t id) {
    if (id < 0) return;
    for (int i = 0; i < tok->n_stop_ids; i++) if (tok->stop_ids[i] == id) return;
    if (tok->n_stop_ids < 8) tok->stop_ids[tok->n_stop_ids++] = id;
}

static lt_status lt_tok_load_config(lt_tokenizer *tok, const char *dir) {
    char *path = lt_path_join(dir, "tokenizer_config.json");
    if (!path) return LT_ERR_OUT_OF_MEMORY;
    char *buf = NULL;
    size_t len = 0;
    lt_status st = LT_OK;
    if (lt_file_exists(path)) {
        ltj_doc *doc = NULL;
        const ltj *root;
        st = lt_read_file(path, &buf, &len);
        if (st == LT_OK) st = ltj_parse(buf, len, path, &doc, &root);
        if (st == LT_OK && root->type != LTJ_OBJ) st = lt_error(LT_ERR_FORMAT, "%s: the top level must be an object", path);
        if (st == LT_OK) {
            const char *eos = lt_tok_cfg_token(ltj_get(root, "eos_token"));
            const char *bos = lt_tok_cfg_token(ltj_get(root, "bos_token"));
            const char *pad = lt_tok_cfg_token(ltj_get(root, "pad_token"));
            if (eos) { tok->eos_text = lt_strdup(eos); tok->eos_id = lt_tok_smap_find(tok, eos, strlen(eos)); }
            if (bos) { tok->bos_text = lt_strdup(bos); tok->bos_id = lt_tok_smap_find(tok, bos, strlen(bos)); }
            if (pad) { tok->pad_text = lt_strdup(pad); tok->pad_id = lt_tok_smap_find(tok, pad, strlen(pad)); }
            const ltj *ct = ltj_get(root, "chat_template");
            if (ltj_is(ct, LTJ_STR)) tok->chat_template = lt_strdup(ct->u.str);
            else if (ltj_is(ct, LTJ_ARR)) { /* [{"name": "default", "template": "..."}, ...] */
                for (uint32_t i = 0; i < ct->n; i++) {
                    const char *name = ltj_str_or(ltj_get(&ct->u.items[i], "name"), "");
                    const char *t = ltj_str_or(ltj_get(&ct->u.items[i], "template"), NULL);
                    if (t && !strcmp(name, "default")) { tok->chat_template = lt_strdup(t); break; }
                }
            }
        }
        ltj_free(doc);
        free(buf);
        buf = NULL;
    }
    free(path);
    if (st != LT_OK) return st;

    /* a chat_template.jinja beside it (newer transformers) wins over the config's field */
    path = lt_path_join(dir, "chat_template.jinja");
    if (path && lt_file_exists(path) && lt_read_file(path, &buf, &len) == LT_OK) {
        free(tok->chat_template);
        tok->chat_template = buf;
        buf = NULL;
    }
    free(path);

    lt_tok_add_stop(tok, tok->eos_id);
    path = lt_path_join(dir, "generation_config.json");
    if (path && lt_file_exists(path)) {
        ltj_doc *doc = NULL;
        const ltj *root;
        st = lt_read_file(path, &buf, &len);
        if (st == LT_OK) st = ltj_parse(buf, len, path, &doc, &root);
        if (st == LT_OK) {
            const ltj *e = ltj_get(root, "eos_token_id");
            if (ltj_is(e, LTJ_NUM)) {
                if (tok->eos_id < 0) tok->eos_id = (int32_t)e->u.num;
                lt_tok_add_stop(tok, (int32_t)e->u.num);
            } else if (ltj_is(e, LTJ_ARR)) {
                for (uint32_t i = 0; i < e->n; i++) {
                    if (!ltj_is(&e->u.items[i], LTJ_NUM)) continue;
                    if (tok->eos_id < 0) tok->eos_id = (int32_t)e->u.items[i].u.num;
                    lt_tok_add_stop(tok, (int32_t)e->u.items[i].u.num);
                }
            }
            const ltj *b = ltj_get(root, "bos_token_id");
            if (tok->bos_id < 0 && ltj_is(b, LTJ_NUM)) tok->bos_id = (int32_t)b->u.num;
            const ltj *p = ltj_get(root, "pad_token_id");
            if (tok->pad_id < 0 && ltj_is(p, LTJ_NUM)) tok->pad_id = (int32_t)p->u.num;
        }
        ltj_free(doc);
        free(buf);
    }
    free(path);
    if (!tok->eos_text && tok->eos_id >= 0 && tok->eos_id < tok->n_ids && tok->tokens[tok->eos_id])
        tok->eos_text = lt_strdup(tok->tokens[tok->eos_id]);
    return st;
}

/* ---- load / free ---- */
static lt_status lt_tok_load_json(lt_tokenizer *tok, char *buf, size_t len) {
    size_t bad = lt_utf8_check(buf, len);
    if (bad != len) return lt_error(LT_ERR_FORMAT, TJ ": invalid UTF-8 at byte %zu", bad);
    ltj_doc *doc = NULL;
    const ltj *root;
    LT_TRY(ltj_parse(buf, len, TJ, &doc, &root));
    lt_status st = LT_OK;
    int has_byte_level = 0;
    if (root->type != LTJ_OBJ) st = lt_error(LT_ERR_FORMAT, TJ ": the top level must be an object");
    if (st == LT_OK) st = lt_tok_load_model(tok, ltj_get(root, "model"), ltj_get(root, "added_tokens"));
    if (st == LT_OK) st = lt_tok_load_normalizer(tok, ltj_get(root, "normalizer"), "normalizer");
    if (st == LT_OK) st = lt_tok_load_pre(tok, ltj_get(root, "pre_tokenizer"), "pre_tokenizer", &has_byte_level);
    /* without a ByteLevel step the vocabulary is of characters (SentencePiece-derived: Llama 2,
     * Mistral, Gemma, Phi-3), with <0xNN> tokens for what it lacks when byte_fallback is set */
    if (st == LT_OK) tok->char_level = !has_byte_level;
    if (st == LT_OK && has_byte_level && tok->byte_fallback)
        st = lt_error(LT_ERR_UNSUPPORTED, TJ ": model.byte_fallback=true with a ByteLevel pre-tokenizer is not supported");
    if (st == LT_OK && has_byte_level && tok->metaspace)
        st = lt_error(LT_ERR_UNSUPPORTED, TJ ": pre_tokenizer has both Metaspace and ByteLevel: not supported");
    if (st == LT_OK) st = lt_tok_load_post(tok, ltj_get(root, "post_processor"), "post_processor");
    if (st == LT_OK) st = lt_tok_load_decoder(tok, ltj_get(root, "decoder"), "decoder", 0);
    if (st == LT_OK && tok->n_added) {
        /* normalized added tokens are matched on normalized text: normalize their content too */
        for (int i = 0; i < tok->n_added && st == LT_OK; i++) {
            lt_tok_added *t = &tok->added[i];
            if (!t->normalized) continue;
            st = lt_tok_normalize(tok, t->content, t->len, &t->norm, &t->norm_len, NULL);
            if (st == LT_OK && t->norm_len) tok->added_norm_first[(unsigned char)t->norm[0]] = 1;
        }
    }
    for (int b = 0; b < 256 && st == LT_OK && !tok->char_level; b++)
        if (tok->byte_id[b] < 0 && tok->unk_id < 0)
            LT_LOGW(TJ ": the byte-level alphabet lacks byte 0x%02x and there is no unk_token: such bytes are dropped", b);
    ltj_free(doc);
    return st;
}

static lt_status lt_tok_new(lt_tokenizer **out) {
    lt_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory creating a tokenizer");
    tok->bos_id = tok->eos_id = tok->pad_id = tok->unk_id = -1;
    tok->cache = calloc(LT_TOK_CACHE_SHARDS, sizeof(lt_tok_cache_shard));
    if (!tok->cache) { free(tok); return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory creating the BPE cache"); }
    for (int i = 0; i < LT_TOK_CACHE_SHARDS; i++) pthread_mutex_init(&tok->cache[i].mu, NULL);
    *out = tok;
    return LT_OK;
}

lt_status lt_tokenizer_load_json(const char *json, size_t len, lt_tokenizer **out) {
    LT_CHECK_ARG((json || !len) && out, "lt_tokenizer_load_json: json and out must not be NULL");
    *out = NULL;
    lt_tokenizer *tok;
    LT_TRY(lt_tok_new(&tok));
    lt_status st = LT_OK;
    tok->pool = lt_malloc(len + 1, "tokenizer.json");
    if (!tok->pool) st = LT_ERR_OUT_OF_MEMORY;
    else {
        if (len) memcpy(tok->pool, json, len);
        tok->pool[len] = 0;
        st = lt_tok_load_json(tok, tok->pool, len);
    }
    if (st != LT_OK) { lt_tokenizer_free(tok); return st; }
    *out = tok;
    return LT_OK;
}

lt_status lt_tokenizer_load(const char *dir, lt_tokenizer **out) {
    LT_CHECK_ARG(dir && out, "lt_tokenizer_load: dir and out must not be NULL");
    *out = NULL;
    lt_tokenizer *tok;
    LT_TRY(lt_tok_new(&tok));
    lt_status st = LT_OK;
    tok->dir = lt_strdup(dir);
    char *path = lt_path_join(dir, "tokenizer.json");
    size_t len = 0;
    if (!tok->dir || !path) st = LT_ERR_OUT_OF_MEMORY;
    if (st == LT_OK && !lt_file_exists(path))
        st = lt_error(LT_ERR_NOT_FOUND, "%s: not found (a tokenizer folder must hold tokenizer.json)", path);
    if (st == LT_OK) st = lt_read_file(path, &tok->pool, &len);
    if (st == LT_OK) {
        st = lt_tok_load_json(tok, tok->pool, len);
        if (st != LT_OK) lt_error_wrap(st, "%s", dir);
    }
    if (st == LT_OK) st = lt_tok_load_config(tok, dir);
    free(path);
    if (st != LT_OK) { lt_tokenizer_free(tok); return st; }
    *out = tok;
    return LT_OK;
}

void lt_tokenizer_free(lt_tokenizer *tok) {
    if (!tok) return;
    lt_tok_cache_free(tok);
    for (int i = 0; i < tok->n_pre; i++) if (tok->pre[i].re) pcre2_code_free(tok->pre[i].re);
    for (int i = 0; i < tok->n_added; i++) free(tok->added[i].norm);
    free(tok->pre); free(tok->norms); free(tok->added); free(tok->dec); free(tok->is_fb);
    free(tok->tokens); free(tok->token_len); free(tok->is_special); free(tok->vocab.slots);
    free(tok->merges); free(tok->post_prefix); free(tok->post_suffix);
    free(tok->eos_text); free(tok->bos_text); free(tok->pad_text); free(tok->chat_template);
    free(tok->pool); free(tok->dir);
    free(tok);
}

int32_t lt_tokenizer_vocab_size(const lt_tokenizer *tok) { return tok ? tok->n_ids : 0; }

int32_t lt_tokenizer_token_to_id(const lt_tokenizer *tok, const char *token) {
    if (!tok || !token) return -1;
    return lt_tok_smap_find(tok, token, strlen(token));
}

const char *lt_tokenizer_id_to_token(const lt_tokenizer *tok, int32_t id) {
    if (!tok || id < 0 || id >= tok->n_ids) return NULL;
    return tok->tokens[id];
}

lt_status lt_tokenizer_special_tokens(const lt_tokenizer *tok, lt_special_tokens *out) {
    LT_CHECK_ARG(tok && out, "lt_tokenizer_special_tokens: tok and out must not be NULL");
    uint32_t sz = out->struct_size;
    if (sz && sz < sizeof(uint32_t) * 5)
        return lt_error(LT_ERR_VERSION, "lt_special_tokens.struct_size %u is too small", sz);
    lt_special_tokens s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    s.bos_id = tok->bos_id; s.eos_id = tok->eos_id; s.pad_id = tok->pad_id;
    s.n_stop_ids = tok->n_stop_ids;
    memcpy(s.stop_ids, tok->stop_ids, sizeof s.stop_ids);
    size_t n = sz ? (sz < sizeof s ? sz : sizeof s) : sizeof s;
    memcpy(out, &s, n);
    out->struct_size = (uint32_t)n;
    return LT_OK;
}

const char *lt_tokenizer_eos_token(const lt_tokenizer *tok) { return tok ? tok->eos_text : NULL; }

/* test_tok_reference.c - exact ids and decode for every line of
 * tests/data/tokenizer/tokenizer_expected.jsonl (made by Hugging Face tokenizers 0.23.2 with
 * add_special_tokens=False), plus lookups, special ids, offsets, encode_many, streaming decode,
 * invalid UTF-8 and malformed tokenizer.json messages. */
#include "lt_test.h"
#include "tok/tok.h"
#include <jansson.h>
#include <unistd.h>

static lt_tokenizer *tok;

static void check_reference(void) {
    json_error_t err;
    FILE *f = fopen(LT_REPO_ROOT "/tests/data/tokenizer/tokenizer_expected.jsonl", "r");
    CHECK(f != NULL);
    if (!f) return;
    char line[1 << 16];
    int lines = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, &err);
        CHECK(j != NULL);
        if (!j) continue;
        const char *text = json_string_value(json_object_get(j, "text"));
        size_t tlen = json_string_length(json_object_get(j, "text"));
        json_t *ids = json_object_get(j, "ids");
        const char *decoded = json_string_value(json_object_get(j, "decoded"));
        size_t n = 0;
        int32_t got[4096];
        CHECK_OK(lt_tokenizer_encode(tok, text, tlen, 0, got, 4096, &n));
        int same = n == json_array_size(ids);
        for (size_t i = 0; same && i < n; i++) same = got[i] == json_integer_value(json_array_get(ids, i));
        CHECK_MSG(same, "line %d: ids differ for '%.60s' (%zu vs %zu ids)", lines + 1, text, n, json_array_size(ids));
        char out[1 << 16];
        size_t olen = 0;
        CHECK_OK(lt_tokenizer_decode(tok, got, n, 0, out, sizeof out, &olen));
        CHECK_MSG(olen == strlen(decoded) && !memcmp(out, decoded, olen), "line %d: decode '%s' vs '%s'", lines + 1, out, decoded);
        /* offsets cover the text in order, each within bounds */
        int32_t *v; uint32_t *off; size_t m;
        CHECK_OK(lt_tokenizer_encode_offsets(tok, text, tlen, 0, &v, &off, &m));
        CHECK(m == n);
        for (size_t i = 0; i < m; i++) {
            CHECK(off[2 * i] <= off[2 * i + 1] && off[2 * i + 1] <= tlen);
            if (i) CHECK(off[2 * i] >= off[2 * (i - 1)]);
        }
        free(v); free(off);
        json_decref(j);
        lines++;
    }
    fclose(f);
    CHECK(lines >= 20);
    printf("reference lines checked: %d\n", lines);
}

static void check_lookups(void) {
    CHECK(lt_tokenizer_vocab_size(tok) == 151646);
    CHECK(lt_tokenizer_token_to_id(tok, "<|im_end|>") == 151645);
    CHECK(lt_tokenizer_token_to_id(tok, "Hello") == 9707);
    CHECK(lt_tokenizer_token_to_id(tok, "no-such-token-xyz") == -1);
    CHECK(!strcmp(lt_tokenizer_id_to_token(tok, 151644), "<|im_start|>"));
    CHECK(!strcmp(lt_tokenizer_id_to_token(tok, 220), "\xc4\xa0")); /* "Ġ" = space */
    CHECK(lt_tokenizer_id_to_token(tok, 151700) == NULL);
    CHECK(lt_tokenizer_id_to_token(tok, -1) == NULL);
    lt_special_tokens sp = {.struct_size = sizeof sp};
    CHECK_OK(lt_tokenizer_special_tokens(tok, &sp));
    CHECK(sp.eos_id == 151645 && sp.pad_id == 151643 && sp.bos_id == -1);
    CHECK(sp.n_stop_ids >= 1 && sp.stop_ids[0] == 151645);
    CHECK(!strcmp(lt_tokenizer_eos_token(tok), "<|im_end|>"));
}

static void check_decode_special(void) {
    const char *t = "<|im_start|>user\nhi<|im_end|>";
    int32_t ids[64]; size_t n;
    CHECK_OK(lt_tokenizer_encode(tok, t, strlen(t), 0, ids, 64, &n));
    char out[256]; size_t len;
    CHECK_OK(lt_tokenizer_decode(tok, ids, n, 1, out, sizeof out, &len));
    CHECK(!strcmp(out, "user\nhi"));
    CHECK_OK(lt_tokenizer_decode(tok, ids, n, 0, out, sizeof out, &len));
    CHECK(!strcmp(out, t));
    /* too small a buffer reports the size */
    CHECK_FAIL(lt_tokenizer_decode(tok, ids, n, 0, out, 4, &len), LT_ERR_BUFFER_TOO_SMALL, "do not fit");
    CHECK(len == strlen(t));
    CHECK_FAIL(lt_tokenizer_encode(tok, t, strlen(t), 0, ids, 2, &n), LT_ERR_BUFFER_TOO_SMALL, "do not fit");
    CHECK(n == 5); /* <|im_start|> user \n hi <|im_end|> */
    /* unknown ids are skipped; a lone byte of a multi-byte char decodes as U+FFFD */
    int32_t odd[3] = {9707, 151900, 149}; /* 149: the first byte of an Arabic digit */
    CHECK_OK(lt_tokenizer_decode(tok, odd, 3, 0, out, sizeof out, &len));
    CHECK(!strcmp(out, "Hello\xEF\xBF\xBD"));
}

static void check_stream(void) {
    const char *t = "Emoji 😀👍🏽 and 中文 text ١٢٣ done";
    int32_t ids[128]; size_t n;
    CHECK_OK(lt_tokenizer_encode(tok, t, strlen(t), 0, ids, 128, &n));
    lt_token_stream *s;
    CHECK_OK(lt_token_stream_new(tok, 1, &s));
    char acc[512] = "", piece[64];
    size_t len, total = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK_OK(lt_token_stream_push(s, ids[i], piece, sizeof piece, &len));
        CHECK(lt_utf8_check(piece, len) == len); /* only complete UTF-8 comes out */
        memcpy(acc + total, piece, len); total += len;
    }
    CHECK_OK(lt_token_stream_flush(s, piece, sizeof piece, &len));
    memcpy(acc + total, piece, len); total += len; acc[total] = 0;
    CHECK(!strcmp(acc, t));
    /* an incomplete tail becomes U+FFFD at flush */
    int32_t lone = 149;
    CHECK_OK(lt_token_stream_push(s, lone, piece, sizeof piece, &len));
    CHECK(len == 0);
    CHECK_OK(lt_token_stream_flush(s, piece, sizeof piece, &len));
    CHECK(len == 3 && !memcmp(piece, "\xEF\xBF\xBD", 3));
    lt_token_stream_free(s);
    lt_token_stream_free(NULL);
}

static void check_errors(void) {
    int32_t ids[16]; size_t n;
    CHECK_FAIL(lt_tokenizer_encode(tok, "ab\xff" "cd", 5, 0, ids, 16, &n), LT_ERR_UTF8, "byte 2");
    CHECK_FAIL(lt_tokenizer_encode(tok, "\xe4\xb8", 2, 0, ids, 16, &n), LT_ERR_UTF8, "byte 0");
    lt_tokenizer *t2 = NULL;
    CHECK_FAIL(lt_tokenizer_load(LT_BUILD_DIR "/no/such/dir", &t2), LT_ERR_NOT_FOUND, "tokenizer.json");
    /* malformed files: the message names the field */
    struct { const char *json; lt_status st; const char *needle; } cases[] = {
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"decoder\": {\"type\": \"ByteLevel\"}}",
         LT_ERR_FORMAT, "model.merges[0]"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"x\"}, \"merges\": []}}", LT_ERR_FORMAT, "model.vocab['a']"},
        {"{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", LT_ERR_UNSUPPORTED, "WordPiece"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"normalizer\": {\"type\": \"BertNormalizer\"}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"decoder\": {\"type\": \"ByteLevel\"}}",
         LT_ERR_UNSUPPORTED, "BertNormalizer"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}}",
         LT_ERR_FORMAT, "pre_tokenizer.pattern"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Metaspace\"}}", LT_ERR_FORMAT, "Metaspace.replacement"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"UnicodeScripts\"}}", LT_ERR_UNSUPPORTED, "UnicodeScripts"},
        {"{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}, \"decoder\": {\"type\": \"ByteLevel\"}}",
         LT_ERR_UNSUPPORTED, "byte_fallback"},
        {"{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"vocab\": {\"a\": 0}, \"merges\": []}, \"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"Regex\": \" +\"}, \"content\": \"x\"}}",
         LT_ERR_UNSUPPORTED, "normalizer: a Replace normalizer with a Regex"},
        {"{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"vocab\": {\"a\": 0}, \"merges\": []}, \"decoder\": {\"type\": \"WordPiece\"}}",
         LT_ERR_UNSUPPORTED, "decoder: decoder 'WordPiece'"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [],}}", LT_ERR_FORMAT, "line 1"},
        {"{\"added_tokens\": [{\"id\": -3, \"content\": \"x\"}], \"model\": {\"vocab\": {}, \"merges\": []}}", LT_ERR_FORMAT, "added_tokens[0].id"},
    };
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tok_bad_%d", LT_BUILD_DIR, (int)getpid());
    lt_mkdirs(dir);
    char path[600];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        FILE *f = fopen(path, "w");
        fputs(cases[i].json, f);
        fclose(f);
        t2 = NULL;
        CHECK_FAIL(lt_tokenizer_load(dir, &t2), cases[i].st, cases[i].needle);
        CHECK(t2 == NULL);
    }
    remove(path);
    rmdir(dir);
}

/* eos / bos / pad from tokenizer_config.json (string or {"content": ...}) and generation_config.json */
static void check_configs(void) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/tok_cfg_%d", LT_BUILD_DIR, (int)getpid());
    lt_mkdirs(dir);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    CHECK(symlink(LT_REPO_ROOT "/assets/qwen2-tokenizer/tokenizer.json", path) == 0);
    char cfg[600], gen[600];
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    snprintf(gen, sizeof gen, "%s/generation_config.json", dir);
    FILE *f = fopen(cfg, "w");
    fputs("{\"eos_token\": {\"content\": \"<|endoftext|>\", \"lstrip\": false}, \"bos_token\": \"<|im_start|>\", "
          "\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"x\"}, {\"name\": \"default\", \"template\": \"{{ messages[0].content }}!\"}]}", f);
    fclose(f);
    f = fopen(gen, "w");
    fputs("{\"bos_token_id\": 151643, \"eos_token_id\": [151645, 151643], \"pad_token_id\": 151643}", f);
    fclose(f);
    lt_tokenizer *t = NULL;
    CHECK_OK(lt_tokenizer_load(dir, &t));
    if (t) {
        lt_special_tokens sp = {.struct_size = sizeof sp};
        CHECK_OK(lt_tokenizer_special_tokens(t, &sp));
        CHECK(sp.eos_id == 151643 && sp.bos_id == 151644 && sp.pad_id == 151643);
        CHECK(sp.n_stop_ids == 2 && sp.stop_ids[0] == 151643 && sp.stop_ids[1] == 151645);
        CHECK(!strcmp(lt_tokenizer_eos_token(t), "<|endoftext|>"));
        lt_chat_message m = {"user", "hey"};
        char out[64]; size_t len;
        CHECK_OK(lt_tokenizer_apply_chat_template(t, &m, 1, 0, NULL, out, sizeof out, &len));
        CHECK(len == 4 && !strcmp(out, "hey!"));
        lt_tokenizer_free(t);
    }
    /* no tokenizer_config.json: no eos, and no chat template to apply */
    remove(cfg);
    remove(gen);
    CHECK_OK(lt_tokenizer_load(dir, &t));
    if (t) {
        CHECK(lt_tokenizer_eos_token(t) == NULL);
        lt_chat_message m = {"user", "hey"};
        size_t len;
        CHECK_FAIL(lt_tokenizer_apply_chat_template(t, &m, 1, 0, NULL, NULL, 0, &len), LT_ERR_NOT_FOUND, "chat_template");
        lt_tokenizer_free(t);
    }
    remove(path);
    rmdir(dir);
}

static void check_many(void) {
    const char *texts[64];
    size_t lens[64];
    char store[64][64];
    for (int i = 0; i < 64; i++) {
        snprintf(store[i], sizeof store[i], "record %d: 你好，世界 hello world %d!", i, i * 37);
        texts[i] = store[i]; lens[i] = strlen(store[i]);
    }
    int32_t *ids[64]; size_t n[64];
    CHECK_OK(lt_tokenizer_encode_many(tok, texts, lens, 64, 0, 4, ids, n));
    for (int i = 0; i < 64; i++) {
        int32_t one[128]; size_t m;
        CHECK_OK(lt_tokenizer_encode(tok, texts[i], lens[i], 0, one, 128, &m));
        CHECK(m == n[i] && !memcmp(one, ids[i], m * sizeof(int32_t)));
        free(ids[i]);
    }
    texts[10] = "bad \xc3";
    lens[10] = 5;
    CHECK_FAIL(lt_tokenizer_encode_many(tok, texts, lens, 64, 0, 4, ids, n), LT_ERR_UTF8, "text 10");
    CHECK(ids[0] == NULL);
}

static void check_offsets(void) {
    /* the response span of an Alpaca prompt maps to its tokens */
    const char *t = "### Instruction:\n你好\n### Response:\n回答 here<|im_end|>";
    int32_t *v; uint32_t *off; size_t n;
    CHECK_OK(lt_tokenizer_encode_offsets(tok, t, strlen(t), 0, &v, &off, &n));
    const char *resp = strstr(t, "回答");
    size_t rs = (size_t)(resp - t);
    /* concatenating the text of the tokens from the first one starting at rs gives the tail */
    size_t first = n;
    for (size_t i = 0; i < n; i++) if (off[2 * i] >= rs) { first = i; break; }
    CHECK(first < n && off[2 * first] == rs);
    CHECK(v[n - 1] == 151645 && off[2 * (n - 1)] == strlen(t) - 10 && off[2 * (n - 1) + 1] == strlen(t));
    char buf[256]; size_t len;
    CHECK_OK(lt_tokenizer_decode(tok, v + first, n - first, 0, buf, sizeof buf, &len));
    CHECK(!strcmp(buf, resp));
    free(v); free(off);
    /* NFC: a decomposed e + U+0301 is one composed token range covering both original chars */
    const char *d = "cafe\xcc\x81!";
    CHECK_OK(lt_tokenizer_encode_offsets(tok, d, strlen(d), 0, &v, &off, &n));
    CHECK(n >= 2 && off[2 * (n - 1)] == strlen(d) - 1 && off[2 * (n - 1) + 1] == strlen(d));
    CHECK(off[0] == 0);
    free(v); free(off);
}

int main(void) {
    double t0 = lt_time_s();
    CHECK_OK(lt_tokenizer_load(LT_REPO_ROOT "/assets/qwen2-tokenizer", &tok));
    if (!tok) return lt_test_done("test_tok_reference");
    printf("load: %.3f s\n", lt_time_s() - t0);
    check_reference();
    check_lookups();
    check_decode_special();
    check_stream();
    check_errors();
    check_configs();
    check_many();
    check_offsets();
    lt_tokenizer_free(tok);
    lt_tokenizer_free(NULL);
    return lt_test_done("test_tok_reference");
}

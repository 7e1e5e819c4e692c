/* test_data_trl.c - lt_dataset's records equal what TRL's SFTTrainer makes of the same data:
 * for each tokenizer of tests/data/trl/refs.json (Qwen2's, which adds no special tokens, and
 * BOS-adding Llama-3 / Gemma / Phi-3 / Mistral-style ones) and each record kind (plain text,
 * Alpaca through a prompt template with loss on every token and on the response only, chat
 * messages through the chat template), the token ids and the labels (-100 where no loss) are
 * exactly TRL's (refs.json: tests/data/trl/make_refs.py ran TRL's own _prepare_dataset and
 * collator). Pre-tokenized records stay as given (no BOS added). Needs no Python. */
#include "lt_test.h"
#include <jansson.h>

static int32_t format_of(const char *kind) {
    if (!strcmp(kind, "text")) return LT_DATA_TEXT;
    if (!strcmp(kind, "chat")) return LT_DATA_CHAT;
    return LT_DATA_ALPACA;
}

static int same_ints(const json_t *a, const int32_t *v, size_t n) {
    if (json_array_size(a) != n) return 0;
    for (size_t i = 0; i < n; i++)
        if (json_integer_value(json_array_get(a, i)) != v[i]) return 0;
    return 1;
}

static void print_ints(const char *what, const int32_t *v, size_t n) {
    fprintf(stderr, "  %s [", what);
    for (size_t i = 0; i < n; i++) fprintf(stderr, "%s%d", i ? ", " : "", v[i]);
    fprintf(stderr, "]\n");
}

int main(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/trl/refs.json", LT_REPO_ROOT);
    json_error_t je;
    json_t *refs = json_load_file(path, 0, &je);
    if (!refs) {
        fprintf(stderr, "%s: %s (line %d)\n", path, je.text, je.line);
        return 1;
    }
    const char *tpl = json_string_value(json_object_get(refs, "template"));
    const char *trl = json_string_value(json_object_get(json_object_get(refs, "versions"), "trl"));
    json_t *vocabs = json_object_get(refs, "vocabs");
    CHECK(tpl && json_array_size(vocabs) >= 5);
    size_t n_cases = 0, n_bos = 0;
    for (size_t v = 0; v < json_array_size(vocabs); v++) {
        json_t *voc = json_array_get(vocabs, v);
        const char *name = json_string_value(json_object_get(voc, "name"));
        snprintf(path, sizeof path, "%s/%s", LT_REPO_ROOT, json_string_value(json_object_get(voc, "dir")));
        lt_tokenizer *tok = NULL;
        CHECK_OK(lt_tokenizer_load(path, &tok));
        if (!tok) continue;
        int32_t bos = -1;
        const char *bos_text = json_string_value(json_object_get(voc, "bos"));
        if (bos_text) bos = lt_tokenizer_token_to_id(tok, bos_text);
        json_t *cases = json_object_get(voc, "cases");
        size_t ok = 0;
        for (size_t c = 0; c < json_array_size(cases); c++) {
            json_t *cs = json_array_get(cases, c);
            const char *kind = json_string_value(json_object_get(cs, "kind"));
            lt_dataset_params p;
            lt_dataset_params_init(&p);
            p.format = format_of(kind);
            p.template_text = tpl;
            p.max_seq_len = 1 << 16;
            p.n_threads = 1;
            if (!strcmp(kind, "alpaca_resp")) p.loss_on = LT_LOSS_RESPONSE;
            lt_dataset *ds = NULL;
            char *rec = json_dumps(json_object_get(cs, "record"), JSON_COMPACT);
            CHECK_OK(lt_dataset_new(tok, &p, &ds));
            if (ds) CHECK_OK(lt_dataset_add_json(ds, rec));
            int32_t ids[4096], labels[4096];
            size_t n = 0;
            if (ds && lt_dataset_get(ds, 0, ids, labels, 4096, &n) == LT_OK) {
                json_t *want_ids = json_object_get(cs, "ids"), *want_lab = json_object_get(cs, "labels");
                int good = same_ints(want_ids, ids, n) && same_ints(want_lab, labels, n);
                CHECK_MSG(good, "%s %s case %zu (%s): ids/labels differ from TRL's", name, kind, c, rec);
                if (!good) { print_ints("ours ids", ids, n); print_ints("ours labels", labels, n); }
                ok += good;
                n_bos += bos >= 0 && n > 0 && ids[0] == bos;
            } else {
                CHECK_MSG(0, "%s %s case %zu: no record (%s)", name, kind, c, lt_last_error());
            }
            n_cases++;
            free(rec);
            lt_dataset_free(ds);
        }
        printf("%-8s %zu/%zu records equal TRL %s (ids and labels)\n", name, ok, json_array_size(cases), trl);
        /* pre-tokenized records are used as given: no BOS, no EOS, labels kept */
        lt_dataset_params p;
        lt_dataset_params_init(&p);
        lt_dataset *ds = NULL;
        CHECK_OK(lt_dataset_new(tok, &p, &ds));
        if (ds) {
            CHECK_OK(lt_dataset_add_json(ds, "{\"input_ids\": [5, 6, 7, 8], \"labels\": [-100, 6, 7, 8]}"));
            int32_t ids[8], labels[8];
            size_t n = 0;
            CHECK_OK(lt_dataset_get(ds, 0, ids, labels, 8, &n));
            CHECK(n == 4 && ids[0] == 5 && ids[3] == 8 && labels[0] == -100 && labels[1] == 6);
            lt_dataset_free(ds);
        }
        lt_tokenizer_free(tok);
    }
    printf("%zu records, %zu of them beginning with the tokenizer's BOS\n", n_cases, n_bos);
    CHECK(n_bos > 0); /* the BOS-adding tokenizers are exercised */
    json_decref(refs);
    return lt_test_done("test_data_trl");
}

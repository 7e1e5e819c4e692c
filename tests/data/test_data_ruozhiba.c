/* test_data_ruozhiba.c - loss on the response only over all of assets/ruozhiba/ruozhiba_qa.json
 * (the notebook's template, Qwen2's tokenizer) is TRL's prompt-completion mask record by record:
 * the first n_prompt tokens carry no loss (n_prompt = len(tokenizer(prompt)), the prompt encoded
 * alone), every later token does, and the record has n_tokens tokens; both counts are TRL's own
 * (tests/data/trl/ruozhiba_counts.json, written by tests/data/trl/make_refs.py). Includes the
 * records where a token merges across the prompt/response boundary (':\n' + '\n\n' -> ':\n\n\n'),
 * where a byte-overlap rule would label one token more. Checked through both encoding paths: a
 * file load (records encoded in parallel chunks) and records added one by one through the API;
 * then the truncation message on a merged record. Needs no Python. */
#include "lt_test.h"
#include <jansson.h>

/* Every record's labels against the counts; returns the number of records that match. */
static size_t check_all(const lt_dataset *ds, json_t *n_prompt, json_t *n_tokens, const char *how,
                        uint64_t *label_tokens) {
    size_t n_rec = json_array_size(n_prompt), good = 0;
    static int32_t ids[1 << 14], labels[1 << 14];
    *label_tokens = 0;
    CHECK_MSG(lt_dataset_size(ds) == n_rec, "%s: %zu records, want %zu", how, lt_dataset_size(ds), n_rec);
    for (size_t i = 0; i < n_rec && i < lt_dataset_size(ds); i++) {
        size_t n = 0, np = (size_t)json_integer_value(json_array_get(n_prompt, i));
        size_t nt = (size_t)json_integer_value(json_array_get(n_tokens, i));
        if (lt_dataset_get(ds, i, ids, labels, 1 << 14, &n) != LT_OK) {
            CHECK_MSG(0, "%s: record %zu: %s", how, i, lt_last_error());
            continue;
        }
        size_t masked = 0;
        while (masked < n && labels[masked] == -100) masked++;
        int ok = n == nt && masked == np;
        for (size_t t = masked; t < n && ok; t++) ok = labels[t] == ids[t];
        CHECK_MSG(ok, "%s: record %zu: %zu tokens, the first %zu without loss (TRL: %zu tokens, %zu without loss)",
                  how, i, n, masked, nt, np);
        good += ok;
        *label_tokens += nt - np;
    }
    return good;
}

int main(void) {
    char path[4096], data[4096], tokdir[4096];
    snprintf(path, sizeof path, "%s/tests/data/trl/ruozhiba_counts.json", LT_REPO_ROOT);
    json_error_t je;
    json_t *ref = json_load_file(path, 0, &je);
    if (!ref) {
        fprintf(stderr, "%s: %s (line %d)\n", path, je.text, je.line);
        return 1;
    }
    const char *tpl = json_string_value(json_object_get(ref, "template"));
    const char *trl = json_string_value(json_object_get(json_object_get(ref, "versions"), "trl"));
    json_t *n_prompt = json_object_get(ref, "n_prompt"), *n_tokens = json_object_get(ref, "n_tokens");
    json_t *merged = json_object_get(ref, "merged");
    size_t n_rec = json_array_size(n_prompt);
    CHECK(tpl && trl && n_rec == 1475 && json_array_size(n_tokens) == n_rec);
    CHECK(json_array_size(merged) > 0); /* the boundary merge is exercised */
    snprintf(data, sizeof data, "%s/%s", LT_REPO_ROOT, json_string_value(json_object_get(ref, "data")));
    snprintf(tokdir, sizeof tokdir, "%s/%s", LT_REPO_ROOT, json_string_value(json_object_get(ref, "tokenizer")));
    lt_tokenizer *tok = NULL;
    CHECK_OK(lt_tokenizer_load(tokdir, &tok));
    if (!tok || !tpl || n_rec == 0) return lt_test_done("test_data_ruozhiba");

    lt_dataset_params p;
    lt_dataset_params_init(&p);
    p.format = LT_DATA_ALPACA;
    p.template_text = tpl;
    p.loss_on = LT_LOSS_RESPONSE;
    p.max_seq_len = 1 << 14;
    p.n_threads = 2; /* chunks of >= 64 records are encoded on several threads */

    /* 1. a file load */
    lt_dataset *ds = NULL;
    uint64_t want_labels = 0;
    CHECK_OK(lt_dataset_load(data, tok, &p, &ds));
    if (ds) {
        size_t good = check_all(ds, n_prompt, n_tokens, "load", &want_labels);
        lt_dataset_stats s = {.struct_size = sizeof s};
        CHECK_OK(lt_dataset_get_stats(ds, &s));
        CHECK_MSG(s.n_label_tokens == want_labels, "n_label_tokens %llu, TRL %llu",
                  (unsigned long long)s.n_label_tokens, (unsigned long long)want_labels);
        printf("lt_dataset_load: %zu/%zu records' masks equal TRL %s's (%llu tokens carry loss; %zu records with a "
               "token across the prompt/response boundary)\n", good, n_rec, trl,
               (unsigned long long)s.n_label_tokens, json_array_size(merged));
        lt_dataset_free(ds);
    }

    /* 2. the same records added one by one (lt_dataset_add_alpaca) */
    json_t *recs = json_load_file(data, 0, &je);
    CHECK_MSG(recs && json_array_size(recs) == n_rec, "%s: %s", data, recs ? "record count" : je.text);
    ds = NULL;
    CHECK_OK(lt_dataset_new(tok, &p, &ds));
    if (ds && recs) {
        for (size_t i = 0; i < json_array_size(recs); i++) {
            json_t *r = json_array_get(recs, i);
            CHECK_OK(lt_dataset_add_alpaca(ds, json_string_value(json_object_get(r, "instruction")),
                                           json_string_value(json_object_get(r, "input")),
                                           json_string_value(json_object_get(r, "output"))));
        }
        uint64_t lab = 0;
        size_t good = check_all(ds, n_prompt, n_tokens, "add_alpaca", &lab);
        printf("lt_dataset_add_alpaca: %zu/%zu records' masks equal TRL's\n", good, n_rec);
    }
    lt_dataset_free(ds);

    /* 3. a merged record cut right after its prompt's token count: the message names that
     * count as where the response starts; one token more labels exactly one token */
    if (recs && json_array_size(merged)) {
        size_t k = (size_t)json_integer_value(json_array_get(merged, 0));
        size_t np = (size_t)json_integer_value(json_array_get(n_prompt, k));
        json_t *r = json_array_get(recs, k);
        const char *ins = json_string_value(json_object_get(r, "instruction"));
        const char *inp = json_string_value(json_object_get(r, "input"));
        const char *out = json_string_value(json_object_get(r, "output"));
        char want[96];
        snprintf(want, sizeof want, "no token carries loss: the response starts at token %zu,", np);
        p.max_seq_len = (int32_t)np;
        CHECK_OK(lt_dataset_new(tok, &p, &ds));
        if (ds) CHECK_FAIL(lt_dataset_add_alpaca(ds, ins, inp, out), LT_ERR_DATA, want);
        lt_dataset_free(ds);
        p.max_seq_len = (int32_t)np + 1;
        CHECK_OK(lt_dataset_new(tok, &p, &ds));
        if (ds) {
            CHECK_OK(lt_dataset_add_alpaca(ds, ins, inp, out));
            lt_dataset_stats s = {.struct_size = sizeof s};
            CHECK_OK(lt_dataset_get_stats(ds, &s));
            CHECK(s.n_label_tokens == 1 && s.n_truncated == 1);
        }
        lt_dataset_free(ds);
    }
    json_decref(recs);
    lt_tokenizer_free(tok);
    json_decref(ref);
    return lt_test_done("test_data_ruozhiba");
}

/* test_dataset.c - the dataset pipeline with the real Qwen2 tokenizer: Alpaca rendering + EOS,
 * ids equal to encoding the rendered text, loss masks (every token / response only) at token
 * level, truncation, text / chat / pre-tokenized records, the train/eval split, streaming
 * (chunk size and thread count change nothing) and batches from the dataset. */
#include "lt_test.h"
#include "data/dataset.h"
#include "data/reader.h"
#include "data/template.h"
#include <stdlib.h>
#include <unistd.h>

static const lt_tokenizer *tok;

static int32_t *encode(const char *text, size_t *n) {
    size_t cap = strlen(text) + 16;
    int32_t *ids = malloc(cap * sizeof *ids);
    lt_status st = lt_tokenizer_encode(tok, text, strlen(text), 0, ids, cap, n);
    if (st != LT_OK) { fprintf(stderr, "encode: %s\n", lt_last_error()); *n = 0; }
    return ids;
}

static char *decode(const int32_t *ids, size_t n) {
    size_t cap = 64 * n + 16, len;
    char *s = malloc(cap);
    if (lt_tokenizer_decode(tok, ids, n, 0, s, cap, &len) != LT_OK) s[0] = 0;
    return s;
}

/* The labelled tokens of record i decoded, and a check that labels are ids or -100. */
static char *labelled_text(const lt_dataset *ds, size_t i, size_t *n_lab) {
    const int32_t *ids, *labels;
    size_t n;
    if (lt_dataset_record(ds, i, &ids, &labels, &n) != LT_OK) return strdup("");
    int32_t *keep = malloc(n * sizeof *keep);
    size_t k = 0;
    for (size_t t = 0; t < n; t++) {
        CHECK(labels[t] == -100 || labels[t] == ids[t]);
        if (labels[t] != -100) keep[k++] = ids[t];
    }
    *n_lab = k;
    char *s = decode(keep, k);
    free(keep);
    return s;
}

static void check_record_is(const lt_dataset *ds, size_t i, const char *text, int all_labels) {
    size_t n_want;
    int32_t *want = encode(text, &n_want);
    const int32_t *ids, *labels;
    size_t n;
    CHECK_OK(lt_dataset_record(ds, i, &ids, &labels, &n));
    CHECK_MSG(n == n_want && !memcmp(ids, want, n * sizeof *ids), "record %zu: %zu tokens, want %zu", i, n, n_want);
    if (all_labels && n == n_want) CHECK(!memcmp(labels, want, n * sizeof *labels));
    free(want);
}

int main(void) {
    lt_tokenizer *t;
    if (lt_tokenizer_load(LT_REPO_ROOT "/assets/qwen2-tokenizer", &t) != LT_OK) {
        fprintf(stderr, "tokenizer: %s\n", lt_last_error());
        return 1;
    }
    tok = t;
    const char *eos = lt_tokenizer_eos_token(tok);
    CHECK(eos && !strcmp(eos, "<|im_end|>"));
    lt_dataset_params p;
    lt_dataset_params_init(&p);
    CHECK(p.struct_size == sizeof p && p.max_seq_len == 2048 && p.add_eos == 1 && p.seed == 3407 &&
          !strcmp(p.template_name, "alpaca-zh") && p.loss_on == LT_LOSS_ALL && !p.skip_bad_records);

    /* Alpaca through the API, loss on every token: ids = encode(template + EOS), labels = ids */
    lt_dataset *ds;
    CHECK_OK(lt_dataset_new(tok, &p, &ds));
    CHECK_OK(lt_dataset_add_alpaca(ds, "只剩一个心脏了还能活吗？", "", "能，人本来就只有一个心脏。"));
    CHECK_OK(lt_dataset_add_alpaca(ds, "Translate", "hello world", "你好，世界"));
    CHECK_OK(lt_dataset_add_alpaca(ds, "no input given", NULL, "ok"));
    CHECK(lt_dataset_size(ds) == 3);
    check_record_is(ds, 0, "\n下面是描述一个任务，以一个输入然后提供一个回复\n### Instruction:\n只剩一个心脏了还能活吗？\n### Input:\n\n"
                           "### Response:\n能，人本来就只有一个心脏。\n<|im_end|>", 1);
    check_record_is(ds, 2, "\n下面是描述一个任务，以一个输入然后提供一个回复\n### Instruction:\nno input given\n### Input:\n\n"
                           "### Response:\nok\n<|im_end|>", 1);
    const int32_t *ids, *labels;
    size_t n;
    CHECK_OK(lt_dataset_record(ds, 0, &ids, &labels, &n));
    CHECK(ids[n - 1] == 151645); /* <|im_end|> as one token */
    lt_dataset_stats s = {.struct_size = sizeof s};
    CHECK_OK(lt_dataset_get_stats(ds, &s));
    CHECK(s.n_records == 3 && s.n_eval == 0 && s.n_truncated == 0 && s.n_label_tokens == s.n_tokens &&
          s.min_len > 10 && s.max_len >= s.min_len);
    int32_t buf[4096], lbuf[4096];
    size_t got;
    CHECK_OK(lt_dataset_get(ds, 1, buf, lbuf, 4096, &got));
    CHECK_FAIL(lt_dataset_get(ds, 1, buf, lbuf, 3, &got), LT_ERR_BUFFER_TOO_SMALL, "cap is 3");
    CHECK_FAIL(lt_dataset_get(ds, 3, buf, lbuf, 4096, &got), LT_ERR_INVALID_ARGUMENT, "out of range");
    /* a batch of records 2 and 0 */
    lt_batch b = {0};
    size_t idx[] = {2, 0};
    CHECK_OK(lt_batch_from_dataset(&b, ds, idx, 2, 0));
    size_t n2;
    const int32_t *ids2, *lab2;
    lt_dataset_record(ds, 2, &ids2, &lab2, &n2);
    CHECK(b.n_tokens == (int32_t)(n + n2) && b.nseq == 2 && b.cu_seqlens[1] == (int32_t)n2 &&
          b.targets[n2 - 1] == -100 && b.targets[0] == ids2[1] && b.ids[n2] == ids[0] && b.pos[n2] == 0 &&
          b.n_targets == (int64_t)(n + n2 - 2));
    lt_batch_free(&b);
    lt_dataset_free(ds);

    /* response only: the labelled tokens are exactly the output, the template's tail and EOS */
    p.loss_on = LT_LOSS_RESPONSE;
    CHECK_OK(lt_dataset_new(tok, &p, &ds));
    CHECK_OK(lt_dataset_add_alpaca(ds, "只剩一个心脏了还能活吗？", "", "能，人本来就只有一个心脏。"));
    CHECK_OK(lt_dataset_add_alpaca(ds, "Say hi", "", "Hi there"));
    size_t nl;
    char *txt = labelled_text(ds, 0, &nl);
    CHECK_MSG(!strcmp(txt, "能，人本来就只有一个心脏。\n<|im_end|>"), "labelled '%s'", txt);
    free(txt);
    txt = labelled_text(ds, 1, &nl);
    CHECK_MSG(!strcmp(txt, "Hi there\n<|im_end|>"), "labelled '%s'", txt);
    free(txt);
    lt_dataset_free(ds);
    /* response pushed past max_seq_len: a bad record, not an all -100 one */
    p.max_seq_len = 12;
    CHECK_OK(lt_dataset_new(tok, &p, &ds));
    CHECK_FAIL(lt_dataset_add_alpaca(ds, "a long instruction that fills the window", "", "x"), LT_ERR_DATA,
               "no token carries loss: the response starts at token");
    lt_dataset_free(ds);

    /* truncation with loss on every token: first max_seq_len tokens, counted */
    p.loss_on = LT_LOSS_ALL;
    p.max_seq_len = 8;
    CHECK_OK(lt_dataset_new(tok, &p, &ds));
    CHECK_OK(lt_dataset_add_alpaca(ds, "a long instruction that fills the window", "", "x"));
    CHECK_OK(lt_dataset_add_text(ds, "short"));
    CHECK_OK(lt_dataset_get_stats(ds, &s));
    CHECK(s.n_truncated == 1 && s.max_len == 8 && s.n_records == 2);
    size_t nfull;
    int32_t *full = encode("\n下面是描述一个任务，以一个输入然后提供一个回复\n### Instruction:\na long instruction that fills the "
                           "window\n### Input:\n\n### Response:\nx\n<|im_end|>", &nfull);
    CHECK_OK(lt_dataset_record(ds, 0, &ids, &labels, &n));
    CHECK(n == 8 && !memcmp(ids, full, 8 * sizeof *ids));
    free(full);
    /* text: EOS appended once */
    check_record_is(ds, 1, "short<|im_end|>", 1);
    CHECK_OK(lt_dataset_add_text(ds, "ends already<|im_end|>"));
    check_record_is(ds, 2, "ends already<|im_end|>", 1);
    lt_dataset_free(ds);

    /* a built-in name passed as the template text, and the English Alpaca template */
    lt_dataset_params_init(&p);
    p.template_text = "alpaca";
    CHECK_OK(lt_dataset_new(tok, &p, &ds));
    CHECK_OK(lt_dataset_add_alpaca(ds, "Add.", "1 2", "3"));
    check_record_is(ds, 0, "Below is an instruction that describes a task, paired with an input that provides further "
                           "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
                           "Add.\n\n### Input:\n1 2\n\n### Response:\n3<|im_end|>", 1);
    lt_dataset_free(ds);

    /* custom template, custom fields, JSON records, pre-tokenized records */
    lt_dataset_params_init(&p);
    p.template_text = "Q: {instruction}{input}\nA: {output}";
    p.instruction_field = "q";
    p.input_field = "ctx";
    p.output_field = "a";
    CHECK_OK(lt_dataset_new(tok, &p, &ds));
    CHECK_OK(lt_dataset_add_json(ds, "{\"q\": \"why\", \"a\": \"because\", \"ctx\": null}"));
    check_record_is(ds, 0, "Q: why\nA: because<|im_end|>", 1);
    CHECK_FAIL(lt_dataset_add_json(ds, "{\"q\": \"why\"}"), LT_ERR_DATA, "missing field 'a'");
    CHECK_FAIL(lt_dataset_add_json(ds, "{\"q\": \"why\", \"a\": 3}"), LT_ERR_DATA, "field 'a' is an integer");
    CHECK_FAIL(lt_dataset_add_json(ds, "{\"q\": \"why\", \"a\": \"x\""), LT_ERR_DATA, "malformed JSON");
    CHECK_FAIL(lt_dataset_add_alpaca(ds, "a", "b", "\xff"), LT_ERR_DATA, "invalid UTF-8 at byte offset 0");
    lt_dataset_free(ds);
    lt_dataset_params_init(&p);
    CHECK_OK(lt_dataset_new(tok, &p, &ds));
    int32_t tids[] = {1, 2, 3, 4}, tlab[] = {-100, -100, 3, 4};
    CHECK_OK(lt_dataset_add_tokens(ds, tids, tlab, 4));
    CHECK_OK(lt_dataset_add_tokens(ds, tids, NULL, 4));
    CHECK_OK(lt_dataset_add_json(ds, "{\"input_ids\": [5, 6, 7], \"labels\": [-100, 6, 7]}"));
    CHECK_OK(lt_dataset_record(ds, 0, &ids, &labels, &n));
    CHECK(n == 4 && !memcmp(labels, tlab, sizeof tlab) && !memcmp(ids, tids, sizeof tids));
    CHECK_OK(lt_dataset_record(ds, 1, &ids, &labels, &n));
    CHECK(n == 4 && !memcmp(labels, tids, sizeof tids));
    CHECK_OK(lt_dataset_record(ds, 2, &ids, &labels, &n));
    CHECK(n == 3 && ids[0] == 5 && labels[0] == -100 && labels[2] == 7);
    int32_t allmask[] = {-100, -100, -100, -100};
    CHECK_FAIL(lt_dataset_add_tokens(ds, tids, allmask, 4), LT_ERR_DATA, "no token carries loss");
    int32_t badid[] = {1, 999999};
    CHECK_FAIL(lt_dataset_add_tokens(ds, badid, NULL, 2), LT_ERR_DATA, "outside the vocabulary");
    /* skip mode: the same bad records are counted, not returned */
    lt_dataset_free(ds);
    p.skip_bad_records = 1;
    CHECK_OK(lt_dataset_new(tok, &p, &ds));
    CHECK_OK(lt_dataset_add_tokens(ds, tids, allmask, 4));
    CHECK_OK(lt_dataset_add_json(ds, "{\"instruction\": 1}"));
    CHECK_OK(lt_dataset_add_alpaca(ds, "fine", "", "yes"));
    CHECK_OK(lt_dataset_get_stats(ds, &s));
    CHECK(s.n_records == 1 && s.n_skipped == 2);
    lt_dataset_free(ds);

    /* chat records: messages and ShareGPT conversations render through the chat template */
    lt_dataset_params_init(&p);
    const char *conv = "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", "
                       "\"content\": \"Hello!\"}, {\"role\": \"user\", \"content\": \"Bye\"}, {\"role\": "
                       "\"assistant\", \"content\": \"See you.\"}]}";
    const char *share = "{\"conversations\": [{\"from\": \"human\", \"value\": \"Hi\"}, {\"from\": \"gpt\", "
                        "\"value\": \"Hello!\"}, {\"from\": \"human\", \"value\": \"Bye\"}, {\"from\": \"gpt\", "
                        "\"value\": \"See you.\"}]}";
    lt_chat_message msgs[] = {{"user", "Hi"}, {"assistant", "Hello!"}, {"user", "Bye"}, {"assistant", "See you."}};
    char rendered[4096];
    size_t rlen;
    lt_status cst = lt_tokenizer_apply_chat_template(tok, msgs, 4, 0, NULL, rendered, sizeof rendered, &rlen);
    if (cst != LT_OK) {
        fprintf(stderr, "chat template not available (%s): chat checks skipped\n", lt_last_error());
    } else {
        CHECK_OK(lt_dataset_new(tok, &p, &ds));
        CHECK_OK(lt_dataset_add_json(ds, conv));
        CHECK_OK(lt_dataset_add_json(ds, share));
        check_record_is(ds, 0, rendered, 1); /* already ends with <|im_end|>\n: no second EOS */
        check_record_is(ds, 1, rendered, 1);
        CHECK_FAIL(lt_dataset_add_json(ds, "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}"), LT_ERR_DATA,
                   "no assistant message");
        CHECK_FAIL(lt_dataset_add_json(ds, "{\"messages\": [{\"role\": \"bot\", \"content\": \"Hi\"}]}"), LT_ERR_DATA,
                   "unknown role 'bot'");
        CHECK_FAIL(lt_dataset_add_json(ds, "{\"messages\": [{\"role\": \"user\"}]}"), LT_ERR_DATA,
                   "messages[0]: missing field 'content'");
        lt_dataset_free(ds);
        p.loss_on = LT_LOSS_RESPONSE;
        CHECK_OK(lt_dataset_new(tok, &p, &ds));
        CHECK_OK(lt_dataset_add_json(ds, share));
        txt = labelled_text(ds, 0, &nl);
        CHECK_MSG(!strcmp(txt, "Hello!<|im_end|>See you.<|im_end|>"), "labelled '%s'", txt);
        free(txt);
        lt_dataset_free(ds);
    }

    /* a file: the chunk size of the reader and the number of threads change nothing; split */
    char path[] = "/tmp/lt_ds_XXXXXX.jsonl";
    int fd = mkstemps(path, 6);
    FILE *f = fdopen(fd, "w");
    for (int i = 0; i < 300; i++)
        fprintf(f, "{\"instruction\": \"问题 %d：为什么天是蓝的？\", \"input\": \"%s\", \"output\": \"回答 %d。\"}\n", i,
                i % 3 ? "" : "一些上下文", i * 7);
    fclose(f);
    lt_dataset_params_init(&p);
    p.n_threads = 1;
    lt_dataset *d1, *d2;
    CHECK_OK(lt_dataset_load(path, tok, &p, &d1));
    p.n_threads = 3;
    lt_reader_chunk_bytes = 5;
    CHECK_OK(lt_dataset_load(path, tok, &p, &d2));
    lt_reader_chunk_bytes = 1 << 20;
    CHECK(lt_dataset_size(d1) == 300 && lt_dataset_size(d2) == 300);
    int same = 1;
    for (size_t i = 0; i < 300; i++) {
        const int32_t *a, *bb, *la, *lb;
        size_t na, nb;
        lt_dataset_record(d1, i, &a, &la, &na);
        lt_dataset_record(d2, i, &bb, &lb, &nb);
        same &= na == nb && !memcmp(a, bb, na * 4) && !memcmp(la, lb, na * 4);
    }
    CHECK(same);
    check_record_is(d1, 3, "\n下面是描述一个任务，以一个输入然后提供一个回复\n### Instruction:\n问题 3：为什么天是蓝的？\n### Input:\n一些上下文\n"
                           "### Response:\n回答 21。\n<|im_end|>", 1);
    lt_dataset_free(d2);
    p.eval_fraction = 0.1;
    CHECK_OK(lt_dataset_load(path, tok, &p, &d2));
    CHECK(lt_dataset_size(d2) == 270 && lt_dataset_eval_size(d2) == 30);
    /* train + eval cover every record once (records are distinct texts) */
    int cover[300] = {0};
    for (int k = 0; k < 2; k++) {
        size_t sz = k ? lt_dataset_eval_size(d2) : lt_dataset_size(d2);
        for (size_t i = 0; i < sz; i++) {
            const int32_t *a, *la;
            size_t na;
            if (k) lt_dataset_eval_record(d2, i, &a, &la, &na); else lt_dataset_record(d2, i, &a, &la, &na);
            for (size_t j = 0; j < 300; j++) {
                const int32_t *c, *lc;
                size_t nc;
                lt_dataset_record(d1, j, &c, &lc, &nc);
                if (nc == na && !memcmp(a, c, na * 4)) { cover[j]++; break; }
            }
        }
    }
    int ok = 1;
    for (int j = 0; j < 300; j++) ok &= cover[j] == 1;
    CHECK(ok);
    CHECK_OK(lt_dataset_get_stats(d2, &s));
    CHECK(s.n_records == 270 && s.n_eval == 30);
    lt_dataset_free(d1);
    lt_dataset_free(d2);
    unlink(path);
    lt_tokenizer_free(t);
    return lt_test_done("test_dataset");
}

/* test_bad_data.c - every kind of bad training file gets its own message (naming the file,
 * line:column and record) and a non-zero status; the skip mode counts and reports instead. */
#include "lt_test.h"
#include "data/dataset.h"
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/lt_bad_XXXXXX";
static const lt_tokenizer *tok;

static const char *put(const char *name, const char *data, size_t len) {
    static char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, len, f);
    fclose(f);
    return path;
}

typedef struct { const char *name, *data; lt_status st; const char *msg; int32_t loss_on, max_len; } bad_case;

int main(void) {
    lt_tokenizer *t;
    if (lt_tokenizer_load(LT_REPO_ROOT "/assets/qwen2-tokenizer", &t) != LT_OK) {
        fprintf(stderr, "tokenizer: %s\n", lt_last_error());
        return 1;
    }
    tok = t;
    if (!mkdtemp(dir)) LT_TEST_SKIP("no temporary folder");
    static const bad_case cases[] = {
        {"empty.json", "", LT_ERR_DATA, "empty.json: the file is empty"},
        {"garbage.json", "instruction,output\nx,y\n", LT_ERR_DATA, "garbage.json:1:1: the file starts with 'i'"},
        {"unterminated.json", "[{\"instruction\": \"a\", \"output\": \"b}]", LT_ERR_DATA,
         "a string is never closed"},
        {"unclosed.json", "[\n{\"instruction\": \"a\", \"output\": \"b\"\n", LT_ERR_DATA,
         "record 1 (which starts at 2:1): an object or array is never closed"},
        {"missing_comma.json", "[{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"c\", \"output\": \"d\"}]",
         LT_ERR_DATA, "missing_comma.json:2:1: expected ',' or ']' after record 1"},
        {"trailing_comma.json", "[{\"instruction\": \"a\", \"output\": \"b\"},]", LT_ERR_DATA, "a trailing ','"},
        {"no_close.json", "[{\"instruction\": \"a\", \"output\": \"b\"}", LT_ERR_DATA,
         "ends before the array's closing ']'"},
        {"two_arrays.json", "[{\"instruction\": \"a\", \"output\": \"b\"}][]", LT_ERR_DATA,
         "unexpected '[' after the array's closing ']'"},
        {"bad_json.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n\n{\"instruction\": \"a\", \"output\": }\n",
         LT_ERR_DATA, "bad_json.jsonl:3:"},
        {"not_object.json", "[{\"instruction\": \"a\", \"output\": \"b\"}, 42]", LT_ERR_DATA,
         "record 2: the record is an integer, expected an object"},
        {"wrong_type.jsonl", "{\"instruction\": \"a\", \"output\": [\"b\"]}\n", LT_ERR_DATA,
         "wrong_type.jsonl:1:1: record 1: field 'output' is an array, expected a string"},
        {"missing_output.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"a\"}\n", LT_ERR_DATA,
         "missing_output.jsonl:2:1: record 2: missing field 'output'"},
        {"empty_output.jsonl", "{\"instruction\": \"a\", \"output\": \"\"}\n", LT_ERR_DATA,
         "field 'output' is empty"},
        {"null_instruction.jsonl", "{\"instruction\": null, \"output\": \"x\"}\n", LT_ERR_DATA,
         "field 'instruction' is null, expected a string"},
        {"bad_utf8.jsonl", "{\"instruction\": \"ok\", \"output\": \"ok\"}\n{\"instruction\": \"a\xff\", \"output\": \"b\"}\n",
         LT_ERR_DATA, "record 2: invalid UTF-8 (byte 0xFF at byte offset 56 of the file)"},
        {"duplicate_key.jsonl", "{\"instruction\": \"a\", \"output\": \"b\", \"output\": \"c\"}\n", LT_ERR_DATA,
         "duplicate object key"},
        {"nul_char.jsonl", "{\"instruction\": \"a\\u0000b\", \"output\": \"c\"}\n", LT_ERR_DATA, "u0000"},
        {"empty_array.json", " [ ] ", LT_ERR_DATA, "holds no records"},
        {"unknown_fields.jsonl", "{\"question\": \"a\", \"answer\": \"b\"}\n", LT_ERR_DATA,
         "none of the known fields"},
        {"bad_role.jsonl", "{\"messages\": [{\"role\": \"narrator\", \"content\": \"x\"}]}\n", LT_ERR_DATA,
         "unknown role 'narrator'"},
        {"bad_ids.jsonl", "{\"input_ids\": [1, 2, -5]}\n", LT_ERR_DATA, "field 'input_ids'[2] = -5 is outside the vocabulary"},
        {"labels_len.jsonl", "{\"input_ids\": [1, 2, 3], \"labels\": [1, 2]}\n", LT_ERR_DATA,
         "field 'labels' has 2 entries but 'input_ids' has 3"},
        {"empty_element.json", "[{\"instruction\": \"a\", \"output\": \"b\"}, , ]", LT_ERR_DATA, "an empty element"},
        {"no_label_left.jsonl", "{\"instruction\": \"a very long prompt indeed, longer than the window\", \"output\": \"b\"}\n",
         LT_ERR_DATA, "no token carries loss: the response starts at token", LT_LOSS_RESPONSE, 8},
        {"text_response_only.jsonl", "{\"text\": \"just text\"}\n", LT_ERR_DATA,
         "no response span for loss_on=response", LT_LOSS_RESPONSE, 0},
        {"bad_line_col.json", "[\n  {\"instruction\": \"a\", \"output\": \"b\"},\n  {\"instruction\": \"a\",\n   \"output\": tru}\n]",
         LT_ERR_DATA, "bad_line_col.json:4:"},
    };
    size_t n_cases = sizeof cases / sizeof cases[0];
    for (size_t i = 0; i < n_cases; i++) {
        lt_dataset_params p;
        lt_dataset_params_init(&p);
        if (cases[i].loss_on) p.loss_on = cases[i].loss_on;
        if (cases[i].max_len) p.max_seq_len = cases[i].max_len;
        lt_dataset *ds = (lt_dataset *)0x1;
        const char *path = put(cases[i].name, cases[i].data, strlen(cases[i].data));
        lt_status st = lt_dataset_load(path, tok, &p, &ds);
        CHECK_MSG(st == cases[i].st && strstr(lt_last_error(), cases[i].msg) && ds == NULL,
                  "%s: %s '%s' (want '%s')", cases[i].name, lt_status_string(st), lt_last_error(), cases[i].msg);
        printf("%-26s %s\n", cases[i].name, lt_last_error());
    }
    lt_dataset *ds;
    lt_dataset_params p;
    lt_dataset_params_init(&p);
    CHECK_FAIL(lt_dataset_load("/nonexistent/data.json", tok, &p, &ds), LT_ERR_NOT_FOUND, "/nonexistent/data.json");
    CHECK_FAIL(lt_dataset_load(dir, tok, &p, &ds), LT_ERR_IO, "is a folder");
    CHECK_FAIL(lt_dataset_load("x", NULL, &p, &ds), LT_ERR_INVALID_ARGUMENT, "tokenizer is NULL");
    p.max_seq_len = 0;
    CHECK_FAIL(lt_dataset_load("x", tok, &p, &ds), LT_ERR_INVALID_ARGUMENT, "max_seq_len must be > 0");
    lt_dataset_params_init(&p);
    p.template_name = "alpacca";
    CHECK_FAIL(lt_dataset_load("x", tok, &p, &ds), LT_ERR_NOT_FOUND, "unknown template name 'alpacca'");
    lt_dataset_params_init(&p);
    p.template_text = "{instruction} -> {answer}";
    CHECK_FAIL(lt_dataset_load("x", tok, &p, &ds), LT_ERR_FORMAT, "unknown placeholder '{answer}'");

    /* skip mode: bad records counted and reported, good ones kept, structure errors still fatal */
    const char *mixed = "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": 1, \"output\": \"b\"}\n"
                        "not json\n{\"instruction\": \"c\", \"output\": \"\"}\n{\"instruction\": \"d\", \"output\": \"e\"}\n"
                        "{\"instruction\": \"\xc3\x28\", \"output\": \"e\"}\n";
    lt_dataset_params_init(&p);
    p.skip_bad_records = 1;
    CHECK_OK(lt_dataset_load(put("mixed.jsonl", mixed, strlen(mixed)), tok, &p, &ds));
    lt_dataset_stats s = {.struct_size = sizeof s};
    if (ds) {
        CHECK_OK(lt_dataset_get_stats(ds, &s));
        CHECK_MSG(s.n_records == 2 && s.n_skipped == 4, "kept %llu skipped %llu", (unsigned long long)s.n_records,
                  (unsigned long long)s.n_skipped);
        lt_dataset_free(ds);
    }
    p.skip_bad_records = 0;
    CHECK_FAIL(lt_dataset_load(put("mixed.jsonl", mixed, strlen(mixed)), tok, &p, &ds), LT_ERR_DATA,
               "mixed.jsonl:2:1: record 2: field 'instruction' is an integer");
    p.skip_bad_records = 1;
    const char *allbad = "{\"x\": 1}\n{\"y\": 2}\n";
    CHECK_FAIL(lt_dataset_load(put("allbad.jsonl", allbad, strlen(allbad)), tok, &p, &ds), LT_ERR_DATA,
               "all 2 records were bad");
    CHECK_FAIL(lt_dataset_load(put("broken.json", "[{\"instruction\": \"a\", \"output\": \"b\"} {", 38), tok, &p, &ds),
               LT_ERR_DATA, "expected ',' or ']'");
    printf("%zu malformed files checked\n", n_cases);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    lt_tokenizer_free(t);
    return lt_test_done("test_bad_data");
}

/* test_reader.c - the streaming readers: the same records (text and file:line:column) come
 * out whatever the chunk size, records straddling chunks included; JSONL blank lines, CRLF,
 * a BOM and a last line without newline; structural errors with their positions. */
#include "lt_test.h"
#include "data/reader.h"
#include <jansson.h>
#include <stdlib.h>
#include <unistd.h>

static char dir[] = "/tmp/lt_reader_XXXXXX";

static const char *write_tmp(const char *name, const char *data, size_t len) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, len, f);
    fclose(f);
    return path;
}

typedef struct { char *text[16]; lt_record_pos pos[16]; int n; lt_status end; char msg[512]; } result;

static void read_all(const char *path, size_t chunk, result *r) {
    memset(r, 0, sizeof *r);
    lt_reader_chunk_bytes = chunk;
    lt_reader *rd;
    r->end = lt_reader_open(path, &rd);
    if (r->end < 0) { snprintf(r->msg, sizeof r->msg, "%s", lt_last_error()); return; }
    for (;;) {
        const char *t;
        size_t len;
        lt_record_pos pos;
        lt_status st = lt_reader_next(rd, &t, &len, &pos);
        if (st != LT_OK) { r->end = st; snprintf(r->msg, sizeof r->msg, "%s", lt_last_error()); break; }
        if (r->n < 16) { r->text[r->n] = strndup(t, len); r->pos[r->n] = pos; }
        r->n++;
    }
    lt_reader_close(rd);
}
static void result_free(result *r) { for (int i = 0; i < r->n && i < 16; i++) free(r->text[i]); }

/* Reads with chunk sizes 1..9 and 1 MiB; all must agree. */
static void check_same(const char *path, result *ref) {
    read_all(path, 1 << 20, ref);
    size_t chunks[] = {1, 2, 3, 4, 5, 7, 9, 64};
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        result r;
        read_all(path, chunks[c], &r);
        CHECK_MSG(r.n == ref->n && r.end == ref->end, "chunk %zu: %d records (%d), end %d", chunks[c], r.n, ref->n, r.end);
        for (int i = 0; i < r.n && i < ref->n && i < 16; i++) {
            CHECK_MSG(!strcmp(r.text[i], ref->text[i]), "chunk %zu record %d", chunks[c], i);
            CHECK(r.pos[i].line == ref->pos[i].line && r.pos[i].column == ref->pos[i].column &&
                  r.pos[i].offset == ref->pos[i].offset && r.pos[i].record == ref->pos[i].record);
        }
        CHECK_MSG(!strcmp(r.msg, ref->msg), "chunk %zu: '%s' vs '%s'", chunks[c], r.msg, ref->msg);
        result_free(&r);
    }
}

int main(void) {
    if (!mkdtemp(dir)) LT_TEST_SKIP("cannot make a temporary folder");
    /* a pretty-printed array whose strings hold brackets, braces, commas, escaped quotes */
    const char *arr = "\xEF\xBB\xBF [\n {\n  \"instruction\": \"a ] } [ {\",\n  \"output\": \"q\\\"uo\\\\\"\n },\n"
                      "  {\"instruction\": \"中文 \\u4e2d\", \"nested\": {\"x\": [1, {\"y\": \"}\"}]}, \"output\": \"o\"}\r\n"
                      ",{\"instruction\":\"\",\"output\":\"z\"}  ]  \n\n";
    result ref;
    check_same(write_tmp("a.json", arr, strlen(arr)), &ref);
    CHECK(ref.n == 3 && ref.end == LT_DONE);
    if (ref.n == 3) {
        CHECK(ref.pos[0].line == 2 && ref.pos[0].column == 2 && ref.pos[0].record == 1 && ref.pos[0].offset == 7);
        CHECK(ref.pos[1].line == 6 && ref.pos[1].column == 3);
        CHECK(ref.pos[2].line == 7 && ref.pos[2].column == 2);
        json_error_t e;
        json_t *all = json_loads(arr + 3, 0, &e);
        CHECK(all && json_array_size(all) == 3);
        for (int i = 0; i < 3 && all; i++) {
            json_t *one = json_loads(ref.text[i], 0, &e);
            CHECK_MSG(one && json_equal(one, json_array_get(all, i)), "record %d differs from the whole-file parse", i);
            json_decref(one);
        }
        json_decref(all);
    }
    result_free(&ref);

    /* JSONL: blank lines, CRLF, leading blanks, a last line without '\n' */
    const char *jl = "{\"a\":1}\r\n\n   \n  {\"b\":\"x\\ny\"}\n{\"c\":[\"}\"]}";
    check_same(write_tmp("a.jsonl", jl, strlen(jl)), &ref);
    CHECK(ref.n == 3 && ref.end == LT_DONE);
    if (ref.n == 3) {
        CHECK(!strcmp(ref.text[0], "{\"a\":1}") && ref.pos[0].line == 1);
        CHECK(!strcmp(ref.text[1], "{\"b\":\"x\\ny\"}") && ref.pos[1].line == 4 && ref.pos[1].column == 3);
        CHECK(!strcmp(ref.text[2], "{\"c\":[\"}\"]}") && ref.pos[2].line == 5 && ref.pos[2].record == 3);
    }
    result_free(&ref);

    /* an empty array, and elements that are not objects come out for the parser to judge */
    check_same(write_tmp("e.json", "[ ]", 3), &ref);
    CHECK(ref.n == 0 && ref.end == LT_DONE);
    result_free(&ref);
    check_same(write_tmp("s.json", "[1, \"x\" ,null,[2]]", 18), &ref);
    CHECK(ref.n == 4 && ref.end == LT_DONE && !strcmp(ref.text[0], "1") && !strcmp(ref.text[1], "\"x\"") &&
          !strcmp(ref.text[3], "[2]"));
    result_free(&ref);

    /* structural errors: status and position, the same for every chunk size */
    struct { const char *name, *data, *msg; } bad[] = {
        {"empty", "", "the file is empty"},
        {"blank", " \n\t\r\n", "the file is empty"},
        {"garbage", "\nhello", ":2:1: the file starts with 'h'"},
        {"unterminated_string", "[{\"a\": \"b}]\n", "record 1 (which starts at 1:2): a string is never closed"},
        {"unclosed_object", "[{\"a\": {\"b\": 1}\n", "an object or array is never closed"},
        {"missing_comma", "[{\"a\":1}\n {\"a\":2}]", ":2:2: expected ',' or ']' after record 1, found '{'"},
        {"trailing_comma", "[{\"a\":1},\n]", ":2:1: a trailing ','"},
        {"no_close", "[{\"a\":1},{\"a\":2}", "ends before the array's closing ']' (after 2 records"},
        {"after_close", "[{\"a\":1}] x", ":1:11: unexpected 'x' after the array's closing ']'"},
        {"empty_element", "[{\"a\":1},,{}]", ":1:10: an empty element"},
        {"scalar_no_close", "[1", "the array's closing ']' is missing"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        check_same(write_tmp(bad[i].name, bad[i].data, strlen(bad[i].data)), &ref);
        CHECK_MSG(ref.end == LT_ERR_DATA && strstr(ref.msg, bad[i].msg), "%s: status %d, message '%s' (want '%s')",
                  bad[i].name, ref.end, ref.msg, bad[i].msg);
        result_free(&ref);
    }
    lt_reader *rd;
    CHECK_FAIL(lt_reader_open("/nonexistent/x.json", &rd), LT_ERR_NOT_FOUND, "cannot open");
    CHECK_FAIL(lt_reader_open(dir, &rd), LT_ERR_IO, "is a folder");

    /* positions inside a record, and UTF-8 checks */
    lt_record_pos pos = {1, 3, 5, 0};
    uint64_t l, c;
    lt_reader_locate(&pos, "{\"中\":\n  x", 10, &l, &c);
    CHECK(l == 4 && c == 3);
    lt_reader_locate(&pos, "{\"中\"", 6, &l, &c);
    CHECK(l == 3 && c == 9);
    CHECK(lt_data_utf8_check((const unsigned char *)"ab中", 5) == 5);
    CHECK(lt_data_utf8_check((const unsigned char *)"ab\xff", 3) == 2);
    CHECK(lt_data_utf8_check((const unsigned char *)"a\xc0\x80", 3) == 1);       /* overlong */
    CHECK(lt_data_utf8_check((const unsigned char *)"a\xed\xa0\x80", 4) == 1);   /* surrogate */
    CHECK(lt_data_utf8_check((const unsigned char *)"a\xe4\xb8", 3) == 1);       /* cut */
    CHECK(lt_data_utf8_check((const unsigned char *)"\xf4\x90\x80\x80", 4) == 0); /* > U+10FFFF */
    CHECK(lt_data_utf8_check((const unsigned char *)"\xf0\x9f\x98\x80", 4) == 4);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return lt_test_done("test_reader");
}

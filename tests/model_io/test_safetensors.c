/* test_safetensors.c - the safetensors reader and writer: a round trip of every dtype and
 * shape kind (rank 0, zero size), the writer's layout (reference order, 8-byte padded header,
 * {"format":"pt"}), and one specific message for each malformed file the reference rejects. */
#include "lt_test.h"
#include "io/safetensors.h"
#include "core/rng.h"
#include <stdint.h>
#include <unistd.h>

static char tmpdir[256];

/* Writes an 8-byte length (hdr_len, or strlen(hdr) when < 0), the header, then n_data bytes. */
static char *write_raw(const char *name, const char *hdr, long long hdr_len, size_t n_data) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    uint64_t n = hdr_len < 0 ? strlen(hdr) : (uint64_t)hdr_len;
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(n >> (8 * i));
    fwrite(b, 1, 8, f);
    fwrite(hdr, 1, strlen(hdr), f);
    for (size_t i = 0; i < n_data; i++) fputc((int)(i & 0xff), f);
    fclose(f);
    return path;
}

static lt_status open_raw(const char *name, const char *hdr, size_t n_data) {
    lt_st_set *s = NULL;
    lt_status st = lt_st_open_file(write_raw(name, hdr, -1, n_data), &s);
    lt_st_close(s);
    return st;
}

static void test_round_trip(void) {
    lt_st_writer *w;
    CHECK_OK(lt_st_writer_new(&w));
    float f32[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e30f};
    uint16_t bf[4] = {0x3f80, 0xc000, 0x7f80, 0x0001};
    uint8_t u8[5] = {1, 2, 3, 4, 255};
    int64_t i64[1] = {-42};
    float scalar = 7.0f;
    int64_t s23[2] = {2, 3}, s4[1] = {4}, s5[1] = {5}, s1[1] = {1}, s03[2] = {0, 3};
    CHECK_OK(lt_st_writer_add(w, "b.f32", LT_ST_F32, 2, s23, f32, 1));
    CHECK_OK(lt_st_writer_add(w, "a.bf16", LT_ST_BF16, 1, s4, bf, 0));
    CHECK_OK(lt_st_writer_add(w, "c.u8", LT_ST_U8, 1, s5, u8, 1));
    CHECK_OK(lt_st_writer_add(w, "d.i64", LT_ST_I64, 1, s1, i64, 1));
    CHECK_OK(lt_st_writer_add(w, "scalar", LT_ST_F32, 0, NULL, &scalar, 1));
    CHECK_OK(lt_st_writer_add(w, "empty", LT_ST_F16, 2, s03, NULL, 0));
    CHECK_OK(lt_st_writer_set_metadata(w, "note", "a \"quoted\" value"));
    CHECK_FAIL(lt_st_writer_add(w, "c.u8", LT_ST_U8, 1, s5, u8, 1), LT_ERR_INVALID_ARGUMENT, "added twice");
    CHECK(lt_st_writer_bytes(w) == 24 + 8 + 5 + 8 + 4);
    char path[512];
    snprintf(path, sizeof path, "%s/rt.safetensors", tmpdir);
    CHECK_OK(lt_st_writer_write(w, path, 0));
    CHECK_FAIL(lt_st_writer_write(w, path, 0), LT_ERR_EXISTS, "already exists");
    lt_st_writer_free(w);

    /* the layout the reference writer produces */
    char *raw = NULL;
    size_t len = 0;
    CHECK_OK(lt_read_file(path, &raw, &len));
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | (uint8_t)raw[i];
    CHECK(n % 8 == 0);
    CHECK(len == 8 + n + 49);
    const char *want = "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"a \\\"quoted\\\" value\"},"
                       "\"d.i64\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},";
    CHECK(!strncmp(raw + 8, want, strlen(want)));
    /* order: I64, F32 (b.f32 before scalar), BF16, F16, U8 */
    const char *order[] = {"\"d.i64\"", "\"b.f32\"", "\"scalar\"", "\"a.bf16\"", "\"empty\"", "\"c.u8\""};
    const char *prev = raw + 8;
    for (int i = 0; i < 6; i++) {
        const char *at = strstr(raw + 8, order[i]);
        CHECK_MSG(at && at > prev, "%s out of order", order[i]);
        if (at) prev = at;
    }
    CHECK(raw[8 + n - 1] == ' ' || raw[8 + n - 1] == '}');
    free(raw);

    lt_st_set *s = NULL;
    CHECK_OK(lt_st_open_file(path, &s));
    CHECK(lt_st_count(s) == 6);
    const lt_st_tensor *t = lt_st_find(s, "b.f32");
    CHECK(t && t->dtype == LT_ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->numel == 6);
    if (t) CHECK(!memcmp(t->data, f32, 24));
    float back[6];
    if (t) CHECK_OK(lt_st_to_f32(t, back));
    CHECK(!memcmp(back, f32, 24));
    t = lt_st_find(s, "a.bf16");
    float bfv[4];
    if (t) CHECK_OK(lt_st_to_f32(t, bfv));
    CHECK(bfv[0] == 1.0f && bfv[1] == -2.0f && isinf(bfv[2]));
    t = lt_st_find(s, "scalar");
    CHECK(t && t->ndim == 0 && t->numel == 1 && !memcmp(t->data, &scalar, 4));
    t = lt_st_find(s, "empty");
    CHECK(t && t->numel == 0 && t->nbytes == 0);
    t = lt_st_find(s, "d.i64");
    CHECK(t && !memcmp(t->data, i64, 8));
    CHECK(lt_st_find(s, "nope") == NULL);
    CHECK(lt_st_metadata(s, "format") && !strcmp(lt_st_metadata(s, "format"), "pt"));
    CHECK(lt_st_metadata(s, "note") && !strcmp(lt_st_metadata(s, "note"), "a \"quoted\" value"));
    t = lt_st_find(s, "c.u8");
    CHECK_FAIL(lt_st_to_f32(t, back), LT_ERR_UNSUPPORTED, "has dtype U8");
    lt_st_close(s);
}

static void test_bad_files(void) {
    lt_st_set *s = NULL;
    char path[512];
    /* truncated before the header length */
    snprintf(path, sizeof path, "%s/short.safetensors", tmpdir);
    FILE *f = fopen(path, "wb");
    fwrite("\x10\x00\x00", 1, 3, f);
    fclose(f);
    CHECK_FAIL(lt_st_open_file(path, &s), LT_ERR_FORMAT, "short.safetensors: truncated safetensors file: 3 bytes");
    CHECK(s == NULL);
    /* truncated header: the length says more than the file holds */
    CHECK_FAIL(lt_st_open_file(write_raw("trunc.safetensors", "{\"a\":{\"dtype\"", 200, 0), &s), LT_ERR_FORMAT,
               "trunc.safetensors: header length 200 runs past the end of the 21-byte file (truncated safetensors header)");
    /* absurd header length */
    CHECK_FAIL(lt_st_open_file(write_raw("huge.safetensors", "{}", 200000000, 0), &s), LT_ERR_FORMAT,
               "exceeds the safetensors limit of 100000000 bytes");
    CHECK_FAIL(open_raw("notjson.safetensors", "{\"a\": [1,2", 0), LT_ERR_FORMAT, "notjson.safetensors: header JSON is invalid");
    CHECK_FAIL(open_raw("nobrace.safetensors", "[1, 2]  ", 0), LT_ERR_FORMAT, "does not start with '{'");
    /* lying headers */
    CHECK_FAIL(open_raw("beyond.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[0,48]}}", 8),
               LT_ERR_FORMAT, "beyond.safetensors: header says the data ends at byte");
    CHECK_FAIL(open_raw("beyond.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[0,48]}}", 8),
               LT_ERR_FORMAT, "(truncated file)");
    CHECK_FAIL(open_raw("trailing.safetensors", "{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 9),
               LT_ERR_FORMAT, "(trailing bytes)");
    CHECK_FAIL(open_raw("size.safetensors", "{\"x\":{\"dtype\":\"BF16\",\"shape\":[3,4],\"data_offsets\":[0,10]}}", 10),
               LT_ERR_FORMAT, "size.safetensors: tensor 'x' data_offsets [0,10] but dtype BF16 x shape [3,4] needs 24 bytes");
    CHECK_FAIL(open_raw("hole.safetensors",
                        "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                        "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[6,10]}}", 10),
               LT_ERR_FORMAT, "hole.safetensors: tensor 'b' data_offsets [6,10] leave a hole: bytes 4..6");
    CHECK_FAIL(open_raw("overlap.safetensors",
                        "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                        "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}", 6),
               LT_ERR_FORMAT, "overlap.safetensors: tensor 'b' data_offsets [2,6] overlap the tensor before it");
    CHECK_FAIL(open_raw("nostart.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}", 6),
               LT_ERR_FORMAT, "leave a hole: bytes 0..2");
    CHECK_FAIL(open_raw("dup.safetensors",
                        "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                        "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 8),
               LT_ERR_FORMAT, "duplicate");
    CHECK_FAIL(open_raw("meta.safetensors", "{\"__metadata__\":{\"format\":1}}", 0), LT_ERR_FORMAT,
               "__metadata__ value of 'format' is not a string");
    CHECK_FAIL(open_raw("nodtype.safetensors", "{\"a\":{\"shape\":[4],\"data_offsets\":[0,4]}}", 4), LT_ERR_FORMAT,
               "tensor 'a' lacks \"dtype\"");
    CHECK_FAIL(open_raw("noofs.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4]}}", 4), LT_ERR_FORMAT,
               "tensor 'a' lacks \"data_offsets\"");
    CHECK_FAIL(open_raw("negshape.safetensors", "{\"a\":{\"dtype\":\"U8\",\"shape\":[-4],\"data_offsets\":[0,4]}}", 4),
               LT_ERR_FORMAT, "shape holds a value that is not a size");
    CHECK_FAIL(open_raw("f8.safetensors", "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4),
               LT_ERR_UNSUPPORTED, "tensor 'a' has dtype F8_E4M3");
    CHECK_FAIL(lt_st_open_file("/nonexistent/x.safetensors", &s), LT_ERR_NOT_FOUND, "/nonexistent/x.safetensors: cannot open");
    /* accepted: unsorted offsets, leading whitespace, padding, rank 0, empty */
    lt_st_close(s);
    s = NULL;
    CHECK_OK(lt_st_open_file(write_raw("ok.safetensors",
                                       "  {\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]},"
                                       "\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                                       "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[6,6]}}      ", -1, 6), &s));
    CHECK(lt_st_count(s) == 3 && lt_st_find(s, "b") && lt_st_find(s, "b")->data[0] == 4);
    lt_st_close(s);
}


/* Random corruption of a valid file (bytes of the length, the header and the data; truncation):
 * every result is LT_OK or an error with a message, never a crash (run under ASan/UBSan). */
static void test_mutations(void) {
    char path[512], mpath[512];
    snprintf(path, sizeof path, "%s/rt.safetensors", tmpdir);
    snprintf(mpath, sizeof mpath, "%s/mut.safetensors", tmpdir);
    char *orig = NULL;
    size_t len = 0;
    CHECK_OK(lt_read_file(path, &orig, &len));
    if (!orig) return;
    uint64_t hdr = 0;
    for (int i = 7; i >= 0; i--) hdr = (hdr << 8) | (uint8_t)orig[i];
    char *buf = malloc(len);
    int ok = 0, failed = 0, silent = 0;
    for (uint64_t it = 0; it < 3000; it++) {
        memcpy(buf, orig, len);
        size_t n = len;
        int edits = 1 + (int)(lt_rng_u32(11, it, 0) % 4);
        for (int e = 0; e < edits; e++) {
            uint32_t r = lt_rng_u32(11, it, 1 + (uint64_t)e);
            size_t at = (r & 3) ? 8 + (r >> 8) % hdr : (r >> 8) % len; /* mostly the header */
            static const char pool[] = "{}[]\",:0123456789-eE. ";
            buf[at] = (r & 16) ? pool[(r >> 4) % (sizeof pool - 1)] : (char)(r >> 16);
        }
        if (lt_rng_u32(11, it, 9) % 8 == 0) n = lt_rng_u32(11, it, 10) % len;
        FILE *f = fopen(mpath, "wb");
        fwrite(buf, 1, n, f);
        fclose(f);
        lt_st_set *s = NULL;
        lt_clear_error();
        lt_status st = lt_st_open_file(mpath, &s);
        if (st == LT_OK) {
            ok++;
            /* whatever was accepted must be self-consistent */
            for (size_t i = 0; i < lt_st_count(s); i++) {
                const lt_st_tensor *t = lt_st_at(s, i);
                if (t->data < (const uint8_t *)0 || t->nbytes != (size_t)t->numel * (size_t)lt_st_dtype_size(t->dtype))
                    silent++;
            }
        } else {
            failed++;
            if (!*lt_last_error() || !strstr(lt_last_error(), "mut.safetensors")) silent++;
        }
        lt_st_close(s);
    }
    CHECK_MSG(silent == 0, "%d corrupted files gave no message naming the file", silent);
    CHECK(failed > 2000 && ok > 0);
    free(buf);
    free(orig);
}

static void test_sharded(void) {
    char dir[512], p[600];
    snprintf(dir, sizeof dir, "%s/sharded", tmpdir);
    CHECK_OK(lt_mkdirs(dir));
    for (int k = 0; k < 2; k++) {
        lt_st_writer *w;
        lt_st_writer_new(&w);
        float v[3] = {(float)k, 1, 2};
        int64_t sh[1] = {3};
        CHECK_OK(lt_st_writer_add(w, k ? "t.one" : "t.zero", LT_ST_F32, 1, sh, v, 1));
        snprintf(p, sizeof p, "%s/model-0000%d-of-00002.safetensors", dir, k + 1);
        CHECK_OK(lt_st_writer_write(w, p, 1));
        lt_st_writer_free(w);
    }
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    FILE *f = fopen(p, "w");
    fputs("{\"metadata\":{\"total_size\":24},\"weight_map\":{\"t.zero\":\"model-00001-of-00002.safetensors\","
          "\"t.one\":\"model-00002-of-00002.safetensors\"}}", f);
    fclose(f);
    lt_st_set *s = NULL;
    CHECK_OK(lt_st_open_dir(dir, &s));
    CHECK(lt_st_count(s) == 2);
    const lt_st_tensor *t = lt_st_find(s, "t.one");
    CHECK(t && strstr(t->file, "model-00002-of-00002.safetensors") && ((const float *)t->data)[0] == 1.0f);
    lt_st_close(s);
    s = NULL;
    /* the index names a tensor its shard does not hold */
    f = fopen(p, "w");
    fputs("{\"weight_map\":{\"t.zero\":\"model-00002-of-00002.safetensors\","
          "\"t.one\":\"model-00001-of-00002.safetensors\"}}", f);
    fclose(f);
    CHECK_FAIL(lt_st_open_dir(dir, &s), LT_ERR_FORMAT,
               "model.safetensors.index.json: tensor 't.zero' should be in model-00002-of-00002.safetensors but is in another shard");
    f = fopen(p, "w");
    fputs("{\"weight_map\":{\"t.zero\":\"model-00001-of-00002.safetensors\",\"t.two\":\"model-00003-of-00003.safetensors\"}}", f);
    fclose(f);
    CHECK_FAIL(lt_st_open_dir(dir, &s), LT_ERR_NOT_FOUND, "model-00003-of-00003.safetensors named by");
    f = fopen(p, "w");
    fputs("{\"weight_map\":{\"t.zero\":\"model-00001-of-00002.safetensors\",\"t.two\":\"model-00001-of-00002.safetensors\"}}", f);
    fclose(f);
    CHECK_FAIL(lt_st_open_dir(dir, &s), LT_ERR_FORMAT, "tensor 't.two' should be in model-00001-of-00002.safetensors but no shard holds it");
    f = fopen(p, "w");
    fputs("{\"weight_map\": 3}", f);
    fclose(f);
    CHECK_FAIL(lt_st_open_dir(dir, &s), LT_ERR_FORMAT, "no \"weight_map\" object");
    unlink(p);
    CHECK_FAIL(lt_st_open_dir(dir, &s), LT_ERR_NOT_FOUND, "no model.safetensors or model.safetensors.index.json");
    CHECK(s == NULL);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s/test_safetensors.%d", LT_BUILD_DIR, (int)getpid());
    if (lt_mkdirs(tmpdir) != LT_OK) { fprintf(stderr, "cannot create %s\n", tmpdir); return 1; }
    test_round_trip();
    test_bad_files();
    test_mutations();
    test_sharded();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (!lt_test_failures && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return lt_test_done("test_safetensors");
}

/* test_gguf_io.c - the GGUF v3 writer and reader (byte layout against the hex that gguf-py
 * writes, quoted in specs/gguf-export.md §1; round trip of every value type; contiguous 32-byte
 * offsets; refusals: duplicate keys, long names, existing outputs, out-of-order data; no file
 * left after a failed or abandoned write), the quantizers' round-trip error, and the q4_k_m
 * mixture for the 28 layers of Qwen2-1.5B (the Q6_K layer set the spec derives). */
#include "lt_test.h"
#include "io/gguf.h"
#include "export/export.h"
#include "export/quant.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, 512, "%s/lt_test_gguf_%d_%s", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid(), name);
    return p;
}

static uint8_t *slurp(const char *path, size_t *n) {
    char *d = NULL;
    if (lt_read_file(path, &d, n) != LT_OK) return NULL;
    return (uint8_t *)d;
}

static int count_tmp_files(const char *path) {
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "ls %s.tmp.* 2>/dev/null | wc -l", path);
    FILE *p = popen(cmd, "r");
    int n = 0;
    if (p) { if (fscanf(p, "%d", &n) != 1) n = -1; pclose(p); }
    return n;
}

static void test_layout(void) {
    /* two tensors: F32 [3] (12 bytes, padded to 32) then F16 numpy shape (2, 32) -> ne [32, 2] */
    const char *path = tmp_path("layout.gguf");
    unlink(path);
    lt_gguf_writer *w;
    CHECK_OK(lt_gguf_writer_new(&w));
    CHECK_OK(lt_gguf_add_str(w, "general.architecture", "qwen2"));
    CHECK_OK(lt_gguf_add_f32(w, "f", 1e6f));
    int32_t arr[3] = {1, 3, 5};
    CHECK_OK(lt_gguf_add_arr_i32(w, "a", arr, 3));
    CHECK_OK(lt_gguf_add_u32(w, "u", 7));
    CHECK_OK(lt_gguf_add_bool(w, "b", 1));
    const char *strs[3] = {"x", "", "\xc4\xa0the"};
    CHECK_OK(lt_gguf_add_arr_str(w, "s", strs, 3));
    CHECK_FAIL(lt_gguf_add_u32(w, "u", 8), LT_ERR_INVALID_ARGUMENT, "added twice");
    int64_t ne1[1] = {3}, ne2[2] = {32, 2};
    size_t i1, i2;
    CHECK_OK(lt_gguf_add_tensor(w, "t0", 1, ne1, LT_GGML_F32, &i1));
    CHECK_OK(lt_gguf_add_tensor(w, "t1", 2, ne2, LT_GGML_F16, &i2));
    char longname[80];
    memset(longname, 'n', 70);
    longname[70] = 0;
    CHECK_FAIL(lt_gguf_add_tensor(w, longname, 1, ne1, LT_GGML_F32, NULL), LT_ERR_INVALID_ARGUMENT, "fewer than 64");
    int64_t bad[2] = {33, 2};
    CHECK_FAIL(lt_gguf_add_tensor(w, "q", 2, bad, LT_GGML_Q8_0, NULL), LT_ERR_INVALID_ARGUMENT, "not a multiple");
    CHECK_OK(lt_gguf_writer_begin(w, path, 0));
    float d0[3] = {1, 2, 3};
    uint16_t d1[64];
    for (int i = 0; i < 64; i++) d1[i] = lt_f32_to_f16((float)i);
    CHECK_FAIL(lt_gguf_writer_put(w, i2, d1, sizeof d1), LT_ERR_STATE, "out of order");
    lt_gguf_writer_free(w);
    CHECK(!lt_file_exists(path));
    CHECK(count_tmp_files(path) == 0);

    /* again, properly */
    CHECK_OK(lt_gguf_writer_new(&w));
    CHECK_OK(lt_gguf_add_str(w, "general.architecture", "qwen2"));
    CHECK_OK(lt_gguf_add_f32(w, "f", 1e6f));
    CHECK_OK(lt_gguf_add_arr_i32(w, "a", arr, 3));
    CHECK_OK(lt_gguf_add_u32(w, "u", 7));
    CHECK_OK(lt_gguf_add_bool(w, "b", 1));
    CHECK_OK(lt_gguf_add_arr_str(w, "s", strs, 3));
    CHECK_OK(lt_gguf_add_tensor(w, "t0", 1, ne1, LT_GGML_F32, &i1));
    CHECK_OK(lt_gguf_add_tensor(w, "t1", 2, ne2, LT_GGML_F16, &i2));
    uint64_t fsize = lt_gguf_writer_file_size(w);
    CHECK_OK(lt_gguf_writer_begin(w, path, 0));
    CHECK_OK(lt_gguf_writer_put(w, i1, d0, sizeof d0));
    CHECK_OK(lt_gguf_writer_put(w, i2, d1, sizeof d1));
    CHECK_OK(lt_gguf_writer_finish(w));
    lt_gguf_writer_free(w);

    size_t n;
    uint8_t *b = slurp(path, &n);
    CHECK(b && n == fsize);
    /* 47475546 03000000 | n_tensors 2 | n_kv 6 | 1400000000000000 "general.architecture" 08000000 05.. "qwen2" */
    static const uint8_t head[] = {0x47, 0x47, 0x55, 0x46, 3, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0,
                                   0x14, 0, 0, 0, 0, 0, 0, 0};
    CHECK(memcmp(b, head, sizeof head) == 0);
    CHECK(memcmp(b + 32, "general.architecture", 20) == 0);
    static const uint8_t str_t[] = {8, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 'q', 'w', 'e', 'n', '2'};
    CHECK(memcmp(b + 52, str_t, sizeof str_t) == 0);
    /* "f" FLOAT32 1e6 = 00 24 74 49 */
    size_t p = 52 + sizeof str_t;
    static const uint8_t f_kv[] = {1, 0, 0, 0, 0, 0, 0, 0, 'f', 6, 0, 0, 0, 0x00, 0x24, 0x74, 0x49};
    CHECK(memcmp(b + p, f_kv, sizeof f_kv) == 0);
    p += sizeof f_kv;
    /* "a" INT32 array [1,3,5] = 09000000 05000000 0300000000000000 01000000 03000000 05000000 */
    static const uint8_t a_kv[] = {1, 0, 0, 0, 0, 0, 0, 0, 'a', 9, 0, 0, 0, 5, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0,
                                   1, 0, 0, 0, 3, 0, 0, 0, 5, 0, 0, 0};
    CHECK(memcmp(b + p, a_kv, sizeof a_kv) == 0);
    free(b);

    lt_gguf_file *f;
    CHECK_OK(lt_gguf_open(path, &f));
    CHECK(lt_gguf_version(f) == 3 && lt_gguf_kv_count(f) == 6 && lt_gguf_n_tensors(f) == 2);
    const lt_gguf_value *v = lt_gguf_find(f, "u");
    uint32_t u32;
    CHECK(v && v->type == LT_GGUF_UINT32);
    memcpy(&u32, v->data, 4);
    CHECK(u32 == 7);
    v = lt_gguf_find(f, "b");
    CHECK(v && v->type == LT_GGUF_BOOL && v->data[0] == 1);
    v = lt_gguf_find(f, "s");
    uint64_t len;
    CHECK(v && v->type == LT_GGUF_ARRAY && v->arr_type == LT_GGUF_STRING && v->n == 3);
    const char *s2 = lt_gguf_arr_str(v, 2, &len);
    CHECK(s2 && len == 5 && memcmp(s2, "\xc4\xa0the", 5) == 0);
    CHECK(lt_gguf_arr_str(v, 1, &len) && len == 0);
    const lt_gguf_tensor_info *t1 = lt_gguf_find_tensor(f, "t1");
    /* tensor info of the F16 (2, 32): n_dims 2, ne [32, 2], type 1, offset 32 */
    CHECK(t1 && t1->ndim == 2 && t1->ne[0] == 32 && t1->ne[1] == 2 && t1->type == LT_GGML_F16 && t1->offset == 32);
    CHECK(memcmp(t1->data, d1, sizeof d1) == 0);
    const lt_gguf_tensor_info *t0 = lt_gguf_find_tensor(f, "t0");
    CHECK(t0 && t0->offset == 0 && memcmp(t0->data, d0, sizeof d0) == 0);
    CHECK(((t0->data - (const uint8_t *)0) % 32) == ((t1->data - (const uint8_t *)0) % 32));
    lt_gguf_close(f);

    /* an existing output is refused and kept */
    CHECK_OK(lt_gguf_writer_new(&w));
    CHECK_OK(lt_gguf_add_u32(w, "u", 1));
    CHECK_FAIL(lt_gguf_writer_begin(w, path, 0), LT_ERR_EXISTS, "already exists");
    lt_gguf_writer_free(w);
    b = slurp(path, &n);
    CHECK(b && n == fsize);
    free(b);
    /* an unwritable path is an error and leaves nothing */
    CHECK_OK(lt_gguf_writer_new(&w));
    CHECK_OK(lt_gguf_add_u32(w, "u", 1));
    char under_file[600];
    snprintf(under_file, sizeof under_file, "%s/x.gguf", path);
    CHECK_FAIL(lt_gguf_writer_begin(w, under_file, 0), LT_ERR_IO, "cannot write");
    lt_gguf_writer_free(w);
    /* truncated files are rejected with a message */
    b = slurp(path, &n);
    const char *cut = tmp_path("cut.gguf");
    CHECK_OK(lt_write_file_atomic(cut, b, n - 40, 1));
    free(b);
    CHECK(lt_gguf_open(cut, &f) == LT_ERR_FORMAT);
    CHECK(strstr(lt_last_error(), "exceeds") != NULL);
    unlink(cut);
    unlink(path);
}

static double rel_rms(const float *a, const float *b, int64_t n) {
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        e += (double)(a[i] - b[i]) * (a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return sqrt(e / s);
}

static void test_quant_roundtrip(void) {
    enum { ROWS = 16, N = 512 };
    float *x = malloc(sizeof(float) * ROWS * N), *y = malloc(sizeof(float) * ROWS * N);
    uint8_t *q = malloc(ROWS * N * 4);
    uint64_t s = 12345;
    for (int i = 0; i < ROWS * N; i++) { /* roughly normal: sum of uniforms */
        double a = 0;
        for (int k = 0; k < 4; k++) { s = s * 6364136223846793005ull + 1442695040888963407ull; a += (double)(s >> 11) / 9007199254740992.0; }
        x[i] = (float)((a - 2.0) * 0.03);
    }
    x[5] = 0; /* exact zeros and a constant block exercise the degenerate paths */
    for (int i = 256; i < 512; i++) x[i] = 0.01f;
    static const struct { int type; double max_err; } cases[] = {
        {LT_GGML_Q8_0, 0.01}, {LT_GGML_Q5_0, 0.06}, {LT_GGML_Q5_1, 0.06}, {LT_GGML_Q4_K, 0.1},
        {LT_GGML_Q5_K, 0.05}, {LT_GGML_Q6_K, 0.025}, {LT_GGML_F16, 0.001}, {LT_GGML_BF16, 0.005},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int t = cases[c].type;
        CHECK_OK(lt_quant_rows(t, x, q, ROWS, N, 2));
        size_t rb = lt_ggml_row_size(t, N);
        for (int r = 0; r < ROWS; r++) CHECK_OK(lt_dequant_row(t, q + r * rb, y + r * N, N));
        double e = rel_rms(y, x, ROWS * N);
        printf("%-5s relative RMS error %.4f\n", lt_ggml_type_name(t), e);
        CHECK(e < cases[c].max_err);
        /* the constant block comes back (nearly) exactly */
        CHECK(fabsf(y[300] - 0.01f) < 2e-4f);
        /* threads do not change bytes */
        uint8_t *q1 = malloc(ROWS * rb);
        CHECK_OK(lt_quant_rows(t, x, q1, ROWS, N, 1));
        CHECK(memcmp(q, q1, ROWS * rb) == 0);
        free(q1);
    }
    CHECK_FAIL(lt_quant_row(LT_GGML_Q4_K, x, q, 100), LT_ERR_INVALID_ARGUMENT, "not a multiple");
    free(x);
    free(y);
    free(q);
}

static void test_mixture(void) {
    lt_gguf_ftype ft;
    CHECK_OK(lt_gguf_ftype_parse("Q4_K_M", &ft));
    CHECK(ft.file_type == 15);
    CHECK_FAIL(lt_gguf_ftype_parse("q3_k", &ft), LT_ERR_INVALID_ARGUMENT, "q3_k");
    lt_export_tensor t = {0};
    t.ndim = 2;
    t.kind = LT_XT_PROJ;
    t.shape[0] = 256;
    t.shape[1] = 1536;
    int q6[28] = {0};
    int more[] = {0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 24, 25, 26, 27};
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++) q6[more[i]] = 1;
    for (int l = 0; l < 28; l++) {
        t.layer = l;
        t.proj = LT_PROJ_V;
        CHECK(lt_gguf_tensor_type(&ft, &t, 28, 0) == (q6[l] ? LT_GGML_Q6_K : LT_GGML_Q4_K));
        t.proj = LT_PROJ_DOWN;
        t.shape[1] = 8960;
        CHECK(lt_gguf_tensor_type(&ft, &t, 28, 0) == (q6[l] ? LT_GGML_Q6_K : LT_GGML_Q4_K));
        t.proj = LT_PROJ_Q;
        t.shape[1] = 1536;
        CHECK(lt_gguf_tensor_type(&ft, &t, 28, 0) == LT_GGML_Q4_K);
    }
    t.kind = LT_XT_EMBED;
    t.layer = -1;
    CHECK(lt_gguf_tensor_type(&ft, &t, 28, 0) == LT_GGML_Q6_K); /* tied: the output matrix */
    CHECK(lt_gguf_tensor_type(&ft, &t, 28, 1) == LT_GGML_Q4_K); /* untied: output.weight gets Q6_K */
    t.shape[1] = 96;
    CHECK(lt_gguf_tensor_type(&ft, &t, 28, 0) == LT_GGML_Q8_0);
    t.kind = LT_XT_PROJ;
    t.proj = LT_PROJ_Q;
    CHECK(lt_gguf_tensor_type(&ft, &t, 28, 0) == LT_GGML_Q5_0);
    t.shape[1] = 200;
    CHECK(lt_gguf_tensor_type(&ft, &t, 28, 0) == LT_GGML_F16);
    t.kind = LT_XT_BIAS;
    t.ndim = 1;
    CHECK(lt_gguf_tensor_type(&ft, &t, 28, 0) == LT_GGML_F32);
}

int main(void) {
    test_layout();
    test_quant_roundtrip();
    test_mixture();
    return lt_test_done("test_gguf_io");
}

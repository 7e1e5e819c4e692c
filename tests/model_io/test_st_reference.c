/* test_st_reference.c - byte-for-byte agreement with the reference implementation: Python's
 * `safetensors` (the Rust core) writes a file with many dtypes, ranks and names; loratune reads
 * it (validation passes), writes the same tensors back, and the two files must be identical.
 * Skips (77) when python3 with safetensors and numpy is not there. */
#include "lt_test.h"
#include "io/safetensors.h"
#include <unistd.h>

static const char *script =
    "import sys, numpy as np\n"
    "from safetensors.numpy import save_file\n"
    "r = np.random.default_rng(7)\n"
    "t = {\n"
    "  'model.layers.0.mlp.up_proj.weight': r.standard_normal((8, 5)).astype(np.float16),\n"
    "  'model.layers.10.x': r.standard_normal((3,)).astype(np.float32),\n"
    "  'model.layers.2.x': r.standard_normal((2, 2, 2)).astype(np.float64),\n"
    "  'a.u8': np.arange(7, dtype=np.uint8),\n"
    "  'b.i64': np.array([-1, 2, 3], dtype=np.int64),\n"
    "  'c.i32': np.array([[5]], dtype=np.int32),\n"
    "  'd.bool': np.array([True, False, True]),\n"
    "  'e.i8': np.array([-3, 4], dtype=np.int8),\n"
    "  'f.u16': np.array([9], dtype=np.uint16),\n"
    "  'g.scalar': np.array(3.5, dtype=np.float32),\n"
    "  'h.empty': np.zeros((0, 4), dtype=np.float16),\n"
    "  'Z.upper': np.ones((1,), dtype=np.float32),\n"
    "}\n"
    "save_file(t, sys.argv[1], metadata={'format': 'pt'})\n";

int main(void) {
    char dir[512], ref[600], out[600], py[600], cmd[2048];
    snprintf(dir, sizeof dir, "%s/test_st_reference.%d", LT_BUILD_DIR, (int)getpid());
    if (lt_mkdirs(dir) != LT_OK) return 1;
    snprintf(ref, sizeof ref, "%s/ref.safetensors", dir);
    snprintf(out, sizeof out, "%s/ours.safetensors", dir);
    snprintf(py, sizeof py, "%s/make.py", dir);
    FILE *f = fopen(py, "w");
    fputs(script, f);
    fclose(f);
    if (system("python3 -c 'import safetensors.numpy, numpy' >/dev/null 2>&1") != 0) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd)) {}
        LT_TEST_SKIP("python3 with safetensors and numpy is not installed (pip install safetensors numpy)");
    }
    snprintf(cmd, sizeof cmd, "python3 '%s' '%s'", py, ref);
    CHECK(system(cmd) == 0);
    lt_st_set *s = NULL;
    CHECK_OK(lt_st_open_file(ref, &s));
    CHECK(lt_st_count(s) == 12);
    lt_st_writer *w;
    CHECK_OK(lt_st_writer_new(&w));
    for (size_t i = 0; s && i < lt_st_count(s); i++) {
        const lt_st_tensor *t = lt_st_at(s, i);
        CHECK_OK(lt_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, 0));
    }
    CHECK_OK(lt_st_writer_write(w, out, 1));
    lt_st_writer_free(w);
    lt_st_close(s);
    char *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    CHECK_OK(lt_read_file(ref, &a, &na));
    CHECK_OK(lt_read_file(out, &b, &nb));
    CHECK_MSG(na == nb && a && b && !memcmp(a, b, na), "loratune's file (%zu bytes) differs from safetensors' (%zu bytes)",
              nb, na);
    free(a);
    free(b);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (!lt_test_failures && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return lt_test_done("test_st_reference");
}

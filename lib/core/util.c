/* util.c - checked allocation, clocks, a small parallel-for, files (read, mkdir -p) and the
 * bf16/f16 conversions. Whole-or-absent writes are in fs.c. */
#include "core/core.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void *lt_malloc(size_t bytes, const char *what) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory allocating %zu bytes for %s", bytes, what);
    return p;
}
void *lt_calloc(size_t n, size_t size, const char *what) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory allocating %zu x %zu bytes for %s", n, size, what);
    return p;
}
void *lt_realloc(void *q, size_t bytes, const char *what) {
    void *p = realloc(q, bytes ? bytes : 1);
    if (!p) lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory growing %s to %zu bytes", what, bytes);
    return p;
}
char *lt_strdup(const char *s) { return s ? lt_strndup(s, strlen(s)) : NULL; }
char *lt_strndup(const char *s, size_t n) {
    if (!s) return NULL;
    char *d = lt_malloc(n + 1, "a string");
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

double lt_time_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int lt_threads(int requested) {
    if (requested > 0) return requested;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

typedef struct { int64_t lo, hi; lt_parallel_fn fn; void *ctx; } lt_par_chunk;
static void *lt_par_run(void *arg) {
    lt_par_chunk *c = arg;
    for (int64_t i = c->lo; i < c->hi; i++) c->fn(c->ctx, i);
    return NULL;
}
void lt_parallel_for(int64_t n, int n_threads, lt_parallel_fn fn, void *ctx) {
    if (n <= 0) return;
    if (n_threads > n) n_threads = (int)n;
    if (n_threads > 256) n_threads = 256;
    if (n_threads <= 1) {
        for (int64_t i = 0; i < n; i++) fn(ctx, i);
        return;
    }
    pthread_t th[256];
    int ok[256] = {0};
    lt_par_chunk ch[256];
    for (int t = 0; t < n_threads; t++) ch[t] = (lt_par_chunk){n * t / n_threads, n * (t + 1) / n_threads, fn, ctx};
    for (int t = 1; t < n_threads; t++) ok[t] = pthread_create(&th[t], NULL, lt_par_run, &ch[t]) == 0;
    lt_par_run(&ch[0]);
    for (int t = 1; t < n_threads; t++) {
        if (ok[t]) pthread_join(th[t], NULL);
        else lt_par_run(&ch[t]); /* no thread could start: run the chunk here */
    }
}

lt_status lt_read_file(const char *path, char **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return lt_error(errno == ENOENT ? LT_ERR_NOT_FOUND : LT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return lt_error(LT_ERR_IO, "%s: cannot seek", path); }
    long n = ftell(f);
    if (n < 0) { fclose(f); return lt_error(LT_ERR_IO, "%s: cannot tell size (is it a folder?)", path); }
    rewind(f);
    char *buf = lt_malloc((size_t)n + 1, path);
    if (!buf) { fclose(f); return LT_ERR_OUT_OF_MEMORY; }
    if (n && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf); fclose(f);
        return lt_error(LT_ERR_IO, "%s: short read", path);
    }
    fclose(f);
    buf[n] = 0;
    *data = buf;
    if (len) *len = (size_t)n;
    return LT_OK;
}

bool lt_file_exists(const char *path) { struct stat st; return stat(path, &st) == 0 && S_ISREG(st.st_mode); }
bool lt_dir_exists(const char *path) { struct stat st; return stat(path, &st) == 0 && S_ISDIR(st.st_mode); }

lt_status lt_mkdirs(const char *path) {
    if (!path || !*path) return lt_error(LT_ERR_INVALID_ARGUMENT, "empty folder path");
    char *p = lt_strdup(path);
    if (!p) return LT_ERR_OUT_OF_MEMORY;
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                lt_status st = lt_error(LT_ERR_IO, "cannot create folder %s: %s", p, strerror(errno));
                free(p);
                return st;
            }
            *s = c;
            if (!c) break;
        }
    }
    free(p);
    if (!lt_dir_exists(path)) return lt_error(LT_ERR_IO, "%s exists and is not a folder", path);
    if (access(path, W_OK) != 0) return lt_error(LT_ERR_IO, "folder %s is not writable: %s", path, strerror(errno));
    return LT_OK;
}

char *lt_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = lt_malloc(a + b + 2, "a path");
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

float lt_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
uint16_t lt_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
float lt_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) u = sign;
        else { /* subnormal */
            float f = ldexpf((float)man, -24);
            memcpy(&u, &f, 4);
            u |= sign;
        }
    } else if (exp == 31) u = sign | 0x7f800000u | (man << 13);
    else u = sign | ((exp + 112) << 23) | (man << 13);
    float f;
    memcpy(&f, &u, 4);
    return f;
}
uint16_t lt_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t au = u & 0x7fffffffu;
    if (au > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (au >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* overflow -> inf (rounding included) */
    if (au < 0x38800000u) { /* subnormal or zero: round (au as float) * 2^24 to nearest even */
        float af;
        memcpy(&af, &au, 4);
        float r = nearbyintf(af * 16777216.0f);
        return (uint16_t)(sign | (uint32_t)r);
    }
    uint32_t mant_odd = (au >> 13) & 1u;
    au += 0xc8000fffu + mant_odd; /* rebias exponent (-112 << 23) and round to nearest even */
    return (uint16_t)(sign | (au >> 13));
}
float lt_round_to_dtype(float f, int dtype) {
    if (dtype == LT_DTYPE_BF16) return lt_bf16_to_f32(lt_f32_to_bf16(f));
    if (dtype == LT_DTYPE_F16) return lt_f16_to_f32(lt_f32_to_f16(f));
    return f;
}

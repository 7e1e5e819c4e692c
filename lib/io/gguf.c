/* gguf.c - GGUF v3 writer (streaming, atomic) and reader (mmap, strict as ggml's gguf.cpp).
 * Byte layout: magic "GGUF", u32 version 3, u64 n_tensors, u64 n_kv, the key/values, the tensor
 * infos, zero padding to 32 bytes, then each tensor's bytes padded to 32. Little-endian only
 * (as every machine loratune runs on). */
#include "io/gguf.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct { int blck; size_t size; const char *name; } lt_ggml_traits;

static lt_ggml_traits lt_ggml_traits_of(int type) {
    switch (type) {
    case LT_GGML_F32: return (lt_ggml_traits){1, 4, "f32"};
    case LT_GGML_F16: return (lt_ggml_traits){1, 2, "f16"};
    case LT_GGML_BF16: return (lt_ggml_traits){1, 2, "bf16"};
    case LT_GGML_Q4_0: return (lt_ggml_traits){32, 18, "q4_0"};
    case LT_GGML_Q4_1: return (lt_ggml_traits){32, 20, "q4_1"};
    case LT_GGML_Q5_0: return (lt_ggml_traits){32, 22, "q5_0"};
    case LT_GGML_Q5_1: return (lt_ggml_traits){32, 24, "q5_1"};
    case LT_GGML_Q8_0: return (lt_ggml_traits){32, 34, "q8_0"};
    case LT_GGML_Q4_K: return (lt_ggml_traits){256, 144, "q4_K"};
    case LT_GGML_Q5_K: return (lt_ggml_traits){256, 176, "q5_K"};
    case LT_GGML_Q6_K: return (lt_ggml_traits){256, 210, "q6_K"};
    default: return (lt_ggml_traits){0, 0, "?"};
    }
}
int lt_ggml_block_size(int type) { return lt_ggml_traits_of(type).blck; }
size_t lt_ggml_type_size(int type) { return lt_ggml_traits_of(type).size; }
const char *lt_ggml_type_name(int type) { return lt_ggml_traits_of(type).name; }
size_t lt_ggml_row_size(int type, int64_t n) {
    lt_ggml_traits t = lt_ggml_traits_of(type);
    return t.blck ? (size_t)(n / t.blck) * t.size : 0;
}

static uint64_t lt_pad(uint64_t x) { return (x + LT_GGUF_ALIGNMENT - 1) / LT_GGUF_ALIGNMENT * LT_GGUF_ALIGNMENT; }

/* ---- writer ------------------------------------------------------------------------------ */
typedef struct lt_gguf_winfo {
    char name[LT_GGUF_MAX_NAME];
    int ndim;
    int64_t ne[LT_GGUF_MAX_DIMS];
    int type;
    uint64_t nbytes, offset;
} lt_gguf_winfo;

struct lt_gguf_writer {
    uint8_t *kv;          /* serialised key/values */
    size_t kv_len, kv_cap;
    char **keys;          /* for the duplicate check */
    size_t n_kv, keys_cap;
    lt_gguf_winfo *ti;
    size_t n_ti, ti_cap;
    uint64_t data_size;   /* padded */
    lt_atomic_file *file;
    char *path;
    size_t next;          /* next tensor to put */
    int failed;
};

lt_status lt_gguf_writer_new(lt_gguf_writer **out) {
    *out = lt_calloc(1, sizeof **out, "a GGUF writer");
    return *out ? LT_OK : LT_ERR_OUT_OF_MEMORY;
}

void lt_gguf_writer_free(lt_gguf_writer *w) {
    if (!w) return;
    if (w->file) lt_atomic_abort(w->file);
    for (size_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    free(w->keys);
    free(w->kv);
    free(w->ti);
    free(w->path);
    free(w);
}

static lt_status lt_gguf_put_bytes(lt_gguf_writer *w, const void *p, size_t n) {
    if (w->kv_len + n > w->kv_cap) {
        size_t cap = w->kv_cap ? w->kv_cap : 4096;
        while (cap < w->kv_len + n) cap *= 2;
        uint8_t *k = lt_realloc(w->kv, cap, "GGUF key/values");
        if (!k) return LT_ERR_OUT_OF_MEMORY;
        w->kv = k;
        w->kv_cap = cap;
    }
    memcpy(w->kv + w->kv_len, p, n);
    w->kv_len += n;
    return LT_OK;
}
static lt_status lt_gguf_put_u32(lt_gguf_writer *w, uint32_t v) { return lt_gguf_put_bytes(w, &v, 4); }
static lt_status lt_gguf_put_u64(lt_gguf_writer *w, uint64_t v) { return lt_gguf_put_bytes(w, &v, 8); }
static lt_status lt_gguf_put_str(lt_gguf_writer *w, const char *s) {
    size_t n = strlen(s);
    LT_TRY(lt_gguf_put_u64(w, n));
    return lt_gguf_put_bytes(w, s, n);
}

/* Writes the key and the value type after checking that the key is new. */
static lt_status lt_gguf_key(lt_gguf_writer *w, const char *key, uint32_t type) {
    LT_CHECK_ARG(w && key && *key, "GGUF: empty key");
    if (w->file) return lt_error(LT_ERR_STATE, "GGUF: key '%s' added after the header was written", key);
    for (size_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], key)) return lt_error(LT_ERR_INVALID_ARGUMENT, "GGUF: key '%s' added twice", key);
    if (w->n_kv == w->keys_cap) {
        size_t cap = w->keys_cap ? w->keys_cap * 2 : 32;
        char **k = lt_realloc(w->keys, cap * sizeof *k, "GGUF keys");
        if (!k) return LT_ERR_OUT_OF_MEMORY;
        w->keys = k;
        w->keys_cap = cap;
    }
    if (!(w->keys[w->n_kv] = lt_strdup(key))) return LT_ERR_OUT_OF_MEMORY;
    w->n_kv++;
    LT_TRY(lt_gguf_put_str(w, key));
    return lt_gguf_put_u32(w, type);
}

lt_status lt_gguf_add_str(lt_gguf_writer *w, const char *key, const char *value) {
    LT_CHECK_ARG(value, "GGUF: NULL string for key '%s'", key ? key : "?");
    LT_TRY(lt_gguf_key(w, key, LT_GGUF_STRING));
    return lt_gguf_put_str(w, value);
}
lt_status lt_gguf_add_u32(lt_gguf_writer *w, const char *key, uint32_t value) {
    LT_TRY(lt_gguf_key(w, key, LT_GGUF_UINT32));
    return lt_gguf_put_u32(w, value);
}
lt_status lt_gguf_add_i32(lt_gguf_writer *w, const char *key, int32_t value) {
    LT_TRY(lt_gguf_key(w, key, LT_GGUF_INT32));
    return lt_gguf_put_bytes(w, &value, 4);
}
lt_status lt_gguf_add_f32(lt_gguf_writer *w, const char *key, float value) {
    LT_TRY(lt_gguf_key(w, key, LT_GGUF_FLOAT32));
    return lt_gguf_put_bytes(w, &value, 4);
}
lt_status lt_gguf_add_bool(lt_gguf_writer *w, const char *key, int value) {
    LT_TRY(lt_gguf_key(w, key, LT_GGUF_BOOL));
    uint8_t b = value ? 1 : 0;
    return lt_gguf_put_bytes(w, &b, 1);
}
lt_status lt_gguf_add_arr_str(lt_gguf_writer *w, const char *key, const char *const *values, size_t n) {
    LT_TRY(lt_gguf_key(w, key, LT_GGUF_ARRAY));
    LT_TRY(lt_gguf_put_u32(w, LT_GGUF_STRING));
    LT_TRY(lt_gguf_put_u64(w, n));
    for (size_t i = 0; i < n; i++) LT_TRY(lt_gguf_put_str(w, values[i] ? values[i] : ""));
    return LT_OK;
}
lt_status lt_gguf_add_arr_i32(lt_gguf_writer *w, const char *key, const int32_t *values, size_t n) {
    LT_TRY(lt_gguf_key(w, key, LT_GGUF_ARRAY));
    LT_TRY(lt_gguf_put_u32(w, LT_GGUF_INT32));
    LT_TRY(lt_gguf_put_u64(w, n));
    return lt_gguf_put_bytes(w, values, n * 4);
}

lt_status lt_gguf_add_arr_f32(lt_gguf_writer *w, const char *key, const float *values, size_t n) {
    LT_TRY(lt_gguf_key(w, key, LT_GGUF_ARRAY));
    LT_TRY(lt_gguf_put_u32(w, LT_GGUF_FLOAT32));
    LT_TRY(lt_gguf_put_u64(w, n));
    return lt_gguf_put_bytes(w, values, n * 4);
}

lt_status lt_gguf_add_tensor(lt_gguf_writer *w, const char *name, int ndim, const int64_t *ne, int type,
                             size_t *index) {
    LT_CHECK_ARG(w && name, "GGUF: NULL tensor name");
    if (w->file) return lt_error(LT_ERR_STATE, "GGUF: tensor '%s' added after the header was written", name);
    if (strlen(name) >= LT_GGUF_MAX_NAME)
        return lt_error(LT_ERR_INVALID_ARGUMENT, "GGUF: tensor name '%s' is %zu bytes; llama.cpp takes fewer than %d",
                        name, strlen(name), LT_GGUF_MAX_NAME);
    if (ndim < 1 || ndim > LT_GGUF_MAX_DIMS)
        return lt_error(LT_ERR_INVALID_ARGUMENT, "GGUF: tensor '%s' has %d dimensions (1..4)", name, ndim);
    int blck = lt_ggml_block_size(type);
    if (!blck) return lt_error(LT_ERR_UNSUPPORTED, "GGUF: tensor '%s': unknown ggml type %d", name, type);
    if (ne[0] % blck)
        return lt_error(LT_ERR_INVALID_ARGUMENT, "GGUF: tensor '%s': row of %lld is not a multiple of the %s block (%d)",
                        name, (long long)ne[0], lt_ggml_type_name(type), blck);
    for (size_t i = 0; i < w->n_ti; i++)
        if (!strcmp(w->ti[i].name, name)) return lt_error(LT_ERR_INVALID_ARGUMENT, "GGUF: tensor '%s' added twice", name);
    if (w->n_ti == w->ti_cap) {
        size_t cap = w->ti_cap ? w->ti_cap * 2 : 64;
        lt_gguf_winfo *t = lt_realloc(w->ti, cap * sizeof *t, "GGUF tensor infos");
        if (!t) return LT_ERR_OUT_OF_MEMORY;
        w->ti = t;
        w->ti_cap = cap;
    }
    lt_gguf_winfo *t = &w->ti[w->n_ti];
    memset(t, 0, sizeof *t);
    strcpy(t->name, name);
    t->ndim = ndim;
    uint64_t rows = 1;
    for (int i = 0; i < ndim; i++) {
        if (ne[i] < 0) return lt_error(LT_ERR_INVALID_ARGUMENT, "GGUF: tensor '%s': negative dimension", name);
        t->ne[i] = ne[i];
        if (i) rows *= (uint64_t)ne[i];
    }
    t->type = type;
    t->nbytes = rows * lt_ggml_row_size(type, ne[0]);
    t->offset = w->data_size;
    w->data_size += lt_pad(t->nbytes);
    if (index) *index = w->n_ti;
    w->n_ti++;
    return LT_OK;
}

size_t lt_gguf_tensor_count(const lt_gguf_writer *w) { return w->n_ti; }

static uint64_t lt_gguf_header_size(const lt_gguf_writer *w) {
    uint64_t n = 4 + 4 + 8 + 8 + w->kv_len;
    for (size_t i = 0; i < w->n_ti; i++) n += 8 + strlen(w->ti[i].name) + 4 + 8 * (uint64_t)w->ti[i].ndim + 4 + 8;
    return n;
}

uint64_t lt_gguf_writer_file_size(const lt_gguf_writer *w) { return lt_pad(lt_gguf_header_size(w)) + w->data_size; }

static const uint8_t lt_zeros[LT_GGUF_ALIGNMENT];

static lt_status lt_gguf_fail(lt_gguf_writer *w, lt_status st) {
    if (w->file) lt_atomic_abort(w->file);
    w->file = NULL;
    w->failed = 1;
    return st;
}

lt_status lt_gguf_writer_begin(lt_gguf_writer *w, const char *path, int overwrite) {
    LT_CHECK_ARG(w && path, "GGUF: NULL path");
    if (w->file || w->failed) return lt_error(LT_ERR_STATE, "GGUF: %s: the writer was already used", path);
    free(w->path);
    if (!(w->path = lt_strdup(path))) return LT_ERR_OUT_OF_MEMORY;
    /* The header in one buffer: magic, version, counts, key/values, tensor infos, padding. */
    uint64_t hsize = lt_gguf_header_size(w), padded = lt_pad(hsize);
    uint8_t *h = lt_calloc(1, padded, "the GGUF header");
    if (!h) return LT_ERR_OUT_OF_MEMORY;
    uint8_t *p = h;
    uint32_t u32;
    uint64_t u64;
    memcpy(p, "GGUF", 4); p += 4;
    u32 = 3; memcpy(p, &u32, 4); p += 4;
    u64 = w->n_ti; memcpy(p, &u64, 8); p += 8;
    u64 = w->n_kv; memcpy(p, &u64, 8); p += 8;
    if (w->kv_len) memcpy(p, w->kv, w->kv_len);
    p += w->kv_len;
    for (size_t i = 0; i < w->n_ti; i++) {
        const lt_gguf_winfo *t = &w->ti[i];
        u64 = strlen(t->name); memcpy(p, &u64, 8); p += 8;
        memcpy(p, t->name, u64); p += u64;
        u32 = (uint32_t)t->ndim; memcpy(p, &u32, 4); p += 4;
        for (int d = 0; d < t->ndim; d++) { u64 = (uint64_t)t->ne[d]; memcpy(p, &u64, 8); p += 8; }
        u32 = (uint32_t)t->type; memcpy(p, &u32, 4); p += 4;
        memcpy(p, &t->offset, 8); p += 8;
    }
    lt_status st = lt_atomic_open(path, overwrite, &w->file);
    if (st == LT_OK) st = lt_atomic_write(w->file, h, padded);
    free(h);
    if (st != LT_OK) return lt_gguf_fail(w, st);
    w->next = 0;
    return LT_OK;
}

lt_status lt_gguf_writer_put(lt_gguf_writer *w, size_t index, const void *data, size_t nbytes) {
    if (!w->file) return lt_error(LT_ERR_STATE, "GGUF: tensor data before the header (or after a failure)");
    if (index != w->next || index >= w->n_ti)
        return lt_gguf_fail(w, lt_error(LT_ERR_STATE, "GGUF %s: tensor %zu written out of order (expected %zu)",
                                        w->path, index, w->next));
    const lt_gguf_winfo *t = &w->ti[index];
    if (nbytes != t->nbytes)
        return lt_gguf_fail(w, lt_error(LT_ERR_INTERNAL, "GGUF %s: tensor '%s' has %zu bytes, its info says %llu",
                                        w->path, t->name, nbytes, (unsigned long long)t->nbytes));
    lt_status st = lt_atomic_write(w->file, data, nbytes);
    uint64_t pad = lt_pad(nbytes) - nbytes;
    if (st == LT_OK && pad) st = lt_atomic_write(w->file, lt_zeros, pad);
    if (st != LT_OK) return lt_gguf_fail(w, st);
    w->next++;
    return LT_OK;
}

lt_status lt_gguf_writer_finish(lt_gguf_writer *w) {
    if (!w->file) return lt_error(LT_ERR_STATE, "GGUF: finish without a header (or after a failure)");
    if (w->next != w->n_ti)
        return lt_gguf_fail(w, lt_error(LT_ERR_STATE, "GGUF %s: %zu of %zu tensors written", w->path, w->next, w->n_ti));
    lt_atomic_file *f = w->file;
    w->file = NULL;
    lt_status st = lt_atomic_commit(f);
    if (st != LT_OK) w->failed = 1;
    return st;
}

/* ---- reader ------------------------------------------------------------------------------ */
typedef struct lt_gguf_kv {
    const char *key;
    size_t key_len;
    lt_gguf_value v;
} lt_gguf_kv;

struct lt_gguf_file {
    uint8_t *map;
    size_t size;
    uint32_t version;
    lt_gguf_kv *kv;
    size_t n_kv;
    lt_gguf_tensor_info *ti;
    size_t n_ti;
    char *path;
};

typedef struct { const uint8_t *p, *end; const char *path; } lt_gguf_cur;

static lt_status lt_gguf_need(lt_gguf_cur *c, uint64_t n, const char *what) {
    if ((uint64_t)(c->end - c->p) < n)
        return lt_error(LT_ERR_FORMAT, "%s: truncated GGUF file reading %s (%zu bytes left, %llu needed)", c->path,
                        what, (size_t)(c->end - c->p), (unsigned long long)n);
    return LT_OK;
}
static lt_status lt_gguf_rd(lt_gguf_cur *c, void *out, size_t n, const char *what) {
    LT_TRY(lt_gguf_need(c, n, what));
    memcpy(out, c->p, n);
    c->p += n;
    return LT_OK;
}
static lt_status lt_gguf_rd_str(lt_gguf_cur *c, const uint8_t **s, uint64_t *len, const char *what) {
    LT_TRY(lt_gguf_rd(c, len, 8, what));
    LT_TRY(lt_gguf_need(c, *len, what));
    *s = c->p;
    c->p += *len;
    return LT_OK;
}
static size_t lt_gguf_scalar_size(int type) {
    switch (type) {
    case LT_GGUF_UINT8: case LT_GGUF_INT8: case LT_GGUF_BOOL: return 1;
    case LT_GGUF_UINT16: case LT_GGUF_INT16: return 2;
    case LT_GGUF_UINT32: case LT_GGUF_INT32: case LT_GGUF_FLOAT32: return 4;
    case LT_GGUF_UINT64: case LT_GGUF_INT64: case LT_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

void lt_gguf_close(lt_gguf_file *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->size);
    for (size_t i = 0; i < f->n_kv; i++) free((void *)f->kv[i].v.str_off);
    free(f->kv);
    free(f->ti);
    free(f->path);
    free(f);
}

static lt_status lt_gguf_parse(lt_gguf_file *f) {
    lt_gguf_cur c = {f->map, f->map + f->size, f->path};
    char magic[4];
    LT_TRY(lt_gguf_rd(&c, magic, 4, "the magic"));
    if (memcmp(magic, "GGUF", 4)) return lt_error(LT_ERR_FORMAT, "%s: not a GGUF file (bad magic)", f->path);
    LT_TRY(lt_gguf_rd(&c, &f->version, 4, "the version"));
    if (f->version != 3)
        return lt_error(LT_ERR_VERSION, "%s: GGUF version %u; only version 3 is read", f->path, f->version);
    uint64_t n_ti, n_kv;
    LT_TRY(lt_gguf_rd(&c, &n_ti, 8, "the tensor count"));
    LT_TRY(lt_gguf_rd(&c, &n_kv, 8, "the key/value count"));
    if (n_ti > f->size / 24 || n_kv > f->size / 12)
        return lt_error(LT_ERR_FORMAT, "%s: counts (%llu tensors, %llu keys) exceed the file", f->path,
                        (unsigned long long)n_ti, (unsigned long long)n_kv);
    f->kv = lt_calloc(n_kv ? n_kv : 1, sizeof *f->kv, "GGUF key/values");
    f->ti = lt_calloc(n_ti ? n_ti : 1, sizeof *f->ti, "GGUF tensor infos");
    if (!f->kv || !f->ti) return LT_ERR_OUT_OF_MEMORY;
    uint32_t alignment = LT_GGUF_ALIGNMENT;
    for (uint64_t i = 0; i < n_kv; i++) {
        lt_gguf_kv *kv = &f->kv[i];
        const uint8_t *k;
        uint64_t klen;
        LT_TRY(lt_gguf_rd_str(&c, &k, &klen, "a key"));
        kv->key = (const char *)k;
        kv->key_len = klen;
        f->n_kv = i + 1;
        for (uint64_t j = 0; j < i; j++)
            if (f->kv[j].key_len == klen && !memcmp(f->kv[j].key, k, klen))
                return lt_error(LT_ERR_FORMAT, "%s: key '%.*s' appears twice", f->path, (int)klen, (const char *)k);
        uint32_t type;
        LT_TRY(lt_gguf_rd(&c, &type, 4, "a value type"));
        kv->v.type = (int32_t)type;
        kv->v.n = 1;
        if (type == LT_GGUF_STRING) {
            LT_TRY(lt_gguf_rd_str(&c, &kv->v.data, &kv->v.n, "a string value"));
        } else if (type == LT_GGUF_ARRAY) {
            uint32_t at;
            LT_TRY(lt_gguf_rd(&c, &at, 4, "an array type"));
            LT_TRY(lt_gguf_rd(&c, &kv->v.n, 8, "an array length"));
            kv->v.arr_type = (int32_t)at;
            kv->v.data = c.p;
            if (at == LT_GGUF_STRING) {
                if (kv->v.n > (uint64_t)(c.end - c.p) / 8)
                    return lt_error(LT_ERR_FORMAT, "%s: key '%.*s': array of %llu strings exceeds the file", f->path,
                                    (int)klen, (const char *)k, (unsigned long long)kv->v.n);
                uint64_t *off = lt_malloc((kv->v.n ? kv->v.n : 1) * 8, "GGUF string offsets");
                if (!off) return LT_ERR_OUT_OF_MEMORY;
                kv->v.str_off = off;
                for (uint64_t e = 0; e < kv->v.n; e++) {
                    const uint8_t *s;
                    uint64_t sl;
                    off[e] = (uint64_t)(c.p - kv->v.data);
                    LT_TRY(lt_gguf_rd_str(&c, &s, &sl, "an array string"));
                }
            } else {
                size_t es = lt_gguf_scalar_size((int)at);
                if (!es) return lt_error(LT_ERR_FORMAT, "%s: key '%.*s': bad array element type %u", f->path, (int)klen,
                                         (const char *)k, at);
                if (kv->v.n > (uint64_t)(c.end - c.p) / es)
                    return lt_error(LT_ERR_FORMAT, "%s: key '%.*s': array exceeds the file", f->path, (int)klen,
                                    (const char *)k);
                c.p += kv->v.n * es;
            }
        } else {
            size_t es = lt_gguf_scalar_size((int)type);
            if (!es) return lt_error(LT_ERR_FORMAT, "%s: key '%.*s': bad value type %u", f->path, (int)klen,
                                     (const char *)k, type);
            LT_TRY(lt_gguf_need(&c, es, "a value"));
            kv->v.data = c.p;
            c.p += es;
        }
        if (klen == 17 && !memcmp(k, "general.alignment", 17)) {
            if (type != LT_GGUF_UINT32) return lt_error(LT_ERR_FORMAT, "%s: general.alignment is not UINT32", f->path);
            memcpy(&alignment, kv->v.data, 4);
            if (!alignment || (alignment & (alignment - 1)))
                return lt_error(LT_ERR_FORMAT, "%s: general.alignment %u is not a power of two", f->path, alignment);
        }
    }
    uint64_t expect = 0;
    for (uint64_t i = 0; i < n_ti; i++) {
        lt_gguf_tensor_info *t = &f->ti[i];
        const uint8_t *name;
        uint64_t nlen;
        LT_TRY(lt_gguf_rd_str(&c, &name, &nlen, "a tensor name"));
        if (nlen >= LT_GGUF_MAX_NAME)
            return lt_error(LT_ERR_FORMAT, "%s: tensor name '%.*s' is too long", f->path, (int)nlen, (const char *)name);
        memcpy(t->name, name, nlen);
        t->name[nlen] = 0;
        f->n_ti = i + 1;
        for (uint64_t j = 0; j < i; j++)
            if (!strcmp(f->ti[j].name, t->name)) return lt_error(LT_ERR_FORMAT, "%s: tensor '%s' appears twice", f->path, t->name);
        uint32_t nd, type;
        LT_TRY(lt_gguf_rd(&c, &nd, 4, "a tensor rank"));
        if (nd < 1 || nd > LT_GGUF_MAX_DIMS)
            return lt_error(LT_ERR_FORMAT, "%s: tensor '%s' has %u dimensions", f->path, t->name, nd);
        t->ndim = (int32_t)nd;
        uint64_t rows = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t ne;
            LT_TRY(lt_gguf_rd(&c, &ne, 8, "a tensor dimension"));
            if (ne > ((uint64_t)1 << 40)) return lt_error(LT_ERR_FORMAT, "%s: tensor '%s': dimension %llu", f->path, t->name,
                                                          (unsigned long long)ne);
            t->ne[d] = (int64_t)ne;
            if (d) rows *= ne;
        }
        for (uint32_t d = nd; d < LT_GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        LT_TRY(lt_gguf_rd(&c, &type, 4, "a tensor type"));
        t->type = (int32_t)type;
        int blck = lt_ggml_block_size((int)type);
        if (!blck) return lt_error(LT_ERR_UNSUPPORTED, "%s: tensor '%s' has ggml type %u, unknown to loratune", f->path, t->name, type);
        if (t->ne[0] % blck)
            return lt_error(LT_ERR_FORMAT, "%s: tensor '%s': row of %lld not a multiple of the %s block", f->path, t->name,
                            (long long)t->ne[0], lt_ggml_type_name((int)type));
        LT_TRY(lt_gguf_rd(&c, &t->offset, 8, "a tensor offset"));
        t->nbytes = rows * lt_ggml_row_size((int)type, t->ne[0]);
        if (t->offset != expect)
            return lt_error(LT_ERR_FORMAT, "%s: tensor '%s' at offset %llu, expected %llu (offsets must be contiguous)",
                            f->path, t->name, (unsigned long long)t->offset, (unsigned long long)expect);
        expect += (t->nbytes + alignment - 1) / alignment * alignment;
    }
    uint64_t hdr = (uint64_t)(c.p - f->map);
    uint64_t data_start = (hdr + alignment - 1) / alignment * alignment;
    if (data_start > f->size)
        return lt_error(LT_ERR_FORMAT, "%s: the header runs past the end of the file", f->path);
    for (uint64_t i = 0; i < n_ti; i++) {
        lt_gguf_tensor_info *t = &f->ti[i];
        if (data_start + t->offset + t->nbytes > f->size)
            return lt_error(LT_ERR_FORMAT, "%s: tensor '%s' data exceeds the file", f->path, t->name);
        t->data = f->map + data_start + t->offset;
    }
    return LT_OK;
}

lt_status lt_gguf_open(const char *path, lt_gguf_file **out) {
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return lt_error(errno == ENOENT ? LT_ERR_NOT_FOUND : LT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return lt_error(LT_ERR_IO, "%s: not a regular file", path);
    }
    lt_gguf_file *f = lt_calloc(1, sizeof *f, "a GGUF file");
    if (!f) { close(fd); return LT_ERR_OUT_OF_MEMORY; }
    f->size = (size_t)sb.st_size;
    f->path = lt_strdup(path);
    if (f->size) {
        void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            close(fd);
            lt_gguf_close(f);
            return lt_error(LT_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
        }
        f->map = m;
    }
    close(fd);
    lt_status st = lt_gguf_parse(f);
    if (st != LT_OK) { lt_gguf_close(f); return st; }
    *out = f;
    return LT_OK;
}

uint32_t lt_gguf_version(const lt_gguf_file *f) { return f->version; }
size_t lt_gguf_kv_count(const lt_gguf_file *f) { return f->n_kv; }
const char *lt_gguf_kv_key(const lt_gguf_file *f, size_t i, size_t *len) {
    if (i >= f->n_kv) return NULL;
    if (len) *len = f->kv[i].key_len;
    return f->kv[i].key;
}
const lt_gguf_value *lt_gguf_kv_value(const lt_gguf_file *f, size_t i) { return i < f->n_kv ? &f->kv[i].v : NULL; }
const lt_gguf_value *lt_gguf_find(const lt_gguf_file *f, const char *key) {
    size_t n = strlen(key);
    for (size_t i = 0; i < f->n_kv; i++)
        if (f->kv[i].key_len == n && !memcmp(f->kv[i].key, key, n)) return &f->kv[i].v;
    return NULL;
}
size_t lt_gguf_n_tensors(const lt_gguf_file *f) { return f->n_ti; }
const lt_gguf_tensor_info *lt_gguf_tensor(const lt_gguf_file *f, size_t i) { return i < f->n_ti ? &f->ti[i] : NULL; }
const lt_gguf_tensor_info *lt_gguf_find_tensor(const lt_gguf_file *f, const char *name) {
    for (size_t i = 0; i < f->n_ti; i++)
        if (!strcmp(f->ti[i].name, name)) return &f->ti[i];
    return NULL;
}
const char *lt_gguf_arr_str(const lt_gguf_value *v, uint64_t i, uint64_t *len) {
    if (v->type != LT_GGUF_ARRAY || v->arr_type != LT_GGUF_STRING || i >= v->n || !v->str_off) return NULL;
    const uint8_t *p = v->data + v->str_off[i];
    uint64_t l;
    memcpy(&l, p, 8);
    if (len) *len = l;
    return (const char *)p + 8;
}

/* safetensors.c - the safetensors reader (mmap; validated as the reference implementation,
 * safetensors/src/tensor.rs Metadata::validate, validates) and writer (sorted and padded as the
 * reference's `prepare` does, {"format":"pt"} metadata, atomic), single files and sharded
 * folders with model.safetensors.index.json. */
#include "io/safetensors.h"
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The reference reader refuses larger headers (tensor.rs MAX_HEADER_SIZE). */
#define LT_ST_MAX_HEADER 100000000ull

static const char *const st_names[LT_ST_DTYPE_COUNT] = {
    "BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"};
static const int st_sizes[LT_ST_DTYPE_COUNT] = {1, 1, 1, 2, 2, 2, 2, 4, 4, 4, 8, 8, 8};

const char *lt_st_dtype_name(int dtype) {
    return dtype >= 0 && dtype < LT_ST_DTYPE_COUNT ? st_names[dtype] : "?";
}
int lt_st_dtype_size(int dtype) { return dtype >= 0 && dtype < LT_ST_DTYPE_COUNT ? st_sizes[dtype] : 0; }
int lt_st_dtype_parse(const char *name) {
    for (int i = 0; i < LT_ST_DTYPE_COUNT; i++)
        if (!strcmp(name, st_names[i])) return i;
    return -1;
}

/* ---- reader ---------------------------------------------------------------------------- */

typedef struct st_file {
    char *path;
    uint8_t *map;        /* the whole file, read-only */
    size_t size;
    char **meta_keys, **meta_vals;
    size_t n_meta;
} st_file;

struct lt_st_set {
    st_file *files;
    size_t n_files;
    lt_st_tensor *tensors; /* sorted by name */
    size_t n_tensors;
    char *source;          /* the file, or the index of a sharded checkpoint */
};

static void st_file_clear(st_file *f) {
    if (f->map && f->size) munmap(f->map, f->size);
    for (size_t i = 0; i < f->n_meta; i++) { free(f->meta_keys[i]); free(f->meta_vals[i]); }
    free(f->meta_keys); free(f->meta_vals); free(f->path);
    memset(f, 0, sizeof *f);
}

void lt_st_close(lt_st_set *set) {
    if (!set) return;
    for (size_t i = 0; i < set->n_files; i++) st_file_clear(&set->files[i]);
    for (size_t i = 0; i < set->n_tensors; i++) free((char *)set->tensors[i].name);
    free(set->files); free(set->tensors); free(set->source); free(set);
}

static int cmp_tensor_name(const void *a, const void *b) {
    return strcmp(((const lt_st_tensor *)a)->name, ((const lt_st_tensor *)b)->name);
}

typedef struct st_span { uint64_t begin, end; size_t idx; } st_span;
static int cmp_span(const void *a, const void *b) {
    const st_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int json_u64(json_t *v, uint64_t *out) {
    if (!json_is_integer(v) || json_integer_value(v) < 0) return 0;
    *out = (uint64_t)json_integer_value(v);
    return 1;
}

static void fmt_shape(char *buf, size_t cap, const int64_t *shape, int ndim) {
    size_t k = 0;
    k += snprintf(buf + k, cap - k, "[");
    for (int i = 0; i < ndim && k < cap; i++) k += snprintf(buf + k, cap - k, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

/* Parses and validates one file; appends its tensors to *tv (growing *tn / *tcap). The tensors'
 * `file` pointers are fixed up by the caller once the files array stops moving. */
static lt_status st_parse_file(const char *path, st_file *f, lt_st_tensor **tv, size_t *tn, size_t *tcap) {
    memset(f, 0, sizeof *f);
    f->path = lt_strdup(path);
    if (!f->path) return LT_ERR_OUT_OF_MEMORY;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lt_error(errno == ENOENT ? LT_ERR_NOT_FOUND : LT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return lt_error(LT_ERR_IO, "%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return lt_error(LT_ERR_FORMAT, "%s: truncated safetensors file: %zu bytes, shorter than the 8-byte header "
                        "length", path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return lt_error(LT_ERR_IO, "%s: cannot map %zu bytes: %s", path, size, strerror(errno));
    f->map = map;
    f->size = size;

    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | f->map[i];
    if (n > LT_ST_MAX_HEADER)
        return lt_error(LT_ERR_FORMAT, "%s: header length %llu exceeds the safetensors limit of %llu bytes (not a "
                        "safetensors file?)", path, (unsigned long long)n, LT_ST_MAX_HEADER);
    if (8 + n > size)
        return lt_error(LT_ERR_FORMAT, "%s: header length %llu runs past the end of the %zu-byte file (truncated "
                        "safetensors header)", path, (unsigned long long)n, size);
    const char *hdr = (const char *)f->map + 8;
    size_t h0 = 0;
    while (h0 < n && (hdr[h0] == ' ' || hdr[h0] == '\t' || hdr[h0] == '\n' || hdr[h0] == '\r')) h0++;
    if (h0 >= n || hdr[h0] != '{')
        return lt_error(LT_ERR_FORMAT, "%s: the header does not start with '{' (not a safetensors file?)", path);
    json_error_t je;
    json_t *root = json_loadb(hdr, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return lt_error(LT_ERR_FORMAT, "%s: header JSON is invalid at byte %d: %s", path, je.position, je.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return lt_error(LT_ERR_FORMAT, "%s: header is not a JSON object", path);
    }
    lt_status st = LT_OK;
    size_t first = *tn;
    size_t n_entries = json_object_size(root);
    st_span *spans = lt_calloc(n_entries ? n_entries : 1, sizeof *spans, "safetensors offsets");
    size_t n_spans = 0;
    if (!spans) { json_decref(root); return LT_ERR_OUT_OF_MEMORY; }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(val)) { st = lt_error(LT_ERR_FORMAT, "%s: __metadata__ is not an object", path); break; }
            size_t nm = json_object_size(val);
            f->meta_keys = lt_calloc(nm ? nm : 1, sizeof(char *), "metadata");
            f->meta_vals = lt_calloc(nm ? nm : 1, sizeof(char *), "metadata");
            if (!f->meta_keys || !f->meta_vals) { st = LT_ERR_OUT_OF_MEMORY; break; }
            const char *mk;
            json_t *mv;
            json_object_foreach(val, mk, mv) {
                if (!json_is_string(mv)) {
                    st = lt_error(LT_ERR_FORMAT, "%s: __metadata__ value of '%s' is not a string (metadata is a "
                                  "string-to-string map)", path, mk);
                    break;
                }
                f->meta_keys[f->n_meta] = lt_strdup(mk);
                f->meta_vals[f->n_meta] = lt_strdup(json_string_value(mv));
                f->n_meta++;
                if (!f->meta_keys[f->n_meta - 1] || !f->meta_vals[f->n_meta - 1]) { st = LT_ERR_OUT_OF_MEMORY; break; }
            }
            if (st != LT_OK) break;
            continue;
        }
        if (!json_is_object(val)) { st = lt_error(LT_ERR_FORMAT, "%s: tensor '%s' is not a JSON object", path, key); break; }
        json_t *jd = json_object_get(val, "dtype"), *js = json_object_get(val, "shape"),
               *jo = json_object_get(val, "data_offsets");
        if (!jd || !js || !jo) {
            st = lt_error(LT_ERR_FORMAT, "%s: tensor '%s' lacks %s", path, key,
                          !jd ? "\"dtype\"" : !js ? "\"shape\"" : "\"data_offsets\"");
            break;
        }
        if (!json_is_string(jd)) { st = lt_error(LT_ERR_FORMAT, "%s: tensor '%s' dtype is not a string", path, key); break; }
        int dt = lt_st_dtype_parse(json_string_value(jd));
        if (dt < 0) {
            st = lt_error(LT_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s, which loratune cannot read (it reads "
                          "BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64)", path, key,
                          json_string_value(jd));
            break;
        }
        if (!json_is_array(js) || json_array_size(js) > LT_ST_MAX_DIMS) {
            st = lt_error(LT_ERR_FORMAT, "%s: tensor '%s' shape is not an array of at most %d sizes", path, key,
                          LT_ST_MAX_DIMS);
            break;
        }
        if (!json_is_array(jo) || json_array_size(jo) != 2) {
            st = lt_error(LT_ERR_FORMAT, "%s: tensor '%s' data_offsets is not a [begin, end] pair", path, key);
            break;
        }
        if (*tn == *tcap) {
            size_t nc = *tcap ? *tcap * 2 : 64;
            lt_st_tensor *nt = lt_realloc(*tv, nc * sizeof **tv, "the tensor table");
            if (!nt) { st = LT_ERR_OUT_OF_MEMORY; break; }
            *tv = nt;
            *tcap = nc;
        }
        lt_st_tensor *t = &(*tv)[*tn];
        memset(t, 0, sizeof *t);
        t->dtype = dt;
        t->ndim = (int32_t)json_array_size(js);
        uint64_t numel = 1;
        int bad = 0, overflow = 0;
        for (int d = 0; d < t->ndim; d++) {
            uint64_t s;
            if (!json_u64(json_array_get(js, d), &s)) { bad = 1; break; }
            t->shape[d] = (int64_t)s;
            if (s && numel > UINT64_MAX / s) overflow = 1;
            else numel *= s;
        }
        if (bad) { st = lt_error(LT_ERR_FORMAT, "%s: tensor '%s' shape holds a value that is not a size", path, key); break; }
        uint64_t b, e;
        if (!json_u64(json_array_get(jo, 0), &b) || !json_u64(json_array_get(jo, 1), &e)) {
            st = lt_error(LT_ERR_FORMAT, "%s: tensor '%s' data_offsets holds a value that is not an offset", path, key);
            break;
        }
        char shp[160];
        fmt_shape(shp, sizeof shp, t->shape, t->ndim);
        uint64_t need = numel * (uint64_t)st_sizes[dt];
        if (overflow || numel > UINT64_MAX / st_sizes[dt] || e < b || e - b != need) {
            st = lt_error(LT_ERR_FORMAT, "%s: tensor '%s' data_offsets [%llu,%llu] but dtype %s x shape %s needs %llu "
                          "bytes", path, key, (unsigned long long)b, (unsigned long long)e, st_names[dt], shp,
                          (unsigned long long)need);
            break;
        }
        t->name = lt_strdup(key);
        if (!t->name) { st = LT_ERR_OUT_OF_MEMORY; break; }
        t->numel = (int64_t)numel;
        t->nbytes = (size_t)need;
        spans[n_spans].begin = b;
        spans[n_spans].end = e;
        spans[n_spans].idx = *tn;
        n_spans++;
        (*tn)++;
    }
    json_decref(root);
    if (st == LT_OK) {
        /* The tensors, sorted by offset, must tile the buffer [0, end) exactly. */
        qsort(spans, n_spans, sizeof *spans, cmp_span);
        uint64_t pos = 0;
        for (size_t i = 0; i < n_spans; i++) {
            const char *nm = (*tv)[spans[i].idx].name;
            if (spans[i].begin > pos) {
                st = lt_error(LT_ERR_FORMAT, "%s: tensor '%s' data_offsets [%llu,%llu] leave a hole: bytes %llu..%llu of "
                              "the buffer belong to no tensor", path, nm, (unsigned long long)spans[i].begin,
                              (unsigned long long)spans[i].end, (unsigned long long)pos,
                              (unsigned long long)spans[i].begin);
                break;
            }
            if (spans[i].begin < pos) {
                st = lt_error(LT_ERR_FORMAT, "%s: tensor '%s' data_offsets [%llu,%llu] overlap the tensor before it "
                              "(which ends at %llu)", path, nm, (unsigned long long)spans[i].begin,
                              (unsigned long long)spans[i].end, (unsigned long long)pos);
                break;
            }
            pos = spans[i].end;
        }
        if (st == LT_OK && 8 + n + pos != size)
            st = lt_error(LT_ERR_FORMAT, "%s: header says the data ends at byte %llu but the file has %zu bytes (%s)",
                          path, (unsigned long long)(8 + n + pos), size,
                          8 + n + pos > size ? "truncated file" : "trailing bytes");
        if (st == LT_OK) {
            const uint8_t *base = f->map + 8 + n;
            for (size_t i = 0; i < n_spans; i++) (*tv)[spans[i].idx].data = base + spans[i].begin;
        }
    }
    free(spans);
    if (st != LT_OK) {
        for (size_t i = first; i < *tn; i++) free((char *)(*tv)[i].name);
        *tn = first;
    }
    return st;
}

static lt_status st_finish(lt_st_set *set, lt_st_tensor *tv, size_t tn) {
    set->tensors = tv;
    set->n_tensors = tn;
    qsort(set->tensors, tn, sizeof *tv, cmp_tensor_name);
    for (size_t i = 1; i < tn; i++)
        if (!strcmp(tv[i].name, tv[i - 1].name))
            return lt_error(LT_ERR_FORMAT, "tensor '%s' is stored twice (in %s and %s)", tv[i].name, tv[i - 1].file,
                            tv[i].file);
    return LT_OK;
}

lt_status lt_st_open_file(const char *path, lt_st_set **out) {
    LT_CHECK_ARG(path && out, "lt_st_open_file: NULL argument");
    *out = NULL;
    lt_st_set *set = lt_calloc(1, sizeof *set, "a safetensors set");
    if (!set) return LT_ERR_OUT_OF_MEMORY;
    set->files = lt_calloc(1, sizeof *set->files, "a safetensors set");
    if (!set->files) { free(set); return LT_ERR_OUT_OF_MEMORY; }
    set->n_files = 1;
    set->source = lt_strdup(path);
    if (!set->source) { lt_st_close(set); return LT_ERR_OUT_OF_MEMORY; }
    lt_st_tensor *tv = NULL;
    size_t tn = 0, tcap = 0;
    lt_status st = st_parse_file(path, &set->files[0], &tv, &tn, &tcap);
    for (size_t i = 0; i < tn; i++) tv[i].file = set->files[0].path;
    if (st == LT_OK) st = st_finish(set, tv, tn);
    else { set->tensors = tv; set->n_tensors = tn; }
    if (st != LT_OK) { lt_st_close(set); return st; }
    *out = set;
    return LT_OK;
}

static lt_status st_open_index(const char *dir, const char *index_path, lt_st_set **out) {
    char *text = NULL;
    size_t len = 0;
    LT_TRY(lt_read_file(index_path, &text, &len));
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!root)
        return lt_error(LT_ERR_FORMAT, "%s: invalid JSON at line %d column %d: %s", index_path, je.line, je.column,
                        je.text);
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm) || json_object_size(wm) == 0) {
        json_decref(root);
        return lt_error(LT_ERR_FORMAT, "%s: no \"weight_map\" object naming each tensor's shard", index_path);
    }
    /* the distinct shard names, in first-seen order */
    size_t n_wm = json_object_size(wm), n_sh = 0;
    const char **shards = lt_calloc(n_wm, sizeof *shards, "shard names");
    lt_st_set *set = lt_calloc(1, sizeof *set, "a safetensors set");
    lt_status st = (!shards || !set) ? LT_ERR_OUT_OF_MEMORY : LT_OK;
    const char *key;
    json_t *val;
    if (st == LT_OK) {
        json_object_foreach(wm, key, val) {
            if (!json_is_string(val)) {
                st = lt_error(LT_ERR_FORMAT, "%s: weight_map entry '%s' is not a file name", index_path, key);
                break;
            }
            const char *s = json_string_value(val);
            if (strchr(s, '/') || !strcmp(s, "..") || !*s) {
                st = lt_error(LT_ERR_FORMAT, "%s: weight_map entry '%s' names '%s', which is not a file in the folder",
                              index_path, key, s);
                break;
            }
            size_t j = 0;
            while (j < n_sh && strcmp(shards[j], s)) j++;
            if (j == n_sh) shards[n_sh++] = s;
        }
    }
    lt_st_tensor *tv = NULL;
    size_t tn = 0, tcap = 0;
    if (st == LT_OK) {
        set->files = lt_calloc(n_sh, sizeof *set->files, "shards");
        set->source = lt_strdup(index_path);
        if (!set->files || !set->source) st = LT_ERR_OUT_OF_MEMORY;
    }
    for (size_t j = 0; st == LT_OK && j < n_sh; j++) {
        char *p = lt_path_join(dir, shards[j]);
        if (!p) { st = LT_ERR_OUT_OF_MEMORY; break; }
        size_t before = tn;
        st = st_parse_file(p, &set->files[j], &tv, &tn, &tcap);
        set->n_files = j + 1;
        if (st == LT_ERR_NOT_FOUND)
            st = lt_error(LT_ERR_NOT_FOUND, "%s: shard %s named by %s is missing", p, shards[j], index_path);
        free(p);
        for (size_t i = before; i < tn; i++) tv[i].file = set->files[j].path;
    }
    if (st == LT_OK) st = st_finish(set, tv, tn);
    else if (set) { set->tensors = tv; set->n_tensors = tn; }
    /* every tensor of the index must be in the shard the index names */
    if (st == LT_OK) {
        json_object_foreach(wm, key, val) {
            const lt_st_tensor *t = lt_st_find(set, key);
            const char *want = json_string_value(val);
            size_t wl = strlen(want), fl = t ? strlen(t->file) : 0;
            if (!t || fl < wl || strcmp(t->file + fl - wl, want)) {
                st = lt_error(LT_ERR_FORMAT, "%s: tensor '%s' should be in %s but %s", index_path, key, want,
                              t ? "is in another shard" : "no shard holds it");
                break;
            }
        }
    }
    free(shards);
    json_decref(root);
    if (st != LT_OK) { lt_st_close(set); return st; }
    *out = set;
    return LT_OK;
}

lt_status lt_st_open_dir(const char *dir, lt_st_set **out) {
    LT_CHECK_ARG(dir && out, "lt_st_open_dir: NULL argument");
    *out = NULL;
    char *single = lt_path_join(dir, "model.safetensors");
    char *index = lt_path_join(dir, "model.safetensors.index.json");
    lt_status st;
    if (!single || !index) st = LT_ERR_OUT_OF_MEMORY;
    else if (lt_file_exists(single)) st = lt_st_open_file(single, out);
    else if (lt_file_exists(index)) st = st_open_index(dir, index, out);
    else
        st = lt_error(LT_ERR_NOT_FOUND, "%s: no model.safetensors or model.safetensors.index.json in this folder "
                      "(loratune reads safetensors checkpoints; convert .bin files with transformers' "
                      "save_pretrained(safe_serialization=True))", dir);
    free(single); free(index);
    return st;
}

const lt_st_tensor *lt_st_find(const lt_st_set *set, const char *name) {
    if (!set || !name) return NULL;
    lt_st_tensor key;
    key.name = name;
    return bsearch(&key, set->tensors, set->n_tensors, sizeof key, cmp_tensor_name);
}
size_t lt_st_count(const lt_st_set *set) { return set ? set->n_tensors : 0; }
const char *lt_st_source(const lt_st_set *set) { return set && set->source ? set->source : "the checkpoint"; }
const lt_st_tensor *lt_st_at(const lt_st_set *set, size_t i) {
    return set && i < set->n_tensors ? &set->tensors[i] : NULL;
}
const char *lt_st_metadata(const lt_st_set *set, const char *key) {
    if (!set || !set->n_files) return NULL;
    const st_file *f = &set->files[0];
    for (size_t i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta_keys[i], key)) return f->meta_vals[i];
    return NULL;
}

lt_status lt_st_to_f32(const lt_st_tensor *t, float *out) {
    int64_t n = t->numel;
    switch (t->dtype) {
    case LT_ST_F32: memcpy(out, t->data, (size_t)n * 4); return LT_OK;
    case LT_ST_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, t->data + 2 * i, 2);
            out[i] = lt_bf16_to_f32(h);
        }
        return LT_OK;
    case LT_ST_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, t->data + 2 * i, 2);
            out[i] = lt_f16_to_f32(h);
        }
        return LT_OK;
    default:
        return lt_error(LT_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s; expected F32, F16 or BF16", t->file, t->name,
                        lt_st_dtype_name(t->dtype));
    }
}

/* ---- writer ---------------------------------------------------------------------------- */

typedef struct st_wentry {
    char *name;
    int32_t dtype, ndim;
    int64_t shape[LT_ST_MAX_DIMS];
    size_t nbytes;
    const void *data;
    void *owned;
    lt_st_fill_fn fill;
    void *fill_ctx;
} st_wentry;

struct lt_st_writer {
    int require_finite;        /* lt_st_writer_require_finite: float tensors must hold no NaN/Inf */
    st_wentry *e;
    size_t n, cap;
    char **mk, **mv;
    size_t n_meta;
};

lt_status lt_st_writer_new(lt_st_writer **out) {
    *out = lt_calloc(1, sizeof **out, "a safetensors writer");
    return *out ? LT_OK : LT_ERR_OUT_OF_MEMORY;
}

void lt_st_writer_free(lt_st_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) { free(w->e[i].name); free(w->e[i].owned); }
    for (size_t i = 0; i < w->n_meta; i++) { free(w->mk[i]); free(w->mv[i]); }
    free(w->e); free(w->mk); free(w->mv); free(w);
}

static lt_status st_writer_push(lt_st_writer *w, const char *name, int32_t dtype, int32_t ndim, const int64_t *shape,
                                st_wentry **out) {
    LT_CHECK_ARG(w && name && *name, "lt_st_writer_add: NULL writer or empty name");
    LT_CHECK_ARG(dtype >= 0 && dtype < LT_ST_DTYPE_COUNT, "lt_st_writer_add: '%s': bad dtype %d", name, dtype);
    LT_CHECK_ARG(ndim >= 0 && ndim <= LT_ST_MAX_DIMS, "lt_st_writer_add: '%s': %d dimensions", name, ndim);
    if (!strcmp(name, "__metadata__"))
        return lt_error(LT_ERR_INVALID_ARGUMENT, "lt_st_writer_add: '__metadata__' is not a tensor name");
    for (size_t i = 0; i < w->n; i++)
        if (!strcmp(w->e[i].name, name))
            return lt_error(LT_ERR_INVALID_ARGUMENT, "lt_st_writer_add: tensor '%s' added twice", name);
    if (w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 64;
        st_wentry *ne = lt_realloc(w->e, nc * sizeof *ne, "a safetensors writer");
        if (!ne) return LT_ERR_OUT_OF_MEMORY;
        w->e = ne;
        w->cap = nc;
    }
    st_wentry *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    size_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        LT_CHECK_ARG(shape[d] >= 0, "lt_st_writer_add: '%s': negative size", name);
        e->shape[d] = shape[d];
        numel *= (size_t)shape[d];
    }
    e->name = lt_strdup(name);
    if (!e->name) return LT_ERR_OUT_OF_MEMORY;
    e->dtype = dtype;
    e->ndim = ndim;
    e->nbytes = numel * (size_t)st_sizes[dtype];
    w->n++;
    *out = e;
    return LT_OK;
}

lt_status lt_st_writer_add(lt_st_writer *w, const char *name, int32_t dtype, int32_t ndim, const int64_t *shape,
                           const void *data, int copy) {
    st_wentry *e = NULL;
    LT_TRY(st_writer_push(w, name, dtype, ndim, shape, &e));
    if (copy && e->nbytes) {
        e->owned = lt_malloc(e->nbytes, name);
        if (!e->owned) { free(e->name); w->n--; return LT_ERR_OUT_OF_MEMORY; }
        memcpy(e->owned, data, e->nbytes);
        e->data = e->owned;
    } else {
        e->data = data;
    }
    return LT_OK;
}

lt_status lt_st_writer_add_fill(lt_st_writer *w, const char *name, int32_t dtype, int32_t ndim, const int64_t *shape,
                                lt_st_fill_fn fill, void *ctx) {
    st_wentry *e = NULL;
    LT_CHECK_ARG(fill, "lt_st_writer_add_fill: NULL fill function");
    LT_TRY(st_writer_push(w, name, dtype, ndim, shape, &e));
    e->fill = fill;
    e->fill_ctx = ctx;
    return LT_OK;
}

void lt_st_writer_require_finite(lt_st_writer *w) {
    if (w) w->require_finite = 1;
}

lt_status lt_st_writer_set_metadata(lt_st_writer *w, const char *key, const char *value) {
    LT_CHECK_ARG(w && key && value, "lt_st_writer_set_metadata: NULL argument");
    for (size_t i = 0; i < w->n_meta; i++)
        if (!strcmp(w->mk[i], key)) {
            char *v = lt_strdup(value);
            if (!v) return LT_ERR_OUT_OF_MEMORY;
            free(w->mv[i]);
            w->mv[i] = v;
            return LT_OK;
        }
    char **nk = lt_realloc(w->mk, (w->n_meta + 1) * sizeof *nk, "metadata");
    if (!nk) return LT_ERR_OUT_OF_MEMORY;
    w->mk = nk;
    char **nv = lt_realloc(w->mv, (w->n_meta + 1) * sizeof *nv, "metadata");
    if (!nv) return LT_ERR_OUT_OF_MEMORY;
    w->mv = nv;
    w->mk[w->n_meta] = lt_strdup(key);
    w->mv[w->n_meta] = lt_strdup(value);
    if (!w->mk[w->n_meta] || !w->mv[w->n_meta]) {
        free(w->mk[w->n_meta]); free(w->mv[w->n_meta]);
        return LT_ERR_OUT_OF_MEMORY;
    }
    w->n_meta++;
    return LT_OK;
}

size_t lt_st_writer_bytes(const lt_st_writer *w) {
    size_t s = 0;
    for (size_t i = 0; w && i < w->n; i++) s += w->e[i].nbytes;
    return s;
}

/* A growable string for the header. */
typedef struct sbuf { char *p; size_t n, cap; int oom; } sbuf;
static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = (b->n + n + 1) * 2;
        char *np = realloc(b->p, nc);
        if (!np) { b->oom = 1; return; }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
static void sb_printf(sbuf *b, const char *fmt, ...) LT_PRINTF(2, 3);
static void sb_printf(sbuf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k > 0) sb_put(b, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}
/* A JSON string as serde_json writes it (escapes ", \ and control characters). */
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"') sb_put(b, "\\\"", 2);
        else if (*p == '\\') sb_put(b, "\\\\", 2);
        else if (*p == '\n') sb_put(b, "\\n", 2);
        else if (*p == '\r') sb_put(b, "\\r", 2);
        else if (*p == '\t') sb_put(b, "\\t", 2);
        else if (*p == '\b') sb_put(b, "\\b", 2);
        else if (*p == '\f') sb_put(b, "\\f", 2);
        else if (*p < 0x20) sb_printf(b, "\\u%04x", *p);
        else sb_put(b, (const char *)p, 1);
    }
    sb_put(b, "\"", 1);
}

/* The reference writer's order: larger dtypes (later in the Dtype enum) first, then by name. */
static int cmp_wentry(const void *a, const void *b) {
    const st_wentry *x = *(st_wentry *const *)a, *y = *(st_wentry *const *)b;
    if (x->dtype != y->dtype) return y->dtype - x->dtype;
    return strcmp(x->name, y->name);
}
static int cmp_cstr(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* A float tensor about to be written must be finite: a NaN/Inf weight is never saved. Returns
 * LT_ERR_NONFINITE naming the tensor, the first bad index and value, and how many there are. */
static lt_status st_check_finite(const st_wentry *e, const void *data, const char *path) {
    size_t n = 0, first = 0, bad = 0;
    double v = 0;
    const uint8_t *b = data;
    switch (e->dtype) {
    case LT_ST_F32: n = e->nbytes / 4; break;
    case LT_ST_F64: n = e->nbytes / 8; break;
    case LT_ST_F16: case LT_ST_BF16: n = e->nbytes / 2; break;
    default: return LT_OK;
    }
    for (size_t i = 0; i < n; i++) {
        double x;
        if (e->dtype == LT_ST_F32) { float f; memcpy(&f, b + 4 * i, 4); x = f; }
        else if (e->dtype == LT_ST_F64) memcpy(&x, b + 8 * i, 8);
        else { /* 16-bit: the exponent bits all set is inf or nan */
            uint16_t h;
            memcpy(&h, b + 2 * i, 2);
            uint16_t mask = e->dtype == LT_ST_F16 ? 0x7c00u : 0x7f80u;
            if ((h & mask) != mask) continue;
            x = e->dtype == LT_ST_F16 ? lt_f16_to_f32(h) : lt_bf16_to_f32(h);
        }
        if (!isfinite(x) && !bad++) { first = i; v = x; }
    }
    if (!bad) return LT_OK;
    return lt_error(LT_ERR_NONFINITE, "%s: tensor '%s' holds %zu non-finite value%s (the first, %g, at index %zu); "
                    "refusing to save it", path, e->name, bad, bad == 1 ? "" : "s", v, first);
}

lt_status lt_st_writer_write(lt_st_writer *w, const char *path, int overwrite) {
    LT_CHECK_ARG(w && path, "lt_st_writer_write: NULL argument");
    int has_format = 0;
    for (size_t i = 0; i < w->n_meta; i++) has_format |= !strcmp(w->mk[i], "format");
    if (!has_format) LT_TRY(lt_st_writer_set_metadata(w, "format", "pt"));
    st_wentry **order = lt_calloc(w->n ? w->n : 1, sizeof *order, "a safetensors writer");
    char **mkeys = lt_calloc(w->n_meta, sizeof *mkeys, "metadata");
    if (!order || !mkeys) { free(order); free(mkeys); return LT_ERR_OUT_OF_MEMORY; }
    for (size_t i = 0; i < w->n; i++) order[i] = &w->e[i];
    qsort(order, w->n, sizeof *order, cmp_wentry);
    for (size_t i = 0; i < w->n_meta; i++) mkeys[i] = w->mk[i];
    qsort(mkeys, w->n_meta, sizeof *mkeys, cmp_cstr);

    sbuf b = {0};
    sb_str(&b, "{\"__metadata__\":{");
    for (size_t i = 0; i < w->n_meta; i++) {
        const char *v = NULL;
        for (size_t j = 0; j < w->n_meta; j++)
            if (w->mk[j] == mkeys[i]) v = w->mv[j];
        if (i) sb_str(&b, ",");
        sb_json_str(&b, mkeys[i]);
        sb_str(&b, ":");
        sb_json_str(&b, v);
    }
    sb_str(&b, "}");
    uint64_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        const st_wentry *e = order[i];
        sb_str(&b, ",");
        sb_json_str(&b, e->name);
        sb_printf(&b, ":{\"dtype\":\"%s\",\"shape\":[", st_names[e->dtype]);
        for (int d = 0; d < e->ndim; d++) sb_printf(&b, d ? ",%lld" : "%lld", (long long)e->shape[d]);
        sb_printf(&b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                  (unsigned long long)(off + e->nbytes));
        off += e->nbytes;
    }
    sb_str(&b, "}");
    while (!b.oom && b.n % 8) sb_str(&b, " ");
    free(mkeys);
    if (b.oom) { free(b.p); free(order); return lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory writing %s", path); }

    /* tensors given as data are checked before anything is created; filled ones as they come */
    lt_status st = LT_OK;
    for (size_t i = 0; st == LT_OK && i < w->n; i++)
        if (w->require_finite && !w->e[i].fill && w->e[i].nbytes) st = st_check_finite(&w->e[i], w->e[i].data, path);
    if (st != LT_OK) { free(b.p); free(order); return st; }
    lt_atomic_file *af = NULL;
    st = lt_atomic_open(path, overwrite, &af);
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)b.n >> (8 * i));
    if (st == LT_OK) st = lt_atomic_write(af, len8, 8);
    if (st == LT_OK) st = lt_atomic_write(af, b.p, b.n);
    free(b.p);
    /* Lazily filled tensors are produced one at a time into a scratch buffer (streaming). */
    void *scratch = NULL;
    size_t scratch_cap = 0;
    for (size_t i = 0; st == LT_OK && i < w->n; i++) {
        const st_wentry *e = order[i];
        if (!e->nbytes) continue;
        if (e->fill) {
            if (e->nbytes > scratch_cap) {
                free(scratch);
                scratch = lt_malloc(e->nbytes, e->name);
                scratch_cap = scratch ? e->nbytes : 0;
                if (!scratch) { st = LT_ERR_OUT_OF_MEMORY; break; }
            }
            st = e->fill(e->fill_ctx, e->name, scratch, e->nbytes);
            if (st == LT_OK && w->require_finite) st = st_check_finite(e, scratch, path);
            if (st == LT_OK) st = lt_atomic_write(af, scratch, e->nbytes);
        } else {
            st = lt_atomic_write(af, e->data, e->nbytes);
        }
    }
    free(scratch);
    free(order);
    if (st != LT_OK) { lt_atomic_abort(af); return st; }
    return lt_atomic_commit(af);
}

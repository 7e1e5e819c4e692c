/* gguf.h - GGUF v3 files (llama.cpp's model container): a streaming writer (key/values and
 * tensor infos first, then each tensor's bytes in order, written atomically) and a reader
 * (mmap, validated as ggml's gguf.cpp validates) used by the tests and for round trips.
 * Layout: docs specs/gguf-export.md section 1. */
#ifndef LT_GGUF_H
#define LT_GGUF_H
#include "core/core.h"

/* Value types of the key/value section (pinned by the format). */
enum {
    LT_GGUF_UINT8 = 0, LT_GGUF_INT8 = 1, LT_GGUF_UINT16 = 2, LT_GGUF_INT16 = 3, LT_GGUF_UINT32 = 4,
    LT_GGUF_INT32 = 5, LT_GGUF_FLOAT32 = 6, LT_GGUF_BOOL = 7, LT_GGUF_STRING = 8, LT_GGUF_ARRAY = 9,
    LT_GGUF_UINT64 = 10, LT_GGUF_INT64 = 11, LT_GGUF_FLOAT64 = 12
};

/* ggml tensor types used by loratune (ggml.h ids). */
enum {
    LT_GGML_F32 = 0, LT_GGML_F16 = 1, LT_GGML_Q4_0 = 2, LT_GGML_Q4_1 = 3, LT_GGML_Q5_0 = 6,
    LT_GGML_Q5_1 = 7, LT_GGML_Q8_0 = 8, LT_GGML_Q4_K = 12, LT_GGML_Q5_K = 13, LT_GGML_Q6_K = 14,
    LT_GGML_BF16 = 30
};

#define LT_GGUF_ALIGNMENT 32
#define LT_GGUF_MAX_NAME 64   /* GGML_MAX_NAME: names must be shorter */
#define LT_GGUF_MAX_DIMS 4

/* Block size (elements) and bytes per block of a ggml type; 0 for a type loratune does not know. */
int lt_ggml_block_size(int type);
size_t lt_ggml_type_size(int type);
const char *lt_ggml_type_name(int type); /* "q4_K", "?" when unknown */
/* Bytes of a row of n elements (n a multiple of the block size). */
size_t lt_ggml_row_size(int type, int64_t n);

/* ---- writer ---- */
typedef struct lt_gguf_writer lt_gguf_writer;
lt_status lt_gguf_writer_new(lt_gguf_writer **out);
void lt_gguf_writer_free(lt_gguf_writer *w); /* removes the temporary file if not finished */

/* Key/values, in the order they are added. A repeated key is an error. */
lt_status lt_gguf_add_str(lt_gguf_writer *w, const char *key, const char *value);
lt_status lt_gguf_add_u32(lt_gguf_writer *w, const char *key, uint32_t value);
lt_status lt_gguf_add_i32(lt_gguf_writer *w, const char *key, int32_t value);
lt_status lt_gguf_add_f32(lt_gguf_writer *w, const char *key, float value);
lt_status lt_gguf_add_bool(lt_gguf_writer *w, const char *key, int value);
lt_status lt_gguf_add_arr_str(lt_gguf_writer *w, const char *key, const char *const *values, size_t n);
lt_status lt_gguf_add_arr_i32(lt_gguf_writer *w, const char *key, const int32_t *values, size_t n);
lt_status lt_gguf_add_arr_f32(lt_gguf_writer *w, const char *key, const float *values, size_t n);

/* A tensor's info; ne[0] is the fastest-varying dimension (HF (out, in) -> ne = [in, out]).
 * Returns its index for lt_gguf_writer_put. */
lt_status lt_gguf_add_tensor(lt_gguf_writer *w, const char *name, int ndim, const int64_t *ne, int type,
                             size_t *index);
size_t lt_gguf_tensor_count(const lt_gguf_writer *w);
/* Total file size the current infos give (header + padded data). */
uint64_t lt_gguf_writer_file_size(const lt_gguf_writer *w);

/* Opens "<path>.tmp.<pid>" and writes the header; overwrite=0 refuses an existing path. */
lt_status lt_gguf_writer_begin(lt_gguf_writer *w, const char *path, int overwrite);
/* The bytes of tensor `index`; tensors must come in the order they were added. */
lt_status lt_gguf_writer_put(lt_gguf_writer *w, size_t index, const void *data, size_t nbytes);
/* All tensors written: sync and rename into place. */
lt_status lt_gguf_writer_finish(lt_gguf_writer *w);

/* ---- reader ---- */
typedef struct lt_gguf_value {
    int32_t type;           /* LT_GGUF_* */
    int32_t arr_type;       /* element type when type == ARRAY */
    uint64_t n;             /* array length (1 for scalars); string length for STRING */
    const uint8_t *data;    /* scalar: the raw value; STRING: the bytes; ARRAY: first element */
    const uint64_t *str_off;/* ARRAY of STRING: each element's offset from data (its u64 length) */
} lt_gguf_value;

typedef struct lt_gguf_tensor_info {
    char name[LT_GGUF_MAX_NAME];
    int32_t ndim;
    int64_t ne[LT_GGUF_MAX_DIMS];
    int32_t type;
    uint64_t offset;        /* from the start of the data section */
    size_t nbytes;
    const uint8_t *data;
} lt_gguf_tensor_info;

typedef struct lt_gguf_file lt_gguf_file;
lt_status lt_gguf_open(const char *path, lt_gguf_file **out);
void lt_gguf_close(lt_gguf_file *f);
uint32_t lt_gguf_version(const lt_gguf_file *f);
size_t lt_gguf_kv_count(const lt_gguf_file *f);
const char *lt_gguf_kv_key(const lt_gguf_file *f, size_t i, size_t *len);
const lt_gguf_value *lt_gguf_kv_value(const lt_gguf_file *f, size_t i);
/* NULL when absent. */
const lt_gguf_value *lt_gguf_find(const lt_gguf_file *f, const char *key);
size_t lt_gguf_n_tensors(const lt_gguf_file *f);
const lt_gguf_tensor_info *lt_gguf_tensor(const lt_gguf_file *f, size_t i);
const lt_gguf_tensor_info *lt_gguf_find_tensor(const lt_gguf_file *f, const char *name);
/* Element i of a STRING array (its bytes and length). */
const char *lt_gguf_arr_str(const lt_gguf_value *v, uint64_t i, uint64_t *len);
#endif

/* safetensors.h - reading (mmap, validated as the reference implementation validates) and
 * writing (header padded to 8 bytes, {"format":"pt"} metadata, atomic) of safetensors files,
 * single or sharded with model.safetensors.index.json. */
#ifndef LT_SAFETENSORS_H
#define LT_SAFETENSORS_H
#include "core/core.h"

typedef enum lt_st_dtype {
    LT_ST_BOOL, LT_ST_U8, LT_ST_I8, LT_ST_I16, LT_ST_U16, LT_ST_F16, LT_ST_BF16, LT_ST_I32,
    LT_ST_U32, LT_ST_F32, LT_ST_F64, LT_ST_I64, LT_ST_U64, LT_ST_DTYPE_COUNT
} lt_st_dtype;

const char *lt_st_dtype_name(int dtype);  /* "BF16" */
int lt_st_dtype_size(int dtype);          /* bytes per element */
int lt_st_dtype_parse(const char *name);  /* -1 when unknown */

#define LT_ST_MAX_DIMS 8
typedef struct lt_st_tensor {
    const char *name;
    int32_t dtype;                 /* lt_st_dtype */
    int32_t ndim;
    int64_t shape[LT_ST_MAX_DIMS];
    int64_t numel;
    const uint8_t *data;           /* mmapped; valid while the set is open */
    size_t nbytes;
    const char *file;              /* the file it came from */
} lt_st_tensor;

typedef struct lt_st_set lt_st_set;
/* A model folder: model.safetensors, or model.safetensors.index.json and its shards. */
lt_status lt_st_open_dir(const char *dir, lt_st_set **out);
/* One file (adapter_model.safetensors ...). */
lt_status lt_st_open_file(const char *path, lt_st_set **out);
void lt_st_close(lt_st_set *set);
const lt_st_tensor *lt_st_find(const lt_st_set *set, const char *name);
size_t lt_st_count(const lt_st_set *set);
const lt_st_tensor *lt_st_at(const lt_st_set *set, size_t i);
/* __metadata__ value of the first file, or NULL */
const char *lt_st_metadata(const lt_st_set *set, const char *key);
/* Converts a F32/F16/BF16 tensor to f32 (n = numel). */
lt_status lt_st_to_f32(const lt_st_tensor *t, float *out);

typedef struct lt_st_writer lt_st_writer;
lt_status lt_st_writer_new(lt_st_writer **out);
/* copy=0: data must stay valid until write; copy=1: copied now */
lt_status lt_st_writer_add(lt_st_writer *w, const char *name, int32_t dtype, int32_t ndim, const int64_t *shape,
                           const void *data, int copy);
/* Makes lt_st_writer_write refuse (LT_ERR_NONFINITE, naming the tensor, writing nothing) any
 * F32/F64/F16/BF16 tensor holding a NaN or an infinity: what every loratune saver asks for. */
void lt_st_writer_require_finite(lt_st_writer *w);
lt_status lt_st_writer_set_metadata(lt_st_writer *w, const char *key, const char *value);
/* Writes atomically; "format":"pt" metadata is always present. */
lt_status lt_st_writer_write(lt_st_writer *w, const char *path, int overwrite);
size_t lt_st_writer_bytes(const lt_st_writer *w);
void lt_st_writer_free(lt_st_writer *w);

/* Streaming: the tensor's bytes are produced by fill(ctx, name, buf, nbytes) while the file is
 * written, one tensor at a time, so a multi-GB file never sits in memory whole. */
/* The file a set was opened from: the safetensors file, or the index of a sharded folder. */
const char *lt_st_source(const lt_st_set *set);

typedef lt_status (*lt_st_fill_fn)(void *ctx, const char *name, void *buf, size_t nbytes);
lt_status lt_st_writer_add_fill(lt_st_writer *w, const char *name, int32_t dtype, int32_t ndim, const int64_t *shape,
                                lt_st_fill_fn fill, void *ctx);
#endif

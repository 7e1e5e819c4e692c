/* core.h - internal helpers every part of the library uses: errors (thread-local last error),
 * logging through the host's callback, checked allocation, time, threads, atomic files.
 * Nothing here is exported (hidden visibility); the public API is include/loratune.h. */
#ifndef LT_CORE_H
#define LT_CORE_H

#include "loratune.h"
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#  define LT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#  define LT_PRINTF(a, b)
#endif

/* Sets the thread's last error to the formatted message and returns `status`, so that
 *   return lt_error(LT_ERR_FORMAT, "%s: header length %llu exceeds the file", path, n);
 * both records and propagates. */
lt_status lt_error(lt_status status, const char *fmt, ...) LT_PRINTF(2, 3);
/* Prepends "context: " to the current last error (keeps the status). */
lt_status lt_error_wrap(lt_status status, const char *fmt, ...) LT_PRINTF(2, 3);

/* Logging through the host's callback (nothing when none is set). */
void lt_log(int level, const char *fmt, ...) LT_PRINTF(2, 3);
#define LT_LOGE(...) lt_log(LT_LOG_ERROR, __VA_ARGS__)
#define LT_LOGW(...) lt_log(LT_LOG_WARN, __VA_ARGS__)
#define LT_LOGI(...) lt_log(LT_LOG_INFO, __VA_ARGS__)
#define LT_LOGD(...) lt_log(LT_LOG_DEBUG, __VA_ARGS__)

/* Checked allocation: on failure they set LT_ERR_OUT_OF_MEMORY with `what` and return NULL. */
void *lt_malloc(size_t bytes, const char *what);
void *lt_calloc(size_t n, size_t size, const char *what);
void *lt_realloc(void *p, size_t bytes, const char *what);
char *lt_strdup(const char *s);            /* NULL-safe; NULL on OOM */
char *lt_strndup(const char *s, size_t n);

/* Propagate a failing status. */
#define LT_TRY(expr) do { lt_status lt__s = (expr); if (lt__s < 0) return lt__s; } while (0)
#define LT_CHECK_ARG(cond, ...) do { if (!(cond)) return lt_error(LT_ERR_INVALID_ARGUMENT, __VA_ARGS__); } while (0)

/* Seconds from a monotonic clock. */
double lt_time_s(void);
/* Number of CPU threads to use for `requested` (0 = all cores). */
int lt_threads(int requested);

/* Runs fn(ctx, i) for i in [0, n) on up to n_threads threads (static chunks; i order within a
 * thread is ascending). n_threads <= 1 runs inline. */
typedef void (*lt_parallel_fn)(void *ctx, int64_t i);
void lt_parallel_for(int64_t n, int n_threads, lt_parallel_fn fn, void *ctx);

/* ---- files ---- */
/* Reads a whole file (NUL-terminated). */
lt_status lt_read_file(const char *path, char **data, size_t *len);
bool lt_file_exists(const char *path);
bool lt_dir_exists(const char *path);
/* mkdir -p */
lt_status lt_mkdirs(const char *path);
/* path join into a fresh string ("a" + "b" -> "a/b"); NULL on OOM */
char *lt_path_join(const char *dir, const char *name);

/* ---- whole-or-absent outputs (fs.c) ---- */
/* Atomic file write: data goes to "<path>.tmp-<pid>-<n>" (write(2)), fsync, rename over path,
 * fsync of the folder. overwrite=0 refuses an existing path with LT_ERR_EXISTS. On failure
 * nothing is left. */
typedef struct lt_atomic_file lt_atomic_file;
lt_status lt_atomic_open(const char *path, int overwrite, lt_atomic_file **out);
lt_status lt_atomic_write(lt_atomic_file *f, const void *data, size_t len);
lt_status lt_atomic_commit(lt_atomic_file *f); /* closes, renames, frees */
void lt_atomic_abort(lt_atomic_file *f);       /* closes, unlinks, frees; NULL-safe */
lt_status lt_write_file_atomic(const char *path, const void *data, size_t len, int overwrite);
/* write(2) until done (EINTR retried); the message names `what`. */
lt_status lt_fs_write_all(int fd, const void *data, size_t len, const char *what);
/* A fresh temporary name beside path: "<path>.tmp-<pid>-<n>" (caller frees). */
char *lt_fs_tmp_name(const char *path);
lt_status lt_fs_sync_dir(const char *dir);
/* rm -r without following links; a missing path is LT_OK. */
lt_status lt_fs_remove_tree(const char *path);
int lt_fs_dir_is_empty(const char *path);
/* A folder of several files: lt_fs_dir_begin creates "<dir>.tmp-<pid>-<n>/" (and dir's parent);
 * fill it, then lt_fs_dir_commit renames it to dir as one, replacing an existing dir (exchange,
 * or moved aside and removed); on failure the temporary is removed. Both take ownership of
 * *tmp_dir / tmp_dir. lt_fs_dir_abort removes it (NULL-safe) and keeps the last error. */
lt_status lt_fs_dir_begin(const char *dir, char **tmp_dir);
lt_status lt_fs_dir_commit(char *tmp_dir, const char *dir);
void lt_fs_dir_abort(char *tmp_dir);
/* A name a killed run may leave: "<x>.tmp-<pid>-<n>", "<x>.old-<pid>-<n>", "<x>.tmp.<pid>". */
int lt_fs_is_temp_name(const char *name);
/* Removes the temporaries in dir left by processes that are gone (only those of <only_base>
 * when not NULL), restoring a ".old-" folder whose final name is missing; logs each (warning).
 * Returns how many were removed. Keeps the last error. */
int lt_fs_clean_stale(const char *dir, const char *only_base);
/* The outermost missing part of path ("a/b" for "a/b/c/f" when only "a" exists), or NULL when
 * path exists: what a failed command that created it removes again. Caller frees. */
char *lt_fs_first_missing(const char *path);

/* ---- half precision ---- */
float lt_bf16_to_f32(uint16_t h);
uint16_t lt_f32_to_bf16(float f);   /* round to nearest even (as torch) */
float lt_f16_to_f32(uint16_t h);
uint16_t lt_f32_to_f16(float f);    /* round to nearest even */
/* f rounded to the lt_dtype `dtype` (LT_DTYPE_BF16 / LT_DTYPE_F16; f itself otherwise), as torch
 * rounds a Python float made a tensor of that dtype */
float lt_round_to_dtype(float f, int dtype);

#endif

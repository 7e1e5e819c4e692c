/* error.c - status names, the thread-local last error, and logging through the host's callback. */
#include "core/core.h"
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define LT_ERR_CAP 4096
static _Thread_local char lt_err_buf[LT_ERR_CAP];

const char *lt_status_string(lt_status s) {
    switch (s) {
    case LT_OK: return "LT_OK: success";
    case LT_DONE: return "LT_DONE: finished";
    case LT_STOPPED: return "LT_STOPPED: stopped by a callback";
    case LT_ERR_INVALID_ARGUMENT: return "LT_ERR_INVALID_ARGUMENT: invalid argument";
    case LT_ERR_IO: return "LT_ERR_IO: input/output error";
    case LT_ERR_FORMAT: return "LT_ERR_FORMAT: malformed file";
    case LT_ERR_UNSUPPORTED: return "LT_ERR_UNSUPPORTED: not supported";
    case LT_ERR_OUT_OF_MEMORY: return "LT_ERR_OUT_OF_MEMORY: out of memory";
    case LT_ERR_CUDA: return "LT_ERR_CUDA: CUDA failure";
    case LT_ERR_NOT_FOUND: return "LT_ERR_NOT_FOUND: not found";
    case LT_ERR_STATE: return "LT_ERR_STATE: call not valid in this state";
    case LT_ERR_DATA: return "LT_ERR_DATA: bad training data";
    case LT_ERR_EXISTS: return "LT_ERR_EXISTS: output exists";
    case LT_ERR_VERSION: return "LT_ERR_VERSION: version mismatch";
    case LT_ERR_BUFFER_TOO_SMALL: return "LT_ERR_BUFFER_TOO_SMALL: buffer too small";
    case LT_ERR_UTF8: return "LT_ERR_UTF8: invalid UTF-8";
    case LT_ERR_NCCL: return "LT_ERR_NCCL: NCCL failure";
    case LT_ERR_NO_DEVICE: return "LT_ERR_NO_DEVICE: no usable GPU";
    case LT_ERR_NONFINITE: return "LT_ERR_NONFINITE: a non-finite (NaN or infinite) value";
    case LT_ERR_INTERNAL: return "LT_ERR_INTERNAL: internal error";
    }
    return "unknown lt_status";
}

const char *lt_last_error(void) { return lt_err_buf; }
void lt_clear_error(void) { lt_err_buf[0] = 0; }

lt_status lt_error(lt_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lt_err_buf, LT_ERR_CAP, fmt, ap);
    va_end(ap);
    return status;
}

lt_status lt_error_wrap(lt_status status, const char *fmt, ...) {
    char prev[LT_ERR_CAP], ctx[1024];
    memcpy(prev, lt_err_buf, LT_ERR_CAP);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    size_t a = strlen(ctx), b = strlen(prev);
    if (a > LT_ERR_CAP - 3) a = LT_ERR_CAP - 3;
    if (a + 2 + b > LT_ERR_CAP - 1) b = LT_ERR_CAP - 1 - a - 2;
    memcpy(lt_err_buf, ctx, a);
    memcpy(lt_err_buf + a, ": ", 2);
    memcpy(lt_err_buf + a + 2, prev, b);
    lt_err_buf[a + 2 + b] = 0;
    return status;
}

static pthread_mutex_t lt_log_mu = PTHREAD_MUTEX_INITIALIZER;
static lt_log_fn lt_log_cb;
static void *lt_log_ud;
static int lt_log_max = LT_LOG_INFO;

void lt_set_log_callback(lt_log_fn fn, int32_t max_level, void *user_data) {
    pthread_mutex_lock(&lt_log_mu);
    lt_log_cb = fn;
    lt_log_ud = user_data;
    lt_log_max = max_level;
    pthread_mutex_unlock(&lt_log_mu);
}

void lt_log(int level, const char *fmt, ...) {
    if (!lt_log_cb || level > lt_log_max) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&lt_log_mu);
    if (lt_log_cb) lt_log_cb(level, msg, lt_log_ud);
    pthread_mutex_unlock(&lt_log_mu);
}

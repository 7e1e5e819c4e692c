/* callbacks.c - C trampolines with the library's callback signatures, calling the Go
 * functions exported in callbacks.go. */
#include "_cgo_export.h"

int lt_go_step_tramp(const lt_metrics *m, void *user_data) {
    return goStepCallback((lt_metrics *)m, user_data);
}
int lt_go_stream_tramp(const char *piece, size_t len, int32_t token, void *user_data) {
    return goStreamCallback((char *)piece, len, token, user_data);
}
int lt_go_progress_tramp(const char *what, uint64_t done, uint64_t total, void *user_data) {
    return goProgressCallback((char *)what, done, total, user_data);
}

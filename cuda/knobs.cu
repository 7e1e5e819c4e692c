/* knobs.cu - lt_cuda_knobs_read: the only place the CUDA backend reads LT_CUDA_* variables
 * (knobs.h lists them and their defaults). */
#include "knobs.h"
#include <stdlib.h>

/* the integer value of variable name, or dflt when it is unset, empty or not a whole number */
static int env_int(const char *name, int dflt) {
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end = NULL;
    const long x = strtol(v, &end, 10);
    if (end == v || *end) return dflt;
    return x < -1000000 ? -1000000 : x > 1000000 ? 1000000 : (int)x;
}

static int clamp(int x, int lo, int hi) { return x < lo ? lo : x > hi ? hi : x; }

void lt_cuda_knobs_read(lt_cuda_knobs *k) {
    k->profile = env_int("LT_CUDA_PROFILE", 0);
    if (k->profile < 0) k->profile = 0;
    k->synctime = env_int("LT_CUDA_SYNCTIME", 0);
    if (k->synctime < 0) k->synctime = 0;
    k->graphs = env_int("LT_CUDA_GRAPHS", 1) != 0;
    k->gemm_tune = env_int("LT_CUDA_GEMM_TUNE", 1) != 0;
    k->gemm_algos = clamp(env_int("LT_CUDA_GEMM_ALGOS", LT_CUDA_GEMM_ALGOS_DEFAULT), 1, LT_CUDA_GEMM_ALGOS_MAX);
    const int wc = env_int("LT_CUDA_WCACHE", 1);
    k->wcache = wc == 2 ? 2 : wc != 0; /* 2 resident; any other non-zero value on, as before */
}

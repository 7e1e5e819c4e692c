/* nccl_absent.c - the NCCL collective of a CPU-only build (the CUDA build has cuda/dist_nccl.cu). */
#ifndef LT_HAVE_CUDA
#include "dist/dist.h"

lt_status lt_coll_nccl_new(lt_backend *be, const uint8_t id[LT_NCCL_ID_BYTES], int32_t rank, int32_t world,
                           double timeout_s, lt_coll **out) {
    (void)be; (void)id; (void)rank; (void)world; (void)timeout_s;
    *out = NULL;
    return lt_error(LT_ERR_UNSUPPORTED, "data parallel on CUDA needs NCCL; this libloratune is CPU-only");
}
#endif

/* cuda_absent.c - the CUDA entry points of a CPU-only build: they say so. */
#ifndef LT_HAVE_CUDA
#include "backend/backend.h"
#include "core/core.h"

lt_status lt_backend_cuda_create(int device_index, int compute_dtype, lt_backend **out) {
    (void)device_index; (void)compute_dtype;
    *out = NULL;
    return lt_error(LT_ERR_UNSUPPORTED, "this libloratune was built without the CUDA backend "
                    "(rebuild with -DLT_CUDA=ON where nvcc is installed, or use --device cpu)");
}
int32_t lt_cuda_device_count(void) { return 0; }
long lt_cuda_graph_launches(lt_backend *be); /* test hook (cuda/cuda_test.h): none without CUDA */
long lt_cuda_graph_launches(lt_backend *be) { (void)be; return 0; }
lt_status lt_cuda_device_info(int32_t index, char *name, size_t cap, int32_t *cc, uint64_t *total, uint64_t *free_b) {
    (void)index; (void)name; (void)cap; (void)cc; (void)total; (void)free_b;
    return lt_error(LT_ERR_NO_DEVICE, "no CUDA device: this libloratune was built without the CUDA backend");
}
lt_status lt_nccl_get_unique_id(uint8_t id[LT_NCCL_ID_BYTES]) {
    (void)id;
    return lt_error(LT_ERR_UNSUPPORTED, "NCCL needs the CUDA backend; this libloratune is CPU-only");
}
#endif

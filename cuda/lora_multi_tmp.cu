/* TEMPORARY (coordinator): weak loops of the single kernels; lora.cu's fused definitions override them */
#include "cuda_common.h"
__attribute__((weak)) lt_status lt_cuda_lora_rowdot_multi(lt_backend *be, int n, void *const *y, const void *x, const void *const *W,
                                    int64_t N, int64_t M, int64_t R, float alpha, float p, uint64_t seed,
                                    const uint64_t *streams) {
    for (int s = 0; s < n; s++) LT_TRY(lt_cuda_lora_rowdot(be, y[s], x, W[s], N, M, R, alpha, p, seed, streams[s]));
    return LT_OK;
}
__attribute__((weak)) lt_status lt_cuda_lora_wgrad_multi(lt_backend *be, int n, float *const *G, int64_t sm, int64_t sr, const void *x,
                                   const void *const *coef, int64_t N, int64_t M, int64_t R, float alpha, float p,
                                   uint64_t seed, const uint64_t *streams, float *part, int nchunks) {
    for (int s = 0; s < n; s++)
        LT_TRY(lt_cuda_lora_wgrad(be, G[s], sm, sr, x, coef[s], N, M, R, alpha, p, seed, streams[s], part, nchunks));
    return LT_OK;
}
__attribute__((weak)) lt_status lt_cuda_lora_addmul_multi(lt_backend *be, int n, void *y, const void *const *coef, const float *const *W,
                                    int64_t wr, int64_t wm, int64_t N, int64_t M, int64_t R, float alpha, float p,
                                    uint64_t seed, const uint64_t *streams) {
    for (int s = 0; s < n; s++)
        LT_TRY(lt_cuda_lora_addmul(be, y, coef[s], W[s], wr, wm, N, M, R, alpha, p, seed, streams[s]));
    return LT_OK;
}

/* family.h - the model-family ops of the CUDA backend (family.cu), installed in the op table by
 * cuda_backend.cu. */
#ifndef LT_CUDA_FAMILY_H
#define LT_CUDA_FAMILY_H
#include "backend/backend.h"

#ifdef __cplusplus
extern "C" {
#endif
lt_status lt_cuda_rope_freq_fwd(lt_backend *be, void *x, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                                float theta, const float *inv_freq, float af);
lt_status lt_cuda_rope_freq_bwd(lt_backend *be, void *dx, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                                float theta, const float *inv_freq, float af);
lt_status lt_cuda_glu_fwd(lt_backend *be, int act, void *out, const void *gate, const void *up, int64_t n);
lt_status lt_cuda_glu_bwd(lt_backend *be, int act, void *dgate, void *dup, const void *dout, const void *gate,
                          const void *up, int64_t n);
lt_status lt_cuda_scale_act(lt_backend *be, void *x, int64_t n, float s);
#ifdef __cplusplus
}
#endif
#endif

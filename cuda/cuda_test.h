/* cuda_test.h - internal hooks of the CUDA backend for its tests (C-callable): the raw NF4
 * state of a weight, to compare bit for bit with the CPU reference quantizer, and the switch
 * that forces the portable attention kernels. Not part of the public API. */
#ifndef LT_CUDA_TEST_H
#define LT_CUDA_TEST_H
#include "backend/backend.h"
#ifdef __cplusplus
extern "C" {
#endif
/* Copies W's NF4 state to the host. packed[(n+1)/2]; with double quant absmax_u8[nblocks],
 * nested_absmax[ceil(nblocks/256)] and *offset, else absmax_f32[nblocks]. Unused outputs may be
 * NULL. LT_ERR_INVALID_ARGUMENT for a 16-bit weight. */
lt_status lt_cuda_weight_nf4_state(lt_backend *be, const lt_bweight *W, uint8_t *packed, float *absmax_f32,
                                   uint8_t *absmax_u8, float *nested_absmax, float *offset, int *double_quant);
/* W in the act type into dst: rows ld elements apart from column off (ld == cols, off == 0: the
 * contiguous path the plain products take, else the wider rows of the grouped products) */
lt_status lt_cuda_weight_test_16(lt_backend *be, const lt_bweight *W, void *dst, int64_t ld, int64_t off);
void lt_cuda_attention_force_portable(int on);
/* 1: the attention backward takes the v6 kernel (k_flash_bwd), as on cards whose shared memory
 * is too small for the v7 one (A100, sm_86/89), so that an H100 tests it too */
void lt_cuda_attention_force_bwd_v6(int on);
/* Selects the skinny LoRA kernels of lora.cu (1, the default) or dropout + cuBLAS (0, the path
 * of shapes those kernels do not serve). */
void lt_cuda_lora_set_skinny(int on);
/* The 16-bit copy of the f32 matrix src (rows, cols), transposed when transpose, as the LoRA
 * products get it (made now when missing or stale); and every copy made again from its source
 * (the refresh that the optimizer kernels' own writes of the copies replace). */
lt_status lt_cuda_w16_test_copy(lt_backend *be, const float *src, int64_t rows, int64_t cols, int transpose,
                                const void **out);
lt_status lt_cuda_w16_test_remake(lt_backend *be);
/* How many passes ran as a replayed CUDA graph on this backend (graph_launch calls). */
long lt_cuda_graph_launches(lt_backend *be);
#ifdef __cplusplus
}
#endif
#endif

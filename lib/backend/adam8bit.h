/* adam8bit.h - the CPU reference of bitsandbytes' 8-bit AdamW (kOptimizerStatic8bit2StateBlockwise,
 * blocksize 256), shared by the CPU backend and the CUDA backend's tests. Internal. */
#ifndef LT_ADAM8BIT_H
#define LT_ADAM8BIT_H
#include <stdint.h>

#define LT_ADAM8BIT_BLOCK 256

/* One step on n parameters (t >= 1). state1/state2 u8 [n] (codes of the signed / unsigned dynamic
 * maps), absmax1/absmax2 f32 [ceil(n/256)]; all zero before the first step, as bnb starts them.
 * Follows the kernel: a non-finite g zeroes that element's m and v and leaves p alone; m, v
 * dequantized, updated, the block's new absmax taken (the padding of a short last block counts,
 * as on the GPU), p += -lr*sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + sqrt(1-b2^t)*eps), then
 * p *= 1 - lr*wd (decay after the step), then m, v re-quantized with bnb's quantize_2D (and m's
 * code nudged one step when rounding flipped its sign). IEEE division where the kernel uses
 * __fdividef / __powf. n_threads spreads blocks over threads; results do not depend on it. */
void lt_adamw8bit_ref(float *p, const float *g, uint8_t *state1, uint8_t *state2, float *absmax1, float *absmax2,
                      int64_t n, float lr, float beta1, float beta2, float eps, float wd, int64_t t, int n_threads);

/* bnb's 32-bit Adam (kOptimizer32bit2State, ADAM), which bnb.optim.AdamW8bit uses for tensors
 * under 4096 elements: fp32 m, v (start at 0), the same update and decay-after-step as the 8-bit
 * kernel (max_unorm 0, gnorm_scale 1, skip_zeros false). Not torch's AdamW order. */
void lt_adamw32_bnb_ref(float *p, const float *g, float *m, float *v, int64_t n, float lr, float beta1, float beta2,
                        float eps, float wd, int64_t t);

/* bnb's quantize_2D<SIGNED>: code index of x (already divided by absmax). */
uint8_t lt_quantize_2d_ref(const float code[256], int is_signed, float x);
#endif

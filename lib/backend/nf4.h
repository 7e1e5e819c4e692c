/* nf4.h - bit-exact CPU twins of bitsandbytes' block-wise quantizers: NF4 (4-bit, blocksize 64
 * for Hugging Face) and the 8-bit dynamic map used by double quantization of the NF4 absmax and
 * by the 8-bit optimizer. The CPU backend uses them to reproduce a quantized base's numerics;
 * the CUDA backend's tests compare its kernels with them. Internal (not exported). */
#ifndef LT_NF4_H
#define LT_NF4_H
#include <stdint.h>

/* bnb's dQuantizeNF4 decision tree: the NF4 index (0..15) of x, x already divided by absmax.
 * NaN maps to 0, as on the GPU (every comparison is false). */
uint8_t lt_nf4_index_ref(float x);

/* x(n) -> packed((n+1)/2) bytes, absmax(ceil(n/blocksize)), like bnb quantize_4bit(nf4):
 * absmax = max|x| per block, each x multiplied by 1/absmax (f32), byte k = q[2k] << 4 | q[2k+1]
 * (the high nibble holds the even element; an odd tail is padded with the code of 0). */
void lt_nf4_quantize_ref(const float *x, int64_t n, int blocksize, uint8_t *packed, float *absmax);
/* out(n) = code[nibble] * absmax[block] in f32; code NULL means lt_nf4_code. */
void lt_nf4_dequantize_ref(const uint8_t *packed, const float *absmax, int64_t n, int blocksize,
                           const float *code, float *out);

/* bnb's dQuantize<0>: index of the code nearest to x (binary search over the sorted 256-entry
 * map, then the midpoint rule), x already divided by absmax. */
uint8_t lt_dynamic_index_ref(const float code[256], float x);
/* bnb quantize_blockwise (kQuantizeBlockwise General8bit): absmax(ceil(n/blocksize)) = max|x|,
 * out(n) = index of x * (1/absmax). */
void lt_quantize_blockwise_dynamic_ref(const float *x, int64_t n, int blocksize, const float code[256],
                                       uint8_t *out, float *absmax);
/* out(n) = code[q] * absmax[block] */
void lt_dequantize_blockwise_dynamic_ref(const uint8_t *q, const float *absmax, int64_t n, int blocksize,
                                         const float code[256], float *out);

/* Double quantization of NF4 absmax (bnb compress_statistics): offset = mean(absmax) (f32 of a
 * f64 sum), then quantize_blockwise(absmax - offset, 256) with the signed dynamic map.
 * absmax_u8(nblocks), nested_absmax(ceil(nblocks/256)). */
void lt_nf4_double_quant_ref(const float *absmax, int64_t nblocks, uint8_t *absmax_u8, float *nested_absmax,
                             float *offset);
/* absmax(nblocks) = nested_code[u8] * nested_absmax[i/256] + offset; nested_code NULL means the
 * signed dynamic map. */
void lt_nf4_double_dequant_ref(const uint8_t *absmax_u8, const float *nested_absmax, const float *nested_code,
                               float offset, int64_t nblocks, float *absmax);
#endif

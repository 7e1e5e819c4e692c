/* nf4_ref.c - bitsandbytes' NF4 and 8-bit block-wise (de)quantization on the CPU, bit for bit:
 * the same decision tree, reciprocal multiply and midpoint rules as csrc/kernels.cu
 * (kQuantizeBlockwise, dQuantizeNF4, dQuantize<0>, kDequantizeBlockwise). */
#include "backend/nf4.h"
#include "backend/backend.h"
#include "backend/nf4_tree.h"
#include <math.h>

uint8_t lt_nf4_index_ref(float x) { return lt_nf4_tree(x); }

void lt_nf4_quantize_ref(const float *x, int64_t n, int blocksize, uint8_t *packed, float *absmax) {
    int64_t nblocks = (n + blocksize - 1) / blocksize;
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t lo = b * blocksize, hi = lo + blocksize < n ? lo + blocksize : n;
        float amax = 0.0f; /* fmaxf(-FLT_MAX, |x|) over a non-empty block is the same */
        for (int64_t i = lo; i < hi; i++) amax = fmaxf(amax, fabsf(x[i]));
        absmax[b] = amax;
        const float inv = 1.0f / amax; /* the kernel multiplies by the reciprocal */
        /* blocksize is even, so pairs never straddle blocks; a missing odd tail loads as 0 */
        for (int64_t i = lo; i < hi; i += 2) {
            uint8_t hi4 = lt_nf4_index_ref(x[i] * inv);
            uint8_t lo4 = lt_nf4_index_ref((i + 1 < n ? x[i + 1] : 0.0f) * inv);
            packed[i / 2] = (uint8_t)(hi4 << 4 | lo4);
        }
    }
}

void lt_nf4_dequantize_ref(const uint8_t *packed, const float *absmax, int64_t n, int blocksize,
                           const float *code, float *out) {
    if (!code) code = lt_nf4_code;
    for (int64_t i = 0; i < n; i++) {
        uint8_t byte = packed[i / 2];
        uint8_t q = (i & 1) ? (byte & 0x0F) : (byte >> 4);
        out[i] = code[q] * absmax[i / blocksize];
    }
}

uint8_t lt_dynamic_index_ref(const float code[256], float x) {
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = -1.0f, upper = 1.0f;
    float val = code[pivot];
    for (int i = 64; i > 0; i >>= 1) {
        if (x > val) { lower_pivot = pivot; lower = val; pivot += i; }
        else { upper_pivot = pivot; upper = val; pivot -= i; }
        val = code[pivot];
    }
    if (upper_pivot == 255) upper = code[upper_pivot];
    if (lower_pivot == 0) lower = code[lower_pivot];
    if (x > val) {
        float midpoint = (upper + val) * 0.5f;
        return (uint8_t)(x > midpoint ? upper_pivot : pivot);
    } else {
        float midpoint = (lower + val) * 0.5f;
        return (uint8_t)(x < midpoint ? lower_pivot : pivot);
    }
}

void lt_quantize_blockwise_dynamic_ref(const float *x, int64_t n, int blocksize, const float code[256],
                                       uint8_t *out, float *absmax) {
    int64_t nblocks = (n + blocksize - 1) / blocksize;
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t lo = b * blocksize, hi = lo + blocksize < n ? lo + blocksize : n;
        float amax = 0.0f;
        for (int64_t i = lo; i < hi; i++) amax = fmaxf(amax, fabsf(x[i]));
        absmax[b] = amax;
        const float inv = 1.0f / amax;
        for (int64_t i = lo; i < hi; i++) out[i] = lt_dynamic_index_ref(code, x[i] * inv);
    }
}

void lt_dequantize_blockwise_dynamic_ref(const uint8_t *q, const float *absmax, int64_t n, int blocksize,
                                         const float code[256], float *out) {
    for (int64_t i = 0; i < n; i++) out[i] = code[q[i]] * absmax[i / blocksize];
}

void lt_nf4_double_quant_ref(const float *absmax, int64_t nblocks, uint8_t *absmax_u8, float *nested_absmax,
                             float *offset) {
    float code[256];
    lt_dynamic_map(1, code);
    double sum = 0;
    for (int64_t i = 0; i < nblocks; i++) sum += absmax[i];
    const float mean = nblocks > 0 ? (float)(sum / (double)nblocks) : 0.0f;
    *offset = mean;
    /* quantize absmax - offset in chunks of 256 without a temporary the size of nblocks */
    for (int64_t b = 0; b * 256 < nblocks; b++) {
        int64_t lo = b * 256, hi = lo + 256 < nblocks ? lo + 256 : nblocks;
        float centred[256];
        for (int64_t i = lo; i < hi; i++) centred[i - lo] = absmax[i] - mean;
        lt_quantize_blockwise_dynamic_ref(centred, hi - lo, 256, code, absmax_u8 + lo, nested_absmax + b);
    }
}

void lt_nf4_double_dequant_ref(const uint8_t *absmax_u8, const float *nested_absmax, const float *nested_code,
                               float offset, int64_t nblocks, float *absmax) {
    float code[256];
    if (!nested_code) { lt_dynamic_map(1, code); nested_code = code; }
    for (int64_t i = 0; i < nblocks; i++) absmax[i] = nested_code[absmax_u8[i]] * nested_absmax[i / 256] + offset;
}

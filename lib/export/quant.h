/* quant.h - ggml's block quantizers for GGUF export (Q8_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) and
 * the F16/BF16 conversions, ported from llama.cpp's reference algorithms (ggml-quants.c
 * quantize_row_*_ref) with the same float32 operation order, so that the same input gives the
 * same bytes as llama-quantize without an imatrix. Block layouts: specs/gguf-export.md §5. */
#ifndef LT_EXPORT_QUANT_H
#define LT_EXPORT_QUANT_H
#include "core/core.h"
#include "io/gguf.h"

/* Quantizes one row of n floats (n a multiple of the type's block size) into out
 * (lt_ggml_row_size(type, n) bytes). type is an LT_GGML_* id; F32/F16/BF16 are plain copies. */
lt_status lt_quant_row(int type, const float *x, void *out, int64_t n);
/* Whether lt_quant_row handles the type. */
int lt_quant_supported(int type);

/* rows x n floats -> rows rows of `type`, rows spread over n_threads (row results do not depend
 * on the thread count). */
lt_status lt_quant_rows(int type, const float *x, void *out, int64_t rows, int64_t n, int n_threads);

/* Dequantizes a row (the inverse used by tests and for dequantized round trips). */
lt_status lt_dequant_row(int type, const void *in, float *y, int64_t n);

/* ggml's fp16 rounding (round to nearest even). */
uint16_t lt_quant_fp16(float f);
#endif

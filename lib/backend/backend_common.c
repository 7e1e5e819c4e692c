/* backend_common.c - what every backend shares: lt_backend_free, bitsandbytes' NF4 code table
 * and its 8-bit dynamic maps (create_dynamic_map), computed as torch does in float32. */
#include "backend/backend.h"
#include <math.h>
#include <stdlib.h>

void lt_backend_free(lt_backend *be) {
    if (be && be->ops.destroy) be->ops.destroy(be);
}

/* bnb get_4bit_type("nf4") normalised by its max (1.0); index = the 4-bit code. */
const float lt_nf4_code[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
};

/* torch.linspace(0.1, 1, steps, dtype=float32) on the CPU (RangeFactoriesKernel.cpp, scalar
 * loop): a float step, start + step*i for the lower half and end - step*(steps-1-i) for the upper
 * half. torch's x86 kernels are built with FMA, and the compiler fuses those expressions into one
 * rounding; fmaf reproduces that. (Without the fusion 42 of the 256 signed entries come out one
 * ulp off a dump of bnb's table; with it all 256 match.) */
static void linspace_f32(int steps, float *out) {
    const float start = 0.1f, end = 1.0f;
    const float step = (end - start) / (float)(steps - 1);
    const int halfway = steps / 2;
    for (int i = 0; i < steps; i++)
        out[i] = i < halfway ? fmaf(step, (float)i, start) : fmaf(-step, (float)(steps - i - 1), end);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* create_dynamic_map(signed, max_exponent_bits=7, total_bits=8): for exponent i = 0..6 the
 * means of linspace(0.1, 1, k+1) (k = 2^i signed, 2^(i+1) unsigned) times 10^(i-6) (a Python
 * float turned into a float32 scalar by torch's mul), their negatives when signed, then 0 and 1,
 * sorted. No additional items: 2^(7-7) - 1 = 0. */
void lt_dynamic_map(int is_signed, float out[256]) {
    int n = 0;
    float b[130];
    for (int i = 0; i < 7; i++) {
        int k = is_signed ? (1 << i) : (1 << (i + 1));
        linspace_f32(k + 1, b);
        /* Python's 10 ** (i-6): pow(10.0, i-6), correctly rounded for these exponents */
        static const double pw[7] = {1e-06, 1e-05, 0.0001, 0.001, 0.01, 0.1, 1.0};
        const double p10 = pw[i];
        const float s = (float)p10;
        for (int j = 0; j < k; j++) {
            const float mean = (b[j] + b[j + 1]) / 2.0f;
            out[n++] = s * mean;
            if (is_signed) out[n++] = (-s) * mean;
        }
    }
    out[n++] = 0.0f;
    out[n++] = 1.0f;
    qsort(out, 256, sizeof(float), cmp_float);
}

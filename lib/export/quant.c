/* quant.c - block quantizers following llama.cpp's reference algorithms (ggml-quants.c,
 * quantize_row_{q8_0,q5_0,q5_1,q4_K,q5_K,q6_K}_ref with make_qkx2_quants / make_qx_quants).
 * Byte-identical output needs the reference's exact float32 order: every expression below keeps
 * the reference's association, and contraction into FMA is switched off for this file. */
#if defined(__clang__)
#  pragma clang fp contract(off)
#elif defined(__GNUC__)
#  pragma GCC optimize("fp-contract=off")
#  pragma GCC diagnostic ignored "-Wpsabi" /* 32-byte vectors between inlined helpers only */
#endif
#include "export/quant.h"
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define QK_K 256
#define GROUP_MAX_EPS 1e-15f

uint16_t lt_quant_fp16(float f) { return lt_f32_to_f16(f); }
static float lt_fp16_f32(uint16_t h) { return lt_f16_to_f32(h); }

/* Round half to even via the 1.5*2^23 magic add (valid for |x| <= 4194303), as ggml does. */
static inline int lt_nearest_int(float x) {
    float v = x + 12582912.f;
    int32_t i;
    memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

static inline void lt_put_f16(uint8_t *p, float f) {
    uint16_t h = lt_quant_fp16(f);
    memcpy(p, &h, 2);
}
static inline float lt_get_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return lt_fp16_f32(h);
}

/* ---- Q8_0: { f16 d; int8 qs[32] } ------------------------------------------------------- */
static void lt_q8_0_row(const float *x, uint8_t *y, int64_t n) {
    for (int64_t b = 0; b < n / 32; b++, x += 32, y += 34) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) {
            float a = fabsf(x[j]);
            amax = amax > a ? amax : a;
        }
        const float d = amax / 127;
        const float id = d ? 1.0f / d : 0.0f;
        lt_put_f16(y, d);
        for (int j = 0; j < 32; j++) y[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
    }
}

/* ---- Q5_0: { f16 d; u32 qh; u8 qs[16] } ------------------------------------------------- */
static void lt_q5_0_row(const float *x, uint8_t *y, int64_t n) {
    for (int64_t b = 0; b < n / 32; b++, x += 32, y += 22) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 32; j++) {
            if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
        }
        const float d = max / -16;
        const float id = d ? 1.0f / d : 0.0f;
        lt_put_f16(y, d);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            const float x0 = x[j] * id, x1 = x[16 + j] * id;
            int8_t t0 = (int8_t)(x0 + 16.5f), t1 = (int8_t)(x1 + 16.5f);
            uint8_t q0 = (uint8_t)(t0 < 31 ? t0 : 31), q1 = (uint8_t)(t1 < 31 ? t1 : 31);
            y[6 + j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= ((q0 & 0x10u) >> 4) << (j + 0);
            qh |= ((q1 & 0x10u) >> 4) << (j + 16);
        }
        memcpy(y + 2, &qh, 4);
    }
}

/* ---- Q5_1: { f16 d; f16 m; u32 qh; u8 qs[16] } ------------------------------------------ */
static void lt_q5_1_row(const float *x, uint8_t *y, int64_t n) {
    for (int64_t b = 0; b < n / 32; b++, x += 32, y += 24) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < 32; j++) {
            if (x[j] < min) min = x[j];
            if (x[j] > max) max = x[j];
        }
        const float d = (max - min) / 31;
        const float id = d ? 1.0f / d : 0.0f;
        lt_put_f16(y, d);
        lt_put_f16(y + 2, min);
        uint32_t qh = 0;
        for (int j = 0; j < 16; j++) {
            const float x0 = (x[j] - min) * id, x1 = (x[16 + j] - min) * id;
            const uint8_t q0 = (uint8_t)(x0 + 0.5f), q1 = (uint8_t)(x1 + 0.5f);
            y[8 + j] = (uint8_t)((q0 & 0x0F) | ((q1 & 0x0F) << 4));
            qh |= ((q0 & 0x10u) >> 4) << (j + 0);
            qh |= ((q1 & 0x10u) >> 4) << (j + 16);
        }
        memcpy(y + 4, &qh, 4);
    }
}

/* Asymmetric scale+min fit of n values to [0, nmax] by weighted least squares, searching
 * nstep+1 candidate inverse scales (ggml make_qkx2_quants, use_mad = false). Returns the scale;
 * *the_min receives -min (>= 0). */
#if defined(__GNUC__)
__attribute__((unused)) /* the vector version below replaces it where GCC vectors exist */
#endif
static float lt_make_qkx2(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min,
                          uint8_t *Laux, float rmin, float rdelta, int nstep) {
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        float wi = w[i];
        sum_w += wi;
        sum_x += wi * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min);
    float scale = 1 / iscale;
    float best_err = 0;
    for (int i = 0; i < n; ++i) {
        int l = lt_nearest_int(iscale * (x[i] - min));
        L[i] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        float diff = scale * L[i] + min - x[i];
        diff = diff * diff;
        best_err += w[i] * diff;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = lt_nearest_int(iscale * (x[i] - min));
            l = l < 0 ? 0 : l > nmax ? nmax : l;
            Laux[i] = (uint8_t)l;
            float wi = w[i];
            sum_l += wi * l;
            sum_l2 += wi * l * l;
            sum_xl += wi * l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float err = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * Laux[i] + this_min - x[i];
                diff = diff * diff;
                err += w[i] * diff;
            }
            if (err < best_err) {
                for (int i = 0; i < n; ++i) L[i] = Laux[i];
                best_err = err;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/* Symmetric scale fit of n values to [-nmax, nmax-1] weighted by x^2, trying 18 nudged inverse
 * scales (ggml make_qx_quants with rmse_type 1 and no importance weights). L gets l + nmax. */
#if defined(__GNUC__)
__attribute__((unused))
#endif
static float lt_make_qx(int n, int nmax, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        float ax = fabsf(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    if (amax < GROUP_MAX_EPS) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = lt_nearest_int(iscale * x[i]);
        l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
        L[i] = (int8_t)(l + nmax);
        float w = x[i] * x[i];
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = lt_nearest_int(iscale * x[i]);
            l = l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l;
            float w = x[i] * x[i];
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                int l = lt_nearest_int(iscale * x[i]);
                L[i] = (int8_t)(nmax + (l < -nmax ? -nmax : l > nmax - 1 ? nmax - 1 : l));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

#if defined(__GNUC__) && defined(__x86_64__)
#  define LT_QV_CLONES __attribute__((target_clones("avx2", "default")))
#else
#  define LT_QV_CLONES
#endif
#if defined(__GNUC__)
/* make_qkx2 on the 8 sub-blocks of a K super-block at once: lane j is sub-block j, and every
 * lane does exactly the scalar function's float32 operations in the scalar order (the
 * accumulations run over the 32 elements of one sub-block in sequence), so the results are
 * bit-identical to lt_make_qkx2; only the independence of the 8 sub-blocks is exploited. */
typedef float lt_v8f __attribute__((vector_size(32)));
typedef int32_t lt_v8i __attribute__((vector_size(32)));
#define LT_SEL(m, a, b) ((lt_v8f)(((lt_v8i)(a) & (m)) | ((lt_v8i)(b) & ~(m))))

/* round half to even by the magic add; clamp to [lo, hi] (macros: no vector calling convention) */
#define LT_V_NEAREST(x) (((lt_v8i)((x) + 12582912.f) & 0x007fffff) - 0x00400000)
#define LT_V_CLAMP(l, lo, hi)                                                                     \
    do {                                                                                          \
        lt_v8i lt__m = (l) < (lo);                                                                \
        (l) = ((l) & ~lt__m) | ((lo) & lt__m);                                                    \
        lt__m = (l) > (hi);                                                                       \
        (l) = ((l) & ~lt__m) | ((hi) & lt__m);                                                    \
    } while (0)

LT_QV_CLONES
static void lt_make_qkx2_x8(const float *x, int nmax, float rmin, float rdelta, int nstep, uint8_t *L,
                            float *scales, float *mins) {
    lt_v8f xt[32], wt[32];
    lt_v8i Lv[32], La[32];
    for (int i = 0; i < 32; i++)
        for (int j = 0; j < 8; j++) xt[i][j] = x[32 * j + i];
    /* weights: av_x + |x| with av_x = sqrt(sum x^2 / 32) per sub-block */
    lt_v8f sx2 = {0};
    for (int i = 0; i < 32; i++) sx2 += xt[i] * xt[i];
    lt_v8f av;
    for (int j = 0; j < 8; j++) av[j] = sqrtf(sx2[j] / 32);
    for (int i = 0; i < 32; i++) {
        lt_v8f ax = (lt_v8f)((lt_v8i)xt[i] & 0x7fffffff);
        wt[i] = av + ax;
    }
    lt_v8f mn = xt[0], mx = xt[0], sum_w = wt[0], sum_x = sum_w * xt[0];
    for (int i = 1; i < 32; i++) {
        mn = LT_SEL(xt[i] < mn, xt[i], mn);
        mx = LT_SEL(xt[i] > mx, xt[i], mx);
        sum_w += wt[i];
        sum_x += wt[i] * xt[i];
    }
    const lt_v8f zero = {0};
    mn = LT_SEL(mn > zero, zero, mn);
    lt_v8i flat = mx == mn;
    lt_v8f fnmax = zero + (float)nmax;
    lt_v8f iscale = fnmax / (mx - mn);
    lt_v8f scale = 1 / iscale;
    lt_v8f best = zero;
    for (int i = 0; i < 32; i++) {
        lt_v8i l = LT_V_NEAREST(iscale * (xt[i] - mn));
        LT_V_CLAMP(l, 0, nmax);
        Lv[i] = l;
        lt_v8f diff = scale * __builtin_convertvector(l, lt_v8f) + mn - xt[i];
        diff = diff * diff;
        best += wt[i] * diff;
    }
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * is + nmax) / (mx - mn);
        lt_v8f sum_l = zero, sum_l2 = zero, sum_xl = zero;
        for (int i = 0; i < 32; i++) {
            lt_v8i l = LT_V_NEAREST(iscale * (xt[i] - mn));
            LT_V_CLAMP(l, 0, nmax);
            La[i] = l;
            lt_v8f lf = __builtin_convertvector(l, lt_v8f);
            sum_l += wt[i] * lf;
            sum_l2 += wt[i] * lf * lf;
            sum_xl += wt[i] * lf * xt[i];
        }
        lt_v8f D = sum_w * sum_l2 - sum_l * sum_l;
        lt_v8i ok = (D > zero) & ~flat;
        if (!(ok[0] | ok[1] | ok[2] | ok[3] | ok[4] | ok[5] | ok[6] | ok[7])) continue;
        lt_v8f this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        lt_v8f this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        lt_v8i pos = this_min > zero;
        this_min = LT_SEL(pos, zero, this_min);
        this_scale = LT_SEL(pos, sum_xl / sum_l2, this_scale);
        lt_v8f err = zero;
        for (int i = 0; i < 32; i++) {
            lt_v8f diff = this_scale * __builtin_convertvector(La[i], lt_v8f) + this_min - xt[i];
            diff = diff * diff;
            err += wt[i] * diff;
        }
        lt_v8i take = ok & (err < best);
        for (int i = 0; i < 32; i++) Lv[i] = (La[i] & take) | (Lv[i] & ~take);
        best = LT_SEL(take, err, best);
        scale = LT_SEL(take, this_scale, scale);
        mn = LT_SEL(take, this_min, mn);
    }
    for (int j = 0; j < 8; j++) {
        scales[j] = flat[j] ? 0.f : scale[j];
        mins[j] = -mn[j];
        for (int i = 0; i < 32; i++) L[32 * j + i] = flat[j] ? 0 : (uint8_t)Lv[i][j];
    }
}
#define LT_HAVE_QKX2_X8 1

/* make_qx_quants (rmse_type 1, no weights) on 8 sub-blocks of 16 at once, lane j = sub-block j,
 * each lane in the scalar order: bit-identical to lt_make_qx. */
LT_QV_CLONES
static void lt_make_qx_x8(const float *x, int nmax, int8_t *L, float *scales) {
    lt_v8f xt[16], w[16];
    lt_v8i Lv[16];
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 8; j++) xt[i][j] = x[16 * j + i];
    const lt_v8f zero = {0};
    lt_v8f amax = zero, mx = zero;
    for (int i = 0; i < 16; i++) {
        lt_v8f ax = (lt_v8f)((lt_v8i)xt[i] & 0x7fffffff);
        lt_v8i gt = ax > amax;
        amax = LT_SEL(gt, ax, amax);
        mx = LT_SEL(gt, xt[i], mx);
        w[i] = xt[i] * xt[i];
    }
    lt_v8i allzero = amax < GROUP_MAX_EPS;
    lt_v8f iscale = (float)-nmax / mx;
    lt_v8f sumlx = zero, suml2 = zero;
    for (int i = 0; i < 16; i++) {
        lt_v8i l = LT_V_NEAREST(iscale * xt[i]);
        LT_V_CLAMP(l, -nmax, nmax - 1);
        Lv[i] = l + nmax;
        lt_v8f lf = __builtin_convertvector(l, lt_v8f);
        sumlx += w[i] * xt[i] * lf;
        suml2 += w[i] * lf * lf;
    }
    lt_v8f scale = LT_SEL(suml2 != zero, sumlx / suml2, zero);
    lt_v8f best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(nmax + 0.1f * is) / mx;
        lt_v8i La[16];
        sumlx = suml2 = zero;
        for (int i = 0; i < 16; i++) {
            lt_v8i l = LT_V_NEAREST(iscale * xt[i]);
            LT_V_CLAMP(l, -nmax, nmax - 1);
            La[i] = l + nmax;
            lt_v8f lf = __builtin_convertvector(l, lt_v8f);
            sumlx += w[i] * xt[i] * lf;
            suml2 += w[i] * lf * lf;
        }
        lt_v8i take = (suml2 > zero) & (sumlx * sumlx > best * suml2);
        if (!(take[0] | take[1] | take[2] | take[3] | take[4] | take[5] | take[6] | take[7])) continue;
        for (int i = 0; i < 16; i++) Lv[i] = (La[i] & take) | (Lv[i] & ~take);
        lt_v8f ns = sumlx / suml2;
        scale = LT_SEL(take, ns, scale);
        best = LT_SEL(take, ns * sumlx, best);
    }
    for (int j = 0; j < 8; j++) {
        scales[j] = allzero[j] ? 0.f : scale[j];
        for (int i = 0; i < 16; i++) L[16 * j + i] = allzero[j] ? 0 : (int8_t)Lv[i][j];
    }
}
#endif

/* The 6-bit scales and mins of Q4_K / Q5_K, 12 bytes for 8 sub-blocks. */
static void lt_k4_scale_min(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
    }
}

/* Shared by Q4_K (nmax 15) and Q5_K (nmax 31): per 256 weights, 8 sub-blocks of 32 get a scale
 * and a min, both stored as 6-bit multiples of fp16 super-scales d and dmin; then the weights
 * are requantized with the stored (rounded) scales. y: d, dmin, scales[12], then the quants. */
static void lt_k_scales(const float *x, uint8_t *blk, uint8_t *L, int nmax, float rmin, int nstep) {
    float mins[8], scales[8];
    float max_scale = 0, max_min = 0;
#ifdef LT_HAVE_QKX2_X8
    lt_make_qkx2_x8(x, nmax, rmin, 0.1f, nstep, L, scales, mins);
#else
    uint8_t Laux[32];
    float weights[32];
    for (int j = 0; j < 8; ++j) {
        float sum_x2 = 0;
        for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
        float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; ++l) weights[l] = av_x + fabsf(x[32 * j + l]);
        scales[j] = lt_make_qkx2(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep);
    }
#endif
    for (int j = 0; j < 8; ++j) {
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t *sc = blk + 4;
    for (int j = 0; j < 8; ++j) {
        uint8_t ls = (uint8_t)lt_nearest_int(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)lt_nearest_int(inv_min * mins[j]);
        ls = ls < 63 ? ls : 63;
        lm = lm < 63 ? lm : 63;
        if (j < 4) {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            sc[j - 4] |= (uint8_t)((ls >> 4) << 6);
            sc[j - 0] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    lt_put_f16(blk, max_scale / 63.f);
    lt_put_f16(blk + 2, max_min / 63.f);
    float dg = lt_get_f16(blk), dming = lt_get_f16(blk + 2);
    for (int j = 0; j < 8; ++j) {
        uint8_t s, m;
        lt_k4_scale_min(j, sc, &s, &m);
        const float d = dg * s;
        if (!d) continue;
        const float dm = dming * m;
        for (int ii = 0; ii < 32; ++ii) {
            int l = lt_nearest_int((x[32 * j + ii] + dm) / d);
            L[32 * j + ii] = (uint8_t)(l < 0 ? 0 : l > nmax ? nmax : l);
        }
    }
}

/* ---- Q4_K: { f16 d; f16 dmin; u8 scales[12]; u8 qs[128] } ------------------------------ */
static void lt_q4_K_row(const float *x, uint8_t *y, int64_t n) {
    uint8_t L[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K, y += 144) {
        memset(y, 0, 144);
        lt_k_scales(x, y, L, 15, -1.f, 20);
        uint8_t *q = y + 16;
        for (int j = 0; j < QK_K; j += 64, q += 32)
            for (int l = 0; l < 32; ++l) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
    }
}

/* ---- Q5_K: { f16 d; f16 dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] } ------------------- */
static void lt_q5_K_row(const float *x, uint8_t *y, int64_t n) {
    uint8_t L[QK_K];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K, y += 176) {
        memset(y, 0, 176);
        lt_k_scales(x, y, L, 31, -0.5f, 15);
        uint8_t *qh = y + 16, *ql = y + 48;
        uint8_t m1 = 1, m2 = 2;
        for (int nn = 0; nn < QK_K; nn += 64, ql += 32) {
            for (int j = 0; j < 32; ++j) {
                int l1 = L[nn + j];
                if (l1 > 15) { l1 -= 16; qh[j] |= m1; }
                int l2 = L[nn + j + 32];
                if (l2 > 15) { l2 -= 16; qh[j] |= m2; }
                ql[j] = (uint8_t)(l1 | (l2 << 4));
            }
            m1 = (uint8_t)(m1 << 2);
            m2 = (uint8_t)(m2 << 2);
        }
    }
}

/* ---- Q6_K: { u8 ql[128]; u8 qh[64]; int8 scales[16]; f16 d } ---------------------------- */
static void lt_q6_K_row(const float *x, uint8_t *y, int64_t n) {
    int8_t L[QK_K];
    float scales[QK_K / 16];
    for (int64_t b = 0; b < n / QK_K; b++, x += QK_K, y += 210) {
        float max_scale = 0, max_abs_scale = 0;
#ifdef LT_HAVE_QKX2_X8
        lt_make_qx_x8(x, 32, L, scales);
        lt_make_qx_x8(x + 128, 32, L + 128, scales + 8);
#else
        for (int ib = 0; ib < QK_K / 16; ++ib) scales[ib] = lt_make_qx(16, 32, x + 16 * ib, L + 16 * ib);
#endif
        for (int ib = 0; ib < QK_K / 16; ++ib) {
            const float scale = scales[ib];
            const float abs_scale = fabsf(scale);
            if (abs_scale > max_abs_scale) {
                max_abs_scale = abs_scale;
                max_scale = scale;
            }
        }
        memset(y, 0, 210);
        if (max_abs_scale < GROUP_MAX_EPS) {
            lt_put_f16(y + 208, 0.f);
            continue;
        }
        int8_t *sc = (int8_t *)(y + 192);
        float iscale = -128.f / max_scale;
        lt_put_f16(y + 208, 1 / iscale);
        for (int ib = 0; ib < QK_K / 16; ++ib) {
            int v = lt_nearest_int(iscale * scales[ib]);
            sc[ib] = (int8_t)(v < 127 ? v : 127);
        }
        float dg = lt_get_f16(y + 208);
        for (int j = 0; j < QK_K / 16; ++j) {
            float d = dg * sc[j];
            if (!d) continue;
            for (int ii = 0; ii < 16; ++ii) {
                int l = lt_nearest_int(x[16 * j + ii] / d);
                l = l < -32 ? -32 : l > 31 ? 31 : l;
                L[16 * j + ii] = (int8_t)(l + 32);
            }
        }
        uint8_t *ql = y, *qh = y + 128;
        for (int j = 0; j < QK_K; j += 128, ql += 64, qh += 32) {
            for (int l = 0; l < 32; ++l) {
                const uint8_t q1 = L[j + l + 0] & 0xF, q2 = L[j + l + 32] & 0xF;
                const uint8_t q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
                ql[l + 0] = (uint8_t)(q1 | (q3 << 4));
                ql[l + 32] = (uint8_t)(q2 | (q4 << 4));
                qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                  ((L[j + l + 96] >> 4) << 6));
            }
        }
    }
}

int lt_quant_supported(int type) {
    switch (type) {
    case LT_GGML_F32: case LT_GGML_F16: case LT_GGML_BF16: case LT_GGML_Q8_0: case LT_GGML_Q5_0:
    case LT_GGML_Q5_1: case LT_GGML_Q4_K: case LT_GGML_Q5_K: case LT_GGML_Q6_K: return 1;
    default: return 0;
    }
}

lt_status lt_quant_row(int type, const float *x, void *out, int64_t n) {
    int blck = lt_ggml_block_size(type);
    if (!lt_quant_supported(type)) return lt_error(LT_ERR_UNSUPPORTED, "quantize: ggml type %d is not supported", type);
    if (n % blck) return lt_error(LT_ERR_INVALID_ARGUMENT, "quantize: row of %lld is not a multiple of %d for %s",
                                  (long long)n, blck, lt_ggml_type_name(type));
    uint8_t *y = out;
    switch (type) {
    case LT_GGML_F32: memcpy(y, x, (size_t)n * 4); break;
    case LT_GGML_F16:
        for (int64_t i = 0; i < n; i++) { uint16_t h = lt_quant_fp16(x[i]); memcpy(y + 2 * i, &h, 2); }
        break;
    case LT_GGML_BF16:
        for (int64_t i = 0; i < n; i++) { uint16_t h = lt_f32_to_bf16(x[i]); memcpy(y + 2 * i, &h, 2); }
        break;
    case LT_GGML_Q8_0: lt_q8_0_row(x, y, n); break;
    case LT_GGML_Q5_0: lt_q5_0_row(x, y, n); break;
    case LT_GGML_Q5_1: lt_q5_1_row(x, y, n); break;
    case LT_GGML_Q4_K: lt_q4_K_row(x, y, n); break;
    case LT_GGML_Q5_K: lt_q5_K_row(x, y, n); break;
    case LT_GGML_Q6_K: lt_q6_K_row(x, y, n); break;
    }
    return LT_OK;
}

typedef struct { int type; const float *x; uint8_t *out; int64_t n; size_t row_bytes; } lt_quant_job;

static void lt_quant_one(void *ctx, int64_t r) {
    lt_quant_job *j = ctx;
    lt_quant_row(j->type, j->x + r * j->n, j->out + (size_t)r * j->row_bytes, j->n);
}

lt_status lt_quant_rows(int type, const float *x, void *out, int64_t rows, int64_t n, int n_threads) {
    int blck = lt_ggml_block_size(type);
    if (!lt_quant_supported(type)) return lt_error(LT_ERR_UNSUPPORTED, "quantize: ggml type %d is not supported", type);
    if (n % blck) return lt_error(LT_ERR_INVALID_ARGUMENT, "quantize: row of %lld is not a multiple of %d for %s",
                                  (long long)n, blck, lt_ggml_type_name(type));
    lt_quant_job j = {type, x, out, n, lt_ggml_row_size(type, n)};
    lt_parallel_for(rows, lt_threads(n_threads), lt_quant_one, &j);
    return LT_OK;
}

/* ---- dequantization ---------------------------------------------------------------------- */
lt_status lt_dequant_row(int type, const void *in, float *y, int64_t n) {
    const uint8_t *p = in;
    int blck = lt_ggml_block_size(type);
    if (!blck || n % blck) return lt_error(LT_ERR_INVALID_ARGUMENT, "dequantize: bad type %d or row %lld", type, (long long)n);
    switch (type) {
    case LT_GGML_F32: memcpy(y, p, (size_t)n * 4); return LT_OK;
    case LT_GGML_F16:
        for (int64_t i = 0; i < n; i++) y[i] = lt_get_f16(p + 2 * i);
        return LT_OK;
    case LT_GGML_BF16:
        for (int64_t i = 0; i < n; i++) { uint16_t h; memcpy(&h, p + 2 * i, 2); y[i] = lt_bf16_to_f32(h); }
        return LT_OK;
    case LT_GGML_Q8_0:
        for (int64_t b = 0; b < n / 32; b++, p += 34, y += 32) {
            float d = lt_get_f16(p);
            for (int j = 0; j < 32; j++) y[j] = (float)(int8_t)p[2 + j] * d;
        }
        return LT_OK;
    case LT_GGML_Q5_0: case LT_GGML_Q5_1: {
        int one = type == LT_GGML_Q5_1;
        size_t bs = one ? 24 : 22;
        for (int64_t b = 0; b < n / 32; b++, p += bs, y += 32) {
            float d = lt_get_f16(p), m = one ? lt_get_f16(p + 2) : 0.f;
            uint32_t qh;
            memcpy(&qh, p + (one ? 4 : 2), 4);
            const uint8_t *qs = p + (one ? 8 : 6);
            for (int j = 0; j < 16; j++) {
                int x0 = (qs[j] & 0x0F) | (int)(((qh >> (j + 0)) << 4) & 0x10);
                int x1 = (qs[j] >> 4) | (int)(((qh >> (j + 12))) & 0x10);
                if (one) { y[j] = x0 * d + m; y[j + 16] = x1 * d + m; }
                else { y[j] = (x0 - 16) * d; y[j + 16] = (x1 - 16) * d; }
            }
        }
        return LT_OK;
    }
    case LT_GGML_Q4_K: case LT_GGML_Q5_K: {
        int five = type == LT_GGML_Q5_K;
        size_t bs = five ? 176 : 144;
        for (int64_t b = 0; b < n / QK_K; b++, p += bs) {
            float d = lt_get_f16(p), dmin = lt_get_f16(p + 2);
            const uint8_t *sc = p + 4, *qh = p + 16, *q = p + (five ? 48 : 16);
            int is = 0;
            uint8_t u1 = 1, u2 = 2;
            for (int j = 0; j < QK_K; j += 64, q += 32, is += 2) {
                uint8_t s, m;
                lt_k4_scale_min(is, sc, &s, &m);
                float d1 = d * s, m1 = dmin * m;
                lt_k4_scale_min(is + 1, sc, &s, &m);
                float d2 = d * s, m2 = dmin * m;
                for (int l = 0; l < 32; l++) *y++ = d1 * ((q[l] & 0xF) + (five && (qh[l] & u1) ? 16 : 0)) - m1;
                for (int l = 0; l < 32; l++) *y++ = d2 * ((q[l] >> 4) + (five && (qh[l] & u2) ? 16 : 0)) - m2;
                u1 = (uint8_t)(u1 << 2);
                u2 = (uint8_t)(u2 << 2);
            }
        }
        return LT_OK;
    }
    case LT_GGML_Q6_K:
        for (int64_t b = 0; b < n / QK_K; b++, p += 210) {
            float d = lt_get_f16(p + 208);
            const uint8_t *ql = p, *qh = p + 128;
            const int8_t *sc = (const int8_t *)(p + 192);
            for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, y += 128) {
                for (int l = 0; l < 32; ++l) {
                    int is = l / 16;
                    int q1 = (int)((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                    int q2 = (int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                    int q3 = (int)((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                    int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                    y[l + 0] = d * sc[is + 0] * q1;
                    y[l + 32] = d * sc[is + 2] * q2;
                    y[l + 64] = d * sc[is + 4] * q3;
                    y[l + 96] = d * sc[is + 6] * q4;
                }
            }
        }
        return LT_OK;
    }
    return lt_error(LT_ERR_UNSUPPORTED, "dequantize: ggml type %d is not supported", type);
}

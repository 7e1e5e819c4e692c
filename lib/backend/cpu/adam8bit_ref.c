/* adam8bit_ref.c - bitsandbytes' blockwise 8-bit AdamW (kOptimizerStatic8bit2StateBlockwise with
 * BLOCK_SIZE 256, bnb >= 0.44) on the CPU, following the kernel's float arithmetic step by step. */
#include "backend/adam8bit.h"
#include "backend/backend.h"
#include "core/core.h"
#include <float.h>
#include <math.h>

uint8_t lt_quantize_2d_ref(const float code[256], int is_signed, float x) {
    /* The kernel starts from quadrants[1] = code[127] and at the first step reads
     * quadrants[0|2] = code[63|191], which is code[pivot]: a plain binary search. */
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = is_signed ? -1.0f : 0.0f, upper = 1.0f;
    float val = code[127];
    for (int i = 64; i > 0; i >>= 1) {
        if (x > val) { lower_pivot = pivot; lower = val; pivot += i; }
        else { upper_pivot = pivot; upper = val; pivot -= i; }
        val = code[pivot];
    }
    if (x > val) {
        float midpoint = (upper + val) * 0.5f;
        return (uint8_t)(x > midpoint ? upper_pivot : pivot);
    } else {
        float midpoint = (lower + val) * 0.5f;
        return (uint8_t)(x < midpoint ? lower_pivot : pivot);
    }
}

typedef struct adam8_ctx {
    float *p; const float *g; uint8_t *s1, *s2; float *a1, *a2; int64_t n;
    float lr, beta1, beta2, eps, wd, correction2, step_size;
    float code1[256], code2[256];
} adam8_ctx;

static void adam8_block(void *vctx, int64_t b) {
    adam8_ctx *c = vctx;
    const int64_t lo = b * LT_ADAM8BIT_BLOCK;
    float s1[LT_ADAM8BIT_BLOCK], s2[LT_ADAM8BIT_BLOCK];
    const float am1 = c->a1[b], am2 = c->a2[b];
    float new1 = -FLT_MAX, new2 = -FLT_MAX;
    for (int j = 0; j < LT_ADAM8BIT_BLOCK; j++) {
        const int64_t i = lo + j;
        /* past n the kernel loads g = 0 and codes 128 / 0; those values join the block's max */
        const float gv = i < c->n ? c->g[i] : 0.0f;
        const uint8_t q1 = i < c->n ? c->s1[i] : 128, q2 = i < c->n ? c->s2[i] : 0;
        if (isfinite(gv)) {
            float v = c->code2[q2] * am2;
            v = (v * c->beta2) + (((1.0f - c->beta2) * gv * gv));
            float m = c->code1[q1] * am1;
            m = (m * c->beta1) + (((1.0f - c->beta1) * gv));
            s1[j] = m; s2[j] = v;
        } else {
            s1[j] = 0.0f; s2[j] = 0.0f;
        }
        new1 = fmaxf(new1, fabsf(s1[j]));
        new2 = fmaxf(new2, fabsf(s2[j]));
    }
    c->a1[b] = new1;
    c->a2[b] = new2;
    const int64_t hi = lo + LT_ADAM8BIT_BLOCK < c->n ? lo + LT_ADAM8BIT_BLOCK : c->n;
    for (int64_t i = lo; i < hi; i++) {
        const int j = (int)(i - lo);
        if (isfinite(c->g[i])) {
            float pv = c->p[i];
            pv = pv + (c->step_size * (s1[j] / (sqrtf(s2[j]) + (c->correction2 * c->eps))));
            if (c->wd > 0.0f) pv = pv * (1.0f - (c->lr * c->wd));
            c->p[i] = pv;
        }
        uint8_t q1 = lt_quantize_2d_ref(c->code1, 1, s1[j] / new1);
        uint8_t q2 = lt_quantize_2d_ref(c->code2, 0, s2[j] / new2);
        /* keep m's sign through the rounding (the unsigned v needs no such care) */
        if (signbit(c->code1[q1]) != signbit(s1[j])) {
            if (s1[j] > 0.0f) q1 += 1; else q1 -= 1;
        }
        c->s1[i] = q1;
        c->s2[i] = q2;
    }
}

void lt_adamw8bit_ref(float *p, const float *g, uint8_t *state1, uint8_t *state2, float *absmax1, float *absmax2,
                      int64_t n, float lr, float beta1, float beta2, float eps, float wd, int64_t t, int n_threads) {
    adam8_ctx c;
    c.p = p; c.g = g; c.s1 = state1; c.s2 = state2; c.a1 = absmax1; c.a2 = absmax2; c.n = n;
    c.lr = lr; c.beta1 = beta1; c.beta2 = beta2; c.eps = eps; c.wd = wd;
    const float correction1 = 1.0f - powf(beta1, (float)t);
    c.correction2 = sqrtf(1.0f - powf(beta2, (float)t));
    c.step_size = (-lr * c.correction2) / correction1;
    lt_dynamic_map(1, c.code1);
    lt_dynamic_map(0, c.code2);
    int64_t nblocks = (n + LT_ADAM8BIT_BLOCK - 1) / LT_ADAM8BIT_BLOCK;
    lt_parallel_for(nblocks, n_threads, adam8_block, &c);
}

void lt_adamw32_bnb_ref(float *p, const float *g, float *m, float *v, int64_t n, float lr, float beta1, float beta2,
                        float eps, float wd, int64_t t) {
    const float correction1 = 1.0f - powf(beta1, (float)t);
    const float correction2 = sqrtf(1.0f - powf(beta2, (float)t));
    const float step_size = -lr * correction2 / correction1;
    for (int64_t i = 0; i < n; i++) {
        const float gv = g[i];
        m[i] = m[i] * beta1 + ((1.0f - beta1) * gv);
        v[i] = v[i] * beta2 + ((1.0f - beta2) * (gv * gv));
        float pv = p[i] + (step_size * (m[i] / (sqrtf(v[i]) + (eps * correction2))));
        if (wd > 0.0f) pv = pv * (1.0f - (lr * wd));
        p[i] = pv;
    }
}

/* cpu_optim.c - the optimizer ops of the CPU reference: gradient norm (f64), scaling, the
 * non-finite check, torch.optim.AdamW (single-tensor formula order) and bitsandbytes' 8-bit
 * AdamW (adam8bit_ref.c). */
#include "backend/cpu/cpu_internal.h"
#include "backend/adam8bit.h"
#include <math.h>

lt_status lt_cpu_sumsq(lt_backend *be, const float *g, int64_t n, double *host_sumsq) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    *host_sumsq += s;
    return LT_OK;
}

lt_status lt_cpu_scale(lt_backend *be, float *x, int64_t n, float s) {
    for (int64_t i = 0; i < n; i++) x[i] *= s;
    return LT_OK;
}

lt_status lt_cpu_nonfinite(lt_backend *be, const float *g, int64_t n, int *host_flag) {
    int bad = 0;
    for (int64_t i = 0; i < n; i++) bad |= !isfinite(g[i]);
    *host_flag = bad;
    return LT_OK;
}

/* torch.optim.adamw _single_tensor_adamw: the Python scalars are doubles that torch turns into
 * float32 when it applies them to float32 tensors. */
lt_status lt_cpu_adamw(lt_backend *be, float *p, const float *g, float *m, float *v, int64_t n, float lr,
                       float beta1, float beta2, float eps, float wd, int64_t t) {
    LT_CHECK_ARG(t >= 1, "adamw: step %lld must be >= 1", (long long)t);
    const double dlr = lr, db1 = beta1, db2 = beta2;
    const float decay = (float)(1.0 - dlr * (double)wd);              /* param.mul_(1 - lr*wd) */
    const float w1 = (float)(1.0 - db1);                              /* exp_avg.lerp_(grad, 1-beta1) */
    const float w2 = (float)(1.0 - db2);                              /* addcmul_(g, g, value=1-beta2) */
    const double bc1 = 1.0 - pow(db1, (double)t), bc2 = 1.0 - pow(db2, (double)t);
    const float step_size = (float)(dlr / bc1);
    const float bc2_sqrt = (float)sqrt(bc2);
    for (int64_t i = 0; i < n; i++) {
        float pi = p[i] * decay;
        const float gi = g[i];
        float mi = m[i];
        mi = w1 < 0.5f ? mi + w1 * (gi - mi) : gi - (gi - mi) * (1.0f - w1); /* torch's lerp */
        const float vi = v[i] * beta2 + w2 * gi * gi;
        const float denom = sqrtf(vi) / bc2_sqrt + eps;
        pi = pi + (-step_size) * (mi / denom);
        p[i] = pi; m[i] = mi; v[i] = vi;
    }
    return LT_OK;
}

lt_status lt_cpu_adamw8bit(lt_backend *be, float *p, const float *g, uint8_t *state1, uint8_t *state2,
                           float *absmax1, float *absmax2, int64_t n, float lr, float beta1, float beta2, float eps,
                           float wd, int64_t t) {
    LT_CHECK_ARG(t >= 1, "adamw8bit: step %lld must be >= 1", (long long)t);
    int64_t nblocks = (n + LT_ADAM8BIT_BLOCK - 1) / LT_ADAM8BIT_BLOCK;
    lt_adamw8bit_ref(p, g, state1, state2, absmax1, absmax2, n, lr, beta1, beta2, eps, wd, t,
                     lt_cpu_threads_for(be, nblocks, LT_ADAM8BIT_BLOCK * 40));
    return LT_OK;
}

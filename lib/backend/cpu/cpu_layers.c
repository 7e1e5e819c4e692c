/* cpu_layers.c - the element-wise and per-row layers of the CPU reference: embedding lookup,
 * RMSNorm, rotary embedding (default or given frequencies), SwiGLU / GELU-tanh gating, add and
 * scale, with the float32 arithmetic transformers uses. */
#include "backend/cpu/cpu_internal.h"
#include <math.h>
#include <string.h>

lt_status lt_cpu_embedding(lt_backend *be, void *out, const int32_t *ids, const lt_bweight *table, int64_t N,
                           int64_t C) {
    LT_CHECK_ARG(table->cols == C, "embedding: table has %lld columns, expected hidden size %lld",
                 (long long)table->cols, (long long)C);
    float *o = out;
    for (int64_t n = 0; n < N; n++) {
        if (ids[n] < 0 || ids[n] >= table->rows)
            return lt_error(LT_ERR_INVALID_ARGUMENT, "embedding: token %lld has id %d outside the vocabulary "
                            "[0, %lld)", (long long)n, (int)ids[n], (long long)table->rows);
        memcpy(o + n * C, table->w + (int64_t)ids[n] * C, (size_t)C * sizeof(float));
    }
    return LT_OK;
}

/* ---- RMSNorm: y = w * (x * rstd), rstd = 1/sqrt(mean(x^2) + eps) ---- */
typedef struct norm_ctx {
    float *out; float *rstd; const float *inp, *dout, *w; int64_t C; float eps;
} norm_ctx;

static void rmsnorm_fwd_row(void *vctx, int64_t n) {
    norm_ctx *c = vctx;
    const float *x = c->inp + n * c->C;
    float *y = c->out + n * c->C;
    double ss = 0;
    for (int64_t i = 0; i < c->C; i++) ss += (double)x[i] * x[i];
    const float var = (float)(ss / (double)c->C);
    const float r = 1.0f / sqrtf(var + c->eps);
    c->rstd[n] = r;
    /* transformers normalises first, then multiplies by the weight */
    for (int64_t i = 0; i < c->C; i++) y[i] = c->w[i] * (x[i] * r);
}

lt_status lt_cpu_rmsnorm_fwd(lt_backend *be, void *out, float *rstd, const void *inp, const float *w, int64_t N,
                             int64_t C, float eps) {
    norm_ctx c = {out, rstd, inp, NULL, w, C, eps};
    lt_parallel_for(N, lt_cpu_threads_for(be, N, 3 * C), rmsnorm_fwd_row, &c);
    return LT_OK;
}

/* dx_i = r * w_i * g_i - x_i * r^3 / C * sum_k g_k w_k x_k */
static void rmsnorm_bwd_row(void *vctx, int64_t n) {
    norm_ctx *c = vctx;
    const float *x = c->inp + n * c->C, *g = c->dout + n * c->C;
    float *dx = c->out + n * c->C;
    const double r = c->rstd[n];
    double dot = 0;
    for (int64_t i = 0; i < c->C; i++) dot += (double)g[i] * c->w[i] * x[i];
    const double k = dot * r * r * r / (double)c->C;
    for (int64_t i = 0; i < c->C; i++) dx[i] += (float)(r * c->w[i] * g[i] - x[i] * k);
}

lt_status lt_cpu_rmsnorm_bwd(lt_backend *be, void *dinp, const void *dout, const void *inp, const float *w,
                             const float *rstd, int64_t N, int64_t C) {
    norm_ctx c = {dinp, (float *)rstd, inp, dout, w, C, 0};
    lt_parallel_for(N, lt_cpu_threads_for(be, N, 5 * C), rmsnorm_bwd_row, &c);
    return LT_OK;
}

/* ---- RoPE, half-split pairs (i, i + HD/2) ---- */
typedef struct rope_ctx {
    float *x; const int32_t *pos; int64_t H, HD; float inv_freq[512]; float af; int dir;
} rope_ctx;

static void rope_token(void *vctx, int64_t n) {
    rope_ctx *c = vctx;
    const int64_t half = c->HD / 2;
    float cs[512], sn[512];
    const float p = (float)c->pos[n];
    for (int64_t i = 0; i < half; i++) {
        const float f = p * c->inv_freq[i]; /* freqs = pos x inv_freq in f32 */
        cs[i] = cosf(f);
        sn[i] = sinf(f);
        if (c->af != 1.0f) { /* attention_scaling multiplies cos and sin */
            cs[i] *= c->af;
            sn[i] *= c->af;
        }
    }
    for (int64_t h = 0; h < c->H; h++) {
        float *v = c->x + (n * c->H + h) * c->HD;
        for (int64_t i = 0; i < half; i++) {
            const float a = v[i], b = v[i + half];
            if (c->dir > 0) { /* q*cos + rotate_half(q)*sin, rotate_half = cat(-x2, x1) */
                v[i] = a * cs[i] - b * sn[i];
                v[i + half] = b * cs[i] + a * sn[i];
            } else {           /* the transpose of that rotation */
                v[i] = a * cs[i] + b * sn[i];
                v[i + half] = b * cs[i] - a * sn[i];
            }
        }
    }
}

static lt_status rope(lt_backend *be, void *x, const int32_t *pos, int64_t N, int64_t H, int64_t HD, float theta,
                      const float *inv_freq, float af, int dir) {
    LT_CHECK_ARG(HD > 0 && HD % 2 == 0 && HD <= 1024, "rope: head dim %lld must be even and at most 1024",
                 (long long)HD);
    rope_ctx c;
    c.x = x; c.pos = pos; c.H = H; c.HD = HD; c.dir = dir; c.af = af;
    /* transformers: inv_freq = 1 / theta ** (arange(0, HD, 2).float() / HD), all in float32 */
    for (int64_t i = 0; i < HD / 2; i++) {
        const float e = (float)(2 * i) / (float)HD;
        c.inv_freq[i] = inv_freq ? inv_freq[i] : 1.0f / powf(theta, e);
    }
    lt_parallel_for(N, lt_cpu_threads_for(be, N, H * HD * 2 + HD * 20), rope_token, &c);
    return LT_OK;
}

lt_status lt_cpu_rope_fwd(lt_backend *be, void *x, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                          float theta) {
    return rope(be, x, pos, N, H, HD, theta, NULL, 1.0f, +1);
}
lt_status lt_cpu_rope_bwd(lt_backend *be, void *dx, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                          float theta) {
    return rope(be, dx, pos, N, H, HD, theta, NULL, 1.0f, -1);
}
lt_status lt_cpu_rope_freq_fwd(lt_backend *be, void *x, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                               float theta, const float *inv_freq, float af) {
    return rope(be, x, pos, N, H, HD, theta, inv_freq, af, +1);
}
lt_status lt_cpu_rope_freq_bwd(lt_backend *be, void *dx, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                               float theta, const float *inv_freq, float af) {
    return rope(be, dx, pos, N, H, HD, theta, inv_freq, af, -1);
}

/* ---- SwiGLU: out = silu(g) * u, silu(g) = g / (1 + exp(-g)) as torch computes it ---- */
lt_status lt_cpu_swiglu_fwd(lt_backend *be, void *out, const void *gate, const void *up, int64_t n) {
    float *o = out;
    const float *g = gate, *u = up;
    for (int64_t i = 0; i < n; i++) o[i] = (g[i] / (1.0f + expf(-g[i]))) * u[i];
    return LT_OK;
}

lt_status lt_cpu_swiglu_bwd(lt_backend *be, void *dgate, void *dup, const void *dout, const void *gate,
                            const void *up, int64_t n) {
    float *dg = dgate, *du = dup;
    const float *d = dout, *g = gate, *u = up;
    for (int64_t i = 0; i < n; i++) {
        /* read everything first: dgate / dup may alias gate / up */
        const float gi = g[i], di = d[i], ui = u[i];
        const float s = 1.0f / (1.0f + expf(-gi));
        du[i] = di * (gi * s);
        dg[i] = di * ui * s * (1.0f + gi * (1.0f - s));
    }
    return LT_OK;
}

lt_status lt_cpu_add(lt_backend *be, void *out, const void *a, const void *b, int64_t n) {
    float *o = out;
    const float *x = a, *y = b;
    for (int64_t i = 0; i < n; i++) o[i] = x[i] + y[i];
    return LT_OK;
}

/* ---- gated MLP activations: silu (SwiGLU) or torch's gelu(approximate="tanh") (Gemma) ---- */
#define GELU_BETA 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_KAPPA 0.044715f

lt_status lt_cpu_glu_fwd(lt_backend *be, int act, void *out, const void *gate, const void *up, int64_t n) {
    if (act == LT_BACT_SILU) return lt_cpu_swiglu_fwd(be, out, gate, up, n);
    LT_CHECK_ARG(act == LT_BACT_GELU_TANH, "glu_fwd: activation %d is not an LT_BACT_*", act);
    float *o = out;
    const float *g = gate, *u = up;
    for (int64_t i = 0; i < n; i++) {
        const float x = g[i], inner = GELU_BETA * (x + GELU_KAPPA * x * x * x);
        o[i] = (0.5f * x * (1.0f + tanhf(inner))) * u[i];
    }
    return LT_OK;
}

lt_status lt_cpu_glu_bwd(lt_backend *be, int act, void *dgate, void *dup, const void *dout, const void *gate,
                         const void *up, int64_t n) {
    if (act == LT_BACT_SILU) return lt_cpu_swiglu_bwd(be, dgate, dup, dout, gate, up, n);
    LT_CHECK_ARG(act == LT_BACT_GELU_TANH, "glu_bwd: activation %d is not an LT_BACT_*", act);
    float *dg = dgate, *du = dup;
    const float *d = dout, *g = gate, *u = up;
    for (int64_t i = 0; i < n; i++) {
        const float x = g[i], di = d[i], ui = u[i];
        const float t = tanhf(GELU_BETA * (x + GELU_KAPPA * x * x * x));
        const float y = 0.5f * x * (1.0f + t);
        const float dy = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_BETA * (1.0f + 3.0f * GELU_KAPPA * x * x);
        du[i] = di * y;
        dg[i] = di * ui * dy;
    }
    return LT_OK;
}

lt_status lt_cpu_scale_act(lt_backend *be, void *x, int64_t n, float s) {
    float *v = x;
    for (int64_t i = 0; i < n; i++) v[i] *= s;
    return LT_OK;
}

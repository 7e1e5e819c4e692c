/* cpu_matmul.c - the matrix products of the CPU reference: frozen linear layers, the LoRA branch
 * (with its dropout mask from the shared Philox stream), and the LM head fused with cross-entropy
 * over chunks of tokens. Work is split over output tiles; every sum runs in a fixed order, so
 * results do not depend on the thread count. */
#include "backend/cpu/cpu_internal.h"
#include "core/rng.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- out(N,M) = a(N,K) @ b(M,K)^T (+ bias), tiles of 8 rows x 64 columns ---- */
#define TN 8
#define TM 64
typedef struct nt_ctx {
    float *out; const float *a, *b, *bias; int64_t N, M, K, nmb;
} nt_ctx;

static void nt_tile(void *vctx, int64_t t) {
    nt_ctx *c = vctx;
    const int64_t n0 = (t / c->nmb) * TN, m0 = (t % c->nmb) * TM;
    const int64_t n1 = n0 + TN < c->N ? n0 + TN : c->N, m1 = m0 + TM < c->M ? m0 + TM : c->M;
    /* a row of b stays in L1 while it meets the tile's 8 rows of a (GCC vectorizes the 8-lane
     * dot well; a 2x2 register block measured slower) */
    for (int64_t m = m0; m < m1; m++) {
        const float *brow = c->b + m * c->K;
        const float bias = c->bias ? c->bias[m] : 0.0f;
        for (int64_t n = n0; n < n1; n++) {
            float v = lt_cpu_dot(c->a + n * c->K, brow, c->K);
            c->out[n * c->M + m] = c->bias ? v + bias : v;
        }
    }
}

static void gemm_nt(lt_backend *be, float *out, const float *a, const float *b, const float *bias, int64_t N,
                    int64_t M, int64_t K) {
    nt_ctx c = {out, a, b, bias, N, M, K, (M + TM - 1) / TM};
    int64_t tiles = ((N + TN - 1) / TN) * c.nmb;
    lt_parallel_for(tiles, lt_cpu_threads_for(be, tiles, (int64_t)TN * TM * K), nt_tile, &c);
}

/* ---- out(N,K) (+)= a(N,M) @ b(M,K), tiles of 8 rows x 256 columns, sum over m in order ---- */
#define TK 256
typedef struct nn_ctx {
    float *out; const float *a, *b; int64_t N, M, K, nkb; int accumulate;
} nn_ctx;

static void nn_tile(void *vctx, int64_t t) {
    nn_ctx *c = vctx;
    const int64_t n0 = (t / c->nkb) * TN, k0 = (t % c->nkb) * TK;
    const int64_t n1 = n0 + TN < c->N ? n0 + TN : c->N, k1 = k0 + TK < c->K ? k0 + TK : c->K;
    float acc[TN][TK];
    memset(acc, 0, sizeof acc);
    for (int64_t m = 0; m < c->M; m++) {
        const float *brow = c->b + m * c->K + k0;
        for (int64_t n = n0; n < n1; n++) {
            const float av = c->a[n * c->M + m];
            lt_cpu_axpy(acc[n - n0], av, brow, k1 - k0);
        }
    }
    for (int64_t n = n0; n < n1; n++) {
        float *o = c->out + n * c->K + k0;
        if (c->accumulate) for (int64_t k = 0; k < k1 - k0; k++) o[k] += acc[n - n0][k];
        else memcpy(o, acc[n - n0], (size_t)(k1 - k0) * sizeof(float));
    }
}

static void gemm_nn(lt_backend *be, float *out, const float *a, const float *b, int64_t N, int64_t M, int64_t K,
                    int accumulate) {
    nn_ctx c = {out, a, b, N, M, K, (K + TK - 1) / TK, accumulate};
    int64_t tiles = ((N + TN - 1) / TN) * c.nkb;
    lt_parallel_for(tiles, lt_cpu_threads_for(be, tiles, (int64_t)TN * TK * M), nn_tile, &c);
}

/* ---- out(M,K) += s * a(N,M)^T @ b(N,K): parameter gradients, summed over tokens n in order ---- */
typedef struct tn_ctx {
    float *out; const float *a, *b; int64_t N, M, K, nkb; float s;
} tn_ctx;

static void tn_tile(void *vctx, int64_t t) {
    tn_ctx *c = vctx;
    const int64_t m0 = (t / c->nkb) * TN, k0 = (t % c->nkb) * TK;
    const int64_t m1 = m0 + TN < c->M ? m0 + TN : c->M, k1 = k0 + TK < c->K ? k0 + TK : c->K;
    float acc[TN][TK];
    memset(acc, 0, sizeof acc);
    for (int64_t n = 0; n < c->N; n++) {
        const float *brow = c->b + n * c->K + k0;
        for (int64_t m = m0; m < m1; m++) {
            const float av = c->a[n * c->M + m];
            lt_cpu_axpy(acc[m - m0], av, brow, k1 - k0);
        }
    }
    for (int64_t m = m0; m < m1; m++) {
        float *o = c->out + m * c->K + k0;
        for (int64_t k = 0; k < k1 - k0; k++) o[k] += c->s * acc[m - m0][k];
    }
}

static void gemm_tn_acc(lt_backend *be, float *out, const float *a, const float *b, int64_t N, int64_t M,
                        int64_t K, float s) {
    tn_ctx c = {out, a, b, N, M, K, (K + TK - 1) / TK, s};
    int64_t tiles = ((M + TN - 1) / TN) * c.nkb;
    lt_parallel_for(tiles, lt_cpu_threads_for(be, tiles, (int64_t)TN * TK * N), tn_tile, &c);
}

/* ---- frozen linear layers ---- */
lt_status lt_cpu_linear_fwd(lt_backend *be, void *out, const void *inp, const lt_bweight *W, const float *bias,
                            int64_t N) {
    gemm_nt(be, out, inp, W->w, bias, N, W->rows, W->cols);
    return LT_OK;
}

lt_status lt_cpu_linear_bwd_input(lt_backend *be, void *dinp, const void *dout, const lt_bweight *W, int64_t N,
                                  int accumulate) {
    gemm_nn(be, dinp, dout, W->w, N, W->rows, W->cols, accumulate);
    return LT_OK;
}

/* ---- LoRA ---- */
/* xd(N,C) = dropout(inp): element n*C + c kept when lt_rng_keep(seed, stream, n*C + c, p), and
 * then scaled by 1/(1-p) (a float32 factor, as torch's mask holds it). */
typedef struct drop_ctx {
    float *xd; const float *x; int64_t C; float p, inv; uint64_t seed, stream;
} drop_ctx;

static void dropout_row(void *vctx, int64_t n) {
    drop_ctx *c = vctx;
    for (int64_t i = 0; i < c->C; i++) {
        int64_t e = n * c->C + i;
        c->xd[e] = lt_rng_keep(c->seed, c->stream, (uint64_t)e, c->p) ? c->x[e] * c->inv : 0.0f;
    }
}

static lt_status lora_dropout(lt_backend *be, const float *inp, int64_t N, int64_t C, float p, uint64_t seed,
                              uint64_t stream, float **xd_out) {
    *xd_out = NULL;
    LT_CHECK_ARG(p >= 0.0f && p < 1.0f, "lora: dropout %g must be in [0, 1)", (double)p);
    if (p == 0.0f) return LT_OK;
    float *xd = lt_malloc((size_t)(N * C) * sizeof(float), "lora dropout buffer");
    if (!xd) return LT_ERR_OUT_OF_MEMORY;
    drop_ctx c = {xd, inp, C, p, 1.0f / (1.0f - p), seed, stream};
    lt_parallel_for(N, lt_cpu_threads_for(be, N, C * 40), dropout_row, &c);
    *xd_out = xd;
    return LT_OK;
}

lt_status lt_cpu_lora_fwd(lt_backend *be, void *out, void *xa, const void *inp, const float *A, const float *B,
                          int64_t N, int64_t C, int64_t OC, int64_t R, float scale, float p, uint64_t seed,
                          uint64_t stream) {
    float *xd = NULL;
    LT_TRY(lora_dropout(be, inp, N, C, p, seed, stream, &xd));
    float *tmp = lt_malloc((size_t)(N * OC) * sizeof(float), "lora output buffer");
    if (!tmp) { free(xd); return LT_ERR_OUT_OF_MEMORY; }
    gemm_nt(be, xa, xd ? xd : inp, A, NULL, N, R, C);          /* xa(N,R) = xd @ A^T */
    gemm_nt(be, tmp, xa, B, NULL, N, OC, R);                   /* (N,OC) = xa @ B^T */
    float *o = out;
    for (int64_t i = 0; i < N * OC; i++) o[i] += tmp[i] * scale; /* PEFT: base + lora_B(..) * scaling */
    free(tmp);
    free(xd);
    return LT_OK;
}

lt_status lt_cpu_lora_bwd(lt_backend *be, float *dA, float *dB, void *dinp, const void *dout, const void *inp,
                          const void *xa, const float *A, const float *B, int64_t N, int64_t C, int64_t OC,
                          int64_t R, float scale, float p, uint64_t seed, uint64_t stream) {
    float *xd = NULL;
    LT_TRY(lora_dropout(be, inp, N, C, p, seed, stream, &xd));
    float *dxa = lt_malloc((size_t)(N * R) * sizeof(float), "lora dxa");
    float *t = lt_malloc((size_t)(N * C) * sizeof(float), "lora dinp buffer");
    if (!dxa || !t) { free(xd); free(dxa); free(t); return LT_ERR_OUT_OF_MEMORY; }
    /* dB(OC,R) += scale * dout^T @ xa */
    gemm_tn_acc(be, dB, dout, xa, N, OC, R, scale);
    /* dxa(N,R) = scale * dout @ B */
    gemm_nn(be, dxa, dout, B, N, OC, R, 0);
    for (int64_t i = 0; i < N * R; i++) dxa[i] *= scale;
    /* dA(R,C) += dxa^T @ xd */
    gemm_tn_acc(be, dA, dxa, xd ? xd : inp, N, R, C, 1.0f);
    /* dinp(N,C) += dropout_bwd(dxa @ A) */
    if (dinp) {
        gemm_nn(be, t, dxa, A, N, R, C, 0);
        float *di = dinp;
        if (p > 0.0f) {
            const float inv = 1.0f / (1.0f - p);
            for (int64_t e = 0; e < N * C; e++)
                if (lt_rng_keep(seed, stream, (uint64_t)e, p)) di[e] += t[e] * inv;
        } else {
            for (int64_t e = 0; e < N * C; e++) di[e] += t[e];
        }
    }
    free(xd); free(dxa); free(t);
    return LT_OK;
}

/* ---- LM head + cross-entropy, 32 tokens at a time ---- */
#define CE_CHUNK 32

typedef struct ce_ctx {
    float *logits; float *dh; const float *h, *head; const int32_t *tg;
    int64_t n0, T, C, V; float grad_scale; double *loss;
} ce_ctx;

/* softmax - onehot per token, in place over its logits row; loss in f64 */
static void ce_token(void *vctx, int64_t t) {
    ce_ctx *c = vctx;
    float *l = c->logits + t * c->V;
    const int32_t y = c->tg[c->n0 + t];
    if (y < 0) { memset(l, 0, (size_t)c->V * sizeof(float)); c->loss[c->n0 + t] = 0; return; }
    float mx = l[0];
    for (int64_t v = 1; v < c->V; v++) mx = l[v] > mx ? l[v] : mx;
    const double ly = l[y];
    /* one exp per logit: keep exp(l - max) in the row, then normalise */
    double s = 0;
    for (int64_t v = 0; v < c->V; v++) {
        const double e = exp((double)l[v] - mx);
        s += e;
        l[v] = (float)e;
    }
    c->loss[c->n0 + t] = mx + log(s) - ly;
    const double inv = 1.0 / s;
    for (int64_t v = 0; v < c->V; v++) l[v] = (float)(l[v] * inv) * c->grad_scale;
    l[y] = (float)(exp(ly - mx) * inv - 1.0) * c->grad_scale; /* with the one-hot term, in f64 */
}

lt_status lt_cpu_lm_head_ce(lt_backend *be, float *loss_sum, void *dh, const void *h, const lt_bweight *head,
                            const int32_t *targets, int64_t N, int64_t C, int64_t V, float grad_scale) {
    LT_CHECK_ARG(head->rows == V && head->cols == C, "lm_head_ce: head is [%lld, %lld], expected [%lld, %lld]",
                 (long long)head->rows, (long long)head->cols, (long long)V, (long long)C);
    for (int64_t n = 0; n < N; n++)
        if (targets[n] != -100 && (targets[n] < 0 || targets[n] >= V))
            return lt_error(LT_ERR_INVALID_ARGUMENT, "lm_head_ce: token %lld has target %d outside [0, %lld) "
                            "and is not -100 (ignored)", (long long)n, (int)targets[n], (long long)V);
    float *logits = lt_malloc((size_t)(CE_CHUNK * V) * sizeof(float), "lm_head_ce logits chunk");
    double *loss = lt_calloc((size_t)(N > 0 ? N : 1), sizeof(double), "lm_head_ce losses");
    if (!logits || !loss) { free(logits); free(loss); return LT_ERR_OUT_OF_MEMORY; }
    const float *hh = h;
    for (int64_t n0 = 0; n0 < N; n0 += CE_CHUNK) {
        const int64_t T = N - n0 < CE_CHUNK ? N - n0 : CE_CHUNK;
        int any = 0;
        for (int64_t t = 0; t < T; t++) any |= targets[n0 + t] >= 0;
        if (!any) { /* nothing to learn from this chunk */
            if (dh) memset((float *)dh + n0 * C, 0, (size_t)(T * C) * sizeof(float));
            continue;
        }
        gemm_nt(be, logits, hh + n0 * C, head->w, NULL, T, V, C);
        ce_ctx c = {logits, dh, hh, head->w, targets, n0, T, C, V, grad_scale, loss};
        lt_parallel_for(T, lt_cpu_threads_for(be, T, V * 30), ce_token, &c);
        if (dh) gemm_nn(be, (float *)dh + n0 * C, logits, head->w, T, V, C, 0); /* dh = dlogits @ head */
    }
    double total = 0;
    for (int64_t n = 0; n < N; n++) total += loss[n];
    loss_sum[0] += (float)total;
    free(logits);
    free(loss);
    return LT_OK;
}

lt_status lt_cpu_lm_head_logits(lt_backend *be, float *logits, const void *h, const lt_bweight *head, int64_t N,
                                int64_t C, int64_t V) {
    LT_CHECK_ARG(head->rows == V && head->cols == C, "lm_head_logits: head is [%lld, %lld], expected [%lld, %lld]",
                 (long long)head->rows, (long long)head->cols, (long long)V, (long long)C);
    gemm_nt(be, logits, h, head->w, NULL, N, V, C);
    return LT_OK;
}

/* cpu_lm_head.c - the LM head of the CPU backend: logits, and logits fused with cross-entropy
 * and its input gradient, without ever holding a [tokens, vocab] matrix.
 *
 * Tokens go in chunks of up to 64 (the kernel's vector lanes, 16 at a time); the vocabulary in
 * fixed segments of 1024 rows. For one chunk and one segment s (rows v of W, tokens t):
 *   e[v][t]  = exp(l[v][t] - m_s[t]),  l = W h, m_s = max over the segment,  z_s[t] = sum_v e
 *   G_s[c][t] = sum_v W[v][c] e[v][t]                     (while the segment is in cache)
 * and then per token, with lse = log sum_s z_s exp(m_s): loss = lse - l[y], and
 *   dh[t] = grad_scale * (sum_s exp(m_s - lse) G_s[.][t] - W[y]),
 * the softmax-minus-one-hot gradient. Segments are the parallel work; each writes only its own
 * m_s, z_s, G_s, and the per-token sums over s run in segment order afterwards, so every result
 * is the same for any thread count. The head is read once per chunk, one exp per logit.
 * lm_head_logits is lt_cpu_gemm_nt, whose logits are bit-identical to the ones used here. */
#include "backend/cpu/cpu_internal.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CE_T 64     /* tokens per chunk, a multiple of LT_CPU_NR */
#define CE_VS 1024  /* vocabulary rows per segment: W rows (x C floats) and e stay in L2 */
#define CE_KB 64    /* rows per step of the gradient product */

typedef struct head_ctx {
    const lt_cpu_kernels *kk;
    const float *W;        /* [V, C] */
    int64_t V, C, Tp, nseg, nwork;
    const float *ht;       /* [C, Tp] the chunk's hidden states, transposed, zero past T */
    const int32_t *tg;     /* [T] the chunk's targets (NULL: logits only) */
    int64_t T;
    float *scratch;        /* [nwork, CE_VS, Tp] e of the segment a worker is on */
    float *mx;             /* [nseg, Tp] m_s */
    double *z;             /* [nseg, Tp] z_s */
    float *ly;             /* [Tp] the target's logit */
    float *G;              /* [nseg, C, Tp] G_s, NULL when dh is not wanted */
} head_ctx;

/* e(rows, Tp) = W[v0 .. v0+rows) h^T */
static void seg_logits(const head_ctx *c, int64_t v0, int64_t rows, float *e, int64_t rsc, int64_t csc) {
    /* 6 rows of W stay in L1 while the chunk's token panels (ht, in L1 too) pass */
    for (int64_t i = 0; i < rows; i += LT_CPU_MR)
        for (int64_t j = 0; j < c->Tp; j += LT_CPU_NR) {
            const int mr = (int)(rows - i < LT_CPU_MR ? rows - i : LT_CPU_MR);
            c->kk->kern(c->C, c->W + (v0 + i) * c->C, c->C, 1, c->ht + j, c->Tp, e + i * rsc + j * csc, rsc, csc,
                        mr, LT_CPU_NR, 0);
        }
}

/* worker w takes segments [w*nseg/nwork, (w+1)*nseg/nwork): a fixed function of the segment,
 * whatever the split */
static void ce_work(void *vctx, int64_t w) {
    const head_ctx *c = vctx;
    float *e = c->scratch + w * CE_VS * c->Tp;
    for (int64_t s = w * c->nseg / c->nwork; s < (w + 1) * c->nseg / c->nwork; s++) {
        const int64_t v0 = s * CE_VS, rows = c->V - v0 < CE_VS ? c->V - v0 : CE_VS;
        seg_logits(c, v0, rows, e, c->Tp, 1);
        for (int64_t t = 0; t < c->T; t++) /* each target lies in exactly one segment */
            if (c->tg[t] >= v0 && c->tg[t] < v0 + rows) c->ly[t] = e[(c->tg[t] - v0) * c->Tp + t];
        for (int64_t j = 0; j < c->Tp; j += LT_CPU_NR) {
            c->kk->colmax(e + j, rows, c->Tp, c->mx + s * c->Tp + j);
            c->kk->colexp(e + j, rows, c->Tp, c->mx + s * c->Tp + j, c->z + s * c->Tp + j);
        }
        if (!c->G) continue;
        /* G_s(C, Tp) = W_s^T (C, rows) e (rows, Tp), 64 rows at a time so that those rows of e and
         * W stay in L1 while all (column, token) tiles pass; each tile goes on with its sums */
        float *g = c->G + s * c->C * c->Tp;
        for (int64_t k0 = 0; k0 < rows; k0 += CE_KB) {
            const int64_t kn = rows - k0 < CE_KB ? rows - k0 : CE_KB;
            for (int64_t i = 0; i < c->C; i += LT_CPU_MR)
                for (int64_t j = 0; j < c->Tp; j += LT_CPU_NR) {
                    const int mr = (int)(c->C - i < LT_CPU_MR ? c->C - i : LT_CPU_MR);
                    c->kk->kern(kn, c->W + (v0 + k0) * c->C + i, 1, c->C, e + k0 * c->Tp + j, c->Tp,
                                g + i * c->Tp + j, c->Tp, 1, mr, LT_CPU_NR, k0 > 0);
                }
        }
    }
}

/* dh[t][col] for col in one column: grad_scale * (sum_s sc[s][t] G_s[col][t] - W[y][col]) */
typedef struct dh_ctx {
    const head_ctx *h; const double *sc; float *dh; float gs;
} dh_ctx;

static void dh_col(void *vctx, int64_t col) {
    const dh_ctx *d = vctx;
    const head_ctx *c = d->h;
    double acc[CE_T];
    for (int64_t t = 0; t < c->Tp; t++) acc[t] = 0;
    for (int64_t s = 0; s < c->nseg; s++) {
        const float *g = c->G + (s * c->C + col) * c->Tp;
        const double *sc = d->sc + s * c->Tp;
        for (int64_t t = 0; t < c->Tp; t++) acc[t] += sc[t] * g[t];
    }
    for (int64_t t = 0; t < c->T; t++)
        d->dh[t * c->C + col] = c->tg[t] < 0 ? 0.0f
                                : (float)(d->gs * (acc[t] - (double)c->W[(int64_t)c->tg[t] * c->C + col]));
}

static void pack_ht(float *ht, const float *h, int64_t T, int64_t Tp, int64_t C) {
    for (int64_t k = 0; k < C; k++)
        for (int64_t t = 0; t < Tp; t++) ht[k * Tp + t] = t < T ? h[t * C + k] : 0.0f;
}

static int64_t n_work(lt_backend *be, int64_t nseg, int64_t Tp, int64_t C) {
    int64_t w = lt_cpu_threads_for(be, nseg, CE_VS * Tp * C * 2);
    return w < nseg ? w : nseg;
}

lt_status lt_cpu_lm_head_ce(lt_backend *be, float *loss_sum, void *dh, const void *h, const lt_bweight *head,
                            const int32_t *targets, int64_t N, int64_t C, int64_t V, float grad_scale) {
    LT_CHECK_ARG(head->rows == V && head->cols == C, "lm_head_ce: head is [%lld, %lld], expected [%lld, %lld]",
                 (long long)head->rows, (long long)head->cols, (long long)V, (long long)C);
    for (int64_t n = 0; n < N; n++)
        if (targets[n] != -100 && (targets[n] < 0 || targets[n] >= V))
            return lt_error(LT_ERR_INVALID_ARGUMENT, "lm_head_ce: token %lld has target %d outside [0, %lld) "
                            "and is not -100 (ignored)", (long long)n, (int)targets[n], (long long)V);
    if (N <= 0) return LT_OK;
    head_ctx c;
    memset(&c, 0, sizeof c);
    c.kk = lt_cpu_kernels_get();
    c.W = head->w; c.V = V; c.C = C;
    c.nseg = (V + CE_VS - 1) / CE_VS;
    const int64_t Tmax = N < CE_T ? (N + LT_CPU_NR - 1) / LT_CPU_NR * LT_CPU_NR : CE_T;
    c.nwork = n_work(be, c.nseg, Tmax, C);
    float *ht = lt_malloc((size_t)(C * Tmax) * sizeof(float), "lm_head_ce hidden chunk");
    c.scratch = lt_malloc((size_t)(c.nwork * CE_VS * Tmax) * sizeof(float), "lm_head_ce segment logits");
    c.mx = lt_malloc((size_t)(c.nseg * Tmax) * sizeof(float), "lm_head_ce segment maxima");
    c.z = lt_malloc((size_t)(c.nseg * Tmax) * sizeof(double), "lm_head_ce segment sums");
    double *sc = lt_malloc((size_t)(c.nseg * Tmax) * sizeof(double), "lm_head_ce segment scales");
    c.ly = lt_malloc((size_t)Tmax * sizeof(float), "lm_head_ce target logits");
    double *loss = lt_calloc((size_t)N, sizeof(double), "lm_head_ce losses");
    if (dh) c.G = lt_malloc((size_t)(c.nseg * C * Tmax) * sizeof(float), "lm_head_ce segment gradients");
    lt_status st = LT_OK;
    if (!ht || !c.scratch || !c.mx || !c.z || !sc || !c.ly || !loss || (dh && !c.G)) {
        st = LT_ERR_OUT_OF_MEMORY;
        goto done;
    }
    const float *hh = h;
    for (int64_t n0 = 0; n0 < N; n0 += CE_T) {
        const int64_t T = N - n0 < CE_T ? N - n0 : CE_T;
        int any = 0;
        for (int64_t t = 0; t < T; t++) any |= targets[n0 + t] >= 0;
        if (!any) { /* nothing to learn from this chunk */
            if (dh) memset((float *)dh + n0 * C, 0, (size_t)(T * C) * sizeof(float));
            continue;
        }
        c.T = T;
        c.Tp = (T + LT_CPU_NR - 1) / LT_CPU_NR * LT_CPU_NR;
        c.tg = targets + n0;
        c.ht = ht;
        pack_ht(ht, hh + n0 * C, T, c.Tp, C);
        lt_parallel_for(c.nwork, (int)c.nwork, ce_work, &c);
        /* per token, over segments in order: lse, the loss, and the segments' softmax scales */
        for (int64_t t = 0; t < c.Tp; t++) {
            if (t >= T || c.tg[t] < 0) {
                for (int64_t s = 0; s < c.nseg; s++) sc[s * c.Tp + t] = 0;
                continue;
            }
            double m = -INFINITY, z = 0;
            for (int64_t s = 0; s < c.nseg; s++) m = fmax(m, (double)c.mx[s * c.Tp + t]);
            for (int64_t s = 0; s < c.nseg; s++) z += c.z[s * c.Tp + t] * exp((double)c.mx[s * c.Tp + t] - m);
            const double lse = m + log(z);
            loss[n0 + t] = lse - (double)c.ly[t];
            for (int64_t s = 0; s < c.nseg; s++) sc[s * c.Tp + t] = exp((double)c.mx[s * c.Tp + t] - lse);
        }
        if (dh) {
            dh_ctx d = {&c, sc, (float *)dh + n0 * C, grad_scale};
            lt_parallel_for(C, lt_cpu_threads_for(be, C, c.nseg * c.Tp * 2), dh_col, &d);
        }
    }
    double total = 0;
    for (int64_t n = 0; n < N; n++) total += loss[n];
    loss_sum[0] += (float)total;
done:
    free(ht); free(c.scratch); free(c.mx); free(c.z); free(sc); free(c.ly); free(loss); free(c.G);
    return st;
}

lt_status lt_cpu_lm_head_logits(lt_backend *be, float *logits, const void *h, const lt_bweight *head, int64_t N,
                                int64_t C, int64_t V) {
    LT_CHECK_ARG(head->rows == V && head->cols == C, "lm_head_logits: head is [%lld, %lld], expected [%lld, %lld]",
                 (long long)head->rows, (long long)head->cols, (long long)V, (long long)C);
    /* the same kernel and k order as the loss's logits, and as linear_fwd */
    return lt_cpu_gemm_nt(be, logits, h, head->w, NULL, N, V, C);
}

/* cpu_lm_head.c - the LM head of the CPU backend: logits, and logits fused with cross-entropy
 * and its input gradient, without ever holding a [tokens, vocab] matrix.
 *
 * Tokens go in chunks of up to 64 (the kernel's vector lanes, 16 at a time), chunks in blocks
 * of up to 4; the vocabulary in fixed segments of 1024 rows. For one chunk and one segment s
 * (rows v of W, tokens t):
 *   e[v][t]  = exp(l[v][t] - m_s[t]),  l = W h, m_s = max over the segment,  z_s[t] = sum_v e
 *   G_s[c][t] = sum_v W[v][c] e[v][t]                     (while the segment is in cache)
 * and then per token, with lse = log sum_s z_s exp(m_s): loss = lse - l[y], and
 *   dh[t] = grad_scale * (sum_s exp(m_s - lse) G_s[.][t] - W[y]),
 * the softmax-minus-one-hot gradient. Segments are the parallel work, taken by whichever worker
 * is free; each writes only its own m_s, z_s, G_s, and the per-token sums over s run in segment
 * order afterwards, so every result is the same for any thread count. The head passes through
 * cache once per block of chunks (a segment meets all the block's chunks in turn), and there is
 * one exp per logit.
 * lm_head_logits is lt_cpu_gemm_nt, whose logits are bit-identical to the ones used here. */
#include "backend/cpu/cpu_internal.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CE_T 64     /* tokens per chunk, a multiple of LT_CPU_NR */
#define CE_VS 1024  /* vocabulary rows per segment: W rows (x C floats) and e stay in L2 */
#define CE_KB 64    /* rows per step of the gradient product */
#define CE_Q 4      /* chunks per block: W passes through cache once per block */

typedef struct head_ctx {
    const lt_cpu_kernels *kk;
    const float *W;        /* [V, C] */
    int64_t V, C, nseg, nwork, nq;
    /* chunk q of the block (q < nq): tokens n0 + q*CE_T + t, t < T[q] (Tp[q] lanes) */
    int64_t T[CE_Q], Tp[CE_Q];
    const float *ht;       /* [nq, C, CE_T] the chunks' hidden states, transposed, zero past T */
    const int32_t *tg;     /* [nq * CE_T] the block's targets */
    float *scratch;        /* [nwork, CE_VS, CE_T] e of the segment a worker is on */
    float *mx;             /* [nq, nseg, CE_T] m_s */
    double *z;             /* [nq, nseg, CE_T] z_s */
    float *ly;             /* [nq * CE_T] the target's logit */
    float *G;              /* [nq, nseg, C, CE_T] G_s, NULL when dh is not wanted */
    int64_t next_seg;      /* the next segment a worker takes (atomic) */
} head_ctx;

/* e(rows, Tp) = W[v0 .. v0+rows) h^T for chunk q */
static void seg_logits(const head_ctx *c, int64_t q, int64_t v0, int64_t rows, float *e) {
    const float *ht = c->ht + q * c->C * CE_T;
    /* 6 rows of W stay in L1 while the chunk's token panels (ht, in L1 too) pass */
    for (int64_t i = 0; i < rows; i += LT_CPU_MR)
        for (int64_t j = 0; j < c->Tp[q]; j += LT_CPU_NR) {
            const int mr = (int)(rows - i < LT_CPU_MR ? rows - i : LT_CPU_MR);
            c->kk->kern(c->C, c->W + (v0 + i) * c->C, c->C, 1, ht + j, CE_T, e + i * CE_T + j, CE_T, 1, mr,
                        LT_CPU_NR, 0);
        }
}

/* workers take the next segment until none is left (a slow or descheduled thread holds back
 * nothing), and each segment meets all chunks of the block while its rows of W are in cache:
 * every result is a fixed function of (chunk, segment), whoever computes it */
static void ce_work(void *vctx, int64_t w) {
    head_ctx *c = vctx;
    float *e = c->scratch + w * CE_VS * CE_T;
    for (;;) {
        const int64_t s = __atomic_fetch_add(&c->next_seg, 1, __ATOMIC_RELAXED);
        if (s >= c->nseg) break;
        const int64_t v0 = s * CE_VS, rows = c->V - v0 < CE_VS ? c->V - v0 : CE_VS;
        for (int64_t q = 0; q < c->nq; q++) {
            if (!c->T[q]) continue; /* a chunk without targets */
            const int32_t *tg = c->tg + q * CE_T;
            float *mx = c->mx + (q * c->nseg + s) * CE_T;
            double *z = c->z + (q * c->nseg + s) * CE_T;
            seg_logits(c, q, v0, rows, e);
            for (int64_t t = 0; t < c->T[q]; t++) /* each target lies in exactly one segment */
                if (tg[t] >= v0 && tg[t] < v0 + rows) c->ly[q * CE_T + t] = e[(tg[t] - v0) * CE_T + t];
            for (int64_t j = 0; j < c->Tp[q]; j += LT_CPU_NR) {
                c->kk->colmax(e + j, rows, CE_T, mx + j);
                c->kk->colexp(e + j, rows, CE_T, mx + j, z + j);
            }
            if (!c->G) continue;
            /* G_s(C, Tp) = W_s^T (C, rows) e (rows, Tp), 64 rows at a time so that those rows of e
             * and W stay in L1 while all (column, token) tiles pass; each tile goes on with its sums */
            float *g = c->G + (q * c->nseg + s) * c->C * CE_T;
            for (int64_t k0 = 0; k0 < rows; k0 += CE_KB) {
                const int64_t kn = rows - k0 < CE_KB ? rows - k0 : CE_KB;
                for (int64_t i = 0; i < c->C; i += LT_CPU_MR)
                    for (int64_t j = 0; j < c->Tp[q]; j += LT_CPU_NR) {
                        const int mr = (int)(c->C - i < LT_CPU_MR ? c->C - i : LT_CPU_MR);
                        c->kk->kern(kn, c->W + (v0 + k0) * c->C + i, 1, c->C, e + k0 * CE_T + j, CE_T,
                                    g + i * CE_T + j, CE_T, 1, mr, LT_CPU_NR, k0 > 0);
                    }
            }
        }
    }
}

/* dh[t][col] of chunk q, for col in one column: grad_scale * (sum_s sc[s][t] G_s[col][t] - W[y][col]) */
typedef struct dh_ctx {
    const head_ctx *h; int64_t q; const double *sc; float *dh; float gs;
} dh_ctx;

static void dh_col(void *vctx, int64_t col) {
    const dh_ctx *d = vctx;
    const head_ctx *c = d->h;
    const int64_t Tp = c->Tp[d->q], T = c->T[d->q];
    const int32_t *tg = c->tg + d->q * CE_T;
    double acc[CE_T];
    for (int64_t t = 0; t < Tp; t++) acc[t] = 0;
    for (int64_t s = 0; s < c->nseg; s++) {
        const float *g = c->G + ((d->q * c->nseg + s) * c->C + col) * CE_T;
        const double *sc = d->sc + s * CE_T;
        for (int64_t t = 0; t < Tp; t++) acc[t] += sc[t] * g[t];
    }
    for (int64_t t = 0; t < T; t++)
        d->dh[t * c->C + col] = tg[t] < 0 ? 0.0f : (float)(d->gs * (acc[t] - (double)c->W[(int64_t)tg[t] * c->C + col]));
}

static void pack_ht(float *ht, const float *h, int64_t T, int64_t C) {
    for (int64_t k = 0; k < C; k++)
        for (int64_t t = 0; t < CE_T; t++) ht[k * CE_T + t] = t < T ? h[t * C + k] : 0.0f;
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
    /* chunks per block: W is read from memory once per block; the G_s of a block take
     * nq * V * C / 16 bytes, so wide models go one chunk at a time */
    const int64_t nchunk = (N + CE_T - 1) / CE_T;
    const int64_t qmax = C <= 256 ? (nchunk < CE_Q ? nchunk : CE_Q) : 1;
    const int64_t Tp1 = N < CE_T ? (N + LT_CPU_NR - 1) / LT_CPU_NR * LT_CPU_NR : CE_T;
    c.nwork = lt_cpu_threads_for(be, c.nseg, CE_VS * Tp1 * qmax * C * 2);
    if (c.nwork > c.nseg) c.nwork = c.nseg;
    float *ht = lt_malloc((size_t)(qmax * C * CE_T) * sizeof(float), "lm_head_ce hidden chunks");
    c.scratch = lt_malloc((size_t)(c.nwork * CE_VS * CE_T) * sizeof(float), "lm_head_ce segment logits");
    c.mx = lt_malloc((size_t)(qmax * c.nseg * CE_T) * sizeof(float), "lm_head_ce segment maxima");
    c.z = lt_malloc((size_t)(qmax * c.nseg * CE_T) * sizeof(double), "lm_head_ce segment sums");
    double *sc = lt_malloc((size_t)(c.nseg * CE_T) * sizeof(double), "lm_head_ce segment scales");
    c.ly = lt_malloc((size_t)(qmax * CE_T) * sizeof(float), "lm_head_ce target logits");
    int32_t *tg = lt_malloc((size_t)(qmax * CE_T) * sizeof(int32_t), "lm_head_ce targets");
    double *loss = lt_calloc((size_t)N, sizeof(double), "lm_head_ce losses");
    if (dh) c.G = lt_malloc((size_t)(qmax * c.nseg * C * CE_T) * sizeof(float), "lm_head_ce segment gradients");
    lt_status st = LT_OK;
    if (!ht || !c.scratch || !c.mx || !c.z || !sc || !c.ly || !tg || !loss || (dh && !c.G)) {
        st = LT_ERR_OUT_OF_MEMORY;
        goto done;
    }
    const float *hh = h;
    c.ht = ht;
    c.tg = tg;
    for (int64_t b0 = 0; b0 < N; b0 += qmax * CE_T) {
        c.nq = (N - b0 + CE_T - 1) / CE_T < qmax ? (N - b0 + CE_T - 1) / CE_T : qmax;
        int any_block = 0;
        for (int64_t q = 0; q < c.nq; q++) {
            const int64_t n0 = b0 + q * CE_T, T = N - n0 < CE_T ? N - n0 : CE_T;
            int any = 0;
            for (int64_t t = 0; t < CE_T; t++) tg[q * CE_T + t] = t < T ? targets[n0 + t] : -100;
            for (int64_t t = 0; t < T; t++) any |= targets[n0 + t] >= 0;
            /* a chunk with nothing to learn from: T = 0, no work, zero dh */
            c.T[q] = any ? T : 0;
            c.Tp[q] = any ? (T + LT_CPU_NR - 1) / LT_CPU_NR * LT_CPU_NR : 0;
            if (!any && dh) memset((float *)dh + n0 * C, 0, (size_t)(T * C) * sizeof(float));
            if (any) pack_ht(ht + q * C * CE_T, hh + n0 * C, T, C);
            any_block |= any;
        }
        if (!any_block) continue;
        c.next_seg = 0;
        lt_parallel_for(c.nwork, (int)c.nwork, ce_work, &c);
        for (int64_t q = 0; q < c.nq; q++) {
            if (!c.T[q]) continue;
            const int64_t n0 = b0 + q * CE_T;
            const int32_t *tq = tg + q * CE_T;
            /* per token, over segments in order: lse, the loss, and the segments' softmax scales */
            for (int64_t t = 0; t < c.Tp[q]; t++) {
                const float *mx = c.mx + q * c.nseg * CE_T + t;
                const double *z = c.z + q * c.nseg * CE_T + t;
                if (t >= c.T[q] || tq[t] < 0) {
                    for (int64_t s = 0; s < c.nseg; s++) sc[s * CE_T + t] = 0;
                    continue;
                }
                double m = -INFINITY, zs = 0;
                for (int64_t s = 0; s < c.nseg; s++) m = fmax(m, (double)mx[s * CE_T]);
                for (int64_t s = 0; s < c.nseg; s++) {
                    const double ex = exp((double)mx[s * CE_T] - m);
                    sc[s * CE_T + t] = ex;
                    zs += z[s * CE_T] * ex;
                }
                loss[n0 + t] = m + log(zs) - (double)c.ly[q * CE_T + t];
                /* exp(m_s - lse) = exp(m_s - m) / zs */
                for (int64_t s = 0; s < c.nseg; s++) sc[s * CE_T + t] /= zs;
            }
            if (dh) {
                dh_ctx d = {&c, q, sc, (float *)dh + n0 * C, grad_scale};
                lt_parallel_for(C, lt_cpu_threads_for(be, C, c.nseg * c.Tp[q] * 2), dh_col, &d);
            }
        }
    }
    double total = 0;
    for (int64_t n = 0; n < N; n++) total += loss[n];
    loss_sum[0] += (float)total;
done:
    free(ht); free(c.scratch); free(c.mx); free(c.z); free(sc); free(c.ly); free(tg); free(loss); free(c.G);
    return st;
}

lt_status lt_cpu_lm_head_logits(lt_backend *be, float *logits, const void *h, const lt_bweight *head, int64_t N,
                                int64_t C, int64_t V) {
    LT_CHECK_ARG(head->rows == V && head->cols == C, "lm_head_logits: head is [%lld, %lld], expected [%lld, %lld]",
                 (long long)head->rows, (long long)head->cols, (long long)V, (long long)C);
    /* the same kernel and k order as the loss's logits, and as linear_fwd */
    return lt_cpu_gemm_nt(be, logits, h, head->w, NULL, N, V, C);
}

/* ---- soft-capped logits (Gemma 2): z -> cap * tanh(z / cap) ----
 * A plain path over chunks of 64 tokens: their logits (the gemm above), capped, then the CE
 * and, for dh, the softmax-minus-one-hot gradient times the cap's derivative 1 - tanh^2,
 * multiplied back through the head. */
lt_status lt_cpu_lm_head_logits_cap(lt_backend *be, float *logits, const void *h, const lt_bweight *head, int64_t N,
                                    int64_t C, int64_t V, float softcap) {
    LT_TRY(lt_cpu_lm_head_logits(be, logits, h, head, N, C, V));
    if (softcap > 0)
        for (int64_t i = 0; i < N * V; i++) logits[i] = tanhf(logits[i] / softcap) * softcap;
    return LT_OK;
}

lt_status lt_cpu_lm_head_ce_cap(lt_backend *be, float *loss_sum, void *dh, const void *h, const lt_bweight *head,
                                const int32_t *targets, int64_t N, int64_t C, int64_t V, float grad_scale,
                                float softcap) {
    if (!(softcap > 0)) return lt_cpu_lm_head_ce(be, loss_sum, dh, h, head, targets, N, C, V, grad_scale);
    LT_CHECK_ARG(head->rows == V && head->cols == C, "lm_head_ce: head is [%lld, %lld], expected [%lld, %lld]",
                 (long long)head->rows, (long long)head->cols, (long long)V, (long long)C);
    const int64_t T = 64;
    float *lg = lt_malloc((size_t)(T * V) * sizeof(float), "soft-capped logits");
    if (!lg) return LT_ERR_OUT_OF_MEMORY;
    const float *hh = h;
    float *d = dh;
    double loss = 0;
    lt_status st = LT_OK;
    for (int64_t t0 = 0; t0 < N && st == LT_OK; t0 += T) {
        const int64_t n = N - t0 < T ? N - t0 : T;
        st = lt_cpu_gemm_nt(be, lg, hh + t0 * C, head->w, NULL, n, V, C);
        for (int64_t t = 0; st == LT_OK && t < n; t++) {
            float *z = lg + t * V;
            float *dt = d ? d + (t0 + t) * C : NULL;
            if (dt) memset(dt, 0, (size_t)C * sizeof(float));
            const int32_t y = targets[t0 + t];
            if (y == -100) continue;
            if (y < 0 || y >= V) {
                st = lt_error(LT_ERR_INVALID_ARGUMENT, "lm_head_ce: target %d of token %lld is outside [0, %lld)",
                              (int)y, (long long)(t0 + t), (long long)V);
                break;
            }
            float mx = -INFINITY;
            for (int64_t v = 0; v < V; v++) {
                z[v] = tanhf(z[v] / softcap) * softcap;
                mx = z[v] > mx ? z[v] : mx;
            }
            double sum = 0;
            for (int64_t v = 0; v < V; v++) sum += exp((double)z[v] - mx);
            const double lse = mx + log(sum);
            loss += lse - z[y];
            if (!dt) continue;
            for (int64_t v = 0; v < V; v++) {
                const float c = z[v] / softcap; /* tanh of the raw logit */
                float g = (float)exp((double)z[v] - lse) - (v == y ? 1.0f : 0.0f);
                g *= grad_scale * (1.0f - c * c);
                if (g != 0.0f) lt_cpu_axpy(dt, g, head->w + v * C, C);
            }
        }
    }
    free(lg);
    if (st == LT_OK) *loss_sum += (float)loss;
    return st;
}

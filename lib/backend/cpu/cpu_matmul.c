/* cpu_matmul.c - the matrix products of the CPU reference: frozen linear layers and the LoRA
 * branch (with its dropout mask from the shared Philox stream); the LM head is in cpu_lm_head.c.
 * Work is split over output tiles; every sum runs in a fixed order, so results do not depend on
 * the thread count. */
#include "backend/cpu/cpu_internal.h"
#include "core/rng.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- out(N,M) = a(N,K) @ b(M,K)^T (+ bias) ----
 * a is packed transposed in panels of 16 rows ([N/16][K][16], zero past N): the kernel's vector
 * lanes run over a's rows and it broadcasts b's rows. Work items are (block of NT_MB rows of b,
 * panel), panels inner so a block of b stays in cache while all panels pass. Every element is one
 * k-ordered sum (lt_cpu_kernels.kern), so lm_head_logits and the LM head's loss see the very
 * same logits as this. */
#define NT_MB 384
typedef struct nt_ctx {
    const lt_cpu_kernels *kk;
    float *out; const float *ap, *b, *bias; int64_t N, M, K, npan;
} nt_ctx;

static void nt_tile(void *vctx, int64_t t) {
    const nt_ctx *c = vctx;
    const int64_t p = t % c->npan, m0 = (t / c->npan) * NT_MB;
    const int64_t m1 = m0 + NT_MB < c->M ? m0 + NT_MB : c->M;
    const int64_t n0 = p * LT_CPU_NR;
    const int nr = (int)(c->N - n0 < LT_CPU_NR ? c->N - n0 : LT_CPU_NR);
    float *o = c->out + n0 * c->M;
    for (int64_t m = m0; m < m1; m += LT_CPU_MR) {
        const int mr = (int)(m1 - m < LT_CPU_MR ? m1 - m : LT_CPU_MR);
        /* out[n][m] = (i over rows of b) x (j over the panel's rows of a): stored transposed */
        c->kk->kern(c->K, c->b + m * c->K, c->K, 1, c->ap + p * c->K * LT_CPU_NR, LT_CPU_NR, o + m, 1, c->M, mr, nr,
                    0);
    }
    if (c->bias)
        for (int64_t n = 0; n < nr; n++)
            for (int64_t m = m0; m < m1; m++) o[n * c->M + m] += c->bias[m];
}

typedef struct pack_ctx { float *ap; const float *a; int64_t N, K; } pack_ctx;

static void pack_panel(void *vctx, int64_t p) {
    const pack_ctx *c = vctx;
    float *dst = c->ap + p * c->K * LT_CPU_NR;
    const int64_t n0 = p * LT_CPU_NR;
    for (int64_t j = 0; j < LT_CPU_NR; j++) {
        if (n0 + j < c->N) {
            const float *src = c->a + (n0 + j) * c->K;
            for (int64_t k = 0; k < c->K; k++) dst[k * LT_CPU_NR + j] = src[k];
        } else {
            for (int64_t k = 0; k < c->K; k++) dst[k * LT_CPU_NR + j] = 0.0f;
        }
    }
}

lt_status lt_cpu_gemm_nt(lt_backend *be, float *out, const float *a, const float *b, const float *bias, int64_t N,
                         int64_t M, int64_t K) {
    if (N <= 0 || M <= 0) return LT_OK;
    const int64_t npan = (N + LT_CPU_NR - 1) / LT_CPU_NR;
    float *ap = lt_malloc((size_t)(npan * K * LT_CPU_NR + 1) * sizeof(float), "matmul packed input");
    if (!ap) return LT_ERR_OUT_OF_MEMORY;
    pack_ctx pc = {ap, a, N, K};
    lt_parallel_for(npan, lt_cpu_threads_for(be, npan, K * LT_CPU_NR * 4), pack_panel, &pc);
    nt_ctx c = {lt_cpu_kernels_get(), out, ap, b, bias, N, M, K, npan};
    const int64_t tiles = ((M + NT_MB - 1) / NT_MB) * npan;
    const int64_t mb = M < NT_MB ? M : NT_MB;
    lt_parallel_for(tiles, lt_cpu_threads_for(be, tiles, (int64_t)LT_CPU_NR * mb * K * 2), nt_tile, &c);
    free(ap);
    return LT_OK;
}

/* ---- out(N,K) (+)= a(N,M) @ b(M,K), tiles of 8 rows x 256 columns, sum over m in order (the
 * portable path for K not a multiple of 16) ---- */
#define TN 8
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

/* With K a multiple of 16, the SIMD kernel: tiles of 6 rows of out x 16 columns, a's values
 * broadcast, b's rows read in place; each element one m-ordered sum (from out's value when
 * accumulating). */
typedef struct nnk_ctx {
    const lt_cpu_kernels *kk; float *out; const float *a, *b; int64_t N, M, K; int accumulate;
} nnk_ctx;

static void nnk_rows(void *vctx, int64_t t) {
    const nnk_ctx *c = vctx;
    const int64_t n0 = t * LT_CPU_MR;
    const int mr = (int)(c->N - n0 < LT_CPU_MR ? c->N - n0 : LT_CPU_MR);
    for (int64_t k0 = 0; k0 < c->K; k0 += LT_CPU_NR)
        c->kk->kern(c->M, c->a + n0 * c->M, c->M, 1, c->b + k0, c->K, c->out + n0 * c->K + k0, c->K, 1, mr,
                    LT_CPU_NR, c->accumulate);
}

static void gemm_nn(lt_backend *be, float *out, const float *a, const float *b, int64_t N, int64_t M, int64_t K,
                    int accumulate) {
    if (K % LT_CPU_NR == 0) {
        nnk_ctx k = {lt_cpu_kernels_get(), out, a, b, N, M, K, accumulate};
        const int64_t tiles = (N + LT_CPU_MR - 1) / LT_CPU_MR;
        lt_parallel_for(tiles, lt_cpu_threads_for(be, tiles, (int64_t)LT_CPU_MR * K * M * 2), nnk_rows, &k);
        return;
    }
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
    return lt_cpu_gemm_nt(be, out, inp, W->w, bias, N, W->rows, W->cols);
}

lt_status lt_cpu_linear_bwd_input(lt_backend *be, void *dinp, const void *dout, const lt_bweight *W, int64_t N,
                                  int accumulate) {
    gemm_nn(be, dinp, dout, W->w, N, W->rows, W->cols, accumulate);
    return LT_OK;
}

/* ---- LoRA ---- */
/* xd(N,C) = dropout(inp): element n*C + c kept when lt_rng_keep(seed, stream, n*C + c, p), and
 * then scaled by 1/(1-p) (a float32 factor, as torch's mask holds it); a stream with a row
 * offset (rng.h) draws the masks of the rows it names (the key of lt_drop_key_rows). */
typedef struct drop_ctx {
    float *xd; uint8_t *keep; const float *x; int64_t C; float p, inv; uint64_t seed, stream;
} drop_ctx;

/* One lt_drop_bits draw gives the keep decisions of 4 consecutive elements (lt_rng_keep's mapping). */
static void dropout_row(void *vctx, int64_t n) {
    drop_ctx *c = vctx;
    int64_t e = n * c->C;
    const int64_t end = e + c->C;
    const uint64_t key = lt_drop_key_rows(c->seed, c->stream, (uint64_t)c->C);
    const uint32_t thr = lt_drop_threshold(c->p);
    while (e < end) {
        const uint64_t bits = lt_drop_bits(key, (uint64_t)e >> 2);
        for (int64_t q = e & 3; q < 4 && e < end; q++, e++) {
            const int keep = (uint32_t)((bits >> (16 * q)) & 0xFFFFu) >= thr;
            c->xd[e] = keep ? c->x[e] * c->inv : 0.0f;
            if (c->keep) c->keep[e] = (uint8_t)keep;
        }
    }
}

/* xd = dropout(inp) and, when keep_out is given, the keep mask [N*C] too */
static lt_status lora_dropout(lt_backend *be, const float *inp, int64_t N, int64_t C, float p, uint64_t seed,
                              uint64_t stream, float **xd_out, uint8_t **keep_out) {
    *xd_out = NULL;
    if (keep_out) *keep_out = NULL;
    LT_CHECK_ARG(p >= 0.0f && p < 1.0f, "lora: dropout %g must be in [0, 1)", (double)p);
    if (p == 0.0f) return LT_OK;
    float *xd = lt_malloc((size_t)(N * C) * sizeof(float), "lora dropout buffer");
    uint8_t *keep = keep_out ? lt_malloc((size_t)(N * C), "lora dropout mask") : NULL;
    if (!xd || (keep_out && !keep)) { free(xd); free(keep); return LT_ERR_OUT_OF_MEMORY; }
    drop_ctx c = {xd, keep, inp, C, p, 1.0f / (1.0f - p), seed, stream};
    lt_parallel_for(N, lt_cpu_threads_for(be, N, C * 15), dropout_row, &c);
    *xd_out = xd;
    if (keep_out) *keep_out = keep;
    return LT_OK;
}

/* dinp += keep ? t / (1-p) : 0, row by row */
typedef struct dinp_ctx { float *di; const float *t; const uint8_t *keep; int64_t C; float inv; } dinp_ctx;
static void dinp_row(void *vctx, int64_t n) {
    const dinp_ctx *c = vctx;
    float *di = c->di + n * c->C;
    const float *t = c->t + n * c->C;
    if (c->keep) {
        const uint8_t *k = c->keep + n * c->C;
        for (int64_t i = 0; i < c->C; i++)
            if (k[i]) di[i] += t[i] * c->inv;
    } else {
        for (int64_t i = 0; i < c->C; i++) di[i] += t[i];
    }
}

lt_status lt_cpu_lora_fwd(lt_backend *be, void *out, void *xa, const void *inp, const float *A, const float *B,
                          int64_t N, int64_t C, int64_t OC, int64_t R, float scale, float p, uint64_t seed,
                          uint64_t stream) {
    float *xd = NULL;
    LT_TRY(lora_dropout(be, inp, N, C, p, seed, stream, &xd, NULL));
    if (!out) { /* xa only (the checkpoint recompute of a projection whose output is not needed) */
        lt_status st = lt_cpu_gemm_nt(be, xa, xd ? xd : inp, A, NULL, N, R, C);
        free(xd);
        return st;
    }
    float *tmp = lt_malloc((size_t)(N * OC) * sizeof(float), "lora output buffer");
    if (!tmp) { free(xd); return LT_ERR_OUT_OF_MEMORY; }
    lt_status st = lt_cpu_gemm_nt(be, xa, xd ? xd : inp, A, NULL, N, R, C); /* xa(N,R) = xd @ A^T */
    if (st == LT_OK) st = lt_cpu_gemm_nt(be, tmp, xa, B, NULL, N, OC, R);  /* (N,OC) = xa @ B^T */
    if (st != LT_OK) { free(tmp); free(xd); return st; }
    float *o = out;
    for (int64_t i = 0; i < N * OC; i++) o[i] += tmp[i] * scale; /* PEFT: base + lora_B(..) * scaling */
    free(tmp);
    free(xd);
    return LT_OK;
}

/* out(N,OC) += scale * xa(N,R) @ B^T, in lt_cpu_lora_fwd's order */
static lt_status lora_up_add(lt_backend *be, float *out, const void *xa, const float *B, int64_t N, int64_t OC,
                             int64_t R, float scale) {
    float *tmp = lt_malloc((size_t)(N * OC) * sizeof(float), "lora output buffer");
    if (!tmp) return LT_ERR_OUT_OF_MEMORY;
    lt_status st = lt_cpu_gemm_nt(be, tmp, xa, B, NULL, N, OC, R);
    if (st == LT_OK)
        for (int64_t i = 0; i < N * OC; i++) out[i] += tmp[i] * scale;
    free(tmp);
    return st;
}

/* The reference has nothing to fuse: each base product (with its bias), then its LoRA
 * up-projection. */
lt_status lt_cpu_linear_lora_group_fwd(lt_backend *be, int n, void *const *out, const void *inp,
                                       const lt_bweight *const *W, const float *const *bias, const void *const *xa,
                                       const float *const *B, int64_t N, int64_t R, float scale) {
    for (int s = 0; s < n; s++) {
        LT_TRY(lt_cpu_linear_fwd(be, out[s], inp, W[s], bias[s], N));
        LT_TRY(lora_up_add(be, out[s], xa[s], B[s], N, W[s]->rows, R, scale));
    }
    return LT_OK;
}

/* The ops that fuse several LoRA modules or a residual add on the GPU are, in the reference,
 * the plain ops one after the other. */
lt_status lt_cpu_lora_xa_multi(lt_backend *be, int n, void *const *xa, const void *inp, const float *const *A,
                               int64_t N, int64_t C, int64_t R, float p, uint64_t seed, const uint64_t *streams) {
    for (int s = 0; s < n; s++)
        LT_TRY(lt_cpu_lora_fwd(be, NULL, xa[s], inp, A[s], NULL, N, C, 0, R, 1.0f, p, seed, streams[s]));
    return LT_OK;
}

lt_status lt_cpu_lora_bwd_multi(lt_backend *be, int n, float *const *dA, float *const *dB, void *dinp,
                                const void *const *dout, const void *inp, const void *const *xa,
                                const float *const *A, const float *const *B, int64_t N, int64_t C,
                                const int64_t *OC, int64_t R, float scale, float p, uint64_t seed,
                                const uint64_t *streams) {
    LT_CHECK_ARG(dinp, "lora_bwd_multi: needs the input gradient"); /* as the CUDA backend (backend.h) */
    for (int s = 0; s < n; s++)
        LT_TRY(lt_cpu_lora_bwd(be, dA[s], dB[s], dinp, dout[s], inp, xa[s], A[s], B[s], N, C, OC[s], R, scale, p, seed,
                               streams[s]));
    return LT_OK;
}

/* out = a + (b + scale * xa @ B^T): the up-projection added to the product first, as
 * lt_cpu_lora_fwd does, then the residual */
lt_status lt_cpu_add_lora(lt_backend *be, void *out, const void *a, const void *b, const void *xa, const float *B,
                          int64_t N, int64_t OC, int64_t R, float scale) {
    float *t = lt_malloc((size_t)(N * OC) * sizeof(float), "add_lora buffer");
    if (!t) return LT_ERR_OUT_OF_MEMORY;
    memcpy(t, b, (size_t)(N * OC) * sizeof(float));
    lt_status st = lora_up_add(be, t, xa, B, N, OC, R, scale);
    if (st == LT_OK) st = lt_cpu_add(be, out, a, t, N * OC);
    free(t);
    return st;
}

lt_status lt_cpu_lora_up_add(lt_backend *be, void *out, const void *xa, const float *B, int64_t N, int64_t OC,
                             int64_t R, float scale) {
    return lora_up_add(be, (float *)out, xa, B, N, OC, R, scale);
}

/* out = (inp @ W^T) + resid, the product in a buffer of its own so that out may alias resid */
lt_status lt_cpu_linear_fwd_add(lt_backend *be, void *out, const void *inp, const lt_bweight *W, const void *resid,
                                int64_t N) {
    float *t = lt_malloc((size_t)(N * W->rows) * sizeof(float), "linear_fwd_add buffer");
    if (!t) return LT_ERR_OUT_OF_MEMORY;
    lt_status st = lt_cpu_linear_fwd(be, t, inp, W, NULL, N);
    if (st == LT_OK) st = lt_cpu_add(be, out, resid, t, N * W->rows);
    free(t);
    return st;
}

/* the reference: the input made into act, lora_bwd, then swiglu_bwd */
lt_status lt_cpu_lora_bwd_swiglu(lt_backend *be, float *dA, float *dB, void *dinp, const void *dout, const void *gate,
                                 const void *up, void *act, const void *xa, const float *A, const float *B, int64_t N,
                                 int64_t C, int64_t OC, int64_t R, float scale, float p, uint64_t seed,
                                 uint64_t stream, void *dgate, void *dup) {
    LT_TRY(be->ops.swiglu_fwd(be, act, gate, up, N * C));
    LT_TRY(lt_cpu_lora_bwd(be, dA, dB, dinp, dout, act, xa, A, B, N, C, OC, R, scale, p, seed, stream));
    return dgate ? be->ops.swiglu_bwd(be, dgate, dup, dinp, gate, up, N * C) : LT_OK;
}

lt_status lt_cpu_lora_bwd(lt_backend *be, float *dA, float *dB, void *dinp, const void *dout, const void *inp,
                          const void *xa, const float *A, const float *B, int64_t N, int64_t C, int64_t OC,
                          int64_t R, float scale, float p, uint64_t seed, uint64_t stream) {
    float *xd = NULL;
    uint8_t *keep = NULL;
    LT_TRY(lora_dropout(be, inp, N, C, p, seed, stream, &xd, dinp ? &keep : NULL));
    float *dxa = lt_malloc((size_t)(N * R) * sizeof(float), "lora dxa");
    float *t = lt_malloc((size_t)(N * C) * sizeof(float), "lora dinp buffer");
    if (!dxa || !t) { free(xd); free(keep); free(dxa); free(t); return LT_ERR_OUT_OF_MEMORY; }
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
        dinp_ctx d = {dinp, t, keep, C, p > 0.0f ? 1.0f / (1.0f - p) : 1.0f};
        lt_parallel_for(N, lt_cpu_threads_for(be, N, C * 2), dinp_row, &d);
    }
    free(xd); free(keep); free(dxa); free(t);
    return LT_OK;
}

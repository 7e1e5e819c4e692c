/* attn_plan.h - the plan of cuda/attn_gemm.cu's attention (cuBLAS products of scores, for head
 * dims, score scales, soft-caps and windows the flash kernels do not take) and the workspace its
 * backward asks for, in one place: attn_gemm.cu runs by it and lt_estimate_memory (memory.c)
 * counts by it, so the two cannot drift apart. Plain C, static inline: included by both. */
#ifndef LT_ATTN_PLAN_H
#define LT_ATTN_PLAN_H
#include <stddef.h>
#include <stdint.h>

#define LT_AG_SCORE_BYTES (128ull << 20) /* f32 scores of one product, by default */

typedef struct lt_ag_plan {
    int packed;     /* 1: all N tokens as one sequence (attn_gemm.cu's file comment) */
    int64_t nseq_e; /* sequences of the layout: nseq, or 1 packed */
    int64_t Lt;     /* query positions of a sequence: max_seqlen, or N packed */
    int64_t Lp;     /* rows of a sequence in the layout: Lt rounded up to 16 */
    int64_t Wc;     /* keys a query can reach back (columns before t0 - Wc + 1 are skipped); 0: all */
    int64_t TB, np, pairs, G;
    size_t score_bytes;
} lt_ag_plan;

static inline int64_t lt_ag_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
static inline size_t lt_ag_align256(size_t b) { return (b + 255) & ~(size_t)255; }

/* Layout, block size TB (query positions), pairs per product np and bytes of one score buffer,
 * for nseq sequences of at most Lmax tokens (N in all), NKV kv heads of G query heads each, a
 * window (0: none) and a score budget. Padded: TB about an eighth of the sequence, so that the
 * causal mask skips nearly half of the products. Packed: the key columns of a block reach back
 * max_seqlen (or the window) from its first query, so TB about a quarter of that. The layout with
 * fewer score elements is taken: padded for sequences of about equal length (the benchmark shapes,
 * full buckets), packed for many short records under a long max_seqlen. np is at most 65,535
 * (gridDim.y of the softmax and backward kernels). */
static inline void lt_ag_make_plan(int64_t nseq, int64_t N, int64_t Lmax, int64_t NKV, int64_t G, int64_t window,
                                   size_t budget, lt_ag_plan *p) {
    const int64_t Lpad = Lmax < 16 ? 16 : lt_ag_up(Lmax, 16);
    int64_t TBp = lt_ag_up((Lpad + 7) / 8, 64);
    if (TBp > Lpad) TBp = Lpad;
    const int64_t Wn = window > 0 ? window : Lpad;
    int64_t wp = (Lpad + TBp) / 2;
    if (Wn + TBp < wp) wp = Wn + TBp;
    const double cost_p = (double)nseq * (double)Lpad * (double)wp;
    const int64_t Lk = N < 16 ? 16 : lt_ag_up(N, 16), Wk = window > 0 && window < Lmax ? window : Lmax;
    int64_t TBk = lt_ag_up(Wk / 4, 64);
    if (TBk < lt_ag_up((Lk + 63) / 64, 64)) TBk = lt_ag_up((Lk + 63) / 64, 64); /* at most ~64 blocks */
    if (TBk > Lk) TBk = Lk;
    const double cost_k = (double)Lk * (double)(Wk + TBk + 32 < Lk ? Wk + TBk + 32 : Lk);
    p->packed = cost_k < cost_p;
    p->G = G;
    p->nseq_e = p->packed ? 1 : nseq;
    p->Lt = p->packed ? N : Lmax;
    p->Lp = p->packed ? Lk : Lpad;
    p->Wc = p->packed ? Wk : window;
    p->pairs = p->nseq_e * NKV;
    int64_t TB = p->packed ? TBk : TBp;
    for (;;) { /* the widest block's score row: columns [floor16(t0 - Wc + 1), ceil16(t0 + TB)) */
        int64_t width = p->Lp;
        if (p->Wc > 0 && p->Wc + TB + 32 < width) width = p->Wc + TB + 32;
        const int64_t rowb = G * width * 4;
        if (TB <= 16 || (size_t)(TB * rowb) <= budget) {
            int64_t np = (int64_t)(budget / (size_t)(TB * rowb));
            if (np < 1) np = 1;
            if (np > p->pairs) np = p->pairs;
            if (np > 65535) np = 65535;
            p->TB = TB;
            p->np = np;
            p->score_bytes = (size_t)(np * TB * rowb);
            return;
        }
        TB = lt_ag_up(TB / 2, 16);
    }
}

/* The backward's workspace under plan p (act_bytes a 16-bit element): padded Q and dO, K and V
 * (16-bit), f32 dK and dV, D (NH x N f32) and two score buffers, each 256-byte aligned, in the
 * order attn_gemm.cu carves them. */
static inline size_t lt_ag_bwd_bytes(const lt_ag_plan *p, int64_t N, int64_t NH, int64_t NKV, int64_t HD,
                                     size_t act_bytes) {
    const size_t rows = (size_t)(p->nseq_e * p->Lp * HD);
    return 2 * lt_ag_align256(rows * (size_t)NH * act_bytes) + 2 * lt_ag_align256(rows * (size_t)NKV * act_bytes) +
           2 * lt_ag_align256(rows * (size_t)NKV * 4) + lt_ag_align256((size_t)(NH * N) * 4) +
           2 * lt_ag_align256(p->score_bytes);
}

#endif

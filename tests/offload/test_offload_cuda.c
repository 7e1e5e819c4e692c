/* test_offload_cuda.c - checkpoint offload on the CUDA backend: the 5-layer random Qwen2 of
 * test_offload (argv[1]) with a fresh r=16 adapter (seeded non-zero B), LoRA dropout and
 * deterministic kernels runs NPASS forward+backward passes (two batches of one shape, a larger
 * one that makes the buffers grow, the first shape again) with the checkpoints on the device and
 * offloaded to pinned host memory (copy stream, events), with CUDA graphs on: every pass's loss
 * and the accumulated LoRA gradients must be equal bit for bit, and the passes of a repeated
 * shape must replay as graphs in both runs (the copies recorded inside). A run with graphs off
 * gives the same bits too. Then the same offloaded with the MLP in token chunks (64 tokens here,
 * so that the passes of 96 and 300 tokens run 2 and 5 of them): as graphs and op by op bit for
 * bit alike (the chunk loop records and replays), and against the device mode (no chunks) within
 * bf16 rounding: the same dropout masks, the products' row blocks and the LoRA gradients' sums
 * over the tokens split differently. Before the passes, op by op (check_row_offsets): each LoRA
 * op with dropout that the MLP chunks run (and the multi-module one for q/k/v too), on rows
 * [R0, R0 + NR) with the stream's row offset, on each CUDA path, against the CPU backend on the same inputs (every output: xa, the input
 * gradient or dgate/dup, dA and dB of each module), with a self-check that an ignored offset
 * would be seen. Exits 77 where no GPU is visible. */
#include "lt_test.h"
#include "model/graph.h"
#include "model/model.h"
#include "data/dataset.h"
#include "core/rng.h"
#include "../../cuda/cuda_test.h"
#include "lt_test_lora.h"
#include <stdarg.h>

#define NPASS 8

typedef lt_test_grads grads;

/* max |a - b| over max |b|; +inf when either holds a NaN or an infinity */
static double rel_max(const float *a, const float *b, size_t n) {
    double d = 0, big = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i])) return INFINITY;
        if (fabs((double)a[i] - b[i]) > d) d = fabs((double)a[i] - b[i]);
        if (fabs((double)b[i]) > big) big = fabs((double)b[i]);
    }
    return big > 0 ? d / big : d;
}

/* ---- the row offset of a dropout stream (rng.h), op by op ----
 * The MLP token chunks run each LoRA op on rows [R0, R0 + NR) of the pass with the stream's row
 * offset (lt_drop_stream_rows), so that the chunk draws the masks those rows have in the whole.
 * For every op the graph runs on chunk rows with dropout (lora_fwd / lora_bwd, lora_xa_multi /
 * lora_bwd_multi for gate/up and q/k/v, lora_bwd_swiglu with and without the swiglu backward),
 * on each CUDA path (the tensor-core kernels of lora.cu at r=16, their cuBLAS + k_dropout
 * fallback forced at r=16, and r=4, which has no kernel), for R0 = 0, 512 (a 512-row chunking's
 * first and last chunks of a 700-token pass: 188 rows, not whole 16-row blocks), 576 (nine
 * 64-row units) and 128 (rows 128..256, the earlier version's case), p = 0.1:
 *   - CUDA against the CPU backend on the same inputs (rounded to bf16 as the GPU holds them) and
 *     the same offset stream: every output (xa of each module, the LoRA output, the input
 *     gradient or swiglu's dgate and dup, each module's dA and dB) within RO_TOL (worst |error|
 *     over max |CPU|: bf16 inputs and outputs, f32 sums, one bf16 rounding of dxa);
 *   - the row outputs of both against the CPU's whole pass without an offset (its rows), and the
 *     chunks [0, 512) + [512, 700) of dA and dB summed against the whole pass's;
 *   - a self-check: the CPU's mask-dependent outputs at R0 > 0 with the plain stream (an offset
 *     ignored) must miss those with the offset by at least RO_SELF, so that the comparisons above
 *     would see an ignored or misplaced offset (dB does not depend on the mask: xa is an input);
 *   - the tensor-core xa of the rows is the whole pass's rows bit for bit.
 * The swiglu variants: with dgate/dup the fast path runs the SW weight gradient (swiglu made as
 * it is read) and the SWB addmul (dinp + drop(dxa A), then swiglu_bwd, dinp read only), without
 * them SW and the plain addmul into dinp; the fallbacks compose swiglu_fwd, lora_bwd, swiglu_bwd. */
#define RO_N 700
#define RO_TOL 1.5e-2
#define RO_TOL_CPU 1e-5 /* the CPU against itself: f32 throughout, sums in another order */
#define RO_SELF 0.15    /* 10 x RO_TOL */
#define RO_CASES 4
static const int64_t ro_rows[RO_CASES][2] = {{0, 512}, {512, 188}, {576, 124}, {128, 128}};

typedef struct ro_path {
    int64_t R;
    int skinny; /* lt_cuda_lora_set_skinny */
    const char *name;
} ro_path;
static const ro_path ro_paths[3] = {
    {16, 1, "tensor-core kernels, r=16"},
    {16, 0, "cuBLAS + k_dropout (kernels off), r=16"},
    {4, 1, "cuBLAS + k_dropout (no kernel for r=4)"},
};

static void ro_skinny(int on) {
#ifdef LT_HAVE_CUDA
    lt_cuda_lora_set_skinny(on);
#else
    (void)on;
#endif
}

static void *ro_malloc(size_t bytes) {
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p) { fprintf(stderr, "test_offload_cuda: out of host memory\n"); exit(1); }
    return p;
}

/* n values scale * uniform(-1, 1), stream id */
static float *ro_host(size_t n, float scale, uint64_t id) {
    float *h = ro_malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) h[i] = scale * (2.0f * lt_rng_uniform(1, id, (uint64_t)i) - 1.0f);
    return h;
}

/* an act buffer on the GPU holding h's n values; h becomes those values as the GPU rounded them
 * (the CPU takes the same inputs). NULL when out of memory. */
static void *ro_gpu_act(lt_backend *g, float *h, size_t n) {
    float *st = NULL;
    void *a = NULL;
    CHECK_OK(g->ops.alloc(g, n * sizeof(float), (void **)&st));
    CHECK_OK(g->ops.alloc(g, n * (size_t)g->act_bytes, &a));
    if (!st || !a) { g->ops.free(g, st); g->ops.free(g, a); return NULL; }
    CHECK_OK(g->ops.upload(g, st, h, n * sizeof(float)));
    CHECK_OK(g->ops.to_act(g, a, st, (int64_t)n));
    CHECK_OK(g->ops.from_act(g, st, a, (int64_t)n));
    CHECK_OK(g->ops.download(g, h, st, n * sizeof(float)));
    g->ops.free(g, st);
    return a;
}

/* an f32 buffer on the GPU holding h (zeros when h is NULL) */
static float *ro_gpu_f32(lt_backend *g, const float *h, size_t n) {
    float *d = NULL;
    CHECK_OK(g->ops.alloc(g, n * sizeof(float), (void **)&d));
    if (d && h) CHECK_OK(g->ops.upload(g, d, h, n * sizeof(float)));
    return d;
}

/* h = the n act values at a, as f32 (through a device buffer: from_act writes backend memory) */
static void ro_read_act(lt_backend *g, float *h, const void *a, size_t n) {
    float *st = NULL;
    CHECK_OK(g->ops.alloc(g, n * sizeof(float), (void **)&st));
    if (!st) return;
    CHECK_OK(g->ops.from_act(g, st, a, (int64_t)n));
    CHECK_OK(g->ops.download(g, h, st, n * sizeof(float)));
    g->ops.free(g, st);
}

/* one line of results per (op, path, rows); the failures name all of it */
typedef struct ro_tag {
    const char *op, *path;
    int64_t r0, nr;
    char line[4096];
    size_t len;
} ro_tag;

static void ro_add(ro_tag *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ro_add(ro_tag *t, const char *fmt, ...) {
    if (t->len + 1 >= sizeof t->line) return;
    va_list ap;
    va_start(ap, fmt);
    const int k = vsnprintf(t->line + t->len, sizeof t->line - t->len, fmt, ap);
    va_end(ap);
    if (k > 0) t->len += (size_t)k;
    if (t->len >= sizeof t->line) t->len = sizeof t->line - 1;
}

static void ro_begin(ro_tag *t, const char *op, const char *path, int64_t r0, int64_t nr) {
    memset(t, 0, sizeof *t);
    t->op = op;
    t->path = path;
    t->r0 = r0;
    t->nr = nr;
    ro_add(t, "dropout row offset: %s [%s], rows %lld..%lld of %d (R0 = %lld), worst relative errors:", op, path,
           (long long)r0, (long long)(r0 + nr), RO_N, (long long)r0);
}

/* a (`who`'s `what`) within tol of ref */
static void ro_near(ro_tag *t, const char *who, const char *what, const float *a, const float *ref, size_t n,
                    double tol) {
    const double e = rel_max(a, ref, n);
    ro_add(t, " %s %.2g", what, e);
    CHECK_MSG(e <= tol, "%s [%s], rows %lld..%lld (R0 = %lld): %s, %s: worst relative error %.3g > %.3g", t->op,
              t->path, (long long)t->r0, (long long)(t->r0 + t->nr), (long long)t->r0, who, what, e, tol);
}

/* the self-check: the CPU's `what` without the row offset (plain) misses the one with it (off) */
static void ro_differ(ro_tag *t, const char *what, const float *off, const float *plain, size_t n) {
    const double e = rel_max(plain, off, n);
    ro_add(t, " %s %.2g", what, e);
    CHECK_MSG(e >= RO_SELF,
              "%s [%s], rows %lld..%lld (R0 = %lld): self-check: the CPU's %s without the row offset is within %.3g "
              "of the one with it (want >= %.3g): a CUDA op that ignored the offset would pass unseen",
              t->op, t->path, (long long)t->r0, (long long)(t->r0 + t->nr), (long long)t->r0, what, e, RO_SELF);
}

static void ro_print(const ro_tag *t) { printf("%s\n", t->line); }

/* ---- lora_fwd / lora_bwd (one module) and lora_xa_multi / lora_bwd_multi (n modules) ---- */
typedef struct ro_lora {
    int multi, n;
    int64_t N, C, R, OC[3];
    const char *mod[3];
    uint64_t seed, st[3];
    float p, scale;
    /* the whole pass's inputs on the host, rounded as the GPU holds them: x, dinp's prior content
     * (the base products' input gradient), the base output (lora_fwd's out), the xa the backward
     * reads; A and B f32 */
    float *x, *di0, *base, *A[3], *B[3], *dout[3], *xb[3];
    /* the same on the GPU; xa over the whole pass (a chunk writes its rows, as graph.c's xa_of),
     * out and dinp of a chunk */
    void *gx, *gdi0, *gbase, *gdout[3], *gxb[3], *gxa[3], *gout, *gdi;
    float *gA[3], *gB[3], *gdA[3], *gdB[3];
} ro_lora;

typedef struct ro_res {
    float *xa[3], *out, *di, *dA[3], *dB[3];
} ro_res;

static void ro_res_alloc(ro_res *o, const ro_lora *L, int64_t rows) {
    memset(o, 0, sizeof *o);
    for (int s = 0; s < L->n; s++) {
        o->xa[s] = ro_malloc((size_t)(rows * L->R) * sizeof(float));
        o->dA[s] = ro_malloc((size_t)(L->R * L->C) * sizeof(float));
        o->dB[s] = ro_malloc((size_t)(L->OC[s] * L->R) * sizeof(float));
    }
    o->out = ro_malloc((size_t)(rows * L->OC[0]) * sizeof(float));
    o->di = ro_malloc((size_t)(rows * L->C) * sizeof(float));
}

static void ro_res_free(ro_res *o) {
    for (int s = 0; s < 3; s++) { free(o->xa[s]); free(o->dA[s]); free(o->dB[s]); }
    free(o->out);
    free(o->di);
}

/* the CPU's outputs on rows [r0, r0 + nr) with dropout streams st */
static void ro_lora_cpu(lt_backend *cpu, const ro_lora *L, int64_t r0, int64_t nr, const uint64_t *st, ro_res *o) {
    const int64_t C = L->C, R = L->R;
    const float *x = L->x + r0 * C;
    void *xa[3] = {NULL, NULL, NULL};
    const void *dout[3] = {NULL, NULL, NULL}, *xb[3] = {NULL, NULL, NULL};
    for (int s = 0; s < L->n; s++) {
        xa[s] = o->xa[s];
        dout[s] = L->dout[s] + r0 * L->OC[s];
        xb[s] = L->xb[s] + r0 * R;
        memset(o->dA[s], 0, (size_t)(R * C) * sizeof(float));
        memset(o->dB[s], 0, (size_t)(L->OC[s] * R) * sizeof(float));
    }
    memcpy(o->di, L->di0 + r0 * C, (size_t)(nr * C) * sizeof(float));
    if (L->multi) {
        CHECK_OK(cpu->ops.lora_xa_multi(cpu, L->n, xa, x, (const float *const *)L->A, nr, C, R, L->p, L->seed, st));
        CHECK_OK(cpu->ops.lora_bwd_multi(cpu, L->n, o->dA, o->dB, o->di, dout, x, xb, (const float *const *)L->A,
                                         (const float *const *)L->B, nr, C, L->OC, R, L->scale, L->p, L->seed, st));
    } else {
        memcpy(o->out, L->base + r0 * L->OC[0], (size_t)(nr * L->OC[0]) * sizeof(float));
        CHECK_OK(cpu->ops.lora_fwd(cpu, o->out, o->xa[0], x, L->A[0], L->B[0], nr, C, L->OC[0], R, L->scale, L->p,
                                   L->seed, st[0]));
        CHECK_OK(cpu->ops.lora_bwd(cpu, o->dA[0], o->dB[0], o->di, dout[0], x, xb[0], L->A[0], L->B[0], nr, C,
                                   L->OC[0], R, L->scale, L->p, L->seed, st[0]));
    }
}

/* the GPU's outputs on rows [r0, r0 + nr) with dropout streams st; xa_raw[s] (when given) gets
 * the act bytes of module s's xa rows */
static void ro_lora_gpu(lt_backend *g, ro_lora *L, int64_t r0, int64_t nr, const uint64_t *st, ro_res *o,
                        unsigned char *const *xa_raw) {
    const size_t ab = (size_t)g->act_bytes;
    const int64_t C = L->C, R = L->R;
    const void *x = (const char *)L->gx + (size_t)(r0 * C) * ab;
    void *xa[3] = {NULL, NULL, NULL};
    const void *dout[3] = {NULL, NULL, NULL}, *xb[3] = {NULL, NULL, NULL};
    for (int s = 0; s < L->n; s++) {
        xa[s] = (char *)L->gxa[s] + (size_t)(r0 * R) * ab;
        dout[s] = (const char *)L->gdout[s] + (size_t)(r0 * L->OC[s]) * ab;
        xb[s] = (const char *)L->gxb[s] + (size_t)(r0 * R) * ab;
        CHECK_OK(g->ops.memset0(g, L->gdA[s], (size_t)(R * C) * sizeof(float)));
        CHECK_OK(g->ops.memset0(g, L->gdB[s], (size_t)(L->OC[s] * R) * sizeof(float)));
    }
    CHECK_OK(g->ops.copy(g, L->gdi, (const char *)L->gdi0 + (size_t)(r0 * C) * ab, (size_t)(nr * C) * ab));
    if (L->multi) {
        CHECK_OK(g->ops.lora_xa_multi(g, L->n, xa, x, (const float *const *)L->gA, nr, C, R, L->p, L->seed, st));
        CHECK_OK(g->ops.lora_bwd_multi(g, L->n, L->gdA, L->gdB, L->gdi, dout, x, xb, (const float *const *)L->gA,
                                       (const float *const *)L->gB, nr, C, L->OC, R, L->scale, L->p, L->seed, st));
    } else {
        CHECK_OK(g->ops.copy(g, L->gout, (const char *)L->gbase + (size_t)(r0 * L->OC[0]) * ab,
                             (size_t)(nr * L->OC[0]) * ab));
        CHECK_OK(g->ops.lora_fwd(g, L->gout, xa[0], x, L->gA[0], L->gB[0], nr, C, L->OC[0], R, L->scale, L->p,
                                 L->seed, st[0]));
        CHECK_OK(g->ops.lora_bwd(g, L->gdA[0], L->gdB[0], L->gdi, dout[0], x, xb[0], L->gA[0], L->gB[0], nr, C,
                                 L->OC[0], R, L->scale, L->p, L->seed, st[0]));
        ro_read_act(g, o->out, L->gout, (size_t)(nr * L->OC[0]));
    }
    for (int s = 0; s < L->n; s++) {
        ro_read_act(g, o->xa[s], xa[s], (size_t)(nr * R));
        if (xa_raw) CHECK_OK(g->ops.download(g, xa_raw[s], xa[s], (size_t)(nr * R) * ab));
        CHECK_OK(g->ops.download(g, o->dA[s], L->gdA[s], (size_t)(R * C) * sizeof(float)));
        CHECK_OK(g->ops.download(g, o->dB[s], L->gdB[s], (size_t)(L->OC[s] * R) * sizeof(float)));
    }
    ro_read_act(g, o->di, L->gdi, (size_t)(nr * C));
}

/* multi = 0: lora_fwd + lora_bwd of up_proj (C 256 -> OC 128); multi = 1: lora_xa_multi +
 * lora_bwd_multi of gate/up (n = 2, 256 -> 512 each) or q/k/v (n = 3, 256 -> 256, 64, 64) */
static void ro_check_lora(lt_backend *cpu, lt_backend *gpu, int multi, int n, const ro_path *pa) {
    static const int qkv[3] = {LT_PROJ_Q, LT_PROJ_K, LT_PROJ_V}, gu[2] = {LT_PROJ_GATE, LT_PROJ_UP};
    static const char *const qkv_n[3] = {"q_proj", "k_proj", "v_proj"}, *const gu_n[2] = {"gate_proj", "up_proj"};
    const char *op = !multi ? "lora_fwd + lora_bwd (up_proj)"
                     : n == 2 ? "lora_xa_multi + lora_bwd_multi, n=2 (gate/up)"
                              : "lora_xa_multi + lora_bwd_multi, n=3 (q/k/v)";
    ro_lora L;
    memset(&L, 0, sizeof L);
    L.multi = multi;
    L.n = multi ? n : 1;
    L.N = RO_N;
    L.C = 256;
    L.R = pa->R;
    L.seed = 42;
    L.p = 0.1f;
    L.scale = 2.0f;
    const int64_t N = L.N, C = L.C, R = L.R;
    const size_t ab = (size_t)gpu->act_bytes;
    int ok = 1;
    for (int s = 0; s < L.n; s++) {
        const int proj = !multi ? LT_PROJ_UP : n == 2 ? gu[s] : qkv[s];
        L.OC[s] = !multi ? 128 : n == 2 ? 512 : s == 0 ? 256 : 64;
        L.mod[s] = !multi ? "up_proj" : n == 2 ? gu_n[s] : qkv_n[s];
        L.st[s] = lt_graph_stream(3, 2, proj);
        const uint64_t id = 100 + 10 * (uint64_t)s;
        L.A[s] = ro_host((size_t)(R * C), 0.1f, id + 1);
        L.B[s] = ro_host((size_t)(L.OC[s] * R), 0.1f, id + 2);
        L.dout[s] = ro_host((size_t)(N * L.OC[s]), 1.0f, id + 3);
        L.xb[s] = ro_host((size_t)(N * R), 1.0f, id + 4);
        L.gdout[s] = ro_gpu_act(gpu, L.dout[s], (size_t)(N * L.OC[s]));
        L.gxb[s] = ro_gpu_act(gpu, L.xb[s], (size_t)(N * R));
        CHECK_OK(gpu->ops.alloc(gpu, (size_t)(N * R) * ab, &L.gxa[s]));
        L.gA[s] = ro_gpu_f32(gpu, L.A[s], (size_t)(R * C));
        L.gB[s] = ro_gpu_f32(gpu, L.B[s], (size_t)(L.OC[s] * R));
        L.gdA[s] = ro_gpu_f32(gpu, NULL, (size_t)(R * C));
        L.gdB[s] = ro_gpu_f32(gpu, NULL, (size_t)(L.OC[s] * R));
        ok = ok && L.gdout[s] && L.gxb[s] && L.gxa[s] && L.gA[s] && L.gB[s] && L.gdA[s] && L.gdB[s];
    }
    L.x = ro_host((size_t)(N * C), 1.0f, 1);
    L.di0 = ro_host((size_t)(N * C), 0.02f, 2); /* small beside the LoRA part, whose masks are tested */
    L.base = ro_host((size_t)(N * L.OC[0]), 1.0f, 3);
    L.gx = ro_gpu_act(gpu, L.x, (size_t)(N * C));
    L.gdi0 = ro_gpu_act(gpu, L.di0, (size_t)(N * C));
    L.gbase = ro_gpu_act(gpu, L.base, (size_t)(N * L.OC[0]));
    CHECK_OK(gpu->ops.alloc(gpu, (size_t)(N * L.OC[0]) * ab, &L.gout));
    CHECK_OK(gpu->ops.alloc(gpu, (size_t)(N * C) * ab, &L.gdi));
    ok = ok && L.gx && L.gdi0 && L.gbase && L.gout && L.gdi;
    CHECK_MSG(ok, "%s [%s]: out of GPU memory", op, pa->name);
    const int fast = pa->skinny && R == 16; /* the tensor-core kernels (lt_cuda_lora_fast_ok) */
    ro_res W, Cc, P, G;
    ro_res_alloc(&W, &L, N);
    ro_res_alloc(&Cc, &L, N);
    ro_res_alloc(&P, &L, N);
    ro_res_alloc(&G, &L, N);
    float *sgA[3] = {NULL, NULL, NULL}, *sgB[3] = {NULL, NULL, NULL}, *scA[3] = {NULL, NULL, NULL},
          *scB[3] = {NULL, NULL, NULL};
    unsigned char *whole_raw[3] = {NULL, NULL, NULL}, *raw[3] = {NULL, NULL, NULL};
    for (int s = 0; s < L.n; s++) {
        sgA[s] = ro_malloc((size_t)(R * C) * sizeof(float));
        scA[s] = ro_malloc((size_t)(R * C) * sizeof(float));
        sgB[s] = ro_malloc((size_t)(L.OC[s] * R) * sizeof(float));
        scB[s] = ro_malloc((size_t)(L.OC[s] * R) * sizeof(float));
        whole_raw[s] = ro_malloc((size_t)(N * R) * ab);
        raw[s] = ro_malloc((size_t)(N * R) * ab);
    }
    if (ok) {
        ro_skinny(pa->skinny);
        /* the whole pass without an offset: the CPU's outputs, and the GPU's xa bytes */
        ro_lora_cpu(cpu, &L, 0, N, L.st, &W);
        if (multi)
            CHECK_OK(gpu->ops.lora_xa_multi(gpu, L.n, L.gxa, L.gx, (const float *const *)L.gA, N, C, R, L.p, L.seed,
                                            L.st));
        else
            CHECK_OK(gpu->ops.lora_fwd(gpu, NULL, L.gxa[0], L.gx, L.gA[0], L.gB[0], N, C, L.OC[0], R, L.scale, L.p,
                                       L.seed, L.st[0]));
        for (int s = 0; s < L.n; s++) CHECK_OK(gpu->ops.download(gpu, whole_raw[s], L.gxa[s], (size_t)(N * R) * ab));
        char nm[64];
        for (int c = 0; c < RO_CASES; c++) {
            const int64_t r0 = ro_rows[c][0], nr = ro_rows[c][1];
            uint64_t srow[3] = {0, 0, 0};
            for (int s = 0; s < L.n; s++) srow[s] = lt_drop_stream_rows(L.st[s], (uint64_t)r0);
            ro_tag t;
            ro_begin(&t, op, pa->name, r0, nr);
            ro_lora_cpu(cpu, &L, r0, nr, srow, &Cc);
            ro_lora_gpu(gpu, &L, r0, nr, srow, &G, raw);
            ro_add(&t, "\n    CUDA vs the CPU:");
            for (int s = 0; s < L.n; s++) {
                snprintf(nm, sizeof nm, "xa[%s]", L.mod[s]);
                ro_near(&t, "CUDA vs the CPU", nm, G.xa[s], Cc.xa[s], (size_t)(nr * R), RO_TOL);
            }
            if (!multi) ro_near(&t, "CUDA vs the CPU", "out", G.out, Cc.out, (size_t)(nr * L.OC[0]), RO_TOL);
            ro_near(&t, "CUDA vs the CPU", "dinp", G.di, Cc.di, (size_t)(nr * C), RO_TOL);
            for (int s = 0; s < L.n; s++) {
                snprintf(nm, sizeof nm, "dA[%s]", L.mod[s]);
                ro_near(&t, "CUDA vs the CPU", nm, G.dA[s], Cc.dA[s], (size_t)(R * C), RO_TOL);
                snprintf(nm, sizeof nm, "dB[%s]", L.mod[s]);
                ro_near(&t, "CUDA vs the CPU", nm, G.dB[s], Cc.dB[s], (size_t)(L.OC[s] * R), RO_TOL);
            }
            /* the rows of the whole pass without an offset: CUDA, and the CPU itself */
            for (int k = 0; k < 2; k++) {
                const ro_res *X = k == 0 ? &G : &Cc;
                const char *who = k == 0 ? "CUDA vs the CPU's whole pass" : "the CPU vs its whole pass";
                const double tol = k == 0 ? RO_TOL : RO_TOL_CPU;
                ro_add(&t, k == 0 ? "\n    CUDA vs the CPU's whole pass:" : "\n    the CPU vs its whole pass:");
                for (int s = 0; s < L.n; s++) {
                    snprintf(nm, sizeof nm, "xa[%s]", L.mod[s]);
                    ro_near(&t, who, nm, X->xa[s], W.xa[s] + r0 * R, (size_t)(nr * R), tol);
                }
                if (!multi) ro_near(&t, who, "out", X->out, W.out + r0 * L.OC[0], (size_t)(nr * L.OC[0]), tol);
                ro_near(&t, who, "dinp", X->di, W.di + r0 * C, (size_t)(nr * C), tol);
            }
            if (r0 > 0) { /* the self-check: an ignored offset would be seen */
                ro_lora_cpu(cpu, &L, r0, nr, L.st, &P);
                ro_add(&t, "\n    self-check, the CPU without the offset misses by:");
                for (int s = 0; s < L.n; s++) {
                    snprintf(nm, sizeof nm, "xa[%s]", L.mod[s]);
                    ro_differ(&t, nm, Cc.xa[s], P.xa[s], (size_t)(nr * R));
                }
                ro_differ(&t, "dinp", Cc.di, P.di, (size_t)(nr * C));
                for (int s = 0; s < L.n; s++) {
                    snprintf(nm, sizeof nm, "dA[%s]", L.mod[s]);
                    ro_differ(&t, nm, Cc.dA[s], P.dA[s], (size_t)(R * C));
                }
            }
            if (fast) /* a 16-row block of the tensor-core xa is computed alone: the whole's bytes */
                for (int s = 0; s < L.n; s++)
                    CHECK_MSG(!memcmp(raw[s], whole_raw[s] + (size_t)(r0 * R) * ab, (size_t)(nr * R) * ab),
                              "%s [%s], rows %lld..%lld (R0 = %lld): xa[%s] with the row offset is not the whole "
                              "pass's rows bit for bit", op, pa->name, (long long)r0, (long long)(r0 + nr),
                              (long long)r0, L.mod[s]);
            if (c < 2) /* rows [0, 512) and [512, 700): the whole pass in two chunks */
                for (int s = 0; s < L.n; s++)
                    for (int k = 0; k < 2; k++) {
                        const size_t m = k == 0 ? (size_t)(R * C) : (size_t)(L.OC[s] * R);
                        float *sg = k == 0 ? sgA[s] : sgB[s], *sc = k == 0 ? scA[s] : scB[s];
                        const float *g = k == 0 ? G.dA[s] : G.dB[s], *cc = k == 0 ? Cc.dA[s] : Cc.dB[s];
                        for (size_t i = 0; i < m; i++) {
                            sg[i] = c == 0 ? g[i] : sg[i] + g[i];
                            sc[i] = c == 0 ? cc[i] : sc[i] + cc[i];
                        }
                    }
            ro_print(&t);
        }
        ro_tag t;
        ro_begin(&t, op, pa->name, 0, N);
        ro_add(&t, "\n    dA, dB of rows 0..512 and 512..700 summed vs the CPU's whole pass: CUDA");
        for (int k = 0; k < 2; k++) {
            if (k == 1) ro_add(&t, "; the CPU");
            for (int s = 0; s < L.n; s++) {
                const char *who = k == 0 ? "CUDA's two chunks summed vs the CPU's whole pass"
                                         : "the CPU's two chunks summed vs its whole pass";
                const double tol = k == 0 ? RO_TOL : RO_TOL_CPU;
                snprintf(nm, sizeof nm, "dA[%s]", L.mod[s]);
                ro_near(&t, who, nm, k == 0 ? sgA[s] : scA[s], W.dA[s], (size_t)(R * C), tol);
                snprintf(nm, sizeof nm, "dB[%s]", L.mod[s]);
                ro_near(&t, who, nm, k == 0 ? sgB[s] : scB[s], W.dB[s], (size_t)(L.OC[s] * R), tol);
            }
        }
        ro_print(&t);
        ro_skinny(1);
    }
    ro_res_free(&W);
    ro_res_free(&Cc);
    ro_res_free(&P);
    ro_res_free(&G);
    for (int s = 0; s < 3; s++) {
        free(sgA[s]); free(sgB[s]); free(scA[s]); free(scB[s]); free(whole_raw[s]); free(raw[s]);
        free(L.A[s]); free(L.B[s]); free(L.dout[s]); free(L.xb[s]);
        gpu->ops.free(gpu, L.gdout[s]); gpu->ops.free(gpu, L.gxb[s]); gpu->ops.free(gpu, L.gxa[s]);
        gpu->ops.free(gpu, L.gA[s]); gpu->ops.free(gpu, L.gB[s]); gpu->ops.free(gpu, L.gdA[s]);
        gpu->ops.free(gpu, L.gdB[s]);
    }
    free(L.x); free(L.di0); free(L.base);
    void *gb[] = {L.gx, L.gdi0, L.gbase, L.gout, L.gdi};
    for (size_t i = 0; i < sizeof gb / sizeof gb[0]; i++) gpu->ops.free(gpu, gb[i]);
}

/* ---- lora_bwd_swiglu: down_proj (C = intermediate 512 -> OC = hidden 256), its input
 * swiglu(gate, up) of the chunk's rows; with dgate/dup (bwd) or without ---- */
typedef struct ro_sw {
    int64_t N, C, OC, R;
    int bwd;
    uint64_t seed, st;
    float p, scale;
    float *gate, *up, *dout, *xb, *di0, *A, *B; /* host, the whole pass, rounded as the GPU holds them */
    void *ggate, *gup, *gdout, *gxb, *gdi0;      /* the same on the GPU */
    void *gdi, *gact, *gdg, *gdu;               /* a chunk's */
    float *gA, *gB, *gdA, *gdB;
} ro_sw;

typedef struct ro_swres {
    float *dA, *dB, *di, *dg, *du;
} ro_swres;

static void ro_swres_alloc(ro_swres *o, const ro_sw *S, int64_t rows) {
    o->dA = ro_malloc((size_t)(S->R * S->C) * sizeof(float));
    o->dB = ro_malloc((size_t)(S->OC * S->R) * sizeof(float));
    o->di = ro_malloc((size_t)(rows * S->C) * sizeof(float));
    o->dg = ro_malloc((size_t)(rows * S->C) * sizeof(float));
    o->du = ro_malloc((size_t)(rows * S->C) * sizeof(float));
}

static void ro_swres_free(ro_swres *o) {
    free(o->dA); free(o->dB); free(o->di); free(o->dg); free(o->du);
}

static void ro_sw_cpu(lt_backend *cpu, const ro_sw *S, int64_t r0, int64_t nr, uint64_t st, ro_swres *o) {
    const int64_t C = S->C, R = S->R;
    float *act = ro_malloc((size_t)(nr * C) * sizeof(float));
    memset(o->dA, 0, (size_t)(R * C) * sizeof(float));
    memset(o->dB, 0, (size_t)(S->OC * R) * sizeof(float));
    memcpy(o->di, S->di0 + r0 * C, (size_t)(nr * C) * sizeof(float));
    CHECK_OK(cpu->ops.lora_bwd_swiglu(cpu, o->dA, o->dB, o->di, S->dout + r0 * S->OC, S->gate + r0 * C,
                                      S->up + r0 * C, act, S->xb + r0 * R, S->A, S->B, nr, C, S->OC, R, S->scale, S->p,
                                      S->seed, st, S->bwd ? o->dg : NULL, S->bwd ? o->du : NULL));
    free(act);
}

static void ro_sw_gpu(lt_backend *g, ro_sw *S, int64_t r0, int64_t nr, uint64_t st, ro_swres *o) {
    const size_t ab = (size_t)g->act_bytes;
    const int64_t C = S->C, R = S->R;
    CHECK_OK(g->ops.memset0(g, S->gdA, (size_t)(R * C) * sizeof(float)));
    CHECK_OK(g->ops.memset0(g, S->gdB, (size_t)(S->OC * R) * sizeof(float)));
    CHECK_OK(g->ops.copy(g, S->gdi, (const char *)S->gdi0 + (size_t)(r0 * C) * ab, (size_t)(nr * C) * ab));
    CHECK_OK(g->ops.lora_bwd_swiglu(g, S->gdA, S->gdB, S->gdi, (const char *)S->gdout + (size_t)(r0 * S->OC) * ab,
                                    (const char *)S->ggate + (size_t)(r0 * C) * ab,
                                    (const char *)S->gup + (size_t)(r0 * C) * ab, S->gact,
                                    (const char *)S->gxb + (size_t)(r0 * R) * ab, S->gA, S->gB, nr, C, S->OC, R,
                                    S->scale, S->p, S->seed, st, S->bwd ? S->gdg : NULL, S->bwd ? S->gdu : NULL));
    CHECK_OK(g->ops.download(g, o->dA, S->gdA, (size_t)(R * C) * sizeof(float)));
    CHECK_OK(g->ops.download(g, o->dB, S->gdB, (size_t)(S->OC * R) * sizeof(float)));
    if (S->bwd) {
        ro_read_act(g, o->dg, S->gdg, (size_t)(nr * C));
        ro_read_act(g, o->du, S->gdu, (size_t)(nr * C));
    } else {
        ro_read_act(g, o->di, S->gdi, (size_t)(nr * C));
    }
}

static void ro_check_swiglu(lt_backend *cpu, lt_backend *gpu, int bwd, const ro_path *pa) {
    const char *op = bwd ? "lora_bwd_swiglu with dgate/dup (down_proj)" : "lora_bwd_swiglu, dinp (down_proj)";
    const int fast = pa->skinny && pa->R == 16;
    const char *path = fast ? (bwd ? "tensor cores: SW wgrad + SWB addmul/swiglu_bwd, r=16"
                                   : "tensor cores: SW wgrad + addmul, r=16")
                            : pa->R == 16 ? "swiglu_fwd + cuBLAS lora_bwd + swiglu_bwd (kernels off), r=16"
                                          : "swiglu_fwd + cuBLAS lora_bwd + swiglu_bwd (no kernel for r=4)";
    ro_sw S;
    memset(&S, 0, sizeof S);
    S.N = RO_N;
    S.C = 512;
    S.OC = 256;
    S.R = pa->R;
    S.bwd = bwd;
    S.seed = 42;
    S.st = lt_graph_stream(3, 2, LT_PROJ_DOWN);
    S.p = 0.1f;
    S.scale = 2.0f;
    const int64_t N = S.N, C = S.C, OC = S.OC, R = S.R;
    const size_t ab = (size_t)gpu->act_bytes;
    S.gate = ro_host((size_t)(N * C), 3.0f, 201);
    S.up = ro_host((size_t)(N * C), 1.0f, 202);
    S.dout = ro_host((size_t)(N * OC), 1.0f, 203);
    S.xb = ro_host((size_t)(N * R), 1.0f, 204);
    S.di0 = ro_host((size_t)(N * C), 0.02f, 205);
    S.A = ro_host((size_t)(R * C), 0.1f, 206);
    S.B = ro_host((size_t)(OC * R), 0.1f, 207);
    S.ggate = ro_gpu_act(gpu, S.gate, (size_t)(N * C));
    S.gup = ro_gpu_act(gpu, S.up, (size_t)(N * C));
    S.gdout = ro_gpu_act(gpu, S.dout, (size_t)(N * OC));
    S.gxb = ro_gpu_act(gpu, S.xb, (size_t)(N * R));
    S.gdi0 = ro_gpu_act(gpu, S.di0, (size_t)(N * C));
    void **chunk[4] = {&S.gdi, &S.gact, &S.gdg, &S.gdu};
    for (int k = 0; k < 4; k++) CHECK_OK(gpu->ops.alloc(gpu, (size_t)(N * C) * ab, chunk[k]));
    S.gA = ro_gpu_f32(gpu, S.A, (size_t)(R * C));
    S.gB = ro_gpu_f32(gpu, S.B, (size_t)(OC * R));
    S.gdA = ro_gpu_f32(gpu, NULL, (size_t)(R * C));
    S.gdB = ro_gpu_f32(gpu, NULL, (size_t)(OC * R));
    const int ok = S.ggate && S.gup && S.gdout && S.gxb && S.gdi0 && S.gdi && S.gact && S.gdg && S.gdu && S.gA &&
                   S.gB && S.gdA && S.gdB;
    CHECK_MSG(ok, "%s [%s]: out of GPU memory", op, path);
    ro_swres W, Cc, P, G;
    ro_swres_alloc(&W, &S, N);
    ro_swres_alloc(&Cc, &S, N);
    ro_swres_alloc(&P, &S, N);
    ro_swres_alloc(&G, &S, N);
    float *sg[2], *sc[2];
    for (int k = 0; k < 2; k++) {
        sg[k] = ro_malloc((size_t)((k == 0 ? R * C : OC * R)) * sizeof(float));
        sc[k] = ro_malloc((size_t)((k == 0 ? R * C : OC * R)) * sizeof(float));
    }
    if (ok) {
        ro_skinny(pa->skinny);
        ro_sw_cpu(cpu, &S, 0, N, S.st, &W);
        for (int c = 0; c < RO_CASES; c++) {
            const int64_t r0 = ro_rows[c][0], nr = ro_rows[c][1];
            const uint64_t srow = lt_drop_stream_rows(S.st, (uint64_t)r0);
            const size_t nx = (size_t)(nr * C), off = (size_t)(r0 * C);
            ro_tag t;
            ro_begin(&t, op, path, r0, nr);
            ro_sw_cpu(cpu, &S, r0, nr, srow, &Cc);
            ro_sw_gpu(gpu, &S, r0, nr, srow, &G);
            ro_add(&t, "\n    CUDA vs the CPU:");
            if (bwd) {
                ro_near(&t, "CUDA vs the CPU", "dgate", G.dg, Cc.dg, nx, RO_TOL);
                ro_near(&t, "CUDA vs the CPU", "dup", G.du, Cc.du, nx, RO_TOL);
            } else {
                ro_near(&t, "CUDA vs the CPU", "dinp", G.di, Cc.di, nx, RO_TOL);
            }
            ro_near(&t, "CUDA vs the CPU", "dA[down_proj]", G.dA, Cc.dA, (size_t)(R * C), RO_TOL);
            ro_near(&t, "CUDA vs the CPU", "dB[down_proj]", G.dB, Cc.dB, (size_t)(OC * R), RO_TOL);
            for (int k = 0; k < 2; k++) {
                const ro_swres *X = k == 0 ? &G : &Cc;
                const char *who = k == 0 ? "CUDA vs the CPU's whole pass" : "the CPU vs its whole pass";
                const double tol = k == 0 ? RO_TOL : RO_TOL_CPU;
                ro_add(&t, k == 0 ? "\n    CUDA vs the CPU's whole pass:" : "\n    the CPU vs its whole pass:");
                if (bwd) {
                    ro_near(&t, who, "dgate", X->dg, W.dg + off, nx, tol);
                    ro_near(&t, who, "dup", X->du, W.du + off, nx, tol);
                } else {
                    ro_near(&t, who, "dinp", X->di, W.di + off, nx, tol);
                }
            }
            if (r0 > 0) {
                ro_sw_cpu(cpu, &S, r0, nr, S.st, &P);
                ro_add(&t, "\n    self-check, the CPU without the offset misses by:");
                if (bwd) {
                    ro_differ(&t, "dgate", Cc.dg, P.dg, nx);
                    ro_differ(&t, "dup", Cc.du, P.du, nx);
                } else {
                    ro_differ(&t, "dinp", Cc.di, P.di, nx);
                }
                ro_differ(&t, "dA[down_proj]", Cc.dA, P.dA, (size_t)(R * C));
            }
            if (c < 2)
                for (int k = 0; k < 2; k++) {
                    const size_t m = k == 0 ? (size_t)(R * C) : (size_t)(OC * R);
                    const float *g = k == 0 ? G.dA : G.dB, *cc = k == 0 ? Cc.dA : Cc.dB;
                    for (size_t i = 0; i < m; i++) {
                        sg[k][i] = c == 0 ? g[i] : sg[k][i] + g[i];
                        sc[k][i] = c == 0 ? cc[i] : sc[k][i] + cc[i];
                    }
                }
            ro_print(&t);
        }
        ro_tag t;
        ro_begin(&t, op, path, 0, N);
        ro_add(&t, "\n    dA, dB of rows 0..512 and 512..700 summed vs the CPU's whole pass: CUDA");
        ro_near(&t, "CUDA's two chunks summed vs the CPU's whole pass", "dA[down_proj]", sg[0], W.dA,
                (size_t)(R * C), RO_TOL);
        ro_near(&t, "CUDA's two chunks summed vs the CPU's whole pass", "dB[down_proj]", sg[1], W.dB,
                (size_t)(OC * R), RO_TOL);
        ro_add(&t, "; the CPU");
        ro_near(&t, "the CPU's two chunks summed vs its whole pass", "dA[down_proj]", sc[0], W.dA, (size_t)(R * C),
                RO_TOL_CPU);
        ro_near(&t, "the CPU's two chunks summed vs its whole pass", "dB[down_proj]", sc[1], W.dB, (size_t)(OC * R),
                RO_TOL_CPU);
        ro_print(&t);
        ro_skinny(1);
    }
    ro_swres_free(&W);
    ro_swres_free(&Cc);
    ro_swres_free(&P);
    ro_swres_free(&G);
    for (int k = 0; k < 2; k++) { free(sg[k]); free(sc[k]); }
    free(S.gate); free(S.up); free(S.dout); free(S.xb); free(S.di0); free(S.A); free(S.B);
    void *gb[] = {S.ggate, S.gup, S.gdout, S.gxb, S.gdi0, S.gdi, S.gact, S.gdg, S.gdu, S.gA, S.gB, S.gdA, S.gdB};
    for (size_t i = 0; i < sizeof gb / sizeof gb[0]; i++) gpu->ops.free(gpu, gb[i]);
}

static void check_row_offsets(void) {
    lt_backend *cpu = NULL, *gpu = NULL;
    CHECK_OK(lt_backend_cpu_create(1, &cpu));
    CHECK_OK(lt_backend_cuda_create(0, LT_DTYPE_BF16, &gpu));
    if (!cpu || !gpu) { lt_backend_free(cpu); lt_backend_free(gpu); return; }
    for (int k = 0; k < 3; k++) {
        const ro_path *pa = &ro_paths[k];
        ro_check_lora(cpu, gpu, 0, 1, pa);
        ro_check_lora(cpu, gpu, 1, 2, pa);
        ro_check_lora(cpu, gpu, 1, 3, pa);
        ro_check_swiglu(cpu, gpu, 1, pa);
        ro_check_swiglu(cpu, gpu, 0, pa);
    }
    ro_skinny(1);
    lt_backend_free(gpu);
    lt_backend_free(cpu);
}
static const uint64_t b_seed = 7; /* the seeded B of a fresh adapter (lt_test_seed_b) */

static int passes(const char *dir, int offload, int graphs, const lt_batch *b3, double *loss, grads *g,
                  long *launches) {
    return lt_test_cuda_passes(dir, NPASS, b_seed, graphs, offload, b3, loss, g, launches);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: test_offload_cuda MODEL_DIR\n"); return 2; }
    if (lt_cuda_device_count() <= 0) LT_TEST_SKIP("no CUDA device visible (or a CPU-only build)");
    check_row_offsets();
    lt_batch b3[3];
    lt_test_graph_batches(b3, 3, 500, 40, 56, 100);
    double l0[NPASS], l1[NPASS], l2[NPASS];
    grads g0 = {0}, g1 = {0}, g2 = {0};
    long n0 = 0, n1 = 0, n2 = 0;
    if (passes(argv[1], 0, 1, b3, l0, &g0, &n0) && passes(argv[1], 1, 1, b3, l1, &g1, &n1) &&
        passes(argv[1], 1, 0, b3, l2, &g2, &n2)) {
        printf("graph replays: %ld on the device, %ld offloaded, %ld offloaded with graphs off; losses", n0, n1, n2);
        for (int i = 0; i < NPASS; i++) printf(" %.6f/%.6f", l0[i], l1[i]);
        printf("\n");
        CHECK_MSG(n0 > 0 && n1 == n0 && n2 == 0, "graph launches %ld / %ld / %ld", n0, n1, n2);
        for (int i = 0; i < NPASS; i++) {
            CHECK_MSG(l0[i] == l1[i], "pass %d: loss %.9g on the device, %.9g offloaded", i, l0[i], l1[i]);
            CHECK_MSG(l2[i] == l1[i], "pass %d: loss %.9g offloaded op by op, %.9g as a graph", i, l2[i], l1[i]);
        }
        CHECK(l0[0] != l0[2]);
        CHECK(g0.n == g1.n && g0.n == g2.n && g0.n > 0);
        CHECK(g0.n == g1.n && !memcmp(g0.v, g1.v, g0.n * sizeof(float)));
        CHECK(g0.n == g2.n && !memcmp(g0.v, g2.v, g0.n * sizeof(float)));
    }
    /* MLP token chunks */
    double l3[NPASS], l4[NPASS];
    grads g3 = {0}, g4 = {0};
    long n3 = 0, n4 = 0;
    CHECK_OK(lt_graph_test_set_mlp_chunk(64));
    if (g0.n > 0 && passes(argv[1], 1, 1, b3, l3, &g3, &n3) && passes(argv[1], 1, 0, b3, l4, &g4, &n4)) {
        CHECK_MSG(n3 == n0 && n4 == 0, "graph launches with MLP chunks %ld / %ld (device mode %ld)", n3, n4, n0);
        double worst_loss = 0, dn = 0, nn = 0;
        for (int i = 0; i < NPASS; i++) {
            CHECK_MSG(l3[i] == l4[i], "pass %d with MLP chunks: loss %.9g as a graph, %.9g op by op", i, l3[i], l4[i]);
            const double r = fabs(l3[i] - l0[i]) / fabs(l0[i]);
            if (r > worst_loss) worst_loss = r;
        }
        CHECK(g3.n == g0.n && g4.n == g0.n);
        CHECK(g3.n == g4.n && !memcmp(g3.v, g4.v, g3.n * sizeof(float)));
        for (size_t i = 0; i < g0.n && g3.n == g0.n; i++) {
            dn += ((double)g3.v[i] - g0.v[i]) * ((double)g3.v[i] - g0.v[i]);
            nn += (double)g0.v[i] * g0.v[i];
        }
        const double grel = nn > 0 ? sqrt(dn / nn) : 1.0;
        printf("MLP chunks of 64 tokens: %ld graph replays, losses within %.3g (relative) of the device mode's, LoRA "
               "gradients within %.3g (relative L2)\n", n3, worst_loss, grel);
        CHECK_MSG(worst_loss <= 2e-3, "losses with MLP chunks %.3g (relative) from the device mode's", worst_loss);
        CHECK_MSG(grel <= 3e-2, "LoRA gradients with MLP chunks %.3g (relative L2) from the device mode's", grel);
    }
    CHECK_OK(lt_graph_test_set_mlp_chunk(0));
    free(g0.v);
    free(g1.v);
    free(g2.v);
    free(g3.v);
    free(g4.v);
    for (int v = 0; v < 3; v++) lt_batch_free(&b3[v]);
    return lt_test_done("test_offload_cuda");
}

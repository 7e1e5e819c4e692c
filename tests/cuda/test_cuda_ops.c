/* test_cuda_ops.c - every op of the CUDA backend against the CPU fp32 reference backend on fresh
 * random inputs: f32 ops to 1e-5 relative (optimizer ops bit for bit), 16-bit ops within bf16 /
 * fp16 tolerance (1e-2), NF4 quantization bit-identical to lib/backend/cpu/nf4_ref.c with exact
 * dequantization, 8-bit AdamW states and parameters equal to lt_adamw8bit_ref, attention on
 * both kernel paths (tensor cores and portable) with packed sequences, lora.cu's kernels for
 * several LoRA modules over one input (rowdot / wgrad bit-identical to single calls, addmul
 * within rounding, all against a CPU reference with per-module dropout masks), the graph's
 * fused ops (grouped products with folded LoRA up-projections and bias, the residual add with an
 * up-projection, the grouped LoRA backward) against the CPU ops they replace, and the error
 * paths (out of memory). Exits 77 where no GPU is visible. Argument: a seed (default: time). */
#include "lt_test.h"
#include "backend/backend.h"
#include "backend/nf4.h"
#include "backend/adam8bit.h"
#include "core/core.h"
#include "core/rng.h"
#include <stdint.h>
#include <time.h>

#ifndef LT_HAVE_CUDA
/* a CPU-only build has no CUDA backend to test */
int main(void) { LT_TEST_SKIP("this build has no CUDA backend (nvcc was not found)"); }
#else
#include "../../cuda/cuda_test.h"

static uint64_t rng_state = 88172645463325252ull;
static float frand(void) { /* xorshift64*, uniform in [-1, 1) */
    rng_state ^= rng_state >> 12; rng_state ^= rng_state << 25; rng_state ^= rng_state >> 27;
    return (float)((rng_state * 2685821657736338717ull) >> 40) / 8388608.0f - 1.0f;
}
static float *rnd(int64_t n, float scale) {
    float *x = calloc((size_t)n, sizeof(float)); /* calloc: gcc cannot see that n > 0 fills it */
    for (int64_t i = 0; i < n; i++) x[i] = frand() * scale;
    return x;
}

typedef struct ctx {
    lt_backend *cpu, *gpu;
    int dt; /* the GPU's act dtype */
    const char *tag;
} ctx;

/* rounds to the GPU's act dtype so that both backends see the same inputs */
static void round_act(ctx *c, float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        x[i] = c->dt == LT_DTYPE_BF16 ? lt_bf16_to_f32(lt_f32_to_bf16(x[i])) : lt_f16_to_f32(lt_f32_to_f16(x[i]));
}

/* ---- buffers on each backend ---- */
static void *c_buf(ctx *c, const float *h, int64_t n) {
    void *p = NULL;
    CHECK_OK(c->cpu->ops.alloc(c->cpu, (size_t)n * 4, &p));
    if (h) memcpy(p, h, (size_t)n * 4);
    return p;
}
static void *g_f32(ctx *c, const float *h, int64_t n) {
    void *p = NULL;
    CHECK_OK(c->gpu->ops.alloc(c->gpu, (size_t)n * 4, &p));
    if (h) CHECK_OK(c->gpu->ops.upload(c->gpu, p, h, (size_t)n * 4));
    return p;
}
static void *g_i32(ctx *c, const int32_t *h, int64_t n) {
    void *p = NULL;
    CHECK_OK(c->gpu->ops.alloc(c->gpu, (size_t)n * 4, &p));
    CHECK_OK(c->gpu->ops.upload(c->gpu, p, h, (size_t)n * 4));
    return p;
}
static void *g_act(ctx *c, const float *h, int64_t n) {
    void *p = NULL;
    CHECK_OK(c->gpu->ops.alloc(c->gpu, (size_t)n * 2, &p));
    if (h) {
        float *t = g_f32(c, h, n);
        CHECK_OK(c->gpu->ops.to_act(c->gpu, p, t, n));
        c->gpu->ops.free(c->gpu, t);
    }
    return p;
}
static float *g_read_act(ctx *c, const void *d, int64_t n) {
    float *t = g_f32(c, NULL, n), *h = malloc((size_t)n * 4);
    CHECK_OK(c->gpu->ops.from_act(c->gpu, t, d, n));
    CHECK_OK(c->gpu->ops.download(c->gpu, h, t, (size_t)n * 4));
    c->gpu->ops.free(c->gpu, t);
    return h;
}
static float *g_read_f32(ctx *c, const void *d, int64_t n) {
    float *h = malloc((size_t)n * 4);
    CHECK_OK(c->gpu->ops.download(c->gpu, h, d, (size_t)n * 4));
    return h;
}

static double compare(ctx *c, const char *what, const float *gpu, const float *cpu, int64_t n, double tol) {
    double e = lt_rel_err(gpu, cpu, (size_t)n);
    CHECK_MSG(e <= tol, "[%s] %s: relative error %.3g > %.3g", c->tag, what, e, tol);
    printf("  [%s] %-28s rel err %.3g\n", c->tag, what, e);
    return e;
}

#define TOL16(c) ((c)->dt == LT_DTYPE_BF16 ? 1e-2 : 4e-3)

/* ---- NF4 ---- */
static void test_nf4(ctx *c, int64_t rows, int64_t cols, int dq, int src_dt) {
    const int64_t n = rows * cols, nb = (n + 63) / 64, nn = (nb + 255) / 256;
    float *x = rnd(n, 0.05f);
    uint16_t *x16 = malloc((size_t)n * 2);
    for (int64_t i = 0; i < n; i++) {
        if (i % 997 == 5) x[i] *= 40.0f; /* outliers */
        x16[i] = src_dt == LT_DTYPE_BF16 ? lt_f32_to_bf16(x[i]) : lt_f32_to_f16(x[i]);
        if (src_dt != LT_DTYPE_F32) x[i] = src_dt == LT_DTYPE_BF16 ? lt_bf16_to_f32(x16[i]) : lt_f16_to_f32(x16[i]);
    }
    if (n >= 128) for (int64_t i = 64; i < 128; i++) { x[i] = 0.0f; x16[i] = 0; } /* an all-zero block */
    lt_weight_desc d = {0};
    d.host = src_dt == LT_DTYPE_F32 ? (const void *)x : (const void *)x16;
    d.dtype = src_dt; d.rows = rows; d.cols = cols; d.quant = LT_QUANT_NF4; d.double_quant = dq;
    lt_bweight *w = NULL;
    CHECK_OK(c->gpu->ops.weight_create(c->gpu, &d, &w));
    if (!w) return;
    /* reference */
    uint8_t *rp = malloc((size_t)(n + 1) / 2), *gp = malloc((size_t)(n + 1) / 2);
    float *ra = malloc((size_t)nb * 4), *ga = malloc((size_t)nb * 4);
    uint8_t *rq = malloc((size_t)nb), *gq = malloc((size_t)nb);
    float *rn = malloc((size_t)nn * 4), *gn = malloc((size_t)nn * 4), roff = 0, goff = 0;
    lt_nf4_quantize_ref(x, n, 64, rp, ra);
    int gdq = -1;
    CHECK_OK(lt_cuda_weight_nf4_state(c->gpu, w, gp, ga, gq, gn, &goff, &gdq));
    CHECK(gdq == dq);
    CHECK_MSG(memcmp(rp, gp, (size_t)(n + 1) / 2) == 0, "NF4 packed bytes differ (%lldx%lld dq=%d)", (long long)rows,
              (long long)cols, dq);
    if (dq) {
        lt_nf4_double_quant_ref(ra, nb, rq, rn, &roff);
        CHECK_MSG(memcmp(rq, gq, (size_t)nb) == 0, "NF4 absmax codes differ");
        CHECK_MSG(memcmp(rn, gn, (size_t)nn * 4) == 0, "NF4 nested absmax differs");
        CHECK_MSG(memcmp(&roff, &goff, 4) == 0, "NF4 offset differs: %.9g vs %.9g", goff, roff);
        lt_nf4_double_dequant_ref(rq, rn, NULL, roff, nb, ra);
    } else {
        CHECK_MSG(memcmp(ra, ga, (size_t)nb * 4) == 0, "NF4 absmax differs");
    }
    float *ref = malloc((size_t)n * 4), *got = malloc((size_t)n * 4);
    lt_nf4_dequantize_ref(rp, ra, n, 64, NULL, ref);
    CHECK_OK(c->gpu->ops.weight_read(c->gpu, w, got));
    CHECK_MSG(memcmp(ref, got, (size_t)n * 4) == 0, "NF4 dequantization is not exact (%lldx%lld dq=%d)",
              (long long)rows, (long long)cols, dq);
    /* the 16-bit dequantization the products read: contiguous, and into wider rows at an offset
     * (the grouped products' layout), equal to the reference rounded once to the act type */
    for (int wide = 0; wide < 2 && (wide == 0 || cols % 8 == 0); wide++) {
        const int64_t ld = wide ? cols + 40 : cols, off = wide ? 16 : 0;
        void *d16 = NULL;
        CHECK_OK(c->gpu->ops.alloc(c->gpu, (size_t)(rows * ld) * 2, &d16));
        CHECK_OK(lt_cuda_weight_test_16(c->gpu, w, d16, ld, off));
        float *h16 = g_read_act(c, d16, rows * ld), *r16 = malloc((size_t)n * 4);
        memcpy(r16, ref, (size_t)n * 4);
        round_act(c, r16, n);
        int64_t bad = 0;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < cols; j++)
                if (memcmp(&h16[r * ld + off + j], &r16[r * cols + j], 4) != 0) bad++;
        CHECK_MSG(bad == 0, "[%s] NF4 -> 16-bit dequantization (%lldx%lld, ld %lld, offset %lld): %lld values differ",
                  c->tag, (long long)rows, (long long)cols, (long long)ld, (long long)off, (long long)bad);
        free(h16); free(r16);
        c->gpu->ops.free(c->gpu, d16);
    }
    /* the same state loaded as a pre-quantized bitsandbytes tensor */
    lt_weight_desc p = {0};
    p.dtype = LT_DTYPE_BF16; p.rows = rows; p.cols = cols; p.quant = LT_QUANT_NF4; p.double_quant = dq;
    p.nf4_packed = rp;
    if (dq) { p.absmax_u8 = rq; p.nested_absmax = rn; p.nested_offset = roff; }
    else p.absmax_f32 = ra;
    lt_bweight *w2 = NULL;
    CHECK_OK(c->gpu->ops.weight_create(c->gpu, &p, &w2));
    if (w2) {
        CHECK_OK(c->gpu->ops.weight_read(c->gpu, w2, got));
        CHECK_MSG(memcmp(ref, got, (size_t)n * 4) == 0, "pre-quantized NF4 does not dequantize exactly");
        c->gpu->ops.weight_free(c->gpu, w2);
    }
    printf("  [%s] nf4 %lldx%lld dq=%d src=%d: bit-identical\n", c->tag, (long long)rows, (long long)cols, dq, src_dt);
    c->gpu->ops.weight_free(c->gpu, w);
    free(x); free(x16); free(rp); free(gp); free(ra); free(ga); free(rq); free(gq); free(rn); free(gn);
    free(ref); free(got);
}

/* a weight on both backends from the same bf16 values */
static void make_weights(ctx *c, int64_t rows, int64_t cols, int quant, lt_bweight **cw, lt_bweight **gw, float sc) {
    float *x = rnd(rows * cols, sc);
    uint16_t *x16 = malloc((size_t)(rows * cols) * 2);
    for (int64_t i = 0; i < rows * cols; i++) x16[i] = lt_f32_to_bf16(x[i]);
    lt_weight_desc d = {0};
    d.host = x16; d.dtype = LT_DTYPE_BF16; d.rows = rows; d.cols = cols; d.quant = quant; d.double_quant = 1;
    CHECK_OK(c->cpu->ops.weight_create(c->cpu, &d, cw));
    CHECK_OK(c->gpu->ops.weight_create(c->gpu, &d, gw));
    free(x); free(x16);
}

static void test_linear(ctx *c, int quant) {
    const int64_t N = 77, C = 192, OC = 320;
    lt_bweight *cw = NULL, *gw = NULL;
    make_weights(c, OC, C, quant, &cw, &gw, 0.1f);
    float *x = rnd(N * C, 1.0f), *bias = rnd(OC, 0.5f), *dy = rnd(N * OC, 1.0f), *d0 = rnd(N * C, 1.0f);
    round_act(c, x, N * C); round_act(c, dy, N * OC); round_act(c, d0, N * C);
    float *cx = c_buf(c, x, N * C), *cy = c_buf(c, NULL, N * OC), *cb = c_buf(c, bias, OC);
    void *gx = g_act(c, x, N * C), *gy = g_act(c, NULL, N * OC), *gb = g_f32(c, bias, OC);
    CHECK_OK(c->cpu->ops.linear_fwd(c->cpu, cy, cx, cw, cb, N));
    CHECK_OK(c->gpu->ops.linear_fwd(c->gpu, gy, gx, gw, gb, N));
    float *r = g_read_act(c, gy, N * OC);
    compare(c, quant == LT_QUANT_NF4 ? "linear_fwd nf4+bias" : "linear_fwd 16bit+bias", r, cy, N * OC, TOL16(c));
    free(r);
    /* out = x W^T + resid: a token count off the tuned shapes (copy + accumulate) and one on them
     * (cuBLASLt reads resid, writes out), and out aliasing resid */
    for (int v = 0; v < 3; v++) {
        const int64_t n = v == 0 ? N : 128;
        float *x2 = rnd(n * C, 1.0f), *res = rnd(n * OC, 1.0f);
        round_act(c, x2, n * C); round_act(c, res, n * OC);
        float *cx2 = c_buf(c, x2, n * C), *cres = c_buf(c, res, n * OC), *cout = c_buf(c, NULL, n * OC);
        void *gx2 = g_act(c, x2, n * C), *gres = g_act(c, res, n * OC), *gout = v == 2 ? gres : g_act(c, NULL, n * OC);
        CHECK_OK(c->cpu->ops.linear_fwd_add(c->cpu, cout, cx2, cw, cres, n));
        CHECK_OK(c->gpu->ops.linear_fwd_add(c->gpu, gout, gx2, gw, gres, n));
        r = g_read_act(c, gout, n * OC);
        compare(c, v == 0 ? "linear_fwd_add N=77" : v == 1 ? "linear_fwd_add N=128" : "linear_fwd_add in place", r,
                cout, n * OC, TOL16(c));
        free(r);
        c->cpu->ops.free(c->cpu, cx2); c->cpu->ops.free(c->cpu, cres); c->cpu->ops.free(c->cpu, cout);
        c->gpu->ops.free(c->gpu, gx2); c->gpu->ops.free(c->gpu, gres);
        if (v != 2) c->gpu->ops.free(c->gpu, gout);
        free(x2); free(res);
    }
    for (int acc = 0; acc < 2; acc++) {
        float *cdy = c_buf(c, dy, N * OC), *cdx = c_buf(c, d0, N * C);
        void *gdy = g_act(c, dy, N * OC), *gdx = g_act(c, d0, N * C);
        CHECK_OK(c->cpu->ops.linear_bwd_input(c->cpu, cdx, cdy, cw, N, acc));
        CHECK_OK(c->gpu->ops.linear_bwd_input(c->gpu, gdx, gdy, gw, N, acc));
        r = g_read_act(c, gdx, N * C);
        compare(c, acc ? "linear_bwd_input (+=)" : "linear_bwd_input", r, cdx, N * C, TOL16(c));
        free(r);
        c->cpu->ops.free(c->cpu, cdy); c->cpu->ops.free(c->cpu, cdx);
        c->gpu->ops.free(c->gpu, gdy); c->gpu->ops.free(c->gpu, gdx);
    }
    c->cpu->ops.weight_free(c->cpu, cw); c->gpu->ops.weight_free(c->gpu, gw);
    c->cpu->ops.free(c->cpu, cx); c->cpu->ops.free(c->cpu, cy); c->cpu->ops.free(c->cpu, cb);
    c->gpu->ops.free(c->gpu, gx); c->gpu->ops.free(c->gpu, gy); c->gpu->ops.free(c->gpu, gb);
    free(x); free(bias); free(dy); free(d0);
}

static void test_lora(ctx *c, float p, int64_t R) {
    const int64_t N = 70, C = 160, OC = 96;
    const float scale = 2.0f;
    const uint64_t seed = 1234, stream = 77;
    float *x = rnd(N * C, 1.0f), *A = rnd(R * C, 0.1f), *B = rnd(OC * R, 0.1f), *base = rnd(N * OC, 1.0f);
    float *dy = rnd(N * OC, 1.0f), *dx0 = rnd(N * C, 1.0f), *dA0 = rnd(R * C, 0.01f), *dB0 = rnd(OC * R, 0.01f);
    round_act(c, x, N * C); round_act(c, base, N * OC); round_act(c, dy, N * OC); round_act(c, dx0, N * C);
    float *cx = c_buf(c, x, N * C), *cA = c_buf(c, A, R * C), *cB = c_buf(c, B, OC * R), *cy = c_buf(c, base, N * OC);
    float *cxa = c_buf(c, NULL, N * R);
    void *gx = g_act(c, x, N * C), *gA = g_f32(c, A, R * C), *gB = g_f32(c, B, OC * R), *gy = g_act(c, base, N * OC);
    void *gxa = g_act(c, NULL, N * R);
    CHECK_OK(c->cpu->ops.lora_fwd(c->cpu, cy, cxa, cx, cA, cB, N, C, OC, R, scale, p, seed, stream));
    CHECK_OK(c->gpu->ops.lora_fwd(c->gpu, gy, gxa, gx, gA, gB, N, C, OC, R, scale, p, seed, stream));
    float *r = g_read_act(c, gy, N * OC);
    char nm[64];
    snprintf(nm, sizeof nm, "lora_fwd out (p=%.1f, r=%lld)", p, (long long)R);
    compare(c, nm, r, cy, N * OC, TOL16(c));
    free(r);
    r = g_read_act(c, gxa, N * R);
    compare(c, "lora_fwd xa", r, cxa, N * R, TOL16(c));
    free(r);
    float *cdA = c_buf(c, dA0, R * C), *cdB = c_buf(c, dB0, OC * R), *cdx = c_buf(c, dx0, N * C), *cdy = c_buf(c, dy, N * OC);
    void *gdA = g_f32(c, dA0, R * C), *gdB = g_f32(c, dB0, OC * R), *gdx = g_act(c, dx0, N * C), *gdy = g_act(c, dy, N * OC);
    CHECK_OK(c->cpu->ops.lora_bwd(c->cpu, cdA, cdB, cdx, cdy, cx, cxa, cA, cB, N, C, OC, R, scale, p, seed, stream));
    CHECK_OK(c->gpu->ops.lora_bwd(c->gpu, gdA, gdB, gdx, gdy, gx, gxa, gA, gB, N, C, OC, R, scale, p, seed, stream));
    r = g_read_f32(c, gdA, R * C); compare(c, "lora_bwd dA (+=)", r, cdA, R * C, TOL16(c)); free(r);
    r = g_read_f32(c, gdB, OC * R); compare(c, "lora_bwd dB (+=)", r, cdB, OC * R, TOL16(c)); free(r);
    r = g_read_act(c, gdx, N * C); compare(c, "lora_bwd dinp (+=)", r, cdx, N * C, TOL16(c)); free(r);
    void *cb[] = {cx, cA, cB, cy, cxa, cdA, cdB, cdx, cdy}, *gb[] = {gx, gA, gB, gy, gxa, gdA, gdB, gdx, gdy};
    for (int i = 0; i < 9; i++) { c->cpu->ops.free(c->cpu, cb[i]); c->gpu->ops.free(c->gpu, gb[i]); }
    free(x); free(A); free(B); free(base); free(dy); free(dx0); free(dA0); free(dB0);
}

/* the raw bytes of a device buffer */
static void *g_raw(ctx *c, const void *d, size_t bytes) {
    void *h = malloc(bytes);
    CHECK_OK(c->gpu->ops.download(c->gpu, h, d, bytes));
    return h;
}

/* lora_bwd_swiglu (down_proj's LoRA backward making its input swiglu(gate, up) as it reads it,
 * then, with dgate/dup, swiglu's backward): the bits of swiglu_fwd into a buffer, lora_bwd and
 * swiglu_bwd on the GPU, and the CPU's within 16-bit tolerance. Rank 12 has no fast kernel: the
 * op composes the three. */
static void test_lora_swiglu(ctx *c, float p, int64_t R, int64_t N, int with_bwd) {
    const int64_t C = 448, OC = 96;
    const float scale = 2.0f;
    const uint64_t seed = 99, stream = 5;
    float *gate = rnd(N * C, 3.0f), *up = rnd(N * C, 1.0f), *A = rnd(R * C, 0.1f), *B = rnd(OC * R, 0.1f);
    float *dy = rnd(N * OC, 1.0f), *dx0 = rnd(N * C, 1.0f), *xa = rnd(N * R, 1.0f), *dA0 = rnd(R * C, 0.01f);
    round_act(c, gate, N * C); round_act(c, up, N * C); round_act(c, dy, N * OC); round_act(c, dx0, N * C);
    round_act(c, xa, N * R);
    void *gg = g_act(c, gate, N * C), *gu = g_act(c, up, N * C), *gact = g_act(c, NULL, N * C);
    void *gact2 = g_act(c, NULL, N * C), *gA = g_f32(c, A, R * C), *gB = g_f32(c, B, OC * R);
    void *gdy = g_act(c, dy, N * OC), *gxa = g_act(c, xa, N * R);
    void *gdA[2], *gdB[2], *gdx[2], *gdg[2], *gdu[2];
    for (int k = 0; k < 2; k++) {
        gdA[k] = g_f32(c, dA0, R * C); gdB[k] = g_f32(c, NULL, OC * R); gdx[k] = g_act(c, dx0, N * C);
        gdg[k] = g_act(c, NULL, N * C); gdu[k] = g_act(c, NULL, N * C);
    }
    CHECK_OK(c->gpu->ops.swiglu_fwd(c->gpu, gact, gg, gu, N * C));
    CHECK_OK(c->gpu->ops.lora_bwd(c->gpu, gdA[0], gdB[0], gdx[0], gdy, gact, gxa, gA, gB, N, C, OC, R, scale, p, seed,
                                  stream));
    if (with_bwd) CHECK_OK(c->gpu->ops.swiglu_bwd(c->gpu, gdg[0], gdu[0], gdx[0], gg, gu, N * C));
    CHECK_OK(c->gpu->ops.lora_bwd_swiglu(c->gpu, gdA[1], gdB[1], gdx[1], gdy, gg, gu, gact2, gxa, gA, gB, N, C, OC, R,
                                         scale, p, seed, stream, with_bwd ? gdg[1] : NULL, with_bwd ? gdu[1] : NULL));
    /* what the op promises: dA, dB, and dinp (without the swiglu backward) or dgate and dup */
    const size_t na = (size_t)(R * C) * 4, nb = (size_t)(OC * R) * 4, nx = (size_t)(N * C) * 2;
    int same = 1;
    void *const *outs[3][2] = {{gdA, gdA}, {gdB, gdB}, {with_bwd ? gdg : gdx, with_bwd ? gdu : gdx}};
    const size_t sizes[3] = {na, nb, nx};
    for (int o = 0; o < 3; o++)
        for (int h = 0; h < (o == 2 && with_bwd ? 2 : 1); h++) {
            void *r0 = g_raw(c, outs[o][h][0], sizes[o]), *r1 = g_raw(c, outs[o][h][1], sizes[o]);
            same &= !memcmp(r0, r1, sizes[o]);
            free(r0); free(r1);
        }
    CHECK_MSG(same, "[%s] lora_bwd_swiglu (r=%lld, N=%lld, p=%.1f, swiglu_bwd %d): not the bits of the composed ops",
              c->tag, (long long)R, (long long)N, (double)p, with_bwd);
    /* the CPU reference of the op */
    float *cg = c_buf(c, gate, N * C), *cu = c_buf(c, up, N * C), *cact = c_buf(c, NULL, N * C);
    float *cA = c_buf(c, A, R * C), *cB = c_buf(c, B, OC * R), *cdy = c_buf(c, dy, N * OC), *cxa = c_buf(c, xa, N * R);
    float *cdA = c_buf(c, dA0, R * C), *cdB = c_buf(c, NULL, OC * R), *cdx = c_buf(c, dx0, N * C);
    float *cdg = c_buf(c, NULL, N * C), *cdu = c_buf(c, NULL, N * C);
    CHECK_OK(c->cpu->ops.lora_bwd_swiglu(c->cpu, cdA, cdB, cdx, cdy, cg, cu, cact, cxa, cA, cB, N, C, OC, R, scale, p,
                                         seed, stream, with_bwd ? cdg : NULL, with_bwd ? cdu : NULL));
    char nm[80];
    float *r = g_read_f32(c, gdA[1], R * C);
    snprintf(nm, sizeof nm, "lora_bwd_swiglu dA r=%lld N=%lld%s", (long long)R, (long long)N, with_bwd ? " +bwd" : "");
    compare(c, nm, r, cdA, R * C, TOL16(c));
    free(r);
    if (with_bwd) {
        r = g_read_act(c, gdg[1], N * C); compare(c, "lora_bwd_swiglu dgate", r, cdg, N * C, TOL16(c)); free(r);
        r = g_read_act(c, gdu[1], N * C); compare(c, "lora_bwd_swiglu dup", r, cdu, N * C, TOL16(c)); free(r);
    } else {
        r = g_read_act(c, gdx[1], N * C); compare(c, "lora_bwd_swiglu dinp", r, cdx, N * C, TOL16(c)); free(r);
    }
    void *cb[] = {cg, cu, cact, cA, cB, cdy, cxa, cdA, cdB, cdx, cdg, cdu};
    for (int i = 0; i < 12; i++) c->cpu->ops.free(c->cpu, cb[i]);
    void *gb[] = {gg, gu, gact, gact2, gA, gB, gdy, gxa};
    for (int i = 0; i < 8; i++) c->gpu->ops.free(c->gpu, gb[i]);
    for (int k = 0; k < 2; k++) {
        c->gpu->ops.free(c->gpu, gdA[k]); c->gpu->ops.free(c->gpu, gdB[k]); c->gpu->ops.free(c->gpu, gdx[k]);
        c->gpu->ops.free(c->gpu, gdg[k]); c->gpu->ops.free(c->gpu, gdu[k]);
    }
    free(gate); free(up); free(A); free(B); free(dy); free(dx0); free(xa); free(dA0);
}

/* ---- LoRA modules sharing one input (lora.cu's *_multi kernels) ---- */
/* C-callable hooks of cuda/lora.cu: one multi call (multi = 1) or n single calls (0) */
int lt_cuda_lora_test_wg_chunks(int64_t N, int64_t M); /* lt_cuda_lora_wg_chunks */
lt_status lt_cuda_lora_test_rowdot(lt_backend *be, int multi, int n, void *const *y, const void *x,
                                   const void *const *W, int64_t N, int64_t M, int64_t R, float alpha, float p,
                                   uint64_t seed, const uint64_t *streams);
lt_status lt_cuda_lora_test_wgrad(lt_backend *be, int multi, int n, float *const *G, int64_t sm, int64_t sr,
                                  const void *x, const void *const *coef, int64_t N, int64_t M, int64_t R, float alpha,
                                  float p, uint64_t seed, const uint64_t *streams, float *scratch);
lt_status lt_cuda_lora_test_addmul(lt_backend *be, int multi, int n, void *y, const void *const *coef,
                                   const float *const *W, int64_t wr, int64_t wm, int64_t N, int64_t M, int64_t R,
                                   float alpha, float p, uint64_t seed, const uint64_t *streams);


/* drop(x) as the CPU backend forms it: kept values times 1/(1-p) in f32 (the kernels zero the
 * dropped 16-bit values and scale their f32 sums, which is the same up to f32 rounding) */
static float *drop_ref(const float *x, int64_t N, int64_t M, float p, uint64_t seed, uint64_t stream) {
    float *d = malloc((size_t)(N * M) * 4);
    const float inv = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
    for (int64_t i = 0; i < N * M; i++)
        d[i] = p > 0.0f ? (lt_rng_keep(seed, stream, (uint64_t)i, p) ? x[i] * inv : 0.0f) : x[i];
    return d;
}

/* n modules (rank R) over one input x(N,M): rowdot_multi and wgrad_multi give the bits of n
 * single calls; addmul_multi equals the singles up to rounding (bit for bit when n = 1); all
 * three match a CPU f64 reference with each module's own dropout mask (when small enough) */
static void test_lora_multi_case(ctx *c, int n, int64_t R, int64_t N, int64_t M, float p) {
    const uint64_t seed = 987654321ull + (uint64_t)M, streams[3] = {3 * (uint64_t)N + 1, 70001, 70002 + (uint64_t)R};
    const float alpha = 1.5f, galpha = 0.75f;
    const int ref = (double)N * M * R * n <= 1e8;
    const int layout = (int)((N + M + R + n) & 1); /* W / G stored (R, M) or (M, R) */
    const int64_t wr = layout ? M : 1, wm = layout ? 1 : R, sm = layout ? 1 : R, sr = layout ? M : 1;
    float *x = rnd(N * M, 1.0f), *y0 = rnd(N * M, 0.1f);
    round_act(c, x, N * M); round_act(c, y0, N * M);
    void *gx = g_act(c, x, N * M);
    float *W[3], *coef[3], *G0[3], *Wf[3];
    void *gW[3], *gcoef[3], *gWf[3], *ys[3], *ym[3], *Gs[3], *Gm[3];
    for (int s = 0; s < n; s++) {
        W[s] = rnd(R * M, 0.5f); round_act(c, W[s], R * M);
        coef[s] = rnd(N * R, 1.0f); round_act(c, coef[s], N * R);
        G0[s] = rnd(M * R, 0.01f);
        Wf[s] = rnd(R * M, 0.5f); /* f32, W(r, m) = Wf[r*wr + m*wm] */
        gW[s] = g_act(c, W[s], R * M); gcoef[s] = g_act(c, coef[s], N * R); gWf[s] = g_f32(c, Wf[s], R * M);
        ys[s] = g_act(c, NULL, N * R); ym[s] = g_act(c, NULL, N * R);
        Gs[s] = g_f32(c, G0[s], M * R); Gm[s] = g_f32(c, G0[s], M * R);
    }
    void *yas = g_act(c, y0, N * M), *yam = g_act(c, y0, N * M);
    CHECK_OK(lt_cuda_lora_test_rowdot(c->gpu, 0, n, ys, gx, (const void *const *)gW, N, M, R, alpha, p, seed, streams));
    CHECK_OK(lt_cuda_lora_test_rowdot(c->gpu, 1, n, ym, gx, (const void *const *)gW, N, M, R, alpha, p, seed, streams));
    CHECK_OK(lt_cuda_lora_test_wgrad(c->gpu, 0, n, (float *const *)Gs, sm, sr, gx, (const void *const *)gcoef, N, M, R,
                                     galpha, p, seed, streams, NULL));
    CHECK_OK(lt_cuda_lora_test_wgrad(c->gpu, 1, n, (float *const *)Gm, sm, sr, gx, (const void *const *)gcoef, N, M, R,
                                     galpha, p, seed, streams, NULL));
    CHECK_OK(lt_cuda_lora_test_addmul(c->gpu, 0, n, yas, (const void *const *)gcoef, (const float *const *)gWf, wr, wm,
                                      N, M, R, alpha, p, seed, streams));
    CHECK_OK(lt_cuda_lora_test_addmul(c->gpu, 1, n, yam, (const void *const *)gcoef, (const float *const *)gWf, wr, wm,
                                      N, M, R, alpha, p, seed, streams));
    double e_rd = 0, e_wg = 0, e_am = 0;
    for (int s = 0; s < n; s++) {
        void *a = g_raw(c, ys[s], (size_t)(N * R) * 2), *b = g_raw(c, ym[s], (size_t)(N * R) * 2);
        CHECK_MSG(memcmp(a, b, (size_t)(N * R) * 2) == 0,
                  "[%s] lora rowdot_multi n=%d R=%lld N=%lld M=%lld p=%.1f: module %d differs from the single call",
                  c->tag, n, (long long)R, (long long)N, (long long)M, p, s);
        free(a); free(b);
        a = g_raw(c, Gs[s], (size_t)(M * R) * 4); b = g_raw(c, Gm[s], (size_t)(M * R) * 4);
        CHECK_MSG(memcmp(a, b, (size_t)(M * R) * 4) == 0,
                  "[%s] lora wgrad_multi n=%d R=%lld N=%lld M=%lld p=%.1f: module %d differs from the single call",
                  c->tag, n, (long long)R, (long long)N, (long long)M, p, s);
        free(a); free(b);
    }
    float *rs = g_read_act(c, yas, N * M), *rm = g_read_act(c, yam, N * M);
    const double e_ms = lt_rel_err(rm, rs, (size_t)(N * M));
    CHECK_MSG(e_ms <= TOL16(c), "[%s] lora addmul_multi n=%d R=%lld N=%lld M=%lld p=%.1f: relative error %.3g vs the "
              "single calls", c->tag, n, (long long)R, (long long)N, (long long)M, p, e_ms);
    if (n == 1)
        CHECK_MSG(memcmp(rs, rm, (size_t)(N * M) * 4) == 0,
                  "[%s] lora addmul_multi n=1 R=%lld N=%lld M=%lld p=%.1f: differs from the single call", c->tag,
                  (long long)R, (long long)N, (long long)M, p);
    if (ref) {
        float *yr = malloc((size_t)(N * M) * 4);
        memcpy(yr, y0, (size_t)(N * M) * 4);
        const float inv = p > 0.0f ? 1.0f / (1.0f - p) : 1.0f;
        for (int s = 0; s < n; s++) {
            float *xd = drop_ref(x, N, M, p, seed, streams[s]);
            /* rowdot: y = alpha * drop(x) W^T */
            float *yref = malloc((size_t)(N * R) * 4);
            for (int64_t t = 0; t < N; t++)
                for (int64_t r = 0; r < R; r++) {
                    double acc = 0;
                    for (int64_t m = 0; m < M; m++) acc += (double)xd[t * M + m] * W[s][r * M + m];
                    yref[t * R + r] = (float)(alpha * acc);
                }
            float *got = g_read_act(c, ym[s], N * R);
            const double e = lt_rel_err(got, yref, (size_t)(N * R));
            if (e > e_rd) e_rd = e;
            free(got); free(yref);
            /* wgrad: G += galpha * drop(x)^T coef */
            float *gref = malloc((size_t)(M * R) * 4);
            double *gacc = calloc((size_t)(M * R), sizeof(double));
            for (int64_t t = 0; t < N; t++)
                for (int64_t m = 0; m < M; m++) {
                    const double xv = xd[t * M + m];
                    if (xv != 0.0)
                        for (int64_t r = 0; r < R; r++) gacc[m * R + r] += xv * coef[s][t * R + r];
                }
            for (int64_t m = 0; m < M; m++)
                for (int64_t r = 0; r < R; r++)
                    gref[m * sm + r * sr] = G0[s][m * sm + r * sr] + (float)(galpha * gacc[m * R + r]);
            free(gacc);
            got = g_read_f32(c, Gm[s], M * R);
            const double e2 = lt_rel_err(got, gref, (size_t)(M * R));
            if (e2 > e_wg) e_wg = e2;
            free(got); free(gref); free(xd);
            /* addmul: y += alpha * drop(coef W16) with W rounded to the act dtype as the kernels do */
            float *w16 = malloc((size_t)(R * M) * 4);
            memcpy(w16, Wf[s], (size_t)(R * M) * 4);
            round_act(c, w16, R * M);
            double *row = malloc((size_t)M * sizeof(double));
            for (int64_t t = 0; t < N; t++) {
                for (int64_t m = 0; m < M; m++) row[m] = 0.0;
                for (int64_t r = 0; r < R; r++) {
                    const double cr = coef[s][t * R + r];
                    for (int64_t m = 0; m < M; m++) row[m] += cr * w16[r * wr + m * wm];
                }
                for (int64_t m = 0; m < M; m++) {
                    float v = (float)(alpha * row[m]);
                    if (p > 0.0f) v = lt_rng_keep(seed, streams[s], (uint64_t)(t * M + m), p) ? v * inv : 0.0f;
                    yr[t * M + m] += v;
                }
            }
            free(row); free(w16);
        }
        e_am = lt_rel_err(rm, yr, (size_t)(N * M));
        free(yr);
        CHECK_MSG(e_rd <= TOL16(c), "[%s] lora rowdot_multi n=%d R=%lld N=%lld M=%lld p=%.1f: relative error %.3g vs "
                  "the CPU", c->tag, n, (long long)R, (long long)N, (long long)M, p, e_rd);
        CHECK_MSG(e_wg <= 1e-4, "[%s] lora wgrad_multi n=%d R=%lld N=%lld M=%lld p=%.1f: relative error %.3g vs the "
                  "CPU", c->tag, n, (long long)R, (long long)N, (long long)M, p, e_wg);
        CHECK_MSG(e_am <= TOL16(c), "[%s] lora addmul_multi n=%d R=%lld N=%lld M=%lld p=%.1f: relative error %.3g vs "
                  "the CPU", c->tag, n, (long long)R, (long long)N, (long long)M, p, e_am);
    }
    printf("  [%s] lora multi n=%d R=%-2lld N=%-4lld M=%-4lld p=%.1f: rowdot/wgrad = singles bit for bit; addmul vs "
           "singles %.2g", c->tag, n, (long long)R, (long long)N, (long long)M, p, e_ms);
    if (ref) printf("; vs CPU rowdot %.2g wgrad %.2g addmul %.2g", e_rd, e_wg, e_am);
    printf("\n");
    free(rs); free(rm);
    for (int s = 0; s < n; s++) {
        void *gb[] = {gW[s], gcoef[s], gWf[s], ys[s], ym[s], Gs[s], Gm[s]};
        for (int i = 0; i < 7; i++) c->gpu->ops.free(c->gpu, gb[i]);
        free(W[s]); free(coef[s]); free(G0[s]); free(Wf[s]);
    }
    c->gpu->ops.free(c->gpu, gx); c->gpu->ops.free(c->gpu, yas); c->gpu->ops.free(c->gpu, yam);
    free(x); free(y0);
}

/* GPU time per call (no check): n modules over one input as n single calls and as one multi
 * call */
#define LM_TIME(out, expr) do { \
        CHECK_OK(c->gpu->ops.sync(c->gpu)); \
        const double t0_ = lt_time_s(); \
        for (int i_ = 0; i_ < 20; i_++) CHECK_OK(expr); \
        CHECK_OK(c->gpu->ops.sync(c->gpu)); \
        (out) = (lt_time_s() - t0_) * 1e6 / 20; \
    } while (0)
static void test_lora_multi_speed(ctx *c, int n, int64_t R, int64_t N, int64_t M, float p) {
    const uint64_t seed = 5, streams[3] = {1, 2, 3};
    const int nch = lt_cuda_lora_test_wg_chunks(N, M);
    void *gx = g_act(c, NULL, N * M), *gy = g_act(c, NULL, N * M), *part = g_f32(c, NULL, (int64_t)n * nch * M * R);
    CHECK_OK(c->gpu->ops.memset0(c->gpu, gx, (size_t)(N * M) * 2));
    CHECK_OK(c->gpu->ops.memset0(c->gpu, gy, (size_t)(N * M) * 2));
    void *gW[3], *gco[3], *gWf[3], *gya[3], *gG[3];
    for (int s = 0; s < n; s++) {
        gW[s] = g_act(c, NULL, R * M); gco[s] = g_act(c, NULL, N * R); gWf[s] = g_f32(c, NULL, R * M);
        gya[s] = g_act(c, NULL, N * R); gG[s] = g_f32(c, NULL, M * R);
        CHECK_OK(c->gpu->ops.memset0(c->gpu, gW[s], (size_t)(R * M) * 2));
        CHECK_OK(c->gpu->ops.memset0(c->gpu, gco[s], (size_t)(N * R) * 2));
        CHECK_OK(c->gpu->ops.memset0(c->gpu, gWf[s], (size_t)(R * M) * 4));
        CHECK_OK(c->gpu->ops.memset0(c->gpu, gG[s], (size_t)(M * R) * 4));
    }
    double t[6];
    const void *const *W = (const void *const *)gW, *const *co = (const void *const *)gco;
    const float *const *Wf = (const float *const *)gWf;
    float *const *G = (float *const *)gG;
    LM_TIME(t[0], lt_cuda_lora_test_rowdot(c->gpu, 0, n, gya, gx, W, N, M, R, 1.0f, p, seed, streams));
    LM_TIME(t[1], lt_cuda_lora_test_rowdot(c->gpu, 1, n, gya, gx, W, N, M, R, 1.0f, p, seed, streams));
    LM_TIME(t[2], lt_cuda_lora_test_wgrad(c->gpu, 0, n, G, 1, M, gx, co, N, M, R, 1.0f, p, seed, streams, part));
    LM_TIME(t[3], lt_cuda_lora_test_wgrad(c->gpu, 1, n, G, 1, M, gx, co, N, M, R, 1.0f, p, seed, streams, part));
    LM_TIME(t[4], lt_cuda_lora_test_addmul(c->gpu, 0, n, gy, co, Wf, M, 1, N, M, R, 1.0f, p, seed, streams));
    LM_TIME(t[5], lt_cuda_lora_test_addmul(c->gpu, 1, n, gy, co, Wf, M, 1, N, M, R, 1.0f, p, seed, streams));
    printf("  [%s] lora speed n=%d R=%lld N=%lld M=%lld p=%.1f, us per n modules: rowdot %.1f singles / %.1f multi; "
           "wgrad %.1f / %.1f; addmul %.1f singles / %.1f multi\n", c->tag, n,
           (long long)R, (long long)N, (long long)M, p, t[0], t[1], t[2], t[3], t[4], t[5]);
    for (int s = 0; s < n; s++) {
        void *gb[] = {gW[s], gco[s], gWf[s], gya[s], gG[s]};
        for (int i = 0; i < 5; i++) c->gpu->ops.free(c->gpu, gb[i]);
    }
    c->gpu->ops.free(c->gpu, gx); c->gpu->ops.free(c->gpu, gy); c->gpu->ops.free(c->gpu, part);
}

/* every module count and rank at a small ragged shape, with and without dropout; then the
 * Qwen2-1.5B widths (1536 hidden, 8960 intermediate) at ragged token counts (every count and
 * rank, dropout on or off by turns; three pairs at the largest); then the benchmark's q/k/v
 * call (2 x 2048 tokens) */
static void test_lora_multi(ctx *c) {
    static const int64_t ranks[3] = {8, 16, 32};
    for (int n = 1; n <= 3; n++)
        for (int ri = 0; ri < 3; ri++)
            for (int pi = 0; pi < 2; pi++) test_lora_multi_case(c, n, ranks[ri], 77, 264, pi ? 0.1f : 0.0f);
    static const int64_t shapes[4][2] = {{77, 1536}, {1000, 1536}, {77, 8960}, {1000, 8960}};
    for (int si = 0; si < 4; si++)
        for (int n = 1; n <= 3; n++)
            for (int ri = 0; ri < 3; ri++) {
                if (si == 3 && (n + ri) % 3 != 1) continue; /* (1, 8), (2, 32), (3, 16) */
                test_lora_multi_case(c, n, ranks[ri], shapes[si][0], shapes[si][1], (n + ri + si) % 2 ? 0.1f : 0.0f);
            }
    test_lora_multi_case(c, 3, 16, 4096, 1536, 0.1f);
    test_lora_multi_speed(c, 3, 16, 4096, 1536, 0.1f); /* q/k/v over ln1 at 2 x 2048 tokens */
    test_lora_multi_speed(c, 2, 16, 4096, 1536, 0.1f); /* gate/up over ln2 */
    test_lora_multi_speed(c, 1, 16, 4096, 8960, 0.0f); /* down's dxa, dB, dinp widths */
}

/* ---- the graph's fused ops (gemm.cu): LoRA down-projections over one shared input, grouped
 * products with their LoRA up-projections and bias folded in, the residual add with an
 * up-projection, the grouped LoRA backward; each against the CPU ops it replaces ---- */
static void test_fused(ctx *c, int quant, float p, int64_t R) {
    const int64_t N = 70, C = 160, OC[3] = {160, 32, 48};
    const float scale = 2.0f;
    const uint64_t seed = 99, streams[3] = {11, 12, 13};
    CHECK(c->gpu->ops.lora_xa_multi && c->gpu->ops.lora_bwd_multi && c->gpu->ops.add_lora && c->gpu->ops.linear_lora_group_fwd);
    float *x = rnd(N * C, 1.0f);
    round_act(c, x, N * C);
    void *cx = c_buf(c, x, N * C), *gx = g_act(c, x, N * C);
    lt_bweight *cw[3], *gw[3];
    float *hA[3], *hB[3], *hb[3], *hdy[3];
    void *cA[3], *gA[3], *cB[3], *gB[3], *cb[3], *gb[3], *cxa[3], *gxa[3], *cy[3], *gy[3], *cdy[3], *gdy[3];
    void *cdA[3], *gdA[3], *cdB[3], *gdB[3];
    for (int s = 0; s < 3; s++) {
        make_weights(c, OC[s], C, quant, &cw[s], &gw[s], 0.1f);
        hA[s] = rnd(R * C, 0.1f); hB[s] = rnd(OC[s] * R, 0.1f); hb[s] = rnd(OC[s], 0.5f); hdy[s] = rnd(N * OC[s], 1.0f);
        round_act(c, hdy[s], N * OC[s]);
        cA[s] = c_buf(c, hA[s], R * C); gA[s] = g_f32(c, hA[s], R * C);
        cB[s] = c_buf(c, hB[s], OC[s] * R); gB[s] = g_f32(c, hB[s], OC[s] * R);
        cb[s] = c_buf(c, hb[s], OC[s]); gb[s] = g_f32(c, hb[s], OC[s]);
        cxa[s] = c_buf(c, NULL, N * R); gxa[s] = g_act(c, NULL, N * R);
        cy[s] = c_buf(c, NULL, N * OC[s]); gy[s] = g_act(c, NULL, N * OC[s]);
        cdy[s] = c_buf(c, hdy[s], N * OC[s]); gdy[s] = g_act(c, hdy[s], N * OC[s]);
        float *z = calloc((size_t)(R * (C > OC[s] ? C : OC[s])), 4);
        cdA[s] = c_buf(c, z, R * C); gdA[s] = g_f32(c, z, R * C);
        cdB[s] = c_buf(c, z, OC[s] * R); gdB[s] = g_f32(c, z, OC[s] * R);
        free(z);
    }
    char nm[96];
    /* xa of the three modules, each with its own mask */
    for (int s = 0; s < 3; s++)
        CHECK_OK(c->cpu->ops.lora_fwd(c->cpu, NULL, cxa[s], cx, cA[s], cB[s], N, C, OC[s], R, scale, p, seed,
                                      streams[s]));
    CHECK_OK(c->gpu->ops.lora_xa_multi(c->gpu, 3, gxa, gx, (const float *const *)gA, N, C, R, p, seed, streams));
    for (int s = 0; s < 3; s++) {
        float *r = g_read_act(c, gxa[s], N * R);
        snprintf(nm, sizeof nm, "lora_xa_multi xa[%d] (p=%.1f r=%lld)", s, p, (long long)R);
        compare(c, nm, r, cxa[s], N * R, TOL16(c));
        free(r);
    }
    /* three projections with bias (q/k/v), two without (gate/up) */
    for (int n = 2; n <= 3; n++) {
        const float *cbias[3] = {NULL, NULL, NULL}, *gbias[3] = {NULL, NULL, NULL};
        if (n == 3) for (int s = 0; s < 3; s++) { cbias[s] = cb[s]; gbias[s] = gb[s]; }
        CHECK_OK(c->cpu->ops.linear_lora_group_fwd(c->cpu, n, cy, cx, (const lt_bweight *const *)cw, cbias,
                                                   (const void *const *)cxa, (const float *const *)cB, N, R, scale));
        CHECK_OK(c->gpu->ops.linear_lora_group_fwd(c->gpu, n, gy, gx, (const lt_bweight *const *)gw, gbias,
                                                   (const void *const *)gxa, (const float *const *)gB, N, R, scale));
        for (int s = 0; s < n; s++) {
            float *r = g_read_act(c, gy[s], N * OC[s]);
            snprintf(nm, sizeof nm, "linear_lora_group n=%d out[%d]%s", n, s, n == 3 ? " +bias" : "");
            compare(c, nm, r, cy[s], N * OC[s], TOL16(c));
            free(r);
        }
    }
    /* out = a + b + scale xa B^T (o_proj: OC = C), out aliasing a; the CPU: lora_fwd into b, add */
    {
        float *ha = rnd(N * C, 1.0f), *hbb = rnd(N * C, 1.0f);
        round_act(c, ha, N * C); round_act(c, hbb, N * C);
        void *ca = c_buf(c, ha, N * C), *cbb = c_buf(c, hbb, N * C), *ga = g_act(c, ha, N * C), *gbb = g_act(c, hbb, N * C);
        CHECK_OK(c->cpu->ops.lora_fwd(c->cpu, cbb, cxa[0], cx, cA[0], cB[0], N, C, C, R, scale, p, seed, streams[0]));
        CHECK_OK(c->cpu->ops.add(c->cpu, ca, ca, cbb, N * C));
        CHECK_OK(c->gpu->ops.add_lora(c->gpu, ga, ga, gbb, gxa[0], gB[0], N, C, R, scale));
        float *r = g_read_act(c, ga, N * C);
        compare(c, "add_lora (out = a)", r, ca, N * C, TOL16(c));
        free(r); free(ha); free(hbb);
        c->cpu->ops.free(c->cpu, ca); c->cpu->ops.free(c->cpu, cbb);
        c->gpu->ops.free(c->gpu, ga); c->gpu->ops.free(c->gpu, gbb);
    }
    /* the grouped backward against lora_bwd per module, dinp accumulated over them */
    {
        float *hd = rnd(N * C, 1.0f);
        round_act(c, hd, N * C);
        void *cd = c_buf(c, hd, N * C), *gd = g_act(c, hd, N * C);
        for (int s = 0; s < 3; s++)
            CHECK_OK(c->cpu->ops.lora_bwd(c->cpu, cdA[s], cdB[s], cd, cdy[s], cx, cxa[s], cA[s], cB[s], N, C, OC[s], R,
                                          scale, p, seed, streams[s]));
        CHECK_OK(c->gpu->ops.lora_bwd_multi(c->gpu, 3, (float *const *)gdA, (float *const *)gdB, gd,
                                            (const void *const *)gdy, gx, (const void *const *)gxa,
                                            (const float *const *)gA, (const float *const *)gB, N, C, OC, R, scale, p,
                                            seed, streams));
        for (int s = 0; s < 3; s++) {
            float *r = g_read_f32(c, gdA[s], R * C);
            snprintf(nm, sizeof nm, "lora_bwd_multi dA[%d]", s);
            compare(c, nm, r, cdA[s], R * C, TOL16(c)); free(r);
            r = g_read_f32(c, gdB[s], OC[s] * R);
            snprintf(nm, sizeof nm, "lora_bwd_multi dB[%d]", s);
            compare(c, nm, r, cdB[s], OC[s] * R, TOL16(c)); free(r);
        }
        float *r = g_read_act(c, gd, N * C);
        compare(c, "lora_bwd_multi dinp (+=)", r, cd, N * C, TOL16(c));
        free(r); free(hd);
        c->cpu->ops.free(c->cpu, cd); c->gpu->ops.free(c->gpu, gd);
    }
    for (int s = 0; s < 3; s++) {
        c->cpu->ops.weight_free(c->cpu, cw[s]); c->gpu->ops.weight_free(c->gpu, gw[s]);
        void *cs[] = {cA[s], cB[s], cb[s], cxa[s], cy[s], cdy[s], cdA[s], cdB[s]};
        void *gs[] = {gA[s], gB[s], gb[s], gxa[s], gy[s], gdy[s], gdA[s], gdB[s]};
        for (int i = 0; i < 8; i++) { c->cpu->ops.free(c->cpu, cs[i]); c->gpu->ops.free(c->gpu, gs[i]); }
        free(hA[s]); free(hB[s]); free(hb[s]); free(hdy[s]);
    }
    c->cpu->ops.free(c->cpu, cx); c->gpu->ops.free(c->gpu, gx);
    free(x);
}

static void test_layers(ctx *c) {
    const int64_t N = 37, C = 1536, H = 6, HD = 64, V = 500;
    /* rmsnorm */
    float *x = rnd(N * C, 2.0f), *w = rnd(C, 1.0f), *dy = rnd(N * C, 1.0f), *d0 = rnd(N * C, 1.0f);
    round_act(c, x, N * C); round_act(c, dy, N * C); round_act(c, d0, N * C);
    float *cx = c_buf(c, x, N * C), *cw = c_buf(c, w, C), *cy = c_buf(c, NULL, N * C), *cr = c_buf(c, NULL, N);
    void *gx = g_act(c, x, N * C), *gw = g_f32(c, w, C), *gy = g_act(c, NULL, N * C), *gr = g_f32(c, NULL, N);
    CHECK_OK(c->cpu->ops.rmsnorm_fwd(c->cpu, cy, cr, cx, cw, N, C, 1e-6f));
    CHECK_OK(c->gpu->ops.rmsnorm_fwd(c->gpu, gy, gr, gx, gw, N, C, 1e-6f));
    float *r = g_read_act(c, gy, N * C); compare(c, "rmsnorm_fwd", r, cy, N * C, TOL16(c)); free(r);
    r = g_read_f32(c, gr, N); compare(c, "rmsnorm_fwd rstd (f32)", r, cr, N, 1e-5); free(r);
    float *cdy = c_buf(c, dy, N * C), *cdx = c_buf(c, d0, N * C);
    void *gdy = g_act(c, dy, N * C), *gdx = g_act(c, d0, N * C);
    CHECK_OK(c->cpu->ops.rmsnorm_bwd(c->cpu, cdx, cdy, cx, cw, cr, N, C));
    CHECK_OK(c->gpu->ops.rmsnorm_bwd(c->gpu, gdx, gdy, gx, gw, gr, N, C));
    r = g_read_act(c, gdx, N * C); compare(c, "rmsnorm_bwd (+=)", r, cdx, N * C, TOL16(c)); free(r);
    /* rope fwd then bwd on (N, H, HD) */
    int32_t pos[37];
    for (int i = 0; i < N; i++) pos[i] = i * 53 % 2000;
    void *gpos = g_i32(c, pos, N);
    int32_t *cpos = c_buf(c, (float *)pos, N);
    memcpy(cpos, pos, sizeof pos);
    float *cq = c_buf(c, x, N * H * HD);
    void *gq = g_act(c, x, N * H * HD);
    CHECK_OK(c->cpu->ops.rope_fwd(c->cpu, cq, cpos, N, H, HD, 1e6f));
    CHECK_OK(c->gpu->ops.rope_fwd(c->gpu, gq, gpos, N, H, HD, 1e6f));
    r = g_read_act(c, gq, N * H * HD); compare(c, "rope_fwd", r, cq, N * H * HD, TOL16(c)); free(r);
    CHECK_OK(c->cpu->ops.rope_bwd(c->cpu, cq, cpos, N, H, HD, 1e6f));
    CHECK_OK(c->gpu->ops.rope_bwd(c->gpu, gq, gpos, N, H, HD, 1e6f));
    r = g_read_act(c, gq, N * H * HD); compare(c, "rope_bwd", r, cq, N * H * HD, TOL16(c)); free(r);
    /* swiglu, add */
    const int64_t n = N * C;
    float *cu = c_buf(c, d0, n), *cg = c_buf(c, x, n), *co = c_buf(c, NULL, n);
    void *gu = g_act(c, d0, n), *gg = g_act(c, x, n), *go = g_act(c, NULL, n);
    CHECK_OK(c->cpu->ops.swiglu_fwd(c->cpu, co, cg, cu, n));
    CHECK_OK(c->gpu->ops.swiglu_fwd(c->gpu, go, gg, gu, n));
    r = g_read_act(c, go, n); compare(c, "swiglu_fwd", r, co, n, TOL16(c)); free(r);
    float *cdg = c_buf(c, NULL, n), *cdu = c_buf(c, NULL, n);
    void *gdg = g_act(c, NULL, n), *gdu = g_act(c, NULL, n);
    CHECK_OK(c->cpu->ops.swiglu_bwd(c->cpu, cdg, cdu, cdy, cg, cu, n));
    CHECK_OK(c->gpu->ops.swiglu_bwd(c->gpu, gdg, gdu, gdy, gg, gu, n));
    r = g_read_act(c, gdg, n); compare(c, "swiglu_bwd dgate", r, cdg, n, TOL16(c)); free(r);
    r = g_read_act(c, gdu, n); compare(c, "swiglu_bwd dup", r, cdu, n, TOL16(c)); free(r);
    CHECK_OK(c->cpu->ops.add(c->cpu, co, cg, cu, n));
    CHECK_OK(c->gpu->ops.add(c->gpu, go, gg, gu, n));
    r = g_read_act(c, go, n); compare(c, "add", r, co, n, TOL16(c)); free(r);
    /* embedding (16-bit table) */
    lt_bweight *ctab = NULL, *gtab = NULL;
    make_weights(c, V, C, LT_QUANT_NONE, &ctab, &gtab, 1.0f);
    int32_t ids[37];
    for (int i = 0; i < N; i++) ids[i] = (i * 131 + 7) % V;
    void *gids = g_i32(c, ids, N);
    int32_t *cids = c_buf(c, NULL, N);
    memcpy(cids, ids, sizeof ids);
    CHECK_OK(c->cpu->ops.embedding(c->cpu, co, cids, ctab, N, C));
    CHECK_OK(c->gpu->ops.embedding(c->gpu, go, gids, gtab, N, C));
    r = g_read_act(c, go, N * C); compare(c, "embedding", r, co, N * C, TOL16(c)); free(r);
    c->cpu->ops.weight_free(c->cpu, ctab); c->gpu->ops.weight_free(c->gpu, gtab);
    void *cb[] = {cx, cw, cy, cr, cdy, cdx, cpos, cq, cu, cg, co, cdg, cdu, cids};
    void *gb[] = {gx, gw, gy, gr, gdy, gdx, gpos, gq, gu, gg, go, gdg, gdu, gids};
    for (int i = 0; i < 14; i++) { c->cpu->ops.free(c->cpu, cb[i]); c->gpu->ops.free(c->gpu, gb[i]); }
    free(x); free(w); free(dy); free(d0);
}

/* attention kernel paths: auto (the v7 kernels where shared memory allows), portable, the v6
 * backward (the cards whose shared memory is too small for the v7 one: A100, sm_86/89), and
 * deterministic (dQ without atomics, checked to repeat bit for bit) */
enum { ATT_AUTO, ATT_PORTABLE, ATT_BWD_V6, ATT_DET };
static const char *const att_mode_name[] = {"auto", "portable", "v6 bwd", "deterministic"};

static void test_attention_shape(ctx *c, int HD, int mode, int NH, int NKV, int nseq, const int *lens) {
    int32_t cu[16] = {0};
    int maxlen = 0;
    for (int i = 0; i < nseq; i++) { cu[i + 1] = cu[i] + lens[i]; if (lens[i] > maxlen) maxlen = lens[i]; }
    const int64_t N = cu[nseq], nq = N * NH * HD, nk = N * NKV * HD;
    lt_cuda_attention_force_portable(mode == ATT_PORTABLE);
    lt_cuda_attention_force_bwd_v6(mode == ATT_BWD_V6);
    c->gpu->deterministic = mode == ATT_DET;
    float *q = rnd(nq, 1.5f), *k = rnd(nk, 1.5f), *v = rnd(nk, 1.0f), *dout = rnd(nq, 1.0f);
    round_act(c, q, nq); round_act(c, k, nk); round_act(c, v, nk); round_act(c, dout, nq);
    float *cq = c_buf(c, q, nq), *ck = c_buf(c, k, nk), *cv = c_buf(c, v, nk), *co = c_buf(c, NULL, nq);
    float *cl = c_buf(c, NULL, N * NH);
    int32_t *ccu = c_buf(c, NULL, nseq + 1);
    memcpy(ccu, cu, sizeof cu);
    void *gq = g_act(c, q, nq), *gk = g_act(c, k, nk), *gv = g_act(c, v, nk), *go = g_act(c, NULL, nq);
    void *gl = g_f32(c, NULL, N * NH), *gcu = g_i32(c, cu, nseq + 1);
    CHECK_OK(c->cpu->ops.attention_fwd(c->cpu, co, cl, cq, ck, cv, ccu, nseq, maxlen, N, NH, NKV, HD));
    CHECK_OK(c->gpu->ops.attention_fwd(c->gpu, go, gl, gq, gk, gv, gcu, nseq, maxlen, N, NH, NKV, HD));
    char name[64];
    snprintf(name, sizeof name, "attn_fwd HD=%d NH=%d %s", HD, NH, att_mode_name[mode]);
    float *r = g_read_act(c, go, nq); compare(c, name, r, co, nq, TOL16(c)); free(r);
    r = g_read_f32(c, gl, N * NH);
    compare(c, "attn_fwd lse", r, cl, N * NH, 2e-3);
    free(r);
    /* backward with the CPU's forward output as `out` on both sides */
    float *o16 = malloc((size_t)nq * 4);
    memcpy(o16, co, (size_t)nq * 4);
    round_act(c, o16, nq);
    float *co16 = c_buf(c, o16, nq), *cdo = c_buf(c, dout, nq);
    float *cdq = c_buf(c, NULL, nq), *cdk = c_buf(c, NULL, nk), *cdv = c_buf(c, NULL, nk);
    void *go16 = g_act(c, o16, nq), *gdo = g_act(c, dout, nq), *gdq = g_act(c, NULL, nq), *gdk = g_act(c, NULL, nk),
         *gdv = g_act(c, NULL, nk);
    void *gl2 = g_f32(c, cl, N * NH);
    CHECK_OK(c->cpu->ops.attention_bwd(c->cpu, cdq, cdk, cdv, cdo, cq, ck, cv, co16, cl, ccu, nseq, maxlen, N, NH,
                                       NKV, HD));
    CHECK_OK(c->gpu->ops.attention_bwd(c->gpu, gdq, gdk, gdv, gdo, gq, gk, gv, go16, gl2, gcu, nseq, maxlen, N, NH,
                                       NKV, HD));
    r = g_read_act(c, gdq, nq); compare(c, "attn_bwd dq", r, cdq, nq, 2 * TOL16(c));
    if (mode == ATT_DET) { /* a second run gives the same bits */
        float *r1 = g_read_act(c, gdk, nk), *r2 = g_read_act(c, gdv, nk);
        CHECK_OK(c->gpu->ops.attention_bwd(c->gpu, gdq, gdk, gdv, gdo, gq, gk, gv, go16, gl2, gcu, nseq, maxlen, N,
                                           NH, NKV, HD));
        float *s0 = g_read_act(c, gdq, nq), *s1 = g_read_act(c, gdk, nk), *s2 = g_read_act(c, gdv, nk);
        CHECK_MSG(memcmp(r, s0, (size_t)nq * 4) == 0 && memcmp(r1, s1, (size_t)nk * 4) == 0 &&
                      memcmp(r2, s2, (size_t)nk * 4) == 0,
                  "[%s] deterministic attention_bwd: a second run gave different bits", c->tag);
        printf("  [%s] attn_bwd deterministic: second run bit-identical\n", c->tag);
        free(r1); free(r2); free(s0); free(s1); free(s2);
    }
    free(r);
    r = g_read_act(c, gdk, nk); compare(c, "attn_bwd dk", r, cdk, nk, 2 * TOL16(c)); free(r);
    r = g_read_act(c, gdv, nk); compare(c, "attn_bwd dv", r, cdv, nk, 2 * TOL16(c)); free(r);
    lt_cuda_attention_force_portable(0);
    lt_cuda_attention_force_bwd_v6(0);
    c->gpu->deterministic = 0;
    void *cb[] = {cq, ck, cv, co, cl, ccu, co16, cdo, cdq, cdk, cdv};
    void *gb[] = {gq, gk, gv, go, gl, gcu, go16, gdo, gdq, gdk, gdv, gl2};
    for (int i = 0; i < 11; i++) c->cpu->ops.free(c->cpu, cb[i]);
    for (int i = 0; i < 12; i++) c->gpu->ops.free(c->gpu, gb[i]);
    free(q); free(k); free(v); free(dout); free(o16);
}

static void test_attention(ctx *c, int HD, int mode) {
    const int lens[5] = {37, 130, 1, 64, 200};
    test_attention_shape(c, HD, mode, 6, 2, 5, lens);
}

static void test_attention_kv(ctx *c) {
    const int NH = 4, NKV = 2, HD = 64, maxlen = 40, past = 21, n = 6;
    const int64_t nc = (int64_t)maxlen * NKV * HD, nq = (int64_t)n * NH * HD;
    float *kc = rnd(nc, 1.0f), *vc = rnd(nc, 1.0f), *q = rnd(nq, 1.0f);
    round_act(c, kc, nc); round_act(c, vc, nc); round_act(c, q, nq);
    float *ck = c_buf(c, kc, nc), *cv = c_buf(c, vc, nc), *cq = c_buf(c, q, nq), *co = c_buf(c, NULL, nq);
    void *gk = g_act(c, kc, nc), *gv = g_act(c, vc, nc), *gq = g_act(c, q, nq), *go = g_act(c, NULL, nq);
    CHECK_OK(c->cpu->ops.attention_kv(c->cpu, co, cq, ck, cv, past, n, NH, NKV, HD));
    CHECK_OK(c->gpu->ops.attention_kv(c->gpu, go, gq, gk, gv, past, n, NH, NKV, HD));
    float *r = g_read_act(c, go, nq); compare(c, "attention_kv", r, co, nq, TOL16(c)); free(r);
    void *cb[] = {ck, cv, cq, co}, *gb[] = {gk, gv, gq, go};
    for (int i = 0; i < 4; i++) { c->cpu->ops.free(c->cpu, cb[i]); c->gpu->ops.free(c->gpu, gb[i]); }
    free(kc); free(vc); free(q);
}

static void test_lm_head(ctx *c, int64_t N, int64_t C, int64_t V) {
    lt_bweight *cw = NULL, *gw = NULL;
    make_weights(c, V, C, LT_QUANT_NONE, &cw, &gw, 0.3f);
    float *h = rnd(N * C, 1.0f);
    round_act(c, h, N * C);
    int32_t *t = malloc((size_t)N * 4);
    for (int64_t i = 0; i < N; i++) t[i] = i % 7 == 3 ? -100 : (int32_t)((i * 7919) % V);
    float *ch = c_buf(c, h, N * C), *cdh = c_buf(c, NULL, N * C), *cls = c_buf(c, NULL, 1);
    int32_t *ct = c_buf(c, NULL, N);
    memcpy(ct, t, (size_t)N * 4);
    void *gh = g_act(c, h, N * C), *gdh = g_act(c, NULL, N * C), *gls = g_f32(c, NULL, 1), *gt = g_i32(c, t, N);
    const float gs = 1.0f / (float)N;
    CHECK_OK(c->cpu->ops.lm_head_ce(c->cpu, cls, cdh, ch, cw, ct, N, C, V, gs));
    CHECK_OK(c->gpu->ops.lm_head_ce(c->gpu, gls, gdh, gh, gw, gt, N, C, V, gs));
    float gl;
    CHECK_OK(c->gpu->ops.download(c->gpu, &gl, gls, 4));
    char name[64];
    snprintf(name, sizeof name, "lm_head_ce loss V=%lld", (long long)V);
    compare(c, name, &gl, cls, 1, 2e-3);
    float *r = g_read_act(c, gdh, N * C); compare(c, "lm_head_ce dh", r, cdh, N * C, TOL16(c)); free(r);
    if (V <= 4096) {
        float *cl = c_buf(c, NULL, N * V);
        void *gl2 = g_f32(c, NULL, N * V);
        CHECK_OK(c->cpu->ops.lm_head_logits(c->cpu, cl, ch, cw, N, C, V));
        CHECK_OK(c->gpu->ops.lm_head_logits(c->gpu, gl2, gh, gw, N, C, V));
        r = g_read_f32(c, gl2, N * V); compare(c, "lm_head_logits", r, cl, N * V, TOL16(c)); free(r);
        c->cpu->ops.free(c->cpu, cl); c->gpu->ops.free(c->gpu, gl2);
    }
    c->cpu->ops.weight_free(c->cpu, cw); c->gpu->ops.weight_free(c->gpu, gw);
    void *cb[] = {ch, cdh, cls, ct}, *gb[] = {gh, gdh, gls, gt};
    for (int i = 0; i < 4; i++) { c->cpu->ops.free(c->cpu, cb[i]); c->gpu->ops.free(c->gpu, gb[i]); }
    free(h); free(t);
}

static void test_optim(ctx *c) {
    const int64_t n = 5000; /* not a multiple of 256 */
    float *p = rnd(n, 1.0f), *g = rnd(n, 0.01f), *m = calloc(n, 4), *v = calloc(n, 4);
    double cs = 0, gs = 0;
    float *cg = c_buf(c, g, n);
    void *gg = g_f32(c, g, n);
    CHECK_OK(c->cpu->ops.sumsq(c->cpu, cg, n, &cs));
    CHECK_OK(c->gpu->ops.sumsq(c->gpu, gg, n, &gs));
    CHECK_NEAR(gs, cs, 1e-9 * cs);
    int flag = -1;
    CHECK_OK(c->gpu->ops.nonfinite(c->gpu, gg, n, &flag));
    CHECK(flag == 0);
    /* adamw, 3 steps */
    float *cp = c_buf(c, p, n), *cm = c_buf(c, m, n), *cv = c_buf(c, v, n);
    void *gp = g_f32(c, p, n), *gm = g_f32(c, m, n), *gv = g_f32(c, v, n);
    for (int t = 1; t <= 3; t++) {
        CHECK_OK(c->cpu->ops.adamw(c->cpu, cp, cg, cm, cv, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, t));
        CHECK_OK(c->gpu->ops.adamw(c->gpu, gp, gg, gm, gv, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, t));
    }
    float *r = g_read_f32(c, gp, n);
    CHECK_MSG(memcmp(r, cp, (size_t)n * 4) == 0, "adamw parameters differ from the CPU (rel %.3g)",
              lt_rel_err(r, cp, n));
    free(r);
    r = g_read_f32(c, gv, n);
    CHECK_MSG(memcmp(r, cv, (size_t)n * 4) == 0, "adamw v differs from the CPU");
    free(r);
    CHECK_OK(c->cpu->ops.scale(c->cpu, cp, n, 0.37f));
    CHECK_OK(c->gpu->ops.scale(c->gpu, gp, n, 0.37f));
    r = g_read_f32(c, gp, n);
    CHECK_MSG(memcmp(r, cp, (size_t)n * 4) == 0, "scale differs from the CPU");
    free(r);
    /* 8-bit adamw: 4 steps with fresh gradients, a NaN and an inf among them */
    const int64_t nb = (n + 255) / 256;
    uint8_t *s1 = calloc(n, 1), *s2 = calloc(n, 1);
    float *a1 = calloc(nb, 4), *a2 = calloc(nb, 4), *pp = rnd(n, 1.0f);
    void *gs1 = NULL, *gs2 = NULL;
    CHECK_OK(c->gpu->ops.alloc(c->gpu, n, &gs1));
    CHECK_OK(c->gpu->ops.alloc(c->gpu, n, &gs2));
    void *ga1 = g_f32(c, a1, nb), *ga2 = g_f32(c, a2, nb), *gpp = g_f32(c, pp, n);
    for (int t = 1; t <= 4; t++) {
        float *gr = rnd(n, 0.02f);
        if (t == 2) { gr[17] = NAN; gr[4000] = INFINITY; }
        void *ggr = g_f32(c, gr, n);
        lt_adamw8bit_ref(pp, gr, s1, s2, a1, a2, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, t, 1);
        CHECK_OK(c->gpu->ops.adamw8bit(c->gpu, gpp, ggr, gs1, gs2, ga1, ga2, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, t));
        if (t == 2) {
            CHECK_OK(c->gpu->ops.nonfinite(c->gpu, ggr, n, &flag));
            CHECK(flag == 1);
        }
        c->gpu->ops.free(c->gpu, ggr);
        free(gr);
    }
    uint8_t *h1 = malloc(n), *h2 = malloc(n);
    CHECK_OK(c->gpu->ops.download(c->gpu, h1, gs1, n));
    CHECK_OK(c->gpu->ops.download(c->gpu, h2, gs2, n));
    r = g_read_f32(c, gpp, n);
    float *ra1 = g_read_f32(c, ga1, nb), *ra2 = g_read_f32(c, ga2, nb);
    int d1 = 0, d2 = 0;
    for (int64_t i = 0; i < n; i++) { d1 += h1[i] != s1[i]; d2 += h2[i] != s2[i]; }
    CHECK_MSG(d1 == 0 && d2 == 0, "adamw8bit states differ in %d / %d of %lld codes", d1, d2, (long long)n);
    CHECK_MSG(memcmp(ra1, a1, nb * 4) == 0 && memcmp(ra2, a2, nb * 4) == 0, "adamw8bit absmax differs");
    CHECK_MSG(memcmp(r, pp, (size_t)n * 4) == 0, "adamw8bit parameters differ (rel %.3g)", lt_rel_err(r, pp, n));
    printf("  [%s] sumsq, nonfinite, adamw, scale, adamw8bit: bit-identical to the CPU\n", c->tag);
    free(r); free(ra1); free(ra2); free(h1); free(h2);
    c->gpu->ops.free(c->gpu, gs1); c->gpu->ops.free(c->gpu, gs2);
    c->gpu->ops.free(c->gpu, ga1); c->gpu->ops.free(c->gpu, ga2); c->gpu->ops.free(c->gpu, gpp);
    void *cb[] = {cg, cp, cm, cv}, *gb[] = {gg, gp, gm, gv};
    for (int i = 0; i < 4; i++) { c->cpu->ops.free(c->cpu, cb[i]); c->gpu->ops.free(c->gpu, gb[i]); }
    free(p); free(g); free(m); free(v); free(s1); free(s2); free(a1); free(a2); free(pp);
}

/* adamw8bit_many and scale_many over 40 tensors (two launches of the 8-bit kernel) of uneven
 * sizes, empty ones among them: the bits of the CPU reference, tensor by tensor */
static void test_optim_many(ctx *c) {
    enum { K = 40 };
    int64_t n[K];
    float *pp[K], *hg[K], *a1[K], *a2[K];
    uint8_t *s1[K], *s2[K];
    void *gp[K], *gg[K], *gs1[K], *gs2[K], *ga1[K], *ga2[K];
    for (int k = 0; k < K; k++) {
        n[k] = k % 13 == 5 ? 0 : 37 + 301 * (int64_t)k + (k % 3) * 4096;
        const int64_t nb = (n[k] + 255) / 256 + 1;
        pp[k] = rnd(n[k] + 1, 1.0f);
        s1[k] = calloc((size_t)n[k] + 1, 1); s2[k] = calloc((size_t)n[k] + 1, 1);
        a1[k] = calloc((size_t)nb, 4); a2[k] = calloc((size_t)nb, 4);
        gp[k] = g_f32(c, pp[k], n[k] + 1);
        CHECK_OK(c->gpu->ops.alloc(c->gpu, (size_t)n[k] + 1, &gs1[k]));
        CHECK_OK(c->gpu->ops.alloc(c->gpu, (size_t)n[k] + 1, &gs2[k]));
        ga1[k] = g_f32(c, a1[k], nb); ga2[k] = g_f32(c, a2[k], nb);
    }
    for (int t = 1; t <= 3; t++) {
        for (int k = 0; k < K; k++) {
            hg[k] = rnd(n[k] + 1, 0.02f);
            if (t == 2 && n[k] > 100) hg[k][77] = NAN;
            gg[k] = g_f32(c, hg[k], n[k] + 1);
            lt_adamw8bit_ref(pp[k], hg[k], s1[k], s2[k], a1[k], a2[k], n[k], 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, t, 1);
        }
        CHECK_OK(c->gpu->ops.adamw8bit_many(c->gpu, K, (float *const *)gp, (const float *const *)gg,
                                            (uint8_t *const *)gs1, (uint8_t *const *)gs2, (float *const *)ga1,
                                            (float *const *)ga2, n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, t));
        for (int k = 0; k < K; k++) { c->gpu->ops.free(c->gpu, gg[k]); free(hg[k]); }
    }
    int bad = 0;
    for (int k = 0; k < K; k++) {
        if (n[k] == 0) continue;
        const int64_t nb = (n[k] + 255) / 256;
        float *r = g_read_f32(c, gp[k], n[k]), *r1 = g_read_f32(c, ga1[k], nb), *r2 = g_read_f32(c, ga2[k], nb);
        uint8_t *h1 = malloc((size_t)n[k]), *h2 = malloc((size_t)n[k]);
        CHECK_OK(c->gpu->ops.download(c->gpu, h1, gs1[k], (size_t)n[k]));
        CHECK_OK(c->gpu->ops.download(c->gpu, h2, gs2[k], (size_t)n[k]));
        bad += memcmp(r, pp[k], (size_t)n[k] * 4) != 0 || memcmp(h1, s1[k], (size_t)n[k]) != 0 ||
               memcmp(h2, s2[k], (size_t)n[k]) != 0 || memcmp(r1, a1[k], (size_t)nb * 4) != 0 ||
               memcmp(r2, a2[k], (size_t)nb * 4) != 0;
        free(r); free(r1); free(r2); free(h1); free(h2);
    }
    CHECK_MSG(bad == 0, "[%s] adamw8bit_many: %d of %d tensors differ from the CPU reference", c->tag, bad, K);
    /* scale_many: x *= s, as the CPU's scale */
    float *want[K];
    for (int k = 0; k < K; k++) {
        want[k] = malloc((size_t)(n[k] + 1) * 4);
        for (int64_t i = 0; i < n[k]; i++) want[k][i] = pp[k][i] * 0.37f;
    }
    CHECK_OK(c->gpu->ops.scale_many(c->gpu, K, (float *const *)gp, n, 0.37f));
    int sbad = 0;
    for (int k = 0; k < K; k++) {
        if (n[k] == 0) continue;
        float *r = g_read_f32(c, gp[k], n[k]);
        sbad += memcmp(r, want[k], (size_t)n[k] * 4) != 0;
        free(r);
    }
    CHECK_MSG(sbad == 0, "[%s] scale_many: %d of %d tensors differ", c->tag, sbad, K);
    /* nonfinite_many: clean, then one inf in the last tensor */
    int flag = -1;
    CHECK_OK(c->gpu->ops.nonfinite_many(c->gpu, K, (const float *const *)gp, n, &flag));
    CHECK_MSG(flag == 0, "[%s] nonfinite_many flags finite tensors", c->tag);
    const float inf = INFINITY;
    CHECK_OK(c->gpu->ops.upload(c->gpu, (float *)gp[K - 1] + 3, &inf, sizeof inf));
    CHECK_OK(c->gpu->ops.nonfinite_many(c->gpu, K, (const float *const *)gp, n, &flag));
    CHECK_MSG(flag == 1, "[%s] nonfinite_many misses an inf in tensor %d", c->tag, K - 1);
    printf("  [%s] adamw8bit_many, scale_many over %d tensors: bit-identical to the CPU; nonfinite_many\n", c->tag, K);
    for (int k = 0; k < K; k++) {
        void *gb[] = {gp[k], gs1[k], gs2[k], ga1[k], ga2[k]};
        for (int i = 0; i < 5; i++) c->gpu->ops.free(c->gpu, gb[i]);
        free(pp[k]); free(s1[k]); free(s2[k]); free(a1[k]); free(a2[k]); free(want[k]);
    }
}

/* The optimizer kernels write the 16-bit copies of the LoRA weights (gemm.cu's cache) with the
 * weights: after each AdamW op (fp32 and 8-bit, many and single) every copy - as stored and
 * transposed, odd shapes - holds the bits that remaking it from the new weights gives (the
 * refresh path those writes replace), and the step changed them (the check can fail). */
static void test_optim_w16(ctx *c) {
    enum { K = 5 };
    static const int64_t shape[K][2] = {{16, 1536}, {1536, 16}, {8, 40}, {3, 7}, {60, 16}};
    /* copies per tensor: bit 0 as stored, bit 1 transposed (tensor 4: none) */
    static const int want[K] = {3, 2, 1, 3, 0};
    int64_t n[K];
    void *gp[K], *gm[K], *gv[K], *gs1[K], *gs2[K], *ga1[K], *ga2[K];
    const void *cp[K][2];
    for (int k = 0; k < K; k++) {
        n[k] = shape[k][0] * shape[k][1];
        const int64_t nb = (n[k] + 255) / 256;
        float *h = rnd(n[k], 1.0f);
        gp[k] = g_f32(c, h, n[k]);
        free(h);
        gm[k] = g_f32(c, NULL, n[k]); gv[k] = g_f32(c, NULL, n[k]);
        ga1[k] = g_f32(c, NULL, nb); ga2[k] = g_f32(c, NULL, nb);
        CHECK_OK(c->gpu->ops.alloc(c->gpu, (size_t)n[k], &gs1[k]));
        CHECK_OK(c->gpu->ops.alloc(c->gpu, (size_t)n[k], &gs2[k]));
        for (int t = 0; t < 2; t++) {
            cp[k][t] = NULL;
            if (want[k] >> t & 1)
                CHECK_OK(lt_cuda_w16_test_copy(c->gpu, (const float *)gp[k], shape[k][0], shape[k][1], t, &cp[k][t]));
        }
    }
    static const char *const what[4] = {"adamw_many", "adamw8bit_many", "adamw", "adamw8bit"};
    int bad = 0, same = 0, total = 0;
    for (int step = 1; step <= 4; step++) {
        const int op = step - 1;
        void *gg[K];
        void *before[K][2];
        for (int k = 0; k < K; k++) {
            float *h = rnd(n[k], 0.5f);
            gg[k] = g_f32(c, h, n[k]);
            free(h);
            for (int t = 0; t < 2; t++) before[k][t] = cp[k][t] ? g_raw(c, cp[k][t], (size_t)n[k] * 2) : NULL;
        }
        const float lr = 0.05f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.01f;
        if (op == 0)
            CHECK_OK(c->gpu->ops.adamw_many(c->gpu, K, (float *const *)gp, (const float *const *)gg,
                                            (float *const *)gm, (float *const *)gv, n, lr, b1, b2, eps, wd, step));
        else if (op == 1)
            CHECK_OK(c->gpu->ops.adamw8bit_many(c->gpu, K, (float *const *)gp, (const float *const *)gg,
                                                (uint8_t *const *)gs1, (uint8_t *const *)gs2, (float *const *)ga1,
                                                (float *const *)ga2, n, lr, b1, b2, eps, wd, step));
        else
            for (int k = 0; k < K; k++) {
                if (op == 2)
                    CHECK_OK(c->gpu->ops.adamw(c->gpu, (float *)gp[k], (const float *)gg[k], (float *)gm[k],
                                               (float *)gv[k], n[k], lr, b1, b2, eps, wd, step));
                else
                    CHECK_OK(c->gpu->ops.adamw8bit(c->gpu, (float *)gp[k], (const float *)gg[k], (uint8_t *)gs1[k],
                                                   (uint8_t *)gs2[k], (float *)ga1[k], (float *)ga2[k], n[k], lr, b1,
                                                   b2, eps, wd, step));
            }
        void *got[K][2];
        for (int k = 0; k < K; k++)
            for (int t = 0; t < 2; t++) got[k][t] = cp[k][t] ? g_raw(c, cp[k][t], (size_t)n[k] * 2) : NULL;
        CHECK_OK(lt_cuda_w16_test_remake(c->gpu));
        for (int k = 0; k < K; k++)
            for (int t = 0; t < 2; t++) {
                if (!cp[k][t]) continue;
                const size_t bytes = (size_t)n[k] * 2;
                void *ref = g_raw(c, cp[k][t], bytes);
                if (memcmp(got[k][t], ref, bytes) != 0) {
                    bad++;
                    fprintf(stderr, "[%s] %s: tensor %d's %s 16-bit copy differs from one made from the weights\n",
                            c->tag, what[op], k, t ? "transposed" : "plain");
                }
                const uint16_t *a = before[k][t], *b = ref;
                for (int64_t i = 0; i < n[k]; i++) same += a[i] == b[i];
                total += (int)n[k];
                free(ref); free(got[k][t]); free(before[k][t]);
            }
        for (int k = 0; k < K; k++) c->gpu->ops.free(c->gpu, gg[k]);
    }
    CHECK_MSG(bad == 0, "[%s] optimizer-written 16-bit LoRA copies: %d differ from the refresh", c->tag, bad);
    CHECK_MSG(same < total / 2, "[%s] optimizer steps left %d of %d 16-bit copy values unchanged: the check is void",
              c->tag, same, total);
    printf("  [%s] adamw / adamw8bit (many and single) write the 16-bit LoRA copies: bit-identical to a refresh "
           "(%d of %d values changed)\n", c->tag, total - same, total);
    for (int k = 0; k < K; k++) {
        void *gb[] = {gp[k], gm[k], gv[k], gs1[k], gs2[k], ga1[k], ga2[k]};
        for (int i = 0; i < 7; i++) c->gpu->ops.free(c->gpu, gb[i]);
    }
}

static void test_memory(ctx *c) {
    uint64_t use0 = 0, peak0 = 0, use1 = 0, peak1 = 0;
    c->gpu->ops.memory(c->gpu, &use0, &peak0);
    void *p = NULL;
    CHECK_OK(c->gpu->ops.alloc(c->gpu, 64u << 20, &p));
    c->gpu->ops.memory(c->gpu, &use1, &peak1);
    CHECK(use1 >= use0 + (64u << 20));
    CHECK(peak1 >= use1);
    c->gpu->ops.free(c->gpu, p);
    c->gpu->ops.memory(c->gpu, &use1, NULL);
    CHECK(use1 == use0);
    void *huge = NULL;
    CHECK_FAIL(c->gpu->ops.alloc(c->gpu, (size_t)1 << 46, &huge), LT_ERR_OUT_OF_MEMORY, "lower the batch size");
    printf("  [%s] oom message: %s\n", c->tag, lt_last_error());
    /* the backend still works after the failed allocation */
    CHECK_OK(c->gpu->ops.alloc(c->gpu, 1024, &p));
    c->gpu->ops.free(c->gpu, p);
}

int main(int argc, char **argv) {
    int n = lt_cuda_device_count();
    if (n <= 0) LT_TEST_SKIP("no CUDA device visible (or a CPU-only build)");
    rng_state ^= argc > 1 ? strtoull(argv[1], NULL, 10) : (uint64_t)time(NULL);
    printf("seed state %llu\n", (unsigned long long)rng_state);
    lt_backend *cpu = NULL;
    CHECK_OK(lt_backend_cpu_create(0, &cpu));
    if (!cpu) return 1;
    char name[128];
    int32_t cc = 0;
    CHECK_OK(lt_cuda_device_info(0, name, sizeof name, &cc, NULL, NULL));
    printf("device: %s (cc %d)\n", name, cc);
    const int dts[2] = {LT_DTYPE_BF16, LT_DTYPE_F16};
    for (int di = 0; di < 2; di++) {
        if (dts[di] == LT_DTYPE_BF16 && cc < 80) continue;
        ctx c = {cpu, NULL, dts[di], dts[di] == LT_DTYPE_BF16 ? "bf16" : "fp16"};
        CHECK_OK(lt_backend_cuda_create(0, dts[di], &c.gpu));
        if (!c.gpu) continue;
        if (di == 0) {
            test_nf4(&c, 96, 256, 1, LT_DTYPE_BF16);
            test_nf4(&c, 96, 256, 0, LT_DTYPE_BF16);
            test_nf4(&c, 3, 70, 1, LT_DTYPE_F32);
            test_nf4(&c, 40, 72, 1, LT_DTYPE_BF16); /* 32-groups cross rows */
            test_nf4(&c, 1536, 8960 / 8, 1, LT_DTYPE_F16);
            test_optim(&c);
            test_optim_many(&c);
            test_memory(&c);
        }
        test_linear(&c, LT_QUANT_NF4);
        test_linear(&c, LT_QUANT_NONE);
        test_optim_w16(&c);
        for (int sk = 0; sk < 2; sk++) { /* dropout + cuBLAS, then the skinny kernels of lora.cu */
            lt_cuda_lora_set_skinny(sk);
            test_lora(&c, 0.1f, 16);
            test_lora(&c, 0.0f, 16);
            for (int wb = 0; wb < 2; wb++) {
                test_lora_swiglu(&c, 0.1f, 16, 77, wb);
                test_lora_swiglu(&c, 0.1f, 16, 256, wb);
                test_lora_swiglu(&c, 0.0f, 16, 128, wb);
                test_lora_swiglu(&c, 0.1f, 12, 77, wb);
            }
            test_lora(&c, 0.1f, 8);
        }
        lt_cuda_lora_set_skinny(1);
        test_lora(&c, 0.1f, 12); /* no skinny kernel for rank 12: the cuBLAS path */
        if (cc >= 80) test_lora_multi(&c); /* the mma kernels of lora.cu (sm_80+) */
        test_fused(&c, LT_QUANT_NF4, 0.1f, 16); /* the graph's fused ops, tensor-core path */
        test_fused(&c, LT_QUANT_NONE, 0.0f, 8);
        test_fused(&c, LT_QUANT_NF4, 0.1f, 12); /* rank 12: their unfused fallbacks */
        lt_cuda_lora_set_skinny(0);
        test_fused(&c, LT_QUANT_NF4, 0.1f, 16);
        test_layers(&c);
        test_attention(&c, 128, ATT_AUTO);
        test_attention(&c, 64, ATT_AUTO);
        test_attention(&c, 128, ATT_PORTABLE);
        test_attention(&c, 32, ATT_AUTO);
        test_attention(&c, 128, ATT_BWD_V6);
        test_attention(&c, 64, ATT_BWD_V6);
        test_attention(&c, 64, ATT_DET);
        test_attention(&c, 32, ATT_DET); /* the portable path: dK/dV without atomics */
        { /* Qwen2-1.5B heads (12 query, 2 kv), several full 128-row tiles and odd tails */
            const int lens[4] = {517, 3, 300, 129};
            test_attention_shape(&c, 128, ATT_AUTO, 12, 2, 4, lens);
            test_attention_shape(&c, 128, ATT_DET, 12, 2, 4, lens);
        }
        test_attention_kv(&c);
        test_lm_head(&c, 100, 64, 1000);
        if (di == 0) test_lm_head(&c, 300, 64, 151936); /* two chunks */
        lt_backend_free(c.gpu);
    }
    lt_backend_free(cpu);
    return lt_test_done("test_cuda_ops");
}
#endif /* LT_HAVE_CUDA */

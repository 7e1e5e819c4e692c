/* test_cpu_grad.c - finite-difference gradient checks of every differentiable op of the CPU
 * reference backend, on seeded random inputs: the objective is J = sum(w * out) with random w,
 * evaluated in double around the f32 ops, and the backward op's gradient (given dout = w) must
 * match the central differences. */
#include "cpu_ops_util.h"

static lt_backend *be;
#define FD_TOL 2e-3
#define FD_H 3e-3f

/* ---------------- rmsnorm ---------------- */
typedef struct { float *x, *w, *wout, *out, *rstd; int64_t N, C; } norm_t;
static double norm_J(void *v) {
    norm_t *c = v;
    be->ops.rmsnorm_fwd(be, c->out, c->rstd, c->x, c->w, c->N, c->C, 1e-6f);
    return t_wsum(c->wout, c->out, c->N * c->C);
}
static void test_rmsnorm(void) {
    norm_t c = {0};
    c.N = 5; c.C = 24;
    c.x = t_rand(c.N * c.C, -2, 2); c.w = t_rand(c.C, 0.5f, 1.5f); c.wout = t_rand(c.N * c.C, -1, 1);
    c.out = t_zeros(c.N * c.C); c.rstd = t_zeros(c.N);
    norm_J(&c);
    /* the backward accumulates: start from 1 and take it off again */
    float *dx = malloc(sizeof(float) * c.N * c.C);
    for (int64_t i = 0; i < c.N * c.C; i++) dx[i] = 1.0f;
    CHECK_OK(be->ops.rmsnorm_bwd(be, dx, c.wout, c.x, c.w, c.rstd, c.N, c.C));
    for (int64_t i = 0; i < c.N * c.C; i++) dx[i] -= 1.0f;
    CHECK(t_fd_check("rmsnorm dx", c.x, c.N * c.C, dx, norm_J, &c, 1000, FD_H) < FD_TOL);
    /* forward value against the formula in double (after the FD probes, run it again) */
    norm_J(&c);
    double maxe = 0;
    for (int64_t n = 0; n < c.N; n++) {
        double ss = 0;
        for (int64_t i = 0; i < c.C; i++) ss += (double)c.x[n * c.C + i] * c.x[n * c.C + i];
        double r = 1.0 / sqrt(ss / c.C + 1e-6);
        for (int64_t i = 0; i < c.C; i++) {
            double ref = c.w[i] * c.x[n * c.C + i] * r;
            maxe = fmax(maxe, fabs(ref - c.out[n * c.C + i]) / (fabs(ref) + 1e-3));
        }
    }
    CHECK_MSG(maxe < 1e-5, "rmsnorm forward rel err %g", maxe);
    free(c.x); free(c.w); free(c.wout); free(c.out); free(c.rstd); free(dx);
}

/* ---------------- linear ---------------- */
typedef struct { float *x, *wout, *out, *bias; lt_bweight *W; int64_t N, C, OC; } lin_t;
static double lin_J(void *v) {
    lin_t *c = v;
    be->ops.linear_fwd(be, c->out, c->x, c->W, c->bias, c->N);
    return t_wsum(c->wout, c->out, c->N * c->OC);
}
static void test_linear(void) {
    lin_t c = {0};
    c.N = 9; c.C = 37; c.OC = 70; /* odd sizes cross the 8/64/256 tiles and the 8-lane dot */
    c.x = t_rand(c.N * c.C, -1, 1); c.wout = t_rand(c.N * c.OC, -1, 1); c.out = t_zeros(c.N * c.OC);
    c.bias = t_rand(c.OC, -1, 1);
    float *Wh = t_rand(c.OC * c.C, -0.5f, 0.5f);
    c.W = t_weight(be, Wh, c.OC, c.C, LT_QUANT_NONE);
    lin_J(&c);
    double maxe = 0;
    for (int64_t n = 0; n < c.N; n++)
        for (int64_t o = 0; o < c.OC; o++) {
            double ref = c.bias[o];
            for (int64_t i = 0; i < c.C; i++) ref += (double)c.x[n * c.C + i] * Wh[o * c.C + i];
            maxe = fmax(maxe, fabs(ref - c.out[n * c.OC + o]));
        }
    CHECK_MSG(maxe < 1e-5, "linear forward abs err %g", maxe);
    float *dx = t_zeros(c.N * c.C);
    CHECK_OK(be->ops.linear_bwd_input(be, dx, c.wout, c.W, c.N, 0));
    CHECK(t_fd_check("linear dx", c.x, c.N * c.C, dx, lin_J, &c, 1000, FD_H) < FD_TOL);
    /* accumulate = 1 adds the same again */
    float *dx2 = malloc(sizeof(float) * c.N * c.C);
    memcpy(dx2, dx, sizeof(float) * c.N * c.C);
    CHECK_OK(be->ops.linear_bwd_input(be, dx2, c.wout, c.W, c.N, 1));
    int ok = 1;
    for (int64_t i = 0; i < c.N * c.C; i++) ok &= dx2[i] == dx[i] + dx[i];
    CHECK_MSG(ok, "linear_bwd_input accumulate=1 must add");
    be->ops.weight_free(be, c.W);
    free(c.x); free(c.wout); free(c.out); free(c.bias); free(Wh); free(dx); free(dx2);
}

/* ---------------- lora ---------------- */
typedef struct { float *x, *A, *B, *base, *wout, *out, *xa; int64_t N, C, OC, R; float scale, p; } lora_t;
static double lora_J(void *v) {
    lora_t *c = v;
    memcpy(c->out, c->base, sizeof(float) * c->N * c->OC);
    be->ops.lora_fwd(be, c->out, c->xa, c->x, c->A, c->B, c->N, c->C, c->OC, c->R, c->scale, c->p, 1234, 77);
    return t_wsum(c->wout, c->out, c->N * c->OC);
}
static void test_lora(float p) {
    lora_t c = {0};
    c.N = 11; c.C = 19; c.OC = 13; c.R = 4; c.scale = 2.0f; c.p = p;
    c.x = t_rand(c.N * c.C, -1, 1); c.A = t_rand(c.R * c.C, -0.5f, 0.5f); c.B = t_rand(c.OC * c.R, -0.5f, 0.5f);
    c.base = t_rand(c.N * c.OC, -1, 1); c.wout = t_rand(c.N * c.OC, -1, 1);
    c.out = t_zeros(c.N * c.OC); c.xa = t_zeros(c.N * c.R);
    lora_J(&c);
    /* forward against the formula, with the mask drawn here from lt_rng_keep */
    double maxe = 0;
    int dropped = 0;
    for (int64_t n = 0; n < c.N; n++)
        for (int64_t o = 0; o < c.OC; o++) {
            double acc = 0;
            for (int64_t r = 0; r < c.R; r++) {
                double xa = 0;
                for (int64_t i = 0; i < c.C; i++) {
                    int keep = lt_rng_keep(1234, 77, (uint64_t)(n * c.C + i), p);
                    if (o == 0 && r == 0) dropped += !keep;
                    xa += keep ? (double)c.x[n * c.C + i] * c.A[r * c.C + i] / (1.0 - p) : 0.0;
                }
                acc += xa * c.B[o * c.R + r];
            }
            double ref = c.base[n * c.OC + o] + c.scale * acc;
            maxe = fmax(maxe, fabs(ref - c.out[n * c.OC + o]));
        }
    CHECK_MSG(maxe < 1e-5, "lora forward (p=%g) abs err %g", (double)p, maxe);
    if (p > 0) CHECK_MSG(dropped > 0 && dropped < c.N * c.C, "dropout p=%g dropped %d of %lld", (double)p, dropped,
                         (long long)(c.N * c.C));
    float *dA = t_zeros(c.R * c.C), *dB = t_zeros(c.OC * c.R), *dx = t_zeros(c.N * c.C);
    CHECK_OK(be->ops.lora_bwd(be, dA, dB, dx, c.wout, c.x, c.xa, c.A, c.B, c.N, c.C, c.OC, c.R, c.scale, c.p, 1234,
                              77));
    char name[64];
    snprintf(name, sizeof name, "lora dA (p=%.1f)", (double)p);
    CHECK(t_fd_check(name, c.A, c.R * c.C, dA, lora_J, &c, 1000, FD_H) < FD_TOL);
    snprintf(name, sizeof name, "lora dB (p=%.1f)", (double)p);
    CHECK(t_fd_check(name, c.B, c.OC * c.R, dB, lora_J, &c, 1000, FD_H) < FD_TOL);
    snprintf(name, sizeof name, "lora dx (p=%.1f)", (double)p);
    CHECK(t_fd_check(name, c.x, c.N * c.C, dx, lora_J, &c, 1000, FD_H) < FD_TOL);
    free(c.x); free(c.A); free(c.B); free(c.base); free(c.wout); free(c.out); free(c.xa);
    free(dA); free(dB); free(dx);
}

/* ---------------- rope ---------------- */
typedef struct { float *x, *y, *wout; int32_t *pos; int64_t N, H, HD; } rope_t;
static double rope_J(void *v) {
    rope_t *c = v;
    memcpy(c->y, c->x, sizeof(float) * c->N * c->H * c->HD);
    be->ops.rope_fwd(be, c->y, c->pos, c->N, c->H, c->HD, 10000.0f);
    return t_wsum(c->wout, c->y, c->N * c->H * c->HD);
}
static void test_rope(void) {
    rope_t c = {0};
    int32_t pos[5] = {0, 3, 7, 100, 2};
    c.N = 5; c.H = 3; c.HD = 8; c.pos = pos;
    int64_t n = c.N * c.H * c.HD;
    c.x = t_rand(n, -1, 1); c.wout = t_rand(n, -1, 1); c.y = t_zeros(n);
    rope_J(&c);
    /* forward: the half-split rotation with transformers' inv_freq */
    double maxe = 0;
    for (int64_t t = 0; t < c.N; t++)
        for (int64_t h = 0; h < c.H; h++)
            for (int64_t i = 0; i < c.HD / 2; i++) {
                double f = pos[t] / pow(10000.0, 2.0 * i / c.HD);
                const float *x = c.x + (t * c.H + h) * c.HD;
                double r0 = x[i] * cos(f) - x[i + c.HD / 2] * sin(f);
                double r1 = x[i + c.HD / 2] * cos(f) + x[i] * sin(f);
                maxe = fmax(maxe, fabs(r0 - c.y[(t * c.H + h) * c.HD + i]));
                maxe = fmax(maxe, fabs(r1 - c.y[(t * c.H + h) * c.HD + i + c.HD / 2]));
            }
    CHECK_MSG(maxe < 2e-5, "rope forward abs err %g", maxe);
    float *dx = malloc(sizeof(float) * n);
    memcpy(dx, c.wout, sizeof(float) * n);
    CHECK_OK(be->ops.rope_bwd(be, dx, c.pos, c.N, c.H, c.HD, 10000.0f));
    CHECK(t_fd_check("rope dx", c.x, n, dx, rope_J, &c, 1000, FD_H) < FD_TOL);
    free(c.x); free(c.y); free(c.wout); free(dx);
}

/* ---------------- attention ---------------- */
typedef struct {
    float *q, *k, *v, *out, *lse, *wout; int32_t *cu; int32_t nseq, maxlen; int64_t N, NH, NKV, HD;
} att_t;
static double att_J(void *vv) {
    att_t *c = vv;
    be->ops.attention_fwd(be, c->out, c->lse, c->q, c->k, c->v, c->cu, c->nseq, c->maxlen, c->N, c->NH, c->NKV,
                          c->HD);
    return t_wsum(c->wout, c->out, c->N * c->NH * c->HD);
}
static void test_attention(void) {
    att_t c = {0};
    int32_t cu[4] = {0, 3, 4, 9}; /* three packed sequences of 3, 1 and 5 tokens */
    c.cu = cu; c.nseq = 3; c.maxlen = 5; c.N = 9; c.NH = 4; c.NKV = 2; c.HD = 8;
    int64_t nq = c.N * c.NH * c.HD, nk = c.N * c.NKV * c.HD;
    c.q = t_rand(nq, -1, 1); c.k = t_rand(nk, -1, 1); c.v = t_rand(nk, -1, 1);
    c.out = t_zeros(nq); c.lse = t_zeros(c.NH * c.N); c.wout = t_rand(nq, -1, 1);
    att_J(&c);
    /* forward against a direct double computation */
    double maxe = 0;
    for (int s = 0; s < 3; s++)
        for (int i = cu[s]; i < cu[s + 1]; i++)
            for (int h = 0; h < c.NH; h++) {
                int g = h / (c.NH / c.NKV);
                double sc[16], mx = -1e300, sum = 0;
                for (int j = cu[s]; j <= i; j++) {
                    double d = 0;
                    for (int e = 0; e < c.HD; e++) d += (double)c.q[(i * c.NH + h) * c.HD + e] * c.k[(j * c.NKV + g) * c.HD + e];
                    sc[j - cu[s]] = d / sqrt((double)c.HD);
                    mx = fmax(mx, sc[j - cu[s]]);
                }
                for (int j = cu[s]; j <= i; j++) sum += exp(sc[j - cu[s]] - mx);
                CHECK_NEAR(c.lse[h * c.N + i], mx + log(sum), 1e-5);
                for (int e = 0; e < c.HD; e++) {
                    double o = 0;
                    for (int j = cu[s]; j <= i; j++) o += exp(sc[j - cu[s]] - mx) / sum * c.v[(j * c.NKV + g) * c.HD + e];
                    maxe = fmax(maxe, fabs(o - c.out[(i * c.NH + h) * c.HD + e]));
                }
            }
    CHECK_MSG(maxe < 1e-5, "attention forward abs err %g", maxe);
    float *dq = t_zeros(nq), *dk = t_zeros(nk), *dv = t_zeros(nk);
    CHECK_OK(be->ops.attention_bwd(be, dq, dk, dv, c.wout, c.q, c.k, c.v, c.out, c.lse, c.cu, c.nseq, c.maxlen, c.N,
                                   c.NH, c.NKV, c.HD));
    CHECK(t_fd_check("attention dq", c.q, nq, dq, att_J, &c, 1000, FD_H) < FD_TOL);
    CHECK(t_fd_check("attention dk", c.k, nk, dk, att_J, &c, 1000, FD_H) < FD_TOL);
    CHECK(t_fd_check("attention dv", c.v, nk, dv, att_J, &c, 1000, FD_H) < FD_TOL);
    free(c.q); free(c.k); free(c.v); free(c.out); free(c.lse); free(c.wout); free(dq); free(dk); free(dv);
}

/* ---------------- swiglu, add ---------------- */
typedef struct { float *g, *u, *out, *wout; int64_t n; int op; } ew_t;
static double ew_J(void *v) {
    ew_t *c = v;
    if (c->op == 0) be->ops.swiglu_fwd(be, c->out, c->g, c->u, c->n);
    else be->ops.add(be, c->out, c->g, c->u, c->n);
    return t_wsum(c->wout, c->out, c->n);
}
static void test_swiglu_add(void) {
    ew_t c = {0};
    c.n = 40; c.g = t_rand(c.n, -4, 4); c.u = t_rand(c.n, -2, 2); c.out = t_zeros(c.n); c.wout = t_rand(c.n, -1, 1);
    ew_J(&c);
    double maxe = 0;
    for (int64_t i = 0; i < c.n; i++)
        maxe = fmax(maxe, fabs(c.g[i] / (1.0 + exp(-(double)c.g[i])) * c.u[i] - c.out[i]));
    CHECK_MSG(maxe < 1e-5, "swiglu forward abs err %g", maxe);
    float *dg = t_zeros(c.n), *du = t_zeros(c.n);
    CHECK_OK(be->ops.swiglu_bwd(be, dg, du, c.wout, c.g, c.u, c.n));
    CHECK(t_fd_check("swiglu dgate", c.g, c.n, dg, ew_J, &c, 1000, FD_H) < FD_TOL);
    CHECK(t_fd_check("swiglu dup", c.u, c.n, du, ew_J, &c, 1000, FD_H) < FD_TOL);
    /* in place (dgate over gate, dup over up) gives the same */
    float *g2 = malloc(sizeof(float) * c.n), *u2 = malloc(sizeof(float) * c.n);
    memcpy(g2, c.g, sizeof(float) * c.n); memcpy(u2, c.u, sizeof(float) * c.n);
    CHECK_OK(be->ops.swiglu_bwd(be, g2, u2, c.wout, g2, u2, c.n));
    CHECK(memcmp(g2, dg, sizeof(float) * c.n) == 0 && memcmp(u2, du, sizeof(float) * c.n) == 0);
    /* add: d/da = d/db = w */
    c.op = 1;
    CHECK(t_fd_check("add da", c.g, c.n, c.wout, ew_J, &c, 1000, FD_H) < FD_TOL);
    CHECK(t_fd_check("add db", c.u, c.n, c.wout, ew_J, &c, 1000, FD_H) < FD_TOL);
    free(c.g); free(c.u); free(c.out); free(c.wout); free(dg); free(du); free(g2); free(u2);
}

/* ---------------- lm_head_ce ---------------- */
typedef struct { float *h; lt_bweight *head; int32_t *tg; int64_t N, C, V; float gs; } ce_t;
static double ce_J(void *v) {
    ce_t *c = v;
    float loss = 0;
    be->ops.lm_head_ce(be, &loss, NULL, c->h, c->head, c->tg, c->N, c->C, c->V, c->gs);
    return (double)loss * c->gs;
}
static void test_lm_head_ce(void) {
    const int64_t N = 45, C = 12, V = 50; /* 45 tokens: two chunks of 32 */
    float *h = t_rand(N * C, -1, 1), *Wh = t_rand(V * C, -0.7f, 0.7f);
    lt_bweight *head = t_weight(be, Wh, V, C, LT_QUANT_NONE);
    int32_t tg[45];
    for (int i = 0; i < N; i++) tg[i] = (i % 7 == 3) ? -100 : (int32_t)(t_next() % V);
    const float gs = 1.0f / 39.0f;
    float loss = 0.5f; /* += */
    float *dh = t_rand(N * C, -1, 1); /* overwritten */
    CHECK_OK(be->ops.lm_head_ce(be, &loss, dh, h, head, tg, N, C, V, gs));
    /* against full logits in double */
    double ref_loss = 0, maxe = 0;
    double *dref = calloc((size_t)(N * C), sizeof(double));
    for (int64_t n = 0; n < N; n++) {
        if (tg[n] < 0) continue;
        double lg[50], mx = -1e300, s = 0;
        for (int64_t v = 0; v < V; v++) {
            lg[v] = 0;
            for (int64_t i = 0; i < C; i++) lg[v] += (double)h[n * C + i] * Wh[v * C + i];
            mx = fmax(mx, lg[v]);
        }
        for (int64_t v = 0; v < V; v++) s += exp(lg[v] - mx);
        double lse = mx + log(s);
        ref_loss += lse - lg[tg[n]];
        for (int64_t v = 0; v < V; v++) {
            double d = (exp(lg[v] - lse) - (v == tg[n])) * gs;
            for (int64_t i = 0; i < C; i++) dref[n * C + i] += d * Wh[v * C + i];
        }
    }
    for (int64_t i = 0; i < N * C; i++) maxe = fmax(maxe, fabs(dref[i] - dh[i]));
    printf("  lm_head_ce loss %.6f (reference %.6f), dh max abs err %.2e\n", loss - 0.5, ref_loss, maxe);
    CHECK_MSG(fabs((loss - 0.5) - ref_loss) < 1e-5 * ref_loss, "loss %.7f vs %.7f", loss - 0.5, ref_loss);
    CHECK_MSG(maxe < 1e-6, "dh max abs err %g", maxe);
    for (int64_t i = 0; i < C; i++) CHECK(dh[3 * C + i] == 0.0f); /* ignored token -> zero row */
    /* finite differences, one token at a time (the loss of one token keeps f32 noise small) */
    ce_t c = {0};
    c.head = head; c.C = C; c.V = V; c.N = 1; c.gs = gs;
    double worst = 0;
    for (int n = 0; n < N; n += 5) {
        if (tg[n] < 0) continue;
        c.h = h + n * C; c.tg = tg + n;
        double r = t_fd_check("lm_head_ce dh (one token)", c.h, C, dh + n * C, ce_J, &c, 1000, 2e-2f);
        worst = fmax(worst, r);
    }
    CHECK_MSG(worst < FD_TOL, "lm_head_ce fd rel err %g", worst);
    /* a target outside the vocabulary is an error that names the token */
    tg[5] = (int32_t)V;
    CHECK_FAIL(be->ops.lm_head_ce(be, &loss, dh, h, head, tg, N, C, V, gs), LT_ERR_INVALID_ARGUMENT, "token 5");
    be->ops.weight_free(be, head);
    free(h); free(Wh); free(dh); free(dref);
}

int main(void) {
    t_seed(42);
    CHECK_OK(lt_backend_cpu_create(2, &be));
    CHECK(be->act_dtype == LT_DTYPE_F32 && be->act_bytes == 4);
    test_rmsnorm();
    test_linear();
    test_lora(0.0f);
    test_lora(0.3f);
    test_rope();
    test_attention();
    test_swiglu_add();
    test_lm_head_ce();
    uint64_t in_use = 1, peak = 0;
    be->ops.memory(be, &in_use, &peak);
    CHECK_MSG(in_use == 0, "weights freed: %llu bytes still in use", (unsigned long long)in_use);
    lt_backend_free(be);
    return lt_test_done("test_cpu_grad");
}

/* test_cpu_misc.c - the CPU backend's remaining contracts: KV-cache attention equals the packed
 * forward on the last rows (bit for bit), results independent of the thread count, memory ops
 * with in-use / peak accounting, embedding lookups and the LM-head logits. */
#include "cpu_ops_util.h"

static void test_attention_kv(lt_backend *be) {
    const int64_t L = 7, NH = 6, NKV = 2, HD = 16, maxlen = 10;
    float *q = t_rand(L * NH * HD, -1, 1), *k = t_rand(L * NKV * HD, -1, 1), *v = t_rand(L * NKV * HD, -1, 1);
    float *out = t_zeros(L * NH * HD), *lse = t_zeros(NH * L);
    float *kc = t_zeros(maxlen * NKV * HD), *vc = t_zeros(maxlen * NKV * HD), *o2 = t_zeros(L * NH * HD);
    memcpy(kc, k, sizeof(float) * L * NKV * HD);
    memcpy(vc, v, sizeof(float) * L * NKV * HD);
    int32_t cu[2] = {0, (int32_t)L};
    CHECK_OK(be->ops.attention_fwd(be, out, lse, q, k, v, cu, 1, (int32_t)L, L, NH, NKV, HD));
    for (int64_t past = 0; past < L; past += 2) {
        int64_t n = L - past;
        CHECK_OK(be->ops.attention_kv(be, o2, q + past * NH * HD, kc, vc, past, n, NH, NKV, HD));
        CHECK_MSG(memcmp(o2, out + past * NH * HD, sizeof(float) * n * NH * HD) == 0,
                  "attention_kv (past %lld) differs from attention_fwd", (long long)past);
    }
    /* bad cu_seqlens are refused with a message */
    int32_t bad[3] = {0, 5, 4};
    CHECK_FAIL(be->ops.attention_fwd(be, out, lse, q, k, v, bad, 2, 7, 4, NH, NKV, HD), LT_ERR_INVALID_ARGUMENT,
               "cu_seqlens");
    CHECK_FAIL(be->ops.attention_fwd(be, out, lse, q, k, v, cu, 1, 7, L, 5, NKV, HD), LT_ERR_INVALID_ARGUMENT,
               "kv heads");
    free(q); free(k); free(v); free(out); free(lse); free(kc); free(vc); free(o2);
}

/* Runs a sequence of ops on a backend; returns all outputs concatenated. */
typedef struct { int64_t N, C, OC, R, NH, NKV, HD, V; float *x, *W, *A, *B, *dout, *q, *k, *v, *dq, *H; int32_t *tg; } det_in;

static float *run_all(lt_backend *be, const det_in *in, int64_t *len) {
    const int64_t N = in->N, C = in->C, OC = in->OC, R = in->R, NQ = N * in->NH * in->HD, NK = N * in->NKV * in->HD;
    int64_t total = N * OC + N * C + N * R + R * C + OC * R + N * C + NQ + N * in->NH + NQ + 2 * NK + N * C + 1 + N * C + N;
    float *o = t_zeros(total), *p = o;
    lt_bweight *W = t_weight(be, in->W, OC, C, LT_QUANT_NONE), *H = t_weight(be, in->H, in->V, C, LT_QUANT_NONE);
    be->ops.linear_fwd(be, p, in->x, W, NULL, N);
    float *lin = p; p += N * OC;
    be->ops.linear_bwd_input(be, p, in->dout, W, N, 0); p += N * C;
    float *xa = p;
    be->ops.lora_fwd(be, lin, xa, in->x, in->A, in->B, N, C, OC, R, 2.0f, 0.1f, 5, 9); p += N * R;
    float *dA = p; p += R * C;
    float *dB = p; p += OC * R;
    be->ops.lora_bwd(be, dA, dB, p, in->dout, in->x, xa, in->A, in->B, N, C, OC, R, 2.0f, 0.1f, 5, 9); p += N * C;
    int32_t cu[4] = {0, (int32_t)(N / 3), (int32_t)(N / 2), (int32_t)N};
    float *ao = p; p += NQ;
    float *lse = p; p += N * in->NH;
    be->ops.attention_fwd(be, ao, lse, in->q, in->k, in->v, cu, 3, (int32_t)N, N, in->NH, in->NKV, in->HD);
    be->ops.attention_bwd(be, p, p + NQ, p + NQ + NK, in->dq, in->q, in->k, in->v, ao, lse, cu, 3, (int32_t)N, N,
                          in->NH, in->NKV, in->HD);
    p += NQ + 2 * NK;
    be->ops.lm_head_ce(be, p + N * C, p, in->x, H, in->tg, N, C, in->V, 0.01f);
    p += N * C + 1;
    float *w = t_rand(C, 0.5f, 1.5f);
    be->ops.rmsnorm_fwd(be, p, p + N * C, in->x, w, N, C, 1e-6f);
    p += N * C + N;
    *len = p - o;
    be->ops.weight_free(be, W);
    be->ops.weight_free(be, H);
    free(w);
    return o;
}

static void test_determinism(void) {
    det_in in;
    in.N = 96; in.C = 128; in.OC = 160; in.R = 8; in.NH = 4; in.NKV = 2; in.HD = 32; in.V = 700;
    in.x = t_rand(in.N * in.C, -1, 1); in.W = t_rand(in.OC * in.C, -0.2f, 0.2f);
    in.A = t_rand(in.R * in.C, -0.2f, 0.2f); in.B = t_rand(in.OC * in.R, -0.2f, 0.2f);
    in.dout = t_rand(in.N * in.OC, -1, 1);
    in.q = t_rand(in.N * in.NH * in.HD, -1, 1); in.dq = t_rand(in.N * in.NH * in.HD, -1, 1);
    in.k = t_rand(in.N * in.NKV * in.HD, -1, 1); in.v = t_rand(in.N * in.NKV * in.HD, -1, 1);
    in.H = t_rand(in.V * in.C, -0.2f, 0.2f);
    in.tg = malloc(in.N * sizeof(int32_t));
    for (int64_t i = 0; i < in.N; i++) in.tg[i] = i % 9 == 0 ? -100 : (int32_t)(t_next() % in.V);
    lt_backend *b1, *b3;
    CHECK_OK(lt_backend_cpu_create(1, &b1));
    CHECK_OK(lt_backend_cpu_create(3, &b3));
    int64_t n1, n3;
    t_seed(99); float *o1 = run_all(b1, &in, &n1);
    t_seed(99); float *o3 = run_all(b3, &in, &n3);
    CHECK(n1 == n3);
    int64_t diff = 0;
    for (int64_t i = 0; i < n1; i++) diff += memcmp(&o1[i], &o3[i], 4) != 0;
    CHECK_MSG(diff == 0, "%lld of %lld outputs differ between 1 and 3 threads", (long long)diff, (long long)n1);
    printf("  determinism: %lld outputs identical with 1 and 3 threads\n", (long long)n1);
    lt_backend_free(b1);
    lt_backend_free(b3);
    free(o1); free(o3); free(in.x); free(in.W); free(in.A); free(in.B); free(in.dout); free(in.q); free(in.dq);
    free(in.k); free(in.v); free(in.H); free(in.tg);
}

static void test_memory_and_lookup(lt_backend *be) {
    uint64_t u0, p0, u1, p1;
    be->ops.memory(be, &u0, &p0);
    unsigned char *buf;
    CHECK_OK(be->ops.alloc(be, 1000, (void **)&buf));
    int zero = 1;
    for (int i = 0; i < 1000; i++) zero &= buf[i] == 0;
    CHECK_MSG(zero, "alloc must zero-fill");
    be->ops.memory(be, &u1, &p1);
    CHECK(u1 == u0 + 1000 && p1 >= u1);
    float src[250], dst[250];
    t_fill(src, 250, -1, 1);
    CHECK_OK(be->ops.upload(be, buf, src, sizeof src));
    CHECK_OK(be->ops.download(be, dst, buf, sizeof dst));
    CHECK(memcmp(src, dst, sizeof src) == 0);
    CHECK_OK(be->ops.memset0(be, buf, 1000));
    CHECK(buf[0] == 0 && buf[999] == 0);
    be->ops.free(be, buf);
    be->ops.free(be, NULL);
    be->ops.memory(be, &u1, &p1);
    CHECK(u1 == u0 && p1 >= u0 + 1000);
    /* embedding and logits */
    const int64_t V = 30, C = 10;
    float *tab = t_rand(V * C, -1, 1), *out = t_zeros(4 * C), *lg = t_zeros(4 * V), *lg2 = t_zeros(4 * V);
    lt_bweight *T = t_weight(be, tab, V, C, LT_QUANT_NONE);
    int32_t ids[4] = {3, 0, 29, 3};
    CHECK_OK(be->ops.embedding(be, out, ids, T, 4, C));
    for (int i = 0; i < 4; i++) CHECK(memcmp(out + i * C, tab + ids[i] * C, C * 4) == 0);
    ids[2] = 30;
    CHECK_FAIL(be->ops.embedding(be, out, ids, T, 4, C), LT_ERR_INVALID_ARGUMENT, "token 2 has id 30");
    CHECK_OK(be->ops.lm_head_logits(be, lg, out, T, 4, C, V));
    CHECK_OK(be->ops.linear_fwd(be, lg2, out, T, NULL, 4));
    CHECK(memcmp(lg, lg2, sizeof(float) * 4 * V) == 0);
    double e = 0;
    for (int n = 0; n < 4; n++)
        for (int v = 0; v < V; v++) {
            double r = 0;
            for (int c = 0; c < C; c++) r += (double)out[n * C + c] * tab[v * C + c];
            e = fmax(e, fabs(r - lg[n * V + v]));
        }
    CHECK_MSG(e < 1e-5, "lm_head_logits abs err %g", e);
    /* f32 activations: to_act / from_act are copies */
    float a[5] = {1, -2, 3.5f, 0, 1e-30f}, b[5];
    CHECK_OK(be->ops.to_act(be, b, a, 5));
    CHECK(memcmp(a, b, sizeof a) == 0);
    be->ops.weight_free(be, T);
    free(tab); free(out); free(lg); free(lg2);
}

int main(void) {
    t_seed(3);
    lt_backend *be;
    CHECK_OK(lt_backend_cpu_create(2, &be));
    CHECK(strcmp(be->ops.name, "cpu") == 0 && be->device == LT_DEVICE_CPU);
    /* every op of the table is filled, except the graph ops (the CPU has no graphs: NULL) */
    void (**slot)(void) = (void (**)(void))&be->ops.destroy;
    int filled = 1;
    for (size_t i = 0; i < (offsetof(lt_backend_ops, graph_begin) - offsetof(lt_backend_ops, destroy)) / sizeof(void *); i++)
        filled &= slot[i] != NULL;
    CHECK_MSG(filled, "every op of lt_backend_ops must be set");
    CHECK(!be->ops.graph_begin && !be->ops.graph_launch);
    test_attention_kv(be);
    test_memory_and_lookup(be);
    test_determinism();
    lt_backend_free(be);
    lt_backend_free(NULL);
    return lt_test_done("test_cpu_misc");
}

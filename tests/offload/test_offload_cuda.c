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
 * over the tokens split differently. Exits 77 where no GPU is visible. */
#include "lt_test.h"
#include "model/graph.h"
#include "model/model.h"
#include "data/dataset.h"
#include "core/rng.h"
#include "../../cuda/cuda_test.h"
#include "lt_test_lora.h"

#define NPASS 8

typedef lt_test_grads grads;

/* max |a - b| over max |b| */
static double rel_max(const float *a, const float *b, size_t n) {
    double d = 0, big = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs((double)a[i] - b[i]) > d) d = fabs((double)a[i] - b[i]);
        if (fabs((double)b[i]) > big) big = fabs((double)b[i]);
    }
    return big > 0 ? d / big : d;
}

/* The row offset of a dropout stream (rng.h), op by op: the LoRA branch of rows [R0, R0 + n) of
 * an input, with the stream's row offset, against the CPU's over all rows (those rows taken):
 * xa = drop(x) @ A^T (lora_fwd, the forward's mask) and the input gradient drop(scale dout @ B @ A)
 * (lora_bwd, the backward's), for the tensor-core kernels (rank 16) and the cuBLAS path with
 * k_dropout (rank 4); a mask drawn for the wrong rows misses by far more than bf16 rounding. The
 * tensor-core xa of the rows must also be the whole's rows bit for bit. */
static void check_row_offsets(void) {
    enum { N = 320, C = 256, OC = 128, R0 = 128, NR = 128 };
    lt_backend *cpu = NULL, *gpu = NULL;
    CHECK_OK(lt_backend_cpu_create(1, &cpu));
    CHECK_OK(lt_backend_cuda_create(0, LT_DTYPE_BF16, &gpu));
    if (!cpu || !gpu) { lt_backend_free(cpu); lt_backend_free(gpu); return; }
    const uint64_t seed = 42, stream = lt_graph_stream(3, 2, LT_PROJ_UP);
    const float p = 0.1f, scale = 2.0f;
    static float x[N * C], A[16 * C], B[OC * 16], dout[N * OC], xr[N * C], dor[N * OC];
    for (int i = 0; i < N * C; i++) x[i] = 2.0f * lt_rng_uniform(1, 1, (uint64_t)i) - 1.0f;
    for (int i = 0; i < 16 * C; i++) A[i] = 0.1f * (2.0f * lt_rng_uniform(1, 2, (uint64_t)i) - 1.0f);
    for (int i = 0; i < OC * 16; i++) B[i] = 0.1f * (2.0f * lt_rng_uniform(1, 3, (uint64_t)i) - 1.0f);
    for (int i = 0; i < N * OC; i++) dout[i] = 2.0f * lt_rng_uniform(1, 4, (uint64_t)i) - 1.0f;
    void *gx = NULL, *gdo = NULL, *gxa = NULL, *gxa_all = NULL, *gdi = NULL;
    float *gA = NULL, *gB = NULL, *gdA = NULL, *gdB = NULL;
    CHECK_OK(gpu->ops.alloc(gpu, (size_t)N * C * 2, &gx));
    CHECK_OK(gpu->ops.alloc(gpu, (size_t)N * OC * 2, &gdo));
    CHECK_OK(gpu->ops.alloc(gpu, (size_t)N * 16 * 2, &gxa));
    CHECK_OK(gpu->ops.alloc(gpu, (size_t)N * 16 * 2, &gxa_all));
    CHECK_OK(gpu->ops.alloc(gpu, (size_t)N * C * 2, &gdi));
    CHECK_OK(gpu->ops.alloc(gpu, sizeof A, (void **)&gA));
    CHECK_OK(gpu->ops.alloc(gpu, sizeof B, (void **)&gB));
    CHECK_OK(gpu->ops.alloc(gpu, sizeof A, (void **)&gdA));
    CHECK_OK(gpu->ops.alloc(gpu, sizeof B, (void **)&gdB));
    if (!gx || !gdo || !gxa || !gxa_all || !gdi || !gA || !gB || !gdA || !gdB) return;
    CHECK_OK(gpu->ops.to_act(gpu, gx, x, N * C));
    CHECK_OK(gpu->ops.to_act(gpu, gdo, dout, N * OC));
    CHECK_OK(gpu->ops.from_act(gpu, xr, gx, N * C)); /* the CPU takes the rounded inputs */
    CHECK_OK(gpu->ops.from_act(gpu, dor, gdo, N * OC));
    const size_t xoff = (size_t)R0 * C * 2, ooff = (size_t)R0 * OC * 2;
    for (int R = 16; R >= 4; R -= 12) {
        float cxa[N * 16], cdi[N * C], cdA[16 * C], cdB[OC * 16], gxa_h[NR * 16], gdi_h[NR * C];
        memset(cdi, 0, sizeof cdi);
        memset(cdA, 0, sizeof cdA);
        memset(cdB, 0, sizeof cdB);
        CHECK_OK(cpu->ops.lora_fwd(cpu, NULL, cxa, xr, A, B, N, C, OC, R, scale, p, seed, stream));
        CHECK_OK(cpu->ops.lora_bwd(cpu, cdA, cdB, cdi, dor, xr, cxa, A, B, N, C, OC, R, scale, p, seed, stream));
        const uint64_t srow = lt_drop_stream_rows(stream, R0);
        CHECK_OK(gpu->ops.upload(gpu, gA, A, sizeof A));
        CHECK_OK(gpu->ops.upload(gpu, gB, B, sizeof B));
        CHECK_OK(gpu->ops.memset0(gpu, gdi, (size_t)N * C * 2));
        CHECK_OK(gpu->ops.lora_fwd(gpu, NULL, gxa, (char *)gx + xoff, gA, gB, NR, C, OC, R, scale, p, seed, srow));
        CHECK_OK(gpu->ops.lora_bwd(gpu, gdA, gdB, gdi, (char *)gdo + ooff, (char *)gx + xoff, gxa, gA, gB, NR, C, OC, R,
                                   scale, p, seed, srow));
        CHECK_OK(gpu->ops.from_act(gpu, gxa_h, gxa, NR * R));
        CHECK_OK(gpu->ops.from_act(gpu, gdi_h, gdi, NR * C));
        const double exa = rel_max(gxa_h, cxa + (size_t)R0 * R, (size_t)NR * R);
        const double edi = rel_max(gdi_h, cdi + (size_t)R0 * C, (size_t)NR * C);
        printf("dropout row offset, rank %d: rows %d..%d of %d on CUDA vs the CPU's whole: xa within %.3g, dinp within "
               "%.3g\n", R, R0, R0 + NR, N, exa, edi);
        CHECK_MSG(exa <= 1.5e-2 && edi <= 1.5e-2, "rank %d: the row offset's masks miss the CPU's (%.3g, %.3g)", R,
                  exa, edi);
        if (R == 16) { /* rows of the tensor-core xa are computed alone */
            unsigned char a[NR * 16 * 2], b[NR * 16 * 2];
            CHECK_OK(gpu->ops.lora_fwd(gpu, NULL, gxa_all, gx, gA, gB, N, C, OC, R, scale, p, seed, stream));
            CHECK_OK(gpu->ops.download(gpu, a, (char *)gxa_all + (size_t)R0 * R * 2, sizeof a));
            CHECK_OK(gpu->ops.download(gpu, b, gxa, sizeof b));
            CHECK_MSG(!memcmp(a, b, sizeof a), "rank 16: xa of rows %d.. with the row offset is not the whole's", R0);
        }
    }
    void *bufs[] = {gx, gdo, gxa, gxa_all, gdi, gA, gB, gdA, gdB};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gpu->ops.free(gpu, bufs[i]);
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
    for (int v = 0; v < 2; v++) {
        int32_t r0[40], r1[56];
        for (int i = 0; i < 40; i++) r0[i] = 3 + (i * (37 + 2 * v) + 11 + v) % 500;
        for (int i = 0; i < 56; i++) r1[i] = 3 + (i * (91 - 4 * v) + 5) % 500;
        const int32_t *ids[2] = {r0, r1};
        const size_t lens[2] = {40, 56};
        memset(&b3[v], 0, sizeof b3[v]);
        CHECK_OK(lt_batch_pack(&b3[v], 2, ids, ids, lens));
    }
    {
        int32_t r[3][100];
        for (int q = 0; q < 3; q++)
            for (int i = 0; i < 100; i++) r[q][i] = 3 + (i * (13 + 6 * q) + 7 * q) % 500;
        const int32_t *ids[3] = {r[0], r[1], r[2]};
        const size_t lens[3] = {100, 100, 100};
        memset(&b3[2], 0, sizeof b3[2]);
        CHECK_OK(lt_batch_pack(&b3[2], 3, ids, ids, lens));
    }
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

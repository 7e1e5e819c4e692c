/* test_offload_cuda.c - checkpoint offload on the CUDA backend: the 5-layer random Qwen2 of
 * test_offload (argv[1]) with a fresh r=16 adapter (seeded non-zero B), LoRA dropout and
 * deterministic kernels runs NPASS forward+backward passes (two batches of one shape, a larger
 * one that makes the buffers grow, the first shape again) with the checkpoints on the device and
 * offloaded to pinned host memory (copy stream, events), with CUDA graphs on: every pass's loss
 * and the accumulated LoRA gradients must be equal bit for bit, and the passes of a repeated
 * shape must replay as graphs in both runs (the copies recorded inside). A run with graphs off
 * gives the same bits too. Exits 77 where no GPU is visible. */
#include "lt_test.h"
#include "model/graph.h"
#include "model/model.h"
#include "data/dataset.h"
#include "core/rng.h"
#include "../../cuda/cuda_test.h"
#include "lt_test_lora.h"

#define NPASS 8

typedef lt_test_grads grads;
static const uint64_t b_seed = 7; /* the seeded B of a fresh adapter (lt_test_seed_b) */

static int passes(const char *dir, int offload, int graphs, const lt_batch *b3, double *loss, grads *g,
                  long *launches) {
    return lt_test_cuda_passes(dir, NPASS, b_seed, graphs, offload, b3, loss, g, launches);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: test_offload_cuda MODEL_DIR\n"); return 2; }
    if (lt_cuda_device_count() <= 0) LT_TEST_SKIP("no CUDA device visible (or a CPU-only build)");
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
    free(g0.v);
    free(g1.v);
    free(g2.v);
    for (int v = 0; v < 3; v++) lt_batch_free(&b3[v]);
    return lt_test_done("test_offload_cuda");
}

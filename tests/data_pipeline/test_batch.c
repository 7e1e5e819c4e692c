/* test_batch.c - padding-free packing (positions, cu_seqlens, targets shifted inside each
 * record) and the seeded per-epoch permutation. */
#include "lt_test.h"
#include "data/dataset.h"
#include <stdlib.h>

int main(void) {
    /* three records; record 1 has a masked prompt */
    int32_t a[] = {10, 11, 12}, la[] = {10, 11, 12};
    int32_t b[] = {20, 21, 22, 23}, lb[] = {-100, -100, 22, 23};
    int32_t c[] = {30}, lc[] = {30};
    const int32_t *ids[] = {a, b, c}, *labels[] = {la, lb, lc};
    size_t lens[] = {3, 4, 1};
    lt_batch bt = {0};
    CHECK_OK(lt_batch_pack(&bt, 3, ids, labels, lens));
    int32_t want_ids[] = {10, 11, 12, 20, 21, 22, 23, 30};
    int32_t want_tg[] = {11, 12, -100, -100, 22, 23, -100, -100};
    int32_t want_pos[] = {0, 1, 2, 0, 1, 2, 3, 0};
    int32_t want_cu[] = {0, 3, 7, 8};
    CHECK(bt.n_tokens == 8 && bt.nseq == 3 && bt.max_seqlen == 4 && bt.n_targets == 4);
    for (int i = 0; i < 8; i++) {
        CHECK_MSG(bt.ids[i] == want_ids[i], "ids[%d]", i);
        CHECK_MSG(bt.targets[i] == want_tg[i], "targets[%d] = %d want %d", i, bt.targets[i], want_tg[i]);
        CHECK_MSG(bt.pos[i] == want_pos[i], "pos[%d]", i);
    }
    for (int i = 0; i < 4; i++) CHECK(bt.cu_seqlens[i] == want_cu[i]);
    /* reuse with a larger batch: buffers grow */
    int32_t big[1000], lbig[1000];
    for (int i = 0; i < 1000; i++) big[i] = lbig[i] = i;
    const int32_t *ids2[] = {big, a}, *labels2[] = {lbig, la};
    size_t lens2[] = {1000, 3};
    CHECK_OK(lt_batch_pack(&bt, 2, ids2, labels2, lens2));
    CHECK(bt.n_tokens == 1003 && bt.cap >= 1003 && bt.targets[998] == 999 && bt.targets[999] == -100 &&
          bt.pos[1000] == 0 && bt.cu_seqlens[2] == 1003 && bt.n_targets == 999 + 2);
    size_t zero[] = {0};
    CHECK_FAIL(lt_batch_pack(&bt, 1, ids, labels, zero), LT_ERR_INVALID_ARGUMENT, "empty");
    CHECK_FAIL(lt_batch_pack(&bt, 0, ids, labels, lens), LT_ERR_INVALID_ARGUMENT, "nrec");
    lt_batch_free(&bt);
    lt_batch_free(&bt); /* idempotent */
    lt_batch_free(NULL);

    /* permutation: a permutation, repeatable, different per epoch and seed, near uniform */
    enum { N = 1000 };
    size_t *p = malloc(N * sizeof *p), *q = malloc(N * sizeof *q), *r = malloc(N * sizeof *r);
    lt_dataset_permutation(N, 3407, 0, p);
    lt_dataset_permutation(N, 3407, 0, q);
    int seen[N] = {0}, same = 1;
    for (int i = 0; i < N; i++) { CHECK(p[i] < N); seen[p[i]]++; same &= p[i] == q[i]; }
    for (int i = 0; i < N; i++) CHECK(seen[i] == 1);
    CHECK(same);
    lt_dataset_permutation(N, 3407, 1, q);
    lt_dataset_permutation(N, 3408, 0, r);
    int fixed_q = 0, fixed_r = 0, identity = 0;
    for (int i = 0; i < N; i++) { fixed_q += p[i] == q[i]; fixed_r += p[i] == r[i]; identity += p[i] == (size_t)i; }
    CHECK_MSG(fixed_q < 20 && fixed_r < 20 && identity < 20, "fixed %d %d %d", fixed_q, fixed_r, identity);
    /* where element 0 lands over many epochs: every slot of 4 about equally often */
    int hist[4] = {0};
    size_t p4[4];
    for (int e = 0; e < 40000; e++) {
        lt_dataset_permutation(4, 1, e, p4);
        for (int i = 0; i < 4; i++) if (p4[i] == 0) hist[i]++;
    }
    for (int i = 0; i < 4; i++) CHECK_MSG(abs(hist[i] - 10000) < 600, "slot %d: %d", i, hist[i]);
    lt_dataset_permutation(1, 1, 0, p4);
    CHECK(p4[0] == 0);
    lt_dataset_permutation(0, 1, 0, p4);
    free(p); free(q); free(r);
    return lt_test_done("test_batch");
}

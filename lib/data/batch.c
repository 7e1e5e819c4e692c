/* batch.c - padding-free micro-batches: records end to end, positions restarting at 0 for
 * each record, cu_seqlens boundaries (the block-diagonal causal mask), and next-token targets
 * shifted inside each record so no target ever crosses into the next record. */
#include "data/dataset.h"
#include <stdlib.h>
#include <string.h>

void lt_batch_free(lt_batch *b) {
    if (!b) return;
    free(b->ids);
    free(b->targets);
    free(b->pos);
    free(b->cu_seqlens);
    memset(b, 0, sizeof *b);
}

/* Grows b to hold n tokens and nseq records; cu_seqlens is sized together with the tokens
 * (nseq <= n, since every record holds at least one token). */
static lt_status batch_reserve(lt_batch *b, int64_t n) {
    if (n <= b->cap) return LT_OK;
    int64_t cap = b->cap ? b->cap : 256;
    while (cap < n) cap *= 2;
    if (cap > INT32_MAX) cap = INT32_MAX;
    int32_t *ids = lt_realloc(b->ids, (size_t)cap * sizeof *ids, "batch ids");
    if (!ids) return LT_ERR_OUT_OF_MEMORY;
    b->ids = ids;
    int32_t *tg = lt_realloc(b->targets, (size_t)cap * sizeof *tg, "batch targets");
    if (!tg) return LT_ERR_OUT_OF_MEMORY;
    b->targets = tg;
    int32_t *pos = lt_realloc(b->pos, (size_t)cap * sizeof *pos, "batch positions");
    if (!pos) return LT_ERR_OUT_OF_MEMORY;
    b->pos = pos;
    int32_t *cu = lt_realloc(b->cu_seqlens, ((size_t)cap + 1) * sizeof *cu, "batch cu_seqlens");
    if (!cu) return LT_ERR_OUT_OF_MEMORY;
    b->cu_seqlens = cu;
    b->cap = (int32_t)cap;
    return LT_OK;
}

lt_status lt_batch_pack(lt_batch *b, int nrec, const int32_t *const *ids, const int32_t *const *labels,
                        const size_t *lens) {
    LT_CHECK_ARG(b && ids && labels && lens, "lt_batch_pack: NULL argument");
    LT_CHECK_ARG(nrec > 0, "lt_batch_pack: nrec must be > 0 (got %d)", nrec);
    int64_t total = 0;
    for (int r = 0; r < nrec; r++) {
        LT_CHECK_ARG(ids[r] && labels[r], "lt_batch_pack: record %d has NULL ids or labels", r);
        LT_CHECK_ARG(lens[r] > 0, "lt_batch_pack: record %d is empty", r);
        total += (int64_t)lens[r];
        LT_CHECK_ARG(total < INT32_MAX, "lt_batch_pack: %lld tokens do not fit one batch", (long long)total);
    }
    LT_TRY(batch_reserve(b, total));
    int32_t t = 0, max_len = 0;
    int64_t n_targets = 0;
    b->cu_seqlens[0] = 0;
    for (int r = 0; r < nrec; r++) {
        int32_t n = (int32_t)lens[r];
        memcpy(b->ids + t, ids[r], (size_t)n * sizeof(int32_t));
        for (int32_t i = 0; i < n; i++) {
            b->pos[t + i] = i;
            /* the target of token i is the label of token i+1; the last token predicts nothing */
            int32_t tg = i + 1 < n ? labels[r][i + 1] : -100;
            b->targets[t + i] = tg;
            n_targets += tg != -100;
        }
        t += n;
        b->cu_seqlens[r + 1] = t;
        if (n > max_len) max_len = n;
    }
    b->n_tokens = t;
    b->nseq = nrec;
    b->max_seqlen = max_len;
    b->n_targets = n_targets;
    return LT_OK;
}

lt_status lt_batch_from_dataset(lt_batch *b, const lt_dataset *ds, const size_t *idx, int nrec, int eval_split) {
    LT_CHECK_ARG(b && ds && idx, "lt_batch_from_dataset: NULL argument");
    LT_CHECK_ARG(nrec > 0, "lt_batch_from_dataset: nrec must be > 0 (got %d)", nrec);
    const int32_t **ids = lt_malloc((size_t)nrec * sizeof *ids, "batch record pointers");
    const int32_t **labels = lt_malloc((size_t)nrec * sizeof *labels, "batch record pointers");
    size_t *lens = lt_malloc((size_t)nrec * sizeof *lens, "batch record lengths");
    lt_status st = ids && labels && lens ? LT_OK : LT_ERR_OUT_OF_MEMORY;
    for (int r = 0; r < nrec && st >= 0; r++)
        st = eval_split ? lt_dataset_eval_record(ds, idx[r], &ids[r], &labels[r], &lens[r])
                        : lt_dataset_record(ds, idx[r], &ids[r], &labels[r], &lens[r]);
    if (st >= 0) st = lt_batch_pack(b, nrec, (const int32_t *const *)ids, (const int32_t *const *)labels, lens);
    free(ids);
    free(labels);
    free(lens);
    return st;
}

lt_status lt_batch_append(lt_batch *dst, const lt_batch *src) {
    LT_CHECK_ARG(dst && src, "lt_batch_append: NULL argument");
    if (src->n_tokens <= 0) return LT_OK;
    const int64_t n0 = dst->n_tokens > 0 ? dst->n_tokens : 0, total = n0 + src->n_tokens;
    LT_CHECK_ARG(total < INT32_MAX, "lt_batch_append: %lld tokens do not fit one batch", (long long)total);
    if (n0 == 0) { /* a fresh destination: no records yet */
        dst->nseq = 0;
        dst->max_seqlen = 0;
        dst->n_targets = 0;
    }
    LT_TRY(batch_reserve(dst, total));
    memcpy(dst->ids + n0, src->ids, (size_t)src->n_tokens * sizeof(int32_t));
    memcpy(dst->targets + n0, src->targets, (size_t)src->n_tokens * sizeof(int32_t));
    memcpy(dst->pos + n0, src->pos, (size_t)src->n_tokens * sizeof(int32_t));
    dst->cu_seqlens[0] = 0;
    for (int32_t r = 1; r <= src->nseq; r++) dst->cu_seqlens[dst->nseq + r] = (int32_t)n0 + src->cu_seqlens[r];
    dst->nseq += src->nseq;
    dst->n_tokens = (int32_t)total;
    if (src->max_seqlen > dst->max_seqlen) dst->max_seqlen = src->max_seqlen;
    dst->n_targets += src->n_targets;
    return LT_OK;
}

lt_status lt_batch_pad(lt_batch *b, int32_t n_tokens, int32_t nseq, int32_t max_seg, int32_t pad_id) {
    LT_CHECK_ARG(b && b->n_tokens > 0 && b->nseq > 0, "lt_batch_pad: needs a non-empty batch");
    LT_CHECK_ARG(max_seg > 0 && max_seg >= b->max_seqlen, "lt_batch_pad: max_seg %d must be > 0 and hold the "
                 "longest record (%d tokens)", max_seg, b->max_seqlen);
    LT_CHECK_ARG(n_tokens >= b->n_tokens && nseq >= b->nseq, "lt_batch_pad: the batch holds %d tokens in %d "
                 "sequences, more than the %d tokens / %d sequences asked for", b->n_tokens, b->nseq, n_tokens, nseq);
    const int32_t pad = n_tokens - b->n_tokens;
    const int64_t segs = (pad + (int64_t)max_seg - 1) / max_seg;
    LT_CHECK_ARG(b->nseq + segs <= nseq, "lt_batch_pad: %d padding tokens need %lld sequences of at most %d, "
                 "beyond the %d sequences asked for (the batch has %d)", pad, (long long)segs, max_seg, nseq, b->nseq);
    /* cu_seqlens is sized with the tokens (cap + 1): ask for as many tokens as sequences if needed */
    LT_TRY(batch_reserve(b, n_tokens > nseq ? n_tokens : nseq));
    int32_t t = b->n_tokens, s = b->nseq;
    while (t < n_tokens) {
        const int32_t n = n_tokens - t < max_seg ? n_tokens - t : max_seg;
        for (int32_t i = 0; i < n; i++) {
            b->ids[t + i] = pad_id;
            b->pos[t + i] = i;
            b->targets[t + i] = -100;
        }
        t += n;
        b->cu_seqlens[++s] = t;
    }
    while (s < nseq) b->cu_seqlens[++s] = t; /* empty sequences: the attention skips them */
    b->n_tokens = t;
    b->nseq = s;
    b->max_seqlen = max_seg;
    return LT_OK;
}

/* graph_api.c - the public no-gradient entry points over the graph: lt_model_logits (logits of
 * one sequence) and lt_model_loss (its mean cross-entropy, transformers' shifted-label loss). */
#include "model/graph.h"

#include <stdlib.h>
#include <string.h>

/* A one-sequence batch over caller arrays (targets filled when labels are given). */
typedef struct one_seq {
    lt_batch b;
    int32_t cu[2];
} one_seq;

static lt_status one_seq_make(one_seq *s, const int32_t *ids, const int32_t *labels, size_t n) {
    if (n > (size_t)INT32_MAX / 2) return lt_error(LT_ERR_INVALID_ARGUMENT, "sequence of %zu tokens is too long", n);
    memset(s, 0, sizeof *s);
    s->b.n_tokens = (int32_t)n;
    s->b.nseq = 1;
    s->b.max_seqlen = (int32_t)n;
    s->b.ids = (int32_t *)ids;
    s->cu[0] = 0;
    s->cu[1] = (int32_t)n;
    s->b.cu_seqlens = s->cu;
    s->b.pos = lt_malloc(n * sizeof(int32_t), "positions");
    if (!s->b.pos) return LT_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; i < n; i++) s->b.pos[i] = (int32_t)i;
    if (labels) {
        s->b.targets = lt_malloc(n * sizeof(int32_t), "targets");
        if (!s->b.targets) { free(s->b.pos); return LT_ERR_OUT_OF_MEMORY; }
        for (size_t i = 0; i < n; i++) {
            s->b.targets[i] = i + 1 < n ? labels[i + 1] : -100;
            if (s->b.targets[i] != -100) s->b.n_targets++;
        }
    }
    s->b.cap = (int32_t)n;
    return LT_OK;
}

static void one_seq_free(one_seq *s) {
    free(s->b.pos);
    free(s->b.targets);
}

LT_API lt_status lt_model_logits(lt_model *model, const int32_t *ids, size_t n, float *logits) {
    LT_CHECK_ARG(model && ids && logits, "lt_model_logits: model, ids and logits must not be NULL");
    LT_CHECK_ARG(n > 0, "lt_model_logits: empty sequence");
    one_seq s;
    LT_TRY(one_seq_make(&s, ids, NULL, n));
    lt_status st = lt_graph_logits(model, &s.b, logits);
    one_seq_free(&s);
    return st;
}

LT_API lt_status lt_model_loss(lt_model *model, const int32_t *ids, const int32_t *labels, size_t n, double *loss) {
    LT_CHECK_ARG(model && ids && labels && loss, "lt_model_loss: model, ids, labels and loss must not be NULL");
    LT_CHECK_ARG(n > 1, "lt_model_loss: a sequence of %zu tokens has no next-token target", n);
    for (size_t i = 0; i < n; i++)
        if (labels[i] != -100 && (labels[i] < 0 || labels[i] >= model->cfg.vocab_size))
            return lt_error(LT_ERR_INVALID_ARGUMENT, "lt_model_loss: labels[%zu] = %d is neither -100 nor a token id "
                            "in [0, %d)", i, labels[i], model->cfg.vocab_size);
    one_seq s;
    LT_TRY(one_seq_make(&s, ids, labels, n));
    if (s.b.n_targets == 0) {
        one_seq_free(&s);
        return lt_error(LT_ERR_INVALID_ARGUMENT, "lt_model_loss: every label after the first token is -100, so "
                        "there is nothing to score");
    }
    double sum = 0;
    lt_status st = lt_graph_loss(model, &s.b, &sum);
    if (st == LT_OK) *loss = sum / (double)s.b.n_targets;
    one_seq_free(&s);
    return st;
}

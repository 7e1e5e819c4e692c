/* test_graph_fixtures.c - the CPU graph against transformers + PEFT (tests/fixtures): logits
 * with and without the LoRA branch (relative error <= 1e-4), each sequence's loss
 * (lt_model_loss, <= 1e-5 relative), the batch loss of a packed micro-batch and every LoRA
 * gradient of it (<= 1e-3 relative), for a tied and an untied head. */
#include "train_common.h"

static void zero_grads(lt_model *m, int layer, int proj, lt_lora_tensor *t, void *ctx) {
    (void)layer; (void)proj; (void)ctx;
    m->be->ops.memset0(m->be, t->dA, (size_t)(t->r * t->in) * 4);
    m->be->ops.memset0(m->be, t->dB, (size_t)(t->out * t->r) * 4);
}

static void check_model(const char *name) {
    lt_model *m = fx_model(name, 1);
    lt_st_set *ex = fx_expected(name);
    json_t *js = fx_json(name);
    int64_t n_ids, n_cu, n_logits;
    const int32_t *ids = fx_i32(ex, "ids", &n_ids);
    const int32_t *labels = fx_i32(ex, "labels", NULL);
    const int32_t *cu = fx_i32(ex, "cu_seqlens", &n_cu);
    float *ref = fx_f32(ex, "logits", &n_logits);
    float *ref_base = fx_f32(ex, "logits_base", NULL);
    int V = m->cfg.vocab_size, nseq = (int)n_cu - 1;
    CHECK(n_logits == n_ids * V);
    float *logits = malloc((size_t)n_logits * 4);

    /* logits of each sequence, LoRA on, then off */
    for (int pass = 0; pass < 2; pass++) {
        CHECK_OK(lt_model_set_lora_enabled(m, pass == 0));
        for (int s = 0; s < nseq; s++) {
            size_t n = (size_t)(cu[s + 1] - cu[s]);
            CHECK_OK(lt_model_logits(m, ids + cu[s], n, logits + (size_t)cu[s] * V));
        }
        double e = lt_rel_err(logits, pass == 0 ? ref : ref_base, (size_t)n_logits);
        printf("%s: logits (%s) relative error %.3g\n", name, pass == 0 ? "LoRA" : "base", e);
        CHECK_MSG(e <= 1e-4, "%s logits rel err %g", name, e);
        /* per-sequence loss */
        json_t *ls = json_object_get(js, pass == 0 ? "loss_seq" : "loss_seq_base");
        for (int s = 0; s < nseq; s++) {
            size_t n = (size_t)(cu[s + 1] - cu[s]);
            double loss = 0, want = json_number_value(json_array_get(ls, (size_t)s));
            CHECK_OK(lt_model_loss(m, ids + cu[s], labels + cu[s], n, &loss));
            printf("%s: seq %d loss %.7f (transformers %.7f, rel %.2g)\n", name, s, loss, want,
                   fabs(loss - want) / fabs(want));
            CHECK_MSG(fabs(loss - want) <= 1e-5 * fabs(want), "%s seq %d loss %.8f vs %.8f", name, s, loss, want);
        }
    }
    CHECK_OK(lt_model_set_lora_enabled(m, 1));

    /* the packed batch: loss and LoRA gradients of sum(CE)/count */
    const int32_t *rec_ids[8], *rec_labels[8];
    size_t lens[8];
    for (int s = 0; s < nseq; s++) {
        rec_ids[s] = ids + cu[s];
        rec_labels[s] = labels + cu[s];
        lens[s] = (size_t)(cu[s + 1] - cu[s]);
    }
    lt_batch b;
    memset(&b, 0, sizeof b);
    CHECK_OK(lt_batch_pack(&b, nseq, rec_ids, rec_labels, lens));
    double want_batch = json_number_value(json_object_get(js, "loss_batch"));
    double sum = 0;
    lt_graph_pass pass = {1, 3407, 0};
    CHECK_OK(lt_graph_forward_backward(m, &b, (float)(1.0 / (double)b.n_targets), &pass, &sum));
    double loss = sum / (double)b.n_targets;
    printf("%s: batch loss %.7f (reference %.7f)\n", name, loss, want_batch);
    CHECK_MSG(fabs(loss - want_batch) <= 1e-5 * fabs(want_batch), "%s batch loss %.8f vs %.8f", name, loss, want_batch);
    double worst = 0;
    int n_checked = 0;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++)
            for (int isb = 0; isb < 2; isb++) {
                lt_lora_tensor *t = &m->layers[l].lora[p];
                CHECK(t->A != NULL);
                if (!t->A) continue;
                char key[256];
                fx_lora_key(key, sizeof key, "grad.", l, p, isb);
                int64_t n;
                float *want = fx_f32(ex, key, &n);
                CHECK(n == (isb ? t->out * t->r : t->r * t->in));
                float *got = fx_download(m, isb ? t->dB : t->dA, n);
                double e = lt_rel_err(got, want, (size_t)n);
                if (e > worst) worst = e;
                CHECK_MSG(e <= 1e-3, "%s: gradient of %s: relative error %g", name, key + 5, e);
                n_checked++;
                free(got);
                free(want);
            }
    printf("%s: %d LoRA gradients, worst relative error %.3g\n", name, n_checked, worst);
    CHECK(n_checked == m->cfg.num_layers * LT_PROJ_COUNT * 2);

    /* gradient checkpointing off (every layer's activations kept, no recompute): the same
     * gradients, bit for bit on the CPU */
    {
        float *ck[LT_PROJ_COUNT * 2];
        lt_layer *L1 = &m->layers[1];
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            ck[2 * p] = fx_download(m, L1->lora[p].dA, L1->lora[p].r * L1->lora[p].in);
            ck[2 * p + 1] = fx_download(m, L1->lora[p].dB, L1->lora[p].out * L1->lora[p].r);
        }
        lt_model_foreach_lora(m, zero_grads, NULL);
        lt_graph_pass keep = {1, 3407, 0, 1};
        double sum_keep = 0;
        CHECK_OK(lt_graph_forward_backward(m, &b, (float)(1.0 / (double)b.n_targets), &keep, &sum_keep));
        CHECK(sum_keep == sum);
        int same = 1;
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            float *gA = fx_download(m, L1->lora[p].dA, L1->lora[p].r * L1->lora[p].in);
            float *gB = fx_download(m, L1->lora[p].dB, L1->lora[p].out * L1->lora[p].r);
            same &= !memcmp(gA, ck[2 * p], (size_t)(L1->lora[p].r * L1->lora[p].in) * 4);
            same &= !memcmp(gB, ck[2 * p + 1], (size_t)(L1->lora[p].out * L1->lora[p].r) * 4);
            free(gA); free(gB); free(ck[2 * p]); free(ck[2 * p + 1]);
        }
        CHECK_MSG(same, "%s: gradients without checkpointing differ from the recomputed ones", name);
        printf("%s: gradients without checkpointing %s those with recompute\n", name, same ? "equal" : "DIFFER from");
    }

    /* the same batch again accumulates: gradients double */
    lt_lora_tensor *t0 = &m->layers[0].lora[LT_PROJ_Q];
    float *g1 = fx_download(m, t0->dA, t0->r * t0->in);
    sum = 0;
    CHECK_OK(lt_graph_forward_backward(m, &b, (float)(1.0 / (double)b.n_targets), &pass, &sum));
    float *g2 = fx_download(m, t0->dA, t0->r * t0->in);
    for (int64_t i = 0; i < t0->r * t0->in; i++) g1[i] *= 2;
    CHECK(lt_rel_err(g2, g1, (size_t)(t0->r * t0->in)) <= 1e-6);
    free(g1);
    free(g2);

    lt_batch_free(&b);
    free(logits);
    free(ref);
    free(ref_base);
    json_decref(js);
    lt_st_close(ex);
    lt_model_free(m);
}

/* With LoRA dropout on, the backward (which recomputes each layer) must use the forward's masks:
 * the analytic gradient of the pass's own loss matches central finite differences. */
static void check_dropout_gradients(void) {
    lt_model *m = fx_model("tiny-untied", 1);
    lt_st_set *ex = fx_expected("tiny-untied");
    const int32_t *ids = fx_i32(ex, "ids", NULL), *labels = fx_i32(ex, "labels", NULL);
    const int32_t *cu = fx_i32(ex, "cu_seqlens", NULL);
    const int32_t *ri[3] = {ids, ids + cu[1], ids + cu[2]}, *rl[3] = {labels, labels + cu[1], labels + cu[2]};
    size_t lens[3] = {(size_t)cu[1], (size_t)(cu[2] - cu[1]), (size_t)(cu[3] - cu[2])};
    lt_batch b;
    memset(&b, 0, sizeof b);
    CHECK_OK(lt_batch_pack(&b, 3, ri, rl, lens));
    m->lora.dropout = 0.3f;
    lt_graph_pass pass = {1, 77, 5};
    float scale = (float)(1.0 / (double)b.n_targets);
    int checked = 0;
    for (int p = 0; p < LT_PROJ_COUNT; p++) {
        lt_lora_tensor *t = &m->layers[p % 2].lora[p];
        int64_t n = t->r * t->in;
        CHECK_OK(m->be->ops.memset0(m->be, t->dA, (size_t)n * 4));
        double sum = 0;
        CHECK_OK(lt_graph_forward_backward(m, &b, scale, &pass, &sum));
        float *g = fx_download(m, t->dA, n), *A = fx_download(m, t->A, n);
        int64_t best = 0;
        for (int64_t i = 1; i < n; i++)
            if (fabsf(g[i]) > fabsf(g[best])) best = i;
        const float h = 1e-2f;
        double lp = 0, lm = 0;
        float v = A[best];
        A[best] = v + h;
        CHECK_OK(m->be->ops.upload(m->be, t->A, A, (size_t)n * 4));
        CHECK_OK(lt_graph_forward_backward(m, &b, scale, &pass, &lp));
        A[best] = v - h;
        CHECK_OK(m->be->ops.upload(m->be, t->A, A, (size_t)n * 4));
        CHECK_OK(lt_graph_forward_backward(m, &b, scale, &pass, &lm));
        A[best] = v;
        CHECK_OK(m->be->ops.upload(m->be, t->A, A, (size_t)n * 4));
        double fd = (lp - lm) / (2.0 * h) / (double)b.n_targets;
        printf("dropout 0.3: layer %d %s lora_A[%lld]: backward %.6g, finite difference %.6g\n", p % 2,
               lt_proj_names[p], (long long)best, g[best], fd);
        CHECK_MSG(fabs(fd - g[best]) <= 2e-2 * fabs(g[best]) + 1e-5, "%s: %g vs %g", lt_proj_names[p], fd, g[best]);
        checked++;
        free(g);
        free(A);
    }
    /* masks differ between streams: another stream base gives another loss */
    double l1 = 0, l2 = 0, l3 = 0;
    lt_graph_pass other = {1, 77, 6};
    CHECK_OK(lt_graph_forward_backward(m, &b, scale, &pass, &l1));
    CHECK_OK(lt_graph_forward_backward(m, &b, scale, &other, &l2));
    CHECK_OK(lt_graph_forward_backward(m, &b, scale, &pass, &l3));
    CHECK(l1 == l3);
    CHECK(l1 != l2);
    CHECK(checked == LT_PROJ_COUNT);
    lt_batch_free(&b);
    lt_st_close(ex);
    lt_model_free(m);
}

int main(void) {
    check_dropout_gradients();
    check_model("tiny-tied");
    check_model("tiny-untied");
    return lt_test_done("test_graph_fixtures");
}

/* gen_common.h - helpers shared by the generation tests: a LoRA adapter with non-zero B (a
 * fresh PEFT init has B = 0, which would make the LoRA branch invisible), argmax, and greedy
 * tokens by full recomputation through lt_model_logits (no KV cache), and how far generated tokens
 * fall from the CPU argmax. */
#ifndef LT_GEN_COMMON_H
#define LT_GEN_COMMON_H
#include "lt_test.h"
#include "model/model.h"
#include <math.h>
#include <string.h>

/* Attaches LoRA (rank r, alpha 2r, all targets) and fills every B with deterministic values
 * ~ U(-amp, amp). */
static inline lt_status gen_add_random_lora_r(lt_model *m, int r, float amp) {
    lt_lora_params lp;
    lt_lora_params_init(&lp);
    lp.r = r;
    lp.alpha = 2.0f * (float)r;
    lt_status st = lt_model_add_lora(m, &lp);
    if (st != LT_OK) return st;
    uint32_t s = 12345;
    for (int l = 0; l < m->cfg.num_layers && st == LT_OK; l++)
        for (int p = 0; p < LT_PROJ_COUNT && st == LT_OK; p++) {
            lt_lora_tensor *t = &m->layers[l].lora[p];
            if (!t->B) continue;
            size_t n = (size_t)(t->out * t->r);
            float *h = malloc(n * sizeof *h);
            if (!h) return LT_ERR_OUT_OF_MEMORY;
            for (size_t i = 0; i < n; i++) {
                s = s * 1664525u + 1013904223u;
                h[i] = amp * (2.0f * (float)(s >> 8) / 16777216.0f - 1.0f);
            }
            st = m->be->ops.upload(m->be, t->B, h, n * sizeof *h);
            free(h);
        }
    return st;
}
/* the same with r 8 */
static inline lt_status gen_add_random_lora(lt_model *m, float amp) { return gen_add_random_lora_r(m, 8, amp); }

static inline int32_t gen_argmax(const float *x, int32_t V) {
    int32_t b = 0;
    for (int32_t i = 1; i < V; i++) if (x[i] > x[b]) b = i;
    return b;
}

/* Greedy continuation of prompt[np] for n tokens by recomputing the whole sequence each step. */
static inline lt_status gen_greedy_recompute(lt_model *m, const int32_t *prompt, size_t np, int n, int32_t *out) {
    int32_t V = m->cfg.vocab_size;
    int32_t *seq = malloc(sizeof *seq * (np + (size_t)n));
    float *lg = malloc(sizeof *lg * (np + (size_t)n) * (size_t)V);
    lt_status st = seq && lg ? LT_OK : LT_ERR_OUT_OF_MEMORY;
    if (st == LT_OK) memcpy(seq, prompt, np * sizeof *seq);
    for (int i = 0; i < n && st == LT_OK; i++) {
        size_t len = np + (size_t)i;
        st = lt_model_logits(m, seq, len, lg);
        if (st == LT_OK) seq[len] = out[i] = gen_argmax(lg + (len - 1) * (size_t)V, V);
    }
    free(seq);
    free(lg);
    return st;
}
/* largest (max logit - logit of toks[i]) / std of the row over the n rows of CPU logits (row i
 * predicts toks[i]); *exact: how many leading tokens are the row's argmax */
static inline double gen_gaps(const float *rows, const int32_t *toks, int n, int32_t V, int *exact) {
    double worst = 0;
    int ex = 0;
    for (int i = 0; i < n; i++) {
        const float *row = rows + (size_t)i * (size_t)V;
        int32_t b = gen_argmax(row, V);
        double mean = 0, var = 0;
        for (int32_t k = 0; k < V; k++) mean += row[k];
        mean /= V;
        for (int32_t k = 0; k < V; k++) var += (row[k] - mean) * (row[k] - mean);
        double gap = (row[b] - row[toks[i]]) / sqrt(var / V + 1e-30);
        if (gap > worst) worst = gap;
        if (b == toks[i] && ex == i) ex++;
    }
    *exact = ex;
    return worst;
}
/* largest |CPU max logit - CPU logit of the CUDA token| along the CUDA sequence, relative to
 * the spread (std) of the logits; *exact (when not NULL): how many leading tokens are the CPU argmax */
static inline double gen_worst_gap(lt_model *cpu, const int32_t *prompt, size_t np, const int32_t *toks, int n,
                                   int *exact) {
    int32_t V = cpu->cfg.vocab_size;
    size_t len = np + (size_t)n;
    int32_t *seq = malloc(sizeof *seq * len);
    float *lg = malloc(sizeof *lg * len * (size_t)V);
    memcpy(seq, prompt, np * sizeof *seq);
    memcpy(seq + np, toks, (size_t)n * sizeof *seq);
    int ex = 0;
    const double worst = lt_model_logits(cpu, seq, len - 1, lg) == LT_OK
                             ? gen_gaps(lg + (np - 1) * (size_t)V, toks, n, V, &ex) : INFINITY;
    if (exact) *exact = ex;
    free(seq);
    free(lg);
    return worst;
}

#endif

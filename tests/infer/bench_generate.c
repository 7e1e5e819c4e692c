/* bench_generate.c - generation speed on CUDA: batch 1, an unmerged LoRA adapter (r 16, all
 * targets, non-zero B), greedy. Prints one JSON object: prefill seconds of the prompt, decode
 * tokens/s of the following tokens (the decode kernels, and for comparison the backend-ops
 * decode), and the time to first token of a longer prompt (median of 5).
 * usage: bench_generate MODEL_DIR [PROMPT_LEN=32] [NEW_TOKENS=128] [TTFT_PROMPT_LEN=512] */
#include "gen_common.h"
#include "infer/infer.h"

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static lt_status run(lt_model *m, const int32_t *ids, size_t n, int new_tokens, lt_generate_timing *t) {
    lt_generate_params gp;
    lt_generate_params_init(&gp);
    gp.max_new_tokens = new_tokens;
    gp.stop_ids = ids; gp.n_stop_ids = 0;
    int32_t *out = malloc(sizeof *out * (size_t)new_tokens);
    size_t no = 0;
    lt_status st = lt_generate(m, ids, n, &gp, out, (size_t)new_tokens, &no);
    free(out);
    lt_generate_last_timing(t);
    return st;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: bench_generate MODEL_DIR [PROMPT_LEN] [NEW] [TTFT_LEN]\n"); return 2; }
    if (lt_cuda_device_count() <= 0) LT_TEST_SKIP("no CUDA device");
    int plen = argc > 2 ? atoi(argv[2]) : 32, nnew = argc > 3 ? atoi(argv[3]) : 128, tlen = argc > 4 ? atoi(argv[4]) : 512;
    lt_model_params mp;
    lt_model_params_init(&mp);
    mp.device = LT_DEVICE_CUDA;
    lt_model *m = NULL;
    lt_status st = lt_model_load(argv[1], &mp, &m);
    if (st != LT_OK) { fprintf(stderr, "load: %s\n", lt_last_error()); return 1; }
    lt_lora_params lp;
    lt_lora_params_init(&lp); /* r 16, alpha 32, all targets, as the notebook */
    st = lt_model_add_lora(m, &lp);
    uint32_t s = 7;
    for (int l = 0; l < m->cfg.num_layers && st == LT_OK; l++)
        for (int p = 0; p < LT_PROJ_COUNT && st == LT_OK; p++) {
            lt_lora_tensor *t = &m->layers[l].lora[p];
            size_t n = (size_t)(t->out * t->r);
            float *h = malloc(n * 4);
            for (size_t i = 0; i < n; i++) { s = s * 1664525u + 1013904223u; h[i] = 0.01f * ((float)(s >> 8) / 16777216.0f - 0.5f); }
            st = m->be->ops.upload(m->be, t->B, h, n * 4);
            free(h);
        }
    if (st != LT_OK) { fprintf(stderr, "lora: %s\n", lt_last_error()); return 1; }
    int32_t V = m->cfg.vocab_size, maxn = plen > tlen ? plen : tlen;
    int32_t *ids = malloc(sizeof *ids * (size_t)maxn);
    for (int i = 0; i < maxn; i++) { s = s * 1664525u + 1013904223u; ids[i] = (int32_t)((s >> 8) % (uint32_t)(V - 1000)); }
    lt_generate_timing t, tops;
    /* warm-up (cuBLAS heuristics, first allocations) */
    if ((st = run(m, ids, (size_t)plen, 8, &t)) != LT_OK) { fprintf(stderr, "generate: %s\n", lt_last_error()); return 1; }
    if ((st = run(m, ids, (size_t)plen, nnew, &t)) != LT_OK) { fprintf(stderr, "generate: %s\n", lt_last_error()); return 1; }
    lt_generate_timing tnl;
    lt_model_set_lora_enabled(m, 0);
    if ((st = run(m, ids, (size_t)plen, nnew, &tnl)) != LT_OK) { fprintf(stderr, "generate: %s\n", lt_last_error()); return 1; }
    lt_model_set_lora_enabled(m, 1);
    lt_generate_set_fast_decode(0);
    if ((st = run(m, ids, (size_t)plen, 32, &tops)) != LT_OK) { fprintf(stderr, "generate: %s\n", lt_last_error()); return 1; }
    lt_generate_set_fast_decode(1);
    double ttft[5];
    for (int i = 0; i < 5; i++) {
        lt_generate_timing tt;
        if ((st = run(m, ids, (size_t)tlen, 1, &tt)) != LT_OK) { fprintf(stderr, "generate: %s\n", lt_last_error()); return 1; }
        ttft[i] = tt.prefill_s;
    }
    qsort(ttft, 5, sizeof ttft[0], cmp_d);
    printf("{\"prompt_len\": %d, \"new_tokens\": %d, \"prefill_ms\": %.3f, \"decode_tok_s\": %.1f, \"fast_decode\": %d, "
           "\"no_lora_decode_tok_s\": %.1f, \"ops_decode_tok_s\": %.1f, \"ttft_prompt_len\": %d, \"ttft_ms\": %.3f}\n",
           plen, nnew, 1e3 * t.prefill_s, t.decode_s > 0 ? (double)t.n_decoded / t.decode_s : 0.0, t.fast_decode,
           tnl.decode_s > 0 ? (double)tnl.n_decoded / tnl.decode_s : 0.0,
           tops.decode_s > 0 ? (double)tops.n_decoded / tops.decode_s : 0.0, tlen, 1e3 * ttft[2]);
    lt_model_free(m);
    free(ids);
    return 0;
}

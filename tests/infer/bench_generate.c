/* bench_generate.c - generation speed on CUDA: an unmerged LoRA adapter (r 16, all targets,
 * non-zero B), greedy, no stop ids. Prints one JSON object on stdout: at batch 1 the prefill
 * time of the prompt, decode tokens/s of the following tokens (the decode kernels, without
 * LoRA, and for comparison the backend-ops decode; the decode time includes creating the
 * decoder, decoder_setup_ms, and recording its graph at the second step), the time to first token of a longer prompt
 * (median of 5); then for every batch size (lt_generate_batch, that many different prompts)
 * the aggregate tokens/s of the decode steps and end to end (prefill included); and the same
 * batch figures as a table on stderr; then where a step's time goes (lt_cuda_decoder_profile: each
 * kernel group's milliseconds per step at a context of PROMPT_LEN + NEW/2, and the step as a
 * CUDA graph replay) per batch size, as "profile" in the JSON and tables on stderr.
 * usage: bench_generate MODEL_DIR [PROMPT_LEN=32] [NEW_TOKENS=128] [TTFT_PROMPT_LEN=512] [BATCHES=1,8,32] */
#include "gen_common.h"
#include "infer/infer.h"
#ifdef LT_HAVE_CUDA
#include "../../cuda/decode.h"
#endif

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

/* batch b: b prompts of plen ids (different per row), nnew new tokens each; the best of `reps` */
static lt_status run_batch(lt_model *m, const int32_t *ids, int plen, int b, int nnew, int reps, double *dec_tok_s,
                           double *e2e_tok_s, double *prefill_ms) {
    const int32_t **pp = malloc(sizeof *pp * (size_t)b);
    size_t *lens = malloc(sizeof *lens * (size_t)b), *n_out = malloc(sizeof *n_out * (size_t)b);
    int32_t *out = malloc(sizeof *out * (size_t)b * (size_t)nnew);
    lt_status st = pp && lens && n_out && out ? LT_OK : LT_ERR_OUT_OF_MEMORY;
    for (int i = 0; i < b && st == LT_OK; i++) { pp[i] = ids + i; lens[i] = (size_t)plen; }
    lt_generate_params gp;
    lt_generate_params_init(&gp);
    gp.max_new_tokens = nnew;
    gp.stop_ids = ids; gp.n_stop_ids = 0;
    *dec_tok_s = *e2e_tok_s = 0;
    *prefill_ms = 0;
    for (int r = 0; r < reps && st == LT_OK; r++) {
        double t0 = lt_time_s();
        st = lt_generate_batch(m, pp, lens, (size_t)b, &gp, out, (size_t)nnew, n_out);
        double secs = lt_time_s() - t0;
        lt_generate_timing t;
        lt_generate_last_timing(&t);
        size_t total = 0;
        for (int i = 0; i < b; i++) total += n_out[i];
        double d = t.decode_s > 0 ? (double)t.n_decoded / t.decode_s : 0, e = secs > 0 ? (double)total / secs : 0;
        if (d > *dec_tok_s) { *dec_tok_s = d; *prefill_ms = 1e3 * t.prefill_s; }
        if (e > *e2e_tok_s) *e2e_tok_s = e;
        if (st == LT_OK && !t.fast_decode) fprintf(stderr, "batch %d: the CUDA decode kernels did not run\n", b);
    }
    free(pp); free(lens); free(n_out); free(out);
    return st;
}

#ifdef LT_HAVE_CUDA
/* b sequences at position ctx of their own zeroed caches; prints a JSON object to stdout */
static lt_status profile_batch(lt_model *m, int b, int ctx) {
    lt_backend *be = m->be;
    const int L = m->cfg.num_layers;
    const int64_t max_len = ctx + 64;
    const size_t bytes = (size_t)max_len * (size_t)(m->cfg.num_kv_heads * m->cfg.head_dim) * (size_t)be->act_bytes;
    void **kc = calloc((size_t)b * L, sizeof(void *)), **vc = calloc((size_t)b * L, sizeof(void *));
    int32_t *tok = malloc(sizeof *tok * (size_t)b), *am = malloc(sizeof *am * (size_t)b);
    int64_t *pos = malloc(sizeof *pos * (size_t)b);
    lt_cuda_decoder *d = NULL;
    lt_status st = kc && vc && tok && am && pos ? LT_OK : LT_ERR_OUT_OF_MEMORY;
    for (int i = 0; i < b * L && st == LT_OK; i++) {
        st = be->ops.alloc(be, bytes, &kc[i]);
        if (st == LT_OK) st = be->ops.alloc(be, bytes, &vc[i]);
        if (st == LT_OK) st = be->ops.memset0(be, kc[i], bytes);
        if (st == LT_OK) st = be->ops.memset0(be, vc[i], bytes);
    }
    if (st == LT_OK) st = lt_cuda_decoder_create_batch(m, b, kc, vc, max_len, &d);
    for (int i = 0; i < b; i++) { tok[i] = 100 + i; pos[i] = ctx; }
    /* two steps: the second records the graph */
    for (int k = 0; k < 2 && st == LT_OK; k++) {
        st = lt_cuda_decoder_step_batch(d, tok, pos, NULL, am);
        for (int i = 0; i < b; i++) pos[i]++;
    }
    double ms[32], graph_ms = 0, sum = 0;
    const char *names[32];
    int nk = 0;
    if (st == LT_OK) st = lt_cuda_decoder_profile(d, 10, ms, names, 32, &nk, &graph_ms);
    if (st == LT_OK) {
        printf("{\"batch\": %d, \"context\": %d, \"graph_step_ms\": %.4f, \"graph_tok_s\": %.1f, \"kernels_ms\": {",
               b, ctx, graph_ms, graph_ms > 0 ? 1e3 * b / graph_ms : 0.0);
        for (int k = 0; k < nk; k++) { printf("%s\"%s\": %.4f", k ? ", " : "", names[k], ms[k]); sum += ms[k]; }
        printf("}, \"kernels_sum_ms\": %.4f}", sum);
        fprintf(stderr, "\nbatch %d at context %d: graph step %.3f ms (%.0f tok/s); kernel groups back to back "
                "%.3f ms:\n| kernel group | ms per step | share |\n|---|---|---|\n", b, ctx, graph_ms,
                graph_ms > 0 ? 1e3 * b / graph_ms : 0.0, sum);
        for (int k = 0; k < nk; k++)
            fprintf(stderr, "| %s | %.4f | %.1f%% |\n", names[k], ms[k], sum > 0 ? 100 * ms[k] / sum : 0.0);
    }
    lt_cuda_decoder_free(d);
    for (int i = 0; i < b * L; i++) {
        if (kc && kc[i]) be->ops.free(be, kc[i]);
        if (vc && vc[i]) be->ops.free(be, vc[i]);
    }
    free(kc); free(vc); free(tok); free(am); free(pos);
    return st;
}
#endif

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: bench_generate MODEL_DIR [PROMPT_LEN] [NEW] [TTFT_LEN] [BATCHES]\n"); return 2; }
    if (lt_cuda_device_count() <= 0) LT_TEST_SKIP("no CUDA device");
    int plen = argc > 2 ? atoi(argv[2]) : 32, nnew = argc > 3 ? atoi(argv[3]) : 128, tlen = argc > 4 ? atoi(argv[4]) : 512;
    int batches[16], nbatch = 0;
    {
        const char *spec = argc > 5 ? argv[5] : "1,8,32";
        for (const char *q = spec; *q && nbatch < 16;) {
            char *end = NULL;
            long v = strtol(q, &end, 10);
            if (end == q || v < 1 || v > 1024) { fprintf(stderr, "BATCHES: '%s' is not a list of sizes 1..1024\n", spec); return 2; }
            batches[nbatch++] = (int)v;
            q = *end == ',' ? end + 1 : end;
        }
    }
    if (plen < 1 || nnew < 2 || tlen < 1) { fprintf(stderr, "PROMPT_LEN, NEW (>= 2) and TTFT_LEN must be positive\n"); return 2; }
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
    int32_t V = m->cfg.vocab_size, maxn = (plen > tlen ? plen : tlen) + 1024; /* + row offsets of the batches */
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
    /* batch 1 with programmatic dependent launch (off by default until measured: this is the A/B;
     * a decoder made after the switch takes it; not on CPU-only builds) */
    double pdl_tok_s = 0;
#ifdef LT_HAVE_CUDA
    {
        lt_generate_timing tp;
        lt_cuda_decoder_use_pdl(1);
        st = run(m, ids, (size_t)plen, nnew, &tp);
        lt_cuda_decoder_use_pdl(0);
        if (st != LT_OK) { fprintf(stderr, "generate (PDL): %s\n", lt_last_error()); return 1; }
        pdl_tok_s = tp.decode_s > 0 ? (double)tp.n_decoded / tp.decode_s : 0.0;
    }
#endif
    double ttft[5];
    for (int i = 0; i < 5; i++) {
        lt_generate_timing tt;
        if ((st = run(m, ids, (size_t)tlen, 1, &tt)) != LT_OK) { fprintf(stderr, "generate: %s\n", lt_last_error()); return 1; }
        ttft[i] = tt.prefill_s;
    }
    qsort(ttft, 5, sizeof ttft[0], cmp_d);
    double bdec[16], be2e[16], bpre[16];
    for (int i = 0; i < nbatch; i++) {
        if (run_batch(m, ids, plen, batches[i], 8, 1, &bdec[i], &be2e[i], &bpre[i]) != LT_OK || /* warm-up */
            run_batch(m, ids, plen, batches[i], nnew, 3, &bdec[i], &be2e[i], &bpre[i]) != LT_OK) {
            fprintf(stderr, "generate (batch %d): %s\n", batches[i], lt_last_error());
            return 1;
        }
    }
    printf("{\"prompt_len\": %d, \"new_tokens\": %d, \"prefill_ms\": %.3f, \"decode_tok_s\": %.1f, \"fast_decode\": %d, "
           "\"decoder_setup_ms\": %.3f, \"no_lora_decode_tok_s\": %.1f, \"ops_decode_tok_s\": %.1f, "
           "\"ttft_prompt_len\": %d, \"ttft_ms\": %.3f, \"pdl_decode_tok_s\": %.1f, \"batches\": [",
           plen, nnew, 1e3 * t.prefill_s, t.decode_s > 0 ? (double)t.n_decoded / t.decode_s : 0.0, t.fast_decode,
           1e3 * t.decoder_setup_s,
           tnl.decode_s > 0 ? (double)tnl.n_decoded / tnl.decode_s : 0.0,
           tops.decode_s > 0 ? (double)tops.n_decoded / tops.decode_s : 0.0, tlen, 1e3 * ttft[2], pdl_tok_s);
    for (int i = 0; i < nbatch; i++)
        printf("%s{\"batch\": %d, \"decode_tok_s\": %.1f, \"per_seq_decode_tok_s\": %.1f, \"e2e_tok_s\": %.1f, "
               "\"prefill_ms\": %.3f}", i ? ", " : "", batches[i], bdec[i], bdec[i] / batches[i], be2e[i], bpre[i]);
    printf("], \"profile\": [");
#ifdef LT_HAVE_CUDA
    /* batch 1 also without programmatic dependent launch (A/B of the step's launch overlap) */
    for (int i = -1; i < nbatch; i++) {
        const int b = i < 0 ? 1 : batches[i];
        lt_cuda_decoder_use_pdl(i >= 0);
        if (i >= 0) printf(", ");
        printf("{\"pdl\": %d, \"step\": ", i >= 0);
        if (profile_batch(m, b, plen + nnew / 2) != LT_OK) {
            fprintf(stderr, "profile (batch %d): %s\n", b, lt_last_error());
            printf("null");
        }
        printf("}");
        if (i < 0) fprintf(stderr, "(the above without programmatic dependent launch)\n");
    }
    lt_cuda_decoder_use_pdl(0);
#endif
    printf("]}\n");
    fprintf(stderr, "| batch | decode tok/s (aggregate) | per sequence | end to end tok/s | prefill ms |\n"
                    "|---|---|---|---|---|\n");
    for (int i = 0; i < nbatch; i++)
        fprintf(stderr, "| %d | %.0f | %.0f | %.0f | %.1f |\n", batches[i], bdec[i], bdec[i] / batches[i], be2e[i],
                bpre[i]);
    lt_model_free(m);
    free(ids);
    return 0;
}

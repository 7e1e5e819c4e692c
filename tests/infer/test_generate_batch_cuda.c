/* test_generate_batch_cuda.c - batched generation on CUDA (the batched step of cuda/decode.cu)
 * on a small random Qwen2, NF4 base, unmerged LoRA adapter: 11 prompts at once (two GEMV tiles
 * of 8 and 3 sequences) give exactly the greedy ids of each prompt decoded alone on CUDA (each
 * sequence's sums are formed in the same order batched or alone); every token is the CPU
 * reference's argmax within bf16 tolerance along its sequence (the CPU logits at the CUDA
 * token against their maximum); graph replay equals plain launches, and launches with
 * programmatic dependent launch equal those without; a stop id ends some rows
 * early without changing the others; seeded sampling (prompt i with seed + i, from the
 * downloaded logits) equals each prompt alone. Built with the CUDA backend only; skips (77)
 * without a GPU. */
#include "gen_common.h"
#include "infer/infer.h"
#include "../../cuda/decode.h"

#define NP 11
#define NEW 20
#define CAP 32

/* rows of the batch against each prompt alone (seed + i); returns the first row that differs or -1 */
/* the first row whose generated ids (n_a[i] of row i, CAP apart: the rest of a row is never
 * written) differ between two batched runs, or -1 */
static int rows_differ(const int32_t *a, const size_t *n_a, const int32_t *b, const size_t *n_b) {
    for (int i = 0; i < NP; i++)
        if (n_a[i] != n_b[i] || memcmp(a + (size_t)i * CAP, b + (size_t)i * CAP, n_a[i] * sizeof *a) != 0) return i;
    return -1;
}

static int first_differing_row(lt_model *m, int32_t *const *prompts, const size_t *lens, const lt_generate_params *gp,
                               const int32_t *out, const size_t *n_out) {
    for (int i = 0; i < NP; i++) {
        lt_generate_params p = *gp;
        p.seed = gp->seed + (uint64_t)i;
        int32_t a[CAP];
        size_t na = 0;
        if (lt_generate(m, prompts[i], lens[i], &p, a, CAP, &na) != LT_OK) {
            fprintf(stderr, "prompt %d alone: %s\n", i, lt_last_error());
            return i;
        }
        if (na != n_out[i] || memcmp(a, out + (size_t)i * CAP, na * sizeof *a) != 0) {
            size_t k = 0;
            while (k < na && k < n_out[i] && a[k] == out[(size_t)i * CAP + k]) k++;
            fprintf(stderr, "prompt %d: %zu ids batched, %zu alone, first difference at %zu\n", i, n_out[i], na, k);
            return i;
        }
    }
    return -1;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: test_generate_batch_cuda MODEL_DIR TOKENIZER_DIR\n"); return 2; }
    if (lt_cuda_device_count() <= 0) LT_TEST_SKIP("no CUDA device");
    lt_model_params mp;
    lt_model_params_init(&mp);
    mp.device = LT_DEVICE_CPU;
    lt_model *cpu = NULL, *gpu = NULL;
    lt_tokenizer *tok = NULL;
    CHECK_OK(lt_model_load(argv[1], &mp, &cpu));
    mp.device = LT_DEVICE_CUDA;
    CHECK_OK(lt_model_load(argv[1], &mp, &gpu));
    CHECK_OK(lt_tokenizer_load(argv[2], &tok));
    if (!cpu || !gpu || !tok) return lt_test_done("test_generate_batch_cuda");
    CHECK_OK(gen_add_random_lora(cpu, 0.3f));
    CHECK_OK(gen_add_random_lora(gpu, 0.3f));

    /* prompts of a few lengths: a base text with its first ids varied per prompt */
    const char *text = "下面是一个问题：天空为什么是蓝色的？请详细回答。";
    int32_t base[256];
    size_t nbase = 0;
    CHECK_OK(lt_tokenizer_encode(tok, text, strlen(text), 0, base, 256, &nbase));
    int32_t *prompts[NP];
    size_t lens[NP];
    for (int i = 0; i < NP; i++) {
        prompts[i] = malloc(sizeof(int32_t) * 256);
        lens[i] = nbase - (size_t)(i % 4);
        memcpy(prompts[i], base + (i % 4), lens[i] * sizeof(int32_t));
        prompts[i][0] = (prompts[i][0] + 97 * i) % 5000;
    }
    const int32_t *const *pp = (const int32_t *const *)prompts;
    int32_t out[NP * CAP], again[NP * CAP];
    size_t n_out[NP], n2[NP];
    lt_generate_params gp;
    lt_generate_params_init(&gp);
    gp.max_new_tokens = NEW;
    gp.stop_ids = base; gp.n_stop_ids = 0;

    /* greedy: batched == alone, == CPU within tolerance, graphs == plain launches */
    lt_generate_set_fast_decode(1);
    CHECK_OK(lt_generate_batch(gpu, pp, lens, NP, &gp, out, CAP, n_out));
    lt_generate_timing t;
    lt_generate_last_timing(&t);
    CHECK_MSG(t.fast_decode == 1 && t.n_seq == NP, "the batched CUDA decode kernels were not used");
    int row = first_differing_row(gpu, prompts, lens, &gp, out, n_out);
    CHECK_MSG(row < 0, "greedy: batched row %d differs from the prompt decoded alone", row);
    double worst = 0;
    for (int i = 0; i < NP; i++) {
        double g = gen_worst_gap(cpu, prompts[i], lens[i], out + i * CAP, (int)n_out[i], NULL);
        if (g > worst) worst = g;
    }
    printf("batched CUDA greedy (%d prompts, %d new): worst CPU logit gap of a chosen token %.4f std\n", NP, NEW, worst);
    CHECK_MSG(worst < 0.05, "a batched CUDA token is %.4f logit std below the CPU argmax", worst);
    lt_cuda_decoder_use_graphs(0);
    CHECK_OK(lt_generate_batch(gpu, pp, lens, NP, &gp, again, CAP, n2));
    lt_cuda_decoder_use_graphs(1);
    row = rows_differ(out, n_out, again, n2);
    CHECK_MSG(row < 0, "batched graph replay differs from plain launches (row %d)", row);
    /* the runs above launched plainly (programmatic dependent launch is off by default until a
     * GPU has checked it): this one launches with it (sm_90+; elsewhere it stays plain), then the
     * default is restored for the checks below */
    lt_cuda_decoder_use_pdl(1);
    CHECK_OK(lt_generate_batch(gpu, pp, lens, NP, &gp, again, CAP, n2));
    lt_cuda_decoder_use_pdl(0);
    row = rows_differ(out, n_out, again, n2);
    CHECK_MSG(row < 0, "batched steps with and without programmatic launch differ (row %d)", row);
    /* against the backend-ops decode (no decode kernels): each row within tolerance of the CPU */
    lt_generate_set_fast_decode(0);
    CHECK_OK(lt_generate_batch(gpu, pp, lens, 3, &gp, again, CAP, n2));
    lt_generate_set_fast_decode(1);
    for (int i = 0; i < 3; i++)
        CHECK_MSG(gen_worst_gap(cpu, prompts[i], lens[i], again + i * CAP, (int)n2[i], NULL) < 0.05,
                  "backend-ops batch row %d is off the CPU argmax", i);

    /* a stop id: rows that meet it end, the others go on as alone */
    {
        int32_t stop = out[5 * CAP + 6];
        gp.stop_ids = &stop; gp.n_stop_ids = 1;
        CHECK_OK(lt_generate_batch(gpu, pp, lens, NP, &gp, again, CAP, n2));
        size_t lo = CAP, hi = 0;
        for (int i = 0; i < NP; i++) { if (n2[i] < lo) lo = n2[i]; if (n2[i] > hi) hi = n2[i]; }
        CHECK_MSG(lo < hi && n2[5] <= 7, "per-sequence stops: rows %zu..%zu tokens, row 5 %zu", lo, hi, n2[5]);
        row = first_differing_row(gpu, prompts, lens, &gp, again, n2);
        CHECK_MSG(row < 0, "stop id: batched row %d differs from alone", row);
        gp.stop_ids = base; gp.n_stop_ids = 0;
    }

    /* seeded sampling from the downloaded logits: prompt i as alone with seed + i */
    gp.do_sample = 1; gp.temperature = 0.8f; gp.top_k = 40; gp.top_p = 0.9f; gp.repetition_penalty = 1.1f;
    gp.seed = 77;
    CHECK_OK(lt_generate_batch(gpu, pp, lens, NP, &gp, out, CAP, n_out));
    row = first_differing_row(gpu, prompts, lens, &gp, out, n_out);
    CHECK_MSG(row < 0, "sampling: batched row %d differs from alone", row);

    for (int i = 0; i < NP; i++) free(prompts[i]);
    lt_model_free(cpu);
    lt_model_free(gpu);
    lt_tokenizer_free(tok);
    return lt_test_done("test_generate_batch_cuda");
}

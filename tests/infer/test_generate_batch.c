/* test_generate_batch.c - lt_generate_batch on the CPU backend with a small random Qwen2 (made by
 * `loratune init-random`) and the real Qwen2 tokenizer: several prompts of different lengths
 * at once give exactly the ids of generating each alone - greedy with and without an unmerged
 * LoRA adapter, seeded sampling (prompt i with seed + i), a stop id that ends some sequences
 * before others, stop strings - and bad arguments are refused with a message naming the prompt. */
#include "gen_common.h"
#include "infer/infer.h"

#define NP 5
#define CAP 48

static int ignore_text(const char *piece, size_t len, int32_t token, void *ud) {
    (void)piece; (void)len; (void)token; (void)ud;
    return 0;
}

/* prompt i alone through lt_generate with seed + i; 0 when every row equals the batch's */
static int same_as_alone(lt_model *m, int32_t *const *prompts, const size_t *lens, const lt_generate_params *gp,
                         const int32_t *out, const size_t *n_out, const char *what) {
    int bad = 0;
    for (int i = 0; i < NP; i++) {
        lt_generate_params p = *gp;
        p.seed = gp->seed + (uint64_t)i;
        int32_t a[CAP];
        size_t na = 0;
        lt_status st = lt_generate(m, prompts[i], lens[i], &p, a, CAP, &na);
        if (st != LT_OK) { fprintf(stderr, "%s: prompt %d alone: %s\n", what, i, lt_last_error()); bad = 1; continue; }
        size_t k = 0;
        while (k < na && k < n_out[i] && a[k] == out[(size_t)i * CAP + k]) k++;
        if (na != n_out[i] || k < na) {
            fprintf(stderr, "%s: prompt %d: %zu ids in the batch, %zu alone, first difference at %zu\n", what, i,
                    n_out[i], na, k);
            bad = 1;
        }
    }
    return bad;
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: test_generate_batch MODEL_DIR TOKENIZER_DIR\n"); return 2; }
    lt_model_params mp;
    lt_model_params_init(&mp);
    mp.device = LT_DEVICE_CPU;
    lt_model *m = NULL;
    lt_tokenizer *tok = NULL;
    CHECK_OK(lt_model_load(argv[1], &mp, &m));
    CHECK_OK(lt_tokenizer_load(argv[2], &tok));
    if (!m || !tok) return lt_test_done("test_generate_batch");

    static const char *texts[NP] = {"下面是一个问题：天空为什么是蓝色的？", "Hello", "1 + 1 = ?",
                                    "请用三句话介绍一下长城。", "The quick brown fox jumps over the lazy dog."};
    int32_t *prompts[NP];
    size_t lens[NP];
    for (int i = 0; i < NP; i++) {
        prompts[i] = malloc(sizeof(int32_t) * 256);
        CHECK_OK(lt_tokenizer_encode(tok, texts[i], strlen(texts[i]), 0, prompts[i], 256, &lens[i]));
    }
    CHECK_MSG(lens[1] != lens[0] && lens[3] != lens[0], "the prompts should differ in length");
    int32_t out[NP * CAP];
    size_t n_out[NP];
    lt_generate_params gp;
    lt_generate_params_init(&gp);
    gp.stop_ids = prompts[0]; gp.n_stop_ids = 0; /* no stop id: every row runs max_new_tokens */
    const int32_t *const *pp = (const int32_t *const *)prompts;

    /* greedy, base and with an unmerged LoRA adapter */
    for (int with_lora = 0; with_lora <= 1; with_lora++) {
        if (with_lora) CHECK_OK(gen_add_random_lora(m, 0.3f));
        gp.max_new_tokens = 12;
        CHECK_OK(lt_generate_batch(m, pp, lens, NP, &gp, out, CAP, n_out));
        lt_generate_timing t;
        lt_generate_last_timing(&t);
        CHECK_MSG(t.n_seq == NP && t.n_decoded == NP * 11, "timing: %lld sequences, %lld decoded", (long long)t.n_seq,
                  (long long)t.n_decoded);
        for (int i = 0; i < NP; i++) CHECK(n_out[i] == 12);
        CHECK_MSG(!same_as_alone(m, prompts, lens, &gp, out, n_out, with_lora ? "greedy LoRA" : "greedy"),
                  "greedy batch differs from prompts alone (LoRA %d)", with_lora);
        /* and from full recomputation (no KV cache) for one row */
        int32_t want[12];
        CHECK_OK(gen_greedy_recompute(m, prompts[3], lens[3], 12, want));
        CHECK_MSG(memcmp(out + 3 * CAP, want, sizeof want) == 0, "batch row 3 differs from full recomputation");
    }

    /* seeded sampling: prompt i draws as alone with seed + i; repeats */
    gp.do_sample = 1; gp.temperature = 0.9f; gp.top_k = 50; gp.top_p = 0.95f; gp.repetition_penalty = 1.1f;
    gp.seed = 1234; gp.max_new_tokens = 20;
    CHECK_OK(lt_generate_batch(m, pp, lens, NP, &gp, out, CAP, n_out));
    CHECK_MSG(!same_as_alone(m, prompts, lens, &gp, out, n_out, "sampling"), "sampled batch differs from alone");
    {
        int32_t again[NP * CAP];
        size_t n2[NP];
        CHECK_OK(lt_generate_batch(m, pp, lens, NP, &gp, again, CAP, n2));
        int same = 1;
        for (int i = 0; i < NP; i++) same &= n2[i] == n_out[i] && !memcmp(again + i * CAP, out + i * CAP, n2[i] * 4);
        CHECK_MSG(same, "seeded batch sampling does not repeat");
        int differ = 0; /* seeds per prompt: two rows of one prompt would draw differently */
        const int32_t *twice[2] = {prompts[0], prompts[0]};
        const size_t tl[2] = {lens[0], lens[0]};
        CHECK_OK(lt_generate_batch(m, twice, tl, 2, &gp, again, CAP, n2));
        differ = n2[0] != n2[1] || memcmp(again, again + CAP, n2[0] * 4) != 0;
        CHECK_MSG(differ, "one prompt twice drew the same tokens under seeds s and s + 1");
    }

    /* a stop id ends the rows that meet it, the others go on */
    {
        int32_t stop = out[2 * CAP + 4]; /* row 2's 5th sampled token */
        gp.stop_ids = &stop; gp.n_stop_ids = 1;
        CHECK_OK(lt_generate_batch(m, pp, lens, NP, &gp, out, CAP, n_out));
        size_t lo = CAP, hi = 0;
        for (int i = 0; i < NP; i++) { if (n_out[i] < lo) lo = n_out[i]; if (n_out[i] > hi) hi = n_out[i]; }
        CHECK_MSG(n_out[2] <= 5 && out[2 * CAP + n_out[2] - 1] == stop, "row 2 did not stop at its stop id");
        CHECK_MSG(lo < hi, "every row stopped after the same count (%zu): per-sequence stops not exercised", lo);
        CHECK_MSG(!same_as_alone(m, prompts, lens, &gp, out, n_out, "stop id"), "stop-id batch differs from alone");
        gp.stop_ids = prompts[0]; gp.n_stop_ids = 0;
    }

    /* stop strings, per sequence (the text of row 1's first three tokens) */
    {
        char s1[1024];
        size_t sl = 0;
        CHECK_OK(lt_generate_batch(m, pp, lens, NP, &gp, out, CAP, n_out));
        CHECK_OK(lt_tokenizer_decode(tok, out + 1 * CAP, 3, 1, s1, sizeof s1, &sl));
        const char *ss[1] = {s1};
        gp.tokenizer = tok; gp.stop_strings = ss; gp.n_stop_strings = sl && !strstr(s1, "\xEF\xBF\xBD") ? 1 : 0;
        CHECK_OK(lt_generate_batch(m, pp, lens, NP, &gp, out, CAP, n_out));
        if (gp.n_stop_strings) CHECK_MSG(n_out[1] <= 3, "row 1 went past its stop string (%zu tokens)", n_out[1]);
        CHECK_MSG(!same_as_alone(m, prompts, lens, &gp, out, n_out, "stop strings"), "stop-string batch differs");
        gp.stop_strings = NULL; gp.n_stop_strings = 0; gp.tokenizer = NULL;
    }

    /* one prompt: the same as lt_generate */
    {
        int32_t a[CAP];
        size_t na = 0;
        CHECK_OK(lt_generate_batch(m, pp + 3, lens + 3, 1, &gp, out, CAP, n_out));
        lt_generate_params p = gp;
        CHECK_OK(lt_generate(m, prompts[3], lens[3], &p, a, CAP, &na));
        CHECK(na == n_out[0] && memcmp(a, out, na * 4) == 0);
    }

    /* bad arguments */
    {
        size_t bad_lens[NP];
        memcpy(bad_lens, lens, sizeof lens);
        bad_lens[2] = 0;
        CHECK_FAIL(lt_generate_batch(m, pp, bad_lens, NP, &gp, out, CAP, n_out), LT_ERR_INVALID_ARGUMENT,
                   "prompt 2 is empty");
        int32_t badtok[2] = {1, m->cfg.vocab_size + 3};
        const int32_t *bp[2] = {prompts[0], badtok};
        const size_t bl[2] = {lens[0], 2};
        CHECK_FAIL(lt_generate_batch(m, bp, bl, 2, &gp, out, CAP, n_out), LT_ERR_INVALID_ARGUMENT, "of prompt 1");
        CHECK_FAIL(lt_generate_batch(m, pp, lens, 0, &gp, out, CAP, n_out), LT_ERR_INVALID_ARGUMENT, "n_seq is 0");
        CHECK_FAIL(lt_generate_batch(m, pp, lens, NP, &gp, out, 4, n_out), LT_ERR_BUFFER_TOO_SMALL, "for prompt 0");
        lt_generate_params p = gp;
        p.tokenizer = tok;
        p.on_text = ignore_text;
        CHECK_FAIL(lt_generate_batch(m, pp, lens, 2, &p, out, CAP, n_out), LT_ERR_INVALID_ARGUMENT, "takes one prompt");
        CHECK_FAIL(lt_generate_batch(NULL, pp, lens, NP, &gp, out, CAP, n_out), LT_ERR_INVALID_ARGUMENT, "required");
    }
    for (int i = 0; i < NP; i++) free(prompts[i]);
    lt_model_free(m);
    lt_tokenizer_free(tok);
    return lt_test_done("test_generate_batch");
}

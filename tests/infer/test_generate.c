/* test_generate.c - generation on the CPU backend with a small random Qwen2 (made by
 * `loratune init-random`) and the real Qwen2 tokenizer: determinism of greedy and seeded
 * sampling, streaming pieces that add up to the final decode even where tokens split UTF-8
 * characters, a callback that stops, stop ids and stop strings, the repetition penalty in
 * greedy mode, KV-cache decoding equal to full recomputation with an unmerged LoRA adapter,
 * lt_generate_text through the alpaca-zh template, releasing buffers, and bad arguments. */
#include "gen_common.h"
#include "infer/infer.h"

typedef struct { char buf[65536]; size_t len; int pieces, stop_after; } sink;

static int collect(const char *piece, size_t len, int32_t token, void *ud) {
    sink *s = ud;
    if (s->len + len < sizeof s->buf) { memcpy(s->buf + s->len, piece, len); s->len += len; }
    s->pieces++;
    return s->stop_after && s->pieces >= s->stop_after;
}

static int utf8_complete(const lt_tokenizer *tok, int32_t id) {
    char b[256];
    size_t n = 0;
    if (lt_tokenizer_decode(tok, &id, 1, 1, b, sizeof b, &n) != LT_OK) return 1;
    return strstr(b, "\xEF\xBF\xBD") == NULL; /* U+FFFD: the token alone is not complete UTF-8 */
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: test_generate MODEL_DIR TOKENIZER_DIR\n"); return 2; }
    lt_model_params mp;
    lt_model_params_init(&mp);
    mp.device = LT_DEVICE_CPU;
    lt_model *m = NULL;
    lt_tokenizer *tok = NULL;
    CHECK_OK(lt_model_load(argv[1], &mp, &m));
    CHECK_OK(lt_tokenizer_load(argv[2], &tok));
    if (!m || !tok) return lt_test_done("test_generate");

    const char *text = "下面是一个问题：天空为什么是蓝色的？";
    int32_t prompt[256], a[64], b[64];
    size_t np = 0, na = 0, nb = 0;
    CHECK_OK(lt_tokenizer_encode(tok, text, strlen(text), 0, prompt, 256, &np));

    lt_generate_params gp;
    lt_generate_params_init(&gp);
    gp.max_new_tokens = 24;
    gp.stop_ids = prompt; gp.n_stop_ids = 0; /* no stop ids: always 24 tokens */
    CHECK_OK(lt_generate(m, prompt, np, &gp, a, 64, &na));
    CHECK_OK(lt_generate(m, prompt, np, &gp, b, 64, &nb));
    CHECK(na == 24 && nb == 24 && memcmp(a, b, sizeof(int32_t) * na) == 0);

    /* the greedy first token is the argmax of the prompt's last logits */
    int32_t V = 0;
    lt_model_info info = {.struct_size = sizeof info};
    CHECK_OK(lt_model_get_info(m, &info));
    V = info.vocab_size;
    float *logits = malloc(sizeof(float) * np * V);
    CHECK_OK(lt_model_logits(m, prompt, np, logits));
    int32_t best = 0;
    for (int32_t i = 1; i < V; i++) if (logits[(np - 1) * V + i] > logits[(np - 1) * V + best]) best = i;
    CHECK_MSG(best == a[0], "greedy first token %d, argmax of lt_model_logits %d", a[0], best);
    /* and the second equals the argmax after appending the first (KV cache vs full recompute) */
    int32_t ext[257];
    memcpy(ext, prompt, np * sizeof *ext);
    ext[np] = a[0];
    float *l2 = malloc(sizeof(float) * (np + 1) * V);
    CHECK_OK(lt_model_logits(m, ext, np + 1, l2));
    best = 0;
    for (int32_t i = 1; i < V; i++) if (l2[np * V + i] > l2[np * V + best]) best = i;
    CHECK_MSG(best == a[1], "greedy second token %d, full-recompute argmax %d", a[1], best);
    free(logits); free(l2);

    /* seeded sampling repeats; streaming pieces add up to the decode, also across split chars */
    int found_split = 0;
    for (uint64_t seed = 1; seed <= 12 && !found_split; seed++) {
        sink s = {0};
        gp.do_sample = 1; gp.temperature = 1.0f; gp.seed = seed; gp.max_new_tokens = 48;
        gp.tokenizer = tok; gp.on_text = collect; gp.user_data = &s;
        CHECK_OK(lt_generate(m, prompt, np, &gp, a, 64, &na));
        gp.on_text = NULL;
        CHECK_OK(lt_generate(m, prompt, np, &gp, b, 64, &nb));
        CHECK(na == nb && memcmp(a, b, sizeof(int32_t) * na) == 0);
        char dec[65536];
        size_t dl = 0;
        CHECK_OK(lt_tokenizer_decode(tok, a, na, 1, dec, sizeof dec, &dl));
        CHECK_MSG(dl == s.len && memcmp(dec, s.buf, dl) == 0, "seed %llu: streamed %zu bytes, decode %zu bytes",
                  (unsigned long long)seed, s.len, dl);
        for (size_t i = 0; i < na; i++) found_split |= !utf8_complete(tok, a[i]);
    }
    CHECK_MSG(found_split, "no sampled token split a UTF-8 character: the streaming check was not exercised");

    /* the callback stops generation */
    sink s = {0};
    s.stop_after = 3;
    gp.on_text = collect; gp.user_data = &s; gp.max_new_tokens = 40; gp.seed = 3;
    lt_status st = lt_generate(m, prompt, np, &gp, a, 64, &na);
    CHECK_MSG(st == LT_STOPPED, "callback stop gave %s", lt_status_string(st));
    CHECK(s.pieces == 3 && na < 40);

    /* a stop id ends generation and is returned */
    gp.on_text = NULL; gp.do_sample = 0; gp.max_new_tokens = 24;
    int32_t stop = b[0];
    gp.do_sample = 1; gp.seed = 1;
    CHECK_OK(lt_generate(m, prompt, np, &gp, a, 64, &na));
    stop = a[5];
    gp.stop_ids = &stop; gp.n_stop_ids = 1;
    CHECK_OK(lt_generate(m, prompt, np, &gp, b, 64, &nb));
    size_t first = 0;
    while (a[first] != stop) first++;
    CHECK_MSG(nb == first + 1 && b[nb - 1] == stop, "stop id: %zu tokens, want %zu", nb, first + 1);

    /* bad arguments */
    int32_t bad = V + 5;
    CHECK_FAIL(lt_generate(m, &bad, 1, &gp, a, 64, &na), LT_ERR_INVALID_ARGUMENT, "outside the vocabulary");
    CHECK_FAIL(lt_generate(m, prompt, 0, &gp, a, 64, &na), LT_ERR_INVALID_ARGUMENT, "prompt is empty");
    gp.stop_ids = NULL; gp.max_new_tokens = 30;
    CHECK_FAIL(lt_generate(m, prompt, np, &gp, a, 4, &na), LT_ERR_BUFFER_TOO_SMALL, "out_ids holds 4");

    /* a stop string ends generation at the token that completes it */
    gp.stop_ids = prompt; gp.n_stop_ids = 0; gp.do_sample = 1; gp.seed = 5; gp.max_new_tokens = 24;
    CHECK_OK(lt_generate(m, prompt, np, &gp, a, 64, &na));
    char prev[4096] = "", cur[4096];
    size_t want_n = 0, cl = 0;
    for (size_t j = 0; j < na && !want_n; j++) {
        CHECK_OK(lt_tokenizer_decode(tok, a, j + 1, 1, cur, sizeof cur, &cl));
        if (j >= 3 && cl > strlen(prev) && !strstr(cur, "\xEF\xBF\xBD")) want_n = j + 1;
        else snprintf(prev, sizeof prev, "%s", cur);
    }
    CHECK_MSG(want_n > 0, "no usable stop string in the sampled text");
    if (want_n) {
        const char *stops_s[2] = {"\x01never", cur};
        gp.stop_strings = stops_s; gp.n_stop_strings = 2; gp.tokenizer = tok;
        CHECK_OK(lt_generate(m, prompt, np, &gp, b, 64, &nb));
        CHECK_MSG(nb == want_n && memcmp(a, b, nb * sizeof *a) == 0, "stop string: %zu tokens, want %zu", nb, want_n);
        gp.stop_strings = NULL; gp.n_stop_strings = 0;
    }

    /* the repetition penalty applies in greedy mode too (transformers' semantics) */
    gp.do_sample = 0; gp.max_new_tokens = 1; gp.repetition_penalty = 1.7f;
    CHECK_OK(lt_generate(m, prompt, np, &gp, a, 64, &na));
    {
        float *lg = malloc(sizeof(float) * np * V), *last;
        CHECK_OK(lt_model_logits(m, prompt, np, lg));
        last = lg + (np - 1) * V;
        unsigned char *seen = calloc(V, 1);
        for (size_t i = 0; i < np; i++) {
            int32_t t = prompt[i];
            if (seen[t]) continue;
            seen[t] = 1;
            last[t] = last[t] < 0 ? last[t] * 1.7f : last[t] / 1.7f;
        }
        CHECK_MSG(na == 1 && a[0] == gen_argmax(last, V), "penalised greedy token %d, want %d", a[0], gen_argmax(last, V));
        free(seen); free(lg);
    }
    gp.repetition_penalty = 1.0f;

    /* lt_generate_text = template + encode + lt_generate + decode */
    {
        char *txt = NULL;
        size_t nt = 0;
        gp.max_new_tokens = 12; gp.do_sample = 1; gp.seed = 9; gp.on_text = NULL;
        CHECK_OK(lt_generate_text(m, tok, "alpaca-zh", "只用中文回答问题", "", &gp, &txt, &nt));
        char rendered[4096], dec[4096];
        size_t rl = 0, dl = 0, n2 = 0;
        int32_t ids2[1024];
        CHECK_OK(lt_template_render("alpaca-zh", "只用中文回答问题", "", "", rendered, sizeof rendered, &rl));
        CHECK_OK(lt_tokenizer_encode(tok, rendered, rl, 0, ids2, 1024, &n2));
        gp.tokenizer = NULL;
        CHECK_OK(lt_generate(m, ids2, n2, &gp, a, 64, &na));
        CHECK_OK(lt_tokenizer_decode(tok, a, na, 1, dec, sizeof dec, &dl));
        CHECK_MSG(txt && nt == na && strcmp(txt, dec) == 0, "lt_generate_text gave '%s' (%zu tokens), want '%s' (%zu)",
                  txt ? txt : "(null)", nt, dec, na);
        free(txt);
    }

    /* an unmerged LoRA adapter: KV-cache greedy decoding equals full recomputation */
    CHECK_OK(gen_add_random_lora(m, 0.3f));
    {
        int32_t want[8];
        gp.do_sample = 0; gp.max_new_tokens = 8; gp.stop_ids = prompt; gp.n_stop_ids = 0;
        CHECK_OK(lt_generate(m, prompt, np, &gp, a, 64, &na));
        CHECK_OK(gen_greedy_recompute(m, prompt, np, 8, want));
        CHECK_MSG(na == 8 && memcmp(a, want, sizeof want) == 0, "LoRA greedy differs from full recomputation");
        CHECK_OK(lt_model_set_lora_enabled(m, 0));
        CHECK_OK(lt_generate(m, prompt, np, &gp, b, 64, &nb));
        CHECK_OK(gen_greedy_recompute(m, prompt, np, 8, want));
        CHECK_MSG(nb == 8 && memcmp(b, want, sizeof want) == 0, "LoRA-disabled greedy differs from recomputation");
        CHECK_OK(lt_model_set_lora_enabled(m, 1));
    }

    /* inference mode: the graph's buffers go, and come back when needed */
    CHECK_OK(lt_model_release_buffers(m));
    CHECK_OK(lt_model_release_buffers(m));
    CHECK_OK(lt_generate(m, prompt, np, &gp, a, 64, &na));
    {
        float *lg = malloc(sizeof(float) * np * V);
        CHECK_OK(lt_model_logits(m, prompt, np, lg));
        free(lg);
    }
    CHECK_FAIL(lt_model_release_buffers(NULL), LT_ERR_INVALID_ARGUMENT, "NULL");

    lt_model_free(m);
    lt_tokenizer_free(tok);
    return lt_test_done("test_generate");
}

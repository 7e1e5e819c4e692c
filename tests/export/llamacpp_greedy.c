/* llamacpp_greedy.c - a small client of llama.cpp's libllama for the llama.cpp parity check
 * (tests/export/llamacpp_parity.py compiles it against a llama.cpp build; it is never part of
 * the loratune build). It loads one GGUF (optionally with a GGUF LoRA adapter at scale 1),
 * then answers requests read from stdin, one per line:
 *   G n DUMP id id ... greedy-decode n tokens after the given prompt ids (KV cache cleared
 *                      first); prints {"ids":[...],"top1":[...],"margin":[...]} where margin
 *                      is llama.cpp's own top-1 minus top-2 logit at each step; unless DUMP
 *                      is "-", the logits of every step go to the file DUMP ([n][n_vocab] f32).
 *   T hexbytes         tokenizes the UTF-8 text (hex-encoded, so newlines survive) the way
 *                      llama-simple does (add_special, parse_special); prints {"ids":[...]}.
 * Prompt ids come from loratune's tokenizer so the model comparison does not depend on
 * tokenization; the T request checks tokenization on its own.
 * usage: llamacpp_greedy MODEL.gguf THREADS [LORA.gguf]
 * Built with -DLT_LLAMA_MEMORY_API / -DLT_LLAMA_SET_ADAPTERS against a llama.h that has
 * llama_memory_clear / llama_set_adapters_lora (llamacpp_parity.py looks).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llama.h"

static void quiet_log(enum ggml_log_level level, const char *text, void *ud) {
    (void)ud;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf THREADS [LORA.gguf]\n", argv[0]);
        return 2;
    }
    int threads = atoi(argv[2]);
    llama_log_set(quiet_log, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "%s: llama.cpp could not load the model\n", argv[1]); return 1; }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int n_vocab = llama_vocab_n_tokens(vocab);

    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 1024;
    cp.n_batch = 1024;
    cp.n_ubatch = 1024;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.no_perf = true;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "llama.cpp could not create a context\n"); return 1; }
    if (argc > 3) {
        struct llama_adapter_lora *ad = llama_adapter_lora_init(model, argv[3]);
#ifdef LT_LLAMA_SET_ADAPTERS
        float scale = 1.0f;
        if (!ad || llama_set_adapters_lora(ctx, &ad, 1, &scale) != 0) {
#else
        if (!ad || llama_set_adapter_lora(ctx, ad, 1.0f) != 0) {
#endif
            fprintf(stderr, "%s: llama.cpp could not load / apply the LoRA adapter\n", argv[3]);
            return 1;
        }
    }

    static char line[1 << 20];
    static llama_token ids[1024];
    while (fgets(line, sizeof line, stdin)) {
        if (line[0] == 'T') {
            static char text[1 << 19];
            size_t n = 0;
            for (const char *p = line + 2; hexval(p[0]) >= 0 && hexval(p[1]) >= 0; p += 2)
                text[n++] = (char)(hexval(p[0]) * 16 + hexval(p[1]));
            int k = llama_tokenize(vocab, text, (int32_t)n, ids, 1024, true, true);
            printf("{\"ids\":[");
            for (int i = 0; i < k; i++) printf("%s%d", i ? "," : "", ids[i]);
            printf("]}\n");
            fflush(stdout);
            continue;
        }
        if (line[0] != 'G') continue;
        char *p = line + 1, *end;
        int n_new = (int)strtol(p, &end, 10);
        if (n_new < 0) n_new = 0;
        if (n_new > 512) n_new = 512;
        p = end;
        while (*p == ' ') p++;
        char dump_path[4096];
        size_t dl = strcspn(p, " \n");
        if (dl == 0 || dl >= sizeof dump_path) dl = 0;
        memcpy(dump_path, dl ? p : "-", dl ? dl : 1);
        dump_path[dl ? dl : 1] = 0;
        p += dl;
        FILE *dump = strcmp(dump_path, "-") ? fopen(dump_path, "wb") : NULL;
        int n = 0;
        for (;;) {
            long v = strtol(p, &end, 10);
            if (end == p) break;
            if (n < 1024 - n_new) ids[n++] = (llama_token)v;
            p = end;
        }
#ifdef LT_LLAMA_MEMORY_API
        llama_memory_clear(llama_get_memory(ctx), true);
#else
        llama_kv_cache_clear(ctx);
#endif
        printf("{\"ids\":[");
        struct llama_batch batch = llama_batch_get_one(ids, n);
        float top1s[1024], margins[1024];
        int rc = 0, done = 0;
        for (int t = 0; t < n_new; t++, done++) {
            if ((rc = llama_decode(ctx, batch)) != 0) break;
            const float *lg = llama_get_logits_ith(ctx, -1);
            if (dump) fwrite(lg, sizeof(float), (size_t)n_vocab, dump);
            int best = 0;
            for (int v = 1; v < n_vocab; v++) if (lg[v] > lg[best]) best = v;
            float second = -1e30f;
            for (int v = 0; v < n_vocab; v++) if (v != best && lg[v] > second) second = lg[v];
            top1s[t] = lg[best];
            margins[t] = lg[best] - second;
            printf("%s%d", t ? "," : "", best);
            ids[n + t] = best;
            batch = llama_batch_get_one(&ids[n + t], 1);
        }
        if (dump) fclose(dump);
        printf("],\"top1\":[");
        for (int t = 0; t < done; t++) printf("%s%.6g", t ? "," : "", top1s[t]);
        printf("],\"margin\":[");
        for (int t = 0; t < done; t++) printf("%s%.6g", t ? "," : "", margins[t]);
        printf("],\"rc\":%d}\n", rc);
        fflush(stdout);
    }
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}

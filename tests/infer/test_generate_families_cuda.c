/* test_generate_families_cuda.c - the fused CUDA decoder (cuda/decode.cu) on every model-family
 * fixture (tests/fixtures/families: Llama 3 rope scaling, Mistral's sliding window, Qwen2 with
 * yarn rope and biases, Qwen3's q/k norms, Gemma 2 and 3 - (1 + w) norms, post-norms, GELU-tanh,
 * embedding scale, score scale, soft-caps, sliding layers, rope per layer type - and Phi-3's fused
 * qkv_proj / gate_up_proj), on an NF4 base (the CPU rounds its weights through NF4 the same way)
 * and on a 16-bit one (the CPU keeps f32), without and with the fixture's PEFT adapter (unmerged):
 * - the decoder is created for the family (no fallback to the backend ops) and, teacher-forced
 *   along the CPU's greedy sequence, its logits at every step are within bf16 tolerance of the
 *   CPU's at that position: relative L2 error <= max(2e-2, 1.5 x that of the backend-ops decode
 *   of the same CUDA model, the yardstick of bf16 on these tiny random models); its on-device
 *   argmax is the argmax of the logits it returns;
 * - lt_generate on CUDA says the fused decoder ran, each greedy token it picks is the CPU argmax
 *   within max(0.05, 1.5 x the backend-ops decode's) logit std along its sequence, and graph
 *   replay equals plain launches;
 * - the fixture's three sequences generated as one batch give exactly each one's tokens alone.
 * The same for each model folder given as an argument, DIR[:RANK] (random checkpoints of real
 * head dims 64-256, longrope across its switch, LoRA ranks up to 128: tests/infer/decode_shapes/,
 * made with `loratune init-random`), with a random adapter of that rank.
 * Skips (77) without a GPU or in a build without the CUDA backend. */
#include "gen_common.h"
#include "infer/infer.h"
#include "model/graph.h"
#include "io/safetensors.h"
#ifdef LT_HAVE_CUDA
#include "../../cuda/decode.h"
#endif

#define NEW 24
#define MAXP 64

#ifdef LT_HAVE_CUDA
static double rel_l2(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static int greedy(lt_model *m, const int32_t *prompt, size_t np, int n, int32_t *out) {
    lt_generate_params gp;
    lt_generate_params_init(&gp);
    gp.max_new_tokens = n;
    gp.stop_ids = prompt; gp.n_stop_ids = 0; /* no stop id: n tokens */
    size_t no = 0;
    lt_status st = lt_generate(m, prompt, np, &gp, out, (size_t)n, &no);
    if (st != LT_OK) fprintf(stderr, "generate: %s\n", lt_last_error());
    return st == LT_OK && no == (size_t)n;
}

/* The decode steps of `full` (np prompt ids then n more) on model m, teacher-forced: the prompt
 * prefilled into fresh caches, then ids np .. np+n-2 one at a time, by the fused decoder (fused)
 * or through the layers (the backend ops); the worst relative L2 error of a step's logits against
 * the CPU logits cpu_lg [np+n-1, V] of that position, or a negative number (with a message) when
 * something failed. With rows (and cpu_lg NULL) nothing is compared: the logits of positions
 * np-1 .. np+n-2 (the prefill's last, then each step's) go to rows [np+n-1, V] instead, which on
 * the CPU model is the reference: KV-cached decoding as lt_generate does it (the same as one
 * pass over the whole sequence, except across longrope's switch, where each key keeps the factors
 * of the length it was cached at, as in transformers' generate). */
static double forced_err(lt_model *m, const int32_t *full, size_t np, int n, const float *cpu_lg, int fused,
                         const char *tag, float *rows) {
    lt_backend *be = m->be;
    const lt_config *c = &m->cfg;
    const int L = c->num_layers;
    const int64_t V = c->vocab_size, max_len = (int64_t)np + n;
    const size_t kvb = (size_t)max_len * (size_t)c->num_kv_heads * (size_t)c->head_dim * (size_t)be->act_bytes;
    void **kc = calloc((size_t)L, sizeof *kc), **vc = calloc((size_t)L, sizeof *vc);
    float *dlog = NULL, *hl = malloc(sizeof(float) * (size_t)V);
    void *dec = NULL;
    double worst = -1;
    lt_status st = kc && vc && hl ? LT_OK : LT_ERR_OUT_OF_MEMORY;
    for (int l = 0; l < L && st == LT_OK; l++) {
        st = be->ops.alloc(be, kvb, &kc[l]);
        if (st == LT_OK) st = be->ops.alloc(be, kvb, &vc[l]);
    }
    if (st == LT_OK) st = be->ops.alloc(be, (size_t)V * 4, (void **)&dlog);
    if (st == LT_OK) st = lt_graph_forward_cached(m, full, (int64_t)np, 0, kc, vc, dlog, hl);
    if (st == LT_OK && rows) memcpy(rows + (np - 1) * (size_t)V, hl, sizeof(float) * (size_t)V);
    if (st == LT_OK && fused) {
        st = be->ops.decoder_create_batch(be, m, 1, kc, vc, max_len, &dec);
        if (st != LT_OK) fprintf(stderr, "[%s] no fused decoder for the model: %s\n", tag, lt_last_error());
    }
    if (st == LT_OK) worst = 0;
    for (int i = 0; st == LT_OK && i + 1 < n; i++) {
        const int64_t pos = (int64_t)np + i;
        int32_t am = -1;
        if (fused) st = be->ops.decoder_step_batch(be, dec, &full[pos], &pos, hl, &am);
        else st = lt_graph_forward_cached(m, &full[pos], 1, pos, kc, vc, dlog, hl);
        if (st != LT_OK) break;
        if (rows) {
            memcpy(rows + (size_t)pos * (size_t)V, hl, sizeof(float) * (size_t)V);
            continue;
        }
        const double e = rel_l2(hl, cpu_lg + (size_t)pos * (size_t)V, V);
        if (isnan(e) || e > worst) worst = e; /* a NaN stays */
        if (fused && am != gen_argmax(hl, (int32_t)V)) {
            fprintf(stderr, "[%s] step %d: the decoder's argmax %d is not the argmax %d of its logits\n", tag, i, am,
                    gen_argmax(hl, (int32_t)V));
            worst = INFINITY;
        }
    }
    if (st != LT_OK) {
        if (worst >= 0) fprintf(stderr, "[%s] %s decode step: %s\n", tag, fused ? "fused" : "backend-ops", lt_last_error());
        else if (!dec && !fused) fprintf(stderr, "[%s] prefill: %s\n", tag, lt_last_error());
        worst = -1;
    }
    if (dec) be->ops.decoder_free(be, dec);
    if (dlog) be->ops.free(be, dlog);
    for (int l = 0; l < L; l++) {
        if (kc && kc[l]) be->ops.free(be, kc[l]);
        if (vc && vc[l]) be->ops.free(be, vc[l]);
    }
    free(kc);
    free(vc);
    free(hl);
    return worst;
}

/* gen_worst_gap with the CPU's KV-cached logits along prompt + toks (NEW tokens; rows: scratch
 * of [np+NEW, V]) */
static double cached_gap(lt_model *cpu, const int32_t *prompt, size_t np, const int32_t *toks, float *rows,
                         int *exact, const char *tag) {
    int32_t seq[MAXP + NEW];
    memcpy(seq, prompt, np * sizeof *seq);
    memcpy(seq + np, toks, NEW * sizeof *seq);
    if (forced_err(cpu, seq, np, NEW, NULL, 0, tag, rows) != 0) {
        *exact = 0;
        return INFINITY;
    }
    return gen_gaps(rows + (np - 1) * (size_t)cpu->cfg.vocab_size, toks, NEW, cpu->cfg.vocab_size, exact);
}

/* One CPU model and its CUDA twin with the same weights (and adapter, if any): the three prompts'
 * checks of the file comment under `tag`. */
static void check_pair(lt_model *cpu, lt_model *gpu, const int32_t *const *prompts, const size_t *lens,
                       const char *tag) {
    const int32_t V = cpu->cfg.vocab_size;
    const size_t np = lens[0];
    CHECK(np > 0 && np <= MAXP);
    if (!(np > 0 && np <= MAXP)) return;
    int32_t full[MAXP + NEW], c_fast[NEW], c_ops[NEW], c_nograph[NEW];
    float *cpu_lg = malloc(sizeof(float) * (MAXP + NEW) * (size_t)V);
    CHECK(cpu_lg != NULL);
    if (!cpu_lg) return;
    /* the CPU's greedy sequence and its logits at every position it generated, KV-cached */
    memcpy(full, prompts[0], np * sizeof *full);
    CHECK(greedy(cpu, prompts[0], np, NEW, full + np));
    CHECK_MSG(forced_err(cpu, full, np, NEW, NULL, 0, tag, cpu_lg) == 0, "[%s] the CPU's cached decode failed", tag);

    /* teacher-forced logits: the fused decoder and the backend ops against the CPU */
    const double e_fused = forced_err(gpu, full, np, NEW, cpu_lg, 1, tag, NULL);
    const double e_ops = forced_err(gpu, full, np, NEW, cpu_lg, 0, tag, NULL);
    const double e_tol = fmax(2e-2, 1.5 * e_ops);
    printf("[%s] teacher-forced logits vs CPU, relative L2: fused decoder %.3g, backend-ops decode %.3g "
           "(allowed %.3g)\n", tag, e_fused, e_ops, e_tol);
    CHECK_MSG(e_fused >= 0 && e_ops >= 0, "[%s] a decode failed (see above)", tag);
    CHECK_MSG(e_fused >= 0 && e_fused <= e_tol, "[%s] fused decoder logits off the CPU: %.3g (allowed %.3g)", tag,
              e_fused, e_tol);

    /* lt_generate: the fused decoder runs and picks the CPU's argmax within tolerance */
    lt_generate_set_fast_decode(1);
    CHECK(greedy(gpu, prompts[0], np, NEW, c_fast));
    lt_generate_timing t;
    lt_generate_last_timing(&t);
    CHECK_MSG(t.fast_decode == 1, "[%s] lt_generate fell back to the backend ops instead of the fused decoder",
              tag);
    lt_cuda_decoder_use_graphs(0);
    CHECK(greedy(gpu, prompts[0], np, NEW, c_nograph));
    lt_cuda_decoder_use_graphs(1);
    CHECK_MSG(memcmp(c_fast, c_nograph, sizeof c_fast) == 0, "[%s] graph replay differs from plain launches", tag);
    lt_generate_set_fast_decode(0);
    CHECK(greedy(gpu, prompts[0], np, NEW, c_ops));
    lt_generate_set_fast_decode(1);
    int ex_fast = 0, ex_ops = 0;
    const double g_fast = cached_gap(cpu, prompts[0], np, c_fast, cpu_lg, &ex_fast, tag);
    const double g_ops = cached_gap(cpu, prompts[0], np, c_ops, cpu_lg, &ex_ops, tag);
    const double g_tol = fmax(0.05, 1.5 * g_ops);
    printf("[%s] greedy: fused decoder %d/%d leading tokens = CPU, worst gap %.4f std; backend ops %d/%d, "
           "%.4f std (allowed %.4f)\n", tag, ex_fast, NEW, g_fast, ex_ops, NEW, g_ops, g_tol);
    CHECK_MSG(g_fast <= g_tol, "[%s] a fused-decoder token is %.4f logit std below the CPU argmax", tag, g_fast);

    /* the three sequences as one batch: each row as alone */
    lt_generate_params gp;
    lt_generate_params_init(&gp);
    gp.max_new_tokens = NEW;
    gp.stop_ids = prompts[0]; gp.n_stop_ids = 0;
    int32_t out[3 * NEW], alone[NEW];
    size_t n_out[3] = {0, 0, 0}, na = 0;
    CHECK_OK(lt_generate_batch(gpu, prompts, lens, 3, &gp, out, NEW, n_out));
    lt_generate_last_timing(&t);
    CHECK_MSG(t.fast_decode == 1 && t.n_seq == 3, "[%s] the batched fused decoder was not used", tag);
    for (int s = 0; s < 3; s++) {
        CHECK_OK(lt_generate(gpu, prompts[s], lens[s], &gp, alone, NEW, &na));
        CHECK_MSG(na == (size_t)NEW && n_out[s] == (size_t)NEW && memcmp(alone, out + s * NEW, sizeof alone) == 0,
                  "[%s] batched row %d differs from the sequence decoded alone", tag, s);
    }
    free(cpu_lg);
}

/* dir's model on the CPU (f32) and on CUDA (bf16), with base `quant` */
static int load_pair(const char *dir, int quant, lt_model **cpu, lt_model **gpu) {
    lt_model_params mp;
    lt_model_params_init(&mp);
    mp.quant = quant;
    mp.device = LT_DEVICE_CPU;
    *cpu = *gpu = NULL;
    CHECK_OK(lt_model_load(dir, &mp, cpu));
    mp.device = LT_DEVICE_CUDA;
    mp.compute_dtype = LT_DTYPE_BF16;
    CHECK_OK(lt_model_load(dir, &mp, gpu));
    if (*cpu && *gpu) return 1;
    lt_model_free(*cpu);
    lt_model_free(*gpu);
    *cpu = *gpu = NULL;
    return 0;
}

/* one family, one base (NF4 or 16-bit), without and with its adapter */
static void check_family(const char *fam, int quant) {
    char dir[512], path[700], tag[96];
    const char *root = getenv("LT_REPO_ROOT"); /* a binary run from a copy of the tree elsewhere */
    snprintf(dir, sizeof dir, "%s/tests/fixtures/families/%s", root && *root ? root : LT_REPO_ROOT, fam);
    const char *qn = quant == LT_QUANT_NF4 ? "nf4" : "16-bit";
    lt_model *cpu, *gpu;
    if (!load_pair(dir, quant, &cpu, &gpu)) return;
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    lt_st_set *ex = NULL;
    CHECK_OK(lt_st_open_file(path, &ex));
    const lt_st_tensor *tid = ex ? lt_st_find(ex, "ids") : NULL, *tcu = ex ? lt_st_find(ex, "cu_seqlens") : NULL;
    CHECK_MSG(tid && tcu && tcu->numel == 4, "%s: ids and cu_seqlens of 3 sequences", path);
    if (tid && tcu && tcu->numel == 4) {
        const int32_t *ids = (const int32_t *)tid->data, *cu = (const int32_t *)tcu->data;
        const int32_t *prompts[3];
        size_t lens[3];
        for (int s = 0; s < 3; s++) {
            prompts[s] = ids + cu[s];
            lens[s] = (size_t)(cu[s + 1] - cu[s]);
        }
        for (int with_lora = 0; with_lora <= 1; with_lora++) {
            snprintf(tag, sizeof tag, "%s %s %s", fam, qn, with_lora ? "LoRA" : "base");
            if (with_lora) {
                snprintf(path, sizeof path, "%s/adapter", dir);
                CHECK_OK(lt_model_load_adapter(cpu, path));
                CHECK_OK(lt_model_load_adapter(gpu, path));
            }
            check_pair(cpu, gpu, prompts, lens, tag);
        }
    }
    lt_st_close(ex);
    lt_model_free(cpu);
    lt_model_free(gpu);
}

/* A model folder given on the command line as DIR[:RANK] (a random checkpoint of a real head dim,
 * rope kind or LoRA rank that the tiny fixtures lack: tests/infer/decode_shapes/), one base, without
 * and with a random adapter of rank RANK (default 16; B ~ U(-0.05, 0.05)); three prompts of 13, 31
 * and 22 ids: 13 + NEW positions cross the shapes' windows of 16 and longrope's switch at 16. */
static void check_shape(const char *arg, int quant) {
    char dir[512], tag[96];
    snprintf(dir, sizeof dir, "%s", arg);
    int rank = 16;
    char *colon = strrchr(dir, ':');
    if (colon) {
        rank = atoi(colon + 1);
        *colon = 0;
    }
    const char *base = strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir;
    lt_model *cpu, *gpu;
    if (!load_pair(dir, quant, &cpu, &gpu)) return;
    const int32_t V = cpu->cfg.vocab_size;
    static const size_t lens[3] = {13, 31, 22};
    int32_t ids[3][31];
    const int32_t *prompts[3];
    uint32_t s = 2024;
    for (int q = 0; q < 3; q++) {
        for (size_t i = 0; i < lens[q]; i++) {
            s = s * 1664525u + 1013904223u;
            ids[q][i] = 3 + (int32_t)((s >> 8) % (uint32_t)(V - 3));
        }
        prompts[q] = ids[q];
    }
    for (int with_lora = 0; with_lora <= 1; with_lora++) {
        snprintf(tag, sizeof tag, "%.48s %s %s", base, quant == LT_QUANT_NF4 ? "nf4" : "16-bit",
                 with_lora ? "LoRA" : "base");
        if (with_lora) {
            CHECK_OK(gen_add_random_lora_r(cpu, rank, 0.05f));
            CHECK_OK(gen_add_random_lora_r(gpu, rank, 0.05f));
            snprintf(tag + strlen(tag), sizeof tag - strlen(tag), " r=%d", rank);
        }
        check_pair(cpu, gpu, prompts, lens, tag);
    }
    lt_model_free(cpu);
    lt_model_free(gpu);
}
#endif

int main(int argc, char **argv) {
#ifndef LT_HAVE_CUDA
    (void)argc; (void)argv;
    LT_TEST_SKIP("this build has no CUDA backend");
#else
    if (lt_cuda_device_count() <= 0) LT_TEST_SKIP("no CUDA device");
    static const char *const fams[] = {"llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"};
    for (size_t i = 0; i < sizeof fams / sizeof fams[0]; i++) {
        check_family(fams[i], LT_QUANT_NF4);
        check_family(fams[i], LT_QUANT_NONE);
    }
    for (int i = 1; i < argc; i++) {
        check_shape(argv[i], LT_QUANT_NF4);
        check_shape(argv[i], LT_QUANT_NONE);
    }
    return lt_test_done("test_generate_families_cuda");
#endif
}

/* test_families.c - every model family against transformers + PEFT (tests/fixtures/families,
 * made by make_family_fixtures.py): for Llama (llama3 rope scaling), Mistral (sliding window),
 * Qwen2 (yarn rope scaling), Qwen3 (q/k norms, explicit head_dim), Gemma 2 (soft-capping,
 * alternating sliding layers), Gemma 3 (q/k norms, per-layer-type rope with linear scaling) and
 * Phi-3 (fused qkv_proj / gate_up_proj, sliding window), on the CPU backend in fp32:
 *   - logits with and without the PEFT adapter (relative error <= 1e-4);
 *   - the batch loss and every LoRA gradient of a packed batch (<= 1e-3 relative), with and
 *     without gradient checkpointing (bit for bit);
 *   - 32 greedy tokens with and without the adapter equal to transformers' generate;
 *   - the adapter both ways: the PEFT file loads, and the adapter loratune saves has PEFT's keys,
 *     shapes and target_modules and the same bits, and loads back to the same logits. */
#include "lt_test.h"
#include "model/graph.h"
#include "data/dataset.h"
#include "io/safetensors.h"
#include "core/core.h"
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

/* the repository (LT_REPO_ROOT in the environment, for a binary run from a copy of the tree on
 * another machine) and a folder for temporary files */
static const char *repo_root(void) {
    const char *e = getenv("LT_REPO_ROOT");
    return e && *e ? e : LT_REPO_ROOT;
}
static const char *tmp_dir(void) { return lt_dir_exists(LT_BUILD_DIR) ? LT_BUILD_DIR : "/tmp"; }

static double rel_err_(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static const lt_st_tensor *want(const lt_st_set *s, const char *key, int dtype) {
    const lt_st_tensor *t = lt_st_find(s, key);
    if (!t || t->dtype != dtype) {
        fprintf(stderr, "expected tensor %s missing or of another dtype\n", key);
        exit(1);
    }
    return t;
}

static float *download(lt_model *m, const float *src, int64_t n) {
    float *h = malloc((size_t)n * 4);
    if (m->be->ops.download(m->be, h, src, (size_t)n * 4) != LT_OK) exit(1);
    return h;
}

static void lora_key(const lt_config *c, char *buf, size_t cap, const char *prefix, int l, int p, int is_b) {
    snprintf(buf, cap, "%sbase_model.model.model.layers.%d.%s.%s.lora_%c.weight", prefix, l, lt_proj_parent[p],
             lt_proj_name(c, p), is_b ? 'B' : 'A');
}

/* every attached LoRA gradient against grad.<key>; returns the number checked */
static int check_grads(const char *fam, lt_model *m, const lt_st_set *ex, double *worst) {
    int n_checked = 0;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++)
            for (int isb = 0; isb < 2; isb++) {
                lt_lora_tensor *t = &m->layers[l].lora[p];
                if (!t->A) continue;
                char key[256];
                lora_key(&m->cfg, key, sizeof key, "grad.", l, p, isb);
                const lt_st_tensor *w = want(ex, key, LT_ST_F32);
                int64_t n = isb ? t->out * t->r : t->r * t->in;
                CHECK_MSG(w->numel == n, "%s: %s has %lld values, the model's %lld", fam, key, (long long)w->numel,
                          (long long)n);
                if (w->numel != n) continue;
                float *got = download(m, isb ? t->dB : t->dA, n);
                double e = rel_err_(got, (const float *)w->data, (size_t)n);
                if (e > *worst) *worst = e;
                CHECK_MSG(e <= 1e-3, "%s: gradient of %s: relative error %g", fam, key + 5, e);
                n_checked++;
                free(got);
            }
    return n_checked;
}

static void zero_grads(lt_model *m, int layer, int proj, lt_lora_tensor *t, void *ctx) {
    (void)layer; (void)proj; (void)ctx;
    m->be->ops.memset0(m->be, t->dA, (size_t)(t->r * t->in) * 4);
    m->be->ops.memset0(m->be, t->dB, (size_t)(t->out * t->r) * 4);
}

static void greedy(const char *fam, lt_model *m, const int32_t *prompt, size_t np, const lt_st_tensor *ref,
                   const char *what) {
    lt_generate_params gp;
    lt_generate_params_init(&gp);
    gp.max_new_tokens = (int32_t)ref->numel;
    gp.stop_ids = prompt;
    gp.n_stop_ids = 0; /* transformers generated without a stop token */
    int32_t out[64];
    size_t n = 0;
    CHECK_OK(lt_generate(m, prompt, np, &gp, out, 64, &n));
    const int32_t *w = (const int32_t *)ref->data;
    int same = n == (size_t)ref->numel;
    size_t first = 0;
    for (size_t i = 0; same && i < n; i++)
        if (out[i] != w[i]) { same = 0; first = i; }
    printf("%s: greedy %zu tokens %s: %s\n", fam, n, what, same ? "equal to transformers" : "DIFFER");
    CHECK_MSG(same, "%s: greedy (%s) differs from transformers at token %zu (%d vs %d)", fam, what, first,
              first < n ? out[first] : -1, w[first]);
}

/* the adapter loratune writes: PEFT's keys, shapes, bits and target_modules; reloads equal */
static void adapter_round_trip(const char *fam, lt_model *m, const char *peft_dir, const int32_t *ids, size_t n,
                               const float *logits_before) {
    char dir[512], path[1024], ppath[1024];
    snprintf(dir, sizeof dir, "%s/test_families.%d.%s", tmp_dir(), (int)getpid(), fam);
    CHECK_OK(lt_model_save_adapter(m, dir, 1));
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    snprintf(ppath, sizeof ppath, "%s/adapter_model.safetensors", peft_dir);
    lt_st_set *ours = NULL, *theirs = NULL;
    CHECK_OK(lt_st_open_file(path, &ours));
    CHECK_OK(lt_st_open_file(ppath, &theirs));
    if (!ours || !theirs) return;
    CHECK_MSG(lt_st_count(ours) == lt_st_count(theirs), "%s: %zu tensors saved, PEFT's file has %zu", fam,
              lt_st_count(ours), lt_st_count(theirs));
    int same = 1;
    for (size_t i = 0; i < lt_st_count(theirs); i++) {
        const lt_st_tensor *t = lt_st_at(theirs, i), *o = lt_st_find(ours, t->name);
        if (!o || o->numel != t->numel || o->ndim != t->ndim || memcmp(o->shape, t->shape, sizeof(int64_t) * 2) ||
            o->dtype != t->dtype || memcmp(o->data, t->data, t->nbytes)) {
            same = 0;
            fprintf(stderr, "%s: saved tensor %s differs from PEFT's\n", fam, t->name);
        }
    }
    CHECK_MSG(same, "%s: the saved adapter differs from the PEFT adapter it was loaded from", fam);
    /* target_modules as PEFT lists them (as sets) */
    json_error_t je;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    snprintf(ppath, sizeof ppath, "%s/adapter_config.json", peft_dir);
    json_t *a = json_load_file(path, 0, &je), *b = json_load_file(ppath, 0, &je);
    json_t *ta = json_object_get(a, "target_modules"), *tb = json_object_get(b, "target_modules");
    int tm_same = json_is_array(ta) && json_is_array(tb) && json_array_size(ta) == json_array_size(tb);
    for (size_t i = 0; tm_same && i < json_array_size(tb); i++) {
        int found = 0;
        for (size_t k = 0; k < json_array_size(ta); k++)
            found |= json_equal(json_array_get(ta, k), json_array_get(tb, i));
        tm_same &= found;
    }
    CHECK_MSG(tm_same, "%s: target_modules differ from PEFT's", fam);
    json_decref(a);
    json_decref(b);
    /* and it loads back to the same logits */
    CHECK_OK(lt_model_load_adapter(m, dir));
    float *lg = malloc(sizeof(float) * n * (size_t)m->cfg.vocab_size);
    CHECK_OK(lt_model_logits(m, ids, n, lg));
    CHECK_MSG(!memcmp(lg, logits_before, sizeof(float) * n * (size_t)m->cfg.vocab_size),
              "%s: logits after reloading the saved adapter differ", fam);
    printf("%s: adapter saved (%zu tensors, PEFT's keys and bits, target_modules %s) and reloaded\n", fam,
           lt_st_count(theirs), tm_same ? "equal" : "DIFFER");
    free(lg);
    lt_st_close(ours);
    lt_st_close(theirs);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

static void check_family(const char *fam, const char *arch) {
    char dir[512], adir[600], epath[600];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/families/%s", repo_root(), fam);
    snprintf(adir, sizeof adir, "%s/adapter", dir);
    snprintf(epath, sizeof epath, "%s/expected.safetensors", dir);
    lt_model_params mp;
    lt_model_params_init(&mp);
    mp.device = LT_DEVICE_CPU;
    mp.quant = LT_QUANT_NONE;
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(dir, &mp, &m));
    if (!m) return;
    CHECK_MSG(!strcmp(m->cfg.architecture, arch), "%s: architecture %s", fam, m->cfg.architecture);
    CHECK_OK(lt_model_load_adapter(m, adir));
    lt_st_set *ex = NULL;
    CHECK_OK(lt_st_open_file(epath, &ex));
    if (!ex) { lt_model_free(m); return; }
    const lt_st_tensor *tid = want(ex, "ids", LT_ST_I32), *tcu = want(ex, "cu_seqlens", LT_ST_I32);
    const int32_t *ids = (const int32_t *)tid->data, *cu = (const int32_t *)tcu->data;
    const int32_t *labels = (const int32_t *)want(ex, "labels", LT_ST_I32)->data;
    const lt_st_tensor *tl = want(ex, "logits", LT_ST_F32), *tlb = want(ex, "logits_base", LT_ST_F32);
    const int nseq = (int)tcu->numel - 1;
    const int64_t V = m->cfg.vocab_size;
    CHECK(tl->numel == tid->numel * V);
    float *logits = malloc((size_t)tl->numel * 4);
    for (int pass = 0; pass < 2; pass++) {
        CHECK_OK(lt_model_set_lora_enabled(m, pass == 0));
        for (int s = 0; s < nseq; s++)
            CHECK_OK(lt_model_logits(m, ids + cu[s], (size_t)(cu[s + 1] - cu[s]), logits + (size_t)cu[s] * V));
        double e = rel_err_(logits, (const float *)(pass == 0 ? tl : tlb)->data, (size_t)tl->numel);
        printf("%s: logits (%s) relative error %.3g\n", fam, pass == 0 ? "LoRA" : "base", e);
        CHECK_MSG(e <= 1e-4, "%s: logits (%s) relative error %g", fam, pass == 0 ? "LoRA" : "base", e);
    }
    CHECK_OK(lt_model_set_lora_enabled(m, 1));
    /* logits of the first sequence with the adapter, for the round trip */
    float *first = malloc(sizeof(float) * (size_t)cu[1] * (size_t)V);
    CHECK_OK(lt_model_logits(m, ids, (size_t)cu[1], first));

    /* the packed batch: loss and gradients */
    const int32_t *ri[8], *rl[8];
    size_t lens[8];
    for (int s = 0; s < nseq; s++) {
        ri[s] = ids + cu[s];
        rl[s] = labels + cu[s];
        lens[s] = (size_t)(cu[s + 1] - cu[s]);
    }
    lt_batch b;
    memset(&b, 0, sizeof b);
    CHECK_OK(lt_batch_pack(&b, nseq, ri, rl, lens));
    json_error_t je;
    snprintf(epath, sizeof epath, "%s/expected.json", dir);
    json_t *js = json_load_file(epath, 0, &je);
    double want_loss = json_number_value(json_object_get(js, "loss_batch"));
    for (int keep = 0; keep < 2; keep++) {
        lt_model_foreach_lora(m, zero_grads, NULL);
        lt_graph_pass pass = {1, 3407, 0, keep};
        double sum = 0;
        CHECK_OK(lt_graph_forward_backward(m, &b, (float)(1.0 / (double)b.n_targets), &pass, &sum));
        double loss = sum / (double)b.n_targets, worst = 0;
        int n = check_grads(fam, m, ex, &worst);
        printf("%s: batch loss %.7f (transformers %.7f), %d LoRA gradients, worst relative error %.3g%s\n", fam, loss,
               want_loss, n, worst, keep ? " (checkpointing off)" : "");
        CHECK_MSG(fabs(loss - want_loss) <= 1e-5 * fabs(want_loss), "%s: batch loss %.8f vs %.8f", fam, loss,
                  want_loss);
        CHECK_MSG(n == (int)json_array_size(json_object_get(js, "lora_keys")), "%s: %d gradients checked of %zu",
                  fam, n, json_array_size(json_object_get(js, "lora_keys")));
    }
    json_decref(js);
    lt_batch_free(&b);

    /* greedy, with and without the adapter */
    greedy(fam, m, ids, (size_t)cu[1], want(ex, "greedy", LT_ST_I32), "with the adapter");
    CHECK_OK(lt_model_set_lora_enabled(m, 0));
    greedy(fam, m, ids, (size_t)cu[1], want(ex, "greedy_base", LT_ST_I32), "without the adapter");
    CHECK_OK(lt_model_set_lora_enabled(m, 1));

    adapter_round_trip(fam, m, adir, ids, (size_t)cu[1], first);
    free(first);
    free(logits);
    lt_st_close(ex);
    lt_model_free(m);
}

int main(int argc, char **argv) {
    static const char *const fams[][2] = {
        {"llama", "LlamaForCausalLM"},   {"mistral", "MistralForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"},
        {"qwen3", "Qwen3ForCausalLM"},   {"gemma2", "Gemma2ForCausalLM"},   {"gemma3", "Gemma3ForCausalLM"},
        {"phi3", "Phi3ForCausalLM"},
    };
    for (size_t i = 0; i < sizeof fams / sizeof fams[0]; i++) {
        if (argc > 1 && strcmp(argv[1], fams[i][0])) continue;
        check_family(fams[i][0], fams[i][1]);
    }
    return lt_test_done("test_families");
}

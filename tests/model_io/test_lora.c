/* test_lora.c - LoRA adapters: PEFT's initialisation (A ~ U(-1/sqrt(in), 1/sqrt(in)) from the
 * Philox stream layer*7+proj, B = 0), scaling, targets, the PEFT files (adapter_config.json
 * formatted exactly as json.dumps(indent=2, sort_keys=True), adapter_model.safetensors F32 with
 * PEFT's keys), a bit-exact save -> load round trip, and one clear failure per bad adapter or
 * unwritable output. */
#include "lt_test.h"
#include "tiny_model.h"
#include <jansson.h>
#include <math.h>

static char root[512];

static char *sub(const char *name) {
    static char buf[8][600];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", root, name);
    return buf[k];
}

static lt_model *load_tiny(void) {
    lt_model_params p;
    lt_model_params_init(&p);
    p.device = LT_DEVICE_CPU;
    p.quant = LT_QUANT_NONE;
    p.n_threads = 1;
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(sub("model"), &p, &m));
    return m;
}

static float *download(lt_model *m, const float *dev, size_t n) {
    float *h = malloc(n * 4);
    CHECK_OK(m->be->ops.download(m->be, h, dev, n * 4));
    return h;
}

static void test_targets_parse(void) {
    uint32_t mask = 0;
    CHECK_OK(lt_lora_targets_parse("q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", &mask));
    CHECK(mask == LT_TARGET_ALL);
    CHECK_OK(lt_lora_targets_parse("q, v", &mask));
    CHECK(mask == (LT_TARGET_Q | LT_TARGET_V));
    CHECK_OK(lt_lora_targets_parse("all", &mask));
    CHECK(mask == LT_TARGET_ALL);
    CHECK_OK(lt_lora_targets_parse("down_proj,gate", &mask));
    CHECK(mask == (LT_TARGET_DOWN | LT_TARGET_GATE));
    CHECK_FAIL(lt_lora_targets_parse("q_proj,lm_head", &mask), LT_ERR_INVALID_ARGUMENT, "LoRA target 'lm_head' is unknown");
    CHECK_FAIL(lt_lora_targets_parse(" , ", &mask), LT_ERR_INVALID_ARGUMENT, "no LoRA targets");
}

static void test_init(lt_model *m) {
    lt_lora_params lp;
    lt_lora_params_init(&lp);
    CHECK(lp.r == 16 && lp.alpha == 32.0f && fabsf(lp.dropout - 0.1f) < 1e-7f && lp.targets == LT_TARGET_ALL &&
          lp.seed == 3407 && lp.use_rslora == 0);
    CHECK_FAIL(lt_model_set_lora_enabled(m, 1), LT_ERR_STATE, "no LoRA adapter is attached");
    lp.r = 4;
    lp.alpha = 8;
    CHECK_OK(lt_model_add_lora(m, &lp));
    CHECK(m->has_lora && m->lora_enabled && m->lora_scale == 2.0f);
    uint64_t want = 0;
    for (int p = 0; p < LT_PROJ_COUNT; p++) {
        int64_t in, out;
        lt_proj_dims(&m->cfg, p, &in, &out);
        want += (uint64_t)(4 * (in + out));
    }
    CHECK(lt_model_lora_numel(m) == want * TINY_L);
    CHECK(lt_config_lora_numel(&m->cfg, 4, LT_TARGET_ALL) == want * TINY_L);
    lt_model_info info;
    info.struct_size = sizeof info;
    CHECK_OK(lt_model_get_info(m, &info));
    CHECK(info.n_lora_params == want * TINY_L);

    /* A: U(-1/sqrt(in), 1/sqrt(in)) from the documented stream; B: zero */
    lt_lora_tensor *t = &m->layers[1].lora[LT_PROJ_DOWN];
    CHECK(t->r == 4 && t->in == TINY_I && t->out == TINY_C);
    size_t na = (size_t)(t->r * t->in);
    float *A = download(m, t->A, na), *B = download(m, t->B, (size_t)(t->out * t->r));
    float bound = 1.0f / sqrtf((float)TINY_I), amax = 0;
    double mean = 0;
    for (size_t i = 0; i < na; i++) {
        float want_v = (2.0f * lt_rng_uniform(3407, 1 * 7 + LT_PROJ_DOWN, i) - 1.0f) * bound;
        CHECK_MSG(A[i] == want_v, "A[%zu] = %g, want %g", i, (double)A[i], (double)want_v);
        if (fabsf(A[i]) > amax) amax = fabsf(A[i]);
        mean += A[i];
    }
    CHECK(amax <= bound && amax > 0.9f * bound && fabs(mean / (double)na) < 0.1 * bound);
    int zero = 1;
    for (int64_t i = 0; i < t->out * t->r; i++) zero &= B[i] == 0.0f;
    CHECK(zero);
    free(A);
    free(B);
    /* same seed, same adapter; another seed, another */
    float *A1 = download(m, m->layers[0].lora[LT_PROJ_Q].A, 4 * TINY_C);
    CHECK_OK(lt_model_add_lora(m, &lp));
    float *A2 = download(m, m->layers[0].lora[LT_PROJ_Q].A, 4 * TINY_C);
    CHECK(!memcmp(A1, A2, 4 * TINY_C * 4));
    lp.seed = 1;
    CHECK_OK(lt_model_add_lora(m, &lp));
    free(A2);
    A2 = download(m, m->layers[0].lora[LT_PROJ_Q].A, 4 * TINY_C);
    CHECK(memcmp(A1, A2, 4 * TINY_C * 4) != 0);
    free(A1);
    free(A2);
    /* rsLoRA scaling and a subset of targets */
    lp.use_rslora = 1;
    lp.r = 16;
    lp.alpha = 16;
    lp.targets = LT_TARGET_Q | LT_TARGET_V;
    CHECK_OK(lt_model_add_lora(m, &lp));
    CHECK(m->lora_scale == 4.0f);
    CHECK(m->layers[0].lora[LT_PROJ_K].A == NULL && m->layers[0].lora[LT_PROJ_V].A != NULL);
    CHECK(lt_model_lora_numel(m) == (uint64_t)TINY_L * 16 * ((TINY_C + TINY_C) + (TINY_C + TINY_NKV * TINY_C / TINY_NH)));
    lp.r = 0;
    CHECK_FAIL(lt_model_add_lora(m, &lp), LT_ERR_INVALID_ARGUMENT, "LoRA rank r = 0");
    CHECK(m->has_lora && m->layers[0].lora[LT_PROJ_V].r == 16); /* a refused call keeps the adapter */
    CHECK_OK(lt_model_set_lora_enabled(m, 0));
    CHECK(m->lora_enabled == 0);
    CHECK_OK(lt_model_set_lora_enabled(m, 1));
}

/* Gives B random values so that a round trip checks real numbers. */
static void randomise_b(lt_model *m) {
    for (int l = 0; l < TINY_L; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            lt_lora_tensor *t = &m->layers[l].lora[p];
            if (!t->B) continue;
            size_t n = (size_t)(t->out * t->r);
            float *h = malloc(n * 4);
            for (size_t i = 0; i < n; i++) h[i] = lt_rng_uniform(99, (uint64_t)(l * 7 + p), i) - 0.5f;
            CHECK_OK(m->be->ops.upload(m->be, t->B, h, n * 4));
            free(h);
        }
}

static void test_save_load(lt_model *m) {
    lt_lora_params lp;
    lt_lora_params_init(&lp);
    lp.r = 8;
    lp.alpha = 16;
    lp.dropout = 0.05f;
    lp.targets = LT_TARGET_ALL & ~LT_TARGET_O;
    CHECK_OK(lt_model_add_lora(m, &lp));
    randomise_b(m);
    const char *dir = sub("adapter");
    CHECK_OK(lt_model_save_adapter(m, dir, 0));
    CHECK_FAIL(lt_model_save_adapter(m, dir, 0), LT_ERR_EXISTS, "adapter/adapter_config.json already exists");
    CHECK_OK(lt_model_save_adapter(m, dir, 1));

    /* adapter_config.json */
    char *text = NULL;
    size_t len = 0;
    CHECK_OK(lt_read_file(sub("adapter/adapter_config.json"), &text, &len));
    json_error_t je;
    json_t *j = json_loads(text ? text : "", 0, &je);
    CHECK(json_is_object(j));
    CHECK(json_integer_value(json_object_get(j, "r")) == 8);
    CHECK(json_is_integer(json_object_get(j, "lora_alpha")) && json_integer_value(json_object_get(j, "lora_alpha")) == 16);
    CHECK(json_real_value(json_object_get(j, "lora_dropout")) == 0.05);
    CHECK(!strcmp(json_string_value(json_object_get(j, "peft_type")), "LORA"));
    CHECK(!strcmp(json_string_value(json_object_get(j, "task_type")), "CAUSAL_LM"));
    CHECK(json_is_true(json_object_get(j, "inference_mode")) && json_is_false(json_object_get(j, "use_rslora")));
    CHECK(json_array_size(json_object_get(j, "target_modules")) == 6);
    CHECK(!strcmp(json_string_value(json_object_get(j, "base_model_name_or_path")), m->dir));
    CHECK(strstr(text, "\"target_modules\": [\n    \"q_proj\",\n    \"k_proj\",") != NULL);
    /* sorted keys, as sort_keys=True writes them */
    const char *prev = NULL, *key;
    json_t *v;
    int sorted = 1;
    void *it = json_object_iter(j);
    (void)v;
    for (; it; it = json_object_iter_next(j, it)) {
        key = json_object_iter_key(it);
        if (prev && strcmp(prev, key) >= 0) sorted = 0;
        prev = key;
    }
    CHECK(sorted && json_object_size(j) == 41);
    json_decref(j);
    /* byte-identical to Python's json.dumps(indent=2, sort_keys=True) of the same object */
    if (system("python3 -c 'import json' 2>/dev/null") == 0) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "python3 -c \"import json,sys; t=open(sys.argv[1]).read(); "
                 "sys.exit(0 if json.dumps(json.loads(t), indent=2, sort_keys=True) == t else 1)\" '%s'",
                 sub("adapter/adapter_config.json"));
        CHECK_MSG(system(cmd) == 0, "adapter_config.json is not formatted as json.dumps(indent=2, sort_keys=True)");
    }
    free(text);

    /* adapter_model.safetensors: F32, PEFT's keys, format pt */
    lt_st_set *s = NULL;
    CHECK_OK(lt_st_open_file(sub("adapter/adapter_model.safetensors"), &s));
    CHECK(lt_st_count(s) == (size_t)TINY_L * 6 * 2);
    CHECK(lt_st_metadata(s, "format") && !strcmp(lt_st_metadata(s, "format"), "pt"));
    const lt_st_tensor *t = lt_st_find(s, "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight");
    CHECK(t && t->dtype == LT_ST_F32 && t->ndim == 2 && t->shape[0] == 8 && t->shape[1] == TINY_I);
    t = lt_st_find(s, "base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight");
    CHECK(t && t->shape[0] == TINY_NKV * TINY_C / TINY_NH && t->shape[1] == 8);
    CHECK(lt_st_find(s, "base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight") == NULL);
    lt_st_close(s);

    /* load into a fresh model: bit-exact */
    lt_model *m2 = load_tiny();
    if (!m2) return;
    CHECK_OK(lt_model_load_adapter(m2, dir));
    CHECK(m2->lora.r == 8 && m2->lora.alpha == 16.0f && m2->lora.dropout == 0.05f && m2->lora.targets == lp.targets);
    CHECK(m2->lora_scale == m->lora_scale && m2->has_lora && m2->lora_enabled);
    int same = 1;
    for (int l = 0; l < TINY_L; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            lt_lora_tensor *a = &m->layers[l].lora[p], *b = &m2->layers[l].lora[p];
            if (!a->A) { same &= b->A == NULL; continue; }
            size_t na = (size_t)(a->r * a->in), nb = (size_t)(a->out * a->r);
            float *x = download(m, a->A, na), *y = download(m2, b->A, na);
            same &= !memcmp(x, y, na * 4);
            free(x); free(y);
            x = download(m, a->B, nb);
            y = download(m2, b->B, nb);
            same &= !memcmp(x, y, nb * 4);
            free(x); free(y);
        }
    CHECK_MSG(same, "the adapter changed through save -> load");
    /* save again from the loaded one: identical files */
    CHECK_OK(lt_model_save_adapter(m2, sub("adapter2"), 0));
    char *f1 = NULL, *f2 = NULL;
    size_t n1 = 0, n2 = 0;
    CHECK_OK(lt_read_file(sub("adapter/adapter_model.safetensors"), &f1, &n1));
    CHECK_OK(lt_read_file(sub("adapter2/adapter_model.safetensors"), &f2, &n2));
    CHECK(n1 == n2 && f1 && f2 && !memcmp(f1, f2, n1));
    free(f1);
    free(f2);
    lt_model_free(m2);
}

/* Copies the saved adapter to `name` with adapter_config.json replaced (when cfg) and the
 * tensors filtered / extended. */
static const char *make_adapter(const char *name, const char *cfg, const char *drop, const char *extra,
                                const char *reshape) {
    const char *dir = sub(name);
    tiny_rm_rf(dir);
    lt_mkdirs(dir);
    char *text = NULL;
    lt_read_file(sub("adapter/adapter_config.json"), &text, NULL);
    tiny_write_text(dir, "adapter_config.json", cfg ? cfg : text);
    free(text);
    lt_st_set *s = NULL;
    lt_st_open_file(sub("adapter/adapter_model.safetensors"), &s);
    lt_st_writer *w;
    lt_st_writer_new(&w);
    for (size_t i = 0; i < lt_st_count(s); i++) {
        const lt_st_tensor *t = lt_st_at(s, i);
        if (drop && !strcmp(t->name, drop)) continue;
        int64_t shape[2] = {t->shape[0], t->shape[1]};
        if (reshape && !strcmp(t->name, reshape)) { shape[0] = t->shape[1]; shape[1] = t->shape[0]; }
        lt_st_writer_add(w, t->name, t->dtype, t->ndim, shape, t->data, 1);
    }
    if (extra) {
        float z[4] = {0};
        int64_t sh[1] = {4};
        lt_st_writer_add(w, extra, LT_ST_F32, 1, sh, z, 1);
    }
    char *p = lt_path_join(dir, "adapter_model.safetensors");
    lt_st_writer_write(w, p, 1);
    free(p);
    lt_st_writer_free(w);
    lt_st_close(s);
    return dir;
}

static void test_bad_adapters(lt_model *m) {
    CHECK_FAIL(lt_model_load_adapter(m, make_adapter("a1", NULL, NULL, "base_model.model.lm_head.lora_A.weight", NULL)),
               LT_ERR_FORMAT, "1 tensor is one that are not LoRA matrices of this 2-layer model's target_modules: "
               "'base_model.model.lm_head.lora_A.weight'");
    CHECK_FAIL(lt_model_load_adapter(m, make_adapter("a2", NULL, NULL,
                                                     "base_model.model.model.layers.5.self_attn.q_proj.lora_A.weight", NULL)),
               LT_ERR_FORMAT, "'base_model.model.model.layers.5.self_attn.q_proj.lora_A.weight'");
    CHECK_FAIL(lt_model_load_adapter(m, make_adapter("a3", NULL, "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight",
                                                     NULL, NULL)),
               LT_ERR_NOT_FOUND, "tensor 'base_model.model.model.layers.1.mlp.up_proj.lora_B.weight' is missing");
    CHECK_FAIL(lt_model_load_adapter(m, make_adapter("a4", NULL, NULL, NULL,
                                                     "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight")),
               LT_ERR_FORMAT, "tensor 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' has 2 dimensions "
               "[32,8], expected [8,32]");
    CHECK_FAIL(lt_model_load_adapter(m, make_adapter("a5", "{\"peft_type\": \"IA3\", \"target_modules\": [\"q_proj\"]}",
                                                     NULL, NULL, NULL)),
               LT_ERR_UNSUPPORTED, "a5/adapter_config.json: peft_type is IA3");
    CHECK_FAIL(lt_model_load_adapter(m, make_adapter("a6", "{\"peft_type\": \"LORA\", \"r\": 8, \"target_modules\": "
                                                     "[\"q_proj\", \"c_attn\"]}", NULL, NULL, NULL)),
               LT_ERR_UNSUPPORTED, "target module \"c_attn\" is not one of");
    CHECK_FAIL(lt_model_load_adapter(m, make_adapter("a7", "{\"peft_type\": \"LORA\", \"r\": 8, \"use_dora\": true, "
                                                     "\"target_modules\": [\"q_proj\"]}", NULL, NULL, NULL)),
               LT_ERR_UNSUPPORTED, "DoRA");
    CHECK_FAIL(lt_model_load_adapter(m, make_adapter("a8", "{\"peft_type\": \"LORA\", \"r\": 8,", NULL, NULL, NULL)),
               LT_ERR_FORMAT, "a8/adapter_config.json: invalid JSON");
    /* r in the config disagrees with the tensors */
    CHECK_FAIL(lt_model_load_adapter(m, make_adapter("a9", "{\"peft_type\": \"LORA\", \"r\": 4, \"target_modules\": "
                                                     "[\"q_proj\",\"k_proj\",\"v_proj\",\"gate_proj\",\"up_proj\",\"down_proj\"]}",
                                                     NULL, NULL, NULL)),
               LT_ERR_FORMAT, "expected [4,32] (r=4");
    CHECK_FAIL(lt_model_load_adapter(m, sub("no-adapter")), LT_ERR_NOT_FOUND, "no-adapter: no such adapter folder");
    const char *d = make_adapter("a10", NULL, NULL, NULL, NULL);
    char *p = lt_path_join(d, "adapter_model.safetensors");
    unlink(p);
    free(p);
    CHECK_FAIL(lt_model_load_adapter(m, d), LT_ERR_NOT_FOUND, "a10/adapter_model.safetensors: missing");
    /* the failed loads left the adapter that was attached */
    CHECK(m->has_lora && m->lora.r == 8);
}

static void test_unwritable(lt_model *m) {
    /* a folder below a regular file can never be created, even by root */
    tiny_write_text(root, "somefile", "x");
    CHECK_FAIL(lt_model_save_adapter(m, sub("somefile/sub"), 0), LT_ERR_IO, "somefile/sub");
    CHECK(strstr(lt_last_error(), "cannot create folder") != NULL);
    /* a read-only folder (root ignores permissions, so only when not root) */
    if (geteuid() != 0) {
        const char *ro = sub("readonly");
        lt_mkdirs(ro);
        chmod(ro, 0555);
        CHECK_FAIL(lt_model_save_adapter(m, ro, 0), LT_ERR_IO, "readonly is not writable");
        chmod(ro, 0755);
    }
    lt_model *bare = load_tiny();
    CHECK_FAIL(lt_model_save_adapter(bare, sub("x"), 0), LT_ERR_STATE, "no LoRA adapter is attached to save");
    lt_model_free(bare);
}

int main(void) {
    snprintf(root, sizeof root, "%s/test_lora.%d", LT_BUILD_DIR, (int)getpid());
    CHECK_OK(lt_mkdirs(root));
    tiny_opts o = {0};
    CHECK(tiny_model_write(sub("model"), &o) == 0);
    test_targets_parse();
    lt_model *m = load_tiny();
    if (!m) return lt_test_done("test_lora");
    test_init(m);
    test_save_load(m);
    test_bad_adapters(m);
    test_unwritable(m);
    lt_model_free(m);
    if (!lt_test_failures) tiny_rm_rf(root);
    return lt_test_done("test_lora");
}

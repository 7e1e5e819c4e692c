/* train_common.h - helpers of the graph/trainer tests: the tiny Qwen2 fixtures made by
 * tests/fixtures/make_fixtures.py (model + PEFT adapter + expected values), their LoRA tensors
 * by PEFT key, and token datasets built in the test. */
#ifndef LT_TRAIN_COMMON_H
#define LT_TRAIN_COMMON_H
#include "lt_test.h"
#include "model/graph.h"
#include "data/dataset.h"
#include "io/safetensors.h"
#include <jansson.h>
#include <stdio.h>

#define FIXTURES LT_REPO_ROOT "/tests/fixtures/data"

static char fx_path_buf[4][1024];
static inline const char *fx_path(int slot, const char *model, const char *file) {
    snprintf(fx_path_buf[slot], sizeof fx_path_buf[slot], "%s/%s%s%s", FIXTURES, model, file ? "/" : "", file ? file : "");
    return fx_path_buf[slot];
}

/* Loads a fixture model on the CPU backend, optionally with its PEFT adapter. */
static inline lt_model *fx_model(const char *name, int with_adapter) {
    lt_model_params mp;
    lt_model_params_init(&mp);
    mp.device = LT_DEVICE_CPU;
    mp.n_threads = 0;
    mp.quant = LT_QUANT_NONE; /* the fixtures are float32 references: compare without NF4 rounding */
    lt_model *m = NULL;
    lt_status st = lt_model_load(fx_path(0, name, NULL), &mp, &m);
    if (st != LT_OK) { fprintf(stderr, "lt_model_load(%s): %s\n", name, lt_last_error()); exit(1); }
    if (with_adapter) {
        st = lt_model_load_adapter(m, fx_path(1, name, "adapter"));
        if (st != LT_OK) { fprintf(stderr, "lt_model_load_adapter(%s): %s\n", name, lt_last_error()); exit(1); }
    }
    return m;
}

static inline lt_st_set *fx_expected(const char *name) {
    lt_st_set *s = NULL;
    if (lt_st_open_file(fx_path(2, name, "expected.safetensors"), &s) != LT_OK) {
        fprintf(stderr, "%s\n", lt_last_error());
        exit(1);
    }
    return s;
}

static inline json_t *fx_json(const char *name) {
    json_error_t e;
    json_t *j = json_load_file(fx_path(3, name, "expected.json"), 0, &e);
    if (!j) { fprintf(stderr, "%s: %s\n", fx_path(3, name, "expected.json"), e.text); exit(1); }
    return j;
}

/* A tensor of the expected file, as f32 / i32 (malloc'ed). */
static inline float *fx_f32(const lt_st_set *s, const char *key, int64_t *numel) {
    const lt_st_tensor *t = lt_st_find(s, key);
    if (!t || t->dtype != LT_ST_F32) { fprintf(stderr, "expected tensor %s missing\n", key); exit(1); }
    float *out = malloc((size_t)t->numel * 4);
    memcpy(out, t->data, (size_t)t->numel * 4);
    if (numel) *numel = t->numel;
    return out;
}
static inline const int32_t *fx_i32(const lt_st_set *s, const char *key, int64_t *numel) {
    const lt_st_tensor *t = lt_st_find(s, key);
    if (!t || t->dtype != LT_ST_I32) { fprintf(stderr, "expected tensor %s missing\n", key); exit(1); }
    if (numel) *numel = t->numel;
    return (const int32_t *)t->data;
}

/* "base_model.model.model.layers.{l}.{self_attn|mlp}.{proj}.lora_{A|B}.weight" */
static inline void fx_lora_key(char *buf, size_t cap, const char *prefix, int l, int p, int is_b) {
    snprintf(buf, cap, "%sbase_model.model.model.layers.%d.%s.%s.lora_%c.weight", prefix, l, lt_proj_parent[p],
             lt_proj_names[p], is_b ? 'B' : 'A');
}

/* Downloads a backend f32 tensor of n values (malloc'ed). */
static inline float *fx_download(lt_model *m, const float *src, int64_t n) {
    float *h = malloc((size_t)n * 4);
    if (m->be->ops.download(m->be, h, src, (size_t)n * 4) != LT_OK) { fprintf(stderr, "download failed\n"); exit(1); }
    return h;
}

static inline lt_tokenizer *fx_tokenizer(void) {
    lt_tokenizer *tok = NULL;
    if (lt_tokenizer_load(LT_REPO_ROOT "/assets/qwen2-tokenizer", &tok) != LT_OK) {
        fprintf(stderr, "lt_tokenizer_load: %s\n", lt_last_error());
        exit(1);
    }
    return tok;
}

/* An empty token dataset (no EOS added, no truncation within 4096). */
static inline lt_dataset *fx_dataset(const lt_tokenizer *tok) {
    lt_dataset_params dp;
    lt_dataset_params_init(&dp);
    dp.format = LT_DATA_TOKENS;
    dp.add_eos = 0;
    dp.max_seq_len = 4096;
    lt_dataset *ds = NULL;
    if (lt_dataset_new(tok, &dp, &ds) != LT_OK) { fprintf(stderr, "lt_dataset_new: %s\n", lt_last_error()); exit(1); }
    return ds;
}

/* Adds fixture records so that training visits them in fixture order: the trainer takes
 * records in the order perm = lt_dataset_permutation(n, seed, 0), so record perm[j] is the
 * fixture's record j. */
static inline lt_dataset *fx_ordered_dataset(const lt_tokenizer *tok, const int32_t *ids, const int32_t *labels,
                                      const int32_t *cu, int n, uint64_t seed) {
    size_t *perm = malloc((size_t)n * sizeof *perm);
    int *which = malloc((size_t)n * sizeof *which);
    lt_dataset_permutation((size_t)n, seed, 0, perm);
    for (int j = 0; j < n; j++) which[perm[j]] = j;
    lt_dataset *ds = fx_dataset(tok);
    for (int i = 0; i < n; i++) {
        int j = which[i];
        if (lt_dataset_add_tokens(ds, ids + cu[j], labels + cu[j], (size_t)(cu[j + 1] - cu[j])) != LT_OK) {
            fprintf(stderr, "lt_dataset_add_tokens: %s\n", lt_last_error());
            exit(1);
        }
    }
    free(perm);
    free(which);
    return ds;
}
#endif

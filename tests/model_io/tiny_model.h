/* tiny_model.h - writes small Hugging Face model folders (config.json + safetensors, random
 * weights) for the model I/O tests, with switches that break them in one specific way. */
#ifndef LT_TINY_MODEL_H
#define LT_TINY_MODEL_H
#include "core/core.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "model/model_io.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct tiny_opts {
    const char *arch;        /* default Qwen2ForCausalLM */
    int tied;                /* tie_word_embeddings */
    int st_dtype;            /* LT_ST_BF16 default */
    const char *skip;        /* a tensor to leave out */
    const char *bad_shape;   /* a tensor to write with one row too many */
    const char *bad_dtype;   /* a tensor to write as I32 */
    int shards;              /* 0/1: model.safetensors; 2: two shards + index */
    int v5_style;            /* rope_parameters + dtype instead of rope_theta + torch_dtype */
} tiny_opts;

#define TINY_V 96
#define TINY_C 32
#define TINY_I 48
#define TINY_L 2
#define TINY_NH 4
#define TINY_NKV 2

static inline void tiny_rm_rf(const char *dir) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "chmod -R u+w '%s' 2>/dev/null; rm -rf '%s'", dir, dir);
    if (system(cmd) != 0) fprintf(stderr, "rm -rf %s failed\n", dir);
}

static inline int tiny_write_text(const char *dir, const char *name, const char *text) {
    char *p = lt_path_join(dir, name);
    FILE *f = fopen(p, "wb");
    free(p);
    if (!f) return -1;
    fputs(text, f);
    fclose(f);
    return 0;
}

static inline void tiny_config_text(char *buf, size_t cap, const tiny_opts *o) {
    const char *arch = o->arch ? o->arch : "Qwen2ForCausalLM";
    const char *mt = strstr(arch, "Llama") ? "llama" : strstr(arch, "Mistral") ? "mistral" : "qwen2";
    const char *dt = o->st_dtype == LT_ST_F32 ? "float32" : o->st_dtype == LT_ST_F16 ? "float16" : "bfloat16";
    if (o->v5_style)
        snprintf(buf, cap,
                 "{\"architectures\":[\"%s\"],\"model_type\":\"%s\",\"vocab_size\":%d,\"hidden_size\":%d,"
                 "\"intermediate_size\":%d,\"num_hidden_layers\":%d,\"num_attention_heads\":%d,"
                 "\"num_key_value_heads\":%d,\"rms_norm_eps\":1e-06,\"max_position_embeddings\":512,"
                 "\"rope_parameters\":{\"rope_theta\":500000.0,\"rope_type\":\"default\"},\"dtype\":\"%s\","
                 "\"tie_word_embeddings\":%s,\"bos_token_id\":1,\"eos_token_id\":[2,3],\"hidden_act\":\"silu\"}",
                 arch, mt, TINY_V, TINY_C, TINY_I, TINY_L, TINY_NH, TINY_NKV, dt, o->tied ? "true" : "false");
    else
        snprintf(buf, cap,
                 "{\"architectures\":[\"%s\"],\"model_type\":\"%s\",\"vocab_size\":%d,\"hidden_size\":%d,"
                 "\"intermediate_size\":%d,\"num_hidden_layers\":%d,\"num_attention_heads\":%d,"
                 "\"num_key_value_heads\":%d,\"rms_norm_eps\":1e-06,\"max_position_embeddings\":512,"
                 "\"rope_theta\":1000000.0,\"torch_dtype\":\"%s\",\"tie_word_embeddings\":%s,"
                 "\"bos_token_id\":1,\"eos_token_id\":2,\"hidden_act\":\"silu\"}",
                 arch, mt, TINY_V, TINY_C, TINY_I, TINY_L, TINY_NH, TINY_NKV, dt, o->tied ? "true" : "false");
}

/* Adds one tensor of random values (seeded by its position) in the options' dtype. */
static inline lt_status tiny_add(lt_st_writer *w, const tiny_opts *o, const char *name, int ndim, int64_t d0,
                                 int64_t d1, uint64_t stream) {
    int64_t shape[2] = {d0, d1};
    int dt = o->st_dtype ? o->st_dtype : LT_ST_BF16;
    if (o->bad_shape && !strcmp(name, o->bad_shape)) shape[0] += 1;
    if (o->bad_dtype && !strcmp(name, o->bad_dtype)) dt = LT_ST_I32;
    if (o->skip && !strcmp(name, o->skip)) return LT_OK;
    int64_t n = shape[0] * (ndim > 1 ? shape[1] : 1);
    int es = lt_st_dtype_size(dt);
    uint8_t *buf = malloc((size_t)(n * es));
    for (int64_t i = 0; i < n; i++) {
        float v = (lt_rng_uniform(1234, stream, (uint64_t)i) - 0.5f) * 0.2f;
        if (ndim == 1 && strstr(name, "norm")) v = 1.0f + v;
        if (dt == LT_ST_F32 || dt == LT_ST_I32) memcpy(buf + 4 * i, &v, 4);
        else {
            uint16_t h = dt == LT_ST_BF16 ? lt_f32_to_bf16(v) : lt_f32_to_f16(v);
            memcpy(buf + 2 * i, &h, 2);
        }
    }
    lt_status s = lt_st_writer_add(w, name, dt, ndim, shape, buf, 1);
    free(buf);
    return s;
}

/* Writes the tiny model to dir (created). Returns 0 on success. */
static inline int tiny_model_write(const char *dir, const tiny_opts *o) {
    tiny_rm_rf(dir);
    if (lt_mkdirs(dir) != LT_OK) return -1;
    char cfg[2048];
    tiny_config_text(cfg, sizeof cfg, o);
    if (tiny_write_text(dir, "config.json", cfg)) return -1;
    lt_config c;
    if (lt_config_parse(cfg, strlen(cfg), "tiny config", &c) != LT_OK) return -1;
    lt_st_writer *w[2];
    lt_st_writer_new(&w[0]);
    lt_st_writer_new(&w[1]);
    uint64_t stream = 0;
    char name[256];
    tiny_add(w[0], o, "model.embed_tokens.weight", 2, TINY_V, TINY_C, stream++);
    if (!o->tied) tiny_add(w[1], o, "lm_head.weight", 2, TINY_V, TINY_C, stream++);
    tiny_add(w[1], o, "model.norm.weight", 1, TINY_C, 0, stream++);
    for (int l = 0; l < TINY_L; l++) {
        lt_st_writer *lw = w[l % 2];
        lt_layer_tensor_name(name, sizeof name, l, "input_layernorm.weight");
        tiny_add(lw, o, name, 1, TINY_C, 0, stream++);
        lt_layer_tensor_name(name, sizeof name, l, "post_attention_layernorm.weight");
        tiny_add(lw, o, name, 1, TINY_C, 0, stream++);
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            int64_t in, out;
            lt_proj_dims(&c, p, &in, &out);
            char suffix[96];
            snprintf(suffix, sizeof suffix, "%s.%s.weight", lt_proj_parent[p], lt_proj_names[p]);
            lt_layer_tensor_name(name, sizeof name, l, suffix);
            tiny_add(lw, o, name, 2, out, in, stream++);
            if (c.attention_bias && p <= LT_PROJ_V) {
                snprintf(suffix, sizeof suffix, "%s.%s.bias", lt_proj_parent[p], lt_proj_names[p]);
                lt_layer_tensor_name(name, sizeof name, l, suffix);
                tiny_add(lw, o, name, 1, out, 0, stream++);
            }
        }
    }
    int rc = 0;
    if (o->shards < 2) {
        char *p0 = lt_path_join(dir, "model.safetensors");
        char *p1 = lt_path_join(dir, "rest.safetensors");
        /* write the two halves, then merge them through a reader */
        rc |= lt_st_writer_write(w[0], p0, 1) != LT_OK;
        rc |= lt_st_writer_write(w[1], p1, 1) != LT_OK;
        lt_st_set *a = NULL, *b = NULL;
        rc |= lt_st_open_file(p0, &a) != LT_OK;
        rc |= lt_st_open_file(p1, &b) != LT_OK;
        lt_st_writer *all;
        lt_st_writer_new(&all);
        for (int k = 0; !rc && k < 2; k++) {
            lt_st_set *s = k ? b : a;
            for (size_t i = 0; i < lt_st_count(s); i++) {
                const lt_st_tensor *t = lt_st_at(s, i);
                rc |= lt_st_writer_add(all, t->name, t->dtype, t->ndim, t->shape, t->data, 1) != LT_OK;
            }
        }
        lt_st_close(a);
        lt_st_close(b);
        unlink(p1);
        rc |= lt_st_writer_write(all, p0, 1) != LT_OK;
        lt_st_writer_free(all);
        free(p0);
        free(p1);
    } else {
        const char *names[2] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
        char index[16384];
        size_t k = (size_t)snprintf(index, sizeof index, "{\"metadata\":{\"total_size\":%zu},\"weight_map\":{",
                                    lt_st_writer_bytes(w[0]) + lt_st_writer_bytes(w[1]));
        int first = 1;
        for (int s = 0; s < 2; s++) {
            char *p = lt_path_join(dir, names[s]);
            rc |= lt_st_writer_write(w[s], p, 1) != LT_OK;
            lt_st_set *set = NULL;
            rc |= lt_st_open_file(p, &set) != LT_OK;
            for (size_t i = 0; set && i < lt_st_count(set); i++) {
                k += (size_t)snprintf(index + k, sizeof index - k, "%s\"%s\":\"%s\"", first ? "" : ",",
                                      lt_st_at(set, i)->name, names[s]);
                first = 0;
            }
            lt_st_close(set);
            free(p);
        }
        snprintf(index + k, sizeof index - k, "}}");
        rc |= tiny_write_text(dir, "model.safetensors.index.json", index);
    }
    lt_st_writer_free(w[0]);
    lt_st_writer_free(w[1]);
    return rc ? -1 : 0;
}
#endif

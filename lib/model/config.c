/* config.c - config.json of a Hugging Face causal LM into lt_config: the Hub style (top-level
 * rope_theta, torch_dtype) and the transformers-5 style (rope_parameters.rope_theta, dtype), for
 * the architectures loratune runs (Qwen2 and the Llama family), with bitsandbytes 4-bit
 * quantization_config detection. */
#include "model/model.h"
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Architectures whose decoder is the Llama/Qwen2 block (RMSNorm, RoPE half-split, GQA, SwiGLU). */
static const struct { const char *arch, *model_type; int bias; } lt_archs[] = {
    {"Qwen2ForCausalLM", "qwen2", 1},
    {"LlamaForCausalLM", "llama", 0},
    {"MistralForCausalLM", "mistral", 0},
};
#define LT_N_ARCHS (sizeof lt_archs / sizeof lt_archs[0])
#define LT_SUPPORTED_ARCHS "Qwen2ForCausalLM, LlamaForCausalLM, MistralForCausalLM"

static lt_status get_int(json_t *root, const char *path, const char *key, int required, int32_t def, int32_t *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required) return lt_error(LT_ERR_FORMAT, "%s: missing \"%s\"", path, key);
        *out = def;
        return LT_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < INT32_MIN || json_integer_value(v) > INT32_MAX)
        return lt_error(LT_ERR_FORMAT, "%s: \"%s\" is not an integer", path, key);
    *out = (int32_t)json_integer_value(v);
    return LT_OK;
}

static lt_status get_num(json_t *root, const char *path, const char *key, double def, double *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) { *out = def; return LT_OK; }
    if (!json_is_number(v)) return lt_error(LT_ERR_FORMAT, "%s: \"%s\" is not a number", path, key);
    *out = json_number_value(v);
    return LT_OK;
}

static lt_status get_bool(json_t *root, const char *path, const char *key, int def, int32_t *out) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) { *out = def; return LT_OK; }
    if (!json_is_boolean(v)) return lt_error(LT_ERR_FORMAT, "%s: \"%s\" is not true or false", path, key);
    *out = json_is_true(v);
    return LT_OK;
}

static int parse_dtype(const char *s) {
    if (!strcmp(s, "bfloat16")) return LT_DTYPE_BF16;
    if (!strcmp(s, "float16") || !strcmp(s, "half")) return LT_DTYPE_F16;
    if (!strcmp(s, "float32") || !strcmp(s, "float")) return LT_DTYPE_F32;
    return -1;
}

/* rope_scaling (Hub) / rope_parameters (v5): only the default rotary embedding is implemented. */
static lt_status check_rope(json_t *obj, const char *path, const char *key) {
    if (!obj || json_is_null(obj)) return LT_OK;
    if (!json_is_object(obj)) return lt_error(LT_ERR_FORMAT, "%s: \"%s\" is not an object", path, key);
    json_t *t = json_object_get(obj, "rope_type");
    if (!t) t = json_object_get(obj, "type");
    if (t && json_is_string(t) && strcmp(json_string_value(t), "default"))
        return lt_error(LT_ERR_UNSUPPORTED, "%s: %s.rope_type \"%s\" is not supported (loratune implements the "
                        "default rotary embedding only)", path, key, json_string_value(t));
    return LT_OK;
}

static lt_status parse_quant(json_t *q, const char *path, lt_config *cfg) {
    if (!q || json_is_null(q)) return LT_OK;
    if (!json_is_object(q)) return lt_error(LT_ERR_FORMAT, "%s: \"quantization_config\" is not an object", path);
    json_t *m = json_object_get(q, "quant_method");
    const char *method = json_is_string(m) ? json_string_value(m) : "(none)";
    if (strcmp(method, "bitsandbytes"))
        return lt_error(LT_ERR_UNSUPPORTED, "%s: quantization_config.quant_method \"%s\" is not supported (loratune "
                        "reads bf16/fp16/fp32 checkpoints and bitsandbytes NF4 4-bit ones)", path, method);
    json_t *l4 = json_object_get(q, "load_in_4bit");
    if (!l4) l4 = json_object_get(q, "_load_in_4bit");
    json_t *l8 = json_object_get(q, "load_in_8bit");
    if (!l8) l8 = json_object_get(q, "_load_in_8bit");
    if (json_is_true(l8))
        return lt_error(LT_ERR_UNSUPPORTED, "%s: bitsandbytes 8-bit (LLM.int8) checkpoints are not supported; use "
                        "the 16-bit original or a 4-bit NF4 checkpoint", path);
    if (!json_is_true(l4))
        return lt_error(LT_ERR_UNSUPPORTED, "%s: bitsandbytes quantization_config without load_in_4bit is not "
                        "supported", path);
    json_t *qt = json_object_get(q, "bnb_4bit_quant_type");
    const char *qts = json_is_string(qt) ? json_string_value(qt) : "fp4"; /* the class default */
    if (strcmp(qts, "nf4"))
        return lt_error(LT_ERR_UNSUPPORTED, "%s: bnb_4bit_quant_type \"%s\" is not supported (only nf4)", path, qts);
    cfg->bnb_4bit = 1;
    return LT_OK;
}

lt_status lt_config_parse(const char *json, size_t len, const char *path, lt_config *cfg) {
    LT_CHECK_ARG(json && cfg, "lt_config_parse: NULL argument");
    if (!path) path = "config.json";
    memset(cfg, 0, sizeof *cfg);
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (!root)
        return lt_error(LT_ERR_FORMAT, "%s: invalid JSON at line %d column %d: %s", path, je.line, je.column, je.text);
    lt_status st = LT_OK;
    if (!json_is_object(root)) { st = lt_error(LT_ERR_FORMAT, "%s: not a JSON object", path); goto done; }

    json_t *archs = json_object_get(root, "architectures");
    json_t *mt = json_object_get(root, "model_type");
    const char *arch = NULL;
    if (json_is_array(archs) && json_array_size(archs) > 0 && json_is_string(json_array_get(archs, 0)))
        arch = json_string_value(json_array_get(archs, 0));
    size_t ai = LT_N_ARCHS;
    for (size_t i = 0; i < LT_N_ARCHS; i++) {
        if (arch && !strcmp(arch, lt_archs[i].arch)) ai = i;
        /* configs without "architectures" are matched by model_type */
        if (!arch && json_is_string(mt) && !strcmp(json_string_value(mt), lt_archs[i].model_type)) ai = i;
    }
    if (ai == LT_N_ARCHS) {
        st = lt_error(LT_ERR_UNSUPPORTED, "%s: architecture %s%s%s is not supported; loratune runs %s", path,
                      arch ? "\"" : "", arch ? arch : json_is_string(mt) ? json_string_value(mt) : "(none given)",
                      arch ? "\"" : "", LT_SUPPORTED_ARCHS);
        goto done;
    }
    snprintf(cfg->architecture, sizeof cfg->architecture, "%s", lt_archs[ai].arch);
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s",
             json_is_string(mt) ? json_string_value(mt) : lt_archs[ai].model_type);

    json_t *act = json_object_get(root, "hidden_act");
    if (act && json_is_string(act) && strcmp(json_string_value(act), "silu")) {
        st = lt_error(LT_ERR_UNSUPPORTED, "%s: hidden_act \"%s\" is not supported (only silu)", path,
                      json_string_value(act));
        goto done;
    }
#define T(x) do { st = (x); if (st != LT_OK) goto done; } while (0)
    T(get_int(root, path, "vocab_size", 1, 0, &cfg->vocab_size));
    T(get_int(root, path, "hidden_size", 1, 0, &cfg->hidden_size));
    T(get_int(root, path, "intermediate_size", 1, 0, &cfg->intermediate_size));
    T(get_int(root, path, "num_hidden_layers", 1, 0, &cfg->num_layers));
    T(get_int(root, path, "num_attention_heads", 1, 0, &cfg->num_heads));
    T(get_int(root, path, "num_key_value_heads", 0, cfg->num_heads, &cfg->num_kv_heads));
    T(get_int(root, path, "max_position_embeddings", 0, 32768, &cfg->max_position_embeddings));
    T(get_num(root, path, "rms_norm_eps", 1e-6, &cfg->rms_norm_eps));
    T(get_bool(root, path, "tie_word_embeddings", 0, &cfg->tie_word_embeddings));
    if (lt_archs[ai].bias) cfg->attention_bias = 1; /* Qwen2 hard-codes q/k/v biases */
    else T(get_bool(root, path, "attention_bias", 0, &cfg->attention_bias));
    if (cfg->hidden_size <= 0 || cfg->num_heads <= 0 || cfg->num_layers <= 0 || cfg->vocab_size <= 0 ||
        cfg->intermediate_size <= 0 || cfg->num_kv_heads <= 0) {
        st = lt_error(LT_ERR_FORMAT, "%s: vocab_size, hidden_size, intermediate_size, num_hidden_layers, "
                      "num_attention_heads and num_key_value_heads must be positive", path);
        goto done;
    }
    T(get_int(root, path, "head_dim", 0, cfg->hidden_size / cfg->num_heads, &cfg->head_dim));
    if (cfg->head_dim <= 0 || cfg->head_dim % 2) {
        st = lt_error(LT_ERR_FORMAT, "%s: head_dim %d must be positive and even", path, cfg->head_dim);
        goto done;
    }
    if (cfg->num_heads % cfg->num_kv_heads) {
        st = lt_error(LT_ERR_FORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", path,
                      cfg->num_heads, cfg->num_kv_heads);
        goto done;
    }
    if (!(cfg->rms_norm_eps > 0)) { st = lt_error(LT_ERR_FORMAT, "%s: rms_norm_eps must be positive", path); goto done; }

    /* rope: v5 keeps it in rope_parameters, the Hub style at the top level */
    json_t *rp = json_object_get(root, "rope_parameters");
    T(check_rope(rp, path, "rope_parameters"));
    T(check_rope(json_object_get(root, "rope_scaling"), path, "rope_scaling"));
    cfg->rope_theta = 10000.0;
    if (json_is_object(rp) && json_object_get(rp, "rope_theta")) T(get_num(rp, path, "rope_theta", 10000.0, &cfg->rope_theta));
    else T(get_num(root, path, "rope_theta", 10000.0, &cfg->rope_theta));
    if (!(cfg->rope_theta > 0)) { st = lt_error(LT_ERR_FORMAT, "%s: rope_theta must be positive", path); goto done; }

    if (json_is_true(json_object_get(root, "mlp_bias"))) {
        st = lt_error(LT_ERR_UNSUPPORTED, "%s: mlp_bias true is not supported (MLP projections without biases only)", path);
        goto done;
    }
    if (json_is_true(json_object_get(root, "use_sliding_window"))) {
        st = lt_error(LT_ERR_UNSUPPORTED, "%s: use_sliding_window true is not supported (full attention only)", path);
        goto done;
    }

    json_t *dt = json_object_get(root, "dtype");
    if (!json_is_string(dt)) dt = json_object_get(root, "torch_dtype");
    cfg->torch_dtype = LT_DTYPE_F32; /* transformers' default when the config does not say */
    if (json_is_string(dt)) {
        int d = parse_dtype(json_string_value(dt));
        if (d < 0) {
            st = lt_error(LT_ERR_UNSUPPORTED, "%s: dtype \"%s\" is not supported (bfloat16, float16, float32)", path,
                          json_string_value(dt));
            goto done;
        }
        cfg->torch_dtype = d;
    }

    cfg->bos_token_id = -1;
    json_t *bos = json_object_get(root, "bos_token_id");
    if (json_is_integer(bos)) cfg->bos_token_id = (int32_t)json_integer_value(bos);
    json_t *eos = json_object_get(root, "eos_token_id");
    if (json_is_integer(eos)) {
        cfg->eos_token_ids[cfg->n_eos++] = (int32_t)json_integer_value(eos);
    } else if (json_is_array(eos)) {
        size_t i;
        json_t *e;
        json_array_foreach(eos, i, e) {
            if (!json_is_integer(e)) { st = lt_error(LT_ERR_FORMAT, "%s: eos_token_id[%zu] is not an integer", path, i); goto done; }
            if (cfg->n_eos < 8) cfg->eos_token_ids[cfg->n_eos++] = (int32_t)json_integer_value(e);
        }
    } else if (eos && !json_is_null(eos)) {
        st = lt_error(LT_ERR_FORMAT, "%s: eos_token_id is neither an integer nor a list", path);
        goto done;
    }
    T(parse_quant(json_object_get(root, "quantization_config"), path, cfg));
#undef T
done:
    json_decref(root);
    return st;
}

lt_status lt_config_load(const char *dir, lt_config *cfg) {
    LT_CHECK_ARG(dir && cfg, "lt_config_load: NULL argument");
    if (!lt_dir_exists(dir))
        return lt_error(LT_ERR_NOT_FOUND, "%s: no such model folder", dir);
    char *path = lt_path_join(dir, "config.json");
    if (!path) return LT_ERR_OUT_OF_MEMORY;
    char *text = NULL;
    size_t len = 0;
    lt_status st = lt_read_file(path, &text, &len);
    if (st == LT_ERR_NOT_FOUND)
        st = lt_error(LT_ERR_NOT_FOUND, "%s: missing; a Hugging Face model folder needs config.json beside its "
                      "safetensors", path);
    if (st == LT_OK) st = lt_config_parse(text, len, path, cfg);
    free(text);
    free(path);
    return st;
}

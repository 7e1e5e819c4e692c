/* config.c - config.json of a Hugging Face causal LM into lt_config: the Hub style (top-level
 * rope_theta / rope_scaling, torch_dtype) and the transformers-5 style (rope_parameters, dtype),
 * with bitsandbytes 4-bit quantization_config detection. Each family's reader fills the layer
 * description (norms, activation, rope, attention options, fused projections) that the graph,
 * generation and the backends' decoders execute; the rotary frequencies of every rope_type are
 * computed here as transformers' modeling_rope_utils does. */
#include "model/model.h"
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The families loratune runs: architecture, model_type, q/k/v biases forced on. */
static const struct { const char *arch, *model_type; int family, bias; } lt_archs[] = {
    {"Qwen2ForCausalLM", "qwen2", LT_FAMILY_QWEN2, 1},
    {"LlamaForCausalLM", "llama", LT_FAMILY_LLAMA, 0},
    {"MistralForCausalLM", "mistral", LT_FAMILY_MISTRAL, 0},
    {"Qwen3ForCausalLM", "qwen3", LT_FAMILY_QWEN3, 0},
    {"Gemma2ForCausalLM", "gemma2", LT_FAMILY_GEMMA2, 0},
    {"Gemma3ForCausalLM", "gemma3_text", LT_FAMILY_GEMMA3, 0},
    {"Phi3ForCausalLM", "phi3", LT_FAMILY_PHI3, 0},
};
#define LT_N_ARCHS (sizeof lt_archs / sizeof lt_archs[0])
#define LT_SUPPORTED_ARCHS "Qwen2ForCausalLM, LlamaForCausalLM, MistralForCausalLM, Qwen3ForCausalLM, " \
                           "Gemma2ForCausalLM, Gemma3ForCausalLM, Phi3ForCausalLM"

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

static const char *const rope_names[] = {"default", "linear", "dynamic", "yarn", "llama3", "longrope"};

static lt_status float_list(json_t *a, const char *path, const char *key, int n, float *out) {
    if (!json_is_array(a) || (int)json_array_size(a) != n)
        return lt_error(LT_ERR_FORMAT, "%s: rope %s must be a list of head_dim/2 = %d numbers", path, key, n);
    for (int i = 0; i < n; i++) {
        json_t *v = json_array_get(a, (size_t)i);
        if (!json_is_number(v)) return lt_error(LT_ERR_FORMAT, "%s: rope %s[%d] is not a number", path, key, i);
        out[i] = (float)json_number_value(v);
    }
    return LT_OK;
}

/* One rope description from a rope_scaling / rope_parameters object (obj may be NULL: default).
 * theta is the base already found; root gives original_max_position_embeddings where a family
 * keeps it at the top level (Phi-3). */
static lt_status parse_rope(json_t *obj, json_t *root, const char *path, const char *key, const lt_config *cfg,
                            double theta, lt_rope_desc *r) {
    memset(r, 0, sizeof *r);
    r->kind = LT_ROPE_DEFAULT;
    r->theta = theta;
    r->factor = 1.0;
    r->max_pos = cfg->max_position_embeddings;
    r->original_max_pos = cfg->max_position_embeddings;
    r->beta_fast = 32.0;
    r->beta_slow = 1.0;
    r->truncate = 1;
    if (!obj || json_is_null(obj)) return LT_OK;
    if (!json_is_object(obj)) return lt_error(LT_ERR_FORMAT, "%s: \"%s\" is not an object", path, key);
    json_t *t = json_object_get(obj, "rope_type");
    if (!t) t = json_object_get(obj, "type");
    const char *ts = json_is_string(t) ? json_string_value(t) : "default";
    int kind = -1;
    for (int i = 0; i < (int)(sizeof rope_names / sizeof rope_names[0]); i++)
        if (!strcmp(ts, rope_names[i])) kind = i;
    if (!strcmp(ts, "su")) kind = LT_ROPE_LONGROPE; /* Phi-3's older name */
    if (kind < 0)
        return lt_error(LT_ERR_UNSUPPORTED, "%s: %s.rope_type \"%s\" is not supported (loratune implements default, "
                        "linear, dynamic, yarn, llama3 and longrope)", path, key, ts);
    r->kind = kind;
    json_t *th = json_object_get(obj, "rope_theta");
    if (json_is_number(th)) r->theta = json_number_value(th);
    lt_status st;
#define N(k, dst) do { json_t *v_ = json_object_get(obj, k); \
        if (v_ && !json_is_null(v_)) { if (!json_is_number(v_)) return lt_error(LT_ERR_FORMAT, "%s: %s.%s is not a number", path, key, k); \
            dst = json_number_value(v_); } } while (0)
    N("factor", r->factor);
    double omp = 0;
    N("original_max_position_embeddings", omp);
    if (omp <= 0 && root) { json_t *v = json_object_get(root, "original_max_position_embeddings"); if (json_is_number(v)) omp = json_number_value(v); }
    if (omp > 0) r->original_max_pos = (int32_t)omp;
    N("low_freq_factor", r->low_freq_factor);
    N("high_freq_factor", r->high_freq_factor);
    N("beta_fast", r->beta_fast);
    N("beta_slow", r->beta_slow);
    N("mscale", r->mscale);
    N("mscale_all_dim", r->mscale_all_dim);
    N("attention_factor", r->attention_factor);
    double prf = 1.0; /* transformers 5 keeps partial_rotary_factor here (Phi-4-mini: 0.75), not at the top level */
    N("partial_rotary_factor", prf);
#undef N
    if (prf != 1.0)
        return lt_error(LT_ERR_UNSUPPORTED, "%s: %s.partial_rotary_factor %g is not supported (rope over the whole "
                        "head only)", path, key, prf);
    json_t *tr = json_object_get(obj, "truncate");
    if (json_is_boolean(tr)) r->truncate = json_is_true(tr);
    if ((kind == LT_ROPE_LINEAR || kind == LT_ROPE_DYNAMIC || kind == LT_ROPE_YARN || kind == LT_ROPE_LLAMA3) &&
        !(r->factor > 0))
        return lt_error(LT_ERR_FORMAT, "%s: %s.factor must be positive for rope_type \"%s\"", path, key, ts);
    if (kind == LT_ROPE_LLAMA3 && !(r->high_freq_factor > r->low_freq_factor && r->low_freq_factor > 0))
        return lt_error(LT_ERR_FORMAT, "%s: %s needs low_freq_factor > 0 and high_freq_factor > low_freq_factor for "
                        "rope_type llama3", path, key);
    if (kind == LT_ROPE_YARN && json_object_get(obj, "original_max_position_embeddings"))
        r->factor = (double)cfg->max_position_embeddings / (double)r->original_max_pos; /* as transformers */
    if (kind == LT_ROPE_LONGROPE) {
        int half = cfg->head_dim / 2;
        if (half > LT_ROPE_MAX_HALF)
            return lt_error(LT_ERR_UNSUPPORTED, "%s: head_dim %d is above the %d longrope supports", path, cfg->head_dim,
                            2 * LT_ROPE_MAX_HALF);
        if ((st = float_list(json_object_get(obj, "short_factor"), path, "short_factor", half, r->short_factor)))
            return st;
        if ((st = float_list(json_object_get(obj, "long_factor"), path, "long_factor", half, r->long_factor)))
            return st;
        if (omp > 0) r->factor = (double)cfg->max_position_embeddings / (double)r->original_max_pos;
    }
    return LT_OK;
}

/* ---- rotary frequencies (modeling_rope_utils), float32 as torch computes them ---- */
static void default_inv_freq(double theta, int32_t hd, float *f) {
    for (int i = 0; i < hd / 2; i++) f[i] = 1.0f / powf((float)theta, (float)(2 * i) / (float)hd);
}

static double yarn_mscale(double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * log(scale) + 1.0; }

static double yarn_corr_dim(double rot, int32_t hd, double base, double maxpos) {
    return (hd * log(maxpos / (rot * 2 * M_PI))) / (2 * log(base));
}

int lt_rope_is_plain(const lt_rope_desc *r, int64_t seq_len) {
    if (r->kind == LT_ROPE_DEFAULT) return 1;
    if (r->kind == LT_ROPE_DYNAMIC) return seq_len <= r->max_pos;
    if (r->kind == LT_ROPE_LINEAR) return r->factor == 1.0;
    return 0;
}

void lt_rope_inv_freq(const lt_rope_desc *r, int32_t hd, int64_t seq_len, float *f, float *af) {
    const int half = hd / 2;
    *af = 1.0f;
    switch (r->kind) {
    case LT_ROPE_LINEAR:
        default_inv_freq(r->theta, hd, f);
        for (int i = 0; i < half; i++) f[i] = f[i] / (float)r->factor;
        break;
    case LT_ROPE_DYNAMIC: {
        double base = r->theta;
        if (seq_len > r->max_pos)
            base = base * pow(r->factor * (double)seq_len / (double)r->max_pos - (r->factor - 1), (double)hd / (hd - 2));
        default_inv_freq(base, hd, f);
        break;
    }
    case LT_ROPE_LLAMA3: {
        default_inv_freq(r->theta, hd, f);
        const float factor = (float)r->factor, lo = (float)r->low_freq_factor, hi = (float)r->high_freq_factor;
        const double old = (double)r->original_max_pos;
        const float lo_wl = (float)(old / r->low_freq_factor), hi_wl = (float)(old / r->high_freq_factor);
        for (int i = 0; i < half; i++) {
            const float wl = (float)(2 * M_PI) / f[i];
            float v = wl > lo_wl ? f[i] / factor : f[i];
            if (!(wl < hi_wl) && !(wl > lo_wl)) {
                const float smooth = ((float)old / wl - lo) / (hi - lo);
                v = (1.0f - smooth) * v / factor + smooth * v;
            }
            f[i] = v;
        }
        break;
    }
    case LT_ROPE_YARN: {
        const double factor = r->factor;
        double att = r->attention_factor;
        if (!(att > 0)) {
            if (r->mscale != 0 && r->mscale_all_dim != 0)
                att = yarn_mscale(factor, r->mscale) / yarn_mscale(factor, r->mscale_all_dim);
            else
                att = yarn_mscale(factor, 1.0);
        }
        *af = (float)att;
        double low = yarn_corr_dim(r->beta_fast, hd, r->theta, r->original_max_pos);
        double high = yarn_corr_dim(r->beta_slow, hd, r->theta, r->original_max_pos);
        if (r->truncate) { low = floor(low); high = ceil(high); }
        if (low < 0) low = 0;
        if (high > hd - 1) high = hd - 1;
        if (low == high) high += 0.001;
        for (int i = 0; i < half; i++) {
            const float pf = powf((float)r->theta, (float)(2 * i) / (float)hd);
            const float extra = 1.0f / pf, inter = 1.0f / ((float)factor * pf);
            float ramp = ((float)i - (float)low) / (float)(high - low);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            const float ef = 1.0f - ramp; /* inv_freq_extrapolation_factor */
            f[i] = inter * (1.0f - ef) + extra * ef;
        }
        break;
    }
    case LT_ROPE_LONGROPE: {
        double att = r->attention_factor;
        if (!(att > 0))
            att = r->factor <= 1.0 ? 1.0 : sqrt(1 + log(r->factor) / log((double)r->original_max_pos));
        *af = (float)att;
        const float *ext = seq_len > r->original_max_pos ? r->long_factor : r->short_factor;
        for (int i = 0; i < half; i++)
            f[i] = 1.0f / (ext[i] * powf((float)r->theta, (float)(2 * i) / (float)hd));
        break;
    }
    default:
        default_inv_freq(r->theta, hd, f);
        break;
    }
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

    const int fam = lt_archs[ai].family;
    cfg->family = fam;
    const int gemma = fam == LT_FAMILY_GEMMA2 || fam == LT_FAMILY_GEMMA3;

    /* the MLP's activation: hidden_act (hidden_activation in Gemma configs) */
    json_t *act = json_object_get(root, gemma ? "hidden_activation" : "hidden_act");
    if (gemma && (!act || json_is_null(act))) act = json_object_get(root, "hidden_act");
    const char *acts = json_is_string(act) ? json_string_value(act) : gemma ? "gelu_pytorch_tanh" : "silu";
    if (!strcmp(acts, "silu") || !strcmp(acts, "swish")) cfg->act = LT_ACT_SILU;
    else if (!strcmp(acts, "gelu_pytorch_tanh") || (gemma && !strcmp(acts, "gelu"))) cfg->act = LT_ACT_GELU_TANH;
    else {
        st = lt_error(LT_ERR_UNSUPPORTED, "%s: %s \"%s\" is not supported (silu, gelu_pytorch_tanh)", path,
                      gemma ? "hidden_activation" : "hidden_act", acts);
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
    /* Gemma ties its head unless the config says otherwise (transformers' default there) */
    T(get_bool(root, path, "tie_word_embeddings", gemma, &cfg->tie_word_embeddings));
    if (lt_archs[ai].bias) cfg->attention_bias = 1; /* Qwen2 hard-codes q/k/v biases */
    else T(get_bool(root, path, "attention_bias", 0, &cfg->attention_bias));
    if (cfg->hidden_size <= 0 || cfg->num_heads <= 0 || cfg->num_layers <= 0 || cfg->vocab_size <= 0 ||
        cfg->intermediate_size <= 0 || cfg->num_kv_heads <= 0) {
        st = lt_error(LT_ERR_FORMAT, "%s: vocab_size, hidden_size, intermediate_size, num_hidden_layers, "
                      "num_attention_heads and num_key_value_heads must be positive", path);
        goto done;
    }
    if (cfg->num_layers > LT_MAX_LAYERS) {
        st = lt_error(LT_ERR_UNSUPPORTED, "%s: %d layers, loratune runs at most %d", path, cfg->num_layers, LT_MAX_LAYERS);
        goto done;
    }
    T(get_int(root, path, "head_dim", 0, cfg->hidden_size / cfg->num_heads, &cfg->head_dim));
    if (cfg->head_dim <= 0 || cfg->head_dim % 2 || cfg->head_dim > 2 * LT_ROPE_MAX_HALF) {
        st = lt_error(LT_ERR_FORMAT, "%s: head_dim %d must be positive, even and at most %d", path, cfg->head_dim,
                      2 * LT_ROPE_MAX_HALF);
        goto done;
    }
    if (cfg->num_heads % cfg->num_kv_heads) {
        st = lt_error(LT_ERR_FORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", path,
                      cfg->num_heads, cfg->num_kv_heads);
        goto done;
    }
    if (!(cfg->rms_norm_eps > 0)) { st = lt_error(LT_ERR_FORMAT, "%s: rms_norm_eps must be positive", path); goto done; }
    {
        double prf = 1.0;
        T(get_num(root, path, "partial_rotary_factor", 1.0, &prf));
        if (prf != 1.0) {
            st = lt_error(LT_ERR_UNSUPPORTED, "%s: partial_rotary_factor %g is not supported (rope over the whole head "
                          "only)", path, prf);
            goto done;
        }
    }

    /* the layer description of each family */
    cfg->attn_scale = (float)(1.0 / sqrt((double)cfg->head_dim));
    cfg->embed_scale = 1.0f;
    cfg->qk_norm = fam == LT_FAMILY_QWEN3 || fam == LT_FAMILY_GEMMA3;
    cfg->fused_qkv = cfg->fused_gate_up = fam == LT_FAMILY_PHI3;
    if (gemma) {
        cfg->norm_one_plus = 1;
        cfg->sandwich_norm = 1;
        cfg->embed_scale = sqrtf((float)cfg->hidden_size);
        double qpa = cfg->head_dim;
        T(get_num(root, path, "query_pre_attn_scalar", cfg->head_dim, &qpa));
        if (!(qpa > 0)) { st = lt_error(LT_ERR_FORMAT, "%s: query_pre_attn_scalar must be positive", path); goto done; }
        cfg->attn_scale = (float)pow(qpa, -0.5);
        double cap = 0;
        T(get_num(root, path, "attn_logit_softcapping", 0, &cap));
        cfg->attn_softcap = (float)cap;
        cap = 0;
        T(get_num(root, path, "final_logit_softcapping", 0, &cap));
        cfg->final_softcap = (float)cap;
        if (cfg->attn_softcap < 0 || cfg->final_softcap < 0) {
            st = lt_error(LT_ERR_FORMAT, "%s: logit soft-capping values must be positive", path);
            goto done;
        }
    }
    if (fam == LT_FAMILY_PHI3 && cfg->attention_bias) {
        st = lt_error(LT_ERR_UNSUPPORTED, "%s: attention_bias on Phi-3's fused qkv_proj is not supported", path);
        goto done;
    }

    /* sliding window: which layers, and how wide */
    {
        json_t *sw = json_object_get(root, "sliding_window");
        int32_t win = 0;
        if (json_is_integer(sw)) win = (int32_t)json_integer_value(sw);
        else if (sw && !json_is_null(sw)) { st = lt_error(LT_ERR_FORMAT, "%s: sliding_window is not an integer", path); goto done; }
        if (win < 0) { st = lt_error(LT_ERR_FORMAT, "%s: sliding_window %d is negative", path, win); goto done; }
        json_t *lt = json_object_get(root, "layer_types");
        if (json_is_array(lt)) {
            if ((int)json_array_size(lt) != cfg->num_layers) {
                st = lt_error(LT_ERR_FORMAT, "%s: layer_types has %zu entries for %d layers", path, json_array_size(lt),
                              cfg->num_layers);
                goto done;
            }
            for (int l = 0; l < cfg->num_layers; l++) {
                json_t *e = json_array_get(lt, (size_t)l);
                const char *es = json_is_string(e) ? json_string_value(e) : "";
                if (!strcmp(es, "sliding_attention")) cfg->layer_sliding[l] = 1;
                else if (strcmp(es, "full_attention")) {
                    st = lt_error(LT_ERR_UNSUPPORTED, "%s: layer_types[%d] \"%s\" is not supported (full_attention, "
                                  "sliding_attention)", path, l, es);
                    goto done;
                }
            }
        } else if (fam == LT_FAMILY_MISTRAL || fam == LT_FAMILY_PHI3) {
            for (int l = 0; l < cfg->num_layers; l++) cfg->layer_sliding[l] = win > 0;
        } else if (fam == LT_FAMILY_GEMMA2) {
            for (int l = 0; l < cfg->num_layers; l++) cfg->layer_sliding[l] = (l + 1) % 2 != 0;
        } else if (fam == LT_FAMILY_GEMMA3) {
            int32_t pat = 6;
            T(get_int(root, path, "sliding_window_pattern", 0, 6, &pat));
            for (int l = 0; l < cfg->num_layers; l++) cfg->layer_sliding[l] = pat > 0 && (l + 1) % pat != 0;
        } else if (fam == LT_FAMILY_QWEN2 || fam == LT_FAMILY_QWEN3) {
            int32_t use = 0, mwl = cfg->num_layers;
            T(get_bool(root, path, "use_sliding_window", 0, &use));
            T(get_int(root, path, "max_window_layers", 0, cfg->num_layers, &mwl));
            for (int l = 0; l < cfg->num_layers; l++) cfg->layer_sliding[l] = use && win > 0 && l >= mwl;
        }
        int any = 0;
        for (int l = 0; l < cfg->num_layers; l++) any |= cfg->layer_sliding[l];
        if (any && win <= 0) {
            st = lt_error(LT_ERR_FORMAT, "%s: sliding-window layers without a positive sliding_window", path);
            goto done;
        }
        cfg->sliding_window = any ? win : 0;
    }

    /* rope: v5 keeps it in rope_parameters (per layer type in Gemma 3), the Hub style at the top
     * level with rope_scaling */
    {
        json_t *rp = json_object_get(root, "rope_parameters");
        json_t *rs = json_object_get(root, "rope_scaling");
        json_t *rp_full = rp, *rp_local = NULL;
        if (json_is_object(rp) && json_is_object(json_object_get(rp, "full_attention"))) {
            rp_full = json_object_get(rp, "full_attention");
            rp_local = json_object_get(rp, "sliding_attention");
        }
        double theta = 10000.0;
        if (json_is_object(rp_full) && json_object_get(rp_full, "rope_theta"))
            T(get_num(rp_full, path, "rope_theta", 10000.0, &theta));
        else T(get_num(root, path, "rope_theta", 10000.0, &theta));
        json_t *scaling = json_is_object(rp_full) ? rp_full : rs;
        T(parse_rope(scaling, root, path, json_is_object(rp_full) ? "rope_parameters" : "rope_scaling", cfg, theta,
                     &cfg->rope));
        if (json_is_object(rp_full) && json_is_object(rs) && rp_full != rs) {
            /* both given: a rope_scaling that disagrees with rope_parameters is not guessed at */
            lt_rope_desc other;
            T(parse_rope(rs, root, path, "rope_scaling", cfg, theta, &other));
            if (other.kind != cfg->rope.kind) {
                st = lt_error(LT_ERR_FORMAT, "%s: rope_scaling and rope_parameters name different rope types", path);
                goto done;
            }
        }
        cfg->rope_local = cfg->rope;
        if (json_is_object(rp_local)) {
            double lt_theta = 10000.0;
            T(get_num(rp_local, path, "rope_theta", 10000.0, &lt_theta));
            T(parse_rope(rp_local, root, path, "rope_parameters.sliding_attention", cfg, lt_theta, &cfg->rope_local));
        } else if (fam == LT_FAMILY_GEMMA3) {
            double lb = 10000.0;
            T(get_num(root, path, "rope_local_base_freq", 10000.0, &lb));
            T(parse_rope(NULL, root, path, "rope_local_base_freq", cfg, lb, &cfg->rope_local));
        }
        cfg->rope_theta = cfg->rope.theta;
        if (!(cfg->rope.theta > 0) || !(cfg->rope_local.theta > 0)) {
            st = lt_error(LT_ERR_FORMAT, "%s: rope_theta must be positive", path);
            goto done;
        }
    }

    if (json_is_true(json_object_get(root, "mlp_bias"))) {
        st = lt_error(LT_ERR_UNSUPPORTED, "%s: mlp_bias true is not supported (MLP projections without biases only)", path);
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

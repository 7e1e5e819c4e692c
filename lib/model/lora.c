/* lora.c - the LoRA adapter of a model: PEFT's initialisation (A kaiming-uniform a=sqrt(5),
 * B = 0), targets, and the PEFT on-disk format (adapter_config.json written as PEFT 0.21
 * writes it, adapter_model.safetensors in F32 with PEFT's key names), read and written.
 *
 * Randomness: A[i] of layer l, projection p is drawn from the Philox stream l*7+p at index i
 * under params->seed, so the same seed gives the same adapter on every backend and machine. It
 * cannot equal torch's generator (a different RNG), only its distribution U(-1/sqrt(in), 1/sqrt(in)). */
#include "model/model_io.h"
#include "core/rng.h"
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LT_PEFT_PREFIX "base_model.model.model.layers."

void lt_lora_params_init(lt_lora_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->r = 16;
    p->alpha = 32.0f;
    p->dropout = 0.1f;
    p->use_rslora = 0;
    p->targets = LT_TARGET_ALL;
    p->seed = 3407;
}

/* "q_proj" / "q" -> index, -1 when unknown */
static int proj_index(const char *s, size_t n) {
    static const char *const short_names[LT_PROJ_COUNT] = {"q", "k", "v", "o", "gate", "up", "down"};
    for (int p = 0; p < LT_PROJ_COUNT; p++) {
        if (strlen(lt_proj_names[p]) == n && !strncmp(s, lt_proj_names[p], n)) return p;
        if (strlen(short_names[p]) == n && !strncmp(s, short_names[p], n)) return p;
    }
    return -1;
}

/* a module name -> LT_TARGET_* bits (Phi-3's fused modules: the projections they hold), 0 when
 * unknown */
static uint32_t target_bits(const char *s, size_t n) {
    if (n == 8 && !strncmp(s, "qkv_proj", 8)) return LT_TARGET_Q | LT_TARGET_K | LT_TARGET_V;
    if (n == 12 && !strncmp(s, "gate_up_proj", 12)) return LT_TARGET_GATE | LT_TARGET_UP;
    int p = proj_index(s, n);
    return p < 0 ? 0 : 1u << p;
}

lt_status lt_lora_targets_parse(const char *names, uint32_t *mask) {
    LT_CHECK_ARG(names && mask, "lt_lora_targets_parse: NULL argument");
    uint32_t m = 0;
    const char *s = names;
    while (*s) {
        while (*s == ' ' || *s == ',') s++;
        if (!*s) break;
        const char *e = s;
        while (*e && *e != ',' && *e != ' ') e++;
        size_t n = (size_t)(e - s);
        if ((n == 3 && !strncmp(s, "all", 3)) || (n == 10 && !strncmp(s, "all-linear", 10))) m |= LT_TARGET_ALL;
        else {
            uint32_t bits = target_bits(s, n);
            if (!bits)
                return lt_error(LT_ERR_INVALID_ARGUMENT, "LoRA target '%.*s' is unknown; use q_proj, k_proj, v_proj, "
                                "o_proj, gate_proj, up_proj, down_proj, qkv_proj, gate_up_proj (or q,k,v,o,gate,up,down, "
                                "or all)", (int)n, s);
            m |= bits;
        }
        s = e;
    }
    if (!m) return lt_error(LT_ERR_INVALID_ARGUMENT, "no LoRA targets in '%s'", names);
    *mask = m;
    return LT_OK;
}

static void lora_tensor_free(lt_backend *be, lt_lora_tensor *t) {
    if (t->A) be->ops.free(be, t->A);
    if (t->B) be->ops.free(be, t->B);
    if (t->dA) be->ops.free(be, t->dA);
    if (t->dB) be->ops.free(be, t->dB);
    t->A = t->B = t->dA = t->dB = NULL;
    t->r = 0;
}

void lt_model_lora_release(lt_model *m) {
    if (!m || !m->layers || !m->be) return;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++) lora_tensor_free(m->be, &m->layers[l].lora[p]);
    m->has_lora = 0;
}

static lt_status check_lora_params(const lt_lora_params *p) {
    LT_CHECK_ARG(p->r > 0 && p->r <= 4096, "LoRA rank r = %d must be in [1, 4096]", p->r);
    LT_CHECK_ARG(isfinite(p->alpha) && p->alpha > 0, "LoRA alpha %g must be positive", (double)p->alpha);
    LT_CHECK_ARG(p->dropout >= 0 && p->dropout < 1, "LoRA dropout %g must be in [0, 1)", (double)p->dropout);
    LT_CHECK_ARG(p->targets && !(p->targets & ~LT_TARGET_ALL), "LoRA targets mask 0x%x is empty or has unknown bits",
                 p->targets);
    return LT_OK;
}

/* Allocates a complete adapter into a fresh table (the model's stays untouched on failure),
 * fills A and B from host_A/host_B ([L*7] f32 arrays, NULL entries for untargeted) or with
 * PEFT's initialisation when host_A is NULL, then swaps it in. */
static lt_status lora_install(lt_model *m, const lt_lora_params *p, float *const *host_A, float *const *host_B) {
    lt_backend *be = m->be;
    int L = m->cfg.num_layers;
    lt_lora_tensor *tab = lt_calloc((size_t)L * LT_PROJ_COUNT, sizeof *tab, "the LoRA table");
    if (!tab) return LT_ERR_OUT_OF_MEMORY;
    float *scratch = NULL;
    size_t scratch_n = 0;
    lt_status s = LT_OK;
    for (int l = 0; s == LT_OK && l < L; l++) {
        for (int q = 0; s == LT_OK && q < LT_PROJ_COUNT; q++) {
            lt_lora_tensor *t = &tab[l * LT_PROJ_COUNT + q];
            lt_proj_dims(&m->cfg, q, &t->in, &t->out);
            if (!(p->targets & lt_proj_target_mask(&m->cfg, q))) continue;
            t->r = p->r;
            size_t na = (size_t)(t->r * t->in), nb = (size_t)(t->out * t->r);
            s = be->ops.alloc(be, na * 4, (void **)&t->A);
            if (s == LT_OK) s = be->ops.alloc(be, nb * 4, (void **)&t->B);
            if (s == LT_OK) s = be->ops.alloc(be, na * 4, (void **)&t->dA);   /* zero-filled */
            if (s == LT_OK) s = be->ops.alloc(be, nb * 4, (void **)&t->dB);
            if (s != LT_OK) break;
            if (host_A) {
                s = be->ops.upload(be, t->A, host_A[l * LT_PROJ_COUNT + q], na * 4);
                if (s == LT_OK) s = be->ops.upload(be, t->B, host_B[l * LT_PROJ_COUNT + q], nb * 4);
                continue;
            }
            /* kaiming_uniform_(a=sqrt(5)) on A [r, in]: gain sqrt(2/(1+5)), bound gain*sqrt(3/in) = 1/sqrt(in) */
            if (na > scratch_n) {
                free(scratch);
                scratch = lt_malloc(na * 4, "LoRA initialisation");
                scratch_n = scratch ? na : 0;
                if (!scratch) { s = LT_ERR_OUT_OF_MEMORY; break; }
            }
            float bound = 1.0f / sqrtf((float)t->in);
            uint64_t stream = (uint64_t)l * LT_PROJ_COUNT + (uint64_t)q;
            for (size_t i = 0; i < na; i++) scratch[i] = (2.0f * lt_rng_uniform(p->seed, stream, i) - 1.0f) * bound;
            s = be->ops.upload(be, t->A, scratch, na * 4);
            /* B stays zero (alloc zero-fills), so the adapter starts as the identity */
        }
    }
    free(scratch);
    if (s == LT_OK) s = be->ops.sync(be);
    if (s != LT_OK) {
        for (int i = 0; i < L * LT_PROJ_COUNT; i++) lora_tensor_free(be, &tab[i]);
        free(tab);
        return lt_error_wrap(s, "allocating the LoRA adapter (r=%d)", p->r);
    }
    lt_model_lora_release(m);
    for (int l = 0; l < L; l++)
        for (int q = 0; q < LT_PROJ_COUNT; q++) m->layers[l].lora[q] = tab[l * LT_PROJ_COUNT + q];
    free(tab);
    m->lora = *p;
    m->lora.struct_size = sizeof m->lora;
    m->lora_scale = p->use_rslora ? p->alpha / sqrtf((float)p->r) : p->alpha / (float)p->r;
    m->has_lora = 1;
    m->lora_enabled = 1;
    return LT_OK;
}

lt_status lt_model_add_lora(lt_model *m, const lt_lora_params *params) {
    LT_CHECK_ARG(m, "lt_model_add_lora: NULL model");
    lt_lora_params p;
    lt_lora_params_init(&p);
    if (params) {
        LT_CHECK_ARG(params->struct_size >= offsetof(lt_lora_params, seed),
                     "lt_model_add_lora: params->struct_size %u is too small (call lt_lora_params_init)",
                     params->struct_size);
        memcpy(&p, params, params->struct_size < sizeof p ? params->struct_size : sizeof p);
    }
    LT_TRY(check_lora_params(&p));
    return lora_install(m, &p, NULL, NULL);
}

lt_status lt_model_set_lora_enabled(lt_model *m, int32_t enabled) {
    LT_CHECK_ARG(m, "lt_model_set_lora_enabled: NULL model");
    if (enabled && !m->has_lora)
        return lt_error(LT_ERR_STATE, "no LoRA adapter is attached (call lt_model_add_lora or lt_model_load_adapter)");
    m->lora_enabled = enabled ? 1 : 0;
    return LT_OK;
}

/* ---- adapter_config.json as Python's json.dumps(indent=2, sort_keys=True) writes it ----
 * The keys are those PEFT 0.21.0 writes for a LoraConfig (dataclasses.asdict of PeftConfigMixin,
 * PeftConfig and LoraConfig, less runtime_config), with LoraConfig's defaults for the features
 * loratune does not use. */

typedef struct jbuf { char *p; size_t n, cap; int oom; } jbuf;
static void jb_put(jbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = (b->n + n + 1) * 2 + 256;
        char *np = realloc(b->p, nc);
        if (!np) { b->oom = 1; return; }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void jb_str(jbuf *b, const char *s) { jb_put(b, s, strlen(s)); }
/* A JSON string with ensure_ascii=True: non-ASCII as \uXXXX (surrogate pairs above U+FFFF). */
static void jb_pystr(jbuf *b, const char *s) {
    jb_put(b, "\"", 1);
    const unsigned char *p = (const unsigned char *)s;
    char tmp[16];
    while (*p) {
        uint32_t c = *p;
        int len = 1;
        if (c >= 0xF0 && p[1] && p[2] && p[3]) { c = ((c & 7u) << 18) | ((p[1] & 63u) << 12) | ((p[2] & 63u) << 6) | (p[3] & 63u); len = 4; }
        else if (c >= 0xE0 && p[1] && p[2]) { c = ((c & 15u) << 12) | ((p[1] & 63u) << 6) | (p[2] & 63u); len = 3; }
        else if (c >= 0xC0 && p[1]) { c = ((c & 31u) << 6) | (p[1] & 63u); len = 2; }
        p += len;
        if (c == '"') jb_str(b, "\\\"");
        else if (c == '\\') jb_str(b, "\\\\");
        else if (c == '\n') jb_str(b, "\\n");
        else if (c == '\r') jb_str(b, "\\r");
        else if (c == '\t') jb_str(b, "\\t");
        else if (c == '\b') jb_str(b, "\\b");
        else if (c == '\f') jb_str(b, "\\f");
        else if (c < 0x20 || (c >= 0x7f && c < 0x10000)) {
            if (c < 0x7f || c >= 0x80) { snprintf(tmp, sizeof tmp, "\\u%04x", c); jb_str(b, tmp); }
            else jb_put(b, "\x7f", 1);
        } else if (c >= 0x10000) {
            c -= 0x10000;
            snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", 0xD800 + (c >> 10), 0xDC00 + (c & 0x3FF));
            jb_str(b, tmp);
        } else jb_put(b, (const char *)&c, 1);
    }
    jb_put(b, "\"", 1);
}
/* Python's repr of a float given as float32: the shortest decimal that reads back the same. */
static void py_float(char *buf, size_t cap, float v) {
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, cap, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".eEn")) strncat(buf, ".0", cap - strlen(buf) - 1);
}

static char *adapter_config_json(const lt_model *m) {
    jbuf b = {0};
    char num[64];
    const lt_lora_params *p = &m->lora;
    /* keys in sorted order, as sort_keys=True gives */
    jb_str(&b, "{\n  \"alora_invocation_tokens\": null,\n  \"alpha_pattern\": {},\n  \"arrow_config\": null,\n"
               "  \"auto_mapping\": null,\n  \"base_model_name_or_path\": ");
    jb_pystr(&b, m->dir ? m->dir : "");
    jb_str(&b, ",\n  \"bias\": \"none\",\n  \"corda_config\": null,\n  \"ensure_weight_tying\": false,\n"
               "  \"eva_config\": null,\n  \"exclude_modules\": null,\n  \"fan_in_fan_out\": false,\n"
               "  \"inference_mode\": true,\n  \"init_lora_weights\": true,\n  \"kasa_config\": null,\n"
               "  \"layer_replication\": null,\n"
               "  \"layers_pattern\": null,\n  \"layers_to_transform\": null,\n  \"loftq_config\": {},\n"
               "  \"lora_alpha\": ");
    /* PEFT keeps the type the user gave: an integral alpha is written as an int (32, not 32.0) */
    if (p->alpha == floorf(p->alpha) && fabsf(p->alpha) < 1e9f) snprintf(num, sizeof num, "%lld", (long long)p->alpha);
    else py_float(num, sizeof num, p->alpha);
    jb_str(&b, num);
    jb_str(&b, ",\n  \"lora_bias\": false,\n  \"lora_dropout\": ");
    py_float(num, sizeof num, p->dropout);
    jb_str(&b, num);
    jb_str(&b, ",\n  \"lora_ga_config\": null,\n  \"megatron_config\": null,\n  \"megatron_core\": \"megatron.core\",\n"
               "  \"modules_to_save\": null,\n  \"monteclora_config\": null,\n  \"peft_type\": \"LORA\",\n  \"peft_version\": \"0.21.0\",\n"
               "  \"qalora_group_size\": 16,\n  \"r\": ");
    snprintf(num, sizeof num, "%d", p->r);
    jb_str(&b, num);
    jb_str(&b, ",\n  \"rank_pattern\": {},\n  \"revision\": null,\n  \"target_modules\": [");
    int first = 1;
    for (int q = 0; q < LT_PROJ_COUNT; q++) {
        if (!(p->targets & lt_proj_target_mask(&m->cfg, q))) continue;
        jb_str(&b, first ? "\n    \"" : ",\n    \"");
        jb_str(&b, lt_proj_name(&m->cfg, q));
        jb_str(&b, "\"");
        first = 0;
    }
    jb_str(&b, "\n  ],\n  \"target_parameters\": null,\n  \"task_type\": \"CAUSAL_LM\",\n"
               "  \"trainable_token_indices\": null,\n  \"use_bdlora\": null,\n  \"use_dora\": false,\n"
               "  \"use_qalora\": false,\n  \"use_rslora\": ");
    jb_str(&b, p->use_rslora ? "true" : "false");
    jb_str(&b, ",\n  \"velora_config\": null\n}");
    if (b.oom) { free(b.p); return NULL; }
    return b.p;
}

static void peft_key(const lt_config *c, char *buf, size_t cap, int layer, int proj, char ab) {
    snprintf(buf, cap, LT_PEFT_PREFIX "%d.%s.%s.lora_%c.weight", layer, lt_proj_parent[proj], lt_proj_name(c, proj), ab);
}

/* Saving into a folder that already holds files (a training output: an adapter, logs,
 * checkpoints) cannot rename the two adapter files as one. The new pair is built as
 * "<dir>/.adapter-pending.tmp-<pid>-<n>/", renamed to "<dir>/.adapter-pending/" (the commit
 * point: from then on the new adapter is the adapter), then each file is moved over its final
 * name and the folder removed. A run killed between those moves leaves .adapter-pending/: the
 * loader takes the files still in it, and the next save (or lt_adapter_recover) finishes the
 * moves. Before the commit point the previous adapter is untouched. */
#define LT_ADAPTER_PENDING ".adapter-pending"
static const char *const lt_adapter_files[2] = {"adapter_model.safetensors", "adapter_config.json"};

/* An adapter file's path: in the pending folder while a committed save is being moved in. */
static char *adapter_path(const char *dir, const char *name) {
    char *pend = lt_path_join(dir, LT_ADAPTER_PENDING);
    char *p = pend ? lt_path_join(pend, name) : NULL;
    free(pend);
    if (p && lt_file_exists(p)) return p;
    free(p);
    return lt_path_join(dir, name);
}

/* Finishes a committed save whose files were not all moved in yet. */
static lt_status adapter_roll_forward(const char *dir) {
    char *pend = lt_path_join(dir, LT_ADAPTER_PENDING);
    if (!pend) return LT_ERR_OUT_OF_MEMORY;
    lt_status s = LT_OK;
    if (lt_dir_exists(pend)) {
        for (int i = 0; s == LT_OK && i < 2; i++) {
            char *src = lt_path_join(pend, lt_adapter_files[i]), *dst = lt_path_join(dir, lt_adapter_files[i]);
            if (!src || !dst) s = LT_ERR_OUT_OF_MEMORY;
            else if (lt_file_exists(src) && rename(src, dst) != 0)
                s = lt_error(LT_ERR_IO, "cannot move %s to %s: %s", src, dst, strerror(errno));
            free(src);
            free(dst);
        }
        if (s == LT_OK) s = lt_fs_sync_dir(dir);
        if (s == LT_OK && rmdir(pend) != 0)
            s = lt_error(LT_ERR_IO, "cannot remove %s: %s", pend, strerror(errno));
    }
    free(pend);
    return s;
}

/* Writes the two files into a folder (the weights first: a config without weights would look
 * like an adapter). */
static lt_status write_adapter_files(const char *dir, lt_st_writer *w, const char *json, int overwrite) {
    char *cfg_path = lt_path_join(dir, "adapter_config.json"), *st_path = lt_path_join(dir, "adapter_model.safetensors");
    lt_status s = cfg_path && st_path ? LT_OK : LT_ERR_OUT_OF_MEMORY;
    if (s == LT_OK) s = lt_st_writer_write(w, st_path, overwrite);
    if (s == LT_OK) s = lt_write_file_atomic(cfg_path, json, strlen(json), overwrite);
    free(cfg_path);
    free(st_path);
    return s;
}

lt_status lt_model_save_adapter(const lt_model *m, const char *dir, int32_t overwrite) {
    LT_CHECK_ARG(m && dir && *dir, "lt_model_save_adapter: NULL %s", m ? "dir" : "model");
    if (!m->has_lora)
        return lt_error(LT_ERR_STATE, "no LoRA adapter is attached to save (call lt_model_add_lora first)");
    int existed = lt_dir_exists(dir);
    lt_status s = LT_OK;
    if (existed) {
        lt_fs_clean_stale(dir, LT_ADAPTER_PENDING);
        s = adapter_roll_forward(dir);
        if (s != LT_OK) return lt_error_wrap(s, "finishing an interrupted adapter save in %s", dir);
    } else if (lt_file_exists(dir)) {
        return lt_error(LT_ERR_EXISTS, "%s exists and is not a folder", dir);
    }
    char *cfg_path = lt_path_join(dir, "adapter_config.json");
    char *st_path = lt_path_join(dir, "adapter_model.safetensors");
    char *json = adapter_config_json(m);
    lt_st_writer *w = NULL;
    int L = m->cfg.num_layers;
    float **host = lt_calloc((size_t)L * LT_PROJ_COUNT * 2, sizeof *host, "the adapter");
    if (!cfg_path || !st_path || !json || !host) s = lt_error(LT_ERR_OUT_OF_MEMORY, "out of memory saving %s", dir);
    /* refuse before writing anything, so that a refused save leaves the folder as it was */
    int has_adapter = existed && (lt_file_exists(cfg_path) || lt_file_exists(st_path));
    if (s == LT_OK && !overwrite && has_adapter)
        s = lt_error(LT_ERR_EXISTS, "%s already exists (pass --overwrite, or overwrite=1, to replace the adapter)",
                     lt_file_exists(cfg_path) ? cfg_path : st_path);
    if (s == LT_OK && (lt_dir_exists(cfg_path) || lt_dir_exists(st_path)))
        s = lt_error(LT_ERR_EXISTS, "%s: an adapter file name is taken by a folder", dir);
    if (s == LT_OK) s = lt_st_writer_new(&w);
    lt_st_writer_require_finite(w);
    for (int l = 0; s == LT_OK && l < L; l++) {
        for (int q = 0; s == LT_OK && q < LT_PROJ_COUNT; q++) {
            const lt_lora_tensor *t = &m->layers[l].lora[q];
            if (!t->A) continue;
            size_t na = (size_t)(t->r * t->in), nb = (size_t)(t->out * t->r);
            float *a = host[(l * LT_PROJ_COUNT + q) * 2] = lt_malloc(na * 4, "lora_A");
            float *bb = host[(l * LT_PROJ_COUNT + q) * 2 + 1] = lt_malloc(nb * 4, "lora_B");
            if (!a || !bb) { s = LT_ERR_OUT_OF_MEMORY; break; }
            s = m->be->ops.download(m->be, a, t->A, na * 4);
            if (s == LT_OK) s = m->be->ops.download(m->be, bb, t->B, nb * 4);
            char key[256];
            int64_t sa[2] = {t->r, t->in}, sb[2] = {t->out, t->r};
            peft_key(&m->cfg, key, sizeof key, l, q, 'A');
            if (s == LT_OK) s = lt_st_writer_add(w, key, LT_ST_F32, 2, sa, a, 0);
            peft_key(&m->cfg, key, sizeof key, l, q, 'B');
            if (s == LT_OK) s = lt_st_writer_add(w, key, LT_ST_F32, 2, sb, bb, 0);
        }
    }
    if (s == LT_OK) s = m->be->ops.sync(m->be);
    if (s == LT_OK && !existed) {
        /* a new folder: built aside and renamed into place as one */
        char *tmp = NULL;
        s = lt_fs_dir_begin(dir, &tmp);
        if (s == LT_OK) s = write_adapter_files(tmp, w, json, 0);
        if (s == LT_OK) s = lt_fs_dir_commit(tmp, dir);
        else lt_fs_dir_abort(tmp);
    } else if (s == LT_OK && lt_fs_dir_is_empty(dir)) {
        s = write_adapter_files(dir, w, json, 0); /* nothing to keep whole but these two */
    } else if (s == LT_OK) {
        char *pend = lt_path_join(dir, LT_ADAPTER_PENDING), *tmp = NULL;
        s = pend ? lt_fs_dir_begin(pend, &tmp) : LT_ERR_OUT_OF_MEMORY;
        if (s == LT_OK) s = write_adapter_files(tmp, w, json, 0);
        if (s == LT_OK) s = lt_fs_dir_commit(tmp, pend);
        else lt_fs_dir_abort(tmp);
        if (s == LT_OK) {
            s = adapter_roll_forward(dir);
            if (s != LT_OK)
                s = lt_error_wrap(s, "the new adapter is complete in %s (loading %s reads it there; the next save "
                                  "finishes the move)", pend, dir);
        }
        free(pend);
    }
    lt_st_writer_free(w);
    for (int i = 0; host && i < L * LT_PROJ_COUNT * 2; i++) free(host[i]);
    free(host); free(json); free(cfg_path); free(st_path);
    return s == LT_OK ? s : lt_error_wrap(s, "saving the adapter to %s", dir);
}

/* ---- loading a PEFT adapter ---- */

static lt_status parse_targets_json(json_t *tm, const char *path, uint32_t *mask) {
    *mask = 0;
    if (json_is_string(tm)) {
        const char *s = json_string_value(tm);
        if (!strcmp(s, "all-linear")) { *mask = LT_TARGET_ALL; return LT_OK; }
        uint32_t bits = target_bits(s, strlen(s));
        if (!bits)
            return lt_error(LT_ERR_UNSUPPORTED, "%s: target_modules \"%s\" (a regular expression) is not supported; "
                            "list the module names", path, s);
        *mask = bits;
        return LT_OK;
    }
    if (!json_is_array(tm) || !json_array_size(tm))
        return lt_error(LT_ERR_FORMAT, "%s: target_modules must be a non-empty list of module names", path);
    size_t i;
    json_t *e;
    json_array_foreach(tm, i, e) {
        const char *s = json_is_string(e) ? json_string_value(e) : "";
        uint32_t bits = target_bits(s, strlen(s));
        if (!bits)
            return lt_error(LT_ERR_UNSUPPORTED, "%s: target module \"%s\" is not one of q_proj, k_proj, v_proj, o_proj, "
                            "gate_proj, up_proj, down_proj, qkv_proj, gate_up_proj", path, s);
        *mask |= bits;
    }
    return LT_OK;
}

static lt_status read_adapter_config(const char *dir, lt_lora_params *p) {
    char *path = adapter_path(dir, "adapter_config.json");
    if (!path) return LT_ERR_OUT_OF_MEMORY;
    char *text = NULL;
    size_t len = 0;
    lt_status s = lt_read_file(path, &text, &len);
    if (s == LT_ERR_NOT_FOUND)
        s = lt_error(LT_ERR_NOT_FOUND, "%s: missing; a PEFT adapter folder holds adapter_config.json and "
                     "adapter_model.safetensors", path);
    json_t *j = NULL;
    if (s == LT_OK) {
        json_error_t je;
        j = json_loadb(text, len, 0, &je);
        if (!json_is_object(j))
            s = lt_error(LT_ERR_FORMAT, "%s: invalid JSON at line %d column %d: %s", path, je.line, je.column,
                         j ? "not an object" : je.text);
    }
    free(text);
    lt_lora_params_init(p);
    p->dropout = 0.0f; /* PEFT's defaults for keys the file leaves out: r 8, alpha 8, dropout 0 */
    p->r = 8;
    p->alpha = 8;
    if (s == LT_OK) {
        json_t *pt = json_object_get(j, "peft_type"), *r = json_object_get(j, "r"),
               *a = json_object_get(j, "lora_alpha"), *d = json_object_get(j, "lora_dropout"),
               *rs = json_object_get(j, "use_rslora"), *tm = json_object_get(j, "target_modules");
        json_t *ap = json_object_get(j, "alpha_pattern"), *rp = json_object_get(j, "rank_pattern"),
               *bias = json_object_get(j, "bias"), *ltt = json_object_get(j, "layers_to_transform"),
               *mts = json_object_get(j, "modules_to_save");
        if (!json_is_string(pt) || strcmp(json_string_value(pt), "LORA"))
            s = lt_error(LT_ERR_UNSUPPORTED, "%s: peft_type is %s; loratune reads LORA adapters", path,
                         json_is_string(pt) ? json_string_value(pt) : "missing");
        else if (r && (!json_is_integer(r) || json_integer_value(r) <= 0 || json_integer_value(r) > 4096))
            s = lt_error(LT_ERR_FORMAT, "%s: r must be a positive integer", path);
        else if (a && (!json_is_number(a) || json_number_value(a) <= 0))
            s = lt_error(LT_ERR_FORMAT, "%s: lora_alpha must be a positive number", path);
        else if (d && (!json_is_number(d) || json_number_value(d) < 0 || json_number_value(d) >= 1))
            s = lt_error(LT_ERR_FORMAT, "%s: lora_dropout must be a number in [0, 1)", path);
        else if (json_is_true(json_object_get(j, "use_dora")))
            s = lt_error(LT_ERR_UNSUPPORTED, "%s: DoRA adapters (use_dora) are not supported", path);
        else if (json_is_true(json_object_get(j, "fan_in_fan_out")))
            s = lt_error(LT_ERR_UNSUPPORTED, "%s: fan_in_fan_out adapters are not supported", path);
        else if (json_is_true(json_object_get(j, "lora_bias")))
            s = lt_error(LT_ERR_UNSUPPORTED, "%s: lora_bias adapters are not supported", path);
        else if (bias && (!json_is_string(bias) || strcmp(json_string_value(bias), "none")))
            s = lt_error(LT_ERR_UNSUPPORTED, "%s: bias other than \"none\" is not supported", path);
        else if ((ap && json_object_size(ap)) || (rp && json_object_size(rp)))
            s = lt_error(LT_ERR_UNSUPPORTED, "%s: per-module rank_pattern / alpha_pattern are not supported", path);
        else if (ltt && !json_is_null(ltt))
            s = lt_error(LT_ERR_UNSUPPORTED, "%s: layers_to_transform is not supported (the adapter must cover every "
                         "layer)", path);
        else if (mts && !json_is_null(mts) && !(json_is_array(mts) && !json_array_size(mts)))
            s = lt_error(LT_ERR_UNSUPPORTED, "%s: modules_to_save is not supported (only LoRA matrices)", path);
        else if (rs && !json_is_boolean(rs))
            s = lt_error(LT_ERR_FORMAT, "%s: use_rslora must be true or false", path);
        else
            s = parse_targets_json(tm, path, &p->targets);
        if (s == LT_OK) {
            if (r) p->r = (int32_t)json_integer_value(r);
            if (a) p->alpha = (float)json_number_value(a);
            if (d) p->dropout = (float)json_number_value(d);
            p->use_rslora = json_is_true(rs);
        }
    }
    json_decref(j);
    free(path);
    return s;
}

/* "base_model.model.model.layers.{l}.{parent}.{proj}.lora_{A|B}.weight" -> l, proj, 0/1 */
static int parse_peft_key(const lt_config *c, const char *k, int L, int *layer, int *proj, int *isB) {
    size_t pl = strlen(LT_PEFT_PREFIX);
    if (strncmp(k, LT_PEFT_PREFIX, pl)) return 0;
    const char *s = k + pl;
    char *end;
    long l = strtol(s, &end, 10);
    if (end == s || *end != '.' || l < 0 || l >= L || (s[0] == '0' && end - s > 1)) return 0;
    s = end + 1;
    for (int q = 0; q < LT_PROJ_COUNT; q++) {
        char want[64];
        if (!lt_proj_name(c, q)) continue;
        snprintf(want, sizeof want, "%s.%s.lora_", lt_proj_parent[q], lt_proj_name(c, q));
        size_t wl = strlen(want);
        if (strncmp(s, want, wl)) continue;
        const char *t = s + wl;
        if (strcmp(t + 1, ".weight") || (t[0] != 'A' && t[0] != 'B')) return 0;
        *layer = (int)l;
        *proj = q;
        *isB = t[0] == 'B';
        return 1;
    }
    return 0;
}

lt_status lt_model_load_adapter(lt_model *m, const char *dir) {
    LT_CHECK_ARG(m && dir, "lt_model_load_adapter: NULL %s", m ? "dir" : "model");
    if (!lt_dir_exists(dir))
        return lt_error(LT_ERR_NOT_FOUND, "%s: no such adapter folder (a PEFT adapter is a folder with "
                        "adapter_config.json and adapter_model.safetensors)", dir);
    lt_lora_params p;
    LT_TRY(read_adapter_config(dir, &p));
    char *st_path = adapter_path(dir, "adapter_model.safetensors");
    if (!st_path) return LT_ERR_OUT_OF_MEMORY;
    lt_st_set *set = NULL;
    lt_status s = lt_st_open_file(st_path, &set);
    if (s == LT_ERR_NOT_FOUND)
        s = lt_error(LT_ERR_NOT_FOUND, "%s: missing (an adapter saved as adapter_model.bin must be re-saved with "
                     "safe_serialization=True)", st_path);
    int L = m->cfg.num_layers;
    float **hA = NULL, **hB = NULL;
    if (s == LT_OK) {
        hA = lt_calloc((size_t)L * LT_PROJ_COUNT, sizeof *hA, "the adapter");
        hB = lt_calloc((size_t)L * LT_PROJ_COUNT, sizeof *hB, "the adapter");
        if (!hA || !hB) s = LT_ERR_OUT_OF_MEMORY;
    }
    /* every key must be a LoRA matrix of a targeted module */
    if (s == LT_OK) {
        size_t n_unknown = 0;
        char list[512] = "";
        for (size_t i = 0; i < lt_st_count(set); i++) {
            const lt_st_tensor *t = lt_st_at(set, i);
            int l, q, isB;
            if (parse_peft_key(&m->cfg, t->name, L, &l, &q, &isB) && (p.targets & lt_proj_target_mask(&m->cfg, q)))
                continue;
            if (n_unknown < 3) {
                size_t k = strlen(list);
                snprintf(list + k, sizeof list - k, "%s'%s'", n_unknown ? ", " : "", t->name);
            }
            n_unknown++;
        }
        if (n_unknown)
            s = lt_error(LT_ERR_FORMAT, "%s: %zu tensor%s that are not LoRA matrices of this %d-layer model's "
                         "target_modules: %s%s", st_path, n_unknown, n_unknown == 1 ? " is one" : "s are", L, list,
                         n_unknown > 3 ? ", ..." : "");
    }
    for (int l = 0; s == LT_OK && l < L; l++) {
        for (int q = 0; s == LT_OK && q < LT_PROJ_COUNT; q++) {
            if (!(p.targets & lt_proj_target_mask(&m->cfg, q))) continue;
            int64_t in, out;
            lt_proj_dims(&m->cfg, q, &in, &out);
            for (int ab = 0; s == LT_OK && ab < 2; ab++) {
                char key[256];
                peft_key(&m->cfg, key, sizeof key, l, q, ab ? 'B' : 'A');
                const lt_st_tensor *t = lt_st_find(set, key);
                int64_t r0 = ab ? out : p.r, r1 = ab ? p.r : in;
                if (!t) {
                    s = lt_error(LT_ERR_NOT_FOUND, "%s: tensor '%s' is missing (adapter_config.json targets %s on every "
                                 "layer)", st_path, key, lt_proj_name(&m->cfg, q));
                    break;
                }
                if (t->ndim != 2 || t->shape[0] != r0 || t->shape[1] != r1) {
                    s = lt_error(LT_ERR_FORMAT, "%s: tensor '%s' has %d dimensions [%lld%s%lld], expected [%lld,%lld] "
                                 "(r=%d, %s is %lld -> %lld)", st_path, key, (int)t->ndim, (long long)t->shape[0],
                                 t->ndim > 1 ? "," : "", t->ndim > 1 ? (long long)t->shape[1] : 0LL, (long long)r0,
                                 (long long)r1, p.r, lt_proj_name(&m->cfg, q), (long long)in, (long long)out);
                    break;
                }
                float *buf = lt_malloc((size_t)t->numel * 4, key);
                if (!buf) { s = LT_ERR_OUT_OF_MEMORY; break; }
                (ab ? hB : hA)[l * LT_PROJ_COUNT + q] = buf;
                s = lt_st_to_f32(t, buf);
            }
        }
    }
    if (s == LT_OK) s = lora_install(m, &p, hA, hB);
    for (int i = 0; hA && i < L * LT_PROJ_COUNT; i++) { free(hA[i]); free(hB[i]); }
    free(hA); free(hB);
    lt_st_close(set);
    free(st_path);
    return s;
}

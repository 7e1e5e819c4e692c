/* cmd_init_random.c - `loratune init-random`: a randomly initialised Hugging Face checkpoint
 * from a config.json, for tests, demos and benchmarks without downloading weights.
 *
 * Every tensor the loader checks for (lt_model_check_tensors) is written, for every family it
 * accepts: the layer's norms as lt_layer_norm_names names them (Gemma 2/3's four), Qwen3 / Gemma 3's
 * q_norm / k_norm, Phi-3's fused qkv_proj / gate_up_proj (lt_proj_name). Weights follow
 * transformers' _init_weights for these models: linear and embedding weights
 * ~ N(0, initializer_range) (0.02 by default), RMSNorm weights = 1, or 0 where the norm multiplies
 * by (1 + w) (Gemma: its _init_weights zeros them); q/k/v biases get small
 * N(0, initializer_range) values instead of transformers' zeros, so that they matter in tests.
 * Normals come from the Philox RNG (Box-Muller on counter-based uniforms), stream = the
 * tensor's index in name order: the same --seed gives the same file on any machine and any
 * thread count. Tensors are generated on all cores and streamed to the file one at a time, so
 * a 3 GB checkpoint never sits in memory whole.
 *
 * The folder appears whole or not at all: it is built aside as "<output>.tmp-<pid>-<n>/" and
 * renamed into place as one (lib/core/fs.c); an existing non-empty folder is replaced only with
 * --overwrite; temporaries a killed run left beside it are removed at the next start, and the
 * parent folders a failed run created are removed again. */
#include "cli.h"
#include "core/rng.h"
#include "model/model_io.h"
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(void) {
    printf("usage: loratune init-random --config FILE --output DIR [flags]\n\n"
           "Writes a randomly initialised checkpoint (config.json, model.safetensors, generation_config.json).\n\n"
           "  --config FILE     a config.json: Qwen2ForCausalLM, LlamaForCausalLM, MistralForCausalLM,\n"
           "                    Qwen3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, Phi3ForCausalLM\n"
           "  --output DIR      the model folder to write (created whole, or not at all)\n"
           "  --seed N          random seed (default 0)\n"
           "  --dtype D         bf16 | f16 | f32 (default: the config's dtype, else bf16)\n"
           "  --tokenizer DIR   copy tokenizer.json / tokenizer_config.json / ... from DIR\n"
           "  --threads N       generation threads (default: all cores)\n"
           "  --overwrite       replace an existing --output folder (all of it)\n");
}

typedef struct fill_ctx {
    uint64_t seed, stream;
    int kind;          /* 0 normal(0, std), 1 ones, 2 zeros */
    float std;
    int st_dtype;      /* LT_ST_BF16 / F16 / F32 */
    uint8_t *buf;
    int64_t n;
    int n_threads;
} fill_ctx;

#define CHUNK (1 << 16) /* values per parallel work item (even) */

static void fill_chunk(void *p, int64_t ci) {
    fill_ctx *c = p;
    int64_t lo = ci * CHUNK, hi = lo + CHUNK < c->n ? lo + CHUNK : c->n;
    for (int64_t i = lo; i < hi; i += 4) {
        const float f = c->kind == 2 ? 0.0f : 1.0f;
        float z[4] = {f, f, f, f};
        if (c->kind == 0) {
            /* one Philox block -> four uniforms -> four normals (two Box-Muller pairs) */
            lt_u32x4 r = lt_philox(c->seed, c->stream, (uint64_t)i >> 2);
            for (int k = 0; k < 2; k++) {
                float u1 = ((float)(r.v[2 * k] >> 8) + 1.0f) * (1.0f / 16777216.0f); /* (0, 1] */
                float u2 = (float)(r.v[2 * k + 1] >> 8) * (1.0f / 16777216.0f);
                float rad = sqrtf(-2.0f * logf(u1)) * c->std, th = 6.28318530717958647692f * u2;
                z[2 * k] = rad * cosf(th);
                z[2 * k + 1] = rad * sinf(th);
            }
        }
        for (int k = 0; k < 4 && i + k < hi; k++) {
            int64_t j = i + k;
            if (c->st_dtype == LT_ST_F32) memcpy(c->buf + 4 * j, &z[k], 4);
            else {
                uint16_t h = c->st_dtype == LT_ST_BF16 ? lt_f32_to_bf16(z[k]) : lt_f32_to_f16(z[k]);
                memcpy(c->buf + 2 * j, &h, 2);
            }
        }
    }
}

typedef struct tensor_job { char name[160]; int ndim; int64_t shape[2]; int kind; fill_ctx ctx; } tensor_job;

typedef struct write_state { uint64_t done, total; int progress; } write_state;
static write_state g_ws;

static lt_status fill(void *p, const char *name, void *buf, size_t nbytes) {
    (void)name;
    fill_ctx *c = p;
    c->buf = buf;
    c->n = (int64_t)(nbytes / (size_t)lt_st_dtype_size(c->st_dtype));
    lt_parallel_for((c->n + CHUNK - 1) / CHUNK, c->n_threads, fill_chunk, c);
    g_ws.done += nbytes;
    if (g_ws.progress) cli_progress("writing model.safetensors", g_ws.done, g_ws.total, NULL);
    return LT_OK;
}

static int copy_file(const char *from_dir, const char *to_dir, const char *name) {
    char *src = lt_path_join(from_dir, name), *dst = lt_path_join(to_dir, name);
    int copied = 0;
    if (lt_file_exists(src)) {
        char *data = NULL;
        size_t len = 0;
        lt_status st = lt_read_file(src, &data, &len);
        if (st == LT_OK) st = lt_write_file_atomic(dst, data, len, 0);
        free(data);
        copied = st == LT_OK ? 1 : -1;
        if (st != LT_OK) fprintf(stderr, "loratune init-random: copying %s: %s\n", name, lt_last_error());
    }
    free(src);
    free(dst);
    return copied;
}

int lt_cmd_init_random(int argc, char **argv) {
    const char *cmd = "init-random", *config = NULL, *output = NULL, *tokdir = NULL, *dtype = NULL, *v;
    uint64_t seed = 0;
    int32_t threads = 0;
    int overwrite = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_switch(argv, i, "--help") || cli_switch(argv, i, "-h")) { usage(); return 0; }
        else if ((v = cli_flag(argc, argv, &i, "--config"))) config = v;
        else if ((v = cli_flag(argc, argv, &i, "--output"))) output = v;
        else if ((v = cli_flag(argc, argv, &i, "--tokenizer"))) tokdir = v;
        else if ((v = cli_flag(argc, argv, &i, "--dtype"))) dtype = v;
        else if ((v = cli_flag(argc, argv, &i, "--seed"))) { if (!cli_u64(cmd, "--seed", v, &seed)) return 2; }
        else if ((v = cli_flag(argc, argv, &i, "--threads"))) { if (!cli_int(cmd, "--threads", v, &threads)) return 2; }
        else if (cli_switch(argv, i, "--overwrite")) overwrite = 1;
        else return cli_usage_error(cmd, "unknown flag '%s'", argv[i]);
    }
    if (!config || !output) return cli_usage_error(cmd, "--config FILE and --output DIR are required");

    char *text = NULL;
    size_t len = 0;
    lt_status st = lt_read_file(config, &text, &len);
    if (st != LT_OK) return cli_fail(cmd, st, "reading the config");
    lt_config c;
    st = lt_config_parse(text, len, config, &c);
    json_error_t je;
    json_t *root = st == LT_OK ? json_loadb(text, len, 0, &je) : NULL;
    free(text);
    if (st != LT_OK) return cli_fail(cmd, st, "reading the config");

    int st_dtype = c.torch_dtype == LT_DTYPE_F32 ? LT_ST_F32 : c.torch_dtype == LT_DTYPE_F16 ? LT_ST_F16 : LT_ST_BF16;
    if (!json_object_get(root, "torch_dtype") && !json_object_get(root, "dtype")) st_dtype = LT_ST_BF16;
    if (dtype) {
        if (!strcmp(dtype, "bf16") || !strcmp(dtype, "bfloat16")) st_dtype = LT_ST_BF16;
        else if (!strcmp(dtype, "f16") || !strcmp(dtype, "float16")) st_dtype = LT_ST_F16;
        else if (!strcmp(dtype, "f32") || !strcmp(dtype, "float32")) st_dtype = LT_ST_F32;
        else { json_decref(root); return cli_usage_error(cmd, "--dtype must be bf16, f16 or f32, got '%s'", dtype); }
    }
    const char *dname = st_dtype == LT_ST_F32 ? "float32" : st_dtype == LT_ST_F16 ? "float16" : "bfloat16";
    json_t *ir = json_object_get(root, "initializer_range");
    float std = json_is_number(ir) ? (float)json_number_value(ir) : 0.02f;

    /* config.json: the input with the dtype fields set and no quantization_config (these are
     * plain weights) */
    if (json_object_get(root, "dtype")) json_object_set_new(root, "dtype", json_string(dname));
    if (json_object_get(root, "torch_dtype") || !json_object_get(root, "dtype"))
        json_object_set_new(root, "torch_dtype", json_string(dname));
    json_object_del(root, "quantization_config");
    char *cfg_out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);

    /* generation_config.json as transformers derives it from the model config */
    json_t *gen = json_object();
    json_object_set_new(gen, "_from_model_config", json_true());
    if (c.bos_token_id >= 0) json_object_set_new(gen, "bos_token_id", json_integer(c.bos_token_id));
    if (c.n_eos == 1) json_object_set_new(gen, "eos_token_id", json_integer(c.eos_token_ids[0]));
    else if (c.n_eos > 1) {
        json_t *a = json_array();
        for (int i = 0; i < c.n_eos; i++) json_array_append_new(a, json_integer(c.eos_token_ids[i]));
        json_object_set_new(gen, "eos_token_id", a);
    }
    char *gen_out = json_dumps(gen, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(gen);

    /* the output folder: refused when it holds anything (unless --overwrite), before any work */
    size_t olen = strlen(output);
    while (olen > 1 && output[olen - 1] == '/') olen--;
    char *out_dir = lt_strndup(output, olen);
    const char *base = out_dir ? strrchr(out_dir, '/') : NULL;
    base = base ? base + 1 : out_dir;
    struct stat sb;
    if (!out_dir) st = LT_ERR_OUT_OF_MEMORY;
    else if (!*base || !strcmp(base, ".") || !strcmp(base, ".."))
        st = lt_error(LT_ERR_INVALID_ARGUMENT, "--output %s: name a folder to create, not '%s'", output, base);
    else if (lstat(out_dir, &sb) == 0 && !S_ISDIR(sb.st_mode))
        st = lt_error(LT_ERR_EXISTS, "--output %s exists and is not a folder", output);
    else if (lt_dir_exists(out_dir) && !lt_fs_dir_is_empty(out_dir) && !overwrite)
        st = lt_error(LT_ERR_EXISTS, "%s already exists and is not empty (pass --overwrite to replace the whole "
                      "folder)", output);
    if (st != LT_OK) {
        free(out_dir); free(cfg_out); free(gen_out);
        return cli_fail(cmd, st, "checking the output folder");
    }
    /* what a killed run left beside it goes first; what this run creates goes again on failure */
    char *parent = base == out_dir ? lt_strdup(".") : lt_strndup(out_dir, base - 1 == out_dir ? 1 : (size_t)(base - 1 - out_dir));
    if (parent) lt_fs_clean_stale(parent, base);
    free(parent);
    char *created = lt_fs_first_missing(out_dir);
    char *tmp_dir = NULL;
    st = lt_fs_dir_begin(out_dir, &tmp_dir);
    if (st != LT_OK) {
        free(out_dir); free(cfg_out); free(gen_out); free(created);
        return cli_fail(cmd, st, "creating the output folder");
    }

    /* the tensors, in name order (that order fixes each tensor's RNG stream) */
    int nt = 3 + c.num_layers * (6 + 2 + LT_PROJ_COUNT + 3);
    const int norm_kind = c.norm_one_plus ? 2 : 1; /* (1 + w) norms start at w = 0 */
    tensor_job *jobs = calloc((size_t)nt, sizeof *jobs);
    int n = 0;
#define ADD(nm, nd, d0, d1, k) do { tensor_job *j_ = &jobs[n++]; snprintf(j_->name, sizeof j_->name, "%s", nm); \
    j_->ndim = nd; j_->shape[0] = d0; j_->shape[1] = d1; j_->kind = k; } while (0)
    ADD("model.embed_tokens.weight", 2, c.vocab_size, c.hidden_size, 0);
    if (!c.tie_word_embeddings) ADD("lm_head.weight", 2, c.vocab_size, c.hidden_size, 0);
    ADD("model.norm.weight", 1, c.hidden_size, 0, norm_kind);
    char name[160], suffix[96];
    const char *norms[6];
    const int n_norms = lt_layer_norm_names(&c, norms);
    for (int l = 0; l < c.num_layers; l++) {
        for (int k = 0; k < n_norms; k++) {
            lt_layer_tensor_name(name, sizeof name, l, norms[k]);
            ADD(name, 1, c.hidden_size, 0, norm_kind);
        }
        if (c.qk_norm) {
            lt_layer_tensor_name(name, sizeof name, l, "self_attn.q_norm.weight");
            ADD(name, 1, c.head_dim, 0, norm_kind);
            lt_layer_tensor_name(name, sizeof name, l, "self_attn.k_norm.weight");
            ADD(name, 1, c.head_dim, 0, norm_kind);
        }
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            int64_t in, out;
            lt_proj_dims(&c, p, &in, &out);
            const char *pname = lt_proj_name(&c, p);
            if (!pname) continue; /* K, V, up inside Phi-3's fused qkv_proj / gate_up_proj */
            snprintf(suffix, sizeof suffix, "%s.%s.weight", lt_proj_parent[p], pname);
            lt_layer_tensor_name(name, sizeof name, l, suffix);
            ADD(name, 2, out, in, 0);
            if (c.attention_bias && p <= LT_PROJ_V) {
                snprintf(suffix, sizeof suffix, "%s.%s.bias", lt_proj_parent[p], pname);
                lt_layer_tensor_name(name, sizeof name, l, suffix);
                ADD(name, 1, out, 0, 0);
            }
        }
    }
#undef ADD
    /* streams by sorted name */
    for (int i = 0; i < n; i++) {
        uint64_t rank = 0;
        for (int k = 0; k < n; k++) rank += strcmp(jobs[k].name, jobs[i].name) < 0;
        fill_ctx *f = &jobs[i].ctx;
        f->seed = seed;
        f->stream = rank;
        f->kind = jobs[i].kind;
        f->std = std;
        f->st_dtype = st_dtype;
        f->n_threads = lt_threads(threads);
    }
    lt_st_writer *w = NULL;
    st = lt_st_writer_new(&w);
    for (int i = 0; st == LT_OK && i < n; i++)
        st = lt_st_writer_add_fill(w, jobs[i].name, st_dtype, jobs[i].ndim, jobs[i].shape, fill, &jobs[i].ctx);
    char *st_path = lt_path_join(tmp_dir, "model.safetensors");
    char *cfg_path = lt_path_join(tmp_dir, "config.json");
    char *gen_path = lt_path_join(tmp_dir, "generation_config.json");
    g_ws.done = 0;
    g_ws.total = lt_st_writer_bytes(w);
    g_ws.progress = 1;
    double t0 = lt_time_s();
    if (st == LT_OK) st = lt_st_writer_write(w, st_path, 0);
    if (st == LT_OK) st = lt_write_file_atomic(cfg_path, cfg_out, strlen(cfg_out), 0);
    if (st == LT_OK) st = lt_write_file_atomic(gen_path, gen_out, strlen(gen_out), 0);
    double secs = lt_time_s() - t0;
    uint64_t bytes = lt_st_writer_bytes(w);
    lt_st_writer_free(w);
    free(jobs); free(cfg_out); free(gen_out); free(st_path); free(cfg_path); free(gen_path);
    int copied = 0, rc = 0;
    if (st != LT_OK) rc = cli_fail(cmd, st, "writing the checkpoint");
    if (!rc && tokdir) {
        static const char *const tok_files[] = {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                                                "special_tokens_map.json", "added_tokens.json", "tokenizer.model"};
        for (size_t i = 0; !rc && i < sizeof tok_files / sizeof tok_files[0]; i++) {
            int r = copy_file(tokdir, tmp_dir, tok_files[i]);
            if (r < 0) rc = 1;
            else copied += r;
        }
        if (!rc && !copied) {
            fprintf(stderr, "loratune init-random: %s holds no tokenizer files (tokenizer.json ...)\n", tokdir);
            rc = 1;
        }
    }
    /* the whole folder into place as one (replacing the previous one: --overwrite, or empty) */
    if (!rc) {
        st = lt_fs_dir_commit(tmp_dir, out_dir);
        if (st != LT_OK) rc = cli_fail(cmd, st, "moving the checkpoint into place");
    } else {
        lt_fs_dir_abort(tmp_dir);
    }
    if (rc && created && lt_dir_exists(created)) lt_fs_remove_tree(created);
    free(created);
    free(out_dir);
    if (rc) return rc;
    printf("wrote %s: %s, %llu parameters, %.1f MB %s in %.1f s (seed %llu)%s\n", output, c.architecture,
           (unsigned long long)lt_config_n_params(&c), (double)bytes / 1e6, dname, secs, (unsigned long long)seed,
           copied ? ", tokenizer files copied" : "");
    return 0;
}

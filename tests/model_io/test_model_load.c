/* test_model_load.c - lt_model_load on the CPU backend: tiny Qwen2 (tied, q/k/v biases, BF16),
 * tiny Llama (untied, F32, transformers-5 config), sharded checkpoints, a pre-quantized
 * bitsandbytes NF4 checkpoint, progress/cancel, and one clear failure per bad input: missing or
 * corrupt config.json, truncated or lying safetensors, wrong dtype, wrong shape, missing tensor,
 * unknown architecture. */
#include "lt_test.h"
#include "tiny_model.h"
#include "backend/nf4.h"

static char root[512];

static lt_model_params cpu_params(void) {
    lt_model_params p;
    lt_model_params_init(&p);
    p.device = LT_DEVICE_CPU;
    p.quant = LT_QUANT_NONE;
    p.n_threads = 2;
    return p;
}

static char *sub(const char *name) {
    static char buf[8][600];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", root, name);
    return buf[k];
}

/* Compares a loaded projection with the file's values. */
static void check_weight(lt_model *m, int layer, int proj, const char *dir) {
    lt_st_set *s = NULL;
    CHECK_OK(lt_st_open_dir(dir, &s));
    char suffix[96], name[256];
    snprintf(suffix, sizeof suffix, "%s.%s.weight", lt_proj_parent[proj], lt_proj_names[proj]);
    lt_layer_tensor_name(name, sizeof name, layer, suffix);
    const lt_st_tensor *t = lt_st_find(s, name);
    CHECK(t != NULL);
    if (!t) { lt_st_close(s); return; }
    float *want = malloc((size_t)t->numel * 4), *got = malloc((size_t)t->numel * 4);
    CHECK_OK(lt_st_to_f32(t, want));
    CHECK_OK(m->be->ops.weight_read(m->be, m->layers[layer].proj[proj], got));
    CHECK_MSG(!memcmp(want, got, (size_t)t->numel * 4), "%s differs after loading", name);
    free(want);
    free(got);
    lt_st_close(s);
}

static int progress_calls;
static int on_progress(const char *what, uint64_t done, uint64_t total, void *ud) {
    progress_calls++;
    CHECK(!strcmp(what, "loading") && total == TINY_L && done <= total);
    return ud && done == 1; /* cancel after the first layer when asked */
}

static void test_qwen2(void) {
    const char *dir = sub("qwen2");
    tiny_opts o = {0};
    o.tied = 1;
    CHECK(tiny_model_write(dir, &o) == 0);
    lt_model_params p = cpu_params();
    p.progress = on_progress;
    lt_model *m = NULL;
    progress_calls = 0;
    CHECK_OK(lt_model_load(dir, &p, &m));
    CHECK(progress_calls == TINY_L + 1);
    if (!m) return;
    lt_model_info info;
    info.struct_size = sizeof info;
    CHECK_OK(lt_model_get_info(m, &info));
    CHECK(!strcmp(info.architecture, "Qwen2ForCausalLM") && info.num_layers == TINY_L && info.hidden_size == TINY_C);
    CHECK(info.head_dim == TINY_C / TINY_NH && info.num_kv_heads == TINY_NKV && info.attention_bias == 1);
    CHECK(info.device == LT_DEVICE_CPU && info.compute_dtype == LT_DTYPE_F32 && info.quant == LT_QUANT_NONE);
    /* parameters counted by hand: embed + final norm + per layer 2 norms, q,k,v,o,gate,up,down and q/k/v biases */
    uint64_t KV = TINY_NKV * (TINY_C / TINY_NH);
    uint64_t layer = 2 * TINY_C + TINY_C * TINY_C * 2 + 2 * TINY_C * KV + 3 * TINY_C * TINY_I + TINY_C + 2 * KV;
    CHECK(info.n_params == (uint64_t)TINY_V * TINY_C + TINY_C + TINY_L * layer);
    CHECK(info.n_lora_params == 0 && info.weight_bytes > info.n_params * 4 - 1);
    CHECK(m->head == m->embed);
    for (int l = 0; l < TINY_L; l++)
        for (int q = 0; q < LT_PROJ_COUNT; q++) check_weight(m, l, q, dir);
    /* biases and norms went through f32 */
    lt_st_set *s = NULL;
    CHECK_OK(lt_st_open_dir(dir, &s));
    const lt_st_tensor *t = lt_st_find(s, "model.layers.1.self_attn.k_proj.bias");
    float want[64], got[64];
    CHECK_OK(lt_st_to_f32(t, want));
    CHECK_OK(m->be->ops.download(m->be, got, m->layers[1].bias[LT_PROJ_K], (size_t)t->numel * 4));
    CHECK(!memcmp(want, got, (size_t)t->numel * 4));
    t = lt_st_find(s, "model.norm.weight");
    CHECK_OK(lt_st_to_f32(t, want));
    CHECK_OK(m->be->ops.download(m->be, got, m->final_norm, TINY_C * 4));
    CHECK(!memcmp(want, got, TINY_C * 4) && want[0] > 0.8f);
    lt_st_close(s);
    lt_model_free(m);

    /* a progress callback that cancels */
    m = NULL;
    p.progress_user_data = &p;
    CHECK_FAIL(lt_model_load(dir, &p, &m), LT_STOPPED, "cancelled by the progress callback");
    CHECK(m == NULL);

    /* NF4 on the CPU rounds the projections through NF4 */
    p = cpu_params();
    p.quant = LT_QUANT_NF4;
    CHECK_OK(lt_model_load(dir, &p, &m));
    if (m) {
        info.struct_size = sizeof info;
        CHECK_OK(lt_model_get_info(m, &info));
        CHECK(info.quant == LT_QUANT_NF4);
        lt_model_free(m);
    }
}

static void test_llama_untied_f32_v5(void) {
    const char *dir = sub("llama");
    tiny_opts o = {0};
    o.arch = "LlamaForCausalLM";
    o.st_dtype = LT_ST_F32;
    o.v5_style = 1;
    CHECK(tiny_model_write(dir, &o) == 0);
    lt_model_params p = cpu_params();
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(dir, &p, &m));
    if (!m) return;
    CHECK(m->head != m->embed && m->cfg.attention_bias == 0 && m->layers[0].bias[0] == NULL);
    CHECK(m->cfg.rope_theta == 500000.0 && m->cfg.n_eos == 2);
    check_weight(m, 1, LT_PROJ_DOWN, dir);
    float *head = malloc(TINY_V * TINY_C * 4), *want = malloc(TINY_V * TINY_C * 4);
    lt_st_set *s = NULL;
    CHECK_OK(lt_st_open_dir(dir, &s));
    CHECK_OK(lt_st_to_f32(lt_st_find(s, "lm_head.weight"), want));
    CHECK_OK(m->be->ops.weight_read(m->be, m->head, head));
    CHECK(!memcmp(head, want, TINY_V * TINY_C * 4));
    lt_st_close(s);
    free(head);
    free(want);
    lt_model_free(m);
}

static void test_sharded(void) {
    const char *dir = sub("sharded");
    tiny_opts o = {0};
    o.shards = 2;
    o.st_dtype = LT_ST_F16;
    CHECK(tiny_model_write(dir, &o) == 0);
    CHECK(lt_file_exists(sub("sharded/model-00002-of-00002.safetensors")));
    lt_model_params p = cpu_params();
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(dir, &p, &m));
    if (!m) return;
    check_weight(m, 0, LT_PROJ_Q, dir);
    check_weight(m, 1, LT_PROJ_UP, dir);
    lt_model_free(m);
    m = NULL;
    o.skip = "model.layers.1.self_attn.o_proj.weight";
    CHECK(tiny_model_write(dir, &o) == 0);
    CHECK_FAIL(lt_model_load(dir, &p, &m), LT_ERR_NOT_FOUND,
               "sharded/model.safetensors.index.json: tensor 'model.layers.1.self_attn.o_proj.weight' is missing");
}

/* Rewrites the tiny model's projections as bitsandbytes writes a load_in_4bit checkpoint. */
static void test_bnb(void) {
    const char *src = sub("bnb-src"), *dir = sub("bnb");
    tiny_opts o = {0};
    o.tied = 1;
    CHECK(tiny_model_write(src, &o) == 0);
    tiny_rm_rf(dir);
    CHECK_OK(lt_mkdirs(dir));
    char cfg[2048];
    tiny_config_text(cfg, sizeof cfg, &o);
    char *end = strrchr(cfg, '}');
    snprintf(end, sizeof cfg - (size_t)(end - cfg),
             ",\"quantization_config\":{\"_load_in_4bit\":true,\"bnb_4bit_quant_type\":\"nf4\","
             "\"bnb_4bit_use_double_quant\":true,\"load_in_4bit\":true,\"quant_method\":\"bitsandbytes\"}}");
    CHECK(tiny_write_text(dir, "config.json", cfg) == 0);
    lt_st_set *s = NULL;
    CHECK_OK(lt_st_open_dir(src, &s));
    lt_st_writer *w;
    lt_st_writer_new(&w);
    float dmap[256];
    lt_dynamic_map(1, dmap);
    float *expect = NULL; /* dequantized layer 1 gate_proj */
    int64_t expect_n = 0;
    for (size_t i = 0; s && i < lt_st_count(s); i++) {
        const lt_st_tensor *t = lt_st_at(s, i);
        if (!strstr(t->name, "_proj.weight")) {
            CHECK_OK(lt_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, 1));
            continue;
        }
        int64_t n = t->numel, nb = (n + 63) / 64, nn = (nb + 255) / 256;
        float *x = malloc((size_t)n * 4), *absmax = malloc((size_t)nb * 4), *nested = malloc((size_t)nn * 4);
        uint8_t *packed = malloc((size_t)(n + 1) / 2), *a8 = malloc((size_t)nb);
        float offset;
        CHECK_OK(lt_st_to_f32(t, x));
        lt_nf4_quantize_ref(x, n, 64, packed, absmax);
        lt_nf4_double_quant_ref(absmax, nb, a8, nested, &offset);
        char name[300], qs[400];
        int64_t sp[2] = {(n + 1) / 2, 1}, sb[1] = {nb}, s16[1] = {16}, sn[1] = {nn}, s256[1] = {256};
        snprintf(name, sizeof name, "%s", t->name);
        CHECK_OK(lt_st_writer_add(w, name, LT_ST_U8, 2, sp, packed, 1));
        snprintf(name, sizeof name, "%s.absmax", t->name);
        CHECK_OK(lt_st_writer_add(w, name, LT_ST_U8, 1, sb, a8, 1));
        snprintf(name, sizeof name, "%s.quant_map", t->name);
        CHECK_OK(lt_st_writer_add(w, name, LT_ST_F32, 1, s16, lt_nf4_code, 1));
        snprintf(name, sizeof name, "%s.nested_absmax", t->name);
        CHECK_OK(lt_st_writer_add(w, name, LT_ST_F32, 1, sn, nested, 1));
        snprintf(name, sizeof name, "%s.nested_quant_map", t->name);
        CHECK_OK(lt_st_writer_add(w, name, LT_ST_F32, 1, s256, dmap, 1));
        snprintf(qs, sizeof qs, "{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": "
                 "[%lld, %lld], \"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": %.9g}",
                 (long long)t->shape[0], (long long)t->shape[1], (double)offset);
        int64_t sq[1] = {(int64_t)strlen(qs)};
        snprintf(name, sizeof name, "%s.quant_state.bitsandbytes__nf4", t->name);
        CHECK_OK(lt_st_writer_add(w, name, LT_ST_U8, 1, sq, qs, 1));
        if (!strcmp(t->name, "model.layers.1.mlp.gate_proj.weight")) {
            float *am = malloc((size_t)nb * 4);
            expect = malloc((size_t)n * 4);
            expect_n = n;
            lt_nf4_double_dequant_ref(a8, nested, dmap, offset, nb, am);
            lt_nf4_dequantize_ref(packed, am, n, 64, NULL, expect);
            for (int64_t k = 0; k < n; k++) expect[k] = lt_bf16_to_f32(lt_f32_to_bf16(expect[k]));
            free(am);
        }
        free(x); free(absmax); free(nested); free(packed); free(a8);
    }
    lt_st_close(s);
    CHECK_OK(lt_st_writer_write(w, sub("bnb/model.safetensors"), 1));
    lt_st_writer_free(w);
    lt_model_params p = cpu_params();
    lt_model *m = NULL;
    CHECK_OK(lt_model_load(dir, &p, &m));
    if (m && expect) {
        CHECK(m->cfg.bnb_4bit == 1);
        float *got = malloc((size_t)expect_n * 4);
        CHECK_OK(m->be->ops.weight_read(m->be, m->layers[1].proj[LT_PROJ_GATE], got));
        CHECK(!memcmp(got, expect, (size_t)expect_n * 4));
        free(got);
        lt_model_info info;
        info.struct_size = sizeof info;
        CHECK_OK(lt_model_get_info(m, &info));
        CHECK(info.quant == LT_QUANT_NF4);
    }
    lt_model_free(m);
    free(expect);
    /* a bnb set with a piece missing */
    m = NULL;
    lt_st_set *q = NULL;
    CHECK_OK(lt_st_open_dir(dir, &q));
    lt_st_writer_new(&w);
    for (size_t i = 0; q && i < lt_st_count(q); i++) {
        const lt_st_tensor *t = lt_st_at(q, i);
        if (!strcmp(t->name, "model.layers.0.self_attn.v_proj.weight.nested_absmax")) continue;
        CHECK_OK(lt_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, 1));
    }
    lt_st_close(q);
    CHECK_OK(lt_st_writer_write(w, sub("bnb/model.safetensors"), 1));
    lt_st_writer_free(w);
    CHECK_FAIL(lt_model_load(dir, &p, &m), LT_ERR_NOT_FOUND,
               "bnb/model.safetensors: tensor 'model.layers.0.self_attn.v_proj.weight.nested_absmax' of the bitsandbytes 4-bit weight is missing");
}

/* Rewrites dir's model.safetensors with element `at` of tensor `name` set to the 16-bit pattern
 * `bits` (BF16: 0x7fc0 NaN, 0x7f80 +Inf, 0xff80 -Inf). */
static void poison(const char *dir, const char *name, int64_t at, uint16_t bits) {
    char path[700];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    lt_st_set *s = NULL;
    CHECK_OK(lt_st_open_file(path, &s));
    lt_st_writer *w;
    lt_st_writer_new(&w);
    uint8_t *copy = NULL;
    for (size_t i = 0; s && i < lt_st_count(s); i++) {
        const lt_st_tensor *t = lt_st_at(s, i);
        const void *data = t->data;
        if (!strcmp(t->name, name)) {
            CHECK(t->dtype == LT_ST_BF16 && at < t->numel);
            copy = malloc(t->nbytes);
            memcpy(copy, t->data, t->nbytes);
            memcpy(copy + 2 * at, &bits, 2);
            data = copy;
        }
        CHECK_OK(lt_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, data, 1));
    }
    CHECK(copy != NULL);
    char tmp[720];
    snprintf(tmp, sizeof tmp, "%s.new", path);
    CHECK_OK(lt_st_writer_write(w, tmp, 1));
    lt_st_writer_free(w);
    lt_st_close(s);
    free(copy);
    CHECK(rename(tmp, path) == 0);
}

/* A NaN/Inf weight is refused at load, naming the file, the tensor and the element: NF4
 * quantization (the default) would turn it into a finite code without a word. */
static void test_nonfinite(void) {
    const char *dir = sub("nonfinite");
    tiny_opts o = {0};
    lt_model_params p = cpu_params();
    p.quant = LT_QUANT_NF4;
    lt_model *m = NULL;
    CHECK(tiny_model_write(dir, &o) == 0);
    poison(dir, "model.layers.1.mlp.down_proj.weight", 3 * TINY_I + 5, 0x7fc0); /* [C, I] */
    CHECK_FAIL(lt_model_load(dir, &p, &m), LT_ERR_NONFINITE,
               "nonfinite/model.safetensors: tensor 'model.layers.1.mlp.down_proj.weight' holds 1 non-finite value "
               "(the first, nan, at [3, 5])");
    CHECK(strstr(lt_last_error(), "must be finite") != NULL);
    CHECK(m == NULL);
    /* not quantized: the same refusal */
    p.quant = LT_QUANT_NONE;
    CHECK_FAIL(lt_model_load(dir, &p, &m), LT_ERR_NONFINITE, "'model.layers.1.mlp.down_proj.weight' holds 1");
    /* two infinities in the embedding (kept in 16 bits), one in a norm weight (read as float) */
    CHECK(tiny_model_write(dir, &o) == 0);
    poison(dir, "model.embed_tokens.weight", 40, 0x7f80);
    poison(dir, "model.embed_tokens.weight", 33, 0xff80);
    CHECK_FAIL(lt_model_load(dir, &p, &m), LT_ERR_NONFINITE,
               "tensor 'model.embed_tokens.weight' holds 2 non-finite values (the first, -inf, at [1, 1])");
    CHECK(tiny_model_write(dir, &o) == 0);
    poison(dir, "model.layers.0.post_attention_layernorm.weight", 7, 0x7fc0);
    CHECK_FAIL(lt_model_load(dir, &p, &m), LT_ERR_NONFINITE,
               "tensor 'model.layers.0.post_attention_layernorm.weight' holds 1 non-finite value (the first, nan, at index 7)");
    /* the untouched model loads */
    CHECK(tiny_model_write(dir, &o) == 0);
    CHECK_OK(lt_model_load(dir, &p, &m));
    lt_model_free(m);
}

static void test_bad_inputs(void) {
    lt_model_params p = cpu_params();
    lt_model *m = NULL;
    tiny_opts o = {0};
    const char *dir = sub("bad");

    /* missing config.json */
    CHECK(tiny_model_write(dir, &o) == 0);
    unlink(sub("bad/config.json"));
    CHECK_FAIL(lt_model_load(dir, &p, &m), LT_ERR_NOT_FOUND, "bad/config.json: missing");
    CHECK(m == NULL);
    /* corrupt config.json */
    CHECK(tiny_write_text(dir, "config.json", "{\"architectures\": [\"Qwen2ForCausalLM\"], \"vocab_size\": 9,,}") == 0);
    CHECK_FAIL(lt_model_load(dir, &p, &m), LT_ERR_FORMAT, "bad/config.json: invalid JSON at line 1 column");
    /* unknown architecture */
    o.arch = "PhiForCausalLM";
    char cfg[2048];
    tiny_config_text(cfg, sizeof cfg, &o);
    CHECK(tiny_write_text(dir, "config.json", cfg) == 0);
    CHECK_FAIL(lt_model_load(dir, &p, &m), LT_ERR_UNSUPPORTED,
               "architecture \"PhiForCausalLM\" is not supported; loratune runs Qwen2ForCausalLM");
    o.arch = NULL;

    /* missing tensor */
    o.skip = "model.layers.1.mlp.up_proj.weight";
    CHECK(tiny_model_write(dir, &o) == 0);
    CHECK_FAIL(lt_model_load(dir, &p, &m), LT_ERR_NOT_FOUND,
               "bad/model.safetensors: tensor 'model.layers.1.mlp.up_proj.weight' is missing");
    o.skip = "model.layers.0.self_attn.q_proj.bias";
    CHECK(tiny_model_write(dir, &o) == 0);
    CHECK_FAIL(lt_model_load(dir, &p, &m), LT_ERR_NOT_FOUND, "'model.layers.0.self_attn.q_proj.bias' is missing");
    o.skip = NULL;
    /* wrong shape */
    o.bad_shape = "model.layers.0.self_attn.k_proj.weight";
    CHECK(tiny_model_write(dir, &o) == 0);
    CHECK_FAIL(lt_model_load(dir, &p, &m), LT_ERR_FORMAT,
               "model.safetensors: tensor 'model.layers.0.self_attn.k_proj.weight' has shape [17,32], expected [16,32] "
               "from config.json");
    o.bad_shape = NULL;
    /* wrong dtype */
    o.bad_dtype = "model.layers.1.input_layernorm.weight";
    CHECK(tiny_model_write(dir, &o) == 0);
    CHECK_FAIL(lt_model_load(dir, &p, &m), LT_ERR_UNSUPPORTED,
               "model.safetensors: tensor 'model.layers.1.input_layernorm.weight' has dtype I32; loratune reads F32, F16 "
               "and BF16 weights");
    o.bad_dtype = NULL;
    /* truncated safetensors (cut in the data) and truncated header */
    CHECK(tiny_model_write(dir, &o) == 0);
    const char *st = sub("bad/model.safetensors");
    FILE *f = fopen(st, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    CHECK(truncate(st, size - 10) == 0);
    CHECK_FAIL(lt_model_load(dir, &p, &m), LT_ERR_FORMAT, "(truncated file)");
    CHECK(strstr(lt_last_error(), "bad/model.safetensors: header says the data ends at byte") != NULL);
    CHECK(truncate(st, 100) == 0);
    CHECK_FAIL(lt_model_load(dir, &p, &m), LT_ERR_FORMAT, "bad/model.safetensors: header length");
    CHECK(strstr(lt_last_error(), "(truncated safetensors header)") != NULL);
    /* lying header: a tensor's offsets disagree with its shape */
    CHECK(tiny_model_write(dir, &o) == 0);
    f = fopen(st, "r+b");
    char hdr[4096];
    size_t got = fread(hdr, 1, sizeof hdr - 1, f);
    hdr[got] = 0;
    char *at = strstr(hdr + 8, "\"shape\":[96,32]");
    CHECK(at != NULL);
    if (at) {
        memcpy(at, "\"shape\":[95,32]", 15);
        fseek(f, 0, SEEK_SET);
        fwrite(hdr, 1, got, f);
    }
    fclose(f);
    CHECK_FAIL(lt_model_load(dir, &p, &m), LT_ERR_FORMAT,
               "bad/model.safetensors: tensor 'lm_head.weight' data_offsets [0,6144] but dtype BF16 x shape [95,32] needs 6080 bytes");
    /* no weights at all */
    unlink(st);
    CHECK_FAIL(lt_model_load(dir, &p, &m), LT_ERR_NOT_FOUND, "no model.safetensors or model.safetensors.index.json");
    /* not a folder */
    CHECK_FAIL(lt_model_load(sub("nowhere"), &p, &m), LT_ERR_NOT_FOUND, "nowhere: no such model folder");
    CHECK(m == NULL);
    /* bad parameters */
    p.device = 9;
    CHECK(tiny_model_write(dir, &o) == 0);
    CHECK_FAIL(lt_model_load(dir, &p, &m), LT_ERR_INVALID_ARGUMENT, "device 9 is not an lt_device");
    CHECK_FAIL(lt_model_load(NULL, &p, &m), LT_ERR_INVALID_ARGUMENT, "NULL dir");
    lt_model_free(NULL);
}

int main(void) {
    snprintf(root, sizeof root, "%s/test_model_load.%d", LT_BUILD_DIR, (int)getpid());
    CHECK_OK(lt_mkdirs(root));
    test_qwen2();
    test_llama_untied_f32_v5();
    test_sharded();
    test_bnb();
    test_nonfinite();
    test_bad_inputs();
    if (!lt_test_failures) tiny_rm_rf(root);
    return lt_test_done("test_model_load");
}

/* test_config.c - config.json parsing: the Hub style and the transformers-5 style give the same
 * config; Qwen2 / Llama / Mistral specifics; bitsandbytes 4-bit; and a clear message for each
 * bad config (missing file, corrupt JSON, unknown architecture, missing or bad fields). */
#include "lt_test.h"
#include "model/model.h"
#include "core/rng.h"
#include <unistd.h>

/* The Qwen2-1.5B-Instruct config.json as the Hub ships it. */
static const char *qwen_hub =
    "{\n  \"architectures\": [\"Qwen2ForCausalLM\"],\n  \"attention_dropout\": 0.0,\n  \"bos_token_id\": 151643,\n"
    "  \"eos_token_id\": 151645,\n  \"hidden_act\": \"silu\",\n  \"hidden_size\": 1536,\n  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": 8960,\n  \"max_position_embeddings\": 32768,\n  \"max_window_layers\": 28,\n"
    "  \"model_type\": \"qwen2\",\n  \"num_attention_heads\": 12,\n  \"num_hidden_layers\": 28,\n"
    "  \"num_key_value_heads\": 2,\n  \"rms_norm_eps\": 1e-06,\n  \"rope_theta\": 1000000.0,\n"
    "  \"sliding_window\": 32768,\n  \"tie_word_embeddings\": true,\n  \"torch_dtype\": \"bfloat16\",\n"
    "  \"transformers_version\": \"4.40.1\",\n  \"use_cache\": true,\n  \"use_sliding_window\": false,\n"
    "  \"vocab_size\": 151936\n}\n";
/* The same model saved by transformers 5.x (layer_types: one entry per layer). */
#define FULL7 "\"full_attention\",\"full_attention\",\"full_attention\",\"full_attention\",\"full_attention\"," \
              "\"full_attention\",\"full_attention\""
static const char *qwen_v5 =
    "{\"architectures\":[\"Qwen2ForCausalLM\"],\"attention_dropout\":0.0,\"bos_token_id\":151643,"
    "\"dtype\":\"bfloat16\",\"eos_token_id\":[151645,151643],\"hidden_act\":\"silu\",\"hidden_size\":1536,"
    "\"intermediate_size\":8960,\"layer_types\":[" FULL7 "," FULL7 "," FULL7 "," FULL7 "],\"max_position_embeddings\":32768,"
    "\"model_type\":\"qwen2\",\"num_attention_heads\":12,\"num_hidden_layers\":28,\"num_key_value_heads\":2,"
    "\"rms_norm_eps\":1e-06,\"rope_parameters\":{\"rope_theta\":1000000.0,\"rope_type\":\"default\"},"
    "\"sliding_window\":null,\"tie_word_embeddings\":true,\"use_sliding_window\":false,\"vocab_size\":151936}";

static lt_status parse(const char *s, lt_config *c) { return lt_config_parse(s, strlen(s), "config.json", c); }

/* qwen_hub with `from` replaced by `to` */
static lt_status parse_edit(const char *from, const char *to, lt_config *c) {
    static char buf[4096];
    const char *at = strstr(qwen_hub, from);
    if (!at) { fprintf(stderr, "edit '%s' not found\n", from); return LT_ERR_INTERNAL; }
    snprintf(buf, sizeof buf, "%.*s%s%s", (int)(at - qwen_hub), qwen_hub, to, at + strlen(from));
    return parse(buf, c);
}

int main(void) {
    lt_config a, b;
    CHECK_OK(parse(qwen_hub, &a));
    CHECK_OK(parse(qwen_v5, &b));
    CHECK(!strcmp(a.architecture, "Qwen2ForCausalLM") && !strcmp(a.model_type, "qwen2"));
    CHECK(a.vocab_size == 151936 && a.hidden_size == 1536 && a.intermediate_size == 8960 && a.num_layers == 28);
    CHECK(a.num_heads == 12 && a.num_kv_heads == 2 && a.head_dim == 128 && a.max_position_embeddings == 32768);
    CHECK(a.rope_theta == 1e6 && a.rms_norm_eps == 1e-6 && a.tie_word_embeddings == 1 && a.attention_bias == 1);
    CHECK(a.torch_dtype == LT_DTYPE_BF16 && a.bos_token_id == 151643 && a.n_eos == 1 && a.eos_token_ids[0] == 151645);
    CHECK(a.bnb_4bit == 0);
    /* v5 style: same numbers; eos as a list */
    CHECK(b.vocab_size == a.vocab_size && b.hidden_size == a.hidden_size && b.num_layers == a.num_layers);
    CHECK(b.rope_theta == 1e6 && b.torch_dtype == LT_DTYPE_BF16 && b.attention_bias == 1 && b.head_dim == 128);
    CHECK(b.n_eos == 2 && b.eos_token_ids[0] == 151645 && b.eos_token_ids[1] == 151643);

    /* Llama family: attention_bias from its key, head_dim from its key, rope default 10000 */
    lt_config c;
    const char *llama = "{\"architectures\":[\"LlamaForCausalLM\"],\"model_type\":\"llama\",\"vocab_size\":128256,"
        "\"hidden_size\":2048,\"intermediate_size\":8192,\"num_hidden_layers\":16,\"num_attention_heads\":32,"
        "\"num_key_value_heads\":8,\"head_dim\":64,\"rms_norm_eps\":1e-05,\"tie_word_embeddings\":true,"
        "\"torch_dtype\":\"float16\",\"bos_token_id\":128000,\"eos_token_id\":[128001,128008,128009]}";
    CHECK_OK(parse(llama, &c));
    CHECK(c.attention_bias == 0 && c.head_dim == 64 && c.rope_theta == 10000.0 && c.torch_dtype == LT_DTYPE_F16);
    CHECK(c.n_eos == 3 && c.eos_token_ids[2] == 128009);
    const char *mistral = "{\"architectures\":[\"MistralForCausalLM\"],\"vocab_size\":32000,\"hidden_size\":4096,"
        "\"intermediate_size\":14336,\"num_hidden_layers\":32,\"num_attention_heads\":32,\"num_key_value_heads\":8,"
        "\"attention_bias\":true,\"rope_theta\":1000000.0,\"eos_token_id\":null}";
    CHECK_OK(parse(mistral, &c));
    CHECK(c.attention_bias == 1 && c.head_dim == 128 && c.n_eos == 0 && c.bos_token_id == -1 &&
          !strcmp(c.model_type, "mistral") && c.tie_word_embeddings == 0 && c.torch_dtype == LT_DTYPE_F32);

    /* bitsandbytes 4-bit (as unsloth's -bnb-4bit checkpoints write it) */
    CHECK_OK(parse_edit("\"use_cache\": true,", "\"quantization_config\": {\"_load_in_4bit\": true, \"_load_in_8bit\": "
                        "false, \"bnb_4bit_compute_dtype\": \"bfloat16\", \"bnb_4bit_quant_storage\": \"uint8\", "
                        "\"bnb_4bit_quant_type\": \"nf4\", \"bnb_4bit_use_double_quant\": true, \"load_in_4bit\": true, "
                        "\"load_in_8bit\": false, \"quant_method\": \"bitsandbytes\"},", &c));
    CHECK(c.bnb_4bit == 1);
    CHECK_FAIL(parse_edit("\"use_cache\": true,", "\"quantization_config\": {\"load_in_4bit\": true, "
                          "\"bnb_4bit_quant_type\": \"fp4\", \"quant_method\": \"bitsandbytes\"},", &c),
               LT_ERR_UNSUPPORTED, "bnb_4bit_quant_type \"fp4\" is not supported");
    CHECK_FAIL(parse_edit("\"use_cache\": true,", "\"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 4},", &c),
               LT_ERR_UNSUPPORTED, "quant_method \"gptq\" is not supported");
    CHECK_FAIL(parse_edit("\"use_cache\": true,", "\"quantization_config\": {\"load_in_8bit\": true, "
                          "\"quant_method\": \"bitsandbytes\"},", &c), LT_ERR_UNSUPPORTED, "8-bit");

    /* bad configs, one message each */
    CHECK_FAIL(parse_edit("Qwen2ForCausalLM", "GPT2LMHeadModel", &c), LT_ERR_UNSUPPORTED,
               "config.json: architecture \"GPT2LMHeadModel\" is not supported; loratune runs Qwen2ForCausalLM, "
               "LlamaForCausalLM, MistralForCausalLM");
    CHECK_FAIL(parse("{\"model_type\":\"gemma\",\"vocab_size\":3}", &c), LT_ERR_UNSUPPORTED, "architecture gemma is not supported");
    CHECK_FAIL(parse("{\"architectures\":[\"Qwen2ForCausalLM\"], \"hidden_size\": 8,", &c), LT_ERR_FORMAT,
               "config.json: invalid JSON at line 1");
    CHECK_FAIL(parse("[1]", &c), LT_ERR_FORMAT, "config.json: not a JSON object");
    CHECK_FAIL(parse_edit("\"hidden_size\": 1536,", "", &c), LT_ERR_FORMAT, "config.json: missing \"hidden_size\"");
    CHECK_FAIL(parse_edit("\"hidden_size\": 1536", "\"hidden_size\": \"big\"", &c), LT_ERR_FORMAT,
               "\"hidden_size\" is not an integer");
    CHECK_FAIL(parse_edit("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 5", &c), LT_ERR_FORMAT,
               "num_attention_heads 12 is not a multiple of num_key_value_heads 5");
    CHECK_FAIL(parse_edit("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", &c), LT_ERR_UNSUPPORTED,
               "hidden_act \"gelu\" is not supported");
    /* Qwen2's sliding window: layers from max_window_layers on (28 here: none) */
    CHECK_OK(parse_edit("\"use_sliding_window\": false", "\"use_sliding_window\": true", &c));
    CHECK(c.sliding_window == 0 && c.layer_sliding[27] == 0);
    CHECK_OK(parse_edit("\"use_sliding_window\": false", "\"use_sliding_window\": true, \"max_window_layers\": 20", &c));
    CHECK(c.sliding_window == 32768 && c.layer_sliding[19] == 0 && c.layer_sliding[20] == 1 && c.layer_sliding[27] == 1);
    CHECK_FAIL(parse_edit("\"use_cache\": true,", "\"rope_scaling\": {\"rope_type\": \"ntk-by-parts\", \"factor\": 4.0},", &c),
               LT_ERR_UNSUPPORTED, "rope_scaling.rope_type \"ntk-by-parts\" is not supported");
    CHECK_OK(parse_edit("\"use_cache\": true,", "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0},", &c));
    CHECK(c.rope.kind == LT_ROPE_YARN && c.rope.factor == 4.0);
    /* partial rotary: at the top level (Hub style) or inside rope_parameters (transformers 5) */
    CHECK_FAIL(parse_edit("\"use_cache\": true,", "\"partial_rotary_factor\": 0.75,", &c), LT_ERR_UNSUPPORTED,
               "partial_rotary_factor 0.75 is not supported");
    CHECK_FAIL(parse_edit("\"rope_theta\": 1000000.0,", "\"rope_parameters\": {\"partial_rotary_factor\": 0.75, "
                          "\"rope_theta\": 1000000.0, \"rope_type\": \"default\"},", &c),
               LT_ERR_UNSUPPORTED, "rope_parameters.partial_rotary_factor 0.75 is not supported");
    CHECK_OK(parse_edit("\"rope_theta\": 1000000.0,", "\"rope_parameters\": {\"partial_rotary_factor\": 1.0, "
                        "\"rope_theta\": 1000000.0, \"rope_type\": \"default\"},", &c));
    CHECK(c.rope.kind == LT_ROPE_DEFAULT && c.rope.theta == 1e6);
    CHECK_FAIL(parse_edit("\"torch_dtype\": \"bfloat16\"", "\"torch_dtype\": \"float8\"", &c), LT_ERR_UNSUPPORTED,
               "dtype \"float8\" is not supported");
    CHECK_FAIL(parse_edit("\"eos_token_id\": 151645", "\"eos_token_id\": \"x\"", &c), LT_ERR_FORMAT,
               "eos_token_id is neither an integer nor a list");

    /* random corruption: an error with a message naming the file, or a config that passes the
     * checks (positive sizes, heads divisible), never a crash (ASan/UBSan) */
    size_t qlen = strlen(qwen_hub);
    char *mut = malloc(qlen + 1);
    int bad_msgs = 0, bad_cfgs = 0;
    for (uint64_t it = 0; it < 4000; it++) {
        memcpy(mut, qwen_hub, qlen + 1);
        for (int e = 0; e < 1 + (int)(lt_rng_u32(5, it, 0) % 3); e++) {
            uint32_t r = lt_rng_u32(5, it, 1 + (uint64_t)e);
            static const char pool[] = "{}[]\",:0123456789-eE. tfn";
            mut[(r >> 8) % qlen] = (r & 1) ? pool[(r >> 1) % (sizeof pool - 1)] : (char)(r >> 20 | 1);
        }
        lt_config mc;
        lt_status st = lt_config_parse(mut, qlen, "mutated.json", &mc);
        if (st == LT_OK) bad_cfgs += !(mc.hidden_size > 0 && mc.num_heads > 0 && mc.head_dim > 0 &&
                                       mc.num_heads % mc.num_kv_heads == 0 && mc.num_layers > 0 && mc.vocab_size > 0);
        else bad_msgs += !strstr(lt_last_error(), "mutated.json");
    }
    free(mut);
    CHECK_MSG(bad_msgs == 0 && bad_cfgs == 0, "%d errors without the file name, %d invalid configs accepted", bad_msgs,
              bad_cfgs);

    /* files: missing folder, missing config.json, corrupt config.json */
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/test_config.%d", LT_BUILD_DIR, (int)getpid());
    CHECK_FAIL(lt_config_load(dir, &c), LT_ERR_NOT_FOUND, "no such model folder");
    CHECK_OK(lt_mkdirs(dir));
    CHECK_FAIL(lt_config_load(dir, &c), LT_ERR_NOT_FOUND, "config.json: missing; a Hugging Face model folder needs config.json");
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"architectures\": [\"Qwen2ForCausalLM\"],\n \"vocab_size\": 12 \"hidden_size\": 4}", f);
    fclose(f);
    CHECK_FAIL(lt_config_load(dir, &c), LT_ERR_FORMAT, "config.json: invalid JSON at line 2 column");
    CHECK(strstr(lt_last_error(), dir) != NULL);
    f = fopen(path, "w");
    fputs(qwen_v5, f);
    fclose(f);
    CHECK_OK(lt_config_load(dir, &c));
    CHECK(c.hidden_size == 1536);
    unlink(path);
    rmdir(dir);
    return lt_test_done("test_config");
}

/* test_memory.c - parameter counts and the memory estimate for Qwen2-1.5B-Instruct's config:
 * base parameters (the sum of the checkpoint's tensor shapes, hf-formats.md 2.2), the LoRA
 * count the notebook's PEFT print_trainable_parameters shows for r=16 on all seven targets
 * (18,464,768), and the estimate's exact parts (16-bit weights, fp32 AdamW state). */
#include "lt_test.h"
#include "model/graph.h"
#include "model/model_io.h"
#include <unistd.h>

static const char *qwen15 =
    "{\"architectures\":[\"Qwen2ForCausalLM\"],\"bos_token_id\":151643,\"eos_token_id\":151645,\"hidden_act\":\"silu\","
    "\"hidden_size\":1536,\"initializer_range\":0.02,\"intermediate_size\":8960,\"max_position_embeddings\":32768,"
    "\"model_type\":\"qwen2\",\"num_attention_heads\":12,\"num_hidden_layers\":28,\"num_key_value_heads\":2,"
    "\"rms_norm_eps\":1e-06,\"rope_theta\":1000000.0,\"tie_word_embeddings\":true,\"torch_dtype\":\"bfloat16\","
    "\"use_sliding_window\":false,\"vocab_size\":151936}";

int main(void) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/test_memory.%d", LT_BUILD_DIR, (int)getpid());
    CHECK_OK(lt_mkdirs(dir));
    snprintf(path, sizeof path, "%s/config.json", dir);
    CHECK_OK(lt_write_file_atomic(path, qwen15, strlen(qwen15), 1));
    lt_config c;
    CHECK_OK(lt_config_load(dir, &c));
    CHECK(lt_config_n_params(&c) == 1543714304ull);
    CHECK(lt_config_lora_numel(&c, 16, LT_TARGET_ALL) == 18464768ull);
    CHECK(lt_config_lora_numel(&c, 8, LT_TARGET_Q | LT_TARGET_V) == 28ull * 8 * (3072 + 1792));

    lt_model_params mp;
    lt_model_params_init(&mp);
    mp.device = LT_DEVICE_CUDA;
    mp.quant = LT_QUANT_NONE;
    lt_lora_params lp;
    lt_lora_params_init(&lp);
    lt_train_params tp;
    memset(&tp, 0, sizeof tp);
    tp.struct_size = sizeof tp;
    tp.batch_size = 2;
    tp.optimizer = LT_OPTIM_ADAMW;
    tp.gradient_checkpointing = 1;
    lt_memory_estimate e16, enf4, e8, enock;
    CHECK_OK(lt_estimate_memory(dir, &mp, &lp, &tp, &e16));
    /* 16-bit weights: 2 bytes a parameter, norms and biases in f32 */
    uint64_t f32_params = 1536 + 28ull * (2 * 1536 + 1536 + 2 * 256);
    CHECK(e16.weights == (1543714304ull - f32_params) * 2 + f32_params * 4);
    /* fp32 AdamW: weights + grads + m + v, 16 bytes a LoRA parameter, + its 16-bit copy on CUDA,
     * and a second (transposed) one of each A value: 28 layers x r 16 x (6 x 1536 + 8960) */
    CHECK(e16.lora == 18464768ull * 18 + 2ull * 28 * 16 * (6 * 1536 + 8960));
    CHECK(e16.total == e16.weights + e16.lora + e16.activations + e16.workspace);
    mp.quant = LT_QUANT_NF4;
    CHECK_OK(lt_estimate_memory(dir, &mp, &lp, &tp, &enf4));
    /* NF4 + double quant: projections at ~0.516 bytes a value; embeddings stay 16-bit */
    uint64_t proj = 1543714304ull - 151936ull * 1536 - f32_params - 28ull * (1536 + 2 * 256);
    uint64_t rest = e16.weights - proj * 2;
    CHECK(enf4.weights > rest + proj / 2 && enf4.weights < rest + proj * 53 / 100);
    tp.optimizer = LT_OPTIM_ADAMW_8BIT;
    CHECK_OK(lt_estimate_memory(dir, &mp, &lp, &tp, &e8));
    /* 8-bit states: 2 bytes a value + absmax (every r=16 tensor has >= 4096 values) */
    const uint64_t a16t = 2ull * 28 * 16 * (6 * 1536 + 8960);
    CHECK(e8.lora > 18464768ull * 12 + a16t && e8.lora < 18464768ull * 12 + a16t + 18464768ull / 256 * 8 + 28 * 14 * 8);
    /* evaluation asked for (early stopping): + the 64 MiB logits chunk (110 rows of the
     * 151,936-entry vocabulary, f32) and its argmax ids, nothing else */
    lt_memory_estimate eev;
    tp.early_stopping_patience = 2;
    CHECK_OK(lt_estimate_memory(dir, &mp, &lp, &tp, &eev));
    tp.early_stopping_patience = 0;
    CHECK(eev.activations - e8.activations == 110ull * 151936 * 4 + 110 * 4);
    CHECK(eev.weights == e8.weights && eev.lora == e8.lora && eev.workspace == e8.workspace);
    CHECK(lt_graph_eval_bytes(50, 151936) == 50ull * 151936 * 4 + 50 * 4); /* a pass of 50 tokens */
    tp.gradient_checkpointing = 0;
    CHECK_OK(lt_estimate_memory(dir, &mp, &lp, &tp, &enock));
    CHECK(enock.activations > 3 * e8.activations); /* 28 layers of activations vs one (N,C) each */
    /* defaults (NULL lora/train) work and a missing folder says so */
    CHECK_OK(lt_estimate_memory(dir, NULL, NULL, NULL, &e8));
    CHECK(e8.total > 0);
    CHECK_FAIL(lt_estimate_memory("/nonexistent-model", NULL, NULL, NULL, &e8), LT_ERR_NOT_FOUND, "no such model folder");
    /* Gemma 2's soft-capped head: its own chunk buffers (f32 logits + 16-bit d(logits); the
     * 2 x 2048 tokens fit one chunk of this 256-entry vocabulary), the only difference from
     * the same config without final_logit_softcapping */
    char gpath[4096], *gtxt = NULL;
    size_t glen = 0;
    snprintf(gpath, sizeof gpath, "%s/tests/fixtures/families/gemma2/config.json", LT_REPO_ROOT);
    CHECK_OK(lt_read_file(gpath, &gtxt, &glen));
    lt_memory_estimate ecap, enocap;
    if (gtxt) {
        CHECK_OK(lt_write_file_atomic(path, gtxt, glen, 1));
        CHECK_OK(lt_estimate_memory(dir, &mp, &lp, &tp, &ecap));
        char *at = strstr(gtxt, "\"final_logit_softcapping\": 3.0");
        CHECK(at != NULL);
        if (at) {
            memcpy(at + strlen("\"final_logit_softcapping\": "), "0.0", 3);
            CHECK_OK(lt_write_file_atomic(path, gtxt, glen, 1));
            CHECK_OK(lt_estimate_memory(dir, &mp, &lp, &tp, &enocap));
            /* f32 logits + 16-bit d(logits) of the 4096-token chunk, an f32 loss per token, and the
             * 1 MiB the buffer keeps to grow into */
            CHECK(ecap.activations - enocap.activations ==
                  4096ull * 256 * 4 + 4096ull * 256 * 2 + 4096ull * 4 + (1ull << 20));
            CHECK(ecap.weights == enocap.weights && ecap.lora == enocap.lora);
        }
        free(gtxt);
    }
    unlink(path);
    rmdir(dir);
    return lt_test_done("test_memory");
}

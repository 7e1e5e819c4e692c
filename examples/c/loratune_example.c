/* loratune_example.c - the whole job through the public API, in one C file: load a model and
 * its tokenizer, generate before training (streamed), attach LoRA, load an Alpaca dataset,
 * train with a step callback, generate after, save the PEFT adapter, export a GGUF q4_k_m with
 * its Ollama Modelfile.
 *
 *   loratune_example MODEL_DIR DATA.json OUT_DIR [MAX_STEPS]
 *   loratune_example --version
 *
 * Build against an installed library:
 *   cc loratune_example.c $(pkg-config --cflags --libs loratune)      (or CMakeLists.txt here)
 */
#include <loratune.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRY(call) do { lt_status st_ = (call); if (st_ < 0) { \
    fprintf(stderr, "%s failed: %s\n  %s\n", #call, lt_status_string(st_), lt_last_error()); goto done; } } while (0)

static void on_log(int32_t level, const char *message, void *user_data) {
    (void)user_data;
    fprintf(stderr, "[loratune %d] %s\n", level, message);
}

static int on_text(const char *piece, size_t len, int32_t token, void *user_data) {
    (void)token; (void)user_data;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static int on_step(const lt_metrics *m, void *user_data) {
    (void)user_data;
    printf("step %3lld/%lld  loss %.4f  lr %.3g  grad_norm %.3f  %.0f tok/s\n", (long long)m->step,
           (long long)m->max_steps, m->loss, m->lr, m->grad_norm, m->tokens_per_s);
    return 0;
}

/* Streams a greedy answer to `question` rendered through the notebook's Alpaca template. */
static lt_status ask(lt_model *model, const lt_tokenizer *tok, const char *question) {
    char prompt[4096];
    size_t len = 0, n_ids = 0, n_out = 0;
    int32_t ids[1024], out[129];
    lt_status st = lt_template_render("alpaca-zh", question, "", "", prompt, sizeof prompt, &len);
    if (st < 0) return st;
    /* add_special = 1: the prompt as transformers' tokenizer(prompt) encodes it, with the BOS that
     * Llama / Gemma / Phi-3 tokenizers add (training records get it too); nothing for Qwen2 */
    st = lt_tokenizer_encode(tok, prompt, len, 1, ids, 1024, &n_ids);
    if (st < 0) return st;
    lt_generate_params gp;
    lt_generate_params_init(&gp);
    gp.max_new_tokens = 64;
    gp.tokenizer = tok;
    gp.on_text = on_text;
    fputs(prompt, stdout);
    st = lt_generate(model, ids, n_ids, &gp, out, 129, &n_out);
    fputc('\n', stdout);
    return st;
}

int main(int argc, char **argv) {
    /* The library must be the one this program was compiled for: same major, same structs. */
    if (lt_version_number() / 10000 != LT_VERSION_MAJOR ||
        lt_struct_size("lt_train_params") != sizeof(lt_train_params) ||
        lt_struct_size("lt_metrics") != sizeof(lt_metrics)) {
        fprintf(stderr, "libloratune %s does not match the header this program was built with (%d.%d.%d)\n",
                lt_version(), LT_VERSION_MAJOR, LT_VERSION_MINOR, LT_VERSION_PATCH);
        return 1;
    }
    if (argc == 2 && !strcmp(argv[1], "--version")) {
        printf("libloratune %s\n", lt_version());
        return 0;
    }
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL_DIR DATA.json OUT_DIR [MAX_STEPS]\n", argv[0]);
        return 2;
    }
    const char *model_dir = argv[1], *data = argv[2], *out_dir = argv[3];
    int max_steps = argc > 4 ? atoi(argv[4]) : 100;
    int rc = 1;
    lt_tokenizer *tok = NULL;
    lt_model *model = NULL;
    lt_dataset *ds = NULL;
    lt_trainer *tr = NULL;
    lt_exporter *ex = NULL;
    char path[4096];

    printf("libloratune %s\n", lt_version());
    lt_set_log_callback(on_log, LT_LOG_WARN, NULL);

    TRY(lt_tokenizer_load(model_dir, &tok));
    lt_model_params mp;
    lt_model_params_init(&mp);
    if (getenv("LORATUNE_DEVICE") && !strcmp(getenv("LORATUNE_DEVICE"), "cpu")) mp.device = LT_DEVICE_CPU;
    TRY(lt_model_load(model_dir, &mp, &model));

    printf("--- before training ---\n");
    TRY(ask(model, tok, "海绵宝宝的书法是不是叫做海绵体"));

    lt_lora_params lp;
    lt_lora_params_init(&lp); /* the notebook's r=16, alpha=32, dropout 0.1, all 7 targets */
    TRY(lt_model_add_lora(model, &lp));

    lt_dataset_params dp;
    lt_dataset_params_init(&dp); /* Alpaca records through "alpaca-zh", EOS appended */
    TRY(lt_dataset_load(data, tok, &dp, &ds));
    lt_dataset_stats stats;
    stats.struct_size = sizeof stats;
    TRY(lt_dataset_get_stats(ds, &stats));
    printf("%llu records, %llu tokens\n", (unsigned long long)stats.n_records, (unsigned long long)stats.n_tokens);

    lt_train_params tp;
    lt_train_params_init(&tp); /* batch 2 x accum 8, lr 4e-5, warmup 50, cosine, adamw_8bit */
    tp.max_steps = max_steps;
    if (tp.warmup_steps > max_steps / 2) tp.warmup_steps = max_steps / 2;
    tp.on_step = on_step;
    TRY(lt_trainer_new(model, ds, &tp, &tr));
    lt_status st;
    lt_metrics m;
    m.struct_size = sizeof m;
    while ((st = lt_trainer_step(tr, &m)) == LT_OK) {}
    TRY(st);

    printf("--- after training ---\n");
    TRY(ask(model, tok, "海绵宝宝的书法是不是叫做海绵体"));

    snprintf(path, sizeof path, "%s/lora_model", out_dir);
    TRY(lt_model_save_adapter(model, path, 1));
    printf("adapter: %s\n", path);

    lt_export_params ep;
    lt_export_params_init(&ep); /* merged GGUF q4_k_m + Modelfile with the training template */
    ep.overwrite = 1;
    TRY(lt_exporter_new(model, tok, &ep, &ex));
    snprintf(path, sizeof path, "%s/model-Q4_K_M.gguf", out_dir);
    TRY(lt_exporter_write(ex, path));
    printf("gguf: %s\n", path);
    rc = 0;
done:
    lt_exporter_free(ex);
    lt_trainer_free(tr);
    lt_dataset_free(ds);
    lt_model_free(model);
    lt_tokenizer_free(tok);
    return rc;
}

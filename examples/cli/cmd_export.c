/* cmd_export.c - `loratune export`: writes a trained adapter as a PEFT folder, the merged model
 * as a Hugging Face checkpoint or a GGUF (with an Ollama Modelfile beside it), or the adapter as
 * a GGUF LoRA. */
#include "cli.h"

/* internal (lib/model/model_io.h): the export reads the original weights from the checkpoint */
lt_status lt_model_load_without_projections(const char *dir, const lt_model_params *params, lt_model **out);
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

static const char *usage_text =
    "usage: loratune export --model DIR [--adapter DIR] --format peft|merged|gguf|gguf-lora --output PATH\n"
    "         [--quant f32|f16|bf16|q8_0|q4_k_m|q4_k_s|q5_k_m|q6_k] [--template NAME|FILE]\n"
    "         [--merge-into auto|original|dequantized] [--tokenizer DIR] [--max-shard-bytes N]\n"
    "         [--no-modelfile] [--threads N] [--device auto|cpu|cuda] [--overwrite]\n"
    "  peft:      adapter_config.json + adapter_model.safetensors in the folder PATH\n"
    "  merged:    the merged model (W += scale * B @ A) as a Hugging Face checkpoint folder PATH\n"
    "  gguf:      the merged model as a GGUF file PATH (default --quant q4_k_m) and a Modelfile\n"
    "             beside it whose TEMPLATE is the prompt template trained with (default alpaca-zh)\n"
    "  gguf-lora: the adapter as a GGUF LoRA file PATH (llama.cpp --lora, Ollama ADAPTER)\n"
    "  --merge-into: original 16-bit weights (default where at hand) or the dequantized 4-bit base\n";

static char *read_text_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) { free(s); s = NULL; }
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

/* Names the Modelfile the library wrote beside the GGUF: "Modelfile" when it is this GGUF's
 * (FROM ./<file>), else "<name>.Modelfile" (a Modelfile of another GGUF was already there). */
static void print_modelfile(const char *gguf) {
    size_t n = strlen(gguf);
    const char *slash = strrchr(gguf, '/');
    const char *file = slash ? slash + 1 : gguf;
    size_t dir = (size_t)(file - gguf), stem = n;
    if (n - dir > 5 && !strcasecmp(gguf + n - 5, ".gguf")) stem = n - 5;
    char *plain = malloc(n + 16), *named = malloc(n + 16), *want = malloc(n + 16);
    if (plain && named && want) {
        snprintf(plain, n + 16, "%.*sModelfile", (int)dir, gguf);
        snprintf(named, n + 16, "%.*s.Modelfile", (int)stem, gguf);
        snprintf(want, n + 16, "\nFROM ./%s\n", file);
        char *text = read_text_file(plain);
        const char *mf = text && strstr(text, want) ? plain : named;
        free(text);
        fprintf(stderr, "Ollama: ollama create NAME -f ");
        cli_print_quoted(stderr, mf);
        fputc('\n', stderr);
    }
    free(plain);
    free(named);
    free(want);
}

int lt_cmd_export(int argc, char **argv) {
    const char *cmd = "export", *model_dir = NULL, *adapter = NULL, *format = NULL, *output = NULL;
    const char *quant = NULL, *tmpl = NULL, *merge = "auto", *device = "auto", *tok_dir = NULL;
    lt_export_params ep;
    lt_export_params_init(&ep);
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (cli_switch(argv, i, "--help") || cli_switch(argv, i, "-h")) { fputs(usage_text, stdout); return 0; }
        else if ((v = cli_flag(argc, argv, &i, "--model"))) model_dir = v;
        else if ((v = cli_flag(argc, argv, &i, "--adapter"))) adapter = v;
        else if ((v = cli_flag(argc, argv, &i, "--format"))) format = v;
        else if ((v = cli_flag(argc, argv, &i, "--output")) || (v = cli_flag(argc, argv, &i, "-o"))) output = v;
        else if ((v = cli_flag(argc, argv, &i, "--quant"))) quant = v;
        else if ((v = cli_flag(argc, argv, &i, "--template"))) tmpl = v;
        else if ((v = cli_flag(argc, argv, &i, "--merge-into"))) merge = v;
        else if ((v = cli_flag(argc, argv, &i, "--tokenizer"))) tok_dir = v;
        else if ((v = cli_flag(argc, argv, &i, "--device"))) device = v;
        else if ((v = cli_flag(argc, argv, &i, "--threads"))) { if (!cli_int(cmd, "--threads", v, &ep.n_threads)) return 2; }
        else if ((v = cli_flag(argc, argv, &i, "--max-shard-bytes"))) { if (!cli_u64(cmd, "--max-shard-bytes", v, &ep.max_shard_bytes)) return 2; }
        else if (cli_switch(argv, i, "--no-modelfile")) ep.write_modelfile = 0;
        else if (cli_switch(argv, i, "--overwrite")) ep.overwrite = 1;
        else return cli_usage_error(cmd, "unknown flag '%s'", argv[i]);
    }
    if (!model_dir) return cli_usage_error(cmd, "--model DIR is required");
    struct stat sb;
    if (stat(model_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return cli_usage_error(cmd, "--model %s: no such folder (a Hugging Face model folder)", model_dir);
    if (!output) return cli_usage_error(cmd, "--output PATH is required");
    if (!format) format = quant ? "gguf" : NULL;
    if (!format) return cli_usage_error(cmd, "--format peft|merged|gguf|gguf-lora is required");
    if (lt_export_format_parse(format, &ep.format) != LT_OK) return cli_usage_error(cmd, "%s", lt_last_error());
    if (quant) ep.quant = quant;
    else if (strcmp(format, "gguf") && strcmp(format, "peft") && strcmp(format, "merged") && strcmp(format, "gguf-lora"))
        ep.quant = format; /* --format q8_0 */
    if (!strcmp(merge, "auto")) ep.merge_base = LT_MERGE_AUTO;
    else if (!strcmp(merge, "original")) ep.merge_base = LT_MERGE_ORIGINAL;
    else if (!strcmp(merge, "dequantized")) ep.merge_base = LT_MERGE_DEQUANTIZED;
    else return cli_usage_error(cmd, "--merge-into is auto, original or dequantized, not '%s'", merge);
    char *tmpl_text = NULL;
    if (tmpl) {
        if (lt_template_builtin(tmpl)) ep.template_name = tmpl;
        else if ((tmpl_text = read_text_file(tmpl))) ep.template_text = tmpl_text;
        else return cli_usage_error(cmd, "--template '%s' is neither a built-in (alpaca-zh, alpaca, chatml) nor a readable file", tmpl);
    }
    ep.tokenizer_dir = tok_dir;
    ep.progress = cli_progress;

    lt_model_params mp;
    lt_model_params_init(&mp);
    if (!strcmp(device, "cpu")) mp.device = LT_DEVICE_CPU;
    else if (!strcmp(device, "cuda")) mp.device = LT_DEVICE_CUDA;
    else if (strcmp(device, "auto")) { free(tmpl_text); return cli_usage_error(cmd, "--device is auto, cpu or cuda, not '%s'", device); }
    mp.progress = cli_progress;
    mp.n_threads = ep.n_threads;
    /* Merging into the original 16-bit weights reads them from the mapped checkpoint: the
     * backend's copy is not used, so do not spend time quantizing it on the CPU. */
    if (ep.merge_base != LT_MERGE_DEQUANTIZED) mp.quant = LT_QUANT_NONE;
    cli_enable_logging(LT_LOG_WARN);

    int rc = 1;
    lt_model *model = NULL;
    lt_exporter *ex = NULL;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    lt_status st = ep.merge_base == LT_MERGE_DEQUANTIZED ? lt_model_load(model_dir, &mp, &model)
                                                         : lt_model_load_without_projections(model_dir, &mp, &model);
    if (st != LT_OK) { rc = cli_fail(cmd, st, "loading the model"); goto done; }
    if (adapter && (st = lt_model_load_adapter(model, adapter)) != LT_OK) { rc = cli_fail(cmd, st, "loading the adapter"); goto done; }
    if ((st = lt_exporter_new(model, NULL, &ep, &ex)) != LT_OK) { rc = cli_fail(cmd, st, "preparing the export"); goto done; }
    /* Ctrl-C / SIGTERM cancel through the progress callback: the export then leaves nothing
     * half-written (and removes the folders it created) before the command exits 130 / 143 */
    cli_stop_install();
    if ((st = lt_exporter_write(ex, output)) != LT_OK) {
        if (st == LT_STOPPED && cli_stop_signal()) {
            fprintf(stderr, "loratune export: stopped by %s; nothing was written to %s\n", cli_stop_signal_name(), output);
            rc = cli_stop_exit_code();
        } else {
            rc = cli_fail(cmd, st, "exporting");
        }
        goto done;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr, "wrote %s in %.2f s\n", output,
            (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    if (ep.format == LT_EXPORT_GGUF && ep.write_modelfile) print_modelfile(output);
    rc = cli_stop_exit_code(); /* a signal after the last write: the output is whole, yet say it came */
done:
    lt_exporter_free(ex);
    lt_model_free(model);
    free(tmpl_text);
    return rc;
}

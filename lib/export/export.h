/* export.h - internals shared by the exporters (lib/export): the export plan (every tensor of
 * the checkpoint with its Hugging Face and GGUF names), the merged-weight producer
 * (W + scale * B @ A over the original or the dequantized base), the GGUF type mixture rules,
 * and the writers (PEFT, merged safetensors, GGUF, GGUF LoRA, Ollama Modelfile). */
#ifndef LT_EXPORT_H
#define LT_EXPORT_H
#include "core/core.h"
#include "model/model.h"
#include "io/gguf.h"

/* What a tensor is in the decoder layout (LT_XT_NORM: the family's other norm weights - Gemma's
 * post-norms, q/k norms - read from the checkpoint as they are). */
enum { LT_XT_EMBED, LT_XT_HEAD, LT_XT_FINAL_NORM, LT_XT_LN1, LT_XT_LN2, LT_XT_PROJ, LT_XT_BIAS, LT_XT_NORM };

typedef struct lt_export_tensor {
    char hf[128];          /* "model.layers.3.self_attn.q_proj.weight" */
    char gguf[64];         /* "blk.3.attn_q.weight" */
    int kind;              /* LT_XT_* */
    int layer;             /* -1 outside the layers */
    int proj;              /* LT_PROJ_* for PROJ, 0..2 (q,k,v) for BIAS */
    int ndim;
    int64_t shape[2];      /* HF (row-major) shape: [out, in] or [n] */
    int64_t numel;
} lt_export_tensor;

struct lt_exporter {
    lt_model *model;
    const lt_tokenizer *tok;
    lt_export_params p;
    char *quant, *template_name, *template_text, *tokenizer_dir;
    int use_original;      /* resolved merge base: 1 original 16-bit weights, 0 dequantized */
    int n_threads;
    lt_export_tensor *t;   /* the plan, in checkpoint order */
    size_t n_t;
    /* host copies of the LoRA tensors, [layer * LT_PROJ_COUNT + proj], NULL when not targeted */
    float **lora_A, **lora_B;
    uint64_t progress_done, progress_total;
    const char *phase;
};

/* llama.cpp's architecture name of the config's family ("llama", "qwen2", ...; gguf_export.c),
 * NULL when there is none. */
const char *lt_gguf_arch(const lt_config *c);
/* llama.cpp's row order of a q or k projection's output rows (rows x cols floats, row-major) in
 * place: Llama / Mistral interleave each head's two rope halves (the converter's
 * LlamaModel.permute); every other family and projection is left as it is (gguf_export.c). The
 * GGUF weights and the rows of a GGUF LoRA's B both go through it. */
lt_status lt_gguf_permute_rows(const lt_config *c, int proj, float *x, int64_t rows, int64_t cols);
/* Builds the tensor plan from the config (exporter.c). */
lt_status lt_export_plan(lt_exporter *ex);
/* Downloads the LoRA tensors (once). */
lt_status lt_export_fetch_lora(lt_exporter *ex);
/* The merged f32 values of plan tensor t (numel floats, row-major as HF). */
lt_status lt_export_merged_f32(lt_exporter *ex, const lt_export_tensor *t, float *out);
/* The checkpoint's storage dtype (lt_dtype; F32 / F16 / BF16). */
int lt_export_ckpt_dtype(const lt_exporter *ex);
/* Rounds n values to the checkpoint dtype and back (what a merged 16-bit checkpoint holds). */
void lt_export_round_to_dtype(float *x, int64_t n, int dtype);
/* LT_ERR_NONFINITE naming the tensor when x[n] holds a NaN or an infinity (nothing non-finite is
 * ever exported). */
lt_status lt_export_check_finite(const char *name, const float *x, int64_t n);
/* The Modelfile beside a GGUF: "Modelfile" when free, when it is already this GGUF's, or with
 * overwrite; else "<gguf name without .gguf>.Modelfile", so that several quantizations share a
 * folder. LT_ERR_EXISTS when that one exists without overwrite. */
lt_status lt_export_modelfile_path(const lt_exporter *ex, const char *gguf_path, char **out);
/* Progress: adds `units` and calls params.progress; LT_STOPPED when the host cancels. */
lt_status lt_export_progress(lt_exporter *ex, uint64_t units);
/* The tokenizer folder: params.tokenizer_dir or the model's folder. */
const char *lt_export_tokenizer_dir(const lt_exporter *ex);

/* Creates the folder a file path lives in (mkdir -p), with a clear error when it cannot. */
lt_status lt_export_parent_dir(const char *path);

/* ---- GGUF type mixture (mixture.c) ---- */
typedef struct lt_gguf_ftype {
    const char *name;      /* "q4_k_m" */
    uint32_t file_type;    /* LLAMA_FTYPE_* written to general.file_type */
    int base_type;         /* the default ggml type of 2-D weights */
    int llama_quantize;    /* 1: llama-quantize's rules (K mixtures, Q8_0 output); 0: the converter's */
} lt_gguf_ftype;
/* "f32","f16","bf16","q8_0","q4_k_m","q4_k_s","q5_k_m","q6_k" (case-insensitive). */
lt_status lt_gguf_ftype_parse(const char *name, lt_gguf_ftype *out);
/* The ggml type of a tensor in a file of ftype ft: norms, biases and 1-D tensors F32, the
 * llama-quantize mixture rules (output / tied token_embd, attn_v, ffn_down with use_more_bits)
 * and the fallbacks for rows that are not a multiple of the block size. has_output: the file
 * carries output.weight (untied head). */
int lt_gguf_tensor_type(const lt_gguf_ftype *ft, const lt_export_tensor *t, int n_layer, int has_output);

/* ---- writers ---- */
lt_status lt_export_write_gguf(lt_exporter *ex, const char *path);
lt_status lt_export_write_gguf_lora(lt_exporter *ex, const char *path);
lt_status lt_export_write_merged(lt_exporter *ex, const char *dir);
/* The Modelfile beside a GGUF (modelfile.c): FROM ./<gguf file name>, TEMPLATE, stops. */
lt_status lt_export_write_modelfile(lt_exporter *ex, const char *gguf_path);
/* Tokenizer keys of the GGUF (gguf_vocab.c). */
lt_status lt_export_gguf_vocab(lt_exporter *ex, lt_gguf_writer *w);
/* *missing = the first of texts[0..n-1] that is neither a token of tokenizer.json's model.vocab
 * nor an added token's content, or NULL when the vocabulary has them all. */
lt_status lt_export_vocab_missing(lt_exporter *ex, const char *const *texts, size_t n, const char **missing);
/* The end-of-generation token texts for Modelfile stops: eos and the tokenizer's <|...|> ends. */
lt_status lt_export_stop_tokens(lt_exporter *ex, char ***out, size_t *n);
#endif

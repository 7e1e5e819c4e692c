/* infer.h - internal generation helpers over lt_generate (used by the CLI's generate and train
 * commands and by the bindings' examples): a prompt-template generation that returns the text,
 * and the switch between the CUDA fast decode step and the generic backend ops. */
#ifndef LT_INFER_H
#define LT_INFER_H
#include "core/core.h"

/* Renders `template_name_or_text` (a built-in name such as "alpaca-zh", or a template text;
 * NULL = "alpaca-zh") with instruction and input (NULL = "") and an empty output, tokenizes it
 * as transformers' tokenizer(prompt) does (lt_tokenizer_encode_prompt: BOS where the tokenizer adds it),
 * generates with `params` (its tokenizer is set to tok; its on_text/user_data stream the
 * pieces, may be NULL) and returns the generated text (special tokens skipped) in *out_text,
 * malloc'd, NUL-terminated, the caller frees it; *out_n_tokens (may be NULL) gets the number
 * of new tokens. A callback stop returns LT_STOPPED with the text so far. */
lt_status lt_generate_text(lt_model *model, const lt_tokenizer *tok, const char *template_name_or_text,
                           const char *instruction, const char *input, const lt_generate_params *params,
                           char **out_text, size_t *out_n_tokens);

/* 0: decode with the backend ops even on CUDA (tests compare both paths); default 1. */
void lt_generate_set_fast_decode(int on);

/* Timings of the last lt_generate / lt_generate_batch on this thread (seconds): prefill until
 * the first tokens are known, and the decode steps after them; token counts summed over the
 * sequences (n_decoded: the tokens of the decode steps, not the first one of each sequence). */
typedef struct lt_generate_timing {
    double prefill_s, decode_s;
    int64_t n_prompt, n_decoded;
    int32_t fast_decode;          /* 1 when the CUDA decode kernels ran */
    int64_t n_seq;                /* prompts of the call */
    double decoder_setup_s;       /* of decode_s: creating the backend's decoder (buffers, tables) */
} lt_generate_timing;
void lt_generate_last_timing(lt_generate_timing *out);
#endif

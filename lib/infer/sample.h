/* sample.h - next-token selection with transformers' semantics: repetition penalty, then
 * temperature, top-k, top-p and min-p warpers (in that order), then greedy argmax or a draw
 * from the softmax with the counter-based RNG (same seed, same tokens). */
#ifndef LT_SAMPLE_H
#define LT_SAMPLE_H
#include "core/core.h"

/* Applies the processors in place to logits[V] (filtered entries become -INFINITY).
 * history[nh]: prompt + generated ids (for the repetition penalty). */
void lt_sample_process(float *logits, int32_t V, const lt_generate_params *p, const int32_t *history, size_t nh);
/* Picks the next token from processed logits: argmax when !p->do_sample, else a draw with
 * lt_rng_uniform(seed, stream = draw_index, 0). */
int32_t lt_sample_pick(const float *logits, int32_t V, const lt_generate_params *p, uint64_t draw_index);
#endif

/* generate.c - text generation with a KV cache, for one prompt (lt_generate) or several at once
 * (lt_generate_batch): each prompt is prefilled in one pass through the model's layers
 * (lt_graph_forward_cached: the training kernels, GEMMs, flash attention) into its own cache,
 * then one token per sequence per step - all sequences in one step of the backend's batched
 * single-token decoder where it has one for this model (decoder_create_batch /
 * decoder_step_batch; CUDA: cuda/decode.cu as a CUDA graph), else each through the same layers
 * with KV-cache attention. LoRA is applied unmerged with dropout off, so generation works
 * between trainer steps. Greedy or sampled (sample.h; sequence i draws with seed + i); stop ids,
 * stop strings and max_new_tokens per sequence; text streamed UTF-8-safely through
 * lt_token_stream seeded with the prompt (one prompt): what decoding prompt + new ids adds. */
#include "infer/infer.h"
#include "infer/sample.h"
#include "model/model.h"
#include "model/graph.h"
#include "tok/tok.h"
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define LT_GEN_MAX_STOPS 32
#define LT_GEN_PIECE 8192 /* one token's text (+ a pending partial character) always fits */

static int g_fast_decode = 1;
void lt_generate_set_fast_decode(int on) { g_fast_decode = on; }

static _Thread_local lt_generate_timing g_timing;
void lt_generate_last_timing(lt_generate_timing *out) {
    if (out) *out = g_timing;
}

LT_API void lt_generate_params_init(lt_generate_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->max_new_tokens = 128;
    p->do_sample = 0;
    p->temperature = 1.0f;
    p->top_k = 0;
    p->top_p = 1.0f;
    p->min_p = 0.0f;
    p->repetition_penalty = 1.0f;
    p->seed = 3407;
}

LT_API lt_status lt_model_release_buffers(lt_model *m) {
    LT_CHECK_ARG(m, "lt_model_release_buffers: model is NULL");
    if (m->graph) {
        LT_TRY(m->be->ops.sync(m->be));
        lt_graph_free(m->graph);
        m->graph = NULL;
    }
    return LT_OK;
}

/* The KV cache of one generation (max_len positions per layer) and the logits buffer; the
 * layers themselves run in the model's graph (lt_graph_forward_cached). */
typedef struct gen_state {
    lt_model *m;
    lt_backend *be;
    int64_t max_len;
    float *logits;                                 /* f32 [V] */
    void **kc, **vc;                               /* per layer act (max_len, NKV*HD) */
} gen_state;

static void gen_free(gen_state *g) {
    lt_backend *be = g->be;
    if (!be) return;
    if (g->logits) be->ops.free(be, g->logits);
    for (int l = 0; l < g->m->cfg.num_layers; l++) {
        if (g->kc && g->kc[l]) be->ops.free(be, g->kc[l]);
        if (g->vc && g->vc[l]) be->ops.free(be, g->vc[l]);
    }
    free(g->kc);
    free(g->vc);
    g->be = NULL;
}

static lt_status gen_alloc(gen_state *g, lt_model *m, int64_t max_len) {
    memset(g, 0, sizeof *g);
    g->m = m;
    g->be = m->be;
    g->max_len = max_len;
    lt_backend *be = m->be;
    const lt_config *c = &m->cfg;
    size_t ab = (size_t)be->act_bytes, kd = (size_t)c->num_kv_heads * (size_t)c->head_dim;
    lt_status st = be->ops.alloc(be, (size_t)c->vocab_size * 4, (void **)&g->logits);
    if (st != LT_OK) { gen_free(g); return lt_error_wrap(st, "generation logits"); }
    g->kc = calloc(c->num_layers, sizeof(void *));
    g->vc = calloc(c->num_layers, sizeof(void *));
    if (!g->kc || !g->vc) { gen_free(g); return lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory for the KV cache table"); }
    for (int l = 0; l < c->num_layers; l++) {
        st = be->ops.alloc(be, (size_t)max_len * kd * ab, &g->kc[l]);
        if (st == LT_OK) st = be->ops.alloc(be, (size_t)max_len * kd * ab, &g->vc[l]);
        if (st != LT_OK) {
            gen_free(g);
            return lt_error_wrap(st, "KV cache for %lld positions (lower max_new_tokens or the prompt length)",
                                 (long long)max_len);
        }
    }
    return LT_OK;
}

/* Runs ids[n] at positions [past, past+n) through the model, filling the caches, and leaves
 * the last token's logits in host_logits[V]. */
static lt_status forward(gen_state *g, const int32_t *host_ids, int64_t n, int64_t past, float *host_logits) {
    return lt_graph_forward_cached(g->m, host_ids, n, past, g->kc, g->vc, g->logits, host_logits);
}

static bool ends_with(const char *s, size_t n, const char *suf) {
    size_t k = strlen(suf);
    return k && n >= k && memcmp(s + n - k, suf, k) == 0;
}

static void add_stop(int32_t *stops, int *n, int32_t id) {
    if (id < 0 || *n >= LT_GEN_MAX_STOPS) return;
    for (int i = 0; i < *n; i++) if (stops[i] == id) return;
    stops[(*n)++] = id;
}

/* The text kept for stop strings: it only needs the longest stop string's length at its end. */
typedef struct text_tail {
    char *buf;
    size_t len, cap, keep;
} text_tail;

static lt_status tail_append(text_tail *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        size_t cap = (t->len + n + 1) * 2;
        char *b = realloc(t->buf, cap);
        if (!b) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory for the generated text");
        t->buf = b;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = 0;
    if (t->len > 4 * t->keep + 4096) { /* drop what no stop string can still end with */
        size_t drop = t->len - t->keep;
        memmove(t->buf, t->buf + drop, t->keep + 1);
        t->len = t->keep;
    }
    return LT_OK;
}

/* One sequence of a generation call: its prompt, KV cache, history, sampler (its own seed),
 * stop-string tail and token stream, and where its ids go. */
typedef struct gen_seq {
    gen_state g;
    const int32_t *prompt;
    size_t n_prompt;
    int32_t *hist;                                 /* prompt + generated, [n_prompt + max_new_tokens] */
    size_t nh, produced;
    int done;
    lt_generate_params p;                          /* the call's params with this sequence's seed */
    lt_token_stream *stream;
    text_tail tail;
    int32_t *out;                                  /* out_ids row (cap ids) or NULL */
    int32_t next_tok, pos;                         /* the token the next decode step runs, at pos */
} gen_seq;

/* Checks params (struct_size, ranges) and copies them with the defaults of fields newer than
 * the caller's struct; fn names the public call in messages. */
static lt_status gen_params(const char *fn, const lt_generate_params *params, lt_generate_params *pv) {
    LT_CHECK_ARG(params->struct_size >= offsetof(lt_generate_params, user_data) + sizeof(void *) &&
                 params->struct_size <= sizeof *params,
                 "%s: params.struct_size is %u, not a size of lt_generate_params this library knows "
                 "(call lt_generate_params_init)", fn, params->struct_size);
    lt_generate_params_init(pv);
    memcpy(pv, params, params->struct_size);
    pv->struct_size = sizeof *pv;
    const lt_generate_params *p = pv;
    LT_CHECK_ARG(p->max_new_tokens >= 0, "%s: max_new_tokens is %d, it must be >= 0", fn, p->max_new_tokens);
    LT_CHECK_ARG(!p->on_text || p->tokenizer, "%s: on_text needs params.tokenizer", fn);
    LT_CHECK_ARG(!p->n_stop_strings || (p->tokenizer && p->stop_strings),
                 "%s: stop_strings need params.tokenizer and a non-NULL array", fn);
    LT_CHECK_ARG(!p->stop_ids || p->n_stop_ids >= 0, "%s: n_stop_ids is %d", fn, p->n_stop_ids);
    LT_CHECK_ARG(!p->do_sample || p->temperature > 0, "%s: temperature must be > 0 when sampling (got %g)", fn,
                 p->temperature);
    LT_CHECK_ARG(!p->do_sample || (p->top_p > 0 && p->top_p <= 1), "%s: top_p must be in (0, 1] (got %g)", fn,
                 p->top_p);
    LT_CHECK_ARG(!p->do_sample || (p->min_p >= 0 && p->min_p <= 1), "%s: min_p must be in [0, 1] (got %g)", fn,
                 p->min_p);
    LT_CHECK_ARG(p->top_k >= 0, "%s: top_k must be >= 0 (got %d)", fn, p->top_k);
    LT_CHECK_ARG(p->repetition_penalty > 0, "%s: repetition_penalty must be > 0 (got %g)", fn,
                 p->repetition_penalty);
    return LT_OK;
}

/* Takes token tok as sequence s's next: records it, streams it, and marks the sequence done
 * when it is a stop id, completes a stop string or reaches max_new_tokens. */
static lt_status gen_take(gen_seq *s, int32_t tok, const int32_t *stops, int n_stops, size_t cap, char *piece) {
    const lt_generate_params *p = &s->p;
    if (s->out && s->produced < cap) s->out[s->produced] = tok;
    s->produced++;
    s->hist[s->nh++] = tok;
    bool stop = false;
    for (int i = 0; i < n_stops; i++) stop |= tok == stops[i];
    if (s->stream) {
        size_t plen = 0;
        LT_TRY(lt_token_stream_push(s->stream, tok, piece, LT_GEN_PIECE, &plen));
        if (plen) {
            if (p->on_text && p->on_text(piece, plen, tok, p->user_data)) return LT_STOPPED;
            if (p->n_stop_strings) {
                LT_TRY(tail_append(&s->tail, piece, plen));
                for (int i = 0; i < p->n_stop_strings; i++)
                    if (p->stop_strings[i] && ends_with(s->tail.buf, s->tail.len, p->stop_strings[i])) stop = true;
            }
        }
    }
    if (stop || s->produced >= (size_t)p->max_new_tokens) s->done = 1;
    s->next_tok = tok;
    s->pos = (int32_t)(s->nh - 1);
    return LT_OK;
}

/* The generation of n sequences (lt_generate: n = 1): each prompt prefilled through the
 * layers into its own KV cache, then decode steps that run every unfinished sequence's next
 * token - one batched step of the backend's decoder where it has one, else each through the
 * layers. Finished sequences ride along in a batched step (their cache slot is rewritten,
 * their output ignored) until all are done. */
static lt_status gen_run(const char *fn, lt_model *m, size_t n, const int32_t *const *prompts, const size_t *n_prompt,
                         const lt_generate_params *params, int32_t *out_ids, size_t cap, size_t *n_out) {
    lt_generate_params pv;
    LT_TRY(gen_params(fn, params, &pv));
    const lt_generate_params *p = &pv;
    LT_CHECK_ARG(n == 1 || !p->on_text, "%s: on_text (streaming) takes one prompt, not %zu", fn, n);
    const lt_config *c = &m->cfg;
    int32_t V = c->vocab_size;
    size_t longest = 0, total = 0;
    for (size_t s = 0; s < n; s++) {
        LT_CHECK_ARG(prompts[s], "%s: prompt %zu is NULL", fn, s);
        if (n == 1) LT_CHECK_ARG(n_prompt[s] > 0, "%s: the prompt is empty (it needs at least one token)", fn);
        else LT_CHECK_ARG(n_prompt[s] > 0, "%s: prompt %zu is empty (it needs at least one token)", fn, s);
        for (size_t i = 0; i < n_prompt[s]; i++)
            if (prompts[s][i] < 0 || prompts[s][i] >= V) {
                if (n == 1)
                    return lt_error(LT_ERR_INVALID_ARGUMENT, "%s: prompt token %zu is %d, outside the vocabulary [0, %d)",
                                    fn, i, prompts[s][i], V);
                return lt_error(LT_ERR_INVALID_ARGUMENT,
                                "%s: token %zu of prompt %zu is %d, outside the vocabulary [0, %d)", fn, i, s,
                                prompts[s][i], V);
            }
        if (n_prompt[s] > longest) longest = n_prompt[s];
        total += n_prompt[s];
    }
    /* every sequence's cache holds the longest prompt + max_new_tokens, so one decoder serves all */
    int64_t max_len = (int64_t)longest + p->max_new_tokens;
    if (c->max_position_embeddings > 0 && max_len > c->max_position_embeddings)
        return lt_error(LT_ERR_INVALID_ARGUMENT, "%s: prompt (%zu) + max_new_tokens (%d) exceeds the model's %d positions",
                        fn, longest, p->max_new_tokens, c->max_position_embeddings);
    memset(&g_timing, 0, sizeof g_timing);
    g_timing.n_prompt = (int64_t)total;
    g_timing.n_seq = (int64_t)n;
    double t0 = lt_time_s();

    /* stop ids: the caller's list as given (n_stop_ids = 0: none); else the tokenizer's (eos +
     * generation_config.json) and config.json's eos ids */
    int32_t stops[LT_GEN_MAX_STOPS];
    int n_stops = 0;
    if (p->stop_ids) {
        for (int i = 0; i < p->n_stop_ids; i++) add_stop(stops, &n_stops, p->stop_ids[i]);
    } else {
        if (p->tokenizer) {
            lt_special_tokens sp;
            memset(&sp, 0, sizeof sp);
            sp.struct_size = sizeof sp;
            if (lt_tokenizer_special_tokens(p->tokenizer, &sp) == LT_OK)
                for (int i = 0; i < sp.n_stop_ids && i < 8; i++) add_stop(stops, &n_stops, sp.stop_ids[i]);
        }
        for (int i = 0; i < c->n_eos && i < 8; i++) add_stop(stops, &n_stops, c->eos_token_ids[i]);
    }
    const bool need_logits = p->do_sample || p->repetition_penalty != 1.0f;
    size_t keep = 0;
    for (int i = 0; i < p->n_stop_strings; i++)
        if (p->stop_strings[i] && strlen(p->stop_strings[i]) > keep) keep = strlen(p->stop_strings[i]);

    lt_status st = LT_OK;
    gen_seq *seq = calloc(n, sizeof *seq);
    float *logits = malloc(sizeof(float) * (size_t)V * n);               /* [n, V] */
    int32_t *toks = malloc(sizeof(int32_t) * n), *argmax = malloc(sizeof(int32_t) * n);
    int64_t *pos = malloc(sizeof(int64_t) * n);
    void **kall = malloc(sizeof(void *) * n * (size_t)c->num_layers);   /* [n][L] for the decoder */
    void **vall = malloc(sizeof(void *) * n * (size_t)c->num_layers);
    char *piece = NULL;
    void *dec = NULL;
    bool try_fast = g_fast_decode != 0, have_argmax = false;
    if (!seq || !logits || !toks || !argmax || !pos || !kall || !vall) {
        st = lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory for generation");
        goto done;
    }
    if (p->tokenizer && (p->on_text || p->n_stop_strings) && !(piece = malloc(LT_GEN_PIECE))) {
        st = lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory");
        goto done;
    }
    for (size_t s = 0; s < n && st == LT_OK; s++) {
        gen_seq *q = &seq[s];
        q->prompt = prompts[s];
        q->n_prompt = n_prompt[s];
        q->p = *p;
        q->p.seed = p->seed + (uint64_t)s;
        q->tail.keep = keep;
        q->out = out_ids ? out_ids + s * cap : NULL;
        q->done = p->max_new_tokens == 0;
        if (!(q->hist = malloc(sizeof(int32_t) * (size_t)max_len))) {
            st = lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory for generation");
            break;
        }
        memcpy(q->hist, q->prompt, q->n_prompt * sizeof *q->hist);
        q->nh = q->n_prompt;
        if (piece) st = lt_token_stream_new(p->tokenizer, 1, &q->stream);
        /* the text streamed is what decoding prompt + new ids adds to the prompt's text */
        if (piece && st == LT_OK) st = lt_token_stream_prefill(q->stream, q->prompt, q->n_prompt);
        if (st == LT_OK) st = gen_alloc(&q->g, m, max_len);
        if (st != LT_OK) break;
        for (int l = 0; l < c->num_layers; l++) {
            kall[s * (size_t)c->num_layers + l] = q->g.kc[l];
            vall[s * (size_t)c->num_layers + l] = q->g.vc[l];
        }
        if (!q->done) st = forward(&q->g, q->prompt, (int64_t)q->n_prompt, 0, logits + s * (size_t)V);
    }
    g_timing.prefill_s = lt_time_s() - t0;
    double t_dec = lt_time_s();
    while (st == LT_OK) {
        size_t active = 0;
        for (size_t s = 0; s < n && st == LT_OK; s++) {
            gen_seq *q = &seq[s];
            if (q->done) continue;
            int32_t tok;
            if (have_argmax) {
                tok = argmax[s];
            } else {
                float *lg = logits + s * (size_t)V;
                lt_sample_process(lg, V, &q->p, q->hist, q->nh);
                tok = lt_sample_pick(lg, V, &q->p, q->produced);
            }
            st = gen_take(q, tok, stops, n_stops, cap, piece);
            active += !q->done;
        }
        if (st != LT_OK || active == 0) break;
        if (try_fast && !dec) {
            double ts = lt_time_s();
            st = m->be->ops.decoder_create_batch(m->be, m, (int32_t)n, kall, vall, max_len, &dec);
            g_timing.decoder_setup_s = lt_time_s() - ts;
            if (st == LT_ERR_UNSUPPORTED) {
                LT_LOGD("generation: no single-token decoder (%s); decoding through the layers", lt_last_error());
                lt_clear_error();
                st = LT_OK;
                dec = NULL;
            }
            try_fast = false;
            if (st != LT_OK) break;
        }
        if (dec) {
            /* a finished sequence repeats its last step (valid position, output ignored) */
            for (size_t s = 0; s < n; s++) {
                toks[s] = seq[s].next_tok;
                pos[s] = seq[s].pos;
            }
            st = m->be->ops.decoder_step_batch(m->be, dec, toks, pos, need_logits ? logits : NULL, argmax);
            have_argmax = !need_logits;
            g_timing.fast_decode = 1;
            continue;
        }
        for (size_t s = 0; s < n && st == LT_OK; s++)
            if (!seq[s].done) st = forward(&seq[s].g, &seq[s].next_tok, 1, seq[s].pos, logits + s * (size_t)V);
    }
    g_timing.decode_s = lt_time_s() - t_dec;
    for (size_t s = 0; s < n; s++) {
        gen_seq *q = &seq[s];
        g_timing.n_decoded += q->produced > 0 ? (int64_t)q->produced - 1 : 0;
        if (st == LT_OK && q->stream && p->on_text) { /* an incomplete UTF-8 tail left at the end */
            size_t plen = 0;
            if (lt_token_stream_flush(q->stream, piece, LT_GEN_PIECE, &plen) == LT_OK && plen &&
                p->on_text(piece, plen, -1, p->user_data))
                st = LT_STOPPED;
        }
        if (n_out) n_out[s] = q->produced;
    }
    for (size_t s = 0; s < n && st == LT_OK; s++)
        if (out_ids && seq[s].produced > cap) {
            if (n == 1) st = lt_error(LT_ERR_BUFFER_TOO_SMALL, "%s: %zu tokens generated, out_ids holds %zu", fn,
                                      seq[s].produced, cap);
            else st = lt_error(LT_ERR_BUFFER_TOO_SMALL, "%s: %zu tokens generated for prompt %zu, a row of out_ids "
                               "holds %zu", fn, seq[s].produced, s, cap);
        }
done:
    if (dec) m->be->ops.decoder_free(m->be, dec);
    for (size_t s = 0; seq && s < n; s++) {
        lt_token_stream_free(seq[s].stream);
        free(seq[s].tail.buf);
        free(seq[s].hist);
        if (seq[s].g.be) gen_free(&seq[s].g);
    }
    free(seq);
    free(piece);
    free(logits);
    free(toks);
    free(argmax);
    free(pos);
    free(kall);
    free(vall);
    return st;
}

LT_API lt_status lt_generate(lt_model *m, const int32_t *prompt, size_t n_prompt, const lt_generate_params *params,
                             int32_t *out_ids, size_t cap, size_t *n_out) {
    LT_CHECK_ARG(m && prompt && params && n_out, "lt_generate: model, prompt, params and n_out are required");
    *n_out = 0;
    return gen_run("lt_generate", m, 1, &prompt, &n_prompt, params, out_ids, cap, n_out);
}

LT_API lt_status lt_generate_batch(lt_model *m, const int32_t *const *prompts, const size_t *n_prompt, size_t n_seq,
                                   const lt_generate_params *params, int32_t *out_ids, size_t cap, size_t *n_out) {
    LT_CHECK_ARG(m && prompts && n_prompt && params && n_out,
                 "lt_generate_batch: model, prompts, n_prompt, params and n_out are required");
    LT_CHECK_ARG(n_seq > 0 && n_seq <= INT32_MAX, "lt_generate_batch: n_seq is %zu, it must be in [1, 2^31)", n_seq);
    for (size_t s = 0; s < n_seq; s++) n_out[s] = 0;
    return gen_run("lt_generate_batch", m, n_seq, prompts, n_prompt, params, out_ids, cap, n_out);
}

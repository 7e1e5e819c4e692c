/* generate.c - text generation with a KV cache: the prompt is prefilled in one pass through
 * the model's layers (lt_graph_forward_cached: the training kernels, GEMMs, flash attention),
 * then one token per step - through the backend's single-token decoder where it has one for
 * this model (the decoder_* ops; CUDA: cuda/decode.cu as a CUDA graph), else through the same
 * layers with KV-cache attention. LoRA is applied unmerged with dropout
 * off, so generation works between trainer steps. Greedy or sampled (sample.h); stop ids and
 * stop strings; text streamed UTF-8-safely through lt_token_stream. */
#include "infer/infer.h"
#include "infer/sample.h"
#include "model/model.h"
#include "model/graph.h"
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

LT_API lt_status lt_generate(lt_model *m, const int32_t *prompt, size_t n_prompt, const lt_generate_params *params,
                             int32_t *out_ids, size_t cap, size_t *n_out) {
    LT_CHECK_ARG(m && prompt && params && n_out, "lt_generate: model, prompt, params and n_out are required");
    LT_CHECK_ARG(params->struct_size >= offsetof(lt_generate_params, user_data) + sizeof(void *) &&
                 params->struct_size <= sizeof *params,
                 "lt_generate: params.struct_size is %u, not a size of lt_generate_params this library knows "
                 "(call lt_generate_params_init)", params->struct_size);
    /* a caller built against an older, shorter struct gets the defaults of the newer fields */
    lt_generate_params pv;
    lt_generate_params_init(&pv);
    memcpy(&pv, params, params->struct_size);
    pv.struct_size = sizeof pv;
    const lt_generate_params *p = &pv;
    *n_out = 0;
    LT_CHECK_ARG(n_prompt > 0, "lt_generate: the prompt is empty (it needs at least one token)");
    LT_CHECK_ARG(p->max_new_tokens >= 0, "lt_generate: max_new_tokens is %d, it must be >= 0", p->max_new_tokens);
    LT_CHECK_ARG(!p->on_text || p->tokenizer, "lt_generate: on_text needs params.tokenizer");
    LT_CHECK_ARG(!p->n_stop_strings || (p->tokenizer && p->stop_strings),
                 "lt_generate: stop_strings need params.tokenizer and a non-NULL array");
    LT_CHECK_ARG(!p->stop_ids || p->n_stop_ids >= 0, "lt_generate: n_stop_ids is %d", p->n_stop_ids);
    LT_CHECK_ARG(!p->do_sample || p->temperature > 0, "lt_generate: temperature must be > 0 when sampling (got %g)",
                 p->temperature);
    LT_CHECK_ARG(!p->do_sample || (p->top_p > 0 && p->top_p <= 1), "lt_generate: top_p must be in (0, 1] (got %g)",
                 p->top_p);
    LT_CHECK_ARG(!p->do_sample || (p->min_p >= 0 && p->min_p <= 1), "lt_generate: min_p must be in [0, 1] (got %g)",
                 p->min_p);
    LT_CHECK_ARG(p->top_k >= 0, "lt_generate: top_k must be >= 0 (got %d)", p->top_k);
    LT_CHECK_ARG(p->repetition_penalty > 0, "lt_generate: repetition_penalty must be > 0 (got %g)",
                 p->repetition_penalty);
    const lt_config *c = &m->cfg;
    int32_t V = c->vocab_size;
    for (size_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= V)
            return lt_error(LT_ERR_INVALID_ARGUMENT, "lt_generate: prompt token %zu is %d, outside the vocabulary [0, %d)",
                            i, prompt[i], V);
    int64_t max_len = (int64_t)n_prompt + p->max_new_tokens;
    if (c->max_position_embeddings > 0 && max_len > c->max_position_embeddings)
        return lt_error(LT_ERR_INVALID_ARGUMENT,
                        "lt_generate: prompt (%zu) + max_new_tokens (%d) exceeds the model's %d positions",
                        n_prompt, p->max_new_tokens, c->max_position_embeddings);
    memset(&g_timing, 0, sizeof g_timing);
    g_timing.n_prompt = (int64_t)n_prompt;
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

    gen_state g;
    LT_TRY(gen_alloc(&g, m, max_len));
    float *logits = malloc(sizeof(float) * V);
    int32_t *hist = malloc(sizeof(int32_t) * (size_t)max_len);
    lt_token_stream *stream = NULL;
    text_tail tail = {0};
    char *piece = NULL;
    lt_status st = LT_OK;
    void *dec = NULL;
    bool try_fast = g_fast_decode != 0;
    if (!logits || !hist) { st = lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory for generation"); goto done; }
    memcpy(hist, prompt, n_prompt * sizeof *hist);
    for (int i = 0; i < p->n_stop_strings; i++)
        if (p->stop_strings[i] && strlen(p->stop_strings[i]) > tail.keep) tail.keep = strlen(p->stop_strings[i]);
    if (p->tokenizer && (p->on_text || p->n_stop_strings)) {
        piece = malloc(LT_GEN_PIECE);
        if (!piece) { st = lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory"); goto done; }
        st = lt_token_stream_new(p->tokenizer, 1, &stream);
        if (st != LT_OK) goto done;
    }
    if (p->max_new_tokens > 0) st = forward(&g, prompt, (int64_t)n_prompt, 0, logits);
    size_t nh = n_prompt, produced = 0;
    bool have_argmax = false;
    int32_t argmax = 0;
    g_timing.prefill_s = lt_time_s() - t0;
    double t_dec = lt_time_s();
    while (st == LT_OK && produced < (size_t)p->max_new_tokens) {
        int32_t tok;
        if (have_argmax) {
            tok = argmax;
        } else {
            lt_sample_process(logits, V, p, hist, nh);
            tok = lt_sample_pick(logits, V, p, produced);
        }
        if (out_ids && produced < cap) out_ids[produced] = tok;
        produced++;
        hist[nh++] = tok;
        bool stop = false;
        for (int i = 0; i < n_stops; i++) stop |= tok == stops[i];
        if (stream) {
            size_t plen = 0;
            st = lt_token_stream_push(stream, tok, piece, LT_GEN_PIECE, &plen);
            if (st != LT_OK) break;
            if (plen) {
                if (p->on_text && p->on_text(piece, plen, tok, p->user_data)) { st = LT_STOPPED; break; }
                if (p->n_stop_strings) {
                    if ((st = tail_append(&tail, piece, plen)) != LT_OK) break;
                    for (int i = 0; i < p->n_stop_strings; i++)
                        if (p->stop_strings[i] && ends_with(tail.buf, tail.len, p->stop_strings[i])) stop = true;
                }
            }
        }
        if (stop || produced >= (size_t)p->max_new_tokens) break;
        int64_t pos = (int64_t)nh - 1;
        if (try_fast && !dec) {
            st = m->be->ops.decoder_create(m->be, m, g.kc, g.vc, max_len, &dec);
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
            st = m->be->ops.decoder_step(m->be, dec, tok, pos, need_logits ? logits : NULL, &argmax);
            have_argmax = !need_logits;
            g_timing.fast_decode = 1;
            continue;
        }
        st = forward(&g, &tok, 1, pos, logits);
    }
    g_timing.decode_s = lt_time_s() - t_dec;
    g_timing.n_decoded = produced > 0 ? (int64_t)produced - 1 : 0;
    if (st == LT_OK && stream && p->on_text) { /* an incomplete UTF-8 tail left at the end */
        size_t plen = 0;
        if (lt_token_stream_flush(stream, piece, LT_GEN_PIECE, &plen) == LT_OK && plen &&
            p->on_text(piece, plen, -1, p->user_data))
            st = LT_STOPPED;
    }
    *n_out = produced;
    if (st == LT_OK && out_ids && produced > cap)
        st = lt_error(LT_ERR_BUFFER_TOO_SMALL, "lt_generate: %zu tokens generated, out_ids holds %zu", produced, cap);
done:
    if (dec) m->be->ops.decoder_free(m->be, dec);
    lt_token_stream_free(stream);
    free(piece);
    free(tail.buf);
    free(logits);
    free(hist);
    gen_free(&g);
    return st;
}

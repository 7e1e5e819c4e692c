/* generate.c - text generation with a KV cache: the prompt is prefilled in one pass through
 * the backend ops (the training kernels: GEMMs, flash attention), then one token per step -
 * on CUDA through the single-token decode kernels of cuda/decode.cu (a CUDA graph), elsewhere
 * through the same backend ops with KV-cache attention. LoRA is applied unmerged with dropout
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
#ifdef LT_HAVE_CUDA
#include "../../cuda/decode.h"
#endif

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

/* Device buffers for a forward of up to `cap` tokens with a cache of `max_len` positions. */
typedef struct gen_state {
    lt_model *m;
    lt_backend *be;
    int64_t cap, max_len;
    void *x, *xn, *q, *k, *v, *att, *o, *g, *u, *xa; /* act */
    float *rstd, *lse, *logits;                    /* f32: [cap], [NH*cap], [V] */
    int32_t *ids, *pos, *cu;                       /* i32 [cap], [cap], [2] */
    void **kc, **vc;                               /* per layer act (max_len, NKV*HD) */
} gen_state;

static void gen_free(gen_state *g) {
    lt_backend *be = g->be;
    if (!be) return;
    void *bufs[] = {g->x, g->xn, g->q, g->k, g->v, g->att, g->o, g->g, g->u, g->xa, g->rstd, g->lse, g->logits,
                    g->ids, g->pos, g->cu};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) if (bufs[i]) be->ops.free(be, bufs[i]);
    for (int l = 0; l < g->m->cfg.num_layers; l++) {
        if (g->kc && g->kc[l]) be->ops.free(be, g->kc[l]);
        if (g->vc && g->vc[l]) be->ops.free(be, g->vc[l]);
    }
    free(g->kc);
    free(g->vc);
    g->be = NULL;
}

static lt_status gen_alloc(gen_state *g, lt_model *m, int64_t cap, int64_t max_len) {
    memset(g, 0, sizeof *g);
    g->m = m;
    g->be = m->be;
    g->cap = cap;
    g->max_len = max_len;
    lt_backend *be = m->be;
    const lt_config *c = &m->cfg;
    size_t ab = (size_t)be->act_bytes, C = c->hidden_size, HD = c->head_dim;
    size_t qd = (size_t)c->num_heads * HD, kd = (size_t)c->num_kv_heads * HD, I = c->intermediate_size;
    size_t R = m->has_lora ? (size_t)m->lora.r : 1;
    struct { void **p; size_t bytes; } want[] = {
        {&g->x, cap * C * ab}, {&g->xn, cap * C * ab}, {&g->q, cap * qd * ab}, {&g->k, cap * kd * ab},
        {&g->v, cap * kd * ab}, {&g->att, cap * qd * ab}, {&g->o, cap * C * ab}, {&g->g, cap * I * ab},
        {&g->u, cap * I * ab}, {&g->xa, cap * R * ab}, {(void **)&g->rstd, cap * 4},
        {(void **)&g->lse, cap * (size_t)c->num_heads * 4}, {(void **)&g->logits, (size_t)c->vocab_size * 4},
        {(void **)&g->ids, cap * 4}, {(void **)&g->pos, cap * 4}, {(void **)&g->cu, 2 * 4},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        lt_status st = be->ops.alloc(be, want[i].bytes, want[i].p);
        if (st != LT_OK) { gen_free(g); return lt_error_wrap(st, "generation buffers for a %lld-token prompt", (long long)cap); }
    }
    g->kc = calloc(c->num_layers, sizeof(void *));
    g->vc = calloc(c->num_layers, sizeof(void *));
    if (!g->kc || !g->vc) { gen_free(g); return lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory for the KV cache table"); }
    for (int l = 0; l < c->num_layers; l++) {
        lt_status st = be->ops.alloc(be, max_len * kd * ab, &g->kc[l]);
        if (st == LT_OK) st = be->ops.alloc(be, max_len * kd * ab, &g->vc[l]);
        if (st != LT_OK) {
            gen_free(g);
            return lt_error_wrap(st, "KV cache for %lld positions (lower max_new_tokens or the prompt length)",
                                 (long long)max_len);
        }
    }
    return LT_OK;
}

#define OFF(p, elems) ((void *)((char *)(p) + (size_t)(elems) * (size_t)be->act_bytes))

/* out(n,OC) = inp @ W^T + b, plus the LoRA branch when attached and enabled (no dropout). */
static lt_status proj(gen_state *g, int layer, int which, void *out, const void *inp, int64_t n) {
    lt_model *m = g->m;
    lt_backend *be = g->be;
    lt_layer *L = &m->layers[layer];
    const float *bias = which <= LT_PROJ_V ? L->bias[which] : NULL;
    LT_TRY(be->ops.linear_fwd(be, out, inp, L->proj[which], bias, n));
    lt_lora_tensor *t = &L->lora[which];
    if (m->has_lora && m->lora_enabled && t->A)
        LT_TRY(be->ops.lora_fwd(be, out, g->xa, inp, t->A, t->B, n, t->in, t->out, t->r, m->lora_scale, 0.0f, 0, 0));
    return LT_OK;
}

/* Runs ids[n] at positions [past, past+n) through the model, filling the caches, and leaves
 * the last token's logits in host_logits[V]. The prompt (past = 0) goes through the training
 * attention kernel (one causal sequence); later tokens attend over the cache. */
static lt_status forward(gen_state *g, const int32_t *host_ids, int64_t n, int64_t past, float *host_logits) {
    lt_model *m = g->m;
    lt_backend *be = g->be;
    const lt_config *c = &m->cfg;
    int64_t C = c->hidden_size, HD = c->head_dim, NH = c->num_heads, NKV = c->num_kv_heads, I = c->intermediate_size;
    int32_t *pos = malloc(sizeof *pos * n);
    if (!pos) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory");
    for (int64_t i = 0; i < n; i++) pos[i] = (int32_t)(past + i);
    lt_status st = be->ops.upload(be, g->ids, host_ids, n * 4);
    if (st == LT_OK) st = be->ops.upload(be, g->pos, pos, n * 4);
    free(pos);
    LT_TRY(st);
    const bool flash = past == 0 && n > 1;
    if (flash) {
        int32_t cu[2] = {0, (int32_t)n};
        LT_TRY(be->ops.upload(be, g->cu, cu, sizeof cu));
    }
    LT_TRY(be->ops.embedding(be, g->x, g->ids, m->embed, n, C));
    float eps = (float)c->rms_norm_eps, theta = (float)c->rope_theta;
    for (int l = 0; l < c->num_layers; l++) {
        lt_layer *L = &m->layers[l];
        LT_TRY(be->ops.rmsnorm_fwd(be, g->xn, g->rstd, g->x, L->ln1, n, C, eps));
        LT_TRY(proj(g, l, LT_PROJ_Q, g->q, g->xn, n));
        LT_TRY(proj(g, l, LT_PROJ_K, g->k, g->xn, n));
        LT_TRY(proj(g, l, LT_PROJ_V, g->v, g->xn, n));
        LT_TRY(be->ops.rope_fwd(be, g->q, g->pos, n, NH, HD, theta));
        LT_TRY(be->ops.rope_fwd(be, g->k, g->pos, n, NKV, HD, theta));
        LT_TRY(be->ops.copy(be, OFF(g->kc[l], past * NKV * HD), g->k, (size_t)(n * NKV * HD * be->act_bytes)));
        LT_TRY(be->ops.copy(be, OFF(g->vc[l], past * NKV * HD), g->v, (size_t)(n * NKV * HD * be->act_bytes)));
        if (flash)
            LT_TRY(be->ops.attention_fwd(be, g->att, g->lse, g->q, g->k, g->v, g->cu, 1, (int32_t)n, n, NH, NKV, HD));
        else
            LT_TRY(be->ops.attention_kv(be, g->att, g->q, g->kc[l], g->vc[l], past, n, NH, NKV, HD));
        LT_TRY(proj(g, l, LT_PROJ_O, g->o, g->att, n));
        LT_TRY(be->ops.add(be, g->x, g->x, g->o, n * C));
        LT_TRY(be->ops.rmsnorm_fwd(be, g->xn, g->rstd, g->x, L->ln2, n, C, eps));
        LT_TRY(proj(g, l, LT_PROJ_GATE, g->g, g->xn, n));
        LT_TRY(proj(g, l, LT_PROJ_UP, g->u, g->xn, n));
        LT_TRY(be->ops.swiglu_fwd(be, g->g, g->g, g->u, n * I));
        LT_TRY(proj(g, l, LT_PROJ_DOWN, g->o, g->g, n));
        LT_TRY(be->ops.add(be, g->x, g->x, g->o, n * C));
    }
    void *last = OFF(g->x, (n - 1) * C);
    LT_TRY(be->ops.rmsnorm_fwd(be, g->xn, g->rstd, last, m->final_norm, 1, C, eps));
    LT_TRY(be->ops.lm_head_logits(be, g->logits, g->xn, m->head, 1, C, c->vocab_size));
    return be->ops.download(be, host_logits, g->logits, (size_t)c->vocab_size * 4);
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
    (void)need_logits; /* used by the CUDA decode path */

    gen_state g;
    LT_TRY(gen_alloc(&g, m, (int64_t)n_prompt, max_len));
    float *logits = malloc(sizeof(float) * V);
    int32_t *hist = malloc(sizeof(int32_t) * (size_t)max_len);
    lt_token_stream *stream = NULL;
    text_tail tail = {0};
    char *piece = NULL;
    lt_status st = LT_OK;
#ifdef LT_HAVE_CUDA
    lt_cuda_decoder *dec = NULL;
    bool try_fast = g_fast_decode && m->be->device == LT_DEVICE_CUDA;
#endif
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
#ifdef LT_HAVE_CUDA
        if (try_fast && !dec) {
            st = lt_cuda_decoder_create(m, g.kc, g.vc, max_len, &dec);
            if (st == LT_ERR_UNSUPPORTED) {
                LT_LOGD("generation: CUDA decode kernels not used (%s); decoding through the backend ops",
                        lt_last_error());
                lt_clear_error();
                st = LT_OK;
            }
            try_fast = false;
            if (st != LT_OK) break;
        }
        if (dec) {
            st = lt_cuda_decoder_step(dec, tok, pos, need_logits ? logits : NULL, &argmax);
            have_argmax = !need_logits;
            g_timing.fast_decode = 1;
            continue;
        }
#endif
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
#ifdef LT_HAVE_CUDA
    lt_cuda_decoder_free(dec);
#endif
    lt_token_stream_free(stream);
    free(piece);
    free(tail.buf);
    free(logits);
    free(hist);
    gen_free(&g);
    return st;
}

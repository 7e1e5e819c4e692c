/* cpu_attention.c - causal grouped-query attention of the CPU reference over packed sequences
 * (block-diagonal: a token sees the earlier tokens of its own sequence), its backward pass, and
 * the KV-cache variant for generation. Scores scale 1/sqrt(HD); softmax in f32 with its sum in
 * f64; options: the score scale, soft-capping (Gemma 2) and a sliding window (Mistral, Gemma).
 * Forward and KV-cache attention share one row routine, so they agree bit for bit. The
 * backward recomputes probabilities from the saved log-sum-exp; dk/dv are gathered per key row
 * (not scattered from queries) so that no sum depends on the thread count. */
#include "backend/cpu/cpu_internal.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The score of q . k: times scale, then soft-capped (cap * tanh(s / cap), as transformers'
 * eager attention does in the activation dtype) when cap > 0. */
static inline float score_of(float dot, float scale, float cap) {
    float s = dot * scale;
    return cap > 0 ? tanhf(s / cap) * cap : s;
}

/* out(HD) = softmax(score(q . k_j)) @ v_j over nkeys keys at k0 + j*stride; returns the lse. */
static float attend_row(const float *q, const float *k0, const float *v0, int64_t stride, int64_t nkeys,
                        int64_t HD, float scale, float cap, float *scores, float *out) {
    float mx = -INFINITY;
    for (int64_t j = 0; j < nkeys; j++) {
        float s = score_of(lt_cpu_dot(q, k0 + j * stride, HD), scale, cap);
        scores[j] = s;
        mx = s > mx ? s : mx;
    }
    double sum = 0;
    for (int64_t j = 0; j < nkeys; j++) sum += exp((double)scores[j] - mx);
    const double lse = mx + log(sum);
    memset(out, 0, (size_t)HD * sizeof(float));
    for (int64_t j = 0; j < nkeys; j++) {
        float p = (float)exp((double)scores[j] - lse);
        lt_cpu_axpy(out, p, v0 + j * stride, HD);
    }
    return (float)lse;
}

/* seq_start(N): the first token of each token's sequence, from cu_seqlens */
static lt_status seq_starts(const int32_t *cu, int32_t nseq, int64_t N, int32_t **out, int64_t *maxlen) {
    *out = NULL;
    LT_CHECK_ARG(nseq >= 1 && cu[0] == 0 && cu[nseq] == N,
                 "attention: cu_seqlens must start at 0 and end at N=%lld (got %d .. %d over %d sequences)",
                 (long long)N, nseq >= 0 ? (int)cu[0] : -1, nseq >= 0 ? (int)cu[nseq] : -1, (int)nseq);
    int32_t *st = lt_malloc((size_t)(N > 0 ? N : 1) * sizeof(int32_t), "attention sequence map");
    if (!st) return LT_ERR_OUT_OF_MEMORY;
    int64_t ml = 0;
    for (int32_t s = 0; s < nseq; s++) {
        if (cu[s + 1] < cu[s] || cu[s + 1] > N) {
            free(st);
            return lt_error(LT_ERR_INVALID_ARGUMENT, "attention: cu_seqlens[%d]=%d must lie between "
                            "cu_seqlens[%d]=%d and N=%lld", (int)s + 1, (int)cu[s + 1], (int)s, (int)cu[s],
                            (long long)N);
        }
        for (int32_t i = cu[s]; i < cu[s + 1]; i++) st[i] = cu[s];
        if (cu[s + 1] - cu[s] > ml) ml = cu[s + 1] - cu[s];
    }
    *out = st;
    *maxlen = ml;
    return LT_OK;
}

/* Work is cut into one contiguous token range per thread, each with its own scratch row. */
typedef struct att_ctx {
    float *out, *lse, *dq, *dk, *dv, *D, *scratch;
    const float *q, *k, *v, *dout, *o;
    const int32_t *st; const int32_t *cu;
    int64_t N, NH, NKV, HD, maxlen, nchunks, past;
    float scale, cap;
    int64_t window;         /* a query at i sees keys j > i - window; 0: all earlier keys */
} att_ctx;

/* the first key a query at position i (sequence start s0) sees */
static inline int64_t first_key(const att_ctx *c, int64_t s0, int64_t i) {
    return c->window > 0 && i - c->window + 1 > s0 ? i - c->window + 1 : s0;
}

#define CHUNK_RANGE(c, t, lo, hi) int64_t lo = (c)->N * (t) / (c)->nchunks, hi = (c)->N * ((t) + 1) / (c)->nchunks

static void fwd_chunk(void *vctx, int64_t t) {
    att_ctx *c = vctx;
    CHUNK_RANGE(c, t, lo, hi);
    float *scr = c->scratch + t * c->maxlen;
    const int64_t group = c->NH / c->NKV, ks = c->NKV * c->HD;
    for (int64_t i = lo; i < hi; i++) {
        const int64_t s0 = first_key(c, c->st[i], i);
        for (int64_t h = 0; h < c->NH; h++) {
            const int64_t g = h / group;
            c->lse[h * c->N + i] = attend_row(c->q + (i * c->NH + h) * c->HD, c->k + s0 * ks + g * c->HD,
                                              c->v + s0 * ks + g * c->HD, ks, i - s0 + 1, c->HD, c->scale, c->cap,
                                              scr, c->out + (i * c->NH + h) * c->HD);
        }
    }
}

static lt_status check_heads(int64_t NH, int64_t NKV, int64_t HD) {
    LT_CHECK_ARG(NH > 0 && NKV > 0 && NH % NKV == 0 && HD > 0,
                 "attention: %lld query heads must be a positive multiple of %lld kv heads (head dim %lld)",
                 (long long)NH, (long long)NKV, (long long)HD);
    return LT_OK;
}

lt_status lt_cpu_attention_opt_fwd(lt_backend *be, void *out, float *lse, const void *q, const void *k,
                                   const void *v, const int32_t *cu_seqlens, int32_t nseq, int32_t max_seqlen,
                                   int64_t N, int64_t NH, int64_t NKV, int64_t HD, const lt_attn_opts *o) {
    LT_TRY(check_heads(NH, NKV, HD));
    if (N == 0) return LT_OK;
    att_ctx c;
    memset(&c, 0, sizeof c);
    int64_t ml;
    int32_t *st;
    LT_TRY(seq_starts(cu_seqlens, nseq, N, &st, &ml));
    c.nchunks = lt_cpu_threads_for(be, N, NH * ml * HD * 2);
    if (c.nchunks > N) c.nchunks = N;
    c.scratch = lt_malloc((size_t)(c.nchunks * ml) * sizeof(float), "attention scratch");
    if (!c.scratch) { free(st); return LT_ERR_OUT_OF_MEMORY; }
    c.out = out; c.lse = lse; c.q = q; c.k = k; c.v = v; c.st = st; c.cu = cu_seqlens;
    c.N = N; c.NH = NH; c.NKV = NKV; c.HD = HD; c.maxlen = ml;
    c.scale = o->scale; c.cap = o->softcap; c.window = o->window > 0 ? o->window : 0;
    lt_parallel_for(c.nchunks, (int)c.nchunks, fwd_chunk, &c);
    free(c.scratch);
    free(st);
    (void)max_seqlen;
    return LT_OK;
}

/* D(N,NH) = rowsum(dout * out), the softmax backward's correction term */
static void bwd_D_chunk(void *vctx, int64_t t) {
    att_ctx *c = vctx;
    CHUNK_RANGE(c, t, lo, hi);
    for (int64_t i = lo; i < hi; i++)
        for (int64_t h = 0; h < c->NH; h++)
            c->D[i * c->NH + h] = lt_cpu_dot(c->dout + (i * c->NH + h) * c->HD, c->o + (i * c->NH + h) * c->HD, c->HD);
}

/* ds_ij = p_ij * (dout_i . v_j - D_i) with p_ij = exp(score(q_i . k_j) - lse_i), times the
 * soft-cap's derivative 1 - tanh^2 (ds is then the gradient of the scaled, uncapped score) */
static inline void prob_and_ds(const att_ctx *c, const float *qi, const float *doi, const float *kj, const float *vj,
                               float lse, float D, float *p, float *ds) {
    float s = lt_cpu_dot(qi, kj, c->HD) * c->scale;
    float t = 0;
    if (c->cap > 0) {
        t = tanhf(s / c->cap);
        s = t * c->cap;
    }
    *p = expf(s - lse);
    *ds = *p * (lt_cpu_dot(doi, vj, c->HD) - D);
    if (c->cap > 0) *ds *= 1.0f - t * t;
}

static void bwd_dq_chunk(void *vctx, int64_t t) {
    att_ctx *c = vctx;
    CHUNK_RANGE(c, t, lo, hi);
    const int64_t group = c->NH / c->NKV, ks = c->NKV * c->HD;
    for (int64_t i = lo; i < hi; i++) {
        const int64_t s0 = c->st[i];
        for (int64_t h = 0; h < c->NH; h++) {
            const int64_t g = h / group, row = i * c->NH + h;
            float *dq = c->dq + row * c->HD;
            memset(dq, 0, (size_t)c->HD * sizeof(float));
            for (int64_t j = first_key(c, s0, i); j <= i; j++) {
                float p, ds;
                prob_and_ds(c, c->q + row * c->HD, c->dout + row * c->HD, c->k + j * ks + g * c->HD,
                            c->v + j * ks + g * c->HD, c->lse[h * c->N + i], c->D[row], &p, &ds);
                lt_cpu_axpy(dq, ds, c->k + j * ks + g * c->HD, c->HD);
            }
            for (int64_t d = 0; d < c->HD; d++) dq[d] *= c->scale;
        }
    }
}

static void bwd_dkv_chunk(void *vctx, int64_t t) {
    att_ctx *c = vctx;
    CHUNK_RANGE(c, t, lo, hi);
    const int64_t group = c->NH / c->NKV, ks = c->NKV * c->HD;
    for (int64_t j = lo; j < hi; j++) {
        /* the end of key j's sequence: its last query */
        int64_t s1 = j + 1;
        while (s1 < c->N && c->st[s1] == c->st[j]) s1++;
        if (c->window > 0 && j + c->window < s1) s1 = j + c->window; /* queries that see key j */
        for (int64_t g = 0; g < c->NKV; g++) {
            float *dk = c->dk + j * ks + g * c->HD, *dv = c->dv + j * ks + g * c->HD;
            const float *kj = c->k + j * ks + g * c->HD, *vj = c->v + j * ks + g * c->HD;
            memset(dk, 0, (size_t)c->HD * sizeof(float));
            memset(dv, 0, (size_t)c->HD * sizeof(float));
            for (int64_t h = g * group; h < (g + 1) * group; h++) {
                for (int64_t i = j; i < s1; i++) {
                    const int64_t row = i * c->NH + h;
                    float p, ds;
                    prob_and_ds(c, c->q + row * c->HD, c->dout + row * c->HD, kj, vj, c->lse[h * c->N + i],
                                c->D[row], &p, &ds);
                    lt_cpu_axpy(dv, p, c->dout + row * c->HD, c->HD);
                    lt_cpu_axpy(dk, ds, c->q + row * c->HD, c->HD);
                }
            }
            for (int64_t d = 0; d < c->HD; d++) dk[d] *= c->scale;
        }
    }
}

lt_status lt_cpu_attention_opt_bwd(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                                   const void *k, const void *v, const void *out, const float *lse,
                                   const int32_t *cu_seqlens, int32_t nseq, int32_t max_seqlen, int64_t N,
                                   int64_t NH, int64_t NKV, int64_t HD, const lt_attn_opts *o) {
    LT_TRY(check_heads(NH, NKV, HD));
    if (N == 0) return LT_OK;
    att_ctx c;
    memset(&c, 0, sizeof c);
    int64_t ml;
    int32_t *st;
    LT_TRY(seq_starts(cu_seqlens, nseq, N, &st, &ml));
    c.D = lt_malloc((size_t)(N * NH) * sizeof(float), "attention backward D");
    if (!c.D) { free(st); return LT_ERR_OUT_OF_MEMORY; }
    c.dq = dq; c.dk = dk; c.dv = dv; c.dout = dout; c.q = q; c.k = k; c.v = v; c.o = out; c.lse = (float *)lse;
    c.st = st; c.cu = cu_seqlens; c.N = N; c.NH = NH; c.NKV = NKV; c.HD = HD; c.maxlen = ml;
    c.scale = o->scale; c.cap = o->softcap; c.window = o->window > 0 ? o->window : 0;
    c.nchunks = lt_cpu_threads_for(be, N, NH * ml * HD * 4);
    if (c.nchunks > N) c.nchunks = N;
    lt_parallel_for(c.nchunks, (int)c.nchunks, bwd_D_chunk, &c);
    lt_parallel_for(c.nchunks, (int)c.nchunks, bwd_dq_chunk, &c);
    lt_parallel_for(c.nchunks, (int)c.nchunks, bwd_dkv_chunk, &c);
    free(c.D);
    free(st);
    (void)max_seqlen;
    return LT_OK;
}

/* ---- KV cache: queries at positions past .. past+n-1 of one sequence ---- */
static void kv_chunk(void *vctx, int64_t t) {
    att_ctx *c = vctx;
    CHUNK_RANGE(c, t, lo, hi);
    float *scr = c->scratch + t * c->maxlen;
    const int64_t group = c->NH / c->NKV, ks = c->NKV * c->HD;
    for (int64_t i = lo; i < hi; i++) {
        const int64_t s0 = first_key(c, 0, c->past + i);
        for (int64_t h = 0; h < c->NH; h++) {
            const int64_t g = h / group;
            attend_row(c->q + (i * c->NH + h) * c->HD, c->k + s0 * ks + g * c->HD, c->v + s0 * ks + g * c->HD, ks,
                       c->past + i + 1 - s0, c->HD, c->scale, c->cap, scr, c->out + (i * c->NH + h) * c->HD);
        }
    }
}

lt_status lt_cpu_attention_opt_kv(lt_backend *be, void *out, const void *q, const void *kcache, const void *vcache,
                                  int64_t past, int64_t n, int64_t NH, int64_t NKV, int64_t HD,
                                  const lt_attn_opts *o) {
    LT_TRY(check_heads(NH, NKV, HD));
    LT_CHECK_ARG(past >= 0 && n >= 0, "attention_kv: past %lld and n %lld must be non-negative", (long long)past,
                 (long long)n);
    if (n == 0) return LT_OK;
    att_ctx c;
    memset(&c, 0, sizeof c);
    c.N = n; c.NH = NH; c.NKV = NKV; c.HD = HD; c.past = past; c.maxlen = past + n;
    c.q = q; c.k = kcache; c.v = vcache; c.out = out;
    c.scale = o->scale; c.cap = o->softcap; c.window = o->window > 0 ? o->window : 0;
    c.nchunks = lt_cpu_threads_for(be, n, NH * (past + n) * HD * 2);
    if (c.nchunks > n) c.nchunks = n;
    c.scratch = lt_malloc((size_t)(c.nchunks * c.maxlen) * sizeof(float), "attention_kv scratch");
    if (!c.scratch) return LT_ERR_OUT_OF_MEMORY;
    lt_parallel_for(c.nchunks, (int)c.nchunks, kv_chunk, &c);
    free(c.scratch);
    return LT_OK;
}

/* the plain ops: scale 1/sqrt(HD), no cap, no window */
static lt_attn_opts plain_opts(int64_t HD) {
    lt_attn_opts o = {(float)(1.0 / sqrt((double)HD)), 0.0f, 0};
    return o;
}
lt_status lt_cpu_attention_fwd(lt_backend *be, void *out, float *lse, const void *q, const void *k, const void *v,
                               const int32_t *cu_seqlens, int32_t nseq, int32_t max_seqlen, int64_t N, int64_t NH,
                               int64_t NKV, int64_t HD) {
    const lt_attn_opts o = plain_opts(HD);
    return lt_cpu_attention_opt_fwd(be, out, lse, q, k, v, cu_seqlens, nseq, max_seqlen, N, NH, NKV, HD, &o);
}
lt_status lt_cpu_attention_bwd(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                               const void *k, const void *v, const void *out, const float *lse,
                               const int32_t *cu_seqlens, int32_t nseq, int32_t max_seqlen, int64_t N, int64_t NH,
                               int64_t NKV, int64_t HD) {
    const lt_attn_opts o = plain_opts(HD);
    return lt_cpu_attention_opt_bwd(be, dq, dk, dv, dout, q, k, v, out, lse, cu_seqlens, nseq, max_seqlen, N, NH, NKV,
                                    HD, &o);
}
lt_status lt_cpu_attention_kv(lt_backend *be, void *out, const void *q, const void *kcache, const void *vcache,
                              int64_t past, int64_t n, int64_t NH, int64_t NKV, int64_t HD) {
    const lt_attn_opts o = plain_opts(HD);
    return lt_cpu_attention_opt_kv(be, out, q, kcache, vcache, past, n, NH, NKV, HD, &o);
}

/* backend_common.c - what every backend shares: lt_backend_free, bitsandbytes' NF4 code table
 * and its 8-bit dynamic maps (create_dynamic_map), computed as torch does in float32, and the
 * portable defaults of the model-family, decoder and checkpoint-offload ops. */
#include "backend/backend.h"
#include "core/core.h"
#include <math.h>
#include <stdlib.h>

void lt_backend_free(lt_backend *be) {
    if (be && be->ops.destroy) be->ops.destroy(be);
}

/* bnb get_4bit_type("nf4") normalised by its max (1.0); index = the 4-bit code. */
const float lt_nf4_code[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
};

/* torch.linspace(0.1, 1, steps, dtype=float32) on the CPU (RangeFactoriesKernel.cpp, scalar
 * loop): a float step, start + step*i for the lower half and end - step*(steps-1-i) for the upper
 * half. torch's x86 kernels are built with FMA, and the compiler fuses those expressions into one
 * rounding; fmaf reproduces that. (Without the fusion 42 of the 256 signed entries come out one
 * ulp off a dump of bnb's table; with it all 256 match.) */
static void linspace_f32(int steps, float *out) {
    const float start = 0.1f, end = 1.0f;
    const float step = (end - start) / (float)(steps - 1);
    const int halfway = steps / 2;
    for (int i = 0; i < steps; i++)
        out[i] = i < halfway ? fmaf(step, (float)i, start) : fmaf(-step, (float)(steps - i - 1), end);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* create_dynamic_map(signed, max_exponent_bits=7, total_bits=8): for exponent i = 0..6 the
 * means of linspace(0.1, 1, k+1) (k = 2^i signed, 2^(i+1) unsigned) times 10^(i-6) (a Python
 * float turned into a float32 scalar by torch's mul), their negatives when signed, then 0 and 1,
 * sorted. No additional items: 2^(7-7) - 1 = 0. */
void lt_dynamic_map(int is_signed, float out[256]) {
    int n = 0;
    float b[130];
    for (int i = 0; i < 7; i++) {
        int k = is_signed ? (1 << i) : (1 << (i + 1));
        linspace_f32(k + 1, b);
        /* Python's 10 ** (i-6): pow(10.0, i-6), correctly rounded for these exponents */
        static const double pw[7] = {1e-06, 1e-05, 0.0001, 0.001, 0.01, 0.1, 1.0};
        const double p10 = pw[i];
        const float s = (float)p10;
        for (int j = 0; j < k; j++) {
            const float mean = (b[j] + b[j + 1]) / 2.0f;
            out[n++] = s * mean;
            if (is_signed) out[n++] = (-s) * mean;
        }
    }
    out[n++] = 0.0f;
    out[n++] = 1.0f;
    qsort(out, 256, sizeof(float), cmp_float);
}

/* ---- portable defaults of the model-family and decoder ops ---- */

static int attn_plain(const lt_attn_opts *o, int64_t HD, int64_t max_seqlen) {
    return o->scale == (float)(1.0 / sqrt((double)HD)) && o->softcap == 0.0f &&
           (o->window <= 0 || o->window >= max_seqlen);
}

static lt_status def_rope_freq_fwd(lt_backend *be, void *x, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                                   float theta, const float *inv_freq, float af) {
    if (inv_freq || af != 1.0f)
        return lt_error(LT_ERR_UNSUPPORTED, "the %s backend has no rotary embedding with scaled frequencies (rope "
                        "scaling)", be->ops.name);
    return be->ops.rope_fwd(be, x, pos, N, H, HD, theta);
}
static lt_status def_rope_freq_bwd(lt_backend *be, void *dx, const int32_t *pos, int64_t N, int64_t H, int64_t HD,
                                   float theta, const float *inv_freq, float af) {
    if (inv_freq || af != 1.0f)
        return lt_error(LT_ERR_UNSUPPORTED, "the %s backend has no rotary embedding with scaled frequencies (rope "
                        "scaling)", be->ops.name);
    return be->ops.rope_bwd(be, dx, pos, N, H, HD, theta);
}

static lt_status attn_unsupported(const lt_backend *be) {
    return lt_error(LT_ERR_UNSUPPORTED, "the %s backend has no attention with a score scale other than "
                    "1/sqrt(head_dim), soft-capping or a sliding window shorter than the sequence", be->ops.name);
}
static lt_status def_attention_opt_fwd(lt_backend *be, void *out, float *lse, const void *q, const void *k,
                                       const void *v, const int32_t *cu, int32_t nseq, int32_t max_seqlen, int64_t N,
                                       int64_t NH, int64_t NKV, int64_t HD, const lt_attn_opts *o) {
    if (!attn_plain(o, HD, max_seqlen)) return attn_unsupported(be);
    return be->ops.attention_fwd(be, out, lse, q, k, v, cu, nseq, max_seqlen, N, NH, NKV, HD);
}
static lt_status def_attention_opt_bwd(lt_backend *be, void *dq, void *dk, void *dv, const void *dout, const void *q,
                                       const void *k, const void *v, const void *out, const float *lse,
                                       const int32_t *cu, int32_t nseq, int32_t max_seqlen, int64_t N, int64_t NH,
                                       int64_t NKV, int64_t HD, const lt_attn_opts *o) {
    if (!attn_plain(o, HD, max_seqlen)) return attn_unsupported(be);
    return be->ops.attention_bwd(be, dq, dk, dv, dout, q, k, v, out, lse, cu, nseq, max_seqlen, N, NH, NKV, HD);
}
static lt_status def_attention_opt_kv(lt_backend *be, void *out, const void *q, const void *kc, const void *vc,
                                      int64_t past, int64_t n, int64_t NH, int64_t NKV, int64_t HD,
                                      const lt_attn_opts *o) {
    if (!attn_plain(o, HD, past + n)) return attn_unsupported(be);
    return be->ops.attention_kv(be, out, q, kc, vc, past, n, NH, NKV, HD);
}

static lt_status def_glu_fwd(lt_backend *be, int act, void *out, const void *gate, const void *up, int64_t n) {
    if (act != LT_BACT_SILU)
        return lt_error(LT_ERR_UNSUPPORTED, "the %s backend has no GELU-tanh gated MLP", be->ops.name);
    return be->ops.swiglu_fwd(be, out, gate, up, n);
}
static lt_status def_glu_bwd(lt_backend *be, int act, void *dgate, void *dup, const void *dout, const void *gate,
                             const void *up, int64_t n) {
    if (act != LT_BACT_SILU)
        return lt_error(LT_ERR_UNSUPPORTED, "the %s backend has no GELU-tanh gated MLP", be->ops.name);
    return be->ops.swiglu_bwd(be, dgate, dup, dout, gate, up, n);
}

static lt_status def_scale_act(lt_backend *be, void *x, int64_t n, float s) {
    (void)x; (void)n;
    if (s == 1.0f) return LT_OK;
    return lt_error(LT_ERR_UNSUPPORTED, "the %s backend cannot scale activations (embedding scale)", be->ops.name);
}

static lt_status def_lm_head_ce_cap(lt_backend *be, float *loss_sum, void *dh, const void *h, const lt_bweight *head,
                                    const int32_t *targets, int64_t N, int64_t C, int64_t V, float grad_scale,
                                    float softcap) {
    if (softcap > 0)
        return lt_error(LT_ERR_UNSUPPORTED, "the %s backend has no soft-capped LM head", be->ops.name);
    return be->ops.lm_head_ce(be, loss_sum, dh, h, head, targets, N, C, V, grad_scale);
}
static lt_status def_lm_head_logits_cap(lt_backend *be, float *logits, const void *h, const lt_bweight *head,
                                        int64_t N, int64_t C, int64_t V, float softcap) {
    if (softcap > 0)
        return lt_error(LT_ERR_UNSUPPORTED, "the %s backend has no soft-capped LM head", be->ops.name);
    return be->ops.lm_head_logits(be, logits, h, head, N, C, V);
}

static lt_status def_copy2d(lt_backend *be, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                            int64_t rows) {
    for (int64_t r = 0; r < rows; r++)
        LT_TRY(be->ops.copy(be, (char *)dst + (size_t)r * dpitch, (const char *)src + (size_t)r * spitch, width));
    return LT_OK;
}

/* the rows on the host: the CPU backend's own (its download is a copy) */
static lt_status def_argmax_rows(lt_backend *be, int32_t *out, const float *x, int64_t rows, int64_t cols) {
    if (rows <= 0) return LT_OK;
    float *h = lt_malloc((size_t)rows * (size_t)cols * sizeof(float), "argmax rows");
    int32_t *ids = lt_malloc((size_t)rows * sizeof(int32_t), "argmax ids");
    lt_status st = h && ids ? be->ops.download(be, h, x, (size_t)rows * (size_t)cols * sizeof(float))
                            : LT_ERR_OUT_OF_MEMORY;
    for (int64_t r = 0; r < rows && st == LT_OK; r++) {
        const float *v = h + (size_t)r * (size_t)cols;
        int64_t best = 0;
        for (int64_t c = 1; c < cols; c++)
            if (v[c] > v[best]) best = c;
        ids[r] = (int32_t)best;
    }
    if (st == LT_OK) st = be->ops.upload(be, out, ids, (size_t)rows * sizeof(int32_t));
    free(h);
    free(ids);
    return st;
}

static lt_status def_decoder_create(lt_backend *be, struct lt_model *m, void *const *kc, void *const *vc,
                                    int64_t max_len, void **out) {
    (void)m; (void)kc; (void)vc; (void)max_len;
    *out = NULL;
    return lt_error(LT_ERR_UNSUPPORTED, "the %s backend has no single-token decoder", be->ops.name);
}
static lt_status def_decoder_step(lt_backend *be, void *d, int32_t tok, int64_t pos, float *logits, int32_t *argmax) {
    (void)d; (void)tok; (void)pos; (void)logits; (void)argmax;
    return lt_error(LT_ERR_UNSUPPORTED, "the %s backend has no single-token decoder", be->ops.name);
}
static void def_decoder_free(lt_backend *be, void *d) { (void)be; (void)d; }
/* batched decoding from the single-token decoder: one sequence only (a backend without a
 * batched decoder decodes several through its layers) */
static lt_status def_decoder_create_batch(lt_backend *be, struct lt_model *m, int32_t nseq, void *const *kc,
                                          void *const *vc, int64_t max_len, void **out) {
    *out = NULL;
    if (nseq != 1) return lt_error(LT_ERR_UNSUPPORTED, "the %s backend has no batched decoder", be->ops.name);
    return be->ops.decoder_create(be, m, kc, vc, max_len, out);
}
static lt_status def_decoder_step_batch(lt_backend *be, void *d, const int32_t *tok, const int64_t *pos,
                                        float *logits, int32_t *argmax) {
    return be->ops.decoder_step(be, d, tok[0], pos[0], logits, argmax);
}

/* checkpoint offload without a host side: backend memory and ordinary copies in stream order */
static lt_status def_host_alloc(lt_backend *be, size_t bytes, void **out) { return be->ops.alloc(be, bytes, out); }
static void def_host_free(lt_backend *be, void *p) { be->ops.free(be, p); }
static lt_status def_offload_copy(lt_backend *be, void *dst, const void *src, size_t bytes, uint64_t *ticket) {
    *ticket = 0;
    return be->ops.copy(be, dst, src, bytes);
}
static lt_status def_offload_wait(lt_backend *be, uint64_t ticket) { (void)be; (void)ticket; return LT_OK; }

void lt_backend_fill_defaults(lt_backend *be) {
    lt_backend_ops *o = &be->ops;
#define D(slot, fn) if (!o->slot) o->slot = fn
    D(host_alloc, def_host_alloc);
    D(host_free, def_host_free);
    D(offload_copy, def_offload_copy);
    D(offload_wait, def_offload_wait);
    D(rope_freq_fwd, def_rope_freq_fwd);
    D(rope_freq_bwd, def_rope_freq_bwd);
    D(attention_opt_fwd, def_attention_opt_fwd);
    D(attention_opt_bwd, def_attention_opt_bwd);
    D(attention_opt_kv, def_attention_opt_kv);
    D(glu_fwd, def_glu_fwd);
    D(glu_bwd, def_glu_bwd);
    D(scale_act, def_scale_act);
    D(lm_head_ce_cap, def_lm_head_ce_cap);
    D(lm_head_logits_cap, def_lm_head_logits_cap);
    D(copy2d, def_copy2d);
    D(argmax_rows, def_argmax_rows);
    D(decoder_create, def_decoder_create);
    D(decoder_step, def_decoder_step);
    D(decoder_free, def_decoder_free);
    D(decoder_create_batch, def_decoder_create_batch);
    D(decoder_step_batch, def_decoder_step_batch);
#undef D
}

/* cpu_backend.c - the CPU fp32 reference backend: its constructor and op table, host memory
 * with in-use/peak accounting, and frozen weights kept as f32 (NF4 bases quantized with
 * bitsandbytes' algorithm and kept dequantized, so the CPU reproduces a quantized base). */
#include "backend/cpu/cpu_internal.h"
#include "backend/nf4.h"
#include <stdlib.h>
#include <string.h>

/* Every buffer carries its size in a 64-byte header (which also keeps the data 64-aligned). */
#define HDR 64

void lt_cpu_account(lt_backend *be, int64_t delta) {
    lt_cpu *c = be->impl;
    c->in_use = (uint64_t)((int64_t)c->in_use + delta);
    if (c->in_use > c->peak) c->peak = c->in_use;
}

static lt_status cpu_alloc(lt_backend *be, size_t bytes, void **out) {
    *out = NULL;
    size_t total = HDR + ((bytes + 63) & ~(size_t)63);
    if (total < bytes) return lt_error(LT_ERR_OUT_OF_MEMORY, "cpu backend: %zu bytes is too large", bytes);
    unsigned char *p = aligned_alloc(64, total);
    if (!p) return lt_error(LT_ERR_OUT_OF_MEMORY, "cpu backend: cannot allocate %zu bytes of host memory "
                            "(reduce the token budget or the model size)", bytes);
    memset(p, 0, total);
    memcpy(p, &bytes, sizeof bytes);
    lt_cpu_account(be, (int64_t)bytes);
    *out = p + HDR;
    return LT_OK;
}

static void cpu_free(lt_backend *be, void *ptr) {
    if (!ptr) return;
    unsigned char *p = (unsigned char *)ptr - HDR;
    size_t bytes;
    memcpy(&bytes, p, sizeof bytes);
    lt_cpu_account(be, -(int64_t)bytes);
    free(p);
}

static lt_status cpu_memcpy(lt_backend *be, void *dst, const void *src, size_t bytes) {
    (void)be;
    if (bytes && dst != src) memmove(dst, src, bytes);
    return LT_OK;
}
/* checkpoint offload: a separate host allocation, outside the backend's in-use/peak accounting
 * (as pinned host memory is outside the CUDA backend's), and copies that are done on return */
static lt_status cpu_host_alloc(lt_backend *be, size_t bytes, void **out) {
    (void)be;
    *out = calloc(1, bytes ? bytes : 1);
    if (!*out) return lt_error(LT_ERR_OUT_OF_MEMORY, "cpu backend: cannot allocate %zu bytes of host memory for the "
                               "offloaded checkpoints", bytes);
    return LT_OK;
}
static void cpu_host_free(lt_backend *be, void *p) { (void)be; free(p); }
static lt_status cpu_offload_copy(lt_backend *be, void *dst, const void *src, size_t bytes, uint64_t *ticket) {
    lt_cpu *c = be->impl;
    *ticket = ++c->offload_copies;
    return cpu_memcpy(be, dst, src, bytes);
}
static lt_status cpu_offload_wait(lt_backend *be, uint64_t ticket) {
    lt_cpu *c = be->impl;
    if (ticket > c->offload_copies)
        return lt_error(LT_ERR_STATE, "offload_wait: copy %llu was never made", (unsigned long long)ticket);
    return LT_OK;
}
static lt_status cpu_memset0(lt_backend *be, void *p, size_t bytes) {
    (void)be;
    if (bytes) memset(p, 0, bytes);
    return LT_OK;
}
static lt_status cpu_sync(lt_backend *be) { (void)be; return LT_OK; }
static lt_status cpu_to_act(lt_backend *be, void *act_dst, const float *src, int64_t n) {
    return cpu_memcpy(be, act_dst, src, (size_t)n * sizeof(float));
}
static lt_status cpu_from_act(lt_backend *be, float *dst, const void *act_src, int64_t n) {
    return cpu_memcpy(be, dst, act_src, (size_t)n * sizeof(float));
}

/* ---- frozen weights ---- */

/* The 16-bit rounding bnb applies when it dequantizes to quant_state.dtype. */
static float round_to(int32_t dtype, float x) {
    if (dtype == LT_DTYPE_BF16) return lt_bf16_to_f32(lt_f32_to_bf16(x));
    if (dtype == LT_DTYPE_F16) return lt_f16_to_f32(lt_f32_to_f16(x));
    return x;
}

#define NF4_BLOCK 64 /* bitsandbytes' default and Hugging Face's setting */

typedef struct nf4_job {
    float *w; int64_t n; int32_t dtype; int double_quant;
    uint8_t *packed; float *absmax; const float *code;
} nf4_job;

/* chunks of 64 K elements: whole NF4 blocks, so chunks are independent */
#define NF4_CHUNK (NF4_BLOCK * 1024)

static void nf4_quant_chunk(void *ctx, int64_t ci) {
    nf4_job *j = ctx;
    int64_t lo = ci * NF4_CHUNK, cnt = j->n - lo < NF4_CHUNK ? j->n - lo : NF4_CHUNK;
    lt_nf4_quantize_ref(j->w + lo, cnt, NF4_BLOCK, j->packed + lo / 2, j->absmax + lo / NF4_BLOCK);
}
static void nf4_dequant_chunk(void *ctx, int64_t ci) {
    nf4_job *j = ctx;
    int64_t lo = ci * NF4_CHUNK, cnt = j->n - lo < NF4_CHUNK ? j->n - lo : NF4_CHUNK;
    lt_nf4_dequantize_ref(j->packed + lo / 2, j->absmax + lo / NF4_BLOCK, cnt, NF4_BLOCK, j->code, j->w + lo);
    for (int64_t i = lo; i < lo + cnt; i++) j->w[i] = round_to(j->dtype, j->w[i]);
}

/* 16-bit -> f32 conversion of a weight, in NF4_CHUNK pieces over the threads */
typedef struct cvt_job { float *w; const uint16_t *h; int64_t n; int32_t dtype; } cvt_job;
static void cvt_chunk(void *ctx, int64_t ci) {
    cvt_job *j = ctx;
    int64_t lo = ci * NF4_CHUNK, hi = j->n - lo < NF4_CHUNK ? j->n : lo + NF4_CHUNK;
    if (j->dtype == LT_DTYPE_BF16)
        for (int64_t i = lo; i < hi; i++) j->w[i] = lt_bf16_to_f32(j->h[i]);
    else
        for (int64_t i = lo; i < hi; i++) j->w[i] = lt_f16_to_f32(j->h[i]);
}

static lt_status cpu_weight_create(lt_backend *be, const lt_weight_desc *d, lt_bweight **out) {
    *out = NULL;
    LT_CHECK_ARG(d && d->rows > 0 && d->cols > 0, "cpu weight_create: shape [%lld, %lld] must be positive",
                 d ? (long long)d->rows : 0LL, d ? (long long)d->cols : 0LL);
    LT_CHECK_ARG(d->dtype == LT_DTYPE_F32 || d->dtype == LT_DTYPE_F16 || d->dtype == LT_DTYPE_BF16,
                 "cpu weight_create: dtype %d is not F32, F16 or BF16", (int)d->dtype);
    LT_CHECK_ARG(d->quant == LT_QUANT_NF4 || d->quant == LT_QUANT_NONE,
                 "cpu weight_create: quant %d is not NF4 or NONE", (int)d->quant);
    const int64_t n = d->rows * d->cols;
    if (!d->host) {
        LT_CHECK_ARG(d->nf4_packed && (d->absmax_f32 || (d->absmax_u8 && d->nested_absmax)),
                     "cpu weight_create: [%lld, %lld] has neither host data nor NF4 packed data with its absmax",
                     (long long)d->rows, (long long)d->cols);
    }
    lt_bweight *w = lt_calloc(1, sizeof *w, "cpu weight");
    if (!w) return LT_ERR_OUT_OF_MEMORY;
    w->rows = d->rows; w->cols = d->cols;
    w->w = lt_malloc((size_t)n * sizeof(float), "cpu weight data");
    if (!w->w) { free(w); return LT_ERR_OUT_OF_MEMORY; }

    const int64_t nblocks = (n + NF4_BLOCK - 1) / NF4_BLOCK;
    nf4_job job = {w->w, n, d->dtype, d->double_quant, NULL, NULL, NULL};
    const int64_t nchunks = (n + NF4_CHUNK - 1) / NF4_CHUNK;
    const int nt = LT_CPU_THREADS(be);
    lt_status st = LT_OK;

    if (d->host) {
        if (d->dtype == LT_DTYPE_F32) memcpy(w->w, d->host, (size_t)n * sizeof(float));
        else {
            cvt_job cj = {w->w, d->host, n, d->dtype};
            lt_parallel_for(nchunks, nt, cvt_chunk, &cj);
        }
        if (d->quant == LT_QUANT_NF4) {
            job.packed = lt_malloc((size_t)(n + 1) / 2, "nf4 packed");
            job.absmax = lt_malloc((size_t)nblocks * sizeof(float), "nf4 absmax");
            if (!job.packed || !job.absmax) { st = LT_ERR_OUT_OF_MEMORY; goto done; }
            lt_parallel_for(nchunks, nt, nf4_quant_chunk, &job);
            if (d->double_quant) {
                int64_t nnested = (nblocks + 255) / 256;
                uint8_t *q8 = lt_malloc((size_t)nblocks, "nf4 absmax codes");
                float *nested = lt_malloc((size_t)nnested * sizeof(float), "nf4 nested absmax");
                if (!q8 || !nested) { free(q8); free(nested); st = LT_ERR_OUT_OF_MEMORY; goto done; }
                float offset;
                lt_nf4_double_quant_ref(job.absmax, nblocks, q8, nested, &offset);
                lt_nf4_double_dequant_ref(q8, nested, NULL, offset, nblocks, job.absmax);
                free(q8); free(nested);
            }
            lt_parallel_for(nchunks, nt, nf4_dequant_chunk, &job);
        }
    } else {
        /* a pre-quantized bitsandbytes tensor: dequantize what the file holds */
        job.packed = (uint8_t *)d->nf4_packed;
        job.code = d->quant_map;
        job.absmax = lt_malloc((size_t)nblocks * sizeof(float), "nf4 absmax");
        if (!job.absmax) { st = LT_ERR_OUT_OF_MEMORY; goto done; }
        if (d->absmax_f32) memcpy(job.absmax, d->absmax_f32, (size_t)nblocks * sizeof(float));
        else lt_nf4_double_dequant_ref(d->absmax_u8, d->nested_absmax, d->nested_code, d->nested_offset, nblocks,
                                       job.absmax);
        lt_parallel_for(nchunks, nt, nf4_dequant_chunk, &job);
        job.packed = NULL; /* not ours */
    }
done:
    free(job.packed);
    free(job.absmax);
    if (st < 0) { free(w->w); free(w); return st; }
    lt_cpu_account(be, n * (int64_t)sizeof(float));
    *out = w;
    return LT_OK;
}

static void cpu_weight_free(lt_backend *be, lt_bweight *w) {
    if (!w) return;
    lt_cpu_account(be, -(w->rows * w->cols * (int64_t)sizeof(float)));
    free(w->w);
    free(w);
}

static lt_status cpu_weight_read(lt_backend *be, const lt_bweight *w, float *host_out) {
    (void)be;
    memcpy(host_out, w->w, (size_t)(w->rows * w->cols) * sizeof(float));
    return LT_OK;
}

static size_t cpu_weight_bytes(const lt_bweight *w) {
    return w ? (size_t)(w->rows * w->cols) * sizeof(float) : 0;
}

/* the gradient norm of many tensors: the per-tensor f64 sums, in order */
/* the reference does one buffer at a time */
static lt_status cpu_memset0_many(lt_backend *be, int count, void *const *p, const size_t *bytes) {
    for (int i = 0; i < count; i++) LT_TRY(be->ops.memset0(be, p[i], bytes[i]));
    return LT_OK;
}
static lt_status cpu_adamw_many(lt_backend *be, int count, float *const *p, const float *const *g, float *const *m,
                                float *const *v, const int64_t *n, float lr, float beta1, float beta2, float eps,
                                float wd, int64_t t) {
    for (int i = 0; i < count; i++) LT_TRY(be->ops.adamw(be, p[i], g[i], m[i], v[i], n[i], lr, beta1, beta2, eps, wd, t));
    return LT_OK;
}

static lt_status cpu_scale_many(lt_backend *be, int count, float *const *x, const int64_t *n, float s) {
    for (int i = 0; i < count; i++) LT_TRY(be->ops.scale(be, x[i], n[i], s));
    return LT_OK;
}
static lt_status cpu_nonfinite_many(lt_backend *be, int count, const float *const *g, const int64_t *n,
                                    int *host_flag) {
    *host_flag = 0;
    for (int i = 0; i < count && !*host_flag; i++) LT_TRY(be->ops.nonfinite(be, g[i], n[i], host_flag));
    return LT_OK;
}
static lt_status cpu_adamw8bit_many(lt_backend *be, int count, float *const *p, const float *const *g,
                                    uint8_t *const *s1, uint8_t *const *s2, float *const *a1, float *const *a2,
                                    const int64_t *n, float lr, float beta1, float beta2, float eps, float wd,
                                    int64_t t) {
    for (int i = 0; i < count; i++)
        LT_TRY(be->ops.adamw8bit(be, p[i], g[i], s1[i], s2[i], a1[i], a2[i], n[i], lr, beta1, beta2, eps, wd, t));
    return LT_OK;
}

static lt_status cpu_sumsq_many(lt_backend *be, int count, const float *const *g, const int64_t *n,
                                double *host_sumsq) {
    for (int i = 0; i < count; i++) LT_TRY(lt_cpu_sumsq(be, g[i], n[i], host_sumsq));
    return LT_OK;
}

static void cpu_memory(lt_backend *be, uint64_t *in_use, uint64_t *peak) {
    lt_cpu *c = be->impl;
    if (in_use) *in_use = c->in_use;
    if (peak) *peak = c->peak;
}

static void cpu_destroy(lt_backend *be) {
    if (!be) return;
    free(be->impl);
    free(be);
}

lt_status lt_backend_cpu_create(int n_threads, lt_backend **out) {
    LT_CHECK_ARG(out, "lt_backend_cpu_create: out is NULL");
    *out = NULL;
    lt_backend *be = lt_calloc(1, sizeof *be, "cpu backend");
    if (!be) return LT_ERR_OUT_OF_MEMORY;
    be->impl = lt_calloc(1, sizeof(lt_cpu), "cpu backend state");
    if (!be->impl) { free(be); return LT_ERR_OUT_OF_MEMORY; }
    be->device = LT_DEVICE_CPU;
    be->act_dtype = LT_DTYPE_F32;
    be->act_bytes = 4;
    be->n_threads = lt_threads(n_threads);
    be->deterministic = 1; /* every reduction has a fixed order, whatever the thread count */
    lt_backend_ops *o = &be->ops;
    o->name = "cpu";
    o->destroy = cpu_destroy;
    o->alloc = cpu_alloc;
    o->free = cpu_free;
    o->upload = cpu_memcpy;
    o->download = cpu_memcpy;
    o->memset0 = cpu_memset0;
    o->copy = cpu_memcpy;
    o->sync = cpu_sync;
    o->to_act = cpu_to_act;
    o->from_act = cpu_from_act;
    o->weight_create = cpu_weight_create;
    o->weight_free = cpu_weight_free;
    o->weight_read = cpu_weight_read;
    o->weight_bytes = cpu_weight_bytes;
    o->embedding = lt_cpu_embedding;
    o->rmsnorm_fwd = lt_cpu_rmsnorm_fwd;
    o->rmsnorm_bwd = lt_cpu_rmsnorm_bwd;
    o->linear_fwd = lt_cpu_linear_fwd;
    o->linear_bwd_input = lt_cpu_linear_bwd_input;
    o->lora_fwd = lt_cpu_lora_fwd;
    o->lora_bwd = lt_cpu_lora_bwd;
    o->lora_bwd_swiglu = lt_cpu_lora_bwd_swiglu;
    o->rope_fwd = lt_cpu_rope_fwd;
    o->rope_bwd = lt_cpu_rope_bwd;
    o->attention_fwd = lt_cpu_attention_fwd;
    o->attention_bwd = lt_cpu_attention_bwd;
    o->swiglu_fwd = lt_cpu_swiglu_fwd;
    o->swiglu_bwd = lt_cpu_swiglu_bwd;
    o->add = lt_cpu_add;
    o->lm_head_ce = lt_cpu_lm_head_ce;
    o->lm_head_logits = lt_cpu_lm_head_logits;
    o->attention_kv = lt_cpu_attention_kv;
    o->sumsq = lt_cpu_sumsq;
    o->scale = lt_cpu_scale;
    o->adamw = lt_cpu_adamw;
    o->adamw8bit = lt_cpu_adamw8bit;
    o->nonfinite = lt_cpu_nonfinite;
    o->memory = cpu_memory;
    o->sumsq_many = cpu_sumsq_many;
    o->linear_lora_group_fwd = lt_cpu_linear_lora_group_fwd;
    o->memset0_many = cpu_memset0_many;
    o->adamw_many = cpu_adamw_many;
    o->scale_many = cpu_scale_many;
    o->nonfinite_many = cpu_nonfinite_many;
    o->adamw8bit_many = cpu_adamw8bit_many;
    o->lora_xa_multi = lt_cpu_lora_xa_multi;
    o->lora_bwd_multi = lt_cpu_lora_bwd_multi;
    o->add_lora = lt_cpu_add_lora;
    o->linear_fwd_add = lt_cpu_linear_fwd_add;
    o->lora_up_add = lt_cpu_lora_up_add;
    o->rope_freq_fwd = lt_cpu_rope_freq_fwd;
    o->rope_freq_bwd = lt_cpu_rope_freq_bwd;
    o->attention_opt_fwd = lt_cpu_attention_opt_fwd;
    o->attention_opt_bwd = lt_cpu_attention_opt_bwd;
    o->attention_opt_kv = lt_cpu_attention_opt_kv;
    o->glu_fwd = lt_cpu_glu_fwd;
    o->glu_bwd = lt_cpu_glu_bwd;
    o->scale_act = lt_cpu_scale_act;
    o->lm_head_ce_cap = lt_cpu_lm_head_ce_cap;
    o->lm_head_logits_cap = lt_cpu_lm_head_logits_cap;
    o->host_alloc = cpu_host_alloc;
    o->host_free = cpu_host_free;
    o->offload_copy = cpu_offload_copy;
    o->offload_wait = cpu_offload_wait;
    lt_backend_fill_defaults(be); /* copy2d (row copies) and the decoder (none) */
    *out = be;
    return LT_OK;
}

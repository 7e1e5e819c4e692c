/* decode.cu - the fast decode step of generation on CUDA (see decode.h): single-token GEMV
 * kernels over NF4 or 16-bit weights with fused epilogues (bias, LoRA B, rotary + KV append,
 * the gated activation, residual add, logits), the LoRA A products with the RMSNorm in front,
 * split-K attention over the KV cache, the embedding row, the argmax; then the launch sequence
 * of one step, captured once into a CUDA graph. Activations of the step stay f32 (only the KV
 * cache is 16-bit), so the step is at least as exact as the prefill through the training kernels.
 *
 * The step executes the model's layer description (lt_config): SiLU or GELU-tanh gating, the
 * rotary embedding of each layer (default of its base, or the inverse frequencies and attention
 * factor that lt_rope_inv_freq gives, uploaded once), attention score scale, soft-cap and sliding
 * window per layer, embedding scale, final logit soft-cap - uniform flags read by a second
 * instance of the GEMV and attention kernels (template X), so that a layer without them (Qwen2,
 * Llama with default rope) runs the same code as before they existed - and, with a kernel of
 * their own each, the per-head q/k norms (k_dec_qk_rope) and the post-norms
 * of sandwich layers (k_dec_post_norm). Fused qkv_proj / gate_up_proj are read as row ranges
 * (dec_ext.row0) of the one weight. Norm weights arrive as the forward applies them ((1 + w)
 * included by the loader). */
#include "cuda_common.h"
#include "decode.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
extern "C" {
#include "model/model.h"
}

#define DEC_THREADS 128
#define DEC_WARPS (DEC_THREADS / 32)
#define DEC_CHUNK 16          /* weight elements per thread per load (8 bytes NF4, 32 bytes 16-bit) */
#define DEC_MAX_HD 256        /* head dims per lane: 8 */
#define DEC_MAX_SPLIT 128
#define DEC_SPLIT_KEYS 16     /* keys per attention block at the longest context */
#define DEC_SLICE 256         /* columns per block of the LoRA A products */
#define DEC_AROWS 8           /* A rows per block of the LoRA A products */
#define DEC_WARP_MAX_COLS 2048 /* GEMV rows up to this long get one warp per pair, longer a block */
#define DEC_FIX_STRIDE 32     /* int64 slots between the fixed-point LoRA accumulators (own L2 lines) */
#define DEC_FIX_MAX_R 64      /* ranks up to this have down_proj's A product folded into gate/up */
#define DEC_FIX_ONE 4294967296.0f /* fixed-point scale 2^32: integer sums are order-independent */
#define DEC_NB 8              /* sequences per GEMV launch of a batched step (each weight read once for them) */
#define DEC_MAX_SEQ 1024      /* sequences of one batched decoder */

enum { WK_NF4 = 0, WK_16 = 1 };
/* MODE_GATEUP_A: MODE_GATEUP plus down_proj's LoRA A product (a separate instance, so that the
 * plain one keeps its registers) */
enum { MODE_QKV = 0, MODE_GATEUP = 1, MODE_RESID = 2, MODE_LOGITS = 3, MODE_GATEUP_A = 4 };

/* one weight matrix as the GEMV sees it, with its epilogue inputs */
struct dec_mat {
    const uint8_t *packed;       /* NF4 [rows*cols/2] */
    const float *absmax_f32;     /* NF4 without double quant */
    const uint8_t *absmax_u8;    /* with double quant */
    const float *nested_absmax;
    const float *nested_code;    /* [256] */
    float offset;
    const float *quant_map;      /* [16] */
    const void *data16;          /* 16-bit [rows, cols] */
    int64_t rows, cols;
    const float *bias;           /* [rows] or NULL */
    const float *lora_B;         /* f32 [rows, R] or NULL */
    const float *xa;             /* f32 [R]: x @ A^T of this step */
    const long long *xfix;       /* instead of xa: fixed-point [R][DEC_FIX_STRIDE] (down_proj) */
    int R;
    float scale;
};
struct dec_mats {
    dec_mat m[3];
};
/* the rotary embedding of one layer: the default of base theta (tab NULL), or inverse
 * frequencies f32 [2][HD/2] (tab[0..]: positions p with p + 1 <= sw, tab[HD/2..]: the others -
 * longrope's short and long factors; the same table twice for the other kinds) times the
 * attention factor af on cos and sin */
struct dec_rope {
    const float *tab;
    float theta, af;
    int sw;
};
/* where a GEMV's epilogue writes; sequence b's rows of out, xa and afix are at b * obs,
 * b * xabs, b * fixbs */
struct dec_out {
    float *out;                  /* QKV: q f32 [B][NH*HD]; GATEUP: h f32 [B][I]; RESID: x f32 [B][C] (+=);
                                    LOGITS: f32 [B][V] */
    int64_t obs, xabs, fixbs;
    void *const *kct, *const *vct; /* QKV: device tables of the caches, [b * L + layer] -> (max_len, NKV*HD) act */
    int layer, L;
    int b0, nb;                  /* the GEMV's sequences: b0 .. b0 + nb - 1 (nb <= its NB) */
    int64_t kvd;                 /* NKV*HD */
    int HD, NH, NKV;
    float theta;
    /* GATEUP: down_proj's LoRA A product folded into the SwiGLU epilogue, accumulated in fixed
     * point (deterministic whatever order the blocks finish in) */
    const float *adown;          /* f32 [aR, npairs] or NULL */
    long long *afix;             /* [B][aR][DEC_FIX_STRIDE] (b at b * fixbs), zero on entry (the argmax
                                    re-zeroes it) */
    int aR;
};
/* the layer description's part of a GEMV, read by the X instances only (a parameter of its own:
 * the X = 0 instances compile as if it did not exist) */
struct dec_ext {
    int64_t row0[3];             /* the first row of matrix t in its weight (fused projections: the part's
                                    rows; dec_mat's rows, LoRA B and bias are the part's already); else 0 */
    dec_rope rope;               /* QKV: this layer's rotary embedding */
    int qkraw;                   /* QKV: q and k stored unrotated to out ([B][(NH+NKV)*HD], q heads then k heads)
                                    for k_dec_qk_rope (per-head q/k norms come first); v still to its cache */
    int act;                     /* GATEUP: LT_ACT_* of the gate */
    int store;                   /* RESID: out = y instead of out += y (sandwich layers: the post-norm adds) */
    float cap;                   /* LOGITS: soft-cap (cap * tanh(y / cap)); 0: none */
};
/* token and position of the step, on the device; the argmax kernel advances them */
struct dec_io {
    int32_t tok;
    int32_t pos;
};
/* the LoRA A products that share one input: xa[t][r] = A_t[r,:] . norm(x) (sequence b's at
 * xa[t] + b * xabs) */
struct dec_lora_a {
    const float *A[3];           /* f32 [R, C] */
    float *xa[3];                /* f32 [R] */
    int n, R;
    int64_t xabs;
};

__device__ __forceinline__ float dec_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Programmatic dependent launch: a kernel of the step may be launched while the one before it
 * runs; it waits here (for that kernel's completion and memory, hence for every kernel before
 * it) before it reads or writes anything another kernel of the step touches - only constant
 * data (weights) may be read before - and then lets the kernel after it launch, whose blocks
 * take the free SM slots, prefetch their weights and wait here in turn. No-ops for kernels
 * launched without the attribute. */
__device__ __forceinline__ void dec_grid_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

template <typename T> __device__ __forceinline__ float2 dec_f2(uint32_t w);
template <> __device__ __forceinline__ float2 dec_f2<__nv_bfloat16>(uint32_t w) {
    return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162 *>(&w));
}
template <> __device__ __forceinline__ float2 dec_f2<__half>(uint32_t w) {
    return __half22float2(*reinterpret_cast<__half2 *>(&w));
}

/* s[b] += the sum over 16 elements of row `row` starting at column 16*j times x of sequence b
 * (x + b * C), b < nb: each weight is loaded and dequantized once for all the sequences */
template <int WK, typename T, int NB>
__device__ __forceinline__ void dec_chunk(const dec_mat &m, int64_t row, int64_t j, const float *x, int64_t C, int nb,
                                          const float *qm, float (&s)[NB]) {
    const int64_t e0 = row * m.cols + j * DEC_CHUNK;
    float w[DEC_CHUNK];
    float am = 1.0f;
    if constexpr (WK == WK_NF4) {
        const uint2 wv = __ldg(reinterpret_cast<const uint2 *>(m.packed + e0 / 2));
        const int64_t blk = e0 / 64;
        am = m.absmax_f32 ? __ldg(m.absmax_f32 + blk)
                          : __fadd_rn(__fmul_rn(__ldg(m.nested_code + __ldg(m.absmax_u8 + blk)),
                                                __ldg(m.nested_absmax + blk / LT_NF4_NESTED_BLOCK)),
                                      m.offset);
        const uint32_t words[2] = {wv.x, wv.y};
#pragma unroll
        for (int k = 0; k < 2; k++)
#pragma unroll
            for (int i = 0; i < 4; i++) { /* byte i holds element 2i in its high nibble, 2i+1 in its low nibble */
                w[8 * k + 2 * i] = qm[(words[k] >> (8 * i + 4)) & 15];
                w[8 * k + 2 * i + 1] = qm[(words[k] >> (8 * i)) & 15];
            }
    } else {
        const uint4 *p = reinterpret_cast<const uint4 *>(reinterpret_cast<const T *>(m.data16) + e0);
        const uint4 u[2] = {__ldg(p), __ldg(p + 1)};
#pragma unroll
        for (int k = 0; k < 2; k++) {
            const uint32_t ws[4] = {u[k].x, u[k].y, u[k].z, u[k].w};
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float2 f = dec_f2<T>(ws[i]);
                w[8 * k + 2 * i] = f.x;
                w[8 * k + 2 * i + 1] = f.y;
            }
        }
    }
#pragma unroll
    for (int b = 0; b < NB; b++) {
        if (b >= nb) break;
        /* x comes through L1: a thread meets the same chunks of x for every row it takes */
        const float4 *xg = reinterpret_cast<const float4 *>(x + b * C + j * DEC_CHUNK);
        const float4 xv[4] = {__ldg(xg), __ldg(xg + 1), __ldg(xg + 2), __ldg(xg + 3)};
        float t = 0.0f;
#pragma unroll
        for (int k = 0; k < 2; k++) {
            const float4 a = xv[2 * k], c = xv[2 * k + 1];
            const float *wk = w + 8 * k;
            t += wk[0] * a.x + wk[1] * a.y + wk[2] * a.z + wk[3] * a.w;
            t += wk[4] * c.x + wk[5] * c.y + wk[6] * c.z + wk[7] * c.w;
        }
        s[b] += WK == WK_NF4 ? t * am : t;
    }
}

/* The epilogue inputs of one row that do not depend on the GEMV (LoRA B[row, lane], each
 * sequence's xa[lane] for the first 32 ranks, the bias), loaded before the row's main loop so
 * that their latency hides under it instead of adding a dependent memory round trip after it. */
template <int NB> struct dec_pre {
    float b, bias;
    float xa[NB];
};
/* xa[r] of sequence bb. FIX: the matrix may read its xa in fixed point (only down_proj, a
 * MODE_RESID GEMV: the other instances skip the test and keep their registers) */
template <bool FIX> __device__ __forceinline__ float dec_xa(const dec_mat &m, const dec_out &o, int bb, int r) {
    return FIX && m.xfix ? (float)((double)m.xfix[(int64_t)bb * o.fixbs + (int64_t)r * DEC_FIX_STRIDE] *
                                   (1.0 / 4294967296.0))
                         : m.xa[(int64_t)bb * o.xabs + r];
}
template <bool FIX, int NB>
__device__ __forceinline__ dec_pre<NB> dec_lora_pre(const dec_mat &m, const dec_out &o, int64_t row, int lane) {
    dec_pre<NB> p;
    p.b = 0.0f;
    p.bias = 0.0f;
#pragma unroll
    for (int b = 0; b < NB; b++) p.xa[b] = 0.0f;
    if (row < 0) return p;
    if (m.lora_B && lane < m.R) {
        p.b = __ldg(m.lora_B + row * m.R + lane);
#pragma unroll
        for (int b = 0; b < NB; b++)
            if (b < o.nb) p.xa[b] = dec_xa<FIX>(m, o, o.b0 + b, lane);
    }
    if (m.bias && lane == 0) p.bias = __ldg(m.bias + row);
    return p;
}
/* bias + scale * (B[row,:] . xa) of one row for the tile's sequence b, summed by a whole warp
 * (lane 0 has it) */
template <bool FIX, int NB>
__device__ __forceinline__ float dec_lora_bias(const dec_mat &m, const dec_out &o, int64_t row, int lane,
                                               const dec_pre<NB> &p, int b) {
    float s = p.b * p.xa[b];
    if (m.lora_B)
        for (int r = lane + 32; r < m.R; r += 32) s += m.lora_B[row * m.R + r] * dec_xa<FIX>(m, o, o.b0 + b, r);
    s = dec_warp_sum(s) * m.scale;
    return s + p.bias;
}

/* The rows of pair p. The pairs:
 *   QKV:    the two rotary halves (i, i + HD/2) of one q, k or v head;
 *   GATEUP: gate row p and up row p;
 *   RESID/LOGITS: rows p and p + npairs of one matrix (rb = -1 past the end). */
template <int MODE>
__device__ __forceinline__ void dec_pair(const dec_mats &M, const dec_out &o, int64_t p, int64_t npairs, int &ma,
                                         int &mb, int64_t &ra, int64_t &rb) {
    ma = mb = 0;
    if constexpr (MODE == MODE_QKV) {
        const int64_t half = o.HD / 2, nq = (int64_t)o.NH * half, nk = (int64_t)o.NKV * half;
        int64_t pp = p;
        if (pp < nq) ma = 0;
        else if (pp < nq + nk) { ma = 1; pp -= nq; }
        else { ma = 2; pp -= nq + nk; }
        mb = ma;
        ra = (pp / half) * o.HD + pp % half;
        rb = ra + half;
    } else if constexpr (MODE == MODE_GATEUP || MODE == MODE_GATEUP_A) {
        mb = 1; ra = rb = p;
    } else {
        ra = p;
        rb = p + npairs < M.m[0].rows ? p + npairs : -1;
    }
}

/* sin and cos of rotary pair i (< HD/2) at position pos, times the attention factor: the angle
 * as the backend's k_rope (default) or k_rope_freq (a table) computes it */
__device__ __forceinline__ void dec_rope_sc(const dec_rope &r, int pos, int64_t i, int HD, float &sn, float &cs) {
    if (r.tab) {
        sincosf((float)pos * r.tab[(pos + 1 > r.sw ? HD / 2 : 0) + i], &sn, &cs);
        sn *= r.af;
        cs *= r.af;
    } else {
        const float inv = 1.0f / powf(r.theta, (float)(2 * i) / (float)HD);
        sincosf((float)pos * inv, &sn, &cs);
    }
}

#define DEC_GELU_BETA 0.7978845608028654f /* sqrt(2/pi), as family.cu's k_geglu_fwd */
#define DEC_GELU_KAPPA 0.044715f
/* the gate's activation: SiLU, or (X: by the uniform flag act) GELU with torch's tanh approximation */
template <bool X> __device__ __forceinline__ float dec_act(int act, float g) {
    if (X && act == LT_ACT_GELU_TANH)
        return 0.5f * g * (1.0f + tanhf(DEC_GELU_BETA * (g + DEC_GELU_KAPPA * g * g * g)));
    return g / (1.0f + expf(-g));
}

/* what a pair's two finished rows become (one thread). X = 0: the Qwen2 / Llama layer (default
 * rope of base theta, SiLU, residual add, no cap) without reading e; X = 1: as e says */
template <typename T, int MODE, bool X>
__device__ __forceinline__ void dec_epilogue(const dec_out &o, const dec_ext &e, const dec_io *io, int bb, int ma, int64_t p,
                                             int64_t ra, int64_t rb, float y0, float y1) {
    float *out = o.out + (int64_t)bb * o.obs;
    if constexpr (MODE == MODE_QKV) {
        const int pos = io[bb].pos;
        if (X && ma < 2 && e.qkraw) { /* q and k go through their norms first (k_dec_qk_rope) */
            float *r = out + (ma == 1 ? (int64_t)o.NH * o.HD : 0);
            r[ra] = y0;
            r[rb] = y1;
            return;
        }
        if (ma < 2) { /* rotary (half-split) */
            float sn, cs;
            if (X) {
                dec_rope_sc(e.rope, pos, ra % o.HD, o.HD, sn, cs);
            } else { /* the angle as the backend's k_rope computes it */
                const float inv = 1.0f / powf(o.theta, (float)(2 * (ra % o.HD)) / (float)o.HD);
                sincosf((float)pos * inv, &sn, &cs);
            }
            const float lo = y0 * cs - y1 * sn, hi = y1 * cs + y0 * sn;
            y0 = lo; y1 = hi;
        }
        if (ma == 0) { out[ra] = y0; out[rb] = y1; }
        else {
            const int64_t slot = (int64_t)bb * o.L + o.layer;
            T *cache = reinterpret_cast<T *>(ma == 1 ? o.kct[slot] : o.vct[slot]) + (int64_t)pos * o.kvd;
            cache[ra] = lt_fromf<T>(y0);
            cache[rb] = lt_fromf<T>(y1);
        }
    } else if constexpr (MODE == MODE_GATEUP || MODE == MODE_GATEUP_A) {
        out[p] = dec_act<X>(e.act, y0) * y1;
    } else if constexpr (MODE == MODE_RESID) {
        if (X && e.store) {
            out[ra] = y0;
            if (rb >= 0) out[rb] = y1;
        } else {
            out[ra] += y0;
            if (rb >= 0) out[rb] += y1;
        }
    } else {
        if (X && e.cap > 0) { /* as family.cu's k_cap_logits */
            y0 = tanhf(y0 / e.cap) * e.cap;
            y1 = tanhf(y1 / e.cap) * e.cap;
        }
        out[ra] = y0;
        if (rb >= 0) out[rb] = y1;
    }
}

/* an L2 prefetch of the 128-byte line that starts in chunk j of a row, if one does (before
 * dec_grid_wait: weights are constant) */
template <int WK, typename T>
__device__ __forceinline__ void dec_prefetch(const dec_mat &m, int64_t row, int64_t j) {
    const int64_t e0 = row * m.cols + j * DEC_CHUNK;
    const char *p = WK == WK_NF4 ? (const char *)(m.packed + e0 / 2)
                                 : (const char *)(reinterpret_cast<const T *>(m.data16) + e0);
    const unsigned bytes = WK == WK_NF4 ? DEC_CHUNK / 2 : DEC_CHUNK * 2;
    if (((uintptr_t)p & 127u) < bytes) asm volatile("prefetch.global.L2 [%0];" ::"l"(p - ((uintptr_t)p & 127u)));
}

/* Pairs of rows (dec_pair), grid-stride, x (f32 [B][C]) read through L1, for the sequences
 * o.b0 .. o.b0 + o.nb - 1 at once (NB: the most a launch takes; each weight is read once for
 * all of them, and each sequence's sums are formed in the same order whatever the batch).
 * WARP = 1: one warp per pair (short rows: no block barrier, every lane a few independent
 * loads); WARP = 0: the whole block per pair (long rows, few of them). */
template <int WK, typename T, int MODE, int WARP, int NB, bool X>
__global__ void __launch_bounds__(DEC_THREADS) k_dec_gemv(dec_mats M, const float *x, int64_t C, int64_t npairs,
                                                           dec_out o, const dec_io *io, dec_ext e) {
    __shared__ float qm[3][16];
    __shared__ float red[2][NB][DEC_WARPS];
    const int nmat = MODE == MODE_QKV ? 3 : (MODE == MODE_GATEUP || MODE == MODE_GATEUP_A) ? 2 : 1;
    if constexpr (WK == WK_NF4) {
        for (int t = 0; t < nmat; t++)
            if (threadIdx.x < 16) qm[t][threadIdx.x] = M.m[t].quant_map[threadIdx.x];
        __syncthreads();
    }
    const int nb = o.nb;
    const float *xt = x + (int64_t)o.b0 * C;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t nchunk = C / DEC_CHUNK;
    const int64_t first = WARP ? (int64_t)blockIdx.x * DEC_WARPS + warp : (int64_t)blockIdx.x;
    const int64_t stride = WARP ? (int64_t)gridDim.x * DEC_WARPS : (int64_t)gridDim.x;
    const int64_t j0 = WARP ? lane : threadIdx.x, jstep = WARP ? 32 : DEC_THREADS;
    if (first < npairs) { /* the first pair's weights on their way to L2 while the kernel before drains */
        int ma, mb;
        int64_t ra, rb;
        dec_pair<MODE>(M, o, first, npairs, ma, mb, ra, rb);
        for (int64_t j = j0; j < nchunk; j += jstep) {
            dec_prefetch<WK, T>(M.m[ma], X ? ra + e.row0[ma] : ra, j);
            if (rb >= 0) dec_prefetch<WK, T>(M.m[mb], X ? rb + e.row0[mb] : rb, j);
        }
    }
    dec_grid_wait();
    /* GATEUP_A: this warp's share of down_proj's xa[lane], xa[lane+32], per sequence */
    float dacc0[NB], dacc1[NB];
#pragma unroll
    for (int b = 0; b < NB; b++) dacc0[b] = dacc1[b] = 0.0f;
    for (int64_t p = first; p < npairs; p += stride) {
        int ma, mb;
        int64_t ra, rb;
        dec_pair<MODE>(M, o, p, npairs, ma, mb, ra, rb);
        const dec_mat &A = M.m[ma], &B = M.m[mb];
        dec_pre<NB> pa, pb;
        if (WARP || warp == 0) {
            pa = dec_lora_pre<MODE == MODE_RESID, NB>(A, o, ra, lane);
            pb = dec_lora_pre<MODE == MODE_RESID, NB>(B, o, rb, lane);
        }
        float da0 = 0.0f, da1 = 0.0f;
        if constexpr (MODE == MODE_GATEUP_A) {
            if (WARP || warp == 0) {
                if (lane < o.aR) da0 = __ldg(o.adown + (int64_t)lane * npairs + p);
                if (lane + 32 < o.aR) da1 = __ldg(o.adown + (int64_t)(lane + 32) * npairs + p);
            }
        }
        float s0[NB], s1[NB];
#pragma unroll
        for (int b = 0; b < NB; b++) s0[b] = s1[b] = 0.0f;
        /* unrolled so that a lane's weight loads of the pair are in flight together (one memory
         * round trip instead of one per chunk); the sums keep their order */
#pragma unroll(NB == 1 ? 4 : 1)
        for (int64_t j = j0; j < nchunk; j += jstep) {
            dec_chunk<WK, T, NB>(A, X ? ra + e.row0[ma] : ra, j, xt, C, nb, qm[ma], s0);
            if (rb >= 0) dec_chunk<WK, T, NB>(B, X ? rb + e.row0[mb] : rb, j, xt, C, nb, qm[mb], s1);
        }
#pragma unroll
        for (int b = 0; b < NB; b++) {
            s0[b] = dec_warp_sum(s0[b]);
            s1[b] = dec_warp_sum(s1[b]);
        }
        if (!WARP) {
            if (lane == 0)
#pragma unroll
                for (int b = 0; b < NB; b++) { red[0][b][warp] = s0[b]; red[1][b][warp] = s1[b]; }
            __syncthreads();
#pragma unroll
            for (int b = 0; b < NB; b++) {
                s0[b] = dec_warp_sum(lane < DEC_WARPS ? red[0][b][lane] : 0.0f);
                s1[b] = dec_warp_sum(lane < DEC_WARPS ? red[1][b][lane] : 0.0f);
            }
        }
        if (WARP || warp == 0) {
#pragma unroll
            for (int b = 0; b < NB; b++) {
                if (b >= nb) break;
                const float y0 = s0[b] + dec_lora_bias<MODE == MODE_RESID, NB>(A, o, ra, lane, pa, b);
                const float y1 = rb >= 0 ? s1[b] + dec_lora_bias<MODE == MODE_RESID, NB>(B, o, rb, lane, pb, b) : 0.0f;
                if (lane == 0) dec_epilogue<T, MODE, X>(o, e, io, o.b0 + b, ma, p, ra, rb, y0, y1);
                if constexpr (MODE == MODE_GATEUP_A) {
                    const float hv = __shfl_sync(0xffffffffu, dec_act<X>(e.act, y0) * y1, 0);
                    dacc0[b] += hv * da0;
                    dacc1[b] += hv * da1;
                }
            }
        }
        if (!WARP) __syncthreads();
    }
    if constexpr (MODE == MODE_GATEUP_A) {
        /* per sequence: the block's warps summed in a fixed order, then one fixed-point add per rank */
        __shared__ float ared[NB][DEC_WARPS][DEC_FIX_MAX_R];
#pragma unroll
        for (int b = 0; b < NB; b++) {
            ared[b][warp][lane] = dacc0[b];
            ared[b][warp][lane + 32] = dacc1[b];
        }
        __syncthreads();
        for (int b = 0; b < nb; b++)
            for (int r = threadIdx.x; r < o.aR; r += DEC_THREADS) {
                float v = 0.0f;
                for (int w = 0; w < (WARP ? DEC_WARPS : 1); w++) v += ared[b][w][r];
                const long long f = __float2ll_rn(v * DEC_FIX_ONE);
                atomicAdd(reinterpret_cast<unsigned long long *>(o.afix + (int64_t)(o.b0 + b) * o.fixbs +
                                                                 (int64_t)r * DEC_FIX_STRIDE),
                          (unsigned long long)f);
            }
    }
}

/* The LoRA A products of one input, with the RMSNorm in front: block (s, g) normalizes the
 * column slice s of x (the norm's sum of squares over all of x, which every block reads:
 * a few KB from L2), writes it to xn_out (blocks g = 0), and computes slice-partial dots of
 * the A rows of group g (2 rows per warp) into apart[s][row]; the last block to finish sums
 * the slices in a fixed order into xa (deterministic, no extra launch) and re-arms the counter.
 * blockIdx.z: the sequence (x, xn_out at b * C; xa at b * la.xabs; apart at b * apbs; counter[b]). */
__global__ void __launch_bounds__(DEC_THREADS) k_dec_norm_a(const float *x, const float *w, float eps, float *xn_out,
                                                             dec_lora_a la, int64_t C, float *apart, int64_t apbs,
                                                             unsigned *counter) {
    __shared__ float xs[DEC_SLICE];
    __shared__ float red[DEC_WARPS];
    __shared__ int last;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t bz = blockIdx.z;
    dec_grid_wait();
    x += bz * C;
    if (xn_out) xn_out += bz * C;
    apart += bz * apbs;
    counter += bz;
    const int64_t c0 = (int64_t)blockIdx.x * DEC_SLICE;
    float r = 1.0f;
    if (w) {
        float ss = 0.0f;
        for (int64_t i = threadIdx.x * 4; i < C; i += DEC_THREADS * 4) {
            const float4 v = *reinterpret_cast<const float4 *>(x + i);
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
        ss = dec_warp_sum(ss);
        if (lane == 0) red[warp] = ss;
        __syncthreads();
        float tot = 0.0f;
        for (int k = 0; k < DEC_WARPS; k++) tot += red[k];
        r = 1.0f / sqrtf(tot / (float)C + eps);
    }
    for (int i = threadIdx.x; i < DEC_SLICE; i += DEC_THREADS) {
        const int64_t c = c0 + i;
        float v = 0.0f;
        if (c < C) {
            v = x[c];
            if (w) v = w[c] * (v * r);
            if (xn_out && blockIdx.y == 0) xn_out[c] = v;
        }
        xs[i] = v;
    }
    const int nrows = la.n * la.R;
    if (nrows == 0) return;
    __syncthreads();
#pragma unroll
    for (int k = 0; k < DEC_AROWS / DEC_WARPS; k++) {
        const int row = blockIdx.y * DEC_AROWS + warp * (DEC_AROWS / DEC_WARPS) + k;
        if (row < nrows) {
            const float *a = la.A[row / la.R] + (int64_t)(row % la.R) * C + c0;
            float s = 0.0f;
#pragma unroll
            for (int i = lane; i < DEC_SLICE; i += 32)
                if (c0 + i < C) s += a[i] * xs[i];
            s = dec_warp_sum(s);
            if (lane == 0) apart[(int64_t)blockIdx.x * nrows + row] = s;
        }
    }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(counter, 1u) == gridDim.x * gridDim.y - 1;
    __syncthreads();
    if (!last) return;
    for (int row = threadIdx.x; row < nrows; row += DEC_THREADS) {
        float s = 0.0f;
        for (unsigned sl = 0; sl < gridDim.x; sl++) s += __ldcg(apart + (int64_t)sl * nrows + row);
        la.xa[row / la.R][bz * la.xabs + row % la.R] = s;
    }
    if (threadIdx.x == 0) *counter = 0u;
}

/* split-K attention of one query head over keys [k_lo, pos] (k_lo = 0, or pos - window + 1 in a
 * sliding-window layer): block (h, s) takes an even share of the keys (ceil(keys / DEC_SPLIT_KEYS)
 * shares, at most nsplit), its warps an interleaved part of it (online softmax each), merged in
 * shared memory into part[h][s] = {max, sum, acc[HD]}. Scores are q.k * scale, soft-capped to
 * cap * tanh(score / cap) when cap > 0 (window and cap read by the X instance only). blockIdx.z:
 * the sequence b (q at b * NH*HD, its caches at kct/vct[b * nlayers + layer], part at
 * b * NH*nsplit*(HD+2)). */
template <typename T, bool X>
__global__ void __launch_bounds__(DEC_THREADS) k_dec_attn(const float *q, void *const *kct, void *const *vct,
                                                           int layer, int nlayers, const dec_io *io, int NH, int NKV,
                                                           int HD, float scale, float cap, int window, float *part) {
    __shared__ float wm[DEC_WARPS], wl[DEC_WARPS];
    __shared__ float wacc[DEC_WARPS][DEC_MAX_HD];
    const int h = blockIdx.x, s = blockIdx.y, nsplit = gridDim.y;
    const int64_t bz = blockIdx.z;
    dec_grid_wait();
    const T *kc = reinterpret_cast<const T *>(kct[bz * nlayers + layer]);
    const T *vc = reinterpret_cast<const T *>(vct[bz * nlayers + layer]);
    q += bz * NH * HD;
    part += bz * NH * nsplit * (HD + 2);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    /* the keys split by their count alone (not by the cache size): a sequence's sums are the
     * same in any batch and any max_len; splits past ns stay empty */
    const int64_t kend = (int64_t)io[bz].pos + 1;
    const int64_t klo = X && window > 0 && kend > window ? kend - window : 0;
    const int64_t L = kend - klo, need = (L + DEC_SPLIT_KEYS - 1) / DEC_SPLIT_KEYS;
    const int64_t ns = need < nsplit ? need : nsplit, chunk = (L + ns - 1) / ns;
    const int64_t k0 = klo + (int64_t)s * chunk, k1 = k0 + chunk < kend ? k0 + chunk : kend;
    const int64_t kvd = (int64_t)NKV * HD, kvh = h / (NH / NKV);
    float qv[DEC_MAX_HD / 32], acc[DEC_MAX_HD / 32];
#pragma unroll
    for (int i = 0; i < DEC_MAX_HD / 32; i++) {
        const int d = lane + 32 * i;
        qv[i] = d < HD ? q[h * HD + d] * scale : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int64_t j = k0 + warp; j < k1; j += DEC_WARPS) {
        const T *kr = kc + j * kvd + kvh * HD, *vr = vc + j * kvd + kvh * HD;
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < DEC_MAX_HD / 32; i++) {
            const int d = lane + 32 * i;
            if (d < HD) dot += qv[i] * lt_tof<T>(kr[d]);
        }
        dot = dec_warp_sum(dot);
        if (X && cap > 0) dot = tanhf(dot / cap) * cap;
        const float mn = fmaxf(m, dot), corr = expf(m - mn), pj = expf(dot - mn);
        l = l * corr + pj;
#pragma unroll
        for (int i = 0; i < DEC_MAX_HD / 32; i++) {
            const int d = lane + 32 * i;
            acc[i] = acc[i] * corr + (d < HD ? pj * lt_tof<T>(vr[d]) : 0.0f);
        }
        m = mn;
    }
    if (lane == 0) { wm[warp] = m; wl[warp] = l; }
#pragma unroll
    for (int i = 0; i < DEC_MAX_HD / 32; i++) {
        const int d = lane + 32 * i;
        if (d < HD) wacc[warp][d] = acc[i];
    }
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < DEC_WARPS; w++) M = fmaxf(M, wm[w]);
    float *dst = part + ((int64_t)h * nsplit + s) * (HD + 2);
    for (int d = threadIdx.x; d < HD; d += DEC_THREADS) {
        float num = 0.0f;
        if (M != -INFINITY)
            for (int w = 0; w < DEC_WARPS; w++) num += wm[w] == -INFINITY ? 0.0f : expf(wm[w] - M) * wacc[w][d];
        dst[2 + d] = num;
    }
    if (threadIdx.x == 0) {
        float den = 0.0f;
        if (M != -INFINITY)
            for (int w = 0; w < DEC_WARPS; w++) den += wm[w] == -INFINITY ? 0.0f : expf(wm[w] - M) * wl[w];
        dst[0] = M;
        dst[1] = den;
    }
}

/* out[h*HD + d] = merge of the splits of head h; then, when o_proj has LoRA (la.n == 1), the
 * head's share of its A product (apart[h][r] = A[r, h*HD:(h+1)*HD] . out_h), and the last
 * block to finish sums the heads in a fixed order into la.xa[0] (deterministic) and re-arms
 * the counter: o_proj's A product needs no launch of its own. blockIdx.y: the sequence b (part,
 * out at b * NH*nsplit*(HD+2), b * NH*HD; xa at b * la.xabs; apart at b * apbs; counter[b]). */
__global__ void __launch_bounds__(128) k_dec_attn_merge(const float *part, int nsplit, int HD, float *out,
                                                        dec_lora_a la, float *apart, int64_t apbs,
                                                        unsigned *counter) {
    __shared__ float oh[DEC_MAX_HD];
    __shared__ int last;
    const int h = blockIdx.x;
    const int64_t bz = blockIdx.y, NH = gridDim.x;
    dec_grid_wait();
    part += bz * NH * nsplit * (HD + 2);
    out += bz * NH * HD;
    apart += bz * apbs;
    counter += bz;
    const float *p = part + (int64_t)h * nsplit * (HD + 2);
    float M = -INFINITY;
    for (int s = 0; s < nsplit; s++) M = fmaxf(M, p[s * (HD + 2)]);
    float den = 0.0f;
    for (int s = 0; s < nsplit; s++) {
        const float ms = p[s * (HD + 2)];
        if (ms != -INFINITY) den += expf(ms - M) * p[s * (HD + 2) + 1];
    }
    for (int d = threadIdx.x; d < HD; d += blockDim.x) {
        float num = 0.0f;
        for (int s = 0; s < nsplit; s++) {
            const float ms = p[s * (HD + 2)];
            if (ms != -INFINITY) num += expf(ms - M) * p[s * (HD + 2) + 2 + d];
        }
        out[h * HD + d] = num / den;
        oh[d] = num / den;
    }
    if (la.n == 0) return;
    __syncthreads();
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nw = blockDim.x / 32;
    const int64_t C = (int64_t)gridDim.x * HD;
    for (int r = warp; r < la.R; r += nw) {
        const float *a = la.A[0] + (int64_t)r * C + (int64_t)h * HD;
        float sacc = 0.0f;
        for (int d = lane; d < HD; d += 32) sacc += a[d] * oh[d];
        sacc = dec_warp_sum(sacc);
        if (lane == 0) apart[(int64_t)h * la.R + r] = sacc;
    }
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(counter, 1u) == gridDim.x - 1;
    __syncthreads();
    if (!last) return;
    for (int r = threadIdx.x; r < la.R; r += blockDim.x) {
        float sacc = 0.0f;
        for (unsigned hh = 0; hh < gridDim.x; hh++) sacc += __ldcg(apart + (int64_t)hh * la.R + r);
        la.xa[0][bz * la.xabs + r] = sacc;
    }
    if (threadIdx.x == 0) *counter = 0u;
}

/* blockIdx.y: the sequence b (x at b * C); scale: the embedding scale (Gemma), 1 otherwise */
template <typename T>
__global__ void k_dec_embed(const T *table, const dec_io *io, int64_t C, float scale, float *x) {
    dec_grid_wait();
    const int64_t row = (int64_t)io[blockIdx.y].tok * C;
    x += (int64_t)blockIdx.y * C;
    for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < C; c += (int64_t)gridDim.x * blockDim.x)
        x[c] = lt_tof<T>(table[row + c]) * scale;
}

/* Per-head RMSNorm of q and k (qk_norm), then the rotary embedding; q to q (f32 [B][NH*HD]), k
 * to its cache at the step's position. raw: the q/k/v GEMV's unrotated q and k (f32
 * [B][(NH+NKV)*HD], q heads then k heads). Block (head hh of the NH + NKV, sequence b); thread i
 * takes rotary pair (i, i + HD/2). */
template <typename T>
__global__ void __launch_bounds__(DEC_MAX_HD / 2) k_dec_qk_rope(const float *raw, float *q, void *const *kct,
                                                                int layer, int nlayers, const dec_io *io,
                                                                const float *qw, const float *kw, float eps,
                                                                dec_rope rope, int NH, int NKV, int HD) {
    __shared__ float red[DEC_MAX_HD / 64];
    const int hh = blockIdx.x, i = threadIdx.x, half = HD / 2;
    const int64_t bz = blockIdx.y;
    dec_grid_wait();
    const float *src = raw + bz * (NH + NKV) * HD + (int64_t)hh * HD;
    float a = 0.0f, b = 0.0f;
    if (i < half) { a = src[i]; b = src[i + half]; }
    const float ss = dec_warp_sum(a * a + b * b);
    if (i % 32 == 0) red[i / 32] = ss;
    __syncthreads();
    float tot = 0.0f;
    for (int w = 0; w < (int)(blockDim.x / 32); w++) tot += red[w];
    if (i >= half) return;
    const float r = 1.0f / sqrtf(tot / (float)HD + eps);
    const float *w = hh < NH ? qw : kw;
    a = w[i] * (a * r);
    b = w[i + half] * (b * r);
    const int pos = io[bz].pos;
    float sn, cs;
    dec_rope_sc(rope, pos, i, HD, sn, cs);
    const float lo = a * cs - b * sn, hi = b * cs + a * sn;
    if (hh < NH) {
        float *qh = q + bz * NH * HD + (int64_t)hh * HD;
        qh[i] = lo;
        qh[i + half] = hi;
    } else {
        T *cache = reinterpret_cast<T *>(kct[bz * nlayers + layer]) + (int64_t)pos * NKV * HD + (int64_t)(hh - NH) * HD;
        cache[i] = lt_fromf<T>(lo);
        cache[i + half] = lt_fromf<T>(hi);
    }
}

/* The post-norm of a sandwich layer: x += w * RMSNorm(t) (t: o_proj's or down_proj's output).
 * One block per sequence b (x, t at b * C); the sum of squares in a fixed order. */
__global__ void __launch_bounds__(256) k_dec_post_norm(float *x, const float *t, const float *w, float eps,
                                                       int64_t C) {
    __shared__ float red[8];
    dec_grid_wait();
    x += (int64_t)blockIdx.x * C;
    t += (int64_t)blockIdx.x * C;
    float ss = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += t[c] * t[c];
    ss = dec_warp_sum(ss);
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = ss;
    __syncthreads();
    float tot = 0.0f;
    for (int k = 0; k < (int)(blockDim.x / 32); k++) tot += red[k];
    const float r = 1.0f / sqrtf(tot / (float)C + eps);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) x[c] += w[c] * (t[c] * r);
}

/* argmax (lowest index among equal maxima, as torch.argmax), then the next step's token and
 * position (kept below max_len: a finished sequence of a batch repeats its last slot). One
 * block per sequence b (logits at b * V, io[b], fix at b * fixbs). */
__global__ void __launch_bounds__(1024) k_dec_argmax(const float *logits, int64_t V, dec_io *io, long long *fix,
                                                     int nfix, int64_t fixbs, int max_len) {
    const int64_t bz = blockIdx.x;
    dec_grid_wait();
    logits += bz * V;
    io += bz;
    fix += bz * fixbs;
    /* every layer's down_proj accumulator is consumed by now: zero them for the next step */
    for (int i = threadIdx.x; i < nfix; i += blockDim.x) fix[(int64_t)i * DEC_FIX_STRIDE] = 0;
    __shared__ float sv[32];
    __shared__ int64_t si[32];
    float bv = -INFINITY;
    int64_t bi = V;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
        const float v = logits[i];
        if (v > bv || (bi == V && v == bv)) { bv = v; bi = i; } /* increasing i: ties keep the first */
    }
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ov > bv || (ov == bv && oi < bi)) { bv = ov; bi = oi; }
    }
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) { sv[warp] = bv; si[warp] = bi; }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x / 32); w++)
            if (sv[w] > bv || (sv[w] == bv && si[w] < bi)) { bv = sv[w]; bi = si[w]; }
        io->tok = (int32_t)(bi < V ? bi : 0);
        io->pos = io->pos + 1 < max_len ? io->pos + 1 : max_len - 1;
    }
}

/* ---------------------------------------------------------------- host side */
struct dec_layer {
    dec_mats qkv, o, gu, down;
    dec_lora_a a_qkv, a_o, a_gu, a_down;
    const float *ln1, *ln2;
    const float *ln_pa, *ln_pf;  /* sandwich layers: the post-attention / post-feedforward norms; else NULL */
    const float *qn, *kn;        /* qk_norm: the per-head q / k norm weights [HD]; else NULL */
    dec_rope rope;               /* the layer's rotary embedding (full-attention or sliding) */
    int window;                  /* the sliding window of the layer's attention; 0: none */
    bool x_qkv;                  /* its q/k/v GEMV takes the flags (rope table, q/k norms, fused qkv_proj) */
    int64_t qkv_r0[3], gu_r0[2]; /* fused projections: the first row of q, k, v / gate, up in the one weight */
    const float *adown;          /* down_proj's LoRA A when folded into the gate/up GEMV */
    long long *afix;
};

struct lt_cuda_decoder {
    lt_model *m;
    lt_backend *be;
    lt_cuda *c;
    int wk;
    int64_t C, NH, NKV, HD, I, V, max_len, R;
    int nseq;                                         /* B: the sequences of every step */
    float eps, scale;
    float ascale, acap, fcap, escale;                 /* attention scale and soft-cap, final soft-cap, embedding scale */
    int act;                                          /* LT_ACT_* */
    bool x_gu;                                        /* the gate/up GEMV takes the flags (GELU, fused gate_up_proj) */
    int nsplit;
    int grid_cap;
    /* device f32, one row per sequence: x, xn [B][C], q, att [B][NH*HD], h [B][I], logits [B][V],
     * xa [B][L][LT_PROJ_COUNT][R], part [B][NH][nsplit][HD+2] */
    float *x, *xn, *q, *att, *h, *logits, *xa, *part;
    float *t;                                         /* sandwich layers: f32 [B][C], o_proj's / down_proj's output */
    float *qkr;                                       /* qk_norm: f32 [B][(NH+NKV)*HD], q and k before their norms */
    float *rope_tab;                                  /* f32 [2][2][HD/2]: full-attention, sliding layers (dec_rope) */
    int64_t xabs;                                     /* floats between two sequences' xa */
    float *apart;                                     /* f32 [B][apbs] LoRA A partials */
    int64_t apbs;
    unsigned *counter;                                /* [B] last-block counters of k_dec_norm_a / merge */
    long long *afix;                                  /* [B][L][R][DEC_FIX_STRIDE] down_proj xa, fixed point */
    int64_t fixbs;
    int nfix;                                         /* L*R when folded, else 0 */
    dec_io *io;                                       /* device [B] */
    dec_io *pin_in, *pin_out;                          /* pinned host [B] each */
    float *pin_logits;                                 /* pinned host [B][V], made at the first step that
                                                          downloads logits (sampling) */
    void **kct, **vct;                                 /* device tables [B][L] of the caches */
    dec_layer *layers;
    dec_mats head;
    const void *embed16;
    int known;                                         /* the device io holds dev[] */
    dec_io *dev;                                       /* host copy of what the device io holds [B] */
    int steps;
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    struct dec_prof *prof;                             /* lt_cuda_decoder_profile's events, else NULL */
    int pdl;                                           /* programmatic dependent launch (sm_90+) */
};

/* one timed step: an event after each kernel group of enqueue */
enum { DP_EMBED, DP_NORM_QKV, DP_QKV, DP_ATTN, DP_MERGE, DP_O, DP_NORM_GU, DP_GATEUP, DP_NORM_DOWN, DP_DOWN,
       DP_FINAL_NORM, DP_HEAD, DP_ARGMAX, DP_KINDS };
static const char *const dec_prof_names[DP_KINDS] = {
    "embed", "rmsnorm+LoRA A (q/k/v)", "q/k/v GEMV+(q/k norm)+rope+KV", "attention", "attention merge+o LoRA A",
    "o_proj GEMV(+post-norm)", "rmsnorm+LoRA A (gate/up)", "gate/up GEMV+act", "LoRA A (down)",
    "down_proj GEMV(+post-norm)", "final rmsnorm",
    "LM head GEMV", "argmax"};
struct dec_prof {
    cudaEvent_t *ev;
    int *kind;
    int n, cap;
};
static void dec_mark(lt_cuda_decoder *d, int kind) {
    struct dec_prof *p = d->prof;
    if (!p || p->n >= p->cap) return;
    cudaEventRecord(p->ev[p->n], d->c->stream);
    p->kind[p->n++] = kind;
}

static int g_use_graphs = 1;
extern "C" void lt_cuda_decoder_use_graphs(int on) { g_use_graphs = on; }
/* programmatic dependent launch: off until measured and checked on a GPU (test_generate_batch_cuda compares it with
 * plain launches, bench_generate times both); written and compile-checked only (see NOTES.md) */
static int g_use_pdl = 0;
extern "C" void lt_cuda_decoder_use_pdl(int on) { g_use_pdl = on; }
__global__ void k_dec_spin(long long ns);

template <typename... KArgs, typename... Args>
static cudaError_t dec_launch(const lt_cuda_decoder *d, void (*kernel)(KArgs...), dim3 grid, dim3 block,
                              Args... args);

/* Whether programmatic dependent launch works here, plain and inside a graph (a driver or
 * device without it would fail the decode step): tried once per process on two empty kernels;
 * a failure leaves the decoders without it. */
static int dec_pdl_works(lt_cuda_decoder *d) {
    static int known = -1;
    if (known >= 0) return known;
    cudaStream_t s = d->c->stream;
    const int save = d->pdl;
    d->pdl = 1;
    bool ok = cudaStreamSynchronize(s) == cudaSuccess;
    if (ok) {
        k_dec_spin<<<1, 1, 0, s>>>(0);
        ok = dec_launch(d, k_dec_spin, dim3(1), dim3(1), 0ll) == cudaSuccess && cudaStreamSynchronize(s) == cudaSuccess;
    }
    cudaGraph_t g = NULL;
    cudaGraphExec_t e = NULL;
    if (ok && cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess) {
        k_dec_spin<<<1, 1, 0, s>>>(0);
        const bool launched = dec_launch(d, k_dec_spin, dim3(1), dim3(1), 0ll) == cudaSuccess;
        ok = cudaStreamEndCapture(s, &g) == cudaSuccess && launched && cudaGraphInstantiate(&e, g, 0) == cudaSuccess &&
             cudaGraphLaunch(e, s) == cudaSuccess && cudaStreamSynchronize(s) == cudaSuccess;
    } else {
        ok = false;
    }
    if (e) cudaGraphExecDestroy(e);
    if (g) cudaGraphDestroy(g);
    cudaGetLastError(); /* a failed try leaves no sticky error behind (launch errors are not sticky) */
    d->pdl = save;
    known = ok ? 1 : 0;
    return known;
}

/* a kernel of the step after the first: with programmatic dependent launch where the decoder
 * uses it (the kernel's dec_grid_wait orders it after the one before) */
template <typename... KArgs, typename... Args>
static cudaError_t dec_launch(const lt_cuda_decoder *d, void (*kernel)(KArgs...), dim3 grid, dim3 block,
                              Args... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = 0;
    cfg.stream = d->c->stream;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = d->pdl ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, ((KArgs)args)...);
}

static lt_status dec_mat_of(lt_cuda_decoder *d, const lt_bweight *W, const float *bias, const lt_lora_tensor *t,
                            float *xa, dec_mat *o) {
    memset(o, 0, sizeof *o);
    const int wk = W->quant == LT_QUANT_NF4 ? WK_NF4 : WK_16;
    if (wk != d->wk)
        return lt_error(LT_ERR_UNSUPPORTED, "fast decode: the projections mix NF4 and 16-bit weights");
    if (W->cols % 64 != 0)
        return lt_error(LT_ERR_UNSUPPORTED, "fast decode: a weight has %lld columns, not a multiple of 64",
                        (long long)W->cols);
    if (wk == WK_NF4 && !W->packed)
        return lt_error(LT_ERR_UNSUPPORTED, "fast decode: an NF4 weight without packed data");
    o->packed = W->packed;
    o->absmax_f32 = W->double_quant ? NULL : W->absmax_f32;
    o->absmax_u8 = W->absmax_u8;
    o->nested_absmax = W->nested_absmax;
    o->nested_code = W->double_quant ? W->nested_code : NULL;
    o->offset = W->nested_offset;
    o->quant_map = W->quant_map;
    o->data16 = W->data16;
    o->rows = W->rows;
    o->cols = W->cols;
    o->bias = bias;
    if (t && t->A) {
        o->lora_B = t->B;
        o->xa = xa;
        o->R = (int)t->r;
        o->scale = d->scale;
    }
    return LT_OK;
}

/* rows [row0, row0 + rows) of the weight o was made from (a part of a fused projection): the
 * GEMV reads them at dec_ext.row0 (*r0 = row0; NF4 blocks and double-quant groups stay those of
 * the whole weight), LoRA B and the bias through their pointers */
static void dec_mat_view(dec_mat *o, int64_t row0, int64_t rows, int64_t *r0) {
    *r0 = row0;
    o->rows = rows;
    if (o->lora_B) o->lora_B += row0 * o->R;
    if (o->bias) o->bias += row0;
}

/* Rotary embedding r at the positions below max_len as the decode step computes it: the default
 * of its base (*plain), else host inverse frequencies tab[2][HD/2] (for the first position and
 * for max_len positions: they differ only in longrope, which switches past sw = its original
 * length as lt_rope_inv_freq does for a pass of pos + 1 positions) and the attention factor.
 * Dynamic NTK past max_position_embeddings (frequencies that change with every position) is
 * refused. */
static lt_status dec_rope_plan(const lt_rope_desc *r, int HD, int64_t max_len, int *plain, float *tab, float *af,
                               int *sw) {
    *plain = lt_rope_is_plain(r, max_len);
    *af = 1.0f;
    *sw = INT32_MAX;
    if (*plain) return LT_OK;
    if (r->kind == LT_ROPE_DYNAMIC)
        return lt_error(LT_ERR_UNSUPPORTED, "fast decode: dynamic rope scaling past max_position_embeddings %d (a "
                        "cache of %lld positions): its frequencies change at every position", r->max_pos,
                        (long long)max_len);
    float af_long = 1.0f;
    lt_rope_inv_freq(r, HD, 1, tab, af);
    lt_rope_inv_freq(r, HD, max_len, tab + HD / 2, &af_long);
    if (af_long != *af)
        return lt_error(LT_ERR_UNSUPPORTED, "fast decode: rope type %d has an attention factor that changes with the "
                        "length", (int)r->kind);
    if (r->kind == LT_ROPE_LONGROPE) *sw = r->original_max_pos;
    return LT_OK;
}

extern "C" void lt_cuda_decoder_free(lt_cuda_decoder *d) {
    if (!d) return;
    lt_cuda *c = d->c;
    cudaStreamSynchronize(c->stream);
    if (d->exec) cudaGraphExecDestroy(d->exec);
    if (d->graph) cudaGraphDestroy(d->graph);
    float *bufs[] = {d->x, d->xn, d->q, d->att, d->h, d->logits, d->xa, d->part, d->apart, d->t, d->qkr, d->rope_tab};
    lt_cuda_free(c, d->counter);
    lt_cuda_free(c, d->afix);
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) lt_cuda_free(c, bufs[i]);
    lt_cuda_free(c, d->io);
    lt_cuda_free(c, d->kct);
    lt_cuda_free(c, d->vct);
    if (d->pin_in) cudaFreeHost(d->pin_in);
    if (d->pin_logits) cudaFreeHost(d->pin_logits);
    free(d->dev);
    free(d->layers);
    free(d);
}

extern "C" lt_status lt_cuda_decoder_create_batch(lt_model *m, int32_t nseq, void *const *kcache,
                                                  void *const *vcache, int64_t max_len, lt_cuda_decoder **out) {
    *out = NULL;
    lt_backend *be = m->be;
    if (be->device != LT_DEVICE_CUDA) return lt_error(LT_ERR_UNSUPPORTED, "fast decode: not a CUDA model");
    if (be->act_dtype != LT_DTYPE_BF16 && be->act_dtype != LT_DTYPE_F16)
        return lt_error(LT_ERR_UNSUPPORTED, "fast decode: activation dtype %d", (int)be->act_dtype);
    if (nseq < 1 || nseq > DEC_MAX_SEQ)
        return lt_error(LT_ERR_UNSUPPORTED, "fast decode: %d sequences (its kernels take 1 to %d)", (int)nseq,
                        DEC_MAX_SEQ);
    if (max_len < 1 || max_len > INT32_MAX)
        return lt_error(LT_ERR_UNSUPPORTED, "fast decode: a cache of %lld positions", (long long)max_len);
    const lt_config *cf = &m->cfg;
    const int64_t C = cf->hidden_size, NH = cf->num_heads, NKV = cf->num_kv_heads, HD = cf->head_dim;
    if (HD % 2 || HD > DEC_MAX_HD || NKV <= 0 || NH % NKV || C % 64 || cf->intermediate_size % 64)
        return lt_error(LT_ERR_UNSUPPORTED, "fast decode: shape (hidden %lld, heads %lld/%lld, head dim %lld, "
                        "intermediate %d) outside what its kernels cover", (long long)C, (long long)NH,
                        (long long)NKV, (long long)HD, cf->intermediate_size);
    if (m->embed->quant != LT_QUANT_NONE || m->head->quant != LT_QUANT_NONE || m->head->cols % 64)
        return lt_error(LT_ERR_UNSUPPORTED, "fast decode: the embedding and LM head must be 16-bit");
    /* the layer description: what the kernels take (norm_one_plus needs nothing: the loader folds
     * the 1 into the norm weights) */
    if (cf->act != LT_ACT_SILU && cf->act != LT_ACT_GELU_TANH)
        return lt_error(LT_ERR_UNSUPPORTED, "fast decode: the %s MLP activation %d is outside what its kernels cover",
                        cf->architecture, (int)cf->act);
    if (cf->sliding_window < 0 || cf->attn_softcap < 0 || cf->final_softcap < 0)
        return lt_error(LT_ERR_UNSUPPORTED, "fast decode: negative sliding window or soft-cap in the %s layer",
                        cf->architecture);
    int rplain[2], rsw[2];
    float raf[2], rtab[2][2 * DEC_MAX_HD / 2];
    for (int i = 0; i < 2; i++)
        LT_TRY(dec_rope_plan(i ? &cf->rope_local : &cf->rope, (int)HD, max_len, &rplain[i], rtab[i], &raf[i], &rsw[i]));
    lt_cuda_decoder *d = (lt_cuda_decoder *)calloc(1, sizeof *d);
    if (!d) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory");
    lt_cuda *c = lt_cuda_of(be);
    d->m = m; d->be = be; d->c = c;
    d->C = C; d->NH = NH; d->NKV = NKV; d->HD = HD; d->I = cf->intermediate_size; d->V = cf->vocab_size;
    d->nseq = nseq;
    d->max_len = max_len;
    d->eps = (float)cf->rms_norm_eps;
    /* the default scale as the kernels always computed it (1 ulp from the double one at some head dims) */
    d->ascale = cf->attn_scale == (float)(1.0 / sqrt((double)HD)) ? 1.0f / sqrtf((float)HD) : cf->attn_scale;
    d->acap = cf->attn_softcap;
    d->fcap = cf->final_softcap;
    d->escale = lt_round_to_dtype(cf->embed_scale, be->act_dtype); /* as the training graph's embed() */
    d->act = cf->act;
    d->x_gu = cf->act != LT_ACT_SILU || cf->fused_gate_up;
    const int lora = m->has_lora && m->lora_enabled;
    d->R = lora ? m->lora.r : 0;
    d->scale = m->lora_scale;
    d->wk = m->layers[0].proj[0]->quant == LT_QUANT_NF4 ? WK_NF4 : WK_16;
    int64_t ns = (max_len + DEC_SPLIT_KEYS - 1) / DEC_SPLIT_KEYS;
    d->nsplit = (int)(ns < 1 ? 1 : ns > DEC_MAX_SPLIT ? DEC_MAX_SPLIT : ns);
    d->grid_cap = c->sm_count > 0 ? c->sm_count * 16 : 1024;
    d->embed16 = m->embed->data16;
    {
        int dev = 0, major = 0;
        d->pdl = g_use_pdl && cudaGetDevice(&dev) == cudaSuccess &&
                 cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major >= 9 &&
                 dec_pdl_works(d);
    }
    const int L = cf->num_layers;
    const int64_t R1 = d->R > 0 ? d->R : 1, B = nseq;
    d->xabs = (int64_t)L * LT_PROJ_COUNT * R1;
    d->fixbs = (int64_t)L * R1 * DEC_FIX_STRIDE;
    {
        const int64_t widest = C > d->I ? (C > NH * HD ? C : NH * HD) : (d->I > NH * HD ? d->I : NH * HD);
        int64_t nap = ((widest + DEC_SLICE - 1) / DEC_SLICE) * 3;
        if (nap < NH) nap = NH; /* the attention merge's per-head partials */
        d->apbs = nap * R1;
    }
    lt_status st = LT_OK;
#define DALLOC(p, bytes, what) if (st == LT_OK) st = lt_cuda_malloc(c, (size_t)(bytes), what, (void **)&(p))
    DALLOC(d->x, B * C * 4, "decode residual");
    DALLOC(d->xn, B * C * 4, "decode norm");
    DALLOC(d->q, B * NH * HD * 4, "decode q");
    DALLOC(d->att, B * NH * HD * 4, "decode attention");
    DALLOC(d->h, B * d->I * 4, "decode MLP");
    DALLOC(d->logits, B * d->V * 4, "decode logits");
    DALLOC(d->xa, B * d->xabs * 4, "decode LoRA");
    DALLOC(d->part, B * NH * d->nsplit * (HD + 2) * 4, "decode attention splits");
    DALLOC(d->io, B * sizeof(dec_io), "decode token");
    DALLOC(d->apart, B * d->apbs * 4, "decode LoRA partials");
    DALLOC(d->counter, B * sizeof(unsigned), "decode counter");
    DALLOC(d->afix, B * d->fixbs * 8, "decode LoRA accumulators");
    DALLOC(d->kct, B * L * sizeof(void *), "decode cache table");
    DALLOC(d->vct, B * L * sizeof(void *), "decode cache table");
    if (cf->sandwich_norm) DALLOC(d->t, B * C * 4, "decode post-norm input");
    if (cf->qk_norm) DALLOC(d->qkr, B * (NH + NKV) * HD * 4, "decode q/k before their norms");
    if (!rplain[0] || !rplain[1]) DALLOC(d->rope_tab, 2 * 2 * (HD / 2) * 4, "decode rope frequencies");
#undef DALLOC
    for (int i = 0; st == LT_OK && d->rope_tab && i < 2; i++)
        if (!rplain[i] && cudaMemcpyAsync(d->rope_tab + i * HD, rtab[i], (size_t)HD * 4, cudaMemcpyHostToDevice,
                                          c->stream) != cudaSuccess)
            st = lt_error(LT_ERR_CUDA, "fast decode: uploading its rope frequencies");
    if (st == LT_OK && cudaMemsetAsync(d->afix, 0, (size_t)(B * d->fixbs * 8), c->stream) != cudaSuccess)
        st = lt_error(LT_ERR_CUDA, "fast decode: clearing its LoRA accumulators");
    if (st == LT_OK && cudaMemsetAsync(d->counter, 0, (size_t)B * sizeof(unsigned), c->stream) != cudaSuccess)
        st = lt_error(LT_ERR_CUDA, "fast decode: clearing its counters");
    if (st == LT_OK && cudaMallocHost((void **)&d->pin_in, 2 * (size_t)B * sizeof(dec_io)) != cudaSuccess)
        st = lt_error(LT_ERR_OUT_OF_MEMORY, "fast decode: pinned host memory");
    if (st == LT_OK) d->pin_out = d->pin_in + B;
    d->dev = (dec_io *)calloc((size_t)B, sizeof(dec_io));
    d->layers = (dec_layer *)calloc(L, sizeof(dec_layer));
    if (st == LT_OK && (!d->dev || !d->layers)) st = lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory");
    /* the cache tables (from pageable memory: staged before the call returns, in stream order) */
    if (st == LT_OK &&
        (cudaMemcpyAsync(d->kct, kcache, (size_t)(B * L) * sizeof(void *), cudaMemcpyHostToDevice, c->stream) !=
             cudaSuccess ||
         cudaMemcpyAsync(d->vct, vcache, (size_t)(B * L) * sizeof(void *), cudaMemcpyHostToDevice, c->stream) !=
             cudaSuccess))
        st = lt_error(LT_ERR_CUDA, "fast decode: uploading its cache tables");
    for (int l = 0; st == LT_OK && l < L; l++) {
        lt_layer *Ly = &m->layers[l];
        dec_layer *dl = &d->layers[l];
        dl->ln1 = Ly->ln1;
        dl->ln2 = Ly->ln2;
        if (cf->sandwich_norm) {
            dl->ln_pa = Ly->ln_post_attn;
            dl->ln_pf = Ly->ln_post_ff;
        }
        if (cf->qk_norm) {
            dl->qn = Ly->q_norm;
            dl->kn = Ly->k_norm;
        }
        if ((cf->sandwich_norm && (!dl->ln_pa || !dl->ln_pf)) || (cf->qk_norm && (!dl->qn || !dl->kn))) {
            st = lt_error(LT_ERR_UNSUPPORTED, "fast decode: layer %d lacks the norm weights its description names", l);
            break;
        }
        {
            const int k = cf->layer_sliding[l] ? 1 : 0; /* as the graph's rope_apply and attn_opts */
            const lt_rope_desc *r = k ? &cf->rope_local : &cf->rope;
            dl->rope.tab = rplain[k] ? NULL : d->rope_tab + k * HD;
            dl->rope.theta = (float)r->theta;
            dl->rope.af = raf[k];
            dl->rope.sw = rsw[k];
            dl->window = k ? cf->sliding_window : 0;
            dl->x_qkv = dl->rope.tab || dl->qn || cf->fused_qkv;
        }
        const lt_lora_tensor *lt[LT_PROJ_COUNT];
        float *xa[LT_PROJ_COUNT];
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            lt[p] = lora && Ly->lora[p].A ? &Ly->lora[p] : NULL;
            xa[p] = d->xa + ((int64_t)l * LT_PROJ_COUNT + p) * R1;
            if (lt[p] && lt[p]->r != d->R) st = lt_error(LT_ERR_UNSUPPORTED, "fast decode: LoRA ranks differ");
        }
        if (cf->fused_qkv) {
            /* one qkv_proj [QD + 2 KD, C] (its LoRA in slot Q): q, k and v are its row ranges */
            if (st == LT_OK && (!Ly->proj[LT_PROJ_Q] || Ly->proj[LT_PROJ_Q]->rows != (NH + 2 * NKV) * HD))
                st = lt_error(LT_ERR_UNSUPPORTED, "fast decode: the fused qkv_proj of layer %d has unexpected rows", l);
            if (st == LT_OK) st = dec_mat_of(d, Ly->proj[LT_PROJ_Q], Ly->bias[0], lt[LT_PROJ_Q], xa[LT_PROJ_Q], &dl->qkv.m[0]);
            if (st == LT_OK) {
                dl->qkv.m[1] = dl->qkv.m[2] = dl->qkv.m[0];
                dec_mat_view(&dl->qkv.m[0], 0, NH * HD, &dl->qkv_r0[0]);
                dec_mat_view(&dl->qkv.m[1], NH * HD, NKV * HD, &dl->qkv_r0[1]);
                dec_mat_view(&dl->qkv.m[2], (NH + NKV) * HD, NKV * HD, &dl->qkv_r0[2]);
            }
        } else {
            for (int p = 0; st == LT_OK && p < 3; p++)
                st = dec_mat_of(d, Ly->proj[p], Ly->bias[p], lt[p], xa[p], &dl->qkv.m[p]);
        }
        if (st == LT_OK) st = dec_mat_of(d, Ly->proj[LT_PROJ_O], NULL, lt[LT_PROJ_O], xa[LT_PROJ_O], &dl->o.m[0]);
        if (cf->fused_gate_up) {
            /* one gate_up_proj [2I, C], gate rows first (its LoRA in slot GATE) */
            if (st == LT_OK && (!Ly->proj[LT_PROJ_GATE] || Ly->proj[LT_PROJ_GATE]->rows != 2 * d->I))
                st = lt_error(LT_ERR_UNSUPPORTED, "fast decode: the fused gate_up_proj of layer %d has unexpected rows", l);
            if (st == LT_OK)
                st = dec_mat_of(d, Ly->proj[LT_PROJ_GATE], NULL, lt[LT_PROJ_GATE], xa[LT_PROJ_GATE], &dl->gu.m[0]);
            if (st == LT_OK) {
                dl->gu.m[1] = dl->gu.m[0];
                dec_mat_view(&dl->gu.m[0], 0, d->I, &dl->gu_r0[0]);
                dec_mat_view(&dl->gu.m[1], d->I, d->I, &dl->gu_r0[1]);
            }
        } else {
            if (st == LT_OK)
                st = dec_mat_of(d, Ly->proj[LT_PROJ_GATE], NULL, lt[LT_PROJ_GATE], xa[LT_PROJ_GATE], &dl->gu.m[0]);
            if (st == LT_OK)
                st = dec_mat_of(d, Ly->proj[LT_PROJ_UP], NULL, lt[LT_PROJ_UP], xa[LT_PROJ_UP], &dl->gu.m[1]);
        }
        if (st == LT_OK)
            st = dec_mat_of(d, Ly->proj[LT_PROJ_DOWN], NULL, lt[LT_PROJ_DOWN], xa[LT_PROJ_DOWN], &dl->down.m[0]);
        if (st != LT_OK) break;
        if (lt[LT_PROJ_DOWN] && d->R <= DEC_FIX_MAX_R) {
            /* down_proj's A product comes from the gate/up GEMV's SwiGLU epilogue (no launch) */
            dl->adown = lt[LT_PROJ_DOWN]->A;
            dl->afix = d->afix + (int64_t)l * R1 * DEC_FIX_STRIDE;
            dl->down.m[0].xfix = dl->afix;
            d->nfix = L * (int)R1;
            lt[LT_PROJ_DOWN] = NULL; /* keeps it out of the A groups below */
        }
        if (dl->qkv.m[0].rows != NH * HD || dl->qkv.m[1].rows != NKV * HD || dl->qkv.m[2].rows != NKV * HD ||
            dl->o.m[0].cols != NH * HD || dl->o.m[0].rows != C)
            st = lt_error(LT_ERR_UNSUPPORTED, "fast decode: attention weights of layer %d have unexpected shapes", l);
        if (st == LT_OK && (dl->gu.m[0].rows != d->I || dl->gu.m[1].rows != d->I || dl->gu.m[0].cols != C ||
                            dl->down.m[0].cols != d->I || dl->down.m[0].rows != C))
            st = lt_error(LT_ERR_UNSUPPORTED, "fast decode: MLP weights of layer %d have unexpected shapes", l);
        /* LoRA A groups by shared input */
        const int groups[4][4] = {{LT_PROJ_Q, LT_PROJ_K, LT_PROJ_V, -1}, {LT_PROJ_O, -1, -1, -1},
                                  {LT_PROJ_GATE, LT_PROJ_UP, -1, -1}, {LT_PROJ_DOWN, -1, -1, -1}};
        dec_lora_a *as[4] = {&dl->a_qkv, &dl->a_o, &dl->a_gu, &dl->a_down};
        for (int g = 0; g < 4; g++) {
            as[g]->R = d->R;
            as[g]->xabs = d->xabs;
            for (int k = 0; k < 4 && groups[g][k] >= 0; k++) {
                const int p = groups[g][k];
                if (!lt[p]) continue;
                as[g]->A[as[g]->n] = lt[p]->A;
                as[g]->xa[as[g]->n] = xa[p];
                as[g]->n++;
            }
        }
    }
    if (st == LT_OK) {
        d->wk = WK_16; /* the head is 16-bit whatever the projections are */
        st = dec_mat_of(d, m->head, NULL, NULL, NULL, &d->head.m[0]);
        d->wk = m->layers[0].proj[0]->quant == LT_QUANT_NF4 ? WK_NF4 : WK_16;
    }
    if (st != LT_OK) { lt_cuda_decoder_free(d); return st; }
    *out = d;
    return LT_OK;
}

extern "C" lt_status lt_cuda_decoder_create(lt_model *m, void *const *kcache, void *const *vcache, int64_t max_len,
                                            lt_cuda_decoder **out) {
    return lt_cuda_decoder_create_batch(m, 1, kcache, vcache, max_len, out);
}

/* one GEMV over every sequence: the sequences in tiles of NB (1 for a single sequence, else
 * DEC_NB), each tile one launch that reads the weights once */
template <int WK, typename T, int MODE, int NB, bool X>
static lt_status launch_gemv_nb(lt_cuda_decoder *d, const dec_mats &M, const float *x, int64_t C, int64_t npairs,
                                dec_out o, const dec_ext &e) {
    for (int b0 = 0; b0 < d->nseq; b0 += NB) {
        o.b0 = b0;
        o.nb = d->nseq - b0 < NB ? d->nseq - b0 : NB;
        if (C <= DEC_WARP_MAX_COLS) {
            const int64_t blocks = (npairs + DEC_WARPS - 1) / DEC_WARPS;
            const unsigned grid = (unsigned)(blocks < d->grid_cap ? blocks : d->grid_cap);
            LT_CUDA_TRY(dec_launch(d, k_dec_gemv<WK, T, MODE, 1, NB, X>, dim3(grid), dim3(DEC_THREADS), M, x, C, npairs,
                                   o, (const dec_io *)d->io, e));
        } else {
            const unsigned grid = (unsigned)(npairs < d->grid_cap ? npairs : d->grid_cap);
            LT_CUDA_TRY(dec_launch(d, k_dec_gemv<WK, T, MODE, 0, NB, X>, dim3(grid), dim3(DEC_THREADS), M, x, C, npairs,
                                   o, (const dec_io *)d->io, e));
        }
        LT_LAUNCH_CHECK("k_dec_gemv");
    }
    return LT_OK;
}

/* ext: the instance that reads e, the layer description's flags and row offsets (X = 1); the
 * Qwen2 / Llama layer takes the one without them */
template <int WK, typename T, int MODE>
static lt_status launch_gemv(lt_cuda_decoder *d, const dec_mats &M, const float *x, int64_t C, int64_t npairs,
                             const dec_out &o, const dec_ext &e, bool ext) {
    if (d->nseq == 1)
        return ext ? launch_gemv_nb<WK, T, MODE, 1, true>(d, M, x, C, npairs, o, e)
                   : launch_gemv_nb<WK, T, MODE, 1, false>(d, M, x, C, npairs, o, e);
    return ext ? launch_gemv_nb<WK, T, MODE, DEC_NB, true>(d, M, x, C, npairs, o, e)
               : launch_gemv_nb<WK, T, MODE, DEC_NB, false>(d, M, x, C, npairs, o, e);
}

template <typename T, int MODE>
static lt_status gemv(lt_cuda_decoder *d, int wk, const dec_mats &M, const float *x, int64_t C, int64_t npairs,
                      const dec_out &o, const dec_ext &e, bool ext) {
    return wk == WK_NF4 ? launch_gemv<WK_NF4, T, MODE>(d, M, x, C, npairs, o, e, ext)
                        : launch_gemv<WK_16, T, MODE>(d, M, x, C, npairs, o, e, ext);
}

static lt_status norm_a(lt_cuda_decoder *d, const float *x, const float *w, float *xn, const dec_lora_a &la,
                        int64_t C) {
    const int rows = la.n * la.R;
    if (!w && rows == 0) return LT_OK;
    const dim3 grid((unsigned)((C + DEC_SLICE - 1) / DEC_SLICE), (unsigned)(rows > 0 ? (rows + DEC_AROWS - 1) / DEC_AROWS : 1),
                    (unsigned)d->nseq);
    LT_CUDA_TRY(dec_launch(d, k_dec_norm_a, grid, dim3(DEC_THREADS), x, w, d->eps, xn, la, C, d->apart, d->apbs,
                           d->counter));
    LT_LAUNCH_CHECK("k_dec_norm_a");
    return LT_OK;
}

/* x += w * RMSNorm(t) of every sequence (sandwich layers) */
static lt_status post_norm(lt_cuda_decoder *d, const float *w) {
    LT_CUDA_TRY(dec_launch(d, k_dec_post_norm, dim3((unsigned)d->nseq), dim3(256), d->x, (const float *)d->t, w,
                           d->eps, d->C));
    LT_LAUNCH_CHECK("k_dec_post_norm");
    return LT_OK;
}

/* every kernel of one step, in stream order */
template <typename T>
static lt_status enqueue(lt_cuda_decoder *d) {
    cudaStream_t s = d->c->stream;
    const int64_t C = d->C, HD = d->HD, NH = d->NH, NKV = d->NKV, I = d->I;
    const unsigned B = (unsigned)d->nseq;
    const int L = d->m->cfg.num_layers;
    k_dec_embed<T><<<dim3((unsigned)((C + 255) / 256), B), 256, 0, s>>>((const T *)d->embed16, d->io, C, d->escale,
                                                                        d->x);
    LT_LAUNCH_CHECK("k_dec_embed");
    dec_mark(d, DP_EMBED);
    dec_lora_a none = {};
    none.xabs = d->xabs;
    for (int l = 0; l < L; l++) {
        dec_layer *dl = &d->layers[l];
        dec_out o = {};
        o.HD = (int)HD; o.NH = (int)NH; o.NKV = (int)NKV; o.theta = dl->rope.theta; o.kvd = NKV * HD;
        o.kct = d->kct; o.vct = d->vct; o.layer = l; o.L = L;
        o.xabs = d->xabs; o.fixbs = d->fixbs;
        const bool sandwich = dl->ln_pa != NULL;
        LT_TRY(norm_a(d, d->x, dl->ln1, d->xn, dl->a_qkv, C));
        dec_mark(d, DP_NORM_QKV);
        dec_ext e = {};
        memcpy(e.row0, dl->qkv_r0, sizeof dl->qkv_r0);
        e.rope = dl->rope;
        e.qkraw = dl->qn != NULL;
        if (dl->qn) { o.out = d->qkr; o.obs = (NH + NKV) * HD; }
        else { o.out = d->q; o.obs = NH * HD; }
        LT_TRY((gemv<T, MODE_QKV>(d, d->wk, dl->qkv, d->xn, C, (NH + 2 * NKV) * HD / 2, o, e, dl->x_qkv)));
        if (dl->qn) {
            LT_CUDA_TRY(dec_launch(d, k_dec_qk_rope<T>, dim3((unsigned)(NH + NKV), B), dim3(DEC_MAX_HD / 2),
                                   (const float *)d->qkr, d->q, (void *const *)d->kct, l, L, (const dec_io *)d->io,
                                   dl->qn, dl->kn, d->eps, dl->rope, (int)NH, (int)NKV, (int)HD));
            LT_LAUNCH_CHECK("k_dec_qk_rope");
        }
        dec_mark(d, DP_QKV);
        if (d->acap > 0 || dl->window > 0)
            LT_CUDA_TRY(dec_launch(d, k_dec_attn<T, true>, dim3((unsigned)NH, (unsigned)d->nsplit, B),
                                   dim3(DEC_THREADS), (const float *)d->q, (void *const *)d->kct, (void *const *)d->vct,
                                   l, L, (const dec_io *)d->io, (int)NH, (int)NKV, (int)HD, d->ascale, d->acap,
                                   dl->window, d->part));
        else
            LT_CUDA_TRY(dec_launch(d, k_dec_attn<T, false>, dim3((unsigned)NH, (unsigned)d->nsplit, B),
                                   dim3(DEC_THREADS), (const float *)d->q, (void *const *)d->kct, (void *const *)d->vct,
                                   l, L, (const dec_io *)d->io, (int)NH, (int)NKV, (int)HD, d->ascale, 0.0f, 0,
                                   d->part));
        LT_LAUNCH_CHECK("k_dec_attn");
        dec_mark(d, DP_ATTN);
        /* the merge also computes o_proj's LoRA A product (no launch of its own) */
        LT_CUDA_TRY(dec_launch(d, k_dec_attn_merge, dim3((unsigned)NH, B), dim3(128), (const float *)d->part,
                               d->nsplit, (int)HD, d->att, dl->a_o, d->apart, d->apbs, d->counter));
        LT_LAUNCH_CHECK("k_dec_attn_merge");
        dec_mark(d, DP_MERGE);
        /* sandwich layers: o_proj's output to t, then x += post-norm(t) */
        o.out = sandwich ? d->t : d->x; o.obs = C;
        e = dec_ext{};
        e.store = sandwich;
        LT_TRY((gemv<T, MODE_RESID>(d, d->wk, dl->o, d->att, NH * HD, (C + 1) / 2, o, e, sandwich)));
        if (sandwich) LT_TRY(post_norm(d, dl->ln_pa));
        dec_mark(d, DP_O);
        LT_TRY(norm_a(d, d->x, dl->ln2, d->xn, dl->a_gu, C));
        dec_mark(d, DP_NORM_GU);
        o.out = d->h; o.obs = I;
        o.adown = dl->adown; o.afix = dl->afix; o.aR = (int)d->R;
        e = dec_ext{};
        e.row0[0] = dl->gu_r0[0];
        e.row0[1] = dl->gu_r0[1];
        e.act = d->act;
        if (dl->adown) LT_TRY((gemv<T, MODE_GATEUP_A>(d, d->wk, dl->gu, d->xn, C, I, o, e, d->x_gu)));
        else LT_TRY((gemv<T, MODE_GATEUP>(d, d->wk, dl->gu, d->xn, C, I, o, e, d->x_gu)));
        dec_mark(d, DP_GATEUP);
        o.adown = NULL; o.afix = NULL; o.aR = 0;
        LT_TRY(norm_a(d, d->h, NULL, NULL, dl->a_down, I));
        dec_mark(d, DP_NORM_DOWN);
        o.out = sandwich ? d->t : d->x; o.obs = C;
        e = dec_ext{};
        e.store = sandwich;
        LT_TRY((gemv<T, MODE_RESID>(d, d->wk, dl->down, d->h, I, (C + 1) / 2, o, e, sandwich)));
        if (sandwich) LT_TRY(post_norm(d, dl->ln_pf));
        dec_mark(d, DP_DOWN);
    }
    LT_TRY(norm_a(d, d->x, d->m->final_norm, d->xn, none, C));
    dec_mark(d, DP_FINAL_NORM);
    dec_out o = {};
    o.out = d->logits; o.obs = d->V;
    dec_ext e = {};
    e.cap = d->fcap;
    o.xabs = d->xabs; o.fixbs = d->fixbs;
    LT_TRY((launch_gemv<WK_16, T, MODE_LOGITS>(d, d->head, d->xn, C, (d->V + 1) / 2, o, e, d->fcap > 0))); /* 16-bit */
    dec_mark(d, DP_HEAD);
    LT_CUDA_TRY(dec_launch(d, k_dec_argmax, dim3(B), dim3(1024), (const float *)d->logits, d->V, d->io, d->afix,
                           d->nfix, d->fixbs, (int)d->max_len));
    LT_LAUNCH_CHECK("k_dec_argmax");
    dec_mark(d, DP_ARGMAX);
    return LT_OK;
}

static lt_status enqueue_any(lt_cuda_decoder *d) {
    return d->be->act_dtype == LT_DTYPE_BF16 ? enqueue<__nv_bfloat16>(d) : enqueue<__half>(d);
}

extern "C" lt_status lt_cuda_decoder_step_batch(lt_cuda_decoder *d, const int32_t *tok, const int64_t *pos,
                                                float *host_logits, int32_t *host_argmax) {
    LT_CHECK_ARG(d && tok && pos, "decode step: decoder, tokens and positions are required");
    const int B = d->nseq;
    bool same = d->known != 0;
    for (int b = 0; b < B; b++) {
        LT_CHECK_ARG(pos[b] >= 0 && pos[b] < d->max_len, "decode step: position %lld of sequence %d outside the "
                     "cache of %lld", (long long)pos[b], b, (long long)d->max_len);
        LT_CHECK_ARG(tok[b] >= 0 && tok[b] < d->V, "decode step: token %d of sequence %d outside the vocabulary",
                     tok[b], b);
        same = same && d->dev[b].tok == tok[b] && d->dev[b].pos == pos[b];
    }
    cudaStream_t s = d->c->stream;
    const size_t lbytes = (size_t)B * (size_t)d->V * 4;
    if (host_logits && !d->pin_logits && cudaMallocHost((void **)&d->pin_logits, lbytes) != cudaSuccess) {
        d->pin_logits = NULL;
        return lt_error(LT_ERR_OUT_OF_MEMORY, "fast decode: pinned host memory for %lld logits", (long long)B * d->V);
    }
    if (!same) {
        for (int b = 0; b < B; b++) {
            d->pin_in[b].tok = tok[b];
            d->pin_in[b].pos = (int32_t)pos[b];
        }
        LT_CUDA_TRY(cudaMemcpyAsync(d->io, d->pin_in, (size_t)B * sizeof(dec_io), cudaMemcpyHostToDevice, s));
    }
    if (d->exec) {
        LT_CUDA_TRY(cudaGraphLaunch(d->exec, s));
    } else if (g_use_graphs && d->steps >= 1) {
        /* the first step ran without a graph (it checks every launch); capture the second */
        LT_CUDA_TRY(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
        lt_status st = enqueue_any(d);
        cudaGraph_t g = NULL;
        cudaError_t e = cudaStreamEndCapture(s, &g);
        if (st != LT_OK) { if (g) cudaGraphDestroy(g); return st; }
        if (e != cudaSuccess) return lt_cuda_err(e, "cudaStreamEndCapture (decode step)", __FILE__, __LINE__);
        d->graph = g;
        LT_CUDA_TRY(cudaGraphInstantiate(&d->exec, g, 0));
        LT_CUDA_TRY(cudaGraphLaunch(d->exec, s));
    } else {
        LT_TRY(enqueue_any(d));
    }
    d->steps++;
    if (host_logits) LT_CUDA_TRY(cudaMemcpyAsync(d->pin_logits, d->logits, lbytes, cudaMemcpyDeviceToHost, s));
    LT_CUDA_TRY(cudaMemcpyAsync(d->pin_out, d->io, (size_t)B * sizeof(dec_io), cudaMemcpyDeviceToHost, s));
    LT_CUDA_TRY(cudaStreamSynchronize(s));
    if (host_logits) memcpy(host_logits, d->pin_logits, lbytes);
    for (int b = 0; b < B; b++) {
        if (host_argmax) host_argmax[b] = d->pin_out[b].tok;
        d->dev[b] = d->pin_out[b];
    }
    d->known = 1;
    return LT_OK;
}

extern "C" lt_status lt_cuda_decoder_step(lt_cuda_decoder *d, int32_t tok, int64_t pos, float *host_logits,
                                          int32_t *host_argmax) {
    LT_CHECK_ARG(d && d->nseq == 1, "decode step: a decoder of one sequence is required");
    return lt_cuda_decoder_step_batch(d, &tok, &pos, host_logits, host_argmax);
}

/* holds the stream for ns nanoseconds, so that the launches queued behind it run back to back */
__global__ void k_dec_spin(long long ns) {
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); } while ((long long)(t - t0) < ns);
}

extern "C" lt_status lt_cuda_decoder_profile(lt_cuda_decoder *d, int reps, double *ms, const char **names,
                                             int cap, int *n_kinds, double *graph_ms) {
    LT_CHECK_ARG(d && ms && n_kinds && cap >= DP_KINDS && reps >= 1,
                 "decode profile: a decoder, %d slots and reps >= 1 are required", DP_KINDS);
    *n_kinds = DP_KINDS;
    for (int k = 0; k < DP_KINDS; k++) {
        ms[k] = 0;
        if (names) names[k] = dec_prof_names[k];
    }
    if (graph_ms) *graph_ms = 0;
    cudaStream_t s = d->c->stream;
    struct dec_prof p;
    p.cap = 16 * (int)d->m->cfg.num_layers + 16;
    p.n = 0;
    p.ev = (cudaEvent_t *)calloc((size_t)p.cap, sizeof(cudaEvent_t));
    p.kind = (int *)calloc((size_t)p.cap, sizeof(int));
    lt_status st = p.ev && p.kind ? LT_OK : lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory");
    int made = 0;
    for (; st == LT_OK && made < p.cap; made++)
        if (cudaEventCreate(&p.ev[made]) != cudaSuccess) st = lt_error(LT_ERR_CUDA, "decode profile: cudaEventCreate");
    for (int r = 0; st == LT_OK && r < reps; r++) {
        p.n = 0;
        k_dec_spin<<<1, 1, 0, s>>>(20 * 1000 * 1000); /* 20 ms: longer than queueing a step takes */
        if (cudaGetLastError() != cudaSuccess) { st = lt_error(LT_ERR_CUDA, "decode profile: spin kernel"); break; }
        d->prof = &p;
        dec_mark(d, -1);
        st = enqueue_any(d);
        d->prof = NULL;
        if (st == LT_OK && cudaStreamSynchronize(s) != cudaSuccess) st = lt_error(LT_ERR_CUDA, "decode profile: step");
        for (int i = 1; st == LT_OK && i < p.n; i++) {
            float t = 0;
            if (cudaEventElapsedTime(&t, p.ev[i - 1], p.ev[i]) == cudaSuccess && p.kind[i] >= 0)
                ms[p.kind[i]] += (double)t / reps;
        }
    }
    if (st == LT_OK && graph_ms && d->exec) {
        cudaEvent_t a = p.ev[0], b = p.ev[1];
        if (cudaEventRecord(a, s) != cudaSuccess) st = lt_error(LT_ERR_CUDA, "decode profile: event");
        for (int r = 0; st == LT_OK && r < reps; r++)
            if (cudaGraphLaunch(d->exec, s) != cudaSuccess) st = lt_error(LT_ERR_CUDA, "decode profile: graph launch");
        float t = 0;
        if (st == LT_OK && (cudaEventRecord(b, s) != cudaSuccess || cudaEventSynchronize(b) != cudaSuccess ||
                            cudaEventElapsedTime(&t, a, b) != cudaSuccess))
            st = lt_error(LT_ERR_CUDA, "decode profile: timing the graph replays");
        *graph_ms = (double)t / reps;
    }
    d->known = 0; /* the device's token and position moved on */
    for (int i = 0; i < made; i++) cudaEventDestroy(p.ev[i]);
    free(p.ev);
    free(p.kind);
    return st;
}

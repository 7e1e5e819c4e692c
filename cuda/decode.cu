/* decode.cu - the fast decode step of generation on CUDA (see decode.h): single-token GEMV
 * kernels over NF4 or 16-bit weights with fused epilogues (bias, LoRA B, rotary + KV append,
 * SwiGLU, residual add, logits), the LoRA A products with the RMSNorm in front, split-K
 * attention over the KV cache, the embedding row, the argmax; then the launch sequence of one
 * step, captured once into a CUDA graph. Activations of the step stay f32 (only the KV cache
 * is 16-bit), so the step is at least as exact as the prefill through the training kernels. */
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
/* where a GEMV's epilogue writes */
struct dec_out {
    float *out;                  /* QKV: q f32 [NH*HD]; GATEUP: h f32 [I]; RESID: x f32 (+=); LOGITS: f32 [V] */
    void *kc, *vc;               /* QKV: this layer's caches (max_len, NKV*HD) act dtype */
    int64_t kvd;                 /* NKV*HD */
    int HD, NH, NKV;
    float theta;
    /* GATEUP: down_proj's LoRA A product folded into the SwiGLU epilogue, accumulated in fixed
     * point (deterministic whatever order the blocks finish in) */
    const float *adown;          /* f32 [aR, npairs] or NULL */
    long long *afix;             /* [aR][DEC_FIX_STRIDE], zero on entry (the argmax re-zeroes it) */
    int aR;
};
/* token and position of the step, on the device; the argmax kernel advances them */
struct dec_io {
    int32_t tok;
    int32_t pos;
};
/* the LoRA A products that share one input: xa[t][r] = A_t[r,:] . norm(x) */
struct dec_lora_a {
    const float *A[3];           /* f32 [R, C] */
    float *xa[3];                /* f32 [R] */
    int n, R;
};

__device__ __forceinline__ float dec_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T> __device__ __forceinline__ float2 dec_f2(uint32_t w);
template <> __device__ __forceinline__ float2 dec_f2<__nv_bfloat16>(uint32_t w) {
    return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162 *>(&w));
}
template <> __device__ __forceinline__ float2 dec_f2<__half>(uint32_t w) {
    return __half22float2(*reinterpret_cast<__half2 *>(&w));
}

/* sum over 16 elements of row `row` starting at column 16*j, times x */
template <int WK, typename T>
__device__ __forceinline__ float dec_chunk(const dec_mat &m, int64_t row, int64_t j, const float *x,
                                           const float *qm) {
    const int64_t e0 = row * m.cols + j * DEC_CHUNK;
    /* x comes through L1: a thread meets the same chunks of x for every row it takes */
    const float4 *xg = reinterpret_cast<const float4 *>(x + j * DEC_CHUNK);
    const float4 xv[4] = {__ldg(xg), __ldg(xg + 1), __ldg(xg + 2), __ldg(xg + 3)};
    float s = 0.0f;
    if constexpr (WK == WK_NF4) {
        const uint2 w = __ldg(reinterpret_cast<const uint2 *>(m.packed + e0 / 2));
        const int64_t b = e0 / 64;
        const float am = m.absmax_f32 ? __ldg(m.absmax_f32 + b)
                                      : __fadd_rn(__fmul_rn(__ldg(m.nested_code + __ldg(m.absmax_u8 + b)),
                                                            __ldg(m.nested_absmax + b / LT_NF4_NESTED_BLOCK)),
                                                  m.offset);
        const uint32_t words[2] = {w.x, w.y};
#pragma unroll
        for (int k = 0; k < 2; k++) {
            const float4 a = xv[2 * k], c = xv[2 * k + 1];
            const uint32_t wd = words[k];
            /* byte i holds element 2i in its high nibble, 2i+1 in its low nibble */
            s += qm[(wd >> 4) & 15] * a.x + qm[wd & 15] * a.y;
            s += qm[(wd >> 12) & 15] * a.z + qm[(wd >> 8) & 15] * a.w;
            s += qm[(wd >> 20) & 15] * c.x + qm[(wd >> 16) & 15] * c.y;
            s += qm[(wd >> 28) & 15] * c.z + qm[(wd >> 24) & 15] * c.w;
        }
        return s * am;
    } else {
        const uint4 *p = reinterpret_cast<const uint4 *>(reinterpret_cast<const T *>(m.data16) + e0);
        const uint4 u[2] = {__ldg(p), __ldg(p + 1)};
#pragma unroll
        for (int k = 0; k < 2; k++) {
            const float4 a = xv[2 * k], c = xv[2 * k + 1];
            const float2 w0 = dec_f2<T>(u[k].x), w1 = dec_f2<T>(u[k].y), w2 = dec_f2<T>(u[k].z),
                         w3 = dec_f2<T>(u[k].w);
            s += w0.x * a.x + w0.y * a.y + w1.x * a.z + w1.y * a.w;
            s += w2.x * c.x + w2.y * c.y + w3.x * c.z + w3.y * c.w;
        }
        return s;
    }
}

/* The epilogue inputs of one row that do not depend on the GEMV (LoRA B[row, lane], xa[lane]
 * for the first 32 ranks, the bias), loaded before the row's main loop so that their latency
 * hides under it instead of adding a dependent memory round trip after it. */
struct dec_pre {
    float b, xa, bias;
};
/* FIX: the matrix may read its xa in fixed point (only down_proj, a MODE_RESID GEMV: the other
 * instances skip the test and keep their registers) */
template <bool FIX> __device__ __forceinline__ float dec_xa(const dec_mat &m, int r) {
    return FIX && m.xfix ? (float)((double)m.xfix[(int64_t)r * DEC_FIX_STRIDE] * (1.0 / 4294967296.0)) : m.xa[r];
}
template <bool FIX> __device__ __forceinline__ dec_pre dec_lora_pre(const dec_mat &m, int64_t row, int lane) {
    dec_pre p = {0.0f, 0.0f, 0.0f};
    if (row < 0) return p;
    if (m.lora_B && lane < m.R) {
        p.b = __ldg(m.lora_B + row * m.R + lane);
        p.xa = dec_xa<FIX>(m, lane);
    }
    if (m.bias && lane == 0) p.bias = __ldg(m.bias + row);
    return p;
}
/* bias + scale * (B[row,:] . xa) of one row, summed by a whole warp (lane 0 has it) */
template <bool FIX>
__device__ __forceinline__ float dec_lora_bias(const dec_mat &m, int64_t row, int lane, const dec_pre &p) {
    float s = p.b * p.xa;
    if (m.lora_B)
        for (int r = lane + 32; r < m.R; r += 32) s += m.lora_B[row * m.R + r] * dec_xa<FIX>(m, r);
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

/* what a pair's two finished rows become (one thread) */
template <typename T, int MODE>
__device__ __forceinline__ void dec_epilogue(const dec_out &o, const dec_io *io, int ma, int64_t p, int64_t ra,
                                             int64_t rb, float y0, float y1) {
    if constexpr (MODE == MODE_QKV) {
        const int pos = io->pos;
        if (ma < 2) { /* rotary (half-split), the angle as the backend's k_rope computes it */
            const int64_t i = ra % o.HD;
            const float inv = 1.0f / powf(o.theta, (float)(2 * i) / (float)o.HD);
            float sn, cs;
            sincosf((float)pos * inv, &sn, &cs);
            const float lo = y0 * cs - y1 * sn, hi = y1 * cs + y0 * sn;
            y0 = lo; y1 = hi;
        }
        if (ma == 0) { o.out[ra] = y0; o.out[rb] = y1; }
        else {
            T *cache = reinterpret_cast<T *>(ma == 1 ? o.kc : o.vc) + (int64_t)pos * o.kvd;
            cache[ra] = lt_fromf<T>(y0);
            cache[rb] = lt_fromf<T>(y1);
        }
    } else if constexpr (MODE == MODE_GATEUP || MODE == MODE_GATEUP_A) {
        o.out[p] = (y0 / (1.0f + expf(-y0))) * y1;
    } else if constexpr (MODE == MODE_RESID) {
        o.out[ra] += y0;
        if (rb >= 0) o.out[rb] += y1;
    } else {
        o.out[ra] = y0;
        if (rb >= 0) o.out[rb] = y1;
    }
}

/* Pairs of rows (dec_pair), grid-stride, x (f32 [C]) read through L1. WARP = 1: one warp per
 * pair (short rows: no block barrier, every lane a few independent loads); WARP = 0: the
 * whole block per pair (long rows, few of them). */
template <int WK, typename T, int MODE, int WARP>
__global__ void __launch_bounds__(DEC_THREADS) k_dec_gemv(dec_mats M, const float *x, int64_t C, int64_t npairs,
                                                           dec_out o, const dec_io *io) {
    __shared__ float qm[3][16];
    __shared__ float red[2][DEC_WARPS];
    const int nmat = MODE == MODE_QKV ? 3 : (MODE == MODE_GATEUP || MODE == MODE_GATEUP_A) ? 2 : 1;
    if constexpr (WK == WK_NF4) {
        for (int t = 0; t < nmat; t++)
            if (threadIdx.x < 16) qm[t][threadIdx.x] = M.m[t].quant_map[threadIdx.x];
        __syncthreads();
    }
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t nchunk = C / DEC_CHUNK;
    const int64_t first = WARP ? (int64_t)blockIdx.x * DEC_WARPS + warp : (int64_t)blockIdx.x;
    const int64_t stride = WARP ? (int64_t)gridDim.x * DEC_WARPS : (int64_t)gridDim.x;
    const int64_t j0 = WARP ? lane : threadIdx.x, jstep = WARP ? 32 : DEC_THREADS;
    float dacc0 = 0.0f, dacc1 = 0.0f; /* GATEUP: this warp's share of down_proj's xa[lane], xa[lane+32] */
    for (int64_t p = first; p < npairs; p += stride) {
        int ma, mb;
        int64_t ra, rb;
        dec_pair<MODE>(M, o, p, npairs, ma, mb, ra, rb);
        const dec_mat &A = M.m[ma], &B = M.m[mb];
        dec_pre pa = {0.0f, 0.0f, 0.0f}, pb = {0.0f, 0.0f, 0.0f};
        if (WARP || warp == 0) {
            pa = dec_lora_pre<MODE == MODE_RESID>(A, ra, lane);
            pb = dec_lora_pre<MODE == MODE_RESID>(B, rb, lane);
        }
        float da0 = 0.0f, da1 = 0.0f;
        if constexpr (MODE == MODE_GATEUP_A) {
            if (WARP || warp == 0) {
                if (lane < o.aR) da0 = __ldg(o.adown + (int64_t)lane * npairs + p);
                if (lane + 32 < o.aR) da1 = __ldg(o.adown + (int64_t)(lane + 32) * npairs + p);
            }
        }
        float s0 = 0.0f, s1 = 0.0f;
        for (int64_t j = j0; j < nchunk; j += jstep) {
            s0 += dec_chunk<WK, T>(A, ra, j, x, qm[ma]);
            if (rb >= 0) s1 += dec_chunk<WK, T>(B, rb, j, x, qm[mb]);
        }
        s0 = dec_warp_sum(s0);
        s1 = dec_warp_sum(s1);
        if (!WARP) {
            if (lane == 0) { red[0][warp] = s0; red[1][warp] = s1; }
            __syncthreads();
            s0 = dec_warp_sum(lane < DEC_WARPS ? red[0][lane] : 0.0f);
            s1 = dec_warp_sum(lane < DEC_WARPS ? red[1][lane] : 0.0f);
        }
        if (WARP || warp == 0) {
            const float y0 = s0 + dec_lora_bias<MODE == MODE_RESID>(A, ra, lane, pa);
            const float y1 = rb >= 0 ? s1 + dec_lora_bias<MODE == MODE_RESID>(B, rb, lane, pb) : 0.0f;
            if (lane == 0) dec_epilogue<T, MODE>(o, io, ma, p, ra, rb, y0, y1);
            if constexpr (MODE == MODE_GATEUP_A) {
                {
                    const float hv = __shfl_sync(0xffffffffu, (y0 / (1.0f + expf(-y0))) * y1, 0);
                    dacc0 += hv * da0;
                    dacc1 += hv * da1;
                }
            }
        }
        if (!WARP) __syncthreads();
    }
    if constexpr (MODE == MODE_GATEUP_A) {
        { /* the block's warps summed in a fixed order, then one fixed-point add per rank */
            __shared__ float ared[DEC_WARPS][DEC_FIX_MAX_R];
            ared[warp][lane] = dacc0;
            ared[warp][lane + 32] = dacc1;
            __syncthreads();
            for (int r = threadIdx.x; r < o.aR; r += DEC_THREADS) {
                float v = 0.0f;
                for (int w = 0; w < (WARP ? DEC_WARPS : 1); w++) v += ared[w][r];
                const long long f = __float2ll_rn(v * DEC_FIX_ONE);
                atomicAdd(reinterpret_cast<unsigned long long *>(o.afix + (int64_t)r * DEC_FIX_STRIDE),
                          (unsigned long long)f);
            }
        }
    }
}

/* The LoRA A products of one input, with the RMSNorm in front: block (s, g) normalizes the
 * column slice s of x (the norm's sum of squares over all of x, which every block reads:
 * a few KB from L2), writes it to xn_out (blocks g = 0), and computes slice-partial dots of
 * the A rows of group g (2 rows per warp) into apart[s][row]; the last block to finish sums
 * the slices in a fixed order into xa (deterministic, no extra launch) and re-arms the counter. */
__global__ void __launch_bounds__(DEC_THREADS) k_dec_norm_a(const float *x, const float *w, float eps, float *xn_out,
                                                             dec_lora_a la, int64_t C, float *apart,
                                                             unsigned *counter) {
    __shared__ float xs[DEC_SLICE];
    __shared__ float red[DEC_WARPS];
    __shared__ int last;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
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
        la.xa[row / la.R][row % la.R] = s;
    }
    if (threadIdx.x == 0) *counter = 0u;
}

/* split-K attention of one query head over keys [0, pos]: block (h, s) takes an even share of
 * the keys, its warps an interleaved part of it (online softmax each), merged in shared
 * memory into part[h][s] = {max, sum, acc[HD]} */
template <typename T>
__global__ void __launch_bounds__(DEC_THREADS) k_dec_attn(const float *q, const T *kc, const T *vc, const dec_io *io,
                                                           int NH, int NKV, int HD, float scale, float *part) {
    __shared__ float wm[DEC_WARPS], wl[DEC_WARPS];
    __shared__ float wacc[DEC_WARPS][DEC_MAX_HD];
    const int h = blockIdx.x, s = blockIdx.y, nsplit = gridDim.y;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int64_t L = (int64_t)io->pos + 1, chunk = (L + nsplit - 1) / nsplit;
    const int64_t k0 = (int64_t)s * chunk, k1 = k0 + chunk < L ? k0 + chunk : L;
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
 * the counter: o_proj's A product needs no launch of its own. */
__global__ void __launch_bounds__(128) k_dec_attn_merge(const float *part, int nsplit, int HD, float *out,
                                                        dec_lora_a la, float *apart, unsigned *counter) {
    __shared__ float oh[DEC_MAX_HD];
    __shared__ int last;
    const int h = blockIdx.x;
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
        la.xa[0][r] = sacc;
    }
    if (threadIdx.x == 0) *counter = 0u;
}

template <typename T>
__global__ void k_dec_embed(const T *table, const dec_io *io, int64_t C, float *x) {
    const int64_t row = (int64_t)io->tok * C;
    for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < C; c += (int64_t)gridDim.x * blockDim.x)
        x[c] = lt_tof<T>(table[row + c]);
}

/* argmax (lowest index among equal maxima, as torch.argmax), then the next step's token and
 * position */
__global__ void __launch_bounds__(1024) k_dec_argmax(const float *logits, int64_t V, dec_io *io, long long *fix,
                                                     int nfix) {
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
        io->pos = io->pos + 1;
    }
}

/* ---------------------------------------------------------------- host side */
struct dec_layer {
    dec_mats qkv, o, gu, down;
    dec_lora_a a_qkv, a_o, a_gu, a_down;
    const float *ln1, *ln2;
    const float *adown;          /* down_proj's LoRA A when folded into the gate/up GEMV */
    long long *afix;
};

struct lt_cuda_decoder {
    lt_model *m;
    lt_backend *be;
    lt_cuda *c;
    int wk;
    int64_t C, NH, NKV, HD, I, V, max_len, R;
    float eps, theta, scale;
    int nsplit;
    int grid_cap;
    float *x, *xn, *q, *att, *h, *logits, *xa, *part; /* device f32 */
    float *apart;                                     /* f32 [slices, rows] LoRA A partials */
    unsigned *counter;                                /* last-block counter of k_dec_norm_a */
    long long *afix;                                  /* [L][R][DEC_FIX_STRIDE] down_proj xa, fixed point */
    int nfix;                                         /* L*R when folded, else 0 */
    dec_io *io;                                       /* device */
    dec_io *pin_in, *pin_out;                          /* pinned host */
    float *pin_logits;                                 /* pinned host [V] */
    void **kc, **vc;
    dec_layer *layers;
    dec_mats head;
    const void *embed16;
    int known;                                         /* the device io holds (dev_tok, dev_pos) */
    int32_t dev_tok, dev_pos;
    int steps;
    cudaGraph_t graph;
    cudaGraphExec_t exec;
};

static int g_use_graphs = 1;
extern "C" void lt_cuda_decoder_use_graphs(int on) { g_use_graphs = on; }

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

extern "C" void lt_cuda_decoder_free(lt_cuda_decoder *d) {
    if (!d) return;
    lt_cuda *c = d->c;
    cudaStreamSynchronize(c->stream);
    if (d->exec) cudaGraphExecDestroy(d->exec);
    if (d->graph) cudaGraphDestroy(d->graph);
    float *bufs[] = {d->x, d->xn, d->q, d->att, d->h, d->logits, d->xa, d->part, d->apart};
    lt_cuda_free(c, d->counter);
    lt_cuda_free(c, d->afix);
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) lt_cuda_free(c, bufs[i]);
    lt_cuda_free(c, d->io);
    if (d->pin_in) cudaFreeHost(d->pin_in);
    if (d->pin_logits) cudaFreeHost(d->pin_logits);
    free(d->kc);
    free(d->vc);
    free(d->layers);
    free(d);
}

extern "C" lt_status lt_cuda_decoder_create(lt_model *m, void *const *kcache, void *const *vcache, int64_t max_len,
                                            lt_cuda_decoder **out) {
    *out = NULL;
    lt_backend *be = m->be;
    if (be->device != LT_DEVICE_CUDA) return lt_error(LT_ERR_UNSUPPORTED, "fast decode: not a CUDA model");
    if (be->act_dtype != LT_DTYPE_BF16 && be->act_dtype != LT_DTYPE_F16)
        return lt_error(LT_ERR_UNSUPPORTED, "fast decode: activation dtype %d", (int)be->act_dtype);
    const lt_config *cf = &m->cfg;
    const int64_t C = cf->hidden_size, NH = cf->num_heads, NKV = cf->num_kv_heads, HD = cf->head_dim;
    if (HD % 2 || HD > DEC_MAX_HD || NKV <= 0 || NH % NKV || C % 64 || cf->intermediate_size % 64)
        return lt_error(LT_ERR_UNSUPPORTED, "fast decode: shape (hidden %lld, heads %lld/%lld, head dim %lld, "
                        "intermediate %d) outside what its kernels cover", (long long)C, (long long)NH,
                        (long long)NKV, (long long)HD, cf->intermediate_size);
    if (m->embed->quant != LT_QUANT_NONE || m->head->quant != LT_QUANT_NONE || m->head->cols % 64)
        return lt_error(LT_ERR_UNSUPPORTED, "fast decode: the embedding and LM head must be 16-bit");
    /* the kernels run the Qwen2 / Llama layer: pre-norms, SiLU, default rope, plain causal attention */
    if (cf->norm_one_plus || cf->sandwich_norm || cf->qk_norm || cf->act != LT_ACT_SILU || cf->fused_qkv ||
        cf->fused_gate_up || cf->attn_softcap > 0 || cf->final_softcap > 0 || cf->embed_scale != 1.0f ||
        cf->attn_scale != (float)(1.0 / sqrt((double)HD)) || cf->sliding_window > 0 ||
        !lt_rope_is_plain(&cf->rope, max_len))
        return lt_error(LT_ERR_UNSUPPORTED, "fast decode: the %s layer (norms, activation, rope, attention options) "
                        "is outside what its kernels cover", cf->architecture);
    lt_cuda_decoder *d = (lt_cuda_decoder *)calloc(1, sizeof *d);
    if (!d) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory");
    lt_cuda *c = lt_cuda_of(be);
    d->m = m; d->be = be; d->c = c;
    d->C = C; d->NH = NH; d->NKV = NKV; d->HD = HD; d->I = cf->intermediate_size; d->V = cf->vocab_size;
    d->max_len = max_len;
    d->eps = (float)cf->rms_norm_eps;
    d->theta = (float)cf->rope_theta;
    const int lora = m->has_lora && m->lora_enabled;
    d->R = lora ? m->lora.r : 0;
    d->scale = m->lora_scale;
    d->wk = m->layers[0].proj[0]->quant == LT_QUANT_NF4 ? WK_NF4 : WK_16;
    int64_t ns = (max_len + DEC_SPLIT_KEYS - 1) / DEC_SPLIT_KEYS;
    d->nsplit = (int)(ns < 1 ? 1 : ns > DEC_MAX_SPLIT ? DEC_MAX_SPLIT : ns);
    d->grid_cap = c->sm_count > 0 ? c->sm_count * 16 : 1024;
    d->embed16 = m->embed->data16;
    const int L = cf->num_layers;
    const int64_t R1 = d->R > 0 ? d->R : 1;
    lt_status st = LT_OK;
#define DALLOC(p, bytes, what) if (st == LT_OK) st = lt_cuda_malloc(c, (size_t)(bytes), what, (void **)&(p))
    DALLOC(d->x, C * 4, "decode residual");
    DALLOC(d->xn, C * 4, "decode norm");
    DALLOC(d->q, NH * HD * 4, "decode q");
    DALLOC(d->att, NH * HD * 4, "decode attention");
    DALLOC(d->h, d->I * 4, "decode MLP");
    DALLOC(d->logits, d->V * 4, "decode logits");
    DALLOC(d->xa, (int64_t)L * LT_PROJ_COUNT * R1 * 4, "decode LoRA");
    DALLOC(d->part, NH * d->nsplit * (HD + 2) * 4, "decode attention splits");
    DALLOC(d->io, sizeof(dec_io), "decode token");
    {
        const int64_t widest = C > d->I ? (C > NH * HD ? C : NH * HD) : (d->I > NH * HD ? d->I : NH * HD);
        int64_t nap = ((widest + DEC_SLICE - 1) / DEC_SLICE) * 3;
        if (nap < NH) nap = NH; /* the attention merge's per-head partials */
        DALLOC(d->apart, nap * R1 * 4, "decode LoRA partials");
        DALLOC(d->counter, sizeof(unsigned), "decode counter");
        DALLOC(d->afix, (int64_t)L * R1 * DEC_FIX_STRIDE * 8, "decode LoRA accumulators");
        if (st == LT_OK && cudaMemsetAsync(d->afix, 0, (size_t)L * R1 * DEC_FIX_STRIDE * 8, c->stream) != cudaSuccess)
            st = lt_error(LT_ERR_CUDA, "fast decode: clearing its LoRA accumulators");
        if (st == LT_OK && cudaMemsetAsync(d->counter, 0, sizeof(unsigned), c->stream) != cudaSuccess)
            st = lt_error(LT_ERR_CUDA, "fast decode: clearing its counter");
    }
#undef DALLOC
    if (st == LT_OK && cudaMallocHost((void **)&d->pin_in, 2 * sizeof(dec_io)) != cudaSuccess)
        st = lt_error(LT_ERR_OUT_OF_MEMORY, "fast decode: pinned host memory");
    if (st == LT_OK && cudaMallocHost((void **)&d->pin_logits, (size_t)d->V * 4) != cudaSuccess)
        st = lt_error(LT_ERR_OUT_OF_MEMORY, "fast decode: pinned host memory for %lld logits", (long long)d->V);
    if (st == LT_OK) d->pin_out = d->pin_in + 1;
    d->kc = (void **)calloc(L, sizeof(void *));
    d->vc = (void **)calloc(L, sizeof(void *));
    d->layers = (dec_layer *)calloc(L, sizeof(dec_layer));
    if (st == LT_OK && (!d->kc || !d->vc || !d->layers)) st = lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory");
    for (int l = 0; st == LT_OK && l < L; l++) {
        lt_layer *Ly = &m->layers[l];
        dec_layer *dl = &d->layers[l];
        d->kc[l] = kcache[l];
        d->vc[l] = vcache[l];
        dl->ln1 = Ly->ln1;
        dl->ln2 = Ly->ln2;
        const lt_lora_tensor *lt[LT_PROJ_COUNT];
        float *xa[LT_PROJ_COUNT];
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            lt[p] = lora && Ly->lora[p].A ? &Ly->lora[p] : NULL;
            xa[p] = d->xa + ((int64_t)l * LT_PROJ_COUNT + p) * R1;
            if (lt[p] && lt[p]->r != d->R) st = lt_error(LT_ERR_UNSUPPORTED, "fast decode: LoRA ranks differ");
        }
        for (int p = 0; st == LT_OK && p < 3; p++)
            st = dec_mat_of(d, Ly->proj[p], Ly->bias[p], lt[p], xa[p], &dl->qkv.m[p]);
        if (st == LT_OK) st = dec_mat_of(d, Ly->proj[LT_PROJ_O], NULL, lt[LT_PROJ_O], xa[LT_PROJ_O], &dl->o.m[0]);
        if (st == LT_OK)
            st = dec_mat_of(d, Ly->proj[LT_PROJ_GATE], NULL, lt[LT_PROJ_GATE], xa[LT_PROJ_GATE], &dl->gu.m[0]);
        if (st == LT_OK) st = dec_mat_of(d, Ly->proj[LT_PROJ_UP], NULL, lt[LT_PROJ_UP], xa[LT_PROJ_UP], &dl->gu.m[1]);
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
        /* LoRA A groups by shared input */
        const int groups[4][4] = {{LT_PROJ_Q, LT_PROJ_K, LT_PROJ_V, -1}, {LT_PROJ_O, -1, -1, -1},
                                  {LT_PROJ_GATE, LT_PROJ_UP, -1, -1}, {LT_PROJ_DOWN, -1, -1, -1}};
        dec_lora_a *as[4] = {&dl->a_qkv, &dl->a_o, &dl->a_gu, &dl->a_down};
        for (int g = 0; g < 4; g++) {
            as[g]->R = d->R;
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

template <int WK, typename T, int MODE>
static lt_status launch_gemv(lt_cuda_decoder *d, const dec_mats &M, const float *x, int64_t C, int64_t npairs,
                             const dec_out &o) {
    if (C <= DEC_WARP_MAX_COLS) {
        const int64_t blocks = (npairs + DEC_WARPS - 1) / DEC_WARPS;
        const unsigned grid = (unsigned)(blocks < d->grid_cap ? blocks : d->grid_cap);
        k_dec_gemv<WK, T, MODE, 1><<<grid, DEC_THREADS, 0, d->c->stream>>>(M, x, C, npairs, o, d->io);
    } else {
        const unsigned grid = (unsigned)(npairs < d->grid_cap ? npairs : d->grid_cap);
        k_dec_gemv<WK, T, MODE, 0><<<grid, DEC_THREADS, 0, d->c->stream>>>(M, x, C, npairs, o, d->io);
    }
    LT_LAUNCH_CHECK("k_dec_gemv");
    return LT_OK;
}

template <typename T, int MODE>
static lt_status gemv(lt_cuda_decoder *d, int wk, const dec_mats &M, const float *x, int64_t C, int64_t npairs,
                      const dec_out &o) {
    return wk == WK_NF4 ? launch_gemv<WK_NF4, T, MODE>(d, M, x, C, npairs, o)
                        : launch_gemv<WK_16, T, MODE>(d, M, x, C, npairs, o);
}

static lt_status norm_a(lt_cuda_decoder *d, const float *x, const float *w, float *xn, const dec_lora_a &la,
                        int64_t C) {
    const int rows = la.n * la.R;
    if (!w && rows == 0) return LT_OK;
    const dim3 grid((unsigned)((C + DEC_SLICE - 1) / DEC_SLICE), (unsigned)(rows > 0 ? (rows + DEC_AROWS - 1) / DEC_AROWS : 1));
    k_dec_norm_a<<<grid, DEC_THREADS, 0, d->c->stream>>>(x, w, d->eps, xn, la, C, d->apart, d->counter);
    LT_LAUNCH_CHECK("k_dec_norm_a");
    return LT_OK;
}

/* every kernel of one step, in stream order */
template <typename T>
static lt_status enqueue(lt_cuda_decoder *d) {
    cudaStream_t s = d->c->stream;
    const int64_t C = d->C, HD = d->HD, NH = d->NH, NKV = d->NKV, I = d->I;
    k_dec_embed<T><<<(unsigned)((C + 255) / 256), 256, 0, s>>>((const T *)d->embed16, d->io, C, d->x);
    LT_LAUNCH_CHECK("k_dec_embed");
    const dec_lora_a none = {};
    for (int64_t l = 0; l < d->m->cfg.num_layers; l++) {
        dec_layer *dl = &d->layers[l];
        dec_out o = {};
        o.HD = (int)HD; o.NH = (int)NH; o.NKV = (int)NKV; o.theta = d->theta; o.kvd = NKV * HD;
        o.kc = d->kc[l]; o.vc = d->vc[l];
        LT_TRY(norm_a(d, d->x, dl->ln1, d->xn, dl->a_qkv, C));
        o.out = d->q;
        LT_TRY((gemv<T, MODE_QKV>(d, d->wk, dl->qkv, d->xn, C, (NH + 2 * NKV) * HD / 2, o)));
        k_dec_attn<T><<<dim3((unsigned)NH, (unsigned)d->nsplit), DEC_THREADS, 0, s>>>(
            d->q, (const T *)d->kc[l], (const T *)d->vc[l], d->io, (int)NH, (int)NKV, (int)HD,
            1.0f / sqrtf((float)HD), d->part);
        LT_LAUNCH_CHECK("k_dec_attn");
        /* the merge also computes o_proj's LoRA A product (no launch of its own) */
        k_dec_attn_merge<<<(unsigned)NH, 128, 0, s>>>(d->part, d->nsplit, (int)HD, d->att, dl->a_o, d->apart,
                                                      d->counter);
        LT_LAUNCH_CHECK("k_dec_attn_merge");
        o.out = d->x;
        LT_TRY((gemv<T, MODE_RESID>(d, d->wk, dl->o, d->att, NH * HD, (C + 1) / 2, o)));
        LT_TRY(norm_a(d, d->x, dl->ln2, d->xn, dl->a_gu, C));
        o.out = d->h;
        o.adown = dl->adown; o.afix = dl->afix; o.aR = (int)d->R;
        if (dl->adown) LT_TRY((gemv<T, MODE_GATEUP_A>(d, d->wk, dl->gu, d->xn, C, I, o)));
        else LT_TRY((gemv<T, MODE_GATEUP>(d, d->wk, dl->gu, d->xn, C, I, o)));
        o.adown = NULL; o.afix = NULL; o.aR = 0;
        LT_TRY(norm_a(d, d->h, NULL, NULL, dl->a_down, I));
        o.out = d->x;
        LT_TRY((gemv<T, MODE_RESID>(d, d->wk, dl->down, d->h, I, (C + 1) / 2, o)));
    }
    LT_TRY(norm_a(d, d->x, d->m->final_norm, d->xn, none, C));
    dec_out o = {};
    o.out = d->logits;
    LT_TRY((gemv<T, MODE_LOGITS>(d, WK_16, d->head, d->xn, C, (d->V + 1) / 2, o)));
    k_dec_argmax<<<1, 1024, 0, s>>>(d->logits, d->V, d->io, d->afix, d->nfix);
    LT_LAUNCH_CHECK("k_dec_argmax");
    return LT_OK;
}

static lt_status enqueue_any(lt_cuda_decoder *d) {
    return d->be->act_dtype == LT_DTYPE_BF16 ? enqueue<__nv_bfloat16>(d) : enqueue<__half>(d);
}

extern "C" lt_status lt_cuda_decoder_step(lt_cuda_decoder *d, int32_t tok, int64_t pos, float *host_logits,
                                          int32_t *host_argmax) {
    LT_CHECK_ARG(d && pos >= 0 && pos < d->max_len, "decode step: position %lld outside the cache of %lld",
                 (long long)pos, d ? (long long)d->max_len : 0ll);
    LT_CHECK_ARG(tok >= 0 && tok < d->V, "decode step: token %d outside the vocabulary", tok);
    cudaStream_t s = d->c->stream;
    if (!(d->known && d->dev_tok == tok && d->dev_pos == pos)) {
        d->pin_in->tok = tok;
        d->pin_in->pos = (int32_t)pos;
        LT_CUDA_TRY(cudaMemcpyAsync(d->io, d->pin_in, sizeof(dec_io), cudaMemcpyHostToDevice, s));
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
    if (host_logits)
        LT_CUDA_TRY(cudaMemcpyAsync(d->pin_logits, d->logits, (size_t)d->V * 4, cudaMemcpyDeviceToHost, s));
    LT_CUDA_TRY(cudaMemcpyAsync(d->pin_out, d->io, sizeof(dec_io), cudaMemcpyDeviceToHost, s));
    LT_CUDA_TRY(cudaStreamSynchronize(s));
    if (host_logits) memcpy(host_logits, d->pin_logits, (size_t)d->V * 4);
    if (host_argmax) *host_argmax = d->pin_out->tok;
    d->known = 1;
    d->dev_tok = d->pin_out->tok;
    d->dev_pos = d->pin_out->pos;
    return LT_OK;
}

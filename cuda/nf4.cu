/* nf4.cu - frozen base weights on the GPU: NF4 quantization at load in bitsandbytes' layout
 * (blocksize 64, first element in the high nibble, absmax double-quantized with the signed
 * dynamic map in blocks of 256 around the mean), pre-quantized bnb-4bit tensors as they are,
 * 16-bit weights (quant NONE), dequantization into a 16-bit GEMM operand or f32, and the
 * embedding lookup. Bit-exact twins of lib/backend/cpu/nf4_ref.c (same decision tree,
 * reciprocal multiply, midpoint rules, no fused multiply-adds). */
#include "cuda_common.h"
#include <stdlib.h>
#include <string.h>
extern "C" {
#include "backend/nf4.h"
}
#include "backend/nf4_tree.h"

/* ---------------------------------------------------------------- kernels */
/* bnb's dQuantizeNF4 decision tree, shared with the CPU reference */
__device__ __forceinline__ uint8_t nf4_index(float x) { return lt_nf4_tree(x); }

/* bnb's dQuantize<0>: binary search over the sorted map, then the midpoint rule */
__device__ __forceinline__ uint8_t dynamic_index(const float *code, float x) {
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = -1.0f, upper = 1.0f;
    float val = code[pivot];
    for (int i = 64; i > 0; i >>= 1) {
        if (x > val) { lower_pivot = pivot; lower = val; pivot += i; }
        else { upper_pivot = pivot; upper = val; pivot -= i; }
        val = code[pivot];
    }
    if (upper_pivot == 255) upper = code[upper_pivot];
    if (lower_pivot == 0) lower = code[lower_pivot];
    if (x > val) {
        float midpoint = __fmul_rn(__fadd_rn(upper, val), 0.5f);
        return (uint8_t)(x > midpoint ? upper_pivot : pivot);
    } else {
        float midpoint = __fmul_rn(__fadd_rn(lower, val), 0.5f);
        return (uint8_t)(x < midpoint ? lower_pivot : pivot);
    }
}

template <typename S> __device__ __forceinline__ float load_f(const S *p, int64_t i);
template <> __device__ __forceinline__ float load_f<float>(const float *p, int64_t i) { return p[i]; }
template <> __device__ __forceinline__ float load_f<__nv_bfloat16>(const __nv_bfloat16 *p, int64_t i) {
    return __bfloat162float(p[i]);
}
template <> __device__ __forceinline__ float load_f<__half>(const __half *p, int64_t i) { return __half2float(p[i]); }

/* one warp per 64-block: lane l quantizes elements 2l, 2l+1 into byte l */
template <typename S>
__global__ void k_nf4_quantize(const S *x, int64_t n, uint8_t *packed, float *absmax, int64_t nblocks) {
    const int64_t b = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (b >= nblocks) return;
    const int64_t i0 = b * LT_NF4_BLOCK + 2 * lane;
    const float v0 = i0 < n ? load_f<S>(x, i0) : 0.0f;
    const float v1 = i0 + 1 < n ? load_f<S>(x, i0 + 1) : 0.0f;
    float amax = fmaxf(fabsf(v0), fabsf(v1));
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    if (lane == 0) absmax[b] = amax;
    const float inv = __fdiv_rn(1.0f, amax);
    if (i0 < n) packed[i0 / 2] = (uint8_t)(nf4_index(__fmul_rn(v0, inv)) << 4 | nf4_index(__fmul_rn(v1, inv)));
}

/* one block of 256 threads per group of 256 absmax values: quantize absmax - offset */
__global__ void k_nf4_double_quant(const float *absmax, int64_t nblocks, float offset, const float *code_g,
                                   uint8_t *absmax_u8, float *nested_absmax) {
    __shared__ float code[256];
    __shared__ float red[8];
    code[threadIdx.x] = code_g[threadIdx.x];
    const int64_t i = blockIdx.x * 256ll + threadIdx.x;
    const float v = i < nblocks ? __fsub_rn(absmax[i], offset) : 0.0f;
    float m = fabsf(v);
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = m;
    __syncthreads();
    float amax = red[0];
    for (int w = 1; w < 8; w++) amax = fmaxf(amax, red[w]);
    if (threadIdx.x == 0) nested_absmax[blockIdx.x] = amax;
    const float inv = __fdiv_rn(1.0f, amax);
    if (i < nblocks) absmax_u8[i] = dynamic_index(code, __fmul_rn(v, inv));
}

/* the absmax of 64-block b as bitsandbytes dequantizes it */
struct nf4_view {
    const uint8_t *packed;
    const float *absmax_f32;
    const uint8_t *absmax_u8;
    const float *nested_absmax;
    const float *nested_code;
    float offset;
    const float *quant_map;
};
__device__ __forceinline__ float nf4_absmax(const nf4_view &w, int64_t b) {
    if (w.absmax_f32) return w.absmax_f32[b];
    return __fadd_rn(__fmul_rn(w.nested_code[w.absmax_u8[b]], w.nested_absmax[b / LT_NF4_NESTED_BLOCK]), w.offset);
}

/* the value of extra column j of row o (lt_wext) */
__device__ __forceinline__ float wext_value(const lt_wext &e, int64_t o, int64_t j) {
    if (e.B && j >= e.offB && j < e.offB + e.R) return e.scale * e.B[o * e.R + (j - e.offB)];
    if (e.bias && j == e.offBias) return e.bias[o];
    return 0.0f;
}

/* the extra columns alone (a 16-bit weight copied into the wider rows) */
template <typename O>
__global__ void k_fill_ext(O *out, int64_t rows, int64_t ld, lt_wext e) {
    const int64_t wd = e.hi - e.lo, n = rows * wd;
    for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < n; q += (int64_t)gridDim.x * blockDim.x)
        out[(q / wd) * ld + e.lo + q % wd] = lt_fromf<O>(wext_value(e, q / wd, e.lo + q % wd));
}

/* each thread dequantizes 8 elements (4 packed bytes); with W32 (16-bit output, n % 32 == 0,
 * and cols % 32 == 0 when ld != cols) 32 elements from one 16-byte load: four times the bytes in
 * flight per thread, which the small projections (k/v: 0.4 M elements) need to approach the
 * copy bandwidth */
template <typename O, bool W32 = false>
__global__ void k_nf4_dequant(nf4_view w, int64_t n, O *out, int64_t cols, int64_t ld, int64_t off, lt_wext ext) {
    __shared__ float qmap[16];
    if (threadIdx.x < 16) qmap[threadIdx.x] = w.quant_map[threadIdx.x];
    __syncthreads();
    if constexpr (W32 && sizeof(O) == 2) {
        for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < n / 32;
             q += (int64_t)gridDim.x * blockDim.x) {
            const int64_t e0 = q * 32;
            const float am = nf4_absmax(w, e0 / LT_NF4_BLOCK); /* 32 | 64: one block's absmax */
            const uint4 raw = *reinterpret_cast<const uint4 *>(w.packed + e0 / 2);
            const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
            O *dst = out + (ld == cols ? e0 : e0 / cols * ld + off + e0 % cols);
#pragma unroll
            for (int k = 0; k < 4; k++) {
                float v[8];
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const uint32_t byte = (words[k] >> (8 * j)) & 0xFF;
                    v[2 * j] = __fmul_rn(qmap[byte >> 4], am);
                    v[2 * j + 1] = __fmul_rn(qmap[byte & 15], am);
                }
                uint4 pk;
                pk.x = lt_t16<O>::pack2(v[0], v[1]);
                pk.y = lt_t16<O>::pack2(v[2], v[3]);
                pk.z = lt_t16<O>::pack2(v[4], v[5]);
                pk.w = lt_t16<O>::pack2(v[6], v[7]);
                reinterpret_cast<uint4 *>(dst)[k] = pk;
            }
        }
    }
    const int64_t nq = W32 ? 0 : (n + 7) / 8;
    for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < nq; q += (int64_t)gridDim.x * blockDim.x) {
        const int64_t e0 = q * 8;
        const float am = nf4_absmax(w, e0 / LT_NF4_BLOCK);
        if (e0 + 8 <= n) {
            uint32_t bytes = *reinterpret_cast<const uint32_t *>(w.packed + e0 / 2);
            float v[8];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                uint32_t byte = (bytes >> (8 * j)) & 0xFF;
                v[2 * j] = __fmul_rn(qmap[byte >> 4], am);
                v[2 * j + 1] = __fmul_rn(qmap[byte & 15], am);
            }
            if constexpr (sizeof(O) == 4) {
                float4 *o4 = reinterpret_cast<float4 *>(out + e0);
                o4[0] = make_float4(v[0], v[1], v[2], v[3]);
                o4[1] = make_float4(v[4], v[5], v[6], v[7]);
            } else {
                uint4 pk;
                pk.x = lt_t16<O>::pack2(v[0], v[1]);
                pk.y = lt_t16<O>::pack2(v[2], v[3]);
                pk.z = lt_t16<O>::pack2(v[4], v[5]);
                pk.w = lt_t16<O>::pack2(v[6], v[7]);
                /* element e goes to out[(e / cols) * ld + off + e % cols] (ld == cols, off == 0:
                 * contiguous); cols % 8 == 0 whenever ld != cols, so a group stays in one row */
                *reinterpret_cast<uint4 *>(out + (ld == cols ? e0 : e0 / cols * ld + off + e0 % cols)) = pk;
            }
        } else {
            for (int64_t e = e0; e < n; e++) {
                uint8_t byte = w.packed[e / 2];
                float v = __fmul_rn(qmap[(e & 1) ? (byte & 15) : (byte >> 4)], am);
                if constexpr (sizeof(O) == 4) out[e] = v;
                else out[e] = lt_fromf<O>(v);
            }
        }
    }
    /* the extra columns of the wider rows (ext.hi > ext.lo), in the same launch */
    const int64_t wd = ext.hi - ext.lo, nf = wd > 0 ? n / cols * wd : 0;
    for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < nf; q += (int64_t)gridDim.x * blockDim.x) {
        const int64_t o = q / wd, jj = ext.lo + q % wd;
        const float v = wext_value(ext, o, jj);
        if constexpr (sizeof(O) == 4) out[o * ld + jj] = v;
        else out[o * ld + jj] = lt_fromf<O>(v);
    }
}

template <typename S, typename O>
__global__ void k_convert(const S *src, O *dst, int64_t n) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        const float v = load_f<S>(src, i);
        if constexpr (sizeof(O) == 4) dst[i] = v;
        else dst[i] = lt_fromf<O>(v);
    }
}

/* one block per token; ids outside [0, V) give zero rows (the graph checks ids on the host) */
template <typename T>
__global__ void k_embedding16(T *out, const int32_t *ids, const T *table, int64_t V, int64_t C) {
    const int32_t id = ids[blockIdx.x];
    T *o = out + blockIdx.x * C;
    const bool ok = id >= 0 && id < V;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) o[c] = ok ? table[(int64_t)id * C + c] : lt_fromf<T>(0.0f);
}
template <typename T>
__global__ void k_embedding_nf4(T *out, const int32_t *ids, nf4_view w, int64_t V, int64_t C) {
    const int32_t id = ids[blockIdx.x];
    T *o = out + blockIdx.x * C;
    const bool ok = id >= 0 && id < V;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
        float v = 0.0f;
        if (ok) {
            const int64_t e = (int64_t)id * C + c;
            const uint8_t byte = w.packed[e / 2];
            v = __fmul_rn(w.quant_map[(e & 1) ? (byte & 15) : (byte >> 4)], nf4_absmax(w, e / LT_NF4_BLOCK));
        }
        o[c] = lt_fromf<T>(v);
    }
}

/* ---------------------------------------------------------------- launchers */
static nf4_view view_of(const lt_bweight *W) {
    nf4_view v;
    v.packed = W->packed;
    v.absmax_f32 = W->double_quant ? NULL : W->absmax_f32;
    v.absmax_u8 = W->absmax_u8;
    v.nested_absmax = W->nested_absmax;
    v.nested_code = W->nested_code;
    v.offset = W->nested_offset;
    v.quant_map = W->quant_map;
    return v;
}

static size_t dtype_bytes(int dt) { return dt == LT_DTYPE_F32 ? 4 : 2; }

void lt_cuda_weight_free(lt_backend *be, lt_bweight *w) {
    if (!w) return;
    lt_cuda *c = lt_cuda_of(be);
    cudaStreamSynchronize(c->stream);
    lt_cuda_wcache_forget(c, w);
    lt_cuda_free(c, w->data16);
    lt_cuda_free(c, w->packed);
    lt_cuda_free(c, w->absmax_f32);
    lt_cuda_free(c, w->absmax_u8);
    lt_cuda_free(c, w->nested_absmax);
    lt_cuda_free(c, w->nested_code);
    lt_cuda_free(c, w->quant_map);
    free(w);
}

size_t lt_cuda_weight_bytes(const lt_bweight *w) { return w ? w->bytes : 0; }

static lt_status walloc(lt_cuda *c, lt_bweight *w, size_t bytes, const char *what, void **out) {
    LT_TRY(lt_cuda_malloc(c, bytes, what, out));
    w->bytes += bytes;
    return LT_OK;
}

static lt_status upload(lt_cuda *c, void *dst, const void *src, size_t bytes) {
    LT_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
    return LT_OK;
}

static lt_status weight_create(lt_backend *be, const lt_weight_desc *d, lt_bweight *w) {
    lt_cuda *c = lt_cuda_of(be);
    cudaStream_t s = c->stream;
    const int64_t n = d->rows * d->cols;
    const bool nf4 = d->quant == LT_QUANT_NF4;
    if (!nf4 && d->quant != LT_QUANT_NONE)
        return lt_error(LT_ERR_INVALID_ARGUMENT, "weight: quant %d is not a lt_quant", (int)d->quant);
    w->quant = d->quant;
    if (!d->host) {
        /* a pre-quantized bitsandbytes tensor */
        if (!nf4 || !d->nf4_packed || (!d->absmax_f32 && !(d->absmax_u8 && d->nested_absmax)))
            return lt_error(LT_ERR_INVALID_ARGUMENT, "weight [%lld, %lld]: neither 16/32-bit data nor a complete "
                            "bitsandbytes NF4 state (packed, absmax and, with double quant, nested_absmax)",
                            (long long)d->rows, (long long)d->cols);
        w->nblocks = (n + LT_NF4_BLOCK - 1) / LT_NF4_BLOCK;
        w->double_quant = d->absmax_f32 ? 0 : 1;
        LT_TRY(walloc(c, w, (size_t)(n + 1) / 2, "NF4 packed weights", (void **)&w->packed));
        LT_TRY(upload(c, w->packed, d->nf4_packed, (size_t)(n + 1) / 2));
        LT_TRY(walloc(c, w, 16 * sizeof(float), "the NF4 code table", (void **)&w->quant_map));
        LT_TRY(upload(c, w->quant_map, d->quant_map ? d->quant_map : lt_nf4_code, 16 * sizeof(float)));
        if (!w->double_quant) {
            LT_TRY(walloc(c, w, w->nblocks * sizeof(float), "NF4 absmax", (void **)&w->absmax_f32));
            LT_TRY(upload(c, w->absmax_f32, d->absmax_f32, w->nblocks * sizeof(float)));
        } else {
            const int64_t nn = (w->nblocks + LT_NF4_NESTED_BLOCK - 1) / LT_NF4_NESTED_BLOCK;
            float map[256];
            if (!d->nested_code) lt_dynamic_map(1, map);
            LT_TRY(walloc(c, w, w->nblocks, "NF4 absmax codes", (void **)&w->absmax_u8));
            LT_TRY(upload(c, w->absmax_u8, d->absmax_u8, w->nblocks));
            LT_TRY(walloc(c, w, nn * sizeof(float), "NF4 nested absmax", (void **)&w->nested_absmax));
            LT_TRY(upload(c, w->nested_absmax, d->nested_absmax, nn * sizeof(float)));
            LT_TRY(walloc(c, w, 256 * sizeof(float), "NF4 nested code", (void **)&w->nested_code));
            LT_TRY(upload(c, w->nested_code, d->nested_code ? d->nested_code : map, 256 * sizeof(float)));
            w->nested_offset = d->nested_offset;
        }
        /* host arrays may go away when we return */
        LT_CUDA_TRY(cudaStreamSynchronize(s));
        return LT_OK;
    }
    if (d->dtype != LT_DTYPE_F32 && d->dtype != LT_DTYPE_F16 && d->dtype != LT_DTYPE_BF16)
        return lt_error(LT_ERR_UNSUPPORTED, "weight [%lld, %lld]: dtype %d is not f32, f16 or bf16",
                        (long long)d->rows, (long long)d->cols, (int)d->dtype);
    /* the source values travel to the scratch buffer, then a kernel converts or quantizes */
    const size_t eb = dtype_bytes(d->dtype), src_bytes = (size_t)n * eb;
    const int64_t nblocks = (n + LT_NF4_BLOCK - 1) / LT_NF4_BLOCK;
    if (!nf4) {
        /* in pieces of at most 64 MiB: the scratch buffer keeps its size for the rest of the run,
         * and a vocabulary-sized table (the embedding, an untied head) would leave it far larger
         * than any training op needs */
        LT_TRY(walloc(c, w, (size_t)n * 2, "16-bit weights", &w->data16));
        const int64_t piece = (int64_t)((64u << 20) / eb);
        void *src;
        LT_TRY(lt_cuda_scratch(c, (size_t)(n < piece ? n : piece) * eb, &src));
        for (int64_t o = 0; o < n; o += piece) { /* stream order: a piece's upload waits for the last convert */
            const int64_t m = n - o < piece ? n - o : piece;
            LT_TRY(upload(c, src, (const char *)d->host + (size_t)o * eb, (size_t)m * eb));
            unsigned g = lt_blocks(m, 256);
#define CONV(S) \
            if (be->act_dtype == LT_DTYPE_BF16) k_convert<S, __nv_bfloat16><<<g, 256, 0, s>>>((const S *)src, (__nv_bfloat16 *)w->data16 + o, m); \
            else k_convert<S, __half><<<g, 256, 0, s>>>((const S *)src, (__half *)w->data16 + o, m);
            if (d->dtype == LT_DTYPE_F32) { CONV(float) }
            else if (d->dtype == LT_DTYPE_BF16) { CONV(__nv_bfloat16) }
            else { CONV(__half) }
#undef CONV
            LT_LAUNCH_CHECK("k_convert");
        }
        LT_CUDA_TRY(cudaStreamSynchronize(s));
        return LT_OK;
    }
    void *scr;
    LT_TRY(lt_cuda_scratch(c, lt_align256(src_bytes) + lt_align256(nblocks * sizeof(float)), &scr));
    char *cur = (char *)scr;
    void *src = lt_carve(&cur, src_bytes);
    float *absmax_tmp = (float *)lt_carve(&cur, nblocks * sizeof(float));
    LT_TRY(upload(c, src, d->host, src_bytes));
    w->nblocks = nblocks;
    w->double_quant = d->double_quant ? 1 : 0;
    LT_TRY(walloc(c, w, (size_t)(n + 1) / 2, "NF4 packed weights", (void **)&w->packed));
    LT_TRY(walloc(c, w, 16 * sizeof(float), "the NF4 code table", (void **)&w->quant_map));
    LT_TRY(upload(c, w->quant_map, lt_nf4_code, 16 * sizeof(float)));
    float *absmax = absmax_tmp;
    if (!w->double_quant) {
        LT_TRY(walloc(c, w, nblocks * sizeof(float), "NF4 absmax", (void **)&w->absmax_f32));
        absmax = w->absmax_f32;
    }
    {
        const int64_t threads = nblocks * 32;
        unsigned g = (unsigned)((threads + 255) / 256);
        if (d->dtype == LT_DTYPE_F32)
            k_nf4_quantize<float><<<g, 256, 0, s>>>((const float *)src, n, w->packed, absmax, nblocks);
        else if (d->dtype == LT_DTYPE_BF16)
            k_nf4_quantize<__nv_bfloat16><<<g, 256, 0, s>>>((const __nv_bfloat16 *)src, n, w->packed, absmax, nblocks);
        else
            k_nf4_quantize<__half><<<g, 256, 0, s>>>((const __half *)src, n, w->packed, absmax, nblocks);
        LT_LAUNCH_CHECK("k_nf4_quantize");
    }
    if (w->double_quant) {
        /* offset = mean(absmax) as the CPU reference takes it: f32 of a sequential f64 sum */
        float *h_absmax;
        LT_TRY(lt_cuda_host_buf(c, nblocks * sizeof(float), (void **)&h_absmax));
        LT_CUDA_TRY(cudaMemcpyAsync(h_absmax, absmax, nblocks * sizeof(float), cudaMemcpyDeviceToHost, s));
        LT_CUDA_TRY(cudaStreamSynchronize(s));
        double sum = 0;
        for (int64_t i = 0; i < nblocks; i++) sum += h_absmax[i];
        w->nested_offset = nblocks > 0 ? (float)(sum / (double)nblocks) : 0.0f;
        const int64_t nn = (nblocks + LT_NF4_NESTED_BLOCK - 1) / LT_NF4_NESTED_BLOCK;
        float map[256];
        lt_dynamic_map(1, map);
        LT_TRY(walloc(c, w, nblocks, "NF4 absmax codes", (void **)&w->absmax_u8));
        LT_TRY(walloc(c, w, nn * sizeof(float), "NF4 nested absmax", (void **)&w->nested_absmax));
        LT_TRY(walloc(c, w, 256 * sizeof(float), "NF4 nested code", (void **)&w->nested_code));
        LT_TRY(upload(c, w->nested_code, map, sizeof map));
        k_nf4_double_quant<<<(unsigned)nn, 256, 0, s>>>(absmax, nblocks, w->nested_offset, w->nested_code,
                                                        w->absmax_u8, w->nested_absmax);
        LT_LAUNCH_CHECK("k_nf4_double_quant");
    }
    LT_CUDA_TRY(cudaStreamSynchronize(s));
    return LT_OK;
}

lt_status lt_cuda_weight_create(lt_backend *be, const lt_weight_desc *d, lt_bweight **out) {
    *out = NULL;
    LT_CHECK_ARG(d && d->rows > 0 && d->cols > 0, "weight: rows and cols must be positive");
    lt_bweight *w = (lt_bweight *)calloc(1, sizeof(*w));
    if (!w) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory");
    w->rows = d->rows;
    w->cols = d->cols;
    lt_status st = weight_create(be, d, w);
    if (st != LT_OK) {
        lt_cuda_weight_free(be, w);
        return lt_error_wrap(st, "weight [%lld, %lld]", (long long)d->rows, (long long)d->cols);
    }
    *out = w;
    return LT_OK;
}

lt_status lt_cuda_weight_16(lt_backend *be, const lt_bweight *W, void *dst, const void **out) {
    if (W->quant == LT_QUANT_NONE) { *out = W->data16; return LT_OK; }
    cudaStream_t s = lt_cuda_of(be)->stream;
    const int64_t n = W->rows * W->cols;
    const bool w32 = n % 32 == 0 && ((uintptr_t)dst & 15) == 0 && ((uintptr_t)W->packed & 15) == 0;
    unsigned g = lt_blocks(w32 ? n / 32 : (n + 7) / 8, 256);
    int slot = lt_prof_begin(lt_cuda_of(be), LT_PROF_DEQUANT);
    if (be->act_dtype == LT_DTYPE_BF16 && w32)
        k_nf4_dequant<__nv_bfloat16, true><<<g, 256, 0, s>>>(view_of(W), n, (__nv_bfloat16 *)dst, W->cols, W->cols, 0,
                                                             lt_wext{});
    else if (be->act_dtype == LT_DTYPE_BF16)
        k_nf4_dequant<__nv_bfloat16><<<g, 256, 0, s>>>(view_of(W), n, (__nv_bfloat16 *)dst, W->cols, W->cols, 0, lt_wext{});
    else if (w32)
        k_nf4_dequant<__half, true><<<g, 256, 0, s>>>(view_of(W), n, (__half *)dst, W->cols, W->cols, 0, lt_wext{});
    else
        k_nf4_dequant<__half><<<g, 256, 0, s>>>(view_of(W), n, (__half *)dst, W->cols, W->cols, 0, lt_wext{});
    lt_prof_end(lt_cuda_of(be), slot);
    LT_LAUNCH_CHECK("k_nf4_dequant");
    *out = dst;
    return LT_OK;
}

/* W as the forward sees it (16-bit) into the columns [off, off + cols) of dst, whose rows are
 * ld elements apart (W->cols % 8 == 0, ld % 8 == 0, off % 8 == 0) */
lt_status lt_cuda_weight_ext(lt_backend *be, int64_t rows, void *dst, int64_t ld, const lt_wext *e) {
    lt_cuda *c = lt_cuda_of(be);
    const unsigned g = lt_blocks(rows * (e->hi - e->lo), 256);
    if (be->act_dtype == LT_DTYPE_BF16) k_fill_ext<<<g, 256, 0, c->stream>>>((__nv_bfloat16 *)dst, rows, ld, *e);
    else k_fill_ext<<<g, 256, 0, c->stream>>>((__half *)dst, rows, ld, *e);
    LT_LAUNCH_CHECK("k_fill_ext");
    return LT_OK;
}

lt_status lt_cuda_weight_16_into(lt_backend *be, const lt_bweight *W, void *dst, int64_t ld, int64_t off,
                                 const lt_wext *ext) {
    lt_cuda *c = lt_cuda_of(be);
    LT_CHECK_ARG(W->cols % 8 == 0 && ld % 8 == 0 && off % 8 == 0 && off + W->cols <= ld,
                 "weight_16_into: cols %lld, ld %lld, offset %lld", (long long)W->cols, (long long)ld, (long long)off);
    const size_t es = 2;
    const lt_wext e = ext ? *ext : lt_wext{};
    const bool bf = be->act_dtype == LT_DTYPE_BF16;
    if (W->quant == LT_QUANT_NONE) {
        LT_CUDA_TRY(cudaMemcpy2DAsync((char *)dst + (size_t)off * es, (size_t)ld * es, W->data16, (size_t)W->cols * es,
                                      (size_t)W->cols * es, (size_t)W->rows, cudaMemcpyDeviceToDevice, c->stream));
        return e.hi > e.lo ? lt_cuda_weight_ext(be, W->rows, dst, ld, &e) : LT_OK;
    }
    const int64_t n = W->rows * W->cols;
    /* 32 elements per thread where whole 32-groups stay inside a row and 16-byte aligned */
    const bool w32 = n % 32 == 0 && (ld == W->cols || W->cols % 32 == 0) && ((uintptr_t)dst & 15) == 0 &&
                     ((uintptr_t)W->packed & 15) == 0;
    const int64_t per = w32 ? 32 : 8;
    const int64_t units = (n + per - 1) / per > W->rows * (e.hi - e.lo) ? (n + per - 1) / per : W->rows * (e.hi - e.lo);
    unsigned g = lt_blocks(units, 256);
    int slot = lt_prof_begin(c, LT_PROF_DEQUANT);
    if (bf && w32)
        k_nf4_dequant<__nv_bfloat16, true><<<g, 256, 0, c->stream>>>(view_of(W), n, (__nv_bfloat16 *)dst, W->cols, ld,
                                                                     off, e);
    else if (bf)
        k_nf4_dequant<__nv_bfloat16><<<g, 256, 0, c->stream>>>(view_of(W), n, (__nv_bfloat16 *)dst, W->cols, ld, off, e);
    else if (w32)
        k_nf4_dequant<__half, true><<<g, 256, 0, c->stream>>>(view_of(W), n, (__half *)dst, W->cols, ld, off, e);
    else
        k_nf4_dequant<__half><<<g, 256, 0, c->stream>>>(view_of(W), n, (__half *)dst, W->cols, ld, off, e);
    lt_prof_end(c, slot);
    LT_LAUNCH_CHECK("k_nf4_dequant");
    return LT_OK;
}

lt_status lt_cuda_weight_dequant_f32(lt_backend *be, const lt_bweight *W, float *dev_out) {
    cudaStream_t s = lt_cuda_of(be)->stream;
    const int64_t n = W->rows * W->cols;
    if (W->quant == LT_QUANT_NONE) {
        unsigned g = lt_blocks(n, 256);
        if (be->act_dtype == LT_DTYPE_BF16)
            k_convert<__nv_bfloat16, float><<<g, 256, 0, s>>>((const __nv_bfloat16 *)W->data16, dev_out, n);
        else
            k_convert<__half, float><<<g, 256, 0, s>>>((const __half *)W->data16, dev_out, n);
        LT_LAUNCH_CHECK("k_convert");
        return LT_OK;
    }
    k_nf4_dequant<float><<<lt_blocks((n + 7) / 8, 256), 256, 0, s>>>(view_of(W), n, dev_out, W->cols, W->cols, 0, lt_wext{});
    LT_LAUNCH_CHECK("k_nf4_dequant");
    return LT_OK;
}

/* f32 [rows, cols] on the host: code * absmax exactly (the CPU reference's values), or the
 * 16-bit values of a NONE weight */
lt_status lt_cuda_weight_read(lt_backend *be, const lt_bweight *W, float *host_out) {
    lt_cuda *c = lt_cuda_of(be);
    const size_t bytes = (size_t)(W->rows * W->cols) * sizeof(float);
    void *scr;
    LT_TRY(lt_cuda_scratch(c, bytes, &scr));
    LT_TRY(lt_cuda_weight_dequant_f32(be, W, (float *)scr));
    LT_CUDA_TRY(cudaMemcpyAsync(host_out, scr, bytes, cudaMemcpyDeviceToHost, c->stream));
    LT_CUDA_TRY(cudaStreamSynchronize(c->stream));
    return LT_OK;
}

lt_status lt_cuda_embedding(lt_backend *be, void *out, const int32_t *ids, const lt_bweight *table, int64_t N,
                            int64_t C) {
    LT_CHECK_ARG(table->cols == C, "embedding: table has %lld columns, expected hidden size %lld",
                 (long long)table->cols, (long long)C);
    if (N <= 0) return LT_OK;
    cudaStream_t s = lt_cuda_of(be)->stream;
    const int th = C >= 512 ? 256 : 64;
    if (table->quant == LT_QUANT_NONE) {
        if (be->act_dtype == LT_DTYPE_BF16)
            k_embedding16<<<(unsigned)N, th, 0, s>>>((__nv_bfloat16 *)out, ids, (const __nv_bfloat16 *)table->data16,
                                                     table->rows, C);
        else
            k_embedding16<<<(unsigned)N, th, 0, s>>>((__half *)out, ids, (const __half *)table->data16, table->rows, C);
    } else {
        if (be->act_dtype == LT_DTYPE_BF16)
            k_embedding_nf4<<<(unsigned)N, th, 0, s>>>((__nv_bfloat16 *)out, ids, view_of(table), table->rows, C);
        else
            k_embedding_nf4<<<(unsigned)N, th, 0, s>>>((__half *)out, ids, view_of(table), table->rows, C);
    }
    LT_LAUNCH_CHECK("k_embedding");
    return LT_OK;
}

extern "C" lt_status lt_cuda_weight_nf4_state(lt_backend *be, const lt_bweight *W, uint8_t *packed, float *absmax_f32,
                                              uint8_t *absmax_u8, float *nested_absmax, float *offset,
                                              int *double_quant) {
    LT_CHECK_ARG(W->quant == LT_QUANT_NF4, "weight [%lld, %lld] is not NF4", (long long)W->rows, (long long)W->cols);
    lt_cuda *c = lt_cuda_of(be);
    const int64_t n = W->rows * W->cols;
    if (double_quant) *double_quant = W->double_quant;
    if (packed) LT_CUDA_TRY(cudaMemcpy(packed, W->packed, (size_t)(n + 1) / 2, cudaMemcpyDeviceToHost));
    if (!W->double_quant) {
        if (absmax_f32) LT_CUDA_TRY(cudaMemcpy(absmax_f32, W->absmax_f32, W->nblocks * 4, cudaMemcpyDeviceToHost));
    } else {
        const int64_t nn = (W->nblocks + LT_NF4_NESTED_BLOCK - 1) / LT_NF4_NESTED_BLOCK;
        if (absmax_u8) LT_CUDA_TRY(cudaMemcpy(absmax_u8, W->absmax_u8, W->nblocks, cudaMemcpyDeviceToHost));
        if (nested_absmax) LT_CUDA_TRY(cudaMemcpy(nested_absmax, W->nested_absmax, nn * 4, cudaMemcpyDeviceToHost));
        if (offset) *offset = W->nested_offset;
    }
    (void)c;
    return LT_OK;
}

extern "C" lt_status lt_cuda_weight_test_16(lt_backend *be, const lt_bweight *W, void *dst, int64_t ld, int64_t off) {
    if (ld != W->cols || off != 0) return lt_cuda_weight_16_into(be, W, dst, ld, off, NULL);
    const void *out = NULL;
    LT_TRY(lt_cuda_weight_16(be, W, dst, &out));
    if (out != dst) return lt_error(LT_ERR_INVALID_ARGUMENT, "weight_test_16: a 16-bit weight is not dequantized");
    return LT_OK;
}

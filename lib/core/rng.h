/* rng.h - the counter-based random numbers shared by the CPU and CUDA backends, so that both
 * draw the same dropout masks and initialisations for the same (seed, stream, index).
 * Philox-4x32-10 (Salmon et al. 2011) for initialisation, shuffling and sampling; a SplitMix64
 * hash for dropout masks (below). Header-only so CUDA kernels include it too. */
#ifndef LT_RNG_H
#define LT_RNG_H
#include <stdint.h>

#if defined(__CUDACC__)
#  define LT_HD __host__ __device__ __forceinline__
#else
#  define LT_HD static inline
#endif

typedef struct lt_u32x4 { uint32_t v[4]; } lt_u32x4;

LT_HD lt_u32x4 lt_philox(uint64_t key, uint64_t ctr_hi, uint64_t ctr_lo) {
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    uint32_t c0 = (uint32_t)ctr_lo, c1 = (uint32_t)(ctr_lo >> 32);
    uint32_t c2 = (uint32_t)ctr_hi, c3 = (uint32_t)(ctr_hi >> 32);
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1; c3 = (uint32_t)p0; c0 = n0; c2 = n2;
        k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
    }
    lt_u32x4 out; out.v[0] = c0; out.v[1] = c1; out.v[2] = c2; out.v[3] = c3;
    return out;
}
/* One u32 for element `index` of stream `stream` under `seed`. */
LT_HD uint32_t lt_rng_u32(uint64_t seed, uint64_t stream, uint64_t index) {
    lt_u32x4 r = lt_philox(seed, stream, index >> 2);
    return r.v[index & 3];
}
/* Uniform in [0, 1) with 24 bits. */
LT_HD float lt_rng_uniform(uint64_t seed, uint64_t stream, uint64_t index) {
    return (float)(lt_rng_u32(seed, stream, index) >> 8) * (1.0f / 16777216.0f);
}
/* ---- dropout masks ----
 * The LoRA dropout draws one number per input element in the forward pass, again in the
 * checkpoint recompute and twice in backward (~10^10 draws per step on a 1.5B model), so it
 * uses a cheaper counter-based generator than Philox-10: SplitMix64's output function (Steele
 * et al. 2014) over key + (group + 1) * golden gamma, where the key mixes (seed, stream). One
 * 64-bit draw gives the 16-bit numbers of four consecutive elements (element i: group i >> 2,
 * bits 16 * (i & 3)); element i is kept when its number is >= round(p * 65536), so the drop
 * probability is p to within 2^-17. CPU and CUDA share these functions, hence the same masks. */
LT_HD uint64_t lt_mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
LT_HD uint64_t lt_drop_key(uint64_t seed, uint64_t stream) {
    return lt_mix64(seed ^ lt_mix64(stream ^ 0x6A09E667F3BCC909ull));
}
LT_HD uint64_t lt_drop_bits(uint64_t key, uint64_t group) {
    return lt_mix64(key + (group + 1) * 0x9E3779B97F4A7C15ull);
}
LT_HD uint32_t lt_drop_threshold(float p) {
    return (uint32_t)(p * 65536.0f + 0.5f);
}
/* Row offsets: an op over rows [r0, r0 + n) of a wider (rows, width) input (graph.c's MLP token
 * chunks) draws the masks those rows have in the whole input: its element i is element
 * r0 * width + i of the whole, group r0 * width / 4 + (i >> 2), which is its own group i >> 2
 * under a key r0 * width / 4 golden gammas further on. The stream carries r0 / LT_DROP_ROW_UNIT
 * in its top bits (lt_drop_stream_rows); the ops derive their keys with lt_drop_key_rows from
 * their input width, and a stream without those bits gives lt_drop_key's key. So the rest of a
 * stream stays below bit LT_DROP_ROW_SHIFT (graph.h's streams: micro-batch bases below 2^24). */
#define LT_DROP_ROW_SHIFT 48
#define LT_DROP_ROW_UNIT 64
LT_HD uint64_t lt_drop_stream_rows(uint64_t stream, uint64_t row0) {
    return stream | ((row0 / LT_DROP_ROW_UNIT) << LT_DROP_ROW_SHIFT);
}
LT_HD uint64_t lt_drop_key_rows(uint64_t seed, uint64_t stream, uint64_t width) {
    const uint64_t units = stream >> LT_DROP_ROW_SHIFT;
    const uint64_t key = lt_drop_key(seed, stream & ((1ull << LT_DROP_ROW_SHIFT) - 1));
    return key + units * (LT_DROP_ROW_UNIT / 4) * width * 0x9E3779B97F4A7C15ull;
}
/* Dropout keep decision of element `index` for probability p of dropping (a stream without a
 * row offset). */
LT_HD int lt_rng_keep(uint64_t seed, uint64_t stream, uint64_t index, float p) {
    const uint64_t bits = lt_drop_bits(lt_drop_key(seed, stream), index >> 2);
    return (uint32_t)((bits >> (16 * (index & 3))) & 0xFFFFu) >= lt_drop_threshold(p);
}
#endif

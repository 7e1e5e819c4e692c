/* rng.h - the counter-based random numbers shared by the CPU and CUDA backends, so that both
 * draw the same dropout masks and initialisations for the same (seed, stream, index).
 * Philox-4x32-10 (Salmon et al. 2011), header-only so CUDA kernels include it too. */
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
/* Dropout keep decision for probability p of dropping. */
LT_HD int lt_rng_keep(uint64_t seed, uint64_t stream, uint64_t index, float p) {
    return lt_rng_uniform(seed, stream, index) >= p;
}
#endif

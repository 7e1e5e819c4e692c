/* knobs.h - the CUDA backend's switches for users and developers, read from the environment in
 * one place (lt_cuda_knobs_read), once, when a backend is created; the kernels and launchers read
 * them from the backend state (lt_cuda.knobs), never from the environment. Defaults are the
 * measured-fastest, tested paths (cuda/NOTES.md); a variable that is unset, empty or not a
 * number leaves its default. Switches that only selected an older kernel for A/B runs were
 * removed (cuda/NOTES.md, "Removed A/B paths").
 *
 *   LT_CUDA_PROFILE=k     GPU (event pairs) and host time per backend op, logged at destroy
 *                         (LT_LOG_INFO); k > 1 restarts the counters at the k-th LM head call,
 *                         so that `loratune bench --profile` (which sets it) leaves the warm-up
 *                         out. Turns CUDA graphs off. Default 0 (off).
 *   LT_CUDA_SYNCTIME=1|2  host time spent waiting in stream synchronizations, logged at destroy;
 *                         2 also logs every synchronization and cudaMalloc. Default 0 (off).
 *   LT_CUDA_GRAPHS=0      training passes run op by op instead of recording a fixed-shape pass
 *                         once and replaying it as a CUDA graph. Default 1 (on).
 *   LT_CUDA_GEMM_TUNE=0   cuBLASLt's first heuristic choice per GEMM shape instead of timing the
 *                         candidates on first use. Default 1 (on; deterministic mode never tunes).
 *   LT_CUDA_GEMM_ALGOS=n  candidates timed per GEMM shape, 1 to 32. Default 16.
 *   LT_CUDA_WCACHE=0      no cache of dequantized frozen weights between a layer's checkpoint
 *                         recompute and its backward (saves ~95 MB at the 1.5B shape, costs
 *                         ~1% of the step). Default 1 (on).
 *   LT_CUDA_WCACHE=2      every frozen weight dequantized once and kept for the run (one slot a
 *                         weight, never evicted; +2.6 GiB at the 1.5B shape, which
 *                         lt_estimate_memory does not count; a 16-bit base's q/k/v and gate/up are
 *                         kept as a second, wider copy): no dequantization in a pass, ~4.8 ms a
 *                         step at the 1.5B shape by the v11 trace. A weight gets a slot only while
 *                         1/16 of the card's memory stays free (else it is dequantized each use).
 *                         An experiment for the fixed cost of short passes (NOTES.md), not
 *                         measured yet. */
#ifndef LT_CUDA_KNOBS_H
#define LT_CUDA_KNOBS_H

#define LT_CUDA_GEMM_ALGOS_MAX 32     /* most candidates the GEMM tuner times per shape */
#define LT_CUDA_GEMM_ALGOS_DEFAULT 16 /* 16x512 on an H200: 8 -> 49.9k, 16 -> 50.8k, 32 -> 50.4k tok/s (noise) */

typedef struct lt_cuda_knobs {
    int profile;    /* LT_CUDA_PROFILE: 0 off, 1 on, k > 1 on from the k-th LM head call */
    int synctime;   /* LT_CUDA_SYNCTIME: 0 off, 1 totals, 2 totals and every sync / malloc */
    int graphs;     /* LT_CUDA_GRAPHS: 1 record and replay fixed-shape passes, 0 op by op */
    int gemm_tune;  /* LT_CUDA_GEMM_TUNE: 1 time cuBLASLt's candidates per shape, 0 take its first */
    int gemm_algos; /* LT_CUDA_GEMM_ALGOS: candidates timed, 1..LT_CUDA_GEMM_ALGOS_MAX */
    int wcache;     /* LT_CUDA_WCACHE: 1 cache dequantized weights (gemm.cu), 0 dequantize every use,
                     * 2 keep every weight dequantized for the run */
} lt_cuda_knobs;

/* *k = the defaults, overridden by the LT_CUDA_* variables set in the environment now */
void lt_cuda_knobs_read(lt_cuda_knobs *k);

#endif

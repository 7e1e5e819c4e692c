/* cuda_backend.cu - the CUDA backend's construction and memory: device selection, the stream,
 * cuBLAS, tracked allocations (in_use / peak, out-of-memory messages that say what to lower),
 * the scratch buffer, host transfers, and the op table; plus the public device queries
 * (lt_cuda_device_count, lt_cuda_device_info) and lt_nccl_get_unique_id. */
#include "cuda_common.h"
#include "decode.h"
#include "family.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef LT_HAVE_NCCL
#include <nccl.h>
#endif

/* ---- errors ---- */
lt_status lt_cuda_err(cudaError_t e, const char *what, const char *file, int line) {
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    if (e == cudaErrorMemoryAllocation)
        return lt_error(LT_ERR_OUT_OF_MEMORY, "%s:%d: %s: CUDA out of memory (%s); lower the batch size or "
                        "max_seq_len", base, line, what, cudaGetErrorString(e));
    return lt_error(LT_ERR_CUDA, "%s:%d: %s failed: %s (%s)", base, line, what, cudaGetErrorName(e),
                    cudaGetErrorString(e));
}

lt_status lt_cublas_err(cublasStatus_t s, const char *what, const char *file, int line) {
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    if (s == CUBLAS_STATUS_ALLOC_FAILED)
        return lt_error(LT_ERR_OUT_OF_MEMORY, "%s:%d: %s: cuBLAS could not allocate GPU memory; lower the batch "
                        "size or max_seq_len", base, line, what);
    return lt_error(LT_ERR_CUDA, "%s:%d: %s failed: %s (%s)", base, line, what, cublasGetStatusName(s),
                    cublasGetStatusString(s));
}

/* ---- tracked memory ---- */
lt_status lt_cuda_malloc(lt_cuda *c, size_t bytes, const char *what, void **out) {
    *out = NULL;
    if (bytes == 0) bytes = 1;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    c->mallocs++;
    if (c->knobs.synctime > 1) lt_log(LT_LOG_INFO, "CUDA malloc %ld: %.2f MiB for %s", c->mallocs, bytes / 1048576.0, what);
    if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError(); /* clear the sticky-free error */
        size_t free_b = 0, total_b = 0;
        cudaMemGetInfo(&free_b, &total_b);
        return lt_error(LT_ERR_OUT_OF_MEMORY,
                        "CUDA out of memory allocating %s: asked for %.1f MiB, %.1f MiB free of %.1f MiB on %s "
                        "(loratune holds %.1f MiB); lower the batch size or max_seq_len (or use NF4 "
                        "quantization / gradient checkpointing)",
                        what, bytes / 1048576.0, free_b / 1048576.0, total_b / 1048576.0, c->name,
                        c->in_use / 1048576.0);
    }
    if (e != cudaSuccess) return lt_cuda_err(e, "cudaMalloc", __FILE__, __LINE__);
    if (c->n_allocs == c->cap_allocs) {
        size_t cap = c->cap_allocs ? c->cap_allocs * 2 : 256;
        lt_cuda_alloc *a = (lt_cuda_alloc *)realloc(c->allocs, cap * sizeof(*a));
        if (!a) { cudaFree(p); return lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory tracking allocations"); }
        c->allocs = a; c->cap_allocs = cap;
    }
    c->allocs[c->n_allocs].ptr = p;
    c->allocs[c->n_allocs].bytes = bytes;
    c->n_allocs++;
    c->in_use += bytes;
    if (c->in_use > c->peak) c->peak = c->in_use;
    *out = p;
    return LT_OK;
}

void lt_cuda_free(lt_cuda *c, void *p) {
    if (!p) return;
    for (size_t i = c->n_allocs; i-- > 0;) {
        if (c->allocs[i].ptr == p) {
            c->in_use -= c->allocs[i].bytes;
            c->allocs[i] = c->allocs[c->n_allocs - 1];
            c->n_allocs--;
            break;
        }
    }
    c->mem_epoch++; /* a recorded graph may point into p */
    cudaFree(p);
}

lt_status lt_cuda_scratch(lt_cuda *c, size_t bytes, void **out) {
    if (bytes > c->scratch_bytes) {
        /* round up so that slowly growing requests do not reallocate every time */
        size_t want = bytes + bytes / 8 + (1u << 20);
        if (c->scratch) {
            LT_CUDA_TRY(cudaStreamSynchronize(c->stream));
            lt_cuda_free(c, c->scratch);
            c->scratch = NULL;
            c->scratch_bytes = 0;
        }
        LT_TRY(lt_cuda_malloc(c, want, "the CUDA backend's scratch buffer", &c->scratch));
        c->scratch_bytes = want;
    }
    *out = c->scratch;
    return LT_OK;
}

lt_status lt_cuda_host_buf(lt_cuda *c, size_t bytes, void **out) {
    if (bytes > c->host_pinned_bytes) {
        if (c->host_pinned) cudaFreeHost(c->host_pinned);
        c->host_pinned = NULL;
        c->host_pinned_bytes = 0;
        LT_CUDA_TRY(cudaMallocHost(&c->host_pinned, bytes));
        c->host_pinned_bytes = bytes;
    }
    *out = c->host_pinned;
    return LT_OK;
}

/* ---- profiling ---- */
static const char *const prof_names[64] = {
    "upload", "download", "memset0", "copy", "to_act", "from_act", "weight_create", "weight_read", "embedding",
    "rmsnorm_fwd", "rmsnorm_bwd", "linear_fwd", "linear_bwd_input", "lora_fwd", "lora_bwd", "rope_fwd", "rope_bwd",
    "attention_fwd", "attention_bwd", "swiglu_fwd", "swiglu_bwd", "add", "lm_head_ce", "lm_head_logits",
    "attention_kv", "sumsq", "scale", "adamw", "adamw8bit", "nonfinite", "alloc", "free", "sync", "linear_lora_group",
    "memset0_many", "adamw_many", "lora_xa_multi", "lora_bwd_multi", "add_lora", "linear_fwd_add",
    "  (dequant)", "  (gemm)", "  (dropout)", "  (ce rows)", "  (head gemm)", "  (rowdot)", "  (wgrad)", "  (addmul)"};

static void prof_harvest(lt_cuda *c) {
    if (!c->prof_pending) return;
    cudaEventSynchronize(c->prof_ev[2 * (c->prof_pending - 1) + 1]);
    for (int i = 0; i < c->prof_pending; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, c->prof_ev[2 * i], c->prof_ev[2 * i + 1]) == cudaSuccess) {
            c->prof_ms[c->prof_id[i]] += ms;
            c->prof_calls[c->prof_id[i]]++;
        }
    }
    c->prof_pending = 0;
}

int lt_prof_begin(lt_cuda *c, int id) {
    if (!c->knobs.profile) return -1;
    /* LT_CUDA_PROFILE=k (k > 1): counting restarts at the k-th LM head call, so that warm-up
     * steps (first-use allocations, GEMM tuning) stay out of the figures */
    if (id == 22 && c->prof_depth == 0 && ++c->prof_heads == c->knobs.profile && c->knobs.profile > 1) {
        prof_harvest(c);
        memset(c->prof_ms, 0, sizeof c->prof_ms);
        memset(c->prof_calls, 0, sizeof c->prof_calls);
        memset(c->prof_host_s, 0, sizeof c->prof_host_s);
    }
    /* harvest only between outermost ops: an open op's slot must survive until its end */
    if (c->prof_depth == 0 && c->prof_pending >= LT_PROF_PENDING - 16) prof_harvest(c);
    if (c->prof_pending == LT_PROF_PENDING) return -1;
    c->prof_depth++;
    int slot = c->prof_pending++;
    c->prof_id[slot] = id;
    cudaEventRecord(c->prof_ev[2 * slot], c->stream);
    return slot;
}

void lt_prof_end(lt_cuda *c, int slot) {
    if (slot < 0) return;
    cudaEventRecord(c->prof_ev[2 * slot + 1], c->stream);
    c->prof_depth--;
}

static void prof_report(lt_cuda *c) {
    prof_harvest(c);
    double total = 0;
    for (int i = 0; i < 40; i++) total += c->prof_ms[i];
    const long steps = c->prof_calls[22] > 0 ? c->prof_calls[22] : 1; /* LM head calls: micro-batches */
    lt_log(LT_LOG_INFO, "CUDA backend profile (GPU time between events, %.1f ms in table ops over %ld "
           "micro-batches, %.2f ms each):", total, steps, total / steps);
    for (int k = 0; k < 64; k++) {
        int best = -1;
        for (int i = 0; i < 64; i++)
            if (c->prof_calls[i] > 0 && (best < 0 || c->prof_ms[i] > c->prof_ms[best])) best = i;
        if (best < 0) break;
        lt_log(LT_LOG_INFO, "  %-18s %9.2f ms %5.1f%% %8ld calls %8.1f us/call %8.2f ms/mb  host %7.1f us/call",
               prof_names[best] ? prof_names[best] : "?", c->prof_ms[best],
               total > 0 ? 100 * c->prof_ms[best] / total : 0, c->prof_calls[best],
               1000 * c->prof_ms[best] / c->prof_calls[best], c->prof_ms[best] / steps,
               1e6 * c->prof_host_s[best] / c->prof_calls[best]);
        c->prof_calls[best] = 0;
    }
}

/* op wrappers that time each call (installed only when profiling) */
template <int ID, typename F, F *fn> struct lt_prof_op;
template <int ID, typename R, typename... A, R (*fn)(lt_backend *, A...)>
struct lt_prof_op<ID, R(lt_backend *, A...), fn> {
    static R call(lt_backend *be, A... a) {
        lt_cuda *c = lt_cuda_of(be);
        int slot = lt_prof_begin(c, ID);
        const double t0 = lt_time_s();
        R r = fn(be, a...);
        c->prof_host_s[ID] += lt_time_s() - t0;
        lt_prof_end(c, slot);
        return r;
    }
};
#define LT_PROF(ID, f) (c->knobs.profile ? lt_prof_op<ID, decltype(f), f>::call : f)

/* ---- ops: memory ---- */
static lt_status op_alloc(lt_backend *be, size_t bytes, void **out) {
    lt_cuda *c = lt_cuda_of(be);
    LT_TRY(lt_cuda_malloc(c, bytes, "a tensor", out));
    LT_CUDA_TRY(cudaMemsetAsync(*out, 0, bytes ? bytes : 1, c->stream));
    return LT_OK;
}
static void op_free(lt_backend *be, void *p) {
    lt_cuda *c = lt_cuda_of(be);
    if (!p) return;
    /* the stream may still use p: freeing waits for the device, as cudaFree does anyway */
    cudaStreamSynchronize(c->stream);
    size_t bytes = 1;
    for (size_t i = 0; i < c->n_allocs; i++)
        if (c->allocs[i].ptr == p) bytes = c->allocs[i].bytes;
    lt_cuda_w16_forget(c, p, bytes);
    lt_cuda_free(c, p);
}
cudaError_t lt_cuda_stream_sync(lt_cuda *c) {
    if (!c->knobs.synctime) return cudaStreamSynchronize(c->stream);
    const double t0 = lt_time_s();
    const cudaError_t e = cudaStreamSynchronize(c->stream);
    const double t1 = lt_time_s();
    c->sync_wait_s += t1 - t0;
    c->syncs++;
    if (c->knobs.synctime > 1 && c->sync_last_s > 0)
        lt_log(LT_LOG_INFO, "CUDA sync %ld: host busy %.2f ms since the last one, then waited %.2f ms", c->syncs,
               1e3 * (t0 - c->sync_last_s), 1e3 * (t1 - t0));
    c->sync_last_s = t1;
    return e;
}

static lt_status op_upload(lt_backend *be, void *dst, const void *src, size_t bytes) {
    lt_cuda *c = lt_cuda_of(be);
    if (!bytes) return LT_OK;
    lt_cuda_w16_invalidate(c, dst, bytes);
    LT_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
    /* the host buffer may be reused by the caller as soon as we return */
    LT_CUDA_TRY(lt_cuda_stream_sync(c));
    return LT_OK;
}
static lt_status op_download(lt_backend *be, void *dst, const void *src, size_t bytes) {
    lt_cuda *c = lt_cuda_of(be);
    if (!bytes) return LT_OK;
    LT_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    LT_CUDA_TRY(lt_cuda_stream_sync(c));
    return LT_OK;
}
static lt_status op_memset0(lt_backend *be, void *p, size_t bytes) {
    if (!bytes) return LT_OK;
    lt_cuda_w16_invalidate(lt_cuda_of(be), p, bytes);
    LT_CUDA_TRY(cudaMemsetAsync(p, 0, bytes, lt_cuda_of(be)->stream));
    return LT_OK;
}
static lt_status op_copy(lt_backend *be, void *dst, const void *src, size_t bytes) {
    if (!bytes) return LT_OK;
    lt_cuda_w16_invalidate(lt_cuda_of(be), dst, bytes);
    LT_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, lt_cuda_of(be)->stream));
    return LT_OK;
}
static lt_status op_copy2d(lt_backend *be, void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                           int64_t rows) {
    if (!width || rows <= 0) return LT_OK;
    lt_cuda_w16_invalidate(lt_cuda_of(be), dst, (size_t)(rows - 1) * dpitch + width);
    LT_CUDA_TRY(cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, (size_t)rows, cudaMemcpyDeviceToDevice,
                                  lt_cuda_of(be)->stream));
    return LT_OK;
}
/* the single-token decoder of decode.cu (it checks the model's layer description) */
static lt_status op_decoder_create(lt_backend *be, struct lt_model *m, void *const *kc, void *const *vc,
                                   int64_t max_len, void **out) {
    (void)be;
    return lt_cuda_decoder_create(m, kc, vc, max_len, (lt_cuda_decoder **)out);
}
static lt_status op_decoder_step(lt_backend *be, void *d, int32_t tok, int64_t pos, float *logits, int32_t *argmax) {
    (void)be;
    return lt_cuda_decoder_step((lt_cuda_decoder *)d, tok, pos, logits, argmax);
}
static void op_decoder_free(lt_backend *be, void *d) {
    (void)be;
    lt_cuda_decoder_free((lt_cuda_decoder *)d);
}
static lt_status op_decoder_create_batch(lt_backend *be, struct lt_model *m, int32_t nseq, void *const *kc,
                                         void *const *vc, int64_t max_len, void **out) {
    (void)be;
    return lt_cuda_decoder_create_batch(m, nseq, kc, vc, max_len, (lt_cuda_decoder **)out);
}
static lt_status op_decoder_step_batch(lt_backend *be, void *d, const int32_t *tok, const int64_t *pos,
                                       float *logits, int32_t *argmax) {
    (void)be;
    return lt_cuda_decoder_step_batch((lt_cuda_decoder *)d, tok, pos, logits, argmax);
}
static lt_status op_sync(lt_backend *be) {
    LT_CUDA_TRY(lt_cuda_stream_sync(lt_cuda_of(be)));
    return LT_OK;
}
static void op_memory(lt_backend *be, uint64_t *in_use, uint64_t *peak) {
    lt_cuda *c = lt_cuda_of(be);
    if (in_use) *in_use = c->in_use;
    if (peak) *peak = c->peak;
}

/* ---- ops: graphs of a whole pass ---- */
__global__ void k_set_drop(uint64_t *d, uint64_t seed, uint64_t sx) {
    d[0] = seed;
    d[1] = sx;
}

static lt_status op_graph_begin(lt_backend *be) {
    lt_cuda *c = lt_cuda_of(be);
    if (!c->knobs.graphs || c->knobs.profile || c->graph_capture)
        return lt_error(LT_ERR_UNSUPPORTED, "CUDA graphs are off (LT_CUDA_GRAPHS=0 or profiling)");
    if (!c->drop_dev) LT_TRY(lt_cuda_malloc(c, 2 * sizeof(uint64_t), "the graph dropout keys", (void **)&c->drop_dev));
    /* stale 16-bit LoRA copies are made now, outside the graph (a replay refreshes them itself
     * first); the weight cache starts empty, so the graph dequantizes every weight it reads
     * (resident weights stay: the graph reads them where they are, gemm.cu) */
    LT_TRY(lt_cuda_w16_refresh(be));
    if (!lt_cuda_wcache_resident(c)) lt_cuda_wcache_drop(c);
    /* relaxed: a first-use allocation (a new 16-bit copy) may happen inside; anything that
     * synchronizes makes the capture fail, and graph_end says so */
    LT_CUDA_TRY(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeRelaxed));
    c->graph_capture = 1;
    return LT_OK;
}

static lt_status op_graph_end(lt_backend *be, int ok, void **graph) {
    lt_cuda *c = lt_cuda_of(be);
    *graph = NULL;
    if (!c->graph_capture) return lt_error(LT_ERR_STATE, "CUDA graph: graph_end without graph_begin");
    c->graph_capture = 0;
    /* copies of the recording that nothing waited for: the last one (the copy stream runs them
     * in order) joins the copy stream back into the recorded stream, as capture requires */
    if (c->off_capture) cudaStreamWaitEvent(c->stream, c->off_ev_copy[c->off_tickets % LT_OFFLOAD_EVENTS], 0);
    c->off_capture = 0;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    cudaGraphExec_t x = NULL;
    if (ok && e == cudaSuccess && g) e = cudaGraphInstantiate(&x, g, 0);
    if (g) cudaGraphDestroy(g);
    if (ok && e == cudaSuccess && x) {
        lt_cuda_wcache_capture_end(c, 1);
        *graph = x;
        return LT_OK;
    }
    /* nothing ran: copies marked fresh and weights marked cached by the recording are not
     * (resident: only the slots the recording filled, gemm.cu) */
    cudaGetLastError();
    lt_cuda_w16_stale_all(c);
    lt_cuda_wcache_capture_end(c, 0);
    if (!lt_cuda_wcache_resident(c)) lt_cuda_wcache_drop(c);
    return e != cudaSuccess ? lt_cuda_err(e, "recording a CUDA graph of the pass", __FILE__, __LINE__)
                            : lt_error(LT_ERR_CUDA, "recording a CUDA graph of the pass failed");
}

static lt_status op_graph_launch(lt_backend *be, void *graph, uint64_t seed, uint64_t stream_xor) {
    lt_cuda *c = lt_cuda_of(be);
    LT_TRY(lt_cuda_w16_refresh(be));
    k_set_drop<<<1, 1, 0, c->stream>>>(c->drop_dev, seed, stream_xor);
    LT_LAUNCH_CHECK("k_set_drop");
    LT_CUDA_TRY(cudaGraphLaunch((cudaGraphExec_t)graph, c->stream));
    c->graph_launches++;
    /* the replay refills the weight cache's slots with the recorded pass's weights, which the
     * cache's record (left by op-by-op passes since the recording) does not describe: the next
     * op-by-op pass dequantizes afresh instead of reading another weight's values (resident
     * slots never change weights, so their record stays true) */
    if (!lt_cuda_wcache_resident(c)) lt_cuda_wcache_drop(c);
    return LT_OK;
}

extern "C" long lt_cuda_graph_launches(lt_backend *be) { return be ? lt_cuda_of(be)->graph_launches : 0; }

static void op_graph_free(lt_backend *be, void *graph) {
    (void)be;
    if (graph) cudaGraphExecDestroy((cudaGraphExec_t)graph);
}

static uint64_t op_graph_epoch(lt_backend *be) { return lt_cuda_of(be)->mem_epoch; }

/* ---- ops: checkpoint offload ---- */
/* the copy stream and its events, made at the first host_alloc (outside any recording) */
static lt_status offload_init(lt_cuda *c) {
    if (c->copy_stream) return LT_OK;
    c->off_ev_main = (cudaEvent_t *)calloc(2 * LT_OFFLOAD_EVENTS, sizeof(cudaEvent_t));
    if (!c->off_ev_main) return lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory");
    c->off_ev_copy = c->off_ev_main + LT_OFFLOAD_EVENTS;
    for (int i = 0; i < 2 * LT_OFFLOAD_EVENTS; i++)
        LT_CUDA_TRY(cudaEventCreateWithFlags(&c->off_ev_main[i], cudaEventDisableTiming));
    LT_CUDA_TRY(cudaStreamCreateWithFlags(&c->copy_stream, cudaStreamNonBlocking));
    return LT_OK;
}

static void offload_destroy(lt_cuda *c) {
    if (c->copy_stream) {
        cudaStreamSynchronize(c->copy_stream);
        cudaStreamDestroy(c->copy_stream);
    }
    for (int i = 0; c->off_ev_main && i < 2 * LT_OFFLOAD_EVENTS; i++)
        if (c->off_ev_main[i]) cudaEventDestroy(c->off_ev_main[i]);
    free(c->off_ev_main);
    c->copy_stream = NULL;
    c->off_ev_main = c->off_ev_copy = NULL;
}

static lt_status op_host_alloc(lt_backend *be, size_t bytes, void **out) {
    lt_cuda *c = lt_cuda_of(be);
    *out = NULL;
    LT_TRY(offload_init(c));
    cudaError_t e = cudaMallocHost(out, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        cudaGetLastError();
        *out = NULL;
        return lt_error(LT_ERR_OUT_OF_MEMORY, "cannot allocate %.1f MiB of pinned host memory for the offloaded "
                        "checkpoints (%s); lower batch_size or max_seq_len", bytes / 1048576.0,
                        cudaGetErrorString(e));
    }
    memset(*out, 0, bytes);
    return LT_OK;
}

static void op_host_free(lt_backend *be, void *p) {
    lt_cuda *c = lt_cuda_of(be);
    if (!p) return;
    if (c->copy_stream) cudaStreamSynchronize(c->copy_stream);
    cudaStreamSynchronize(c->stream);
    c->mem_epoch++; /* a recorded graph may copy to or from p */
    cudaFreeHost(p);
}

/* the copy waits for the compute stream's work queued so far (an event the copy stream waits
 * on: while recording, this forks the copy stream into the graph), then runs on the copy stream */
static lt_status op_offload_copy(lt_backend *be, void *dst, const void *src, size_t bytes, uint64_t *ticket) {
    lt_cuda *c = lt_cuda_of(be);
    *ticket = 0;
    LT_TRY(offload_init(c));
    const uint64_t t = c->off_tickets + 1;
    const int i = (int)(t % LT_OFFLOAD_EVENTS);
    LT_CUDA_TRY(cudaEventRecord(c->off_ev_main[i], c->stream));
    LT_CUDA_TRY(cudaStreamWaitEvent(c->copy_stream, c->off_ev_main[i], 0));
    if (bytes) LT_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, c->copy_stream));
    LT_CUDA_TRY(cudaEventRecord(c->off_ev_copy[i], c->copy_stream));
    c->off_tickets = t;
    if (c->graph_capture) c->off_capture = 1;
    *ticket = t;
    return LT_OK;
}

static lt_status op_offload_wait(lt_backend *be, uint64_t ticket) {
    lt_cuda *c = lt_cuda_of(be);
    if (ticket == 0) return LT_OK;
    if (ticket > c->off_tickets || !c->copy_stream)
        return lt_error(LT_ERR_STATE, "offload_wait: copy %llu was never queued", (unsigned long long)ticket);
    LT_CUDA_TRY(cudaStreamWaitEvent(c->stream, c->off_ev_copy[ticket % LT_OFFLOAD_EVENTS], 0));
    return LT_OK;
}

static void op_destroy(lt_backend *be) {
    if (!be) return;
    lt_cuda *c = lt_cuda_of(be);
    if (c) {
        cudaSetDevice(c->device);
        if (c->stream) cudaStreamSynchronize(c->stream);
        if (c->knobs.synctime)
            lt_log(LT_LOG_INFO, "CUDA backend: the host waited %.1f ms in %ld stream synchronizations; %ld cudaMalloc calls",
                   1e3 * c->sync_wait_s, c->syncs, c->mallocs);
        if (c->knobs.profile && c->prof_ev) {
            prof_report(c);
            for (int i = 0; i < 2 * LT_PROF_PENDING; i++) cudaEventDestroy(c->prof_ev[i]);
            free(c->prof_ev);
        }
        lt_cuda_gemm_tuner_free(c);
        lt_cuda_w16_free(c);
        lt_cuda_wcache_free(c);
        if (c->cublas) cublasDestroy(c->cublas);
        for (size_t i = 0; i < c->n_allocs; i++) cudaFree(c->allocs[i].ptr);
        free(c->allocs);
        if (c->host_pinned) cudaFreeHost(c->host_pinned);
        offload_destroy(c);
        if (c->stream) cudaStreamDestroy(c->stream);
        free(c);
    }
    free(be);
}

/* ---- public device queries ---- */
extern "C" int32_t lt_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) { cudaGetLastError(); return 0; }
    return n;
}

extern "C" lt_status lt_cuda_device_info(int32_t index, char *name, size_t cap, int32_t *cc, uint64_t *total,
                                         uint64_t *free_b) {
    int n = lt_cuda_device_count();
    if (n <= 0) return lt_error(LT_ERR_NO_DEVICE, "no CUDA device is visible (driver missing, or "
                                "CUDA_VISIBLE_DEVICES hides them)");
    if (index < 0 || index >= n)
        return lt_error(LT_ERR_INVALID_ARGUMENT, "CUDA device %d does not exist (%d device%s)", (int)index, n,
                        n == 1 ? "" : "s");
    cudaDeviceProp prop;
    LT_CUDA_TRY(cudaGetDeviceProperties(&prop, index));
    if (name && cap) snprintf(name, cap, "%s", prop.name);
    if (cc) *cc = prop.major * 10 + prop.minor;
    if (total || free_b) {
        int prev = 0;
        cudaGetDevice(&prev);
        LT_CUDA_TRY(cudaSetDevice(index));
        size_t f = 0, t = 0;
        cudaError_t e = cudaMemGetInfo(&f, &t);
        cudaSetDevice(prev);
        if (e != cudaSuccess) return lt_cuda_err(e, "cudaMemGetInfo", __FILE__, __LINE__);
        if (total) *total = t;
        if (free_b) *free_b = f;
    }
    return LT_OK;
}

extern "C" lt_status lt_nccl_get_unique_id(uint8_t id[LT_NCCL_ID_BYTES]) {
#ifdef LT_HAVE_NCCL
    ncclUniqueId uid;
    ncclResult_t r = ncclGetUniqueId(&uid);
    if (r != ncclSuccess) return lt_error(LT_ERR_NCCL, "ncclGetUniqueId failed: %s", ncclGetErrorString(r));
    memcpy(id, uid.internal, LT_NCCL_ID_BYTES);
    return LT_OK;
#else
    (void)id;
    return lt_error(LT_ERR_UNSUPPORTED, "this libloratune was built without NCCL (install libnccl-dev and "
                    "rebuild) so data-parallel training is not available");
#endif
}

/* ---- construction ---- */
extern "C" lt_status lt_backend_cuda_create(int device_index, int compute_dtype, lt_backend **out) {
    *out = NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        cudaGetLastError();
        return lt_error(LT_ERR_NO_DEVICE, "no usable CUDA device (%s); use --device cpu",
                        e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    }
    if (device_index < 0 || device_index >= n)
        return lt_error(LT_ERR_INVALID_ARGUMENT, "CUDA device %d does not exist (%d device%s)", device_index, n,
                        n == 1 ? "" : "s");
    LT_CUDA_TRY(cudaSetDevice(device_index));
    cudaDeviceProp prop;
    LT_CUDA_TRY(cudaGetDeviceProperties(&prop, device_index));
    int cc = prop.major * 10 + prop.minor;
    if (cc < 75)
        return lt_error(LT_ERR_UNSUPPORTED, "%s has compute capability %d.%d; loratune needs 7.5 or newer",
                        prop.name, prop.major, prop.minor);
    int act = compute_dtype;
    if (act == LT_DTYPE_AUTO) act = cc >= 80 ? LT_DTYPE_BF16 : LT_DTYPE_F16;
    if (act == LT_DTYPE_F32)
        return lt_error(LT_ERR_UNSUPPORTED, "the CUDA backend computes in bf16 or fp16, not f32; use --dtype "
                        "bf16/fp16 or --device cpu");
    if (act != LT_DTYPE_BF16 && act != LT_DTYPE_F16)
        return lt_error(LT_ERR_INVALID_ARGUMENT, "compute dtype %d is not a lt_dtype", compute_dtype);
    if (act == LT_DTYPE_BF16 && cc < 80)
        return lt_error(LT_ERR_UNSUPPORTED, "%s (compute capability %d.%d) has no bf16 arithmetic; use fp16",
                        prop.name, prop.major, prop.minor);

    lt_backend *be = (lt_backend *)calloc(1, sizeof(*be));
    lt_cuda *c = (lt_cuda *)calloc(1, sizeof(*c));
    if (!be || !c) { free(be); free(c); return lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory"); }
    be->impl = c;
    be->device = LT_DEVICE_CUDA;
    be->act_dtype = act;
    be->act_bytes = 2;
    be->n_threads = 1;
    c->device = device_index;
    c->cc = cc;
    c->sm_count = prop.multiProcessorCount;
    c->smem_optin = prop.sharedMemPerBlockOptin;
    snprintf(c->name, sizeof c->name, "%s", prop.name);
    c->act_type = act == LT_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_16F;

    lt_cuda_knobs_read(&c->knobs); /* the LT_CUDA_* switches, once (knobs.h) */
    lt_backend_ops *o = &be->ops;
    o->name = "cuda";
    o->destroy = op_destroy;
    o->alloc = op_alloc;
    o->free = op_free;
    o->upload = LT_PROF(0, op_upload);
    o->download = LT_PROF(1, op_download);
    o->memset0 = LT_PROF(2, op_memset0);
    o->copy = LT_PROF(3, op_copy);
    o->sync = op_sync;
    o->to_act = LT_PROF(4, lt_cuda_to_act);
    o->from_act = LT_PROF(5, lt_cuda_from_act);
    o->weight_create = LT_PROF(6, lt_cuda_weight_create);
    o->weight_free = lt_cuda_weight_free;
    o->weight_read = LT_PROF(7, lt_cuda_weight_read);
    o->weight_bytes = lt_cuda_weight_bytes;
    o->embedding = LT_PROF(8, lt_cuda_embedding);
    o->rmsnorm_fwd = LT_PROF(9, lt_cuda_rmsnorm_fwd);
    o->rmsnorm_bwd = LT_PROF(10, lt_cuda_rmsnorm_bwd);
    o->linear_fwd = LT_PROF(11, lt_cuda_linear_fwd);
    o->linear_bwd_input = LT_PROF(12, lt_cuda_linear_bwd_input);
    o->lora_fwd = LT_PROF(13, lt_cuda_lora_fwd);
    o->lora_bwd = LT_PROF(14, lt_cuda_lora_bwd);
    o->rope_fwd = LT_PROF(15, lt_cuda_rope_fwd);
    o->rope_bwd = LT_PROF(16, lt_cuda_rope_bwd);
    o->attention_fwd = LT_PROF(17, lt_cuda_attention_fwd);
    o->attention_bwd = LT_PROF(18, lt_cuda_attention_bwd);
    o->swiglu_fwd = LT_PROF(19, lt_cuda_swiglu_fwd);
    o->swiglu_bwd = LT_PROF(20, lt_cuda_swiglu_bwd);
    o->add = LT_PROF(21, lt_cuda_add);
    o->lm_head_ce = LT_PROF(22, lt_cuda_lm_head_ce);
    o->lm_head_logits = LT_PROF(23, lt_cuda_lm_head_logits);
    o->attention_kv = LT_PROF(24, lt_cuda_attention_kv);
    o->sumsq = LT_PROF(25, lt_cuda_sumsq);
    o->scale = LT_PROF(26, lt_cuda_scale);
    o->adamw = LT_PROF(27, lt_cuda_adamw);
    o->adamw8bit = LT_PROF(28, lt_cuda_adamw8bit);
    o->nonfinite = LT_PROF(29, lt_cuda_nonfinite);
    o->memory = op_memory;
    o->sumsq_many = lt_cuda_sumsq_many; /* elementwise.cu; one sync for all tensors */
    o->linear_lora_group_fwd = LT_PROF(33, lt_cuda_linear_lora_group_fwd); /* gemm.cu */
    o->memset0_many = LT_PROF(34, lt_cuda_memset0_many);                 /* optim.cu */
    o->adamw_many = LT_PROF(35, lt_cuda_adamw_many);
    o->lora_xa_multi = LT_PROF(36, lt_cuda_lora_xa_multi); /* gemm.cu */
    o->lora_bwd_multi = LT_PROF(37, lt_cuda_lora_bwd_multi);
    o->add_lora = LT_PROF(38, lt_cuda_add_lora);
    o->linear_fwd_add = LT_PROF(39, lt_cuda_linear_fwd_add);
    o->lora_up_add = LT_PROF(13, lt_cuda_lora_up_add); /* counted with lora_fwd */
    o->scale_many = LT_PROF(26, lt_cuda_scale_many);      /* counted with scale */
    o->nonfinite_many = LT_PROF(29, lt_cuda_nonfinite_many); /* counted with nonfinite */
    o->adamw8bit_many = LT_PROF(28, lt_cuda_adamw8bit_many); /* counted with adamw8bit */
    o->lora_bwd_swiglu = LT_PROF(14, lt_cuda_lora_bwd_swiglu); /* counted with lora_bwd */
    o->graph_begin = op_graph_begin;
    o->graph_end = op_graph_end;
    o->graph_launch = op_graph_launch;
    o->graph_free = op_graph_free;
    o->graph_epoch = op_graph_epoch;
    o->host_alloc = op_host_alloc;
    o->host_free = op_host_free;
    o->offload_copy = op_offload_copy;
    o->offload_wait = op_offload_wait;
    o->copy2d = LT_PROF(3, op_copy2d); /* counted with copy */
    o->argmax_rows = lt_cuda_argmax_rows; /* argmax.cu; evaluation only, not profiled */
    o->rope_freq_fwd = LT_PROF(15, lt_cuda_rope_freq_fwd); /* family.cu; counted with rope */
    o->rope_freq_bwd = LT_PROF(16, lt_cuda_rope_freq_bwd);
    o->glu_fwd = LT_PROF(19, lt_cuda_glu_fwd);             /* counted with swiglu */
    o->glu_bwd = LT_PROF(20, lt_cuda_glu_bwd);
    o->scale_act = lt_cuda_scale_act;
    o->attention_opt_fwd = LT_PROF(17, lt_cuda_attention_opt_fwd); /* counted with attention */
    o->attention_opt_bwd = LT_PROF(18, lt_cuda_attention_opt_bwd);
    o->attention_opt_kv = LT_PROF(24, lt_cuda_attention_opt_kv);
    o->lm_head_ce_cap = LT_PROF(22, lt_cuda_lm_head_ce_cap);         /* counted with lm_head_ce */
    o->lm_head_logits_cap = LT_PROF(23, lt_cuda_lm_head_logits_cap);
    o->decoder_create = op_decoder_create;
    o->decoder_step = op_decoder_step;
    o->decoder_free = op_decoder_free;
    o->decoder_create_batch = op_decoder_create_batch;
    o->decoder_step_batch = op_decoder_step_batch;
    lt_backend_fill_defaults(be); /* the family ops this backend has no kernels for yet */

    lt_status st = LT_OK;
    cudaError_t ce = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (ce != cudaSuccess) st = lt_cuda_err(ce, "cudaStreamCreate", __FILE__, __LINE__);
    if (st == LT_OK) {
        cublasStatus_t bs = cublasCreate(&c->cublas);
        if (bs != CUBLAS_STATUS_SUCCESS) st = lt_cublas_err(bs, "cublasCreate", __FILE__, __LINE__);
    }
    if (st == LT_OK) {
        c->cublas_ws_bytes = 32u << 20;
        st = lt_cuda_malloc(c, c->cublas_ws_bytes, "the cuBLAS workspace", &c->cublas_ws);
    }
    if (st == LT_OK) {
        cublasStatus_t bs = cublasSetStream(c->cublas, c->stream);
        if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetWorkspace(c->cublas, c->cublas_ws, c->cublas_ws_bytes);
        if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetMathMode(c->cublas, CUBLAS_DEFAULT_MATH);
        if (bs != CUBLAS_STATUS_SUCCESS) st = lt_cublas_err(bs, "cublas setup", __FILE__, __LINE__);
    }
    if (st == LT_OK && c->knobs.profile) {
        c->prof_ev = (cudaEvent_t *)calloc(2 * LT_PROF_PENDING, sizeof(cudaEvent_t));
        if (!c->prof_ev) st = lt_error(LT_ERR_OUT_OF_MEMORY, "out of host memory");
        for (int i = 0; st == LT_OK && i < 2 * LT_PROF_PENDING; i++) {
            cudaError_t ee = cudaEventCreate(&c->prof_ev[i]);
            if (ee != cudaSuccess) st = lt_cuda_err(ee, "cudaEventCreate", __FILE__, __LINE__);
        }
    }
    if (st != LT_OK) { op_destroy(be); return st; }
    *out = be;
    return LT_OK;
}

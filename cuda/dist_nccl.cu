/* dist_nccl.cu - the NCCL collective of data-parallel training (lib/dist/dist.h's lt_coll) on
 * the CUDA backend.
 *
 * The communicator is made non-blocking (ncclConfig_t.blocking = 0), so that no NCCL call can
 * wait forever: its set-up and every collective are polled (ncclCommGetAsyncError, event
 * queries) against the deadline, and one that passes it aborts the communicator
 * (ncclCommAbort) and fails with LT_ERR_NCCL naming this rank, the operation and the cause. The
 * collectives run on a communication stream of their own that waits for the backend's stream
 * (an event), the LoRA gradients in buckets of grouped ncclAllReduce calls (one launch per
 * bucket); the backend's stream then waits for them in turn. Host buffers (losses, votes) are
 * staged through a small device buffer. */
#include "cuda_common.h"
extern "C" {
#include "dist/dist.h"
}

#ifdef LT_HAVE_NCCL
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* a bucket closes after this many bytes or calls (grouped into one NCCL launch) */
#define LT_NCCL_BUCKET_BYTES (32u << 20)
#define LT_NCCL_BUCKET_CALLS 128

typedef struct nccl_coll {
    lt_cuda *c;
    ncclComm_t comm;
    cudaStream_t stream;        /* communication stream */
    cudaEvent_t ready, done;    /* backend stream -> comm stream -> backend stream */
    void *scratch;              /* device staging of host collectives */
    size_t scratch_bytes;
    int aborted;
} nccl_coll;

static lt_status nccl_fail(lt_coll *k, const char *op, const char *what, const char *why) {
    nccl_coll *n = (nccl_coll *)k->impl;
    if (!n->aborted && n->comm) {
        ncclCommAbort(n->comm);
        n->aborted = 1;
    }
    return lt_error(LT_ERR_NCCL, "rank %d of %d: %s (%s): %s; the NCCL communicator was aborted", k->rank, k->world, op,
                    what, why);
}

/* waits for the non-blocking communicator to leave ncclInProgress, until the deadline */
static lt_status nccl_settle(lt_coll *k, ncclResult_t r, double deadline, const char *op, const char *what) {
    nccl_coll *n = (nccl_coll *)k->impl;
    char why[400];
    for (;;) {
        if (r == ncclSuccess) return LT_OK;
        if (r != ncclInProgress) {
            const char *last = n->comm ? ncclGetLastError(n->comm) : "";
            snprintf(why, sizeof why, "%s%s%s", ncclGetErrorString(r), last && *last ? ": " : "", last ? last : "");
            return nccl_fail(k, op, what, why);
        }
        if (lt_time_s() > deadline) {
            snprintf(why, sizeof why, "not done within %.0f s (another rank died or hung)", k->timeout_s);
            return nccl_fail(k, op, what, why);
        }
        usleep(200);
        ncclResult_t e = ncclCommGetAsyncError(n->comm, &r);
        if (e != ncclSuccess) r = e;
    }
}

/* waits for n->done (the collectives enqueued on the comm stream), polling NCCL's errors */
static lt_status nccl_wait(lt_coll *k, double deadline, const char *op, const char *what) {
    nccl_coll *n = (nccl_coll *)k->impl;
    char why[400];
    for (;;) {
        cudaError_t q = cudaEventQuery(n->done);
        if (q == cudaSuccess) return LT_OK;
        if (q != cudaErrorNotReady) {
            snprintf(why, sizeof why, "CUDA error %s", cudaGetErrorString(q));
            return nccl_fail(k, op, what, why);
        }
        ncclResult_t r = ncclSuccess;
        ncclCommGetAsyncError(n->comm, &r);
        if (r != ncclSuccess && r != ncclInProgress) {
            const char *last = ncclGetLastError(n->comm);
            snprintf(why, sizeof why, "%s%s%s", ncclGetErrorString(r), last && *last ? ": " : "", last ? last : "");
            return nccl_fail(k, op, what, why);
        }
        if (lt_time_s() > deadline) {
            snprintf(why, sizeof why, "not done within %.0f s (another rank died, hung or left the collective)",
                     k->timeout_s);
            return nccl_fail(k, op, what, why);
        }
        usleep(100);
    }
}

static lt_status nccl_begin(lt_coll *k, const char *op, const char *what) {
    nccl_coll *n = (nccl_coll *)k->impl;
    if (n->aborted)
        return lt_error(LT_ERR_NCCL, "rank %d of %d: %s (%s): the NCCL communicator was aborted by an earlier failure",
                        k->rank, k->world, op, what);
    LT_CUDA_TRY(cudaEventRecord(n->ready, n->c->stream));
    LT_CUDA_TRY(cudaStreamWaitEvent(n->stream, n->ready, 0));
    return LT_OK;
}

static lt_status nccl_end(lt_coll *k, double deadline, const char *op, const char *what) {
    nccl_coll *n = (nccl_coll *)k->impl;
    LT_CUDA_TRY(cudaEventRecord(n->done, n->stream));
    LT_CUDA_TRY(cudaStreamWaitEvent(n->c->stream, n->done, 0));
    return nccl_wait(k, deadline, op, what);
}

static lt_status nc_allreduce_many(lt_coll *k, int count, float *const *bufs, const int64_t *len, const char *what) {
    nccl_coll *n = (nccl_coll *)k->impl;
    double deadline = lt_time_s() + k->timeout_s;
    LT_TRY(nccl_begin(k, "ncclAllReduce", what));
    int i = 0;
    while (i < count) {
        size_t bytes = 0;
        int calls = 0;
        LT_TRY(nccl_settle(k, ncclGroupStart(), deadline, "ncclGroupStart", what));
        for (; i < count && (calls == 0 || (bytes < LT_NCCL_BUCKET_BYTES && calls < LT_NCCL_BUCKET_CALLS)); i++, calls++) {
            ncclResult_t r = ncclAllReduce(bufs[i], bufs[i], (size_t)len[i], ncclFloat, ncclSum, n->comm, n->stream);
            if (r != ncclSuccess && r != ncclInProgress) {
                ncclGroupEnd();
                return nccl_settle(k, r, deadline, "ncclAllReduce", what);
            }
            bytes += (size_t)len[i] * 4;
        }
        LT_TRY(nccl_settle(k, ncclGroupEnd(), deadline, "ncclAllReduce (bucket)", what));
    }
    return nccl_end(k, deadline, "ncclAllReduce", what);
}

static lt_status stage(nccl_coll *n, size_t bytes) {
    if (n->scratch_bytes >= bytes) return LT_OK;
    if (n->scratch) cudaFree(n->scratch);
    n->scratch = NULL;
    n->scratch_bytes = 0;
    LT_CUDA_TRY(cudaMalloc(&n->scratch, bytes));
    n->scratch_bytes = bytes;
    return LT_OK;
}

static lt_status nc_allreduce_host(lt_coll *k, void *buf, int64_t count, int dtype, const char *what) {
    nccl_coll *n = (nccl_coll *)k->impl;
    double deadline = lt_time_s() + k->timeout_s;
    size_t bytes = (size_t)count * (dtype == LT_DIST_F64 ? 8 : 4);
    if (bytes == 0) return LT_OK;
    LT_TRY(stage(n, bytes));
    LT_TRY(nccl_begin(k, "ncclAllReduce", what));
    LT_CUDA_TRY(cudaMemcpyAsync(n->scratch, buf, bytes, cudaMemcpyHostToDevice, n->stream));
    LT_TRY(nccl_settle(k, ncclAllReduce(n->scratch, n->scratch, (size_t)count, dtype == LT_DIST_F64 ? ncclDouble : ncclFloat,
                                        ncclSum, n->comm, n->stream), deadline, "ncclAllReduce", what));
    LT_CUDA_TRY(cudaMemcpyAsync(buf, n->scratch, bytes, cudaMemcpyDeviceToHost, n->stream));
    return nccl_end(k, deadline, "ncclAllReduce", what);
}

static lt_status nc_broadcast_host(lt_coll *k, void *buf, size_t bytes, const char *what) {
    nccl_coll *n = (nccl_coll *)k->impl;
    double deadline = lt_time_s() + k->timeout_s;
    if (bytes == 0) return LT_OK;
    LT_TRY(stage(n, bytes));
    LT_TRY(nccl_begin(k, "ncclBroadcast", what));
    LT_CUDA_TRY(cudaMemcpyAsync(n->scratch, buf, bytes, cudaMemcpyHostToDevice, n->stream));
    LT_TRY(nccl_settle(k, ncclBroadcast(n->scratch, n->scratch, bytes, ncclUint8, 0, n->comm, n->stream), deadline,
                       "ncclBroadcast", what));
    LT_CUDA_TRY(cudaMemcpyAsync(buf, n->scratch, bytes, cudaMemcpyDeviceToHost, n->stream));
    return nccl_end(k, deadline, "ncclBroadcast", what);
}

static lt_status nc_barrier(lt_coll *k, const char *what) {
    float one = 1.0f;
    return nc_allreduce_host(k, &one, 1, LT_DIST_F32, what);
}

static void nc_abort(lt_coll *k, const char *reason) {
    nccl_coll *n = (nccl_coll *)k->impl;
    (void)reason; /* NCCL has no way to send it: the other ranks fail on their deadline */
    if (!n->aborted && n->comm) {
        ncclCommAbort(n->comm);
        n->aborted = 1;
    }
}

static void nc_destroy(lt_coll *k) {
    nccl_coll *n = (nccl_coll *)k->impl;
    if (!n) return;
    if (n->comm && !n->aborted) ncclCommDestroy(n->comm);
    if (n->scratch) cudaFree(n->scratch);
    if (n->ready) cudaEventDestroy(n->ready);
    if (n->done) cudaEventDestroy(n->done);
    if (n->stream) cudaStreamDestroy(n->stream);
    free(n);
    k->impl = NULL;
}

extern "C" lt_status lt_coll_nccl_new(lt_backend *be, const uint8_t id[LT_NCCL_ID_BYTES], int32_t rank, int32_t world,
                                      double timeout_s, lt_coll **out) {
    *out = NULL;
    if (be->device != LT_DEVICE_CUDA) return lt_error(LT_ERR_INVALID_ARGUMENT, "NCCL needs the CUDA backend");
    lt_cuda *c = (lt_cuda *)be->impl;
    lt_coll *k = (lt_coll *)lt_calloc(1, sizeof *k, "NCCL collective");
    nccl_coll *n = (nccl_coll *)lt_calloc(1, sizeof *n, "NCCL collective");
    if (!k || !n) {
        free(k);
        free(n);
        return LT_ERR_OUT_OF_MEMORY;
    }
    k->ops.allreduce_many = nc_allreduce_many;
    k->ops.allreduce_host = nc_allreduce_host;
    k->ops.broadcast_host = nc_broadcast_host;
    k->ops.barrier = nc_barrier;
    k->ops.abort = nc_abort;
    k->ops.destroy = nc_destroy;
    k->rank = rank;
    k->world = world;
    k->timeout_s = timeout_s;
    k->impl = n;
    n->c = c;
    lt_status st = LT_OK;
    cudaError_t e = cudaSetDevice(c->device);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&n->stream, cudaStreamNonBlocking);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&n->ready, cudaEventDisableTiming);
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&n->done, cudaEventDisableTiming);
    if (e != cudaSuccess) st = lt_cuda_err(e, "creating the NCCL stream and events", __FILE__, __LINE__);
    if (st == LT_OK) {
        ncclUniqueId uid;
        memcpy(uid.internal, id, sizeof uid.internal);
        char what[64];
        snprintf(what, sizeof what, "set-up of %d ranks", world);
        double deadline = lt_time_s() + timeout_s;
#if NCCL_VERSION_CODE >= 21400
        ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
        cfg.blocking = 0;
        ncclResult_t r = ncclCommInitRankConfig(&n->comm, world, uid, rank, &cfg);
        if (r == ncclSuccess) r = ncclInProgress; /* nccl_settle polls until the communicator is ready */
        st = nccl_settle(k, r, deadline, "ncclCommInitRankConfig", what);
#else
        (void)deadline;
        ncclResult_t r = ncclCommInitRank(&n->comm, world, uid, rank);
        if (r != ncclSuccess)
            st = lt_error(LT_ERR_NCCL, "rank %d of %d: ncclCommInitRank (%s): %s", rank, world, what,
                          ncclGetErrorString(r));
#endif
    }
    if (st != LT_OK) {
        lt_coll_free(k);
        return st;
    }
    *out = k;
    return LT_OK;
}

#else /* CUDA without NCCL */

extern "C" lt_status lt_coll_nccl_new(lt_backend *be, const uint8_t id[LT_NCCL_ID_BYTES], int32_t rank, int32_t world,
                                      double timeout_s, lt_coll **out) {
    (void)be; (void)id; (void)rank; (void)world; (void)timeout_s;
    *out = NULL;
    return lt_error(LT_ERR_UNSUPPORTED, "data parallel on CUDA needs NCCL: this libloratune was built without it "
                    "(install libnccl-dev and rebuild)");
}
#endif

/* comm.c - the public lt_comm (a data-parallel group: threads of one process, or processes
 * over TCP), and lt_coll, the trainer's collective endpoint, over an lt_comm. */
#include "dist/comm_impl.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

lt_status lt_comm_fail(lt_comm *c, const char *fmt, ...) {
    char msg[sizeof c->fail_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&c->mu);
    if (!c->failed) {
        c->failed = 1;
        snprintf(c->fail_msg, sizeof c->fail_msg, "%s", msg);
    }
    if (c->kind == LT_COMM_LOCAL) pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return lt_comm_failed_status(c, c->rank, NULL);
}

lt_status lt_comm_failed_status(lt_comm *c, int32_t rank, const char *what) {
    char msg[sizeof c->fail_msg];
    pthread_mutex_lock(&c->mu);
    snprintf(msg, sizeof msg, "%s", c->fail_msg);
    pthread_mutex_unlock(&c->mu);
    return lt_error(LT_ERR_NCCL, "data-parallel group failed: %s", msg);
}

int32_t lt_comm_world(const lt_comm *comm) { return comm->world; }
int32_t lt_comm_rank(const lt_comm *comm) { return comm->rank; }

/* ---- public API ---- */

LT_API void lt_comm_params_init(lt_comm_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->world_size = 1;
    p->rank = 0;
    p->master_addr = NULL;
    p->master_port = 29500;
    p->timeout_s = 30.0;
}

LT_API lt_status lt_comm_new(const lt_comm_params *params, lt_comm **out) {
    LT_CHECK_ARG(params && out, "lt_comm_new: params and out must not be NULL");
    *out = NULL;
    lt_comm_params p;
    lt_comm_params_init(&p);
    LT_CHECK_ARG(params->struct_size >= offsetof(lt_comm_params, timeout_s) + sizeof(double),
                 "lt_comm_params.struct_size is %u: call lt_comm_params_init first", params->struct_size);
    memcpy(&p, params, params->struct_size < sizeof p ? params->struct_size : sizeof p);
    LT_CHECK_ARG(p.world_size >= 1 && p.world_size <= 4096, "world_size %d must be in [1, 4096]", p.world_size);
    LT_CHECK_ARG(p.timeout_s > 0 && p.timeout_s < 1e7, "timeout_s %g must be > 0", p.timeout_s);
    if (p.master_addr) {
        LT_CHECK_ARG(p.rank >= 0 && p.rank < p.world_size, "rank %d must be in [0, world_size %d)", p.rank,
                     p.world_size);
        LT_CHECK_ARG(p.master_port > 0 && p.master_port < 65536, "master_port %d must be in [1, 65535]", p.master_port);
    }
    lt_comm *c = lt_calloc(1, sizeof *c, "comm");
    if (!c) return LT_ERR_OUT_OF_MEMORY;
    c->kind = p.master_addr ? LT_COMM_TCP : LT_COMM_LOCAL;
    c->world = p.world_size;
    c->rank = p.master_addr ? p.rank : -1;
    c->timeout_s = p.timeout_s;
    pthread_mutex_init(&c->mu, NULL);
    lt_status st;
    if (c->kind == LT_COMM_LOCAL) {
        st = lt_comm_local_init(c);
    } else {
        st = lt_comm_tcp_connect(c, p.master_addr, p.master_port);
    }
    if (st != LT_OK) {
        lt_comm_free(c);
        return st;
    }
    *out = c;
    return LT_OK;
}

LT_API void lt_comm_free(lt_comm *c) {
    if (!c) return;
    if (c->kind == LT_COMM_LOCAL) lt_comm_local_destroy(c);
    else lt_comm_tcp_destroy(c);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

LT_API lt_status lt_comm_get_info(const lt_comm *c, int32_t *world_size, int32_t *rank) {
    LT_CHECK_ARG(c, "lt_comm_get_info: comm is NULL");
    if (world_size) *world_size = c->world;
    if (rank) *rank = c->rank;
    return LT_OK;
}

static lt_status check_rank(const lt_comm *c, int32_t rank, const char *fn) {
    if (c->kind == LT_COMM_TCP && rank != c->rank)
        return lt_error(LT_ERR_INVALID_ARGUMENT, "%s: rank %d, but this process joined the group as rank %d", fn, rank,
                        c->rank);
    if (rank < 0 || rank >= c->world)
        return lt_error(LT_ERR_INVALID_ARGUMENT, "%s: rank %d must be in [0, world_size %d)", fn, rank, c->world);
    return LT_OK;
}

LT_API lt_status lt_comm_broadcast(lt_comm *c, int32_t rank, void *buf, size_t bytes) {
    LT_CHECK_ARG(c && (buf || bytes == 0), "lt_comm_broadcast: comm and buf must not be NULL");
    LT_TRY(check_rank(c, rank, "lt_comm_broadcast"));
    if (c->kind == LT_COMM_LOCAL) return lt_local_broadcast(c, rank, buf, bytes, c->timeout_s, "lt_comm_broadcast");
    return lt_tcp_broadcast(c, buf, bytes, c->timeout_s, "lt_comm_broadcast");
}

LT_API lt_status lt_comm_barrier(lt_comm *c, int32_t rank) {
    LT_CHECK_ARG(c, "lt_comm_barrier: comm is NULL");
    LT_TRY(check_rank(c, rank, "lt_comm_barrier"));
    if (c->kind == LT_COMM_LOCAL) return lt_local_wait_all(c, rank, c->timeout_s, "lt_comm_barrier");
    float none = 0;
    return lt_tcp_allreduce_host(c, &none, 0, LT_DIST_F32, c->timeout_s, "lt_comm_barrier");
}

LT_API void lt_comm_abort(lt_comm *c, int32_t rank, const char *reason) {
    if (!c) return;
    if (c->kind == LT_COMM_LOCAL) lt_local_abort(c, rank, reason);
    else lt_tcp_abort(c, reason);
}

/* ---- lt_coll over an lt_comm ---- */

static lt_status cc_allreduce_host(lt_coll *k, void *buf, int64_t count, int dtype, const char *what) {
    lt_comm *c = k->impl;
    if (c->kind == LT_COMM_LOCAL) return lt_local_allreduce_host(c, k->rank, buf, count, dtype, k->timeout_s, what);
    return lt_tcp_allreduce_host(c, buf, count, dtype, k->timeout_s, what);
}

static lt_status cc_allreduce_many(lt_coll *k, int n, float *const *bufs, const int64_t *len, const char *what) {
    lt_comm *c = k->impl;
    if (c->kind == LT_COMM_LOCAL) return lt_local_allreduce_many(c, k->rank, n, bufs, len, k->timeout_s, what);
    /* TCP: one message of every buffer end to end (host memory: this is the CPU backend) */
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += len[i];
    float *flat = lt_malloc((size_t)(total > 0 ? total : 1) * sizeof(float), "all_reduce buffer");
    if (!flat) return LT_ERR_OUT_OF_MEMORY;
    int64_t o = 0;
    for (int i = 0; i < n; o += len[i], i++) memcpy(flat + o, bufs[i], (size_t)len[i] * sizeof(float));
    lt_status st = lt_tcp_allreduce_host(c, flat, total, LT_DIST_F32, k->timeout_s, what);
    o = 0;
    for (int i = 0; st == LT_OK && i < n; o += len[i], i++) memcpy(bufs[i], flat + o, (size_t)len[i] * sizeof(float));
    free(flat);
    return st;
}

static lt_status cc_broadcast_host(lt_coll *k, void *buf, size_t bytes, const char *what) {
    lt_comm *c = k->impl;
    if (c->kind == LT_COMM_LOCAL) return lt_local_broadcast(c, k->rank, buf, bytes, k->timeout_s, what);
    return lt_tcp_broadcast(c, buf, bytes, k->timeout_s, what);
}

static lt_status cc_barrier(lt_coll *k, const char *what) {
    lt_comm *c = k->impl;
    if (c->kind == LT_COMM_LOCAL) return lt_local_wait_all(c, k->rank, k->timeout_s, what);
    float none = 0;
    return lt_tcp_allreduce_host(c, &none, 0, LT_DIST_F32, k->timeout_s, what);
}

static void cc_abort(lt_coll *k, const char *reason) { lt_comm_abort(k->impl, k->rank, reason); }

static void cc_destroy(lt_coll *k) { (void)k; /* the comm belongs to the caller */ }

lt_status lt_coll_from_comm(lt_comm *comm, int32_t rank, double timeout_s, lt_coll **out) {
    *out = NULL;
    LT_TRY(check_rank(comm, rank, "data-parallel trainer"));
    lt_coll *k = lt_calloc(1, sizeof *k, "collective");
    if (!k) return LT_ERR_OUT_OF_MEMORY;
    k->ops.allreduce_many = cc_allreduce_many;
    k->ops.allreduce_host = cc_allreduce_host;
    k->ops.broadcast_host = cc_broadcast_host;
    k->ops.barrier = cc_barrier;
    k->ops.abort = cc_abort;
    k->ops.destroy = cc_destroy;
    k->rank = rank;
    k->world = comm->world;
    k->timeout_s = timeout_s;
    k->impl = comm;
    *out = k;
    return LT_OK;
}

void lt_coll_free(lt_coll *c) {
    if (!c) return;
    if (c->ops.destroy) c->ops.destroy(c);
    free(c);
}

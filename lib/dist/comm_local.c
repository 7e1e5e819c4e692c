/* comm_local.c - the in-process collectives: the ranks are threads of one process sharing an
 * lt_comm. A collective is: every rank posts its buffers (slot[rank]) and meets the others at a
 * barrier; each rank sums its share of the elements over the ranks in rank order and writes the
 * sum into every rank's buffer (the shares are disjoint, so no element is touched by two
 * threads); a second barrier ends it. A barrier that waits past its deadline fails the group,
 * naming the ranks that did not arrive. */
#include "dist/comm_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

lt_status lt_comm_local_init(lt_comm *c) {
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) return lt_error(LT_ERR_INTERNAL, "pthread_condattr_init failed");
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) return lt_error(LT_ERR_INTERNAL, "pthread_cond_init failed");
    c->here = lt_calloc((size_t)c->world, 1, "comm arrivals");
    c->slot = lt_calloc((size_t)c->world, sizeof *c->slot, "comm slots");
    if (!c->here || !c->slot) return LT_ERR_OUT_OF_MEMORY;
    return LT_OK;
}

void lt_comm_local_destroy(lt_comm *c) {
    pthread_cond_destroy(&c->cv);
    free(c->here);
    free(c->slot);
}

lt_status lt_local_wait_all(lt_comm *c, int32_t rank, double timeout_s, const char *what) {
    pthread_mutex_lock(&c->mu);
    if (c->failed) {
        pthread_mutex_unlock(&c->mu);
        return lt_comm_failed_status(c, rank, what);
    }
    uint64_t gen = c->gen;
    c->here[rank] = 1;
    if (++c->arrived == c->world) {
        c->arrived = 0;
        memset(c->here, 0, (size_t)c->world);
        c->gen++;
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
        return LT_OK;
    }
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    double t = (double)dl.tv_sec + 1e-9 * (double)dl.tv_nsec + timeout_s;
    dl.tv_sec = (time_t)t;
    dl.tv_nsec = (long)((t - (double)dl.tv_sec) * 1e9);
    while (c->gen == gen && !c->failed) {
        int rc = pthread_cond_timedwait(&c->cv, &c->mu, &dl);
        if (rc == ETIMEDOUT && c->gen == gen && !c->failed) {
            char missing[256];
            size_t o = 0;
            missing[0] = 0;
            for (int k = 0; k < c->world && o + 16 < sizeof missing; k++)
                if (!c->here[k]) o += (size_t)snprintf(missing + o, sizeof missing - o, "%s%d", o ? ", " : "", k);
            c->failed = 1;
            snprintf(c->fail_msg, sizeof c->fail_msg,
                     "%s: rank %d waited %.0f s for rank(s) %s, which never arrived (died, hung or stopped "
                     "training); every rank stops", what, rank, timeout_s, missing);
            pthread_cond_broadcast(&c->cv);
        }
    }
    int done = c->gen != gen;
    pthread_mutex_unlock(&c->mu);
    return done ? LT_OK : lt_comm_failed_status(c, rank, what);
}

void lt_local_abort(lt_comm *c, int32_t rank, const char *reason) {
    pthread_mutex_lock(&c->mu);
    if (!c->failed) {
        c->failed = 1;
        snprintf(c->fail_msg, sizeof c->fail_msg, "rank %d aborted: %s", rank, reason ? reason : "(no reason given)");
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* the element range [lo, hi) of total that rank sums */
static void share(int64_t total, int32_t rank, int32_t world, int64_t *lo, int64_t *hi) {
    *lo = total * rank / world;
    *hi = total * (rank + 1) / world;
}

lt_status lt_local_allreduce_many(lt_comm *c, int32_t rank, int n, float *const *bufs, const int64_t *len,
                                  double timeout_s, const char *what) {
    lt_local_slot *me = &c->slot[rank];
    memset(me, 0, sizeof *me);
    me->op = LT_LOP_MANY; me->n = n; me->bufs = bufs; me->len = len;
    LT_TRY(lt_local_wait_all(c, rank, timeout_s, what));
    /* every rank checks the same posted layouts, so all of them agree on the verdict */
    int64_t total = 0;
    for (int k = 0; k < c->world; k++) {
        const lt_local_slot *s = &c->slot[k];
        int same = s->op == LT_LOP_MANY && s->n == n;
        for (int i = 0; same && i < n; i++) same = s->len[i] == len[i];
        if (!same)
            return lt_comm_fail(c, "%s: rank %d posted a different collective or gradient layout than rank %d "
                                "(%d buffers); the ranks must train the same adapter", what, k, rank, n);
    }
    for (int i = 0; i < n; i++) total += len[i];
    int64_t lo, hi, base = 0;
    share(total, rank, c->world, &lo, &hi);
    for (int i = 0; i < n && base < hi; base += len[i], i++) {
        int64_t a = lo > base ? lo - base : 0, b = hi - base < len[i] ? hi - base : len[i];
        for (int64_t e = a; e < b; e++) {
            float s = c->slot[0].bufs[i][e];
            for (int k = 1; k < c->world; k++) s += c->slot[k].bufs[i][e];
            for (int k = 0; k < c->world; k++) c->slot[k].bufs[i][e] = s;
        }
    }
    return lt_local_wait_all(c, rank, timeout_s, what);
}

lt_status lt_local_allreduce_host(lt_comm *c, int32_t rank, void *buf, int64_t count, int dtype, double timeout_s,
                                  const char *what) {
    lt_local_slot *me = &c->slot[rank];
    memset(me, 0, sizeof *me);
    me->op = LT_LOP_HOST; me->hbuf = buf; me->count = count; me->dtype = dtype;
    LT_TRY(lt_local_wait_all(c, rank, timeout_s, what));
    for (int k = 0; k < c->world; k++)
        if (c->slot[k].op != LT_LOP_HOST || c->slot[k].count != count || c->slot[k].dtype != dtype)
            return lt_comm_fail(c, "%s: rank %d posted a different collective than rank %d", what, k, rank);
    int64_t lo, hi;
    share(count, rank, c->world, &lo, &hi);
    for (int64_t e = lo; e < hi; e++) {
        if (dtype == LT_DIST_F64) {
            double s = ((double *)c->slot[0].hbuf)[e];
            for (int k = 1; k < c->world; k++) s += ((double *)c->slot[k].hbuf)[e];
            for (int k = 0; k < c->world; k++) ((double *)c->slot[k].hbuf)[e] = s;
        } else {
            float s = ((float *)c->slot[0].hbuf)[e];
            for (int k = 1; k < c->world; k++) s += ((float *)c->slot[k].hbuf)[e];
            for (int k = 0; k < c->world; k++) ((float *)c->slot[k].hbuf)[e] = s;
        }
    }
    return lt_local_wait_all(c, rank, timeout_s, what);
}

lt_status lt_local_broadcast(lt_comm *c, int32_t rank, void *buf, size_t bytes, double timeout_s, const char *what) {
    lt_local_slot *me = &c->slot[rank];
    memset(me, 0, sizeof *me);
    me->op = LT_LOP_BCAST; me->hbuf = buf; me->count = (int64_t)bytes;
    LT_TRY(lt_local_wait_all(c, rank, timeout_s, what));
    if (c->slot[0].op != LT_LOP_BCAST || c->slot[0].count != (int64_t)bytes)
        return lt_comm_fail(c, "%s: rank 0 posted a different collective than rank %d", what, rank);
    if (rank != 0) memcpy(buf, c->slot[0].hbuf, bytes);
    return lt_local_wait_all(c, rank, timeout_s, what);
}

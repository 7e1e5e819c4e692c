/* comm_impl.h - the lt_comm object shared by comm.c (public API, lt_coll over a comm),
 * comm_local.c (threads of one process) and comm_tcp.c (processes over TCP). */
#ifndef LT_COMM_IMPL_H
#define LT_COMM_IMPL_H
#include "dist/dist.h"
#include <pthread.h>

enum { LT_COMM_LOCAL = 1, LT_COMM_TCP = 2 };

/* What one rank of an in-process group posted for the collective in flight. */
typedef struct lt_local_slot {
    int op;                    /* LT_LOP_* */
    int n;                     /* allreduce_many: buffers */
    float *const *bufs;
    const int64_t *len;
    void *hbuf;                /* allreduce_host / broadcast: host buffer */
    int64_t count;             /* elements (allreduce_host) or bytes (broadcast) */
    int dtype;
} lt_local_slot;
enum { LT_LOP_MANY = 1, LT_LOP_HOST = 2, LT_LOP_BCAST = 3 };

struct lt_comm {
    int kind;                  /* LT_COMM_* */
    int32_t world;
    int32_t rank;              /* TCP: this process's rank; local: -1 */
    double timeout_s;          /* rendezvous and lt_comm_broadcast / lt_comm_barrier */
    pthread_mutex_t mu;
    int failed;                /* sticky: every collective fails with fail_msg */
    char fail_msg[768];
    /* local */
    pthread_cond_t cv;         /* CLOCK_MONOTONIC */
    uint64_t gen;              /* completed barriers */
    int arrived;
    uint8_t *here;             /* [world] arrived at the barrier in progress */
    lt_local_slot *slot;       /* [world] */
    /* tcp */
    int *fd;                   /* rank 0: [world] sockets to each rank (fd[0] = -1); others: fd[0] to rank 0 */
    uint64_t seq;              /* collectives run */
};

/* Marks the group failed with the message (the first failure wins) and returns LT_ERR_NCCL
 * carrying the group's failure message. Call with c->mu NOT held. */
lt_status lt_comm_fail(lt_comm *c, const char *fmt, ...) LT_PRINTF(2, 3);
/* LT_ERR_NCCL with the recorded failure message (the group has failed). */
lt_status lt_comm_failed_status(lt_comm *c, int32_t rank, const char *what);

lt_status lt_comm_local_init(lt_comm *c);
void lt_comm_local_destroy(lt_comm *c);
lt_status lt_local_wait_all(lt_comm *c, int32_t rank, double timeout_s, const char *what);
lt_status lt_local_allreduce_many(lt_comm *c, int32_t rank, int n, float *const *bufs, const int64_t *len,
                                  double timeout_s, const char *what);
lt_status lt_local_allreduce_host(lt_comm *c, int32_t rank, void *buf, int64_t count, int dtype, double timeout_s,
                                  const char *what);
lt_status lt_local_broadcast(lt_comm *c, int32_t rank, void *buf, size_t bytes, double timeout_s, const char *what);
void lt_local_abort(lt_comm *c, int32_t rank, const char *reason);

lt_status lt_comm_tcp_connect(lt_comm *c, const char *addr, int32_t port);
void lt_comm_tcp_destroy(lt_comm *c);
lt_status lt_tcp_allreduce_host(lt_comm *c, void *buf, int64_t count, int dtype, double timeout_s, const char *what);
lt_status lt_tcp_broadcast(lt_comm *c, void *buf, size_t bytes, double timeout_s, const char *what);
void lt_tcp_abort(lt_comm *c, const char *reason);
#endif

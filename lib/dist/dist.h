/* dist.h - the collectives of data-parallel training (internal).
 *
 * One interface, lt_coll (a rank's endpoint: all-reduce sum, broadcast, barrier, abort), with
 * three implementations:
 *   - in-process (comm_local.c): the ranks are threads of one process sharing one lt_comm; the
 *     CPU backend's reference for data parallelism, testable without GPUs;
 *   - TCP (comm_tcp.c): one process per rank, every rank connected to rank 0 on
 *     master_addr:master_port; rank 0 sums in rank order and sends the result back. It carries
 *     the CPU collectives across processes and the NCCL id's rendezvous;
 *   - NCCL (cuda/dist_nccl.cu): the CUDA backend's gradients, on the device.
 * Sums run in rank order (((r0 + r1) + r2) + ...), so the in-process and TCP collectives give
 * every rank the same bits, and the same bits as each other.
 *
 * Failure: every collective has a deadline (timeout_s). A rank that does not arrive in time,
 * whose process dies (its socket closes), or that aborts makes every other rank's collective
 * fail with LT_ERR_NCCL and a message naming the rank and the operation. The failure is sticky:
 * every later collective of the group fails at once with the same message. */
#ifndef LT_DIST_H
#define LT_DIST_H
#include "core/core.h"
#include "backend/backend.h"

enum { LT_DIST_F32 = 0, LT_DIST_F64 = 1 };

typedef struct lt_coll lt_coll;
typedef struct lt_coll_ops {
    /* Sum over the ranks into every rank's buffers: n buffers in backend memory (host memory on
     * the CPU backend) of len[i] f32 each. `what` names the operation in error messages. */
    lt_status (*allreduce_many)(lt_coll *c, int n, float *const *bufs, const int64_t *len, const char *what);
    /* Sum over the ranks of count host values (LT_DIST_F32 / LT_DIST_F64) in place. */
    lt_status (*allreduce_host)(lt_coll *c, void *buf, int64_t count, int dtype, const char *what);
    /* bytes of host memory from rank 0 to every rank. */
    lt_status (*broadcast_host)(lt_coll *c, void *buf, size_t bytes, const char *what);
    lt_status (*barrier)(lt_coll *c, const char *what);
    /* Makes every rank's current and later collectives fail with "rank R aborted: reason". */
    void (*abort)(lt_coll *c, const char *reason);
    void (*destroy)(lt_coll *c);
} lt_coll_ops;

struct lt_coll {
    lt_coll_ops ops;
    int32_t rank, world;
    double timeout_s;         /* the deadline of each collective */
    void *impl;
    int warned_idle;          /* the trainer said once that a window had fewer passes than ranks */
};

/* The endpoint of `rank` in comm (a public lt_comm: in-process or TCP). comm must outlive it. */
lt_status lt_coll_from_comm(lt_comm *comm, int32_t rank, double timeout_s, lt_coll **out);
/* A NCCL communicator for rank of world on be's device (ncclCommInitRank with id), its
 * collectives on be's stream; LT_ERR_UNSUPPORTED without NCCL (dist_nccl.cu / nccl_absent.c). */
lt_status lt_coll_nccl_new(lt_backend *be, const uint8_t id[LT_NCCL_ID_BYTES], int32_t rank, int32_t world,
                           double timeout_s, lt_coll **out);
void lt_coll_free(lt_coll *c);

/* The world size and this process's rank of comm (rank -1 for an in-process group). */
int32_t lt_comm_world(const lt_comm *comm);
int32_t lt_comm_rank(const lt_comm *comm);
#endif

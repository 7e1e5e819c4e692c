/* comm_tcp.c - collectives between processes over TCP, star-shaped around rank 0.
 *
 * Rendezvous: rank 0 listens on master_addr:master_port; every other rank connects (retrying
 * until the deadline, as rank 0 may start later), says hello (magic, rank, world size) and waits
 * for rank 0's acknowledgement, sent once every rank is there.
 * A collective: each rank sends a header (op, sequence number, bytes) and its data to rank 0;
 * rank 0 reads the ranks in order, sums in rank order (((r0 + r1) + r2) ...: the in-process
 * collective's order, so the same bits) and sends the result back. A rank whose socket closes
 * (its process died), that sends ABORT, or that is silent past the deadline makes rank 0 send
 * ABORT with the reason to every other rank; every rank then fails naming the culprit.
 * Wire format: native byte order (the ranks run on machines of one byte order). */
#include "dist/comm_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define WIRE_MAGIC 0x4C54444Du /* "LTDM" */
enum { OP_HELLO = 1, OP_SUM_F32 = 2, OP_SUM_F64 = 3, OP_BCAST = 4, OP_RESULT = 6, OP_ABORT = 7 };

typedef struct wire_hdr {
    uint32_t magic, op;
    uint64_t seq, bytes;
} wire_hdr;

/* rank 0 gives each rank this long beyond the deadline it uses itself, so that rank 0's message
 * naming the culprit arrives before the others' own timeouts fire */
#define FOLLOWER_GRACE_S 2.0

/* 0: done; -1: deadline passed; -2: the peer closed the connection or an error (errno kept) */
static int io_full(int fd, void *buf, size_t n, int writing, double deadline) {
    char *p = buf;
    while (n > 0) {
        double left = deadline - lt_time_s();
        if (left <= 0) return -1;
        struct pollfd pf = {fd, (short)(writing ? POLLOUT : POLLIN), 0};
        int ms = left > 1e6 ? 1000000000 : (int)(left * 1000.0) + 1;
        int r = poll(&pf, 1, ms);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -2;
        }
        if (r == 0) continue;
        ssize_t k = writing ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
            return -2;
        }
        if (k == 0) {
            errno = ECONNRESET;
            return -2;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static const char *io_why(int r) {
    return r == -1 ? "timed out" : errno == ECONNRESET || errno == EPIPE ? "connection closed (the process died or "
           "failed)" : strerror(errno);
}

static lt_status send_hdr(int fd, uint32_t op, uint64_t seq, uint64_t bytes, double deadline, int *io) {
    wire_hdr h = {WIRE_MAGIC, op, seq, bytes};
    *io = io_full(fd, &h, sizeof h, 1, deadline);
    return *io ? LT_ERR_NCCL : LT_OK;
}

/* ABORT with text to fd, best effort (short deadline) */
static void send_abort(int fd, const char *text) {
    if (fd < 0) return;
    size_t n = strlen(text);
    double dl = lt_time_s() + 1.0;
    int io;
    if (send_hdr(fd, OP_ABORT, 0, n, dl, &io) == LT_OK) io_full(fd, (void *)text, n, 1, dl);
}

/* reads an ABORT's text (bytes long) into out */
static void read_abort_text(int fd, uint64_t bytes, char *out, size_t cap) {
    size_t n = bytes < cap - 1 ? (size_t)bytes : cap - 1;
    if (io_full(fd, out, n, 0, lt_time_s() + 1.0) != 0) n = 0;
    out[n] = 0;
}

/* Closes a socket after our last message without a reset: a close with unread data in the
 * receive buffer sends RST, which can make the peer lose the ABORT it has not read yet. So:
 * FIN after the message, then read and drop what the peer still sends, until it closes too
 * (it does once it has read the ABORT) or a short wait passes. */
static void close_gracefully(int fd) {
    shutdown(fd, SHUT_WR);
    char sink[65536];
    double deadline = lt_time_s() + 2.0;
    while (lt_time_s() < deadline) {
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, 50) <= 0) continue;
        ssize_t k = recv(fd, sink, sizeof sink, 0);
        if (k == 0 || (k < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) break;
    }
    close(fd);
}

/* rank 0: the group failed; tell every other rank why and close every socket */
static lt_status root_fail(lt_comm *c, const char *msg) {
    pthread_mutex_lock(&c->mu);
    if (!c->failed) {
        c->failed = 1;
        snprintf(c->fail_msg, sizeof c->fail_msg, "%s", msg);
    }
    pthread_mutex_unlock(&c->mu);
    for (int k = 1; k < c->world; k++) send_abort(c->fd[k], c->fail_msg);
    for (int k = 1; k < c->world; k++) {
        if (c->fd[k] >= 0) close_gracefully(c->fd[k]);
        c->fd[k] = -1;
    }
    return lt_error(LT_ERR_NCCL, "%s", c->fail_msg);
}

/* a non-zero rank whose send or receive failed: rank 0 may have said why before closing */
static int read_pending_abort(int fd, char *text, size_t cap) {
    wire_hdr h;
    if (fd < 0 || io_full(fd, &h, sizeof h, 0, lt_time_s() + 1.0) != 0) return 0;
    if (h.magic != WIRE_MAGIC || h.op != OP_ABORT) return 0;
    read_abort_text(fd, h.bytes, text, cap);
    return 1;
}

/* a non-zero rank: the group failed; close the socket to rank 0 */
static lt_status follower_fail(lt_comm *c, const char *msg) {
    pthread_mutex_lock(&c->mu);
    if (!c->failed) {
        c->failed = 1;
        snprintf(c->fail_msg, sizeof c->fail_msg, "%s", msg);
    }
    pthread_mutex_unlock(&c->mu);
    if (c->fd && c->fd[0] >= 0) {
        close(c->fd[0]);
        c->fd[0] = -1;
    }
    return lt_error(LT_ERR_NCCL, "%s", c->fail_msg);
}

static void set_socket_opts(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int fl = fcntl(fd, F_GETFL, 0);
    if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* ---- rendezvous ---- */

static lt_status root_listen(lt_comm *c, const char *addr, int32_t port, double deadline) {
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int gr = getaddrinfo(addr, ports, &hints, &ai);
    if (gr != 0)
        return lt_error(LT_ERR_NCCL, "rank 0: cannot resolve master address %s:%d: %s", addr, port, gai_strerror(gr));
    int lfd = -1, err = 0;
    for (struct addrinfo *a = ai; a && lfd < 0; a = a->ai_next) {
        lfd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (lfd < 0) { err = errno; continue; }
        int one = 1;
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(lfd, a->ai_addr, a->ai_addrlen) != 0 || listen(lfd, c->world) != 0) {
            err = errno;
            close(lfd);
            lfd = -1;
        }
    }
    freeaddrinfo(ai);
    if (lfd < 0)
        return lt_error(LT_ERR_NCCL, "rank 0: cannot listen on %s:%d (MASTER_ADDR:MASTER_PORT): %s", addr, port,
                        strerror(err));
    lt_status st = LT_OK;
    int joined = 1;
    while (joined < c->world && st == LT_OK) {
        double left = deadline - lt_time_s();
        if (left <= 0) {
            char missing[256];
            size_t o = 0;
            missing[0] = 0;
            for (int k = 1; k < c->world && o + 16 < sizeof missing; k++)
                if (c->fd[k] < 0) o += (size_t)snprintf(missing + o, sizeof missing - o, "%s%d", o ? ", " : "", k);
            st = lt_error(LT_ERR_NCCL, "rendezvous on %s:%d: rank(s) %s did not connect within %.0f s", addr, port,
                          missing, c->timeout_s);
            break;
        }
        struct pollfd pf = {lfd, POLLIN, 0};
        int r = poll(&pf, 1, (int)(left * 1000.0) + 1);
        if (r <= 0) continue;
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) continue;
        set_socket_opts(fd);
        wire_hdr h;
        int io = io_full(fd, &h, sizeof h, 0, lt_time_s() + 5.0);
        if (io != 0 || h.magic != WIRE_MAGIC || h.op != OP_HELLO) {
            close(fd); /* not one of ours (a port scan, a stale client) */
            continue;
        }
        int64_t rk = (int64_t)h.seq, ws = (int64_t)h.bytes;
        if (ws != c->world || rk < 1 || rk >= c->world || c->fd[rk] >= 0) {
            st = lt_error(LT_ERR_NCCL, "rendezvous on %s:%d: a process joined as rank %lld of world size %lld, but "
                          "this group has world size %d%s", addr, port, (long long)rk, (long long)ws, c->world,
                          rk >= 1 && rk < c->world && c->fd[rk] >= 0 ? " and that rank is already taken" : "");
            send_abort(fd, lt_last_error());
            close(fd);
            break;
        }
        c->fd[rk] = fd;
        joined++;
    }
    close(lfd);
    for (int k = 1; k < c->world && st == LT_OK; k++) {
        int io;
        if (send_hdr(c->fd[k], OP_RESULT, 0, 0, deadline + FOLLOWER_GRACE_S, &io) != LT_OK)
            st = lt_error(LT_ERR_NCCL, "rendezvous: acknowledging rank %d: %s", k, io_why(io));
    }
    if (st != LT_OK) {
        for (int k = 1; k < c->world; k++) {
            send_abort(c->fd[k], lt_last_error());
            if (c->fd[k] >= 0) close(c->fd[k]);
            c->fd[k] = -1;
        }
    }
    return st;
}

static lt_status follower_connect(lt_comm *c, const char *addr, int32_t port, double deadline) {
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    const char *last = "no attempt";
    char lastbuf[256];
    while (lt_time_s() < deadline) {
        struct addrinfo hints, *ai = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        int gr = getaddrinfo(addr, ports, &hints, &ai);
        if (gr != 0) {
            snprintf(lastbuf, sizeof lastbuf, "%s", gai_strerror(gr));
            last = lastbuf;
        }
        for (struct addrinfo *a = gr == 0 ? ai : NULL; a; a = a->ai_next) {
            int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
            if (fd < 0) continue;
            if (connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
                snprintf(lastbuf, sizeof lastbuf, "%s", strerror(errno));
                last = lastbuf;
                close(fd);
                continue;
            }
            set_socket_opts(fd);
            c->fd[0] = fd;
            break;
        }
        if (ai) freeaddrinfo(ai);
        if (c->fd[0] >= 0) break;
        usleep(100 * 1000);
    }
    if (c->fd[0] < 0)
        return lt_error(LT_ERR_NCCL, "rank %d: cannot reach rank 0 at %s:%d (MASTER_ADDR:MASTER_PORT) within %.0f s: %s",
                        c->rank, addr, port, c->timeout_s, last);
    int io;
    if (send_hdr(c->fd[0], OP_HELLO, (uint64_t)c->rank, (uint64_t)c->world, deadline, &io) != LT_OK)
        return lt_error(LT_ERR_NCCL, "rank %d: rendezvous with %s:%d: %s", c->rank, addr, port, io_why(io));
    wire_hdr h;
    io = io_full(c->fd[0], &h, sizeof h, 0, deadline + FOLLOWER_GRACE_S);
    if (io != 0)
        return lt_error(LT_ERR_NCCL, "rank %d: rendezvous with %s:%d: waiting for every rank: %s", c->rank, addr, port,
                        io_why(io));
    if (h.magic == WIRE_MAGIC && h.op == OP_ABORT) {
        char text[512];
        read_abort_text(c->fd[0], h.bytes, text, sizeof text);
        return lt_error(LT_ERR_NCCL, "rank %d: rank 0 refused the rendezvous: %s", c->rank, text);
    }
    if (h.magic != WIRE_MAGIC || h.op != OP_RESULT)
        return lt_error(LT_ERR_NCCL, "rank %d: %s:%d is not a loratune rank 0 (bad reply)", c->rank, addr, port);
    return LT_OK;
}

lt_status lt_comm_tcp_connect(lt_comm *c, const char *addr, int32_t port) {
    c->fd = lt_malloc((size_t)c->world * sizeof *c->fd, "comm sockets");
    if (!c->fd) return LT_ERR_OUT_OF_MEMORY;
    for (int k = 0; k < c->world; k++) c->fd[k] = -1;
    double deadline = lt_time_s() + c->timeout_s;
    return c->rank == 0 ? root_listen(c, addr, port, deadline) : follower_connect(c, addr, port, deadline);
}

void lt_comm_tcp_destroy(lt_comm *c) {
    for (int k = 0; c->fd && k < c->world; k++)
        if (c->fd[k] >= 0) close(c->fd[k]);
    free(c->fd);
    c->fd = NULL;
}

void lt_tcp_abort(lt_comm *c, const char *reason) {
    char msg[640];
    snprintf(msg, sizeof msg, "rank %d aborted: %s", c->rank, reason ? reason : "(no reason given)");
    if (c->rank == 0) {
        root_fail(c, msg);
    } else {
        if (c->fd && c->fd[0] >= 0) send_abort(c->fd[0], msg);
        follower_fail(c, msg);
    }
}

/* ---- collectives ---- */

static const char *op_name(uint32_t op) {
    switch (op) {
    case OP_SUM_F32: case OP_SUM_F64: return "all_reduce";
    case OP_BCAST: return "broadcast";
    case OP_ABORT: return "abort";
    default: return "?";
    }
}

/* One collective: op with payload buf[bytes] (sum of count values for OP_SUM_*, rank 0's bytes
 * for OP_BCAST). */
static lt_status tcp_collective(lt_comm *c, uint32_t op, void *buf, uint64_t bytes, int64_t count, double timeout_s,
                                const char *what) {
    if (c->failed) return lt_comm_failed_status(c, c->rank, what);
    uint64_t seq = ++c->seq;
    char msg[640];
    int io;
    if (c->rank != 0) {
        double deadline = lt_time_s() + timeout_s + FOLLOWER_GRACE_S;
        int fd = c->fd[0];
        if (send_hdr(fd, op, seq, bytes, deadline, &io) != LT_OK ||
            (op != OP_BCAST && (io = io_full(fd, buf, (size_t)bytes, 1, deadline)) != 0)) {
            if (io != -1 && read_pending_abort(fd, msg, sizeof msg)) return follower_fail(c, msg);
            snprintf(msg, sizeof msg, "%s (%s #%llu): rank %d cannot send to rank 0: %s", what, op_name(op),
                     (unsigned long long)seq, c->rank,
                     io == -1 ? "timed out" : "rank 0 closed the connection (it failed, or stopped the group after "
                     "another rank failed)");
            return follower_fail(c, msg);
        }
        wire_hdr h;
        io = io_full(fd, &h, sizeof h, 0, deadline);
        if (io == 0 && h.magic == WIRE_MAGIC && h.op == OP_ABORT) {
            char text[600];
            read_abort_text(fd, h.bytes, text, sizeof text);
            return follower_fail(c, text);
        }
        if (io == 0 && (h.magic != WIRE_MAGIC || h.op != OP_RESULT || h.seq != seq || h.bytes != bytes)) {
            snprintf(msg, sizeof msg, "%s (%s #%llu): rank %d got an unexpected reply from rank 0 (op %u #%llu)", what,
                     op_name(op), (unsigned long long)seq, c->rank, h.op, (unsigned long long)h.seq);
            return follower_fail(c, msg);
        }
        if (io == 0) io = io_full(fd, buf, (size_t)bytes, 0, deadline);
        if (io != 0) {
            snprintf(msg, sizeof msg, "%s (%s #%llu): rank %d waiting for rank 0: %s", what, op_name(op),
                     (unsigned long long)seq, c->rank,
                     io == -1 ? "no answer within the timeout (rank 0 or another rank hung)"
                              : "rank 0 closed the connection (its process died or failed)");
            return follower_fail(c, msg);
        }
        return LT_OK;
    }
    /* rank 0: gather in rank order, sum, answer */
    double deadline = lt_time_s() + timeout_s;
    void *tmp = op == OP_BCAST || bytes == 0 ? NULL : lt_malloc((size_t)bytes, "all_reduce receive buffer");
    if (bytes && op != OP_BCAST && !tmp) return LT_ERR_OUT_OF_MEMORY;
    lt_status st = LT_OK;
    for (int k = 1; k < c->world && st == LT_OK; k++) {
        wire_hdr h;
        io = io_full(c->fd[k], &h, sizeof h, 0, deadline);
        if (io == 0 && h.magic == WIRE_MAGIC && h.op == OP_ABORT) {
            read_abort_text(c->fd[k], h.bytes, msg, sizeof msg);
            st = root_fail(c, msg);
            break;
        }
        if (io != 0) {
            snprintf(msg, sizeof msg, "%s (%s #%llu): rank %d %s", what, op_name(op), (unsigned long long)seq, k,
                     io == -1 ? "did not arrive within the timeout (hung or stopped training); every rank stops"
                              : "closed its connection (its process died or failed); every rank stops");
            st = root_fail(c, msg);
            break;
        }
        if (h.magic != WIRE_MAGIC || h.op != op || h.seq != seq || h.bytes != bytes) {
            snprintf(msg, sizeof msg, "%s (%s #%llu, %llu bytes): rank %d is out of step (it sent %s #%llu, %llu bytes)",
                     what, op_name(op), (unsigned long long)seq, (unsigned long long)bytes, k, op_name(h.op),
                     (unsigned long long)h.seq, (unsigned long long)h.bytes);
            st = root_fail(c, msg);
            break;
        }
        if (op == OP_BCAST) continue;
        io = io_full(c->fd[k], tmp, (size_t)bytes, 0, deadline);
        if (io != 0) {
            snprintf(msg, sizeof msg, "%s (%s #%llu): receiving rank %d's data: %s", what, op_name(op),
                     (unsigned long long)seq, k,
                     io == -1 ? "timed out (it hung); every rank stops"
                              : "rank closed its connection (its process died or failed); every rank stops");
            st = root_fail(c, msg);
            break;
        }
        if (op == OP_SUM_F64)
            for (int64_t i = 0; i < count; i++) ((double *)buf)[i] += ((const double *)tmp)[i];
        else
            for (int64_t i = 0; i < count; i++) ((float *)buf)[i] += ((const float *)tmp)[i];
    }
    free(tmp);
    for (int k = 1; k < c->world && st == LT_OK; k++) {
        if (send_hdr(c->fd[k], OP_RESULT, seq, bytes, deadline + FOLLOWER_GRACE_S, &io) != LT_OK ||
            (io = io_full(c->fd[k], buf, (size_t)bytes, 1, deadline + FOLLOWER_GRACE_S)) != 0) {
            snprintf(msg, sizeof msg, "%s (%s #%llu): sending the result to rank %d: %s", what, op_name(op),
                     (unsigned long long)seq, k,
                     io == -1 ? "timed out (it hung); every rank stops"
                              : "rank closed its connection (its process died or failed); every rank stops");
            st = root_fail(c, msg);
        }
    }
    return st;
}

lt_status lt_tcp_allreduce_host(lt_comm *c, void *buf, int64_t count, int dtype, double timeout_s, const char *what) {
    size_t el = dtype == LT_DIST_F64 ? 8 : 4;
    return tcp_collective(c, dtype == LT_DIST_F64 ? OP_SUM_F64 : OP_SUM_F32, buf, (uint64_t)count * el, count,
                          timeout_s, what);
}

lt_status lt_tcp_broadcast(lt_comm *c, void *buf, size_t bytes, double timeout_s, const char *what) {
    return tcp_collective(c, OP_BCAST, buf, bytes, 0, timeout_s, what);
}

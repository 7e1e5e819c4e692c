/* test_dist_tcp.c - the TCP collective between local processes (fork), CPU backend:
 *   - 3 processes (ranks over 127.0.0.1:port, rank 0 listening) train 10 steps; every rank ends
 *     with the same weights, equal bit for bit to 3 ranks as threads of one process (both sum in
 *     rank order), and within 1e-6 of world size 1 (losses and weights);
 *   - a rank process killed (SIGKILL) after 3 steps makes the others exit with an error naming
 *     it within 30 s; a rank that hangs makes the others fail after the timeout, naming it;
 *   - the rendezvous refuses a process of another world size. */
#include "dist_common.h"
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define WORLD 3
#define STEPS 10

enum { MODE_TRAIN = 0, MODE_KILL = 1, MODE_HANG = 2 };

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("free_port");
        exit(1);
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* one rank process: trains, writes "<dir>/rank-K.bin" (status, steps, losses, weights) and
 * "<dir>/rank-K.err" (the error message) */
static int child(int rank, int world, int port, int mode, int victim, const char *dir, double timeout_s) {
    lt_tokenizer *tok = fx_tokenizer();
    lt_dataset *ds = dist_dataset(tok);
    lt_comm_params cp;
    lt_comm_params_init(&cp);
    cp.world_size = world;
    cp.rank = rank;
    cp.master_addr = "127.0.0.1";
    cp.master_port = port;
    cp.timeout_s = 20;
    lt_comm *comm = NULL;
    lt_status st = lt_comm_new(&cp, &comm);
    dist_rank r;
    memset(&r, 0, sizeof r);
    r.m = dist_model();
    r.ds = ds;
    dist_params(&r.tp, WORLD, world, 0, STEPS);
    r.tp.grad_accum = 1;
    r.tp.rank = rank;
    r.tp.comm = comm;
    r.tp.dist_timeout_s = timeout_s;
    lt_trainer *tr = NULL;
    if (st == LT_OK) st = lt_trainer_new(r.m, ds, &r.tp, &tr);
    lt_metrics mt = {sizeof mt};
    while (st == LT_OK) {
        if (rank == victim && r.steps == 3) {
            if (mode == MODE_KILL) raise(SIGKILL);
            if (mode == MODE_HANG) for (;;) pause();
        }
        st = lt_trainer_step(tr, &mt);
        if (st == LT_OK) r.losses[r.steps++] = mt.loss;
    }
    char path[1200];
    snprintf(path, sizeof path, "%s/rank-%d.err", dir, rank);
    FILE *f = fopen(path, "w");
    if (f) {
        fprintf(f, "%s", st < 0 ? lt_last_error() : "");
        fclose(f);
    }
    r.w = dist_weights(r.m, &r.nw);
    snprintf(path, sizeof path, "%s/rank-%d.bin", dir, rank);
    f = fopen(path, "wb");
    if (f) {
        int32_t s32 = st;
        fwrite(&s32, 4, 1, f);
        fwrite(&r.steps, sizeof r.steps, 1, f);
        fwrite(r.losses, sizeof r.losses, 1, f);
        fwrite(&r.nw, sizeof r.nw, 1, f);
        fwrite(r.w, 4, r.nw, f);
        fclose(f);
    }
    return st == LT_DONE ? 0 : 3;
}

typedef struct result {
    int32_t st;
    int steps;
    double losses[MAX_STEPS];
    size_t nw;
    float *w;
    char err[1024];
    int exit_code;
    double t_end;
} result;

static void read_result(const char *dir, int rank, result *res) {
    char path[1200];
    snprintf(path, sizeof path, "%s/rank-%d.bin", dir, rank);
    FILE *f = fopen(path, "rb");
    res->w = NULL;
    res->err[0] = 0;
    if (!f) { res->st = 1000; return; }
    if (fread(&res->st, 4, 1, f) != 1 || fread(&res->steps, sizeof res->steps, 1, f) != 1 ||
        fread(res->losses, sizeof res->losses, 1, f) != 1 || fread(&res->nw, sizeof res->nw, 1, f) != 1)
        res->st = 1001;
    else {
        res->w = malloc(res->nw * 4);
        if (fread(res->w, 4, res->nw, f) != res->nw) res->st = 1002;
    }
    fclose(f);
    snprintf(path, sizeof path, "%s/rank-%d.err", dir, rank);
    f = fopen(path, "r");
    if (f) {
        size_t n = fread(res->err, 1, sizeof res->err - 1, f);
        res->err[n] = 0;
        fclose(f);
    }
}

/* forks world rank processes; waits for them (killing a hung victim once the others are done) */
static void run_group(int world, int mode, int victim, const char *dir, double timeout_s, result *res, double *t0) {
    int port = free_port();
    pid_t pid[8];
    *t0 = dist_now();
    for (int k = 0; k < world; k++) {
        fflush(NULL);
        pid[k] = fork();
        if (pid[k] == 0) _exit(child(k, world, port, mode, victim, dir, timeout_s));
    }
    int left = world;
    while (left > 0) {
        int status = 0;
        pid_t p = waitpid(-1, &status, 0);
        if (p < 0) break;
        for (int k = 0; k < world; k++)
            if (pid[k] == p) {
                res[k].exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                res[k].t_end = dist_now();
                pid[k] = 0;
            }
        left--;
        if (mode == MODE_HANG && left == 1 && pid[victim] > 0) kill(pid[victim], SIGKILL);
    }
    for (int k = 0; k < world; k++) read_result(dir, k, &res[k]);
}

int main(void) {
    char dir[] = "/tmp/lt_dist_tcp_XXXXXX";
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    result res[WORLD];
    double t0;

    /* 3 processes train; compare with 3 threads and with one rank (computed after the forks) */
    memset(res, 0, sizeof res);
    run_group(WORLD, MODE_TRAIN, -1, dir, 30, res, &t0);
    for (int k = 0; k < WORLD; k++)
        CHECK_MSG(res[k].exit_code == 0 && res[k].st == LT_DONE && res[k].steps == STEPS, "rank %d: exit %d, %d steps: %s",
                  k, res[k].exit_code, res[k].steps, res[k].err);
    lt_tokenizer *tok = fx_tokenizer();
    lt_dataset *ds = dist_dataset(tok);
    dist_rank *thr = dist_run(ds, WORLD, WORLD, 0, STEPS, NULL, NULL, 0, 30, -1, 0);
    dist_rank *one = dist_run_single(ds, WORLD, 0, STEPS, NULL);
    if (res[0].w && res[0].nw == one->nw) {
        for (int k = 1; k < WORLD; k++)
            CHECK_MSG(res[k].w && res[k].nw == res[0].nw && !memcmp(res[k].w, res[0].w, res[0].nw * 4),
                      "process rank %d's weights differ from rank 0's", k);
        CHECK_MSG(!memcmp(res[0].w, thr[0].w, one->nw * 4) && !memcmp(res[0].losses, thr[0].losses, sizeof thr[0].losses),
                  "3 processes over TCP differ from 3 threads in-process");
        double dl = 0;
        for (int s = 0; s < STEPS; s++) dl = fmax(dl, fabs(res[0].losses[s] - one->losses[s]));
        double dw = max_abs_diff(res[0].w, one->w, one->nw);
        CHECK_MSG(dl <= 1e-6 && dw <= 1e-6, "3 processes vs world size 1: loss %g, weights %g", dl, dw);
        printf("3 processes over TCP: equal bits to 3 threads; vs world size 1: max |loss diff| %.3g, max |weight "
               "diff| %.3g, final loss %.6f\n", dl, dw, res[0].losses[STEPS - 1]);
    } else {
        CHECK_MSG(0, "no weights from rank 0");
    }
    dist_free(thr, WORLD);
    dist_free(one, 1);
    for (int k = 0; k < WORLD; k++) free(res[k].w);

    /* rank 1 is killed after 3 steps */
    memset(res, 0, sizeof res);
    run_group(WORLD, MODE_KILL, 1, dir, 30, res, &t0);
    CHECK_MSG(res[1].exit_code == 128 + SIGKILL, "the victim exited with %d", res[1].exit_code);
    for (int k = 0; k < WORLD; k += 2) {
        CHECK_MSG(res[k].exit_code == 3 && res[k].st == LT_ERR_NCCL, "rank %d: exit %d, status %d", k,
                  res[k].exit_code, res[k].st);
        CHECK_MSG(strstr(res[k].err, "rank 1") != NULL, "rank %d's message does not name rank 1: %s", k, res[k].err);
        CHECK_MSG(res[k].t_end - t0 < 30, "rank %d ended %.1f s after the start", k, res[k].t_end - t0);
        CHECK(res[k].steps == 3);
        printf("rank %d after rank 1 was killed (%.1f s after the start): %s\n", k, res[k].t_end - t0, res[k].err);
    }
    for (int k = 0; k < WORLD; k++) free(res[k].w);

    /* rank 2 hangs after 3 steps: the others fail after the 3 s timeout */
    memset(res, 0, sizeof res);
    run_group(WORLD, MODE_HANG, 2, dir, 3, res, &t0);
    for (int k = 0; k < 2; k++) {
        CHECK_MSG(res[k].exit_code == 3 && res[k].st == LT_ERR_NCCL, "rank %d: exit %d, status %d", k,
                  res[k].exit_code, res[k].st);
        CHECK_MSG(strstr(res[k].err, "rank 2") != NULL, "rank %d's message does not name rank 2: %s", k, res[k].err);
        CHECK_MSG(res[k].t_end - t0 < 30, "rank %d ended %.1f s after the start", k, res[k].t_end - t0);
        printf("rank %d after rank 2 hung (%.1f s after the start): %s\n", k, res[k].t_end - t0, res[k].err);
    }
    for (int k = 0; k < WORLD; k++) free(res[k].w);

    /* the rendezvous refuses a process that says another world size */
    {
        int port = free_port();
        fflush(NULL);
        pid_t p = fork();
        if (p == 0) {
            lt_comm_params cp;
            lt_comm_params_init(&cp);
            cp.world_size = 3;
            cp.rank = 1;
            cp.master_addr = "127.0.0.1";
            cp.master_port = port;
            cp.timeout_s = 10;
            lt_comm *c = NULL;
            _exit(lt_comm_new(&cp, &c) == LT_ERR_NCCL && strstr(lt_last_error(), "refused") ? 0 : 1);
        }
        lt_comm_params cp;
        lt_comm_params_init(&cp);
        cp.world_size = 2;
        cp.rank = 0;
        cp.master_addr = "127.0.0.1";
        cp.master_port = port;
        cp.timeout_s = 10;
        lt_comm *c = NULL;
        CHECK_FAIL(lt_comm_new(&cp, &c), LT_ERR_NCCL, "world size 3, but this group has world size 2");
        int status = 0;
        waitpid(p, &status, 0);
        CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the other process was not told why");
    }

    lt_dataset_free(ds);
    lt_tokenizer_free(tok);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return lt_test_done("test_dist_tcp");
}

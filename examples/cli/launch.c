/* launch.c - data-parallel runs of `loratune train` and `loratune bench`.
 *
 * One host: `--gpus N|LIST` makes this process a launcher: it starts one rank process per GPU,
 * each running the same command line without --gpus, and shares the rendezvous (and through it
 * the NCCL id, which rank 0 makes) by setting torchrun's variables: WORLD_SIZE, RANK,
 * LOCAL_RANK, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT; LORATUNE_GPUS maps local ranks to
 * devices. NCCL_NVLS_ENABLE=0 (NVLink multicast / SHARP off) is set unless the environment sets
 * it: NVLS needs the fabric manager's multicast support, which shared and virtualised machines
 * often lack, and LoRA gradients are too small to gain from it.
 * Several hosts: start one process per GPU with torchrun, srun or mpirun-like tools; each rank
 * reads WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (or SLURM_NTASKS, SLURM_PROCID,
 * SLURM_LOCALID) and meets the others over TCP at MASTER_ADDR:MASTER_PORT (rank 0 listens). */
#include "launch.h"
#include "cli.h"

#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_RANKS 64

static int env_int(const char *a, const char *b, int *out) {
    const char *v = getenv(a);
    if (!v && b) v = getenv(b);
    if (!v || !*v) return 0;
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || x < 0 || x > 1000000) return -1;
    *out = (int)x;
    return 1;
}

int cli_dist_from_env(const char *cmd, cli_dist *d) {
    memset(d, 0, sizeof *d);
    d->world = 1;
    lt_train_params tp;
    lt_train_params_init(&tp);
    d->timeout_s = tp.dist_timeout_s;
    int w = 1, r = 0, lr = 0, port = 29500;
    if (env_int("WORLD_SIZE", "SLURM_NTASKS", &w) < 0 || env_int("RANK", "SLURM_PROCID", &r) < 0 ||
        env_int("LOCAL_RANK", "SLURM_LOCALID", &lr) < 0 || env_int("MASTER_PORT", NULL, &port) < 0)
        return cli_usage_error(cmd, "WORLD_SIZE, RANK, LOCAL_RANK and MASTER_PORT (or SLURM_NTASKS, SLURM_PROCID, "
                               "SLURM_LOCALID) must be non-negative integers");
    const char *launched = getenv("LORATUNE_LAUNCHED");
    if (w <= 1 && !(launched && *launched == '1')) return -1;
    if (w < 1) w = 1;
    if (r >= w) return cli_usage_error(cmd, "RANK %d is not below WORLD_SIZE %d", r, w);
    if (port < 1 || port > 65535) return cli_usage_error(cmd, "MASTER_PORT %d is not a TCP port", port);
    const char *addr = getenv("MASTER_ADDR");
    if (!addr || !*addr) {
        int nodes = 1;
        if (env_int("SLURM_NNODES", NULL, &nodes) > 0 && nodes > 1)
            return cli_usage_error(cmd, "WORLD_SIZE %d over %d nodes: set MASTER_ADDR to rank 0's host (and "
                                   "MASTER_PORT, default 29500)", w, nodes);
        addr = "127.0.0.1";
    }
    d->world = w;
    d->active = 1;
    d->rank = r;
    d->local_rank = lr;
    d->port = port;
    snprintf(d->addr, sizeof d->addr, "%s", addr);
    d->device_index = lr;
    const char *gpus = getenv("LORATUNE_GPUS");
    if (gpus && *gpus) {
        int k = 0;
        const char *p = gpus;
        while (*p) {
            char *end;
            long id = strtol(p, &end, 10);
            if (end == p) return cli_usage_error(cmd, "LORATUNE_GPUS '%s' is not a comma-separated device list", gpus);
            if (k == lr) d->device_index = (int32_t)id;
            k++;
            p = *end == ',' ? end + 1 : end;
            if (*end && *end != ',') return cli_usage_error(cmd, "LORATUNE_GPUS '%s' is not a device list", gpus);
        }
        if (lr >= k) return cli_usage_error(cmd, "LOCAL_RANK %d, but LORATUNE_GPUS lists %d devices", lr, k);
    }
    const char *t = getenv("LORATUNE_DIST_TIMEOUT");
    if (t && *t) {
        char *end;
        double x = strtod(t, &end);
        if (*end || !(x > 0)) return cli_usage_error(cmd, "LORATUNE_DIST_TIMEOUT '%s' must be a number of seconds > 0", t);
        d->timeout_s = x;
    }
    return -1;
}

lt_status cli_dist_join(const cli_dist *d, lt_comm **out) {
    lt_comm_params cp;
    lt_comm_params_init(&cp);
    cp.world_size = d->world;
    cp.rank = d->rank;
    cp.master_addr = d->addr;
    cp.master_port = d->port;
    cp.timeout_s = d->timeout_s;
    return lt_comm_new(&cp, out);
}

const char *cli_take_gpus_flag(int *argc, char **argv) {
    const char *spec = NULL;
    int n = 0;
    for (int i = 0; i < *argc; i++) {
        if (i > 0 && !strcmp(argv[i], "--gpus") && i + 1 < *argc) {
            spec = argv[++i];
            continue;
        }
        if (i > 0 && !strncmp(argv[i], "--gpus=", 7)) {
            spec = argv[i] + 7;
            continue;
        }
        argv[n++] = argv[i];
    }
    argv[n] = NULL;
    *argc = n;
    return spec;
}

/* "N" -> 0..N-1; "a,b,c" -> those */
static int parse_spec(const char *spec, int *ids) {
    if (!strchr(spec, ',')) {
        char *end;
        long n = strtol(spec, &end, 10);
        if (*end || end == spec || n < 1 || n > MAX_RANKS) return -1;
        for (int i = 0; i < n; i++) ids[i] = i;
        return (int)n;
    }
    int n = 0;
    const char *p = spec;
    while (*p) {
        char *end;
        long id = strtol(p, &end, 10);
        if (end == p || id < 0 || id > 4096 || n == MAX_RANKS || (*end && *end != ',')) return -1;
        ids[n++] = (int)id;
        p = *end ? end + 1 : end;
    }
    return n > 0 ? n : -1;
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

static volatile sig_atomic_t launcher_signal = 0;
static void on_launcher_signal(int sig) {
    if (!launcher_signal) launcher_signal = sig;
}

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cli_run_self(const char *cmd, int argc, char **argv, const char *const *extra) {
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) return cli_usage_error(cmd, "cannot find this program (/proc/self/exe): %s", strerror(errno));
    exe[len] = 0;
    int n_extra = 0;
    while (extra && extra[n_extra]) n_extra++;
    char **cargv = calloc((size_t)(argc + n_extra + 2), sizeof *cargv);
    if (!cargv) return 1;
    int k = 0;
    cargv[k++] = exe;
    cargv[k++] = (char *)cmd;
    for (int i = 1; i < argc; i++) cargv[k++] = argv[i];
    for (int i = 0; i < n_extra; i++) cargv[k++] = (char *)extra[i];
    fflush(NULL);
    pid_t p = fork();
    if (p == 0) {
        execv(exe, cargv);
        _exit(127);
    }
    free(cargv);
    if (p < 0) return 1;
    int st = 0;
    while (waitpid(p, &st, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int cli_launch(const char *cmd, const char *spec, int argc, char **argv) {
    int ids[MAX_RANKS];
    int n = parse_spec(spec, ids);
    if (n < 0)
        return cli_usage_error(cmd, "--gpus '%s': give a count (--gpus 4) or a device list (--gpus 0,2,3; one device: "
                               "--gpus 5,), at most %d", spec, MAX_RANKS);
    int w = 0;
    if (getenv("WORLD_SIZE") && sscanf(getenv("WORLD_SIZE"), "%d", &w) == 1 && w > 1)
        return cli_usage_error(cmd, "--gpus starts its own ranks, but WORLD_SIZE=%d is set (this process is a rank "
                               "of a launched run): drop --gpus, or unset WORLD_SIZE", w);
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) return cli_usage_error(cmd, "cannot find this program (/proc/self/exe): %s", strerror(errno));
    exe[len] = 0;
    int port = 0;
    const char *mp = getenv("MASTER_PORT");
    if (mp && *mp) port = atoi(mp);
    if (port <= 0) port = free_port();
    if (port <= 0) return cli_usage_error(cmd, "no free TCP port on 127.0.0.1 for the ranks' rendezvous");
    char list[1024];
    size_t o = 0;
    list[0] = 0;
    for (int i = 0; i < n && o + 16 < sizeof list; i++) o += (size_t)snprintf(list + o, sizeof list - o, "%s%d", i ? "," : "", ids[i]);
    /* the ranks' argv: this program, the command, the arguments (--gpus already taken out) */
    char **cargv = calloc((size_t)argc + 2, sizeof *cargv);
    if (!cargv) return 1;
    cargv[0] = exe;
    cargv[1] = (char *)cmd;
    for (int i = 1; i < argc; i++) cargv[i + 1] = argv[i];
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    /* the ranks print resume commands; they give --gpus back (cli_print_resume_command) */
    setenv("LORATUNE_LAUNCH_GPUS", spec, 1);
    fprintf(stderr, "loratune %s: %d ranks on devices %s (rendezvous 127.0.0.1:%d, NCCL_NVLS_ENABLE=%s)\n", cmd, n,
            list, port, getenv("NCCL_NVLS_ENABLE"));
    fflush(NULL);
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_launcher_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    pid_t pid[MAX_RANKS];
    int status[MAX_RANKS], alive = 0;
    for (int k = 0; k < n; k++) {
        pid[k] = fork();
        if (pid[k] < 0) {
            fprintf(stderr, "loratune %s: fork failed: %s\n", cmd, strerror(errno));
            for (int j = 0; j < k; j++) kill(pid[j], SIGTERM);
            n = k;
            break;
        }
        if (pid[k] == 0) {
            sigaction(SIGINT, &old_int, NULL);
            sigaction(SIGTERM, &old_term, NULL);
            char v[32];
            snprintf(v, sizeof v, "%d", n);
            setenv("WORLD_SIZE", v, 1);
            setenv("LOCAL_WORLD_SIZE", v, 1);
            snprintf(v, sizeof v, "%d", k);
            setenv("RANK", v, 1);
            setenv("LOCAL_RANK", v, 1);
            snprintf(v, sizeof v, "%d", port);
            setenv("MASTER_PORT", v, 1);
            setenv("MASTER_ADDR", "127.0.0.1", 1);
            setenv("LORATUNE_GPUS", list, 1);
            setenv("LORATUNE_LAUNCHED", "1", 1);
            execv(exe, cargv);
            fprintf(stderr, "loratune %s: rank %d: cannot run %s: %s\n", cmd, k, exe, strerror(errno));
            _exit(127);
        }
        status[k] = -1;
        alive++;
    }
    /* wait; after a failure, the others get the data-parallel timeout (plus a margin) to notice
     * and stop by themselves, then SIGTERM, then SIGKILL */
    cli_dist d;
    d.timeout_s = 30;
    if (getenv("LORATUNE_DIST_TIMEOUT")) d.timeout_s = atof(getenv("LORATUNE_DIST_TIMEOUT"));
    int first_bad = -1, forwarded = 0, termed = 0;
    double fail_t = 0;
    while (alive > 0) {
        int st = 0;
        pid_t p = waitpid(-1, &st, WNOHANG);
        if (p > 0) {
            for (int k = 0; k < n; k++)
                if (pid[k] == p) {
                    status[k] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                    alive--;
                    if (status[k] != 0 && first_bad < 0) {
                        first_bad = k;
                        fail_t = mono_s();
                    }
                    if (status[k] != 0)
                        fprintf(stderr, "loratune %s: rank %d (device %d) exited with status %d\n", cmd, k, ids[k],
                                status[k]);
                }
            continue;
        }
        if (p < 0 && errno != EINTR) break;
        if (launcher_signal && !forwarded) { /* the ranks stop after their current step and save */
            for (int k = 0; k < n; k++)
                if (status[k] < 0) kill(pid[k], launcher_signal);
            forwarded = 1;
        }
        if (first_bad >= 0 && !termed && mono_s() - fail_t > d.timeout_s + 15) {
            for (int k = 0; k < n; k++)
                if (status[k] < 0) kill(pid[k], SIGTERM);
            termed = 1;
            fail_t = mono_s();
        } else if (termed == 1 && mono_s() - fail_t > 10) {
            for (int k = 0; k < n; k++)
                if (status[k] < 0) kill(pid[k], SIGKILL);
            termed = 2;
        }
        usleep(50 * 1000);
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    free(cargv);
    if (first_bad >= 0) return status[first_bad];
    for (int k = 0; k < n; k++)
        if (status[k] != 0) return status[k];
    return 0;
}

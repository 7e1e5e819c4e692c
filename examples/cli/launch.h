/* launch.h - data-parallel runs of the `loratune` command (launch.c): the one-host launcher of
 * `--gpus N|LIST`, and the torchrun / Slurm variables every rank process reads. */
#ifndef LT_CLI_LAUNCH_H
#define LT_CLI_LAUNCH_H
#include "loratune.h"
#include <stddef.h>

/* This process's place in a data-parallel run, from the environment. */
typedef struct cli_dist {
    int32_t world, rank, local_rank;
    char addr[256];            /* MASTER_ADDR */
    int32_t port;              /* MASTER_PORT */
    int32_t device_index;      /* the CUDA device of this rank (LORATUNE_GPUS[local_rank], else local_rank) */
    double timeout_s;          /* LORATUNE_DIST_TIMEOUT, else lt_train_params_init's dist_timeout_s */
    int32_t active;            /* join a group: world > 1, or a rank started by --gpus (even --gpus 1, which
                                * then trains through the collective: the rendezvous and NCCL) */
} cli_dist;

/* Reads WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (torchrun), or SLURM_NTASKS,
 * SLURM_PROCID, SLURM_LOCALID (srun), and LORATUNE_GPUS / LORATUNE_DIST_TIMEOUT. world = 1
 * when none is set. Returns -1 to go on, or 2 after printing a usage error. */
int cli_dist_from_env(const char *cmd, cli_dist *d);

/* Joins the data-parallel group `d` describes (lt_comm_new with its rank, world size,
 * rendezvous and timeout); the caller frees *out with lt_comm_free. */
lt_status cli_dist_join(const cli_dist *d, lt_comm **out);

/* Takes "--gpus SPEC" out of argv (argc updated); returns SPEC or NULL. */
const char *cli_take_gpus_flag(int *argc, char **argv);

/* `--gpus N` (devices 0..N-1) or `--gpus 0,2,3` (those devices; one device: "5,"): starts one
 * process per device running `loratune <cmd> <args>` (args without --gpus) with WORLD_SIZE,
 * RANK, LOCAL_RANK, MASTER_ADDR=127.0.0.1, a free MASTER_PORT and LORATUNE_GPUS set, and
 * NCCL_NVLS_ENABLE=0 unless it is set. Forwards SIGINT / SIGTERM to the ranks, and once one
 * rank has failed, ends those still running after the data-parallel timeout. Returns the exit
 * status: 0 when every rank succeeded, else the first failing rank's. */
int cli_launch(const char *cmd, const char *spec, int argc, char **argv);
/* Runs `loratune <cmd> <args> [extra...]` (extra: a NULL-terminated list) as a child process and
 * waits for it; returns its exit status (128 + signal when killed). */
int cli_run_self(const char *cmd, int argc, char **argv, const char *const *extra);
#endif

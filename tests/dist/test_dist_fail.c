/* test_dist_fail.c - a data-parallel run whose rank fails stops every other rank with a clear
 * error, in-process (threads over one lt_comm):
 *   - a rank that silently stops taking part after 3 steps (a hung or dead rank) makes the
 *     others fail with LT_ERR_NCCL naming it, within the timeout (2 s here, 30 s by default);
 *   - a rank that aborts (lt_comm_abort, what a failing trainer step does) stops the others at
 *     once, its reason in their message;
 *   - settings that differ between ranks (other data) are refused at lt_trainer_new on every
 *     rank; bad data-parallel parameters are refused with a message. */
#include "dist_common.h"

static void *abort_rank(void *arg) {
    lt_comm *comm = arg;
    usleep(300 * 1000);
    lt_comm_abort(comm, 1, "simulated failure on rank 1");
    return NULL;
}

int main(void) {
    lt_tokenizer *tok = fx_tokenizer();
    lt_dataset *ds = dist_dataset(tok);

    /* rank 2 of 3 stops after 3 steps */
    double t0 = dist_now();
    dist_rank *r = dist_run(ds, 3, 3, 0, 10, NULL, NULL, 0, 2.0, 2, 3);
    for (int k = 0; k < 2; k++) {
        CHECK_MSG(r[k].st == LT_ERR_NCCL, "rank %d ended with %s: %s", k, lt_status_string(r[k].st), r[k].err);
        CHECK_MSG(strstr(r[k].err, "rank(s) 2") != NULL, "rank %d's message does not name rank 2: %s", k, r[k].err);
        CHECK_MSG(r[k].steps == 3, "rank %d took %d steps", k, r[k].steps);
        CHECK_MSG(r[k].t_fail - t0 < 30.0, "rank %d stopped %.1f s after the start", k, r[k].t_fail - t0);
        printf("rank %d stopped after %.1f s: %s\n", k, r[k].t_fail - t0, r[k].err);
    }
    CHECK(r[2].steps == 3);
    dist_free(r, 3);

    /* rank 1 of 2 aborts while rank 0 trains: rank 0 stops at its next collective (no timeout) */
    {
        lt_comm *comm = NULL;
        lt_comm_params cp;
        lt_comm_params_init(&cp);
        cp.world_size = 2;
        CHECK_OK(lt_comm_new(&cp, &comm));
        lt_model *m = dist_model();
        lt_train_params tp;
        dist_params(&tp, 2, 2, 0, 10);
        tp.rank = 0;
        tp.comm = comm;
        tp.dist_timeout_s = 60; /* the abort, not the timeout, must stop it */
        pthread_t th;
        pthread_create(&th, NULL, abort_rank, comm);
        lt_trainer *tr = NULL;
        double t1 = dist_now();
        lt_status st = lt_trainer_new(m, ds, &tp, &tr); /* its set-up collective meets the abort */
        lt_metrics mt = {sizeof mt};
        while (st == LT_OK) st = lt_trainer_step(tr, &mt);
        pthread_join(th, NULL);
        CHECK_MSG(st == LT_ERR_NCCL && strstr(lt_last_error(), "rank 1 aborted: simulated failure on rank 1"),
                  "%s: %s", lt_status_string(st), lt_last_error());
        CHECK_MSG(dist_now() - t1 < 10, "the abort took %.1f s to stop rank 0", dist_now() - t1);
        printf("after an abort: %s\n", lt_last_error());
        /* sticky: the group stays failed */
        CHECK_FAIL(lt_comm_barrier(comm, 0), LT_ERR_NCCL, "rank 1 aborted");
        lt_trainer_free(tr);
        lt_model_free(m);
        lt_comm_free(comm);
    }

    /* a rank with other data: every rank refuses at set-up */
    {
        lt_dataset *other = fx_dataset(tok);
        int32_t ids[8] = {5, 6, 7, 8, 9, 10, 11, 12};
        CHECK_OK(lt_dataset_add_tokens(other, ids, NULL, 8));
        lt_comm *comm = NULL;
        lt_comm_params cp;
        lt_comm_params_init(&cp);
        cp.world_size = 2;
        CHECK_OK(lt_comm_new(&cp, &comm));
        dist_rank rr[2];
        memset(rr, 0, sizeof rr);
        pthread_t th[2];
        for (int k = 0; k < 2; k++) {
            rr[k].rank = k;
            rr[k].m = dist_model();
            rr[k].ds = k ? other : ds;
            dist_params(&rr[k].tp, 2, 2, 0, 4);
            rr[k].tp.rank = k;
            rr[k].tp.comm = comm;
            rr[k].tp.dist_timeout_s = 5;
            pthread_create(&th[k], NULL, dist_rank_main, &rr[k]);
        }
        for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
        for (int k = 0; k < 2; k++) {
            CHECK_MSG(rr[k].st == LT_ERR_INVALID_ARGUMENT && strstr(rr[k].err, k ? "training records = 1 but rank 0 has 23" : "other data"),
                      "rank %d: %s: %s", k, lt_status_string(rr[k].st), rr[k].err);
            free(rr[k].w);
            lt_model_free(rr[k].m);
        }
        printf("different data on rank 1: %s\n", rr[1].err);
        lt_comm_free(comm);
        lt_dataset_free(other);
    }

    /* parameter checks */
    {
        lt_model *m = dist_model();
        lt_trainer *tr = NULL;
        lt_train_params tp;
        dist_params(&tp, 2, 2, 0, 4);
        tp.rank = 1;
        CHECK_FAIL(lt_trainer_new(m, ds, &tp, &tr), LT_ERR_INVALID_ARGUMENT, "needs lt_train_params.comm");
        lt_comm *comm = NULL;
        lt_comm_params cp;
        lt_comm_params_init(&cp);
        cp.world_size = 3;
        CHECK_OK(lt_comm_new(&cp, &comm));
        tp.comm = comm;
        CHECK_FAIL(lt_trainer_new(m, ds, &tp, &tr), LT_ERR_INVALID_ARGUMENT, "the comm's group has 3 ranks");
        tp.world_size = 3;
        tp.rank = 3;
        CHECK_FAIL(lt_trainer_new(m, ds, &tp, &tr), LT_ERR_INVALID_ARGUMENT, "rank 3");
        cp.master_addr = "127.0.0.1";
        cp.rank = 5;
        lt_comm *bad = NULL;
        CHECK_FAIL(lt_comm_new(&cp, &bad), LT_ERR_INVALID_ARGUMENT, "rank 5 must be in [0, world_size 3)");
        lt_comm_free(comm);
        lt_model_free(m);
    }
    lt_dataset_free(ds);
    lt_tokenizer_free(tok);
    return lt_test_done("test_dist_fail");
}

/* test_stop.c - the library's side of issue 15 through the C API, on the tiny fixture model (CPU):
 *   - lt_trainer_request_stop before a step (no step taken) and from the step callback (the step
 *     is kept): LT_STOPPED once, then training goes on to the same losses, bit for bit, as a run
 *     that was never stopped;
 *   - a non-finite loss stops with LT_ERR_NONFINITE naming the step, the value and the last good
 *     checkpoint, leaves the step counter and data cursor as they were (the same failure again);
 *   - every bad lt_train_params field gets LT_ERR_INVALID_ARGUMENT naming it;
 *   - the adapter saver refuses a NaN weight naming the tensor and writes nothing. */
#include "../train/train_common.h"
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define STEPS 6

static lt_model *model_with_lora(void) {
    lt_model *m = fx_model("tiny-tied", 0);
    lt_lora_params lp;
    lt_lora_params_init(&lp);
    lp.r = 8;
    lp.dropout = 0.1f;
    lp.seed = 5;
    CHECK_OK(lt_model_add_lora(m, &lp));
    return m;
}

static lt_dataset *dataset(lt_tokenizer *tok) {
    lt_dataset *ds = fx_dataset(tok);
    for (int i = 0; i < 9; i++) {
        int32_t ids[16];
        int n = 5 + i % 7;
        for (int t = 0; t < n; t++) ids[t] = 3 + (i * 37 + t * 11) % 250;
        CHECK_OK(lt_dataset_add_tokens(ds, ids, NULL, (size_t)n));
    }
    return ds;
}

static void params(lt_train_params *tp) {
    lt_train_params_init(tp);
    tp->batch_size = 2;
    tp->grad_accum = 2;
    tp->max_steps = STEPS;
    tp->lr = 2e-3;
    tp->warmup_steps = 1;
    tp->optimizer = LT_OPTIM_ADAMW;
    tp->seed = 7;
}

static lt_trainer *g_tr;
static int stop_from_callback(const lt_metrics *mt, void *ud) {
    if (mt->step == *(int64_t *)ud) lt_trainer_request_stop(g_tr);
    return 0;
}

int main(void) {
    lt_tokenizer *tok = fx_tokenizer();
    lt_dataset *ds = dataset(tok);
    double straight[STEPS + 1] = {0}, stopped[STEPS + 1] = {0};
    lt_metrics mt = {sizeof mt};

    /* the run nobody stops */
    lt_model *m = model_with_lora();
    lt_train_params tp;
    params(&tp);
    lt_trainer *tr = NULL;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    for (int s = 1; s <= STEPS; s++) {
        CHECK_OK(lt_trainer_step(tr, &mt));
        straight[s] = mt.loss;
    }
    CHECK(lt_trainer_step(tr, &mt) == LT_DONE);
    lt_trainer_free(tr);
    lt_model_free(m);

    /* stopped twice: before step 3 (nothing taken), and from step 4's callback (step 4 kept) */
    m = model_with_lora();
    params(&tp);
    int64_t stop_at = 4;
    tp.on_step = stop_from_callback;
    tp.user_data = &stop_at;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    g_tr = tr;
    for (int s = 1; s <= 2; s++) {
        CHECK_OK(lt_trainer_step(tr, &mt));
        stopped[s] = mt.loss;
    }
    lt_trainer_request_stop(tr);
    CHECK(lt_trainer_step(tr, &mt) == LT_STOPPED);
    CHECK(lt_trainer_get_step(tr) == 2);
    CHECK(mt.step == 2); /* the metrics still those of step 2 */
    CHECK_OK(lt_trainer_step(tr, &mt));
    stopped[3] = mt.loss;
    CHECK(lt_trainer_step(tr, &mt) == LT_STOPPED); /* step 4, stopped from its callback: kept */
    CHECK(lt_trainer_get_step(tr) == 4 && mt.step == 4);
    stopped[4] = mt.loss;
    for (int s = 5; s <= STEPS; s++) {
        CHECK_OK(lt_trainer_step(tr, &mt)); /* the request was consumed: training goes on */
        stopped[s] = mt.loss;
    }
    for (int s = 1; s <= STEPS; s++)
        CHECK_MSG(stopped[s] == straight[s], "step %d: loss %.9g after stops, %.9g straight", s, stopped[s], straight[s]);
    lt_trainer_request_stop(NULL); /* NULL-safe */
    CHECK(lt_trainer_get_step(NULL) == 0);
    lt_trainer_free(tr);

    /* a learning rate that blows the weights up: LT_ERR_NONFINITE at the next step, state kept */
    params(&tp);
    tp.lr = 1e30;
    tp.warmup_steps = 0;
    tp.max_grad_norm = 0;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    lt_status st = LT_OK;
    int64_t before = 0;
    for (int s = 0; s < STEPS && st == LT_OK; s++) {
        before = lt_trainer_get_step(tr);
        st = lt_trainer_step(tr, &mt);
    }
    CHECK_MSG(st == LT_ERR_NONFINITE, "huge lr: %s (%s)", lt_status_string(st), lt_last_error());
    CHECK(strstr(lt_last_error(), "last good checkpoint: none") != NULL);
    char want[64];
    snprintf(want, sizeof want, "step %lld:", (long long)before + 1);
    CHECK_MSG(strstr(lt_last_error(), want) != NULL, "'%s' lacks '%s'", lt_last_error(), want);
    CHECK(lt_trainer_get_step(tr) == before);
    CHECK(lt_trainer_step(tr, &mt) == LT_ERR_NONFINITE && strstr(lt_last_error(), want)); /* the same step again */
    lt_trainer_free(tr);
    lt_model_free(m);

    /* every bad parameter: a specific message, and no trainer */
    m = model_with_lora();
#define BAD(assign, needle) do { params(&tp); tp.assign; tr = NULL; \
        CHECK_FAIL(lt_trainer_new(m, ds, &tp, &tr), LT_ERR_INVALID_ARGUMENT, needle); CHECK(tr == NULL); } while (0)
    BAD(weight_decay = NAN, "weight_decay");
    BAD(weight_decay = -1, "weight_decay");
    BAD(max_grad_norm = NAN, "max_grad_norm");
    BAD(warmup_steps = -1, "warmup_steps");
    BAD(warmup_ratio = 2, "warmup_ratio");
    BAD(batch_size = 0, "batch_size");
    BAD(batch_size = 2000000000, "batch_size");
    BAD(grad_accum = -3, "grad_accum");
    BAD(lr = INFINITY, "lr");
    BAD(lr = NAN, "lr");
    BAD(epochs = NAN, "epochs");
    BAD(adam_eps = 0, "adam_eps");
    BAD(adam_beta1 = 1, "adam betas");
    BAD(log_every = -1, "log_every");
    BAD(save_every = -2, "save_every");
    BAD(fuse_micro_batches = 2, "fuse_micro_batches");
    BAD(gradient_checkpointing = 3, "gradient_checkpointing");
    BAD(fp16_initial_loss_scale = NAN, "fp16_initial_loss_scale");
    BAD(scheduler = 9, "scheduler");
#undef BAD
    params(&tp);
    tp.warmup_steps = -1; /* with a ratio: the ratio's warmup */
    tp.warmup_ratio = 0.5;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    lt_trainer_free(tr);

    /* the saver refuses a NaN weight, naming the tensor, and leaves no folder */
    lt_lora_tensor *t = &m->layers[1].lora[LT_PROJ_V];
    float nan = NAN;
    CHECK_OK(m->be->ops.upload(m->be, t->B + 3, &nan, sizeof nan));
    char dir[256];
    snprintf(dir, sizeof dir, "%s/test_stop_nan_%ld", LT_BUILD_DIR, (long)getpid());
    CHECK_FAIL(lt_model_save_adapter(m, dir, 0), LT_ERR_NONFINITE, "layers.1.self_attn.v_proj.lora_B");
    struct stat sb;
    CHECK_MSG(stat(dir, &sb) != 0, "%s was created for a refused save", dir);
    lt_model_free(m);
    lt_dataset_free(ds);
    lt_tokenizer_free(tok);
    return lt_test_done("test_stop");
}

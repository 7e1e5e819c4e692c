/* test_train_misc.c - schedules against transformers' formulas (values worked out by hand),
 * scheduler / optimizer names, clipping (coef = max_norm / (norm + 1e-6), applied only below
 * 1, the reported norm is the one before clipping), the callback's stop, LT_DONE, epochs mode,
 * evaluation on the held-out split, and the refusals (world_size > 1, no adapter). */
#include "train_common.h"
#include "train/trainer_impl.h"

static void check_schedules(void) {
    /* cosine, W = 50, T = 100 (the notebook): lambda(s) = s/50 in warmup, then
     * 0.5 * (1 + cos(pi * (s - 50) / 50)) */
    CHECK_NEAR(lt_schedule_lambda(LT_SCHED_COSINE, 0, 50, 100), 0.0, 0);
    CHECK_NEAR(lt_schedule_lambda(LT_SCHED_COSINE, 1, 50, 100), 0.02, 1e-15);
    CHECK_NEAR(lt_schedule_lambda(LT_SCHED_COSINE, 25, 50, 100), 0.5, 1e-15);
    CHECK_NEAR(lt_schedule_lambda(LT_SCHED_COSINE, 50, 50, 100), 1.0, 1e-15);
    CHECK_NEAR(lt_schedule_lambda(LT_SCHED_COSINE, 75, 50, 100), 0.5, 1e-15);
    /* s = 99: 0.5 * (1 + cos(0.98 pi)) = 0.5 * (1 - 0.998026728428272) */
    CHECK_NEAR(lt_schedule_lambda(LT_SCHED_COSINE, 99, 50, 100), 0.000986635785864, 1e-14);
    CHECK_NEAR(lt_schedule_lambda(LT_SCHED_COSINE, 100, 50, 100), 0.0, 1e-15);
    /* the first optimizer step with warmup runs at lr 0 (step k uses lambda(k - 1)) */
    CHECK_NEAR(4e-5 * lt_schedule_lambda(LT_SCHED_COSINE, 0, 50, 100), 0.0, 0);
    /* linear, W = 10, T = 100: (T - s) / (T - W) after warmup */
    CHECK_NEAR(lt_schedule_lambda(LT_SCHED_LINEAR, 5, 10, 100), 0.5, 1e-15);
    CHECK_NEAR(lt_schedule_lambda(LT_SCHED_LINEAR, 10, 10, 100), 1.0, 1e-15);
    CHECK_NEAR(lt_schedule_lambda(LT_SCHED_LINEAR, 55, 10, 100), 0.5, 1e-15);
    CHECK_NEAR(lt_schedule_lambda(LT_SCHED_LINEAR, 99, 10, 100), 1.0 / 90.0, 1e-15);
    CHECK_NEAR(lt_schedule_lambda(LT_SCHED_LINEAR, 120, 10, 100), 0.0, 0);
    /* no warmup: W = 0 starts at 1 */
    CHECK_NEAR(lt_schedule_lambda(LT_SCHED_LINEAR, 0, 0, 4), 1.0, 1e-15);
    CHECK_NEAR(lt_schedule_lambda(LT_SCHED_COSINE, 2, 0, 4), 0.5, 1e-15);
    /* constant (with warmup when W > 0) */
    CHECK_NEAR(lt_schedule_lambda(LT_SCHED_CONSTANT, 2, 4, 10), 0.5, 1e-15);
    CHECK_NEAR(lt_schedule_lambda(LT_SCHED_CONSTANT, 7, 4, 10), 1.0, 0);
    CHECK_NEAR(lt_schedule_lambda(LT_SCHED_CONSTANT, 0, 0, 10), 1.0, 0);

    int32_t v = -1;
    CHECK_OK(lt_scheduler_parse("cosine", &v)); CHECK(v == LT_SCHED_COSINE);
    CHECK_OK(lt_scheduler_parse("linear", &v)); CHECK(v == LT_SCHED_LINEAR);
    CHECK_OK(lt_scheduler_parse("constant_with_warmup", &v)); CHECK(v == LT_SCHED_CONSTANT);
    CHECK_FAIL(lt_scheduler_parse("polynomial", &v), LT_ERR_INVALID_ARGUMENT, "polynomial");
    CHECK_OK(lt_optimizer_parse("adamw_8bit", &v)); CHECK(v == LT_OPTIM_ADAMW_8BIT);
    CHECK_OK(lt_optimizer_parse("adamw_bnb_8bit", &v)); CHECK(v == LT_OPTIM_ADAMW_8BIT);
    CHECK_OK(lt_optimizer_parse("adamw_torch", &v)); CHECK(v == LT_OPTIM_ADAMW);
    CHECK_FAIL(lt_optimizer_parse("sgd", &v), LT_ERR_INVALID_ARGUMENT, "sgd");

    lt_train_params tp;
    lt_train_params_init(&tp);
    CHECK(tp.struct_size == sizeof tp && tp.batch_size == 2 && tp.grad_accum == 8 && tp.max_steps == 100);
    CHECK(tp.lr == 4e-5 && tp.warmup_steps == 50 && tp.scheduler == LT_SCHED_COSINE);
    CHECK(tp.optimizer == LT_OPTIM_ADAMW_8BIT && tp.weight_decay == 0.01 && tp.seed == 3407 && tp.max_grad_norm == 1.0);
}

static lt_dataset *dataset(lt_tokenizer *tok, int n, double eval_fraction) {
    lt_dataset_params dp;
    lt_dataset_params_init(&dp);
    dp.format = LT_DATA_TOKENS;
    dp.add_eos = 0;
    dp.eval_fraction = eval_fraction;
    lt_dataset *ds = NULL;
    CHECK_OK(lt_dataset_new(tok, &dp, &ds));
    uint64_t x = 7;
    for (int i = 0; i < n; i++) {
        int32_t ids[24];
        int len = 6 + i % 10;
        for (int t = 0; t < len; t++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            ids[t] = 3 + (int32_t)((x >> 33) % 250);
        }
        CHECK_OK(lt_dataset_add_tokens(ds, ids, NULL, (size_t)len));
    }
    return ds;
}

static double stored_grad_norm(lt_model *m) {
    double s = 0;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++)
            for (int isb = 0; isb < 2; isb++) {
                lt_lora_tensor *t = &m->layers[l].lora[p];
                int64_t n = isb ? t->out * t->r : t->r * t->in;
                float *g = fx_download(m, isb ? t->dB : t->dA, n);
                for (int64_t i = 0; i < n; i++) s += (double)g[i] * g[i];
                free(g);
            }
    return sqrt(s);
}

static int stop_at_3(const lt_metrics *mt, void *ud) {
    (void)ud;
    return mt->step == 3;
}

static void check_training(lt_tokenizer *tok) {
    lt_model *m = fx_model("tiny-untied", 1);
    lt_dataset *ds = dataset(tok, 16, 0);
    lt_train_params tp;
    lt_trainer *tr = NULL;

    /* clipping: max_grad_norm 0.1 scales the gradients to norm 0.1 * n / (n + 1e-6) */
    lt_train_params_init(&tp);
    tp.max_steps = 2;
    tp.grad_accum = 2;
    tp.max_grad_norm = 0.1;
    tp.optimizer = LT_OPTIM_ADAMW;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    lt_metrics mt = {sizeof mt};
    CHECK_OK(lt_trainer_step(tr, &mt));
    double after = stored_grad_norm(m);
    printf("clipping at 0.1: reported norm %.6f, stored gradients' norm %.9f\n", mt.grad_norm, after);
    CHECK(mt.grad_norm > 0.1);
    CHECK_NEAR(after, 0.1 * mt.grad_norm / (mt.grad_norm + 1e-6), 1e-6);
    CHECK(mt.step == 1 && mt.max_steps == 2 && mt.tokens > 0 && mt.total_tokens == mt.tokens);
    CHECK(mt.lr == 0.0); /* warmup 50: the first step runs at lr 0 */
    lt_trainer_free(tr);
    /* no clipping when the norm is below max_grad_norm */
    tp.max_grad_norm = 1e6;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    CHECK_OK(lt_trainer_step(tr, &mt));
    after = stored_grad_norm(m);
    CHECK_NEAR(after, mt.grad_norm, 1e-6 * mt.grad_norm);
    /* LT_DONE after max_steps, and it stays done */
    CHECK_OK(lt_trainer_step(tr, &mt));
    CHECK(lt_trainer_step(tr, &mt) == LT_DONE);
    CHECK(lt_trainer_step(tr, &mt) == LT_DONE);
    lt_trainer_free(tr);

    /* the callback stops the run; the stopped step is complete */
    lt_train_params_init(&tp);
    tp.max_steps = 10;
    tp.grad_accum = 1;
    tp.on_step = stop_at_3;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    CHECK(lt_trainer_run(tr) == LT_STOPPED);
    CHECK_OK(lt_trainer_step(tr, &mt));
    CHECK(mt.step == 4);
    lt_trainer_free(tr);

    /* epochs mode: 16 records, batch 2, accumulation 2 -> 4 steps an epoch, 2 epochs */
    lt_train_params_init(&tp);
    tp.max_steps = 0;
    tp.epochs = 2;
    tp.grad_accum = 2;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    int steps = 0;
    lt_status st;
    while ((st = lt_trainer_step(tr, &mt)) == LT_OK) steps++;
    CHECK(st == LT_DONE);
    CHECK(steps == 8);
    CHECK_NEAR(mt.epoch, 2.0, 1e-12);
    double loss;
    CHECK_FAIL(lt_trainer_evaluate(tr, &loss), LT_ERR_STATE, "eval_fraction");
    lt_trainer_free(tr);

    /* refusals */
    lt_train_params_init(&tp);
    tp.world_size = 2;
    CHECK_FAIL(lt_trainer_new(m, ds, &tp, &tr), LT_ERR_INVALID_ARGUMENT,
               "world_size 2 on the CPU backend needs lt_train_params.comm"); /* data parallel: tests/dist */
    lt_train_params_init(&tp);
    tp.batch_size = 0;
    CHECK_FAIL(lt_trainer_new(m, ds, &tp, &tr), LT_ERR_INVALID_ARGUMENT, "batch_size");
    lt_train_params_init(&tp);
    CHECK_OK(lt_model_set_lora_enabled(m, 0));
    CHECK_FAIL(lt_trainer_new(m, ds, &tp, &tr), LT_ERR_STATE, "disabled");
    CHECK_OK(lt_model_set_lora_enabled(m, 1));
    lt_model *bare = fx_model("tiny-untied", 0);
    CHECK_FAIL(lt_trainer_new(bare, ds, &tp, &tr), LT_ERR_STATE, "lt_model_add_lora");
    lt_model_free(bare);
    lt_dataset_free(ds);

    /* evaluation: the token-weighted mean loss of the held-out records */
    ds = dataset(tok, 20, 0.25);
    size_t ne = lt_dataset_eval_size(ds);
    CHECK(ne > 0);
    lt_train_params_init(&tp);
    tp.batch_size = 3;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    CHECK_OK(lt_trainer_evaluate(tr, &loss));
    double sum = 0, count = 0;
    for (size_t i = 0; i < ne; i++) {
        const int32_t *ids, *labels;
        size_t n;
        CHECK_OK(lt_dataset_eval_record(ds, i, &ids, &labels, &n));
        double l;
        CHECK_OK(lt_model_loss(m, ids, labels, n, &l));
        sum += l * (double)(n - 1);
        count += (double)(n - 1);
    }
    printf("evaluate: %.7f over %zu records (per-record lt_model_loss: %.7f)\n", loss, ne, sum / count);
    CHECK_NEAR(loss, sum / count, 1e-5 * loss);
    lt_trainer_free(tr);
    lt_dataset_free(ds);
    lt_model_free(m);
}

/* gradient_checkpointing = 0 keeps every layer's activations: the same steps, bit for bit */
static void check_no_checkpointing(lt_tokenizer *tok) {
    double loss[2][3];
    float *w[2];
    for (int ck = 0; ck < 2; ck++) {
        lt_model *m = fx_model("tiny-tied", 1);
        m->lora.dropout = 0.2f;
        lt_dataset *ds = dataset(tok, 12, 0);
        lt_train_params tp;
        lt_train_params_init(&tp);
        tp.max_steps = 3;
        tp.grad_accum = 2;
        tp.warmup_steps = 0;
        tp.lr = 1e-3;
        tp.gradient_checkpointing = ck;
        lt_trainer *tr = NULL;
        CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
        for (int i = 0; i < 3; i++) {
            lt_metrics mt = {sizeof mt};
            CHECK_OK(lt_trainer_step(tr, &mt));
            loss[ck][i] = mt.loss;
        }
        lt_lora_tensor *t = &m->layers[0].lora[LT_PROJ_DOWN];
        w[ck] = fx_download(m, t->A, t->r * t->in);
        if (ck) CHECK(!memcmp(w[0], w[1], (size_t)(t->r * t->in) * 4));
        lt_trainer_free(tr);
        lt_dataset_free(ds);
        lt_model_free(m);
    }
    CHECK(!memcmp(loss[0], loss[1], sizeof loss[0]));
    printf("checkpointing off/on: losses %.9f/%.9f %.9f/%.9f %.9f/%.9f\n", loss[0][0], loss[1][0], loss[0][1],
           loss[1][1], loss[0][2], loss[1][2]);
    free(w[0]);
    free(w[1]);
}

/* fp16 loss scaling (forced on here; the CPU computes in f32): scaling by a power of two and
 * unscaling is exact, and an overflowing step is skipped with the scale halved */
static void check_loss_scaling(lt_tokenizer *tok) {
    double loss[2][2];
    float *w[2];
    lt_lora_tensor *t = NULL;
    size_t wn = 0;
    for (int scaled = 0; scaled < 2; scaled++) {
        lt_model *m = fx_model("tiny-untied", 1);
        lt_dataset *ds = dataset(tok, 8, 0);
        lt_train_params tp;
        lt_train_params_init(&tp);
        tp.max_steps = 2;
        tp.grad_accum = 2;
        tp.warmup_steps = 0;
        tp.lr = 1e-3;
        tp.optimizer = LT_OPTIM_ADAMW;
        lt_trainer *tr = NULL;
        CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
        CHECK(tr->use_loss_scale == 0); /* f32 activations need none */
        tr->use_loss_scale = scaled;
        tr->loss_scale = 1024;
        for (int i = 0; i < 2; i++) {
            lt_metrics mt = {sizeof mt};
            CHECK_OK(lt_trainer_step(tr, &mt));
            loss[scaled][i] = mt.loss;
        }
        t = &m->layers[1].lora[LT_PROJ_V];
        w[scaled] = fx_download(m, t->B, t->out * t->r);
        wn = (size_t)(t->out * t->r);
        lt_trainer_free(tr);
        if (scaled) {
            /* an overflow: the step is taken (counted) without an update, the scale halves */
            CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
            tr->use_loss_scale = 1;
            tr->loss_scale = 1e300; /* beyond float: the gradients become inf / nan */
            lt_metrics mt = {sizeof mt};
            CHECK_OK(lt_trainer_step(tr, &mt));
            float *w2 = fx_download(m, t->B, t->out * t->r);
            CHECK(!memcmp(w2, w[1], (size_t)(t->out * t->r) * 4));
            CHECK(mt.step == 1 && isinf(mt.grad_norm));
            CHECK(tr->loss_scale == 5e299);
            free(w2);
            lt_trainer_free(tr);
        }
        lt_dataset_free(ds);
        lt_model_free(m);
    }
    CHECK(!memcmp(loss[0], loss[1], sizeof loss[0]));
    CHECK_MSG(!memcmp(w[0], w[1], wn * 4), "loss scaling changed the update");
    free(w[0]);
    free(w[1]);
}

int main(void) {
    check_schedules();
    lt_tokenizer *tok = fx_tokenizer();
    check_training(tok);
    check_no_checkpointing(tok);
    check_loss_scaling(tok);
    lt_tokenizer_free(tok);
    return lt_test_done("test_train_misc");
}

/* test_trainer_fixtures.c - 10 optimizer steps of the trainer (torch AdamW, warmup + cosine,
 * clipping 1.0, batch 2 x accumulation 2, loss = window sum / shifted labels of the window)
 * against the same run in transformers + PEFT: every step's loss within 1e-4, the grad norm
 * (before clipping), the learning rate, and the adapter after the last step. */
#include "train_common.h"

typedef struct seen { int n; double loss[16], lr[16], norm[16]; int64_t step[16]; } seen;

static int on_step(const lt_metrics *mt, void *ud) {
    seen *s = ud;
    if (s->n < 16) {
        s->loss[s->n] = mt->loss;
        s->lr[s->n] = mt->lr;
        s->norm[s->n] = mt->grad_norm;
        s->step[s->n] = mt->step;
        s->n++;
    }
    return 0;
}

static void run(const char *name, lt_tokenizer *tok) {
    lt_model *m = fx_model(name, 1);
    lt_st_set *ex = fx_expected(name);
    json_t *js = fx_json(name), *tj = json_object_get(js, "trajectory");
    int64_t n_cu;
    const int32_t *ids = fx_i32(ex, "traj.ids", NULL), *labels = fx_i32(ex, "traj.labels", NULL);
    const int32_t *cu = fx_i32(ex, "traj.cu_seqlens", &n_cu);
    lt_train_params tp;
    lt_train_params_init(&tp);
    tp.batch_size = (int32_t)json_integer_value(json_object_get(tj, "batch"));
    tp.grad_accum = (int32_t)json_integer_value(json_object_get(tj, "accum"));
    tp.max_steps = (int32_t)json_integer_value(json_object_get(tj, "steps"));
    tp.lr = json_number_value(json_object_get(tj, "lr"));
    tp.warmup_steps = (int32_t)json_integer_value(json_object_get(tj, "warmup"));
    tp.scheduler = LT_SCHED_COSINE;
    tp.optimizer = LT_OPTIM_ADAMW;
    tp.weight_decay = json_number_value(json_object_get(tj, "wd"));
    tp.max_grad_norm = json_number_value(json_object_get(tj, "max_grad_norm"));
    tp.adam_eps = json_number_value(json_object_get(tj, "eps"));
    tp.seed = 3407;
    seen s = {0};
    tp.on_step = on_step;
    tp.user_data = &s;
    lt_dataset *ds = fx_ordered_dataset(tok, ids, labels, cu, (int)n_cu - 1, tp.seed);
    lt_trainer *tr = NULL;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    CHECK_OK(lt_trainer_run(tr));
    lt_metrics mt = {sizeof mt};
    CHECK(lt_trainer_step(tr, &mt) == LT_DONE);
    CHECK(s.n == tp.max_steps);
    json_t *jl = json_object_get(tj, "losses"), *jn = json_object_get(tj, "grad_norms"), *jr = json_object_get(tj, "lrs");
    double worst = 0;
    for (int i = 0; i < s.n; i++) {
        double wl = json_number_value(json_array_get(jl, (size_t)i)), wn = json_number_value(json_array_get(jn, (size_t)i));
        double wr = json_number_value(json_array_get(jr, (size_t)i));
        printf("%s step %lld: loss %.6f (peft %.6f) grad_norm %.6f (%.6f) lr %.4e (%.4e)\n", name, (long long)s.step[i],
               s.loss[i], wl, s.norm[i], wn, s.lr[i], wr);
        CHECK(s.step[i] == i + 1);
        CHECK_MSG(fabs(s.loss[i] - wl) <= 1e-4, "%s step %d loss %.7f vs %.7f", name, i + 1, s.loss[i], wl);
        CHECK_MSG(fabs(s.norm[i] - wn) <= 1e-4 * wn, "%s step %d grad norm %.7f vs %.7f", name, i + 1, s.norm[i], wn);
        CHECK_MSG(fabs(s.lr[i] - wr) <= 1e-9 * tp.lr, "%s step %d lr %.9g vs %.9g", name, i + 1, s.lr[i], wr);
        if (fabs(s.loss[i] - wl) > worst) worst = fabs(s.loss[i] - wl);
    }
    printf("%s: worst loss difference over %d steps: %.3g\n", name, s.n, worst);
    /* the adapter after 10 steps */
    double wworst = 0;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++)
            for (int isb = 0; isb < 2; isb++) {
                lt_lora_tensor *t = &m->layers[l].lora[p];
                char key[256];
                fx_lora_key(key, sizeof key, "final.", l, p, isb);
                int64_t n;
                float *want = fx_f32(ex, key, &n);
                float *got = fx_download(m, isb ? t->B : t->A, n);
                double e = lt_rel_err(got, want, (size_t)n);
                if (e > wworst) wworst = e;
                CHECK_MSG(e <= 1e-4, "%s: %s after 10 steps: relative error %g", name, key + 6, e);
                free(got);
                free(want);
            }
    printf("%s: adapter after %d steps, worst relative error %.3g\n", name, s.n, wworst);
    lt_trainer_free(tr);
    lt_dataset_free(ds);
    json_decref(js);
    lt_st_close(ex);
    lt_model_free(m);
}

int main(void) {
    lt_tokenizer *tok = fx_tokenizer();
    run("tiny-tied", tok);
    run("tiny-untied", tok);
    lt_tokenizer_free(tok);
    return lt_test_done("test_trainer_fixtures");
}

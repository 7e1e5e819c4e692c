/* test_train_eval.c - evaluation during training on the CPU backend (tiny fixture model):
 *   - the eval loss the trainer reports equals a separate no-grad pass over the same records
 *     (lt_model_loss record by record), and the token accuracy equals the argmax of
 *     lt_model_logits;
 *   - the training losses and final weights are bit-identical with and without evaluation
 *     (dropout on: evaluation must not move the random streams);
 *   - early stopping stops at the right step on crafted eval curves (the bookkeeping) and end to
 *     end on a flat curve (lr 0: every eval loss equal, none better);
 *   - save_total_limit keeps exactly N checkpoint folders (the best one among them with
 *     load_best_at_end);
 *   - load_best_at_end: the adapter saved after training is the best evaluation's weights;
 *   - a run resumed from a checkpoint keeps its evaluations (patience, best step and weights);
 *   - data parallel (2 ranks as threads): every rank reports the same eval loss;
 *   - the schedule warnings (warmup >= max_steps; a peak never reached) reach the log callback. */
#include "train_common.h"
#include "train/trainer_impl.h"

#include <dirent.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

static lt_dataset *dataset(lt_tokenizer *tok, int n, double eval_fraction, uint64_t x) {
    lt_dataset_params dp;
    lt_dataset_params_init(&dp);
    dp.format = LT_DATA_TOKENS;
    dp.add_eos = 0;
    dp.eval_fraction = eval_fraction;
    lt_dataset *ds = NULL;
    CHECK_OK(lt_dataset_new(tok, &dp, &ds));
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

/* every LoRA weight of the model, end to end (malloc'ed), *n values */
static float *lora_weights(lt_model *m, int64_t *n) {
    int64_t total = 0;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            lt_lora_tensor *t = &m->layers[l].lora[p];
            if (t->A) total += t->r * t->in + t->out * t->r;
        }
    float *w = malloc((size_t)total * 4), *at = w;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            lt_lora_tensor *t = &m->layers[l].lora[p];
            if (!t->A) continue;
            for (int b = 0; b < 2; b++) {
                int64_t k = b ? t->out * t->r : t->r * t->in;
                float *h = fx_download(m, b ? t->B : t->A, k);
                memcpy(at, h, (size_t)k * 4);
                free(h);
                at += k;
            }
        }
    *n = total;
    return w;
}

/* the separate pass: lt_model_loss / lt_model_logits record by record (no trainer involved) */
static void separate_pass(lt_model *m, const lt_dataset *ds, int split, double *loss, double *acc) {
    size_t n_rec = split ? lt_dataset_eval_size(ds) : lt_dataset_size(ds);
    double sum = 0, count = 0, correct = 0;
    int V = m->cfg.vocab_size;
    for (size_t i = 0; i < n_rec; i++) {
        const int32_t *ids, *labels;
        size_t n;
        CHECK_OK(split ? lt_dataset_eval_record(ds, i, &ids, &labels, &n) : lt_dataset_record(ds, i, &ids, &labels, &n));
        double l;
        CHECK_OK(lt_model_loss(m, ids, labels, n, &l));
        size_t targets = 0;
        for (size_t t = 0; t + 1 < n; t++) targets += labels[t + 1] != -100;
        sum += l * (double)targets;
        count += (double)targets;
        float *logits = malloc(n * (size_t)V * 4);
        CHECK_OK(lt_model_logits(m, ids, n, logits));
        for (size_t t = 0; t + 1 < n; t++) {
            if (labels[t + 1] == -100) continue;
            const float *r = logits + t * (size_t)V;
            int best = 0;
            for (int v = 1; v < V; v++)
                if (r[v] > r[best]) best = v;
            correct += best == labels[t + 1];
        }
        free(logits);
    }
    *loss = sum / count;
    *acc = correct / count;
}

typedef struct run_log { double loss[16], eval[16], acc[16]; int n; } run_log;

static int record_step(const lt_metrics *mt, void *ud) {
    run_log *r = ud;
    if (r->n < 16) {
        r->loss[r->n] = mt->loss;
        r->eval[r->n] = mt->eval_loss;
        r->acc[r->n] = mt->eval_accuracy;
        r->n++;
    }
    return 0;
}

/* eval = a separate no-grad pass; training identical with and without eval */
static void check_eval_equals_separate_pass(lt_tokenizer *tok) {
    const int steps = 5;
    run_log runs[2];
    float *w[2];
    int64_t nw[2];
    double worst_loss = 0, worst_acc = 0;
    for (int with_eval = 0; with_eval < 2; with_eval++) {
        lt_model *m = fx_model("tiny-untied", 1);
        m->lora.dropout = 0.2f; /* dropout on: eval must not move the streams */
        lt_dataset *ds = dataset(tok, 24, 0.25, 7);
        lt_train_params tp;
        lt_train_params_init(&tp);
        tp.max_steps = steps;
        tp.batch_size = 2;
        tp.grad_accum = 2;
        tp.lr = 2e-3;
        tp.warmup_steps = 1;
        tp.optimizer = LT_OPTIM_ADAMW;
        tp.eval_every = with_eval ? 1 : -1;
        tp.eval_batch_size = 3;
        memset(&runs[with_eval], 0, sizeof runs[0]);
        tp.on_step = record_step;
        tp.user_data = &runs[with_eval];
        lt_trainer *tr = NULL;
        CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
        lt_metrics mt = {sizeof mt};
        for (int s = 0; s < steps; s++) {
            CHECK_OK(lt_trainer_step(tr, &mt));
            if (!with_eval) {
                CHECK(isnan(mt.eval_loss));
                continue;
            }
            double loss, acc;
            separate_pass(m, ds, 1, &loss, &acc);
            double dl = fabs(mt.eval_loss - loss), da = fabs(mt.eval_accuracy - acc);
            if (dl > worst_loss) worst_loss = dl;
            if (da > worst_acc) worst_acc = da;
            CHECK_MSG(dl <= 1e-6, "step %d: eval loss %.9f, separate pass %.9f", s + 1, mt.eval_loss, loss);
            CHECK_MSG(da == 0, "step %d: eval accuracy %.6f, separate pass %.6f", s + 1, mt.eval_accuracy, acc);
        }
        CHECK(lt_trainer_step(tr, &mt) == LT_DONE);
        if (with_eval) {
            lt_eval_result r = {sizeof r};
            CHECK_OK(lt_trainer_evaluate_v2(tr, &r));
            CHECK(r.n_records == (int64_t)lt_dataset_eval_size(ds) && r.n_tokens > 0);
            CHECK(r.loss == runs[1].eval[steps - 1]); /* no step since: the same number */
            lt_train_summary su = {sizeof su};
            CHECK_OK(lt_trainer_get_summary(tr, &su));
            CHECK(su.steps == steps && su.steps_run == steps && su.n_evals == steps && !su.early_stopped);
            double mean = 0;
            for (int s = 0; s < steps; s++) mean += runs[1].loss[s];
            CHECK_NEAR(su.mean_loss, mean / steps, 1e-12);
            printf("eval vs separate pass over %zu records: max |d loss| %.3g, max |d accuracy| %.3g; "
                   "eval loss step 1 %.6f -> step %d %.6f\n", lt_dataset_eval_size(ds), worst_loss, worst_acc,
                   runs[1].eval[0], steps, runs[1].eval[steps - 1]);
        }
        w[with_eval] = lora_weights(m, &nw[with_eval]);
        lt_trainer_free(tr);
        lt_dataset_free(ds);
        lt_model_free(m);
    }
    CHECK(runs[0].n == steps && runs[1].n == steps);
    for (int s = 0; s < steps; s++)
        CHECK_MSG(runs[0].loss[s] == runs[1].loss[s], "step %d: training loss %.9g without eval, %.9g with", s + 1,
                  runs[0].loss[s], runs[1].loss[s]);
    CHECK(nw[0] == nw[1] && memcmp(w[0], w[1], (size_t)nw[0] * 4) == 0);
    printf("training losses with and without eval: identical over %d steps (last %.9f), weights bit-equal\n", steps,
           runs[1].loss[steps - 1]);
    free(w[0]);
    free(w[1]);
}

/* eval_batch_size 0 (the default) packs as many records per pass as the training token budget
 * holds; 1 record per pass and 4 per pass give the same result as the separate pass */
static void check_eval_batching(lt_tokenizer *tok) {
    lt_model *m = fx_model("tiny-untied", 1);
    lt_dataset *ds = dataset(tok, 12, 0, 7), *ev = dataset(tok, 11, 0, 99);
    double want_loss, want_acc;
    separate_pass(m, ev, 0, &want_loss, &want_acc);
    const int32_t sizes[] = {0, 1, 4};
    for (int i = 0; i < 3; i++) {
        lt_train_params tp;
        lt_train_params_init(&tp);
        tp.eval_data = ev;
        tp.eval_batch_size = sizes[i];
        lt_trainer *tr = NULL;
        CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
        lt_eval_result r = {sizeof r};
        CHECK_OK(lt_trainer_evaluate_v2(tr, &r));
        CHECK_MSG(fabs(r.loss - want_loss) <= 1e-6 && r.accuracy == want_acc && r.n_records == 11,
                  "eval_batch_size %d: loss %.9f accuracy %.6f, separate pass %.9f %.6f", sizes[i], r.loss, r.accuracy,
                  want_loss, want_acc);
        lt_trainer_free(tr);
    }
    printf("eval_batch_size 0 (token budget), 1, 4: the separate pass's loss %.7f\n", want_loss);
    lt_dataset_free(ds);
    lt_dataset_free(ev);
    lt_model_free(m);
}

/* the bookkeeping on crafted curves: stop after `patience` evaluations without improvement */
static void check_early_stopping_curves(void) {
    static const struct {
        double curve[10];
        int n, patience;
        double threshold;
        int stop_at;     /* 1-based index of the evaluation that stops, 0 = never */
        int best_at;
    } cases[] = {
        {{5.0, 4.0, 4.5, 3.9, 4.0, 4.1, 4.2, 3.0}, 8, 2, 0.0, 6, 4},  /* best 3.9, then two worse */
        {{5.0, 4.0, 4.5, 3.9, 4.0, 4.1, 4.2, 3.0}, 8, 3, 0.0, 7, 4},
        {{5.0, 4.0, 3.0, 2.0, 1.0}, 5, 1, 0.0, 0, 5},                 /* always better: never */
        {{5.0, 4.95, 4.9, 4.85}, 4, 2, 0.1, 3, 1},                    /* small gains under the threshold */
        {{3.0, 3.0, 3.0, 3.0}, 4, 2, 0.0, 3, 1},                      /* equal is not better */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        lt_trainer tr;
        memset(&tr, 0, sizeof tr);
        lt_train_params_init(&tr.p);
        tr.p.early_stopping_patience = cases[c].patience;
        tr.p.early_stopping_threshold = cases[c].threshold;
        tr.max_steps = 100;
        tr.best_eval_loss = NAN;
        int stopped_at = 0;
        for (int i = 0; i < cases[c].n && !stopped_at; i++) {
            lt_eval_track(&tr, (i + 1) * 10, cases[c].curve[i]);
            if (tr.early_stopped) stopped_at = i + 1;
        }
        CHECK_MSG(stopped_at == cases[c].stop_at, "case %zu: stopped at evaluation %d, expected %d", c, stopped_at,
                  cases[c].stop_at);
        CHECK_MSG(tr.best_eval_step == cases[c].best_at * 10, "case %zu: best at step %lld, expected %d", c,
                  (long long)tr.best_eval_step, cases[c].best_at * 10);
    }
    /* the last step never "early stops": training ends there anyway */
    lt_trainer tr;
    memset(&tr, 0, sizeof tr);
    lt_train_params_init(&tr.p);
    tr.p.early_stopping_patience = 1;
    tr.max_steps = 2;
    tr.best_eval_loss = NAN;
    lt_eval_track(&tr, 1, 1.0);
    lt_eval_track(&tr, 2, 2.0);
    CHECK(!tr.early_stopped);
}

static int count_checkpoints(const char *dir, int64_t *steps, int cap) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, "checkpoint-", 11)) {
            if (n < cap) steps[n] = strtoll(e->d_name + 11, NULL, 10);
            n++;
        }
    closedir(d);
    for (int i = 0; i < n && i < cap; i++) /* sorted */
        for (int j = i + 1; j < n && j < cap; j++)
            if (steps[j] < steps[i]) { int64_t t = steps[i]; steps[i] = steps[j]; steps[j] = t; }
    return n;
}

static void rm_rf(const char *path) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", path);
}

/* end to end: early stopping on a flat curve, save_total_limit, load_best_at_end */
static void check_stop_limit_best(lt_tokenizer *tok) {
    char tmpl[] = "/tmp/lt_eval_XXXXXX";
    char *root = mkdtemp(tmpl);
    CHECK(root != NULL);
    if (!root) return;
    char out[1024];
    lt_dataset *ds = dataset(tok, 24, 0, 7);
    lt_dataset *ev = dataset(tok, 8, 0, 99); /* eval_data: a dataset of its own */
    lt_train_params tp;
    lt_metrics mt = {sizeof mt};
    lt_trainer *tr = NULL;

    /* lr 0 and no weight decay: the weights never move, every eval loss is the same, none is
     * better; patience 3 with an eval every step stops after step 4 */
    lt_model *m = fx_model("tiny-untied", 1);
    lt_train_params_init(&tp);
    tp.max_steps = 20;
    tp.grad_accum = 1;
    tp.lr = 0;
    tp.weight_decay = 0;
    tp.eval_data = ev;
    tp.eval_every = 1;
    tp.early_stopping_patience = 3;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    int steps = 0;
    lt_status st;
    while ((st = lt_trainer_step(tr, &mt)) == LT_OK) {
        steps++;
        CHECK(mt.early_stop == (steps == 4));
    }
    CHECK(st == LT_DONE);
    CHECK_MSG(steps == 4, "flat eval curve, patience 3: stopped after step %d, expected 4", steps);
    CHECK(lt_trainer_step(tr, &mt) == LT_DONE);
    lt_train_summary su = {sizeof su};
    CHECK_OK(lt_trainer_get_summary(tr, &su));
    CHECK(su.early_stopped && su.steps == 4 && su.best_eval_step == 1 && su.n_evals == 4);
    printf("early stopping, flat curve, patience 3: stopped after step %d (best step %lld)\n", steps,
           (long long)su.best_eval_step);
    lt_trainer_free(tr);
    lt_model_free(m);

    /* save_total_limit 3 without load-best: checkpoints 6, 8, 10 of 2, 4, ..., 10 */
    m = fx_model("tiny-untied", 1);
    snprintf(out, sizeof out, "%s/limit", root);
    lt_train_params_init(&tp);
    tp.max_steps = 10;
    tp.grad_accum = 1;
    tp.lr = 1e-3;
    tp.warmup_steps = 0;
    tp.save_every = 2;
    tp.save_total_limit = 3;
    tp.output_dir = out;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    CHECK_OK(lt_trainer_run(tr));
    int64_t ck[16];
    int n = count_checkpoints(out, ck, 16);
    CHECK_MSG(n == 3 && ck[0] == 6 && ck[1] == 8 && ck[2] == 10, "save_total_limit 3: %d checkpoints (%lld %lld %lld)",
              n, (long long)ck[0], (long long)ck[1], (long long)ck[2]);
    printf("save_total_limit 3: %d checkpoints kept (%lld, %lld, %lld)\n", n, (long long)ck[0], (long long)ck[1],
           (long long)ck[2]);
    lt_trainer_free(tr);
    lt_model_free(m);

    /* load_best_at_end: a threshold no eval can beat keeps step 2's eval the best; the weights
     * move on after it, and the adapter saved after LT_DONE is step 2's; save_total_limit 2 keeps
     * the best checkpoint and the newest */
    m = fx_model("tiny-untied", 1);
    snprintf(out, sizeof out, "%s/best", root);
    lt_train_params_init(&tp);
    tp.max_steps = 8;
    tp.grad_accum = 1;
    tp.lr = 1e-2;
    tp.warmup_steps = 0;
    tp.eval_data = ev;
    tp.eval_every = 2;
    tp.early_stopping_threshold = 1e9;
    tp.save_every = 2;
    tp.save_total_limit = 2;
    tp.load_best_at_end = 1;
    tp.output_dir = out;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    float *best = NULL, *last = NULL;
    int64_t nb = 0, nl = 0;
    while ((st = lt_trainer_step(tr, &mt)) == LT_OK)
        if (mt.step == 2) best = lora_weights(m, &nb);
    CHECK(st == LT_DONE);
    CHECK_OK(lt_trainer_get_summary(tr, &su));
    CHECK(su.best_eval_step == 2 && su.best_loaded && su.steps == 8 && !su.early_stopped);
    last = lora_weights(m, &nl);
    CHECK(best && nb == nl && memcmp(best, last, (size_t)nb * 4) == 0);
    n = count_checkpoints(out, ck, 16);
    CHECK_MSG(n == 2 && ck[0] == 2 && ck[1] == 8, "save_total_limit 2 + load-best: %d checkpoints (%lld %lld)", n,
              (long long)ck[0], (long long)ck[1]);
    /* the saved adapter is checkpoint-2's, byte for byte */
    char ad[1100], ck2[1100];
    snprintf(ad, sizeof ad, "%s/final", out);
    CHECK_OK(lt_model_save_adapter(m, ad, 1));
    snprintf(ad, sizeof ad, "%s/final/adapter_model.safetensors", out);
    snprintf(ck2, sizeof ck2, "%s/checkpoint-2/adapter_model.safetensors", out);
    char *a = NULL, *b = NULL;
    size_t la = 0, lb = 0;
    CHECK_OK(lt_read_file(ad, &a, &la));
    CHECK_OK(lt_read_file(ck2, &b, &lb));
    CHECK(a && b && la == lb && memcmp(a, b, la) == 0);
    printf("load_best_at_end: the adapter after step 8 is step 2's (%s %s checkpoint-2's); checkpoints kept: %lld, %lld\n",
           ad, a && b && la == lb && memcmp(a, b, la) == 0 ? "==" : "!=", (long long)ck[0], (long long)ck[1]);
    free(a);
    free(b);
    free(best);
    free(last);
    lt_trainer_free(tr);

    /* refusals: options that need eval records */
    lt_train_params_init(&tp);
    tp.load_best_at_end = 1;
    CHECK_FAIL(lt_trainer_new(m, ds, &tp, &tr), LT_ERR_INVALID_ARGUMENT, "load_best_at_end");
    lt_train_params_init(&tp);
    tp.early_stopping_patience = 2;
    CHECK_FAIL(lt_trainer_new(m, ds, &tp, &tr), LT_ERR_INVALID_ARGUMENT, "early_stopping_patience");
    lt_train_params_init(&tp);
    tp.eval_data = ev;
    tp.eval_every = -1;
    tp.load_best_at_end = 1;
    CHECK_FAIL(lt_trainer_new(m, ds, &tp, &tr), LT_ERR_INVALID_ARGUMENT, "eval_every");
    lt_train_params_init(&tp);
    tp.save_total_limit = -1;
    CHECK_FAIL(lt_trainer_new(m, ds, &tp, &tr), LT_ERR_INVALID_ARGUMENT, "save_total_limit");
    lt_model_free(m);
    lt_dataset_free(ds);
    lt_dataset_free(ev);
    rm_rf(root);
}

/* resume keeps the evaluations: patience counts on, the best weights come back */
static void check_resume(lt_tokenizer *tok) {
    char tmpl[] = "/tmp/lt_eval_XXXXXX";
    char *root = mkdtemp(tmpl);
    CHECK(root != NULL);
    if (!root) return;
    lt_dataset *ds = dataset(tok, 24, 0, 7), *ev = dataset(tok, 8, 0, 99);
    int64_t stopped[2] = {0, 0}, best_step[2] = {0, 0};
    float *w[2] = {NULL, NULL};
    int64_t nw[2] = {0, 0};
    for (int resumed = 0; resumed < 2; resumed++) {
        lt_model *m = fx_model("tiny-untied", 1);
        lt_train_params tp;
        lt_train_params_init(&tp);
        tp.max_steps = 20;
        tp.grad_accum = 1;
        tp.lr = 1e-2;
        tp.warmup_steps = 0;
        tp.optimizer = LT_OPTIM_ADAMW;
        tp.eval_data = ev;
        tp.eval_every = 2;
        tp.early_stopping_patience = 3;
        tp.early_stopping_threshold = 1e9; /* step 2 stays the best: evals 4, 6, 8 stop the run after 8 */
        tp.load_best_at_end = 1;
        tp.save_every = 4;
        char out[1024], ck[1100];
        snprintf(out, sizeof out, "%s/r%d", root, resumed);
        tp.output_dir = out;
        lt_trainer *tr = NULL;
        CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
        if (resumed) {
            snprintf(ck, sizeof ck, "%s/r0/checkpoint-4", root);
            CHECK_OK(lt_trainer_load_checkpoint(tr, ck));
        }
        lt_metrics mt = {sizeof mt};
        lt_status st;
        while ((st = lt_trainer_step(tr, &mt)) == LT_OK) {
        }
        CHECK(st == LT_DONE);
        lt_train_summary su = {sizeof su};
        CHECK_OK(lt_trainer_get_summary(tr, &su));
        stopped[resumed] = su.steps;
        best_step[resumed] = su.best_eval_step;
        CHECK(su.early_stopped && su.best_loaded && su.n_evals == 4);
        w[resumed] = lora_weights(m, &nw[resumed]);
        lt_trainer_free(tr);
        lt_model_free(m);
    }
    CHECK_MSG(stopped[0] == 8 && stopped[1] == 8, "early stopping after steps %lld (straight) and %lld (resumed at 4)",
              (long long)stopped[0], (long long)stopped[1]);
    CHECK(best_step[0] == 2 && best_step[1] == 2);
    CHECK(nw[0] == nw[1] && memcmp(w[0], w[1], (size_t)nw[0] * 4) == 0);
    printf("resume at step 4: early stopping after step %lld as the straight run (%lld), best step %lld, the best "
           "weights bit-equal\n", (long long)stopped[1], (long long)stopped[0], (long long)best_step[1]);
    free(w[0]);
    free(w[1]);
    lt_dataset_free(ds);
    lt_dataset_free(ev);
    rm_rf(root);
}

/* data parallel: the eval records are dealt to the ranks and the sums added up, so every rank
 * reports the same eval loss (and takes the same early-stopping decision) */
typedef struct dp_rank {
    lt_train_params tp;
    lt_dataset *ds;
    double eval[4];
    lt_status st;
} dp_rank;

static void *dp_main(void *arg) {
    dp_rank *r = arg;
    lt_model *m = fx_model("tiny-untied", 1);
    lt_trainer *tr = NULL;
    r->st = lt_trainer_new(m, r->ds, &r->tp, &tr);
    lt_metrics mt = {sizeof mt};
    for (int s = 0; s < 3 && r->st == LT_OK; s++) {
        r->st = lt_trainer_step(tr, &mt);
        r->eval[s] = mt.eval_loss;
    }
    lt_trainer_free(tr);
    lt_model_free(m);
    return NULL;
}

static void check_data_parallel(lt_tokenizer *tok) {
    lt_dataset *ds = dataset(tok, 24, 0, 7), *ev = dataset(tok, 9, 0, 99);
    dp_rank r[3];
    memset(r, 0, sizeof r);
    lt_comm *comm = NULL;
    lt_comm_params cp;
    lt_comm_params_init(&cp);
    cp.world_size = 2;
    CHECK_OK(lt_comm_new(&cp, &comm));
    for (int k = 0; k < 3; k++) { /* r[2]: world size 1, the reference */
        lt_train_params_init(&r[k].tp);
        r[k].tp.max_steps = 3;
        r[k].tp.grad_accum = k < 2 ? 1 : 2;
        r[k].tp.lr = 1e-3;
        r[k].tp.warmup_steps = 0;
        r[k].tp.optimizer = LT_OPTIM_ADAMW;
        r[k].tp.eval_data = ev;
        r[k].tp.eval_every = 1;
        r[k].tp.log_every = 0;
        if (k < 2) {
            r[k].tp.world_size = 2;
            r[k].tp.rank = k;
            r[k].tp.comm = comm;
        }
        r[k].ds = ds;
    }
    pthread_t th[2];
    for (int k = 0; k < 2; k++) pthread_create(&th[k], NULL, dp_main, &r[k]);
    for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);
    dp_main(&r[2]);
    for (int k = 0; k < 3; k++) CHECK_MSG(r[k].st == LT_OK, "rank %d: %s", k, lt_status_string(r[k].st));
    for (int s = 0; s < 3; s++) {
        CHECK(r[0].eval[s] == r[1].eval[s]);
        CHECK_NEAR(r[0].eval[s], r[2].eval[s], 1e-5);
    }
    printf("data parallel, 2 ranks: eval loss %.9f %.9f (equal), world size 1 %.9f\n", r[0].eval[2], r[1].eval[2],
           r[2].eval[2]);
    lt_comm_free(comm);
    lt_dataset_free(ds);
    lt_dataset_free(ev);
}

/* the schedule warnings, through the log callback */
static char warned[4096];
static void on_log(int32_t level, const char *msg, void *ud) {
    (void)ud;
    if (level == LT_LOG_WARN) snprintf(warned + strlen(warned), sizeof warned - strlen(warned), "%s\n", msg);
}

static void check_schedule_warnings(lt_tokenizer *tok) {
    lt_model *m = fx_model("tiny-untied", 1);
    lt_dataset *ds = dataset(tok, 8, 0, 7);
    lt_set_log_callback(on_log, LT_LOG_WARN, NULL);
    lt_train_params tp;
    lt_trainer *tr = NULL;
    /* --max-steps 3 with the default 50 warmup steps: lr never above 2/50 of its peak */
    lt_train_params_init(&tp);
    tp.max_steps = 3;
    warned[0] = 0;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    lt_trainer_free(tr);
    printf("warning: %s", warned);
    CHECK(strstr(warned, "warmup_steps 50 >= max_steps 3") != NULL);
    CHECK(strstr(warned, "1.6e-06") != NULL); /* the highest lr: 4e-5 * 2/50 at step 3 */
    /* a run that reaches its peak says nothing */
    tp.max_steps = 60;
    warned[0] = 0;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    lt_trainer_free(tr);
    CHECK(warned[0] == 0);
    lt_set_log_callback(NULL, LT_LOG_WARN, NULL);
    lt_dataset_free(ds);
    lt_model_free(m);
}

int main(void) {
    lt_tokenizer *tok = fx_tokenizer();
    check_early_stopping_curves();
    check_eval_equals_separate_pass(tok);
    check_eval_batching(tok);
    check_stop_limit_best(tok);
    check_resume(tok);
    check_data_parallel(tok);
    check_schedule_warnings(tok);
    lt_tokenizer_free(tok);
    return lt_test_done("test_train_eval");
}

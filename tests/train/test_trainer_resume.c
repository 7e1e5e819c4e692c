/* test_trainer_resume.c - checkpoint + resume is exact: 10 steps, save, a fresh model and
 * trainer, load, 10 more steps gives bit for bit the losses and adapter of 20 straight steps.
 * Covers LoRA dropout (RNG position), 8-bit AdamW state (r=64 makes lora_A tensors 8-bit while
 * the k/v lora_B keep fp32 state), several epochs (data cursor + reshuffle), and the
 * output folder: log.jsonl, loss.svg, checkpoint-N folders written atomically. */
#include "train_common.h"
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define STEPS 20

static lt_model *model_with_lora(uint64_t seed) {
    lt_model *m = fx_model("tiny-tied", 0);
    lt_lora_params lp;
    lt_lora_params_init(&lp);
    lp.r = 64;
    lp.alpha = 16;
    lp.dropout = 0.1f;
    lp.seed = seed;
    CHECK_OK(lt_model_add_lora(m, &lp));
    return m;
}

static lt_dataset *dataset(lt_tokenizer *tok) {
    lt_dataset *ds = fx_dataset(tok);
    uint64_t x = 99;
    for (int i = 0; i < 11; i++) {
        int32_t ids[32];
        int n = 4 + (i * 7) % 20;
        for (int t = 0; t < n; t++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            ids[t] = 3 + (int32_t)((x >> 33) % 250);
        }
        CHECK_OK(lt_dataset_add_tokens(ds, ids, NULL, (size_t)n));
    }
    return ds;
}

static void params(lt_train_params *tp, const char *out) {
    lt_train_params_init(tp);
    tp->batch_size = 2;
    tp->grad_accum = 2;
    tp->max_steps = STEPS;
    tp->lr = 2e-3;
    tp->warmup_steps = 3;
    tp->optimizer = LT_OPTIM_ADAMW_8BIT;
    tp->seed = 11;
    tp->output_dir = out;
    tp->save_every = 5;
    tp->log_every = 2;
}

/* every LoRA weight, concatenated */
static float *weights(lt_model *m, size_t *n_out) {
    size_t n = 0;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            lt_lora_tensor *t = &m->layers[l].lora[p];
            n += (size_t)(t->r * t->in + t->out * t->r);
        }
    float *w = malloc(n * 4), *q = w;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            lt_lora_tensor *t = &m->layers[l].lora[p];
            m->be->ops.download(m->be, q, t->A, (size_t)(t->r * t->in) * 4);
            q += t->r * t->in;
            m->be->ops.download(m->be, q, t->B, (size_t)(t->out * t->r) * 4);
            q += t->out * t->r;
        }
    *n_out = n;
    return w;
}

static int exists(const char *dir, const char *name) {
    char p[2048];
    snprintf(p, sizeof p, "%s%s%s", dir, name ? "/" : "", name ? name : "");
    struct stat sb;
    return stat(p, &sb) == 0;
}

static char *slurp(const char *dir, const char *name) {
    char p[2048];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    s[fread(s, 1, (size_t)n, f)] = 0;
    fclose(f);
    return s;
}

int main(void) {
    lt_tokenizer *tok = fx_tokenizer();
    char root[] = "/tmp/lt_resume_XXXXXX";
    if (!mkdtemp(root)) { perror("mkdtemp"); return 1; }
    char out_a[512], out_b[512], ckpt[512];
    snprintf(out_a, sizeof out_a, "%s/straight", root);
    snprintf(out_b, sizeof out_b, "%s/resumed", root);
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", root);
    double loss_a[STEPS], loss_b[STEPS];
    lt_train_params tp;

    /* 20 straight steps */
    lt_model *m = model_with_lora(3407);
    lt_dataset *ds = dataset(tok);
    params(&tp, out_a);
    lt_trainer *tr = NULL;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    for (int i = 0; i < STEPS; i++) {
        lt_metrics mt = {sizeof mt};
        CHECK_OK(lt_trainer_step(tr, &mt));
        loss_a[i] = mt.loss;
        if (i == STEPS - 1) CHECK(mt.epoch > 3.0); /* 80 records over an 11-record dataset */
    }
    CHECK(lt_trainer_step(tr, NULL) == LT_DONE);
    size_t n_w;
    float *w_a = weights(m, &n_w);
    lt_trainer_free(tr);
    lt_model_free(m);

    /* 10 steps, save, everything freed */
    m = model_with_lora(3407);
    params(&tp, out_b);
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    for (int i = 0; i < 10; i++) {
        lt_metrics mt = {sizeof mt};
        CHECK_OK(lt_trainer_step(tr, &mt));
        loss_b[i] = mt.loss;
    }
    CHECK_OK(lt_trainer_save_checkpoint(tr, ckpt));
    CHECK_OK(lt_trainer_save_checkpoint(tr, ckpt)); /* replacing an existing checkpoint */
    lt_trainer_free(tr);
    lt_model_free(m);
    CHECK(exists(ckpt, "adapter_config.json") && exists(ckpt, "adapter_model.safetensors"));
    CHECK(exists(ckpt, "optimizer.safetensors") && exists(ckpt, "trainer_state.json"));
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", ckpt);
    CHECK(!exists(tmp, NULL));
    snprintf(tmp, sizeof tmp, "%s.old", ckpt);
    CHECK(!exists(tmp, NULL));

    /* a fresh model with a different LoRA init: the checkpoint must restore everything */
    m = model_with_lora(1);
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    CHECK_OK(lt_trainer_load_checkpoint(tr, ckpt));
    for (int i = 10; i < STEPS; i++) {
        lt_metrics mt = {sizeof mt};
        CHECK_OK(lt_trainer_step(tr, &mt));
        CHECK(mt.step == i + 1);
        loss_b[i] = mt.loss;
    }
    CHECK(lt_trainer_step(tr, NULL) == LT_DONE);
    float *w_b = weights(m, &n_w);
    int same_loss = 1;
    for (int i = 0; i < STEPS; i++) {
        if (memcmp(&loss_a[i], &loss_b[i], sizeof(double)) != 0) same_loss = 0;
        printf("step %2d: straight %.9f resumed %.9f\n", i + 1, loss_a[i], loss_b[i]);
    }
    CHECK_MSG(same_loss, "losses differ after resume");
    CHECK_MSG(memcmp(w_a, w_b, n_w * 4) == 0, "adapters differ after resume");
    printf("20 straight steps vs 10 + checkpoint + resume + 10: losses %s, %zu adapter values %s\n",
           same_loss ? "bitwise equal" : "DIFFER", n_w, memcmp(w_a, w_b, n_w * 4) == 0 ? "bitwise equal" : "DIFFER");

    /* a checkpoint for another optimizer is refused with a clear message */
    lt_trainer_free(tr);
    tp.optimizer = LT_OPTIM_ADAMW;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    CHECK_FAIL(lt_trainer_load_checkpoint(tr, ckpt), LT_ERR_STATE, "optimizer");
    CHECK_FAIL(lt_trainer_load_checkpoint(tr, "/nonexistent/ckpt"), LT_ERR_NOT_FOUND, "no such checkpoint");
    lt_trainer_free(tr);

    /* the output folder */
    CHECK(exists(out_a, "checkpoint-5") && exists(out_a, "checkpoint-20"));
    CHECK(exists(out_a, "checkpoint-5/optimizer.safetensors"));
    char *log = slurp(out_a, "log.jsonl"), *svg = slurp(out_a, "loss.svg");
    CHECK(log && svg);
    if (log) {
        int lines = 0;
        for (char *c = log; *c; c++) lines += *c == '\n';
        CHECK_MSG(lines == STEPS / 2, "log.jsonl has %d lines", lines);
        CHECK(strstr(log, "{\"step\": 2, \"loss\": ") == log);
        const char *keys[] = {"\"lr\"", "\"grad_norm\"", "\"tokens\"", "\"tokens_per_s\"", "\"epoch\""};
        for (int k = 0; k < 5; k++) CHECK(strstr(log, keys[k]) != NULL);
        /* every line parses as JSON */
        char *save = NULL;
        for (char *line = strtok_r(log, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
            json_error_t e;
            json_t *j = json_loads(line, 0, &e);
            CHECK_MSG(j && json_is_integer(json_object_get(j, "step")), "bad log line %s", line);
            json_decref(j);
        }
    }
    if (svg) {
        CHECK(strstr(svg, "<svg") && strstr(svg, "<polyline") && strstr(svg, ">step<") && strstr(svg, ">loss<"));
        CHECK(strstr(svg, "</svg>") != NULL);
    }
    /* the resumed run's log continues the straight one */
    char *log_b = slurp(out_b, "log.jsonl");
    CHECK(log_b && strstr(log_b, "{\"step\": 20,"));
    free(log); free(svg); free(log_b);
    free(w_a); free(w_b);
    lt_model_free(m);
    lt_dataset_free(ds);
    lt_tokenizer_free(tok);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    return lt_test_done("test_trainer_resume");
}

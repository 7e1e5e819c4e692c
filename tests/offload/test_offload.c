/* test_offload.c - checkpoint offload (lt_train_params.offload_checkpoints) on the CPU backend,
 * where the checkpoints go to a separate host buffer through the same offload ops and device
 * slots as on CUDA: a 5-layer random Qwen2 (argv[1], made by init-random) trains 4 steps with
 * dropout, accumulation, records of varying length and evaluations with offload on and off, and
 * every loss, gradient norm, eval loss and LoRA weight must be equal bit for bit (the two device
 * slots are reused every two layers, so a checkpoint not copied back would show). The backend's
 * peak memory must drop by what lt_graph_bytes says the host now holds, the memory estimate
 * must say the same, lt_graph_bytes must be what lt_graph_reserve allocates in every mode, and
 * the refusals (offload without checkpointing, a value not 0/1) hold. */
#include "lt_test.h"
#include "model/graph.h"
#include "model/model_io.h"
#include "data/dataset.h"

static const char *model_dir;

static lt_model *load(void) {
    lt_model_params mp;
    lt_model_params_init(&mp);
    mp.device = LT_DEVICE_CPU;
    mp.n_threads = 2;
    lt_model *m = NULL;
    lt_status st = lt_model_load(model_dir, &mp, &m);
    if (st != LT_OK) { fprintf(stderr, "lt_model_load(%s): %s\n", model_dir, lt_last_error()); exit(1); }
    lt_lora_params lp;
    lt_lora_params_init(&lp);
    lp.r = 4;
    lp.alpha = 8;
    lp.dropout = 0.1f;
    lp.seed = 11;
    st = lt_model_add_lora(m, &lp);
    if (st != LT_OK) { fprintf(stderr, "lt_model_add_lora: %s\n", lt_last_error()); exit(1); }
    return m;
}

/* n records of random ids in [3, 512), lengths 6..45, the first two tokens without loss */
static lt_dataset *records(lt_tokenizer *tok, int n, uint64_t seed) {
    lt_dataset_params dp;
    lt_dataset_params_init(&dp);
    dp.format = LT_DATA_TOKENS;
    dp.add_eos = 0;
    dp.max_seq_len = 64;
    lt_dataset *ds = NULL;
    if (lt_dataset_new(tok, &dp, &ds) != LT_OK) { fprintf(stderr, "lt_dataset_new: %s\n", lt_last_error()); exit(1); }
    uint64_t x = seed;
    for (int i = 0; i < n; i++) {
        int32_t ids[64], labels[64];
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        int len = 6 + (int)((x >> 33) % 40);
        for (int t = 0; t < len; t++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            ids[t] = 3 + (int32_t)((x >> 33) % 509);
            labels[t] = t < 2 ? -100 : ids[t];
        }
        if (lt_dataset_add_tokens(ds, ids, labels, (size_t)len) != LT_OK) {
            fprintf(stderr, "lt_dataset_add_tokens: %s\n", lt_last_error());
            exit(1);
        }
    }
    return ds;
}

typedef struct run {
    int32_t max_len;      /* the longest record: the trainer's token budget is 2 x this */
    double loss[4], gnorm[4], eval[4];
    float *lora;          /* every A and B, layer by layer */
    size_t n_lora;
    uint64_t peak;
} run;

static void train(lt_tokenizer *tok, int offload, run *r) {
    lt_model *m = load();
    lt_dataset *ds = records(tok, 24, 42), *ev = records(tok, 5, 7);
    lt_dataset_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    CHECK_OK(lt_dataset_get_stats(ds, &stats));
    r->max_len = stats.max_len;
    lt_train_params tp;
    lt_train_params_init(&tp);
    tp.batch_size = 2;
    tp.grad_accum = 2;
    tp.max_steps = 4;
    tp.warmup_steps = 0;
    tp.lr = 2e-3;
    tp.eval_data = ev;
    tp.eval_every = 2;
    tp.eval_batch_size = 2;
    tp.fuse_micro_batches = 0;
    tp.offload_checkpoints = offload;
    lt_trainer *tr = NULL;
    CHECK_OK(lt_trainer_new(m, ds, &tp, &tr));
    if (tr) {
        CHECK(m->graph != NULL);
        for (int i = 0; i < 4; i++) {
            lt_metrics mt;
            memset(&mt, 0, sizeof mt);
            mt.struct_size = sizeof mt;
            CHECK_OK(lt_trainer_step(tr, &mt));
            r->loss[i] = mt.loss;
            r->gnorm[i] = mt.grad_norm;
            r->eval[i] = isnan(mt.eval_loss) ? -1.0 : mt.eval_loss;
        }
    }
    r->n_lora = 0;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++)
            if (m->layers[l].lora[p].A) r->n_lora += (size_t)m->layers[l].lora[p].r * (size_t)(m->layers[l].lora[p].in + m->layers[l].lora[p].out);
    r->lora = malloc(r->n_lora * sizeof(float));
    size_t off = 0;
    for (int l = 0; l < m->cfg.num_layers; l++)
        for (int p = 0; p < LT_PROJ_COUNT; p++) {
            lt_lora_tensor *t = &m->layers[l].lora[p];
            if (!t->A) continue;
            CHECK_OK(m->be->ops.download(m->be, r->lora + off, t->A, (size_t)(t->r * t->in) * 4));
            off += (size_t)(t->r * t->in);
            CHECK_OK(m->be->ops.download(m->be, r->lora + off, t->B, (size_t)(t->out * t->r) * 4));
            off += (size_t)(t->out * t->r);
        }
    m->be->ops.memory(m->be, NULL, &r->peak);
    lt_trainer_free(tr);
    lt_dataset_free(ds);
    lt_dataset_free(ev);
    lt_model_free(m);
}

/* the token budget the trainer reserved: batch 2 x the longest record */
static void check_memory(const run *on, const run *off) {
    lt_config c;
    CHECK_OK(lt_config_load(model_dir, &c));
    const int64_t cap = 2 * (int64_t)on->max_len;
    const uint64_t keep = lt_graph_bytes(&c, 4, 4, cap, LT_GRAPH_TRAIN);
    const uint64_t slots = lt_graph_bytes(&c, 4, 4, cap, LT_GRAPH_TRAIN_OFFLOAD);
    const uint64_t host = lt_graph_host_bytes(&c, 4, 4, cap, LT_GRAPH_TRAIN_OFFLOAD);
    /* L+1 checkpoints and L xa sets on the device become 2 + 2; the host holds L-1 of each */
    const uint64_t C = (uint64_t)c.hidden_size, L = (uint64_t)c.num_layers, xa = 4ull * LT_PROJ_COUNT;
    CHECK(keep - slots == ((L + 1 - 2) * C + (L - 2) * xa) * (uint64_t)cap * 4);
    CHECK(host == (L - 1) * (C + xa) * (uint64_t)cap * 4);
    CHECK(lt_graph_host_bytes(&c, 4, 4, cap, LT_GRAPH_TRAIN) == 0);
    printf("peak backend memory: %llu bytes with the checkpoints on the device, %llu offloaded (graph: %llu -> %llu, "
           "host %llu)\n", (unsigned long long)off->peak, (unsigned long long)on->peak, (unsigned long long)keep,
           (unsigned long long)slots, (unsigned long long)host);
    /* the buffers are 64-byte rounded: the drop is the graph's difference to within that */
    CHECK_MSG(off->peak > on->peak && off->peak - on->peak + 64 * 64 >= keep - slots && off->peak - on->peak <= keep - slots + 64 * 64,
              "peak %llu -> %llu, graph difference %llu", (unsigned long long)off->peak, (unsigned long long)on->peak,
              (unsigned long long)(keep - slots));

    /* the estimate for the same shape: the activations drop by the same bytes */
    lt_model_params mp;
    lt_model_params_init(&mp);
    mp.device = LT_DEVICE_CPU;
    mp.max_seq_len = on->max_len;
    lt_lora_params lp;
    lt_lora_params_init(&lp);
    lp.r = 4;
    lt_train_params tp;
    lt_train_params_init(&tp);
    tp.batch_size = 2;
    lt_memory_estimate e0, e1;
    CHECK_OK(lt_estimate_memory(model_dir, &mp, &lp, &tp, &e0));
    tp.offload_checkpoints = 1;
    CHECK_OK(lt_estimate_memory(model_dir, &mp, &lp, &tp, &e1));
    CHECK(e0.activations - e1.activations == keep - slots);
    CHECK(e0.total - e1.total == keep - slots);
}

/* lt_graph_bytes (what the estimate adds up) against what lt_graph_reserve allocates, in every
 * mode: the backend's in-use bytes grow by exactly that (the CPU backend counts requested bytes) */
static void check_reserve_sizes(void) {
    static const int modes[4] = {LT_GRAPH_INFER, LT_GRAPH_TRAIN_OFFLOAD, LT_GRAPH_TRAIN, LT_GRAPH_TRAIN_KEEP};
    for (int i = 0; i < 4; i++) {
        lt_model *m = load();
        const int64_t n = 77;
        uint64_t before = 0, after = 0;
        m->be->ops.memory(m->be, &before, NULL);
        CHECK_OK(lt_graph_reserve(m, n, modes[i]));
        m->be->ops.memory(m->be, &after, NULL);
        const uint64_t want = lt_graph_bytes(&m->cfg, m->be->act_bytes, m->lora.r, n, modes[i]);
        CHECK_MSG(after - before == want, "mode %d: reserve took %llu bytes, lt_graph_bytes says %llu", modes[i],
                  (unsigned long long)(after - before), (unsigned long long)want);
        lt_model_free(m);
    }
}

static void check_refusals(lt_tokenizer *tok) {
    lt_model *m = load();
    lt_dataset *ds = records(tok, 4, 1);
    lt_train_params tp;
    lt_train_params_init(&tp);
    lt_trainer *tr = NULL;
    tp.offload_checkpoints = 2;
    CHECK_FAIL(lt_trainer_new(m, ds, &tp, &tr), LT_ERR_INVALID_ARGUMENT, "offload_checkpoints must be 0 or 1");
    tp.offload_checkpoints = 1;
    tp.gradient_checkpointing = 0;
    CHECK_FAIL(lt_trainer_new(m, ds, &tp, &tr), LT_ERR_INVALID_ARGUMENT, "needs gradient_checkpointing=1");
    CHECK(tr == NULL);
    lt_dataset_free(ds);
    lt_model_free(m);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: test_offload MODEL_DIR\n"); return 2; }
    model_dir = argv[1];
    lt_tokenizer *tok = NULL;
    if (lt_tokenizer_load(LT_REPO_ROOT "/assets/qwen2-tokenizer", &tok) != LT_OK) {
        fprintf(stderr, "lt_tokenizer_load: %s\n", lt_last_error());
        return 1;
    }
    run off, on;
    train(tok, 0, &off);
    train(tok, 1, &on);
    CHECK(off.n_lora == on.n_lora && off.n_lora > 0);
    CHECK(!memcmp(off.loss, on.loss, sizeof off.loss));
    CHECK(!memcmp(off.gnorm, on.gnorm, sizeof off.gnorm));
    CHECK(!memcmp(off.eval, on.eval, sizeof off.eval));
    CHECK(off.eval[1] > 0 && off.eval[3] > 0); /* evaluations ran (steps 2 and 4) */
    CHECK(off.n_lora == on.n_lora && !memcmp(off.lora, on.lora, off.n_lora * sizeof(float)));
    for (int i = 0; i < 4; i++)
        printf("step %d: loss %.9f / %.9f, grad norm %.9f / %.9f, eval %.9f / %.9f (offload off / on)\n", i + 1,
               off.loss[i], on.loss[i], off.gnorm[i], on.gnorm[i], off.eval[i], on.eval[i]);
    check_memory(&on, &off);
    check_reserve_sizes();
    check_refusals(tok);
    free(off.lora);
    free(on.lora);
    lt_tokenizer_free(tok);
    return lt_test_done("test_offload");
}

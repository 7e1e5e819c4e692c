/* test_offload.c - checkpoint offload (lt_train_params.offload_checkpoints) on the CPU backend,
 * where the checkpoints go to a separate host buffer through the same offload ops and device
 * slots as on CUDA: a 5-layer random Qwen2 (argv[1], made by init-random) trains 4 steps with
 * dropout, accumulation, records of varying length and evaluations with offload on and off, and
 * every loss, gradient norm, eval loss and LoRA weight must be equal bit for bit (the two device
 * slots are reused every two layers, so a checkpoint not copied back would show). The backend's
 * peak memory must drop by what lt_graph_bytes says the host now holds, the memory estimate
 * must say the same, lt_graph_bytes must be what lt_graph_reserve allocates in every mode, and
 * the refusals (offload without checkpointing, a value not 0/1) hold. The offload mode's MLP
 * token chunks (made small here, so that 2 x 1500 tokens run 24 of them) give the device mode's
 * loss and LoRA gradients, with and without dropout, and their buffers are what lt_graph_bytes
 * and the estimate say. */
#include "lt_test.h"
#include "model/graph.h"
#include "model/model_io.h"
#include "data/dataset.h"
#include "lt_test_lora.h"

static const char *model_dir;

static lt_model *load_dir(const char *dir) {
    lt_model_params mp;
    lt_model_params_init(&mp);
    mp.device = LT_DEVICE_CPU;
    mp.n_threads = 2;
    lt_model *m = NULL;
    lt_status st = lt_model_load(dir, &mp, &m);
    if (st != LT_OK) { fprintf(stderr, "lt_model_load(%s): %s\n", dir, lt_last_error()); exit(1); }
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

static lt_model *load(void) {
    return load_dir(model_dir);
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
 * mode: the backend's in-use bytes grow by exactly that (the CPU backend counts requested bytes);
 * for n tokens of one MLP chunk or more (mlp_chunk: the offload mode's, 0 the default) */
static void check_reserve_sizes(int64_t n, int64_t mlp_chunk) {
    static const int modes[4] = {LT_GRAPH_INFER, LT_GRAPH_TRAIN_OFFLOAD, LT_GRAPH_TRAIN, LT_GRAPH_TRAIN_KEEP};
    CHECK_OK(lt_graph_test_set_mlp_chunk(mlp_chunk));
    for (int i = 0; i < 4; i++) {
        lt_model *m = load();
        uint64_t before = 0, after = 0;
        m->be->ops.memory(m->be, &before, NULL);
        CHECK_OK(lt_graph_reserve(m, n, modes[i]));
        m->be->ops.memory(m->be, &after, NULL);
        const uint64_t want = lt_graph_bytes(&m->cfg, m->be->act_bytes, m->lora.r, n, modes[i]);
        CHECK_MSG(after - before == want, "mode %d, %lld tokens: reserve took %llu bytes, lt_graph_bytes says %llu",
                  modes[i], (long long)n, (unsigned long long)(after - before), (unsigned long long)want);
        lt_model_free(m);
    }
    CHECK_OK(lt_graph_test_set_mlp_chunk(0));
}

/* LoRA gradients by tensor, with the projection each belongs to */
typedef struct proj_grads {
    lt_test_grads g;
    int n;
    int proj[64];
    size_t start[65];
} proj_grads;

static void collect_proj(lt_model *m, int layer, int proj, lt_lora_tensor *t, void *ctx) {
    proj_grads *pg = ctx;
    if (pg->n >= 64) { CHECK(pg->n < 64); return; }
    pg->proj[pg->n] = proj;
    pg->start[pg->n] = pg->g.n;
    lt_test_collect_grads(m, layer, proj, t, &pg->g);
    pg->start[++pg->n] = pg->g.n;
}

/* MLP token chunks: one forward+backward pass of 2 x len tokens of the model in dir with the
 * checkpoints offloaded and the MLP in chunks of `chunk` tokens (the last one short) against the
 * device-checkpoint mode (one MLP pass over all tokens), from the same adapter (B seeded), with
 * dropout off and 0.1. The loss and the LoRA gradients of q/k/v/o must be equal bit for bit (the
 * MLP acts per token, and each chunk draws its rows' dropout masks); those of gate/up/down, whose
 * sums over the tokens add up chunk by chunk, within 4e-6 (relative L2 norm of the difference). */
static void compare_chunked(const char *dir, const char *name, int len, int chunk) {
    lt_config cfg;
    CHECK_OK(lt_config_load(dir, &cfg));
    int32_t *ids[2], *labels[2];
    for (int s = 0; s < 2; s++) {
        ids[s] = malloc((size_t)len * sizeof(int32_t));
        labels[s] = malloc((size_t)len * sizeof(int32_t));
        for (int i = 0; i < len; i++) {
            ids[s][i] = 3 + (int32_t)((i * (97 + 14 * s) + 31 * s + (i * i) % 13) % (cfg.vocab_size - 3));
            labels[s][i] = i < 2 ? -100 : ids[s][i];
        }
    }
    const size_t lens[2] = {(size_t)len, (size_t)len};
    lt_batch b;
    memset(&b, 0, sizeof b);
    CHECK_OK(lt_batch_pack(&b, 2, (const int32_t *const *)ids, (const int32_t *const *)labels, lens));
    CHECK_OK(lt_graph_test_set_mlp_chunk(chunk));
    CHECK(lt_graph_mlp_rows(b.n_tokens, LT_GRAPH_TRAIN_OFFLOAD) == chunk);
    CHECK(lt_graph_mlp_rows(b.n_tokens, LT_GRAPH_TRAIN) == b.n_tokens);
    double drop_loss[2] = {0, 0};
    for (int drop = 0; drop < 2; drop++) {
        double loss[2] = {0, 0};
        proj_grads pg[2];
        memset(pg, 0, sizeof pg);
        for (int off = 0; off < 2; off++) {
            lt_model *m = load_dir(dir); /* lora dropout 0.1, used when the pass trains */
            const uint64_t b_seed = 9;
            lt_model_foreach_lora(m, lt_test_seed_b, (void *)&b_seed);
            lt_graph_pass pass = {drop, 42, 5, 0, off};
            CHECK_OK(lt_graph_forward_backward(m, &b, (float)(1.0 / (double)b.n_targets), &pass, &loss[off]));
            lt_model_foreach_lora(m, collect_proj, &pg[off]);
            lt_model_free(m);
        }
        CHECK(pg[0].n == pg[1].n && pg[0].n > 0 && pg[0].g.n == pg[1].g.n);
        CHECK_MSG(loss[0] == loss[1], "dropout %d: loss %.9g in the device mode, %.9g with MLP chunks", drop, loss[0],
                  loss[1]);
        double worst = 0, worst_max = 0;
        int exact_attn = 1, differ_mlp = 0;
        for (int t = 0; t < pg[0].n && pg[0].n == pg[1].n; t++) {
            const float *a = pg[0].g.v + pg[0].start[t], *c = pg[1].g.v + pg[1].start[t];
            const size_t n = pg[0].start[t + 1] - pg[0].start[t];
            const int mlp = pg[0].proj[t] >= LT_PROJ_GATE;
            double big = 0, diff = 0, norm = 0, dnorm = 0;
            for (size_t i = 0; i < n; i++) {
                const double d = fabs((double)a[i] - (double)c[i]);
                if (fabs((double)a[i]) > big) big = fabs((double)a[i]);
                if (d > diff) diff = d;
                norm += (double)a[i] * a[i];
                dnorm += d * d;
            }
            CHECK_MSG(big > 0, "tensor %d (%s): zero gradient", t, lt_proj_names[pg[0].proj[t]]);
            if (!mlp) exact_attn &= !memcmp(a, c, n * sizeof(float));
            else {
                differ_mlp += diff > 0;
                if (big > 0 && diff / big > worst_max) worst_max = diff / big;
                if (norm > 0 && sqrt(dnorm / norm) > worst) worst = sqrt(dnorm / norm);
            }
        }
        CHECK_MSG(exact_attn, "dropout %d: the q/k/v/o gradients differ with MLP chunks", drop);
        /* the CPU sums a parameter gradient over the tokens in one f32 accumulator and adds it,
         * scaled, to dA/dB: once per chunk here, once in all without chunks (about 1e-6 apart) */
        CHECK_MSG(worst <= 4e-6, "dropout %d: gate/up/down gradients differ by %.3g (relative L2 norm)", drop, worst);
        int n_mlp = 0;
        for (int t = 0; t < pg[0].n; t++) n_mlp += pg[0].proj[t] >= LT_PROJ_GATE;
        printf("%s, MLP chunks (2 x %d tokens, %d per chunk), dropout %s: loss %.9f in both modes, q/k/v/o "
               "gradients equal bit for bit, gate/up/down within %.2g (relative L2; largest element difference %.2g "
               "of the tensor's largest; %d of %d tensors not bit for bit)\n",
               name, len, chunk, drop ? "0.1" : "off", loss[0], worst, worst_max, differ_mlp, n_mlp);
        drop_loss[drop] = loss[1];
        for (int off = 0; off < 2; off++) free(pg[off].g.v);
    }
    /* dropout drew masks: the loss differs from the one without */
    CHECK_MSG(drop_loss[0] != drop_loss[1], "%s: the loss %.9g is the same with dropout off and on", name,
              drop_loss[0]);
    CHECK_OK(lt_graph_test_set_mlp_chunk(0));
    lt_batch_free(&b);
    for (int s = 0; s < 2; s++) {
        free(ids[s]);
        free(labels[s]);
    }
}

/* the chunked passes of the test's model and of the family fixtures (the layer descriptions'
 * MLP variants: GELU and sandwich norms, fused gate_up, q/k norms), and the buffer sizes */
static void check_mlp_chunks(void) {
    enum { LEN = 1500 };
    compare_chunked(model_dir, "qwen2 5 layers", LEN, 128);
    static const char *const fams[] = {"gemma2", "gemma3", "phi3", "qwen3", "llama"};
    for (size_t f = 0; f < sizeof fams / sizeof fams[0]; f++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/tests/fixtures/families/%s", LT_REPO_ROOT, fams[f]);
        compare_chunked(dir, fams[f], 300, 64);
    }
    CHECK_OK(lt_graph_test_set_mlp_chunk(128));
    /* the estimate for this shape counts the chunked buffers: the graph's bytes (what reserve
     * allocates, check_reserve_sizes) plus the CPU head's chunk of f32 logits (1024 tokens) */
    lt_config c;
    CHECK_OK(lt_config_load(model_dir, &c));
    lt_model_params mp;
    lt_model_params_init(&mp);
    mp.device = LT_DEVICE_CPU;
    mp.max_seq_len = LEN;
    lt_lora_params lp;
    lt_lora_params_init(&lp);
    lp.r = 4;
    lt_train_params tp;
    lt_train_params_init(&tp);
    tp.batch_size = 2;
    tp.offload_checkpoints = 1;
    lt_memory_estimate e;
    memset(&e, 0, sizeof e);
    e.struct_size = sizeof e;
    CHECK_OK(lt_estimate_memory(model_dir, &mp, &lp, &tp, &e));
    const uint64_t chunked = lt_graph_bytes(&c, 4, 4, 2 * LEN, LT_GRAPH_TRAIN_OFFLOAD);
    CHECK(e.activations == chunked + 1024ull * (uint64_t)c.vocab_size * 4);
    CHECK_OK(lt_graph_test_set_mlp_chunk(0));
    /* with the default chunk (512 tokens: 6 chunks for 2 x 1500) the MLP buffers hold 512 rows;
     * the device mode's hold all 3000, with the attention's gradients inside gate and up */
    const uint64_t QD = (uint64_t)c.num_heads * c.head_dim, KD = (uint64_t)c.num_kv_heads * c.head_dim;
    const uint64_t I = (uint64_t)c.intermediate_size, n = 2 * LEN, M = LT_GRAPH_MLP_CHUNK;
    const uint64_t whole = lt_graph_bytes(&c, 4, 4, 2 * LEN, LT_GRAPH_TRAIN_OFFLOAD);
    CHECK(lt_graph_mlp_rows(2 * LEN, LT_GRAPH_TRAIN_OFFLOAD) == LT_GRAPH_MLP_CHUNK);
    /* unchunked: 3 (gate, up, act) + 1 (dact) buffers of (N,I), the attention gradients in gate/up */
    CHECK(whole == chunked + 4 * 4 * I * (M - 128));
    CHECK(lt_graph_bytes(&c, 4, 4, 2 * LEN, LT_GRAPH_TRAIN) ==
          whole + 4 * 4 * I * (n - M) - 4 * n * (2 * QD + 2 * KD) + (uint64_t)(c.num_layers - 1) * n * c.hidden_size * 4 +
              (uint64_t)(c.num_layers - 2) * n * 4 * 4 * LT_PROJ_COUNT);
}

/* The offload ops at the latest moment the CUDA semantics allow: a copy runs only when
 * offload_wait names it or a later ticket (in ticket order, as the copy stream runs them), or at
 * the next download. CPU copies otherwise finish inside offload_copy, so a missing or short
 * offload_wait (a copy-out still reading a slot that the next layer overwrites, a copy-in not yet
 * landed when the recompute reads the slot) would go unseen; deferred, it changes the bits. */
typedef struct defer_copy { void *dst; const void *src; size_t bytes; uint64_t t; } defer_copy;
static defer_copy defer_q[1024];
static int defer_n, defer_short;
static uint64_t defer_t;
static lt_status (*defer_download0)(lt_backend *, void *, const void *, size_t);
static void defer_run(uint64_t upto) {
    int k = 0;
    for (int i = 0; i < defer_n; i++) {
        if (defer_q[i].t <= upto) memmove(defer_q[i].dst, defer_q[i].src, defer_q[i].bytes);
        else defer_q[k++] = defer_q[i];
    }
    defer_n = k;
}
static lt_status defer_copy_op(lt_backend *be, void *dst, const void *src, size_t bytes, uint64_t *ticket) {
    (void)be;
    *ticket = ++defer_t;
    if (defer_n == (int)(sizeof defer_q / sizeof defer_q[0])) return lt_error(LT_ERR_INTERNAL, "defer queue full");
    defer_q[defer_n++] = (defer_copy){dst, src, bytes, defer_t};
    return LT_OK;
}
static lt_status defer_wait_op(lt_backend *be, uint64_t ticket) {
    (void)be;
    defer_run(defer_short && ticket ? ticket - 1 : ticket);
    return LT_OK;
}
static lt_status defer_download_op(lt_backend *be, void *dst, const void *src, size_t bytes) {
    CHECK_MSG(defer_short || defer_n == 0, "%d offload copies not waited for when the pass reads its loss", defer_n);
    defer_run(UINT64_MAX);
    return defer_download0(be, dst, src, bytes);
}

/* three offloaded passes (MLP chunks of `chunk` tokens: 0 the default) with the copies eager or
 * deferred; the losses and the accumulated LoRA gradients */
static double defer_passes(int deferred, int chunk, const lt_batch *b, lt_test_grads *g) {
    lt_model *m = load();
    const uint64_t b_seed = 9;
    lt_model_foreach_lora(m, lt_test_seed_b, (void *)&b_seed);
    if (deferred) {
        m->be->ops.offload_copy = defer_copy_op;
        m->be->ops.offload_wait = defer_wait_op;
        defer_download0 = m->be->ops.download;
        m->be->ops.download = defer_download_op;
    }
    CHECK_OK(lt_graph_test_set_mlp_chunk(chunk));
    double loss = 0;
    for (int i = 0; i < 3; i++) {
        lt_graph_pass pass = {1, 42, (uint64_t)(5 + i), 0, 1};
        CHECK_OK(lt_graph_forward_backward(m, &b[i % 2], (float)(1.0 / (double)b[i % 2].n_targets), &pass, &loss));
    }
    memset(g, 0, sizeof *g);
    lt_model_foreach_lora(m, lt_test_collect_grads, g);
    lt_model_free(m);
    CHECK_OK(lt_graph_test_set_mlp_chunk(0));
    return loss;
}

static void check_deferred_copies(void) {
    lt_config cfg;
    CHECK_OK(lt_config_load(model_dir, &cfg));
    lt_batch b[2];
    for (int v = 0; v < 2; v++) {
        const int len = v ? 300 : 200;
        int32_t *ids[2], *lab[2];
        for (int s = 0; s < 2; s++) {
            ids[s] = malloc((size_t)len * sizeof(int32_t));
            lab[s] = malloc((size_t)len * sizeof(int32_t));
            for (int i = 0; i < len; i++) {
                ids[s][i] = 3 + (i * (97 + 14 * s + v) + 31 * s) % (cfg.vocab_size - 3);
                lab[s][i] = i < 2 ? -100 : ids[s][i];
            }
        }
        const size_t lens[2] = {(size_t)len, (size_t)(len - 37 * v)};
        memset(&b[v], 0, sizeof b[v]);
        CHECK_OK(lt_batch_pack(&b[v], 2, (const int32_t *const *)ids, (const int32_t *const *)lab, lens));
        for (int s = 0; s < 2; s++) { free(ids[s]); free(lab[s]); }
    }
    for (int chunk = 0; chunk <= 64; chunk += 64) {
        lt_test_grads e, d;
        const double le = defer_passes(0, chunk, b, &e), ld = defer_passes(1, chunk, b, &d);
        CHECK_MSG(le == ld && e.n == d.n && !memcmp(e.v, d.v, e.n * sizeof(float)),
                  "MLP chunk %d: offload copies deferred to their waits change the pass (loss %.9g / %.9g)", chunk,
                  le, ld);
        if (chunk == 64) { /* self-check: a wait one ticket short is seen */
            lt_test_grads s;
            defer_short = 1;
            defer_passes(1, chunk, b, &s);
            defer_short = 0;
            CHECK_MSG(s.n == e.n && memcmp(s.v, e.v, e.n * sizeof(float)), "a wait one ticket short went unseen");
            free(s.v);
        }
        free(e.v);
        free(d.v);
    }
    for (int v = 0; v < 2; v++) lt_batch_free(&b[v]);
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
    check_reserve_sizes(77, 0);
    check_reserve_sizes(3000, 128);
    check_mlp_chunks();
    check_deferred_copies();
    check_refusals(tok);
    free(off.lora);
    free(on.lora);
    lt_tokenizer_free(tok);
    return lt_test_done("test_offload");
}

/* graph.c - the decoder's forward / backward over the backend ops on a packed micro-batch, as
 * the config's layer description says (norm placement, q/k norms, activation, rope, attention
 * options, fused projections), with gradient checkpointing (one residual tensor kept per
 * layer, the layer recomputed in backward) and the fused chunked LM head + cross-entropy; and
 * the same layers over a KV cache for generation (lt_graph_forward_cached). See graph.h. */
#include "model/graph.h"
#include "core/rng.h"

#include <stdlib.h>
#include <string.h>

/* One layer's activations, as the backward needs them. M: the MLP's rows (g->mlp_rows: N, or one
 * token chunk of the memory-saving mode, whose MLP runs chunk by chunk). */
typedef struct layer_acts {
    void *ln1;              /* (N,C) */
    void *q;                /* (N,NH*HD) after rope */
    void *k, *v;            /* (N,NKV*HD), k after rope */
    void *att;              /* (N,NH*HD) attention output */
    void *hmid;             /* (N,C) residual after attention */
    void *ln2;              /* (N,C) */
    void *gate, *up, *act;  /* (M,I) */
    void *xa[LT_PROJ_COUNT];/* (N,R) LoRA A outputs */
    float *rstd1, *rstd2;   /* (N) */
    float *lse;             /* (NH,N) */
    /* by the layer description (NULL when it does not need them) */
    void *qr, *kr;          /* qk_norm: (N,NH*HD), (N,NKV*HD) q and k before their norms */
    float *rstdq, *rstdk;   /* qk_norm: (N*NH), (N*NKV) */
    void *o, *dn;           /* sandwich_norm: (N,C) o_proj and down_proj outputs before their norms */
    float *rstd_pa, *rstd_pf; /* sandwich_norm: (N) */
    void *qkv;              /* fused_qkv: (N,NH*HD+2*NKV*HD) */
    void *gu;               /* fused_gate_up: (M,2I) */
} layer_acts;

struct lt_graph {
    lt_backend *be;         /* the backend the buffers live on */
    int32_t n_layers;
    int64_t cap;            /* token budget N the buffers hold */
    int32_t r;              /* LoRA rank the xa buffers were sized for (0: none) */
    int32_t train;          /* backward buffers present */
    int64_t mlp_rows;       /* M: rows of the MLP buffers (cap, or the MLP chunk: lt_graph_mlp_rows) */
    int64_t mlp_chunk;      /* the MLP chunk setting they were sized with */
    /* inputs, i32 */
    int32_t *ids, *pos, *targets; /* (N) */
    int32_t *cu;                  /* (N+1) */
    /* checkpoints, act */
    void **res;             /* [L+1] x (N,C): res[l] enters layer l, res[L] leaves the last */
    /* activations: one set recomputed per layer (checkpointing), or one per layer (n_acts = L,
     * gradient_checkpointing off: no recompute, more memory) */
    layer_acts *acts;
    int32_t n_acts;
    /* [L * LT_PROJ_COUNT] x (N,R): with checkpointing and LoRA, every layer's LoRA A outputs from
     * the forward pass (N x 224 bytes per layer for r = 16, 16-bit), so that the recompute reuses
     * them instead of drawing the dropout masks and multiplying again (the set's xa unused) */
    void **xa_keep;
    void *proj;             /* (N,C) o_proj / down_proj output (scratch) */
    void *lnf;              /* (N,C) final norm output */
    float *rstdf;           /* (N) */
    float *loss;            /* (1) CE sum */
    /* backward, act */
    void *dres;             /* (N,C) gradient of the residual stream */
    void *dln;              /* (N,C) gradient of a norm output */
    void *dq, *datt;        /* (N,NH*HD) */
    void *dk, *dv;          /* (N,NKV*HD) */
    void *dgate, *dup, *dact; /* (M,I) */
    void *dqr, *dkr;        /* qk_norm: (N,NH*HD), (N,NKV*HD) */
    void *dpost;            /* sandwich_norm: (N,C) gradient of a post-norm's input */
    void *dqkv;             /* fused_qkv: (N,NH*HD+2*NKV*HD) */
    void *dgu;              /* fused_gate_up: (M,2I) */
    /* checkpoint offload (mode LT_GRAPH_TRAIN_OFFLOAD): res[l] and layer l's xa_keep point into
     * device slot l % 2, which holds layer l's checkpoint while the forward makes it and while
     * the backward reads it; the host copies (the backend's host memory) keep layers
     * [0, L-1): the last layer is not recomputed, its slot is never overwritten */
    int32_t offload;
    /* one activation set with backward buffers (modes TRAIN, TRAIN_OFFLOAD): buffers whose lives
     * never overlap share memory (see share_ok): dgate and dup are acts[0].gate and .up (the
     * GLU backward runs in place); datt and dq lie in acts[0].gate, dk and dv in acts[0].up
     * (share_attn) */
    int32_t share_glu, share_attn;
    void *slot_res[2];      /* (N,C) */
    void *slot_xa[2];       /* LT_PROJ_COUNT x (N,R), xa_keep's layout */
    void *host_res;         /* (L-1) x (N,C) */
    void *host_xa;          /* (L-1) x LT_PROJ_COUNT x (N,R) */
    /* logits for lt_graph_logits, f32 (chunk,V), and their argmax for evaluation (chunk), kept:
     * freeing between evaluations would invalidate the recorded training pass */
    float *logits;
    int64_t logits_rows;
    int32_t *argmax;
    int64_t argmax_rows;
    /* backend graphs of training pass shapes (see rec_key): a shape seen twice in a row, or
     * twice among the last LT_GRAPH_SEEN passes when the pass says shapes recur (shapes_recur:
     * the trainer's token-budget buckets); the least recently used of LT_GRAPH_RECS gives way,
     * and one of an older memory epoch at once */
    int rec_failed;         /* recording failed for rec_want: passes of that key run op by op */
    uint64_t rec_clock;
    int seen_next;          /* the ring of the last LT_GRAPH_SEEN keys run (seen[]) */
    struct rec_key {
        int64_t N;
        int32_t nseq, max_seqlen, keep, lora_on, deterministic, offload;
        float dropout, grad_scale, lora_scale;
        lt_lora_params lora;
        uint64_t epoch;     /* the backend's memory epoch */
    } last_key, rec_want;
    struct graph_rec {
        void *exec;         /* NULL: a free slot */
        uint64_t base;      /* the stream base it was recorded with */
        uint64_t used;      /* rec_clock at its last launch */
        struct rec_key key;
    } recs[LT_GRAPH_RECS];
    struct rec_key seen[LT_GRAPH_SEEN];
};

#define LT_LOGITS_CHUNK_FLOATS LT_GRAPH_LOGITS_CHUNK_FLOATS

static int64_t logits_rows(int64_t n_tokens, int64_t V) {
    int64_t rows = (int64_t)(LT_LOGITS_CHUNK_FLOATS / (uint64_t)V);
    if (rows < 1) rows = 1;
    return rows > n_tokens ? n_tokens : rows;
}

uint64_t lt_graph_eval_bytes(int64_t n_tokens, int64_t vocab_size) {
    if (n_tokens < 1 || vocab_size < 1) return 0;
    const uint64_t rows = (uint64_t)logits_rows(n_tokens, vocab_size);
    return rows * (uint64_t)vocab_size * sizeof(float) + rows * sizeof(int32_t);
}

static lt_status galloc(lt_backend *be, void **p, size_t bytes) {
    if (bytes == 0) bytes = 16;
    return be->ops.alloc(be, bytes, p);
}
static void gfree(lt_backend *be, void **p) {
    if (*p) be->ops.free(be, *p);
    *p = NULL;
}

void lt_graph_free(lt_graph *g) {
    if (!g) return;
    lt_backend *be = g->be;
    if (g->share_glu) g->dgate = g->dup = NULL; /* acts[0]'s */
    if (g->share_attn) g->datt = g->dq = g->dk = g->dv = NULL;
    void **bufs[] = {(void **)&g->ids, (void **)&g->pos, (void **)&g->targets, (void **)&g->cu, &g->proj, &g->lnf,
                     (void **)&g->rstdf, (void **)&g->loss, &g->dres, &g->dln, &g->dq, &g->datt, &g->dk, &g->dv,
                     &g->dgate, &g->dup, &g->dact, (void **)&g->logits, &g->dqr, &g->dkr, &g->dpost, &g->dqkv,
                     &g->dgu, (void **)&g->argmax};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) gfree(be, bufs[i]);
    for (int i = 0; g->acts && i < g->n_acts; i++) {
        layer_acts *a = &g->acts[i];
        void **ab[] = {&a->ln1, &a->q, &a->k, &a->v, &a->att, &a->hmid, &a->ln2, &a->gate, &a->up, &a->act,
                       (void **)&a->rstd1, (void **)&a->rstd2, (void **)&a->lse, &a->qr, &a->kr,
                       (void **)&a->rstdq, (void **)&a->rstdk, &a->o, &a->dn, (void **)&a->rstd_pa,
                       (void **)&a->rstd_pf, &a->qkv, &a->gu};
        for (size_t k = 0; k < sizeof ab / sizeof ab[0]; k++) gfree(be, ab[k]);
        for (int p = 0; p < LT_PROJ_COUNT; p++) gfree(be, &a->xa[p]);
    }
    free(g->acts);
    /* with offload, res and xa_keep point into the slots */
    for (int i = 0; !g->offload && g->xa_keep && i < g->n_layers * LT_PROJ_COUNT; i++) gfree(be, &g->xa_keep[i]);
    free(g->xa_keep);
    for (int i = 0; i < LT_GRAPH_RECS; i++)
        if (g->recs[i].exec) be->ops.graph_free(be, g->recs[i].exec);
    if (g->res && !g->offload)
        for (int l = 0; l <= g->n_layers; l++) gfree(be, &g->res[l]);
    free(g->res);
    for (int s = 0; s < 2; s++) {
        gfree(be, &g->slot_res[s]);
        gfree(be, &g->slot_xa[s]);
    }
    be->ops.host_free(be, g->host_res);
    be->ops.host_free(be, g->host_xa);
    free(g);
}

/* Buffer sharing of one activation set with backward buffers (lt_graph_reserve), by the order
 * of layer_bwd: the GLU backward (glu_bwd, lora_bwd_swiglu: dgate/dup may alias gate/up) is
 * the last reader of gate and up, so dgate and dup overwrite them in place; the attention
 * block's backward writes datt, dq, dk, dv after the gate/up products' backward has read dgate
 * and dup for the last time, and the next layer's recompute writes gate and up after that
 * (the last layer's activations survive from the forward into its backward: nothing between
 * writes them). With MLP token chunks the same holds chunk by chunk (a chunk's recompute
 * writes gate and up after the previous chunk's products have read dgate and dup for the last
 * time). *attn: the attention gradients of N tokens fit gate and up of M rows (2 QD N <= I M and
 * 2 KD N <= I M; with M = N: 2 QD <= I and 2 KD <= I). */
static int share_ok(const lt_config *c, int train, int64_t N, int64_t M, int *attn) {
    const int64_t QD = (int64_t)c->num_heads * c->head_dim, KD = (int64_t)c->num_kv_heads * c->head_dim;
    const int64_t I = c->intermediate_size;
    const int on = train == LT_GRAPH_TRAIN || train == LT_GRAPH_TRAIN_OFFLOAD;
    *attn = on && 2 * QD * N <= I * M && 2 * KD * N <= I * M;
    return on;
}

/* the MLP chunk of graphs reserved from now on (lt_graph_test_set_mlp_chunk) */
static int64_t mlp_chunk_setting = LT_GRAPH_MLP_CHUNK;

lt_status lt_graph_test_set_mlp_chunk(int64_t rows) {
    LT_CHECK_ARG(rows >= 0 && rows % LT_DROP_ROW_UNIT == 0,
                 "lt_graph_test_set_mlp_chunk: %lld rows is not a multiple of %d", (long long)rows, LT_DROP_ROW_UNIT);
    mlp_chunk_setting = rows ? rows : LT_GRAPH_MLP_CHUNK;
    return LT_OK;
}

int64_t lt_graph_mlp_rows(int64_t N, int train) {
    return train == LT_GRAPH_TRAIN_OFFLOAD && N > mlp_chunk_setting ? mlp_chunk_setting : N;
}

uint64_t lt_graph_head_chunk_bytes(int train) {
    return train == LT_GRAPH_TRAIN_OFFLOAD ? LT_GRAPH_HEAD_LEAN_BYTES : 0;
}

uint64_t lt_graph_bytes(const lt_config *c, int32_t ab, int32_t r, int64_t N, int train) {
    uint64_t C = (uint64_t)c->hidden_size, I = (uint64_t)c->intermediate_size;
    uint64_t QD = (uint64_t)c->num_heads * c->head_dim, KD = (uint64_t)c->num_kv_heads * c->head_dim;
    uint64_t n = (uint64_t)N, a = (uint64_t)ab, mr = (uint64_t)lt_graph_mlp_rows(N, train);
    uint64_t sets = train == LT_GRAPH_TRAIN_KEEP ? (uint64_t)c->num_layers : 1;
    const int off = train == LT_GRAPH_TRAIN_OFFLOAD;
    uint64_t bytes = 4 * (4 * n + 1);                               /* ids, pos, targets, cu */
    bytes += (off ? 2 : (uint64_t)(c->num_layers + 1)) * n * C * a; /* checkpoints (offload: slots) */
    bytes += sets * (n * a * (3 * C + 2 * QD + 2 * KD) + mr * a * 3 * I /* layer activations (MLP: M rows) */
                     + 4 * n * (2 + (uint64_t)c->num_heads));         /* rstd, lse */
    /* what the layer description adds */
    uint64_t extra = 0, extra_bwd = 0;
    if (c->qk_norm) { extra += n * a * (QD + KD) + 4 * n * (uint64_t)(c->num_heads + c->num_kv_heads); extra_bwd += n * a * (QD + KD); }
    if (c->sandwich_norm) { extra += 2 * n * a * C + 8 * n; extra_bwd += n * a * C; }
    if (c->fused_qkv) { extra += n * a * (QD + 2 * KD); extra_bwd += n * a * (QD + 2 * KD); }
    if (c->fused_gate_up) { extra += 2 * mr * a * I; extra_bwd += 2 * mr * a * I; }
    bytes += sets * extra + (train ? extra_bwd : 0);
    /* xa: per set, or per layer when checkpointing keeps them (lt_graph_reserve; offload: slots) */
    const uint64_t xa_sets = r <= 0 ? sets : off ? 2 : train == LT_GRAPH_TRAIN ? (uint64_t)c->num_layers : sets;
    bytes += xa_sets * n * a * (uint64_t)r * LT_PROJ_COUNT;
    bytes += 2 * n * C * a + 4 * n + 4;                             /* proj, final norm, loss */
    if (train) bytes += n * a * (2 * C + 2 * QD + 2 * KD) + mr * a * 3 * I; /* backward */
    int share_attn;
    if (share_ok(c, train, (int64_t)n, (int64_t)mr, &share_attn))
        bytes -= mr * a * 2 * I + (share_attn ? n * a * (2 * QD + 2 * KD) : 0);
    return bytes;
}

uint64_t lt_graph_host_bytes(const lt_config *c, int32_t ab, int32_t r, int64_t N, int train) {
    if (train != LT_GRAPH_TRAIN_OFFLOAD || c->num_layers < 2) return 0;
    const uint64_t rr = r > 0 ? (uint64_t)r : 0;
    return (uint64_t)(c->num_layers - 1) * (uint64_t)N * (uint64_t)ab * ((uint64_t)c->hidden_size + rr * LT_PROJ_COUNT);
}

static lt_status alloc_acts(lt_backend *be, layer_acts *a, const lt_config *c, size_t N, size_t M, int32_t r) {
    size_t ab = (size_t)be->act_bytes, C = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
    size_t QD = (size_t)c->num_heads * c->head_dim, KD = (size_t)c->num_kv_heads * c->head_dim;
    lt_status st = LT_OK;
#define A(ptr, bytes) do { if (st == LT_OK) st = galloc(be, (void **)&(ptr), (bytes)); } while (0)
    A(a->ln1, N * C * ab); A(a->q, N * QD * ab); A(a->k, N * KD * ab); A(a->v, N * KD * ab);
    A(a->att, N * QD * ab); A(a->hmid, N * C * ab); A(a->ln2, N * C * ab);
    A(a->gate, M * I * ab); A(a->up, M * I * ab); A(a->act, M * I * ab);
    for (int p = 0; r > 0 && p < LT_PROJ_COUNT; p++) A(a->xa[p], N * (size_t)r * ab);
    A(a->rstd1, 4 * N); A(a->rstd2, 4 * N); A(a->lse, 4 * N * (size_t)c->num_heads);
    if (c->qk_norm) {
        A(a->qr, N * QD * ab); A(a->kr, N * KD * ab);
        A(a->rstdq, 4 * N * (size_t)c->num_heads); A(a->rstdk, 4 * N * (size_t)c->num_kv_heads);
    }
    if (c->sandwich_norm) { A(a->o, N * C * ab); A(a->dn, N * C * ab); A(a->rstd_pa, 4 * N); A(a->rstd_pf, 4 * N); }
    if (c->fused_qkv) A(a->qkv, N * (QD + 2 * KD) * ab);
    if (c->fused_gate_up) A(a->gu, M * 2 * I * ab);
#undef A
    return st;
}

lt_status lt_graph_reserve(lt_model *m, int64_t n_tokens, int train) {
    LT_CHECK_ARG(m && n_tokens > 0, "lt_graph_reserve: needs a model and a positive token count");
    LT_CHECK_ARG(train >= LT_GRAPH_INFER && train <= LT_GRAPH_TRAIN_KEEP, "lt_graph_reserve: bad mode %d", train);
    int32_t r = m->has_lora ? m->lora.r : 0;
    lt_graph *g = m->graph;
    if (g && g->cap >= n_tokens && g->r == r && g->train >= train && g->mlp_chunk == mlp_chunk_setting) return LT_OK;
    int64_t cap = n_tokens;
    if (g) { /* grow: keep the larger budget (at least 5/4 of the old one, in 64-token steps, so that
              * growing a token at a time reallocates O(log n) times) and the richer mode */
        if (g->cap > cap) cap = g->cap;
        else if (cap < g->cap + g->cap / 4) cap = g->cap + g->cap / 4;
        cap = (cap + 63) / 64 * 64;
        if (g->train > train) train = g->train;
        lt_graph_free(g);
        m->graph = NULL;
    }
    g = lt_calloc(1, sizeof *g, "graph");
    if (!g) return LT_ERR_OUT_OF_MEMORY;
    m->graph = g;
    const lt_config *c = &m->cfg;
    lt_backend *be = m->be;
    g->be = be;
    g->n_layers = c->num_layers;
    size_t ab = (size_t)be->act_bytes, N = (size_t)cap, C = (size_t)c->hidden_size, I = (size_t)c->intermediate_size;
    size_t QD = (size_t)c->num_heads * c->head_dim, KD = (size_t)c->num_kv_heads * c->head_dim;
    g->cap = cap;
    g->r = r;
    g->train = train;
    g->mlp_chunk = mlp_chunk_setting;
    g->mlp_rows = lt_graph_mlp_rows(cap, train);
    const size_t M = (size_t)g->mlp_rows;
    lt_status st = LT_OK;
#define A(ptr, bytes) do { if (st == LT_OK) st = galloc(be, (void **)&(ptr), (bytes)); } while (0)
    const int off = train == LT_GRAPH_TRAIN_OFFLOAD;
    g->offload = off;
    A(g->ids, 4 * N); A(g->pos, 4 * N); A(g->targets, 4 * N); A(g->cu, 4 * (N + 1));
    g->res = lt_calloc((size_t)c->num_layers + 1, sizeof(void *), "graph checkpoints");
    if (!g->res) st = LT_ERR_OUT_OF_MEMORY;
    if (off) {
        A(g->slot_res[0], N * C * ab); A(g->slot_res[1], N * C * ab);
        for (int l = 0; st == LT_OK && l <= c->num_layers; l++) g->res[l] = g->slot_res[l % 2];
        if (st == LT_OK && c->num_layers > 1)
            st = be->ops.host_alloc(be, (size_t)lt_graph_host_bytes(c, be->act_bytes, 0, cap, train), &g->host_res);
    } else {
        for (int l = 0; st == LT_OK && l <= c->num_layers; l++) A(g->res[l], N * C * ab);
    }
    int n_acts = train == LT_GRAPH_TRAIN_KEEP ? c->num_layers : 1;
    g->acts = lt_calloc((size_t)n_acts, sizeof *g->acts, "graph activations");
    if (!g->acts) st = LT_ERR_OUT_OF_MEMORY;
    else g->n_acts = n_acts;
    const int keep_xa = (train == LT_GRAPH_TRAIN || off) && r > 0;
    int share_attn = 0;
    const int share = share_ok(c, train, (int64_t)N, (int64_t)M, &share_attn);
    for (int i = 0; st == LT_OK && i < n_acts; i++) st = alloc_acts(be, &g->acts[i], c, N, M, keep_xa ? 0 : r);
    if (st == LT_OK && keep_xa) {
        g->xa_keep = lt_calloc((size_t)c->num_layers * LT_PROJ_COUNT, sizeof(void *), "graph LoRA xa");
        if (!g->xa_keep) st = LT_ERR_OUT_OF_MEMORY;
        const size_t xb = N * (size_t)r * ab;
        if (off) {
            A(g->slot_xa[0], LT_PROJ_COUNT * xb); A(g->slot_xa[1], LT_PROJ_COUNT * xb);
            for (int i = 0; st == LT_OK && i < c->num_layers * LT_PROJ_COUNT; i++)
                g->xa_keep[i] = (char *)g->slot_xa[(i / LT_PROJ_COUNT) % 2] + (size_t)(i % LT_PROJ_COUNT) * xb;
            if (st == LT_OK && c->num_layers > 1)
                st = be->ops.host_alloc(be, (size_t)(c->num_layers - 1) * LT_PROJ_COUNT * xb, &g->host_xa);
        } else {
            for (int i = 0; st == LT_OK && i < c->num_layers * LT_PROJ_COUNT; i++) A(g->xa_keep[i], xb);
        }
    }
    A(g->proj, N * C * ab); A(g->lnf, N * C * ab); A(g->rstdf, 4 * N); A(g->loss, 4);
    if (train) {
        A(g->dres, N * C * ab); A(g->dln, N * C * ab);
        A(g->dact, M * I * ab);
        if (st == LT_OK && share) { /* share_ok says why these never overlap */
            g->share_glu = 1;
            g->dgate = g->acts[0].gate;
            g->dup = g->acts[0].up;
        } else {
            A(g->dgate, M * I * ab); A(g->dup, M * I * ab);
        }
        if (st == LT_OK && share_attn) {
            g->share_attn = 1;
            g->datt = g->acts[0].gate;
            g->dq = (char *)g->acts[0].gate + N * QD * ab;
            g->dk = g->acts[0].up;
            g->dv = (char *)g->acts[0].up + N * KD * ab;
        } else {
            A(g->dq, N * QD * ab); A(g->datt, N * QD * ab); A(g->dk, N * KD * ab); A(g->dv, N * KD * ab);
        }
        if (c->qk_norm) { A(g->dqr, N * QD * ab); A(g->dkr, N * KD * ab); }
        if (c->sandwich_norm) A(g->dpost, N * C * ab);
        if (c->fused_qkv) A(g->dqkv, N * (QD + 2 * KD) * ab);
        if (c->fused_gate_up) A(g->dgu, M * 2 * I * ab);
    }
#undef A
    if (st != LT_OK) {
        lt_graph_free(g);
        m->graph = NULL;
        return lt_error_wrap(st, "allocating the graph buffers for %lld tokens (%.1f MiB%s); try a smaller "
                             "batch_size or max_seq_len%s", (long long)cap,
                             lt_graph_bytes(c, be->act_bytes, r, cap, train) / 1048576.0,
                             off ? " and the offloaded checkpoints' host memory" : "",
                             train == LT_GRAPH_TRAIN_KEEP ? ", or turn gradient checkpointing back on"
                             : train == LT_GRAPH_TRAIN ? ", or offload the checkpoints (offload_checkpoints)" : "");
    }
    return LT_OK;
}

/* ---- one pass ---- */

typedef struct pass_ctx {
    lt_model *m;
    lt_graph *g;
    lt_backend *be;
    int64_t N;
    int32_t nseq, max_seqlen;
    int lora_on;
    int off;                /* a training pass with its checkpoints offloaded (g->offload) */
    /* an MLP token chunk (mlp_chunk): its rows [row0, row0 + N) of the pass; the LoRA A
     * outputs (xa_of) and the dropout streams (drop_stream) are those rows' */
    int64_t row0;
    float dropout;
    uint64_t seed, stream_base;
    /* rotary frequencies of full-attention [0] and sliding-window [1] layers for this pass's
     * length; plain[i]: the backend's default rope of theta (no table) */
    int rope_plain[2];
    float rope_theta[2], rope_af[2];
    float rope_freq[2][LT_ROPE_MAX_HALF];
    /* generation: the KV cache (act, (max_len, NKV*HD) per layer) the pass appends to at
     * position past; NULL in training passes */
    void *const *kc;
    void *const *vc;
    int64_t past;
} pass_ctx;

/* The rope tables of a pass whose positions are below seq_len. */
static void pass_rope(pass_ctx *x, int64_t seq_len) {
    const lt_config *c = &x->m->cfg;
    const lt_rope_desc *r[2] = {&c->rope, &c->rope_local};
    for (int i = 0; i < 2; i++) {
        x->rope_theta[i] = (float)r[i]->theta;
        x->rope_plain[i] = lt_rope_is_plain(r[i], seq_len);
        x->rope_af[i] = 1.0f;
        if (!x->rope_plain[i]) lt_rope_inv_freq(r[i], c->head_dim, seq_len, x->rope_freq[i], &x->rope_af[i]);
    }
}

static lt_status rope_apply(const pass_ctx *x, int l, void *buf, int64_t H, int bwd) {
    const lt_config *c = &x->m->cfg;
    lt_backend *be = x->be;
    const int i = c->layer_sliding[l] ? 1 : 0;
    const float *f = x->rope_plain[i] ? NULL : x->rope_freq[i];
    if (bwd) return be->ops.rope_freq_bwd(be, buf, x->g->pos, x->N, H, c->head_dim, x->rope_theta[i], f, x->rope_af[i]);
    return be->ops.rope_freq_fwd(be, buf, x->g->pos, x->N, H, c->head_dim, x->rope_theta[i], f, x->rope_af[i]);
}

static lt_attn_opts attn_opts(const pass_ctx *x, int l) {
    const lt_config *c = &x->m->cfg;
    lt_attn_opts o;
    o.scale = c->attn_scale;
    o.softcap = c->attn_softcap;
    o.window = c->layer_sliding[l] ? c->sliding_window : 0;
    return o;
}

/* Splits rows of a fused output (N, sum w) into n buffers (N, w[s]), or joins them back. */
static lt_status split_cols(const pass_ctx *x, void *fused, int n, void *const *parts, const int64_t *w, int join) {
    const size_t ab = (size_t)x->be->act_bytes;
    int64_t total = 0, off = 0;
    for (int s = 0; s < n; s++) total += w[s];
    for (int s = 0; s < n; s++) {
        char *f = (char *)fused + (size_t)off * ab;
        if (join) LT_TRY(x->be->ops.copy2d(x->be, f, (size_t)total * ab, parts[s], (size_t)w[s] * ab, (size_t)w[s] * ab, x->N));
        else LT_TRY(x->be->ops.copy2d(x->be, parts[s], (size_t)w[s] * ab, f, (size_t)total * ab, (size_t)w[s] * ab, x->N));
        off += w[s];
    }
    return LT_OK;
}

static void *act_at(const pass_ctx *x, void *buf, int64_t row, int64_t width) {
    return (char *)buf + (size_t)row * (size_t)width * (size_t)x->be->act_bytes;
}

/* The activation set of layer l. */
static layer_acts *acts_of(const pass_ctx *x, int l) {
    return &x->g->acts[x->g->n_acts == 1 ? 0 : l];
}

/* The LoRA A output (N,R) of (layer l, projection p) (an MLP chunk's rows of it). */
static void *xa_of(const pass_ctx *x, int l, int p) {
    void *xa = x->g->xa_keep ? x->g->xa_keep[l * LT_PROJ_COUNT + p] : acts_of(x, l)->xa[p];
    return xa ? act_at(x, xa, x->row0, x->g->r) : NULL; /* NULL: no LoRA */
}

/* The dropout stream of (layer l, projection p) (an MLP chunk's: with its row offset, rng.h). */
static uint64_t drop_stream(const pass_ctx *x, int l, int p) {
    return lt_drop_stream_rows(lt_graph_stream(x->stream_base, l, p), (uint64_t)x->row0);
}

/* out(N,OC) = inp @ W^T + bias, plus the LoRA branch of (layer, proj) when attached. */
static lt_status proj_fwd(const pass_ctx *x, int l, int p, void *out, const void *inp, const float *bias) {
    lt_layer *L = &x->m->layers[l];
    LT_TRY(x->be->ops.linear_fwd(x->be, out, inp, L->proj[p], bias, x->N));
    lt_lora_tensor *t = &L->lora[p];
    if (x->lora_on && t->A)
        LT_TRY(x->be->ops.lora_fwd(x->be, out, xa_of(x, l, p), inp, t->A, t->B, x->N, t->in, t->out, t->r,
                                   x->m->lora_scale, x->dropout, x->seed, drop_stream(x, l, p)));
    return LT_OK;
}

/* dinp(N,C) = (or +=) dout @ W, plus the LoRA backward (dA, dB +=, dinp +=). */
static lt_status proj_bwd(const pass_ctx *x, int l, int p, void *dinp, const void *dout, const void *inp,
                          int accumulate) {
    lt_layer *L = &x->m->layers[l];
    LT_TRY(x->be->ops.linear_bwd_input(x->be, dinp, dout, L->proj[p], x->N, accumulate));
    lt_lora_tensor *t = &L->lora[p];
    if (x->lora_on && t->A)
        LT_TRY(x->be->ops.lora_bwd(x->be, t->dA, t->dB, dinp, dout, inp, xa_of(x, l, p), t->A, t->B, x->N,
                                   t->in, t->out, t->r, x->m->lora_scale, x->dropout, x->seed,
                                   drop_stream(x, l, p)));
    return LT_OK;
}

/* n projections of one input (q/k/v, gate/up): their LoRA down-projections in one pass over
 * the input, then the base products with the up-projections (and bias) folded in, when the
 * backend has those ops and every module has an adapter of one rank; else one at a time. */
static int group_ok(const pass_ctx *x, const lt_layer *L, int n, const int *p) {
    if (!x->lora_on || !x->be->ops.linear_lora_group_fwd) return 0;
    for (int s = 0; s < n; s++)
        if (!L->lora[p[s]].A || L->lora[p[s]].r != L->lora[p[0]].r || L->lora[p[s]].in != L->lora[p[0]].in) return 0;
    return 1;
}

static lt_status group_fwd(const pass_ctx *x, int l, int n, const int *p, void *const *out, const void *inp,
                           const float *const *bias, int recompute) {
    lt_layer *L = &x->m->layers[l];
    lt_backend *be = x->be;
    if (!group_ok(x, L, n, p)) {
        for (int s = 0; s < n; s++) LT_TRY(proj_fwd(x, l, p[s], out[s], inp, bias[s]));
        return LT_OK;
    }
    const lt_lora_tensor *t0 = &L->lora[p[0]];
    void *xa[3];
    const float *A[3], *B[3];
    const lt_bweight *W[3];
    uint64_t st[3];
    for (int s = 0; s < n; s++) {
        xa[s] = xa_of(x, l, p[s]);
        A[s] = L->lora[p[s]].A;
        B[s] = L->lora[p[s]].B;
        W[s] = L->proj[p[s]];
        st[s] = drop_stream(x, l, p[s]);
    }
    if (recompute && x->g->xa_keep) {
        /* the forward pass's xa are kept */
    } else if (be->ops.lora_xa_multi)
        LT_TRY(be->ops.lora_xa_multi(be, n, xa, inp, A, x->N, t0->in, t0->r, x->dropout, x->seed, st));
    else
        for (int s = 0; s < n; s++)
            LT_TRY(be->ops.lora_fwd(be, NULL, xa[s], inp, A[s], B[s], x->N, t0->in, L->lora[p[s]].out, t0->r,
                                    x->m->lora_scale, x->dropout, x->seed, st[s]));
    return be->ops.linear_lora_group_fwd(be, n, out, inp, W, bias, (const void *const *)xa, B, x->N, t0->r,
                                         x->m->lora_scale);
}

/* dinp = sum over the group of (dout[s] @ W[s] + the LoRA input gradients), dA and dB +=; the
 * LoRA parts of the group in one pass over the input when the backend can */
static lt_status group_bwd(const pass_ctx *x, int l, int n, const int *p, void *dinp, const void *const *dout,
                           const void *inp) {
    lt_layer *L = &x->m->layers[l];
    lt_backend *be = x->be;
    if (!be->ops.lora_bwd_multi || !group_ok(x, L, n, p)) {
        for (int s = 0; s < n; s++) LT_TRY(proj_bwd(x, l, p[s], dinp, dout[s], inp, s > 0));
        return LT_OK;
    }
    const lt_lora_tensor *t0 = &L->lora[p[0]];
    float *dA[3], *dB[3];
    const void *xa[3];
    const float *A[3], *B[3];
    int64_t OC[3];
    uint64_t st[3];
    for (int s = 0; s < n; s++) {
        const lt_lora_tensor *t = &L->lora[p[s]];
        LT_TRY(be->ops.linear_bwd_input(be, dinp, dout[s], L->proj[p[s]], x->N, s > 0));
        dA[s] = t->dA; dB[s] = t->dB; xa[s] = xa_of(x, l, p[s]); A[s] = t->A; B[s] = t->B; OC[s] = t->out;
        st[s] = drop_stream(x, l, p[s]);
    }
    return be->ops.lora_bwd_multi(be, n, dA, dB, dinp, dout, inp, xa, A, B, x->N, t0->in, OC, t0->r,
                                  x->m->lora_scale, x->dropout, x->seed, st);
}

/* out = resid + (inp @ W^T + LoRA) for o_proj and down_proj: the residual add inside the base
 * product when the backend can (linear_fwd_add), then the LoRA up-projection added to out;
 * else the LoRA up-projection rides on the residual add (add_lora) */
static lt_status proj_fwd_add(const pass_ctx *x, int l, int p, void *out, const void *resid, const void *inp,
                              int recompute) {
    lt_layer *L = &x->m->layers[l];
    lt_lora_tensor *t = &L->lora[p];
    lt_backend *be = x->be;
    int64_t OC = x->m->cfg.hidden_size; /* o_proj and down_proj write the residual stream */
    const int lora = x->lora_on && t->A;
    void *xa = xa_of(x, l, p);
    if (be->ops.linear_fwd_add) {
        LT_TRY(be->ops.linear_fwd_add(be, out, inp, L->proj[p], resid, x->N));
        if (!lora) return LT_OK;
        if (recompute && x->g->xa_keep && be->ops.lora_up_add) /* xa kept from the forward pass */
            return be->ops.lora_up_add(be, out, xa, t->B, x->N, t->out, t->r, x->m->lora_scale);
        return be->ops.lora_fwd(be, out, xa, inp, t->A, t->B, x->N, t->in, t->out, t->r, x->m->lora_scale,
                                x->dropout, x->seed, drop_stream(x, l, p));
    }
    if (!(be->ops.add_lora && lora)) {
        LT_TRY(proj_fwd(x, l, p, x->g->proj, inp, NULL));
        return be->ops.add(be, out, resid, x->g->proj, x->N * OC);
    }
    LT_TRY(be->ops.linear_fwd(be, x->g->proj, inp, L->proj[p], NULL, x->N));
    LT_TRY(be->ops.lora_fwd(be, NULL, xa, inp, t->A, t->B, x->N, t->in, t->out, t->r, x->m->lora_scale, x->dropout,
                            x->seed, drop_stream(x, l, p)));
    return be->ops.add_lora(be, out, resid, x->g->proj, xa, t->B, x->N, OC, t->r, x->m->lora_scale);
}

/* Whether layer l's checkpoint recompute can skip the gated activation: down_proj's input act is
 * needed by its LoRA backward only (the base product's input gradient does not read it), the
 * LoRA A output is kept from the forward pass, and lora_bwd_swiglu (SiLU) makes act where it
 * reads it. Post-norms need down_proj's output, so sandwich layers recompute it all. */
static int recompute_skips_act(const pass_ctx *x, const lt_layer *L) {
    if (x->m->cfg.sandwich_norm) return 0;
    if (!(x->lora_on && L->lora[LT_PROJ_DOWN].A)) return 1;
    return x->g->xa_keep && x->be->ops.lora_bwd_swiglu && x->m->cfg.act == LT_ACT_SILU;
}

/* ---- the MLP block over token chunks ----
 * The MLP acts on each token alone, so the memory-saving mode (g->mlp_rows < N: mode
 * TRAIN_OFFLOAD, lt_graph_mlp_rows) runs it over chunks of g->mlp_rows tokens, a fixed split
 * for a given N (a recorded pass replays it): gate, up, act and their gradients hold one chunk,
 * while ln2, hmid, dn, the LoRA A outputs and the gradients of the residual stream stay (N, .)
 * and each chunk takes its rows of them. Each chunk's LoRA dropout draws its rows' masks
 * (drop_stream), so the results are those of one pass over all N tokens, up to the order in
 * which the LoRA gradients of gate/up/down add up over the chunks. */
static int mlp_chunked(const pass_ctx *x) {
    return x->g->mlp_rows < x->N;
}

/* *xc: the pass x narrowed to the MLP chunk of tokens [t0, t0 + mlp_rows) */
static const pass_ctx *mlp_chunk(const pass_ctx *x, int64_t t0, pass_ctx *xc) {
    *xc = *x;
    xc->row0 = t0;
    xc->N = x->N - t0 < x->g->mlp_rows ? x->N - t0 : x->g->mlp_rows;
    return xc;
}

/* rows [x->row0, x->row0 + x->N) of a per-token f32 buffer (NULL stays NULL) */
static float *f32_rows(const pass_ctx *x, float *buf) {
    return buf ? buf + x->row0 : NULL;
}

/* The MLP of layer l on tokens [x->row0, x->row0 + x->N) (one chunk, or the whole pass):
 *   out = hmid + post_ff(down(act(gate(ln2), up(ln2))))
 * with ln2 made; gate, up and act hold these tokens from their first row. out: the (N,C) output
 * of the pass (these tokens' rows written). recompute: as in layer_fwd (out unused). */
static lt_status mlp_fwd(const pass_ctx *x, int l, void *out, int recompute) {
    const lt_config *c = &x->m->cfg;
    lt_layer *L = &x->m->layers[l];
    lt_graph *g = x->g;
    layer_acts *a = acts_of(x, l);
    lt_backend *be = x->be;
    const int64_t N = x->N, C = c->hidden_size, I = c->intermediate_size;
    const float eps = (float)c->rms_norm_eps;
    void *ln2 = act_at(x, a->ln2, x->row0, C), *hmid = act_at(x, a->hmid, x->row0, C);
    if (c->fused_gate_up) {
        void *parts[2] = {a->gate, a->up};
        const int64_t w[2] = {I, I};
        LT_TRY(proj_fwd(x, l, LT_PROJ_GATE, a->gu, ln2, NULL));
        LT_TRY(split_cols(x, a->gu, 2, parts, w, 0));
    } else {
        static const int gu[2] = {LT_PROJ_GATE, LT_PROJ_UP};
        void *outs[2] = {a->gate, a->up};
        const float *bias[2] = {NULL, NULL};
        LT_TRY(group_fwd(x, l, 2, gu, outs, ln2, bias, recompute));
    }
    if (recompute && recompute_skips_act(x, L)) return LT_OK;
    LT_TRY(be->ops.glu_fwd(be, c->act == LT_ACT_SILU ? LT_BACT_SILU : LT_BACT_GELU_TANH, a->act, a->gate, a->up,
                           N * I));
    if (c->sandwich_norm) {
        void *dn = act_at(x, a->dn, x->row0, C);
        LT_TRY(proj_fwd(x, l, LT_PROJ_DOWN, dn, a->act, NULL));
        LT_TRY(be->ops.rmsnorm_fwd(be, g->proj, f32_rows(x, a->rstd_pf), dn, L->ln_post_ff, N, C, eps));
        if (recompute) return LT_OK;
        return be->ops.add(be, act_at(x, out, x->row0, C), hmid, g->proj, N * C);
    }
    if (recompute) {
        lt_lora_tensor *t = &L->lora[LT_PROJ_DOWN];
        if (x->lora_on && t->A && !x->g->xa_keep)
            LT_TRY(be->ops.lora_fwd(be, NULL, xa_of(x, l, LT_PROJ_DOWN), a->act, t->A, t->B, N, t->in, t->out, t->r,
                                    x->m->lora_scale, x->dropout, x->seed,
                                    drop_stream(x, l, LT_PROJ_DOWN)));
        return LT_OK;
    }
    return proj_fwd_add(x, l, LT_PROJ_DOWN, act_at(x, out, x->row0, C), hmid, a->act, 0);
}

/* Layer l forward: out = layer(inp), keeping this layer's activations in the graph buffers:
 *   h = inp + post_attn(o(attention(rope(qn(q(ln1(inp)))), rope(kn(k(ln1(inp)))), v(ln1(inp)))))
 *   out = h + post_ff(down(act(gate(ln2(h))) * up(ln2(h))))
 * where qn/kn are the per-head q/k norms (qk_norm) and post_attn/post_ff the post-norms
 * (sandwich_norm), identities otherwise; fused q/k/v and gate/up are one product, split.
 * With a KV cache (generation) the keys and values are appended to it and attention runs over it.
 * recompute: the checkpoint recompute before layer_bwd(l); the layer's output is the next
 * checkpoint, already kept, and the backward needs only down_proj's input and LoRA xa (and
 * down_proj's output with post-norms), so the rest of the MLP is skipped (out unused), and so
 * is down_proj's input where recompute_skips_act says the backward makes it itself. */
static lt_status layer_fwd(const pass_ctx *x, int l, const void *inp, void *out, int recompute) {
    const lt_config *c = &x->m->cfg;
    lt_layer *L = &x->m->layers[l];
    lt_graph *g = x->g;
    layer_acts *a = acts_of(x, l);
    lt_backend *be = x->be;
    int64_t N = x->N, C = c->hidden_size;
    int64_t NH = c->num_heads, NKV = c->num_kv_heads, HD = c->head_dim;
    const size_t ab = (size_t)be->act_bytes;
    float eps = (float)c->rms_norm_eps;
    /* attention block */
    LT_TRY(be->ops.rmsnorm_fwd(be, a->ln1, a->rstd1, inp, L->ln1, N, C, eps));
    void *q0 = c->qk_norm ? a->qr : a->q, *k0 = c->qk_norm ? a->kr : a->k;
    if (c->fused_qkv) {
        void *parts[3] = {q0, k0, a->v};
        const int64_t w[3] = {NH * HD, NKV * HD, NKV * HD};
        LT_TRY(proj_fwd(x, l, LT_PROJ_Q, a->qkv, a->ln1, NULL));
        LT_TRY(split_cols(x, a->qkv, 3, parts, w, 0));
    } else {
        static const int qkv[3] = {LT_PROJ_Q, LT_PROJ_K, LT_PROJ_V};
        void *outs[3] = {q0, k0, a->v};
        const float *bias[3] = {L->bias[0], L->bias[1], L->bias[2]};
        LT_TRY(group_fwd(x, l, 3, qkv, outs, a->ln1, bias, recompute));
    }
    if (c->qk_norm) {
        LT_TRY(be->ops.rmsnorm_fwd(be, a->q, a->rstdq, a->qr, L->q_norm, N * NH, HD, eps));
        LT_TRY(be->ops.rmsnorm_fwd(be, a->k, a->rstdk, a->kr, L->k_norm, N * NKV, HD, eps));
    }
    LT_TRY(rope_apply(x, l, a->q, NH, 0));
    LT_TRY(rope_apply(x, l, a->k, NKV, 0));
    const lt_attn_opts ao = attn_opts(x, l);
    if (x->kc) {
        const size_t kvb = (size_t)(NKV * HD) * ab;
        LT_TRY(be->ops.copy(be, (char *)x->kc[l] + (size_t)x->past * kvb, a->k, (size_t)N * kvb));
        LT_TRY(be->ops.copy(be, (char *)x->vc[l] + (size_t)x->past * kvb, a->v, (size_t)N * kvb));
    }
    if (x->kc && x->past > 0)
        LT_TRY(be->ops.attention_opt_kv(be, a->att, a->q, x->kc[l], x->vc[l], x->past, N, NH, NKV, HD, &ao));
    else
        LT_TRY(be->ops.attention_opt_fwd(be, a->att, a->lse, a->q, a->k, a->v, g->cu, x->nseq, x->max_seqlen, N, NH,
                                         NKV, HD, &ao));
    if (c->sandwich_norm) {
        LT_TRY(proj_fwd(x, l, LT_PROJ_O, a->o, a->att, NULL));
        LT_TRY(be->ops.rmsnorm_fwd(be, g->proj, a->rstd_pa, a->o, L->ln_post_attn, N, C, eps));
        LT_TRY(be->ops.add(be, a->hmid, inp, g->proj, N * C));
    } else {
        LT_TRY(proj_fwd_add(x, l, LT_PROJ_O, a->hmid, inp, a->att, recompute));
    }
    /* MLP block: per token, so with MLP chunks it runs chunk by chunk, and its checkpoint
     * recompute happens chunk by chunk inside layer_bwd (gate and up hold one chunk) */
    LT_TRY(be->ops.rmsnorm_fwd(be, a->ln2, a->rstd2, a->hmid, L->ln2, N, C, eps));
    if (!mlp_chunked(x)) return mlp_fwd(x, l, out, recompute);
    if (recompute) return LT_OK;
    pass_ctx xc;
    for (int64_t t0 = 0; t0 < N; t0 += g->mlp_rows) LT_TRY(mlp_fwd(mlp_chunk(x, t0, &xc), l, out, 0));
    return LT_OK;
}

/* dinp(N,C) += the gradient through a post-norm: dout is the gradient of the norm's output,
 * inp its input; dpost is overwritten (the gradient of the input alone). */
static lt_status post_norm_bwd(const pass_ctx *x, void *dpost, const void *dout, const void *inp, const float *w,
                               const float *rstd) {
    lt_backend *be = x->be;
    const int64_t N = x->N, C = x->m->cfg.hidden_size;
    LT_TRY(be->ops.memset0(be, dpost, (size_t)(N * C) * (size_t)be->act_bytes));
    return be->ops.rmsnorm_bwd(be, dpost, dout, inp, w, rstd, N, C);
}

/* The MLP's backward on tokens [x->row0, x->row0 + x->N) (one chunk, or the whole pass), after
 * mlp_fwd made what it needs: from g->dres (d out) to g->dln (d ln2), these tokens' rows. */
static lt_status mlp_bwd(const pass_ctx *x, int l) {
    const lt_config *c = &x->m->cfg;
    lt_layer *L = &x->m->layers[l];
    lt_graph *g = x->g;
    layer_acts *a = acts_of(x, l);
    lt_backend *be = x->be;
    const int64_t N = x->N, C = c->hidden_size, I = c->intermediate_size;
    const int act = c->act == LT_ACT_SILU ? LT_BACT_SILU : LT_BACT_GELU_TANH;
    void *dres = act_at(x, g->dres, x->row0, C), *dln = act_at(x, g->dln, x->row0, C);
    void *ln2 = act_at(x, a->ln2, x->row0, C);
    const void *dmlp = dres;
    if (c->sandwich_norm) {
        void *dpost = act_at(x, g->dpost, x->row0, C);
        LT_TRY(post_norm_bwd(x, dpost, dres, act_at(x, a->dn, x->row0, C), L->ln_post_ff, f32_rows(x, a->rstd_pf)));
        dmlp = dpost;
    }
    lt_lora_tensor *td = &L->lora[LT_PROJ_DOWN];
    if (x->lora_on && td->A && be->ops.lora_bwd_swiglu && c->act == LT_ACT_SILU) {
        /* down_proj's LoRA backward and swiglu's backward in one op: act is made from gate and
         * up where it is read (the recompute may have skipped it), dact never round-trips */
        LT_TRY(be->ops.linear_bwd_input(be, g->dact, dmlp, L->proj[LT_PROJ_DOWN], N, 0));
        LT_TRY(be->ops.lora_bwd_swiglu(be, td->dA, td->dB, g->dact, dmlp, a->gate, a->up, a->act,
                                       xa_of(x, l, LT_PROJ_DOWN), td->A, td->B, N, td->in, td->out, td->r,
                                       x->m->lora_scale, x->dropout, x->seed,
                                       drop_stream(x, l, LT_PROJ_DOWN), g->dgate, g->dup));
    } else {
        /* act: made by the recompute, unless down_proj has no LoRA (then nothing reads it) */
        LT_TRY(proj_bwd(x, l, LT_PROJ_DOWN, g->dact, dmlp, a->act, 0));
        LT_TRY(be->ops.glu_bwd(be, act, g->dgate, g->dup, g->dact, a->gate, a->up, N * I));
    }
    if (c->fused_gate_up) {
        void *parts[2] = {g->dgate, g->dup};
        const int64_t w[2] = {I, I};
        LT_TRY(split_cols(x, g->dgu, 2, parts, w, 1));
        return proj_bwd(x, l, LT_PROJ_GATE, dln, g->dgu, ln2, 0);
    }
    static const int gu[2] = {LT_PROJ_GATE, LT_PROJ_UP};
    const void *dout[2] = {g->dgate, g->dup};
    return group_bwd(x, l, 2, gu, dln, dout, ln2);
}

/* Layer l backward: on entry g->dres = dL/d(layer output), on exit dL/d(layer input).
 * Needs layer_fwd(l) to have just run (the activations in the graph buffers; act only where
 * recompute_skips_act says the recompute makes it). With MLP chunks, each chunk's MLP is
 * recomputed here before its backward, last chunk first, except the last layer's last chunk,
 * which the forward pass has just left in the buffers. */
static lt_status layer_bwd(const pass_ctx *x, int l, const void *inp) {
    const lt_config *c = &x->m->cfg;
    lt_layer *L = &x->m->layers[l];
    lt_graph *g = x->g;
    layer_acts *a = acts_of(x, l);
    lt_backend *be = x->be;
    int64_t N = x->N, C = c->hidden_size;
    int64_t NH = c->num_heads, NKV = c->num_kv_heads, HD = c->head_dim;
    const size_t ab = (size_t)be->act_bytes;
    /* MLP block: out = hmid + post_ff(down(act(gate(ln2), up(ln2)))) */
    if (!mlp_chunked(x)) {
        LT_TRY(mlp_bwd(x, l));
    } else {
        /* the last chunk first: the last layer's is still there from the forward */
        pass_ctx xc;
        for (int64_t t0 = (N - 1) / g->mlp_rows * g->mlp_rows; t0 >= 0; t0 -= g->mlp_rows) {
            const pass_ctx *xk = mlp_chunk(x, t0, &xc);
            if (!(l == c->num_layers - 1 && t0 + xk->N == N)) LT_TRY(mlp_fwd(xk, l, NULL, 1));
            LT_TRY(mlp_bwd(xk, l));
        }
    }
    LT_TRY(be->ops.rmsnorm_bwd(be, g->dres, g->dln, a->hmid, L->ln2, a->rstd2, N, C)); /* dres: d hmid */
    /* attention block: hmid = inp + post_attn(o(attn(rope(qn(q(ln1))), rope(kn(k(ln1))), v(ln1)))) */
    const void *dattn = g->dres;
    if (c->sandwich_norm) {
        LT_TRY(post_norm_bwd(x, g->dpost, g->dres, a->o, L->ln_post_attn, a->rstd_pa));
        dattn = g->dpost;
    }
    LT_TRY(proj_bwd(x, l, LT_PROJ_O, g->datt, dattn, a->att, 0));
    const lt_attn_opts ao = attn_opts(x, l);
    LT_TRY(be->ops.attention_opt_bwd(be, g->dq, g->dk, g->dv, g->datt, a->q, a->k, a->v, a->att, a->lse, g->cu,
                                     x->nseq, x->max_seqlen, N, NH, NKV, HD, &ao));
    LT_TRY(rope_apply(x, l, g->dq, NH, 1));
    LT_TRY(rope_apply(x, l, g->dk, NKV, 1));
    void *dq0 = g->dq, *dk0 = g->dk;
    if (c->qk_norm) {
        LT_TRY(be->ops.memset0(be, g->dqr, (size_t)(N * NH * HD) * ab));
        LT_TRY(be->ops.memset0(be, g->dkr, (size_t)(N * NKV * HD) * ab));
        LT_TRY(be->ops.rmsnorm_bwd(be, g->dqr, g->dq, a->qr, L->q_norm, a->rstdq, N * NH, HD));
        LT_TRY(be->ops.rmsnorm_bwd(be, g->dkr, g->dk, a->kr, L->k_norm, a->rstdk, N * NKV, HD));
        dq0 = g->dqr;
        dk0 = g->dkr;
    }
    if (c->fused_qkv) {
        void *parts[3] = {dq0, dk0, g->dv};
        const int64_t w[3] = {NH * HD, NKV * HD, NKV * HD};
        LT_TRY(split_cols(x, g->dqkv, 3, parts, w, 1));
        LT_TRY(proj_bwd(x, l, LT_PROJ_Q, g->dln, g->dqkv, a->ln1, 0));
    } else {
        static const int qkv[3] = {LT_PROJ_Q, LT_PROJ_K, LT_PROJ_V};
        const void *dout[3] = {dq0, dk0, g->dv};
        LT_TRY(group_bwd(x, l, 3, qkv, g->dln, dout, a->ln1));
    }
    LT_TRY(be->ops.rmsnorm_bwd(be, g->dres, g->dln, inp, L->ln1, a->rstd1, N, C)); /* dres: d inp */
    return LT_OK;
}

static lt_status pass_begin(lt_model *m, const lt_batch *b, int train, pass_ctx *x) {
    LT_CHECK_ARG(m && b, "graph: needs a model and a batch");
    LT_CHECK_ARG(b->n_tokens > 0 && b->nseq > 0 && b->cu_seqlens && b->ids && b->pos,
                 "graph: empty batch (%d tokens, %d sequences)", b->n_tokens, b->nseq);
    LT_CHECK_ARG(m->be && m->layers && m->embed, "graph: the model has no weights loaded");
    for (int32_t i = 0; i < b->n_tokens; i++)
        if (b->ids[i] < 0 || b->ids[i] >= m->cfg.vocab_size)
            return lt_error(LT_ERR_INVALID_ARGUMENT, "graph: token %d of the batch has id %d, outside the vocabulary "
                            "[0, %d)", i, b->ids[i], m->cfg.vocab_size);
    LT_TRY(lt_graph_reserve(m, b->n_tokens, train));
    lt_graph *g = m->graph;
    lt_backend *be = m->be;
    memset(x, 0, sizeof *x);
    x->m = m; x->g = g; x->be = be;
    x->N = b->n_tokens;
    x->nseq = b->nseq;
    x->max_seqlen = b->max_seqlen;
    x->lora_on = m->has_lora && m->lora_enabled;
    LT_TRY(be->ops.upload(be, g->ids, b->ids, 4 * (size_t)b->n_tokens));
    LT_TRY(be->ops.upload(be, g->pos, b->pos, 4 * (size_t)b->n_tokens));
    LT_TRY(be->ops.upload(be, g->cu, b->cu_seqlens, 4 * ((size_t)b->nseq + 1)));
    if (b->targets) LT_TRY(be->ops.upload(be, g->targets, b->targets, 4 * (size_t)b->n_tokens));
    pass_rope(x, b->max_seqlen > 0 ? b->max_seqlen : b->n_tokens);
    return LT_OK;
}

/* The embedding of g->ids into res[0], times the embedding scale (Gemma), rounded to the
 * activation dtype first, as transformers' Gemma models make it a tensor of that dtype
 * (sqrt(2304) = 48 is exact; in bf16 sqrt(2048) = 45.2548 becomes 45.25, sqrt(1152) = 33.941 becomes 34) */
static lt_status embed(const pass_ctx *x) {
    const lt_config *c = &x->m->cfg;
    lt_backend *be = x->be;
    LT_TRY(be->ops.embedding(be, x->g->res[0], x->g->ids, x->m->embed, x->N, c->hidden_size));
    if (c->embed_scale != 1.0f)
        LT_TRY(be->ops.scale_act(be, x->g->res[0], x->N * c->hidden_size,
                                 lt_round_to_dtype(c->embed_scale, be->act_dtype)));
    return LT_OK;
}

/* ---- checkpoint offload: layer l's checkpoint is res[l] (N,C) and its LoRA A outputs (the
 * xa slot block); both live in device slot l % 2 and, for l < L-1, in host memory ---- */

static size_t res_bytes(const pass_ctx *x) {
    return (size_t)x->N * (size_t)x->m->cfg.hidden_size * (size_t)x->be->act_bytes;
}
static size_t xa_block_bytes(const lt_graph *g, const lt_backend *be) {
    return (size_t)LT_PROJ_COUNT * (size_t)g->cap * (size_t)g->r * (size_t)be->act_bytes;
}
static void *host_res_of(const pass_ctx *x, int l) {
    return (char *)x->g->host_res + (size_t)l * (size_t)x->g->cap * (size_t)x->m->cfg.hidden_size *
                                        (size_t)x->be->act_bytes;
}
static void *host_xa_of(const pass_ctx *x, int l) {
    return (char *)x->g->host_xa + (size_t)l * xa_block_bytes(x->g, x->be);
}

/* Copies layer l's checkpoint back into its slot (after every op queued so far); *ticket: the
 * last of the copies. */
static lt_status ckpt_load(const pass_ctx *x, int l, uint64_t *ticket) {
    lt_graph *g = x->g;
    lt_backend *be = x->be;
    LT_TRY(be->ops.offload_copy(be, g->res[l], host_res_of(x, l), res_bytes(x), ticket));
    if (g->slot_xa[0])
        LT_TRY(be->ops.offload_copy(be, g->slot_xa[l % 2], host_xa_of(x, l), xa_block_bytes(g, be), ticket));
    return LT_OK;
}

/* Embedding, every layer (keeping the checkpoints), final norm into g->lnf. With offload, layer
 * l's input res[l] goes to the host while layer l runs, its xa while layer l+1 runs; a layer
 * waits only for the copy out of the slot it is about to overwrite (written two layers back). */
static lt_status forward_all(const pass_ctx *x) {
    const lt_config *c = &x->m->cfg;
    lt_graph *g = x->g;
    lt_backend *be = x->be;
    const int L = c->num_layers, xa_off = x->off && g->slot_xa[0];
    uint64_t saved_res[2] = {0, 0}, saved_xa[2] = {0, 0}; /* tickets by slot */
    LT_TRY(embed(x));
    for (int l = 0; l < L; l++) {
        if (x->off) {
            if (l < L - 1) LT_TRY(be->ops.offload_copy(be, host_res_of(x, l), g->res[l], res_bytes(x), &saved_res[l % 2]));
            if (l >= 1) LT_TRY(be->ops.offload_wait(be, saved_res[(l + 1) % 2])); /* res[l-1] out of the output slot */
            if (xa_off && l >= 2) LT_TRY(be->ops.offload_wait(be, saved_xa[l % 2])); /* xa[l-2] */
        }
        LT_TRY(layer_fwd(x, l, g->res[l], g->res[l + 1], 0));
        if (xa_off && l < L - 1)
            LT_TRY(be->ops.offload_copy(be, host_xa_of(x, l), g->slot_xa[l % 2], xa_block_bytes(g, be), &saved_xa[l % 2]));
    }
    LT_TRY(be->ops.rmsnorm_fwd(be, g->lnf, g->rstdf, g->res[c->num_layers], x->m->final_norm, x->N,
                               c->hidden_size, (float)c->rms_norm_eps));
    return LT_OK;
}

static lt_status read_loss(const pass_ctx *x, double *loss_sum) {
    float v = 0;
    LT_TRY(x->be->ops.download(x->be, &v, x->g->loss, sizeof v));
    *loss_sum += (double)v;
    return LT_OK;
}

/* The fused LM head + CE of the pass: the loss sum into g->loss (+=), dh = grad_scale * d(sum
 * CE)/d lnf unless NULL; in chunks of the graph's mode's size (be->head_chunk_bytes, set for
 * this call only) */
static lt_status head_ce(const pass_ctx *x, void *dh, float grad_scale) {
    const lt_config *c = &x->m->cfg;
    lt_graph *g = x->g;
    lt_backend *be = x->be;
    const uint64_t keep = be->head_chunk_bytes;
    be->head_chunk_bytes = lt_graph_head_chunk_bytes(g->train);
    const lt_status st = be->ops.lm_head_ce_cap(be, g->loss, dh, g->lnf, x->m->head, g->targets, x->N,
                                                c->hidden_size, c->vocab_size, grad_scale, c->final_softcap);
    be->head_chunk_bytes = keep;
    return st;
}

/* Forward, LM head + CE (the loss sum into g->loss), backward: the whole training pass. */
static lt_status train_pass(const pass_ctx *x, float grad_scale) {
    lt_model *m = x->m;
    const lt_config *c = &m->cfg;
    lt_graph *g = x->g;
    lt_backend *be = x->be;
    int64_t N = x->N, C = c->hidden_size;
    LT_TRY(forward_all(x));
    /* head + CE: dlnf (in dln) = grad_scale * d(sum CE)/d lnf */
    LT_TRY(be->ops.memset0(be, g->loss, sizeof(float)));
    LT_TRY(head_ce(x, g->dln, grad_scale));
    LT_TRY(be->ops.memset0(be, g->dres, (size_t)N * (size_t)C * (size_t)be->act_bytes));
    LT_TRY(be->ops.rmsnorm_bwd(be, g->dres, g->dln, g->res[c->num_layers], m->final_norm, g->rstdf, N, C));
    /* layers in reverse; with one activation set, each layer is recomputed from its checkpoint
     * first (same dropout streams, so the same masks), except the last: the forward pass has
     * just left its activations in that set (the head and the final norm do not touch it).
     * With offload, the last layer's checkpoint is still in its slot; layer l-1's is copied
     * back into the other slot (free once layer l+1's backward is done) while layer l runs */
    const int L = c->num_layers;
    uint64_t loaded = 0;
    if (x->off && L >= 2) LT_TRY(ckpt_load(x, L - 2, &loaded));
    for (int l = L - 1; l >= 0; l--) {
        if (x->off && l < L - 1) {
            LT_TRY(be->ops.offload_wait(be, loaded));
            if (l >= 1) LT_TRY(ckpt_load(x, l - 1, &loaded));
        }
        if (g->n_acts == 1 && l < L - 1) LT_TRY(layer_fwd(x, l, g->res[l], g->res[l + 1], 1));
        LT_TRY(layer_bwd(x, l, g->res[l]));
    }
    return LT_OK;
}

static int rec_key_eq(const struct rec_key *a, const struct rec_key *b) {
    return a->N == b->N && a->nseq == b->nseq && a->max_seqlen == b->max_seqlen && a->keep == b->keep &&
           a->lora_on == b->lora_on && a->deterministic == b->deterministic && a->offload == b->offload &&
           a->dropout == b->dropout &&
           a->grad_scale == b->grad_scale && a->lora_scale == b->lora_scale &&
           !memcmp(&a->lora, &b->lora, sizeof a->lora) && a->epoch == b->epoch;
}

/* Fixed shapes (a benchmark, packed or padded batches of one size) repeat the same ~3,000
 * kernel launches every pass: the second pass of a shape in a row (or, with pass->shapes_recur,
 * among the last LT_GRAPH_SEEN) is recorded as a backend graph and later passes of it replay it
 * (one launch; the GPU no longer waits between kernels). Up to LT_GRAPH_RECS shapes are kept.
 * Everything a replay could get wrong is in rec_key (what the launches' arguments depend on)
 * or in device memory (the batch, the dropout seed and streams). Returns 1 when the pass ran
 * as a graph, 0 when the caller must run it op by op; errors of a replay are errors. */
static int graph_pass(const pass_ctx *x, const lt_graph_pass *pass, float grad_scale, lt_status *st) {
    lt_model *m = x->m;
    lt_graph *g = x->g;
    lt_backend *be = x->be;
    *st = LT_OK;
    if (!be->ops.graph_begin) return 0;
    struct rec_key k;
    memset(&k, 0, sizeof k);
    k.N = x->N; k.nseq = x->nseq; k.max_seqlen = x->max_seqlen; k.keep = pass->keep_activations;
    k.lora_on = x->lora_on; k.dropout = x->dropout; k.grad_scale = grad_scale; k.lora_scale = m->lora_scale;
    k.lora = m->lora;
    k.deterministic = be->deterministic;
    k.offload = x->off;
    k.epoch = be->ops.graph_epoch(be);
    /* a recording of an older memory epoch can never run again: its slot is freed */
    struct graph_rec *slot = NULL;
    for (int i = 0; i < LT_GRAPH_RECS; i++) {
        struct graph_rec *r = &g->recs[i];
        if (r->exec && r->key.epoch != k.epoch) {
            be->ops.graph_free(be, r->exec);
            r->exec = NULL;
        }
        if (r->exec && rec_key_eq(&k, &r->key)) {
            /* the recorded masks are those of its stream base; a replay's differ by xor (graph.h) */
            const uint64_t sx = lt_graph_stream(pass->stream_base, 0, 0) ^ lt_graph_stream(r->base, 0, 0);
            r->used = ++g->rec_clock;
            g->last_key = k;
            *st = be->ops.graph_launch(be, r->exec, pass->seed, sx);
            return 1;
        }
        if (!slot || (slot->exec && (!r->exec || r->used < slot->used))) slot = r; /* free, else least recent */
    }
    /* the first pass of a shape runs op by op (the GEMM tuner times its products outside a
     * capture, so the recording uses the tuned ones); shapes_recur: one seen among the last
     * LT_GRAPH_SEEN passes is recorded, not only one seen in the pass before */
    int seen = 0;
    for (int i = 0; i < LT_GRAPH_SEEN && !seen; i++) seen = rec_key_eq(&k, &g->seen[i]);
    if (!seen) {
        g->seen[g->seen_next] = k;
        g->seen_next = (g->seen_next + 1) % LT_GRAPH_SEEN;
    }
    const int again = rec_key_eq(&k, &g->last_key) || (pass->shapes_recur && seen);
    g->last_key = k;
    if (!again || (g->rec_failed && rec_key_eq(&k, &g->rec_want))) return 0;
    if (slot->exec) be->ops.graph_free(be, slot->exec);
    slot->exec = NULL;
    g->rec_want = k;
    g->rec_failed = 1;
    if (be->ops.graph_begin(be) != LT_OK) return 0;
    const lt_status body = train_pass(x, grad_scale);
    void *rec = NULL;
    if (be->ops.graph_end(be, body == LT_OK, &rec) != LT_OK) {
        lt_log(LT_LOG_DEBUG, "graph: passes of %lld tokens run op by op (%s)", (long long)x->N,
               body != LT_OK ? "an op failed while recording" : "recording failed");
        return 0;
    }
    g->rec_failed = 0;
    k.epoch = be->ops.graph_epoch(be); /* first-use allocations while recording */
    slot->exec = rec;
    slot->base = pass->stream_base;
    slot->key = k;
    slot->used = ++g->rec_clock;
    g->last_key = k;
    *st = be->ops.graph_launch(be, rec, pass->seed, 0);
    return 1;
}

lt_status lt_graph_forward_backward(lt_model *m, const lt_batch *b, float grad_scale, const lt_graph_pass *pass,
                                    double *loss_sum) {
    LT_CHECK_ARG(pass && loss_sum, "lt_graph_forward_backward: needs pass options and a loss accumulator");
    LT_CHECK_ARG(b && b->targets, "lt_graph_forward_backward: the batch has no targets");
    if (!m || !m->has_lora) return lt_error(LT_ERR_STATE, "training needs a LoRA adapter: call lt_model_add_lora "
                                            "or lt_model_load_adapter first");
    if (!m->lora_enabled) return lt_error(LT_ERR_STATE, "training needs the LoRA branch enabled "
                                          "(lt_model_set_lora_enabled(model, 1))");
    pass_ctx x;
    LT_TRY(pass_begin(m, b, pass->keep_activations     ? LT_GRAPH_TRAIN_KEEP
                            : pass->offload_checkpoints ? LT_GRAPH_TRAIN_OFFLOAD
                                                        : LT_GRAPH_TRAIN, &x));
    x.off = m->graph->offload; /* a graph with device checkpoints (reserved before) keeps them */
    x.dropout = pass->train ? m->lora.dropout : 0.0f;
    x.seed = pass->seed;
    x.stream_base = pass->stream_base;
    lt_status st;
    if (!graph_pass(&x, pass, grad_scale, &st)) st = train_pass(&x, grad_scale);
    LT_TRY(st);
    /* the loss is read once the whole pass is queued: no wait between forward and backward */
    return read_loss(&x, loss_sum);
}

lt_status lt_graph_loss(lt_model *m, const lt_batch *b, double *loss_sum) {
    return lt_graph_eval(m, b, loss_sum, NULL);
}

/* argmax of each labelled row's logits against its target: the logits of LT_LOGITS_CHUNK_FLOATS
 * at a time, their argmax on the backend (argmax_rows), only the ids downloaded */
static lt_status count_correct(const pass_ctx *x, const lt_batch *b, int64_t *n_correct) {
    lt_model *m = x->m;
    lt_graph *g = x->g;
    lt_backend *be = x->be;
    int64_t V = m->cfg.vocab_size, C = m->cfg.hidden_size;
    int64_t rows = logits_rows(x->N, V);
    if (!g->logits || g->logits_rows < rows) {
        gfree(be, (void **)&g->logits);
        g->logits_rows = 0;
        LT_TRY(galloc(be, (void **)&g->logits, (size_t)rows * (size_t)V * sizeof(float)));
        g->logits_rows = rows;
    }
    if (!g->argmax || g->argmax_rows < rows) {
        gfree(be, (void **)&g->argmax);
        g->argmax_rows = 0;
        LT_TRY(galloc(be, (void **)&g->argmax, (size_t)rows * sizeof(int32_t)));
        g->argmax_rows = rows;
    }
    int32_t *ids = g->argmax, *host = lt_malloc((size_t)rows * sizeof(int32_t), "eval argmax");
    if (!host) return LT_ERR_OUT_OF_MEMORY;
    lt_status st = LT_OK;
    for (int64_t t0 = 0; t0 < x->N && st == LT_OK; t0 += rows) {
        int64_t n = x->N - t0 < rows ? x->N - t0 : rows, any = 0;
        for (int64_t t = 0; t < n && !any; t++) any = b->targets[t0 + t] != -100;
        if (!any) continue;
        st = be->ops.lm_head_logits(be, g->logits, act_at(x, g->lnf, t0, C), m->head, n, C, V);
        if (st == LT_OK) st = be->ops.argmax_rows(be, ids, g->logits, n, V);
        if (st == LT_OK) st = be->ops.download(be, host, ids, (size_t)n * sizeof(int32_t));
        for (int64_t t = 0; t < n && st == LT_OK; t++)
            *n_correct += b->targets[t0 + t] != -100 && host[t] == b->targets[t0 + t];
    }
    free(host);
    return st;
}

lt_status lt_graph_eval(lt_model *m, const lt_batch *b, double *loss_sum, int64_t *n_correct) {
    LT_CHECK_ARG(loss_sum && b && b->targets, "lt_graph_loss: needs a batch with targets and a loss accumulator");
    pass_ctx x;
    LT_TRY(pass_begin(m, b, LT_GRAPH_INFER, &x));
    LT_TRY(forward_all(&x));
    LT_TRY(x.be->ops.memset0(x.be, x.g->loss, sizeof(float)));
    LT_TRY(head_ce(&x, NULL, 1.0f));
    LT_TRY(read_loss(&x, loss_sum));
    return n_correct ? count_correct(&x, b, n_correct) : LT_OK;
}

lt_status lt_graph_logits(lt_model *m, const lt_batch *b, float *host_logits) {
    LT_CHECK_ARG(host_logits, "lt_graph_logits: logits is NULL");
    pass_ctx x;
    LT_TRY(pass_begin(m, b, LT_GRAPH_INFER, &x));
    LT_TRY(forward_all(&x));
    lt_graph *g = x.g;
    lt_backend *be = x.be;
    int64_t V = m->cfg.vocab_size, C = m->cfg.hidden_size;
    int64_t rows = logits_rows(x.N, V);
    if (!g->logits || g->logits_rows < rows) {
        gfree(be, (void **)&g->logits);
        g->logits_rows = 0;
        LT_TRY(galloc(be, (void **)&g->logits, (size_t)rows * (size_t)V * sizeof(float)));
        g->logits_rows = rows;
    }
    for (int64_t t0 = 0; t0 < x.N; t0 += rows) {
        int64_t n = x.N - t0 < rows ? x.N - t0 : rows;
        LT_TRY(be->ops.lm_head_logits_cap(be, g->logits, act_at(&x, g->lnf, t0, C), m->head, n, C, V,
                                          m->cfg.final_softcap));
        LT_TRY(be->ops.download(be, host_logits + (size_t)t0 * (size_t)V, g->logits, (size_t)n * (size_t)V * 4));
    }
    return LT_OK;
}

lt_status lt_graph_forward_cached(lt_model *m, const int32_t *host_ids, int64_t n, int64_t past, void *const *kcache,
                                  void *const *vcache, float *logits, float *host_logits) {
    LT_CHECK_ARG(m && host_ids && n > 0 && past >= 0 && kcache && vcache && logits,
                 "lt_graph_forward_cached: bad arguments");
    LT_CHECK_ARG(m->be && m->layers && m->embed, "lt_graph_forward_cached: the model has no weights loaded");
    lt_backend *be = m->be;
    const lt_config *c = &m->cfg;
    LT_TRY(lt_graph_reserve(m, n, LT_GRAPH_INFER));
    pass_ctx x;
    memset(&x, 0, sizeof x);
    x.m = m; x.g = m->graph; x.be = be;
    x.N = n;
    x.nseq = 1;
    x.max_seqlen = (int32_t)n;
    x.lora_on = m->has_lora && m->lora_enabled;
    x.kc = kcache;
    x.vc = vcache;
    x.past = past;
    pass_rope(&x, past + n);
    int32_t *pos = lt_malloc(sizeof *pos * (size_t)n, "positions");
    if (!pos) return LT_ERR_OUT_OF_MEMORY;
    for (int64_t i = 0; i < n; i++) pos[i] = (int32_t)(past + i);
    int32_t cu[2] = {0, (int32_t)n};
    lt_status st = be->ops.upload(be, x.g->ids, host_ids, 4 * (size_t)n);
    if (st == LT_OK) st = be->ops.upload(be, x.g->pos, pos, 4 * (size_t)n);
    if (st == LT_OK) st = be->ops.upload(be, x.g->cu, cu, sizeof cu);
    free(pos);
    LT_TRY(st);
    LT_TRY(embed(&x));
    for (int l = 0; l < c->num_layers; l++) LT_TRY(layer_fwd(&x, l, x.g->res[l], x.g->res[l + 1], 0));
    const int64_t C = c->hidden_size;
    LT_TRY(be->ops.rmsnorm_fwd(be, x.g->lnf, x.g->rstdf, act_at(&x, x.g->res[c->num_layers], n - 1, C),
                               m->final_norm, 1, C, (float)c->rms_norm_eps));
    LT_TRY(be->ops.lm_head_logits_cap(be, logits, x.g->lnf, m->head, 1, C, c->vocab_size, c->final_softcap));
    if (host_logits) LT_TRY(be->ops.download(be, host_logits, logits, (size_t)c->vocab_size * sizeof(float)));
    return LT_OK;
}

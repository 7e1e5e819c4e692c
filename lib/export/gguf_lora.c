/* gguf_lora.c - the LoRA adapter as a GGUF (what convert_lora_to_gguf.py writes and
 * llama.cpp's --lora / Ollama's ADAPTER load): general.architecture the base GGUF's (llama.cpp
 * refuses an adapter of another architecture; Mistral's is "llama"), general.type "adapter",
 * adapter.type "lora", adapter.lora.alpha, and per adapted weight "<gguf name>.lora_a"
 * (ne [in, r]) and ".lora_b" (ne [r, out]) in F32, bytes as PEFT stores A [r, in] and B [out, r]
 * (specs/gguf-export.md §6). The names are the base GGUF's (the export plan's): Phi-3's fused
 * qkv_proj and gate_up_proj are one LoRA each, on llama.cpp's equally fused blk.N.attn_qkv and
 * blk.N.ffn_up (gate rows first), so A and B go as they are. Llama / Mistral GGUFs hold the q/k
 * rows permuted for llama.cpp's rope (lt_gguf_permute_rows): B's rows go through the same
 * permutation, so that B' @ A is the permuted delta. Norm conventions (Gemma's 1 + w) do not
 * touch the projections. */
#include "export/export.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

lt_status lt_export_write_gguf_lora(lt_exporter *ex, const char *path) {
    lt_model *m = ex->model;
    if (!m->has_lora) return lt_error(LT_ERR_STATE, "GGUF LoRA export: no adapter is attached");
    const char *arch = lt_gguf_arch(&m->cfg);
    if (!arch)
        return lt_error(LT_ERR_UNSUPPORTED, "GGUF LoRA export of %s (model_type '%s'): no llama.cpp architecture for it",
                        m->cfg.architecture, m->cfg.model_type);
    if (!ex->p.overwrite && lt_file_exists(path))
        return lt_error(LT_ERR_EXISTS, "%s already exists (pass --overwrite, or overwrite=1, to replace it)", path);
    LT_TRY(lt_export_parent_dir(path));
    LT_TRY(lt_export_fetch_lora(ex));
    lt_gguf_writer *w = NULL;
    LT_TRY(lt_gguf_writer_new(&w));
    lt_status st = lt_gguf_add_str(w, "general.architecture", arch);
    if (st == LT_OK) st = lt_gguf_add_str(w, "general.type", "adapter");
    if (st == LT_OK) st = lt_gguf_add_str(w, "adapter.type", "lora");
    /* llama.cpp scales by alpha / r with r = lora_b.ne[0]; storing scale * r reproduces PEFT's
     * alpha / r and also rsLoRA's alpha / sqrt(r) */
    int32_t r = 0;
    for (int l = 0; l < m->cfg.num_layers && !r; l++)
        for (int p = 0; p < LT_PROJ_COUNT && !r; p++)
            if (m->layers[l].lora[p].A) r = (int32_t)m->layers[l].lora[p].r;
    for (int l = 0; l < m->cfg.num_layers && st == LT_OK; l++)
        for (int p = 0; p < LT_PROJ_COUNT && st == LT_OK; p++)
            if (m->layers[l].lora[p].A && m->layers[l].lora[p].r != r)
                st = lt_error(LT_ERR_UNSUPPORTED, "GGUF LoRA export: layer %d %s has rank %lld, others %d; llama.cpp "
                              "scales every pair by one adapter.lora.alpha over its own rank", l,
                              lt_proj_name(&m->cfg, p), (long long)m->layers[l].lora[p].r, (int)r);
    if (st == LT_OK) st = lt_gguf_add_f32(w, "adapter.lora.alpha", m->lora_scale * (float)r);
    if (st == LT_OK) st = lt_gguf_add_u32(w, "general.quantization_version", 2);
    uint64_t total = 0;
    for (size_t i = 0; st == LT_OK && i < ex->n_t; i++) {
        const lt_export_tensor *t = &ex->t[i];
        if (t->kind != LT_XT_PROJ) continue;
        const lt_lora_tensor *lt = &m->layers[t->layer].lora[t->proj];
        if (!lt->A) continue;
        char name[LT_GGUF_MAX_NAME + 16];
        int64_t nea[2] = {lt->in, lt->r}, neb[2] = {lt->r, lt->out};
        snprintf(name, sizeof name, "%s.lora_a", t->gguf);
        st = lt_gguf_add_tensor(w, name, 2, nea, LT_GGML_F32, NULL);
        snprintf(name, sizeof name, "%s.lora_b", t->gguf);
        if (st == LT_OK) st = lt_gguf_add_tensor(w, name, 2, neb, LT_GGML_F32, NULL);
        total += (uint64_t)(lt->in + lt->out) * (uint64_t)lt->r;
    }
    ex->progress_total = total;
    ex->phase = "export gguf-lora";
    if (st == LT_OK) st = lt_gguf_writer_begin(w, path, ex->p.overwrite);
    size_t idx = 0;
    float *perm = NULL; /* B with llama.cpp's q/k row order (Llama / Mistral), the exporter's copy kept */
    for (size_t i = 0; st == LT_OK && i < ex->n_t; i++) {
        const lt_export_tensor *t = &ex->t[i];
        if (t->kind != LT_XT_PROJ) continue;
        const lt_lora_tensor *lt = &m->layers[t->layer].lora[t->proj];
        if (!lt->A) continue;
        size_t k = (size_t)t->layer * LT_PROJ_COUNT + t->proj, nb = (size_t)(lt->out * lt->r);
        const float *B = ex->lora_B[k];
        if ((m->cfg.family == LT_FAMILY_LLAMA || m->cfg.family == LT_FAMILY_MISTRAL) &&
            (t->proj == LT_PROJ_Q || t->proj == LT_PROJ_K)) {
            free(perm);
            if (!(perm = lt_malloc(nb * sizeof(float), "a permuted LoRA B"))) {
                st = LT_ERR_OUT_OF_MEMORY;
                break;
            }
            memcpy(perm, B, nb * sizeof(float));
            st = lt_gguf_permute_rows(&m->cfg, t->proj, perm, lt->out, lt->r);
            B = perm;
        }
        if (st == LT_OK) st = lt_gguf_writer_put(w, idx++, ex->lora_A[k], (size_t)(lt->in * lt->r) * 4);
        if (st == LT_OK) st = lt_gguf_writer_put(w, idx++, B, nb * 4);
        if (st == LT_OK) st = lt_export_progress(ex, (uint64_t)(lt->in + lt->out) * (uint64_t)lt->r);
    }
    free(perm);
    if (st == LT_OK) st = lt_gguf_writer_finish(w);
    lt_gguf_writer_free(w);
    if (st != LT_OK && st != LT_STOPPED) return lt_error_wrap(st, "GGUF LoRA export to %s", path);
    return st;
}

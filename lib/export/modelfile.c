/* modelfile.c - the Ollama Modelfile written beside a GGUF: FROM ./<file>, a TEMPLATE that is
 * the prompt template the model was trained with turned into Ollama's Go template
 * ({instruction} -> {{ .Prompt }}, {input} -> nothing, {output} -> {{ .Response }} followed by
 * the template's tail and the EOS the training text ended with; a system block and the turn
 * opener as a stop when the template is in a family's chat format: ChatML, Llama 3, Gemma,
 * Phi-3), and PARAMETER stop lines for the tokenizer's end tokens (specs/gguf-export.md §7). */
#include "export/export.h"
#include "data/template.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct { char *p; size_t len, cap; int oom; } lt_mbuf;

static void lt_mb_add(lt_mbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 512;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { b->oom = 1; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}
static void lt_mb_str(lt_mbuf *b, const char *s) { lt_mb_add(b, s, strlen(s)); }

typedef struct { lt_mbuf *b; int bad; const char *eos; } lt_walk_ctx;

/* Literal text of the template, with Go template delimiters escaped. */
static void lt_mb_literal(lt_walk_ctx *w, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (i + 1 < n && s[i] == '{' && s[i + 1] == '{') {
            lt_mb_str(w->b, "{{ \"{{\" }}");
            i++;
        } else if (i + 2 < n && !strncmp(s + i, "\"\"\"", 3)) {
            w->bad = 1;
            return;
        } else {
            lt_mb_add(w->b, s + i, 1);
        }
    }
}

static void lt_piece(int kind, const char *text, size_t len, void *user) {
    lt_walk_ctx *w = user;
    switch (kind) {
    case LT_TPL_LITERAL: lt_mb_literal(w, text, len); break;
    case LT_TPL_INSTRUCTION: lt_mb_str(w->b, "{{ .Prompt }}"); break;
    case LT_TPL_INPUT: break; /* Ollama has one user text: it goes to {instruction} */
    case LT_TPL_OUTPUT: lt_mb_str(w->b, "{{ .Response }}"); break;
    }
}

lt_status lt_export_modelfile_path(const lt_exporter *ex, const char *gguf_path, char **out) {
    *out = NULL;
    const char *slash = strrchr(gguf_path, '/');
    char *dir = slash ? lt_strndup(gguf_path, (size_t)(slash - gguf_path) + 1) : lt_strdup("");
    const char *file = slash ? slash + 1 : gguf_path;
    char *plain = dir ? lt_path_join(dir, "Modelfile") : NULL;
    if (!plain) { free(dir); return LT_ERR_OUT_OF_MEMORY; }
    int use_plain = !lt_file_exists(plain) || ex->p.overwrite;
    if (!use_plain) { /* taken: is it this GGUF's own (FROM ./<file>)? */
        char *text = NULL;
        size_t len = 0;
        if (lt_read_file(plain, &text, &len) == LT_OK) {
            char want[1100];
            snprintf(want, sizeof want, "\nFROM ./%s\n", file);
            use_plain = strstr(text, want) != NULL;
        }
        lt_clear_error();
        free(text);
    }
    if (use_plain) {
        free(dir);
        *out = plain;
        return LT_OK;
    }
    free(plain);
    size_t n = strlen(file);
    if (n > 5 && !strcasecmp(file + n - 5, ".gguf")) n -= 5;
    char name[1100];
    snprintf(name, sizeof name, "%.*s.Modelfile", (int)(n < 1000 ? n : 1000), file);
    char *named = lt_path_join(dir, name);
    free(dir);
    if (!named) return LT_ERR_OUT_OF_MEMORY;
    if (lt_file_exists(named) && !ex->p.overwrite) {
        lt_status st = lt_error(LT_ERR_EXISTS, "%s already exists beside the GGUF (pass --overwrite, or overwrite=1, "
                                "to replace it)", named);
        free(named);
        return st;
    }
    *out = named;
    return LT_OK;
}

lt_status lt_export_write_modelfile(lt_exporter *ex, const char *gguf_path) {
    const char *tpl = lt_template_resolve(ex->template_text ? ex->template_text : ex->template_name);
    if (!tpl) return lt_error_wrap(LT_ERR_NOT_FOUND, "Modelfile");
    LT_TRY(lt_template_check(tpl));
    char **stops = NULL;
    size_t n_stops = 0;
    LT_TRY(lt_export_stop_tokens(ex, &stops, &n_stops));
    const char *slash = strrchr(gguf_path, '/');
    char *dir = slash ? lt_strndup(gguf_path, (size_t)(slash - gguf_path) + 1) : lt_strdup("");
    const char *file = slash ? slash + 1 : gguf_path;
    lt_mbuf b = {0};
    lt_mb_str(&b, "# Ollama Modelfile written by loratune: ollama create <name> -f Modelfile\n");
    lt_mb_str(&b, "FROM ./");
    lt_mb_str(&b, file);
    lt_mb_str(&b, "\nTEMPLATE \"\"\"");
    /* a training template in a family's chat format: Ollama's system block in that format
     * first, and the turn opener as a stop (ChatML: Qwen2/2.5/3; Llama 3; Gemma; Phi-3) */
    static const struct { const char *marker, *system, *stop; } chat_formats[] = {
        {"<|im_start|>", "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}", "<|im_start|>"},
        {"<|start_header_id|>",
         "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}",
         "<|start_header_id|>"},
        {"<start_of_turn>", "", "<start_of_turn>"}, /* Gemma has no system turn */
        {"<|user|>", "{{ if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}", "<|user|>"},
    };
    int fmt = -1;
    for (int f = 0; f < (int)(sizeof chat_formats / sizeof chat_formats[0]) && fmt < 0; f++)
        if (strstr(tpl, chat_formats[f].marker)) fmt = f;
    const int chatml = fmt >= 0;
    if (chatml) lt_mb_str(&b, chat_formats[fmt].system);
    lt_walk_ctx w = {&b, 0, n_stops ? stops[0] : NULL};
    lt_status st = lt_template_walk(tpl, lt_piece, &w);
    /* the training text ended with the EOS after the template's tail */
    if (st == LT_OK && n_stops) lt_mb_str(&b, stops[0]);
    lt_mb_str(&b, "\"\"\"\n");
    if (chatml) {
        lt_mb_str(&b, "PARAMETER stop \"");
        lt_mb_str(&b, chat_formats[fmt].stop);
        lt_mb_str(&b, "\"\n");
    }
    for (size_t i = 0; i < n_stops; i++) {
        if (chatml && !strcmp(stops[i], chat_formats[fmt].stop)) continue;
        lt_mb_str(&b, "PARAMETER stop \"");
        lt_mb_str(&b, stops[i]);
        lt_mb_str(&b, "\"\n");
    }
    if (st == LT_OK && w.bad)
        st = lt_error(LT_ERR_UNSUPPORTED, "Modelfile: the template contains \"\"\", which a Modelfile TEMPLATE cannot hold");
    if (st == LT_OK && (b.oom || !dir)) st = LT_ERR_OUT_OF_MEMORY;
    char *path = NULL;
    if (st == LT_OK) st = lt_export_modelfile_path(ex, gguf_path, &path);
    if (st == LT_OK) st = lt_write_file_atomic(path, b.p, b.len, 1);
    if (st == LT_OK) LT_LOGI("wrote %s", path);
    for (size_t i = 0; i < n_stops; i++) free(stops[i]);
    free(stops);
    free(path);
    free(dir);
    free(b.p);
    return st == LT_OK ? st : lt_error_wrap(st, "writing the Modelfile beside %s", gguf_path);
}

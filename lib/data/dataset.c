/* dataset.c - lt_dataset: parameters, loading a file (streamed: read -> parse -> render in this
 * thread, tokenize chunks of records on several threads, append), records added through the
 * API, truncation and loss masks at token level, statistics, and the seeded train/eval split.
 *
 * Bad records: strict by default (the first one stops the load with LT_ERR_DATA and a message
 * "file:line:column: record N: what is wrong"); with skip_bad_records each is logged as a
 * warning, counted in stats.n_skipped and left out. Breaks in a JSON array's structure (an
 * unterminated record, a missing comma) stop the load in both modes: nothing after them can be
 * trusted. Records longer than max_seq_len are truncated to their first max_seq_len tokens (as
 * TRL does) and counted in stats.n_truncated, in both modes; a response-only record left with
 * no labelled token is a bad record. */
#include "data/dataset_impl.h"
#include "data/reader.h"
#include "data/template.h"
#include "core/rng.h"
#include "tok/tok.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Records and bytes of text per tokenization chunk: bounds memory besides the tokens. */
#define CHUNK_RECORDS 4096
#define CHUNK_TEXT_BYTES ((size_t)32 << 20)
/* Philox stream of the eval split (the epoch permutations use streams 0, 1, 2 ...). */
#define SPLIT_STREAM 0x45564C53504C4954ull /* "EVLSPLIT" */

LT_API void lt_dataset_params_init(lt_dataset_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->format = LT_DATA_AUTO;
    p->template_name = "alpaca-zh";
    p->instruction_field = "instruction";
    p->input_field = "input";
    p->output_field = "output";
    p->text_field = "text";
    p->max_seq_len = 2048;
    p->loss_on = LT_LOSS_ALL;
    p->add_eos = 1;
    p->seed = 3407;
}

LT_API void lt_dataset_free(lt_dataset *ds) {
    if (!ds) return;
    free(ds->own_template_name);
    free(ds->own_template_text);
    free(ds->own_ins);
    free(ds->own_inp);
    free(ds->own_out);
    free(ds->own_text);
    free(ds->eos);
    free(ds->ids);
    free(ds->labels);
    free(ds->recs);
    free(ds->train);
    free(ds->eval);
    pthread_mutex_destroy(&ds->mu);
    free(ds);
}

static lt_status own(char **dst, const char *src, const char *dflt, const char **field) {
    *dst = lt_strdup(src && *src ? src : dflt);
    if (!*dst) return LT_ERR_OUT_OF_MEMORY;
    *field = *dst;
    return LT_OK;
}

LT_API lt_status lt_dataset_new(const lt_tokenizer *tok, const lt_dataset_params *params, lt_dataset **out) {
    LT_CHECK_ARG(out, "lt_dataset_new: out is NULL");
    *out = NULL;
    LT_CHECK_ARG(tok, "lt_dataset_new: the tokenizer is NULL (load one with lt_tokenizer_load)");
    lt_dataset_params p;
    lt_dataset_params_init(&p);
    if (params) {
        if (params->struct_size < sizeof(uint32_t) || params->struct_size > sizeof p)
            return lt_error(LT_ERR_VERSION, "lt_dataset_params.struct_size is %u, this library knows %zu",
                            params->struct_size, sizeof p);
        memcpy(&p, params, params->struct_size);
        p.struct_size = sizeof p;
    }
    LT_CHECK_ARG(p.format >= LT_DATA_AUTO && p.format <= LT_DATA_TOKENS, "dataset format %d is not a lt_data_format", p.format);
    LT_CHECK_ARG(p.loss_on == LT_LOSS_ALL || p.loss_on == LT_LOSS_RESPONSE, "loss_on %d is not a lt_loss_on", p.loss_on);
    LT_CHECK_ARG(p.max_seq_len > 0, "max_seq_len must be > 0 (got %d)", p.max_seq_len);
    LT_CHECK_ARG(p.eval_fraction >= 0 && p.eval_fraction < 1, "eval_fraction must be in [0, 1) (got %g)", p.eval_fraction);
    LT_CHECK_ARG(p.n_threads >= 0, "n_threads must be >= 0 (got %d)", p.n_threads);
    LT_CHECK_ARG(!(p.format == LT_DATA_TEXT && p.loss_on == LT_LOSS_RESPONSE),
                 "loss_on=response needs Alpaca or chat records: plain text has no response span");
    if (p.template_text && lt_template_builtin(p.template_text)) { /* a name given as the text */
        p.template_name = p.template_text;
        p.template_text = NULL;
    }
    lt_dataset *ds = lt_calloc(1, sizeof *ds, "a dataset");
    if (!ds) return LT_ERR_OUT_OF_MEMORY;
    pthread_mutex_init(&ds->mu, NULL);
    ds->tok = tok;
    lt_status st;
    lt_dataset_params dflt; /* NULL or "" names take the defaults */
    lt_dataset_params_init(&dflt);
    if ((st = own(&ds->own_template_name, p.template_name, dflt.template_name, &p.template_name)) < 0 ||
        (st = own(&ds->own_ins, p.instruction_field, dflt.instruction_field, &p.instruction_field)) < 0 ||
        (st = own(&ds->own_inp, p.input_field, dflt.input_field, &p.input_field)) < 0 ||
        (st = own(&ds->own_out, p.output_field, dflt.output_field, &p.output_field)) < 0 ||
        (st = own(&ds->own_text, p.text_field, dflt.text_field, &p.text_field)) < 0)
        goto fail;
    if (p.template_text && *p.template_text) {
        if ((st = own(&ds->own_template_text, p.template_text, "", &p.template_text)) < 0) goto fail;
        ds->tpl = ds->own_template_text;
    } else {
        p.template_text = NULL;
        ds->tpl = lt_template_builtin(p.template_name);
        if (!ds->tpl) {
            st = lt_error(LT_ERR_NOT_FOUND, "unknown template name '%s' (built-in: alpaca-zh, alpaca, chatml; or pass "
                          "a template text with {instruction}, {input} and {output})", p.template_name);
            goto fail;
        }
    }
    if ((st = lt_template_check(ds->tpl)) < 0) goto fail;
    const char *eos = lt_tokenizer_eos_token(tok);
    if (eos) {
        if (!(ds->eos = lt_strdup(eos))) { st = LT_ERR_OUT_OF_MEMORY; goto fail; }
    } else if (p.add_eos && p.format != LT_DATA_TOKENS) {
        LT_LOGW("the tokenizer has no EOS token: records get no EOS appended (the model may not learn to stop)");
    }
    ds->vocab = lt_tokenizer_vocab_size(tok);
    ds->format = p.format;
    ds->n_threads = lt_threads(p.n_threads);
    ds->p = p;
    ds->min_len = INT32_MAX;
    ds->split_dirty = 1;
    *out = ds;
    return LT_OK;
fail:
    lt_dataset_free(ds);
    return st;
}

/* ---- storage ---- */
static lt_status grow(void **p, size_t *cap, size_t need, size_t elem, const char *what) {
    if (need <= *cap) return LT_OK;
    size_t c = *cap ? *cap : 1024;
    while (c < need) c += c / 2 + 1024;
    void *q = lt_realloc(*p, c * elem, what);
    if (!q) return LT_ERR_OUT_OF_MEMORY;
    *p = q;
    *cap = c;
    return LT_OK;
}

lt_status lt_ds_append(lt_dataset *ds, const lt_prep *p, const int32_t *ids, const uint32_t *offs, size_t n,
                       const char *where) {
    const int32_t *given_labels = p->text ? NULL : p->labels;
    if (n == 0) return lt_error(LT_ERR_DATA, "%s: the record tokenizes to no tokens", where);
    size_t keep = n;
    int truncated = 0;
    if (keep > (size_t)ds->p.max_seq_len) {
        keep = (size_t)ds->p.max_seq_len;
        truncated = 1;
    }
    /* labels: the same array as ids when every token carries loss, else a stored copy */
    int need_labels = given_labels != NULL || (ds->p.loss_on == LT_LOSS_RESPONSE);
    if (need_labels && !given_labels && !p->text)
        return lt_error(LT_ERR_DATA, "%s: a pre-tokenized record without 'labels' has no response span for "
                        "loss_on=response; give labels (-100 where no loss) or use loss on every token", where);
    LT_TRY(grow((void **)&ds->ids, &ds->cap_ids, ds->n_ids + keep, sizeof(int32_t), "dataset token ids"));
    LT_TRY(grow((void **)&ds->recs, &ds->cap_recs, ds->n_recs + 1, sizeof(lt_ds_rec), "dataset records"));
    size_t n_lab = keep;
    int64_t loff = -1;
    if (need_labels) {
        LT_TRY(grow((void **)&ds->labels, &ds->cap_labels, ds->n_labels + keep, sizeof(int32_t), "dataset labels"));
        int32_t *lab = ds->labels + ds->n_labels;
        n_lab = 0;
        size_t first_resp = SIZE_MAX;
        for (size_t t = 0; t < keep; t++) {
            int on;
            if (given_labels) on = given_labels[t] != -100;
            else if (p->mask_prompt) on = t >= p->n_prompt; /* TRL's completion mask: by token count */
            else {
                /* chat: a token carries loss when its bytes overlap a response span */
                on = 0;
                for (size_t s = 0; s < p->n_spans && !on; s++)
                    on = offs[2 * t + 1] > p->spans[2 * s] && offs[2 * t] < p->spans[2 * s + 1];
            }
            lab[t] = on ? (given_labels ? given_labels[t] : ids[t]) : -100;
            if (on) n_lab++;
        }
        if (p->mask_prompt && !given_labels) {
            if (p->n_prompt < n) first_resp = p->n_prompt;
        } else if (!given_labels)
            for (size_t t = 0; t < n && first_resp == SIZE_MAX; t++)
                for (size_t s = 0; s < p->n_spans; s++)
                    if (offs[2 * t + 1] > p->spans[2 * s] && offs[2 * t] < p->spans[2 * s + 1]) { first_resp = t; break; }
        if (n_lab == 0) {
            if (truncated && first_resp != SIZE_MAX)
                return lt_error(LT_ERR_DATA, "%s: no token carries loss: the response starts at token %zu, after "
                                "max_seq_len=%d cuts the record (raise max_seq_len or shorten the prompt)", where,
                                first_resp, ds->p.max_seq_len);
            if (p->mask_prompt && !given_labels)
                return lt_error(LT_ERR_DATA, "%s: no token carries loss: the record has %zu tokens and its prompt "
                                "alone %zu, so the response adds none beyond the prompt's (its text merges into the "
                                "prompt's last tokens)", where, n, p->n_prompt);
            return lt_error(LT_ERR_DATA, "%s: no token carries loss (every label is -100)%s", where,
                            given_labels ? (truncated ? " within the first max_seq_len tokens" : "") : "");
        }
        loff = (int64_t)ds->n_labels;
        ds->n_labels += keep;
        if (p->mask_prompt && p->prompt_merged)
            LT_LOGD("%s: the prompt's own %zu tokens do not begin the record's (a token merges across the "
                    "prompt/response boundary); as in TRL, the record's first %zu tokens carry no loss all the same",
                    where, p->n_prompt, p->n_prompt);
    }
    memcpy(ds->ids + ds->n_ids, ids, keep * sizeof(int32_t));
    ds->recs[ds->n_recs++] = (lt_ds_rec){ds->n_ids, loff, (uint32_t)keep};
    ds->n_ids += keep;
    if (truncated) {
        ds->n_truncated++;
        LT_LOGD("%s: %zu tokens, truncated to max_seq_len=%d", where, n, ds->p.max_seq_len);
    }
    ds->n_tokens += keep;
    ds->n_label_tokens += n_lab;
    if ((int32_t)keep < ds->min_len) ds->min_len = (int32_t)keep;
    if ((int32_t)keep > ds->max_len) ds->max_len = (int32_t)keep;
    ds->split_dirty = 1;
    return LT_OK;
}

/* A bad record: an error in strict mode; a warning and a count with skip_bad_records. */
static lt_status bad_record(lt_dataset *ds, lt_status st) {
    if (st >= 0 || st == LT_ERR_OUT_OF_MEMORY || st == LT_ERR_IO || st == LT_ERR_INVALID_ARGUMENT || st == LT_ERR_UNSUPPORTED ||
        !ds->p.skip_bad_records)
        return st;
    ds->n_skipped++;
    LT_LOGW("skipped: %s", lt_last_error());
    lt_clear_error();
    return LT_OK;
}

/* Encodes a prepared text record (with the post-processor's tokens where the record kind asks
 * for them: record.c says which), with the byte offsets when response spans decide the labels;
 * for an Alpaca response-only record (mask_prompt) also its prompt alone, with the same
 * add_special, whose token count (p->n_prompt) decides them instead, as in TRL. */
static lt_status encode_prep(const lt_dataset *ds, lt_prep *p, int32_t **ids, uint32_t **offs, size_t *n) {
    int want = ds->p.loss_on == LT_LOSS_RESPONSE && !p->mask_prompt;
    LT_TRY(lt_tokenizer_encode_offsets(ds->tok, p->text, p->len, p->add_special, ids, want ? offs : NULL, n));
    if (!p->mask_prompt) return LT_OK;
    int32_t *pids = NULL;
    size_t np = 0;
    lt_status st = lt_tokenizer_encode_offsets(ds->tok, p->text, p->prompt_len, p->add_special, &pids, NULL, &np);
    if (st < 0) {
        free(*ids);
        *ids = NULL;
        *n = 0;
        return lt_error_wrap(st, "encoding the prompt alone");
    }
    p->n_prompt = np;
    p->prompt_merged = np > *n || (np && memcmp(pids, *ids, np * sizeof *pids) != 0);
    free(pids);
    return LT_OK;
}

/* ---- tokenizing a chunk of records on several threads ---- */
typedef struct {
    lt_dataset *ds;
    lt_prep *preps;       /* [n] */
    char **where;         /* [n] "file:line:col: record N" */
    int32_t **ids;        /* [n] results */
    uint32_t **offs;      /* [n] */
    size_t *n_ids;        /* [n] */
    lt_status *st;        /* [n] */
    char **err;           /* [n] messages of failures (threads have their own last error) */
    size_t n;
    size_t text_bytes;
} chunk;

static void chunk_encode(void *ctx, int64_t i) {
    chunk *c = ctx;
    lt_prep *p = &c->preps[i];
    if (!p->text) return; /* pre-tokenized */
    c->st[i] = encode_prep(c->ds, p, &c->ids[i], &c->offs[i], &c->n_ids[i]);
    if (c->st[i] < 0) c->err[i] = lt_strdup(lt_last_error());
}

static void chunk_reset(chunk *c) {
    for (size_t i = 0; i < c->n; i++) {
        lt_prep_free(&c->preps[i]);
        free(c->where[i]);
        free(c->ids[i]);
        free(c->offs[i]);
        free(c->err[i]);
        c->where[i] = c->err[i] = NULL;
        c->ids[i] = NULL;
        c->offs[i] = NULL;
        c->st[i] = LT_OK;
        c->n_ids[i] = 0;
    }
    c->n = 0;
    c->text_bytes = 0;
}

static void chunk_free(chunk *c) {
    chunk_reset(c);
    free(c->preps);
    free(c->where);
    free(c->ids);
    free(c->offs);
    free(c->n_ids);
    free(c->st);
    free(c->err);
}

static lt_status chunk_init(chunk *c, lt_dataset *ds) {
    memset(c, 0, sizeof *c);
    c->ds = ds;
    c->preps = lt_calloc(CHUNK_RECORDS, sizeof *c->preps, "a tokenization chunk");
    c->where = lt_calloc(CHUNK_RECORDS, sizeof *c->where, "a tokenization chunk");
    c->ids = lt_calloc(CHUNK_RECORDS, sizeof *c->ids, "a tokenization chunk");
    c->offs = lt_calloc(CHUNK_RECORDS, sizeof *c->offs, "a tokenization chunk");
    c->n_ids = lt_calloc(CHUNK_RECORDS, sizeof *c->n_ids, "a tokenization chunk");
    c->st = lt_calloc(CHUNK_RECORDS, sizeof *c->st, "a tokenization chunk");
    c->err = lt_calloc(CHUNK_RECORDS, sizeof *c->err, "a tokenization chunk");
    if (!c->preps || !c->where || !c->ids || !c->offs || !c->n_ids || !c->st || !c->err) {
        chunk_free(c);
        return LT_ERR_OUT_OF_MEMORY;
    }
    return LT_OK;
}

/* Tokenizes the chunk, then appends its records in order. */
static lt_status chunk_flush(chunk *c) {
    lt_dataset *ds = c->ds;
    int threads = ds->n_threads;
    if (c->n < 64) threads = 1;
    lt_parallel_for((int64_t)c->n, threads, chunk_encode, c);
    lt_status st = LT_OK;
    for (size_t i = 0; i < c->n && st >= 0; i++) {
        lt_prep *p = &c->preps[i];
        if (c->st[i] < 0) {
            lt_error(c->st[i], "%s: tokenizing: %s", c->where[i], c->err[i] ? c->err[i] : "failed");
            st = bad_record(ds, c->st[i]);
            continue;
        }
        lt_status s = p->text ? lt_ds_append(ds, p, c->ids[i], c->offs[i], c->n_ids[i], c->where[i])
                              : lt_ds_append(ds, p, p->ids, NULL, p->n, c->where[i]);
        if (s < 0) st = bad_record(ds, s);
    }
    chunk_reset(c);
    return st;
}

/* ---- loading a file ---- */
/* "file:line:col: record N" for files, "record N (line:col)" for lt_dataset_add_json (path NULL). */
static const char *where_at(char *buf, size_t cap, const char *path, const lt_record_pos *pos, uint64_t l, uint64_t c) {
    if (path) snprintf(buf, cap, "%s:%llu:%llu: record %llu", path, (unsigned long long)l, (unsigned long long)c,
                       (unsigned long long)pos->record);
    else snprintf(buf, cap, "added record %llu (%llu:%llu)", (unsigned long long)pos->record, (unsigned long long)l,
                  (unsigned long long)c);
    return buf;
}

static lt_status parse_record(lt_dataset *ds, const char *path, const char *text, size_t len,
                              const lt_record_pos *pos, lt_prep *prep) {
    char w[4200];
    size_t bad = lt_data_utf8_check((const unsigned char *)text, len);
    if (bad < len) {
        uint64_t l, c;
        lt_reader_locate(pos, text, bad, &l, &c);
        return lt_error(LT_ERR_DATA, "%s: invalid UTF-8 (byte 0x%02X at byte offset %llu%s); the data must be UTF-8",
                        where_at(w, sizeof w, path, pos, l, c), (unsigned char)text[bad],
                        (unsigned long long)(pos->offset + bad), path ? " of the file" : "");
    }
    json_error_t je;
    json_t *obj = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!obj) {
        uint64_t l, c;
        size_t at = je.position > 0 ? (size_t)je.position - 1 : 0;
        if (at > len) at = len;
        lt_reader_locate(pos, text, at, &l, &c);
        return lt_error(LT_ERR_DATA, "%s: malformed JSON: %s", where_at(w, sizeof w, path, pos, l, c), je.text);
    }
    lt_status st = lt_prep_from_json(ds, obj, prep);
    json_decref(obj);
    if (st < 0)
        return lt_error_wrap(st, "%s", where_at(w, sizeof w, path, pos, pos->line, pos->column));
    return LT_OK;
}

static lt_status split_rebuild(lt_dataset *ds);

LT_API lt_status lt_dataset_load(const char *path, const lt_tokenizer *tok, const lt_dataset_params *params,
                                 lt_dataset **out) {
    LT_CHECK_ARG(path && out, "lt_dataset_load: NULL path or out");
    *out = NULL;
    lt_dataset *ds;
    LT_TRY(lt_dataset_new(tok, params, &ds));
    lt_reader *r = NULL;
    chunk c;
    int have_chunk = 0;
    lt_status st = lt_reader_open(path, &r);
    if (st < 0) goto done;
    if ((st = chunk_init(&c, ds)) < 0) goto done;
    have_chunk = 1;
    double t0 = lt_time_s();
    for (;;) {
        const char *text;
        size_t len;
        lt_record_pos pos;
        st = lt_reader_next(r, &text, &len, &pos);
        if (st < 0) goto done;
        if (st == LT_DONE) break;
        ds->n_seen++;
        lt_prep *prep = &c.preps[c.n];
        st = parse_record(ds, path, text, len, &pos, prep);
        if (st < 0) {
            if ((st = bad_record(ds, st)) < 0) goto done;
            continue;
        }
        char where[4200];
        where_at(where, sizeof where, path, &pos, pos.line, pos.column);
        if (!(c.where[c.n] = lt_strdup(where))) { lt_prep_free(prep); st = LT_ERR_OUT_OF_MEMORY; goto done; }
        c.text_bytes += prep->len + prep->n * 4;
        c.n++;
        if (c.n == CHUNK_RECORDS || c.text_bytes >= CHUNK_TEXT_BYTES) {
            if ((st = chunk_flush(&c)) < 0) goto done;
            if (ds->p.progress && ds->p.progress("tokenizing dataset", lt_reader_bytes_done(r),
                                                 lt_reader_bytes_total(r), ds->p.progress_user_data)) {
                st = lt_error(LT_STOPPED, "%s: loading was cancelled by the progress callback", path);
                goto done;
            }
        }
    }
    if ((st = chunk_flush(&c)) < 0) goto done;
    if (ds->p.progress)
        ds->p.progress("tokenizing dataset", lt_reader_bytes_total(r), lt_reader_bytes_total(r), ds->p.progress_user_data);
    if (ds->n_recs == 0) {
        st = ds->n_seen == 0 ? lt_error(LT_ERR_DATA, "%s: the file holds no records (an empty array or only blank "
                                        "lines)", path)
                             : lt_error(LT_ERR_DATA, "%s: all %llu records were bad and skipped; nothing to train on",
                                        path, (unsigned long long)ds->n_seen);
        goto done;
    }
    if ((st = split_rebuild(ds)) < 0) goto done;
    if (ds->n_truncated)
        LT_LOGW("%s: %llu of %zu records were longer than max_seq_len=%d tokens and were truncated (their end and "
                "EOS are cut)", path, (unsigned long long)ds->n_truncated, ds->n_recs, ds->p.max_seq_len);
    if (ds->n_skipped)
        LT_LOGW("%s: %llu bad records were skipped (see the warnings above)", path, (unsigned long long)ds->n_skipped);
    LT_LOGI("%s: %zu records, %zu tokens in %.2f s", path, ds->n_recs, ds->n_ids, lt_time_s() - t0);
    st = LT_OK;
done:
    if (have_chunk) chunk_free(&c);
    lt_reader_close(r);
    if (st < 0) { lt_dataset_free(ds); return st; }
    *out = ds;
    return LT_OK;
}

/* ---- records added through the API ---- */
static lt_status add_prep(lt_dataset *ds, lt_prep *p, const char *where) {
    lt_status st;
    if (p->text) {
        int32_t *ids = NULL;
        uint32_t *offs = NULL;
        size_t n = 0;
        st = encode_prep(ds, p, &ids, &offs, &n);
        if (st < 0) st = lt_error_wrap(st, "%s: tokenizing", where);
        else st = lt_ds_append(ds, p, ids, offs, n, where);
        free(ids);
        free(offs);
    } else {
        st = lt_ds_append(ds, p, p->ids, NULL, p->n, where);
    }
    lt_prep_free(p);
    return st;
}

static void api_where(lt_dataset *ds, char *where, size_t cap) {
    snprintf(where, cap, "added record %llu", (unsigned long long)++ds->n_seen);
}

static lt_status check_utf8(const char *field, const char *s, const char *where) {
    if (!s) return LT_OK;
    size_t n = strlen(s), bad = lt_data_utf8_check((const unsigned char *)s, n);
    if (bad < n) return lt_error(LT_ERR_DATA, "%s: field '%s': invalid UTF-8 at byte offset %zu", where, field, bad);
    return LT_OK;
}

LT_API lt_status lt_dataset_add_json(lt_dataset *ds, const char *json_record) {
    LT_CHECK_ARG(ds && json_record, "lt_dataset_add_json: NULL argument");
    char where[64];
    api_where(ds, where, sizeof where);
    lt_record_pos pos = {ds->n_seen, 1, 1, 0};
    lt_prep p;
    lt_status st = parse_record(ds, NULL, json_record, strlen(json_record), &pos, &p);
    if (st < 0) return bad_record(ds, st);
    return bad_record(ds, add_prep(ds, &p, where));
}

LT_API lt_status lt_dataset_add_alpaca(lt_dataset *ds, const char *instruction, const char *input, const char *output) {
    LT_CHECK_ARG(ds, "lt_dataset_add_alpaca: ds is NULL");
    char where[64];
    api_where(ds, where, sizeof where);
    lt_prep p;
    lt_status st = check_utf8("instruction", instruction, where);
    if (st >= 0) st = check_utf8("input", input, where);
    if (st >= 0) st = check_utf8("output", output, where);
    if (st >= 0 && (st = lt_prep_alpaca(ds, instruction, input, output, &p)) < 0) st = lt_error_wrap(st, "%s", where);
    if (st < 0) return bad_record(ds, st);
    if (ds->format == LT_DATA_AUTO) ds->format = LT_DATA_ALPACA;
    return bad_record(ds, add_prep(ds, &p, where));
}

LT_API lt_status lt_dataset_add_text(lt_dataset *ds, const char *text) {
    LT_CHECK_ARG(ds, "lt_dataset_add_text: ds is NULL");
    char where[64];
    api_where(ds, where, sizeof where);
    lt_prep p;
    lt_status st = check_utf8("text", text, where);
    if (st >= 0 && (st = lt_prep_text(ds, text, &p)) < 0) st = lt_error_wrap(st, "%s", where);
    if (st < 0) return bad_record(ds, st);
    if (ds->format == LT_DATA_AUTO) ds->format = LT_DATA_TEXT;
    return bad_record(ds, add_prep(ds, &p, where));
}

LT_API lt_status lt_dataset_add_tokens(lt_dataset *ds, const int32_t *ids, const int32_t *labels, size_t n) {
    LT_CHECK_ARG(ds && ids, "lt_dataset_add_tokens: NULL argument");
    char where[64];
    api_where(ds, where, sizeof where);
    lt_status st = LT_OK;
    if (n == 0) st = lt_error(LT_ERR_DATA, "%s: no tokens", where);
    for (size_t i = 0; i < n && st >= 0; i++) {
        if (ids[i] < 0 || ids[i] >= ds->vocab)
            st = lt_error(LT_ERR_DATA, "%s: ids[%zu] = %d is outside the vocabulary [0, %d)", where, i, ids[i], ds->vocab);
        else if (labels && labels[i] != -100 && (labels[i] < 0 || labels[i] >= ds->vocab))
            st = lt_error(LT_ERR_DATA, "%s: labels[%zu] = %d is neither -100 nor a token id", where, i, labels[i]);
    }
    if (st < 0) return bad_record(ds, st);
    lt_prep p = {0};
    p.ids = (int32_t *)ids;
    p.labels = (int32_t *)labels;
    p.n = n;
    st = lt_ds_append(ds, &p, ids, NULL, n, where);
    return bad_record(ds, st);
}

/* ---- the split ---- */
/* Fisher-Yates over Philox draws of (seed, stream). */
static void permute(size_t size, uint64_t seed, uint64_t stream, size_t *perm) {
    for (size_t i = 0; i < size; i++) perm[i] = i;
    uint64_t draw = 0;
    for (size_t i = size; i > 1; i--) {
        /* j uniform in [0, i): rejection sampling keeps it unbiased */
        uint64_t bound = i, j;
        if (bound <= UINT32_MAX) {
            uint32_t lim = (uint32_t)(UINT32_MAX - (UINT32_MAX % bound + 1) % bound); /* largest multiple - 1 */
            uint32_t x;
            do x = lt_rng_u32(seed, stream, draw++); while (x > lim);
            j = x % bound;
        } else {
            uint64_t lim = UINT64_MAX - (UINT64_MAX % bound + 1) % bound, x;
            do {
                x = (uint64_t)lt_rng_u32(seed, stream, draw) << 32 | lt_rng_u32(seed, stream, draw + 1);
                draw += 2;
            } while (x > lim);
            j = x % bound;
        }
        size_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}

void lt_dataset_permutation(size_t size, uint64_t seed, int64_t epoch, size_t *perm) {
    if (perm) permute(size, seed, (uint64_t)epoch, perm);
}

static int cmp_size(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* Eval records: the first n_eval of a seeded permutation (SPLIT_STREAM), both lists sorted. */
static lt_status split_rebuild(lt_dataset *ds) {
    size_t n = ds->n_recs, n_eval = 0;
    if (ds->p.eval_fraction > 0 && n > 1) {
        n_eval = (size_t)(ds->p.eval_fraction * (double)n + 0.5);
        if (n_eval == 0) n_eval = 1;
        if (n_eval >= n) n_eval = n - 1;
    }
    free(ds->train);
    free(ds->eval);
    ds->train = ds->eval = NULL;
    ds->n_train = ds->n_eval = 0;
    if (n_eval == 0) { ds->n_train = n; ds->split_dirty = 0; return LT_OK; } /* identity: no index array */
    size_t *perm = lt_malloc(n * sizeof *perm, "the eval split");
    if (!perm) return LT_ERR_OUT_OF_MEMORY;
    permute(n, ds->p.seed, SPLIT_STREAM, perm); /* a stream no epoch uses */
    ds->eval = lt_malloc(n_eval * sizeof *ds->eval, "the eval split");
    ds->train = lt_malloc((n - n_eval) * sizeof *ds->train, "the train split");
    if (!ds->eval || !ds->train) { free(perm); return LT_ERR_OUT_OF_MEMORY; }
    memcpy(ds->eval, perm, n_eval * sizeof *perm);
    memcpy(ds->train, perm + n_eval, (n - n_eval) * sizeof *perm);
    free(perm);
    qsort(ds->eval, n_eval, sizeof *ds->eval, cmp_size);
    qsort(ds->train, n - n_eval, sizeof *ds->train, cmp_size);
    ds->n_eval = n_eval;
    ds->n_train = n - n_eval;
    ds->split_dirty = 0;
    return LT_OK;
}

/* Rebuilds the split after records were added (the handle is logically const). */
static lt_status split_ready(const lt_dataset *cds) {
    lt_dataset *ds = (lt_dataset *)cds;
    lt_status st = LT_OK;
    pthread_mutex_lock(&ds->mu);
    if (ds->split_dirty) st = split_rebuild(ds);
    pthread_mutex_unlock(&ds->mu);
    return st;
}

static lt_status rec_at(const lt_dataset *ds, size_t i, int eval, const int32_t **ids, const int32_t **labels,
                        size_t *n) {
    LT_CHECK_ARG(ds, "dataset is NULL");
    LT_TRY(split_ready(ds));
    size_t size = eval ? ds->n_eval : ds->n_train;
    if (i >= size)
        return lt_error(LT_ERR_INVALID_ARGUMENT, "%s record %zu is out of range (the split holds %zu)",
                        eval ? "eval" : "training", i, size);
    size_t k = eval ? ds->eval[i] : ds->train ? ds->train[i] : i;
    const lt_ds_rec *r = &ds->recs[k];
    if (ids) *ids = ds->ids + r->off;
    if (labels) *labels = r->loff < 0 ? ds->ids + r->off : ds->labels + r->loff;
    if (n) *n = r->n;
    return LT_OK;
}

lt_status lt_dataset_record(const lt_dataset *ds, size_t i, const int32_t **ids, const int32_t **labels, size_t *n) {
    return rec_at(ds, i, 0, ids, labels, n);
}
lt_status lt_dataset_eval_record(const lt_dataset *ds, size_t i, const int32_t **ids, const int32_t **labels,
                                 size_t *n) {
    return rec_at(ds, i, 1, ids, labels, n);
}
size_t lt_dataset_eval_size(const lt_dataset *ds) {
    if (!ds || split_ready(ds) < 0) return 0;
    return ds->n_eval;
}
LT_API size_t lt_dataset_size(const lt_dataset *ds) {
    if (!ds || split_ready(ds) < 0) return 0;
    return ds->n_train;
}

int32_t lt_dataset_format(const lt_dataset *ds) { return ds ? ds->format : LT_DATA_AUTO; }
int32_t lt_dataset_max_seq_len(const lt_dataset *ds) { return ds ? ds->p.max_seq_len : 0; }

LT_API lt_status lt_dataset_get(const lt_dataset *ds, size_t index, int32_t *ids, int32_t *labels, size_t cap,
                                size_t *n) {
    LT_CHECK_ARG(ds && n, "lt_dataset_get: NULL dataset or n");
    const int32_t *pi, *pl;
    size_t len;
    LT_TRY(rec_at(ds, index, 0, &pi, &pl, &len));
    *n = len;
    if ((ids || labels) && cap < len)
        return lt_error(LT_ERR_BUFFER_TOO_SMALL, "lt_dataset_get: record %zu has %zu tokens, cap is %zu", index, len, cap);
    if (ids) memcpy(ids, pi, len * sizeof *ids);
    if (labels) memcpy(labels, pl, len * sizeof *labels);
    return LT_OK;
}

LT_API lt_status lt_dataset_get_stats(const lt_dataset *ds, lt_dataset_stats *out) {
    LT_CHECK_ARG(ds && out, "lt_dataset_get_stats: NULL argument");
    LT_CHECK_ARG(out->struct_size == 0 || out->struct_size >= sizeof(uint32_t), "bad struct_size");
    LT_TRY(split_ready(ds));
    lt_dataset_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    s.n_records = ds->n_train;
    s.n_eval = ds->n_eval;
    s.n_skipped = ds->n_skipped;
    s.n_truncated = ds->n_truncated;
    s.n_tokens = ds->n_tokens;
    s.n_label_tokens = ds->n_label_tokens;
    s.min_len = ds->n_recs ? ds->min_len : 0;
    s.max_len = ds->max_len;
    s.mean_len = ds->n_recs ? (double)ds->n_tokens / (double)ds->n_recs : 0;
    size_t sz = out->struct_size && out->struct_size < sizeof s ? out->struct_size : sizeof s;
    memcpy(out, &s, sz);
    out->struct_size = (uint32_t)sz;
    return LT_OK;
}

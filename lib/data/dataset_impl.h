/* dataset_impl.h - the inside of lt_dataset, shared by the files of lib/data: token storage
 * (one ids array for all records; labels stored only for records whose labels differ from
 * their ids), the resolved parameters, running statistics and the train/eval split; and the
 * record preparation step (a record -> text + response spans or the prompt's length, or
 * pre-tokenized ids). */
#ifndef LT_DATASET_IMPL_H
#define LT_DATASET_IMPL_H
#include "data/dataset.h"
#include <jansson.h>
#include <pthread.h>

typedef struct lt_ds_rec {
    uint64_t off;   /* into ds->ids */
    int64_t loff;   /* into ds->labels, or -1 when labels == ids (loss on every token) */
    uint32_t n;     /* tokens */
} lt_ds_rec;

struct lt_dataset {
    const lt_tokenizer *tok;
    lt_dataset_params p;           /* string fields point at the owned copies below */
    char *own_template_name, *own_template_text, *own_ins, *own_inp, *own_out, *own_text;
    const char *tpl;               /* resolved template text (static or own_template_text) */
    char *eos;                     /* the tokenizer's EOS text, or NULL */
    int32_t vocab;
    int format;                    /* lt_data_format, fixed by the first good record when AUTO */
    int n_threads;
    /* storage */
    int32_t *ids;    size_t n_ids, cap_ids;       /* [n_ids] all records end to end */
    int32_t *labels; size_t n_labels, cap_labels; /* [n_labels] only records with loff >= 0 */
    lt_ds_rec *recs; size_t n_recs, cap_recs;     /* every kept record, in input order */
    /* statistics over every kept record */
    uint64_t n_skipped, n_truncated, n_tokens, n_label_tokens, n_seen;
    int32_t min_len, max_len;
    /* the split: train/eval record indices into recs, rebuilt lazily after records are added */
    pthread_mutex_t mu;
    int split_dirty;
    size_t *train, *eval;
    size_t n_train, n_eval;
};

/* A record made ready for tokenization. */
typedef struct lt_prep {
    char *text;            /* rendered text (EOS included), or NULL for pre-tokenized */
    size_t len;
    size_t *spans;         /* [2 * n_spans] byte ranges of the response(s) in text (chat records) */
    size_t n_spans;
    int add_special;       /* encode text with the post-processor's tokens (BOS): tokenizer(text) */
    /* Alpaca with loss on the response only (TRL's prompt-completion record): labels by token
     * count, not by spans. text[0, prompt_len) is the prompt; encoding it alone (add_special as
     * above) gives n_prompt, the number of leading tokens that carry no loss; every later token
     * of the whole text carries loss. n_prompt and prompt_merged are set when the record is
     * encoded (prompt_merged: the prompt's own tokens do not begin the record's, i.e. a token
     * merges across the boundary; TRL warns there). */
    int mask_prompt;
    size_t prompt_len, n_prompt;
    int prompt_merged;
    int32_t *ids, *labels; /* pre-tokenized: ids[n], labels[n] or NULL */
    size_t n;
} lt_prep;
void lt_prep_free(lt_prep *p);

/* Turns a parsed JSON object into a prep; the message (set through lt_error) names the field
 * but not the record: callers prepend "file:line:col: record N". May fix ds->format. */
lt_status lt_prep_from_json(lt_dataset *ds, json_t *obj, lt_prep *out);
lt_status lt_prep_alpaca(const lt_dataset *ds, const char *ins, const char *inp, const char *outp, lt_prep *out);
lt_status lt_prep_text(const lt_dataset *ds, const char *text, lt_prep *out);

/* Token ids + offsets -> the record's ids/labels after truncation; appends it to ds. `where`
 * prefixes messages ("file:line:col: record N"). */
lt_status lt_ds_append(lt_dataset *ds, const lt_prep *p, const int32_t *ids, const uint32_t *offs, size_t n,
                       const char *where);
#endif

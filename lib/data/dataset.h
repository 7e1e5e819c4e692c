/* dataset.h - what the trainer needs from a dataset: zero-copy access to tokenized records,
 * the seeded per-epoch order, and packing records into one padding-free micro-batch. */
#ifndef LT_DATASET_H
#define LT_DATASET_H
#include "core/core.h"

/* Record i of the training split: ids[n] and labels[n] (labels == ids where the token carries
 * loss, -100 where it does not; NOT shifted, as Hugging Face labels). Pointers stay valid while
 * the dataset lives and no record is added. */
lt_status lt_dataset_record(const lt_dataset *ds, size_t i, const int32_t **ids, const int32_t **labels, size_t *n);
/* The held-out split (eval_fraction). */
size_t lt_dataset_eval_size(const lt_dataset *ds);
lt_status lt_dataset_eval_record(const lt_dataset *ds, size_t i, const int32_t **ids, const int32_t **labels,
                                 size_t *n);
/* The lt_data_format the records were read as (LT_DATA_AUTO until the first record fixed it). */
int32_t lt_dataset_format(const lt_dataset *ds);
/* The max_seq_len records are truncated to. */
int32_t lt_dataset_max_seq_len(const lt_dataset *ds);
/* The order of epoch `epoch` (0-based): a permutation of [0, size) from (seed, epoch),
 * Fisher-Yates over Philox draws; the same for the same inputs on every machine. */
void lt_dataset_permutation(size_t size, uint64_t seed, int64_t epoch, size_t *perm);

/* One padding-free micro-batch: the records end to end. */
typedef struct lt_batch {
    int32_t n_tokens;     /* N */
    int32_t nseq;
    int32_t max_seqlen;
    int32_t *ids;         /* [N] */
    int32_t *targets;     /* [N] next-token targets: targets[t] = labels[t+1] within a record,
                             -100 at each record's last token (the shift of transformers' loss) */
    int32_t *pos;         /* [N] positions, restarting at 0 for each record */
    int32_t *cu_seqlens;  /* [nseq+1] record boundaries, cu_seqlens[0] = 0 */
    int64_t n_targets;    /* targets != -100 */
    int32_t cap;          /* allocated tokens */
} lt_batch;

/* Packs records (given as ids/labels arrays) into b (grows its buffers). */
lt_status lt_batch_pack(lt_batch *b, int nrec, const int32_t *const *ids, const int32_t *const *labels,
                        const size_t *lens);
/* Packs training records idx[0..nrec) of ds. */
lt_status lt_batch_from_dataset(lt_batch *b, const lt_dataset *ds, const size_t *idx, int nrec, int eval_split);
/* Appends src's records after dst's (an empty dst: n_tokens = nseq = 0) */
lt_status lt_batch_append(lt_batch *dst, const lt_batch *src);
/* Pads b to exactly n_tokens tokens and nseq sequences (a token-budget bucket: passes of few
 * distinct shapes): the missing tokens become dummy sequences of at most max_seg tokens each
 * (id pad_id, positions from 0, no targets: they carry no loss and, the attention being per
 * sequence, no record attends to them or they to a record), then empty sequences up to nseq;
 * max_seqlen is set to max_seg. The records' tokens keep their places. Refused when b already
 * holds more tokens or sequences, or the padding needs more sequences than nseq allows. */
lt_status lt_batch_pad(lt_batch *b, int32_t n_tokens, int32_t nseq, int32_t max_seg, int32_t pad_id);
void lt_batch_free(lt_batch *b);
#endif

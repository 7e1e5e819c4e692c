/* trainer_impl.h - the internal lt_trainer shared by the trainer files: the step loop
 * (trainer.c), the schedule (schedule.c), checkpoints (checkpoint.c) and the output folder's
 * log.jsonl / loss.svg (report.c). */
#ifndef LT_TRAINER_IMPL_H
#define LT_TRAINER_IMPL_H
#include "core/core.h"
#include "model/graph.h"
#include "data/dataset.h"

/* the most tokens fused micro-batches fill in one pass (batch_size x max_seq_len permitting) */
#define LT_FUSE_TOKENS 4096
/* distinct pass shapes a trainer remembers (tests, the debug log) */
#define LT_SHAPE_LOG 32

/* One trainable tensor (a lora_A or lora_B) and its optimizer state. */
typedef struct lt_opt_tensor {
    int layer, proj, is_b;     /* which tensor: layer, LT_PROJ_*, 0 = lora_A, 1 = lora_B */
    int64_t n;                 /* elements */
    float *p, *g;              /* backend f32 (n): the weight and its gradient (owned by the model) */
    int is8bit;                /* bnb: n >= 4096 keeps 8-bit state, smaller tensors exact fp32 */
    float *m, *v;              /* backend f32 (n) (fp32 state) */
    uint8_t *s1, *s2;          /* backend u8 (n) (8-bit state) */
    float *a1, *a2;            /* backend f32 (ceil(n/256)) (8-bit absmax) */
} lt_opt_tensor;

#define LT_BNB_MIN_8BIT_SIZE 4096
#define LT_BNB_BLOCK 256

struct lt_trainer {
    lt_model *m;
    lt_dataset *ds;
    lt_train_params p;
    char *output_dir;          /* owned copy of p.output_dir (NULL = none) */
    /* schedule */
    int64_t max_steps;         /* T */
    int64_t warmup;            /* W */
    int64_t step;              /* optimizer steps done */
    /* data cursor: position `cursor` in the permutation of epoch `epoch` */
    size_t n_records;
    size_t *perm;              /* [n_records] order of `epoch` */
    int64_t epoch;
    size_t cursor;
    int64_t micro_index;       /* micro-batches run so far (the dropout stream base) */
    int64_t records_seen;
    /* optimizer */
    int n_tensors;
    lt_opt_tensor *t;
    /* [n_tensors] the gradients as the backend's *_many calls take them, built once */
    float **grad;
    int64_t *grad_n;           /* elements */
    size_t *grad_bytes;
    /* micro-batches of one window */
    lt_batch *batches;         /* [grad_accum] */
    lt_batch *fused;           /* [grad_accum] consecutive micro-batches run as one pass */
    int64_t fuse_cap;          /* tokens one pass may hold: batch_size x the longest record, or
                                * up to LT_FUSE_TOKENS when fusing (trainer.c) */
    /* token-budget buckets (bucket_passes, trainer.c): every pass padded to lt_bucket_tokens of
     * its tokens, bucket_nseq sequences (dummy ones of at most bucket_seg tokens, then empty
     * ones) and max_seqlen bucket_seg; its gradient scale loss_scale / 2^bucket_exp (fp16: 2^ of
     * the window's labelled tokens rounded up), the 1/labelled-tokens factor applied after
     * (bucket_exp -1: loss_scale / labelled tokens in the passes, as without buckets; a test's
     * switch: the padding alone then changes no bit on the CPU) */
    int bucket;
    int32_t bucket_seg, bucket_nseq;
    int bucket_exp;
    /* the distinct pass shapes run so far (the first LT_SHAPE_LOG), and the dummy tokens */
    int n_shapes;
    struct lt_pass_shape { int32_t n_tokens, nseq, max_seqlen, scale_exp; } shapes[LT_SHAPE_LOG];
    int64_t pad_tokens;
    /* progress */
    double t_start;
    double elapsed_before;     /* seconds trained before a resume */
    int64_t total_tokens;
    double log_loss_sum;       /* step losses since the last log */
    int64_t log_n;
    /* loss history for loss.svg (logged points) */
    int64_t *hist_step;
    double *hist_loss;
    size_t hist_n, hist_cap;
    int log_fresh;             /* the first log row of a fresh (not resumed) run truncates log.jsonl */
    /* dynamic loss scaling (fp16 activations), as torch.cuda.amp.GradScaler: the CE gradient is
     * multiplied by loss_scale; a step with inf/nan gradients is skipped and halves the scale;
     * LT_LOSS_SCALE_INTERVAL good steps in a row double it */
    int use_loss_scale;
    double loss_scale;
    int64_t good_steps;
    /* evaluation, early stopping, load-best (eval.c) */
    const lt_dataset *eval_ds; /* the eval records' dataset (eval_data, else ds's held-out split) */
    int eval_split;            /* 1: eval_ds's held-out split, 0: its training split */
    size_t n_eval;             /* eval records (0: no evaluation) */
    int32_t n_evals;
    double best_eval_loss;     /* NaN before the first evaluation */
    int64_t best_eval_step;
    int32_t evals_no_better;   /* evaluations in a row without improvement (early stopping) */
    int early_stopped, best_loaded;
    float **best_w;            /* [n_tensors] host copies of the LoRA weights at the best eval */
    int64_t *hist_eval_step;   /* eval history for loss.svg */
    double *hist_eval_loss;
    size_t hist_eval_n, hist_eval_cap;
    /* this trainer's run (summary) */
    int64_t steps_run;
    double run_loss_sum, last_loss;
    /* stops and failures (issue 15): lt_trainer_request_stop's flag (read and written with
     * __atomic builtins: a signal handler or another thread sets it), and the checkpoint last
     * written or resumed from (NULL = none), named when a run stops on a non-finite value */
    int stop_requested;
    char *last_checkpoint;
    /* data parallel (lib/dist/dist_train.c): this rank of world; a window is n_micro =
     * grad_accum x world micro-batches over all ranks (every rank packs all of them); coll is
     * NULL when training alone without a collective; pass_owner[n_micro] deals the passes */
    int32_t world, rank;
    int n_micro;
    struct lt_coll *coll;
    int *pass_owner;
};

#define LT_LOSS_SCALE_INTERVAL 2000

/* base_lr multiplier for 0-based scheduler step s (transformers' lr_lambda). */
double lt_schedule_lambda(int32_t scheduler, int64_t s, int64_t warmup, int64_t total);

/* Rebuilds tr->t (the tensor list) from the model's attached LoRA, allocating optimizer state. */
lt_status lt_trainer_bind_tensors(lt_trainer *tr);
/* Writes the permutation of tr->epoch into tr->perm. */
void lt_trainer_shuffle(lt_trainer *tr);
/* The token-budget bucket of a pass of n tokens (pass budget cap >= n): n rounded up to a
 * multiple of the largest of 128 and the power of two at most n/8 (at most 1/8 more tokens, 8
 * buckets per doubling), and at most cap. */
int64_t lt_bucket_tokens(int64_t n, int64_t cap);
/* The next window (trainer.c): its micro-batches from the data order (the cursor moves) and the
 * passes that run them, *runs[*R] (fused, padded to buckets as the trainer is set up); *items:
 * the window's labelled tokens, *tokens: its records' tokens; *scale_exp: the passes' gradient
 * scale is loss_scale / 2^*scale_exp (-1: loss_scale / items, no buckets). The shapes are
 * logged in tr->shapes. */
lt_status lt_trainer_form_window(lt_trainer *tr, const lt_batch **runs, int *R, int64_t *items, int64_t *tokens,
                                 int *scale_exp);

/* Sets up eval_ds / n_eval from the params and checks eval-dependent options (eval.c). */
lt_status lt_eval_init(lt_trainer *tr);
/* After step tr->step: evaluates when due, tracks the best, decides early stopping and keeps the
 * best weights; fills mt's eval fields (NaN when no evaluation ran). */
lt_status lt_eval_after_step(lt_trainer *tr, lt_metrics *mt);
/* Books an eval loss of `step`: 1 when it is the new best; sets early_stopped when patience
 * evaluations in a row were not better (eval.c). */
int lt_eval_track(lt_trainer *tr, int64_t step, double loss);
/* On LT_DONE: puts the best evaluation's weights back (load_best_at_end), once. */
lt_status lt_eval_finish(lt_trainer *tr);
void lt_eval_free(lt_trainer *tr);
/* The eval state a checkpoint keeps (eval.c): best loss/step, patience count, history as JSON
 * (trainer_state.json "eval"), the best weights as "<layer>.<proj>.lora_<A|B>.best" tensors of
 * optimizer.safetensors (load_best_at_end); loaded back on resume. */
struct json_t;
struct lt_st_writer;
struct lt_st_set;
struct json_t *lt_eval_state_json(const lt_trainer *tr);
lt_status lt_eval_save_best(const lt_trainer *tr, struct lt_st_writer *w);
lt_status lt_eval_state_load(lt_trainer *tr, struct json_t *eval, const struct lt_st_set *set, const char *file);
/* Deletes checkpoint-<step> folders of output_dir beyond save_total_limit (eval.c). */
lt_status lt_checkpoints_prune(lt_trainer *tr);
/* Warns through the log callback when warmup >= max_steps or the peak lr is never reached
 * (schedule.c). */
void lt_schedule_warn(const lt_trainer *tr);

/* Strict checks of a params struct (params.c): every front end gets these messages. */
lt_status lt_train_params_check(const lt_train_params *p);
/* Remembers dir as the last good checkpoint (checkpoint.c). */
void lt_trainer_note_checkpoint(lt_trainer *tr, const char *dir);
/* Keeps only the log.jsonl rows up to `step` (a resume), atomically (report.c). */
lt_status lt_report_truncate_log(lt_trainer *tr, int64_t step);

/* Data parallel (lib/dist/dist_train.c): the checks of p's world_size / rank / comm /
 * nccl_id; tr->world, rank and coll from tr->p (after the tensors are bound); the rank that runs
 * each of R passes; the gradient and loss sums over the ranks after a window (pass_loss[R]: this
 * rank's pass losses, 0 for the others'; *loss_sum += their sum in pass order); agreeing on a
 * stop and on early stopping (any rank's stops all); aborting the group after this rank failed
 * with st. */
lt_status lt_dist_check(const lt_train_params *p, const lt_model *m);
lt_status lt_dist_trainer_init(lt_trainer *tr);
void lt_dist_plan(const lt_batch *runs, int R, int world, int *owner);
lt_status lt_dist_reduce_window(lt_trainer *tr, double *pass_loss, int R, double *loss_sum);
lt_status lt_dist_vote_stop(lt_trainer *tr, int *stop);
void lt_dist_abort(lt_trainer *tr, lt_status st);

/* A log.jsonl + log.csv row (train_row: the logged training loss and the step's metrics; the
 * eval fields when mt->eval_loss is a number) + loss.svg (report.c). */
/* Appends (step, value) to a growable pair of arrays (steps[n], values[n], capacity cap). */
lt_status lt_history_push(int64_t **steps, double **values, size_t *n, size_t *cap, int64_t step, double value,
                          const char *what);
lt_status lt_report_log(lt_trainer *tr, const lt_metrics *mt, int train_row, double logged_loss);
/* Writes the SVG chart of the logged training loss (raw and smoothed) and the eval loss to path,
 * atomically. */
lt_status lt_report_svg(const char *path, const int64_t *steps, const double *losses, size_t n,
                        const int64_t *eval_steps, const double *eval_losses, size_t n_eval);
#endif

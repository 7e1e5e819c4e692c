/* params.c - lt_train_params defaults (the notebook's recipe) and the scheduler / optimizer
 * name parsers (transformers' lr_scheduler_type and optim names). */
#include "train/trainer_impl.h"

#include <math.h>
#include <string.h>
#include <strings.h>

LT_API void lt_train_params_init(lt_train_params *p) {
    if (!p) return;
    memset(p, 0, sizeof *p);
    p->struct_size = sizeof *p;
    p->batch_size = 2;
    p->grad_accum = 8;
    p->max_steps = 100;
    p->epochs = 1.0;
    p->lr = 4e-5;
    p->warmup_steps = 50;
    p->warmup_ratio = 0.0;
    p->scheduler = LT_SCHED_COSINE;
    p->optimizer = LT_OPTIM_ADAMW_8BIT;
    p->weight_decay = 0.01;
    p->adam_beta1 = 0.9;
    p->adam_beta2 = 0.999;
    p->adam_eps = 1e-8;
    p->max_grad_norm = 1.0;
    p->seed = 3407;
    p->packing = 0;
    p->gradient_checkpointing = 1;
    p->log_every = 1;
    p->save_every = 0;
    p->rank = 0;
    p->world_size = 1;
    p->comm = NULL;
    p->dist_timeout_s = 30.0;
    p->fp16_initial_loss_scale = 65536.0;
    p->fuse_micro_batches = 1;
    p->bucket_passes = 0; /* opt-in: not faster on the notebook's recipe yet (loratune.h) */
}

LT_API lt_status lt_scheduler_parse(const char *name, int32_t *out) {
    LT_CHECK_ARG(name && out, "lt_scheduler_parse: name and out must not be NULL");
    static const struct { const char *name; int32_t v; } names[] = {
        {"linear", LT_SCHED_LINEAR}, {"cosine", LT_SCHED_COSINE}, {"constant", LT_SCHED_CONSTANT},
        {"constant_with_warmup", LT_SCHED_CONSTANT},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcasecmp(name, names[i].name)) { *out = names[i].v; return LT_OK; }
    return lt_error(LT_ERR_INVALID_ARGUMENT, "unknown scheduler '%s': use linear, cosine or constant", name);
}

LT_API lt_status lt_optimizer_parse(const char *name, int32_t *out) {
    LT_CHECK_ARG(name && out, "lt_optimizer_parse: name and out must not be NULL");
    static const struct { const char *name; int32_t v; } names[] = {
        {"adamw", LT_OPTIM_ADAMW}, {"adamw_torch", LT_OPTIM_ADAMW}, {"adamw_torch_fused", LT_OPTIM_ADAMW},
        {"adamw_hf", LT_OPTIM_ADAMW}, {"adamw_8bit", LT_OPTIM_ADAMW_8BIT}, {"adamw_bnb_8bit", LT_OPTIM_ADAMW_8BIT},
        {"adamw8bit", LT_OPTIM_ADAMW_8BIT},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcasecmp(name, names[i].name)) { *out = names[i].v; return LT_OK; }
    return lt_error(LT_ERR_INVALID_ARGUMENT, "unknown optimizer '%s': use adamw_torch (fp32 states) or adamw_8bit "
                    "(bitsandbytes)", name);
}

/* Strict checks of every lt_train_params field the trainer reads, so that every front end (C,
 * CLI, Python, Go, Rust) gets the same message: finite numbers, ranges, integers that fit. */
lt_status lt_train_params_check(const lt_train_params *p) {
#define LT_REQUIRE(cond, ...) do { if (!(cond)) return lt_error(LT_ERR_INVALID_ARGUMENT, __VA_ARGS__); } while (0)
    LT_REQUIRE(p->batch_size >= 1 && p->batch_size <= (1 << 20), "batch_size must be in [1, 1048576] (got %d)",
               p->batch_size);
    LT_REQUIRE(p->grad_accum >= 1 && p->grad_accum <= (1 << 20), "grad_accum must be in [1, 1048576] (got %d)",
               p->grad_accum);
    LT_REQUIRE(isfinite(p->epochs) && p->epochs >= 0 && p->epochs <= 1e6,
               "epochs must be a finite number in [0, 1e6] (got %g)", p->epochs);
    LT_REQUIRE(p->max_steps > 0 || p->epochs > 0, "set max_steps > 0 or epochs > 0 (got %d and %g)", p->max_steps,
               p->epochs);
    LT_REQUIRE(isfinite(p->lr) && p->lr >= 0, "lr must be a finite number >= 0 (got %g)", p->lr);
    LT_REQUIRE(isfinite(p->warmup_ratio) && p->warmup_ratio >= 0 && p->warmup_ratio <= 1,
               "warmup_ratio must be a finite number in [0, 1] (got %g)", p->warmup_ratio);
    LT_REQUIRE(p->warmup_steps >= 0 || p->warmup_ratio > 0,
               "warmup_steps is %d: a negative value means 'use warmup_ratio', but warmup_ratio is 0; set "
               "warmup_steps >= 0 (0 = no warmup) or warmup_ratio in (0, 1]", p->warmup_steps);
    LT_REQUIRE(p->scheduler >= LT_SCHED_LINEAR && p->scheduler <= LT_SCHED_CONSTANT,
               "scheduler %d is not an lt_scheduler", p->scheduler);
    LT_REQUIRE(p->optimizer == LT_OPTIM_ADAMW || p->optimizer == LT_OPTIM_ADAMW_8BIT,
               "optimizer %d is not an lt_optimizer", p->optimizer);
    LT_REQUIRE(isfinite(p->weight_decay) && p->weight_decay >= 0,
               "weight_decay must be a finite number >= 0 (got %g)", p->weight_decay);
    LT_REQUIRE(p->adam_beta1 >= 0 && p->adam_beta1 < 1 && p->adam_beta2 >= 0 && p->adam_beta2 < 1,
               "adam betas must be in [0, 1) (got %g, %g)", p->adam_beta1, p->adam_beta2);
    LT_REQUIRE(isfinite(p->adam_eps) && p->adam_eps > 0, "adam_eps must be a finite number > 0 (got %g)",
               p->adam_eps);
    LT_REQUIRE(isfinite(p->max_grad_norm), "max_grad_norm must be a finite number (<= 0 turns clipping off; got %g)",
               p->max_grad_norm);
    LT_REQUIRE(p->log_every >= 0, "log_every must be >= 0 (got %d)", p->log_every);
    LT_REQUIRE(p->save_every >= 0, "save_every must be >= 0 (got %d)", p->save_every);
    LT_REQUIRE(p->gradient_checkpointing == 0 || p->gradient_checkpointing == 1,
               "gradient_checkpointing must be 0 or 1 (got %d)", p->gradient_checkpointing);
    LT_REQUIRE(p->deterministic == 0 || p->deterministic == 1, "deterministic must be 0 or 1 (got %d)",
               p->deterministic);
    LT_REQUIRE(p->fuse_micro_batches == 0 || p->fuse_micro_batches == 1, "fuse_micro_batches must be 0 or 1 (got %d)",
               p->fuse_micro_batches);
    LT_REQUIRE(p->bucket_passes == 0 || p->bucket_passes == 1, "bucket_passes must be 0 or 1 (got %d)",
               p->bucket_passes);
    LT_REQUIRE(isfinite(p->fp16_initial_loss_scale) && p->fp16_initial_loss_scale >= 0,
               "fp16_initial_loss_scale must be a finite number >= 0 (0 = 65536; got %g)", p->fp16_initial_loss_scale);
    LT_REQUIRE(p->world_size >= 0 && p->rank >= 0 && (p->rank < p->world_size || (p->rank == 0 && p->world_size <= 1)),
               "rank %d is not in [0, world_size %d)", p->rank, p->world_size);
#undef LT_REQUIRE
    return LT_OK;
}

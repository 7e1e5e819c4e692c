/* params.c - lt_train_params defaults (the notebook's recipe) and the scheduler / optimizer
 * name parsers (transformers' lr_scheduler_type and optim names). */
#include "train/trainer_impl.h"

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
    p->fp16_initial_loss_scale = 65536.0;
    p->fuse_micro_batches = 1;
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

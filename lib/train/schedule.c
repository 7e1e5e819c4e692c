/* schedule.c - the learning-rate schedules exactly as transformers' optimization.py defines
 * them (LambdaLR lambdas): linear and cosine (num_cycles 0.5) with linear warmup, and constant
 * (constant_with_warmup when warmup > 0). Optimizer step k (1-based) uses base_lr * lambda(k-1). */
#include "train/trainer_impl.h"

#include <math.h>

double lt_schedule_lambda(int32_t scheduler, int64_t s, int64_t warmup, int64_t total) {
    if (s < warmup) return (double)s / (double)(warmup > 1 ? warmup : 1);
    double span = (double)(total - warmup > 1 ? total - warmup : 1);
    switch (scheduler) {
    case LT_SCHED_LINEAR: {
        double v = (double)(total - s) / span;
        return v > 0 ? v : 0;
    }
    case LT_SCHED_COSINE: {
        double progress = (double)(s - warmup) / span;
        double v = 0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * progress));
        return v > 0 ? v : 0;
    }
    default:
        return 1.0;
    }
}

/* The peak of base_lr * lambda is reached at step warmup+1 (0-based s = warmup) when that step
 * exists; with warmup >= max_steps the run stays on the ramp. Said once, at trainer creation,
 * through the log callback (the numbers a user needs to fix it). */
void lt_schedule_warn(const lt_trainer *tr) {
    int64_t T = tr->max_steps, W = tr->warmup;
    if (T <= 0 || tr->p.lr <= 0) return;
    double top = 0;
    int64_t at = 0;
    for (int64_t s = 0; s < T; s++) {
        double v = lt_schedule_lambda(tr->p.scheduler, s, W, T);
        if (v > top) { top = v; at = s + 1; }
        if (s >= W) break; /* every schedule is highest where warmup ends */
    }
    if (W >= T)
        LT_LOGW("warmup_steps %lld >= max_steps %lld: the learning rate rises for the whole run and peaks at %.3g "
                "(step %lld), %.0f%% of lr %g; lower warmup_steps (e.g. %lld) or raise max_steps", (long long)W,
                (long long)T, tr->p.lr * top, (long long)at, 100.0 * top, tr->p.lr, (long long)(T / 10));
    else if (top < 1.0 - 1e-9)
        LT_LOGW("the learning rate never reaches lr %g: its highest is %.3g at step %lld", tr->p.lr, tr->p.lr * top,
                (long long)at);
}

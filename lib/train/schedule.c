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

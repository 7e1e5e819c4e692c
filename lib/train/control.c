/* control.c - the trainer's controls from outside its step loop: a stop request (a flag a
 * signal handler or another thread may set; trainer.c reads it between micro-batch passes) and
 * the step counter a front end names its checkpoint after. */
#include "train/trainer_impl.h"

LT_API void lt_trainer_request_stop(lt_trainer *tr) {
    if (tr) __atomic_store_n(&tr->stop_requested, 1, __ATOMIC_SEQ_CST);
}

LT_API int64_t lt_trainer_get_step(const lt_trainer *tr) { return tr ? tr->step : 0; }

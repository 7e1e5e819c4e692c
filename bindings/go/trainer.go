// trainer.go - Trainer: the step loop (optimizer, schedule, data cursor) with its step callback.
package loratune

/*
#include <stdlib.h>
#include "loratune.h"
int lt_go_step_tramp(const lt_metrics *m, void *user_data);
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// Schedulers (lt_scheduler) and optimizers (lt_optimizer).
const (
	SchedLinear   int32 = C.LT_SCHED_LINEAR
	SchedCosine   int32 = C.LT_SCHED_COSINE
	SchedConstant int32 = C.LT_SCHED_CONSTANT

	OptimAdamW     int32 = C.LT_OPTIM_ADAMW
	OptimAdamW8bit int32 = C.LT_OPTIM_ADAMW_8BIT
)

// Metrics mirrors lt_metrics: one optimizer step.
type Metrics struct {
	Step, MaxSteps       int64
	Epoch                float64
	Loss, LR, GradNorm   float64
	Tokens, TotalTokens  int64
	TokensPerS, ElapsedS float64
	PeakMemory           uint64
}

func metricsFromC(m *C.lt_metrics) Metrics {
	return Metrics{Step: int64(m.step), MaxSteps: int64(m.max_steps), Epoch: float64(m.epoch), Loss: float64(m.loss),
		LR: float64(m.lr), GradNorm: float64(m.grad_norm), Tokens: int64(m.tokens), TotalTokens: int64(m.total_tokens),
		TokensPerS: float64(m.tokens_per_s), ElapsedS: float64(m.elapsed_s), PeakMemory: uint64(m.peak_memory)}
}

// TrainParams mirrors lt_train_params (data-parallel fields aside). OnStep is called after
// every optimizer step; returning true stops training after that step.
type TrainParams struct {
	BatchSize             int32
	GradAccum             int32
	MaxSteps              int32
	Epochs                float64
	LR                    float64
	WarmupSteps           int32
	WarmupRatio           float64
	Scheduler             int32
	Optimizer             int32
	WeightDecay           float64
	AdamBeta1, AdamBeta2  float64
	AdamEps               float64
	MaxGradNorm           float64
	Seed                  uint64
	Packing               bool
	GradientCheckpointing bool
	OffloadCheckpoints    bool
	Deterministic         bool
	LogEvery              int32
	SaveEvery             int32
	OutputDir             string
	FP16InitialLossScale  float64
	FuseMicroBatches      bool // run a window's short micro-batches as one pass (default true)
	BucketPasses          bool // pad passes to a few token-budget buckets: few shapes, CUDA graphs replay (default true)
	OnStep                func(Metrics) bool
}

// DefaultTrainParams is lt_train_params_init's defaults (the notebook's recipe).
func DefaultTrainParams() TrainParams {
	var p C.lt_train_params
	C.lt_train_params_init(&p)
	return TrainParams{BatchSize: int32(p.batch_size), GradAccum: int32(p.grad_accum), MaxSteps: int32(p.max_steps),
		Epochs: float64(p.epochs), LR: float64(p.lr), WarmupSteps: int32(p.warmup_steps),
		WarmupRatio: float64(p.warmup_ratio), Scheduler: int32(p.scheduler), Optimizer: int32(p.optimizer),
		WeightDecay: float64(p.weight_decay), AdamBeta1: float64(p.adam_beta1), AdamBeta2: float64(p.adam_beta2),
		AdamEps: float64(p.adam_eps), MaxGradNorm: float64(p.max_grad_norm), Seed: uint64(p.seed),
		Packing: p.packing != 0, GradientCheckpointing: p.gradient_checkpointing != 0,
		OffloadCheckpoints: p.offload_checkpoints != 0, Deterministic: p.deterministic != 0,
		LogEvery: int32(p.log_every), SaveEvery: int32(p.save_every),
		FP16InitialLossScale: float64(p.fp16_initial_loss_scale), FuseMicroBatches: p.fuse_micro_batches != 0,
		BucketPasses: p.bucket_passes != 0}
}

// ParseScheduler / ParseOptimizer turn names ("cosine", "adamw_8bit") into values.
func ParseScheduler(name string) (int32, error) { return parseEnum("lt_scheduler_parse", name, true) }
func ParseOptimizer(name string) (int32, error) { return parseEnum("lt_optimizer_parse", name, false) }

func parseEnum(what, name string, sched bool) (int32, error) {
	cs := cstr(name)
	defer C.free(unsafe.Pointer(cs))
	var out C.int32_t
	_, err := call(what, func() C.lt_status {
		if sched {
			return C.lt_scheduler_parse(cs, &out)
		}
		return C.lt_optimizer_parse(cs, &out)
	})
	return int32(out), err
}

// Trainer owns an lt_trainer; its model and dataset must outlive it (closing either closes it).
type Trainer struct {
	p         *C.lt_trainer
	model     *Model
	ds        *Dataset
	box       *callbackBox
	outputDir *C.char
	metrics   C.lt_metrics
}

// NewTrainer prepares training of model (with LoRA attached) on ds; params nil = defaults.
func NewTrainer(model *Model, ds *Dataset, params *TrainParams) (*Trainer, error) {
	mh, err := model.handle("lt_trainer_new")
	if err != nil {
		return nil, err
	}
	dh, err := ds.handle("lt_trainer_new")
	if err != nil {
		return nil, err
	}
	tp := DefaultTrainParams()
	if params != nil {
		tp = *params
	}
	var p C.lt_train_params
	C.lt_train_params_init(&p)
	p.struct_size = C.uint32_t(C.sizeof_lt_train_params)
	p.batch_size, p.grad_accum, p.max_steps = C.int32_t(tp.BatchSize), C.int32_t(tp.GradAccum), C.int32_t(tp.MaxSteps)
	p.epochs, p.lr, p.warmup_steps = C.double(tp.Epochs), C.double(tp.LR), C.int32_t(tp.WarmupSteps)
	p.warmup_ratio, p.scheduler, p.optimizer = C.double(tp.WarmupRatio), C.int32_t(tp.Scheduler), C.int32_t(tp.Optimizer)
	p.weight_decay, p.adam_beta1, p.adam_beta2 = C.double(tp.WeightDecay), C.double(tp.AdamBeta1), C.double(tp.AdamBeta2)
	p.adam_eps, p.max_grad_norm, p.seed = C.double(tp.AdamEps), C.double(tp.MaxGradNorm), C.uint64_t(tp.Seed)
	p.packing, p.gradient_checkpointing = boolInt(tp.Packing), boolInt(tp.GradientCheckpointing)
	p.offload_checkpoints, p.deterministic = boolInt(tp.OffloadCheckpoints), boolInt(tp.Deterministic)
	p.log_every, p.save_every = C.int32_t(tp.LogEvery), C.int32_t(tp.SaveEvery)
	p.fuse_micro_batches = boolInt(tp.FuseMicroBatches)
	p.bucket_passes = boolInt(tp.BucketPasses)
	if tp.FP16InitialLossScale > 0 {
		p.fp16_initial_loss_scale = C.double(tp.FP16InitialLossScale)
	}
	t := &Trainer{model: model, ds: ds}
	if tp.OutputDir != "" {
		t.outputDir = cstr(tp.OutputDir)
		p.output_dir = t.outputDir
	}
	if tp.OnStep != nil {
		t.box = newBox(tp.OnStep)
		p.on_step = C.lt_step_fn(C.lt_go_step_tramp)
		p.user_data = t.box.ptr
	}
	if _, err := call("lt_trainer_new", func() C.lt_status { return C.lt_trainer_new(mh, dh, &p, &t.p) }); err != nil {
		t.release()
		return nil, err
	}
	model.deps.add(t)
	ds.deps.add(t)
	runtime.SetFinalizer(t, (*Trainer).Close)
	return t, nil
}

func (t *Trainer) release() {
	t.box.free()
	t.box = nil
	if t.outputDir != nil {
		C.free(unsafe.Pointer(t.outputDir))
		t.outputDir = nil
	}
}

// Close frees the trainer and its callback. Safe to call twice.
func (t *Trainer) Close() {
	if t == nil || t.p == nil {
		return
	}
	C.lt_trainer_free(t.p)
	t.p = nil
	t.release()
	runtime.SetFinalizer(t, nil)
}

func (t *Trainer) handle(name string) (*C.lt_trainer, error) {
	if t == nil || t.p == nil {
		return nil, newError(ErrState, name, "the trainer is closed")
	}
	return t.p, nil
}

// Step takes one optimizer step. It returns the step's metrics and OK, or Stopped when the
// callback asked to stop after this step, or Done (no step taken) when training is complete.
func (t *Trainer) Step() (Metrics, Status, error) {
	h, err := t.handle("lt_trainer_step")
	if err != nil {
		return Metrics{}, 0, err
	}
	t.metrics.struct_size = C.uint32_t(C.sizeof_lt_metrics)
	st, err := call("lt_trainer_step", func() C.lt_status { return C.lt_trainer_step(h, &t.metrics) })
	t.box.rethrow()
	if err != nil || st == Done {
		return Metrics{}, st, err
	}
	return metricsFromC(&t.metrics), st, nil
}

// Run takes steps until done (Done), stopped by the callback (Stopped) or failed.
func (t *Trainer) Run() (Status, error) {
	h, err := t.handle("lt_trainer_run")
	if err != nil {
		return 0, err
	}
	st, err := call("lt_trainer_run", func() C.lt_status { return C.lt_trainer_run(h) })
	t.box.rethrow()
	return st, err
}

// Evaluate is the mean loss on the held-out records.
func (t *Trainer) Evaluate() (float64, error) {
	h, err := t.handle("lt_trainer_evaluate")
	if err != nil {
		return 0, err
	}
	var loss C.double
	_, err = call("lt_trainer_evaluate", func() C.lt_status { return C.lt_trainer_evaluate(h, &loss) })
	return float64(loss), err
}

// SaveCheckpoint writes the full training state to dir; LoadCheckpoint restores it.
func (t *Trainer) SaveCheckpoint(dir string) error {
	return t.pathCall("lt_trainer_save_checkpoint", dir, true)
}

func (t *Trainer) LoadCheckpoint(dir string) error {
	return t.pathCall("lt_trainer_load_checkpoint", dir, false)
}

func (t *Trainer) pathCall(name, dir string, save bool) error {
	h, err := t.handle(name)
	if err != nil {
		return err
	}
	cs := cstr(dir)
	defer C.free(unsafe.Pointer(cs))
	_, err = call(name, func() C.lt_status {
		if save {
			return C.lt_trainer_save_checkpoint(h, cs)
		}
		return C.lt_trainer_load_checkpoint(h, cs)
	})
	return err
}

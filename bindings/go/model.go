// model.go - Model: a Hugging Face model folder loaded by the library, its LoRA adapter,
// logits / loss, and generation with streaming.
package loratune

/*
#include <stdlib.h>
#include "loratune.h"
int lt_go_stream_tramp(const char *piece, size_t len, int32_t token, void *user_data);
int lt_go_progress_tramp(const char *what, uint64_t done, uint64_t total, void *user_data);
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// Device, DType and Quant mirror lt_device, lt_dtype and lt_quant.
type Device int32
type DType int32
type Quant int32

const (
	DeviceAuto Device = C.LT_DEVICE_AUTO
	DeviceCPU  Device = C.LT_DEVICE_CPU
	DeviceCUDA Device = C.LT_DEVICE_CUDA

	DTypeAuto DType = C.LT_DTYPE_AUTO
	DTypeF32  DType = C.LT_DTYPE_F32
	DTypeF16  DType = C.LT_DTYPE_F16
	DTypeBF16 DType = C.LT_DTYPE_BF16

	QuantNF4  Quant = C.LT_QUANT_NF4
	QuantNone Quant = C.LT_QUANT_NONE
)

// LoRA target bits (LT_TARGET_*).
const (
	TargetQ    uint32 = C.LT_TARGET_Q
	TargetK    uint32 = C.LT_TARGET_K
	TargetV    uint32 = C.LT_TARGET_V
	TargetO    uint32 = C.LT_TARGET_O
	TargetGate uint32 = C.LT_TARGET_GATE
	TargetUp   uint32 = C.LT_TARGET_UP
	TargetDown uint32 = C.LT_TARGET_DOWN
	TargetAll  uint32 = C.LT_TARGET_ALL
)

// ModelParams mirrors lt_model_params. Progress (optional) returns true to cancel.
type ModelParams struct {
	Device      Device
	DeviceIndex int32
	Quant       Quant
	DType       DType
	DoubleQuant bool
	MaxSeqLen   int32
	NThreads    int32
	Progress    func(what string, done, total uint64) bool
}

// DefaultModelParams is lt_model_params_init's defaults.
func DefaultModelParams() ModelParams {
	var p C.lt_model_params
	C.lt_model_params_init(&p)
	return ModelParams{Device: Device(p.device), DeviceIndex: int32(p.device_index), Quant: Quant(p.quant),
		DType: DType(p.compute_dtype), DoubleQuant: p.double_quant != 0, MaxSeqLen: int32(p.max_seq_len),
		NThreads: int32(p.n_threads)}
}

func (mp *ModelParams) toC() C.lt_model_params {
	var p C.lt_model_params
	C.lt_model_params_init(&p)
	p.struct_size = C.uint32_t(C.sizeof_lt_model_params)
	p.device = C.int32_t(mp.Device)
	p.device_index = C.int32_t(mp.DeviceIndex)
	p.quant = C.int32_t(mp.Quant)
	p.compute_dtype = C.int32_t(mp.DType)
	p.double_quant = boolInt(mp.DoubleQuant)
	p.max_seq_len = C.int32_t(mp.MaxSeqLen)
	p.n_threads = C.int32_t(mp.NThreads)
	return p
}

// Model owns an lt_model.
type Model struct {
	p    *C.lt_model
	deps deps
}

// LoadModel loads a model folder (config.json + safetensors); params nil means the defaults.
func LoadModel(dir string, params *ModelParams) (*Model, error) {
	if err := LibraryError(); err != nil {
		return nil, err
	}
	mp := DefaultModelParams()
	if params != nil {
		mp = *params
	}
	p := mp.toC()
	var box *callbackBox
	if mp.Progress != nil {
		box = newBox(mp.Progress)
		defer box.free()
		p.progress = C.lt_progress_fn(C.lt_go_progress_tramp)
		p.progress_user_data = box.ptr
	}
	cdir := cstr(dir)
	defer C.free(unsafe.Pointer(cdir))
	m := &Model{}
	st, err := call("lt_model_load", func() C.lt_status { return C.lt_model_load(cdir, &p, &m.p) })
	box.rethrow()
	if err != nil {
		return nil, err
	}
	if st == Stopped {
		return nil, newError(Stopped, "lt_model_load", "loading was cancelled by the progress callback")
	}
	runtime.SetFinalizer(m, (*Model).Close)
	return m, nil
}

// Close frees the model after closing its trainers and exporters. Safe to call twice.
func (m *Model) Close() {
	if m == nil || m.p == nil {
		return
	}
	m.deps.closeAll()
	C.lt_model_free(m.p)
	m.p = nil
	runtime.SetFinalizer(m, nil)
}

func (m *Model) handle(name string) (*C.lt_model, error) {
	if m == nil || m.p == nil {
		return nil, newError(ErrState, name, "the model is closed")
	}
	return m.p, nil
}

// ModelInfo mirrors lt_model_info.
type ModelInfo struct {
	Architecture, ModelType                              string
	VocabSize, HiddenSize, IntermediateSize, NumLayers   int32
	NumHeads, NumKVHeads, HeadDim, MaxPositionEmbeddings int32
	RopeTheta, RMSNormEps                                float64
	TieWordEmbeddings, AttentionBias                     bool
	Device                                               Device
	DType                                                DType
	Quant                                                Quant
	NParams, NLoraParams, WeightBytes                    uint64
}

// Info describes the loaded model.
func (m *Model) Info() (ModelInfo, error) {
	h, err := m.handle("lt_model_get_info")
	if err != nil {
		return ModelInfo{}, err
	}
	var s C.lt_model_info
	s.struct_size = C.uint32_t(C.sizeof_lt_model_info)
	if _, err := call("lt_model_get_info", func() C.lt_status { return C.lt_model_get_info(h, &s) }); err != nil {
		return ModelInfo{}, err
	}
	return ModelInfo{
		Architecture: C.GoString(&s.architecture[0]), ModelType: C.GoString(&s.model_type[0]),
		VocabSize: int32(s.vocab_size), HiddenSize: int32(s.hidden_size), IntermediateSize: int32(s.intermediate_size),
		NumLayers: int32(s.num_layers), NumHeads: int32(s.num_heads), NumKVHeads: int32(s.num_kv_heads),
		HeadDim: int32(s.head_dim), MaxPositionEmbeddings: int32(s.max_position_embeddings),
		RopeTheta: float64(s.rope_theta), RMSNormEps: float64(s.rms_norm_eps),
		TieWordEmbeddings: s.tie_word_embeddings != 0, AttentionBias: s.attention_bias != 0,
		Device: Device(s.device), DType: DType(s.compute_dtype), Quant: Quant(s.quant),
		NParams: uint64(s.n_params), NLoraParams: uint64(s.n_lora_params), WeightBytes: uint64(s.weight_bytes),
	}, nil
}

// LoraParams mirrors lt_lora_params.
type LoraParams struct {
	R         int32
	Alpha     float32
	Dropout   float32
	UseRSLoRA bool
	Targets   uint32
	Seed      uint64
}

// DefaultLoraParams is lt_lora_params_init's defaults (the notebook's r=16, alpha=32, ...).
func DefaultLoraParams() LoraParams {
	var p C.lt_lora_params
	C.lt_lora_params_init(&p)
	return LoraParams{R: int32(p.r), Alpha: float32(p.alpha), Dropout: float32(p.dropout),
		UseRSLoRA: p.use_rslora != 0, Targets: uint32(p.targets), Seed: uint64(p.seed)}
}

// AddLora attaches a fresh adapter (replacing any); nil means the defaults.
func (m *Model) AddLora(params *LoraParams) error {
	h, err := m.handle("lt_model_add_lora")
	if err != nil {
		return err
	}
	lp := DefaultLoraParams()
	if params != nil {
		lp = *params
	}
	var p C.lt_lora_params
	C.lt_lora_params_init(&p)
	p.struct_size = C.uint32_t(C.sizeof_lt_lora_params)
	p.r, p.alpha, p.dropout = C.int32_t(lp.R), C.float(lp.Alpha), C.float(lp.Dropout)
	p.use_rslora, p.targets, p.seed = boolInt(lp.UseRSLoRA), C.uint32_t(lp.Targets), C.uint64_t(lp.Seed)
	_, err = call("lt_model_add_lora", func() C.lt_status { return C.lt_model_add_lora(h, &p) })
	return err
}

// LoadAdapter loads a PEFT adapter folder.
func (m *Model) LoadAdapter(dir string) error {
	h, err := m.handle("lt_model_load_adapter")
	if err != nil {
		return err
	}
	cs := cstr(dir)
	defer C.free(unsafe.Pointer(cs))
	_, err = call("lt_model_load_adapter", func() C.lt_status { return C.lt_model_load_adapter(h, cs) })
	return err
}

// SaveAdapter writes the adapter as PEFT does (adapter_config.json + adapter_model.safetensors).
func (m *Model) SaveAdapter(dir string, overwrite bool) error {
	h, err := m.handle("lt_model_save_adapter")
	if err != nil {
		return err
	}
	cs := cstr(dir)
	defer C.free(unsafe.Pointer(cs))
	_, err = call("lt_model_save_adapter", func() C.lt_status { return C.lt_model_save_adapter(h, cs, boolInt(overwrite)) })
	return err
}

// SetLoraEnabled switches the LoRA branch on or off in forward passes.
func (m *Model) SetLoraEnabled(enabled bool) error {
	h, err := m.handle("lt_model_set_lora_enabled")
	if err != nil {
		return err
	}
	_, err = call("lt_model_set_lora_enabled", func() C.lt_status { return C.lt_model_set_lora_enabled(h, boolInt(enabled)) })
	return err
}

// ReleaseBuffers frees the training graph's activation buffers now (inference mode); a later
// step or Logits / Loss call allocates them again.
func (m *Model) ReleaseBuffers() error {
	h, err := m.handle("lt_model_release_buffers")
	if err != nil {
		return err
	}
	_, err = call("lt_model_release_buffers", func() C.lt_status { return C.lt_model_release_buffers(h) })
	return err
}

// Logits of one sequence: len(ids) * vocab_size floats, row-major.
func (m *Model) Logits(ids []int32) ([]float32, error) {
	info, err := m.Info()
	if err != nil {
		return nil, err
	}
	out := make([]float32, len(ids)*int(info.VocabSize))
	if len(out) == 0 {
		return nil, newError(ErrInvalidArgument, "lt_model_logits", "no ids")
	}
	_, err = call("lt_model_logits", func() C.lt_status {
		return C.lt_model_logits(m.p, int32Ptr(ids), C.size_t(len(ids)), (*C.float)(unsafe.Pointer(&out[0])))
	})
	return out, err
}

// Loss is the mean cross-entropy of labels (-100 ignored; nil labels = ids).
func (m *Model) Loss(ids, labels []int32) (float64, error) {
	h, err := m.handle("lt_model_loss")
	if err != nil {
		return 0, err
	}
	if labels == nil {
		labels = ids
	}
	if len(labels) != len(ids) {
		return 0, newError(ErrInvalidArgument, "lt_model_loss", "%d labels for %d ids", len(labels), len(ids))
	}
	var loss C.double
	_, err = call("lt_model_loss", func() C.lt_status {
		return C.lt_model_loss(h, int32Ptr(ids), int32Ptr(labels), C.size_t(len(ids)), &loss)
	})
	return float64(loss), err
}

// GenerateParams mirrors lt_generate_params. OnText (needs Tokenizer) receives each complete
// piece of text and the token that completed it; returning true stops.
type GenerateParams struct {
	MaxNewTokens      int32
	DoSample          bool
	Temperature       float32
	TopK              int32
	TopP              float32
	MinP              float32
	RepetitionPenalty float32
	Seed              uint64
	StopIDs           []int32
	StopStrings       []string
	Tokenizer         *Tokenizer
	OnText            func(piece string, token int32) bool
}

// DefaultGenerateParams is lt_generate_params_init's defaults (greedy, 128 new tokens).
func DefaultGenerateParams() GenerateParams {
	var p C.lt_generate_params
	C.lt_generate_params_init(&p)
	return GenerateParams{MaxNewTokens: int32(p.max_new_tokens), DoSample: p.do_sample != 0,
		Temperature: float32(p.temperature), TopK: int32(p.top_k), TopP: float32(p.top_p), MinP: float32(p.min_p),
		RepetitionPenalty: float32(p.repetition_penalty), Seed: uint64(p.seed)}
}

// cGenerateParams fills C params from gp; its arrays live in C memory (cgo forbids Go pointers
// inside C structs) until free is called; box (may be nil) carries OnText.
func cGenerateParams(gp GenerateParams, fn string) (p C.lt_generate_params, free func(), box *callbackBox, err error) {
	var frees []func()
	free = func() {
		for i := len(frees) - 1; i >= 0; i-- {
			frees[i]()
		}
	}
	C.lt_generate_params_init(&p)
	p.struct_size = C.uint32_t(C.sizeof_lt_generate_params)
	p.max_new_tokens, p.do_sample = C.int32_t(gp.MaxNewTokens), boolInt(gp.DoSample)
	p.temperature, p.top_k, p.top_p = C.float(gp.Temperature), C.int32_t(gp.TopK), C.float(gp.TopP)
	p.min_p, p.repetition_penalty, p.seed = C.float(gp.MinP), C.float(gp.RepetitionPenalty), C.uint64_t(gp.Seed)
	if len(gp.StopIDs) > 0 {
		ids := (*C.int32_t)(C.malloc(C.size_t(4 * len(gp.StopIDs))))
		frees = append(frees, func() { C.free(unsafe.Pointer(ids)) })
		copy(unsafe.Slice((*int32)(unsafe.Pointer(ids)), len(gp.StopIDs)), gp.StopIDs)
		p.stop_ids, p.n_stop_ids = ids, C.int32_t(len(gp.StopIDs))
	}
	if len(gp.StopStrings) > 0 {
		arr := (**C.char)(C.malloc(C.size_t(unsafe.Sizeof((*C.char)(nil))) * C.size_t(len(gp.StopStrings))))
		frees = append(frees, func() { C.free(unsafe.Pointer(arr)) })
		strs := unsafe.Slice(arr, len(gp.StopStrings))
		for i, s := range gp.StopStrings {
			strs[i] = cstr(s)
		}
		frees = append(frees, func() { freeAll(strs) })
		p.stop_strings, p.n_stop_strings = arr, C.int32_t(len(gp.StopStrings))
	}
	if gp.Tokenizer != nil {
		if gp.Tokenizer.p == nil {
			free()
			return p, func() {}, nil, newError(ErrState, fn, "the tokenizer is closed")
		}
		p.tokenizer = gp.Tokenizer.p
	}
	if gp.OnText != nil {
		if gp.Tokenizer == nil {
			free()
			return p, func() {}, nil, newError(ErrInvalidArgument, fn, "OnText needs a Tokenizer")
		}
		box = newBox(gp.OnText)
		frees = append(frees, box.free)
		p.on_text = C.lt_stream_fn(C.lt_go_stream_tramp)
		p.user_data = box.ptr
	}
	return p, free, box, nil
}

// Generate continues prompt and returns the new ids (the stop token included when one ended it).
func (m *Model) Generate(prompt []int32, params *GenerateParams) ([]int32, error) {
	h, err := m.handle("lt_generate")
	if err != nil {
		return nil, err
	}
	gp := DefaultGenerateParams()
	if params != nil {
		gp = *params
	}
	p, free, box, err := cGenerateParams(gp, "lt_generate")
	if err != nil {
		return nil, err
	}
	defer free()
	capacity := int(gp.MaxNewTokens) + 1
	out := make([]int32, capacity)
	var n C.size_t
	_, err = call("lt_generate", func() C.lt_status {
		return C.lt_generate(h, int32Ptr(prompt), C.size_t(len(prompt)), &p, int32Ptr(out), C.size_t(capacity), &n)
	})
	box.rethrow()
	runtime.KeepAlive(prompt)
	if err != nil {
		return nil, err
	}
	return out[:int(n)], nil
}

// GenerateBatch continues several prompts at once (lt_generate_batch) and returns each one's
// new ids, in order: greedy gives each prompt's ids alone, sampling draws prompt i with
// Seed + i. OnText needs a single prompt.
func (m *Model) GenerateBatch(prompts [][]int32, params *GenerateParams) ([][]int32, error) {
	h, err := m.handle("lt_generate_batch")
	if err != nil {
		return nil, err
	}
	gp := DefaultGenerateParams()
	if params != nil {
		gp = *params
	}
	if len(prompts) == 0 {
		return nil, newError(ErrInvalidArgument, "lt_generate_batch", "no prompts")
	}
	p, free, box, err := cGenerateParams(gp, "lt_generate_batch")
	if err != nil {
		return nil, err
	}
	defer free()
	// the prompts in C memory: the array of pointers must not hold Go pointers
	ns := len(prompts)
	ptrs := (**C.int32_t)(C.malloc(C.size_t(unsafe.Sizeof((*C.int32_t)(nil))) * C.size_t(ns)))
	lens := (*C.size_t)(C.malloc(C.size_t(unsafe.Sizeof(C.size_t(0))) * C.size_t(ns)))
	defer C.free(unsafe.Pointer(ptrs))
	defer C.free(unsafe.Pointer(lens))
	ps, ls := unsafe.Slice(ptrs, ns), unsafe.Slice(lens, ns)
	for i, pr := range prompts {
		ps[i], ls[i] = nil, C.size_t(len(pr))
		if len(pr) > 0 {
			ps[i] = (*C.int32_t)(C.malloc(C.size_t(4 * len(pr))))
			copy(unsafe.Slice((*int32)(unsafe.Pointer(ps[i])), len(pr)), pr)
		}
	}
	defer func() {
		for _, q := range ps {
			if q != nil {
				C.free(unsafe.Pointer(q))
			}
		}
	}()
	capacity := int(gp.MaxNewTokens) + 1
	out := make([]int32, capacity*ns)
	nOut := make([]C.size_t, ns)
	_, err = call("lt_generate_batch", func() C.lt_status {
		return C.lt_generate_batch(h, ptrs, lens, C.size_t(ns), &p, int32Ptr(out), C.size_t(capacity), &nOut[0])
	})
	box.rethrow()
	if err != nil {
		return nil, err
	}
	res := make([][]int32, ns)
	for i := range res {
		res[i] = out[i*capacity : i*capacity+int(nOut[i])]
	}
	return res, nil
}

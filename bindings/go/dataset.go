// dataset.go - Dataset: tokenized training records, from a JSON / JSONL file or added one by one.
package loratune

/*
#include <stdlib.h>
#include "loratune.h"
int lt_go_progress_tramp(const char *what, uint64_t done, uint64_t total, void *user_data);
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// Data formats (lt_data_format) and loss targets (lt_loss_on).
const (
	FormatAuto   int32 = C.LT_DATA_AUTO
	FormatAlpaca int32 = C.LT_DATA_ALPACA
	FormatChat   int32 = C.LT_DATA_CHAT
	FormatText   int32 = C.LT_DATA_TEXT
	FormatTokens int32 = C.LT_DATA_TOKENS

	LossAll      int32 = C.LT_LOSS_ALL
	LossResponse int32 = C.LT_LOSS_RESPONSE
)

// DatasetParams mirrors lt_dataset_params; empty strings mean the library's default.
type DatasetParams struct {
	Format           int32
	TemplateName     string
	TemplateText     string
	InstructionField string
	InputField       string
	OutputField      string
	TextField        string
	MaxSeqLen        int32
	LossOn           int32
	AddEOS           bool
	SkipBadRecords   bool
	EvalFraction     float64
	Seed             uint64
	NThreads         int32
	Progress         func(what string, done, total uint64) bool
}

// DefaultDatasetParams is lt_dataset_params_init's defaults.
func DefaultDatasetParams() DatasetParams {
	var p C.lt_dataset_params
	C.lt_dataset_params_init(&p)
	return DatasetParams{Format: int32(p.format), MaxSeqLen: int32(p.max_seq_len), LossOn: int32(p.loss_on),
		AddEOS: p.add_eos != 0, SkipBadRecords: p.skip_bad_records != 0, EvalFraction: float64(p.eval_fraction),
		Seed: uint64(p.seed), NThreads: int32(p.n_threads)}
}

// Dataset owns an lt_dataset; its tokenizer must outlive it (closing the tokenizer closes it).
type Dataset struct {
	p       *C.lt_dataset
	tok     *Tokenizer
	strings []*C.char // the params' strings, kept while the dataset lives
	deps    deps
}

func newDataset(path string, tok *Tokenizer, params *DatasetParams) (*Dataset, error) {
	if err := LibraryError(); err != nil {
		return nil, err
	}
	th, err := tok.handle("lt_dataset_new")
	if err != nil {
		return nil, err
	}
	dp := DefaultDatasetParams()
	if params != nil {
		dp = *params
	}
	var p C.lt_dataset_params
	C.lt_dataset_params_init(&p)
	p.struct_size = C.uint32_t(C.sizeof_lt_dataset_params)
	d := &Dataset{tok: tok}
	keep := func(s string, dst **C.char) {
		if s != "" {
			*dst = cstr(s)
			d.strings = append(d.strings, *dst)
		}
	}
	p.format = C.int32_t(dp.Format)
	keep(dp.TemplateName, &p.template_name)
	keep(dp.TemplateText, &p.template_text)
	keep(dp.InstructionField, &p.instruction_field)
	keep(dp.InputField, &p.input_field)
	keep(dp.OutputField, &p.output_field)
	keep(dp.TextField, &p.text_field)
	p.max_seq_len, p.loss_on = C.int32_t(dp.MaxSeqLen), C.int32_t(dp.LossOn)
	p.add_eos, p.skip_bad_records = boolInt(dp.AddEOS), boolInt(dp.SkipBadRecords)
	p.eval_fraction, p.seed, p.n_threads = C.double(dp.EvalFraction), C.uint64_t(dp.Seed), C.int32_t(dp.NThreads)
	var box *callbackBox
	if dp.Progress != nil {
		box = newBox(dp.Progress)
		defer box.free()
		p.progress = C.lt_progress_fn(C.lt_go_progress_tramp)
		p.progress_user_data = box.ptr
	}
	var st Status
	if path != "" {
		cs := cstr(path)
		defer C.free(unsafe.Pointer(cs))
		st, err = call("lt_dataset_load", func() C.lt_status { return C.lt_dataset_load(cs, th, &p, &d.p) })
	} else {
		st, err = call("lt_dataset_new", func() C.lt_status { return C.lt_dataset_new(th, &p, &d.p) })
	}
	box.rethrow()
	if err == nil && st == Stopped {
		err = newError(Stopped, "lt_dataset_load", "loading was cancelled by the progress callback")
	}
	if err != nil {
		freeAll(d.strings)
		return nil, err
	}
	tok.deps.add(d)
	runtime.SetFinalizer(d, (*Dataset).Close)
	return d, nil
}

// LoadDataset reads a JSON array or JSONL file; params nil means the defaults.
func LoadDataset(path string, tok *Tokenizer, params *DatasetParams) (*Dataset, error) {
	if path == "" {
		return nil, newError(ErrInvalidArgument, "lt_dataset_load", "empty path")
	}
	return newDataset(path, tok, params)
}

// NewDataset makes an empty dataset that records are added to.
func NewDataset(tok *Tokenizer, params *DatasetParams) (*Dataset, error) {
	return newDataset("", tok, params)
}

// Close frees the dataset after closing the trainers using it.
func (d *Dataset) Close() {
	if d == nil || d.p == nil {
		return
	}
	d.deps.closeAll()
	C.lt_dataset_free(d.p)
	d.p = nil
	freeAll(d.strings)
	d.strings = nil
	runtime.SetFinalizer(d, nil)
}

func (d *Dataset) handle(name string) (*C.lt_dataset, error) {
	if d == nil || d.p == nil {
		return nil, newError(ErrState, name, "the dataset is closed")
	}
	return d.p, nil
}

func (d *Dataset) addStrings(name string, fn func(h *C.lt_dataset, s []*C.char) C.lt_status, ss ...string) error {
	h, err := d.handle(name)
	if err != nil {
		return err
	}
	cs := make([]*C.char, len(ss))
	for i, s := range ss {
		cs[i] = cstr(s)
	}
	defer freeAll(cs)
	_, err = call(name, func() C.lt_status { return fn(h, cs) })
	return err
}

// AddJSON adds one record given as a JSON object text.
func (d *Dataset) AddJSON(record string) error {
	return d.addStrings("lt_dataset_add_json", func(h *C.lt_dataset, s []*C.char) C.lt_status {
		return C.lt_dataset_add_json(h, s[0])
	}, record)
}

// AddAlpaca adds an instruction / input / output record.
func (d *Dataset) AddAlpaca(instruction, input, output string) error {
	return d.addStrings("lt_dataset_add_alpaca", func(h *C.lt_dataset, s []*C.char) C.lt_status {
		return C.lt_dataset_add_alpaca(h, s[0], s[1], s[2])
	}, instruction, input, output)
}

// AddText adds a plain text record.
func (d *Dataset) AddText(text string) error {
	return d.addStrings("lt_dataset_add_text", func(h *C.lt_dataset, s []*C.char) C.lt_status {
		return C.lt_dataset_add_text(h, s[0])
	}, text)
}

// AddTokens adds a tokenized record (labels nil = ids).
func (d *Dataset) AddTokens(ids, labels []int32) error {
	h, err := d.handle("lt_dataset_add_tokens")
	if err != nil {
		return err
	}
	if labels != nil && len(labels) != len(ids) {
		return newError(ErrInvalidArgument, "lt_dataset_add_tokens", "%d labels for %d ids", len(labels), len(ids))
	}
	_, err = call("lt_dataset_add_tokens", func() C.lt_status {
		return C.lt_dataset_add_tokens(h, int32Ptr(ids), int32Ptr(labels), C.size_t(len(ids)))
	})
	return err
}

// DatasetStats mirrors lt_dataset_stats.
type DatasetStats struct {
	NRecords, NEval, NSkipped, NTruncated, NTokens, NLabelTokens uint64
	MinLen, MaxLen                                               int32
	MeanLen                                                      float64
}

// Stats counts records, tokens and truncations.
func (d *Dataset) Stats() (DatasetStats, error) {
	h, err := d.handle("lt_dataset_get_stats")
	if err != nil {
		return DatasetStats{}, err
	}
	var s C.lt_dataset_stats
	s.struct_size = C.uint32_t(C.sizeof_lt_dataset_stats)
	if _, err := call("lt_dataset_get_stats", func() C.lt_status { return C.lt_dataset_get_stats(h, &s) }); err != nil {
		return DatasetStats{}, err
	}
	return DatasetStats{NRecords: uint64(s.n_records), NEval: uint64(s.n_eval), NSkipped: uint64(s.n_skipped),
		NTruncated: uint64(s.n_truncated), NTokens: uint64(s.n_tokens), NLabelTokens: uint64(s.n_label_tokens),
		MinLen: int32(s.min_len), MaxLen: int32(s.max_len), MeanLen: float64(s.mean_len)}, nil
}

// Len is the number of training records.
func (d *Dataset) Len() int {
	if d == nil || d.p == nil {
		return 0
	}
	return int(C.lt_dataset_size(d.p))
}

// Get returns record i's ids and labels (-100 where no loss).
func (d *Dataset) Get(i int) (ids, labels []int32, err error) {
	h, err := d.handle("lt_dataset_get")
	if err != nil {
		return nil, nil, err
	}
	var n C.size_t
	st, err := call("lt_dataset_get", func() C.lt_status { return C.lt_dataset_get(h, C.size_t(i), nil, nil, 0, &n) })
	if err != nil && st != ErrBufferTooSmall {
		return nil, nil, err
	}
	capacity := int(n)
	if capacity == 0 {
		capacity = 1
	}
	ids, labels = make([]int32, capacity), make([]int32, capacity)
	_, err = call("lt_dataset_get", func() C.lt_status {
		return C.lt_dataset_get(h, C.size_t(i), int32Ptr(ids), int32Ptr(labels), C.size_t(capacity), &n)
	})
	if err != nil {
		return nil, nil, err
	}
	return ids[:int(n)], labels[:int(n)], nil
}

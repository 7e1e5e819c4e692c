// export.go - Exporter: PEFT adapter, merged safetensors, GGUF (+ Ollama Modelfile), GGUF LoRA.
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

// Export formats (lt_export_format) and merge bases (lt_merge_base).
const (
	ExportPEFT     int32 = C.LT_EXPORT_PEFT
	ExportMerged   int32 = C.LT_EXPORT_MERGED
	ExportGGUF     int32 = C.LT_EXPORT_GGUF
	ExportGGUFLora int32 = C.LT_EXPORT_GGUF_LORA

	MergeAuto        int32 = C.LT_MERGE_AUTO
	MergeOriginal    int32 = C.LT_MERGE_ORIGINAL
	MergeDequantized int32 = C.LT_MERGE_DEQUANTIZED
)

// ExportParams mirrors lt_export_params; empty strings mean the library's default.
type ExportParams struct {
	Format         int32
	Quant          string
	MergeBase      int32
	TemplateName   string
	TemplateText   string
	TokenizerDir   string
	Overwrite      bool
	WriteModelfile bool
	NThreads       int32
	MaxShardBytes  uint64
	Progress       func(what string, done, total uint64) bool
}

// DefaultExportParams is lt_export_params_init's defaults (GGUF q4_k_m with a Modelfile).
func DefaultExportParams() ExportParams {
	var p C.lt_export_params
	C.lt_export_params_init(&p)
	q := ""
	if p.quant != nil {
		q = C.GoString(p.quant)
	}
	return ExportParams{Format: int32(p.format), Quant: q, MergeBase: int32(p.merge_base),
		Overwrite: p.overwrite != 0, WriteModelfile: p.write_modelfile != 0, NThreads: int32(p.n_threads),
		MaxShardBytes: uint64(p.max_shard_bytes)}
}

// ParseExportFormat turns "gguf", "peft", "merged" ... into a format value.
func ParseExportFormat(name string) (int32, error) {
	cs := cstr(name)
	defer C.free(unsafe.Pointer(cs))
	var out C.int32_t
	_, err := call("lt_export_format_parse", func() C.lt_status { return C.lt_export_format_parse(cs, &out) })
	return int32(out), err
}

// Exporter owns an lt_exporter; the model must outlive it (closing the model closes it).
type Exporter struct {
	p       *C.lt_exporter
	model   *Model
	tok     *Tokenizer
	strings []*C.char
	box     *callbackBox
}

// NewExporter prepares writing model (tok may be nil: then TokenizerDir is read).
func NewExporter(model *Model, tok *Tokenizer, params *ExportParams) (*Exporter, error) {
	mh, err := model.handle("lt_exporter_new")
	if err != nil {
		return nil, err
	}
	var th *C.lt_tokenizer
	if tok != nil {
		if th, err = tok.handle("lt_exporter_new"); err != nil {
			return nil, err
		}
	}
	ep := DefaultExportParams()
	if params != nil {
		ep = *params
	}
	var p C.lt_export_params
	C.lt_export_params_init(&p)
	p.struct_size = C.uint32_t(C.sizeof_lt_export_params)
	e := &Exporter{model: model, tok: tok}
	keep := func(s string, dst **C.char) {
		if s != "" {
			*dst = cstr(s)
			e.strings = append(e.strings, *dst)
		}
	}
	p.format = C.int32_t(ep.Format)
	keep(ep.Quant, &p.quant)
	p.merge_base = C.int32_t(ep.MergeBase)
	keep(ep.TemplateName, &p.template_name)
	keep(ep.TemplateText, &p.template_text)
	keep(ep.TokenizerDir, &p.tokenizer_dir)
	p.overwrite, p.write_modelfile = boolInt(ep.Overwrite), boolInt(ep.WriteModelfile)
	p.n_threads = C.int32_t(ep.NThreads)
	if ep.MaxShardBytes > 0 {
		p.max_shard_bytes = C.uint64_t(ep.MaxShardBytes)
	}
	if ep.Progress != nil {
		e.box = newBox(ep.Progress)
		p.progress = C.lt_progress_fn(C.lt_go_progress_tramp)
		p.progress_user_data = e.box.ptr
	}
	if _, err := call("lt_exporter_new", func() C.lt_status { return C.lt_exporter_new(mh, th, &p, &e.p) }); err != nil {
		e.release()
		return nil, err
	}
	model.deps.add(e)
	if tok != nil {
		tok.deps.add(e)
	}
	runtime.SetFinalizer(e, (*Exporter).Close)
	return e, nil
}

func (e *Exporter) release() {
	freeAll(e.strings)
	e.strings = nil
	e.box.free()
	e.box = nil
}

// Close frees the exporter. Safe to call twice.
func (e *Exporter) Close() {
	if e == nil || e.p == nil {
		return
	}
	C.lt_exporter_free(e.p)
	e.p = nil
	e.release()
	runtime.SetFinalizer(e, nil)
}

// Write writes to path (a folder for PEFT / merged, a file for GGUF). Atomic.
func (e *Exporter) Write(path string) error {
	if e == nil || e.p == nil {
		return newError(ErrState, "lt_exporter_write", "the exporter is closed")
	}
	cs := cstr(path)
	defer C.free(unsafe.Pointer(cs))
	st, err := call("lt_exporter_write", func() C.lt_status { return C.lt_exporter_write(e.p, cs) })
	e.box.rethrow()
	if err == nil && st == Stopped {
		err = newError(Stopped, "lt_exporter_write", "the export was cancelled by the progress callback")
	}
	return err
}

// Package loratune is the Go binding of libloratune (include/loratune.h): LoRA fine-tuning of
// Hugging Face causal language models on a frozen 4-bit base.
//
// Every handle has a Close method (safe to call twice); closing a handle first closes the
// handles that depend on it (a model its trainers and exporters). Failures come back as *Error
// carrying the status and the library's message. Callbacks are Go funcs kept alive (through
// cgo.Handle) as long as the handle that calls them.
//
// Linking: cgo asks pkg-config for loratune (`#cgo pkg-config: loratune`): an installed library
// (libloratune-dev, or `cmake --install`; PKG_CONFIG_PATH=<prefix>/lib/pkgconfig for another
// prefix), or a build tree through its loratune-uninstalled.pc (PKG_CONFIG_PATH=<build>/pkgconfig).
// Outside the loader's paths add an rpath: CGO_LDFLAGS="-Wl,-rpath,<libdir>".
package loratune

/*
#cgo pkg-config: loratune
#include <stdlib.h>
#include "loratune.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// BindingVersionMajor is the LT_VERSION_MAJOR these bindings were written for.
const BindingVersionMajor = 0

// Status is an lt_status value.
type Status int32

const (
	OK                 Status = C.LT_OK
	Done               Status = C.LT_DONE
	Stopped            Status = C.LT_STOPPED
	ErrInvalidArgument Status = C.LT_ERR_INVALID_ARGUMENT
	ErrIO              Status = C.LT_ERR_IO
	ErrFormat          Status = C.LT_ERR_FORMAT
	ErrUnsupported     Status = C.LT_ERR_UNSUPPORTED
	ErrOutOfMemory     Status = C.LT_ERR_OUT_OF_MEMORY
	ErrCUDA            Status = C.LT_ERR_CUDA
	ErrNotFound        Status = C.LT_ERR_NOT_FOUND
	ErrState           Status = C.LT_ERR_STATE
	ErrData            Status = C.LT_ERR_DATA
	ErrExists          Status = C.LT_ERR_EXISTS
	ErrVersion         Status = C.LT_ERR_VERSION
	ErrBufferTooSmall  Status = C.LT_ERR_BUFFER_TOO_SMALL
	ErrUTF8            Status = C.LT_ERR_UTF8
	ErrNCCL            Status = C.LT_ERR_NCCL
	ErrNoDevice        Status = C.LT_ERR_NO_DEVICE
	ErrNonfinite       Status = C.LT_ERR_NONFINITE
	ErrInternal        Status = C.LT_ERR_INTERNAL
)

// String is lt_status_string's name of the status.
func (s Status) String() string { return C.GoString(C.lt_status_string(C.lt_status(s))) }

// Error is a failed loratune call: its status and lt_last_error's text.
type Error struct {
	Status  Status
	Message string
	Call    string
}

func (e *Error) Error() string {
	if e.Call != "" {
		return fmt.Sprintf("%s: %s: %s", e.Call, e.Status, e.Message)
	}
	return fmt.Sprintf("%s: %s", e.Status, e.Message)
}

// check turns a status into nil (OK, Done, Stopped) or an *Error with the thread's last error.
// The caller must still be on the OS thread that made the call (see call).
func check(st C.lt_status, name string) error {
	if st >= 0 {
		return nil
	}
	return &Error{Status: Status(st), Message: C.GoString(C.lt_last_error()), Call: name}
}

// call runs fn (one library call) locked to its OS thread, so that lt_last_error, which is
// thread-local, is read on the thread that failed.
func call(name string, fn func() C.lt_status) (Status, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	st := fn()
	return Status(st), check(st, name)
}

func newError(st Status, call, format string, args ...interface{}) error {
	return &Error{Status: st, Message: fmt.Sprintf(format, args...), Call: call}
}

// Version is the loaded library's "MAJOR.MINOR.PATCH".
func Version() string { return C.GoString(C.lt_version()) }

// VersionNumber is the loaded library's LT_VERSION_NUMBER.
func VersionNumber() uint32 { return uint32(C.lt_version_number()) }

// StructSize is the library's size of a public struct (0 for an unknown name).
func StructSize(name string) uint64 {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	return uint64(C.lt_struct_size(cs))
}

// structSizes are the sizes of the public structs in the header this package was compiled with.
var structSizes = map[string]uint64{
	"lt_model_params":    C.sizeof_lt_model_params,
	"lt_model_info":      C.sizeof_lt_model_info,
	"lt_lora_params":     C.sizeof_lt_lora_params,
	"lt_memory_estimate": C.sizeof_lt_memory_estimate,
	"lt_special_tokens":  C.sizeof_lt_special_tokens,
	"lt_chat_message":    C.sizeof_lt_chat_message,
	"lt_dataset_params":  C.sizeof_lt_dataset_params,
	"lt_dataset_stats":   C.sizeof_lt_dataset_stats,
	"lt_metrics":         C.sizeof_lt_metrics,
	"lt_train_params":    C.sizeof_lt_train_params,
	"lt_generate_params": C.sizeof_lt_generate_params,
	"lt_export_params":   C.sizeof_lt_export_params,
}

// StructSizes returns a copy of the binding's struct sizes, by struct name.
func StructSizes() map[string]uint64 {
	out := make(map[string]uint64, len(structSizes))
	for k, v := range structSizes {
		out[k] = v
	}
	return out
}

// CheckLibrary refuses a library these bindings do not match: versionNumber is what
// lt_version_number returned, structSize gives the library's size of a struct by name.
func CheckLibrary(versionNumber uint32, structSize func(name string) uint64) error {
	major := versionNumber / 10000
	if major != BindingVersionMajor {
		return newError(ErrVersion, "CheckLibrary",
			"libloratune is version %d.%d.%d (major %d) but these Go bindings were written for major %d; use bindings that match the library",
			major, versionNumber/100%100, versionNumber%100, major, BindingVersionMajor)
	}
	for _, name := range []string{"lt_model_params", "lt_model_info", "lt_lora_params", "lt_memory_estimate",
		"lt_special_tokens", "lt_chat_message", "lt_dataset_params", "lt_dataset_stats", "lt_metrics",
		"lt_train_params", "lt_generate_params", "lt_export_params"} {
		if theirs, ours := structSize(name), structSizes[name]; theirs != ours {
			return newError(ErrVersion, "CheckLibrary",
				"struct %s is %d bytes in the library but %d bytes in these bindings; the library and the bindings come from different versions of loratune.h",
				name, theirs, ours)
		}
	}
	return nil
}

var (
	libOnce sync.Once
	libErr  error
)

// LibraryError is the result of checking the loaded library against these bindings (nil when
// it matches). Every constructor returns it before touching the library.
func LibraryError() error {
	libOnce.Do(func() { libErr = CheckLibrary(VersionNumber(), StructSize) })
	return libErr
}

// CUDADeviceCount is the number of CUDA devices this build of the library can use.
func CUDADeviceCount() int { return int(C.lt_cuda_device_count()) }

// ---- dependents: closing a handle closes what depends on it first ------------------------

type closer interface{ Close() }

type deps struct {
	mu   sync.Mutex
	list []closer
}

func (d *deps) add(c closer) {
	d.mu.Lock()
	d.list = append(d.list, c)
	d.mu.Unlock()
}

func (d *deps) closeAll() {
	d.mu.Lock()
	list := d.list
	d.list = nil
	d.mu.Unlock()
	for _, c := range list {
		c.Close()
	}
}

// ---- small helpers ---------------------------------------------------------------------------

func cstr(s string) *C.char { return C.CString(s) }

func cstrOrNil(s string) *C.char {
	if s == "" {
		return nil
	}
	return C.CString(s)
}

func freeAll(ps []*C.char) {
	for _, p := range ps {
		if p != nil {
			C.free(unsafe.Pointer(p))
		}
	}
}

func boolInt(b bool) C.int32_t {
	if b {
		return 1
	}
	return 0
}

func int32Ptr(s []int32) *C.int32_t {
	if len(s) == 0 {
		return nil
	}
	return (*C.int32_t)(unsafe.Pointer(&s[0]))
}

// callString runs the two-call pattern for a text result: fn(buf, cap, &len).
func callString(name string, initial int, fn func(buf *C.char, cap C.size_t, n *C.size_t) C.lt_status) (string, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	capacity := initial
	if capacity < 16 {
		capacity = 16
	}
	for i := 0; i < 4; i++ {
		buf := (*C.char)(C.malloc(C.size_t(capacity)))
		var n C.size_t
		st := fn(buf, C.size_t(capacity), &n)
		if st == C.LT_ERR_BUFFER_TOO_SMALL && int(n) >= capacity {
			C.free(unsafe.Pointer(buf))
			capacity = int(n) + 1
			continue
		}
		if err := check(st, name); err != nil {
			C.free(unsafe.Pointer(buf))
			return "", err
		}
		s := C.GoStringN(buf, C.int(n))
		C.free(unsafe.Pointer(buf))
		return s, nil
	}
	return "", newError(ErrInternal, name, "the needed buffer size kept growing")
}

// ParseTargets turns "q_proj,k_proj,..." / "all" into an LT_TARGET_* mask.
func ParseTargets(names string) (uint32, error) {
	cs := cstr(names)
	defer C.free(unsafe.Pointer(cs))
	var mask C.uint32_t
	if _, err := call("lt_lora_targets_parse", func() C.lt_status { return C.lt_lora_targets_parse(cs, &mask) }); err != nil {
		return 0, err
	}
	return uint32(mask), nil
}

// TemplateBuiltin is a built-in prompt template's text ("alpaca-zh", "alpaca", "chatml").
func TemplateBuiltin(name string) (string, bool) {
	cs := cstr(name)
	defer C.free(unsafe.Pointer(cs))
	t := C.lt_template_builtin(cs)
	if t == nil {
		return "", false
	}
	return C.GoString(t), true
}

// TemplateRender fills {instruction}, {input}, {output} of a template (a name or a text).
func TemplateRender(template, instruction, input, output string) (string, error) {
	cs := []*C.char{cstr(template), cstr(instruction), cstr(input), cstr(output)}
	defer freeAll(cs)
	return callString("lt_template_render", 1024, func(buf *C.char, capacity C.size_t, n *C.size_t) C.lt_status {
		return C.lt_template_render(cs[0], cs[1], cs[2], cs[3], buf, capacity, n)
	})
}

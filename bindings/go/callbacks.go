// callbacks.go - Go funcs called back by the library. A callback's Go value lives in a
// cgo.Handle whose number sits in C memory given to the library as user_data; the trampolines in
// callbacks.c turn the C calls into calls of the exported functions below.
package loratune

/*
#include <stdint.h>
#include <stdlib.h>
#include "loratune.h"
int lt_go_step_tramp(const lt_metrics *m, void *user_data);
int lt_go_stream_tramp(const char *piece, size_t len, int32_t token, void *user_data);
int lt_go_progress_tramp(const char *what, uint64_t done, uint64_t total, void *user_data);
*/
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

// callbackBox holds a Go callback for C: a cgo.Handle, and the C word holding its number.
type callbackBox struct {
	h   cgo.Handle
	ptr unsafe.Pointer
	fn  interface{}
	err interface{} // a panic inside the callback, raised again after the C call
}

func newBox(fn interface{}) *callbackBox {
	b := &callbackBox{fn: fn}
	b.h = cgo.NewHandle(b)
	b.ptr = C.malloc(C.size_t(unsafe.Sizeof(uintptr(0))))
	*(*uintptr)(b.ptr) = uintptr(b.h)
	return b
}

func (b *callbackBox) free() {
	if b == nil || b.ptr == nil {
		return
	}
	b.h.Delete()
	C.free(b.ptr)
	b.ptr = nil
}

// rethrow re-panics with a callback's panic once the C call is back.
func (b *callbackBox) rethrow() {
	if b != nil && b.err != nil {
		e := b.err
		b.err = nil
		panic(e)
	}
}

func boxOf(userData unsafe.Pointer) (*callbackBox, interface{}) {
	h := cgo.Handle(*(*uintptr)(userData))
	b := h.Value().(*callbackBox)
	return b, b.fn
}

// guard runs a callback; a panic stops the C call (non-zero) and is kept for rethrow.
func (b *callbackBox) guard(fn func() bool) (stop C.int) {
	defer func() {
		if r := recover(); r != nil {
			b.err = r
			stop = 1
		}
	}()
	if b.err != nil || fn() {
		return 1
	}
	return 0
}

//export goStepCallback
func goStepCallback(m *C.lt_metrics, userData unsafe.Pointer) C.int {
	b, fn := boxOf(userData)
	f := fn.(func(Metrics) bool)
	return b.guard(func() bool { return f(metricsFromC(m)) })
}

//export goStreamCallback
func goStreamCallback(piece *C.char, n C.size_t, token C.int32_t, userData unsafe.Pointer) C.int {
	b, fn := boxOf(userData)
	f := fn.(func(string, int32) bool)
	return b.guard(func() bool { return f(C.GoStringN(piece, C.int(n)), int32(token)) })
}

//export goProgressCallback
func goProgressCallback(what *C.char, done, total C.uint64_t, userData unsafe.Pointer) C.int {
	b, fn := boxOf(userData)
	f := fn.(func(string, uint64, uint64) bool)
	return b.guard(func() bool { return f(C.GoString(what), uint64(done), uint64(total)) })
}

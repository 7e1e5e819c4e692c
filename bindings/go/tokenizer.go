// tokenizer.go - Tokenizer (tokenizer.json + tokenizer_config.json) and TokenStream
// (incremental, UTF-8 safe decoding).
package loratune

/*
#include <stdlib.h>
#include "loratune.h"
*/
import "C"

import (
	"runtime"
	"unsafe"
)

// Tokenizer owns an lt_tokenizer.
type Tokenizer struct {
	p    *C.lt_tokenizer
	deps deps
}

// LoadTokenizer reads tokenizer.json (+ tokenizer_config.json, generation_config.json) in dir.
func LoadTokenizer(dir string) (*Tokenizer, error) {
	if err := LibraryError(); err != nil {
		return nil, err
	}
	cs := cstr(dir)
	defer C.free(unsafe.Pointer(cs))
	t := &Tokenizer{}
	if _, err := call("lt_tokenizer_load", func() C.lt_status { return C.lt_tokenizer_load(cs, &t.p) }); err != nil {
		return nil, err
	}
	runtime.SetFinalizer(t, (*Tokenizer).Close)
	return t, nil
}

// Close frees the tokenizer after closing the datasets, streams and exporters using it.
func (t *Tokenizer) Close() {
	if t == nil || t.p == nil {
		return
	}
	t.deps.closeAll()
	C.lt_tokenizer_free(t.p)
	t.p = nil
	runtime.SetFinalizer(t, nil)
}

func (t *Tokenizer) handle(name string) (*C.lt_tokenizer, error) {
	if t == nil || t.p == nil {
		return nil, newError(ErrState, name, "the tokenizer is closed")
	}
	return t.p, nil
}

// Encode turns UTF-8 text into ids (addSpecial: what the post-processor adds).
func (t *Tokenizer) Encode(text string, addSpecial bool) ([]int32, error) {
	h, err := t.handle("lt_tokenizer_encode")
	if err != nil {
		return nil, err
	}
	cs := C.CString(text)
	defer C.free(unsafe.Pointer(cs))
	capacity := len(text) + 16
	for i := 0; i < 3; i++ {
		ids := make([]int32, capacity)
		var n C.size_t
		st, err := call("lt_tokenizer_encode", func() C.lt_status {
			return C.lt_tokenizer_encode(h, cs, C.size_t(len(text)), boolInt(addSpecial), int32Ptr(ids), C.size_t(capacity), &n)
		})
		if Status(st) == ErrBufferTooSmall && int(n) > capacity {
			capacity = int(n)
			continue
		}
		if err != nil {
			return nil, err
		}
		return ids[:int(n)], nil
	}
	return nil, newError(ErrInternal, "lt_tokenizer_encode", "the needed buffer size kept growing")
}

// Decode turns ids into UTF-8 text.
func (t *Tokenizer) Decode(ids []int32, skipSpecial bool) (string, error) {
	h, err := t.handle("lt_tokenizer_decode")
	if err != nil {
		return "", err
	}
	s, err := callString("lt_tokenizer_decode", 16*len(ids)+16, func(buf *C.char, capacity C.size_t, n *C.size_t) C.lt_status {
		return C.lt_tokenizer_decode(h, int32Ptr(ids), C.size_t(len(ids)), boolInt(skipSpecial), buf, capacity, n)
	})
	runtime.KeepAlive(ids)
	return s, err
}

// VocabSize is the number of tokens the tokenizer knows.
func (t *Tokenizer) VocabSize() int {
	if t == nil || t.p == nil {
		return 0
	}
	return int(C.lt_tokenizer_vocab_size(t.p))
}

// TokenToID returns the id of a token string, or -1.
func (t *Tokenizer) TokenToID(token string) int32 {
	if t == nil || t.p == nil {
		return -1
	}
	cs := cstr(token)
	defer C.free(unsafe.Pointer(cs))
	return int32(C.lt_tokenizer_token_to_id(t.p, cs))
}

// IDToToken returns the vocabulary string of id (false when there is none).
func (t *Tokenizer) IDToToken(id int32) (string, bool) {
	if t == nil || t.p == nil {
		return "", false
	}
	s := C.lt_tokenizer_id_to_token(t.p, C.int32_t(id))
	if s == nil {
		return "", false
	}
	return C.GoString(s), true
}

// EOSToken is the EOS token's text ("<|im_end|>"), or "".
func (t *Tokenizer) EOSToken() string {
	if t == nil || t.p == nil {
		return ""
	}
	s := C.lt_tokenizer_eos_token(t.p)
	if s == nil {
		return ""
	}
	return C.GoString(s)
}

// SpecialTokens mirrors lt_special_tokens (-1 for an absent id).
type SpecialTokens struct {
	BOS, EOS, Pad int32
	StopIDs       []int32
}

// SpecialTokens reports bos / eos / pad and the stop ids.
func (t *Tokenizer) SpecialTokens() (SpecialTokens, error) {
	h, err := t.handle("lt_tokenizer_special_tokens")
	if err != nil {
		return SpecialTokens{}, err
	}
	var s C.lt_special_tokens
	s.struct_size = C.uint32_t(C.sizeof_lt_special_tokens)
	if _, err := call("lt_tokenizer_special_tokens", func() C.lt_status { return C.lt_tokenizer_special_tokens(h, &s) }); err != nil {
		return SpecialTokens{}, err
	}
	out := SpecialTokens{BOS: int32(s.bos_id), EOS: int32(s.eos_id), Pad: int32(s.pad_id)}
	for i := 0; i < int(s.n_stop_ids) && i < len(s.stop_ids); i++ {
		out.StopIDs = append(out.StopIDs, int32(s.stop_ids[i]))
	}
	return out, nil
}

// ChatMessage is one message of a conversation.
type ChatMessage struct{ Role, Content string }

// ApplyChatTemplate renders the tokenizer's chat template (or templateOverride when not "").
func (t *Tokenizer) ApplyChatTemplate(messages []ChatMessage, addGenerationPrompt bool, templateOverride string) (string, error) {
	h, err := t.handle("lt_tokenizer_apply_chat_template")
	if err != nil {
		return "", err
	}
	n := len(messages)
	if n == 0 {
		n = 1
	}
	arr := (*C.lt_chat_message)(C.calloc(C.size_t(n), C.size_t(C.sizeof_lt_chat_message)))
	defer C.free(unsafe.Pointer(arr))
	msgs := unsafe.Slice(arr, n)
	var strs []*C.char
	defer func() { freeAll(strs) }()
	for i, m := range messages {
		msgs[i].role, msgs[i].content = cstr(m.Role), cstr(m.Content)
		strs = append(strs, msgs[i].role, msgs[i].content)
	}
	tmpl := cstrOrNil(templateOverride)
	strs = append(strs, tmpl)
	return callString("lt_tokenizer_apply_chat_template", 4096, func(buf *C.char, capacity C.size_t, nn *C.size_t) C.lt_status {
		return C.lt_tokenizer_apply_chat_template(h, arr, C.size_t(len(messages)), boolInt(addGenerationPrompt), tmpl, buf, capacity, nn)
	})
}

// TokenStream turns ids pushed one by one into complete UTF-8 pieces.
type TokenStream struct {
	p   *C.lt_token_stream
	tok *Tokenizer
}

// NewTokenStream starts a stream over t (which must outlive it).
func (t *Tokenizer) NewTokenStream(skipSpecial bool) (*TokenStream, error) {
	h, err := t.handle("lt_token_stream_new")
	if err != nil {
		return nil, err
	}
	s := &TokenStream{tok: t}
	if _, err := call("lt_token_stream_new", func() C.lt_status { return C.lt_token_stream_new(h, boolInt(skipSpecial), &s.p) }); err != nil {
		return nil, err
	}
	t.deps.add(s)
	runtime.SetFinalizer(s, (*TokenStream).Close)
	return s, nil
}

// Close frees the stream.
func (s *TokenStream) Close() {
	if s == nil || s.p == nil {
		return
	}
	C.lt_token_stream_free(s.p)
	s.p = nil
	runtime.SetFinalizer(s, nil)
}

// Push adds one id and returns the text it completed (maybe "").
func (s *TokenStream) Push(id int32) (string, error) {
	if s == nil || s.p == nil {
		return "", newError(ErrState, "lt_token_stream_push", "the stream is closed")
	}
	return callString("lt_token_stream_push", 64, func(buf *C.char, capacity C.size_t, n *C.size_t) C.lt_status {
		return C.lt_token_stream_push(s.p, C.int32_t(id), buf, capacity, n)
	})
}

// Flush returns what is left and resets the stream.
func (s *TokenStream) Flush() (string, error) {
	if s == nil || s.p == nil {
		return "", newError(ErrState, "lt_token_stream_flush", "the stream is closed")
	}
	return callString("lt_token_stream_flush", 64, func(buf *C.char, capacity C.size_t, n *C.size_t) C.lt_status {
		return C.lt_token_stream_flush(s.p, buf, capacity, n)
	})
}

// loratune_test.go - the Go binding's suite: the library check, errors, and the whole job on a
// tiny model (load, tokenize, a dataset, 5 steps with a recording callback and one that stops
// early, streaming generation, the adapter, a GGUF). LT_TINY_MODEL names the model folder
// (with tokenizer files); LT_REPO_ROOT the repository (for the bundled data).
package loratune

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLibraryMatches(t *testing.T) {
	if err := LibraryError(); err != nil {
		t.Fatalf("the library does not match the bindings: %v", err)
	}
	if VersionNumber()/10000 != BindingVersionMajor {
		t.Fatalf("major version %d", VersionNumber()/10000)
	}
	if !strings.HasPrefix(Version(), "0.") {
		t.Fatalf("version %q", Version())
	}
}

func TestCheckLibraryRefusesMismatch(t *testing.T) {
	real := func(name string) uint64 { return StructSize(name) }
	if err := CheckLibrary(VersionNumber(), real); err != nil {
		t.Fatalf("the real library is refused: %v", err)
	}
	err := CheckLibrary(10000*(BindingVersionMajor+1), real)
	var e *Error
	if !errors.As(err, &e) || e.Status != ErrVersion || !strings.Contains(e.Message, "major") {
		t.Fatalf("a different major version was not refused clearly: %v", err)
	}
	fake := func(name string) uint64 {
		if name == "lt_train_params" {
			return StructSize(name) + 8
		}
		return StructSize(name)
	}
	err = CheckLibrary(VersionNumber(), fake)
	if !errors.As(err, &e) || e.Status != ErrVersion || !strings.Contains(e.Message, "lt_train_params") {
		t.Fatalf("a different struct size was not refused clearly: %v", err)
	}
}

func TestErrorCarriesStatusAndMessage(t *testing.T) {
	_, err := LoadTokenizer("/nonexistent/loratune-tokenizer")
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want *Error, got %v", err)
	}
	if e.Status >= 0 || e.Message == "" || !strings.Contains(err.Error(), e.Status.String()) {
		t.Fatalf("error without status or message: %#v", e)
	}
	if !strings.Contains(e.Message, "nonexistent") {
		t.Fatalf("the message does not name the path: %q", e.Message)
	}
}

func tinyModel(t *testing.T) string {
	dir := os.Getenv("LT_TINY_MODEL")
	if dir == "" {
		t.Skip("LT_TINY_MODEL is not set (tests/bindings/run_go.sh makes the tiny model)")
	}
	return dir
}

func dataFile(t *testing.T) string {
	root := os.Getenv("LT_REPO_ROOT")
	if root == "" {
		root = "../.."
	}
	return filepath.Join(root, "assets", "ruozhiba", "ruozhiba_qa.json")
}

func TestWholeJob(t *testing.T) {
	dir := tinyModel(t)
	out := t.TempDir()

	tok, err := LoadTokenizer(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	text := "只剩一个心脏了还能活吗？ hello"
	ids, err := tok.Encode(text, false)
	if err != nil || len(ids) == 0 {
		t.Fatalf("encode: %v %v", ids, err)
	}
	back, err := tok.Decode(ids, false)
	if err != nil || back != text {
		t.Fatalf("decode: %q %v", back, err)
	}
	if tok.EOSToken() != "<|im_end|>" {
		t.Fatalf("eos %q", tok.EOSToken())
	}

	mp := DefaultModelParams()
	mp.Device = DeviceCPU
	model, err := LoadModel(dir, &mp)
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close()
	lp := DefaultLoraParams()
	lp.R, lp.Alpha = 8, 16
	if err := model.AddLora(&lp); err != nil {
		t.Fatal(err)
	}
	info, err := model.Info()
	if err != nil || info.NLoraParams == 0 || info.Device != DeviceCPU {
		t.Fatalf("info: %+v %v", info, err)
	}

	dp := DefaultDatasetParams()
	dp.MaxSeqLen = 64
	ds, err := LoadDataset(dataFile(t), tok, &dp)
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	if ds.Len() != 1475 {
		t.Fatalf("dataset has %d records, want 1475", ds.Len())
	}
	rid, rlab, err := ds.Get(0)
	if err != nil || len(rid) == 0 || len(rid) != len(rlab) {
		t.Fatalf("record 0: %v", err)
	}

	// 5 steps, every loss recorded by the callback and matching what Step returned.
	var losses []float64
	tp := DefaultTrainParams()
	tp.BatchSize, tp.GradAccum, tp.MaxSteps, tp.WarmupSteps, tp.LR = 2, 1, 5, 1, 1e-3
	tp.OnStep = func(m Metrics) bool { losses = append(losses, m.Loss); return false }
	tr, err := NewTrainer(model, ds, &tp)
	if err != nil {
		t.Fatal(err)
	}
	var stepped []float64
	for {
		m, st, err := tr.Step()
		if err != nil {
			t.Fatal(err)
		}
		if st == Done {
			break
		}
		stepped = append(stepped, m.Loss)
		if m.Step != int64(len(stepped)) || m.MaxSteps != 5 {
			t.Fatalf("step %d of %d after %d steps", m.Step, m.MaxSteps, len(stepped))
		}
	}
	tr.Close()
	if len(losses) != 5 || len(stepped) != 5 {
		t.Fatalf("recorded %d losses, stepped %d, want 5", len(losses), len(stepped))
	}
	for i := range losses {
		if losses[i] != stepped[i] || !(losses[i] > 0) {
			t.Fatalf("loss %d: callback %g, step %g", i, losses[i], stepped[i])
		}
	}

	// A callback that stops after step 2.
	var last int64
	tp.OnStep = func(m Metrics) bool { last = m.Step; return m.Step >= 2 }
	tr2, err := NewTrainer(model, ds, &tp)
	if err != nil {
		t.Fatal(err)
	}
	st, err := tr2.Run()
	if err != nil || st != Stopped || last != 2 {
		t.Fatalf("run: %v %v after step %d (want Stopped after step 2)", st, err, last)
	}
	tr2.Close()

	// Streaming generation: the pieces put together are the decoded ids.
	prompt, _ := tok.Encode("海绵宝宝的书法是不是叫做海绵体", false)
	var pieces []string
	gp := DefaultGenerateParams()
	gp.MaxNewTokens = 12
	gp.Tokenizer = tok
	gp.OnText = func(piece string, token int32) bool { pieces = append(pieces, piece); return false }
	newIDs, err := model.Generate(prompt, &gp)
	if err != nil {
		t.Fatal(err)
	}
	if len(newIDs) == 0 || len(newIDs) > 12 {
		t.Fatalf("generated %d ids", len(newIDs))
	}
	whole, _ := tok.Decode(newIDs, false)
	if strings.Join(pieces, "") != whole {
		t.Fatalf("streamed %q, decoded %q", strings.Join(pieces, ""), whole)
	}
	// A stream callback that stops after the first piece.
	n := 0
	gp.OnText = func(string, int32) bool { n++; return true }
	if _, err := model.Generate(prompt, &gp); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("the stream went on after stop: %d pieces", n)
	}
	// Several prompts at once: each as generated alone (greedy), prompt i sampled with Seed + i.
	prompt2, _ := tok.Encode("你好", false)
	bp := DefaultGenerateParams()
	bp.MaxNewTokens, bp.StopIDs = 5, []int32{-1}
	for _, sample := range []bool{false, true} {
		bp.DoSample, bp.Seed = sample, 21
		rows, err := model.GenerateBatch([][]int32{prompt, prompt2}, &bp)
		if err != nil || len(rows) != 2 {
			t.Fatalf("GenerateBatch: %v (%d rows)", err, len(rows))
		}
		for i, pr := range [][]int32{prompt, prompt2} {
			one := bp
			one.Seed = bp.Seed + uint64(i)
			alone, err := model.Generate(pr, &one)
			if err != nil || !reflect.DeepEqual(alone, rows[i]) {
				t.Fatalf("sample=%v prompt %d: batch %v, alone %v (%v)", sample, i, rows[i], alone, err)
			}
		}
	}
	gp.OnText = func(string, int32) bool { return false }
	if _, err := model.GenerateBatch([][]int32{prompt, prompt2}, &gp); err == nil ||
		!strings.Contains(err.Error(), "one prompt") {
		t.Fatalf("OnText with two prompts: %v", err)
	}

	// The adapter, as PEFT writes it.
	adapter := filepath.Join(out, "lora_model")
	if err := model.SaveAdapter(adapter, true); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"adapter_config.json", "adapter_model.safetensors"} {
		if _, err := os.Stat(filepath.Join(adapter, f)); err != nil {
			t.Fatal(err)
		}
	}
	// Saving again without overwrite is refused with the library's message.
	err = model.SaveAdapter(adapter, false)
	var e *Error
	if !errors.As(err, &e) || e.Status != ErrExists {
		t.Fatalf("overwrite=false: %v", err)
	}

	// GGUF q4_k_m (the tiny model's rows may be too narrow for k-quants: q8_0 then).
	ep := DefaultExportParams()
	ep.Overwrite = true
	gguf := filepath.Join(out, "model.gguf")
	ex, err := NewExporter(model, tok, &ep)
	if err != nil {
		t.Fatal(err)
	}
	if err := ex.Write(gguf); err != nil {
		t.Fatal(err)
	}
	ex.Close()
	head := make([]byte, 4)
	f, err := os.Open(gguf)
	if err != nil {
		t.Fatal(err)
	}
	f.Read(head)
	f.Close()
	if !bytes.Equal(head, []byte("GGUF")) {
		t.Fatalf("not a GGUF file: %q", head)
	}
}

func TestClosedHandles(t *testing.T) {
	dir := tinyModel(t)
	tok, err := LoadTokenizer(dir)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := NewDataset(tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ds.AddAlpaca("问", "", "答"); err != nil {
		t.Fatal(err)
	}
	tok.Close() // closes the dataset first
	var e *Error
	if err := ds.AddText("x"); !errors.As(err, &e) || e.Status != ErrState {
		t.Fatalf("a closed dataset was used: %v", err)
	}
	tok.Close()
	ds.Close()
}

func TestBadRecordError(t *testing.T) {
	dir := tinyModel(t)
	tok, err := LoadTokenizer(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	ds, err := NewDataset(tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	err = ds.AddJSON(`{"instruction": "x", "output": `)
	var e *Error
	if !errors.As(err, &e) || e.Status >= 0 || e.Message == "" {
		t.Fatalf("a malformed record was accepted: %v", err)
	}
}

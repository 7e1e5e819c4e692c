//! The Rust binding's suite: the load-time check, errors, and the whole job on the tiny model
//! (LT_TINY_MODEL): load, tokenize, a dataset, 5 steps with a recording callback and one that
//! stops early, streaming generation, the adapter, a GGUF.
use loratune::*;
use std::cell::RefCell;
use std::path::PathBuf;

fn tiny_model() -> Option<PathBuf> {
    match std::env::var("LT_TINY_MODEL") {
        Ok(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => {
            eprintln!("skipped: LT_TINY_MODEL is not set (tests/bindings/run_rust.sh makes the tiny model)");
            None
        }
    }
}

fn data_file() -> PathBuf {
    let root = std::env::var("LT_REPO_ROOT").map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.."));
    root.join("assets/ruozhiba/ruozhiba_qa.json")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("loratune-rs-{}-{}", name, std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn library_matches() {
    library_check().expect("the library does not match the bindings");
    assert!(version().starts_with(&format!("{}.", BINDING_VERSION_MAJOR)));
}

#[test]
fn mismatched_library_is_refused() {
    check_library(version_number(), struct_size).unwrap();
    let e = check_library((BINDING_VERSION_MAJOR + 1) * 10000, struct_size).unwrap_err();
    assert_eq!(e.status, status::LT_ERR_VERSION);
    assert!(e.message.contains(&format!("major {}", BINDING_VERSION_MAJOR + 1)), "{e}");
    let fake = |name: &str| struct_size(name) + if name == "lt_generate_params" { 8 } else { 0 };
    let e = check_library(version_number(), fake).unwrap_err();
    assert_eq!(e.status, status::LT_ERR_VERSION);
    assert!(e.message.contains("lt_generate_params"), "{e}");
}

#[test]
fn errors_carry_status_and_message() {
    let e = Tokenizer::load("/nonexistent/loratune-tok").err().expect("loading a missing folder succeeded");
    assert!(e.status < 0);
    assert!(e.message.contains("nonexistent"), "{e}");
    assert!(e.to_string().contains(&e.status_name()));
    let e = parse_targets("q_proj,not_a_module").unwrap_err();
    assert_eq!(e.status, status::LT_ERR_INVALID_ARGUMENT);
    assert!(e.message.contains("not_a_module"), "{e}");
}

#[test]
fn whole_job() {
    let dir = match tiny_model() {
        Some(d) => d,
        None => return,
    };
    let out = temp_dir("job");
    let tok = Tokenizer::load(&dir).unwrap();
    let text = "只剩一个心脏了还能活吗？ hello";
    let ids = tok.encode(text, false).unwrap();
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    assert_eq!(tok.eos_token().as_deref(), Some("<|im_end|>"));
    let mut st = tok.stream(false).unwrap();
    let mut streamed = String::new();
    for &id in &ids {
        streamed += &st.push(id).unwrap();
    }
    streamed += &st.flush().unwrap();
    drop(st);
    assert_eq!(streamed, text);

    let mut model = Model::load(&dir, &ModelParams { device: LT_DEVICE_CPU, ..Default::default() }).unwrap();
    model.add_lora(&LoraParams { r: 8, alpha: 16.0, ..Default::default() }).unwrap();
    let info = model.info().unwrap();
    assert_eq!(info.model_type, "qwen2");
    assert!(info.n_lora_params > 0);

    let ds = Dataset::load(data_file(), &tok, &DatasetParams { max_seq_len: 64, ..Default::default() }).unwrap();
    assert_eq!(ds.len(), 1475);
    let (rid, rlab) = ds.get(0).unwrap();
    assert_eq!(rid.len(), rlab.len());

    let tp = TrainParams { batch_size: 2, grad_accum: 1, max_steps: 5, warmup_steps: 1, lr: 1e-3, ..Default::default() };
    let recorded = RefCell::new(Vec::new());
    let mut stepped = Vec::new();
    {
        let mut tr = Trainer::new(&model, &ds, &tp, Some(Box::new(|m: &Metrics| {
            recorded.borrow_mut().push(m.loss);
            false
        }))).unwrap();
        loop {
            match tr.step().unwrap() {
                Step::Took(m) => {
                    stepped.push(m.loss);
                    assert_eq!(m.step as usize, stepped.len());
                    assert_eq!(m.max_steps, 5);
                }
                Step::Stopped(_) => panic!("nothing asked to stop"),
                Step::Done => break,
            }
        }
    }
    assert_eq!(stepped.len(), 5);
    assert_eq!(*recorded.borrow(), stepped);
    assert!(stepped.iter().all(|l| *l > 0.0));

    let mut last = 0;
    {
        let mut tr = Trainer::new(&model, &ds, &tp, Some(Box::new(|m: &Metrics| {
            last = m.step;
            m.step >= 2
        }))).unwrap();
        assert!(tr.run().unwrap(), "the callback's stop was not reported");
    }
    assert_eq!(last, 2);

    let prompt = tok.encode("海绵宝宝的书法是不是叫做海绵体", false).unwrap();
    let gp = GenerateParams { max_new_tokens: 12, ..Default::default() };
    let mut pieces = String::new();
    let mut on_text = |piece: &str, _token: i32| {
        pieces.push_str(piece);
        false
    };
    let new_ids = model.generate(&prompt, &gp, Some(&tok), Some(&mut on_text)).unwrap();
    assert!(!new_ids.is_empty() && new_ids.len() <= 12);
    assert_eq!(pieces, tok.decode(&new_ids, false).unwrap());
    // several prompts at once: each as generated alone (greedy; sampling with seed + i)
    let prompt2 = tok.encode("你好", false).unwrap();
    for sample in [false, true] {
        let bp = GenerateParams { max_new_tokens: 5, do_sample: sample, seed: 21, stop_ids: Some(vec![-1]),
                                  ..Default::default() };
        let rows = model.generate_batch(&[&prompt, &prompt2], &bp, None).unwrap();
        for (i, pr) in [&prompt, &prompt2].iter().enumerate() {
            let one = GenerateParams { seed: 21 + i as u64, ..bp.clone() };
            assert_eq!(rows[i], model.generate(pr, &one, None, None).unwrap(), "sample={sample} prompt {i}");
        }
    }

    let adapter = out.join("lora_model");
    model.save_adapter(&adapter, true).unwrap();
    assert!(adapter.join("adapter_config.json").exists());
    assert!(adapter.join("adapter_model.safetensors").exists());
    let e = model.save_adapter(&adapter, false).unwrap_err();
    assert_eq!(e.status, status::LT_ERR_EXISTS, "{e}");

    let gguf = out.join("model.gguf");
    let mut ex = Exporter::new(&model, Some(&tok), &ExportParams { overwrite: true, ..Default::default() }).unwrap();
    ex.write(&gguf).unwrap();
    drop(ex);
    let head = std::fs::read(&gguf).unwrap();
    assert_eq!(&head[..4], b"GGUF");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn callback_panic_is_resumed() {
    let dir = match tiny_model() {
        Some(d) => d,
        None => return,
    };
    let tok = Tokenizer::load(&dir).unwrap();
    let mut model = Model::load(&dir, &ModelParams { device: LT_DEVICE_CPU, max_seq_len: 128, ..Default::default() }).unwrap();
    model.add_lora(&LoraParams { r: 4, ..Default::default() }).unwrap();
    let mut ds = Dataset::new(&tok, &DatasetParams { max_seq_len: 64, ..Default::default() }).unwrap();
    ds.add_alpaca("问题", "", "回答").unwrap();
    ds.add_json(r#"{"instruction": "第二个", "input": "", "output": "答"}"#).unwrap();
    let e = ds.add_json(r#"{"instruction": "x", "output": "#).unwrap_err();
    assert!(e.status < 0 && !e.message.is_empty());
    let tp = TrainParams { batch_size: 1, grad_accum: 1, max_steps: 3, ..Default::default() };
    let mut tr = Trainer::new(&model, &ds, &tp, Some(Box::new(|m: &Metrics| panic!("boom at step {}", m.step)))).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tr.step()));
    let msg = r.unwrap_err().downcast::<String>().map(|s| *s).unwrap_or_default();
    assert_eq!(msg, "boom at step 1");
}

#[test]
fn model_and_tokenizer_are_send() {
    fn is_send<T: Send>() {}
    is_send::<Model>();
    is_send::<Tokenizer>();
}

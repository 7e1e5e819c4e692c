//! Safe Rust API of libloratune (include/loratune.h): LoRA fine-tuning of Hugging Face causal
//! language models on a frozen 4-bit base.
//!
//! Handles free themselves on Drop. What the C API says must outlive what is spelled in
//! lifetimes: a `Dataset<'t>` borrows its `Tokenizer`, a `Trainer<'a>` its `Model` and
//! `Dataset`, an `Exporter<'a>` its `Model`. Failures are `Error { status, message }` with the
//! library's `lt_last_error()` text. Callbacks are closures kept alive by the handle that calls
//! them; a panic inside one stops the C call and is resumed once the call is back.
//!
//! Threads: `Model` and `Tokenizer` are `Send` (a handle may move to another thread; the
//! library keeps no thread-bound state in them); nothing is `Sync`, since the library does not
//! allow two calls on one handle at once. Callbacks must not call into the handle that runs them.

use loratune_sys as sys;
use std::any::Any;
use std::ffi::{c_void, CStr, CString};
use std::marker::PhantomData;
use std::os::raw::{c_char, c_int};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::Path;
use std::ptr::{null, null_mut, NonNull};

pub use sys::{
    LT_DATA_ALPACA, LT_DATA_AUTO, LT_DATA_CHAT, LT_DATA_TEXT, LT_DATA_TOKENS, LT_DEVICE_AUTO, LT_DEVICE_CPU,
    LT_DEVICE_CUDA, LT_DTYPE_AUTO, LT_DTYPE_BF16, LT_DTYPE_F16, LT_DTYPE_F32, LT_EXPORT_GGUF, LT_EXPORT_GGUF_LORA,
    LT_EXPORT_MERGED, LT_EXPORT_PEFT, LT_LOSS_ALL, LT_LOSS_RESPONSE, LT_QUANT_NF4, LT_QUANT_NONE, LT_TARGET_ALL,
};

/// Status values (lt_status).
pub mod status {
    pub use loratune_sys::{
        LT_DONE, LT_ERR_BUFFER_TOO_SMALL, LT_ERR_CUDA, LT_ERR_DATA, LT_ERR_EXISTS, LT_ERR_FORMAT, LT_ERR_INTERNAL,
        LT_ERR_INVALID_ARGUMENT, LT_ERR_IO, LT_ERR_NCCL, LT_ERR_NOT_FOUND, LT_ERR_NONFINITE, LT_ERR_NO_DEVICE,
        LT_ERR_OUT_OF_MEMORY,
        LT_ERR_STATE, LT_ERR_UNSUPPORTED, LT_ERR_UTF8, LT_ERR_VERSION, LT_OK, LT_STOPPED,
    };
}

// ---- errors -----------------------------------------------------------------------------------

/// A failed loratune call: the status and the library's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub status: i32,
    pub message: String,
    pub call: &'static str,
}

impl Error {
    fn new(status: i32, call: &'static str, message: impl Into<String>) -> Self {
        Error { status, message: message.into(), call }
    }
    /// lt_status_string's name of the status.
    pub fn status_name(&self) -> String {
        status_string(self.status)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.call, self.status_name(), self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// The static English name of a status.
pub fn status_string(status: i32) -> String {
    unsafe { CStr::from_ptr(sys::lt_status_string(status)) }.to_string_lossy().into_owned()
}

fn last_error() -> String {
    let p = unsafe { sys::lt_last_error() };
    if p.is_null() {
        String::new()
    } else {
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// A status into Ok(status) (OK, DONE, STOPPED) or Err with lt_last_error's text.
fn check(status: i32, call: &'static str) -> Result<i32> {
    if status < 0 {
        Err(Error::new(status, call, last_error()))
    } else {
        Ok(status)
    }
}

fn cstring(s: &str, call: &'static str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::new(sys::LT_ERR_INVALID_ARGUMENT, call, format!("{s:?} contains a NUL byte")))
}

fn cpath(p: &Path, call: &'static str) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::new(sys::LT_ERR_INVALID_ARGUMENT, call, format!("{} contains a NUL byte", p.display())))
}

fn opt_cstring(s: &Option<String>, call: &'static str) -> Result<Option<CString>> {
    s.as_deref().map(|s| cstring(s, call)).transpose()
}

fn ptr_of(s: &Option<CString>) -> *const c_char {
    s.as_ref().map_or(null(), |c| c.as_ptr())
}

/// The two-call pattern for text: fn(buf, cap, &len), growing to what the library asks.
fn call_text(call: &'static str, initial: usize, mut f: impl FnMut(*mut c_char, usize, &mut usize) -> i32) -> Result<String> {
    let mut cap = initial.max(16);
    for _ in 0..4 {
        let mut buf = vec![0u8; cap];
        let mut n = 0usize;
        let st = f(buf.as_mut_ptr() as *mut c_char, cap, &mut n);
        if st == sys::LT_ERR_BUFFER_TOO_SMALL && n >= cap {
            cap = n + 1;
            continue;
        }
        check(st, call)?;
        buf.truncate(n);
        return String::from_utf8(buf).map_err(|e| Error::new(sys::LT_ERR_UTF8, call, e.to_string()));
    }
    Err(Error::new(sys::LT_ERR_INTERNAL, call, "the needed buffer size kept growing"))
}

// ---- the load-time check ------------------------------------------------------------------------

/// The major version these bindings were written for.
pub const BINDING_VERSION_MAJOR: u32 = sys::LT_VERSION_MAJOR;

/// Refuses a library these bindings do not match: `version_number` is lt_version_number's value,
/// `struct_size` gives the library's size of a struct by name.
pub fn check_library(version_number: u32, struct_size: impl Fn(&str) -> usize) -> Result<()> {
    let major = version_number / 10000;
    if major != BINDING_VERSION_MAJOR {
        return Err(Error::new(sys::LT_ERR_VERSION, "check_library", format!(
            "libloratune is version {}.{}.{} (major {major}) but these Rust bindings were written for major {}; \
             use bindings that match the library",
            major, version_number / 100 % 100, version_number % 100, BINDING_VERSION_MAJOR)));
    }
    for (name, ours, _) in sys::STRUCTS {
        let theirs = struct_size(name);
        if theirs != *ours {
            return Err(Error::new(sys::LT_ERR_VERSION, "check_library", format!(
                "struct {name} is {theirs} bytes in the library but {ours} bytes in these bindings; the library and \
                 the bindings come from different versions of loratune.h")));
        }
    }
    Ok(())
}

/// The loaded library's struct size by name (0 when unknown).
pub fn struct_size(name: &str) -> usize {
    CString::new(name).map(|c| unsafe { sys::lt_struct_size(c.as_ptr()) }).unwrap_or(0)
}

/// The check of the loaded library against these bindings; every constructor returns its error.
pub fn library_check() -> Result<()> {
    check_library(version_number(), struct_size)
}

/// "MAJOR.MINOR.PATCH" of the loaded library.
pub fn version() -> String {
    unsafe { CStr::from_ptr(sys::lt_version()) }.to_string_lossy().into_owned()
}

pub fn version_number() -> u32 {
    unsafe { sys::lt_version_number() }
}

pub fn cuda_device_count() -> i32 {
    unsafe { sys::lt_cuda_device_count() }
}

/// "q_proj,k_proj,..." / "all" into an LT_TARGET_* mask.
pub fn parse_targets(names: &str) -> Result<u32> {
    let c = cstring(names, "lt_lora_targets_parse")?;
    let mut mask = 0u32;
    check(unsafe { sys::lt_lora_targets_parse(c.as_ptr(), &mut mask) }, "lt_lora_targets_parse")?;
    Ok(mask)
}

fn parse_with(name: &str, call: &'static str, f: unsafe extern "C" fn(*const c_char, *mut i32) -> i32) -> Result<i32> {
    let c = cstring(name, call)?;
    let mut out = 0i32;
    check(unsafe { f(c.as_ptr(), &mut out) }, call)?;
    Ok(out)
}

/// A built-in prompt template's text ("alpaca-zh", "alpaca", "chatml").
pub fn template_builtin(name: &str) -> Option<String> {
    let c = CString::new(name).ok()?;
    let p = unsafe { sys::lt_template_builtin(c.as_ptr()) };
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

// ---- callbacks --------------------------------------------------------------------------------

/// A Rust closure given to C as user_data, with the panic it may raise.
struct Callback<F: ?Sized> {
    panic: Option<Box<dyn Any + Send>>,
    f: Box<F>,
}

impl<F: ?Sized> Callback<F> {
    fn run(&mut self, call: impl FnOnce(&mut F) -> bool) -> c_int {
        if self.panic.is_some() {
            return 1;
        }
        match catch_unwind(AssertUnwindSafe(|| call(&mut self.f))) {
            Ok(stop) => stop as c_int,
            Err(p) => {
                self.panic = Some(p);
                1
            }
        }
    }
    fn resume(&mut self) {
        if let Some(p) = self.panic.take() {
            resume_unwind(p);
        }
    }
}

type StepFn<'a> = dyn FnMut(&Metrics) -> bool + 'a;
type TextFn<'a> = dyn FnMut(&str, i32) -> bool + 'a;

unsafe extern "C" fn step_tramp(m: *const sys::lt_metrics, user_data: *mut c_void) -> c_int {
    let cb = &mut *(user_data as *mut Callback<StepFn<'static>>);
    let metrics = Metrics::from(&*m);
    cb.run(|f| f(&metrics))
}

unsafe extern "C" fn text_tramp(piece: *const c_char, len: usize, token: i32, user_data: *mut c_void) -> c_int {
    let cb = &mut *(user_data as *mut Callback<TextFn<'static>>);
    let bytes = std::slice::from_raw_parts(piece as *const u8, len);
    let text = String::from_utf8_lossy(bytes);
    cb.run(|f| f(&text, token))
}

// ---- tokenizer --------------------------------------------------------------------------------

/// tokenizer.json (+ tokenizer_config.json, generation_config.json) of a folder.
pub struct Tokenizer {
    ptr: NonNull<sys::lt_tokenizer>,
}

// SAFETY: an lt_tokenizer is plain heap data with no tie to the thread that made it.
unsafe impl Send for Tokenizer {}

/// bos / eos / pad (None when absent) and the ids that stop generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos_id: Option<i32>,
    pub eos_id: Option<i32>,
    pub pad_id: Option<i32>,
    pub stop_ids: Vec<i32>,
}

impl Tokenizer {
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        library_check()?;
        let c = cpath(dir.as_ref(), "lt_tokenizer_load")?;
        let mut p = null_mut();
        check(unsafe { sys::lt_tokenizer_load(c.as_ptr(), &mut p) }, "lt_tokenizer_load")?;
        Ok(Tokenizer { ptr: NonNull::new(p).expect("lt_tokenizer_load returned OK and NULL") })
    }

    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<i32>> {
        let mut cap = text.len() + 16;
        let c = cstring(text, "lt_tokenizer_encode")?;
        for _ in 0..3 {
            let mut ids = vec![0i32; cap];
            let mut n = 0usize;
            let st = unsafe {
                sys::lt_tokenizer_encode(self.ptr.as_ptr(), c.as_ptr(), text.len(), add_special as i32, ids.as_mut_ptr(),
                                         cap, &mut n)
            };
            if st == sys::LT_ERR_BUFFER_TOO_SMALL && n > cap {
                cap = n;
                continue;
            }
            check(st, "lt_tokenizer_encode")?;
            ids.truncate(n);
            return Ok(ids);
        }
        Err(Error::new(sys::LT_ERR_INTERNAL, "lt_tokenizer_encode", "the needed buffer size kept growing"))
    }

    pub fn decode(&self, ids: &[i32], skip_special: bool) -> Result<String> {
        call_text("lt_tokenizer_decode", 16 * ids.len() + 16, |buf, cap, n| unsafe {
            sys::lt_tokenizer_decode(self.ptr.as_ptr(), ids.as_ptr(), ids.len(), skip_special as i32, buf, cap, n)
        })
    }

    pub fn vocab_size(&self) -> i32 {
        unsafe { sys::lt_tokenizer_vocab_size(self.ptr.as_ptr()) }
    }

    pub fn token_to_id(&self, token: &str) -> Option<i32> {
        let c = CString::new(token).ok()?;
        let id = unsafe { sys::lt_tokenizer_token_to_id(self.ptr.as_ptr(), c.as_ptr()) };
        (id >= 0).then_some(id)
    }

    pub fn id_to_token(&self, id: i32) -> Option<String> {
        let p = unsafe { sys::lt_tokenizer_id_to_token(self.ptr.as_ptr(), id) };
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    pub fn eos_token(&self) -> Option<String> {
        let p = unsafe { sys::lt_tokenizer_eos_token(self.ptr.as_ptr()) };
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    pub fn special_tokens(&self) -> Result<SpecialTokens> {
        let mut s: sys::lt_special_tokens = unsafe { std::mem::zeroed() };
        s.struct_size = std::mem::size_of::<sys::lt_special_tokens>() as u32;
        check(unsafe { sys::lt_tokenizer_special_tokens(self.ptr.as_ptr(), &mut s) }, "lt_tokenizer_special_tokens")?;
        let opt = |v: i32| (v >= 0).then_some(v);
        let n = (s.n_stop_ids.max(0) as usize).min(s.stop_ids.len());
        Ok(SpecialTokens { bos_id: opt(s.bos_id), eos_id: opt(s.eos_id), pad_id: opt(s.pad_id),
                           stop_ids: s.stop_ids[..n].to_vec() })
    }

    /// Renders the chat template (or `template` when given) over (role, content) messages.
    pub fn apply_chat_template(&self, messages: &[(&str, &str)], add_generation_prompt: bool,
                               template: Option<&str>) -> Result<String> {
        const CALL: &str = "lt_tokenizer_apply_chat_template";
        let strs: Vec<(CString, CString)> =
            messages.iter().map(|(r, c)| Ok((cstring(r, CALL)?, cstring(c, CALL)?))).collect::<Result<_>>()?;
        let msgs: Vec<sys::lt_chat_message> =
            strs.iter().map(|(r, c)| sys::lt_chat_message { role: r.as_ptr(), content: c.as_ptr() }).collect();
        let tmpl = template.map(|t| cstring(t, CALL)).transpose()?;
        call_text(CALL, 4096, |buf, cap, n| unsafe {
            sys::lt_tokenizer_apply_chat_template(self.ptr.as_ptr(), msgs.as_ptr(), msgs.len(),
                                                  add_generation_prompt as i32, ptr_of(&tmpl), buf, cap, n)
        })
    }

    /// Incremental decoding: push ids, get complete UTF-8 pieces.
    pub fn stream(&self, skip_special: bool) -> Result<TokenStream<'_>> {
        let mut p = null_mut();
        check(unsafe { sys::lt_token_stream_new(self.ptr.as_ptr(), skip_special as i32, &mut p) }, "lt_token_stream_new")?;
        Ok(TokenStream { ptr: NonNull::new(p).unwrap(), _tok: PhantomData })
    }
}

impl Drop for Tokenizer {
    fn drop(&mut self) {
        unsafe { sys::lt_tokenizer_free(self.ptr.as_ptr()) }
    }
}

pub struct TokenStream<'t> {
    ptr: NonNull<sys::lt_token_stream>,
    _tok: PhantomData<&'t Tokenizer>,
}

impl TokenStream<'_> {
    pub fn push(&mut self, id: i32) -> Result<String> {
        call_text("lt_token_stream_push", 64, |buf, cap, n| unsafe {
            sys::lt_token_stream_push(self.ptr.as_ptr(), id, buf, cap, n)
        })
    }
    pub fn flush(&mut self) -> Result<String> {
        call_text("lt_token_stream_flush", 64, |buf, cap, n| unsafe {
            sys::lt_token_stream_flush(self.ptr.as_ptr(), buf, cap, n)
        })
    }
}

impl Drop for TokenStream<'_> {
    fn drop(&mut self) {
        unsafe { sys::lt_token_stream_free(self.ptr.as_ptr()) }
    }
}

// ---- model ------------------------------------------------------------------------------------

/// lt_model_params (progress reporting aside).
#[derive(Debug, Clone)]
pub struct ModelParams {
    pub device: i32,
    pub device_index: i32,
    pub quant: i32,
    pub compute_dtype: i32,
    pub double_quant: bool,
    pub max_seq_len: i32,
    pub n_threads: i32,
}

impl Default for ModelParams {
    /// lt_model_params_init's values.
    fn default() -> Self {
        let mut p: sys::lt_model_params = unsafe { std::mem::zeroed() };
        unsafe { sys::lt_model_params_init(&mut p) };
        ModelParams { device: p.device, device_index: p.device_index, quant: p.quant, compute_dtype: p.compute_dtype,
                      double_quant: p.double_quant != 0, max_seq_len: p.max_seq_len, n_threads: p.n_threads }
    }
}

/// lt_lora_params.
#[derive(Debug, Clone)]
pub struct LoraParams {
    pub r: i32,
    pub alpha: f32,
    pub dropout: f32,
    pub use_rslora: bool,
    pub targets: u32,
    pub seed: u64,
}

impl Default for LoraParams {
    fn default() -> Self {
        let mut p: sys::lt_lora_params = unsafe { std::mem::zeroed() };
        unsafe { sys::lt_lora_params_init(&mut p) };
        LoraParams { r: p.r, alpha: p.alpha, dropout: p.dropout, use_rslora: p.use_rslora != 0, targets: p.targets,
                     seed: p.seed }
    }
}

/// lt_model_info.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub architecture: String,
    pub model_type: String,
    pub vocab_size: i32,
    pub hidden_size: i32,
    pub intermediate_size: i32,
    pub num_layers: i32,
    pub num_heads: i32,
    pub num_kv_heads: i32,
    pub head_dim: i32,
    pub max_position_embeddings: i32,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub device: i32,
    pub compute_dtype: i32,
    pub quant: i32,
    pub n_params: u64,
    pub n_lora_params: u64,
    pub weight_bytes: u64,
}

/// lt_generate_params (the tokenizer and the streaming closure are arguments of generate).
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_new_tokens: i32,
    pub do_sample: bool,
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub repetition_penalty: f32,
    pub seed: u64,
    pub stop_ids: Option<Vec<i32>>,
    pub stop_strings: Vec<String>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        let mut p: sys::lt_generate_params = unsafe { std::mem::zeroed() };
        unsafe { sys::lt_generate_params_init(&mut p) };
        GenerateParams { max_new_tokens: p.max_new_tokens, do_sample: p.do_sample != 0, temperature: p.temperature,
                         top_k: p.top_k, top_p: p.top_p, min_p: p.min_p, repetition_penalty: p.repetition_penalty,
                         seed: p.seed, stop_ids: None, stop_strings: Vec::new() }
    }
}

/// A model folder loaded (and quantized) by the library, with its LoRA adapter.
pub struct Model {
    ptr: NonNull<sys::lt_model>,
}

// SAFETY: an lt_model (host or device memory) is not tied to the thread that loaded it.
unsafe impl Send for Model {}

fn cstr_field(b: &[c_char]) -> String {
    let bytes: Vec<u8> = b.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Model {
    pub fn load(dir: impl AsRef<Path>, params: &ModelParams) -> Result<Self> {
        library_check()?;
        let c = cpath(dir.as_ref(), "lt_model_load")?;
        let mut p: sys::lt_model_params = unsafe { std::mem::zeroed() };
        unsafe { sys::lt_model_params_init(&mut p) };
        p.struct_size = std::mem::size_of::<sys::lt_model_params>() as u32;
        p.device = params.device;
        p.device_index = params.device_index;
        p.quant = params.quant;
        p.compute_dtype = params.compute_dtype;
        p.double_quant = params.double_quant as i32;
        p.max_seq_len = params.max_seq_len;
        p.n_threads = params.n_threads;
        let mut m = null_mut();
        check(unsafe { sys::lt_model_load(c.as_ptr(), &p, &mut m) }, "lt_model_load")?;
        Ok(Model { ptr: NonNull::new(m).expect("lt_model_load returned OK and NULL") })
    }

    pub fn info(&self) -> Result<ModelInfo> {
        let mut s: sys::lt_model_info = unsafe { std::mem::zeroed() };
        s.struct_size = std::mem::size_of::<sys::lt_model_info>() as u32;
        check(unsafe { sys::lt_model_get_info(self.ptr.as_ptr(), &mut s) }, "lt_model_get_info")?;
        Ok(ModelInfo {
            architecture: cstr_field(&s.architecture), model_type: cstr_field(&s.model_type),
            vocab_size: s.vocab_size, hidden_size: s.hidden_size, intermediate_size: s.intermediate_size,
            num_layers: s.num_layers, num_heads: s.num_heads, num_kv_heads: s.num_kv_heads, head_dim: s.head_dim,
            max_position_embeddings: s.max_position_embeddings, rope_theta: s.rope_theta, rms_norm_eps: s.rms_norm_eps,
            tie_word_embeddings: s.tie_word_embeddings != 0, attention_bias: s.attention_bias != 0, device: s.device,
            compute_dtype: s.compute_dtype, quant: s.quant, n_params: s.n_params, n_lora_params: s.n_lora_params,
            weight_bytes: s.weight_bytes,
        })
    }

    /// Attaches a fresh adapter (replacing any). Needs no trainer alive (`&mut`).
    pub fn add_lora(&mut self, params: &LoraParams) -> Result<()> {
        let mut p: sys::lt_lora_params = unsafe { std::mem::zeroed() };
        unsafe { sys::lt_lora_params_init(&mut p) };
        p.struct_size = std::mem::size_of::<sys::lt_lora_params>() as u32;
        p.r = params.r;
        p.alpha = params.alpha;
        p.dropout = params.dropout;
        p.use_rslora = params.use_rslora as i32;
        p.targets = params.targets;
        p.seed = params.seed;
        check(unsafe { sys::lt_model_add_lora(self.ptr.as_ptr(), &p) }, "lt_model_add_lora").map(drop)
    }

    pub fn load_adapter(&mut self, dir: impl AsRef<Path>) -> Result<()> {
        let c = cpath(dir.as_ref(), "lt_model_load_adapter")?;
        check(unsafe { sys::lt_model_load_adapter(self.ptr.as_ptr(), c.as_ptr()) }, "lt_model_load_adapter").map(drop)
    }

    /// The adapter as PEFT writes it: adapter_config.json + adapter_model.safetensors.
    pub fn save_adapter(&self, dir: impl AsRef<Path>, overwrite: bool) -> Result<()> {
        let c = cpath(dir.as_ref(), "lt_model_save_adapter")?;
        check(unsafe { sys::lt_model_save_adapter(self.ptr.as_ptr(), c.as_ptr(), overwrite as i32) },
              "lt_model_save_adapter").map(drop)
    }

    pub fn set_lora_enabled(&mut self, enabled: bool) -> Result<()> {
        check(unsafe { sys::lt_model_set_lora_enabled(self.ptr.as_ptr(), enabled as i32) }, "lt_model_set_lora_enabled")
            .map(drop)
    }

    /// Inference mode: frees the training graph's activation buffers now (a later step or
    /// logits / loss call allocates them again).
    pub fn release_buffers(&mut self) -> Result<()> {
        check(unsafe { sys::lt_model_release_buffers(self.ptr.as_ptr()) }, "lt_model_release_buffers").map(drop)
    }

    /// Logits of one sequence: ids.len() rows of vocab_size floats, row-major.
    pub fn logits(&self, ids: &[i32]) -> Result<Vec<f32>> {
        let vocab = self.info()?.vocab_size as usize;
        let mut out = vec![0f32; ids.len() * vocab];
        check(unsafe { sys::lt_model_logits(self.ptr.as_ptr(), ids.as_ptr(), ids.len(), out.as_mut_ptr()) },
              "lt_model_logits")?;
        Ok(out)
    }

    /// Mean cross-entropy of labels (-100 ignored; None = ids).
    pub fn loss(&self, ids: &[i32], labels: Option<&[i32]>) -> Result<f64> {
        let labels = labels.unwrap_or(ids);
        if labels.len() != ids.len() {
            return Err(Error::new(sys::LT_ERR_INVALID_ARGUMENT, "lt_model_loss",
                                  format!("{} labels for {} ids", labels.len(), ids.len())));
        }
        let mut loss = 0f64;
        check(unsafe { sys::lt_model_loss(self.ptr.as_ptr(), ids.as_ptr(), labels.as_ptr(), ids.len(), &mut loss) },
              "lt_model_loss")?;
        Ok(loss)
    }

    /// The C params of `params` (stop ids point into `params`; the stop strings into the two
    /// vectors returned with it, which must outlive the call).
    fn c_generate_params(params: &GenerateParams, tokenizer: Option<&Tokenizer>, call: &'static str)
                         -> Result<(sys::lt_generate_params, Vec<CString>, Vec<*const c_char>)> {
        let mut p: sys::lt_generate_params = unsafe { std::mem::zeroed() };
        unsafe { sys::lt_generate_params_init(&mut p) };
        p.struct_size = std::mem::size_of::<sys::lt_generate_params>() as u32;
        p.max_new_tokens = params.max_new_tokens;
        p.do_sample = params.do_sample as i32;
        p.temperature = params.temperature;
        p.top_k = params.top_k;
        p.top_p = params.top_p;
        p.min_p = params.min_p;
        p.repetition_penalty = params.repetition_penalty;
        p.seed = params.seed;
        if let Some(ids) = &params.stop_ids {
            p.stop_ids = ids.as_ptr();
            p.n_stop_ids = ids.len() as i32;
        }
        let strs: Vec<CString> = params.stop_strings.iter().map(|s| cstring(s, call)).collect::<Result<_>>()?;
        let ptrs: Vec<*const c_char> = strs.iter().map(|s| s.as_ptr()).collect();
        if !ptrs.is_empty() {
            p.stop_strings = ptrs.as_ptr();
            p.n_stop_strings = ptrs.len() as i32;
        }
        if let Some(t) = tokenizer {
            p.tokenizer = t.ptr.as_ptr();
        }
        Ok((p, strs, ptrs))
    }

    /// Generates after each of `prompts` at once (lt_generate_batch) and returns each one's new
    /// ids, in order: greedy gives each prompt's ids alone, sampling draws prompt i with
    /// `seed + i`.
    pub fn generate_batch(&self, prompts: &[&[i32]], params: &GenerateParams, tokenizer: Option<&Tokenizer>)
                          -> Result<Vec<Vec<i32>>> {
        const CALL: &str = "lt_generate_batch";
        let (p, _strs, _ptrs) = Self::c_generate_params(params, tokenizer, CALL)?;
        let rows: Vec<*const i32> = prompts.iter().map(|r| r.as_ptr()).collect();
        let lens: Vec<usize> = prompts.iter().map(|r| r.len()).collect();
        let cap = params.max_new_tokens.max(0) as usize + 1;
        let mut out = vec![0i32; cap * prompts.len()];
        let mut n = vec![0usize; prompts.len()];
        let st = unsafe {
            sys::lt_generate_batch(self.ptr.as_ptr(), rows.as_ptr(), lens.as_ptr(), prompts.len(), &p,
                                   out.as_mut_ptr(), cap, n.as_mut_ptr())
        };
        check(st, CALL)?;
        Ok((0..prompts.len()).map(|i| out[i * cap..i * cap + n[i]].to_vec()).collect())
    }

    /// Generates after `prompt`; returns the new ids. `on_text(piece, token)` (needs the
    /// tokenizer) receives each complete piece of text; returning true stops.
    pub fn generate(&self, prompt: &[i32], params: &GenerateParams, tokenizer: Option<&Tokenizer>,
                    on_text: Option<&mut dyn FnMut(&str, i32) -> bool>) -> Result<Vec<i32>> {
        const CALL: &str = "lt_generate";
        let (mut p, _strs, _ptrs) = Self::c_generate_params(params, tokenizer, CALL)?;
        let mut cb: Option<Box<Callback<TextFn<'_>>>> = None;
        if let Some(f) = on_text {
            if tokenizer.is_none() {
                return Err(Error::new(sys::LT_ERR_INVALID_ARGUMENT, CALL, "on_text needs a tokenizer"));
            }
            let mut b = Box::new(Callback { panic: None, f: Box::new(f) as Box<TextFn<'_>> });
            p.on_text = Some(text_tramp);
            p.user_data = &mut *b as *mut Callback<TextFn<'_>> as *mut c_void;
            cb = Some(b);
        }
        let cap = params.max_new_tokens.max(0) as usize + 1;
        let mut out = vec![0i32; cap];
        let mut n = 0usize;
        let st = unsafe {
            sys::lt_generate(self.ptr.as_ptr(), prompt.as_ptr(), prompt.len(), &p, out.as_mut_ptr(), cap, &mut n)
        };
        let result = check(st, CALL);
        if let Some(b) = cb.as_mut() {
            b.resume();
        }
        result?;
        out.truncate(n);
        Ok(out)
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        unsafe { sys::lt_model_free(self.ptr.as_ptr()) }
    }
}

// ---- dataset ----------------------------------------------------------------------------------

/// lt_dataset_params (None = the library's default for a string).
#[derive(Debug, Clone)]
pub struct DatasetParams {
    pub format: i32,
    pub template_name: Option<String>,
    pub template_text: Option<String>,
    pub instruction_field: Option<String>,
    pub input_field: Option<String>,
    pub output_field: Option<String>,
    pub text_field: Option<String>,
    pub max_seq_len: i32,
    pub loss_on: i32,
    pub add_eos: bool,
    pub skip_bad_records: bool,
    pub eval_fraction: f64,
    pub seed: u64,
    pub n_threads: i32,
}

impl Default for DatasetParams {
    fn default() -> Self {
        let mut p: sys::lt_dataset_params = unsafe { std::mem::zeroed() };
        unsafe { sys::lt_dataset_params_init(&mut p) };
        DatasetParams { format: p.format, template_name: None, template_text: None, instruction_field: None,
                        input_field: None, output_field: None, text_field: None, max_seq_len: p.max_seq_len,
                        loss_on: p.loss_on, add_eos: p.add_eos != 0, skip_bad_records: p.skip_bad_records != 0,
                        eval_fraction: p.eval_fraction, seed: p.seed, n_threads: p.n_threads }
    }
}

/// lt_dataset_stats.
#[derive(Debug, Clone)]
pub struct DatasetStats {
    pub n_records: u64,
    pub n_eval: u64,
    pub n_skipped: u64,
    pub n_truncated: u64,
    pub n_tokens: u64,
    pub n_label_tokens: u64,
    pub min_len: i32,
    pub max_len: i32,
    pub mean_len: f64,
}

/// Tokenized training records; borrows its tokenizer.
pub struct Dataset<'t> {
    ptr: NonNull<sys::lt_dataset>,
    _strings: Vec<Option<CString>>,
    _tok: PhantomData<&'t Tokenizer>,
}

impl<'t> Dataset<'t> {
    fn open(path: Option<&Path>, tok: &'t Tokenizer, params: &DatasetParams) -> Result<Self> {
        library_check()?;
        const CALL: &str = "lt_dataset_new";
        let strings = vec![
            opt_cstring(&params.template_name, CALL)?, opt_cstring(&params.template_text, CALL)?,
            opt_cstring(&params.instruction_field, CALL)?, opt_cstring(&params.input_field, CALL)?,
            opt_cstring(&params.output_field, CALL)?, opt_cstring(&params.text_field, CALL)?,
        ];
        let mut p: sys::lt_dataset_params = unsafe { std::mem::zeroed() };
        unsafe { sys::lt_dataset_params_init(&mut p) };
        p.struct_size = std::mem::size_of::<sys::lt_dataset_params>() as u32;
        p.format = params.format;
        if strings[0].is_some() { p.template_name = ptr_of(&strings[0]); }
        if strings[1].is_some() { p.template_text = ptr_of(&strings[1]); }
        if strings[2].is_some() { p.instruction_field = ptr_of(&strings[2]); }
        if strings[3].is_some() { p.input_field = ptr_of(&strings[3]); }
        if strings[4].is_some() { p.output_field = ptr_of(&strings[4]); }
        if strings[5].is_some() { p.text_field = ptr_of(&strings[5]); }
        p.max_seq_len = params.max_seq_len;
        p.loss_on = params.loss_on;
        p.add_eos = params.add_eos as i32;
        p.skip_bad_records = params.skip_bad_records as i32;
        p.eval_fraction = params.eval_fraction;
        p.seed = params.seed;
        p.n_threads = params.n_threads;
        let mut d = null_mut();
        match path {
            Some(path) => {
                let c = cpath(path, "lt_dataset_load")?;
                check(unsafe { sys::lt_dataset_load(c.as_ptr(), tok.ptr.as_ptr(), &p, &mut d) }, "lt_dataset_load")?;
            }
            None => {
                check(unsafe { sys::lt_dataset_new(tok.ptr.as_ptr(), &p, &mut d) }, CALL)?;
            }
        }
        Ok(Dataset { ptr: NonNull::new(d).unwrap(), _strings: strings, _tok: PhantomData })
    }

    /// Reads a JSON array or JSONL file.
    pub fn load(path: impl AsRef<Path>, tok: &'t Tokenizer, params: &DatasetParams) -> Result<Self> {
        Self::open(Some(path.as_ref()), tok, params)
    }

    /// An empty dataset that records are added to.
    pub fn new(tok: &'t Tokenizer, params: &DatasetParams) -> Result<Self> {
        Self::open(None, tok, params)
    }

    pub fn add_json(&mut self, record: &str) -> Result<()> {
        let c = cstring(record, "lt_dataset_add_json")?;
        check(unsafe { sys::lt_dataset_add_json(self.ptr.as_ptr(), c.as_ptr()) }, "lt_dataset_add_json").map(drop)
    }

    pub fn add_alpaca(&mut self, instruction: &str, input: &str, output: &str) -> Result<()> {
        const CALL: &str = "lt_dataset_add_alpaca";
        let (i, n, o) = (cstring(instruction, CALL)?, cstring(input, CALL)?, cstring(output, CALL)?);
        check(unsafe { sys::lt_dataset_add_alpaca(self.ptr.as_ptr(), i.as_ptr(), n.as_ptr(), o.as_ptr()) }, CALL)
            .map(drop)
    }

    pub fn add_text(&mut self, text: &str) -> Result<()> {
        let c = cstring(text, "lt_dataset_add_text")?;
        check(unsafe { sys::lt_dataset_add_text(self.ptr.as_ptr(), c.as_ptr()) }, "lt_dataset_add_text").map(drop)
    }

    pub fn add_tokens(&mut self, ids: &[i32], labels: Option<&[i32]>) -> Result<()> {
        if labels.map_or(false, |l| l.len() != ids.len()) {
            return Err(Error::new(sys::LT_ERR_INVALID_ARGUMENT, "lt_dataset_add_tokens", "labels and ids differ in length"));
        }
        check(unsafe {
            sys::lt_dataset_add_tokens(self.ptr.as_ptr(), ids.as_ptr(), labels.map_or(null(), |l| l.as_ptr()), ids.len())
        }, "lt_dataset_add_tokens").map(drop)
    }

    pub fn stats(&self) -> Result<DatasetStats> {
        let mut s: sys::lt_dataset_stats = unsafe { std::mem::zeroed() };
        s.struct_size = std::mem::size_of::<sys::lt_dataset_stats>() as u32;
        check(unsafe { sys::lt_dataset_get_stats(self.ptr.as_ptr(), &mut s) }, "lt_dataset_get_stats")?;
        Ok(DatasetStats { n_records: s.n_records, n_eval: s.n_eval, n_skipped: s.n_skipped, n_truncated: s.n_truncated,
                          n_tokens: s.n_tokens, n_label_tokens: s.n_label_tokens, min_len: s.min_len,
                          max_len: s.max_len, mean_len: s.mean_len })
    }

    pub fn len(&self) -> usize {
        unsafe { sys::lt_dataset_size(self.ptr.as_ptr()) }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Record `index`'s ids and labels (-100 where no loss).
    pub fn get(&self, index: usize) -> Result<(Vec<i32>, Vec<i32>)> {
        let mut n = 0usize;
        let st = unsafe { sys::lt_dataset_get(self.ptr.as_ptr(), index, null_mut(), null_mut(), 0, &mut n) };
        if st != sys::LT_ERR_BUFFER_TOO_SMALL {
            check(st, "lt_dataset_get")?;
        }
        let cap = n.max(1);
        let (mut ids, mut labels) = (vec![0i32; cap], vec![0i32; cap]);
        check(unsafe {
            sys::lt_dataset_get(self.ptr.as_ptr(), index, ids.as_mut_ptr(), labels.as_mut_ptr(), cap, &mut n)
        }, "lt_dataset_get")?;
        ids.truncate(n);
        labels.truncate(n);
        Ok((ids, labels))
    }
}

impl Drop for Dataset<'_> {
    fn drop(&mut self) {
        unsafe { sys::lt_dataset_free(self.ptr.as_ptr()) }
    }
}

// ---- training ---------------------------------------------------------------------------------

/// One optimizer step (lt_metrics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    pub step: i64,
    pub max_steps: i64,
    pub epoch: f64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: i64,
    pub total_tokens: i64,
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
    pub peak_memory: u64,
}

impl From<&sys::lt_metrics> for Metrics {
    fn from(m: &sys::lt_metrics) -> Self {
        Metrics { step: m.step, max_steps: m.max_steps, epoch: m.epoch, loss: m.loss, lr: m.lr, grad_norm: m.grad_norm,
                  tokens: m.tokens, total_tokens: m.total_tokens, tokens_per_s: m.tokens_per_s,
                  elapsed_s: m.elapsed_s, peak_memory: m.peak_memory }
    }
}

/// lt_train_params (data parallel fields aside). Names as in the header.
#[derive(Debug, Clone)]
pub struct TrainParams {
    pub batch_size: i32,
    pub grad_accum: i32,
    pub max_steps: i32,
    pub epochs: f64,
    pub lr: f64,
    pub warmup_steps: i32,
    pub warmup_ratio: f64,
    pub scheduler: i32,
    pub optimizer: i32,
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    pub max_grad_norm: f64,
    pub seed: u64,
    pub packing: bool,
    pub gradient_checkpointing: bool,
    pub offload_checkpoints: bool,
    pub deterministic: bool,
    pub log_every: i32,
    pub save_every: i32,
    pub output_dir: Option<String>,
    pub fp16_initial_loss_scale: f64,
    pub fuse_micro_batches: bool,
    /// pad passes to a few token-budget buckets (few shapes: CUDA graphs replay); default true
    pub bucket_passes: bool,
}

impl Default for TrainParams {
    /// lt_train_params_init's values: the notebook's recipe.
    fn default() -> Self {
        let mut p: sys::lt_train_params = unsafe { std::mem::zeroed() };
        unsafe { sys::lt_train_params_init(&mut p) };
        TrainParams {
            batch_size: p.batch_size, grad_accum: p.grad_accum, max_steps: p.max_steps, epochs: p.epochs, lr: p.lr,
            warmup_steps: p.warmup_steps, warmup_ratio: p.warmup_ratio, scheduler: p.scheduler, optimizer: p.optimizer,
            weight_decay: p.weight_decay, adam_beta1: p.adam_beta1, adam_beta2: p.adam_beta2, adam_eps: p.adam_eps,
            max_grad_norm: p.max_grad_norm, seed: p.seed, packing: p.packing != 0,
            gradient_checkpointing: p.gradient_checkpointing != 0, offload_checkpoints: p.offload_checkpoints != 0,
            deterministic: p.deterministic != 0, log_every: p.log_every, save_every: p.save_every, output_dir: None,
            fp16_initial_loss_scale: p.fp16_initial_loss_scale, fuse_micro_batches: p.fuse_micro_batches != 0,
            bucket_passes: p.bucket_passes != 0,
        }
    }
}

impl TrainParams {
    pub fn set_scheduler(&mut self, name: &str) -> Result<()> {
        self.scheduler = parse_with(name, "lt_scheduler_parse", sys::lt_scheduler_parse)?;
        Ok(())
    }
    pub fn set_optimizer(&mut self, name: &str) -> Result<()> {
        self.optimizer = parse_with(name, "lt_optimizer_parse", sys::lt_optimizer_parse)?;
        Ok(())
    }
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// A step was taken.
    Took(Metrics),
    /// A step was taken and the callback asked to stop.
    Stopped(Metrics),
    /// Training is complete; no step was taken.
    Done,
}

/// The step loop over a model (with LoRA) and a dataset, both borrowed.
pub struct Trainer<'a> {
    ptr: NonNull<sys::lt_trainer>,
    callback: Option<Box<Callback<StepFn<'a>>>>,
    _output_dir: Option<CString>,
    _borrows: PhantomData<(&'a Model, &'a Dataset<'a>)>,
}

impl<'a> Trainer<'a> {
    /// `on_step` (optional) is called after every optimizer step; returning true stops.
    pub fn new(model: &'a Model, dataset: &'a Dataset<'a>, params: &TrainParams,
               on_step: Option<Box<dyn FnMut(&Metrics) -> bool + 'a>>) -> Result<Self> {
        const CALL: &str = "lt_trainer_new";
        let mut p: sys::lt_train_params = unsafe { std::mem::zeroed() };
        unsafe { sys::lt_train_params_init(&mut p) };
        p.struct_size = std::mem::size_of::<sys::lt_train_params>() as u32;
        p.batch_size = params.batch_size;
        p.grad_accum = params.grad_accum;
        p.max_steps = params.max_steps;
        p.epochs = params.epochs;
        p.lr = params.lr;
        p.warmup_steps = params.warmup_steps;
        p.warmup_ratio = params.warmup_ratio;
        p.scheduler = params.scheduler;
        p.optimizer = params.optimizer;
        p.weight_decay = params.weight_decay;
        p.adam_beta1 = params.adam_beta1;
        p.adam_beta2 = params.adam_beta2;
        p.adam_eps = params.adam_eps;
        p.max_grad_norm = params.max_grad_norm;
        p.seed = params.seed;
        p.packing = params.packing as i32;
        p.gradient_checkpointing = params.gradient_checkpointing as i32;
        p.offload_checkpoints = params.offload_checkpoints as i32;
        p.deterministic = params.deterministic as i32;
        p.log_every = params.log_every;
        p.save_every = params.save_every;
        p.fp16_initial_loss_scale = params.fp16_initial_loss_scale;
        p.fuse_micro_batches = params.fuse_micro_batches as i32;
        p.bucket_passes = params.bucket_passes as i32;
        let output_dir = opt_cstring(&params.output_dir, CALL)?;
        p.output_dir = ptr_of(&output_dir);
        let mut callback = on_step.map(|f| Box::new(Callback { panic: None, f }));
        if let Some(cb) = callback.as_mut() {
            p.on_step = Some(step_tramp);
            p.user_data = &mut **cb as *mut Callback<StepFn<'a>> as *mut c_void;
        }
        let mut t = null_mut();
        check(unsafe { sys::lt_trainer_new(model.ptr.as_ptr(), dataset.ptr.as_ptr(), &p, &mut t) }, CALL)?;
        Ok(Trainer { ptr: NonNull::new(t).unwrap(), callback, _output_dir: output_dir, _borrows: PhantomData })
    }

    fn after(&mut self) {
        if let Some(cb) = self.callback.as_mut() {
            cb.resume();
        }
    }

    /// One optimizer step.
    pub fn step(&mut self) -> Result<Step> {
        let mut m: sys::lt_metrics = unsafe { std::mem::zeroed() };
        m.struct_size = std::mem::size_of::<sys::lt_metrics>() as u32;
        let st = unsafe { sys::lt_trainer_step(self.ptr.as_ptr(), &mut m) };
        self.after();
        match check(st, "lt_trainer_step")? {
            sys::LT_DONE => Ok(Step::Done),
            sys::LT_STOPPED => Ok(Step::Stopped(Metrics::from(&m))),
            _ => Ok(Step::Took(Metrics::from(&m))),
        }
    }

    /// Steps until done (Ok(false)) or stopped by the callback (Ok(true)).
    pub fn run(&mut self) -> Result<bool> {
        let st = unsafe { sys::lt_trainer_run(self.ptr.as_ptr()) };
        self.after();
        Ok(check(st, "lt_trainer_run")? == sys::LT_STOPPED)
    }

    pub fn evaluate(&mut self) -> Result<f64> {
        let mut loss = 0f64;
        check(unsafe { sys::lt_trainer_evaluate(self.ptr.as_ptr(), &mut loss) }, "lt_trainer_evaluate")?;
        Ok(loss)
    }

    pub fn save_checkpoint(&mut self, dir: impl AsRef<Path>) -> Result<()> {
        let c = cpath(dir.as_ref(), "lt_trainer_save_checkpoint")?;
        check(unsafe { sys::lt_trainer_save_checkpoint(self.ptr.as_ptr(), c.as_ptr()) }, "lt_trainer_save_checkpoint")
            .map(drop)
    }

    pub fn load_checkpoint(&mut self, dir: impl AsRef<Path>) -> Result<()> {
        let c = cpath(dir.as_ref(), "lt_trainer_load_checkpoint")?;
        check(unsafe { sys::lt_trainer_load_checkpoint(self.ptr.as_ptr(), c.as_ptr()) }, "lt_trainer_load_checkpoint")
            .map(drop)
    }
}

impl Drop for Trainer<'_> {
    fn drop(&mut self) {
        unsafe { sys::lt_trainer_free(self.ptr.as_ptr()) }
    }
}

// ---- export -----------------------------------------------------------------------------------

/// lt_export_params (None = the library's default for a string).
#[derive(Debug, Clone)]
pub struct ExportParams {
    pub format: i32,
    pub quant: Option<String>,
    pub merge_base: i32,
    pub template_name: Option<String>,
    pub template_text: Option<String>,
    pub tokenizer_dir: Option<String>,
    pub overwrite: bool,
    pub write_modelfile: bool,
    pub n_threads: i32,
    pub max_shard_bytes: u64,
}

impl Default for ExportParams {
    fn default() -> Self {
        let mut p: sys::lt_export_params = unsafe { std::mem::zeroed() };
        unsafe { sys::lt_export_params_init(&mut p) };
        ExportParams { format: p.format, quant: None, merge_base: p.merge_base, template_name: None,
                       template_text: None, tokenizer_dir: None, overwrite: p.overwrite != 0,
                       write_modelfile: p.write_modelfile != 0, n_threads: p.n_threads,
                       max_shard_bytes: p.max_shard_bytes }
    }
}

impl ExportParams {
    /// "peft", "merged", "gguf", "gguf-lora" ...
    pub fn set_format(&mut self, name: &str) -> Result<()> {
        self.format = parse_with(name, "lt_export_format_parse", sys::lt_export_format_parse)?;
        Ok(())
    }
}

/// Writes a model as PEFT / merged safetensors / GGUF (+ Modelfile) / GGUF LoRA.
pub struct Exporter<'a> {
    ptr: NonNull<sys::lt_exporter>,
    _strings: Vec<Option<CString>>,
    _borrows: PhantomData<(&'a Model, &'a Tokenizer)>,
}

impl<'a> Exporter<'a> {
    pub fn new(model: &'a Model, tokenizer: Option<&'a Tokenizer>, params: &ExportParams) -> Result<Self> {
        const CALL: &str = "lt_exporter_new";
        let strings = vec![opt_cstring(&params.quant, CALL)?, opt_cstring(&params.template_name, CALL)?,
                           opt_cstring(&params.template_text, CALL)?, opt_cstring(&params.tokenizer_dir, CALL)?];
        let mut p: sys::lt_export_params = unsafe { std::mem::zeroed() };
        unsafe { sys::lt_export_params_init(&mut p) };
        p.struct_size = std::mem::size_of::<sys::lt_export_params>() as u32;
        p.format = params.format;
        if strings[0].is_some() { p.quant = ptr_of(&strings[0]); }
        p.merge_base = params.merge_base;
        if strings[1].is_some() { p.template_name = ptr_of(&strings[1]); }
        if strings[2].is_some() { p.template_text = ptr_of(&strings[2]); }
        if strings[3].is_some() { p.tokenizer_dir = ptr_of(&strings[3]); }
        p.overwrite = params.overwrite as i32;
        p.write_modelfile = params.write_modelfile as i32;
        p.n_threads = params.n_threads;
        p.max_shard_bytes = params.max_shard_bytes;
        let tok = tokenizer.map_or(null(), |t| t.ptr.as_ptr() as *const _);
        let mut e = null_mut();
        check(unsafe { sys::lt_exporter_new(model.ptr.as_ptr(), tok, &p, &mut e) }, CALL)?;
        Ok(Exporter { ptr: NonNull::new(e).unwrap(), _strings: strings, _borrows: PhantomData })
    }

    /// Writes to `path` (a folder for PEFT / merged, a file for GGUF). Atomic.
    pub fn write(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let c = cpath(path.as_ref(), "lt_exporter_write")?;
        check(unsafe { sys::lt_exporter_write(self.ptr.as_ptr(), c.as_ptr()) }, "lt_exporter_write").map(drop)
    }
}

impl Drop for Exporter<'_> {
    fn drop(&mut self) {
        unsafe { sys::lt_exporter_free(self.ptr.as_ptr()) }
    }
}

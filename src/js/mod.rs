//! The JavaScript bindings (feature `js`): a thin wasm-bindgen layer over the core.
//!
//! Every export converts its arguments (serde-wasm-bindgen, the same snake_case JSON as
//! the core's config), calls the core, and converts the result back; errors become real
//! `Error` objects in one place ([`js_error`]). No decision is made here. The platform
//! (fetch, timers, clock, randomness) is [`crate::wasm::WasmRuntime`].

use std::cell::RefCell;
use std::future::Future;
use std::pin::{pin, Pin};
use std::rc::Rc;

use futures_util::future::{select, Either};
use js_sys::{Array, Function, Object, Promise, Reflect};
use serde::de::DeserializeOwned;
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{future_to_promise, JsFuture};
use web_sys::AbortSignal;

use crate::chat::{LlmResponse, Prompt};
use crate::client::{CallOptions, CompletionStream, StreamEvent};
use crate::config::{from_json_text, GenerationConfig};
use crate::error::Error;
use crate::http::Headers;
use crate::manager::{BatchOptions, ProviderManager};
use crate::rate_limit::{RateLimiter, Reservation};
use crate::thinking::{
    StreamOptions, ThinkingDelta, ThinkingExtractor, ThinkingStream, Utf16Cursor,
};
use crate::wasm::{describe, WasmRuntime};

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &str = include_str!("types.d.ts");

#[wasm_bindgen(
    inline_js = "export function make_reservation(id, tokens, wait_ms, start_at_ms, reserved_through) {
  return { id, tokens, wait_ms, start_at_ms, reserved_through };
}
export function reservation_numbers(r) {
  if (r === null || typeof r !== 'object') return undefined;
  const n = [r.id, r.tokens, r.wait_ms, r.start_at_ms, r.reserved_through];
  return n.every((x) => typeof x === 'number' && Number.isFinite(x) && x >= 0) ? new Float64Array(n) : undefined;
}
export function make_async_iterable(value) {
  const proto = Object.getPrototypeOf(value);
  if (!Object.prototype.hasOwnProperty.call(proto, Symbol.asyncIterator)) {
    Object.defineProperty(proto, Symbol.asyncIterator, { value() { return this; }, configurable: true });
  }
  return value;
}"
)]
extern "C" {
    fn make_async_iterable(value: JsValue) -> JsValue;
    fn make_reservation(
        id: f64,
        tokens: f64,
        wait_ms: f64,
        start_at_ms: f64,
        reserved_through: f64,
    ) -> JsValue;
    fn reservation_numbers(value: &JsValue) -> Option<Vec<f64>>;
}

// ---------------------------------------------------------------------------------------
// Conversions at the boundary.

/// A JavaScript value as `T`, the error naming the path of the field at fault.
///
/// Values cross as JSON text (`JSON.stringify`, then serde_json): one deserializer per type
/// in the binary instead of one per input format, which keeps the package small. Functions
/// and `undefined` drop out as JSON has them; a cycle or a BigInt is a configuration error.
fn from_js<T: DeserializeOwned>(value: JsValue, root: &str) -> Result<T, JsValue> {
    from_json_text(&json_text(&value, root)?, root).map_err(|e| js_error(&e))
}

/// `JSON.stringify(value)`; the error names `root`.
fn json_text(value: &JsValue, root: &str) -> Result<String, JsValue> {
    match js_sys::JSON::stringify(value) {
        Ok(text) => Ok(text.as_string().unwrap_or_else(|| "null".to_string())),
        Err(e) => Err(js_error(&Error::config(
            root,
            format!("cannot be read as JSON: {}", describe(&e)),
        ))),
    }
}

/// An optional argument: `undefined` and `null` give the default.
fn from_js_or_default<T: DeserializeOwned + Default>(
    value: Option<Object>,
    root: &str,
) -> Result<T, JsValue> {
    match value {
        Some(object) if !object.is_null() && !object.is_undefined() => from_js(object.into(), root),
        _ => Ok(T::default()),
    }
}

/// `value` as plain JavaScript data, through JSON (see [`from_js`]).
fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, JsValue> {
    let json = serde_json::to_string(value).map_err(|e| {
        JsValue::from(js_sys::Error::new(&format!(
            "cannot convert the result: {e}"
        )))
    })?;
    js_sys::JSON::parse(&json)
}

fn set(target: &Object, key: &str, value: &JsValue) {
    // Setting a property on a fresh plain object cannot fail.
    let _ = Reflect::set(target, &JsValue::from_str(key), value);
}

/// The error as a JavaScript `Error` with `code`, `status`, `retryAfterMs`, `provider`
/// (and `field` for configuration errors, `errors` for failover) where they apply.
pub fn js_error(error: &Error) -> JsValue {
    let js = js_sys::Error::new(&error.to_string());
    js.set_name("LlmDistillerError");
    let object: &Object = js.as_ref();
    set(object, "code", &JsValue::from_str(error.code()));
    if let Some(status) = error.status() {
        set(object, "status", &JsValue::from(status));
    }
    if let Some(ms) = error.retry_after_ms() {
        set(object, "retryAfterMs", &JsValue::from(ms));
    }
    if let Some(provider) = error.provider() {
        set(object, "provider", &JsValue::from_str(provider));
    }
    match error {
        Error::Config { field, .. } => set(object, "field", &JsValue::from_str(field)),
        Error::AllProvidersFailed { errors } => {
            let list: Array = errors
                .iter()
                .map(|(name, e)| {
                    let entry = Object::new();
                    set(&entry, "provider", &JsValue::from_str(name));
                    set(&entry, "error", &js_error(e));
                    JsValue::from(entry)
                })
                .collect();
            set(object, "errors", &list);
        }
        _ => {}
    }
    js.into()
}

/// Looks up API keys left empty in the configuration: `process.env` in Node, nothing in
/// browsers (where keys must be given in the configuration).
fn environment(name: &str) -> Option<String> {
    let global = js_sys::global();
    let process = Reflect::get(&global, &"process".into()).ok()?;
    let env = Reflect::get(&process, &"env".into()).ok()?;
    if env.is_undefined() || env.is_null() {
        return None;
    }
    Reflect::get(&env, &JsValue::from_str(name))
        .ok()?
        .as_string()
}

/// Takes `signal` (and the other non-data keys) out of an options object; the rest is data.
fn split_options(
    options: Option<Object>,
    functions: &[&str],
) -> Result<(JsValue, Option<AbortSignal>, Vec<JsValue>), JsValue> {
    let Some(options) = options.filter(|o| !o.is_undefined() && !o.is_null()) else {
        return Ok((
            JsValue::UNDEFINED,
            None,
            functions.iter().map(|_| JsValue::UNDEFINED).collect(),
        ));
    };
    let data = Object::assign(&Object::new(), &options);
    let signal = Reflect::get(&data, &"signal".into())?;
    let _ = Reflect::delete_property(&data, &"signal".into());
    let signal =
        if signal.is_undefined() || signal.is_null() {
            None
        } else {
            Some(signal.dyn_into::<AbortSignal>().map_err(|_| {
                js_error(&Error::config("options.signal", "must be an AbortSignal"))
            })?)
        };
    let mut taken = Vec::new();
    for key in functions {
        let value = Reflect::get(&data, &JsValue::from_str(key))?;
        let _ = Reflect::delete_property(&data, &JsValue::from_str(key));
        if !value.is_undefined() && !value.is_null() && !value.is_function() {
            return Err(js_error(&Error::config(
                format!("options.{key}"),
                "must be a function",
            )));
        }
        taken.push(value);
    }
    Ok((data.into(), signal, taken))
}

/// The arguments every single call takes: the prompt, an optional generation config, and
/// optional call options with their abort signal.
fn call_arguments(
    prompt: JsValue,
    config: Option<Object>,
    options: Option<Object>,
) -> Result<(Prompt, GenerationConfig, CallOptions, Option<AbortSignal>), JsValue> {
    let prompt: Prompt = from_js(prompt, "prompt")?;
    let config: GenerationConfig = from_js_or_default(config, "config")?;
    let (data, signal, _) = split_options(options, &[])?;
    let call: CallOptions = from_js_or_default(data.dyn_into().ok(), "options")?;
    Ok((prompt, config, call, signal))
}

/// Runs `future` unless `signal` aborts first ([`Error::Aborted`]); dropping the future
/// cancels whatever it had under way.
async fn abortable<T>(
    signal: Option<AbortSignal>,
    future: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let Some(signal) = signal else {
        return future.await;
    };
    if signal.aborted() {
        return Err(Error::Aborted);
    }
    let mut listener: Option<Function> = None;
    let aborted = JsFuture::from(Promise::new(&mut |resolve, _reject| {
        let _ = signal.add_event_listener_with_callback("abort", &resolve);
        listener = Some(resolve);
    }));
    let outcome = match select(pin!(future), aborted).await {
        Either::Left((result, _)) => result,
        Either::Right(_) => Err(Error::Aborted),
    };
    if let Some(listener) = listener {
        let _ = signal.remove_event_listener_with_callback("abort", &listener);
    }
    outcome
}

fn promise<T: Serialize>(future: impl Future<Output = Result<T, Error>> + 'static) -> Promise {
    future_to_promise(async move {
        match future.await {
            Ok(value) => to_js(&value),
            Err(error) => Err(js_error(&error)),
        }
    })
}

// ---------------------------------------------------------------------------------------
// ProviderManager

/// Providers by name with failover, retries, rate limiting, batches and streaming.
#[wasm_bindgen(js_name = ProviderManager, skip_typescript)]
pub struct JsProviderManager {
    inner: Rc<ProviderManager<WasmRuntime>>,
}

impl JsProviderManager {
    /// One answer as a promise: reads the arguments (`target`, the provider or the failover
    /// order, as `A`), then runs `run` with them, abortable by `options.signal`. Bad
    /// arguments reject the promise, as every failure of an async call does.
    fn answer<A, F, Fut>(
        &self,
        prompt: JsValue,
        config: Option<Object>,
        (target, target_name): (JsValue, &str),
        options: Option<Object>,
        run: F,
    ) -> Promise
    where
        A: DeserializeOwned,
        F: FnOnce(
            Rc<ProviderManager<WasmRuntime>>,
            A,
            Prompt,
            GenerationConfig,
            CallOptions,
        ) -> Fut,
        Fut: Future<Output = Result<LlmResponse, Error>> + 'static,
    {
        let arguments = call_arguments(prompt, config, options)
            .and_then(|call| Ok((from_js::<A>(target, target_name)?, call)));
        match arguments {
            Ok((target, (prompt, config, call, signal))) => {
                let answer = run(Rc::clone(&self.inner), target, prompt, config, call);
                promise(async move { abortable(signal, answer).await })
            }
            Err(error) => Promise::reject(&error),
        }
    }
}

#[wasm_bindgen(js_class = ProviderManager)]
impl JsProviderManager {
    /// Sets up every provider of `config`. Keys left empty are read from `process.env`
    /// (Node). Throws only when the configuration is invalid or no provider can be set up.
    #[wasm_bindgen(skip_typescript, constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_param_type = "LlmConfig")] config: JsValue,
    ) -> Result<JsProviderManager, JsValue> {
        let config = json_text(&config, "config")?;
        let manager = ProviderManager::from_json(&config, Rc::new(WasmRuntime), &environment)
            .map_err(|e| js_error(&e))?;
        Ok(JsProviderManager {
            inner: Rc::new(manager),
        })
    }

    /// Generates an answer with `provider` (the default when omitted).
    #[wasm_bindgen(skip_typescript, unchecked_return_type = "Promise<LlmResponse>")]
    pub fn generate(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Prompt")] prompt: JsValue,
        #[wasm_bindgen(unchecked_param_type = "GenerationConfig | null")] config: Option<Object>,
        #[wasm_bindgen(unchecked_param_type = "string | null")] provider: JsValue,
        #[wasm_bindgen(unchecked_param_type = "CallOptions | null")] options: Option<Object>,
    ) -> Promise {
        self.answer(
            prompt,
            config,
            (provider, "provider"),
            options,
            move |manager, provider: Option<String>, prompt, config, call| async move {
                manager
                    .generate(&prompt, &config, provider.as_deref(), &call)
                    .await
            },
        )
    }

    /// Tries the providers of `order` (every provider, in configuration order, when
    /// omitted) until one answers.
    #[wasm_bindgen(skip_typescript, js_name = generateWithFailover, unchecked_return_type = "Promise<LlmResponse>")]
    pub fn generate_with_failover(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Prompt")] prompt: JsValue,
        #[wasm_bindgen(unchecked_param_type = "GenerationConfig | null")] config: Option<Object>,
        #[wasm_bindgen(unchecked_param_type = "string[] | null")] order: JsValue,
        #[wasm_bindgen(unchecked_param_type = "CallOptions | null")] options: Option<Object>,
    ) -> Promise {
        self.answer(
            prompt,
            config,
            (order, "order"),
            options,
            move |manager, order: Option<Vec<String>>, prompt, config, call| async move {
                manager
                    .generate_with_failover(&prompt, &config, order.as_deref(), &call)
                    .await
            },
        )
    }

    /// Generates an answer for every prompt, `concurrency` at a time, sharing the rate
    /// limiters; one result per prompt, in order. `onProgress(done, total, item, index)`
    /// hears of each as it finishes (`index`: its place in `prompts`).
    #[wasm_bindgen(skip_typescript, js_name = generateBatch, unchecked_return_type = "Promise<BatchItem[]>")]
    pub fn generate_batch(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Prompt[]")] prompts: JsValue,
        #[wasm_bindgen(unchecked_param_type = "GenerationConfig | null")] config: Option<Object>,
        #[wasm_bindgen(unchecked_param_type = "BatchOptions | null")] options: Option<Object>,
    ) -> Promise {
        // Bad arguments reject the promise, as every failure of an async call does.
        let call = || -> Result<Promise, JsValue> {
            let prompts: Vec<Prompt> = from_js(prompts, "prompts")?;
            let config: GenerationConfig = from_js_or_default(config, "config")?;
            let (data, signal, functions) = split_options(options, &["onProgress"])?;
            let batch: BatchOptions = from_js_or_default(data.dyn_into().ok(), "options")?;
            let on_progress = functions
                .into_iter()
                .next()
                .and_then(|f| f.dyn_into::<Function>().ok());
            let manager = Rc::clone(&self.inner);
            Ok(future_to_promise(async move {
                let run = manager.generate_batch(&prompts, &config, &batch, |progress| {
                    if let Some(callback) = &on_progress {
                        let item = batch_item(progress.result);
                        // A throwing callback must not sink the batch; its error is its own.
                        let args = js_sys::Array::of4(
                            &progress.done.into(),
                            &progress.total.into(),
                            &item,
                            &progress.index.into(),
                        );
                        let _ = callback.apply(&JsValue::NULL, &args);
                    }
                });
                let results = abortable(signal, run).await.map_err(|e| js_error(&e))?;
                Ok(results.iter().map(batch_item).collect::<Array>().into())
            }))
        };
        call().unwrap_or_else(|error| Promise::reject(&error))
    }

    /// Streams an answer: an async iterable of `{ type: "delta", content, thinking }`
    /// items, then one `{ type: "done", response }` with the whole answer.
    #[wasm_bindgen(skip_typescript, unchecked_return_type = "CompletionStream")]
    pub fn stream(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Prompt")] prompt: JsValue,
        #[wasm_bindgen(unchecked_param_type = "GenerationConfig | null")] config: Option<Object>,
        #[wasm_bindgen(unchecked_param_type = "string | null")] provider: JsValue,
        #[wasm_bindgen(unchecked_param_type = "CallOptions | null")] options: Option<Object>,
    ) -> Result<JsValue, JsValue> {
        let (prompt, config, call, signal) = call_arguments(prompt, config, options)?;
        let provider: Option<String> = from_js(provider, "provider")?;
        let manager = Rc::clone(&self.inner);
        let opening: OpeningStream = Box::pin(async move {
            manager
                .stream(&prompt, &config, provider.as_deref(), &call)
                .await
        });
        let stream = JsCompletionStream {
            state: Rc::new(RefCell::new(StreamState::Opening(opening))),
            signal,
            closed: Rc::default(),
        };
        Ok(make_async_iterable(stream.into()))
    }

    /// The names of the providers that could be set up.
    #[wasm_bindgen(skip_typescript, js_name = listProviders)]
    pub fn list_providers(&self) -> Vec<String> {
        self.inner.list_providers()
    }

    /// Every configured provider: type, model, availability and why not, rate limiter.
    #[wasm_bindgen(skip_typescript, js_name = providerStatus, unchecked_return_type = "ProviderStatus[]")]
    pub fn provider_status(&self) -> Result<JsValue, JsValue> {
        to_js(&self.inner.provider_status())
    }

    /// The default provider's name.
    #[wasm_bindgen(skip_typescript, getter, js_name = defaultProvider)]
    pub fn default_provider(&self) -> String {
        self.inner.default_provider().to_string()
    }
}

fn batch_item(result: &Result<LlmResponse, Error>) -> JsValue {
    let item = Object::new();
    match result {
        Ok(response) => {
            set(&item, "ok", &JsValue::TRUE);
            set(&item, "response", &to_js(response).unwrap_or(JsValue::NULL));
        }
        Err(error) => {
            set(&item, "ok", &JsValue::FALSE);
            set(&item, "error", &js_error(error));
        }
    }
    item.into()
}

// ---------------------------------------------------------------------------------------
// CompletionStream

type OpeningStream = Pin<Box<dyn Future<Output = Result<CompletionStream<WasmRuntime>, Error>>>>;

enum StreamState {
    Opening(OpeningStream),
    Open(Box<CompletionStream<WasmRuntime>>),
    Busy,
    Finished,
}

/// A streamed answer: `for await (const item of stream)`. Breaking out of the loop (or
/// calling `return()`) aborts the request.
#[wasm_bindgen(js_name = CompletionStream, skip_typescript)]
pub struct JsCompletionStream {
    state: Rc<RefCell<StreamState>>,
    signal: Option<AbortSignal>,
    /// Set by `return()`: a `next()` in flight then drops the stream when it settles.
    closed: Rc<std::cell::Cell<bool>>,
}

#[wasm_bindgen(js_class = CompletionStream)]
impl JsCompletionStream {
    /// The next item, as the async iterator protocol has it.
    #[wasm_bindgen(
        skip_typescript,
        unchecked_return_type = "Promise<IteratorResult<StreamItem, undefined>>"
    )]
    pub fn next(&self) -> Promise {
        let state = Rc::clone(&self.state);
        let signal = self.signal.clone();
        let closed = Rc::clone(&self.closed);
        future_to_promise(async move {
            let current = std::mem::replace(&mut *state.borrow_mut(), StreamState::Busy);
            let mut stream = match current {
                StreamState::Opening(opening) => match abortable(signal.clone(), opening).await {
                    Ok(stream) => stream,
                    Err(error) => {
                        *state.borrow_mut() = StreamState::Finished;
                        return Err(js_error(&error));
                    }
                },
                StreamState::Open(stream) => *stream,
                // Still Busy: the call under way sets what follows.
                StreamState::Busy => {
                    return Err(js_error(&Error::config(
                        "stream",
                        "next() was called again before the previous call settled",
                    )));
                }
                StreamState::Finished => return Ok(iterator_result(None)),
            };
            let event = abortable(signal, async { stream.next().await.transpose() }).await;
            match event {
                Ok(Some(StreamEvent::Delta(delta))) => {
                    *state.borrow_mut() = if closed.get() {
                        StreamState::Finished
                    } else {
                        StreamState::Open(Box::new(stream))
                    };
                    Ok(iterator_result(Some(stream_item("delta", &delta, None))))
                }
                Ok(Some(StreamEvent::Done(response))) => {
                    *state.borrow_mut() = StreamState::Finished;
                    let response = to_js(&*response)?;
                    Ok(iterator_result(Some(stream_item(
                        "done",
                        &ThinkingDelta::default(),
                        Some(response),
                    ))))
                }
                Ok(None) => {
                    *state.borrow_mut() = StreamState::Finished;
                    Ok(iterator_result(None))
                }
                Err(error) => {
                    *state.borrow_mut() = StreamState::Finished;
                    Err(js_error(&error))
                }
            }
        })
    }

    /// Ends the stream early, aborting the request.
    #[wasm_bindgen(
        skip_typescript,
        js_name = "return",
        unchecked_return_type = "Promise<IteratorResult<StreamItem, undefined>>"
    )]
    pub fn finish_early(&self) -> Promise {
        self.closed.set(true);
        // Busy means a next() in flight owns the stream; it drops it when it settles.
        if let Ok(mut state) = self.state.try_borrow_mut() {
            if !matches!(*state, StreamState::Busy) {
                *state = StreamState::Finished;
            }
        }
        Promise::resolve(&iterator_result(None))
    }
}

fn stream_item(kind: &str, delta: &ThinkingDelta, response: Option<JsValue>) -> JsValue {
    let item = Object::new();
    set(&item, "type", &JsValue::from_str(kind));
    set(&item, "content", &JsValue::from_str(&delta.content));
    set(&item, "thinking", &JsValue::from_str(&delta.thinking));
    if let Some(response) = response {
        set(&item, "response", &response);
    }
    item.into()
}

fn iterator_result(value: Option<JsValue>) -> JsValue {
    let result = Object::new();
    set(&result, "done", &JsValue::from_bool(value.is_none()));
    set(&result, "value", &value.unwrap_or(JsValue::UNDEFINED));
    result.into()
}

// ---------------------------------------------------------------------------------------
// Thinking extraction

/// What joins the pieces of thinking ([`crate::thinking::SEPARATOR`]), for the package's
/// entry, which joins the slices `extractThinkingSpans` gives. Not part of the typed API.
#[wasm_bindgen(js_name = thinkingSeparator, skip_typescript)]
pub fn thinking_separator() -> String {
    crate::thinking::SEPARATOR.to_string()
}

thread_local! {
    /// Where the package's entry writes the text of `extractThinking`, reused from call to
    /// call (see [`thinking_input`]).
    static THINKING_INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A view of wasm memory with room for `capacity` bytes, for the package's entry to write
/// an answer into with `TextEncoder.encodeInto` before [`extract_thinking_spans`]: three
/// times as fast as `TextEncoder.encode` on text that is not all ASCII, and no copy. Not
/// part of the typed API.
///
/// The view is valid until the next call into wasm (which may grow its memory and detach
/// it): the entry writes into it at once and calls nothing in between.
#[wasm_bindgen(js_name = thinkingInput, skip_typescript)]
pub fn thinking_input(capacity: usize) -> js_sys::Uint8Array {
    THINKING_INPUT.with(|input| {
        let mut input = input.borrow_mut();
        // Grown as needed and kept (bytes past what is written are never read), but not
        // kept at many times the size the calls need.
        if input.len() > capacity.max(1 << 20) * 4 {
            *input = Vec::new();
        }
        if input.len() < capacity {
            input.resize(capacity, 0);
        }
        // SAFETY: the view aliases the buffer only until JavaScript's next call into wasm,
        // before which nothing in wasm runs; the buffer is only read again by that call.
        unsafe { js_sys::Uint8Array::view(&input) }
    })
}

/// `extractThinking` as positions, for the package's entry: the text is the first `length`
/// bytes written into [`thinking_input`]'s view, the separate reasoning comes as
/// `TextEncoder`'s UTF-8, and the result goes back as UTF-16 offsets, which the entry turns
/// into slices of the caller's own strings: no text is decoded out of wasm memory. Not
/// part of the typed API.
///
/// The numbers: `[unclosed, reasoning start, reasoning end, content range count, then the
/// content ranges' start and end, then the thinking ranges']`: [`crate::thinking::Spans`],
/// an empty reasoning range for none. Lone surrogates, which `TextEncoder` turns into U+FFFD, keep
/// their one unit.
#[wasm_bindgen(js_name = extractThinkingSpans, skip_typescript)]
pub fn extract_thinking_spans(
    length: usize,
    reasoning: Option<Vec<u8>>,
) -> Result<Vec<u32>, JsValue> {
    THINKING_INPUT.with(|input| {
        let input = input.borrow();
        let text = input.get(..length).ok_or_else(|| {
            js_error(&Error::config(
                "text",
                "is longer than the space written into",
            ))
        })?;
        spans_to_js(text, reasoning.as_deref())
    })
}

fn spans_to_js(text: &[u8], reasoning: Option<&[u8]>) -> Result<Vec<u32>, JsValue> {
    let utf8 = |bytes, name| {
        std::str::from_utf8(bytes)
            .map_err(|e| js_error(&Error::config(name, format!("is not valid UTF-8: {e}"))))
    };
    let content = utf8(text, "text")?;
    let reasoning = reasoning
        .map(|r| utf8(r, "separateReasoning"))
        .transpose()?;
    let spans = ThinkingExtractor::default().spans(content, reasoning);
    let reasoning_range = match (reasoning, &spans.reasoning) {
        (Some(r), Some(range)) => {
            let mut cursor = Utf16Cursor::new(r);
            [
                cursor.units_at(range.start) as u32,
                cursor.units_at(range.end) as u32,
            ]
        }
        _ => [0, 0],
    };
    let mut out = vec![
        u32::from(spans.unclosed),
        reasoning_range[0],
        reasoning_range[1],
        spans.content.len() as u32,
    ];
    let thinking_at = out.len() + 2 * spans.content.len();
    let ranges = spans.content.iter().chain(&spans.thinking);
    out.extend(ranges.flat_map(|r| [r.start as u32, r.end as u32]));
    // The byte offsets become UTF-16 offsets in one pass over the text: the content's and
    // the thinking's each ascend, so taking the lower of the two next ones goes in order.
    let mut cursor = Utf16Cursor::new(content);
    let (mut c, mut t) = (4, thinking_at);
    while c < thinking_at || t < out.len() {
        let i = if t == out.len() || (c < thinking_at && out[c] <= out[t]) {
            c += 1;
            c - 1
        } else {
            t += 1;
            t - 1
        };
        out[i] = cursor.units_at(out[i] as usize) as u32;
    }
    Ok(out)
}

thread_local! {
    /// Property names and the empty string, made once: most pushes of a stream have an
    /// empty content or thinking delta, and each string crossing costs a decode.
    static KEYS: (JsValue, JsValue, JsValue) =
        (JsValue::from_str("content"), JsValue::from_str("thinking"), JsValue::from_str(""));
}

/// `text` as a JavaScript string, the empty one shared.
fn js_text(text: &str, empty: &JsValue) -> JsValue {
    if text.is_empty() {
        empty.clone()
    } else {
        JsValue::from_str(text)
    }
}

/// The streaming thinking extractor: `push(chunk)` and `finish()` give the content and
/// thinking that became certain.
#[wasm_bindgen(js_name = ThinkingStream, skip_typescript)]
pub struct JsThinkingStream {
    inner: ThinkingStream,
    delta: ThinkingDelta,
}

#[wasm_bindgen(js_class = ThinkingStream)]
impl JsThinkingStream {
    /// `options.starts_in_thinking`: the text begins inside a pre-filled `<think>`;
    /// `options.tags`: the tag names (default `thinking`, `reasoning`, `think`).
    #[wasm_bindgen(skip_typescript, constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_param_type = "ThinkingStreamOptions | null")] options: Option<
            Object,
        >,
    ) -> Result<JsThinkingStream, JsValue> {
        let options: JsStreamOptions = from_js_or_default(options, "options")?;
        let extractor = match options.tags {
            Some(tags) => ThinkingExtractor::new(tags).map_err(|e| js_error(&e))?,
            None => ThinkingExtractor::default(),
        };
        Ok(JsThinkingStream {
            inner: extractor.stream(StreamOptions {
                starts_in_thinking: options.starts_in_thinking,
            }),
            delta: ThinkingDelta::default(),
        })
    }

    /// Feeds answer text; returns the new content and thinking.
    #[wasm_bindgen(skip_typescript, unchecked_return_type = "ThinkingDelta")]
    pub fn push(&mut self, chunk: &str) -> JsValue {
        self.delta.content.clear();
        self.delta.thinking.clear();
        self.inner.push_into(chunk, &mut self.delta);
        delta_object(&self.delta)
    }

    /// Feeds a provider's separate reasoning text (`reasoning_content` deltas).
    #[wasm_bindgen(skip_typescript, js_name = pushReasoning, unchecked_return_type = "ThinkingDelta")]
    pub fn push_reasoning(&mut self, chunk: &str) -> JsValue {
        delta_object(&self.inner.push_reasoning(chunk))
    }

    /// Ends the text: returns what was held back.
    #[wasm_bindgen(skip_typescript, unchecked_return_type = "ThinkingDelta")]
    pub fn finish(&mut self) -> JsValue {
        delta_object(&self.inner.finish())
    }

    /// Whether a thinking block is open (after `finish()`: was never closed).
    #[wasm_bindgen(skip_typescript, getter)]
    pub fn unclosed(&self) -> bool {
        self.inner.unclosed()
    }
}

fn delta_object(delta: &ThinkingDelta) -> JsValue {
    let object = Object::new();
    KEYS.with(|(content, thinking, empty)| {
        let _ = Reflect::set(&object, content, &js_text(&delta.content, empty));
        let _ = Reflect::set(&object, thinking, &js_text(&delta.thinking, empty));
    });
    object.into()
}

#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct JsStreamOptions {
    starts_in_thinking: bool,
    tags: Option<Vec<String>>,
}

// ---------------------------------------------------------------------------------------
// RateLimiter

/// The rate limiter on its own: requests and tokens per minute, adapting to
/// `x-ratelimit-*` headers. Times are milliseconds since the epoch (`Date.now()` when
/// omitted).
#[wasm_bindgen(js_name = RateLimiter, skip_typescript)]
pub struct JsRateLimiter {
    inner: RateLimiter,
}

fn now_or(now_ms: Option<f64>) -> f64 {
    now_ms.unwrap_or_else(js_sys::Date::now)
}

#[wasm_bindgen(js_class = RateLimiter)]
impl JsRateLimiter {
    /// A limiter for `limits` (default 60 requests and 90,000 tokens per minute).
    #[wasm_bindgen(skip_typescript, constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_param_type = "RateLimitConfig | null")] limits: Option<Object>,
    ) -> Result<JsRateLimiter, JsValue> {
        let limits: crate::config::RateLimitConfig = from_js_or_default(limits, "limits")?;
        limits.validate("limits").map_err(|e| js_error(&e))?;
        Ok(JsRateLimiter {
            inner: RateLimiter::new(limits),
        })
    }

    /// Reserves a request of `tokens` estimated tokens; wait `wait_ms` before sending.
    #[wasm_bindgen(skip_typescript, unchecked_return_type = "Reservation")]
    pub fn reserve(&mut self, tokens: u32, now_ms: Option<f64>) -> JsValue {
        reservation_to_js(&self.inner.reserve(now_or(now_ms), tokens))
    }

    /// Like `reserve`, returning only the wait in milliseconds, for a caller that never
    /// reconciles (the cheapest decision).
    #[wasm_bindgen(skip_typescript, js_name = reserveWait)]
    pub fn reserve_wait(&mut self, tokens: u32, now_ms: Option<f64>) -> f64 {
        self.inner.reserve_wait(now_or(now_ms), tokens)
    }

    /// How much longer `reservation` must wait because of a server signal, or `null`.
    #[wasm_bindgen(skip_typescript, js_name = blockedFor)]
    pub fn blocked_for(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Reservation")] reservation: JsValue,
        now_ms: Option<f64>,
    ) -> Result<Option<f64>, JsValue> {
        let reservation = reservation_from_js(&reservation)?;
        Ok(self.inner.blocked_for(&reservation, now_or(now_ms)))
    }

    /// The request finished having used `actualTokens` (omit when unknown).
    #[wasm_bindgen(skip_typescript)]
    pub fn reconcile(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "Reservation")] reservation: JsValue,
        actual_tokens: Option<u32>,
    ) -> Result<(), JsValue> {
        let reservation = reservation_from_js(&reservation)?;
        self.inner.reconcile(&reservation, actual_tokens);
        Ok(())
    }

    /// The request was never sent: its tokens come back.
    #[wasm_bindgen(skip_typescript)]
    pub fn cancel(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "Reservation")] reservation: JsValue,
    ) -> Result<(), JsValue> {
        let reservation = reservation_from_js(&reservation)?;
        self.inner.cancel(&reservation);
        Ok(())
    }

    /// Adapts to a response's headers (a `Headers` object or a plain object).
    #[wasm_bindgen(skip_typescript)]
    pub fn observe(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "Headers | Record<string, string>")] headers: JsValue,
        status: u16,
        #[wasm_bindgen(unchecked_param_type = "Reservation | null")] reservation: JsValue,
        now_ms: Option<f64>,
    ) -> Result<(), JsValue> {
        let headers = headers_from_js(&headers)?;
        let reservation: Option<Reservation> =
            if reservation.is_undefined() || reservation.is_null() {
                None
            } else {
                Some(reservation_from_js(&reservation)?)
            };
        self.inner
            .observe(now_or(now_ms), &headers, status, reservation.as_ref());
        Ok(())
    }

    /// The limiter's state.
    #[wasm_bindgen(skip_typescript, unchecked_return_type = "RateLimitStatus")]
    pub fn status(&self, now_ms: Option<f64>) -> Result<JsValue, JsValue> {
        to_js(&self.inner.status(now_or(now_ms)))
    }
}

// A reservation crosses as a plain object of five numbers, made and read in one call
// each: through JSON text it cost twenty times the decision itself.
fn reservation_to_js(reservation: &Reservation) -> JsValue {
    make_reservation(
        reservation.id as f64,
        f64::from(reservation.tokens),
        reservation.wait_ms,
        reservation.start_at_ms,
        reservation.reserved_through as f64,
    )
}

fn reservation_from_js(value: &JsValue) -> Result<Reservation, JsValue> {
    let numbers = reservation_numbers(value).filter(|n| n.len() == 5).ok_or_else(|| {
        js_error(&Error::config(
            "reservation",
            "must be a reservation from reserve(): { id, tokens, wait_ms, start_at_ms, reserved_through }",
        ))
    })?;
    Ok(Reservation {
        id: numbers[0] as u64,
        tokens: numbers[1] as u32,
        wait_ms: numbers[2],
        start_at_ms: numbers[3],
        reserved_through: numbers[4] as u64,
    })
}

/// A fetch `Headers` object (anything with `entries()`) or a plain object of strings.
fn headers_from_js(value: &JsValue) -> Result<Headers, JsValue> {
    let entries = Reflect::get(value, &"entries".into())
        .ok()
        .and_then(|f| f.dyn_into::<Function>().ok());
    let iterable = match entries {
        Some(entries) => entries.call0(value)?,
        None => Object::entries(value.dyn_ref::<Object>().ok_or_else(|| {
            js_error(&Error::config(
                "headers",
                "must be a Headers object or a plain object",
            ))
        })?)
        .into(),
    };
    let mut headers = Headers::new();
    for pair in js_sys::try_iter(&iterable)?.into_iter().flatten() {
        let pair = pair?;
        let name = Reflect::get_u32(&pair, 0)?.as_string();
        let value = Reflect::get_u32(&pair, 1)?.as_string();
        if let (Some(name), Some(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    Ok(headers)
}

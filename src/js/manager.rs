//! `ProviderManager` for JavaScript: every method reads its arguments, calls the core's
//! manager and hands back a promise (or, for `stream`, a stream the package's entry makes
//! async-iterable).

use std::rc::Rc;

use js_sys::{Array, Function, Object, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::future_to_promise;

use super::convert::{
    abortable, call_arguments, environment, from_js, from_js_or_default, json_text, promise, set,
    split_options, to_js,
};
use super::errors::js_error;
use super::streams::JsCompletionStream;
use crate::chat::{LlmResponse, Prompt};
use crate::config::GenerationConfig;
use crate::error::Error;
use crate::manager::{BatchOptions, ProviderManager, Route};
use crate::wasm::WasmRuntime;

/// Providers by name with failover, retries, rate limiting, batches and streaming.
#[wasm_bindgen(js_name = ProviderManager, skip_typescript)]
pub struct JsProviderManager {
    inner: Rc<ProviderManager<WasmRuntime>>,
}

impl JsProviderManager {
    /// One answer as a promise: reads the arguments, then generates along `route`,
    /// abortable by `options.signal`. Bad arguments reject the promise, as every failure
    /// of an async call does.
    fn answer(
        &self,
        prompt: JsValue,
        config: Option<Object>,
        route: Result<Route, JsValue>,
        options: Option<Object>,
    ) -> Promise {
        let arguments =
            route.and_then(|route| Ok((route, call_arguments(prompt, config, options)?)));
        match arguments {
            Ok((route, (prompt, config, call, signal))) => {
                let manager = Rc::clone(&self.inner);
                promise(async move {
                    abortable(signal, manager.generate(&prompt, &config, &route, &call)).await
                })
            }
            Err(error) => Promise::reject(&error),
        }
    }
}

/// The route to provider `provider` (the default when `null` or `undefined`).
fn provider_route(provider: JsValue) -> Result<Route, JsValue> {
    let provider: Option<String> = from_js(provider, "provider")?;
    Ok(Route::provider(provider.as_deref()))
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
        self.answer(prompt, config, provider_route(provider), options)
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
        let route = from_js::<Option<Vec<String>>>(order, "order")
            .and_then(|order| Route::failover(order).map_err(|e| js_error(&e)));
        self.answer(prompt, config, route, options)
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

    /// Streams an answer: the package's entry makes it an async iterable of
    /// `{ type: "delta", content, thinking }` items, then one `{ type: "done", response }`.
    #[wasm_bindgen(skip_typescript)]
    pub fn stream(
        &self,
        #[wasm_bindgen(unchecked_param_type = "Prompt")] prompt: JsValue,
        #[wasm_bindgen(unchecked_param_type = "GenerationConfig | null")] config: Option<Object>,
        #[wasm_bindgen(unchecked_param_type = "string | null")] provider: JsValue,
        #[wasm_bindgen(unchecked_param_type = "CallOptions | null")] options: Option<Object>,
    ) -> Result<JsCompletionStream, JsValue> {
        let (prompt, config, call, signal) = call_arguments(prompt, config, options)?;
        let route = provider_route(provider)?;
        let manager = Rc::clone(&self.inner);
        let opening =
            Box::pin(async move { manager.stream(&prompt, &config, &route, &call).await });
        Ok(JsCompletionStream::new(opening, signal))
    }

    /// The names of the providers that could be set up.
    #[wasm_bindgen(skip_typescript, js_name = listProviders)]
    pub fn list_providers(&self) -> Vec<String> {
        self.inner.list_providers()
    }

    /// Every configured provider by name: type, model, availability and why not, rate
    /// limiter (the design's `get_provider_status()`).
    #[wasm_bindgen(skip_typescript, js_name = providerStatus, unchecked_return_type = "Record<string, ProviderStatus>")]
    pub fn provider_status(&self) -> Result<JsValue, JsValue> {
        to_js(&self.inner.status_by_name())
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

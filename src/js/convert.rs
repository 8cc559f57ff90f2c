//! Values across the boundary: JavaScript arguments read as the core's types (through
//! JSON text, so each type has one deserializer in the binary), results written back, the
//! abort signal of an options object, and a core future as a promise.

use std::future::Future;
use std::pin::pin;

use futures_util::future::{select, Either};
use js_sys::{Function, Object, Promise, Reflect};
use serde::de::DeserializeOwned;
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::{future_to_promise, JsFuture};
use web_sys::AbortSignal;

use super::errors::js_error;
use crate::chat::Prompt;
use crate::client::CallOptions;
use crate::config::{from_json_text, GenerationConfig};
use crate::error::Error;
use crate::wasm::describe;

/// A JavaScript value as `T`, the error naming the path of the field at fault.
///
/// Values cross as JSON text (`JSON.stringify`, then serde_json): one deserializer per type
/// in the binary instead of one per input format, which keeps the package small. Functions
/// and `undefined` drop out as JSON has them; a cycle or a BigInt is a configuration error.
pub(super) fn from_js<T: DeserializeOwned>(value: JsValue, root: &str) -> Result<T, JsValue> {
    from_json_text(&json_text(&value, root)?, root).map_err(|e| js_error(&e))
}

/// `JSON.stringify(value)`; the error names `root`.
pub(super) fn json_text(value: &JsValue, root: &str) -> Result<String, JsValue> {
    match js_sys::JSON::stringify(value) {
        Ok(text) => Ok(text.as_string().unwrap_or_else(|| "null".to_string())),
        Err(e) => Err(js_error(&Error::config(
            root,
            format!("cannot be read as JSON: {}", describe(&e)),
        ))),
    }
}

/// An optional argument: `undefined` and `null` give the default.
pub(super) fn from_js_or_default<T: DeserializeOwned + Default>(
    value: Option<Object>,
    root: &str,
) -> Result<T, JsValue> {
    match value {
        Some(object) if !object.is_null() && !object.is_undefined() => from_js(object.into(), root),
        _ => Ok(T::default()),
    }
}

/// `value` as plain JavaScript data, through JSON (see [`from_js`]).
pub(super) fn to_js<T: Serialize + ?Sized>(value: &T) -> Result<JsValue, JsValue> {
    let json = serde_json::to_string(value).map_err(|e| {
        JsValue::from(js_sys::Error::new(&format!(
            "cannot convert the result: {e}"
        )))
    })?;
    js_sys::JSON::parse(&json)
}

pub(super) fn set(target: &Object, key: &str, value: &JsValue) {
    // Setting a property on a fresh plain object cannot fail.
    let _ = Reflect::set(target, &JsValue::from_str(key), value);
}

/// Looks up API keys left empty in the configuration: `process.env` in Node, nothing in
/// browsers (where keys must be given in the configuration).
pub(super) fn environment(name: &str) -> Option<String> {
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
pub(super) fn split_options(
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
pub(super) fn call_arguments(
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
pub(super) async fn abortable<T>(
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

pub(super) fn promise<T: Serialize>(
    future: impl Future<Output = Result<T, Error>> + 'static,
) -> Promise {
    future_to_promise(async move {
        match future.await {
            Ok(value) => to_js(&value),
            Err(error) => Err(js_error(&error)),
        }
    })
}

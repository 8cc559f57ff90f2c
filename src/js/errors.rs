//! Errors as JavaScript sees them: real `Error` objects named `LlmDistillerError`, with the
//! machine-readable fields of openai-node's error classes. The one place errors convert.

use js_sys::{Array, Object};
use wasm_bindgen::JsValue;

use super::convert::set;
use crate::error::Error;

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

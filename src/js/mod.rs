//! The JavaScript bindings (feature `js`): a thin wasm-bindgen layer over the core, one
//! file per role: [`manager`] (`ProviderManager`), [`streams`] (a streamed answer),
//! [`thinking`] (`extractThinking`'s positions, `ThinkingStream`), [`limiter`]
//! (`RateLimiter`), [`export`] (`exportRecord`), [`errors`] (`LlmDistillerError`) and
//! [`convert`] (values across the boundary).
//!
//! Every export converts its arguments (JSON text, the same snake_case shapes as the core's
//! config), calls the core, and converts the result back; errors become real `Error`
//! objects in one place ([`js_error`]). No decision is made here. The platform (fetch,
//! timers, clock, randomness) is [`crate::wasm::WasmRuntime`]. What is easier in
//! JavaScript (the async-iterator protocol, `typeof` checks of string arguments) lives in
//! the package's entry, `js/`.

mod convert;
mod errors;
mod export;
mod limiter;
mod manager;
mod streams;
mod thinking;

pub use errors::js_error;
pub use export::js_export_record;
pub use limiter::JsRateLimiter;
pub use manager::JsProviderManager;
pub use streams::JsCompletionStream;
pub use thinking::{extract_thinking_spans, thinking_input, thinking_separator, JsThinkingStream};

use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &str = include_str!("types.d.ts");

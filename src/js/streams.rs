//! A streamed answer for JavaScript: `next()` resolves to the next item, or `undefined` at
//! the end; `close()` aborts the request. The package's entry puts the async-iterator
//! protocol on top (`for await`), and calls `next()` one at a time.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use js_sys::{Object, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;
use web_sys::AbortSignal;

use super::convert::{abortable, set, to_js};
use super::errors::js_error;
use crate::client::{CompletionStream, StreamEvent};
use crate::error::Error;
use crate::thinking::ThinkingDelta;
use crate::wasm::WasmRuntime;

/// The request under way, until the stream opens.
pub(super) type Opening =
    Pin<Box<dyn Future<Output = Result<CompletionStream<WasmRuntime>, Error>>>>;

enum Stage {
    Opening(Opening),
    Open(Box<CompletionStream<WasmRuntime>>),
}

/// A streamed answer, opened by the first `next()`. Not part of the typed API: the
/// package's entry wraps it in its `CompletionStream`.
#[wasm_bindgen(js_name = CompletionStreamSource, skip_typescript)]
pub struct JsCompletionStream {
    /// `None` while a `next()` is under way, and once the stream is over.
    stage: Rc<RefCell<Option<Stage>>>,
    signal: Option<AbortSignal>,
    /// Set by `close()`: a `next()` in flight drops the stream when it settles.
    closed: Rc<Cell<bool>>,
}

impl JsCompletionStream {
    pub(super) fn new(opening: Opening, signal: Option<AbortSignal>) -> Self {
        JsCompletionStream {
            stage: Rc::new(RefCell::new(Some(Stage::Opening(opening)))),
            signal,
            closed: Rc::default(),
        }
    }
}

#[wasm_bindgen(js_class = CompletionStreamSource)]
impl JsCompletionStream {
    /// The next item (`{ type: "delta", content, thinking }`, then one `{ type: "done",
    /// response }`), or `undefined` once the stream is over. One call at a time.
    pub fn next(&self) -> Promise {
        let stage = Rc::clone(&self.stage);
        let signal = self.signal.clone();
        let closed = Rc::clone(&self.closed);
        let taken = stage.borrow_mut().take();
        future_to_promise(async move {
            let mut stream = match taken {
                Some(Stage::Opening(opening)) => abortable(signal.clone(), opening)
                    .await
                    .map_err(|e| js_error(&e))?,
                Some(Stage::Open(stream)) => *stream,
                None => return Ok(JsValue::UNDEFINED),
            };
            let event = abortable(signal, async { stream.next().await.transpose() })
                .await
                .map_err(|e| js_error(&e))?;
            match event {
                Some(StreamEvent::Delta(delta)) => {
                    if !closed.get() {
                        *stage.borrow_mut() = Some(Stage::Open(Box::new(stream)));
                    }
                    Ok(item("delta", &delta, None))
                }
                Some(StreamEvent::Done(response)) => Ok(item(
                    "done",
                    &ThinkingDelta::default(),
                    Some(to_js(&*response)?),
                )),
                None => Ok(JsValue::UNDEFINED),
            }
        })
    }

    /// Ends the stream early, aborting the request (a `next()` under way settles first).
    pub fn close(&self) {
        self.closed.set(true);
        self.stage.borrow_mut().take();
    }
}

fn item(kind: &str, delta: &ThinkingDelta, response: Option<JsValue>) -> JsValue {
    let item = Object::new();
    set(&item, "type", &JsValue::from_str(kind));
    set(&item, "content", &JsValue::from_str(&delta.content));
    set(&item, "thinking", &JsValue::from_str(&delta.thinking));
    if let Some(response) = response {
        set(&item, "response", &response);
    }
    item.into()
}

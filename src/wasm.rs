//! The WebAssembly runtime behind the core's seam: the global `fetch` (through gloo-net),
//! `setTimeout`, `Date.now` and `crypto.getRandomValues`.
//!
//! It only adapts: every decision is the core's. It works wherever those globals exist:
//! Node ≥ 18, browsers and workerd. Dropping a future aborts what it started: a fetch or
//! a body read aborts its `AbortController`, a sleep clears its timer, so a cancelled call
//! leaves nothing running and keeps no process alive. In Workers no `cache`, `credentials`
//! or `mode` is ever set on a request (workerd throws on them).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use gloo_net::http::Request;
use js_sys::{Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortController, ReadableStreamDefaultReader};

use crate::http::{Headers, HttpRequest};
use crate::runtime::{HttpResponse, ResponseBody, Runtime, TransportError};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &js_sys::Function, ms: f64) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: &JsValue);
    #[wasm_bindgen(catch, js_namespace = crypto, js_name = getRandomValues)]
    fn get_random_values(buffer: &js_sys::Uint32Array) -> Result<JsValue, JsValue>;
}

/// The longest delay `setTimeout` takes (2^31 - 1 ms); longer sleeps chain timers.
const MAX_TIMER_MS: f64 = 2_147_483_647.0;

/// The platform of browsers, Node and Workers.
#[derive(Clone, Copy, Debug, Default)]
pub struct WasmRuntime;

/// Aborts its request when dropped (a no-op once the request has finished).
struct AbortOnDrop(Option<AbortController>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(controller) = self.0.take() {
            controller.abort();
        }
    }
}

/// A response body read from the fetch `ReadableStream`.
pub struct WasmBody {
    reader: Option<ReadableStreamDefaultReader>,
    _abort: AbortOnDrop,
}

impl ResponseBody for WasmBody {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        let Some(reader) = &self.reader else {
            return Ok(None);
        };
        let result = JsFuture::from(reader.read())
            .await
            .map_err(|e| TransportError(describe(&e)))?;
        let done = Reflect::get(&result, &"done".into())
            .map(|d| d.is_truthy())
            .unwrap_or(true);
        if done {
            self.reader = None;
            return Ok(None);
        }
        let value = Reflect::get(&result, &"value".into()).unwrap_or(JsValue::UNDEFINED);
        match value.dyn_into::<Uint8Array>() {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(_) => Err(TransportError(
                "the body stream gave a chunk that is not bytes".into(),
            )),
        }
    }
}

impl Runtime for WasmRuntime {
    type Body = WasmBody;

    async fn fetch(&self, request: HttpRequest) -> Result<HttpResponse<WasmBody>, TransportError> {
        let controller = AbortController::new().map_err(|e| TransportError(describe(&e)))?;
        let abort = AbortOnDrop(Some(controller.clone()));
        let mut builder = Request::post(&request.url).abort_signal(Some(&controller.signal()));
        for (name, value) in request.headers.iter() {
            builder = builder.header(name, value);
        }
        let response = builder
            .body(request.body)
            .map_err(|e| TransportError(e.to_string()))?
            .send()
            .await
            .map_err(|e| TransportError(e.to_string()))?;
        let headers: Headers = response.headers().entries().collect();
        let reader = match response.body() {
            Some(stream) => Some(
                stream
                    .get_reader()
                    .dyn_into::<ReadableStreamDefaultReader>()
                    .map_err(|_| TransportError("the body has no default reader".into()))?,
            ),
            None => None,
        };
        Ok(HttpResponse {
            status: response.status(),
            headers,
            body: WasmBody {
                reader,
                _abort: abort,
            },
        })
    }

    fn sleep(&self, ms: f64) -> impl Future<Output = ()> {
        Sleep::new(ms)
    }

    fn now_ms(&self) -> f64 {
        js_sys::Date::now()
    }

    fn random(&self) -> f64 {
        let buffer = js_sys::Uint32Array::new_with_length(1);
        match get_random_values(&buffer) {
            Ok(_) => f64::from(buffer.get_index(0)) / 4_294_967_296.0,
            // No Web Crypto (a very old runtime): jitter needs no cryptographic quality.
            Err(_) => js_sys::Math::random(),
        }
    }
}

/// A `setTimeout` as a future; dropping it clears the timer.
struct Sleep {
    remaining_ms: f64,
    timer: Option<(JsValue, JsFuture)>,
}

impl Sleep {
    fn new(ms: f64) -> Self {
        let ms = if ms.is_finite() {
            ms.max(0.0)
        } else {
            MAX_TIMER_MS
        };
        Sleep {
            remaining_ms: ms,
            timer: None,
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if let Some((_, future)) = &mut self.timer {
                match Pin::new(future).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(_) => self.timer = None,
                }
                if self.remaining_ms <= 0.0 {
                    return Poll::Ready(());
                }
            }
            let step = self.remaining_ms.min(MAX_TIMER_MS);
            self.remaining_ms -= step;
            let mut id = JsValue::UNDEFINED;
            let promise = Promise::new(&mut |resolve, _reject| {
                id = set_timeout(&resolve, step);
            });
            self.timer = Some((id, JsFuture::from(promise)));
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some((id, _)) = self.timer.take() {
            clear_timeout(&id);
        }
    }
}

/// A readable description of a thrown JavaScript value (an `Error`'s message and cause).
pub fn describe(value: &JsValue) -> String {
    if let Some(error) = value.dyn_ref::<js_sys::Error>() {
        let mut text = String::from(error.message());
        let cause = error.cause();
        if let Some(cause) = cause.dyn_ref::<js_sys::Error>() {
            text.push_str(&format!(" ({})", String::from(cause.message())));
        } else if let Some(cause) = cause.as_string() {
            text.push_str(&format!(" ({cause})"));
        }
        return text;
    }
    value
        .as_string()
        .unwrap_or_else(|| "an unknown JavaScript error".to_string())
}

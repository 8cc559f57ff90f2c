//! The rate limiter on its own, for JavaScript callers that schedule their own requests.

use js_sys::{Function, Object, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use super::convert::{from_js_or_default, to_js};
use super::errors::js_error;
use crate::error::Error;
use crate::http::Headers;
use crate::rate_limit::{RateLimiter, Reservation};

#[wasm_bindgen(
    inline_js = "export function make_reservation(id, tokens, wait_ms, start_at_ms, reserved_through) {
  return { id, tokens, wait_ms, start_at_ms, reserved_through };
}
export function reservation_numbers(r) {
  if (r === null || typeof r !== 'object') return undefined;
  const n = [r.id, r.tokens, r.wait_ms, r.start_at_ms, r.reserved_through];
  return n.every((x) => typeof x === 'number' && Number.isFinite(x) && x >= 0) ? new Float64Array(n) : undefined;
}"
)]
extern "C" {
    fn make_reservation(
        id: f64,
        tokens: f64,
        wait_ms: f64,
        start_at_ms: f64,
        reserved_through: f64,
    ) -> JsValue;
    fn reservation_numbers(value: &JsValue) -> Option<Vec<f64>>;
}

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

//! The seam between the pure core and a platform: fetch, sleep, the clock, randomness.
//!
//! The core never reads a clock or opens a socket itself (`std::time` panics on
//! `wasm32-unknown-unknown`). A [`Runtime`] supplies all four: the `js` feature implements
//! it over `fetch`, `setTimeout`, `Date.now` and `crypto.getRandomValues`; native tests
//! implement it with a scripted transport and a fake clock, so a minute of rate limiting
//! runs in microseconds. Futures here need not be `Send`: wasm is single-threaded.
//!
//! Cancellation is by drop: dropping a future returned by [`Runtime::fetch`] or by
//! [`ResponseBody::next_chunk`] must abort the request. Timeouts are the core's business
//! (see [`with_timeout`]), so a runtime needs no timer logic of its own.

use std::future::Future;

use futures_util::future::{select, Either};

use crate::http::{Headers, HttpRequest};

/// A response whose body is still arriving.
#[derive(Debug)]
pub struct HttpResponse<B> {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers.
    pub headers: Headers,
    /// The body, read chunk by chunk.
    pub body: B,
}

/// The request never got an HTTP answer, or its body broke off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportError(pub String);

/// A response body, read as it arrives.
pub trait ResponseBody {
    /// The next chunk of bytes, `Ok(None)` at the end.
    fn next_chunk(&mut self) -> impl Future<Output = Result<Option<Vec<u8>>, TransportError>>;
}

/// What the core needs from a platform.
pub trait Runtime {
    /// The body type of this platform's responses.
    type Body: ResponseBody;

    /// Sends `request` and resolves once the status and headers have arrived.
    fn fetch(
        &self,
        request: HttpRequest,
    ) -> impl Future<Output = Result<HttpResponse<Self::Body>, TransportError>>;

    /// Resolves after `ms` milliseconds.
    fn sleep(&self, ms: f64) -> impl Future<Output = ()>;

    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> f64;

    /// A uniformly random number in `[0, 1)`, for jitter.
    fn random(&self) -> f64;
}

/// Runs `future`, or gives up after `ms` milliseconds (`None` when it ran out).
pub async fn with_timeout<R: Runtime, F: Future>(
    runtime: &R,
    ms: f64,
    future: F,
) -> Option<F::Output> {
    let future = std::pin::pin!(future);
    let timer = std::pin::pin!(runtime.sleep(ms));
    match select(future, timer).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(_) => None,
    }
}

/// Runs `attempt` until it succeeds or `policy`'s backoff gives up, sleeping the backoff
/// between tries: for retrying work of the caller's own (a database write or read), where
/// every failure is worth another try. `on_retry(attempt, &error)` hears of each failure
/// that is retried (numbered from 0), before its wait; the last error is returned.
pub async fn with_backoff<R: Runtime, T, E, F: Future<Output = Result<T, E>>>(
    runtime: &R,
    policy: &crate::retry::RetryPolicy,
    mut attempt: impl FnMut() -> F,
    mut on_retry: impl FnMut(u32, &E),
) -> Result<T, E> {
    let mut tries = 0;
    loop {
        let error = match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let Some(delay) = policy.backoff(tries, runtime.random()) else {
            return Err(error);
        };
        on_retry(tries, &error);
        runtime.sleep(delay).await;
        tries += 1;
    }
}

/// Why a body could not be read whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The transport broke off.
    Transport(TransportError),
    /// The body is longer than the limit, in bytes.
    TooLarge(usize),
}

/// Reads a whole body, failing once it exceeds `limit` bytes.
pub async fn read_to_end<B: ResponseBody>(
    body: &mut B,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next_chunk().await.map_err(ReadError::Transport)? {
        if out.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge(limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

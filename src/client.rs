//! One provider at work: rate limiter → request → retry → parse → extract.
//!
//! A [`Client`] owns a [`Provider`] (the HTTP mapping), its [`Budget`] (the rate limiter,
//! in memory or shared across isolates) and a [`Runtime`]. A call reserves its place,
//! sleeps until its start time, and sends. Reservations are given back by drop (a
//! `Permit`), so a cancelled or timed-out call never leaks budget.
//! Everything platform-specific is behind the runtime; this module is pure logic.

use std::cell::RefCell;
use std::future::Future;
use std::pin::pin;
use std::task::{Poll, Waker};

use futures_util::future::select;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::budget::{Budget, BudgetStatus, LocalBudget};
use crate::chat::{LlmResponse, Prompt, Usage};
use crate::config::GenerationConfig;
use crate::error::{Error, Result};
use crate::http::HttpRequest;
use crate::provider::{Completion, Provider};
use crate::rate_limit::{charged_tokens, estimate_prompt_tokens, Reservation};
use crate::retry::RetryPolicy;
use crate::runtime::{read_to_end, with_timeout, HttpResponse, ReadError, ResponseBody, Runtime};
use crate::stream::StreamAssembler;
use crate::thinking::{StreamOptions, ThinkingDelta, ThinkingExtractor};

/// The largest non-streamed response body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Per-call options.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct CallOptions {
    /// Overrides the provider's `timeout_ms` for each attempt of this call. For a stream,
    /// it bounds the wait for the headers and every gap between chunks.
    pub timeout_ms: Option<f64>,
    /// Whether a streamed answer begins inside a pre-filled thinking block (the prompt
    /// template opened `<think>`); see [`StreamOptions`].
    pub starts_in_thinking: bool,
    /// Asked once the call's turn in the budget has come, right before each attempt is
    /// sent: a closed gate ends the call with [`Error::Aborted`], nothing sent, its place
    /// given back (a batch cancelled while its lines waited for their turn).
    #[serde(skip)]
    pub gate: Option<Gate>,
}

/// Whether calls may still be sent: open until [`Gate::close`], shared by its clones. A
/// call waiting for its turn stops waiting when its gate closes.
#[derive(Clone, Debug, Default)]
pub struct Gate(Rc<RefCell<GateState>>);

#[derive(Debug, Default)]
struct GateState {
    closed: bool,
    waiting: Vec<Waker>,
}

impl Gate {
    /// An open gate.
    pub fn new() -> Self {
        Gate::default()
    }

    /// Closes it, for good: no call that asks it later is sent, and those waiting for
    /// their turn stop waiting.
    pub fn close(&self) {
        let waiting = {
            let mut state = self.0.borrow_mut();
            state.closed = true;
            std::mem::take(&mut state.waiting)
        };
        waiting.into_iter().for_each(Waker::wake);
    }

    /// Whether it was closed.
    pub fn is_closed(&self) -> bool {
        self.0.borrow().closed
    }

    /// Resolves once it is closed.
    pub fn closed(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let mut state = self.0.borrow_mut();
            if state.closed {
                return Poll::Ready(());
            }
            if !state.waiting.iter().any(|w| w.will_wake(cx.waker())) {
                state.waiting.push(cx.waker().clone());
            }
            Poll::Pending
        })
    }
}

impl PartialEq for Gate {
    fn eq(&self, other: &Gate) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

/// A provider with its budget, retry policy and runtime. Cheap to clone: clones share the
/// budget.
pub struct Client<R: Runtime> {
    inner: Rc<Inner<R>>,
}

impl<R: Runtime> Clone for Client<R> {
    fn clone(&self) -> Self {
        Client {
            inner: Rc::clone(&self.inner),
        }
    }
}

struct Inner<R: Runtime> {
    provider: Provider,
    budget: Rc<dyn Budget>,
    policy: RetryPolicy,
    extractor: ThinkingExtractor,
    runtime: Rc<R>,
}

/// A prepared call: the request and what it reserves.
struct Prepared {
    request: HttpRequest,
    /// The tokens to reserve: the prompt's estimate plus `completion_budget`.
    tokens: u32,
    /// The completion tokens the request allows (see [`GenerationConfig::completion_budget`]).
    completion_budget: u32,
    timeout_ms: f64,
    gate: Option<Gate>,
}

impl<R: Runtime> Client<R> {
    /// A client for `provider` with its own limiter in memory, set to the provider's
    /// configured budget.
    pub fn new(provider: Provider, runtime: Rc<R>) -> Self
    where
        R: 'static,
    {
        let budget = Rc::new(LocalBudget::new(
            provider.config().rate_limit,
            Rc::clone(&runtime),
        ));
        Self::with_budget(provider, runtime, budget)
    }

    /// A client for `provider` whose places come from `budget`.
    pub fn with_budget(provider: Provider, runtime: Rc<R>, budget: Rc<dyn Budget>) -> Self {
        let policy = provider.config().retry;
        Client {
            inner: Rc::new(Inner {
                budget,
                policy,
                extractor: ThinkingExtractor::default(),
                runtime,
                provider,
            }),
        }
    }

    /// The provider this client calls.
    pub fn provider(&self) -> &Provider {
        &self.inner.provider
    }

    /// The budget's state now.
    pub async fn budget_status(&self) -> BudgetStatus {
        self.inner.budget.status().await
    }

    /// The budget, to deliver what it holds for a remote limiter ([`Budget::flush`]).
    pub fn budget(&self) -> &dyn Budget {
        &*self.inner.budget
    }

    fn prepare(
        &self,
        prompt: &Prompt,
        config: &GenerationConfig,
        options: &CallOptions,
        stream: bool,
    ) -> Result<Prepared> {
        let messages = prompt.to_messages(config)?;
        let request = self
            .inner
            .provider
            .build_request(&messages, config, stream)?;
        let chars = messages.iter().map(|m| m.text_len()).sum();
        let completion_budget = config.completion_budget();
        let tokens =
            estimate_prompt_tokens(chars, messages.len()).saturating_add(completion_budget);
        let timeout_ms = match options.timeout_ms {
            Some(ms) if ms.is_finite() && ms > 0.0 => ms,
            Some(ms) => {
                return Err(Error::config(
                    "timeout_ms",
                    format!(
                        "must be a positive number of milliseconds, got {}",
                        crate::error::Number(ms)
                    ),
                ))
            }
            None => self.inner.provider.config().timeout_ms as f64,
        };
        Ok(Prepared {
            request,
            tokens,
            completion_budget,
            timeout_ms,
            gate: options.gate.clone(),
        })
    }

    /// Sleeps `ms`, or less if the call's gate closes meanwhile.
    async fn wait(&self, prepared: &Prepared, ms: f64) {
        let sleep = pin!(self.inner.runtime.sleep(ms));
        match &prepared.gate {
            Some(gate) => {
                select(sleep, pin!(gate.closed())).await;
            }
            None => sleep.await,
        }
    }

    /// Waits for the budget's go, adding the wait to `waited`.
    async fn admit(&self, prepared: &Prepared, waited: &mut f64) -> Permit {
        let budget = &self.inner.budget;
        let reservation = budget.reserve(prepared.tokens).await;
        let permit = Permit {
            budget: Rc::clone(budget),
            reservation,
            completion_budget: prepared.completion_budget,
            sent: false,
            settled: false,
        };
        if reservation.wait_ms > 0.0 {
            *waited += reservation.wait_ms;
            self.wait(prepared, reservation.wait_ms).await;
            // A 429 or an exhausted budget reported while this call slept pauses it too.
            // (A call that did not wait was scheduled after every signal so far.) The
            // bound keeps a misbehaving clock from looping forever.
            for _ in 0..100 {
                if prepared.gate.as_ref().is_some_and(Gate::is_closed) {
                    break;
                }
                match budget.blocked_for(reservation).await {
                    Some(ms) if ms > 0.0 => {
                        *waited += ms;
                        self.wait(prepared, ms).await;
                    }
                    _ => break,
                }
            }
        }
        permit
    }

    fn retry_delay(&self, attempt: u32, error: &Error) -> Option<f64> {
        self.inner
            .policy
            .next_delay(attempt, error, self.inner.runtime.random())
    }

    /// Generates one answer: waits for the limiter, sends, retries what is worth
    /// retrying, and returns the answer with its thinking separated.
    pub async fn generate(
        &self,
        prompt: &Prompt,
        config: &GenerationConfig,
        options: &CallOptions,
    ) -> Result<LlmResponse> {
        let prepared = self.prepare(prompt, config, options, false)?;
        let done = self
            .with_retries(&prepared, |reservation| {
                self.exchange(prepared.request.clone(), reservation)
            })
            .await?;
        let Attempted {
            value: completion,
            mut permit,
            started,
            attempts,
            waited_ms,
        } = done;
        permit.settle(completion.usage.as_ref());
        let mut response = self.respond(completion, self.inner.runtime.now_ms() - started);
        response.attempts = attempts;
        response.waited_ms = waited_ms;
        Ok(response)
    }

    /// Runs `attempt` until it succeeds or is not worth retrying: each attempt waits for
    /// the limiter first and runs within the timeout; failures wait as the retry policy
    /// says. The success comes with its permit (to settle with the real usage).
    async fn with_retries<T, F, Fut>(
        &self,
        prepared: &Prepared,
        mut attempt: F,
    ) -> Result<Attempted<T>>
    where
        F: FnMut(Reservation) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let runtime = &self.inner.runtime;
        let mut waited_ms = 0.0;
        let mut failures = 0u32;
        loop {
            let mut permit = self.admit(prepared, &mut waited_ms).await;
            if prepared.gate.as_ref().is_some_and(Gate::is_closed) {
                // Never sent: the permit gives its place back as it drops.
                return Err(Error::Aborted);
            }
            let started = runtime.now_ms();
            permit.sent = true;
            let outcome =
                with_timeout(&**runtime, prepared.timeout_ms, attempt(permit.reservation))
                    .await
                    .unwrap_or_else(|| Err(self.timeout(prepared.timeout_ms)));
            match outcome {
                Ok(value) => {
                    return Ok(Attempted {
                        value,
                        permit,
                        started,
                        attempts: failures + 1,
                        waited_ms,
                    })
                }
                Err(error) => {
                    drop(permit);
                    match self.retry_delay(failures, &error) {
                        Some(delay) => {
                            waited_ms += delay;
                            runtime.sleep(delay).await;
                            failures += 1;
                        }
                        None => return Err(error),
                    }
                }
            }
        }
    }

    /// Sends `request`, the one `reservation` admitted, and adapts the limiter to the
    /// response's headers, whatever its status.
    async fn send(
        &self,
        request: HttpRequest,
        reservation: &Reservation,
    ) -> Result<HttpResponse<R::Body>> {
        let runtime = &self.inner.runtime;
        let response = runtime
            .fetch(request)
            .await
            .map_err(|e| self.connection(&e.0))?;
        self.inner
            .budget
            .observe(&response.headers, response.status, reservation);
        Ok(response)
    }

    /// One attempt: send, read and parse the body.
    async fn exchange(&self, request: HttpRequest, reservation: Reservation) -> Result<Completion> {
        let runtime = &self.inner.runtime;
        let provider = &self.inner.provider;
        let response = self.send(request, &reservation).await?;
        let mut body = response.body;
        let bytes = read_to_end(&mut body, MAX_BODY_BYTES)
            .await
            .map_err(|e| self.read_error(e))?;
        provider.parse_response(response.status, &response.headers, &bytes, runtime.now_ms())
    }

    fn respond(&self, completion: Completion, response_time_ms: f64) -> LlmResponse {
        let extracted = self
            .inner
            .extractor
            .extract(&completion.content, completion.reasoning.as_deref());
        LlmResponse {
            content: extracted.content,
            reasoning: completion.reasoning,
            thinking: extracted.thinking,
            thinking_unclosed: extracted.unclosed,
            model: completion.model,
            usage: completion.usage,
            finish_reason: completion.finish_reason,
            response_time: response_time_ms / 1000.0,
            response_time_ms,
            provider: self.inner.provider.name().to_string(),
            id: completion.id,
            attempts: 1,
            waited_ms: 0.0,
            raw_response: Some(completion.raw),
        }
    }

    /// Starts a streamed answer. Failures before the first byte of the body (connection
    /// errors, 429, 5xx) are retried like [`Self::generate`]; once the body flows, an
    /// error ends the stream, since streamed text cannot be taken back.
    pub async fn stream(
        &self,
        prompt: &Prompt,
        config: &GenerationConfig,
        options: &CallOptions,
    ) -> Result<CompletionStream<R>> {
        let prepared = self.prepare(prompt, config, options, true)?;
        let runtime = &self.inner.runtime;
        let provider = &self.inner.provider;
        let opened = self
            .with_retries(&prepared, |reservation| {
                let request = prepared.request.clone();
                async move {
                    let mut response = self.send(request, &reservation).await?;
                    if (200..300).contains(&response.status) {
                        return Ok(response.body);
                    }
                    let bytes = read_to_end(&mut response.body, MAX_BODY_BYTES)
                        .await
                        .map_err(|e| self.read_error(e))?;
                    Err(provider.error_from_response(
                        response.status,
                        &response.headers,
                        &bytes,
                        runtime.now_ms(),
                    ))
                }
            })
            .await?;
        let options = StreamOptions {
            starts_in_thinking: options.starts_in_thinking,
        };
        Ok(CompletionStream {
            client: self.clone(),
            assembler: Some(StreamAssembler::new(&self.inner.extractor, options)),
            body: Some(opened.value),
            permit: Some(opened.permit),
            started: opened.started,
            attempts: opened.attempts,
            waited_ms: opened.waited_ms,
            timeout_ms: prepared.timeout_ms,
            last: None,
            broken: None,
        })
    }

    fn timeout(&self, after_ms: f64) -> Error {
        Error::Timeout {
            provider: self.inner.provider.name().to_string(),
            after_ms,
        }
    }

    fn connection(&self, message: &str) -> Error {
        Error::Connection {
            provider: self.inner.provider.name().to_string(),
            message: self.inner.provider.redact(message),
        }
    }

    fn read_error(&self, error: ReadError) -> Error {
        match error {
            ReadError::Transport(e) => self.connection(&format!("the body broke off: {}", e.0)),
            ReadError::TooLarge(limit) => Error::InvalidResponse {
                provider: self.inner.provider.name().to_string(),
                message: format!("the body exceeds {limit} bytes"),
            },
        }
    }
}

/// A successful attempt, with what the caller needs to finish the call.
struct Attempted<T> {
    value: T,
    permit: Permit,
    started: f64,
    attempts: u32,
    waited_ms: f64,
}

/// A place in the budget, given back when dropped: cancelled if the request was never
/// sent, settled with the estimate if it was and its usage is unknown.
struct Permit {
    budget: Rc<dyn Budget>,
    reservation: Reservation,
    completion_budget: u32,
    sent: bool,
    settled: bool,
}

impl Permit {
    /// Reconciles the reservation with what the server charged for `usage` (see
    /// [`charged_tokens`]); with no usage reported, the estimate stands.
    fn settle(&mut self, usage: Option<&Usage>) {
        if !self.settled {
            self.settled = true;
            let charged = usage
                .map(|u| charged_tokens(u.prompt_tokens, u.total_tokens, self.completion_budget));
            self.budget.reconcile(&self.reservation, charged);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        self.settled = true;
        if self.sent {
            self.budget.reconcile(&self.reservation, None);
        } else {
            self.budget.cancel(&self.reservation);
        }
    }
}

/// What a stream yields: deltas as they become certain, then the whole answer.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// New content and thinking text.
    Delta(ThinkingDelta),
    /// The stream ended; the assembled answer (the same text as the deltas).
    Done(Box<LlmResponse>),
}

/// A streamed answer in progress. Dropping it aborts the request.
pub struct CompletionStream<R: Runtime> {
    client: Client<R>,
    assembler: Option<StreamAssembler>,
    body: Option<R::Body>,
    permit: Option<Permit>,
    started: f64,
    attempts: u32,
    waited_ms: f64,
    timeout_ms: f64,
    /// The whole answer, when its last delta is given first.
    last: Option<LlmResponse>,
    /// What arrived before the error that ended the stream.
    broken: Option<LlmResponse>,
}

impl<R: Runtime> CompletionStream<R> {
    /// The provider that answers (after a failover: the one that opened the stream).
    pub fn provider(&self) -> &Provider {
        self.client.provider()
    }

    /// The answer as far as it arrived, while the stream runs or after an error ended it:
    /// what to keep of a broken or abandoned stream. `None` once [`StreamEvent::Done`]
    /// handed out the whole answer.
    pub fn received(&self) -> Option<LlmResponse> {
        let inner = &self.client.inner;
        match &self.assembler {
            Some(assembler) => Some(self.stamped(
                assembler.partial_response(&inner.provider, inner.runtime.now_ms() - self.started),
            )),
            None => self.broken.clone().or_else(|| self.last.clone()),
        }
    }

    /// `response` with this call's attempts and waits.
    fn stamped(&self, mut response: LlmResponse) -> LlmResponse {
        response.attempts = self.attempts;
        response.waited_ms = self.waited_ms;
        response
    }

    /// The next event, or `None` after [`StreamEvent::Done`] or an error.
    pub async fn next(&mut self) -> Option<Result<StreamEvent>> {
        if let Some(response) = self.last.take() {
            return Some(Ok(StreamEvent::Done(Box::new(response))));
        }
        loop {
            let assembler = self.assembler.as_mut()?;
            let client = &self.client.inner;
            let provider = &client.provider;
            let runtime = &client.runtime;
            let chunk = if assembler.is_done() {
                Some(Ok(None))
            } else {
                let body = self.body.as_mut()?;
                with_timeout(&**runtime, self.timeout_ms, body.next_chunk()).await
            };
            let step = match chunk {
                None => Err(self.client.timeout(self.timeout_ms)),
                Some(Err(e)) => Err(self
                    .client
                    .connection(&format!("the stream broke off: {}", e.0))),
                Some(Ok(Some(bytes))) => match assembler.push(provider, &bytes, runtime.now_ms()) {
                    Ok(delta) if delta.is_empty() => continue,
                    Ok(delta) => return Some(Ok(StreamEvent::Delta(delta))),
                    Err(e) => Err(e),
                },
                Some(Ok(None)) => assembler.finish(provider, runtime.now_ms()),
            };
            // The stream is over, one way or the other.
            self.body = None;
            let assembler = self.assembler.take()?;
            let elapsed = runtime.now_ms() - self.started;
            let delta = match step {
                Ok(delta) => delta,
                Err(error) => {
                    self.permit = None;
                    self.broken = Some(self.stamped(assembler.partial_response(provider, elapsed)));
                    return Some(Err(error));
                }
            };
            let response = self.stamped(assembler.into_response(provider, elapsed));
            if let Some(mut permit) = self.permit.take() {
                permit.settle(response.usage.as_ref());
            }
            if delta.is_empty() {
                return Some(Ok(StreamEvent::Done(Box::new(response))));
            }
            self.last = Some(response);
            return Some(Ok(StreamEvent::Delta(delta)));
        }
    }
}

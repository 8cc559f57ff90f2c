//! A simulated platform for native tests: a fake clock, timers that fire when every task
//! is waiting, and a scripted HTTP transport. A minute of rate limiting runs in
//! microseconds, deterministically.
#![allow(dead_code)] // each test binary uses a different part of it

#[cfg(not(target_arch = "wasm32"))]
pub mod sqlite;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use llm_distiller::chat::{LlmResponse, Usage};
use llm_distiller::config::ProviderConfig;
use llm_distiller::http::{Headers, HttpRequest};
use llm_distiller::openai_api::ApiError;
use llm_distiller::provider::Provider;
use llm_distiller::runtime::{HttpResponse, ResponseBody, Runtime, TransportError};

/// What the scripted server answers to one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body, in the chunks it arrives in.
    pub chunks: Vec<Vec<u8>>,
    /// Time until the headers arrive.
    pub latency_ms: f64,
    /// Time between body chunks.
    pub chunk_gap_ms: f64,
    /// Fail with a transport error instead of answering.
    pub connection_error: Option<String>,
    /// Break off with a transport error after the chunks.
    pub break_after_chunks: bool,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply::raw(status, body.to_string())
    }

    pub fn raw(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            chunks: vec![body.into().into_bytes()],
            latency_ms: 100.0,
            chunk_gap_ms: 0.0,
            connection_error: None,
            break_after_chunks: false,
        }
    }

    /// A normal chat completion whose content is `content`.
    pub fn completion(content: &str) -> Reply {
        Reply::json(200, completion_body(content, None, "stop"))
    }

    /// Server-sent events, one chunk per element of `parts` as given (split anywhere).
    pub fn sse(parts: &[&str]) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            chunks: parts.iter().map(|p| p.as_bytes().to_vec()).collect(),
            latency_ms: 100.0,
            chunk_gap_ms: 10.0,
            connection_error: None,
            break_after_chunks: false,
        }
    }

    pub fn refused() -> Reply {
        let mut reply = Reply::raw(0, "");
        reply.connection_error = Some("connection refused".into());
        reply
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn latency(mut self, ms: f64) -> Reply {
        self.latency_ms = ms;
        self
    }
}

pub fn completion_body(content: &str, reasoning: Option<&str>, finish: &str) -> serde_json::Value {
    let mut message =
        serde_json::json!({ "role": "assistant", "content": content, "refusal": null });
    if let Some(r) = reasoning {
        message["reasoning_content"] = r.into();
    }
    serde_json::json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_1",
        "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish }],
        "usage": { "prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30,
                   "completion_tokens_details": { "reasoning_tokens": 0 } },
        "service_tier": "default"
    })
}

/// One request the server saw, with the fake time it was sent at.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at_ms: f64,
    pub request: HttpRequest,
}

impl Seen {
    pub fn body(&self) -> serde_json::Value {
        serde_json::from_str(&self.request.body).expect("request bodies are JSON")
    }
}

type Script = Box<dyn FnMut(&HttpRequest, usize, f64) -> Reply>;

struct State {
    now: f64,
    seq: u64,
    timers: BTreeMap<(u64, u64), Waker>,
    script: Script,
    seen: Vec<Seen>,
    random: f64,
}

/// The simulated platform. Cloning shares it.
#[derive(Clone)]
pub struct Sim(Rc<RefCell<State>>);

/// The fake clock starts here (a plausible epoch time, so HTTP dates make sense).
pub const START_MS: f64 = 1_700_000_000_000.0;

impl Sim {
    /// A platform whose server answers each request with `script(request, index)`.
    pub fn new(mut script: impl FnMut(&HttpRequest, usize) -> Reply + 'static) -> Sim {
        Sim::timed(move |request, index, _| script(request, index))
    }

    /// A platform whose server answers each request with `script(request, index, now_ms)`.
    pub fn timed(script: impl FnMut(&HttpRequest, usize, f64) -> Reply + 'static) -> Sim {
        Sim(Rc::new(RefCell::new(State {
            now: START_MS,
            seq: 0,
            timers: BTreeMap::new(),
            script: Box::new(script),
            seen: Vec::new(),
            random: 0.0,
        })))
    }

    /// Every request answered by the same reply.
    pub fn always(reply: Reply) -> Sim {
        Sim::new(move |_, _| reply.clone())
    }

    /// Replies in order; the last one repeats.
    pub fn sequence(replies: Vec<Reply>) -> Sim {
        Sim::new(move |_, i| replies[i.min(replies.len() - 1)].clone())
    }

    pub fn set_random(&self, value: f64) {
        self.0.borrow_mut().random = value;
    }

    /// The requests sent so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.0.borrow().seen.clone()
    }

    /// Milliseconds since the simulation started.
    pub fn elapsed(&self) -> f64 {
        self.0.borrow().now - START_MS
    }

    /// Drives `future` to completion, advancing the fake clock whenever every task waits
    /// (and nothing woke it meanwhile: a wake-up that is not a timer's is seen at once).
    pub fn run<F: Future>(&self, future: F) -> F::Output {
        let mut future = pin!(future);
        let woken = Arc::new(Woken(AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&woken));
        let mut cx = Context::from_waker(&waker);
        for _ in 0..10_000_000u64 {
            woken.0.store(false, Ordering::SeqCst);
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            if woken.0.load(Ordering::SeqCst) {
                continue;
            }
            let due: Vec<Waker> = {
                let mut state = self.0.borrow_mut();
                let Some((&(deadline_bits, _), _)) = state.timers.iter().next() else {
                    panic!("deadlock: the future waits, but no timer is pending");
                };
                let deadline = f64::from_bits(deadline_bits);
                if deadline > state.now {
                    state.now = deadline;
                }
                let now = state.now;
                let keys: Vec<(u64, u64)> = state
                    .timers
                    .range(..)
                    .take_while(|((bits, _), _)| f64::from_bits(*bits) <= now)
                    .map(|(k, _)| *k)
                    .collect();
                keys.iter().filter_map(|k| state.timers.remove(k)).collect()
            };
            due.into_iter().for_each(Waker::wake);
        }
        panic!("the simulation did not finish");
    }

    fn sleep_until(&self, deadline: f64) -> impl Future<Output = ()> {
        let sim = self.clone();
        std::future::poll_fn(move |cx| {
            let mut state = sim.0.borrow_mut();
            if state.now >= deadline {
                return Poll::Ready(());
            }
            state.seq += 1;
            let seq = state.seq;
            // Deadlines are positive, so their bit patterns sort like the numbers.
            state
                .timers
                .insert((deadline.to_bits(), seq), cx.waker().clone());
            Poll::Pending
        })
    }
}

/// Whether the simulation's future was woken during its last poll.
struct Woken(AtomicBool);

impl std::task::Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A scripted response body.
pub struct SimBody {
    sim: Sim,
    chunks: std::vec::IntoIter<Vec<u8>>,
    gap_ms: f64,
    break_after: bool,
}

impl ResponseBody for SimBody {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        if self.gap_ms > 0.0 {
            let now = self.sim.now_ms();
            self.sim.sleep_until(now + self.gap_ms).await;
        }
        match self.chunks.next() {
            Some(chunk) => Ok(Some(chunk)),
            None if self.break_after => Err(TransportError("connection reset".into())),
            None => Ok(None),
        }
    }
}

impl Runtime for Sim {
    type Body = SimBody;

    async fn fetch(&self, request: HttpRequest) -> Result<HttpResponse<SimBody>, TransportError> {
        let reply = {
            let mut state = self.0.borrow_mut();
            let index = state.seen.len();
            let at_ms = state.now;
            state.seen.push(Seen {
                at_ms,
                request: request.clone(),
            });
            (state.script)(&request, index, at_ms)
        };
        let now = self.now_ms();
        self.sleep_until(now + reply.latency_ms).await;
        if let Some(message) = reply.connection_error {
            return Err(TransportError(message));
        }
        Ok(HttpResponse {
            status: reply.status,
            headers: reply.headers.into_iter().collect::<Headers>(),
            body: SimBody {
                sim: self.clone(),
                chunks: reply.chunks.into_iter(),
                gap_ms: reply.chunk_gap_ms,
                break_after: reply.break_after_chunks,
            },
        })
    }

    async fn sleep(&self, ms: f64) {
        let now = self.now_ms();
        self.sleep_until(now + ms.max(0.0)).await;
    }

    fn now_ms(&self) -> f64 {
        self.0.borrow().now
    }

    fn random(&self) -> f64 {
        self.0.borrow().random
    }
}

/// An OpenAI provider named `p`, with a key, for tests of the pure mapping.
pub fn openai_provider() -> Provider {
    let config: ProviderConfig = serde_json::from_value(
        serde_json::json!({ "type": "openai", "api_key": "sk-0123456789abcdef" }),
    )
    .unwrap();
    Provider::from_config("p", &config, &|_| None).unwrap()
}

/// An answer as the client gives it back, for tests that store or send one.
pub fn llm_response() -> LlmResponse {
    LlmResponse {
        content: "The answer is 4.".into(),
        reasoning: None,
        thinking: Some("2 and 2 make 4.".into()),
        thinking_unclosed: false,
        model: "gpt-4o-2024-08-06".into(),
        usage: Some(Usage {
            prompt_tokens: 11,
            completion_tokens: 7,
            total_tokens: 18,
        }),
        finish_reason: Some("stop".into()),
        response_time: 0.25,
        response_time_ms: 250.0,
        provider: "main".into(),
        id: Some("chatcmpl-upstream".into()),
        attempts: 1,
        waited_ms: 0.0,
        raw_response: None,
    }
}

/// Checks that `error` is OpenAI's 400 about `param`, with a message that says so.
pub fn assert_invalid(error: &ApiError, param: &str) {
    assert_eq!(error.status, 400, "{error:?}");
    assert_eq!(error.kind, "invalid_request_error", "{error:?}");
    assert_eq!(error.param.as_deref(), Some(param), "{error:?}");
    assert!(
        error.message.contains(param),
        "the message should name {param}: {error:?}"
    );
}

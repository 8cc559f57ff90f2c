//! A streamed chat completion: the upstream's deltas as OpenAI `chat.completion.chunk`
//! events (thinking as `reasoning_content`), then `[DONE]`; and the row of what arrived,
//! stored however the stream ends: whole, broken upstream, or cut by a client that left.
//! Chunks and rows are shaped by the core; this module moves them.

use std::rc::Rc;

use futures_channel::oneshot;
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::json;
use worker::{Context, Env, Headers, Response};

use super::calls::failed;
use super::setup::{database, Manager};
use super::store;
use crate::chat::LlmResponse;
use crate::client::{CallOptions, CompletionStream, StreamEvent};
use crate::openai_api::{chunk_event, delta_object, error_event, ApiError, Call, DONE_EVENT};
use crate::record::{Arrival, CutShort, Record};
use crate::wasm::WasmRuntime;

/// Opens the stream along `call`'s route and answers with its events. A failure before
/// the first byte is an ordinary error answer (and its row).
pub async fn respond(
    manager: Rc<Manager>,
    call: Call,
    include_usage: bool,
    env: &Env,
    ctx: &Context,
) -> Result<Response, ApiError> {
    let arrival = Arrival::now(&WasmRuntime);
    let opened = manager
        .stream(
            &call.prompt,
            &call.config,
            &call.route,
            &CallOptions::default(),
        )
        .await;
    let upstream = match opened {
        Ok(upstream) => upstream,
        Err(error) => return Err(failed(&manager, &call, &arrival, &error, env, ctx)),
    };
    let model = upstream.provider().model_for(&call.config).to_string();
    // Registered before the response, so that it runs even when the client disconnects:
    // workerd cancels the body's stream first, and `wait_until` work registered from the
    // stream's own end would never start.
    let (row, ended) = oneshot::channel::<Record>();
    let db = database(env);
    let flushing = Rc::clone(&manager);
    ctx.wait_until(async move {
        if let (Ok(record), Ok(db)) = (ended.await, db) {
            store::insert(&db, record).await;
        }
        // The stream's end settled its reservation: tell the shared limiter.
        flushing.flush().await;
    });
    let role = chunk_event(
        &arrival.id,
        arrival.created_s(),
        &model,
        Some(json!({ "role": "assistant", "content": "" })),
        None,
        None,
    );
    let headers = Headers::new();
    let _ = headers.set("content-type", "text/event-stream; charset=utf-8");
    let _ = headers.set("cache-control", "no-cache");
    let _ = headers.set("x-distiller-id", &arrival.id);
    let state = Streaming {
        upstream,
        arrival,
        model,
        include_usage,
        wants_json: call.config.wants_json(),
        stored_request: call.stored,
        row: Some(row),
    };
    let events = stream::once(async move { Ok::<Vec<u8>, worker::Error>(role.into_bytes()) })
        .chain(sse_body(state));
    Response::from_stream(events)
        .map(|r| r.with_headers(headers))
        .map_err(|e| ApiError::new(500, "server_error", "internal_error", e.to_string()))
}

fn sse_body(state: Streaming) -> impl Stream<Item = worker::Result<Vec<u8>>> {
    stream::unfold(state, |mut state| async move {
        let events = state.next_events().await?;
        Some((Ok(events.into_bytes()), state))
    })
}

/// What the SSE body needs between chunks.
struct Streaming {
    upstream: CompletionStream<WasmRuntime>,
    arrival: Arrival,
    model: String,
    include_usage: bool,
    wants_json: bool,
    stored_request: String,
    /// Where the row goes when the stream ends, one way or the other; `None` once sent:
    /// the stream is over.
    row: Option<oneshot::Sender<Record>>,
}

impl Streaming {
    /// Sends the row of what the stream gave, once: the whole answer, or the part that
    /// arrived before it was cut short, as invalid.
    fn store(&mut self, end: Result<&LlmResponse, CutShort<'_>>) {
        let Some(row) = self.row.take() else { return };
        let (id, created, request) = (
            self.arrival.id.clone(),
            self.arrival.created_at,
            &self.stored_request,
        );
        let record = match end {
            Ok(response) => Record::answer(id, created, request, response, self.wants_json),
            Err(why) => match self.upstream.received() {
                Some(received) => {
                    Record::cut_short(id, created, request, &received, self.wants_json, why)
                }
                // Only once the whole answer was handed out, which stored it already.
                None => return,
            },
        };
        // The receiver lives in `wait_until` work, which outlives the stream.
        let _ = row.send(record);
    }

    fn chunk(&self, delta: Option<serde_json::Value>, finish_reason: Option<&str>) -> String {
        chunk_event(
            &self.arrival.id,
            self.arrival.created_s(),
            &self.model,
            delta,
            finish_reason,
            None,
        )
    }

    /// The next SSE events, or `None` at the end.
    async fn next_events(&mut self) -> Option<String> {
        self.row.as_ref()?;
        match self.upstream.next().await {
            Some(Ok(StreamEvent::Delta(delta))) => {
                Some(self.chunk(Some(delta_object(&delta.content, &delta.thinking)), None))
            }
            Some(Ok(StreamEvent::Done(response))) => {
                self.model = response.model.clone();
                let mut events = self.chunk(Some(json!({})), response.finish_reason.as_deref());
                if self.include_usage {
                    events.push_str(&chunk_event(
                        &self.arrival.id,
                        self.arrival.created_s(),
                        &self.model,
                        None,
                        None,
                        response.usage.as_ref(),
                    ));
                }
                events.push_str(DONE_EVENT);
                self.store(Ok(&response));
                Some(events)
            }
            Some(Err(error)) => {
                self.store(Err(CutShort::Error(&error)));
                Some(error_event(&ApiError::from_error(&error)) + DONE_EVENT)
            }
            None => {
                self.store(Err(CutShort::NoAnswer));
                Some(DONE_EVENT.to_string())
            }
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        // The client went away mid-stream: keep what arrived.
        self.store(Err(CutShort::ClientGone));
    }
}

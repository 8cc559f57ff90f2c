//! Assembling a streamed chat completion: bytes → SSE events → chunks → thinking deltas,
//! and at the end one [`LlmResponse`], as if the answer had come whole.
//!
//! Pure: the client feeds it the body's bytes as they arrive; it never reads anything.
//! The deltas it returns are those of the streaming thinking extractor, so what a caller
//! sees streamed and what ends up in the final response are the same text.

use serde_json::{json, Value};

use crate::chat::{LlmResponse, Usage};
use crate::error::{Error, Result};
use crate::provider::Provider;
use crate::sse::{parse_data, ChunkPayload, SseEvent, SseParser, MAX_EVENT_BYTES, MAX_LINE_BYTES};
use crate::thinking::{StreamOptions, ThinkingDelta, ThinkingExtractor, ThinkingStream};

/// The most a streamed answer may hold, in bytes, before the stream is refused.
pub const MAX_STREAMED_BYTES: usize = 32 * 1024 * 1024;

/// Turns a streamed chat completion's body into deltas and a final response.
#[derive(Debug)]
pub struct StreamAssembler {
    sse: SseParser,
    events: Vec<SseEvent>,
    thinking: ThinkingStream,
    answer: Answer,
    /// How many events the SSE parser has handed over, to tell whether an event it dropped
    /// for its size came before the next one.
    events_taken: u64,
    done: bool,
}

/// What the chunks said so far.
#[derive(Debug, Clone, Default)]
struct Answer {
    raw_content: String,
    reasoning: Option<String>,
    /// The content deltas given so far, and the thinking ones.
    content: String,
    extracted: String,
    id: Option<String>,
    model: Option<String>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
}

impl StreamAssembler {
    /// A new assembly with `extractor`'s tags; `options` says whether the answer begins
    /// inside a pre-filled thinking block.
    pub fn new(extractor: &ThinkingExtractor, options: StreamOptions) -> Self {
        StreamAssembler {
            sse: SseParser::new(),
            events: Vec::new(),
            thinking: extractor.stream(options),
            answer: Answer::default(),
            events_taken: 0,
            done: false,
        }
    }

    /// Feeds body bytes; returns what became certain. After `[DONE]` further bytes are
    /// ignored.
    ///
    /// An event the SSE parser dropped for its size (see [`crate::sse`]) before `[DONE]`
    /// fails the stream with [`Error::InvalidResponse`], in this push or a later one, or in
    /// [`Self::finish`]: the answer has a gap, so it is never assembled as complete, and
    /// what came after the gap is not kept.
    pub fn push(
        &mut self,
        provider: &Provider,
        bytes: &[u8],
        now_ms: f64,
    ) -> Result<ThinkingDelta> {
        let mut delta = ThinkingDelta::default();
        if self.done {
            return Ok(delta);
        }
        let mut events = std::mem::take(&mut self.events);
        self.sse.push_into(bytes, &mut events);
        let result = events
            .drain(..)
            .try_for_each(|event| self.apply(provider, &event, now_ms, &mut delta));
        self.events = events;
        result?;
        self.check_no_gap(provider)?;
        Ok(delta)
    }

    /// The body ended: flushes what the extractor held back.
    pub fn finish(&mut self, provider: &Provider, now_ms: f64) -> Result<ThinkingDelta> {
        let mut delta = ThinkingDelta::default();
        if !self.done {
            if let Some(event) = self.sse.finish() {
                self.apply(provider, &event, now_ms, &mut delta)?;
            }
            self.check_no_gap(provider)?;
        }
        let last = self.thinking.finish();
        self.record(&last);
        delta.content.push_str(&last.content);
        delta.thinking.push_str(&last.thinking);
        Ok(delta)
    }

    /// Whether `[DONE]` has arrived.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Fails if the SSE parser dropped an event and `[DONE]` has not come before it.
    fn check_no_gap(&self, provider: &Provider) -> Result<()> {
        if !self.done && self.sse.overflowed() {
            return Err(lost_event(provider));
        }
        Ok(())
    }

    /// Applies the next event the SSE parser handed over, unless an event it dropped came
    /// before this one.
    fn apply(
        &mut self,
        provider: &Provider,
        event: &SseEvent,
        now_ms: f64,
        delta: &mut ThinkingDelta,
    ) -> Result<()> {
        if self.done {
            return Ok(());
        }
        let gap_before = self
            .sse
            .dispatched_before_overflow()
            .is_some_and(|n| n <= self.events_taken);
        if gap_before {
            return Err(lost_event(provider));
        }
        self.events_taken += 1;
        let other_type = event
            .event
            .as_deref()
            .is_some_and(|e| e != "message" && e != "error");
        if other_type && event.data.is_empty() {
            return Ok(());
        }
        let data = match parse_data(&event.data) {
            None => return Ok(()),
            Some(ChunkPayload::Done) => {
                self.done = true;
                return Ok(());
            }
            Some(ChunkPayload::Json(data)) => data,
        };
        let chunk = provider.parse_stream_chunk(data, now_ms)?;
        if self.answer.raw_content.len() + chunk.content.as_deref().map_or(0, str::len)
            > MAX_STREAMED_BYTES
        {
            return Err(invalid(provider, "the streamed answer exceeds 32 MiB"));
        }
        self.answer.id = self
            .answer
            .id
            .take()
            .or(chunk.id.filter(|id| !id.is_empty()));
        self.answer.model = chunk.model.or(self.answer.model.take());
        if let Some(reasoning) = chunk.reasoning.filter(|r| !r.is_empty()) {
            let step = self.thinking.push_reasoning(&reasoning);
            self.record(&step);
            delta.thinking.push_str(&step.thinking);
            delta.content.push_str(&step.content);
            self.answer
                .reasoning
                .get_or_insert_with(String::new)
                .push_str(&reasoning);
        }
        if let Some(content) = chunk.content.filter(|c| !c.is_empty()) {
            let step = self.thinking.push(&content);
            self.record(&step);
            delta.content.push_str(&step.content);
            delta.thinking.push_str(&step.thinking);
            self.answer.raw_content.push_str(&content);
        }
        if chunk.finish_reason.is_some() {
            self.answer.finish_reason = chunk.finish_reason;
        }
        if chunk.usage.is_some() {
            self.answer.usage = chunk.usage;
        }
        Ok(())
    }

    fn record(&mut self, step: &ThinkingDelta) {
        self.answer.content.push_str(&step.content);
        self.answer.extracted.push_str(&step.thinking);
    }

    /// The assembled answer, once the stream has ended (call [`Self::finish`] first).
    /// `raw_response` is the chat completion the chunks add up to.
    pub fn into_response(self, provider: &Provider, response_time_ms: f64) -> LlmResponse {
        let unclosed = self.thinking.unclosed();
        self.answer
            .into_response(provider, response_time_ms, unclosed)
    }

    /// The answer as far as it arrived, for a stream that ends early (an error, a client
    /// gone): the content and thinking of the deltas given so far, with what the chunks
    /// named (model, id) and the chat completion they add up to.
    pub fn partial_response(&self, provider: &Provider, response_time_ms: f64) -> LlmResponse {
        let unclosed = self.thinking.unclosed();
        self.answer
            .clone()
            .into_response(provider, response_time_ms, unclosed)
    }
}

impl Answer {
    fn into_response(
        self,
        provider: &Provider,
        response_time_ms: f64,
        thinking_unclosed: bool,
    ) -> LlmResponse {
        let model = self.model.unwrap_or_else(|| provider.model().to_string());
        let mut message = json!({ "role": "assistant", "content": self.raw_content });
        if let Some(reasoning) = &self.reasoning {
            message["reasoning_content"] = Value::String(reasoning.clone());
        }
        let raw = json!({
            "id": self.id,
            "object": "chat.completion",
            "model": model,
            "choices": [{ "index": 0, "message": message, "finish_reason": self.finish_reason }],
            "usage": self.usage,
        });
        LlmResponse {
            content: self.content,
            reasoning: self.reasoning,
            thinking: Some(self.extracted).filter(|t| !t.is_empty()),
            thinking_unclosed,
            model,
            usage: self.usage,
            finish_reason: self.finish_reason,
            response_time: response_time_ms / 1000.0,
            response_time_ms,
            provider: provider.name().to_string(),
            id: self.id,
            attempts: 1,
            waited_ms: 0.0,
            raw_response: Some(raw),
        }
    }
}

fn lost_event(provider: &Provider) -> Error {
    let message = format!(
        "a server-sent event went over the size limit ({} MiB a line, {} MiB an event) and \
         was dropped, so the answer has a gap",
        MAX_LINE_BYTES >> 20,
        MAX_EVENT_BYTES >> 20
    );
    invalid(provider, &message)
}

fn invalid(provider: &Provider, message: &str) -> Error {
    Error::InvalidResponse {
        provider: provider.name().to_string(),
        message: provider.redact(message),
    }
}

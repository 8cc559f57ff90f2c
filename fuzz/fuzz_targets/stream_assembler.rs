//! Assembling a streamed answer (`stream.rs`): `StreamAssembler` fed a body's bytes in
//! reads, as the client does.
//!
//! Payload: the body. Control: whether the answer starts inside a thinking block, where
//! the body is split into reads, and (one input in 256) a data line over the SSE parser's
//! line limit spliced in somewhere, so that an event is lost.
//!
//! Checks: any split gives the same outcome as the body in one read (the same error, or
//! the same response and deltas); the deltas add up to the response's content and
//! thinking; and an answer that lost an event before its `[DONE]` never comes out whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_distiller::chat::LlmResponse;
use llm_distiller::config::ProviderConfig;
use llm_distiller::provider::Provider;
use llm_distiller::sse::{parse_data, ChunkPayload, SseParser, MAX_LINE_BYTES};
use llm_distiller::stream::StreamAssembler;
use llm_distiller::thinking::{StreamOptions, ThinkingDelta, ThinkingExtractor};
use llm_distiller::Error;
use llm_distiller_fuzz::{pieces, Input};
use serde_json::json;

/// The control byte that splices in an over-long line.
const OVERFLOW: u8 = 0x4F;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let options = StreamOptions {
        starts_in_thinking: input.byte() & 1 == 1,
    };
    let mut body = input.payload.to_vec();
    if input.byte() == OVERFLOW {
        let at = usize::from(input.u16()) % (body.len() + 1);
        let mut line = b"\ndata: ".to_vec();
        line.resize(line.len() + MAX_LINE_BYTES + 1, b'x');
        line.push(b'\n');
        body.splice(at..at, line);
    }
    let cuts = input.cuts(body.len(), 12);
    let provider = provider();
    let whole = assemble(&provider, options, &[&body]);
    let split = assemble(&provider, options, &pieces(&body, &cuts));
    assert_eq!(split, whole, "split at {cuts:?}");

    if let Ok((response, deltas)) = &whole {
        assert_eq!(deltas.content, response.content);
        assert_eq!(
            deltas.thinking,
            response.thinking.clone().unwrap_or_default()
        );
        assert!(
            !lost_before_done(&body),
            "an answer with a gap came out whole"
        );
    }
});

fn provider() -> Provider {
    let config: ProviderConfig =
        serde_json::from_value(json!({ "type": "openai", "api_key": "sk-0123456789abcdef" }))
            .unwrap();
    Provider::from_config("p", &config, &|_| None).unwrap()
}

/// What the client makes of `reads`: the response and all its deltas, or the error.
fn assemble(
    provider: &Provider,
    options: StreamOptions,
    reads: &[&[u8]],
) -> Result<(LlmResponse, ThinkingDelta), Error> {
    let mut assembler = StreamAssembler::new(&ThinkingExtractor::default(), options);
    let mut deltas = ThinkingDelta::default();
    let mut add = |delta: ThinkingDelta| {
        deltas.content.push_str(&delta.content);
        deltas.thinking.push_str(&delta.thinking);
    };
    for read in reads {
        if assembler.is_done() {
            break;
        }
        add(assembler.push(provider, read, 0.0)?);
    }
    add(assembler.finish(provider, 0.0)?);
    Ok((assembler.into_response(provider, 0.0), deltas))
}

/// Whether the SSE parser drops an event of `body` before any `[DONE]`.
fn lost_before_done(body: &[u8]) -> bool {
    let mut parser = SseParser::new();
    let mut events = parser.push(body);
    events.extend(parser.finish());
    let Some(gap) = parser.dispatched_before_overflow() else {
        return false;
    };
    !events
        .iter()
        .take(gap as usize)
        .any(|e| parse_data(&e.data) == Some(ChunkPayload::Done))
}

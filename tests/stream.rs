//! The stream assembler: a streamed answer that lost part of its bytes to the SSE parser's
//! size limits fails, whichever read the loss falls in, and is never assembled as complete.
// Native only: these run on a simulated platform or use proptest; the wasm tests are js_*.rs.
#![cfg(not(target_arch = "wasm32"))]

mod support;

use llm_distiller::chat::LlmResponse;
use llm_distiller::sse::MAX_LINE_BYTES;
use llm_distiller::stream::StreamAssembler;
use llm_distiller::thinking::{StreamOptions, ThinkingExtractor};
use llm_distiller::Error;
use serde_json::json;
use support::openai_provider as provider;

fn content_event(text: &str, finish: Option<&str>) -> String {
    let chunk = json!({ "choices": [{ "index": 0, "delta": { "content": text }, "finish_reason": finish }] });
    format!("data: {chunk}\n\n")
}

/// An event whose one data line is over the parser's line limit: it is dropped whole.
fn oversized_event() -> String {
    let text = "x".repeat(MAX_LINE_BYTES + 1);
    content_event(&text, None)
}

/// Feeds `reads` then ends the stream, as the client does: the first error ends it, and the
/// answer assembled so far is returned with it.
fn assemble(reads: &[&str]) -> (Result<(), Error>, LlmResponse) {
    let p = provider();
    let mut assembler =
        StreamAssembler::new(&ThinkingExtractor::default(), StreamOptions::default());
    let mut outcome = Ok(());
    for read in reads {
        if assembler.is_done() {
            break;
        }
        if let Err(e) = assembler.push(&p, read.as_bytes(), 0.0) {
            outcome = Err(e);
            break;
        }
    }
    if outcome.is_ok() {
        outcome = assembler.finish(&p, 0.0).map(drop);
    }
    let response = if outcome.is_ok() {
        assembler.into_response(&p, 0.0)
    } else {
        assembler.partial_response(&p, 0.0)
    };
    (outcome, response)
}

fn assert_lost(outcome: Result<(), Error>, what: &str) {
    match outcome {
        Err(Error::InvalidResponse { message, .. }) => {
            assert!(message.contains("size limit"), "{what}: {message}")
        }
        other => panic!("{what}: a lost event must fail the stream, got {other:?}"),
    }
}

#[test]
fn an_event_lost_to_the_line_limit_fails_the_stream_in_whichever_read_it_falls() {
    let hello = content_event("Hello ", None);
    let world = content_event("world", Some("stop"));
    let lost = oversized_event();
    let done = "data: [DONE]\n\n";
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "the loss, the rest and [DONE] in one read",
            vec![hello.clone(), format!("{lost}{world}{done}")],
        ),
        (
            "the loss in the last read, then [DONE] in its own",
            vec![hello.clone(), lost.clone(), format!("{world}{done}")],
        ),
        (
            "the loss and the rest in the last read, no [DONE]",
            vec![hello.clone(), format!("{lost}{world}")],
        ),
        (
            "the loss alone in the last read, no [DONE]",
            vec![format!("{hello}{world}"), lost.clone()],
        ),
        (
            "an unfinished over-long line at the end of the stream (finish)",
            vec![format!("{hello}{world}"), lost.trim_end().to_string()],
        ),
        (
            "everything in one read",
            vec![format!("{hello}{lost}{world}{done}")],
        ),
    ];
    for (what, reads) in cases {
        let reads: Vec<&str> = reads.iter().map(String::as_str).collect();
        let (outcome, _) = assemble(&reads);
        assert_lost(outcome, what);
    }
}

#[test]
fn what_arrived_after_the_gap_is_not_kept() {
    let reads = [
        content_event("Hello ", None),
        format!(
            "{}{}",
            oversized_event(),
            content_event("world", Some("stop"))
        ),
    ];
    let reads: Vec<&str> = reads.iter().map(String::as_str).collect();
    let (outcome, received) = assemble(&reads);
    assert_lost(outcome, "one read");
    assert_eq!(received.content, "Hello");
    assert_eq!(received.finish_reason, None);
}

#[test]
fn an_over_long_line_after_done_is_ignored_like_any_bytes_after_it() {
    let hello = content_event("Hello", Some("stop"));
    for reads in [
        vec![format!("{hello}data: [DONE]\n\n{}", oversized_event())],
        vec![format!("{hello}data: [DONE]\n\n"), oversized_event()],
    ] {
        let reads: Vec<&str> = reads.iter().map(String::as_str).collect();
        let (outcome, received) = assemble(&reads);
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(received.content, "Hello");
        assert_eq!(received.finish_reason.as_deref(), Some("stop"));
    }
}

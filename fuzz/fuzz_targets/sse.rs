//! The server-sent-events parser (`sse.rs`).
//!
//! Payload: the bytes of a stream. Control: the parser's limits (the defaults, or small
//! ones so that lines and events overflow), and where the stream is split into reads.
//!
//! Checks what the module documents: any split gives the same events as the stream fed
//! whole, and the same record of what was dropped (whether, and after how many events);
//! the buffered bytes stay within the line limit (plus a BOM's two), every event within
//! the event limit; an event has a type only if it is not empty, and an id never holds NUL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_distiller::sse::{SseEvent, SseParser, MAX_EVENT_BYTES, MAX_LINE_BYTES};
use llm_distiller_fuzz::{pieces, Input};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let (max_line, max_event) = match input.byte() % 3 {
        0 => (MAX_LINE_BYTES, MAX_EVENT_BYTES),
        _ => (
            usize::from(input.byte() % 64) + 1,
            usize::from(input.byte()) + 1,
        ),
    };
    let bytes = input.payload;
    let cuts = input.cuts(bytes.len(), 16);
    let whole = feed(&[bytes], max_line, max_event);
    let split = feed(&pieces(bytes, &cuts), max_line, max_event);
    assert_eq!(split, whole, "split at {cuts:?}");
});

/// What a parser makes of `reads`: its events, whether it overflowed, and after how many
/// events it first did; with the memory bounds checked after each read.
fn feed(reads: &[&[u8]], max_line: usize, max_event: usize) -> (Vec<SseEvent>, bool, Option<u64>) {
    let mut parser = SseParser::with_limits(max_line, max_event);
    let mut events = Vec::new();
    for read in reads {
        parser.push_into(read, &mut events);
        assert!(parser.buffered() <= max_line + 2, "{parser:?}");
    }
    events.extend(parser.finish());
    assert_eq!(parser.buffered(), 0);
    for event in &events {
        assert!(event.data.len() < max_event, "{} bytes", event.data.len());
        assert!(event.event.as_ref().is_none_or(|e| !e.is_empty()));
        assert!(event.id.as_ref().is_none_or(|id| !id.contains('\0')));
    }
    let gap = parser.dispatched_before_overflow();
    assert_eq!(gap.is_some(), parser.overflowed());
    assert!(gap.is_none_or(|n| n <= events.len() as u64));
    (events, parser.overflowed(), gap)
}

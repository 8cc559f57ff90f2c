//! Behaviour of the server-sent-events parser and the chat-completion payload reader.
//!
//! Every fixture stream is checked twice: its events are the expected ones, and they stay
//! the same however the bytes are split (at every byte position, and in fixed-size chunks).
// Native only: these run on a simulated platform or use proptest; the wasm tests are js_*.rs.
#![cfg(not(target_arch = "wasm32"))]

use llm_distiller::sse::{parse_data, ChunkPayload, SseEvent, SseParser, MAX_LINE_BYTES};
use proptest::prelude::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Feeding helpers

/// All events `parser` gives for `parts` fed one after another, `finish` included.
fn feed_parts<'a>(
    mut parser: SseParser,
    parts: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<SseEvent> {
    feed_into(&mut parser, parts)
}

fn feed_into<'a>(
    parser: &mut SseParser,
    parts: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<SseEvent> {
    let mut events = Vec::new();
    for part in parts {
        parser.push_into(part, &mut events);
    }
    events.extend(parser.finish());
    events
}

fn feed_whole(stream: &[u8]) -> Vec<SseEvent> {
    feed_parts(SseParser::new(), [stream])
}

/// Asserts that `stream` gives the same events split at every byte position and in
/// chunks of 1..=7 and 64 bytes as fed whole, to parsers made by `make`.
fn assert_split_invariant_with(stream: &[u8], make: impl Fn() -> SseParser) {
    let whole = feed_parts(make(), [stream]);
    for at in 0..=stream.len() {
        let (a, b) = stream.split_at(at);
        assert_eq!(
            feed_parts(make(), [a, b]),
            whole,
            "split at byte {at} of {:?}",
            String::from_utf8_lossy(stream)
        );
    }
    for size in (1..=7).chain([64]) {
        assert_eq!(
            feed_parts(make(), stream.chunks(size)),
            whole,
            "chunks of {size} bytes of {:?}",
            String::from_utf8_lossy(stream)
        );
    }
}

fn assert_split_invariant(stream: &[u8]) {
    assert_split_invariant_with(stream, SseParser::new);
}

/// An event with only data.
fn data(d: &str) -> SseEvent {
    SseEvent {
        data: d.to_string(),
        ..SseEvent::default()
    }
}

// ---------------------------------------------------------------------------------------
// Fixtures: real-looking streams

/// An OpenAI chat-completion stream with `stream_options.include_usage`: a role chunk,
/// content deltas (one with multibyte characters), a finish chunk, a usage chunk with
/// empty `choices`, then `[DONE]`.
const OPENAI_STREAM: &str = concat!(
    r#"data: {"id":"chatcmpl-AZ3x","object":"chat.completion.chunk","created":1731400000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-AZ3x","object":"chat.completion.chunk","created":1731400000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-AZ3x","object":"chat.completion.chunk","created":1731400000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":{"content":" wörld, 你好 🙂"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-AZ3x","object":"chat.completion.chunk","created":1731400000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-AZ3x","object":"chat.completion.chunk","created":1731400000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19,"completion_tokens_details":{"reasoning_tokens":0}}}"#,
    "\n\n",
    "data: [DONE]\n\n",
);

/// A stream from an OpenAI-compatible reasoning model: `reasoning_content` deltas before
/// the `content` deltas.
const REASONING_STREAM: &str = concat!(
    r#"data: {"id":"r1","object":"chat.completion.chunk","created":1731400001,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":""},"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"r1","object":"chat.completion.chunk","created":1731400001,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"The user greets; "},"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"r1","object":"chat.completion.chunk","created":1731400001,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"answer briefly."},"finish_reason":null}]}"#,
    "\n\n",
    ": keep-alive\n\n",
    r#"data: {"id":"r1","object":"chat.completion.chunk","created":1731400001,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"content":"Hi!","reasoning_content":null},"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"r1","object":"chat.completion.chunk","created":1731400001,"model":"deepseek-reasoner","choices":[{"index":0,"delta":{"content":""},"finish_reason":"stop"}]}"#,
    "\n\n",
    "data: [DONE]\n\n",
);

/// Azure OpenAI: a first chunk with empty `choices` and `prompt_filter_results`, content
/// chunks with `content_filter_results`, then `[DONE]`.
const AZURE_STREAM: &str = concat!(
    r#"data: {"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":false,"severity":"safe"}}}]}"#,
    "\n\n",
    r#"data: {"choices":[{"content_filter_results":{},"delta":{"content":"","refusal":null,"role":"assistant"},"finish_reason":null,"index":0,"logprobs":null}],"created":1731400002,"id":"chatcmpl-AZ4y","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","system_fingerprint":"fp_04751d0b65"}"#,
    "\n\n",
    r#"data: {"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}},"delta":{"content":"Hallo"},"finish_reason":null,"index":0,"logprobs":null}],"created":1731400002,"id":"chatcmpl-AZ4y","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","system_fingerprint":"fp_04751d0b65"}"#,
    "\n\n",
    r#"data: {"choices":[{"content_filter_results":{},"delta":{},"finish_reason":"stop","index":0,"logprobs":null}],"created":1731400002,"id":"chatcmpl-AZ4y","model":"gpt-4o-2024-08-06","object":"chat.completion.chunk","system_fingerprint":"fp_04751d0b65"}"#,
    "\n\n",
    "data: [DONE]\n\n",
);

/// The payloads of a stream's events, in order: each chunk's JSON, `None` for `[DONE]`.
fn payloads(events: &[SseEvent]) -> Vec<Option<Value>> {
    events
        .iter()
        .map(|e| match parse_data(&e.data) {
            Some(ChunkPayload::Json(text)) => Some(serde_json::from_str(text).expect("JSON")),
            Some(ChunkPayload::Done) => None,
            None => panic!("every event of the fixture has data"),
        })
        .collect()
}

/// The concatenated `choices[0].delta[field]` strings of a stream.
fn joined_delta(payloads: &[Option<Value>], field: &str) -> String {
    payloads
        .iter()
        .flatten()
        .filter_map(|v| v["choices"][0]["delta"][field].as_str())
        .collect()
}

#[test]
fn an_openai_stream_gives_its_chunks_then_done() {
    let events = feed_whole(OPENAI_STREAM.as_bytes());
    assert_eq!(events.len(), 6);
    assert!(events.iter().all(|e| e.event.is_none() && e.id.is_none()));
    let payloads = payloads(&events);
    assert_eq!(joined_delta(&payloads, "content"), "Hello wörld, 你好 🙂");
    let Some(usage_chunk) = &payloads[4] else {
        panic!("the usage chunk is JSON")
    };
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["total_tokens"], 19);
    assert_eq!(payloads[5], None, "[DONE]");
    assert_split_invariant(OPENAI_STREAM.as_bytes());
}

#[test]
fn a_reasoning_stream_keeps_reasoning_and_content_apart() {
    let events = feed_whole(REASONING_STREAM.as_bytes());
    assert_eq!(events.len(), 6, "the keep-alive comment is no event");
    let payloads = payloads(&events);
    assert_eq!(
        joined_delta(&payloads, "reasoning_content"),
        "The user greets; answer briefly."
    );
    assert_eq!(joined_delta(&payloads, "content"), "Hi!");
    assert_eq!(payloads.last(), Some(&None), "[DONE]");
    assert_split_invariant(REASONING_STREAM.as_bytes());
}

#[test]
fn an_azure_stream_starts_with_prompt_filter_results() {
    let events = feed_whole(AZURE_STREAM.as_bytes());
    let payloads = payloads(&events);
    assert_eq!(payloads.len(), 5);
    let Some(first) = &payloads[0] else {
        panic!("the first chunk is JSON")
    };
    assert_eq!(first["choices"], json!([]));
    assert_eq!(
        first["prompt_filter_results"][0]["content_filter_results"]["hate"]["filtered"],
        false
    );
    assert_eq!(joined_delta(&payloads, "content"), "Hallo");
    assert_eq!(payloads[4], None, "[DONE]");
    assert_split_invariant(AZURE_STREAM.as_bytes());
}

#[test]
fn line_endings_crlf_and_cr_give_the_same_events_as_lf() {
    let lf = feed_whole(OPENAI_STREAM.as_bytes());
    for ending in ["\r\n", "\r"] {
        let stream = OPENAI_STREAM.replace('\n', ending);
        assert_eq!(feed_whole(stream.as_bytes()), lf, "line ending {ending:?}");
        assert_split_invariant(stream.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------
// Fixtures: the parsing rules, as data

struct Case {
    name: &'static str,
    stream: &'static [u8],
    events: Vec<SseEvent>,
}

fn ev(event: Option<&str>, data: &str, id: Option<&str>, retry_ms: Option<u64>) -> SseEvent {
    SseEvent {
        event: event.map(str::to_string),
        data: data.to_string(),
        id: id.map(str::to_string),
        retry_ms,
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "comments are ignored",
            stream: b": keep-alive\n\n:\ndata: a\n: between\ndata: b\n\n",
            events: vec![data("a\nb")],
        },
        Case {
            name: "event, id and retry fields",
            stream: b"event: delta\nid: 42\nretry: 3000\ndata: hi\n\ndata: next\n\n",
            events: vec![
                ev(Some("delta"), "hi", Some("42"), Some(3000)),
                // The event type resets after each event; id and retry persist.
                ev(None, "next", Some("42"), Some(3000)),
            ],
        },
        Case {
            name: "an empty event field means the default type",
            stream: b"event:\ndata: x\n\n",
            events: vec![data("x")],
        },
        Case {
            name: "an empty id clears the last event id",
            stream: b"id: 7\ndata: a\n\nid\ndata: b\n\n",
            events: vec![ev(None, "a", Some("7"), None), data("b")],
        },
        Case {
            name: "an id containing NUL is ignored",
            stream: b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
            events: vec![ev(None, "a", Some("1"), None), ev(None, "b", Some("1"), None)],
        },
        Case {
            name: "an id set in an event without data still counts",
            stream: b"id: 5\n\ndata: a\n\n",
            events: vec![ev(None, "a", Some("5"), None)],
        },
        Case {
            name: "a retry that is not all ASCII digits is ignored",
            stream: b"retry: 100\nretry: 12a\nretry: -1\nretry:  5\nretry:\nretry: 99999999999999999999\ndata: x\n\n",
            events: vec![ev(None, "x", None, Some(100))],
        },
        Case {
            name: "a retry in its own block applies to later events",
            stream: b"retry: 2500\n\ndata: x\n\n",
            events: vec![ev(None, "x", None, Some(2500))],
        },
        Case {
            name: "multi-line data joins with newlines",
            stream: b"data: line one\ndata: line two\ndata:\ndata:  two spaces\n\n",
            events: vec![data("line one\nline two\n\n two spaces")],
        },
        Case {
            name: "only one space after the colon is removed, and no colon means empty value",
            stream: b"data:x\n\ndata:  x \n\ndata\n\n",
            events: vec![data("x"), data(" x "), data("")],
        },
        Case {
            name: "a colon in the value stays",
            stream: b"data: {\"a\": \"b:c\"}\n\n",
            events: vec![data("{\"a\": \"b:c\"}")],
        },
        Case {
            name: "empty data lines still make events",
            stream: b"data\n\ndata:\n\ndata:\ndata:\n\n",
            events: vec![data(""), data(""), data("\n")],
        },
        Case {
            name: "events without data are not dispatched",
            stream: b"event: ping\n\n\n\n\nid\n\nretry: 10\n\nfoo: bar\n\n",
            events: vec![],
        },
        Case {
            name: "unknown fields and field names are case-sensitive",
            stream: b"Data: no\nDATA: no\nfoo: bar\ndata : no\ndata: yes\n\n",
            events: vec![data("yes")],
        },
        Case {
            name: "mixed line endings",
            stream: b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\rdata: e\n\r",
            events: vec![data("a\nb\nc"), data("d"), data("e")],
        },
        Case {
            name: "a CR followed by LF is one line break, LF then CR are two",
            stream: b"data: a\r\n\r\ndata: b\n\rdata: c\n\n",
            events: vec![data("a"), data("b"), data("c")],
        },
        Case {
            name: "a leading BOM is dropped",
            stream: b"\xEF\xBB\xBFdata: x\n\n",
            events: vec![data("x")],
        },
        Case {
            name: "only one leading BOM is dropped",
            stream: b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\ndata: y\n\n",
            events: vec![data("y")],
        },
        Case {
            name: "a BOM later in the stream is kept",
            stream: b"data: \xEF\xBB\xBFx\n\n",
            events: vec![data("\u{FEFF}x")],
        },
        Case {
            name: "a partial BOM is not dropped",
            stream: b"\xEF\xBB\ndata: x\n\n",
            events: vec![data("x")],
        },
        Case {
            name: "a partial BOM at the start of a line that matters spoils it",
            stream: b"\xEF\xBBdata: x\n\ndata: y\n\n",
            events: vec![data("y")],
        },
        Case {
            name: "no final blank line: finish dispatches the pending event",
            stream: b"data: a\n\ndata: b\n",
            events: vec![data("a"), data("b")],
        },
        Case {
            name: "no final line break: finish parses the last line",
            stream: b"data: a\n\ndata: [DONE]",
            events: vec![data("a"), data("[DONE]")],
        },
        Case {
            name: "a final line break that is a lone CR",
            stream: b"event: e\rdata: a\r",
            events: vec![ev(Some("e"), "a", None, None)],
        },
        Case {
            name: "a pending event without data is not dispatched by finish",
            stream: b"data: a\n\nevent: e\nid: 1",
            events: vec![data("a")],
        },
        Case {
            name: "UTF-8 in every field",
            stream: "event: änderung\nid: ключ\ndata: 你好 🙂\n\n".as_bytes(),
            events: vec![ev(Some("änderung"), "你好 🙂", Some("ключ"), None)],
        },
        Case {
            name: "invalid UTF-8 is replaced, not fatal",
            stream: b"data: \xFFok\xE4\xBD\ndata: \xC3\n\ndata: fine\n\n",
            events: vec![data("\u{FFFD}ok\u{FFFD}\n\u{FFFD}"), data("fine")],
        },
        Case {
            name: "an empty stream",
            stream: b"",
            events: vec![],
        },
    ]
}

#[test]
fn parsing_rules_hold_for_every_case_however_split() {
    for case in cases() {
        assert_eq!(feed_whole(case.stream), case.events, "{}", case.name);
        assert_split_invariant(case.stream);
    }
}

// ---------------------------------------------------------------------------------------
// Incremental behaviour

#[test]
fn events_come_out_as_soon_as_their_blank_line_arrives() {
    let mut parser = SseParser::new();
    assert!(parser.push(b"data: a\n").is_empty());
    assert_eq!(parser.push(b"\ndata: b\n"), vec![data("a")]);
    // A CR at the end of a chunk already ends the line: the event is out before the
    // LF that may follow it arrives, and that LF does not make a blank line.
    assert_eq!(parser.push(b"\r"), vec![data("b")]);
    assert!(parser.push(b"\n").is_empty());
    assert!(parser.push(b"data: c\r").is_empty());
    assert!(parser.push(b"\n").is_empty());
    assert_eq!(parser.push(b"\r\n"), vec![data("c")]);
    assert_eq!(parser.finish(), None);
}

#[test]
fn an_empty_push_keeps_a_pending_cr() {
    let mut parser = SseParser::new();
    assert!(parser.push(b"data: a\r").is_empty());
    assert!(parser.push(b"").is_empty());
    assert!(parser.push(b"\n").is_empty(), "the LF completes the CRLF");
    assert_eq!(parser.push(b"\n"), vec![data("a")]);
}

#[test]
fn a_multibyte_character_split_across_chunks_stays_intact() {
    let stream = "data: 🙂你\n\n".as_bytes();
    // The emoji is bytes 6..10 and the CJK character 10..13: split inside each.
    for at in [7, 8, 9, 11, 12] {
        let mut parser = SseParser::new();
        assert!(parser.push(&stream[..at]).is_empty());
        assert_eq!(
            parser.push(&stream[at..]),
            vec![data("🙂你")],
            "split at {at}"
        );
    }
    // One byte at a time.
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for byte in stream {
        parser.push_into(std::slice::from_ref(byte), &mut events);
    }
    assert_eq!(events, vec![data("🙂你")]);
}

#[test]
fn push_into_appends_to_what_the_caller_has() {
    let mut parser = SseParser::new();
    let mut events = vec![data("earlier")];
    parser.push_into(b"data: a\n\ndata: b\n\n", &mut events);
    assert_eq!(events, vec![data("earlier"), data("a"), data("b")]);
}

#[test]
fn buffered_counts_the_unfinished_line() {
    let mut parser = SseParser::new();
    assert_eq!(parser.buffered(), 0);
    parser.push(b"\xEF\xBB");
    assert_eq!(parser.buffered(), 2, "a possible BOM is held back");
    parser.push(b"\xBFdata: par");
    assert_eq!(parser.buffered(), 9);
    parser.push(b"tial");
    assert_eq!(parser.buffered(), 13);
    parser.push(b"\n");
    assert_eq!(parser.buffered(), 0);
    parser.push(b"\ndata: x");
    assert_eq!(parser.buffered(), 7);
    assert_eq!(parser.finish(), Some(data("x")));
    assert_eq!(parser.buffered(), 0);
}

#[test]
fn finish_leaves_nothing_pending() {
    let mut parser = SseParser::new();
    parser.push(b"data: a");
    assert_eq!(parser.finish(), Some(data("a")));
    assert_eq!(parser.finish(), None);
    assert_eq!(parser.buffered(), 0);
}

// ---------------------------------------------------------------------------------------
// Memory bounds

#[test]
fn a_huge_line_is_dropped_with_bounded_memory_and_parsing_resumes() {
    let mut parser = SseParser::new();
    assert_eq!(parser.push(b"data: before\n\n"), vec![data("before")]);
    assert!(!parser.overflowed());

    // A 20 MiB data line in 64 KiB chunks, the event also holding a line before it.
    parser.push(b"event: big\ndata: first line\ndata: ");
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..(20 * 1024 * 1024 / chunk.len()) {
        assert!(parser.push(&chunk).is_empty());
        assert!(parser.buffered() <= MAX_LINE_BYTES);
    }
    assert!(parser.overflowed());
    assert_eq!(parser.buffered(), 0, "the line is discarded, not kept");

    // The rest of the dropped event is ignored up to its blank line; the next event is
    // parsed normally.
    let events = parser.push(b"xxx\ndata: tail of the dropped event\n\ndata: after\n\n");
    assert_eq!(events, vec![data("after")]);
    assert!(parser.overflowed(), "the flag stays set");
    assert_eq!(parser.finish(), None);
}

#[test]
fn a_line_of_exactly_the_limit_is_kept() {
    let line = format!("data: {}", "y".repeat(MAX_LINE_BYTES - "data: ".len()));
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for chunk in line.as_bytes().chunks(1 << 20) {
        parser.push_into(chunk, &mut events);
    }
    assert_eq!(parser.buffered(), MAX_LINE_BYTES);
    parser.push_into(b"\n\n", &mut events);
    assert!(!parser.overflowed());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].data.len(), MAX_LINE_BYTES - "data: ".len());
}

/// A small stream that goes over the limits of `SseParser::with_limits(16, 24)`.
const OVERFLOWING: &[u8] = b"data: short\n\n\
    data: this line is far too long\ndata: tail\n\n\
    data: 0123456789\n\
    data: 0123456789\n\
    data: 0123456789\n\n\
    event: e\ndata: ok\n\n\
    data: too long again and no blank line";

fn small_parser() -> SseParser {
    SseParser::with_limits(16, 24)
}

#[test]
fn small_limits_drop_the_overflowing_events_only() {
    let mut parser = small_parser();
    let mut events = parser.push(OVERFLOWING);
    events.extend(parser.finish());
    assert!(parser.overflowed());
    assert_eq!(
        events,
        vec![data("short"), ev(Some("e"), "ok", None, None)],
        "a line over 16 bytes drops its event; so does data over 24 bytes (3 x 11)"
    );
}

#[test]
fn what_an_overflow_drops_does_not_depend_on_the_split() {
    assert_split_invariant_with(OVERFLOWING, small_parser);
    for case in cases() {
        assert_split_invariant_with(case.stream, || SseParser::with_limits(8, 12));
    }
}

#[test]
fn the_parser_tells_how_many_events_came_before_the_first_gap() {
    let mut parser = small_parser();
    assert_eq!(parser.dispatched_before_overflow(), None);
    let events = feed_into(&mut parser, [OVERFLOWING]);
    assert_eq!(events.len(), 2);
    assert_eq!(
        parser.dispatched_before_overflow(),
        Some(1),
        "the first gap is the event after \"short\""
    );
    let mut parser = small_parser();
    feed_into(
        &mut parser,
        [&b"data: a\n\ndata: b\n\ndata: 01234567890"[..]],
    );
    assert_eq!(
        parser.dispatched_before_overflow(),
        Some(2),
        "a gap at the end"
    );
}

#[test]
fn a_dropped_event_takes_its_id_and_retry_with_it() {
    // Before the over-long line and after it, in the same event: neither counts.
    let stream = b"id: 1\nretry: 100\ndata: a\n\n\
        id: 2\nretry: 200\ndata: this line is far too long\nid: 3\nretry: 300\n\n\
        data: b\n\n";
    let expected = vec![
        ev(None, "a", Some("1"), Some(100)),
        ev(None, "b", Some("1"), Some(100)),
    ];
    assert_eq!(feed_parts(small_parser(), [&stream[..]]), expected);
    assert_split_invariant_with(stream, small_parser);
    // An event dropped for its data (over the event limit, no line too long) alike.
    let stream = b"id: 1\ndata: a\n\nid: 2\ndata: 0123456789\ndata: 0123456789\ndata: 0123456789\n\ndata: b\n\n";
    assert_eq!(
        feed_parts(small_parser(), [&stream[..]]),
        vec![
            ev(None, "a", Some("1"), None),
            ev(None, "b", Some("1"), None)
        ]
    );
    // And one cut short by the end of the stream.
    let mut parser = small_parser();
    parser.push(b"id: 1\ndata: a\n\nid: 2\ndata: this line is far too long");
    assert_eq!(parser.finish(), None);
    assert_eq!(
        parser.push(b"data: b\n\n"),
        vec![ev(None, "b", Some("1"), None)]
    );
}

#[test]
fn a_line_break_right_at_the_limit_and_an_overflowing_line_at_the_end() {
    // 16 bytes exactly: kept.
    assert_eq!(
        feed_parts(small_parser(), [&b"data: 0123456789\n\n"[..]]),
        vec![data("0123456789")]
    );
    // 17 bytes without a line break, at the end of the stream: dropped by finish too.
    let mut parser = small_parser();
    assert!(parser.push(b"data: 01234567890").is_empty());
    assert_eq!(parser.finish(), None);
    assert!(parser.overflowed());
}

// ---------------------------------------------------------------------------------------
// parse_data

#[test]
fn parse_data_tells_done_from_a_chunk() {
    assert_eq!(parse_data("[DONE]"), Some(ChunkPayload::Done));
    assert_eq!(parse_data("  [DONE]\n"), Some(ChunkPayload::Done));
    assert_eq!(
        parse_data(r#" {"choices":[]} "#),
        Some(ChunkPayload::Json(r#"{"choices":[]}"#))
    );
    // Anything but [DONE] is a chunk, for the provider mapping to read or refuse.
    for other in ["[DONE", "[done]", "DONE", "{\"choices\":", "data: {}"] {
        assert_eq!(
            parse_data(other),
            Some(ChunkPayload::Json(other)),
            "{other}"
        );
    }
    // Empty data means nothing.
    assert_eq!(parse_data(""), None);
    assert_eq!(parse_data("  "), None);
}

// ---------------------------------------------------------------------------------------
// Properties

/// Pieces that make SSE-like streams, so random streams contain fields, comments, every
/// line ending, BOMs, multibyte and invalid UTF-8.
fn sse_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop::sample::select(vec![
        &b"data"[..],
        b"data: ",
        b"event",
        b"id",
        b"retry",
        b":",
        b" ",
        b"\n",
        b"\r",
        b"\r\n",
        b"\n\n",
        b"\xEF\xBB\xBF",
        b"\xEF",
        b"\x00",
        b"42",
        b"x",
        "你🙂".as_bytes(),
        b"\xFF",
        b"[DONE]",
        b"{\"a\":1}",
    ]);
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

/// Splits `bytes` at the given fractions of its length.
fn split_at_fractions(bytes: &[u8], cuts: &[f64]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|f| ((bytes.len() as f64) * f) as usize)
        .collect();
    points.sort_unstable();
    let mut parts = Vec::new();
    let mut start = 0;
    for p in points {
        parts.push(bytes[start..p].to_vec());
        start = p;
    }
    parts.push(bytes[start..].to_vec());
    parts
}

proptest! {
    #[test]
    fn arbitrary_bytes_split_anywhere_give_the_whole_feed_events(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(0.0..1.0f64, 0..12),
    ) {
        let parts = split_at_fractions(&bytes, &cuts);
        let whole = feed_whole(&bytes);
        prop_assert_eq!(feed_parts(SseParser::new(), parts.iter().map(Vec::as_slice)), whole);
    }

    #[test]
    fn sse_like_streams_split_anywhere_give_the_whole_feed_events(
        bytes in sse_like_bytes(),
        cuts in prop::collection::vec(0.0..1.0f64, 0..12),
    ) {
        let parts = split_at_fractions(&bytes, &cuts);
        let split = |make: fn() -> SseParser| {
            feed_parts(make(), parts.iter().map(Vec::as_slice))
        };
        prop_assert_eq!(split(SseParser::new), feed_parts(SseParser::new(), [&bytes[..]]));
        // Small limits, so overflows happen too.
        let small = || SseParser::with_limits(10, 16);
        prop_assert_eq!(split(small), feed_parts(small(), [&bytes[..]]));
        // Where the first gap falls among the events does not depend on the split either.
        let gap = |parts: &[&[u8]]| {
            let mut parser = small();
            feed_into(&mut parser, parts.iter().copied());
            parser.dispatched_before_overflow()
        };
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        prop_assert_eq!(gap(&parts), gap(&[&bytes[..]]));
    }

    #[test]
    fn buffered_never_exceeds_the_line_limit(
        bytes in sse_like_bytes(),
        chunk in 1usize..9,
    ) {
        let mut parser = SseParser::with_limits(10, 16);
        for part in bytes.chunks(chunk) {
            parser.push(part);
            prop_assert!(parser.buffered() <= 10);
        }
    }
}

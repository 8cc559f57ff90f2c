//! An incremental parser for server-sent events, the wire format of streamed chat
//! completions (OpenAI and Azure OpenAI), and the meaning of their `data:` payloads.
//!
//! This is pure code: it turns bytes into [`SseEvent`]s, does no I/O, reads no clock and
//! imports nothing platform-specific; the runtime seam feeds it whatever the network
//! delivers, and its memory stays within the limits below. Bytes may arrive split
//! anywhere (inside a line, between `\r` and `\n`, inside a UTF-8 character) and the
//! events are the same as if the stream had arrived whole.
//!
//! Parsing follows the WHATWG rules for `EventSource` streams (HTML, "Parsing an event
//! stream"): a leading byte order mark is dropped; lines end in `\n`, `\r\n` or `\r`;
//! `:` starts a comment; `field: value` loses one space after the colon; `data` lines join
//! with `\n`; `event`, `id` (unless it contains NUL) and `retry` (ASCII digits only) are
//! kept; other fields are ignored; a blank line dispatches the event if it has data.
//! Invalid UTF-8 becomes U+FFFD, as the standard decoder does. Two deliberate departures:
//!
//! - [`SseParser::finish`] dispatches an event whose final blank line never came, where
//!   the standard discards it; several servers end their stream without one.
//! - Memory is bounded. A line longer than the parser's line limit ([`MAX_LINE_BYTES`]
//!   by default), or data that would make one event larger than its event limit
//!   ([`MAX_EVENT_BYTES`]), is not kept: the parser drops that line *and the whole event
//!   it belongs to* (every line up to the next blank line, `id` and `retry` included),
//!   records it in [`SseParser::overflowed`], and parses the next event normally.
//!   Dropping the whole event means a caller never receives an event with a silently
//!   missing piece. What is dropped depends only on the bytes, never on how they were
//!   split.
//!
//! ```
//! use llm_distiller::sse::{parse_data, ChunkPayload, SseParser};
//!
//! let mut parser = SseParser::new();
//! let mut events = parser.push(b"data: {\"choices\":[]}\n\nda");
//! events.extend(parser.push(b"ta: [DONE]\n\n"));
//! assert_eq!(events.len(), 2);
//! assert_eq!(parse_data(&events[0].data), Some(ChunkPayload::Json("{\"choices\":[]}")));
//! assert_eq!(parse_data(&events[1].data), Some(ChunkPayload::Done));
//! ```

use std::fmt;

/// The default longest line, in bytes without its line break, that [`SseParser`] keeps:
/// 8 MiB. A longer line is dropped with its event (see the module docs).
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// The default most data, in bytes, one event may accumulate over its `data` lines
/// (the `\n`s joining them included): 16 MiB. Past it the event is dropped (see the
/// module docs).
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// The UTF-8 byte order mark, dropped once at the very start of a stream.
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// One dispatched server-sent event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The event type from an `event:` field; `None` means the default type, `message`
    /// (an empty `event:` field also gives `None`).
    pub event: Option<String>,
    /// The event's `data` lines, joined with `\n`. An event is only dispatched if it had at
    /// least one `data` line, so an empty string here means `data` lines with empty values.
    pub data: String,
    /// The last event ID of the stream when this event was dispatched. As the standard
    /// says, it persists across events until an `id:` field changes it; `None` if none was
    /// ever set or an empty `id:` cleared it.
    pub id: Option<String>,
    /// The reconnection time, in milliseconds, most recently set by a `retry:` field on
    /// this stream (it persists across events, like `id`); `None` if none was set.
    pub retry_ms: Option<u64>,
}

/// An incremental server-sent-events parser: push bytes as they arrive, get complete
/// events back.
///
/// Each byte is scanned once: complete lines are parsed straight from the pushed slice
/// and only an unfinished line is copied into the parser, so a long line arriving in many
/// small chunks costs no rescans.
pub struct SseParser {
    /// The unfinished line: the bytes after the last line break. It never holds a line
    /// break, so it never needs scanning again.
    line: Vec<u8>,
    /// The last byte pushed was a `\r` that ended a line; a `\n` opening the next chunk
    /// belongs to that same line break.
    after_cr: bool,
    /// While the start of the stream is being checked for a BOM: how many of its bytes
    /// have matched so far. `None` once the stream is past its start.
    bom_matched: Option<usize>,
    /// The current line went over the line limit; its bytes are skipped up to its break.
    discarding_line: bool,
    /// An overflow dropped the current event; its remaining lines are ignored up to the
    /// blank line that ends it.
    skipping_event: bool,
    /// How many events have been dispatched.
    dispatched: u64,
    /// How many had been dispatched when something was first dropped for going over a
    /// limit; `None` while nothing was.
    overflowed_after: Option<u64>,
    /// The standard's data buffer: each `data` value followed by `\n`.
    data: String,
    /// The standard's event type buffer.
    event_type: String,
    /// The standard's last event ID buffer as the events dispatched so far left it; it is
    /// not reset between events.
    last_event_id: String,
    /// The reconnection time most recently set by `retry:` in a dispatched event.
    retry_ms: Option<u64>,
    /// The `id` and `retry` values of the event being built. They take effect when it
    /// ends (even without data, as the standard says), so an event dropped for its size
    /// takes them with it.
    pending_id: Option<String>,
    pending_retry_ms: Option<u64>,
    max_line_bytes: usize,
    max_event_bytes: usize,
}

impl SseParser {
    /// A parser at the start of a stream, with the default limits [`MAX_LINE_BYTES`] and
    /// [`MAX_EVENT_BYTES`].
    pub fn new() -> Self {
        Self::with_limits(MAX_LINE_BYTES, MAX_EVENT_BYTES)
    }

    /// A parser at the start of a stream that keeps lines of at most `max_line_bytes`
    /// bytes (line break excluded) and events of at most `max_event_bytes` bytes of data
    /// (counted after decoding, so an invalid byte counts as the 3 bytes of U+FFFD). What
    /// goes over either limit is dropped as the module docs describe.
    pub fn with_limits(max_line_bytes: usize, max_event_bytes: usize) -> Self {
        SseParser {
            line: Vec::new(),
            after_cr: false,
            bom_matched: Some(0),
            discarding_line: false,
            skipping_event: false,
            dispatched: 0,
            overflowed_after: None,
            data: String::new(),
            event_type: String::new(),
            last_event_id: String::new(),
            retry_ms: None,
            pending_id: None,
            pending_retry_ms: None,
            max_line_bytes,
            max_event_bytes,
        }
    }

    /// Feeds raw bytes as they arrive (split anywhere: inside a line, inside `\r\n`, inside
    /// a UTF-8 character) and returns the events they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        self.push_into(bytes, &mut events);
        events
    }

    /// Like [`SseParser::push`], but appends the completed events to `out`, so a caller
    /// can reuse one vector for the whole stream.
    pub fn push_into(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) {
        if self.bom_matched.is_some() {
            bytes = self.skip_bom(bytes);
        }
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
        }
        while let Some(end) = find_line_break(bytes) {
            let mut next = end + 1;
            if bytes[end] == b'\r' {
                match bytes.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    // The `\n` of a `\r\n` may be the first byte of the next chunk.
                    None => self.after_cr = true,
                }
            }
            self.end_line(&bytes[..end], out);
            bytes = &bytes[next..];
        }
        self.extend_line(bytes);
    }

    /// Ends the stream: parses a last line that has no line break and returns the event
    /// still pending without its blank line, if it has data. The standard would discard
    /// that event; this parser is lenient because many servers omit the final blank line.
    ///
    /// Afterwards nothing is pending; [`SseParser::overflowed`] still tells whether the
    /// stream lost anything.
    pub fn finish(&mut self) -> Option<SseEvent> {
        // A stream that ended inside what looked like a BOM: those bytes were a line.
        if let Some(matched) = self.bom_matched.take() {
            self.extend_line(&BOM[..matched]);
        }
        self.after_cr = false;
        if self.discarding_line {
            self.discarding_line = false;
        } else if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            // The line is not blank, so it dispatches nothing into this unused vector.
            self.parse_line(&line, &mut Vec::new());
            self.line = line;
            self.line.clear();
        }
        self.dispatch()
    }

    /// How many bytes are buffered but not yet parsed: the unfinished line, which never
    /// exceeds the line limit, plus up to two bytes of a possible BOM at the very start.
    /// The data of the event being built is bounded separately, by the event limit.
    pub fn buffered(&self) -> usize {
        self.line.len() + self.bom_matched.unwrap_or(0)
    }

    /// Whether a line or an event went over its limit and was dropped, at any point of
    /// this stream. The parser carries on after it; a caller that must not lose events
    /// checks this after each push and treats the stream as failed.
    pub fn overflowed(&self) -> bool {
        self.overflowed_after.is_some()
    }

    /// How many events this parser had dispatched when it first dropped something for
    /// going over a limit: the events after that many came after a gap. `None` if nothing
    /// was ever dropped. Like what is dropped, this depends only on the bytes, never on how
    /// they were split, so a caller can tell whether the gap came before an event that
    /// ended its stream (`[DONE]`) or after it.
    pub fn dispatched_before_overflow(&self) -> Option<u64> {
        self.overflowed_after
    }

    /// Drops a BOM (or as much of one as has arrived) from the start of the stream; bytes
    /// that turn out not to be a BOM become the start of the first line.
    fn skip_bom<'a>(&mut self, mut bytes: &'a [u8]) -> &'a [u8] {
        while let Some(matched) = self.bom_matched {
            match bytes.first() {
                None => break,
                Some(&b) if b == BOM[matched] => {
                    bytes = &bytes[1..];
                    self.bom_matched = (matched + 1 < BOM.len()).then_some(matched + 1);
                }
                Some(_) => {
                    self.bom_matched = None;
                    self.extend_line(&BOM[..matched]);
                }
            }
        }
        bytes
    }

    /// Appends bytes of a line whose break has not arrived yet.
    fn extend_line(&mut self, bytes: &[u8]) {
        if self.discarding_line || bytes.is_empty() {
            return;
        }
        if self.line.len() + bytes.len() > self.max_line_bytes {
            self.line.clear();
            self.discarding_line = true;
            self.overflow();
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    /// A line break arrived; `tail` is the part of the line that came with it.
    fn end_line(&mut self, tail: &[u8], out: &mut Vec<SseEvent>) {
        if self.discarding_line {
            self.discarding_line = false;
        } else if self.line.is_empty() {
            if tail.len() > self.max_line_bytes {
                self.overflow();
            } else {
                self.parse_line(tail, out);
            }
        } else if self.line.len() + tail.len() > self.max_line_bytes {
            self.line.clear();
            self.overflow();
        } else {
            // Taken out and put back so the buffer keeps its capacity for the next line.
            let mut line = std::mem::take(&mut self.line);
            line.extend_from_slice(tail);
            self.parse_line(&line, out);
            line.clear();
            self.line = line;
        }
    }

    /// Drops the event being built, its `id` and `retry` included, and ignores the rest
    /// of it.
    fn overflow(&mut self) {
        self.overflowed_after.get_or_insert(self.dispatched);
        self.skipping_event = true;
        self.data.clear();
        self.event_type.clear();
        self.pending_id = None;
        self.pending_retry_ms = None;
    }

    /// Parses one complete line, without its line break.
    fn parse_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            out.extend(self.dispatch());
            return;
        }
        if self.skipping_event {
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return, // a comment
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        // Field names compare as bytes, so values are only decoded when they are kept.
        match name {
            b"data" => {
                let value = String::from_utf8_lossy(value);
                if self.data.len() + value.len() + 1 > self.max_event_bytes {
                    self.overflow();
                } else {
                    self.data.push_str(&value);
                    self.data.push('\n');
                }
            }
            b"event" => {
                self.event_type.clear();
                self.event_type.push_str(&String::from_utf8_lossy(value));
            }
            b"id" if !value.contains(&0) => {
                self.pending_id = Some(String::from_utf8_lossy(value).into_owned());
            }
            b"retry" => {
                if let Some(ms) = parse_retry(value) {
                    self.pending_retry_ms = Some(ms);
                }
            }
            _ => {}
        }
    }

    /// A blank line (or the end of the stream): returns the event built so far if it has
    /// data, and starts the next one.
    fn dispatch(&mut self) -> Option<SseEvent> {
        if let Some(id) = self.pending_id.take() {
            self.last_event_id = id;
        }
        if let Some(ms) = self.pending_retry_ms.take() {
            self.retry_ms = Some(ms);
        }
        if std::mem::take(&mut self.skipping_event) || self.data.is_empty() {
            self.data.clear();
            self.event_type.clear();
            return None;
        }
        self.data.pop(); // the `\n` after the last data line
        self.dispatched += 1;
        Some(SseEvent {
            event: non_empty(std::mem::take(&mut self.event_type)),
            data: std::mem::take(&mut self.data),
            id: non_empty(self.last_event_id.clone()),
            retry_ms: self.retry_ms,
        })
    }
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

// By hand rather than derived: the line and data buffers can hold megabytes, so this shows
// their sizes instead.
impl fmt::Debug for SseParser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseParser")
            .field("buffered", &self.buffered())
            .field("data_bytes", &self.data.len())
            .field("event_type", &self.event_type)
            .field("last_event_id", &self.last_event_id)
            .field("retry_ms", &self.retry_ms)
            .field("overflowed_after", &self.overflowed_after)
            .field("max_line_bytes", &self.max_line_bytes)
            .field("max_event_bytes", &self.max_event_bytes)
            .finish_non_exhaustive()
    }
}

/// The position of the first `\n` or `\r` in `bytes`.
///
/// This stands in for `memchr2`, which the crate does not depend on: each block of bytes
/// is tested without an early exit, a loop the compiler turns into wide compares, and
/// only the block with a hit is searched byte by byte.
fn find_line_break(bytes: &[u8]) -> Option<usize> {
    const BLOCK: usize = 32;
    let is_break = |b: &u8| *b == b'\n' || *b == b'\r';
    let mut blocks = bytes.chunks_exact(BLOCK);
    let mut start = 0;
    for block in &mut blocks {
        if block.iter().fold(false, |hit, b| hit | is_break(b)) {
            return block.iter().position(is_break).map(|i| start + i);
        }
        start += BLOCK;
    }
    blocks
        .remainder()
        .iter()
        .position(is_break)
        .map(|i| start + i)
}

/// A `retry` value: ASCII digits only, as a base-ten number of milliseconds. Anything
/// else, including the empty string and a number too large for `u64`, is ignored.
fn parse_retry(value: &[u8]) -> Option<u64> {
    crate::http::parse_digits(value)
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// What one `data:` payload of a streamed chat completion is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkPayload<'a> {
    /// The literal `[DONE]` that ends an OpenAI or Azure OpenAI stream.
    Done,
    /// Anything else: the JSON text of a `chat.completion.chunk`, or of an error object
    /// some servers send mid-stream. Reading it (and refusing what is not JSON) is the
    /// provider mapping's part.
    Json(&'a str),
}

/// Reads the `data` of one streamed chat-completion event, surrounding whitespace
/// ignored: `[DONE]`, or the text of a chunk; `None` for empty data, which means nothing.
pub fn parse_data(data: &str) -> Option<ChunkPayload<'_>> {
    match data.trim() {
        "" => None,
        "[DONE]" => Some(ChunkPayload::Done),
        chunk => Some(ChunkPayload::Json(chunk)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_line_break_agrees_with_a_bytewise_search() {
        for len in 0..100 {
            for at in 0..=len {
                for byte in [b'\n', b'\r'] {
                    let mut bytes = vec![b'x'; len];
                    if at < len {
                        bytes[at] = byte;
                        // A second break after the first must not win.
                        if at + 1 < len {
                            bytes[len - 1] = b'\n';
                        }
                    }
                    let expected = bytes.iter().position(|&b| b == b'\n' || b == b'\r');
                    assert_eq!(find_line_break(&bytes), expected, "len {len}, at {at}");
                }
            }
        }
    }

    #[test]
    fn parse_retry_takes_ascii_digits_only() {
        assert_eq!(parse_retry(b"0"), Some(0));
        assert_eq!(parse_retry(b"3000"), Some(3000));
        assert_eq!(parse_retry(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_retry(b"18446744073709551616"), None);
        assert_eq!(parse_retry(b""), None);
        assert_eq!(parse_retry(b" 1"), None);
        assert_eq!(parse_retry(b"-1"), None);
        assert_eq!(parse_retry(b"1.5"), None);
        assert_eq!(parse_retry("٣".as_bytes()), None); // a non-ASCII digit
    }

    #[test]
    fn a_partial_bom_becomes_line_bytes() {
        let mut parser = SseParser::new();
        assert!(parser.push(&BOM[..2]).is_empty());
        assert_eq!(parser.buffered(), 2);
        assert!(parser.push(b"x").is_empty());
        assert_eq!(parser.bom_matched, None);
        assert_eq!(parser.line, [0xEF, 0xBB, b'x']);
    }

    #[test]
    fn the_line_buffer_keeps_its_capacity_between_lines() {
        let mut parser = SseParser::new();
        parser.push(&[b'x'; 1000]);
        let capacity = parser.line.capacity();
        parser.push(b"\nabc");
        parser.push(b"\n");
        assert!(parser.line.is_empty());
        assert_eq!(parser.line.capacity(), capacity);
    }
}

//! Thinking extraction: separates a model's reasoning from its answer.
//!
//! Reasoning models wrap their chain of thought in tags (`<think>…</think>`,
//! `<thinking>…</thinking>`, `<reasoning>…</reasoning>`) inside the answer text, or send it
//! in a separate `reasoning_content` field. This module removes the blocks from the content
//! and collects their text as thinking, either in one shot ([`ThinkingExtractor::extract`])
//! or incrementally while a response streams in ([`ThinkingStream`]), with the streamed
//! deltas adding up to exactly the one-shot result.
//!
//! It is pure text processing: no I/O, no clock, no platform code, and it never panics on
//! any input.
//!
//! # What counts as a tag
//!
//! * An opening tag is `<name>`, `<name attrs>` or the self-closing `<name/>` /
//!   `<name attrs/>`, where `name` is one of the configured names compared ASCII
//!   case-insensitively and must be followed by ASCII whitespace, `>` or `/>` (so
//!   `<thinker>` and `<thinkingfoo>` are text). The attribute part, everything between the
//!   name and the first `>`, holds at most [`MAX_TAG_EXTRA`] bytes and no `<`; otherwise
//!   the `<` is plain text. The bound keeps a stray `<think ` in prose from swallowing the
//!   rest of the answer, and bounds what the stream holds back. Quotes are not parsed: the
//!   first `>` ends the tag.
//! * A closing tag is `</name>`, optionally with up to [`MAX_TAG_EXTRA`] bytes of ASCII
//!   whitespace before the `>`. Inside a block opened as `<name>`, only `</name>` closes it;
//!   every other tag in it is thinking text. Blocks do not nest.
//!
//! # Example
//!
//! ```
//! use llm_distiller::thinking::extract_thinking;
//!
//! let out = extract_thinking("<think>The user greets me.</think>Hello!", None);
//! assert_eq!(out.content, "Hello!");
//! assert_eq!(out.thinking.as_deref(), Some("The user greets me."));
//! assert!(!out.unclosed);
//! ```

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use crate::Error;

/// The tag names recognised by [`ThinkingExtractor::default`] and [`extract_thinking`].
pub const DEFAULT_TAGS: [&str; 3] = ["thinking", "reasoning", "think"];

/// The most bytes allowed between a tag's name and its `>`: the attributes of an opening
/// tag, the whitespace of a closing one.
pub const MAX_TAG_EXTRA: usize = 256;

/// What separates two pieces of thinking (the separate reasoning and each block).
pub const SEPARATOR: &str = "\n\n";

/// Result of a one-shot extraction.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct Extracted {
    /// The text with every thinking block removed, then trimmed.
    pub content: String,
    /// The separate reasoning and the text of each block, each trimmed, the non-empty ones
    /// joined with a blank line (`"\n\n"`); `None` when there is none.
    pub thinking: Option<String>,
    /// A thinking block was still open at the end (the answer was cut off while thinking).
    pub unclosed: bool,
}

/// Where the parts of a one-shot extraction lie in the text: [`Extracted`] as byte ranges
/// of the text rather than new strings, for a caller that can slice the text itself (the
/// JavaScript binding hands back slices of the caller's own string).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Spans {
    /// The content is these ranges, concatenated: already trimmed as a whole, so the first
    /// does not start and the last does not end with whitespace.
    pub content: Vec<Range<usize>>,
    /// The trimmed part of the separate reasoning (a range of that text, not of the
    /// answer's), unless it is missing or blank. The thinking begins with it.
    pub reasoning: Option<Range<usize>>,
    /// The text of each block, each trimmed and non-empty, in order. The thinking is the
    /// reasoning and these, joined by [`SEPARATOR`].
    pub thinking: Vec<Range<usize>>,
    /// A thinking block was still open at the end.
    pub unclosed: bool,
}

/// Deltas from one push/finish of the streaming extractor.
///
/// Appending every delta of a stream, in order, gives the one-shot [`Extracted`] content and
/// thinking exactly (see [`ThinkingStream`] for the conditions).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct ThinkingDelta {
    /// New answer text.
    pub content: String,
    /// New thinking text.
    pub thinking: String,
}

impl ThinkingDelta {
    /// No new content and no new thinking.
    pub fn is_empty(&self) -> bool {
        self.content.is_empty() && self.thinking.is_empty()
    }
}

/// A configured tag set: extracts thinking in one shot or starts streams.
///
/// Cheap to clone (the tag set is shared).
#[derive(Debug, Clone)]
pub struct ThinkingExtractor {
    tags: Arc<TagSet>,
}

/// Options of one stream.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize, PartialEq, Eq)]
pub struct StreamOptions {
    /// The stream begins inside a thinking block, because the prompt template pre-filled the
    /// opening tag; the first closing tag of any configured name ends it.
    ///
    /// The one-shot extractor detects this case by itself (the first tag in the text is a
    /// closing one); a stream cannot know in advance, so it must be told.
    #[serde(default)]
    pub starts_in_thinking: bool,
}

impl ThinkingExtractor {
    /// An extractor for the given tag names.
    ///
    /// Names are matched ASCII case-insensitively. Each must be non-empty and made of ASCII
    /// letters, digits, `-`, `_` or `:`; the list must not be empty. Otherwise the error is
    /// [`Error::Config`] about the field `thinking.tags`.
    pub fn new<I, S>(tags: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut names: Vec<Box<[u8]>> = Vec::new();
        for tag in tags {
            let tag = tag.as_ref();
            let valid = !tag.is_empty()
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':'));
            if !valid {
                return Err(Error::config(
                    "thinking.tags",
                    format!(
                        "invalid tag name \"{tag}\": use ASCII letters, digits, '-', '_' or ':'"
                    ),
                ));
            }
            let name = tag.to_ascii_lowercase().into_bytes().into_boxed_slice();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        if names.is_empty() {
            return Err(Error::config(
                "thinking.tags",
                "at least one tag name is needed",
            ));
        }
        Ok(Self {
            tags: Arc::new(TagSet::new(names)),
        })
    }

    /// Separates the thinking from `content`, a complete answer.
    ///
    /// `separate_reasoning` is the provider's own reasoning field (`reasoning_content`,
    /// `reasoning`), if any; it comes first in the thinking. If the first tag in `content`
    /// is a closing one, the text before it is thinking: the prompt pre-filled the opening
    /// tag. A closing tag anywhere else outside a block stays in the content.
    pub fn extract(&self, content: &str, separate_reasoning: Option<&str>) -> Extracted {
        let spans = self.spans(content, separate_reasoning);
        let mut answer = String::with_capacity(content.len());
        for range in spans.content {
            answer.push_str(&content[range]);
        }
        let mut thinking = String::new();
        if let (Some(reasoning), Some(range)) = (separate_reasoning, spans.reasoning) {
            thinking.push_str(&reasoning[range]);
        }
        for range in spans.thinking {
            append_piece(&mut thinking, &content[range]);
        }
        Extracted {
            content: answer,
            thinking: (!thinking.is_empty()).then_some(thinking),
            unclosed: spans.unclosed,
        }
    }

    /// [`ThinkingExtractor::extract`] as ranges of `content` and `separate_reasoning` (see
    /// [`Spans`]).
    pub fn spans(&self, content: &str, separate_reasoning: Option<&str>) -> Spans {
        let tags = &*self.tags;
        let bytes = content.as_bytes();
        let mut spans = Spans {
            reasoning: separate_reasoning.and_then(|r| trimmed(r, 0..r.len())),
            ..Spans::default()
        };
        let thinking = |spans: &mut Spans, range: Range<usize>| {
            spans.thinking.extend(trimmed(content, range));
        };
        let answer = |spans: &mut Spans, range: Range<usize>| {
            if !range.is_empty() {
                spans.content.push(range);
            }
        };

        // `Undecided` until the first tag: if it is a closing tag, the text so far was a
        // pre-filled block.
        #[derive(Clone, Copy)]
        enum Mode {
            Undecided,
            Text,
            Block(usize),
        }
        let mut mode = Mode::Undecided;
        // `start` begins the text not yet assigned; `search` is where to look for `<`.
        let mut start = 0;
        let mut search = 0;
        while let Some(found) = content[search..].find('<') {
            let lt = search + found;
            let candidate = &bytes[lt..];
            let parsed = match mode {
                Mode::Text => tags.parse_open(candidate, 0),
                Mode::Undecided => match tags.parse_open(candidate, 0) {
                    Parse::Tag(tag) => Parse::Tag(tag),
                    _ => tags.parse_close(candidate, None, 0),
                },
                Mode::Block(name) => tags.parse_close(candidate, Some(name), 0),
            };
            // The whole text is here: an incomplete tag is text, like any non-tag.
            let Parse::Tag(tag) = parsed else {
                search = lt + 1;
                continue;
            };
            mode = match (mode, tag.kind) {
                (Mode::Block(_), _) | (Mode::Undecided, TagKind::Close) => {
                    thinking(&mut spans, start..lt);
                    Mode::Text
                }
                (_, TagKind::Open(name)) => {
                    answer(&mut spans, start..lt);
                    Mode::Block(name)
                }
                (_, TagKind::SelfClosing | TagKind::Close) => {
                    answer(&mut spans, start..lt);
                    Mode::Text
                }
            };
            start = lt + tag.len;
            search = start;
        }
        spans.unclosed = matches!(mode, Mode::Block(_));
        if spans.unclosed {
            thinking(&mut spans, start..content.len());
        } else {
            answer(&mut spans, start..content.len());
        }
        trim_ranges(content, &mut spans.content);
        spans
    }

    /// Starts a streaming extraction with this tag set.
    pub fn stream(&self, options: StreamOptions) -> ThinkingStream {
        ThinkingStream {
            tags: Arc::clone(&self.tags),
            mode: if options.starts_in_thinking {
                StreamMode::Block(None)
            } else {
                StreamMode::Text
            },
            held: String::new(),
            finished: false,
            content: TrimmedOutput::default(),
            thinking: TrimmedOutput::default(),
            thinking_source: None,
        }
    }
}

impl Default for ThinkingExtractor {
    /// An extractor for [`DEFAULT_TAGS`].
    fn default() -> Self {
        default_extractor().clone()
    }
}

/// Separates the thinking from `content` with the [`DEFAULT_TAGS`]; see
/// [`ThinkingExtractor::extract`].
pub fn extract_thinking(content: &str, separate_reasoning: Option<&str>) -> Extracted {
    default_extractor().extract(content, separate_reasoning)
}

fn default_extractor() -> &'static ThinkingExtractor {
    static DEFAULT: OnceLock<ThinkingExtractor> = OnceLock::new();
    // The default names are valid by construction (lower-case ASCII letters): built
    // directly, with no fallible path (an `expect` would pull error formatting into wasm).
    DEFAULT.get_or_init(|| ThinkingExtractor {
        tags: Arc::new(TagSet::new(
            DEFAULT_TAGS
                .iter()
                .map(|t| t.as_bytes().to_vec().into_boxed_slice())
                .collect(),
        )),
    })
}

/// Turns byte offsets into a text (those of [`Spans`]) into UTF-16 code-unit offsets,
/// JavaScript's string indices, in one pass over the text when they are asked in ascending
/// order.
///
/// Any offset gives an answer, never a panic: one inside a character counts that character
/// whole (the offset after it), one past the end counts the whole text, and one lower than
/// the offset asked before is counted again from the start.
#[derive(Debug, Clone)]
pub struct Utf16Cursor<'a> {
    text: &'a [u8],
    byte: usize,
    units: usize,
}

impl<'a> Utf16Cursor<'a> {
    /// A cursor at the start of `text`.
    pub fn new(text: &'a str) -> Self {
        Self {
            text: text.as_bytes(),
            byte: 0,
            units: 0,
        }
    }

    /// The UTF-16 offset of byte offset `byte`.
    pub fn units_at(&mut self, byte: usize) -> usize {
        let byte = byte.min(self.text.len());
        if byte < self.byte {
            (self.byte, self.units) = (0, 0);
        }
        // Every byte but a continuation byte (0b10xx_xxxx) starts a character: one unit,
        // and a second from U+10000 on (a four-byte lead, 0b1111_0xxx). Eight bytes at a
        // time: bit 7 of each byte of `continuation` and `four_byte` says which it is.
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let bytes = &self.text[self.byte..byte];
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let x = u64::from_le_bytes(word.try_into().unwrap_or_default());
            let continuation = x & !(x << 1) & HIGH;
            let four_byte = x & (x << 1) & (x << 2) & (x << 3) & HIGH;
            self.units += 8 - continuation.count_ones() as usize + four_byte.count_ones() as usize;
        }
        for &b in words.remainder() {
            self.units += usize::from(b & 0xC0 != 0x80) + usize::from(b >= 0xF0);
        }
        self.byte = byte;
        self.units
    }
}

/// Appends a trimmed piece of thinking, after a separator if something precedes it; an
/// empty or whitespace-only piece adds nothing.
fn append_piece(thinking: &mut String, piece: &str) {
    let piece = piece.trim();
    if piece.is_empty() {
        return;
    }
    if !thinking.is_empty() {
        thinking.push_str(SEPARATOR);
    }
    thinking.push_str(piece);
}

/// `range` of `text` without its leading and trailing whitespace; `None` when that leaves
/// nothing.
fn trimmed(text: &str, range: Range<usize>) -> Option<Range<usize>> {
    let piece = &text[range.clone()];
    let start = range.start + (piece.len() - piece.trim_start().len());
    let end = range.start + piece.trim_end().len();
    (start < end).then_some(start..end)
}

/// Trims the concatenation of `ranges` of `text` as `str::trim` would, by narrowing or
/// dropping the ranges at either end.
fn trim_ranges(text: &str, ranges: &mut Vec<Range<usize>>) {
    let mut blank = 0;
    while let Some(first) = ranges.get_mut(blank) {
        let piece = &text[first.clone()];
        first.start += piece.len() - piece.trim_start().len();
        if first.start < first.end {
            break;
        }
        blank += 1;
    }
    ranges.drain(..blank);
    while let Some(last) = ranges.last_mut() {
        last.end = last.start + text[last.clone()].trim_end().len();
        if last.start < last.end {
            break;
        }
        ranges.pop();
    }
}

/// Incremental extraction over a response that arrives in chunks.
///
/// Each [`push`](Self::push) returns what is certain so far; [`finish`](Self::finish)
/// flushes the rest. When the separate reasoning is pushed (with
/// [`push_reasoning`](Self::push_reasoning)) before the content, and
/// [`StreamOptions::starts_in_thinking`] is set exactly when the one-shot extractor would
/// see a pre-filled block (the first tag is a closing one), the concatenation of all
/// deltas equals the one-shot [`Extracted`] content and thinking (an empty thinking for
/// `None`), however the text is split into chunks, and [`unclosed`](Self::unclosed)
/// equals its `unclosed`.
///
/// To get there the stream holds some text back:
///
/// * From a `<` that may still become a tag of interest to the end of the chunk: at most
///   the longest tag name plus [`MAX_TAG_EXTRA`] plus 2 bytes. In text, only opening tags
///   are of interest; in a block, only its closing tag.
/// * Whitespace. Both content and thinking are trimmed, so leading whitespace of the
///   content, and of each piece of thinking (the separate reasoning, each block), is
///   dropped, and trailing whitespace is held until a later non-whitespace character of
///   the same output proves it is interior (for the content, that character may come after
///   a block). The `"\n\n"` between two pieces of thinking is emitted only when the later
///   piece produces its first non-whitespace character, so empty blocks add nothing.
///
/// At [`finish`](Self::finish), a held partial tag is text of wherever it stands (content,
/// or thinking inside a block) and held trailing whitespace is dropped.
///
/// Reasoning pushed after thinking from blocks is appended in order of arrival, as a new
/// piece of thinking; a block interrupted by reasoning goes on as another new piece. The
/// one-shot extractor has no such case: its separate reasoning always comes first.
#[derive(Debug, Clone)]
pub struct ThinkingStream {
    tags: Arc<TagSet>,
    mode: StreamMode,
    /// A possible tag, from its `<`, not yet decided; empty or starts with `<`.
    held: String,
    finished: bool,
    content: TrimmedOutput,
    thinking: TrimmedOutput,
    /// Which source wrote the current piece of thinking.
    thinking_source: Option<ThinkingSource>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamMode {
    /// In the answer text.
    Text,
    /// In a thinking block, opened by the tag of that index, or pre-filled (`None`,
    /// closed by any closing tag).
    Block(Option<usize>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ThinkingSource {
    Reasoning,
    Block,
}

impl ThinkingStream {
    /// Feeds the next chunk of content; returns the new deltas.
    pub fn push(&mut self, chunk: &str) -> ThinkingDelta {
        let mut out = ThinkingDelta::default();
        self.push_into(chunk, &mut out);
        out
    }

    /// Like [`push`](Self::push), but appends the deltas to `out`; allocates nothing when
    /// `out` has the capacity.
    pub fn push_into(&mut self, chunk: &str, out: &mut ThinkingDelta) {
        if self.finished {
            return;
        }
        let mut rest = chunk;
        // Resolve the held candidate first, giving it only as much of the chunk as a tag
        // can span, so that the bulk of the chunk is scanned in place, never copied.
        while !self.held.is_empty() && !rest.is_empty() {
            let old = self.held.len();
            let take = ceil_char_boundary(rest, self.tags.hold_limit.saturating_sub(old).max(1));
            let mut held = std::mem::take(&mut self.held);
            held.push_str(&rest[..take]);
            let undecided = self.scan(&held, old, out);
            if undecided >= old {
                // Decided; whatever is undecided now starts inside `rest`.
                rest = &rest[undecided - old..];
                held.clear();
            } else {
                // Still undecided, which leaves nothing of `rest`: hold on.
                held.drain(..undecided);
                rest = &rest[take..];
            }
            self.held = held;
        }
        if !rest.is_empty() {
            let undecided = self.scan(rest, 0, out);
            self.held.push_str(&rest[undecided..]);
        }
    }

    /// Feeds the next chunk of a provider's separate reasoning field
    /// (`reasoning_content`, `reasoning`): thinking text, never parsed for tags.
    pub fn push_reasoning(&mut self, chunk: &str) -> ThinkingDelta {
        let mut out = ThinkingDelta::default();
        if !self.finished {
            self.write_thinking(ThinkingSource::Reasoning, chunk, &mut out.thinking);
        }
        out
    }

    /// Ends the stream: flushes a held partial tag as text and drops held trailing
    /// whitespace. Later pushes are no-ops that return empty deltas.
    pub fn finish(&mut self) -> ThinkingDelta {
        let mut out = ThinkingDelta::default();
        if self.finished {
            return out;
        }
        let held = std::mem::take(&mut self.held);
        self.write_text(&held, &mut out);
        self.finished = true;
        out
    }

    /// Whether a thinking block is open: after [`finish`](Self::finish), whether one was
    /// left open at the end (the one-shot [`Extracted::unclosed`]); before, whether the
    /// text so far ends inside a block.
    pub fn unclosed(&self) -> bool {
        matches!(self.mode, StreamMode::Block(_))
    }

    /// Processes `text` in the current mode, writing what it decides to `out`; returns where
    /// the undecided tail (a possible tag) begins, `text.len()` if there is none. `resume`:
    /// `text[1..resume]` was already scanned as part of a still-undecided tag at 0.
    fn scan(&mut self, text: &str, resume: usize, out: &mut ThinkingDelta) -> usize {
        let bytes = text.as_bytes();
        let mut start = 0;
        let mut search = 0;
        while let Some(found) = text[search..].find('<') {
            let lt = search + found;
            let resume = if lt == 0 { resume } else { 0 };
            let parsed = match self.mode {
                StreamMode::Text => self.tags.parse_open(&bytes[lt..], resume),
                StreamMode::Block(name) => self.tags.parse_close(&bytes[lt..], name, resume),
            };
            match parsed {
                Parse::Text => search = lt + 1,
                Parse::Incomplete => {
                    self.write_text(&text[start..lt], out);
                    return lt;
                }
                Parse::Tag(tag) => {
                    self.write_text(&text[start..lt], out);
                    self.mode = match tag.kind {
                        TagKind::Open(name) => {
                            self.thinking_source = None;
                            StreamMode::Block(Some(name))
                        }
                        TagKind::SelfClosing | TagKind::Close => StreamMode::Text,
                    };
                    start = lt + tag.len;
                    search = start;
                }
            }
        }
        self.write_text(&text[start..], out);
        text.len()
    }

    /// Writes text to the output of the current mode.
    fn write_text(&mut self, text: &str, out: &mut ThinkingDelta) {
        match self.mode {
            StreamMode::Text => self.content.write(text, "", &mut out.content),
            StreamMode::Block(_) => {
                self.write_thinking(ThinkingSource::Block, text, &mut out.thinking)
            }
        }
    }

    fn write_thinking(&mut self, source: ThinkingSource, text: &str, out: &mut String) {
        if text.is_empty() {
            return;
        }
        if self.thinking_source != Some(source) {
            self.thinking.end_piece();
            self.thinking_source = Some(source);
        }
        self.thinking.write(text, SEPARATOR, out);
    }
}

/// One output (content or thinking) made of pieces that are each trimmed and joined with a
/// separator, written incrementally.
#[derive(Debug, Clone, Default)]
struct TrimmedOutput {
    /// Something non-blank was written, in any piece.
    written: bool,
    /// Something non-blank was written in the current piece.
    in_piece: bool,
    /// Trailing whitespace of the current piece, held until more text follows.
    pending: String,
}

impl TrimmedOutput {
    fn write(&mut self, text: &str, separator: &str, out: &mut String) {
        let body = text.trim_end();
        if body.is_empty() {
            if self.in_piece {
                self.pending.push_str(text);
            }
            return;
        }
        if self.in_piece {
            out.push_str(&self.pending);
            self.pending.clear();
            out.push_str(body);
        } else {
            if self.written {
                out.push_str(separator);
            }
            out.push_str(body.trim_start());
            self.in_piece = true;
            self.written = true;
        }
        self.pending.push_str(&text[body.len()..]);
    }

    /// The current piece is over: its trailing whitespace is dropped and the next
    /// non-blank text starts a new piece.
    fn end_piece(&mut self) {
        self.in_piece = false;
        self.pending.clear();
    }
}

/// The smallest char boundary of `s` at or after `index`, capped at `s.len()`.
fn ceil_char_boundary(s: &str, index: usize) -> usize {
    let mut index = index.min(s.len());
    while !s.is_char_boundary(index) {
        index += 1;
    }
    index
}

/// The configured names, lowercase, and the derived bound on held text.
#[derive(Debug)]
struct TagSet {
    names: Vec<Box<[u8]>>,
    /// Bytes from a `<` after which any tag candidate is decided.
    hold_limit: usize,
}

/// What a `<` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parse {
    /// A tag of interest, `len` bytes long.
    Tag(Tag),
    /// Plain text: no tag of interest starts here, whatever follows.
    Text,
    /// Could still become a tag of interest: the bytes end too soon to tell.
    Incomplete,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag {
    kind: TagKind,
    len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TagKind {
    /// `<name …>`, with the index of the name.
    Open(usize),
    /// `<name/>` or `<name …/>`: an empty block.
    SelfClosing,
    /// `</name>`.
    Close,
}

enum NameMatch {
    Full,
    /// The bytes end within the name.
    Prefix,
    No,
}

impl TagSet {
    fn new(names: Vec<Box<[u8]>>) -> Self {
        let longest = names.iter().map(|n| n.len()).max().unwrap_or(0);
        // `</` + name + whitespace + `>`, the longest any tag can take to be decided.
        let hold_limit = 2 + longest + MAX_TAG_EXTRA + 1;
        Self { names, hold_limit }
    }

    /// Parses an opening or self-closing tag at `s[0] == b'<'`. The first decision is
    /// final: more bytes never change a `Tag` or `Text` answer.
    fn parse_open(&self, s: &[u8], resume: usize) -> Parse {
        let mut incomplete = false;
        for (index, name) in self.names.iter().enumerate() {
            match match_name(s, 1, name) {
                NameMatch::No => continue,
                NameMatch::Prefix => {
                    incomplete = true;
                    continue;
                }
                NameMatch::Full => {}
            }
            let after = 1 + name.len();
            match s.get(after) {
                None => incomplete = true,
                Some(b'>') => {
                    return Parse::Tag(Tag {
                        kind: TagKind::Open(index),
                        len: after + 1,
                    })
                }
                Some(b'/') => match s.get(after + 1) {
                    None => incomplete = true,
                    Some(b'>') => {
                        return Parse::Tag(Tag {
                            kind: TagKind::SelfClosing,
                            len: after + 2,
                        })
                    }
                    Some(_) => {}
                },
                Some(b) if b.is_ascii_whitespace() => {
                    // The attributes end at the first `>`; `s[after + 1..resume]` is known to
                    // hold neither `>` nor `<`.
                    let limit = after + MAX_TAG_EXTRA + 1;
                    let end = limit.min(s.len());
                    let from = resume.max(after + 1).min(end);
                    let region = &s[from..end];
                    match region.iter().position(|&b| b == b'>' || b == b'<') {
                        Some(i) if region[i] == b'>' => {
                            let gt = from + i;
                            let kind = if s[gt - 1] == b'/' {
                                TagKind::SelfClosing
                            } else {
                                TagKind::Open(index)
                            };
                            return Parse::Tag(Tag { kind, len: gt + 1 });
                        }
                        Some(_) => {}
                        None if s.len() < limit => incomplete = true,
                        None => {}
                    }
                }
                Some(_) => {}
            }
        }
        if incomplete {
            Parse::Incomplete
        } else {
            Parse::Text
        }
    }

    /// Parses a closing tag at `s[0] == b'<'`: of the name with that index, or of any name
    /// for `None`. As with [`Self::parse_open`], the first decision is final.
    fn parse_close(&self, s: &[u8], only: Option<usize>, resume: usize) -> Parse {
        match s.get(1) {
            None => return Parse::Incomplete,
            Some(b'/') => {}
            Some(_) => return Parse::Text,
        }
        let mut incomplete = false;
        for (index, name) in self.names.iter().enumerate() {
            if only.is_some_and(|only| only != index) {
                continue;
            }
            match match_name(s, 2, name) {
                NameMatch::No => continue,
                NameMatch::Prefix => {
                    incomplete = true;
                    continue;
                }
                NameMatch::Full => {}
            }
            // Whitespace up to the `>`. `s[after..resume]` is known to be whitespace if
            // this name was still possible there: then `s[after]` is. It may not have been:
            // a longer name kept the tag undecided (`</thinki` for `think` and `thinking`),
            // and then `s[after]` is that name's next letter, so the region is read again.
            let after = 2 + name.len();
            let limit = after + MAX_TAG_EXTRA + 1;
            let end = limit.min(s.len());
            let known_blank = s.get(after).is_some_and(u8::is_ascii_whitespace);
            let from = if known_blank {
                resume.max(after)
            } else {
                after
            }
            .min(end);
            let region = &s[from..end];
            match region.iter().position(|b| !b.is_ascii_whitespace()) {
                Some(i) if region[i] == b'>' => {
                    return Parse::Tag(Tag {
                        kind: TagKind::Close,
                        len: from + i + 1,
                    })
                }
                Some(_) => {}
                None if s.len() < limit => incomplete = true,
                None => {}
            }
        }
        if incomplete {
            Parse::Incomplete
        } else {
            Parse::Text
        }
    }
}

/// Whether `s[start..]` begins with `name`, ASCII case-insensitively.
fn match_name(s: &[u8], start: usize, name: &[u8]) -> NameMatch {
    let rest = s.get(start..).unwrap_or_default();
    if rest.len() < name.len() {
        if rest.eq_ignore_ascii_case(&name[..rest.len()]) {
            NameMatch::Prefix
        } else {
            NameMatch::No
        }
    } else if rest[..name.len()].eq_ignore_ascii_case(name) {
        NameMatch::Full
    } else {
        NameMatch::No
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_tags() -> Arc<TagSet> {
        Arc::clone(&ThinkingExtractor::default().tags)
    }

    fn open(s: &str) -> Parse {
        default_tags().parse_open(s.as_bytes(), 0)
    }

    fn close(s: &str, only: Option<usize>) -> Parse {
        default_tags().parse_close(s.as_bytes(), only, 0)
    }

    fn tag(kind: TagKind, len: usize) -> Parse {
        Parse::Tag(Tag { kind, len })
    }

    #[test]
    fn opening_tags_are_recognised_by_name_and_terminator() {
        // DEFAULT_TAGS order: thinking, reasoning, think.
        assert_eq!(open("<think>x"), tag(TagKind::Open(2), 7));
        assert_eq!(open("<THINKING>"), tag(TagKind::Open(0), 10));
        assert_eq!(open("<think a=\"1\">"), tag(TagKind::Open(2), 13));
        assert_eq!(open("<think/>"), tag(TagKind::SelfClosing, 8));
        assert_eq!(open("<think a />"), tag(TagKind::SelfClosing, 11));
        assert_eq!(open("<thinker>"), Parse::Text);
        assert_eq!(open("<thinkingfoo>"), Parse::Text);
        assert_eq!(open("<think/x>"), Parse::Text);
        assert_eq!(open("<think a<b>"), Parse::Text);
        assert_eq!(open("</think>"), Parse::Text);
        assert_eq!(open("< think>"), Parse::Text);
    }

    #[test]
    fn an_opening_tag_cut_short_is_incomplete() {
        for prefix in [
            "<",
            "<t",
            "<THI",
            "<think",
            "<thinki",
            "<think/",
            "<think a=1",
        ] {
            assert_eq!(open(prefix), Parse::Incomplete, "{prefix:?}");
        }
    }

    #[test]
    fn attributes_are_bounded() {
        let within = format!("<think {}>", "a".repeat(MAX_TAG_EXTRA - 1));
        assert!(matches!(open(&within), Parse::Tag(_)));
        let beyond = format!("<think {}>", "a".repeat(MAX_TAG_EXTRA));
        assert_eq!(open(&beyond), Parse::Text);
        // Undecided until the bound is reached without a `>`.
        let long = format!("<think {}", "a".repeat(MAX_TAG_EXTRA - 1));
        assert_eq!(open(&long), Parse::Incomplete);
        assert_eq!(open(&format!("{long}a")), Parse::Text);
    }

    #[test]
    fn closing_tags_match_the_open_name_only() {
        assert_eq!(close("</think>", Some(2)), tag(TagKind::Close, 8));
        assert_eq!(close("</THINK \n>", Some(2)), tag(TagKind::Close, 10));
        assert_eq!(close("</thinking>", Some(2)), Parse::Text);
        assert_eq!(close("</thinking>", None), tag(TagKind::Close, 11));
        assert_eq!(close("</think x>", Some(2)), Parse::Text);
        assert_eq!(close("<think>", None), Parse::Text);
        for prefix in ["<", "</", "</thin", "</think", "</think  "] {
            assert_eq!(close(prefix, Some(2)), Parse::Incomplete, "{prefix:?}");
        }
    }

    #[test]
    fn the_hold_limit_decides_every_candidate() {
        let tags = default_tags();
        // "reasoning" is the longest default name.
        let open_ws = format!("<reasoning{}", " ".repeat(tags.hold_limit));
        let close_ws = format!("</reasoning{}", " ".repeat(tags.hold_limit));
        let decided = |p: Parse| p != Parse::Incomplete;
        assert!(decided(
            tags.parse_open(&open_ws.as_bytes()[..tags.hold_limit], 0)
        ));
        assert!(decided(tags.parse_close(
            &close_ws.as_bytes()[..tags.hold_limit],
            None,
            0
        )));
        assert!(!decided(tags.parse_close(
            &close_ws.as_bytes()[..tags.hold_limit - 1],
            None,
            0
        )));
    }

    #[test]
    fn resuming_gives_the_same_answer() {
        let tags = default_tags();
        let text = b"<think a=1 b=2>";
        for resume in 0..text.len() {
            assert_eq!(tags.parse_open(text, resume), tag(TagKind::Open(2), 15));
        }
        let text = b"</think    >";
        for resume in 0..text.len() {
            assert_eq!(
                tags.parse_close(text, Some(2), resume),
                tag(TagKind::Close, 12)
            );
        }
    }

    #[test]
    fn trimmed_output_joins_pieces_lazily() {
        let mut output = TrimmedOutput::default();
        let mut out = String::new();
        output.write("  a ", SEPARATOR, &mut out);
        assert_eq!(out, "a");
        output.write(" b\n", SEPARATOR, &mut out);
        assert_eq!(out, "a  b");
        output.end_piece();
        output.write("  ", SEPARATOR, &mut out);
        assert_eq!(out, "a  b");
        output.write(" c", SEPARATOR, &mut out);
        assert_eq!(out, "a  b\n\nc");
    }

    #[test]
    fn ceil_char_boundary_never_splits_a_char() {
        let s = "a🦀b";
        assert_eq!(ceil_char_boundary(s, 0), 0);
        assert_eq!(ceil_char_boundary(s, 2), 5);
        assert_eq!(ceil_char_boundary(s, 5), 5);
        assert_eq!(ceil_char_boundary(s, 99), s.len());
    }
}

//! The positions `extractThinking` hands to JavaScript: the spans of a one-shot extraction
//! (`ThinkingExtractor::spans`) turned into UTF-16 offsets by `thinking::Utf16Cursor`.
//!
//! Payload: the answer text, then after a NUL the separate reasoning. Control: more byte
//! offsets to convert, in any order.
//!
//! Checks what the JavaScript entry relies on: every range lies on character boundaries
//! within its text; content and thinking ranges ascend, each list and the two together
//! (the entry converts them in one merged pass); each offset converts to the number of
//! UTF-16 units before it, so slicing the UTF-16 text gives the same pieces as slicing the
//! UTF-8 one; and any offset, in any order, converts without a panic as documented.
#![no_main]

use std::ops::Range;

use libfuzzer_sys::fuzz_target;
use llm_distiller::thinking::{ThinkingExtractor, Utf16Cursor};
use llm_distiller_fuzz::Input;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let (content, reasoning) = input.answer();
    let (content, reasoning) = (content.as_str(), reasoning.as_deref());
    let spans = ThinkingExtractor::default().spans(content, reasoning);

    let mut all: Vec<&Range<usize>> = spans.content.iter().chain(&spans.thinking).collect();
    for list in [&spans.content, &spans.thinking] {
        assert!(list.windows(2).all(|w| w[0].end <= w[1].start), "{list:?}");
    }
    all.sort_by_key(|r| r.start);
    assert!(all.windows(2).all(|w| w[0].end <= w[1].start), "{spans:?}");
    let utf16: Vec<u16> = content.encode_utf16().collect();
    let mut cursor = Utf16Cursor::new(content);
    for range in all {
        assert!(
            range.start <= range.end && range.end <= content.len(),
            "{range:?}"
        );
        let (start, end) = (cursor.units_at(range.start), cursor.units_at(range.end));
        assert_eq!(start, units_before(content, range.start));
        assert_eq!(end, units_before(content, range.end));
        assert_eq!(
            String::from_utf16(&utf16[start..end]).ok().as_deref(),
            Some(&content[range.clone()])
        );
    }
    if let (Some(reasoning), Some(range)) = (reasoning, &spans.reasoning) {
        let mut cursor = Utf16Cursor::new(reasoning);
        let (start, end) = (cursor.units_at(range.start), cursor.units_at(range.end));
        let utf16: Vec<u16> = reasoning.encode_utf16().collect();
        assert_eq!(
            String::from_utf16(&utf16[start..end]).ok().as_deref(),
            Some(reasoning.trim())
        );
    }

    // Any offsets, in any order: inside a character counts it whole, past the end counts
    // the whole text.
    let mut cursor = Utf16Cursor::new(content);
    for _ in 0..input.byte() % 8 {
        let byte = usize::from(input.u16());
        let mut end = byte.min(content.len());
        while !content.is_char_boundary(end) {
            end += 1;
        }
        assert_eq!(
            cursor.units_at(byte),
            units_before(content, end),
            "byte {byte}"
        );
    }
});

/// The UTF-16 units of `text[..end]` (`end` on a character boundary), counted the slow way.
fn units_before(text: &str, end: usize) -> usize {
    text[..end].encode_utf16().count()
}

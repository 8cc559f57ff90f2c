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
    let units = units_table(content);
    let mut cursor = Utf16Cursor::new(content);
    for range in all {
        assert!(
            range.start <= range.end && range.end <= content.len(),
            "{range:?}"
        );
        let (start, end) = (cursor.units_at(range.start), cursor.units_at(range.end));
        assert_eq!((start, end), (units[range.start], units[range.end]));
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
        let expected = units[byte.min(content.len())];
        assert_eq!(cursor.units_at(byte), expected, "byte {byte}");
    }
});

/// For each byte offset of `text`, the UTF-16 units before it, counted the plain way
/// (`char::len_utf16`); an offset inside a character counts that character.
fn units_table(text: &str) -> Vec<usize> {
    let mut table = vec![0; text.len() + 1];
    let mut units = 0;
    for (at, c) in text.char_indices() {
        let after = units + c.len_utf16();
        table[at] = units;
        table[at + 1..at + c.len_utf8()].fill(after);
        units = after;
    }
    table[text.len()] = units;
    table
}

//! Thinking extraction, one-shot and streamed (`thinking.rs`).
//!
//! Payload: the answer text, then after a NUL the separate reasoning. Control: the tag set,
//! and where the content and the reasoning are split into chunks.
//!
//! Checks what `ThinkingStream` documents: streamed at any split, the deltas add up to the
//! one-shot extraction (the text behind an empty block, so the one-shot cannot take the
//! pre-filled path; and with `starts_in_thinking` when the text does open with a closing
//! tag); a pre-filled stream gives the same at any split as whole; the spans slice out
//! exactly the one-shot result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_distiller::thinking::{
    Extracted, StreamOptions, ThinkingDelta, ThinkingExtractor, DEFAULT_TAGS, SEPARATOR,
};
use llm_distiller_fuzz::{str_pieces, Input};

/// A tag set with unusual names, besides the default one. Both have `think`.
const CUSTOM_TAGS: [&str; 3] = ["think", "Re-AS_on:ing", "t"];

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let (content, reasoning) = input.answer();
    let (content, reasoning) = (content.as_str(), reasoning.as_deref());
    let tags: &[&str] = if input.byte() & 1 == 0 {
        &DEFAULT_TAGS
    } else {
        &CUSTOM_TAGS
    };
    let extractor = ThinkingExtractor::new(tags).expect("valid tag names");
    let cuts = input.cuts(content.len(), 12);
    let chunks = str_pieces(content, &cuts);
    let reasoning_chunks = reasoning.map(|r| {
        let cuts = input.cuts(r.len(), 4);
        str_pieces(r, &cuts)
    });
    let reasoning_chunks = reasoning_chunks.as_deref().unwrap_or(&[]);

    let one_shot = extractor.extract(content, reasoning);
    assert_eq!(from_spans(&extractor, content, reasoning), one_shot);

    let behind_a_block = extractor.extract(&format!("<think></think>{content}"), reasoning);
    let streamed = stream(&extractor, false, reasoning_chunks, &chunks);
    assert_eq!(streamed, behind_a_block, "streamed at {cuts:?}");

    let prefilled = stream(&extractor, true, reasoning_chunks, &chunks);
    assert_eq!(
        prefilled,
        stream(&extractor, true, reasoning_chunks, &[content]),
        "pre-filled, streamed at {cuts:?}"
    );
    if opens_with_a_closing_tag(content, tags) {
        assert_eq!(prefilled, one_shot, "pre-filled");
    }
});

/// Streams the reasoning chunks, then the content chunks, and adds up the deltas.
fn stream(
    extractor: &ThinkingExtractor,
    starts_in_thinking: bool,
    reasoning: &[&str],
    chunks: &[&str],
) -> Extracted {
    let mut stream = extractor.stream(StreamOptions { starts_in_thinking });
    let mut all = ThinkingDelta::default();
    for chunk in reasoning {
        let step = stream.push_reasoning(chunk);
        all.content.push_str(&step.content);
        all.thinking.push_str(&step.thinking);
    }
    for chunk in chunks {
        stream.push_into(chunk, &mut all);
    }
    let last = stream.finish();
    all.content.push_str(&last.content);
    all.thinking.push_str(&last.thinking);
    Extracted {
        content: all.content,
        thinking: (!all.thinking.is_empty()).then_some(all.thinking),
        unclosed: stream.unclosed(),
    }
}

/// The one-shot result rebuilt from the spans, as the JavaScript entry slices it.
fn from_spans(extractor: &ThinkingExtractor, content: &str, reasoning: Option<&str>) -> Extracted {
    let spans = extractor.spans(content, reasoning);
    let mut pieces: Vec<&str> = Vec::new();
    if let (Some(reasoning), Some(range)) = (reasoning, spans.reasoning) {
        pieces.push(&reasoning[range]);
    }
    pieces.extend(spans.thinking.iter().map(|r| &content[r.clone()]));
    let thinking = pieces.join(SEPARATOR);
    Extracted {
        content: spans.content.iter().map(|r| &content[r.clone()]).collect(),
        thinking: (!thinking.is_empty()).then_some(thinking),
        unclosed: spans.unclosed,
    }
}

/// Whether the first `<` of `text` starts a plain closing tag of `tags`: then the one-shot
/// extractor takes the text before it as a pre-filled block.
fn opens_with_a_closing_tag(text: &str, tags: &[&str]) -> bool {
    let Some(lt) = text.find('<') else {
        return false;
    };
    let rest = &text.as_bytes()[lt..];
    tags.iter().any(|tag| {
        let close = format!("</{tag}>");
        rest.len() >= close.len() && rest[..close.len()].eq_ignore_ascii_case(close.as_bytes())
    })
}

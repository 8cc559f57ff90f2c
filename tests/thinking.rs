//! Thinking extraction through the public API: the fixtures in `thinking_fixtures.json`
//! one-shot and streamed at every split, plus properties over generated text.
// Native only: these run on a simulated platform or use proptest; the wasm tests are js_*.rs.
#![cfg(not(target_arch = "wasm32"))]

use llm_distiller::thinking::{
    extract_thinking, Extracted, StreamOptions, ThinkingDelta, ThinkingExtractor, Utf16Cursor,
    MAX_TAG_EXTRA,
};
use llm_distiller::Error;
use proptest::prelude::*;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    name: String,
    input: String,
    separate_reasoning: Option<String>,
    tags: Option<Vec<String>>,
    #[serde(default)]
    prefilled: bool,
    content: String,
    thinking: Option<String>,
    unclosed: bool,
}

impl Fixture {
    fn extractor(&self) -> ThinkingExtractor {
        match &self.tags {
            Some(tags) => ThinkingExtractor::new(tags).expect("fixture tags are valid"),
            None => ThinkingExtractor::default(),
        }
    }

    fn expected(&self) -> Extracted {
        Extracted {
            content: self.content.clone(),
            thinking: self.thinking.clone(),
            unclosed: self.unclosed,
        }
    }
}

fn fixtures() -> Vec<Fixture> {
    serde_json::from_str(include_str!("thinking_fixtures.json")).expect("fixtures parse")
}

/// Streams `reasoning` (whole, before the content) and then `chunks`, and assembles the
/// deltas the way a caller would.
fn stream(
    extractor: &ThinkingExtractor,
    starts_in_thinking: bool,
    reasoning: &[&str],
    chunks: &[&str],
) -> Extracted {
    let mut stream = extractor.stream(StreamOptions { starts_in_thinking });
    let mut all = ThinkingDelta::default();
    for chunk in reasoning {
        all.thinking
            .push_str(&stream.push_reasoning(chunk).thinking);
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

/// Every char boundary of `s`, 0 and `s.len()` included.
fn boundaries(s: &str) -> Vec<usize> {
    (0..=s.len()).filter(|&i| s.is_char_boundary(i)).collect()
}

/// `s` cut into chunks of `size` bytes, each stretched to the next char boundary.
fn chunks_of(s: &str, size: usize) -> Vec<&str> {
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < s.len() {
        let mut end = (start + size).min(s.len());
        while !s.is_char_boundary(end) {
            end += 1;
        }
        chunks.push(&s[start..end]);
        start = end;
    }
    chunks
}

fn split_at<'a>(s: &'a str, points: &[usize]) -> Vec<&'a str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for &p in points {
        parts.push(&s[start..p]);
        start = p;
    }
    parts.push(&s[start..]);
    parts
}

#[test]
fn fixtures_one_shot() {
    let fixtures = fixtures();
    assert!(fixtures.len() >= 35);
    for f in &fixtures {
        let got = f
            .extractor()
            .extract(&f.input, f.separate_reasoning.as_deref());
        assert_eq!(got, f.expected(), "fixture {:?}", f.name);
    }
}

#[test]
fn fixtures_stream_at_every_split() {
    for f in fixtures() {
        let extractor = f.extractor();
        let reasoning: Vec<&str> = f.separate_reasoning.iter().map(String::as_str).collect();
        let expected = f.expected();
        let check = |chunks: &[&str]| {
            let got = stream(&extractor, f.prefilled, &reasoning, chunks);
            assert_eq!(got, expected, "fixture {:?} in chunks {chunks:?}", f.name);
        };
        let points = boundaries(&f.input);
        for &p in &points {
            check(&split_at(&f.input, &[p]));
        }
        if points.len() <= 48 {
            for (i, &p) in points.iter().enumerate() {
                for &q in &points[i..] {
                    check(&split_at(&f.input, &[p, q]));
                }
            }
        }
        for size in [1, 2, 3, 5, 7, 16, 64] {
            check(&chunks_of(&f.input, size));
        }
    }
}

#[test]
fn fixtures_stream_with_reasoning_in_pieces() {
    for f in fixtures() {
        let Some(reasoning) = &f.separate_reasoning else {
            continue;
        };
        let got = stream(
            &f.extractor(),
            f.prefilled,
            &chunks_of(reasoning, 1),
            &chunks_of(&f.input, 3),
        );
        assert_eq!(got, f.expected(), "fixture {:?}", f.name);
    }
}

#[test]
fn content_streams_as_it_arrives() {
    let mut stream = ThinkingExtractor::default().stream(StreamOptions::default());
    let delta = stream.push("Hello world, this is ");
    assert!(
        delta.content.starts_with("Hello world, this is"),
        "{delta:?}"
    );
    assert!(delta.thinking.is_empty());

    let delta = stream.push("a test <thi");
    assert!(!delta.content.contains('<'), "{delta:?}");
    assert!(delta.content.ends_with("a test"), "{delta:?}");

    let delta = stream.push("nk>pondering");
    assert_eq!(delta.content, "");
    assert_eq!(delta.thinking, "pondering");

    let delta = stream.push("</think> done.");
    assert_eq!(delta.thinking, "");
    // The space before the block was held; it is interior after all.
    assert_eq!(delta.content, "  done.");
    assert!(stream.finish().is_empty());
}

#[test]
fn a_partial_non_tag_is_released_once_decided() {
    let mut stream = ThinkingExtractor::default().stream(StreamOptions::default());
    assert_eq!(stream.push("a <").content, "a");
    assert_eq!(stream.push(" b").content, " < b");
    assert_eq!(stream.push(" <thin").content, "");
    assert_eq!(stream.push("ker>").content, " <thinker>");
}

#[test]
fn the_separator_waits_for_the_next_block_text() {
    let mut stream = ThinkingExtractor::default().stream(StreamOptions::default());
    assert_eq!(stream.push("<think>one \n</think>").thinking, "one");
    let delta = stream.push("<think>\n  ");
    assert!(delta.is_empty(), "{delta:?}");
    assert_eq!(stream.push("</think><think>  ").thinking, "");
    assert_eq!(stream.push("two").thinking, "\n\ntwo");
    assert_eq!(stream.push("  </think>").thinking, "");
    assert!(stream.finish().is_empty());
    assert!(!stream.unclosed());
}

#[test]
fn separate_reasoning_comes_first() {
    let mut stream = ThinkingExtractor::default().stream(StreamOptions::default());
    assert_eq!(stream.push_reasoning(" First,").thinking, "First,");
    assert_eq!(stream.push_reasoning(" think. ").thinking, " think.");
    assert_eq!(stream.push("<think> more </think>").thinking, "\n\nmore");
}

#[test]
fn unclosed_follows_the_block_state() {
    let mut stream = ThinkingExtractor::default().stream(StreamOptions::default());
    stream.push("Intro <think>cut");
    assert!(stream.unclosed());
    assert_eq!(stream.push(" off</thi").thinking, " off");
    let last = stream.finish();
    assert_eq!(last.thinking, "</thi");
    assert!(stream.unclosed());

    let mut stream = ThinkingExtractor::default().stream(StreamOptions::default());
    stream.push("<think>x</think>y <thin");
    assert_eq!(stream.finish().content, " <thin");
    assert!(!stream.unclosed());
}

#[test]
fn pushes_after_finish_do_nothing() {
    let mut stream = ThinkingExtractor::default().stream(StreamOptions::default());
    stream.push("<think>a</think>b");
    stream.finish();
    assert!(stream.push("more <think>c</think>").is_empty());
    assert!(stream.push_reasoning("late").is_empty());
    assert!(stream.finish().is_empty());
    assert!(!stream.unclosed());
}

#[test]
fn prefilled_needs_the_option_when_streaming() {
    let text = "plan</think>Answer";
    assert_eq!(
        stream(&ThinkingExtractor::default(), false, &[], &[text]),
        Extracted {
            content: text.to_string(),
            thinking: None,
            unclosed: false
        }
    );
    // With the option and no closing tag at all, everything is thinking, still open.
    assert_eq!(
        stream(
            &ThinkingExtractor::default(),
            true,
            &[],
            &["still <think> planning"]
        ),
        Extracted {
            content: String::new(),
            thinking: Some("still <think> planning".to_string()),
            unclosed: true
        }
    );
}

#[test]
fn push_into_appends_without_allocating() {
    let mut stream = ThinkingExtractor::default().stream(StreamOptions::default());
    let mut out = ThinkingDelta {
        content: String::with_capacity(256),
        thinking: String::with_capacity(256),
    };
    let (content_ptr, thinking_ptr) = (out.content.as_ptr(), out.thinking.as_ptr());
    for chunk in ["<think>abc", " def</th", "ink>ghi <", "b> jkl"] {
        stream.push_into(chunk, &mut out);
    }
    assert_eq!(out.thinking, "abc def");
    assert_eq!(out.content, "ghi <b> jkl");
    assert_eq!(out.content.as_ptr(), content_ptr);
    assert_eq!(out.thinking.as_ptr(), thinking_ptr);
}

#[test]
fn held_text_is_bounded() {
    // A `<think ` with no `>` within the attribute bound is text: it is released once the
    // bound is passed, not held to the end.
    let extractor = ThinkingExtractor::default();
    let mut stream = extractor.stream(StreamOptions::default());
    let mut content = stream.push("x <think ").content;
    for _ in 0..MAX_TAG_EXTRA {
        content.push_str(&stream.push("a").content);
    }
    assert!(content.starts_with("x <think aaaa"), "{content:?}");
    let text = format!("x <think {}> y", "a".repeat(MAX_TAG_EXTRA));
    assert_eq!(extract_thinking(&text, None).content, text);

    let text = format!("<think {}>y</think>", "a".repeat(MAX_TAG_EXTRA - 1));
    assert_eq!(extract_thinking(&text, None).thinking.as_deref(), Some("y"));
}

#[test]
fn tag_names_are_validated() {
    for bad in [
        vec![],
        vec![""],
        vec!["think", "a b"],
        vec!["thïnk"],
        vec!["<think>"],
    ] {
        let error = ThinkingExtractor::new(&bad).expect_err("invalid tags rejected");
        assert!(
            matches!(&error, Error::Config { field, .. } if field == "thinking.tags"),
            "{bad:?}: {error:?}"
        );
    }
    let extractor = ThinkingExtractor::new(["Plan", "x-1_y:z", "plan"]).expect("valid tags");
    let got = extractor.extract("<PLAN>p</plan><x-1_y:z>q</X-1_Y:Z>r", None);
    assert_eq!(got.thinking.as_deref(), Some("p\n\nq"));
    assert_eq!(got.content, "r");
}

#[test]
fn extracted_serializes_with_its_field_names() {
    let got = extract_thinking("<think>t</think>c", None);
    assert_eq!(
        serde_json::to_value(&got).unwrap(),
        serde_json::json!({ "content": "c", "thinking": "t", "unclosed": false })
    );
}

#[test]
fn stream_options_deserialize_with_defaults() {
    let default: StreamOptions = serde_json::from_str("{}").unwrap();
    assert_eq!(default, StreamOptions::default());
    let prefilled: StreamOptions =
        serde_json::from_str(r#"{ "starts_in_thinking": true }"#).unwrap();
    assert!(prefilled.starts_in_thinking);
}

#[test]
fn byte_offsets_become_utf16_offsets() {
    // 1, 2, 3 and 4 bytes: 1, 1, 1 and 2 UTF-16 units.
    let text = "aé€🦀b";
    let mut cursor = Utf16Cursor::new(text);
    let expected = [(0, 0), (1, 1), (3, 2), (6, 3), (10, 5), (11, 6)];
    for (byte, units) in expected {
        assert_eq!(cursor.units_at(byte), units, "byte {byte}");
    }
    // Inside a character: that character counts whole. Past the end: the whole text.
    assert_eq!(Utf16Cursor::new(text).units_at(7), 5);
    assert_eq!(Utf16Cursor::new(text).units_at(99), 6);
    // Backwards: counted again from the start, not a panic.
    let mut cursor = Utf16Cursor::new(text);
    assert_eq!(cursor.units_at(10), 5);
    assert_eq!(cursor.units_at(3), 2);
}

// --- Properties -------------------------------------------------------------------------

/// Text rich in tags, partial tags, whitespace and multibyte characters.
fn tagged_text() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        Just("<think>"),
        Just("</think>"),
        Just("<thinking>"),
        Just("</thinking >"),
        Just("<THINKING a=1>"),
        Just("</THINKING>"),
        Just("<reasoning>"),
        Just("</reasoning>"),
        Just("<think/>"),
        Just("<thinker>"),
        Just("<"),
        Just("</"),
        Just("<thi"),
        Just(">"),
        Just("/"),
        Just(" "),
        Just("\n\n"),
        Just("\r\n"),
        Just("\u{3000}"),
        Just("é"),
        Just("🦀"),
        Just("a < b"),
        Just("word"),
    ];
    prop::collection::vec(fragment, 0..24).prop_map(|parts| parts.concat())
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![tagged_text(), any::<String>(), "[a-z<>/ ]{0,40}"]
}

/// Split points drawn as fractions, placed on char boundaries.
fn split_points(s: &str, fractions: &[f64]) -> Vec<usize> {
    let points = boundaries(s);
    let mut chosen: Vec<usize> = fractions
        .iter()
        .map(|f| points[((points.len() - 1) as f64 * f) as usize])
        .collect();
    chosen.sort_unstable();
    chosen
}

fn fractions() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(0.0..=1.0f64, 0..6)
}

/// Removes every `<…>` holding no other `<` or `>`: the tags of [`plain_with_tags`].
fn strip_tags(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        let after = &rest[lt + 1..];
        match after.find(['<', '>']) {
            Some(i) if after.as_bytes()[i] == b'>' => rest = &after[i + 1..],
            _ => {
                out.push('<');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn non_blank_sorted(s: &str) -> Vec<char> {
    let mut chars: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
    chars.sort_unstable();
    chars
}

/// Complete tags between text that holds no `<` or `>`.
fn plain_with_tags() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        Just("<think>".to_string()),
        Just("</think>".to_string()),
        Just("<THINKING a=1>".to_string()),
        Just("</thinking >".to_string()),
        Just("<reasoning>".to_string()),
        Just("</reasoning>".to_string()),
        Just("<think/>".to_string()),
        Just("<b>".to_string()),
        "[a-zé🦀 \n]{0,6}",
    ];
    prop::collection::vec(fragment, 0..20).prop_map(|parts| parts.concat())
}

proptest! {
    #[test]
    fn never_panics(
        text in any_text(),
        reasoning in proptest::option::of(any_text()),
        fractions in fractions(),
        starts_in_thinking in any::<bool>(),
    ) {
        let extractor = ThinkingExtractor::default();
        let _ = extractor.extract(&text, reasoning.as_deref());
        let chunks = split_at(&text, &split_points(&text, &fractions));
        let _ = stream(&extractor, starts_in_thinking, &reasoning.as_deref().into_iter().collect::<Vec<_>>(), &chunks);
    }

    /// Without `starts_in_thinking` the stream equals the one-shot result of the same text
    /// behind an empty block: that makes the first tag an opening one, so the one-shot
    /// cannot take the pre-filled path, and the empty block adds nothing.
    #[test]
    fn streaming_equals_one_shot(
        text in any_text(),
        reasoning in proptest::option::of(any_text()),
        fractions in fractions(),
    ) {
        let extractor = ThinkingExtractor::default();
        let expected = extractor.extract(&format!("<think></think>{text}"), reasoning.as_deref());
        let chunks = split_at(&text, &split_points(&text, &fractions));
        let reasoning: Vec<&str> = reasoning.as_deref().into_iter().collect();
        prop_assert_eq!(stream(&extractor, false, &reasoning, &chunks), expected);
    }

    /// Text that ends a pre-filled block streams like the one-shot with the option set.
    #[test]
    fn prefilled_streaming_equals_one_shot(
        before in "[a-zé🦀 \n>/]{0,12}",
        close in prop_oneof![Just("</think>"), Just("</REASONING >"), Just("</thinking>")],
        after in any_text(),
        fractions in fractions(),
    ) {
        let text = format!("{before}{close}{after}");
        let extractor = ThinkingExtractor::default();
        let chunks = split_at(&text, &split_points(&text, &fractions));
        prop_assert_eq!(stream(&extractor, true, &[], &chunks), extractor.extract(&text, None));
    }

    /// Apart from tags and whitespace, every character of the input ends up in the
    /// content or the thinking, once.
    #[test]
    fn no_text_is_lost(text in plain_with_tags()) {
        let got = extract_thinking(&text, None);
        let output = format!("{} {}", got.content, got.thinking.unwrap_or_default());
        prop_assert_eq!(
            non_blank_sorted(&strip_tags(&output)),
            non_blank_sorted(&strip_tags(&text))
        );
    }

    /// The cursor agrees with counting `encode_utf16`, at every character boundary in
    /// ascending order (each 8-byte block of the fast count included) and at any offset.
    #[test]
    fn utf16_offsets_match_encode_utf16(text in any_text(), offsets in prop::collection::vec(0usize..200, 0..8)) {
        let units = |end: usize| text[..end].encode_utf16().count();
        let mut cursor = Utf16Cursor::new(&text);
        for end in boundaries(&text) {
            prop_assert_eq!(cursor.units_at(end), units(end));
        }
        let mut cursor = Utf16Cursor::new(&text);
        for byte in offsets {
            // A byte inside a character counts that character whole.
            let end = (byte.min(text.len())..=text.len()).find(|&e| text.is_char_boundary(e)).unwrap();
            prop_assert_eq!(cursor.units_at(byte), units(end), "byte {}", byte);
        }
    }

    /// The ranges of `spans` lie in order on character boundaries, content and thinking
    /// apart, none empty, each thinking range trimmed and the content trimmed at its ends:
    /// what a caller that slices the text itself relies on.
    #[test]
    fn spans_are_ordered_trimmed_slices(
        text in any_text(),
        reasoning in proptest::option::of(any_text()),
    ) {
        let spans = ThinkingExtractor::default().spans(&text, reasoning.as_deref());
        match (&reasoning, &spans.reasoning) {
            (Some(r), Some(range)) => prop_assert_eq!(&r[range.clone()], r.trim()),
            (Some(r), None) => prop_assert!(r.trim().is_empty()),
            (None, got) => prop_assert_eq!(got, &None),
        }
        for list in [&spans.content, &spans.thinking] {
            for pair in list.windows(2) {
                prop_assert!(pair[0].end <= pair[1].start, "{:?}", list);
            }
        }
        let mut all: Vec<_> = spans.content.iter().chain(&spans.thinking).cloned().collect();
        all.sort_by_key(|r| r.start);
        for pair in all.windows(2) {
            prop_assert!(pair[0].end <= pair[1].start, "{:?}", spans);
        }
        for r in &all {
            prop_assert!(r.start < r.end && r.end <= text.len(), "{:?}", r);
            prop_assert!(text.is_char_boundary(r.start) && text.is_char_boundary(r.end));
        }
        for r in &spans.thinking {
            prop_assert_eq!(&text[r.clone()], text[r.clone()].trim());
        }
        if let (Some(first), Some(last)) = (spans.content.first(), spans.content.last()) {
            prop_assert_eq!(&text[first.clone()], text[first.clone()].trim_start());
            prop_assert_eq!(&text[last.clone()], text[last.clone()].trim_end());
        }
    }

    /// Text without `<` is the content, trimmed.
    #[test]
    fn text_without_tags_is_content(text in "[^<]{0,60}") {
        let got = extract_thinking(&text, None);
        prop_assert_eq!(got.content, text.trim());
        prop_assert_eq!(got.thinking, None);
        prop_assert!(!got.unclosed);
    }
}

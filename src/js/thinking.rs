//! Thinking extraction from JavaScript: the one-shot `extractThinking` as positions into
//! the caller's own text (the package's entry turns them into slices), and the streaming
//! `ThinkingStream`.

use std::cell::RefCell;

use js_sys::{Object, Reflect};
use wasm_bindgen::prelude::*;

use super::convert::from_js_or_default;
use super::errors::js_error;
use crate::error::Error;
use crate::thinking::{
    StreamOptions, ThinkingDelta, ThinkingExtractor, ThinkingStream, Utf16Cursor,
};

/// What joins the pieces of thinking ([`crate::thinking::SEPARATOR`]), for the package's
/// entry, which joins the slices `extractThinkingSpans` gives. Not part of the typed API.
#[wasm_bindgen(js_name = thinkingSeparator, skip_typescript)]
pub fn thinking_separator() -> String {
    crate::thinking::SEPARATOR.to_string()
}

thread_local! {
    /// Where the package's entry writes the text of `extractThinking`, reused from call to
    /// call (see [`thinking_input`]).
    static THINKING_INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A view of wasm memory with room for `capacity` bytes, for the package's entry to write
/// an answer into with `TextEncoder.encodeInto` before [`extract_thinking_spans`]: three
/// times as fast as `TextEncoder.encode` on text that is not all ASCII, and no copy. Not
/// part of the typed API.
///
/// The view is valid until the next call into wasm (which may grow its memory and detach
/// it): the entry writes into it at once and calls nothing in between.
#[wasm_bindgen(js_name = thinkingInput, skip_typescript)]
pub fn thinking_input(capacity: usize) -> js_sys::Uint8Array {
    THINKING_INPUT.with(|input| {
        let mut input = input.borrow_mut();
        // Grown as needed and kept (bytes past what is written are never read), but not
        // kept at many times the size the calls need.
        if input.len() > capacity.max(1 << 20) * 4 {
            *input = Vec::new();
        }
        if input.len() < capacity {
            input.resize(capacity, 0);
        }
        // SAFETY: the view aliases the buffer only until JavaScript's next call into wasm,
        // before which nothing in wasm runs; the buffer is only read again by that call.
        unsafe { js_sys::Uint8Array::view(&input) }
    })
}

/// `extractThinking` as positions, for the package's entry: the text is the first `length`
/// bytes written into [`thinking_input`]'s view, the separate reasoning comes as
/// `TextEncoder`'s UTF-8, and the result goes back as UTF-16 offsets, which the entry turns
/// into slices of the caller's own strings: no text is decoded out of wasm memory. Not
/// part of the typed API.
///
/// The numbers: `[unclosed, reasoning start, reasoning end, content range count, then the
/// content ranges' start and end, then the thinking ranges']`: [`crate::thinking::Spans`],
/// an empty reasoning range for none. Lone surrogates, which `TextEncoder` turns into U+FFFD, keep
/// their one unit.
#[wasm_bindgen(js_name = extractThinkingSpans, skip_typescript)]
pub fn extract_thinking_spans(
    length: usize,
    reasoning: Option<Vec<u8>>,
) -> Result<Vec<u32>, JsValue> {
    THINKING_INPUT.with(|input| {
        let input = input.borrow();
        let text = input.get(..length).ok_or_else(|| {
            js_error(&Error::config(
                "text",
                "is longer than the space written into",
            ))
        })?;
        spans_to_js(text, reasoning.as_deref())
    })
}

fn spans_to_js(text: &[u8], reasoning: Option<&[u8]>) -> Result<Vec<u32>, JsValue> {
    let utf8 = |bytes, name| {
        std::str::from_utf8(bytes)
            .map_err(|e| js_error(&Error::config(name, format!("is not valid UTF-8: {e}"))))
    };
    let content = utf8(text, "text")?;
    let reasoning = reasoning
        .map(|r| utf8(r, "separateReasoning"))
        .transpose()?;
    let spans = ThinkingExtractor::default().spans(content, reasoning);
    let reasoning_range = match (reasoning, &spans.reasoning) {
        (Some(r), Some(range)) => {
            let mut cursor = Utf16Cursor::new(r);
            [
                cursor.units_at(range.start) as u32,
                cursor.units_at(range.end) as u32,
            ]
        }
        _ => [0, 0],
    };
    let mut out = vec![
        u32::from(spans.unclosed),
        reasoning_range[0],
        reasoning_range[1],
        spans.content.len() as u32,
    ];
    let thinking_at = out.len() + 2 * spans.content.len();
    let ranges = spans.content.iter().chain(&spans.thinking);
    out.extend(ranges.flat_map(|r| [r.start as u32, r.end as u32]));
    // The byte offsets become UTF-16 offsets in one pass over the text: the content's and
    // the thinking's each ascend, so taking the lower of the two next ones goes in order.
    let mut cursor = Utf16Cursor::new(content);
    let (mut c, mut t) = (4, thinking_at);
    while c < thinking_at || t < out.len() {
        let i = if t == out.len() || (c < thinking_at && out[c] <= out[t]) {
            c += 1;
            c - 1
        } else {
            t += 1;
            t - 1
        };
        out[i] = cursor.units_at(out[i] as usize) as u32;
    }
    Ok(out)
}

thread_local! {
    /// Property names and the empty string, made once: most pushes of a stream have an
    /// empty content or thinking delta, and each string crossing costs a decode.
    static KEYS: (JsValue, JsValue, JsValue) =
        (JsValue::from_str("content"), JsValue::from_str("thinking"), JsValue::from_str(""));
}

/// `text` as a JavaScript string, the empty one shared.
fn js_text(text: &str, empty: &JsValue) -> JsValue {
    if text.is_empty() {
        empty.clone()
    } else {
        JsValue::from_str(text)
    }
}

/// The streaming thinking extractor: `push(chunk)` and `finish()` give the content and
/// thinking that became certain.
#[wasm_bindgen(js_name = ThinkingStream, skip_typescript)]
pub struct JsThinkingStream {
    inner: ThinkingStream,
    delta: ThinkingDelta,
}

#[wasm_bindgen(js_class = ThinkingStream)]
impl JsThinkingStream {
    /// `options.starts_in_thinking`: the text begins inside a pre-filled `<think>`;
    /// `options.tags`: the tag names (default `thinking`, `reasoning`, `think`).
    #[wasm_bindgen(skip_typescript, constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_param_type = "ThinkingStreamOptions | null")] options: Option<
            Object,
        >,
    ) -> Result<JsThinkingStream, JsValue> {
        let options: JsStreamOptions = from_js_or_default(options, "options")?;
        let extractor = match options.tags {
            Some(tags) => ThinkingExtractor::new(tags).map_err(|e| js_error(&e))?,
            None => ThinkingExtractor::default(),
        };
        Ok(JsThinkingStream {
            inner: extractor.stream(StreamOptions {
                starts_in_thinking: options.starts_in_thinking,
            }),
            delta: ThinkingDelta::default(),
        })
    }

    /// Feeds answer text; returns the new content and thinking.
    #[wasm_bindgen(skip_typescript, unchecked_return_type = "ThinkingDelta")]
    pub fn push(&mut self, chunk: &str) -> JsValue {
        self.delta.content.clear();
        self.delta.thinking.clear();
        self.inner.push_into(chunk, &mut self.delta);
        delta_object(&self.delta)
    }

    /// Feeds a provider's separate reasoning text (`reasoning_content` deltas).
    #[wasm_bindgen(skip_typescript, js_name = pushReasoning, unchecked_return_type = "ThinkingDelta")]
    pub fn push_reasoning(&mut self, chunk: &str) -> JsValue {
        delta_object(&self.inner.push_reasoning(chunk))
    }

    /// Ends the text: returns what was held back.
    #[wasm_bindgen(skip_typescript, unchecked_return_type = "ThinkingDelta")]
    pub fn finish(&mut self) -> JsValue {
        delta_object(&self.inner.finish())
    }

    /// Whether a thinking block is open (after `finish()`: was never closed).
    #[wasm_bindgen(skip_typescript, getter)]
    pub fn unclosed(&self) -> bool {
        self.inner.unclosed()
    }
}

fn delta_object(delta: &ThinkingDelta) -> JsValue {
    let object = Object::new();
    KEYS.with(|(content, thinking, empty)| {
        let _ = Reflect::set(&object, content, &js_text(&delta.content, empty));
        let _ = Reflect::set(&object, thinking, &js_text(&delta.thinking, empty));
    });
    object.into()
}

/// Options of a `ThinkingStream`.
#[derive(serde::Deserialize, Default, tsify::Tsify)]
#[serde(default, deny_unknown_fields)]
#[tsify(rename = "ThinkingStreamOptions")]
struct JsStreamOptions {
    /// The text begins inside a thinking block (a prompt template pre-filled `<think>`).
    starts_in_thinking: bool,
    /// The tag names, matched case-insensitively (default `thinking`, `reasoning`, `think`).
    tags: Option<Vec<String>>,
}

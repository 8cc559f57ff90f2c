//! Names the place in a JSON text where deserialization failed, as a path
//! (`providers.main.rate_limit.requests_per_minute`, `messages[2].role`).
//!
//! serde_json reports a line and a column; this module walks the text up to that point,
//! keeping the stack of object keys and array indexes it is inside. It is what makes a
//! configuration error name its field, at the cost of one small scanner shared by every
//! type (a path-tracking deserializer wrapper would be instantiated once per type and
//! costs tens of kilobytes of WebAssembly). Pure, and it never panics: any offset, any
//! text (valid JSON or not) gives some path.

use std::fmt::Write;

/// One level of nesting.
enum Level {
    /// In an object, with the key last read (None before the first key, or after a comma).
    Object(Option<String>),
    /// In an array, at this index.
    Array(usize),
}

/// The byte offset of serde_json's `line` and `column` (both 1-based; the column counts
/// bytes) in `text`, clamped to the text.
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match text[start..].find('\n') {
            Some(i) => start += i + 1,
            None => return text.len(),
        }
    }
    (start + column).min(text.len())
}

/// The nesting at byte `offset` of `text`.
fn levels_at(text: &str, offset: usize) -> Vec<Level> {
    let bytes = text.as_bytes();
    let end = offset.min(bytes.len());
    let mut stack: Vec<Level> = Vec::new();
    let mut i = 0;
    while i < end {
        match bytes[i] {
            b'"' => {
                let (string, next) = read_string(text, i);
                if let Some(Level::Object(key @ None)) = stack.last_mut() {
                    *key = Some(string);
                }
                i = next;
                continue;
            }
            b'{' => stack.push(Level::Object(None)),
            b'[' => stack.push(Level::Array(0)),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Level::Object(key)) => *key = None,
                Some(Level::Array(index)) => *index += 1,
                None => {}
            },
            _ => {}
        }
        i += 1;
    }
    stack
}

fn render(levels: &[Level]) -> String {
    let mut path = String::new();
    for level in levels {
        match level {
            Level::Object(Some(key)) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Level::Object(None) => {}
            Level::Array(index) => {
                let _ = write!(path, "[{index}]");
            }
        }
    }
    path
}

/// The string starting at the quote at `start` (escapes kept as written, which is enough
/// for a path) and the offset just after its closing quote (or the end of the text).
fn read_string(text: &str, start: usize) -> (String, usize) {
    let bytes = text.as_bytes();
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => {
                let inner = text.get(start + 1..i).unwrap_or_default();
                return (inner.to_string(), i + 1);
            }
            _ => i += 1,
        }
    }
    (
        text.get(start + 1..).unwrap_or_default().to_string(),
        bytes.len(),
    )
}

/// The place and the message of a serde_json error on `text`: `(path, message)`, the
/// message without serde_json's " at line L column C" suffix. For a missing field the
/// path is that of the object lacking it.
pub fn locate(text: &str, error: &serde_json::Error) -> (String, String) {
    let full = error.to_string();
    let message = match full.rfind(" at line ") {
        Some(cut) => full[..cut].to_string(),
        None => full,
    };
    if error.line() == 0 {
        return (String::new(), message);
    }
    let offset = offset_of(text, error.line(), error.column());
    // serde_json reports the position just after the token at fault: step back onto it,
    // so a closing brace (a missing field) counts as inside its object.
    let mut levels = levels_at(text, offset.saturating_sub(1));
    if message.starts_with("missing field") {
        // The position is the object's closing brace, after its last key, which is not
        // the field at fault: the object itself is.
        if let Some(Level::Object(key)) = levels.last_mut() {
            *key = None;
        }
    }
    let path = render(&levels);
    (path, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[allow(dead_code)] // read only through serde, to produce errors
    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        n: u32,
        #[serde(default)]
        s: Option<String>,
    }

    #[allow(dead_code)]
    #[derive(Deserialize, Debug)]
    struct Outer {
        items: Vec<Inner>,
        #[serde(default)]
        map: std::collections::BTreeMap<String, Inner>,
    }

    fn where_fails(json: &str) -> (String, String) {
        let error = serde_json::from_str::<Outer>(json).unwrap_err();
        locate(json, &error)
    }

    #[test]
    fn names_the_field_at_fault() {
        assert_eq!(
            where_fails(r#"{"items":[{"n":1},{"n":"x"}]}"#).0,
            "items[1].n"
        );
        assert_eq!(
            where_fails(r#"{"items":[],"map":{"a":{"n":1},"b":{"n":-1}}}"#).0,
            "map.b.n"
        );
        assert_eq!(
            where_fails("{\n \"items\": [\n  {\"n\": 1, \"t\": 2}\n ]\n}").0,
            "items[0].t"
        );
        let (path, message) = where_fails(r#"{"items":[{"s":"x"}]}"#);
        assert_eq!(path, "items[0]");
        assert!(message.starts_with("missing field `n`"), "{message}");
        assert_eq!(where_fails(r#"{"map":{}}"#).0, "");
        assert_eq!(
            where_fails(r#"{"items":[{"n":1,"s":"a\"b"},{"n":2,"s":5}]}"#).0,
            "items[1].s"
        );
    }

    #[test]
    fn never_panics_on_odd_offsets_or_text() {
        for text in ["", "\"", "{\"a", "[[[", "}}}", "{\"é\":[1,", "\\\""] {
            for offset in 0..text.len() + 3 {
                let _ = render(&levels_at(text, offset));
            }
            for line in 0..4 {
                for column in 0..8 {
                    let _ = offset_of(text, line, column);
                }
            }
        }
    }
}

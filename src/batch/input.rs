//! Reading a batch input file: OpenAI's JSONL of `{custom_id, method, url, body}`, checked
//! whole before anything runs. A file with any fault is refused with every fault it has (up
//! to [`MAX_REPORTED_ERRORS`]), each naming its line: never a partial run of a broken file.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::{BatchError, ENDPOINT, MAX_FILE_BYTES, MAX_REQUESTS};
use crate::manager::Route;
use crate::openai_api::{parse_chat_request, ChatRequest, MAX_REQUEST_BYTES};

/// How many faults of a file are reported at most (the first ones).
pub const MAX_REPORTED_ERRORS: usize = 100;

/// The longest `custom_id` taken, in bytes.
pub const MAX_CUSTOM_ID_BYTES: usize = 512;

/// One line of an input file, read and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct InputLine {
    /// The line's number in the file, from 1.
    pub line: u64,
    /// Its `custom_id`.
    pub custom_id: String,
    /// Its `body`, as JSON text: exactly what `POST /v1/chat/completions` accepts.
    pub body: String,
    /// The body, read.
    pub request: ChatRequest,
}

/// Reads a batch input file. `known` says whether a provider name is configured (a line
/// naming another is refused, as the chat endpoint would refuse it). Every fault is
/// reported with its line (OpenAI's `BatchError`).
pub fn parse_input(
    bytes: &[u8],
    known: &dyn Fn(&str) -> bool,
) -> Result<Vec<InputLine>, Vec<BatchError>> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(vec![BatchError::file(
            "file_too_large",
            format!(
                "the file is {} bytes; the most a batch file may be is {MAX_FILE_BYTES}",
                bytes.len()
            ),
        )]);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        vec![BatchError::file(
            "invalid_encoding",
            format!("the file is not UTF-8 text (at byte {})", e.valid_up_to()),
        )]
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // A last line break ends the last line; it opens no empty one.
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(vec![BatchError::file(
            "empty_file",
            "the file holds no request",
        )]);
    }
    let mut errors = Vec::new();
    let mut lines = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for (index, raw) in text.split('\n').enumerate() {
        let line = index as u64 + 1;
        if line as usize > MAX_REQUESTS {
            errors.push(BatchError::file(
                "too_many_requests",
                format!("a batch holds at most {MAX_REQUESTS} requests"),
            ));
            break;
        }
        match read_line(line, raw.strip_suffix('\r').unwrap_or(raw), known) {
            Ok(read) => {
                if let Some(first) = seen.insert(read.custom_id.clone(), line) {
                    errors.push(BatchError::at(
                        line,
                        "duplicate_custom_id",
                        Some("custom_id"),
                        format!(
                            "custom_id \"{}\" is on line {first} already: each must be unique",
                            quoted(&read.custom_id)
                        ),
                    ));
                } else {
                    lines.push(read);
                }
            }
            Err(error) => errors.push(error),
        }
        if errors.len() >= MAX_REPORTED_ERRORS {
            break;
        }
    }
    if errors.is_empty() {
        Ok(lines)
    } else {
        Err(errors)
    }
}

/// One line, checked.
fn read_line(line: u64, raw: &str, known: &dyn Fn(&str) -> bool) -> Result<InputLine, BatchError> {
    let at = |code: &str, param: Option<&str>, message: String| {
        BatchError::at(line, code, param, message)
    };
    if raw.trim().is_empty() {
        return Err(at(
            "invalid_json_line",
            None,
            "the line is empty: each line must be one request".into(),
        ));
    }
    if raw.len() > MAX_REQUEST_BYTES + 64 * 1024 {
        return Err(at(
            "line_too_large",
            None,
            format!(
                "the line is {} bytes; a request's body may be at most {MAX_REQUEST_BYTES}",
                raw.len()
            ),
        ));
    }
    let mut object: Map<String, Value> = match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(object)) => object,
        Ok(_) => {
            return Err(at(
                "invalid_json_line",
                None,
                "the line is not a JSON object".into(),
            ))
        }
        Err(e) => {
            return Err(at(
                "invalid_json_line",
                None,
                format!("the line is not valid JSON: {e}"),
            ))
        }
    };
    let custom_id = match object.remove("custom_id") {
        Some(Value::String(id)) if !id.trim().is_empty() && id.len() <= MAX_CUSTOM_ID_BYTES => id,
        Some(Value::String(id)) if id.len() > MAX_CUSTOM_ID_BYTES => {
            return Err(at(
                "invalid_custom_id",
                Some("custom_id"),
                format!(
                    "custom_id is {} bytes; at most {MAX_CUSTOM_ID_BYTES}",
                    id.len()
                ),
            ))
        }
        Some(Value::String(_)) => {
            return Err(at(
                "invalid_custom_id",
                Some("custom_id"),
                "custom_id is empty".into(),
            ))
        }
        Some(_) => {
            return Err(at(
                "invalid_custom_id",
                Some("custom_id"),
                "custom_id must be a string".into(),
            ))
        }
        None => {
            return Err(at(
                "missing_custom_id",
                Some("custom_id"),
                "custom_id is required".into(),
            ))
        }
    };
    match object.remove("method") {
        Some(Value::String(method)) if method == "POST" => {}
        Some(other) => {
            return Err(at(
                "invalid_method",
                Some("method"),
                format!("method must be \"POST\", got {}", short(&other)),
            ))
        }
        None => {
            return Err(at(
                "invalid_method",
                Some("method"),
                "method is required (\"POST\")".into(),
            ))
        }
    }
    match object.remove("url") {
        Some(Value::String(url)) if url == ENDPOINT => {}
        Some(other) => {
            return Err(at(
                "invalid_url",
                Some("url"),
                format!(
                    "url must be \"{ENDPOINT}\", the batch's endpoint, got {}",
                    short(&other)
                ),
            ))
        }
        None => {
            return Err(at(
                "invalid_url",
                Some("url"),
                format!("url is required (\"{ENDPOINT}\")"),
            ))
        }
    }
    let body = match object.remove("body") {
        Some(body @ Value::Object(_)) => body,
        Some(_) => {
            return Err(at(
                "invalid_body",
                Some("body"),
                "body must be a JSON object".into(),
            ))
        }
        None => {
            return Err(at(
                "invalid_body",
                Some("body"),
                "body is required: the chat completion request".into(),
            ))
        }
    };
    if let Some(key) = object.keys().next() {
        return Err(at(
            "invalid_request",
            Some(key),
            format!(
                "unknown field \"{}\" (a line has custom_id, method, url and body)",
                quoted(key)
            ),
        ));
    }
    let body = body.to_string();
    let request = parse_chat_request(body.as_bytes(), None).map_err(|e| {
        let param = e.param.as_deref().map(|p| format!("body.{p}"));
        at(
            "invalid_body",
            param.as_deref(),
            format!("body: {}", e.message),
        )
    })?;
    if request.stream {
        return Err(at(
            "invalid_body",
            Some("body.stream"),
            "body: stream is not available in a batch: its answers go to the output file".into(),
        ));
    }
    if let Some(name) = route_names(&request.call.route).find(|n| !known(n)) {
        return Err(at(
            "invalid_body",
            Some("body.provider"),
            format!("body: unknown provider '{}'", quoted(name)),
        ));
    }
    Ok(InputLine {
        line,
        custom_id,
        body,
        request,
    })
}

/// The provider names a route names (the default provider is always known).
fn route_names(route: &Route) -> Box<dyn Iterator<Item = &str> + '_> {
    match route {
        Route::Default | Route::Everyone => Box::new(std::iter::empty()),
        Route::Provider(name) => Box::new(std::iter::once(name.as_str())),
        Route::Failover { first, then } => {
            Box::new(first.iter().chain(then.iter()).map(String::as_str))
        }
    }
}

/// `text` cut for quoting in an error: at most 80 characters, quotes and controls escaped.
fn quoted(text: &str) -> String {
    let mut cut: String = text.chars().take(80).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    cut.escape_debug().to_string()
}

/// A JSON value shown briefly in an error.
fn short(value: &Value) -> String {
    let shown = value.to_string();
    let mut cut: String = shown.chars().take(80).collect();
    if cut.len() < shown.len() {
        cut.push('…');
    }
    cut
}

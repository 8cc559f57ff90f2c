//! HTTP plumbing of the Worker: JSON and error responses in OpenAI's shape, CORS, and
//! reading a request body within the core's limit. No decisions: statuses, bodies and
//! limits come from the core.

use serde_json::Value;
use worker::{ByteStream, Headers, Request, Response};

use crate::openai_api::{too_large, ApiError, Hint, MAX_REQUEST_BYTES};
use crate::runtime::{read_to_end, ReadError, ResponseBody, TransportError};

/// The headers every answer carries: the API is called cross-origin by the demo page when
/// it is served elsewhere, with a bearer token, never cookies.
pub fn with_cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let _ = headers.set("access-control-allow-origin", "*");
    let _ = headers.set(
        "access-control-expose-headers",
        "x-distiller-id, retry-after, retry-after-ms, content-disposition, x-export-rows",
    );
    response
}

/// `body` as JSON with `status`; `id` (a stored row's) in `x-distiller-id`.
pub fn json_response(body: &Value, status: u16, id: Option<&str>) -> Response {
    bytes_response(
        body.to_string().into_bytes(),
        "application/json",
        status,
        id,
    )
}

/// `bytes` of `content_type` with `status`; `id` (a stored row's) in `x-distiller-id`.
pub fn bytes_response(
    bytes: Vec<u8>,
    content_type: &str,
    status: u16,
    id: Option<&str>,
) -> Response {
    let headers = Headers::new();
    let _ = headers.set("content-type", content_type);
    if let Some(id) = id {
        let _ = headers.set("x-distiller-id", id);
    }
    match Response::from_bytes(bytes) {
        Ok(response) => response.with_status(status).with_headers(headers),
        Err(_) => empty(500),
    }
}

/// An answer with no body.
pub fn empty(status: u16) -> Response {
    match Response::empty() {
        Ok(response) => response.with_status(status),
        // Building an empty response does not fail; if it ever did, there is nothing
        // better to send than workers-rs's own error response.
        Err(e) => Response::error(e.to_string(), 500).unwrap_or_else(|_| unreachable_response()),
    }
}

#[cold]
fn unreachable_response() -> Response {
    Response::from_html("").map_or_else(|_| unreachable_response(), |r| r.with_status(500))
}

/// The error in OpenAI's shape, with its status, `retry-after` and `Allow` headers.
pub fn error_response(error: &ApiError, id: Option<&str>) -> Response {
    let mut response = json_response(&error.body(), error.status, id);
    let headers = response.headers_mut();
    match error.hint {
        Some(Hint::RetryAfterMs(ms)) => {
            let _ = headers.set("retry-after-ms", &format!("{}", ms.ceil() as u64));
            let _ = headers.set("retry-after", &format!("{}", (ms / 1000.0).ceil() as u64));
        }
        Some(Hint::Allow(allow)) => {
            let _ = headers.set("allow", allow);
        }
        None => {}
    }
    response
}

/// Answers a CORS preflight, allowing the headers asked for: clients such as the official
/// `openai` SDK send their own (`x-stainless-*`), and a bearer token, not a cookie, is
/// what authenticates.
pub fn preflight(request: &Request) -> Response {
    let mut response = empty(204);
    let headers = response.headers_mut();
    let _ = headers.set("access-control-allow-methods", "GET, POST, DELETE, OPTIONS");
    let asked = request
        .headers()
        .get("access-control-request-headers")
        .ok()
        .flatten();
    let allowed =
        asked.unwrap_or_else(|| "authorization, content-type, x-llm-provider".to_string());
    let _ = headers.set("access-control-allow-headers", &allowed);
    let _ = headers.set("access-control-max-age", "86400");
    response
}

/// A request header's value, when it has one.
pub fn header(request: &Request, name: &str) -> Option<String> {
    request.headers().get(name).ok().flatten()
}

/// The body, refusing more than `limit` bytes (a 413) without reading it all: one of a
/// declared length in one piece, one sent in chunks (no length) chunk by chunk up to the
/// limit.
pub async fn read_body(request: &mut Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let declared = header(request, "content-length").and_then(|l| l.parse::<u64>().ok());
    if declared.is_some_and(|l| l > limit as u64) {
        return Err(too_large(limit));
    }
    if declared.is_some() {
        // Its length known and within the limit (the runtime holds a body to its declared
        // length): read in one piece, not chunk by chunk.
        return request
            .bytes()
            .await
            .map_err(|e| ApiError::invalid(None, format!("the body could not be read: {e}")));
    }
    let Ok(stream) = request.stream() else {
        return Ok(Vec::new());
    };
    read_to_end(&mut Body(stream), limit)
        .await
        .map_err(|e| match e {
            ReadError::TooLarge(limit) => too_large(limit),
            ReadError::Transport(e) => {
                ApiError::invalid(None, format!("the body could not be read: {}", e.0))
            }
        })
}

/// A JSON request body within the chat endpoints' limit.
pub async fn read_json_body(request: &mut Request) -> Result<Vec<u8>, ApiError> {
    read_body(request, MAX_REQUEST_BYTES).await
}

/// A request body as the core's [`ResponseBody`], so the core's reader applies its limit.
struct Body(ByteStream);

impl ResponseBody for Body {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        use futures_util::StreamExt;
        match self.0.next().await {
            Some(Ok(chunk)) => Ok(Some(chunk)),
            Some(Err(e)) => Err(TransportError(e.to_string())),
            None => Ok(None),
        }
    }
}

/// The query string's pairs, decoded.
pub fn query_pairs(request: &Request) -> Result<Vec<(String, String)>, ApiError> {
    let url = request
        .url()
        .map_err(|_| ApiError::invalid(None, "the URL cannot be read"))?;
    Ok(url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect())
}

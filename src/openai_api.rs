//! The server side of the OpenAI chat-completions API, as the Worker offers it: reading a
//! client's request, and writing answers, stream chunks and errors in OpenAI's shapes.
//!
//! Pure mapping, tested natively; the Worker only moves bytes. Requests follow
//! `CreateChatCompletionRequest` (unknown parameters pass through to the provider), with
//! two extensions: `provider` (a configured name) and `fallback` (names to fail over to).
//! Thinking leaves `message.content` and travels as `message.reasoning_content`, as
//! DeepSeek and vLLM do, so existing clients keep working.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::chat::{validate_messages, LlmResponse, Message, Prompt, Usage};
use crate::config::{from_json_text, GenerationConfig};
use crate::error::Error;
use crate::manager::Route;

/// The most a request body may hold, in bytes.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, with its
/// HTTP status.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, for a person.
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, …
    pub kind: &'static str,
    /// The request field at fault.
    pub param: Option<String>,
    /// A machine-readable code.
    pub code: Option<String>,
    /// What the answer's headers add, if anything.
    pub hint: Option<Hint>,
}

/// What an error answer says in its headers.
#[derive(Clone, Debug, PartialEq)]
pub enum Hint {
    /// How long the client should wait before trying again (the upstream's wait, for a
    /// 429): `retry-after-ms` and `retry-after`.
    RetryAfterMs(f64),
    /// The methods the path allows, for a 405: `Allow`.
    Allow(&'static str),
}

impl ApiError {
    /// A 400 about `param`.
    pub fn invalid(param: Option<&str>, message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: param.map(str::to_string),
            code: None,
            hint: None,
        }
    }

    /// An error of any status.
    pub fn new(status: u16, kind: &'static str, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: Some(code.to_string()),
            hint: None,
        }
    }

    /// A 404 for what `what` names.
    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(404, "invalid_request_error", "not_found", what)
    }

    /// A 405: the path allows only `allow`.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut error = ApiError::new(
            405,
            "invalid_request_error",
            "method_not_allowed",
            format!("use {allow} here"),
        );
        error.hint = Some(Hint::Allow(allow));
        error
    }

    /// The same error, saying that the call was stored as row `id`.
    pub fn stored_as(mut self, id: &str) -> Self {
        self.message = format!("{} (stored as {id})", self.message);
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({ "error": { "message": self.message, "type": self.kind, "param": self.param, "code": self.code } })
    }

    /// What a client gets for a call that failed: a configuration error of the call is
    /// its own mistake (400), a provider that could not be set up is unavailable (503),
    /// and an upstream failure after retries and failover keeps the upstream's meaning:
    /// 429 when rate limited, 504 on a timeout, 502 for everything the client cannot fix,
    /// the upstream's own 4xx (a bad parameter, an unknown model) otherwise. The provider
    /// is named in the message.
    pub fn from_error(error: &Error) -> Self {
        let mut api = Self::status_of(error);
        if api.status == 429 {
            api.hint = error.retry_after_ms().map(Hint::RetryAfterMs);
        }
        api
    }

    fn status_of(error: &Error) -> Self {
        match error {
            Error::Config { field, message } if field.starts_with("providers.") => ApiError::new(
                503,
                "server_error",
                "provider_unavailable",
                format!("{field}: {message}"),
            ),
            Error::Config { .. } => config_error(error),
            Error::RateLimited { .. } => ApiError::new(
                429,
                "rate_limit_error",
                "rate_limit_exceeded",
                error.to_string(),
            ),
            Error::Timeout { .. } => {
                ApiError::new(504, "server_error", "upstream_timeout", error.to_string())
            }
            Error::Connection { .. } | Error::InvalidResponse { .. } => {
                ApiError::new(502, "server_error", "upstream_error", error.to_string())
            }
            Error::Http {
                status,
                param,
                code,
                ..
            } => {
                let passes_through = (400..500).contains(status) && !matches!(status, 401 | 403);
                let mut api = if passes_through {
                    ApiError::new(
                        *status,
                        "invalid_request_error",
                        code.as_deref().unwrap_or("upstream_error"),
                        error.to_string(),
                    )
                } else {
                    ApiError::new(502, "server_error", "upstream_error", error.to_string())
                };
                api.param = param.as_deref().map(str::to_string);
                api
            }
            Error::AllProvidersFailed { errors } => {
                let mut api = errors
                    .last()
                    .map(|(_, last)| ApiError::from_error(last))
                    .unwrap_or_else(|| ApiError::new(502, "server_error", "upstream_error", ""));
                api.message = error.to_string();
                api
            }
            Error::Aborted => ApiError::new(499, "server_error", "aborted", error.to_string()),
            // `Error` is non-exhaustive; anything new is the server's own failure.
            #[allow(unreachable_patterns)]
            _ => ApiError::new(500, "server_error", "internal_error", error.to_string()),
        }
    }
}

/// One call as the Worker receives it, from either endpoint (or a batch's line): what to
/// ask, with which parameters, of which providers, and the request as its row stores it.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// The prompt: a text, or the conversation.
    pub prompt: Prompt,
    /// The parameters.
    pub config: GenerationConfig,
    /// Which providers answer it.
    pub route: Route,
    /// The request as its row stores it (JSON: messages or prompt, config, provider,
    /// fallback).
    pub stored: String,
}

/// A chat-completion request, read.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    /// The call.
    pub call: Call,
    /// `stream: true`.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Extensions {
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    fallback: Option<Fallback>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    stop: Option<Stop>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Fallback {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// Keys read here rather than by [`GenerationConfig`].
const EXTENSION_KEYS: [&str; 6] = [
    "provider",
    "fallback",
    "stream",
    "stream_options",
    "n",
    "stop",
];

/// A request body as text: within [`MAX_REQUEST_BYTES`], and UTF-8.
fn body_text(body: &[u8]) -> Result<&str, ApiError> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(too_large(MAX_REQUEST_BYTES));
    }
    std::str::from_utf8(body).map_err(|_| ApiError::invalid(None, "the body is not UTF-8 text"))
}

/// A `POST /v1/generate` request: the design's own shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateRequest {
    prompt: Prompt,
    /// The library's defaults for what is left out.
    #[serde(default)]
    config: GenerationConfig,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default)]
    fallback: Vec<String>,
}

/// Reads a `/v1/generate` body (`{ prompt, config, provider?, fallback? }`); every mistake
/// is a 400 naming the field.
pub fn parse_generate_request(body: &[u8]) -> Result<Call, ApiError> {
    let request: GenerateRequest =
        from_json_text(body_text(body)?, "body").map_err(|e| ApiError::from_error(&e))?;
    request
        .config
        .validate()
        .map_err(|e| ApiError::from_error(&e))?;
    let fallback = named_fallback(request.fallback)?;
    let stored = json!({ "prompt": request.prompt, "config": request.config, "provider": request.provider, "fallback": fallback }).to_string();
    Ok(Call {
        prompt: request.prompt,
        config: request.config,
        route: Route::with_fallback(non_empty(request.provider), fallback),
        stored,
    })
}

/// A provider name as asked for: an empty one means none.
fn non_empty(name: Option<String>) -> Option<String> {
    name.filter(|p| !p.trim().is_empty())
}

/// The fallback names, none of them empty.
fn named_fallback(fallback: Vec<String>) -> Result<Vec<String>, ApiError> {
    if let Some(name) = fallback.iter().find(|n| n.trim().is_empty()) {
        return Err(ApiError::invalid(
            Some("fallback"),
            format!("fallback: names an empty provider (\"{name}\")"),
        ));
    }
    Ok(fallback)
}

/// Reads a chat-completion request body. `header_provider` is the `x-llm-provider` header.
/// Every mistake is a 400 naming the parameter.
pub fn parse_chat_request(
    body: &[u8],
    header_provider: Option<&str>,
) -> Result<ChatRequest, ApiError> {
    let text = body_text(body)?;
    let mut object: Map<String, Value> = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => object,
        Ok(_) => return Err(ApiError::invalid(None, "the body must be a JSON object")),
        Err(e) => {
            return Err(ApiError::invalid(
                None,
                format!("the body is not valid JSON: {e}"),
            ))
        }
    };
    // OpenAI marks most parameters nullable: null means "not set", so the default applies.
    object.retain(|key, value| key == "messages" || !value.is_null());
    let messages_value = object
        .remove("messages")
        .ok_or_else(|| ApiError::invalid(Some("messages"), "messages is required"))?;
    let messages: Vec<Message> =
        from_json_text(&messages_value.to_string(), "messages").map_err(|e| config_error(&e))?;
    validate_messages(&messages).map_err(|e| config_error(&e))?;
    let mut extensions = Map::new();
    for key in EXTENSION_KEYS {
        if let Some(value) = object.remove(key) {
            extensions.insert(key.to_string(), value);
        }
    }
    let extensions: Extensions =
        from_json_text(&Value::Object(extensions).to_string(), "").map_err(|e| config_error(&e))?;
    // What the client did not set stays unset: the provider's defaults apply, as they
    // would calling OpenAI directly, not the library's.
    let mut config = GenerationConfig::unset()
        .read_over(&Value::Object(object).to_string(), "")
        .map_err(|e| config_error(&e))?;
    if let Some(n) = extensions.n.filter(|n| *n != 1) {
        return Err(ApiError::invalid(
            Some("n"),
            format!("only n = 1 is supported, got {n}"),
        ));
    }
    let sent_stop = extensions.stop.is_some();
    config.stop_sequences = match extensions.stop {
        Some(Stop::One(s)) => Some(vec![s]),
        Some(Stop::Many(list)) => Some(list),
        None => config.stop_sequences,
    };
    config.validate().map_err(|e| {
        // Name the parameter as the client sent it.
        let mut api = config_error(&e);
        let renamed = match api.param.as_deref() {
            Some("stop_sequences") if sent_stop => Some("stop"),
            _ => None,
        };
        if let Some(name) = renamed {
            let old = api.param.replace(name.to_string()).unwrap_or_default();
            api.message = api.message.replacen(&old, name, 1);
        }
        api
    })?;
    // The request names its messages itself; a system prompt would be the config's.
    config.system_prompt = None;
    let provider =
        non_empty(extensions.provider).or_else(|| non_empty(header_provider.map(str::to_string)));
    let fallback = named_fallback(match extensions.fallback {
        Some(Fallback::One(name)) => vec![name],
        Some(Fallback::Many(names)) => names,
        None => Vec::new(),
    })?;
    let stored = json!({ "messages": messages, "config": config, "provider": provider, "fallback": fallback }).to_string();
    Ok(ChatRequest {
        call: Call {
            prompt: Prompt::Messages(messages),
            config,
            route: Route::with_fallback(provider, fallback),
            stored,
        },
        stream: extensions.stream.unwrap_or(false),
        include_usage: extensions.stream_options.is_some_and(|o| o.include_usage),
    })
}

/// The 413 for a body over `limit` bytes.
pub fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        413,
        "invalid_request_error",
        "request_too_large",
        format!("the request body exceeds {limit} bytes"),
    )
}

fn config_error(error: &Error) -> ApiError {
    match error {
        Error::Config { field, message } => {
            let param = field.strip_prefix("config.").unwrap_or(field);
            let param = if param.is_empty() || param == "config" {
                None
            } else {
                Some(param)
            };
            let shown = param.map_or_else(|| message.clone(), |p| format!("{p}: {message}"));
            ApiError::invalid(param, shown)
        }
        other => ApiError::invalid(None, other.to_string()),
    }
}

/// A complete answer as OpenAI's `chat.completion`, thinking in `reasoning_content`.
pub fn completion_body(id: &str, created_s: u64, response: &LlmResponse) -> Value {
    let mut body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created_s,
        "model": response.model,
        "choices": [{
            "index": 0,
            "message": {
                "role": "assistant",
                "content": response.content,
                "reasoning_content": response.thinking,
                "refusal": null,
            },
            "logprobs": null,
            "finish_reason": response.finish_reason,
        }],
        "provider": response.provider,
    });
    if let Some(usage) = &response.usage {
        body["usage"] = json!(usage);
    }
    // Tool calls the model made travel as the provider sent them.
    let tool_calls = response
        .raw_response
        .as_ref()
        .and_then(|raw| raw.pointer("/choices/0/message/tool_calls"))
        .filter(|calls| !calls.is_null());
    if let Some(calls) = tool_calls {
        body["choices"][0]["message"]["tool_calls"] = calls.clone();
    }
    body
}

/// One `chat.completion.chunk` as an SSE event (`data: …\n\n`). `delta` is the delta
/// object; `finish_reason` and `usage` go on the last chunks.
pub fn chunk_event(
    id: &str,
    created_s: u64,
    model: &str,
    delta: Option<Value>,
    finish_reason: Option<&str>,
    usage: Option<&Usage>,
) -> String {
    let choices = match delta {
        Some(delta) => {
            json!([{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason }])
        }
        None => json!([]),
    };
    let mut chunk = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created_s,
        "model": model,
        "choices": choices,
    });
    if let Some(usage) = usage {
        chunk["usage"] = json!(usage);
    }
    format!("data: {chunk}\n\n")
}

/// The delta object of new content and thinking (`reasoning_content`).
pub fn delta_object(content: &str, thinking: &str) -> Value {
    let mut delta = Map::new();
    if !thinking.is_empty() {
        delta.insert("reasoning_content".into(), thinking.into());
    }
    if !content.is_empty() {
        delta.insert("content".into(), content.into());
    }
    Value::Object(delta)
}

/// An error event inside a stream that has begun (the status line is gone already).
pub fn error_event(error: &ApiError) -> String {
    format!("data: {}\n\n", error.body())
}

/// The stream's end.
pub const DONE_EVENT: &str = "data: [DONE]\n\n";

/// The token in `Authorization: Bearer <token>`, if the header has that form.
pub fn bearer_token(header: Option<&str>) -> Option<&str> {
    let header = header?.trim();
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares a presented token with the expected one in time that depends only on their
/// lengths, never on where they differ.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    let mut difference = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        difference |= usize::from(x ^ y);
    }
    // An empty expected token never matches: a Worker without one refuses to serve.
    difference == 0 && !expected.is_empty()
}

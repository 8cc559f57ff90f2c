//! Providers as data: how a chat completion maps to HTTP and back, for each kind of upstream.
//!
//! A [`Provider`] is set up once from a [`ProviderConfig`]; its kind decides only an
//! `Endpoint` (the URL and the credential header; see `openai.rs` and `azure.rs`). Everything
//! after that is shared and pure: [`Provider::build_request`] turns messages and a
//! [`GenerationConfig`] into an [`HttpRequest`], [`Provider::parse_response`] turns status,
//! headers and body into a [`Completion`] or a typed [`Error`], and
//! [`Provider::parse_stream_chunk`] reads one streamed chunk. Nothing here sends anything.
//!
//! Every message quoted from an upstream passes through [`Provider::redact`], so the key
//! never reaches an error, even when a server echoes it back.

mod azure;
mod openai;
mod redact;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::chat::{Message, Usage};
use crate::config::{GenerationConfig, ProviderConfig, ProviderKind, Secret};
use crate::error::{Error, Result};
use crate::http::{Headers, HttpRequest};
use crate::retry::{retry_after_ms, should_retry_header};

/// Where and how to send: the only thing that differs between kinds of provider.
#[derive(Clone, Debug)]
struct Endpoint {
    /// The chat-completions URL, query included.
    url: String,
    /// The credential header, if the provider has a key.
    credential: Option<(&'static str, Secret)>,
    /// The model (Azure: the deployment), reported when the response names none.
    model: String,
    /// Whether the body carries `model` (Azure's deployment path decides it instead).
    model_in_body: bool,
}

/// One configured upstream, ready to build requests and read responses.
#[derive(Clone, Debug)]
pub struct Provider {
    name: String,
    config: ProviderConfig,
    endpoint: Endpoint,
    key: Secret,
}

/// The most of an upstream's error text quoted in an [`Error`].
const MAX_QUOTED_CHARS: usize = 500;

impl Provider {
    /// Sets up provider `name`. An empty `api_key` is looked up with `env`: first the
    /// provider's own variable ([`provider_key_var`]), then the kind's (`OPENAI_API_KEY`,
    /// `AZURE_OPENAI_API_KEY`, `CUSTOM_API_KEY`).
    /// OpenAI and Azure need a key; a `custom` server may do without.
    pub fn from_config(
        name: &str,
        config: &ProviderConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Provider> {
        let path = format!("providers.{name}");
        config.validate(&path)?;
        let own_var = provider_key_var(name);
        let var = config.kind.api_key_env_var();
        let key = if config.api_key.is_empty() {
            let found = env(&own_var)
                .filter(|k| !k.trim().is_empty())
                .or_else(|| env(var));
            Secret::new(found.unwrap_or_default())
        } else {
            config.api_key.clone()
        };
        if key.is_empty() && config.kind != ProviderKind::Custom {
            return Err(Error::config(
                format!("{path}.api_key"),
                format!("no API key: set api_key, or the {own_var} or {var} environment variable (a secret)"),
            ));
        }
        if key.expose().chars().any(|c| c.is_control()) {
            return Err(Error::config(
                format!("{path}.api_key"),
                "contains control characters",
            ));
        }
        let endpoint = match config.kind {
            ProviderKind::Openai | ProviderKind::Custom => openai::endpoint(config, key.clone()),
            ProviderKind::AzureOpenai => azure::endpoint(config, key.clone()),
        };
        Ok(Provider {
            name: name.to_string(),
            config: config.clone(),
            endpoint,
            key,
        })
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration it was set up from (the key inside is redacted in `Debug`).
    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// The model requests go to when the call names none (Azure: the deployment).
    pub fn model(&self) -> &str {
        &self.endpoint.model
    }

    /// The model a call with `config` asks for: its own, else [`Self::model`].
    pub fn model_for<'a>(&'a self, config: &'a GenerationConfig) -> &'a str {
        config.model.as_deref().unwrap_or(&self.endpoint.model)
    }

    /// Builds the HTTP request for `messages` under `config`; `stream` asks for
    /// server-sent events (with a final usage chunk).
    pub fn build_request(
        &self,
        messages: &[Message],
        config: &GenerationConfig,
        stream: bool,
    ) -> Result<HttpRequest> {
        config.validate()?;
        let mut body = Map::new();
        if self.endpoint.model_in_body {
            body.insert("model".into(), self.model_for(config).into());
        }
        body.insert(
            "messages".into(),
            serde_json::to_value(messages)
                .map_err(|e| Error::config("messages", format!("cannot be serialized: {e}")))?,
        );
        // Unset parameters are not sent: the provider's defaults apply. max_tokens gives
        // way to max_completion_tokens, which reasoning models require instead.
        let max_tokens = config
            .max_tokens
            .filter(|_| !config.extra.contains_key("max_completion_tokens"));
        if let Some(max_tokens) = max_tokens {
            body.insert("max_tokens".into(), max_tokens.into());
        }
        let numbers = [
            ("temperature", config.temperature),
            ("top_p", config.top_p),
            ("frequency_penalty", config.frequency_penalty),
            ("presence_penalty", config.presence_penalty),
        ];
        for (key, value) in numbers {
            if let Some(value) = value {
                body.insert(key.into(), value.into());
            }
        }
        if let Some(stop) = config.stop_sequences.as_ref().filter(|s| !s.is_empty()) {
            body.insert("stop".into(), stop.clone().into());
        }
        if let Some(format) = &config.response_format {
            body.insert("response_format".into(), format.clone());
        }
        for (key, value) in &config.extra {
            body.insert(key.clone(), value.clone());
        }
        if stream {
            body.insert("stream".into(), true.into());
            body.insert(
                "stream_options".into(),
                serde_json::json!({ "include_usage": true }),
            );
        }
        let mut headers = Headers::new();
        headers.append("content-type", "application/json");
        headers.append(
            "accept",
            if stream {
                "text/event-stream"
            } else {
                "application/json"
            },
        );
        if let Some((name, value)) = &self.endpoint.credential {
            headers.append(*name, value.expose());
        }
        Ok(HttpRequest {
            url: self.endpoint.url.clone(),
            headers,
            body: Value::Object(body).to_string(),
        })
    }

    /// Reads a complete (non-streamed) answer. A non-2xx status or an `{"error": …}` body
    /// becomes a typed error; a body that is not a chat completion becomes
    /// [`Error::InvalidResponse`]. Any response valid under OpenAI's schema parses, unknown
    /// fields included.
    pub fn parse_response(
        &self,
        status: u16,
        headers: &Headers,
        body: &[u8],
        now_ms: f64,
    ) -> Result<Completion> {
        if !(200..300).contains(&status) {
            return Err(self.error_from_response(status, headers, body, now_ms));
        }
        let raw: Value = serde_json::from_slice(body)
            .map_err(|e| self.invalid(describe_json_error(&e, body)))?;
        if let Some(error) = raw.get("error").filter(|e| !e.is_null()) {
            if raw.get("choices").is_none() {
                return Err(self.error_from_body(
                    error,
                    status_of_error_body(error),
                    headers,
                    now_ms,
                ));
            }
        }
        let wire: Wire = serde_json::from_slice(body).map_err(|e| self.wire_error("", body, &e))?;
        let choice = wire
            .choices
            .unwrap_or_default()
            .into_iter()
            .next()
            .ok_or_else(|| self.invalid("it has no choices".to_string()))?;
        let message = choice.message.unwrap_or_default();
        Ok(Completion {
            id: wire.id,
            model: wire
                .model
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| self.endpoint.model.clone()),
            content: message.content.unwrap_or_default(),
            reasoning: reasoning_of(&message.reasoning_content, &message.reasoning),
            finish_reason: choice.finish_reason,
            usage: wire.usage,
            raw,
        })
    }

    /// Reads one streamed chunk (the JSON text of one `data:` line). Azure's first chunk
    /// with empty `choices` and the final usage chunk give a [`ChunkDelta`] with no text;
    /// an `{"error": …}` chunk gives the typed error.
    pub fn parse_stream_chunk(&self, data: &str, now_ms: f64) -> Result<ChunkDelta> {
        let wire: Wire = serde_json::from_slice(data.as_bytes())
            .map_err(|e| self.wire_error("a stream chunk ", data.as_bytes(), &e))?;
        if let Some(error) = wire.error.as_ref().filter(|e| !e.is_null()) {
            return Err(self.error_from_body(
                error,
                status_of_error_body(error),
                &Headers::new(),
                now_ms,
            ));
        }
        let choice = wire
            .choices
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.index.unwrap_or(0) == 0);
        let (delta, finish_reason) = match choice {
            Some(c) => (c.delta.unwrap_or_default(), c.finish_reason),
            None => (WireMessage::default(), None),
        };
        Ok(ChunkDelta {
            id: wire.id,
            model: wire.model.filter(|m| !m.is_empty()),
            content: delta.content,
            reasoning: reasoning_of(&delta.reasoning_content, &delta.reasoning),
            finish_reason,
            usage: wire.usage,
        })
    }

    /// An invalid-response error for JSON that does not have the chat-completion shape,
    /// naming where (`choices[0].message.content: invalid type: integer…`).
    fn wire_error(&self, what: &str, body: &[u8], error: &serde_json::Error) -> Error {
        if error.is_syntax() || error.is_eof() {
            return self.invalid(format!("{what}{}", describe_json_error(error, body)));
        }
        let text = String::from_utf8_lossy(body);
        let (path, message) = crate::json_path::locate(&text, error);
        let place = if path.is_empty() {
            "the top level".to_string()
        } else {
            path
        };
        self.invalid(format!("{what}at {place}: {message}"))
    }

    /// The typed error for a non-2xx answer: 429 is [`Error::RateLimited`], anything else
    /// [`Error::Http`] with the provider's error fields; both carry the server's
    /// `retry-after` and `x-should-retry` hints.
    pub fn error_from_response(
        &self,
        status: u16,
        headers: &Headers,
        body: &[u8],
        now_ms: f64,
    ) -> Error {
        match serde_json::from_slice::<Value>(body) {
            Ok(json) => {
                let error = json.get("error").filter(|e| e.is_object()).unwrap_or(&json);
                self.error_from_body(error, status, headers, now_ms)
            }
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let message = if text.is_empty() {
                    "(empty body)".to_string()
                } else {
                    text.to_string()
                };
                self.error_with(status, headers, now_ms, message, None, None, None)
            }
        }
    }

    fn error_from_body(&self, error: &Value, status: u16, headers: &Headers, now_ms: f64) -> Error {
        let field = |name: &str| -> Option<String> {
            match error.get(name)? {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let message = field("message").unwrap_or_else(|| match error {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        self.error_with(
            status,
            headers,
            now_ms,
            message,
            field("type"),
            field("code"),
            field("param"),
        )
    }

    #[allow(clippy::too_many_arguments)] // one constructor for the two error variants
    fn error_with(
        &self,
        status: u16,
        headers: &Headers,
        now_ms: f64,
        message: String,
        error_type: Option<String>,
        code: Option<String>,
        param: Option<String>,
    ) -> Error {
        let provider = self.name.clone();
        let message = self.redact(&message);
        let retry_after_ms = retry_after_ms(headers, now_ms);
        let should_retry = should_retry_header(headers);
        if status == 429 {
            return Error::RateLimited {
                provider,
                retry_after_ms,
                should_retry,
                message,
            };
        }
        Error::Http {
            provider,
            status,
            message,
            error_type: error_type.map(|t| self.redact(&t).into()),
            code: code.map(|c| self.redact(&c).into()),
            param: param.map(|p| self.redact(&p).into()),
            retry_after_ms,
            should_retry,
        }
    }

    fn invalid(&self, message: String) -> Error {
        Error::InvalidResponse {
            provider: self.name.clone(),
            message: self.redact(&message),
        }
    }

    /// `text` cut to a quotable length, with this provider's key replaced by `[redacted]`:
    /// the key as it is, JSON-escaped, or its start where a cut left one (see `redact.rs`).
    pub fn redact(&self, text: &str) -> String {
        let text = match text.char_indices().nth(MAX_QUOTED_CHARS) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text.to_string(),
        };
        redact::redact_key(&text, self.key.expose())
    }
}

/// The environment variable holding the key of provider `name` alone:
/// `LLM_<NAME>_API_KEY`, the name upper-cased with anything but letters and digits as `_`.
/// It wins over the kind's variable, so two providers of one kind can have two keys.
pub fn provider_key_var(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("LLM_{name}_API_KEY")
}

fn describe_json_error(error: &serde_json::Error, body: &[u8]) -> String {
    if body.iter().all(u8::is_ascii_whitespace) {
        "the body is empty".to_string()
    } else if error.is_eof() {
        format!(
            "the body ends early (truncated after {} bytes): {error}",
            body.len()
        )
    } else {
        format!("the body is not JSON: {error}")
    }
}

/// An `{"error": …}` body inside a 2xx answer: its `code` or `status` when it looks like an
/// HTTP status (Azure sends `"429"`), else 502, since the upstream failed.
fn status_of_error_body(error: &Value) -> u16 {
    ["status", "code"]
        .iter()
        .filter_map(|k| match error.get(*k)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        })
        .filter_map(|n| u16::try_from(n).ok())
        .find(|n| (400..600).contains(n))
        .unwrap_or(502)
}

/// The separate reasoning field: `reasoning_content` (DeepSeek, vLLM), else `reasoning`
/// (OpenRouter, Ollama); only strings count.
fn reasoning_of(reasoning_content: &Option<Value>, reasoning: &Option<Value>) -> Option<String> {
    [reasoning_content, reasoning]
        .into_iter()
        .find_map(|v| v.as_ref()?.as_str().map(str::to_string))
}

/// A complete answer as the provider sent it, before thinking extraction.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// The upstream's id.
    pub id: Option<String>,
    /// The model that answered.
    pub model: String,
    /// `choices[0].message.content` (empty when null).
    pub content: String,
    /// `reasoning_content` or `reasoning`.
    pub reasoning: Option<String>,
    /// `choices[0].finish_reason`.
    pub finish_reason: Option<String>,
    /// Token counts.
    pub usage: Option<Usage>,
    /// The body.
    pub raw: Value,
}

/// What one streamed chunk adds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChunkDelta {
    /// The upstream's id.
    pub id: Option<String>,
    /// The model, when the chunk names one.
    pub model: Option<String>,
    /// New answer text.
    pub content: Option<String>,
    /// New separate reasoning text.
    pub reasoning: Option<String>,
    /// Set on the last content chunk.
    pub finish_reason: Option<String>,
    /// Set on the final usage chunk.
    pub usage: Option<Usage>,
}

/// The chat-completion shape of complete answers (`choices[].message`) and of stream
/// chunks (`choices[].delta`) alike: one type, so the wasm carries one deserializer.
#[derive(Deserialize)]
struct Wire {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<WireChoice>>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    message: Option<WireMessage>,
    #[serde(default)]
    delta: Option<WireMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<Value>,
    #[serde(default)]
    reasoning: Option<Value>,
}

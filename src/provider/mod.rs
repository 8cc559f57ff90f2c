//! Providers as data: how a chat completion maps to HTTP and back, for each kind of upstream.
//!
//! What sets a kind of upstream apart is all in its own file, behind one trait, `Kind`:
//! [`ProviderKind::Openai`] in `openai.rs`, [`ProviderKind::AzureOpenai`] in `azure.rs`,
//! [`ProviderKind::Custom`] in `custom.rs`: its name, the environment variable its key is
//! read from, whether it needs one, the fields it requires, the model it reports, and where
//! and how requests go (an `Endpoint`: URL and credential header). Everything after that is
//! shared and pure: [`Provider::build_request`] turns messages and a [`GenerationConfig`]
//! into an [`HttpRequest`], [`Provider::parse_response`] turns status, headers and body
//! into a [`Completion`] or a typed [`Error`], and [`Provider::parse_stream_chunk`] reads one
//! streamed chunk. Nothing here sends anything.
//!
//! Every message quoted from an upstream passes through [`Provider::redact`], so the key
//! never reaches an error, even when a server echoes it back.

mod azure;
mod custom;
mod openai;
mod redact;

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::chat::{Message, Usage};
use crate::config::{GenerationConfig, ProviderConfig, Secret};
use crate::error::{Error, Result};
use crate::http::{Headers, HttpRequest};
use crate::retry::{retry_after_ms, should_retry_header};

/// The kind of upstream. Each kind's rules live in its own file (see the module docs).
// The TypeScript declaration: serde's names are `as_str()`'s (the serde impls below are
// written out), which the bindings' tests check against the declaration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "js", derive(tsify::Tsify), serde(rename_all = "snake_case"))]
pub enum ProviderKind {
    /// api.openai.com, or an OpenAI-compatible `base_url` that needs a key.
    Openai,
    /// Azure OpenAI: deployment path, `api-key` header, `api-version` query.
    AzureOpenai,
    /// An OpenAI-compatible server at `base_url` (Ollama, vLLM, a proxy); a key is optional.
    Custom,
}

impl ProviderKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [ProviderKind; 3] = [
        ProviderKind::Openai,
        ProviderKind::AzureOpenai,
        ProviderKind::Custom,
    ];

    /// The rules of this kind: the one `match` on the kind in the crate.
    fn rules(self) -> &'static dyn Kind {
        match self {
            ProviderKind::Openai => &openai::OpenAi,
            ProviderKind::AzureOpenai => &azure::AzureOpenAi,
            ProviderKind::Custom => &custom::Custom,
        }
    }

    /// The name used in configuration (`openai`, `azure_openai`, `custom`).
    pub fn as_str(self) -> &'static str {
        self.rules().name()
    }

    /// The environment variable (in the Worker: the secret) an empty `api_key` is read from
    /// when the provider's own ([`provider_key_var`]) is not set.
    pub fn api_key_env_var(self) -> &'static str {
        self.rules().key_var()
    }

    /// Whether a call needs a key (a `custom` server may do without).
    pub fn key_required(self) -> bool {
        self.rules().key_required()
    }

    /// Checks the fields this kind requires; `path` names the provider (`providers.main`).
    pub fn validate(self, config: &ProviderConfig, path: &str) -> Result<()> {
        self.rules().validate(config, path)
    }

    /// The model a provider of this kind reports and calls when a call names none (Azure:
    /// the deployment).
    pub fn model(self, config: &ProviderConfig) -> &str {
        self.rules().model(config)
    }

    /// The model a call with `call` gets from a provider configured as `provider`: the
    /// call's own, else the provider's; for a kind whose URL names the model (Azure's
    /// deployment), always the provider's.
    pub fn model_for<'a>(
        self,
        provider: &'a ProviderConfig,
        call: &'a GenerationConfig,
    ) -> &'a str {
        let own = self.model(provider);
        if !self.rules().model_in_body() {
            return own;
        }
        call.model.as_deref().unwrap_or(own)
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ProviderKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ProviderKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(deserializer)?;
        ProviderKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.as_str()).collect();
                serde::de::Error::custom(format!(
                    "unknown provider type `{name}`, expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

/// What sets one kind of upstream apart; each kind's file implements it.
trait Kind: Sync {
    /// The name in configuration.
    fn name(&self) -> &'static str;
    /// The environment variable an empty `api_key` is read from.
    fn key_var(&self) -> &'static str;
    /// Whether a call needs a key.
    fn key_required(&self) -> bool;
    /// Checks the fields this kind needs, beyond the rules every provider shares.
    fn validate(&self, config: &ProviderConfig, path: &str) -> Result<()>;
    /// The model reported, and called when a call names none.
    fn model<'a>(&self, config: &'a ProviderConfig) -> &'a str;
    /// Whether the body names the model (else the URL decides it).
    fn model_in_body(&self) -> bool {
        true
    }
    /// Where and how to send, once the key is known.
    fn endpoint(&self, config: &ProviderConfig, key: &Secret) -> Endpoint;
}

/// Where and how to send.
#[derive(Clone, Debug)]
struct Endpoint {
    /// The chat-completions URL, query included.
    url: String,
    /// The credential header, if the provider has a key.
    credential: Option<(&'static str, Secret)>,
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
    /// Sets up provider `name` from a configuration that passed
    /// [`ProviderConfig::validate`] (checked again here). An empty `api_key` is looked up
    /// with `env`: first the provider's own variable ([`provider_key_var`]), then the
    /// kind's ([`ProviderKind::api_key_env_var`]). Fails when the kind needs a key and
    /// none is found, or the key holds control characters.
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
        if key.is_empty() && config.kind.key_required() {
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
        let endpoint = config.kind.rules().endpoint(config, &key);
        Ok(Provider {
            name: name.to_string(),
            config: config.clone(),
            endpoint,
            key,
        })
    }

    /// What identifies the upstream this provider calls, whatever its name or key: its kind
    /// and URL without the query (for Azure, the endpoint and the deployment). Two
    /// providers with the same identity share the server's budget.
    pub fn identity(&self) -> String {
        let url = &self.endpoint.url;
        let url = url.split_once('?').map_or(url.as_str(), |(path, _)| path);
        format!("{}:{url}", self.config.kind)
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
        self.config.kind.model(&self.config)
    }

    /// The model a call with `config` gets (see [`ProviderKind::model_for`]).
    pub fn model_for<'a>(&'a self, config: &'a GenerationConfig) -> &'a str {
        self.config.kind.model_for(&self.config, config)
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
        if self.config.kind.rules().model_in_body() {
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
        for (key, value) in config.sampling() {
            body.insert(key.into(), value.into());
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
                .unwrap_or_else(|| self.model().to_string()),
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

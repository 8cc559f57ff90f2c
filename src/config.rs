//! Configuration: what a user writes, in JavaScript or in `wrangler.toml`, as JSON.
//!
//! [`GenerationConfig`] shapes one request; [`ProviderConfig`] describes one upstream;
//! [`RateLimitConfig`] its budget; [`LlmConfig`] the whole set. Every type deserializes
//! with serde from the same JSON in every host, and [`LlmConfig::from_json`] names the
//! field at fault when it does not. Pure data: nothing here touches the network or the
//! environment (API keys from the environment come through an injected lookup, see
//! [`crate::provider::Provider::from_config`]).

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{Error, Number, Result};
use crate::retry::RetryPolicy;
use crate::shared_limit::SharedLimit;

pub use crate::provider::ProviderKind;

/// The model the design defaults to when neither the call nor the provider names one.
pub const DEFAULT_MODEL: &str = "gpt-3.5-turbo";
/// OpenAI's API root.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// The Azure OpenAI data-plane API version this crate follows.
pub const AZURE_API_VERSION: &str = "2024-10-21";
/// The per-request timeout when a provider sets none.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;

/// Parameters of one chat completion (the design's `GenerationConfig`).
///
/// Defaults are the design's: temperature 0.7, 1000 max tokens, top_p 0.9, no penalties.
/// A sampling parameter set to `null` (`None`) is not sent at all, so the provider's own
/// default applies (reasoning models accept no temperature, for one). `model` defaults to
/// the provider's model (itself `gpt-3.5-turbo` by default). Any other OpenAI
/// chat-completion parameter (`seed`, `user`, `reasoning_effort`,
/// `max_completion_tokens`, …) may be given too and is passed through unchanged.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GenerationConfig {
    /// The model; `None` uses the provider's. Ignored by Azure, where the deployment decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Sampling temperature, 0 to 2.
    pub temperature: Option<f64>,
    /// The most tokens to generate, at least 1.
    pub max_tokens: Option<u32>,
    /// Nucleus sampling, 0 to 1.
    pub top_p: Option<f64>,
    /// -2 to 2.
    pub frequency_penalty: Option<f64>,
    /// -2 to 2.
    pub presence_penalty: Option<f64>,
    /// A system message put before a text prompt (and before a `messages` array that has
    /// no system or developer message of its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// Up to 4 sequences where the model stops (OpenAI's `stop`).
    #[serde(alias = "stop", skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    /// OpenAI's `response_format`, e.g. `{"type":"json_object"}`; a JSON answer that does
    /// not parse then counts as invalid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    /// Other chat-completion parameters, sent as they are.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            model: None,
            temperature: Some(0.7),
            max_tokens: Some(1000),
            top_p: Some(0.9),
            frequency_penalty: Some(0.0),
            presence_penalty: Some(0.0),
            system_prompt: None,
            stop_sequences: None,
            response_format: None,
            extra: Map::new(),
        }
    }
}

/// A sampling parameter: its name, its range, and where it lives in a [`GenerationConfig`].
/// [`SAMPLING`] lists them all, so each is named once: in the struct, and there.
pub struct Sampling {
    /// The OpenAI parameter's name.
    pub name: &'static str,
    /// The lowest value allowed.
    pub min: f64,
    /// The highest value allowed.
    pub max: f64,
    slot: fn(&mut GenerationConfig) -> &mut Option<f64>,
    value: fn(&GenerationConfig) -> Option<f64>,
}

/// The sampling parameters, with their ranges.
pub const SAMPLING: [Sampling; 4] = [
    Sampling {
        name: "temperature",
        min: 0.0,
        max: 2.0,
        slot: |c| &mut c.temperature,
        value: |c| c.temperature,
    },
    Sampling {
        name: "top_p",
        min: 0.0,
        max: 1.0,
        slot: |c| &mut c.top_p,
        value: |c| c.top_p,
    },
    Sampling {
        name: "frequency_penalty",
        min: -2.0,
        max: 2.0,
        slot: |c| &mut c.frequency_penalty,
        value: |c| c.frequency_penalty,
    },
    Sampling {
        name: "presence_penalty",
        min: -2.0,
        max: 2.0,
        slot: |c| &mut c.presence_penalty,
        value: |c| c.presence_penalty,
    },
];

// Written out rather than derived with `#[serde(flatten)]` (for `extra`), which buffers
// the whole object through serde's generic `Content` machinery: slower, and kilobytes of
// WebAssembly. Missing fields keep the starting config's values (the design's defaults,
// or none at all for [`GenerationConfig::unset`]); `null` unsets a parameter.
impl<'de> Deserialize<'de> for GenerationConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Over(GenerationConfig::default()).deserialize(deserializer)
    }
}

/// Reads a [`GenerationConfig`] over a starting one: what the JSON names replaces it.
struct Over(GenerationConfig);

impl<'de> DeserializeSeed<'de> for Over {
    type Value = GenerationConfig;

    fn deserialize<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Over {
    type Value = GenerationConfig;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of generation parameters")
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<GenerationConfig, A::Error> {
        let mut config = self.0;
        while let Some(key) = map.next_key::<String>()? {
            if let Some(sampling) = SAMPLING.iter().find(|s| s.name == key) {
                *(sampling.slot)(&mut config) = map.next_value()?;
                continue;
            }
            match key.as_str() {
                "model" => config.model = map.next_value()?,
                "max_tokens" => config.max_tokens = map.next_value()?,
                "system_prompt" => config.system_prompt = map.next_value()?,
                "stop_sequences" | "stop" => config.stop_sequences = map.next_value()?,
                "response_format" => config.response_format = map.next_value()?,
                _ => {
                    let value = map.next_value()?;
                    config.extra.insert(key, value);
                }
            }
        }
        Ok(config)
    }
}

/// The completion tokens a request is assumed to use, for the rate limiter, when it sets
/// no limit (reconciled with the real usage afterwards).
pub const UNSET_COMPLETION_ESTIMATE: u32 = 1000;

/// Body keys the client sets itself; passing them as extra parameters is a mistake.
const RESERVED_BODY_KEYS: [&str; 3] = ["messages", "stream", "stream_options"];

impl GenerationConfig {
    /// Parses a generation config from JSON text, naming the field at fault. What the
    /// text leaves out keeps the design's defaults.
    pub fn from_json(json: &str) -> Result<Self> {
        from_json_text(json, "config")
    }

    /// No parameter set at all: the provider's own defaults apply to everything. What an
    /// OpenAI-compatible request leaves out means this, not the design's defaults.
    pub fn unset() -> Self {
        let mut config = GenerationConfig {
            max_tokens: None,
            ..GenerationConfig::default()
        };
        for sampling in &SAMPLING {
            *(sampling.slot)(&mut config) = None;
        }
        config
    }

    /// Parses JSON text over `self`: the parameters the text names replace those of `self`;
    /// errors name the field under `root`, as [`from_json_text`] does.
    pub fn read_over(self, json: &str, root: &str) -> Result<Self> {
        let mut deserializer = serde_json::Deserializer::from_slice(json.as_bytes());
        Over(self)
            .deserialize(&mut deserializer)
            .and_then(|config| deserializer.end().map(|()| config))
            .map_err(|e| json_error(json, root, &e))
    }

    /// The sampling parameters that are set, by name, in [`SAMPLING`]'s order.
    pub fn sampling(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        SAMPLING
            .iter()
            .filter_map(move |s| (s.value)(self).map(|v| (s.name, v)))
    }

    /// Checks every range; the error names the field.
    pub fn validate(&self) -> Result<()> {
        for sampling in &SAMPLING {
            check_range(
                sampling.name,
                (sampling.value)(self),
                sampling.min,
                sampling.max,
            )?;
        }
        if self.max_tokens == Some(0) {
            return Err(Error::config("max_tokens", "must be at least 1"));
        }
        if let Some(value) = self.extra.get("max_completion_tokens") {
            if !value
                .as_u64()
                .is_some_and(|v| (1..=u64::from(u32::MAX)).contains(&v))
            {
                return Err(Error::config(
                    "max_completion_tokens",
                    "must be a whole number of at least 1",
                ));
            }
        }
        if let Some(model) = &self.model {
            if model.trim().is_empty() {
                return Err(Error::config("model", "must not be empty"));
            }
        }
        if let Some(stop) = &self.stop_sequences {
            if stop.len() > 4 {
                return Err(Error::config(
                    "stop_sequences",
                    format!("at most 4 sequences are allowed, got {}", stop.len()),
                ));
            }
        }
        if let Some(format) = &self.response_format {
            if !format.is_object() {
                return Err(Error::config(
                    "response_format",
                    "must be an object such as {\"type\": \"json_object\"}",
                ));
            }
        }
        if let Some(key) = RESERVED_BODY_KEYS
            .iter()
            .find(|k| self.extra.contains_key(**k))
        {
            return Err(Error::config(
                *key,
                "is set by the client itself; pass the prompt (or messages) as the prompt argument",
            ));
        }
        Ok(())
    }

    /// The most completion tokens the request may use, as the rate limiter reserves them:
    /// `max_completion_tokens` when given, else `max_tokens`, else
    /// [`UNSET_COMPLETION_ESTIMATE`].
    pub fn completion_budget(&self) -> u32 {
        self.extra
            .get("max_completion_tokens")
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .or(self.max_tokens)
            .unwrap_or(UNSET_COMPLETION_ESTIMATE)
    }

    /// Whether the request asks for a JSON answer (`response_format` of type
    /// `json_object` or `json_schema`).
    pub fn wants_json(&self) -> bool {
        let kind = self
            .response_format
            .as_ref()
            .and_then(|f| f.get("type"))
            .and_then(Value::as_str);
        matches!(kind, Some("json_object" | "json_schema"))
    }
}

fn check_range(field: &str, value: Option<f64>, min: f64, max: f64) -> Result<()> {
    let Some(value) = value else { return Ok(()) };
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(Error::config(
            field,
            format!(
                "must be between {} and {}, got {}",
                Number(min),
                Number(max),
                Number(value)
            ),
        ))
    }
}

/// A secret string (an API key): shown as `[redacted]` by `Debug` and never serialized.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether it is empty (or only whitespace).
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "[redacted]"
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.0.is_empty() { "" } else { "[redacted]" })
    }
}

/// A provider's request budget (the design's `RateLimitConfig`): the limiter's own
/// [`RateLimits`](crate::rate_limit::RateLimits), read from the configuration as it is.
pub type RateLimitConfig = crate::rate_limit::RateLimits;

impl RateLimitConfig {
    /// Both limits must be at least 1.
    pub fn validate(&self, path: &str) -> Result<()> {
        if self.requests_per_minute == 0 {
            return Err(Error::config(
                format!("{path}.requests_per_minute"),
                "must be at least 1",
            ));
        }
        if self.tokens_per_minute == 0 {
            return Err(Error::config(
                format!("{path}.tokens_per_minute"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// One upstream (the design's `ProviderConfig`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct ProviderConfig {
    /// `openai`, `azure_openai` or `custom`.
    #[serde(rename = "type")]
    pub kind: ProviderKind,
    /// The key. Empty: read from the environment (Node's `process.env`, the Worker's
    /// secrets), first `LLM_<NAME>_API_KEY` (the provider's name upper-cased, anything but
    /// letters and digits as `_`, so two providers of one type can have two keys), then the
    /// type's `OPENAI_API_KEY`, `AZURE_OPENAI_API_KEY` or `CUSTOM_API_KEY`.
    #[serde(default)]
    pub api_key: Secret,
    /// The API root for `openai` (default OpenAI's) and `custom` (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The model (default `gpt-3.5-turbo`); for Azure, the deployment when
    /// `deployment_name` is absent.
    #[serde(default = "default_model")]
    pub model: String,
    /// Azure: the deployment to call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_name: Option<String>,
    /// Azure: the resource endpoint, `https://NAME.openai.azure.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Azure: the data-plane API version (default `2024-10-21`).
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// The provider's budget.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// Use as the default provider.
    #[serde(default)]
    pub default: bool,
    /// How long one attempt may take, in milliseconds (default 60,000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries and backoff (default: 3 retries, 1 s × 2^attempt up to 60 s).
    #[serde(default)]
    pub retry: RetryPolicy,
    /// How an isolate uses the limiter shared across the Worker's isolates (the Worker
    /// only; see [`SharedLimit`]).
    #[serde(default)]
    pub shared_limit: SharedLimit,
}

fn default_model() -> String {
    DEFAULT_MODEL.to_string()
}

fn default_api_version() -> String {
    AZURE_API_VERSION.to_string()
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

impl ProviderConfig {
    /// A provider of `kind` with every other field at its default.
    pub fn new(kind: ProviderKind) -> Self {
        ProviderConfig {
            kind,
            api_key: Secret::default(),
            base_url: None,
            model: default_model(),
            deployment_name: None,
            endpoint: None,
            api_version: default_api_version(),
            rate_limit: RateLimitConfig::default(),
            default: false,
            timeout_ms: DEFAULT_TIMEOUT_MS,
            retry: RetryPolicy::default(),
            shared_limit: SharedLimit::default(),
        }
    }

    /// Checks the fields that do not depend on the environment; `path` prefixes the
    /// field names in errors (`providers.main`).
    pub fn validate(&self, path: &str) -> Result<()> {
        self.rate_limit.validate(&format!("{path}.rate_limit"))?;
        self.shared_limit
            .validate(&format!("{path}.shared_limit"))?;
        if self.timeout_ms == 0 {
            return Err(Error::config(
                format!("{path}.timeout_ms"),
                "must be at least 1",
            ));
        }
        if self.model.trim().is_empty() {
            return Err(Error::config(format!("{path}.model"), "must not be empty"));
        }
        for (field, url) in [("base_url", &self.base_url), ("endpoint", &self.endpoint)] {
            if let Some(url) = url {
                check_http_url(&format!("{path}.{field}"), url)?;
            }
        }
        let retry = &self.retry;
        let finite = [retry.base_delay_ms, retry.max_backoff_ms, retry.max_wait_ms]
            .iter()
            .all(|v| v.is_finite() && *v >= 0.0);
        if !finite {
            return Err(Error::config(
                format!("{path}.retry"),
                "delays must be finite and not negative",
            ));
        }
        self.kind.validate(self, path)
    }
}

fn check_http_url(field: &str, url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(rest)
            if !rest.is_empty() && !rest.starts_with('/') && !url.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err(Error::config(
            field,
            format!("must be an http:// or https:// URL, got \"{url}\""),
        )),
    }
}

/// The whole client configuration (the design's `LLMConfig`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct LlmConfig {
    /// Providers by name, in the order they were written.
    #[cfg_attr(feature = "js", tsify(type = "Record<string, ProviderConfig>"))]
    #[serde(
        deserialize_with = "deserialize_ordered",
        serialize_with = "serialize_ordered"
    )]
    pub providers: Vec<(String, ProviderConfig)>,
    /// The default provider's name; else the one marked `default`, else the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_provider: Option<String>,
    /// Free-form processing settings, kept as given.
    #[serde(default)]
    #[cfg_attr(feature = "js", tsify(type = "Record<string, unknown>"))]
    pub processing: Map<String, Value>,
}

/// Where API keys may come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The configuration's `api_key`, or the environment when it is empty (the npm package).
    ConfigOrEnvironment,
    /// Secrets only (the Worker): a configuration is readable by whoever can deploy or
    /// inspect it, so a key written there is refused.
    SecretsOnly,
}

impl LlmConfig {
    /// Parses and validates a configuration from JSON text; errors name the field.
    pub fn from_json(json: &str) -> Result<Self> {
        Self::from_json_with(json, KeySource::ConfigOrEnvironment)
    }

    /// [`Self::from_json`] with keys allowed only from `keys`; errors name the field.
    pub fn from_json_with(json: &str, keys: KeySource) -> Result<Self> {
        let config: LlmConfig = from_json_text(json, "config")?;
        config.validate_with(keys)?;
        Ok(config)
    }

    /// Checks every provider and the default's name: every rule of a configuration that
    /// does not depend on the environment.
    pub fn validate(&self) -> Result<()> {
        self.validate_with(KeySource::ConfigOrEnvironment)
    }

    /// [`Self::validate`], with keys allowed only from `keys`.
    pub fn validate_with(&self, keys: KeySource) -> Result<()> {
        if self.providers.is_empty() {
            return Err(Error::config(
                "providers",
                "at least one provider is needed",
            ));
        }
        for (name, provider) in &self.providers {
            if name.trim().is_empty() {
                return Err(Error::config("providers", "a provider name is empty"));
            }
            let path = format!("providers.{name}");
            provider.validate(&path)?;
            if keys == KeySource::SecretsOnly && !provider.api_key.is_empty() {
                return Err(Error::config(
                    format!("{path}.api_key"),
                    format!("keys must not be in the configuration, where anyone who can read it sees them: remove it and set the secret {} or {} instead", crate::provider::provider_key_var(name), provider.kind.api_key_env_var()),
                ));
            }
        }
        if let Some(name) = &self.default_provider {
            if self.provider(name).is_none() {
                return Err(Error::config(
                    "default_provider",
                    format!(
                        "names '{name}', which is not among the providers ({})",
                        self.names().join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The provider called `name`.
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
    }

    /// The provider names in order.
    pub fn names(&self) -> Vec<&str> {
        self.providers.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The default provider: the named one, else the one marked default, else the first.
    pub fn default_provider_name(&self) -> Option<&str> {
        self.default_provider
            .as_deref()
            .or_else(|| {
                self.providers
                    .iter()
                    .find(|(_, p)| p.default)
                    .map(|(n, _)| n.as_str())
            })
            .or_else(|| self.providers.first().map(|(n, _)| n.as_str()))
    }
}

/// Deserializes `T` from JSON text; a failure names the path of the field at fault
/// (`config.providers.main.rate_limit.requests_per_minute`), `root` first.
///
/// Every host's input (JSON text, a JavaScript object, `wrangler.toml` vars) comes here
/// as text, so each type's deserializer exists once in the wasm binary.
pub fn from_json_text<T: de::DeserializeOwned>(json: &str, root: &str) -> Result<T> {
    serde_json::from_slice(json.as_bytes()).map_err(|e| json_error(json, root, &e))
}

/// The config error for JSON that failed to parse as `root`; not generic, so the wasm
/// has it once rather than once per type.
fn json_error(json: &str, root: &str, e: &serde_json::Error) -> Error {
    let (path, message) = crate::json_path::locate(json, e);
    // The path names the field; `root` is the name of the whole value, said when
    // the whole value is at fault and put before a path when it is a field itself.
    let field = match (root, path.as_str()) {
        (root, "") => root.to_string(),
        ("" | "config", path) => path.to_string(),
        (root, path) if path.starts_with('[') => format!("{root}{path}"),
        (root, path) => format!("{root}.{path}"),
    };
    let message = if e.is_syntax() || e.is_eof() {
        format!("is not valid JSON: {message}")
    } else {
        message
    };
    Error::config(field, message)
}

fn deserialize_ordered<'de, D>(
    deserializer: D,
) -> std::result::Result<Vec<(String, ProviderConfig)>, D::Error>
where
    D: Deserializer<'de>,
{
    struct Ordered;
    impl<'de> Visitor<'de> for Ordered {
        type Value = Vec<(String, ProviderConfig)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object of providers by name")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut out: Vec<(String, ProviderConfig)> = Vec::new();
            // The names so far, to refuse a second definition without rescanning `out` for
            // each provider (quadratic: 40,000 providers took seconds). In a serde_json
            // `Map` (a B-tree) with null values: the wasm has its code already, where a set
            // of its own would add kilobytes.
            let mut names = Map::new();
            while let Some((name, provider)) = map.next_entry::<String, ProviderConfig>()? {
                if names.insert(name.clone(), Value::Null).is_some() {
                    return Err(de::Error::custom(format!(
                        "provider '{name}' is defined twice"
                    )));
                }
                out.push((name, provider));
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(Ordered)
}

fn serialize_ordered<S: Serializer>(
    providers: &[(String, ProviderConfig)],
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.collect_map(providers.iter().map(|(n, p)| (n, p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(check_http_url("f", "https://api.openai.com/v1").is_ok());
        assert!(check_http_url("f", "http://127.0.0.1:8080").is_ok());
        assert!(check_http_url("f", "ftp://x").is_err());
        assert!(check_http_url("f", "https://").is_err());
        assert!(check_http_url("f", "https://a b").is_err());
    }
}

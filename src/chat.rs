//! The conversation and the answer: [`Prompt`], [`Message`], [`LlmResponse`], [`Usage`].
//!
//! A prompt is either plain text (with the config's optional system prompt before it) or
//! a full OpenAI `messages` array, kept as JSON so every message shape the API accepts
//! (content parts, tool calls, names) passes through untouched. Pure data.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::GenerationConfig;
use crate::error::{Error, Result};

/// One chat message, as the OpenAI API defines it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Message {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// A string, an array of content parts, or null (an assistant message with tool calls).
    pub content: Value,
    /// Every other field (`name`, `tool_calls`, `tool_call_id`, …), kept as given.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

// Written out rather than derived with `#[serde(flatten)]`, which buffers every message
// through serde's generic `Content` machinery: slower, and kilobytes of WebAssembly.
impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MessageVisitor;
        impl<'de> Visitor<'de> for MessageVisitor {
            type Value = Message;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a message object with a role")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message, A::Error> {
                let mut role = None;
                let mut content = Value::Null;
                let mut extra = Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "role" => role = Some(map.next_value::<String>()?),
                        "content" => content = map.next_value()?,
                        _ => {
                            let value = map.next_value()?;
                            extra.insert(key, value);
                        }
                    }
                }
                let role = role.ok_or_else(|| de::Error::missing_field("role"))?;
                Ok(Message {
                    role,
                    content,
                    extra,
                })
            }
        }
        deserializer.deserialize_map(MessageVisitor)
    }
}

impl Message {
    /// A message of `role` with text `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: Value::String(content.into()),
            extra: Map::new(),
        }
    }

    /// The number of characters of text in the message (string content and text parts),
    /// for estimating its tokens.
    pub fn text_len(&self) -> usize {
        match &self.content {
            Value::String(s) => s.chars().count(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .map(|t| t.chars().count())
                .sum(),
            _ => 0,
        }
    }
}

/// What to ask: text, or a whole conversation.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub enum Prompt {
    /// A user message; the config's `system_prompt` goes before it.
    Text(String),
    /// An OpenAI `messages` array.
    Messages(Vec<Message>),
}

// A string or an array, told apart by the JSON type itself: no buffering (as
// `#[serde(untagged)]` would do), and an error that says what a prompt may be.
impl<'de> Deserialize<'de> for Prompt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PromptVisitor;
        impl<'de> Visitor<'de> for PromptVisitor {
            type Value = Prompt;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a prompt: a string, or an array of messages")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Prompt, E> {
                Ok(Prompt::Text(text.to_string()))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Prompt, E> {
                Ok(Prompt::Text(text))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Prompt, A::Error> {
                let mut messages = Vec::new();
                while let Some(message) = seq.next_element::<Message>()? {
                    messages.push(message);
                }
                Ok(Prompt::Messages(messages))
            }
        }
        deserializer.deserialize_any(PromptVisitor)
    }
}

impl From<&str> for Prompt {
    fn from(text: &str) -> Self {
        Prompt::Text(text.to_string())
    }
}

impl From<String> for Prompt {
    fn from(text: String) -> Self {
        Prompt::Text(text)
    }
}

impl From<Vec<Message>> for Prompt {
    fn from(messages: Vec<Message>) -> Self {
        Prompt::Messages(messages)
    }
}

const ROLES: [&str; 6] = [
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

impl Prompt {
    /// The messages to send: the system prompt (if any, and if a `messages` array does
    /// not start with its own system or developer message), then the prompt.
    pub fn to_messages(&self, config: &GenerationConfig) -> Result<Vec<Message>> {
        let system = config
            .system_prompt
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(|s| Message::new("system", s));
        match self {
            Prompt::Text(text) => Ok(system
                .into_iter()
                .chain(std::iter::once(Message::new("user", text.as_str())))
                .collect()),
            Prompt::Messages(messages) => {
                validate_messages(messages)?;
                let has_own = matches!(messages[0].role.as_str(), "system" | "developer");
                let system = system.filter(|_| !has_own);
                Ok(system.into_iter().chain(messages.iter().cloned()).collect())
            }
        }
    }
}

/// Checks a `messages` array the way a provider would take it: not empty, each role one
/// the API knows, each content a string, an array of parts or null.
pub fn validate_messages(messages: &[Message]) -> Result<()> {
    if messages.is_empty() {
        return Err(Error::config("messages", "must hold at least one message"));
    }
    for (i, m) in messages.iter().enumerate() {
        if !ROLES.contains(&m.role.as_str()) {
            return Err(Error::config(
                format!("messages[{i}].role"),
                format!("must be one of {}, got \"{}\"", ROLES.join(", "), m.role),
            ));
        }
        if !matches!(m.content, Value::String(_) | Value::Array(_) | Value::Null) {
            return Err(Error::config(
                format!("messages[{i}].content"),
                "must be a string, an array of content parts, or null",
            ));
        }
    }
    Ok(())
}

/// Token counts as the provider reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ReportedUsage")]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Their sum.
    pub total_tokens: u64,
}

/// [`Usage`] as a provider sends it: a count left out reads as 0. A twin rather than
/// `#[serde(default)]` on `Usage`'s own fields, which would make them optional in the
/// TypeScript declarations derived from it, where an answer always carries all three.
#[derive(Deserialize)]
struct ReportedUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
}

impl From<ReportedUsage> for Usage {
    fn from(reported: ReportedUsage) -> Self {
        Usage {
            prompt_tokens: reported.prompt_tokens,
            completion_tokens: reported.completion_tokens,
            total_tokens: reported.total_tokens,
        }
    }
}

/// A finished answer, with its thinking separated (the design's `LLMResponse`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct LlmResponse {
    /// The answer, thinking blocks removed, trimmed.
    pub content: String,
    /// The provider's separate reasoning field (`reasoning_content` or `reasoning`), as sent.
    pub reasoning: Option<String>,
    /// All thinking: the separate reasoning first, then every `<think>`-style block.
    pub thinking: Option<String>,
    /// A thinking block was opened and never closed (a truncated answer).
    pub thinking_unclosed: bool,
    /// The model that answered (for Azure without a `model` field: the deployment).
    pub model: String,
    /// Token counts, when the provider reported them.
    pub usage: Option<Usage>,
    /// Why the model stopped: `stop`, `length`, `content_filter`, `tool_calls`, …
    pub finish_reason: Option<String>,
    /// How long the successful attempt took, in seconds (the design's `response_time`).
    pub response_time: f64,
    /// The same in milliseconds.
    pub response_time_ms: f64,
    /// The configured name of the provider that answered.
    pub provider: String,
    /// The upstream's response id (`chatcmpl-…`).
    pub id: Option<String>,
    /// Attempts made, 1 when the first succeeded.
    pub attempts: u32,
    /// Time spent waiting for the rate limiter and between retries, in milliseconds.
    pub waited_ms: f64,
    /// The provider's response body as JSON (for a streamed answer: the assembled one).
    #[cfg_attr(feature = "js", tsify(type = "Record<string, unknown> | null"))]
    pub raw_response: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_the_provider_left_out_reads_as_zero_and_every_count_is_written() {
        let usage: Usage =
            serde_json::from_str(r#"{"prompt_tokens": 3, "total_tokens": 3}"#).unwrap();
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 3,
                completion_tokens: 0,
                total_tokens: 3
            }
        );
        assert_eq!(
            serde_json::to_value(usage).unwrap(),
            serde_json::json!({ "prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3 })
        );
        assert!(serde_json::from_str::<Usage>(r#"{"prompt_tokens": "3"}"#).is_err());
    }
}

//! The stored answers as a training dataset: each stored row as one JSON line, in the
//! OpenAI fine-tuning chat format, ShareGPT or a flat dump, with the thinking as a field,
//! inline `<think>` text or left out; and the query of `GET /v1/export` (which rows, in
//! which format), with the arithmetic of reading them from D1 page by page and its
//! statements ([`sql`]).
//!
//! Pure, and the one place records are shaped: the Worker writes [`write_line`] for every
//! row it reads (`worker/export.rs`), and the npm package's `exportRecord` calls
//! [`export_record`] for a row a user kept, so both give the same record. The conversation
//! the model saw is rebuilt from the stored request as the call built it
//! ([`Prompt::to_messages`]: a text prompt after the config's system prompt). Nothing here
//! panics: a row whose request cannot be read is a [`Skip`], and so is a row the export's
//! rules leave out.
//!
//! ```
//! use llm_distiller::export::{export_record, ExportOptions, ExportRow, Reasoning};
//!
//! let row = ExportRow {
//!     request: serde_json::json!({ "prompt": "What is 2+2?", "config": { "system_prompt": "Be brief." } }),
//!     content: "4".into(),
//!     thinking: Some("2 and 2 make 4.".into()),
//!     ..ExportRow::default()
//! };
//! let inline = ExportOptions { reasoning: Reasoning::Inline, ..ExportOptions::default() };
//! let record = serde_json::to_value(export_record(&row, &inline).unwrap()).unwrap();
//! assert_eq!(record, serde_json::json!({ "messages": [
//!     { "role": "system", "content": "Be brief." },
//!     { "role": "user", "content": "What is 2+2?" },
//!     { "role": "assistant", "content": "<think>\n2 and 2 make 4.\n</think>\n\n4" },
//! ] }));
//! ```

pub mod sql;

use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, IntoDeserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::chat::{Message, Prompt, Usage};
use crate::config::{from_json_text, GenerationConfig};
use crate::openai_api::ApiError;
use crate::record::id_floor;
use crate::retry::{days_from_civil, days_in_month};
use crate::thinking::extract_thinking;
use crate::validate::InvalidReason;

// ---------------------------------------------------------------------------------------
// What an export writes

/// The shape of each line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub enum Format {
    /// `{"messages": [...the request's messages..., {"role": "assistant", ...}]}`: OpenAI's
    /// fine-tuning chat format.
    #[default]
    #[serde(rename = "openai_chat")]
    OpenaiChat,
    /// `{"conversations": [{"from": "system" | "human" | "gpt", "value": ...}]}`.
    #[serde(rename = "sharegpt")]
    ShareGpt,
    /// One object per row: its id, time, provider, model, messages, thinking, answer,
    /// finish reason, usage, batch and (for an invalid row) why it is invalid.
    #[serde(rename = "flat")]
    Flat,
}

/// Where the thinking goes in the training formats (the flat one always has a `thinking`
/// field of its own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub enum Reasoning {
    /// Beside the answer: `reasoning_content` on the assistant message (as Qwen-style chat
    /// templates read it), `reasoning` on ShareGPT's `gpt` turn.
    #[default]
    #[serde(rename = "field")]
    Field,
    /// Before the answer, as R1-style datasets have it: `<think>\nTHINKING\n</think>\n\nANSWER`.
    #[serde(rename = "inline")]
    Inline,
    /// Left out.
    #[serde(rename = "none")]
    Omit,
}

impl Format {
    /// The name in URLs, options and file names.
    pub fn name(self) -> &'static str {
        match self {
            Format::OpenaiChat => "openai_chat",
            Format::ShareGpt => "sharegpt",
            Format::Flat => "flat",
        }
    }

    /// Whether lines are training examples (the flat dump is not: it keeps every row).
    pub fn is_training(self) -> bool {
        self != Format::Flat
    }
}

impl Reasoning {
    /// The name in URLs, options and file names.
    pub fn name(self) -> &'static str {
        match self {
            Reasoning::Field => "field",
            Reasoning::Inline => "inline",
            Reasoning::Omit => "none",
        }
    }
}

/// How rows become lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct ExportOptions {
    /// `openai_chat` (the default), `sharegpt` or `flat`.
    pub format: Format,
    /// `field` (the default), `inline` or `none`. No effect on `flat`.
    pub reasoning: Reasoning,
    /// Keep, in the training formats, incomplete rows: an unclosed thinking block, an answer
    /// stopped before its end (the token limit, a broken stream), a row cut to fit D1's row
    /// limit (left out by default; `flat` always keeps them).
    pub include_incomplete: bool,
}

impl ExportOptions {
    /// Whether incomplete rows (see [`Incomplete`]) are left out.
    pub fn leaves_out_incomplete(&self) -> bool {
        self.format.is_training() && !self.include_incomplete
    }
}

// ---------------------------------------------------------------------------------------
// What an export reads

/// A stored answer as the export reads it: a row of `responses` or `invalid_responses`
/// (the Worker), an item of `GET /v1/responses` with its request, or an answer a user kept
/// (an `LlmResponse` with the request beside it). Unknown fields are ignored.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct ExportRow {
    /// The stored row's id.
    #[serde(default)]
    pub id: Option<String>,
    /// When the request arrived, in milliseconds since the epoch.
    #[serde(default)]
    pub created_at: Option<f64>,
    /// The provider that answered.
    #[serde(default)]
    pub provider: Option<String>,
    /// The model that answered.
    #[serde(default)]
    pub model: Option<String>,
    /// The request as stored (JSON text or its value): a chat completion's `messages`, or
    /// `/v1/generate`'s `prompt` with the `config` whose `system_prompt` went before it.
    #[cfg_attr(feature = "js", tsify(type = "string | StoredRequest"))]
    pub request: Value,
    /// The answer without its thinking.
    #[serde(default)]
    pub content: String,
    /// The thinking.
    #[serde(default)]
    pub thinking: Option<String>,
    /// Why the model stopped.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Tokens in the prompt (or give `usage`).
    #[serde(default, deserialize_with = "count")]
    pub prompt_tokens: Option<u64>,
    /// Tokens generated.
    #[serde(default, deserialize_with = "count")]
    pub completion_tokens: Option<u64>,
    /// Their sum.
    #[serde(default, deserialize_with = "count")]
    pub total_tokens: Option<u64>,
    /// The token counts as an `LlmResponse` has them, read when the three above are absent.
    #[serde(default)]
    pub usage: Option<Usage>,
    /// A field was cut to fit D1's row limit (D1's 0 or 1 reads too).
    #[serde(default, deserialize_with = "flag")]
    pub truncated: bool,
    /// A thinking block was never closed (as an `LlmResponse` says it).
    #[serde(default)]
    pub thinking_unclosed: bool,
    /// Why the answer is invalid, `code: message` (`reason` in the Worker's listings).
    #[serde(default, alias = "reason")]
    pub invalid_reason: Option<String>,
    /// The batch it answers a line of.
    #[serde(default)]
    pub batch_id: Option<String>,
    /// That line's `custom_id`.
    #[serde(default)]
    pub custom_id: Option<String>,
}

/// The request a row stores, as far as the export reads it: `{"messages": [...]}` from a
/// chat completion (or a batch's line), `{"prompt": ..., "config": {...}}` from
/// `/v1/generate`. Other fields (the provider, the fallback, every other parameter) are
/// ignored.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct StoredRequest {
    /// A chat completion's messages, system messages included.
    #[serde(default)]
    #[cfg_attr(feature = "js", tsify(optional, type = "Message[] | null"))]
    pub messages: Option<Vec<Message>>,
    /// `/v1/generate`'s prompt: a text (a user message) or messages.
    #[serde(default)]
    pub prompt: Option<Prompt>,
    /// `/v1/generate`'s config: only its `system_prompt` matters here.
    #[serde(default)]
    pub config: Option<StoredConfig>,
}

/// The part of a stored config the conversation depends on.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct StoredConfig {
    /// The system message that went before a text prompt (or before messages without one
    /// of their own).
    #[serde(default)]
    pub system_prompt: Option<String>,
}

/// Why a row is incomplete: such rows are left out of the training formats unless
/// `include_incomplete` is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incomplete {
    /// A field was cut to fit D1's row limit.
    Truncated,
    /// A thinking block was opened and never closed.
    UnclosedThinking,
    /// The answer stopped before its end: at the token limit (`finish_reason: "length"`,
    /// often inside a thinking block, which the stored reason then does not name), or its
    /// stream broke or was left by the client.
    CutShort,
}

/// The finish reason of an answer stopped at its token limit.
pub const TOKEN_LIMIT: &str = "length";

/// The codes of the stored reasons of answers cut before their end, besides the token
/// limit: the thinking never closed ([`InvalidReason::UnclosedThinking`]), the stream broke
/// or the client left it ([`crate::record::CutShort`]).
pub fn cut_short_codes() -> [&'static str; 3] {
    [
        InvalidReason::UnclosedThinking.code(),
        "stream_error",
        "client_disconnected",
    ]
}

impl ExportRow {
    /// Why the row is incomplete, if it is. The queries of `GET /v1/export` apply the same
    /// rule in SQL, from [`TOKEN_LIMIT`] and [`cut_short_codes`].
    pub fn incomplete(&self) -> Option<Incomplete> {
        let code = self
            .invalid_reason
            .as_deref()
            .and_then(|reason| reason.split_once(':'))
            .map(|(code, _)| code);
        if self.truncated {
            Some(Incomplete::Truncated)
        } else if self.thinking_unclosed || code == Some(cut_short_codes()[0]) {
            Some(Incomplete::UnclosedThinking)
        } else if self.finish_reason.as_deref() == Some(TOKEN_LIMIT)
            || code.is_some_and(|code| cut_short_codes().contains(&code))
        {
            Some(Incomplete::CutShort)
        } else {
            None
        }
    }

    /// The conversation the model saw, rebuilt from the stored request.
    pub fn conversation(&self) -> Result<Vec<Message>, String> {
        // An object goes through its JSON text: one deserializer of stored requests in
        // the binary (the Worker's rows are text already), not a second one over values.
        let request: StoredRequest = match &self.request {
            Value::String(text) => from_json_text(text, "request"),
            object @ Value::Object(_) => from_json_text(&object.to_string(), "request"),
            _ => {
                return Err("request: must be the stored request, as JSON text or an object".into())
            }
        }
        .map_err(described)?;
        let prompt = match (request.messages, request.prompt) {
            (Some(messages), _) => Prompt::Messages(messages),
            (None, Some(prompt)) => prompt,
            (None, None) => return Err("request: has neither messages nor a prompt".into()),
        };
        let config = GenerationConfig {
            system_prompt: request.config.and_then(|c| c.system_prompt),
            ..GenerationConfig::unset()
        };
        // Its errors name the field from `messages` on.
        prompt
            .to_messages(&config)
            .map_err(|e| format!("request.{}", described(e)))
    }

    /// The thinking, unless there is none to speak of.
    fn thinking(&self) -> Option<&str> {
        self.thinking.as_deref().filter(|t| !t.trim().is_empty())
    }

    fn usage(&self) -> Option<Usage> {
        let (prompt, completion, total) = (
            self.prompt_tokens,
            self.completion_tokens,
            self.total_tokens,
        );
        if prompt.is_none() && completion.is_none() && total.is_none() {
            return self.usage;
        }
        let (prompt, completion) = (prompt.unwrap_or(0), completion.unwrap_or(0));
        Some(Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: total.unwrap_or(prompt.saturating_add(completion)),
        })
    }
}

/// What is wrong with a stored request, in the words of a configuration error without
/// its "invalid configuration" (it is the stored data that is at fault here).
fn described(error: crate::Error) -> String {
    match error {
        crate::Error::Config { field, message } => format!("{field}: {message}"),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// The records

/// One line of an export.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub enum ExportRecord {
    /// `format: "openai_chat"`.
    Chat(ChatRecord),
    /// `format: "sharegpt"`.
    ShareGpt(ShareGptRecord),
    /// `format: "flat"` (boxed: it is much larger than the others).
    Flat(Box<FlatRecord>),
}

/// A line of OpenAI's fine-tuning chat format.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct ChatRecord {
    /// The conversation, then the answer as an assistant message (with
    /// `reasoning_content` when the thinking goes in a field).
    pub messages: Vec<Message>,
}

/// A line of the ShareGPT format.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct ShareGptRecord {
    /// The turns, the answer last.
    pub conversations: Vec<ShareGptTurn>,
}

/// One turn of a ShareGPT conversation: its text only (parts of a message that are not
/// text, such as images, are left out).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct ShareGptTurn {
    /// Who speaks.
    pub from: Speaker,
    /// The text (for `function_call`, the tool calls as JSON).
    pub value: String,
    /// The thinking, on the answer, when it goes in a field.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "js", tsify(optional))]
    pub reasoning: Option<String>,
}

/// Who speaks in a ShareGPT turn; tools as LLaMA-Factory names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub enum Speaker {
    /// A system (or developer) message.
    System,
    /// A user message.
    Human,
    /// An assistant message, and the answer.
    Gpt,
    /// An assistant message that calls tools.
    FunctionCall,
    /// A tool's result.
    Observation,
}

/// A line of the flat format: the row, with its conversation rebuilt.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct FlatRecord {
    /// The stored row's id.
    pub id: Option<String>,
    /// When the request arrived, in milliseconds since the epoch.
    #[serde(serialize_with = "whole_number")]
    pub created_at: Option<f64>,
    /// The provider that answered.
    pub provider: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
    /// The conversation the model saw (`null` when the stored request cannot be read:
    /// then `export_error` says why).
    #[cfg_attr(feature = "js", tsify(type = "Message[] | null"))]
    pub messages: Option<Vec<Message>>,
    /// The thinking.
    pub thinking: Option<String>,
    /// The answer without its thinking.
    pub content: String,
    /// Why the model stopped.
    pub finish_reason: Option<String>,
    /// The token counts, when known.
    pub usage: Option<Usage>,
    /// A field was cut to fit D1's row limit.
    pub truncated: bool,
    /// The batch it answers a line of.
    pub batch_id: Option<String>,
    /// That line's `custom_id`.
    pub custom_id: Option<String>,
    /// Why the answer is invalid (only on invalid rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "js", tsify(optional))]
    pub invalid_reason: Option<String>,
    /// Why `messages` is `null` (only then).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "js", tsify(optional))]
    pub export_error: Option<String>,
}

/// Why a row gives no line.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Skip {
    /// The row is incomplete, and the training formats leave such rows out unless
    /// `include_incomplete` is set.
    Incomplete(Incomplete),
    /// `reasoning: inline` cannot write this thinking so that it reads back as it was
    /// stored: it holds a closing tag (`</think>`), so a reader would end the thinking
    /// there.
    NotInline,
    /// The stored request cannot be read back into a conversation (a request cut to fit
    /// D1's row limit is no longer JSON, for one).
    UnreadableRequest(String),
}

impl Skip {
    /// Whether the export's rules leave the row out (rather than its data being broken).
    pub fn is_by_rule(&self) -> bool {
        !matches!(self, Skip::UnreadableRequest(_))
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::Incomplete(Incomplete::UnclosedThinking) => {
                f.write_str("its thinking block was never closed (include_incomplete keeps it)")
            }
            Skip::Incomplete(Incomplete::Truncated) => {
                f.write_str("it was cut to fit D1's row limit (include_incomplete keeps it)")
            }
            Skip::Incomplete(Incomplete::CutShort) => f.write_str(
                "its answer stopped before its end (include_incomplete keeps it)",
            ),
            Skip::NotInline => f.write_str(
                "its thinking holds a closing tag, so reasoning=inline cannot write it unambiguously",
            ),
            Skip::UnreadableRequest(why) => write!(f, "the stored request cannot be read: {why}"),
        }
    }
}

/// The record of `row` in `options`' format, or why there is none.
pub fn export_record(row: &ExportRow, options: &ExportOptions) -> Result<ExportRecord, Skip> {
    if options.leaves_out_incomplete() {
        if let Some(why) = row.incomplete() {
            return Err(Skip::Incomplete(why));
        }
    }
    match options.format {
        Format::Flat => Ok(ExportRecord::Flat(Box::new(flat(row)))),
        Format::OpenaiChat => {
            let mut messages = row.conversation().map_err(Skip::UnreadableRequest)?;
            let (content, reasoning) = answer(row, options.reasoning)?;
            let mut extra = Map::new();
            if let Some(reasoning) = reasoning {
                extra.insert("reasoning_content".into(), Value::String(reasoning));
            }
            messages.push(Message {
                role: "assistant".into(),
                content: Value::String(content),
                extra,
            });
            Ok(ExportRecord::Chat(ChatRecord { messages }))
        }
        Format::ShareGpt => {
            let messages = row.conversation().map_err(Skip::UnreadableRequest)?;
            let (value, reasoning) = answer(row, options.reasoning)?;
            let mut conversations: Vec<ShareGptTurn> = messages.iter().map(turn).collect();
            conversations.push(ShareGptTurn {
                from: Speaker::Gpt,
                value,
                reasoning,
            });
            Ok(ExportRecord::ShareGpt(ShareGptRecord { conversations }))
        }
    }
}

/// Appends the line of `row` (its record as JSON, then `\n`) to `out`; on a skip, `out` is
/// left as it was. One line: JSON text never holds a raw line break.
pub fn write_line(row: &ExportRow, options: &ExportOptions, out: &mut Vec<u8>) -> Result<(), Skip> {
    let record = export_record(row, options)?;
    let start = out.len();
    // Writing these types into memory cannot fail (non-finite numbers become `null`);
    // were it ever to, the half-written line is taken back.
    if serde_json::to_writer(&mut *out, &record).is_err() {
        out.truncate(start);
        return Err(Skip::UnreadableRequest(
            "the record cannot be written as JSON".into(),
        ));
    }
    out.push(b'\n');
    Ok(())
}

/// The answer's text and its separate reasoning, as `reasoning` places the thinking.
fn answer(row: &ExportRow, reasoning: Reasoning) -> Result<(String, Option<String>), Skip> {
    let thinking = row.thinking();
    match (reasoning, thinking) {
        (Reasoning::Field, Some(thinking)) => Ok((row.content.clone(), Some(thinking.to_string()))),
        (Reasoning::Inline, Some(thinking)) => {
            let text = format!("<think>\n{thinking}\n</think>\n\n{}", row.content);
            // What a reader takes out of the text must be what was stored: the same
            // extractor that split the answer decides.
            let read = extract_thinking(&text, None);
            let same = !read.unclosed
                && read.content == row.content.trim()
                && read.thinking.as_deref() == Some(thinking.trim());
            if same {
                Ok((text, None))
            } else {
                Err(Skip::NotInline)
            }
        }
        _ => Ok((row.content.clone(), None)),
    }
}

/// A message of the conversation as a ShareGPT turn.
fn turn(message: &Message) -> ShareGptTurn {
    let tool_calls = message
        .extra
        .get("tool_calls")
        .filter(|calls| calls.as_array().is_some_and(|calls| !calls.is_empty()));
    let (from, value) = match (message.role.as_str(), tool_calls) {
        ("system" | "developer", _) => (Speaker::System, text_of(&message.content)),
        ("user", _) => (Speaker::Human, text_of(&message.content)),
        ("assistant", Some(calls)) => (Speaker::FunctionCall, calls.to_string()),
        ("assistant", None) => (Speaker::Gpt, text_of(&message.content)),
        // `tool`, `function`: validated messages have no other role.
        _ => (Speaker::Observation, text_of(&message.content)),
    };
    ShareGptTurn {
        from,
        value,
        reasoning: None,
    }
}

/// The text of a message's content: the string, or its text parts one per line.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn flat(row: &ExportRow) -> FlatRecord {
    let (messages, export_error) = match row.conversation() {
        Ok(messages) => (Some(messages), None),
        Err(why) => (None, Some(Skip::UnreadableRequest(why).to_string())),
    };
    FlatRecord {
        id: row.id.clone(),
        created_at: row.created_at,
        provider: row.provider.clone(),
        model: row.model.clone(),
        messages,
        thinking: row.thinking.clone(),
        content: row.content.clone(),
        finish_reason: row.finish_reason.clone(),
        usage: row.usage(),
        truncated: row.truncated,
        batch_id: row.batch_id.clone(),
        custom_id: row.custom_id.clone(),
        invalid_reason: row.invalid_reason.clone(),
        export_error,
    }
}

/// A time in milliseconds, written without a fraction when it has none (`1738339200000`,
/// not `1738339200000.0`, which some readers would take for a float column).
fn whole_number<S: serde::Serializer>(ms: &Option<f64>, serializer: S) -> Result<S::Ok, S::Error> {
    match *ms {
        Some(ms) if ms.fract() == 0.0 && ms.abs() <= 9_007_199_254_740_992.0 => {
            serializer.serialize_i64(ms as i64)
        }
        Some(ms) => serializer.serialize_f64(ms),
        None => serializer.serialize_none(),
    }
}

/// A token count: a whole number, which D1 hands over as a float (`3.0`); `null` for none.
fn count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    struct Count;
    impl<'de> Visitor<'de> for Count {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a whole number of tokens, or null")
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
            Ok(Some(n))
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
            u64::try_from(n)
                .map(Some)
                .map_err(|_| E::custom("a negative token count"))
        }
        fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
            if n.is_finite() && n >= 0.0 && n.fract() == 0.0 && n <= 9_007_199_254_740_992.0 {
                Ok(Some(n as u64))
            } else {
                Err(E::custom(format!("{n} is not a whole number of tokens")))
            }
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(Count)
        }
    }
    deserializer.deserialize_any(Count)
}

/// A flag: `true`/`false`, or SQLite's 1/0.
fn flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    struct Flag;
    impl Visitor<'_> for Flag {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("true, false, 1 or 0")
        }
        fn visit_bool<E: de::Error>(self, b: bool) -> Result<bool, E> {
            Ok(b)
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<bool, E> {
            Ok(n != 0)
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<bool, E> {
            Ok(n != 0)
        }
        fn visit_f64<E: de::Error>(self, n: f64) -> Result<bool, E> {
            Ok(n != 0.0)
        }
        fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
    }
    deserializer.deserialize_any(Flag)
}

// ---------------------------------------------------------------------------------------
// GET /v1/export

/// Which table rows come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validity {
    /// `responses` (`valid=true`, the default).
    Valid,
    /// `invalid_responses` (`valid=false`).
    Invalid,
    /// Both, interleaved in time (`valid=all`).
    All,
}

impl Validity {
    /// Whether rows of `responses` are read.
    pub fn reads_valid(self) -> bool {
        self != Validity::Invalid
    }

    /// Whether rows of `invalid_responses` are read.
    pub fn reads_invalid(self) -> bool {
        self != Validity::Valid
    }
}

/// An export: `GET /v1/export?format&reasoning&valid&provider&model&batch_id&since&until&finish_reason&include_incomplete`.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportQuery {
    /// How rows become lines.
    pub options: ExportOptions,
    /// Which table (default: the valid rows).
    pub valid: Validity,
    /// Only this provider.
    pub provider: Option<String>,
    /// Only this model.
    pub model: Option<String>,
    /// Only the answers to this batch's lines.
    pub batch_id: Option<String>,
    /// Only rows with this finish reason.
    pub finish_reason: Option<String>,
    /// Only rows that arrived at or after this time (milliseconds since the epoch).
    pub since_ms: Option<f64>,
    /// Only rows that arrived before this time.
    pub until_ms: Option<f64>,
}

const PARAMETERS: &str =
    "format, reasoning, valid, provider, model, batch_id, since, until, finish_reason, include_incomplete";

impl ExportQuery {
    /// Reads the query string's pairs; a mistake is a 400 naming the parameter. Empty
    /// values are left out (as a form without them would send).
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<ExportQuery, ApiError> {
        let mut query = ExportQuery {
            options: ExportOptions::default(),
            valid: Validity::Valid,
            provider: None,
            model: None,
            batch_id: None,
            finish_reason: None,
            since_ms: None,
            until_ms: None,
        };
        for (key, value) in pairs {
            let text = Some(value.to_string()).filter(|v| !v.is_empty());
            match key {
                "format" => query.options.format = named(key, value)?.unwrap_or_default(),
                "reasoning" => query.options.reasoning = named(key, value)?.unwrap_or_default(),
                "valid" => {
                    query.valid = match value {
                        "true" | "" => Validity::Valid,
                        "false" => Validity::Invalid,
                        "all" => Validity::All,
                        _ => return Err(invalid(key, "valid must be true, false or all")),
                    }
                }
                "include_incomplete" => {
                    query.options.include_incomplete = match value {
                        "true" => true,
                        "false" | "" => false,
                        _ => return Err(invalid(key, "include_incomplete must be true or false")),
                    }
                }
                "provider" => query.provider = text,
                "model" => query.model = text,
                "batch_id" => query.batch_id = text,
                "finish_reason" => query.finish_reason = text,
                "since" | "until" => {
                    let time = match text {
                        None => None,
                        Some(text) => Some(parse_time(&text).ok_or_else(|| {
                            invalid(key, format!("{key} must be an ISO 8601 date or time (2025-01-31, 2025-01-31T12:00:00Z, 2025-01-31T13:00:00+01:00; UTC when no zone is given) or milliseconds since the epoch, got '{text}'"))
                        })?),
                    };
                    if key == "since" {
                        query.since_ms = time;
                    } else {
                        query.until_ms = time;
                    }
                }
                _ => {
                    return Err(invalid(
                        key,
                        format!("unknown parameter '{key}' (use {PARAMETERS})"),
                    ))
                }
            }
        }
        if let (Some(since), Some(until)) = (query.since_ms, query.until_ms) {
            if since >= until {
                return Err(invalid("until", "until must be later than since"));
            }
        }
        Ok(query)
    }

    /// The keyset cursor the export starts after: before every id from `since` on.
    pub fn first_cursor(&self) -> String {
        self.since_ms.map(id_floor).unwrap_or_default()
    }

    /// Ids from this one on are past `until`.
    pub fn id_limit(&self) -> Option<String> {
        self.until_ms.map(id_floor)
    }

    /// The name of the download, at `now_ms`:
    /// `llm-distiller-openai_chat-field-20250131T120000Z.jsonl`.
    pub fn filename(&self, now_ms: f64) -> String {
        let format = self.options.format;
        let reasoning = if format.is_training() {
            format!("-{}", self.options.reasoning.name())
        } else {
            String::new()
        };
        format!(
            "llm-distiller-{}{reasoning}-{}.jsonl",
            format.name(),
            compact_utc(now_ms)
        )
    }
}

fn invalid(param: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(Some(param), message)
}

/// A value of one of `T`'s names (its serde names: one list of them); `None` for empty.
fn named<T: DeserializeOwned>(param: &str, value: &str) -> Result<Option<T>, ApiError> {
    if value.is_empty() {
        return Ok(None);
    }
    let deserializer: de::value::StrDeserializer<'_, de::value::Error> = value.into_deserializer();
    T::deserialize(deserializer)
        .map(Some)
        .map_err(|e| invalid(param, format!("{param}: {e}")))
}

// ---------------------------------------------------------------------------------------
// Reading D1 page by page

/// The most rows one page reads.
pub const PAGE_ROWS: u64 = 2_000;
/// The most stored bytes (request, answer and thinking) one page reads past its first
/// row: with rows of up to 2 MB, a page holds at most about 6 MB, whatever the rows.
pub const PAGE_BYTES: u64 = 4 * 1024 * 1024;
/// Lines go to the client in chunks of about this many bytes.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// The D1 queries one Worker invocation may make on the Workers Paid plan (50 on Free).
pub const DEFAULT_QUERY_BUDGET: u64 = 1_000;
/// How many failed page reads one export retries, in all.
pub const READ_RETRIES: u64 = 2;

/// What an export will read, counted before it starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportPlan {
    /// The rows that match.
    pub rows: u64,
    /// Their stored bytes (request, answer and thinking).
    pub bytes: u64,
}

impl ExportPlan {
    /// The most pages reading them takes: each page but the last is full by rows
    /// ([`PAGE_ROWS`]) or by bytes (at least [`PAGE_BYTES`]).
    pub fn pages(&self) -> u64 {
        if self.rows == 0 {
            0
        } else {
            self.rows / PAGE_ROWS + self.bytes / PAGE_BYTES + 1
        }
    }

    /// The most D1 queries the export makes: this count, the pages, and the retries.
    pub fn queries(&self) -> u64 {
        1 + self.pages() + READ_RETRIES
    }

    /// A 400 when the export would need more queries than one invocation may make.
    pub fn check(&self, budget: u64) -> Result<(), ApiError> {
        if self.queries() <= budget {
            return Ok(());
        }
        Err(ApiError::new(
            400,
            "invalid_request_error",
            "export_too_large",
            format!(
                "this export reads {} rows ({} MB) in up to {} database queries, more than the {budget} one request may make: export it in parts with since and until (or by provider, model or batch_id)",
                self.rows,
                self.bytes.div_ceil(1_000_000),
                self.queries()
            ),
        ))
    }
}

/// The query budget from the Worker's `EXPORT_QUERY_BUDGET` var (a whole number, at least
/// 4: the count, a page and the retries), or [`DEFAULT_QUERY_BUDGET`] without one.
pub fn query_budget(var: Option<&str>) -> Result<u64, String> {
    let Some(text) = var.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(DEFAULT_QUERY_BUDGET);
    };
    crate::http::parse_digits(text.as_bytes())
        .filter(|&n| n >= 2 + READ_RETRIES)
        .ok_or_else(|| {
            format!(
                "EXPORT_QUERY_BUDGET must be a whole number of at least {}, got '{text}'",
                2 + READ_RETRIES
            )
        })
}

// ---------------------------------------------------------------------------------------
// Times

/// Milliseconds since the epoch of `text`: a number of milliseconds, or an ISO 8601 date
/// or time: `2025-01-31`, `2025-01-31T12:00`, `2025-01-31T12:00:00.250Z`,
/// `2025-01-31T13:00:00+01:00` (or `+0100`, `+01`). Without a zone, UTC. A space may stand
/// for the `T`, and for the `+` of a zone (which a query string decodes to a space).
pub fn parse_time(text: &str) -> Option<f64> {
    let text = text.trim();
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return crate::http::parse_decimal(text);
    }
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(range)?;
        u32::try_from(crate::http::parse_digits(part)?).ok()
    };
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let mut ms = days_from_civil(i64::from(year), month, day) as f64 * 86_400_000.0;
    let rest = &b[10..];
    if rest.is_empty() {
        return Some(ms);
    }
    if !matches!(rest[0], b'T' | b't' | b' ') {
        return None;
    }
    let (hour, minute) = (digits(11..13)?, digits(14..16)?);
    if b.get(13) != Some(&b':') || hour > 23 || minute > 59 {
        return None;
    }
    ms += f64::from(hour * 3_600_000 + minute * 60_000);
    let mut at = 16;
    if b.get(at) == Some(&b':') {
        let second = digits(at + 1..at + 3)?;
        if second > 59 {
            return None;
        }
        ms += f64::from(second * 1000);
        at += 3;
        if matches!(b.get(at), Some(b'.' | b',')) {
            let start = at + 1;
            at = start;
            while b.get(at).is_some_and(u8::is_ascii_digit) {
                at += 1;
            }
            let fraction = &b[start..at];
            if fraction.is_empty() {
                return None;
            }
            // Milliseconds: the first three digits; finer ones are dropped.
            let digit = |i: usize| fraction.get(i).map_or(0.0, |d| f64::from(d - b'0'));
            ms += digit(0) * 100.0 + digit(1) * 10.0 + digit(2);
        }
    }
    let two_digits = |pair: &[u8]| crate::http::parse_digits(pair).filter(|_| pair.len() == 2);
    let offset_minutes = match &b[at..] {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-' | b' '), zone @ ..] => {
            let (hours, minutes) = match zone {
                [_, _] => (two_digits(zone)?, 0),
                [_, _, _, _] => (two_digits(&zone[..2])?, two_digits(&zone[2..])?),
                [_, _, b':', _, _] => (two_digits(&zone[..2])?, two_digits(&zone[3..])?),
                _ => return None,
            };
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = (hours * 60 + minutes) as i64;
            if *sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return None,
    };
    Some(ms - offset_minutes as f64 * 60_000.0)
}

/// `ms` as a compact UTC time for file names: `20250131T120000Z`.
fn compact_utc(ms: f64) -> String {
    let seconds = if ms.is_finite() {
        (ms / 1000.0).floor() as i64
    } else {
        0
    };
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// The proleptic Gregorian date of a day since 1970-01-01: Howard Hinnant's
/// `civil_from_days`, the inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_from_days_inverts_days_from_civil() {
        for days in [-719_468, -1, 0, 11_016, 11_017, 16_729, 20_119, 2_932_896] {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(
                days_from_civil(year, month, day),
                days,
                "{year}-{month}-{day}"
            );
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(compact_utc(1_738_325_045_999.0), "20250131T120405Z");
        assert_eq!(compact_utc(f64::NAN), "19700101T000000Z");
    }

    #[test]
    fn the_names_are_the_serde_names() {
        for format in [Format::OpenaiChat, Format::ShareGpt, Format::Flat] {
            assert_eq!(serde_json::to_value(format).unwrap(), format.name());
        }
        for reasoning in [Reasoning::Field, Reasoning::Inline, Reasoning::Omit] {
            assert_eq!(serde_json::to_value(reasoning).unwrap(), reasoning.name());
        }
    }
}

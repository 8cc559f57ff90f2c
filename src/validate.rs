//! When a response counts as invalid, and why: the rule that splits stored answers
//! between `responses` and `invalid_responses`.
//!
//! Pure: reads an [`LlmResponse`] and says whether a distillation pipeline can use it.

use std::fmt;

use serde::Serialize;

use crate::chat::LlmResponse;

/// Why a response cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
#[non_exhaustive]
pub enum InvalidReason {
    /// The model stopped for another reason than `stop` (truncated at `length`,
    /// `content_filter`, tool calls) or gave none.
    FinishReason {
        /// What it gave.
        finish_reason: Option<String>,
    },
    /// A thinking block was opened and never closed.
    UnclosedThinking,
    /// Nothing is left of the answer once the thinking is taken out.
    EmptyContent,
    /// The request asked for JSON and the answer does not parse.
    InvalidJson {
        /// The parser's complaint.
        error: String,
    },
}

impl InvalidReason {
    /// A stable code for storage and filtering.
    pub fn code(&self) -> &'static str {
        match self {
            InvalidReason::FinishReason { .. } => "finish_reason",
            InvalidReason::UnclosedThinking => "unclosed_thinking",
            InvalidReason::EmptyContent => "empty_content",
            InvalidReason::InvalidJson { .. } => "invalid_json",
        }
    }
}

impl fmt::Display for InvalidReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidReason::FinishReason {
                finish_reason: Some(reason),
            } => write!(f, "finish_reason is '{reason}', not 'stop'"),
            InvalidReason::FinishReason {
                finish_reason: None,
            } => write!(f, "no finish_reason: the answer may be cut off"),
            InvalidReason::UnclosedThinking => write!(f, "a thinking block was never closed"),
            InvalidReason::EmptyContent => {
                write!(f, "the content is empty once the thinking is removed")
            }
            InvalidReason::InvalidJson { error } => {
                write!(
                    f,
                    "JSON was requested but the content does not parse: {error}"
                )
            }
        }
    }
}

/// Checks `response`; `wants_json` says whether the request asked for a JSON answer
/// (see [`crate::config::GenerationConfig::wants_json`]). The first reason found wins,
/// in the order: finish reason, unclosed thinking, empty content, JSON.
pub fn validate(response: &LlmResponse, wants_json: bool) -> Result<(), InvalidReason> {
    if response.finish_reason.as_deref() != Some("stop") {
        return Err(InvalidReason::FinishReason {
            finish_reason: response.finish_reason.clone(),
        });
    }
    if response.thinking_unclosed {
        return Err(InvalidReason::UnclosedThinking);
    }
    if response.content.trim().is_empty() {
        return Err(InvalidReason::EmptyContent);
    }
    if wants_json {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(response.content.as_bytes())
        {
            return Err(InvalidReason::InvalidJson {
                error: e.to_string(),
            });
        }
    }
    Ok(())
}

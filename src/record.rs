//! What the Worker stores for each answer: one row of `responses` (valid) or
//! `invalid_responses` (invalid, with the reason), and how stored rows are listed.
//!
//! Pure: the validity rule comes from [`crate::validate`], the row respects D1's limits
//! (a row of at most 2,000,000 bytes: giant fields are cut at a character boundary and the
//! row flagged `truncated`, never refused), and list queries are read from the URL here.
//! The Worker only binds these values to SQL.

use serde::Serialize;

use crate::chat::LlmResponse;
use crate::error::Error;
use crate::openai_api::ApiError;
use crate::runtime::Runtime;
use crate::validate::validate;

/// The most bytes kept of each text field: together under D1's 2,000,000-byte row limit.
pub const MAX_CONTENT_BYTES: usize = 700_000;
/// See [`MAX_CONTENT_BYTES`].
pub const MAX_THINKING_BYTES: usize = 700_000;
/// See [`MAX_CONTENT_BYTES`].
pub const MAX_REASONING_BYTES: usize = 200_000;
/// See [`MAX_CONTENT_BYTES`].
pub const MAX_REQUEST_BYTES: usize = 300_000;

/// One stored answer (or failed call).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Record {
    /// Our id: time-ordered, unique.
    pub id: String,
    /// When the request arrived, in milliseconds since the epoch.
    pub created_at: f64,
    /// The provider that answered (or was tried last).
    pub provider: String,
    /// The model that answered (or was asked for).
    pub model: String,
    /// The request: messages and generation config, as JSON.
    pub request: String,
    /// The answer without its thinking.
    pub content: String,
    /// The thinking.
    pub thinking: Option<String>,
    /// The provider's separate reasoning field.
    pub reasoning: Option<String>,
    /// Why the model stopped.
    pub finish_reason: Option<String>,
    /// Tokens in the prompt.
    pub prompt_tokens: Option<u64>,
    /// Tokens generated.
    pub completion_tokens: Option<u64>,
    /// Their sum.
    pub total_tokens: Option<u64>,
    /// How long the answer took.
    pub response_time_ms: f64,
    /// The upstream's response id.
    pub upstream_id: Option<String>,
    /// A field was cut to fit D1's row limit.
    pub truncated: bool,
    /// Why the answer is invalid (`None`: it is valid). `code: message`.
    pub invalid_reason: Option<String>,
    /// The batch it answers a line of, if any.
    pub batch_id: Option<String>,
    /// That line's `custom_id`.
    pub custom_id: Option<String>,
}

/// A time-ordered unique id: the millisecond time in hex, then 64 random bits.
pub fn new_id(now_ms: f64, random_a: f64, random_b: f64) -> String {
    let ms = if now_ms.is_finite() && now_ms > 0.0 {
        now_ms as u64
    } else {
        0
    };
    let bits = |r: f64| ((r.clamp(0.0, 1.0) * 4_294_967_295.0) as u64) & 0xffff_ffff;
    format!(
        "{}{:08x}{:08x}",
        id_prefix(ms),
        bits(random_a),
        bits(random_b)
    )
}

/// What every id [`new_id`] makes at or after `ms` sorts after, and every id it makes
/// before `ms` sorts before (ids order as their times do): a keyset bound for a time. A
/// fractional `ms` rounds up, so that the bound covers the whole milliseconds from it on.
pub fn id_floor(ms: f64) -> String {
    // 12 hex digits, as every id has them until the year 10889.
    let ms = if ms.is_finite() && ms > 0.0 {
        (ms.ceil() as u64).min(0xffff_ffff_ffff)
    } else {
        0
    };
    id_prefix(ms)
}

fn id_prefix(ms: u64) -> String {
    format!("rsp_{ms:012x}")
}

/// When a call arrived, and the id its row will have.
#[derive(Clone, Debug, PartialEq)]
pub struct Arrival {
    /// The row's id ([`new_id`]).
    pub id: String,
    /// When the call arrived, in milliseconds since the epoch.
    pub created_at: f64,
}

impl Arrival {
    /// A call arriving now, by `runtime`'s clock, with a fresh id.
    pub fn now<R: Runtime>(runtime: &R) -> Arrival {
        let created_at = runtime.now_ms();
        Arrival {
            id: new_id(created_at, runtime.random(), runtime.random()),
            created_at,
        }
    }

    /// The arrival time in whole seconds, as OpenAI's `created`.
    pub fn created_s(&self) -> u64 {
        // A float-to-integer `as` saturates, and maps NaN to 0.
        (self.created_at / 1000.0) as u64
    }
}

/// Why a streamed answer ended before its end. Its row keeps what arrived, as invalid.
#[derive(Debug)]
pub enum CutShort<'a> {
    /// The stream failed with this error.
    Error(&'a Error),
    /// The upstream's stream ended without the answer's end.
    NoAnswer,
    /// The client closed the stream.
    ClientGone,
}

impl Record {
    /// The row of a stream that was cut short (see [`CutShort`]): what had arrived,
    /// `received`, invalid for that reason.
    pub fn cut_short(
        id: String,
        created_at: f64,
        request: &str,
        received: &LlmResponse,
        wants_json: bool,
        why: CutShort<'_>,
    ) -> Record {
        let mut record = Record::answer(id, created_at, request, received, wants_json);
        record.invalid_reason = Some(match why {
            CutShort::Error(error) => format!("stream_error: {error}"),
            CutShort::NoAnswer => {
                "stream_error: the upstream stream ended without an answer".to_string()
            }
            CutShort::ClientGone => {
                "client_disconnected: the client closed the stream before its end".to_string()
            }
        });
        record
    }

    /// The row of an answer; `wants_json` says whether the request asked for JSON.
    pub fn answer(
        id: String,
        created_at: f64,
        request: &str,
        response: &LlmResponse,
        wants_json: bool,
    ) -> Record {
        let invalid_reason = validate(response, wants_json)
            .err()
            .map(|r| format!("{}: {r}", r.code()));
        let mut truncated = false;
        let mut cut = |text: &str, max: usize| {
            let (kept, was_cut) = cut_at(text, max);
            truncated |= was_cut;
            kept
        };
        let request = cut(request, MAX_REQUEST_BYTES);
        let content = cut(&response.content, MAX_CONTENT_BYTES);
        let thinking = response
            .thinking
            .as_deref()
            .map(|t| cut(t, MAX_THINKING_BYTES));
        let reasoning = response
            .reasoning
            .as_deref()
            .map(|r| cut(r, MAX_REASONING_BYTES));
        Record {
            id,
            created_at,
            provider: response.provider.clone(),
            model: response.model.clone(),
            request,
            content,
            thinking,
            reasoning,
            finish_reason: response.finish_reason.clone(),
            prompt_tokens: response.usage.map(|u| u.prompt_tokens),
            completion_tokens: response.usage.map(|u| u.completion_tokens),
            total_tokens: response.usage.map(|u| u.total_tokens),
            response_time_ms: response.response_time_ms,
            upstream_id: response.id.clone(),
            truncated,
            invalid_reason,
            batch_id: None,
            custom_id: None,
        }
    }

    /// The row of a call that got no answer at all: invalid, with the error as the reason,
    /// so that a pipeline sees every request it sent. `None` for a configuration error (a
    /// mistake of the call, or a provider that could not be set up): nothing was sent, so
    /// there is nothing to keep.
    pub fn failure(
        id: String,
        created_at: f64,
        request: &str,
        provider: &str,
        model: &str,
        error: &Error,
    ) -> Option<Record> {
        if matches!(error, Error::Config { .. }) {
            return None;
        }
        let (request, truncated) = cut_at(request, MAX_REQUEST_BYTES);
        Some(Record {
            id,
            created_at,
            provider: error.provider().unwrap_or(provider).to_string(),
            model: model.to_string(),
            request,
            content: String::new(),
            thinking: None,
            reasoning: None,
            finish_reason: None,
            prompt_tokens: None,
            completion_tokens: None,
            total_tokens: None,
            response_time_ms: 0.0,
            upstream_id: None,
            truncated,
            invalid_reason: Some(format!("upstream_error: {error}")),
            batch_id: None,
            custom_id: None,
        })
    }

    /// The same row, as the answer to line `custom_id` of batch `batch_id`.
    pub fn for_batch(mut self, batch_id: &str, custom_id: &str) -> Record {
        self.batch_id = Some(batch_id.to_string());
        self.custom_id = Some(custom_id.to_string());
        self
    }

    /// Whether it goes to `responses`.
    pub fn is_valid(&self) -> bool {
        self.invalid_reason.is_none()
    }

    /// `responses` or `invalid_responses`.
    pub fn table(&self) -> &'static str {
        if self.is_valid() {
            "responses"
        } else {
            "invalid_responses"
        }
    }
}

/// `text` cut to at most `max` bytes at a character boundary, and whether it was cut.
fn cut_at(text: &str, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text.to_string(), false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_string(), true)
}

/// A listing of stored responses: `GET /v1/responses?limit&cursor&provider&model&valid`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListQuery {
    /// 1 to 100 (default 20).
    pub limit: u32,
    /// Only rows older than this id (the `next_cursor` of the previous page).
    pub cursor: Option<String>,
    /// Only this provider.
    pub provider: Option<String>,
    /// Only this model.
    pub model: Option<String>,
    /// Only valid (`true`) or invalid (`false`) rows; both when absent.
    pub valid: Option<bool>,
}

impl ListQuery {
    /// Reads the query string's pairs; a mistake is a 400 naming the parameter.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<ListQuery, ApiError> {
        let mut query = ListQuery {
            limit: 20,
            cursor: None,
            provider: None,
            model: None,
            valid: None,
        };
        for (key, value) in pairs {
            match key {
                "limit" => {
                    query.limit = value
                        .parse::<u32>()
                        .ok()
                        .filter(|l| (1..=100).contains(l))
                        .ok_or_else(|| {
                            ApiError::invalid(
                                Some("limit"),
                                "limit must be a whole number from 1 to 100",
                            )
                        })?;
                }
                "cursor" => {
                    if !is_id(value) {
                        return Err(ApiError::invalid(
                            Some("cursor"),
                            "cursor must be a next_cursor from a previous page",
                        ));
                    }
                    query.cursor = Some(value.to_string());
                }
                "provider" => query.provider = Some(value.to_string()).filter(|v| !v.is_empty()),
                "model" => query.model = Some(value.to_string()).filter(|v| !v.is_empty()),
                "valid" => {
                    query.valid = match value {
                        "true" => Some(true),
                        "false" => Some(false),
                        "" => None,
                        _ => {
                            return Err(ApiError::invalid(
                                Some("valid"),
                                "valid must be true or false",
                            ))
                        }
                    }
                }
                _ => {
                    return Err(ApiError::invalid(
                        Some(key),
                        format!(
                            "unknown parameter '{key}' (use limit, cursor, provider, model, valid)"
                        ),
                    ))
                }
            }
        }
        Ok(query)
    }
}

/// Whether `text` has the shape of an id made by [`new_id`].
pub fn is_id(text: &str) -> bool {
    text.len() == 32 && text.starts_with("rsp_") && text[4..].bytes().all(|b| b.is_ascii_hexdigit())
}

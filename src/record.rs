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
use crate::sql::{placeholders, Param, Statement};
use crate::validate::validate;

/// The most bytes kept of each long text field: with the short ones ([`MAX_LABEL_BYTES`]),
/// together under D1's 2,000,000-byte row limit.
pub const MAX_CONTENT_BYTES: usize = 700_000;
/// See [`MAX_CONTENT_BYTES`].
pub const MAX_THINKING_BYTES: usize = 700_000;
/// See [`MAX_CONTENT_BYTES`].
pub const MAX_REASONING_BYTES: usize = 200_000;
/// See [`MAX_CONTENT_BYTES`].
pub const MAX_REQUEST_BYTES: usize = 300_000;
/// See [`MAX_CONTENT_BYTES`].
pub const MAX_INVALID_REASON_BYTES: usize = 50_000;
/// The most bytes kept of each short field: the provider, the model, the finish reason, the
/// upstream's id (those three come from the upstream, which may send any size), the batch
/// id and the line's `custom_id`.
pub const MAX_LABEL_BYTES: usize = 1_000;

/// D1's limit on one row, in bytes.
const D1_MAX_ROW_BYTES: usize = 2_000_000;

// Every text field at its limit, the id (36 bytes) and the numbers (8 bytes each) fit a row.
const _: () = assert!(
    MAX_CONTENT_BYTES
        + MAX_THINKING_BYTES
        + MAX_REASONING_BYTES
        + MAX_REQUEST_BYTES
        + MAX_INVALID_REASON_BYTES
        + 6 * MAX_LABEL_BYTES
        + 36
        + 6 * 8
        <= D1_MAX_ROW_BYTES
);

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

/// The latest millisecond time an id holds: 12 hex digits, the year 10889.
const MAX_ID_MS: u64 = (1 << 48) - 1;

/// A time-ordered unique id: the millisecond time in 12 hex digits (a time that needs more,
/// after the year 10889, counts as the largest they hold), then 64 random bits.
pub fn new_id(now_ms: f64, random_a: f64, random_b: f64) -> String {
    let ms = if now_ms.is_finite() && now_ms > 0.0 {
        (now_ms as u64).min(MAX_ID_MS)
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
    let ms = if ms.is_finite() && ms > 0.0 {
        (ms.ceil() as u64).min(MAX_ID_MS)
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
        let reason = match why {
            CutShort::Error(error) => format!("stream_error: {error}"),
            CutShort::NoAnswer => {
                "stream_error: the upstream stream ended without an answer".to_string()
            }
            CutShort::ClientGone => {
                "client_disconnected: the client closed the stream before its end".to_string()
            }
        };
        let mut fields = Cutter::default();
        record.invalid_reason = Some(fields.cut(&reason, MAX_INVALID_REASON_BYTES));
        record.truncated |= fields.truncated;
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
        let mut fields = Cutter::default();
        let request = fields.cut(request, MAX_REQUEST_BYTES);
        let content = fields.cut(&response.content, MAX_CONTENT_BYTES);
        let thinking = response
            .thinking
            .as_deref()
            .map(|t| fields.cut(t, MAX_THINKING_BYTES));
        let reasoning = response
            .reasoning
            .as_deref()
            .map(|r| fields.cut(r, MAX_REASONING_BYTES));
        let invalid_reason = validate(response, wants_json)
            .err()
            .map(|r| fields.cut(&format!("{}: {r}", r.code()), MAX_INVALID_REASON_BYTES));
        let finish_reason = response
            .finish_reason
            .as_deref()
            .map(|f| fields.cut(f, MAX_LABEL_BYTES));
        let upstream_id = response
            .id
            .as_deref()
            .map(|i| fields.cut(i, MAX_LABEL_BYTES));
        Record {
            id,
            created_at,
            provider: fields.cut(&response.provider, MAX_LABEL_BYTES),
            model: fields.cut(&response.model, MAX_LABEL_BYTES),
            request,
            content,
            thinking,
            reasoning,
            finish_reason,
            prompt_tokens: response.usage.map(|u| u.prompt_tokens),
            completion_tokens: response.usage.map(|u| u.completion_tokens),
            total_tokens: response.usage.map(|u| u.total_tokens),
            response_time_ms: response.response_time_ms,
            upstream_id,
            truncated: fields.truncated,
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
        let mut fields = Cutter::default();
        let request = fields.cut(request, MAX_REQUEST_BYTES);
        let provider = fields.cut(error.provider().unwrap_or(provider), MAX_LABEL_BYTES);
        let model = fields.cut(model, MAX_LABEL_BYTES);
        let reason = fields.cut(
            &format!("upstream_error: {error}"),
            MAX_INVALID_REASON_BYTES,
        );
        Some(Record {
            id,
            created_at,
            provider,
            model,
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
            truncated: fields.truncated,
            invalid_reason: Some(reason),
            batch_id: None,
            custom_id: None,
        })
    }

    /// The same row, as the answer to line `custom_id` of batch `batch_id`.
    pub fn for_batch(mut self, batch_id: &str, custom_id: &str) -> Record {
        let mut fields = Cutter::default();
        self.batch_id = Some(fields.cut(batch_id, MAX_LABEL_BYTES));
        self.custom_id = Some(fields.cut(custom_id, MAX_LABEL_BYTES));
        self.truncated |= fields.truncated;
        self
    }

    /// The row's values, in the order of [`Record::COLUMNS`].
    fn values(&self) -> Vec<Param> {
        let mut values: Vec<Param> = vec![
            self.id.as_str().into(),
            self.created_at.into(),
            self.provider.as_str().into(),
            self.model.as_str().into(),
            self.request.as_str().into(),
            self.content.as_str().into(),
            self.thinking.as_deref().into(),
            self.reasoning.as_deref().into(),
            self.finish_reason.as_deref().into(),
            self.prompt_tokens.into(),
            self.completion_tokens.into(),
            self.total_tokens.into(),
            self.response_time_ms.into(),
            self.upstream_id.as_deref().into(),
            self.truncated.into(),
            self.batch_id.as_deref().into(),
            self.custom_id.as_deref().into(),
        ];
        if !self.is_valid() {
            values.push(self.invalid_reason.as_deref().into());
        }
        values
    }

    /// The columns the row fills, `reason` last for an invalid one.
    fn columns(&self) -> String {
        let reason = if self.is_valid() { "" } else { ", reason" };
        format!("{}{reason}", Self::COLUMNS)
    }

    /// The columns every row fills, in order.
    const COLUMNS: &'static str =
        "id, created_at, provider, model, request, content, thinking, reasoning, finish_reason, \
         prompt_tokens, completion_tokens, total_tokens, response_time_ms, upstream_id, \
         truncated, batch_id, custom_id";

    /// The statement that stores the row in its table, once: a row already there (a write
    /// retried after an answer that was lost) is left as it is.
    pub fn insert(&self) -> Statement {
        let values = self.values();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING",
            self.table(),
            self.columns(),
            placeholders(1, values.len())
        );
        Statement::new(sql, values)
    }

    /// The statement that stores the row only while line `line` of batch `batch_id` is
    /// running under attempt `attempt`: a run that lost its claim (a later delivery took
    /// the line) stores nothing.
    pub fn insert_if_running(&self, batch_id: &str, line: u64, attempt: u64) -> Statement {
        let mut values = self.values();
        let n = values.len();
        let sql = format!(
            "INSERT INTO {} ({}) SELECT {} WHERE EXISTS (SELECT 1 FROM batch_items \
             WHERE batch_id = ?{} AND line = ?{} AND state = 'running' AND attempt = ?{})",
            self.table(),
            self.columns(),
            placeholders(1, n),
            n + 1,
            n + 2,
            n + 3
        );
        values.extend([batch_id.into(), line.into(), attempt.into()]);
        Statement::new(sql, values)
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

/// Cuts a row's text fields to their limits, and remembers whether it cut any.
#[derive(Default)]
struct Cutter {
    truncated: bool,
}

impl Cutter {
    /// `text` cut to at most `max` bytes at a character boundary.
    fn cut(&mut self, text: &str, max: usize) -> String {
        if text.len() <= max {
            return text.to_string();
        }
        self.truncated = true;
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_string()
    }
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

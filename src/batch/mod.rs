//! Batches in the shape of OpenAI's Batch API, as the Worker runs them: the input file read
//! and checked ([`input`]), the batch and file objects, the lines of the output and error
//! files, the queue's messages, and every statement that moves a batch's lines through
//! their states ([`sql`]). Pure: the Worker receives, binds and sends; the decisions and the
//! SQL are here, tested natively (the statements against SQLite with the migrations).
//!
//! A line goes `pending` → `queued` (a message is on the queue) → `running` (a delivery
//! claimed it: `attempt` + 1) → `done` (answered: its output line and stored row) or
//! `failed` (no answer for good: its error line, and a stored row when anything was sent),
//! or `cancelled` (never started). Delivery is at least once; the result is exactly once: a
//! run stores its answer, and marks its line, only while the line is still running under
//! its own attempt, in one transaction. A line no longer running is never sent upstream
//! again. A run keeps its claim fresh ([`sql::keep_claims`]); a claim older than
//! [`CLAIM_LEASE_MS`] is taken as lost (the isolate died), and the line is queued again.

pub mod input;
pub mod sql;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::chat::LlmResponse;
use crate::error::Error;
use crate::openai_api::{completion_body, ApiError, Call};
use crate::record::{Arrival, Record};
use crate::sql::Group;

/// The one endpoint a batch may call.
pub const ENDPOINT: &str = "/v1/chat/completions";
/// The one completion window.
pub const COMPLETION_WINDOW: &str = "24h";
/// How long a batch may take, in seconds, before its unfinished lines expire.
pub const WINDOW_S: u64 = 24 * 3600;
/// The largest input file taken, in bytes (OpenAI takes 200 MB; a Worker reads the whole
/// file into memory to check it, and its memory is 128 MB).
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;
/// The most requests a batch holds (OpenAI: 50,000).
pub const MAX_REQUESTS: usize = 10_000;
/// How many of a batch's lines are queued or running at once: enough to keep a provider's
/// budget busy (a burst of its bucket, then its pace), few enough that a queued line does
/// not wait minutes for its turn.
pub const FEED_WINDOW: u64 = 500;
/// A claim not renewed for this long is taken as lost: its run died with its isolate.
pub const CLAIM_LEASE_MS: f64 = 30_000.0;
/// How often a run renews the claims of the lines it works on.
pub const CLAIM_RENEW_MS: f64 = 10_000.0;
/// A queued line whose message has not been taken in this long gets a new one (a queue
/// restarted empty, locally, loses its messages).
pub const REQUEUE_AFTER_MS: f64 = 60_000.0;
/// The largest part of an input file stored in one row (D1 takes rows up to 2 MB).
pub const FILE_PART_BYTES: usize = 512 * 1024;

/// A fault of a batch or of one line of its file: OpenAI's `BatchError`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchError {
    /// A machine-readable code.
    pub code: String,
    /// For a person.
    pub message: String,
    /// The field at fault, when one is.
    pub param: Option<String>,
    /// The line of the input file, when one is.
    pub line: Option<u64>,
}

impl BatchError {
    /// A fault of line `line`.
    pub fn at(line: u64, code: &str, param: Option<&str>, message: String) -> Self {
        BatchError {
            code: code.to_string(),
            message: format!("line {line}: {message}"),
            param: param.map(str::to_string),
            line: Some(line),
        }
    }

    /// A fault of the file as a whole.
    pub fn file(code: &str, message: impl Into<String>) -> Self {
        BatchError {
            code: code.to_string(),
            message: message.into(),
            param: None,
            line: None,
        }
    }
}

/// The 400 that refuses a file at upload, naming its first fault (and how many more).
pub fn refused_file(errors: &[BatchError]) -> ApiError {
    let first = errors.first();
    let more = errors.len().saturating_sub(1);
    let mut message = first.map_or_else(
        || "the file is not a batch file".to_string(),
        |e| e.message.clone(),
    );
    if more > 0 {
        message.push_str(&format!(
            " (and {more} more fault{})",
            if more == 1 { "" } else { "s" }
        ));
    }
    let mut error = ApiError::invalid(first.and_then(|e| e.param.as_deref()), message);
    error.code = first.map(|e| e.code.clone());
    error
}

/// A time-ordered id of `prefix`: the millisecond time in hex, then 64 random bits (as
/// stored responses' ids, so listing by id is listing by creation).
pub fn new_id(prefix: &str, now_ms: f64, random_a: f64, random_b: f64) -> String {
    let ms = if now_ms.is_finite() && now_ms > 0.0 {
        now_ms as u64
    } else {
        0
    };
    let bits = |r: f64| ((r.clamp(0.0, 1.0) * 4_294_967_295.0) as u64) & 0xffff_ffff;
    format!(
        "{prefix}{ms:012x}{:08x}{:08x}",
        bits(random_a),
        bits(random_b)
    )
}

/// Whether `text` is an id [`new_id`] made with `prefix`.
pub fn is_id(prefix: &str, text: &str) -> bool {
    text.strip_prefix(prefix)
        .is_some_and(|hex| hex.len() == 28 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The prefix of file ids.
pub const FILE_PREFIX: &str = "file-";
/// The prefix of batch ids.
pub const BATCH_PREFIX: &str = "batch_";

/// A file as stored (the `files` table).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct FileRow {
    /// Its id.
    pub id: String,
    /// `batch` (an input) or `batch_output` (a batch's output or error file).
    pub purpose: String,
    /// Its name.
    pub filename: String,
    /// Its size.
    pub bytes: f64,
    /// Seconds since the epoch.
    pub created_at: f64,
    /// An output file's batch.
    pub batch_id: Option<String>,
    /// An output file's kind: `output` or `error`.
    pub kind: Option<String>,
}

impl FileRow {
    /// OpenAI's file object.
    pub fn object(&self) -> Value {
        json!({
            "id": self.id,
            "object": "file",
            "bytes": self.bytes as u64,
            "created_at": self.created_at as u64,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        })
    }
}

/// A batch as stored (the `batches` table).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct BatchRow {
    /// Its id.
    pub id: String,
    /// Always [`ENDPOINT`].
    pub endpoint: String,
    /// The input file.
    pub input_file_id: String,
    /// Always [`COMPLETION_WINDOW`].
    pub completion_window: String,
    /// Its status.
    pub status: String,
    /// The caller's metadata, JSON.
    pub metadata: Option<String>,
    /// The faults that failed it, JSON (a list of [`BatchError`]).
    pub errors: Option<String>,
    /// The output file, once finished.
    pub output_file_id: Option<String>,
    /// The error file, once finished.
    pub error_file_id: Option<String>,
    /// Seconds since the epoch, as each time below.
    pub created_at: f64,
    /// When it started.
    pub in_progress_at: Option<f64>,
    /// When it expires.
    pub expires_at: Option<f64>,
    /// When it was finalized.
    pub finalizing_at: Option<f64>,
    /// When it completed.
    pub completed_at: Option<f64>,
    /// When it failed (at validation).
    pub failed_at: Option<f64>,
    /// When its cancel was asked.
    pub cancelling_at: Option<f64>,
    /// When it was cancelled.
    pub cancelled_at: Option<f64>,
    /// When it expired.
    pub expired_at: Option<f64>,
    /// Its lines.
    pub total: f64,
    /// Lines answered.
    pub completed: f64,
    /// Lines that failed for good (or expired).
    pub failed: f64,
    /// When a line last ended or was sent out, in milliseconds.
    pub progressed_at: Option<f64>,
}

/// How long a batch in progress may go without a line ending before a look at it
/// ([`BatchRow::stalled`]) recovers it: longer than a run normally takes to end a line,
/// so that polling a batch that moves costs nothing.
pub const STALL_MS: f64 = 5_000.0;

impl BatchRow {
    /// Whether the batch is in progress and no line has ended for [`STALL_MS`]: its work
    /// may have been lost (a queue restarted empty, a run that died), and a look at it
    /// should recover it.
    pub fn stalled(&self, now_ms: f64) -> bool {
        matches!(self.status.as_str(), "in_progress" | "cancelling")
            && self.progressed_at.is_none_or(|at| at + STALL_MS <= now_ms)
    }

    /// OpenAI's batch object: times that have not happened and files that do not exist are
    /// left out (the spec has them as integers and strings, never null).
    pub fn object(&self) -> Value {
        let mut object = json!({
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "created_at": self.created_at as u64,
            "request_counts": {
                "total": self.total as u64,
                "completed": self.completed as u64,
                "failed": self.failed as u64,
            },
            "metadata": self.metadata.as_deref().and_then(|m| serde_json::from_str::<Value>(m).ok()),
        });
        let times = [
            ("in_progress_at", self.in_progress_at),
            ("expires_at", self.expires_at),
            ("finalizing_at", self.finalizing_at),
            ("completed_at", self.completed_at),
            ("failed_at", self.failed_at),
            ("expired_at", self.expired_at),
            ("cancelling_at", self.cancelling_at),
            ("cancelled_at", self.cancelled_at),
        ];
        for (key, time) in times {
            if let Some(time) = time {
                object[key] = json!(time as u64);
            }
        }
        for (key, id) in [
            ("output_file_id", &self.output_file_id),
            ("error_file_id", &self.error_file_id),
        ] {
            if let Some(id) = id {
                object[key] = json!(id);
            }
        }
        if let Some(errors) = self
            .errors
            .as_deref()
            .and_then(|e| serde_json::from_str::<Value>(e).ok())
        {
            object["errors"] = json!({ "object": "list", "data": errors });
        }
        object
    }
}

/// A `POST /v1/batches` request.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBatch {
    /// The input file.
    pub input_file_id: String,
    /// Must be [`ENDPOINT`].
    pub endpoint: String,
    /// Must be [`COMPLETION_WINDOW`].
    pub completion_window: String,
    /// At most 16 pairs of strings (keys up to 64 characters, values up to 512).
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, Value>>,
    /// Accepted and not used: output files are kept until deleted.
    #[serde(default)]
    pub output_expires_after: Option<Value>,
}

/// Reads a `POST /v1/batches` body; every mistake is a 400 naming the field.
pub fn parse_create(body: &[u8]) -> Result<CreateBatch, ApiError> {
    let create: CreateBatch = crate::config::from_json_text(
        std::str::from_utf8(body)
            .map_err(|_| ApiError::invalid(None, "the body is not UTF-8 text"))?,
        "body",
    )
    .map_err(|e| ApiError::from_error(&e))?;
    if create.endpoint != ENDPOINT {
        return Err(ApiError::invalid(
            Some("endpoint"),
            format!(
                "endpoint: only \"{ENDPOINT}\" is supported, got \"{}\"",
                create.endpoint.escape_debug()
            ),
        ));
    }
    if create.completion_window != COMPLETION_WINDOW {
        return Err(ApiError::invalid(
            Some("completion_window"),
            format!("completion_window: only \"{COMPLETION_WINDOW}\" is supported"),
        ));
    }
    if !is_id(FILE_PREFIX, &create.input_file_id) {
        return Err(ApiError::invalid(
            Some("input_file_id"),
            format!(
                "input_file_id: no file has the id '{}'",
                create.input_file_id.escape_debug()
            ),
        ));
    }
    if let Some(metadata) = &create.metadata {
        let fits = metadata.len() <= 16
            && metadata.iter().all(|(k, v)| {
                k.chars().count() <= 64 && v.as_str().is_some_and(|v| v.chars().count() <= 512)
            });
        if !fits {
            return Err(ApiError::invalid(
                Some("metadata"),
                "metadata: at most 16 pairs, keys of at most 64 characters, string values of at most 512",
            ));
        }
    }
    Ok(create)
}

/// A message on the batch queue: run line `line` of batch `batch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueMessage {
    /// The message format's version (1).
    pub v: u32,
    /// The batch.
    pub batch: String,
    /// The line.
    pub line: u64,
}

impl QueueMessage {
    /// The message for line `line` of `batch`.
    pub fn new(batch: &str, line: u64) -> Self {
        QueueMessage {
            v: 1,
            batch: batch.to_string(),
            line,
        }
    }

    /// A message as it arrives, if it is one of this version.
    pub fn read(value: &Value) -> Option<Self> {
        serde_json::from_value::<QueueMessage>(value.clone())
            .ok()
            .filter(|m| m.v == 1 && is_id(BATCH_PREFIX, &m.batch))
    }
}

/// The id of the output line of line `line` of `batch` (`batch_req_…`).
pub fn request_id(batch: &str, line: u64) -> String {
    let hex = batch.strip_prefix(BATCH_PREFIX).unwrap_or(batch);
    format!("batch_req_{hex}_{line}")
}

/// A line of the output file: the answer, as the chat endpoint would have given it.
pub fn output_line(
    batch: &str,
    line: u64,
    custom_id: &str,
    stored_id: &str,
    completion: &Value,
) -> String {
    json!({
        "id": request_id(batch, line),
        "custom_id": custom_id,
        "response": { "status_code": 200, "request_id": stored_id, "body": completion },
        "error": null,
    })
    .to_string()
}

/// A line of the error file: why the line got no answer, in the chat endpoint's error
/// shape, and the stored row that keeps the failure, when one does.
pub fn error_line(
    batch: &str,
    line: u64,
    custom_id: &str,
    stored_id: Option<&str>,
    error: &ApiError,
) -> String {
    json!({
        "id": request_id(batch, line),
        "custom_id": custom_id,
        "response": { "status_code": error.status, "request_id": stored_id, "body": error.body() },
        "error": { "code": error.code, "message": error.message },
    })
    .to_string()
}

/// How a run of a line ended, as it is kept: the stored row (none when nothing was sent:
/// a call its configuration refused) and the line of the output or error file.
#[derive(Clone, Debug, PartialEq)]
pub struct RunEnd {
    /// The row for `responses` or `invalid_responses`, answering the line.
    pub record: Option<Record>,
    /// The line of the output file (answered) or of the error file (failed).
    pub output: String,
    /// Whether the line got an answer.
    pub answered: bool,
}

impl RunEnd {
    /// The end of the run of line `line` (`custom_id`) of `batch`, which arrived as
    /// `arrival` and was asked as `call`: its answer, or its error. `attribution` names
    /// the provider and model a failure is stored under
    /// ([`crate::manager::ProviderManager::attribution`]).
    pub fn new(
        batch: &str,
        line: u64,
        custom_id: &str,
        arrival: &Arrival,
        call: &Call,
        result: &Result<LlmResponse, Error>,
        attribution: (String, String),
    ) -> RunEnd {
        match result {
            Ok(response) => {
                let record = Record::answer(
                    arrival.id.clone(),
                    arrival.created_at,
                    &call.stored,
                    response,
                    call.config.wants_json(),
                )
                .for_batch(batch, custom_id);
                let body = completion_body(&arrival.id, arrival.created_s(), response);
                RunEnd {
                    output: output_line(batch, line, custom_id, &arrival.id, &body),
                    record: Some(record),
                    answered: true,
                }
            }
            Err(error) => {
                let (provider, model) = attribution;
                let record = Record::failure(
                    arrival.id.clone(),
                    arrival.created_at,
                    &call.stored,
                    &provider,
                    &model,
                    error,
                )
                .map(|r| r.for_batch(batch, custom_id));
                let api = ApiError::from_error(error);
                RunEnd {
                    output: error_line(
                        batch,
                        line,
                        custom_id,
                        record.as_ref().map(|r| r.id.as_str()),
                        &api,
                    ),
                    record,
                    answered: false,
                }
            }
        }
    }

    /// The end of a line whose stored request cannot be read (it was checked at upload: a
    /// configuration changed since, or storage damaged it): failed with why, nothing stored.
    pub fn refused(batch: &str, line: u64, custom_id: &str, error: &ApiError) -> RunEnd {
        RunEnd {
            record: None,
            output: error_line(batch, line, custom_id, None, error),
            answered: false,
        }
    }

    /// The transaction that keeps it, while the line is still running under `attempt`
    /// (see [`sql::finish`]).
    pub fn finish(&self, batch: &str, line: u64, attempt: u64, now_ms: f64) -> Group {
        let stored = self
            .record
            .as_ref()
            .map(|r| (r.insert_if_running(batch, line, attempt), r.id.as_str()));
        let ended = match (self.answered, stored) {
            (true, Some((insert, id))) => sql::Ended::Answered(insert, id, &self.output),
            (_, stored) => sql::Ended::Failed(stored, &self.output),
        };
        sql::finish(batch, line, attempt, ended, now_ms)
    }
}

/// A page of a list: `after` (an id of the previous page's last) and `limit` (1 to 100,
/// default 20), OpenAI's list parameters; the files list also takes `purpose` and `order`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    /// Only objects after this one (in the list's order).
    pub after: Option<String>,
    /// At most this many.
    pub limit: u32,
    /// Oldest first (`asc`) rather than newest first.
    pub ascending: bool,
    /// Files only: of this purpose.
    pub purpose: Option<String>,
}

impl ListPage {
    /// Reads the query's pairs for a list of `prefix` ids; `files` allows `purpose` and
    /// `order`. A mistake is a 400 naming the parameter.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        prefix: &str,
        files: bool,
    ) -> Result<ListPage, ApiError> {
        let mut page = ListPage {
            after: None,
            limit: 20,
            ascending: false,
            purpose: None,
        };
        for (key, value) in pairs {
            match key {
                "limit" => {
                    page.limit = value
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
                "after" if is_id(prefix, value) => page.after = Some(value.to_string()),
                "after" => {
                    return Err(ApiError::invalid(
                        Some("after"),
                        "after must be the id of an object of the previous page",
                    ))
                }
                "order" if files => {
                    page.ascending = match value {
                        "asc" => true,
                        "desc" => false,
                        _ => {
                            return Err(ApiError::invalid(
                                Some("order"),
                                "order must be asc or desc",
                            ))
                        }
                    }
                }
                "purpose" if files => {
                    page.purpose = Some(value.to_string()).filter(|p| !p.is_empty())
                }
                _ => {
                    return Err(ApiError::invalid(
                        Some(key),
                        format!("unknown parameter '{}'", key.escape_debug()),
                    ))
                }
            }
        }
        Ok(page)
    }
}

/// An OpenAI list of `data` (objects with an `id`), one more than the page asked for telling
/// whether there are more. `first_id` and `last_id` name the page's ends; an empty page has
/// none: a list whose spec requires them as strings (`ends_required`, the files') gets
/// empty strings, another (the batches') leaves them out.
pub fn list_object(mut data: Vec<Value>, limit: u32, ends_required: bool) -> Value {
    let has_more = data.len() > limit as usize;
    data.truncate(limit as usize);
    let id = |v: Option<&Value>| {
        v.and_then(|v| v["id"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let (first_id, last_id) = (id(data.first()), id(data.last()));
    let mut list = json!({ "object": "list", "has_more": has_more, "data": data });
    if !first_id.is_empty() || ends_required {
        list["first_id"] = json!(first_id);
        list["last_id"] = json!(last_id);
    }
    list
}

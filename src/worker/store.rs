//! The D1 store: the answers' rows, written together (the rows of calls that end while a
//! write is on its way go together in the next one, as one D1 batch; bound parameters only),
//! retried with [`RetryPolicy`]'s backoff and logged when they keep failing, and the reads
//! behind `GET /v1/responses`.
//!
//! What a row holds and where it goes is decided in [`crate::record`]; this module only
//! binds it to SQL. No user data is ever part of an SQL text.

use std::cell::{Cell, RefCell};

use serde::de::DeserializeOwned;
use serde_json::Value;
use wasm_bindgen::JsValue;
use worker::{console_error, console_warn, D1Database, D1PreparedStatement, D1Result};

use crate::record::{ListQuery, Record};
use crate::retry::RetryPolicy;
use crate::runtime::{with_backoff, Runtime};
use crate::sql::{Group, Param, Statement};
use crate::wasm::WasmRuntime;

/// Retries of a row's write before giving up (and logging the row, so it can be
/// recovered): 3, after about 0.2, 0.4 and 0.8 s.
const WRITE_RETRY: RetryPolicy = RetryPolicy {
    max_retries: 3,
    base_delay_ms: 200.0,
    max_backoff_ms: 5_000.0,
    max_wait_ms: 5_000.0,
};

fn text(value: &Option<String>) -> JsValue {
    value.as_deref().map_or(JsValue::NULL, JsValue::from_str)
}

/// A core value as D1 binds it.
fn bound(param: &Param) -> JsValue {
    match param {
        Param::Null => JsValue::NULL,
        Param::Text(text) => JsValue::from_str(text),
        Param::Number(number) => JsValue::from_f64(*number),
    }
}

thread_local! {
    /// The statements this isolate has sent to D1, for the logs (`bench/batch-worker.mjs`
    /// reads them to count the statements a batch's line costs).
    static STATEMENTS: Cell<u64> = const { Cell::new(0) };
}

/// How many statements this isolate has sent to D1.
pub fn statements_sent() -> u64 {
    STATEMENTS.with(Cell::get)
}

thread_local! {
    static ISOLATE: f64 = js_sys::Math::random();
}

/// A random number drawn once per isolate, to tell isolates apart in the logs.
pub fn isolate() -> u64 {
    ISOLATE.with(|r| (r * 1e6) as u64)
}

/// The statement, prepared and bound for D1.
pub fn prepare(db: &D1Database, statement: &Statement) -> worker::Result<D1PreparedStatement> {
    STATEMENTS.with(|n| n.set(n.get() + 1));
    let values: Vec<JsValue> = statement.params.iter().map(bound).collect();
    db.prepare(statement.sql.as_str()).bind(&values)
}

/// Runs `group` as one D1 batch (a transaction): the rows each statement returns.
pub async fn run_group(db: &D1Database, group: &Group) -> worker::Result<Vec<D1Result>> {
    let statements = group
        .iter()
        .map(|s| prepare(db, s))
        .collect::<worker::Result<Vec<_>>>()?;
    db.batch(statements).await
}

/// The rows `statement` returns.
pub async fn rows<T: DeserializeOwned>(
    db: &D1Database,
    statement: &Statement,
) -> worker::Result<Vec<T>> {
    prepare(db, statement)?.all().await?.results()
}

/// The first row `statement` returns, if any.
pub async fn first<T: DeserializeOwned>(
    db: &D1Database,
    statement: &Statement,
) -> worker::Result<Option<T>> {
    Ok(rows(db, statement).await?.into_iter().next())
}

/// The rows the last statement of a group's results returned.
pub fn last_rows<T: DeserializeOwned>(results: &[D1Result]) -> worker::Result<Vec<T>> {
    match results.last() {
        Some(result) => result.results(),
        None => Ok(Vec::new()),
    }
}

/// The most rows written in one D1 batch.
pub const MAX_ROWS_PER_WRITE: usize = 100;

/// How long the first row waits for company before it is written, in milliseconds: the
/// rows of the calls that end meanwhile go in the same D1 batch.
const GATHER_MS: f64 = 20.0;

/// How often a row that waits for a write looks again, in milliseconds: seldom, as every
/// look wakes its call (48 calls looking every 2 ms cost a busy isolate more than the
/// writes they saved).
const JOIN_POLL_MS: f64 = 25.0;

/// The longest a row waits for another call's write before it writes itself.
const JOIN_WAIT_MS: f64 = 500.0;

thread_local! {
    /// Rows not yet taken by a write, oldest first.
    static PENDING: RefCell<Vec<Record>> = const { RefCell::new(Vec::new()) };
    /// Whether a call is gathering rows or writing them.
    static LEADING: Cell<bool> = const { Cell::new(false) };
}

/// Marks a call as the one gathering and writing rows, for as long as it lives.
struct Lead;

impl Lead {
    fn start() -> Lead {
        LEADING.with(|l| l.set(true));
        Lead
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        LEADING.with(|l| l.set(false));
    }
}

fn pending(id: &str) -> bool {
    PENDING.with(|p| p.borrow().iter().any(|r| r.id == id))
}

/// Writes the waiting rows, oldest first, [`MAX_ROWS_PER_WRITE`] at a time, until row `id`
/// is written.
async fn write_through(db: &D1Database, id: &str) {
    while pending(id) {
        let rows: Vec<Record> = PENDING.with(|p| {
            let mut pending = p.borrow_mut();
            let n = pending.len().min(MAX_ROWS_PER_WRITE);
            pending.drain(..n).collect()
        });
        write_rows(db, &rows).await;
    }
}

/// Stores `record` (in `wait_until`): returns once it is written, logged as unwritable, or
/// taken by another call's write. The rows of the isolate's calls are written together: a
/// call that finds no other leading leads, waits [`GATHER_MS`] for company and writes every
/// row waiting (up to [`MAX_ROWS_PER_WRITE`] in one D1 batch); a call that finds one leading
/// looks again every [`JOIN_POLL_MS`] until its row is taken, or leads the next write once
/// the leader is done (writing at once, having waited), or, after [`JOIN_WAIT_MS`], writes
/// itself. A call never waits on another request's work, only on timers and writes of its
/// own (the runtime takes a call that waits on no I/O of its own for hung).
pub async fn insert(db: &D1Database, record: Record) {
    let id = record.id.clone();
    PENDING.with(|p| p.borrow_mut().push(record));
    let runtime = WasmRuntime;
    let mut waited = 0.0;
    loop {
        if !pending(&id) {
            return;
        }
        if !LEADING.with(Cell::get) {
            let _lead = Lead::start();
            if waited == 0.0 {
                runtime.sleep(GATHER_MS).await;
            }
            return write_through(db, &id).await;
        }
        if waited >= JOIN_WAIT_MS {
            return write_through(db, &id).await;
        }
        runtime.sleep(JOIN_POLL_MS).await;
        waited += JOIN_POLL_MS;
    }
}

/// Writes `records` as one D1 batch, retrying with backoff; should the batch keep failing,
/// each row on its own, so that one bad row costs no other. A row that cannot be written
/// after every attempt is logged whole (it holds no secret), never dropped silently.
async fn write_rows(db: &D1Database, records: &[Record]) {
    let group: Group = records.iter().map(Record::insert).collect();
    let described = || match records {
        [one] => format!("response {}", one.id),
        [first, ..] => format!("{} responses ({} and others)", records.len(), first.id),
        [] => String::new(),
    };
    let warn = |attempt: u32, e: &worker::Error| {
        console_warn!(
            "storing {} failed (attempt {}): {e}",
            described(),
            attempt + 1
        );
    };
    let written = with_backoff(&WasmRuntime, &WRITE_RETRY, || run_group(db, &group), warn).await;
    let Err(e) = written else {
        return;
    };
    if let [record] = records {
        let row = serde_json::to_string(record).unwrap_or_default();
        console_error!(
            "storing response {} failed for good, last: {e}; the row: {row}",
            record.id
        );
        return;
    }
    for record in records {
        Box::pin(write_rows(db, std::slice::from_ref(record))).await;
    }
}

const LIST_COLUMNS: &str =
    "id, created_at, provider, model, content, thinking, reasoning, finish_reason, \
     prompt_tokens, completion_tokens, total_tokens, response_time_ms, upstream_id, truncated, \
     batch_id, custom_id";

/// A page of stored responses, newest first, and the cursor of the next page.
pub async fn list(
    db: &D1Database,
    query: &ListQuery,
) -> worker::Result<(Vec<Value>, Option<String>)> {
    // The filters are bound; `?1 IS NULL` switches one off. Only the choice of tables
    // shapes the SQL text.
    let part = |table: &str, reason: &str, valid: u8| {
        format!(
            "SELECT {LIST_COLUMNS}, {reason} AS reason, {valid} AS valid FROM {table} \
             WHERE (?1 IS NULL OR id < ?1) AND (?2 IS NULL OR provider = ?2) AND (?3 IS NULL OR model = ?3)"
        )
    };
    let valid_part = part("responses", "NULL", 1);
    let invalid_part = part("invalid_responses", "reason", 0);
    let union = match query.valid {
        Some(true) => valid_part,
        Some(false) => invalid_part,
        None => format!("{valid_part} UNION ALL {invalid_part}"),
    };
    let sql = format!("{union} ORDER BY id DESC LIMIT ?4");
    let values = [
        text(&query.cursor),
        text(&query.provider),
        text(&query.model),
        JsValue::from_f64(f64::from(query.limit)),
    ];
    let rows: Vec<Value> = db.prepare(sql).bind(&values)?.all().await?.results()?;
    let rows: Vec<Value> = rows.into_iter().map(tidy).collect();
    let next = (rows.len() == query.limit as usize)
        .then(|| {
            rows.last()
                .and_then(|r| r["id"].as_str())
                .map(str::to_string)
        })
        .flatten();
    Ok((rows, next))
}

/// One stored response, valid or invalid, with its request.
pub async fn get(db: &D1Database, id: &str) -> worker::Result<Option<Value>> {
    for (table, reason, valid) in [("responses", "NULL", 1), ("invalid_responses", "reason", 0)] {
        let sql = format!("SELECT {LIST_COLUMNS}, request, {reason} AS reason, {valid} AS valid FROM {table} WHERE id = ?1");
        let row: Option<Value> = db
            .prepare(sql)
            .bind(&[JsValue::from_str(id)])?
            .first(None)
            .await?;
        if let Some(mut row) = row.map(tidy) {
            // The request is stored as JSON text; hand it back as JSON.
            if let Some(request) = row.get("request").and_then(Value::as_str) {
                if let Ok(parsed) = serde_json::from_str::<Value>(request) {
                    row["request"] = parsed;
                }
            }
            return Ok(Some(row));
        }
    }
    Ok(None)
}

/// SQLite's 0/1 as booleans.
fn tidy(row: Value) -> Value {
    let Value::Object(mut map) = row else {
        return row;
    };
    for key in ["valid", "truncated"] {
        if let Some(v) = map.get(key).and_then(Value::as_f64) {
            map.insert(key.to_string(), Value::Bool(v != 0.0));
        }
    }
    Value::Object(map)
}

//! The D1 store: one `INSERT` per answer (one round trip, bound parameters only), retried
//! with [`RetryPolicy`]'s backoff and logged when it keeps failing, and the reads behind
//! `GET /v1/responses`.
//!
//! What a row holds and where it goes is decided in [`crate::record`]; this module only
//! binds it to SQL. No user data is ever part of an SQL text.

use serde::de::DeserializeOwned;
use serde_json::Value;
use wasm_bindgen::JsValue;
use worker::{console_error, console_warn, D1Database, D1PreparedStatement, D1Result};

use crate::record::{ListQuery, Record};
use crate::retry::RetryPolicy;
use crate::runtime::Runtime;
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
    static STATEMENTS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many statements this isolate has sent to D1.
pub fn statements_sent() -> u64 {
    STATEMENTS.with(std::cell::Cell::get)
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

/// Writes `record` to its table, retrying with backoff; a row that cannot be written
/// after every attempt is logged whole (it holds no secret), never dropped silently.
pub async fn insert(db: &D1Database, record: &Record) {
    let statement = record.insert();
    let runtime = WasmRuntime;
    let mut attempt = 0;
    loop {
        let outcome = match prepare(db, &statement) {
            Ok(prepared) => prepared.run().await.map(|_| ()),
            Err(e) => Err(e),
        };
        let Err(e) = outcome else { return };
        match WRITE_RETRY.backoff(attempt, runtime.random()) {
            Some(delay) => {
                console_warn!(
                    "storing response {} failed (attempt {}): {e}",
                    record.id,
                    attempt + 1
                );
                runtime.sleep(delay).await;
                attempt += 1;
            }
            None => {
                let row = serde_json::to_string(record).unwrap_or_default();
                console_error!(
                    "storing response {} failed {} times, last: {e}; the row: {row}",
                    record.id,
                    attempt + 1
                );
                return;
            }
        }
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

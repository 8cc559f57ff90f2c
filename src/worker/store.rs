//! The D1 store: one `INSERT` per answer (one round trip, bound parameters only), retried
//! with [`RetryPolicy`]'s backoff and logged when it keeps failing, and the reads behind
//! `GET /v1/responses`.
//!
//! What a row holds and where it goes is decided in [`crate::record`]; this module only
//! binds it to SQL. No user data is ever part of an SQL text.

use serde_json::Value;
use wasm_bindgen::JsValue;
use worker::{console_error, console_warn, D1Database};

use crate::record::{ListQuery, Record};
use crate::retry::RetryPolicy;
use crate::runtime::Runtime;
use crate::wasm::WasmRuntime;

/// Retries of a row's write before giving up (and logging the row, so it can be
/// recovered): 3, after about 0.2, 0.4 and 0.8 s.
const WRITE_RETRY: RetryPolicy = RetryPolicy {
    max_retries: 3,
    base_delay_ms: 200.0,
    max_backoff_ms: 5_000.0,
    max_wait_ms: 5_000.0,
};

const COLUMNS: &str =
    "id, created_at, provider, model, request, content, thinking, reasoning, finish_reason, \
     prompt_tokens, completion_tokens, total_tokens, response_time_ms, upstream_id, truncated, \
     batch_id, custom_id";

fn text(value: &Option<String>) -> JsValue {
    value.as_deref().map_or(JsValue::NULL, JsValue::from_str)
}

// workers-rs binds integers as i32; token counts and times go as f64 (exact up to 2^53).
fn number(value: Option<u64>) -> JsValue {
    value.map_or(JsValue::NULL, |v| JsValue::from_f64(v as f64))
}

/// Writes `record` to its table, retrying with backoff; a row that cannot be written
/// after every attempt is logged whole (it holds no secret), never dropped silently.
pub async fn insert(db: &D1Database, record: &Record) {
    let mut values = vec![
        JsValue::from_str(&record.id),
        JsValue::from_f64(record.created_at),
        JsValue::from_str(&record.provider),
        JsValue::from_str(&record.model),
        JsValue::from_str(&record.request),
        JsValue::from_str(&record.content),
        text(&record.thinking),
        text(&record.reasoning),
        text(&record.finish_reason),
        number(record.prompt_tokens),
        number(record.completion_tokens),
        number(record.total_tokens),
        JsValue::from_f64(record.response_time_ms),
        text(&record.upstream_id),
        JsValue::from_f64(if record.truncated { 1.0 } else { 0.0 }),
        text(&record.batch_id),
        text(&record.custom_id),
    ];
    let reason = if record.is_valid() {
        ""
    } else {
        values.push(text(&record.invalid_reason));
        ", reason"
    };
    let placeholders: Vec<String> = (1..=values.len()).map(|i| format!("?{i}")).collect();
    let sql = format!(
        "INSERT INTO {} ({COLUMNS}{reason}) VALUES ({})",
        record.table(),
        placeholders.join(", ")
    );
    let runtime = WasmRuntime;
    let mut attempt = 0;
    loop {
        let outcome = match db.prepare(sql.as_str()).bind(&values) {
            Ok(statement) => statement.run().await.map(|_| ()),
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

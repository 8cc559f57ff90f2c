//! `GET /v1/export`: the stored answers as a JSONL download, oldest first, read from D1
//! page by page while the client takes the lines.
//!
//! Which rows, how each becomes a line and how many pages they take are the core's
//! ([`crate::export`]); this module binds the query to SQL and moves the bytes. First one
//! query counts the matching rows and their stored bytes and notes each table's last
//! `rowid`: the export is those rows (`x-export-rows`), whatever is stored meanwhile
//! (SQLite gives a new row a larger rowid than every existing one, and rows are never
//! deleted). Then each page reads the next rows by keyset (`id > ?cursor`, never OFFSET).
//!
//! How it stays within a deployed Worker's limits:
//! - Memory (128 MB an isolate): one page at a time, at most [`PAGE_ROWS`] rows and
//!   [`PAGE_BYTES`] of stored text past its first row (about 6 MB with rows at D1's 2 MB
//!   limit), and a page is read only once the client has taken the lines before it: the
//!   body is a pulled stream without a queue. Memory does not grow with the row count.
//! - D1 queries an invocation may make (1,000 on Workers Paid, 50 on Free): the count, then
//!   one a page, and [`READ_RETRIES`]. The count says before the first byte how many pages
//!   the export takes; one that needs more than `EXPORT_QUERY_BUDGET` (the var, default
//!   1,000: set 50 on Free) is a 400 saying to export it in parts by time.
//! - D1's 50 MB result and 30 s per query: a page's result is at most about 6 MB, and each
//!   page first picks its rows by their ids and sizes (`octet_length`, read from the
//!   record header without the text), starting at the cursor in the primary key's order.
//! - CPU time (30 s by default on Paid, up to 5 min with `limits.cpu_ms`; 10 ms on Free):
//!   about 30 µs a row of 2 kB under `wrangler dev` (its local D1 included), so 100,000
//!   rows take about 3 s and a million about 30 s: past that, raise `limits.cpu_ms` or
//!   export in parts. Waiting for D1 and for the client costs none.
//! - Subrequests: the D1 queries are the only ones.
//!
//! A client that hangs up cancels the body: no other page is read. Each export that runs to
//! its end logs one line (complete or failed), with the rows it left out and the isolate's
//! WebAssembly memory. (workerd drops what a cancelled request logs: a hang-up is not
//! logged.)

use std::collections::VecDeque;

use futures_util::stream;
use serde::Deserialize;
use wasm_bindgen::JsValue;
use worker::{
    console_error, console_log, console_warn, D1Database, Env, Headers, Request, Response,
};

use super::http::query_pairs;
use super::setup::{database, database_error};
use crate::export::{
    cut_short_codes, query_budget, write_line, ExportOptions, ExportPlan, ExportQuery, ExportRow,
    CHUNK_BYTES, PAGE_BYTES, PAGE_ROWS, READ_RETRIES, TOKEN_LIMIT,
};
use crate::openai_api::ApiError;
use crate::retry::RetryPolicy;
use crate::runtime::Runtime;
use crate::wasm::WasmRuntime;

/// The var that overrides [`crate::export::DEFAULT_QUERY_BUDGET`].
const BUDGET_VAR: &str = "EXPORT_QUERY_BUDGET";

/// The stored bytes of a row that a page holds: read from SQLite's record header, not by
/// loading the text (`octet_length`, SQLite 3.43+, as D1 and local workerd have it).
const SIZE: &str =
    "octet_length(request) + octet_length(content) + COALESCE(octet_length(thinking), 0)";

/// The columns an [`ExportRow`] reads (`invalid_reason` is added per table).
const COLUMNS: &str = "id, created_at, provider, model, request, content, thinking, \
     finish_reason, prompt_tokens, completion_tokens, total_tokens, truncated, batch_id, custom_id";

/// Backoff between tries of a failed page read.
const READ_RETRY: RetryPolicy = RetryPolicy {
    max_retries: READ_RETRIES as u32,
    base_delay_ms: 200.0,
    max_backoff_ms: 2_000.0,
    max_wait_ms: 2_000.0,
};

/// `GET /v1/export?format&reasoning&valid&provider&model&batch_id&since&until&finish_reason&include_incomplete`.
pub async fn export(request: &Request, env: &Env) -> Result<Response, ApiError> {
    let pairs = query_pairs(request)?;
    let query = ExportQuery::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let budget = query_budget(env.var(BUDGET_VAR).ok().map(|v| v.to_string()).as_deref())
        .map_err(|e| ApiError::new(500, "server_error", "configuration_error", e))?;
    let db = database(env)?;
    let sources = Source::of(&query);
    let (plan, snapshots) = count(&db, &query, &sources).await.map_err(database_error)?;
    plan.check(budget)?;

    let headers = Headers::new();
    let _ = headers.set("content-type", "application/x-ndjson; charset=utf-8");
    let filename = query.filename(WasmRuntime.now_ms());
    let _ = headers.set(
        "content-disposition",
        &format!("attachment; filename=\"{filename}\""),
    );
    let _ = headers.set("x-export-rows", &plan.rows.to_string());
    let _ = headers.set("cache-control", "no-store");

    let (sql, values, cursor_at) = page_statement(&query, &sources, &snapshots);
    let reading = Reading {
        db,
        sql,
        values,
        cursor_at,
        cursor: query.first_cursor(),
        options: query.options,
        plan,
        page: VecDeque::new(),
        read: 0,
        pages: 0,
        lines: 0,
        left_out: 0,
        first_left_out: None,
        retries_left: READ_RETRIES,
        ended: false,
    };
    let body = stream::unfold(reading, |mut reading| async move {
        let chunk = reading.next_chunk().await?;
        Some((chunk, reading))
    });
    Response::from_stream(body)
        .map(|r| r.with_headers(headers))
        .map_err(|e| ApiError::new(500, "server_error", "internal_error", e.to_string()))
}

/// A table the export reads, and what its rows say of their validity.
struct Source {
    table: &'static str,
    /// The SQL of the row's `invalid_reason`.
    reason: &'static str,
}

impl Source {
    fn of(query: &ExportQuery) -> Vec<Source> {
        let mut sources = Vec::new();
        if query.valid.reads_valid() {
            sources.push(Source {
                table: "responses",
                reason: "NULL",
            });
        }
        if query.valid.reads_invalid() {
            sources.push(Source {
                table: "invalid_responses",
                reason: "reason",
            });
        }
        sources
    }
}

/// SQL text with numbered parameters; values are only ever bound, never part of the text.
#[derive(Default)]
struct Parameters(Vec<JsValue>);

impl Parameters {
    /// Binds `value`; returns its placeholder.
    fn bind(&mut self, value: JsValue) -> String {
        self.0.push(value);
        format!("?{}", self.0.len())
    }

    fn text(&mut self, value: &str) -> String {
        self.bind(JsValue::from_str(value))
    }
}

/// The conditions of the query's filters on `source`, their values bound into `p` (each
/// once: both tables' parts reuse the placeholders). Only the filters given shape the SQL.
struct Conditions {
    common: Vec<String>,
    /// The condition that leaves out rows whose stored reason says they were cut short
    /// (only `invalid_responses` has reasons).
    cut_short: Option<String>,
}

impl Conditions {
    fn new(query: &ExportQuery, p: &mut Parameters) -> Conditions {
        let mut common = Vec::new();
        for (column, value) in [
            ("provider", &query.provider),
            ("model", &query.model),
            ("batch_id", &query.batch_id),
            ("finish_reason", &query.finish_reason),
        ] {
            if let Some(value) = value {
                common.push(format!("{column} = {}", p.text(value)));
            }
        }
        // Times bound the ids too (ids begin with their time): the primary key's order
        // then starts and stops where the times do. The exact times are checked as well.
        if let Some(since) = query.since_ms {
            common.push(format!("created_at >= {}", p.bind(since.into())));
        }
        if let Some(until) = query.until_ms {
            common.push(format!("created_at < {}", p.bind(until.into())));
        }
        if let Some(limit) = query.id_limit() {
            common.push(format!("id < {}", p.text(&limit)));
        }
        // Incomplete rows, by the rule of `ExportRow::incomplete`.
        let mut cut_short = None;
        if query.options.leaves_out_incomplete() {
            common.push("truncated = 0".to_string());
            common.push(format!("finish_reason IS NOT {}", p.text(TOKEN_LIMIT)));
            // Bound only when used: D1 refuses a statement with more values than
            // placeholders.
            if query.valid.reads_invalid() {
                let codes: Vec<String> = cut_short_codes().iter().map(|c| p.text(c)).collect();
                cut_short = Some(format!(
                    "substr(reason, 1, instr(reason, ':') - 1) NOT IN ({})",
                    codes.join(", ")
                ));
            }
        }
        Conditions { common, cut_short }
    }

    /// `WHERE …` for `source`, with `more` first.
    fn clause(&self, source: &Source, more: &[String]) -> String {
        let mut all: Vec<&str> = more.iter().map(String::as_str).collect();
        all.extend(self.common.iter().map(String::as_str));
        if source.reason != "NULL" {
            all.extend(self.cut_short.as_deref());
        }
        if all.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", all.join(" AND "))
        }
    }
}

#[derive(Deserialize)]
struct Counted {
    source: String,
    matched: u64,
    bytes: u64,
    last_rowid: u64,
}

/// What the export will read, and each source's last rowid at that moment.
async fn count(
    db: &D1Database,
    query: &ExportQuery,
    sources: &[Source],
) -> worker::Result<(ExportPlan, Vec<u64>)> {
    let mut p = Parameters::default();
    let conditions = Conditions::new(query, &mut p);
    let start = query
        .since_ms
        .map(|_| vec![format!("id > {}", p.text(&query.first_cursor()))])
        .unwrap_or_default();
    let parts: Vec<String> = sources
        .iter()
        .map(|s| {
            format!(
                "SELECT '{table}' AS source, COUNT(*) AS matched, COALESCE(SUM({SIZE}), 0) AS bytes, \
                 (SELECT COALESCE(MAX(rowid), 0) FROM {table}) AS last_rowid FROM {table}{clause}",
                table = s.table,
                clause = conditions.clause(s, &start),
            )
        })
        .collect();
    let counted: Vec<Counted> = db
        .prepare(parts.join(" UNION ALL "))
        .bind(&p.0)?
        .all()
        .await?
        .results()?;
    let mut plan = ExportPlan::default();
    let mut snapshots = Vec::new();
    for source in sources {
        let found = counted.iter().find(|c| c.source == source.table);
        let (matched, bytes, last) =
            found.map_or((0, 0, 0), |c| (c.matched, c.bytes, c.last_rowid));
        plan.rows += matched;
        plan.bytes += bytes;
        snapshots.push(last);
    }
    Ok((plan, snapshots))
}

/// The statement of a page: the next rows after the cursor (the value at `cursor_at`),
/// at most [`PAGE_ROWS`] of them, and no more past the first than make [`PAGE_BYTES`].
/// Rows are picked by their ids and sizes, then read whole by id.
fn page_statement(
    query: &ExportQuery,
    sources: &[Source],
    snapshots: &[u64],
) -> (String, Vec<JsValue>, usize) {
    let mut p = Parameters::default();
    let cursor = p.text("");
    let cursor_at = 0;
    let conditions = Conditions::new(query, &mut p);
    let candidates: Vec<String> = sources
        .iter()
        .zip(snapshots)
        .map(|(s, &last)| {
            let bounds = [
                format!("rowid <= {}", p.bind(JsValue::from_f64(last as f64))),
                format!("id > {cursor}"),
            ];
            format!(
                "SELECT id, {SIZE} AS size FROM {}{}",
                s.table,
                conditions.clause(s, &bounds)
            )
        })
        .collect();
    let rows: Vec<String> = sources
        .iter()
        .map(|s| {
            format!(
                "SELECT {COLUMNS}, {} AS invalid_reason FROM {} WHERE id IN page",
                s.reason, s.table
            )
        })
        .collect();
    let sql = format!(
        "WITH candidates AS ({} ORDER BY id LIMIT {PAGE_ROWS}), \
         page AS (SELECT id FROM (SELECT id, size, SUM(size) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) AS upto FROM candidates) \
         WHERE upto - size < {PAGE_BYTES}) \
         {} ORDER BY id",
        candidates.join(" UNION ALL "),
        rows.join(" UNION ALL "),
    );
    (sql, p.0, cursor_at)
}

/// The state of an export's body between pulls.
struct Reading {
    db: D1Database,
    sql: String,
    values: Vec<JsValue>,
    /// Where the cursor's value is in `values`.
    cursor_at: usize,
    /// The last id read.
    cursor: String,
    options: ExportOptions,
    plan: ExportPlan,
    /// The page being written out.
    page: VecDeque<ExportRow>,
    /// Rows read so far.
    read: u64,
    pages: u64,
    lines: u64,
    left_out: u64,
    first_left_out: Option<String>,
    retries_left: u64,
    ended: bool,
}

impl Reading {
    /// The next chunk of lines (about [`CHUNK_BYTES`]), an error that ends the body (the
    /// client sees it cut, never a complete-looking file), or `None` at the end.
    async fn next_chunk(&mut self) -> Option<worker::Result<Vec<u8>>> {
        if self.ended {
            return None;
        }
        let mut chunk = Vec::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 4);
        loop {
            while let Some(row) = self.page.pop_front() {
                if let Err(skip) = write_line(&row, &self.options, &mut chunk) {
                    self.left_out += 1;
                    if self.first_left_out.is_none() {
                        let id = row.id.as_deref().unwrap_or("?");
                        self.first_left_out = Some(format!("{id}: {skip}"));
                    }
                } else {
                    self.lines += 1;
                }
                if chunk.len() >= CHUNK_BYTES {
                    return Some(Ok(chunk));
                }
            }
            if self.read >= self.plan.rows {
                break;
            }
            match self.next_page().await {
                Ok(true) => {}
                // Fewer rows than counted: none was deleted, so this cannot happen; end.
                Ok(false) => break,
                Err(error) => {
                    self.finish(Some(&error.to_string()));
                    return Some(Err(error));
                }
            }
        }
        self.finish(None);
        (!chunk.is_empty()).then_some(Ok(chunk))
    }

    /// Reads the page after the cursor (retrying a failure); `false` when it is empty.
    async fn next_page(&mut self) -> worker::Result<bool> {
        self.values[self.cursor_at] = JsValue::from_str(&self.cursor);
        let mut attempt = 0;
        let rows = loop {
            let result = match self.db.prepare(self.sql.as_str()).bind(&self.values) {
                Ok(statement) => match statement.all().await {
                    Ok(result) => result.results::<ExportRow>(),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match result {
                Ok(rows) => break rows,
                Err(error) if self.retries_left > 0 => {
                    let Some(delay) = READ_RETRY.backoff(attempt, WasmRuntime.random()) else {
                        return Err(error);
                    };
                    console_warn!(
                        "export: reading a page failed (attempt {}): {error}",
                        attempt + 1
                    );
                    self.retries_left -= 1;
                    attempt += 1;
                    WasmRuntime.sleep(delay).await;
                }
                Err(error) => return Err(error),
            }
        };
        self.pages += 1;
        let Some(last) = rows.last().and_then(|r| r.id.clone()) else {
            return Ok(false);
        };
        self.cursor = last;
        self.read += rows.len() as u64;
        self.page = rows.into();
        Ok(true)
    }

    /// Ends the export and logs how: complete, or the failure that cut it.
    fn finish(&mut self, failure: Option<&str>) {
        self.ended = true;
        let left_out = match &self.first_left_out {
            Some(first) => format!(", {} left out (the first: {first})", self.left_out),
            None => String::new(),
        };
        let line = format!(
            "export {}: {} lines from {} of {} rows in {} pages{left_out}",
            self.options.format.name(),
            self.lines,
            self.read,
            self.plan.rows,
            self.pages,
        );
        let memory = format!(
            "WebAssembly memory {:.1} MB",
            wasm_memory_bytes() as f64 / 1e6
        );
        match failure {
            Some(error) => console_error!("{line}; failed: {error}; {memory}"),
            None => console_log!("{line}; complete; {memory}"),
        }
    }
}

/// The isolate's WebAssembly memory, in bytes: the most it ever needed at once, as a
/// WebAssembly memory grows and never shrinks.
fn wasm_memory_bytes() -> usize {
    #[cfg(target_arch = "wasm32")]
    return core::arch::wasm32::memory_size(0) * 65_536;
    #[cfg(not(target_arch = "wasm32"))]
    return 0;
}

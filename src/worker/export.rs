//! `GET /v1/export`: the stored answers as a JSONL download, oldest first, read from D1
//! page by page while the client takes the lines.
//!
//! Which rows, how each becomes a line, how many pages they take and the statements that
//! read them are the core's ([`crate::export`], [`crate::export::sql`]); this module runs
//! them on D1 and moves the bytes. First one query counts the matching rows and their stored bytes and notes each table's last
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
use worker::{
    console_error, console_log, console_warn, D1Database, Env, Headers, Request, Response,
};

use super::http::query_pairs;
use super::setup::{database, database_error};
use super::store::rows;
use crate::export::sql::{self, Counted, Page};
use crate::export::{
    query_budget, write_line, ExportOptions, ExportPlan, ExportQuery, ExportRow, CHUNK_BYTES,
    READ_RETRIES,
};
use crate::openai_api::ApiError;
use crate::retry::RetryPolicy;
use crate::runtime::{with_backoff, Runtime};
use crate::wasm::WasmRuntime;

/// The var that overrides [`crate::export::DEFAULT_QUERY_BUDGET`].
const BUDGET_VAR: &str = "EXPORT_QUERY_BUDGET";

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
    let counted = rows::<Counted>(&db, &sql::count(&query))
        .await
        .map_err(database_error)?;
    let (plan, snapshots) = sql::plan(&query, &counted);
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

    let reading = Reading {
        db,
        page_statement: sql::page(&query, &snapshots),
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

/// The state of an export's body between pulls.
struct Reading {
    db: D1Database,
    page_statement: Page,
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
        let statement = self.page_statement.after(&self.cursor);
        // What is left of the export's retries, however many pages used them before.
        let policy = RetryPolicy {
            max_retries: u32::try_from(self.retries_left).unwrap_or(u32::MAX),
            ..READ_RETRY
        };
        let retries_left = &mut self.retries_left;
        let warn = |attempt: u32, error: &worker::Error| {
            console_warn!(
                "export: reading a page failed (attempt {}): {error}",
                attempt + 1
            );
            *retries_left -= 1;
        };
        let db = &self.db;
        let rows = with_backoff(
            &WasmRuntime,
            &policy,
            || rows::<ExportRow>(db, statement),
            warn,
        )
        .await?;
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

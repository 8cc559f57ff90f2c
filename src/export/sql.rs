//! The statements of `GET /v1/export` (see the module docs of [`super`] and of the
//! Worker's `worker/export.rs`): one that counts what the export will read and notes each
//! table's last `rowid`, then one page after another by keyset (`id > ?cursor`, never
//! OFFSET), within those rowids. The Worker binds and runs them on D1; `tests/export.rs`
//! runs them on SQLite with the migrations.
//!
//! Only the filters given and the tables read shape the SQL text; every value is bound.

use serde::Deserialize;

use super::{cut_short_codes, ExportPlan, ExportQuery, PAGE_BYTES, PAGE_ROWS, TOKEN_LIMIT};
use crate::sql::{Param, Statement};

/// The stored bytes of a row that a page holds: read from SQLite's record header, not by
/// loading the text (`octet_length`, SQLite 3.43+, as D1 and local workerd have it).
const SIZE: &str =
    "octet_length(request) + octet_length(content) + COALESCE(octet_length(thinking), 0)";

/// The columns an [`super::ExportRow`] reads (`invalid_reason` is added per table).
const COLUMNS: &str = "id, created_at, provider, model, request, content, thinking, \
     finish_reason, prompt_tokens, completion_tokens, total_tokens, truncated, batch_id, custom_id";

/// What [`count`] found of one table.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Counted {
    /// The table.
    pub source: String,
    /// The rows that match.
    pub matched: u64,
    /// Their stored bytes ([`SIZE`]).
    pub bytes: u64,
    /// The table's largest rowid when counted: the export reads no row stored after it.
    pub last_rowid: u64,
}

/// The statement that plans an export: for each table it reads, the rows that match, their
/// stored bytes and the table's last rowid ([`Counted`] rows, for [`plan`]).
pub fn count(query: &ExportQuery) -> Statement {
    let mut bound = Bindings::default();
    let conditions = Conditions::new(query, &mut bound);
    let start = query
        .since_ms
        .map(|_| vec![format!("id > {}", bound.bind(query.first_cursor()))])
        .unwrap_or_default();
    let parts: Vec<String> = Source::of(query)
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
    Statement::new(parts.join(" UNION ALL "), bound.0)
}

/// What the export will read, from the rows of [`count`], and each table's last rowid at
/// that moment, in the order [`page`] takes them.
pub fn plan(query: &ExportQuery, counted: &[Counted]) -> (ExportPlan, Vec<u64>) {
    let mut plan = ExportPlan::default();
    let mut snapshots = Vec::new();
    for source in Source::of(query) {
        let found = counted.iter().find(|c| c.source == source.table);
        let (matched, bytes, last) =
            found.map_or((0, 0, 0), |c| (c.matched, c.bytes, c.last_rowid));
        plan.rows += matched;
        plan.bytes += bytes;
        snapshots.push(last);
    }
    (plan, snapshots)
}

/// The statement of an export's pages, read again and again with the next cursor.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    /// The cursor is its first value (`?1`).
    statement: Statement,
}

impl Page {
    /// The statement of the page after `cursor` (an id; empty for the first page).
    pub fn after(&mut self, cursor: &str) -> &Statement {
        self.statement.params[0] = Param::from(cursor);
        &self.statement
    }
}

/// The pages of an export within `snapshots` (from [`plan`]): the next rows after the
/// cursor in id order, at most [`PAGE_ROWS`] of them, and no more past the first than make
/// [`PAGE_BYTES`]. Rows are picked by their ids and sizes, then read whole by id.
pub fn page(query: &ExportQuery, snapshots: &[u64]) -> Page {
    let mut bound = Bindings::default();
    let cursor = bound.bind("");
    let conditions = Conditions::new(query, &mut bound);
    let sources = Source::of(query);
    let candidates: Vec<String> = sources
        .iter()
        .zip(snapshots)
        .map(|(s, &last)| {
            let bounds = [
                format!("rowid <= {}", bound.bind(last)),
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
    Page {
        statement: Statement::new(sql, bound.0),
    }
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

/// The values bound so far, `?1` first.
#[derive(Default)]
struct Bindings(Vec<Param>);

impl Bindings {
    /// Binds `value`; returns its placeholder.
    fn bind(&mut self, value: impl Into<Param>) -> String {
        self.0.push(value.into());
        format!("?{}", self.0.len())
    }
}

/// The conditions of the query's filters, their values bound (each once: both tables'
/// parts reuse the placeholders). Only the filters given shape the SQL.
struct Conditions {
    common: Vec<String>,
    /// The condition that leaves out rows whose stored reason says they were cut short
    /// (only `invalid_responses` has reasons).
    cut_short: Option<String>,
}

impl Conditions {
    fn new(query: &ExportQuery, bound: &mut Bindings) -> Conditions {
        let mut common = Vec::new();
        for (column, value) in [
            ("provider", &query.provider),
            ("model", &query.model),
            ("batch_id", &query.batch_id),
            ("finish_reason", &query.finish_reason),
        ] {
            if let Some(value) = value {
                common.push(format!("{column} = {}", bound.bind(value)));
            }
        }
        // Times bound the ids too (ids begin with their time): the primary key's order
        // then starts and stops where the times do. The exact times are checked as well.
        if let Some(since) = query.since_ms {
            common.push(format!("created_at >= {}", bound.bind(since)));
        }
        if let Some(until) = query.until_ms {
            common.push(format!("created_at < {}", bound.bind(until)));
        }
        if let Some(limit) = query.id_limit() {
            common.push(format!("id < {}", bound.bind(limit)));
        }
        // Incomplete rows, by the rule of `ExportRow::incomplete`.
        let mut cut_short = None;
        if query.options.leaves_out_incomplete() {
            common.push("truncated = 0".to_string());
            common.push(format!("finish_reason IS NOT {}", bound.bind(TOKEN_LIMIT)));
            // Bound only when used: D1 refuses a statement with more values than
            // placeholders.
            if query.valid.reads_invalid() {
                let codes: Vec<String> = cut_short_codes().iter().map(|c| bound.bind(*c)).collect();
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

//! Every statement that stores files and batches and moves a batch's lines through their
//! states (see the module docs of [`super`]). The Worker binds and runs them on D1, a
//! [`Group`] as one D1 batch (a transaction); `tests/batch.rs` runs them on SQLite with the
//! migrations, delivery by delivery.
//!
//! Times: `now_ms` in milliseconds for claims and progress, `now_s` in seconds for the
//! objects' `*_at` fields, as OpenAI gives them.

use super::{BatchError, FEED_WINDOW, FILE_PART_BYTES};
use crate::sql::{Group, Param, Statement};

/// Stores an uploaded input file: its row and its bytes in parts.
pub fn insert_file(id: &str, filename: &str, text: &str, requests: usize, now_s: f64) -> Group {
    let mut group = vec![Statement::new(
        "INSERT INTO files (id, purpose, filename, bytes, created_at, requests) VALUES (?1, 'batch', ?2, ?3, ?4, ?5)",
        vec![id.into(), filename.into(), text.len().into(), now_s.into(), requests.into()],
    )];
    for (seq, part) in parts(text).enumerate() {
        group.push(Statement::new(
            "INSERT INTO file_parts (file_id, seq, data) VALUES (?1, ?2, ?3)",
            vec![id.into(), seq.into(), part.into()],
        ));
    }
    group
}

/// `text` in parts of at most [`FILE_PART_BYTES`], cut at character boundaries.
fn parts(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(FILE_PART_BYTES);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (part, after) = rest.split_at(end);
        rest = after;
        Some(part)
    })
}

/// The columns of a file as [`super::FileRow`] reads them.
const FILE_COLUMNS: &str = "id, purpose, filename, bytes, created_at, batch_id, kind";

/// One file.
pub fn get_file(id: &str) -> Statement {
    Statement::new(
        format!("SELECT {FILE_COLUMNS} FROM files WHERE id = ?1"),
        vec![id.into()],
    )
}

/// A page of files (one more than `limit`, to tell whether there are more), newest first or
/// oldest first, of one purpose or all, after file `after`.
pub fn list_files(
    after: Option<&str>,
    limit: u32,
    ascending: bool,
    purpose: Option<&str>,
) -> Statement {
    let (compare, order) = if ascending {
        (">", "ASC")
    } else {
        ("<", "DESC")
    };
    Statement::new(
        format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE (?1 IS NULL OR id {compare} ?1) AND (?2 IS NULL OR purpose = ?2) \
             ORDER BY id {order} LIMIT ?3"
        ),
        vec![after.into(), purpose.into(), (u64::from(limit) + 1).into()],
    )
}

/// The parts of an input file after part `after` (`-1` for the first), at most `limit`.
pub fn file_parts(id: &str, after: i64, limit: u32) -> Statement {
    Statement::new(
        "SELECT seq, data FROM file_parts WHERE file_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        vec![
            id.into(),
            Param::Number(after as f64),
            u64::from(limit).into(),
        ],
    )
}

/// The lines of an output (`done`) or error (`failed`) file after line `after`, at most
/// `limit`.
pub fn output_lines(batch: &str, state: &str, after: u64, limit: u32) -> Statement {
    Statement::new(
        "SELECT line, output FROM batch_items WHERE batch_id = ?1 AND state = ?2 AND line > ?3 ORDER BY line LIMIT ?4",
        vec![batch.into(), state.into(), after.into(), u64::from(limit).into()],
    )
}

/// Deletes a file (an input's parts with it); the batch that wrote an output keeps its lines.
pub fn delete_file(id: &str) -> Group {
    vec![
        Statement::new("DELETE FROM file_parts WHERE file_id = ?1", vec![id.into()]),
        Statement::new("DELETE FROM files WHERE id = ?1", vec![id.into()]),
    ]
}

/// The columns of a batch as [`super::BatchRow`] reads them.
const BATCH_COLUMNS: &str =
    "id, endpoint, input_file_id, completion_window, status, metadata, errors, \
     output_file_id, error_file_id, created_at, in_progress_at, expires_at, finalizing_at, \
     completed_at, failed_at, cancelling_at, cancelled_at, expired_at, total, completed, failed, progressed_at";

/// One batch.
pub fn get_batch(id: &str) -> Statement {
    Statement::new(
        format!("SELECT {BATCH_COLUMNS} FROM batches WHERE id = ?1"),
        vec![id.into()],
    )
}

/// A page of batches, newest first, after batch `after` (one more than `limit`).
pub fn list_batches(after: Option<&str>, limit: u32) -> Statement {
    Statement::new(
        format!("SELECT {BATCH_COLUMNS} FROM batches WHERE (?1 IS NULL OR id < ?1) ORDER BY id DESC LIMIT ?2"),
        vec![after.into(), (u64::from(limit) + 1).into()],
    )
}

/// A batch whose file failed validation: `failed` at once, with the faults.
pub fn insert_failed_batch(
    id: &str,
    input_file_id: &str,
    metadata: Option<&str>,
    errors: &[BatchError],
    now_s: f64,
) -> Statement {
    let errors = serde_json::to_string(errors).unwrap_or_else(|_| "[]".into());
    Statement::new(
        "INSERT INTO batches (id, endpoint, input_file_id, completion_window, status, metadata, errors, created_at, failed_at) \
         VALUES (?1, ?2, ?3, ?4, 'failed', ?5, ?6, ?7, ?7)",
        vec![
            id.into(),
            super::ENDPOINT.into(),
            input_file_id.into(),
            super::COMPLETION_WINDOW.into(),
            metadata.into(),
            errors.into(),
            now_s.into(),
        ],
    )
}

/// A batch of `total` lines, in progress from now, its lines inserted by [`insert_items`].
pub fn insert_batch(
    id: &str,
    input_file_id: &str,
    metadata: Option<&str>,
    total: usize,
    now_s: f64,
    now_ms: f64,
) -> Statement {
    Statement::new(
        "INSERT INTO batches (id, endpoint, input_file_id, completion_window, status, metadata, created_at, in_progress_at, \
         expires_at, total, progressed_at) VALUES (?1, ?2, ?3, ?4, 'in_progress', ?5, ?6, ?6, ?7, ?8, ?9)",
        vec![
            id.into(),
            super::ENDPOINT.into(),
            input_file_id.into(),
            super::COMPLETION_WINDOW.into(),
            metadata.into(),
            now_s.into(),
            (now_s + super::WINDOW_S as f64).into(),
            total.into(),
            now_ms.into(),
        ],
    )
}

/// How many lines one statement of [`insert_items`] inserts: 4 values each, within D1's
/// 100 bound values.
const ITEMS_PER_STATEMENT: usize = 24;

/// The lines of batch `id` (`(line, custom_id, body)`), pending.
pub fn insert_items<'a>(
    id: &str,
    lines: impl IntoIterator<Item = (u64, &'a str, &'a str)>,
) -> Vec<Statement> {
    let lines: Vec<(u64, &str, &str)> = lines.into_iter().collect();
    lines
        .chunks(ITEMS_PER_STATEMENT)
        .map(|chunk| {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| {
                    format!(
                        "(?{}, ?{}, ?{}, ?{}, 'pending')",
                        4 * i + 1,
                        4 * i + 2,
                        4 * i + 3,
                        4 * i + 4
                    )
                })
                .collect();
            let params = chunk
                .iter()
                .flat_map(|(line, custom_id, body)| {
                    [
                        id.into(),
                        (*line).into(),
                        (*custom_id).into(),
                        (*body).into(),
                    ]
                })
                .collect();
            Statement::new(
                format!(
                    "INSERT INTO batch_items (batch_id, line, custom_id, request, state) VALUES {}",
                    rows.join(", ")
                ),
                params,
            )
        })
        .collect()
}

/// Queues the next pending lines of batch `id`, so that at most [`FEED_WINDOW`] are
/// queued or running, while the batch is in progress: the lines to send a message for.
pub fn feed(id: &str, now_ms: f64) -> Statement {
    Statement::new(
        "UPDATE batch_items SET state = 'queued', claimed_at = ?2 WHERE batch_id = ?1 AND line IN ( \
           SELECT line FROM batch_items WHERE batch_id = ?1 AND state = 'pending' ORDER BY line \
           LIMIT MAX(0, ?3 - (SELECT COUNT(*) FROM batch_items WHERE batch_id = ?1 AND state IN ('queued', 'running')))) \
         AND EXISTS (SELECT 1 FROM batches WHERE id = ?1 AND status = 'in_progress') \
         RETURNING line",
        vec![id.into(), now_ms.into(), FEED_WINDOW.into()],
    )
}

/// A delivery claims line `line` of batch `id`: it runs it when the line is queued, or
/// running under a claim older than the lease (its run died), and the batch is in
/// progress. Returns the attempt, the custom_id and the body; no row: nothing to do.
pub fn claim(id: &str, line: u64, now_ms: f64) -> Statement {
    Statement::new(
        "UPDATE batch_items SET state = 'running', attempt = attempt + 1, claimed_at = ?3 \
         WHERE batch_id = ?1 AND line = ?2 AND (state = 'queued' OR (state = 'running' AND claimed_at < ?4)) \
         AND EXISTS (SELECT 1 FROM batches WHERE id = ?1 AND status = 'in_progress') \
         RETURNING attempt, custom_id, request",
        vec![id.into(), line.into(), now_ms.into(), (now_ms - super::CLAIM_LEASE_MS).into()],
    )
}

/// A run keeps the claims of the lines it works on (`(line, attempt)`) fresh.
pub fn keep_claims(id: &str, lines: &[(u64, u64)], now_ms: f64) -> Vec<Statement> {
    lines
        .iter()
        .map(|(line, attempt)| {
            Statement::new(
                "UPDATE batch_items SET claimed_at = ?4 WHERE batch_id = ?1 AND line = ?2 AND attempt = ?3 AND state = 'running'",
                vec![id.into(), (*line).into(), (*attempt).into(), now_ms.into()],
            )
        })
        .collect()
}

/// How a run ended.
pub enum Ended<'a> {
    /// Answered: the stored row's statement (from
    /// [`crate::record::Record::insert_if_running`]), its id, and the output line.
    Answered(Statement, &'a str, &'a str),
    /// No answer for good: the stored row's statement and id when something was sent, and
    /// the error line.
    Failed(Option<(Statement, &'a str)>, &'a str),
}

/// The end of a run of line `line` under `attempt`, as one transaction: the stored row, the
/// line `done` (or `failed`) with its output line, the batch's count, only while the line
/// is still running under this attempt. The last statement returns the batch's counts and
/// status (see [`Progress`]) when this run counted, no row when it had lost its claim.
pub fn finish(id: &str, line: u64, attempt: u64, ended: Ended<'_>, now_ms: f64) -> Group {
    let (stored, state, counter, response_id, output) = match ended {
        Ended::Answered(insert, response_id, output) => {
            (Some(insert), "done", "completed", Some(response_id), output)
        }
        Ended::Failed(stored, output) => {
            let (insert, response_id) = stored.map_or((None, None), |(s, id)| (Some(s), Some(id)));
            (insert, "failed", "failed", response_id, output)
        }
    };
    let mut group: Group = stored.into_iter().collect();
    group.push(Statement::new(
        "UPDATE batch_items SET state = ?4, response_id = ?5, output = ?6 \
         WHERE batch_id = ?1 AND line = ?2 AND attempt = ?3 AND state = 'running'",
        vec![
            id.into(),
            line.into(),
            attempt.into(),
            state.into(),
            response_id.into(),
            output.into(),
        ],
    ));
    group.push(Statement::new(
        format!(
            "UPDATE batches SET {counter} = {counter} + 1, progressed_at = ?2 WHERE id = ?1 AND changes() = 1 \
             RETURNING total, completed, failed, cancelled, status"
        ),
        vec![id.into(), now_ms.into()],
    ));
    group
}

/// A batch's counts and status, as [`finish`], [`cancel`] and [`progress`] return them.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct Progress {
    /// Its lines.
    pub total: f64,
    /// Answered.
    pub completed: f64,
    /// Failed for good.
    pub failed: f64,
    /// Never started because of a cancel.
    pub cancelled: f64,
    /// Its status.
    pub status: String,
}

impl Progress {
    /// Whether every line has ended, so the batch can be finalized.
    pub fn finished(&self) -> bool {
        matches!(self.status.as_str(), "in_progress" | "cancelling")
            && self.completed + self.failed + self.cancelled >= self.total
    }
}

/// A batch's counts and status.
pub fn progress(id: &str) -> Statement {
    Statement::new(
        "SELECT total, completed, failed, cancelled, status FROM batches WHERE id = ?1",
        vec![id.into()],
    )
}

/// Finalizes batch `id` once every line has ended, as one transaction: its output file (if
/// any line was answered) and error file (if any failed), each a row whose bytes are its
/// lines' and whose lines are read from the items, and its final status: `completed`, or
/// `cancelled` after a cancel, `expired` after expiry. A batch not ready, or finalized
/// already (two runs ending together), is left as it is.
pub fn finalize(id: &str, output_file_id: &str, error_file_id: &str, now_s: f64) -> Group {
    let file = |file_id: &str, state: &str, kind: &str, name: &str| {
        Statement::new(
            "INSERT INTO files (id, purpose, filename, bytes, created_at, batch_id, kind) \
             SELECT ?1, 'batch_output', ?2, SUM(LENGTH(CAST(output AS BLOB)) + 1), ?3, ?4, ?5 \
             FROM batch_items WHERE batch_id = ?4 AND state = ?6 \
             AND EXISTS (SELECT 1 FROM batches WHERE id = ?4 AND status = 'finalizing' AND finalizing_at = ?3) \
             HAVING COUNT(*) > 0",
            vec![
                file_id.into(),
                format!("batch_{}_{name}.jsonl", id.trim_start_matches(super::BATCH_PREFIX)).into(),
                now_s.into(),
                id.into(),
                kind.into(),
                state.into(),
            ],
        )
    };
    vec![
        Statement::new(
            "UPDATE batches SET status = 'finalizing', finalizing_at = ?2 WHERE id = ?1 \
             AND status IN ('in_progress', 'cancelling') AND completed + failed + cancelled >= total",
            vec![id.into(), now_s.into()],
        ),
        file(output_file_id, "done", "output", "output"),
        file(error_file_id, "failed", "error", "error"),
        Statement::new(
            "UPDATE batches SET \
               status = CASE WHEN cancelling_at IS NOT NULL THEN 'cancelled' WHEN expired_at IS NOT NULL THEN 'expired' ELSE 'completed' END, \
               completed_at = CASE WHEN cancelling_at IS NULL AND expired_at IS NULL THEN ?2 END, \
               cancelled_at = CASE WHEN cancelling_at IS NOT NULL THEN ?2 END, \
               output_file_id = (SELECT id FROM files WHERE batch_id = ?1 AND kind = 'output'), \
               error_file_id = (SELECT id FROM files WHERE batch_id = ?1 AND kind = 'error') \
             WHERE id = ?1 AND status = 'finalizing' AND finalizing_at = ?2",
            vec![id.into(), now_s.into()],
        ),
    ]
}

/// Cancels batch `id`, as one transaction: `cancelling` (if it was in progress), its lines
/// not started `cancelled` and counted. Lines running finish and are kept. The last
/// statement returns the batch's counts and status.
pub fn cancel(id: &str, now_s: f64) -> Group {
    vec![
        Statement::new(
            "UPDATE batches SET status = 'cancelling', cancelling_at = ?2 WHERE id = ?1 AND status = 'in_progress'",
            vec![id.into(), now_s.into()],
        ),
        Statement::new(
            "UPDATE batch_items SET state = 'cancelled' WHERE batch_id = ?1 AND state IN ('pending', 'queued') \
             AND EXISTS (SELECT 1 FROM batches WHERE id = ?1 AND status = 'cancelling')",
            vec![id.into()],
        ),
        Statement::new(
            "UPDATE batches SET cancelled = cancelled + changes() WHERE id = ?1 \
             RETURNING total, completed, failed, cancelled, status",
            vec![id.into()],
        ),
    ]
}

/// A run of line `line` under `attempt` that stopped before it was sent, because the batch
/// was cancelled while the line waited for its turn: the line `cancelled` and counted, only
/// while it still runs under this attempt. Returns the counts and status when it counted.
pub fn cancel_line(id: &str, line: u64, attempt: u64) -> Group {
    vec![
        Statement::new(
            "UPDATE batch_items SET state = 'cancelled' WHERE batch_id = ?1 AND line = ?2 AND attempt = ?3 AND state = 'running'",
            vec![id.into(), line.into(), attempt.into()],
        ),
        Statement::new(
            "UPDATE batches SET cancelled = cancelled + 1 WHERE id = ?1 AND changes() = 1 \
             RETURNING total, completed, failed, cancelled, status",
            vec![id.into()],
        ),
    ]
}

/// Expires batch `id` once its window is over (`expires_at` ≤ now), as one transaction: its
/// lines not started fail with `batch_expired` (each error line made in SQL, in the shape
/// of [`super::error_line`]'s, with OpenAI's own message for it) and are counted; lines
/// running finish. The last statement returns the counts and status.
pub fn expire(id: &str, now_s: f64) -> Group {
    let hex_and_line = "'batch_req_' || substr(batch_id, 7) || '_' || line";
    vec![
        Statement::new(
            "UPDATE batches SET expired_at = ?2 WHERE id = ?1 AND status = 'in_progress' AND expires_at <= ?2 AND expired_at IS NULL",
            vec![id.into(), now_s.into()],
        ),
        Statement::new(
            format!(
                "UPDATE batch_items SET state = 'failed', output = json_object('id', {hex_and_line}, 'custom_id', custom_id, \
                 'response', json('null'), 'error', json_object('code', 'batch_expired', 'message', \
                 'This request could not be executed before the completion window expired.')) \
                 WHERE batch_id = ?1 AND state IN ('pending', 'queued') \
                 AND EXISTS (SELECT 1 FROM batches WHERE id = ?1 AND expired_at = ?2)"
            ),
            vec![id.into(), now_s.into()],
        ),
        Statement::new(
            "UPDATE batches SET failed = failed + changes() WHERE id = ?1 \
             RETURNING total, completed, failed, cancelled, status",
            vec![id.into()],
        ),
    ]
}

/// The batches still running, oldest first, at most `limit`: for [`recover`].
pub fn active_batches(limit: u32) -> Statement {
    Statement::new(
        "SELECT id FROM batches WHERE status IN ('in_progress', 'cancelling') ORDER BY id LIMIT ?1",
        vec![u64::from(limit).into()],
    )
}

/// Recovers batch `id`'s lines whose run died (running, the claim older than the lease):
/// queued again. The lines to send a message for are those [`requeue`] returns.
pub fn recover(id: &str, now_ms: f64) -> Statement {
    Statement::new(
        "UPDATE batch_items SET state = 'queued', claimed_at = ?2 WHERE batch_id = ?1 AND state = 'running' AND claimed_at < ?3 \
         AND EXISTS (SELECT 1 FROM batches WHERE id = ?1 AND status = 'in_progress')",
        vec![id.into(), now_ms.into(), (now_ms - super::CLAIM_LEASE_MS).into()],
    )
}

/// Batch `id`'s queued lines whose message has not been taken for
/// [`super::REQUEUE_AFTER_MS`] (or that [`recover`] queued again just now): their time
/// is renewed, and each needs a message.
pub fn requeue(id: &str, now_ms: f64) -> Statement {
    Statement::new(
        "UPDATE batch_items SET claimed_at = ?2 WHERE batch_id = ?1 AND state = 'queued' AND (claimed_at < ?3 OR claimed_at = ?2) \
         AND EXISTS (SELECT 1 FROM batches WHERE id = ?1 AND status = 'in_progress') RETURNING line",
        vec![id.into(), now_ms.into(), (now_ms - super::REQUEUE_AFTER_MS).into()],
    )
}

/// A line whose messages the queue gave up on (the dead-letter queue): failed with
/// `error_line`, counted, unless it ended meanwhile. Returns the counts and status when
/// it counted.
pub fn give_up(id: &str, line: u64, output: &str, now_ms: f64) -> Group {
    vec![
        Statement::new(
            "UPDATE batch_items SET state = 'failed', output = ?3 WHERE batch_id = ?1 AND line = ?2 \
             AND state IN ('pending', 'queued', 'running')",
            vec![id.into(), line.into(), output.into()],
        ),
        Statement::new(
            "UPDATE batches SET failed = failed + 1, progressed_at = ?2 WHERE id = ?1 AND changes() = 1 \
             RETURNING total, completed, failed, cancelled, status",
            vec![id.into(), now_ms.into()],
        ),
    ]
}

/// The custom_id of line `line` of batch `id`.
pub fn custom_id(id: &str, line: u64) -> Statement {
    Statement::new(
        "SELECT custom_id FROM batch_items WHERE batch_id = ?1 AND line = ?2",
        vec![id.into(), line.into()],
    )
}

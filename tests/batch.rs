//! Batches in the core: the input file's checks, the objects and lines in OpenAI's shapes,
//! and the statements that move a batch's lines through their states, run on SQLite with
//! the project's migrations (the same statements the Worker runs on D1), delivery by
//! delivery: duplicates, lost claims, cancels, expiry, recovery.
// Native only: SQLite and the simulated deliveries; the Worker runs these on D1.
#![cfg(not(target_arch = "wasm32"))]

mod support;

use llm_distiller::batch::input::{parse_input, MAX_REPORTED_ERRORS};
use llm_distiller::batch::sql::{self, Ended, Progress};
use llm_distiller::batch::{
    error_line, is_id, list_object, new_id, output_line, parse_create, refused_file, request_id,
    BatchRow, FileRow, ListPage, QueueMessage, BATCH_PREFIX, CLAIM_LEASE_MS, FEED_WINDOW,
    FILE_PREFIX, MAX_REQUESTS, REQUEUE_AFTER_MS,
};
use llm_distiller::openai_api::ApiError;
use llm_distiller::record::Record;
use llm_distiller::sql::Statement;
use serde_json::{json, Value};
use support::sqlite::Db;

// ---------------------------------------------------------------------------------------
// A batch on the database

const T0: f64 = 1_700_000_000_000.0;
const BATCH: &str = "batch_0000000000010000000000000001";

fn body(content: &str) -> String {
    json!({ "model": "m", "messages": [{ "role": "user", "content": content }] }).to_string()
}

/// A batch of `n` lines, in progress.
fn batch(db: &mut Db, n: u64) {
    let bodies: Vec<(u64, String, String)> = (1..=n)
        .map(|i| (i, format!("req-{i}"), body(&format!("q{i}"))))
        .collect();
    let mut group = vec![sql::insert_batch(
        BATCH,
        "file-0000000000010000000000000001",
        None,
        n as usize,
        T0 / 1000.0,
        T0,
    )];
    group.extend(sql::insert_items(
        BATCH,
        bodies.iter().map(|(l, c, b)| (*l, c.as_str(), b.as_str())),
    ));
    db.group(&group);
}

fn fed(db: &Db, now: f64) -> Vec<u64> {
    db.run(&sql::feed(BATCH, now))
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect()
}

/// A delivery's claim: the attempt, or `None` when there is nothing to run.
fn claim(db: &Db, line: u64, now: f64) -> Option<u64> {
    db.run(&sql::claim(BATCH, line, now))
        .first()
        .map(|r| r["attempt"].as_u64().unwrap())
}

/// The answer of a run: a stored row and an output line. The counts, when it counted.
fn answer(db: &mut Db, line: u64, attempt: u64, now: f64) -> Option<Progress> {
    let record = Record::answer(
        format!("rsp_{line:028x}"),
        now,
        &body("x"),
        &support::llm_response(),
        false,
    )
    .for_batch(BATCH, &format!("req-{line}"));
    let output = output_line(
        BATCH,
        line,
        &format!("req-{line}"),
        &record.id,
        &json!({ "ok": line }),
    );
    let group = sql::finish(
        BATCH,
        line,
        attempt,
        Ended::Answered(
            record.insert_if_running(BATCH, line, attempt),
            &record.id,
            &output,
        ),
        now,
    );
    progress_of(db.group(&group).pop().unwrap())
}

fn progress_of(rows: Vec<Value>) -> Option<Progress> {
    rows.into_iter()
        .next()
        .map(|row| serde_json::from_value(row).unwrap())
}

fn state(db: &Db, line: u64) -> String {
    db.run(&Statement::new(
        "SELECT state FROM batch_items WHERE batch_id = ?1 AND line = ?2",
        vec![BATCH.into(), line.into()],
    ))[0]["state"]
        .as_str()
        .unwrap()
        .to_string()
}

fn finalize(db: &mut Db, now: f64) -> BatchRow {
    db.group(&sql::finalize(BATCH, "file-out", "file-err", now / 1000.0));
    batch_row(db)
}

fn batch_row(db: &Db) -> BatchRow {
    serde_json::from_value(db.run(&sql::get_batch(BATCH)).remove(0)).unwrap()
}

fn stored_rows(db: &Db) -> u64 {
    db.value("SELECT (SELECT COUNT(*) FROM responses) + (SELECT COUNT(*) FROM invalid_responses)")
        .as_u64()
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// The state machine

#[test]
fn a_batch_runs_line_by_line_to_its_output_file() {
    let mut db = Db::new();
    batch(&mut db, 3);
    assert_eq!(fed(&db, T0), [1, 2, 3]);
    assert!(fed(&db, T0).is_empty(), "fed once");
    for line in 1..=3 {
        let attempt = claim(&db, line, T0 + 1.0).expect("claimed");
        assert_eq!(attempt, 1);
        let progress = answer(&mut db, line, attempt, T0 + 2.0).expect("counted");
        assert_eq!(progress.completed as u64, line);
        assert_eq!(progress.finished(), line == 3);
    }
    let row = finalize(&mut db, T0 + 3.0);
    assert_eq!(row.status, "completed");
    assert_eq!(row.completed, 3.0);
    let object = row.object();
    assert_eq!(object["output_file_id"], "file-out");
    assert!(
        object.get("error_file_id").is_none(),
        "no error file without a failure: {object}"
    );
    assert_eq!(
        object["request_counts"],
        json!({ "total": 3, "completed": 3, "failed": 0 })
    );
    // The output file's bytes are its lines', each with its line break.
    let file: FileRow =
        serde_json::from_value(db.run(&sql::get_file("file-out")).remove(0)).unwrap();
    let lines = db.run(&sql::output_lines(BATCH, "done", 0, 100));
    let text: String = lines
        .iter()
        .map(|l| format!("{}\n", l["output"].as_str().unwrap()))
        .collect();
    assert_eq!(file.bytes as usize, text.len());
    assert_eq!(file.purpose, "batch_output");
    assert_eq!(stored_rows(&db), 3);
    // Finalizing again changes nothing.
    assert_eq!(finalize(&mut db, T0 + 9.0), row);
}

#[test]
fn a_line_delivered_twice_runs_and_is_stored_once() {
    let mut db = Db::new();
    batch(&mut db, 1);
    fed(&db, T0);
    let first = claim(&db, 1, T0).unwrap();
    assert_eq!(
        claim(&db, 1, T0 + 10.0),
        None,
        "a second delivery finds it running"
    );
    assert!(answer(&mut db, 1, first, T0 + 20.0).is_some());
    assert_eq!(
        claim(&db, 1, T0 + 30.0),
        None,
        "done: never sent upstream again"
    );
    assert_eq!(
        answer(&mut db, 1, first, T0 + 40.0),
        None,
        "a repeated end counts nothing"
    );
    assert_eq!(stored_rows(&db), 1);
    assert_eq!(batch_row(&db).completed, 1.0);
}

#[test]
fn a_run_that_lost_its_claim_stores_nothing() {
    let mut db = Db::new();
    batch(&mut db, 1);
    fed(&db, T0);
    let stale = claim(&db, 1, T0).unwrap();
    // Its isolate is gone: past the lease, a redelivery takes the line over.
    let later = T0 + CLAIM_LEASE_MS + 1.0;
    let fresh = claim(&db, 1, later).expect("the lease ran out");
    assert_eq!(fresh, stale + 1);
    // The old run comes back after all: it stores nothing and counts nothing.
    assert_eq!(answer(&mut db, 1, stale, later + 1.0), None);
    assert_eq!(stored_rows(&db), 0);
    assert!(answer(&mut db, 1, fresh, later + 2.0).is_some());
    assert_eq!(stored_rows(&db), 1);
    // A run that keeps its claim fresh keeps the line.
    let mut db = Db::new();
    batch(&mut db, 1);
    fed(&db, T0);
    let attempt = claim(&db, 1, T0).unwrap();
    for step in 1..=5 {
        let now = T0 + f64::from(step) * 20_000.0;
        db.group(&sql::keep_claims(BATCH, &[(1, attempt)], now));
        assert_eq!(claim(&db, 1, now + 1.0), None, "renewed at step {step}");
    }
}

#[test]
fn a_line_that_fails_for_good_goes_to_the_error_file() {
    let mut db = Db::new();
    batch(&mut db, 2);
    fed(&db, T0);
    let a = claim(&db, 1, T0).unwrap();
    answer(&mut db, 1, a, T0);
    let b = claim(&db, 2, T0).unwrap();
    let error = ApiError::new(
        502,
        "server_error",
        "upstream_error",
        "provider 'p' answered HTTP 500: down",
    );
    let failure = Record::failure(
        "rsp_x".into(),
        T0,
        &body("q2"),
        "p",
        "m",
        &llm_distiller::Error::Timeout {
            provider: "p".into(),
            after_ms: 1.0,
        },
    )
    .unwrap()
    .for_batch(BATCH, "req-2");
    let line = error_line(BATCH, 2, "req-2", Some(&failure.id), &error);
    let progress = progress_of(
        db.group(&sql::finish(
            BATCH,
            2,
            b,
            Ended::Failed(
                Some((failure.insert_if_running(BATCH, 2, b), &failure.id)),
                &line,
            ),
            T0,
        ))
        .pop()
        .unwrap(),
    )
    .unwrap();
    assert!(progress.finished());
    let row = finalize(&mut db, T0 + 1.0);
    assert_eq!(row.status, "completed");
    assert_eq!((row.completed, row.failed), (1.0, 1.0));
    assert_eq!(row.object()["error_file_id"], "file-err");
    let errors = db.run(&sql::output_lines(BATCH, "failed", 0, 10));
    let parsed: Value = serde_json::from_str(errors[0]["output"].as_str().unwrap()).unwrap();
    assert_eq!(parsed["custom_id"], "req-2");
    assert_eq!(parsed["response"]["status_code"], 502);
    assert_eq!(
        parsed["response"]["body"]["error"]["code"],
        "upstream_error"
    );
    assert_eq!(
        db.value("SELECT COUNT(*) FROM invalid_responses WHERE custom_id = 'req-2'"),
        json!(1)
    );
}

#[test]
fn cancel_stops_new_lines_and_keeps_those_in_flight() {
    let mut db = Db::new();
    batch(&mut db, 4);
    fed(&db, T0);
    let running = claim(&db, 1, T0).unwrap();
    let done = claim(&db, 2, T0).unwrap();
    answer(&mut db, 2, done, T0);
    let progress = progress_of(
        db.group(&sql::cancel(BATCH, T0 / 1000.0 + 1.0))
            .pop()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(progress.status, "cancelling");
    assert_eq!(progress.cancelled, 2.0, "lines 3 and 4 never start");
    assert!(!progress.finished(), "line 1 still runs");
    assert_eq!(
        claim(&db, 3, T0 + 1.0),
        None,
        "a cancelled line is not claimed"
    );
    assert!(fed(&db, T0 + 2.0).is_empty());
    // The line in flight finishes and is kept; then the batch is cancelled.
    let progress = answer(&mut db, 1, running, T0 + 3.0).unwrap();
    assert!(progress.finished());
    let row = finalize(&mut db, T0 + 4.0);
    assert_eq!(row.status, "cancelled");
    assert!(row.cancelled_at.is_some() && row.completed_at.is_none());
    assert_eq!(row.completed, 2.0);
    assert_eq!(row.object()["output_file_id"], "file-out");
    assert_eq!(db.run(&sql::output_lines(BATCH, "done", 0, 10)).len(), 2);
    // Cancelling again, or a finished batch, changes nothing.
    let again_line = progress_of(
        db.group(&sql::cancel_line(BATCH, 1, running))
            .pop()
            .unwrap(),
    );
    assert_eq!(again_line, None, "a line that ended is not cancelled");
    let again = progress_of(
        db.group(&sql::cancel(BATCH, T0 / 1000.0 + 9.0))
            .pop()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(again.status, "cancelled");
    assert_eq!(again.cancelled, 2.0);
}

#[test]
fn a_line_waiting_for_its_turn_is_cancelled_with_its_batch() {
    let mut db = Db::new();
    batch(&mut db, 2);
    fed(&db, T0);
    let waiting = claim(&db, 1, T0).unwrap();
    let sent = claim(&db, 2, T0).unwrap();
    let progress = progress_of(db.group(&sql::cancel(BATCH, T0 / 1000.0)).pop().unwrap()).unwrap();
    assert_eq!(
        (progress.status.as_str(), progress.cancelled),
        ("cancelling", 0.0),
        "both run"
    );
    // Line 1 had not been sent: it stops, and counts as cancelled; line 2 answers.
    let progress = progress_of(
        db.group(&sql::cancel_line(BATCH, 1, waiting))
            .pop()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(progress.cancelled, 1.0);
    assert!(!progress.finished());
    assert!(answer(&mut db, 2, sent, T0 + 1.0).unwrap().finished());
    let row = finalize(&mut db, T0 + 2.0);
    assert_eq!(row.status, "cancelled");
    assert_eq!(state(&db, 1), "cancelled");
    assert_eq!(stored_rows(&db), 1);
}

#[test]
fn feeding_keeps_at_most_the_window_in_flight() {
    let mut db = Db::new();
    let n = FEED_WINDOW + 7;
    batch(&mut db, n);
    let first = fed(&db, T0);
    assert_eq!(first.len() as u64, FEED_WINDOW);
    assert_eq!(first[0], 1);
    assert!(fed(&db, T0).is_empty());
    let attempt = claim(&db, 1, T0).unwrap();
    answer(&mut db, 1, attempt, T0);
    assert_eq!(
        fed(&db, T0 + 1.0),
        [FEED_WINDOW + 1],
        "one ended, one more goes"
    );
}

#[test]
fn lost_messages_and_dead_runs_are_recovered() {
    let mut db = Db::new();
    batch(&mut db, 3);
    fed(&db, T0);
    // Line 1 runs and its isolate dies; lines 2 and 3 never get their messages.
    claim(&db, 1, T0).unwrap();
    let soon = T0 + 1_000.0;
    db.run(&sql::recover(BATCH, soon));
    assert!(
        db.run(&sql::requeue(BATCH, soon)).is_empty(),
        "nothing is stale yet"
    );
    let later = T0 + REQUEUE_AFTER_MS.max(CLAIM_LEASE_MS) + 1.0;
    db.run(&sql::recover(BATCH, later));
    let lines: Vec<u64> = db
        .run(&sql::requeue(BATCH, later))
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [1, 2, 3]);
    assert_eq!(state(&db, 1), "queued");
    for line in lines {
        let attempt = claim(&db, line, later + 1.0).unwrap();
        answer(&mut db, line, attempt, later + 2.0);
    }
    assert_eq!(finalize(&mut db, later + 3.0).status, "completed");
    assert_eq!(stored_rows(&db), 3);
}

#[test]
fn an_expired_batch_fails_its_lines_not_started() {
    let mut db = Db::new();
    batch(&mut db, 3);
    fed(&db, T0);
    let running = claim(&db, 1, T0).unwrap();
    let expires = T0 / 1000.0 + 24.0 * 3600.0;
    let early = progress_of(db.group(&sql::expire(BATCH, expires - 1.0)).pop().unwrap()).unwrap();
    assert_eq!(early.failed, 0.0, "not before its window ends");
    let progress = progress_of(db.group(&sql::expire(BATCH, expires)).pop().unwrap()).unwrap();
    assert_eq!(progress.failed, 2.0);
    let line: Value = serde_json::from_str(
        db.run(&sql::output_lines(BATCH, "failed", 0, 10))[0]["output"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        line["id"],
        request_id(BATCH, 2),
        "the id the Rust side gives"
    );
    assert_eq!(line["custom_id"], "req-2");
    assert_eq!(line["response"], Value::Null);
    assert_eq!(line["error"]["code"], "batch_expired");
    answer(&mut db, 1, running, expires * 1000.0 + 1.0).unwrap();
    let row = finalize(&mut db, expires * 1000.0 + 2.0);
    assert_eq!(row.status, "expired");
    assert!(row.expired_at.is_some() && row.completed_at.is_none());
}

#[test]
fn a_line_the_queue_gave_up_on_fails_once() {
    let mut db = Db::new();
    batch(&mut db, 1);
    fed(&db, T0);
    let output = error_line(
        BATCH,
        1,
        "req-1",
        None,
        &ApiError::new(500, "server_error", "delivery_failed", "gave up"),
    );
    let progress = progress_of(
        db.group(&sql::give_up(BATCH, 1, &output, T0))
            .pop()
            .unwrap(),
    )
    .unwrap();
    assert!(progress.finished());
    assert!(
        db.group(&sql::give_up(BATCH, 1, &output, T0))
            .pop()
            .unwrap()
            .is_empty(),
        "counted once"
    );
    assert_eq!(claim(&db, 1, T0 + CLAIM_LEASE_MS * 2.0), None);
}

#[test]
fn files_store_in_parts_and_read_back_whole() {
    let mut db = Db::new();
    let text: String = (0..100_000)
        .map(|i| format!("{{\"custom_id\":\"é-{i}\"}}\n"))
        .collect();
    assert!(text.len() > 3 * 512 * 1024);
    let id = "file-0000000000010000000000000002";
    db.group(&sql::insert_file(
        id,
        "in.jsonl",
        &text,
        100_000,
        T0 / 1000.0,
    ));
    let mut read = String::new();
    let mut after = -1i64;
    loop {
        let parts = db.run(&sql::file_parts(id, after, 2));
        if parts.is_empty() {
            break;
        }
        for part in &parts {
            read.push_str(part["data"].as_str().unwrap());
            after = part["seq"].as_i64().unwrap();
        }
    }
    assert_eq!(read, text);
    let file: FileRow = serde_json::from_value(db.run(&sql::get_file(id)).remove(0)).unwrap();
    assert_eq!(
        file.object(),
        json!({ "id": id, "object": "file", "bytes": text.len(), "created_at": 1_700_000_000,
        "filename": "in.jsonl", "purpose": "batch", "status": "processed" })
    );
    db.group(&sql::delete_file(id));
    assert!(db.run(&sql::get_file(id)).is_empty());
    assert_eq!(db.value("SELECT COUNT(*) FROM file_parts"), json!(0));
}

#[test]
fn lists_page_by_id() {
    let mut db = Db::new();
    for i in 1..=5u64 {
        let id = new_id(FILE_PREFIX, T0 + i as f64, 0.5, 0.5);
        db.group(&sql::insert_file(&id, "f.jsonl", "{}", 1, i as f64));
    }
    let page = |after: Option<&str>, asc: bool| -> Value {
        let rows: Vec<Value> = db
            .run(&sql::list_files(after, 2, asc, Some("batch")))
            .into_iter()
            .map(|r| serde_json::from_value::<FileRow>(r).unwrap().object())
            .collect();
        list_object(rows, 2, true)
    };
    let first = page(None, false);
    assert_eq!(first["has_more"], true);
    let second = page(first["last_id"].as_str(), false);
    let third = page(second["last_id"].as_str(), false);
    assert_eq!(third["has_more"], false);
    assert_eq!(third["data"].as_array().unwrap().len(), 1);
    assert!(
        first["first_id"].as_str() > third["last_id"].as_str(),
        "newest first"
    );
    let ascending = page(None, true);
    assert_eq!(ascending["first_id"], third["last_id"]);
}

// ---------------------------------------------------------------------------------------
// The input file

fn line(custom_id: &str, body: Value) -> String {
    json!({ "custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body })
        .to_string()
}

fn chat(content: &str) -> Value {
    json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": content }], "max_tokens": 10 })
}

fn known(name: &str) -> bool {
    matches!(name, "main" | "backup")
}

#[test]
fn a_good_file_reads_line_by_line() {
    let text = format!(
        "{}\r\n{}\n{}\n",
        line("a", chat("one")),
        line(
            "b",
            json!({ "messages": [{ "role": "user", "content": "two" }], "provider": "backup", "fallback": ["main"] })
        ),
        line("c", chat("three")),
    );
    let lines = parse_input(text.as_bytes(), &known).expect("valid");
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1].line, 2);
    assert_eq!(lines[1].custom_id, "b");
    let body: Value = serde_json::from_str(&lines[1].body).unwrap();
    assert_eq!(body["provider"], "backup");
    assert_eq!(lines[2].request.call.config.max_tokens, Some(10));
    // A byte-order mark and no final line break are fine too.
    let bom = format!("\u{feff}{}", line("x", chat("x")));
    assert_eq!(parse_input(bom.as_bytes(), &known).unwrap().len(), 1);
}

#[test]
fn every_fault_of_a_file_is_named_with_its_line() {
    let cases: Vec<(String, &str, Option<&str>)> = vec![
        ("not json at all".into(), "invalid_json_line", None),
        ("[1, 2]".into(), "invalid_json_line", None),
        ("".into(), "invalid_json_line", None),
        (json!({ "method": "POST", "url": "/v1/chat/completions", "body": chat("x") }).to_string(), "missing_custom_id", Some("custom_id")),
        (json!({ "custom_id": 7, "method": "POST", "url": "/v1/chat/completions", "body": chat("x") }).to_string(), "invalid_custom_id", Some("custom_id")),
        (json!({ "custom_id": "a", "method": "GET", "url": "/v1/chat/completions", "body": chat("x") }).to_string(), "invalid_method", Some("method")),
        (json!({ "custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": chat("x") }).to_string(), "invalid_url", Some("url")),
        (json!({ "custom_id": "a", "method": "POST", "url": "/v1/chat/completions" }).to_string(), "invalid_body", Some("body")),
        (json!({ "custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": "hi" }).to_string(), "invalid_body", Some("body")),
        (line("a", json!({ "messages": [] })), "invalid_body", Some("body.messages")),
        (line("a", json!({ "messages": [{ "role": "user", "content": "x" }], "temperature": "hot" })), "invalid_body", Some("body.temperature")),
        (line("a", json!({ "messages": [{ "role": "user", "content": "x" }], "stream": true })), "invalid_body", Some("body.stream")),
        (line("a", json!({ "messages": [{ "role": "user", "content": "x" }], "provider": "nobody" })), "invalid_body", Some("body.provider")),
        (line("a", json!({ "messages": [{ "role": "user", "content": "x" }], "fallback": ["main", "nobody"] })), "invalid_body", Some("body.provider")),
        (json!({ "custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": chat("x"), "extra": 1 }).to_string(), "invalid_request", Some("extra")),
    ];
    for (bad, code, param) in cases {
        let text = format!(
            "{}\n{bad}\n{}\n",
            line("first", chat("ok")),
            line("last", chat("ok"))
        );
        let errors = parse_input(text.as_bytes(), &known).expect_err(&bad);
        assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
        let error = &errors[0];
        assert_eq!(error.line, Some(2), "{bad}");
        assert_eq!(error.code, code, "{bad}: {error:?}");
        assert_eq!(error.param.as_deref(), param, "{bad}: {error:?}");
        assert!(error.message.starts_with("line 2: "), "{error:?}");
        // The 400 at upload names the same.
        let refused = refused_file(&errors);
        assert_eq!(refused.status, 400);
        assert_eq!(refused.code.as_deref(), Some(code));
        assert_eq!(refused.param.as_deref(), param);
    }
}

#[test]
fn duplicates_size_and_encoding_are_refused_for_the_whole_file() {
    let text = format!(
        "{}\n{}\n{}\n",
        line("a", chat("1")),
        line("b", chat("2")),
        line("a", chat("3"))
    );
    let errors = parse_input(text.as_bytes(), &known).unwrap_err();
    assert_eq!(errors[0].code, "duplicate_custom_id");
    assert_eq!(errors[0].line, Some(3));
    assert!(errors[0].message.contains("line 1"), "{errors:?}");

    let many: String = (0..=MAX_REQUESTS)
        .map(|i| line(&format!("r{i}"), chat("x")) + "\n")
        .collect();
    let errors = parse_input(many.as_bytes(), &known).unwrap_err();
    assert_eq!(errors.last().unwrap().code, "too_many_requests");

    let broken: String = (0..500).map(|i| format!("oops {i}\n")).collect();
    let errors = parse_input(broken.as_bytes(), &known).unwrap_err();
    assert_eq!(
        errors.len(),
        MAX_REPORTED_ERRORS,
        "the first faults, not all"
    );
    assert!(refused_file(&errors).message.contains("and 99 more faults"));

    for bad in [&b"\xff\xfe{}"[..], b"", b"\n\n", b"   "] {
        let errors = parse_input(bad, &known).unwrap_err();
        assert_eq!(errors.len(), 1, "{bad:?}");
        assert_eq!(errors[0].line, None);
    }
}

// ---------------------------------------------------------------------------------------
// Objects and lines

#[test]
fn a_batch_object_has_the_specs_shape() {
    let row = BatchRow {
        id: BATCH.into(),
        endpoint: "/v1/chat/completions".into(),
        input_file_id: "file-0000000000010000000000000001".into(),
        completion_window: "24h".into(),
        status: "in_progress".into(),
        metadata: Some(r#"{"run":"7"}"#.into()),
        errors: None,
        output_file_id: None,
        error_file_id: None,
        created_at: 1_700_000_000.0,
        in_progress_at: Some(1_700_000_000.0),
        expires_at: Some(1_700_086_400.0),
        finalizing_at: None,
        completed_at: None,
        failed_at: None,
        cancelling_at: None,
        cancelled_at: None,
        expired_at: None,
        total: 3.0,
        completed: 1.0,
        failed: 0.0,
        progressed_at: Some(T0),
    };
    assert!(!row.stalled(T0 + 1_000.0), "a line ended a second ago");
    assert!(
        row.stalled(T0 + llm_distiller::batch::STALL_MS),
        "none for a while: look after it"
    );
    let object = row.object();
    assert_eq!(object["object"], "batch");
    assert_eq!(object["metadata"], json!({ "run": "7" }));
    assert_eq!(object["expires_at"], 1_700_086_400u64);
    for absent in [
        "output_file_id",
        "error_file_id",
        "completed_at",
        "errors",
        "failed_at",
    ] {
        assert!(
            object.get(absent).is_none(),
            "{absent} is left out, not null: {object}"
        );
    }
    let failed = BatchRow {
        status: "failed".into(),
        errors: Some(serde_json::to_string(&parse_input(b"x", &known).unwrap_err()).unwrap()),
        ..row
    };
    let errors = &failed.object()["errors"];
    assert_eq!(errors["object"], "list");
    assert_eq!(errors["data"][0]["line"], 1);
}

#[test]
fn a_create_request_is_checked_as_openai_does() {
    let good = json!({ "input_file_id": "file-0000000000010000000000000001", "endpoint": "/v1/chat/completions",
                       "completion_window": "24h", "metadata": { "a": "b" } });
    assert!(parse_create(good.to_string().as_bytes()).is_ok());
    let wrong = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        let error = parse_create(body.to_string().as_bytes()).unwrap_err();
        assert_eq!(error.status, 400);
        error.param
    };
    assert_eq!(
        wrong("endpoint", json!("/v1/embeddings")).as_deref(),
        Some("endpoint")
    );
    assert_eq!(
        wrong("completion_window", json!("1h")).as_deref(),
        Some("completion_window")
    );
    assert_eq!(
        wrong("input_file_id", json!("nope")).as_deref(),
        Some("input_file_id")
    );
    assert_eq!(
        wrong("metadata", json!({ "a": 1 })).as_deref(),
        Some("metadata")
    );
    assert_eq!(
        wrong("surprise", json!(1)).as_deref(),
        Some("body.surprise")
    );
    assert!(parse_create(b"{").is_err());
}

#[test]
fn ids_messages_and_pages() {
    let id = new_id(BATCH_PREFIX, T0, 0.25, 0.75);
    assert!(is_id(BATCH_PREFIX, &id));
    assert!(!is_id(FILE_PREFIX, &id));
    assert!(
        new_id(BATCH_PREFIX, T0 + 1.0, 0.0, 0.0) > id,
        "time-ordered"
    );
    let message = serde_json::to_value(QueueMessage::new(&id, 7)).unwrap();
    assert_eq!(
        QueueMessage::read(&message),
        Some(QueueMessage::new(&id, 7))
    );
    assert_eq!(
        QueueMessage::read(&json!({ "v": 2, "batch": id, "line": 7 })),
        None
    );
    assert_eq!(QueueMessage::read(&json!("garbage")), None);
    let page = ListPage::parse(
        [("limit", "5"), ("after", id.as_str())],
        BATCH_PREFIX,
        false,
    )
    .unwrap();
    assert_eq!((page.limit, page.after.as_deref()), (5, Some(id.as_str())));
    for (key, value) in [
        ("limit", "0"),
        ("limit", "x"),
        ("after", "nope"),
        ("order", "asc"),
        ("x", "1"),
    ] {
        let error = ListPage::parse([(key, value)], BATCH_PREFIX, false).unwrap_err();
        assert_eq!(error.param.as_deref(), Some(key));
    }
    assert!(
        ListPage::parse([("order", "asc"), ("purpose", "batch")], FILE_PREFIX, true)
            .unwrap()
            .ascending
    );
}

//! The export's record shaping and its query: every fixture of `export_fixtures.json` in
//! every format and reasoning mode, rows written by the Worker's own storing path, hostile
//! and giant text, any text at all (proptest), and `GET /v1/export`'s parameters, times,
//! keyset bounds and query budget, and its statements run on SQLite with the migrations.
// Native only: proptest; the wasm build of the same code is exercised through the npm
// package and the Worker (tests/npm, tests/worker).
#![cfg(not(target_arch = "wasm32"))]

mod support;

use llm_distiller::chat::LlmResponse;
use llm_distiller::export::sql::{self, Counted};
use llm_distiller::export::{
    export_record, parse_time, query_budget, write_line, ExportOptions, ExportPlan, ExportQuery,
    ExportRow, Format, Incomplete, Reasoning, Skip, Validity, DEFAULT_QUERY_BUDGET, PAGE_BYTES,
    PAGE_ROWS,
};
use llm_distiller::record::{new_id, CutShort, Record, MAX_CONTENT_BYTES, MAX_THINKING_BYTES};
use llm_distiller::thinking::extract_thinking;
use proptest::prelude::*;
use serde_json::{json, Value};
use support::llm_response;
use support::sqlite::Db;

const TRAINING_KEYS: [&str; 6] = [
    "openai_chat/field",
    "openai_chat/inline",
    "openai_chat/none",
    "sharegpt/field",
    "sharegpt/inline",
    "sharegpt/none",
];
const REASONINGS: [Reasoning; 3] = [Reasoning::Field, Reasoning::Inline, Reasoning::Omit];

fn options(key: &str, include_incomplete: bool) -> Vec<ExportOptions> {
    let (format, reasoning) = key.split_once('/').unwrap_or((key, ""));
    let format = match format {
        "openai_chat" => Format::OpenaiChat,
        "sharegpt" => Format::ShareGpt,
        "flat" => Format::Flat,
        other => panic!("fixture key {other}"),
    };
    let reasonings: Vec<Reasoning> = match reasoning {
        "field" => vec![Reasoning::Field],
        "inline" => vec![Reasoning::Inline],
        "none" => vec![Reasoning::Omit],
        // `flat`: the same line in every mode.
        _ => REASONINGS.to_vec(),
    };
    reasonings
        .into_iter()
        .map(|reasoning| ExportOptions {
            format,
            reasoning,
            include_incomplete,
        })
        .collect()
}

/// Numbers compared as numbers (`1.0` equals `1`), everything else as it is.
fn normalized(value: &Value) -> Value {
    match value {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The line of `row` as `options` write it, parsed back; or the skip.
fn line_of(row: &ExportRow, options: &ExportOptions) -> Result<Value, Skip> {
    let mut out = b"before\n".to_vec();
    let written = write_line(row, options, &mut out);
    let line = out.split_off(7);
    assert_eq!(out, b"before\n", "what was in the buffer stays");
    if let Err(skip) = written {
        assert!(line.is_empty(), "a skipped row writes nothing");
        return Err(skip);
    }
    let text = String::from_utf8(line).expect("UTF-8");
    assert!(text.ends_with('\n'), "a line ends with a line break");
    assert!(
        !text[..text.len() - 1].contains(['\n', '\r']),
        "one line: {text:?}"
    );
    // The same value whether written as a line or handed over as a record.
    let record = serde_json::to_value(export_record(row, options).unwrap()).unwrap();
    let parsed: Value = serde_json::from_str(&text).expect("the line is JSON");
    assert_eq!(parsed, record);
    Ok(parsed)
}

fn check(name: &str, key: &str, row: &ExportRow, expected: &Value, include_incomplete: bool) {
    for options in options(key, include_incomplete) {
        let label = format!("{name}: {key} ({options:?})");
        let got = line_of(row, &options);
        match (expected.get("skip").and_then(Value::as_str), got) {
            (Some(skip), Err(got)) => {
                let kind = match got {
                    Skip::Incomplete(_) => "incomplete",
                    Skip::NotInline => "not_inline",
                    Skip::UnreadableRequest(_) => "unreadable",
                    _ => "other",
                };
                assert_eq!(kind, skip, "{label}: {got}");
                assert_eq!(got.is_by_rule(), kind != "unreadable", "{label}");
            }
            (Some(skip), Ok(line)) => panic!("{label}: expected a skip ({skip}), got {line}"),
            (None, Err(got)) => panic!("{label}: expected a line, got a skip: {got}"),
            (None, Ok(line)) => {
                let mut expected = expected.clone();
                // `export_error: true` stands for "says why", whatever the words.
                if expected.get("export_error") == Some(&Value::Bool(true)) {
                    let why = line["export_error"].as_str().unwrap_or_default();
                    assert!(
                        why.starts_with("the stored request cannot be read: "),
                        "{label}: {why}"
                    );
                    expected["export_error"] = line["export_error"].clone();
                }
                assert_eq!(normalized(&line), normalized(&expected), "{label}");
            }
        }
    }
}

#[test]
fn every_fixture_in_every_format_and_reasoning_mode() {
    let cases: Vec<Value> =
        serde_json::from_str(include_str!("export_fixtures.json")).expect("fixtures parse");
    assert!(cases.len() >= 10);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let row: ExportRow = serde_json::from_value(case["row"].clone())
            .unwrap_or_else(|e| panic!("{name}: the row does not read: {e}"));
        let expect = &case["expect"];
        for key in TRAINING_KEYS.iter().chain(&["flat"]) {
            let expected = expect
                .get(*key)
                .unwrap_or_else(|| panic!("{name}: no {key}"));
            check(name, key, &row, expected, false);
        }
        // With include_incomplete: what the case says, else the same as without.
        for key in TRAINING_KEYS.iter().chain(&["flat"]) {
            let expected = case
                .get("include_incomplete")
                .and_then(|e| e.get(*key))
                .unwrap_or(&expect[*key]);
            check(name, key, &row, expected, true);
        }
    }
}

fn worker_row(record: &Record) -> ExportRow {
    // What the Worker reads back: the row's columns (the store binds `record` itself).
    serde_json::from_value(serde_json::to_value(record).unwrap()).unwrap()
}

#[test]
fn a_row_stored_by_the_workers_own_path_exports_what_the_model_saw_and_said() {
    let request = r#"{"messages":[{"role":"user","content":"2+2?"}],"config":{"temperature":0.2},"provider":null,"fallback":[]}"#;
    let response = LlmResponse {
        content: "4".into(),
        thinking: Some("Add them.".into()),
        ..llm_response()
    };
    let record = Record::answer(
        new_id(1_700_000_000_000.0, 0.1, 0.2),
        1_700_000_000_000.0,
        request,
        &response,
        false,
    )
    .for_batch("batch_1", "line-1");
    let row = worker_row(&record);
    let chat = line_of(&row, &ExportOptions::default()).unwrap();
    assert_eq!(
        chat,
        json!({ "messages": [
            { "role": "user", "content": "2+2?" },
            { "role": "assistant", "content": "4", "reasoning_content": "Add them." },
        ] })
    );
    let flat = ExportOptions {
        format: Format::Flat,
        ..ExportOptions::default()
    };
    let flat = line_of(&row, &flat).unwrap();
    assert_eq!(flat["id"], json!(record.id));
    assert_eq!(flat["created_at"], json!(1_700_000_000_000u64));
    assert_eq!(flat["batch_id"], "batch_1");
    assert_eq!(flat["custom_id"], "line-1");
    assert_eq!(flat["provider"], json!(response.provider));
    assert_eq!(flat["usage"], json!(response.usage));
    assert!(flat.get("invalid_reason").is_none(), "a valid row has none");

    // An answer whose thinking never closed is stored invalid, and left out as incomplete.
    let unclosed = LlmResponse {
        thinking_unclosed: true,
        ..response.clone()
    };
    let record = Record::answer(new_id(1.0, 0.0, 0.0), 1.0, request, &unclosed, false);
    assert!(!record.is_valid());
    let row = worker_row(&record);
    assert_eq!(row.incomplete(), Some(Incomplete::UnclosedThinking));
    assert_eq!(
        line_of(&row, &ExportOptions::default()),
        Err(Skip::Incomplete(Incomplete::UnclosedThinking))
    );
}

#[test]
fn answers_cut_before_their_end_are_incomplete_as_the_worker_stores_them() {
    let request = r#"{"messages":[{"role":"user","content":"Go on."}]}"#;
    let partial = LlmResponse {
        content: String::new(),
        thinking: Some("I started".into()),
        thinking_unclosed: true,
        finish_reason: None,
        ..llm_response()
    };
    let error = llm_distiller::Error::Connection {
        provider: "main".into(),
        message: "reset".into(),
    };
    for why in [
        CutShort::Error(&error),
        CutShort::NoAnswer,
        CutShort::ClientGone,
    ] {
        let record = Record::cut_short(new_id(1.0, 0.0, 0.0), 1.0, request, &partial, false, why);
        assert_eq!(
            worker_row(&record).incomplete(),
            Some(Incomplete::CutShort),
            "{:?}",
            record.invalid_reason
        );
    }
    // Stopped at the token limit inside its thinking: stored for its finish reason.
    let length = LlmResponse {
        finish_reason: Some("length".into()),
        ..partial.clone()
    };
    let record = Record::answer(new_id(1.0, 0.0, 0.0), 1.0, request, &length, false);
    assert!(record
        .invalid_reason
        .as_deref()
        .unwrap()
        .starts_with("finish_reason:"));
    assert_eq!(worker_row(&record).incomplete(), Some(Incomplete::CutShort));
    // Not cut short: a failed call, a filtered answer, an empty one.
    let failure =
        Record::failure(new_id(1.0, 0.0, 0.0), 1.0, request, "main", "m", &error).unwrap();
    assert_eq!(worker_row(&failure).incomplete(), None);
    let filtered = LlmResponse {
        finish_reason: Some("content_filter".into()),
        thinking_unclosed: false,
        ..partial.clone()
    };
    let record = Record::answer(new_id(1.0, 0.0, 0.0), 1.0, request, &filtered, false);
    assert_eq!(worker_row(&record).incomplete(), None);
}

#[test]
fn giant_fields_at_the_stored_limits_give_one_line_each() {
    // As large as a row may hold, with characters of every UTF-8 length and escapes.
    let content: String = "é🦀\"\\\n\u{7}a".repeat(MAX_CONTENT_BYTES / 16);
    let thinking: String = "→ \u{2028}b".repeat(MAX_THINKING_BYTES / 8);
    let row = ExportRow {
        request: json!({ "messages": [{ "role": "user", "content": "x".repeat(250_000) }] }),
        content: content.clone(),
        thinking: Some(thinking.clone()),
        ..ExportRow::default()
    };
    for format in [Format::OpenaiChat, Format::ShareGpt, Format::Flat] {
        for reasoning in REASONINGS {
            let options = ExportOptions {
                format,
                reasoning,
                include_incomplete: false,
            };
            let line = line_of(&row, &options).unwrap();
            let (text, separate) = match format {
                Format::OpenaiChat => (
                    &line["messages"][1]["content"],
                    &line["messages"][1]["reasoning_content"],
                ),
                Format::ShareGpt => (
                    &line["conversations"][1]["value"],
                    &line["conversations"][1]["reasoning"],
                ),
                Format::Flat => (&line["content"], &line["thinking"]),
            };
            let text = text.as_str().unwrap();
            match (format, reasoning) {
                (Format::Flat, _) | (_, Reasoning::Field) => {
                    assert_eq!(text, content);
                    assert_eq!(separate.as_str(), Some(thinking.as_str()));
                }
                (_, Reasoning::Inline) => {
                    let read = extract_thinking(text, None);
                    assert_eq!(read.thinking.as_deref(), Some(thinking.trim()));
                    assert_eq!(read.content, content.trim());
                }
                (_, Reasoning::Omit) => {
                    assert_eq!(text, content);
                    assert!(separate.is_null());
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any text in any field: never a panic; a line is one line of JSON; the field mode
    /// keeps the answer and the thinking exactly; inline either reads back as stored or
    /// leaves the row out.
    #[test]
    fn any_text_gives_one_json_line_or_a_skip(
        content in "(?s).{0,40}",
        thinking in proptest::option::of("(?s)(.|</?think>|<thinking>){0,30}"),
        request in prop_oneof![
            "(?s).{0,40}",
            "(?s).{0,40}".prop_map(|user| json!({ "messages": [{ "role": "user", "content": user }] }).to_string()),
            "(?s).{0,40}".prop_map(|prompt| json!({ "prompt": prompt, "config": { "system_prompt": prompt } }).to_string()),
        ],
        truncated in any::<bool>(),
        reason in proptest::option::of("(?s).{0,20}"),
    ) {
        let row = ExportRow {
            request: Value::String(request),
            content: content.clone(),
            thinking: thinking.clone(),
            truncated,
            invalid_reason: reason,
            ..ExportRow::default()
        };
        for format in [Format::OpenaiChat, Format::ShareGpt, Format::Flat] {
            for reasoning in REASONINGS {
                let options = ExportOptions { format, reasoning, include_incomplete: true };
                let Ok(line) = line_of(&row, &options) else {
                    prop_assert!(format != Format::Flat, "flat keeps every row");
                    continue;
                };
                let answer = match format {
                    Format::OpenaiChat => line["messages"].as_array().and_then(|m| m.last()).cloned(),
                    Format::ShareGpt => line["conversations"].as_array().and_then(|m| m.last()).cloned(),
                    _ => None,
                };
                let Some(answer) = answer else { continue };
                let text = answer.get("content").or(answer.get("value")).and_then(Value::as_str).unwrap_or_default().to_string();
                let separate = answer.get("reasoning_content").or(answer.get("reasoning")).and_then(Value::as_str);
                let has_thinking = thinking.as_deref().is_some_and(|t| !t.trim().is_empty());
                match reasoning {
                    Reasoning::Field => {
                        prop_assert_eq!(&text, &content);
                        prop_assert_eq!(separate, thinking.as_deref().filter(|_| has_thinking));
                    }
                    Reasoning::Inline if has_thinking => {
                        let read = extract_thinking(&text, None);
                        prop_assert_eq!(read.content, content.trim());
                        prop_assert_eq!(read.thinking.as_deref(), thinking.as_deref().map(str::trim));
                    }
                    _ => prop_assert_eq!(&text, &content),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// GET /v1/export

fn parse(query: &[(&str, &str)]) -> Result<ExportQuery, llm_distiller::openai_api::ApiError> {
    ExportQuery::parse(query.iter().copied())
}

#[test]
fn the_defaults_are_valid_rows_in_openai_chat_with_the_thinking_in_a_field() {
    let query = parse(&[]).unwrap();
    assert_eq!(query.options, ExportOptions::default());
    assert_eq!(query.options.format, Format::OpenaiChat);
    assert_eq!(query.options.reasoning, Reasoning::Field);
    assert!(!query.options.include_incomplete);
    assert!(query.options.leaves_out_incomplete());
    assert_eq!(query.valid, Validity::Valid);
    assert_eq!(query.first_cursor(), "");
    assert_eq!(query.id_limit(), None);
    // Empty values, as a form sends them, are the defaults.
    let empty = parse(&[
        ("format", ""),
        ("reasoning", ""),
        ("valid", ""),
        ("provider", ""),
        ("model", ""),
        ("batch_id", ""),
        ("since", ""),
        ("until", ""),
        ("finish_reason", ""),
        ("include_incomplete", ""),
    ])
    .unwrap();
    assert_eq!(empty, query);
}

#[test]
fn every_parameter_is_read() {
    let query = parse(&[
        ("format", "sharegpt"),
        ("reasoning", "inline"),
        ("valid", "all"),
        ("provider", "main"),
        ("model", "gpt-4o"),
        ("batch_id", "batch_1"),
        ("finish_reason", "length"),
        ("since", "2025-01-31T12:00:00Z"),
        ("until", "1738411200000"),
        ("include_incomplete", "true"),
    ])
    .unwrap();
    assert_eq!(query.options.format, Format::ShareGpt);
    assert_eq!(query.options.reasoning, Reasoning::Inline);
    assert!(query.options.include_incomplete);
    assert!(!query.options.leaves_out_incomplete());
    assert_eq!(query.valid, Validity::All);
    assert!(query.valid.reads_valid() && query.valid.reads_invalid());
    assert_eq!(query.provider.as_deref(), Some("main"));
    assert_eq!(query.model.as_deref(), Some("gpt-4o"));
    assert_eq!(query.batch_id.as_deref(), Some("batch_1"));
    assert_eq!(query.finish_reason.as_deref(), Some("length"));
    assert_eq!(query.since_ms, Some(1_738_324_800_000.0));
    assert_eq!(query.until_ms, Some(1_738_411_200_000.0));
    let flat = parse(&[("format", "flat"), ("valid", "false")]).unwrap();
    assert!(
        !flat.options.leaves_out_incomplete(),
        "flat keeps every row"
    );
    assert!(!flat.valid.reads_valid() && flat.valid.reads_invalid());
    let none = parse(&[("reasoning", "none")]).unwrap();
    assert_eq!(none.options.reasoning, Reasoning::Omit);
}

#[test]
fn a_mistake_is_a_400_that_names_the_parameter() {
    for (pairs, param, says) in [
        (
            vec![("format", "jsonl")],
            "format",
            "`openai_chat`, `sharegpt`, `flat`",
        ),
        (
            vec![("reasoning", "hidden")],
            "reasoning",
            "`field`, `inline`, `none`",
        ),
        (vec![("valid", "yes")], "valid", "true, false or all"),
        (
            vec![("include_incomplete", "1")],
            "include_incomplete",
            "true or false",
        ),
        (vec![("since", "yesterday")], "since", "ISO 8601"),
        (vec![("until", "2025-02-30")], "until", "ISO 8601"),
        (
            vec![("since", "2025-02-01"), ("until", "2025-01-01")],
            "until",
            "later than since",
        ),
        (vec![("limit", "10")], "limit", "unknown parameter 'limit'"),
        (vec![("Format", "flat")], "Format", "unknown parameter"),
    ] {
        let error = parse(&pairs).unwrap_err();
        assert_eq!(error.status, 400, "{pairs:?}");
        assert_eq!(error.param.as_deref(), Some(param), "{pairs:?}");
        assert!(error.message.contains(says), "{pairs:?}: {}", error.message);
        assert_eq!(error.body()["error"]["type"], "invalid_request_error");
    }
}

#[test]
fn times_are_iso_8601_or_milliseconds() {
    let day = 1_738_281_600_000.0; // 2025-01-31T00:00:00Z
    for (text, ms) in [
        ("1738281600000", Some(day)),
        ("1738281600000.5", Some(day + 0.5)),
        ("2025-01-31", Some(day)),
        ("2025-01-31T12:00", Some(day + 43_200_000.0)),
        ("2025-01-31t12:00:30", Some(day + 43_230_000.0)),
        ("2025-01-31 12:00:30Z", Some(day + 43_230_000.0)),
        ("2025-01-31T12:00:30.25Z", Some(day + 43_230_250.0)),
        ("2025-01-31T12:00:30,123456789z", Some(day + 43_230_123.0)),
        ("2025-01-31T13:00:00+01:00", Some(day + 43_200_000.0)),
        ("2025-01-31T13:00:00+0100", Some(day + 43_200_000.0)),
        ("2025-01-31T13:00:00+01", Some(day + 43_200_000.0)),
        // A `+` that a query string decoded to a space.
        ("2025-01-31T13:00:00 01:00", Some(day + 43_200_000.0)),
        ("2025-01-31T06:30:00-05:30", Some(day + 43_200_000.0)),
        ("  2025-01-31  ", Some(day)),
        ("2024-02-29", Some(1_709_164_800_000.0)),
        ("1970-01-01T00:00:00Z", Some(0.0)),
        ("1969-12-31", Some(-86_400_000.0)),
        ("2025-02-29", None),
        ("2025-13-01", None),
        ("2025-01-00", None),
        ("2025-01-31T24:00", None),
        ("2025-01-31T12:60", None),
        ("2025-01-31T12:00:60", None),
        ("2025-01-31T12", None),
        ("2025-01-31T12:00:00.", None),
        ("2025-01-31T12:00:00+1", None),
        ("2025-01-31T12:00:00+24:00", None),
        ("2025-01-31T12:00:00 PST", None),
        ("2025-1-31", None),
        ("25-01-31", None),
        ("2025/01/31", None),
        ("-1", None),
        ("1e3", None),
        ("", None),
        ("now", None),
        ("2025-01-31T12:00:00Z trailing", None),
        ("２０２５-01-31", None),
    ] {
        assert_eq!(parse_time(text), ms, "{text:?}");
    }
}

#[test]
fn since_and_until_bound_the_ids_of_their_times() {
    let query = parse(&[("since", "1700000000000.5"), ("until", "1700000001000")]).unwrap();
    let (after, before) = (query.first_cursor(), query.id_limit().unwrap());
    // An id of the millisecond `since` rounds up to is in; one of the millisecond before is not.
    assert!(new_id(1_700_000_000_001.0, 0.0, 0.0) > after);
    assert!(new_id(1_700_000_000_000.0, 1.0, 1.0) < after);
    assert!(new_id(1_700_000_000_999.0, 1.0, 1.0) < before);
    assert!(new_id(1_700_000_001_000.0, 0.0, 0.0) > before);
    // Before the epoch: every id.
    let early = parse(&[("since", "1969-01-01")]).unwrap();
    assert!(new_id(0.0, 0.0, 0.0) > early.first_cursor());
}

#[test]
fn the_file_is_named_by_format_reasoning_and_time() {
    let now = 1_738_325_045_999.0;
    assert_eq!(
        parse(&[]).unwrap().filename(now),
        "llm-distiller-openai_chat-field-20250131T120405Z.jsonl"
    );
    assert_eq!(
        parse(&[("format", "sharegpt"), ("reasoning", "none")])
            .unwrap()
            .filename(now),
        "llm-distiller-sharegpt-none-20250131T120405Z.jsonl"
    );
    assert_eq!(
        parse(&[("format", "flat"), ("reasoning", "inline")])
            .unwrap()
            .filename(now),
        "llm-distiller-flat-20250131T120405Z.jsonl"
    );
}

#[test]
fn the_query_budget_bounds_an_export_before_it_starts() {
    assert_eq!(ExportPlan::default().pages(), 0);
    let small = ExportPlan { rows: 1, bytes: 10 };
    assert_eq!(small.pages(), 1);
    assert_eq!(small.queries(), 4, "the count, one page, two retries");
    // 100,000 rows of 1.2 kB: well within the Paid plan's 1,000 queries.
    let hundred_k = ExportPlan {
        rows: 100_000,
        bytes: 120_000_000,
    };
    assert_eq!(
        hundred_k.pages(),
        100_000 / PAGE_ROWS + 120_000_000 / PAGE_BYTES + 1
    );
    assert!(hundred_k.check(DEFAULT_QUERY_BUDGET).is_ok());
    // ... but not the Free plan's 50: a 400 that says how to split it.
    let error = hundred_k.check(50).unwrap_err();
    assert_eq!(error.status, 400);
    assert_eq!(error.code.as_deref(), Some("export_too_large"));
    assert!(
        error.message.contains("since and until"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("100000 rows (120 MB)"),
        "{}",
        error.message
    );
    // The bound holds exactly at the budget.
    let at = ExportPlan {
        rows: PAGE_ROWS * 10 - 1,
        bytes: 0,
    };
    assert_eq!(at.queries(), 1 + 10 + 2);
    assert!(at.check(13).is_ok() && at.check(12).is_err());

    assert_eq!(query_budget(None), Ok(DEFAULT_QUERY_BUDGET));
    assert_eq!(query_budget(Some(" ")), Ok(DEFAULT_QUERY_BUDGET));
    assert_eq!(query_budget(Some("50")), Ok(50));
    for bad in ["3", "-5", "many", "1e3"] {
        assert!(query_budget(Some(bad)).is_err(), "{bad}");
    }
}

#[test]
fn rows_read_from_d1_or_from_javascript_read_alike() {
    // D1: numbers are floats, flags are 0 and 1, the request is text.
    let d1: ExportRow = serde_json::from_value(json!({
        "id": "rsp_1", "created_at": 5.0, "request": "{\"messages\":[]}", "content": "a",
        "prompt_tokens": 1.0, "completion_tokens": 2.0, "total_tokens": 3.0, "truncated": 1,
        "invalid_reason": null,
    }))
    .unwrap();
    assert!(d1.truncated);
    assert_eq!(d1.total_tokens, Some(3));
    let js: ExportRow = serde_json::from_value(json!({
        "id": "rsp_1", "created_at": 5, "request": "{\"messages\":[]}", "content": "a",
        "usage": { "prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3 }, "truncated": true,
    }))
    .unwrap();
    let flat = ExportOptions {
        format: Format::Flat,
        ..ExportOptions::default()
    };
    assert_eq!(line_of(&d1, &flat), line_of(&js, &flat));
    for bad in [
        json!({ "content": "no request" }),
        json!({ "request": "{}", "prompt_tokens": 1.5 }),
        json!({ "request": "{}", "prompt_tokens": -1 }),
        json!({ "request": "{}", "truncated": "yes" }),
        json!({ "request": "{}", "content": 5 }),
    ] {
        assert!(
            serde_json::from_value::<ExportRow>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn the_route_is_get_v1_export_behind_the_token() {
    use llm_distiller::endpoints::Endpoint;
    assert_eq!(Endpoint::resolve("GET", "/v1/export"), Ok(Endpoint::Export));
    assert!(Endpoint::Export.needs_token());
    let error = Endpoint::resolve("POST", "/v1/export").unwrap_err();
    assert_eq!(error.status, 405);
    assert_eq!(error.code.as_deref(), Some("method_not_allowed"));
}

// ---------------------------------------------------------------------------------------
// The statements, on SQLite with the migrations (as D1 runs them)

const T0: f64 = 1_700_000_000_000.0;

/// Rows of every kind the Worker stores, a second apart, in both tables: answers of two
/// providers, some at the token limit or filtered, a failure, a stream the client left, an
/// unclosed thinking, a row cut to fit, and a batch's lines.
fn stored_rows() -> Vec<Record> {
    let request = r#"{"messages":[{"role":"user","content":"2+2?"}]}"#;
    let error = llm_distiller::Error::Connection {
        provider: "main".into(),
        message: "reset".into(),
    };
    (0..18u32)
        .map(|i| {
            let at = T0 + f64::from(i) * 1_000.0;
            let id = new_id(at, 0.5, f64::from(i) / 100.0);
            let response = LlmResponse {
                provider: ["main", "backup"][i as usize % 2].into(),
                finish_reason: Some(
                    ["stop", "stop", "length", "content_filter"][i as usize % 4].into(),
                ),
                thinking_unclosed: i == 7,
                content: if i == 13 {
                    "a".repeat(MAX_CONTENT_BYTES + 1)
                } else {
                    format!("answer {i}")
                },
                ..llm_response()
            };
            let record = match i % 6 {
                4 => Record::failure(id, at, request, "backup", "m", &error).unwrap(),
                5 => Record::cut_short(id, at, request, &response, false, CutShort::ClientGone),
                _ => Record::answer(id, at, request, &response, false),
            };
            if i % 3 == 0 {
                record.for_batch("batch_a", &format!("line-{i}"))
            } else {
                record
            }
        })
        .collect()
}

fn stored(records: &[Record]) -> Db {
    let db = Db::new();
    for record in records {
        db.run(&record.insert());
    }
    db
}

/// What the Worker does with the statements: count, plan, then every page after the
/// cursor. The plan and the rows of each page.
fn read_export(db: &Db, query: &ExportQuery) -> (ExportPlan, Vec<Vec<ExportRow>>) {
    let counted: Vec<Counted> = db.rows(&sql::count(query));
    let (plan, snapshots) = sql::plan(query, &counted);
    let mut page = sql::page(query, &snapshots);
    let (mut cursor, mut read, mut pages) = (query.first_cursor(), 0, Vec::new());
    while read < plan.rows {
        let rows: Vec<ExportRow> = db.rows(page.after(&cursor));
        let Some(last) = rows.last() else { break };
        cursor = last.id.clone().unwrap();
        read += rows.len() as u64;
        pages.push(rows);
    }
    (plan, pages)
}

fn stored_bytes(record: &Record) -> u64 {
    (record.request.len() + record.content.len() + record.thinking.as_deref().map_or(0, str::len))
        as u64
}

#[test]
fn the_statements_read_exactly_the_rows_the_filters_and_the_incomplete_rule_say() {
    let records = stored_rows();
    let db = stored(&records);
    let since = T0 + 3_000.0;
    let until = T0 + 13_500.0;
    let queries = [
        String::new(),
        "valid=false".into(),
        "valid=all".into(),
        "valid=all&include_incomplete=true".into(),
        "valid=false&include_incomplete=true".into(),
        "valid=all&provider=backup".into(),
        "valid=all&batch_id=batch_a&include_incomplete=true".into(),
        "valid=all&finish_reason=content_filter".into(),
        "valid=all&model=m".into(),
        format!("valid=all&since={since}&until={until}"),
        format!("format=flat&valid=all&since={since}"),
        "provider=nobody".into(),
    ];
    for query_string in queries {
        let query = parse(
            &query_string
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| p.split_once('=').unwrap())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        // The reference: the filters in Rust, and `ExportRow::incomplete` for the rule the
        // SQL applies to the stored columns.
        let expected: Vec<&Record> = records
            .iter()
            .filter(|r| {
                if r.is_valid() {
                    query.valid.reads_valid()
                } else {
                    query.valid.reads_invalid()
                }
            })
            .filter(|r| query.provider.as_ref().is_none_or(|p| *p == r.provider))
            .filter(|r| query.model.as_ref().is_none_or(|m| *m == r.model))
            .filter(|r| query.batch_id.is_none() || query.batch_id == r.batch_id)
            .filter(|r| query.finish_reason.is_none() || query.finish_reason == r.finish_reason)
            .filter(|r| query.since_ms.is_none_or(|t| r.created_at >= t))
            .filter(|r| query.until_ms.is_none_or(|t| r.created_at < t))
            .filter(|r| {
                !query.options.leaves_out_incomplete() || worker_row(r).incomplete().is_none()
            })
            .collect();
        let mut expected_ids: Vec<&str> = expected.iter().map(|r| r.id.as_str()).collect();
        expected_ids.sort_unstable();

        let (plan, pages) = read_export(&db, &query);
        let ids: Vec<&str> = pages
            .iter()
            .flatten()
            .map(|r| r.id.as_deref().unwrap())
            .collect();
        assert_eq!(ids, expected_ids, "{query_string:?}");
        assert_eq!(plan.rows, expected.len() as u64, "{query_string:?}");
        assert_eq!(
            plan.bytes,
            expected.iter().map(|r| stored_bytes(r)).sum::<u64>(),
            "{query_string:?}"
        );
        // Each row reads back as the Worker stored it.
        for row in pages.iter().flatten() {
            let record = records
                .iter()
                .find(|r| row.id.as_deref() == Some(r.id.as_str()))
                .unwrap();
            assert_eq!(row, &worker_row(record), "{query_string:?}");
        }
    }
    // The filters given shape the SQL; their values are only bound.
    let query = parse(&[("provider", "x' OR 1=1 --"), ("valid", "all")]).unwrap();
    assert!(!sql::count(&query).sql.contains("OR 1=1"));
    assert_eq!(read_export(&db, &query).0.rows, 0);
}

#[test]
fn a_page_holds_at_most_page_bytes_past_its_first_row_and_nothing_stored_after_the_count() {
    let request = r#"{"messages":[{"role":"user","content":"Long?"}]}"#;
    // Rows of about 1.4 MB: three make a page (the third starts under PAGE_BYTES).
    let big = |i: u32| {
        let response = LlmResponse {
            content: "c".repeat(MAX_CONTENT_BYTES),
            thinking: Some("t".repeat(MAX_THINKING_BYTES)),
            ..llm_response()
        };
        let at = T0 + f64::from(i);
        Record::answer(new_id(at, 0.0, 0.0), at, request, &response, false)
    };
    let records: Vec<Record> = (0..7).map(big).collect();
    let db = stored(&records);
    let query = parse(&[]).unwrap();
    let counted: Vec<Counted> = db.rows(&sql::count(&query));
    let (plan, snapshots) = sql::plan(&query, &counted);
    assert_eq!(plan.rows, 7);
    // Stored after the count: not part of this export.
    db.run(&big(100).insert());

    let mut page = sql::page(&query, &snapshots);
    let mut cursor = query.first_cursor();
    let mut sizes = Vec::new();
    loop {
        let rows: Vec<ExportRow> = db.rows(page.after(&cursor));
        let Some(last) = rows.last() else { break };
        cursor = last.id.clone().unwrap();
        // Their stored sizes; a row stored after the count has none here.
        let bytes: Vec<u64> = rows
            .iter()
            .map(|row| {
                let id = row.id.as_deref().unwrap();
                stored_bytes(records.iter().find(|r| r.id == id).unwrap())
            })
            .collect();
        let before_last: u64 = bytes[..bytes.len() - 1].iter().sum();
        assert!(before_last < PAGE_BYTES, "{bytes:?}");
        sizes.push(rows.len());
    }
    assert_eq!(sizes, [3, 3, 1]);
    assert!(sizes.len() as u64 <= plan.pages());
}

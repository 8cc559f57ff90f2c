//! The row the Worker stores for every answer: which table it goes to and why, how giant
//! fields are cut to fit D1, the time-ordered ids, and the listing's query parameters.
// Native only: these run on a simulated platform or use proptest; the wasm tests are js_*.rs.
#![cfg(not(target_arch = "wasm32"))]

mod support;

use llm_distiller::chat::LlmResponse;
use llm_distiller::record::{
    is_id, new_id, CutShort, ListQuery, Record, MAX_CONTENT_BYTES, MAX_INVALID_REASON_BYTES,
    MAX_LABEL_BYTES, MAX_REASONING_BYTES, MAX_REQUEST_BYTES, MAX_THINKING_BYTES,
};
use llm_distiller::Error;
use proptest::prelude::*;
use support::{assert_invalid, llm_response};

/// D1's limit on one row, in bytes.
const D1_MAX_ROW_BYTES: usize = 2_000_000;

const REQUEST: &str = r#"{"messages":[{"role":"user","content":"2+2?"}],"config":{}}"#;

fn response() -> LlmResponse {
    LlmResponse {
        reasoning: Some("Add them.".into()),
        thinking: Some("Add them.\n\n2 and 2 make 4.".into()),
        response_time: 0.2505,
        response_time_ms: 250.5,
        attempts: 2,
        waited_ms: 1000.0,
        ..llm_response()
    }
}

fn id() -> String {
    new_id(1_700_000_000_000.0, 0.25, 0.75)
}

fn answer(response: &LlmResponse, wants_json: bool) -> Record {
    Record::answer(id(), 1_700_000_000_000.0, REQUEST, response, wants_json)
}

/// The `code` of an invalid record's reason (`code: message`).
fn reason_code(record: &Record) -> &str {
    let reason = record
        .invalid_reason
        .as_deref()
        .unwrap_or_else(|| panic!("expected an invalid record: {record:?}"));
    let (code, message) = reason
        .split_once(": ")
        .unwrap_or_else(|| panic!("not `code: message`: {reason:?}"));
    assert!(!message.trim().is_empty(), "{reason:?}");
    code
}

/// Text of at least `min_len` bytes, made of multibyte characters, in which byte `max`
/// falls inside a character: a naive cut there would split it.
fn straddling(max: usize, min_len: usize) -> String {
    let body = "日本語テキスト€🦀é";
    let padding = (0..8)
        .map(|n| "a".repeat(n))
        .find(|pad| {
            let probe: String = pad.clone() + &body.repeat(max / body.len() + 2);
            !probe.is_char_boundary(max)
        })
        .expect("some padding puts the limit inside a character");
    let text = padding + &body.repeat(min_len / body.len() + 1);
    assert!(text.len() >= min_len);
    assert!(
        !text.is_char_boundary(max),
        "the test needs a limit inside a character"
    );
    text
}

/// The bytes a row takes in D1: its text, and 8 for each number (the `truncated` flag too).
fn row_bytes(record: &Record) -> usize {
    let text: usize = [
        record.id.as_str(),
        &record.provider,
        &record.model,
        &record.request,
        &record.content,
        record.thinking.as_deref().unwrap_or(""),
        record.reasoning.as_deref().unwrap_or(""),
        record.finish_reason.as_deref().unwrap_or(""),
        record.upstream_id.as_deref().unwrap_or(""),
        record.invalid_reason.as_deref().unwrap_or(""),
    ]
    .iter()
    .map(|s| s.len())
    .sum();
    text + 6 * 8
}

/// Checks that `kept` is `original` cut at a character boundary just under `max`.
fn assert_cut(kept: &str, original: &str, max: usize, what: &str) {
    assert!(kept.len() <= max, "{what}: {} > {max}", kept.len());
    assert!(
        kept.len() > max - 4,
        "{what}: cut more than one character short: {} for {max}",
        kept.len()
    );
    assert!(original.starts_with(kept), "{what}: not a prefix");
}

// ---------------------------------------------------------------------------------------
// Record::answer: valid or not, and why

#[test]
fn a_valid_answer_goes_to_responses_with_every_field() {
    let r = response();
    let record = Record::answer(id(), 1_700_000_000_123.0, REQUEST, &r, false);
    assert!(record.is_valid());
    assert_eq!(record.table(), "responses");
    assert_eq!(record.invalid_reason, None);
    assert_eq!(record.id, id());
    assert_eq!(record.created_at, 1_700_000_000_123.0);
    assert_eq!(record.provider, "main");
    assert_eq!(record.model, "gpt-4o-2024-08-06");
    assert_eq!(record.request, REQUEST);
    assert_eq!(record.content, "The answer is 4.");
    assert_eq!(
        record.thinking.as_deref(),
        Some("Add them.\n\n2 and 2 make 4.")
    );
    assert_eq!(record.reasoning.as_deref(), Some("Add them."));
    assert_eq!(record.finish_reason.as_deref(), Some("stop"));
    assert_eq!(record.prompt_tokens, Some(11));
    assert_eq!(record.completion_tokens, Some(7));
    assert_eq!(record.total_tokens, Some(18));
    assert_eq!(record.response_time_ms, 250.5);
    assert_eq!(record.upstream_id.as_deref(), Some("chatcmpl-upstream"));
    assert!(!record.truncated);
}

#[test]
fn an_answer_without_usage_has_no_token_counts() {
    let mut r = response();
    r.usage = None;
    r.thinking = None;
    r.reasoning = None;
    r.id = None;
    let record = answer(&r, false);
    assert!(record.is_valid());
    assert_eq!(
        (
            record.prompt_tokens,
            record.completion_tokens,
            record.total_tokens
        ),
        (None, None, None)
    );
    assert_eq!(record.thinking, None);
    assert_eq!(record.reasoning, None);
    assert_eq!(record.upstream_id, None);
}

#[test]
fn another_finish_reason_is_invalid() {
    for reason in ["length", "content_filter", "tool_calls"] {
        let mut r = response();
        r.finish_reason = Some(reason.into());
        let record = answer(&r, false);
        assert!(!record.is_valid());
        assert_eq!(record.table(), "invalid_responses");
        assert_eq!(reason_code(&record), "finish_reason");
        assert!(
            record.invalid_reason.as_deref().unwrap().contains(reason),
            "{record:?}"
        );
        assert_eq!(
            record.finish_reason.as_deref(),
            Some(reason),
            "kept as given"
        );
    }
    let mut r = response();
    r.finish_reason = None;
    let record = answer(&r, false);
    assert_eq!(record.table(), "invalid_responses");
    assert_eq!(reason_code(&record), "finish_reason");
}

#[test]
fn an_unclosed_thinking_block_is_invalid() {
    let mut r = response();
    r.thinking_unclosed = true;
    let record = answer(&r, false);
    assert_eq!(record.table(), "invalid_responses");
    assert_eq!(reason_code(&record), "unclosed_thinking");
}

#[test]
fn an_empty_answer_is_invalid() {
    for content in ["", "  \n\t "] {
        let mut r = response();
        r.content = content.into();
        let record = answer(&r, false);
        assert_eq!(record.table(), "invalid_responses");
        assert_eq!(reason_code(&record), "empty_content");
    }
}

#[test]
fn json_that_does_not_parse_is_invalid_only_when_json_was_asked_for() {
    let mut r = response();
    r.content = "{\"answer\": 4".into();
    let record = answer(&r, true);
    assert_eq!(record.table(), "invalid_responses");
    assert_eq!(reason_code(&record), "invalid_json");

    assert!(
        answer(&r, false).is_valid(),
        "prose is fine when JSON was not asked for"
    );

    r.content = "{\"answer\": 4}".into();
    assert!(answer(&r, true).is_valid());
}

#[test]
fn the_finish_reason_is_reported_first() {
    let mut r = response();
    r.finish_reason = Some("length".into());
    r.thinking_unclosed = true;
    r.content = String::new();
    assert_eq!(reason_code(&answer(&r, true)), "finish_reason");
}

// ---------------------------------------------------------------------------------------
// Record::answer: fitting D1

#[test]
fn giant_fields_are_cut_at_a_character_boundary_under_the_row_limit() {
    let three_mb = 3_000_000;
    let content = straddling(MAX_CONTENT_BYTES, three_mb);
    let thinking = straddling(MAX_THINKING_BYTES, three_mb);
    let reasoning = straddling(MAX_REASONING_BYTES, three_mb);
    let request = straddling(MAX_REQUEST_BYTES, three_mb);
    let mut r = response();
    r.content = content.clone();
    r.thinking = Some(thinking.clone());
    r.reasoning = Some(reasoning.clone());

    let record = Record::answer(id(), 1.7e12, &request, &r, false);
    assert!(record.truncated);
    assert!(
        record.is_valid(),
        "cut to fit, never refused: {:?}",
        record.invalid_reason
    );
    assert_cut(&record.content, &content, MAX_CONTENT_BYTES, "content");
    assert_cut(
        record.thinking.as_deref().unwrap(),
        &thinking,
        MAX_THINKING_BYTES,
        "thinking",
    );
    assert_cut(
        record.reasoning.as_deref().unwrap(),
        &reasoning,
        MAX_REASONING_BYTES,
        "reasoning",
    );
    assert_cut(&record.request, &request, MAX_REQUEST_BYTES, "request");
    assert!(
        row_bytes(&record) < D1_MAX_ROW_BYTES,
        "{} bytes",
        row_bytes(&record)
    );
}

#[test]
fn every_field_of_a_giant_answer_is_cut_to_fit_the_row() {
    // The upstream names the model, the id and the finish reason: any size it likes. An
    // unknown finish reason is also quoted in the invalid reason.
    let giant = straddling(MAX_LABEL_BYTES, 3_000_000);
    let r = LlmResponse {
        content: giant.clone(),
        thinking: Some(giant.clone()),
        reasoning: Some(giant.clone()),
        model: giant.clone(),
        id: Some(giant.clone()),
        finish_reason: Some(giant.clone()),
        provider: giant.clone(),
        ..response()
    };
    let received = Error::InvalidResponse {
        provider: "main".into(),
        message: giant.clone(),
    };
    let records = [
        Record::answer(id(), 0.0, &giant, &r, true),
        Record::cut_short(id(), 0.0, &giant, &r, true, CutShort::Error(&received)),
    ];
    for record in records {
        assert!(record.truncated);
        assert!(
            row_bytes(&record) < D1_MAX_ROW_BYTES,
            "{} bytes",
            row_bytes(&record)
        );
        assert_cut(&record.model, &giant, MAX_LABEL_BYTES, "model");
        assert_cut(&record.provider, &giant, MAX_LABEL_BYTES, "provider");
        let upstream_id = record.upstream_id.as_deref().unwrap();
        assert_cut(upstream_id, &giant, MAX_LABEL_BYTES, "upstream_id");
        let finish_reason = record.finish_reason.as_deref().unwrap();
        assert_cut(finish_reason, &giant, MAX_LABEL_BYTES, "finish_reason");
        let reason = record.invalid_reason.as_deref().unwrap();
        assert!(reason.len() <= MAX_INVALID_REASON_BYTES, "{}", reason.len());
        assert!(
            reason.len() > MAX_INVALID_REASON_BYTES - 4,
            "{}",
            reason.len()
        );
    }
}

#[test]
fn one_giant_field_alone_sets_truncated() {
    let mut r = response();
    r.thinking = Some(straddling(MAX_THINKING_BYTES, MAX_THINKING_BYTES + 10));
    let record = answer(&r, false);
    assert!(record.truncated);
    assert_eq!(
        record.content, "The answer is 4.",
        "the other fields are whole"
    );
    assert_eq!(record.request, REQUEST);

    let record = Record::answer(
        id(),
        0.0,
        &"x".repeat(MAX_REQUEST_BYTES + 1),
        &response(),
        false,
    );
    assert!(record.truncated, "the request counts too");
    assert_eq!(record.request.len(), MAX_REQUEST_BYTES);
}

#[test]
fn a_field_of_exactly_the_limit_is_kept_whole() {
    let mut r = response();
    r.content = "é".repeat(MAX_CONTENT_BYTES / 2);
    assert_eq!(r.content.len(), MAX_CONTENT_BYTES);
    r.reasoning = Some("r".repeat(MAX_REASONING_BYTES));
    let record = Record::answer(id(), 0.0, &"q".repeat(MAX_REQUEST_BYTES), &r, false);
    assert!(!record.truncated);
    assert_eq!(record.content, r.content);
    assert_eq!(record.reasoning, r.reasoning);

    r.content.push('!');
    let record = answer(&r, false);
    assert!(record.truncated);
    assert_eq!(record.content.len(), MAX_CONTENT_BYTES);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_cut_is_a_prefix_at_a_character_boundary(
        unit in "\\PC{1,8}",
        extra in 1usize..64,
    ) {
        // Just over the limit, so the cut lands at every offset inside a character.
        let content = unit.repeat(MAX_CONTENT_BYTES / unit.len() + 1) + &"é".repeat(extra);
        let mut r = response();
        r.content = content.clone();
        let record = answer(&r, false);
        prop_assert!(record.truncated);
        assert_cut(&record.content, &content, MAX_CONTENT_BYTES, "content");
    }
}

// ---------------------------------------------------------------------------------------
// Record::failure

#[test]
fn a_failed_call_is_stored_as_invalid_with_the_error() {
    let error = Error::Http {
        provider: "backup".into(),
        status: 500,
        message: "the server had an error".into(),
        error_type: None,
        code: None,
        param: None,
        retry_after_ms: None,
        should_retry: None,
    };
    let record = Record::failure(id(), 1.7e12, REQUEST, "main", "gpt-4o", &error).expect("stored");
    assert!(!record.is_valid());
    assert_eq!(record.table(), "invalid_responses");
    let reason = record.invalid_reason.as_deref().unwrap();
    assert!(reason.starts_with("upstream_error: "), "{reason}");
    assert!(reason.contains("the server had an error"), "{reason}");
    assert_eq!(reason_code(&record), "upstream_error");
    assert_eq!(record.provider, "backup", "the provider the error is about");
    assert_eq!(record.model, "gpt-4o");
    assert_eq!(record.request, REQUEST);
    assert_eq!(record.content, "");
    assert_eq!(record.thinking, None);
    assert_eq!(record.finish_reason, None);
    assert_eq!(record.prompt_tokens, None);
    assert_eq!(record.upstream_id, None);
    assert!(!record.truncated);
}

#[test]
fn a_failure_after_failover_names_the_last_provider() {
    let error = Error::AllProvidersFailed {
        errors: vec![
            (
                "main".into(),
                Error::Timeout {
                    provider: "main".into(),
                    after_ms: 1000.0,
                },
            ),
            (
                "backup".into(),
                Error::Connection {
                    provider: "backup".into(),
                    message: "reset".into(),
                },
            ),
        ],
    };
    let record = Record::failure(id(), 0.0, REQUEST, "main", "m", &error).expect("stored");
    assert_eq!(record.provider, "backup");
    assert_eq!(reason_code(&record), "upstream_error");
}

#[test]
fn a_failure_about_no_provider_keeps_the_one_asked_for() {
    let record = Record::failure(id(), 0.0, REQUEST, "main", "m", &Error::Aborted).expect("stored");
    assert_eq!(record.provider, "main");
    assert!(record
        .invalid_reason
        .as_deref()
        .unwrap()
        .contains("aborted"));
}

#[test]
fn a_failure_after_thousands_of_attempts_still_fits_a_row() {
    // 5,000 failed attempts quoting 500 characters each: 2.7 MB of reason.
    let attempt = |i: usize| {
        let message = format!("{i} {}", "é".repeat(500));
        (
            format!("p{i}"),
            Error::Connection {
                provider: format!("p{i}"),
                message,
            },
        )
    };
    let error = Error::AllProvidersFailed {
        errors: (0..5_000).map(attempt).collect(),
    };
    let full = format!("upstream_error: {error}");
    assert!(full.len() > D1_MAX_ROW_BYTES);
    let record = Record::failure(id(), 0.0, REQUEST, "main", "m", &error).expect("stored");
    assert!(record.truncated);
    assert_eq!(record.request, REQUEST, "the other fields are whole");
    let reason = record.invalid_reason.as_deref().unwrap();
    assert_cut(reason, &full, MAX_INVALID_REASON_BYTES, "invalid_reason");
    assert_eq!(reason_code(&record), "upstream_error");
    assert!(row_bytes(&record) < D1_MAX_ROW_BYTES);
}

#[test]
fn a_failures_giant_request_is_cut() {
    let request = straddling(MAX_REQUEST_BYTES, 3_000_000);
    let record =
        Record::failure(id(), 0.0, &request, "main", "m", &Error::Aborted).expect("stored");
    assert!(record.truncated);
    assert_cut(&record.request, &request, MAX_REQUEST_BYTES, "request");
}

// ---------------------------------------------------------------------------------------
// Ids

#[test]
fn an_id_is_rsp_then_the_time_then_64_random_bits() {
    let id = new_id(1_700_000_000_000.0, 0.0, 1.0);
    assert_eq!(id, "rsp_018bcfe5680000000000ffffffff");
    assert!(is_id(&id));
    assert_eq!(id.len(), 32);
}

#[test]
fn ids_of_odd_inputs_still_have_the_shape() {
    for (now, a, b) in [
        (f64::NAN, 0.5, 0.5),
        (-1.0, 0.5, 0.5),
        (f64::INFINITY, 0.5, 0.5),
        (1.7e12, f64::NAN, -3.0),
        (1.7e12, 7.0, f64::INFINITY),
        // Beyond 12 hex digits of milliseconds (the year 10889): the largest that fit.
        (1.8e19, 0.5, 0.5),
        (281_474_976_710_656.0, 0.5, 0.5),
    ] {
        let id = new_id(now, a, b);
        assert!(is_id(&id), "{now} {a} {b} → {id}");
    }
}

#[test]
fn distinct_random_parts_give_distinct_ids() {
    let t = 1_700_000_000_000.0;
    let base = new_id(t, 0.1, 0.2);
    assert_ne!(base, new_id(t, 0.3, 0.2), "the first random part");
    assert_ne!(base, new_id(t, 0.1, 0.4), "the second random part");
    assert_ne!(
        new_id(t, 0.1, 0.2),
        new_id(t, 0.2, 0.1),
        "the parts are ordered"
    );
    assert_eq!(base, new_id(t, 0.1, 0.2), "the same inputs, the same id");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn later_ids_sort_after_earlier_ones(
        earlier in 0u64..(1u64 << 47),
        gap in 1u64..(1u64 << 40),
        a in 0.0f64..1.0, b in 0.0f64..1.0, c in 0.0f64..1.0, d in 0.0f64..1.0,
    ) {
        let later = earlier + gap;
        let first = new_id(earlier as f64, a, b);
        let second = new_id(later as f64, c, d);
        prop_assert!(is_id(&first) && is_id(&second));
        prop_assert!(first < second, "{} !< {}", first, second);
    }

    #[test]
    fn is_id_never_panics(text in "\\PC{0,40}") {
        let _ = is_id(&text);
    }
}

#[test]
fn is_id_rejects_other_text() {
    let good = id();
    assert!(is_id(&good));
    let others: Vec<String> = vec![
        String::new(),
        "rsp_".into(),
        "rsp_018bcfe56800".into(),
        good[..31].into(),
        format!("{good}0"),
        good.replacen("rsp_", "res_", 1),
        good.replacen("rsp_", "RSP_", 1),
        format!("rsp_{}g", &good[4..31]),
        format!("rsp_{} ", &good[4..31]),
        format!("rsp_{}", "é".repeat(14)),
        "chatcmpl-0123456789abcdefghijklm".into(),
    ];
    for text in &others {
        assert!(!is_id(text), "{text:?}");
    }
}

// ---------------------------------------------------------------------------------------
// ListQuery

fn query(pairs: &[(&str, &str)]) -> Result<ListQuery, llm_distiller::openai_api::ApiError> {
    ListQuery::parse(pairs.iter().copied())
}

fn assert_refused(pairs: &[(&str, &str)], param: &str) {
    assert_invalid(&query(pairs).expect_err("refused"), param);
}

#[test]
fn no_parameters_give_the_defaults() {
    assert_eq!(
        query(&[]).unwrap(),
        ListQuery {
            limit: 20,
            cursor: None,
            provider: None,
            model: None,
            valid: None
        }
    );
}

#[test]
fn every_parameter_is_read() {
    let cursor = id();
    let q = query(&[
        ("limit", "50"),
        ("cursor", cursor.as_str()),
        ("provider", "main"),
        ("model", "gpt-4o"),
        ("valid", "false"),
    ])
    .unwrap();
    assert_eq!(
        q,
        ListQuery {
            limit: 50,
            cursor: Some(cursor),
            provider: Some("main".into()),
            model: Some("gpt-4o".into()),
            valid: Some(false),
        }
    );
}

#[test]
fn limit_is_1_to_100() {
    assert_eq!(query(&[("limit", "1")]).unwrap().limit, 1);
    assert_eq!(query(&[("limit", "100")]).unwrap().limit, 100);
    for limit in ["0", "101", "x", "-1", "", "2.5", "99999999999"] {
        assert_refused(&[("limit", limit)], "limit");
    }
}

#[test]
fn cursor_must_be_an_id() {
    let cursor = new_id(1.7e12, 0.5, 0.5);
    assert_eq!(
        query(&[("cursor", cursor.as_str())]).unwrap().cursor,
        Some(cursor.clone())
    );
    for bad in ["", "abc", "1' OR '1'='1", &cursor[..20]] {
        assert_refused(&[("cursor", bad)], "cursor");
    }
}

#[test]
fn valid_is_true_false_or_absent() {
    assert_eq!(query(&[("valid", "true")]).unwrap().valid, Some(true));
    assert_eq!(query(&[("valid", "false")]).unwrap().valid, Some(false));
    assert_eq!(query(&[("valid", "")]).unwrap().valid, None);
    for bad in ["yes", "1", "TRUE", "no"] {
        assert_refused(&[("valid", bad)], "valid");
    }
}

#[test]
fn empty_filters_filter_nothing() {
    let q = query(&[("provider", ""), ("model", "")]).unwrap();
    assert_eq!((q.provider, q.model), (None, None));
}

#[test]
fn an_unknown_parameter_is_a_400() {
    assert_refused(&[("limit", "5"), ("offset", "10")], "offset");
    let error = query(&[("sort", "asc")]).unwrap_err();
    for known in ["limit", "cursor", "provider", "model", "valid"] {
        assert!(
            error.message.contains(known),
            "the message lists {known}: {error:?}"
        );
    }
}

#[test]
fn a_call_that_sent_nothing_stores_no_row() {
    let unavailable = Error::config("providers.main.api_key", "no API key");
    assert_eq!(
        Record::failure(id(), 0.0, REQUEST, "main", "m", &unavailable),
        None
    );
    let bad_call = Error::config("temperature", "must be between 0 and 2, got 3");
    assert_eq!(
        Record::failure(id(), 0.0, REQUEST, "main", "m", &bad_call),
        None
    );
}

#[test]
fn a_stream_cut_short_keeps_what_arrived_as_invalid() {
    let received = response();
    let error = Error::Timeout {
        provider: "main".into(),
        after_ms: 3000.0,
    };
    for (why, reason) in [
        (CutShort::Error(&error), "stream_error: "),
        (
            CutShort::NoAnswer,
            "stream_error: the upstream stream ended without an answer",
        ),
        (CutShort::ClientGone, "client_disconnected: "),
    ] {
        let record = Record::cut_short(id(), 1.0, REQUEST, &received, false, why);
        assert!(!record.is_valid());
        assert_eq!(record.table(), "invalid_responses");
        assert!(
            record
                .invalid_reason
                .as_deref()
                .unwrap()
                .starts_with(reason),
            "{record:?}"
        );
        assert_eq!(record.content, received.content);
        assert_eq!(record.thinking, received.thinking);
    }
}

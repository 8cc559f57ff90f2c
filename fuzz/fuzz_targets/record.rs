//! The rows the Worker stores (`record.rs`): `Record::answer`, `Record::cut_short` and
//! `Record::failure` for answers and errors of any size, each also as a batch line's
//! (`Record::for_batch`).
//!
//! Input (arbitrary): the size of every field, the characters it is made of, and the shape
//! of the answer or the error.
//!
//! Checks: every row fits D1's 2,000,000-byte limit; every field is the original cut at a
//! character boundary within its limit, and the row says `truncated` exactly when one was
//! cut; an answer goes to the table its validation decides, a cut-short stream and a
//! failure to the invalid one; a configuration error stores no row.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use llm_distiller::chat::{LlmResponse, Usage};
use llm_distiller::record::{
    CutShort, Record, MAX_CONTENT_BYTES, MAX_INVALID_REASON_BYTES, MAX_LABEL_BYTES,
    MAX_REASONING_BYTES, MAX_REQUEST_BYTES, MAX_THINKING_BYTES,
};
use llm_distiller::validate::validate;
use llm_distiller::Error;

const D1_MAX_ROW_BYTES: usize = 2_000_000;

/// What fields are made of: so that a limit falls inside a character.
const UNITS: [&str; 6] = ["a", "é", "€", "🦀", "a€🦀é", " {\"x\":1}"];

#[derive(Arbitrary, Debug)]
struct Row {
    unit: u8,
    /// Sizes, each taken relative to its field's limit so that both sides of it are hit.
    request: u32,
    content: u32,
    thinking: Option<u32>,
    reasoning: Option<u32>,
    model: u32,
    provider: u32,
    upstream_id: Option<u32>,
    finish_reason: Option<Finish>,
    thinking_unclosed: bool,
    wants_json: bool,
    usage: Option<(u64, u64, u64)>,
    kind: Kind,
    /// The sizes of the batch id and the line's `custom_id`, for a batch line's row.
    batch: Option<(u32, u32)>,
}

#[derive(Arbitrary, Debug)]
enum Finish {
    Stop,
    Other(u32),
}

#[derive(Arbitrary, Debug)]
enum Kind {
    Answer,
    NoAnswer,
    ClientGone,
    StreamError(u32),
    /// A failure after this many attempts, each quoting a message of this size.
    Failure(u16, u16),
    ConfigError,
}

fuzz_target!(|row: Row| {
    let unit = UNITS[usize::from(row.unit) % UNITS.len()];
    let text = |size: u32, max: usize| -> String {
        let size = size as usize % (2 * max + 16);
        unit.repeat(size / unit.len() + 1)
    };
    let request = text(row.request, MAX_REQUEST_BYTES);
    let response = LlmResponse {
        content: text(row.content, MAX_CONTENT_BYTES),
        reasoning: row.reasoning.map(|n| text(n, MAX_REASONING_BYTES)),
        thinking: row.thinking.map(|n| text(n, MAX_THINKING_BYTES)),
        thinking_unclosed: row.thinking_unclosed,
        model: text(row.model, MAX_LABEL_BYTES),
        usage: row.usage.map(|(p, c, t)| Usage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: t,
        }),
        finish_reason: row.finish_reason.map(|f| match f {
            Finish::Stop => "stop".to_string(),
            Finish::Other(n) => text(n, MAX_LABEL_BYTES),
        }),
        response_time: 0.001,
        response_time_ms: 1.0,
        provider: text(row.provider, MAX_LABEL_BYTES),
        id: row.upstream_id.map(|n| text(n, MAX_LABEL_BYTES)),
        attempts: 1,
        waited_ms: 0.0,
        raw_response: None,
    };
    let id = "rsp_018bcfe5680000000000ffffffff".to_string();
    // The row, and the reason and provider it should hold before any cut.
    let (mut record, reason, provider) = match row.kind {
        Kind::Answer => {
            let record = Record::answer(id, 0.0, &request, &response, row.wants_json);
            let reason = validate(&response, row.wants_json)
                .err()
                .map(|r| format!("{}: {r}", r.code()));
            (record, reason, response.provider.clone())
        }
        Kind::NoAnswer | Kind::ClientGone | Kind::StreamError(_) => {
            let error = Error::InvalidResponse {
                provider: "p".into(),
                message: match row.kind {
                    Kind::StreamError(n) => text(n, MAX_INVALID_REASON_BYTES),
                    _ => String::new(),
                },
            };
            let (why, reason) = match row.kind {
                Kind::NoAnswer => (
                    CutShort::NoAnswer,
                    "stream_error: the upstream stream ended without an answer".to_string(),
                ),
                Kind::ClientGone => (
                    CutShort::ClientGone,
                    "client_disconnected: the client closed the stream before its end".to_string(),
                ),
                _ => (CutShort::Error(&error), format!("stream_error: {error}")),
            };
            let record = Record::cut_short(id, 0.0, &request, &response, row.wants_json, why);
            (record, Some(reason), response.provider.clone())
        }
        Kind::Failure(..) | Kind::ConfigError => {
            let error = match row.kind {
                Kind::Failure(attempts, size) => Error::AllProvidersFailed {
                    errors: (0..attempts % 2_000)
                        .map(|i| {
                            let provider = format!("p{i}");
                            let message = text(u32::from(size), 1_000);
                            (provider.clone(), Error::Connection { provider, message })
                        })
                        .collect(),
                },
                _ => Error::config("temperature", "must be between 0 and 2"),
            };
            let (provider, model) = (&response.provider, &response.model);
            let record = Record::failure(id, 0.0, &request, provider, model, &error);
            if matches!(error, Error::Config { .. }) {
                assert_eq!(record, None, "nothing was sent, nothing is stored");
                return;
            }
            let provider = error.provider().unwrap_or(provider).to_string();
            let reason = format!("upstream_error: {error}");
            (record.expect("a row"), Some(reason), provider)
        }
    };
    let batch = row
        .batch
        .map(|(b, c)| (text(b, MAX_LABEL_BYTES), text(c, MAX_LABEL_BYTES)));
    if let Some((batch_id, custom_id)) = &batch {
        record = record.for_batch(batch_id, custom_id);
    }
    assert_eq!(record.is_valid(), reason.is_none());
    assert_eq!(
        record.table(),
        if reason.is_none() {
            "responses"
        } else {
            "invalid_responses"
        }
    );

    let mut cut = false;
    let mut check = |kept: Option<&String>, original: Option<&String>, max: usize| {
        assert_eq!(kept.is_some(), original.is_some());
        let (Some(kept), Some(original)) = (kept, original) else {
            return;
        };
        assert!(kept.len() <= max, "{} > {max}", kept.len());
        assert!(original.starts_with(kept.as_str()), "not a prefix");
        if kept.len() < original.len() {
            assert!(kept.len() + 4 > max, "cut short: {} of {max}", kept.len());
            cut = true;
        }
    };
    check(Some(&record.request), Some(&request), MAX_REQUEST_BYTES);
    check(Some(&record.model), Some(&response.model), MAX_LABEL_BYTES);
    check(Some(&record.provider), Some(&provider), MAX_LABEL_BYTES);
    let (batch_id, custom_id) = batch.unzip();
    check(record.batch_id.as_ref(), batch_id.as_ref(), MAX_LABEL_BYTES);
    check(
        record.custom_id.as_ref(),
        custom_id.as_ref(),
        MAX_LABEL_BYTES,
    );
    check(
        record.invalid_reason.as_ref(),
        reason.as_ref(),
        MAX_INVALID_REASON_BYTES,
    );
    if matches!(row.kind, Kind::Failure(..)) {
        assert!(record.content.is_empty() && record.upstream_id.is_none());
        assert!(record.thinking.is_none() && record.reasoning.is_none());
        assert!(record.finish_reason.is_none());
    } else {
        check(
            Some(&record.content),
            Some(&response.content),
            MAX_CONTENT_BYTES,
        );
        for (kept, original, max) in [
            (&record.thinking, &response.thinking, MAX_THINKING_BYTES),
            (&record.reasoning, &response.reasoning, MAX_REASONING_BYTES),
            (
                &record.finish_reason,
                &response.finish_reason,
                MAX_LABEL_BYTES,
            ),
            (&record.upstream_id, &response.id, MAX_LABEL_BYTES),
        ] {
            check(kept.as_ref(), original.as_ref(), max);
        }
    }
    assert_eq!(record.truncated, cut, "{record:?}");

    let numbers = 6 * 8;
    let bytes: usize = [
        Some(&record.id),
        Some(&record.provider),
        Some(&record.model),
        Some(&record.request),
        Some(&record.content),
        record.thinking.as_ref(),
        record.reasoning.as_ref(),
        record.finish_reason.as_ref(),
        record.upstream_id.as_ref(),
        record.invalid_reason.as_ref(),
        record.batch_id.as_ref(),
        record.custom_id.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(String::len)
    .sum::<usize>()
        + numbers;
    assert!(bytes <= D1_MAX_ROW_BYTES, "{bytes} bytes");
});

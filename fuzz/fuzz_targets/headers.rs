//! Reading the numbers servers send in headers: `http::parse_decimal`,
//! `rate_limit::parse_reset_duration_ms` (Go durations), `retry::retry_after_ms` and
//! `retry::should_retry_header`.
//!
//! Payload: a header value, and also `name: value` lines of headers. Control: the time.
//!
//! Checks: `parse_decimal` accepts exactly the unsigned decimals `str::parse` accepts with
//! a finite result, and is within one unit in the last place of it (exact in its fast
//! path's reach is checked by the tests); a reset duration and a server's wait are finite
//! and not negative.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_distiller::http::{parse_decimal, Headers};
use llm_distiller::rate_limit::parse_reset_duration_ms;
use llm_distiller::retry::{retry_after_ms, should_retry_header};
use llm_distiller_fuzz::Input;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let text = input.text();

    let ours = parse_decimal(&text);
    let unsigned_decimal = !text.starts_with(['+', '-'])
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    let std = text.parse::<f64>().ok().filter(|v| v.is_finite());
    if unsigned_decimal {
        assert_eq!(
            ours.is_some(),
            std.is_some(),
            "{text:?}: {ours:?} vs {std:?}"
        );
    } else {
        assert_eq!(ours, None, "{text:?}");
    }
    if let (Some(ours), Some(std)) = (ours, std) {
        assert!(
            ours.to_bits().abs_diff(std.to_bits()) <= 1,
            "{text:?}: {ours:e} vs {std:e}"
        );
    }

    if let Some(ms) = parse_reset_duration_ms(&text) {
        assert!(ms.is_finite() && ms >= 0.0, "{text:?}: {ms}");
    }

    let now = match input.byte() % 4 {
        0 => input.f64(),
        _ => 1.7e12,
    };
    let mut headers: Headers = text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim(), value.trim()))
        .collect();
    headers.append("retry-after", text.trim());
    if let Some(ms) = retry_after_ms(&headers, now) {
        assert!(ms.is_finite() && ms >= 0.0, "{headers:?}: {ms}");
    }
    let _ = should_retry_header(&headers);
});

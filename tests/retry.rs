//! Behaviour of the retry policy: which errors are retried, how long each wait is, and how
//! the server's hints are read from headers.
// Native only: these run on a simulated platform or use proptest; the wasm tests are js_*.rs.
#![cfg(not(target_arch = "wasm32"))]

mod support;

use std::cell::{Cell, RefCell};

use llm_distiller::http::{parse_decimal, Headers};
use llm_distiller::retry::{retry_after_ms, should_retry_header, RetryPolicy};
use llm_distiller::runtime::with_backoff;
use llm_distiller::Error;
use proptest::prelude::*;
use support::{Reply, Sim};

const NOW: f64 = 1_445_412_480_000.0; // Wed, 21 Oct 2015 07:28:00 GMT

fn http(status: u16, retry_after_ms: Option<f64>, should_retry: Option<bool>) -> Error {
    Error::Http {
        provider: "main".into(),
        status,
        message: "boom".into(),
        error_type: None,
        code: None,
        param: None,
        retry_after_ms,
        should_retry,
    }
}

fn rate_limited(retry_after_ms: Option<f64>, should_retry: Option<bool>) -> Error {
    Error::RateLimited {
        provider: "main".into(),
        retry_after_ms,
        should_retry,
        message: String::new(),
    }
}

fn connection() -> Error {
    Error::Connection {
        provider: "main".into(),
        message: "reset".into(),
    }
}

/// Response headers as `(name, value)` pairs, for the tables below.
type Pairs = &'static [(&'static str, &'static str)];

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs.iter().copied().collect()
}

#[test]
fn classification_by_variant_and_status() {
    let cases: Vec<(Error, bool)> = vec![
        (connection(), true),
        (
            Error::Timeout {
                provider: "main".into(),
                after_ms: 30_000.0,
            },
            true,
        ),
        (rate_limited(None, None), true),
        (
            Error::InvalidResponse {
                provider: "main".into(),
                message: "truncated body".into(),
            },
            true,
        ),
        (Error::config("model", "missing"), false),
        (Error::Aborted, false),
        (
            Error::AllProvidersFailed {
                errors: vec![("main".into(), connection())],
            },
            false,
        ),
        (http(400, None, None), false),
        (http(401, None, None), false),
        (http(403, None, None), false),
        (http(404, None, None), false),
        (http(408, None, None), true),
        (http(409, None, None), true),
        (http(422, None, None), false),
        (http(429, None, None), true),
        (http(500, None, None), true),
        (http(502, None, None), true),
        (http(503, None, None), true),
        (http(504, None, None), true),
        (http(599, None, None), true),
    ];
    for (error, expected) in cases {
        assert_eq!(RetryPolicy::is_retryable(&error), expected, "{error:?}");
    }
}

#[test]
fn the_servers_should_retry_header_overrides_the_status() {
    assert!(!RetryPolicy::is_retryable(&http(503, None, Some(false))));
    assert!(!RetryPolicy::is_retryable(&rate_limited(None, Some(false))));
    assert!(RetryPolicy::is_retryable(&http(400, None, Some(true))));
    assert!(RetryPolicy::is_retryable(&http(404, None, Some(true))));
    assert!(RetryPolicy::is_retryable(&rate_limited(None, Some(true))));
    let policy = RetryPolicy::default();
    assert_eq!(
        policy.next_delay(0, &http(503, None, Some(false)), 0.0),
        None
    );
    assert_eq!(
        policy.next_delay(0, &http(400, None, Some(true)), 0.0),
        Some(1000.0)
    );
}

#[test]
fn defaults() {
    let policy = RetryPolicy::default();
    assert_eq!(policy.max_retries, 3);
    assert_eq!(policy.base_delay_ms, 1000.0);
    assert_eq!(policy.max_backoff_ms, 60_000.0);
    assert_eq!(policy.max_wait_ms, 120_000.0);
    let partial: RetryPolicy = serde_json::from_str(r#"{"max_retries": 5}"#).unwrap();
    assert_eq!(
        partial,
        RetryPolicy {
            max_retries: 5,
            ..policy
        }
    );
}

#[test]
fn backoff_doubles_then_gives_up_after_max_retries() {
    let policy = RetryPolicy::default();
    let error = connection();
    let delays: Vec<Option<f64>> = (0..5).map(|a| policy.next_delay(a, &error, 0.0)).collect();
    assert_eq!(
        delays,
        [Some(1000.0), Some(2000.0), Some(4000.0), None, None]
    );
    let never = RetryPolicy {
        max_retries: 0,
        ..policy
    };
    assert_eq!(never.next_delay(0, &error, 0.0), None);
}

#[test]
fn jitter_shortens_by_at_most_a_quarter() {
    let policy = RetryPolicy::default();
    let error = connection();
    assert_eq!(policy.next_delay(1, &error, 0.0), Some(2000.0));
    assert_eq!(policy.next_delay(1, &error, 0.5), Some(1750.0));
    let almost_one = 1.0 - f64::EPSILON;
    let shortest = policy.next_delay(1, &error, almost_one).unwrap();
    // (0.75 d, d] in exact arithmetic; 1 - ε/4 rounds to 0.75 exactly in floats.
    assert!((1500.0..1500.001).contains(&shortest), "{shortest}");
    assert!(policy.next_delay(1, &error, 0.999).unwrap() > 1500.0);
    for i in 0..100 {
        let random = f64::from(i) / 100.0;
        let delay = policy.next_delay(2, &error, random).unwrap();
        assert!(delay > 3000.0 && delay <= 4000.0, "{random} -> {delay}");
    }
    // Out-of-range randomness is clamped, not trusted.
    assert_eq!(policy.next_delay(1, &error, -3.0), Some(2000.0));
    assert_eq!(policy.next_delay(1, &error, f64::NAN), Some(2000.0));
    assert_eq!(policy.next_delay(1, &error, 7.0), Some(1500.0));
}

#[test]
fn backoff_is_capped_and_survives_huge_attempt_numbers() {
    let policy = RetryPolicy {
        max_retries: u32::MAX,
        ..RetryPolicy::default()
    };
    let error = connection();
    assert_eq!(policy.next_delay(5, &error, 0.0), Some(32_000.0));
    assert_eq!(policy.next_delay(6, &error, 0.0), Some(60_000.0));
    assert_eq!(policy.next_delay(40, &error, 0.0), Some(60_000.0));
    assert_eq!(policy.next_delay(u32::MAX - 1, &error, 0.0), Some(60_000.0));
    assert_eq!(policy.next_delay(u32::MAX - 1, &error, 0.5), Some(52_500.0));
}

#[test]
fn nonsense_policy_fields_act_as_defaults() {
    let policy = RetryPolicy {
        max_retries: 3,
        base_delay_ms: f64::NAN,
        max_backoff_ms: -1.0,
        max_wait_ms: f64::NAN,
    };
    assert_eq!(policy.next_delay(1, &connection(), 0.0), Some(2000.0));
    assert_eq!(
        policy.next_delay(0, &rate_limited(Some(1500.0), None), 0.0),
        Some(1500.0)
    );
    let huge = RetryPolicy {
        base_delay_ms: f64::MAX,
        max_backoff_ms: f64::INFINITY,
        ..RetryPolicy::default()
    };
    assert_eq!(huge.next_delay(2, &connection(), 0.0), None);
    let zero = RetryPolicy {
        base_delay_ms: 0.0,
        max_retries: u32::MAX,
        ..RetryPolicy::default()
    };
    assert_eq!(zero.next_delay(2000, &connection(), 0.0), Some(0.0));
}

#[test]
fn the_servers_wait_is_used_exactly_unless_too_long() {
    let policy = RetryPolicy::default();
    for random in [0.0, 0.5, 0.99] {
        assert_eq!(
            policy.next_delay(0, &rate_limited(Some(1500.0), None), random),
            Some(1500.0)
        );
    }
    assert_eq!(
        policy.next_delay(2, &http(503, Some(90_000.0), None), 0.3),
        Some(90_000.0)
    );
    assert_eq!(
        policy.next_delay(0, &rate_limited(Some(0.0), None), 0.3),
        Some(0.0)
    );
    assert_eq!(
        policy.next_delay(0, &rate_limited(Some(120_000.0), None), 0.0),
        Some(120_000.0)
    );
    assert_eq!(
        policy.next_delay(0, &rate_limited(Some(120_001.0), None), 0.0),
        None
    );
    assert_eq!(
        policy.next_delay(0, &rate_limited(Some(f64::INFINITY), None), 0.0),
        None
    );
    // A wait carried by an error that is not retried changes nothing.
    assert_eq!(
        policy.next_delay(0, &http(400, Some(10.0), None), 0.0),
        None
    );
    // Still limited by the attempt count.
    assert_eq!(
        policy.next_delay(3, &rate_limited(Some(1500.0), None), 0.0),
        None
    );
    // A nonsense wait on the error falls back to the backoff.
    assert_eq!(
        policy.next_delay(1, &rate_limited(Some(f64::NAN), None), 0.0),
        Some(2000.0)
    );
    assert_eq!(
        policy.next_delay(1, &rate_limited(Some(-5.0), None), 0.0),
        Some(2000.0)
    );
}

#[test]
fn retry_after_headers() {
    let cases: &[(Pairs, Option<f64>)] = &[
        (&[("retry-after-ms", "1500")], Some(1500.0)),
        (&[("Retry-After-Ms", " 1500.5 ")], Some(1500.5)),
        (&[("retry-after", "2")], Some(2000.0)),
        (&[("retry-after", "1.5")], Some(1500.0)),
        (&[("retry-after", "0")], Some(0.0)),
        // retry-after-ms wins over retry-after.
        (
            &[("retry-after", "20"), ("retry-after-ms", "250")],
            Some(250.0),
        ),
        // An unusable retry-after-ms falls back to retry-after.
        (
            &[("retry-after-ms", "soon"), ("retry-after", "3")],
            Some(3000.0),
        ),
        // HTTP dates, relative to NOW.
        (
            &[("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT")],
            Some(30_000.0),
        ),
        (
            &[("retry-after", "Thu, 22 Oct 2015 07:28:00 GMT")],
            Some(86_400_000.0),
        ),
        (
            &[("retry-after", "Wed, 21 Oct 2015 07:27:00 GMT")],
            Some(0.0),
        ),
        (
            &[("retry-after", "Thu, 01 Jan 1970 00:00:00 GMT")],
            Some(0.0),
        ),
        // Nonsense.
        (&[], None),
        (&[("retry-after-ms", "")], None),
        (&[("retry-after-ms", "-1")], None),
        (&[("retry-after-ms", "NaN")], None),
        (&[("retry-after-ms", "inf")], None),
        (&[("retry-after-ms", "infinity")], None),
        (&[("retry-after-ms", "1e400")], None),
        (&[("retry-after", "-2")], None),
        (&[("retry-after", "abc")], None),
        (&[("retry-after", "1e306")], None),
        (&[("retry-after", "Wed, 21 Oct 2015 07:28:00")], None),
        (&[("retry-after", "Wed, 31 Feb 2015 07:28:00 GMT")], None),
        (&[("retry-after", "2015-10-21T07:28:30Z")], None),
    ];
    for (pairs, expected) in cases {
        assert_eq!(retry_after_ms(&headers(pairs), NOW), *expected, "{pairs:?}");
    }
    // A date needs a usable clock.
    let dated = headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT")]);
    assert_eq!(retry_after_ms(&dated, f64::NAN), None);
    assert_eq!(retry_after_ms(&dated, f64::INFINITY), None);
    assert_eq!(retry_after_ms(&dated, f64::NEG_INFINITY), None);
}

#[test]
fn should_retry_header_values() {
    let cases: &[(Pairs, Option<bool>)] = &[
        (&[("x-should-retry", "true")], Some(true)),
        (&[("X-Should-Retry", "false")], Some(false)),
        (&[("x-should-retry", " true ")], Some(true)),
        (&[("x-should-retry", "TRUE")], None),
        (&[("x-should-retry", "1")], None),
        (&[("x-should-retry", "")], None),
        (&[("x-should-retry", "yes")], None),
        (&[], None),
    ];
    for (pairs, expected) in cases {
        assert_eq!(should_retry_header(&headers(pairs)), *expected, "{pairs:?}");
    }
}

proptest! {
    #[test]
    fn arbitrary_header_values_never_panic(
        value in ".*",
        date in "[A-Za-z]{3}, [0-9]{1,3} [A-Za-z]{3} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
        now in any::<f64>(),
    ) {
        for name in ["retry-after-ms", "retry-after", "x-should-retry"] {
            let h = headers(&[(name, value.as_str())]);
            if let Some(ms) = retry_after_ms(&h, now) {
                prop_assert!(ms.is_finite() && ms >= 0.0, "{name}: {value:?} -> {ms}");
            }
            let _ = should_retry_header(&h);
        }
        let h = headers(&[("retry-after", date.as_str())]);
        if let Some(ms) = retry_after_ms(&h, now) {
            prop_assert!(ms.is_finite() && ms >= 0.0, "{date:?} -> {ms}");
        }
    }

    #[test]
    fn next_delay_is_finite_and_non_negative(
        attempt in any::<u32>(),
        max_retries in any::<u32>(),
        base in any::<f64>(),
        cap in any::<f64>(),
        max_wait in any::<f64>(),
        server_wait in proptest::option::of(any::<f64>()),
        random in any::<f64>(),
        status in any::<u16>(),
    ) {
        let policy = RetryPolicy {
            max_retries,
            base_delay_ms: base,
            max_backoff_ms: cap,
            max_wait_ms: max_wait,
        };
        for error in [http(status, server_wait, None), rate_limited(server_wait, None), connection()] {
            if let Some(delay) = policy.next_delay(attempt, &error, random) {
                prop_assert!(attempt < max_retries);
                prop_assert!(delay.is_finite() && delay >= 0.0, "{delay}");
            }
        }
    }
}

#[test]
fn header_numbers_parse_as_decimals() {
    let accepted: &[(&str, f64)] = &[
        ("0", 0.0),
        ("1500", 1500.0),
        ("1.5", 1.5),
        (".5", 0.5),
        ("1.", 1.0),
        ("007", 7.0),
        ("2e3", 2000.0),
        ("1E-3", 0.001),
        ("2.5e+2", 250.0),
        ("0e999999", 0.0),
        ("1e-999", 0.0),
        ("0.1", 0.1),
        ("59.999", 59.999),
        ("18446744073709551615", 18_446_744_073_709_551_615.0),
        ("123456789012345678901234567890", 1.2345678901234568e29),
        ("9007199254740993", 9_007_199_254_740_992.0),
    ];
    for (text, expected) in accepted {
        assert_eq!(parse_decimal(text), Some(*expected), "{text:?}");
    }
    for text in [
        "", ".", "-1", "+1", "-0", " 1", "1 ", "1..5", "1.5.", "e3", "1e", "1e+", "1e3.5", "inf",
        "NaN", "0x10", "1_000", "1,5", "١", "1e400", "9e308",
    ] {
        assert_eq!(parse_decimal(text), None, "{text:?}");
    }
}

/// How many representable `f64`s lie between `a` and `b` (both finite and not negative).
fn ulps_apart(a: f64, b: f64) -> u64 {
    a.to_bits().abs_diff(b.to_bits())
}

#[test]
fn header_numbers_are_right_at_the_edges_of_the_range() {
    for text in [
        "12345e-310",
        "2.2250738585072014e-308",
        "2.2250738585072011e-308",
        "4.9406564584124654e-324",
        "5e-324",
        "1e-320",
        "12345e-320",
        "1.7976931348623157e308",
        "1.7976931348623158e308",
        "179769313486231570000000000000000000000e270",
        "0.000000000000000000000000000000000000000000001e-280",
        "8.98846567431158e307",
        "1e308",
        "1e-307",
        "123456789012345678901234567890e-330",
        "1e-122",
    ] {
        let expected: f64 = text.parse().unwrap();
        let got = parse_decimal(text).unwrap_or_else(|| panic!("{text:?} gave None"));
        assert!(
            ulps_apart(got, expected) <= 1,
            "{text:?}: {got:e} vs {expected:e}"
        );
    }
    assert_eq!(
        parse_decimal("1.7976931348623159e308"),
        None,
        "rounds to infinity"
    );
    assert_eq!(parse_decimal("2e-324"), Some(0.0), "rounds to zero");
}

proptest! {
    /// Within the fast path's reach (digits up to 2^53, scale up to 10^±22) the result is
    /// exactly what Rust's correctly rounded parser gives; beyond it, over the whole range
    /// of `f64` (subnormals, the largest values, overflow to `None`), within one unit in the
    /// last place.
    #[test]
    fn header_numbers_match_rusts_parser(
        digits in "[0-9]{1,25}",
        dot in proptest::option::of(0usize..26),
        exponent in proptest::option::of(-360i32..340),
    ) {
        let mut text = digits.clone();
        if let Some(dot) = dot {
            text.insert(dot.min(digits.len()), '.');
        }
        if let Some(exponent) = exponent {
            text.push_str(&format!("e{exponent}"));
        }
        let expected: f64 = text.parse().unwrap();
        let got = parse_decimal(&text);
        let significant = digits.trim_start_matches('0');
        let fraction = dot.map_or(0, |d| digits.len() - d.min(digits.len())) as i32;
        let scale = exponent.unwrap_or(0) - fraction;
        let exact = significant.len() <= 15 && scale.abs() <= 22;
        if !expected.is_finite() {
            prop_assert_eq!(got, None, "{}", text);
        } else if exact {
            prop_assert_eq!(got, Some(expected), "{}", text);
        } else {
            let got = got.unwrap_or(f64::INFINITY);
            prop_assert!(ulps_apart(got, expected) <= 1, "{}: {:e} vs {:e}", text, got, expected);
        }
    }
}

#[test]
fn backoff_alone_for_work_of_ones_own() {
    let policy = RetryPolicy {
        max_retries: 2,
        base_delay_ms: 200.0,
        ..RetryPolicy::default()
    };
    assert_eq!(policy.backoff(0, 0.0), Some(200.0));
    assert_eq!(policy.backoff(1, 0.0), Some(400.0));
    assert_eq!(
        policy.backoff(1, 1.0),
        Some(300.0),
        "jittered down by at most a quarter"
    );
    assert_eq!(policy.backoff(2, 0.0), None, "no third retry");
    // next_delay is the same backoff when the server asked for nothing.
    assert_eq!(
        policy.next_delay(1, &connection(), 0.5),
        policy.backoff(1, 0.5)
    );
}

/// Work of the caller's own retried by `with_backoff`: the sleeps are the policy's backoff,
/// each retried failure is told, and the last error comes back once the policy gives up.
#[test]
fn with_backoff_retries_own_work_with_the_policy_backoff() {
    let policy = RetryPolicy {
        max_retries: 3,
        base_delay_ms: 100.0,
        max_backoff_ms: 250.0,
        ..RetryPolicy::default()
    };
    for failures in [0u32, 2, 3, 7] {
        let sim = Sim::always(Reply::completion("unused"));
        let tries = Cell::new(0u32);
        let told = RefCell::new(Vec::new());
        let outcome = sim.run(with_backoff(
            &sim,
            &policy,
            || {
                let n = tries.get();
                tries.set(n + 1);
                async move {
                    if n < failures {
                        Err(format!("failure {n}"))
                    } else {
                        Ok(n)
                    }
                }
            },
            |attempt, error: &String| told.borrow_mut().push((attempt, error.clone())),
        ));
        let retried = failures.min(3);
        if failures <= 3 {
            assert_eq!(outcome, Ok(failures), "{failures} failures");
        } else {
            assert_eq!(outcome, Err("failure 3".to_string()), "the last error");
        }
        assert_eq!(tries.get(), retried + 1);
        let expected: Vec<(u32, String)> =
            (0..retried).map(|n| (n, format!("failure {n}"))).collect();
        assert_eq!(*told.borrow(), expected);
        // 100, 200, then 250 (capped); the random number is 0, so no jitter.
        let slept: f64 = [100.0, 200.0, 250.0][..retried as usize].iter().sum();
        assert_eq!(sim.elapsed(), slept, "{failures} failures");
    }
}

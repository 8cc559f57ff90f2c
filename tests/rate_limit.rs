//! Behaviour of the rate limiter on a fake clock: times are plain numbers passed in.
// Native only: these run on a simulated platform or use proptest; the wasm tests are js_*.rs.
#![cfg(not(target_arch = "wasm32"))]

use llm_distiller::http::Headers;
use llm_distiller::rate_limit::{
    estimate_prompt_tokens, parse_reset_duration_ms, RateLimiter, RateLimits, RequestRefill,
    Reservation,
};
use proptest::prelude::*;

/// An arbitrary moment (2023-11-14), in milliseconds since the Unix epoch.
const T0: f64 = 1_700_000_000_000.0;
const MINUTE: f64 = 60_000.0;

fn limiter(requests_per_minute: u32, tokens_per_minute: u32) -> RateLimiter {
    RateLimiter::new(RateLimits {
        requests_per_minute,
        tokens_per_minute,
        requests_refill: RequestRefill::Window,
    })
}

/// A limiter whose request limit refills continuously, as OpenAI's does.
fn continuous(requests_per_minute: u32, tokens_per_minute: u32) -> RateLimiter {
    RateLimiter::new(RateLimits {
        requests_per_minute,
        tokens_per_minute,
        requests_refill: RequestRefill::Continuous,
    })
}

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs.iter().copied().collect()
}

/// How long the limiter is blocked at `now`, by its status.
fn blocked_ms(limiter: &RateLimiter, now: f64) -> Option<f64> {
    limiter
        .status(now)
        .blocked_until_ms
        .map(|until| until - now)
}

fn assert_close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-6,
        "expected {expected}, got {actual}"
    );
}

/// Whether no window `[x, x + 60 s)` holds more than `limit` of the ascending `starts`.
fn window_holds(starts: &[f64], limit: usize) -> Result<(), String> {
    for k in limit..starts.len() {
        let gap = starts[k] - starts[k - limit];
        if gap < MINUTE {
            return Err(format!(
                "starts {} and {k} are {gap} ms apart: {} starts within a minute",
                k - limit,
                limit + 1
            ));
        }
    }
    Ok(())
}

/// Whether the ascending `starts` conform to a bucket of `limit` requests, full at first,
/// refilling at `limit` per minute: no span from start `i` to start `j` holds more than
/// the capacity plus the refill over that span.
fn bucket_holds(starts: &[f64], limit: u32) -> Result<(), String> {
    let rate = f64::from(limit) / MINUTE;
    for i in 0..starts.len() {
        for j in i..starts.len() {
            let count = (j - i + 1) as f64;
            let allowed = f64::from(limit) + (starts[j] - starts[i]) * rate + 1e-6;
            if count > allowed {
                return Err(format!(
                    "{count} starts from {} to {}: a bucket of {limit} allows {allowed}",
                    starts[i], starts[j]
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn sixty_per_minute_burst_then_paced_in_order() {
    let mut limiter = limiter(60, 1_000_000);
    let reservations: Vec<Reservation> = (0..200).map(|_| limiter.reserve(T0, 10)).collect();
    // The first 60 go at once, then 60 more a minute later, and so on.
    for (i, r) in reservations.iter().enumerate() {
        let expected = (i / 60) as f64 * MINUTE;
        assert_eq!(r.wait_ms, expected, "reservation {i}");
        assert_eq!(r.start_at_ms, T0 + expected, "reservation {i}");
    }
    let ids: Vec<u64> = reservations.iter().map(|r| r.id).collect();
    assert_eq!(ids, (0..200).collect::<Vec<u64>>());

    // Simulate: each caller sleeps until its start, checks the gate and sends.
    let mut sent = Vec::new();
    for r in &reservations {
        assert_eq!(limiter.blocked_for(r, r.start_at_ms), None);
        sent.push(r.start_at_ms);
    }
    window_holds(&sent, 60).unwrap();
    // Exactly 60 in every minute starting at a burst: the limit is used, not just obeyed.
    for minute in 0..3 {
        let from = T0 + f64::from(minute) * MINUTE;
        let count = sent
            .iter()
            .filter(|&&s| s >= from && s < from + MINUTE)
            .count();
        assert_eq!(count, 60, "minute {minute}");
    }
}

#[test]
fn arrivals_faster_than_the_limit_queue_in_order() {
    // One arrival every 500 ms is 120 per minute against a limit of 60.
    let mut limiter = limiter(60, 1_000_000);
    let mut previous = f64::NEG_INFINITY;
    let mut starts = Vec::new();
    for i in 0..200 {
        let now = T0 + f64::from(i) * 500.0;
        let r = limiter.reserve(now, 10);
        assert_eq!(r.start_at_ms, now + r.wait_ms);
        assert!(r.start_at_ms >= previous, "FIFO broken at {i}");
        if i < 60 {
            assert_eq!(r.wait_ms, 0.0, "the first 60 go at once");
        } else {
            // Request i takes the slot request i - 60 frees a minute after it started.
            assert_eq!(r.start_at_ms, starts[i as usize - 60] + MINUTE, "{i}");
        }
        previous = r.start_at_ms;
        starts.push(r.start_at_ms);
    }
    window_holds(&starts, 60).unwrap();
}

#[test]
fn continuous_requests_burst_then_one_per_interval() {
    let mut limiter = continuous(60, 1_000_000);
    let starts: Vec<f64> = (0..200)
        .map(|i| {
            let r = limiter.reserve(T0, 10);
            // The first 60 go at once, then one a second: the bucket refills continuously.
            let expected = (i as f64 - 59.0).max(0.0) * 1000.0;
            assert_close(r.wait_ms, expected);
            r.start_at_ms
        })
        .collect();
    bucket_holds(&starts, 60).unwrap();
    // Nearly twice what the window mode allows in the first minute: the point of this mode.
    let first_minute = starts.iter().filter(|&&s| s < T0 + MINUTE).count();
    assert_eq!(first_minute, 60 + 59);
    // After a minute with nothing reserved, the bucket is full again.
    let idle = starts[199] + MINUTE;
    for _ in 0..60 {
        assert_close(limiter.reserve(idle, 10).wait_ms, 0.0);
    }
    assert_close(limiter.reserve(idle, 10).wait_ms, 1000.0);
}

#[test]
fn continuous_requests_follow_the_servers_remaining_count() {
    // With its own reservation: the server counted it and those before it.
    let mut limiter = continuous(60, 1_000_000);
    let first = limiter.reserve(T0, 10);
    for _ in 0..9 {
        limiter.reserve(T0, 10);
    }
    let reset = ("x-ratelimit-reset-requests", "20s");
    limiter.observe(
        T0,
        &headers(&[("x-ratelimit-remaining-requests", "40"), reset]),
        200,
        Some(&first),
    );
    // 40 remained when the first arrived; 9 more were reserved after it: 31 go at once.
    for _ in 0..31 {
        assert_close(limiter.reserve(T0, 10).wait_ms, 0.0);
    }
    assert_close(limiter.reserve(T0, 10).wait_ms, 1000.0);

    // Without one, everything in flight may be uncounted: 40 - 10.
    let mut limiter = continuous(60, 1_000_000);
    for _ in 0..10 {
        limiter.reserve(T0, 10);
    }
    limiter.observe(
        T0,
        &headers(&[("x-ratelimit-remaining-requests", "40")]),
        200,
        None,
    );
    for _ in 0..30 {
        assert_close(limiter.reserve(T0, 10).wait_ms, 0.0);
    }
    assert_close(limiter.reserve(T0, 10).wait_ms, 1000.0);

    // None remaining, full again in 60 s (OpenAI's reset): one interval, not the reset.
    let mut limiter = continuous(60, 1_000_000);
    let last = (0..60).map(|_| limiter.reserve(T0, 10)).last().unwrap();
    limiter.observe(
        T0 + 100.0,
        &headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "60s"),
        ]),
        200,
        Some(&last),
    );
    assert_eq!(blocked_ms(&limiter, T0 + 100.0), None);
    assert_close(limiter.reserve(T0 + 100.0, 10).wait_ms, 900.0);
}

#[test]
fn continuous_requests_adapt_to_a_lower_server_limit_and_cancel_gives_back() {
    let mut limiter = continuous(120, 1_000_000);
    limiter.observe(
        T0,
        &headers(&[("x-ratelimit-limit-requests", "60")]),
        200,
        None,
    );
    for _ in 0..60 {
        assert_close(limiter.reserve(T0, 10).wait_ms, 0.0);
    }
    let queued = limiter.reserve(T0, 10);
    assert_close(queued.wait_ms, 1000.0);
    assert_eq!(limiter.status(T0).effective_requests_per_minute, 60);

    let mut limiter = continuous(2, 1_000_000);
    limiter.reserve(T0, 10);
    let unsent = limiter.reserve(T0, 10);
    limiter.cancel(&unsent);
    assert_close(limiter.reserve(T0, 10).wait_ms, 0.0);
    assert_close(limiter.reserve(T0, 10).wait_ms, 30_000.0);
}

#[test]
fn tokens_wait_for_the_refill() {
    let mut limiter = limiter(1000, 1000);
    let first = limiter.reserve(T0, 300);
    for _ in 0..2 {
        assert_eq!(limiter.reserve(T0, 300).wait_ms, 0.0);
    }
    assert_eq!(first.wait_ms, 0.0);
    // 100 tokens left; 200 more refill at 1000 per minute in 12 s.
    let fourth = limiter.reserve(T0, 300);
    assert_close(fourth.wait_ms, 12_000.0);
    // The fifth queues behind the fourth: 300 more tokens, 18 s more.
    let fifth = limiter.reserve(T0, 300);
    assert_close(fifth.wait_ms, 30_000.0);
    assert_eq!(limiter.status(T0).in_flight, 5);
}

#[test]
fn reconciling_lower_usage_lets_the_next_go_sooner() {
    let run = |actual: Option<u32>| {
        let mut limiter = limiter(1000, 1000);
        let first = limiter.reserve(T0, 300);
        limiter.reserve(T0, 300);
        limiter.reserve(T0, 300);
        limiter.reconcile(&first, actual);
        let status = limiter.status(T0);
        assert_eq!(status.in_flight, 2);
        limiter.reserve(T0, 300).wait_ms
    };
    assert_close(run(None), 12_000.0); // unknown usage keeps the estimate
    assert_close(run(Some(300)), 12_000.0);
    assert_close(run(Some(150)), 3_000.0); // 150 refunded: 50 short, 3 s of refill
    assert_eq!(run(Some(0)), 0.0); // 300 refunded
    assert_close(run(Some(500)), 24_000.0); // 200 more charged: 400 short
}

#[test]
fn refunds_never_overfill_the_bucket_and_cancel_gives_tokens_back() {
    let mut limiter = limiter(1000, 1000);
    let r = limiter.reserve(T0, 300);
    limiter.reconcile(&r, Some(0));
    // Full again, not 1300: a burst of 1000 goes, one more token waits.
    assert_eq!(limiter.reserve(T0, 1000).wait_ms, 0.0);
    assert_close(limiter.reserve(T0, 1).wait_ms, 60.0);

    let mut limiter = self::limiter(1000, 1000);
    let r = limiter.reserve(T0, 700);
    limiter.cancel(&r);
    assert_eq!(limiter.status(T0).in_flight, 0);
    assert_eq!(limiter.status(T0).tokens_per_minute, 0);
    assert_eq!(limiter.reserve(T0, 1000).wait_ms, 0.0);
}

#[test]
fn a_reservation_larger_than_the_capacity_is_clamped() {
    let mut limiter = limiter(1000, 1000);
    let big = limiter.reserve(T0, 5000);
    assert_eq!((big.tokens, big.wait_ms), (1000, 0.0));
    let next = limiter.reserve(T0, 5000);
    assert_eq!(next.tokens, 1000);
    assert_close(next.wait_ms, MINUTE);
}

#[test]
fn the_bucket_refills_over_time() {
    let mut limiter = limiter(1000, 6000);
    assert_eq!(limiter.reserve(T0, 6000).wait_ms, 0.0);
    // 100 tokens per second.
    assert_close(limiter.reserve(T0 + 1000.0, 200).wait_ms, 1000.0);
    // Idle for a long time: full again, but never more than full.
    assert_eq!(limiter.reserve(T0 + 600_000.0, 6000).wait_ms, 0.0);
    assert_close(limiter.reserve(T0 + 600_000.0, 100).wait_ms, 1000.0);
}

#[test]
fn no_remaining_requests_blocks_until_the_reset() {
    let mut limiter = limiter(100, 100_000);
    let queued = limiter.reserve(T0, 10);
    limiter.observe(
        T0,
        &headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "6s"),
        ]),
        200,
        None,
    );
    assert_eq!(
        limiter.blocked_for(&queued, queued.start_at_ms),
        Some(6000.0)
    );
    assert_eq!(limiter.blocked_for(&queued, T0 + 2000.0), Some(4000.0));
    assert_eq!(limiter.blocked_for(&queued, T0 + 6000.0), None);
    let next = limiter.reserve(T0, 10);
    assert_eq!(next.wait_ms, 6000.0);
    let status = limiter.status(T0);
    assert_eq!(status.api_remaining_requests, Some(0));
    assert_eq!(status.blocked_until_ms, Some(T0 + 6000.0));
    assert_eq!(limiter.status(T0 + 6000.0).blocked_until_ms, None);
}

#[test]
fn no_remaining_requests_without_a_usable_reset_waits_one_interval() {
    for reset in [None, Some("soon"), Some("-1s"), Some("9999999999h")] {
        let mut limiter = limiter(120, 100_000);
        let mut pairs = vec![("x-ratelimit-remaining-requests", "0")];
        pairs.extend(reset.map(|r| ("x-ratelimit-reset-requests", r)));
        limiter.observe(T0, &headers(&pairs), 200, None);
        assert_eq!(limiter.reserve(T0, 10).wait_ms, 500.0, "{reset:?}");
    }
}

#[test]
fn remaining_requests_above_zero_do_not_block() {
    let mut limiter = limiter(100, 100_000);
    limiter.observe(
        T0,
        &headers(&[
            ("x-ratelimit-remaining-requests", "3"),
            ("x-ratelimit-reset-requests", "6s"),
        ]),
        200,
        None,
    );
    assert_eq!(blocked_ms(&limiter, T0), None);
    assert_eq!(limiter.reserve(T0, 10).wait_ms, 0.0);
    assert_eq!(limiter.status(T0).api_remaining_requests, Some(3));
}

#[test]
fn lower_server_limits_take_over_higher_ones_do_not() {
    // Requests: configured 100, the server says 2.
    let mut limiter = limiter(100, 1_000_000);
    limiter.observe(
        T0,
        &headers(&[("x-ratelimit-limit-requests", "2")]),
        200,
        None,
    );
    assert_eq!(limiter.reserve(T0, 1).wait_ms, 0.0);
    assert_eq!(limiter.reserve(T0, 1).wait_ms, 0.0);
    assert_eq!(limiter.reserve(T0, 1).wait_ms, MINUTE);
    let status = limiter.status(T0);
    assert_eq!(status.api_requests_per_minute, Some(2));
    assert_eq!(status.max_requests_per_minute, 100);
    assert_eq!(status.effective_requests_per_minute, 2);

    // Configured 2, the server says 500: still 2.
    let mut limiter = self::limiter(2, 1_000_000);
    limiter.observe(
        T0,
        &headers(&[("x-ratelimit-limit-requests", "500")]),
        200,
        None,
    );
    limiter.reserve(T0, 1);
    limiter.reserve(T0, 1);
    assert_eq!(limiter.reserve(T0, 1).wait_ms, MINUTE);
    assert_eq!(limiter.status(T0).effective_requests_per_minute, 2);

    // Tokens: configured 100 000, the server says 1000; the full bucket shrinks with it.
    let mut limiter = self::limiter(1000, 100_000);
    limiter.observe(
        T0,
        &headers(&[("x-ratelimit-limit-tokens", "1000")]),
        200,
        None,
    );
    assert_eq!(limiter.reserve(T0, 1000).wait_ms, 0.0);
    assert_close(limiter.reserve(T0, 300).wait_ms, 18_000.0);
    let status = limiter.status(T0);
    assert_eq!(status.api_tokens_per_minute, Some(1000));
    assert_eq!(status.effective_tokens_per_minute, 1000);
    assert_eq!(status.max_tokens_per_minute, 100_000);

    // Configured 1000, the server says 100 000: still 1000.
    let mut limiter = self::limiter(1000, 1000);
    limiter.observe(
        T0,
        &headers(&[("x-ratelimit-limit-tokens", "100000")]),
        200,
        None,
    );
    assert_eq!(limiter.reserve(T0, 1000).wait_ms, 0.0);
    assert_close(limiter.reserve(T0, 300).wait_ms, 18_000.0);

    // A later, higher server limit (an upgraded tier) raises the effective one again, up
    // to the configured limit.
    let mut limiter = self::limiter(100, 1_000_000);
    limiter.observe(
        T0,
        &headers(&[("x-ratelimit-limit-requests", "2")]),
        200,
        None,
    );
    limiter.observe(
        T0,
        &headers(&[("x-ratelimit-limit-requests", "50")]),
        200,
        None,
    );
    assert_eq!(limiter.status(T0).effective_requests_per_minute, 50);
}

#[test]
fn nonsense_header_values_are_ignored() {
    let names = [
        "x-ratelimit-limit-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-requests",
        "x-ratelimit-reset-tokens",
        "retry-after-ms",
        "retry-after",
    ];
    let values = [
        "",
        " ",
        "-1",
        "abc",
        "NaN",
        "inf",
        "-inf",
        "0x10",
        "5 5",
        "99999999999999999999",
        "4294967296",
        "-0.5s",
        "1e400",
        "Wed, 31 Feb 2015 07:28:00 GMT",
    ];
    for name in names {
        for value in values {
            let mut limiter = limiter(60, 6000);
            let before = limiter.status(T0);
            limiter.observe(T0, &headers(&[(name, value)]), 429, None);
            assert_eq!(limiter.status(T0), before, "{name}: {value:?}");
            assert_eq!(limiter.reserve(T0, 6000).wait_ms, 0.0, "{name}: {value:?}");
        }
    }
    // Fractions, exponents and signs are fine in a wait, never in a count or limit.
    for name in &names[..4] {
        for value in ["1.5", "1e3", "+5"] {
            let mut limiter = self::limiter(60, 6000);
            let before = limiter.status(T0);
            limiter.observe(T0, &headers(&[(*name, value)]), 200, None);
            assert_eq!(limiter.status(T0), before, "{name}: {value:?}");
        }
    }
    // Zero is a valid remaining count but no valid limit.
    let mut limiter = limiter(60, 6000);
    limiter.observe(
        T0,
        &headers(&[
            ("x-ratelimit-limit-requests", "0"),
            ("x-ratelimit-limit-tokens", "0"),
        ]),
        200,
        None,
    );
    let status = limiter.status(T0);
    assert_eq!(status.api_requests_per_minute, None);
    assert_eq!(status.api_tokens_per_minute, None);
    // Absurdly long waits (over a day) are ignored.
    for (name, value) in [
        ("retry-after", "100000"),
        ("retry-after-ms", "86400001"),
        ("retry-after", "Fri, 01 Jan 2100 00:00:00 GMT"),
    ] {
        let mut limiter = self::limiter(60, 6000);
        limiter.observe(T0, &headers(&[(name, value)]), 429, None);
        assert_eq!(blocked_ms(&limiter, T0), None, "{name}: {value}");
    }
}

#[test]
fn header_names_compare_case_insensitively_and_the_first_value_counts() {
    let mut limiter = limiter(100, 100_000);
    limiter.observe(
        T0,
        &headers(&[
            ("X-RateLimit-Reset-Tokens", "1s"), // same length as limit-tokens: no mix-up
            ("X-RateLimit-Limit-Requests", "50"),
            ("x-ratelimit-limit-requests", "10"),
            ("X-RATELIMIT-LIMIT-TOKENS", "2000"),
            ("X-Ratelimit-Remaining-Tokens", "1500"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-remaining-requests", "7"),
            ("X-RateLimit-Reset-Requests", "2s"),
        ]),
        200,
        None,
    );
    let status = limiter.status(T0);
    assert_eq!(status.api_requests_per_minute, Some(50));
    assert_eq!(status.api_tokens_per_minute, Some(2000));
    assert_eq!(status.api_remaining_tokens, Some(1500));
    assert_eq!(status.api_remaining_requests, Some(0));
    assert_eq!(status.blocked_until_ms, Some(T0 + 2000.0));
}

#[test]
fn azure_remaining_tokens_clamp_the_bucket() {
    // Azure sends only remaining-* and retry-after-ms.
    let mut limiter = limiter(1000, 10_000);
    let in_flight = limiter.reserve(T0, 100);
    limiter.observe(
        T0,
        &headers(&[
            ("x-ratelimit-remaining-tokens", "500"),
            ("x-ratelimit-remaining-requests", "10"),
        ]),
        200,
        None,
    );
    // 500 remain by the server's count, less the 100 still in flight: 400. 1000 needs
    // 600 more, at 10 000 per minute: 3.6 s.
    assert_close(limiter.reserve(T0, 1000).wait_ms, 3600.0);
    let status = limiter.status(T0);
    assert_eq!(status.api_remaining_tokens, Some(500));
    assert_eq!(status.api_remaining_requests, Some(10));
    assert_eq!(status.api_tokens_per_minute, None);
    assert_eq!(status.effective_tokens_per_minute, 10_000);
    limiter.reconcile(&in_flight, None);

    // A remaining count above the bucket's own level changes nothing.
    let mut limiter = self::limiter(1000, 10_000);
    let done = limiter.reserve(T0, 9000);
    limiter.reconcile(&done, None);
    limiter.observe(
        T0,
        &headers(&[("x-ratelimit-remaining-tokens", "9500")]),
        200,
        None,
    );
    assert_close(limiter.reserve(T0, 2000).wait_ms, 6000.0);

    // Observed before its own reconcile, a request's tokens count twice: conservative.
    let mut limiter = self::limiter(1000, 10_000);
    limiter.reserve(T0, 9000);
    limiter.observe(
        T0,
        &headers(&[("x-ratelimit-remaining-tokens", "9500")]),
        200,
        None,
    );
    assert_close(limiter.reserve(T0, 2000).wait_ms, 9000.0);
}

#[test]
fn the_latest_remaining_figure_replaces_earlier_ones() {
    // Concurrent requests overtake each other on their way to the server, so a figure may be
    // pessimistic; the next one corrects it rather than the lowest staying for good.
    let mut limiter = limiter(1000, 10_000);
    let remaining = |n: &str| headers(&[("x-ratelimit-remaining-tokens", n)]);
    limiter.observe(T0, &remaining("1000"), 200, None);
    assert_eq!(limiter.status(T0).tokens_per_minute, 9000);
    limiter.observe(T0, &remaining("10000"), 200, None);
    assert_eq!(limiter.status(T0).tokens_per_minute, 0);
    assert_close(limiter.reserve(T0, 10_000).wait_ms, 0.0);
    // The limiter's own bookkeeping still bounds an optimistic figure.
    limiter.observe(T0, &remaining("10000"), 200, None);
    assert_close(limiter.reserve(T0, 6000).wait_ms, 36_000.0);
}

#[test]
fn too_many_requests_with_retry_after_pauses_everyone() {
    let mut limiter = limiter(100, 100_000);
    let a = limiter.reserve(T0, 10);
    let b = limiter.reserve(T0, 10);
    limiter.observe(
        T0 + 100.0,
        &headers(&[("retry-after-ms", "1500")]),
        429,
        None,
    );
    // Callers due before the 429 who have not sent yet (late timers) find the gate closed
    // until the block ends; new ones are scheduled after it.
    assert_eq!(limiter.blocked_for(&a, T0 + 100.0), Some(1500.0));
    assert_eq!(limiter.blocked_for(&b, T0 + 1000.0), Some(600.0));
    assert_eq!(limiter.blocked_for(&b, T0 + 1600.0), None);
    assert_eq!(limiter.reserve(T0 + 100.0, 10).wait_ms, 1500.0);
    assert_eq!(
        limiter.status(T0 + 100.0).blocked_until_ms,
        Some(T0 + 1600.0)
    );

    // retry-after in seconds, and a date.
    let mut limiter = self::limiter(100, 100_000);
    limiter.observe(T0, &headers(&[("retry-after", "2")]), 429, None);
    assert_eq!(blocked_ms(&limiter, T0), Some(2000.0));
    let mut limiter = self::limiter(100, 100_000);
    let now = 1_445_412_480_000.0; // Wed, 21 Oct 2015 07:28:00 GMT
    limiter.observe(
        now,
        &headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT")]),
        429,
        None,
    );
    assert_eq!(blocked_ms(&limiter, now), Some(30_000.0));

    // A shorter, later block does not shorten a longer one.
    let mut limiter = self::limiter(100, 100_000);
    limiter.observe(T0, &headers(&[("retry-after-ms", "5000")]), 429, None);
    limiter.observe(T0, &headers(&[("retry-after-ms", "1000")]), 429, None);
    assert_eq!(blocked_ms(&limiter, T0), Some(5000.0));
    assert_eq!(limiter.reserve(T0, 10).wait_ms, 5000.0);

    // Only a 429 pauses the limiter: a 503's retry-after concerns that one call (the retry
    // policy honours it).
    let mut limiter = self::limiter(100, 100_000);
    limiter.observe(T0, &headers(&[("retry-after-ms", "1500")]), 503, None);
    assert_eq!(blocked_ms(&limiter, T0), None);
}

#[test]
fn a_pause_postpones_the_whole_queue_keeping_its_spacing() {
    // One request a minute: the first goes now, the next two are queued a minute apart.
    let mut limiter = limiter(1, 1_000_000);
    let queue: Vec<Reservation> = (0..3).map(|_| limiter.reserve(T0, 1)).collect();
    let due: Vec<f64> = queue.iter().map(|r| r.start_at_ms).collect();
    assert_eq!(due, [T0, T0 + MINUTE, T0 + 2.0 * MINUTE]);
    // The first goes; a 429 then pauses the limiter for 30 s.
    assert_eq!(limiter.blocked_for(&queue[0], T0), None);
    limiter.observe(T0 + 10_000.0, &headers(&[("retry-after", "30")]), 429, None);
    // The queued ones move 30 s later each: their minute apart is kept, where letting the
    // second go when the block ends (T0 + 40 s) would put two starts within 40 s.
    assert_eq!(limiter.blocked_for(&queue[1], due[1]), Some(30_000.0));
    assert_eq!(limiter.blocked_for(&queue[2], due[2]), Some(30_000.0));
    assert_eq!(limiter.blocked_for(&queue[1], due[1] + 30_000.0), None);
    // New reservations queue behind them.
    let next = limiter.reserve(T0 + 10_000.0, 1);
    assert_eq!(next.start_at_ms, T0 + 3.0 * MINUTE + 30_000.0);
    assert_eq!(limiter.blocked_for(&next, next.start_at_ms), None);

    // A second, longer pause during the first extends it, postponing them again.
    limiter.observe(T0 + 20_000.0, &headers(&[("retry-after", "40")]), 429, None);
    // The block now ends at T0 + 60 s instead of T0 + 40 s: 20 s more for everyone queued.
    assert_eq!(limiter.blocked_for(&queue[1], due[1]), Some(50_000.0));
    assert_eq!(limiter.blocked_for(&next, next.start_at_ms), Some(20_000.0));
}

#[test]
fn the_bucket_does_not_refill_during_a_pause() {
    let mut limiter = limiter(1000, 6000);
    limiter.reserve(T0, 6000);
    limiter.observe(T0, &headers(&[("retry-after", "30")]), 429, None);
    // 30 s paused, then 10 s of refill at 100 tokens a second.
    assert_close(limiter.reserve(T0, 1000).wait_ms, 40_000.0);
}

#[test]
fn a_block_keeps_the_request_window_exact() {
    // Two reservations due at T0 are held back by a block until T0 + 59 s: they then start
    // at T0 + 59 s, so the next two must wait until T0 + 119 s, not T0 + 60 s.
    let mut limiter = limiter(2, 1_000_000);
    limiter.reserve(T0, 1);
    limiter.reserve(T0, 1);
    limiter.observe(T0, &headers(&[("retry-after", "59")]), 429, None);
    let third = limiter.reserve(T0 + 1000.0, 1);
    assert_eq!(third.start_at_ms, T0 + 119_000.0);
}

#[test]
fn a_block_does_not_let_tokens_pile_up_beyond_the_capacity() {
    // 900 tokens are reserved to start now; a 60 s block holds them back. When it ends
    // they go, so a new reservation may only use what the capacity leaves beside them.
    let mut limiter = limiter(1000, 1000);
    for _ in 0..3 {
        limiter.reserve(T0, 300);
    }
    limiter.observe(T0, &headers(&[("retry-after", "60")]), 429, None);
    let next = limiter.reserve(T0, 300);
    // At the end of the block the bucket holds 1000 - 900 = 100: 200 more take 12 s.
    assert_close(next.wait_ms, 72_000.0);
}

#[test]
fn status_reports_usage_limits_and_the_next_free_slot() {
    let mut limiter = limiter(3, 600);
    let fresh = limiter.status(T0);
    assert_eq!(fresh.requests_per_minute, 0);
    assert_eq!(fresh.tokens_per_minute, 0);
    assert_eq!(fresh.in_flight, 0);
    assert_eq!(fresh.blocked_until_ms, None);
    assert_eq!(fresh.next_free_in_ms, 0.0);
    assert_eq!(
        (fresh.max_requests_per_minute, fresh.max_tokens_per_minute),
        (3, 600)
    );

    let a = limiter.reserve(T0, 200);
    let b = limiter.reserve(T0, 200);
    let status = limiter.status(T0);
    assert_eq!(status.requests_per_minute, 2);
    assert_eq!(status.tokens_per_minute, 400);
    assert_eq!(status.in_flight, 2);
    assert_eq!(status.next_free_in_ms, 0.0);

    limiter.reserve(T0, 200);
    let status = limiter.status(T0);
    assert_eq!(status.requests_per_minute, 3);
    assert_eq!(status.tokens_per_minute, 600);
    assert_eq!(status.next_free_in_ms, MINUTE); // the request window is full

    // 30 s later: half the tokens are back, the requests still count.
    limiter.reconcile(&a, Some(200));
    limiter.reconcile(&b, Some(100));
    let status = limiter.status(T0 + 30_000.0);
    assert_eq!(status.requests_per_minute, 3);
    assert_eq!(status.tokens_per_minute, 200); // 500 used, 300 refilled
    assert_eq!(status.in_flight, 1);
    assert_close(status.next_free_in_ms, 30_000.0);

    // A minute on, the window is empty again.
    let status = limiter.status(T0 + MINUTE);
    assert_eq!(status.requests_per_minute, 0);
    assert_eq!(status.tokens_per_minute, 0);
    assert_eq!(status.next_free_in_ms, 0.0);

    // Queued reservations count as starting when scheduled, and their tokens as debt.
    let mut limiter = self::limiter(1, 600);
    limiter.reserve(T0, 600);
    limiter.reserve(T0, 600);
    let status = limiter.status(T0);
    assert_eq!(status.requests_per_minute, 1);
    assert_eq!(status.tokens_per_minute, 1200);
    assert_eq!(status.in_flight, 2);

    let json = serde_json::to_value(limiter.status(T0)).unwrap();
    assert_eq!(json["max_requests_per_minute"], 1);
    assert_eq!(json["api_remaining_tokens"], serde_json::Value::Null);
}

#[test]
fn time_going_backwards_or_nan_counts_as_no_time_passing() {
    let mut limiter = limiter(1000, 1000);
    assert_eq!(limiter.reserve(T0, 1000).wait_ms, 0.0);
    // Earlier than T0: treated as T0, so no refill has happened.
    let r = limiter.reserve(T0 - 30_000.0, 100);
    assert_close(r.wait_ms, 6000.0);
    assert_close(r.start_at_ms, T0 + 6000.0);
    for weird in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 1e300] {
        let r = limiter.reserve(weird, 100);
        assert!(r.wait_ms.is_finite() && r.wait_ms >= 0.0, "{weird}");
        assert!(r.start_at_ms.is_finite() && r.start_at_ms > T0, "{weird}");
    }
    let status = limiter.status(f64::NAN);
    assert!(status.next_free_in_ms.is_finite());
}

#[test]
fn zero_limits_are_clamped_to_one() {
    let mut limiter = limiter(0, 0);
    let first = limiter.reserve(T0, 5);
    assert_eq!((first.tokens, first.wait_ms), (1, 0.0));
    assert_eq!(limiter.reserve(T0, 5).wait_ms, MINUTE);
}

#[test]
fn reset_durations() {
    let cases = [
        ("6m0s", Some(360_000.0)),
        ("1s", Some(1000.0)),
        ("20ms", Some(20.0)),
        ("1.5s", Some(1500.0)),
        ("2h3m4s", Some(7_384_000.0)),
        ("1m30.5s", Some(90_500.0)),
        ("0s", Some(0.0)),
        ("0", Some(0.0)),
        ("500us", Some(0.5)),
        ("500µs", Some(0.5)),
        ("250000ns", Some(0.25)),
        (".5s", Some(500.0)),
        ("2", Some(2000.0)),
        ("0.25", Some(250.0)),
        (" 6s ", Some(6000.0)),
        ("9999999999h", Some(9_999_999_999.0 * 3_600_000.0)),
        ("", None),
        ("   ", None),
        ("abc", None),
        ("-1s", None),
        ("+1s", None),
        ("1x", None),
        ("1s2", None),
        ("s", None),
        ("1..5s", None),
        ("1e3s", None),
        ("1S", None),
        ("NaN", None),
        ("inf", None),
        ("1 s", None),
    ];
    for (text, expected) in cases {
        match (parse_reset_duration_ms(text), expected) {
            (Some(got), Some(want)) => assert_close(got, want),
            (got, want) => assert_eq!(got, want, "{text:?}"),
        }
    }
    // Digits beyond any float's range are not a duration.
    assert_eq!(
        parse_reset_duration_ms(&format!("{}h", "9".repeat(400))),
        None
    );
}

#[test]
fn prompt_token_estimates() {
    assert_eq!(estimate_prompt_tokens(0, 0), 3);
    assert_eq!(estimate_prompt_tokens(1, 1), 8);
    assert_eq!(estimate_prompt_tokens(400, 2), 111);
    assert_eq!(estimate_prompt_tokens(401, 2), 112);
    assert_eq!(estimate_prompt_tokens(usize::MAX, usize::MAX), u32::MAX);
    // UTF-8 bytes over-count CJK text, erring on the safe side (about a token a character).
    let chinese = "速率限制器的估算必须保守";
    assert!(estimate_prompt_tokens(chinese.len(), 1) as usize >= chinese.chars().count());
}

/// One call on a limiter, for the property tests.
#[derive(Debug, Clone)]
enum Call {
    Reserve {
        now: f64,
        tokens: u32,
    },
    Reconcile {
        pick: usize,
        actual: Option<u32>,
    },
    Cancel {
        pick: usize,
    },
    Observe {
        now: f64,
        pairs: Vec<(String, String)>,
        status: u16,
    },
    Status {
        now: f64,
    },
    BlockedFor {
        now: f64,
    },
}

const HEADER_NAMES: [&str; 8] = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "retry-after-ms",
    "retry-after",
];

/// Any float, with plausible times and the special values well represented.
fn any_time() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        (0.0..1e6f64).prop_map(|dt| T0 + dt),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-1.0),
        Just(f64::MAX),
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        ".*",
        "[0-9]{1,12}",
        "-?[0-9]{0,3}(\\.[0-9]{0,3})?(h|m|s|ms|us|ns|x)?",
        Just("4294967295".to_string()),
    ]
}

fn call() -> impl Strategy<Value = Call> {
    prop_oneof![
        (any_time(), any::<u32>()).prop_map(|(now, tokens)| Call::Reserve { now, tokens }),
        (any::<usize>(), proptest::option::of(any::<u32>()))
            .prop_map(|(pick, actual)| Call::Reconcile { pick, actual }),
        any::<usize>().prop_map(|pick| Call::Cancel { pick }),
        (
            any_time(),
            proptest::collection::vec((0..HEADER_NAMES.len(), header_value()), 0..6),
            prop_oneof![Just(200u16), Just(429u16), any::<u16>()],
        )
            .prop_map(|(now, pairs, status)| Call::Observe {
                now,
                pairs: pairs
                    .into_iter()
                    .map(|(i, v)| (HEADER_NAMES[i].to_string(), v))
                    .collect(),
                status,
            }),
        any_time().prop_map(|now| Call::Status { now }),
        any_time().prop_map(|now| Call::BlockedFor { now }),
    ]
}

proptest! {
    #[test]
    fn no_call_sequence_panics_or_yields_nonsense(
        rpm in any::<u32>(),
        tpm in any::<u32>(),
        calls in proptest::collection::vec(call(), 0..60),
    ) {
        let mut limiter = limiter(rpm, tpm);
        let mut open: Vec<Reservation> = Vec::new();
        let mut last_start = f64::NEG_INFINITY;
        for call in calls {
            match call {
                Call::Reserve { now, tokens } => {
                    let r = limiter.reserve(now, tokens);
                    prop_assert!(r.wait_ms.is_finite() && r.wait_ms >= 0.0, "{r:?}");
                    prop_assert!(r.start_at_ms.is_finite() && r.start_at_ms >= last_start, "{r:?}");
                    prop_assert!(r.tokens <= tokens);
                    last_start = r.start_at_ms;
                    open.push(r);
                }
                Call::Reconcile { pick, actual } if !open.is_empty() => {
                    let r = open.swap_remove(pick % open.len());
                    limiter.reconcile(&r, actual);
                }
                Call::Cancel { pick } if !open.is_empty() => {
                    let r = open.swap_remove(pick % open.len());
                    limiter.cancel(&r);
                }
                Call::Reconcile { .. } | Call::Cancel { .. } => {}
                Call::Observe { now, pairs, status } => {
                    let h: Headers = pairs.into_iter().collect();
                    limiter.observe(now, &h, status, None);
                }
                Call::Status { now } => {
                    let s = limiter.status(now);
                    prop_assert!(s.next_free_in_ms.is_finite() && s.next_free_in_ms >= 0.0, "{s:?}");
                    prop_assert_eq!(s.in_flight as usize, open.len());
                    prop_assert!(s.blocked_until_ms.is_none_or(f64::is_finite));
                }
                Call::BlockedFor { now } => {
                    for r in &open {
                        if let Some(wait) = limiter.blocked_for(r, now) {
                            prop_assert!(wait.is_finite() && wait > 0.0);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn arbitrary_header_values_never_panic(name in 0..HEADER_NAMES.len(), value in ".*", status in any::<u16>()) {
        let mut limiter = limiter(60, 10_000);
        limiter.observe(T0, &headers(&[(HEADER_NAMES[name], value.as_str())]), status, None);
        let r = limiter.reserve(T0, 100);
        prop_assert!(r.wait_ms.is_finite() && r.wait_ms >= 0.0);
        let _ = parse_reset_duration_ms(&value);
    }

    #[test]
    fn the_sliding_window_and_token_budget_hold_for_any_arrivals(
        rpm in 1u32..20,
        tpm in 1u32..5000,
        arrivals in arrivals(),
    ) {
        check_arrivals(RequestRefill::Window, rpm, tpm, arrivals)?;
    }

    #[test]
    fn the_request_bucket_and_token_budget_hold_for_any_arrivals(
        rpm in 1u32..20,
        tpm in 1u32..5000,
        arrivals in arrivals(),
    ) {
        check_arrivals(RequestRefill::Continuous, rpm, tpm, arrivals)?;
    }
}

/// Arrivals for [`check_arrivals`]: a gap (below 30 s: the same instant), the tokens to
/// reserve, and maybe a 429 with that `retry-after-ms` first.
fn arrivals() -> impl Strategy<Value = Vec<(f64, u32, Option<f64>)>> {
    proptest::collection::vec(
        (
            0.0..120_000.0f64,
            0u32..6000,
            proptest::option::of(0.0..70_000.0f64),
        ),
        1..150,
    )
}

/// Runs `arrivals` through a limiter of `rpm` and `tpm`, its callers checking the gate
/// before they send, and checks what was sent against the request limit (an exact window
/// or a bucket, as `refill` says) and the token budget.
fn check_arrivals(
    refill: RequestRefill,
    rpm: u32,
    tpm: u32,
    arrivals: Vec<(f64, u32, Option<f64>)>,
) -> Result<(), TestCaseError> {
    let mut limiter = RateLimiter::new(RateLimits {
        requests_per_minute: rpm,
        tokens_per_minute: tpm,
        requests_refill: refill,
    });
    let mut now = T0;
    let mut last_scheduled = f64::NEG_INFINITY;
    // Callers asleep until they check the gate: (reservation, when they check).
    let mut waiting: Vec<(Reservation, f64)> = Vec::new();
    // Requests sent: (when, tokens charged).
    let mut sent: Vec<(f64, f64)> = Vec::new();
    for (gap, tokens, block) in arrivals {
        // Arrivals are ascending, some at the same instant; some responses are 429s.
        now += if gap < 30_000.0 { 0.0 } else { gap - 30_000.0 };
        // Callers due before this moment wake, check the gate and send or sleep again.
        run_callers(&limiter, &mut waiting, &mut sent, now)?;
        if let Some(block) = block {
            let ms = block.to_string();
            limiter.observe(now, &headers(&[("retry-after-ms", ms.as_str())]), 429, None);
        }
        let r = limiter.reserve(now, tokens);
        prop_assert!(r.start_at_ms >= now);
        prop_assert!(r.start_at_ms >= last_scheduled, "FIFO");
        prop_assert_eq!(
            limiter.blocked_for(&r, r.start_at_ms),
            None,
            "reserve honours known blocks"
        );
        last_scheduled = r.start_at_ms;
        waiting.push((r, r.start_at_ms));
    }
    run_callers(&limiter, &mut waiting, &mut sent, f64::INFINITY)?;
    sent.sort_by(|a, b| a.0.total_cmp(&b.0));
    let starts: Vec<f64> = sent.iter().map(|(at, _)| *at).collect();
    let held = match refill {
        RequestRefill::Window => window_holds(&starts, rpm as usize),
        RequestRefill::Continuous => bucket_holds(&starts, rpm),
    };
    if let Err(message) = held {
        return Err(TestCaseError::fail(message));
    }
    // A token bucket admits at most its capacity plus a minute's refill in any minute.
    let budget = 2.0 * f64::from(tpm) + 1e-6;
    for i in 0..starts.len() {
        let used: f64 = (i..starts.len())
            .take_while(|&j| starts[j] - starts[i] <= MINUTE)
            .map(|j| sent[j].1)
            .sum();
        prop_assert!(used <= budget, "{used} tokens within a minute of start {i}");
    }
    Ok(())
}

/// Wakes, in time order, every caller whose check is due before `before`: it asks the gate
/// and either sends (recorded in `sent`) or sleeps as long as the gate says.
fn run_callers(
    limiter: &RateLimiter,
    waiting: &mut Vec<(Reservation, f64)>,
    sent: &mut Vec<(f64, f64)>,
    before: f64,
) -> Result<(), TestCaseError> {
    let mut checks = 0;
    while let Some(i) = (0..waiting.len())
        .filter(|&i| waiting[i].1 < before)
        .min_by(|&a, &b| waiting[a].1.total_cmp(&waiting[b].1))
    {
        checks += 1;
        prop_assert!(
            checks <= 10 * (waiting.len() + sent.len()) + 10,
            "the gate keeps saying wait"
        );
        let (r, at) = waiting[i];
        match limiter.blocked_for(&r, at) {
            Some(wait) => waiting[i].1 = at + wait,
            None => {
                sent.push((at, f64::from(r.tokens)));
                waiting.swap_remove(i);
            }
        }
    }
    Ok(())
}

#[test]
fn reserve_wait_leaves_nothing_in_flight() {
    let mut limiter = limiter(6000, 6_000_000);
    for i in 0..1000 {
        let wait = limiter.reserve_wait(T0 + f64::from(i) * 10.0, 100);
        assert_eq!(wait, 0.0);
    }
    assert_eq!(limiter.status(T0 + 10_000.0).in_flight, 0);
    // So a server's remaining figure is not reduced by requests that ended long ago.
    limiter.observe(
        T0 + 10_000.0,
        &headers(&[("x-ratelimit-remaining-tokens", "90000")]),
        200,
        None,
    );
    assert_eq!(limiter.reserve(T0 + 10_000.0, 50_000).wait_ms, 0.0);
}

#[test]
fn an_arrival_slack_shifts_the_schedule_once_and_keeps_the_pace() {
    let limits = RateLimits {
        requests_per_minute: 240,
        tokens_per_minute: 1_000_000,
        requests_refill: RequestRefill::Continuous,
    };
    let plain = schedule(RateLimiter::new(limits), 400);
    let slack = schedule(RateLimiter::new(limits).with_arrival_slack(100.0), 400);
    // The bucket's 240 (less what refills in the slack) at once, then one every 250 ms:
    // every start that waited is 100 ms later, and the pace is the same.
    assert_eq!(plain.iter().filter(|w| **w == 0.0).count(), 240);
    assert_eq!(slack.iter().filter(|w| **w == 0.0).count(), 239);
    for i in 241..400 {
        assert!(
            (slack[i] - plain[i] - 100.0).abs() < 1e-6,
            "{i}: {} vs {}",
            slack[i],
            plain[i]
        );
        assert!((slack[i] - slack[i - 1] - 250.0).abs() < 1e-6);
    }
    assert!((plain[399] - 160.0 * 250.0).abs() < 1e-6);
    // A tiny budget: the slack never asks more than the bucket holds.
    let one = RateLimits {
        requests_per_minute: 1,
        tokens_per_minute: 10,
        requests_refill: RequestRefill::Continuous,
    };
    assert_eq!(
        schedule(RateLimiter::new(one).with_arrival_slack(100.0), 2),
        [0.0, 60_000.0]
    );
}

/// The waits of `count` reservations of 1 token made at once.
fn schedule(mut limiter: RateLimiter, count: usize) -> Vec<f64> {
    (0..count)
        .map(|_| limiter.reserve(1_700_000_000_000.0, 1).wait_ms)
        .collect()
}

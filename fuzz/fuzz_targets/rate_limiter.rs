//! The rate limiter (`rate_limit.rs`), with or without an arrival slack, driven through
//! arbitrary sequences of its operations (`reserve`, `reserve_wait`, `observe`,
//! `blocked_for`, `reconcile`, `cancel`, `status`) at arbitrary times: forward mostly, but
//! also backwards, NaN, infinite or negative.
//!
//! Checks what `RateLimiter` documents: nothing panics; waits are finite and not negative;
//! reservations start first come, first served, no earlier than the limiter's clock; a
//! reservation is charged at most its estimate; with the exact window no 60 seconds hold
//! more starts than the configured limit (and the status never counts more); the status
//! counts in flight exactly the reservations not yet reconciled or cancelled, and never
//! reports an effective limit above the configured one.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use llm_distiller::http::Headers;
use llm_distiller::rate_limit::{RateLimiter, RateLimits, RequestRefill, Reservation};

#[derive(Arbitrary, Debug)]
struct Run {
    requests_per_minute: u8,
    tokens_per_minute: u32,
    continuous: bool,
    /// The arrival slack, in milliseconds (see `RateLimiter::with_arrival_slack`).
    arrival_slack_ms: Option<u16>,
    ops: Vec<(Time, Op)>,
}

/// When the next operation happens.
#[derive(Arbitrary, Debug)]
enum Time {
    /// Some milliseconds after the previous one.
    Later(u16),
    /// Much later.
    Minutes(u8),
    /// Earlier than the previous one.
    Earlier(u16),
    /// Any value at all, for this operation only.
    Any(f64),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Reserve(u32),
    ReserveWait(u32),
    /// Headers of a response, for the reservation at this index among those in flight.
    Observe(u16, Vec<(HeaderName, HeaderValue)>, Option<u8>),
    BlockedFor(u8),
    Reconcile(u8, Option<u32>),
    Cancel(u8),
    Status,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum HeaderName {
    LimitRequests,
    LimitTokens,
    RemainingRequests,
    RemainingTokens,
    ResetRequests,
    RetryAfter,
    RetryAfterMs,
}

#[derive(Arbitrary, Debug)]
enum HeaderValue {
    Count(u32),
    Decimal(f64),
    Duration(u16, u8),
    Text(String),
}

const WINDOW_MS: f64 = 60_000.0;

fuzz_target!(|run: Run| {
    let limits = RateLimits {
        requests_per_minute: u32::from(run.requests_per_minute),
        tokens_per_minute: run.tokens_per_minute,
        requests_refill: if run.continuous {
            RequestRefill::Continuous
        } else {
            RequestRefill::Window
        },
    };
    let rpm = limits.requests_per_minute.max(1);
    let mut limiter = RateLimiter::new(limits);
    if let Some(slack) = run.arrival_slack_ms {
        limiter = limiter.with_arrival_slack(f64::from(slack));
    }
    let mut clock = 1.7e12;
    let mut in_flight: Vec<Reservation> = Vec::new();
    let mut starts: Vec<f64> = Vec::new();
    let mut latest_seen = 0.0f64;
    for (time, op) in run.ops {
        let now = match time {
            Time::Later(ms) => {
                clock += f64::from(ms);
                clock
            }
            Time::Minutes(m) => {
                clock += f64::from(m) * WINDOW_MS;
                clock
            }
            Time::Earlier(ms) => {
                clock -= f64::from(ms);
                clock
            }
            Time::Any(t) => t,
        };
        // The limiter's clock: the latest valid time an operation that takes the time
        // in (`status` and `blocked_for` only read it).
        let moves_clock = matches!(op, Op::Reserve(_) | Op::ReserveWait(_) | Op::Observe(..));
        if moves_clock && (0.0..=9_007_199_254_740_992.0).contains(&now) {
            latest_seen = latest_seen.max(now);
        }
        match op {
            Op::Reserve(tokens) | Op::ReserveWait(tokens) => {
                let reservation = if matches!(op, Op::Reserve(_)) {
                    let r = limiter.reserve(now, tokens);
                    in_flight.push(r);
                    r
                } else {
                    // The same as reserve, but never in flight: check its start through
                    // a status afterwards.
                    let wait = limiter.reserve_wait(now, tokens);
                    assert!(wait.is_finite() && wait >= 0.0, "{wait}");
                    starts.push(latest_seen + wait);
                    continue;
                };
                assert!(reservation.tokens <= tokens);
                assert!(reservation.wait_ms.is_finite() && reservation.wait_ms >= 0.0);
                assert!(reservation.start_at_ms >= latest_seen, "{reservation:?}");
                if let Some(&previous) = starts.last() {
                    // (A start behind `reserve_wait` is known to within rounding.)
                    assert!(
                        reservation.start_at_ms >= previous - 1e-3,
                        "first come, first served"
                    );
                }
                starts.push(reservation.start_at_ms);
                if !run.continuous && starts.len() > rpm as usize {
                    let earlier = starts[starts.len() - 1 - rpm as usize];
                    assert!(
                        reservation.start_at_ms >= earlier + WINDOW_MS - 1e-3,
                        "{} starts within 60 s: {earlier} and {reservation:?}",
                        rpm + 1
                    );
                }
            }
            Op::Observe(status, headers, own) => {
                let headers: Headers = headers
                    .into_iter()
                    .map(|(name, value)| (name.as_str(), value.text()))
                    .collect();
                let own = own.and_then(|i| pick(&in_flight, i)).copied();
                limiter.observe(now, &headers, status, own.as_ref());
            }
            Op::BlockedFor(i) => {
                if let Some(reservation) = pick(&in_flight, i) {
                    if let Some(wait) = limiter.blocked_for(reservation, now) {
                        assert!(wait.is_finite() && wait > 0.0, "{wait}");
                    }
                }
            }
            Op::Reconcile(i, actual) => {
                if let Some(reservation) = take(&mut in_flight, i) {
                    limiter.reconcile(&reservation, actual);
                }
            }
            Op::Cancel(i) => {
                if let Some(reservation) = take(&mut in_flight, i) {
                    limiter.cancel(&reservation);
                }
            }
            Op::Status => {
                let status = limiter.status(now);
                assert_eq!(status.in_flight as usize, in_flight.len());
                assert!(status.next_free_in_ms.is_finite() && status.next_free_in_ms >= 0.0);
                assert!(status.effective_requests_per_minute <= rpm);
                assert!(status.effective_tokens_per_minute <= limits.tokens_per_minute.max(1));
                if !run.continuous {
                    assert!(status.requests_per_minute <= rpm, "{status:?}");
                }
            }
        }
    }
});

fn pick(in_flight: &[Reservation], i: u8) -> Option<&Reservation> {
    in_flight.get(usize::from(i) % in_flight.len().max(1))
}

fn take(in_flight: &mut Vec<Reservation>, i: u8) -> Option<Reservation> {
    let index = usize::from(i) % in_flight.len().max(1);
    (index < in_flight.len()).then(|| in_flight.remove(index))
}

impl HeaderName {
    fn as_str(self) -> &'static str {
        match self {
            HeaderName::LimitRequests => "x-ratelimit-limit-requests",
            HeaderName::LimitTokens => "x-ratelimit-limit-tokens",
            HeaderName::RemainingRequests => "x-ratelimit-remaining-requests",
            HeaderName::RemainingTokens => "x-ratelimit-remaining-tokens",
            HeaderName::ResetRequests => "x-ratelimit-reset-requests",
            HeaderName::RetryAfter => "retry-after",
            HeaderName::RetryAfterMs => "retry-after-ms",
        }
    }
}

impl HeaderValue {
    fn text(&self) -> String {
        match self {
            HeaderValue::Count(n) => n.to_string(),
            HeaderValue::Decimal(x) => x.to_string(),
            HeaderValue::Duration(n, unit) => {
                format!(
                    "{n}{}",
                    ["ms", "s", "m", "h", "m0s"][usize::from(*unit % 5)]
                )
            }
            HeaderValue::Text(text) => text.clone(),
        }
    }
}

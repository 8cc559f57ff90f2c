//! How many rate-limit decisions per second the limiter makes natively.
//!
//! Run with `cargo bench --bench rate_limit`. Each figure is the median of several runs of
//! a few million calls on a fake clock; the target is at least 10 million decisions per
//! second, so that the limiter never shows up next to a network round trip.

use std::hint::black_box;
use std::time::Instant;

use llm_distiller::http::Headers;
use llm_distiller::rate_limit::{RateLimiter, RateLimits};

const RUNS: usize = 7;
const CALLS: u32 = 2_000_000;
const T0: f64 = 1_700_000_000_000.0;

/// Runs `body` (which makes `CALLS` calls) `RUNS` times and returns the median rate, in
/// calls per second.
fn median_rate(mut body: impl FnMut()) -> f64 {
    let mut rates: Vec<f64> = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            body();
            f64::from(CALLS) / started.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[RUNS / 2]
}

fn report(name: &str, rate: f64) {
    println!(
        "{name:<58} {:>7.1} M/s  {:>6.1} ns/call",
        rate / 1e6,
        1e9 / rate
    );
}

fn main() {
    // Under the limit: limits far above the load, so every request may go at once. The
    // clock advances 1 ms per request, which keeps 60 000 start times in the window.
    let rate = median_rate(|| {
        let mut limiter = RateLimiter::new(RateLimits {
            requests_per_minute: u32::MAX,
            tokens_per_minute: u32::MAX,
            ..Default::default()
        });
        for i in 0..CALLS {
            let now = T0 + f64::from(i);
            let reservation = limiter.reserve(black_box(now), black_box(500));
            assert!(reservation.wait_ms == 0.0);
            limiter.reconcile(&reservation, black_box(Some(420)));
        }
        black_box(&limiter);
    });
    report("reserve + reconcile, under the limit", rate);

    // Over the request limit: arrivals at twice the limit (600 per minute against 300),
    // so each reservation is scheduled into the future behind a growing queue.
    let rate = median_rate(|| {
        let mut limiter = RateLimiter::new(RateLimits {
            requests_per_minute: 300,
            tokens_per_minute: u32::MAX,
            ..Default::default()
        });
        let mut waited = 0.0;
        for i in 0..CALLS {
            let now = T0 + f64::from(i) * 100.0;
            let reservation = limiter.reserve(black_box(now), black_box(500));
            waited += reservation.wait_ms;
            limiter.reconcile(&reservation, None);
        }
        assert!(waited > 0.0);
        black_box(waited);
    });
    report("reserve + reconcile, over the request limit (queued)", rate);

    // Over the token limit: 100 tokens every 50 ms against 60 000 per minute (1 per ms).
    let rate = median_rate(|| {
        let mut limiter = RateLimiter::new(RateLimits {
            requests_per_minute: u32::MAX,
            tokens_per_minute: 60_000,
            ..Default::default()
        });
        let mut waited = 0.0;
        for i in 0..CALLS {
            let now = T0 + f64::from(i) * 50.0;
            let reservation = limiter.reserve(black_box(now), black_box(100));
            waited += reservation.wait_ms;
            limiter.reconcile(&reservation, Some(black_box(90)));
        }
        assert!(waited > 0.0);
        black_box(waited);
    });
    report("reserve + reconcile, over the token limit (queued)", rate);

    // The headers of a typical OpenAI chat completion response, rate-limit ones and others
    // (the lookup is a case-insensitive scan of them all).
    let headers: Headers = [
        ("date", "Tue, 14 Nov 2023 22:13:20 GMT"),
        ("content-type", "application/json"),
        ("transfer-encoding", "chunked"),
        ("connection", "keep-alive"),
        ("access-control-expose-headers", "X-Request-ID"),
        ("openai-organization", "user-abc123"),
        ("openai-processing-ms", "512"),
        ("openai-version", "2020-10-01"),
        (
            "strict-transport-security",
            "max-age=15724800; includeSubDomains",
        ),
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-limit-tokens", "2000000"),
        ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-remaining-tokens", "1999390"),
        ("x-ratelimit-reset-requests", "6ms"),
        ("x-ratelimit-reset-tokens", "18ms"),
        ("x-request-id", "req_0123456789abcdef0123456789abcdef"),
        ("cf-cache-status", "DYNAMIC"),
        ("server", "cloudflare"),
        ("cf-ray", "8256a1f7ec0e2b4a-AMS"),
        ("alt-svc", "h3=\":443\"; ma=86400"),
    ]
    .into_iter()
    .collect();
    let rate = median_rate(|| {
        let mut limiter = RateLimiter::new(RateLimits {
            requests_per_minute: 10_000,
            tokens_per_minute: 2_000_000,
            ..Default::default()
        });
        for i in 0..CALLS {
            let now = T0 + f64::from(i);
            limiter.observe(black_box(now), black_box(&headers), black_box(200), None);
        }
        black_box(&limiter);
    });
    report("observe, typical OpenAI headers (20 headers, 6 used)", rate);

    // A full request's worth of calls: reserve, gate, observe, reconcile.
    let rate = median_rate(|| {
        let mut limiter = RateLimiter::new(RateLimits {
            requests_per_minute: 10_000,
            tokens_per_minute: 2_000_000,
            ..Default::default()
        });
        for i in 0..CALLS {
            let now = T0 + f64::from(i) * 10.0;
            let reservation = limiter.reserve(black_box(now), black_box(600));
            black_box(limiter.blocked_for(&reservation, reservation.start_at_ms));
            limiter.observe(now, black_box(&headers), 200, None);
            limiter.reconcile(&reservation, Some(black_box(610)));
        }
        black_box(&limiter);
    });
    report(
        "reserve + blocked_for + observe + reconcile (one request)",
        rate,
    );

    // Status, with a minute of start times in the window.
    let mut limiter = RateLimiter::new(RateLimits {
        requests_per_minute: u32::MAX,
        tokens_per_minute: u32::MAX,
        ..Default::default()
    });
    for i in 0..60_000 {
        limiter.reserve(T0 + f64::from(i), 10);
    }
    let rate = median_rate(|| {
        for i in 0..CALLS {
            let now = T0 + 60_000.0 + f64::from(i % 1000);
            black_box(limiter.status(black_box(now)));
        }
    });
    report("status, 60 000 start times in the window", rate);
}

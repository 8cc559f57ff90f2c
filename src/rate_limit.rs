//! Client-side rate limiting: requests and tokens per minute, adapted to the server's
//! rate-limit headers.
//!
//! [`RateLimiter`] schedules each call before it is sent: [`RateLimiter::reserve`] commits
//! one request and an estimate of its tokens at once and answers how long the caller must
//! wait, so concurrent callers get distinct, first-come-first-served start times and nobody
//! polls. Requests obey an exact sliding window (never more than the limit in any 60 s) or,
//! when so configured, a continuously refilling bucket as OpenAI's own
//! ([`RequestRefill`]); tokens always a continuously refilling bucket that may go into
//! debt. Both adapt to what the
//! server reports (`x-ratelimit-*`, `retry-after`, 429s), always toward the more restrictive
//! figure. Every decision is O(1) (amortized); memory is one float per request started in the
//! last minute or still queued.
//!
//! This module is pure: it never reads a clock and never sleeps. Every time is `now_ms`,
//! milliseconds since the Unix epoch, passed in by the caller, who also does the waiting;
//! tests drive it with plain numbers. It holds no lock: a caller shares one limiter behind
//! whatever its runtime offers (a `RefCell` in single-threaded wasm).

use std::collections::VecDeque;

use crate::http::Headers;

/// The length of the rate-limit window: limits are per minute.
const WINDOW_MS: f64 = 60_000.0;

/// A server-requested wait (`retry-after`, `x-ratelimit-reset-requests`) longer than this
/// is taken as nonsense and ignored rather than pausing every caller for a day or more.
const MAX_SERVER_WAIT_MS: f64 = 86_400_000.0;

/// How long after its last affected start a pause is kept, for callers whose timers fire
/// late: beyond that they are only held by the block itself.
const PAUSE_GRACE_MS: f64 = WINDOW_MS;

/// At most this many pauses are remembered; beyond, the oldest is forgotten (its
/// reservations are then held only until the current block ends).
const MAX_PAUSES: usize = 64;

/// Times outside `0..=MAX_TIME_MS` (2^53 ms, about 285 000 years) are treated like a time
/// that went backwards: as no time passing. This keeps every sum of times finite and exact
/// to well under a millisecond.
const MAX_TIME_MS: f64 = 9_007_199_254_740_992.0;

/// A provider's budget: the limits and how the request limit refills (the design's
/// `RateLimitConfig`, deserialized from the configuration as it is).
///
/// Both limits are at least 1 where they are validated (the configuration); the limiter
/// also clamps a 0 to 1 rather than dividing by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
#[cfg_attr(feature = "js", tsify(rename = "RateLimitConfig"))]
pub struct RateLimits {
    /// Requests per minute, at least 1 (default 60).
    pub requests_per_minute: u32,
    /// Tokens (prompt plus completion) per minute, at least 1 (default 90,000).
    pub tokens_per_minute: u32,
    /// How the request limit refills (default `continuous`, the bucket OpenAI and Azure
    /// OpenAI enforce).
    pub requests_refill: RequestRefill,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            requests_per_minute: 60,
            tokens_per_minute: 90_000,
            requests_refill: RequestRefill::Continuous,
        }
    }
}

/// How the requests-per-minute limit is enforced: what "N requests per minute" promises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub enum RequestRefill {
    /// An exact sliding window: no 60-second window ever holds more than N starts. The
    /// strict reading, safe against any server, and the one to choose when the limit is a
    /// promise made to someone else; but against a server that refills continuously it
    /// admits about half of what that server would once requests bind.
    Window,
    /// A bucket of N requests, full at first, refilling continuously at N per minute: the
    /// way OpenAI and Azure OpenAI enforce their limits (the default). A burst of N, then
    /// one request every 60/N s; a minute that follows an idle one may hold up to 2N starts.
    #[default]
    Continuous,
}

/// One reserved request: when it may start and what it was charged.
///
/// Hand it back exactly once, to [`RateLimiter::reconcile`] when the request finished
/// (successfully or not) or to [`RateLimiter::cancel`] when it was never sent.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct Reservation {
    /// A number unique within its limiter, for the caller's bookkeeping and logs.
    pub id: u64,
    /// The tokens charged: the estimate passed to [`RateLimiter::reserve`], clamped to the
    /// token capacity at the time.
    pub tokens: u32,
    /// How long to wait before sending, in milliseconds: `start_at_ms` minus the time of
    /// the reservation as the limiter saw it. `0` when the request may go at once.
    pub wait_ms: f64,
    /// When the request may start, in milliseconds since the Unix epoch, as scheduled at
    /// reservation; a later server signal may postpone it ([`RateLimiter::blocked_for`]).
    pub start_at_ms: f64,
    /// The tokens of every reservation of this limiter up to and including this one, so
    /// [`RateLimiter::observe`] can tell which reservations its server had counted.
    pub reserved_through: u64,
}

/// A snapshot of a limiter's state, for status pages and logs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct RateLimitStatus {
    /// Requests that started (were scheduled to start) in the last 60 seconds.
    pub requests_per_minute: u32,
    /// Tokens in use: the effective token capacity minus the bucket's level, rounded up.
    /// Above the capacity when reservations are queued for tokens (the bucket is in debt).
    pub tokens_per_minute: u64,
    /// The configured request limit.
    pub max_requests_per_minute: u32,
    /// The configured token limit.
    pub max_tokens_per_minute: u32,
    /// The server's request limit (`x-ratelimit-limit-requests`), when it sent one.
    pub api_requests_per_minute: Option<u32>,
    /// The server's token limit (`x-ratelimit-limit-tokens`), when it sent one.
    pub api_tokens_per_minute: Option<u32>,
    /// The server's last `x-ratelimit-remaining-requests`.
    pub api_remaining_requests: Option<u32>,
    /// The server's last `x-ratelimit-remaining-tokens`.
    pub api_remaining_tokens: Option<u32>,
    /// The request limit in force: the lower of the configured and the server's.
    pub effective_requests_per_minute: u32,
    /// The token limit in force: the lower of the configured and the server's.
    pub effective_tokens_per_minute: u32,
    /// Requests reserved and not yet reconciled or cancelled (queued ones included).
    pub in_flight: u32,
    /// Requests reserved to start later than now: waiting for their turn.
    #[serde(default)]
    pub waiting: u32,
    /// Until when a server signal (a 429's `retry-after`, no remaining requests) blocks
    /// every request, when that is in the future.
    pub blocked_until_ms: Option<f64>,
    /// How long a request reserved now (with one token) would wait, in milliseconds.
    pub next_free_in_ms: f64,
}

/// Schedules requests under a requests-per-minute and a tokens-per-minute limit.
///
/// Use it in four steps per request:
///
/// 1. [`reserve`](Self::reserve), then sleep `wait_ms`;
/// 2. [`blocked_for`](Self::blocked_for) right before sending, sleeping and asking again
///    for as long as it answers `Some` (a server signal paused the limiter meanwhile);
/// 3. send, and [`observe`](Self::observe) the response's headers, whatever its status;
/// 4. [`reconcile`](Self::reconcile) with the real token usage, or
///    [`cancel`](Self::cancel) instead if the request was never sent.
///
/// ```
/// use llm_distiller::http::Headers;
/// use llm_distiller::rate_limit::{RateLimiter, RateLimits, RequestRefill};
///
/// let limits = RateLimits { requests_per_minute: 2, tokens_per_minute: 10_000, requests_refill: RequestRefill::Window };
/// let mut limiter = RateLimiter::new(limits);
/// let now = 1_700_000_000_000.0; // the caller's clock, in ms since the Unix epoch
/// let first = limiter.reserve(now, 100);
/// let second = limiter.reserve(now, 100);
/// let third = limiter.reserve(now, 100);
/// assert_eq!((first.wait_ms, second.wait_ms), (0.0, 0.0));
/// assert_eq!(third.wait_ms, 60_000.0); // a third start within the minute would break the limit
///
/// // The first request is answered 429 "retry after 2 s": everyone not yet sent waits 2 s more.
/// assert_eq!(limiter.blocked_for(&first, now), None); // (it was sent)
/// let headers: Headers = [("retry-after-ms", "2000")].into_iter().collect();
/// limiter.observe(now + 500.0, &headers, 429, None);
/// limiter.reconcile(&first, Some(80));
/// assert_eq!(limiter.blocked_for(&third, third.start_at_ms), Some(2000.0));
/// ```
///
/// # The model
///
/// * Requests, [`RequestRefill::Window`]: the start times of the last
///   minute's reservations are kept in order; a new one starts no earlier than 60 s after
///   the `effective_rpm`-th previous one, so no 60-second window ever holds more than
///   `effective_rpm` starts. This is stricter than the server's own bucket, hence safe,
///   but once requests bind it admits about half of what the server would.
/// * Requests, [`RequestRefill::Continuous`] (the default): a bucket like the tokens'
///   below, of `effective_rpm` requests, each reservation taking one; it mirrors the
///   server's.
/// * Tokens: a bucket of `effective_tpm` tokens, starting full, refilling continuously at
///   `effective_tpm` per minute. A reservation takes its tokens at its start time and may
///   drive the level below zero (debt); its start is when the level covers it. A
///   reservation larger than the capacity is charged the capacity, or it could never start.
/// * A reservation starts at the latest of: now, the request window, the token bucket, a
///   server block, and the previous reservation's start (first come, first served).
/// * A server block pauses the limiter: reservations not yet due move later by the pause,
///   new ones are scheduled after it.
/// * Effective limits are the lower of the configured ones and the server's
///   `x-ratelimit-limit-*`; see [`observe`](Self::observe) for the rest.
///
/// Times that go backwards (or are NaN, infinite or negative) count as no time passing.
/// Nothing here panics on any input.
///
/// It serializes (serde) to its whole state, so that a limiter kept elsewhere (a Durable
/// Object's storage) restores exactly where it was.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RateLimiter {
    /// The configured limits, clamped to at least 1.
    configured: RateLimits,
    api_limit_requests: Option<u32>,
    api_limit_tokens: Option<u32>,
    api_remaining_requests: Option<u32>,
    api_remaining_tokens: Option<u32>,
    /// The latest time seen: the limiter's clock never runs backwards.
    clock_ms: f64,
    /// See [`RateLimiter::with_arrival_slack`] (0 unless set).
    #[serde(default)]
    arrival_slack_ms: f64,
    /// Scheduled start times, ascending: those of the last minute and the queued ones
    /// (see [`Self::forget_stale_starts`]).
    starts: VecDeque<f64>,
    /// The start time of the latest reservation: later ones never start earlier.
    last_start_ms: f64,
    /// The token bucket's level, in tokens, at `bucket_ms`.
    level: Level,
    /// With [`RequestRefill::Continuous`], the request bucket's level at `bucket_ms` (in
    /// window mode it stays full, unused).
    requests_level: Level,
    /// The time `level` and `requests_level` refer to: the latest reservation's start, or
    /// later after a block.
    bucket_ms: f64,
    /// Nothing starts before this time (`0`: never blocked, as times are never negative).
    blocked_until_ms: f64,
    in_flight: u32,
    /// The tokens charged to reservations not yet reconciled or cancelled.
    in_flight_tokens: u64,
    /// The tokens of every reservation ever made (see [`Reservation::reserved_through`]).
    reserved_total: u64,
    next_id: u64,
    /// Recent pauses, oldest first, for [`RateLimiter::blocked_for`] to move the
    /// reservations they postponed.
    pauses: VecDeque<Pause>,
}

/// Where [`RateLimiter::schedule`] puts a reservation.
struct Scheduled {
    start: f64,
    /// The token bucket's level right after the reservation took its tokens.
    level: Level,
    /// The request bucket's, right after it took its request.
    requests_level: Level,
}

/// A bucket's level as the limiter knows it, twice: by its own bookkeeping, and by the
/// server's latest `x-ratelimit-remaining-*` figure carried forward the same way. The
/// lower of the two is what may be spent.
///
/// Both tracks refill, spend and get refunds alike; an observation replaces the server
/// track rather than lowering the own one for good. A figure can only be pinned to the
/// limiter's reservations by assuming the server saw them in order, and concurrent requests
/// overtake each other: with a running minimum every pessimistic guess would stay, costing
/// throughput for the rest of the run, whereas the next observation corrects a replaced one.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Level {
    own: f64,
    server: f64,
}

impl Level {
    /// Full: both tracks at the capacity (with no figure yet, the server's is the capacity).
    fn full(capacity: f64) -> Level {
        Level {
            own: capacity,
            server: capacity,
        }
    }

    /// What may be spent: at most the capacity, negative when in debt.
    fn value(&self) -> f64 {
        self.own.min(self.server)
    }

    /// The level `elapsed` ms later, refilled at `rate` up to `capacity`.
    fn refilled(self, elapsed: f64, rate: f64, capacity: f64) -> Level {
        Level {
            own: (self.own + elapsed * rate).min(capacity),
            server: (self.server + elapsed * rate).min(capacity),
        }
    }

    fn take(&mut self, amount: f64) {
        self.own -= amount;
        self.server -= amount;
    }

    /// Gives `amount` back (a negative amount charges it), up to `capacity`.
    fn give(&mut self, amount: f64, capacity: f64) {
        self.own = (self.own + amount).min(capacity);
        self.server = (self.server + amount).min(capacity);
    }

    /// A lower capacity: neither track above it.
    fn clamp(&mut self, capacity: f64) {
        self.own = self.own.min(capacity);
        self.server = self.server.min(capacity);
    }
}

/// A server block that postponed every reservation not yet due when it arrived.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Pause {
    /// Reservations with a lower id were made before the pause, so may be affected.
    first_unaffected_id: u64,
    /// When the block was observed: reservations due by then are not postponed.
    observed_ms: f64,
    /// How far the pause postponed the others.
    shift_ms: f64,
    /// The latest start of a postponed reservation, after the shift.
    last_affected_start_ms: f64,
}

impl RateLimiter {
    /// A limiter for `limits`, with both the request window and the token bucket full.
    pub fn new(limits: RateLimits) -> Self {
        let configured = RateLimits {
            requests_per_minute: limits.requests_per_minute.max(1),
            tokens_per_minute: limits.tokens_per_minute.max(1),
            requests_refill: limits.requests_refill,
        };
        RateLimiter {
            configured,
            api_limit_requests: None,
            api_limit_tokens: None,
            api_remaining_requests: None,
            api_remaining_tokens: None,
            clock_ms: 0.0,
            arrival_slack_ms: 0.0,
            starts: VecDeque::new(),
            last_start_ms: 0.0,
            level: Level::full(f64::from(configured.tokens_per_minute)),
            requests_level: Level::full(f64::from(configured.requests_per_minute)),
            bucket_ms: 0.0,
            blocked_until_ms: 0.0,
            in_flight: 0,
            in_flight_tokens: 0,
            reserved_total: 0,
            next_id: 0,
            pauses: VecDeque::new(),
        }
    }

    /// Reserves one request and `tokens` estimated tokens (prompt plus the completion it
    /// may produce, i.e. `max_tokens`) and schedules it after every earlier reservation.
    ///
    /// The reservation is committed at once (debt-based scheduling, as in GCRA): the caller
    /// sleeps `wait_ms` and then sends, and concurrent callers get distinct, fair start
    /// times without polling. O(1) amortized.
    pub fn reserve(&mut self, now_ms: f64, tokens: u32) -> Reservation {
        let now = self.advance_clock(now_ms);
        self.forget_stale_starts(now);
        self.forget_settled_pauses(now);
        let tokens = tokens.min(self.effective_tpm());
        let Scheduled {
            start,
            level,
            requests_level,
        } = self.schedule(now, tokens);
        self.starts.push_back(start);
        self.last_start_ms = start;
        self.level = level;
        self.requests_level = requests_level;
        self.bucket_ms = start;
        self.in_flight = self.in_flight.saturating_add(1);
        self.in_flight_tokens = self.in_flight_tokens.saturating_add(u64::from(tokens));
        self.reserved_total = self.reserved_total.saturating_add(u64::from(tokens));
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        Reservation {
            id,
            tokens,
            wait_ms: start - now,
            start_at_ms: start,
            reserved_through: self.reserved_total,
        }
    }

    /// The limiter, its buckets holding a reservation's share plus what refills in
    /// `slack_ms` before it starts (a shift of the schedule by that much once, not a slower
    /// pace). For requests that reach the server after their start by delays that vary
    /// (a Durable Object's round trip, a proxy, isolates in other processes): the server's
    /// bucket starts when the first request arrives, and one that arrives faster than that
    /// first would find it short by the difference. Only the buckets that refill
    /// continuously take it (the token bucket, and [`RequestRefill::Continuous`]'s).
    /// Negative or not finite counts as 0.
    pub fn with_arrival_slack(mut self, slack_ms: f64) -> Self {
        self.arrival_slack_ms = if slack_ms.is_finite() {
            slack_ms.max(0.0)
        } else {
            0.0
        };
        self
    }

    /// The configured limits (each at least 1).
    pub fn limits(&self) -> RateLimits {
        self.configured
    }

    /// Changes the configured limits at `now_ms`, keeping everything the limiter knows:
    /// the buckets refill at the old rates up to now, then hold at most the new capacity.
    /// What was reserved stays reserved. For a limiter that outlives its configuration
    /// (one kept in a Durable Object, across a deploy that changed the budget).
    pub fn reconfigure(&mut self, now_ms: f64, limits: RateLimits) {
        let now = self.advance_clock(now_ms);
        self.refill_to(now);
        self.configured = RateLimits {
            requests_per_minute: limits.requests_per_minute.max(1),
            tokens_per_minute: limits.tokens_per_minute.max(1),
            requests_refill: limits.requests_refill,
        };
        self.level.clamp(self.capacity());
        self.requests_level.clamp(self.requests_capacity());
    }

    /// [`Self::reserve`] for a caller that sleeps the wait and never reports back: the
    /// request is charged its estimate, and not counted in flight, where nothing would
    /// ever end it (in-flight tokens are taken off the server's remaining figures).
    pub fn reserve_wait(&mut self, now_ms: f64, tokens: u32) -> f64 {
        let reservation = self.reserve(now_ms, tokens);
        self.end_in_flight(&reservation);
        reservation.wait_ms
    }

    /// How much longer the request of `reservation` must wait at `now_ms`, if a server
    /// signal (a 429's `retry-after`, no remaining requests) arrived since it was reserved.
    /// Check it right before sending, and again after sleeping; `None` means go.
    ///
    /// Such a signal pauses the whole limiter: every reservation not yet due when it
    /// arrived is postponed by the same amount, so queued requests keep their spacing
    /// (and the request window stays exact) instead of all going at the end of the block.
    /// A reservation already due, whose caller is merely late, waits for the block's end.
    /// O(1) unless pauses arrive faster than the queue drains (at most 64 are kept).
    pub fn blocked_for(&self, reservation: &Reservation, now_ms: f64) -> Option<f64> {
        let now = self.clock_at(now_ms);
        let mut start = reservation.start_at_ms;
        for pause in &self.pauses {
            if reservation.id < pause.first_unaffected_id && start >= pause.observed_ms {
                start += pause.shift_ms;
            }
        }
        let start = start.max(self.blocked_until_ms);
        (start > now).then_some(start - now)
    }

    /// The request of `reservation` finished, having used `actual_tokens` (`None`: unknown,
    /// keep the estimate). Refunds the difference to the bucket (up to its capacity) or
    /// charges it (the bucket may go into debt), and ends the reservation's in-flight
    /// accounting. Call it exactly once per reservation, whatever the outcome.
    pub fn reconcile(&mut self, reservation: &Reservation, actual_tokens: Option<u32>) {
        self.end_in_flight(reservation);
        if let Some(actual) = actual_tokens {
            let refund = f64::from(reservation.tokens) - f64::from(actual);
            self.level.give(refund, self.capacity());
        }
    }

    /// The request of `reservation` was never sent: gives its tokens back and ends its
    /// in-flight accounting. With [`RequestRefill::Continuous`] its request goes back to
    /// the bucket too; its slot in an exact window is not given back (that would need a
    /// search of the window): the limiter errs on the safe side by one request.
    pub fn cancel(&mut self, reservation: &Reservation) {
        self.end_in_flight(reservation);
        self.level
            .give(f64::from(reservation.tokens), self.capacity());
        if self.configured.requests_refill == RequestRefill::Continuous {
            self.requests_level.give(1.0, self.requests_capacity());
        }
    }

    /// Adapts to a response's headers (of any status), ignoring values that are absent,
    /// empty, unparsable, negative, non-finite or absurdly large (a wait over a day).
    ///
    /// * `x-ratelimit-limit-requests` / `-tokens` (positive integers): the effective limit
    ///   becomes the lower of the configured one and this one; when the token capacity
    ///   drops, the bucket's level drops with it.
    /// * `x-ratelimit-remaining-tokens` R: with `own`, the reservation of the request this
    ///   response answers, R was the server's figure when that request arrived, so the
    ///   server's level is R, plus the refill since the request started, minus the tokens
    ///   of every reservation made after it (the server had not counted those). Without
    ///   `own`, R minus every token still in flight (the server may not have counted them),
    ///   which is more conservative. That figure replaces the previous one; the bucket
    ///   spends the lower of it and the limiter's own bookkeeping.
    /// * `x-ratelimit-remaining-requests` R: with [`RequestRefill::Continuous`], the same
    ///   for the request bucket. In window mode, R = 0 pauses the limiter until now plus
    ///   `x-ratelimit-reset-requests` (a Go duration, [`parse_reset_duration_ms`]), or one
    ///   request interval (60 s / effective limit) when that is absent or nonsense.
    /// * Status 429 with `retry-after-ms` or `retry-after`: the limiter pauses for that
    ///   long (see [`crate::retry::retry_after_ms`]).
    ///
    /// A pause postpones every reservation not yet due by its length (see
    /// [`blocked_for`](Self::blocked_for)) and schedules new ones after it; the token bucket
    /// does not refill while paused, as the postponed requests still hold their tokens. A
    /// pause that ends no later than the current one changes nothing. On a pause this call
    /// is O(queued reservations); otherwise O(1).
    ///
    /// Azure OpenAI sends only the `remaining-*` headers and `retry-after-ms`; each header
    /// is used on its own. A `retry-after` on another status (a 503) concerns that one call
    /// and is left to [`crate::retry::RetryPolicy`]. `x-ratelimit-reset-tokens` is not used: the bucket's continuous
    /// refill models it already.
    pub fn observe(
        &mut self,
        now_ms: f64,
        headers: &Headers,
        status: u16,
        own: Option<&Reservation>,
    ) {
        let now = self.advance_clock(now_ms);
        self.forget_settled_pauses(now);
        let found = RateLimitHeaders::find(headers);
        if let Some(limit) = found.limit_requests.and_then(parse_u32).filter(|v| *v > 0) {
            self.refill_to(now);
            self.api_limit_requests = Some(limit);
            self.requests_level.clamp(self.requests_capacity());
        }
        if let Some(limit) = found.limit_tokens.and_then(parse_u32).filter(|v| *v > 0) {
            // Refill at the old rate up to now before the rate changes.
            self.refill_to(now);
            self.api_limit_tokens = Some(limit);
            self.level.clamp(self.capacity());
        }
        if let Some(remaining) = found.remaining_tokens.and_then(parse_u32) {
            self.api_remaining_tokens = Some(remaining);
            self.refill_to(now);
            let uncounted = own.map_or(self.in_flight_tokens, |own| {
                self.reserved_total.saturating_sub(own.reserved_through)
            });
            self.level.server = self.server_level(
                now,
                remaining,
                own,
                uncounted as f64,
                self.rate(),
                self.capacity(),
            );
        }
        if let Some(remaining) = found.remaining_requests.and_then(parse_u32) {
            self.api_remaining_requests = Some(remaining);
            if self.configured.requests_refill == RequestRefill::Continuous {
                // As for tokens. The reset is when the bucket will be full again, which the
                // continuous refill models already: no pause for R = 0.
                self.refill_to(now);
                let uncounted = own.map_or(u64::from(self.in_flight), |own| {
                    self.next_id.wrapping_sub(own.id).saturating_sub(1)
                });
                self.requests_level.server = self.server_level(
                    now,
                    remaining,
                    own,
                    uncounted as f64,
                    self.requests_rate(),
                    self.requests_capacity(),
                );
            } else if remaining == 0 {
                // A reset that is missing or nonsense still leaves "no requests remaining":
                // wait one request interval then.
                let wait = found
                    .reset_requests
                    .and_then(parse_reset_duration_ms)
                    .filter(|w| *w <= MAX_SERVER_WAIT_MS)
                    .unwrap_or(WINDOW_MS / f64::from(self.effective_rpm()));
                self.block_until(now, now + wait);
            }
        }
        if status == 429 {
            let wait = crate::retry::retry_after_ms(headers, now);
            if let Some(wait) = wait.filter(|w| *w <= MAX_SERVER_WAIT_MS) {
                self.block_until(now, now + wait);
            }
        }
    }

    /// A snapshot of the limiter at `now_ms`: usage, limits, the server's last figures and
    /// how long a new request would wait.
    pub fn status(&self, now_ms: f64) -> RateLimitStatus {
        let now = self.clock_at(now_ms);
        let started_by_now = self.starts.partition_point(|&start| start <= now);
        let started_before_window = self
            .starts
            .partition_point(|&start| start <= now - WINDOW_MS);
        let capacity = self.capacity();
        // The level at `now`: refilled up to it, or, when reservations are queued beyond
        // it, the later level minus the refill still to come.
        let level_now = if self.bucket_ms <= now {
            self.level
                .refilled(now - self.bucket_ms, self.rate(), capacity)
                .value()
        } else {
            // Reservations queued beyond `now` have spent the refill up to the latest start
            // already; the bucket's time may lie further on after a block, which spends
            // nothing.
            let spent_until = self.last_start_ms.max(now).min(self.bucket_ms);
            self.level.value() - (spent_until - now) * self.rate()
        };
        let next_start = self.schedule(now, 1).start;
        RateLimitStatus {
            requests_per_minute: u32::try_from(started_by_now - started_before_window)
                .unwrap_or(u32::MAX),
            // A float-to-integer `as` saturates (and maps NaN to 0), which is what we want.
            tokens_per_minute: (capacity - level_now).max(0.0).ceil() as u64,
            max_requests_per_minute: self.configured.requests_per_minute,
            max_tokens_per_minute: self.configured.tokens_per_minute,
            api_requests_per_minute: self.api_limit_requests,
            api_tokens_per_minute: self.api_limit_tokens,
            api_remaining_requests: self.api_remaining_requests,
            api_remaining_tokens: self.api_remaining_tokens,
            effective_requests_per_minute: self.effective_rpm(),
            effective_tokens_per_minute: self.effective_tpm(),
            in_flight: self.in_flight,
            waiting: u32::try_from(self.starts.len() - started_by_now).unwrap_or(u32::MAX),
            blocked_until_ms: (self.blocked_until_ms > now).then_some(self.blocked_until_ms),
            next_free_in_ms: next_start - now,
        }
    }

    /// The server's level at `bucket_ms`, from a `remaining` figure it sent at `now` (the
    /// buckets refilled up to `now` already), for a bucket refilling at `rate` up to
    /// `capacity`. The level may refer to a later time than `now` (queued reservations), by
    /// which the bucket refills further.
    ///
    /// With `own`, the reservation of the request answered, the server counted it and every
    /// request sent before it when it arrived, about when it started: `uncounted` is what was
    /// reserved after it, and the refill counts from its start. Without, `uncounted` is
    /// everything still in flight (the server may not have counted any of it), and the refill
    /// counts from `now`.
    fn server_level(
        &self,
        now: f64,
        remaining: u32,
        own: Option<&Reservation>,
        uncounted: f64,
        rate: f64,
        capacity: f64,
    ) -> f64 {
        let counted_at = own.map_or(now, |own| own.start_at_ms.min(now));
        let refill = (self.bucket_ms - counted_at).max(0.0) * rate;
        (f64::from(remaining) - uncounted + refill).min(capacity)
    }

    /// The request limit in force.
    fn effective_rpm(&self) -> u32 {
        let configured = self.configured.requests_per_minute;
        self.api_limit_requests
            .map_or(configured, |api| api.min(configured))
    }

    /// The token limit in force.
    fn effective_tpm(&self) -> u32 {
        let configured = self.configured.tokens_per_minute;
        self.api_limit_tokens
            .map_or(configured, |api| api.min(configured))
    }

    /// The bucket's capacity, in tokens.
    fn capacity(&self) -> f64 {
        f64::from(self.effective_tpm())
    }

    /// The bucket's refill rate, in tokens per millisecond (never zero).
    fn rate(&self) -> f64 {
        self.capacity() / WINDOW_MS
    }

    /// The request bucket's capacity ([`RequestRefill::Continuous`]).
    fn requests_capacity(&self) -> f64 {
        f64::from(self.effective_rpm())
    }

    /// The request bucket's refill rate, in requests per millisecond (never zero).
    fn requests_rate(&self) -> f64 {
        self.requests_capacity() / WINDOW_MS
    }

    /// `now_ms` when it is a usable time not before the clock, else the clock.
    fn clock_at(&self, now_ms: f64) -> f64 {
        if now_ms > self.clock_ms && now_ms <= MAX_TIME_MS {
            now_ms
        } else {
            self.clock_ms
        }
    }

    /// Moves the clock to `now_ms` (see [`Self::clock_at`]) and returns it.
    fn advance_clock(&mut self, now_ms: f64) -> f64 {
        self.clock_ms = self.clock_at(now_ms);
        self.clock_ms
    }

    /// When a request for `tokens` (at most the capacity) reserved at `now` would start,
    /// and the buckets' levels right after it took its share. Pure: `reserve` commits it.
    fn schedule(&self, now: f64, tokens: u32) -> Scheduled {
        let mut start = now
            .max(self.last_start_ms)
            .max(self.blocked_until_ms)
            .max(self.bucket_ms);
        let continuous = self.configured.requests_refill == RequestRefill::Continuous;
        let requests_rate = self.requests_rate();
        let requests_capacity = self.requests_capacity();
        let requests_level_at = |t: f64| {
            self.requests_level
                .refilled(t - self.bucket_ms, requests_rate, requests_capacity)
        };
        if continuous {
            let level = requests_level_at(start).value();
            let needed = self.needed_level(1.0, requests_rate, requests_capacity);
            if level < needed {
                start += (needed - level) / requests_rate;
            }
        } else {
            let rpm = self.effective_rpm() as usize;
            if let Some(index) = self.starts.len().checked_sub(rpm) {
                // A request due before a pause was observed may still have been held by it
                // (its caller's timer fired late): count it as starting when the block ended.
                let oldest = self.starts[index].max(self.blocked_until_ms);
                start = start.max(at_least_after(oldest, WINDOW_MS));
            }
        }
        let (capacity, rate) = (self.capacity(), self.rate());
        let tokens = f64::from(tokens);
        let available = self
            .level
            .refilled(start - self.bucket_ms, rate, capacity)
            .value();
        let needed = self.needed_level(tokens, rate, capacity);
        if available < needed {
            // The level reaches what is needed (at most the capacity, so no clamping
            // interferes) after this long; the reservation then leaves it at the slack.
            start += (needed - available) / rate;
        }
        let mut level = self.level.refilled(start - self.bucket_ms, rate, capacity);
        level.take(tokens);
        // The request bucket's level only matters when it refills continuously; in window
        // mode it stays at its capacity, untouched.
        let requests_level = if continuous {
            let mut requests_level = requests_level_at(start);
            requests_level.take(1.0);
            requests_level
        } else {
            self.requests_level
        };
        Scheduled {
            start,
            level,
            requests_level,
        }
    }

    /// The level a bucket refilling at `rate` (per ms) must hold before a reservation of
    /// `amount` starts: the amount and what refills in the arrival slack, at most the
    /// capacity (a full bucket always admits what it can hold).
    fn needed_level(&self, amount: f64, rate: f64, capacity: f64) -> f64 {
        (amount + rate * self.arrival_slack_ms).min(capacity)
    }

    /// Drops start times that can no longer constrain a request reserved at `now` or later:
    /// those 60 s or more before it (or before the end of the block they count as starting
    /// at). Status counts only the last 60 s, so it loses nothing either.
    ///
    /// Only those: keeping just the latest `effective_rpm` would be enough for scheduling,
    /// but then status would not count queued requests' predecessors that started within
    /// the last minute. Memory stays bounded all the same: by the exact window, at most
    /// `effective_rpm` starts lie in the past minute, plus the reservations still queued.
    fn forget_stale_starts(&mut self, now: f64) {
        let floor = self.blocked_until_ms;
        while let Some(&oldest) = self.starts.front() {
            if at_least_after(oldest.max(floor), WINDOW_MS) > now {
                break;
            }
            self.starts.pop_front();
        }
    }

    /// Brings the buckets' time up to `now` when it lags behind, refilling them.
    fn refill_to(&mut self, now: f64) {
        if self.bucket_ms < now {
            let elapsed = now - self.bucket_ms;
            self.level = self.level.refilled(elapsed, self.rate(), self.capacity());
            self.requests_level = self.requests_level.refilled(
                elapsed,
                self.requests_rate(),
                self.requests_capacity(),
            );
            self.bucket_ms = now;
        }
    }

    /// Pauses the limiter until `until`: nothing starts before it, and every reservation
    /// not yet due at `now` moves later by the time the block adds.
    ///
    /// Moving them all by the same amount (rather than letting them all go when the block
    /// ends) inserts a gap into the schedule, which keeps both the request window and the
    /// token budget intact: any minute of the new schedule holds no more than some minute
    /// of the old one. The bucket's timeline moves with them, so it does not refill during
    /// the pause. Start times due before `now` stay: those requests have gone.
    fn block_until(&mut self, now: f64, until: f64) {
        let shift = until - now.max(self.blocked_until_ms);
        if shift <= 0.0 {
            return;
        }
        self.blocked_until_ms = until;
        // The deque is sorted: the entries not yet due are a suffix.
        let due = self.starts.partition_point(|&start| start < now);
        for start in self.starts.range_mut(due..) {
            *start += shift;
        }
        if self.last_start_ms >= now {
            self.last_start_ms += shift;
        }
        self.refill_to(now);
        self.bucket_ms += shift;
        // Earlier pauses' reservations not yet due move too, and must be remembered as long.
        for pause in self.pauses.iter_mut() {
            if pause.last_affected_start_ms >= now {
                pause.last_affected_start_ms += shift;
            }
        }
        // Responses to concurrent requests often bring one pause each. With no reservation
        // made in between, the next pause affects the same reservations (the ones the last
        // moved are all due after it): one longer pause is the same thing.
        if let Some(last) = self.pauses.back_mut() {
            if last.first_unaffected_id == self.next_id {
                last.shift_ms += shift;
                return;
            }
        }
        if self.pauses.len() == MAX_PAUSES {
            self.pauses.pop_front();
        }
        self.pauses.push_back(Pause {
            first_unaffected_id: self.next_id,
            observed_ms: now,
            shift_ms: shift,
            last_affected_start_ms: self.last_start_ms,
        });
    }

    /// Forgets pauses whose postponed reservations are all long due.
    fn forget_settled_pauses(&mut self, now: f64) {
        while let Some(pause) = self.pauses.front() {
            if pause.last_affected_start_ms + PAUSE_GRACE_MS > now {
                break;
            }
            self.pauses.pop_front();
        }
    }

    /// Ends the in-flight accounting of `reservation`.
    fn end_in_flight(&mut self, reservation: &Reservation) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.in_flight_tokens = self
            .in_flight_tokens
            .saturating_sub(u64::from(reservation.tokens));
    }
}

/// The smallest float `t` no earlier than `time + gap` with `t - time >= gap` exactly: a
/// plain sum may round down by half a unit and let a 60 s window hold one start too many.
fn at_least_after(time: f64, gap: f64) -> f64 {
    let mut t = time + gap;
    while t - time < gap && t.is_finite() && t > 0.0 {
        // The next float up; for a positive finite float, its bit pattern plus one.
        t = f64::from_bits(t.to_bits() + 1);
    }
    t
}

/// The values of the `x-ratelimit-*` headers [`RateLimiter::observe`] reads.
#[derive(Default)]
struct RateLimitHeaders<'a> {
    limit_requests: Option<&'a str>,
    limit_tokens: Option<&'a str>,
    remaining_requests: Option<&'a str>,
    remaining_tokens: Option<&'a str>,
    reset_requests: Option<&'a str>,
}

impl<'a> RateLimitHeaders<'a> {
    /// Finds them in one pass over `headers`, keeping the first value of each name as
    /// [`Headers::get`] does; names compare case-insensitively. A response carries a score
    /// of other headers: telling them apart by length first, before comparing any bytes,
    /// makes `observe` several times faster than one `get` scan per name.
    fn find(headers: &'a Headers) -> Self {
        let mut found = RateLimitHeaders::default();
        for (name, value) in headers.iter() {
            let (slot, expected) = match name.len() {
                24 => (&mut found.limit_tokens, "x-ratelimit-limit-tokens"),
                26 if (name.as_bytes()[12] | 0x20) == b'r' => {
                    (&mut found.reset_requests, "x-ratelimit-reset-requests")
                }
                26 => (&mut found.limit_requests, "x-ratelimit-limit-requests"),
                28 => (&mut found.remaining_tokens, "x-ratelimit-remaining-tokens"),
                30 => (
                    &mut found.remaining_requests,
                    "x-ratelimit-remaining-requests",
                ),
                _ => continue,
            };
            // Fetch and HTTP/2 hand names over in lower case: try the plain comparison first.
            if slot.is_none() && (name == expected || name.eq_ignore_ascii_case(expected)) {
                *slot = Some(value);
            }
        }
        found
    }
}

/// The headers of an answer that [`RateLimiter::observe`] reads (`x-ratelimit-*`,
/// `retry-after`, `retry-after-ms`), in order: all a limiter kept elsewhere needs to be
/// told of an answer.
pub fn rate_limit_headers(headers: &Headers) -> impl Iterator<Item = (&str, &str)> {
    headers.iter().filter(|(name, _)| {
        let prefix = "x-ratelimit-";
        name.get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
            || name.eq_ignore_ascii_case("retry-after")
            || name.eq_ignore_ascii_case("retry-after-ms")
    })
}

/// Whether header `name` is one of the server's figures of what remains, or of when that
/// resets (`x-ratelimit-remaining-*`, `x-ratelimit-reset-*`): what an answer says of the
/// budget at the moment it arrived, as opposed to its limits.
pub fn is_remaining_figure(name: &str) -> bool {
    ["x-ratelimit-remaining-", "x-ratelimit-reset-"]
        .iter()
        .any(|prefix| {
            name.get(..prefix.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
        })
}

/// A header value as a non-negative integer that fits in `u32`: ASCII digits only,
/// surrounding ASCII whitespace ignored. `-1`, `+1`, `1.5`, `` and `12abc` are `None`.
fn parse_u32(value: &str) -> Option<u32> {
    u32::try_from(crate::http::parse_digits(value.trim_ascii().as_bytes())?).ok()
}

/// Parses a Go-style duration as OpenAI sends in `x-ratelimit-reset-*` (`6m0s`, `1s`,
/// `20ms`, `1.5s`, `2h3m4s`, `0s`, `500us`) into milliseconds.
///
/// Units: `h`, `m`, `s`, `ms`, `us` (or `µs`, `μs`), `ns`; each number may have a
/// fraction. A bare number (`1.5`) is seconds. Surrounding whitespace is ignored. `None`
/// for anything else: empty, a sign (a negative reset means nothing), an unknown unit, a
/// number without a unit after another, or a result that is not finite. Absurd but finite
/// values (`9999999999h`) are returned as they are: judging them is the caller's business.
pub fn parse_reset_duration_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Some(seconds) = parse_unsigned_decimal(s) {
        let ms = seconds * 1000.0;
        return ms.is_finite().then_some(ms);
    }
    let mut rest = s;
    let mut total = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .bytes()
            .position(|b| !(b.is_ascii_digit() || b == b'.'))
            .unwrap_or(rest.len());
        let value = parse_unsigned_decimal(&rest[..number_len])?;
        rest = &rest[number_len..];
        // Longest units first, so that `ms` is not read as `m` followed by `s`.
        const UNITS: [(&str, f64); 8] = [
            ("ms", 1.0),
            ("us", 1e-3),
            ("µs", 1e-3),
            ("μs", 1e-3),
            ("ns", 1e-6),
            ("h", 3_600_000.0),
            ("m", 60_000.0),
            ("s", 1000.0),
        ];
        let (unit, factor) = UNITS.iter().find(|(unit, _)| rest.starts_with(unit))?;
        rest = &rest[unit.len()..];
        total += value * factor;
    }
    (!s.is_empty() && total.is_finite()).then_some(total)
}

/// Digits with at most one `.` and at least one digit (`1`, `1.5`, `.5`, `1.`), as a number:
/// a duration's number has no exponent (`1e3s` is not Go's).
fn parse_unsigned_decimal(text: &str) -> Option<f64> {
    if text.contains(['e', 'E']) {
        return None;
    }
    crate::http::parse_decimal(text)
}

/// What a finished request cost against the server's token budget, for
/// [`RateLimiter::reconcile`], from the usage it reported.
///
/// OpenAI and Azure OpenAI count a request when it arrives, as its prompt plus the
/// completion tokens it allows (`max_tokens`, here `completion_budget`), and give back
/// nothing a shorter answer leaves unused. So the real prompt count replaces the estimate,
/// while the completion's budget stays charged; a usage above both (an answer longer than
/// the budget assumed for a request without `max_tokens`) counts as it is. Refunding the
/// unused completion would have the limiter believe in tokens the server no longer has.
/// Saturates at `u32::MAX`.
pub fn charged_tokens(prompt_tokens: u64, total_tokens: u64, completion_budget: u32) -> u32 {
    let charged = prompt_tokens
        .saturating_add(u64::from(completion_budget))
        .max(total_tokens);
    u32::try_from(charged).unwrap_or(u32::MAX)
}

/// A conservative estimate of a chat request's prompt tokens, for [`RateLimiter::reserve`]
/// before the server has counted them.
///
/// `ceil(chars / 4) + 4 * messages + 3`: about four characters of English per token, plus
/// the role and separator tokens each message costs and the three that prime the reply (as
/// OpenAI's token-counting guide describes). Pass the UTF-8 length in bytes (`str::len`) as
/// `chars`: it over-counts non-ASCII text, which is what makes the estimate safe for
/// scripts such as Chinese, where one character can be a token of its own. Saturates at
/// `u32::MAX`. Add the completion's `max_tokens` to get what the server charges up front.
pub fn estimate_prompt_tokens(chars: usize, messages: usize) -> u32 {
    let text = (chars as u64).div_ceil(4);
    let overhead = (messages as u64).saturating_mul(4).saturating_add(3);
    u32::try_from(text.saturating_add(overhead)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_least_after_never_rounds_the_gap_down() {
        for time in [0.1, 0.3, 1.0 / 3.0, 1_700_000_000_000.123, 4e15 + 0.5, 1e20] {
            let t = at_least_after(time, WINDOW_MS);
            assert!(t - time >= WINDOW_MS, "{time}");
            assert!(t - time < WINDOW_MS + 1e-6 * time.max(1.0), "{time}");
        }
    }

    #[test]
    fn unsigned_decimals() {
        assert_eq!(parse_unsigned_decimal("1.5"), Some(1.5));
        assert_eq!(parse_unsigned_decimal(".5"), Some(0.5));
        assert_eq!(parse_unsigned_decimal("1."), Some(1.0));
        for bad in ["", ".", "1..2", "1.2.3", "-1", "+1", "1e3", "inf", "NaN"] {
            assert_eq!(parse_unsigned_decimal(bad), None, "{bad:?}");
        }
    }
}

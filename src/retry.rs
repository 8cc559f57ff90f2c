//! When to retry a failed call, and how long to wait first.
//!
//! [`RetryPolicy`] classifies an [`Error`] by its variant, its status code and the hints the
//! server sent with it (`retry-after-ms`, `retry-after`, `x-should-retry`), never by message
//! text, and turns an attempt number into a delay: the server's requested wait when it gave
//! one, else capped exponential backoff with jitter. The free functions read those hints
//! from response [`Headers`].
//!
//! This module is pure: it never reads a clock, sleeps or draws random numbers. The current
//! time (`now_ms`, milliseconds since the Unix epoch) and a random number in `[0, 1)` are
//! passed in, and the caller does the sleeping, so the same code runs natively and in wasm.

use crate::http::Headers;
use crate::Error;

/// How many times to retry a failed call and how long to wait between tries.
///
/// Every field has a default, so a partial JSON object such as `{"max_retries": 5}`
/// deserializes. The durations are milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct RetryPolicy {
    /// Retries after the first failure; `0` never retries. Default 3.
    pub max_retries: u32,
    /// The backoff before the first retry; it doubles for each later one. Default 1000.
    pub base_delay_ms: f64,
    /// The longest backoff the doubling may reach. Default 60 000.
    pub max_backoff_ms: f64,
    /// The longest server-requested wait (`retry-after`) worth honouring: a longer one
    /// fails fast instead, since the caller is better served by an error (or by another
    /// provider) than by a hang. Default 120 000.
    pub max_wait_ms: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay_ms: 1000.0,
            max_backoff_ms: 60_000.0,
            max_wait_ms: 120_000.0,
        }
    }
}

/// The largest power of two the backoff uses: beyond 2^64 any sane base delay is far past
/// any sane cap already, and clamping keeps `2^attempt` finite for huge attempt numbers.
const MAX_BACKOFF_EXPONENT: i32 = 64;

impl RetryPolicy {
    /// Whether `error` is worth retrying at all, ignoring the attempt count.
    ///
    /// The server's `x-should-retry` verdict wins when it gave one (`false` never retries,
    /// `true` retries even a status that otherwise would not be, as openai-node does).
    /// Otherwise transient faults are retried: no answer ([`Error::Connection`],
    /// [`Error::Timeout`]), rate limiting ([`Error::RateLimited`]), HTTP 408, 409, 429 and
    /// every 5xx. [`Error::InvalidResponse`] is retried too: a 2xx whose body is truncated
    /// or garbled is a transient fault (a dropped connection mid-body, a proxy hiccup), and
    /// asking again usually succeeds. Never retried: other 4xx (the request itself is
    /// wrong), [`Error::Config`], [`Error::Aborted`] (the caller gave up) and
    /// [`Error::AllProvidersFailed`] (its parts were retried already).
    pub fn is_retryable(error: &Error) -> bool {
        if let Some(verdict) = error.should_retry() {
            return verdict;
        }
        // Matched exhaustively (no `_` arm) so that a new variant forces a decision here.
        match error {
            Error::Connection { .. }
            | Error::Timeout { .. }
            | Error::RateLimited { .. }
            | Error::InvalidResponse { .. } => true,
            Error::Http { status, .. } => matches!(*status, 408 | 409 | 429 | 500..),
            Error::Config { .. } | Error::Aborted | Error::AllProvidersFailed { .. } => false,
        }
    }

    /// The wait in milliseconds before retry number `attempt + 1` (`attempt` 0: the first
    /// call failed), or `None` to give up.
    ///
    /// Gives up when `attempt >= max_retries` or the error is not retryable
    /// ([`Self::is_retryable`]). When the server asked for a wait (`retry_after_ms` on the
    /// error) that wait is returned exactly, or `None` if it exceeds `max_wait_ms` (fail
    /// fast). Otherwise the backoff is `base_delay_ms * 2^attempt`, capped at
    /// `max_backoff_ms`, then jittered down by up to a quarter: `delay * (1 - 0.25 *
    /// random)`, which spreads out callers that failed together. For `random` in `[0, 1)`
    /// that is in `(0.75 * delay, delay]` in exact arithmetic; in floats a `random` within
    /// an ulp or so of 1 rounds to `0.75 * delay` itself. `random` outside `[0, 1]` is
    /// clamped into it, and NaN counts as 0.
    ///
    /// Never panics; a field that is NaN or negative acts as its default, and a delay that
    /// would be infinite gives up instead.
    pub fn next_delay(&self, attempt: u32, error: &Error, random: f64) -> Option<f64> {
        if attempt >= self.max_retries || !Self::is_retryable(error) {
            return None;
        }
        let defaults = RetryPolicy::default();
        if let Some(requested) = error.retry_after_ms().filter(|ms| *ms >= 0.0) {
            let max_wait = non_negative_or(self.max_wait_ms, defaults.max_wait_ms);
            return (requested <= max_wait && requested.is_finite()).then_some(requested);
        }
        self.backoff(attempt, random)
    }

    /// The backoff before retry number `attempt + 1` when no server asked for a wait (see
    /// [`Self::next_delay`]), or `None` once `attempt >= max_retries`: for retrying work
    /// of the caller's own, such as a database write.
    pub fn backoff(&self, attempt: u32, random: f64) -> Option<f64> {
        if attempt >= self.max_retries {
            return None;
        }
        let defaults = RetryPolicy::default();
        let base = non_negative_or(self.base_delay_ms, defaults.base_delay_ms);
        let cap = non_negative_or(self.max_backoff_ms, defaults.max_backoff_ms);
        let exponent = i32::try_from(attempt)
            .unwrap_or(MAX_BACKOFF_EXPONENT)
            .min(MAX_BACKOFF_EXPONENT);
        // `min` before multiplying would be wrong for a zero base (0 * inf = NaN); the
        // product is finite unless `base` itself is near f64::MAX.
        let delay = (base * 2f64.powi(exponent)).min(cap);
        let random = if random.is_nan() {
            0.0
        } else {
            random.clamp(0.0, 1.0)
        };
        let jittered = delay * (1.0 - 0.25 * random);
        jittered.is_finite().then_some(jittered)
    }
}

/// `value` when it is a non-negative number (infinity allowed: "no limit"), else `fallback`.
fn non_negative_or(value: f64, fallback: f64) -> f64 {
    if value >= 0.0 {
        value
    } else {
        fallback
    }
}

/// The wait the server asked for, in milliseconds, from a response's headers.
///
/// Reads `retry-after-ms` (milliseconds, a decimal number; Azure and OpenAI send it) and,
/// when that is absent or unusable, `retry-after`: either seconds (a decimal number) or an
/// HTTP date in IMF-fixdate form (`Wed, 21 Oct 2015 07:28:00 GMT`), taken relative to
/// `now_ms` (milliseconds since the Unix epoch); a date in the past means 0. Nonsense
/// (negative, NaN, infinite, unparsable, a date when `now_ms` is not finite) is `None`.
/// How long is too long is the caller's decision ([`RetryPolicy::max_wait_ms`]).
pub fn retry_after_ms(headers: &Headers, now_ms: f64) -> Option<f64> {
    if let Some(ms) = headers.get("retry-after-ms").and_then(parse_non_negative) {
        return Some(ms);
    }
    let value = headers.get("retry-after")?;
    if let Some(seconds) = parse_non_negative(value) {
        let ms = seconds * 1000.0;
        return ms.is_finite().then_some(ms);
    }
    let date_ms = parse_http_date_ms(value)?;
    let wait = date_ms - now_ms;
    if wait.is_nan() || !now_ms.is_finite() {
        return None;
    }
    Some(wait.max(0.0))
}

/// The server's `x-should-retry` verdict: `Some(true)` for `true`, `Some(false)` for
/// `false` (surrounding whitespace ignored, case-sensitive as openai-node reads it), `None`
/// for anything else or no header.
pub fn should_retry_header(headers: &Headers) -> Option<bool> {
    match headers.get("x-should-retry")?.trim() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// A finite, non-negative decimal number (`1500`, `1.5`, `2e3`), surrounding whitespace
/// ignored.
fn parse_non_negative(text: &str) -> Option<f64> {
    crate::http::parse_decimal(text.trim())
}

/// Milliseconds since the Unix epoch of an IMF-fixdate (`Wed, 21 Oct 2015 07:28:00 GMT`),
/// the date format HTTP senders must use. The day name must be a valid one but is not
/// checked against the date, as browsers' `Date.parse` does not either. The obsolete
/// RFC 850 and asctime forms are not accepted: no LLM API sends them.
fn parse_http_date_ms(text: &str) -> Option<f64> {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (day_name, rest) = text.trim().split_once(", ")?;
    if !DAYS.contains(&day_name) {
        return None;
    }
    let mut fields = rest.split(' ');
    let (day, month, year, time, zone) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    if fields.next().is_some() || zone != "GMT" {
        return None;
    }
    let day = parse_digits(day, 1..=2)?;
    let month = MONTHS.iter().position(|m| *m == month)? as u32 + 1;
    let year = parse_digits(year, 4..=4)?;
    let mut clock = time.split(':');
    let (hour, minute, second) = (clock.next()?, clock.next()?, clock.next()?);
    if clock.next().is_some() {
        return None;
    }
    let hour = parse_digits(hour, 2..=2)?;
    let minute = parse_digits(minute, 2..=2)?;
    // 60 is a leap second, which IMF-fixdate allows.
    let second = parse_digits(second, 2..=2)?;
    if day == 0 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Some(seconds as f64 * 1000.0)
}

/// A run of ASCII digits whose length lies in `lengths`, as a number.
fn parse_digits(text: &str, lengths: std::ops::RangeInclusive<usize>) -> Option<u32> {
    if !lengths.contains(&text.len()) {
        return None;
    }
    u32::try_from(crate::http::parse_digits(text.as_bytes())?).ok()
}

/// The number of days of `month` (1–12) in `year` of the proleptic Gregorian calendar.
pub(crate) fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (`month` 1–12, `day` 1–31); Howard
/// Hinnant's `days_from_civil`, which counts in 400-year eras starting in March so that the
/// leap day falls at the end of a year.
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2015, 10, 21), 16_729);
        assert_eq!(days_from_civil(0, 3, 1), -719_468);
    }

    #[test]
    fn http_dates_parse_and_validate() {
        assert_eq!(
            parse_http_date_ms("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(1_445_412_480_000.0)
        );
        assert_eq!(
            parse_http_date_ms("Tue, 29 Feb 2000 00:00:00 GMT"),
            Some(951_782_400_000.0)
        );
        for bad in [
            "",
            "Wed, 21 Oct 2015 07:28:00",
            "Wed, 21 Oct 2015 07:28:00 UTC",
            "Xyz, 21 Oct 2015 07:28:00 GMT",
            "Wed, 32 Oct 2015 07:28:00 GMT",
            "Wed, 29 Feb 2015 07:28:00 GMT",
            "Wed, 21 Foo 2015 07:28:00 GMT",
            "Wed, 21 Oct 15 07:28:00 GMT",
            "Wed, 21 Oct 2015 24:00:00 GMT",
            "Wed, 21 Oct 2015 07:60:00 GMT",
            "Wed, 21 Oct 2015 7:28:00 GMT",
            "Wed, 21 Oct 2015 07:28:00:00 GMT",
            "Wed, 21 Oct 2015 07:28:00 GMT extra",
            "Wednesday, 21-Oct-15 07:28:00 GMT",
            "Wed Oct 21 07:28:00 2015",
            "Wed, +1 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(parse_http_date_ms(bad), None, "{bad:?}");
        }
    }
}

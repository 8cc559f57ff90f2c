//! Plain HTTP data: the request a provider builds and the headers a runtime hands back.
//!
//! These are values, not connections: the pure core builds and reads them, and only the
//! runtime seam ([`crate::runtime`]) moves them over a network. Header names compare
//! case-insensitively, as HTTP says.

use std::fmt;

/// HTTP header names that carry credentials; their values never appear in `Debug` output.
const SECRET_HEADERS: [&str; 3] = ["authorization", "api-key", "x-api-key"];

/// An ordered list of HTTP headers with case-insensitive lookup.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a header (an existing one of the same name stays).
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    /// The first value of `name`, compared case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every `(name, value)` pair in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Headers(
            iter.into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        )
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(n, v)| {
                let shown = if SECRET_HEADERS.iter().any(|s| n.eq_ignore_ascii_case(s)) {
                    "[redacted]"
                } else {
                    v.as_str()
                };
                (n.as_str(), shown)
            }))
            .finish()
    }
}

/// An HTTP request to send: always a `POST` of a JSON body in this crate.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The full URL, query included.
    pub url: String,
    /// The headers, credentials among them.
    pub headers: Headers,
    /// The JSON body.
    pub body: String,
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRequest")
            .field("url", &self.url)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// A run of ASCII digits (at least one, nothing else) as a number; `None` for anything
/// else or a number too large for `u64`. The one integer parser of the crate's header,
/// date and event-stream fields, which all take digits only (no sign, no space).
pub fn parse_digits(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |number, &b| {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        number.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// A non-negative decimal number as HTTP headers write them (`1500`, `1.5`, `.5`, `1.`,
/// `2e3`, `1E-3`): digits with at most one `.` and at least one digit, then an optional
/// exponent. No sign, no whitespace, no `inf` or `NaN`. `None` for anything else or a
/// result that is not finite.
///
/// Exact (the correctly rounded `f64`, what `str::parse` gives) when the digits make at
/// most 2^53 and the scale is at most 10^±22: every delay, count and limit a server sends.
/// Within one unit in the last place beyond, over the whole range of `f64`, subnormals and
/// the largest values included (see `scaled`). `str::parse` would carry core's table of
/// 128-bit powers of five into the wasm binary, a tenth of its gzipped size.
pub fn parse_decimal(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let mut i = 0;
    // The digits, as far as a u64 holds them, and the power of ten to scale them by.
    let (mut mantissa, mut scale, mut digits, mut seen_dot) = (0u64, 0i64, 0usize, false);
    while let Some(&b) = bytes.get(i) {
        match b {
            b'0'..=b'9' => {
                digits += 1;
                if mantissa < (u64::MAX - 9) / 10 {
                    mantissa = mantissa * 10 + u64::from(b - b'0');
                    scale -= i64::from(seen_dot);
                } else {
                    scale += i64::from(!seen_dot);
                }
            }
            b'.' if !seen_dot => seen_dot = true,
            _ => break,
        }
        i += 1;
    }
    if digits == 0 {
        return None;
    }
    if let Some(b'e' | b'E') = bytes.get(i) {
        i += 1;
        let negative = bytes.get(i) == Some(&b'-');
        if let Some(b'-' | b'+') = bytes.get(i) {
            i += 1;
        }
        let start = i;
        let mut exponent = 0i64;
        while let Some(&b @ b'0'..=b'9') = bytes.get(i) {
            // Saturates far beyond any finite f64 rather than overflow.
            exponent = (exponent * 10 + i64::from(b - b'0')).min(100_000);
            i += 1;
        }
        if i == start {
            return None;
        }
        scale += if negative { -exponent } else { exponent };
    }
    if i != bytes.len() {
        return None;
    }
    // Every power of ten up to 10^22 is an exact f64: with an exact mantissa, one correctly
    // rounded multiplication or division gives the correctly rounded result.
    const EXACT: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    let value = match scale {
        _ if mantissa == 0 => 0.0,
        s if mantissa <= 1 << 53 && (-22..0).contains(&s) => mantissa as f64 / EXACT[-s as usize],
        s if mantissa <= 1 << 53 && (0..=22).contains(&s) => mantissa as f64 * EXACT[s as usize],
        s => scaled(mantissa, s),
    };
    value.is_finite().then_some(value)
}

/// `mantissa × 10^scale` within one unit in the last place (infinity past the largest
/// `f64`, zero below the smallest), for any mantissa and scale.
///
/// 10^scale is 2^scale × 5^scale, and the power of five is applied 27 at a time to a 64-bit
/// significand, keeping the top 64 bits of each 128-bit product: by the exact 5^k (k ≤ 27
/// fits 64 bits) upwards, by 5^-27 rounded to 64 bits downwards. Each step is off by less
/// than 2^-63 of the value; at most 16 steps stay under 2^-59, a 64th of the `f64`'s last
/// place, so the one rounding to an `f64` at the end lands on the correctly rounded value or
/// next to it, and only near a halfway point.
fn scaled(mantissa: u64, scale: i64) -> f64 {
    /// 5^27, the largest power of five under 2^64.
    const FIVE_TO_27: u64 = 7_450_580_596_923_828_125;
    /// 5^-27 is `FIVE_TO_MINUS_27` × 2^-126, rounded to the nearest.
    const FIVE_TO_MINUS_27: u64 = 0x9e74_d1b7_91e0_7e48;
    // Past ±400 any mantissa of 20 digits gives zero or infinity.
    let scale = scale.clamp(-400, 400);
    // The value is `significand` × 2^`exponent` × 5^`remaining`.
    let (mut significand, mut exponent, mut remaining) = (mantissa, scale, scale);
    while remaining != 0 {
        let (factor, factor_exponent, step) = match remaining {
            27.. => (FIVE_TO_27, 0, 27),
            1..=26 => (5u64.pow(remaining as u32), 0, remaining),
            ..=-27 => (FIVE_TO_MINUS_27, -126, -27),
            // 5^r = 5^(27 + r) × 5^-27: the exact part now, the rest in the next step.
            _ => (5u64.pow((27 + remaining) as u32), 0, 27 + remaining),
        };
        let product = u128::from(significand) * u128::from(factor);
        let dropped = (128 - product.leading_zeros()).saturating_sub(64);
        significand = (product >> dropped) as u64;
        exponent += i64::from(dropped) + factor_exponent;
        remaining -= step;
    }
    // The conversion rounds to 53 bits; scaling by powers of two is then exact until the
    // value leaves the normal range (one more rounding, into the subnormals, or to 0 or
    // infinity).
    let two_to = |n: i64| f64::from_bits(((n + 1023) as u64) << 52);
    let mut value = significand as f64;
    while exponent > 1000 {
        value *= two_to(1000);
        exponent -= 1000;
    }
    while exponent < -1000 {
        value *= two_to(-1000);
        exponent += 1000;
    }
    value * two_to(exponent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_only() {
        assert_eq!(parse_digits(b"0"), Some(0));
        assert_eq!(parse_digits(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"-1",
            b"+1",
            b" 1",
            b"1.0",
            b"1e3",
            b"\xd9\xa1",
        ] {
            assert_eq!(parse_digits(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn lookup_ignores_case_and_debug_hides_credentials() {
        let headers: Headers = [
            ("Authorization", "Bearer sk-secret"),
            ("api-key", "azure-secret"),
            ("X-RateLimit-Remaining-Requests", "5"),
        ]
        .into_iter()
        .collect();
        assert_eq!(headers.get("x-ratelimit-remaining-requests"), Some("5"));
        assert_eq!(headers.get("AUTHORIZATION"), Some("Bearer sk-secret"));
        let shown = format!("{headers:?}");
        assert!(
            !shown.contains("sk-secret") && !shown.contains("azure-secret"),
            "{shown}"
        );
        assert!(shown.contains("\"5\""));
    }
}

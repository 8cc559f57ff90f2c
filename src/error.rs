//! The one error type of the crate.
//!
//! Retry decisions read the variant, the status code and the server's hints that travel
//! with the error (`retry_after_ms`, `should_retry`), never the message text. No variant
//! ever holds an API key: messages quoted from an upstream pass through
//! [`crate::provider::Provider`], which redacts its key from them first.

use std::fmt;

/// Everything that can go wrong in llm-distiller.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// The provider answered 429: over its rate limit or out of quota.
    RateLimited {
        /// The provider's configured name.
        provider: String,
        /// How long the server asked us to wait (`retry-after-ms` or `retry-after`).
        retry_after_ms: Option<f64>,
        /// The server's `x-should-retry` header, when it sent one.
        should_retry: Option<bool>,
        /// The server's error message (quota exhausted, limit reached, …).
        message: String,
    },
    /// No complete answer arrived within the timeout.
    Timeout {
        /// The provider's configured name.
        provider: String,
        /// The timeout that ran out, in milliseconds.
        after_ms: f64,
    },
    /// The request got no HTTP answer at all: refused, reset, DNS, CORS.
    Connection {
        /// The provider's configured name.
        provider: String,
        /// What the transport said.
        message: String,
    },
    /// The provider answered with an HTTP error status other than 429.
    Http {
        /// The provider's configured name.
        provider: String,
        /// The HTTP status code.
        status: u16,
        /// The provider's `error.message`, or a description of the body.
        message: String,
        /// The provider's `error.type`. (Boxed strings keep `Error` small enough to return
        /// by value everywhere.)
        error_type: Option<Box<str>>,
        /// The provider's `error.code`.
        code: Option<Box<str>>,
        /// The provider's `error.param`.
        param: Option<Box<str>>,
        /// How long the server asked us to wait, when it said so.
        retry_after_ms: Option<f64>,
        /// The server's `x-should-retry` header, when it sent one.
        should_retry: Option<bool>,
    },
    /// The provider answered 2xx, but with a body that is not a chat completion.
    InvalidResponse {
        /// The provider's configured name.
        provider: String,
        /// What is wrong with the body.
        message: String,
    },
    /// The configuration (or a call's arguments) is invalid.
    Config {
        /// The field at fault, as a path (`providers.main.rate_limit.requests_per_minute`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Every provider that was tried failed; each one's last error, in the order tried.
    AllProvidersFailed {
        /// `(provider name, its last error)` in the order the providers were tried.
        errors: Vec<(String, Error)>,
    },
    /// The caller cancelled the call.
    Aborted,
}

impl Error {
    /// A configuration error about `field`.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A short machine-readable code, the same as the JavaScript `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::RateLimited { .. } => "rate_limited",
            Error::Timeout { .. } => "timeout",
            Error::Connection { .. } => "connection",
            Error::Http { .. } => "http",
            Error::InvalidResponse { .. } => "invalid_response",
            Error::Config { .. } => "config",
            Error::AllProvidersFailed { .. } => "all_providers_failed",
            Error::Aborted => "aborted",
        }
    }

    /// The HTTP status the provider answered with, when there was one. For
    /// [`Error::AllProvidersFailed`], the status of the last provider's error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::RateLimited { .. } => Some(429),
            Error::Http { status, .. } => Some(*status),
            Error::AllProvidersFailed { errors } => errors.last().and_then(|(_, e)| e.status()),
            _ => None,
        }
    }

    /// The wait the server asked for, in milliseconds, when it asked.
    pub fn retry_after_ms(&self) -> Option<f64> {
        match self {
            Error::RateLimited { retry_after_ms, .. } | Error::Http { retry_after_ms, .. } => {
                *retry_after_ms
            }
            Error::AllProvidersFailed { errors } => {
                errors.last().and_then(|(_, e)| e.retry_after_ms())
            }
            _ => None,
        }
    }

    /// The server's explicit `x-should-retry` verdict, when it gave one.
    pub fn should_retry(&self) -> Option<bool> {
        match self {
            Error::RateLimited { should_retry, .. } | Error::Http { should_retry, .. } => {
                *should_retry
            }
            _ => None,
        }
    }

    /// The provider the error is about, when it is about one. For
    /// [`Error::AllProvidersFailed`], the last provider tried.
    pub fn provider(&self) -> Option<&str> {
        match self {
            Error::RateLimited { provider, .. }
            | Error::Timeout { provider, .. }
            | Error::Connection { provider, .. }
            | Error::Http { provider, .. }
            | Error::InvalidResponse { provider, .. } => Some(provider),
            Error::AllProvidersFailed { errors } => errors.last().map(|(name, _)| name.as_str()),
            Error::Config { .. } | Error::Aborted => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::RateLimited {
                provider,
                retry_after_ms,
                message,
                ..
            } => {
                write!(f, "provider '{provider}' is rate limited")?;
                if let Some(ms) = retry_after_ms {
                    write!(f, " (retry after {} ms)", Number(*ms))?;
                }
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            Error::Timeout { provider, after_ms } => write!(
                f,
                "provider '{provider}' did not answer within {} ms (raise timeout_ms to wait longer)",
                Number(*after_ms)
            ),
            Error::Connection { provider, message } => {
                write!(f, "could not reach provider '{provider}': {message}")
            }
            Error::Http {
                provider,
                status,
                message,
                ..
            } => write!(f, "provider '{provider}' answered HTTP {status}: {message}"),
            Error::InvalidResponse { provider, message } => {
                write!(f, "provider '{provider}' sent an invalid response: {message}")
            }
            Error::Config { field, message } => {
                write!(f, "invalid configuration: {field}: {message}")
            }
            Error::AllProvidersFailed { errors } => {
                if errors.is_empty() {
                    return write!(f, "all providers failed: no provider was tried");
                }
                write!(f, "all providers failed: ")?;
                for (i, (name, error)) in errors.iter().enumerate() {
                    if i > 0 {
                        write!(f, "; ")?;
                    }
                    write!(f, "{name}: {error}")?;
                }
                Ok(())
            }
            Error::Aborted => write!(f, "the call was aborted"),
        }
    }
}

impl std::error::Error for Error {}

/// A number of milliseconds as people write it: `1500`, `0.25`. Written without the
/// float formatting machinery of `core::fmt`, which would add kilobytes to every
/// WebAssembly build for the few messages that show a duration.
pub(crate) struct Number(pub f64);

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0;
        if !value.is_finite() || value.abs() >= 1e15 {
            return f.write_str(if value.is_nan() {
                "NaN"
            } else if value < 0.0 {
                "-huge"
            } else {
                "huge"
            });
        }
        if value < 0.0 {
            f.write_str("-")?;
        }
        // Thousandths, rounded: enough for milliseconds and for the ranges of config values.
        let thousandths = (value.abs() * 1000.0).round() as u64;
        write!(f, "{}", thousandths / 1000)?;
        let fraction = thousandths % 1000;
        if fraction != 0 {
            let digits = format!("{fraction:03}");
            write!(f, ".{}", digits.trim_end_matches('0'))?;
        }
        Ok(())
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::Number;

    #[test]
    fn numbers_show_as_people_write_them() {
        let shown = |v: f64| Number(v).to_string();
        assert_eq!(shown(1500.0), "1500");
        assert_eq!(shown(0.25), "0.25");
        assert_eq!(shown(2.0), "2");
        assert_eq!(shown(-0.5), "-0.5");
        assert_eq!(shown(1.0005), "1.001");
        assert_eq!(shown(f64::NAN), "NaN");
        assert_eq!(shown(f64::INFINITY), "huge");
    }
}

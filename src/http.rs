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

#[cfg(test)]
mod tests {
    use super::*;

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

//! Azure OpenAI: `{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=…`
//! with an `api-key` header. The deployment stands for the model, so the body carries none.
//! Pure: builds an [`Endpoint`], sends nothing.

use super::Endpoint;
use crate::config::{ProviderConfig, Secret};

/// The endpoint of an Azure OpenAI deployment. `deployment_name` falls back to `model`,
/// as in the design.
pub(super) fn endpoint(config: &ProviderConfig, key: Secret) -> Endpoint {
    let root = config.endpoint.as_deref().unwrap_or_default();
    let root = root.trim_end_matches('/');
    let deployment = config
        .deployment_name
        .as_deref()
        .filter(|d| !d.trim().is_empty())
        .unwrap_or(&config.model);
    Endpoint {
        url: format!(
            "{root}/openai/deployments/{}/chat/completions?api-version={}",
            percent_encode(deployment),
            percent_encode(config.api_version.trim()),
        ),
        credential: Some(("api-key", Secret::new(key.expose().trim()))),
        model: deployment.to_string(),
        model_in_body: false,
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so a deployment name
/// can never change the path or the query.
fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::percent_encode;

    #[test]
    fn path_characters_are_escaped() {
        assert_eq!(percent_encode("gpt-4o_mini.1~"), "gpt-4o_mini.1~");
        assert_eq!(percent_encode("a/b?c=d&e"), "a%2Fb%3Fc%3Dd%26e");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }
}

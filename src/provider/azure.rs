//! Azure OpenAI: `{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=…`
//! with an `api-key` header. The deployment stands for the model, so the body carries none,
//! and it is the model the provider reports. A key is required.
//! Pure: describes the kind, sends nothing.

use super::{Endpoint, Kind};
use crate::config::{ProviderConfig, Secret};
use crate::error::{Error, Result};

/// An Azure OpenAI deployment.
pub(super) struct AzureOpenAi;

impl Kind for AzureOpenAi {
    fn name(&self) -> &'static str {
        "azure_openai"
    }

    fn key_var(&self) -> &'static str {
        "AZURE_OPENAI_API_KEY"
    }

    fn key_required(&self) -> bool {
        true
    }

    fn validate(&self, config: &ProviderConfig, path: &str) -> Result<()> {
        if config.endpoint.is_none() {
            return Err(Error::config(
                format!("{path}.endpoint"),
                "is required for azure_openai (https://<resource>.openai.azure.com)",
            ));
        }
        if config.api_version.trim().is_empty() {
            return Err(Error::config(
                format!("{path}.api_version"),
                "must not be empty",
            ));
        }
        Ok(())
    }

    /// The deployment: `deployment_name`, else `model`, as in the design.
    fn model<'a>(&self, config: &'a ProviderConfig) -> &'a str {
        config
            .deployment_name
            .as_deref()
            .filter(|d| !d.trim().is_empty())
            .unwrap_or(&config.model)
    }

    fn model_in_body(&self) -> bool {
        false
    }

    fn endpoint(&self, config: &ProviderConfig, key: &Secret) -> Endpoint {
        let root = config.endpoint.as_deref().unwrap_or_default();
        let deployment = self.model(config);
        Endpoint {
            url: format!(
                "{}/openai/deployments/{}/chat/completions?api-version={}",
                root.trim_end_matches('/'),
                percent_encode(deployment),
                percent_encode(config.api_version.trim()),
            ),
            credential: Some(("api-key", Secret::new(key.expose().trim()))),
        }
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

//! OpenAI: `{base_url}/chat/completions` (OpenAI's own API root by default) with
//! `Authorization: Bearer <key>`, the model in the body. A key is required.
//! Pure: describes the kind, sends nothing.

use super::{Endpoint, Kind};
use crate::config::{ProviderConfig, Secret, OPENAI_BASE_URL};
use crate::error::Result;

/// OpenAI, or a server that speaks its API at `base_url` with OpenAI's rules for keys.
pub(super) struct OpenAi;

impl Kind for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn key_var(&self) -> &'static str {
        "OPENAI_API_KEY"
    }

    fn key_required(&self) -> bool {
        true
    }

    fn validate(&self, _config: &ProviderConfig, _path: &str) -> Result<()> {
        // `base_url` is optional; every field it has is checked by the shared rules.
        Ok(())
    }

    fn model<'a>(&self, config: &'a ProviderConfig) -> &'a str {
        &config.model
    }

    fn endpoint(&self, config: &ProviderConfig, key: &Secret) -> Endpoint {
        bearer_endpoint(config.base_url.as_deref().unwrap_or(OPENAI_BASE_URL), key)
    }
}

/// The endpoint of an OpenAI-shaped API at `base`: `{base}/chat/completions`, the key as a
/// bearer token (no `Authorization` header at all without one).
pub(super) fn bearer_endpoint(base: &str, key: &Secret) -> Endpoint {
    let credential = (!key.is_empty()).then(|| {
        let value = format!("Bearer {}", key.expose().trim());
        ("Authorization", Secret::new(value))
    });
    Endpoint {
        url: format!("{}/chat/completions", base.trim_end_matches('/')),
        credential,
    }
}

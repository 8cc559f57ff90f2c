//! OpenAI and OpenAI-compatible servers: `{base_url}/chat/completions` with
//! `Authorization: Bearer <key>`. Pure: builds an [`Endpoint`], sends nothing.

use super::Endpoint;
use crate::config::{ProviderConfig, Secret, OPENAI_BASE_URL};

/// The endpoint of an OpenAI(-compatible) provider. A `custom` server without a key
/// gets no `Authorization` header at all.
pub(super) fn endpoint(config: &ProviderConfig, key: Secret) -> Endpoint {
    let base = config.base_url.as_deref().unwrap_or(OPENAI_BASE_URL);
    let base = base.trim_end_matches('/');
    let credential = (!key.is_empty()).then(|| {
        let value = format!("Bearer {}", key.expose().trim());
        ("Authorization", Secret::new(value))
    });
    Endpoint {
        url: format!("{base}/chat/completions"),
        credential,
        model: config.model.clone(),
        model_in_body: true,
    }
}

//! Any OpenAI-compatible server (Ollama, vLLM, LM Studio, a proxy): `{base_url}/chat/completions`,
//! `base_url` required, a key optional (sent as a bearer token when there is one).
//! Pure: describes the kind, sends nothing.

use super::openai::bearer_endpoint;
use super::{Endpoint, Kind};
use crate::config::{ProviderConfig, Secret};
use crate::error::{Error, Result};

/// An OpenAI-compatible server of the user's own.
pub(super) struct Custom;

impl Kind for Custom {
    fn name(&self) -> &'static str {
        "custom"
    }

    fn key_var(&self) -> &'static str {
        "CUSTOM_API_KEY"
    }

    fn key_required(&self) -> bool {
        false
    }

    fn validate(&self, config: &ProviderConfig, path: &str) -> Result<()> {
        if config.base_url.is_none() {
            return Err(Error::config(
                format!("{path}.base_url"),
                "is required for a custom provider (the OpenAI-compatible API root, e.g. http://localhost:11434/v1)",
            ));
        }
        Ok(())
    }

    fn model<'a>(&self, config: &'a ProviderConfig) -> &'a str {
        &config.model
    }

    fn endpoint(&self, config: &ProviderConfig, key: &Secret) -> Endpoint {
        bearer_endpoint(config.base_url.as_deref().unwrap_or_default(), key)
    }
}

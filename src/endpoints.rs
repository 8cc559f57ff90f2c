//! The Worker's HTTP surface as data: which endpoint a method and a path name, or the
//! OpenAI-shaped 404 or 405 (with its `Allow`) when none does.
//!
//! Pure, and the one place routes are decided: the Worker matches on [`Endpoint`] to call
//! the handler, and nothing else in it looks at a path.

use crate::openai_api::ApiError;
use crate::record::is_id;

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `OPTIONS` anywhere: a CORS preflight.
    Preflight,
    /// `GET /health` (or `HEAD`): no auth, no secrets.
    Health,
    /// `POST /v1/chat/completions`.
    ChatCompletions,
    /// `POST /v1/generate`.
    Generate,
    /// `GET /v1/responses`.
    ListResponses,
    /// `GET /v1/responses/{id}`, the id checked.
    GetResponse(String),
    /// `GET /v1/providers`.
    Providers,
    /// `GET /v1/export`: the stored answers as JSONL.
    Export,
}

impl Endpoint {
    /// Reads `method` and `path` (no query). Unknown paths are a 404, known ones asked with
    /// another method a 405.
    pub fn resolve(method: &str, path: &str) -> Result<Endpoint, ApiError> {
        if method == "OPTIONS" {
            return Ok(Endpoint::Preflight);
        }
        let (endpoint, allow) = match path {
            "/health" => (Endpoint::Health, "GET, HEAD"),
            "/v1/chat/completions" => (Endpoint::ChatCompletions, "POST"),
            "/v1/generate" => (Endpoint::Generate, "POST"),
            "/v1/responses" => (Endpoint::ListResponses, "GET"),
            "/v1/providers" => (Endpoint::Providers, "GET"),
            "/v1/export" => (Endpoint::Export, "GET"),
            _ => match path.strip_prefix("/v1/responses/") {
                Some(id) if is_id(id) => (Endpoint::GetResponse(id.to_string()), "GET"),
                Some(id) => {
                    return Err(ApiError::not_found(format!(
                        "no stored response has the id '{id}'"
                    )))
                }
                None => return Err(ApiError::not_found(format!("no route for {path}"))),
            },
        };
        if allow.split(", ").any(|m| m == method) {
            Ok(endpoint)
        } else {
            Err(ApiError::method_not_allowed(allow))
        }
    }

    /// Whether the endpoint needs the access token (everything but the preflight and
    /// `/health`).
    pub fn needs_token(&self) -> bool {
        !matches!(self, Endpoint::Preflight | Endpoint::Health)
    }
}

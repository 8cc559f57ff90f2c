//! The Worker's HTTP surface as data: which endpoint a method and a path name, or the
//! OpenAI-shaped 404 or 405 (with its `Allow`) when none does.
//!
//! Pure, and the one place routes are decided: the Worker matches on [`Endpoint`] to call
//! the handler, and nothing else in it looks at a path.

use crate::batch::{is_id as is_object_id, BATCH_PREFIX, FILE_PREFIX};
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
    /// `POST /v1/files` (multipart: `file`, `purpose=batch`).
    CreateFile,
    /// `GET /v1/files`.
    ListFiles,
    /// `GET /v1/files/{id}`.
    GetFile(String),
    /// `GET /v1/files/{id}/content`.
    FileContent(String),
    /// `DELETE /v1/files/{id}`.
    DeleteFile(String),
    /// `POST /v1/batches`.
    CreateBatch,
    /// `GET /v1/batches`.
    ListBatches,
    /// `GET /v1/batches/{id}`.
    GetBatch(String),
    /// `POST /v1/batches/{id}/cancel`.
    CancelBatch(String),
    /// `GET /v1/export`: the stored answers as JSONL.
    Export,
}

impl Endpoint {
    /// Reads `method` and `path` (no query). Unknown paths (and objects with ids that no
    /// object can have) are a 404, known ones asked with another method a 405.
    pub fn resolve(method: &str, path: &str) -> Result<Endpoint, ApiError> {
        if method == "OPTIONS" {
            return Ok(Endpoint::Preflight);
        }
        let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
        let id = |kind: &str, id: &str, valid: bool| -> Result<String, ApiError> {
            if valid {
                Ok(id.to_string())
            } else {
                Err(ApiError::not_found(format!(
                    "no {kind} has the id '{}'",
                    id.escape_debug()
                )))
            }
        };
        // Each path's endpoints by method, and what its Allow header says.
        let (choices, allow): (Vec<(&str, Endpoint)>, &'static str) = match segments[..] {
            ["health"] => (
                vec![("GET", Endpoint::Health), ("HEAD", Endpoint::Health)],
                "GET, HEAD",
            ),
            ["v1", "chat", "completions"] => (vec![("POST", Endpoint::ChatCompletions)], "POST"),
            ["v1", "generate"] => (vec![("POST", Endpoint::Generate)], "POST"),
            ["v1", "responses"] => (vec![("GET", Endpoint::ListResponses)], "GET"),
            ["v1", "responses", rsp] => {
                let rsp = id("stored response", rsp, is_id(rsp))?;
                (vec![("GET", Endpoint::GetResponse(rsp))], "GET")
            }
            ["v1", "providers"] => (vec![("GET", Endpoint::Providers)], "GET"),
            ["v1", "export"] => (vec![("GET", Endpoint::Export)], "GET"),
            ["v1", "files"] => (
                vec![("GET", Endpoint::ListFiles), ("POST", Endpoint::CreateFile)],
                "GET, POST",
            ),
            ["v1", "files", file] => {
                let file = id("file", file, is_object_id(FILE_PREFIX, file))?;
                (
                    vec![
                        ("GET", Endpoint::GetFile(file.clone())),
                        ("DELETE", Endpoint::DeleteFile(file)),
                    ],
                    "GET, DELETE",
                )
            }
            ["v1", "files", file, "content"] => {
                let file = id("file", file, is_object_id(FILE_PREFIX, file))?;
                (vec![("GET", Endpoint::FileContent(file))], "GET")
            }
            ["v1", "batches"] => (
                vec![
                    ("GET", Endpoint::ListBatches),
                    ("POST", Endpoint::CreateBatch),
                ],
                "GET, POST",
            ),
            ["v1", "batches", batch] => {
                let batch = id("batch", batch, is_object_id(BATCH_PREFIX, batch))?;
                (vec![("GET", Endpoint::GetBatch(batch))], "GET")
            }
            ["v1", "batches", batch, "cancel"] => {
                let batch = id("batch", batch, is_object_id(BATCH_PREFIX, batch))?;
                (vec![("POST", Endpoint::CancelBatch(batch))], "POST")
            }
            _ => {
                return Err(ApiError::not_found(format!(
                    "no route for {}",
                    path.escape_debug()
                )))
            }
        };
        choices
            .into_iter()
            .find(|(m, _)| *m == method)
            .map(|(_, endpoint)| endpoint)
            .ok_or_else(|| ApiError::method_not_allowed(allow))
    }

    /// Whether the endpoint needs the access token (everything but the preflight and
    /// `/health`).
    pub fn needs_token(&self) -> bool {
        !matches!(self, Endpoint::Preflight | Endpoint::Health)
    }
}

//! llm-distiller: an LLM client for the edge.
pub mod error;
pub mod http;
pub mod rate_limit;
pub mod retry;
pub mod sse;
pub mod thinking;

pub use error::{Error, Result};

//! # llm-distiller
//!
//! An LLM client for the edge, written in Rust and compiled to WebAssembly: OpenAI and
//! Azure OpenAI chat completions, a [`ProviderManager`] with failover, retries with
//! backoff that obey the server's `retry-after`, a rate limiter (requests and tokens per
//! minute) that adapts to the providers' `x-ratelimit-*` headers, streaming, batches, and
//! a thinking extractor that separates a model's reasoning (`<think>`, `<thinking>`,
//! `<reasoning>` blocks, or a separate `reasoning_content` field) from its answer.
//!
//! This crate is the pure core: every decision is plain Rust, tested natively. The
//! platform (fetch, timers, the clock, randomness) comes in through one trait,
//! [`runtime::Runtime`]; the `js` feature implements it for browsers, Node and Workers,
//! and the `worker` feature builds the Cloudflare Worker on top. Nothing in the core
//! imports from those edges.
//!
//! Data flows one way: [`config`] → [`manager`] → [`client`] → [`provider`] mapping →
//! [`runtime`] → back through parsing → [`thinking`] extraction → [`validate`].
//!
//! ## Example
//!
//! ```
//! use llm_distiller::thinking::extract_thinking;
//!
//! let answer = "<think>2 and 2 make 4.</think>\nThe answer is 4.";
//! let extracted = extract_thinking(answer, None);
//! assert_eq!(extracted.content, "The answer is 4.");
//! assert_eq!(extracted.thinking.as_deref(), Some("2 and 2 make 4."));
//!
//! // A provider's separate reasoning field comes first.
//! let extracted = extract_thinking("<reasoning>Check twice.</reasoning>4", Some("Add."));
//! assert_eq!(extracted.thinking.as_deref(), Some("Add.\n\nCheck twice."));
//! ```
//!
//! Configuration is the same JSON everywhere:
//!
//! ```
//! use llm_distiller::config::LlmConfig;
//!
//! let config = LlmConfig::from_json(r#"{
//!     "providers": {
//!         "main": { "type": "openai", "model": "gpt-4o",
//!                   "rate_limit": { "requests_per_minute": 60, "tokens_per_minute": 90000 } },
//!         "azure": { "type": "azure_openai", "endpoint": "https://example.openai.azure.com",
//!                    "deployment_name": "gpt-4o", "default": true }
//!     }
//! }"#).unwrap();
//! assert_eq!(config.default_provider_name(), Some("azure"));
//!
//! let error = LlmConfig::from_json(r#"{"providers": {"main": {"type": "openai",
//!     "rate_limit": {"requests_per_minute": "many"}}}}"#).unwrap_err();
//! assert!(error.to_string().contains("providers.main.rate_limit.requests_per_minute"));
//! ```

pub mod batch;
pub mod budget;
pub mod chat;
pub mod client;
pub mod config;
pub mod endpoints;
pub mod error;
pub mod export;
pub mod http;
pub mod json_path;
pub mod manager;
pub mod openai_api;
pub mod provider;
pub mod rate_limit;
pub mod record;
pub mod retry;
pub mod runtime;
pub mod shared_limit;
pub mod sql;
pub mod sse;
pub mod stream;
pub mod thinking;
pub mod validate;

#[cfg(feature = "wasm-runtime")]
pub mod wasm;

#[cfg(feature = "js")]
pub mod js;

#[cfg(feature = "worker")]
pub mod worker;

pub use chat::{LlmResponse, Message, Prompt, Usage};
pub use client::{CallOptions, Client, CompletionStream, Gate, StreamEvent};
pub use config::{GenerationConfig, LlmConfig, ProviderConfig, ProviderKind, RateLimitConfig};
pub use error::{Error, Result};
pub use manager::{BatchOptions, BatchProgress, ProviderManager, ProviderStatus, Route};
pub use rate_limit::{RateLimitStatus, RateLimiter, RequestRefill};
pub use runtime::Runtime;
pub use thinking::{extract_thinking, ThinkingExtractor, ThinkingStream};

//! [`ProviderManager`]: providers by name, the default, failover, batches, status.
//!
//! As in the design, a provider that cannot be set up (a missing key, say) is skipped,
//! not fatal: its reason is kept, shown in [`ProviderManager::provider_status`], and given
//! as the error of any call addressed to it. Only when no provider at all can be set up
//! does construction fail. Pure orchestration over [`Client`]s; the platform is the
//! [`Runtime`] passed in.

use std::future::Future;
use std::rc::Rc;

use futures_util::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};

use crate::chat::{LlmResponse, Prompt};
use crate::client::{CallOptions, Client, CompletionStream};
use crate::config::{GenerationConfig, LlmConfig, ProviderKind};
use crate::error::{Error, Result};
use crate::provider::Provider;
use crate::rate_limit::RateLimitStatus;
use crate::runtime::Runtime;

struct Entry<R: Runtime> {
    name: String,
    kind: ProviderKind,
    model: String,
    client: std::result::Result<Client<R>, Error>,
}

/// Every configured provider, ready to call.
pub struct ProviderManager<R: Runtime> {
    entries: Vec<Entry<R>>,
    default: String,
}

/// One provider as [`ProviderManager::provider_status`] shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct ProviderStatus {
    /// The configured name.
    pub name: String,
    /// `openai`, `azure_openai` or `custom`.
    #[serde(rename = "type")]
    pub kind: ProviderKind,
    /// The model (Azure: the deployment).
    pub model: String,
    /// Whether it could be set up.
    pub available: bool,
    /// Why not, when it could not.
    pub reason: Option<String>,
    /// Whether it is the default provider.
    pub default: bool,
    /// Its rate limiter, when available.
    pub rate_limiter: Option<RateLimitStatus>,
}

/// How a batch runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct BatchOptions {
    /// Calls in flight at once (default 8, at least 1).
    pub concurrency: usize,
    /// The provider for every item (default: the default provider).
    pub provider: Option<String>,
    /// Fail over through these providers, in order, for every item (overrides `provider`).
    pub failover: Option<Vec<String>>,
    /// Overrides the provider's `timeout_ms` for each attempt.
    pub timeout_ms: Option<f64>,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            concurrency: 8,
            provider: None,
            failover: None,
            timeout_ms: None,
        }
    }
}

/// Progress of a batch, reported as each item finishes.
#[derive(Debug)]
pub struct BatchProgress<'a> {
    /// Items finished so far.
    pub done: usize,
    /// Items in the batch.
    pub total: usize,
    /// The index of the item that just finished.
    pub index: usize,
    /// Its result.
    pub result: &'a Result<LlmResponse>,
}

impl<R: Runtime> ProviderManager<R> {
    /// Sets up every provider of `config`; `env` looks up API keys left empty. Fails
    /// only when the configuration is invalid or no provider can be set up.
    pub fn new(
        config: &LlmConfig,
        runtime: Rc<R>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        if config.providers.is_empty() {
            return Err(Error::config(
                "providers",
                "at least one provider is needed",
            ));
        }
        let entries: Vec<Entry<R>> = config
            .providers
            .iter()
            .map(|(name, provider_config)| {
                let provider = Provider::from_config(name, provider_config, env);
                Entry {
                    name: name.clone(),
                    kind: provider_config.kind,
                    model: provider
                        .as_ref()
                        .map(|p| p.model().to_string())
                        .unwrap_or_else(|_| provider_config.model.clone()),
                    client: provider.map(|p| Client::new(p, Rc::clone(&runtime))),
                }
            })
            .collect();
        if entries.iter().all(|e| e.client.is_err()) {
            let reasons: Vec<String> = entries
                .iter()
                .filter_map(|e| {
                    e.client
                        .as_ref()
                        .err()
                        .map(|err| format!("{}: {err}", e.name))
                })
                .collect();
            return Err(Error::config(
                "providers",
                format!("no provider could be set up ({})", reasons.join("; ")),
            ));
        }
        let default = config
            .default_provider_name()
            .unwrap_or_default()
            .to_string();
        if entries.iter().all(|e| e.name != default) {
            return Err(Error::config(
                "default_provider",
                format!("names '{default}', which is not among the providers"),
            ));
        }
        Ok(ProviderManager { entries, default })
    }

    /// Parses `json` as an [`LlmConfig`] and sets it up.
    pub fn from_json(
        json: &str,
        runtime: Rc<R>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        Self::new(&LlmConfig::from_json(json)?, runtime, env)
    }

    /// The default provider's name.
    pub fn default_provider(&self) -> &str {
        &self.default
    }

    /// The names of the providers that could be set up, in configuration order.
    pub fn list_providers(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| e.client.is_ok())
            .map(|e| e.name.clone())
            .collect()
    }

    /// Every configured provider: type, model, availability (with the reason when not
    /// available) and its rate limiter's state.
    pub fn provider_status(&self) -> Vec<ProviderStatus> {
        self.entries
            .iter()
            .map(|e| ProviderStatus {
                name: e.name.clone(),
                kind: e.kind,
                model: e.model.clone(),
                available: e.client.is_ok(),
                reason: e.client.as_ref().err().map(ToString::to_string),
                default: e.name == self.default,
                rate_limiter: e.client.as_ref().ok().map(Client::rate_limit_status),
            })
            .collect()
    }

    /// The client of provider `name` (the default when `None`): an error naming the
    /// known providers if there is no such provider, or its setup error if it could not
    /// be set up.
    pub fn client(&self, name: Option<&str>) -> Result<&Client<R>> {
        let name = name.unwrap_or(&self.default);
        let entry = self
            .entries
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
                Error::config(
                    "provider",
                    format!(
                        "unknown provider '{name}' (configured: {})",
                        known.join(", ")
                    ),
                )
            })?;
        entry.client.as_ref().map_err(Clone::clone)
    }

    /// Generates with provider `name`, or the default.
    pub async fn generate(
        &self,
        prompt: &Prompt,
        config: &GenerationConfig,
        provider: Option<&str>,
        options: &CallOptions,
    ) -> Result<LlmResponse> {
        self.client(provider)?
            .generate(prompt, config, options)
            .await
    }

    /// Tries the providers of `order` (all, in configuration order, when `None`) one
    /// after the other until one answers. Each provider retries on its own first. A
    /// provider that could not be set up fails with its setup error; a configuration
    /// error of the call itself or an abort stops at once. All failing gives
    /// [`Error::AllProvidersFailed`] with each provider's error, in order.
    pub async fn generate_with_failover(
        &self,
        prompt: &Prompt,
        config: &GenerationConfig,
        order: Option<&[String]>,
        options: &CallOptions,
    ) -> Result<LlmResponse> {
        self.failover(config, order, |client| {
            client.generate(prompt, config, options)
        })
        .await
    }

    /// Runs `call` with the client of each provider of `order` in turn, as
    /// [`Self::generate_with_failover`] describes.
    async fn failover<'a, T, F, Fut>(
        &'a self,
        config: &GenerationConfig,
        order: Option<&[String]>,
        mut call: F,
    ) -> Result<T>
    where
        F: FnMut(&'a Client<R>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let names = self.failover_order(order)?;
        config.validate()?;
        let mut errors = Vec::new();
        for name in names {
            let outcome = match self.client(Some(&name)) {
                Ok(client) => call(client).await,
                Err(setup) => Err(setup),
            };
            match outcome {
                Ok(answer) => return Ok(answer),
                Err(error @ Error::Aborted) => return Err(error),
                Err(error @ Error::Config { .. }) if self.client(Some(&name)).is_ok() => {
                    return Err(error)
                }
                Err(error) => errors.push((name, error)),
            }
        }
        Err(Error::AllProvidersFailed { errors })
    }

    fn failover_order(&self, order: Option<&[String]>) -> Result<Vec<String>> {
        match order {
            None => Ok(self.entries.iter().map(|e| e.name.clone()).collect()),
            Some([]) => Err(Error::config("failover", "names no provider")),
            Some(names) => {
                for name in names {
                    if !self.entries.iter().any(|e| e.name == *name) {
                        self.client(Some(name))?;
                    }
                }
                Ok(names.to_vec())
            }
        }
    }

    /// Starts a streamed answer from provider `name`, or the default.
    pub async fn stream(
        &self,
        prompt: &Prompt,
        config: &GenerationConfig,
        provider: Option<&str>,
        options: &CallOptions,
    ) -> Result<CompletionStream<R>> {
        self.client(provider)?.stream(prompt, config, options).await
    }

    /// Starts a streamed answer from the first provider of `order` that opens one (each
    /// retrying on its own first); like [`Self::generate_with_failover`], but once a
    /// stream has begun it is not switched.
    pub async fn stream_with_failover(
        &self,
        prompt: &Prompt,
        config: &GenerationConfig,
        order: Option<&[String]>,
        options: &CallOptions,
    ) -> Result<CompletionStream<R>> {
        self.failover(config, order, |client| {
            client.stream(prompt, config, options)
        })
        .await
    }

    /// Generates an answer for every prompt, at most `options.concurrency` at once, all
    /// sharing each provider's rate limiter. Results come in the order of `prompts`, one
    /// per prompt: one failure never sinks the batch. `on_progress` hears of each item as
    /// it finishes. Fails as a whole only when nothing can run (an invalid config, an
    /// unknown provider).
    pub async fn generate_batch(
        &self,
        prompts: &[Prompt],
        config: &GenerationConfig,
        options: &BatchOptions,
        mut on_progress: impl FnMut(BatchProgress<'_>),
    ) -> Result<Vec<Result<LlmResponse>>> {
        config.validate()?;
        let failover = match &options.failover {
            Some(order) => Some(self.failover_order(Some(order))?),
            None => {
                self.client(options.provider.as_deref())?;
                None
            }
        };
        let call = CallOptions {
            timeout_ms: options.timeout_ms,
            ..CallOptions::default()
        };
        let total = prompts.len();
        let mut results: Vec<Option<Result<LlmResponse>>> = (0..total).map(|_| None).collect();
        let calls = prompts.iter().enumerate().map(|(index, prompt)| {
            let failover = failover.as_deref();
            let call = &call;
            async move {
                let result = match failover {
                    Some(order) => {
                        self.generate_with_failover(prompt, config, Some(order), call)
                            .await
                    }
                    None => {
                        self.generate(prompt, config, options.provider.as_deref(), call)
                            .await
                    }
                };
                (index, result)
            }
        });
        let mut running = stream::iter(calls).buffer_unordered(options.concurrency.max(1));
        let mut done = 0;
        while let Some((index, result)) = running.next().await {
            done += 1;
            on_progress(BatchProgress {
                done,
                total,
                index,
                result: &result,
            });
            results[index] = Some(result);
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or(Err(Error::Aborted)))
            .collect())
    }
}

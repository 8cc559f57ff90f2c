//! [`ProviderManager`]: providers by name, the default, failover, batches, status.
//!
//! Where a call goes is a [`Route`], decided once by the caller (the npm package's method,
//! the Worker's request) and resolved here, in one place: one provider by name or the
//! default, or a failover order, each provider tried once. As in the design, a provider
//! that cannot be set up (a missing key, say) is skipped, not fatal: its reason is kept,
//! shown in [`ProviderManager::provider_status`], and given as the error of any call
//! addressed to it. Only when no provider at all can be set up does construction fail.
//! Pure orchestration over [`Client`]s; the platform is the [`Runtime`] passed in.

use std::future::Future;
use std::rc::Rc;

use futures_util::stream::{self, StreamExt};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::budget::{Budget, LocalBudget, SharedStatus};
use crate::chat::{LlmResponse, Prompt};
use crate::client::{CallOptions, Client, CompletionStream};
use crate::config::{GenerationConfig, LlmConfig, ProviderConfig, ProviderKind};
use crate::error::{Error, Result};
use crate::provider::Provider;
use crate::rate_limit::RateLimitStatus;
use crate::runtime::Runtime;

/// Which providers a call goes to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Route {
    /// The default provider.
    #[default]
    Default,
    /// One provider, by name.
    Provider(String),
    /// Fail over: `first` (the default provider when `None`), then `then` in order, until
    /// one answers. Each provider is tried once, however often it is named.
    Failover {
        /// The provider tried first; the default when `None`.
        first: Option<String>,
        /// The providers tried after it, in order.
        then: Vec<String>,
    },
    /// Every provider, in configuration order, until one answers.
    Everyone,
}

impl Route {
    /// Provider `name`, or the default when `None`.
    pub fn provider(name: Option<&str>) -> Route {
        name.map_or(Route::Default, |n| Route::Provider(n.to_string()))
    }

    /// `provider` (the default when `None`), failing over to `fallback` in order when it
    /// names any: the Worker's `provider` and `fallback` extensions.
    pub fn with_fallback(provider: Option<String>, fallback: Vec<String>) -> Route {
        if fallback.is_empty() {
            return provider.map_or(Route::Default, Route::Provider);
        }
        Route::Failover {
            first: provider,
            then: fallback,
        }
    }

    /// The providers of `order`, in order (every provider, in configuration order, when
    /// `None`). An empty order is a mistake.
    pub fn failover(order: Option<Vec<String>>) -> Result<Route> {
        let Some(mut order) = order else {
            return Ok(Route::Everyone);
        };
        if order.is_empty() {
            return Err(Error::config("failover", "names no provider"));
        }
        let first = order.remove(0);
        Ok(Route::Failover {
            first: Some(first),
            then: order,
        })
    }
}

struct Entry<R: Runtime> {
    name: String,
    config: ProviderConfig,
    client: std::result::Result<Client<R>, Error>,
}

/// A route resolved against the configuration.
enum Plan<'a, R: Runtime> {
    One(&'a Entry<R>),
    Failover(Vec<&'a Entry<R>>),
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
    /// Whether that limiter is shared across isolates, and reachable (`null` for a limiter
    /// of this process alone).
    pub shared_limiter: Option<SharedStatus>,
}

/// Every provider's status keyed by its name, in configuration order: the design's
/// `get_provider_status()` (serialized as an object).
#[derive(Clone, Debug, PartialEq)]
pub struct StatusByName(pub Vec<ProviderStatus>);

impl Serialize for StatusByName {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for status in &self.0 {
            map.serialize_entry(&status.name, status)?;
        }
        map.end()
    }
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

impl BatchOptions {
    /// Where every item goes: the failover order when there is one, else the provider.
    pub fn route(&self) -> Result<Route> {
        match &self.failover {
            Some(order) => Route::failover(Some(order.clone())),
            None => Ok(Route::provider(self.provider.as_deref())),
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

impl<R: Runtime + 'static> ProviderManager<R> {
    /// Sets up every provider of `config`, each with its rate limiter in this process's
    /// memory; `env` looks up API keys left empty. Fails only when the configuration is
    /// invalid or no provider can be set up.
    pub fn new(
        config: &LlmConfig,
        runtime: Rc<R>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let local = |provider: &Provider| -> Rc<dyn Budget> {
            Rc::new(LocalBudget::new(
                provider.config().rate_limit,
                Rc::clone(&runtime),
            ))
        };
        Self::with_budgets(config, Rc::clone(&runtime), env, &local)
    }

    /// [`Self::new`], with each provider's budget made by `budget` (the Worker's are
    /// shared across isolates).
    pub fn with_budgets(
        config: &LlmConfig,
        runtime: Rc<R>,
        env: &dyn Fn(&str) -> Option<String>,
        budget: &dyn Fn(&Provider) -> Rc<dyn Budget>,
    ) -> Result<Self> {
        config.validate()?;
        let entries: Vec<Entry<R>> = config
            .providers
            .iter()
            .map(|(name, provider_config)| Entry {
                name: name.clone(),
                config: provider_config.clone(),
                client: Provider::from_config(name, provider_config, env).map(|p| {
                    let budget = budget(&p);
                    Client::with_budget(p, Rc::clone(&runtime), budget)
                }),
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
    /// available) and its rate limiter's state (asked of a shared limiter: a round trip).
    pub async fn provider_status(&self) -> Vec<ProviderStatus> {
        let mut statuses = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let budget = match &e.client {
                Ok(client) => Some(client.budget_status().await),
                Err(_) => None,
            };
            let (rate_limiter, shared_limiter) = match budget {
                Some(status) => (Some(status.limiter), status.shared),
                None => (None, None),
            };
            statuses.push(ProviderStatus {
                name: e.name.clone(),
                kind: e.config.kind,
                model: e.config.kind.model(&e.config).to_string(),
                available: e.client.is_ok(),
                reason: e.client.as_ref().err().map(ToString::to_string),
                default: e.name == self.default,
                rate_limiter,
                shared_limiter,
            });
        }
        statuses
    }

    /// [`Self::provider_status`] keyed by name.
    pub async fn status_by_name(&self) -> StatusByName {
        StatusByName(self.provider_status().await)
    }

    /// Whether a provider of that name is configured (set up or not).
    pub fn knows(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.name == name)
    }

    /// The providers that could not be set up, with why.
    pub fn setup_errors(&self) -> Vec<(&str, &Error)> {
        self.entries
            .iter()
            .filter_map(|e| {
                e.client
                    .as_ref()
                    .err()
                    .map(|error| (e.name.as_str(), error))
            })
            .collect()
    }

    /// Delivers what every provider's budget holds for a remote limiter (see
    /// [`Budget::flush`]): the Worker runs it after each response, in `wait_until`.
    pub async fn flush(&self) {
        for client in self.entries.iter().filter_map(|e| e.client.as_ref().ok()) {
            client.budget().flush().await;
        }
    }

    /// The client of provider `name` (the default when `None`): an error naming the
    /// known providers if there is no such provider, or its setup error if it could not
    /// be set up.
    pub fn client(&self, name: Option<&str>) -> Result<&Client<R>> {
        self.entry(name.unwrap_or(&self.default))?
            .client
            .as_ref()
            .map_err(Clone::clone)
    }

    fn entry(&self, name: &str) -> Result<&Entry<R>> {
        self.entries.iter().find(|e| e.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.entries.iter().map(|e| e.name.as_str()).collect();
            Error::config(
                "provider",
                format!(
                    "unknown provider '{name}' (configured: {})",
                    known.join(", ")
                ),
            )
        })
    }

    /// Resolves `route`: every name must be configured; a failover tries each provider
    /// once, in the order first named.
    fn plan(&self, route: &Route) -> Result<Plan<'_, R>> {
        match route {
            Route::Default => Ok(Plan::One(self.entry(&self.default)?)),
            Route::Provider(name) => Ok(Plan::One(self.entry(name)?)),
            Route::Everyone => Ok(Plan::Failover(self.entries.iter().collect())),
            Route::Failover { first, then } => {
                let first = first.as_deref().unwrap_or(&self.default);
                let mut order: Vec<&Entry<R>> = Vec::new();
                for name in std::iter::once(first).chain(then.iter().map(String::as_str)) {
                    let entry = self.entry(name)?;
                    // At most one entry per provider: a linear scan of a list no longer
                    // than the configuration.
                    if !order.iter().any(|e| std::ptr::eq(*e, entry)) {
                        order.push(entry);
                    }
                }
                Ok(Plan::Failover(order))
            }
        }
    }

    /// Who a call's failure is about, for its stored row: the provider the error names
    /// (after a failover, the last one tried), else the one the route goes to first; and
    /// the model that provider calls for `config`.
    pub fn attribution(
        &self,
        route: &Route,
        config: &GenerationConfig,
        error: &Error,
    ) -> (String, String) {
        let first = match route {
            Route::Provider(name) => name.as_str(),
            Route::Failover {
                first: Some(name), ..
            } => name.as_str(),
            Route::Everyone => self.entries.first().map_or("", |e| e.name.as_str()),
            Route::Default | Route::Failover { first: None, .. } => &self.default,
        };
        let name = error.provider().unwrap_or(first);
        let model = match self.entries.iter().find(|e| e.name == name) {
            Some(entry) => entry
                .config
                .kind
                .model_for(&entry.config, config)
                .to_string(),
            None => config.model.clone().unwrap_or_default(),
        };
        (name.to_string(), model)
    }

    /// Generates an answer from the providers of `route`. Each provider retries on its
    /// own first. On a failover, a provider that could not be set up fails with its setup
    /// error and the next is tried; a configuration error of the call itself or an abort
    /// stops at once; all failing gives [`Error::AllProvidersFailed`] with each provider's
    /// error, in order.
    pub async fn generate(
        &self,
        prompt: &Prompt,
        config: &GenerationConfig,
        route: &Route,
        options: &CallOptions,
    ) -> Result<LlmResponse> {
        self.call(route, config, |client| {
            client.generate(prompt, config, options)
        })
        .await
    }

    /// Starts a streamed answer from the providers of `route`, as [`Self::generate`]
    /// does; once a stream has begun it is not switched.
    pub async fn stream(
        &self,
        prompt: &Prompt,
        config: &GenerationConfig,
        route: &Route,
        options: &CallOptions,
    ) -> Result<CompletionStream<R>> {
        self.call(route, config, |client| {
            client.stream(prompt, config, options)
        })
        .await
    }

    /// Runs `call` with the client of the provider of `route`, or of each provider of a
    /// failover in turn (see [`Self::generate`]).
    async fn call<'a, T, F, Fut>(
        &'a self,
        route: &Route,
        config: &GenerationConfig,
        mut call: F,
    ) -> Result<T>
    where
        F: FnMut(&'a Client<R>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let order = match self.plan(route)? {
            Plan::One(entry) => {
                let client = entry.client.as_ref().map_err(Clone::clone)?;
                return call(client).await;
            }
            Plan::Failover(order) => order,
        };
        config.validate()?;
        let mut errors = Vec::new();
        for entry in order {
            let outcome = match &entry.client {
                Ok(client) => call(client).await,
                Err(setup) => Err(setup.clone()),
            };
            match outcome {
                Ok(answer) => return Ok(answer),
                Err(error @ Error::Aborted) => return Err(error),
                Err(error @ Error::Config { .. }) if entry.client.is_ok() => return Err(error),
                Err(error) => errors.push((entry.name.clone(), error)),
            }
        }
        Err(Error::AllProvidersFailed { errors })
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
        let route = options.route()?;
        if let Plan::One(entry) = self.plan(&route)? {
            entry.client.as_ref().map_err(Clone::clone)?;
        }
        let call = CallOptions {
            timeout_ms: options.timeout_ms,
            ..CallOptions::default()
        };
        let total = prompts.len();
        let mut results: Vec<Option<Result<LlmResponse>>> = (0..total).map(|_| None).collect();
        let calls = prompts.iter().enumerate().map(|(index, prompt)| {
            let (route, call) = (&route, &call);
            async move { (index, self.generate(prompt, config, route, call).await) }
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

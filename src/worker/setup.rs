//! What the Worker reads from its environment: the configuration (`LLM_CONFIG`), the API
//! keys (secrets only), the access token (`DISTILLER_TOKEN`) and the database (`DB`). The
//! rules are the core's ([`LlmConfig::from_json_with`] with [`KeySource::SecretsOnly`],
//! [`token_matches`]); this module only looks things up.
//!
//! The provider manager lives per isolate: built on first use and again when the
//! configuration text changes. Its rate limiters are shared by every isolate, each in its
//! provider's Durable Object ([`super::limiter`]).

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::{json, Value};
use wasm_bindgen::JsValue;
use worker::{console_warn, D1Database, Env, Request, Response};

use super::http::{header, json_response};
use super::limiter::{Link, BINDING as LIMITER};
use crate::budget::{Budget, LocalBudget};
use crate::config::{KeySource, LlmConfig};
use crate::error::Error;
use crate::manager::ProviderManager;
use crate::openai_api::{bearer_token, token_matches, ApiError};
use crate::provider::Provider;
use crate::shared_limit::RemoteBudget;
use crate::wasm::WasmRuntime;

/// The secret holding the access token.
const TOKEN_SECRET: &str = "DISTILLER_TOKEN";
/// The var holding the configuration.
const CONFIG_VAR: &str = "LLM_CONFIG";
/// The D1 binding.
const DB_BINDING: &str = "DB";

/// The isolate's provider manager.
pub type Manager = ProviderManager<WasmRuntime>;

thread_local! {
    /// The isolate's manager, with the configuration text it was built from.
    static MANAGER: RefCell<Option<(String, Rc<Manager>)>> = const { RefCell::new(None) };
    /// The configuration var as JavaScript gave it when the manager was built: a request
    /// whose var is the same string (`===`) needs neither reading nor comparing it.
    static CONFIG_SEEN: RefCell<JsValue> = const { RefCell::new(JsValue::UNDEFINED) };
}

/// `/health`: whether the Worker can serve, never what its secrets are.
pub fn health(env: &Env) -> Response {
    let token = !token(env).is_empty();
    let body = json!({ "status": if token { "ok" } else { "unconfigured" }, "access_token_configured": token });
    json_response(&body, 200, None)
}

fn token(env: &Env) -> String {
    env.secret(TOKEN_SECRET)
        .map(|s| s.to_string())
        .unwrap_or_default()
}

/// The bearer token must match the `DISTILLER_TOKEN` secret (compared in constant time);
/// without that secret the Worker refuses everything but `/health`.
pub fn authorize(request: &Request, env: &Env) -> Result<(), ApiError> {
    let expected = token(env);
    if expected.is_empty() {
        return Err(ApiError::new(
            503,
            "server_error",
            "access_token_not_configured",
            format!("this Worker has no access token, so it serves nothing: set one with `wrangler secret put {TOKEN_SECRET}` (locally: {TOKEN_SECRET}=… in .dev.vars)"),
        ));
    }
    match bearer_token(header(request, "authorization").as_deref()) {
        Some(token) if token_matches(token, &expected) => Ok(()),
        Some(_) => Err(ApiError::new(
            401,
            "authentication_error",
            "invalid_api_key",
            "the access token is wrong",
        )),
        None => Err(ApiError::new(
            401,
            "authentication_error",
            "missing_api_key",
            "send the access token as `Authorization: Bearer <token>`",
        )),
    }
}

/// The isolate's manager, built on first use (and again if the configuration changed).
pub fn manager(env: &Env) -> Result<Rc<Manager>, ApiError> {
    let raw = js_sys::Reflect::get(env.as_ref(), &JsValue::from_str(CONFIG_VAR))
        .unwrap_or(JsValue::UNDEFINED);
    if raw.is_string() && CONFIG_SEEN.with(|seen| *seen.borrow() == raw) {
        if let Some(manager) = built_manager() {
            return Ok(manager);
        }
    }
    let text = config_text(env)?;
    let cached = MANAGER.with(|m| {
        m.borrow()
            .as_ref()
            .filter(|(t, _)| *t == text)
            .map(|(_, m)| Rc::clone(m))
    });
    if let Some(manager) = cached {
        CONFIG_SEEN.with(|seen| *seen.borrow_mut() = raw);
        return Ok(manager);
    }
    let config = LlmConfig::from_json_with(&text, KeySource::SecretsOnly)
        .map_err(|e| server_config_error(&e))?;
    let secret = |name: &str| {
        env.secret(name)
            .ok()
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty())
    };
    let runtime = Rc::new(WasmRuntime);
    // Each provider's budget is shared by every isolate, through its Durable Object; a
    // Worker deployed without the binding limits per isolate (and says so).
    let shared = |provider: &Provider| -> Rc<dyn Budget> {
        let config = provider.config();
        match Link::new(env, provider.identity()) {
            Some(link) => Rc::new(RemoteBudget::new(
                provider.identity(),
                config.rate_limit,
                config.shared_limit,
                Rc::clone(&runtime),
                link,
            )),
            None => {
                console_warn!(
                    "no {LIMITER} binding: each isolate limits '{}' on its own",
                    provider.name()
                );
                Rc::new(LocalBudget::new(config.rate_limit, Rc::clone(&runtime)))
            }
        }
    };
    let manager = Manager::with_budgets(&config, Rc::clone(&runtime), &secret, &shared)
        .map_err(|e| server_config_error(&e))?;
    for (name, reason) in manager.setup_errors() {
        console_warn!("provider '{name}' is unavailable: {reason}");
    }
    let manager = Rc::new(manager);
    MANAGER.with(|m| *m.borrow_mut() = Some((text, Rc::clone(&manager))));
    CONFIG_SEEN.with(|seen| *seen.borrow_mut() = raw);
    Ok(manager)
}

/// The isolate's manager, if one was built: to deliver what its budgets hold for the
/// shared limiters after a response.
pub fn built_manager() -> Option<Rc<Manager>> {
    MANAGER.with(|m| m.borrow().as_ref().map(|(_, m)| Rc::clone(m)))
}

fn config_text(env: &Env) -> Result<String, ApiError> {
    // A TOML table in [vars] arrives as an object, a string as a string: accept both.
    match env.object_var::<Value>(CONFIG_VAR) {
        Ok(Value::String(text)) => Ok(text),
        Ok(value @ Value::Object(_)) => Ok(value.to_string()),
        _ => match env.var(CONFIG_VAR) {
            Ok(var) => Ok(var.to_string()),
            Err(_) => Err(server_config_error(&Error::config(
                CONFIG_VAR,
                "is not set: put the providers' JSON configuration in [vars] of wrangler.toml",
            ))),
        },
    }
}

fn server_config_error(error: &Error) -> ApiError {
    ApiError::new(
        500,
        "server_error",
        "configuration_error",
        format!("the Worker's configuration is invalid: {error}"),
    )
}

/// The D1 database.
pub fn database(env: &Env) -> Result<D1Database, ApiError> {
    env.d1(DB_BINDING).map_err(|_| {
        ApiError::new(
            500,
            "server_error",
            "configuration_error",
            format!("the D1 binding {DB_BINDING} is missing from wrangler.toml"),
        )
    })
}

/// The 500 for a database that failed.
pub fn database_error(error: worker::Error) -> ApiError {
    ApiError::new(
        500,
        "server_error",
        "database_error",
        format!("the database failed: {error}"),
    )
}

//! The Cloudflare Worker (feature `worker`): an OpenAI-compatible endpoint over the core
//! that stores every answer in D1.
//!
//! This module routes, authenticates and moves bytes; every decision (reading requests,
//! shaping answers and errors, validity, row limits) is the core's ([`crate::openai_api`],
//! [`crate::record`]). The provider manager, and with it every rate limiter, lives per
//! isolate and is shared by all of that isolate's requests. Storing happens off the
//! response path, in `ctx.wait_until`.
//!
//! Configuration: the `LLM_CONFIG` var (the npm package's JSON), API keys only from
//! secrets (`LLM_<NAME>_API_KEY`, `OPENAI_API_KEY`, `AZURE_OPENAI_API_KEY`,
//! `CUSTOM_API_KEY`), the access token in the `DISTILLER_TOKEN` secret, the database in the
//! `DB` binding.

mod store;

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

use futures_util::stream::{self, Stream, StreamExt};
use serde_json::{json, Value};
use wasm_bindgen::JsValue;
use worker::{console_warn, event, Context, D1Database, Env, Headers, Method, Request, Response};

use crate::chat::{LlmResponse, Prompt};
use crate::client::{CallOptions, CompletionStream, StreamEvent};
use crate::config::{from_json_text, GenerationConfig, LlmConfig};
use crate::error::Error;
use crate::manager::ProviderManager;
use crate::openai_api::{
    bearer_token, chunk_event, completion_body, delta_object, error_event, failover_order,
    parse_chat_request, parse_generate_request, token_matches, too_large, ApiError, DONE_EVENT,
    MAX_REQUEST_BYTES,
};
use crate::record::{is_id, new_id, CutShort, ListQuery, Record};
use crate::runtime::Runtime;
use crate::wasm::WasmRuntime;

/// The secret holding the access token.
const TOKEN_SECRET: &str = "DISTILLER_TOKEN";
/// The var holding the configuration.
const CONFIG_VAR: &str = "LLM_CONFIG";
/// The D1 binding.
const DB_BINDING: &str = "DB";

type Manager = ProviderManager<WasmRuntime>;

thread_local! {
    /// The isolate's manager, with the configuration text it was built from.
    static MANAGER: RefCell<Option<(String, Rc<Manager>)>> = const { RefCell::new(None) };
}

#[event(fetch)]
async fn fetch(request: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let ctx = Rc::new(ctx);
    let outcome = route(request, &env, &ctx).await;
    let response = match outcome {
        Ok(response) => response,
        Err(error) => error_response(&error, None),
    };
    Ok(with_cors(response))
}

/// The headers every answer carries: the API is called cross-origin by the demo page when
/// it is served elsewhere, with a bearer token, never cookies.
fn with_cors(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let _ = headers.set("access-control-allow-origin", "*");
    let _ = headers.set(
        "access-control-expose-headers",
        "x-distiller-id, retry-after, retry-after-ms",
    );
    response
}

fn json_response(body: &Value, status: u16, id: Option<&str>) -> Response {
    let headers = Headers::new();
    let _ = headers.set("content-type", "application/json");
    if let Some(id) = id {
        let _ = headers.set("x-distiller-id", id);
    }
    Response::from_bytes(body.to_string().into_bytes())
        .map(|r| r.with_status(status).with_headers(headers))
        .unwrap_or_else(|_| {
            Response::empty()
                .expect("an empty response")
                .with_status(500)
        })
}

fn error_response(error: &ApiError, id: Option<&str>) -> Response {
    let mut response = json_response(&error.body(), error.status, id);
    if let Some(ms) = error.retry_after_ms {
        let headers = response.headers_mut();
        let _ = headers.set("retry-after-ms", &format!("{}", ms.ceil() as u64));
        let _ = headers.set("retry-after", &format!("{}", (ms / 1000.0).ceil() as u64));
    }
    response
}

/// A 405 with the `Allow` header.
fn method_not_allowed(allowed: &str) -> Response {
    let error = ApiError::new(
        405,
        "invalid_request_error",
        "method_not_allowed",
        format!("use {allowed} here"),
    );
    let mut response = error_response(&error, None);
    let _ = response.headers_mut().set("allow", allowed);
    response
}

async fn route(mut request: Request, env: &Env, ctx: &Rc<Context>) -> Result<Response, ApiError> {
    let path = request.path();
    let method = request.method();
    if method == Method::Options {
        return Ok(preflight(&request));
    }
    if path == "/health" {
        return match method {
            Method::Get | Method::Head => Ok(health(env)),
            _ => Ok(method_not_allowed("GET")),
        };
    }
    let known = matches!(
        path.as_str(),
        "/v1/chat/completions" | "/v1/generate" | "/v1/responses" | "/v1/providers"
    ) || path.starts_with("/v1/responses/");
    if !known {
        return Err(ApiError::new(
            404,
            "invalid_request_error",
            "not_found",
            format!("no route for {path}"),
        ));
    }
    authorize(&request, env)?;
    let post = method == Method::Post;
    let get = method == Method::Get;
    match path.as_str() {
        "/v1/chat/completions" if post => chat_completions(&mut request, env, ctx).await,
        "/v1/generate" if post => generate(&mut request, env, ctx).await,
        "/v1/chat/completions" | "/v1/generate" => Ok(method_not_allowed("POST")),
        "/v1/providers" if get => providers(env),
        "/v1/responses" if get => list_responses(&request, env).await,
        p if get && p.starts_with("/v1/responses/") => {
            get_response(&p["/v1/responses/".len()..], env).await
        }
        _ => Ok(method_not_allowed("GET")),
    }
}

/// Answers a CORS preflight, allowing the headers asked for: clients such as the official
/// `openai` SDK send their own (`x-stainless-*`), and a bearer token, not a cookie, is
/// what authenticates.
fn preflight(request: &Request) -> Response {
    let mut response = Response::empty()
        .map(|r| r.with_status(204))
        .unwrap_or_else(|_| Response::error("", 500).expect("a response"));
    let headers = response.headers_mut();
    let _ = headers.set("access-control-allow-methods", "GET, POST, OPTIONS");
    let asked = request
        .headers()
        .get("access-control-request-headers")
        .ok()
        .flatten();
    let allowed =
        asked.unwrap_or_else(|| "authorization, content-type, x-llm-provider".to_string());
    let _ = headers.set("access-control-allow-headers", &allowed);
    let _ = headers.set("access-control-max-age", "86400");
    response
}

fn health(env: &Env) -> Response {
    // Says whether the Worker can serve, never what its secrets are.
    let token = env
        .secret(TOKEN_SECRET)
        .map(|s| !s.to_string().is_empty())
        .unwrap_or(false);
    let body = json!({ "status": if token { "ok" } else { "unconfigured" }, "access_token_configured": token });
    json_response(&body, 200, None)
}

/// The bearer token must match the `DISTILLER_TOKEN` secret (compared in constant time);
/// without that secret the Worker refuses everything but `/health`.
fn authorize(request: &Request, env: &Env) -> Result<(), ApiError> {
    let expected = env
        .secret(TOKEN_SECRET)
        .map(|s| s.to_string())
        .unwrap_or_default();
    if expected.is_empty() {
        return Err(ApiError::new(
            503,
            "server_error",
            "access_token_not_configured",
            format!("this Worker has no access token, so it serves nothing: set one with `wrangler secret put {TOKEN_SECRET}` (locally: {TOKEN_SECRET}=… in .dev.vars)"),
        ));
    }
    let header = request.headers().get("authorization").ok().flatten();
    match bearer_token(header.as_deref()) {
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
fn manager(env: &Env) -> Result<Rc<Manager>, ApiError> {
    let text = config_text(env)?;
    if let Some(manager) = MANAGER.with(|m| {
        m.borrow()
            .as_ref()
            .filter(|(t, _)| *t == text)
            .map(|(_, m)| Rc::clone(m))
    }) {
        return Ok(manager);
    }
    let config: LlmConfig =
        from_json_text(&text, CONFIG_VAR).map_err(|e| server_config_error(&e))?;
    config.validate().map_err(|e| server_config_error(&e))?;
    if let Some((name, _)) = config.providers.iter().find(|(_, p)| !p.api_key.is_empty()) {
        return Err(server_config_error(&Error::config(
            format!("providers.{name}.api_key"),
            "keys must not be in vars, where anyone with access to the configuration sees them: remove it and set a secret (wrangler secret put)",
        )));
    }
    let secret = |name: &str| {
        env.secret(name)
            .ok()
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty())
    };
    let manager = Manager::new(&config, Rc::new(WasmRuntime), &secret)
        .map_err(|e| server_config_error(&e))?;
    for status in manager.provider_status().iter().filter(|s| !s.available) {
        console_warn!(
            "provider '{}' is unavailable: {}",
            status.name,
            status.reason.as_deref().unwrap_or("")
        );
    }
    let manager = Rc::new(manager);
    MANAGER.with(|m| *m.borrow_mut() = Some((text, Rc::clone(&manager))));
    Ok(manager)
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

fn database(env: &Env) -> Result<D1Database, ApiError> {
    env.d1(DB_BINDING).map_err(|_| {
        ApiError::new(
            500,
            "server_error",
            "configuration_error",
            format!("the D1 binding {DB_BINDING} is missing from wrangler.toml"),
        )
    })
}

/// Reads the body, refusing more than [`MAX_REQUEST_BYTES`] without reading it all.
async fn read_body(request: &mut Request) -> Result<Vec<u8>, ApiError> {
    let declared = request
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|l| l.parse::<u64>().ok());
    if declared.is_some_and(|l| l > MAX_REQUEST_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let mut chunks = match request.stream() {
        Ok(chunks) => chunks,
        Err(_) => return Ok(body),
    };
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::invalid(None, format!("the body could not be read: {e}")))?;
        if body.len() + chunk.len() > MAX_REQUEST_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn fresh_id() -> (String, f64) {
    let runtime = WasmRuntime;
    let created = runtime.now_ms();
    (new_id(created, runtime.random(), runtime.random()), created)
}

/// Stores `record` after the response, in `ctx.wait_until`.
fn store_later(ctx: &Context, env: &Env, record: Record) {
    ctx.wait_until(store_row(database(env), record));
}

/// Stores `record` in `db`, or says why it cannot.
async fn store_row(db: Result<D1Database, ApiError>, record: Record) {
    match db {
        Ok(db) => store::insert(&db, &record).await,
        Err(e) => console_warn!("response {} not stored: {}", record.id, e.message),
    }
}

/// A value handed over once from the request's handling to `ctx.wait_until` work, which
/// outlives it (a client that hangs up cancels the handling): a one-shot channel over a
/// promise.
struct Handoff<T> {
    slot: Rc<RefCell<Option<T>>>,
    resolve: js_sys::Function,
}

impl<T: 'static> Handoff<T> {
    /// The sending half, and the future of what is sent (`None` if nothing ever is).
    fn new() -> Result<(Self, impl Future<Output = Option<T>>), ApiError> {
        let slot: Rc<RefCell<Option<T>>> = Rc::default();
        let mut resolve = None;
        let sent = js_sys::Promise::new(&mut |resolve_fn, _reject| resolve = Some(resolve_fn));
        let resolve = resolve.ok_or_else(|| {
            ApiError::new(500, "server_error", "internal_error", "no promise resolver")
        })?;
        let received = Rc::clone(&slot);
        let value = async move {
            let _ = wasm_bindgen_futures::JsFuture::from(sent).await;
            received.borrow_mut().take()
        };
        Ok((Self { slot, resolve }, value))
    }

    fn send(&self, value: T) {
        *self.slot.borrow_mut() = Some(value);
        let _ = self.resolve.call0(&JsValue::NULL);
    }
}

async fn chat_completions(
    request: &mut Request,
    env: &Env,
    ctx: &Rc<Context>,
) -> Result<Response, ApiError> {
    let body = read_body(request).await?;
    let header_provider = request.headers().get("x-llm-provider").ok().flatten();
    let chat = parse_chat_request(&body, header_provider.as_deref())?;
    let manager = manager(env)?;
    let request_json = chat.stored();
    let call = Call {
        prompt: Prompt::Messages(chat.messages),
        config: chat.config,
        provider: chat.provider,
        fallback: chat.fallback,
        request_json,
    };
    if chat.stream {
        return stream_completion(manager, call, chat.include_usage, env, ctx).await;
    }
    let (id, created, response) = answer(&manager, &call, env, ctx).await?;
    let body = completion_body(&id, (created / 1000.0) as u64, &response);
    Ok(json_response(&body, 200, Some(&id)))
}

/// One call as the Worker receives it, from either endpoint.
struct Call {
    prompt: Prompt,
    config: GenerationConfig,
    provider: Option<String>,
    fallback: Vec<String>,
    /// The request as it is stored.
    request_json: String,
}

impl Call {
    /// The providers to fail over through, or `None` for the one provider alone.
    fn order(&self, manager: &Manager) -> Option<Vec<String>> {
        failover_order(
            self.provider.as_deref(),
            &self.fallback,
            manager.default_provider(),
        )
    }

    /// The error answer of the call's failure, stored first (unless it was the client's
    /// own mistake, which stores nothing).
    fn fail(
        &self,
        manager: &Manager,
        id: String,
        created: f64,
        error: &Error,
        env: &Env,
        ctx: &Context,
    ) -> ApiError {
        let mut api = ApiError::from_error(error);
        let provider = self
            .provider
            .as_deref()
            .unwrap_or(manager.default_provider());
        let model = manager
            .client(Some(error.provider().unwrap_or(provider)))
            .map(|c| c.provider().model_for(&self.config).to_string())
            .unwrap_or_else(|_| self.config.model.clone().unwrap_or_default());
        let record = Record::failure(
            id.clone(),
            created,
            &self.request_json,
            provider,
            &model,
            error,
        );
        if let Some(record) = record {
            store_later(ctx, env, record);
            api.message = format!("{} (stored as {id})", api.message);
        }
        api
    }
}

/// Runs `call` (failing over when it names fallbacks), stores its answer, or its failure,
/// after the response, and gives the answer with its stored id and arrival time.
async fn answer(
    manager: &Manager,
    call: &Call,
    env: &Env,
    ctx: &Context,
) -> Result<(String, f64, LlmResponse), ApiError> {
    let (id, created) = fresh_id();
    let options = CallOptions::default();
    let result = match call.order(manager) {
        Some(order) => {
            manager
                .generate_with_failover(&call.prompt, &call.config, Some(&order), &options)
                .await
        }
        None => {
            manager
                .generate(
                    &call.prompt,
                    &call.config,
                    call.provider.as_deref(),
                    &options,
                )
                .await
        }
    };
    match result {
        Ok(response) => {
            let record = Record::answer(
                id.clone(),
                created,
                &call.request_json,
                &response,
                call.config.wants_json(),
            );
            store_later(ctx, env, record);
            Ok((id, created, response))
        }
        Err(error) => Err(call.fail(manager, id, created, &error, env, ctx)),
    }
}

/// What the SSE body needs between chunks.
struct Streaming {
    upstream: CompletionStream<WasmRuntime>,
    id: String,
    created: f64,
    model: String,
    include_usage: bool,
    request_json: String,
    wants_json: bool,
    /// Where the record goes when the stream ends, one way or the other: a
    /// `ctx.wait_until` registered before the response stores what it is sent.
    /// (Registered later, from the stream's own end, it would not run when the client
    /// disconnects: workerd cancels the body first.)
    row: Handoff<Record>,
    /// The record was sent to `row`: the stream is over.
    stored: bool,
}

impl Streaming {
    fn created_s(&self) -> u64 {
        (self.created / 1000.0) as u64
    }

    /// Stores what the stream gave, once: the whole answer, or the part that arrived
    /// before it was cut short, as invalid.
    fn store(&mut self, end: Result<&LlmResponse, CutShort<'_>>) {
        if self.stored {
            return;
        }
        self.stored = true;
        let (id, request) = (self.id.clone(), &self.request_json);
        let record = match end {
            Ok(response) => Record::answer(id, self.created, request, response, self.wants_json),
            Err(why) => match self.upstream.received() {
                Some(received) => {
                    Record::cut_short(id, self.created, request, &received, self.wants_json, why)
                }
                // Only once the whole answer was handed out, which stored it already.
                None => return,
            },
        };
        self.row.send(record);
    }

    /// The next SSE events, or `None` at the end.
    async fn next_events(&mut self) -> Option<String> {
        if self.stored {
            return None;
        }
        match self.upstream.next().await {
            Some(Ok(StreamEvent::Delta(delta))) => {
                let delta = delta_object(&delta.content, &delta.thinking);
                Some(chunk_event(
                    &self.id,
                    self.created_s(),
                    &self.model,
                    Some(delta),
                    None,
                    None,
                ))
            }
            Some(Ok(StreamEvent::Done(response))) => {
                self.model = response.model.clone();
                let mut events = chunk_event(
                    &self.id,
                    self.created_s(),
                    &self.model,
                    Some(json!({})),
                    response.finish_reason.as_deref(),
                    None,
                );
                if self.include_usage {
                    events.push_str(&chunk_event(
                        &self.id,
                        self.created_s(),
                        &self.model,
                        None,
                        None,
                        response.usage.as_ref(),
                    ));
                }
                events.push_str(DONE_EVENT);
                self.store(Ok(&response));
                Some(events)
            }
            Some(Err(error)) => {
                self.store(Err(CutShort::Error(&error)));
                Some(error_event(&ApiError::from_error(&error)) + DONE_EVENT)
            }
            None => {
                self.store(Err(CutShort::NoAnswer));
                Some(DONE_EVENT.to_string())
            }
        }
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        // The client went away mid-stream: keep what arrived.
        if !self.stored {
            self.store(Err(CutShort::ClientGone));
        }
    }
}

async fn stream_completion(
    manager: Rc<Manager>,
    call: Call,
    include_usage: bool,
    env: &Env,
    ctx: &Rc<Context>,
) -> Result<Response, ApiError> {
    let (id, created) = fresh_id();
    let options = CallOptions::default();
    let opened = match call.order(&manager) {
        Some(order) => {
            manager
                .stream_with_failover(&call.prompt, &call.config, Some(&order), &options)
                .await
        }
        None => {
            manager
                .stream(
                    &call.prompt,
                    &call.config,
                    call.provider.as_deref(),
                    &options,
                )
                .await
        }
    };
    let upstream = match opened {
        Ok(upstream) => upstream,
        Err(error) => return Err(call.fail(&manager, id, created, &error, env, ctx)),
    };
    let model = upstream.provider().model_for(&call.config).to_string();
    let (row, ended) = Handoff::new()?;
    let db = database(env);
    ctx.wait_until(async move {
        if let Some(record) = ended.await {
            store_row(db, record).await;
        }
    });
    let state = Streaming {
        upstream,
        id: id.clone(),
        created,
        model: model.clone(),
        include_usage,
        wants_json: call.config.wants_json(),
        request_json: call.request_json,
        row,
        stored: false,
    };
    let role = chunk_event(
        &id,
        (created / 1000.0) as u64,
        &model,
        Some(json!({ "role": "assistant", "content": "" })),
        None,
        None,
    );
    let events = stream::once(async move { Ok::<Vec<u8>, worker::Error>(role.into_bytes()) })
        .chain(sse_body(state));
    let headers = Headers::new();
    let _ = headers.set("content-type", "text/event-stream; charset=utf-8");
    let _ = headers.set("cache-control", "no-cache");
    let _ = headers.set("x-distiller-id", &id);
    Response::from_stream(events)
        .map(|r| r.with_headers(headers))
        .map_err(|e| ApiError::new(500, "server_error", "internal_error", e.to_string()))
}

fn sse_body(state: Streaming) -> impl Stream<Item = worker::Result<Vec<u8>>> {
    stream::unfold(state, |mut state| async move {
        let events = state.next_events().await?;
        Some((Ok(events.into_bytes()), state))
    })
}

async fn generate(
    request: &mut Request,
    env: &Env,
    ctx: &Rc<Context>,
) -> Result<Response, ApiError> {
    let body = read_body(request).await?;
    let call = parse_generate_request(&body)?;
    let manager = manager(env)?;
    let request_json = call.stored();
    let run = Call {
        prompt: call.prompt,
        config: call.config,
        provider: call.provider,
        fallback: call.fallback,
        request_json,
    };
    let (id, _, response) = answer(&manager, &run, env, ctx).await?;
    let mut body = serde_json::to_value(&response).unwrap_or(Value::Null);
    body["distiller_id"] = Value::String(id.clone());
    Ok(json_response(&body, 200, Some(&id)))
}

fn providers(env: &Env) -> Result<Response, ApiError> {
    let manager = manager(env)?;
    let body = json!({ "object": "list", "default": manager.default_provider(), "data": manager.provider_status() });
    Ok(json_response(&body, 200, None))
}

async fn list_responses(request: &Request, env: &Env) -> Result<Response, ApiError> {
    let url = request
        .url()
        .map_err(|_| ApiError::invalid(None, "the URL cannot be read"))?;
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let query = ListQuery::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let db = database(env)?;
    let (rows, next) = store::list(&db, &query).await.map_err(database_error)?;
    Ok(json_response(
        &json!({ "object": "list", "data": rows, "next_cursor": next }),
        200,
        None,
    ))
}

async fn get_response(id: &str, env: &Env) -> Result<Response, ApiError> {
    if !is_id(id) {
        return Err(ApiError::new(
            404,
            "invalid_request_error",
            "not_found",
            format!("no stored response has the id '{id}'"),
        ));
    }
    let db = database(env)?;
    match store::get(&db, id).await.map_err(database_error)? {
        Some(row) => Ok(json_response(&row, 200, Some(id))),
        None => Err(ApiError::new(
            404,
            "invalid_request_error",
            "not_found",
            format!("no stored response has the id '{id}'"),
        )),
    }
}

fn database_error(error: worker::Error) -> ApiError {
    ApiError::new(
        500,
        "server_error",
        "database_error",
        format!("the database failed: {error}"),
    )
}

//! The call endpoints: `POST /v1/chat/completions` and `POST /v1/generate`. Each reads its
//! request into the core's [`Call`], runs it through the manager along its route, and stores
//! the answer (or the failure) after the response; a streamed chat completion goes to
//! [`super::streaming`].

use serde_json::Value;
use worker::{console_warn, Context, Env, Request, Response};

use super::http::{header, json_response, read_json_body};
use super::setup::{database, manager, Manager};
use super::{store, streaming};
use crate::chat::LlmResponse;
use crate::client::CallOptions;
use crate::error::Error;
use crate::openai_api::{
    completion_body, parse_chat_request, parse_generate_request, ApiError, Call,
};
use crate::record::{Arrival, Record};
use crate::wasm::WasmRuntime;

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    request: &mut Request,
    env: &Env,
    ctx: &Context,
) -> Result<Response, ApiError> {
    let body = read_json_body(request).await?;
    let chat = parse_chat_request(&body, header(request, "x-llm-provider").as_deref())?;
    let manager = manager(env)?;
    if chat.stream {
        return streaming::respond(manager, chat.call, chat.include_usage, env, ctx).await;
    }
    let (arrival, response) = answer(&manager, &chat.call, env, ctx).await?;
    let body = completion_body(&arrival.id, arrival.created_s(), &response);
    Ok(json_response(&body, 200, Some(&arrival.id)))
}

/// `POST /v1/generate`: the design's `LlmResponse`, with the stored row's id.
pub async fn generate(
    request: &mut Request,
    env: &Env,
    ctx: &Context,
) -> Result<Response, ApiError> {
    let body = read_json_body(request).await?;
    let call = parse_generate_request(&body)?;
    let manager = manager(env)?;
    let (arrival, response) = answer(&manager, &call, env, ctx).await?;
    let mut body = serde_json::to_value(&response).unwrap_or(Value::Null);
    body["distiller_id"] = Value::String(arrival.id.clone());
    Ok(json_response(&body, 200, Some(&arrival.id)))
}

/// Runs `call`, stores its answer, or its failure, after the response, and gives the
/// answer with its arrival.
async fn answer(
    manager: &Manager,
    call: &Call,
    env: &Env,
    ctx: &Context,
) -> Result<(Arrival, LlmResponse), ApiError> {
    let arrival = Arrival::now(&WasmRuntime);
    let result = manager
        .generate(
            &call.prompt,
            &call.config,
            &call.route,
            &CallOptions::default(),
        )
        .await;
    match result {
        Ok(response) => {
            let record = Record::answer(
                arrival.id.clone(),
                arrival.created_at,
                &call.stored,
                &response,
                call.config.wants_json(),
            );
            store_later(ctx, env, record);
            Ok((arrival, response))
        }
        Err(error) => Err(failed(manager, call, &arrival, &error, env, ctx)),
    }
}

/// The answer to a call that failed, its row stored after the response (unless the call
/// was the client's own mistake, which stores nothing).
pub fn failed(
    manager: &Manager,
    call: &Call,
    arrival: &Arrival,
    error: &Error,
    env: &Env,
    ctx: &Context,
) -> ApiError {
    let api = ApiError::from_error(error);
    let (provider, model) = manager.attribution(&call.route, &call.config, error);
    let record = Record::failure(
        arrival.id.clone(),
        arrival.created_at,
        &call.stored,
        &provider,
        &model,
        error,
    );
    match record {
        Some(record) => {
            store_later(ctx, env, record);
            api.stored_as(&arrival.id)
        }
        None => api,
    }
}

/// Stores `record` after the response, in `ctx.wait_until`.
pub fn store_later(ctx: &Context, env: &Env, record: Record) {
    let db = database(env);
    ctx.wait_until(async move {
        match db {
            Ok(db) => store::insert(&db, record).await,
            Err(e) => console_warn!("response {} not stored: {}", record.id, e.message),
        }
    });
}

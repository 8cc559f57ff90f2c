//! Reading what was stored: `GET /v1/responses` (a page, newest first), `GET
//! /v1/responses/{id}`, and `GET /v1/providers` (each provider's setup and rate limiter).

use serde_json::json;
use worker::{Env, Request, Response};

use super::http::{json_response, query_pairs};
use super::setup::{database, database_error, manager};
use super::store;
use crate::openai_api::ApiError;
use crate::record::ListQuery;

/// `GET /v1/responses?limit&cursor&provider&model&valid`.
pub async fn list(request: &Request, env: &Env) -> Result<Response, ApiError> {
    let pairs = query_pairs(request)?;
    let query = ListQuery::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let db = database(env)?;
    let (rows, next) = store::list(&db, &query).await.map_err(database_error)?;
    Ok(json_response(
        &json!({ "object": "list", "data": rows, "next_cursor": next }),
        200,
        None,
    ))
}

/// `GET /v1/responses/{id}`: one stored response, valid or invalid, with its request.
pub async fn get(id: &str, env: &Env) -> Result<Response, ApiError> {
    let db = database(env)?;
    match store::get(&db, id).await.map_err(database_error)? {
        Some(row) => Ok(json_response(&row, 200, Some(id))),
        None => Err(ApiError::not_found(format!(
            "no stored response has the id '{id}'"
        ))),
    }
}

/// `GET /v1/providers`.
pub fn providers(env: &Env) -> Result<Response, ApiError> {
    let manager = manager(env)?;
    let body = json!({ "object": "list", "default": manager.default_provider(), "data": manager.provider_status() });
    Ok(json_response(&body, 200, None))
}

//! The batches of the Batch API: `POST /v1/batches` (the input file read and checked
//! again, its lines stored with the batch in one transaction, the first of them sent to the
//! queue), `GET /v1/batches/{id}`, `GET /v1/batches` and `POST /v1/batches/{id}/cancel`.
//! Reading a batch also keeps it moving ([`queue::recover`], after the response). The
//! checks, objects and statements are the core's ([`crate::batch`]).

use serde::Deserialize;
use worker::{Context, D1Database, Env, Request, Response};

use super::http::{json_response, query_pairs, read_json_body};
use super::queue::{self, feed, finalize_if_finished, recover, recover_all};
use super::setup::{database, database_error, manager};
use super::store::{first, last_rows, rows, run_group};
use crate::batch::input::parse_input;
use crate::batch::sql::{self, Progress};
use crate::batch::{list_object, new_id, parse_create, BatchRow, FileRow, ListPage, BATCH_PREFIX};
use crate::openai_api::ApiError;
use crate::runtime::Runtime;
use crate::sql::Group;
use crate::wasm::WasmRuntime;

/// `POST /v1/batches`.
pub async fn create(request: &mut Request, env: &Env) -> Result<Response, ApiError> {
    let create = parse_create(&read_json_body(request).await?)?;
    let db = database(env)?;
    let file = first::<FileRow>(&db, &sql::get_file(&create.input_file_id))
        .await
        .map_err(database_error)?
        .filter(|f| f.purpose == "batch")
        .ok_or_else(|| {
            ApiError::invalid(
                Some("input_file_id"),
                format!(
                    "input_file_id: no batch input file has the id '{}'",
                    create.input_file_id
                ),
            )
        })?;
    let text = read_parts(&db, &file.id).await?;
    let manager = manager(env)?;
    let queue = queue::queue(env)?;
    let runtime = WasmRuntime;
    let now_ms = runtime.now_ms();
    let now_s = (now_ms / 1000.0).floor();
    let id = new_id(BATCH_PREFIX, now_ms, runtime.random(), runtime.random());
    let metadata = create
        .metadata
        .as_ref()
        .map(|m| serde_json::Value::Object(m.clone()).to_string());
    match parse_input(text.as_bytes(), &|name| manager.knows(name)) {
        // Checked at upload; a configuration changed since fails the batch as OpenAI's
        // validation does, naming the lines.
        Err(errors) => {
            let failed =
                sql::insert_failed_batch(&id, &file.id, metadata.as_deref(), &errors, now_s);
            run_group(&db, &vec![failed])
                .await
                .map_err(database_error)?;
        }
        Ok(lines) => {
            // The lines first, then the batch that makes them visible: one transaction.
            let mut group: Group = sql::insert_items(
                &id,
                lines
                    .iter()
                    .map(|l| (l.line, l.custom_id.as_str(), l.body.as_str())),
            );
            group.push(sql::insert_batch(
                &id,
                &file.id,
                metadata.as_deref(),
                lines.len(),
                now_s,
                now_ms,
            ));
            run_group(&db, &group).await.map_err(database_error)?;
            feed(&db, &queue, &id).await;
        }
    }
    batch_response(&db, &id).await
}

/// An input file's text, part by part.
async fn read_parts(db: &D1Database, id: &str) -> Result<String, ApiError> {
    #[derive(Deserialize)]
    struct Part {
        seq: f64,
        data: String,
    }
    let mut text = String::new();
    let mut after = -1i64;
    loop {
        let parts = rows::<Part>(db, &sql::file_parts(id, after, 8))
            .await
            .map_err(database_error)?;
        let Some(last) = parts.last() else { break };
        after = last.seq as i64;
        for part in parts {
            text.push_str(&part.data);
        }
    }
    Ok(text)
}

/// The batch `id`, or the 404.
async fn batch(db: &D1Database, id: &str) -> Result<BatchRow, ApiError> {
    first::<BatchRow>(db, &sql::get_batch(id))
        .await
        .map_err(database_error)?
        .ok_or_else(|| ApiError::not_found(format!("no batch has the id '{id}'")))
}

async fn batch_response(db: &D1Database, id: &str) -> Result<Response, ApiError> {
    Ok(json_response(&batch(db, id).await?.object(), 200, None))
}

/// `GET /v1/batches/{id}`; keeps the batch moving after the response.
pub async fn get(id: &str, env: &Env, ctx: &Context) -> Result<Response, ApiError> {
    let db = database(env)?;
    let row = batch(&db, id).await?;
    if row.stalled(WasmRuntime.now_ms()) {
        if let Ok(queue) = queue::queue(env) {
            let id = id.to_string();
            let db = database(env)?;
            ctx.wait_until(async move { recover(&db, &queue, &id).await });
        }
    }
    Ok(json_response(&row.object(), 200, None))
}

/// `GET /v1/batches?after&limit`, newest first; keeps every batch in progress moving.
pub async fn list(request: &Request, env: &Env, ctx: &Context) -> Result<Response, ApiError> {
    let pairs = query_pairs(request)?;
    let page = ListPage::parse(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        BATCH_PREFIX,
        false,
    )?;
    let db = database(env)?;
    let batches = rows::<BatchRow>(&db, &sql::list_batches(page.after.as_deref(), page.limit))
        .await
        .map_err(database_error)?;
    if let Ok(queue) = queue::queue(env) {
        let db = database(env)?;
        ctx.wait_until(async move { recover_all(&db, &queue).await });
    }
    let data = batches.iter().map(BatchRow::object).collect();
    Ok(json_response(
        &list_object(data, page.limit, false),
        200,
        None,
    ))
}

/// `POST /v1/batches/{id}/cancel`: no new line starts; those running finish and are kept.
pub async fn cancel(id: &str, env: &Env) -> Result<Response, ApiError> {
    let db = database(env)?;
    let row = batch(&db, id).await?;
    if !matches!(row.status.as_str(), "in_progress" | "cancelling") {
        return Err(ApiError::invalid(
            None,
            format!(
                "batch {id} is {}: only a batch in progress can be cancelled",
                row.status
            ),
        ));
    }
    let now_s = (WasmRuntime.now_ms() / 1000.0).floor();
    let results = run_group(&db, &sql::cancel(id, now_s))
        .await
        .map_err(database_error)?;
    let progress = last_rows::<Progress>(&results)
        .map_err(database_error)?
        .into_iter()
        .next();
    finalize_if_finished(&db, id, progress.as_ref()).await;
    batch_response(&db, id).await
}

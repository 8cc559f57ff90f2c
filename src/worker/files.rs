//! The files of the Batch API: `POST /v1/files` (a batch input, multipart, checked whole
//! before it is kept), `GET /v1/files`, `GET /v1/files/{id}`, `GET /v1/files/{id}/content`
//! (streamed from D1 part by part, or line by line for a batch's output and error files)
//! and `DELETE /v1/files/{id}`. The checks, objects and statements are the core's
//! ([`crate::batch`]).

use futures_util::stream;
use serde::Deserialize;
use serde_json::json;
use worker::{D1Database, Env, FormEntry, Headers, Request, RequestInit, Response};

use super::http::{header, json_response, query_pairs, read_body};
use super::setup::{database, database_error, manager};
use super::store::{first, rows, run_group};
use crate::batch::input::parse_input;
use crate::batch::{
    list_object, new_id, refused_file, sql, FileRow, ListPage, FILE_PREFIX, MAX_FILE_BYTES,
};
use crate::openai_api::ApiError;
use crate::runtime::Runtime;
use crate::wasm::WasmRuntime;

/// What a multipart body may add to the file it carries.
const FORM_OVERHEAD_BYTES: usize = 64 * 1024;

/// `POST /v1/files`.
pub async fn create(request: &mut Request, env: &Env) -> Result<Response, ApiError> {
    let content_type = header(request, "content-type").unwrap_or_default();
    if !content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return Err(ApiError::invalid(
            None,
            "send the file as multipart/form-data, with the fields file and purpose",
        ));
    }
    let body = read_body(request, MAX_FILE_BYTES + FORM_OVERHEAD_BYTES).await?;
    let (filename, bytes, purpose) = read_form(body, &content_type).await?;
    if purpose != "batch" {
        return Err(ApiError::invalid(
            Some("purpose"),
            format!(
                "purpose: only \"batch\" files are kept here, got \"{}\"",
                purpose.escape_debug()
            ),
        ));
    }
    let manager = manager(env)?;
    let lines =
        parse_input(&bytes, &|name| manager.knows(name)).map_err(|errors| refused_file(&errors))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| ApiError::invalid(Some("file"), "the file is not UTF-8 text"))?;
    let runtime = WasmRuntime;
    let now_ms = runtime.now_ms();
    let id = new_id(FILE_PREFIX, now_ms, runtime.random(), runtime.random());
    let db = database(env)?;
    let now_s = (now_ms / 1000.0).floor();
    run_group(
        &db,
        &sql::insert_file(&id, &filename, &text, lines.len(), now_s),
    )
    .await
    .map_err(database_error)?;
    let row = FileRow {
        id,
        purpose: "batch".into(),
        filename,
        bytes: text.len() as f64,
        created_at: now_s,
        batch_id: None,
        kind: None,
    };
    Ok(json_response(&row.object(), 200, None))
}

/// The file's name, its bytes and the purpose, from a multipart body read within the limit.
async fn read_form(
    body: Vec<u8>,
    content_type: &str,
) -> Result<(String, Vec<u8>, String), ApiError> {
    let bad = |message: String| ApiError::invalid(None, message);
    let headers = Headers::new();
    let _ = headers.set("content-type", content_type);
    let mut init = RequestInit::new();
    init.with_method(worker::Method::Post)
        .with_headers(headers)
        .with_body(Some(js_sys::Uint8Array::from(body.as_slice()).into()));
    let mut form_request = Request::new_with_init("https://files.internal/", &init)
        .map_err(|e| bad(format!("the form cannot be read: {e}")))?;
    let form = form_request
        .form_data()
        .await
        .map_err(|e| bad(format!("the body is not a multipart form: {e}")))?;
    let purpose = match form.get("purpose") {
        Some(FormEntry::Field(purpose)) => purpose,
        _ => {
            return Err(ApiError::invalid(
                Some("purpose"),
                "purpose is required (\"batch\")",
            ))
        }
    };
    let file = match form.get("file") {
        Some(FormEntry::File(file)) => file,
        _ => {
            return Err(ApiError::invalid(
                Some("file"),
                "file is required: the JSONL of requests",
            ))
        }
    };
    let bytes = file
        .bytes()
        .await
        .map_err(|e| bad(format!("the file cannot be read: {e}")))?;
    let name = file.name();
    let name = if name.trim().is_empty() {
        "batch.jsonl".to_string()
    } else {
        name
    };
    Ok((name, bytes, purpose))
}

/// The file `id`, or the 404.
async fn file(db: &D1Database, id: &str) -> Result<FileRow, ApiError> {
    first::<FileRow>(db, &sql::get_file(id))
        .await
        .map_err(database_error)?
        .ok_or_else(|| ApiError::not_found(format!("no file has the id '{id}'")))
}

/// `GET /v1/files/{id}`.
pub async fn get(id: &str, env: &Env) -> Result<Response, ApiError> {
    let file = file(&database(env)?, id).await?;
    Ok(json_response(&file.object(), 200, None))
}

/// `GET /v1/files?purpose&limit&order&after`.
pub async fn list(request: &Request, env: &Env) -> Result<Response, ApiError> {
    let pairs = query_pairs(request)?;
    let page = ListPage::parse(
        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        FILE_PREFIX,
        true,
    )?;
    let files = rows::<FileRow>(
        &database(env)?,
        &sql::list_files(
            page.after.as_deref(),
            page.limit,
            page.ascending,
            page.purpose.as_deref(),
        ),
    )
    .await
    .map_err(database_error)?;
    let data = files.iter().map(FileRow::object).collect();
    Ok(json_response(
        &list_object(data, page.limit, true),
        200,
        None,
    ))
}

/// `DELETE /v1/files/{id}`.
pub async fn delete(id: &str, env: &Env) -> Result<Response, ApiError> {
    let db = database(env)?;
    file(&db, id).await?;
    run_group(&db, &sql::delete_file(id))
        .await
        .map_err(database_error)?;
    Ok(json_response(
        &json!({ "id": id, "object": "file", "deleted": true }),
        200,
        None,
    ))
}

/// Where the streaming of a file's content is.
enum Cursor {
    /// An input file's parts, after this one (-1 before the first).
    Parts(i64),
    /// A batch's output (`done`) or error (`failed`) lines, after this line.
    Lines {
        batch: String,
        state: &'static str,
        after: u64,
    },
    /// Nothing more.
    End,
}

#[derive(Deserialize)]
struct Part {
    seq: f64,
    data: String,
}

#[derive(Deserialize)]
struct Line {
    line: f64,
    output: String,
}

/// The parts of an input file read at a time (each at most 512 KB).
const PARTS_PER_PAGE: u32 = 2;
/// The lines of an output file read at a time.
const LINES_PER_PAGE: u32 = 200;

/// `GET /v1/files/{id}/content`: streamed page by page, so a file of any size keeps the
/// Worker's memory flat; a client that hangs up stops the reading.
pub async fn content(id: &str, env: &Env) -> Result<Response, ApiError> {
    let db = database(env)?;
    let file = file(&db, id).await?;
    let cursor = match (&file.batch_id, file.kind.as_deref()) {
        (Some(batch), Some(kind)) => Cursor::Lines {
            batch: batch.clone(),
            state: if kind == "error" { "failed" } else { "done" },
            after: 0,
        },
        _ => Cursor::Parts(-1),
    };
    let pages = stream::unfold(
        (db, cursor, id.to_string()),
        |(db, cursor, id)| async move {
            let (chunk, next) = match cursor {
                Cursor::End => return None,
                Cursor::Parts(after) => {
                    match rows::<Part>(&db, &sql::file_parts(&id, after, PARTS_PER_PAGE)).await {
                        Ok(parts) if parts.is_empty() => return None,
                        Ok(parts) => {
                            let last = parts.last().map_or(after, |p| p.seq as i64);
                            (
                                Ok(parts
                                    .into_iter()
                                    .map(|p| p.data)
                                    .collect::<String>()
                                    .into_bytes()),
                                Cursor::Parts(last),
                            )
                        }
                        Err(e) => (Err(e), Cursor::End),
                    }
                }
                Cursor::Lines {
                    batch,
                    state,
                    after,
                } => {
                    match rows::<Line>(
                        &db,
                        &sql::output_lines(&batch, state, after, LINES_PER_PAGE),
                    )
                    .await
                    {
                        Ok(lines) if lines.is_empty() => return None,
                        Ok(lines) => {
                            let last = lines.last().map_or(after, |l| l.line as u64);
                            let text: String = lines.into_iter().map(|l| l.output + "\n").collect();
                            (
                                Ok(text.into_bytes()),
                                Cursor::Lines {
                                    batch,
                                    state,
                                    after: last,
                                },
                            )
                        }
                        Err(e) => (Err(e), Cursor::End),
                    }
                }
            };
            Some((chunk, (db, next, id)))
        },
    );
    let headers = Headers::new();
    let _ = headers.set("content-type", "application/octet-stream");
    let _ = headers.set(
        "content-disposition",
        &format!(
            "attachment; filename=\"{}\"",
            file.filename.replace(['"', '\\', '\r', '\n'], "_")
        ),
    );
    Response::from_stream(pages)
        .map(|r| r.with_headers(headers))
        .map_err(|e| ApiError::new(500, "server_error", "internal_error", e.to_string()))
}

//! The Cloudflare Worker (feature `worker`): an OpenAI-compatible endpoint over the core
//! that stores every answer in D1.
//!
//! A thin adapter, one file per role: [`setup`] (configuration, secrets, the access token,
//! the isolate's provider manager), [`http`] (responses, CORS, request bodies), [`calls`]
//! (the chat and generate endpoints), [`streaming`] (server-sent events), [`responses`]
//! (reading stored rows and provider status), [`export`] (the stored answers as JSONL),
//! [`files`] and [`batches`] (the Batch API),
//! [`queue`] (the batches' work on the queue), [`limiter`] (the shared rate limiter's
//! Durable Object) and [`store`] (running the core's statements on D1). Every
//! decision is the core's: which endpoint a request names ([`Endpoint::resolve`]), reading
//! requests and shaping answers and errors ([`crate::openai_api`]), where a call goes
//! ([`crate::manager::Route`]), what a row holds ([`crate::record`]). Storing happens off
//! the response path, in `ctx.wait_until`.
//!
//! Configuration: the `LLM_CONFIG` var (the npm package's JSON), API keys only from
//! secrets (`LLM_<NAME>_API_KEY`, `OPENAI_API_KEY`, `AZURE_OPENAI_API_KEY`,
//! `CUSTOM_API_KEY`), the access token in the `DISTILLER_TOKEN` secret, the database in the
//! `DB` binding.

mod batches;
mod calls;
mod export;
mod files;
mod http;
mod limiter;
mod queue;
mod responses;
mod setup;
mod store;
mod streaming;

use worker::{event, Context, Env, Request, Response};

use crate::endpoints::Endpoint;
use crate::openai_api::ApiError;

pub use limiter::RateLimiterObject;

#[event(fetch)]
async fn fetch(mut request: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let response = match handle(&mut request, &env, &ctx).await {
        Ok(response) => response,
        Err(error) => http::error_response(&error, None),
    };
    // What the call learnt of the provider's limits reaches the shared limiter after the
    // response (streams deliver theirs when they end, see `streaming`).
    if let Some(manager) = setup::built_manager() {
        ctx.wait_until(async move { manager.flush().await });
    }
    Ok(http::with_cors(response))
}

async fn handle(request: &mut Request, env: &Env, ctx: &Context) -> Result<Response, ApiError> {
    let endpoint = Endpoint::resolve(request.method().as_ref(), &request.path())?;
    if endpoint.needs_token() {
        setup::authorize(request, env)?;
    }
    match endpoint {
        Endpoint::Preflight => Ok(http::preflight(request)),
        Endpoint::Health => Ok(setup::health(env)),
        Endpoint::ChatCompletions => calls::chat_completions(request, env, ctx).await,
        Endpoint::Generate => calls::generate(request, env, ctx).await,
        Endpoint::ListResponses => responses::list(request, env).await,
        Endpoint::GetResponse(id) => responses::get(&id, env).await,
        Endpoint::Providers => responses::providers(env).await,
        Endpoint::CreateFile => files::create(request, env).await,
        Endpoint::ListFiles => files::list(request, env).await,
        Endpoint::GetFile(id) => files::get(&id, env).await,
        Endpoint::FileContent(id) => files::content(&id, env).await,
        Endpoint::DeleteFile(id) => files::delete(&id, env).await,
        Endpoint::CreateBatch => batches::create(request, env).await,
        Endpoint::ListBatches => batches::list(request, env, ctx).await,
        Endpoint::GetBatch(id) => batches::get(&id, env, ctx).await,
        Endpoint::CancelBatch(id) => batches::cancel(&id, env).await,
        Endpoint::Export => export::export(request, env).await,
    }
}

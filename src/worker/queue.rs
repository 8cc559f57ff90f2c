//! The batches' work on Cloudflare Queues: each message runs one line of a batch
//! (claimed, sent along its route through the shared limiter, stored, counted, in the
//! core's statements), the dead-letter queue fails the lines the queue gave up on, and
//! feeding, finalizing and recovering keep every batch moving. The decisions and the SQL
//! are the core's ([`crate::batch`]); this module runs them on D1 and the queue.
//!
//! The queue is `BATCH_QUEUE`; its dead-letter queue has its name and `-dlq`. Delivery is
//! at least once: a message for a line no longer queued (run already, cancelled) is taken
//! and dropped. A run renews its claims every [`CLAIM_RENEW_MS`] while it waits for its
//! turn, and stops the lines of a cancelled batch that are still waiting (they were never
//! sent); the claims of a run that died lapse and [`recover`] queues its lines again.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::pin::pin;
use std::rc::Rc;

use futures_util::future::{join_all, select, Either};
use serde::Deserialize;
use serde_json::Value;
use worker::{
    console_log, console_warn, event, Context, D1Database, Env, MessageBatch, MessageExt, Queue,
    QueueRetryOptionsBuilder, RawMessage,
};

use super::setup::{database, manager, Manager};
use super::store::{first, last_rows, rows, run_group};
use crate::batch::sql::{self, Progress};
use crate::batch::{new_id, QueueMessage, RunEnd, CLAIM_LEASE_MS, CLAIM_RENEW_MS, FILE_PREFIX};
use crate::client::{CallOptions, Gate};
use crate::error::Error;
use crate::openai_api::{parse_chat_request, ApiError};
use crate::record::Arrival;
use crate::runtime::Runtime;
use crate::wasm::WasmRuntime;

/// The producer binding of the batch queue.
pub const BINDING: &str = "BATCH_QUEUE";

/// The batch queue.
pub fn queue(env: &Env) -> Result<Queue, ApiError> {
    env.queue(BINDING).map_err(|_| {
        ApiError::new(
            500,
            "server_error",
            "configuration_error",
            format!("the queue binding {BINDING} is missing from wrangler.toml"),
        )
    })
}

fn now() -> f64 {
    WasmRuntime.now_ms()
}

#[event(queue)]
async fn consume(batch: MessageBatch<Value>, env: Env, _ctx: Context) -> worker::Result<()> {
    let messages: Vec<RawMessage> = batch.raw_iter().collect();
    let (db, queue) = match (database(&env), queue(&env)) {
        (Ok(db), Ok(queue)) => (db, queue),
        (Err(e), _) | (_, Err(e)) => {
            console_warn!("batch work cannot run: {}", e.message);
            batch.retry_all();
            return Ok(());
        }
    };
    if batch.queue().ends_with("-dlq") {
        give_up(&db, &messages).await;
        return Ok(());
    }
    let manager = match manager(&env) {
        Ok(manager) => manager,
        Err(e) => {
            console_warn!("batch work cannot run: {}", e.message);
            batch.retry_all();
            return Ok(());
        }
    };
    let claims: Claims = Rc::default();
    let work = join_all(
        messages
            .iter()
            .map(|m| run_message(&db, &manager, &claims, m)),
    );
    let results = match select(pin!(work), pin!(watch(&db, &claims))).await {
        Either::Left((results, _)) => results,
        // Watching never ends by itself; had it ended, the work goes on alone.
        Either::Right(((), work)) => work.await,
    };
    let mut touched = BTreeSet::new();
    for result in results {
        match result {
            Ok(Some((batch_id, progress))) => {
                finalize_if_finished(&db, &batch_id, progress.as_ref()).await;
                touched.insert(batch_id);
            }
            Ok(None) => {}
            Err(e) => console_warn!("a batch line will be tried again: {e}"),
        }
    }
    for batch_id in touched {
        feed(&db, &queue, &batch_id).await;
    }
    // Let the shared limiter hear of the answers before the invocation ends.
    manager.flush().await;
    console_log!(
        "batch work: {} messages; {} D1 statements sent by isolate {} so far",
        messages.len(),
        super::store::statements_sent(),
        super::store::isolate()
    );
    Ok(())
}

/// A message's body, if it is one of this version's.
fn read(message: &RawMessage) -> Option<QueueMessage> {
    let text = js_sys::JSON::stringify(&message.body()).ok()?.as_string()?;
    QueueMessage::read(&serde_json::from_str::<Value>(&text).ok()?)
}

/// What this invocation runs: the lines by batch and line, with their attempts, and each
/// batch's gate, closed when the batch stops being in progress.
#[derive(Default)]
struct Running {
    lines: BTreeMap<(String, u64), u64>,
    gates: BTreeMap<String, Gate>,
}

type Claims = Rc<RefCell<Running>>;

#[derive(Deserialize)]
struct Claim {
    attempt: f64,
    custom_id: String,
    request: String,
}

/// Runs the line of one message: its batch and the batch's counts when it ended (none when
/// there was nothing to run). The message is taken, or given back for later when the
/// database failed.
async fn run_message(
    db: &D1Database,
    manager: &Manager,
    claims: &Claims,
    message: &RawMessage,
) -> worker::Result<Option<(String, Option<Progress>)>> {
    let Some(QueueMessage { batch, line, .. }) = read(message) else {
        console_warn!("a message that is not a batch line was dropped");
        message.ack();
        return Ok(None);
    };
    let outcome = run_line(db, manager, claims, &batch, line).await;
    match &outcome {
        Ok(_) => message.ack(),
        // After the lease: a new delivery may then take the line over.
        Err(_) => message.retry_with_options(
            &QueueRetryOptionsBuilder::new()
                .with_delay_seconds((CLAIM_LEASE_MS / 1000.0) as u32 + 5)
                .build(),
        ),
    }
    outcome.map(|progress| progress.map(|p| (batch, p)))
}

/// Claims, runs and keeps line `line` of `batch`: `None` when there was nothing to run, else
/// the batch's counts when this run counted.
async fn run_line(
    db: &D1Database,
    manager: &Manager,
    claims: &Claims,
    batch: &str,
    line: u64,
) -> worker::Result<Option<Option<Progress>>> {
    let Some(claim) = first::<Claim>(db, &sql::claim(batch, line, now())).await? else {
        return Ok(None);
    };
    let attempt = claim.attempt as u64;
    let key = (batch.to_string(), line);
    let gate = {
        let mut running = claims.borrow_mut();
        running.lines.insert(key.clone(), attempt);
        running.gates.entry(batch.to_string()).or_default().clone()
    };
    let options = CallOptions {
        gate: Some(gate),
        ..CallOptions::default()
    };
    let ended = match parse_chat_request(claim.request.as_bytes(), None) {
        Ok(chat) => {
            let call = chat.call;
            let arrival = Arrival::now(&WasmRuntime);
            let result = manager
                .generate(&call.prompt, &call.config, &call.route, &options)
                .await;
            match result {
                // The batch was cancelled while the line waited for its turn: never sent.
                Err(Error::Aborted) => None,
                result => {
                    let attribution = match &result {
                        Ok(_) => (String::new(), String::new()),
                        Err(error) => manager.attribution(&call.route, &call.config, error),
                    };
                    Some(RunEnd::new(
                        batch,
                        line,
                        &claim.custom_id,
                        &arrival,
                        &call,
                        &result,
                        attribution,
                    ))
                }
            }
        }
        Err(refused) => Some(RunEnd::refused(batch, line, &claim.custom_id, &refused)),
    };
    claims.borrow_mut().lines.remove(&key);
    let group = match ended {
        Some(end) => end.finish(batch, line, attempt, now()),
        None => sql::cancel_line(batch, line, attempt),
    };
    let results = run_group(db, &group).await?;
    Ok(Some(last_rows::<Progress>(&results)?.into_iter().next()))
}

/// How often a run looks whether its batches are still in progress: a line waiting for its
/// turn stops within this long of a cancel.
const WATCH_MS: f64 = 2_000.0;

/// Watches the lines under way for as long as the invocation runs (it never ends by
/// itself): closes the gate of a batch no longer in progress, so that its lines still
/// waiting for their turn stop unsent, and renews the claims every [`CLAIM_RENEW_MS`].
async fn watch(db: &D1Database, claims: &Claims) {
    let mut since_renewal = 0.0;
    loop {
        WasmRuntime.sleep(WATCH_MS).await;
        since_renewal += WATCH_MS;
        let mut by_batch: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
        for ((batch, line), attempt) in claims.borrow().lines.iter() {
            by_batch
                .entry(batch.clone())
                .or_default()
                .push((*line, *attempt));
        }
        for (batch, lines) in &by_batch {
            match first::<Progress>(db, &sql::progress(batch)).await {
                Ok(Some(progress)) if progress.status != "in_progress" => {
                    if let Some(gate) = claims.borrow().gates.get(batch) {
                        gate.close();
                    }
                }
                Ok(_) => {}
                Err(e) => console_warn!("batch {batch} not watched: {e}"),
            }
            if since_renewal >= CLAIM_RENEW_MS {
                if let Err(e) = run_group(db, &sql::keep_claims(batch, lines, now())).await {
                    console_warn!("claims of batch {batch} not renewed: {e}");
                }
            }
        }
        if since_renewal >= CLAIM_RENEW_MS {
            since_renewal = 0.0;
        }
    }
}

/// The lines of messages the queue gave up on: failed, counted, and their batches
/// finalized when that was their last.
async fn give_up(db: &D1Database, messages: &[RawMessage]) {
    for message in messages {
        let Some(QueueMessage { batch, line, .. }) = read(message) else {
            message.ack();
            continue;
        };
        match give_up_line(db, &batch, line).await {
            Ok(()) => message.ack(),
            Err(e) => {
                console_warn!("a dead letter will be tried again: {e}");
                message.retry();
            }
        }
    }
}

async fn give_up_line(db: &D1Database, batch: &str, line: u64) -> worker::Result<()> {
    #[derive(Deserialize)]
    struct Row {
        custom_id: String,
    }
    let Some(row) = first::<Row>(db, &sql::custom_id(batch, line)).await? else {
        return Ok(());
    };
    let error = ApiError::new(
        500,
        "server_error",
        "delivery_failed",
        "the batch queue gave up on this request after its retries",
    );
    let output = crate::batch::error_line(batch, line, &row.custom_id, None, &error);
    let results = run_group(db, &sql::give_up(batch, line, &output, now())).await?;
    let progress = last_rows::<Progress>(&results)?.into_iter().next();
    finalize_if_finished(db, batch, progress.as_ref()).await;
    Ok(())
}

/// Finalizes `batch` when `progress` says every line has ended.
pub async fn finalize_if_finished(db: &D1Database, batch: &str, progress: Option<&Progress>) {
    if !progress.is_some_and(Progress::finished) {
        return;
    }
    let runtime = WasmRuntime;
    let now_ms = runtime.now_ms();
    let file_id = || new_id(FILE_PREFIX, now_ms, runtime.random(), runtime.random());
    let (output, error) = (file_id(), file_id());
    if let Err(e) = run_group(
        db,
        &sql::finalize(batch, &output, &error, (now_ms / 1000.0).floor()),
    )
    .await
    {
        console_warn!("batch {batch} not finalized yet: {e}");
    }
}

/// Queues the next lines of `batch` and sends their messages.
pub async fn feed(db: &D1Database, queue: &Queue, batch: &str) {
    match rows::<LineRow>(db, &sql::feed(batch, now())).await {
        Ok(lines) => send(queue, batch, lines.iter().map(|l| l.line as u64)).await,
        Err(e) => console_warn!("batch {batch} not fed: {e}"),
    }
}

#[derive(Deserialize)]
struct LineRow {
    line: f64,
}

/// Sends a message for each of `lines` of `batch`, a hundred at a time. A send that fails
/// leaves its lines queued: [`recover`] sends them again later.
async fn send(queue: &Queue, batch: &str, lines: impl Iterator<Item = u64>) {
    let messages: Vec<QueueMessage> = lines.map(|line| QueueMessage::new(batch, line)).collect();
    for chunk in messages.chunks(100) {
        if let Err(e) = queue.send_batch(chunk.to_vec()).await {
            console_warn!("messages of batch {batch} not sent yet: {e}");
        }
    }
}

/// Keeps `batch` moving whatever happened to its messages and runs: expires it when its
/// window is over, queues again the lines whose runs died, sends again the messages not
/// taken, feeds it, and finalizes it when it has ended. Cheap when all is well; run when a
/// client looks at the batch.
pub async fn recover(db: &D1Database, queue: &Queue, batch: &str) {
    if let Err(e) = recover_lines(db, queue, batch, now()).await {
        console_warn!("batch {batch} not recovered yet: {e}");
    }
    feed(db, queue, batch).await;
}

async fn recover_lines(
    db: &D1Database,
    queue: &Queue,
    batch: &str,
    now_ms: f64,
) -> worker::Result<()> {
    let expired = run_group(db, &sql::expire(batch, (now_ms / 1000.0).floor())).await?;
    let progress = last_rows::<Progress>(&expired)?.into_iter().next();
    finalize_if_finished(db, batch, progress.as_ref()).await;
    super::store::prepare(db, &sql::recover(batch, now_ms))?
        .run()
        .await?;
    let lines = rows::<LineRow>(db, &sql::requeue(batch, now_ms)).await?;
    send(queue, batch, lines.iter().map(|l| l.line as u64)).await;
    Ok(())
}

/// [`recover`] for every batch in progress (the oldest ten).
pub async fn recover_all(db: &D1Database, queue: &Queue) {
    #[derive(Deserialize)]
    struct Id {
        id: String,
    }
    match rows::<Id>(db, &sql::active_batches(10)).await {
        Ok(batches) => {
            for batch in batches {
                recover(db, queue, &batch.id).await;
            }
        }
        Err(e) => console_warn!("batches not recovered yet: {e}"),
    }
}

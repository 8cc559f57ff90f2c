//! One rate limit across every isolate: a provider's [`RateLimiter`] kept in one place (the
//! Worker's Durable Object), and the budget each isolate draws on it through.
//!
//! Cloudflare runs a Worker in many isolates at once; each with its own limiter would
//! spend the provider's budget once per isolate. Here the limiter lives in one object per
//! provider identity ([`crate::provider::Provider::identity`], never a key):
//!
//! - [`LimiterObject`] is what the object runs: the core's [`RateLimiter`] unchanged, fed
//!   versioned JSON messages, its whole state a snapshot the object keeps in storage,
//!   written within [`STORE_WITHIN_MS`] of a change: eviction (which waits for the write)
//!   loses no accounting, a crash at most that last moment's. A reservation whose caller never
//!   settles it (an isolate that died) is settled with its estimate after
//!   [`ABANDONED_AFTER_MS`].
//! - [`RemoteBudget`] is an isolate's [`Budget`] on that object: a reservation is one round
//!   trip (the object answers how long to wait); observations, reconciliations and
//!   cancellations queue up and travel with the isolate's next round trip, or with
//!   [`Budget::flush`], which the Worker runs after each response (`wait_until`) and which
//!   leaves them [`FLUSH_AFTER_MS`] to another call's reservation first.
//! - An isolate that is busy reserves ahead: after a response, [`Budget::flush`] also asks
//!   for as many permits as its calls of the last [`AHEAD_TTL_MS`] used (at most
//!   [`SharedLimit::reserve_ahead`], and a hundredth of the budget), once half of those it
//!   holds are used, and a call that finds one ready is sent without a round trip of its
//!   own. Only permits the object grants at once are kept, and only for
//!   [`AHEAD_TTL_MS`] (less than the object's arrival slack, so that a permit used late
//!   costs the provider's bucket nothing the slack does not cover); one not used by then
//!   is given back. A limiter that makes calls wait is not reserved ahead of. Concurrent
//!   flushes count the permits being asked for as held, so together they ask for no more.
//!   A permit used late goes out after reservations made after it: its answer's figures of
//!   what remains are not passed on (they count some of those already), and the object
//!   reads every server figure as missing the open permits reserved ahead before it.
//! - When the object cannot be reached in [`SharedLimit::timeout_ms`], or answers badly,
//!   the isolate answers from a limiter of its own at [`SharedLimit::fallback_share`] of
//!   the budget, says so in its status, and tries the object again after
//!   [`SharedLimit::retry_after_ms`]. Never a panic, never an unbounded wait. Messages it
//!   could not deliver are kept (at most [`MAX_UNDELIVERED`]) for when the object is back;
//!   one that may have arrived (a round trip that timed out) is not sent again, so nothing
//!   is ever counted twice: the object's abandoned-reservation sweep settles it instead.
//!
//! Messages are versioned ([`PROTOCOL`]): an object answers only versions it knows, and
//! reads each operation on its own, so that old and new code coexist during a deploy (an
//! operation it does not know gets an `unknown` outcome, the rest are carried out).
//! Everything here is pure: the object's transport ([`ObjectLink`]) and the clock are
//! passed in.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::budget::{Answer, Budget, BudgetStatus, SharedMode, SharedStatus};
use crate::error::{Error, Number, Result};
use crate::http::Headers;
use crate::rate_limit::{
    is_remaining_figure, rate_limit_headers, RateLimitStatus, RateLimiter, RateLimits, Reservation,
};
use crate::runtime::{with_timeout, Runtime, TransportError};

/// The version of the messages this code speaks.
pub const PROTOCOL: u32 = 1;

/// A reservation its caller has neither reconciled nor cancelled after this long is taken
/// as abandoned (the isolate went away) and reconciled with its estimate: 15 minutes,
/// longer than any call waits and runs.
pub const ABANDONED_AFTER_MS: f64 = 15.0 * 60_000.0;

/// The arrival slack of the shared limiter (see [`RateLimiter::with_arrival_slack`]): its
/// callers reach the provider from isolates elsewhere, after their start by delays that
/// vary more than one process's. Measured with two `wrangler dev` processes at 240
/// requests per minute (tests/worker/shared-limit.test.mjs): without a slack, a request
/// now and then found the provider's bucket short by about 12 ms' refill; with 100 ms,
/// on a machine busy with other work, by about 100 ms' more. 300 ms shifts a run's
/// schedule once by that much (1% of the test's 30 s) and leaves a third to spare.
pub const ARRIVAL_SLACK_MS: f64 = 300.0;

/// How long [`RemoteBudget::flush`] leaves what waits for a round trip to carry (another
/// call's, or the one that reserves ahead), before it makes one of its own: under load,
/// observations and reconciliations cost no round trip of their own, and an isolate makes
/// at most five a second for them. A 429 goes at once: the other isolates should pause too.
pub const FLUSH_AFTER_MS: f64 = 200.0;

/// The most messages an isolate keeps for a shared limiter it cannot reach; beyond, the
/// oldest are dropped (and the object's sweep settles their reservations).
pub const MAX_UNDELIVERED: usize = 512;

/// How soon the object writes its state after a change, in milliseconds: the changes of
/// that time go in one write. A write per change, each holding its answer until storage
/// confirms it, cost every reservation a write's latency and CPU (measured locally: a
/// round trip of 8 ms instead of 3); this costs a crash at most the accounting of the last
/// 100 ms, which the provider's own headers and 429s then correct.
pub const STORE_WITHIN_MS: f64 = 100.0;

/// How long a permit reserved ahead of a call stays usable, and the window of recent calls
/// that sizes how many are reserved: 200 ms, within [`ARRIVAL_SLACK_MS`].
pub const AHEAD_TTL_MS: f64 = 200.0;

/// The most permits [`SharedLimit::reserve_ahead`] may ask for.
pub const MAX_RESERVE_AHEAD: u32 = 64;

/// Reservations an isolate makes from its own fallback limiter get ids from here on, so
/// that they are never mistaken for the object's (which count up from 0, one per call:
/// 2^52 is a call a microsecond for 142 years).
const FALLBACK_IDS: u64 = 1 << 52;

/// How an isolate uses a provider's shared limiter (`shared_limit` in a provider's
/// configuration; only the Worker has one).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct SharedLimit {
    /// The share of the budget an isolate spends on its own while the shared limiter
    /// cannot be reached, more than 0 and at most 1 (default 0.5). Isolates that fall back
    /// together may spend up to this share each: the provider's 429s and the retries then
    /// take over.
    pub fallback_share: f64,
    /// How long a round trip to the shared limiter may take, in milliseconds (default
    /// 1,000).
    pub timeout_ms: f64,
    /// How long an isolate answers from its own limiter before it tries the shared one
    /// again, in milliseconds (default 10,000).
    pub retry_after_ms: f64,
    /// The most permits an isolate reserves ahead of its calls, so that a call is sent
    /// without waiting for a round trip (default 16, at most 64; never more than a
    /// hundredth of the budget per minute; 0: every call makes its own). See the module
    /// docs.
    pub reserve_ahead: u32,
}

impl Default for SharedLimit {
    fn default() -> Self {
        SharedLimit {
            fallback_share: 0.5,
            timeout_ms: 1_000.0,
            retry_after_ms: 10_000.0,
            reserve_ahead: 16,
        }
    }
}

impl SharedLimit {
    /// Checks the ranges; `path` names the field (`providers.main.shared_limit`).
    pub fn validate(&self, path: &str) -> Result<()> {
        if !(self.fallback_share > 0.0 && self.fallback_share <= 1.0) {
            return Err(Error::config(
                format!("{path}.fallback_share"),
                format!(
                    "must be more than 0 and at most 1, got {}",
                    Number(self.fallback_share)
                ),
            ));
        }
        for (field, value) in [
            ("timeout_ms", self.timeout_ms),
            ("retry_after_ms", self.retry_after_ms),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(Error::config(
                    format!("{path}.{field}"),
                    format!(
                        "must be a positive number of milliseconds, got {}",
                        Number(value)
                    ),
                ));
            }
        }
        if self.reserve_ahead > MAX_RESERVE_AHEAD {
            return Err(Error::config(
                format!("{path}.reserve_ahead"),
                format!(
                    "must be at most {MAX_RESERVE_AHEAD}, got {}",
                    self.reserve_ahead
                ),
            ));
        }
        Ok(())
    }

    /// `limits` at the fallback's share, each limit at least 1.
    fn share_of(&self, limits: RateLimits) -> RateLimits {
        let share = |limit: u32| ((f64::from(limit) * self.fallback_share).floor() as u32).max(1);
        RateLimits {
            requests_per_minute: share(limits.requests_per_minute),
            tokens_per_minute: share(limits.tokens_per_minute),
            requests_refill: limits.requests_refill,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The messages

/// One operation on the limiter, as it travels: an object tagged by `op`. (Read through
/// [`OpFields`]: serde's tagged enums buffer every value before reading it, which cost the
/// object most of its time per message.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", try_from = "OpFields")]
pub enum Op {
    /// [`RateLimiter::reserve`].
    Reserve {
        /// The estimated tokens.
        tokens: u32,
        /// Whether it is reserved ahead of a call: it may go out after reservations made
        /// later (see [`LimiterObject`]'s observations).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ahead: bool,
    },
    /// [`RateLimiter::blocked_for`].
    BlockedFor {
        /// The reservation asked about.
        reservation: Reservation,
    },
    /// [`RateLimiter::observe`], with the headers the limiter reads.
    Observe {
        /// The reservation the answer is to.
        reservation: Reservation,
        /// The answer's status.
        status: u16,
        /// Its rate-limit and retry headers.
        headers: Vec<(String, String)>,
    },
    /// [`RateLimiter::reconcile`].
    Reconcile {
        /// The reservation settled.
        reservation: Reservation,
        /// What the server charged, when known.
        tokens: Option<u32>,
    },
    /// [`RateLimiter::cancel`].
    Cancel {
        /// The reservation given back.
        reservation: Reservation,
    },
    /// [`RateLimiter::status`].
    Status,
}

impl Op {
    /// Whether the object should hear of it at once: a 429, which pauses every isolate.
    fn is_urgent(&self) -> bool {
        matches!(self, Op::Observe { status: 429, .. })
    }
}

/// What came of one operation: an object tagged by `outcome` (read through
/// [`OutcomeFields`], as [`Op`] is).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", try_from = "OutcomeFields")]
pub enum Outcome {
    /// A reservation.
    Reserved {
        /// It.
        reservation: Reservation,
    },
    /// How much longer a server signal holds a reservation (`None`: go).
    Blocked {
        /// The wait, in milliseconds.
        wait_ms: Option<f64>,
    },
    /// Carried out.
    Done,
    /// The limiter's state.
    Status {
        /// It.
        status: RateLimitStatus,
    },
    /// An operation this object does not know (newer code sent it).
    Unknown {
        /// Why it was not read.
        message: String,
    },
}

/// Every field an [`Op`] may have, read flat; its `op` says which it is.
#[derive(Deserialize)]
struct OpFields {
    op: String,
    tokens: Option<u32>,
    ahead: Option<bool>,
    reservation: Option<Reservation>,
    status: Option<u16>,
    headers: Option<Vec<(String, String)>>,
}

impl TryFrom<OpFields> for Op {
    type Error = String;

    fn try_from(fields: OpFields) -> std::result::Result<Op, String> {
        let missing = |field: &str| format!("operation `{}` lacks `{field}`", fields.op);
        let reservation = || fields.reservation.ok_or_else(|| missing("reservation"));
        Ok(match fields.op.as_str() {
            "reserve" => Op::Reserve {
                tokens: fields.tokens.ok_or_else(|| missing("tokens"))?,
                ahead: fields.ahead.unwrap_or(false),
            },
            "blocked_for" => Op::BlockedFor {
                reservation: reservation()?,
            },
            "observe" => Op::Observe {
                reservation: reservation()?,
                status: fields.status.ok_or_else(|| missing("status"))?,
                headers: fields.headers.clone().ok_or_else(|| missing("headers"))?,
            },
            "reconcile" => Op::Reconcile {
                reservation: reservation()?,
                tokens: fields.tokens,
            },
            "cancel" => Op::Cancel {
                reservation: reservation()?,
            },
            "status" => Op::Status,
            other => return Err(format!("unknown operation `{other}`")),
        })
    }
}

/// Every field an [`Outcome`] may have, read flat; its `outcome` says which it is.
#[derive(Deserialize)]
struct OutcomeFields {
    outcome: String,
    reservation: Option<Reservation>,
    wait_ms: Option<f64>,
    status: Option<RateLimitStatus>,
    message: Option<String>,
}

impl TryFrom<OutcomeFields> for Outcome {
    type Error = String;

    fn try_from(fields: OutcomeFields) -> std::result::Result<Outcome, String> {
        let missing = |field: &str| format!("outcome `{}` lacks `{field}`", fields.outcome);
        Ok(match fields.outcome.as_str() {
            "reserved" => Outcome::Reserved {
                reservation: fields.reservation.ok_or_else(|| missing("reservation"))?,
            },
            "blocked" => Outcome::Blocked {
                wait_ms: fields.wait_ms,
            },
            "done" => Outcome::Done,
            "status" => Outcome::Status {
                status: fields.status.ok_or_else(|| missing("status"))?,
            },
            "unknown" => Outcome::Unknown {
                message: fields.message.unwrap_or_default(),
            },
            other => return Err(format!("unknown outcome `{other}`")),
        })
    }
}

/// A message to the object: who asks (the budget, so that a configuration change reaches
/// the object), and what to do, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// [`PROTOCOL`].
    pub v: u32,
    /// The caller's configured budget.
    pub limits: RateLimits,
    /// The operations, each read on its own.
    pub ops: Vec<Value>,
}

/// The object's answer: one outcome per operation, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// [`PROTOCOL`].
    pub v: u32,
    /// The outcomes.
    #[serde(default)]
    pub outcomes: Vec<Outcome>,
    /// Why the message was refused as a whole (with a 400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

// ---------------------------------------------------------------------------------------
// The object's side

/// A reservation handed out and not settled yet.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Open {
    reservation: Reservation,
    since_ms: f64,
    /// Reserved ahead of a call (see [`Op::Reserve`]).
    #[serde(default)]
    ahead: bool,
}

/// What the shared limiter's object runs (see the module docs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LimiterObject {
    /// The snapshot format's version (see [`LimiterObject::restore`]).
    v: u32,
    limiter: RateLimiter,
    /// Reservations not yet settled, by id (ids ascend with time).
    open: BTreeMap<u64, Open>,
}

impl LimiterObject {
    /// A fresh limiter of `limits`, its buckets full.
    pub fn new(limits: RateLimits) -> Self {
        LimiterObject {
            v: PROTOCOL,
            limiter: RateLimiter::new(limits).with_arrival_slack(ARRIVAL_SLACK_MS),
            open: BTreeMap::new(),
        }
    }

    /// The object as a snapshot left it; `None` for a snapshot that does not read (another
    /// version's, or damaged), in which case the object starts afresh. Its fractional
    /// numbers (bucket levels, times) come back within about an ulp of what was written:
    /// serde_json's float reading is not exact (the exact one would bring core's float
    /// parser into the package), which is far less than a request or a token.
    pub fn restore(snapshot: &str) -> Option<Self> {
        serde_json::from_str::<LimiterObject>(snapshot)
            .ok()
            .filter(|o| o.v == PROTOCOL)
    }

    /// The whole state, for storage.
    pub fn snapshot(&self) -> String {
        // Plain data of numbers: serializing it cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reservations handed out and not settled yet.
    pub fn open(&self) -> usize {
        self.open.len()
    }

    /// Handles one message at `now_ms` for the object in `slot`, made by the message (full,
    /// of the message's limits) if there is none yet: the answer, and whether the state
    /// changed (and should be stored). Never panics, whatever `body`.
    pub fn handle(slot: &mut Option<LimiterObject>, now_ms: f64, body: &[u8]) -> Handled {
        let message = match serde_json::from_slice::<Message>(body) {
            Ok(message) => message,
            Err(e) => return refuse(format!("the message does not read: {e}")),
        };
        if message.v != PROTOCOL {
            return refuse(format!(
                "protocol version {} is not this object's ({PROTOCOL})",
                message.v
            ));
        }
        let mut changed = slot.is_none();
        let object = slot.get_or_insert_with(|| LimiterObject::new(message.limits));
        changed |= object.sweep(now_ms);
        if object.limiter.limits() != message.limits {
            object.limiter.reconfigure(now_ms, message.limits);
            changed = true;
        }
        let outcomes = message
            .ops
            .into_iter()
            .map(|op| match serde_json::from_value::<Op>(op) {
                Ok(op) => {
                    changed |= !matches!(op, Op::Status | Op::BlockedFor { .. });
                    object.apply(now_ms, op)
                }
                Err(e) => Outcome::Unknown {
                    message: e.to_string(),
                },
            })
            .collect();
        let reply = Reply {
            v: PROTOCOL,
            outcomes,
            error: None,
        };
        Handled {
            status: 200,
            body: serde_json::to_string(&reply).unwrap_or_default(),
            changed,
        }
    }

    fn apply(&mut self, now: f64, op: Op) -> Outcome {
        let limiter = &mut self.limiter;
        match op {
            Op::Reserve { tokens, ahead } => {
                let reservation = limiter.reserve(now, tokens);
                self.open.insert(
                    reservation.id,
                    Open {
                        reservation,
                        since_ms: now,
                        ahead,
                    },
                );
                Outcome::Reserved { reservation }
            }
            Op::BlockedFor { reservation } => Outcome::Blocked {
                wait_ms: limiter.blocked_for(&reservation, now),
            },
            Op::Observe {
                reservation,
                status,
                headers,
            } => {
                let headers: Headers = headers.into_iter().collect();
                let counted = Self::counted_through(&self.open, reservation);
                limiter.observe(now, &headers, status, Some(&counted));
                Outcome::Done
            }
            // A reservation settles once: one not open (settled already, or swept as
            // abandoned) is not counted again.
            Op::Reconcile {
                reservation,
                tokens,
            } => {
                if self.open.remove(&reservation.id).is_some() {
                    limiter.reconcile(&reservation, tokens);
                }
                Outcome::Done
            }
            Op::Cancel { reservation } => {
                if self.open.remove(&reservation.id).is_some() {
                    limiter.cancel(&reservation);
                }
                Outcome::Done
            }
            Op::Status => Outcome::Status {
                status: limiter.status(now),
            },
        }
    }

    /// What a server had counted when `answered` reached it, as the limiter reads a
    /// reservation in [`RateLimiter::observe`]: every reservation made before it, except
    /// those reserved ahead of calls and still open, which may have gone out after it. The
    /// limiter counts the reservations after the one it is given as not yet seen by the
    /// server, so the answered one is moved back in the order by those permits (their number
    /// and tokens): the server's figure is then read as missing them too, which is safe when
    /// some had in fact arrived (the limiter spends a little less than it could).
    fn counted_through(open: &BTreeMap<u64, Open>, answered: Reservation) -> Reservation {
        let (count, tokens) = open
            .range(..answered.id)
            .filter(|(_, open)| open.ahead)
            .fold((0u64, 0u64), |(count, tokens), (_, open)| {
                (count + 1, tokens + u64::from(open.reservation.tokens))
            });
        Reservation {
            id: answered.id.wrapping_sub(count),
            reserved_through: answered.reserved_through.saturating_sub(tokens),
            ..answered
        }
    }

    /// Settles, with their estimates, the reservations open longer than
    /// [`ABANDONED_AFTER_MS`]; whether there were any.
    fn sweep(&mut self, now: f64) -> bool {
        let mut swept = false;
        while let Some(entry) = self.open.first_entry() {
            if entry.get().since_ms + ABANDONED_AFTER_MS > now {
                break;
            }
            let open = entry.remove();
            self.limiter.reconcile(&open.reservation, None);
            swept = true;
        }
        swept
    }
}

/// The object's answer to one message.
#[derive(Clone, Debug, PartialEq)]
pub struct Handled {
    /// The HTTP status: 200, or 400 for a message refused as a whole.
    pub status: u16,
    /// The [`Reply`] as JSON.
    pub body: String,
    /// Whether the object's state changed, and should be stored.
    pub changed: bool,
}

fn refuse(error: String) -> Handled {
    let reply = Reply {
        v: PROTOCOL,
        outcomes: Vec::new(),
        error: Some(error),
    };
    Handled {
        status: 400,
        body: serde_json::to_string(&reply).unwrap_or_default(),
        changed: false,
    }
}

// ---------------------------------------------------------------------------------------
// An isolate's side

/// The way to the object: one message there, its answer back.
pub trait ObjectLink {
    /// Sends `body` (a [`Message`]); the answer's status and body.
    fn send(&self, body: String)
        -> Answer<'_, std::result::Result<(u16, Vec<u8>), TransportError>>;
}

/// Why the object is not used, and until when.
#[derive(Clone, Debug)]
struct Down {
    reason: String,
    since_ms: f64,
    retry_at_ms: f64,
}

/// A permit reserved ahead of a call: granted at once by the object at `made_ms`.
#[derive(Clone, Copy, Debug)]
struct Ahead {
    reservation: Reservation,
    made_ms: f64,
}

/// An isolate's [`Budget`] on the shared limiter (see the module docs).
pub struct RemoteBudget<R: Runtime, L: ObjectLink> {
    object: String,
    limits: RateLimits,
    settings: SharedLimit,
    runtime: Rc<R>,
    link: L,
    /// Operations to deliver with the next round trip, oldest first.
    undelivered: RefCell<VecDeque<Op>>,
    /// Permits reserved ahead of calls, oldest first.
    ahead: RefCell<VecDeque<Ahead>>,
    /// Permits ahead asked for and not answered yet: concurrent flushes count them as held,
    /// or each would ask for the whole target.
    asking_ahead: Cell<usize>,
    /// The permits reserved ahead that calls took and have not settled.
    taken_ahead: RefCell<BTreeSet<u64>>,
    /// When the recent calls asked for a permit (the last [`AHEAD_TTL_MS`]).
    recent: RefCell<VecDeque<f64>>,
    /// Whether the last reservation had to wait: then nothing is reserved ahead.
    waiting: Cell<bool>,
    /// The largest token estimate of the recent calls: what a permit ahead holds.
    estimate: Cell<u32>,
    /// The limiter answering while the object cannot be reached.
    fallback: RefCell<RateLimiter>,
    down: RefCell<Option<Down>>,
}

impl<R: Runtime, L: ObjectLink> RemoteBudget<R, L> {
    /// The budget of `limits` on the object named `object` (the provider's identity),
    /// reached through `link`.
    pub fn new(
        object: String,
        limits: RateLimits,
        settings: SharedLimit,
        runtime: Rc<R>,
        link: L,
    ) -> Self {
        RemoteBudget {
            object,
            limits,
            settings,
            fallback: RefCell::new(RateLimiter::new(settings.share_of(limits))),
            runtime,
            link,
            undelivered: RefCell::new(VecDeque::new()),
            ahead: RefCell::new(VecDeque::new()),
            asking_ahead: Cell::new(0),
            taken_ahead: RefCell::new(BTreeSet::new()),
            recent: RefCell::new(VecDeque::new()),
            waiting: Cell::new(false),
            estimate: Cell::new(0),
            down: RefCell::new(None),
        }
    }

    fn now(&self) -> f64 {
        self.runtime.now_ms()
    }

    /// Whether the object is not to be asked now (it failed, and it is not time to retry).
    fn resting(&self) -> bool {
        let now = self.now();
        self.down
            .borrow()
            .as_ref()
            .is_some_and(|d| now < d.retry_at_ms)
    }

    fn fall_back(&self, reason: String) {
        let now = self.now();
        let since_ms = match &*self.down.borrow() {
            Some(down) => down.since_ms,
            None => now,
        };
        *self.down.borrow_mut() = Some(Down {
            reason,
            since_ms,
            retry_at_ms: now + self.settings.retry_after_ms,
        });
    }

    /// Queues `op` for the next round trip, keeping at most [`MAX_UNDELIVERED`].
    fn queue(&self, op: Op) {
        let mut queue = self.undelivered.borrow_mut();
        if queue.len() == MAX_UNDELIVERED {
            queue.pop_front();
        }
        queue.push_back(op);
    }

    /// One round trip: what is queued, then `asked`. The outcomes of `asked`, in order, or
    /// why the object could not answer (the object is then resting). Queued operations that
    /// may have arrived are not queued again.
    ///
    /// Each call makes its own round trip and waits for nothing but its own answer: in a
    /// Worker, a call woken by another request's work would run in that request's context
    /// (the runtime takes a call that waits on no I/O of its own for hung).
    async fn round_trip(&self, asked: Vec<Op>) -> std::result::Result<Vec<Outcome>, String> {
        let mut ops: Vec<Op> = self.undelivered.borrow_mut().drain(..).collect();
        let delivered = ops.len();
        ops.extend(asked);
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let count = ops.len();
        let message = Message {
            v: PROTOCOL,
            limits: self.limits,
            ops: ops
                .into_iter()
                .map(|op| serde_json::to_value(op).unwrap_or(Value::Null))
                .collect(),
        };
        let body = serde_json::to_string(&message).unwrap_or_default();
        let timeout = self.settings.timeout_ms;
        let answer = with_timeout(&*self.runtime, timeout, self.link.send(body)).await;
        let outcome = match answer {
            None => Err(format!(
                "the shared limiter did not answer within {} ms",
                Number(timeout)
            )),
            Some(Err(e)) => Err(format!("the shared limiter could not be reached: {}", e.0)),
            Some(Ok((status, body))) => read_reply(status, &body, count),
        };
        match outcome {
            Ok(outcomes) => {
                *self.down.borrow_mut() = None;
                Ok(outcomes.into_iter().skip(delivered).collect())
            }
            Err(reason) => {
                self.fall_back(reason.clone());
                Err(reason)
            }
        }
    }

    /// Asks one operation: its outcome, or why the object could not answer.
    async fn ask(&self, op: Op) -> std::result::Result<Outcome, String> {
        self.round_trip(vec![op])
            .await?
            .pop()
            .ok_or_else(|| "no outcome".to_string())
    }

    fn is_fallback(reservation: &Reservation) -> bool {
        reservation.id >= FALLBACK_IDS
    }

    /// `reservation` as the fallback limiter numbered it.
    fn local(reservation: &Reservation) -> Reservation {
        Reservation {
            id: reservation.id - FALLBACK_IDS,
            ..*reservation
        }
    }

    fn reserve_locally(&self, tokens: u32) -> Reservation {
        let now = self.now();
        let reservation = self.fallback.borrow_mut().reserve(now, tokens);
        Reservation {
            id: reservation.id.saturating_add(FALLBACK_IDS),
            ..reservation
        }
    }

    /// Notes a call that asks for `tokens` at `now`, for what is reserved ahead.
    fn note_call(&self, now: f64, tokens: u32) {
        let mut recent = self.recent.borrow_mut();
        while recent.front().is_some_and(|at| at + AHEAD_TTL_MS <= now) {
            recent.pop_front();
        }
        if recent.is_empty() {
            self.estimate.set(0);
        }
        recent.push_back(now);
        self.estimate.set(self.estimate.get().max(tokens));
    }

    /// Gives back the permits ahead that are too old to use (with the next round trip).
    fn expire_ahead(&self, now: f64) {
        let expired: Vec<Ahead> = {
            let mut ahead = self.ahead.borrow_mut();
            let keep = ahead
                .iter()
                .position(|a| a.made_ms + AHEAD_TTL_MS > now)
                .unwrap_or(ahead.len());
            ahead.drain(..keep).collect()
        };
        for gone in expired {
            self.queue(Op::Cancel {
                reservation: gone.reservation,
            });
        }
    }

    /// A permit reserved ahead that holds `tokens`, as of `now`.
    fn take_ahead(&self, now: f64, tokens: u32) -> Option<Reservation> {
        self.expire_ahead(now);
        let mut ahead = self.ahead.borrow_mut();
        let at = ahead.iter().position(|a| a.reservation.tokens >= tokens)?;
        let taken = ahead.remove(at)?;
        let reservation = taken.reservation;
        self.taken_ahead.borrow_mut().insert(reservation.id);
        Some(Reservation {
            wait_ms: (reservation.start_at_ms - now).max(0.0),
            ..reservation
        })
    }

    /// How many more permits to reserve ahead: as many as the calls of the last
    /// [`AHEAD_TTL_MS`] (at most [`SharedLimit::reserve_ahead`]), less those held, once at
    /// most half of that is held (so that one round trip brings several); none while
    /// reservations wait.
    fn wanted_ahead(&self, now: f64) -> usize {
        if self.waiting.get() || self.resting() {
            return 0;
        }
        let recent = self
            .recent
            .borrow()
            .iter()
            .filter(|at| **at + AHEAD_TTL_MS > now)
            .count();
        let target = recent.min(self.most_ahead());
        let held = self.ahead.borrow().len() + self.asking_ahead.get();
        if held * 2 > target {
            return 0;
        }
        target - held
    }

    /// The most permits held ahead: [`SharedLimit::reserve_ahead`], and no more than a
    /// hundredth of the budget's requests and tokens per minute (at least one), so that what
    /// an isolate holds for its next calls is never much of what others could use.
    fn most_ahead(&self) -> usize {
        let limits = self.limits;
        let per_estimate = limits.tokens_per_minute / 100 / self.estimate.get().max(1);
        let share = (limits.requests_per_minute / 100).min(per_estimate).max(1);
        self.settings.reserve_ahead.min(share) as usize
    }

    /// Reserves `count` permits ahead; keeps those granted at once, gives back the others.
    async fn reserve_ahead(&self, count: usize) {
        let tokens = self.estimate.get();
        let asked = vec![
            Op::Reserve {
                tokens,
                ahead: true
            };
            count
        ];
        self.asking_ahead.set(self.asking_ahead.get() + count);
        let answered = self.round_trip(asked).await;
        self.asking_ahead
            .set(self.asking_ahead.get().saturating_sub(count));
        let Ok(outcomes) = answered else {
            return;
        };
        let now = self.now();
        for outcome in outcomes {
            if let Outcome::Reserved { reservation } = outcome {
                if Self::is_fallback(&reservation) {
                    continue;
                }
                if reservation.wait_ms > 0.0 {
                    // The budget is spent: this permit would hold a later call's place.
                    self.waiting.set(true);
                    self.queue(Op::Cancel { reservation });
                } else {
                    self.ahead.borrow_mut().push_back(Ahead {
                        reservation,
                        made_ms: now,
                    });
                }
            }
        }
    }

    fn shared_status(&self) -> SharedStatus {
        let down = self.down.borrow();
        SharedStatus {
            object: self.object.clone(),
            mode: if down.is_some() {
                SharedMode::Fallback
            } else {
                SharedMode::Shared
            },
            reason: down.as_ref().map(|d| d.reason.clone()),
            since_ms: down.as_ref().map(|d| d.since_ms),
            retry_at_ms: down.as_ref().map(|d| d.retry_at_ms),
            fallback_share: self.settings.fallback_share,
            undelivered: self.undelivered.borrow().len(),
            reserved_ahead: self.ahead.borrow().len(),
        }
    }
}

/// The outcomes of a reply to `count` operations, or why it is not one.
fn read_reply(status: u16, body: &[u8], count: usize) -> std::result::Result<Vec<Outcome>, String> {
    let reply = serde_json::from_slice::<Reply>(body);
    if status != 200 {
        let why = reply.ok().and_then(|r| r.error).unwrap_or_default();
        return Err(format!("the shared limiter answered HTTP {status} {why}")
            .trim_end()
            .to_string());
    }
    match reply {
        Ok(reply) if reply.v == PROTOCOL && reply.outcomes.len() == count => Ok(reply.outcomes),
        Ok(reply) => Err(format!(
            "the shared limiter answered version {} with {} outcomes for {count} operations",
            reply.v,
            reply.outcomes.len()
        )),
        Err(e) => Err(format!("the shared limiter's answer does not read: {e}")),
    }
}

impl<R: Runtime, L: ObjectLink> Budget for RemoteBudget<R, L> {
    fn reserve(&self, tokens: u32) -> Answer<'_, Reservation> {
        Box::pin(async move {
            if self.resting() {
                return self.reserve_locally(tokens);
            }
            let now = self.now();
            self.note_call(now, tokens);
            if let Some(reservation) = self.take_ahead(now, tokens) {
                return reservation;
            }
            match self
                .ask(Op::Reserve {
                    tokens,
                    ahead: false,
                })
                .await
            {
                Ok(Outcome::Reserved { reservation }) if !Self::is_fallback(&reservation) => {
                    self.waiting.set(reservation.wait_ms > 0.0);
                    reservation
                }
                Ok(other) => {
                    self.fall_back(format!(
                        "the shared limiter answered {other:?} to a reservation"
                    ));
                    self.reserve_locally(tokens)
                }
                Err(_) => self.reserve_locally(tokens),
            }
        })
    }

    fn blocked_for(&self, reservation: Reservation) -> Answer<'_, Option<f64>> {
        Box::pin(async move {
            if Self::is_fallback(&reservation) {
                let now = self.now();
                return self
                    .fallback
                    .borrow()
                    .blocked_for(&Self::local(&reservation), now);
            }
            if self.resting() {
                // The object granted it; only the object knows of later signals.
                return None;
            }
            match self.ask(Op::BlockedFor { reservation }).await {
                Ok(Outcome::Blocked { wait_ms }) => wait_ms.filter(|w| w.is_finite()),
                _ => None,
            }
        })
    }

    fn observe(&self, headers: &Headers, status: u16, reservation: &Reservation) {
        if Self::is_fallback(reservation) {
            let now = self.now();
            let local = Self::local(reservation);
            self.fallback
                .borrow_mut()
                .observe(now, headers, status, Some(&local));
            return;
        }
        // A permit reserved ahead went out later than the reservations after it in the
        // object's order: the server's remaining figures at its arrival count some of those
        // already, and the object would count them again (and make every call wait for
        // budget the provider still has). Its limits and a 429's wait still count.
        let ahead = self.taken_ahead.borrow_mut().remove(&reservation.id);
        let headers = rate_limit_headers(headers)
            .filter(|(name, _)| !(ahead && is_remaining_figure(name)))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        self.queue(Op::Observe {
            reservation: *reservation,
            status,
            headers,
        });
    }

    fn reconcile(&self, reservation: &Reservation, tokens: Option<u32>) {
        self.taken_ahead.borrow_mut().remove(&reservation.id);
        if Self::is_fallback(reservation) {
            if let Ok(mut fallback) = self.fallback.try_borrow_mut() {
                fallback.reconcile(&Self::local(reservation), tokens);
            }
            return;
        }
        self.queue(Op::Reconcile {
            reservation: *reservation,
            tokens,
        });
    }

    fn cancel(&self, reservation: &Reservation) {
        self.taken_ahead.borrow_mut().remove(&reservation.id);
        if Self::is_fallback(reservation) {
            if let Ok(mut fallback) = self.fallback.try_borrow_mut() {
                fallback.cancel(&Self::local(reservation));
            }
            return;
        }
        self.queue(Op::Cancel {
            reservation: *reservation,
        });
    }

    fn status(&self) -> Answer<'_, BudgetStatus> {
        Box::pin(async move {
            if !self.resting() {
                self.expire_ahead(self.now());
                if let Ok(Outcome::Status { status }) = self.ask(Op::Status).await {
                    return BudgetStatus {
                        limiter: status,
                        shared: Some(self.shared_status()),
                    };
                }
            }
            let now = self.now();
            BudgetStatus {
                limiter: self.fallback.borrow().status(now),
                shared: Some(self.shared_status()),
            }
        })
    }

    fn flush(&self) -> Answer<'_, ()> {
        Box::pin(async move {
            let now = self.now();
            self.expire_ahead(now);
            let wanted = self.wanted_ahead(now);
            if wanted > 0 {
                // The isolate is busy: its next calls find their permits here. Those still
                // unused when they expire are given back below.
                self.reserve_ahead(wanted).await;
                self.runtime.sleep(AHEAD_TTL_MS).await;
            } else if self.undelivered.borrow().is_empty() {
                return;
            } else if !self.undelivered.borrow().iter().any(Op::is_urgent) {
                self.runtime.sleep(FLUSH_AFTER_MS).await;
            }
            self.expire_ahead(self.now());
            if !self.resting() && !self.undelivered.borrow().is_empty() {
                let _ = self.round_trip(Vec::new()).await;
            }
        })
    }
}

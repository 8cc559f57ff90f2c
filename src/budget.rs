//! Where a call's place in its provider's budget comes from: the seam between a
//! [`Client`](crate::client::Client) and a rate limiter, wherever that limiter lives.
//!
//! [`Budget`] is [`RateLimiter`]'s protocol as a call needs it: reserve, check right
//! before sending, observe the answer's headers, then reconcile (or cancel a request never
//! sent). [`LocalBudget`] keeps the limiter in this process's memory (the npm package,
//! one isolate, the tests); the Worker's budget is shared by every isolate through a
//! Durable Object ([`crate::shared_limit::RemoteBudget`]). The client, the manager and the
//! retries do not know which they use.
//!
//! Like [`Runtime`], this is a seam of the platform: it may wait on the network, but
//! decides nothing itself that the limiter does not. Futures need not be `Send` (wasm is
//! single-threaded), and are boxed: a budget is chosen at run time, per provider.

use std::cell::RefCell;
use std::future::{ready, Future};
use std::pin::Pin;
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::http::Headers;
use crate::rate_limit::{RateLimitStatus, RateLimiter, RateLimits, Reservation};
use crate::runtime::Runtime;

/// A boxed future of a budget's answer.
pub type Answer<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A provider's budget, as one call uses it.
///
/// Every reservation is handed back exactly once: to [`Budget::reconcile`] once its
/// request was sent (whatever came of it), or to [`Budget::cancel`] if it never was.
pub trait Budget {
    /// Reserves one request and `tokens` estimated tokens; the reservation says how long
    /// to wait before sending. Never fails: a budget that cannot reach its limiter
    /// answers from a fallback of its own.
    fn reserve(&self, tokens: u32) -> Answer<'_, Reservation>;

    /// Right before sending, after waiting: how much longer a server signal (a 429, no
    /// requests remaining) holds the request, or `None` to go.
    fn blocked_for(&self, reservation: Reservation) -> Answer<'_, Option<f64>>;

    /// The answer to `reservation`'s request arrived, of any status, with these headers.
    fn observe(&self, headers: &Headers, status: u16, reservation: &Reservation);

    /// `reservation`'s request is over; the server charged `tokens` (`None`: unknown).
    fn reconcile(&self, reservation: &Reservation, tokens: Option<u32>);

    /// `reservation`'s request was never sent.
    fn cancel(&self, reservation: &Reservation);

    /// The limiter's state now, and where it lives.
    fn status(&self) -> Answer<'_, BudgetStatus>;

    /// Delivers what is waiting to be told to a remote limiter (observations and
    /// reconciliations travel with the next round trip, or with this). Nothing to do for
    /// a local one.
    fn flush(&self) -> Answer<'_, ()> {
        Box::pin(ready(()))
    }
}

/// A budget's state, for status pages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BudgetStatus {
    /// The limiter the budget answers from now.
    pub limiter: RateLimitStatus,
    /// For a limiter shared across isolates: whether it is reachable, and since when not.
    pub shared: Option<SharedStatus>,
}

/// How a shared limiter is doing, as one isolate sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
pub struct SharedStatus {
    /// What identifies the upstream, and so the shared limiter (never a key).
    pub object: String,
    /// `shared`: reservations come from the shared limiter; `fallback`: it could not be
    /// reached, and this isolate's own limiter answers, at `fallback_share` of the budget.
    pub mode: SharedMode,
    /// Why the fallback, when in it.
    pub reason: Option<String>,
    /// Since when (milliseconds since the epoch), when in the fallback.
    pub since_ms: Option<f64>,
    /// When the shared limiter is tried again, when in the fallback.
    pub retry_at_ms: Option<f64>,
    /// The share of the budget the fallback spends.
    pub fallback_share: f64,
    /// Observations and reconciliations not yet delivered.
    pub undelivered: usize,
    /// Permits this isolate holds, reserved ahead of its calls.
    pub reserved_ahead: usize,
}

/// Where reservations come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "js", derive(tsify::Tsify))]
#[serde(rename_all = "snake_case")]
pub enum SharedMode {
    /// The shared limiter answers.
    Shared,
    /// This isolate's own limiter answers, at a share of the budget.
    Fallback,
}

/// A [`RateLimiter`] in this process's memory, on `runtime`'s clock: shared by the calls
/// of one process (the npm package) or one isolate.
pub struct LocalBudget<R: Runtime> {
    limiter: RefCell<RateLimiter>,
    runtime: Rc<R>,
}

impl<R: Runtime> LocalBudget<R> {
    /// A budget of `limits`, full.
    pub fn new(limits: RateLimits, runtime: Rc<R>) -> Self {
        LocalBudget {
            limiter: RefCell::new(RateLimiter::new(limits)),
            runtime,
        }
    }

    fn now(&self) -> f64 {
        self.runtime.now_ms()
    }
}

impl<R: Runtime> Budget for LocalBudget<R> {
    fn reserve(&self, tokens: u32) -> Answer<'_, Reservation> {
        let reservation = self.limiter.borrow_mut().reserve(self.now(), tokens);
        Box::pin(ready(reservation))
    }

    fn blocked_for(&self, reservation: Reservation) -> Answer<'_, Option<f64>> {
        let blocked = self.limiter.borrow().blocked_for(&reservation, self.now());
        Box::pin(ready(blocked))
    }

    fn observe(&self, headers: &Headers, status: u16, reservation: &Reservation) {
        let now = self.now();
        self.limiter
            .borrow_mut()
            .observe(now, headers, status, Some(reservation));
    }

    fn reconcile(&self, reservation: &Reservation, tokens: Option<u32>) {
        // A drop may run while a borrow is held only if a caller panicked: never panic twice.
        if let Ok(mut limiter) = self.limiter.try_borrow_mut() {
            limiter.reconcile(reservation, tokens);
        }
    }

    fn cancel(&self, reservation: &Reservation) {
        if let Ok(mut limiter) = self.limiter.try_borrow_mut() {
            limiter.cancel(reservation);
        }
    }

    fn status(&self) -> Answer<'_, BudgetStatus> {
        let limiter = self.limiter.borrow().status(self.now());
        Box::pin(ready(BudgetStatus {
            limiter,
            shared: None,
        }))
    }
}

//! The rate limiter shared across isolates, on the simulated platform: the object's
//! message handling against the in-memory limiter, restore after eviction, several
//! isolates drawing on one object at once, and the policy when the object cannot be
//! reached. The object's transport is scripted (`Link`); the clock is the fake one.
// Native only: these run on a simulated platform; the wasm tests are js_*.rs.
#![cfg(not(target_arch = "wasm32"))]

mod support;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use llm_distiller::budget::{Answer, Budget, SharedMode};
use llm_distiller::http::Headers;
use llm_distiller::provider::Provider;
use llm_distiller::rate_limit::{RateLimiter, RateLimits, RequestRefill};
use llm_distiller::runtime::{Runtime, TransportError};
use llm_distiller::shared_limit::{
    LimiterObject, Message, ObjectLink, Op, Outcome, RemoteBudget, Reply, SharedLimit,
    ABANDONED_AFTER_MS, ARRIVAL_SLACK_MS, FLUSH_AFTER_MS, MAX_UNDELIVERED, PROTOCOL,
};
use llm_distiller::{GenerationConfig, LlmConfig, Prompt, ProviderManager, Route};
use serde_json::{json, Value};
use support::{Reply as Scripted, Sim, START_MS};

const LIMITS: RateLimits = RateLimits {
    requests_per_minute: 60,
    tokens_per_minute: 100_000,
    requests_refill: RequestRefill::Continuous,
};

/// How the scripted object misbehaves.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Trouble {
    None,
    /// The connection fails at once.
    Refused,
    /// No answer, ever.
    Silent,
    /// An answer that is not JSON.
    Garbage,
    /// A 500.
    Failing,
}

/// The object, as a Durable Object would hold it: in memory, and its snapshot in storage.
#[derive(Clone)]
struct Object {
    live: Rc<RefCell<Option<LimiterObject>>>,
    stored: Rc<RefCell<Option<String>>>,
    /// Evict after every message: the next one restores from storage.
    evicting: Rc<Cell<bool>>,
    messages: Rc<RefCell<Vec<Value>>>,
}

impl Object {
    fn new() -> Object {
        Object {
            live: Rc::default(),
            stored: Rc::default(),
            evicting: Rc::new(Cell::new(false)),
            messages: Rc::default(),
        }
    }

    fn handle(&self, now: f64, body: &[u8]) -> (u16, Vec<u8>) {
        self.messages
            .borrow_mut()
            .push(serde_json::from_slice(body).unwrap_or(Value::Null));
        let mut live = self.live.borrow_mut();
        if live.is_none() {
            *live = self
                .stored
                .borrow()
                .as_deref()
                .and_then(LimiterObject::restore);
        }
        let handled = LimiterObject::handle(&mut live, now, body);
        if handled.changed {
            *self.stored.borrow_mut() = live.as_ref().map(LimiterObject::snapshot);
        }
        if self.evicting.get() {
            *live = None;
        }
        (handled.status, handled.body.into_bytes())
    }

    /// The operations of every message received, in order.
    fn ops(&self) -> Vec<String> {
        self.messages
            .borrow()
            .iter()
            .flat_map(|m| m["ops"].as_array().cloned().unwrap_or_default())
            .map(|op| op["op"].as_str().unwrap_or("?").to_string())
            .collect()
    }
}

/// One isolate's way to the object: half the round trip there, half back.
#[derive(Clone)]
struct Link {
    sim: Sim,
    object: Object,
    round_trip_ms: f64,
    trouble: Rc<Cell<Trouble>>,
}

impl ObjectLink for Link {
    fn send(&self, body: String) -> Answer<'_, Result<(u16, Vec<u8>), TransportError>> {
        Box::pin(async move {
            match self.trouble.get() {
                Trouble::Refused => return Err(TransportError("connection refused".into())),
                Trouble::Silent => {
                    self.sim.sleep(1e9).await;
                    return Err(TransportError("never".into()));
                }
                Trouble::Garbage => return Ok((200, b"<html>oops</html>".to_vec())),
                Trouble::Failing => return Ok((500, b"internal error".to_vec())),
                Trouble::None => {}
            }
            self.sim.sleep(self.round_trip_ms / 2.0).await;
            let answer = self.object.handle(self.sim.now_ms(), body.as_bytes());
            self.sim.sleep(self.round_trip_ms / 2.0).await;
            Ok(answer)
        })
    }
}

fn budget(sim: &Sim, object: &Object) -> (RemoteBudget<Sim, Link>, Rc<Cell<Trouble>>) {
    budget_with(sim, object, SharedLimit::default())
}

/// A budget that reserves nothing ahead: each reservation is its own round trip, so a test
/// can follow the messages one by one.
fn budget_one_by_one(sim: &Sim, object: &Object) -> (RemoteBudget<Sim, Link>, Rc<Cell<Trouble>>) {
    let settings = SharedLimit {
        reserve_ahead: 0,
        ..SharedLimit::default()
    };
    budget_with(sim, object, settings)
}

fn budget_with(
    sim: &Sim,
    object: &Object,
    settings: SharedLimit,
) -> (RemoteBudget<Sim, Link>, Rc<Cell<Trouble>>) {
    budget_of(sim, object, settings, LIMITS)
}

fn budget_of(
    sim: &Sim,
    object: &Object,
    settings: SharedLimit,
    limits: RateLimits,
) -> (RemoteBudget<Sim, Link>, Rc<Cell<Trouble>>) {
    let trouble = Rc::new(Cell::new(Trouble::None));
    let link = Link {
        sim: sim.clone(),
        object: object.clone(),
        round_trip_ms: std::env::var("RT")
            .map(|v| v.parse().unwrap())
            .unwrap_or(2.0),
        trouble: Rc::clone(&trouble),
    };
    let budget = RemoteBudget::new(
        "custom:http://up.test/v1/chat/completions".into(),
        limits,
        settings,
        Rc::new(sim.clone()),
        link,
    );
    (budget, trouble)
}

fn message(ops: Value) -> Vec<u8> {
    json!({ "v": PROTOCOL, "limits": LIMITS, "ops": ops })
        .to_string()
        .into_bytes()
}

fn outcomes(body: &str) -> Vec<Outcome> {
    serde_json::from_str::<Reply>(body)
        .expect("a reply")
        .outcomes
}

// ---------------------------------------------------------------------------------------
// The object's messages

#[test]
fn the_object_decides_as_the_limiter_in_memory_does() {
    let mut memory = RateLimiter::new(LIMITS).with_arrival_slack(ARRIVAL_SLACK_MS);
    let mut slot = None;
    let mut now = START_MS;
    let headers: Headers = [
        ("x-ratelimit-remaining-requests", "3"),
        ("retry-after-ms", "1500"),
    ]
    .into_iter()
    .collect();
    for step in 0..200u32 {
        now += f64::from(step % 7) * 150.0;
        let tokens = 500 + step * 37 % 3000;
        let expected = memory.reserve(now, tokens);
        let handled = LimiterObject::handle(
            &mut slot,
            now,
            &message(json!([{ "op": "reserve", "tokens": tokens }])),
        );
        assert_eq!(handled.status, 200);
        assert!(handled.changed);
        let [Outcome::Reserved { reservation }] = outcomes(&handled.body)[..] else {
            panic!("{}", handled.body)
        };
        assert_eq!(reservation, expected, "step {step}");
        let status = if step % 23 == 0 { 429 } else { 200 };
        memory.observe(now, &headers, status, Some(&expected));
        memory.reconcile(&expected, Some(tokens / 2));
        let ops = json!([
            { "op": "observe", "reservation": reservation, "status": status,
              "headers": [["x-ratelimit-remaining-requests", "3"], ["retry-after-ms", "1500"]] },
            { "op": "reconcile", "reservation": reservation, "tokens": tokens / 2 },
            { "op": "blocked_for", "reservation": reservation },
            { "op": "status" },
        ]);
        let handled = LimiterObject::handle(&mut slot, now, &message(ops));
        let got = outcomes(&handled.body);
        assert_eq!(got[0], Outcome::Done);
        assert_eq!(got[1], Outcome::Done);
        assert_eq!(
            got[2],
            Outcome::Blocked {
                wait_ms: memory.blocked_for(&expected, now)
            }
        );
        assert_eq!(
            got[3],
            Outcome::Status {
                status: memory.status(now)
            },
            "step {step}"
        );
    }
}

#[test]
fn a_reservation_settles_once_and_an_abandoned_one_is_settled_by_the_sweep() {
    let mut slot = None;
    let reserve = |slot: &mut Option<LimiterObject>, now: f64| {
        let handled = LimiterObject::handle(
            slot,
            now,
            &message(json!([{ "op": "reserve", "tokens": 1000 }])),
        );
        match outcomes(&handled.body)[..] {
            [Outcome::Reserved { reservation }] => reservation,
            _ => panic!("{}", handled.body),
        }
    };
    let status = |slot: &mut Option<LimiterObject>, now: f64| {
        let handled = LimiterObject::handle(slot, now, &message(json!([{ "op": "status" }])));
        assert!(!handled.changed, "a status changes nothing");
        match outcomes(&handled.body).remove(0) {
            Outcome::Status { status } => status,
            other => panic!("{other:?}"),
        }
    };
    let first = reserve(&mut slot, START_MS);
    let reconcile = message(json!([{ "op": "reconcile", "reservation": first, "tokens": 10 }]));
    LimiterObject::handle(&mut slot, START_MS, &reconcile);
    let after_once = status(&mut slot, START_MS);
    // A second delivery of the same reconciliation (a retried message) counts nothing.
    LimiterObject::handle(&mut slot, START_MS, &reconcile);
    assert_eq!(status(&mut slot, START_MS), after_once);
    assert_eq!(after_once.in_flight, 0);

    // An isolate that reserves and dies: its reservation stays in flight, then is settled.
    reserve(&mut slot, START_MS + 1.0);
    assert_eq!(slot.as_ref().map(LimiterObject::open), Some(1));
    assert_eq!(
        status(&mut slot, START_MS + ABANDONED_AFTER_MS).in_flight,
        1
    );
    let later = START_MS + 1.0 + ABANDONED_AFTER_MS;
    let handled = LimiterObject::handle(&mut slot, later, &message(json!([])));
    assert!(handled.changed, "the sweep changed the state");
    assert_eq!(status(&mut slot, later).in_flight, 0);
    assert_eq!(slot.as_ref().map(LimiterObject::open), Some(0));
}

#[test]
fn a_server_figure_is_read_as_missing_the_permits_reserved_ahead_before_it() {
    // A permit reserved ahead, then a call's own; the call's answer comes first and says 50
    // requests remain. The permit ahead may go out after it: the object counts it as not
    // yet seen by the server, one request less than when it was an ordinary reservation.
    let immediately_after = |ahead: bool| {
        let mut slot = None;
        let handled = LimiterObject::handle(
            &mut slot,
            START_MS,
            &message(json!([
                { "op": "reserve", "tokens": 10, "ahead": ahead },
                { "op": "reserve", "tokens": 10 },
            ])),
        );
        let [_, Outcome::Reserved { reservation }] = outcomes(&handled.body)[..] else {
            panic!("{}", handled.body)
        };
        let observe = json!([{ "op": "observe", "reservation": reservation, "status": 200,
            "headers": [["x-ratelimit-remaining-requests", "50"]] }]);
        LimiterObject::handle(&mut slot, START_MS, &message(observe));
        (0..60)
            .take_while(|_| {
                let handled = LimiterObject::handle(
                    &mut slot,
                    START_MS,
                    &message(json!([{ "op": "reserve", "tokens": 10 }])),
                );
                matches!(outcomes(&handled.body)[..],
                    [Outcome::Reserved { reservation }] if reservation.wait_ms == 0.0)
            })
            .count()
    };
    let plain = immediately_after(false);
    assert!(plain > 40, "{plain}");
    assert_eq!(immediately_after(true), plain - 1);
}

#[test]
fn a_permit_reserved_ahead_reports_its_limits_but_not_what_remained_when_it_arrived() {
    let sim = Sim::always(Scripted::completion("ok"));
    let object = Object::new();
    let (budget, _) = budget(&sim, &object);
    sim.run(async {
        let first = budget.reserve(100).await;
        budget.reconcile(&first, Some(100));
        let flush = budget.flush();
        let next = async {
            sim.sleep(10.0).await;
            let ahead = budget.reserve(100).await;
            let headers: Headers = [
                ("x-ratelimit-limit-requests", "60"),
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "1s"),
            ]
            .into_iter()
            .collect();
            budget.observe(&headers, 200, &ahead);
            budget.reconcile(&ahead, Some(100));
        };
        futures_util::future::join(flush, next).await;
        budget.flush().await;
    });
    let messages = object.messages.borrow();
    let observe = messages
        .iter()
        .flat_map(|m| m["ops"].as_array().cloned().unwrap_or_default())
        .find(|op| op["op"] == "observe")
        .expect("the observation reached the object");
    assert_eq!(
        observe["headers"],
        json!([["x-ratelimit-limit-requests", "60"]]),
        "what remained counts permits granted after it that went out first"
    );
}

#[test]
fn messages_are_versioned_and_read_one_operation_at_a_time() {
    let mut slot = None;
    let newer = json!({ "v": PROTOCOL + 1, "limits": LIMITS, "ops": [] }).to_string();
    let handled = LimiterObject::handle(&mut slot, START_MS, newer.as_bytes());
    assert_eq!(handled.status, 400);
    assert!(
        handled.body.contains("protocol version"),
        "{}",
        handled.body
    );
    assert!(slot.is_none(), "nothing is made of a refused message");

    for garbage in [
        &b""[..],
        b"{",
        b"[]",
        b"{\"v\":1}",
        b"\xff\xfe",
        b"{\"v\":1,\"limits\":{},\"ops\":{}}",
    ] {
        let handled = LimiterObject::handle(&mut slot, START_MS, garbage);
        assert_eq!(handled.status, 400, "{garbage:?}");
        let reply: Reply = serde_json::from_str(&handled.body).expect("a reply even then");
        assert!(reply.error.is_some());
    }

    // A newer caller's operation is unknown here; the others are carried out.
    let ops = json!([{ "op": "forecast", "minutes": 5 }, { "op": "reserve", "tokens": 10 }, 42]);
    let handled = LimiterObject::handle(&mut slot, START_MS, &message(ops));
    let got = outcomes(&handled.body);
    assert!(matches!(got[0], Outcome::Unknown { .. }), "{got:?}");
    assert!(matches!(got[1], Outcome::Reserved { .. }), "{got:?}");
    assert!(matches!(got[2], Outcome::Unknown { .. }), "{got:?}");
}

#[test]
fn a_changed_budget_reaches_the_object() {
    let mut slot = None;
    LimiterObject::handle(&mut slot, START_MS, &message(json!([])));
    let smaller = RateLimits {
        tokens_per_minute: 1_000,
        ..LIMITS
    };
    let body = json!({ "v": PROTOCOL, "limits": smaller, "ops": [{ "op": "status" }] }).to_string();
    let handled = LimiterObject::handle(&mut slot, START_MS + 10.0, body.as_bytes());
    assert!(handled.changed);
    let Outcome::Status { status } = outcomes(&handled.body).remove(0) else {
        panic!()
    };
    assert_eq!(status.max_tokens_per_minute, 1_000);
}

#[test]
fn an_evicted_object_restores_exactly_where_it_was() {
    let run = |evicting: bool| -> Vec<(f64, u64)> {
        let sim = Sim::always(Scripted::completion("ok"));
        let object = Object::new();
        object.evicting.set(evicting);
        let (budget, _) = budget(&sim, &object);
        let headers: Headers = [("x-ratelimit-remaining-tokens", "5000")]
            .into_iter()
            .collect();
        sim.run(async {
            let mut seen = Vec::new();
            for i in 0..120u32 {
                let reservation = budget.reserve(2_000 + i).await;
                sim.sleep(reservation.wait_ms).await;
                budget.observe(&headers, if i == 50 { 429 } else { 200 }, &reservation);
                budget.reconcile(&reservation, Some(1_500));
                seen.push((sim.now_ms(), reservation.id));
            }
            budget.flush().await;
            seen
        })
    };
    let evicted = run(true);
    assert_eq!(
        evicted,
        run(false),
        "the same schedule, evicted after every message or never"
    );
    assert!(
        evicted.last().unwrap().0 > START_MS + 60_000.0,
        "the budget bound: {:?}",
        evicted.last()
    );
    let restored = LimiterObject::restore("{\"v\": 99}");
    assert!(
        restored.is_none(),
        "another version's snapshot starts afresh"
    );
}

// ---------------------------------------------------------------------------------------
// Several isolates, one object

/// A provider behind `budget`, calling a scripted upstream that enforces `LIMITS`' request
/// bucket: the times it answered, and its 429s.
fn upstream_starts(sim: &Sim) -> Vec<f64> {
    sim.seen().iter().map(|s| s.at_ms).collect()
}

#[test]
fn isolates_sharing_the_object_keep_one_budget_between_them() {
    let sim = Sim::always(Scripted::completion("ok").latency(50.0));
    let object = Object::new();
    let config = LlmConfig::from_json(
        r#"{ "providers": { "up": { "type": "custom", "base_url": "http://up.test/v1", "model": "m",
             "rate_limit": { "requests_per_minute": 60, "tokens_per_minute": 100000 } } } }"#,
    )
    .unwrap();
    // Three isolates: three managers, each with its own budget on the one object.
    let managers: Vec<ProviderManager<Sim>> = (0..3)
        .map(|_| {
            let make =
                |_provider: &Provider| -> Rc<dyn Budget> { Rc::new(budget(&sim, &object).0) };
            ProviderManager::with_budgets(&config, Rc::new(sim.clone()), &|_| None, &make).unwrap()
        })
        .collect();
    let small = GenerationConfig {
        max_tokens: Some(10),
        ..GenerationConfig::default()
    };
    let prompts: Vec<Prompt> = (0..40).map(|i| Prompt::from(format!("q{i}"))).collect();
    let results = sim.run(futures_util::future::join_all(managers.iter().map(|m| {
        let prompts = &prompts;
        let small = &small;
        async move {
            let mut answers = Vec::new();
            for prompt in prompts {
                answers.push(
                    m.generate(prompt, small, &Route::Default, &Default::default())
                        .await,
                );
                m.flush().await;
            }
            answers
        }
    })));
    assert!(results.iter().flatten().all(Result::is_ok));
    let starts = upstream_starts(&sim);
    assert_eq!(starts.len(), 120);
    // The upstream's own bucket: 60 at once, then one a second. Never more than that.
    for (i, at) in starts.iter().enumerate() {
        let allowed = 60.0 + (at - START_MS) / 1000.0;
        assert!(
            (i + 1) as f64 <= allowed + 1e-9,
            "request {} went at {} ms, over the shared budget",
            i + 1,
            at - START_MS
        );
    }
    // And no slower than it: the 120th at about 60 s (plus round trips and latency).
    let last = starts.last().unwrap() - START_MS;
    assert!(
        last <= 60_000.0 * 1.02,
        "the last request went at {last} ms"
    );
    // The isolates told the object of every answer: nothing is left in flight.
    let status = sim.run(managers[0].provider_status());
    assert_eq!(
        status[0].rate_limiter.as_ref().map(|r| r.in_flight),
        Some(0)
    );
    assert_eq!(
        status[0].shared_limiter.as_ref().map(|s| s.mode),
        Some(SharedMode::Shared)
    );
}

/// An upstream that enforces `requests_per_minute` as OpenAI does: a bucket, full at first,
/// refilling continuously; every answer says what remains, a request beyond it gets a 429
/// with the wait until the next one.
fn bucket_upstream(requests_per_minute: u32) -> Sim {
    let capacity = f64::from(requests_per_minute);
    let per_ms = capacity / 60_000.0;
    let mut level = capacity;
    let mut last = START_MS;
    Sim::timed(move |_, _, now| {
        level = (level + (now - last) * per_ms).min(capacity);
        last = now;
        let limit = requests_per_minute.to_string();
        if level < 1.0 {
            let wait = ((1.0 - level) / per_ms).ceil().to_string();
            return Scripted::json(429, json!({ "error": { "message": "rate limited" } }))
                .header("x-ratelimit-limit-requests", &limit)
                .header("x-ratelimit-remaining-requests", "0")
                .header("retry-after-ms", &wait)
                .latency(50.0);
        }
        level -= 1.0;
        Scripted::completion("ok")
            .header("x-ratelimit-limit-requests", &limit)
            .header(
                "x-ratelimit-remaining-requests",
                &(level.floor() as u64).to_string(),
            )
            .latency(50.0)
    })
}

#[test]
fn two_busy_isolates_spend_a_provider_budget_at_its_pace_without_429s() {
    // Two isolates of 24 clients each, 300 calls in front of 240 requests a minute: the
    // bucket's 240 at once, then 4 a second, 15 s in all. Each client's next call runs
    // while the last one's news goes to the object, as `wait_until` runs it in a Worker.
    for reserve_ahead in [0, 16] {
        let sim = bucket_upstream(240);
        let object = Object::new();
        let config = LlmConfig::from_json(
            r#"{ "providers": { "up": { "type": "custom", "base_url": "http://up.test/v1", "model": "m",
                 "rate_limit": { "requests_per_minute": 240, "tokens_per_minute": 100000000 } } } }"#,
        )
        .unwrap();
        let limits = RateLimits {
            requests_per_minute: 240,
            tokens_per_minute: 100_000_000,
            requests_refill: RequestRefill::Continuous,
        };
        let settings = SharedLimit {
            reserve_ahead,
            ..SharedLimit::default()
        };
        let managers: Vec<ProviderManager<Sim>> = (0..2)
            .map(|_| {
                let make = |_provider: &Provider| -> Rc<dyn Budget> {
                    Rc::new(budget_of(&sim, &object, settings, limits).0)
                };
                ProviderManager::with_budgets(&config, Rc::new(sim.clone()), &|_| None, &make)
                    .unwrap()
            })
            .collect();
        let small = GenerationConfig {
            max_tokens: Some(10),
            ..GenerationConfig::default()
        };
        let next = Cell::new(0);
        let results = sim.run(futures_util::future::join_all((0..48).map(|client| {
            let manager = &managers[client % 2];
            let (small, next) = (&small, &next);
            async move {
                let options = Default::default();
                let mut answers = Vec::new();
                let mut flushed = None;
                while next.get() < 300 {
                    let prompt = Prompt::from(format!("q{}", next.get()));
                    next.set(next.get() + 1);
                    let call = manager.generate(&prompt, small, &Route::Default, &options);
                    let last = futures_util::future::OptionFuture::from(flushed.take());
                    let (answer, _) = futures_util::future::join(call, last).await;
                    answers.push(answer);
                    flushed = Some(manager.flush());
                }
                if let Some(flush) = flushed {
                    flush.await;
                }
                answers
            }
        })));
        let answers: Vec<_> = results.into_iter().flatten().collect();
        assert_eq!(answers.len(), 300);
        assert!(
            answers.iter().all(Result::is_ok),
            "reserve_ahead {reserve_ahead}"
        );
        let starts = upstream_starts(&sim);
        let last = starts.last().unwrap() - START_MS;
        let longest = starts.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
        assert_eq!(starts.len(), 300, "no 429 (reserve_ahead {reserve_ahead})");
        // The pace never stalls: no pause of more than a few requests' refill (250 ms each).
        assert!(
            longest <= 1_000.0,
            "reserve_ahead {reserve_ahead}: a pause of {longest} ms"
        );
        assert!(
            last <= 15_000.0 * 1.05,
            "reserve_ahead {reserve_ahead}: the last went at {last} ms"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Round trips: shared by concurrent calls, and made ahead of a busy isolate's calls

/// How many messages reached the object.
fn messages(object: &Object) -> usize {
    object.messages.borrow().len()
}

#[test]
fn concurrent_calls_each_get_their_own_reservation_without_waiting_for_each_other() {
    let sim = Sim::always(Scripted::completion("ok"));
    let object = Object::new();
    let (budget, _) = budget_one_by_one(&sim, &object);
    let reservations = sim.run(futures_util::future::join_all(
        (0..16).map(|_| budget.reserve(100)),
    ));
    // Each call makes its own round trip (in a Worker, a call must not wait on another
    // request's work), all at once: one round trip's time in all.
    assert_eq!(messages(&object), 16);
    assert!(sim.elapsed() <= 2.0 + 1e-9, "{} ms", sim.elapsed());
    let mut ids: Vec<u64> = reservations.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 16, "each call has its own reservation");
    assert!(reservations
        .iter()
        .all(|r| r.id < 1 << 52 && r.wait_ms == 0.0));
}

#[test]
fn the_calls_of_a_busy_isolate_share_the_permits_one_round_trip_reserved_ahead() {
    let sim = Sim::always(Scripted::completion("ok"));
    let object = Object::new();
    // A budget large enough for four permits ahead (a hundredth of 400 a minute).
    let limits = RateLimits {
        requests_per_minute: 400,
        ..LIMITS
    };
    let (budget, _) = budget_of(&sim, &object, SharedLimit::default(), limits);
    let sent = sim.run(async {
        // Four calls end: the flush after them reserves four permits in one round trip.
        let first = futures_util::future::join_all((0..4).map(|_| budget.reserve(100))).await;
        for reservation in &first {
            budget.reconcile(reservation, Some(100));
        }
        let flush = budget.flush();
        let next = async {
            sim.sleep(10.0).await;
            let before = messages(&object);
            let next = futures_util::future::join_all((0..4).map(|_| budget.reserve(100))).await;
            for reservation in &next {
                budget.reconcile(reservation, Some(100));
            }
            messages(&object) - before
        };
        futures_util::future::join(flush, next).await.1
    });
    assert_eq!(sent, 0, "the next four calls made no round trip");
    // Four reservations, the permits ahead, and, once those expire, what the next four
    // calls had to tell (their reconciliations).
    assert_eq!(messages(&object), 6);
}

#[test]
fn a_busy_isolate_reserves_ahead_and_its_next_call_makes_no_round_trip() {
    let sim = Sim::always(Scripted::completion("ok"));
    let object = Object::new();
    let (budget, _) = budget(&sim, &object);
    let (first, second, sent_before, sent_after) = sim.run(async {
        let first = budget.reserve(100).await;
        budget.reconcile(&first, Some(90));
        // After the response: the flush delivers the reconciliation and reserves a permit
        // for the next call (its wait for unused permits to expire runs on meanwhile).
        let flush = budget.flush();
        let next = async {
            sim.sleep(10.0).await;
            let sent_before = messages(&object);
            let second = budget.reserve(100).await;
            (second, sent_before, messages(&object))
        };
        let ((), (second, sent_before, sent_after)) = futures_util::future::join(flush, next).await;
        (first, second, sent_before, sent_after)
    });
    assert_eq!(
        sent_before, sent_after,
        "the second call made no round trip"
    );
    assert_ne!(first.id, second.id);
    assert!(second.id < 1 << 52, "a permit of the object");
    assert_eq!(second.wait_ms, 0.0);
    assert_eq!(object.ops(), ["reserve", "reconcile", "reserve"]);
    sim.run(async {
        budget.reconcile(&second, Some(90));
        budget.flush().await;
        let status = budget.status().await;
        assert_eq!(
            status.limiter.in_flight, 0,
            "every permit is settled or given back"
        );
        assert_eq!(status.shared.map(|s| s.reserved_ahead), Some(0));
    });
}

#[test]
fn permits_ahead_not_used_are_given_back_when_they_expire() {
    let sim = Sim::always(Scripted::completion("ok"));
    let object = Object::new();
    let (budget, _) = budget(&sim, &object);
    let (status, waits) = sim.run(async {
        let reservation = budget.reserve(100).await;
        budget.reconcile(&reservation, Some(100));
        // No call comes: the flush gives the permit back once it is too old to use.
        budget.flush().await;
        let status = budget.status().await;
        // The permit given back costs the budget nothing: 59 more of the 60 go at once.
        let mut waits = Vec::new();
        for _ in 0..59 {
            waits.push(budget.reserve(100).await.wait_ms);
        }
        (status, waits)
    });
    assert_eq!(
        object.ops()[..5],
        ["reserve", "reconcile", "reserve", "cancel", "status"]
    );
    assert_eq!(status.limiter.in_flight, 0);
    assert!(waits.iter().all(|w| *w == 0.0), "{waits:?}");
}

#[test]
fn a_permit_ahead_serves_only_a_call_it_holds_enough_tokens_for() {
    let sim = Sim::always(Scripted::completion("ok"));
    let object = Object::new();
    let (budget, _) = budget(&sim, &object);
    let big = sim.run(async {
        let small = budget.reserve(100).await;
        budget.reconcile(&small, Some(100));
        let flush = budget.flush();
        let next = async {
            sim.sleep(10.0).await;
            budget.reserve(5_000).await
        };
        futures_util::future::join(flush, next).await.1
    });
    assert_eq!(
        big.tokens, 5_000,
        "reserved for what it asks, not the permit's 100"
    );
    assert_eq!(
        object.ops(),
        ["reserve", "reconcile", "reserve", "reserve", "cancel"],
        "its own round trip; the unused permit given back"
    );
}

#[test]
fn an_isolate_holds_at_most_a_hundredth_of_the_budget_ahead() {
    for (requests_per_minute, tokens_per_minute, most) in [
        (60, 100_000, 1),
        (400, 1_000_000, 4),
        (100_000, 100_000, 1),
        (100_000, 10_000_000, 16),
    ] {
        let sim = Sim::always(Scripted::completion("ok"));
        let object = Object::new();
        let limits = RateLimits {
            requests_per_minute,
            tokens_per_minute,
            ..LIMITS
        };
        let (budget, _) = budget_of(&sim, &object, SharedLimit::default(), limits);
        let held = sim.run(async {
            // Forty calls of 1,000 tokens end at once, and each flushes (as each request of
            // a Worker does, in `wait_until`): the flushes reserve ahead, together no more
            // than the most.
            let calls =
                futures_util::future::join_all((0..40).map(|_| budget.reserve(1_000))).await;
            for reservation in &calls {
                budget.reconcile(reservation, Some(1_000));
            }
            let flush = futures_util::future::join_all((0..40).map(|_| budget.flush()));
            let look = async {
                sim.sleep(10.0).await;
                budget.status().await.shared.map(|s| s.reserved_ahead)
            };
            futures_util::future::join(flush, look).await.1
        });
        assert_eq!(
            held,
            Some(most),
            "{requests_per_minute} rpm, {tokens_per_minute} tpm"
        );
    }
}

#[test]
fn a_429_reaches_the_object_at_once_and_other_news_waits_for_company() {
    for (status, headers, soon) in [
        (429, vec![("retry-after-ms", "2000")], true),
        (200, vec![("x-ratelimit-remaining-requests", "50")], false),
    ] {
        let sim = Sim::always(Scripted::completion("ok"));
        let object = Object::new();
        let (budget, _) = budget_one_by_one(&sim, &object);
        let delivered_at = sim.run(async {
            let reservation = budget.reserve(100).await;
            let start = sim.now_ms();
            let headers: Headers = headers.into_iter().collect();
            budget.observe(&headers, status, &reservation);
            budget.flush().await;
            sim.now_ms() - start
        });
        assert_eq!(object.ops(), ["reserve", "observe"], "{status}");
        if soon {
            assert!(delivered_at <= 2.0 + 1e-9, "a 429 waited {delivered_at} ms");
        } else {
            assert!(
                delivered_at >= FLUSH_AFTER_MS,
                "a 200 went after {delivered_at} ms"
            );
        }
    }
}

#[test]
fn nothing_is_reserved_ahead_while_calls_wait() {
    let sim = Sim::always(Scripted::completion("ok"));
    let object = Object::new();
    let (budget, _) = budget(&sim, &object);
    sim.run(async {
        // The bucket holds 60 requests: spend them, and more.
        let mut last = None;
        for _ in 0..61 {
            let reservation = budget.reserve(100).await;
            budget.reconcile(&reservation, Some(100));
            last = Some(reservation);
        }
        assert!(last.unwrap().wait_ms > 0.0);
        let before = object.ops().iter().filter(|op| *op == "reserve").count();
        budget.flush().await;
        let after = object.ops().iter().filter(|op| *op == "reserve").count();
        assert_eq!(before, after, "no permit ahead of calls that wait");
    });
}

// ---------------------------------------------------------------------------------------
// When the object cannot be reached

#[test]
fn an_unreachable_object_makes_the_isolate_spend_its_share_and_say_so() {
    for trouble in [
        Trouble::Refused,
        Trouble::Silent,
        Trouble::Garbage,
        Trouble::Failing,
    ] {
        let sim = Sim::always(Scripted::completion("ok"));
        let object = Object::new();
        let (budget, link_trouble) = budget(&sim, &object);
        link_trouble.set(trouble);
        let (waits, status) = sim.run(async {
            let mut waits = Vec::new();
            for _ in 0..40 {
                let reservation = budget.reserve(100).await;
                waits.push(reservation.wait_ms);
                budget.reconcile(&reservation, Some(100));
            }
            (waits, budget.status().await)
        });
        // Half of 60 requests per minute: 30 at once, then one every 2 s.
        let at_once = waits.iter().filter(|w| **w == 0.0).count();
        assert_eq!(at_once, 30, "{trouble:?}: {waits:?}");
        assert!((waits[30] - 2_000.0).abs() < 1e-6, "{trouble:?}: {waits:?}");
        let shared = status.shared.expect("a shared budget says how it is");
        assert_eq!(shared.mode, SharedMode::Fallback, "{trouble:?}");
        assert!(
            shared
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("shared limiter")),
            "{shared:?}"
        );
        assert_eq!(status.limiter.max_requests_per_minute, 30);
        // Bounded: the silent object cost one timeout, then it rests.
        let spent = sim.elapsed();
        assert!(spent <= 1_000.0 + 1e-9, "{trouble:?}: {spent} ms");
        assert_eq!(
            object.ops().len(),
            0,
            "{trouble:?}: nothing reached the object"
        );
    }
}

#[test]
fn the_isolate_returns_to_the_object_and_delivers_what_waited() {
    let sim = Sim::always(Scripted::completion("ok"));
    let object = Object::new();
    let (budget, trouble) = budget_one_by_one(&sim, &object);
    sim.run(async {
        // A reservation from the object, then the object goes away.
        let shared = budget.reserve(100).await;
        assert!(shared.id < 1 << 52);
        trouble.set(Trouble::Refused);
        let local = budget.reserve(100).await;
        assert!(local.id >= 1 << 52, "from the isolate's own limiter");
        budget.reconcile(&local, Some(80));
        // While the isolate rests, what it has to tell the object waits.
        budget.observe(&Headers::new(), 200, &shared);
        budget.reconcile(&shared, Some(80));
        // The object is back, but the isolate rests until retry_after_ms is over.
        trouble.set(Trouble::None);
        let rested = budget.reserve(100).await;
        assert!(rested.id >= 1 << 52);
        budget.cancel(&rested);
        sim.sleep(SharedLimit::default().retry_after_ms).await;
        let back = budget.reserve(100).await;
        assert!(back.id < 1 << 52, "the object answers again");
        budget.reconcile(&back, Some(80));
        budget.flush().await;
        let status = budget.status().await;
        assert_eq!(
            status.shared.as_ref().map(|s| s.mode),
            Some(SharedMode::Shared)
        );
        assert_eq!(
            status.limiter.in_flight, 0,
            "every reservation of the object was settled"
        );
    });
    assert_eq!(
        object.ops(),
        [
            "reserve",
            "observe",
            "reconcile",
            "reserve",
            "reconcile",
            "status"
        ],
        "what waited went with the next round trip, before the new reservation"
    );
}

#[test]
fn what_may_have_arrived_is_never_sent_twice() {
    let sim = Sim::always(Scripted::completion("ok"));
    let object = Object::new();
    let (budget, trouble) = budget(&sim, &object);
    let in_flight = sim.run(async {
        let first = budget.reserve(100).await;
        budget.reconcile(&first, Some(100));
        // The round trip that carries the reconciliation times out: it may have arrived.
        trouble.set(Trouble::Silent);
        let local = budget.reserve(100).await;
        budget.cancel(&local);
        trouble.set(Trouble::None);
        sim.sleep(SharedLimit::default().retry_after_ms).await;
        budget.flush().await;
        budget.status().await.limiter.in_flight
    });
    assert_eq!(
        object.ops(),
        ["reserve", "status"],
        "the reconciliation was not sent again"
    );
    // Its reservation stays in flight until the object's sweep settles it.
    assert_eq!(in_flight, 1);
}

#[test]
fn undelivered_messages_are_bounded() {
    let sim = Sim::always(Scripted::completion("ok"));
    let object = Object::new();
    let (budget, trouble) = budget(&sim, &object);
    sim.run(async {
        let shared = budget.reserve(100).await;
        trouble.set(Trouble::Refused);
        budget.reserve(100).await;
        for _ in 0..2 * MAX_UNDELIVERED {
            budget.observe(&Headers::new(), 200, &shared);
        }
        let status = budget.status().await;
        assert_eq!(status.shared.map(|s| s.undelivered), Some(MAX_UNDELIVERED));
    });
}

#[test]
fn the_observation_carries_only_what_the_limiter_reads() {
    let sim = Sim::always(Scripted::completion("ok"));
    let object = Object::new();
    let (budget, _) = budget_one_by_one(&sim, &object);
    sim.run(async {
        let reservation = budget.reserve(100).await;
        let headers: Headers = [
            ("X-RateLimit-Remaining-Tokens", "10"),
            ("retry-after-ms", "5"),
            ("set-cookie", "session=secret"),
            ("authorization", "Bearer sk-nothing-to-see"),
        ]
        .into_iter()
        .collect();
        budget.observe(&headers, 200, &reservation);
        budget.flush().await;
    });
    let messages = object.messages.borrow();
    let text = serde_json::to_string(&*messages).unwrap();
    assert!(text.contains("X-RateLimit-Remaining-Tokens") && text.contains("retry-after-ms"));
    assert!(
        !text.contains("session=secret") && !text.contains("sk-nothing"),
        "{text}"
    );
    let sent: Message = serde_json::from_value(messages.last().unwrap().clone()).unwrap();
    let op: Op = serde_json::from_value(sent.ops[0].clone()).unwrap();
    assert!(matches!(op, Op::Observe { status: 200, .. }));
}

#[test]
fn shared_limit_settings_are_checked() {
    for (json, field) in [
        (r#"{"fallback_share": 0}"#, "fallback_share"),
        (r#"{"fallback_share": 1.5}"#, "fallback_share"),
        (r#"{"timeout_ms": -1}"#, "timeout_ms"),
        (r#"{"retry_after_ms": 0}"#, "retry_after_ms"),
        (r#"{"reserve_ahead": 65}"#, "reserve_ahead"),
        (r#"{"reserve_ahead": -1}"#, "reserve_ahead"),
    ] {
        let config = format!(
            r#"{{"providers":{{"p":{{"type":"custom","base_url":"http://x.test","shared_limit":{json}}}}}}}"#
        );
        let error = LlmConfig::from_json(&config).unwrap_err();
        assert!(
            error
                .to_string()
                .contains(&format!("providers.p.shared_limit.{field}")),
            "{error}"
        );
    }
}

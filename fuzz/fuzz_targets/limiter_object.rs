//! What the shared limiter's Durable Object does with a message from any isolate
//! (`shared_limit::LimiterObject::handle`): a sequence of messages, each any bytes, at
//! times that may go backwards, with the object evicted and restored from its snapshot
//! between them.
//!
//! Payload: the messages, separated by NUL bytes (a seed is a message as it is). Control:
//! the time step before each message, and whether the object is evicted after it.
//!
//! Checks: never a panic; a 200 answers with the protocol's reply and one outcome per
//! operation, anything else is a 400 with the reply's error and changes nothing; what the
//! object stores restores to the same object (its snapshot again, byte for byte); the
//! reservations it hands out are never in flight more than it has handed out.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_distiller::shared_limit::{LimiterObject, Reply, PROTOCOL};
use llm_distiller_fuzz::Input;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let messages: Vec<&[u8]> = input.payload.split(|&b| b == 0).take(64).collect();
    let mut live: Option<LimiterObject> = None;
    let mut stored: Option<String> = None;
    let mut now = 1_700_000_000_000.0;
    for message in messages {
        let step = input.u16();
        now += match step % 4 {
            0 => 0.0,
            1 => f64::from(step),
            2 => f64::from(step) * 1_000.0,
            _ => -f64::from(step),
        };
        if live.is_none() {
            live = stored.as_deref().and_then(LimiterObject::restore);
        }
        let before = live.as_ref().map(LimiterObject::snapshot);
        let handled = LimiterObject::handle(&mut live, now, message);
        let reply: Reply =
            serde_json::from_str(&handled.body).unwrap_or_else(|e| panic!("{e}: {}", handled.body));
        assert_eq!(reply.v, PROTOCOL);
        match handled.status {
            200 => {
                let ops = serde_json::from_slice::<Value>(message)
                    .ok()
                    .and_then(|m| m.get("ops").and_then(Value::as_array).map(Vec::len));
                assert_eq!(Some(reply.outcomes.len()), ops, "{}", handled.body);
                assert!(live.is_some());
            }
            400 => {
                assert!(reply.error.is_some() && reply.outcomes.is_empty());
                assert!(!handled.changed);
                assert_eq!(live.as_ref().map(LimiterObject::snapshot), before);
            }
            other => panic!("status {other}"),
        }
        if handled.changed {
            stored = live.as_ref().map(LimiterObject::snapshot);
        }
        if let Some(object) = &live {
            let snapshot = object.snapshot();
            let restored = LimiterObject::restore(&snapshot).expect("its own snapshot reads");
            assert_eq!(restored.snapshot(), snapshot);
        }
        if input.byte() % 4 == 0 {
            live = None;
        }
    }
});

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
//! object stores restores to the same object (its snapshot again, each fraction within a
//! few ulps: serde_json reads floats within about an ulp, see `LimiterObject::restore`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_distiller::shared_limit::{LimiterObject, Message, Reply, PROTOCOL};
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
                // Read as the object reads it: fields it does not know are skipped unread
                // (a key that is not UTF-8 in one of them does not refuse the message).
                let ops = serde_json::from_slice::<Message>(message)
                    .ok()
                    .map(|m| m.ops.len());
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
            let (a, b) = (json(&snapshot), json(&restored.snapshot()));
            assert!(
                same_within_ulps(&a, &b),
                "{snapshot}\n{}",
                restored.snapshot()
            );
        }
        if input.byte() % 4 == 0 {
            live = None;
        }
    }
});

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("a snapshot is JSON")
}

/// Whether `a` and `b` are the same JSON but for fractions a few ulps apart.
fn same_within_ulps(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => {
                x == y || (x.signum() == y.signum() && x.to_bits().abs_diff(y.to_bits()) <= 4)
            }
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_within_ulps(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_within_ulps(v, w)))
        }
        _ => a == b,
    }
}

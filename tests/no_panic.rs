//! Property tests: no input, however malformed, makes the response parser, the stream
//! assembler, the configuration parser or the error mapping panic (a panic inside wasm
//! would kill the module instance for every later call).
// Native only: these run on a simulated platform or use proptest; the wasm tests are js_*.rs.
#![cfg(not(target_arch = "wasm32"))]

mod support;

use llm_distiller::config::{GenerationConfig, LlmConfig};
use llm_distiller::http::Headers;
use llm_distiller::stream::StreamAssembler;
use llm_distiller::thinking::{StreamOptions, ThinkingExtractor};
use proptest::prelude::*;
use serde_json::{json, Value};
use support::openai_provider as provider;

/// JSON values of any shape, biased towards the keys a chat completion has.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("choices".to_string()),
        Just("message".to_string()),
        Just("delta".to_string()),
        Just("content".to_string()),
        Just("reasoning_content".to_string()),
        Just("usage".to_string()),
        Just("error".to_string()),
        Just("code".to_string()),
        Just("finish_reason".to_string()),
        Just("index".to_string()),
        "[a-z_]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,20}".prop_map(Value::String),
        Just(json!("<think>")),
        Just(json!("429")),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

fn headers() -> impl Strategy<Value = Headers> {
    let name = prop_oneof![
        Just("retry-after"),
        Just("retry-after-ms"),
        Just("x-should-retry"),
        Just("x-ratelimit-remaining-requests"),
        Just("x-ratelimit-reset-tokens"),
    ];
    prop::collection::vec((name, ".{0,24}"), 0..5)
        .prop_map(|pairs| pairs.into_iter().collect::<Headers>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn response_parsing_never_panics(status in 0u16..1000, body in prop::collection::vec(any::<u8>(), 0..256), headers in headers()) {
        let _ = provider().parse_response(status, &headers, &body, 1.7e12);
    }

    #[test]
    fn json_of_any_shape_never_panics(value in json_value(), status in 100u16..600, headers in headers()) {
        let p = provider();
        let text = value.to_string();
        let _ = p.parse_response(status, &headers, text.as_bytes(), 1.7e12);
        let _ = p.parse_stream_chunk(&value.to_string(), 1.7e12);
        let _ = p.error_from_response(status, &headers, text.as_bytes(), f64::NAN);
        let _ = serde_json::from_value::<GenerationConfig>(value.clone()).map(|c| c.validate());
        let _ = LlmConfig::from_json(&json!({ "providers": { "p": value } }).to_string());
    }

    #[test]
    fn streams_of_any_bytes_never_panic(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8)) {
        let p = provider();
        let mut assembler = StreamAssembler::new(&ThinkingExtractor::default(), StreamOptions::default());
        for chunk in &chunks {
            if assembler.push(&p, chunk, 0.0).is_err() {
                break;
            }
        }
        let _ = assembler.finish(&p, 0.0);
        let _ = assembler.into_response(&p, 0.0);
    }

    #[test]
    fn streams_of_sse_shaped_text_never_panic(events in prop::collection::vec(json_value(), 0..6), split in 1usize..40) {
        let p = provider();
        let text: String = events.iter().map(|e| format!("data: {e}\n\n")).collect::<String>() + "data: [DONE]\n\n";
        let mut assembler = StreamAssembler::new(&ThinkingExtractor::default(), StreamOptions { starts_in_thinking: split % 2 == 0 });
        for chunk in text.as_bytes().chunks(split) {
            if assembler.push(&p, chunk, 0.0).is_err() {
                break;
            }
        }
        let _ = assembler.finish(&p, 0.0);
    }

    #[test]
    fn configs_of_any_text_never_panic(text in ".{0,200}") {
        let _ = LlmConfig::from_json(&text);
        let _ = GenerationConfig::from_json(&text);
    }

    #[test]
    fn redaction_never_panics_and_always_hides_the_key(prefix in ".{0,600}", suffix in ".{0,20}") {
        let p = provider();
        let shown = p.redact(&format!("{prefix}sk-0123456789abcdef{suffix}"));
        prop_assert!(!shown.contains("sk-0123456789abcdef"));
        prop_assert!(!shown.contains("sk-01234"));
    }
}

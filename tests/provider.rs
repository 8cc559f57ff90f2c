//! The HTTP mapping of each kind of provider, as pure functions: requests built, and
//! responses (valid under the OpenAI and Azure specs, or broken) parsed.
// Native only: these run on a simulated platform or use proptest; the wasm tests are js_*.rs.
#![cfg(not(target_arch = "wasm32"))]

use llm_distiller::config::{LlmConfig, ProviderConfig};
use llm_distiller::http::Headers;
use llm_distiller::provider::Provider;
use llm_distiller::validate::{validate, InvalidReason};
use llm_distiller::{Error, GenerationConfig, LlmResponse, Message, Prompt};
use proptest::prelude::*;
use serde_json::json;

fn provider(json: serde_json::Value) -> Provider {
    let config: ProviderConfig = serde_json::from_value(json).unwrap();
    Provider::from_config("p", &config, &|_| None).unwrap()
}

fn openai() -> Provider {
    provider(json!({ "type": "openai", "api_key": "sk-abcdefghijklmnop", "model": "gpt-4o" }))
}

const NOW: f64 = 1_700_000_000_000.0;

#[test]
fn openai_request_shape() {
    let p = openai();
    let messages = Prompt::from("Hi")
        .to_messages(&GenerationConfig::default())
        .unwrap();
    let request = p
        .build_request(&messages, &GenerationConfig::default(), true)
        .unwrap();
    assert_eq!(request.url, "https://api.openai.com/v1/chat/completions");
    assert_eq!(
        request.headers.get("content-type"),
        Some("application/json")
    );
    assert_eq!(request.headers.get("accept"), Some("text/event-stream"));
    let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(
        body,
        json!({ "model": "gpt-4o", "messages": [{ "role": "user", "content": "Hi" }], "temperature": 0.7,
                "max_tokens": 1000, "top_p": 0.9, "frequency_penalty": 0.0, "presence_penalty": 0.0,
                "stream": true, "stream_options": { "include_usage": true } })
    );
}

#[test]
fn a_base_url_with_a_trailing_slash_and_a_call_model_override() {
    let p = provider(
        json!({ "type": "custom", "base_url": "http://127.0.0.1:11434/v1/", "model": "llama3" }),
    );
    let config = GenerationConfig {
        model: Some("qwen3".into()),
        ..GenerationConfig::default()
    };
    let request = p
        .build_request(&[Message::new("user", "x")], &config, false)
        .unwrap();
    assert_eq!(request.url, "http://127.0.0.1:11434/v1/chat/completions");
    let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(body["model"], "qwen3");
}

#[test]
fn messages_pass_through_and_the_system_prompt_is_added_once() {
    let config = GenerationConfig {
        system_prompt: Some("Be brief.".into()),
        ..GenerationConfig::default()
    };
    let prompt: Prompt = serde_json::from_value(json!([
        { "role": "user", "content": [{ "type": "text", "text": "Look" }, { "type": "image_url", "image_url": { "url": "data:," } }] },
        { "role": "assistant", "content": null, "tool_calls": [{ "id": "t1", "type": "function", "function": { "name": "f", "arguments": "{}" } }] },
        { "role": "tool", "tool_call_id": "t1", "content": "42" }
    ]))
    .unwrap();
    let messages = prompt.to_messages(&config).unwrap();
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[0], Message::new("system", "Be brief."));
    let sent = serde_json::to_value(&messages[2]).unwrap();
    assert_eq!(sent["tool_calls"][0]["id"], "t1");
    assert_eq!(messages[1].text_len(), 4);

    let own: Prompt = serde_json::from_value(
        json!([{ "role": "developer", "content": "x" }, { "role": "user", "content": "y" }]),
    )
    .unwrap();
    assert_eq!(
        own.to_messages(&config).unwrap().len(),
        2,
        "a conversation's own system message wins"
    );

    let bad: Prompt =
        serde_json::from_value(json!([{ "role": "wizard", "content": "x" }])).unwrap();
    assert!(
        matches!(bad.to_messages(&config), Err(Error::Config { field, .. }) if field == "messages[0].role")
    );
    let empty = Prompt::Messages(vec![]);
    assert!(empty.to_messages(&config).is_err());
}

#[test]
fn parses_an_azure_response_with_its_content_filter_fields() {
    // The shape of the 2024-10-21 spec's example exchange, with Azure's filter results.
    let body = json!({
        "id": "chatcmpl-7R1nGnsXO8n4oi9UPz2f3UHdgAYMn", "created": 1686676106, "object": "chat.completion",
        "prompt_filter_results": [{ "prompt_index": 0, "content_filter_results": { "hate": { "filtered": false, "severity": "safe" } } }],
        "choices": [{ "index": 0, "finish_reason": "stop",
            "message": { "role": "assistant", "content": "Ahoy matey! Feed yer parrot well." },
            "content_filter_results": { "violence": { "filtered": false, "severity": "safe" } } }],
        "usage": { "completion_tokens": 557, "prompt_tokens": 33, "total_tokens": 590 }
    });
    let p = provider(
        json!({ "type": "azure_openai", "api_key": "k-123456789", "endpoint": "https://r.openai.azure.com", "deployment_name": "dep" }),
    );
    let c = p
        .parse_response(200, &Headers::new(), body.to_string().as_bytes(), NOW)
        .unwrap();
    assert!(c.content.starts_with("Ahoy matey!"));
    assert_eq!(c.finish_reason.as_deref(), Some("stop"));
    assert_eq!(c.usage.unwrap().total_tokens, 590);
    assert_eq!(c.model, "dep", "no model in the body: the deployment");
    assert_eq!(
        c.id.as_deref(),
        Some("chatcmpl-7R1nGnsXO8n4oi9UPz2f3UHdgAYMn")
    );
}

#[test]
fn parses_openai_responses_with_every_optional_and_unknown_field() {
    let body = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "o3-mini",
        "choices": [{ "index": 0, "finish_reason": "stop", "logprobs": { "content": null, "refusal": null },
            "message": { "role": "assistant", "content": "4", "refusal": null, "annotations": [],
                         "reasoning": "2+2", "audio": null, "some_future_field": { "x": 1 } } },
            { "index": 1, "finish_reason": "length", "logprobs": null, "message": { "role": "assistant", "content": "other" } }],
        "usage": { "prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
                   "prompt_tokens_details": { "cached_tokens": 0 }, "completion_tokens_details": { "reasoning_tokens": 1 } },
        "service_tier": "default", "system_fingerprint": "fp", "prompt_filter_results": []
    });
    let c = openai()
        .parse_response(200, &Headers::new(), body.to_string().as_bytes(), NOW)
        .unwrap();
    assert_eq!(c.content, "4");
    assert_eq!(c.reasoning.as_deref(), Some("2+2"));
    assert_eq!(c.raw, body);

    // Tool calls: content null is an empty answer, not an error.
    let tools = json!({ "choices": [{ "index": 0, "finish_reason": "tool_calls", "message": { "role": "assistant", "content": null,
        "tool_calls": [{ "id": "c", "type": "function", "function": { "name": "f", "arguments": "{}" } }] } }] });
    let c = openai()
        .parse_response(200, &Headers::new(), tools.to_string().as_bytes(), NOW)
        .unwrap();
    assert_eq!(c.content, "");
    assert_eq!(c.model, "gpt-4o");
}

#[test]
fn broken_bodies_are_typed_errors() {
    let p = openai();
    let cases: [(&str, &str); 6] = [
        ("", "empty"),
        ("{\"choices\": [", "truncated"),
        ("<html>502 Bad Gateway</html>", "not JSON"),
        ("{\"choices\": []}", "no choices"),
        (
            "{\"choices\": [{\"message\": {\"content\": 5}}]}",
            "choices[0].message.content",
        ),
        ("[1,2,3]", "invalid type"),
    ];
    for (body, says) in cases {
        let error = p
            .parse_response(200, &Headers::new(), body.as_bytes(), NOW)
            .unwrap_err();
        match &error {
            Error::InvalidResponse { provider, message } => {
                assert_eq!(provider, "p");
                assert!(message.contains(says), "{body:?}: {message}");
            }
            other => panic!("{body:?}: {other:?}"),
        }
    }
}

#[test]
fn error_bodies_become_typed_errors_with_the_servers_hints() {
    let p = openai();
    let headers: Headers = [("retry-after", "7"), ("x-should-retry", "true")]
        .into_iter()
        .collect();
    let body = json!({ "error": { "message": "Rate limit reached for gpt-4o", "type": "tokens", "param": null, "code": "rate_limit_exceeded" } });
    let error = p
        .parse_response(429, &headers, body.to_string().as_bytes(), NOW)
        .unwrap_err();
    assert_eq!(
        error,
        Error::RateLimited {
            provider: "p".into(),
            retry_after_ms: Some(7_000.0),
            should_retry: Some(true),
            message: "Rate limit reached for gpt-4o".into()
        }
    );

    let body = json!({ "error": { "message": "The model does not exist", "type": "invalid_request_error", "param": "model", "code": "model_not_found" } });
    let error = p
        .parse_response(404, &Headers::new(), body.to_string().as_bytes(), NOW)
        .unwrap_err();
    let Error::Http {
        status: 404,
        code,
        param,
        ..
    } = &error
    else {
        panic!("{error:?}")
    };
    assert_eq!(
        (code.as_deref(), param.as_deref()),
        (Some("model_not_found"), Some("model"))
    );

    // An error inside a 200 (seen from proxies), with Azure's string status code.
    let body = json!({ "error": { "code": "429", "message": "Requests to the deployment have exceeded the rate limit" } });
    let error = p
        .parse_response(200, &Headers::new(), body.to_string().as_bytes(), NOW)
        .unwrap_err();
    assert!(matches!(error, Error::RateLimited { .. }), "{error:?}");
    let error = p
        .parse_response(
            200,
            &Headers::new(),
            br#"{"error":{"message":"internal"}}"#,
            NOW,
        )
        .unwrap_err();
    assert_eq!(error.status(), Some(502));

    // A plain-text error page is quoted, shortened.
    let page = "x".repeat(5_000);
    let error = p
        .parse_response(503, &Headers::new(), page.as_bytes(), NOW)
        .unwrap_err();
    assert!(
        matches!(&error, Error::Http { status: 503, message, .. } if message.chars().count() <= 501)
    );
}

#[test]
fn the_key_is_redacted_from_quoted_text_even_when_cut() {
    let p = openai();
    assert_eq!(
        p.redact("key sk-abcdefghijklmnop is wrong"),
        "key [redacted] is wrong"
    );
    // The quote limit cuts in the middle of the echoed key: its prefix must go too.
    let text = format!("{}sk-abcdefghijklmnop", "y".repeat(490));
    let shown = p.redact(&text);
    assert!(!shown.contains("sk-abcdefgh"), "{shown}");
}

/// A custom provider with `key`.
fn keyed(key: &str) -> Provider {
    provider(json!({ "type": "custom", "base_url": "http://127.0.0.1:9/v1", "api_key": key }))
}

/// `key` as a JSON string's content (what `JSON.stringify` and serde_json write).
fn json_escaped(key: &str) -> String {
    let quoted = serde_json::to_string(key).unwrap();
    quoted[1..quoted.len() - 1].to_string()
}

#[test]
fn a_key_echoed_json_escaped_is_redacted_too() {
    let key = r#"sk-ab"cd\ef0123456789"#;
    let escaped = json_escaped(key);
    assert_eq!(escaped, r#"sk-ab\"cd\\ef0123456789"#);
    let p = keyed(key);
    // A body that is not JSON, echoing the request's JSON; and an error message that is
    // an object, quoted as JSON text.
    let page = format!(r#"<html>bad request: {{"api_key": "{escaped}"}}</html>"#);
    let object = json!({ "error": { "message": { "detail": format!("bad key {key}") } } });
    for body in [page, object.to_string()] {
        let error = p
            .parse_response(401, &Headers::new(), body.as_bytes(), NOW)
            .unwrap_err();
        let shown = error.to_string();
        assert!(!shown.contains(key), "{shown}");
        assert!(!shown.contains(&escaped), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
    }
}

#[test]
fn the_marker_cannot_rebuild_the_key() {
    // The key's first byte is the marker's last: replacing one occurrence must not make
    // another out of the marker and the text after it.
    let p = keyed("]AAAAAAA");
    for text in ["]AAAAAAAAAAAAAA", "x]AAAAAAA]AAAAAAAy", "[redacted]AAAAAAA"] {
        let shown = p.redact(text);
        assert!(!shown.contains("]AAAAAAA"), "{text:?} -> {shown:?}");
    }
    // A key that is the marker's own word.
    let p = keyed("redacted");
    let shown = p.redact("the key redacted was refused");
    assert!(!shown.contains("redacted"), "{shown:?}");
}

/// The first `n` bytes of `text` or a little more, to end on a character.
fn prefix_of(text: &str, n: usize) -> &str {
    let end = (n..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    &text[..end]
}

/// Keys made of characters that meet in escapes, brackets and the marker's word.
fn awkward_key() -> impl Strategy<Value = String> {
    let char = prop::sample::select(vec![
        'a', 'c', 'd', 'e', 'r', 't', 'A', '0', '-', '"', '\\', '/', '[', ']', '*', '#', '~', '…',
        'é', '▀', ' ',
    ]);
    prop::collection::vec(char, 8..20)
        .prop_map(|chars| chars.into_iter().collect::<String>())
        .prop_filter("at least 8 bytes once trimmed", |k| k.trim().len() >= 8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever the key and the text around it, neither the key nor its JSON escaping, nor
    /// the first 8 bytes of either, is left; and text with no trace of the key is kept as
    /// it is.
    #[test]
    fn no_trace_of_any_key_survives_redaction(
        key in awkward_key(),
        pieces in prop::collection::vec((0usize..7, 0usize..30, "[\\[\\]a-e*#~ \\\\\"…]{0,4}"), 0..8),
    ) {
        let p = keyed(&key);
        let key = key.trim();
        let escaped = json_escaped(key);
        let mut text = String::new();
        for (kind, n, other) in &pieces {
            match kind {
                0 => text.push_str(key),
                1 => text.push_str(&escaped),
                2 => text.push_str(prefix_of(key, *n)),
                3 => text.push_str(prefix_of(&escaped, *n)),
                4 => text.push_str("[redacted]"),
                5 => text.push_str(&"y".repeat(n * 20)),
                _ => text.push_str(other),
            }
        }
        let shown = p.redact(&text);
        for form in [key, escaped.as_str()] {
            let start = prefix_of(form, 8);
            prop_assert!(!shown.contains(start), "{:?} in {:?} from {:?}", start, shown, text);
        }
        let traces = [key, escaped.as_str()].map(|f| prefix_of(f, 8));
        if text.chars().count() <= 500 && !traces.iter().any(|t| text.contains(t)) {
            prop_assert_eq!(shown, text);
        }
    }
}

#[test]
fn stream_chunks_of_both_providers_parse() {
    let p = openai();
    let azure_first = json!({ "choices": [], "created": 0, "id": "", "model": "", "object": "",
        "prompt_filter_results": [{ "prompt_index": 0, "content_filter_results": {} }] });
    let d = p.parse_stream_chunk(&azure_first.to_string(), NOW).unwrap();
    assert_eq!(
        (d.content, d.reasoning, d.finish_reason, d.usage),
        (None, None, None, None)
    );
    let reasoning = json!({ "id": "x", "choices": [{ "index": 0, "delta": { "reasoning_content": "hmm" }, "finish_reason": null }] });
    assert_eq!(
        p.parse_stream_chunk(&reasoning.to_string(), NOW)
            .unwrap()
            .reasoning
            .as_deref(),
        Some("hmm")
    );
    let usage = json!({ "choices": [], "usage": { "prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2 } });
    assert_eq!(
        p.parse_stream_chunk(&usage.to_string(), NOW)
            .unwrap()
            .usage
            .unwrap()
            .total_tokens,
        2
    );
    let error = json!({ "error": { "message": "overloaded", "code": "503" } });
    assert_eq!(
        p.parse_stream_chunk(&error.to_string(), NOW)
            .unwrap_err()
            .status(),
        Some(503)
    );
    let wrong = json!({ "choices": "nope" });
    assert!(matches!(
        p.parse_stream_chunk(&wrong.to_string(), NOW),
        Err(Error::InvalidResponse { .. })
    ));
    // Data that is neither [DONE] nor JSON.
    for text in ["[DONE", "DONE", r#"{"choices":"#] {
        assert!(
            matches!(
                p.parse_stream_chunk(text, NOW),
                Err(Error::InvalidResponse { .. })
            ),
            "{text}"
        );
    }
}

fn response(content: &str, finish: Option<&str>, unclosed: bool) -> LlmResponse {
    LlmResponse {
        content: content.into(),
        reasoning: None,
        thinking: None,
        thinking_unclosed: unclosed,
        model: "m".into(),
        usage: None,
        finish_reason: finish.map(String::from),
        response_time: 0.0,
        response_time_ms: 0.0,
        provider: "p".into(),
        id: None,
        attempts: 1,
        waited_ms: 0.0,
        raw_response: None,
    }
}

#[test]
fn validation_rules() {
    assert_eq!(validate(&response("4", Some("stop"), false), false), Ok(()));
    assert_eq!(
        validate(&response("4", Some("length"), false), false),
        Err(InvalidReason::FinishReason {
            finish_reason: Some("length".into())
        })
    );
    assert_eq!(
        validate(&response("4", Some("content_filter"), false), false)
            .unwrap_err()
            .code(),
        "finish_reason"
    );
    assert_eq!(
        validate(&response("4", None, false), false)
            .unwrap_err()
            .code(),
        "finish_reason"
    );
    assert_eq!(
        validate(&response("", Some("stop"), true), false),
        Err(InvalidReason::UnclosedThinking)
    );
    assert_eq!(
        validate(&response("  \n", Some("stop"), false), false),
        Err(InvalidReason::EmptyContent)
    );
    assert_eq!(
        validate(&response("{\"a\": 1}", Some("stop"), false), true),
        Ok(())
    );
    let bad = validate(&response("Sure! {\"a\": 1}", Some("stop"), false), true).unwrap_err();
    assert_eq!(bad.code(), "invalid_json");
    assert!(bad.to_string().contains("does not parse"));
    assert!(GenerationConfig::from_json(
        r#"{"response_format":{"type":"json_schema","json_schema":{}}}"#
    )
    .unwrap()
    .wants_json());
    assert!(
        !GenerationConfig::from_json(r#"{"response_format":{"type":"text"}}"#)
            .unwrap()
            .wants_json()
    );
}

#[test]
fn a_full_config_round_trips_without_its_keys() {
    let config = LlmConfig::from_json(
        r#"{"providers":{"a":{"type":"azure_openai","api_key":"secret-azure-key","endpoint":"https://x.openai.azure.com","deployment_name":"d"}}}"#,
    )
    .unwrap();
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(json["providers"]["a"]["api_key"], "[redacted]");
    assert_eq!(json["providers"]["a"]["type"], "azure_openai");
}

#[test]
fn unset_parameters_are_not_sent_and_max_completion_tokens_replaces_max_tokens() {
    let config: GenerationConfig = serde_json::from_value(json!({
        "temperature": null, "top_p": null, "max_completion_tokens": 5000, "reasoning_effort": "high"
    }))
    .unwrap();
    config.validate().unwrap();
    assert_eq!(config.completion_budget(), 5000);
    let request = openai()
        .build_request(&[Message::new("user", "x")], &config, false)
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
    assert!(body.get("temperature").is_none(), "{body}");
    assert!(body.get("top_p").is_none(), "{body}");
    assert!(
        body.get("max_tokens").is_none(),
        "reasoning models refuse it: {body}"
    );
    assert_eq!(body["max_completion_tokens"], 5000);
    assert_eq!(body["reasoning_effort"], "high");
    assert_eq!(
        body["frequency_penalty"], 0.0,
        "a design default still set is sent"
    );
    let bad: GenerationConfig =
        serde_json::from_value(json!({ "max_completion_tokens": 0 })).unwrap();
    assert!(
        matches!(bad.validate(), Err(Error::Config { field, .. }) if field == "max_completion_tokens")
    );
}

//! The Worker's OpenAI-compatible surface as a client meets it: requests read (and refused
//! with OpenAI's 400s), failures mapped to statuses, answers and stream chunks in the
//! spec's shapes, and the bearer-token check.
// Native only: these run on a simulated platform or use proptest; the wasm tests are js_*.rs.
#![cfg(not(target_arch = "wasm32"))]

mod support;

use llm_distiller::chat::{Message, Prompt, Usage};
use llm_distiller::openai_api::{
    bearer_token, chunk_event, completion_body, delta_object, error_event, parse_chat_request,
    parse_generate_request, token_matches, too_large, ApiError, ChatRequest, DONE_EVENT,
    MAX_REQUEST_BYTES,
};
use llm_distiller::{Error, Route};
use proptest::prelude::*;
use serde_json::{json, Value};
use support::{assert_invalid, llm_response as response};

// ---------------------------------------------------------------------------------------
// Helpers

fn parse(body: &Value) -> Result<ChatRequest, ApiError> {
    parse_chat_request(body.to_string().as_bytes(), None)
}

/// A minimal valid request with the keys of `extra` set on it.
fn request_with(extra: Value) -> Value {
    let mut body = json!({ "model": "gpt-4o", "messages": [{ "role": "user", "content": "Hi" }] });
    for (key, value) in extra.as_object().expect("an object of overrides") {
        body[key] = value.clone();
    }
    body
}

/// The 400 a body gets; panics (with the request) when it is accepted.
fn refused(body: &Value) -> ApiError {
    match parse(body) {
        Ok(chat) => panic!("accepted {body}: {chat:?}"),
        Err(error) => error,
    }
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

fn assert_openai_error_body(body: &Value) {
    assert_eq!(keys(body), ["error"], "{body}");
    assert_eq!(
        keys(&body["error"]),
        ["code", "message", "param", "type"],
        "{body}"
    );
    assert!(body["error"]["message"].is_string(), "{body}");
    assert!(body["error"]["type"].is_string(), "{body}");
}

/// The JSON of one `data: …\n\n` event.
fn event_json(event: &str) -> Value {
    let data = event
        .strip_prefix("data: ")
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .unwrap_or_else(|| panic!("not a `data: …\\n\\n` event: {event:?}"));
    assert!(
        !data.contains('\n'),
        "a newline inside the data would end the event early: {event:?}"
    );
    serde_json::from_str(data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {event:?}"))
}

fn http(status: u16, provider: &str) -> Error {
    Error::Http {
        provider: provider.into(),
        status,
        message: format!("upstream said {status}"),
        error_type: Some("invalid_request_error".into()),
        code: None,
        param: None,
        retry_after_ms: None,
        should_retry: None,
    }
}

fn rate_limited(provider: &str) -> Error {
    Error::RateLimited {
        provider: provider.into(),
        retry_after_ms: Some(1500.0),
        should_retry: None,
        message: "quota".into(),
    }
}

fn timeout(provider: &str) -> Error {
    Error::Timeout {
        provider: provider.into(),
        after_ms: 60_000.0,
    }
}

// ---------------------------------------------------------------------------------------
// parse_chat_request: what a client may send

#[test]
fn a_full_request_keeps_every_parameter() {
    let tools = json!([{
        "type": "function",
        "function": { "name": "add", "parameters": { "type": "object", "properties": {} } }
    }]);
    let sent = json!([
        { "role": "system", "content": "Be brief." },
        { "role": "user", "content": [{ "type": "text", "text": "2+2?" }], "name": "ann" },
        { "role": "assistant", "content": null,
          "tool_calls": [{ "id": "c1", "type": "function", "function": { "name": "add", "arguments": "{}" } }] },
        { "role": "tool", "tool_call_id": "c1", "content": "4" }
    ]);
    let body = json!({
        "model": "gpt-4o",
        "messages": sent,
        "temperature": 0.2,
        "top_p": 0.5,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
        "max_tokens": 100,
        "max_completion_tokens": 200,
        "stop": ["END", "\n\n"],
        "n": 1,
        "seed": 42,
        "user": "user-1234",
        "tools": tools,
        "tool_choice": "auto",
        "response_format": { "type": "json_object" },
        "stream": true,
        "stream_options": { "include_usage": true },
        "provider": "main",
        "fallback": ["backup", "local"]
    });
    let chat = parse(&body).unwrap();

    let expected: Vec<Message> = serde_json::from_value(sent).unwrap();
    assert_eq!(messages(&chat), expected, "messages pass through untouched");
    assert_eq!(messages(&chat)[1].extra["name"], "ann");
    assert!(messages(&chat)[2].extra.contains_key("tool_calls"));

    let config = &chat.call.config;
    assert_eq!(config.model.as_deref(), Some("gpt-4o"));
    assert_eq!(config.temperature, Some(0.2));
    assert_eq!(config.top_p, Some(0.5));
    assert_eq!(config.frequency_penalty, Some(0.5));
    assert_eq!(config.presence_penalty, Some(-0.5));
    assert_eq!(
        config.completion_budget(),
        200,
        "max_completion_tokens wins over max_tokens"
    );
    assert_eq!(
        config.stop_sequences,
        Some(vec!["END".to_string(), "\n\n".to_string()])
    );
    assert_eq!(
        config.response_format,
        Some(json!({ "type": "json_object" }))
    );
    assert!(config.wants_json());
    assert_eq!(
        config.system_prompt, None,
        "the messages carry their own system prompt"
    );

    assert_eq!(config.extra["seed"], 42);
    assert_eq!(config.extra["user"], "user-1234");
    assert_eq!(config.extra["tools"], tools);
    assert_eq!(config.extra["tool_choice"], "auto");
    let mut extra_keys: Vec<&str> = config.extra.keys().map(String::as_str).collect();
    extra_keys.sort_unstable();
    assert_eq!(
        extra_keys,
        ["max_completion_tokens", "seed", "tool_choice", "tools", "user"],
        "unknown parameters (and max_completion_tokens, which reasoning models need as it is) pass through; the extensions do not"
    );

    assert!(chat.stream);
    assert!(chat.include_usage);
    assert_eq!(
        chat.call.route,
        Route::Failover {
            first: Some("main".to_string()),
            then: vec!["backup".to_string(), "local".to_string()]
        }
    );
}

#[test]
fn the_config_sent_upstream_holds_no_extension() {
    let chat = parse(&request_with(json!({
        "provider": "main", "fallback": "backup", "stream": true,
        "stream_options": { "include_usage": true }, "n": 1, "seed": 7
    })))
    .unwrap();
    let sent = serde_json::to_value(&chat.call.config).unwrap();
    for key in [
        "provider",
        "fallback",
        "stream",
        "stream_options",
        "n",
        "messages",
    ] {
        assert!(sent.get(key).is_none(), "{key} leaked into {sent}");
    }
    assert_eq!(sent["seed"], 7);
}

#[test]
fn a_minimal_request_leaves_the_providers_defaults() {
    let chat = parse(&json!({ "messages": [{ "role": "user", "content": "Hi" }] })).unwrap();
    assert_eq!(messages(&chat), [Message::new("user", "Hi")]);
    assert_eq!(chat.call.config.model, None, "the provider's model");
    // Unset stays unset, as calling OpenAI directly: nothing of the library's defaults.
    assert_eq!(chat.call.config.max_tokens, None);
    assert_eq!(chat.call.config.temperature, None);
    assert_eq!(chat.call.config.top_p, None);
    assert_eq!(chat.call.config.frequency_penalty, None);
    assert_eq!(chat.call.config.presence_penalty, None);
    assert!(!chat.stream);
    assert!(!chat.include_usage);
    assert_eq!(
        chat.call.route,
        Route::Default,
        "the default provider alone"
    );
}

#[test]
fn max_tokens_and_max_completion_tokens() {
    let tokens = |extra: Value| {
        parse(&request_with(extra))
            .unwrap()
            .call
            .config
            .completion_budget()
    };
    assert_eq!(tokens(json!({ "max_tokens": 64 })), 64);
    assert_eq!(tokens(json!({ "max_completion_tokens": 32 })), 32);
    assert_eq!(
        tokens(json!({ "max_completion_tokens": 32, "max_tokens": 64 })),
        32
    );
}

#[test]
fn stop_may_be_a_string_or_a_list() {
    let stop = |extra: Value| {
        parse(&request_with(extra))
            .unwrap()
            .call
            .config
            .stop_sequences
    };
    assert_eq!(
        stop(json!({ "stop": "END" })),
        Some(vec!["END".to_string()])
    );
    assert_eq!(
        stop(json!({ "stop": ["a", "b", "c", "d"] })),
        Some(
            vec!["a", "b", "c", "d"]
                .into_iter()
                .map(String::from)
                .collect()
        )
    );
    assert_eq!(stop(json!({ "stop": null })), None);
    assert_eq!(stop(json!({})), None);
}

#[test]
fn stream_options_are_read_only_as_given() {
    let read = |extra: Value| {
        let chat = parse(&request_with(extra)).unwrap();
        (chat.stream, chat.include_usage)
    };
    assert_eq!(read(json!({ "stream": true })), (true, false));
    assert_eq!(
        read(json!({ "stream": true, "stream_options": { "include_usage": false } })),
        (true, false)
    );
    assert_eq!(
        read(json!({ "stream": true, "stream_options": {} })),
        (true, false)
    );
    assert_eq!(read(json!({ "stream": false })), (false, false));
}

#[test]
fn response_format_json_schema_wants_json() {
    let chat = parse(&request_with(json!({
        "response_format": { "type": "json_schema", "json_schema": { "name": "x", "schema": {} } }
    })))
    .unwrap();
    assert!(chat.call.config.wants_json());
    let chat = parse(&request_with(
        json!({ "response_format": { "type": "text" } }),
    ))
    .unwrap();
    assert!(!chat.call.config.wants_json());
}

#[test]
fn the_provider_comes_from_the_body_else_the_header() {
    let body = request_with(json!({}));
    let bytes = body.to_string();
    let named = |name: &str| Route::Provider(name.to_string());
    let chat = parse_chat_request(bytes.as_bytes(), Some("from-header")).unwrap();
    assert_eq!(chat.call.route, named("from-header"));

    let body = request_with(json!({ "provider": "from-body" }));
    let chat = parse_chat_request(body.to_string().as_bytes(), Some("from-header")).unwrap();
    assert_eq!(chat.call.route, named("from-body"), "the body wins");

    let chat = parse_chat_request(bytes.as_bytes(), Some("   ")).unwrap();
    assert_eq!(
        chat.call.route,
        Route::Default,
        "a blank header names no provider"
    );

    let body = request_with(json!({ "provider": null }));
    let chat = parse_chat_request(body.to_string().as_bytes(), Some("from-header")).unwrap();
    assert_eq!(chat.call.route, named("from-header"));
}

#[test]
fn fallback_may_be_one_name_or_a_list() {
    let route = |extra: Value| parse(&request_with(extra)).unwrap().call.route;
    let failover = |first: Option<&str>, then: &[&str]| Route::Failover {
        first: first.map(str::to_string),
        then: then.iter().map(|n| n.to_string()).collect(),
    };
    assert_eq!(
        route(json!({ "provider": "main", "fallback": "backup" })),
        failover(Some("main"), &["backup"])
    );
    assert_eq!(
        route(json!({ "provider": "main" })),
        Route::Provider("main".to_string()),
        "one named provider, no failover"
    );
    assert_eq!(
        route(json!({ "provider": "main", "fallback": [] })),
        Route::Provider("main".to_string()),
        "an empty fallback is no failover"
    );
    // Without `provider`, the default provider goes first (the manager resolves it, and
    // tries each provider once: tests/client.rs).
    assert_eq!(
        route(json!({ "fallback": ["backup", "dflt"] })),
        failover(None, &["backup", "dflt"])
    );
}

/// The messages of a chat request's prompt.
fn messages(chat: &ChatRequest) -> &[Message] {
    match &chat.call.prompt {
        Prompt::Messages(messages) => messages,
        other => panic!("a chat request's prompt is its messages, got {other:?}"),
    }
}

#[test]
fn a_body_of_exactly_the_limit_is_read() {
    let body = request_with(json!({})).to_string();
    let mut padded = body.into_bytes();
    padded.resize(MAX_REQUEST_BYTES, b' ');
    assert!(parse_chat_request(&padded, None).is_ok());
}

// ---------------------------------------------------------------------------------------
// parse_chat_request: what it refuses

#[test]
fn a_body_over_the_limit_is_a_413() {
    let mut body = request_with(json!({})).to_string().into_bytes();
    body.resize(MAX_REQUEST_BYTES + 1, b' ');
    let error = parse_chat_request(&body, None).unwrap_err();
    assert_eq!(error.status, 413);
    assert_eq!(error.code.as_deref(), Some("request_too_large"));
    assert!(error.message.contains(&MAX_REQUEST_BYTES.to_string()));
    assert_eq!(error, too_large(MAX_REQUEST_BYTES));
}

#[test]
fn a_body_that_is_not_json_is_a_400() {
    for body in [&b"not json"[..], b"", b"{\"messages\": [", b"{'a': 1}"] {
        let error = parse_chat_request(body, None).unwrap_err();
        assert_eq!(error.status, 400, "{error:?}");
        assert_eq!(error.kind, "invalid_request_error");
        assert_eq!(error.param, None);
        assert!(error.message.contains("not valid JSON"), "{error:?}");
    }
}

#[test]
fn a_body_that_is_not_an_object_is_a_400() {
    for body in ["[1, 2]", "\"hi\"", "42", "null", "true"] {
        let error = parse_chat_request(body.as_bytes(), None).unwrap_err();
        assert_eq!(error.status, 400, "{body}: {error:?}");
        assert_eq!(error.param, None);
        assert!(error.message.contains("JSON object"), "{error:?}");
    }
}

#[test]
fn a_body_that_is_not_utf8_is_a_400() {
    let body = b"{\"messages\": [{\"role\": \"user\", \"content\": \"\xff\xfe\"}]}";
    let error = parse_chat_request(body, None).unwrap_err();
    assert_eq!(error.status, 400);
    assert_eq!(error.param, None);
    assert!(error.message.contains("UTF-8"), "{error:?}");
}

#[test]
fn messages_are_required() {
    let error = refused(&json!({ "model": "gpt-4o" }));
    assert_invalid(&error, "messages");
    assert!(error.message.contains("required"), "{error:?}");
}

#[test]
fn messages_must_not_be_empty() {
    let error = refused(&request_with(json!({ "messages": [] })));
    assert_invalid(&error, "messages");
    assert!(error.message.contains("at least one"), "{error:?}");
}

#[test]
fn messages_must_be_an_array() {
    for messages in [
        json!("Hi"),
        json!({ "role": "user" }),
        json!(null),
        json!(3),
    ] {
        let error = refused(&request_with(json!({ "messages": messages })));
        assert_invalid(&error, "messages");
    }
}

#[test]
fn a_message_needs_a_role() {
    let error = refused(&request_with(json!({ "messages": [{ "content": "Hi" }] })));
    assert_eq!(error.status, 400);
    assert!(
        error
            .param
            .as_deref()
            .is_some_and(|p| p.starts_with("messages")),
        "{error:?}"
    );
    assert!(error.message.contains("role"), "{error:?}");

    let error = refused(&request_with(
        json!({ "messages": [{ "role": 5, "content": "Hi" }] }),
    ));
    assert_invalid(&error, "messages[0].role");
}

// Was a bug: parse_chat_request reads `role` as any string; an unknown role is only refused
// later, when the client builds the upstream request (`Prompt::to_messages`).
#[test]
fn a_message_with_an_unknown_role_is_a_400() {
    let error = refused(&request_with(json!({ "messages": [
        { "role": "user", "content": "Hi" },
        { "role": "wizard", "content": "Abracadabra" }
    ] })));
    assert_invalid(&error, "messages[1].role");
    assert!(error.message.contains("wizard"), "{error:?}");
}

// Was a bug: parse_chat_request keeps `content` as any JSON value; a number or an object is only
// refused later, when the client builds the upstream request (`Prompt::to_messages`).
#[test]
fn a_message_with_content_of_the_wrong_type_is_a_400() {
    for content in [json!(42), json!({ "text": "Hi" }), json!(true)] {
        let error = refused(&request_with(
            json!({ "messages": [{ "role": "user", "content": content }] }),
        ));
        assert_invalid(&error, "messages[0].content");
    }
}

#[test]
fn temperature_out_of_range_is_a_400() {
    for temperature in [json!(2.5), json!(-0.1), json!(1e300)] {
        let error = refused(&request_with(json!({ "temperature": temperature })));
        assert_invalid(&error, "temperature");
        assert!(error.message.contains("between 0 and 2"), "{error:?}");
    }
    assert!(parse(&request_with(json!({ "temperature": 0 }))).is_ok());
    assert!(parse(&request_with(json!({ "temperature": 2 }))).is_ok());
}

#[test]
fn temperature_as_a_string_is_a_400() {
    let error = refused(&request_with(json!({ "temperature": "hot" })));
    assert_invalid(&error, "temperature");
}

#[test]
fn other_ranges_are_checked() {
    assert_invalid(&refused(&request_with(json!({ "top_p": 1.5 }))), "top_p");
    assert_invalid(
        &refused(&request_with(json!({ "frequency_penalty": -3 }))),
        "frequency_penalty",
    );
    assert_invalid(
        &refused(&request_with(json!({ "presence_penalty": 2.5 }))),
        "presence_penalty",
    );
    assert_invalid(&refused(&request_with(json!({ "model": "  " }))), "model");
    assert_invalid(&refused(&request_with(json!({ "model": 4 }))), "model");
    assert_invalid(
        &refused(&request_with(json!({ "response_format": "json" }))),
        "response_format",
    );
}

#[test]
fn max_tokens_must_be_a_positive_integer() {
    for max in [json!(0), json!(-5), json!(1.5), json!("100")] {
        let error = refused(&request_with(json!({ "max_tokens": max })));
        assert_invalid(&error, "max_tokens");
    }
    let error = refused(&request_with(json!({ "max_completion_tokens": -1 })));
    assert_invalid(&error, "max_completion_tokens");
}

// Was a bug: `max_completion_tokens: 0` is copied into `max_tokens` before the check, so the 400
// names `max_tokens`, a parameter the client did not send.
#[test]
fn max_completion_tokens_zero_names_max_completion_tokens() {
    let error = refused(&request_with(json!({ "max_completion_tokens": 0 })));
    assert_invalid(&error, "max_completion_tokens");
}

#[test]
fn only_one_choice_is_supported() {
    for n in [2, 0, 128] {
        let error = refused(&request_with(json!({ "n": n })));
        assert_invalid(&error, "n");
        assert!(error.message.contains("n = 1"), "{error:?}");
    }
    assert!(parse(&request_with(json!({ "n": 1 }))).is_ok());
}

// Was a bug: the four-sequence check runs on the config's `stop_sequences`, so the 400 names
// `stop_sequences`; OpenAI's parameter (and the one the client sent) is `stop`.
#[test]
fn five_stop_sequences_are_a_400_about_stop() {
    let error = refused(&request_with(json!({ "stop": ["a", "b", "c", "d", "e"] })));
    assert_invalid(&error, "stop");
    assert!(error.message.contains("at most 4"), "{error:?}");
}

#[test]
fn stop_of_the_wrong_type_is_a_400() {
    let error = refused(&request_with(json!({ "stop": 5 })));
    assert_invalid(&error, "stop");
}

#[test]
fn a_fallback_with_an_empty_name_is_a_400() {
    for fallback in [json!([""]), json!(["backup", "  "]), json!("")] {
        let error = refused(&request_with(json!({ "fallback": fallback })));
        assert_eq!(error.status, 400, "{error:?}");
        assert_eq!(error.kind, "invalid_request_error");
        assert_eq!(error.param.as_deref(), Some("fallback"), "{error:?}");
        assert!(error.message.contains("empty"), "{error:?}");
    }
}

// Was a bug (minor): every other 400 of parse_chat_request reads "<param>: <what is wrong>";
// this one reads `names an empty provider ("")`, a sentence without its subject.
#[test]
fn a_fallback_with_an_empty_name_says_fallback() {
    let error = refused(&request_with(json!({ "fallback": ["backup", ""] })));
    assert_invalid(&error, "fallback");
}

#[test]
fn extensions_of_the_wrong_type_are_a_400() {
    assert_invalid(
        &refused(&request_with(json!({ "provider": 5 }))),
        "provider",
    );
    assert_invalid(
        &refused(&request_with(json!({ "fallback": [1] }))),
        "fallback",
    );
    assert_invalid(
        &refused(&request_with(json!({ "stream": "yes" }))),
        "stream",
    );
    let error = refused(&request_with(
        json!({ "stream_options": { "include_usage": "yes" } }),
    ));
    assert_eq!(error.status, 400);
    assert!(
        error
            .param
            .as_deref()
            .is_some_and(|p| p.starts_with("stream_options")),
        "{error:?}"
    );
}

// Was a bug: OpenAI marks these parameters nullable (CreateChatCompletionRequest: `temperature`
// and `top_p` are `anyOf [number, null]`, `max_tokens`, `max_completion_tokens`, `n`,
// `stream`, the penalties and `stop` are `nullable: true`), and clients do send `null` for
// "not set". `GenerationConfig`'s plain `f64`/`u32` fields refuse `null`.
#[test]
fn nullable_parameters_may_be_null() {
    let nullable = [
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "frequency_penalty",
        "presence_penalty",
        "n",
        "stream",
        "stream_options",
        "stop",
    ];
    let refused: Vec<String> = nullable
        .iter()
        .filter_map(|key| {
            let mut extra = serde_json::Map::new();
            extra.insert((*key).to_string(), Value::Null);
            parse(&request_with(Value::Object(extra)))
                .err()
                .map(|e| format!("{key}: {}", e.message))
        })
        .collect();
    assert!(refused.is_empty(), "null refused for: {refused:#?}");
}

#[test]
fn every_refusal_is_a_400_without_a_code() {
    let bodies = [
        json!({ "model": "m" }),
        request_with(json!({ "temperature": 9 })),
        request_with(json!({ "n": 3 })),
        request_with(json!({ "fallback": [""] })),
    ];
    for body in bodies {
        let error = refused(&body);
        assert_eq!(error.status, 400);
        assert_eq!(error.code, None);
        assert!(!error.message.trim().is_empty());
        assert_openai_error_body(&error.body());
    }
}

/// JSON values of any shape, biased towards the keys of a chat-completion request.
fn request_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("messages".to_string()),
        Just("role".to_string()),
        Just("content".to_string()),
        Just("model".to_string()),
        Just("temperature".to_string()),
        Just("top_p".to_string()),
        Just("max_tokens".to_string()),
        Just("max_completion_tokens".to_string()),
        Just("n".to_string()),
        Just("stop".to_string()),
        Just("stream".to_string()),
        Just("stream_options".to_string()),
        Just("include_usage".to_string()),
        Just("provider".to_string()),
        Just("fallback".to_string()),
        Just("response_format".to_string()),
        Just("system_prompt".to_string()),
        "[a-z_]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        ".{0,12}".prop_map(Value::String),
        Just(json!("user")),
        Just(json!("")),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

fn assert_refused_well(result: &Result<ChatRequest, ApiError>) {
    if let Err(error) = result {
        assert_eq!(error.status, 400, "{error:?}");
        assert_eq!(error.kind, "invalid_request_error");
        assert!(!error.message.is_empty());
        assert!(
            error.param.as_deref() != Some(""),
            "an empty param: {error:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_are_read_or_refused_without_panicking(
        body in prop::collection::vec(any::<u8>(), 0..512),
        header in proptest::option::of(".{0,8}"),
    ) {
        let result = parse_chat_request(&body, header.as_deref());
        assert_refused_well(&result);
    }

    #[test]
    fn any_json_is_read_or_refused_without_panicking(value in request_value()) {
        assert_refused_well(&parse_chat_request(value.to_string().as_bytes(), None));
    }

    #[test]
    fn any_parameters_beside_valid_messages_are_read_or_refused(
        extra in prop::collection::vec((request_value(), request_value()), 0..6),
        params in request_value(),
    ) {
        // The top level of `params` (when an object) becomes the request's parameters.
        let mut body = json!({ "messages": [{ "role": "user", "content": "Hi" }] });
        if let Value::Object(map) = params {
            for (key, value) in map {
                if key != "messages" {
                    body[key] = value;
                }
            }
        }
        for (i, (_, value)) in extra.into_iter().enumerate() {
            body[format!("x{i}")] = value;
        }
        let result = parse(&body);
        assert_refused_well(&result);
        if let Ok(chat) = result {
            prop_assert!(!messages(&chat).is_empty());
            prop_assert!(chat.call.config.completion_budget() >= 1);
            prop_assert!(chat.call.config.validate().is_ok());
        }
    }
}

// ---------------------------------------------------------------------------------------
// ApiError::from_error: what a failed call answers

#[test]
fn rate_limited_is_429() {
    let api = ApiError::from_error(&rate_limited("main"));
    assert_eq!(api.status, 429);
    assert_eq!(api.kind, "rate_limit_error");
    assert_eq!(api.code.as_deref(), Some("rate_limit_exceeded"));
    assert!(api.message.contains("main"), "{api:?}");
}

#[test]
fn a_timeout_is_504() {
    let api = ApiError::from_error(&timeout("main"));
    assert_eq!(api.status, 504);
    assert_eq!(api.kind, "server_error");
    assert_eq!(api.code.as_deref(), Some("upstream_timeout"));
    assert!(api.message.contains("main"), "{api:?}");
}

#[test]
fn no_answer_or_a_broken_one_is_502() {
    for error in [
        Error::Connection {
            provider: "main".into(),
            message: "refused".into(),
        },
        Error::InvalidResponse {
            provider: "main".into(),
            message: "no choices".into(),
        },
    ] {
        let api = ApiError::from_error(&error);
        assert_eq!(api.status, 502, "{error:?}");
        assert_eq!(api.kind, "server_error");
        assert_eq!(api.code.as_deref(), Some("upstream_error"));
        assert!(api.message.contains("main"), "{api:?}");
    }
}

#[test]
fn the_upstreams_own_client_errors_pass_through() {
    let error = Error::Http {
        provider: "main".into(),
        status: 400,
        message: "temperature is too high".into(),
        error_type: Some("invalid_request_error".into()),
        code: Some("invalid_value".into()),
        param: Some("temperature".into()),
        retry_after_ms: None,
        should_retry: None,
    };
    let api = ApiError::from_error(&error);
    assert_eq!(api.status, 400);
    assert_eq!(api.kind, "invalid_request_error");
    assert_eq!(api.code.as_deref(), Some("invalid_value"));
    assert_eq!(api.param.as_deref(), Some("temperature"));
    assert!(
        api.message.contains("main"),
        "the provider is named: {api:?}"
    );
    assert!(api.message.contains("temperature is too high"), "{api:?}");

    let error = Error::Http {
        provider: "main".into(),
        status: 404,
        message: "The model `gpt-9` does not exist".into(),
        error_type: Some("invalid_request_error".into()),
        code: Some("model_not_found".into()),
        param: None,
        retry_after_ms: None,
        should_retry: None,
    };
    let api = ApiError::from_error(&error);
    assert_eq!(api.status, 404);
    assert_eq!(api.code.as_deref(), Some("model_not_found"));
    assert_eq!(api.param, None);

    let api = ApiError::from_error(&http(422, "main"));
    assert_eq!(api.status, 422);
    assert_eq!(
        api.code.as_deref(),
        Some("upstream_error"),
        "no upstream code"
    );
}

#[test]
fn the_servers_own_auth_failures_are_502() {
    // A 401/403 is our key's fault, not the client's: telling the client it is
    // unauthenticated would send it looking for a mistake it did not make.
    for status in [401, 403] {
        let api = ApiError::from_error(&http(status, "main"));
        assert_eq!(api.status, 502, "{status}");
        assert_eq!(api.kind, "server_error");
        assert_eq!(api.code.as_deref(), Some("upstream_error"));
    }
}

#[test]
fn upstream_server_errors_are_502() {
    for status in [500, 502, 503, 504, 529] {
        let api = ApiError::from_error(&http(status, "main"));
        assert_eq!(api.status, 502, "{status}");
        assert_eq!(api.kind, "server_error");
    }
}

#[test]
fn a_provider_that_cannot_be_set_up_is_503() {
    let error = Error::config("providers.x.api_key", "is missing (set OPENAI_API_KEY)");
    let api = ApiError::from_error(&error);
    assert_eq!(api.status, 503);
    assert_eq!(api.kind, "server_error");
    assert_eq!(api.code.as_deref(), Some("provider_unavailable"));
    assert_eq!(api.param, None, "not the client's parameter");
    assert!(api.message.contains("providers.x.api_key"), "{api:?}");
}

#[test]
fn a_calls_config_error_is_a_400_about_its_param() {
    let api = ApiError::from_error(&Error::config(
        "config.temperature",
        "must be between 0 and 2",
    ));
    assert_eq!(api.status, 400);
    assert_eq!(api.kind, "invalid_request_error");
    assert_eq!(api.param.as_deref(), Some("temperature"));
    assert!(api.message.contains("must be between 0 and 2"), "{api:?}");

    let api = ApiError::from_error(&Error::config("messages[0].role", "must be one of …"));
    assert_eq!(api.status, 400);
    assert_eq!(api.param.as_deref(), Some("messages[0].role"));
}

#[test]
fn all_providers_failed_answers_as_the_last_one() {
    let errors = vec![
        ("main".to_string(), timeout("main")),
        ("backup".to_string(), rate_limited("backup")),
    ];
    let api = ApiError::from_error(&Error::AllProvidersFailed { errors });
    assert_eq!(api.status, 429);
    assert_eq!(api.code.as_deref(), Some("rate_limit_exceeded"));
    assert!(
        api.message.contains("main") && api.message.contains("backup"),
        "every provider tried is named: {api:?}"
    );

    let errors = vec![
        ("main".to_string(), rate_limited("main")),
        ("backup".to_string(), timeout("backup")),
    ];
    assert_eq!(
        ApiError::from_error(&Error::AllProvidersFailed { errors }).status,
        504
    );

    let errors = vec![("main".to_string(), http(404, "main"))];
    assert_eq!(
        ApiError::from_error(&Error::AllProvidersFailed { errors }).status,
        404
    );

    let api = ApiError::from_error(&Error::AllProvidersFailed { errors: vec![] });
    assert_eq!(api.status, 502);
    assert!(!api.message.is_empty());
}

#[test]
fn an_aborted_call_is_499() {
    let api = ApiError::from_error(&Error::Aborted);
    assert_eq!(api.status, 499);
    assert_eq!(api.code.as_deref(), Some("aborted"));
}

#[test]
fn every_error_body_has_exactly_openais_keys() {
    let errors = [
        rate_limited("main"),
        timeout("main"),
        Error::Connection {
            provider: "main".into(),
            message: "reset".into(),
        },
        Error::InvalidResponse {
            provider: "main".into(),
            message: "?".into(),
        },
        http(400, "main"),
        http(401, "main"),
        http(500, "main"),
        Error::config("providers.x.api_key", "missing"),
        Error::config("config.top_p", "too high"),
        Error::AllProvidersFailed {
            errors: vec![("a".into(), timeout("a"))],
        },
        Error::AllProvidersFailed { errors: vec![] },
        Error::Aborted,
    ];
    for error in &errors {
        let api = ApiError::from_error(error);
        let body = api.body();
        assert_openai_error_body(&body);
        assert_eq!(body["error"]["message"], api.message.as_str());
        assert_eq!(body["error"]["type"], api.kind);
        assert_eq!(body["error"]["param"], json!(api.param));
        assert_eq!(body["error"]["code"], json!(api.code));
        assert!(
            (400..600).contains(&api.status),
            "{error:?} → {}",
            api.status
        );
    }
}

#[test]
fn an_invalid_error_body_has_a_null_code() {
    let body = ApiError::invalid(Some("n"), "only n = 1").body();
    assert_eq!(
        body,
        json!({ "error": { "message": "only n = 1", "type": "invalid_request_error", "param": "n", "code": null } })
    );
}

// ---------------------------------------------------------------------------------------
// Answers and stream chunks

#[test]
fn a_completion_has_the_specs_shape() {
    let body = completion_body("rsp_1", 1_741_570_283, &response());
    for key in ["choices", "created", "id", "model", "object"] {
        assert!(body.get(key).is_some(), "required {key} missing: {body}");
    }
    assert_eq!(body["id"], "rsp_1");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["created"], 1_741_570_283);
    assert_eq!(body["model"], "gpt-4o-2024-08-06");

    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    let choice = &choices[0];
    for key in ["finish_reason", "index", "message", "logprobs"] {
        assert!(choice.get(key).is_some(), "required choice.{key} missing");
    }
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["logprobs"], Value::Null);
    let message = &choice["message"];
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["content"], "The answer is 4.");
    assert_eq!(message["reasoning_content"], "2 and 2 make 4.");
    assert_eq!(message["refusal"], Value::Null);

    assert_eq!(
        body["usage"],
        json!({ "prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18 })
    );
}

#[test]
fn a_completion_without_thinking_has_null_reasoning_content() {
    let mut answer = response();
    answer.thinking = None;
    answer.finish_reason = Some("length".into());
    let body = completion_body("rsp_2", 0, &answer);
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["reasoning_content"], Value::Null);
    assert_eq!(choice["message"]["content"], "The answer is 4.");
    assert_eq!(choice["finish_reason"], "length");
}

// Was a bug: `tools` pass through to the provider, but an answer's `tool_calls` (kept only in
// `raw_response`) never reach the client: the message has no `tool_calls`, so an OpenAI
// client that asked for tools sees `finish_reason: "tool_calls"` and an empty content.
#[test]
fn a_completion_keeps_the_models_tool_calls() {
    let tool_calls = json!([{
        "id": "call_1", "type": "function",
        "function": { "name": "add", "arguments": "{\"a\":2,\"b\":2}" }
    }]);
    let mut answer = response();
    answer.content = String::new();
    answer.thinking = None;
    answer.finish_reason = Some("tool_calls".into());
    answer.raw_response = Some(json!({
        "id": "chatcmpl-upstream", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{ "index": 0, "finish_reason": "tool_calls", "logprobs": null,
                      "message": { "role": "assistant", "content": null, "tool_calls": tool_calls } }]
    }));
    let body = completion_body("rsp_3", 0, &answer);
    assert_eq!(body["choices"][0]["message"]["tool_calls"], tool_calls);
}

#[test]
fn a_chunk_is_one_sse_event_of_the_specs_shape() {
    let delta = delta_object("Hel\nlo", "");
    let event = chunk_event("rsp_1", 1_700_000_000, "gpt-4o", Some(delta), None, None);
    assert!(event.starts_with("data: {"), "{event:?}");
    assert!(event.ends_with("}\n\n"), "{event:?}");
    let chunk = event_json(&event);
    assert_eq!(chunk["id"], "rsp_1");
    assert_eq!(chunk["object"], "chat.completion.chunk");
    assert_eq!(chunk["created"], 1_700_000_000);
    assert_eq!(chunk["model"], "gpt-4o");
    let choices = chunk["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    for key in ["delta", "finish_reason", "index"] {
        assert!(
            choices[0].get(key).is_some(),
            "required choice.{key} missing"
        );
    }
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(
        choices[0]["delta"],
        json!({ "content": "Hel\nlo" }),
        "the newline travels escaped"
    );
    assert_eq!(choices[0]["finish_reason"], Value::Null);
    assert!(
        chunk.get("usage").is_none(),
        "no usage before the end: {chunk}"
    );
    assert!(
        chunk.get("system_fingerprint").is_none(),
        "no fingerprint to give: the field is left out (the spec allows a string, not null)"
    );
}

#[test]
fn the_first_chunk_carries_the_role() {
    let event = chunk_event(
        "rsp_1",
        0,
        "gpt-4o",
        Some(json!({ "role": "assistant", "content": "" })),
        None,
        None,
    );
    let chunk = event_json(&event);
    assert_eq!(chunk["choices"][0]["delta"]["role"], "assistant");
}

#[test]
fn the_last_chunk_has_the_finish_reason() {
    let event = chunk_event("rsp_1", 0, "gpt-4o", Some(json!({})), Some("stop"), None);
    let chunk = event_json(&event);
    assert_eq!(chunk["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunk["choices"][0]["delta"], json!({}));
}

#[test]
fn the_usage_chunk_has_no_choices() {
    let usage = Usage {
        prompt_tokens: 3,
        completion_tokens: 4,
        total_tokens: 7,
    };
    let event = chunk_event("rsp_1", 0, "gpt-4o", None, None, Some(&usage));
    let chunk = event_json(&event);
    assert_eq!(chunk["object"], "chat.completion.chunk");
    assert_eq!(chunk["choices"], json!([]));
    assert_eq!(
        chunk["usage"],
        json!({ "prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7 })
    );
}

#[test]
fn a_delta_holds_only_what_is_new() {
    assert_eq!(delta_object("", ""), json!({}));
    assert_eq!(delta_object("Hi", ""), json!({ "content": "Hi" }));
    assert_eq!(
        delta_object("", "hmm"),
        json!({ "reasoning_content": "hmm" })
    );
    assert_eq!(
        delta_object("Hi", "hmm"),
        json!({ "content": "Hi", "reasoning_content": "hmm" })
    );
}

#[test]
fn the_stream_ends_with_done() {
    assert_eq!(DONE_EVENT, "data: [DONE]\n\n");
}

#[test]
fn an_error_inside_a_stream_is_an_error_body_event() {
    let api = ApiError::from_error(&timeout("main"));
    let event = error_event(&api);
    let body = event_json(&event);
    assert_openai_error_body(&body);
    assert_eq!(body, api.body());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn chunks_of_any_text_stay_one_event(content in "\\PC*|[\\n\\r]*", thinking in ".*", model in ".{0,12}") {
        let event = chunk_event("rsp_1", 1, &model, Some(delta_object(&content, &thinking)), None, None);
        let chunk = event_json(&event);
        let delta = &chunk["choices"][0]["delta"];
        prop_assert_eq!(delta.get("content").and_then(Value::as_str).unwrap_or(""), content.as_str());
        prop_assert_eq!(delta.get("reasoning_content").and_then(Value::as_str).unwrap_or(""), thinking.as_str());
    }
}

// ---------------------------------------------------------------------------------------
// The bearer token

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    for header in ["Bearer sk-1", "bearer sk-1", "BEARER sk-1", "bEaReR sk-1"] {
        assert_eq!(bearer_token(Some(header)), Some("sk-1"), "{header:?}");
    }
}

#[test]
fn spaces_around_the_token_are_ignored() {
    for header in ["Bearer   sk-1", "  Bearer sk-1  ", "Bearer sk-1 "] {
        assert_eq!(bearer_token(Some(header)), Some("sk-1"), "{header:?}");
    }
}

#[test]
fn no_token_is_none() {
    for header in ["Bearer", "Bearer ", "Bearer     ", "", "   "] {
        assert_eq!(bearer_token(Some(header)), None, "{header:?}");
    }
    assert_eq!(bearer_token(None), None);
}

#[test]
fn other_schemes_are_none() {
    for header in [
        "Basic dXNlcjpwYXNz",
        "Token sk-1",
        "sk-1",
        "Bearersk-1",
        "Bearer-sk-1",
    ] {
        assert_eq!(bearer_token(Some(header)), None, "{header:?}");
    }
}

#[test]
fn tokens_match_only_when_equal() {
    assert!(token_matches("sk-secret", "sk-secret"));
    assert!(token_matches("ключ-🔑", "ключ-🔑"));
    assert!(!token_matches("sk-secreT", "sk-secret"), "one byte differs");
    assert!(
        !token_matches("xk-secret", "sk-secret"),
        "the first byte differs"
    );
    assert!(!token_matches("sk-sec", "sk-secret"), "a prefix");
    assert!(!token_matches("sk-secret-and-more", "sk-secret"), "longer");
    assert!(
        !token_matches("sk-secret\0", "sk-secret"),
        "zero padding is not the end"
    );
    assert!(!token_matches("", "sk-secret"));
}

#[test]
fn an_empty_expected_token_never_matches() {
    assert!(!token_matches("", ""));
    assert!(!token_matches("anything", ""));
    assert!(!token_matches("\0", ""));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn token_matches_is_equality_for_nonempty_expected(a in ".{0,12}", b in ".{1,12}") {
        prop_assert_eq!(token_matches(&a, &b), a == b);
        prop_assert!(token_matches(&b, &b));
    }
}

#[test]
fn a_generate_request_is_read_and_checked() {
    let request = parse_generate_request(
        br#"{"prompt": "2+2?", "config": {"max_tokens": 50}, "provider": "a", "fallback": ["b"]}"#,
    )
    .expect("valid");
    assert_eq!(request.config.max_tokens, Some(50));
    assert_eq!(
        request.route,
        Route::Failover {
            first: Some("a".to_string()),
            then: vec!["b".to_string()]
        }
    );
    let stored: Value = serde_json::from_str(&request.stored).unwrap();
    assert_eq!(stored["prompt"], "2+2?");
    assert_eq!(stored["fallback"], json!(["b"]));

    assert_invalid(
        &parse_generate_request(br#"{"prompt": "x", "config": {"temperature": 5}}"#).unwrap_err(),
        "temperature",
    );
    assert_invalid(
        &parse_generate_request(br#"{"prompt": "x", "extra": 1}"#).unwrap_err(),
        "body.extra",
    );
    let not_utf8 = parse_generate_request(b"{\"prompt\": \"\xff\"}").unwrap_err();
    assert_eq!(not_utf8.status, 400);
    assert!(not_utf8.message.contains("UTF-8"), "{not_utf8:?}");
    let huge = vec![b' '; MAX_REQUEST_BYTES + 1];
    assert_eq!(parse_generate_request(&huge).unwrap_err().status, 413);
}

// ---------------------------------------------------------------------------------------
// Endpoint::resolve

#[test]
fn methods_and_paths_name_an_endpoint_or_an_openai_error() {
    use llm_distiller::endpoints::Endpoint;
    use llm_distiller::openai_api::Hint;
    let id = "rsp_0000000000000000000000000001";
    let cases = [
        ("POST", "/v1/chat/completions", Endpoint::ChatCompletions),
        ("POST", "/v1/generate", Endpoint::Generate),
        ("GET", "/v1/responses", Endpoint::ListResponses),
        ("GET", "/v1/providers", Endpoint::Providers),
        ("GET", "/health", Endpoint::Health),
        ("HEAD", "/health", Endpoint::Health),
        ("OPTIONS", "/v1/anything", Endpoint::Preflight),
        ("POST", "/v1/files", Endpoint::CreateFile),
        ("GET", "/v1/files", Endpoint::ListFiles),
        ("POST", "/v1/batches", Endpoint::CreateBatch),
        ("GET", "/v1/batches", Endpoint::ListBatches),
    ];
    for (method, path, expected) in cases {
        assert_eq!(
            Endpoint::resolve(method, path),
            Ok(expected),
            "{method} {path}"
        );
    }
    assert_eq!(
        Endpoint::resolve("GET", &format!("/v1/responses/{id}")),
        Ok(Endpoint::GetResponse(id.to_string()))
    );
    let file = "file-0123456789abcdef0123456789ab";
    let batch = "batch_0123456789abcdef0123456789ab";
    for (method, path, expected) in [
        (
            "GET",
            format!("/v1/files/{file}"),
            Endpoint::GetFile(file.into()),
        ),
        (
            "DELETE",
            format!("/v1/files/{file}"),
            Endpoint::DeleteFile(file.into()),
        ),
        (
            "GET",
            format!("/v1/files/{file}/content"),
            Endpoint::FileContent(file.into()),
        ),
        (
            "GET",
            format!("/v1/batches/{batch}"),
            Endpoint::GetBatch(batch.into()),
        ),
        (
            "POST",
            format!("/v1/batches/{batch}/cancel"),
            Endpoint::CancelBatch(batch.into()),
        ),
    ] {
        assert_eq!(
            Endpoint::resolve(method, &path),
            Ok(expected),
            "{method} {path}"
        );
    }
    assert!(!Endpoint::Health.needs_token() && !Endpoint::Preflight.needs_token());
    assert!(Endpoint::ChatCompletions.needs_token() && Endpoint::Providers.needs_token());

    for (method, path, allow) in [
        ("GET", "/v1/chat/completions", "POST"),
        ("DELETE", "/v1/responses", "GET"),
        ("POST", "/health", "GET, HEAD"),
        ("PUT", "/v1/files", "GET, POST"),
        (
            "POST",
            "/v1/batches/batch_0123456789abcdef0123456789ab",
            "GET",
        ),
    ] {
        let error = Endpoint::resolve(method, path).unwrap_err();
        assert_eq!(error.status, 405, "{method} {path}");
        assert_eq!(error.hint, Some(Hint::Allow(allow)));
        assert_eq!(error.code.as_deref(), Some("method_not_allowed"));
    }
    for path in [
        "/v1/nope",
        "/v1/responses/not-an-id",
        "/",
        "/v1/chat/completions/x",
    ] {
        let error = Endpoint::resolve("GET", path).unwrap_err();
        assert_eq!(error.status, 404, "{path}");
        assert_eq!(error.code.as_deref(), Some("not_found"));
    }
}

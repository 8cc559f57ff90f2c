//! The JavaScript surface (feature `js`) against the scripted upstream on 127.0.0.1, run
//! by `wasm-pack test --node` (`tests/js_node.rs`) and `--headless --chrome`
//! (`tests/js_browser.rs`). Real fetch, real timers, real server: nothing is faked.
//!
//! The upstream's URL is baked in at build time (`UPSTREAM_URL`, set by
//! `scripts/test-wasm.sh`, which starts and stops the server).

use js_sys::{Promise, Reflect};
use serde_json::{json, Value};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::wasm_bindgen_test;

use llm_distiller::js::{JsCompletionStream, JsProviderManager, JsRateLimiter, JsThinkingStream};

const KEY: &str = "sk-test-wasm-0123456789";

fn upstream() -> &'static str {
    // Read at build time, so that the test binary can be built (and linted) without it.
    match option_env!("UPSTREAM_URL") {
        Some(url) => url,
        None => {
            panic!("UPSTREAM_URL must be set when the wasm tests are built (scripts/test-wasm.sh)")
        }
    }
}

/// A unique key per test run and test, so the server's counters and logs are ours alone.
fn key(test: &str) -> String {
    format!("{test}-{}", js_sys::Date::now() as u64)
}

fn base(scenario: &str, key: &str) -> String {
    format!("{}/s/{scenario}/{key}/v1", upstream())
}

fn js(value: &Value) -> JsValue {
    js_sys::JSON::parse(&value.to_string()).expect("valid JSON")
}

fn object(value: &Value) -> Option<js_sys::Object> {
    Some(js(value).unchecked_into())
}

fn rust(value: &JsValue) -> Value {
    let text = js_sys::JSON::stringify(value)
        .expect("stringify")
        .as_string()
        .unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn prop(value: &JsValue, name: &str) -> JsValue {
    Reflect::get(value, &name.into()).unwrap_or(JsValue::UNDEFINED)
}

/// A retry policy that keeps the tests quick (the default backoff starts at 1 s).
fn fast_retry(max_retries: u32) -> Value {
    json!({ "max_retries": max_retries, "base_delay_ms": 20, "max_backoff_ms": 100 })
}

fn manager(providers: Value) -> JsProviderManager {
    JsProviderManager::new(js(&json!({ "providers": providers }))).expect("a valid configuration")
}

fn openai(scenario: &str, key: &str) -> Value {
    json!({ "type": "openai", "api_key": KEY, "base_url": base(scenario, key), "model": "test-model", "retry": fast_retry(3) })
}

async fn settle(promise: Promise) -> Result<JsValue, JsValue> {
    JsFuture::from(promise).await
}

async fn log(key: &str) -> Vec<Value> {
    let response = gloo_net::http::Request::get(&format!("{}/__log/{key}", upstream()))
        .send()
        .await
        .expect("the log endpoint answers");
    let text = response.text().await.expect("the log arrives");
    serde_json::from_str(&text).expect("the log is JSON")
}

fn error_code(error: &JsValue) -> String {
    prop(error, "code").as_string().unwrap_or_default()
}

#[wasm_bindgen_test]
async fn a_normal_answer_separates_thinking_and_reasoning() {
    let key = key("normal");
    let manager = manager(json!({ "main": openai("normal", &key) }));
    let response = settle(manager.generate(
        "What is 2+2?".into(),
        object(&json!({ "max_tokens": 50 })),
        JsValue::NULL,
        None,
    ))
    .await
    .expect("an answer");
    let r = rust(&response);
    assert_eq!(r["content"], "Answer to: What is 2+2?");
    assert_eq!(
        r["thinking"],
        "Reasoning about: What is 2+2?\n\nThinking about: What is 2+2?"
    );
    assert_eq!(r["reasoning"], "Reasoning about: What is 2+2?");
    assert_eq!(r["finish_reason"], "stop");
    assert_eq!(r["provider"], "main");
    assert_eq!(r["attempts"], 1);
    assert!(r["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert!(r["raw_response"]["choices"].is_array());
    let seen = log(&key).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["headers"]["authorization"], "present");
    assert_eq!(seen[0]["body"]["max_tokens"], 50);
    assert_eq!(seen[0]["body"]["model"], "test-model");
}

#[wasm_bindgen_test]
async fn a_conversation_can_be_sent_as_messages() {
    let key = key("messages");
    let manager = manager(json!({ "main": openai("plain", &key) }));
    let messages = js(&json!([
        { "role": "system", "content": "Be brief." },
        { "role": "user", "content": "Hi" }
    ]));
    let r = rust(
        &settle(manager.generate(messages, None, JsValue::NULL, None))
            .await
            .expect("answer"),
    );
    assert_eq!(r["content"], "Answer to: Hi");
    assert_eq!(
        log(&key).await[0]["body"]["messages"][0]["content"],
        "Be brief."
    );
}

#[wasm_bindgen_test]
async fn rate_limited_answers_are_retried_after_the_servers_wait() {
    let key = key("ratelimited");
    let manager = manager(json!({ "main": openai("rate_limited_then_ok:2", &key) }));
    let started = js_sys::Date::now();
    let r = rust(
        &settle(manager.generate("q".into(), None, JsValue::NULL, None))
            .await
            .expect("ok at last"),
    );
    assert_eq!(r["attempts"], 3);
    assert!(
        js_sys::Date::now() - started >= 600.0,
        "two waits of retry-after-ms 300"
    );
    let at: Vec<f64> = log(&key)
        .await
        .iter()
        .map(|s| s["at_ms"].as_f64().unwrap())
        .collect();
    assert_eq!(at.len(), 3);
    assert!(at[1] - at[0] >= 290.0 && at[2] - at[1] >= 290.0, "{at:?}");
    // The limiter saw the headers: the server's limit, and nothing left in flight.
    let status = rust(&manager.provider_status().unwrap());
    assert_eq!(
        status["main"]["rate_limiter"]["api_requests_per_minute"],
        10000
    );
    assert_eq!(status["main"]["rate_limiter"]["in_flight"], 0);
}

#[wasm_bindgen_test]
async fn server_errors_are_retried_then_reported_with_status_and_provider() {
    let key = key("500");
    let manager = manager(json!({ "main": openai("server_error_then_ok:1", &key) }));
    let r = rust(
        &settle(manager.generate("q".into(), None, JsValue::NULL, None))
            .await
            .expect("ok"),
    );
    assert_eq!(r["attempts"], 2);

    let key = self::key("500always");
    let mut config = openai("server_error", &key);
    config["retry"] = fast_retry(2);
    let manager = self::manager(json!({ "main": config }));
    let error = settle(manager.generate("q".into(), None, JsValue::NULL, None))
        .await
        .unwrap_err();
    assert!(error.is_instance_of::<js_sys::Error>());
    assert_eq!(error_code(&error), "http");
    assert_eq!(prop(&error, "status").as_f64(), Some(500.0));
    assert_eq!(
        prop(&error, "provider").as_string().as_deref(),
        Some("main")
    );
    assert_eq!(log(&key).await.len(), 3);
}

#[wasm_bindgen_test]
async fn malformed_and_truncated_bodies_are_invalid_responses() {
    for scenario in ["malformed", "truncated"] {
        let key = key(scenario);
        let mut config = openai(scenario, &key);
        config["retry"] = fast_retry(1);
        let manager = manager(json!({ "main": config }));
        let error = settle(manager.generate("q".into(), None, JsValue::NULL, None))
            .await
            .unwrap_err();
        let code = error_code(&error);
        // A truncated body may end as a broken read (connection) or as cut JSON.
        let expected: &[&str] = match scenario {
            "malformed" => &["invalid_response"],
            _ => &["invalid_response", "connection"],
        };
        assert!(expected.contains(&code.as_str()), "{scenario}: {code}");
        assert_eq!(log(&key).await.len(), 2, "{scenario}: retried once");
    }
}

#[wasm_bindgen_test]
async fn a_slow_answer_times_out_and_an_abort_stops_the_call() {
    let key = key("slow");
    let mut config = openai("slow:3000", &key);
    config["retry"] = fast_retry(0);
    let manager = manager(json!({ "main": config }));
    let started = js_sys::Date::now();
    let error = settle(manager.generate(
        "q".into(),
        None,
        JsValue::NULL,
        object(&json!({ "timeout_ms": 200 })),
    ))
    .await
    .unwrap_err();
    assert_eq!(error_code(&error), "timeout");
    let took = js_sys::Date::now() - started;
    assert!((190.0..2_000.0).contains(&took), "{took}");

    let controller = web_sys::AbortController::new().unwrap();
    let options = js_sys::Object::new();
    Reflect::set(&options, &"signal".into(), &controller.signal()).unwrap();
    let call = manager.generate("q".into(), None, JsValue::NULL, Some(options));
    let abort = controller.clone();
    let timer = wasm_bindgen::closure::Closure::once_into_js(move || abort.abort());
    let global = js_sys::global();
    let set_timeout: js_sys::Function = prop(&global, "setTimeout").unchecked_into();
    set_timeout
        .call2(&JsValue::NULL, &timer, &JsValue::from(100))
        .unwrap();
    let started = js_sys::Date::now();
    let error = JsFuture::from(call).await.unwrap_err();
    assert_eq!(error_code(&error), "aborted");
    assert!(js_sys::Date::now() - started < 2_000.0);
}

#[wasm_bindgen_test]
async fn azure_requests_have_azures_shape() {
    let key = key("azure");
    let manager = manager(json!({ "az": {
        "type": "azure_openai", "api_key": "azure-key-0123456789",
        "endpoint": format!("{}/s/azure/{key}", upstream()), "deployment_name": "gpt4o-deploy",
        "retry": fast_retry(0) } }));
    let r = rust(
        &settle(manager.generate("Ahoy".into(), None, "az".into(), None))
            .await
            .expect("azure answers"),
    );
    assert_eq!(r["content"], "Answer to: Ahoy");
    assert_eq!(r["model"], "gpt4o-deploy");
    let seen = log(&key).await;
    assert_eq!(
        seen[0]["path"],
        format!("/s/azure/{key}/openai/deployments/gpt4o-deploy/chat/completions")
    );
    assert_eq!(seen[0]["query"]["api-version"], "2024-10-21");
    assert_eq!(seen[0]["headers"]["api-key"], "present");
    assert!(seen[0]["headers"].get("authorization").is_none());
    assert!(seen[0]["body"].get("model").is_none());
}

#[wasm_bindgen_test]
async fn failover_goes_in_the_given_order() {
    let key = key("failover");
    let mut broken = openai("server_error", &key);
    broken["retry"] = fast_retry(0);
    let manager = manager(json!({ "broken": broken, "good": openai("plain", &key) }));
    let order = vec!["broken".to_string(), "good".to_string()];
    let r = rust(
        &settle(manager.generate_with_failover("q".into(), None, js(&json!(order)), None))
            .await
            .expect("good answers"),
    );
    assert_eq!(r["provider"], "good");
    let scenarios: Vec<String> = log(&key)
        .await
        .iter()
        .map(|s| s["scenario"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(scenarios, vec!["server_error", "plain"]);

    let order = vec!["broken".to_string()];
    let error = settle(manager.generate_with_failover("q".into(), None, js(&json!(order)), None))
        .await
        .unwrap_err();
    assert_eq!(error_code(&error), "all_providers_failed");
    let errors = prop(&error, "errors");
    assert_eq!(js_sys::Array::from(&errors).length(), 1);
}

#[wasm_bindgen_test]
async fn the_limiter_paces_by_tokens() {
    // 600,000 tokens a minute = 10 a millisecond. Two concurrent requests reserving
    // 305,000 tokens each: the first goes at once, the second waits for about 10,000
    // tokens of refill, about 1 s.
    let key = key("pacing");
    let mut config = openai("plain", &key);
    config["rate_limit"] = json!({ "requests_per_minute": 1000, "tokens_per_minute": 600000 });
    let manager = manager(json!({ "main": config }));
    let options = object(&json!({ "concurrency": 2 }));
    let results = rust(
        &settle(manager.generate_batch(
            js(&json!(["a", "b"])),
            object(&json!({ "max_tokens": 305000 })),
            options,
        ))
        .await
        .expect("batch"),
    );
    assert!(
        results.as_array().unwrap().iter().all(|r| r["ok"] == true),
        "{results}"
    );
    let at: Vec<f64> = log(&key)
        .await
        .iter()
        .map(|s| s["at_ms"].as_f64().unwrap())
        .collect();
    let gap = at[1] - at[0];
    assert!(
        (800.0..3_000.0).contains(&gap),
        "the second request waited for the refill: {gap} ms"
    );
    let waited: Vec<f64> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["response"]["waited_ms"].as_f64().unwrap())
        .collect();
    assert!(waited.iter().any(|w| *w > 800.0), "{waited:?}");
}

#[wasm_bindgen_test]
async fn a_batch_gives_ordered_results_and_progress_events() {
    let key = key("batch");
    let manager = manager(json!({ "main": openai("plain", &key) }));
    let prompts = js(&json!(["p0", "p1", "p2", "p3", "p4", "p5"]));
    let events = js_sys::Array::new();
    let sink = events.clone();
    let on_progress = wasm_bindgen::closure::Closure::<dyn FnMut(JsValue, JsValue, JsValue)>::new(
        move |done: JsValue, total: JsValue, item: JsValue| {
            sink.push(&js_sys::Array::of3(&done, &total, &prop(&item, "ok")));
        },
    );
    let options = js_sys::Object::new();
    Reflect::set(&options, &"concurrency".into(), &JsValue::from(2)).unwrap();
    Reflect::set(&options, &"onProgress".into(), on_progress.as_ref()).unwrap();
    let results = rust(
        &settle(manager.generate_batch(prompts, None, Some(options)))
            .await
            .expect("batch"),
    );
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), 6);
    for (i, item) in results.iter().enumerate() {
        assert_eq!(item["ok"], true);
        assert_eq!(item["response"]["content"], format!("Answer to: p{i}"));
    }
    let events = rust(&events);
    assert_eq!(events.as_array().unwrap().len(), 6);
    for (i, event) in events.as_array().unwrap().iter().enumerate() {
        assert_eq!(event, &json!([i + 1, 6, true]));
    }
    drop(on_progress);
}

/// Drains a stream through its `next()`, which resolves to each item, then `undefined`.
async fn drain(stream: JsCompletionStream) -> Result<(String, String, Value, usize), JsValue> {
    let (mut content, mut thinking, mut done, mut deltas) =
        (String::new(), String::new(), Value::Null, 0);
    for _ in 0..10_000 {
        let item = JsFuture::from(stream.next()).await?;
        if item.is_undefined() {
            return Ok((content, thinking, done, deltas));
        }
        match prop(&item, "type").as_string().as_deref() {
            Some("delta") => {
                deltas += 1;
                content.push_str(&prop(&item, "content").as_string().unwrap_or_default());
                thinking.push_str(&prop(&item, "thinking").as_string().unwrap_or_default());
            }
            Some("done") => done = rust(&prop(&item, "response")),
            other => panic!("unexpected item type {other:?}"),
        }
    }
    panic!("the stream did not end");
}

#[wasm_bindgen_test]
async fn a_stream_with_split_tags_gives_the_one_shot_result() {
    // What the upstream sends for each, taken apart by hand.
    let expected = [
        ("stream_split", "The answer is 4.", "step one, step two"),
        (
            "stream_split:utf8",
            "The answer is 4 ✓ (½ of 8) 🎉",
            "step one → step two",
        ),
        (
            "normal",
            "Answer to: q",
            "Reasoning about: q\n\nThinking about: q",
        ),
    ];
    for (scenario, expected_content, expected_thinking) in expected {
        let key = key("stream");
        let manager = manager(json!({ "main": openai(scenario, &key) }));
        let stream = manager
            .stream("q".into(), None, JsValue::NULL, None)
            .expect("a stream");
        let (content, thinking, done, deltas) = drain(stream).await.expect("no error");
        assert_eq!(content, expected_content, "{scenario}");
        assert_eq!(thinking, expected_thinking, "{scenario}");
        assert_eq!(done["content"], expected_content, "{scenario}");
        assert_eq!(done["thinking"], expected_thinking, "{scenario}");
        assert_eq!(done["finish_reason"], "stop");
        // stream_split writes its pieces apart in time, so they arrive apart.
        if scenario.starts_with("stream_split") {
            assert!(
                deltas >= 2,
                "{scenario}: content streams in pieces ({deltas})"
            );
        }
        assert_eq!(log(&key).await[0]["body"]["stream"], true);
    }
}

#[wasm_bindgen_test]
async fn a_broken_stream_rejects() {
    let key = key("streambreak");
    let manager = manager(json!({ "main": openai("stream_break", &key) }));
    let stream = manager
        .stream("q".into(), None, JsValue::NULL, None)
        .expect("a stream");
    let error = drain(stream).await.unwrap_err();
    assert_eq!(error_code(&error), "connection");
}

#[wasm_bindgen_test]
async fn keys_never_reach_errors() {
    let key = key("echo");
    let mut config = openai("echo_key_error", &key);
    config["retry"] = fast_retry(0);
    let manager = manager(json!({ "main": config }));
    let error = settle(manager.generate("q".into(), None, JsValue::NULL, None))
        .await
        .unwrap_err();
    let message = prop(&error, "message").as_string().unwrap();
    assert!(!message.contains(KEY), "{message}");
    assert!(message.contains("[redacted]"), "{message}");
    assert_eq!(prop(&error, "status").as_f64(), Some(401.0));
}

#[wasm_bindgen_test]
fn invalid_configuration_throws_an_error_naming_the_field() {
    let error = JsProviderManager::new(js(&json!({ "providers": { "p": { "type": "openai", "api_key": "k", "rate_limit": { "requests_per_minute": 0 } } } })))
        .err()
        .expect("invalid");
    assert_eq!(error_code(&error), "config");
    assert_eq!(
        prop(&error, "field").as_string().as_deref(),
        Some("providers.p.rate_limit.requests_per_minute")
    );
    let error = JsProviderManager::new(js(&json!({ "providers": { "p": { "type": "openai" } } })))
        .err()
        .expect("no key in a browser or an empty env");
    assert!(prop(&error, "message")
        .as_string()
        .unwrap()
        .contains("OPENAI_API_KEY"));
}

#[wasm_bindgen_test]
fn thinking_streams_from_js() {
    let mut stream = JsThinkingStream::new(None).unwrap();
    let mut content = String::new();
    let mut thinking = String::new();
    for piece in ["Hel", "lo <th", "ink>x</thi", "nk> world"] {
        let d = rust(&stream.push(piece));
        content += d["content"].as_str().unwrap();
        thinking += d["thinking"].as_str().unwrap();
    }
    let d = rust(&stream.finish());
    content += d["content"].as_str().unwrap();
    assert_eq!(content, "Hello  world");
    assert_eq!(thinking, "x");
    let prefilled = JsThinkingStream::new(object(&json!({ "starts_in_thinking": true }))).unwrap();
    assert!(prefilled.unclosed());
}

#[wasm_bindgen_test]
fn the_rate_limiter_is_usable_on_its_own() {
    let mut limiter = JsRateLimiter::new(object(
        &json!({ "requests_per_minute": 2, "tokens_per_minute": 1000 }),
    ))
    .unwrap();
    let now = 1_700_000_000_000.0;
    assert_eq!(limiter.reserve_wait(10, Some(now)), 0.0);
    let second = limiter.reserve(10, Some(now));
    assert_eq!(rust(&second)["wait_ms"], 0.0);
    assert_eq!(
        limiter.reserve_wait(10, Some(now)),
        30_000.0,
        "the request bucket (the default) refills one request every 30 s at 2 per minute"
    );
    let headers = js(&json!({ "x-ratelimit-limit-tokens": "500" }));
    limiter.observe(headers, 200, second, Some(now)).unwrap();
    let status = rust(&limiter.status(Some(now)).unwrap());
    assert_eq!(status["api_tokens_per_minute"], 500);
    // Only `second` is in flight: it is not reconciled yet, and reserveWait's are never.
    assert_eq!(status["in_flight"], 1);
}

#[wasm_bindgen_test]
fn the_declared_provider_types_are_the_names_the_configuration_accepts() {
    use llm_distiller::provider::ProviderKind;
    use tsify::Tsify;

    // ProviderKind's serde impls are written out (its names come from each kind's rules);
    // its TypeScript declaration is derived from the variants: the two must agree.
    let names: Vec<String> = ProviderKind::ALL
        .iter()
        .map(|kind| format!("\"{}\"", kind.as_str()))
        .collect();
    let declared = format!("export type ProviderKind = {};", names.join(" | "));
    assert!(
        <ProviderKind as Tsify>::DECL.contains(&declared),
        "{}",
        <ProviderKind as Tsify>::DECL
    );
}

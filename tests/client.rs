//! The orchestration through its public API, on a simulated platform: a scripted server
//! and a fake clock, so the waits asserted here are exact.
// Native only: these run on a simulated platform or use proptest; the wasm tests are js_*.rs.
#![cfg(not(target_arch = "wasm32"))]

mod support;

use std::rc::Rc;

use llm_distiller::runtime::Runtime;
use llm_distiller::{
    BatchOptions, CallOptions, Error, GenerationConfig, LlmConfig, Prompt, ProviderManager, Route,
    StreamEvent,
};
use serde_json::json;
use support::{completion_body, Reply, Sim};

const KEY: &str = "sk-test-0123456789abcdef";

fn manager(sim: &Sim, config: serde_json::Value) -> ProviderManager<Sim> {
    let config = LlmConfig::from_json(&config.to_string()).expect("valid config");
    ProviderManager::new(&config, Rc::new(sim.clone()), &|_| None).expect("manager")
}

fn one_openai(sim: &Sim, rpm: u32, tpm: u32) -> ProviderManager<Sim> {
    one_openai_refilled(sim, rpm, tpm, "continuous")
}

/// One OpenAI provider whose request limit refills as `refill` says (`window` or
/// `continuous`, the default).
fn one_openai_refilled(sim: &Sim, rpm: u32, tpm: u32, refill: &str) -> ProviderManager<Sim> {
    manager(
        sim,
        json!({ "providers": { "main": { "type": "openai", "api_key": KEY, "base_url": "http://127.0.0.1:9/v1",
            "model": "gpt-4o", "rate_limit": { "requests_per_minute": rpm, "tokens_per_minute": tpm,
                                               "requests_refill": refill } } } }),
    )
}

fn small() -> GenerationConfig {
    GenerationConfig {
        max_tokens: Some(10),
        ..GenerationConfig::default()
    }
}

fn no_options() -> CallOptions {
    CallOptions::default()
}

#[test]
fn a_normal_answer_has_its_thinking_separated() {
    let sim = Sim::always(Reply::json(
        200,
        completion_body(
            "<think>2+2 is 4</think>\nThe answer is 4.",
            Some("Add them."),
            "stop",
        ),
    ));
    let manager = one_openai(&sim, 60, 90_000);
    let r = sim
        .run(manager.generate(
            &"What is 2+2?".into(),
            &GenerationConfig::default(),
            &Route::Default,
            &no_options(),
        ))
        .expect("answer");
    assert_eq!(r.content, "The answer is 4.");
    assert_eq!(r.thinking.as_deref(), Some("Add them.\n\n2+2 is 4"));
    assert_eq!(r.reasoning.as_deref(), Some("Add them."));
    assert_eq!(r.model, "gpt-4o-2024-08-06");
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    assert_eq!(r.usage.map(|u| u.total_tokens), Some(30));
    assert_eq!(r.provider, "main");
    assert_eq!(r.id.as_deref(), Some("chatcmpl-test"));
    assert_eq!(r.attempts, 1);
    assert_eq!(r.response_time_ms, 100.0);
    assert_eq!(
        r.response_time, 0.1,
        "the design's response_time, in seconds"
    );
    assert!(r.raw_response.is_some());

    let seen = sim.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].request.url,
        "http://127.0.0.1:9/v1/chat/completions"
    );
    assert_eq!(
        seen[0].request.headers.get("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    let body = seen[0].body();
    assert_eq!(body["model"], "gpt-4o");
    assert_eq!(
        body["messages"],
        json!([{ "role": "user", "content": "What is 2+2?" }])
    );
    assert_eq!(body["temperature"], 0.7);
    assert_eq!(body["max_tokens"], 1000);
    assert_eq!(body["top_p"], 0.9);
    assert!(body.get("stream").is_none());
}

#[test]
fn azure_requests_use_the_deployment_path_api_key_and_version() {
    let sim = Sim::always(Reply::completion("Ahoy"));
    let manager = manager(
        &sim,
        json!({ "providers": { "az": { "type": "azure_openai", "api_key": "azure-key-123456",
            "endpoint": "https://res.openai.azure.com/", "deployment_name": "gpt4o-prod" } } }),
    );
    let config = GenerationConfig {
        system_prompt: Some("You are a pirate.".into()),
        stop_sequences: Some(vec!["END".into()]),
        ..GenerationConfig::default()
    };
    let r = sim
        .run(manager.generate(
            &"Hi".into(),
            &config,
            &Route::provider(Some("az")),
            &no_options(),
        ))
        .expect("answer");
    assert_eq!(r.content, "Ahoy");
    let seen = sim.seen();
    let request = &seen[0].request;
    assert_eq!(
        request.url,
        "https://res.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(request.headers.get("api-key"), Some("azure-key-123456"));
    assert_eq!(request.headers.get("authorization"), None);
    let body = seen[0].body();
    assert!(
        body.get("model").is_none(),
        "Azure's deployment decides the model"
    );
    assert_eq!(
        body["messages"][0],
        json!({ "role": "system", "content": "You are a pirate." })
    );
    assert_eq!(body["stop"], json!(["END"]));
}

#[test]
fn two_hundred_requests_at_60_rpm_never_exceed_60_in_any_minute() {
    let sim = Sim::always(Reply::completion("ok"));
    let manager = one_openai_refilled(&sim, 60, 10_000_000, "window");
    let prompts: Vec<Prompt> = (0..200).map(|i| Prompt::from(format!("q{i}"))).collect();
    let options = BatchOptions {
        concurrency: 50,
        ..BatchOptions::default()
    };
    let results = sim
        .run(manager.generate_batch(&prompts, &small(), &options, |_| {}))
        .expect("batch runs");
    assert!(results.iter().all(Result::is_ok));
    let times: Vec<f64> = sim.seen().iter().map(|s| s.at_ms).collect();
    assert_eq!(times.len(), 200);
    for (i, start) in times.iter().enumerate() {
        let in_window = times[i..].iter().filter(|t| **t < start + 60_000.0).count();
        assert!(
            in_window <= 60,
            "{in_window} requests in the minute from request {i}"
        );
    }
    // Pacing, not starving: the last burst starts at three minutes.
    let last = times.iter().cloned().fold(0.0, f64::max) - support::START_MS;
    assert_eq!(last, 180_000.0);
}

#[test]
fn remaining_requests_zero_holds_the_next_request_until_the_reset() {
    let sim = Sim::sequence(vec![
        Reply::completion("one")
            .header("x-ratelimit-remaining-requests", "0")
            .header("x-ratelimit-reset-requests", "6s"),
        Reply::completion("two"),
    ]);
    let manager = one_openai_refilled(&sim, 1000, 1_000_000, "window");
    sim.run(async {
        manager
            .generate(&"a".into(), &small(), &Route::Default, &no_options())
            .await
            .expect("first");
        manager
            .generate(&"b".into(), &small(), &Route::Default, &no_options())
            .await
            .expect("second");
    });
    let seen = sim.seen();
    // The first answer arrives at 100 ms and says: nothing more for 6 s.
    assert_eq!(seen[1].at_ms - seen[0].at_ms, 100.0 + 6_000.0);
}

#[test]
fn a_429_with_retry_after_ms_waits_exactly_that_long() {
    let sim = Sim::sequence(vec![
        Reply::json(429, json!({ "error": { "message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded" } }))
            .header("retry-after-ms", "1500"),
        Reply::completion("done"),
    ]);
    let manager = one_openai(&sim, 1000, 1_000_000);
    let r = sim
        .run(manager.generate(&"a".into(), &small(), &Route::Default, &no_options()))
        .expect("retried");
    assert_eq!(r.content, "done");
    assert_eq!(r.attempts, 2);
    let seen = sim.seen();
    assert_eq!(seen[1].at_ms - seen[0].at_ms, 100.0 + 1_500.0);
    assert_eq!(r.waited_ms, 1_500.0);
}

#[test]
fn server_errors_back_off_exponentially_then_give_up() {
    let sim = Sim::always(Reply::json(
        500,
        json!({ "error": { "message": "boom", "type": "server_error" } }),
    ));
    let manager = one_openai(&sim, 1000, 1_000_000);
    let error = sim
        .run(manager.generate(&"a".into(), &small(), &Route::Default, &no_options()))
        .unwrap_err();
    assert!(
        matches!(error, Error::Http { status: 500, ref message, .. } if message == "boom"),
        "{error:?}"
    );
    assert_eq!(error.provider(), Some("main"));
    let at: Vec<f64> = sim.seen().iter().map(|s| s.at_ms).collect();
    let gaps: Vec<f64> = at.windows(2).map(|w| w[1] - w[0] - 100.0).collect();
    assert_eq!(
        gaps,
        vec![1_000.0, 2_000.0, 4_000.0],
        "1 s × 2^attempt, 3 retries"
    );
}

#[test]
fn jitter_shortens_backoff_by_at_most_a_quarter() {
    let sim = Sim::always(Reply::json(503, json!({})));
    sim.set_random(0.999);
    let manager = one_openai(&sim, 1000, 1_000_000);
    sim.run(manager.generate(&"a".into(), &small(), &Route::Default, &no_options()))
        .unwrap_err();
    let at: Vec<f64> = sim.seen().iter().map(|s| s.at_ms).collect();
    let first_gap = at[1] - at[0] - 100.0;
    assert!(first_gap > 750.0 && first_gap < 1_000.0, "{first_gap}");
}

#[test]
fn client_errors_are_not_retried() {
    let sim = Sim::always(Reply::json(
        400,
        json!({ "error": { "message": "bad param", "type": "invalid_request_error", "param": "temperature", "code": null } }),
    ));
    let manager = one_openai(&sim, 1000, 1_000_000);
    let error = sim
        .run(manager.generate(&"a".into(), &small(), &Route::Default, &no_options()))
        .unwrap_err();
    assert_eq!(sim.seen().len(), 1);
    match error {
        Error::Http {
            status,
            param,
            error_type,
            ..
        } => {
            assert_eq!(status, 400);
            assert_eq!(param.as_deref(), Some("temperature"));
            assert_eq!(error_type.as_deref(), Some("invalid_request_error"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_and_truncated_bodies_are_invalid_responses_and_retried() {
    for body in [
        "{not json",
        "{\"id\":\"x\",\"choices\":[{\"message\":{\"content\":\"Hel",
        "",
    ] {
        let sim = Sim::always(Reply::raw(200, body));
        let manager = one_openai(&sim, 1000, 1_000_000);
        let error = sim
            .run(manager.generate(&"a".into(), &small(), &Route::Default, &no_options()))
            .unwrap_err();
        assert!(
            matches!(error, Error::InvalidResponse { .. }),
            "{body:?}: {error:?}"
        );
        assert_eq!(sim.seen().len(), 4, "{body:?}");
    }
}

#[test]
fn a_slow_answer_times_out_per_attempt() {
    let sim = Sim::always(Reply::completion("late").latency(5_000.0));
    let manager = one_openai(&sim, 1000, 1_000_000);
    let options = CallOptions {
        timeout_ms: Some(2_000.0),
        ..CallOptions::default()
    };
    let error = sim
        .run(manager.generate(&"a".into(), &small(), &Route::Default, &options))
        .unwrap_err();
    assert!(
        matches!(error, Error::Timeout { after_ms, .. } if after_ms == 2_000.0),
        "{error:?}"
    );
    assert_eq!(sim.seen().len(), 4);
    // 4 attempts of 2 s and backoff of 1 + 2 + 4 s.
    assert_eq!(sim.elapsed(), 4.0 * 2_000.0 + 7_000.0);
    // Nothing is left in flight after the timeouts.
    let status = sim.run(manager.provider_status());
    assert_eq!(
        status[0].rate_limiter.as_ref().map(|s| s.in_flight),
        Some(0)
    );
}

#[test]
fn connection_errors_are_retried_and_reported() {
    let sim = Sim::sequence(vec![Reply::refused(), Reply::completion("back")]);
    let manager = one_openai(&sim, 1000, 1_000_000);
    let r = sim
        .run(manager.generate(&"a".into(), &small(), &Route::Default, &no_options()))
        .expect("retried");
    assert_eq!(r.attempts, 2);
    let sim = Sim::always(Reply::refused());
    let manager = one_openai(&sim, 1000, 1_000_000);
    let error = sim
        .run(manager.generate(&"a".into(), &small(), &Route::Default, &no_options()))
        .unwrap_err();
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
}

#[test]
fn failover_reaches_the_second_provider_when_the_first_always_fails() {
    let sim = Sim::new(|request, _| {
        if request.url.contains("first") {
            Reply::json(500, json!({ "error": { "message": "down" } }))
        } else {
            Reply::completion("from second")
        }
    });
    let manager = manager(
        &sim,
        json!({ "providers": {
            "first": { "type": "custom", "base_url": "http://first.test/v1" },
            "second": { "type": "custom", "base_url": "http://second.test/v1" } } }),
    );
    let order = vec!["first".to_string(), "second".to_string()];
    let r = sim
        .run(manager.generate(
            &"a".into(),
            &small(),
            &Route::failover(Some(order)).unwrap(),
            &no_options(),
        ))
        .expect("second answers");
    assert_eq!(r.content, "from second");
    assert_eq!(r.provider, "second");
    let hosts: Vec<bool> = sim
        .seen()
        .iter()
        .map(|s| s.request.url.contains("first"))
        .collect();
    assert_eq!(
        hosts,
        vec![true, true, true, true, false],
        "first retried 3 times, then second"
    );
    // A custom provider without a key sends no credentials.
    assert_eq!(sim.seen()[4].request.headers.get("authorization"), None);
}

#[test]
fn failover_reports_every_provider_when_all_fail() {
    let sim = Sim::always(Reply::json(400, json!({ "error": { "message": "nope" } })));
    let manager = manager(
        &sim,
        json!({ "providers": {
            "a": { "type": "custom", "base_url": "http://a.test/v1" },
            "b": { "type": "openai" } } }),
    );
    let error = sim
        .run(manager.generate(&"x".into(), &small(), &Route::Everyone, &no_options()))
        .unwrap_err();
    let Error::AllProvidersFailed { errors } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0].0, "a");
    assert!(matches!(errors[0].1, Error::Http { status: 400, .. }));
    assert_eq!(errors[1].0, "b");
    assert!(matches!(&errors[1].1, Error::Config { field, .. } if field == "providers.b.api_key"));
    assert_eq!(error.code(), "all_providers_failed");
    // An unknown name is a mistake, not a silent skip.
    let order = vec!["a".to_string(), "zzz".to_string()];
    let error = sim
        .run(manager.generate(
            &"x".into(),
            &small(),
            &Route::failover(Some(order)).unwrap(),
            &no_options(),
        ))
        .unwrap_err();
    assert!(
        error.to_string().contains("unknown provider 'zzz'"),
        "{error}"
    );
}

/// A manager of providers that all fail with 500 (no retries), and the hosts they reach.
fn failing(names: &[&str]) -> (Sim, ProviderManager<Sim>) {
    let sim = Sim::always(Reply::json(500, json!({ "error": { "message": "down" } })));
    // Text, not json!: the order as written matters, and json! sorts keys.
    let providers: Vec<String> = names
        .iter()
        .map(|n| {
            format!(
                r#""{n}": {{ "type": "custom", "base_url": "http://{n}.test/v1", "retry": {{ "max_retries": 0 }} }}"#
            )
        })
        .collect();
    let config = format!(
        r#"{{ "providers": {{ {} }}, "default_provider": "{}" }}"#,
        providers.join(", "),
        names[0]
    );
    let config = LlmConfig::from_json(&config).expect("valid config");
    let manager = ProviderManager::new(&config, Rc::new(sim.clone()), &|_| None).unwrap();
    (sim, manager)
}

fn hosts(sim: &Sim) -> Vec<String> {
    sim.seen()
        .iter()
        .map(|s| {
            s.request
                .url
                .split('/')
                .nth(2)
                .unwrap_or("")
                .replace(".test", "")
        })
        .collect()
}

#[test]
fn a_failover_tries_each_provider_once_the_default_first_when_none_is_named() {
    let (sim, manager) = failing(&["dflt", "b", "c"]);
    let route = Route::with_fallback(
        None,
        vec!["b".into(), "dflt".into(), "b".into(), "c".into()],
    );
    let error = sim
        .run(manager.generate(&"x".into(), &small(), &route, &no_options()))
        .unwrap_err();
    assert_eq!(hosts(&sim), ["dflt", "b", "c"]);
    let Error::AllProvidersFailed { errors } = &error else {
        panic!("{error:?}")
    };
    let tried: Vec<&str> = errors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(tried, ["dflt", "b", "c"]);

    // Named a hundred thousand times, a provider is still tried once: the failure (and the
    // row that keeps it) stays small.
    let (sim, manager) = failing(&["a", "b"]);
    let route = Route::with_fallback(Some("a".into()), vec!["b".to_string(); 100_000]);
    let error = sim
        .run(manager.generate(&"x".into(), &small(), &route, &no_options()))
        .unwrap_err();
    assert_eq!(hosts(&sim), ["a", "b"]);
    assert!(
        error.to_string().len() < 1_000,
        "{} bytes",
        error.to_string().len()
    );

    // Without a fallback, one provider and its own error, not a failover's.
    let (sim, manager) = failing(&["a", "b"]);
    let error = sim
        .run(manager.generate(
            &"x".into(),
            &small(),
            &Route::with_fallback(Some("b".into()), vec![]),
            &no_options(),
        ))
        .unwrap_err();
    assert_eq!(hosts(&sim), ["b"]);
    assert!(
        matches!(error, Error::Http { status: 500, .. }),
        "{error:?}"
    );

    // Every provider, in configuration order; an empty order is a mistake.
    let (sim, manager) = failing(&["c", "a", "b"]);
    sim.run(manager.generate(&"x".into(), &small(), &Route::Everyone, &no_options()))
        .unwrap_err();
    assert_eq!(hosts(&sim), ["c", "a", "b"]);
    assert!(
        matches!(Route::failover(Some(vec![])), Err(Error::Config { field, .. }) if field == "failover")
    );
}

#[test]
fn a_failed_call_is_attributed_to_the_provider_that_failed_last_and_its_model() {
    let sim = Sim::always(Reply::completion("ok"));
    let config = LlmConfig::from_json(
        r#"{ "providers": {
            "main": { "type": "custom", "base_url": "http://main.test/v1", "model": "m1" },
            "az": { "type": "azure_openai", "endpoint": "https://r.openai.azure.com", "deployment_name": "dep", "model": "ignored" } } }"#,
    )
    .unwrap();
    // Azure has no key: it cannot be set up, and still names its deployment.
    let manager = ProviderManager::new(&config, Rc::new(sim.clone()), &|_| None).unwrap();
    let status = sim.run(manager.provider_status());
    assert!(!status[1].available);
    assert_eq!(
        status[1].model, "dep",
        "an unavailable Azure provider shows its deployment"
    );

    let asked = GenerationConfig {
        model: Some("gpt-x".into()),
        ..GenerationConfig::default()
    };
    let timeout = Error::Timeout {
        provider: "az".into(),
        after_ms: 1.0,
    };
    assert_eq!(
        manager.attribution(&Route::Default, &asked, &timeout),
        ("az".to_string(), "dep".to_string()),
        "the provider the error names; Azure's model is its deployment"
    );
    assert_eq!(
        manager.attribution(&Route::Default, &asked, &Error::Aborted),
        ("main".to_string(), "gpt-x".to_string()),
        "no provider named: the route's first, with the model the call asked for"
    );
    let route = Route::with_fallback(Some("az".into()), vec!["main".into()]);
    assert_eq!(
        manager.attribution(&route, &GenerationConfig::default(), &Error::Aborted),
        ("az".to_string(), "dep".to_string())
    );
}

#[test]
fn the_status_by_name_is_an_object_in_configuration_order() {
    let sim = Sim::always(Reply::completion("ok"));
    let config = LlmConfig::from_json(
        r#"{ "providers": {
            "zeta": { "type": "custom", "base_url": "http://z.test/v1" },
            "alpha": { "type": "custom", "base_url": "http://a.test/v1", "default": true } } }"#,
    )
    .unwrap();
    let manager = ProviderManager::new(&config, Rc::new(sim), &|_| None).unwrap();
    let text =
        serde_json::to_string(&Sim::always(Reply::completion("")).run(manager.status_by_name()))
            .unwrap();
    assert!(
        text.starts_with(r#"{"zeta":{"name":"zeta","type":"custom""#),
        "{text}"
    );
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["alpha"]["default"], true);
    assert_eq!(value["zeta"]["available"], true);
}

#[test]
fn unavailable_providers_are_shown_with_their_reason_and_answer_with_it() {
    let sim = Sim::always(Reply::completion("ok"));
    let env =
        |name: &str| (name == "AZURE_OPENAI_API_KEY").then(|| "from-env-azure-key".to_string());
    // Raw text, not json!: the order as written matters, and json! sorts keys.
    let config = LlmConfig::from_json(
        r#"{ "providers": {
            "openai_main": { "type": "openai", "model": "gpt-4o", "default": true },
            "azure": { "type": "azure_openai", "endpoint": "https://r.openai.azure.com", "deployment_name": "dep" } } }"#,
    )
    .unwrap();
    let manager =
        ProviderManager::new(&config, Rc::new(sim.clone()), &env).expect("one provider is enough");
    assert_eq!(manager.list_providers(), vec!["azure".to_string()]);
    let status = sim.run(manager.provider_status());
    assert_eq!(status.len(), 2);
    assert!(!status[0].available);
    assert!(status[0].default);
    assert!(status[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("OPENAI_API_KEY"));
    assert!(status[0].rate_limiter.is_none());
    assert!(status[1].available);
    assert_eq!(status[1].model, "dep");
    assert_eq!(
        status[1]
            .rate_limiter
            .as_ref()
            .map(|r| r.max_requests_per_minute),
        Some(60)
    );
    // The default is the unavailable one: a call to it gets the reason, never a fallback.
    let error = sim
        .run(manager.generate(&"a".into(), &small(), &Route::Default, &no_options()))
        .unwrap_err();
    assert!(
        matches!(&error, Error::Config { field, .. } if field == "providers.openai_main.api_key"),
        "{error:?}"
    );
    assert!(sim.seen().is_empty());
    sim.run(manager.generate(
        &"a".into(),
        &small(),
        &Route::provider(Some("azure")),
        &no_options(),
    ))
    .expect("azure works");
    assert_eq!(
        sim.seen()[0].request.headers.get("api-key"),
        Some("from-env-azure-key")
    );

    let error = ProviderManager::new(&config, Rc::new(sim.clone()), &|_| None)
        .err()
        .expect("no provider at all");
    assert!(
        error.to_string().contains("no provider could be set up"),
        "{error}"
    );
}

#[test]
fn keys_never_appear_in_errors_even_when_the_server_echoes_them() {
    let sim = Sim::always(Reply::json(
        401,
        json!({ "error": { "message": format!("Incorrect API key provided: {KEY}. Find yours at ..."), "type": "invalid_request_error", "code": "invalid_api_key" } }),
    ));
    let manager = one_openai(&sim, 1000, 1_000_000);
    let error = sim
        .run(manager.generate(&"a".into(), &small(), &Route::Default, &no_options()))
        .unwrap_err();
    for shown in [
        error.to_string(),
        format!("{error:?}"),
        format!("{:?}", sim.seen()[0].request),
    ] {
        assert!(!shown.contains(KEY), "{shown}");
    }
    assert!(error.to_string().contains("[redacted]"));
    assert_eq!(error.status(), Some(401));
}

#[test]
fn a_batch_gives_one_result_per_prompt_in_order_with_progress() {
    let sim = Sim::new(|request, _| {
        if request.body.contains("bad prompt") {
            Reply::json(400, json!({ "error": { "message": "content policy" } }))
        } else {
            let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
            let question = body["messages"][0]["content"].as_str().unwrap().to_string();
            Reply::completion(&format!(
                "<think>thinking about {question}</think>answer to {question}"
            ))
        }
    });
    let manager = one_openai(&sim, 1000, 1_000_000);
    let prompts: Vec<Prompt> = ["q0", "q1", "bad prompt", "q3", "q4"]
        .iter()
        .map(|p| Prompt::from(*p))
        .collect();
    let mut progress = Vec::new();
    let results = sim
        .run(manager.generate_batch(
            &prompts,
            &small(),
            &BatchOptions {
                concurrency: 2,
                ..BatchOptions::default()
            },
            |p| progress.push((p.done, p.total, p.index, p.result.is_ok())),
        ))
        .expect("batch");
    assert_eq!(results.len(), 5);
    for (i, result) in results.iter().enumerate() {
        if i == 2 {
            assert!(matches!(result, Err(Error::Http { status: 400, .. })));
        } else {
            let r = result.as_ref().expect("answer");
            assert_eq!(r.content, format!("answer to q{i}"));
            assert_eq!(
                r.thinking.as_deref(),
                Some(format!("thinking about q{i}").as_str())
            );
        }
    }
    assert_eq!(
        progress.iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert!(progress.iter().all(|p| p.1 == 5));
    let mut indexes: Vec<usize> = progress.iter().map(|p| p.2).collect();
    indexes.sort();
    assert_eq!(indexes, vec![0, 1, 2, 3, 4]);
    // Concurrency 2: never more than two requests in flight (100 ms each).
    let times: Vec<f64> = sim.seen().iter().map(|s| s.at_ms).collect();
    assert_eq!(times.iter().filter(|t| **t == support::START_MS).count(), 2);
}

#[test]
fn a_batch_with_an_invalid_config_or_provider_fails_as_a_whole() {
    let sim = Sim::always(Reply::completion("ok"));
    let manager = one_openai(&sim, 1000, 1_000_000);
    let bad = GenerationConfig {
        temperature: Some(3.0),
        ..GenerationConfig::default()
    };
    let error = sim
        .run(manager.generate_batch(&["a".into()], &bad, &BatchOptions::default(), |_| {}))
        .unwrap_err();
    assert!(
        matches!(&error, Error::Config { field, .. } if field == "temperature"),
        "{error:?}"
    );
    let options = BatchOptions {
        provider: Some("nope".into()),
        ..BatchOptions::default()
    };
    let error = sim
        .run(manager.generate_batch(&["a".into()], &small(), &options, |_| {}))
        .unwrap_err();
    assert!(error.to_string().contains("unknown provider 'nope'"));
    assert!(sim.seen().is_empty());
}

#[test]
fn token_budget_paces_a_batch() {
    // 1000 tokens per minute; each request reserves its prompt estimate + 100 max_tokens
    // and is charged 10 + 100 (the scripted prompt usage plus its max_tokens).
    let sim = Sim::always(Reply::completion("ok"));
    let manager = one_openai(&sim, 10_000, 1_000);
    let config = GenerationConfig {
        max_tokens: Some(100),
        ..GenerationConfig::default()
    };
    let prompts: Vec<Prompt> = (0..30)
        .map(|i| Prompt::from(format!("question {i}")))
        .collect();
    let results = sim
        .run(manager.generate_batch(
            &prompts,
            &config,
            &BatchOptions {
                concurrency: 30,
                ..BatchOptions::default()
            },
            |_| {},
        ))
        .expect("batch");
    assert!(results.iter().all(Result::is_ok));
    let times: Vec<f64> = sim
        .seen()
        .iter()
        .map(|s| s.at_ms - support::START_MS)
        .collect();
    let at_once = times.iter().filter(|t| **t == 0.0).count();
    assert!(
        (8..=9).contains(&at_once),
        "about 1000 / 110 requests fit at once, got {at_once}"
    );
    assert!(
        times.iter().cloned().fold(0.0, f64::max) > 0.0,
        "the rest waited for the refill"
    );
}

#[test]
fn a_finished_call_is_charged_its_real_prompt_plus_its_max_tokens() {
    // The scripted usage: 10 prompt tokens, 20 completion tokens. The server counted the
    // 100 max_tokens when the request arrived and gives none back: neither does the limiter.
    let sim = Sim::always(Reply::completion("ok").latency(0.0));
    let manager = one_openai(&sim, 1000, 1_000_000);
    let config = GenerationConfig {
        max_tokens: Some(100),
        ..GenerationConfig::default()
    };
    let prompt = Prompt::from("x".repeat(400)); // estimated at 100 + 4 + 3 prompt tokens
    sim.run(manager.generate(&prompt, &config, &Route::Default, &no_options()))
        .expect("answer");
    let status = sim.run(manager.provider_status())[0]
        .rate_limiter
        .clone()
        .unwrap();
    assert_eq!(status.in_flight, 0);
    // In use at the fake clock's time: 110 tokens, less the refill over the call (none:
    // the scripted server answers at once).
    assert_eq!(status.tokens_per_minute, 110);
}

#[test]
fn a_streamed_answer_gives_deltas_then_the_whole_response() {
    let sse = [
        "data: {\"id\":\"c1\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"<thi\"}}]}\n\ndata: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"nk>step one",
        "\"}}]}\n\n: keep-alive\n\ndata: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"</th\"}}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ink>The answer\"}}]}\r\n\r\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" is 4.\"},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":7,\"total_tokens\":12}}\n\ndata: [DONE]\n\n",
    ];
    let sim = Sim::always(Reply::sse(&sse));
    let manager = one_openai(&sim, 1000, 1_000_000);
    let (deltas, done) = sim.run(async {
        let mut stream = manager
            .stream(&"q".into(), &small(), &Route::Default, &no_options())
            .await
            .expect("stream");
        let mut deltas = Vec::new();
        let mut done = None;
        while let Some(event) = stream.next().await {
            match event.expect("no error") {
                StreamEvent::Delta(d) => deltas.push(d),
                StreamEvent::Done(r) => done = Some(*r),
            }
        }
        assert_eq!(stream.received(), None, "the whole answer was handed out");
        (deltas, done.expect("a final response"))
    });
    let content: String = deltas.iter().map(|d| d.content.as_str()).collect();
    let thinking: String = deltas.iter().map(|d| d.thinking.as_str()).collect();
    assert_eq!(content, "The answer is 4.");
    assert_eq!(thinking, "step one");
    assert!(
        deltas.len() >= 3,
        "content streams as it arrives: {deltas:?}"
    );
    assert_eq!(done.content, "The answer is 4.");
    assert_eq!(done.thinking.as_deref(), Some("step one"));
    assert_eq!(done.finish_reason.as_deref(), Some("stop"));
    assert_eq!(done.usage.map(|u| u.total_tokens), Some(12));
    assert_eq!(done.id.as_deref(), Some("c1"));
    assert_eq!(
        done.raw_response.as_ref().unwrap()["choices"][0]["message"]["content"],
        "<think>step one</think>The answer is 4."
    );
    let body = sim.seen()[0].body();
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({ "include_usage": true }));
}

#[test]
fn a_stream_that_breaks_off_ends_with_an_error() {
    let mut reply =
        Reply::sse(&["data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}]}\n\n"]);
    reply.break_after_chunks = true;
    let sim = Sim::always(reply);
    let manager = one_openai(&sim, 1000, 1_000_000);
    let (events, before, after) = sim.run(async {
        let mut stream = manager
            .stream(&"q".into(), &small(), &Route::Default, &no_options())
            .await
            .expect("opens");
        let mut events = vec![stream.next().await.expect("a delta")];
        let before = stream.received();
        while let Some(event) = stream.next().await {
            events.push(event);
        }
        (events, before, stream.received())
    });
    assert!(matches!(&events[0], Ok(StreamEvent::Delta(d)) if d.content == "Hello"));
    assert!(
        matches!(events.last(), Some(Err(Error::Connection { .. }))),
        "{events:?}"
    );
    // What arrived is kept, while the stream runs and after it broke off.
    for received in [before, after] {
        let received = received.expect("what arrived");
        assert_eq!(received.content, "Hello");
        assert_eq!(received.thinking, None);
        assert_eq!(received.provider, "main");
        assert_eq!(received.finish_reason, None);
    }
}

#[test]
fn a_stream_retries_errors_before_the_body_flows() {
    let sim = Sim::sequence(vec![
        Reply::json(503, json!({ "error": { "message": "busy" } })),
        Reply::sse(&["data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"]),
    ]);
    let manager = one_openai(&sim, 1000, 1_000_000);
    let response = sim.run(async {
        let mut stream = manager
            .stream(&"q".into(), &small(), &Route::Default, &no_options())
            .await
            .expect("opens");
        let mut last = None;
        while let Some(event) = stream.next().await {
            if let StreamEvent::Done(r) = event.expect("ok") {
                last = Some(*r);
            }
        }
        last.expect("done")
    });
    assert_eq!(response.content, "ok");
    assert_eq!(response.attempts, 2);
}

#[test]
fn dropping_a_call_gives_its_reservation_back() {
    let sim = Sim::always(Reply::completion("slow").latency(10_000.0));
    let manager = one_openai(&sim, 1000, 1_000_000);
    sim.run(async {
        let (prompt, config, options) = ("a".into(), small(), no_options());
        let call = manager.generate(&prompt, &config, &Route::Default, &options);
        let timer = llm_distiller::runtime::with_timeout(&sim, 50.0, call).await;
        assert!(timer.is_none(), "the call was cut off");
    });
    let status = &sim.run(manager.provider_status())[0];
    assert_eq!(status.rate_limiter.as_ref().unwrap().in_flight, 0);
}

#[test]
fn a_closed_gate_stops_a_waiting_call_before_it_is_sent() {
    use llm_distiller::Gate;
    let sim = Sim::always(Reply::completion("ok").latency(10.0));
    let manager = one_openai(&sim, 1, 1_000_000);
    let gate = Gate::new();
    let gated = CallOptions {
        gate: Some(gate.clone()),
        ..CallOptions::default()
    };
    let (a, b, config) = (Prompt::from("a"), Prompt::from("b"), small());
    let (first, second) = sim.run(async {
        let first = manager.generate(&a, &config, &Route::Default, &gated);
        // One request per minute: the second waits its turn, and the gate closes meanwhile.
        let second = async {
            let closing = async {
                sim.sleep(1_000.0).await;
                gate.close();
            };
            let (answer, ()) = futures_util::join!(
                manager.generate(&b, &config, &Route::Default, &gated),
                closing
            );
            answer
        };
        futures_util::join!(first, second)
    });
    assert!(first.is_ok(), "{first:?}");
    assert!(matches!(second, Err(Error::Aborted)), "{second:?}");
    assert_eq!(sim.seen().len(), 1, "the second was never sent");
    assert!(
        sim.elapsed() < 2_000.0,
        "it stopped waiting when the gate closed: {} ms",
        sim.elapsed()
    );
    let status = sim.run(manager.provider_status());
    assert_eq!(
        status[0].rate_limiter.as_ref().map(|r| r.in_flight),
        Some(0)
    );
}

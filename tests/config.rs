//! Configuration as a user writes it: defaults, the default provider, keys from the
//! environment, and errors that name the field.
// Native only: these run on a simulated platform or use proptest; the wasm tests are js_*.rs.
#![cfg(not(target_arch = "wasm32"))]

use llm_distiller::config::{
    GenerationConfig, LlmConfig, ProviderConfig, ProviderKind, RateLimitConfig, Secret,
};
use llm_distiller::provider::Provider;
use llm_distiller::rate_limit::RequestRefill;
use llm_distiller::Error;
use serde_json::json;

fn field_of(error: Error) -> String {
    match error {
        Error::Config { field, .. } => field,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn generation_defaults_are_the_designs() {
    let config = GenerationConfig::from_json("{}").unwrap();
    assert_eq!(config, GenerationConfig::default());
    assert_eq!(
        config.model, None,
        "the provider's model, itself gpt-3.5-turbo by default"
    );
    assert_eq!(config.temperature, Some(0.7));
    assert_eq!(config.max_tokens, Some(1000));
    assert_eq!(config.top_p, Some(0.9));
    assert_eq!(config.frequency_penalty, Some(0.0));
    assert_eq!(config.presence_penalty, Some(0.0));
    assert_eq!(config.system_prompt, None);
    assert_eq!(config.stop_sequences, None);
    assert_eq!(
        ProviderConfig::new(ProviderKind::Openai).model,
        "gpt-3.5-turbo"
    );
}

#[test]
fn generation_config_takes_openai_names_and_passes_extras_through() {
    let config = GenerationConfig::from_json(
        r#"{"model":"gpt-4o","temperature":0.1,"max_tokens":500,"stop":["\n\n"],"seed":7,"response_format":{"type":"json_object"}}"#,
    )
    .unwrap();
    assert_eq!(config.model.as_deref(), Some("gpt-4o"));
    assert_eq!(config.stop_sequences, Some(vec!["\n\n".to_string()]));
    assert_eq!(config.extra.get("seed"), Some(&json!(7)));
    assert!(config.wants_json());
    config.validate().unwrap();
}

#[test]
fn generation_errors_name_the_field() {
    let cases = [
        (r#"{"temperature": 2.5}"#, "temperature"),
        (r#"{"top_p": -0.1}"#, "top_p"),
        (r#"{"frequency_penalty": 3}"#, "frequency_penalty"),
        (r#"{"presence_penalty": -2.01}"#, "presence_penalty"),
        (r#"{"max_tokens": 0}"#, "max_tokens"),
        (
            r#"{"stop_sequences": ["a","b","c","d","e"]}"#,
            "stop_sequences",
        ),
        (r#"{"response_format": "json"}"#, "response_format"),
        (r#"{"messages": []}"#, "messages"),
        (r#"{"model": " "}"#, "model"),
    ];
    for (json, field) in cases {
        let config = GenerationConfig::from_json(json).unwrap();
        assert_eq!(field_of(config.validate().unwrap_err()), field, "{json}");
    }
    let cases = [
        (r#"{"max_tokens": "many"}"#, "max_tokens"),
        (r#"{"max_tokens": -1}"#, "max_tokens"),
        (r#"{"temperature": "hot"}"#, "temperature"),
        (r#"{"stop_sequences": [1]}"#, "stop_sequences[0]"),
        (r#"[1,2]"#, "config"),
        // Cut short: the error says where the text ended.
        (r#"{"temperature": 1"#, "temperature"),
    ];
    for (json, field) in cases {
        assert_eq!(
            field_of(GenerationConfig::from_json(json).unwrap_err()),
            field,
            "{json}"
        );
    }
}

#[test]
fn provider_defaults_and_rate_limit_defaults() {
    let config = LlmConfig::from_json(r#"{"providers":{"p":{"type":"openai"}}}"#).unwrap();
    let p = config.provider("p").unwrap();
    assert_eq!(p.kind, ProviderKind::Openai);
    assert_eq!(p.model, "gpt-3.5-turbo");
    assert_eq!(p.api_version, "2024-10-21");
    assert_eq!(
        p.rate_limit,
        RateLimitConfig {
            requests_per_minute: 60,
            tokens_per_minute: 90_000,
            ..Default::default()
        }
    );
    assert_eq!(
        p.rate_limit.requests_refill,
        RequestRefill::Continuous,
        "the bucket OpenAI and Azure enforce, by default"
    );
    let window =
        r#"{"providers":{"p":{"type":"openai","rate_limit":{"requests_refill":"window"}}}}"#;
    let config = LlmConfig::from_json(window).unwrap();
    assert_eq!(
        config.provider("p").unwrap().rate_limit.requests_refill,
        RequestRefill::Window
    );
    assert_eq!(p.timeout_ms, 60_000);
    assert_eq!(p.retry.max_retries, 3);
    assert!(!p.default);
}

#[test]
fn the_default_provider_is_named_else_marked_else_first() {
    let named = r#"{"default_provider":"b","providers":{"a":{"type":"openai"},"b":{"type":"openai"},"c":{"type":"openai","default":true}}}"#;
    assert_eq!(
        LlmConfig::from_json(named).unwrap().default_provider_name(),
        Some("b")
    );
    let marked = r#"{"providers":{"a":{"type":"openai"},"b":{"type":"openai"},"c":{"type":"openai","default":true}}}"#;
    assert_eq!(
        LlmConfig::from_json(marked)
            .unwrap()
            .default_provider_name(),
        Some("c")
    );
    // "First" means first as written, not alphabetical.
    let first = r#"{"providers":{"zeta":{"type":"openai"},"alpha":{"type":"openai"}}}"#;
    let config = LlmConfig::from_json(first).unwrap();
    assert_eq!(config.default_provider_name(), Some("zeta"));
    assert_eq!(config.names(), vec!["zeta", "alpha"]);
}

#[test]
fn a_provider_defined_twice_is_refused_by_name() {
    let text = r#"{"providers":{"a":{"type":"openai"},"b":{"type":"openai"},"c":{"type":"openai"},"b":{"type":"custom"}}}"#;
    let error = LlmConfig::from_json(text).unwrap_err();
    assert_eq!(
        error.to_string().matches("'b' is defined twice").count(),
        1,
        "{error}"
    );
    // Names that differ only in case, or in spaces, are different names.
    let text =
        r#"{"providers":{"a":{"type":"openai"},"A":{"type":"openai"},"a ":{"type":"openai"}}}"#;
    assert_eq!(
        LlmConfig::from_json(text).unwrap().names(),
        vec!["a", "A", "a "]
    );
}

#[test]
fn invalid_configurations_name_the_field_and_the_problem() {
    let cases = [
        (r#"{"providers":{}}"#, "providers"),
        (
            r#"{"providers":{"p":{"type":"gemini"}}}"#,
            "providers.p.type",
        ),
        (r#"{"providers":{"p":{}}}"#, "providers.p"),
        (
            r#"{"providers":{"p":{"type":"openai","rate_limit":{"requests_per_minute":0}}}}"#,
            "providers.p.rate_limit.requests_per_minute",
        ),
        (
            r#"{"providers":{"p":{"type":"openai","rate_limit":{"tokens_per_minute":0}}}}"#,
            "providers.p.rate_limit.tokens_per_minute",
        ),
        (
            r#"{"providers":{"p":{"type":"openai","rate_limit":{"requests_per_minute":-5}}}}"#,
            "providers.p.rate_limit.requests_per_minute",
        ),
        (
            r#"{"providers":{"p":{"type":"openai","rate_limit":{"requests_per_minut":5}}}}"#,
            "providers.p.rate_limit.requests_per_minut",
        ),
        (
            r#"{"providers":{"p":{"type":"openai","rate_limit":{"requests_refill":"bucket"}}}}"#,
            "providers.p.rate_limit.requests_refill",
        ),
        (
            r#"{"providers":{"p":{"type":"openai","api_verison":"x"}}}"#,
            "providers.p.api_verison",
        ),
        (
            r#"{"providers":{"p":{"type":"custom"}}}"#,
            "providers.p.base_url",
        ),
        (
            r#"{"providers":{"p":{"type":"custom","base_url":"localhost:8080"}}}"#,
            "providers.p.base_url",
        ),
        (
            r#"{"providers":{"p":{"type":"azure_openai","deployment_name":"d"}}}"#,
            "providers.p.endpoint",
        ),
        (
            r#"{"providers":{"p":{"type":"openai","timeout_ms":0}}}"#,
            "providers.p.timeout_ms",
        ),
        (
            r#"{"providers":{"p":{"type":"openai"}},"default_provider":"q"}"#,
            "default_provider",
        ),
        (
            r#"{"providers":{"p":{"type":"openai"},"p":{"type":"openai"}}}"#,
            "providers.p",
        ),
        (r#"{"providers":[]}"#, "providers"),
    ];
    for (json, field) in cases {
        let error = LlmConfig::from_json(json).unwrap_err();
        let shown = error.to_string();
        assert_eq!(field_of(error), field, "{json}: {shown}");
    }
    let error = LlmConfig::from_json(r#"{"providers":{"p":{"type":"gemini"}}}"#).unwrap_err();
    assert!(
        error.to_string().contains("openai"),
        "says what is allowed: {error}"
    );
}

#[test]
fn empty_keys_come_from_the_injected_environment() {
    let env = |name: &str| match name {
        "OPENAI_API_KEY" => Some("sk-from-env-0000".to_string()),
        "AZURE_OPENAI_API_KEY" => Some("az-from-env-0000".to_string()),
        "CUSTOM_API_KEY" => Some("custom-from-env".to_string()),
        _ => None,
    };
    // The credential header a provider set up with `env` sends.
    let sent = |config: &ProviderConfig, header: &str| -> Option<String> {
        let provider = Provider::from_config("p", config, &env).unwrap();
        let messages = [llm_distiller::Message::new("user", "hi")];
        let request = provider
            .build_request(&messages, &GenerationConfig::default(), false)
            .unwrap();
        request.headers.get(header).map(str::to_string)
    };
    let openai = ProviderConfig::new(ProviderKind::Openai);
    assert_eq!(
        sent(&openai, "authorization").as_deref(),
        Some("Bearer sk-from-env-0000")
    );

    let mut azure = ProviderConfig::new(ProviderKind::AzureOpenai);
    azure.endpoint = Some("https://r.openai.azure.com".into());
    assert_eq!(sent(&azure, "api-key").as_deref(), Some("az-from-env-0000"));

    let mut custom = ProviderConfig::new(ProviderKind::Custom);
    custom.base_url = Some("http://127.0.0.1:1/v1".into());
    assert_eq!(
        sent(&custom, "authorization").as_deref(),
        Some("Bearer custom-from-env")
    );

    // A configured key wins over the environment.
    let mut explicit = ProviderConfig::new(ProviderKind::Openai);
    explicit.api_key = Secret::new("sk-explicit-1111");
    assert_eq!(
        sent(&explicit, "authorization").as_deref(),
        Some("Bearer sk-explicit-1111")
    );

    let error = Provider::from_config("o", &openai, &|_| None).unwrap_err();
    assert_eq!(field_of(error.clone()), "providers.o.api_key");
    assert!(error.to_string().contains("OPENAI_API_KEY"));
}

#[test]
fn keys_are_never_shown() {
    let config = LlmConfig::from_json(
        r#"{"providers":{"p":{"type":"openai","api_key":"sk-very-secret-key"}}}"#,
    )
    .unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("sk-very-secret-key"), "{shown}");
    let serialized = serde_json::to_string(&config).unwrap();
    assert!(!serialized.contains("sk-very-secret-key"), "{serialized}");
    let provider = Provider::from_config("p", config.provider("p").unwrap(), &|_| None).unwrap();
    assert!(!format!("{provider:?}").contains("sk-very-secret-key"));
}

#[test]
fn the_worker_takes_keys_from_secrets_only() {
    use llm_distiller::config::KeySource;
    let with_key = r#"{"providers":{"main":{"type":"openai","api_key":"sk-in-the-vars-0000"}}}"#;
    assert!(
        LlmConfig::from_json(with_key).is_ok(),
        "the npm package may"
    );
    let error = LlmConfig::from_json_with(with_key, KeySource::SecretsOnly).unwrap_err();
    let shown = error.to_string();
    assert_eq!(field_of(error), "providers.main.api_key");
    assert!(
        shown.contains("LLM_MAIN_API_KEY") && shown.contains("OPENAI_API_KEY"),
        "{shown}"
    );
    assert!(!shown.contains("sk-in-the-vars-0000"), "{shown}");
    let without = r#"{"providers":{"main":{"type":"openai"}}}"#;
    assert!(LlmConfig::from_json_with(without, KeySource::SecretsOnly).is_ok());
}

#[test]
fn each_kind_says_its_name_key_variable_and_model() {
    let names: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(names, ["openai", "azure_openai", "custom"]);
    for kind in ProviderKind::ALL {
        let parsed: ProviderKind = serde_json::from_value(json!(kind.as_str())).unwrap();
        assert_eq!(parsed, kind);
        assert_eq!(serde_json::to_value(kind).unwrap(), json!(kind.as_str()));
    }
    let vars: Vec<&str> = ProviderKind::ALL
        .iter()
        .map(|k| k.api_key_env_var())
        .collect();
    assert_eq!(
        vars,
        ["OPENAI_API_KEY", "AZURE_OPENAI_API_KEY", "CUSTOM_API_KEY"]
    );
    let required: Vec<bool> = ProviderKind::ALL.iter().map(|k| k.key_required()).collect();
    assert_eq!(required, [true, true, false]);

    let mut azure = ProviderConfig::new(ProviderKind::AzureOpenai);
    azure.model = "gpt-4o".into();
    assert_eq!(
        ProviderKind::AzureOpenai.model(&azure),
        "gpt-4o",
        "the model stands for the deployment"
    );
    azure.deployment_name = Some("dep".into());
    assert_eq!(ProviderKind::AzureOpenai.model(&azure), "dep");
    let asked = GenerationConfig {
        model: Some("other".into()),
        ..GenerationConfig::default()
    };
    assert_eq!(
        ProviderKind::AzureOpenai.model_for(&azure, &asked),
        "dep",
        "Azure's deployment decides the model"
    );
    let openai = ProviderConfig::new(ProviderKind::Openai);
    assert_eq!(ProviderKind::Openai.model_for(&openai, &asked), "other");
    assert_eq!(
        ProviderKind::Openai.model_for(&openai, &GenerationConfig::default()),
        "gpt-3.5-turbo"
    );
}

#[test]
fn providers_of_one_upstream_share_an_identity_whatever_their_name_or_key() {
    let provider = |name: &str, json: serde_json::Value| {
        let config: ProviderConfig = serde_json::from_value(json).unwrap();
        Provider::from_config(name, &config, &|_| None).unwrap()
    };
    let a = provider("a", json!({ "type": "openai", "api_key": "sk-one-000000" }));
    let b = provider("b", json!({ "type": "openai", "api_key": "sk-two-000000" }));
    assert_eq!(a.identity(), b.identity());
    assert_eq!(
        a.identity(),
        "openai:https://api.openai.com/v1/chat/completions"
    );
    assert!(!a.identity().contains("sk-one"));
    let azure = |deployment: &str, version: &str| {
        provider(
            "az",
            json!({ "type": "azure_openai", "api_key": "k-000000000", "endpoint": "https://r.openai.azure.com",
                    "deployment_name": deployment, "api_version": version }),
        )
        .identity()
    };
    assert_eq!(
        azure("d1", "2024-10-21"),
        azure("d1", "2024-06-01"),
        "the version is not the budget"
    );
    assert_ne!(azure("d1", "2024-10-21"), azure("d2", "2024-10-21"));
}

#[test]
fn sampling_parameters_are_named_once() {
    use llm_distiller::config::SAMPLING;
    let names: Vec<&str> = SAMPLING.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "temperature",
            "top_p",
            "frequency_penalty",
            "presence_penalty"
        ]
    );
    // Each one reads, validates and is sent under its name.
    for sampling in &SAMPLING {
        let too_high = format!(r#"{{"{}": {}}}"#, sampling.name, sampling.max + 1.0);
        let config = GenerationConfig::from_json(&too_high).unwrap();
        assert_eq!(field_of(config.validate().unwrap_err()), sampling.name);
        let fine = format!(r#"{{"{}": {}}}"#, sampling.name, sampling.min);
        let config = GenerationConfig::unset()
            .read_over(&fine, "config")
            .unwrap();
        let sent: Vec<(&str, f64)> = config.sampling().collect();
        assert_eq!(sent, [(sampling.name, sampling.min)]);
    }
}

#[test]
fn a_config_read_over_unset_keeps_only_what_it_names() {
    let config = GenerationConfig::unset()
        .read_over(r#"{"temperature": 0.5, "seed": 1}"#, "")
        .unwrap();
    assert_eq!(config.temperature, Some(0.5));
    assert_eq!(config.max_tokens, None);
    assert_eq!(config.top_p, None);
    assert_eq!(config.extra["seed"], 1);
    let error = GenerationConfig::unset()
        .read_over(r#"{"top_p": "high"}"#, "")
        .unwrap_err();
    assert_eq!(field_of(error), "top_p");
    let error = GenerationConfig::unset()
        .read_over(r#"{} trailing"#, "")
        .unwrap_err();
    assert!(error.to_string().contains("not valid JSON"), "{error}");
}

//! Reading what an upstream sends (`provider/`): `Provider::parse_response`,
//! `parse_stream_chunk` and `error_from_response`, for a provider with an API key.
//!
//! Payload: the body, where `@K` stands for the key and `@J` for it JSON-escaped (what a
//! server echoing the key sends). Control: the key (`sk-` and characters that meet in
//! escapes and in the redaction marker), the kind of provider, the status, the headers
//! and the time.
//!
//! Checks: a non-2xx status is always an error; a 429 is `RateLimited`; a server's wait is
//! finite and not negative; and no error shows the key, as it is or JSON-escaped, in its
//! `Display` or in its type, code and param fields. (The `sk-` prefix keeps keys out of the
//! errors' own wording, which a key such as `provider` would otherwise match.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_distiller::config::ProviderConfig;
use llm_distiller::http::Headers;
use llm_distiller::provider::Provider;
use llm_distiller::Error;
use llm_distiller_fuzz::Input;
use serde_json::json;

/// What keys are made of, after their `sk-`.
const KEY_CHARS: [char; 16] = [
    'a', 'd', 'e', 'r', 't', 'A', '0', '"', '\\', '/', '[', ']', '*', '…', 'é', '-',
];

const HEADER_VALUES: [&str; 7] = [
    "1",
    "1.5",
    "0",
    "-1",
    "abc",
    "Wed, 21 Oct 2015 07:28:00 GMT",
    "1e400",
];

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let length = 5 + usize::from(input.byte() % 24);
    let key: String = "sk-"
        .chars()
        .chain((0..length).map(|_| KEY_CHARS[usize::from(input.byte() % 16)]))
        .collect();
    let escaped = serde_json::to_string(&key).unwrap();
    let escaped = &escaped[1..escaped.len() - 1];
    let config = match input.byte() % 3 {
        0 => json!({ "type": "openai", "api_key": key }),
        1 => {
            json!({ "type": "azure_openai", "api_key": key, "endpoint": "https://r.openai.azure.com", "deployment_name": "d" })
        }
        _ => json!({ "type": "custom", "api_key": key, "base_url": "http://127.0.0.1:9/v1" }),
    };
    let config: ProviderConfig = serde_json::from_value(config).unwrap();
    let provider = Provider::from_config("p", &config, &|_| None).expect("a valid provider");
    let status = match input.byte() % 8 {
        0 => 200,
        1 => 401,
        2 => 429,
        3 => 500,
        4 => 400,
        5 => 503,
        6 => 201,
        _ => input.u16(),
    };
    let mut headers = Headers::new();
    for _ in 0..input.byte() % 4 {
        let name =
            ["retry-after", "retry-after-ms", "x-should-retry"][usize::from(input.byte() % 3)];
        headers.append(name, HEADER_VALUES[usize::from(input.byte() % 7)]);
    }
    let now = match input.byte() % 4 {
        0 => input.f64(),
        _ => 1.7e12,
    };
    let body = String::from_utf8_lossy(input.payload)
        .replace("@K", &key)
        .replace("@J", escaped);

    let mut errors = Vec::new();
    match provider.parse_response(status, &headers, body.as_bytes(), now) {
        Ok(_) => assert!((200..300).contains(&status), "{status} accepted"),
        Err(error) => errors.push(error),
    }
    errors.extend(provider.parse_stream_chunk(&body, now).err());
    let error = provider.error_from_response(status, &headers, body.as_bytes(), now);
    assert_eq!(
        status == 429,
        matches!(error, Error::RateLimited { .. }),
        "{error:?}"
    );
    errors.push(error);
    for error in &errors {
        if let Some(wait) = error.retry_after_ms() {
            assert!(wait.is_finite() && wait >= 0.0, "{error:?}");
        }
        let mut shown = vec![error.to_string()];
        if let Error::Http {
            error_type,
            code,
            param,
            ..
        } = error
        {
            shown.extend(
                [error_type, code, param]
                    .into_iter()
                    .flatten()
                    .map(|s| s.to_string()),
            );
        }
        for text in shown {
            assert!(!text.contains(&key), "the key shows in {text:?}");
            assert!(!text.contains(escaped), "the escaped key shows in {text:?}");
        }
    }
});

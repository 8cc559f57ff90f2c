//! Configuration JSON (`config.rs`): `LlmConfig::from_json` (the npm package's),
//! `LlmConfig::from_json_with(KeySource::SecretsOnly)` (the Worker's),
//! `GenerationConfig::from_json`, and setting up each provider of a configuration that
//! parsed.
//!
//! Payload: the JSON text.
//!
//! Checks: every failure is `Error::Config`; a configuration that parses validates, has
//! providers with distinct non-blank names and a default among them, and each provider
//! sets up or fails with `Error::Config`; the Worker accepts exactly the configurations the
//! package accepts that hold no key; and an API key that appears nowhere else in the
//! text, shadowed values included, never shows in an error, in `Debug` or in the
//! serialized configuration. (Only
//! keys holding `sk-` are checked: that keeps them out of the errors' own wording, which a
//! key such as `i.azure.com` would otherwise match.)
#![no_main]

use std::fmt;

use libfuzzer_sys::fuzz_target;
use llm_distiller::config::{GenerationConfig, KeySource, LlmConfig};
use llm_distiller::provider::Provider;
use llm_distiller::Error;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let keys = secret_keys(&text);
    let package = LlmConfig::from_json(&text);
    let worker = LlmConfig::from_json_with(&text, KeySource::SecretsOnly);
    let keyless = |config: &LlmConfig| config.providers.iter().all(|(_, p)| p.api_key.is_empty());
    assert_eq!(
        worker.is_ok(),
        package.as_ref().is_ok_and(keyless),
        "{worker:?} {package:?}"
    );
    if let Err(error) = worker {
        assert!(matches!(error, Error::Config { .. }), "{error:?}");
        assert_hidden(&error.to_string(), &keys);
    }
    match package {
        Ok(config) => {
            assert_eq!(config.validate(), Ok(()));
            let names = config.names();
            assert!(!names.is_empty());
            let mut sorted = names.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), names.len(), "{names:?}");
            assert!(names.iter().all(|n| !n.trim().is_empty()));
            let default = config.default_provider_name().expect("a default");
            assert!(names.contains(&default));
            for (name, provider) in &config.providers {
                let env = |_: &str| Some("sk-from-the-environment".to_string());
                if let Err(error) = Provider::from_config(name, provider, &env) {
                    assert!(matches!(error, Error::Config { .. }), "{error:?}");
                    assert_hidden(&error.to_string(), &keys);
                }
            }
            assert_hidden(&format!("{config:?}"), &keys);
            assert_hidden(&serde_json::to_string(&config).unwrap(), &keys);
        }
        Err(error) => {
            assert!(matches!(error, Error::Config { .. }), "{error:?}");
            assert_hidden(&error.to_string(), &keys);
        }
    }
    match GenerationConfig::from_json(&text) {
        Ok(config) => {
            let _ = config.validate();
            let _ = (config.completion_budget(), config.wants_json());
        }
        Err(error) => assert!(matches!(error, Error::Config { .. }), "{error:?}"),
    }
});

/// The providers' `api_key` strings that hold `sk-` and appear nowhere else in the document
/// (not in another value, not in a key, not in a value a later duplicate key shadows):
/// those must never be shown.
fn secret_keys(text: &str) -> Vec<String> {
    let Ok(json) = serde_json::from_str::<Value>(text) else {
        return Vec::new();
    };
    let Ok(AllStrings(all)) = serde_json::from_str::<AllStrings>(text) else {
        return Vec::new();
    };
    let Some(providers) = json.get("providers").and_then(Value::as_object) else {
        return Vec::new();
    };
    providers
        .values()
        .filter_map(|p| p.get("api_key")?.as_str())
        .map(|k| k.trim().to_string())
        .filter(|k| k.len() >= 8 && k.contains("sk-"))
        .filter(|k| all.iter().filter(|s| s.contains(k.as_str())).count() == 1)
        .collect()
}

/// Every string of a JSON document, object keys included, and values that a later
/// duplicate key shadows in a `Value` (a typed deserializer may still read and quote them).
struct AllStrings(Vec<String>);

impl<'de> Deserialize<'de> for AllStrings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AllStringsVisitor)
    }
}

struct AllStringsVisitor;

impl<'de> Visitor<'de> for AllStringsVisitor {
    type Value = AllStrings;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON")
    }

    fn visit_str<E>(self, value: &str) -> Result<AllStrings, E> {
        Ok(AllStrings(vec![value.to_string()]))
    }

    fn visit_bool<E>(self, _: bool) -> Result<AllStrings, E> {
        Ok(AllStrings(Vec::new()))
    }

    fn visit_i64<E>(self, _: i64) -> Result<AllStrings, E> {
        Ok(AllStrings(Vec::new()))
    }

    fn visit_u64<E>(self, _: u64) -> Result<AllStrings, E> {
        Ok(AllStrings(Vec::new()))
    }

    fn visit_f64<E>(self, _: f64) -> Result<AllStrings, E> {
        Ok(AllStrings(Vec::new()))
    }

    fn visit_unit<E>(self) -> Result<AllStrings, E> {
        Ok(AllStrings(Vec::new()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AllStrings, A::Error> {
        let mut all = Vec::new();
        while let Some(AllStrings(strings)) = seq.next_element()? {
            all.extend(strings);
        }
        Ok(AllStrings(all))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AllStrings, A::Error> {
        let mut all = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            all.push(key);
            let AllStrings(strings) = map.next_value()?;
            all.extend(strings);
        }
        Ok(AllStrings(all))
    }
}

fn assert_hidden(shown: &str, keys: &[String]) {
    for key in keys {
        assert!(!shown.contains(key.as_str()), "a key shows in {shown:?}");
    }
}

//! What the Worker reads from a request before any provider is called: the bodies of
//! `/v1/chat/completions` and `/v1/generate` (`openai_api::parse_chat_request`,
//! `parse_generate_request`), the query of `/v1/responses` (`record::ListQuery::parse`),
//! the id of `/v1/responses/{id}` (`record::is_id`, `new_id`), and the bearer token
//! (`bearer_token`, `token_matches`).
//!
//! Payload: the body; the same bytes as a query string (`&`- and `=`-separated, as the
//! Worker hands the decoded pairs over), as an id and as an `Authorization` header.
//! Control: the `x-llm-provider` header, and a time and two random numbers for an id.
//!
//! Checks: a refusal is a 400 (or 413) `invalid_request_error`; a request that parses has
//! messages (a chat request), a configuration that validates, a route that names no blank
//! provider (and a failover something to fail over to), and a stored form that is JSON; a listing's limit is 1 to 100 and its cursor an id; an id is
//! `rsp_` and 28 hex digits, and every id made is one; a bearer token is trimmed and
//! non-empty; tokens match exactly when equal and not empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_distiller::openai_api::Call;
use llm_distiller::openai_api::{
    bearer_token, parse_chat_request, parse_generate_request, token_matches, ApiError,
};
use llm_distiller::record::{is_id, new_id, ListQuery};
use llm_distiller::{Prompt, Route};
use llm_distiller_fuzz::Input;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let body = input.payload;
    let header = match input.byte() % 3 {
        0 => None,
        1 => Some("backup"),
        _ => Some(" "),
    };
    match parse_chat_request(body, header) {
        Ok(chat) => {
            assert!(
                matches!(&chat.call.prompt, Prompt::Messages(m) if !m.is_empty()),
                "{chat:?}"
            );
            assert_eq!(chat.call.config.system_prompt, None);
            assert_call(&chat.call);
        }
        Err(error) => assert_refused(&error),
    }
    match parse_generate_request(body) {
        Ok(generate) => assert_call(&generate),
        Err(error) => assert_refused(&error),
    }

    let text = input.text();
    let pairs = text
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")));
    match ListQuery::parse(pairs) {
        Ok(query) => {
            assert!((1..=100).contains(&query.limit), "{query:?}");
            assert!(query.cursor.as_deref().is_none_or(is_id));
            assert!(query.provider.as_deref().is_none_or(|p| !p.is_empty()));
            assert!(query.model.as_deref().is_none_or(|m| !m.is_empty()));
        }
        Err(error) => {
            assert_refused(&error);
            assert!(error.param.is_some(), "{error:?}");
        }
    }

    if is_id(&text) {
        let hex = text.strip_prefix("rsp_").expect("the prefix");
        assert!(hex.len() == 28 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    let made = new_id(input.f64(), input.f64(), input.f64());
    assert!(is_id(&made), "{made}");

    if let Some(token) = bearer_token(Some(&text)) {
        assert!(!token.is_empty() && token == token.trim() && text.contains(token));
    }
    let (presented, expected) = text.split_once('\n').unwrap_or((&text, ""));
    assert_eq!(
        token_matches(presented, expected),
        presented == expected && !expected.is_empty()
    );
});

/// What every parsed call holds: a valid configuration, a route naming no blank provider,
/// and a stored form that is JSON.
fn assert_call(call: &Call) {
    assert_eq!(call.config.validate(), Ok(()));
    let blank = |name: &String| name.trim().is_empty();
    match &call.route {
        Route::Default => {}
        Route::Provider(name) => assert!(!blank(name), "{call:?}"),
        Route::Failover { first, then } => {
            assert!(!then.is_empty(), "{call:?}");
            assert!(!first.iter().chain(then).any(blank), "{call:?}");
        }
        // Only the npm package's generateWithFailover asks every provider.
        Route::Everyone => panic!("a request routed to every provider: {call:?}"),
    }
    assert!(serde_json::from_str::<Value>(&call.stored).is_ok());
}

fn assert_refused(error: &ApiError) {
    assert!(matches!(error.status, 400 | 413), "{error:?}");
    assert_eq!(error.kind, "invalid_request_error", "{error:?}");
    assert!(!error.message.is_empty());
}

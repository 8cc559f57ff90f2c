//! A batch input file as `POST /v1/files` reads it (`batch::input::parse_input`): OpenAI's
//! JSONL of `{custom_id, method, url, body}`, checked whole.
//!
//! Payload: the file. Control: which provider names are configured.
//!
//! Checks: a file is taken or refused, never half: taken, it has 1 to `MAX_REQUESTS` lines,
//! in order, each with a `custom_id` that is not blank, at most `MAX_CUSTOM_ID_BYTES` and
//! unique, and a body the chat endpoint accepts as it is, naming only known providers;
//! refused, it has 1 to `MAX_REPORTED_ERRORS` faults, each a line's (within the file) or the
//! file's, its message starting with its line; the upload's 400 is an
//! `invalid_request_error`.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use llm_distiller::batch::input::{parse_input, MAX_CUSTOM_ID_BYTES, MAX_REPORTED_ERRORS};
use llm_distiller::batch::{refused_file, MAX_REQUESTS};
use llm_distiller::openai_api::parse_chat_request;
use llm_distiller::Route;
use llm_distiller_fuzz::Input;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let file = input.payload;
    let names: &[&str] = match input.byte() % 3 {
        0 => &[],
        1 => &["backup"],
        _ => &["backup", "main", ""],
    };
    let known = |name: &str| names.contains(&name);
    let lines_in_file = file.split(|&b| b == b'\n').count() as u64;
    match parse_input(file, &known) {
        Ok(lines) => {
            assert!(!lines.is_empty() && lines.len() <= MAX_REQUESTS);
            let mut ids = HashSet::new();
            let mut last = 0;
            for line in &lines {
                assert!(line.line > last && line.line <= lines_in_file, "{line:?}");
                last = line.line;
                assert!(!line.custom_id.trim().is_empty(), "{line:?}");
                assert!(line.custom_id.len() <= MAX_CUSTOM_ID_BYTES);
                assert!(ids.insert(line.custom_id.clone()), "{line:?}");
                let again = parse_chat_request(line.body.as_bytes(), None)
                    .unwrap_or_else(|e| panic!("{line:?}: {e:?}"));
                assert_eq!(again, line.request, "the body reads as it was read");
                let providers: Vec<&str> = match &line.request.call.route {
                    Route::Default | Route::Everyone => vec![],
                    Route::Provider(name) => vec![name.as_str()],
                    Route::Failover { first, then } => {
                        first.iter().chain(then).map(String::as_str).collect()
                    }
                };
                assert!(providers.iter().all(|p| known(p)), "{line:?}");
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty() && errors.len() <= MAX_REPORTED_ERRORS);
            for error in &errors {
                assert!(!error.code.is_empty() && !error.message.is_empty());
                if let Some(line) = error.line {
                    assert!(line >= 1 && line <= lines_in_file, "{error:?}");
                    assert!(error.message.starts_with(&format!("line {line}: ")));
                }
            }
            let refused = refused_file(&errors);
            assert_eq!(refused.status, 400);
            assert_eq!(refused.kind, "invalid_request_error");
        }
    }
});

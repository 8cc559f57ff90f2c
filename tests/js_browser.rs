//! The JavaScript surface in headless Chromium:
//! `wasm-pack test --headless --chrome --features js -- --test js_browser`
//! (scripts/test-wasm.sh starts the upstream, which answers CORS, and sets `UPSTREAM_URL`).
#![cfg(all(target_arch = "wasm32", feature = "js"))]

wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

mod js_common;

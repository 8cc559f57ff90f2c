//! The JavaScript surface in Node: `wasm-pack test --node --features js -- --test js_node`
//! (scripts/test-wasm.sh starts the upstream and sets `UPSTREAM_URL`).
#![cfg(all(target_arch = "wasm32", feature = "js"))]

mod js_common;

// The package in browsers built by a bundler that says its mode (the "production" and
// "development" conditions, as Vite does) or is webpack: the wasm is fetched relative to
// this module, so the bundler emits it as an asset (`new URL("…", import.meta.url)`) and
// the browser compiles it while it streams in. Also the file a page imports without any
// bundler. Top-level await: importing the package is enough, there is no init() to call.
import init from "./llm_distiller.js";

await init({ module_or_path: new URL("./llm_distiller_bg.wasm", import.meta.url) });

export * from "./api.js";

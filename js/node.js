// The package in Node (the "node" condition, for `import` and `require` alike): the wasm is
// read from the file beside this one and compiled synchronously, so there is no top-level
// await and `require("llm-distiller")` works (Node 20.19+ loads an ES module without one).
import { readFileSync } from "node:fs";

import { initSync } from "./llm_distiller.js";

initSync({ module: readFileSync(new URL("./llm_distiller_bg.wasm", import.meta.url)) });

export * from "./api.js";

// A CommonJS program (this project's package.json has no "type": "module").
const api = require("llm-distiller");

import("./checks.mjs")
  .then(({ runInNode }) => runInNode(api))
  .catch((error) => {
    console.error(error);
    process.exitCode = 1;
  });

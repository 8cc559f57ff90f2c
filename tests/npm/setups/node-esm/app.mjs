import * as api from "llm-distiller";
import { runInNode } from "./checks.mjs";

await runInNode(api);

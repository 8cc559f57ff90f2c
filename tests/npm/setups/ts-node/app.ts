import * as api from "llm-distiller";
import { ProviderManager, extractThinking, type Extracted, type LlmResponse } from "llm-distiller";
import { runInNode } from "./checks.mjs";

// A few typed uses, on top of the checks (usage.ts, beside this file, has the whole API).
const extracted: Extracted = extractThinking("<think>a</think>b");
const manager = new ProviderManager({ providers: { local: { type: "custom", base_url: "http://127.0.0.1:1/v1" } } });
export const pending: Promise<LlmResponse> | undefined = extracted.unclosed ? manager.generate("never sent") : undefined;

await runInNode(api);

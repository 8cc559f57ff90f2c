// llm-distiller in Node: one answer, one streamed answer, a small batch.
//
//   npm install llm-distiller
//   node node-quickstart.mjs
//
// It talks to any OpenAI-compatible server: LLM_BASE_URL (default: Ollama on this machine,
// http://127.0.0.1:11434/v1) and LLM_MODEL (default qwen3). With OPENAI_API_KEY set and no
// LLM_BASE_URL, it uses OpenAI itself (LLM_MODEL default gpt-4o-mini); the key is read from
// the environment because `api_key` is left empty.

import { ProviderManager } from "llm-distiller";

const useOpenAI = process.env.OPENAI_API_KEY && !process.env.LLM_BASE_URL;
const provider = useOpenAI
  ? { type: "openai", model: process.env.LLM_MODEL ?? "gpt-4o-mini" }
  : {
      type: "custom",
      base_url: process.env.LLM_BASE_URL ?? "http://127.0.0.1:11434/v1",
      model: process.env.LLM_MODEL ?? "qwen3",
    };

const manager = new ProviderManager({
  providers: {
    main: { ...provider, rate_limit: { requests_per_minute: 60, tokens_per_minute: 90_000 } },
  },
});

try {
  // 1. One answer, its thinking (a <think> block or a reasoning field) kept apart.
  const answer = await manager.generate("What is 17 × 23?", { temperature: 0, max_tokens: 500 });
  console.log(`Answer: ${answer.content}`);
  console.log(`Thinking: ${answer.thinking ?? "(none)"}`);
  console.log(`Tokens: ${answer.usage?.total_tokens ?? "?"}, ${answer.response_time_ms} ms`);

  // 2. A streamed answer: deltas of content and thinking, then the whole response.
  process.stdout.write("Streamed: ");
  for await (const item of manager.stream("Name three primary colours.")) {
    if (item.type === "delta") {
      process.stdout.write(item.content);
    } else {
      process.stdout.write(`\nStream done: ${item.response.finish_reason}, thinking ${item.response.thinking?.length ?? 0} chars\n`);
    }
  }

  // 3. A batch: three prompts, two at a time, one result per prompt, in order.
  const questions = ["What is the capital of France?", "What is 2 + 2?", "Who wrote Hamlet?"];
  const results = await manager.generateBatch(questions, { max_tokens: 200 }, {
    concurrency: 2,
    onProgress: (done, total) => console.log(`Batch progress: ${done}/${total}`),
  });
  results.forEach((result, i) => {
    const outcome = result.ok ? result.response.content : `failed (${result.error.code}): ${result.error.message}`;
    console.log(`Batch ${i + 1}: ${questions[i]} -> ${outcome}`);
  });
} catch (error) {
  // Every error has a machine-readable `code` (and `status`, `provider` where they apply).
  console.error(`Failed (${error.code ?? "unexpected"}): ${error.message}`);
  process.exitCode = 1;
}

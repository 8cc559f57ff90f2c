// What every app in tests/npm/setups.test.mjs does with the package, whichever way it loaded
// it: extractThinking, a ThinkingStream, and generate() and stream() against the scripted
// upstream. The app passes in the module it imported (or required); nothing here imports
// the package, so each setup's own resolution is what is tested.

/** Runs the checks with `api` (the package's exports) against the OpenAI-compatible
 * `baseUrl`; resolves with what they found, as plain data. */
export async function runChecks(api, baseUrl) {
  const { extractThinking, ThinkingStream, ProviderManager } = api;
  const extracted = extractThinking("<think>2 and 2 make 4.</think>\nThe answer is 4.", "First, reasoning.");

  const stream = new ThinkingStream();
  const deltas = ["<thi", "nk>hm</think>Hi", " there"].map((chunk) => stream.push(chunk));
  deltas.push(stream.finish());

  const manager = new ProviderManager({ providers: { local: { type: "custom", base_url: baseUrl, model: "m" } } });
  const generated = await manager.generate("What is 2 + 2?", { max_tokens: 50 });
  const items = [];
  for await (const item of manager.stream("Name a colour.", { max_tokens: 50 })) items.push(item);
  const streamDeltas = items.filter((item) => item.type === "delta");

  return {
    extracted,
    thinkingStream: {
      content: deltas.map((d) => d.content).join(""),
      thinking: deltas.map((d) => d.thinking).join(""),
      unclosed: stream.unclosed,
    },
    generated: { content: generated.content, thinking: generated.thinking, provider: generated.provider },
    streamed: {
      types: items.map((item) => item.type).filter((type, i, all) => type !== all[i - 1]),
      content: streamDeltas.map((d) => d.content).join(""),
      thinking: streamDeltas.map((d) => d.thinking).join(""),
      response: { content: items.at(-1)?.response?.content, thinking: items.at(-1)?.response?.thinking },
    },
  };
}

/** In a page: runs the checks against `?base=` and leaves the outcome in `window.__results`. */
export function runInPage(api) {
  const baseUrl = new URLSearchParams(location.search).get("base");
  runChecks(api, baseUrl).then(
    (results) => {
      window.__results = results;
    },
    (error) => {
      window.__results = { failed: `${error?.name}: ${error?.message}\n${error?.stack}` };
    },
  );
}

/** In Node: runs the checks against $BASE_URL and prints the outcome as tests/npm/support.mjs's
 * harness does (`RESULT <json>`, then `END <ms>`). */
export async function runInNode(api) {
  const results = await runChecks(api, process.env.BASE_URL);
  process.stdout.write(`RESULT ${JSON.stringify(results)}\nEND ${Date.now()}\n`);
}

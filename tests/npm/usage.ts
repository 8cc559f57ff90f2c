// The public API of llm-distiller as a TypeScript user writes it. tests/npm/types.test.mjs
// type-checks this file (tsc --strict, nodenext) against the types of the installed tarball;
// it is never run. The `@ts-expect-error` lines are the other half: each must be an error,
// so a type that silently widens (to `any`, to `string`) fails the check.

import {
  CompletionStream,
  ProviderManager,
  RateLimiter,
  ThinkingStream,
  extractThinking,
  exportRecord,
  type BatchItem,
  type BatchOptions,
  type CallOptions,
  type ChatRecord,
  type ErrorCode,
  type ExportOptions,
  type ExportRecord,
  type ExportRow,
  type Extracted,
  type FlatRecord,
  type GenerationConfig,
  type LlmConfig,
  type LlmDistillerError,
  type LlmResponse,
  type Message,
  type Prompt,
  type ProviderStatus,
  type RateLimitStatus,
  type Reservation,
  type ShareGptRecord,
  type StreamItem,
  type ThinkingDelta,
} from "llm-distiller";

// ---------------------------------------------------------------------------------------
// Configuration

const config: LlmConfig = {
  providers: {
    openai_main: {
      type: "openai",
      model: "gpt-4o",
      rate_limit: { requests_per_minute: 60, tokens_per_minute: 90_000 },
      retry: { max_retries: 2, base_delay_ms: 500, max_backoff_ms: 10_000, max_wait_ms: 30_000 },
      timeout_ms: 30_000,
    },
    azure: {
      type: "azure_openai",
      endpoint: "https://NAME.openai.azure.com",
      deployment_name: "gpt-4o",
      api_version: "2024-10-21",
      api_key: "",
    },
    local: { type: "custom", base_url: "http://127.0.0.1:11434/v1", model: "qwen3", default: true },
  },
  default_provider: "local",
  processing: { anything: true },
};

// @ts-expect-error an unknown provider type
const wrongType: LlmConfig = { providers: { x: { type: "anthropic" } } };
// @ts-expect-error a provider needs its type
const noType: LlmConfig = { providers: { x: { model: "m" } } };
void wrongType;
void noType;

const manager = new ProviderManager(config);
const names: string[] = manager.listProviders();
const defaultName: string = manager.defaultProvider;
// @ts-expect-error defaultProvider is read-only
manager.defaultProvider = "other";
void names;
void defaultName;

const statuses: Record<string, ProviderStatus> = manager.providerStatus();
for (const status of Object.values(statuses)) {
  const reason: string | null = status.reason;
  const kind: "openai" | "azure_openai" | "custom" = status.type;
  if (status.rate_limiter !== null) {
    const limiter: RateLimitStatus = status.rate_limiter;
    const wait: number = limiter.next_free_in_ms;
    const observed: number | null = limiter.api_tokens_per_minute;
    void wait;
    void observed;
  }
  // @ts-expect-error rate_limiter may be null
  status.rate_limiter.in_flight;
  void reason;
  void kind;
}

// ---------------------------------------------------------------------------------------
// One answer

const generation: GenerationConfig = {
  temperature: 0,
  max_tokens: 200,
  system_prompt: "Be brief.",
  stop_sequences: ["\n\n"],
  response_format: { type: "json_object" },
  seed: 7, // any OpenAI parameter passes through
};
const messages: Message[] = [
  { role: "system", content: "Be brief." },
  { role: "user", content: [{ type: "text", text: "What is 2 + 2?" }] },
  { role: "assistant", content: null, tool_calls: [] },
];
const prompt: Prompt = messages;
const controller = new AbortController();
const options: CallOptions = { signal: controller.signal, timeout_ms: 5_000, starts_in_thinking: false };

const first: LlmResponse = await manager.generate("What is 2 + 2?");
const second = await manager.generate(prompt, generation);
const third = await manager.generate("Hi", null, "local");
const fourth = await manager.generate("Hi", undefined, undefined, options);
const failedOver = await manager.generateWithFailover("Hi");
const failedOverInOrder = await manager.generateWithFailover(messages, generation, ["local", "openai_main"], options);

const content: string = first.content;
const thinking: string | null = second.thinking;
const reasoning: string | null = third.reasoning;
const tokens: number | undefined = fourth.usage?.total_tokens;
const raw: Record<string, unknown> | null = failedOver.raw_response;
const attempts: number = failedOverInOrder.attempts;
// @ts-expect-error thinking may be null
const thinkingLength: number = second.thinking.length;
// @ts-expect-error usage may be null
first.usage.total_tokens;
// @ts-expect-error no such field
first.text;
void [content, thinking, reasoning, tokens, raw, attempts, thinkingLength];

// @ts-expect-error a prompt is a string or messages
await manager.generate(42);
// @ts-expect-error a message has a role from the OpenAI list
await manager.generate([{ role: "robot", content: "hi" }]);

// ---------------------------------------------------------------------------------------
// Streaming

let answer = "";
let thoughts = "";
for await (const item of manager.stream("Tell me a story.")) {
  if (item.type === "delta") {
    answer += item.content;
    thoughts += item.thinking;
    // @ts-expect-error only the last item has the response
    item.response;
  } else {
    const done: LlmResponse = item.response;
    const empty: "" = item.content;
    void done;
    void empty;
  }
}
void [answer, thoughts];

const stream: CompletionStream = manager.stream(messages, generation, "local", { signal: controller.signal });
const next: IteratorResult<StreamItem, undefined> = await stream.next();
if (!next.done) {
  const item: StreamItem = next.value;
  void item;
}
await stream.return();
for await (const item of manager.stream("Hi", null, null, null)) {
  switch (item.type) {
    case "delta":
      break;
    case "done":
      void item.response.finish_reason;
      break;
    default: {
      const impossible: never = item;
      void impossible;
    }
  }
}
stream.free();

// ---------------------------------------------------------------------------------------
// Batches

const onProgress = (done: number, total: number, item: BatchItem): void => {
  void `${done}/${total} ${item.ok ? item.response.content : item.error.code}`;
};
const batchOptions: BatchOptions = {
  concurrency: 4,
  provider: "local",
  failover: ["local", "openai_main"],
  timeout_ms: 10_000,
  signal: controller.signal,
  onProgress,
};
const plainBatch: BatchItem[] = await manager.generateBatch(["one", "two"]);
const fullBatch = await manager.generateBatch(["one", messages], generation, batchOptions);
const nullBatch = await manager.generateBatch(["one"], null, null);
for (const item of [...plainBatch, ...fullBatch, ...nullBatch]) {
  if (item.ok) {
    const response: LlmResponse = item.response;
    // @ts-expect-error a successful item has no error
    item.error;
    void response;
  } else {
    const code: ErrorCode = item.error.code;
    const message: string = item.error.message;
    // @ts-expect-error a failed item has no response
    item.response;
    void [code, message];
  }
}
// @ts-expect-error the response is only there once `ok` is known
plainBatch[0].response;

// ---------------------------------------------------------------------------------------
// Errors

function isLlmDistillerError(error: unknown): error is LlmDistillerError {
  return error instanceof Error && error.name === "LlmDistillerError";
}

function describe(code: ErrorCode): string {
  switch (code) {
    case "rate_limited":
    case "timeout":
    case "connection":
    case "http":
    case "invalid_response":
    case "config":
    case "all_providers_failed":
    case "aborted":
      return code;
    default: {
      const impossible: never = code;
      return impossible;
    }
  }
}

try {
  await manager.generate("Hi", { max_tokens: 10 }, "openai_main", { timeout_ms: 1_000 });
} catch (error) {
  if (isLlmDistillerError(error)) {
    const name: "LlmDistillerError" = error.name;
    const kind: string = describe(error.code);
    const status: number | undefined = error.status;
    const retryAfterMs: number | undefined = error.retryAfterMs;
    const provider: string | undefined = error.provider;
    const field: string | undefined = error.field;
    for (const { provider: tried, error: cause } of error.errors ?? []) {
      void [tried, cause.code];
    }
    if (error.code === "rate_limited" && error.retryAfterMs !== undefined) {
      const wait: number = error.retryAfterMs;
      void wait;
    }
    // @ts-expect-error not a documented code
    const wrongCode: ErrorCode = "overloaded";
    void [name, kind, status, retryAfterMs, provider, field, wrongCode];
  }
}

manager.free();

// ---------------------------------------------------------------------------------------
// Thinking extraction

const extracted: Extracted = extractThinking("<think>2 and 2 make 4.</think>\nThe answer is 4.");
const withReasoning = extractThinking("The answer is 4.", "2 and 2 make 4.");
const withNull = extractThinking("The answer is 4.", null);
const unclosed: boolean = extracted.unclosed;
const extractedThinking: string | null = withReasoning.thinking;
void [unclosed, extractedThinking, withNull.content];

const thinkingStream = new ThinkingStream();
const tagged = new ThinkingStream({ starts_in_thinking: true, tags: ["think"] });
const defaults = new ThinkingStream(null);
const delta: ThinkingDelta = thinkingStream.push("<think>2 and");
const reasoningDelta: ThinkingDelta = tagged.pushReasoning("first");
const rest: ThinkingDelta = defaults.finish();
const open: boolean = thinkingStream.unclosed;
// @ts-expect-error unclosed is read-only
thinkingStream.unclosed = false;
void [delta.content, reasoningDelta.thinking, rest, open];
thinkingStream.free();
tagged.free();
defaults.free();

// ---------------------------------------------------------------------------------------
// The rate limiter on its own

const limiter = new RateLimiter({ requests_per_minute: 60, tokens_per_minute: 90_000 });
const defaultLimiter = new RateLimiter();
const nullLimiter = new RateLimiter(null);
const reservation: Reservation = limiter.reserve(1_000);
const atTime: Reservation = limiter.reserve(1_000, Date.now());
const wait: number = limiter.reserveWait(500) + defaultLimiter.reserveWait(500, Date.now());
const blocked: number | undefined = limiter.blockedFor(reservation);
const blockedAt: number | undefined = limiter.blockedFor(reservation, Date.now());
limiter.observe(new Headers({ "x-ratelimit-remaining-requests": "10" }), 200, reservation);
limiter.observe({ "retry-after-ms": "300" }, 429);
limiter.observe({}, 200, null, Date.now());
limiter.reconcile(reservation, 812);
limiter.reconcile(atTime);
limiter.cancel(limiter.reserve(10));
const limiterStatus: RateLimitStatus = nullLimiter.status();
const limiterStatusAt: RateLimitStatus = limiter.status(Date.now());
// @ts-expect-error tokens are a number
limiter.reserve("1000");
void [wait, blocked, blockedAt, limiterStatus.effective_requests_per_minute, limiterStatusAt.in_flight];
limiter.free();
defaultLimiter.free();
nullLimiter.free();

// ---------------------------------------------------------------------------------------
// Export: an answer as a record of a training dataset

const kept: ExportRow = { ...first, request: { prompt: "What is 2 + 2?", config: { system_prompt: "Be brief." } } };
const stored: ExportRow = {
  id: "rsp_0194bd5c1a00aaaaaaaabbbbbbbb",
  created_at: 1738339200000,
  request: '{"messages":[{"role":"user","content":"Hi"}]}',
  content: "Hello",
  thinking: null,
  truncated: false,
  invalid_reason: null,
  batch_id: "batch_1",
  custom_id: "line-1",
};
const chatRecord: ChatRecord | null = exportRecord(kept);
const inlineRecord: ChatRecord | null = exportRecord(kept, { reasoning: "inline", include_incomplete: true });
const shareRecord: ShareGptRecord | null = exportRecord(stored, { format: "sharegpt", reasoning: "none" });
const flatRecord: FlatRecord = exportRecord(stored, { format: "flat" });
const exportOptions: ExportOptions = { format: "flat", reasoning: "field", include_incomplete: false };
const anyRecord: ExportRecord | null = exportRecord(stored, exportOptions);
const lastMessage: Message | undefined = chatRecord?.messages.at(-1);
const speaker: "system" | "human" | "gpt" | "function_call" | "observation" | undefined = shareRecord?.conversations[0]?.from;
const flatMessages: Message[] | null = flatRecord.messages;
const flatUsage: number | undefined = flatRecord.usage?.total_tokens;
// @ts-expect-error a training format may leave the row out
exportRecord(kept).messages;
// @ts-expect-error not a format
exportRecord(kept, { format: "jsonl" });
// @ts-expect-error not a reasoning mode
exportRecord(kept, { reasoning: "hidden" });
// @ts-expect-error a row needs its request
exportRecord({ content: "x" });
// @ts-expect-error a ShareGPT record has no messages
exportRecord(stored, { format: "sharegpt" })?.messages;
void [inlineRecord, anyRecord, lastMessage, speaker, flatMessages, flatUsage];

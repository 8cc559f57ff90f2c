// The declarations that cannot be derived from a Rust type (wasm-bindgen adds this file to
// the .d.ts after the ones tsify derives from the core's types: LlmConfig, ProviderConfig,
// RateLimitConfig, RetryPolicy, LlmResponse, Usage, RateLimitStatus, ProviderStatus,
// Reservation, Prompt, Extracted, ThinkingDelta, ThinkingStreamOptions, the export's
// ExportRow, ExportOptions and records, and the data of CallOptions and BatchOptions): the
// classes as the package's entry exposes them, what only JavaScript passes or receives, and
// the types whose Rust side deserializes by hand (Message, GenerationConfig: their derive
// would describe the struct, not what is accepted).

/** One chat message, as the OpenAI API defines it. */
export interface Message {
  role: "system" | "developer" | "user" | "assistant" | "tool" | "function";
  content: string | ContentPart[] | null;
  name?: string;
  tool_call_id?: string;
  tool_calls?: unknown[];
  [field: string]: unknown;
}

/** A part of a message's content (`{ type: "text", text }`, an image, …). */
export interface ContentPart {
  type: string;
  text?: string;
  [field: string]: unknown;
}

/** Parameters of one chat completion. Unknown OpenAI parameters pass through
 * (`max_completion_tokens`, `reasoning_effort`, `seed`, …). A sampling parameter set to
 * `null` is not sent at all, so the provider's own default applies. */
export interface GenerationConfig {
  /** Defaults to the provider's model (Azure: its deployment decides). */
  model?: string;
  /** 0 to 2, default 0.7. */
  temperature?: number | null;
  /** At least 1, default 1000. */
  max_tokens?: number | null;
  /** 0 to 1, default 0.9. */
  top_p?: number | null;
  /** -2 to 2, default 0. */
  frequency_penalty?: number | null;
  /** -2 to 2, default 0. */
  presence_penalty?: number | null;
  /** A system message before a text prompt. */
  system_prompt?: string | null;
  /** Up to 4 stop sequences (also accepted as `stop`). */
  stop_sequences?: string[] | null;
  stop?: string[] | null;
  /** e.g. `{ type: "json_object" }`: a JSON answer that does not parse is invalid. */
  response_format?: { type: string; [field: string]: unknown } | null;
  [parameter: string]: unknown;
}

/** The public name of a provider's kind (the Rust `ProviderKind`). */
export type ProviderType = ProviderKind;

// `CallOptions` and `BatchOptions` are derived from the Rust types (their data); these
// declarations merge into them what only JavaScript passes: a signal and a callback.

export interface CallOptions {
  /** Cancels the call: it rejects with `code: "aborted"`. */
  signal?: AbortSignal;
}

export interface BatchOptions {
  signal?: AbortSignal;
  /** Called as each item finishes; `index` is its place in `prompts`. */
  onProgress?: (done: number, total: number, item: BatchItem, index: number) => void;
}

/** One batch result. */
export type BatchItem =
  | { ok: true; response: LlmResponse }
  | { ok: false; error: LlmDistillerError };

/** A stream's items: deltas, then the whole answer. */
export type StreamItem =
  | { type: "delta"; content: string; thinking: string }
  | { type: "done"; content: ""; thinking: ""; response: LlmResponse };

/** What `error.code` can be. */
export type ErrorCode =
  | "rate_limited"
  | "timeout"
  | "connection"
  | "http"
  | "invalid_response"
  | "config"
  | "all_providers_failed"
  | "aborted";

/** Every error this package throws or rejects with. */
export interface LlmDistillerError extends Error {
  name: "LlmDistillerError";
  code: ErrorCode;
  /** The upstream's HTTP status. */
  status?: number;
  /** The wait the server asked for. */
  retryAfterMs?: number;
  /** The provider concerned. */
  provider?: string;
  /** For `config`: the field at fault. */
  field?: string;
  /** For `all_providers_failed`: each provider's error, in the order tried. */
  errors?: { provider: string; error: LlmDistillerError }[];
}

/**
 * Providers by name, with failover, retries, adaptive rate limiting, batches and
 * streaming. Every method that calls a provider takes optional `config` and `options`.
 */
export class ProviderManager {
  /** Sets up every provider; keys left empty come from `process.env` (Node). Throws only
   * when the configuration is invalid or no provider can be set up. */
  constructor(config: LlmConfig);
  /** Generates with `provider`, or the default provider. */
  generate(prompt: Prompt, config?: GenerationConfig | null, provider?: string | null, options?: CallOptions | null): Promise<LlmResponse>;
  /** Tries the providers of `order` (all, in configuration order, when omitted) until one answers. */
  generateWithFailover(prompt: Prompt, config?: GenerationConfig | null, order?: string[] | null, options?: CallOptions | null): Promise<LlmResponse>;
  /** One result per prompt, in order; one failure never sinks the batch. */
  generateBatch(prompts: Prompt[], config?: GenerationConfig | null, options?: BatchOptions | null): Promise<BatchItem[]>;
  /** Streams an answer: deltas as they become certain, then `{ type: "done", response }`. */
  stream(prompt: Prompt, config?: GenerationConfig | null, provider?: string | null, options?: CallOptions | null): CompletionStream;
  /** The providers that could be set up. */
  listProviders(): string[];
  /** Every configured provider by name, in configuration order, available or not (with
   * the reason), with its rate limiter (the design's `get_provider_status()`). */
  providerStatus(): Record<string, ProviderStatus>;
  /** The default provider's name. */
  readonly defaultProvider: string;
  /** Frees the WebAssembly memory now rather than at garbage collection. */
  free(): void;
}

/** A streamed answer. Breaking out of `for await` aborts the request. */
export class CompletionStream implements AsyncIterableIterator<StreamItem> {
  private constructor();
  next(): Promise<IteratorResult<StreamItem, undefined>>;
  return(): Promise<IteratorResult<StreamItem, undefined>>;
  [Symbol.asyncIterator](): CompletionStream;
  free(): void;
}

/** The streaming thinking extractor. */
export class ThinkingStream {
  constructor(options?: ThinkingStreamOptions | null);
  /** Feeds answer text; returns the content and thinking that became certain. */
  push(chunk: string): ThinkingDelta;
  /** Feeds a provider's separate reasoning text (`reasoning_content` deltas). */
  pushReasoning(chunk: string): ThinkingDelta;
  /** Ends the text; returns what was held back. */
  finish(): ThinkingDelta;
  /** A thinking block is open (after `finish()`: was never closed). */
  readonly unclosed: boolean;
  free(): void;
}

/** The rate limiter on its own. Times are milliseconds since the epoch (`Date.now()` by default). */
export class RateLimiter {
  constructor(limits?: RateLimitConfig | null);
  /** Reserves a request of `tokens` estimated tokens: wait `wait_ms`, then ask
   * `blockedFor(reservation)` and wait again while it answers a number (timers may fire a
   * little early, and a server's 429 may have paused the limiter meanwhile); then send. */
  reserve(tokens: number, nowMs?: number | null): Reservation;
  /** Like `reserve`, returning only the wait in milliseconds, for a caller that never
   * reconciles: the request is charged its estimate and not counted in flight. */
  reserveWait(tokens: number, nowMs?: number | null): number;
  /** How much longer to wait because of a server signal since reserving, if any. */
  blockedFor(reservation: Reservation, nowMs?: number | null): number | undefined;
  /** The request finished having used `actualTokens` (omit when unknown). */
  reconcile(reservation: Reservation, actualTokens?: number | null): void;
  /** The request was never sent. */
  cancel(reservation: Reservation): void;
  /** Adapts to a response's headers; pass the reservation of the request it answers. */
  observe(headers: Headers | Record<string, string>, status: number, reservation?: Reservation | null, nowMs?: number | null): void;
  status(nowMs?: number | null): RateLimitStatus;
  free(): void;
}

/** Separates thinking from `text`; `separateReasoning` (a provider's `reasoning_content`) comes first. */
export function extractThinking(text: string, separateReasoning?: string | null): Extracted;

/**
 * A stored answer as one record of a training dataset, exactly as the Worker's
 * `GET /v1/export` writes it: `openai_chat` (the default), `sharegpt` or `flat`, with the
 * thinking in a field (the default), `inline` as `<think>` text, or left out (`none`).
 * `null` when the export's rules leave the row out of a training format (an unclosed
 * thinking block or a row cut to fit D1, unless `include_incomplete`; thinking that
 * cannot be written inline unambiguously). Throws an `LlmDistillerError` (code `config`,
 * field `row.request`) when a training format cannot read the row's request; `flat`
 * then says why in `export_error`.
 */
export function exportRecord(row: ExportRow, options?: (ExportOptions & { format?: "openai_chat" }) | null): ChatRecord | null;
export function exportRecord(row: ExportRow, options: ExportOptions & { format: "sharegpt" }): ShareGptRecord | null;
export function exportRecord(row: ExportRow, options: ExportOptions & { format: "flat" }): FlatRecord;
export function exportRecord(row: ExportRow, options?: ExportOptions | null): ExportRecord | null;

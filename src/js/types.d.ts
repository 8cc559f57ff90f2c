/** What to ask: a user message, or a whole OpenAI `messages` array. */
export type Prompt = string | Message[];

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

/** A provider's budget. */
export interface RateLimitConfig {
  /** At least 1, default 60. */
  requests_per_minute?: number;
  /** At least 1, default 90,000. */
  tokens_per_minute?: number;
  /**
   * `"continuous"` (default): a bucket refilling continuously, as OpenAI and Azure enforce it.
   * `"window"`: never more than `requests_per_minute` starts in any 60 s.
   */
  requests_refill?: "window" | "continuous";
}

/** Retries and backoff. */
export interface RetryPolicy {
  /** Default 3. */
  max_retries?: number;
  /** Default 1000: the first backoff, doubled each retry. */
  base_delay_ms?: number;
  /** Default 60,000. */
  max_backoff_ms?: number;
  /** A server-requested wait longer than this fails at once instead (default 120,000). */
  max_wait_ms?: number;
}

/** The kinds of upstream. */
export type ProviderType = "openai" | "azure_openai" | "custom";

/** One upstream. */
export interface ProviderConfig {
  type: ProviderType;
  /** Empty: read from `process.env` (`OPENAI_API_KEY`, `AZURE_OPENAI_API_KEY`, `CUSTOM_API_KEY`). */
  api_key?: string;
  /** `openai` (default OpenAI's) and `custom` (required): the API root, e.g. `http://localhost:11434/v1`. */
  base_url?: string;
  /** Default `gpt-3.5-turbo`. */
  model?: string;
  /** Azure: the deployment (default: `model`). */
  deployment_name?: string;
  /** Azure: `https://NAME.openai.azure.com`. */
  endpoint?: string;
  /** Azure: default `2024-10-21`. */
  api_version?: string;
  rate_limit?: RateLimitConfig;
  /** Use as the default provider. */
  default?: boolean;
  /** Per attempt, default 60,000. */
  timeout_ms?: number;
  retry?: RetryPolicy;
}

/** The whole client configuration. */
export interface LlmConfig {
  providers: Record<string, ProviderConfig>;
  default_provider?: string;
  processing?: Record<string, unknown>;
}

/** Options of one call. */
export interface CallOptions {
  /** Cancels the call: it rejects with `code: "aborted"`. */
  signal?: AbortSignal;
  /** Overrides the provider's timeout for each attempt (a stream: the wait for each chunk). */
  timeout_ms?: number;
  /** A streamed answer begins inside a pre-filled `<think>`. */
  starts_in_thinking?: boolean;
}

/** Options of a batch. */
export interface BatchOptions {
  /** Calls in flight at once, default 8. */
  concurrency?: number;
  /** The provider for every item (default: the default provider). */
  provider?: string | null;
  /** Fail over through these providers for every item. */
  failover?: string[] | null;
  timeout_ms?: number | null;
  signal?: AbortSignal;
  /** Called as each item finishes; `index` is its place in `prompts`. */
  onProgress?: (done: number, total: number, item: BatchItem, index: number) => void;
}

/** One batch result. */
export type BatchItem =
  | { ok: true; response: LlmResponse }
  | { ok: false; error: LlmDistillerError };

/** Token counts. */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** A finished answer with its thinking separated. */
export interface LlmResponse {
  /** The answer, thinking blocks removed, trimmed. */
  content: string;
  /** The provider's separate reasoning field, as sent. */
  reasoning: string | null;
  /** All thinking: the separate reasoning first, then every block. */
  thinking: string | null;
  /** A thinking block was never closed (a truncated answer). */
  thinking_unclosed: boolean;
  model: string;
  usage: Usage | null;
  finish_reason: string | null;
  /** How long the successful attempt took, in seconds (the design's `response_time`). */
  response_time: number;
  /** The same in milliseconds. */
  response_time_ms: number;
  /** The configured name of the provider that answered. */
  provider: string;
  /** The upstream's response id. */
  id: string | null;
  /** 1 when the first attempt succeeded. */
  attempts: number;
  /** Time spent waiting for the rate limiter and between retries. */
  waited_ms: number;
  /** The provider's response body. */
  raw_response: Record<string, unknown> | null;
}

/** New text from the streaming extractor. */
export interface ThinkingDelta {
  content: string;
  thinking: string;
}

/** A stream's items: deltas, then the whole answer. */
export type StreamItem =
  | { type: "delta"; content: string; thinking: string }
  | { type: "done"; content: ""; thinking: ""; response: LlmResponse };

/** The result of `extractThinking`. */
export interface Extracted {
  content: string;
  thinking: string | null;
  unclosed: boolean;
}

/** Options of a `ThinkingStream`. */
export interface ThinkingStreamOptions {
  starts_in_thinking?: boolean;
  /** Default `["thinking", "reasoning", "think"]`. */
  tags?: string[];
}

/** A rate limiter's state. */
export interface RateLimitStatus {
  /** Requests started in the last 60 s. */
  requests_per_minute: number;
  /** Tokens in use (capacity minus what is left). */
  tokens_per_minute: number;
  max_requests_per_minute: number;
  max_tokens_per_minute: number;
  /** From `x-ratelimit-limit-requests`. */
  api_requests_per_minute: number | null;
  api_tokens_per_minute: number | null;
  api_remaining_requests: number | null;
  api_remaining_tokens: number | null;
  effective_requests_per_minute: number;
  effective_tokens_per_minute: number;
  in_flight: number;
  /** Requests reserved to start later than now. */
  waiting: number;
  blocked_until_ms: number | null;
  /** How long a request reserved now would wait. */
  next_free_in_ms: number;
}

/** A reserved request. */
export interface Reservation {
  id: number;
  tokens: number;
  wait_ms: number;
  start_at_ms: number;
  reserved_through: number;
}

/** One provider as `providerStatus()` shows it. */
export interface ProviderStatus {
  name: string;
  type: ProviderType;
  model: string;
  available: boolean;
  /** Why it is not available. */
  reason: string | null;
  default: boolean;
  rate_limiter: RateLimitStatus | null;
}

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

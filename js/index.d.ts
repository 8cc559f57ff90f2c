// The package's API: the classes and function index.js exports, and every type they use.
// (wasm-bindgen's own loader, initSync and its types, stays internal: index.js loads the
// module itself.)
export { ProviderManager, CompletionStream, ThinkingStream, RateLimiter, extractThinking } from "./llm_distiller.js";
export type {
  Prompt,
  Message,
  ContentPart,
  GenerationConfig,
  RateLimitConfig,
  RetryPolicy,
  ProviderType,
  ProviderConfig,
  LlmConfig,
  CallOptions,
  BatchOptions,
  BatchItem,
  Usage,
  LlmResponse,
  ThinkingDelta,
  StreamItem,
  Extracted,
  ThinkingStreamOptions,
  RateLimitStatus,
  Reservation,
  ProviderStatus,
  ErrorCode,
  LlmDistillerError,
} from "./llm_distiller.js";

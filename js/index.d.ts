// The package's API, the same from every entry: the classes and function api.js exports,
// and every type they use. api.d.ts is wasm-bindgen's declarations without its loader
// (initSync, InitInput, ...): the entries load the module themselves, and the loader's
// types name DOM types that a Node-only TypeScript project does not have.
export { ProviderManager, CompletionStream, ThinkingStream, RateLimiter, extractThinking } from "./api.js";
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
} from "./api.js";

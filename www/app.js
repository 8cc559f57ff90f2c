// The llm-distiller demo page: a thinking playground (the package's ThinkingStream, all
// local), a streamed prompt through the Worker, a batch run by the package's
// ProviderManager with the Worker as its OpenAI-compatible provider, a browser of the
// answers the Worker stored in D1, their export as a training dataset, and the Worker's
// providers with their rate limiters.
//
// No framework and no build step: this module runs as served. The Worker URL and the
// access token live in sessionStorage only (this tab), never in localStorage or a cookie.

import { ThinkingStream, ProviderManager } from "./pkg/browser.js";

window.__appReady = true;

// ---------------------------------------------------------------------------------------
// Small helpers

const $ = (id) => {
  const element = document.getElementById(id);
  if (!element) throw new Error(`#${id} is missing from index.html`);
  return element;
};

/** Creates an element: `h("p", { class: "x" }, "text", child)`. */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "class") element.className = value;
    else if (name === "text") element.textContent = value;
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

const numberFormat = new Intl.NumberFormat();
const formatNumber = (n) => (n === null || n === undefined ? "–" : numberFormat.format(n));

function formatMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const minutes = Math.floor(ms / 60_000);
  return `${minutes} min ${Math.round((ms % 60_000) / 1000)} s`;
}

function formatTime(ms) {
  const date = new Date(ms);
  return Number.isNaN(date.getTime()) ? "–" : date.toLocaleString();
}

function truncate(text, max) {
  if (!text) return "";
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

function showAlert(element, message) {
  element.textContent = message;
  element.hidden = !message;
}

/** A number from an input, or an error naming its label. */
function readNumber(input, { min, max, integer = false }) {
  const label = document.querySelector(`label[for="${input.id}"]`)?.textContent.trim() ?? input.id;
  const raw = input.value.trim();
  const value = Number(raw);
  if (raw === "" || !Number.isFinite(value) || (integer && !Number.isInteger(value)) ||
      (min !== undefined && value < min) || (max !== undefined && value > max)) {
    const range = max === undefined ? `at least ${min}` : `from ${min} to ${max}`;
    input.setAttribute("aria-invalid", "true");
    input.focus();
    throw new InputError(`${label} must be ${integer ? "a whole number" : "a number"} ${range}.`);
  }
  input.removeAttribute("aria-invalid");
  return value;
}

class InputError extends Error {}

// ---------------------------------------------------------------------------------------
// Errors from the Worker and the package, shown in a readable way

/** An error answer of the Worker (OpenAI's shape `{"error": {message, type, param, code}}`). */
class WorkerError extends Error {
  constructor(message, { status = 0, code = null, type = null, param = null } = {}) {
    super(message);
    this.name = "WorkerError";
    this.status = status;
    this.code = code;
    this.type = type;
    this.param = param;
  }
}

async function errorFromResponse(response) {
  let text = "";
  try {
    text = await response.text();
  } catch {
    // The body could not be read: the status says enough.
  }
  let details = {};
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === "object" && body.error) details = body.error;
  } catch {
    // Not JSON (a proxy's HTML page, say): show its start.
  }
  const message = details.message || text.replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim().slice(0, 300) ||
    response.statusText || "no details";
  return new WorkerError(message, {
    status: response.status,
    code: details.code ?? null,
    type: details.type ?? null,
    param: details.param ?? null,
  });
}

const STATUS_TEXT = {
  400: "Bad request",
  401: "Not authorised",
  404: "Not found",
  413: "Request too large",
  429: "Rate limited",
  500: "Worker error",
  502: "Upstream error",
  503: "Unavailable",
  504: "Upstream timeout",
};

/** One line for a person: what happened, with the status and code for the curious. */
function describeError(error) {
  if (error instanceof InputError) return error.message;
  if (error?.name === "AbortError" || error?.code === "aborted") return "Stopped.";
  const status = error?.status;
  const code = error?.code && error.code !== "http" ? error.code : null;
  const tags = [status ? `${status} ${STATUS_TEXT[status] ?? ""}`.trim() : null, code].filter(Boolean);
  let message = error?.message || String(error);
  if (error?.param) message += ` (parameter: ${error.param})`;
  if (error?.retryAfterMs) message += ` (retry after ${formatMs(error.retryAfterMs)})`;
  return tags.length ? `${tags.join(" · ")}: ${message}` : message;
}

// ---------------------------------------------------------------------------------------
// The connection: Worker URL and access token, in sessionStorage only

const STORAGE_URL = "llm-distiller.worker-url";
const STORAGE_TOKEN = "llm-distiller.token";

const session = {
  url: sessionStorage.getItem(STORAGE_URL) || (location.protocol.startsWith("http") ? location.origin : ""),
  token: sessionStorage.getItem(STORAGE_TOKEN) || "",
  connected: false,
};

/** Listeners told when the connection comes or goes. */
const connectionListeners = [];

function normaliseUrl(text) {
  const url = new URL(text.trim());
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error("use an http:// or https:// URL");
  return `${url.origin}${url.pathname}`.replace(/\/+$/, "");
}

/** Calls the Worker with the token; rejects with a WorkerError (and asks for the token again on 401). */
async function api(path, { method = "GET", json, body, signal } = {}) {
  if (!session.token) {
    askForToken();
    throw new WorkerError("Connect to the Worker first: enter its URL and the access token above.");
  }
  const headers = { authorization: `Bearer ${session.token}` };
  // `body` goes as it is (a FormData sets its own multipart content type).
  const init = { method, headers, signal, body };
  if (json !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(`${session.url}${path}`, init);
  } catch (error) {
    if (error?.name === "AbortError") throw error;
    throw new WorkerError(
      `could not reach the Worker at ${session.url} (${error.message}). Check the URL and that the Worker is running.`,
      { code: "network" },
    );
  }
  if (!response.ok) {
    const error = await errorFromResponse(response);
    if (response.status === 401) tokenRefused(error);
    throw error;
  }
  return response;
}

function tokenRefused(error) {
  session.token = "";
  sessionStorage.removeItem(STORAGE_TOKEN);
  setConnected(false);
  askForToken(`The Worker refused the access token (${error.message}). Enter it again.`);
}

function askForToken(message = "") {
  const form = $("connect-form");
  form.hidden = false;
  $("connect-done").hidden = true;
  $("connect").hidden = false;
  showAlert($("connect-message"), message);
  $("connect-url").value = session.url;
  if (message) $("connect-token").focus();
}

function setConnected(connected) {
  session.connected = connected;
  const status = $("connection-status");
  status.textContent = connected ? `Connected: ${session.url}` : "Not connected";
  status.classList.toggle("connection-status--ok", connected);
  $("connect-done").hidden = !connected;
  $("connect-form").hidden = connected;
  $("connect-done-url").textContent = session.url;
  $("connect").classList.toggle("connect--compact", connected);
  for (const listener of connectionListeners) listener(connected);
}

async function connect(url, token) {
  const previous = { url: session.url, token: session.token };
  session.url = url;
  session.token = token;
  try {
    await loadProviders();
  } catch (error) {
    // Unverified: keep what worked before (a 401 has cleared the token already).
    if (error.status !== 401) Object.assign(session, previous);
    throw error;
  }
  sessionStorage.setItem(STORAGE_URL, url);
  sessionStorage.setItem(STORAGE_TOKEN, token);
  setConnected(true);
  return providers;
}

function setUpConnection() {
  $("connect-url").value = session.url;
  $("connect-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = $("connect-message");
    let url;
    try {
      url = normaliseUrl($("connect-url").value);
    } catch (error) {
      showAlert(message, `The Worker URL is not valid: ${error.message}.`);
      $("connect-url").focus();
      return;
    }
    const token = $("connect-token").value.trim();
    if (!token) {
      showAlert(message, "Enter the access token.");
      $("connect-token").focus();
      return;
    }
    const button = $("connect-submit");
    button.disabled = true;
    button.textContent = "Connecting…";
    showAlert(message, "");
    try {
      await connect(url, token);
      $("connect-token").value = "";
    } catch (error) {
      if (error.status !== 401) showAlert(message, `Could not connect: ${describeError(error)}`);
    } finally {
      button.disabled = false;
      button.textContent = "Connect";
    }
  });
  $("connect-change").addEventListener("click", () => {
    setConnected(false);
    askForToken();
    $("connect-url").focus();
  });
  $("connect-forget").addEventListener("click", () => {
    session.token = "";
    sessionStorage.removeItem(STORAGE_TOKEN);
    setConnected(false);
    askForToken();
    $("connect-token").focus();
  });
  if (session.token) {
    connect(session.url, session.token).catch((error) => {
      if (error.status !== 401) askForToken(`Could not connect: ${describeError(error)}`);
    });
  } else {
    askForToken();
  }
}

// ---------------------------------------------------------------------------------------
// Providers: loaded once on connecting, kept fresh by the Providers section

const providers = { list: [], default: null };
const providerListeners = [];

async function loadProviders() {
  const body = await (await api("/v1/providers")).json();
  providers.list = Array.isArray(body.data) ? body.data : [];
  providers.default = body.default ?? null;
  for (const listener of providerListeners) listener();
  return providers;
}

const providerByName = (name) => providers.list.find((p) => p.name === name) ?? null;
const isDemo = (provider) => provider?.model === "demo-model";

/** Fills a provider `<select>`: unavailable ones disabled with their reason; keeps the choice. */
function fillProviderSelect(select) {
  const previous = select.value;
  select.replaceChildren();
  for (const provider of providers.list) {
    const label = provider.available
      ? `${provider.name} (${provider.model})${provider.default ? " · default" : ""}`
      : `${provider.name}: unavailable, ${truncate(provider.reason ?? "no reason given", 70)}`;
    select.append(h("option", { value: provider.name, disabled: !provider.available, title: provider.reason ?? "" }, label));
  }
  const usable = (name) => providerByName(name)?.available;
  select.value = usable(previous) ? previous
    : usable(providers.default) ? providers.default
    : providers.list.find((p) => p.available)?.name ?? "";
  if (!providers.list.length) select.append(h("option", { value: "", disabled: true }, "Connect to load the providers"));
}

/** Fills a provider filter `<select>`: any provider, then each by name; keeps the choice. */
function fillProviderFilter(select) {
  const previous = select.value;
  select.replaceChildren(h("option", { value: "" }, "Any provider"),
    ...providers.list.map((p) => h("option", { value: p.name }, p.name)));
  select.value = providers.list.some((p) => p.name === previous) ? previous : "";
}

/** The line under a provider `<select>`: type and model, and why the others are unavailable. */
function describeProviderChoice(select, info, demoBadge) {
  const provider = providerByName(select.value);
  demoBadge.hidden = !isDemo(provider);
  info.replaceChildren();
  if (provider) {
    info.append(`${provider.type} provider, model ${provider.model}${provider.default ? ", the Worker's default" : ""}.`);
    if (isDemo(provider)) info.append(" Its answers are canned by the local demo upstream, not written by a model.");
  }
  const unavailable = providers.list.filter((p) => !p.available);
  if (unavailable.length) {
    info.append(h("span", { class: "hint__unavailable" },
      ` Unavailable: ${unavailable.map((p) => `${p.name} (${p.reason ?? "no reason given"})`).join("; ")}.`));
  }
}

// ---------------------------------------------------------------------------------------
// Tabs (WAI-ARIA tabs pattern: arrows, Home and End move between tabs)

const panelActivation = {};

function setUpTabs(tablist, onSelect) {
  const tabs = [...tablist.querySelectorAll('[role="tab"]')];
  const select = (tab, focus = false) => {
    for (const other of tabs) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      other.tabIndex = selected ? 0 : -1;
    }
    if (focus) tab.focus();
    onSelect(tab);
  };
  tablist.addEventListener("click", (event) => {
    const tab = event.target.closest('[role="tab"]');
    if (tab) select(tab);
  });
  tablist.addEventListener("keydown", (event) => {
    const index = tabs.indexOf(document.activeElement);
    if (index < 0) return;
    const next = {
      ArrowRight: (index + 1) % tabs.length,
      ArrowLeft: (index - 1 + tabs.length) % tabs.length,
      Home: 0,
      End: tabs.length - 1,
    }[event.key];
    if (next === undefined) return;
    event.preventDefault();
    select(tabs[next], true);
  });
  return { tabs, select };
}

let activePanel = "playground";

function setUpSections() {
  const { tabs, select } = setUpTabs($("tablist"), (tab) => {
    const name = tab.id.replace(/^tab-/, "");
    for (const other of tabs) {
      $(other.getAttribute("aria-controls")).hidden = other !== tab;
    }
    activePanel = name;
    if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
    panelActivation[name]?.();
    providersView.update();
  });
  const fromHash = tabs.find((t) => t.id === `tab-${location.hash.slice(1)}`);
  select(fromHash ?? tabs[0]);
  window.addEventListener("hashchange", () => {
    const tab = tabs.find((t) => t.id === `tab-${location.hash.slice(1)}`);
    if (tab) select(tab);
  });
}

// ---------------------------------------------------------------------------------------
// 1. Thinking playground

function setUpPlayground() {
  const input = $("pg-input");
  const startsInThinking = $("pg-starts-thinking");
  const contentOut = $("pg-content");
  const thinkingOut = $("pg-thinking");
  const status = $("pg-status");
  /** The stream fed so far, the text it was fed, and what it gave back. */
  const state = { stream: null, text: "", content: "", thinking: "", finished: true, pushes: 0, unclosed: false, timer: 0 };

  const take = (delta) => {
    state.content += delta.content;
    state.thinking += delta.thinking;
  };
  const restart = () => {
    state.stream?.free();
    state.stream = new ThinkingStream({ starts_in_thinking: startsInThinking.checked });
    Object.assign(state, { text: "", content: "", thinking: "", finished: false, pushes: 0, unclosed: false });
  };
  const render = () => {
    contentOut.textContent = state.content;
    thinkingOut.textContent = state.thinking;
    contentOut.classList.toggle("output--empty", !state.content);
    thinkingOut.classList.toggle("output--empty", !state.thinking);
    const pushes = `${state.pushes} push${state.pushes === 1 ? "" : "es"}`;
    if (!state.stream) {
      status.replaceChildren(h("span", { class: "badge" }, "idle"), " Nothing typed yet.");
      return;
    }
    status.replaceChildren(...[
      state.finished
        ? h("span", { class: "badge badge--ok" }, "final")
        : h("span", { class: "badge badge--live" }, "streaming"),
      state.finished
        ? `finish() flushed the held-back text after ${pushes}.`
        : `${pushes}; text that may still be a tag is held back until you pause.`,
      state.finished && state.unclosed ? h("span", { class: "badge badge--warn" }, "thinking never closed") : null,
    ].filter(Boolean));
  };
  const finish = () => {
    if (!state.stream || state.finished) return;
    take(state.stream.finish());
    state.finished = true;
    state.unclosed = state.stream.unclosed;
    render();
  };
  const feed = ({ fresh = false } = {}) => {
    const text = input.value;
    if (!fresh && state.stream && !state.finished && text.startsWith(state.text)) {
      const added = text.slice(state.text.length);
      if (added) {
        take(state.stream.push(added));
        state.pushes += 1;
      }
    } else {
      // Not an extension (an edit, a deletion, a finished stream): start over.
      restart();
      if (text) {
        take(state.stream.push(text));
        state.pushes += 1;
      }
    }
    state.text = text;
    render();
    clearTimeout(state.timer);
    state.timer = setTimeout(finish, 400);
  };
  input.addEventListener("input", () => feed());
  input.addEventListener("blur", () => {
    clearTimeout(state.timer);
    finish();
  });
  startsInThinking.addEventListener("change", () => feed({ fresh: true }));
  render();
}

// ---------------------------------------------------------------------------------------
// 2. Prompt: a streamed chat completion

/** The server-sent events of a response body: `{ event, data }`, as the SSE standard reads them. */
async function* serverSentEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  const parse = (block) => {
    let event = "message";
    const data = [];
    for (const line of block.split(/\r\n|\n|\r/)) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") event = value;
    }
    return data.length ? { event, data: data.join("\n") } : null;
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = /\r\n\r\n|\n\n|\r\r/.exec(buffer))) {
        const event = parse(buffer.slice(0, end.index));
        buffer = buffer.slice(end.index + end[0].length);
        if (event) yield event;
      }
    }
    const last = buffer.trim() ? parse(buffer) : null;
    if (last) yield last;
  } finally {
    reader.cancel().catch(() => {});
  }
}

function setUpPrompt() {
  const form = $("prompt-form");
  const select = $("pr-provider");
  const send = $("pr-send");
  const stop = $("pr-stop");
  const stateLine = $("pr-state");
  const errorBox = $("pr-error");
  const answer = $("pr-answer");
  const thinking = $("pr-thinking");
  const thinkingCount = $("pr-thinking-count");
  const meta = $("pr-meta");
  let controller = null;

  const refreshChoice = () => describeProviderChoice(select, $("pr-provider-info"), $("pr-demo"));
  providerListeners.push(() => {
    fillProviderSelect(select);
    refreshChoice();
  });
  select.addEventListener("change", refreshChoice);
  fillProviderSelect(select);

  const setState = (state, text) => {
    stateLine.dataset.state = state;
    stateLine.replaceChildren(text ? h("span", { class: `badge badge--${state}` }, text) : "");
  };
  const renderMeta = (rows) => {
    meta.replaceChildren(...rows.filter(([, value]) => value !== null && value !== undefined && value !== "")
      .map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value))));
  };

  stop.addEventListener("click", () => controller?.abort());

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showAlert(errorBox, "");
    let body;
    try {
      const provider = select.value;
      if (!provider) throw new InputError("Choose an available provider (connect to the Worker first).");
      const prompt = $("pr-prompt").value.trim();
      if (!prompt) {
        $("pr-prompt").focus();
        throw new InputError("Write a prompt.");
      }
      const system = $("pr-system").value.trim();
      body = {
        messages: [...(system ? [{ role: "system", content: system }] : []), { role: "user", content: prompt }],
        temperature: readNumber($("pr-temperature"), { min: 0, max: 2 }),
        max_tokens: readNumber($("pr-max-tokens"), { min: 1, integer: true }),
        top_p: readNumber($("pr-top-p"), { min: 0, max: 1 }),
        stream: true,
        stream_options: { include_usage: true },
        provider,
      };
    } catch (error) {
      showAlert(errorBox, describeError(error));
      return;
    }

    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    $("pr-result").hidden = false;
    answer.textContent = "";
    answer.classList.remove("output--empty");
    thinking.textContent = "";
    thinkingCount.textContent = "";
    answer.classList.add("output--streaming");
    meta.replaceChildren();
    setState("waiting", "waiting for the first token…");
    const started = performance.now();
    let firstTokenMs = null;
    let id = null;
    let finishReason = null;
    let usage = null;
    let model = providerByName(body.provider)?.model ?? null;
    let sawDone = false;
    let thinkingText = "";
    let failure = null;
    try {
      const response = await api("/v1/chat/completions", { method: "POST", json: body, signal: controller.signal });
      id = response.headers.get("x-distiller-id");
      if (!(response.headers.get("content-type") ?? "").includes("text/event-stream")) {
        throw new WorkerError("the Worker did not answer with a stream (text/event-stream)", { status: response.status });
      }
      for await (const message of serverSentEvents(response.body)) {
        if (message.data === "[DONE]") {
          sawDone = true;
          break;
        }
        let chunk;
        try {
          chunk = JSON.parse(message.data);
        } catch {
          throw new WorkerError(`a stream event is not JSON: ${truncate(message.data, 120)}`);
        }
        if (message.event === "error" || chunk.error) {
          const details = chunk.error ?? chunk;
          throw new WorkerError(details.message ?? "the stream reported an error", details);
        }
        model = chunk.model || model;
        if (chunk.usage) usage = chunk.usage;
        const choice = chunk.choices?.[0];
        if (!choice) continue;
        const delta = choice.delta ?? {};
        const reasoning = delta.reasoning_content ?? delta.reasoning ?? "";
        if (reasoning || delta.content) {
          firstTokenMs ??= performance.now() - started;
          setState("streaming", "streaming…");
        }
        if (reasoning) {
          thinkingText += reasoning;
          thinking.append(reasoning);
          thinkingCount.textContent = `(${formatNumber(thinkingText.length)} characters)`;
        }
        if (delta.content) answer.append(delta.content);
        if (choice.finish_reason) finishReason = choice.finish_reason;
      }
      if (!sawDone) failure = new WorkerError("the stream ended without its final [DONE] event: the answer may be cut short.");
    } catch (error) {
      failure = error;
    } finally {
      controller = null;
      send.disabled = false;
      stop.disabled = true;
      answer.classList.remove("output--streaming");
    }
    const totalMs = performance.now() - started;
    // Refused before any stream began (a 4xx, the network): the error alone says it all.
    $("pr-result").hidden = Boolean(failure) && !id && !answer.textContent && !thinkingText;
    answer.classList.toggle("output--empty", !answer.textContent);
    if (failure) {
      showAlert(errorBox, describeError(failure));
      setState(failure.name === "AbortError" ? "stopped" : "failed", failure.name === "AbortError" ? "stopped" : "failed");
    } else {
      setState("done", "done");
    }
    if (!thinkingText) thinking.textContent = "(no thinking in this answer)";
    renderMeta([
      ["Provider", body.provider],
      ["Model", model],
      ["Finish reason", finishReason === null ? (failure ? "none (the stream did not finish)" : "–")
        : finishReason === "stop" ? "stop"
        : h("span", { class: "error-text" }, `${finishReason}: not "stop", so the Worker stores it as invalid`)],
      ["Usage", usage
        ? `${formatNumber(usage.prompt_tokens)} prompt + ${formatNumber(usage.completion_tokens)} completion = ${formatNumber(usage.total_tokens)} tokens`
        : "not reported"],
      ["First token", formatMs(firstTokenMs)],
      ["Total time", formatMs(totalMs)],
      ["Stored as", id ? h("code", { id: "pr-stored-id" }, id) : null],
    ]);
  });
}

// ---------------------------------------------------------------------------------------
// 3. Batch runner: a durable batch on the Worker (OpenAI's Batch API), or the npm
// package's ProviderManager in this tab with the Worker as its provider

/** localStorage: the Worker URL and id of the last batch sent to the Worker (no secret). */
const STORAGE_BATCH = "llm-distiller.batch";
const BATCH_POLL_MS = 1000;
/** How many polls in a row may fail (the Worker restarting, say) before the page stops following. */
const BATCH_POLL_FAILURES = 30;
const BATCH_ENDED = new Set(["completed", "failed", "cancelled", "expired"]);

const sleep = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  signal?.addEventListener("abort", () => {
    clearTimeout(timer);
    resolve();
  }, { once: true });
});

/** The `custom_id` of prompt `index` (from 0) in the files this page makes. */
const customIdOf = (index) => `prompt-${index + 1}`;

/** A batch input file: one `POST /v1/chat/completions` line per prompt, in OpenAI's JSONL. */
function batchInput(prompts, body) {
  return prompts.map((prompt, index) => JSON.stringify({
    custom_id: customIdOf(index),
    method: "POST",
    url: "/v1/chat/completions",
    body: { ...body, messages: [{ role: "user", content: prompt }] },
  })).join("\n") + "\n";
}

/** The lines of a JSONL text, read; lines that do not parse are skipped. */
function readJsonl(text) {
  return text.split("\n").flatMap((line) => {
    if (!line.trim()) return [];
    try {
      return [JSON.parse(line)];
    } catch {
      return [];
    }
  });
}

/** What a batch input line asks: its last user message, as text. */
function promptOf(line) {
  const messages = Array.isArray(line?.body?.messages) ? line.body.messages : [];
  const content = messages.filter((m) => m?.role === "user").at(-1)?.content;
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((part) => part?.text ?? "").join(" ");
  return String(line?.custom_id ?? "");
}

function readStoredBatch() {
  try {
    const stored = JSON.parse(localStorage.getItem(STORAGE_BATCH) ?? "null");
    return typeof stored?.id === "string" && typeof stored?.url === "string" ? stored : null;
  } catch {
    return null;
  }
}

function setUpBatch() {
  const form = $("batch-form");
  const select = $("bt-provider");
  const promptsInput = $("bt-prompts");
  const run = $("bt-run");
  const cancel = $("bt-cancel");
  const errorBox = $("bt-error");
  const progress = $("bt-progress");
  const progressText = $("bt-progress-text");
  const items = $("bt-items");
  const batchLine = $("bt-batch");
  /** The run in progress: `{ mode, controller, batchId }`, or null. */
  let current = null;

  const readPrompts = () => promptsInput.value.split(/\r?\n/).map((line) => line.trim()).filter(Boolean);
  const count = () => {
    const n = readPrompts().length;
    $("bt-count").textContent = `${n} prompt${n === 1 ? "" : "s"}`;
  };
  promptsInput.addEventListener("input", count);
  count();
  const refreshChoice = () => describeProviderChoice(select, $("bt-provider-info"), $("bt-demo"));
  providerListeners.push(() => {
    fillProviderSelect(select);
    refreshChoice();
  });
  select.addEventListener("change", refreshChoice);
  fillProviderSelect(select);

  const modeChosen = () => form.querySelector('input[name="bt-mode"]:checked')?.value ?? "worker";
  /** Shows the fields and figures of one mode. */
  const showMode = (mode) => {
    $("bt-concurrency-field").hidden = mode !== "browser";
    for (const row of $("bt-stats").querySelectorAll("[data-mode]")) row.hidden = row.dataset.mode !== mode;
  };
  $("bt-mode").addEventListener("change", () => {
    if (!current) showMode(modeChosen());
  });
  showMode(modeChosen());

  const setItem = (index, status, detail) => {
    const item = items.children[index];
    if (!item) return;
    item.dataset.status = status;
    const badge = item.querySelector(".badge");
    badge.className = `badge badge--${status}`;
    badge.textContent = status;
    const note = item.querySelector(".items__detail");
    note.replaceChildren(...(Array.isArray(detail) ? detail : [detail ?? ""]));
  };
  const showItems = (prompts, status = "pending") => {
    items.replaceChildren(...prompts.map((prompt, index) => h("li", { class: "items__item", "data-status": status },
      h("span", { class: "items__index", "aria-hidden": "true" }, `${index + 1}.`),
      h("span", { class: `badge badge--${status}` }, status),
      h("span", { class: "items__prompt" }, prompt),
      h("span", { class: "items__detail" }))));
  };
  const showProgress = (finished, total) => {
    progress.max = Math.max(total, 1);
    progress.value = finished;
    const percent = total ? Math.round((finished / total) * 100) : 0;
    progressText.textContent = `${finished} of ${total} (${percent} %)`;
  };
  const startRun = (mode) => {
    showMode(mode);
    current = { mode, controller: new AbortController(), batchId: null };
    run.disabled = true;
    cancel.disabled = mode === "worker";
    $("bt-run-view").hidden = false;
    $("bt-downloads").hidden = true;
    batchLine.hidden = true;
    return current;
  };
  const endRun = (ended) => {
    if (current !== ended) return;
    current = null;
    run.disabled = false;
    cancel.disabled = true;
  };

  cancel.addEventListener("click", async () => {
    if (!current) return;
    if (current.mode === "browser") {
      current.controller.abort();
      return;
    }
    // On the Worker: the lines not started are cancelled at once; those running finish
    // and are kept. The page follows the batch on to `cancelled`.
    cancel.disabled = true;
    try {
      await api(`/v1/batches/${encodeURIComponent(current.batchId)}/cancel`, { method: "POST" });
    } catch (error) {
      showAlert(errorBox, `The Worker did not cancel the batch: ${describeError(error)}`);
      cancel.disabled = false;
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showAlert(errorBox, "");
    let prompts;
    let body;
    let provider;
    try {
      provider = providerByName(select.value);
      if (!provider?.available) throw new InputError("Choose an available provider (connect to the Worker first).");
      prompts = readPrompts();
      if (!prompts.length) {
        promptsInput.focus();
        throw new InputError("Write at least one prompt, one per line.");
      }
      body = {
        model: provider.model,
        temperature: readNumber($("bt-temperature"), { min: 0, max: 2 }),
        max_tokens: readNumber($("bt-max-tokens"), { min: 1, integer: true }),
        // An extension of the Worker's API: it picks the provider.
        provider: provider.name,
      };
      if (!session.token) throw new WorkerError("Connect to the Worker first: enter its URL and the access token above.");
    } catch (error) {
      showAlert(errorBox, describeError(error));
      return;
    }
    if (modeChosen() === "browser") await runInBrowser(prompts, body, provider);
    else await runOnWorker(prompts, body);
  });

  // ---- On the Worker: upload, create, follow until it ends, fetch the files

  async function runOnWorker(prompts, body) {
    const job = startRun("worker");
    showItems(prompts);
    showProgress(0, prompts.length);
    $("bt-status").textContent = "uploading";
    let batch;
    try {
      const upload = new FormData();
      upload.append("purpose", "batch");
      upload.append("file", new Blob([batchInput(prompts, body)], { type: "application/jsonl" }), "prompts.jsonl");
      const file = await (await api("/v1/files", { method: "POST", body: upload })).json();
      batch = await (await api("/v1/batches", {
        method: "POST",
        json: {
          input_file_id: file.id,
          endpoint: "/v1/chat/completions",
          completion_window: "24h",
          metadata: { source: "llm-distiller demo page" },
        },
      })).json();
    } catch (error) {
      $("bt-status").textContent = "not sent";
      showAlert(errorBox, `The Worker did not take the batch: ${describeError(error)}`);
      endRun(job);
      return;
    }
    localStorage.setItem(STORAGE_BATCH, JSON.stringify({ url: session.url, id: batch.id }));
    await follow(job, batch, prompts.map((_, i) => customIdOf(i)));
  }

  /**
   * Follows `batch` until it ends (polling its counts), then shows each line's answer.
   * `customIds[i]` is the `custom_id` of the item shown `i`-th.
   */
  async function follow(job, batch, customIds) {
    job.batchId = batch.id;
    cancel.disabled = BATCH_ENDED.has(batch.status);
    batchLine.hidden = false;
    batchLine.textContent = `Batch ${batch.id}: it keeps running on the Worker if this tab closes; the page picks it up again when it opens.`;
    const index = new Map(customIds.map((id, i) => [id, i]));
    let failures = 0;
    while (!job.controller.signal.aborted) {
      renderBatch(batch);
      if (BATCH_ENDED.has(batch.status)) break;
      await sleep(BATCH_POLL_MS, job.controller.signal);
      if (job.controller.signal.aborted) break;
      try {
        batch = await (await api(`/v1/batches/${encodeURIComponent(batch.id)}`, { signal: job.controller.signal })).json();
        failures = 0;
        showAlert(errorBox, "");
      } catch (error) {
        if (error?.name === "AbortError") break;
        if (error.status === 401 || error.status === 404 || ++failures >= BATCH_POLL_FAILURES) {
          if (error.status === 404) localStorage.removeItem(STORAGE_BATCH);
          showAlert(errorBox, `Stopped following batch ${batch.id}: ${describeError(error)}`);
          endRun(job);
          return;
        }
        showAlert(errorBox, `Could not read the batch (${describeError(error)}); trying again.`);
      }
    }
    if (job.controller.signal.aborted) {
      endRun(job);
      return;
    }
    try {
      await showResults(batch, index);
    } catch (error) {
      showAlert(errorBox, `The batch ended, but its files could not be read: ${describeError(error)}`);
    }
    endRun(job);
  }

  function renderBatch(batch) {
    const counts = batch.request_counts ?? { total: 0, completed: 0, failed: 0 };
    const total = counts.total || items.children.length;
    showProgress(counts.completed + counts.failed, total);
    $("bt-status").textContent = batch.status;
    $("bt-done").textContent = formatNumber(counts.completed);
    $("bt-failed").textContent = formatNumber(counts.failed);
    const ended = batch.completed_at ?? batch.failed_at ?? batch.cancelled_at ?? batch.expired_at;
    $("bt-elapsed").textContent = formatMs(((ended ?? Date.now() / 1000) - batch.created_at) * 1000);
    if (batch.status === "failed" && batch.errors?.data?.length) {
      const lines = batch.errors.data.slice(0, 5).map((e) => `${e.line ? `line ${e.line}: ` : ""}${e.message}`);
      showAlert(errorBox, `The Worker refused the file: ${lines.join("; ")}`);
    }
  }

  async function showResults(batch, index) {
    const files = [
      [batch.output_file_id, $("bt-download-output"), "output"],
      [batch.error_file_id, $("bt-download-errors"), "errors"],
    ];
    const seen = new Set();
    for (const [id, button, kind] of files) {
      button.hidden = !id;
      if (!id) continue;
      const text = await (await api(`/v1/files/${encodeURIComponent(id)}/content`)).text();
      button.onclick = () => download(text, `${batch.id}-${kind}.jsonl`);
      for (const line of readJsonl(text)) {
        const at = index.get(line.custom_id);
        if (at === undefined) continue;
        seen.add(at);
        const answer = line.response?.status_code === 200 ? line.response.body : null;
        if (answer && !line.error) {
          const thinking = answer.choices?.[0]?.message?.reasoning_content;
          setItem(at, "done", [truncate(answer.choices?.[0]?.message?.content ?? "", 140),
            h("span", { class: "muted" }, thinking ? " · with reasoning" : "")]);
        } else {
          const message = line.error?.message ?? line.response?.body?.error?.message ?? "no answer";
          setItem(at, "failed", h("span", { class: "error-text" }, message));
        }
      }
    }
    $("bt-downloads").hidden = !batch.output_file_id && !batch.error_file_id;
    for (let at = 0; at < items.children.length; at += 1) {
      if (seen.has(at)) continue;
      if (batch.status === "cancelled") setItem(at, "cancelled", "cancelled before it was sent");
      else if (batch.status === "failed") setItem(at, "failed", "the batch failed validation");
    }
  }

  function download(text, filename) {
    const url = URL.createObjectURL(new Blob([text], { type: "application/jsonl" }));
    const link = h("a", { href: url, download: filename, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }

  /** Picks up the last batch sent to this Worker from this browser, after a reload. */
  async function resume() {
    const stored = readStoredBatch();
    if (!stored || stored.url !== session.url || current) return;
    const job = startRun("worker");
    try {
      const batch = await (await api(`/v1/batches/${encodeURIComponent(stored.id)}`)).json();
      const input = await (await api(`/v1/files/${encodeURIComponent(batch.input_file_id)}/content`)).text();
      const lines = readJsonl(input);
      showItems(lines.map(promptOf));
      await follow(job, batch, lines.map((line) => line.custom_id));
    } catch (error) {
      if (error.status === 404) localStorage.removeItem(STORAGE_BATCH);
      showAlert(errorBox, `Could not pick up batch ${stored.id}: ${describeError(error)}`);
      endRun(job);
    }
  }
  connectionListeners.push((connected) => {
    if (connected) resume();
    else current?.mode === "worker" && current.controller.abort();
  });

  // ---- In this browser: the package's generateBatch with the Worker as its provider

  async function runInBrowser(prompts, body, provider) {
    let concurrency;
    try {
      concurrency = readNumber($("bt-concurrency"), { min: 1, max: 32, integer: true });
    } catch (error) {
      showAlert(errorBox, describeError(error));
      return;
    }
    // GenerationConfig passes unknown parameters through: `provider` reaches the Worker.
    const { model: _model, ...config } = body;
    // The Worker is OpenAI-compatible: the package calls it like any `custom` upstream,
    // with its own limits generous, so the Worker's limiter is the one that counts.
    let manager;
    try {
      manager = new ProviderManager({
        providers: {
          worker: {
            type: "custom",
            base_url: `${session.url}/v1`,
            api_key: session.token,
            model: provider.model,
            rate_limit: { requests_per_minute: 100_000, tokens_per_minute: 100_000_000 },
          },
        },
      });
    } catch (error) {
      showAlert(errorBox, `The package refused the configuration: ${describeError(error)}`);
      return;
    }

    const job = startRun("browser");
    showItems(prompts);
    const totals = { done: 0, failed: 0, retries: 0, waits: 0, waitedMs: 0 };
    const started = performance.now();
    const renderTotals = (finished, total) => {
      showProgress(finished, total);
      $("bt-done").textContent = formatNumber(totals.done);
      $("bt-failed").textContent = formatNumber(totals.failed);
      $("bt-retries").textContent = formatNumber(totals.retries);
      $("bt-waits").textContent = formatNumber(totals.waits);
      $("bt-waited").textContent = formatMs(totals.waitedMs);
      $("bt-elapsed").textContent = formatMs(performance.now() - started);
    };
    const tally = (result) => {
      if (result.ok) {
        totals.done += 1;
        totals.retries += Math.max(0, result.response.attempts - 1);
        if (result.response.waited_ms > 0) {
          totals.waits += 1;
          totals.waitedMs += result.response.waited_ms;
        }
      } else {
        totals.failed += 1;
      }
    };
    const detailOf = (result) => result.ok
      ? [truncate(result.response.content, 140), h("span", { class: "muted" },
          ` · ${formatMs(result.response.response_time_ms)}${result.response.attempts > 1 ? ` · ${result.response.attempts} attempts` : ""}`)]
      : [h("span", { class: "error-text" }, describeError(result.error))];
    renderTotals(0, prompts.length);
    let refused = null;
    try {
      const results = await manager.generateBatch(prompts, config, {
        concurrency,
        signal: job.controller.signal,
        // Counts come from each item as it finishes; rows are marked from the ordered
        // results at the end (or at once, when the item names its index).
        onProgress: (done, total, item, index) => {
          tally(item);
          const at = Number.isInteger(item.index) ? item.index : Number.isInteger(index) ? index : null;
          if (at !== null) setItem(at, item.ok ? "done" : "failed", detailOf(item));
          if (!item.ok && item.error?.status === 401) refused ??= item.error;
          renderTotals(done, total);
        },
      });
      results.forEach((result, index) => setItem(index, result.ok ? "done" : "failed", detailOf(result)));
      // The totals again from the ordered results: the same numbers, and right even if a
      // progress callback was missed.
      Object.assign(totals, { done: 0, failed: 0, retries: 0, waits: 0, waitedMs: 0 });
      results.forEach(tally);
      renderTotals(results.length, prompts.length);
      if (totals.failed) showAlert(errorBox, `${totals.failed} of ${prompts.length} prompts failed; their errors are in the list.`);
    } catch (error) {
      showAlert(errorBox, `The batch stopped: ${describeError(error)}`);
      for (const item of items.children) {
        if (item.dataset.status === "pending") setItem([...items.children].indexOf(item), "failed", describeError(error));
      }
    } finally {
      manager.free();
      endRun(job);
      $("bt-elapsed").textContent = formatMs(performance.now() - started);
    }
    if (refused) tokenRefused(refused);
  }
}

// ---------------------------------------------------------------------------------------
// 4. Stored responses

function setUpStored() {
  const rows = $("st-rows");
  const table = $("st-table");
  const region = $("st-table-region");
  const summary = $("st-summary");
  const errorBox = $("st-error");
  const providerFilter = $("st-provider");
  const prev = $("st-prev");
  const next = $("st-next");
  /** The cursors of the pages seen: `cursors[page]` opens that page (null: the first). */
  const state = { valid: true, cursors: [null], nextCursor: null, loaded: false, request: 0, details: new Map() };

  setUpTabs($("st-validity"), (tab) => {
    const valid = tab.dataset.valid === "true";
    region.setAttribute("aria-labelledby", tab.id);
    if (valid === state.valid && state.loaded) return;
    state.valid = valid;
    restart();
  });

  providerListeners.push(() => {
    fillProviderFilter(providerFilter);
    const models = new Set(providers.list.map((p) => p.model));
    $("st-models").replaceChildren(...[...models].map((m) => h("option", { value: m })));
  });

  const restart = () => {
    state.cursors = [null];
    load();
  };

  async function load() {
    if (!session.token) {
      summary.textContent = "Connect to the Worker to see its stored responses.";
      return;
    }
    const request = ++state.request;
    const page = state.cursors.length - 1;
    const params = new URLSearchParams({ valid: String(state.valid), limit: $("st-limit").value });
    const cursor = state.cursors[page];
    if (cursor) params.set("cursor", cursor);
    if (providerFilter.value) params.set("provider", providerFilter.value);
    const model = $("st-model").value.trim();
    if (model) params.set("model", model);
    region.setAttribute("aria-busy", "true");
    showAlert(errorBox, "");
    try {
      const body = await (await api(`/v1/responses?${params}`)).json();
      if (request !== state.request) return; // a newer load superseded this one
      state.loaded = true;
      state.nextCursor = body.next_cursor ?? null;
      render(body.data ?? [], page);
    } catch (error) {
      if (request !== state.request) return;
      showAlert(errorBox, `Could not load the stored responses: ${describeError(error)}`);
    } finally {
      if (request === state.request) region.setAttribute("aria-busy", "false");
    }
  }

  function render(data, page) {
    table.classList.toggle("responses--invalid", !state.valid);
    rows.replaceChildren();
    const limit = Number($("st-limit").value);
    const first = page * limit + 1;
    const kind = state.valid ? "valid" : "invalid";
    summary.textContent = data.length
      ? `Page ${page + 1}: ${kind} responses ${first}–${first + data.length - 1}, newest first.`
      : page === 0 ? `No ${kind} responses stored${providerFilter.value || $("st-model").value.trim() ? " that match the filters" : " yet"}.`
      : `Page ${page + 1}: no more ${kind} responses.`;
    $("st-page").textContent = `Page ${page + 1}`;
    prev.disabled = page === 0;
    next.disabled = !state.nextCursor;
    for (const row of data) rows.append(...renderRow(row));
  }

  function renderRow(row) {
    const detailId = `st-detail-${row.id}`;
    const toggle = h("button", {
      type: "button",
      class: "row-toggle",
      "aria-expanded": "false",
      "aria-controls": detailId,
      "aria-label": `Show the details of ${row.id}`,
    }, h("span", { "aria-hidden": "true", class: "row-toggle__icon" }, "▸"));
    const detailCell = h("td", { colspan: "8" });
    const detail = h("tr", { id: detailId, class: "detail-row", hidden: true }, detailCell);
    // data-label: the column's name, shown beside each cell where narrow screens stack them.
    const summaryRow = h("tr", { class: "summary-row", "data-id": row.id },
      h("td", {}, toggle),
      h("td", { "data-label": "Created" },
        h("time", { datetime: Number.isFinite(row.created_at) ? new Date(row.created_at).toISOString() : null }, formatTime(row.created_at))),
      h("td", { "data-label": "Provider" }, row.provider),
      h("td", { "data-label": "Model" }, row.model),
      h("td", { class: "cell-content", "data-label": "Content" }, truncate(row.content, 90) || h("span", { class: "muted" }, "(empty)")),
      h("td", { class: "num", "data-label": "Tokens" }, formatNumber(row.total_tokens)),
      h("td", { "data-label": "Finish" }, row.finish_reason ?? "–"),
      h("td", { class: "col-reason", "data-label": "Reason" }, row.reason ?? ""));
    toggle.addEventListener("click", async () => {
      const open = toggle.getAttribute("aria-expanded") !== "true";
      toggle.setAttribute("aria-expanded", String(open));
      detail.hidden = !open;
      summaryRow.classList.toggle("summary-row--open", open);
      if (open && !detailCell.childElementCount) {
        detailCell.append(h("p", { class: "muted" }, "Loading…"));
        detailCell.replaceChildren(await renderDetail(row));
      }
    });
    return [summaryRow, detail];
  }

  async function renderDetail(row) {
    let full = state.details.get(row.id);
    if (!full) {
      try {
        full = await (await api(`/v1/responses/${encodeURIComponent(row.id)}`)).json();
        state.details.set(row.id, full);
      } catch (error) {
        return h("p", { class: "alert alert--error", role: "alert" }, `Could not load ${row.id}: ${describeError(error)}`);
      }
    }
    const block = (title, text, extraClass = "") => h("section", { class: "detail__block" },
      h("h4", {}, title),
      text ? h("pre", { class: `output ${extraClass}` }, text) : h("p", { class: "muted" }, "(none)"));
    const usage = full.total_tokens === null || full.total_tokens === undefined ? "not reported"
      : `${formatNumber(full.prompt_tokens)} prompt + ${formatNumber(full.completion_tokens)} completion = ${formatNumber(full.total_tokens)} tokens`;
    const facts = [
      ["Id", h("code", {}, full.id)],
      ["Created", formatTime(full.created_at)],
      ["Provider · model", `${full.provider} · ${full.model}`],
      ["Finish reason", full.finish_reason ?? "–"],
      ["Usage", usage],
      ["Response time", formatMs(full.response_time_ms)],
      ["Upstream id", full.upstream_id ?? "–"],
      full.valid ? null : ["Reason", h("span", { class: "error-text" }, full.reason ?? "–")],
      full.truncated ? ["Truncated", "a field was cut to fit D1's row limit"] : null,
    ].filter(Boolean);
    return h("div", { class: "detail" },
      h("dl", { class: "meta" }, facts.map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value)))),
      block("Content", full.content, "output--prose"),
      block("Thinking", full.thinking, "output--thinking"),
      full.reasoning && full.reasoning !== full.thinking ? block("Separate reasoning field", full.reasoning, "output--thinking") : null,
      h("details", { class: "detail__request" },
        h("summary", {}, "Request"),
        h("pre", { class: "output" }, JSON.stringify(full.request, null, 2))));
  }

  $("st-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    restart();
  });
  $("st-refresh").addEventListener("click", () => load());
  $("st-limit").addEventListener("change", restart);
  providerFilter.addEventListener("change", restart);
  next.addEventListener("click", () => {
    if (!state.nextCursor) return;
    state.cursors.push(state.nextCursor);
    load();
  });
  prev.addEventListener("click", () => {
    if (state.cursors.length < 2) return;
    state.cursors.pop();
    load();
  });
  panelActivation.stored = () => {
    if (session.token) load();
  };
  connectionListeners.push((connected) => {
    if (connected && activePanel === "stored") load();
  });
}

// ---------------------------------------------------------------------------------------
// 5. Export: GET /v1/export as a file download

function formatBytes(n) {
  if (n < 1000) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
  return `${(n / 1e6).toFixed(1)} MB`;
}

function setUpExport() {
  const form = $("export-form");
  const format = $("ex-format");
  const reasoning = $("ex-reasoning");
  const providerFilter = $("ex-provider");
  const download = $("ex-download");
  const cancel = $("ex-cancel");
  const status = $("ex-status");
  const errorBox = $("ex-error");
  let controller = null;

  providerListeners.push(() => fillProviderFilter(providerFilter));
  // The flat format has the thinking in a field of its own, whatever `reasoning` says.
  const describeFormat = () => {
    const flat = format.value === "flat";
    reasoning.disabled = flat;
    $("ex-format-hint").textContent = {
      openai_chat: "{\"messages\": [...]} as OpenAI's fine-tuning takes it.",
      sharegpt: "{\"conversations\": [{\"from\", \"value\"}]}: text only.",
      flat: "Id, time, provider, model, messages, thinking, answer, usage, batch; the thinking always in its own field.",
    }[format.value];
  };
  format.addEventListener("change", describeFormat);
  describeFormat();
  cancel.addEventListener("click", () => controller?.abort());

  const setStatus = (state, text) => {
    status.dataset.state = state;
    status.textContent = text;
  };

  /** The query string of the form: the empty fields left out; times as milliseconds. */
  function query() {
    const params = new URLSearchParams({ format: format.value, valid: $("ex-valid").value });
    if (format.value !== "flat") params.set("reasoning", reasoning.value);
    const text = { provider: providerFilter.value, model: $("ex-model").value, batch_id: $("ex-batch").value, finish_reason: $("ex-finish").value };
    for (const [name, value] of Object.entries(text)) if (value.trim()) params.set(name, value.trim());
    for (const [name, input] of [["since", $("ex-since")], ["until", $("ex-until")]]) {
      if (!input.value) continue;
      // A datetime-local value is local time; the Worker takes it in milliseconds.
      const ms = new Date(input.value).getTime();
      if (Number.isNaN(ms)) throw new InputError(`${name === "since" ? "From" : "Until"} is not a valid time.`);
      params.set(name, String(ms));
    }
    if ($("ex-incomplete").checked) params.set("include_incomplete", "true");
    return params;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showAlert(errorBox, "");
    controller = new AbortController();
    download.disabled = true;
    cancel.disabled = false;
    $("ex-result").hidden = true;
    setStatus("downloading", "Starting the export…");
    try {
      const response = await api(`/v1/export?${query()}`, { signal: controller.signal });
      const rows = Number(response.headers.get("x-export-rows"));
      const filename = /filename="([^"]+)"/.exec(response.headers.get("content-disposition") ?? "")?.[1] ?? "llm-distiller-export.jsonl";
      // The file is assembled in this tab: fine for a demo's answers. For large exports,
      // use curl (see the README), which writes the stream straight to disk.
      const parts = [];
      let [bytes, lines, firstEnd, shown] = [0, 0, -1, 0];
      const reader = response.body.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parts.push(value);
        for (let i = 0; i < value.length; i++) {
          if (value[i] !== 10) continue;
          if (firstEnd < 0) firstEnd = bytes + i;
          lines += 1;
        }
        bytes += value.length;
        if (Date.now() - shown > 200) {
          shown = Date.now();
          setStatus("downloading", `Downloading… ${formatNumber(lines)} of ${formatNumber(rows)} rows (${formatBytes(bytes)})`);
        }
      }
      const blob = new Blob(parts, { type: "application/x-ndjson" });
      const url = URL.createObjectURL(blob);
      const link = h("a", { href: url, download: filename, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
      const leftOut = rows - lines;
      setStatus("done", `Downloaded ${formatNumber(lines)} line${lines === 1 ? "" : "s"}.`);
      $("ex-summary").textContent = `${filename}: ${formatNumber(lines)} line${lines === 1 ? "" : "s"}, ${formatBytes(bytes)}` +
        (leftOut > 0 ? `. ${formatNumber(leftOut)} of the ${formatNumber(rows)} stored rows gave no line (a request that cannot be read, or thinking that cannot go inline).` : ".");
      const first = firstEnd < 0 ? "" : await blob.slice(0, firstEnd).text();
      $("ex-preview").textContent = first ? JSON.stringify(JSON.parse(first), null, 2) : "(no lines: nothing stored matches)";
      $("ex-result").hidden = false;
    } catch (error) {
      if (error?.name === "AbortError") {
        setStatus("stopped", "Cancelled.");
      } else {
        setStatus("failed", "");
        showAlert(errorBox, `Could not export: ${describeError(error)}`);
      }
    } finally {
      download.disabled = false;
      cancel.disabled = true;
      controller = null;
    }
  });
}

// ---------------------------------------------------------------------------------------
// 6. Providers, refreshed while shown

const providersView = { update: () => {} };

function setUpProviders() {
  const list = $("pv-list");
  const updated = $("pv-updated");
  const errorBox = $("pv-error");
  let timer = 0;
  let busy = false;

  const meterRow = (label, used, limit, configured, api, note = "per minute") => {
    const share = limit ? Math.min(1, used / limit) : 0;
    const id = `pv-meter-${Math.random().toString(36).slice(2)}`;
    const notes = [`configured ${formatNumber(configured)}`];
    if (api !== null && api !== undefined) notes.push(`API reports ${formatNumber(api)}`);
    return h("div", { class: "limit" },
      h("div", { class: "limit__head" },
        h("label", { for: id }, label),
        h("span", { class: "limit__value" }, `${formatNumber(used)} of ${formatNumber(limit)}`)),
      h("meter", { id, min: "0", max: String(limit || 1), value: String(used), low: String(0.7 * (limit || 1)),
        high: String(0.9 * (limit || 1)), optimum: "0" }),
      h("p", { class: "hint" }, `effective limit ${note} (${notes.join(", ")}); ${Math.round(share * 100)} % used`));
  };

  const card = (provider) => {
    const limiter = provider.rate_limiter;
    const blockedFor = limiter?.blocked_until_ms ? limiter.blocked_until_ms - Date.now() : 0;
    return h("article", { class: `provider-card${provider.available ? "" : " provider-card--off"}`, "aria-labelledby": `pv-${provider.name}` },
      h("header", { class: "provider-card__head" },
        h("h3", { id: `pv-${provider.name}` }, provider.name),
        h("span", { class: `badge ${provider.available ? "badge--ok" : "badge--failed"}` }, provider.available ? "available" : "unavailable"),
        provider.default ? h("span", { class: "badge" }, "default") : null,
        isDemo(provider) ? h("span", { class: "badge badge--demo" }, "Demo upstream") : null),
      h("p", { class: "provider-card__kind" }, `${provider.type} · model ${provider.model}`),
      provider.available ? null : h("p", { class: "alert alert--error" }, provider.reason ?? "no reason given"),
      limiter ? h("div", { class: "provider-card__limits" },
        meterRow("Requests in the last minute", limiter.requests_per_minute, limiter.effective_requests_per_minute,
          limiter.max_requests_per_minute, limiter.api_requests_per_minute),
        meterRow("Token budget in use", limiter.tokens_per_minute, limiter.effective_tokens_per_minute,
          limiter.max_tokens_per_minute, limiter.api_tokens_per_minute, "per minute; the bucket refills continuously"),
        h("dl", { class: "meta meta--compact" },
          h("div", {}, h("dt", {}, "In flight"), h("dd", {}, formatNumber(limiter.in_flight))),
          h("div", {}, h("dt", {}, "Blocked"), h("dd", {}, blockedFor > 0
            ? h("span", { class: "error-text" }, `yes, for ${formatMs(blockedFor)} more (the server asked to wait)`) : "no")),
          h("div", {}, h("dt", {}, "Next request could start in"), h("dd", {}, formatMs(limiter.next_free_in_ms))),
          limiter.api_remaining_requests !== null ? h("div", {}, h("dt", {}, "API remaining requests"), h("dd", {}, formatNumber(limiter.api_remaining_requests))) : null,
          limiter.api_remaining_tokens !== null ? h("div", {}, h("dt", {}, "API remaining tokens"), h("dd", {}, formatNumber(limiter.api_remaining_tokens))) : null))
        : null);
  };

  const render = () => {
    list.replaceChildren(...providers.list.map(card));
    if (!providers.list.length) list.append(h("p", { class: "muted" }, "Connect to the Worker to see its providers."));
  };
  providerListeners.push(render);

  const refresh = async () => {
    if (busy || !session.token) return;
    busy = true;
    try {
      await loadProviders();
      showAlert(errorBox, "");
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      showAlert(errorBox, `Could not load the providers: ${describeError(error)}`);
    } finally {
      busy = false;
    }
  };
  $("pv-refresh").addEventListener("click", refresh);

  providersView.update = () => {
    const shouldRun = activePanel === "providers" && document.visibilityState === "visible" && session.connected;
    if (shouldRun && !timer) {
      refresh();
      timer = setInterval(refresh, 3000);
    } else if (!shouldRun && timer) {
      clearInterval(timer);
      timer = 0;
    }
  };
  document.addEventListener("visibilitychange", () => providersView.update());
  connectionListeners.push(() => providersView.update());
  render();
}

// ---------------------------------------------------------------------------------------

setUpPlayground();
setUpPrompt();
setUpBatch();
setUpStored();
setUpExport();
setUpProviders();
setUpSections();
setUpConnection();
$("app-loading").remove();

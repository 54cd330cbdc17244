// The jarvis-trio chat page. Plain JS modules, no framework, no build step.
//
// Rules this page keeps:
// - Chats are kept in localStorage (./store.js). Each chat is its own session: its id is
//   the X-Session-Id of every request it makes, so chats never cancel each other, and
//   switching chats leaves a streaming answer streaming.
// - An answer is bound to one stream id (X-Stream-Id). A chunk whose `id` (or SSE event
//   id) names another stream is never appended to it: mixing is ruled out by id, not by
//   timing.
// - Sending while an answer streams supersedes it on the server; the old answer is
//   marked "superseded" when its own stream says so. How a stream ended early is read
//   from the chunk's `jarvis.outcome` only, never from `finish_reason`.
// - Stop calls POST /v1/sessions/{id}/cancel; the answer shows "stopped" once the server
//   confirms the stream was joined.
// - A refresh re-attaches: the chats are stored as they stream, and every streaming
//   answer resumes from GET /v1/sessions/{id}/stream with Last-Event-ID.
// - Every turn is sent back to the model, partial (stopped, superseded) answers
//   included, so the history alternates user and assistant turns.
// - Agent mode is a per-chat switch. The server's tool calls arrive as progress chunks
//   (`jarvis.agent`: tool_call_started, tool_call_finished); each call is a step of its
//   answer, kept with the chat and deduplicated by call id and event, since a viewer's
//   replay sends them again. A step still running when its answer ended is "cancelled".
import { copyText, morph, renderMarkdown } from "./markdown.js";
import * as store from "./store.js";

const RESUME_SECONDS = "30"; // how long the server keeps an answer going for a refresh
const RENDER_MS = 80; // a streaming answer's Markdown is re-rendered at most this often,
const RENDER_SHARE = 4; // and, for a long answer, after at least 4 times its last render's cost
const SAVE_MS = 400; // and its chat saved at most this often
const STICK_PX = 48; // this close to the bottom counts as "at the bottom"
const PARTIAL = new Set(["stopped", "superseded"]);
const OUTCOME_TEXT = {
  disconnected: "The stream was cut: the server saw this page disconnect.",
  shutdown: "The server shut down before the answer ended; send it again.",
  inactivity: "The model went silent; the server ended the answer.",
  first_token_timeout: "The model did not start answering in time.",
};

const STEP_OUTCOME_TEXT = {
  ok: "ok",
  tool_error: "error",
  timeout: "timed out",
  server_crashed: "tool server crashed",
};

const $ = (id) => document.getElementById(id);
const tab = store.loadTab();
const prefs = store.loadPrefs();
let chats = store.loadChats();
let current = null; // the chat on screen
let elements = new WeakMap(); // turn -> its element (current chat only)
const owners = new WeakMap(); // turn -> its chat
const shown = new WeakMap(); // an answer's body -> the text it shows rendered
const consuming = new Set(); // turns whose stream this page is reading
const renderTimers = new Map(); // turn -> pending throttled render
const saveTimers = new Map(); // chat -> pending save
let stick = true; // follow the streaming answer down
let unloading = false;
let renaming = false; // a title being edited in the list: the list waits for it
let renderCost = 0; // ms the last Markdown render took

for (const chat of chats) adopt(chat);

function adopt(chat) {
  const streaming = chat.turns.filter((t) => t.role === "assistant" && t.status === "streaming");
  for (const turn of chat.turns) {
    turn.stopping = false; // a Stop cut short by a refresh
    owners.set(turn, chat);
  }
  // Only the newest answer of a session can still be live: a newer prompt supersedes.
  for (const turn of streaming.slice(0, -1)) turn.status = "superseded";
  const first = chat.turns.find((t) => t.role === "user");
  if (!chat.title && first) chat.title = titleFrom(first.text); // a chat of the older page
  return chat;
}

function chatOf(turn) {
  const chat = owners.get(turn);
  return chat && chat.turns.includes(turn) && chats.includes(chat) ? chat : null;
}

function authHeaders() {
  return tab.apiKey ? { Authorization: "Bearer " + tab.apiKey } : {};
}

function notice(text) {
  $("notice").textContent = text || "";
  $("notice").hidden = !text;
}

// -- storage

function saveNow(chat) {
  clearTimeout(saveTimers.get(chat));
  saveTimers.delete(chat);
  if (!chats.includes(chat)) return;
  if (!store.saveChat(chat)) notice("The browser's storage is full: delete old chats to keep new ones.");
}

function saveSoon(chat) {
  if (!saveTimers.has(chat)) saveTimers.set(chat, setTimeout(() => saveNow(chat), SAVE_MS));
}

function saveAll() {
  for (const chat of saveTimers.keys()) saveNow(chat);
  store.saveTab(tab);
}

function touch(chat) {
  chat.updatedAt = Date.now();
  if (chats[0] !== chat) {
    chats = [chat, ...chats.filter((c) => c !== chat)];
    store.saveIndex(chats);
  }
}

// -- rendering

function titleOf(chat) {
  return chat.title || "New chat";
}

function titleFrom(prompt) {
  const line = prompt.split("\n").find((l) => l.trim()) || prompt;
  const words = line.trim().replace(/\s+/g, " ");
  return words.length > 48 ? words.slice(0, 47) + "…" : words;
}

function liveTurn(chat) {
  for (let i = chat.turns.length - 1; i >= 0; i--) {
    const t = chat.turns[i];
    if (t.role === "assistant" && t.status === "streaming") return t;
  }
  return null;
}

function button(text, className, testid, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  if (className) b.className = className;
  if (testid) b.dataset.testid = testid;
  if (onClick) b.addEventListener("click", onClick);
  return b;
}

function renderChatList() {
  if (renaming) return; // redrawn when the rename ends
  const list = $("chat-list");
  const items = chats.map((chat) => {
    const li = document.createElement("li");
    li.className = "chat-item";
    li.dataset.testid = "chat-item";
    li.dataset.sessionId = chat.id;
    if (chat === current) li.setAttribute("aria-current", "true");
    const open = button(titleOf(chat), "open", "chat-open", () => switchTo(chat));
    open.title = titleOf(chat);
    if (liveTurn(chat)) {
      const dot = document.createElement("span");
      dot.className = "live-dot";
      dot.title = "answering";
      dot.setAttribute("aria-label", "answering");
      open.prepend(dot);
    }
    const rename = button("✎", "icon", "chat-rename", () => startRename(chat, li));
    rename.setAttribute("aria-label", "Rename " + titleOf(chat));
    const remove = button("✕", "icon", "chat-delete", (event) => askDelete(chat, event.currentTarget));
    remove.setAttribute("aria-label", "Delete " + titleOf(chat));
    li.append(open, rename, remove);
    return li;
  });
  list.replaceChildren(...items);
}

function startRename(chat, li) {
  const input = document.createElement("input");
  input.className = "rename";
  input.dataset.testid = "chat-rename-input";
  input.value = titleOf(chat);
  input.setAttribute("aria-label", "Chat title");
  let done = false;
  const finish = (keep) => {
    if (done) return;
    done = true;
    renaming = false;
    const title = input.value.trim();
    if (keep && title) {
      chat.title = title.slice(0, 120);
      chat.renamed = true;
      saveNow(chat);
    }
    renderChatList();
    renderHeader();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") finish(true);
    else if (event.key === "Escape") {
      event.stopPropagation();
      finish(false);
    }
  });
  input.addEventListener("blur", () => finish(true));
  li.replaceChildren(input);
  renaming = true;
  input.focus();
  input.select();
}

function askDelete(chat, btn) {
  // Two clicks: the first arms the button for a few seconds.
  if (btn.dataset.armed) return deleteChat(chat);
  btn.dataset.armed = "1";
  btn.textContent = "Delete?";
  btn.classList.add("danger");
  setTimeout(() => {
    if (btn.isConnected) renderChatList();
  }, 4000);
}

function deleteChat(chat) {
  if (liveTurn(chat)) {
    // Nobody will see this answer any more: stop it, don't wait.
    fetch(cancelUrl(chat.id), { method: "POST", headers: authHeaders() }).catch(() => {});
  }
  chats = chats.filter((c) => c !== chat);
  store.removeChat(chat.id, chats);
  if (chat === current) switchTo(chats[0] || createChat());
  else renderChatList();
}

function renderHeader() {
  $("chat-title").textContent = current && current.turns.length ? titleOf(current) : "jarvis-trio";
  $("session-id").textContent = current.id;
  document.title = (current.turns.length ? titleOf(current) + " · " : "") + "jarvis-trio chat";
}

function renderSettings() {
  $("system-prompt").value = current.system || "";
  $("system-mark").hidden = !current.system;
  $("agent-toggle").checked = Boolean(current.agent);
  selectModel(current.model || prefs.model || "");
}

function selectModel(model) {
  const select = $("model-select");
  if (model && !Array.from(select.options).some((o) => o.value === model)) {
    select.append(new Option(model, model));
  }
  select.value = model;
}

function renderTurn(turn) {
  const chat = chatOf(turn);
  if (chat === null || chat !== current) return;
  let el = elements.get(turn);
  if (!el) {
    el = turn.role === "assistant" ? assistantElement(turn) : userElement(turn);
    $("transcript").append(el);
    elements.set(turn, el);
  }
  if (turn.role === "user") {
    const text = el.querySelector(".text"); // none while the prompt is being edited
    if (text) text.textContent = turn.text;
    return;
  }
  clearTimeout(renderTimers.get(turn));
  renderTimers.delete(turn);
  renderSteps(el.querySelector(".steps"), turn);
  const body = el.querySelector(".text");
  if (shown.get(body) !== turn.text) {
    const started = performance.now();
    morph(body, renderMarkdown(turn.text));
    shown.set(body, turn.text);
    renderCost = performance.now() - started;
  }
  const streaming = turn.status === "streaming";
  el.dataset.streamId = turn.streamId || "";
  el.dataset.status = turn.status;
  el.setAttribute("aria-busy", streaming ? "true" : "false");
  el.classList.toggle("partial", PARTIAL.has(turn.status));
  el.querySelector(".status").textContent = turn.stopping ? "stopping…" : turn.status;
  const note = el.querySelector(".partial-note");
  note.textContent = PARTIAL.has(turn.status) ? "partial answer" : "";
  note.title = note.textContent ? "Cut short; kept in the chat and sent back to the model as is." : "";
  el.querySelector(".ttft").textContent =
    turn.ttftMs == null ? "" : "first token " + Math.round(turn.ttftMs) + " ms";
  el.querySelector(".rate").textContent = rateText(turn);
  el.querySelector(".error").textContent = turn.error || "";
  el.querySelector(".error").hidden = !turn.error;
  const last = chat.turns[chat.turns.length - 1] === turn;
  el.querySelector(".regenerate").hidden = !last || streaming;
  el.querySelector(".copy").hidden = !turn.text;
}

function userElement(turn) {
  const wrap = document.createElement("div");
  wrap.className = "turn-wrap user";
  const el = document.createElement("article");
  el.className = "turn user";
  el.dataset.testid = "user-message";
  const text = document.createElement("div");
  text.className = "text";
  el.append(text);
  const actions = document.createElement("div");
  actions.className = "actions";
  actions.append(button("Edit", "small", "edit-button", () => startEdit(turn, wrap)));
  wrap.append(el, actions);
  return wrap;
}

function assistantElement(turn) {
  const el = document.createElement("article");
  el.className = "turn assistant";
  el.dataset.testid = "assistant-message";
  el.setAttribute("aria-live", "polite");
  const steps = document.createElement("div");
  steps.className = "steps";
  const text = document.createElement("div");
  text.className = "text markdown";
  const error = document.createElement("p");
  error.className = "error";
  error.hidden = true;
  const meta = document.createElement("div");
  meta.className = "meta";
  const info = document.createElement("span");
  info.className = "info"; // one line, cut at the end: the status line never changes height
  for (const name of ["status", "partial-note", "ttft", "rate"]) {
    const span = document.createElement("span");
    span.className = name;
    info.append(span);
  }
  meta.append(info);
  const actions = document.createElement("span");
  actions.className = "actions";
  const copy = button("Copy", "small copy", "copy-button", async (event) => {
    await copied(event.currentTarget, () => copyText(turn.text));
  });
  const again = button("Regenerate", "small regenerate", "regenerate-button", () => {
    regenerate(chatOf(turn));
  });
  actions.append(copy, again);
  meta.append(actions);
  el.append(steps, text, error, meta);
  return el;
}

/** A step's status: running, ok, error, or cancelled (started, and its answer ended
 * before the call did). */
function stepStatus(step, turn) {
  if (step.outcome) return step.ok ? "ok" : "error";
  return turn.status === "streaming" ? "running" : "cancelled";
}

function stepOutcomeText(step, status) {
  if (status === "running") return "running…";
  if (status === "cancelled") return "cancelled";
  const outcome = STEP_OUTCOME_TEXT[step.outcome] || step.outcome.replace(/_/g, " ");
  return step.durationMs == null ? outcome : outcome + " · " + Math.round(step.durationMs) + " ms";
}

/** The answer's tool calls, as collapsible steps. Everything from the server is text
 * (textContent), never HTML. An open step stays open across renders. */
function renderSteps(container, turn) {
  const steps = turn.steps || [];
  const old = new Map(Array.from(container.children, (el) => [el.dataset.callId, el]));
  const items = steps.map((step) => {
    let el = old.get(step.id);
    if (!el) {
      el = document.createElement("details");
      el.className = "tool-step";
      el.dataset.testid = "tool-step";
      el.dataset.callId = step.id;
      const summary = document.createElement("summary");
      for (const name of ["step-icon", "step-name", "step-outcome", "step-preview"]) {
        const span = document.createElement("span");
        span.className = name;
        summary.append(span);
      }
      const args = document.createElement("div");
      args.className = "step-part step-arguments";
      const argsLabel = document.createElement("span");
      argsLabel.className = "step-label";
      argsLabel.textContent = "arguments";
      const argsPre = document.createElement("pre");
      args.append(argsLabel, argsPre);
      const result = document.createElement("div");
      result.className = "step-part step-result";
      const resultLabel = document.createElement("span");
      resultLabel.className = "step-label";
      resultLabel.textContent = "result";
      const resultPre = document.createElement("pre");
      result.append(resultLabel, resultPre);
      el.append(summary, args, result);
    }
    const status = stepStatus(step, turn);
    el.dataset.status = status;
    el.querySelector(".step-icon").textContent =
      { running: "⋯", ok: "✓", error: "✕", cancelled: "⊘" }[status];
    el.querySelector(".step-name").textContent = step.name;
    el.querySelector(".step-outcome").textContent = stepOutcomeText(step, status);
    el.querySelector(".step-arguments pre").textContent = step.arguments;
    el.querySelector(".step-preview").textContent = step.preview || "";
    el.querySelector(".step-result").hidden = step.result == null;
    el.querySelector(".step-result pre").textContent = step.result == null ? "" : step.result;
    return el;
  });
  container.replaceChildren(...items);
  container.hidden = items.length === 0;
}

/** Formats a call's arguments (JSON text, or an object) for reading. */
function argumentsText(value) {
  let parsed = value;
  if (typeof value === "string") {
    try {
      parsed = JSON.parse(value);
    } catch (_) {
      return value;
    }
  }
  try {
    return JSON.stringify(parsed, null, 2);
  } catch (_) {
    return String(value);
  }
}

/** The arguments on one short line, for the step's collapsed summary. */
function previewText(value) {
  const text = typeof value === "string" ? value : JSON.stringify(value ?? "");
  const line = (text || "").replace(/\s+/g, " ").trim();
  return line.length > 80 ? line.slice(0, 79) + "…" : line;
}

/** A `jarvis.agent` progress event: a step starts, or ends. Returns whether it was new
 * (a replay repeats events: each (call id, event) counts once). */
function applyAgentEvent(turn, event) {
  if (!event || typeof event.id !== "string") return false;
  if (!turn.steps) turn.steps = [];
  let step = turn.steps.find((s) => s.id === event.id);
  if (event.event === "tool_call_started") {
    if (step) return false;
    turn.steps.push({ id: event.id, step: event.step, name: String(event.name || "tool"),
      arguments: argumentsText(event.arguments ?? ""), preview: previewText(event.arguments),
      outcome: null, ok: null,
      durationMs: null, result: null });
    return true;
  }
  if (event.event === "tool_call_finished") {
    if (step && step.outcome) return false;
    if (!step) {
      // Its start was cut from a truncated replay: the step is shown all the same.
      step = { id: event.id, step: event.step, name: String(event.name || "tool"),
        arguments: "", outcome: null, ok: null, durationMs: null, result: null };
      turn.steps.push(step);
    }
    step.outcome = String(event.outcome || (event.ok ? "ok" : "error"));
    step.ok = event.ok === true || step.outcome === "ok";
    step.durationMs = typeof event.duration_ms === "number" ? event.duration_ms : null;
    step.result = event.result == null ? "" : String(event.result);
    return true;
  }
  return false;
}

async function copied(btn, action) {
  const label = btn.textContent === "Copied" || btn.textContent === "Copy failed" ? "Copy" : btn.textContent;
  try {
    await action();
    btn.textContent = "Copied";
  } catch (err) {
    btn.textContent = "Copy failed";
    notice("Copy failed: " + err.message);
  }
  setTimeout(() => {
    if (btn.isConnected) btn.textContent = label;
  }, 1500);
}

function rateText(turn) {
  if (!turn.tokens) return "";
  const seconds = (turn.lastAt - turn.firstAt) / 1000;
  const rate = seconds > 0 ? (turn.tokens - 1) / seconds : 0;
  return turn.tokens + " tokens" + (rate > 0 ? " · " + rate.toFixed(1) + " tokens/s" : "");
}

function renderTranscript({ keepScroll = false } = {}) {
  const top = $("transcript").scrollTop;
  for (const timer of renderTimers.values()) clearTimeout(timer);
  renderTimers.clear();
  $("transcript").replaceChildren();
  elements = new WeakMap();
  current.turns.forEach(renderTurn);
  if (keepScroll && !stick) $("transcript").scrollTop = top;
  else stick = true;
  followDown();
}

function renderAll() {
  renderChatList();
  renderHeader();
  renderSettings();
  renderTranscript();
  updateButtons();
}

function updateButtons() {
  $("stop").disabled = liveTurn(current) === null;
}

/** Something about `turn` changed: show it (a streaming body at most every RENDER_MS),
 * and save its chat soon. */
function changed(turn, { now = false } = {}) {
  const chat = chatOf(turn);
  if (chat === null) return;
  saveSoon(chat);
  if (chat !== current) return;
  if (now || turn.status !== "streaming") renderTurn(turn);
  else if (!renderTimers.has(turn)) {
    const el = elements.get(turn);
    if (!el || !el.querySelector(".text").childNodes.length) renderTurn(turn); // first words: at once
    else {
      // Throttled: the main thread stays mostly free however long the answer grows.
      const wait = Math.max(RENDER_MS, RENDER_SHARE * renderCost);
      renderTimers.set(turn, setTimeout(() => { renderTurn(turn); followDown(); }, wait));
    }
  }
  updateButtons();
  followDown();
}

// -- scrolling: follow the answer down unless the reader has scrolled up

function distanceFromBottom() {
  const t = $("transcript");
  return t.scrollHeight - t.scrollTop - t.clientHeight;
}

function followDown() {
  const t = $("transcript");
  if (stick) t.scrollTop = t.scrollHeight;
  $("jump").hidden = stick || distanceFromBottom() <= STICK_PX;
}

function jumpToLatest() {
  stick = true;
  followDown();
  $("prompt").focus();
}

// -- reading a stream (our POST's answer, or a viewer's copy after a refresh)

function finish(turn, status, error) {
  if (turn.status !== "streaming") return; // the first ending wins
  turn.status = status;
  turn.stopping = false;
  if (error) turn.error = error;
  const chat = chatOf(turn);
  changed(turn, { now: true });
  if (chat) saveNow(chat);
  renderChatList();
}

function handleEvent(turn, eventId, data) {
  if (data === "[DONE]") {
    if (turn.status === "streaming" && !turn.stopping) {
      finish(turn, "error", "The stream ended without saying how.");
    }
    return;
  }
  let chunk;
  try {
    chunk = JSON.parse(data);
  } catch (_) {
    return finish(turn, "error", "The server sent something that is not JSON.");
  }
  if (chunk.error) return finish(turn, "error", streamErrorText(chunk.error));
  // Stream-id validation: a chunk of another stream never reaches this answer.
  if (chunk.id !== turn.streamId) return;
  let seq = null;
  if (eventId) {
    const cut = eventId.lastIndexOf(":");
    if (eventId.slice(0, cut) !== turn.streamId) return;
    seq = Number(eventId.slice(cut + 1));
  }
  const choice = (chunk.choices || [])[0];
  if (!choice) return;
  const delta = choice.delta || {};
  if (delta.role !== undefined && seq === 0) {
    // The stream from its start (a viewer's full replay): what we had is replaced.
    turn.text = chunk.jarvis && chunk.jarvis.replay_truncated ? "[…] " : "";
    turn.seq = 0;
    turn.tokens = 0;
  }
  // Agent mode: the server's tool calls are steps of this turn (`turn.steps`), rendered
  // above its text; a replay repeats them, and applyAgentEvent keeps each once.
  const agent = chunk.jarvis && chunk.jarvis.agent;
  if (agent && applyAgentEvent(turn, agent)) {
    if (seq !== null && seq > turn.seq) turn.seq = seq;
    if (eventId) turn.lastEventId = eventId;
  }
  if (delta.content) {
    if (seq !== null && seq <= turn.seq) return; // seen already (a resume overlap)
    if (seq !== null) turn.seq = seq;
    const now = Date.now();
    if (!turn.tokens) {
      turn.firstAt = now;
      if (turn.sentAt) turn.ttftMs = now - turn.sentAt;
    }
    turn.lastAt = now;
    turn.tokens += 1;
    turn.text += delta.content;
    if (eventId) turn.lastEventId = eventId;
  }
  if (choice.finish_reason) {
    // Why a stream ended early is named by jarvis.outcome alone; finish_reason is
    // OpenAI's ("stop", "length", ...) whatever the outcome.
    const outcome = chunk.jarvis && chunk.jarvis.outcome;
    if (!outcome || outcome === "completed") return finish(turn, "done");
    if (outcome === "stopped" && turn.stopping) {
      turn.stoppedByServer = true; // shown once our Stop is confirmed
      return;
    }
    if (PARTIAL.has(outcome)) return finish(turn, outcome);
    finish(turn, "error", OUTCOME_TEXT[outcome] || "The stream ended early: " + outcome + ".");
  }
}

function streamErrorText(error) {
  const message = error.message || "error";
  if (error.code === "viewer_fell_behind") return message + " Refresh to catch up.";
  return message;
}

async function consume(turn, response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  consuming.add(turn);
  turn.cancelRead = () => reader.cancel().catch(() => {});
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let eventId = null;
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("id: ")) eventId = line.slice(4);
          else if (line.startsWith("data: ")) data.push(line.slice(6));
        }
        if (data.length) handleEvent(turn, eventId, data.join("\n"));
      }
      changed(turn);
    }
  } catch (err) {
    if (unloading) return; // a refresh: the next page re-attaches
    finish(turn, "error", "Connection lost: " + err.message);
    return;
  } finally {
    consuming.delete(turn);
    delete turn.cancelRead;
  }
  if (turn.status === "streaming" && !turn.stopping) {
    finish(turn, "error", "The connection closed before the answer ended.");
  }
}

/** A clear message for a failed HTTP response (OpenAI's error body when there is one). */
async function httpErrorText(response, what = "") {
  let message = "";
  try {
    const body = await response.json();
    message = (body.error && body.error.message) || "";
  } catch (_) {
    message = "";
  }
  const status = response.status;
  const detail = message ? ": " + message.replace(/\.+$/, "") : ""; // a sentence follows
  if (status === 401) {
    return "This server needs a valid API key (HTTP 401)" + detail +
      ". Enter it above, then press Regenerate.";
  }
  if (status === 429) {
    const wait = retryAfterSeconds(response.headers.get("Retry-After"));
    const when = wait === null ? "in a moment" : "in " + wait + " s";
    return "Too many requests (HTTP 429)" + detail + ". Try again " + when +
      " (Regenerate sends it again).";
  }
  if (status >= 500) return what + "The server failed (HTTP " + status + ")" + detail;
  return what + (message || response.statusText || "Request failed") + " (HTTP " + status + ")";
}

/** The OpenAI error body's code, the response left unread for httpErrorText. */
async function errorCode(response) {
  try {
    const body = await response.clone().json();
    return (body.error && body.error.code) || "";
  } catch (_) {
    return "";
  }
}

function retryAfterSeconds(value) {
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

// -- actions

function historyOf(chat) {
  const messages = [];
  if (chat.system && chat.system.trim()) messages.push({ role: "system", content: chat.system });
  for (const t of chat.turns) {
    // Every turn, partial answers included (as sent so far): the model sees what the
    // reader saw, and user and assistant turns alternate.
    messages.push({ role: t.role, content: t.text });
  }
  return messages;
}

function send(chat, prompt) {
  const user = { role: "user", text: prompt };
  const before = chat.turns[chat.turns.length - 1];
  owners.set(user, chat);
  chat.turns.push(user);
  if (!chat.renamed && !chat.title) chat.title = titleFrom(prompt);
  if (before) renderTurn(before); // no longer the last answer: no Regenerate on it
  renderTurn(user);
  return ask(chat);
}

/** What a chat's request asks for: agent mode only when the chat's switch is on. */
function requestBody(chat, messages) {
  const body = { messages, stream: true };
  if (chat.model) body.model = chat.model;
  if (chat.agent) body.jarvis = { agent: true };
  return body;
}

/** Answer the chat's last user turn. */
async function ask(chat) {
  const messages = historyOf(chat);
  const turn = {
    role: "assistant", text: "", status: "streaming", streamId: null, seq: 0, tokens: 0,
    sentAt: Date.now(), ttftMs: null, firstAt: null, lastAt: null, error: "", lastEventId: null,
    requestId: store.newId(), // tells this turn's stream apart if a refresh comes before its id
  };
  owners.set(turn, chat);
  chat.turns.push(turn);
  touch(chat);
  if (chat === current) {
    stick = true;
    renderHeader();
  }
  changed(turn, { now: true });
  saveNow(chat);
  renderChatList();
  const body = requestBody(chat, messages);
  let response;
  try {
    response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: {
        ...authHeaders(),
        "Content-Type": "application/json",
        "X-Session-Id": chat.id,
        "X-Request-Id": turn.requestId,
        "X-Jarvis-Resume-Seconds": RESUME_SECONDS,
      },
      body: JSON.stringify(body),
    });
  } catch (err) {
    if (!unloading) finish(turn, "error", "Could not reach the server: " + err.message);
    return;
  }
  if (!response.ok) {
    if (response.status === 401) askForKey();
    if (response.status === 400 && (await errorCode(response)) === "agent_unavailable") {
      chat.agent = false; // the switch is turned off: Regenerate asks without it
      if (chat === current) renderSettings();
      return finish(turn, "error", "This server has no tools, so agent mode is not available " +
        "here; it has been switched off for this chat. Press Regenerate to ask without it " +
        "(a server started with --demo-tools or an MCP config has tools).");
    }
    return finish(turn, "error", await httpErrorText(response));
  }
  turn.streamId = response.headers.get("X-Stream-Id");
  changed(turn, { now: true });
  await consume(turn, response);
}

function regenerate(chat) {
  if (!chat) return;
  const last = chat.turns[chat.turns.length - 1];
  if (!last || last.role !== "assistant" || last.status === "streaming") return;
  chat.turns.pop();
  elements.get(last)?.remove();
  ask(chat);
}

function startEdit(turn, wrap) {
  const chat = chatOf(turn);
  if (!chat) return;
  const form = document.createElement("form");
  form.className = "edit";
  const area = document.createElement("textarea");
  area.dataset.testid = "edit-input";
  area.setAttribute("aria-label", "Edit prompt");
  area.value = turn.text;
  area.rows = Math.min(8, turn.text.split("\n").length + 1);
  const save = button("Send", "primary small", "edit-send");
  save.type = "submit";
  const cancel = button("Cancel", "small", "edit-cancel", () => renderTranscript({ keepScroll: true }));
  const row = document.createElement("div");
  row.className = "actions";
  row.append(save, cancel);
  form.append(area, row);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = area.value.trim();
    if (text) resend(chat, turn, text);
  });
  area.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.stopPropagation();
      renderTranscript({ keepScroll: true });
    } else if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  wrap.replaceChildren(form);
  area.focus();
}

/** Edit-and-resend: the chat is cut at `turn` and the new prompt sent in its place.
 * A live answer among the cut turns is superseded by the new request (same session). */
function resend(chat, turn, text) {
  const at = chat.turns.indexOf(turn);
  if (at < 0) return;
  chat.turns.splice(at);
  if (chat === current) renderTranscript();
  send(chat, text);
}

function cancelUrl(sessionId) {
  return "/v1/sessions/" + encodeURIComponent(sessionId) + "/cancel";
}

async function stop() {
  const chat = current;
  const turn = liveTurn(chat);
  if (turn === null || turn.stopping) return;
  turn.stopping = true;
  changed(turn, { now: true });
  let report;
  try {
    const response = await fetch(cancelUrl(chat.id), { method: "POST", headers: authHeaders() });
    if (!response.ok) throw new Error(await httpErrorText(response));
    report = await response.json();
  } catch (err) {
    turn.stopping = false;
    notice("Stop failed: " + err.message);
    if (turn.stoppedByServer) finish(turn, "stopped");
    return changed(turn, { now: true });
  }
  turn.stopping = false;
  const joined = report.result === "finished_cleanly" || report.result === "join_timeout";
  if (joined && (report.stream_id === turn.streamId || turn.streamId === null)) {
    finish(turn, "stopped");
  } else if (turn.stoppedByServer) {
    finish(turn, "stopped");
  } else {
    changed(turn, { now: true }); // nothing live: the answer had ended on its own
  }
}

async function reattach(chat, turn) {
  const headers = authHeaders();
  if (turn.lastEventId) headers["Last-Event-ID"] = turn.lastEventId;
  let response;
  try {
    response = await fetch("/v1/sessions/" + encodeURIComponent(chat.id) + "/stream", { headers });
  } catch (err) {
    return finish(turn, "error", "Could not reach the server: " + err.message);
  }
  if (!response.ok) {
    if (response.status === 401) askForKey();
    return finish(turn, "error", await httpErrorText(response, "Lost on refresh: "));
  }
  const streamId = response.headers.get("X-Stream-Id");
  if (turn.streamId && streamId !== turn.streamId) {
    await response.body.cancel();
    return finish(turn, "error", "This answer ended while the page was away.");
  }
  if (!turn.streamId && response.headers.get("X-Stream-Request-Id") !== turn.requestId) {
    // The refresh came before the server took this prompt: the session's newest stream
    // is an earlier turn's, never to be shown as this one.
    await response.body.cancel();
    return finish(turn, "error", "The prompt was lost in the refresh; send it again.");
  }
  turn.streamId = streamId;
  changed(turn, { now: true });
  await consume(turn, response);
}

function askForKey() {
  $("key-form").hidden = false;
  $("api-key").focus();
}

async function checkAccess() {
  try {
    const response = await fetch("/v1/models", { headers: authHeaders() });
    if (response.status === 401) return askForKey();
    if (!response.ok) return notice(await httpErrorText(response, "Models: "));
    notice("");
    const listed = await response.json();
    const knownModels = (listed.data || []).map((m) => m.id).filter((id) => typeof id === "string");
    const select = $("model-select");
    select.replaceChildren(new Option("default model", ""), ...knownModels.map((id) => new Option(id, id)));
    selectModel(current.model || prefs.model || "");
  } catch (err) {
    notice("Could not reach the server: " + err.message);
  }
}

function createChat() {
  const chat = store.newChat();
  chat.model = prefs.model || "";
  chats = [chat, ...chats];
  return chat;
}

function switchTo(chat) {
  if (!chats.includes(chat)) chats = [chat, ...chats];
  current = chat;
  tab.current = chat.id;
  store.saveTab(tab);
  if (chat.turns.length || chat.system || chat.agent) saveNow(chat);
  closeSidebar();
  renderAll();
}

function newChatClicked() {
  // An empty chat is reused rather than a second one made.
  const empty = chats.find((c) => c.turns.length === 0 && !c.system && !c.agent);
  switchTo(empty || createChat());
  $("prompt").focus();
}

function openSidebar() {
  document.body.classList.add("sidebar-open");
  $("menu").setAttribute("aria-expanded", "true");
  $("scrim").hidden = false;
}

function closeSidebar() {
  document.body.classList.remove("sidebar-open");
  $("menu").setAttribute("aria-expanded", "false");
  $("scrim").hidden = true;
}

/** Another tab changed the stored chats: take the changes for chats not streaming here,
 * and follow an answer that the other tab streams as a viewer. */
function onStorage(event) {
  if (event.storageArea !== localStorage || event.key === null) return;
  if (event.key === store.INDEX) {
    for (const id of JSON.parse(event.newValue || "[]")) {
      if (!chats.some((c) => c.id === id)) {
        const chat = store.loadChat(id);
        if (chat) chats.push(adopt(chat));
      }
    }
    chats.sort((a, b) => b.updatedAt - a.updatedAt);
    return renderChatList();
  }
  if (!event.key.startsWith(store.CHAT_PREFIX)) return;
  const id = event.key.slice(store.CHAT_PREFIX.length);
  const mine = chats.find((c) => c.id === id);
  if (mine && mine.turns.some((t) => consuming.has(t))) return; // ours is the live copy
  const theirs = event.newValue === null ? null : store.loadChat(id);
  if (mine) chats = chats.filter((c) => c !== mine);
  if (theirs) chats.push(adopt(theirs));
  chats.sort((a, b) => b.updatedAt - a.updatedAt);
  if (mine && mine === current) {
    current = theirs || chats[0] || createChat();
    if (current === theirs) {
      renderChatList();
      renderHeader();
      renderTranscript({ keepScroll: true });
      updateButtons();
    } else renderAll();
  } else {
    renderChatList();
  }
  const live = theirs && liveTurn(theirs);
  if (live && live.streamId) reattach(theirs, live);
}

// -- wiring

window.addEventListener("pageshow", (event) => {
  // Restored from the back/forward cache: its streams were cut when it was hidden.
  if (event.persisted) location.reload();
});
window.addEventListener("pagehide", () => {
  unloading = true;
  saveAll();
});
window.addEventListener("beforeunload", () => {
  unloading = true;
  saveAll();
});
window.addEventListener("storage", onStorage);
window.addEventListener("offline", () => {
  for (const turn of consuming) {
    finish(turn, "error", "Connection lost: the browser went offline.");
    turn.cancelRead?.();
  }
});

function start() {
  current = chats.find((c) => c.id === tab.current) || chats[0] || createChat();
  tab.current = current.id;
  store.saveTab(tab);
  renderAll();

  $("prompt-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const prompt = $("prompt").value.trim();
    if (!prompt) return;
    $("prompt").value = "";
    send(current, prompt);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("prompt-form").requestSubmit();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      if (document.body.classList.contains("sidebar-open")) closeSidebar();
      else if (liveTurn(current)) stop();
    }
  });
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", newChatClicked);
  $("new-chat-button").addEventListener("click", newChatClicked);
  $("menu").addEventListener("click", () =>
    document.body.classList.contains("sidebar-open") ? closeSidebar() : openSidebar(),
  );
  $("scrim").addEventListener("click", closeSidebar);
  $("model-select").addEventListener("change", (event) => {
    current.model = event.target.value;
    prefs.model = current.model;
    store.savePrefs(prefs);
    if (current.turns.length) saveNow(current);
  });
  $("agent-toggle").addEventListener("change", (event) => {
    current.agent = event.target.checked;
    saveNow(current);
  });
  $("system-prompt").addEventListener("input", (event) => {
    current.system = event.target.value;
    $("system-mark").hidden = !current.system;
    saveSoon(current);
  });
  $("transcript").addEventListener("scroll", () => {
    if (distanceFromBottom() <= STICK_PX) stick = true;
    $("jump").hidden = stick || distanceFromBottom() <= STICK_PX;
  });
  // Scrolling up is the reader's wish to stay put: it wins over following the answer.
  $("transcript").addEventListener("wheel", (event) => {
    if (event.deltaY < 0 && $("transcript").scrollTop > 0) stick = false;
  }, { passive: true });
  $("transcript").addEventListener("touchmove", () => {
    stick = distanceFromBottom() <= STICK_PX;
  }, { passive: true });
  $("transcript").addEventListener("keydown", (event) => {
    if (["ArrowUp", "PageUp", "Home"].includes(event.key)) stick = false;
  });
  $("transcript").addEventListener("click", (event) => {
    const copy = event.target.closest(".code-copy");
    if (copy) {
      const code = copy.closest(".code-block").querySelector("code");
      copied(copy, () => copyText(code.textContent));
    }
  });
  $("jump").addEventListener("click", jumpToLatest);
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    tab.apiKey = $("api-key").value.trim();
    store.saveTab(tab);
    $("key-form").hidden = true;
    checkAccess();
  });
  checkAccess();
  for (const chat of chats) {
    const turn = liveTurn(chat);
    if (turn !== null) reattach(chat, turn);
  }
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();

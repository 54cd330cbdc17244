// The jarvis-trio chat page. No framework, no build step.
//
// Rules this page keeps:
// - One session id per tab (sessionStorage), sent as X-Session-Id.
// - An answer is bound to one stream id (X-Stream-Id). A chunk whose `id` (or SSE
//   event id) names another stream is never appended to it: mixing is ruled out by
//   id, not by timing.
// - Sending while an answer streams supersedes it on the server; the old answer is
//   marked "superseded" when its own stream says so.
// - Stop calls POST /v1/sessions/{id}/cancel; the answer shows "stopped" once the
//   server confirms the stream was joined.
// - A refresh re-attaches: the transcript is kept in sessionStorage, and a streaming
//   answer resumes from GET /v1/sessions/{id}/stream with Last-Event-ID.
"use strict";

const STORE = "jarvis-trio.chat.v1";
const RESUME_SECONDS = "30"; // how long the server keeps an answer going for a refresh
const TERMINAL = {
  stop: "done",
  length: "done",
  tool_calls: "done",
  superseded: "superseded",
  stopped: "stopped",
};

const $ = (id) => document.getElementById(id);
const state = loadState();
let elements = new WeakMap(); // turn -> its element
let unloading = false;

function loadState() {
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(STORE) || "null");
  } catch (_) {
    saved = null;
  }
  if (saved && typeof saved.sessionId === "string" && Array.isArray(saved.turns)) {
    const streaming = saved.turns.filter((t) => t.role === "assistant" && t.status === "streaming");
    for (const turn of saved.turns) turn.stopping = false; // a Stop cut short by the refresh
    // Only the newest answer can still be live: a newer prompt supersedes the older ones.
    for (const turn of streaming.slice(0, -1)) turn.status = "superseded";
    return saved;
  }
  return { sessionId: newId(), apiKey: "", turns: [] };
}

function newId() {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function save() {
  sessionStorage.setItem(STORE, JSON.stringify(state));
}

function authHeaders() {
  return state.apiKey ? { Authorization: "Bearer " + state.apiKey } : {};
}

function notice(text) {
  $("notice").textContent = text || "";
  $("notice").hidden = !text;
}

// -- rendering

function render(turn) {
  if (!state.turns.includes(turn)) return; // a turn of a chat that was cleared
  let el = elements.get(turn);
  if (!el) {
    el = document.createElement("article");
    el.className = "turn " + turn.role;
    const text = document.createElement("div");
    text.className = "text";
    el.append(text);
    if (turn.role === "assistant") {
      el.dataset.testid = "assistant-message";
      const meta = document.createElement("div");
      meta.className = "meta";
      for (const name of ["status", "ttft", "rate", "error"]) {
        const span = document.createElement("span");
        span.className = name;
        meta.append(span);
      }
      el.append(meta);
    } else {
      el.dataset.testid = "user-message";
    }
    $("transcript").append(el);
    elements.set(turn, el);
  }
  el.querySelector(".text").textContent = turn.text;
  if (turn.role === "assistant") {
    el.dataset.streamId = turn.streamId || "";
    el.dataset.status = turn.status;
    el.querySelector(".status").textContent = turn.stopping ? "stopping…" : turn.status;
    el.querySelector(".ttft").textContent =
      turn.ttftMs == null ? "" : "first token " + Math.round(turn.ttftMs) + " ms";
    el.querySelector(".rate").textContent = rateText(turn);
    el.querySelector(".error").textContent = turn.error || "";
  }
}

function rateText(turn) {
  if (!turn.tokens) return "";
  const seconds = (turn.lastAt - turn.firstAt) / 1000;
  const rate = seconds > 0 ? (turn.tokens - 1) / seconds : 0;
  return turn.tokens + " tokens" + (rate > 0 ? " · " + rate.toFixed(1) + " tokens/s" : "");
}

function renderAll() {
  $("transcript").replaceChildren();
  elements = new WeakMap();
  state.turns.forEach(render);
  $("session-id").textContent = state.sessionId;
  updateButtons();
}

function streamingTurn() {
  for (let i = state.turns.length - 1; i >= 0; i--) {
    const t = state.turns[i];
    if (t.role === "assistant" && t.status === "streaming") return t;
  }
  return null;
}

function updateButtons() {
  $("stop").disabled = streamingTurn() === null;
}

function changed(turn) {
  render(turn);
  updateButtons();
  save();
}

// -- reading a stream (our POST's answer, or a viewer's copy after a refresh)

function finish(turn, status, error) {
  if (turn.status !== "streaming") return; // the first ending wins
  turn.status = status;
  turn.stopping = false;
  if (error) turn.error = error;
  changed(turn);
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
  if (chunk.error) return finish(turn, "error", chunk.error.message || "error");
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
    // An early ending is named by the jarvis extension; finish_reason stays OpenAI's.
    const outcome = chunk.jarvis && chunk.jarvis.outcome;
    const status = TERMINAL[outcome || choice.finish_reason];
    if (status === "stopped" && turn.stopping) {
      turn.stoppedByServer = true; // shown once our Stop is confirmed
      return;
    }
    if (status) finish(turn, status);
    else finish(turn, "error", "The stream ended: " + (outcome || choice.finish_reason) + ".");
  }
}

async function consume(turn, response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
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
  }
  if (turn.status === "streaming" && !turn.stopping) {
    finish(turn, "error", "The connection closed before the answer ended.");
  }
}

async function errorText(response) {
  try {
    const body = await response.json();
    return (body.error && body.error.message) || response.statusText;
  } catch (_) {
    return response.status + " " + response.statusText;
  }
}

// -- actions

function history() {
  const messages = [];
  for (const t of state.turns) {
    if (t.role === "user") messages.push({ role: "user", content: t.text });
    else if (t.status === "done" && t.text) messages.push({ role: "assistant", content: t.text });
  }
  return messages;
}

async function send(prompt) {
  const user = { role: "user", text: prompt };
  state.turns.push(user);
  const messages = history();
  const turn = {
    role: "assistant", text: "", status: "streaming", streamId: null, seq: 0, tokens: 0,
    sentAt: Date.now(), ttftMs: null, firstAt: null, lastAt: null, error: "", lastEventId: null,
    requestId: newId(), // tells this turn's stream apart if a refresh comes before its id
  };
  state.turns.push(turn);
  render(user);
  changed(turn);
  let response;
  try {
    response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: {
        ...authHeaders(),
        "Content-Type": "application/json",
        "X-Session-Id": state.sessionId,
        "X-Request-Id": turn.requestId,
        "X-Jarvis-Resume-Seconds": RESUME_SECONDS,
      },
      body: JSON.stringify({ messages, stream: true }),
    });
  } catch (err) {
    if (!unloading) finish(turn, "error", "Could not reach the server: " + err.message);
    return;
  }
  if (!response.ok) {
    if (response.status === 401) askForKey();
    return finish(turn, "error", await errorText(response));
  }
  turn.streamId = response.headers.get("X-Stream-Id");
  changed(turn);
  await consume(turn, response);
}

function cancelUrl(sessionId) {
  return "/v1/sessions/" + encodeURIComponent(sessionId) + "/cancel";
}

async function stop() {
  const turn = streamingTurn();
  if (turn === null || turn.stopping) return;
  turn.stopping = true;
  changed(turn);
  let report;
  try {
    const response = await fetch(cancelUrl(state.sessionId), {
      method: "POST",
      headers: authHeaders(),
    });
    if (!response.ok) throw new Error(await errorText(response));
    report = await response.json();
  } catch (err) {
    turn.stopping = false;
    notice("Stop failed: " + err.message);
    if (turn.stoppedByServer) finish(turn, "stopped");
    return changed(turn);
  }
  turn.stopping = false;
  const joined = report.result === "finished_cleanly" || report.result === "join_timeout";
  if (joined && (report.stream_id === turn.streamId || turn.streamId === null)) {
    finish(turn, "stopped");
  } else if (turn.stoppedByServer) {
    finish(turn, "stopped");
  } else {
    changed(turn); // nothing live: the answer had ended on its own
  }
}

async function reattach(turn) {
  const headers = authHeaders();
  if (turn.lastEventId) headers["Last-Event-ID"] = turn.lastEventId;
  let response;
  try {
    response = await fetch("/v1/sessions/" + encodeURIComponent(state.sessionId) + "/stream", {
      headers,
    });
  } catch (err) {
    return finish(turn, "error", "Could not reach the server: " + err.message);
  }
  if (!response.ok) {
    if (response.status === 401) askForKey();
    return finish(turn, "error", "Lost on refresh: " + (await errorText(response)));
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
  changed(turn);
  await consume(turn, response);
}

function askForKey() {
  $("key-form").hidden = false;
  $("api-key").focus();
}

async function checkAccess() {
  try {
    const response = await fetch("/v1/models", { headers: authHeaders() });
    if (response.status === 401) askForKey();
    else if (!response.ok) notice(await errorText(response));
    else notice("");
  } catch (err) {
    notice("Could not reach the server: " + err.message);
  }
}

// -- wiring

window.addEventListener("pageshow", (event) => {
  // Restored from the back/forward cache: its streams were cut when it was hidden.
  if (event.persisted) location.reload();
});
window.addEventListener("pagehide", () => {
  unloading = true;
  save();
});
window.addEventListener("beforeunload", () => {
  unloading = true;
  save();
});

document.addEventListener("DOMContentLoaded", () => {
  renderAll();
  $("prompt-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const prompt = $("prompt").value.trim();
    if (!prompt) return;
    $("prompt").value = "";
    send(prompt);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("prompt-form").requestSubmit();
    }
  });
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", () => {
    if (streamingTurn() !== null) {
      // The old chat's answer is not ours to show any more: stop it, don't wait.
      fetch(cancelUrl(state.sessionId), { method: "POST", headers: authHeaders() }).catch(() => {});
    }
    state.sessionId = newId();
    state.turns = [];
    save();
    renderAll();
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.apiKey = $("api-key").value.trim();
    save();
    $("key-form").hidden = true;
    checkAccess();
  });
  checkAccess();
  const turn = streamingTurn();
  if (turn !== null) reattach(turn);
});

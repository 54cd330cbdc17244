// The Ollama JavaScript client (npm `ollama`) against the gateway on the embedded model.
// Run by tests/processes/test_ollama_js_client.py: `node ollama_client_check.mjs <gateway URL>`, with
// the package installed next to this file's copy. Exits non-zero on the first failed check.
import assert from "node:assert/strict";
import { Ollama } from "ollama";

const host = process.argv[2];
const MODEL = "jarvis-sim";
const LONG = "Long essay about AI";
const user = (content) => [{ role: "user", content }];
const checked = [];
const check = (name) => checked.push(name);

const plain = new Ollama({ host });

assert.match((await plain.version()).version, /^\d+\.\d+\.\d+/);
check("version");

const listed = await plain.list();
assert.deepEqual(listed.models.map((m) => m.model), [MODEL]);
const shown = await plain.show({ model: MODEL });
assert.deepEqual(shown.capabilities, ["completion", "tools"]);
check("list, show");

const whole = await plain.chat({ model: MODEL, messages: user("hi there"), options: { num_predict: 4 } });
assert.equal(whole.done, true);
assert.equal(whole.done_reason, "length");
assert.equal(whole.message.content.trim().split(/\s+/).length, 4);
const parts = [];
for await (const part of await plain.chat({
  model: MODEL, messages: user("hi there"), stream: true, options: { num_predict: 4 },
})) parts.push(part);
assert.equal(parts.map((p) => p.message.content).join(""), whole.message.content);
assert.equal(parts.at(-1).done_reason, "length");
check("chat, streaming and not");

const generated = await plain.generate({ model: MODEL, prompt: "hi", options: { num_predict: 3 } });
let streamedText = "";
let last;
for await (const part of await plain.generate({
  model: MODEL, prompt: "hi", stream: true, options: { num_predict: 3 },
})) { streamedText += part.response; last = part; }
assert.equal(streamedText, generated.response);
assert.equal(last.eval_count, 3);
check("generate, streaming and not");

// Supersede: a second prompt in the session ends the first stream with done_reason "superseded".
const session = new Ollama({ host, headers: { "X-Session-Id": "js-demo" } });
const first = await session.chat({ model: MODEL, messages: user(LONG), stream: true });
let firstLast;
let seen = 0;
let second;
for await (const part of first) {
  seen += 1;
  if (seen === 1) {
    second = session.generate({ model: MODEL, prompt: "What is 2+2?", options: { num_predict: 2 } });
  }
  firstLast = part;
}
assert.equal(firstLast.done, true);
assert.equal(firstLast.done_reason, "superseded");
assert.equal((await second).done_reason, "length");
check("supersede via X-Session-Id");

// Stop: the gateway's cancel endpoint ends the stream with done_reason "stopped".
const stopping = new Ollama({ host, headers: { "X-Session-Id": "js-stop" } });
let stopLast;
let stopped = 0;
for await (const part of await stopping.generate({ model: MODEL, prompt: LONG, stream: true })) {
  stopped += 1;
  if (stopped === 1) {
    const r = await fetch(`${host}/v1/sessions/js-stop/cancel`, { method: "POST" });
    assert.equal((await r.json()).result, "finished_cleanly");
  }
  stopLast = part;
}
assert.equal(stopLast.done_reason, "stopped");
check("Stop");

// The client's own abort() closes the connection: the gateway cancels the stream.
const aborting = await plain.chat({ model: MODEL, messages: user(LONG), stream: true });
let aborted = false;
try {
  for await (const part of aborting) {
    assert.equal(part.done, false);
    aborting.abort();
  }
} catch (error) {
  aborted = error.name === "AbortError";
}
assert.ok(aborted);
for (let i = 0; i < 100; i += 1) {
  const health = await (await fetch(`${host}/healthz`)).json();
  if (health.live_streams === 0) break;
  assert.ok(i < 99, "the aborted stream is still live");
  await new Promise((resolve) => setTimeout(resolve, 20));
}
check("abort()");

await assert.rejects(plain.chat({ model: "nope", messages: user("hi") }), (error) => {
  assert.equal(error.status_code, 404);
  assert.equal(error.error, "model 'nope' not found");
  return true;
});
await assert.rejects(plain.embed({ model: MODEL, input: "x" }), (error) => {
  assert.equal(error.status_code, 501);
  return true;
});
check("errors");

console.log(JSON.stringify({ checked }));

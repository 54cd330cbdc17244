"""The asyncio baseline: the original notes' design, on FastAPI and uvicorn, done faithfully.

Start it as ``jarvis-trio serve`` is started::

    python -m benchmarks.asyncio_variant --host 127.0.0.1 --port 0 \\
        --backend ollama --ollama-url http://127.0.0.1:11434

It prints ``server_listening url=http://HOST:PORT`` on stderr once bound.

What it shares with jarvis-trio, and what it does not
-----------------------------------------------------
Like hypercorn's ``asyncio/`` and ``trio/`` twins, both variants have one pure
core: request parsing (:mod:`jarvis_trio.schemas`), the OpenAI wire format
(:mod:`jarvis_trio.wire`), endings (:mod:`jarvis_trio.outcomes`), errors
(:mod:`jarvis_trio.errors`), the Ollama protocol
(:mod:`jarvis_trio.backends.ollama_wire`), the embedded model's text
(:func:`jarvis_trio.backends.sim.sim_pieces`) and the log format
(:mod:`jarvis_trio.logs`). Clients and the Ollama server see the same bytes;
the logs carry the same events (``stream_start``, ``stream_cancelled``,
``prev_stream_finished_cleanly``, ``prev_stream_timeout_on_cancel``, ``stream_end``).
The concurrency is the notes' own and none of ours: no session rules, no
socket shutdown, no latest-wins.

Modules: :mod:`.registry` (the notes' ``StreamRegistry``), :mod:`.streams` (the
notes' generator: register, read, ``finally``), :mod:`.backends` (blocking
readers for ``asyncio.to_thread``), :mod:`.app` (FastAPI), :mod:`.server`
(uvicorn on a socket we bind), and for agent mode (``--mcp-config``, requests with
``"jarvis": {"agent": true}``) :mod:`.agent` (what the agent task runs) and
:mod:`.tools` (the ``mcp`` SDK's stdio client, one session per server, started in
the app's lifespan).

Faithful to the notes
---------------------
* ``StreamRegistry`` maps session -> entry {trace_id, task, cancel flag}, under
  an ``asyncio.Lock``. ``register()`` cancels the previous entry's task, sets its
  flag, releases the lock, ``await asyncio.wait_for(prev_task, timeout=2.0)``,
  then registers.
* Ollama is read with a blocking ``httpx.Client`` stream in ``asyncio.to_thread``;
  the thread checks the flag between lines.
* The generator's ``finally`` cancels the agent task and waits 0.5 s for it
  (``agent_timeout_on_cancel`` after that), pops the entry, clears the flag, logs
  ``stream_end``. In agent mode the agent task runs the MCP tool calls the embedded
  model's planner picks, then answers with their results (one step).

What that design does (measured by ``tests/processes/test_asyncio_variant.py``)
--------------------------------------------------------------------
* **The join is over before the read is.** Cancelling a task that awaits
  ``asyncio.to_thread`` abandons the thread; the task ends at once. So B waits
  a few milliseconds, ``prev_stream_finished_cleanly`` is logged, and B's
  upstream request starts while A's is still open. On a silent upstream A's
  thread stays blocked in ``recv()``, its connection open, indefinitely; the
  2 s ``wait_for`` never even comes into play.
* **The flag is cleared before the thread can see it.** The ``finally`` clears
  it about a millisecond after the cancel set it; the thread looks only when
  its next line arrives. Unless a line lands in that millisecond, a superseded
  (or Stopped) stream's thread reads its whole answer from the upstream; one
  whose model was still loading always does. (Measured at 50 tokens/s on 2
  cores: five superseded long answers hold five of the six executor threads,
  and from the sixth round on B gets no thread.)
* **Client disconnect sets no flag.** Starlette cancels the body, the task
  ends, the thread reads on (or stays blocked).
* **Blocked threads add up.** ``asyncio.to_thread`` uses the default executor,
  ``min(32, os.cpu_count() + 4)`` threads. That many streams on silent
  upstreams, superseded or disconnected, and every later answer waits for a
  thread that never comes: the notes' hang, back (health checks still answer).
* **No latest-wins.** If C arrives while B waits, C does not know about B; both
  start and stream in one session (``session_entry_overwritten`` is logged).
  In practice B's wait is milliseconds, so the window is small.
* **Shutdown waits for streams.** On SIGTERM uvicorn stops accepting, then
  waits for every response in progress with no limit: a stream on a silent
  upstream keeps the process alive until that upstream speaks or closes.
  After that the process ends by uvicorn re-raising SIGTERM (exit status -15).
* **Python 3.11's ``wait_for``**: on timeout it cancels again and waits without
  a bound, and it reports no timeout if the task swallows that second cancel;
  a cancel that arrives just as the awaited thing completes is lost (the
  stream's per-piece ``wait_for(queue.get(), 120)`` then sends one more piece,
  and ends when its thread sees the still-set flag at the next line).

Not implemented: auth, ``GET /v1/requests``, ``/metrics``, body-size limits,
the first-token timeout; ``auto`` and ``openai`` backends. It only listens on
loopback.
"""

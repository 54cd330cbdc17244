"""The server as users start it: `jarvis-trio serve`, `hypercorn ... -k trio`, the seed check."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from jarvis_trio.cli import main
from jarvis_trio.testing import ServerProcess, open_server_process
from tests.support.helpers import deadline, outcome_of, read_all_events, sse_events

BIN = Path(sys.executable).parent
ROOT = Path(__file__).parents[2]
DATA = Path(__file__).parent / "data"
SEED = Path(__file__).parents[3] / "shared" / "seeds" / "000_2043c89622f673e5.txt"


async def stop(server: ServerProcess) -> int:
    server.process.send_signal(signal.SIGTERM)
    with trio.fail_after(10):
        return await server.process.wait()


SERVE_READY = r"server_listening url=(http://\S+)"


@deadline(40)
async def test_serve_streams_and_shuts_down_cleanly_on_sigterm() -> None:
    argv = [str(BIN / "jarvis-trio"), "serve", "--port", "0"]
    async with (
        open_server_process(argv, SERVE_READY) as server,
        httpx.AsyncClient(timeout=10) as client,
    ):
        body = {"messages": [{"role": "user", "content": "Long essay about AI"}], "stream": True}
        async with client.stream("POST", server.url + "/v1/chat/completions", json=body) as r:
            events = sse_events(r)
            await anext(events)
            await anext(events)
            code = await stop(server)
            rest = [e async for e in events]
    assert code == 0
    assert rest[-1] == "[DONE]"
    assert outcome_of(rest[-2]) == "shutdown"
    log = "\n".join(server.output)
    assert "shutdown_requested signal=SIGTERM" in log
    assert "reason=shutdown" in log
    assert "shutdown_complete" in server.output[-1]  # the last line before the exit


@deadline(40)
async def test_hypercorn_cli_serves_the_asgi_app_with_settings_from_env() -> None:
    argv = [
        str(BIN / "hypercorn"),
        "jarvis_trio.asgi:app",
        "-k",
        "trio",
        "--bind",
        "127.0.0.1:0",
    ]
    env = {"JARVIS_SIM_TOKENS_PER_SECOND": "500", "JARVIS_API_KEYS": "envkey"}
    ready = r"Running on (http://127\.0\.0\.1:\d+)"
    async with (
        open_server_process(argv, ready, env=env) as server,
        httpx.AsyncClient(timeout=10) as client,
    ):
        url = server.url + "/v1/chat/completions"
        denied = await client.post(url, json={"prompt": "hi"})
        assert denied.status_code == 401  # JARVIS_API_KEYS was read
        auth = {"Authorization": "Bearer envkey"}
        body = {"prompt": "hi", "stream": True, "max_tokens": 3}
        async with client.stream("POST", url, json=body, headers=auth) as r:
            events = await read_all_events(r)
        assert events[-2]["choices"][0]["finish_reason"] == "length"
        code = await stop(server)
    assert code == 0


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_seed_snippet_is_the_original_one() -> None:
    if not SEED.exists():
        pytest.skip("shared/seeds is not beside this checkout")
    snippet = (DATA / "seed_000_verify.py.txt").read_text(encoding="utf-8")
    assert snippet.strip() in SEED.read_text(encoding="utf-8")


@pytest.mark.slow
@deadline(60)
async def test_seed_verification_snippet_passes_unchanged_against_make_run_server() -> None:
    """The first original note's check, verbatim, against `jarvis-trio serve` on :8000.

    Its requests send no ``"stream": true``, so prompt A is a plain JSON request and
    the snippet waits for A's whole answer before it sends B. A faster sim pace keeps
    that wait short here; at make run's default pace it is about 30 s.
    """
    if not port_is_free(8000):
        pytest.skip("port 8000 is in use")
    snippet = (DATA / "seed_000_verify.py.txt").read_text(encoding="utf-8")
    argv = [str(BIN / "jarvis-trio"), "serve", "--host", "127.0.0.1", "--port", "8000"]
    env = {"JARVIS_SIM_TOKENS_PER_SECOND": "400"}
    async with open_server_process(argv, SERVE_READY, env=env) as server:
        result = await trio.run_process(
            [sys.executable, "-c", snippet], capture_stdout=True, capture_stderr=True
        )
        await stop(server)
    out = result.stdout.decode()
    assert "[2/2] Sending prompt B..." in out
    assert "No hang = fix works!" in out, out + result.stderr.decode()


def test_serve_refuses_a_public_address_without_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "refusing to listen on 0.0.0.0 without API keys" in capsys.readouterr().err


def test_invalid_configuration_is_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JARVIS_PREV_STREAM_TIMEOUT", "-1")  # the old name still counts
    assert main(["serve", "--port", "0"]) == 2
    assert "JARVIS_JOIN_BUDGET" in capsys.readouterr().err


SIM_READY = r"ollama_sim listening url=(http://\S+)"


@deadline(60)
async def test_serve_with_the_ollama_backend_against_the_simulator_process() -> None:
    """The two real processes: supersede a silently stalled stream; read the order of
    events from the simulator over HTTP."""
    sim_argv = [str(BIN / "jarvis-trio"), "sim-ollama", "--port", "0"]
    async with open_server_process(sim_argv, SIM_READY) as sim:
        argv = [
            str(BIN / "jarvis-trio"),
            "serve",
            "--port",
            "0",
            "--backend",
            "ollama",
            "--ollama-url",
            sim.url,
        ]
        async with (
            open_server_process(argv, SERVE_READY) as server,
            httpx.AsyncClient(base_url=server.url, timeout=10) as client,
            httpx.AsyncClient(base_url=sim.url, timeout=10) as sim_client,
        ):
            headers = {"X-Session-Id": "e2e"}
            stalled = {
                "model": "llama3.2:1b+stall_after=1",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
            }
            async with client.stream(
                "POST", "/v1/chat/completions", json=stalled, headers=headers
            ) as a:
                a_events = sse_events(a)
                await anext(a_events)
                await anext(a_events)  # the one token; the upstream is silent now
                b = await client.post(
                    "/v1/chat/completions",
                    json={**stalled, "model": "llama3.2:1b", "stream": False},
                    headers=headers,
                )
                assert b.status_code == 200
                rest = [e async for e in a_events]
            assert outcome_of(rest[-2]) == "superseded"
            events = (await sim_client.get("/_sim/events")).json()
            # The chats only: the model-list refresh (GET /api/tags) may come in between.
            requests = [e for e in events if e["kind"] == "request" and e["path"] == "/api/chat"]
            first, second = requests[0]["conn"], requests[1]["conn"]
            closed = next(e for e in events if e["kind"] == "close" and e["conn"] == first)
            assert closed["by"] == "client"
            assert closed["seq"] < requests[1]["seq"]
            assert first != second
            assert await stop(server) == 0
        assert await stop(sim) == 0
    assert "backend_selected" not in "\n".join(server.output)  # explicit, no probing


@pytest.mark.slow
@deadline(90)
async def test_sigterm_with_100_live_streams_half_on_silent_upstreams() -> None:
    """Every client gets a clean final event, every upstream connection is closed, and
    the process exits 0 within JARVIS_SHUTDOWN_TIMEOUT (the deadline below is a hang
    guard with a margin for process start-up, not a speed claim)."""
    sim_argv = [str(BIN / "jarvis-trio"), "sim-ollama", "--port", "0"]
    async with open_server_process(sim_argv, SIM_READY) as sim:
        argv = [str(BIN / "jarvis-trio"), "serve", "--port", "0", "--backend", "ollama"]
        argv += ["--ollama-url", sim.url]
        env = {"JARVIS_SHUTDOWN_TIMEOUT": "5"}
        endings: list[Any] = []
        limits = httpx.Limits(max_connections=150)
        async with (
            open_server_process(argv, SERVE_READY, env=env) as server,
            httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as client,
            httpx.AsyncClient(base_url=sim.url, timeout=10) as sim_client,
        ):
            started = trio.Semaphore(0)

            async def stream(i: int) -> None:
                fault = "+stall_after=1" if i % 2 else "+tokens=100000"
                body = {
                    "model": "llama3.2:1b" + fault,
                    "messages": [{"role": "user", "content": f"{i}"}],
                    "stream": True,
                }
                async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                    events = sse_events(r)
                    await anext(events)  # role
                    await anext(events)  # first token
                    started.release()
                    endings.append([e async for e in events][-2:])

            async with trio.open_nursery() as nursery:
                for i in range(100):
                    nursery.start_soon(stream, i)
                for _ in range(100):
                    await started.acquire()
                live = (await sim_client.get("/_sim/stats")).json()["open_connections"]
                assert live == 100
                server.process.send_signal(signal.SIGTERM)
                sent = trio.current_time()
                with trio.fail_after(5 + 2):
                    code = await server.process.wait()
                print(f"exit {trio.current_time() - sent:.3f} s after SIGTERM")
            assert code == 0
            stats = (await sim_client.get("/_sim/stats")).json()
            assert stats["open_connections"] == 0
        assert await stop(sim) == 0
    assert len(endings) == 100
    for last_chunk, done in endings:
        assert outcome_of(last_chunk) == "shutdown"
        assert done == "[DONE]"


@pytest.mark.slow
@deadline(40)
async def test_sigterm_exits_even_when_clients_stopped_reading() -> None:
    """Found in review: hypercorn shields its socket writes, so a client that reads
    nothing held a write, and the process, forever after SIGTERM. The watchdog of
    `jarvis-trio serve` ends the process once the shutdown's time is up."""
    argv = [str(BIN / "jarvis-trio"), "serve", "--port", "0", "--backend", "sim"]
    env = {"JARVIS_SHUTDOWN_TIMEOUT": "1", "JARVIS_SIM_TOKENS_PER_SECOND": "2000"}
    async with open_server_process(argv, SERVE_READY, env=env) as server:
        port = int(server.url.rsplit(":", 1)[1])
        body = b'{"messages":[{"role":"user","content":"Long essay about AI"}],"stream":true}'
        stuck = []
        for i in range(5):
            sock = trio.socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            await sock.connect(("127.0.0.1", port))
            request = (
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Session-Id: stuck-{i}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            await sock.send(request.encode() + body)
            stuck.append(sock)  # and never read from
        await trio.sleep(1.5)  # every answer is written (600 tokens at 2,000/s) or stuck
        started = trio.current_time()
        server.process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            code = await server.process.wait()
        took = trio.current_time() - started
        for sock in stuck:
            sock.close()
    assert code == 0
    assert took < 1 + 1 + 2  # the shutdown's 1 s, the watchdog's 1 s, a loaded machine
    assert "shutdown_forced" in "\n".join(server.output)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@deadline(30)
async def test_a_busy_port_is_one_line_and_exit_code_2() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [str(BIN / "jarvis-trio"), "serve", "--port", str(port), "--backend", "sim"]
        with trio.fail_after(20):
            result = await trio.run_process(
                argv, capture_stdout=True, capture_stderr=True, check=False
            )
    assert result.returncode == 2
    assert result.stdout == b""
    assert result.stderr.decode() == f"jarvis-trio: port {port} is in use; use --port\n"


@deadline(30)
async def test_jarvis_port_from_the_environment_is_the_port() -> None:
    port = free_port()
    argv = [str(BIN / "jarvis-trio"), "serve", "--backend", "sim"]
    async with (
        open_server_process(argv, SERVE_READY, env={"JARVIS_PORT": str(port)}) as server,
        httpx.AsyncClient(timeout=10) as client,
    ):
        assert server.url == f"http://127.0.0.1:{port}"
        assert (await client.get(server.url + "/healthz")).status_code == 200


MAKE = shutil.which("make")


@pytest.mark.slow
@pytest.mark.skipif(
    MAKE is None or not (ROOT / ".venv" / "bin" / "jarvis-trio").exists(),
    reason="needs make and the checkout's .venv (make install)",
)
@pytest.mark.parametrize("how", ["PORT=", "JARVIS_PORT"])
@deadline(40)
async def test_make_run_takes_port_and_jarvis_port(how: str) -> None:
    """`make run PORT=8001` and `JARVIS_PORT=8001 make run` (make forwards SIGTERM)."""
    assert MAKE is not None
    port = free_port()
    # -o: never reinstall the venv from inside a test, even when it looks stale.
    argv = [MAKE, "-s", "-C", str(ROOT), "-o", ".venv/.installed", "run"]
    env = {"JARVIS_SIM_TOKENS_PER_SECOND": "500"}
    if how == "PORT=":
        argv.append(f"PORT={port}")
    else:
        env["JARVIS_PORT"] = str(port)
    async with (
        open_server_process(argv, SERVE_READY, env=env) as server,
        httpx.AsyncClient(timeout=10) as client,
    ):
        assert server.url == f"http://127.0.0.1:{port}"
        body = {"prompt": "hi", "max_tokens": 2}
        answer = await client.post(server.url + "/v1/chat/completions", json=body)
        assert answer.json()["choices"][0]["finish_reason"] == "length"
        assert await stop(server) in (0, -signal.SIGTERM)  # make dies of the signal it forwards
    # The pipe closed, so the server (make's child) has exited, and cleanly:
    assert any("shutdown_complete" in line for line in server.output)


def test_make_run_port_wins_over_jarvis_port() -> None:
    if MAKE is None:
        pytest.skip("needs make")
    argv = [MAKE, "-n", "-s", "-C", str(ROOT), "-o", ".venv/.installed", "run", "PORT=8123"]
    env = {**os.environ, "JARVIS_PORT": "8124"}
    line = subprocess.run(argv, capture_output=True, text=True, env=env, check=True).stdout
    assert "--port 8123" in line
    assert "8124" not in line

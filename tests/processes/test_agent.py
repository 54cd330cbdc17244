"""Agent mode end to end: the embedded model decides, a real stdio MCP server runs the tools
(tests/support/mcp_test_server.py), and every ending of the stream ends the tool calls too."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from jarvis_trio.testing import open_server_process
from jarvis_trio.tools.host import ToolHost
from jarvis_trio.tools.lifetime import EXTENSION
from tests.conftest import RunningServer, StartServer, log_lines
from tests.processes.test_mcp_host import alive, read_log, server_entry, wait_for_log
from tests.support.helpers import (
    deadline,
    eventually,
    outcome_of,
    read_all_events,
    sse_events,
    text_of,
)

CHAT = "/v1/chat/completions"


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "mcp.jsonl"


async def agent_server(
    start_server: StartServer, tmp_path: Path, log: Path, **settings: Any
) -> RunningServer:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"t": server_entry(log)}}))
    with trio.fail_after(20):
        return await start_server(mcp_config=str(config), **settings)


def ask(prompt: str, **extra: Any) -> dict[str, Any]:
    body = {"messages": [{"role": "user", "content": prompt}], "stream": True}
    return body | {"jarvis": {"agent": True}} | extra


def progress(events: list[Any]) -> list[dict[str, Any]]:
    return [
        e["jarvis"]["agent"]
        for e in events
        if isinstance(e, dict) and "agent" in (e.get("jarvis") or {})
    ]


async def until_tool_runs(events: Any, log: Path, tool: str) -> None:
    """Read the stream up to the tool's start, and until the MCP server has the call."""
    async for event in events:
        if isinstance(event, dict) and (event.get("jarvis") or {}).get("agent"):
            break
    with trio.fail_after(10):
        await wait_for_log(log, "call", tool)


@deadline(40)
async def test_a_tool_round_trip_decided_by_the_embedded_model(
    start_server: StartServer, tmp_path: Path, log: Path
) -> None:
    server = await agent_server(start_server, tmp_path, log)
    async with (
        server.client() as client,
        client.stream("POST", CHAT, json=ask('use echo {"text": "hello"}')) as r,
    ):
        events = await read_all_events(r)
    steps = progress(events)
    assert [s["event"] for s in steps] == ["tool_call_started", "tool_call_finished"]
    assert steps[0]["name"] == "echo" and json.loads(steps[0]["arguments"]) == {"text": "hello"}
    assert steps[1]["ok"] and steps[1]["result"] == "hello"
    assert steps[0]["id"] == steps[1]["id"]
    assert "echo returned hello" in text_of(events)
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    for event in events:  # progress is never content, and standard fields stay standard
        if isinstance(event, dict) and "agent" in (event.get("jarvis") or {}):
            assert event["choices"][0]["delta"] == {}
    assert [e["event"] for e in read_log(log) if e["event"] == "call"] == ["call"]


@deadline(40)
async def test_parallel_calls_run_at_once(
    start_server: StartServer, tmp_path: Path, log: Path
) -> None:
    server = await agent_server(start_server, tmp_path, log)
    prompt = 'use slow {"seconds": 0.5} and echo {"text": "quick"}'
    async with server.client() as client, client.stream("POST", CHAT, json=ask(prompt)) as r:
        events = await read_all_events(r)
    order = [(s["event"], s["name"]) for s in progress(events)]
    # Both started before either finished, and the quick one finished first.
    assert {order[0], order[1]} == {("tool_call_started", "slow"), ("tool_call_started", "echo")}
    assert order[2:] == [("tool_call_finished", "echo"), ("tool_call_finished", "slow")]
    assert "slow returned slept 0.5; echo returned quick" in text_of(events)


@deadline(40)
async def test_tool_errors_and_timeouts_are_fed_back_to_the_model(
    start_server: StartServer, tmp_path: Path, log: Path
) -> None:
    server = await agent_server(start_server, tmp_path, log, tool_timeout=0.3)
    async with server.client() as client:
        async with client.stream("POST", CHAT, json=ask("use fail")) as r:
            failed = await read_all_events(r)
        async with client.stream("POST", CHAT, json=ask('use slow {"seconds": 30}')) as r:
            timed_out = await read_all_events(r)
    assert progress(failed)[-1]["outcome"] == "tool_error"
    assert "fail returned Error (tool_error)" in text_of(failed)
    assert failed[-2]["choices"][0]["finish_reason"] == "stop"
    assert progress(timed_out)[-1]["outcome"] == "timeout"
    assert "slow returned Error (timeout)" in text_of(timed_out)
    with trio.fail_after(5):
        await wait_for_log(log, "cancelled", "slow")  # the timeout cancelled it at the server


@pytest.mark.parametrize("ending", ["superseded", "stopped", "disconnected"])
@deadline(40)
async def test_every_ending_cancels_the_tool_call_at_the_server(
    start_server: StartServer,
    tmp_path: Path,
    log: Path,
    caplog: pytest.LogCaptureFixture,
    ending: str,
) -> None:
    server = await agent_server(start_server, tmp_path, log)
    headers = {"X-Session-Id": "agent"}
    async with server.client() as ca, server.client() as cb:
        async with ca.stream(
            "POST", CHAT, json=ask('use slow {"seconds": 30}'), headers=headers
        ) as a:
            events = sse_events(a)
            await until_tool_runs(events, log, "slow")
            if ending == "superseded":
                async with cb.stream(
                    "POST", CHAT, json={"prompt": "hi", "stream": True}, headers=headers
                ) as b:
                    b_events = sse_events(b)
                    await anext(b_events)  # the role chunk
                    first = await anext(b_events)
                    assert first["choices"][0]["delta"]["content"]
                    assert [event async for event in b_events][-1] == "[DONE]"
            elif ending == "stopped":
                stop = await cb.post("/v1/sessions/agent/cancel")
                assert stop.json()["result"] == "finished_cleanly"
            if ending != "disconnected":
                rest = [event async for event in events]
                assert outcome_of(rest[-2]) == ending
        # disconnected: leaving the block closed A's connection mid-tool
    with trio.fail_after(5):
        cancelled = await wait_for_log(log, "cancelled", "slow")
    assert cancelled["tool"] == "slow"
    await eventually(lambda: any(line.startswith("agent_cancelled") for line in log_lines(caplog)))
    lines = log_lines(caplog)
    assert any("agent_cancelled trace=" in line and f"reason={ending}" in line for line in lines)
    assert not any(line.startswith("agent_timeout_on_cancel") for line in lines)
    if ending == "superseded":
        # B waited for A's agent to be joined (within the cancel budget), not for the
        # tool and not for the session's join budget to run out.
        assert any(line.startswith("prev_stream_finished_cleanly") for line in lines)
        assert not any(line.startswith("prev_stream_timeout_on_cancel") for line in lines)


@deadline(40)
async def test_a_tool_that_ignores_its_cancel_does_not_hold_the_next_prompt(
    start_server: StartServer, tmp_path: Path, log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = await agent_server(start_server, tmp_path, log)
    headers = {"X-Session-Id": "stubborn"}
    async with server.client() as ca, server.client() as cb:
        async with ca.stream(
            "POST", CHAT, json=ask('use stubborn {"seconds": 20}'), headers=headers
        ) as a:
            events = sse_events(a)
            await until_tool_runs(events, log, "stubborn")
            b = await cb.post(CHAT, json={"prompt": "hi", "max_tokens": 3}, headers=headers)
            assert b.status_code == 200
            rest = [event async for event in events]
    assert outcome_of(rest[-2]) == "superseded"
    with trio.fail_after(5):
        await wait_for_log(log, "cancel_ignored", "stubborn")
    assert not any(line.startswith("agent_timeout_on_cancel") for line in log_lines(caplog))


@deadline(40)
async def test_a_server_that_crashes_mid_call_is_an_error_in_the_answer_and_restarted(
    start_server: StartServer, tmp_path: Path, log: Path
) -> None:
    server = await agent_server(start_server, tmp_path, log)
    async with server.client() as client:
        async with client.stream("POST", CHAT, json=ask("use crash")) as r:
            crashed = await read_all_events(r)
        assert progress(crashed)[-1]["outcome"] == "server_crashed"
        assert "crash returned Error (server_crashed)" in text_of(crashed)
        host: ToolHost = server.app.extensions[EXTENSION]

        async def echo_works() -> bool:
            async with client.stream("POST", CHAT, json=ask('use echo {"text": "back"}')) as r:
                return "echo returned back" in text_of(await read_all_events(r))

        with trio.fail_after(20):
            await eventually(lambda: "echo" in {t.name for t in host.tools()}, within=20)
            while not await echo_works():  # noqa: ASYNC110 - bounded: the server restarts
                await trio.sleep(0.1)
    assert len([e for e in read_log(log) if e["event"] == "start"]) >= 2  # restarted


@deadline(30)
async def test_a_call_of_a_client_tool_ends_the_answer_with_tool_calls(
    start_server: StartServer, tmp_path: Path, log: Path
) -> None:
    server = await agent_server(start_server, tmp_path, log)
    weather = {"type": "function", "function": {"name": "weather", "parameters": {}}}
    async with (
        server.client() as client,
        client.stream("POST", CHAT, json=ask("use weather", tools=[weather])) as r,
    ):
        events = await read_all_events(r)
    calls = [
        e["choices"][0]["delta"]["tool_calls"]
        for e in events
        if isinstance(e, dict) and e["choices"] and "tool_calls" in e["choices"][0]["delta"]
    ]
    assert [c[0]["function"]["name"] for c in calls] == ["weather"]
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert not progress(events)
    assert not [e for e in read_log(log) if e["event"] == "call"]


@deadline(20)
async def test_agent_mode_without_tools_is_a_clear_400(client: httpx.AsyncClient) -> None:
    r = await client.post(CHAT, json=ask("use echo"))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "agent_unavailable"
    assert r.json()["error"]["param"] == "jarvis.agent"


@deadline(30)
async def test_without_agent_mode_the_tools_are_not_offered(
    start_server: StartServer, tmp_path: Path, log: Path
) -> None:
    server = await agent_server(start_server, tmp_path, log, agent_default=False)
    body = {"messages": [{"role": "user", "content": 'use echo {"text": "x"}'}], "stream": True}
    async with server.client() as client, client.stream("POST", CHAT, json=body) as r:
        events = await read_all_events(r)
    assert not progress(events) and text_of(events)
    assert not [e for e in read_log(log) if e["event"] == "call"]


@pytest.mark.slow
@deadline(60)
async def test_sigterm_with_an_agent_run_in_flight_leaves_no_mcp_process(tmp_path: Path) -> None:
    log = tmp_path / "mcp.jsonl"
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"t": server_entry(log)}}))
    argv = [str(Path(sys.executable).parent / "jarvis-trio"), "serve", "--port", "0"]
    argv += ["--backend", "sim", "--mcp-config", str(config)]
    env = {**os.environ, "JARVIS_AGENT_DEFAULT": "true"}
    try:
        async with open_server_process(
            argv, r"server_listening url=(http://\S+)", env=env
        ) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                body = {"prompt": 'use slow {"seconds": 60}', "stream": True}
                async with client.stream("POST", CHAT, json=body) as r:
                    events = sse_events(r)
                    await until_tool_runs(events, log, "slow")
                    server.process.send_signal(signal.SIGTERM)
                    rest = [event async for event in events]
            with trio.fail_after(10):
                assert await server.process.wait() == 0
        assert outcome_of(rest[-2]) == "shutdown"
        assert not alive(read_log(log)[0]["pid"])
        assert any(
            "agent_cancelled" in line and "reason=shutdown" in line for line in server.output
        )
    finally:
        for entry in read_log(log)[:1]:
            if alive(entry["pid"]):
                os.kill(entry["pid"], signal.SIGKILL)


@deadline(30)
async def test_a_client_tool_shadows_a_server_tool_of_the_same_name(
    start_server: StartServer, tmp_path: Path, log: Path
) -> None:
    """The client's own tool runs at the client, never at an MCP server with the
    gateway's privileges."""
    server = await agent_server(start_server, tmp_path, log)
    echo = {"type": "function", "function": {"name": "echo", "parameters": {}}}
    async with (
        server.client() as client,
        client.stream("POST", CHAT, json=ask('use echo {"text": "mine"}', tools=[echo])) as r,
    ):
        events = await read_all_events(r)
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert not progress(events)
    assert not [e for e in read_log(log) if e["event"] == "call"]


@deadline(30)
async def test_server_calls_beside_client_calls_are_said_not_dropped(
    start_server: StartServer, tmp_path: Path, log: Path
) -> None:
    server = await agent_server(start_server, tmp_path, log)
    weather = {"type": "function", "function": {"name": "weather", "parameters": {}}}
    prompt = 'use echo {"text": "x"} and weather'
    async with (
        server.client() as client,
        client.stream("POST", CHAT, json=ask(prompt, tools=[weather])) as r,
    ):
        events = await read_all_events(r)
    skipped = progress(events)
    assert [s["event"] for s in skipped] == ["tool_calls_skipped"]
    assert skipped[0]["reason"] == "client_tools_called"
    assert [c["name"] for c in skipped[0]["calls"]] == ["echo"]
    assert events[-2]["choices"][0]["finish_reason"] == "tool_calls"


@deadline(30)
async def test_a_tool_call_longer_than_the_inactivity_timeout_is_not_inactivity(
    start_server: StartServer, tmp_path: Path, log: Path
) -> None:
    """Quiet on purpose: the run holds off the inactivity timeout while its tools run,
    parallel calls included (each progress chunk would bring it back)."""
    server = await agent_server(start_server, tmp_path, log, stream_inactivity_seconds=0.5)
    prompt = 'use slow {"seconds": 1.5} and echo {"text": "first"}'
    async with server.client() as client, client.stream("POST", CHAT, json=ask(prompt)) as r:
        events = await read_all_events(r)
    assert [s["outcome"] for s in progress(events) if "outcome" in s] == ["ok", "ok"]
    assert "slow returned slept 1.5" in text_of(events)
    assert events[-2]["choices"][0]["finish_reason"] == "stop"

"""The MCP tool host against real stdio servers (tests/support/mcp_test_server.py subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import mcp_types
import psutil
import pytest
import trio

from jarvis_trio.cli import main
from jarvis_trio.testing import open_server_process
from jarvis_trio.tools.config import McpConfigError, load_mcp_config, parse_mcp_config
from jarvis_trio.tools.host import ToolHost
from jarvis_trio.tools.ledger import Ledger
from jarvis_trio.tools.lifetime import EXTENSION
from jarvis_trio.tools.server import ServerLimits
from tests.conftest import StartServer, log_lines
from tests.support.helpers import deadline, eventually

ROOT = Path(__file__).resolve().parents[2]
BUDGET = 0.5  # JARVIS_AGENT_CANCEL_TIMEOUT's default


def server_entry(log: Path, **env: str) -> dict[str, Any]:
    return {
        "command": sys.executable,
        "args": ["-m", "tests.support.mcp_test_server"],
        "env": {"MCP_TEST_LOG": str(log), **env},
        "cwd": str(ROOT),
    }


def read_log(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


async def wait_for_log(log: Path, event: str, tool: str | None = None) -> dict[str, Any]:
    while True:
        for entry in read_log(log):
            if entry["event"] == event and tool in (None, entry.get("tool")):
                return entry
        await trio.sleep(0.01)


def alive(pid: int) -> bool:
    """A zombie is not alive: our grandchildren are reaped by whoever adopts them."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


HostFactory = Callable[..., Any]


@pytest.fixture
async def host_for(nursery: trio.Nursery) -> AsyncIterator[HostFactory]:
    hosts: list[ToolHost] = []

    async def start(servers: dict[str, Any], **options: Any) -> ToolHost:
        options.setdefault("cancel_timeout", BUDGET)
        host = ToolHost(parse_mcp_config({"mcpServers": servers}), **options)
        with trio.fail_after(20):
            await nursery.start(host.run)
        hosts.append(host)
        return host

    yield start
    with trio.fail_after(10):
        for host in hosts:
            await host.aclose()


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Callable[[], list[str]]:
    return lambda: log_lines(caplog)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "server.jsonl"


# -- config -------------------------------------------------------------------------


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    bad = {"mcpServers": {"fs": {"command": "x", "args": "-v"}, "web": {"url": "ftp://x"}}}
    with pytest.raises(McpConfigError) as caught:
        parse_mcp_config(bad)
    assert "mcpServers.fs.args: Input should be a valid list" in str(caught.value)
    assert "mcpServers.web.url" in str(caught.value)
    with pytest.raises(McpConfigError, match=r"mcpServers\.x: a server needs `command`"):
        parse_mcp_config({"mcpServers": {"x": {"comand": "typo"}}})
    with pytest.raises(McpConfigError, match=r"mcpServers\.x\.arg: Extra inputs"):
        parse_mcp_config({"mcpServers": {"x": {"command": "a", "arg": []}}})
    path = tmp_path / "mcp.json"
    path.write_text('{"mcpServers": {,}}')
    with pytest.raises(McpConfigError, match=r"not JSON \(line 1, column 17"):
        load_mcp_config(path)
    with pytest.raises(McpConfigError, match="cannot read"):
        load_mcp_config(tmp_path / "missing.json")


def test_config_in_the_shape_other_clients_use(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "fs": {"command": "npx", "args": ["-y", "server-fs"], "env": {"A": "1"}},
                    "web": {"url": "http://127.0.0.1:9000/mcp", "type": "http"},
                    "off": {"command": "nothing", "disabled": True},
                },
                "otherClientSetting": True,
            }
        )
    )
    config = load_mcp_config(path)
    assert sorted(config.enabled()) == ["fs", "web"]
    assert ToolHost(config).servers.keys() == {"fs", "web"}


# -- tools and calls ----------------------------------------------------------------


async def test_tool_names_are_prefixed_only_where_servers_clash(
    host_for: HostFactory, tmp_path: Path
) -> None:
    host: ToolHost = await host_for(
        {
            "a": server_entry(tmp_path / "a.jsonl"),
            "b": server_entry(tmp_path / "b.jsonl"),
            "c": server_entry(tmp_path / "c.jsonl", MCP_TEST_PREFIX="c_"),
        }
    )
    names = {tool.name for tool in host.tools()}
    assert {"a__echo", "b__echo", "c_echo", "a__slow", "c_slow"} <= names
    assert "echo" not in names
    spec = next(tool for tool in host.tools() if tool.name == "b__echo")
    assert (spec.server, spec.mcp_name) == ("b", "echo")
    assert spec.openai()["function"]["parameters"]["properties"]["text"]["type"] == "string"
    assert spec.openai() in host.openai_tools()
    with trio.fail_after(5):
        b = await host.call_tool("b__echo", {"text": "from b"})
        c = await host.call_tool("c_echo", {"text": "from c"})
    assert (b.outcome, b.text, c.text) == ("ok", "from b", "from c")
    assert [e["tool"] for e in read_log(tmp_path / "b.jsonl") if e["event"] == "call"] == ["echo"]


async def test_round_trip_and_parallel_calls(
    host_for: HostFactory, log: Path, lines: Callable[[], list[str]]
) -> None:
    host: ToolHost = await host_for({"t": server_entry(log)})
    with trio.fail_after(5):
        result = await host.call_tool("echo", {"text": "hello"}, trace="chatcmpl-1")
    assert (result.ok, result.text, result.truncated) == (True, "hello", False)
    assert any(line.startswith("tool_call_end trace=chatcmpl-1 tool=echo") for line in lines())

    results: list[str] = []

    async def one(seconds: float) -> None:
        results.append((await host.call_tool("slow", {"seconds": seconds})).text)

    began = trio.current_time()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(one, 0.4)
    assert results == ["slept 0.4"] * 4
    assert trio.current_time() - began < 1.2  # together, not one after the other


async def test_tool_errors_come_back_as_values(host_for: HostFactory, log: Path) -> None:
    host: ToolHost = await host_for({"t": server_entry(log)}, result_max_chars=100)
    with trio.fail_after(5):
        failed = await host.call_tool("fail")
        unknown = await host.call_tool("nope", {})
        bad_args = await host.call_tool("echo", {"wrong": 1})
        big = await host.call_tool("big", {"chars": 5000})
    assert (failed.outcome, failed.ok) == ("tool_error", False)
    assert "this tool always fails" in failed.text
    assert unknown.outcome == "unknown_tool"
    assert bad_args.outcome == "tool_error"
    assert big.ok and big.truncated
    assert big.text.startswith("x" * 100) and big.text.endswith("[truncated: 4900 more characters]")


async def test_tool_timeout_cancels_the_call_at_the_server(
    host_for: HostFactory, log: Path
) -> None:
    host: ToolHost = await host_for({"t": server_entry(log)}, tool_timeout=0.3)
    began = trio.current_time()
    with trio.fail_after(5):
        result = await host.call_tool("slow", {"seconds": 10})
    assert result.outcome == "timeout"
    assert trio.current_time() - began < 0.3 + BUDGET
    with trio.fail_after(2):
        await wait_for_log(log, "cancelled", "slow")


async def test_cancelling_the_caller_cancels_the_call_at_the_server(
    host_for: HostFactory, log: Path, lines: Callable[[], list[str]]
) -> None:
    host: ToolHost = await host_for({"t": server_entry(log)})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(host.call_tool, "slow", {"seconds": 10})
        with trio.fail_after(5):
            await wait_for_log(log, "call", "slow")
        cancelled_at = time.time()
        began = trio.current_time()
        nursery.cancel_scope.cancel()
    released = trio.current_time() - began
    with trio.fail_after(2):
        seen = await wait_for_log(log, "cancelled", "slow")
    at_server = seen["t"] - cancelled_at
    print(f"caller released in {released * 1000:.1f} ms; at the server {at_server * 1000:.1f} ms")
    assert released < BUDGET
    assert at_server < BUDGET
    assert any("outcome=cancelled" in line for line in lines())
    with trio.fail_after(5):  # the server is still fine
        assert (await host.call_tool("echo", {"text": "still"})).text == "still"


async def test_a_tool_that_ignores_its_cancel_does_not_hold_the_caller(
    host_for: HostFactory, log: Path, lines: Callable[[], list[str]]
) -> None:
    host: ToolHost = await host_for({"t": server_entry(log)})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(host.call_tool, "stubborn", {"seconds": 1.0})
        with trio.fail_after(5):
            await wait_for_log(log, "call", "stubborn")
        began = trio.current_time()
        nursery.cancel_scope.cancel()
    assert trio.current_time() - began < BUDGET
    with trio.fail_after(2):
        await wait_for_log(log, "cancel_ignored", "stubborn")
        await wait_for_log(log, "done", "stubborn")  # it finished anyway; no answer came
    await trio.sleep(0.1)
    assert not any(line.startswith("tool_call_end") and "outcome=ok" in line for line in lines())


@pytest.mark.slow
async def test_a_cancel_that_cannot_be_delivered_is_abandoned_and_the_server_restarted(
    host_for: HostFactory, log: Path, lines: Callable[[], list[str]]
) -> None:
    # `block` stops the server's loop; large echos behind it fill the stdin pipe (the
    # SDK server's reader thread takes one line, the pipe 64 KiB more), so the cancel of
    # `block` cannot even be written: the caller gives up at the budget.
    # Then the server wakes and answers `block` (late: dropped); two strikes restart it.
    host: ToolHost = await host_for(
        {"t": server_entry(log)}, limits=ServerLimits(abandon_threshold=2)
    )
    first_pid = host.servers["t"].pid
    echoed: list[str] = []

    async def big_echo() -> None:
        echoed.append((await host.call_tool("echo", {"text": "y" * 300_000})).outcome)

    async with trio.open_nursery() as outer:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(host.call_tool, "block", {"seconds": 1.5})
            with trio.fail_after(5):
                await wait_for_log(log, "call", "block")
            for _ in range(3):
                outer.start_soon(big_echo)
            await trio.sleep(0.2)
            began = trio.current_time()
            nursery.cancel_scope.cancel()
        released = trio.current_time() - began
    print(f"abandoned caller released in {released * 1000:.1f} ms")
    assert BUDGET <= released < BUDGET + 0.2
    seen_lines = lines()
    assert any(line.startswith("agent_tool_abandoned tool=block server=t") for line in seen_lines)
    assert any("tool=block" in line and "outcome=abandoned" in line for line in seen_lines)
    await eventually(lambda: any(line.startswith("tool_late_answer_dropped") for line in lines()))
    await eventually(lambda: host.servers["t"].pid not in (None, first_pid))
    assert any(
        "mcp_server_restart" in line and "reason=abandoned_calls" in line for line in lines()
    )
    # The echos were still in flight at the restart: they end as errors, not hangs.
    assert len(echoed) == 3 and set(echoed) <= {"ok", "unavailable"}
    assert not psutil.pid_exists(first_pid or 0)


@pytest.mark.slow
async def test_a_server_that_crashes_mid_call_gives_an_error_and_is_restarted(
    host_for: HostFactory, log: Path, lines: Callable[[], list[str]]
) -> None:
    host: ToolHost = await host_for({"t": server_entry(log)})
    first_pid = host.servers["t"].pid
    with trio.fail_after(5):
        result = await host.call_tool("crash")
    assert result.outcome == "server_crashed"
    assert "exited during the call" in result.text
    server = host.servers["t"]
    await eventually(lambda: server.state == "ready" and server.pid != first_pid)
    with trio.fail_after(5):
        again = await host.call_tool("echo", {"text": "back"})
    assert again.text == "back"
    assert host.servers["t"].pid != first_pid
    seen_lines = lines()
    assert any(
        line.startswith("mcp_server_exited server=t") and "returncode=3" in line
        for line in seen_lines
    )
    assert any(line.startswith("mcp_server_restart server=t reason=exited") for line in seen_lines)


async def test_the_tool_list_is_refreshed_on_list_changed(host_for: HostFactory, log: Path) -> None:
    host: ToolHost = await host_for({"t": server_entry(log)})
    assert "added" not in {tool.name for tool in host.tools()}
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(host.call_tool, "change_tools")
            await host.wait_tools_changed()
    assert "added" in {tool.name for tool in host.tools()}
    with trio.fail_after(5):
        assert (await host.call_tool("added")).text == "added"


async def test_a_server_that_cannot_start_is_retried_and_its_tools_unavailable(
    host_for: HostFactory, lines: Callable[[], list[str]]
) -> None:
    host: ToolHost = await host_for(
        {"gone": {"command": "/nonexistent/mcp-server"}},
        limits=ServerLimits(backoff_initial=0.05),
    )
    assert host.tools() == []
    await eventually(
        lambda: sum(line.startswith("mcp_server_restart server=gone") for line in lines()) >= 3
    )
    seen_lines = lines()
    assert any("reason=spawn_failed" in line for line in seen_lines)
    delays = [
        line.split("delay_ms=")[1] for line in seen_lines if line.startswith("mcp_server_restart")
    ]
    assert delays[:3] == ["50", "100", "200"]


@pytest.mark.slow
async def test_shutdown_ends_every_mcp_process_and_their_children_with_calls_in_flight(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # One server ignores SIGTERM and a closed stdin while its stubborn tool runs.
    logs = {name: tmp_path / f"{name}.jsonl" for name in ("plain", "deaf")}
    config = parse_mcp_config(
        {
            "mcpServers": {
                "plain": server_entry(logs["plain"]),
                "deaf": server_entry(logs["deaf"], MCP_TEST_IGNORE_SIGTERM="1"),
            }
        }
    )
    host = ToolHost(config, cancel_timeout=BUDGET)
    with trio.fail_after(20):
        await nursery.start(host.run)
    pids = [server.pid for server in host.servers.values()]
    assert all(pids)
    results: list[str] = []

    async def call(name: str) -> None:
        results.append((await host.call_tool(name, {"seconds": 30})).outcome)

    with trio.fail_after(5):
        child = int((await host.call_tool("deaf__spawn")).text)  # a grandchild of ours
    assert alive(child)
    for name in ("plain__slow", "plain__stubborn", "deaf__stubborn", "deaf__slow"):
        nursery.start_soon(call, name)
    with trio.fail_after(5):
        await wait_for_log(logs["deaf"], "call", "stubborn")
        await wait_for_log(logs["plain"], "call", "stubborn")
    began = trio.current_time()
    with trio.fail_after(5):
        await host.aclose()
    took = trio.current_time() - began
    print(f"host closed in {took * 1000:.0f} ms")
    assert took < 0.5 + 0.5 + 1.0  # stdin closed, SIGTERM after 0.5 s, SIGKILL after 0.5 s more
    assert not [pid for pid in pids if pid and psutil.pid_exists(pid)]
    assert not alive(child)
    await trio.sleep(0.05)
    assert results == ["unavailable"] * 4


async def test_the_demo_tools_server(host_for: HostFactory) -> None:
    host: ToolHost = await host_for(
        {"demo": {"command": sys.executable, "args": ["-m", "jarvis_trio.demo_tools"]}}
    )
    assert {tool.name for tool in host.tools()} == {"now", "add", "multiply", "sleep"}
    with trio.fail_after(5):
        total = await host.call_tool("add", {"a": 2, "b": 3})
        product = await host.call_tool("multiply", {"a": 4, "b": 2.5})
        now = await host.call_tool("now")
    assert (total.text, product.text) == ("5.0", "10.0")
    assert now.ok and now.text.endswith("+00:00")
    began = trio.current_time()
    with trio.move_on_after(0.3):
        await host.call_tool("sleep", {"seconds": 60})
    assert trio.current_time() - began < 0.3 + BUDGET
    with trio.fail_after(5):
        assert (await host.call_tool("sleep", {"seconds": 0.01})).text == "slept 0.01 s"


# -- in the server ------------------------------------------------------------------


def test_serve_reports_a_bad_mcp_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"fs": {"command": "x", "args": "-v"}}}))
    assert main(["serve", "--port", "0", "--backend", "sim", "--mcp-config", str(config)]) == 2
    assert "mcpServers.fs.args: Input should be a valid list" in capsys.readouterr().err


@pytest.mark.slow
@deadline(40)
async def test_serve_starts_the_mcp_servers_and_ends_them_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "server.jsonl"
    config = tmp_path / "mcp.json"
    entry = server_entry(log, MCP_TEST_IGNORE_SIGTERM="1")  # only SIGKILL ends this one
    config.write_text(json.dumps({"mcpServers": {"t": entry}}))
    argv = [str(Path(sys.executable).parent / "jarvis-trio"), "serve", "--port", "0"]
    argv += ["--backend", "sim", "--mcp-config", str(config)]
    try:
        async with open_server_process(argv, r"server_listening url=(http://\S+)") as server:
            with trio.fail_after(10):
                await wait_for_log(log, "start")
            assert any("mcp_server_started server=t transport=stdio" in ln for ln in server.output)
            server.process.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                assert await server.process.wait() == 0
        assert not alive(read_log(log)[0]["pid"])
        assert any("mcp_server_exited server=t" in line for line in server.output)
    finally:  # a failure must not leave this server behind: nothing else would end it
        for entry in read_log(log)[:1]:
            if alive(entry["pid"]):
                os.kill(entry["pid"], signal.SIGKILL)


@deadline(40)
async def test_a_streamable_http_server(host_for: HostFactory, log: Path) -> None:
    argv = [sys.executable, "-m", "tests.support.mcp_test_server"]
    env = {"MCP_TEST_HTTP_PORT": "0", "MCP_TEST_LOG": str(log)}
    async with open_server_process(
        argv, r"Uvicorn running on (http://\S+)", env=env, cwd=ROOT
    ) as mcp:
        host: ToolHost = await host_for({"h": {"url": mcp.url + "/mcp"}})
        assert "echo" in {tool.name for tool in host.tools()}
        with trio.fail_after(5):
            assert (await host.call_tool("echo", {"text": "over http"})).text == "over http"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(host.call_tool, "slow", {"seconds": 10})
            with trio.fail_after(5):
                await wait_for_log(log, "call", "slow")
            began = trio.current_time()
            nursery.cancel_scope.cancel()
        assert trio.current_time() - began < BUDGET
        with trio.fail_after(2):
            await wait_for_log(log, "cancelled", "slow")
        await host.aclose()


def test_the_ledger_drops_answers_to_cancelled_calls() -> None:
    late: list[str] = []
    ledger = Ledger(late.append)
    for request_id, tool in ((1, "slow"), (2, "echo"), (3, "block")):
        params: dict[str, Any] = {"name": tool, "arguments": {}}
        ledger.sent(
            mcp_types.JSONRPCRequest(
                jsonrpc="2.0", id=request_id, method="tools/call", params=params
            )
        )
    for request_id in (1, 3):
        params = {"requestId": request_id, "reason": "caller cancelled"}
        ledger.sent(
            mcp_types.JSONRPCNotification(
                jsonrpc="2.0", method="notifications/cancelled", params=params
            )
        )
    error = mcp_types.ErrorData(code=0, message="Request cancelled")
    assert not ledger.received(mcp_types.JSONRPCError(jsonrpc="2.0", id=1, error=error))  # an ack
    assert ledger.received(mcp_types.JSONRPCResponse(jsonrpc="2.0", id=2, result={}))
    assert not ledger.received(mcp_types.JSONRPCResponse(jsonrpc="2.0", id=3, result={}))
    assert late == ["block"]
    # Each id is recognised once: a second answer is the SDK's to drop.
    assert ledger.received(mcp_types.JSONRPCResponse(jsonrpc="2.0", id=3, result={}))


async def test_the_app_runs_the_configured_servers_and_counts_tool_calls(
    start_server: StartServer, tmp_path: Path, log: Path
) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"t": server_entry(log)}}))
    with trio.fail_after(20):
        server = await start_server(mcp_config=str(config))
    host: ToolHost = server.app.extensions[EXTENSION]
    assert "echo" in {tool.name for tool in host.tools()}
    with trio.fail_after(5):
        await host.call_tool("echo", {"text": "counted"})
        await host.call_tool("fail")
        async with server.client() as client:
            text = (await client.get("/metrics")).text
    assert 'jarvis_tool_calls_total{outcome="ok"} 1.0' in text
    assert 'jarvis_tool_calls_total{outcome="tool_error"} 1.0' in text
    assert 'jarvis_tool_calls_total{outcome="abandoned"} 0.0' in text
    assert "jarvis_tool_call_duration_seconds_count 2.0" in text

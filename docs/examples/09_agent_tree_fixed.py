"""Step 9, fixed: the agent run is one nursery, inside the stream's cancel scope.

The tool calls are tasks in the run's nursery, and each call owns its process. When
the scope is cancelled, each call asks its process to stop (SIGTERM here; the server
sends ``notifications/cancelled``) and waits for it, shielded and bounded by the
agent's 0.5 s budget; a process that ignores its cancel is killed at the budget. The
nursery cannot exit before its calls have, so when A's answer has ended, no process
is left.
"""

import subprocess
import sys

import trio

AGENT_CANCEL_TIMEOUT = 0.5  # the agent's join budget
PREV_STREAM_TIMEOUT = 2.0  # the stream's join budget (step 3), which contains it
TOOLS = {  # two tools of an MCP server, as processes that say "ready", then sleep
    "sleep": "import time; print('ready', flush=True); time.sleep(30)",
    "stubborn": (  # one that ignores its cancel
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(30)"
    ),
}
processes: list[trio.Process] = []
outcomes: dict[str, str] = {}


async def call_tool(
    name: str, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    command = [sys.executable, "-c", TOOLS[name]]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    processes.append(process)
    assert process.stdout is not None
    try:
        await process.stdout.receive_some()  # "ready"
        print(f"tool {name}: running")
        task_status.started()
        await process.wait()  # the tool's answer
    finally:
        with trio.move_on_after(AGENT_CANCEL_TIMEOUT, shield=True):
            process.terminate()  # the cancel
            await process.wait()
        if process.returncode is None:
            process.kill()
            with trio.move_on_after(5, shield=True):  # a guard: SIGKILL is never ignored
                await process.wait()
            outcomes[name] = "ignored its cancel, killed at the budget"
        else:
            outcomes[name] = "stopped by its cancel"
        with trio.CancelScope(shield=True):
            await process.stdout.aclose()


async def agent(running: trio.Event) -> None:
    print("agent: the model calls sleep and stubborn")
    async with trio.open_nursery() as nursery:  # the run's nursery: the calls are its children
        await nursery.start(call_tool, "sleep")
        await nursery.start(call_tool, "stubborn")
        running.set()
    print("agent: the model answers")  # the second step: never reached here


async def stream(scope: trio.CancelScope, running: trio.Event, done: trio.Event) -> None:
    with scope:  # the stream's cancel scope: the whole run is inside it
        try:
            await agent(running)
        finally:
            done.set()


def left() -> int:
    return sum(process.returncode is None for process in processes)


async def main() -> None:
    scope, running, done = trio.CancelScope(), trio.Event(), trio.Event()
    async with trio.open_nursery() as server:
        server.start_soon(stream, scope, running, done)
        with trio.fail_after(20):  # a guard: the tools must start
            await running.wait()
        print("B arrives: A's scope cancelled")
        scope.cancel()
        with trio.move_on_after(PREV_STREAM_TIMEOUT):
            await done.wait()
        print(f"A joined within {PREV_STREAM_TIMEOUT:g} s: {done.is_set()}")
        for name in TOOLS:
            print(f"tool {name}: {outcomes.get(name, 'still running')}")
        print(f"tool processes still running: {left()}")
        print("B starts")


trio.run(main)

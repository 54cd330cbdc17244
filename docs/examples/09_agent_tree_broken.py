"""Step 9, broken: the agent as a loose asyncio task, cancelled with a bare join.

The shape of the asyncio server this project started from: the stream relays what
its ``agent_task`` produces, and its ``finally`` cancels the task and waits for it
at most 0.5 s, swallowing whatever happens. The tool here is a real process (it
stands for an MCP server's ``sleep`` tool). Cancelling the task raises one
``CancelledError`` at its ``await``; nothing ties the process to the task, so the
process runs on after the answer has ended.
"""

import asyncio
import contextlib
import sys

SLEEP_TOOL = [sys.executable, "-c", "import time; time.sleep(30)"]
processes: list[asyncio.subprocess.Process] = []


async def call_tool(name: str, running: asyncio.Event) -> str:
    process = await asyncio.create_subprocess_exec(*SLEEP_TOOL)
    processes.append(process)
    print(f"tool {name}: running")
    running.set()
    await process.wait()  # the tool's answer
    return "slept"


async def agent(chunks: asyncio.Queue[str | None], running: asyncio.Event) -> None:
    print("agent: the model calls sleep")
    result = await call_tool("sleep", running)
    await chunks.put(f"Done: {result}.")  # the model's second step
    await chunks.put(None)


async def stream(running: asyncio.Event) -> None:
    chunks: asyncio.Queue[str | None] = asyncio.Queue()
    agent_task = asyncio.create_task(agent(chunks, running))
    try:
        while (chunk := await chunks.get()) is not None:
            print(f"client got: {chunk}")
    finally:
        agent_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(agent_task, 0.5)  # "agent task cancel timeout"
        print(f"stream: A's answer ended (agent_task done: {agent_task.done()})")


def left() -> int:
    return sum(process.returncode is None for process in processes)


async def main() -> None:
    running = asyncio.Event()
    a = asyncio.create_task(stream(running))
    async with asyncio.timeout(20):  # a guard: the tool must start
        await running.wait()
    print("B arrives: A's stream cancelled")
    a.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await a
    print("B starts")
    print(f"tool processes still running: {left()}")
    await asyncio.sleep(1)
    print(f"1 s later, still running: {left()}")
    print("-- the script kills them by hand, so that nothing is left behind")
    for process in processes:
        if process.returncode is None:
            process.kill()
            async with asyncio.timeout(10):
                await process.wait()


asyncio.run(main())

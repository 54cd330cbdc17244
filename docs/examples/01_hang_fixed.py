"""Step 1, fixed (still asyncio): tell the thread, and wait for the thread, not the task.

The stream passes a flag to its thread, sets it when it is cancelled, and waits for
the thread to return before its task ends. Now "A is joined" means A's thread is
gone, and B gets the pool's one thread at once.
"""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

reading: set[str] = set()


def read_model(name: str, tokens: int, stop: threading.Event) -> str:
    """A blocking upstream read: one token every 50 ms, polling the flag between tokens."""
    reading.add(name)
    try:
        for _ in range(tokens):
            if stop.wait(0.05):
                return f"{name}: saw the flag and returned"
        return f"{name}: answered {tokens} tokens"
    finally:
        reading.discard(name)


async def stream(name: str, tokens: int) -> str:
    stop = threading.Event()
    thread = asyncio.ensure_future(asyncio.to_thread(read_model, name, tokens, stop))
    try:
        return await asyncio.shield(thread)
    except asyncio.CancelledError:
        stop.set()
        print(await thread)  # the thread's own answer, once it has returned
        raise


async def main() -> None:
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))
    a = asyncio.create_task(stream("A", 600))  # a 30 s essay
    await asyncio.sleep(0.2)

    print("B arrives: cancel A's task, then wait for it (2 s budget)")
    a.cancel()
    try:
        await asyncio.wait_for(a, timeout=2.0)
    except asyncio.CancelledError:
        print("A's task: cancelled, after its thread returned")
    print(f"threads still reading the model: {sorted(reading)}")

    b = asyncio.create_task(stream("B", 4))
    done, _ = await asyncio.wait({b}, timeout=1.0)
    print(b.result() if done else "B: still stuck after 1 s")


asyncio.run(main())

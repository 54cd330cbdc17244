"""Step 1, broken: the original notes' design. B cancels A, waits for it, and still hangs.

A reads its model in a worker thread (``asyncio.to_thread``). Cancelling A's task
does not stop that thread: the pool (one thread here, six in the baseline) stays
full and B never gets a thread. A guard gives up after 1 s so the script ends.
"""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

reading: set[str] = set()  # streams whose thread is still reading the model
guard = threading.Event()  # this script's way out; a real upstream read has none


def read_model(name: str, tokens: int) -> str:
    """A blocking upstream read: one token every 50 ms. It polls nothing."""
    reading.add(name)
    try:
        for _ in range(tokens):
            time.sleep(0.05)
            if name == "A" and guard.is_set():
                return f"{name}: freed by the guard"
        return f"{name}: answered {tokens} tokens"
    finally:
        reading.discard(name)


async def main() -> None:
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))
    a = asyncio.create_task(asyncio.to_thread(read_model, "A", 600))  # a 30 s essay
    await asyncio.sleep(0.2)

    print("B arrives: cancel A's task, then wait for it (2 s budget)")
    a.cancel()
    try:
        await asyncio.wait_for(a, timeout=2.0)
    except asyncio.CancelledError:
        print("A's task: cancelled at once")
    print(f"threads still reading the model: {sorted(reading)}")

    b = asyncio.create_task(asyncio.to_thread(read_model, "B", 4))
    done, _ = await asyncio.wait({b}, timeout=1.0)
    if not done:
        print("B: still stuck after 1 s, waiting for a free worker thread")
        print("guard: freeing A's thread so this script can end")
    guard.set()
    print(await b)


asyncio.run(main())

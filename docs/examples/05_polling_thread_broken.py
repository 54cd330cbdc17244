"""Step 5, broken: trio waits for the thread, and the thread never asks.

``trio.to_thread.run_sync`` does not abandon its thread when the caller is
cancelled: it waits for it (good: no leaked thread holding a connection). But this
thread reads all 20 tokens (1 s) without ever checking, so a cancel 0.2 s in only
takes effect when the whole answer is done.
"""

import time

import trio

TOKENS = 20


def read_model() -> int:
    read = 0
    for _ in range(TOKENS):
        time.sleep(0.05)  # one token from the model
        read += 1
    return read


async def main() -> None:
    start = trio.current_time()
    with trio.move_on_after(0.2) as scope:  # B arrives 0.2 s in
        read = await trio.to_thread.run_sync(read_model)
    took = trio.current_time() - start
    print(f"cancelled: {scope.cancelled_caught}")
    print(f"the thread read {read} of {TOKENS} tokens")
    print(f"the cancel took effect after the whole answer (>= 1 s): {took >= 1.0}")


trio.run(main)

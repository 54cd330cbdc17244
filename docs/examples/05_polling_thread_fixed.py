"""Step 5, fixed: the thread polls ``trio.from_thread.check_cancelled()`` between tokens.

``check_cancelled()`` raises ``trio.Cancelled`` in the thread once the task that
started it is cancelled. The thread stops within one token, ``to_thread.run_sync``
returns, and the cancel scope catches the ``Cancelled``.
"""

import time

import trio

TOKENS = 20
read = 0


def read_model() -> None:
    global read
    for _ in range(TOKENS):
        trio.from_thread.check_cancelled()  # the poll between tokens
        time.sleep(0.05)  # one token from the model
        read += 1


async def main() -> None:
    start = trio.current_time()
    with trio.move_on_after(0.2) as scope:  # B arrives 0.2 s in
        await trio.to_thread.run_sync(read_model)
    took = trio.current_time() - start
    print(f"cancelled: {scope.cancelled_caught}")
    print(f"the thread stopped early: {read < TOKENS}")
    print(f"the cancel took effect long before the whole answer (1 s): {took < 0.6}")


trio.run(main)

"""Step 2, fixed: trio's cancel scope is a state, not an event (level-triggered).

The same helper swallows the first ``Cancelled``. It does not matter: the scope is
still cancelled, so its very next checkpoint (the retry) raises again, and so does
every later one, until the code leaves the scope. The clock is trio's MockClock, so
the times are exact.
"""

import trio
import trio.testing

tokens: list[str] = []


async def read_token() -> str:
    try:
        await trio.sleep(0.05)  # waiting for the model
    except trio.Cancelled:  # "a glitch: retry once" (never do this; see below)
        await trio.sleep(0.05)  # raises Cancelled again: the scope is still cancelled
    return "tok"


async def stream() -> None:
    while True:
        tokens.append(await read_token())


async def main() -> None:
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def run_a() -> None:
            with scope:
                await stream()
            print(f"t={trio.current_time():.2f} A left its scope; caught: {scope.cancelled_caught}")

        nursery.start_soon(run_a)
        await trio.sleep(0.32)
        before = len(tokens)
        scope.cancel()
        print(f"t={trio.current_time():.2f} A cancelled after {before} tokens")
    print(f"tokens after the cancel: {len(tokens) - before}")


trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

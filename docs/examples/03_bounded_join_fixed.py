"""Step 3, fixed: cancel A, then join it within a budget before B starts.

``move_on_after(budget)`` bounds the join: a clean A (0.1 s of cleanup) is waited
for; an A that is stuck (5 s of cleanup) costs B at most the budget, then B starts
anyway and A is a zombie that may no longer emit anything.
"""

import trio
import trio.testing

BUDGET = 2.0
live: set[str] = set()


def say(text: str) -> None:
    print(f"t={trio.current_time():.2f} {text} (live: {sorted(live)})")


async def stream(name: str, scope: trio.CancelScope, cleanup: float, done: trio.Event) -> None:
    with scope:
        live.add(name)
        try:
            await trio.sleep_forever()  # streaming
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(cleanup)  # closing its upstream
            live.discard(name)
            done.set()


async def supersede(nursery: trio.Nursery, old: str, cleanup: float, new: str) -> None:
    scope, done = trio.CancelScope(), trio.Event()
    nursery.start_soon(stream, old, scope, cleanup, done)
    await trio.sleep(0.5)
    scope.cancel()
    say(f"{new} arrives: {old} cancelled, joining it (budget {BUDGET:g} s)")
    started = trio.current_time()
    with trio.move_on_after(BUDGET):
        await done.wait()
    waited = trio.current_time() - started
    live.add(new)  # the new stream starts (and, for this script, ends at once)
    if done.is_set():
        say(f"prev_stream_finished_cleanly after {waited:.2f} s; {new} starts")
    else:
        live.discard(old)  # a zombie: it still runs, but it no longer counts
        say(f"prev_stream_timeout_on_cancel after {waited:.2f} s; {new} starts anyway")
    live.discard(new)


async def main() -> None:
    async with trio.open_nursery() as nursery:
        print("-- A cleans up in 0.1 s")
        await supersede(nursery, "A", 0.1, "B")
    async with trio.open_nursery() as nursery:
        print("-- C is stuck in its cleanup for 5 s")
        await supersede(nursery, "C", 5.0, "D")
    say("C's task has ended too")


trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

"""Step 3, broken: cancel A, start B at once. For a moment both streams are live.

Cancelling a scope only *asks* A to stop. A still has cleanup to do (here 0.1 s to
close its upstream), and during that time B is already talking to the model.
"""

import trio
import trio.testing

live: set[str] = set()


def say(text: str) -> None:
    print(f"t={trio.current_time():.2f} {text} (live: {sorted(live)})")


async def stream(name: str, scope: trio.CancelScope, cleanup_seconds: float) -> None:
    with scope:
        live.add(name)
        try:
            await trio.sleep_forever()  # streaming
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(cleanup_seconds)  # closing its upstream
            live.discard(name)
            say(f"{name} ended")


async def main() -> None:
    async with trio.open_nursery() as nursery:
        a = trio.CancelScope()
        nursery.start_soon(stream, "A", a, 0.1)
        await trio.sleep(0.5)
        a.cancel()
        say("B arrives: A cancelled")
        b = trio.CancelScope()
        nursery.start_soon(stream, "B", b, 0.0)
        await trio.sleep(0.05)
        say("B is streaming")
        await trio.sleep(1)
        b.cancel()


trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

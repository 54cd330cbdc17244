"""Step 4, broken: every request cancels what is live and joins it. B and C both start.

A takes 1 s to die. B arrives, cancels A and waits. C arrives while B is still
waiting: the live stream is still A, so C cancels A again and waits too. When A
ends, both waiters start: two live streams in one session, the very thing the
join was meant to prevent.
"""

import trio
import trio.testing

live: dict[str, tuple[trio.CancelScope, trio.Event]] = {}  # the session's live streams


def say(text: str) -> None:
    print(f"t={trio.current_time():.2f} {text}")


async def stream(name: str, scope: trio.CancelScope, done: trio.Event) -> None:
    with scope:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(1.0)  # A is slow to close its upstream
            del live[name]
            done.set()


async def request(nursery: trio.Nursery, name: str) -> None:
    if live:
        old = next(iter(live))
        scope, done = live[old]
        scope.cancel()
        say(f"{name} arrives: {old} cancelled, {name} waits for it")
        with trio.move_on_after(2.0):
            await done.wait()
    live[name] = (trio.CancelScope(), trio.Event())
    nursery.start_soon(stream, name, *live[name])


async def main() -> None:
    async with trio.open_nursery() as nursery:
        await request(nursery, "A")
        await trio.sleep(1.0)
        nursery.start_soon(request, nursery, "B")
        await trio.sleep(0.2)
        nursery.start_soon(request, nursery, "C")
        await trio.sleep(1.3)
        say(f"live streams: {sorted(live)}")
        nursery.cancel_scope.cancel()


trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

"""Step 4, fixed: one waiting slot per session. A newer request takes it; latest wins.

The decision is made *synchronously* when a request arrives (no ``await`` between
arrival and decision), so arrival order is decision order and no lock is needed.
B, still waiting when C arrives, is superseded before it ever reaches the model.
This is the shape of ``jarvis_trio/rules.py`` in a dozen lines.
"""

import trio
import trio.testing


def say(text: str) -> None:
    print(f"t={trio.current_time():.2f} {text}")


class Session:
    def __init__(self) -> None:
        self.live: str | None = None
        self.dying: str | None = None
        self.waiter: str | None = None
        self.scopes: dict[str, trio.CancelScope] = {}
        self.turn: dict[str, trio.Event] = {}

    def submit(self, name: str) -> None:
        """Arrival: decide now, with no await in between."""
        self.turn[name] = trio.Event()
        if self.waiter is not None:
            say(f"{name} arrives: {self.waiter} superseded before it started")
            self.turn[self.waiter].set()  # wakes it as rejected
        if self.live is not None:
            self.scopes[self.live].cancel()
            say(f"{name} arrives: {self.live} cancelled, {name} waits for it")
            self.live, self.dying = None, self.live
        if self.dying is None:
            self.live, self.waiter = name, None
            self.turn[name].set()
        else:
            self.waiter = name

    def finished(self, name: str) -> None:
        if name == self.dying:
            self.dying = None
            if self.waiter is not None:
                say(f"{name} ended: {self.waiter} starts")
                self.live, self.waiter = self.waiter, None
                self.turn[self.live].set()


async def stream(session: Session, name: str) -> None:
    with session.scopes.setdefault(name, trio.CancelScope()):
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(1.0)  # A is slow to close its upstream
            session.finished(name)


async def request(session: Session, nursery: trio.Nursery, name: str) -> None:
    session.submit(name)
    await session.turn[name].wait()
    if session.live == name:
        nursery.start_soon(stream, session, name)
    else:
        say(f"{name}: gets its 'superseded' chunk and [DONE], never reaches the model")


async def main() -> None:
    session = Session()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(request, session, nursery, "A")
        await trio.sleep(1.0)
        nursery.start_soon(request, session, nursery, "B")
        await trio.sleep(0.2)
        nursery.start_soon(request, session, nursery, "C")
        await trio.sleep(1.3)
        say(f"live streams: {[session.live]}")
        nursery.cancel_scope.cancel()


trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

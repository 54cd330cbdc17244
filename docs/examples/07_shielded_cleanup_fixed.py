"""Step 7, fixed: shield the cleanup, and bound it.

``trio.move_on_after(T, shield=True)`` lets the ``finally`` await again, but for at
most T seconds: a client that reads nothing cannot keep a cancelled stream alive.
First a client that reads, then one that has stopped reading.
"""

import trio
import trio.testing


async def stream(send: trio.MemorySendChannel[str], scope: trio.CancelScope) -> None:
    with scope, send:
        try:
            for i in range(100):
                await send.send(f"token {i}")
                await trio.sleep(0.1)
        finally:
            with trio.move_on_after(0.5, shield=True) as cleanup:
                await send.send('finish_reason="superseded"')
                await send.send("[DONE]")
            if cleanup.cancelled_caught:
                print(f"t={trio.current_time():.2f} stream: cleanup gave up after 0.5 s")


async def client(receive: trio.MemoryReceiveChannel[str], reads: int) -> None:
    async for chunk in receive:
        print(f"client got: {chunk}")
        reads -= 1
        if reads == 0:
            print("client: stops reading")
            await trio.sleep_forever()


async def run(reads: int) -> None:
    send, receive = trio.open_memory_channel[str](0)
    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client, receive, reads)
        nursery.start_soon(stream, send, scope)
        await trio.sleep(0.25)
        print(f"t={trio.current_time():.2f} B arrived: A cancelled")
        scope.cancel()
        await trio.sleep(1)
        nursery.cancel_scope.cancel()


async def main() -> None:
    print("-- a client that reads")
    await run(reads=100)
    print("-- a client that stopped reading")
    await run(reads=2)


trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

"""Step 7, broken: cleanup that awaits, inside a cancelled scope, never happens.

A's ``finally`` wants to send the client its last chunk and ``[DONE]``. But the
scope is cancelled (level-triggered, step 2), so the first ``await`` in the
``finally`` raises ``Cancelled`` too: the client never learns how its stream ended.
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
            await send.send('finish_reason="superseded"')  # raises Cancelled at once
            await send.send("[DONE]")


async def client(receive: trio.MemoryReceiveChannel[str]) -> None:
    async for chunk in receive:
        print(f"client got: {chunk}")
    print("client: the stream closed")


async def main() -> None:
    send, receive = trio.open_memory_channel[str](0)
    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client, receive)
        nursery.start_soon(stream, send, scope)
        await trio.sleep(0.25)
        print(f"t={trio.current_time():.2f} B arrived: A cancelled")
        scope.cancel()


trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

"""Step 2, broken: asyncio's cancel is one exception, delivered once (edge-triggered).

A helper deep in A's stream treats every failure as "retry once", and it catches
the CancelledError too. The one cancel is used up, and A streams on as if nothing
had happened.
"""

import asyncio

tokens: list[str] = []
guard = False  # this script's way out


async def read_token() -> str:
    try:
        await asyncio.sleep(0.05)  # waiting for the model
    except asyncio.CancelledError:  # "a glitch: retry once"
        await asyncio.sleep(0.05)
    return "tok"


async def stream() -> None:
    while not guard:
        tokens.append(await read_token())


async def main() -> None:
    global guard
    a = asyncio.create_task(stream())
    await asyncio.sleep(0.32)
    before = len(tokens)
    a.cancel()
    print("A cancelled")
    done, _ = await asyncio.wait({a}, timeout=0.5)
    if not done:
        print(f"A is still streaming 0.5 s later: {len(tokens) > before}")
    guard = True
    await a
    print(f"A ended only when the guard told it to; cancelled: {a.cancelled()}")


asyncio.run(main())

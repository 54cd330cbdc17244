"""The cyclic garbage collector, set for a server whose streams make objects all the time.

Measured (docs/benchmarks.md, "Pauses of the cyclic garbage collector"):

- What the imports and the app make at startup (~77,000 objects) lives as long as the
  process. Frozen (``gc.freeze``), a full collection no longer walks it: that walk was a
  pause of 33 ms on a 2-core machine.
- At CPython's defaults (700, 10, 10), with 100 streams at 50 tokens/s, the young
  collections promoted the objects of the writes in flight (coroutines, h11 and hypercorn
  events) to the oldest generation, where they died soon after, and a full collection
  followed every 3 s or so: about 50 ms with every stream standing still (7 in 21 s).
- Fewer young collections (every 10,000 objects) stopped those, but each young
  collection then took 4 ms (p50), up to 15 ms, at a handful of streams: pauses that a
  5 ms cancellation target sees.
- Young and middle collections as CPython makes them (0.35 and 0.85 ms p50, 2 and 5 ms at
  most, at 100 streams), and a full one only after 1,000 middle ones instead of 10: none
  in 14 s at 100 streams (about 4 minutes between two at that pace), and the collector's
  CPU about 26 ms a second instead of 46.

It holds because what a request made is freed when it ends, not left in reference cycles
for a full collection to find: three such cycles held every request's messages (the
exchange's exit callbacks, a finished thread's cancel token, httpx's response and its
stream); they are broken where they form.
"""

from __future__ import annotations

import gc

# Middle-generation collections between two full ones; CPython's default is 10.
FULL_AFTER = 1000


def settle_after_startup() -> None:
    """Collect and freeze what startup made, and space full collections out. Once,
    after the app is built and before it serves."""
    gc.collect()  # nothing that is garbage already is frozen with the rest
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_AFTER)

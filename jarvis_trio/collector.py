"""The cyclic garbage collector, set for a server whose streams make objects all the time.

Two measured costs (docs/benchmarks.md, "Pauses of the cyclic garbage collector"):

- What the imports and the app make at startup (~77,000 objects) lives as long as the
  process. Frozen (``gc.freeze``), a full collection no longer walks it: that walk was a
  pause of 33 ms on a 2-core machine.
- At CPython's default, a young collection runs every 700 container objects made (net).
  With 100 streams at 50 tokens/s, each one promoted the objects of the writes in flight
  (coroutines, h11 and hypercorn events) to the older generations, where they died soon
  after, and their count started a full collection every 3 s or so: about 50 ms with
  every stream standing still, and 4-5 % of a core for the collector in all. From 10,000
  on, a young collection comes every 7 s or so (about 12 ms), and the older ones rarely:
  the collector's CPU fell from 961 ms in 21 s to about 25 ms in 15 s.

The threshold only holds if what a request made is freed when it ends, not left in
reference cycles for a collection to find: three such cycles held every request's
messages (the exchange's exit callbacks, a finished thread's cancel token, httpx's
response and its stream). They are broken where they form; 60 requests of 1 MB then left
1.5 MiB behind, against 25 MiB at CPython's default before.
"""

from __future__ import annotations

import gc

# Container objects made (net) between two young collections; CPython's default is 700.
YOUNG_THRESHOLD = 10_000


def settle_after_startup() -> None:
    """Collect and freeze what startup made, and space young collections out. Once,
    after the app is built and before it serves."""
    gc.collect()  # nothing that is garbage already is frozen with the rest
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)

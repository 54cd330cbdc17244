"""The stack's own floor under the TTFT overhead: minimal apps on the same server.

``python -m benchmarks.floor [--rounds N]`` starts the Ollama simulator and a gateway in
front of it, as the TTFT phase does, and beside them two minimal apps served by
hypercorn's trio worker (what jarvis-trio runs on), each in a process of its own:

- ``quart``: a quart-trio route that reads the JSON body and streams two SSE events;
- ``raw``: the same as a bare ASGI app, no framework.

Rounds alternate the four paths (the simulator called directly, the gateway, the two
apps), each through a kept-alive client of its own, and time the first event as the
TTFT phase does (the simulator sends its first token 1 ms after the request; the apps
answer at once).

What it tells: the gateway's TTFT overhead (gateway minus direct) is a second HTTP hop
plus the gateway's own work. A minimal app's time to its first event is what such a hop
costs on this server with no work at all, the client's own part included, which the
gateway's upstream call replaces with its own. docs/benchmarks.md quotes a run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from typing import Any

import httpx
import hypercorn.trio
import trio
from hypercorn.config import Config
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope
from quart import Response, request
from quart_trio import QuartTrio

from benchmarks.handoff import is_content_chunk
from benchmarks.stack import open_stack
from benchmarks.stats import percentile
from benchmarks.steps import positive
from benchmarks.ttft import ANSWER, time_first
from jarvis_trio.testing import spawn

READY = r"floor_app listening url=(\S+)"
PATH = "/first"
WARMUP = 20  # rounds not counted: connections, caches and imports settle first


def _events(body: bytes) -> tuple[bytes, bytes]:
    """The two SSE events both apps send: the request's ``m``, then the end."""
    return b"data: " + json.dumps(json.loads(body)["m"]).encode() + b"\n\n", b"data: [DONE]\n\n"


quart_app = QuartTrio(__name__)


@quart_app.post(PATH)
async def first() -> Response:
    body = await request.get_data(cache=False, as_text=False, parse_form_data=False)

    async def events() -> AsyncIterator[bytes]:
        for event in _events(body):
            yield event

    return Response(events(), content_type="text/event-stream")


async def raw_app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """The same route as a bare ASGI app (and the lifespan hypercorn asks for)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return  # the client left before its body was whole
        body += message["body"]
        more = message["more_body"]
    head, end = _events(body)
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": head, "more_body": True})
    await send({"type": "http.response.body", "body": end, "more_body": False})


APPS: dict[str, ASGIFramework] = {"quart": quart_app, "raw": raw_app}


async def _serve(which: str) -> None:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn.trio.serve, APPS[which], config))
        print(f"floor_app listening url={binds[0]}", file=sys.stderr, flush=True)


def _app_argv(which: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.floor", "--serve", which]


def _first_event(
    client: httpx.Client, path: str, body: dict[str, Any], is_first: Callable[[str], bool]
) -> float | None:
    """Milliseconds to the first line ``is_first`` accepts; None if the request failed."""
    t0 = time.monotonic()
    try:
        with client.stream("POST", path, json=body) as response:
            return time_first(response.iter_lines(), t0, is_first)
    except httpx.HTTPError:
        return None


def _is_app_event(line: str) -> bool:
    return line.startswith('data: "')


@contextmanager
def _paths() -> Iterator[dict[str, Callable[[int], float | None]]]:
    """Each path's one round (its argument: the round, for a prompt of its own)."""
    with ExitStack() as stack:
        gateway_stack = stack.enter_context(open_stack("trio"))
        urls = {
            "direct": gateway_stack.sim_url,
            "gateway": gateway_stack.url,
            **{name: stack.enter_context(spawn(_app_argv(name), READY)).url for name in APPS},
        }
        clients = {
            name: stack.enter_context(httpx.Client(base_url=url)) for name, url in urls.items()
        }

        def direct(i: int) -> float | None:
            body = {"model": ANSWER, "messages": [{"role": "user", "content": f"direct {i}"}]}
            return _first_event(clients["direct"], "/api/chat", body, is_content_chunk)

        def via_gateway(i: int) -> float | None:
            body = {
                "model": ANSWER,
                "messages": [{"role": "user", "content": f"gateway {i}"}],
                "stream": True,
            }
            return _first_event(clients["gateway"], "/v1/chat/completions", body, is_content_chunk)

        def app(name: str, i: int) -> float | None:
            body = {"m": "hi", "messages": [{"role": "user", "content": f"{name} {i}"}]}
            return _first_event(clients[name], PATH, body, _is_app_event)

        paths: dict[str, Callable[[int], float | None]] = {"direct": direct, "gateway": via_gateway}
        paths.update({name: partial(app, name) for name in APPS})
        yield paths


def round_order(names: list[str], i: int) -> list[str]:
    """Round ``i``'s order: rotated each round, so no path always follows the same one
    (a gateway stream's ending still running in its threads, say)."""
    k = i % len(names)
    return names[k:] + names[:k]


def measure(rounds: int) -> dict[str, list[float | None]]:
    """Milliseconds to the first event, per path, rounds after the warm-up."""
    with _paths() as paths:
        results: dict[str, list[float | None]] = {name: [] for name in paths}
        for i in range(WARMUP + rounds):
            for name in round_order(list(paths), i):
                value = paths[name](i)
                if i >= WARMUP:
                    results[name].append(value)
    return results


LABELS = {
    "direct": "the simulator, called directly",
    "gateway": "through the gateway",
    "quart": "a minimal quart-trio app on hypercorn",
    "raw": "a minimal ASGI app on hypercorn",
}


def report(results: dict[str, list[float | None]]) -> str:
    """A Markdown table: p50 and p90 per path, and the gateway's overhead."""
    lines = ["| path | first event p50 (ms) | p90 (ms) | missing |", "|---|---|---|---|"]
    p50: dict[str, float] = {}
    for name, values in results.items():
        got = [v for v in values if v is not None]
        missing = len(values) - len(got)
        if not got:
            lines.append(f"| {LABELS.get(name, name)} | none | none | {missing} |")
            continue
        p50[name] = statistics.median(got)
        p90 = percentile(got, 0.9)
        lines.append(f"| {LABELS.get(name, name)} | {p50[name]:.2f} | {p90:.2f} | {missing} |")
    if "gateway" in p50 and "direct" in p50:
        overhead = p50["gateway"] - p50["direct"]
        lines.append("")
        lines.append(f"TTFT overhead (gateway p50 - direct p50): {overhead:.2f} ms")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds",
        type=positive,
        default=200,
        help=f"rounds counted (after {WARMUP} that are not)",
    )
    parser.add_argument("--serve", choices=sorted(APPS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        trio.run(_serve, args.serve)
        return 0
    print(report(measure(args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What holding N streams costs the gateway: RSS and threads, on the embedded model.

``python -m benchmarks.hold 1000`` starts ``jarvis-trio serve --backend sim`` at a pace so
slow that no stream gets a second token while it is measured (each holds its reader
thread, sleeping on its cancel token), opens N streaming requests a few milliseconds
apart, waits until each has its response headers and role chunk, and reports the
server's RSS and threads before and while it holds them. ``--env NAME=VALUE`` (repeatable)
goes to the server, e.g. ``--env JARVIS_THREAD_STACK_KIB=256``. ``--upstream`` puts the
Ollama simulator behind it instead (``--backend ollama``, a token every 5 s per stream), so
each held stream also holds an upstream connection read by httpx.

Smaller and quicker than the memory phase of :mod:`benchmarks.run` (no upstream process,
no baseline): for sizing ``JARVIS_MAX_STREAMS`` and checking what a setting saves.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from urllib.parse import urlsplit

import psutil
import trio

from jarvis_trio.testing import spawn


def _body(model: str) -> bytes:
    message = {"role": "user", "content": "hold"}
    return json.dumps({"model": model, "stream": True, "messages": [message]}).encode()


BODY = _body("jarvis-sim")


async def _hold_one(
    host: str, port: int, opened: list[int], all_in: trio.Event, n: int, done: trio.Event
) -> None:
    stream = await trio.open_tcp_stream(host, port)
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    async with stream:
        await stream.send_all(request)
        seen = b""
        while b"data:" not in seen:
            data = await stream.receive_some(65536)
            if not data:
                return
            seen += data
        opened[0 if b" 200 " in seen.split(b"\r\n", 1)[0] else 1] += 1
        if sum(opened) == n:
            all_in.set()
        await done.wait()


async def _hold(url: str, n: int, interval: float, sample: trio.Event, done: trio.Event) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    opened = [0, 0]
    all_in = trio.Event()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(_hold_one, host, port, opened, all_in, n, done)
            await trio.sleep(interval)
        with trio.move_on_after(60):
            await all_in.wait()
        print(f"opened: {opened[0]} streams, {opened[1]} refused", file=sys.stderr)
        await trio.sleep(1.0)  # let the last threads settle
        sample.set()
        await done.wait()
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("streams", type=int, nargs="?", default=1000)
    parser.add_argument("--interval", type=float, default=0.01, help="s between opens")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    parser.add_argument("--upstream", action="store_true", help="the Ollama simulator behind")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        backend = ["--backend", "sim"]
        if args.upstream:
            global BODY
            BODY = _body("llama3.2:1b+slow=5+tokens=1000")
            sim_argv = [sys.executable, "-m", "jarvis_trio", "sim-ollama", "--port", "0"]
            sim = stack.enter_context(spawn(sim_argv, r"ollama_sim listening url=(\S+)"))
            backend = ["--backend", "ollama", "--ollama-url", sim.url]
        return _measure(args, backend)


def _measure(args: argparse.Namespace, backend: list[str]) -> int:
    env = {
        "JARVIS_SIM_TOKENS_PER_SECOND": "0.001",
        "JARVIS_THREAD_LIMIT": str(args.streams + 64),
        "JARVIS_MAX_STREAMS": str(args.streams + 64),
        "JARVIS_LOG_LEVEL": "warning",
    }
    env.update(item.split("=", 1) for item in args.env)
    argv_ = [sys.executable, "-m", "jarvis_trio", "serve", *backend, "--port", "0"]
    env["JARVIS_LOG_LEVEL"] = "info"  # server_listening names the URL
    with spawn(argv_, r"server_listening url=(\S+)", env=env, stop_grace=5.0) as server:
        proc = psutil.Process(server.process.pid)
        time.sleep(0.5)
        idle, idle_threads = proc.memory_info().rss, proc.num_threads()
        sample, done = trio.Event(), trio.Event()
        result: dict[str, float] = {}

        async def run() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_hold, server.url, args.streams, args.interval, sample, done)
                await sample.wait()
                info = proc.memory_info()
                result.update(rss=info.rss, vms=info.vms, threads=proc.num_threads())
                done.set()

        trio.run(run)
    per = (result["rss"] - idle) / args.streams / 1024
    print(
        json.dumps(
            {
                "streams": args.streams,
                "backend": backend[1],
                "env": args.env,
                "idle_rss_mib": round(idle / 2**20, 1),
                "held_rss_mib": round(result["rss"] / 2**20, 1),
                "held_vms_mib": round(result["vms"] / 2**20, 1),
                "kib_per_stream": round(per, 1),
                "threads": f"{idle_threads} -> {int(result['threads'])}",
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

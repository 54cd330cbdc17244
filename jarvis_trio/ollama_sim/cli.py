"""``jarvis-trio sim-ollama`` and ``python -m jarvis_trio.ollama_sim``: serve until a signal."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Awaitable, Callable
from functools import partial

import trio

from jarvis_trio.config import is_loopback
from jarvis_trio.ollama_sim.faults import MAX_ANSWER_TOKENS
from jarvis_trio.ollama_sim.server import OllamaSim, serve_ollama_sim

DEFAULT_PORT = 11435


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ollama-sim", description="A fault-injecting Ollama server for tests."
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any)")
    parser.add_argument("--tokens-per-second", type=float, default=50.0, help="answer pace")
    parser.add_argument("--answer-tokens", type=int, default=40, help="answer length")
    return parser


async def _serve_until_signal(args: argparse.Namespace) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            start: Callable[..., Awaitable[None]] = partial(
                serve_ollama_sim,
                args.host,
                args.port,
                tokens_per_second=args.tokens_per_second,
                answer_tokens=args.answer_tokens,
            )
            sim: OllamaSim = await nursery.start(start)
            print(f"ollama_sim listening url={sim.url}", file=sys.stderr, flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    """Serve on ``--host``/``--port`` until SIGINT or SIGTERM."""
    args = build_parser().parse_args(argv)
    if not is_loopback(args.host):
        print(f"ollama_sim: only loopback addresses, not {args.host!r}", file=sys.stderr)
        return 2
    if not args.tokens_per_second > 0 or not 0 <= args.answer_tokens <= MAX_ANSWER_TOKENS:
        print(
            f"ollama_sim: --tokens-per-second must be > 0, --answer-tokens 0..{MAX_ANSWER_TOKENS}",
            file=sys.stderr,
        )
        return 2
    try:
        trio.run(_serve_until_signal, args)
    except OSError as exc:
        print(f"ollama_sim: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a SIGINT before the signal receiver was in place
        pass
    return 0

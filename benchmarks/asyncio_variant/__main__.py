"""``python -m benchmarks.asyncio_variant``: the asyncio baseline, with ``serve``'s options.

Environment variables are read as ``jarvis-trio serve`` reads them
(:class:`jarvis_trio.config.Settings`: ``JARVIS_PORT``, ``JARVIS_OLLAMA_URL``,
``JARVIS_JOIN_BUDGET``, ...), and flags take precedence. ``--backend``
is ``sim`` (the default) or ``ollama``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from benchmarks.asyncio_variant.app import create_app
from benchmarks.asyncio_variant.backends import ThreadBackend
from benchmarks.asyncio_variant.backends.ollama import OllamaBackend
from benchmarks.asyncio_variant.backends.sim import SimBackend
from benchmarks.asyncio_variant.registry import StreamRegistry
from benchmarks.asyncio_variant.server import serve
from jarvis_trio import logs
from jarvis_trio.config import Settings, is_loopback

BACKENDS = ("sim", "ollama")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.asyncio_variant",
        description="The asyncio baseline of the benchmarks (FastAPI + uvicorn).",
    )
    parser.add_argument("--host", help="loopback address (env JARVIS_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (env JARVIS_PORT, default 8000; 0: any)")
    parser.add_argument(
        "--backend", choices=BACKENDS, help="model backend (env JARVIS_BACKEND, default sim)"
    )
    parser.add_argument("--ollama-url", help="Ollama's URL (env JARVIS_OLLAMA_URL or OLLAMA_HOST)")
    parser.add_argument("--default-model", help="model for requests that name none")
    parser.add_argument(
        "--sim-tokens-per-second",
        type=float,
        help="pace of the sim backend (env JARVIS_SIM_TOKENS_PER_SECOND, default 20)",
    )
    parser.add_argument(
        "--mcp-config", help="MCP servers for agent mode (env JARVIS_MCP_CONFIG; stdio only)"
    )
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", choices=["logfmt", "json"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"asyncio_variant: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    backend_name = settings.backend if settings.backend in BACKENDS else "sim"
    if "backend" not in overrides and settings.backend not in ("auto", *BACKENDS):
        print(f"asyncio_variant: no backend {settings.backend!r}", file=sys.stderr)
        return 2
    if not is_loopback(settings.host):
        print("asyncio_variant: it has no auth, so it only listens on loopback", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    backend: ThreadBackend
    if backend_name == "ollama":
        backend = OllamaBackend(
            settings.ollama_url,
            default_model=settings.default_model,
            connect_timeout=settings.upstream_connect_timeout,
        )
    else:
        backend = SimBackend(tokens_per_second=settings.sim_tokens_per_second)
    app = create_app(
        backend,
        registry=StreamRegistry(settings.join_budget),
        inactivity_seconds=settings.stream_inactivity_seconds,
        mcp_config=settings.mcp_config,
    )
    try:
        serve(
            app,
            settings.host,
            settings.port,
            backend=backend.name,
            lifespan=settings.mcp_config is not None,
        )
    finally:
        backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``jarvis-trio serve``: the server, in-process on hypercorn's trio worker."""

from __future__ import annotations

import argparse
import errno
import sys
import threading
from collections.abc import Sequence
from functools import partial
from typing import Any

import trio
from pydantic import ValidationError

from jarvis_trio import collector, logs, ollama_sim
from jarvis_trio.api import create_app
from jarvis_trio.config import Settings, is_loopback, settings_table
from jarvis_trio.server import bind_sockets, serve
from jarvis_trio.tools.config import McpConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jarvis-trio", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve the OpenAI-compatible API")
    run.add_argument("--host", help="address to listen on (env JARVIS_HOST, default 127.0.0.1)")
    run.add_argument("--port", type=int, help="port (env JARVIS_PORT, default 8000; 0: any)")
    run.add_argument(
        "--backend",
        choices=["auto", "sim", "ollama", "openai"],
        help="model backend (env JARVIS_BACKEND, default auto: Ollama if it answers, else sim)",
    )
    run.add_argument("--ollama-url", help="Ollama's URL (env JARVIS_OLLAMA_URL or OLLAMA_HOST)")
    run.add_argument(
        "--upstream-url", help="OpenAI-compatible base URL with /v1 (env JARVIS_UPSTREAM_URL)"
    )
    run.add_argument("--default-model", help="model for requests that name none")
    run.add_argument(
        "--mcp-config", help="JSON file naming the MCP servers (env JARVIS_MCP_CONFIG)"
    )
    run.add_argument(
        "--demo-tools",
        action="store_true",
        default=None,
        help="also run the demo MCP server (now, add, multiply, sleep; env JARVIS_DEMO_TOOLS)",
    )
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.add_argument("--log-format", choices=["logfmt", "json"])
    run.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        default=None,
        help="serve without API keys on a non-loopback address",
    )
    commands.add_parser("settings", help="print the configuration reference (markdown)")
    commands.add_parser(
        "sim-ollama",
        help="serve the fault-injecting Ollama simulator (see `sim-ollama --help`)",
        add_help=False,
    )
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """Environment first, flags on top."""
    overrides: dict[str, Any] = {
        key: value for key, value in vars(args).items() if key != "command" and value is not None
    }
    return Settings(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["sim-ollama"]:
        return ollama_sim.main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "settings":
        print(settings_table())
        return 0
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        print(f"jarvis-trio: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    open_to_network = not settings.api_keys and not is_loopback(settings.host)
    if open_to_network and not settings.allow_unauthenticated:
        print(
            f"jarvis-trio: refusing to listen on {settings.host} without API keys. "
            "Set JARVIS_API_KEYS, or pass --allow-unauthenticated.",
            file=sys.stderr,
        )
        return 2
    if settings.backend == "openai" and not settings.upstream_url:
        print("jarvis-trio: --backend openai needs --upstream-url", file=sys.stderr)
        return 2
    try:
        # Before the app starts (and logs server_ready): a busy port is one line.
        sockets = bind_sockets(settings.host, settings.port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"jarvis-trio: port {settings.port} is in use; use --port", file=sys.stderr)
        else:
            where = f"{settings.host}:{settings.port}"
            print(f"jarvis-trio: cannot listen on {where}: {exc.strerror}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    if settings.thread_stack_kib is not None:
        # Process-wide, for threads started from now on: trio's thread cache starts its
        # worker threads (threading.Thread, no size of its own) only once trio runs.
        threading.stack_size(settings.thread_stack_kib * 1024)
    try:
        app = create_app(settings)
    except McpConfigError as exc:
        for sock in sockets.insecure_sockets:
            sock.close()
        print(f"jarvis-trio: {exc}", file=sys.stderr)
        return 2
    collector.settle_after_startup()
    trio.run(
        partial(
            serve,
            app,
            settings.host,
            settings.port,
            sockets=sockets,
            shutdown_timeout=settings.shutdown_timeout,
            force_exit_after=settings.shutdown_timeout + 1.0,
        )
    )
    logs.event("shutdown_complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())

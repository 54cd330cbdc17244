"""One variant's stack as real processes: the Ollama simulator and a gateway in front of it.

``open_stack("trio" | "asyncio")`` starts a fresh ``jarvis-trio sim-ollama`` and
then ``jarvis-trio serve --backend ollama`` (or the asyncio baseline,
``python -m benchmarks.asyncio_variant``) on ports chosen by the kernel, and
yields their URLs and the gateway's :class:`psutil.Process`, whose CPU time,
threads, descriptors and memory the benchmarks read.

Teardown is bounded: SIGTERM, then SIGKILL after ``stop_grace`` seconds. The
baseline needs the SIGKILL whenever one of its executor threads is blocked on
an upstream (``asyncio.run`` waits for those threads at exit), so a short grace
keeps a run short; :attr:`Stack.killed` says whether it was needed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from jarvis_trio.testing import ServerProcess, spawn

BIN = Path(sys.executable).parent
VARIANTS = ("trio", "asyncio")
SIM_READY = r"ollama_sim listening url=(\S+)"
SERVER_READY = r"server_listening url=(\S+)"


@dataclass
class Stack:
    variant: str
    url: str  # the gateway
    sim_url: str
    server: psutil.Process
    sim: psutil.Process
    spawned: ServerProcess
    tokens_per_second: float  # the simulator's pace, per stream

    @property
    def killed(self) -> bool:
        return self.spawned.killed


def server_argv(variant: str, sim_url: str) -> list[str]:
    if variant == "trio":
        head = [str(BIN / "jarvis-trio"), "serve"]
    elif variant == "asyncio":
        head = [sys.executable, "-m", "benchmarks.asyncio_variant"]
    else:
        raise ValueError(f"no variant {variant!r}; one of {VARIANTS}")
    return [*head, "--port", "0", "--backend", "ollama", "--ollama-url", sim_url]


@contextmanager
def open_stack(
    variant: str,
    *,
    tokens_per_second: float = 50.0,
    env: dict[str, str] | None = None,
    stop_grace: float = 3.0,
) -> Iterator[Stack]:
    """A fresh simulator and gateway; ``env`` goes to the gateway (``JARVIS_*``)."""
    sim_argv = [
        str(BIN / "jarvis-trio"),
        "sim-ollama",
        "--port",
        "0",
        "--tokens-per-second",
        f"{tokens_per_second:g}",
    ]
    with (
        spawn(sim_argv, SIM_READY) as sim,
        spawn(
            server_argv(variant, sim.url), SERVER_READY, env=env, stop_grace=stop_grace
        ) as server,
    ):
        yield Stack(
            variant,
            server.url,
            sim.url,
            psutil.Process(server.process.pid),
            psutil.Process(sim.process.pid),
            server,
            tokens_per_second,
        )


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise this process's soft descriptor limit (children inherit it); the new limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft

"""One variant's stack as real processes: the Ollama simulator and a gateway in front of it.

``open_stack("trio" | "asyncio")`` starts a fresh ``jarvis-trio sim-ollama`` and
then ``jarvis-trio serve --backend ollama`` (or the asyncio baseline,
``python -m benchmarks.asyncio_variant``) on ports chosen by the kernel, and
yields their URLs and the gateway's :class:`psutil.Process`, whose CPU time,
threads, descriptors and memory the benchmarks read.

``open_stack("litellm")`` puts a peer in the gateway's place: the LiteLLM proxy
(``make bench-peers`` installs it into ``.venv-peers``), one uvicorn worker, no
database, a master key, routing every model name to the simulator as
``ollama_chat/<name>`` (a config file in a temporary folder). It has no sessions
(:attr:`Stack.sessions`), and its clients send the key (:attr:`Stack.headers`).

Teardown is bounded: SIGTERM, then SIGKILL after ``stop_grace`` seconds. The
baseline needs the SIGKILL whenever one of its executor threads is blocked on
an upstream (``asyncio.run`` waits for those threads at exit), so a short grace
keeps a run short; :attr:`Stack.killed` says whether it was needed.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from jarvis_trio.testing import ServerProcess, free_port, spawn

BIN = Path(sys.executable).parent
VARIANTS = ("trio", "asyncio")
PEERS = ("litellm",)  # gateways of other projects, compared by `make bench-peers`
SIM_READY = r"ollama_sim listening url=(\S+)"
SERVER_READY = r"server_listening url=(\S+)"
# The LiteLLM proxy's own venv (its pins are not the dev venv's); BENCH_LITELLM overrides.
LITELLM = Path(
    os.environ.get("BENCH_LITELLM", Path(__file__).parent.parent / ".venv-peers/bin/litellm")
)
LITELLM_READY = r"Uvicorn running on (http://\S+)"
LITELLM_KEY = "sk-bench-peers"


@dataclass
class Stack:
    variant: str
    url: str  # the gateway
    sim_url: str
    server: psutil.Process
    sim: psutil.Process
    spawned: ServerProcess
    tokens_per_second: float  # the simulator's pace, per stream
    headers: dict[str, str] = field(default_factory=dict)  # for every client request
    sessions: bool = True  # False: X-Session-Id means nothing to this gateway

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


def litellm_config(sim_url: str) -> str:
    """The proxy's config: every model name goes to the simulator's Ollama chat API
    (the simulator speaks no ``/v1``), faults in the name included; no database."""
    # JSON is YAML: no YAML writer needed.
    return json.dumps(
        {
            "model_list": [
                {
                    "model_name": "*",
                    "litellm_params": {"model": "ollama_chat/*", "api_base": sim_url},
                }
            ],
            "general_settings": {"master_key": LITELLM_KEY},
            "litellm_settings": {"telemetry": False},
        },
        indent=2,
    )


def litellm_argv(config: Path, port: int) -> list[str]:
    return [
        str(LITELLM),
        "--config",
        str(config),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]


# No cost map from the network, no telemetry, no database: the proxy talks to loopback only.
LITELLM_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_TELEMETRY": "False",
}
# Its log level stays the default (INFO, uvicorn's access log included): LITELLM_LOG
# would also silence the line that says where it listens.


@contextmanager
def _spawn_gateway(
    variant: str, sim_url: str, env: dict[str, str] | None, stop_grace: float
) -> Iterator[ServerProcess]:
    if variant not in PEERS:
        with spawn(
            server_argv(variant, sim_url), SERVER_READY, env=env, stop_grace=stop_grace
        ) as s:
            yield s
        return
    if not LITELLM.exists():
        raise RuntimeError(f"no LiteLLM proxy at {LITELLM}: `make bench-peers` installs it")
    with tempfile.TemporaryDirectory(prefix="bench-litellm-") as folder:
        config = Path(folder) / "config.yaml"
        config.write_text(litellm_config(sim_url), encoding="utf-8")
        argv = litellm_argv(config, free_port())
        # The proxy imports for seconds on a busy machine before it listens.
        with spawn(argv, LITELLM_READY, env=LITELLM_ENV, within=120.0, stop_grace=stop_grace) as s:
            yield s


@contextmanager
def open_stack(
    variant: str,
    *,
    tokens_per_second: float = 50.0,
    env: dict[str, str] | None = None,
    stop_grace: float = 3.0,
) -> Iterator[Stack]:
    """A fresh simulator and gateway; ``env`` goes to the gateway (``JARVIS_*``; not to
    a peer, which reads none of them)."""
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
        _spawn_gateway(variant, sim.url, env, stop_grace) as server,
    ):
        peer = variant in PEERS
        yield Stack(
            variant,
            server.url,
            sim.url,
            psutil.Process(server.process.pid),
            psutil.Process(sim.process.pid),
            server,
            tokens_per_second,
            headers={"Authorization": f"Bearer {LITELLM_KEY}"} if peer else {},
            sessions=not peer,
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

"""What the benchmarks ran on: CPU, cores, memory, OS, Python and library versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

import psutil

LIBRARIES = (
    "trio",
    "quart-trio",
    "Quart",
    "Hypercorn",
    "h11",
    "httpx",
    "httpcore",
    "fastapi",
    "starlette",
    "uvicorn",
    "anyio",
    "psutil",
    "matplotlib",
)


def cpu_model(cpuinfo: str) -> str:
    """The ``model name`` of ``/proc/cpuinfo``'s text; the machine's name elsewhere."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            return value.strip()
    return platform.processor() or platform.machine()


# A run whose 1-minute load average is over this share of the cores shares the CPU
# with other work: its latencies and throughput are not those of a quiet machine.
LOADED_SHARE = 0.5


def load_warning(load_1min: float, cores: int) -> str | None:
    """The warning for the top of a run's output, or None on a quiet machine."""
    if load_1min <= LOADED_SHARE * cores:
        return None
    return (
        f"the machine was loaded when the run started (load average {load_1min:.2f} over "
        f"the last minute, {cores} cores): other processes compete for the CPU, so these "
        "latencies and rates are worse than a quiet machine's. Rerun when it is idle to "
        "compare."
    )


def current_load_warning() -> str | None:
    return load_warning(os.getloadavg()[0], os.cpu_count() or 1)


def describe() -> list[tuple[str, str]]:
    info = Path("/proc/cpuinfo")
    text = info.read_text(encoding="utf-8", errors="replace") if info.exists() else ""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    versions = []
    for name in LIBRARIES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return [
        ("CPU", f"{cpu_model(text)} ({platform.machine()})"),
        ("cores", f"{os.cpu_count()} logical, {psutil.cpu_count(logical=False)} physical"),
        ("RAM", f"{psutil.virtual_memory().total / 2**30:.1f} GiB"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("load average at start (1, 5, 15 min)", load),
        ("libraries", ", ".join(versions)),
    ]

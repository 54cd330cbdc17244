"""Model backends behind one interface (:class:`jarvis_trio.generation.Backend`).

This package only re-exports; each backend lives in a module of its own, and
:mod:`jarvis_trio.backends.choose` picks the configured one.
"""

from jarvis_trio.backends.choose import choose_backend, probe_ollama

__all__ = ["choose_backend", "probe_ollama"]

"""Which backend serves: the configured one, or for ``auto`` Ollama if it answers."""

from __future__ import annotations

import httpx
import trio

from jarvis_trio import logs
from jarvis_trio.backends.ollama import OllamaBackend
from jarvis_trio.backends.openai_compat import OpenAICompatBackend
from jarvis_trio.backends.sim import SimBackend
from jarvis_trio.config import Settings
from jarvis_trio.generation import Backend


def choose_backend(settings: Settings, limiter: trio.CapacityLimiter) -> Backend:
    """The configured backend; for ``auto``, Ollama if it answers now, else the sim."""
    backend: Backend
    if settings.backend == "auto":
        answered, why = probe_ollama(settings.ollama_url)
        chosen = "ollama" if answered else "sim"
        logs.event("backend_selected", backend=chosen, mode="auto", reason=why)
    else:
        chosen = settings.backend
    if chosen == "sim":
        backend = SimBackend(
            tokens_per_second=settings.sim_tokens_per_second,
            limiter=limiter,
            mark_tokens=settings.sim_mark_tokens,
        )
    elif chosen == "ollama":
        backend = OllamaBackend(
            settings.ollama_url,
            limiter=limiter,
            default_model=settings.default_model,
            connect_timeout=settings.upstream_connect_timeout,
            models_ttl=settings.models_ttl_seconds,
            keepalive=settings.upstream_keepalive,
        )
    else:
        if not settings.upstream_url:
            raise ValueError("--backend openai needs JARVIS_UPSTREAM_URL")
        backend = OpenAICompatBackend(
            settings.upstream_url,
            api_key=settings.upstream_api_key,
            limiter=limiter,
            default_model=settings.default_model,
            connect_timeout=settings.upstream_connect_timeout,
            models_ttl=settings.models_ttl_seconds,
            keepalive=settings.upstream_keepalive,
        )
    return backend


def probe_ollama(url: str, *, timeout: float = 1.0) -> tuple[bool, str]:
    """Does Ollama answer at ``url`` right now? (answered, why), for the startup log.

    Runs once, before the server starts, so a blocking call is fine here.
    """
    try:
        response = httpx.get(url.rstrip("/") + "/api/version", timeout=timeout)
        version = response.json().get("version") if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return False, f"no Ollama at {url} ({type(exc).__name__}); using the embedded model"
    if not isinstance(version, str):
        return False, f"{url}/api/version did not answer like Ollama; using the embedded model"
    return True, f"Ollama {version} answered at {url}"

"""``/api/tags``, ``/api/show``, ``/api/ps`` and ``/api/version`` bodies. Pure.

With the ``ollama`` backend, ``/api/tags`` relays what the upstream lists for a model
(``size``, ``digest``, ``modified_at``, ``details``), and ``/api/show`` is the
upstream's own answer (see the routes). The other
backends know their models by id only (:class:`ModelInfo`), so those fields are empty
or zero: ``size`` 0, ``details`` with empty strings, ``digest`` the SHA-256 of the name
(stable, so a client can tell models apart). ``capabilities`` says what the gateway
relays for every backend: ``completion`` and ``tools`` (whether the model behind it
uses tools is the model's business).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from importlib import metadata
from typing import TypeVar

from jarvis_trio.generation import ModelInfo

T = TypeVar("T")

CAPABILITIES = ("completion", "tools")
# A model in use stays "loaded" for this long after its last stream, in /api/ps.
_PS_EXPIRY = timedelta(minutes=5)


def version() -> str:
    """The gateway's own version (the package's), not an Ollama version."""
    try:
        return metadata.version("jarvis-trio")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _time(created: int, fallback: datetime) -> str:
    when = datetime.fromtimestamp(created, UTC) if created > 0 else fallback
    return when.isoformat().replace("+00:00", "Z")


def details() -> dict[str, object]:
    return {
        "parent_model": "",
        "format": "",
        "family": "",
        "families": None,
        "parameter_size": "",
        "quantization_level": "",
    }


def _digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def _listed(model: ModelInfo, key: str, kind: type[T], default: T) -> T:
    """The upstream's own value for ``key``, when it listed one of the right type."""
    value = model.listing.get(key)
    return value if isinstance(value, kind) and not isinstance(value, bool) else default


def tag(model: ModelInfo, started: datetime) -> dict[str, object]:
    """One entry of ``/api/tags``."""
    return {
        "name": model.id,
        "model": model.id,
        "modified_at": _listed(model, "modified_at", str, _time(model.created, started)),
        "size": _listed(model, "size", int, 0),
        "digest": _listed(model, "digest", str, _digest(model.id)),
        "details": _listed(model, "details", dict, details()),
    }


def tags(models: Iterable[ModelInfo], started: datetime) -> dict[str, object]:
    return {"models": [tag(m, started) for m in models]}


def show(model: ModelInfo, started: datetime) -> dict[str, object]:
    """``/api/show`` for a model the backend lists."""
    return {
        "modelfile": "",
        "parameters": "",
        "template": "",
        "details": _listed(model, "details", dict, details()),
        "model_info": {},
        "capabilities": list(CAPABILITIES),
        "modified_at": _listed(model, "modified_at", str, _time(model.created, started)),
    }


def ps(models: Iterable[ModelInfo], now: datetime) -> dict[str, object]:
    """``/api/ps``: the models the caller's live streams are using."""
    expires = (now + _PS_EXPIRY).isoformat().replace("+00:00", "Z")
    return {
        "models": [
            {
                "name": m.id,
                "model": m.id,
                "size": 0,
                "digest": _digest(m.id),
                "details": details(),
                "expires_at": expires,
                "size_vram": 0,
            }
            for m in models
        ]
    }

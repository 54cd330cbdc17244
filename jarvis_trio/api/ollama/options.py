"""Ollama's ``options`` (and ``format``): checked by type, and mapped to OpenAI's names. Pure.

- ``temperature``, ``top_p``, ``seed``, ``stop``, ``num_predict`` (``max_tokens``),
  ``frequency_penalty``, ``presence_penalty`` go by their OpenAI names;
- Ollama's other sampling options (``top_k``, ``min_p``...) as vendor extras, which
  OpenAI-compatible servers such as llama.cpp and vLLM also read;
- the rest (``num_gpu``, ``use_mmap``...) are about how Ollama runs the model, and go
  to Ollama only (:attr:`GenerationRequest.ollama_extras
  <jarvis_trio.generation.GenerationRequest.ollama_extras>`);
- ``format``: ``"json"`` is ``response_format: json_object``, a schema ``json_schema``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Ollama's options by type (its api.Options); a value of another type is a 400.
_INT_OPTIONS = frozenset(
    (
        "num_keep",
        "seed",
        "num_predict",
        "top_k",
        "repeat_last_n",
        "mirostat",
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "num_thread",
    )
)
_FLOAT_OPTIONS = frozenset(
    (
        "top_p",
        "min_p",
        "typical_p",
        "temperature",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
        "mirostat_tau",
        "mirostat_eta",
        "tfs_z",
    )
)
_BOOL_OPTIONS = frozenset(
    ("penalize_newline", "numa", "low_vram", "vocab_only", "use_mmap", "use_mlock")
)
# Sampling options OpenAI-compatible servers also read (llama.cpp, vLLM: top_k, min_p...):
# sent as vendor extras. Ollama's other options (num_ctx, num_gpu, use_mmap...) are
# about how Ollama runs the model, and go to Ollama only.
_SAMPLING_OPTIONS = frozenset(
    (
        "top_k",
        "min_p",
        "typical_p",
        "repeat_penalty",
        "repeat_last_n",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
        "tfs_z",
    )
)
# Options the gateway maps to typed fields or to OpenAI's names.
_MAPPED_OPTIONS = frozenset(
    (
        "temperature",
        "top_p",
        "seed",
        "stop",
        "num_predict",
        "frequency_penalty",
        "presence_penalty",
    )
)


class OptionError(ValueError):
    """A bad value in ``options``, naming the option (``options.temperature``)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def check_option(key: str, value: Any) -> None:
    """Raise :class:`OptionError` unless ``value`` suits Ollama's option ``key``."""
    param = f"options.{key}"
    if value is None:
        return
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if key in _INT_OPTIONS and (isinstance(value, bool) or not isinstance(value, int)):
        raise OptionError(param, f"option {key!r} must be an integer")
    if key in _FLOAT_OPTIONS and not number:
        raise OptionError(param, f"option {key!r} must be a number")
    if key in _BOOL_OPTIONS and not isinstance(value, bool):
        raise OptionError(param, f"option {key!r} must be a boolean")
    if key == "stop" and not (
        isinstance(value, str)
        or (isinstance(value, list) and all(isinstance(s, str) for s in value))
    ):
        raise OptionError(param, "option 'stop' must be a string or a list of strings")
    if key == "temperature" and number and value < 0:
        raise OptionError(param, "option 'temperature' must be at least 0")
    if key in ("top_p", "min_p", "typical_p") and number and not 0 <= value <= 1:
        raise OptionError(param, f"option {key!r} must be from 0 to 1")


@dataclass(frozen=True)
class MappedOptions:
    """Checked ``options``, as the gateway's typed fields and as OpenAI's names."""

    stops: tuple[str, ...]  # as given, empty strings included
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    seed: int | None
    vendor: dict[str, Any]  # OpenAI's names, then the sampling options as vendor extras
    native: dict[str, Any]  # for Ollama only


def map_options(options: Mapping[str, Any] | None) -> MappedOptions:
    """Map checked options (:func:`check_option`); ``None`` values are left out."""
    opts = dict(options or {})
    vendor: dict[str, Any] = {}
    stop = opts.get("stop")
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    num_predict = opts.get("num_predict")
    # Ollama: num_predict -1 (and any value <= 0) means no limit.
    max_tokens = num_predict if isinstance(num_predict, int) and num_predict > 0 else None
    for key in ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty"):
        if opts.get(key) is not None:
            vendor[key] = opts[key]
    if stops:
        vendor["stop"] = list(stops)
    if max_tokens is not None:
        vendor["max_tokens"] = max_tokens
    rest = {k: v for k, v in opts.items() if k not in _MAPPED_OPTIONS and v is not None}
    vendor.update({k: v for k, v in rest.items() if k in _SAMPLING_OPTIONS})
    temperature = opts.get("temperature")
    top_p = opts.get("top_p")
    seed = opts.get("seed")
    return MappedOptions(
        stops=stops,
        max_tokens=max_tokens,
        temperature=float(temperature) if temperature is not None else None,
        top_p=float(top_p) if top_p is not None else None,
        seed=seed if isinstance(seed, int) else None,
        vendor=vendor,
        native={k: v for k, v in rest.items() if k not in _SAMPLING_OPTIONS},
    )


def response_format(value: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """Ollama's ``format`` as OpenAI's ``response_format`` (None for none)."""
    if value == "json":
        return {"type": "json_object"}
    if isinstance(value, dict):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": value}}
    return None

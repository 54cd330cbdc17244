"""Ollama's routes on the gateway: the I/O around :mod:`.requests`, :mod:`.ndjson`, :mod:`.models`.

``/api/chat`` and ``/api/generate`` start their stream exactly as
``/v1/chat/completions`` does (:func:`jarvis_trio.api.admit.admit`), so ``X-Session-Id``,
supersede, Stop, timeouts, a client leaving and shutdown all behave the same; only
the format of the answer differs. Errors are Ollama's ``{"error": "..."}`` (the
app's error handler writes that shape for every ``/api/`` path).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import trio
from quart import Blueprint, Response, g, jsonify, request

from jarvis_trio.api.admit import admit, failed_early, refuse_if_full
from jarvis_trio.api.ollama import models, ndjson
from jarvis_trio.api.ollama.requests import (
    ChatRequest,
    GenerateRequest,
    parse_chat,
    parse_embed,
    parse_generate,
    parse_show,
)
from jarvis_trio.api.state import state
from jarvis_trio.errors import ApiError, NotFound
from jarvis_trio.generation import ModelInfo, Output, find_model
from jarvis_trio.outcomes import Ending
from jarvis_trio.streams import Stream

blueprint = Blueprint("ollama_api", __name__)

# /api/tags' modified_at for a model whose backend gives no time.
_STARTED = datetime.now(UTC)


class CannotEmbed(ApiError):
    """``/api/embed`` for a model of a backend that has no embeddings (all of them today)."""

    status = 501
    type = "not_implemented"


def _not_found(name: str) -> NotFound:
    return NotFound(f"model '{name}' not found", param="model", code="model_not_found")


async def _resolve(name: str) -> str:
    """The backend's id for ``name`` (``name:latest`` is ``name``, as in Ollama, which
    the backend resolves without asking upstream on the request path), or Ollama's 404."""
    try:
        return await state().backend.resolve_model(name)
    except NotFound as error:
        raise _ollama_error(error, name) from None


def _ollama_error(error: ApiError, name: str) -> ApiError:
    """An upstream's "no such model" as Ollama says it."""
    if isinstance(error, NotFound) and error.param == "model":
        return _not_found(name)
    return error


async def _body() -> bytes:
    data: bytes = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    return data


@blueprint.post("/api/chat")
async def chat() -> Response:
    return await _answer("chat", parse_chat(await _body()))


@blueprint.post("/api/generate")
async def generate() -> Response:
    return await _answer("generate", parse_generate(await _body()))


async def _answer(kind: ndjson.Kind, asked: ChatRequest | GenerateRequest) -> Response:
    refuse_if_full()
    model = await _resolve(asked.model)
    writer = ndjson.Writer(kind, asked.model)  # Ollama echoes the name as asked
    if asked.loads_only:
        return jsonify(writer.load("unload" if asked.unloads else "load"))
    stream, headers = await admit(asked.to_generation(model), streaming=asked.streaming)
    if asked.streaming:
        if (error := failed_early(stream)) is not None:
            raise _ollama_error(error, asked.model)
        response = Response(
            _ndjson_body(stream, writer, state().settings.coalesce_ms / 1000),
            content_type=ndjson.NDJSON_TYPE,
        )
        response.timeout = None
    else:
        pieces, ending, durations = await _collect(stream)
        try:
            body = writer.whole(pieces, ending, durations=durations)
        except ApiError as error:
            raise _ollama_error(error, asked.model) from None
        response = jsonify(body)
    response.headers.update(headers)
    return response


def _durations(stream: Stream, first: float | None) -> ndjson.Durations:
    now = trio.current_time()
    started = stream.started_at if stream.started_at is not None else now
    first = first if first is not None else now
    return ndjson.Durations(
        total=now - stream.submitted_at,
        load=started - stream.submitted_at,
        prompt_eval=first - started,
        eval=now - first,
    )


async def _ndjson_body(
    stream: Stream, writer: ndjson.Writer, coalesce: float
) -> AsyncIterator[str]:
    first: float | None = None
    async for batch in stream.batches(coalesce):
        first = first if first is not None else trio.current_time()
        if lines := writer.lines(batch):
            yield lines
    durations = _durations(stream, first)
    ending = stream.final_ending()
    yield writer.ending_lines(ending, durations=durations)


async def _collect(stream: Stream) -> tuple[list[Output], Ending, ndjson.Durations]:
    first: float | None = None
    pieces: list[Output] = []
    async for batch in stream.batches():
        first = first if first is not None else trio.current_time()
        pieces.extend(batch)
    return pieces, stream.final_ending(), _durations(stream, first)


@blueprint.get("/api/tags")
async def tags() -> Response:
    return jsonify(models.tags(await state().backend.list_models(), _STARTED))


@runtime_checkable
class ShowsModels(Protocol):
    """A backend that can describe a model itself (the ``ollama`` backend)."""

    async def show_model(self, name: str) -> dict[str, Any] | None: ...


@blueprint.post("/api/show")
async def show() -> Response:
    name = parse_show(await _body()).model_name
    backend = state().backend
    if isinstance(backend, ShowsModels):  # Ollama's own answer, relayed
        shown = await backend.show_model(name)
        if shown is None:
            raise _not_found(name)
        return jsonify(shown)
    found = find_model(await backend.list_models(), name)
    if found is None:
        raise _not_found(name)
    return jsonify(models.show(found, _STARTED))


@blueprint.get("/api/ps")
async def ps() -> Response:
    in_use = dict.fromkeys(r.model for r in state().manager.requests_of(g.owner))
    listed = [ModelInfo(id=name, owned_by="") for name in in_use]
    return jsonify(models.ps(listed, datetime.now(UTC)))


@blueprint.get("/api/version")
async def version() -> Response:
    return jsonify(version=models.version())


@blueprint.post("/api/embed")
async def embed() -> Response:
    return await _embed()


@blueprint.post("/api/embeddings")
async def embeddings() -> Response:
    return await _embed()


async def _embed() -> Response:
    asked = parse_embed(await _body())
    await _resolve(asked.model)  # an unknown model is still Ollama's 404
    raise CannotEmbed(
        f"model '{asked.model}' does not support embeddings: "
        f"the gateway's {state().backend.name} backend cannot embed",
        param="model",
        code="embeddings_not_supported",
    )

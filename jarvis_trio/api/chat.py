"""OpenAI's chat completions and models routes."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response, jsonify, request

from jarvis_trio.agent import AgentBackend, agent_unavailable
from jarvis_trio.api.admit import admit, failed_early, refuse_if_full
from jarvis_trio.api.sse import SSE_HEADERS, SSE_TYPE, sse_body
from jarvis_trio.api.state import state
from jarvis_trio.errors import NotFound
from jarvis_trio.generation import ModelInfo
from jarvis_trio.schemas import parse_chat_request
from jarvis_trio.wire import ChunkFormat, completion_for

blueprint = Blueprint("chat", __name__)


@blueprint.get("/v1/models")
async def models() -> Response:
    listed = await state().backend.list_models()
    return jsonify(object="list", data=[model_object(m) for m in listed])


@blueprint.get("/v1/models/<path:model_id>")
async def model(model_id: str) -> Response:
    for listed in await state().backend.list_models():
        if listed.id == model_id:
            return jsonify(model_object(listed))
    raise NotFound(f"The model {model_id!r} does not exist.", param="model", code="model_not_found")


@blueprint.post("/v1/chat/completions")
async def chat_completions() -> Response:
    st = state()
    chat = parse_chat_request(
        await request.get_data(cache=False, as_text=False, parse_form_data=False)
    )
    refuse_if_full()
    model = await st.backend.resolve_model(chat.model or None)
    agent = chat.wants_agent(st.settings.agent_default)
    if agent and not isinstance(st.backend, AgentBackend):
        raise agent_unavailable()
    stream, headers = await admit(
        chat.to_generation(model, agent=agent), streaming=bool(chat.stream)
    )
    answered = stream.answered_model or model
    fmt = ChunkFormat(
        stream.id,
        answered,
        stream.created,
        chat.include_usage,
        extended_finish_reasons=st.settings.extended_finish_reasons,
    )
    if not chat.stream:
        pieces, ending = await stream.collect_output()
        body = completion_for(
            stream_id=stream.id,
            model=stream.answered_model or answered,
            created=stream.created,
            pieces=pieces,
            ending=ending,
        )
        response = jsonify(body)
    else:
        if (error := failed_early(stream)) is not None:
            raise error
        response = Response(
            sse_body(stream, fmt, st.settings.coalesce_ms / 1000),
            content_type=SSE_TYPE,
            headers=dict(SSE_HEADERS),
        )
        response.timeout = None
    response.headers.update(headers)
    return response


def model_object(model: ModelInfo) -> dict[str, Any]:
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by}

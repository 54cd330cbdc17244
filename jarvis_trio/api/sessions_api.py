"""Routes on sessions and requests: Stop, a viewer's copy of a stream, list and cancel."""

from __future__ import annotations

from quart import Blueprint, Response, g, jsonify, request

from jarvis_trio import logs
from jarvis_trio.api.sse import SSE_HEADERS, SSE_TYPE, viewer_body
from jarvis_trio.api.state import on_exit, state
from jarvis_trio.errors import NotFound, TooManyRequests
from jarvis_trio.replay import MAX_VIEWERS, parse_last_event_id
from jarvis_trio.schemas import check_id

blueprint = Blueprint("sessions", __name__)


@blueprint.post("/v1/sessions/<session_id>/cancel")
async def cancel_session(session_id: str) -> Response:
    check_id(session_id, "session_id")
    report = await state().manager.stop(g.owner, session_id)
    return jsonify(
        object="session.cancel",
        session_id=session_id,
        result=report.result,
        stream_id=report.stream_id,
        waited_ms=round(report.waited_ms, 3),
    )


@blueprint.get("/v1/sessions/<session_id>/stream")
async def watch_session(session_id: str) -> Response:
    check_id(session_id, "session_id")
    log = state().manager.watch(g.owner, session_id)
    if log is None:
        raise NotFound(
            f"Session {session_id!r} has no stream to watch.",
            param="session_id",
            code="no_stream",
        )
    headers = {**SSE_HEADERS, "X-Stream-Id": log.stream_id, "X-Session-Id": session_id}
    if log.request_id is not None:
        headers["X-Stream-Request-Id"] = log.request_id
    if request.method == "HEAD":  # Quart would run the body and hold a viewer's place
        return Response("", content_type=SSE_TYPE, headers=headers)
    if log.viewers >= MAX_VIEWERS:
        raise TooManyRequests(
            f"Stream {log.stream_id} has {MAX_VIEWERS} viewers already.",
            code="too_many_viewers",
        )
    after = parse_last_event_id(request.headers.get("Last-Event-ID"), log.stream_id)
    if after and log.after(after, limit=0).truncated:
        after = 0  # the pieces after the client's last one are gone: replay what is kept
    # Counted for the whole exchange (the exit callback runs however it ends), so a
    # client that leaves before the body starts is not left counted.
    log.viewer_joined()
    on_exit(log.viewer_left)
    logs.event("viewer_attached", trace=log.stream_id, after=after)
    response = Response(
        viewer_body(log, after, state().settings.extended_finish_reasons),
        content_type=SSE_TYPE,
        headers=headers,
    )
    response.timeout = None
    return response


@blueprint.get("/v1/requests")
async def list_requests() -> Response:
    listed = state().manager.requests_of(g.owner)
    return jsonify(
        object="list",
        data=[
            {
                "id": r.id,
                "object": "request",
                "session_id": r.session_id,
                "request_id": r.request_id,
                "model": r.model,
                "state": r.state,
                "age_seconds": round(r.age_seconds, 3),
                "tokens": r.tokens,
            }
            for r in listed
        ],
    )


@blueprint.post("/v1/requests/<stream_id>/cancel")
async def cancel_request(stream_id: str) -> Response:
    check_id(stream_id, "stream_id")
    report = await state().manager.cancel_request(g.owner, stream_id)
    return jsonify(
        object="request.cancel",
        id=stream_id,
        result=report.result,
        waited_ms=round(report.waited_ms, 3),
    )

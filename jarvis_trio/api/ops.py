"""Routes for people and operators: the chat page, its assets, health and metrics."""

from __future__ import annotations

from dataclasses import asdict

from quart import Blueprint, Response, jsonify, request

from jarvis_trio import web
from jarvis_trio.api.state import state
from jarvis_trio.errors import NotFound
from jarvis_trio.metrics import CONTENT_TYPE

blueprint = Blueprint("ops", __name__)


@blueprint.get("/")
async def chat_page() -> Response:
    return page_response("index.html")


@blueprint.get("/static/<path:name>")
async def page_asset(name: str) -> Response:
    return page_response(name)


@blueprint.get("/healthz")
async def healthz() -> Response:
    st = state()
    stats = st.manager.statistics()
    return jsonify(status="ok", backend=st.backend.name, **asdict(stats))


@blueprint.get("/metrics")
async def metrics() -> Response:
    return Response(state().metrics.render(), content_type=CONTENT_TYPE)


def page_response(name: str) -> Response:
    asset = web.asset(name)
    if asset is None:
        raise NotFound(f"No route for GET {request.path}.", code="not_found")
    body, content_type = asset
    response = Response(body, content_type=content_type)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Content-Security-Policy"] = web.CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response

"""How every generation route starts a stream: refuse early, admit, wait for its turn."""

from __future__ import annotations

from quart import g, request

from jarvis_trio.api.state import header_id, on_exit, state
from jarvis_trio.errors import ApiError, InvalidRequest
from jarvis_trio.generation import GenerationRequest
from jarvis_trio.schemas import parse_resume_seconds
from jarvis_trio.streams import Stream


def refuse_if_full() -> None:
    """A full (or closing) gateway says so at once (429, 503), before anything upstream."""
    state().manager.check_accepting(g.owner, header_id("X-Session-Id"))


def failed_early(stream: Stream) -> ApiError | None:
    """The error of a stream that failed before any output: the client gets a plain
    HTTP error instead of a stream (``None``: it has output, or has not failed)."""
    early = stream.ending
    if early is not None and early.error is not None and stream.tokens == 0:
        return early.error
    return None


async def admit(job: GenerationRequest, *, streaming: bool) -> tuple[Stream, dict[str, str]]:
    """Submit ``job`` to its session and wait until its answer may be read.

    The one way every generation route (``/v1/chat/completions``, Ollama's
    ``/api/chat`` and ``/api/generate``) starts a stream: the backend's check (a
    request refused there supersedes nothing), ``X-Session-Id`` and
    ``X-Jarvis-Resume-Seconds``, the session manager's admission (its claim across
    processes, the session's rules), and the exit callback that abandons the stream
    however the exchange ends. Returns the stream and the headers that name it.
    """
    st = state()
    st.backend.check_request(job)  # a request refused here supersedes nothing
    session_id = header_id("X-Session-Id")
    resume = parse_resume_seconds(
        request.headers.get("X-Jarvis-Resume-Seconds"), st.settings.max_resume_seconds
    )
    if resume and (session_id is None or not streaming):
        raise InvalidRequest(
            "X-Jarvis-Resume-Seconds needs a streaming request with an X-Session-Id "
            "(viewers attach by session).",
            param="X-Jarvis-Resume-Seconds",
            code="invalid_header",
        )
    stream = await st.manager.admit(g.owner, session_id, job, g.request_id, resume_seconds=resume)
    on_exit(lambda: st.manager.abandon(stream))
    await st.manager.wait_turn(stream)
    await stream.wait_ready()
    headers = {"X-Stream-Id": stream.id}
    if session_id is not None:
        headers["X-Session-Id"] = session_id
    return stream, headers

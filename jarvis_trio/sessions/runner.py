"""Run one stream's backend call under the stream's cancel scope, and say how it ended.

The runner knows the stream and the backend, never the session: it returns an
:class:`~jarvis_trio.outcomes.Ending`, and the session table carries that out
(tells the rules, releases, logs). Deciding how a cut-short stream ended is pure
(:func:`cut_short`); everything else here is the one ``await`` on the backend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from jarvis_trio import logs
from jarvis_trio.errors import ApiError, ServerError, UpstreamTimeout
from jarvis_trio.generation import Backend
from jarvis_trio.outcomes import Ending, Outcome
from jarvis_trio.rules import CancelReason
from jarvis_trio.sessions.observer import Observer
from jarvis_trio.streams import Stream


async def run_stream(
    stream: Stream,
    backend: Backend,
    observer: Observer,
    before_model: Callable[[], Awaitable[None]] | None = None,
) -> Ending:
    """Generate into ``stream`` until done, failed, cancelled or timed out.

    Returns its ending; a cancel from outside the stream's scope (the server going
    away) propagates, and the caller ends the stream as cancelled.
    """
    try:
        with stream.scope:
            try:
                if before_model is not None:
                    await before_model()
                result = await backend.generate(stream.job, stream)
            finally:
                if stream.cancelled_at is not None:
                    observer.cancel_to_closed(trio.current_time() - stream.cancelled_at)
            return Ending.completed(result)
        return cut_short(stream)  # our scope caught a cancel, or its deadline passed
    except ApiError as exc:
        return Ending(Outcome.UPSTREAM_ERROR, error=exc)
    except Exception:
        logs.log.exception("stream_failed trace=%s", stream.id)
        return Ending(Outcome.ERROR, error=ServerError("The model backend failed."))


def cut_short(stream: Stream) -> Ending:
    """How a stream whose scope caught a cancel ended.

    Cancelled (supersede, Stop, disconnect, shutdown): for that reason. Otherwise its
    deadline passed: blocked on a client that reads nothing, it ends as a disconnect
    (the session table then cuts the reader off through the rules); else no first token,
    or no output, in time.
    """
    if stream.cancel_reason is not None:
        return Ending.cancelled(stream.cancel_reason)
    if stream.blocked_on_reader:
        logs.event("stream_cancelled", trace=stream.id, reason="client_not_reading")
        return Ending.cancelled(CancelReason.DISCONNECTED)
    if stream.tokens == 0:
        outcome, limit = Outcome.FIRST_TOKEN_TIMEOUT, stream.first_token_seconds
        message = f"No first token within {limit:g} s; the stream was ended."
    else:
        outcome, limit = Outcome.INACTIVITY, stream.inactivity_seconds
        message = f"No output for {limit:g} s; the stream was ended."
    logs.event("stream_cancelled", trace=stream.id, reason=outcome.value)
    code = f"{outcome.value}_timeout" if outcome is Outcome.INACTIVITY else outcome.value
    return Ending(outcome, error=UpstreamTimeout(message, code=code))

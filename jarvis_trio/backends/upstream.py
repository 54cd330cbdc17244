"""Blocking HTTP to an upstream model server, from a worker thread, cancellable at every point.

Theory of operation
-------------------
A worker thread blocked in ``recv()`` polls nothing: if the upstream is silent
(a model loading, a stalled GPU) the thread would sit there until the model
speaks again, holding its connection, its limiter slot and the GPU's work. So
every request's socket is known to the stream's
:class:`~jarvis_trio.threads.CancelToken` before it even connects
(:mod:`jarvis_trio.backends.transport`: our network backend creates the socket
and registers its shutdown on the token, then connects). On cancel the shutdown
aborts a pending ``connect()`` (an upstream whose accept queue is full, a
black-holed address), a TLS handshake, or a ``recv()``, also while the thread is
still waiting for the response headers; and the upstream sees EOF, which stops
generation. The thread then waits, briefly, for the upstream to close the
connection too (the transport's "After a cancel").

With keep-alive on (``keepalive`` > 0, ``JARVIS_UPSTREAM_KEEPALIVE``), a connection
whose answer was read to its end serves a later request, and that request's token
takes the socket over on its first write; a cancelled request's connection is shut
down and never reused; nothing is ever sent twice (the transport's doc). A stream
reads the body's end after its last line only if it is there at once
(:func:`~jarvis_trio.backends.transport.finish_body`), so its ending is not delayed.

Transport failures are mapped to our errors here, at the boundary. After a
cancel, whatever the thread raises is dropped by
:func:`~jarvis_trio.threads.run_in_worker` in favour of the pending
``Cancelled``, so the shutdown's own "incomplete read" is never reported as an
upstream failure.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import Any

import httpx
import trio

from jarvis_trio.backends.model_cache import ModelCache
from jarvis_trio.backends.transport import (
    KEEPALIVE_EXPIRY,
    TOKEN,
    ConnectionClosedIdle,
    TokenTransport,
    finish_body,
)
from jarvis_trio.errors import (
    ApiError,
    InvalidRequest,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
    upstream_error_message,
    upstream_status_error,
)
from jarvis_trio.generation import (
    FinishReason,
    GenerationRequest,
    GenerationResult,
    ModelInfo,
    Piece,
    Sink,
    Usage,
    find_model,
)
from jarvis_trio.relay import PieceRelay, relay_from_worker
from jarvis_trio.threads import CancelToken, run_in_worker

# Largest error body we read from an upstream to explain a failed request.
ERROR_BODY_LIMIT = 64 * 1024
# What a closed response's stream is replaced with (see UpstreamHttp.request).
_CLOSED_STREAM = httpx.ByteStream(b"")


class UpstreamHttp:
    """One httpx client per backend; at most ``keepalive`` idle connections kept for reuse."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float = 5.0,
        headers: dict[str, str] | None = None,
        keepalive: int = 0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.transport = TokenTransport(keepalive=keepalive)
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            # No read timeout: a short one cannot serve as a poll (the stream is
            # dead after ReadTimeout); cancellation and our inactivity deadline
            # reach a silent read through the socket shutdown instead.
            timeout=httpx.Timeout(connect_timeout, read=None),
            transport=self.transport,
        )
        # Each path's absolute URL, merged with the base once: httpx merging a relative
        # path costs about 30 µs per request, in the worker before it connects.
        self._urls: dict[str, httpx.URL] = {}

    def close(self) -> None:
        self._client.close()

    @contextmanager
    def request(
        self,
        token: CancelToken,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Iterator[httpx.Response]:
        """Send a request whose response is read in the caller's (worker) thread."""
        token.raise_if_cancelled()
        url = self._urls.get(path)
        if url is None:  # a few fixed paths; a race only merges one twice
            url = self._urls[path] = self._client.build_request(method, path).url
        response: httpx.Response | None = None
        try:
            with self._client.stream(
                method, url, json=json, headers=headers, extensions={TOKEN: token}
            ) as response:
                yield response
        except httpx.ConnectError as exc:
            raise ServiceUnavailable(
                f"Cannot reach the model server at {self.base_url}: {exc}.",
                code="upstream_unreachable",
            ) from None
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(
                f"The model server at {self.base_url} timed out: {exc!r}.",
                code="upstream_timeout",
            ) from None
        except (httpx.RemoteProtocolError, httpx.NetworkError) as exc:
            if isinstance(exc.__cause__, ConnectionClosedIdle):  # rare: the last try's too
                raise UpstreamError(
                    f"No connection to the model server at {self.base_url} could be used: "
                    "each kept-alive one was closed as it was handed out. Nothing was sent.",
                    code="upstream_disconnected",
                ) from None
            raise UpstreamError(
                f"The model server at {self.base_url} closed the connection mid-response ({exc}).",
                code="upstream_disconnected",
            ) from None
        except httpx.HTTPError as exc:  # decoding errors and the rest: still the upstream's
            raise UpstreamError(
                f"The model server at {self.base_url} sent an unreadable response ({exc!r}).",
                code="upstream_malformed",
            ) from None
        finally:
            if response is not None:
                # httpx's response and its stream refer to each other (the stream sets
                # the response's ``elapsed`` when it is closed): a cycle, with the request
                # and its encoded body in it, that only the cyclic collector frees, and
                # that collects rarely (jarvis_trio/collector.py). Closed, the response
                # needs its stream no more: without it, all of it is freed at once.
                response.stream = _CLOSED_STREAM


def read_error_body(response: httpx.Response) -> str:
    """A failed response's body, bounded, as text."""
    data = b""
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) >= ERROR_BODY_LIMIT:
            break
    return data[:ERROR_BODY_LIMIT].decode("utf-8", errors="replace")


class UpstreamBackend(ABC):
    """What every upstream backend shares: worker threads, model lists, failures, relaying.

    A subclass names its protocol: its paths, request body, line parser and
    model list. Everything about threads and cancellation lives here.
    """

    name: str
    models_path: str
    chat_path: str

    def __init__(
        self,
        url: str,
        *,
        limiter: trio.CapacityLimiter | None = None,
        default_model: str | None = None,
        connect_timeout: float = 5.0,
        headers: dict[str, str] | None = None,
        models_ttl: float = 60.0,
        keepalive: int = 0,
    ) -> None:
        self.url = url.rstrip("/")
        self.default_model = default_model
        self.limiter = limiter
        self._http = UpstreamHttp(
            self.url, connect_timeout=connect_timeout, headers=headers, keepalive=keepalive
        )
        # For requests that name no model (the app runs its background refresh).
        self.models = ModelCache(self.list_models, ttl=models_ttl)
        self._background = trio.CancelScope()  # run()'s

    # -- the protocol

    @abstractmethod
    def chat_body(self, request: GenerationRequest) -> dict[str, Any]: ...

    @abstractmethod
    def parse_line(self, line: str) -> Piece | None: ...

    def line_parser(self) -> Callable[[str], Piece | None]:
        """The parser of one answer's lines (a protocol with state makes one per answer)."""
        return self.parse_line

    @abstractmethod
    def parse_models(self, body: Any) -> list[ModelInfo]: ...

    # -- the Backend interface

    def check_request(self, request: GenerationRequest) -> None:
        """Raise the :class:`InvalidRequest` the request would meet, before it is admitted."""
        self.chat_body(request)

    async def list_models(self) -> list[ModelInfo]:
        # trio's default limiter, not the streams': a short call that holds no stream slot.
        models = await run_in_worker(self._models)
        self.models.store(models)
        return models

    async def resolve_model(self, requested: str | None) -> str:
        """The model, with nothing asked upstream: named, configured, or the cached list's
        first. ``""`` when no list is kept yet: :meth:`generate` resolves it then, inside
        the stream, after its session has acted (a supersede goes first)."""
        if requested:
            # ``name:latest`` is a listed ``name`` (Ollama's rule), checked against the kept
            # list; with none kept yet, generate() checks it inside the stream. An unknown
            # model is the upstream's 404, mapped before streaming.
            listed = self.models.peek() if requested.endswith(":latest") else None
            found = find_model(listed, requested) if listed else None
            return found.id if found is not None else requested
        if self.default_model:
            return self.default_model
        models = self.models.peek()
        return models[0].id if models else ""

    async def generate(self, request: GenerationRequest, sink: Sink) -> GenerationResult:
        if not request.model:
            models = await self.models.get()
            if not models:
                raise InvalidRequest(
                    f"No model was given and the model server at {self.url} lists none.",
                    param="model",
                    code="model_required",
                )
            request = replace(request, model=models[0].id)
        elif request.model.endswith(":latest"):
            request = replace(request, model=await self._latest(request.model))
        return await relay_from_worker(partial(self._chat, request), sink, limiter=self.limiter)

    async def _latest(self, name: str) -> str:
        """``name:latest`` as the upstream lists it (``name``, for a server whose ids
        have no tag), from the kept list, or fetched now, inside the stream, when none
        is kept (resolve_model had none). The name as asked when the list has no such
        model or cannot be had: the upstream decides."""
        listed = self.models.peek()
        if listed is None:
            try:
                listed = await self.models.get()
            except ApiError:
                return name
        found = find_model(listed, name)
        return found.id if found is not None else name

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The backend's background work, until :meth:`stop`: the model list's refresh, and
        closing kept-alive connections on time (httpcore would wait for the next request)."""
        with self._background:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.models.run)
                if self._http.transport.keepalive:
                    nursery.start_soon(self._close_expired_connections)
                task_status.started()

    async def _close_expired_connections(self) -> None:
        while True:
            # A pass a second: none stays open more than the expiry, its grace and a second.
            await trio.sleep(KEEPALIVE_EXPIRY / 2)
            self._http.transport.close_expired()

    def idle_connections(self) -> int:
        """Upstream connections kept alive for a next request (``/metrics``)."""
        return self._http.transport.idle_connections()

    def stop(self) -> None:
        """End :meth:`run`."""
        self._background.cancel()

    async def aclose(self) -> None:
        self._http.close()

    # -- worker thread side

    def _models(self, token: CancelToken) -> list[ModelInfo]:
        body = self._json(token, "GET", self.models_path, what="model list")
        return self.parse_models(body)

    def _json(
        self,
        token: CancelToken,
        method: str,
        path: str,
        *,
        what: str,
        json_body: Any = None,
        missing_ok: bool = False,
    ) -> Any:
        """A small JSON answer of the upstream's; ``what`` names it in the error for a
        failed or malformed one. With ``missing_ok``, a 404 is ``None``."""
        with self._http.request(token, method, path, json=json_body) as response:
            if missing_ok and response.status_code == 404:
                return None
            if response.status_code != 200:
                raise UpstreamError(
                    f"{self.url}{path} failed (HTTP {response.status_code}): "
                    f"{upstream_error_message(read_error_body(response))}"
                )
            try:
                return json.loads(response.read())
            except ValueError:
                raise UpstreamError(f"The model server sent a malformed {what}.") from None

    def _chat(
        self, request: GenerationRequest, token: CancelToken, relay: PieceRelay
    ) -> GenerationResult:
        body = self.chat_body(request)
        headers = {"X-Jarvis-Session": request.trace_session} if request.trace_session else None
        with self._http.request(
            token, "POST", self.chat_path, json=body, headers=headers
        ) as response:
            if response.status_code != 200:
                message = upstream_error_message(read_error_body(response))
                raise upstream_status_error(
                    response.status_code, message, model=request.model, url=self.url
                )
            parse = self.line_parser()
            opened = False
            sent = 0
            finish: FinishReason | None = None
            usage: Usage | None = None
            model: str | None = None
            extra: dict[str, Any] = {}
            lines = response.iter_lines()
            for line in lines:
                token.raise_if_cancelled()  # the poll between lines
                piece = parse(line)
                if piece is None:
                    continue
                if not opened:  # the first answer, not just headers: it names the model
                    relay.opened(piece.model or request.model)  # before its piece, no wait
                    opened = True
                if piece.output != "":
                    relay.put(piece.output)
                    sent += 1
                finish = piece.finish_reason or finish
                usage = piece.usage or usage
                model = model or piece.model
                if piece.extra:  # rare: a line with the upstream's own keys
                    extra.update(piece.extra)
                if piece.end:
                    if self._http.transport.keepalive:
                        finish_body(response, lines)  # the connection can be kept
                    break
        if finish is None:
            raise UpstreamError(
                f"The model server at {self.url} ended the answer without finishing it.",
                code="upstream_incomplete",
            )
        return GenerationResult(finish, usage or Usage(0, sent), model=model, extra=extra)

"""Upstream connections whose sockets a cancel token can shut down, on public httpx/httpcore API.

Theory of operation
-------------------
httpx's own ``HTTPTransport`` keeps its httpcore connection pool to itself and takes
no network backend. So the upstream client is assembled from public parts:

- :class:`TokenNetworkBackend`, an ``httpcore.NetworkBackend`` over plain sockets. It
  creates each socket itself and registers the socket's shutdown with the request's
  :class:`~jarvis_trio.threads.CancelToken` *before* ``connect()``, so a cancel aborts a
  pending connect (an overloaded or black-holed upstream) as well as a ``recv()`` on a
  silent upstream, before or after the response headers.
- :class:`TokenTransport`, an ``httpx.BaseTransport`` around an ``httpcore.ConnectionPool``
  built with that backend. It adapts requests, responses and errors as httpx's own
  transport does, and hands the request's token (the :data:`TOKEN` request extension) to
  the backend for the duration of the request's connect, writes and header reads.

The shutdown is registered on a :class:`_Line`, not on a socket object: TLS wraps the
connected socket in a new object and detaches the old one, and the line follows the
swap (before the handshake, which a cancel must be able to abort too).

Keep-alive
----------
A connection whose response was read to its end goes back to the pool (at most
``keepalive`` idle ones, each for at most :data:`KEEPALIVE_EXPIRY` seconds) and may
serve a later request. A line answers to one token at a time, its *owner*:

- a new connection is claimed by its request's token before ``connect()``;
- a reused one is claimed by the next request's token on that request's first write
  (httpcore writes the request head before it reads anything), on the thread whose
  token the backend knows: so a cancel always shuts down the socket its request uses;
- a response that is closed releases the line, so a token that fires late (its request
  is over) shuts down nothing, in particular not a connection another request now uses.

A shut-down line is *dead*: it reports itself readable, which is what httpcore asks
an idle connection before it reuses it (``is_readable``), so it is discarded, never
reused. No request is ever sent twice: httpcore has no retry, and ours (below) is only
for a request that wrote nothing; a reused connection that the peer closed while our
request was on its way fails the request with the ordinary upstream error.

httpcore closes an expired idle connection only when the pool is next used, so after a
burst the idle ones would stay open, on both sides, until the next request.
:meth:`TokenTransport.close_expired` closes them on time instead (the backend runs it
every second): under its lock, a line idle for a little longer than
:data:`KEEPALIVE_EXPIRY` is marked *closed* and its socket closed (a line shut down by
a cancel and left in the pool is closed too). A request that httpcore hands such a
line in the same moment finds the mark on its first write, before a byte is sent
(:class:`ConnectionClosedIdle`), and :class:`TokenTransport` sends it again on another
connection.

:func:`finish_body` reads what is left of a streamed body after its last line (the
chunked terminator) without waiting more than :data:`DRAIN_SECONDS`, so a stream that
ended normally can return its connection; if the rest is not there yet, the
connection is closed instead.

After a cancel
--------------
Closing a dead line first waits, at most about :data:`PEER_CLOSE_WAIT` seconds, until
the upstream's end of the connection is over too (read from the socket's TCP state, on
Linux only). That happens when the upstream closes it, as a server does once it has
ended the request on it, or when the upstream writes to it again: our kernel, whose
side was shut down for reading, then answers with a reset, and the upstream's program
may only notice at its next write. The session joins the cancelled request's thread
before its next request goes out, so that request usually reaches the upstream after
the upstream is done with the old one, not while it is still answering it; the TCP
state cannot tell when the upstream's program has let go, so it is not a guarantee.
"""

from __future__ import annotations

import contextlib
import functools
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import httpcore
import httpx

from jarvis_trio.threads import CancelToken

# The request extension that carries the request's cancel token to the transport.
TOKEN = "jarvis_cancel_token"

# Seconds an idle kept-alive connection may wait for its next request. Below the
# idle timeouts of common upstream servers (uvicorn, hypercorn, llama.cpp: 5 s), so
# we close first rather than race the server's close with a new request.
KEEPALIVE_EXPIRY = 2.0
# How much later than httpcore we close an expired idle connection ourselves: a line is
# idle from just before httpcore's expiry starts (at the response's close), and past
# httpcore's own expiry the pool no longer hands the connection out, so a request
# rarely meets one we closed (it would go out on another connection: no harm, one try).
_EXPIRY_GRACE = 0.25

# The longest wait for the rest of a body after its last line (the chunked
# terminator), which decides whether the connection can be kept; never longer,
# since the client's ending waits for it.
DRAIN_SECONDS = 0.005

# The longest wait, when a cancelled request's connection is closed, for the upstream
# to close its end as well (it has ended that request), and the pause between looks.
# Measured against the simulator (docs/benchmarks.md): 0.1 ms p50 and 1.6 ms p99 in
# the handoff benchmark, 41 ms at most under the storm's load.
PEER_CLOSE_WAIT = 0.05
_PEER_CLOSE_POLL = 0.0002

# Linux's TCP states after our FIN and before the peer's (linux/tcp_states.h): the
# peer has not closed its end yet. Other systems number their states differently
# (FreeBSD's 4 and 5 are ESTABLISHED and CLOSE_WAIT): no wait there.
_TCP_FIN_WAIT1, _TCP_FIN_WAIT2 = 4, 5
_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None) if sys.platform == "linux" else None

# httpcore's errors as httpx's, most specific first (httpx's HTTPTransport maps the same).
_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for theirs, ours in _ERRORS:
            if isinstance(exc, theirs):
                raise ours(str(exc)) from exc
        raise


class ConnectionClosedIdle(httpcore.NetworkError):
    """A request's first write found its kept-alive connection closed as expired: nothing
    was sent, so the request can go out on another connection."""


class _Line:
    """The socket of one connection, as the cancel token of its current request reaches it."""

    def __init__(self, sock: socket.socket) -> None:
        self._lock = threading.Lock()
        self.sock = sock
        self.owner: CancelToken | None = None  # the token of the request using the line
        self.dead = False  # shut down by a cancel: never to be reused
        self.drain: float | None = None  # a deadline (monotonic) for a finished body's rest
        # When its last request let it go (monotonic); None while a request uses it.
        self.idle_since: float | None = None
        self.expired = False  # closed by close_expired: a request that finds it sends nothing

    def swap(self, sock: socket.socket) -> None:
        with self._lock:
            self.sock = sock

    def claim(self, token: CancelToken | None) -> None:
        """From now on the line serves a request (``token``'s, if it has one): its cancel
        shuts the line down (at once if it has fired already). Raises
        :class:`ConnectionClosedIdle` if the line was closed as expired."""
        with self._lock:
            if self.expired:
                raise ConnectionClosedIdle("the kept-alive connection expired")
            self.idle_since = None
            if token is None or token is self.owner:
                return
            self.owner = token
            self.drain = None
        token.add_callback(functools.partial(self._cancel, token))

    @property
    def idle(self) -> bool:
        """Kept for a next request: released, and neither shut down nor closed."""
        return self.idle_since is not None and not self.dead

    def close_if_idle_since(self, before: float) -> bool:
        """Close the line if no request has used it since ``before`` (monotonic). A
        line shut down by a cancel is closed too: httpcore would discard it only when
        the pool is next used (its request's own close, after the wait for the
        upstream's end, is long over by then)."""
        with self._lock:
            if self.expired or self.idle_since is None or self.idle_since > before:
                return False
            self.dead = self.expired = True
            # CPython frees the descriptor even when close() reports an error.
            with contextlib.suppress(OSError):
                self.sock.close()
            return True

    def readable(self) -> bool:
        """What httpcore asks before it reuses an idle connection: a dead line is."""
        with self._lock:  # not while close_if_idle_since closes the socket
            return self.dead or _readable(self.sock)

    def release(self, token: CancelToken | None) -> None:
        """``token``'s request is over: a late fire of it must not reach the line."""
        with self._lock:
            self.drain = None
            self.idle_since = time.monotonic()
            if self.owner is token:
                self.owner = None
                if token is not None and token.cancelled and not self.dead:
                    # Fired, and its thread got here before the fire's callback did (the
                    # thread polls the token between lines): the shutdown is done here,
                    # so the connection is not reused and its close waits as after any
                    # cancel.
                    self._shutdown()

    def _cancel(self, token: CancelToken) -> None:
        with self._lock:
            if self.owner is token:
                self._shutdown()

    def _shutdown(self) -> None:
        """Abort a blocked ``connect()``, ``recv()`` or handshake; the peer sees EOF."""
        self.dead = True
        # The plain TCP shutdown, also for a TLS socket (whose own shutdown() drops
        # its SSL object under a reading thread). OSError: already closed, the
        # request ended on its own.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)


def _set_timeout(sock: socket.socket, timeout: float | None) -> None:
    """``sock.settimeout(timeout)``, unless it is set already: CPython's settimeout
    switches the socket's blocking mode with a system call every time, and httpcore
    passes the same timeout to every read of a body (one read per streamed token)."""
    if sock.gettimeout() != timeout:
        sock.settimeout(timeout)


def _waits_for_peer(sock: socket.socket) -> bool:
    """Our FIN is out and the peer's end is not over yet (Linux's ``tcpi_state``, the
    first byte of ``tcp_info``); False where that cannot be read."""
    if _TCP_INFO is None or sock.fileno() < 0:
        return False
    try:
        state = socket.socket.getsockopt(sock, socket.IPPROTO_TCP, _TCP_INFO, 1)[0]
    except OSError:
        return False
    return state in (_TCP_FIN_WAIT1, _TCP_FIN_WAIT2)


def wait_for_peer_close(sock: socket.socket, seconds: float) -> None:
    """After our shutdown: wait until the peer's end is over too (its FIN, or a reset),
    about ``seconds`` at most (the last pause may overrun)."""
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds / _PEER_CLOSE_POLL) + 1):  # a sleep is never shorter
        if not _waits_for_peer(sock) or time.monotonic() >= deadline:
            return
        time.sleep(_PEER_CLOSE_POLL)


def _readable(sock: socket.socket) -> bool:
    """True when a read would not block: data, EOF, or an error (a dropped idle connection)."""
    if sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class SocketStream(httpcore.NetworkStream):
    """httpcore's view of one connection: blocking reads and writes on its socket."""

    def __init__(self, line: _Line, backend: TokenNetworkBackend) -> None:
        self._line = line
        self._backend = backend

    @property
    def sock(self) -> socket.socket:
        return self._line.sock

    def _claim(self) -> None:
        """A request on a kept-alive connection: its token takes the line over."""
        token = self._backend.current_token()
        line = self._line
        if line.idle_since is None and (token is None or token is line.owner):
            return  # the line's request, as at the previous read or write
        line.claim(token)

    def drain_within(self, seconds: float) -> None:
        """Reads of the rest of this response end ``seconds`` from now, all of them
        together (:func:`finish_body`): a trickle cannot hold the stream's ending."""
        self._line.drain = time.monotonic() + seconds

    def release(self, token: CancelToken | None) -> None:
        self._line.release(token)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self._claim()
        drain = self._line.drain
        try:
            if drain is not None:
                timeout = drain - time.monotonic()
                if timeout <= 0:
                    raise TimeoutError("the rest of the body did not come in time")
            _set_timeout(self.sock, timeout)
            return self.sock.recv(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(exc) from exc
        except (OSError, ValueError) as exc:  # ValueError: a TLS socket after its shutdown
            raise httpcore.ReadError(exc) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._claim()
        if not buffer:
            return  # httpcore's end of a sized body: nothing to send, no system call
        try:
            _set_timeout(self.sock, timeout)
            self.sock.sendall(buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(exc) from exc
        except (OSError, ValueError) as exc:
            raise httpcore.WriteError(exc) from exc

    def close(self) -> None:
        if self._line.dead:  # shut down by a cancel: let the upstream finish with it
            wait_for_peer_close(self.sock, PEER_CLOSE_WAIT)
        self.sock.close()
        self._backend.forget(self._line)

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        try:
            self.sock.settimeout(timeout)
            tls = ssl_context.wrap_socket(
                self.sock, server_hostname=server_hostname, do_handshake_on_connect=False
            )
            self._line.swap(tls)  # before the handshake, which can block
            tls.do_handshake()
        except TimeoutError as exc:
            self.close()
            raise httpcore.ConnectTimeout(exc) from exc
        except (OSError, ValueError) as exc:
            self.close()
            raise httpcore.ConnectError(exc) from exc
        return SocketStream(self._line, self._backend)

    def get_extra_info(self, info: str) -> Any:
        sock = self.sock
        if info == "socket":
            return sock
        if info == "ssl_object":  # httpcore reads its negotiated protocol (ALPN)
            return sock if isinstance(sock, ssl.SSLSocket) else None
        if info == "client_addr":
            return sock.getsockname()
        if info == "server_addr":
            return sock.getpeername()
        if info == "is_readable":  # httpcore asks before it reuses an idle connection
            return self._line.readable()
        return None


class TokenNetworkBackend(httpcore.NetworkBackend):
    """TCP connections whose socket is known to the request's cancel token before connect()."""

    def __init__(self) -> None:
        # The token of the request being made on this worker thread: httpcore connects
        # inside the pool's handle_request, on the thread that called it.
        self._current = threading.local()
        self._lines: set[_Line] = set()  # every connection not closed yet
        self._lines_lock = threading.Lock()

    def current_token(self) -> CancelToken | None:
        token: CancelToken | None = getattr(self._current, "token", None)
        return token

    def forget(self, line: _Line) -> None:
        with self._lines_lock:
            self._lines.discard(line)

    def idle_lines(self) -> int:
        with self._lines_lock:
            return sum(1 for line in self._lines if line.idle)

    def close_idle_since(self, before: float) -> int:
        """Close every connection no request has used since ``before`` (monotonic)."""
        with self._lines_lock:
            lines = list(self._lines)
        closed = [line for line in lines if line.close_if_idle_since(before)]
        for line in closed:
            self.forget(line)
        return len(closed)

    @contextlib.contextmanager
    def token(self, token: CancelToken | None) -> Iterator[None]:
        """Connections made or reused on this thread inside the block answer to ``token``."""
        self._current.token = token
        try:
            yield
        finally:
            self._current.token = None

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        token = self.current_token()
        try:
            addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(exc) from exc
        last: OSError = OSError(f"cannot resolve {host}")
        for family, kind, proto, _, address in addresses:
            line = _Line(socket.socket(family, kind, proto))
            if token is not None:
                line.claim(token)
            sock = line.sock
            try:
                sock.settimeout(timeout)
                if local_address is not None:
                    sock.bind((local_address, 0))
                sock.connect(address)
            except TimeoutError as exc:
                sock.close()
                raise httpcore.ConnectTimeout(exc) from exc
            except OSError as exc:
                sock.close()
                last = exc
                continue
            for option in socket_options or ():
                sock.setsockopt(*option)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lines_lock:
                self._lines.add(line)
            return SocketStream(line, self)
        raise httpcore.ConnectError(last) from last

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("upstreams are reached over TCP")


class _ResponseStream(httpx.SyncByteStream):
    """httpcore's response body, with its errors as httpx's; closing it releases its line."""

    def __init__(self, stream: Iterable[bytes], network: object, token: CancelToken | None) -> None:
        self._stream = stream
        self._network = network
        self._token = token

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._stream

    def close(self) -> None:
        # Released before httpcore may hand the connection to another request.
        if isinstance(self._network, SocketStream):
            self._network.release(self._token)
        close = getattr(self._stream, "close", None)
        if close is not None:
            with _httpx_errors():
                close()


class TokenTransport(httpx.BaseTransport):
    """An httpx transport over an httpcore pool of :class:`TokenNetworkBackend` connections.

    A request names its cancel token in the :data:`TOKEN` extension; its token reaches
    exactly the socket it uses, new or kept alive (the module's doc). At most
    ``keepalive`` idle connections are kept (0: none, a new connection per request).
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None, *, keepalive: int = 0) -> None:
        if keepalive < 0:
            raise ValueError("keepalive must be >= 0")
        self.keepalive = keepalive
        self._backend = TokenNetworkBackend()
        self._connections = httpcore.ConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(),
            max_connections=None,
            max_keepalive_connections=keepalive,
            keepalive_expiry=KEEPALIVE_EXPIRY,
            network_backend=self._backend,
        )

    def idle_connections(self) -> int:
        """Connections kept alive, waiting for a request (for tests and metrics); not
        those closed as expired or shut down by a cancel, which httpcore still counts
        until the pool is next used."""
        return self._backend.idle_lines()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        extensions: Mapping[str, Any] = request.extensions
        token = extensions.get(TOKEN)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions={k: v for k, v in extensions.items() if k != TOKEN},
        )
        with self._backend.token(token), _httpx_errors():
            # Each try that meets a connection closed as expired closes it for the pool;
            # at most ``keepalive`` idle ones can be met, then a new one is made.
            for _ in range(self.keepalive):
                try:
                    response = self._connections.handle_request(core_request)
                    break
                except ConnectionClosedIdle:
                    continue  # nothing was sent (the module's doc)
            else:
                response = self._connections.handle_request(core_request)
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(
                response.stream, response.extensions.get("network_stream"), token
            ),
            extensions=response.extensions,
        )

    def close_expired(self, expiry: float = KEEPALIVE_EXPIRY + _EXPIRY_GRACE) -> int:
        """Close the idle connections that have waited ``expiry`` seconds (httpcore would
        close them only when the pool is next used); how many."""
        return self._backend.close_idle_since(time.monotonic() - expiry)

    def close(self) -> None:
        self._connections.close()


def finish_body(response: httpx.Response, rest: Iterator[str]) -> None:
    """Read the rest of a streamed body whose last line was read (``rest``: the lines
    still to come, normally none: only the chunked terminator), waiting at most
    :data:`DRAIN_SECONDS` in all, so its connection can go back to the pool.

    If the rest does not come that soon (or is more than a few lines), the response
    is left unfinished and closing it closes its connection. Never raises.
    """
    network = response.extensions.get("network_stream")
    if not isinstance(network, SocketStream):
        return
    network.drain_within(DRAIN_SECONDS)
    with contextlib.suppress(httpx.HTTPError):
        for _ in zip(range(4), rest, strict=False):
            pass

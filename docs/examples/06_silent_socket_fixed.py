"""Step 6, fixed: the cancel fires a token whose callback shuts the socket down.

The thread registers its socket with a cancel token the moment it has one. When
the caller is cancelled, a small watcher task fires the token; its callback calls
``sock.shutdown(SHUT_RDWR)``, the blocked ``recv()`` returns at once, and the
upstream sees EOF (which makes a real model stop generating). This is
``jarvis_trio/threads.py`` and ``backends/transport.py`` in miniature.
"""

import socket
import threading
from collections.abc import Callable

import trio


class SilentUpstream:
    """Sends one line, then is silent until it sees EOF (or 10 s pass)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()
        self.saw_eof = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, self.listener:
            conn.sendall(b"token 1\n")
            conn.settimeout(10)
            if conn.recv(1) == b"":
                self.saw_eof.set()


class CancelToken:
    """Fired once by the trio side; runs its callbacks (thread-safe) when it fires."""

    def __init__(self) -> None:
        self.fired = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def add_callback(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if not self.fired.is_set():
                self._callbacks.append(callback)
                return
        callback()  # already fired: run it now

    def fire(self) -> None:
        with self._lock:
            self.fired.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()


async def run_in_worker(fn: Callable[[CancelToken], str]) -> str:
    """``fn(token)`` in a worker thread; cancelling the caller fires the token."""
    token = CancelToken()
    done = False

    async def fire_on_cancel() -> None:
        try:
            await trio.sleep_forever()
        finally:
            if not done:
                token.fire()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fire_on_cancel)
        result = await trio.to_thread.run_sync(fn, token)
        done = True
        nursery.cancel_scope.cancel()
    return result


upstream = SilentUpstream()


def read_model(token: CancelToken) -> str:
    with socket.create_connection(upstream.address) as sock:
        token.add_callback(lambda: sock.shutdown(socket.SHUT_RDWR))
        while not token.fired.is_set():  # the poll between lines, still useful
            line = sock.recv(1024)
            if not line:
                return "recv() returned EOF"
            print(f"thread: read {line.decode().strip()!r}")
        return "saw the token"


async def main() -> None:
    start = trio.current_time()
    with trio.move_on_after(0.2) as scope:  # B arrives 0.2 s in
        await run_in_worker(read_model)
    took = trio.current_time() - start
    print(f"cancelled: {scope.cancelled_caught}")
    print(f"the thread returned at once, not after the model's silence: {took < 0.5}")
    eof = await trio.to_thread.run_sync(upstream.saw_eof.wait, 1)
    print(f"upstream saw EOF: {eof}")


trio.run(main)

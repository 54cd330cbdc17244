"""Step 6, broken: a thread blocked in ``recv()`` on a silent upstream polls nothing.

The "model" on 127.0.0.1 sends one line, then says nothing (a model loading, a
stalled GPU). The thread polls ``check_cancelled()`` between lines, but it is
stuck inside ``recv()``, between no lines at all. A guard frees it after 1 s so
the script ends; without the guard it would wait as long as the model is silent.
"""

import socket
import threading

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


upstream = SilentUpstream()
in_recv = threading.Event()
sockets: list[socket.socket] = []


def read_model() -> str:
    with socket.create_connection(upstream.address) as sock:
        sockets.append(sock)
        while True:
            trio.from_thread.check_cancelled()  # the poll between lines
            in_recv.set()
            line = sock.recv(1024)
            in_recv.clear()
            if not line:
                return "recv() returned EOF"
            print(f"thread: read {line.decode().strip()!r}")


async def guard() -> None:
    await trio.sleep(1.2)
    if in_recv.is_set():
        print("guard: 1 s after the cancel the thread is still blocked in recv()")
        print(f"guard: upstream saw EOF so far: {upstream.saw_eof.is_set()}")
        print("guard: shutting the socket down so this script can end")
        sockets[0].shutdown(socket.SHUT_RDWR)


async def main() -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(guard)
        with trio.move_on_after(0.2):  # B arrives 0.2 s in
            result = await trio.to_thread.run_sync(read_model)
        print(f"thread: {result}, only after the guard's shutdown")
    eof = await trio.to_thread.run_sync(upstream.saw_eof.wait, 1)
    print(f"upstream saw EOF: {eof}, from the guard's shutdown, not from the cancel")


trio.run(main)

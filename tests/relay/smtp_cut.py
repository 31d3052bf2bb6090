"""A TCP proxy on 127.0.0.1 that loses the server's reply to the end of DATA.

On its first connection it forwards everything, including the client's final
``.`` of DATA, then swallows the server's reply to it (the ``250`` that says
the message is queued) and hangs up: the server has the message, the client
cannot know. Later connections pass through untouched. Plain SMTP only (no
STARTTLS: the proxy must read the stream).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType

END_OF_DATA = b"\r\n.\r\n"


class CutAfterData:
    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.connections = 0
        self.swallowed = b""  # the reply the client never saw
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> CutAfterData:
        self._start(self._accept)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self.listener.close()
        for thread in self._threads:
            thread.join(10)

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(self.target, timeout=30)
            dot = threading.Event() if self.connections == 1 else None
            self._start(self._client_to_server, client, upstream, dot)
            self._start(self._server_to_client, upstream, client, dot)

    @staticmethod
    def _client_to_server(client: socket.socket, upstream: socket.socket,
                          dot: threading.Event | None) -> None:
        tail = b""
        try:
            while data := client.recv(65536):
                if dot is not None and END_OF_DATA in tail + data:
                    dot.set()  # before forwarding: the reply cannot come first
                upstream.sendall(data)
                tail = (tail + data)[-len(END_OF_DATA):]
        except OSError:
            pass
        _close(upstream, client)

    def _server_to_client(self, upstream: socket.socket, client: socket.socket,
                          dot: threading.Event | None) -> None:
        try:
            while data := upstream.recv(65536):
                if dot is not None and dot.is_set():
                    self.swallowed = data
                    break
                client.sendall(data)
        except OSError:
            pass
        _close(upstream, client)


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

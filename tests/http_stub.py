"""A small HTTP/1.1 server on 127.0.0.1 for client tests: it records each request and answers
from a script, over kept-alive connections."""
from __future__ import annotations

import socket
import threading


class StubHttpServer:
    """Request n (from 1, over all connections) gets `answers[n - 1]`, the last one again once they
    run out; without answers, 200 with the request's body. `close_after`: answers per connection,
    after which it closes the connection without saying so (as an idle timeout does);
    `hang_up=True`: it closes after every answer. `requests` holds (head, body) pairs."""

    def __init__(self, answers: list[bytes] | None = None, *, close_after: int | None = None,
                 hang_up: bool = False) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.answers = answers
        self.close_after = 1 if hang_up else close_after
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _answer(self, body: bytes) -> bytes:
        if self.answers:
            return self.answers[min(len(self.requests), len(self.answers)) - 1]
        return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    def _handle(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            served = 0
            while self.close_after is None or served < self.close_after:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n")
                               if h.lower().startswith(b"content-length")), 0)
                body = reader.read(length)
                self.requests.append((head, body))
                conn.sendall(self._answer(body))
                served += 1

    def request_line(self, n: int) -> bytes:
        return self.requests[n][0].split(b"\r\n")[0]

    def close(self) -> None:
        self.sock.close()

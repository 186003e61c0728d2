"""Pooled http.client keep-alive connections for the vault's Table requests, and an azure-core HTTP
transport on them for the Tables SDK.

The SDK's default transport (requests over urllib3) spent more CPU per Table request than the rest
of the SDK and the vault together: about 1.1 of 1.7 ms per small insert, measured in-process. The
pool sends each request with one write on a pooled connection and reads the whole response; the SDK
keeps everything else (signing, serialization, batches, retries, errors). The vault's own insert
writer (rest_writer.py) sends on the same pool, so both share one set of connections.

A pooled connection the service closed while idle fails on its next request before any answer
arrives; that request is sent once more on a fresh connection (nothing was processed, and the
SDK's retry policy does not retry a POST such as an insert). Other failures become azure-core's
ServiceRequestError (no connection) or ServiceResponseError (no complete answer), as with requests.
"""
from __future__ import annotations

import http.client
import socket
import ssl
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlsplit

from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.core.pipeline.transport import HttpRequest, HttpTransport
from azure.core.pipeline.transport._base import HttpClientTransportResponse

_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)

Origin = tuple[str, str, int]  # scheme, host, port
T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    close: bool  # the service closes the connection after this answer


_MAX_LINE = 65536


def _line(reader: BinaryIO) -> bytes:
    line = reader.readline(_MAX_LINE + 1)
    if len(line) > _MAX_LINE:
        raise http.client.LineTooLong("header line")
    return line


def read_answer(reader: BinaryIO) -> Answer:
    """One HTTP/1.1 answer: status line, headers, and a Content-Length or chunked body."""
    line = _line(reader)
    if not line:
        raise http.client.RemoteDisconnected("Remote end closed connection without response")
    version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit():
        raise http.client.BadStatusLine(line.decode("latin-1", "replace"))
    status = int(code)
    headers: dict[str, str] = {}
    while True:
        line = _line(reader)
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    close = version == "HTTP/1.0" or headers.get("connection", "").lower() == "close"
    if status in (204, 304) or status < 200:
        body = b""
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = _chunked(reader)
    elif "content-length" in headers:
        length = _number(headers["content-length"], 10)
        body = reader.read(length)
        if len(body) < length:
            raise http.client.IncompleteRead(body, length - len(body))
    else:
        body, close = reader.read(), True  # the body runs to the end of the connection
    return Answer(status, reason, headers, body, close)


def _number(text: str | bytes, base: int) -> int:
    try:
        return int(text, base)
    except ValueError:
        raise http.client.HTTPException(f"not a length: {text!r}") from None


def _chunked(reader: BinaryIO) -> bytes:
    parts = []
    while True:
        size = _number(_line(reader).split(b";", 1)[0], 16)
        if size == 0:
            while _line(reader) not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(parts)
        part = reader.read(size)
        if len(part) < size:
            raise http.client.IncompleteRead(part, size - len(part))
        parts.append(part)
        reader.read(2)  # the CRLF after the chunk


def origin(url: str) -> tuple[Origin, str]:
    """The pool key of a URL and the request target (path and query) to send on it."""
    parts = urlsplit(url)
    key = (parts.scheme, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    return key, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


class ConnectionPool:
    def __init__(self, *, connection_timeout: float = 10.0, read_timeout: float = 60.0, pool_size: int = 64) -> None:
        self.connection_timeout = connection_timeout
        self.read_timeout = read_timeout
        self.pool_size = pool_size
        self._idle: dict[Origin, list[http.client.HTTPConnection]] = defaultdict(list)
        self._lock = threading.Lock()
        self._ssl: ssl.SSLContext | None = None

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, defaultdict(list)
        for connections in idle.values():
            for conn in connections:
                conn.close()

    def exchange(self, key: Origin, method: str, target: str, body: bytes | None, headers: dict[str, str], *,
                 connection_timeout: float | None = None,
                 read_timeout: float | None = None) -> tuple[http.client.HTTPResponse, bytes]:
        """Send one request with http.client and read its whole answer: (response, body)."""
        def send(conn: http.client.HTTPConnection) -> tuple[tuple[http.client.HTTPResponse, bytes], bool]:
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            return (response, response.read()), response.will_close  # read it all: back to the pool

        return self._on_connection(key, send, connection_timeout, read_timeout)

    def send_bytes(self, key: Origin, request: bytes, *, read_timeout: float | None = None) -> Answer:
        """Send a whole HTTP/1.1 request (head and body, formatted by the caller) in one write and
        read the answer with a minimal parser: http.client's request building and its header parsing
        (the `email` package) cost more CPU than a small Table insert's own work (rest_writer.py)."""
        def send(conn: http.client.HTTPConnection) -> tuple[Answer, bool]:
            conn.sock.sendall(request)
            with conn.sock.makefile("rb") as reader:  # as http.client does: one reader per answer
                answer = read_answer(reader)
            return answer, answer.close

        return self._on_connection(key, send, None, read_timeout)

    def _on_connection(self, key: Origin, send: Callable[[http.client.HTTPConnection], tuple[T, bool]],
                       connection_timeout: float | None, read_timeout: float | None) -> T:
        connect_timeout = self.connection_timeout if connection_timeout is None else connection_timeout
        read_timeout = self.read_timeout if read_timeout is None else read_timeout
        conn, reused = self._take(key, connect_timeout)
        try:
            try:
                answer, close = send(self._ready(conn, read_timeout))
            except _STALE:
                if not reused:
                    raise
                conn.close()  # closed by the service while idle: once more, on a new connection
                conn = self._new(key, connect_timeout)
                answer, close = send(self._ready(conn, read_timeout))
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise ServiceResponseError(exc, error=exc) from exc
        if close:
            conn.close()
        else:
            self._give(key, conn)
        return answer

    @staticmethod
    def _ready(conn: http.client.HTTPConnection, read_timeout: float) -> http.client.HTTPConnection:
        if conn.sock is None:
            try:
                conn.connect()
            except OSError as exc:  # nothing was sent
                conn.close()
                raise ServiceRequestError(exc, error=exc) from exc
            # no Nagle delays: http.client writes the head and a bytes body in two sends
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sock.settimeout(read_timeout)
        return conn

    def _new(self, key: Origin, timeout: float) -> http.client.HTTPConnection:
        scheme, host, port = key
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _take(self, key: Origin, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle[key]
            if idle:
                return idle.pop(), True
        return self._new(key, timeout), False

    def _give(self, key: Origin, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle[key]
            if len(idle) < self.pool_size:
                idle.append(conn)
                return
        conn.close()


class HttpClientTransport(HttpTransport):
    def __init__(self, *, connection_timeout: float = 10.0, read_timeout: float = 60.0, pool_size: int = 64,
                 pool: ConnectionPool | None = None) -> None:
        self.pool = pool or ConnectionPool(connection_timeout=connection_timeout, read_timeout=read_timeout,
                                           pool_size=pool_size)

    def __enter__(self) -> HttpClientTransport:
        return self

    def __exit__(self, *args: Any) -> None:
        self.close()

    def open(self) -> None:
        pass

    def close(self) -> None:
        self.pool.close()

    def send(self, request: HttpRequest, **kwargs: Any) -> HttpClientTransportResponse:  # type: ignore[override]
        if getattr(request, "files", None):
            raise ValueError("this transport sends bodies as bytes, not form files")
        key, target = origin(request.url)
        body = request.data
        if isinstance(body, str):
            body = body.encode("utf-8")
        raw, data = self.pool.exchange(key, request.method, target, body, dict(request.headers),
                                       connection_timeout=kwargs.get("connection_timeout"),
                                       read_timeout=kwargs.get("read_timeout"))
        response = HttpClientTransportResponse(request, raw)
        response.data = data
        return response

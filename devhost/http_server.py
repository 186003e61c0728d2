"""The HTTP side of the local host: a threaded server that turns requests into func.HttpRequest.

Responses go back as the function returned them. Unknown routes get 404, known routes with
another method 405 (with Allow), handler exceptions 500, badly framed requests 400 (nothing is
invoked and the connection is closed: where the next request starts is unknown), bodies over
FUNCTIONS_REQUEST_BODY_SIZE_LIMIT 413 - all as JSON errors. GET /admin/host/invocations answers
the invocation counts per function (the local host only; the real host has /admin routes too);
GET /.well-known/jwks.json the development token issuer's keys (devhost/devissuer.py).
Other GET/HEAD requests outside the route prefix get the dashboard's static files (static_site.py).
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from devhost import devissuer, logs, static_site
from devhost.accounting import InvocationCounts
from devhost.discovery import HttpFunction
from devhost.invoke import call
from devhost.request_head import BadHeader, read_headers

log = logging.getLogger("devhost.http")
_CHUNK = 1 << 20
BACKLOG = 1024  # socketserver's default of 5 resets connections under a burst of clients
ADMIN_INVOCATIONS = "/admin/host/invocations"
_MAX_CHUNK_LINE = 4096
# After a 413 the rest of the body is read and discarded (bounded), so that a client that sends the
# whole body before reading gets the answer instead of a reset.
_DRAIN_BYTES = 1 << 30
_DRAIN_SECONDS = 60.0
_DRAIN_IDLE_SECONDS = 10.0


class BadFraming(Exception):
    """The request's body framing cannot be trusted (RFC 9112 section 6)."""


def request_body_limit() -> int:
    """The Functions host's request size limit: FUNCTIONS_REQUEST_BODY_SIZE_LIMIT, default 100 MiB."""
    return int(os.environ.get("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT") or 104_857_600)


class InFlight:
    """Counts running invocations so shutdown can wait for them."""

    def __init__(self) -> None:
        self._count = 0
        self._cond = threading.Condition()

    def __enter__(self) -> None:
        with self._cond:
            self._count += 1

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._count -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._count == 0, timeout)


class FunctionHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # shutdown waits on InFlight instead (keep-alive threads may idle forever)

    request_queue_size = BACKLOG

    def __init__(self, address: tuple[str, int], functions: list[HttpFunction], route_prefix: str, *,
                 counts: InvocationCounts | None = None, listen_socket: socket.socket | None = None) -> None:
        self.functions = sorted(functions, key=lambda f: (f.route.param_count, -f.route.literal_weight))
        self.route_prefix = route_prefix.strip("/")
        self.in_flight = InFlight()
        self.draining = False
        self.counts = counts or InvocationCounts(f.name for f in functions)
        self.static_root: Path | None = static_site.DASHBOARD  # GET/HEAD outside the route prefix
        super().__init__(address, _Handler, bind_and_activate=listen_socket is None)
        if listen_socket is not None:
            # Pre-fork worker: serve the socket the parent listens on. Non-blocking, because the
            # workers race for each connection and the losers' accept() must not block.
            self.socket.close()
            self.socket = listen_socket
            self.socket.setblocking(False)
            self.server_address = self.socket.getsockname()

    def get_request(self) -> tuple[socket.socket, object]:
        conn, address = self.socket.accept()
        conn.setblocking(True)
        return conn, address

    def relative_path(self, path: str) -> str | None:
        """The path under the route prefix, or None if it is outside it."""
        if not self.route_prefix:
            return path
        prefix = "/" + self.route_prefix
        if path.lower() == prefix.lower():
            return "/"
        if path.lower().startswith(prefix.lower() + "/"):
            return path[len(prefix):]
        return None


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


class _Handler(BaseHTTPRequestHandler):
    server: FunctionHttpServer
    protocol_version = "HTTP/1.1"
    timeout = 120  # idle keep-alive connections are closed after this
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s - " + format, self.address_string(), *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own refusals (request line, headers, unknown method) as JSON errors too."""
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        status = HTTPStatus(code)
        slug = "bad-request" if code == 400 else status.phrase.lower().replace(" ", "-")
        self._send_json(code, _error(slug, message or status.phrase))

    def parse_request(self) -> bool:
        """The stdlib's request-line rules, with the header section read by request_head.py."""
        self.command = None
        self.request_version = "HTTP/1.0"  # until the request line says: refusals get a status line
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if not words:
            return False
        if len(words) != 3:  # HTTP/0.9 (two words) is not served either
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request syntax ({self.requestline!r})")
            return False
        command, path, version = words
        major, dot, minor = version.removeprefix("HTTP/").partition(".")
        if (not version.startswith("HTTP/") or not dot or not (major.isdigit() and minor.isdigit())
                or len(major) > 10 or len(minor) > 10):
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request version ({version!r})")
            return False
        if int(major) >= 2:
            self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, f"Invalid HTTP version ({major}.{minor})")
            return False
        self.close_connection = (int(major), int(minor)) < (1, 1)
        self.request_version = version
        self.command, self.path = command, path
        if self.path.startswith("//"):
            self.path = "/" + self.path.lstrip("/")
        try:
            self.headers = read_headers(self.rfile)
        except http.client.LineTooLong as exc:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long", str(exc))
            return False
        except http.client.HTTPException as exc:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers", str(exc))
            return False
        except BadHeader as exc:
            self.send_error(HTTPStatus.BAD_REQUEST, str(exc))  # a smuggling vector: never guess
            return False
        connection = self.headers.get("Connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        expects_continue = self.headers.get("Expect", "").lower() == "100-continue"
        return not expects_continue or self.request_version < "HTTP/1.1" or self.handle_expect_100()

    def _dispatch(self) -> None:
        with self.server.in_flight:
            self._route()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_TRACE = _dispatch

    def _route(self) -> None:
        method = self.command.upper()
        split = urlsplit(self.path)
        relative = self.server.relative_path(split.path)
        try:
            body = self._read_body()
        except BadFraming as exc:
            self.close_connection = True
            self._send_json(400, _error("bad-request", str(exc)))
            return
        if body is None:
            return
        if split.path.rstrip("/") == ADMIN_INVOCATIONS and method in ("GET", "HEAD"):
            self._send_json(200, json.dumps(self.server.counts.snapshot()).encode())
            return
        if method in ("GET", "HEAD") and (document := devissuer.well_known(split.path)) is not None:
            self._send_json(200, document)  # the development issuer's JWKS (devhost/devissuer.py)
            return
        if relative is None and method in ("GET", "HEAD"):
            found = static_site.find(self.server.static_root, split.path)
            if found is not None:
                self.send_response(200)
                for key, value in found.headers().items():
                    self.send_header(key, value)
                self._finish(found.body)
                return
        matches = []
        if relative is not None:
            for fn in self.server.functions:
                values = fn.route.match(relative)
                if values is not None:
                    matches.append((fn, values))
        if not matches:
            self._send_json(404, _error("not-found", f"no function serves {method} {split.path}"))
            return
        for fn, values in matches:
            if method in fn.methods:
                self._invoke(fn, values, split.query, body)
                return
        allowed = sorted({m for fn, _ in matches for m in fn.methods})
        self._send_json(405, _error("method-not-allowed", f"{method} is not allowed on {split.path}"),
                        {"Allow": ", ".join(allowed)})

    def _read_body(self) -> bytes | None:
        """The request body; None when an answer was already sent. Raises BadFraming."""
        transfer = self.headers.get_all("Transfer-Encoding") or []
        lengths = self.headers.get_all("Content-Length") or []
        if transfer and lengths:
            raise BadFraming("Content-Length and Transfer-Encoding together")
        if transfer:
            codings = [c.strip().lower() for value in transfer for c in value.split(",") if c.strip()]
            if codings != ["chunked"]:
                raise BadFraming(f"unsupported Transfer-Encoding: {', '.join(transfer)!r}")
            return self._read_chunked()
        if len(lengths) > 1:
            raise BadFraming("more than one Content-Length header")
        if not lengths:
            return b""
        text = lengths[0].strip()
        if not (text.isascii() and text.isdigit()):
            raise BadFraming(f"bad Content-Length: {lengths[0]!r}")
        length = int(text)
        if length > request_body_limit():
            self._refuse_too_large(length, remaining=length)
            return None
        buf = bytearray()
        while len(buf) < length:
            chunk = self.rfile.read(min(_CHUNK, length - len(buf)))
            if not chunk:
                self.close_connection = True
                return None  # client went away mid-body; nothing to answer
            buf += chunk
        return bytes(buf)

    def _read_chunked(self) -> bytes | None:
        buf = bytearray()
        while True:
            line = self.rfile.readline(_MAX_CHUNK_LINE + 1)
            if not line.endswith(b"\n"):
                raise BadFraming("chunked body ended before its last chunk" if len(line) <= _MAX_CHUNK_LINE
                                 else "chunk size line too long")
            size_text = line.split(b";", 1)[0].strip()
            if not size_text or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
                raise BadFraming(f"bad chunk size: {size_text[:40]!r}")
            size = int(size_text, 16)
            if size == 0:
                while True:  # trailers, up to the empty line
                    trailer = self.rfile.readline(_MAX_CHUNK_LINE + 1)
                    if not trailer.endswith(b"\n"):
                        raise BadFraming("chunked body ended inside its trailers")
                    if trailer in (b"\r\n", b"\n"):
                        return bytes(buf)
            if len(buf) + size > request_body_limit():
                self._refuse_too_large(len(buf) + size, remaining=None)
                return None
            data = self.rfile.read(size)
            if len(data) < size:
                raise BadFraming("chunked body ended inside a chunk")
            buf += data
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise BadFraming("chunk data not followed by CRLF")

    def _refuse_too_large(self, length: int, remaining: int | None) -> None:
        """413, then discard what the client still sends (bounded) so that it can read the answer:
        closing with unread data would reset the connection and lose the 413 in the client's buffer."""
        self.close_connection = True
        self._send_json(413, _error("body-too-large", f"request body of {length} bytes is over the host's "
                                    f"limit of {request_body_limit()} bytes (FUNCTIONS_REQUEST_BODY_SIZE_LIMIT)"))
        self.wfile.flush()
        if remaining is not None and self.headers.get("Expect", "").lower() == "100-continue":
            return  # handle_expect_100 sent no 100 Continue: the client sends no body
        budget = _DRAIN_BYTES if remaining is None else min(remaining, _DRAIN_BYTES)
        deadline = time.monotonic() + _DRAIN_SECONDS
        try:
            self.connection.settimeout(_DRAIN_IDLE_SECONDS)
            while budget > 0 and time.monotonic() < deadline:
                chunk = self.rfile.read1(min(_CHUNK, budget))
                if not chunk:
                    break
                budget -= len(chunk)
        except OSError:
            pass  # timed out or reset: the client stopped sending

    def handle_expect_100(self) -> bool:
        # Refuse an oversized body before the client sends it, instead of inviting it with 100.
        text = (self.headers.get("Content-Length") or "").strip()
        if text.isascii() and text.isdigit() and int(text) > request_body_limit():
            return True
        return super().handle_expect_100()

    def _invoke(self, fn: HttpFunction, route_values: dict[str, str], query: str, body: bytes) -> None:
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        headers: dict[str, str] = {}  # repeated fields joined in order, whatever their case (RFC 9110 5.3)
        names: dict[str, str] = {}
        for key, value in self.headers.items():
            name = names.setdefault(key.lower(), key)
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        params: dict[str, str] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            params.setdefault(key, value)
        request = func.HttpRequest(self.command.upper(), f"http://{host}{self.path}", headers=headers,
                                   params=params, route_params=route_values, body=body)
        invocation_id = str(uuid.uuid4())
        with logs.invocation(fn.name, invocation_id):
            log.info("Executing '%s' (%s %s)", fn.name, self.command, self.path)
            started = time.perf_counter()
            try:
                response = _as_response(call(fn.handler, fn.arg_name, request))
            except Exception as exc:  # noqa: BLE001 - the host answers 500 for any failure
                log.error("Executed '%s' (Failed): %s\n%s", fn.name, exc, traceback.format_exc().rstrip())
                self.server.counts.add(fn.name)
                self._send_json(500, _error("internal", f"{type(exc).__name__}: {exc}"))
                return
            log.info("Executed '%s' (Succeeded, %d, Duration=%.0fms)", fn.name, response.status_code,
                     1000 * (time.perf_counter() - started))
            self.server.counts.add(fn.name)
        self._send_response(response)

    def _send_response(self, response: func.HttpResponse) -> None:
        headers = list(response.headers.items())
        if not any(key.lower() == "content-type" for key, _ in headers):
            mimetype = response.mimetype  # as the Python worker does
            headers.append(("Content-Type", f"{mimetype}; charset={response.charset}"
                            if mimetype.startswith("text/") else mimetype))
        body = response.get_body() or b""
        self.send_response(response.status_code)
        for key, value in headers:
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self._finish(body)

    def _send_json(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self._finish(body)

    def _finish(self, body: bytes) -> None:
        self.send_header("Content-Length", str(len(body)))
        if self.server.draining or self.close_connection:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _as_response(result: object) -> func.HttpResponse:
    if isinstance(result, func.HttpResponse):
        return result
    if result is None:
        return func.HttpResponse(status_code=204)
    if isinstance(result, str | bytes):
        return func.HttpResponse(result)
    raise TypeError(f"HTTP function returned {type(result).__name__}, expected func.HttpResponse")

"""The vault's http.client transport and connection pool: keep-alive reuse, a connection closed while
idle, errors, and the answer parser of requests sent as bytes."""
from __future__ import annotations

import http.client
import io
import socket
from collections.abc import Iterator

import pytest
from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.core.pipeline.transport import HttpRequest

from shared.vault.transport import Answer, ConnectionPool, HttpClientTransport, read_answer
from tests.http_stub import StubHttpServer


@pytest.fixture
def transport() -> Iterator[HttpClientTransport]:
    with HttpClientTransport(connection_timeout=2, read_timeout=2) as t:
        yield t


def post(transport: HttpClientTransport, port: int, body: str):
    request = HttpRequest("POST", f"http://127.0.0.1:{port}/devstoreaccount1/vault?x=1")
    request.set_bytes_body(body.encode())
    return transport.send(request)


def test_requests_share_one_kept_alive_connection(transport):
    server = StubHttpServer()
    try:
        answers = [post(transport, server.port, f"entity {i}") for i in range(3)]
        assert [(a.status_code, a.body()) for a in answers] == [(200, f"entity {i}".encode()) for i in range(3)]
        assert answers[0].headers["content-type"] == "text/plain"
        assert server.request_line(0) == b"POST /devstoreaccount1/vault?x=1 HTTP/1.1"
        assert server.requests[0][1] == b"entity 0"
        assert server.connections == 1
    finally:
        server.close()


def test_a_connection_closed_while_idle_is_replaced_and_the_request_sent_once(transport):
    server = StubHttpServer(close_after=1)
    try:
        assert post(transport, server.port, "first").body() == b"first"
        assert post(transport, server.port, "second").body() == b"second"  # the pooled one was dead
        assert [body for _, body in server.requests] == [b"first", b"second"]
        assert server.connections == 2
    finally:
        server.close()


def test_no_listener_is_a_request_error(transport):
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    with pytest.raises(ServiceRequestError):
        post(transport, port, "x")


def test_a_garbled_answer_is_a_response_error(transport):
    server = StubHttpServer([b"NONSENSE\r\n\r\n"], hang_up=True)
    try:
        with pytest.raises(ServiceResponseError):
            post(transport, server.port, "x")
    finally:
        server.close()


# --- whole requests sent as bytes, answers read by the pool's own parser (the REST insert writer) ------

def raw_post(pool: ConnectionPool, port: int, body: bytes) -> Answer:
    request = (b"POST /devstoreaccount1/vault HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n"
               % len(body)) + body
    return pool.send_bytes(("http", "127.0.0.1", port), request)


def test_bytes_requests_share_the_kept_alive_connection_and_survive_an_idle_close():
    pool = ConnectionPool(connection_timeout=2, read_timeout=2)
    server = StubHttpServer(close_after=2)
    try:
        answers = [raw_post(pool, server.port, b"entity %d" % i) for i in range(3)]
        assert [(a.status, a.reason, a.body, a.close) for a in answers] == [
            (200, "OK", b"entity %d" % i, False) for i in range(3)]
        assert answers[0].headers["content-type"] == "text/plain"
        assert server.request_line(0) == b"POST /devstoreaccount1/vault HTTP/1.1"
        assert server.requests[0][1] == b"entity 0"
        assert server.connections == 2  # the third request found the first connection closed
        assert len(server.requests) == 3  # and was sent once more, not twice
    finally:
        server.close()
        pool.close()


def answer_of(raw: bytes) -> Answer:
    return read_answer(io.BufferedReader(io.BytesIO(raw)))


def test_a_chunked_answer_is_joined():
    raw = (b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\nContent-Type: multipart/mixed\r\n\r\n"
           b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\nNEXT")
    answer = answer_of(raw)
    assert (answer.status, answer.body, answer.close) == (202, b"hello, world", False)


def test_no_content_has_no_body_and_connection_close_is_kept():
    answer = answer_of(b"HTTP/1.1 204 No Content\r\nConnection: close\r\nETag: W/\"x\"\r\n\r\n")
    assert (answer.status, answer.reason, answer.body, answer.close) == (204, "No Content", b"", True)
    assert answer.headers["etag"] == 'W/"x"'


@pytest.mark.parametrize("raw", [
    b"NONSENSE\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
])
def test_broken_answers_are_http_errors(raw: bytes):
    with pytest.raises(http.client.HTTPException):
        answer_of(raw)


def test_a_garbled_answer_to_a_bytes_request_is_a_response_error():
    pool = ConnectionPool(connection_timeout=2, read_timeout=2)
    server = StubHttpServer([b"NONSENSE\r\n\r\n"], hang_up=True)
    try:
        with pytest.raises(ServiceResponseError):
            raw_post(pool, server.port, b"x")
    finally:
        server.close()

"""The local host's HTTP side, over real sockets: routing, request/response fidelity, errors, logs."""
from __future__ import annotations

import http.client
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator

import azure.functions as func
import pytest

from devhost.host import LocalFunctionHost
from devhost.logs import FORMAT, InvocationFilter

pytestmark = pytest.mark.integration
app_log = logging.getLogger("tests.devhost.app")


def _app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="results/{testId}/aggregate", methods=["GET"])
    def aggregate(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(json.dumps({"testId": req.route_params["testId"], "params": dict(req.params)}),
                                 mimetype="application/json")

    @app.route(route="items/{id:int}/{part?}", methods=["GET", "DELETE"])
    def item(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(json.dumps(dict(req.route_params)), mimetype="application/json")

    @app.route(route="items/special", methods=["GET"])
    def special(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("special")

    @app.route(route="echo", methods=["POST", "PUT"])
    def echo(req: func.HttpRequest) -> func.HttpResponse:
        app_log.info("echoing %d bytes", len(req.get_body()))
        return func.HttpResponse(
            req.get_body(), status_code=207, mimetype="application/octet-stream",
            headers={"X-Method": req.method, "X-Url": req.url, "X-Trace": req.headers.get("x-trace", ""),
                     "X-Length": str(len(req.get_body()))},
        )

    @app.route(route="text", methods=["GET"])
    def text(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("héllo", charset="utf-8", mimetype="text/plain")

    @app.route(route="boom", methods=["GET"])
    def boom(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("the handler broke")

    return app


@pytest.fixture(scope="module")
def host() -> Iterator[LocalFunctionHost]:
    h = LocalFunctionHost(_app(), port=0).start()
    try:
        yield h
    finally:
        assert h.stop(5)


def _request(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_route_params_and_query(host: LocalFunctionHost) -> None:
    status, headers, body = _request(f"{host.base_url}/results/abc%20d/aggregate?x=1&y=two&x=3")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"testId": "abc d", "params": {"x": "1", "y": "two"}}


def test_literal_segments_are_case_insensitive(host: LocalFunctionHost) -> None:
    status, _, body = _request(f"{host.base_url}/RESULTS/9/Aggregate")
    assert status == 200 and json.loads(body)["testId"] == "9"


def test_int_constraint_and_optional_segment(host: LocalFunctionHost) -> None:
    assert json.loads(_request(f"{host.base_url}/items/42")[2]) == {"id": "42"}
    assert json.loads(_request(f"{host.base_url}/items/42/notes")[2]) == {"id": "42", "part": "notes"}
    assert _request(f"{host.base_url}/items/special")[2] == b"special"  # literal beats {id:int}
    status, _, body = _request(f"{host.base_url}/items/abc/notes")
    assert status == 404 and json.loads(body)["error"]["code"] == "not-found"


def test_body_bytes_headers_status_round_trip(host: LocalFunctionHost) -> None:
    payload = bytes(range(256)) * 4096 + b"\r\n\x00tail"
    status, headers, body = _request(f"{host.base_url}/echo?a=b", "POST", payload,
                                     {"X-Trace": "t-1", "Content-Type": "application/octet-stream"})
    assert status == 207
    assert body == payload
    assert headers["X-Length"] == str(len(payload))
    assert headers["X-Method"] == "POST"
    assert headers["X-Trace"] == "t-1"
    assert headers["X-Url"] == f"{host.base_url}/echo?a=b"
    assert headers["Content-Type"] == "application/octet-stream"


def test_chunked_request_body(host: LocalFunctionHost) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=30)
    chunks = [b"first,", b"", b"second," * 1000, b"third"]
    conn.request("PUT", "/api/echo", body=iter(chunks), encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 207 and resp.read() == b"".join(chunks)
    conn.close()


def test_large_body_read_in_full(host: LocalFunctionHost) -> None:
    payload = os.urandom(24 * 1024 * 1024)
    status, headers, body = _request(f"{host.base_url}/echo", "POST", payload)
    assert status == 207 and headers["X-Length"] == str(len(payload)) and body == payload


def test_text_response_charset(host: LocalFunctionHost) -> None:
    status, headers, body = _request(f"{host.base_url}/text")
    assert status == 200
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert body.decode("utf-8") == "héllo"


def test_unknown_route_and_outside_prefix_are_404(host: LocalFunctionHost) -> None:
    for url in (f"{host.base_url}/nope", f"http://127.0.0.1:{host.port}/echo"):
        status, headers, body = _request(url)
        assert status == 404
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body)["error"]["code"] == "not-found"


def test_wrong_method_is_405_with_allow(host: LocalFunctionHost) -> None:
    status, headers, body = _request(f"{host.base_url}/echo")
    assert status == 405
    assert headers["Allow"] == "POST, PUT"
    assert json.loads(body)["error"]["code"] == "method-not-allowed"
    status, headers, _ = _request(f"{host.base_url}/items/7", "POST", b"x")
    assert status == 405 and headers["Allow"] == "DELETE, GET"


def test_handler_exception_is_500_json(host: LocalFunctionHost, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="devhost.http"):
        status, _, body = _request(f"{host.base_url}/boom")
    assert status == 500
    assert json.loads(body) == {"error": {"code": "internal", "message": "RuntimeError: the handler broke"}}
    failure = [r for r in caplog.records if "Failed" in r.getMessage()]
    assert failure and "Traceback" in failure[0].getMessage()
    # The server keeps serving after a failure.
    assert _request(f"{host.base_url}/items/1")[0] == 200


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.addFilter(InvocationFilter())
        self.setFormatter(logging.Formatter(FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_handler_logs_carry_function_and_invocation(host: LocalFunctionHost) -> None:
    collect = _Collect()
    logging.getLogger().addHandler(collect)
    try:
        _request(f"{host.base_url}/echo", "POST", b"12345")
    finally:
        logging.getLogger().removeHandler(collect)
    line = next(text for text in collect.lines if "echoing 5 bytes" in text)
    assert "[echo inv=" in line
    executing = next(text for text in collect.lines if "Executing 'echo'" in text)
    invocation = line.split("inv=")[1].split("]")[0]
    assert f"inv={invocation}]" in executing  # the same invocation id on the host's and the app's lines


def test_body_over_the_host_limit_is_refused_and_not_passed_on(host: LocalFunctionHost, monkeypatch, caplog) -> None:
    monkeypatch.setenv("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", "1000")
    with caplog.at_level(logging.INFO):
        status, _, body = _request(f"{host.base_url}/echo", "POST", b"x" * 1001)
        ok_status, _, ok_body = _request(f"{host.base_url}/echo", "POST", b"x" * 1000)
    assert status == 413
    assert json.loads(body)["error"]["code"] == "body-too-large"
    assert (ok_status, len(ok_body)) == (207, 1000)
    assert [r.getMessage() for r in caplog.records if "echoing" in r.getMessage()] == ["echoing 1000 bytes"]


# -- framing, limits and load, over raw sockets ------------------------------------------------------
def _raw(port: int, request: bytes, *, shut_write: bool = True, timeout: float = 30) -> bytes:
    """Send `request` as is and return everything the server answers until it closes."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)  # EOF: a body cut short stays cut short
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def _status_and_json(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def _echo_log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "Executing 'echo'" in r.getMessage()]


@pytest.mark.parametrize("request_bytes", [
    pytest.param(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
                 id="bad-chunk-size"),
    pytest.param(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabcd",
                 id="chunk-cut-short"),
    pytest.param(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n",
                 id="no-last-chunk"),
    pytest.param(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
                 id="two-different-content-lengths"),
    pytest.param(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
                 id="two-equal-content-lengths"),
    pytest.param(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"4\r\nabcd\r\n0\r\n\r\n", id="content-length-and-chunked"),
    pytest.param(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: -4\r\n\r\nabcd", id="negative-length"),
])
def test_badly_framed_request_is_400_and_invokes_nothing(host: LocalFunctionHost, caplog, request_bytes) -> None:
    with caplog.at_level(logging.INFO, logger="devhost.http"):
        answer = _raw(host.port, request_bytes)
    status, body = _status_and_json(answer)
    assert status == 400
    assert body["error"]["code"] == "bad-request" and body["error"]["message"]
    assert b"\r\nConnection: close" in answer.partition(b"\r\n\r\n")[0]
    assert _echo_log_lines(caplog) == []
    assert _request(f"{host.base_url}/items/1")[0] == 200  # and the server keeps serving


def test_well_framed_chunked_body_with_extensions_and_trailers(host: LocalFunctionHost) -> None:
    answer = _raw(host.port, b"POST /api/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                             b"Connection: close\r\n\r\n4;ext=1\r\nabcd\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 207") and body == b"abcd0123456789"


def test_413_is_readable_by_a_client_that_sends_the_whole_body(host: LocalFunctionHost, monkeypatch) -> None:
    # No Expect: 100-continue: the client writes all 8 MiB before it reads. Closing without reading
    # them would reset the connection and the client would never see the 413.
    monkeypatch.setenv("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", "1000")
    for _ in range(3):
        conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=60)
        conn.request("POST", "/api/echo", body=b"x" * (8 * 1024 * 1024),
                      headers={"Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        assert resp.status == 413
        assert resp.getheader("Connection") == "close"
        assert json.loads(resp.read())["error"]["code"] == "body-too-large"
        conn.close()


def test_413_for_an_oversized_chunked_body_is_readable(host: LocalFunctionHost, monkeypatch) -> None:
    monkeypatch.setenv("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", "1000")
    conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=60)
    conn.request("POST", "/api/echo", body=iter([b"y" * 65536] * 64), encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["error"]["code"] == "body-too-large"
    conn.close()


def test_413_with_expect_100_continue_is_sent_before_the_body(host: LocalFunctionHost, monkeypatch) -> None:
    monkeypatch.setenv("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", "1000")
    answer = _raw(host.port, b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                             b"Expect: 100-continue\r\n\r\n", shut_write=False)
    assert not answer.startswith(b"HTTP/1.1 100")
    status, body = _status_and_json(answer)
    assert status == 413 and body["error"]["code"] == "body-too-large"


def test_200_concurrent_posts_all_get_an_answer(host: LocalFunctionHost) -> None:
    # With socketserver's listen backlog of 5, some of these were reset before being accepted.
    from concurrent.futures import ThreadPoolExecutor

    def post(i: int) -> tuple[int, bytes]:
        status, _, body = _request(f"{host.base_url}/echo", "POST", str(i).encode())
        return status, body

    with ThreadPoolExecutor(200) as pool:
        results = list(pool.map(post, range(200)))
    assert results == [(207, str(i).encode()) for i in range(200)]


def test_invocation_counts_endpoint() -> None:
    h = LocalFunctionHost(_app(), port=0).start()
    try:
        for _ in range(3):
            _request(f"{h.base_url}/items/1")
        _request(f"{h.base_url}/boom")  # failures count too
        _request(f"{h.base_url}/nope")  # no function: nothing to count
        status, headers, body = _request(f"http://127.0.0.1:{h.port}/admin/host/invocations")
    finally:
        h.stop(5)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"aggregate": 0, "boom": 1, "echo": 0, "item": 3, "special": 0, "text": 0}


@pytest.mark.parametrize(("request_bytes", "status"), [
    pytest.param(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nContent-Length : 4\r\n\r\nabcd", 400, id="space-before-colon"),
    pytest.param(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\nContent-Length: 4\r\n\r\nabcd", 400,
                 id="obsolete-line-folding"),
    pytest.param(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400, id="no-colon"),
    pytest.param(b"POST /api/echo HTTP/1.1\r\nHost: x\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n", 431,
                 id="too-many-headers"),
    pytest.param(b"POST /api/echo HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n", 431,
                 id="header-line-too-long"),
    pytest.param(b"GET /api/items/1\r\n\r\n", 400, id="http-0.9"),
    pytest.param(b"GET /api/items/1 HTTP/2.0\r\nHost: x\r\n\r\n", 505, id="http-2-over-http-1"),
    pytest.param(b"GET /api/items/1 HTTP/1.x\r\nHost: x\r\n\r\n", 400, id="bad-version"),
])
def test_a_malformed_request_head_is_refused_as_json_and_invokes_nothing(host: LocalFunctionHost, caplog,
                                                                         request_bytes, status) -> None:
    with caplog.at_level(logging.INFO, logger="devhost.http"):
        answer = _raw(host.port, request_bytes)
    got, body = _status_and_json(answer)
    assert got == status
    assert body["error"]["message"]
    assert b"\r\nConnection: close" in answer.partition(b"\r\n\r\n")[0]
    assert _echo_log_lines(caplog) == []


def test_repeated_headers_reach_the_function_joined_in_order(host: LocalFunctionHost) -> None:
    answer = _raw(host.port, b"POST /api/echo HTTP/1.1\r\nHost: x\r\nX-Trace: a\r\nx-trace:  b \r\n"
                             b"Content-Length: 2\r\nConnection: close\r\n\r\nhi")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 207")
    assert b"\r\nX-Trace: a, b\r\n" in head and body == b"hi"

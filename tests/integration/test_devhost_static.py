"""The local host serves the dashboard's static files at / : content types, no way out of the folder,
and /api/... untouched. Raw http.client requests, so that paths reach the server exactly as written."""
from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from pathlib import Path

import azure.functions as func
import pytest

from devhost import static_site
from devhost.host import LocalFunctionHost

pytestmark = pytest.mark.integration


def _app() -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="index.html", methods=["GET"])
    def api_index(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(json.dumps({"from": "function"}), mimetype="application/json")

    return app


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("static")
    root = base / "site"
    (root / "views").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>home</title>")
    (root / "app.js").write_text("export const a = 1;")
    (root / "styles.css").write_text("body{}")
    (root / "config.json").write_text("{}")
    (root / "views" / "list.js").write_text("export {};")
    (root / "notes.md").write_text("unknown type")
    (root / ".hidden.js").write_text("dot-file")
    (base / "secret.txt").write_text("outside the root")
    os.symlink(base / "secret.txt", root / "escape.txt")
    return root


@pytest.fixture(scope="module")
def host(site: Path) -> Iterator[LocalFunctionHost]:
    h = LocalFunctionHost(_app(), port=0).start()
    h._server.static_root = site
    try:
        yield h
    finally:
        assert h.stop(5)


def _get(host: LocalFunctionHost, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize(("path", "content_type", "body"), [
    ("/", "text/html; charset=utf-8", b"<!doctype html><title>home</title>"),
    ("/index.html", "text/html; charset=utf-8", b"<!doctype html><title>home</title>"),
    ("/app.js", "text/javascript; charset=utf-8", b"export const a = 1;"),
    ("/styles.css", "text/css; charset=utf-8", b"body{}"),
    ("/config.json", "application/json", b"{}"),
    ("/views/list.js?v=2", "text/javascript; charset=utf-8", b"export {};"),
    ("/views/%6Cist.js", "text/javascript; charset=utf-8", b"export {};"),
])
def test_files_are_served_with_their_content_type(host, path, content_type, body) -> None:
    status, headers, content = _get(host, path)
    assert (status, headers["Content-Type"], content) == (200, content_type, body)
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in headers["Content-Security-Policy"]


def test_head_answers_headers_only(host) -> None:
    status, headers, content = _get(host, "/app.js", "HEAD")
    assert (status, content, headers["Content-Length"]) == (200, b"", str(len("export const a = 1;")))


@pytest.mark.parametrize("path", [
    "/../secret.txt", "/views/../../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E%2Fsecret.txt",
    "/views/..%2f..%2fsecret.txt", "/..%5csecret.txt", "/views\\..\\..\\secret.txt", "//secret.txt",
    "/escape.txt", "/index.html%00.js", "/.hidden.js", "/notes.md", "/missing.js", "/views",
    "/%ff.js", "/" + "a/" * 300 + "x.js",
])
def test_nothing_outside_the_folder_or_of_an_unknown_type_is_served(host, path) -> None:
    status, headers, content = _get(host, path)
    assert status == 404, (path, content)
    assert headers["Content-Type"] == "application/json"
    assert json.loads(content)["error"]["code"] == "not-found"
    assert b"outside the root" not in content


def test_api_routes_are_not_shadowed_and_other_methods_are_not_static(host) -> None:
    status, headers, content = _get(host, "/api/index.html")
    assert (status, json.loads(content)) == (200, {"from": "function"})
    status, _, content = _get(host, "/index.html", "POST")
    assert status == 404 and json.loads(content)["error"]["code"] == "not-found"


def test_the_real_dashboard_folder_is_what_the_host_serves_by_default() -> None:
    found = static_site.find(static_site.DASHBOARD, "/")
    assert found is not None and b'<main id="main"' in found.body
    assert static_site.find(static_site.DASHBOARD, "/../pyproject.toml") is None
    assert static_site.find(None, "/") is None

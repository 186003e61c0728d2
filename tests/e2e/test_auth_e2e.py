"""Who may call what, through `python -m devhost` running function_app.py over HTTP: development
tokens, vendor API keys (issued with markr-ops), an Entra ID stand-in (key rollover), and the Azure
issuer refusing development tokens."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import psycopg
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from devhost.devissuer import DEV_AUDIENCE, JWKS_PATH, DevIssuer
from devhost.stack import free_port
from devhost.testing import HostProcess, start_host_process
from markr_ops.cli import main as markr_ops
from shared.auth import Role
from tests import auth
from tests.documents import make_document

pytestmark = pytest.mark.e2e
XML = {"Content-Type": "text/xml+markr"}


def call(host: HostProcess, method: str, path: str, headers: dict | None = None,
         body: bytes | None = None) -> tuple[int, dict, dict]:
    url = host.base_url.removesuffix("/api") + path
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read() or b"null")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def document(test_id: str) -> bytes:
    return make_document([{"student_number": "s1", "test_id": test_id, "available": 10, "obtained": 7}])


@pytest.fixture(scope="module")
def module_db(postgres_server: str, template_database: str) -> Iterator[str]:
    name = f"t_auth_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE markr_template")
    yield postgres_server.rpartition("/")[0] + f"/{name}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def host_env(database_url: str, vault_storage: str, **auth_settings: str) -> dict[str, str]:
    return {"MARKR_DATABASE_URL": database_url, "VaultStorage": vault_storage, "MARKR_BUS": "local",
            "MARKR_VAULT_TABLE": f"vault{uuid.uuid4().hex[:12]}", "MARKR_IMPORT_WAIT_SECONDS": "30",
            **auth_settings}


@pytest.fixture(scope="module")
def host(module_db: str, vault_storage: str) -> Iterator[HostProcess]:
    """As scripts/up runs it: the app fetches the development issuer's JWKS from the host itself."""
    port = free_port()
    env = host_env(module_db, vault_storage, MARKR_AUTH_JWKS_URL=f"http://127.0.0.1:{port}{JWKS_PATH}")
    process = start_host_process(env, port=port).wait_ready()
    process.env = env
    yield process
    process.close()


# ---- tokens from the development issuer

def test_the_host_serves_the_development_issuers_jwks(host):
    status, _, jwks = call(host, "GET", JWKS_PATH)
    assert status == 200 and jwks == auth.issuer().jwks()


@pytest.mark.parametrize(("method", "path"), [("POST", "/api/import"), ("GET", "/api/results/1/aggregate"),
                                              ("GET", "/api/submissions/01ARZ3NDEKTSV4RRFFQ69G5FAV"),
                                              ("GET", "/api/ops/queues")])
def test_a_missing_token_is_401_with_a_bearer_challenge(host, method, path):
    status, headers, body = call(host, method, path, XML if method == "POST" else None,
                                 document("m1") if method == "POST" else None)
    assert status == 401, body
    assert headers["WWW-Authenticate"] == 'Bearer realm="markr"'
    assert body["error"]["code"] == "unauthorized"


def test_health_is_bare_for_anyone_and_detailed_for_operators(host):
    assert call(host, "GET", "/api/health")[::2] == (200, {"status": "ok"})
    assert call(host, "GET", "/api/health", auth.bearer(Role.READ))[::2] == (200, {"status": "ok"})
    status, _, body = call(host, "GET", "/api/health", auth.bearer(Role.ADMIN))
    assert status == 200 and set(body["components"]) == {"storage", "database", "queues"}
    assert call(host, "GET", "/api/health", bearer("garbage"))[0] == 401


def _forged(alg: str, key: bytes | None) -> str:
    """A token whose header says `alg`, "signed" with `key` (HMAC) or not at all."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = jwt.decode(auth.token(Role.READ), options={"verify_signature": False})
    signing_input = f"{b64(json.dumps({'alg': alg, 'typ': 'JWT', 'kid': auth.issuer().kid}).encode())}." \
                    f"{b64(json.dumps(claims).encode())}"
    signature = b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest()) if key else ""
    return f"{signing_input}.{signature}"


def _bad_tokens() -> dict[str, tuple[str, str]]:
    now = time.time()
    stranger = DevIssuer.ensure(auth.ISSUER_DIR / f"stranger-{uuid.uuid4().hex[:6]}")  # removed with it
    public_pem = auth.issuer().private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return {
        "expired": (auth.issuer().mint([Role.READ], expires_in=-300), "expired"),
        "not yet valid": (auth.issuer().mint([Role.READ], not_before=now + 600, expires_in=1200), "not valid yet"),
        "wrong audience": (auth.issuer().mint([Role.READ], audience="api://someone-else"), "audience"),
        "wrong issuer": (auth.issuer().mint([Role.READ], issuer="https://evil.example/"), "another issuer"),
        # signed by another key, claiming the trusted key's id
        "bad signature": (jwt.encode(jwt.decode(auth.token(Role.READ), options={"verify_signature": False}),
                                     stranger.private_key, algorithm="ES256", headers={"kid": auth.issuer().kid}),
                          "signature"),
        "alg none": (_forged("none", None), "algorithm 'none'"),
        "HS256 with the public key": (_forged("HS256", public_pem), "algorithm 'HS256'"),
    }


@pytest.mark.parametrize("case", ["expired", "not yet valid", "wrong audience", "wrong issuer", "bad signature",
                                  "alg none", "HS256 with the public key"])
def test_bad_tokens_are_401_invalid_token_saying_why(host, case):
    token, why = _bad_tokens()[case]
    status, headers, body = call(host, "GET", "/api/results/1/aggregate", bearer(token))
    assert status == 401, body
    assert headers["WWW-Authenticate"].startswith('Bearer realm="markr", error="invalid_token", error_description="')
    assert why in body["error"]["message"] and body["error"]["code"] == "invalid-token"
    assert token not in host.log()  # the reason is logged, never the token


def test_the_wrong_role_is_403_naming_the_role_and_nothing_is_vaulted(host):
    status, _, body = call(host, "GET", "/api/results/1/aggregate", auth.bearer(Role.SUBMIT, vendor="acme"))
    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert "Results.Read" in body["error"]["message"]
    status, _, body = call(host, "POST", "/api/import", {**XML, **auth.bearer(Role.READ)}, document("r1"))
    assert status == 403 and "Results.Submit" in body["error"]["message"]
    assert call(host, "GET", "/api/ops/queues", auth.bearer(Role.READ))[0] == 403
    assert call(host, "GET", "/api/ops/queues", auth.bearer(Role.ADMIN))[0] == 200
    # No refused import reached the vault (the table is created by the first vaulted document).
    from azure.data.tables import TableServiceClient

    service = TableServiceClient.from_connection_string(host.env["VaultStorage"])
    tables = {t.name for t in service.list_tables()}
    assert host.env["MARKR_VAULT_TABLE"] not in tables or not list(
        service.get_table_client(host.env["MARKR_VAULT_TABLE"]).list_entities())


def test_a_vendor_is_the_source_and_reads_only_its_own_submissions(host, module_db):
    vendor_a, vendor_b = auth.bearer(Role.SUBMIT, vendor="vendor-a"), auth.bearer(Role.SUBMIT, vendor="vendor-b")
    status, _, posted = call(host, "POST", "/api/import", {**XML, **vendor_a}, document("va-1"))
    assert status == 201, posted
    sid = posted["submissionId"]
    assert call(host, "GET", f"/api/submissions/{sid}", vendor_a)[2]["source"] == "vendor-a"
    status, _, body = call(host, "GET", f"/api/submissions/{sid}", vendor_b)
    assert (status, body["error"]["code"]) == (404, "submission-not-found")
    assert call(host, "GET", f"/api/submissions/{sid}", auth.bearer(Role.READ))[2]["source"] == "vendor-a"
    assert call(host, "GET", f"/api/submissions/{sid}", auth.bearer(Role.ADMIN))[0] == 200
    # Still `received` (read from the vault): vendor B does not find it either.
    status, _, pending = call(host, "POST", "/api/import", {**XML, **vendor_a, "Prefer": "respond-async"},
                              document("va-2"))
    assert status == 202
    assert call(host, "GET", f"/api/submissions/{pending['submissionId']}", vendor_b)[0] == 404
    with psycopg.connect(module_db) as conn:
        sources = conn.execute("SELECT DISTINCT source FROM submissions WHERE submission_id = %s", (sid,)).fetchall()
    assert sources == [("vendor-a",)]


# ---- vendor API keys, issued with markr-ops

def ops(host: HostProcess, tmp_path: Path, *args: str) -> str:
    settings = tmp_path / "ops.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": {}}))
    result = CliRunner().invoke(markr_ops, ["--settings", str(settings), *args],
                                env={"MARKR_DATABASE_URL": host.env["MARKR_DATABASE_URL"], "COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.output


def key_of(output: str) -> str:
    return json.loads(output)["apiKey"]


def post_with_key(host: HostProcess, key: str, test_id: str) -> tuple[int, dict]:
    status, _, body = call(host, "POST", "/api/import", {**XML, "X-Markr-Api-Key": key, "Prefer": "respond-async"},
                           document(test_id))
    return status, body


def test_api_keys_rotate_and_revoke(host, tmp_path):
    first = key_of(ops(host, tmp_path, "vendors", "add", "scanner-co", "--json"))
    status, body = post_with_key(host, first, "k-1")
    assert status == 202, body
    assert call(host, "GET", f"/api/submissions/{body['submissionId']}", auth.bearer(Role.READ))[2]["source"] \
        == "scanner-co"
    listed = json.loads(ops(host, tmp_path, "vendors", "list", "--json"))["vendors"]
    keys = next(v for v in listed if v["name"] == "scanner-co")["keys"]
    assert keys[0]["lastUsedAt"] and first not in json.dumps(listed)  # last use recorded; the key never shown

    # Rotation with a grace period: both keys work until it ends; without one the old key stops at once.
    second = key_of(ops(host, tmp_path, "vendors", "rotate", "scanner-co", "--grace", "1h", "--json"))
    assert post_with_key(host, first, "k-2")[0] == 202 and post_with_key(host, second, "k-3")[0] == 202
    third = key_of(ops(host, tmp_path, "vendors", "rotate", "scanner-co", "--json"))
    status, body = post_with_key(host, first, "k-4")
    assert status == 401 and body["error"]["code"] == "invalid-token"
    assert post_with_key(host, second, "k-5")[0] == 401
    assert post_with_key(host, third, "k-6")[0] == 202

    ops(host, tmp_path, "vendors", "revoke", "scanner-co", "--all")
    status, body = post_with_key(host, third, "k-7")
    assert status == 401 and "revoked" in body["error"]["message"]
    assert third.split("_", 2)[2] not in host.log()  # failed attempts are logged without the secret
    assert "key_id=" + third.split("_")[1] in host.log()


# ---- an Entra ID stand-in: key rollover, and development tokens refused under the Azure issuer

class JwksServer:
    def __init__(self, issuer: auth.RsaIssuer) -> None:
        self.issuer = issuer
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                body = json.dumps(outer.issuer.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/discovery/v2.0/keys"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def entra() -> Iterator[tuple[auth.RsaIssuer, JwksServer]]:
    issuer = auth.RsaIssuer()
    issuer.new_key("k1")
    server = JwksServer(issuer)
    yield issuer, server
    server.close()


@pytest.fixture(scope="module")
def azure_host(module_db: str, vault_storage: str, entra) -> Iterator[HostProcess]:
    """Configured as in Azure (a tenant): the Entra issuer, with the stand-in's JWKS URL."""
    _, server = entra
    env = host_env(module_db, vault_storage, MARKR_AUTH_TENANT_ID=auth.TENANT, MARKR_AUTH_ISSUER="",
                   MARKR_AUTH_AUDIENCE=auth.AUDIENCE, MARKR_AUTH_JWKS_URL=server.url)
    process = start_host_process(env).wait_ready()
    process.env = env
    yield process
    process.close()


def test_an_unknown_kid_refetches_the_jwks_once_and_a_rollover_is_followed(azure_host, entra):
    issuer, _ = entra
    read = {"roles": ["Results.Read"]}
    path = "/api/results/none/aggregate"
    assert call(azure_host, "GET", path, bearer(issuer.token("k1", **read)))[0] == 404  # authenticated
    before = issuer.fetches
    issuer.new_key("k2")  # rollover: the issuer publishes a new key and signs with it
    assert call(azure_host, "GET", path, bearer(issuer.token("k2", **read)))[0] == 404
    assert issuer.fetches == before + 1
    issuer.new_key("k3", publish=False)  # made-up kids: no fetch each time (rate-limited)
    for _ in range(3):
        status, _, body = call(azure_host, "GET", path, bearer(issuer.token("k3", **read)))
        assert status == 401 and "not one of the issuer's keys" in body["error"]["message"]
    assert issuer.fetches == before + 1


def test_a_development_token_is_refused_under_the_azure_issuer(azure_host, entra, tmp_path):
    issuer, _ = entra
    path = "/api/results/none/aggregate"
    dev = auth.issuer()
    for token in (dev.mint([Role.READ]),  # as markr-ops token makes it
                  dev.mint([Role.READ], issuer=auth.ISSUER, audience=auth.AUDIENCE, tid=auth.TENANT)):  # forged
        status, headers, body = call(azure_host, "GET", path, bearer(token))
        assert status == 401 and "invalid_token" in headers["WWW-Authenticate"], body
    assert call(azure_host, "GET", path, bearer(issuer.token("k1", roles=["Results.Read"])))[0] == 404
    assert call(azure_host, "GET", JWKS_PATH)[0] == 404  # no development JWKS either
    settings = tmp_path / "azure.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": {"MARKR_AUTH_TENANT_ID": auth.TENANT}}))
    result = CliRunner().invoke(markr_ops, ["--settings", str(settings), "token", "--role", "Results.Read"],
                                env={"MARKR_AUTH_TENANT_ID": auth.TENANT})
    assert result.exit_code == 1 and "Entra" in result.output


def test_an_entra_vendor_application_is_mapped_to_its_vendor(azure_host, entra, tmp_path):
    issuer, _ = entra
    ops(azure_host, tmp_path, "vendors", "add", "entra-vendor", "--app-id", "app-ev", "--no-key")
    submit = issuer.token("k1", roles=["Results.Submit"], azp="app-ev")
    status, _, body = call(azure_host, "POST", "/api/import", {**XML, **bearer(submit)}, document("ev-1"))
    assert status == 201, body
    read = bearer(issuer.token("k1", roles=["Results.Read"]))
    assert call(azure_host, "GET", f"/api/submissions/{body['submissionId']}", read)[2]["source"] == "entra-vendor"
    stranger = issuer.token("k1", roles=["Results.Submit"], azp="app-unknown")
    status, _, body = call(azure_host, "POST", "/api/import", {**XML, **bearer(stranger)}, document("ev-2"))
    assert status == 403 and "not" in body["error"]["message"]


def test_markr_ops_token_prints_a_token_the_host_accepts(host):
    result = CliRunner().invoke(markr_ops, ["token", "--role", "Results.Read", "--role", "Ops.Admin",
                                            "--expires", "5m"])
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(claims["roles"]) == {"Results.Read", "Ops.Admin"} and claims["aud"] == DEV_AUDIENCE
    assert 250 <= claims["exp"] - claims["iat"] <= 300
    assert call(host, "GET", "/api/ops/queues", bearer(token))[0] == 200

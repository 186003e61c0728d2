"""The vault's Tables REST insert writer: entity JSON, SharedKey signing (against the SDK's own
policy), bearer tokens, the $batch body, batch answers, and retries against a local socket server."""
from __future__ import annotations

import email
import json
import socket
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from azure.core.credentials import AccessToken, AzureNamedKeyCredential, AzureSasCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.rest import HttpRequest
from azure.data.tables import EdmType, EntityProperty, RequestTooLargeError, TableTransactionError
from azure.data.tables._authentication import SharedKeyCredentialPolicy
from azure.data.tables._serialize import _add_entity_properties

from devhost.stack import AZURITE_ACCOUNT, AZURITE_KEY
from shared.vault.rest_writer import (
    BearerToken,
    SharedKey,
    TablesRestWriter,
    batch_error,
    entity_json,
    entity_properties,
)
from shared.vault.transport import ConnectionPool
from tests.http_stub import StubHttpServer

HEAD = {
    "PartitionKey": "school-a", "RowKey": "01HZY3J6V9K2T8Q4W5E7R1N0MB", "ContentType": "text/xml+markr",
    "ReceivedAt": datetime(2024, 3, 5, 9, 30, 15, 123456, tzinfo=UTC), "ByteSize": 17_301,
    "Sha256": "ab" * 32, "Compression": "gzip", "CompressedSize": 1102, "FormatVersion": 2, "ChunkCount": 0,
    "Algorithm": "AES-256-GCM", "KeyId": "local/1", "KeyWrap": "A256KW", "WrappedKey": bytes(range(40)),
    "Nonce": b"\x00\xff" * 6, "Body": bytes(range(256)) * 4,
}


def sdk_json(entity: dict) -> dict:
    """What the SDK sends, less the Edm.String annotations it adds (a string is the default type)."""
    return {k: v for k, v in _add_entity_properties(entity).items()
            if not (k.endswith("@odata.type") and v == "Edm.String")}


# --- entity JSON ------------------------------------------------------------------------------------

def test_a_head_is_written_with_the_types_the_sdk_writes() -> None:
    assert entity_properties(HEAD) == sdk_json(HEAD)
    assert json.loads(entity_json(HEAD)) == sdk_json(HEAD)


def test_every_property_type_matches_the_sdk() -> None:
    entity = {
        "PartitionKey": "p", "RowKey": "r", "Text": "é \"quoted\" \u2028", "Small": -5, "Flag": False,
        "Ratio": 0.25, "NotANumber": float("nan"), "Huge": float("inf"), "Id": uuid.UUID(int=7),
        "Big": EntityProperty(2**40, EdmType.INT64), "Typed32": EntityProperty(3, EdmType.INT32),
        "TypedBytes": (b"\x01\x02", "Edm.Binary"), "Away": datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
        "Missing": None, "Empty": b"",
    }
    mine = entity_properties(entity)
    sdk = sdk_json(entity)
    assert {k: v for k, v in mine.items() if k != "NotANumber"} == {k: v for k, v in sdk.items() if k != "NotANumber"}
    assert mine["NotANumber"] == sdk["NotANumber"] == "NaN"
    assert mine["Away"] == "2024-01-02T01:04:05.000000Z"
    assert mine["Big"] == "1099511627776" and mine["Big@odata.type"] == "Edm.Int64"


def test_an_int_beyond_int32_is_refused_as_the_sdk_refuses_it() -> None:
    with pytest.raises(TypeError):
        _add_entity_properties({"n": 2**31})
    with pytest.raises(TypeError, match="Int32"):
        entity_properties({"n": 2**31})
    with pytest.raises(TypeError, match="not supported"):
        entity_properties({"n": [1, 2]})


# --- SharedKey ----------------------------------------------------------------------------------------

def sdk_signature(method: str, url: str, headers: dict[str, str]) -> str:
    request = HttpRequest(method, url, headers=dict(headers))
    policy = SharedKeyCredentialPolicy(AzureNamedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY))
    policy.sign_request(PipelineRequest(request, PipelineContext(None)))
    return request.headers["Authorization"]


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:10002/devstoreaccount1",
                                      "https://devstoreaccount1.table.core.windows.net"])
def test_shared_key_signs_inserts_and_batches_as_the_sdk_does(endpoint: str) -> None:
    writer = TablesRestWriter(endpoint, "vault1234", SharedKey(AZURITE_ACCOUNT, AZURITE_KEY), ConnectionPool())
    for path, content_type in ((writer._table_path, "application/json;odata=nometadata"),
                               (writer._batch_path, "multipart/mixed; boundary=batch_1")):
        headers = writer._headers(content_type, "application/json")
        writer._auth.authorize("POST", path, headers)
        url = endpoint.split("://")[0] + "://" + endpoint.split("://")[1].split("/")[0] + path
        assert headers["Authorization"] == sdk_signature("POST", url, {k: v for k, v in headers.items()
                                                                       if k != "Authorization"})
    assert writer._table_path == ("/devstoreaccount1/vault1234" if "127.0.0.1" in endpoint else "/vault1234")


def test_shared_key_matches_a_fixed_signature() -> None:
    # Computed once with the SDK's SharedKeyCredentialPolicy for this exact request; guards the
    # string-to-sign layout (verb, Content-MD5, Content-Type, date, /account/path) without the SDK.
    key = SharedKey(AZURITE_ACCOUNT, AZURITE_KEY)
    date = "Sun, 22 Nov 2026 07:35:25 GMT"
    assert key.sign("POST", "/devstoreaccount1/vaulttest", "application/json;odata=nometadata", date) == (
        sdk_signature("POST", "http://127.0.0.1:10002/devstoreaccount1/vaulttest",
                      {"Content-Type": "application/json;odata=nometadata", "x-ms-date": date}))


# --- bearer tokens ----------------------------------------------------------------------------------

class FakeCredential:
    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str) -> AccessToken:
        self.calls.append(scopes)
        return AccessToken(f"token-{len(self.calls)}", 10_000)


def test_a_bearer_token_is_reused_until_shortly_before_it_expires() -> None:
    now = [1_000.0]
    credential = FakeCredential()
    auth = BearerToken(credential, clock=lambda: now[0])
    headers: dict[str, str] = {}
    auth.authorize("POST", "/vault", headers)
    auth.authorize("POST", "/vault", headers)
    assert headers["Authorization"] == "Bearer token-1"
    assert credential.calls == [("https://storage.azure.com/.default",)]
    now[0] = 10_000 - 301
    auth.authorize("POST", "/vault", headers)
    assert headers["Authorization"] == "Bearer token-1"
    now[0] = 10_000 - 299  # inside the last 5 minutes: a new token
    auth.authorize("POST", "/vault", headers)
    assert headers["Authorization"] == "Bearer token-2" and len(credential.calls) == 2


def test_the_writer_takes_the_sdk_clients_credential() -> None:
    pool = ConnectionPool()
    named = TablesRestWriter.for_table("https://a.table.core.windows.net", "vault", AzureNamedKeyCredential("a", AZURITE_KEY), pool)
    token = TablesRestWriter.for_table("https://a.table.core.windows.net", "vault", FakeCredential(), pool)
    assert isinstance(named._auth, SharedKey) and isinstance(token._auth, BearerToken)
    # a SAS is not signed here: inserts stay with the SDK
    assert TablesRestWriter.for_table("https://a.table.core.windows.net", "vault", AzureSasCredential("sv=1"), pool) is None


# --- the $batch body and its answers ---------------------------------------------------------------

def test_a_batch_is_one_changeset_of_inserts() -> None:
    writer = TablesRestWriter("http://127.0.0.1:10002/devstoreaccount1", "vault", SharedKey(AZURITE_ACCOUNT, AZURITE_KEY),
                              ConnectionPool())
    entities = [dict(HEAD, RowKey=f"r{i}") for i in range(3)]
    content_type, body = writer.batch_body(entities)
    message = email.message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    [changeset] = message.get_payload()
    operations = changeset.get_payload()
    assert changeset.get_content_type() == "multipart/mixed" and len(operations) == 3
    for n, (operation, entity) in enumerate(zip(operations, entities, strict=True)):
        assert operation["Content-Type"] == "application/http" and operation["Content-ID"] == str(n)
        request = operation.get_payload()
        head, _, payload = request.partition("\r\n\r\n")
        lines = head.split("\r\n")
        assert lines[0] == "POST http://127.0.0.1:10002/devstoreaccount1/vault HTTP/1.1"
        assert "Prefer: return-no-content" in lines and "Content-Type: application/json;odata=nometadata" in lines
        assert f"Content-Length: {len(payload.rstrip(chr(13) + chr(10)))}" in lines
        assert json.loads(payload) == sdk_json(entity)


def batch_answer(*parts: str) -> tuple[str, bytes]:
    body = "--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_2\r\n\r\n"
    for part in parts:
        body += ("--changesetresponse_2\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
                 + part + "\r\n")
    body += "--changesetresponse_2--\r\n--batchresponse_1--\r\n"
    return "multipart/mixed; boundary=batchresponse_1", body.encode()


CONFLICT = ('HTTP/1.1 409 Conflict\r\nContent-ID: 2\r\nDataServiceVersion: 3.0;\r\n'
            'Content-Type: application/json;odata=minimalmetadata;charset=utf-8\r\n\r\n'
            '{"odata.error":{"code":"EntityAlreadyExists","message":{"lang":"en-US",'
            '"value":"1:The specified entity already exists.\\nRequestId:0f99\\nTime:2026-11-22T07:38:17.925Z"}}}')
CREATED = "HTTP/1.1 204 No Content\r\nDataServiceVersion: 3.0;\r\nETag: W/\"datetime'2026'\"\r\n\r\n"


def test_a_conflict_inside_a_changeset_is_a_transaction_error_naming_the_entity() -> None:
    error = batch_error(*batch_answer(CONFLICT))
    assert isinstance(error, TableTransactionError)
    assert error.status_code == 409 and error.error_code == "EntityAlreadyExists"
    assert error.index == 1 and "already exists" in error.message


def test_a_changeset_that_succeeded_is_no_error() -> None:
    assert batch_error(*batch_answer(CREATED, CREATED, CREATED)) is None


def test_a_changeset_too_large_is_request_too_large() -> None:
    too_large = ('HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\n\r\n'
                 '{"odata.error":{"code":"RequestBodyTooLarge","message":{"value":"0:too large"}}}')
    assert isinstance(batch_error(*batch_answer(too_large)), RequestTooLargeError)


def test_an_answer_that_is_not_a_batch_answer_is_an_error() -> None:
    assert isinstance(batch_error("text/plain", b"hello"), HttpResponseError)


# --- requests against a local server ------------------------------------------------------------------

def answer(status: str, body: bytes = b"", headers: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\n{headers}Content-Length: {len(body)}\r\n\r\n".encode() + body


def error_body(code: str) -> bytes:
    return json.dumps({"odata.error": {"code": code, "message": {"lang": "en-US", "value": f"{code} happened"}}}).encode()


def writer_for(server: StubHttpServer, sleeps: list[float]) -> TablesRestWriter:
    return TablesRestWriter(f"http://127.0.0.1:{server.port}/devstoreaccount1", "vault",
                            SharedKey(AZURITE_ACCOUNT, AZURITE_KEY), ConnectionPool(connection_timeout=2, read_timeout=2),
                            sleep=sleeps.append)


@pytest.fixture
def serve():
    servers: list[StubHttpServer] = []

    def start(*answers: bytes) -> StubHttpServer:
        servers.append(StubHttpServer(list(answers)))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_an_insert_is_one_signed_post_without_an_echo(serve) -> None:
    server = serve(answer("204 No Content"))
    writer_for(server, []).insert(HEAD)
    [(head, body)] = server.requests
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /devstoreaccount1/vault HTTP/1.1"
    assert "Prefer: return-no-content" in lines and "x-ms-version: 2019-02-02" in lines
    assert any(line.startswith("Authorization: SharedKey devstoreaccount1:") for line in lines)
    assert json.loads(body) == sdk_json(HEAD)


@pytest.mark.parametrize(("status", "code", "error_type"), [
    ("409 Conflict", "EntityAlreadyExists", ResourceExistsError),
    ("404 Not Found", "TableNotFound", ResourceNotFoundError),
    ("403 Forbidden", "AuthorizationFailure", HttpResponseError),
    ("401 Unauthorized", "InvalidAuthenticationInfo", ClientAuthenticationError),
    ("400 Bad Request", "PropertyValueTooLarge", HttpResponseError),
])
def test_refusals_raise_what_the_sdk_raises(serve, status: str, code: str, error_type: type) -> None:
    server = serve(answer(status, error_body(code), "Content-Type: application/json\r\n"))
    sleeps: list[float] = []
    with pytest.raises(error_type) as raised:
        writer_for(server, sleeps).insert(HEAD)
    assert type(raised.value) is error_type
    assert raised.value.status_code == int(status[:3]) and raised.value.error_code == code
    assert f"{code} happened" in raised.value.message
    assert len(server.requests) == 1 and sleeps == []  # not retried


def test_a_busy_service_is_asked_again_as_the_sdk_would(serve) -> None:
    server = serve(answer("503 Service Unavailable", error_body("ServerBusy")),
                   answer("500 Internal Server Error", error_body("InternalError")), answer("204 No Content"))
    sleeps: list[float] = []
    writer_for(server, sleeps).insert(HEAD)
    assert len(server.requests) == 3 and sleeps == [0, 1.6]


def test_retries_stop_after_three_and_raise(serve) -> None:
    server = serve(answer("503 Service Unavailable", error_body("ServerBusy")))
    sleeps: list[float] = []
    with pytest.raises(HttpResponseError) as raised:
        writer_for(server, sleeps).insert(HEAD)
    assert raised.value.status_code == 503 and raised.value.error_code == "ServerBusy"
    assert len(server.requests) == 4 and sleeps == [0, 1.6, 3.2]


def test_retry_after_is_honoured_for_any_refusal(serve) -> None:
    server = serve(answer("429 Too Many Requests", error_body("TooManyRequests"), "Retry-After: 2\r\n"),
                   answer("204 No Content"))
    sleeps: list[float] = []
    writer_for(server, sleeps).insert(HEAD)
    assert sleeps == [2.0]


def test_a_batch_with_a_conflict_raises_a_transaction_error(serve) -> None:
    content_type, body = batch_answer(CONFLICT)
    server = serve(answer("202 Accepted", body, f"Content-Type: {content_type}\r\n"))
    with pytest.raises(TableTransactionError) as raised:
        writer_for(server, []).insert_batch([dict(HEAD, RowKey="a"), dict(HEAD, RowKey="b")])
    assert raised.value.error_code == "EntityAlreadyExists" and raised.value.index == 1
    [(head, _)] = server.requests
    assert head.startswith(b"POST /devstoreaccount1/$batch HTTP/1.1\r\n")
    assert b"Content-Type: multipart/mixed; boundary=batch_" in head


def test_a_batch_that_landed_returns(serve) -> None:
    content_type, body = batch_answer(CREATED, CREATED)
    server = serve(answer("202 Accepted", body, f"Content-Type: {content_type}\r\n"))
    writer_for(server, []).insert_batch([dict(HEAD, RowKey="a"), dict(HEAD, RowKey="b")])


def test_no_listener_is_a_request_error_and_not_retried() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    sleeps: list[float] = []
    writer = TablesRestWriter(f"http://127.0.0.1:{port}/devstoreaccount1", "vault", SharedKey(AZURITE_ACCOUNT, AZURITE_KEY),
                              ConnectionPool(connection_timeout=2), sleep=sleeps.append)
    with pytest.raises(ServiceRequestError):
        writer.insert(HEAD)
    assert sleeps == []


def test_a_token_credential_signs_with_a_bearer_token(serve) -> None:
    server = serve(answer("204 No Content"))
    writer = TablesRestWriter(f"http://127.0.0.1:{server.port}", "vault", BearerToken(FakeCredential()), ConnectionPool())
    writer.insert(HEAD)
    [(head, _)] = server.requests
    assert b"\r\nAuthorization: Bearer token-1\r\n" in head
    assert head.startswith(b"POST /vault HTTP/1.1")




# --- wiring -------------------------------------------------------------------------------------------

def test_a_vault_by_identity_inserts_with_the_credentials_tokens() -> None:
    from dataclasses import replace

    from shared.config import settings
    from shared.vault.table_vault import TableVault

    config = replace(settings(), vault_connection="", vault_table="vault",
                     vault_table_endpoint="https://markr.table.core.windows.net")
    credential = FakeCredential()
    vault = TableVault.from_settings(config, credential)
    assert isinstance(vault._writer._auth, BearerToken) and vault._writer._auth._credential is credential
    assert vault._writer._table_path == "/vault" and vault._writer._key == ("https", "markr.table.core.windows.net", 443)


def test_a_vault_by_connection_string_inserts_with_the_account_key() -> None:
    from shared.vault.table_vault import TableVault

    vault = TableVault.from_connection_string(
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"TableEndpoint=http://127.0.0.1:10002/{AZURITE_ACCOUNT};", "vault")
    assert isinstance(vault._writer._auth, SharedKey) and vault._writer._auth.account == AZURITE_ACCOUNT
    assert vault._writer._table_path == "/devstoreaccount1/vault"


def test_a_refused_token_is_fetched_again_once(serve) -> None:
    server = serve(answer("401 Unauthorized", error_body("InvalidAuthenticationInfo")), answer("204 No Content"))
    credential = FakeCredential()
    writer = TablesRestWriter(f"http://127.0.0.1:{server.port}", "vault", BearerToken(credential), ConnectionPool())
    writer.insert(HEAD)
    assert [b"Bearer token-1" in head for head, _ in server.requests] == [True, False]
    assert b"Bearer token-2" in server.requests[1][0]

    server = serve(answer("401 Unauthorized", error_body("InvalidAuthenticationInfo")))
    writer = TablesRestWriter(f"http://127.0.0.1:{server.port}", "vault", BearerToken(FakeCredential()), ConnectionPool())
    with pytest.raises(ClientAuthenticationError):
        writer.insert(HEAD)
    assert len(server.requests) == 2  # one more try, not a loop


class RecordedSpan:
    spans: list[RecordedSpan] = []

    def __init__(self, span: object = None, name: str | None = None, **kwargs: object) -> None:
        self.name, self.kind, self.attributes = name, kwargs.get("kind"), {}
        RecordedSpan.spans.append(self)

    def add_attribute(self, key: str, value: object) -> None:
        self.attributes[key] = value

    def __enter__(self) -> RecordedSpan:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


def test_inserts_are_traced_as_the_sdk_traces_them_when_tracing_is_on(serve) -> None:
    from azure.core.settings import settings as azure_settings
    from azure.core.tracing import SpanKind

    server = serve(answer("204 No Content"), answer("409 Conflict", error_body("EntityAlreadyExists")))
    writer = writer_for(server, [])
    writer.insert(HEAD)  # tracing off: no span
    RecordedSpan.spans = []
    azure_settings.tracing_implementation = RecordedSpan
    try:
        with pytest.raises(ResourceExistsError):
            writer.insert(HEAD)
    finally:
        azure_settings.tracing_implementation = None
    [span] = RecordedSpan.spans
    assert (span.name, span.kind) == ("TablesRestWriter.insert", SpanKind.CLIENT)
    assert span.attributes == {"az.namespace": "Microsoft.Tables", "http.request.method": "POST",
                               "url.full": f"http://127.0.0.1:{server.port}/devstoreaccount1/vault",
                               "http.response.status_code": 409}

"""The vault's inserts, sent to the Azure Tables REST API directly rather than through the SDK.

Writing a small submission is one insert (or one share of an entity-group transaction, see
group_commit.py), and the Tables SDK spent several times the CPU of the request itself around it:
its policy pipeline, a multipart body built and parsed with the `email` package, its serializer and
deserializer. This writer formats the same two requests as strings and bytes and sends each, head
and body, in one write on the vault's pooled keep-alive connections (transport.py, which also reads
the answer without http.client's `email`-based header parsing):

- insert one entity:           POST {endpoint}/{table}
- an entity-group transaction: POST {endpoint}/$batch, multipart/mixed with one changeset of
                               inserts into one partition

Entities are JSON with `odata=nometadata` and the property types the SDK writes (Edm.Binary as
base64, Edm.DateTime, Edm.Double, Edm.Guid, Edm.Int64 as a string; a plain int is an Int32), so
they read back through the SDK exactly like SDK-written ones. `Prefer: return-no-content` keeps the
service from echoing each entity back. Reads, queries, updates and deletes stay with the SDK.

Answers map to the exceptions the SDK raises, so callers see no difference: 409 is
ResourceExistsError (the put's idempotency path), 404 ResourceNotFoundError, 401
ClientAuthenticationError, anything else HttpResponseError; a failed changeset is a
TableTransactionError. Retries follow the SDK's policy for a POST: a 500/503/504 or an answer with
Retry-After is sent again up to 3 times (at once, then after 1.6 s and 3.2 s, or after Retry-After);
connection failures are not retried beyond the pool's resend on a connection closed while idle.

Auth: SharedKey with the account key of a connection string (signed like the SDK does), or a bearer
token from a token credential (managed identity), kept until 5 minutes before it expires.
When the Azure SDK's tracing is on, each insert is a client span, as with the SDK.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from enum import Enum
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.core.settings import settings as azure_settings
from azure.core.tracing import SpanKind
from azure.data.tables import RequestTooLargeError, TableTransactionError

from shared.vault.transport import ConnectionPool, origin

API_VERSION = "2019-02-02"  # the version the SDK (12.x) speaks
STORAGE_SCOPE = "https://storage.azure.com/.default"
TOKEN_REFRESH_SECONDS = 300  # fetch a new token this long before the cached one expires
RETRIES = 3  # the vault's SDK client option retry_total
BACKOFF_SECONDS = 0.8  # the SDK's retry_backoff_factor: 0, 1.6, 3.2 s between attempts
_RETRY_STATUS = frozenset({500, 503, 504})  # what the SDK retries for a POST without Retry-After
_ERRORS: dict[int, type[HttpResponseError]] = {
    401: ClientAuthenticationError, 404: ResourceNotFoundError, 409: ResourceExistsError,
}
INT32 = 2**31


class TokenCredential(Protocol):
    def get_token(self, *scopes: str) -> Any: ...


# --- entities ---------------------------------------------------------------------------------------

def _datetime(value: datetime) -> str:
    service_text = getattr(value, "tables_service_value", None)  # a datetime read back by the SDK
    if service_text:
        return service_text
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _double(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _int32(value: int) -> int:
    if not -INT32 <= value < INT32:
        raise TypeError(f"{value} is too large to be cast to type Edm.Int32 (pass (value, 'Edm.Int64'))")
    return value


def _binary(value: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(value).decode("ascii")


# (value, edm type) pairs, e.g. azure.data.tables.EntityProperty: the type is always written
_TYPED: dict[str, Callable[[Any], object]] = {
    "Edm.Binary": _binary, "Edm.Boolean": bool, "Edm.DateTime": _datetime, "Edm.Double": _double,
    "Edm.Guid": str, "Edm.Int32": lambda v: _int32(int(v)), "Edm.Int64": lambda v: str(int(v)),
    "Edm.String": str,
}


def entity_properties(entity: Mapping[str, object]) -> dict[str, object]:
    """The JSON object of an entity, typed as the SDK types it (None values are left out)."""
    out: dict[str, object] = {}
    for name, value in entity.items():
        if value is None:
            continue
        kind = type(value)
        if kind is str or kind is bool:
            out[name] = value
        elif kind is int:
            out[name] = _int32(value)  # type: ignore[arg-type]
        elif isinstance(value, bytes | bytearray | memoryview):
            out[name] = _binary(value)
            out[name + "@odata.type"] = "Edm.Binary"
        elif isinstance(value, datetime):
            out[name] = _datetime(value)
            out[name + "@odata.type"] = "Edm.DateTime"
        elif isinstance(value, Enum):
            out[name] = str(value)  # as the SDK does
        elif isinstance(value, tuple) and len(value) == 2:
            raw, edm = value
            if raw is None:
                continue
            edm = str(getattr(edm, "value", edm))
            try:
                out[name] = _TYPED[edm](raw)
            except KeyError:
                raise TypeError(f"unsupported Edm type {edm!r} for property {name}") from None
            out[name + "@odata.type"] = edm
        elif isinstance(value, float):
            out[name] = _double(value)
            out[name + "@odata.type"] = "Edm.Double"
        elif isinstance(value, uuid.UUID):
            out[name] = str(value)
            out[name + "@odata.type"] = "Edm.Guid"
        elif isinstance(value, int):  # an int subclass that is not bool
            out[name] = _int32(int(value))
        elif isinstance(value, str):
            out[name] = str(value)
        else:
            raise TypeError(f"Type not supported when sending data to the service: {kind}.")
    return out


def entity_json(entity: Mapping[str, object]) -> bytes:
    return json.dumps(entity_properties(entity), separators=(",", ":")).encode("utf-8")


# --- auth ---------------------------------------------------------------------------------------------

class SharedKey:
    """Table service SharedKey: HMAC-SHA256 over verb, Content-MD5, Content-Type, date and the
    canonicalized resource "/<account><path>" (the path as sent, so path-style URLs repeat the account)."""

    def __init__(self, account: str, key: str) -> None:
        self.account = account
        self._mac = hmac.new(base64.b64decode(key), digestmod=hashlib.sha256)

    def sign(self, method: str, path: str, content_type: str, date: str, content_md5: str = "") -> str:
        mac = self._mac.copy()
        mac.update(f"{method}\n{content_md5}\n{content_type}\n{date}\n/{self.account}{path}".encode())
        return f"SharedKey {self.account}:{base64.b64encode(mac.digest()).decode('ascii')}"

    def authorize(self, method: str, path: str, headers: dict[str, str]) -> None:
        headers["Authorization"] = self.sign(method, path, headers.get("Content-Type", ""), headers["x-ms-date"])

    def refused(self) -> bool:
        return False  # a wrong key stays wrong


class BearerToken:
    """A token credential's access token for Storage, fetched again shortly before it expires."""

    def __init__(self, credential: TokenCredential, scope: str = STORAGE_SCOPE,
                 clock: Callable[[], float] = time.time) -> None:
        self._credential = credential
        self._scope = scope
        self._clock = clock
        self._lock = threading.Lock()
        self._header = ""
        self._refresh_at = 0.0

    def authorize(self, method: str, path: str, headers: dict[str, str]) -> None:  # noqa: ARG002
        if self._clock() >= self._refresh_at:
            with self._lock:
                if self._clock() >= self._refresh_at:
                    token = self._credential.get_token(self._scope)
                    self._header = f"Bearer {token.token}"
                    self._refresh_at = token.expires_on - TOKEN_REFRESH_SECONDS
        headers["Authorization"] = self._header

    def refused(self) -> bool:
        """The service refused the token (revoked, or the identity's roles changed): fetch a new one
        for the next request. True: worth one more try, as the SDK's challenge policy does."""
        with self._lock:
            self._refresh_at = 0.0
        return True


Auth = SharedKey | BearerToken


# --- answers -----------------------------------------------------------------------------------------

def _error_code_and_message(headers: Mapping[str, str], body: bytes) -> tuple[str | None, str]:
    code = headers.get("x-ms-error-code")
    message = ""
    try:
        detail = json.loads(body)["odata.error"]
        code = detail.get("code") or code
        message = detail.get("message", {}).get("value", "")
    except (ValueError, KeyError, TypeError, AttributeError):
        if body:  # an XML or text answer (a proxy, an auth failure before the table service)
            text = body.decode("utf-8", "replace")
            found = re.search(r"<Code>([^<]*)</Code>", text)
            code = found.group(1) if found else code
            found = re.search(r"<Message>([^<]*)</Message>", text)
            message = found.group(1) if found else text[:500]
    return code, message


def response_error(status: int, reason: str, headers: Mapping[str, str], body: bytes,
                   error_type: type[HttpResponseError] | None = None) -> HttpResponseError:
    """The exception the SDK raises for this answer (status code, service error code and message)."""
    code, message = _error_code_and_message(headers, body)
    kind = error_type or _ERRORS.get(status, HttpResponseError)
    error = kind(message=f"{message or reason}\nErrorCode:{code}")
    error.status_code = status
    error.reason = reason
    error.error_code = code  # type: ignore[attr-defined]
    return error


_PART_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ?([^\r\n]*)\r\n")


def batch_error(content_type: str, body: bytes) -> HttpResponseError | None:
    """The error of a 202 batch answer whose changeset failed (None when every insert succeeded).

    The answer is multipart/mixed: one changeset part holding one HTTP response per operation, or a
    single error response (its message begins with the failed operation's index) when it failed."""
    for match in _PART_STATUS.finditer(body):
        status = int(match.group(1))
        if 200 <= status < 300:
            continue
        head_end = body.find(b"\r\n\r\n", match.end() - 2)
        raw_headers = body[match.end():head_end].decode("latin-1") if head_end >= 0 else ""
        headers = {}
        for line in raw_headers.split("\r\n"):
            name, _, value = line.partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        part = body[head_end + 4:] if head_end >= 0 else b""
        end = part.find(b"\r\n--")
        part = part[:end] if end >= 0 else part
        reason = match.group(2).decode("latin-1")
        if status == 413:
            return response_error(status, reason, headers, part, RequestTooLargeError)
        return response_error(status, reason, headers, part, TableTransactionError)
    if b"HTTP/1." not in body:
        return HttpResponseError(message=f"unexpected batch answer ({content_type}): {body[:200]!r}")
    return None


# --- the writer --------------------------------------------------------------------------------------

class TablesRestWriter:
    def __init__(self, endpoint: str, table: str, auth: Auth, pool: ConnectionPool, *, retries: int = RETRIES,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """`endpoint`: the table service URL, e.g. https://acct.table.core.windows.net or, path-style
        (Azurite), http://127.0.0.1:10002/devstoreaccount1."""
        self.endpoint = endpoint.rstrip("/")
        self.table = table
        self._auth = auth
        self._pool = pool
        self._retries = retries
        self._sleep = sleep
        self._key, base = origin(self.endpoint)
        base = base.rstrip("/")
        self._table_path = f"{base}/{quote(table)}"
        self._batch_path = f"{base}/$batch"
        self._host = urlsplit(self.endpoint).netloc

    @classmethod
    def for_table(cls, endpoint: str, table: str, credential: object, pool: ConnectionPool) -> TablesRestWriter | None:
        """A writer with the SDK client's endpoint and credential; None for a credential it cannot use
        (a SAS): then inserts stay with the SDK."""
        if isinstance(credential, AzureNamedKeyCredential):
            return cls(endpoint, table, SharedKey(credential.named_key.name, credential.named_key.key), pool)
        if hasattr(credential, "get_token"):
            return cls(endpoint, table, BearerToken(credential), pool)  # type: ignore[arg-type]
        return None

    def _headers(self, content_type: str, accept: str) -> dict[str, str]:
        return {
            "Content-Type": content_type, "Accept": accept,
            "x-ms-version": API_VERSION, "x-ms-date": formatdate(usegmt=True),
            "DataServiceVersion": "3.0", "MaxDataServiceVersion": "3.0;NetFx",
        }

    def _send(self, operation: str, path: str, body: bytes, content_type: str, accept: str,
              prefer: bool) -> tuple[int, str, Mapping[str, str], bytes]:
        # A client span when the Azure SDK's tracing is on (Azure Monitor turns it on), as the SDK's
        # pipeline makes one: the vault's inserts stay visible as storage dependencies.
        span_type = azure_settings.tracing_implementation()
        if span_type is None or not azure_settings.tracing_enabled():
            return self._attempts(path, body, content_type, accept, prefer)
        with span_type(name=f"TablesRestWriter.{operation}", kind=SpanKind.CLIENT) as span:
            span.add_attribute("az.namespace", "Microsoft.Tables")
            span.add_attribute("http.request.method", "POST")
            span.add_attribute("url.full", f"{self._key[0]}://{self._host}{path}")
            answer = self._attempts(path, body, content_type, accept, prefer)
            span.add_attribute("http.response.status_code", answer[0])
            return answer

    def _attempts(self, path: str, body: bytes, content_type: str, accept: str,
                  prefer: bool) -> tuple[int, str, Mapping[str, str], bytes]:
        attempt, reauthorized = 0, False
        while True:
            headers = self._headers(content_type, accept)
            if prefer:
                headers["Prefer"] = "return-no-content"
            self._auth.authorize("POST", path, headers)
            head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
            request = (f"POST {path} HTTP/1.1\r\nHost: {self._host}\r\nAccept-Encoding: identity\r\n{head}"
                       f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body
            answer = self._pool.send_bytes(self._key, request)
            status = answer.status
            if status == 401 and not reauthorized and self._auth.refused():
                reauthorized = True
                continue
            if status < 400 or attempt >= self._retries:
                return status, answer.reason, answer.headers, answer.body
            delay = _retry_after(answer.headers)
            if delay is None and status not in _RETRY_STATUS:
                return status, answer.reason, answer.headers, answer.body
            attempt += 1
            self._sleep(delay if delay is not None else (0 if attempt == 1 else BACKOFF_SECONDS * 2 ** (attempt - 1)))

    def insert(self, entity: Mapping[str, object]) -> None:
        """Insert one entity; raises what TableClient.create_entity raises."""
        status, reason, headers, data = self._send("insert", self._table_path, entity_json(entity),
                                                   "application/json;odata=nometadata",
                                                   "application/json;odata=nometadata", True)
        if status >= 300:
            raise response_error(status, reason, headers, data)

    def batch_body(self, entities: Sequence[Mapping[str, object]]) -> tuple[str, bytes]:
        """(Content-Type, body) of an entity-group transaction inserting `entities`."""
        batch, changeset = f"batch_{uuid.uuid4()}", f"changeset_{uuid.uuid4()}"
        url = f"{self.endpoint}/{quote(self.table)}"
        parts = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n".encode()]
        for n, entity in enumerate(entities):
            payload = entity_json(entity)
            parts.append(
                f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
                f"Content-ID: {n}\r\n\r\n"
                f"POST {url} HTTP/1.1\r\nContent-Type: application/json;odata=nometadata\r\n"
                f"Accept: application/json;odata=nometadata\r\nPrefer: return-no-content\r\n"
                f"DataServiceVersion: 3.0\r\nContent-Length: {len(payload)}\r\n\r\n".encode())
            parts.append(payload)
            parts.append(b"\r\n")
        parts.append(f"--{changeset}--\r\n\r\n--{batch}--\r\n".encode())
        return f"multipart/mixed; boundary={batch}", b"".join(parts)

    def insert_batch(self, entities: Sequence[Mapping[str, object]]) -> None:
        """Insert entities of one partition in one transaction (all or none); raises what
        TableClient.submit_transaction raises (TableTransactionError when the changeset failed)."""
        content_type, body = self.batch_body(entities)
        status, reason, headers, data = self._send("insert_batch", self._batch_path, body, content_type,
                                                   "application/json", False)
        if status == 413:
            raise response_error(status, reason, headers, data, RequestTooLargeError)
        if status != 202:
            raise response_error(status, reason, headers, data)
        error = batch_error(headers.get("content-type", ""), data)
        if error is not None:
            raise error


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the service asked to wait (Retry-After, or the x-ms retry-after in milliseconds)."""
    for name, scale in (("retry-after", 1.0), ("retry-after-ms", 0.001), ("x-ms-retry-after-ms", 0.001)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                try:  # an HTTP date
                    return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
                except (TypeError, ValueError):
                    return None
    return None

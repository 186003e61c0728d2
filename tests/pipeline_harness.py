"""Drives the registered functions in-process, with real azure.functions request/message objects.

The functions run exactly as the host would call them (found through `app.get_functions()`), on
the real local queue engine, vault (Azurite) and PostgreSQL; only the scheduling is ours: `drain()`
delivers queued messages one at a time until the queues are empty, so tests are deterministic.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import azure.functions as func
import psycopg
from azure.functions.servicebus import ServiceBusMessage

from devhost.discovery import indexed_functions
from devhost.stack import ROOT
from shared import bootstrap
from shared.bus.local import LocalQueueEngine
from shared.bus.queues import PIPELINE_QUEUES
from tests import auth

TEST_KEY_FILE = ROOT / ".local" / "test" / "vault-kek.json"  # the suite's vault key (created on first use)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def app_functions() -> tuple:
    import function_app

    return indexed_functions(function_app.app)


def queue_functions() -> dict[str, object]:
    found = {}
    for fn in app_functions():
        trigger = fn.get_trigger()
        if trigger.get_binding_name() == "serviceBusTrigger":
            found[trigger.queue_name] = fn
    return found


def is_batch(fn) -> bool:
    return str(getattr(fn.get_trigger(), "cardinality", "") or "").lower().endswith("many")


def to_message(received) -> ServiceBusMessage:
    return ServiceBusMessage(
        body=received.body, message_id=received.message_id, content_type=received.content_type,
        correlation_id=received.correlation_id, delivery_count=received.delivery_count,
        enqueued_time_utc=received.enqueued_time_utc, lock_token=received.lock_token,
        sequence_number=received.sequence_number, application_properties=dict(received.application_properties),
        user_properties=dict(received.application_properties),
    )


class Pipeline:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.engine = LocalQueueEngine(database_url)
        self.handlers = queue_functions()
        self.delivered: list[tuple[str, object]] = []  # (queue, ReceivedMessage) completed, in order

    def http(self, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> Answer:
        """Call the HTTP function whose route matches `path` (under /api), with a token carrying the
        role the function declares (tests/auth.py) unless `headers` bring credentials."""
        route_path = path.removeprefix("/api/")
        for fn in app_functions():
            trigger = fn.get_trigger()
            if trigger.get_binding_name() != "httpTrigger":
                continue
            params = _match(trigger.route, route_path)
            if params is None or method not in [str(m.value if hasattr(m, "value") else m) for m in trigger.methods]:
                continue
            user_function = fn.get_user_function()
            headers = dict(headers or {})
            if not any(k.lower() in ("authorization", "x-markr-api-key") for k in headers):
                headers.update(auth.bearer(user_function.required_roles[0]))
            req = func.HttpRequest(method=method, url=f"http://127.0.0.1/api/{route_path}", headers=headers,
                                   params={}, route_params=params, body=body)
            resp: func.HttpResponse = user_function(req)
            return Answer(resp.status_code, dict(resp.headers), resp.get_body())
        raise LookupError(f"no function for {method} {path}")

    def post_document(self, body: bytes, content_type: str = "text/xml+markr", wait: bool = False) -> Answer:
        headers = {"Content-Type": content_type} if content_type else {}
        if not wait:
            headers["Prefer"] = "respond-async"
        return self.http("POST", "/api/import", body, headers)

    def _call(self, queue: str, received: list) -> None:
        fn = self.handlers[queue]
        if is_batch(fn):
            fn.get_user_function()([to_message(r) for r in received])
        else:
            for r in received:
                fn.get_user_function()(to_message(r))

    def deliver_one(self, queue: str, batch_size: int = 1) -> bool:
        """Deliver up to `batch_size` messages (one call for a batch trigger), settled as the host does."""
        fn = self.handlers[queue]
        got = self.engine.receive(queue, batch_size if is_batch(fn) else 1)
        if not got:
            return False
        try:
            self._call(queue, got)
        except Exception as exc:
            for received in got:
                self.engine.abandon(queue, received.lock_token, f"{type(exc).__name__}: {exc}")
            raise
        for received in got:
            self.engine.complete(queue, received.lock_token)
            self.delivered.append((queue, received))
        return True

    def redeliver(self, queue: str, received) -> None:
        """Deliver an already-completed message again, as Service Bus may (at-least-once)."""
        again = dataclasses.replace(received, delivery_count=received.delivery_count + 1)
        self._call(queue, [again])

    def drain(self, limit: int = 10_000, batch_size: int = 1) -> int:
        delivered = 0
        while delivered < limit:
            progressed = False
            for queue in (q for q in PIPELINE_QUEUES if q in self.handlers):  # the consumed ones
                while self.deliver_one(queue, batch_size):
                    delivered += 1
                    progressed = True
            if not progressed:
                return delivered
        raise RuntimeError("queues did not drain")

    def peek(self, queue: str) -> list:
        return self.engine.peek(queue)

    def sql(self, query: str, *params):
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(query, params).fetchall()


def _match(template: str, path: str) -> dict[str, str] | None:
    t_parts, p_parts = template.strip("/").split("/"), path.strip("/").split("/")
    if len(t_parts) != len(p_parts):
        return None
    params = {}
    for t, p in zip(t_parts, p_parts, strict=True):
        if t.startswith("{") and t.endswith("}"):
            params[t[1:-1].split(":")[0].rstrip("?")] = p
        elif t.lower() != p.lower():
            return None
    return params


@contextmanager
def pipeline_env(monkeypatch, database_url: str, vault_storage: str, vault_table: str, **settings) -> Iterator[Pipeline]:
    """App settings pointing at this test's database and vault table, with the adapters rebuilt."""
    values = {"MARKR_DATABASE_URL": database_url, "VaultStorage": vault_storage, "MARKR_VAULT_TABLE": vault_table,
              "MARKR_BUS": "local",
              "MARKR_VAULT_KEY_FILE": str(TEST_KEY_FILE), **settings}
    for key, value in values.items():
        monkeypatch.setenv(key, str(value))
    bootstrap.reset()
    pipeline = Pipeline(database_url)
    try:
        yield pipeline
    finally:
        pipeline.engine.close()
        bootstrap.reset()

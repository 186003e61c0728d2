"""Contract: what the AzureServiceBus adapter puts on the wire through the real azure-servicebus SDK.

The far end is a local AMQP 1.0 peer (tests/contract/amqp_peer.py) on loopback, so this checks the
AMQP messages Service Bus would receive: ids, content type, correlation id, properties, body,
schedule and TTL, plus the CBS token exchange. Every call runs under a deadline.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from azure.servicebus import ServiceBusClient

from shared.bus.azure import AzureServiceBus, AzureServiceBusError
from shared.bus.port import OutgoingMessage
from shared.bus.queues import MARKING, VALIDATION
from shared.config import Settings
from tests.contract.amqp_peer import AmqpPeer, free_port

DEADLINE_S = 30


def within_deadline(call: Callable[[], object]) -> None:
    """Run `call` on a thread; fail (not hang) if it has not finished in DEADLINE_S."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test thread
            errors.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(DEADLINE_S)
    assert not worker.is_alive(), f"call did not finish within {DEADLINE_S} s"
    if errors:
        raise errors[0]


def settings_for(connection: str) -> Settings:
    return Settings(
        database_url="", database_entra_auth=False, bus="azure", service_bus_connection=connection,
        service_bus_namespace="", vault_connection="", vault_table_endpoint="", vault_table="vault",
        max_body_bytes=1024, import_wait_seconds=1.0,
    )


@pytest.fixture
def peer() -> Iterator[AmqpPeer]:
    with AmqpPeer() as running:
        yield running


@pytest.fixture
def bus(peer: AmqpPeer) -> Iterator[AzureServiceBus]:
    adapter = AzureServiceBus.from_settings(settings_for(peer.connection_string))
    yield adapter
    within_deadline(adapter.close)


def test_send_carries_every_message_field(peer: AmqpPeer, bus: AzureServiceBus) -> None:
    scheduled = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    message = OutgoingMessage(
        body=b'{"submission_id": "01HZX"}', message_id="validate-01HZX", content_type="application/json",
        correlation_id="01HZX",
        application_properties={"source": "scanner-7", "attempt": 2, "ratio": 0.5, "final": True},
        scheduled_enqueue_time_utc=scheduled, time_to_live=timedelta(hours=3),
    )
    within_deadline(lambda: bus.send(VALIDATION, message))

    assert len(peer.log.tokens) >= 1
    token = peer.log.tokens[0]
    assert token.properties["operation"] == "put-token"
    assert "127.0.0.1" in token.properties["name"]  # the audience names the namespace
    assert len(peer.log.messages) == 1
    got = peer.log.messages[0]
    assert got.address.endswith("/" + VALIDATION)
    wire = got.message
    assert wire.id == "validate-01HZX"
    assert wire.content_type == "application/json"
    assert wire.correlation_id == "01HZX"
    assert dict(wire.properties) == {"source": "scanner-7", "attempt": 2, "ratio": 0.5, "final": True}
    assert bytes(wire.body) == b'{"submission_id": "01HZX"}'
    assert wire.ttl == pytest.approx(3 * 3600)
    enqueue_at = wire.annotations["x-opt-scheduled-enqueue-time"]
    assert datetime.fromtimestamp(enqueue_at / 1000, UTC) == scheduled


def test_send_many_delivers_each_message_in_order_to_its_queue(peer: AmqpPeer, bus: AzureServiceBus) -> None:
    batch = [OutgoingMessage(body=f"<m n='{i}'/>".encode(), message_id=f"mark-{i}",
                             content_type="application/xml") for i in range(25)]
    within_deadline(lambda: bus.send_many(MARKING, batch))
    within_deadline(lambda: bus.send(VALIDATION, replace(batch[0], message_id="v-1")))

    marking = [r.message for r in peer.log.messages if r.address.endswith("/" + MARKING)]
    assert [m.id for m in marking] == [f"mark-{i}" for i in range(25)]
    assert {m.content_type for m in marking} == {"application/xml"}
    assert bytes(marking[7].body) == b"<m n='7'/>"
    assert marking[0].correlation_id is None and not marking[0].properties
    validation = [r.message.id for r in peer.log.messages if r.address.endswith("/" + VALIDATION)]
    assert validation == ["v-1"]
    # One link per queue, reused for later sends.
    assert sorted(t.rsplit("/", 1)[-1] for t in peer.log.attached_targets) == [MARKING, VALIDATION]


def test_ping_opens_the_validation_queue_link(peer: AmqpPeer, bus: AzureServiceBus) -> None:
    within_deadline(bus.ping)
    assert [t.rsplit("/", 1)[-1] for t in peer.log.attached_targets] == [VALIDATION]
    assert peer.log.messages == []


def test_naive_schedule_is_refused_before_sending(peer: AmqpPeer, bus: AzureServiceBus) -> None:
    naive = OutgoingMessage(body=b"{}", message_id="x", scheduled_enqueue_time_utc=datetime(2031, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        bus.send(VALIDATION, naive)
    assert peer.log.messages == []


def test_unreachable_namespace_raises_a_clear_error() -> None:
    port = free_port()  # nothing listens here
    conn = (f"Endpoint=sb://127.0.0.1:{port}/;SharedAccessKeyName=k;SharedAccessKey=v;"
            "UseDevelopmentEmulator=true")
    adapter = AzureServiceBus(ServiceBusClient.from_connection_string(conn, retry_total=0))
    try:
        with pytest.raises(AzureServiceBusError, match="submission-validation"):
            within_deadline(lambda: adapter.send(VALIDATION, OutgoingMessage(body=b"{}", message_id="m")))
        with pytest.raises(AzureServiceBusError, match="cannot open a link"):
            within_deadline(adapter.ping)
    finally:
        within_deadline(adapter.close)


def test_identity_settings_need_a_namespace() -> None:
    with pytest.raises(RuntimeError, match="fullyQualifiedNamespace"):
        AzureServiceBus.from_settings(settings_for(""))

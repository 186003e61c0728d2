"""Bus adapter for Azure Service Bus (azure-servicebus SDK, AMQP).

In Azure the app authenticates with its user-assigned managed identity (DefaultAzureCredential reads
AZURE_CLIENT_ID); a connection string is used only when ServiceBusConnection is set (local emulator,
contract tests). One sender per queue is kept open and reused: opening a link costs a round trip
plus a token put, and SDK senders are not thread-safe, so each one is guarded by its own lock.
"""
from __future__ import annotations

import threading
from typing import Any

from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSender

from shared.bus.port import OutgoingMessage
from shared.bus.queues import VALIDATION
from shared.config import Settings


class AzureServiceBusError(RuntimeError):
    """A send to Service Bus failed; the message may or may not have been accepted."""


def to_service_bus_message(message: OutgoingMessage) -> ServiceBusMessage:
    kwargs: dict[str, Any] = {
        "message_id": message.message_id,
        "content_type": message.content_type,
        "application_properties": dict(message.application_properties) or None,
    }
    if message.correlation_id is not None:
        kwargs["correlation_id"] = message.correlation_id
    if message.scheduled_enqueue_time_utc is not None:
        if message.scheduled_enqueue_time_utc.tzinfo is None:
            raise ValueError(f"scheduled_enqueue_time_utc must be timezone-aware (message {message.message_id})")
        kwargs["scheduled_enqueue_time_utc"] = message.scheduled_enqueue_time_utc
    if message.time_to_live is not None:
        kwargs["time_to_live"] = message.time_to_live
    return ServiceBusMessage(message.body, **kwargs)


class AzureServiceBus:
    """The Bus port over Azure Service Bus queues."""

    def __init__(self, client: ServiceBusClient) -> None:
        self._client = client
        self._senders: dict[str, tuple[ServiceBusSender, threading.Lock]] = {}
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> AzureServiceBus:
        if settings.service_bus_connection:
            return cls(ServiceBusClient.from_connection_string(settings.service_bus_connection))
        if not settings.service_bus_namespace:
            raise RuntimeError(
                "MARKR_BUS=azure needs ServiceBusConnection (a connection string) or "
                "ServiceBusConnection__fullyQualifiedNamespace (identity-based)"
            )
        from azure.identity import DefaultAzureCredential

        return cls(ServiceBusClient(
            fully_qualified_namespace=settings.service_bus_namespace,
            credential=DefaultAzureCredential(),
        ))

    def _sender(self, queue: str) -> tuple[ServiceBusSender, threading.Lock]:
        with self._lock:
            if self._closed:
                raise AzureServiceBusError("the Service Bus adapter is closed")
            entry = self._senders.get(queue)
            if entry is None:
                entry = (self._client.get_queue_sender(queue_name=queue), threading.Lock())
                self._senders[queue] = entry
            return entry

    def send(self, queue: str, message: OutgoingMessage) -> None:
        self.send_many(queue, [message])

    def send_many(self, queue: str, messages: list[OutgoingMessage]) -> None:
        if not messages:
            return
        converted = [to_service_bus_message(m) for m in messages]
        sender, lock = self._sender(queue)
        try:
            with lock:
                self._send_batched(sender, converted)
        except Exception as exc:
            ids = ", ".join(m.message_id for m in messages[:5])
            raise AzureServiceBusError(
                f"sending {len(messages)} message(s) to queue {queue!r} failed (ids: {ids}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    @staticmethod
    def _send_batched(sender: ServiceBusSender, messages: list[ServiceBusMessage]) -> None:
        # Size-limited batches; a message's schedule and TTL travel with it inside the batch.
        batch = sender.create_message_batch()
        for message in messages:
            try:
                batch.add_message(message)
            except ValueError:  # MessageSizeExceededError: this batch is full
                if len(batch) == 0:
                    raise
                sender.send_messages(batch)
                batch = sender.create_message_batch()
                batch.add_message(message)
        if len(batch):
            sender.send_messages(batch)

    def ping(self) -> None:
        """Open (or reuse) the link to the first pipeline queue: proves DNS, AMQP, auth and the queue."""
        sender, lock = self._sender(VALIDATION)
        try:
            with lock:
                # Entering the sender opens its connection, CBS token and link; it stays open for sends.
                sender.__enter__()
        except Exception as exc:
            raise AzureServiceBusError(f"cannot open a link to queue {VALIDATION!r}: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._closed = True
            senders, self._senders = list(self._senders.values()), {}
        errors = []
        for sender, lock in senders:
            with lock:
                try:
                    sender.close()
                except Exception as exc:  # noqa: BLE001 - close the rest, then report
                    errors.append(exc)
        self._client.close()
        if errors:
            raise AzureServiceBusError(f"closing {len(errors)} sender(s) failed: {errors[0]!r}")

"""Azure Service Bus (azure-servicebus SDK, AMQP): the Bus and BusAdmin ports over one client.

In Azure the app authenticates with its managed identity (DefaultAzureCredential reads
AZURE_CLIENT_ID, or pass a shared credential); a connection string is used only when
ServiceBusConnection is set (emulator, contract tests). The sending side and the admin side share
one ServiceBusClient (one AMQP connection) and one credential.

Sending: one sender per queue is kept open and reused: opening a link costs a round trip plus a
token put, and SDK senders are not thread-safe, so each one is guarded by its own lock.

Admin: counts come from the management API (ServiceBusAdministrationClient, created on first use;
it needs the Manage right: "Azure Service Bus Data Owner"); dead letters are peeked through a
receiver on the dead-letter sub-queue (Listen) and resubmitted through the shared senders (Send).
Service Bus cannot receive a message by id, so resubmit/purge receive the dead-letter sub-queue in
batches, settle the messages named, and abandon (unlock) the others once done.
"""
from __future__ import annotations

import threading
import uuid
from datetime import datetime
from typing import Any

from azure.servicebus import (
    ServiceBusClient,
    ServiceBusMessage,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusSender,
    ServiceBusSubQueue,
)
from azure.servicebus.management import ServiceBusAdministrationClient

from shared.bus.dead_letters import (
    check_queue,
    find_dead_letter,
    iter_dead_letters,
    resubmission,
    resubmit_id,
)
from shared.bus.port import DeadLetter, DeadLetterUnsupported, OutgoingMessage, QueueCounts, ResubmitResult
from shared.bus.queues import VALIDATION

PAGE = 100
RECEIVE_WAIT = 5.0  # seconds a receive waits for messages before concluding the sub-queue is drained


class AzureServiceBusError(RuntimeError):
    """A send to Service Bus failed (the message may or may not have been accepted), or the adapter
    is not configured."""


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


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def to_dead_letter(queue: str, m: ServiceBusReceivedMessage) -> DeadLetter:
    body = m.body
    raw = body if isinstance(body, bytes) else b"".join(bytes(part) for part in body)
    props = {str(_text(k)): _text(v) for k, v in (m.application_properties or {}).items()}
    return DeadLetter(
        queue=queue, sequence_number=m.sequence_number or 0, message_id=str(m.message_id),
        correlation_id=m.correlation_id, content_type=m.content_type, application_properties=props,
        body=raw, delivery_count=m.delivery_count or 0, enqueued_time_utc=m.enqueued_time_utc,
        dead_lettered_at_utc=None,  # Service Bus does not expose when a message was dead-lettered
        reason=m.dead_letter_reason, description=m.dead_letter_error_description,
    )


class AzureServiceBus:
    """Bus and BusAdmin over Azure Service Bus queues; `admin` is created on first use if not given."""

    def __init__(self, client: ServiceBusClient, admin: ServiceBusAdministrationClient | None = None,
                 *, make_admin=None) -> None:
        self._client = client
        self._admin = admin
        self._make_admin = make_admin
        self._senders: dict[str, tuple[ServiceBusSender, threading.Lock]] = {}
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_settings(cls, settings, credential=None) -> AzureServiceBus:
        """From a Settings object (service_bus_connection or service_bus_namespace); `credential` is
        shared with other clients of the app (default: a DefaultAzureCredential of its own)."""
        connection = settings.service_bus_connection
        if connection:
            return cls(ServiceBusClient.from_connection_string(connection),
                       make_admin=lambda: ServiceBusAdministrationClient.from_connection_string(connection))
        namespace = settings.service_bus_namespace
        if not namespace:
            raise AzureServiceBusError(
                "MARKR_BUS=azure needs ServiceBusConnection (a connection string) or "
                "ServiceBusConnection__fullyQualifiedNamespace (identity-based)")
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        return cls(ServiceBusClient(fully_qualified_namespace=namespace, credential=credential),
                   make_admin=lambda: ServiceBusAdministrationClient(namespace, credential))

    # --- Bus ---------------------------------------------------------------------------------------

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

    def schedule(self, queue: str, messages: list[OutgoingMessage], at: datetime) -> list[str]:
        if not messages:
            return []
        if at.tzinfo is None:
            raise ValueError("the scheduled time must be timezone-aware")
        converted = [to_service_bus_message(m) for m in messages]
        sender, lock = self._sender(queue)
        try:
            with lock:
                numbers = sender.schedule_messages(converted, at)
        except Exception as exc:
            raise AzureServiceBusError(f"scheduling {len(messages)} message(s) on queue {queue!r} failed: "
                                       f"{type(exc).__name__}: {exc}") from exc
        return [str(n) for n in numbers]

    def cancel_scheduled(self, queue: str, tokens: list[str]) -> int:
        """By sequence number. A number already delivered (or cancelled) makes Service Bus refuse the
        whole call, so a refused group is retried one number at a time, skipping the refused ones."""
        if not tokens:
            return 0
        sender, lock = self._sender(queue)
        with lock:
            try:
                sender.cancel_scheduled_messages([int(t) for t in tokens])
                return len(tokens)
            except Exception:  # noqa: BLE001 - find the numbers that can still be cancelled
                if len(tokens) == 1:
                    return 0
            cancelled = 0
            for token in tokens:
                try:
                    sender.cancel_scheduled_messages(int(token))
                    cancelled += 1
                except Exception:  # noqa: BLE001 - delivered or gone: nothing to withdraw
                    continue
            return cancelled

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

    def dead_letter_held(self, queue: str, lock_token: str, reason: str, description: str | None = None) -> None:
        # A lock belongs to the receive link that took the message: the Functions host's.
        raise DeadLetterUnsupported("a Python trigger's message can only be settled by the Functions host")

    def ping(self) -> None:
        """Open (or reuse) the link to the first pipeline queue: proves DNS, AMQP, auth and the queue."""
        sender, lock = self._sender(VALIDATION)
        try:
            with lock:
                # Entering the sender opens its connection, CBS token and link; it stays open for sends.
                sender.__enter__()
        except Exception as exc:
            raise AzureServiceBusError(f"cannot open a link to queue {VALIDATION!r}: {type(exc).__name__}: {exc}") from exc

    # --- BusAdmin ----------------------------------------------------------------------------------

    def _admin_client(self) -> ServiceBusAdministrationClient:
        with self._lock:
            if self._admin is None:
                if self._make_admin is None:
                    raise AzureServiceBusError("no Service Bus administration client was configured")
                self._admin = self._make_admin()
            return self._admin

    def counts(self, queue: str) -> QueueCounts:
        props = self._admin_client().get_queue_runtime_properties(check_queue(queue))
        oldest = None
        if props.active_message_count:
            with self._client.get_queue_receiver(queue_name=queue) as receiver:
                first = receiver.peek_messages(max_message_count=1)
                oldest = first[0].enqueued_time_utc if first else None
        return QueueCounts(queue, props.active_message_count or 0, props.scheduled_message_count or 0,
                           props.dead_letter_message_count or 0, oldest)

    def _dlq(self, queue: str, **kwargs: Any):
        return self._client.get_queue_receiver(queue_name=check_queue(queue),
                                               sub_queue=ServiceBusSubQueue.DEAD_LETTER, **kwargs)

    def dead_letters(self, queue: str, limit: int = 100, from_sequence_number: int = 0) -> list[DeadLetter]:
        with self._dlq(queue) as receiver:
            peeked = receiver.peek_messages(max_message_count=limit, sequence_number=from_sequence_number)
        return [to_dead_letter(queue, m) for m in peeked]

    def dead_letter(self, queue: str, message_id: str) -> DeadLetter | None:
        return find_dead_letter(self, queue, message_id, PAGE)

    def _settle(self, queue: str, message_ids: list[str] | None, act) -> list[str]:
        """Receive the dead-letter sub-queue and call act(message) then complete it, for each message
        named (a snapshot when None); abandon the rest at the end. Returns the ids settled."""
        wanted = (set(message_ids) if message_ids is not None
                  else {m.message_id for m in iter_dead_letters(self, queue, PAGE)})
        done: list[str] = []
        skipped: list[ServiceBusReceivedMessage] = []
        with self._dlq(queue, receive_mode=ServiceBusReceiveMode.PEEK_LOCK) as receiver:
            try:
                while wanted:
                    batch = receiver.receive_messages(max_message_count=PAGE, max_wait_time=RECEIVE_WAIT)
                    if not batch:
                        break
                    for m in batch:
                        if str(m.message_id) in wanted:
                            try:
                                act(m)
                            except Exception:
                                receiver.abandon_message(m)
                                raise
                            receiver.complete_message(m)  # only once act (the resubmit) succeeded
                            wanted.discard(str(m.message_id))
                            done.append(str(m.message_id))
                        else:
                            skipped.append(m)  # held locked so the next receive moves on
            finally:
                for m in skipped:
                    receiver.abandon_message(m)
        return done

    def resubmit(self, queue: str, message_ids: list[str] | None = None) -> ResubmitResult:
        result = ResubmitResult()

        def send_back(m: ServiceBusReceivedMessage) -> None:
            dead = to_dead_letter(queue, m)
            new_id = resubmit_id(dead.message_id, uuid.uuid4().hex[:16])
            self.send(queue, resubmission(dead, new_id))
            result.resubmitted[dead.message_id] = new_id

        self._settle(check_queue(queue), message_ids, send_back)
        if message_ids is not None:
            result.not_found = [i for i in message_ids if i not in result.resubmitted]
        return result

    def purge(self, queue: str, message_ids: list[str] | None = None) -> int:
        return len(self._settle(queue, message_ids, lambda m: None))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            senders, self._senders = list(self._senders.values()), {}
            admin, self._admin = self._admin, None
        errors = []
        for sender, lock in senders:
            with lock:
                try:
                    sender.close()
                except Exception as exc:  # noqa: BLE001 - close the rest, then report
                    errors.append(exc)
        self._client.close()
        if admin is not None:
            admin.close()
        if errors:
            raise AzureServiceBusError(f"closing {len(errors)} sender(s) failed: {errors[0]!r}")

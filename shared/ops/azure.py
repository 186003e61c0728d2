"""QueueOps over Azure Service Bus (azure-servicebus SDK).

Counts come from the management API (ServiceBusAdministrationClient, which needs the Manage right:
the "Azure Service Bus Data Owner" role); dead letters are read through a receiver on the
dead-letter sub-queue (Listen right) and resubmitted with a sender (Send right).
Service Bus cannot receive a message by id, so resubmit/purge receive the dead-letter sub-queue in
batches, settle the messages named, and abandon (unlock) the others once done.
"""
from __future__ import annotations

import uuid
from typing import Any

from azure.servicebus import (
    ServiceBusClient,
    ServiceBusReceivedMessage,
    ServiceBusReceiveMode,
    ServiceBusSubQueue,
)
from azure.servicebus.management import ServiceBusAdministrationClient

from shared.bus.azure_service_bus import to_service_bus_message
from shared.config import Settings
from shared.ops.port import (
    DeadLetter,
    OpsError,
    QueueCounts,
    ResubmitResult,
    all_dead_letters,
    check_queue,
    find_dead_letter,
    resubmission,
    resubmit_id,
)

PAGE = 100
RECEIVE_WAIT = 5.0  # seconds a receive waits for messages before concluding the sub-queue is drained


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _dead_letter(queue: str, m: ServiceBusReceivedMessage) -> DeadLetter:
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


class AzureQueueOps:
    def __init__(self, client: ServiceBusClient, admin: ServiceBusAdministrationClient) -> None:
        self._client = client
        self._admin = admin

    @classmethod
    def from_settings(cls, s: Settings) -> AzureQueueOps:
        if s.service_bus_connection:
            return cls(ServiceBusClient.from_connection_string(s.service_bus_connection),
                       ServiceBusAdministrationClient.from_connection_string(s.service_bus_connection))
        if not s.service_bus_namespace:
            raise OpsError("MARKR_BUS=azure needs ServiceBusConnection or "
                           "ServiceBusConnection__fullyQualifiedNamespace")
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
        return cls(ServiceBusClient(s.service_bus_namespace, credential),
                   ServiceBusAdministrationClient(s.service_bus_namespace, credential))

    def counts(self, queue: str) -> QueueCounts:
        props = self._admin.get_queue_runtime_properties(check_queue(queue))
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
        return [_dead_letter(queue, m) for m in peeked]

    def dead_letter(self, queue: str, message_id: str) -> DeadLetter | None:
        return find_dead_letter(self, queue, message_id, PAGE)

    def _all(self, queue: str) -> list[DeadLetter]:
        return all_dead_letters(self, queue, PAGE)

    def _settle(self, queue: str, message_ids: list[str] | None, act) -> list[str]:
        """Receive the dead-letter sub-queue and call act(message) then complete it, for each message
        named (a snapshot when None); abandon the rest at the end. Returns the ids settled."""
        wanted = set(message_ids) if message_ids is not None else {m.message_id for m in self._all(queue)}
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
                            receiver.complete_message(m)
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
        with self._client.get_queue_sender(queue_name=check_queue(queue)) as sender:
            def send_back(m: ServiceBusReceivedMessage) -> None:
                dead = _dead_letter(queue, m)
                new_id = resubmit_id(dead.message_id, uuid.uuid4().hex[:16])
                sender.send_messages(to_service_bus_message(resubmission(dead, new_id)))
                result.resubmitted[dead.message_id] = new_id

            self._settle(queue, message_ids, send_back)
        if message_ids is not None:
            result.not_found = [i for i in message_ids if i not in result.resubmitted]
        return result

    def purge(self, queue: str, message_ids: list[str] | None = None) -> int:
        return len(self._settle(queue, message_ids, lambda m: None))

    def close(self) -> None:
        self._client.close()
        self._admin.close()

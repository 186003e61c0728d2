"""The ops port: what an operator can see and do with a queue and its dead-letter sub-queue.

Two adapters implement it: local.py (the PostgreSQL-backed local queue engine) and azure.py
(Azure Service Bus through the azure-servicebus SDK).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from shared.bus import queues
from shared.bus.port import OutgoingMessage, QueueCounts

PIPELINE_QUEUES = queues.PIPELINE_QUEUES
RESUBMITTED_FROM = "resubmittedFrom"


class OpsError(Exception):
    """An operation that cannot be done as asked (unknown queue or message, bus unreachable)."""


@dataclass(frozen=True)
class DeadLetter:
    queue: str
    sequence_number: int
    message_id: str
    correlation_id: str | None
    content_type: str | None
    application_properties: dict[str, Any]
    body: bytes
    delivery_count: int
    enqueued_time_utc: datetime | None
    dead_lettered_at_utc: datetime | None
    reason: str | None
    description: str | None

    def body_json(self) -> Any:
        """The body parsed as JSON, or None if it is not JSON."""
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, ValueError):
            return None

    def as_json(self, *, with_body: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "queue": self.queue, "sequenceNumber": self.sequence_number, "messageId": self.message_id,
            "correlationId": self.correlation_id, "contentType": self.content_type,
            "applicationProperties": self.application_properties, "deliveryCount": self.delivery_count,
            "enqueuedTimeUtc": self.enqueued_time_utc.isoformat() if self.enqueued_time_utc else None,
            "deadLetteredAtUtc": self.dead_lettered_at_utc.isoformat() if self.dead_lettered_at_utc else None,
            "deadLetterReason": self.reason, "deadLetterErrorDescription": self.description,
        }
        if with_body:
            parsed = self.body_json()
            data["body"] = parsed if parsed is not None else self.body.decode("utf-8", "replace")
        return data


@dataclass
class ResubmitResult:
    resubmitted: dict[str, str] = field(default_factory=dict)  # dead-lettered id -> new message id
    not_found: list[str] = field(default_factory=list)


def resubmission(dead: DeadLetter, new_id: str) -> OutgoingMessage:
    """The message that takes a dead letter's place: same body, correlation id and properties.

    A new message id, so duplicate detection does not drop it as a repeat of the original.
    """
    return OutgoingMessage(
        body=dead.body, message_id=new_id, content_type=dead.content_type or "application/json",
        correlation_id=dead.correlation_id,
        application_properties={**dead.application_properties, RESUBMITTED_FROM: dead.message_id},
    )


def check_queue(queue: str) -> str:
    if queue not in PIPELINE_QUEUES:
        raise OpsError(f"unknown queue {queue!r}; the queues are: {', '.join(PIPELINE_QUEUES)}")
    return queue


class QueueOps(Protocol):
    def counts(self, queue: str) -> QueueCounts: ...

    def dead_letters(self, queue: str, limit: int = 100, from_sequence_number: int = 0) -> list[DeadLetter]:
        """Peek (nothing is locked or changed), oldest first."""

    def dead_letter(self, queue: str, message_id: str) -> DeadLetter | None:
        """One dead-lettered message with its body, or None."""

    def resubmit(self, queue: str, message_ids: list[str] | None = None) -> ResubmitResult:
        """Send each named dead letter (None = all) back to `queue` as a new message, then remove
        it from the dead-letter sub-queue - only after the send succeeded."""

    def purge(self, queue: str, message_ids: list[str] | None = None) -> int:
        """Delete the named dead letters (None = all); returns how many were removed."""

    def close(self) -> None: ...


def all_dead_letters(ops: QueueOps, queue: str, page: int) -> list[DeadLetter]:
    """Every dead letter of `queue`, peeked page by page in sequence order."""
    found: list[DeadLetter] = []
    start = 0
    while True:
        batch = ops.dead_letters(queue, page, start)
        found.extend(batch)
        if len(batch) < page:
            return found
        start = batch[-1].sequence_number + 1


def find_dead_letter(ops: QueueOps, queue: str, message_id: str, page: int) -> DeadLetter | None:
    return next((m for m in all_dead_letters(ops, queue, page) if m.message_id == message_id), None)


MAX_MESSAGE_ID = 128  # Service Bus limit


def resubmit_id(original: str, token: str) -> str:
    """`<original>/resubmit/<token>`, within Service Bus's 128 characters.

    A resubmitted message that dead-letters again is resubmitted from its first id, not a chain.
    """
    base = original.split("/resubmit/", 1)[0]
    suffix = f"/resubmit/{token}"
    return base[: MAX_MESSAGE_ID - len(suffix)] + suffix

"""The message bus ports: `Bus`, the one way pipeline code sends messages, and `BusAdmin`, what an
operator can see and do with a queue and its dead-letter sub-queue.

Adapters: the local queue engine (shared/bus/local/: LocalQueueEngine is a Bus, LocalBusAdmin wraps
it as a BusAdmin) and Azure Service Bus (shared/bus/azure.py: AzureServiceBus is both, over one
client and credential). Output bindings are not used because they cannot set message_id, which
duplicate detection relies on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

PropertyValue = str | int | float | bool


@dataclass(frozen=True)
class OutgoingMessage:
    body: bytes
    message_id: str
    content_type: str = "application/json"
    correlation_id: str | None = None
    application_properties: dict[str, PropertyValue] = field(default_factory=dict)
    scheduled_enqueue_time_utc: datetime | None = None  # timezone-aware; None = now
    time_to_live: timedelta | None = None  # None = the queue's default


@dataclass(frozen=True)
class QueueCounts:
    """How many messages a queue holds, as both the local engine and Service Bus report them."""

    queue: str
    active: int  # available or locked, not scheduled for later
    scheduled: int
    dead_lettered: int
    oldest_active_enqueued_utc: datetime | None

    def as_json(self) -> dict[str, Any]:
        oldest = self.oldest_active_enqueued_utc
        return {"queue": self.queue, "active": self.active, "scheduled": self.scheduled,
                "deadLettered": self.dead_lettered,
                "oldestActiveEnqueuedUtc": oldest.isoformat() if oldest else None}


class DeadLetterUnsupported(Exception):
    """The bus cannot settle a message that a trigger holds (Azure Service Bus: only the Functions
    host's own receive link can, and Python triggers get no settlement actions)."""


class Bus(Protocol):
    def send(self, queue: str, message: OutgoingMessage) -> None:
        """Send one message. Raises on failure (transient: the caller's trigger retries)."""

    def send_many(self, queue: str, messages: list[OutgoingMessage]) -> None:
        """Send several messages to one queue."""

    def schedule(self, queue: str, messages: list[OutgoingMessage], at: datetime) -> list[str]:
        """Send `messages` to become receivable at `at` (timezone-aware); answers one token per
        message for cancel_scheduled. Raises on failure, like send_many."""

    def cancel_scheduled(self, queue: str, tokens: list[str]) -> int:
        """Withdraw scheduled messages not yet delivered (those already delivered or gone are left
        as they are); answers how many were withdrawn where the bus says, else len(tokens)."""

    def dead_letter_held(self, queue: str, lock_token: str, reason: str, description: str | None = None) -> None:
        """Dead-letter, at once, a message a trigger holds (by its lock token). DeadLetterUnsupported
        where the bus cannot (Azure Service Bus)."""

    def close(self) -> None: ...


class BusAdminError(Exception):
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


class BusAdmin(Protocol):
    """Only the pipeline queues (shared.bus.queues.PIPELINE_QUEUES); others raise BusAdminError."""

    def counts(self, queue: str) -> QueueCounts: ...

    def dead_letters(self, queue: str, limit: int = 100, from_sequence_number: int = 0) -> list[DeadLetter]:
        """Peek (nothing is locked or changed) up to `limit` dead letters from that sequence number on,
        oldest first. Fewer than `limit` does not mean there are no more: read on until none come."""

    def dead_letter(self, queue: str, message_id: str) -> DeadLetter | None:
        """One dead-lettered message with its body, or None."""

    def resubmit(self, queue: str, message_ids: list[str] | None = None) -> ResubmitResult:
        """Send each named dead letter (None = all) back to `queue` as a new message, then remove
        it from the dead-letter sub-queue - only after the send succeeded."""

    def purge(self, queue: str, message_ids: list[str] | None = None) -> int:
        """Delete the named dead letters (None = all); returns how many were removed."""

    def close(self) -> None: ...

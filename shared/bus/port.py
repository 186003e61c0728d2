"""The message bus port: the one way pipeline code sends messages.

Two adapters implement it: the local queue engine (shared/bus/local_engine.py, PostgreSQL-backed)
and Azure Service Bus (shared/bus/azure_service_bus.py). Output bindings are not used because they
cannot set message_id, which duplicate detection relies on.
"""
from __future__ import annotations

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


class Bus(Protocol):
    def send(self, queue: str, message: OutgoingMessage) -> None:
        """Send one message. Raises on failure (transient: the caller's trigger retries)."""

    def send_many(self, queue: str, messages: list[OutgoingMessage]) -> None:
        """Send several messages to one queue."""

    def close(self) -> None: ...

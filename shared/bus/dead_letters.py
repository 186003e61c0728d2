"""Helpers both BusAdmin adapters use: which queues an operator may touch, reading every dead
letter page by page, and the message that takes a resubmitted dead letter's place."""
from __future__ import annotations

from collections.abc import Iterator

from shared.bus.port import BusAdmin, BusAdminError, DeadLetter, OutgoingMessage
from shared.bus.queues import PIPELINE_QUEUES

RESUBMITTED_FROM = "resubmittedFrom"
MAX_MESSAGE_ID = 128  # Service Bus limit


def check_queue(queue: str) -> str:
    if queue not in PIPELINE_QUEUES:
        raise BusAdminError(f"unknown queue {queue!r}; the queues are: {', '.join(PIPELINE_QUEUES)}")
    return queue


def iter_dead_letters(admin: BusAdmin, queue: str, page: int, after: int = -1) -> Iterator[DeadLetter]:
    """The dead letters of `queue` with a sequence number above `after`, page by page in sequence order.

    Stops at an empty page, not a short one: a Service Bus peek may return fewer messages than asked
    for while more remain.
    """
    start = after + 1
    while batch := admin.dead_letters(queue, page, start):
        yield from batch
        start = batch[-1].sequence_number + 1


def all_dead_letters(admin: BusAdmin, queue: str, page: int) -> list[DeadLetter]:
    return list(iter_dead_letters(admin, queue, page))


def find_dead_letter(admin: BusAdmin, queue: str, message_id: str, page: int) -> DeadLetter | None:
    return next((m for m in iter_dead_letters(admin, queue, page) if m.message_id == message_id), None)


def resubmission(dead: DeadLetter, new_id: str) -> OutgoingMessage:
    """The message that takes a dead letter's place: same body, correlation id and properties.

    A new message id, so duplicate detection does not drop it as a repeat of the original.
    """
    return OutgoingMessage(
        body=dead.body, message_id=new_id, content_type=dead.content_type or "application/json",
        correlation_id=dead.correlation_id,
        application_properties={**dead.application_properties, RESUBMITTED_FROM: dead.message_id},
    )


def resubmit_id(original: str, token: str) -> str:
    """`<original>/resubmit/<token>`, within Service Bus's 128 characters.

    A resubmitted message that dead-letters again is resubmitted from its first id, not a chain.
    """
    base = original.split("/resubmit/", 1)[0]
    suffix = f"/resubmit/{token}"
    return base[: MAX_MESSAGE_ID - len(suffix)] + suffix

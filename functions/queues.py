"""Queue triggers as thin adapters: decode the messages, run the stage, settle per message.

Batch triggers (cardinality many) complete or abandon a whole batch: that is all the Functions host
can do. So a message that fails inside a batch must not fail the batch: `consume_batch` lets
`isolate` find the messages that fail on their own, sends copies of just those to the stage's retry
queue and returns, so the rest complete. The retry queue's trigger takes one message at a time and
raises on failure, so Service Bus's own delivery count applies to that message alone and it is
dead-lettered after maxDeliveryCount with its own reason (MaxDeliveryCountExceeded, the exception
as description). Before raising it waits (RETRY_BACKOFF), because an abandoned message comes
back at once and ten quick failures would burn every delivery within a second of an outage.
A batch in which every message fails raises as a whole (an outage): it is redelivered as it was.

A message that does not match its schema can never succeed: it is dead-lettered at once with reason
INVALID_MESSAGE and the schema error as description, so it shows in the dead-letter counts. Where
the bus cannot settle a trigger's message (Azure Service Bus: only the Functions host can), a batch
moves it to the retry queue, and a single-message trigger raises at once, without backing off: the
broker dead-letters it after maxDeliveryCount quick deliveries (MaxDeliveryCountExceeded).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import azure.functions as func

from shared.bootstrap import services
from shared.bus.port import DeadLetterUnsupported, OutgoingMessage
from shared.bus.queues import retry_queue
from shared.pipeline import messages
from shared.pipeline.stages import isolate
from shared.telemetry import submission_context

log = logging.getLogger(__name__)

Handler = Callable[[Sequence[dict[str, Any]]], Any]
MAX_MESSAGE_ID = 128
INVALID_MESSAGE = "MessageSchemaInvalid"  # dead-letter reason of a message that fails its schema


def retry_backoff(delivery_count: int, cap: float = 30.0) -> float:
    """Seconds to hold a failed retry before abandoning it: 1, 2, 4 ... up to `cap`
    (MARKR_RETRY_BACKOFF_MAX_SECONDS)."""
    return float(min(2 ** max(delivery_count - 1, 0), cap))


def _dead_letter_invalid(queue: str, msg: func.ServiceBusMessage, error: Exception) -> bool:
    """Dead-letter a message that fails its schema; False where the bus cannot (see above)."""
    try:
        services().bus.dead_letter_held(queue, msg.lock_token, INVALID_MESSAGE, str(error)[:4000])
    except DeadLetterUnsupported:
        log.error("message %s from %s does not match its schema; the broker dead-letters it after its "
                  "deliveries: %s", msg.message_id, queue, error, extra={"submission_id": msg.correlation_id})
        return False
    log.error("dead-lettered message %s from %s: %s", msg.message_id, queue, error,
              extra={"submission_id": msg.correlation_id})
    return True


def _decode_one(queue: str, msg: func.ServiceBusMessage) -> dict[str, Any] | None:
    """The message's data; None once it was dead-lettered as invalid. Raises (InvalidMessageError, at
    once: retries cannot help) where it cannot be dead-lettered here."""
    try:
        return messages.decode(queue, msg.get_body())
    except messages.InvalidMessageError as exc:
        if _dead_letter_invalid(queue, msg, exc):
            return None
        raise


def retry_copy(queue: str, msg: func.ServiceBusMessage, error: Exception) -> OutgoingMessage:
    suffix = "/retry"
    return OutgoingMessage(
        body=msg.get_body(), message_id=(msg.message_id or "")[: MAX_MESSAGE_ID - len(suffix)] + suffix,
        content_type=msg.content_type or "application/json", correlation_id=msg.correlation_id,
        application_properties={**(msg.application_properties or {}), "failedIn": queue,
                                "firstError": f"{type(error).__name__}: {error}"[:500]},
    )


def consume_batch(queue: str, batch: list[func.ServiceBusMessage], handle: Handler) -> None:
    decoded, failed = [], []
    for msg in batch:
        try:
            decoded.append((msg, messages.decode(queue, msg.get_body())))
        except messages.InvalidMessageError as exc:
            if not _dead_letter_invalid(queue, msg, exc):
                failed.append(((msg, None), exc))  # to the retry queue, whose trigger raises at once
    if decoded:
        failed += isolate(decoded, lambda items: handle([data for _, data in items]))
    if failed:
        for (msg, _), exc in failed:
            log.warning("moving message %s to %s: %s: %s", msg.message_id, retry_queue(queue),
                        type(exc).__name__, exc, extra={"submission_id": msg.correlation_id})
        # If this send fails the batch raises and is redelivered whole; every stage is idempotent.
        services().bus.send_many(retry_queue(queue), [retry_copy(queue, msg, exc) for (msg, _), exc in failed])


def consume_retry(queue: str, msg: func.ServiceBusMessage, handle: Handler) -> None:
    data = _decode_one(queue, msg)
    if data is None:
        return
    with submission_context(data["submissionId"]):
        try:
            handle([data])
        except Exception:
            time.sleep(retry_backoff(msg.delivery_count or 1, services().settings.retry_backoff_max_seconds))
            raise


def consume_one(queue: str, msg: func.ServiceBusMessage, handle: Handler) -> None:
    data = _decode_one(queue, msg)
    if data is not None:
        with submission_context(data["submissionId"]):
            handle([data])

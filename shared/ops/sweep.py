"""Status never lies: every dead-lettered pipeline message becomes a `failed` status event.

A message that dead-letters never reaches the stage that would have reported on it, so without
this the submission would show its last good status forever. The sweeper peeks (never receives)
the dead-letter sub-queues of the validation, marking and aggregation queues and sends one `failed`
notification per dead letter; its message id is derived from the dead letter's id, so sweeping the
same dead letter again is dropped by duplicate detection, and the event's time is when the message
died, so even a re-send after the duplicate window changes nothing.

submission-notification's own dead letters are NOT turned into notifications: a failure to record
a status would be reported through the very queue that failed, which can loop. They show in the
queue counts (`markr-ops queues`, GET /api/ops/queues) for an operator to resubmit.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.bus.port import Bus, OutgoingMessage
from shared.bus.queues import NOTIFICATION, PIPELINE_QUEUES, base_queue
from shared.ops.port import DeadLetter, QueueOps
from shared.pipeline import messages

log = logging.getLogger(__name__)

SWEPT_QUEUES = tuple(q for q in PIPELINE_QUEUES if q != NOTIFICATION)
PAGE = 100
MAX_PER_QUEUE = 1000  # a bounded peek per run; a larger backlog is an incident for a human anyway


@dataclass
class SweepReport:
    notified: dict[str, int] = field(default_factory=dict)  # queue -> failed events sent
    unreadable: list[str] = field(default_factory=list)  # dead letters with no submission to report on


def failure_event(dead: DeadLetter) -> OutgoingMessage | None:
    """The `failed` notification for one dead letter, or None if its body names no submission."""
    try:
        data = messages.decode(base_queue(dead.queue), dead.body)
    except messages.InvalidMessageError:
        return None
    at = dead.dead_lettered_at_utc or dead.enqueued_time_utc or datetime.now(UTC)
    failure = {"stage": dead.queue, "reason": dead.reason or "unknown",
               "description": dead.description}
    return messages.notification(messages.ref_of(data), "failed", at=at.isoformat(), failure=failure,
                                 discriminator=dead.message_id)


def sweep(ops: QueueOps, bus: Bus, *, max_per_queue: int = MAX_PER_QUEUE) -> SweepReport:
    report = SweepReport()
    for queue in SWEPT_QUEUES:
        events: list[OutgoingMessage] = []
        start, seen = 0, 0
        while seen < max_per_queue:
            page = ops.dead_letters(queue, min(PAGE, max_per_queue - seen), start)
            for dead in page:
                event = failure_event(dead)
                if event is None:
                    report.unreadable.append(f"{queue}/{dead.message_id}")
                    log.warning("dead letter %s in %s names no submission; see `markr-ops dead-letters "
                                "show`", dead.message_id, queue, extra={"submission_id": dead.correlation_id})
                else:
                    events.append(event)
            seen += len(page)
            if len(page) < PAGE:
                break
            start = page[-1].sequence_number + 1
        if events:
            bus.send_many(NOTIFICATION, events)  # repeats of earlier sweeps are dropped as duplicates
        report.notified[queue] = len(events)
    return report

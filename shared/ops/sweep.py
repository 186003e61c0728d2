"""Status never lies: every dead-lettered pipeline message becomes a `failed` status event, once.

A message that dead-letters never reaches the stage that would have reported on it, so without
this the submission would show its last good status forever. The sweeper peeks (never receives)
the dead-letter sub-queues of every pipeline queue but submission-notification and reports each
dead letter through `report_failed(ref, failure)` (by default `notify_failed(bus)`: a `failed`
notification to the notifier).

Incremental: dead-letter sub-queues number messages in the order they die (Service Bus does; the
local engine does the same), so the sweep keeps, per queue, the sequence number up to which it has
reported everything (table dead_letter_sweep_checkpoints, migration 0003) and reads on from there,
page after page. The checkpoint is saved after each page is reported: a crash in between reports
that page again, which is harmless (the event's id is derived from the dead letter's id, so
duplicate detection drops it, and its time is when the message died, so a late repeat changes
nothing). It never passes a dead letter younger than SETTLE: one that took its number just before
a neighbour but committed after it would otherwise be skipped; young ones are simply read again.

submission-notification's own dead letters are NOT turned into notifications: a failure to record
a status would be reported through the very queue that failed, which can loop. They show in the
queue counts (`markr-ops queues`, GET /api/ops/queues) for an operator to resubmit.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from shared.bus.port import Bus, BusAdmin, DeadLetter, OutgoingMessage
from shared.bus.queues import NOTIFICATION, PIPELINE_QUEUES, base_queue
from shared.domain.ids import ULID_PATTERN
from shared.pipeline import messages
from shared.pipeline.messages import SubmissionRef

log = logging.getLogger(__name__)

SWEPT_QUEUES = tuple(q for q in PIPELINE_QUEUES if q != NOTIFICATION)
PAGE = 100
MAX_PER_QUEUE = 1000  # dead letters read per queue per run; the rest is read by the next runs
SETTLE = timedelta(seconds=60)  # how old a dead letter must be before the checkpoint passes it


@dataclass(frozen=True)
class Failure:
    """Why and when a submission's message died: the `failure` of its `failed` status."""

    stage: str  # the queue it died in
    reason: str
    description: str | None
    at: datetime  # when it died (on Azure, which does not say, when it was enqueued)
    dead_letter_id: str  # the dead letter's message id: one event per dead letter

    def as_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "reason": self.reason, "description": self.description}


ReportFailed = Callable[[SubmissionRef, Failure], None]


def failed_notification(ref: SubmissionRef, failure: Failure) -> OutgoingMessage:
    return messages.notification(ref, "failed", at=failure.at.isoformat(), failure=failure.as_json(),
                                 discriminator=failure.dead_letter_id)


def notify_failed(bus: Bus) -> ReportFailed:
    """The default report: a `failed` notification to submission-notification for the notifier."""

    def report_failed(ref: SubmissionRef, failure: Failure) -> None:
        bus.send(NOTIFICATION, failed_notification(ref, failure))

    return report_failed


class Checkpoints(Protocol):
    def load(self, queue: str) -> int:
        """The sequence number up to which the queue's dead letters were reported (-1: none)."""

    def save(self, queue: str, sequence_number: int) -> None: ...


class PostgresCheckpoints:
    """Checkpoints in table dead_letter_sweep_checkpoints (migration 0003_sweep_checkpoint.sql)."""

    def __init__(self, pool) -> None:
        self._pool = pool

    def load(self, queue: str) -> int:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT last_sequence_number FROM dead_letter_sweep_checkpoints"
                               " WHERE queue = %s", (queue,)).fetchone()
        return row[0] if row else -1

    def save(self, queue: str, sequence_number: int) -> None:
        # GREATEST: two sweeps running at once never move a checkpoint back.
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO dead_letter_sweep_checkpoints AS c (queue, last_sequence_number)"
                " VALUES (%(queue)s, %(seq)s)"
                " ON CONFLICT (queue) DO UPDATE SET"
                "   last_sequence_number = greatest(c.last_sequence_number, excluded.last_sequence_number),"
                "   updated_at = now()",
                {"queue": queue, "seq": sequence_number})


@dataclass
class SweepReport:
    notified: dict[str, int] = field(default_factory=dict)  # queue -> failures reported
    unreadable: list[str] = field(default_factory=list)  # dead letters with no submission to report on


def failure_of(dead: DeadLetter) -> tuple[SubmissionRef, Failure] | None:
    """The submission run a dead letter belongs to and its failure, or None if its body names none."""
    try:
        ref = messages.ref_of(messages.decode(base_queue(dead.queue), dead.body))
    except messages.InvalidMessageError:
        # Dead-lettered for failing its schema: if it still names a submission run, that run failed.
        ref = _named_run(dead.body_json())
        if ref is None:
            return None
    at = dead.dead_lettered_at_utc or dead.enqueued_time_utc or datetime.now(UTC)
    return ref, Failure(stage=dead.queue, reason=dead.reason or "unknown",
                                          description=dead.description, at=at, dead_letter_id=dead.message_id)


def _named_run(body: Any) -> SubmissionRef | None:
    if not isinstance(body, dict):
        return None
    names = [body.get(k) for k in ("submissionId", "source", "runId")]
    if not all(isinstance(n, str) and n for n in names) or not (
            ULID_PATTERN.match(names[0]) and ULID_PATTERN.match(names[2])):
        return None
    return SubmissionRef(*names)


def _settled(dead: DeadLetter, now: datetime, settle: timedelta) -> bool:
    # Azure gives no dead-lettering time, and numbers its sub-queue itself: always settled.
    # (That the dead-letter sub-queue numbers messages as they arrive, like auto-forwarding does
    # per the SDK's enqueued_sequence_number, is still to be confirmed on a live namespace.)
    # (The local engine's time is the database's; it runs next to the app, so the clocks agree.)
    return dead.dead_lettered_at_utc is None or dead.dead_lettered_at_utc <= now - settle


def sweep_queue(admin: BusAdmin, queue: str, report_failed: ReportFailed, checkpoints: Checkpoints, *,
                page: int = PAGE, max_per_queue: int = MAX_PER_QUEUE,
                settle: timedelta = SETTLE) -> tuple[int, list[str]]:
    """Report the queue's dead letters that died since the checkpoint; returns (reported, unreadable)."""
    start = checkpoints.load(queue) + 1
    reported, unreadable, read = 0, [], 0
    passable = True  # every dead letter read so far is settled: the checkpoint may follow
    now = datetime.now(UTC)
    while read < max_per_queue:
        batch = admin.dead_letters(queue, min(page, max_per_queue - read), start)
        if not batch:
            break  # an empty page, not a short one, ends it: a Service Bus peek may return fewer
        mark = None
        for dead in batch:
            found = failure_of(dead)
            if found is None:
                unreadable.append(f"{queue}/{dead.message_id}")
                log.warning("dead letter %s in %s names no submission; see `markr-ops dead-letters show`",
                            dead.message_id, queue, extra={"submission_id": dead.correlation_id})
            else:
                report_failed(*found)
                reported += 1
            passable = passable and _settled(dead, now, settle)
            if passable:
                mark = dead.sequence_number
        if mark is not None:
            checkpoints.save(queue, mark)
        read += len(batch)
        start = batch[-1].sequence_number + 1
    return reported, unreadable


def sweep(admin: BusAdmin, bus: Bus | None = None, *, checkpoints: Checkpoints,
          report_failed: ReportFailed | None = None, page: int = PAGE,
          max_per_queue: int = MAX_PER_QUEUE, settle: timedelta = SETTLE) -> SweepReport:
    """Report every dead letter of the swept queues that died since the last sweep.

    `report_failed` defaults to notify_failed(bus); `checkpoints` is where each queue's progress is
    kept (PostgresCheckpoints over the app's pool).
    """
    if report_failed is None:
        if bus is None:
            raise ValueError("sweep needs report_failed, or a bus to send `failed` notifications to")
        report_failed = notify_failed(bus)
    report = SweepReport()
    for queue in SWEPT_QUEUES:
        reported, unreadable = sweep_queue(admin, queue, report_failed, checkpoints, page=page,
                                           max_per_queue=max_per_queue, settle=settle)
        report.notified[queue] = reported
        report.unreadable.extend(unreadable)
    return report

"""BusAdmin over the local queue engine: counts, peek, resubmit and purge of dead letters."""
from __future__ import annotations

import contextlib
import logging
import uuid

from shared.bus.dead_letters import (
    check_queue,
    find_dead_letter,
    iter_dead_letters,
    resubmission,
    resubmit_id,
)
from shared.bus.local.engine import LocalQueueEngine, LockLostError, ReceivedMessage
from shared.bus.port import DeadLetter, QueueCounts, ResubmitResult

log = logging.getLogger(__name__)
PAGE = 200


def to_dead_letter(m: ReceivedMessage) -> DeadLetter:
    return DeadLetter(
        queue=m.queue, sequence_number=m.sequence_number, message_id=m.message_id,
        correlation_id=m.correlation_id, content_type=m.content_type,
        application_properties=dict(m.application_properties), body=m.body,
        delivery_count=m.delivery_count, enqueued_time_utc=m.enqueued_time_utc,
        dead_lettered_at_utc=m.dead_lettered_at_utc, reason=m.dead_letter_reason,
        description=m.dead_letter_error_description,
    )


class LocalBusAdmin:
    def __init__(self, engine: LocalQueueEngine) -> None:
        self.engine = engine

    def counts(self, queue: str) -> QueueCounts:
        return self.engine.counts(check_queue(queue))

    def dead_letters(self, queue: str, limit: int = 100, from_sequence_number: int = 0) -> list[DeadLetter]:
        peeked = self.engine.peek(check_queue(queue), dead_letter=True, max_messages=limit,
                                  from_sequence_number=from_sequence_number)
        return [to_dead_letter(m) for m in peeked]

    def dead_letter(self, queue: str, message_id: str) -> DeadLetter | None:
        return find_dead_letter(self, queue, message_id, PAGE)

    def _take(self, queue: str, message_ids: list[str] | None) -> tuple[list[str], list[str]]:
        """The ids to act on (a snapshot: what dead-letters later is not touched) and those missing."""
        present = [m.message_id for m in iter_dead_letters(self, queue, PAGE)]
        if message_ids is None:
            return list(dict.fromkeys(present)), []
        known = set(present)
        return [i for i in dict.fromkeys(message_ids) if i in known], [i for i in message_ids if i not in known]

    def _locked(self, queue: str, wanted: list[str]):
        """The wanted dead letters, locked, a page at a time."""
        for start in range(0, len(wanted), PAGE):
            batch = wanted[start:start + PAGE]
            if got := self.engine.receive(queue, len(batch), dead_letter=True, message_ids=batch):
                yield got

    def resubmit(self, queue: str, message_ids: list[str] | None = None) -> ResubmitResult:
        check_queue(queue)
        wanted, missing = self._take(queue, message_ids)
        result = ResubmitResult(not_found=missing)
        for locked in self._locked(queue, wanted):
            new_ids = {m.message_id: resubmit_id(m.message_id, uuid.uuid4().hex[:16]) for m in locked}
            try:
                self.engine.send_many(queue, [resubmission(to_dead_letter(m), new_ids[m.message_id])
                                              for m in locked])
            except Exception:
                for m in locked:  # they stay dead-lettered (an expired lock releases itself)
                    with contextlib.suppress(LockLostError):
                        self.engine.abandon(queue, m.lock_token)
                raise
            # Removed from the dead letters only once the page was sent.
            self.engine.complete_many(queue, [m.lock_token for m in locked])
            result.resubmitted.update(new_ids)
            for m in locked:
                log.info("resubmitted %s as %s to %s", m.message_id, new_ids[m.message_id], queue,
                         extra={"submission_id": m.correlation_id})
        return result

    def purge(self, queue: str, message_ids: list[str] | None = None) -> int:
        check_queue(queue)
        wanted, _ = self._take(queue, message_ids)
        removed = 0
        for locked in self._locked(queue, wanted):
            self.engine.complete_many(queue, [m.lock_token for m in locked])
            removed += len(locked)
        return removed

    def close(self) -> None:
        """The engine belongs to whoever passed it in."""

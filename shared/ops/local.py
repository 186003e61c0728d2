"""QueueOps over the local queue engine (shared/bus/local_engine.py)."""
from __future__ import annotations

import logging
import uuid

from shared.bus.local_engine import LocalQueueEngine, ReceivedMessage
from shared.ops.port import (
    DeadLetter,
    QueueCounts,
    ResubmitResult,
    all_dead_letters,
    check_queue,
    find_dead_letter,
    resubmission,
    resubmit_id,
)

log = logging.getLogger(__name__)
PAGE = 200


def _dead_letter(m: ReceivedMessage) -> DeadLetter:
    return DeadLetter(
        queue=m.queue, sequence_number=m.sequence_number, message_id=m.message_id,
        correlation_id=m.correlation_id, content_type=m.content_type,
        application_properties=dict(m.application_properties), body=m.body,
        delivery_count=m.delivery_count, enqueued_time_utc=m.enqueued_time_utc,
        dead_lettered_at_utc=m.dead_lettered_at_utc, reason=m.dead_letter_reason,
        description=m.dead_letter_error_description,
    )


class LocalQueueOps:
    def __init__(self, engine: LocalQueueEngine) -> None:
        self.engine = engine

    def counts(self, queue: str) -> QueueCounts:
        return self.engine.counts(check_queue(queue))

    def dead_letters(self, queue: str, limit: int = 100, from_sequence_number: int = 0) -> list[DeadLetter]:
        peeked = self.engine.peek(check_queue(queue), dead_letter=True, max_messages=limit,
                                  from_sequence_number=from_sequence_number)
        return [_dead_letter(m) for m in peeked]

    def dead_letter(self, queue: str, message_id: str) -> DeadLetter | None:
        return find_dead_letter(self, queue, message_id, PAGE)

    def _all(self, queue: str) -> list[DeadLetter]:
        return all_dead_letters(self, queue, PAGE)

    def _take(self, queue: str, message_ids: list[str] | None) -> tuple[list[str], list[str]]:
        """The ids to act on (a snapshot: what dead-letters later is not touched) and those missing."""
        present = [m.message_id for m in self._all(queue)]
        if message_ids is None:
            return list(dict.fromkeys(present)), []
        known = set(present)
        return [i for i in dict.fromkeys(message_ids) if i in known], [i for i in message_ids if i not in known]

    def resubmit(self, queue: str, message_ids: list[str] | None = None) -> ResubmitResult:
        check_queue(queue)
        wanted, missing = self._take(queue, message_ids)
        result = ResubmitResult(not_found=missing)
        for start in range(0, len(wanted), PAGE):
            batch = wanted[start:start + PAGE]
            for m in self.engine.receive(queue, len(batch), dead_letter=True, message_ids=batch):
                assert m.lock_token is not None
                new_id = resubmit_id(m.message_id, uuid.uuid4().hex[:16])
                try:
                    self.engine.send(queue, resubmission(_dead_letter(m), new_id))
                except Exception:
                    self.engine.abandon(queue, m.lock_token)  # stays dead-lettered
                    raise
                self.engine.complete(queue, m.lock_token)
                result.resubmitted[m.message_id] = new_id
                log.info("resubmitted %s as %s to %s", m.message_id, new_id, queue,
                         extra={"submission_id": m.correlation_id})
        return result

    def purge(self, queue: str, message_ids: list[str] | None = None) -> int:
        check_queue(queue)
        wanted, _ = self._take(queue, message_ids)
        removed = 0
        for start in range(0, len(wanted), PAGE):
            batch = wanted[start:start + PAGE]
            for m in self.engine.receive(queue, len(batch), dead_letter=True, message_ids=batch):
                assert m.lock_token is not None
                self.engine.complete(queue, m.lock_token)
                removed += 1
        return removed

    def close(self) -> None:
        """The engine belongs to shared.wiring (or to whoever passed it in)."""

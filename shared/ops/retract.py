"""Retracting a submission: a vendor sent the wrong batch, or a data-protection request arrived.

1. PostgreSQL, one transaction (shared/db/retractions.py): the retraction is recorded, every
   (test, student) it contributed to is recomputed from the remaining submissions' validated rows
   (or removed), the statistics are refreshed, and its status becomes `retracted` with the reason.
2. The vault: the head is marked retracted (reprocess skips it), or with `erase` the body is deleted
   and a tombstone keeps its sha256, the time and the reason.
Both steps are idempotent, so running it again finishes what an interrupted run left undone.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from shared.db import retractions
from shared.domain.ids import ULID_PATTERN
from shared.pipeline.outcomes import Problem, RetractionDone

log = logging.getLogger(__name__)
MAX_REASON = 2000
RETRACTED_FIELD = "retractedAt"  # on the vault head; shared/ops/replay.py skips such entries


def _now() -> datetime:
    return datetime.now(UTC)


def retract(submission_id: str, reason: str, *, erase: bool, pool, vault, store,
            clock: Callable[[], datetime] = _now) -> Problem | RetractionDone:
    if not isinstance(submission_id, str) or not ULID_PATTERN.match(submission_id):
        return Problem("invalid-submission-id", f"{submission_id!r} is not a submission id (a 26-character ULID)")
    reason = (reason or "").strip() if isinstance(reason, str) else ""
    if not reason:
        return Problem("reason-required", "say why the submission is retracted (reason)")
    if len(reason) > MAX_REASON:
        return Problem("reason-too-long", f"the reason is longer than {MAX_REASON} characters")
    state = store.status(submission_id)
    record = vault.find(submission_id)
    with pool.connection() as conn:
        known = conn.execute("SELECT source FROM retractions WHERE submission_id = %s", (submission_id,)).fetchone()
    source = (state.source if state else None) or (record.source if record else None) or (known[0] if known else None)
    if source is None:
        return Problem("submission-not-found", f"no submission {submission_id}")
    at = clock()
    with pool.connection() as conn:
        done = retractions.retract(conn, submission_id, source, reason, at)
    if record is not None and not erase and RETRACTED_FIELD not in record.status:
        vault.record_status(source, submission_id, {RETRACTED_FIELD: done.retracted_at,
                                                    "retractionReason": done.reason[:MAX_REASON]})
    erased = None
    if erase:
        erased = vault.erase(source, submission_id, reason=done.reason, at=at)
        with pool.connection() as conn:
            erased_at = retractions.record_erasure(conn, submission_id, erased["sha256"] if erased else None, at)
        erased = {**(erased or {}), "erasedAt": erased_at.isoformat()}
    log.info("retracted: %d test(s) recomputed", len(done.tests), extra={"submission_id": submission_id})
    return RetractionDone({
        "submissionId": submission_id, "source": source, "status": "retracted", "reason": done.reason,
        "retractedAt": done.retracted_at.isoformat(), "alreadyRetracted": not done.newly,
        "testIds": list(done.tests), "studentsRecomputed": done.students_recomputed,
        "studentsRemoved": done.students_removed, "erased": erased,
    })

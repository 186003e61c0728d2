"""A submission's status, as a pure state machine over the pipeline's events.

Events may arrive late, twice or out of order (queues deliver at least once, stages run
concurrently), so `apply` is idempotent and statuses never go backwards within a run:
received < validated < failed < rejected | completed. A resubmitted or replayed stage that then
succeeds moves `failed` on to `completed`. A replay is a newer run (run ids are ULIDs, so they sort
by time): its first event starts the status over; events of older runs are ignored.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    RECEIVED = "received"
    VALIDATED = "validated"
    REJECTED = "rejected"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRACTED = "retracted"  # withdrawn by an operator (shared/ops/retract.py); nothing moves it again


RANK = {Status.RECEIVED: 0, Status.VALIDATED: 1, Status.FAILED: 2, Status.REJECTED: 3, Status.COMPLETED: 3,
        Status.RETRACTED: 4}
# A run never leaves these.
FINAL = frozenset({Status.REJECTED, Status.COMPLETED})
# Where a run stops moving by itself: final, or failed until an operator resubmits or replays it.
# The receiver stops waiting here, and replay/reprocess wait for these.
SETTLED = FINAL | {Status.FAILED, Status.RETRACTED}


@dataclass(frozen=True)
class SubmissionStatus:
    submission_id: str
    source: str
    run_id: str
    status: Status = Status.RECEIVED
    received_at: datetime | None = None
    validated_at: datetime | None = None
    rejected_at: datetime | None = None
    marked_at: datetime | None = None
    completed_at: datetime | None = None
    failed_at: datetime | None = None
    result_count: int | None = None
    test_ids: tuple[str, ...] | None = None
    aggregated_test_ids: tuple[str, ...] = ()
    errors: tuple[dict, ...] = ()
    error_count: int = 0
    warnings: tuple[dict, ...] = ()
    failure: dict | None = None
    retracted_at: datetime | None = None
    retraction_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Event:
    submission_id: str
    source: str
    run_id: str
    event: str
    at: datetime
    result_count: int | None = None
    test_ids: tuple[str, ...] | None = None
    test_id: str | None = None
    errors: tuple[dict, ...] = ()
    error_count: int | None = None
    warnings: tuple[dict, ...] = ()
    failure: dict | None = None
    reason: str | None = None  # "retracted"


def _promote(state: SubmissionStatus, status: Status) -> Status:
    if state.status in FINAL:
        return state.status
    return status if RANK[status] >= RANK[state.status] else state.status


def apply(state: SubmissionStatus | None, e: Event) -> SubmissionStatus:
    if state is None:
        state = SubmissionStatus(e.submission_id, e.source, e.run_id)
    if state.status == Status.RETRACTED:
        return state  # a retraction is for good: no late event and no replay's run brings it back
    if e.event == "retracted":
        return replace(state, status=Status.RETRACTED, retracted_at=e.at, retraction_reason=e.reason)
    if e.run_id < state.run_id:
        return state  # a late event of a run that a replay superseded
    if e.run_id > state.run_id:
        # A replay: start over, "as if newly received", keeping when the document first arrived.
        state = SubmissionStatus(state.submission_id, state.source, e.run_id, received_at=state.received_at)

    if e.event == "received":
        state = replace(state, received_at=state.received_at or e.at)
    elif e.event == "validated":
        state = replace(state, validated_at=state.validated_at or e.at, result_count=e.result_count,
                        test_ids=e.test_ids if e.test_ids is not None else state.test_ids,
                        warnings=e.warnings, status=_promote(state, Status.VALIDATED))
    elif e.event == "rejected":
        state = replace(state, rejected_at=state.rejected_at or e.at, errors=e.errors,
                        error_count=e.error_count if e.error_count is not None else len(e.errors),
                        warnings=e.warnings, status=_promote(state, Status.REJECTED))
    elif e.event == "marked":
        state = replace(state, marked_at=state.marked_at or e.at, result_count=e.result_count,
                        test_ids=e.test_ids)
    elif e.event == "aggregated":
        # One test (test_id) or several at once (test_ids, as the batched aggregator reports them).
        done_now = set(e.test_ids or ()) | ({e.test_id} if e.test_id else set())
        if not done_now <= set(state.aggregated_test_ids):
            state = replace(state, aggregated_test_ids=tuple(sorted(done_now | set(state.aggregated_test_ids))))
    elif e.event == "failed":
        if state.status not in FINAL:
            state = replace(state, failed_at=e.at, failure=e.failure, status=_promote(state, Status.FAILED))
    else:
        raise ValueError(f"unknown event {e.event!r}")

    done = (state.status not in FINAL and state.marked_at is not None and state.test_ids is not None
            and set(state.test_ids) <= set(state.aggregated_test_ids))
    if done:
        state = replace(state, status=Status.COMPLETED, completed_at=e.at)
    return state

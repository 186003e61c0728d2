"""Read side: a submission's status and a test's aggregate, as the APIs answer them."""
from __future__ import annotations

import re
from datetime import datetime

from shared.db import results as results_db
from shared.db import submissions as submissions_db
from shared.domain.submission_status import SubmissionStatus
from shared.pipeline.api import ApiResponse, error

ULID_PATTERN = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def status_json(state: SubmissionStatus) -> dict:
    return {
        "submissionId": state.submission_id,
        "source": state.source,
        "runId": state.run_id,
        "status": state.status,
        "receivedAt": _iso(state.received_at),
        "validatedAt": _iso(state.validated_at),
        "rejectedAt": _iso(state.rejected_at),
        "markedAt": _iso(state.marked_at),
        "completedAt": _iso(state.completed_at),
        "failedAt": _iso(state.failed_at),
        "results": state.result_count,
        "testIds": list(state.test_ids) if state.test_ids is not None else [],
        "errors": list(state.errors),
        "errorCount": state.error_count,
        "warnings": list(state.warnings),
        "failure": state.failure,
    }


def submission_status(submission_id: str, *, pool, vault, default_source: str) -> ApiResponse:
    if not ULID_PATTERN.match(submission_id):
        return error(400, "invalid-submission-id", f"{submission_id!r} is not a submission id (a 26-character ULID)")
    with pool.connection() as conn:
        state = submissions_db.get(conn, submission_id)
    if state is not None:
        return ApiResponse(200, status_json(state))
    # The notifier may not have recorded `received` yet; the vault is written before the receiver answers.
    # The default source first: a direct read. Other sources need a scan.
    record = vault.get(default_source, submission_id) or vault.find(submission_id)
    if record is None:
        return error(404, "submission-not-found", f"no submission {submission_id}")
    pending = SubmissionStatus(record.submission_id, record.source, record.submission_id,
                               received_at=record.received_at)
    return ApiResponse(200, status_json(pending))


def test_aggregate(test_id: str, *, pool) -> ApiResponse:
    with pool.connection() as conn:
        stats = results_db.get_statistics(conn, test_id)
    if stats is None:
        return error(404, "test-not-found", f"no results for test {test_id!r}")
    return ApiResponse(200, stats.as_json())

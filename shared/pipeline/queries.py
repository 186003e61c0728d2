"""Read side: a submission's status and a test's aggregate, as outcomes for the HTTP edge."""
from __future__ import annotations

from datetime import datetime

from shared.domain.ids import ULID_PATTERN, invalid_identifier
from shared.domain.submission_status import SubmissionStatus
from shared.pipeline.outcomes import Problem, StatisticsFound, StatusFound
from shared.pipeline.ports import PipelineStore, Vault


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def status_json(state: SubmissionStatus) -> dict:
    return {
        "submissionId": state.submission_id,
        "source": state.source,
        "runId": state.run_id,
        "status": str(state.status),
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
        **({"retractedAt": _iso(state.retracted_at), "retractionReason": state.retraction_reason}
           if state.retracted_at else {}),
    }


def submission_status(submission_id: str, *, store: PipelineStore, vault: Vault,
                      only_source: str | None = None) -> Problem | StatusFound:
    """`only_source`: a vendor's own source; another source's submission is not found (None: any)."""
    if not ULID_PATTERN.match(submission_id):
        return Problem("invalid-submission-id", f"{submission_id!r} is not a submission id (a 26-character ULID)")
    not_found = Problem("submission-not-found", f"no submission {submission_id}")
    state = store.status(submission_id)
    if state is not None:
        return StatusFound(state) if only_source is None or state.source == only_source else not_found
    # Nothing has processed it yet; the vault is written before the receiver answers. A vendor's
    # own partition is a direct read; any source needs a scan.
    record = vault.get(only_source, submission_id) if only_source is not None else vault.find(submission_id)
    if record is None:
        return not_found
    return StatusFound(SubmissionStatus(record.submission_id, record.source, record.submission_id,
                                        received_at=record.received_at))


def statistics_of(test_id: str, *, store: PipelineStore) -> Problem | StatisticsFound:
    bad = invalid_identifier(test_id)
    if bad:
        return Problem("invalid-test-id", f"test id {test_id!r} {bad}")
    stats = store.statistics(test_id)
    if stats is None:
        return Problem("test-not-found", f"no results for test {test_id!r}")
    return StatisticsFound(stats)

"""The ports the use cases depend on, and the values that cross them.

Adapters: `shared/db/store.py` (PostgreSQL) for PipelineStore, `shared/vault/table_vault.py` for
Vault, `shared/bus/` for Bus; tests/fakes.py has in-memory versions of all three.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from shared.bus.port import Bus
from shared.domain.results_document import TestResult
from shared.domain.submission_status import Event, SubmissionStatus
from shared.pipeline.messages import SubmissionRef
from shared.vault.port import Vault

__all__ = ["Bus", "Vault", "PipelineStore", "ResultsReader", "Accepted", "Rejected", "Marked", "Statistics",
           "CatalogueEntry", "Histogram", "ItemAnalysis", "Failure"]


@dataclass(frozen=True)
class Failure:
    stage: str
    reason: str
    description: str

    def as_json(self) -> dict[str, str]:
        return {"stage": self.stage, "reason": self.reason, "description": self.description}


@dataclass(frozen=True)
class Accepted:
    """A document that passed validation: its rows, to be staged for marking."""

    ref: SubmissionRef
    results: Sequence[TestResult]
    test_ids: tuple[str, ...]
    warnings: tuple[dict, ...]
    at: datetime
    received_at: datetime | None = None


@dataclass(frozen=True)
class Rejected:
    ref: SubmissionRef
    errors: tuple[dict, ...]
    error_count: int
    result_count: int
    warnings: tuple[dict, ...]
    at: datetime
    received_at: datetime | None = None


def validation_events(accepted: Sequence[Accepted], rejected: Sequence[Rejected]) -> list[Event]:
    """The status events a validation batch causes (with the receipt time the receiver sent along)."""
    events = [Event(d.ref.submission_id, d.ref.source, d.ref.run_id, "received", d.received_at)
              for d in (*accepted, *rejected) if d.received_at is not None]
    events += [Event(a.ref.submission_id, a.ref.source, a.ref.run_id, "validated", a.at,
                     result_count=len(a.results), test_ids=a.test_ids, warnings=a.warnings) for a in accepted]
    events += [Event(r.ref.submission_id, r.ref.source, r.ref.run_id, "rejected", r.at, errors=r.errors,
                     error_count=r.error_count, result_count=r.result_count, warnings=r.warnings)
               for r in rejected]
    return events


@dataclass(frozen=True)
class Marked:
    """A submission merged into the results: the results version of each test it touched."""

    ref: SubmissionRef
    test_versions: Mapping[str, int]
    result_count: int
    newly_applied: bool = True


def needed_versions(test_versions: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """The version each test's statistics must reach to cover all of the markings' `test_versions`."""
    needed: dict[str, int] = {}
    for versions in test_versions:
        for test_id, version in versions.items():
            needed[test_id] = max(needed.get(test_id, 0), version)
    return needed


@dataclass(frozen=True)
class Statistics:
    test_id: str
    count: int
    mean: float
    stddev: float
    min: float
    max: float
    p25: float
    p50: float
    p75: float
    computed_version: int

    def as_json(self) -> dict:
        return {"mean": self.mean, "stddev": self.stddev, "min": self.min, "max": self.max,
                "p25": self.p25, "p50": self.p50, "p75": self.p75, "count": self.count}


@dataclass(frozen=True)
class CatalogueEntry:
    test_id: str
    student_count: int
    max_available: int
    submission_count: int
    updated_at: datetime

    def as_json(self) -> dict:
        return {"testId": self.test_id, "studentCount": self.student_count, "maxAvailable": self.max_available,
                "submissionCount": self.submission_count, "updatedAt": self.updated_at.isoformat()}


@dataclass(frozen=True)
class Histogram:
    test_id: str
    counts: tuple[int, ...]  # ten bins: [0, 10), [10, 20) ... [90, 100]
    total: int

    def as_json(self) -> dict:
        bins = [{"lowerPct": 10 * i, "upperPct": 10 * (i + 1), "count": c} for i, c in enumerate(self.counts)]
        return {"testId": self.test_id, "bins": bins, "total": self.total}


@dataclass(frozen=True)
class ItemAnalysis:
    test_id: str
    student_count: int  # students with results
    analysed_students: int  # of them, those whose counted scan carries answers
    cronbach_alpha: float | None
    kr20: float | None  # alpha, when every question is scored 0/1
    items: list[dict]  # per question, as stored (already in the JSON shape)
    submission_count: int
    mismatched_results: int
    mismatched_submissions: int
    unanswered_results: int

    def as_json(self) -> dict:
        return {"testId": self.test_id, "studentCount": self.student_count,
                "analysedStudents": self.analysed_students, "questionCount": len(self.items),
                "cronbachAlpha": self.cronbach_alpha, "kr20": self.kr20, "items": self.items,
                "dataQuality": {"submissions": self.submission_count,
                                "mismatchedResults": self.mismatched_results,
                                "mismatchedSubmissions": self.mismatched_submissions,
                                "unansweredResults": self.unanswered_results}}


@dataclass
class MarkingOutcome:
    marked: list[Marked] = field(default_factory=list)
    nothing_to_mark: list[SubmissionRef] = field(default_factory=list)  # no validated rows
    statuses: dict[str, SubmissionStatus] = field(default_factory=dict)  # as record_and_complete left them
    recomputed: list[str] = field(default_factory=list)  # the tests record_and_complete recomputed


class PipelineStore(Protocol):
    """The pipeline's derived state (results, statistics, statuses). Each call is one transaction
    and idempotent, so a redelivered message repeats it harmlessly."""

    def record_validation(self, accepted: Sequence[Accepted], rejected: Sequence[Rejected]) -> None:
        """Stage the accepted documents' rows and move the statuses to validated / rejected."""

    def apply_markings(self, refs: Sequence[SubmissionRef], at: datetime) -> MarkingOutcome:
        """Merge each run's staged rows into the results once (highest marks kept); status -> marked."""

    def record_and_complete(self, accepted: Sequence[Accepted], rejected: Sequence[Rejected],
                            at: datetime) -> MarkingOutcome:
        """record_validation, apply_markings of the accepted runs and refresh_statistics of what they
        marked, in one transaction: the marked submissions are completed (aggregated) with it."""

    def refresh_statistics(self, test_versions: Mapping[str, int]) -> list[str]:
        """Bring each test's statistics up to at least its version; returns the tests recomputed."""

    def record_events(self, events: Sequence[Event]) -> list[SubmissionStatus]:
        """Apply status events (the state machine in shared/domain/submission_status.py)."""

    def status(self, submission_id: str) -> SubmissionStatus | None: ...

    def statuses(self, submission_ids: Sequence[str]) -> dict[str, SubmissionStatus]:
        """The statuses of those of `submission_ids` that have one."""

    def statistics(self, test_id: str) -> Statistics | None: ...

    def ping(self) -> None: ...


class ResultsReader(Protocol):
    """The analysts' views: refreshed with the statistics, or (item analysis) computed when read from
    the sums the marking keeps, so never stale after a 201."""

    def list_tests(self, after: str | None, limit: int) -> Sequence[CatalogueEntry]:
        """Up to `limit` tests with statistics, by test id, after `after` (None: from the start)."""

    def histogram(self, test_id: str) -> Histogram | None: ...

    def item_analysis(self, test_id: str) -> ItemAnalysis | None: ...

    def students_csv(self, test_id: str) -> bytes | None: ...

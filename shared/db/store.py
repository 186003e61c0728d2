"""The PipelineStore and ResultsReader ports on PostgreSQL: one transaction per call, set-based over a whole batch."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from psycopg_pool import ConnectionPool

from shared.db import results, submissions
from shared.db.connection import autocommit
from shared.domain.submission_status import Event, SubmissionStatus
from shared.pipeline.messages import SubmissionRef
from shared.pipeline.ports import (
    Accepted,
    CatalogueEntry,
    Histogram,
    ItemAnalysis,
    Marked,
    MarkingOutcome,
    Rejected,
    Statistics,
    needed_versions,
    validation_events,
)


def _mark(conn, refs: Sequence[SubmissionRef], at: datetime) -> tuple[MarkingOutcome, list[Event]]:
    """The markings of `refs` (in the caller's transaction) and the status events they cause."""
    outcome = MarkingOutcome()
    applied = results.apply_markings(conn, [(r.submission_id, r.run_id) for r in refs])
    events = []
    for ref in refs:
        marking = applied[(ref.submission_id, ref.run_id)]
        if marking is None:
            outcome.nothing_to_mark.append(ref)
            continue
        outcome.marked.append(Marked(ref, marking.test_versions, marking.result_count, marking.newly_applied))
        events.append(Event(ref.submission_id, ref.source, ref.run_id, "marked", at,
                            result_count=marking.result_count, test_ids=tuple(sorted(marking.test_versions))))
    return outcome, events


class PostgresStore:
    def __init__(self, pool: Callable[[], ConnectionPool]) -> None:
        # Asked for on each call: the composition root's pool opens (and migrates) on first use.
        self._pool = pool

    @property
    def pool(self) -> ConnectionPool:
        return self._pool()

    def record_validation(self, accepted: Sequence[Accepted], rejected: Sequence[Rejected]) -> None:
        events = validation_events(accepted, rejected)
        with self.pool.connection() as conn, conn.transaction():
            if accepted:
                results.stage_many(conn, [(a.ref.submission_id, a.results) for a in accepted])
            submissions.record_events(conn, events)

    def apply_markings(self, refs: Sequence[SubmissionRef], at: datetime) -> MarkingOutcome:
        with self.pool.connection() as conn, conn.transaction():
            outcome, events = _mark(conn, refs, at)
            submissions.record_events(conn, events)
        return outcome

    def record_and_complete(self, accepted: Sequence[Accepted], rejected: Sequence[Rejected],
                            at: datetime) -> MarkingOutcome:
        """Verdicts, marking and statistics in one transaction, the statuses in one pass (validated,
        marked, completed): two commits and a status pass less than the stages one after another."""
        events = validation_events(accepted, rejected)
        outcome = MarkingOutcome()
        with self.pool.connection() as conn, conn.transaction():
            if accepted:
                results.stage_many(conn, [(a.ref.submission_id, a.results) for a in accepted])
                outcome, marked = _mark(conn, [a.ref for a in accepted], at)
                events += marked + [Event(m.ref.submission_id, m.ref.source, m.ref.run_id, "aggregated", at,
                                          test_ids=tuple(sorted(m.test_versions))) for m in outcome.marked]
            outcome.statuses = {state.submission_id: state for state in submissions.record_events(conn, events)}
            # Last: its plan setting holds to the commit. The version bump holds the tests rows, so
            # the statistics cover every marking of them before this one, and this one.
            outcome.recomputed = results.refresh_last(conn, needed_versions(m.test_versions for m in outcome.marked))
        return outcome

    def refresh_statistics(self, test_versions: Mapping[str, int]) -> list[str]:
        with self.pool.connection() as conn:
            return results.refresh_many(conn, test_versions)

    def record_events(self, events: Sequence[Event]) -> list[SubmissionStatus]:
        with self.pool.connection() as conn, conn.transaction():
            return submissions.record_events(conn, events)

    def status(self, submission_id: str) -> SubmissionStatus | None:
        with autocommit(self.pool) as conn:
            return submissions.get(conn, submission_id)

    def statuses(self, submission_ids: Sequence[str]) -> dict[str, SubmissionStatus]:
        with autocommit(self.pool) as conn:
            return submissions.get_many(conn, submission_ids)

    def statistics(self, test_id: str) -> Statistics | None:
        with autocommit(self.pool) as conn:
            return results.get_statistics(conn, test_id)

    def list_tests(self, after: str | None, limit: int) -> list[CatalogueEntry]:
        with autocommit(self.pool) as conn:
            return results.list_tests(conn, after, limit)

    def histogram(self, test_id: str) -> Histogram | None:
        with autocommit(self.pool) as conn:
            return results.get_histogram(conn, test_id)

    def item_analysis(self, test_id: str) -> ItemAnalysis | None:
        with autocommit(self.pool) as conn:
            return results.get_item_analysis(conn, test_id)

    def students_csv(self, test_id: str) -> bytes | None:
        with autocommit(self.pool) as conn:
            return results.students_csv(conn, test_id)

    def ping(self) -> None:
        with self.pool.connection() as conn:
            conn.execute("SELECT 1")

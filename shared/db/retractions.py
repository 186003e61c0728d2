"""Retracting a submission in PostgreSQL: remove its contribution using lineage, in one transaction.

validated_results keeps every accepted document's rows per submission, and student_submissions names
the submissions behind each (test, student) in student_results. So each affected pair is recomputed from the validated
rows of its remaining submissions by the marker's rule (highest available and highest obtained,
independently), and so is its counted scan for item analysis (highest obtained, the latest on a tie);
a pair with none left is deleted. The submission's validated rows, answers and data-quality counts
go, the affected tests' item-analysis sums are rebuilt from the counted scans that remain, and the
tests get a new results version and their statistics (aggregate, histogram, catalogue entry, items)
are recomputed, or removed when no student is left, before the transaction commits.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from shared.db import results, submissions
from shared.domain.submission_status import Event


@dataclass(frozen=True)
class Retraction:
    submission_id: str
    source: str
    reason: str
    retracted_at: datetime
    newly: bool  # False: it was retracted before (nothing changed in the results this time)
    tests: tuple[str, ...] = ()  # tests whose results changed
    students_removed: int = 0  # (test, student) pairs left with no submission
    students_recomputed: int = 0  # pairs recomputed from the remaining submissions
    erased_at: datetime | None = None
    sha256: str | None = None


_RECORD = """
INSERT INTO retractions (submission_id, source, reason, retracted_at) VALUES (%(sid)s, %(source)s, %(reason)s, %(at)s)
ON CONFLICT (submission_id) DO NOTHING
RETURNING retracted_at
"""

# Rows locked in key order, as the marker's upsert does, so a concurrent marking cannot deadlock us.
_AFFECTED = """
SELECT s.test_id, s.student_number FROM student_results s
 WHERE (s.test_id, s.student_number) IN (SELECT test_id, student_number FROM student_submissions
                                          WHERE submission_id = %(sid)s)
 ORDER BY s.test_id, s.student_number FOR UPDATE OF s
"""

_RECOMPUTE = """
WITH affected AS (
    SELECT test_id, student_number FROM student_submissions WHERE submission_id = %(sid)s
), recomputed AS (
    -- the counted scan, by the marker's rule (shared/db/results.py, _BATCH): the first of a
    -- student's scans in this order, which also has the highest obtained
    SELECT DISTINCT ON (a.test_id, a.student_number) a.test_id, a.student_number,
           max(v.available) OVER (PARTITION BY a.test_id, a.student_number) AS available, v.obtained,
           v.submission_id AS best_sid, v.result AS best_result, v.awarded_total AS best_total,
           v.answers_digest AS best_digest
      FROM affected a
      JOIN validated_results v ON v.test_id = a.test_id AND v.student_number = a.student_number
                              AND v.submission_id <> %(sid)s
     WHERE EXISTS (SELECT 1 FROM student_submissions l WHERE l.test_id = a.test_id
                      AND l.student_number = a.student_number AND l.submission_id = v.submission_id)
       AND v.submission_id NOT IN (SELECT submission_id FROM retractions)
     ORDER BY a.test_id, a.student_number, v.obtained DESC, v.submission_id DESC, v.result DESC
), updated AS (
    UPDATE student_results s
       SET available = r.available, obtained = r.obtained,
           best_submission_id = r.best_sid, best_result = r.best_result, best_total = r.best_total,
           best_digest = r.best_digest, updated_at = now()
      FROM recomputed r
     WHERE s.test_id = r.test_id AND s.student_number = r.student_number
    RETURNING s.test_id
), removed AS (
    DELETE FROM student_results s USING affected a
     WHERE s.test_id = a.test_id AND s.student_number = a.student_number
       AND NOT EXISTS (SELECT 1 FROM recomputed r WHERE r.test_id = a.test_id AND r.student_number = a.student_number)
    RETURNING s.test_id
), unlisted AS (
    DELETE FROM student_submissions WHERE submission_id = %(sid)s
)
SELECT (SELECT count(*) FROM updated), (SELECT count(*) FROM removed)
"""

# Tests whose data-quality figures count the submission (normally the same tests as above).
_COUNTED_IN = "SELECT test_id FROM test_submissions WHERE submission_id = %(sid)s"

_BUMP = """
UPDATE tests SET results_version = results_version + 1 WHERE test_id = ANY(%(tests)s)
RETURNING test_id, results_version
"""

# A test with no student left has no statistics (its aggregate answers 404, like an unknown test).
_EMPTY_STATISTICS = """
DELETE FROM test_statistics ts WHERE ts.test_id = ANY(%(tests)s)
   AND NOT EXISTS (SELECT 1 FROM student_results s WHERE s.test_id = ts.test_id)
"""


def retract(conn: psycopg.Connection, submission_id: str, source: str, reason: str, at: datetime) -> Retraction:
    """Retract in the caller's connection, as one transaction; idempotent."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('retract/' || %s))", (submission_id,))
        # Waits for markings that already wrote results to commit, and holds new ones off until we
        # commit, so a marking of this submission cannot slip its rows in behind the recomputation
        # (one that starts later finds its validated rows gone). Retractions are rare and short.
        # `tests` first, in the marker's order (it bumps the tests' versions, then writes
        # student_results), so a marking and a retraction never wait for each other in a cycle.
        conn.execute("LOCK TABLE tests IN SHARE ROW EXCLUSIVE MODE")
        conn.execute("LOCK TABLE student_results IN SHARE ROW EXCLUSIVE MODE")
        params = {"sid": submission_id, "source": source, "reason": reason, "at": at}
        row = conn.execute(_RECORD, params).fetchone()
        if row is None:
            before = conn.execute("SELECT source, reason, retracted_at, erased_at, sha256 FROM retractions"
                                  " WHERE submission_id = %s", (submission_id,)).fetchone()
            return Retraction(submission_id, before[0], before[1], before[2], newly=False, erased_at=before[3],
                              sha256=before[4])
        tests = sorted({t for t, _ in conn.execute(_AFFECTED, params).fetchall()}
                       | {t for (t,) in conn.execute(_COUNTED_IN, params).fetchall()})
        recomputed, removed = conn.execute(_RECOMPUTE, params).fetchone()  # type: ignore[misc]
        # Its rows go too (a marking still in flight then finds nothing to mark): its scans, their
        # answers, and its scans in the tests' data-quality figures.
        for table in ("validated_results", "answers", "test_submissions"):
            conn.execute(sql.SQL("DELETE FROM {} WHERE submission_id = %s").format(sql.Identifier(table)),
                         (submission_id,))
        if tests:
            # From scratch rather than as deltas: the counted scans that replace the retracted
            # submission's are known only after the recomputation, and retractions are rare.
            results.rebuild_item_sums(conn, tests)
        versions = dict(conn.execute(_BUMP, {"tests": tests}).fetchall()) if tests else {}
        for test_id in tests:
            results.refresh_statistics(conn, test_id, versions[test_id])
        if tests:
            conn.execute(_EMPTY_STATISTICS, {"tests": tests})
        submissions.record_events(conn, [Event(submission_id, source, submission_id, "retracted", at, reason=reason)])
        return Retraction(submission_id, source, reason, row[0], newly=True, tests=tuple(tests),
                          students_removed=removed, students_recomputed=recomputed)


def record_erasure(conn: psycopg.Connection, submission_id: str, sha256: str | None, at: datetime) -> datetime:
    with conn.transaction():
        row = conn.execute("UPDATE retractions SET erased_at = coalesce(erased_at, %s), sha256 = coalesce(sha256, %s)"
                           " WHERE submission_id = %s RETURNING erased_at", (at, sha256, submission_id)).fetchone()
    return row[0] if row else at


def retracted_ids(conn: psycopg.Connection, submission_ids: list[str]) -> set[str]:
    rows = conn.execute("SELECT submission_id FROM retractions WHERE submission_id = ANY(%s)", (submission_ids,))
    return {r[0] for r in rows}

"""Results and statistics in PostgreSQL: set-based SQL for the validator, marker and aggregator."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from shared.domain.results_document import TestResult


@dataclass(frozen=True)
class Marking:
    test_versions: dict[str, int]  # test id -> results version after this marking
    result_count: int
    newly_applied: bool


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


def stage_validated(conn: psycopg.Connection, submission_id: str, results: Iterable[TestResult]) -> int:
    """Replace the submission's validated rows (idempotent: a redelivery writes the same rows)."""
    with conn.transaction():
        conn.execute("DELETE FROM validated_results WHERE submission_id = %s", (submission_id,))
        count = 0
        with conn.cursor().copy(
            "COPY validated_results (submission_id, result, test_id, student_number, available, obtained)"
            " FROM STDIN"
        ) as copy:
            for r in results:
                copy.write_row((submission_id, r.result, r.test_id, r.student_number, r.available, r.obtained))
                count += 1
    return count


# De-duplicate the document first (a re-scan in the same document), then upsert keeping the highest
# available and highest obtained independently. Rows are inserted in key order so concurrent
# markings lock rows in the same order and cannot deadlock each other.
_UPSERT_RESULTS = """
INSERT INTO student_results AS s (test_id, student_number, available, obtained, submission_ids)
SELECT test_id, student_number, max(available), max(obtained), ARRAY[%(sid)s]
  FROM validated_results
 WHERE submission_id = %(sid)s
 GROUP BY test_id, student_number
 ORDER BY test_id, student_number
ON CONFLICT (test_id, student_number) DO UPDATE
   SET available = GREATEST(s.available, EXCLUDED.available),
       obtained = GREATEST(s.obtained, EXCLUDED.obtained),
       submission_ids = CASE WHEN %(sid)s = ANY (s.submission_ids) THEN s.submission_ids
                             ELSE s.submission_ids || %(sid)s END,
       updated_at = now()
"""

_BUMP_VERSIONS = """
INSERT INTO tests AS t (test_id, results_version)
SELECT DISTINCT test_id, 1 FROM validated_results WHERE submission_id = %(sid)s ORDER BY test_id
ON CONFLICT (test_id) DO UPDATE SET results_version = t.results_version + 1
RETURNING test_id, results_version
"""


class NothingToMarkError(LookupError):
    """The submission has no validated rows (it was never validated, or was rejected)."""


def apply_marking(conn: psycopg.Connection, submission_id: str, run_id: str) -> Marking:
    """Merge a validated submission into student_results in one transaction, once per run."""
    with conn.transaction():
        # Serialises concurrent deliveries of the same marking; the second one sees the first's row.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"marking/{submission_id}/{run_id}",))
        done = conn.execute(
            "SELECT test_versions, result_count FROM applied_markings WHERE submission_id = %s AND run_id = %s",
            (submission_id, run_id),
        ).fetchone()
        if done:
            return Marking(dict(done[0]), done[1], newly_applied=False)
        (result_count,) = conn.execute(
            "SELECT count(*) FROM validated_results WHERE submission_id = %s", (submission_id,)
        ).fetchone()
        if result_count == 0:
            raise NothingToMarkError(f"submission {submission_id} has no validated results to mark")
        params = {"sid": submission_id}
        conn.execute(_UPSERT_RESULTS, params)
        versions = {test_id: version for test_id, version in conn.execute(_BUMP_VERSIONS, params)}
        conn.execute(
            "INSERT INTO applied_markings (submission_id, run_id, test_versions, result_count)"
            " VALUES (%s, %s, %s, %s)",
            (submission_id, run_id, Jsonb(versions), result_count),
        )
    return Marking(versions, result_count, newly_applied=True)


# Percent of available marks over float8 (faster than numeric); population stddev;
# percentiles by linear interpolation between closest ranks (numpy's default).
_COMPUTE = """
WITH pct AS (
    SELECT 100.0::float8 * obtained / available AS p FROM student_results WHERE test_id = %(test_id)s
), agg AS (
    SELECT count(*) AS n, avg(p) AS mean, stddev_pop(p) AS stddev, min(p) AS lo, max(p) AS hi,
           percentile_cont(ARRAY[0.25, 0.5, 0.75]::float8[]) WITHIN GROUP (ORDER BY p) AS q
      FROM pct
)
INSERT INTO test_statistics AS ts
       (test_id, computed_version, count, mean, stddev, min, max, p25, p50, p75, computed_at)
SELECT %(test_id)s, %(version)s, n, mean, stddev, lo, hi, q[1], q[2], q[3], now() FROM agg WHERE n > 0
ON CONFLICT (test_id) DO UPDATE
   SET computed_version = EXCLUDED.computed_version, count = EXCLUDED.count, mean = EXCLUDED.mean,
       stddev = EXCLUDED.stddev, min = EXCLUDED.min, max = EXCLUDED.max, p25 = EXCLUDED.p25,
       p50 = EXCLUDED.p50, p75 = EXCLUDED.p75, computed_at = EXCLUDED.computed_at
"""


def refresh_statistics(conn: psycopg.Connection, test_id: str, at_least_version: int) -> bool:
    """Make the test's statistics cover at least `at_least_version`; returns True if recomputed.

    A burst of markings for one test yields one recomputation: the first aggregation that takes
    the test's lock computes over everything committed, and the rest find their version covered.
    """
    with conn.transaction():
        covered = conn.execute("SELECT computed_version FROM test_statistics WHERE test_id = %s",
                               (test_id,)).fetchone()
        if covered and covered[0] >= at_least_version:
            return False
        # Holding the test row blocks markings of this test from committing, so the statistics
        # below cover exactly the results of `version`.
        row = conn.execute("SELECT results_version FROM tests WHERE test_id = %s FOR UPDATE",
                           (test_id,)).fetchone()
        if row is None:
            raise LookupError(f"test {test_id} has no results")
        covered = conn.execute("SELECT computed_version FROM test_statistics WHERE test_id = %s",
                               (test_id,)).fetchone()
        if covered and covered[0] >= at_least_version:
            return False
        conn.execute(_COMPUTE, {"test_id": test_id, "version": row[0]})
    return True


DERIVED_TABLES = ("validated_results", "student_results", "applied_markings", "test_statistics", "tests")


def clear_derived(conn: psycopg.Connection) -> None:
    """Empty every table derived from the vault, in one transaction (before a full rebuild)."""
    with conn.transaction():
        conn.execute(f"TRUNCATE {', '.join(DERIVED_TABLES)}")


def get_statistics(conn: psycopg.Connection, test_id: str) -> Statistics | None:
    row = conn.execute(
        "SELECT test_id, count, mean, stddev, min, max, p25, p50, p75, computed_version"
        " FROM test_statistics WHERE test_id = %s", (test_id,)
    ).fetchone()
    return Statistics(*row) if row else None

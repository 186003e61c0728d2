"""Results and statistics in PostgreSQL: set-based SQL for the validator, marker and aggregator.

The scoring rule (highest available and highest obtained kept independently per test and student)
lives here, in _UPSERT_RESULTS; shared/domain/scoring_policy.py states it in Python as the tests' oracle.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from shared.domain.results_document import TestResult
from shared.pipeline.ports import Statistics


@dataclass(frozen=True)
class Marking:
    test_versions: dict[str, int]  # test id -> results version after this marking
    result_count: int
    newly_applied: bool


class NothingToMarkError(LookupError):
    """The submission has no validated rows (it was never validated, or was rejected)."""


def stage_many(conn: psycopg.Connection, documents: Iterable[tuple[str, Iterable[TestResult]]]) -> int:
    """Replace each submission's validated rows, all in one COPY (a redelivery writes the same rows).

    Runs inside the caller's transaction.
    """
    documents = list(documents)
    conn.execute("DELETE FROM validated_results WHERE submission_id = ANY(%s)", ([sid for sid, _ in documents],))
    count = 0
    with conn.cursor().copy(
        "COPY validated_results (submission_id, result, test_id, student_number, available, obtained) FROM STDIN"
    ) as copy:
        for sid, results in documents:
            for r in results:
                copy.write_row((sid, r.result, r.test_id, r.student_number, r.available, r.obtained))
                count += 1
    # A retracted submission never contributes again (a replay or message still in flight).
    conn.execute("DELETE FROM validated_results WHERE submission_id = ANY(%s)"
                 " AND submission_id IN (SELECT submission_id FROM retractions)", ([sid for sid, _ in documents],))
    return count


def stage_validated(conn: psycopg.Connection, submission_id: str, results: Iterable[TestResult]) -> int:
    with conn.transaction():
        return stage_many(conn, [(submission_id, results)])


# The runs of the batch not applied before, with their staged row counts (0 = nothing to mark).
# The advisory locks serialise concurrent deliveries of the same marking (taken in key order, so two
# batches never deadlock); the second delivery then finds the first one's applied_markings row.
_LOCK_RUNS = """
SELECT pg_advisory_xact_lock(hashtext('marking/' || sid || '/' || run))
  FROM (SELECT DISTINCT sid, run FROM unnest(%(sids)s::text[], %(runs)s::text[]) AS u(sid, run)
         ORDER BY sid, run) ordered
"""

_APPLIED_BEFORE = """
SELECT submission_id, run_id, test_versions, result_count FROM applied_markings
 WHERE (submission_id, run_id) IN (SELECT * FROM unnest(%(sids)s::text[], %(runs)s::text[]))
"""

_STAGED_COUNTS = """
SELECT submission_id, array_agg(DISTINCT test_id ORDER BY test_id), count(*)
  FROM validated_results WHERE submission_id = ANY(%(sids)s) GROUP BY submission_id
"""

# All the batch's documents at once: de-duplicate (re-scans within and across the batch's documents),
# then upsert keeping the highest available and highest obtained independently, and remember every
# contributing submission. Rows go in key order so concurrent markings lock rows in the same order.
_UPSERT_RESULTS = """
INSERT INTO student_results AS s (test_id, student_number, available, obtained, submission_ids)
SELECT test_id, student_number, max(available), max(obtained),
       array_agg(DISTINCT submission_id ORDER BY submission_id)
  FROM validated_results
 WHERE submission_id = ANY(%(sids)s)
 GROUP BY test_id, student_number
 ORDER BY test_id, student_number
ON CONFLICT (test_id, student_number) DO UPDATE
   SET available = GREATEST(s.available, EXCLUDED.available),
       obtained = GREATEST(s.obtained, EXCLUDED.obtained),
       submission_ids = s.submission_ids || ARRAY(SELECT unnest(EXCLUDED.submission_ids)
                                                  EXCEPT SELECT unnest(s.submission_ids) ORDER BY 1),
       updated_at = now()
"""

# One version bump per test per batch: the aggregator recomputes a test once for the whole batch.
_BUMP_VERSIONS = """
INSERT INTO tests AS t (test_id, results_version)
SELECT DISTINCT test_id, 1 FROM validated_results WHERE submission_id = ANY(%(sids)s) ORDER BY test_id
ON CONFLICT (test_id) DO UPDATE SET results_version = t.results_version + 1
RETURNING test_id, results_version
"""

_RECORD_APPLIED = """
INSERT INTO applied_markings (submission_id, run_id, test_versions, result_count)
SELECT * FROM unnest(%(sids)s::text[], %(runs)s::text[], %(versions)s::jsonb[], %(counts)s::int[])
"""


def apply_markings(conn: psycopg.Connection, runs: list[tuple[str, str]]) -> dict[tuple[str, str], Marking | None]:
    """Merge the staged rows of many (submission, run) pairs into student_results, each run once.

    Runs inside the caller's transaction. Returns, per pair, its Marking (newly_applied False for a
    run applied before), or None when the submission has nothing staged.
    """
    params = {"sids": [sid for sid, _ in runs], "runs": [run for _, run in runs]}
    conn.execute(_LOCK_RUNS, params)
    answer: dict[tuple[str, str], Marking | None] = {
        (sid, run): Marking(dict(versions), count, newly_applied=False)
        for sid, run, versions, count in conn.execute(_APPLIED_BEFORE, params)
    }
    todo = sorted({key for key in runs if key not in answer})
    staged = {sid: (tests, n) for sid, tests, n in
              conn.execute(_STAGED_COUNTS, {"sids": sorted({sid for sid, _ in todo})})}
    for key in todo:
        if key[0] not in staged:
            answer[key] = None
    todo = [key for key in todo if key[0] in staged]
    if not todo:
        return answer
    sids = sorted({sid for sid, _ in todo})
    conn.execute(_UPSERT_RESULTS, {"sids": sids})
    versions = {test_id: version for test_id, version in conn.execute(_BUMP_VERSIONS, {"sids": sids})}
    for key in todo:
        tests, n = staged[key[0]]
        answer[key] = Marking({t: versions[t] for t in tests}, n, newly_applied=True)
    conn.execute(_RECORD_APPLIED, {
        "sids": [sid for sid, _ in todo], "runs": [run for _, run in todo],
        "versions": [Jsonb(answer[k].test_versions) for k in todo],  # type: ignore[union-attr]
        "counts": [answer[k].result_count for k in todo],  # type: ignore[union-attr]
    })
    return answer


def apply_marking(conn: psycopg.Connection, submission_id: str, run_id: str) -> Marking:
    """One submission's marking, in a transaction of its own."""
    with conn.transaction():
        marking = apply_markings(conn, [(submission_id, run_id)])[(submission_id, run_id)]
    if marking is None:
        raise NothingToMarkError(f"submission {submission_id} has no validated results to mark")
    return marking


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

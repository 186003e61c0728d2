"""Results and statistics in PostgreSQL: set-based SQL for the validator, marker and aggregator.

The scoring rule (highest available and highest obtained kept independently per test and student)
lives here, in _UPSERT_RESULTS; shared/domain/scoring_policy.py states it in Python as the tests' oracle.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from shared.domain.model import SEPARATOR, AnswerSheet
from shared.domain.results_document import TestResult
from shared.pipeline.ports import CatalogueEntry, Histogram, ItemAnalysis, Statistics


@dataclass(frozen=True)
class Marking:
    test_versions: dict[str, int]  # test id -> results version after this marking
    result_count: int
    newly_applied: bool


class NothingToMarkError(LookupError):
    """The submission has no validated rows (it was never validated, or was rejected)."""


# Statements that look rows up by submission id are planned for their actual ids every time (not
# prepared): a prepared statement's generic plan is made once per connection, and one made while a
# table was still small scans the whole table ever after (2 ms per statement after 150 documents,
# growing with every one). The marking's own statements are the exception: they run with sequential
# scans off, so their generic plans are the key-based ones (apply_markings).
BY_KEY = False


def stage_many(conn: psycopg.Connection, documents: Iterable[tuple[str, Iterable[TestResult]]]) -> int:
    """Replace each submission's validated rows and answers, in one COPY each (a redelivery writes
    the same rows).

    Runs inside the caller's transaction.
    """
    documents = [(sid, list(results)) for sid, results in documents]
    sids = [sid for sid, _ in documents]
    # A retracted submission never contributes again (a replay or message still in flight): its
    # rows are removed and not staged anew.
    with conn.pipeline():  # one round trip for the three
        retracting = conn.execute("SELECT submission_id FROM retractions WHERE submission_id = ANY(%s)", (sids,))
        conn.execute("DELETE FROM validated_results WHERE submission_id = ANY(%s)", (sids,), prepare=BY_KEY)
        conn.execute("DELETE FROM answers WHERE submission_id = ANY(%s)", (sids,), prepare=BY_KEY)
    retracted = {r for (r,) in retracting.fetchall()}
    documents = [(sid, results) for sid, results in documents if sid not in retracted]
    _copy(conn, "COPY validated_results (submission_id, result, test_id, student_number, available, obtained,"
                " awarded_total, answers_digest) FROM STDIN", documents, _validated_line)
    if any(r.answer_sheet for _, results in documents for r in results):
        _copy(conn, "COPY answers (submission_id, result, test_id, student_number, questions, options, available,"
                    " awarded) FROM STDIN", documents, _answers_line)
    return sum(len(results) for _, results in documents)


def answers_digest(sheet: AnswerSheet) -> bytes:
    """What tells two scans' answers apart, as migration 0011 computes it in SQL: the first 16 bytes
    of SHA-256 over questions, options, marks available and awarded (U+001E cannot occur in XML)."""
    joined = "\x1e".join((sheet.questions, sheet.options, sheet.available, sheet.awarded))
    return hashlib.sha256(joined.encode()).digest()[:16]


def _validated_line(s: str, r: TestResult) -> str:
    sheet = r.answer_sheet
    if sheet is None:
        awarded = digest = _NULL
    else:
        awarded, digest = sheet.awarded_total, "\\\\x" + answers_digest(sheet).hex()
    return (f"{s}\t{r.result}\t{_copy_text(r.test_id)}\t{_copy_text(r.student_number)}\t{r.available}"
            f"\t{r.obtained}\t{awarded}\t{digest}\n")


def _answers_line(s: str, r: TestResult) -> str:
    sheet = r.answer_sheet
    if sheet is None:
        return ""
    return (f"{s}\t{r.result}\t{_copy_text(r.test_id)}\t{_copy_text(r.student_number)}"
            f"\t{{\"{_copy_array(sheet.questions)}\"}}\t{{\"{_copy_array(sheet.options)}\"}}"
            f"\t{{{sheet.available}}}\t{{{sheet.awarded}}}\n")


def _copy(conn: psycopg.Connection, statement: str, documents: list[tuple[str, list[TestResult]]],
          line: Callable[[str, TestResult], str]) -> None:
    """One COPY of every document's rows, as text lines a chunk at a time (`s`: the escaped submission id)."""
    with conn.cursor().copy(statement) as copy:
        for sid, results in documents:
            s = _copy_text(sid)
            for chunk in _chunks(results):
                copy.write("".join([line(s, r) for r in chunk]))


# The COPY rows are written as text lines (COPY's text format), a chunk at a time: psycopg's
# write_row adapts value by value, and staging runs over every answer of every document (0.4 s of
# Python for a 50,000-result document). Text fields escape backslash, tab, newline and carriage
# return; the arrays' elements are quoted, with \ and " escaped for the array literal, then for COPY.
_NULL = "\\N"
_COPY_TEXT = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_ARRAY = str.maketrans({"\\": "\\\\\\\\", '"': '\\\\"', SEPARATOR: '","', "\t": "\\t", "\n": "\\n",
                             "\r": "\\r"})
_CHUNK = 2000


_SPECIAL = re.compile(r'[\\"\t\n\r]')  # translate() is slow enough to look first


def _copy_text(value: str) -> str:
    return value.translate(_COPY_TEXT) if _SPECIAL.search(value) else value


def _copy_array(joined: str) -> str:
    """The elements of a SEPARATOR-joined string, quoted and escaped, without the outer {" "}."""
    return joined.translate(_COPY_ARRAY) if _SPECIAL.search(joined) else joined.replace(SEPARATOR, '","')


def _chunks(rows: list[TestResult]) -> Iterable[list[TestResult]]:
    for i in range(0, len(rows), _CHUNK):
        yield rows[i:i + _CHUNK]


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
# then upsert keeping the highest available and highest obtained independently (the first row of a
# student's scans in that order has the highest obtained), and remember every contributing
# submission. Rows go in key order so concurrent markings lock rows in the same order.
# best_* names the scan whose answers count for item analysis: the highest obtained, the latest on a
# tie (greatest submission id, a time-ordered ULID, then the later position in the document).
_BATCH = """
batch AS MATERIALIZED (
    SELECT DISTINCT ON (test_id, student_number) test_id, student_number,
           max(available) OVER (PARTITION BY test_id, student_number) AS available, obtained,
           submission_id AS best_submission_id, result AS best_result, awarded_total AS best_total,
           answers_digest AS best_digest
      FROM validated_results
     WHERE submission_id = ANY(%(sids)s)
     ORDER BY test_id, student_number, obtained DESC, submission_id DESC, result DESC
)"""

# Each batch row is one (test, student); its submissions go to student_submissions (the lineage),
# a pair already listed (a document sent again, a re-applied run) left as it is.
_UPSERT_RESULTS = """
INSERT INTO student_results AS s (test_id, student_number, available, obtained, best_submission_id, best_result,
                                  best_total, best_digest)
SELECT test_id, student_number, available, obtained, best_submission_id, best_result, best_total, best_digest
  FROM batch
 ORDER BY test_id, student_number
ON CONFLICT (test_id, student_number) DO UPDATE
   SET available = GREATEST(s.available, EXCLUDED.available),
       obtained = GREATEST(s.obtained, EXCLUDED.obtained),
       (best_submission_id, best_result, best_total, best_digest) = (
           SELECT CASE WHEN c.newer THEN EXCLUDED.best_submission_id ELSE s.best_submission_id END,
                  CASE WHEN c.newer THEN EXCLUDED.best_result ELSE s.best_result END,
                  CASE WHEN c.newer THEN EXCLUDED.best_total ELSE s.best_total END,
                  CASE WHEN c.newer THEN EXCLUDED.best_digest ELSE s.best_digest END
             FROM (SELECT s.best_submission_id IS NULL
                          OR (EXCLUDED.obtained, EXCLUDED.best_submission_id, EXCLUDED.best_result)
                             >= (s.obtained, s.best_submission_id, s.best_result) AS newer) c),
       updated_at = now()
RETURNING test_id, student_number, best_submission_id, best_result, best_total, best_digest
"""

_RECORD_LINEAGE = """
lineage AS (
    INSERT INTO student_submissions (test_id, student_number, submission_id)
    SELECT DISTINCT test_id, student_number, submission_id FROM validated_results
     WHERE submission_id = ANY(%(sids)s)
     ORDER BY 1, 2, 3
    ON CONFLICT DO NOTHING
)"""

# Item-analysis sums from `scans` (test_id, sid, result, sign, t): each scan's answers added (sign 1)
# or taken away (-1). The lateral OFFSET 0 keeps the look-ups on the primary keys (never a scan of
# every answer). The answers are first grouped by everything a sum depends on (question, option,
# marks available and awarded): one pass over them, in integer arithmetic, leaving a few rows per
# question, from which the sums follow. sum_ratio is still the exact sum of each answer's
# awarded::numeric / available (n equal terms are n times one term), so any order of markings, or a
# rebuild, gives the same numbers. Rows go in key order, like every other upsert here.
_APPLY_SCANS = """
contrib AS MATERIALIZED (
    SELECT test_id, question, option, available, x, sum(sign) AS n, sum(sign * t) AS st
      FROM (SELECT s.test_id, s.sign, s.t, unnest(a.questions) AS question, unnest(a.options) AS option,
                   unnest(a.available) AS available, unnest(a.awarded) AS x
              FROM scans s
             CROSS JOIN LATERAL (SELECT questions, options, available, awarded FROM answers
                                  WHERE submission_id = s.sid AND result = s.result OFFSET 0) a) u
     GROUP BY test_id, question, option, available, x
), items AS (
    INSERT INTO item_sums AS i (test_id, question, answering, sum_x, sum_xx, sum_xt, sum_ratio, nonbinary)
    SELECT test_id, question, sum(n), sum(n * x), sum(n * x * x), sum(x * st),
           sum(n * (x::numeric / available)), sum(n * (available <> 1)::int)
      FROM contrib GROUP BY test_id, question ORDER BY test_id, question
    ON CONFLICT (test_id, question) DO UPDATE
       SET answering = i.answering + EXCLUDED.answering, sum_x = i.sum_x + EXCLUDED.sum_x,
           sum_xx = i.sum_xx + EXCLUDED.sum_xx, sum_xt = i.sum_xt + EXCLUDED.sum_xt,
           sum_ratio = i.sum_ratio + EXCLUDED.sum_ratio, nonbinary = i.nonbinary + EXCLUDED.nonbinary
), options AS (
    INSERT INTO option_counts AS c (test_id, question, option, chosen)
    SELECT test_id, question, option, sum(n) FROM contrib
     GROUP BY test_id, question, option ORDER BY test_id, question, option
    ON CONFLICT (test_id, question, option) DO UPDATE SET chosen = c.chosen + EXCLUDED.chosen
)
INSERT INTO item_totals AS tt (test_id, students, sum_t, sum_tt)
SELECT test_id, sum(sign), sum(sign * t::bigint), sum(sign * t::bigint * t) FROM scans
 GROUP BY test_id ORDER BY test_id
ON CONFLICT (test_id) DO UPDATE
   SET students = tt.students + EXCLUDED.students, sum_t = tt.sum_t + EXCLUDED.sum_t,
       sum_tt = tt.sum_tt + EXCLUDED.sum_tt
"""

# The batch's upsert, and the swap of each student's counted scan in the item-analysis sums, in one
# statement: `swaps` reads each student's counted scan as it was before the upsert (every part of
# one statement sees the same snapshot; the caller holds the batch's tests rows, so no other marking
# of these tests runs in between). Every read of another table here is a primary-key look-up per row
# (a lateral OFFSET 0 or a scalar subquery, sequential scans off while it runs), whatever the row
# estimates: right after a bulk COPY the statistics still say the staged rows are few, and a join
# there was once planned as a nested loop over the whole document per student (minutes for a
# 50,000-result document sent twice).
_MERGE_RESULTS = f"""
WITH {_BATCH}, {_RECORD_LINEAGE}, merged AS ({_UPSERT_RESULTS}
), swaps AS (
    -- A counted scan replaced by one with the very same answers (equal digests: a document sent
    -- again) moves no sums; nor does one without answers replaced by another (both digests NULL).
    SELECT n.test_id, o.best_submission_id AS old_sid, o.best_result AS old_result, o.best_total AS old_total,
           n.best_submission_id AS new_sid, n.best_result AS new_result, n.best_total AS new_total
      FROM merged n
      LEFT JOIN LATERAL (SELECT best_submission_id, best_result, best_total, best_digest FROM student_results s
                          WHERE s.test_id = n.test_id AND s.student_number = n.student_number OFFSET 0) o ON true
     WHERE o.best_digest IS DISTINCT FROM n.best_digest
), scans AS MATERIALIZED (
    -- Each swap takes the old scan's answers away and adds the new one's, by the totals the student's
    -- row holds; a scan without answers (total NULL) has nothing to move.
    SELECT test_id, old_sid AS sid, old_result AS result, -1 AS sign, old_total AS t FROM swaps
     WHERE old_total IS NOT NULL
    UNION ALL
    SELECT test_id, new_sid, new_result, 1, new_total FROM swaps WHERE new_total IS NOT NULL
), {_APPLY_SCANS}"""

# The sums of some tests from scratch, from every student's counted scan (after a retract, or to
# check the incremental sums).
_REBUILD_ITEM_SUMS = f"""
WITH scans AS MATERIALIZED (
    SELECT s.test_id, s.best_submission_id AS sid, s.best_result AS result, 1 AS sign, v.awarded_total AS t
      FROM student_results s
     CROSS JOIN LATERAL (SELECT awarded_total FROM validated_results
                          WHERE submission_id = s.best_submission_id AND result = s.best_result OFFSET 0) v
     WHERE s.test_id = ANY(%(tests)s) AND v.awarded_total IS NOT NULL
), {_APPLY_SCANS}"""


def rebuild_item_sums(conn: psycopg.Connection, test_ids: list[str]) -> None:
    """Recompute the tests' item-analysis sums from their counted scans (in the caller's transaction;
    hold the tests rows, as a marking does, when markings may run concurrently)."""
    for table in ("item_sums", "option_counts", "item_totals"):
        conn.execute(sql.SQL("DELETE FROM {} WHERE test_id = ANY(%s)").format(sql.Identifier(table)), (test_ids,))
    conn.execute(_REBUILD_ITEM_SUMS, {"tests": test_ids})


# Per (test, submission): its scans and how many of them have awarded marks that do not add up to
# summary-marks obtained (the test's data-quality figures). A re-applied run writes the same row.
_RECORD_TEST_SUBMISSIONS = """
INSERT INTO test_submissions AS t (test_id, submission_id, results, mismatched_results, unanswered_results)
SELECT test_id, submission_id, count(*),
       count(*) FILTER (WHERE awarded_total IS NOT NULL AND awarded_total <> obtained),
       count(*) FILTER (WHERE awarded_total IS NULL)
  FROM validated_results
 WHERE submission_id = ANY(%(sids)s)
 GROUP BY test_id, submission_id
 ORDER BY test_id, submission_id
ON CONFLICT (test_id, submission_id) DO UPDATE
   SET results = EXCLUDED.results, mismatched_results = EXCLUDED.mismatched_results,
       unanswered_results = EXCLUDED.unanswered_results
"""

# One version bump per test per batch: the aggregator recomputes a test once for the whole batch.
_BUMP_VERSIONS = """
INSERT INTO tests AS t (test_id, results_version)
SELECT DISTINCT test_id, 1 FROM validated_results WHERE submission_id = ANY(%(sids)s) ORDER BY test_id
ON CONFLICT (test_id) DO UPDATE SET results_version = t.results_version + 1
RETURNING test_id, results_version
"""

# For a marking (transaction-local): JIT off to the commit; sequential scans off and generic plans
# for what is prepared until its last statement, then the server's defaults again.
_MARKING_SETTINGS = ("SELECT set_config('jit', 'off', true), set_config('enable_seqscan', 'off', true),"
                     " set_config('plan_cache_mode', 'force_generic_plan', true)")
_DEFAULT_SETTINGS = "SELECT set_config('enable_seqscan', 'on', true), set_config('plan_cache_mode', 'auto', true)"

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
    # Statements whose answers the next one does not need go out together (pipeline mode): three
    # round trips for a marking instead of nine.
    with conn.pipeline():
        conn.execute(_LOCK_RUNS, params)
        applied_before = conn.execute(_APPLIED_BEFORE, params)
        staged_rows = conn.execute(_STAGED_COUNTS, {"sids": sorted(set(params["sids"]))}, prepare=BY_KEY)
        answer: dict[tuple[str, str], Marking | None] = {
            (sid, run): Marking(dict(versions), count, newly_applied=False)
            for sid, run, versions, count in applied_before.fetchall()
        }
        staged = {sid: (tests, n) for sid, tests, n in staged_rows.fetchall()}
    todo = sorted({key for key in runs if key not in answer})
    for key in todo:
        if key[0] not in staged:
            answer[key] = None
    todo = [key for key in todo if key[0] in staged]
    if not todo:
        return answer
    sids = sorted({sid for sid, _ in todo})
    with conn.pipeline():
        # One statement for the settings (each statement costs the client ~20 us). A big batch's
        # plan costs enough to trigger JIT compilation, which takes longer than the statements
        # themselves (seconds); they are plain set operations that need none of it. Sequential
        # scans off and generic plans: see the merge below.
        conn.execute(_MARKING_SETTINGS)
        # The version bump first: it locks the batch's tests rows (in test order) until commit, so
        # markings of one test run one at a time and each sees the counted scans the last one left.
        bumped = conn.execute(_BUMP_VERSIONS, {"sids": sids}, prepare=BY_KEY)
        # The bump waited for any retraction in progress (it locks `tests` first): rows a validation
        # staged while that retraction ran escaped its delete, so they are dropped here, unmarked.
        retracting = conn.execute("SELECT submission_id FROM retractions WHERE submission_id = ANY(%s)", (sids,))
        versions = {test_id: version for test_id, version in bumped.fetchall()}
        retracted = {sid for (sid,) in retracting.fetchall()}
    if retracted:
        conn.execute("DELETE FROM validated_results WHERE submission_id = ANY(%s)", (sorted(retracted),))
        conn.execute("DELETE FROM answers WHERE submission_id = ANY(%s)", (sorted(retracted),))
        for key in [key for key in todo if key[0] in retracted]:
            answer[key] = None
        todo = [key for key in todo if key[0] not in retracted]
        sids = sorted({sid for sid, _ in todo})
        if not todo:
            conn.execute(_DEFAULT_SETTINGS)
            return answer
    for key in todo:
        tests, n = staged[key[0]]
        answer[key] = Marking({t: versions[t] for t in tests}, n, newly_applied=True)
    with conn.pipeline():
        # Each student's row is looked up by key, never by scanning student_results: statistics
        # taken while it was small (a young database) would otherwise plan a scan of the whole
        # table per student, reading the pages this very statement fills (quadratic in the batch).
        # With scans off its generic plan is that key-based plan whatever the statistics, so it is
        # prepared and planned once per connection (and the data-quality upsert after it, which
        # reads the same staged rows): planning them took 0.6 ms a marking, about as long as running
        # the merge for a small batch (pg_stat_statements, bench.small_submissions --mode sync).
        conn.execute(_MERGE_RESULTS, {"sids": sids}, prepare=True)
        conn.execute(_RECORD_TEST_SUBMISSIONS, {"sids": sids}, prepare=True)
        conn.execute(_RECORD_APPLIED, {
            "sids": [sid for sid, _ in todo], "runs": [run for _, run in todo],
            "versions": [Jsonb(answer[k].test_versions) for k in todo],  # type: ignore[union-attr]
            "counts": [answer[k].result_count for k in todo],  # type: ignore[union-attr]
        })
        conn.execute(_DEFAULT_SETTINGS)
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
# Histogram bins in integer arithmetic (no float edge cases): floor(10 * obtained / available), with
# 100 % in the last bin. Data quality from the running totals in test_quality. (Item analysis is
# computed when read: _ITEM_ANALYSIS below.)
_COMPUTE = """
WITH version AS (  -- read in the computation's own snapshot, so it covers exactly this version
    SELECT results_version AS v FROM tests WHERE test_id = %(test_id)s
), scores AS (  -- students per exact score (test_scores, kept by trigger), in percent
    SELECT 100.0::float8 * obtained / available AS p, least(10 * obtained / available, 9) AS bin, available,
           students::float8 AS k
      FROM test_scores WHERE test_id = %(test_id)s AND students > 0
), ranked AS (  -- a score holds the 0-based ranks [upto - k, upto) of the students in score order
    SELECT p, sum(k) OVER (ORDER BY p ROWS UNBOUNDED PRECEDING) AS upto FROM scores
), moments AS (  -- sums in score order, so equal contents give bit-for-bit equal answers
    SELECT sum(k ORDER BY p) AS n, sum(k * p ORDER BY p) / sum(k ORDER BY p) AS mean, min(p) AS lo, max(p) AS hi,
           max(available) AS max_available
      FROM scores
), agg AS (  -- percentile_cont's own rule: interpolate between the values at floor and ceil of q(n-1)
    SELECT m.n::bigint AS n, m.mean, m.lo, m.hi, m.max_available,
           sqrt((SELECT sum(k * (p - m.mean) ^ 2 ORDER BY p) FROM scores) / m.n) AS stddev,
           ARRAY(SELECT lo_v + (hi_v - lo_v) * (f * (m.n - 1) - floor(f * (m.n - 1)))
                   FROM unnest(ARRAY[0.25, 0.5, 0.75]::float8[]) WITH ORDINALITY AS u(f, i)
                  CROSS JOIN LATERAL (SELECT
                        (SELECT p FROM ranked WHERE upto > floor(f * (m.n - 1)) ORDER BY p LIMIT 1) AS lo_v,
                        (SELECT p FROM ranked WHERE upto > ceil(f * (m.n - 1)) ORDER BY p LIMIT 1) AS hi_v) v
                  ORDER BY i) AS q
      FROM moments m
), hist AS (
    SELECT array_agg(coalesce(h.c, 0) ORDER BY b) AS bins
      FROM generate_series(0, 9) AS b
      LEFT JOIN (SELECT bin, sum(k)::int AS c FROM scores GROUP BY bin) h ON h.bin = b
), quality AS (  -- running totals (test_quality, kept by trigger from test_submissions)
    SELECT coalesce(max(submissions), 0) AS submissions, coalesce(max(mismatched_results), 0) AS mismatched_results,
           coalesce(max(mismatched_submissions), 0) AS mismatched_submissions,
           coalesce(max(unanswered_results), 0) AS unanswered_results
      FROM test_quality WHERE test_id = %(test_id)s

)
INSERT INTO test_statistics AS ts
       (test_id, computed_version, count, mean, stddev, min, max, p25, p50, p75, computed_at,
        max_available, submission_count, histogram, mismatched_results, mismatched_submissions, unanswered_results)
SELECT %(test_id)s, version.v, agg.n, agg.mean, agg.stddev, agg.lo, agg.hi, agg.q[1], agg.q[2], agg.q[3], now(),
       agg.max_available, quality.submissions, hist.bins,
       quality.mismatched_results, quality.mismatched_submissions, quality.unanswered_results
  FROM version, agg, hist, quality
 WHERE agg.n > 0
   AND coalesce((SELECT computed_version FROM test_statistics WHERE test_id = %(test_id)s), 0) < %(at_least)s
ON CONFLICT (test_id) DO UPDATE
   SET computed_version = EXCLUDED.computed_version, count = EXCLUDED.count, mean = EXCLUDED.mean,
       stddev = EXCLUDED.stddev, min = EXCLUDED.min, max = EXCLUDED.max, p25 = EXCLUDED.p25,
       p50 = EXCLUDED.p50, p75 = EXCLUDED.p75, computed_at = EXCLUDED.computed_at,
       max_available = EXCLUDED.max_available, submission_count = EXCLUDED.submission_count,
       histogram = EXCLUDED.histogram, mismatched_results = EXCLUDED.mismatched_results, mismatched_submissions = EXCLUDED.mismatched_submissions,
       unanswered_results = EXCLUDED.unanswered_results
RETURNING test_id
"""

# The tests whose statistics do not cover the version asked for yet.
_BEHIND = """
SELECT u.test_id FROM unnest(%(tests)s::text[], %(versions)s::bigint[]) AS u(test_id, at_least)
 WHERE NOT EXISTS (SELECT 1 FROM test_statistics s WHERE s.test_id = u.test_id AND s.computed_version >= u.at_least)
 ORDER BY u.test_id
"""

# Refreshes of a test take turns; the locks are taken in test order, so two refreshes never wait for
# each other in a cycle. Also: this transaction's prepared statements use one plan made once per
# connection (planning the refresh cost as much as running it; every lookup in it is by test id).
_LOCK_STATISTICS = """
SELECT pg_advisory_xact_lock(hashtext('statistics/' || t)) FROM (SELECT t FROM unnest(%(tests)s::text[]) AS t ORDER BY t) o
"""


def refresh_many(conn: psycopg.Connection, test_versions: Mapping[str, int]) -> list[str]:
    """Make each test's statistics cover at least its version; returns the tests recomputed.

    A burst of markings for one test yields one recomputation: refreshes of a test take turns (an
    advisory lock), and markings do not wait for them (a validation that marks and refreshes in one
    transaction, refresh_last, takes its turn like any refresh). The markings that commit while one refresh
    computes are then all covered by the next, which reads the latest version; the refreshes queued
    behind it find their version covered and do nothing. A batch's tests go in one transaction, in
    two round trips: which tests are behind, then their locks and computations together (pipeline
    mode), each computation skipping a test that a refresh before it already brought far enough.
    """
    if not test_versions:
        return []
    tests = sorted(test_versions)
    behind = [t for (t,) in conn.execute(_BEHIND, {"tests": tests, "versions": [test_versions[t] for t in tests]},
                                         prepare=False).fetchall()]
    if not behind:
        return []
    with conn.pipeline(), conn.transaction():
        computing = _queue_refresh(conn, {t: test_versions[t] for t in behind})
    return _recomputed(computing)


def refresh_last(conn: psycopg.Connection, test_versions: Mapping[str, int]) -> list[str]:
    """Recompute the tests not yet at their versions, in one round trip, as the last statements of
    the caller's transaction (the plan setting below holds until it ends); returns those recomputed.

    A marking's own transaction may call it after its version bump: it holds the tests rows, so every
    earlier marking of them has committed and is seen, and the statistics commit with the marking.
    """
    if not test_versions:
        return []
    with conn.pipeline():
        computing = _queue_refresh(conn, test_versions)
    return _recomputed(computing)


def _queue_refresh(conn: psycopg.Connection, test_versions: Mapping[str, int]) -> list[tuple[str, psycopg.Cursor]]:
    """The refresh statements, queued in the caller's pipeline and transaction."""
    tests = sorted(test_versions)
    conn.execute(_LOCK_STATISTICS, {"tests": tests})
    conn.execute("SELECT set_config('plan_cache_mode', 'force_generic_plan', true)")
    # Each statement after the locks, so it sees what the refreshes before us committed.
    return [(t, conn.execute(_COMPUTE, {"test_id": t, "at_least": test_versions[t]}, prepare=True)) for t in tests]


def _recomputed(computing: list[tuple[str, psycopg.Cursor]]) -> list[str]:
    return [t for t, cursor in computing if cursor.fetchone() is not None]


def refresh_statistics(conn: psycopg.Connection, test_id: str, at_least_version: int) -> bool:
    """One test's refresh_many; True if it was recomputed."""
    return test_id in refresh_many(conn, {test_id: at_least_version})


DERIVED_TABLES = ("validated_results", "answers", "student_results", "student_submissions", "test_scores",
                  "applied_markings", "test_submissions", "test_quality", "item_sums", "option_counts",
                  "item_totals", "test_statistics", "tests")


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


# The read side of the precomputed views: each answers from one test_statistics row (or one page).

def list_tests(conn: psycopg.Connection, after: str | None, limit: int) -> list[CatalogueEntry]:
    rows = conn.execute(
        "SELECT test_id, count, max_available, submission_count, computed_at FROM test_statistics"
        " WHERE %(after)s::text IS NULL OR test_id > %(after)s ORDER BY test_id LIMIT %(limit)s",
        {"after": after, "limit": limit},
    ).fetchall()
    return [CatalogueEntry(*row) for row in rows]


def get_histogram(conn: psycopg.Connection, test_id: str) -> Histogram | None:
    row = conn.execute("SELECT test_id, histogram, count FROM test_statistics WHERE test_id = %s",
                       (test_id,)).fetchone()
    return Histogram(row[0], tuple(row[1]), row[2]) if row else None


# Item analysis, computed when it is read, from the sums the marker keeps (item_sums, option_counts,
# item_totals) over each student's counted scan, an unanswered question scoring 0 (see
# docs/architecture.md, "Item analysis", for the formulas): a few rows per question,
# in one snapshot with the student count and data-quality totals it is reported with. Reads are rare
# next to markings, and computing it was two thirds of every statistics refresh. A test without
# statistics has none (404, like its aggregate).
_ITEM_ANALYSIS = """
WITH whole AS (
    SELECT coalesce(max(students), 0)::float8 AS n, coalesce(max(sum_t), 0)::float8 AS st,
           coalesce(max(sum_tt), 0)::float8 AS stt
      FROM item_totals WHERE test_id = %(test_id)s
), per_q AS (
    SELECT question, answering, (sum_ratio / answering)::float8 AS difficulty, nonbinary = 0 AS binary,
           sum_x::float8 AS sx, sum_xx::float8 AS sxx, sum_xt::float8 AS sxt
      FROM item_sums WHERE test_id = %(test_id)s AND answering > 0
), q AS (
    SELECT per_q.*, w.n, w.st, w.stt,
           -- the item against the rest of the test (total minus the item), over every analysed student
           (w.n * (sxt - sxx) - sx * (w.st - sx))
               / nullif(sqrt(greatest(w.n * sxx - sx * sx, 0)
                             * greatest(w.n * (w.stt - 2 * sxt + sxx) - (w.st - sx) ^ 2, 0)), 0) AS discrimination,
           sxx / w.n - (sx / w.n) ^ 2 AS variance
      FROM per_q CROSS JOIN whole w
), opts AS MATERIALIZED (  -- once, not once per question (the planner expects one row of q)
    SELECT o.question,
           json_agg(json_build_object('option', o.option, 'count', o.c, 'frequency', o.c::float8 / q.answering,
                                        'flagged', o.c::float8 / q.answering < 0.05) ORDER BY o.option) AS options,
           bool_or(o.c::float8 / q.answering < 0.05) AS flagged
      FROM (SELECT question, option, chosen AS c FROM option_counts WHERE test_id = %(test_id)s AND chosen > 0) o
      JOIN q USING (question)
     GROUP BY o.question
), items AS (
    SELECT coalesce(json_agg(json_build_object(
               'question', q.question, 'answering', q.answering, 'difficulty', q.difficulty,
               'discrimination', q.discrimination, 'flagged', opts.flagged, 'options', opts.options)
             ORDER BY CASE WHEN q.question ~ '^[0-9]{1,18}$' THEN q.question::bigint END NULLS LAST, q.question),
             '[]'::json) AS items,
           count(*) AS k, sum(q.variance) AS item_variance, bool_and(q.binary) AS binary
      FROM q JOIN opts USING (question)
), reliability AS (
    SELECT CASE WHEN items.k > 1 AND w.n > 0 AND w.stt / w.n - (w.st / w.n) ^ 2 > 0
                THEN items.k / (items.k - 1.0)
                     * (1 - items.item_variance / (w.stt / w.n - (w.st / w.n) ^ 2)) END AS alpha,
           items.binary
      FROM items CROSS JOIN whole w
)
SELECT ts.test_id, (SELECT coalesce(sum(students), 0) FROM test_scores WHERE test_id = %(test_id)s)::int,
       whole.n::int, reliability.alpha, CASE WHEN reliability.binary THEN reliability.alpha END, items.items,
       coalesce(tq.submissions, 0), coalesce(tq.mismatched_results, 0), coalesce(tq.mismatched_submissions, 0),
       coalesce(tq.unanswered_results, 0)
  FROM test_statistics ts CROSS JOIN whole CROSS JOIN items CROSS JOIN reliability
  LEFT JOIN test_quality tq ON tq.test_id = ts.test_id
 WHERE ts.test_id = %(test_id)s
"""


def get_item_analysis(conn: psycopg.Connection, test_id: str) -> ItemAnalysis | None:
    row = conn.execute(_ITEM_ANALYSIS, {"test_id": test_id}).fetchone()
    return ItemAnalysis(*row) if row else None


# A cell a spreadsheet would take for a formula (starting = + - @, tab or carriage return) gets a
# leading single quote, as OWASP's CSV-injection advice says: vendors write the student numbers.
_STUDENTS_CSV = """
COPY (SELECT CASE WHEN left(s.student_number, 1) IN ('=', '+', '-', '@', chr(9), chr(13))
                  THEN '''' || s.student_number ELSE s.student_number END AS student_number,
             available, obtained, 100.0::float8 * obtained / available AS percent,
             (SELECT count(*) FROM student_submissions l
               WHERE l.test_id = s.test_id AND l.student_number = s.student_number) AS submissions
        FROM student_results s WHERE test_id = {test_id} ORDER BY s.student_number)
  TO STDOUT WITH (FORMAT csv, HEADER)
"""


def students_csv(conn: psycopg.Connection, test_id: str) -> bytes | None:
    """The test's students as CSV, read from COPY in chunks (None when the test has no results)."""
    with conn.transaction():  # one snapshot for the existence check and the rows
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        if conn.execute("SELECT 1 FROM test_statistics WHERE test_id = %s", (test_id,)).fetchone() is None:
            return None
        chunks = []
        with conn.cursor().copy(sql.SQL(_STUDENTS_CSV).format(test_id=sql.Literal(test_id))) as copy:
            for chunk in copy:
                chunks.append(bytes(chunk))
    return b"".join(chunks)

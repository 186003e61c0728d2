"""test_scores, the students per exact score that the statistics refresh reads: kept equal to
student_results by the database whatever writes it, and the statistics from it equal to the
same statistics computed over every student's row."""
import random

import psycopg
import pytest

from shared.db import results as results_db
from tests.integration.test_results_sql import SID, mark, result

# The statistics as they were computed before test_scores: over every student's row.
REFERENCE = """
SELECT count(*), avg(p), stddev_pop(p), min(p), max(p),
       percentile_cont(ARRAY[0.25, 0.5, 0.75]::float8[]) WITHIN GROUP (ORDER BY p),
       (SELECT array_agg(coalesce(h.c, 0) ORDER BY b) FROM generate_series(0, 9) AS b
          LEFT JOIN (SELECT least(10 * obtained / available, 9) AS bin, count(*)::int AS c
                       FROM student_results WHERE test_id = %(t)s GROUP BY 1) h ON h.bin = b)
  FROM (SELECT 100.0::float8 * obtained / available AS p FROM student_results WHERE test_id = %(t)s) x
"""


@pytest.fixture
def conn(database_url):
    with psycopg.connect(database_url, autocommit=True) as c:
        yield c


def counted(conn) -> dict:
    return {tuple(row[:3]): row[3] for row in conn.execute(
        "SELECT test_id, available, obtained, students FROM test_scores WHERE students > 0")}


def recount(conn) -> dict:
    return {tuple(row[:3]): row[3] for row in conn.execute(
        "SELECT test_id, available, obtained, count(*) FROM student_results GROUP BY 1, 2, 3")}


def refreshed(conn, test="t1"):
    version = conn.execute("SELECT results_version FROM tests WHERE test_id = %s", (test,)).fetchone()[0]
    results_db.refresh_statistics(conn, test, version)
    stats = results_db.get_statistics(conn, test)
    histogram = results_db.get_histogram(conn, test)
    return stats, histogram


def random_documents(seed: int, n_docs: int = 6, per_doc: int = 40) -> list[list]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        rows = []
        for position in range(per_doc):
            available = rng.choice((10, 20, 20, 25))
            rows.append(result(f"{rng.randrange(60):03d}", rng.randint(0, available), available,
                               test=rng.choice(("t1", "t1", "t2")), position=position + 1))
        docs.append(rows)
    return docs


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_counts_follow_markings_retractions_and_rebuilds_and_give_the_reference_statistics(conn, seed):
    sids = [f"01JB{seed:02d}{i:020d}" for i in range(6)]
    for sid, rows in zip(sids, random_documents(seed), strict=True):
        mark(conn, sid, rows)
        assert counted(conn) == recount(conn)
    for test in ("t1", "t2"):
        stats, histogram = refreshed(conn, test)
        n, mean, stddev, lo, hi, quartiles, bins = conn.execute(REFERENCE, {"t": test}).fetchone()
        assert (stats.count, stats.min, stats.max, list(histogram.counts)) == (n, lo, hi, bins)
        assert stats.mean == pytest.approx(mean, rel=1e-12)
        assert stats.stddev == pytest.approx(stddev, rel=1e-9, abs=1e-9)
        assert [stats.p25, stats.p50, stats.p75] == pytest.approx(quartiles, rel=1e-12)
    # A retraction deletes and rewrites students' rows; a rebuild truncates and marks again.
    conn.execute("DELETE FROM student_results WHERE student_number < '020'")
    assert counted(conn) == recount(conn)
    results_db.clear_derived(conn)
    assert counted(conn) == {}
    for sid, rows in zip(sids, random_documents(seed), strict=True):
        mark(conn, sid, rows)
    assert counted(conn) == recount(conn)


def test_the_same_students_give_bit_for_bit_the_same_statistics_whatever_the_history(conn):
    mark(conn, SID[0], [result(f"s{i}", i % 21, 20, position=i + 1) for i in range(50)])
    mark(conn, SID[1], [result(f"s{i}", 20, 20, position=i + 1) for i in range(0, 50, 7)])  # re-scans raise some
    first, _ = refreshed(conn)
    results_db.clear_derived(conn)
    final = [result(f"s{i}", 20 if i % 7 == 0 else i % 21, 20, position=i + 1) for i in range(50)]
    mark(conn, SID[2], list(reversed(final)))  # one document, students in another order
    second, _ = refreshed(conn)
    assert (first.count, first.mean, first.stddev, first.p25, first.p50, first.p75) == \
           (second.count, second.mean, second.stddev, second.p25, second.p50, second.p75)


def test_data_quality_totals_follow_test_submissions_whoever_writes_them(conn):
    """test_quality (migration 0009) equals the sums over test_submissions after inserts, re-applied
    upserts and deletes, so the refresh can read one row."""
    def totals():
        kept = conn.execute("SELECT test_id, submissions, mismatched_results, mismatched_submissions,"
                            " unanswered_results FROM test_quality WHERE submissions <> 0 ORDER BY 1").fetchall()
        summed = conn.execute("SELECT test_id, count(*), sum(mismatched_results),"
                              " count(*) FILTER (WHERE mismatched_results > 0), sum(unanswered_results)"
                              " FROM test_submissions GROUP BY 1 ORDER BY 1").fetchall()
        return kept, summed

    conn.execute("INSERT INTO test_submissions VALUES ('a', 'S1', 5, 2, 1), ('a', 'S2', 4, 0, 0), ('b', 'S1', 3, 1, 3)")
    kept, summed = totals()
    assert kept == summed == [("a", 2, 2, 1, 1), ("b", 1, 1, 1, 3)]
    conn.execute("INSERT INTO test_submissions VALUES ('a', 'S1', 5, 0, 0), ('a', 'S3', 1, 1, 0)"
                 " ON CONFLICT (test_id, submission_id) DO UPDATE SET mismatched_results = excluded.mismatched_results,"
                 " unanswered_results = excluded.unanswered_results")  # S1 re-applied with new counts, S3 new
    kept, summed = totals()
    assert kept == summed == [("a", 3, 1, 1, 0), ("b", 1, 1, 1, 3)]
    conn.execute("DELETE FROM test_submissions WHERE submission_id = 'S1'")  # a retraction
    kept, summed = totals()
    assert kept == summed == [("a", 2, 1, 1, 0)]

"""Marking and statistics SQL on the real PostgreSQL, checked against the pure scoring policy and numpy."""
import random

import numpy as np
import psycopg
import pytest

from shared.db import results as results_db
from shared.domain.results_document import TestResult
from shared.domain.scoring_policy import best_marks, percent
from tests.migrating import database_before

SID = ["01JA0000000000000000000000", "01JA0000000000000000000001", "01JA0000000000000000000002"]


def result(student, obtained, available, test="t1", position=1):
    return TestResult(position, student, test, available, obtained, None, None, None)


def mark(conn, sid, rows, run=None):
    positioned = [TestResult(i + 1, r.student_number, r.test_id, r.available, r.obtained, None, None, None)
                  for i, r in enumerate(rows)]
    results_db.stage_validated(conn, sid, positioned)
    return results_db.apply_marking(conn, sid, run or sid)


def stored(conn, test="t1"):
    return {row[0]: (row[1], row[2], row[3]) for row in conn.execute(
        "SELECT student_number, available, obtained, ARRAY(SELECT l.submission_id FROM student_submissions l"
        " WHERE l.test_id = s.test_id AND l.student_number = s.student_number ORDER BY 1)"
        " FROM student_results s WHERE test_id = %s",
        (test,))}


@pytest.fixture
def conn(database_url):
    with psycopg.connect(database_url, autocommit=True) as c:
        yield c


def test_rescan_across_documents_keeps_highest_of_each_independently(conn):
    mark(conn, SID[0], [result("s1", 9, 10)])
    mark(conn, SID[1], [result("s1", 8, 20)])
    assert stored(conn)["s1"] == (20, 9, [SID[0], SID[1]])
    results_db.refresh_statistics(conn, "t1", 2)
    assert results_db.get_statistics(conn, "t1").mean == pytest.approx(45.0)


def test_rescan_within_one_document_is_deduplicated_first(conn):
    mark(conn, SID[0], [result("s1", 3, 10), result("s1", 7, 10), result("s1", 5, 12)])
    assert stored(conn)["s1"] == (12, 7, [SID[0]])


def test_student_numbers_are_strings(conn):
    mark(conn, SID[0], [result("002299", 5, 10), result("2299", 9, 10)])
    assert set(stored(conn)) == {"002299", "2299"}


def test_zero_marks_count(conn):
    marking = mark(conn, SID[0], [result("s1", 0, 10), result("s2", 10, 10)])
    results_db.refresh_statistics(conn, "t1", marking.test_versions["t1"])
    stats = results_db.get_statistics(conn, "t1")
    assert (stats.count, stats.min, stats.max, stats.mean) == (2, 0.0, 100.0, 50.0)


def test_marking_twice_changes_nothing(conn):
    first = mark(conn, SID[0], [result("s1", 5, 10), result("s2", 6, 10, test="t2")])
    before = conn.execute("SELECT * FROM student_results ORDER BY 1, 2").fetchall()
    again = results_db.apply_marking(conn, SID[0], SID[0])
    assert again.test_versions == first.test_versions and not again.newly_applied
    assert conn.execute("SELECT * FROM student_results ORDER BY 1, 2").fetchall() == before
    assert dict(conn.execute("SELECT test_id, results_version FROM tests")) == {"t1": 1, "t2": 1}


def test_nothing_to_mark_is_an_error(conn):
    with pytest.raises(results_db.NothingToMarkError):
        results_db.apply_marking(conn, SID[0], SID[0])


def test_quartiles_of_ten_twenty_thirty_forty(conn):
    marking = mark(conn, SID[0], [result(f"s{i}", marks, 100) for i, marks in enumerate([10, 20, 30, 40])])
    results_db.refresh_statistics(conn, "t1", marking.test_versions["t1"])
    stats = results_db.get_statistics(conn, "t1")
    assert (stats.p25, stats.p50, stats.p75) == pytest.approx((17.5, 25.0, 32.5))


def test_one_student(conn):
    marking = mark(conn, SID[0], [result("only", 7, 20)])
    results_db.refresh_statistics(conn, "t1", marking.test_versions["t1"])
    assert results_db.get_statistics(conn, "t1").as_json() == {
        "mean": 35.0, "stddev": 0.0, "min": 35.0, "max": 35.0, "p25": 35.0, "p50": 35.0, "p75": 35.0, "count": 1}


@pytest.mark.parametrize("seed", range(6))
def test_statistics_match_numpy_on_random_data(conn, seed):
    rng = random.Random(seed)
    docs = []
    for _ in range(3):  # several documents with overlapping students: exercises the re-scan rule too
        docs.append([result(f"{rng.randrange(60):04d}", 0, 0) for _ in range(rng.randrange(1, 80))])
    docs = [[TestResult(0, r.student_number, "t1", (a := rng.randrange(1, 40)), rng.randrange(0, a + 1),
                        None, None, None) for r in doc] for doc in docs]
    version = 0
    for sid, doc in zip(SID, docs, strict=True):
        version = mark(conn, sid, doc).test_versions["t1"]
    results_db.refresh_statistics(conn, "t1", version)
    stats = results_db.get_statistics(conn, "t1")

    expected = best_marks(r for doc in docs for r in doc)
    pct = np.array([percent(b.obtained, b.available) for b in expected.values()])
    assert stats.count == len(pct)
    assert stats.mean == pytest.approx(pct.mean(), abs=1e-9)
    assert stats.stddev == pytest.approx(pct.std(), abs=1e-9)  # population stddev (ddof=0)
    assert (stats.min, stats.max) == (pct.min(), pct.max())
    assert [stats.p25, stats.p50, stats.p75] == pytest.approx(list(np.percentile(pct, [25, 50, 75])), abs=1e-9)


def test_a_burst_for_one_test_recomputes_once(conn):
    versions = [mark(conn, sid, [result(f"s{i}", i, 10)]).test_versions["t1"] for i, sid in enumerate(SID)]
    assert versions == [1, 2, 3]
    # The aggregation messages arrive in any order; the first recomputation covers all three.
    assert results_db.refresh_statistics(conn, "t1", versions[-1]) is True
    assert [results_db.refresh_statistics(conn, "t1", v) for v in versions] == [False, False, False]
    assert results_db.get_statistics(conn, "t1").count == 3


def test_migrate_on_start_applies_the_schema_on_first_database_use(postgres_server, monkeypatch):
    """In Azure (MARKR_MIGRATE_ON_START=true) the first pool of a process brings the schema up to date."""
    import uuid

    from shared import bootstrap
    from shared.db.migrations import migration_files

    name = f"m_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = f"{postgres_server.rpartition('/')[0]}/{name}"
    monkeypatch.setenv("MARKR_DATABASE_URL", url)
    monkeypatch.setenv("MARKR_MIGRATE_ON_START", "true")
    bootstrap.reset()
    try:
        with bootstrap.services().pool.connection() as conn:
            assert conn.execute("SELECT count(*) FROM student_results").fetchone() == (0,)
            applied = [row[0] for row in conn.execute("SELECT name FROM schema_migrations ORDER BY version")]
        assert applied == [path.name for _, path in migration_files()]
    finally:
        bootstrap.reset()
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_a_refresh_in_progress_holds_off_other_refreshes_of_its_test_but_no_marking(conn, database_url):
    """Markings commit while a test's statistics are computed; the refresh after covers them all."""
    version = mark(conn, SID[0], [result("s1", 5, 10)]).test_versions["t1"]
    with psycopg.connect(database_url) as computing, computing.transaction():
        assert results_db.refresh_statistics(computing, "t1", version) is True  # its lock held until commit
        with psycopg.connect(database_url, autocommit=True) as other:
            other.execute("SET lock_timeout = '5s'")
            later = [mark(other, sid, [result(f"s{i}", 9, 10)]).test_versions["t1"]
                     for i, sid in enumerate(SID[1:], 2)]  # not blocked: they commit
            with pytest.raises(psycopg.errors.LockNotAvailable):
                results_db.refresh_statistics(other, "t1", later[-1])  # waits its turn
    assert [results_db.refresh_statistics(conn, "t1", v) for v in (later[-1], *later)] == [True, False, False]
    stats = results_db.get_statistics(conn, "t1")
    assert (stats.count, stats.computed_version) == (3, later[-1])


def test_migration_0008_moves_the_lineage_arrays_into_rows(postgres_server):
    """Results marked before 0008 keep their lineage: one student_submissions row per listed submission."""
    with database_before(postgres_server, 8) as (c, migrate):
        c.execute("INSERT INTO student_results (test_id, student_number, available, obtained, submission_ids)"
                  " VALUES ('t', 'a', 10, 6, '{S1,S2}'), ('t', 'b', 10, 10, '{S2}'), ('u', 'a', 5, 5, '{S3}')")
        migrate()
        assert c.execute("SELECT test_id, student_number, submission_id FROM student_submissions"
                         " ORDER BY 1, 2, 3").fetchall() == [
            ("t", "a", "S1"), ("t", "a", "S2"), ("t", "b", "S2"), ("u", "a", "S3")]
        columns = {r[0] for r in c.execute("SELECT column_name FROM information_schema.columns"
                                            " WHERE table_name = 'student_results'")}
        assert "submission_ids" not in columns and "best_submission_id" in columns


def test_migration_0009_totals_the_data_quality_of_existing_submissions(postgres_server):
    with database_before(postgres_server, 9) as (c, migrate):
        c.execute("INSERT INTO test_submissions VALUES ('t', 'S1', 5, 2, 1), ('t', 'S2', 4, 0, 3), ('u', 'S1', 1, 0, 0)")
        migrate()
        assert c.execute("SELECT * FROM test_quality ORDER BY 1").fetchall() == [("t", 2, 2, 1, 4), ("u", 1, 0, 0, 0)]

"""Item-analysis sums kept incrementally over large multi-test documents equal a rebuild from scratch
and an independent count in Python (the re-scan rule: highest obtained, the latest on a tie)."""
import random

import psycopg
import pytest

from shared.db import results as results_db
from shared.domain.model import Answer, AnswerSheet, TestResult
from tests.migrating import database_before

TESTS = ["t1", "t2", "t3", "t4"]
SID = [f"01JB00000000000000000000{i:02d}" for i in range(10)]


def document(rng, n, students):
    """n scans over TESTS: ~10% re-scans of a student already in it, marks of 1 and 3 available,
    blank options, skipped questions, and some scans without answers."""
    rows, seen = [], []
    for i in range(n):
        if seen and rng.random() < 0.1:
            student, test = rng.choice(seen)
        else:
            student = f"{rng.randrange(students):05d}"
            test = TESTS[int(student) % len(TESTS)]
            seen.append((student, test))
        got = []
        if rng.random() < 0.95:
            for q in range(12):
                if rng.random() < 0.9:
                    available = 3 if q % 4 == 0 else 1
                    got.append(Answer(str(q + 1), rng.choice(["A", "B", "C", "D", ""]), available,
                                      rng.randint(0, available)))
        obtained = sum(a.awarded for a in got) if rng.random() < 0.9 else rng.randint(0, 18)
        rows.append(TestResult(i + 1, student, test, 18, min(obtained, 18), None, None, None, AnswerSheet.of(got)))
    return rows


def mark(conn, documents):
    with conn.transaction():
        results_db.stage_many(conn, documents)
        marked = results_db.apply_markings(conn, [(sid, sid) for sid, _ in documents])
    refresh(conn, marked)


def refresh(conn, marked):
    versions = {}
    for m in marked.values():
        for test, version in m.test_versions.items():
            versions[test] = max(versions.get(test, 0), version)
    for test, version in versions.items():
        results_db.refresh_statistics(conn, test, version)


def sums(conn):
    return (conn.execute("SELECT test_id, question, answering, sum_x, sum_xx, sum_xt, sum_ratio, nonbinary"
                         " FROM item_sums WHERE answering <> 0 ORDER BY 1, 2").fetchall(),
            conn.execute("SELECT test_id, question, option, chosen FROM option_counts WHERE chosen <> 0"
                         " ORDER BY 1, 2, 3").fetchall(),
            conn.execute("SELECT test_id, students, sum_t, sum_tt FROM item_totals WHERE students <> 0"
                         " ORDER BY 1").fetchall())


def oracle(documents):
    """The same sums counted in Python from each student's counted scan."""
    best = {}
    for sid, rows in documents:
        for r in rows:
            key = (r.test_id, r.student_number)
            rank = (r.obtained, sid, r.result)
            if key not in best or rank >= best[key][0]:
                best[key] = (rank, r)
    items, options, totals = {}, {}, {}
    for (test, _), (_, r) in best.items():
        if r.answer_sheet is None:
            continue
        t = r.awarded_total
        n, st, stt = totals.get(test, (0, 0, 0))
        totals[test] = (n + 1, st + t, stt + t * t)
        for a in r.answers:
            s = items.setdefault((test, a.question), [0, 0, 0, 0, 0.0, 0])
            x = a.awarded
            s[0] += 1
            s[1] += x
            s[2] += x * x
            s[3] += x * t
            s[4] += x / a.available
            s[5] += a.available != 1
            options[(test, a.question, a.option)] = options.get((test, a.question, a.option), 0) + 1
    return items, options, totals


def assert_matches_oracle(kept, expected):
    items, options, totals = expected
    assert {(t, q): [a, sx, sxx, sxt, nb] for t, q, a, sx, sxx, sxt, _, nb in kept[0]} == \
        {k: [v[0], v[1], v[2], v[3], v[5]] for k, v in items.items()}
    for t, q, _, _, _, _, ratio, _ in kept[0]:
        assert float(ratio) == pytest.approx(items[(t, q)][4], rel=1e-12)
    assert {(t, q, o): c for t, q, o, c in kept[1]} == options
    assert {t: (n, st, stt) for t, n, st, stt in kept[2]} == totals


def analyses(conn):
    return {t: results_db.get_item_analysis(conn, t) for t in TESTS}


@pytest.fixture
def conn(database_url):
    with psycopg.connect(database_url, autocommit=True) as c:
        yield c


def test_large_documents_marked_incrementally_equal_a_rebuild(conn):
    rng = random.Random(5)
    first = (SID[1], document(rng, 4000, 3000))
    second = (SID[3], document(rng, 4000, 3000))  # many of the same students: counted scans move
    third = (SID[4], [*document(rng, 300, 3000)])
    again = (SID[5], second[1])  # the second document sent again: every tie moves to it, same answers
    both = [(SID[6], document(rng, 500, 3000)), (SID[7], document(rng, 500, 3000))]  # one batch of two
    delivered = []
    for batch in ([first], [second], [third], [again], both):
        mark(conn, batch)
        delivered.extend(batch)
        assert_matches_oracle(sums(conn), oracle(delivered))
    kept, views = sums(conn), analyses(conn)
    assert all(v is not None and v.analysed_students > 0 for v in views.values())

    with conn.transaction():
        results_db.rebuild_item_sums(conn, TESTS)
        bumped = {t: v for t, v in conn.execute(
            "UPDATE tests SET results_version = results_version + 1 RETURNING test_id, results_version")}
    assert sums(conn) == kept  # exact, sum_ratio's numeric digits included
    for test, version in bumped.items():
        assert results_db.refresh_statistics(conn, test, version)
    assert analyses(conn) == views


def test_submission_ids_keep_every_contributing_document_once(conn):
    rows = [TestResult(1, "s1", "t1", 10, 5, None, None, None, None),
            TestResult(2, "s2", "t1", 10, 6, None, None, None, None)]
    mark(conn, [(SID[0], rows)])
    mark(conn, [(SID[1], rows[:1])])  # one new document for s1
    mark(conn, [(SID[2], rows), (SID[3], rows[:1]), (SID[0], rows)])  # a batch of several, one seen before
    with conn.transaction():  # a marking applied again under another run changes nothing
        results_db.apply_markings(conn, [(SID[1], "another-run")])
    got = dict(conn.execute("SELECT student_number, array_agg(submission_id ORDER BY submission_id)"
                            " FROM student_submissions GROUP BY student_number"))
    assert got == {"s1": [SID[0], SID[1], SID[2], SID[3]], "s2": [SID[0], SID[2]]}


def test_staged_rows_round_trip_whatever_their_characters(conn):
    odd = ['a"b', "c\\d", "e\tf", "g\nh", "i\rj", "{k}", "", "NULL", "\\N", "ü ✓", "l,m"]
    rows = [TestResult(i + 1, f"s{o}", f"t{o}", 5, 1, None, None, None,
                       AnswerSheet.of([Answer(f"q{o}", o, 1, 1), Answer(o, f"o{o}", 3, 0)]))
            for i, o in enumerate(odd)]
    rows.append(TestResult(len(odd) + 1, "plain", "t", 5, 2, None, None, None, None))
    with conn.transaction():
        assert results_db.stage_many(conn, [(SID[0], rows)]) == len(rows)
    staged = conn.execute("SELECT result, test_id, student_number, available, obtained, awarded_total"
                          " FROM validated_results ORDER BY result").fetchall()
    assert staged == [(r.result, r.test_id, r.student_number, 5, r.obtained, r.awarded_total) for r in rows]
    kept = conn.execute("SELECT result, test_id, student_number, questions, options, available, awarded"
                        " FROM answers ORDER BY result").fetchall()
    assert kept == [(r.result, r.test_id, r.student_number, [a.question for a in r.answers],
                     [a.option for a in r.answers], [1, 3], [1, 0]) for r in rows[:-1]]


def test_a_large_document_after_statistics_of_a_small_table_looks_each_student_up_by_key(conn):
    # Statistics gathered while student_results held a few rows (autovacuum's analyse of a young
    # database) made the planner scan the whole table for every student of the next document: the
    # rows that very statement inserts included, quadratic in the document (12.7 s instead of 1.5 s
    # for 50,000 results).
    rng = random.Random(9)
    mark(conn, [(SID[1], document(rng, 40, 3000))])
    conn.execute("ANALYZE student_results")
    big = (SID[2], document(rng, 1500, 3000))
    with conn.transaction():
        results_db.stage_many(conn, [big])
        results_db.apply_markings(conn, [(big[0], big[0])])
        scans, = conn.execute("SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'student_results'").fetchone()
        after = conn.execute("SELECT current_setting('enable_seqscan'), current_setting('plan_cache_mode')").fetchone()
    assert scans == 0
    assert after == ("on", "auto")  # for the rest of the caller's transaction
    assert conn.execute("SELECT count(*) FROM student_results").fetchone()[0] > 1000


def test_migration_0011_digests_match_the_marker_and_marking_goes_on_from_older_rows(postgres_server):
    """Scans staged before 0011 get the digest the marker computes for the same answers (quotes,
    backslashes, commas, blanks and non-ASCII included), so a document sent again after the upgrade
    moves no sums, and a different one moves them exactly as a rebuild counts them."""
    odd = [Answer("1", "A", 1, 1), Answer('q"2', "a\\b", 3, 2), Answer("3 b", "", 1, 0), Answer("4", "x,y", 1, 0),
           Answer("é5", "ü", 2, 2)]
    rows = [TestResult(1, "s1", "t1", 8, 5, None, None, None, AnswerSheet.of(odd)),
            TestResult(2, "s2", "t1", 8, 3, None, None, None, AnswerSheet.of(odd[:2])),
            TestResult(3, "s3", "t1", 8, 1, None, None, None, None)]
    with database_before(postgres_server, 11) as (c, migrate):
        for r in rows:
            sheet = r.answer_sheet
            c.execute("INSERT INTO validated_results (submission_id, result, test_id, student_number, available,"
                      " obtained, awarded_total) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                      (SID[1], r.result, r.test_id, r.student_number, r.available, r.obtained,
                       sheet and sheet.awarded_total))
            c.execute("INSERT INTO student_results (test_id, student_number, available, obtained, best_submission_id,"
                      " best_result) VALUES (%s, %s, %s, %s, %s, %s)",
                      (r.test_id, r.student_number, r.available, r.obtained, SID[1], r.result))
            c.execute("INSERT INTO student_submissions VALUES (%s, %s, %s)", (r.test_id, r.student_number, SID[1]))
            if sheet:
                answers = sheet.answers()
                c.execute("INSERT INTO answers VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                          (SID[1], r.result, r.test_id, r.student_number, [a.question for a in answers],
                           [a.option for a in answers], [a.available for a in answers], [a.awarded for a in answers]))
        c.execute("INSERT INTO tests (test_id, results_version) VALUES ('t1', 1)")
        migrate()
        digests = [(r.answer_sheet and results_db.answers_digest(r.answer_sheet)) for r in rows]
        assert [d for (d,) in c.execute("SELECT answers_digest FROM validated_results ORDER BY result")] == digests
        assert c.execute("SELECT best_total, best_digest FROM student_results ORDER BY student_number").fetchall() == \
            [(5, digests[0]), (2 + 1, digests[1]), (None, None)]
        results_db.rebuild_item_sums(c, ["t1"])
        upgraded = sums(c)
        mark(c, [(SID[2], rows)])  # the same document again: every counted scan moves to an identical one
        assert sums(c) == upgraded
        assert [d for (d,) in c.execute("SELECT answers_digest FROM validated_results WHERE submission_id = %s"
                                        " ORDER BY result", (SID[2],))] == digests  # as staged by COPY
        changed = [TestResult(1, "s2", "t1", 8, 6, None, None, None, AnswerSheet.of(odd[2:])),
                   TestResult(2, "s3", "t1", 8, 2, None, None, None, AnswerSheet.of(odd[:1]))]
        mark(c, [(SID[3], changed)])
        incremental = sums(c)
        results_db.rebuild_item_sums(c, ["t1"])
        assert incremental == sums(c) != upgraded

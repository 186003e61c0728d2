"""Precomputed analyst views on the real PostgreSQL: histogram edges, item analysis against numpy,
the re-scan answer rule and the data-quality figures."""
import csv
import io
import random

import numpy as np
import psycopg
import pytest

from shared.db import results as results_db
from shared.domain.model import Answer, AnswerSheet, TestResult
from tests.migrating import database_before

SID = [f"01JA00000000000000000000{i:02d}" for i in range(10)]


def scan(student, obtained, available, answers=(), test="t1"):
    return TestResult(0, student, test, available, obtained, None, None, None, AnswerSheet.of(answers))


def mark(conn, documents, test="t1"):
    """Stage and mark several documents in one batch, then refresh the test's views."""
    staged = [(sid, [TestResult(i + 1, r.student_number, r.test_id, r.available, r.obtained, None, None, None,
                                r.answer_sheet) for i, r in enumerate(rows)]) for sid, rows in documents]
    with conn.transaction():
        results_db.stage_many(conn, staged)
        marked = results_db.apply_markings(conn, [(sid, sid) for sid, _ in documents])
    version = max(m.test_versions.get(test, 0) for m in marked.values() if m)
    assert results_db.refresh_statistics(conn, test, version)


def answers(*awarded, option="A", available=1):
    return [Answer(str(q), option, available, a) for q, a in enumerate(awarded)]


@pytest.fixture
def conn(database_url):
    with psycopg.connect(database_url, autocommit=True) as c:
        yield c


def test_histogram_bins_at_the_edges(conn):
    marks = {"zero": 0, "under10": 99, "ten": 100, "third": 333, "under90": 899, "ninety": 900, "top": 1000}
    mark(conn, [(SID[0], [scan(s, o, 1000) for s, o in marks.items()])])
    hist = results_db.get_histogram(conn, "t1")
    assert hist.counts == (2, 1, 0, 1, 0, 0, 0, 0, 1, 2) and hist.total == 7
    assert results_db.get_histogram(conn, "other") is None


def test_every_bin_is_present_even_when_empty(conn):
    mark(conn, [(SID[0], [scan("s", 5, 10)])])
    assert results_db.get_histogram(conn, "t1").counts == (0, 0, 0, 0, 0, 1, 0, 0, 0, 0)


def reference(matrix, available, chosen):
    """Classical item analysis in numpy: unanswered (NaN) scores 0; population variances."""
    answered = ~np.isnan(matrix)
    x = np.nan_to_num(matrix)
    total = x.sum(axis=1)
    k = x.shape[1]
    items = []
    for q in range(k):
        rest = total - x[:, q]
        r = np.corrcoef(x[:, q], rest)[0, 1] if x[:, q].std() > 0 and rest.std() > 0 else None
        counts = {}
        for s in np.flatnonzero(answered[:, q]):
            counts[chosen[s][q]] = counts.get(chosen[s][q], 0) + 1
        n = answered[:, q].sum()
        items.append({"answering": int(n), "difficulty": float((x[answered[:, q], q] / available[q]).mean()),
                      "discrimination": r, "options": {o: (c, c / n, c / n < 0.05) for o, c in counts.items()}})
    alpha = k / (k - 1) * (1 - x.var(axis=0).sum() / total.var())
    return items, alpha


@pytest.mark.parametrize("binary", [True, False])
def test_item_analysis_matches_numpy(conn, binary):
    rng = np.random.default_rng(7 if binary else 8)
    students, k = 60, 8
    available = np.ones(k) if binary else rng.integers(1, 4, size=k).astype(float)
    ability = rng.normal(size=students)
    matrix = np.empty((students, k))
    chosen = []
    for s in range(students):
        row = []
        for q in range(k):
            p = 1 / (1 + np.exp(-(ability[s] - (q - k / 2) / 3)))
            matrix[s, q] = rng.binomial(int(available[q]), p)
            row.append(str(rng.choice(list("ABCD"), p=[0.6, 0.25, 0.12, 0.03])))
        chosen.append(row)
    matrix[rng.random((students, k)) < 0.1] = np.nan  # some questions left unanswered
    rows = []
    for s in range(students):
        got = [Answer(str(q), chosen[s][q], int(available[q]), int(matrix[s, q]))
               for q in range(k) if not np.isnan(matrix[s, q])]
        rows.append(scan(f"s{s:03d}", sum(a.awarded for a in got), int(available.sum()), got))
    mark(conn, [(SID[0], rows)])

    expected_items, expected_alpha = reference(matrix, available, chosen)
    analysis = results_db.get_item_analysis(conn, "t1")
    assert analysis.student_count == analysis.analysed_students == students
    assert analysis.cronbach_alpha == pytest.approx(expected_alpha, abs=1e-9)
    assert analysis.kr20 == (pytest.approx(expected_alpha, abs=1e-9) if binary else None)
    assert [i["question"] for i in analysis.items] == [str(q) for q in range(k)]
    for got, want in zip(analysis.items, expected_items, strict=True):
        assert got["answering"] == want["answering"]
        assert got["difficulty"] == pytest.approx(want["difficulty"], abs=1e-9)
        assert got["discrimination"] == pytest.approx(want["discrimination"], abs=1e-9)
        options = {o["option"]: (o["count"], pytest.approx(o["frequency"]), o["flagged"]) for o in got["options"]}
        assert options == want["options"]
        assert got["flagged"] == any(flag for _, _, flag in want["options"].values())
    assert any(i["flagged"] for i in analysis.items)  # the 3% option shows up somewhere


def test_degenerate_items_have_no_discrimination_and_one_question_no_alpha(conn):
    mark(conn, [(SID[0], [scan("s1", 1, 1, answers(1)), scan("s2", 1, 1, answers(1))])])
    analysis = results_db.get_item_analysis(conn, "t1")
    [item] = analysis.items
    assert (item["difficulty"], item["discrimination"], analysis.cronbach_alpha) == (1.0, None, None)


def test_questions_sort_numerically_then_by_text(conn):
    got = [Answer(q, "A", 1, 0) for q in ("10", "2", "b", "a", "1")]
    mark(conn, [(SID[0], [scan("s1", 0, 5, got)])])
    assert [i["question"] for i in results_db.get_item_analysis(conn, "t1").items] == ["1", "2", "10", "a", "b"]


def counted_options(conn, test="t1"):
    return {i["question"]: [o["option"] for o in i["options"]] for i in results_db.get_item_analysis(conn, test).items}


def test_rescan_answers_come_from_the_highest_obtained_the_latest_on_a_tie(conn):
    mark(conn, [(SID[1], [scan("s1", 1, 2, answers(1, 0, option="B"))])])
    assert counted_options(conn) == {"0": ["B"], "1": ["B"]}
    mark(conn, [(SID[2], [scan("s1", 0, 2, answers(0, 0, option="C"))])])  # lower: not counted
    assert counted_options(conn) == {"0": ["B"], "1": ["B"]}
    mark(conn, [(SID[3], [scan("s1", 1, 2, answers(0, 1, option="D"))])])  # tie, later submission
    assert counted_options(conn) == {"0": ["D"], "1": ["D"]}
    # A tie with an earlier submission id (marked later) does not displace the later one.
    mark(conn, [(SID[0], [scan("s1", 1, 2, answers(1, 0, option="E"))])])
    assert counted_options(conn) == {"0": ["D"], "1": ["D"]}
    # Within one batch and one document: the highest, then the later position.
    mark(conn, [(SID[5], [scan("s1", 2, 2, answers(1, 1, option="F")), scan("s1", 2, 2, answers(1, 1, option="G"))]),
                (SID[4], [scan("s1", 2, 2, answers(1, 1, option="H"))])])
    assert counted_options(conn) == {"0": ["G"], "1": ["G"]}
    analysis = results_db.get_item_analysis(conn, "t1")
    assert (analysis.student_count, analysis.submission_count) == (1, 6)


def test_a_rescan_without_answers_leaves_the_student_out_of_item_analysis(conn):
    mark(conn, [(SID[0], [scan("s1", 1, 2, answers(1, 0)), scan("s2", 1, 2, answers(0, 1))])])
    mark(conn, [(SID[1], [scan("s1", 2, 2)])])
    analysis = results_db.get_item_analysis(conn, "t1")
    assert (analysis.student_count, analysis.analysed_students, analysis.unanswered_results) == (2, 1, 1)


def test_mismatched_marks_are_counted_per_result_and_per_submission(conn):
    mark(conn, [(SID[0], [scan("s1", 2, 2, answers(1, 0)), scan("s2", 0, 2, answers(1, 1)),
                          scan("s3", 1, 2, answers(1, 0))])])
    mark(conn, [(SID[1], [scan("s4", 1, 2, answers(0, 1))])])
    mark(conn, [(SID[2], [scan("s5", 1, 2, answers(1, 1))])])
    a = results_db.get_item_analysis(conn, "t1")
    assert (a.submission_count, a.mismatched_results, a.mismatched_submissions) == (3, 3, 2)
    assert conn.execute("SELECT sum(cardinality(questions)) FROM answers WHERE submission_id = %s",
                        (SID[0],)).fetchone()[0] == 6


def test_a_redelivered_marking_counts_nothing_twice(conn):
    doc = [(SID[0], [scan("s1", 2, 2, answers(1, 0))])]
    mark(conn, doc)
    with conn.transaction():
        results_db.stage_many(conn, [(SID[0], [TestResult(1, "s1", "t1", 2, 2, None, None, None, AnswerSheet.of(answers(1, 0)))])])
        results_db.apply_markings(conn, [(SID[0], "replay-run")])
    results_db.refresh_statistics(conn, "t1", 2)
    a = results_db.get_item_analysis(conn, "t1")
    assert (a.submission_count, a.mismatched_results, a.items[0]["answering"]) == (1, 1, 1)


def test_answers_are_stored_by_student_number_never_names(conn):
    mark(conn, [(SID[0], [TestResult(1, "002299", "t1", 2, 1, "KJ", "Alysander", None, AnswerSheet.of(answers(1, 0)))])])
    columns = {r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'answers'")}
    assert "student_number" in columns and "submission_id" in columns
    assert not any("name" in c for c in columns)
    dump = conn.execute("SELECT string_agg(a::text, ' ') FROM answers a").fetchone()[0]
    assert "002299" in dump and "Alysander" not in dump and "KJ" not in dump


def test_the_catalogue_pages_in_test_id_order(conn):
    rng = random.Random(3)
    ids = [f"t{n}" for n in rng.sample(range(100), 7)]
    for i, test in enumerate(ids):
        mark(conn, [(SID[i], [scan("s1", 1, 4, test=test), scan("s2", 3, 5, test=test)])], test=test)
    first = results_db.list_tests(conn, None, 4)
    rest = results_db.list_tests(conn, first[-1].test_id, 4)
    assert [e.test_id for e in first + rest] == sorted(ids)
    assert (first[0].student_count, first[0].max_available, first[0].submission_count) == (2, 5, 1)


def test_students_csv(conn):
    mark(conn, [(SID[0], [scan("002299", 13, 20), scan("2300", 1, 3)])])
    mark(conn, [(SID[1], [scan("002299", 10, 25)])])
    rows = list(csv.reader(io.StringIO(results_db.students_csv(conn, "t1").decode())))
    assert rows[0] == ["student_number", "available", "obtained", "percent", "submissions"]
    assert rows[1] == ["002299", "25", "13", "52", "2"]
    assert rows[2][:3] == ["2300", "3", "1"] and float(rows[2][3]) == pytest.approx(100 / 3) and rows[2][4] == "1"
    assert results_db.students_csv(conn, "missing") is None


def sums(conn, test="t1"):
    return ([r for r in conn.execute("SELECT question, answering, sum_x, sum_xx, sum_xt, sum_ratio, nonbinary"
                                     " FROM item_sums WHERE test_id = %s AND answering <> 0 ORDER BY 1", (test,))],
            [r for r in conn.execute("SELECT question, option, chosen FROM option_counts"
                                     " WHERE test_id = %s AND chosen <> 0 ORDER BY 1, 2", (test,))],
            conn.execute("SELECT students, sum_t, sum_tt FROM item_totals WHERE test_id = %s", (test,)).fetchone())


def test_the_sums_kept_by_marking_equal_sums_rebuilt_from_scratch(conn):
    rng = random.Random(11)
    for d in range(8):  # re-scans across and within documents, some without answers
        rows = []
        for _ in range(25):
            got = [Answer(str(q), rng.choice("ABC"), 2, rng.randint(0, 2)) for q in range(5) if rng.random() < 0.9]
            got = got if rng.random() < 0.9 else []
            rows.append(scan(f"s{rng.randrange(30)}", sum(a.awarded for a in got) or rng.randint(0, 10), 10, got))
        mark(conn, [(SID[d], rows)])
    kept = sums(conn)
    assert kept[2][0] > 0
    with conn.transaction():
        results_db.rebuild_item_sums(conn, ["t1"])
    assert sums(conn) == kept


def test_a_document_sent_again_moves_the_counted_scans_and_keeps_the_sums(conn):
    document = [scan("s1", 1, 2, answers(1, 0, option="B")), scan("s2", 2, 2, answers(1, 1, option="C")),
                scan("s3", 1, 2, answers(0, 1, option="D")), scan("s4", 0, 2)]
    mark(conn, [(SID[0], document)])
    first = sums(conn)
    # The same scans again (a tie, later submission: now counted), and s3 with other options.
    again = [*document[:2], scan("s3", 1, 2, answers(0, 1, option="A")), document[3]]
    mark(conn, [(SID[1], again)])
    counted = conn.execute("SELECT student_number, best_submission_id FROM student_results ORDER BY 1").fetchall()
    assert counted == [(s, SID[1]) for s in ("s1", "s2", "s3", "s4")]
    assert counted_options(conn) == {"0": ["A", "B", "C"], "1": ["A", "B", "C"]}
    assert sums(conn)[0] == first[0] and sums(conn)[2] == first[2]
    kept = sums(conn)
    with conn.transaction():
        results_db.rebuild_item_sums(conn, ["t1"])
    assert sums(conn) == kept


def test_questions_and_options_round_trip_whatever_their_characters(conn):
    odd = ['a"b', "c\\d", "e,f", "{g}", "", "NULL", "ü ✓", "tab\there"]
    got = [Answer(f"q{o}", o, 1, 1) for o in odd]
    mark(conn, [(SID[0], [scan("s1", len(odd), len(odd), got)])])
    items = results_db.get_item_analysis(conn, "t1").items
    assert sorted((i["question"], i["options"][0]["option"]) for i in items) == sorted((f"q{o}", o) for o in odd)


def test_migration_0006_on_existing_results(postgres_server):
    """Results marked before 0006: counted scans, catalogue figures and histogram are filled in."""
    with database_before(postgres_server, 6) as (c, migrate):
        c.execute("""
            INSERT INTO validated_results VALUES ('S1', 1, 't', 'a', 10, 4), ('S1', 2, 't', 'a', 10, 6),
                                                 ('S2', 1, 't', 'a', 10, 6), ('S2', 2, 't', 'b', 10, 10);
            INSERT INTO applied_markings VALUES ('S1', 'S1', '{"t": 1}', 2), ('S2', 'S2', '{"t": 2}', 2);
            INSERT INTO tests VALUES ('t', 2);
            INSERT INTO student_results VALUES ('t', 'a', 10, 6, '{S1,S2}'), ('t', 'b', 10, 10, '{S2}');
            INSERT INTO test_statistics (test_id, computed_version, count, mean, stddev, min, max, p25, p50, p75)
                 VALUES ('t', 2, 2, 80, 20, 60, 100, 70, 80, 90);
        """)
        migrate()
        pointers = c.execute("SELECT student_number, best_submission_id, best_result FROM student_results"
                             " ORDER BY 1").fetchall()
        assert pointers == [("a", "S2", 1), ("b", "S2", 2)]  # a: 6 twice, the later submission
        hist = results_db.get_histogram(c, "t")
        assert hist.counts == (0, 0, 0, 0, 0, 0, 1, 0, 0, 1) and hist.total == 2
        [entry] = results_db.list_tests(c, None, 10)
        assert (entry.max_available, entry.submission_count) == (10, 2)
        assert c.execute("SELECT unanswered_results FROM test_statistics").fetchone() == (4,)


def test_item_analysis_is_computed_when_read_from_the_current_sums(conn):
    """Not stored by the refresh (migration 0010): a read reflects every committed marking, in one
    snapshot with its student count and data-quality totals."""
    assert results_db.get_item_analysis(conn, "t1") is None  # no statistics yet: unknown test
    mark(conn, [(SID[0], [scan("s1", 2, 2, answers(1, 1)), scan("s2", 1, 2, answers(1, 0))])])
    first = results_db.get_item_analysis(conn, "t1")
    assert (first.student_count, first.analysed_students, first.submission_count) == (2, 2, 1)
    with conn.transaction():  # a marking whose statistics are not refreshed (yet)
        results_db.stage_many(conn, [(SID[1], [TestResult(1, "s3", "t1", 2, 0, None, None, None,
                                                          AnswerSheet.of(answers(0, 0)))])])
        results_db.apply_markings(conn, [(SID[1], SID[1])])
    later = results_db.get_item_analysis(conn, "t1")
    assert (later.student_count, later.analysed_students, later.submission_count) == (3, 3, 2)
    assert [i["difficulty"] for i in later.items] == [pytest.approx(2 / 3), pytest.approx(1 / 3)]
    columns = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns"
                                          " WHERE table_name = 'test_statistics'")}
    assert not columns & {"items", "cronbach_alpha", "kr20", "analysed_students"}

"""Retracting a submission through the real pipeline (local queue engine, Azurite, PostgreSQL)."""
from __future__ import annotations

import json

import pytest

from shared.bootstrap import services
from shared.db.results import clear_derived
from shared.ops.replay import ReplayError, replay, reprocess
from shared.ops.retract import retract
from shared.vault.kek import LocalKeyFile
from tests.documents import make_document, make_large_document
from tests.pipeline_harness import pipeline_env

pytestmark = pytest.mark.integration


@pytest.fixture
def pipeline(monkeypatch, database_url, vault_storage, vault_table, tmp_path):
    with pipeline_env(monkeypatch, database_url, vault_storage, vault_table,
                      MARKR_VAULT_KEY_FILE=str(tmp_path / "kek.json")) as p:
        yield p


def submit(pipeline, results) -> str:
    answer = pipeline.post_document(make_document(results))
    assert answer.status == 202, answer.body
    pipeline.drain()
    return answer.json()["submissionId"]


def do_retract(sid, reason="wrong batch", erase=False):
    app = services()
    outcome = retract(sid, reason, erase=erase, pool=app.pool, vault=app.vault, store=app.store)
    return outcome.report


def rows(pipeline, test_id="T1"):
    return pipeline.sql("SELECT student_number, available, obtained FROM student_results WHERE test_id = %s"
                        " ORDER BY 1", test_id)


def stats(pipeline, test_id="T1"):
    answer = pipeline.http("GET", f"/api/results/{test_id}/aggregate")
    return answer.status, answer.json()


def state(pipeline, sid):
    return pipeline.http("GET", f"/api/submissions/{sid}").json()


def r(student, available, obtained, test_id="T1"):
    return {"student_number": student, "test_id": test_id, "available": available, "obtained": obtained}


def test_retracting_a_students_only_scan_removes_the_student(pipeline) -> None:
    a = submit(pipeline, [r("1", 20, 10), r("2", 20, 20)])
    submit(pipeline, [r("3", 20, 5)])
    assert stats(pipeline)[1]["count"] == 3
    report = do_retract(a)
    assert report["alreadyRetracted"] is False and report["testIds"] == ["T1"]
    assert (report["studentsRemoved"], report["studentsRecomputed"]) == (2, 0)
    assert rows(pipeline) == [("3", 20, 5)]
    status, body = stats(pipeline)  # refreshed before retract returned
    assert status == 200 and body["count"] == 1 and body["mean"] == 25.0
    got = state(pipeline, a)
    assert got["status"] == "retracted" and got["retractionReason"] == "wrong batch" and got["retractedAt"]
    assert pipeline.sql("SELECT count(*) FROM validated_results WHERE submission_id = %s", a) == [(0,)]
    assert services().vault.find(a).status["retractedAt"]


def test_retracting_one_of_two_rescans_falls_back_to_the_other(pipeline) -> None:
    first = submit(pipeline, [r("1", 10, 9), r("2", 10, 1)])
    second = submit(pipeline, [r("1", 20, 8)])
    assert rows(pipeline) == [("1", 20, 9), ("2", 10, 1)]  # max available and max obtained, independently
    report = do_retract(first)
    assert (report["studentsRemoved"], report["studentsRecomputed"]) == (1, 1)
    assert rows(pipeline) == [("1", 20, 8)]
    assert pipeline.sql("SELECT array_agg(submission_id) FROM student_submissions") == [([second],)]
    assert stats(pipeline)[1]["mean"] == 40.0


def test_a_test_left_without_students_has_no_statistics(pipeline) -> None:
    only = submit(pipeline, [r("1", 10, 5, test_id="T9")])
    submit(pipeline, [r("1", 10, 5)])
    assert [t["testId"] for t in pipeline.http("GET", "/api/tests").json()["tests"]] == ["T1", "T9"]
    do_retract(only)
    assert stats(pipeline, "T9")[0] == 404
    assert stats(pipeline, "T1")[0] == 200
    for view in ("histogram", "items", "students.csv"):
        answer = pipeline.http("GET", f"/api/results/T9/{view}")
        assert answer.status == 404 and answer.json()["error"]["code"] == "test-not-found", view
    assert [t["testId"] for t in pipeline.http("GET", "/api/tests").json()["tests"]] == ["T1"]
    for table in ("answers", "validated_results", "test_submissions"):
        assert pipeline.sql(f"SELECT count(*) FROM {table} WHERE submission_id = %s", only) == [(0,)], table
    for table in ("item_sums", "option_counts", "item_totals"):
        assert pipeline.sql(f"SELECT count(*) FROM {table} WHERE test_id = 'T9'") == [(0,)], table


KEY = "ABCD"


def scan(student: str, picks: str, test_id: str = "T1") -> dict:
    """A scan with one <answer> per letter of `picks` (KEY is right), its summary adding up."""
    obtained = sum(p == k for p, k in zip(picks, KEY, strict=True))
    answers = "".join(f'\t\t<answer question="{q + 1}" marks-available="1" marks-awarded="{int(p == KEY[q])}">'
                      f"{p}</answer>\n" for q, p in enumerate(picks))
    return {**r(student, len(KEY), obtained, test_id), "answers": 0, "extra": answers}


FIRST = [scan("1", "ABCD"), scan("2", "ABDD"), scan("3", "BBCA"), scan("4", "AACC")]
# Re-scans of 1 (lower: the first scan stays counted) and 2 (higher: this one counts), and a new student.
SECOND = [scan("1", "ABCC"), scan("2", "ABCD"), scan("5", "DDDD")]


def analytics(pipeline, test_id="T1"):
    views = {view: pipeline.http("GET", f"/api/results/{test_id}/{view}") for view in ("histogram", "items")}
    assert all(v.status == 200 for v in views.values()), {k: v.body for k, v in views.items()}
    entry = [{k: v for k, v in t.items() if k != "updatedAt"}
             for t in pipeline.http("GET", "/api/tests").json()["tests"]]
    csv_body = pipeline.http("GET", f"/api/results/{test_id}/students.csv").body
    return {"histogram": views["histogram"].json(), "items": views["items"].json(), "catalogue": entry,
            "csv": csv_body, "aggregate": stats(pipeline, test_id)}


@pytest.mark.parametrize("retracted", [0, 1])
def test_after_retracting_one_of_two_rescans_the_analysis_is_that_of_the_other_alone(pipeline, retracted) -> None:
    documents = [FIRST, SECOND]
    sids = [submit(pipeline, doc) for doc in documents]
    before = analytics(pipeline)
    do_retract(sids[retracted])
    after = analytics(pipeline)
    assert after != before
    remaining = documents[1 - retracted]
    with services().pool.connection() as conn:
        clear_derived(conn)
    submit(pipeline, remaining)  # a fresh import of only the remaining document
    fresh = analytics(pipeline)
    assert after == fresh
    assert after["items"]["studentCount"] == len(remaining) and after["items"]["dataQuality"]["submissions"] == 1


def test_retracting_twice_changes_nothing_the_second_time(pipeline) -> None:
    a = submit(pipeline, [r("1", 10, 9)])
    submit(pipeline, [r("1", 10, 3)])
    first = do_retract(a, reason="vendor error")
    before = (rows(pipeline), stats(pipeline))
    again = do_retract(a, reason="another reason")
    assert again["alreadyRetracted"] is True and again["reason"] == "vendor error"
    assert again["retractedAt"] == first["retractedAt"]
    assert (rows(pipeline), stats(pipeline)) == before
    assert state(pipeline, a)["retractionReason"] == "vendor error"


def test_retract_then_rebuild_and_reprocess_do_not_bring_it_back(pipeline, tmp_path) -> None:
    a = submit(pipeline, [r("1", 10, 9), r("2", 10, 4)])
    b = submit(pipeline, [r("1", 10, 5)])
    do_retract(a)
    expected = rows(pipeline)
    assert expected == [("1", 10, 5)]
    app = services()
    with pytest.raises(ReplayError, match="retracted"):
        replay([a], vault=app.vault, bus=app.bus, store=app.store)
    with app.pool.connection() as conn:
        clear_derived(conn)  # reprocess --all --rebuild
    report = reprocess(vault=app.vault, bus=app.bus, store=app.store, checkpoint=tmp_path / "cp.jsonl", restart=True)
    assert list(report.runs) == [b]
    pipeline.drain()
    assert rows(pipeline) == expected
    assert state(pipeline, a)["status"] == "retracted"
    # Even a validation message of the retracted submission still in flight contributes nothing.
    from shared.ops.replay import start_runs

    start_runs([app.vault.find(a)], app.bus, app.store)
    pipeline.drain()
    assert rows(pipeline) == expected
    assert state(pipeline, a)["status"] == "retracted"


def test_erase_deletes_the_vault_entry_and_keeps_a_tombstone(pipeline) -> None:
    a = submit(pipeline, [r("1", 10, 9)])
    record = services().vault.find(a)
    sha, source = record.sha256, record.source
    report = do_retract(a, reason="data-protection request", erase=True)
    assert report["erased"]["sha256"] == sha and report["erased"]["erasedAt"]
    vault = services().vault
    assert vault.find(a) is None and vault.get(source, a) is None
    tomb = vault.table.get_entity(source, a)
    assert tomb["Tombstone"] is True and tomb["Sha256"] == sha and tomb["Reason"] == "data-protection request"
    assert "Body" not in tomb
    assert pipeline.sql("SELECT sha256, erased_at IS NOT NULL, reason FROM retractions") == [
        (sha, True, "data-protection request")]
    assert rows(pipeline) == [] and stats(pipeline)[0] == 404
    assert state(pipeline, a)["status"] == "retracted"
    # Erasing again (or a retry after a failure) is harmless.
    assert do_retract(a, erase=True)["alreadyRetracted"] is True


def test_the_ops_route(pipeline) -> None:
    a = submit(pipeline, [r("1", 10, 9)])
    path = f"/api/ops/submissions/{a}/retract"
    assert pipeline.http("POST", path, b'{"reason": "  "}').json()["error"]["code"] == "reason-required"
    assert pipeline.http("POST", path, b"not json").status == 400
    assert pipeline.http("POST", "/api/ops/submissions/nope/retract", b'{"reason": "x"}').status == 400
    unknown = "01JD3Y8X6J6ZQ8K8N7W4ZK3V2S"
    assert pipeline.http("POST", f"/api/ops/submissions/{unknown}/retract", b'{"reason": "x"}').status == 404
    answer = pipeline.http("POST", path, json.dumps({"reason": "wrong batch"}).encode())
    assert answer.status == 200, answer.body
    assert answer.json()["status"] == "retracted" and answer.json()["studentsRemoved"] == 1
    assert pipeline.http("POST", path, b'{"reason": "again"}').json()["alreadyRetracted"] is True


def test_replay_and_reprocess_work_across_a_key_rotation(pipeline, tmp_path) -> None:
    small = submit(pipeline, [r("1", 10, 9)])
    answer = pipeline.post_document(b"".join(make_large_document(4000, seed=3)))  # over the inline size: chunked
    pipeline.drain()
    big = answer.json()["submissionId"]
    app = services()
    assert app.vault.find(big).chunk_count > 0
    old = app.kek.current_key_id()
    LocalKeyFile(app.kek.path).rotate()
    before = rows(pipeline)
    report = reprocess(vault=app.vault, bus=app.bus, store=app.store, checkpoint=tmp_path / "cp.jsonl", restart=True)
    assert set(report.runs) == {small, big}
    pipeline.drain()
    assert {state(pipeline, s)["status"] for s in (small, big)} == {"completed"}
    from shared.ops.vault_keys import rewrap_all

    assert rewrap_all(app.vault).changed == 2
    assert app.vault.find(small).envelope.key_id != old
    replay([small, big], vault=app.vault, bus=app.bus, store=app.store)
    pipeline.drain()
    assert {state(pipeline, s)["status"] for s in (small, big)} == {"completed"}
    assert rows(pipeline) == before


def test_rows_staged_while_a_retraction_ran_are_never_marked(database_url) -> None:
    """A validation that staged its rows while the retraction ran (so its delete missed them) and a
    marking after it: the marking drops them instead of bringing the submission back."""
    import psycopg

    from shared.db import results as results_db
    from shared.domain.results_document import TestResult

    sid = "01JA0000000000000000000009"
    with psycopg.connect(database_url, autocommit=True) as conn:
        results_db.stage_validated(conn, sid, [TestResult(1, "s1", "t1", 10, 5, None, None, None)])
        conn.execute("INSERT INTO retractions (submission_id, source, reason, retracted_at)"
                     " VALUES (%s, 'v', 'wrong batch', now())", (sid,))
        with pytest.raises(results_db.NothingToMarkError):
            results_db.apply_marking(conn, sid, sid)
        for table in ("validated_results", "student_results", "applied_markings"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table

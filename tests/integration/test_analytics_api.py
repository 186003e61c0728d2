"""The analysts' read API through the registered functions, on the real engine, Azurite and PostgreSQL."""
import csv
import io

import pytest

from tests.pipeline_harness import pipeline_env

SAMPLE_BINS = [0, 0, 0, 6, 28, 28, 14, 5, 0, 0]


@pytest.fixture
def pipeline(monkeypatch, database_url, vault_storage, vault_table):
    with pipeline_env(monkeypatch, database_url, vault_storage, vault_table, MARKR_MAX_BODY_BYTES=200_000) as p:
        yield p


def get(pipeline, path, headers=None):
    """Every request of this module goes through here (one place to add headers such as Authorization)."""
    return pipeline.http("GET", path, headers=headers or {})


def submit(pipeline, body):
    answer = pipeline.post_document(body)
    assert answer.status == 202, answer.body
    pipeline.drain()
    return answer.json()["submissionId"]


def test_sample_file_histogram_catalogue_items_and_csv(pipeline, sample_results_xml):
    sid = submit(pipeline, sample_results_xml)
    hist = get(pipeline, "/api/results/9863/histogram")
    assert hist.status == 200, hist.body
    body = hist.json()
    assert [b["count"] for b in body["bins"]] == SAMPLE_BINS and body["total"] == 81
    assert [(b["lowerPct"], b["upperPct"]) for b in body["bins"]] == [(10 * i, 10 * i + 10) for i in range(10)]

    tests = get(pipeline, "/api/tests").json()
    assert tests["continuationToken"] is None
    [entry] = tests["tests"]
    assert {k: v for k, v in entry.items() if k != "updatedAt"} == {
        "testId": "9863", "studentCount": 81, "maxAvailable": 20, "submissionCount": 1}

    items = get(pipeline, "/api/results/9863/items").json()
    assert items["studentCount"] == 81 and items["analysedStudents"] == 81 and items["questionCount"] == 20
    assert [i["question"] for i in items["items"]] == [str(q) for q in range(20)]
    assert items["dataQuality"]["submissions"] == 1
    assert items["kr20"] == items["cronbachAlpha"]

    csv_answer = get(pipeline, "/api/results/9863/students.csv")
    assert csv_answer.status == 200 and "students-9863.csv" in csv_answer.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(csv_answer.body.decode())))
    assert len(rows) == 81 and list(rows[0]) == ["student_number", "available", "obtained", "percent", "submissions"]
    assert {r["submissions"] for r in rows} == {"1"}
    assert get(pipeline, f"/api/submissions/{sid}").status == 200


def test_empty_catalogue_and_unknown_test(pipeline):
    assert get(pipeline, "/api/tests").json() == {"tests": [], "continuationToken": None}
    for view in ("histogram", "items", "students.csv", "aggregate"):
        answer = get(pipeline, f"/api/results/nope/{view}")
        assert answer.status == 404 and answer.json()["error"]["code"] == "test-not-found", view


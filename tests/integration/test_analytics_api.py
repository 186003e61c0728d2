"""The analysts' read API through the registered functions, on the real engine, Azurite and PostgreSQL."""
import csv
import io

import pytest

from shared.auth import Role
from tests import auth
from tests.documents import make_document
from tests.pipeline_harness import pipeline_env

SAMPLE_BINS = [0, 0, 0, 6, 28, 28, 14, 5, 0, 0]


@pytest.fixture
def pipeline(monkeypatch, database_url, vault_storage, vault_table):
    with pipeline_env(monkeypatch, database_url, vault_storage, vault_table, MARKR_MAX_BODY_BYTES=200_000) as p:
        yield p


def get(pipeline, path, headers=None):
    """Every request of this module goes through here, with an analyst's token unless `headers` bring
    credentials of their own."""
    return pipeline.http("GET", path, headers=auth.with_auth("GET", path, headers))


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



READ_ROUTES = ("/api/tests", "/api/results/9863/histogram", "/api/results/9863/items",
               "/api/results/9863/students.csv", "/api/results/9863/aggregate")


def test_the_read_routes_refuse_a_missing_token_and_a_vendors_token(pipeline, sample_results_xml):
    submit(pipeline, sample_results_xml)
    for path in READ_ROUTES:
        missing = get(pipeline, path, headers={"Authorization": ""})
        assert missing.status == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer"), path
        assert missing.json()["error"]["code"] in ("unauthorized", "invalid-token"), path
        vendor = get(pipeline, path, headers=auth.bearer(Role.SUBMIT))
        assert vendor.status == 403, path
        assert vendor.json()["error"] == {"code": "forbidden", "message": vendor.json()["error"]["message"],
                                          "requiredRoles": ["Results.Read"]}, path
        assert get(pipeline, path).status == 200, path


def test_students_csv_cells_cannot_become_spreadsheet_formulas(pipeline):
    numbers = ["=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)", "0042"]
    submit(pipeline, make_document([{"student_number": n, "test_id": "T1", "available": 4, "obtained": 2}
                                    for n in numbers]))
    rows = list(csv.DictReader(io.StringIO(get(pipeline, "/api/results/T1/students.csv").body.decode())))
    written = sorted(row["student_number"] for row in rows)
    assert written == sorted(["'=HYPERLINK(\"http://x\")", "'+1", "'-2", "'@SUM(A1)", "0042"])
    assert all(row["obtained"] == "2" for row in rows)

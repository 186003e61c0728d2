"""The analysts' read use cases and the HTTP edge's caching, on in-memory ports."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import azure.functions as func
import pytest
from psycopg_pool import PoolTimeout

from functions.http import conditional, respond, serve_read
from shared.pipeline.analytics import catalogue, decode_token, histogram_of, items_of, students_csv_of
from shared.pipeline.ports import CatalogueEntry, Histogram, ItemAnalysis
from tests.fakes import FakeResultsReader

AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def entry(test_id: str) -> CatalogueEntry:
    return CatalogueEntry(test_id, 3, 20, 1, AT)


def answer(outcome) -> tuple[int, object]:
    resp = respond(outcome)
    return resp.status_code, json.loads(resp.get_body())


def request(headers=None) -> func.HttpRequest:
    return func.HttpRequest("GET", "http://127.0.0.1/api/x", headers=headers or {}, body=b"")


def test_the_catalogue_pages_by_test_id_with_an_opaque_token() -> None:
    reader = FakeResultsReader([entry(t) for t in ("b", "a", "d", "c", "e")])
    status, first = answer(catalogue("2", None, reader=reader))
    assert status == 200 and [t["testId"] for t in first["tests"]] == ["a", "b"]
    assert first["tests"][0] == {"testId": "a", "studentCount": 3, "maxAvailable": 20, "submissionCount": 1,
                                 "updatedAt": "2026-01-02T03:04:05+00:00"}
    seen = [t["testId"] for t in first["tests"]]
    token = first["continuationToken"]
    while token:
        assert "b" not in token  # opaque, not the raw test id
        _, page = answer(catalogue("2", token, reader=reader))
        seen += [t["testId"] for t in page["tests"]]
        token = page["continuationToken"]
    assert seen == ["a", "b", "c", "d", "e"]


def test_the_last_full_page_has_no_token_and_no_tests_is_an_empty_200() -> None:
    reader = FakeResultsReader([entry("a"), entry("b")])
    assert answer(catalogue("2", None, reader=reader))[1]["continuationToken"] is None
    assert answer(catalogue(None, None, reader=FakeResultsReader())) == (200, {"tests": [], "continuationToken": None})
    assert reader.pages == [(None, 3)]  # one extra row tells whether there is a next page


def test_default_page_size() -> None:
    reader = FakeResultsReader()
    catalogue(None, None, reader=reader)
    catalogue("", None, reader=reader)
    assert reader.pages == [(None, 101), (None, 101)]


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "x", "1.5", "١٢"])
def test_a_bad_limit_is_a_400(limit) -> None:
    status, body = answer(catalogue(limit, None, reader=FakeResultsReader()))
    assert (status, body["error"]["code"]) == (400, "invalid-limit")


@pytest.mark.parametrize("token", ["!!!", "bm90IGpzb24", "WzFd", "eyJhZnRlciI6IDF9"])
def test_a_token_this_api_did_not_give_is_a_400(token) -> None:
    assert decode_token(token) is None
    status, body = answer(catalogue(None, token, reader=FakeResultsReader()))
    assert (status, body["error"]["code"]) == (400, "invalid-continuation-token")


def test_histogram_has_ten_bins_the_last_closed() -> None:
    counts = (0, 0, 0, 6, 28, 28, 14, 5, 0, 0)
    reader = FakeResultsReader(histograms={"9863": Histogram("9863", counts, 81)})
    status, body = answer(histogram_of("9863", reader=reader))
    assert status == 200 and body["testId"] == "9863" and body["total"] == 81
    assert body["bins"][0] == {"lowerPct": 0, "upperPct": 10, "count": 0}
    assert body["bins"][-1] == {"lowerPct": 90, "upperPct": 100, "count": 0}
    assert [b["count"] for b in body["bins"]] == list(counts)


def test_items_answer_the_stored_analysis_and_data_quality() -> None:
    item = {"question": "1", "answering": 2, "difficulty": 0.5, "discrimination": None, "flagged": False,
            "options": [{"option": "A", "count": 1, "frequency": 0.5, "flagged": False}]}
    reader = FakeResultsReader(items={"t": ItemAnalysis("t", 3, 2, 0.7, None, [item], 4, 1, 1, 0)})
    status, body = answer(items_of("t", reader=reader))
    assert status == 200
    assert body == {"testId": "t", "studentCount": 3, "analysedStudents": 2, "questionCount": 1,
                    "cronbachAlpha": 0.7, "kr20": None, "items": [item],
                    "dataQuality": {"submissions": 4, "mismatchedResults": 1, "mismatchedSubmissions": 1,
                                    "unansweredResults": 0}}


@pytest.mark.parametrize("use_case", [histogram_of, items_of, students_csv_of])
def test_unknown_and_invalid_test_ids(use_case) -> None:
    status, body = answer(use_case("nope", reader=FakeResultsReader()))
    assert (status, body["error"]["code"]) == (404, "test-not-found")
    status, body = answer(use_case("a\u200bb", reader=FakeResultsReader()))
    assert (status, body["error"]["code"]) == (400, "invalid-test-id")


def test_the_csv_is_an_attachment_named_after_the_test() -> None:
    reader = FakeResultsReader(csv={"9 8\"63": b"student_number\n"})
    resp = respond(students_csv_of("9 8\"63", reader=reader))
    assert resp.status_code == 200 and resp.mimetype == "text/csv" and resp.get_body() == b"student_number\n"
    disposition = resp.headers["Content-Disposition"]
    assert 'filename="students-9_8_63.csv"' in disposition and "filename*=UTF-8''students-9%208%2263.csv" in disposition


def test_every_200_read_gets_an_etag_and_revalidation_answers_304() -> None:
    reader = FakeResultsReader([entry("a")])
    first = serve_read(request(), lambda: catalogue(None, None, reader=reader))
    etag = first.headers["ETag"]
    assert first.status_code == 200 and etag.startswith('"') and first.headers["Cache-Control"] == "private, no-cache"
    assert first.mimetype == "application/json"
    for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = serve_read(request({"If-None-Match": sent}), lambda: catalogue(None, None, reader=reader))
        assert again.status_code == 304 and again.get_body() == b"" and again.headers["ETag"] == etag, sent
    reader.tests.append(entry("b"))  # the content changed: so does the tag
    changed = serve_read(request({"If-None-Match": etag}), lambda: catalogue(None, None, reader=reader))
    assert changed.status_code == 200 and changed.headers["ETag"] != etag


def test_errors_carry_no_etag_and_an_outage_is_a_503() -> None:
    missing = serve_read(request({"If-None-Match": "*"}), lambda: histogram_of("x", reader=FakeResultsReader()))
    assert missing.status_code == 404 and "ETag" not in missing.headers
    reader = FakeResultsReader()
    reader.fail = PoolTimeout("no connection")
    down = serve_read(request(), lambda: catalogue(None, None, reader=reader))
    assert down.status_code == 503 and down.headers["Retry-After"] and "ETag" not in down.headers


def test_conditional_keeps_the_response_headers() -> None:
    resp = func.HttpResponse(b"a,b\n", headers={"Content-Disposition": "attachment"}, mimetype="text/csv")
    out = conditional(request(), resp, cache_control="public, max-age=300")
    assert out.headers["Content-Disposition"] == "attachment" and out.headers["Cache-Control"] == "public, max-age=300"
    assert out.mimetype == "text/csv"

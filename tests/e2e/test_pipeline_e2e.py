"""The whole pipeline over real HTTP, through `python -m devhost` running function_app.py."""
import json
import time
import urllib.error
import urllib.request
from datetime import timedelta

import numpy as np
import psycopg
import pytest

from devhost.queuesfile import write_queues
from devhost.testing import start_host_process
from shared.bus.queues import queue_definitions
from shared.domain.results_document import parse_results_document
from shared.domain.scoring_policy import best_marks
from tests.auth import with_auth
from tests.documents import make_document

EXPECTED_SAMPLE = {"mean": 50.80246913580247, "stddev": 9.92119535943923, "min": 30.0, "max": 75.0,
                   "p25": 45.0, "p50": 50.0, "p75": 55.0, "count": 81}


def request(base, method, path, body=None, headers=None, timeout=60):
    base = base.removesuffix("/api")  # the host's base_url includes the route prefix
    req = urllib.request.Request(base + path, data=body, method=method, headers=with_auth(method, path, headers))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read() or b"null")


def post(base, body, content_type="text/xml+markr", respond_async=False):
    headers = {"Content-Type": content_type}
    if respond_async:
        headers["Prefer"] = "respond-async"
    return request(base, "POST", "/api/import", body, headers)


def wait_status(base, sid, wanted=("completed", "rejected"), timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, body = request(base, "GET", f"/api/submissions/{sid}")
        if status == 200 and body["status"] in wanted:
            return body
        time.sleep(0.1)
    raise AssertionError(f"submission {sid} did not reach {wanted}: {body}")


@pytest.fixture
def host_env(database_url, vault_storage, vault_table):
    return {"MARKR_DATABASE_URL": database_url, "VaultStorage": vault_storage, "MARKR_VAULT_TABLE": vault_table,
            "MARKR_BUS": "local", "MARKR_IMPORT_WAIT_SECONDS": "60", "MARKR_MAX_BODY_BYTES": "1000000"}


@pytest.fixture
def host(host_env):
    process = start_host_process(host_env).wait_ready()
    yield process
    process.close()


pytestmark = pytest.mark.e2e


def test_sample_file_legacy_answer_and_aggregate(host, sample_results_xml):
    status, headers, body = post(host.base_url, sample_results_xml)
    assert status == 201, body
    assert body["status"] == "completed" and body["results"] == 100 and body["testIds"] == ["9863"]
    assert headers["Location"] == f"/api/submissions/{body['submissionId']}"
    # Never stale: the very next GET reflects the import that answered 201.
    status, _, stats = request(host.base_url, "GET", "/api/results/9863/aggregate")
    assert status == 200
    assert stats.keys() == EXPECTED_SAMPLE.keys()
    for key, value in EXPECTED_SAMPLE.items():
        assert stats[key] == pytest.approx(value, abs=1e-9), key
    assert isinstance(stats["count"], int)


def test_rejected_document_gets_400_with_reasons(host):
    doc = make_document([{"student_number": "1", "test_id": "t", "available": 10, "obtained": 5},
                         {"student_number": "2", "test_id": "t", "available": 10, "obtained": 12}])
    status, headers, body = post(host.base_url, doc)
    assert status == 400
    assert body["status"] == "rejected"
    assert [(e["code"], e["result"], e["field"]) for e in body["errors"]] == [
        ("out-of-range", 2, "summary-marks/@obtained")]
    assert request(host.base_url, "GET", "/api/results/t/aggregate")[0] == 404


def test_http_errors_are_json(host):
    status, _, body = post(host.base_url, b"<mcq-test-results/>", content_type="application/xml")
    assert (status, body["error"]["code"]) == (415, "unsupported-media-type")
    status, _, body = post(host.base_url, b"x" * 1_000_001)
    assert (status, body["error"]["code"]) == (413, "body-too-large")
    status, _, body = post(host.base_url, b"")
    assert (status, body["error"]["code"]) == (400, "empty-body")
    status, _, body = request(host.base_url, "GET", "/api/results/unknown/aggregate")
    assert (status, body["error"]["code"]) == (404, "test-not-found")


def test_respond_async_then_status(host):
    doc = make_document([{"student_number": "007", "test_id": "a", "available": 4, "obtained": 3}])
    status, headers, body = post(host.base_url, doc, content_type="text/xml+markr; charset=utf-8",
                                 respond_async=True)
    assert status == 202 and body["status"] == "received"
    final = wait_status(host.base_url, body["submissionId"])
    assert final["status"] == "completed" and final["testIds"] == ["a"] and final["results"] == 1
    assert final["receivedAt"] and final["validatedAt"] and final["markedAt"] and final["completedAt"]
    # One search for the submission id shows its whole path through the stages.
    path = [line for line in host.log().splitlines() if body["submissionId"] in line]
    for stage in ("receiver", "validator"):  # the validator marks and aggregates, too
        assert any(f"[{stage} " in line for line in path), stage
    assert any("[validator " in line and "marked 1 submission(s)" in line for line in path)
    assert any("[validator " in line and "statistics of 1 test(s)" in line for line in path)


@pytest.mark.slow
def test_restart_of_the_host_mid_pipeline_loses_nothing(host_env, database_url, tmp_path):
    """SIGKILL the host while documents are in flight; after a restart every one completes.

    Messages the killed host had locked come back when their lock runs out (as on Service Bus), so
    the queues get a 3 s lock here instead of 5 minutes.
    """
    short_locks = tmp_path / "queues.json"
    write_queues(short_locks, {name: q.with_overrides(lock_duration=timedelta(seconds=3))
                               for name, q in queue_definitions().items()})
    rng = np.random.default_rng(7)
    docs = []
    for _ in range(12):
        rows = []
        for _ in range(int(rng.integers(5, 40))):
            available = int(rng.integers(1, 30))
            rows.append({"student_number": f"{int(rng.integers(0, 50)):03d}", "test_id": f"T{int(rng.integers(0, 3))}",
                         "available": available, "obtained": int(rng.integers(0, available + 1))})
        docs.append(make_document(rows))
    first = start_host_process(host_env, queues_file=short_locks).wait_ready()
    sids = [post(first.base_url, doc, respond_async=True)[2]["submissionId"] for doc in docs]
    first.kill()
    second = start_host_process(host_env, queues_file=short_locks).wait_ready()
    try:
        for sid in sids:
            assert wait_status(second.base_url, sid, timeout=120)["status"] == "completed"
        expected = best_marks(r for doc in docs for r in parse_results_document(doc).results)
        with psycopg.connect(database_url) as conn:
            rows = conn.execute("SELECT test_id, student_number, available, obtained FROM student_results").fetchall()
        assert {(t, s): (a, o) for t, s, a, o in rows} == {k: (v.available, v.obtained) for k, v in expected.items()}
        for test_id in {t for t, _ in expected}:
            pct = np.array([100.0 * v.obtained / v.available for (t, _), v in expected.items() if t == test_id])
            _, _, stats = request(second.base_url, "GET", f"/api/results/{test_id}/aggregate")
            assert stats["count"] == len(pct)
            assert stats["mean"] == pytest.approx(pct.mean(), abs=1e-9)
    finally:
        second.close()

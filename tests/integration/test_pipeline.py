"""The pipeline through its registered functions, on the real engine, vault (Azurite) and PostgreSQL."""

import json

import pytest

from shared.bus.queues import AGGREGATION, MARKING, VALIDATION
from shared.pipeline import messages
from tests.auth import TEST_VENDOR
from tests.documents import make_document
from tests.pipeline_harness import pipeline_env


@pytest.fixture
def pipeline(monkeypatch, database_url, vault_storage, vault_table):
    with pipeline_env(monkeypatch, database_url, vault_storage, vault_table, MARKR_MAX_BODY_BYTES=200_000) as p:
        yield p


def submit(pipeline, results, **kw):
    answer = pipeline.post_document(make_document(results, **kw))
    assert answer.status == 202, answer.body
    sid = answer.json()["submissionId"]
    pipeline.drain()
    return sid


def status(pipeline, sid):
    answer = pipeline.http("GET", f"/api/submissions/{sid}")
    assert answer.status == 200, answer.body
    return answer.json()


def aggregate(pipeline, test_id):
    return pipeline.http("GET", f"/api/results/{test_id}/aggregate")


def result_rows(pipeline):
    return pipeline.sql("SELECT test_id, student_number, available, obtained FROM student_results ORDER BY 1, 2")


def test_sample_document_end_to_end(pipeline, sample_results_xml):
    answer = pipeline.post_document(sample_results_xml)
    sid = answer.json()["submissionId"]
    assert answer.headers["Location"] == f"/api/submissions/{sid}"
    pipeline.drain()
    state = status(pipeline, sid)
    assert (state["status"], state["results"], state["testIds"]) == ("completed", 100, ["9863"])
    stats = aggregate(pipeline, "9863").json()
    expected = {"mean": 50.80246913580247, "stddev": 9.92119535943923, "min": 30.0, "max": 75.0,
                "p25": 45.0, "p50": 50.0, "p75": 55.0, "count": 81}
    assert stats.keys() == expected.keys()
    for key, value in expected.items():
        assert stats[key] == pytest.approx(value, abs=1e-9), key
    # Lineage: every stored row names the submission it came from.
    assert pipeline.sql("SELECT DISTINCT submission_id FROM student_submissions") == [(sid,)]


def test_rescan_across_documents(pipeline):
    first = submit(pipeline, [{"student_number": "1", "test_id": "t", "available": 10, "obtained": 9}])
    second = submit(pipeline, [{"student_number": "1", "test_id": "t", "available": 20, "obtained": 8}])
    assert aggregate(pipeline, "t").json()["mean"] == pytest.approx(45.0)
    assert pipeline.sql("SELECT array_agg(submission_id ORDER BY submission_id) FROM student_submissions") == [([first, second],)]


def test_rescan_within_one_document_and_leading_zeros(pipeline):
    submit(pipeline, [
        {"student_number": "002299", "test_id": "t", "available": 10, "obtained": 4},
        {"student_number": "2299", "test_id": "t", "available": 10, "obtained": 10},
        {"student_number": "002299", "test_id": "t", "available": 10, "obtained": 6},
    ])
    assert result_rows(pipeline) == [("t", "002299", 10, 6), ("t", "2299", 10, 10)]
    assert aggregate(pipeline, "t").json()["count"] == 2


def test_a_score_of_zero(pipeline):
    submit(pipeline, [{"student_number": "1", "test_id": "z", "available": 10, "obtained": 0}])
    assert aggregate(pipeline, "z").json() == {"mean": 0.0, "stddev": 0.0, "min": 0.0, "max": 0.0,
                                               "p25": 0.0, "p50": 0.0, "p75": 0.0, "count": 1}


GOOD = {"student_number": "1", "test_id": "t", "available": 10, "obtained": 5}
REJECTIONS = {
    "missing student-number": ([{**GOOD, "student_number": None}], "missing-field", "student-number"),
    "empty student-number": ([{**GOOD, "student_number": "  "}], "empty-field", "student-number"),
    "missing test-id": ([{**GOOD, "test_id": None}], "missing-field", "test-id"),
    "empty test-id": ([{**GOOD, "test_id": ""}], "empty-field", "test-id"),
    "missing summary-marks": ([{**GOOD, "summary": False}], "missing-field", "summary-marks"),
    "fractional available": ([{**GOOD, "available": "10.5"}], "not-a-whole-number", "summary-marks/@available"),
    "text obtained": ([{**GOOD, "obtained": "lots"}], "not-a-whole-number", "summary-marks/@obtained"),
    "available below one": ([{**GOOD, "available": 0, "obtained": 0}], "out-of-range", "summary-marks/@available"),
    "negative obtained": ([{**GOOD, "obtained": -1}], "out-of-range", "summary-marks/@obtained"),
    "obtained above available": ([{**GOOD, "obtained": 11}], "out-of-range", "summary-marks/@obtained"),
    "last result invalid": ([GOOD, GOOD, {**GOOD, "obtained": 99}], "out-of-range", "summary-marks/@obtained"),
}


@pytest.mark.parametrize("name", REJECTIONS)
def test_every_rejection_rule_stores_nothing(pipeline, name):
    results, code, field = REJECTIONS[name]
    sid = submit(pipeline, results)
    state = status(pipeline, sid)
    assert state["status"] == "rejected"
    assert any(e["code"] == code and e.get("field") == field and e.get("result") == len(results)
               for e in state["errors"]), state["errors"]
    assert result_rows(pipeline) == []
    assert pipeline.sql("SELECT count(*) FROM validated_results") == [(0,)]
    assert aggregate(pipeline, "t").status == 404


@pytest.mark.parametrize("body, code", [
    (b"<mcq-test-results><mcq-test-result>", "not-well-formed"),
    (b"\x00\xff garbage", "not-well-formed"),
    (b"<html><body>hello</body></html>", "wrong-root-element"),
    (b"<mcq-test-results></mcq-test-results>", "no-results"),
    (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
     b"<mcq-test-results>&lol2;</mcq-test-results>", "doctype-forbidden"),
    (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
     b"<mcq-test-results><mcq-test-result><student-number>&xxe;</student-number></mcq-test-result></mcq-test-results>",
     "doctype-forbidden"),
])
def test_documents_that_are_not_results_are_rejected_and_vaulted(pipeline, body, code):
    answer = pipeline.post_document(body)
    sid = answer.json()["submissionId"]
    pipeline.drain()
    state = status(pipeline, sid)
    assert state["status"] == "rejected"
    assert [e["code"] for e in state["errors"]] == [code]
    assert result_rows(pipeline) == []
    # The raw bytes are kept unchanged, even for a malformed document.
    from shared.bootstrap import services
    record = services().vault.find(sid)
    assert services().vault.read_body(record) == body


@pytest.mark.parametrize("content_type, expected", [
    ("text/xml+markr", 202),
    ("Text/XML+Markr; charset=utf-8", 202),
    ("text/xml", 415),
    ("application/json", 415),
    (None, 415),
])
def test_content_type(pipeline, content_type, expected):
    answer = pipeline.post_document(make_document([GOOD]), content_type=content_type)
    assert answer.status == expected
    if expected == 415:
        assert answer.json()["error"]["code"] == "unsupported-media-type"
        assert pipeline.peek(VALIDATION) == []


def test_empty_and_oversized_bodies_are_refused_and_not_stored(pipeline):
    empty = pipeline.post_document(b"")
    assert (empty.status, empty.json()["error"]["code"]) == (400, "empty-body")
    big = pipeline.post_document(b"<" + b"x" * 200_001)
    assert (big.status, big.json()["error"]["code"]) == (413, "body-too-large")
    from shared.bootstrap import services
    assert list(services().vault.list()) == []


def test_redelivery_of_every_consumers_message_changes_nothing(pipeline):
    doc = make_document([GOOD, {**GOOD, "student_number": "2", "obtained": 7}, {**GOOD, "test_id": "u"}])
    sid = pipeline.post_document(doc).json()["submissionId"]
    pipeline.drain()

    def snapshot():
        return (result_rows(pipeline), pipeline.sql("SELECT * FROM test_statistics ORDER BY 1"),
                pipeline.sql("SELECT * FROM tests ORDER BY 1"), status(pipeline, sid))

    before = snapshot()
    assert before[-1]["status"] == "completed"
    # The validator marked and aggregated in place; marking and aggregation messages exist only
    # when it hands a submission over. Deliver such hand-overs too: they change nothing either.
    validation = next(m for q, m in pipeline.delivered if q == VALIDATION)
    ref = messages.ref_of(json.loads(validation.body))
    versions = {t: v for t, v in pipeline.sql("SELECT test_id, results_version FROM tests")}
    pipeline.engine.send(MARKING, messages.marking(ref))
    pipeline.engine.send(AGGREGATION, messages.aggregation(ref, versions))
    assert pipeline.drain() >= 2 and snapshot() == before
    for queue in (VALIDATION, MARKING, AGGREGATION):
        deliveries = [m for q, m in pipeline.delivered if q == queue]
        assert deliveries, queue
        for message in deliveries:
            pipeline.redeliver(queue, message)
        pipeline.drain()
        assert snapshot() == before, queue


def test_an_invalid_message_is_dead_lettered_at_once_without_retries(pipeline):
    from shared.bus.port import OutgoingMessage
    pipeline.engine.send(MARKING, OutgoingMessage(body=b'{"nonsense": true}', message_id="junk"))
    assert pipeline.drain() == 1  # delivered once and dead-lettered: no retries burnt
    [dead] = pipeline.engine.peek(MARKING, dead_letter=True)
    assert (dead.message_id, dead.delivery_count, dead.dead_letter_reason) == ("junk", 1, "MessageSchemaInvalid")
    assert "does not match its schema" in dead.dead_letter_error_description
    assert pipeline.peek(MARKING) == []


def test_unknown_test_and_unknown_submission(pipeline):
    assert aggregate(pipeline, "nope").status == 404
    assert aggregate(pipeline, "nope").json()["error"]["code"] == "test-not-found"
    missing = pipeline.http("GET", "/api/submissions/01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert (missing.status, missing.json()["error"]["code"]) == (404, "submission-not-found")
    bad = pipeline.http("GET", "/api/submissions/not-an-id")
    assert (bad.status, bad.json()["error"]["code"]) == (400, "invalid-submission-id")


def test_each_stage_records_its_status_and_the_vault_keeps_only_the_document(pipeline):
    sid = submit(pipeline, [GOOD])
    state = status(pipeline, sid)
    assert state["status"] == "completed" and state["results"] == 1
    assert state["validatedAt"] <= state["markedAt"] <= state["completedAt"]
    rejected = status(pipeline, submit(pipeline, [{**GOOD, "obtained": 99}]))
    assert rejected["status"] == "rejected" and rejected["errors"][0]["code"] == "out-of-range"
    assert rejected["errorCount"] == 1
    from shared.bootstrap import services
    assert services().vault.find(sid).status == {}  # no per-stage writes to the vault: nothing read them


def test_a_damaged_vault_entry_fails_permanently_without_retries(pipeline):
    from azure.data.tables import UpdateMode

    from shared.bootstrap import services
    from shared.ops.replay import replay

    sid = pipeline.post_document(make_document([GOOD])).json()["submissionId"]
    table = services().vault.table
    head = table.get_entity(TEST_VENDOR, sid)
    table.update_entity({"PartitionKey": TEST_VENDOR, "RowKey": sid, "Body": b"\x1f\x8b damaged"},
                        mode=UpdateMode.MERGE)
    assert head["ChunkCount"] == 0  # a small body lives on the head
    pipeline.drain()
    # The validation message carried its own checked copy of the small body: the run completes.
    assert status(pipeline, sid)["status"] == "completed"
    # A replay reads the vault, finds the damage, and fails at once.
    pipeline.delivered.clear()
    replay([sid], vault=services().vault, bus=services().bus, store=services().store)
    pipeline.drain()
    validations = [m for q, m in pipeline.delivered if q == VALIDATION]
    assert [m.delivery_count for m in validations] == [1]  # no retries burnt
    state = status(pipeline, sid)
    assert state["status"] == "failed"
    assert (state["failure"]["stage"], state["failure"]["reason"]) == ("validation", "vault-entry-corrupt")

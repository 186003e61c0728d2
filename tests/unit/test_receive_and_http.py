"""The receiver's use case and the HTTP edge, on in-memory ports and real azure.functions objects."""
from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import azure.functions as func
import pytest
from psycopg_pool import PoolTimeout

from functions.http import respond, serve
from shared.domain.submission_status import Status, SubmissionStatus
from shared.pipeline import health
from shared.pipeline.outcomes import ImportPending, ImportSettled, Problem
from shared.pipeline.queries import statistics_of, submission_status
from shared.pipeline.receive import ImportRequest, import_document
from tests.fakes import FakeBus, FakeStore, FakeVault

LIMIT = 1000


def post(body=b"<mcq-test-results/>", *, content_type="text/xml+markr", respond_async=True, vault=None, bus=None,
         wait=lambda sid, run, timeout: None, wait_seconds=5.0):
    vault, bus = vault or FakeVault(), bus or FakeBus()
    return import_document(ImportRequest(content_type, body, respond_async), vault=vault, bus=bus, source="default",
                           max_body_bytes=LIMIT, wait_seconds=wait_seconds, wait_for_settled=wait)


def answer(outcome) -> tuple[int, dict, dict]:
    resp: func.HttpResponse = respond(outcome)
    return resp.status_code, json.loads(resp.get_body()), dict(resp.headers)


def test_a_body_exactly_at_the_limit_is_accepted_and_one_byte_more_is_not():
    assert isinstance(post(b"x" * LIMIT), ImportPending)
    status, body, _ = answer(post(b"x" * (LIMIT + 1)))
    assert (status, body["error"]["code"]) == (413, "body-too-large")


@pytest.mark.parametrize("content_type, code, status", [
    (None, "unsupported-media-type", 415), ("text/xml", "unsupported-media-type", 415),
])
def test_refusals_store_nothing(content_type, code, status):
    vault = FakeVault()
    got = answer(post(content_type=content_type, vault=vault))
    assert (got[0], got[1]["error"]["code"]) == (status, code)
    assert vault.records == {}


def test_an_empty_body_is_a_400():
    status, body, _ = answer(post(b""))
    assert (status, body["error"]["code"]) == (400, "empty-body")


def test_storage_down_is_a_503_and_nothing_is_queued():
    vault, bus = FakeVault(), FakeBus()
    vault.fail_puts = True
    status, body, headers = answer(post(vault=vault, bus=bus))
    assert (status, body["error"]["code"]) == (503, "storage-unavailable")
    assert headers["Retry-After"] and bus.sent == []


def test_queue_down_is_a_503_naming_the_vaulted_submission():
    vault, bus = FakeVault(), FakeBus()
    bus.fail_sends = True
    status, body, _ = answer(post(vault=vault, bus=bus))
    assert (status, body["error"]["code"]) == (503, "queue-unavailable")
    (record,) = vault.records.values()
    assert body["error"]["submissionId"] == record.submission_id
    assert "enqueueError" in record.status


def test_when_the_wait_runs_out_the_answer_is_202_with_where_to_look():
    status, body, headers = answer(post(respond_async=False, wait=lambda sid, run, timeout: None))
    assert status == 202 and body["status"] == "received"
    assert headers["Location"] == body["statusUrl"] == f"/api/submissions/{body['submissionId']}"


def test_when_the_wait_itself_fails_the_answer_is_still_202_with_the_id():
    def broken(sid, run, timeout):
        raise PoolTimeout("database down")

    status, body, _ = answer(post(respond_async=False, wait=broken))
    assert status == 202 and body["submissionId"]


def settled(sid, status, **fields):
    return SubmissionStatus(sid, "default", sid, status=status, **fields)


def test_a_rejected_verdict_is_a_400_with_errors_count_and_warnings():
    outcome = post(respond_async=False, wait=lambda sid, run, timeout: settled(
        sid, Status.REJECTED, errors=({"code": "out-of-range", "message": "m", "result": 1},), error_count=7,
        warnings=({"code": "bad-date", "message": "w"},)))
    assert isinstance(outcome, ImportSettled)
    status, body, _ = answer(outcome)
    assert status == 400 and body["status"] == "rejected" and body["errorCount"] == 7
    assert body["errors"][0]["code"] == "out-of-range" and body["warnings"][0]["code"] == "bad-date"


def test_a_completed_verdict_is_a_201():
    status, body, headers = answer(post(respond_async=False, wait=lambda sid, run, timeout: settled(
        sid, Status.COMPLETED, result_count=3, test_ids=("t",))))
    assert (status, body["results"], body["testIds"]) == (201, 3, ["t"]) and headers["Location"]


def test_a_failed_run_answers_202_with_the_failure():
    failure = {"stage": "marking", "reason": "nothing-to-mark", "description": "d"}
    status, body, _ = answer(post(respond_async=False, wait=lambda sid, run, timeout: settled(
        sid, Status.FAILED, failure=failure)))
    assert (status, body["status"], body["failure"]) == (202, "failed", failure)


def test_a_database_outage_on_a_read_is_a_fast_503_not_a_500():
    store = FakeStore()
    store.fail = PoolTimeout("couldn't get a connection after 5.00 sec")
    resp = serve(lambda: statistics_of("t", store=store))
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    assert json.loads(resp.get_body())["error"]["code"] == "database-unavailable"


@pytest.mark.parametrize("test_id", ["\x00", "a\u202eb", "\u200b", " "])
def test_invisible_or_control_characters_in_a_test_id_are_a_400(test_id):
    status, body, _ = answer(statistics_of(test_id, store=FakeStore()))
    assert (status, body["error"]["code"]) == (400, "invalid-test-id")


def test_a_status_before_any_stage_ran_comes_from_the_vault():
    vault = FakeVault()
    sid = post(vault=vault).submission_id
    status, body, _ = answer(submission_status(sid, store=FakeStore(), vault=vault))
    assert (status, body["status"], body["source"]) == (200, "received", "default")
    assert body["receivedAt"]
    # A vendor reads its own partition directly; another vendor does not find it.
    assert answer(submission_status(sid, store=FakeStore(), vault=vault, only_source="default"))[0] == 200
    status, body, _ = answer(submission_status(sid, store=FakeStore(), vault=vault, only_source="other"))
    assert (status, body["error"]["code"]) == (404, "submission-not-found")


def test_health_is_503_naming_the_failing_component():
    class Services:
        vault, bus, store = FakeVault(), FakeBus(), FakeStore()

    Services.store.fail = ConnectionError("connection refused")
    status, body, headers = answer(health.check(Services))
    assert status == 503 and body["status"] == "degraded" and headers["Retry-After"]
    assert body["components"]["database"]["ok"] is False
    assert "connection refused" in body["components"]["database"]["error"]
    assert body["components"]["storage"]["ok"] and body["components"]["queues"]["ok"]
    bare = answer(dataclasses.replace(health.check(Services), detailed=False))  # not an operator
    assert bare[0] == 503 and bare[1] == {"status": "degraded"}
    Services.store.fail = None
    assert answer(health.check(Services))[0] == 200


def test_health_probes_its_components_at_once_so_an_outage_costs_one_timeout_not_three():
    import threading

    together = threading.Barrier(3)  # passes only if all three probes are waiting at the same time

    class Waiting:
        def ping(self) -> None:
            together.wait(timeout=10)

    class Services:
        vault, bus, store = Waiting(), Waiting(), Waiting()

    status, body, _ = answer(health.check(Services))
    assert status == 200, body


def test_the_pool_gives_up_on_a_connection_in_time_for_a_503_within_5_s():
    from shared.db import connection

    assert connection.CHECKOUT_TIMEOUT_SECONDS <= 4.0  # the rest of the request must fit in the 5 s too


def test_unknown_problem_codes_are_a_programming_error():
    with pytest.raises(KeyError):
        respond(Problem("no-such-code", "m"))


def test_the_pending_answer_reports_time_zone_aware_ids():
    assert isinstance(datetime.now(UTC), datetime)  # the vault requires aware times; the receiver sends them
    vault = FakeVault()
    post(vault=vault)
    (record,) = vault.records.values()
    assert record.received_at.tzinfo is not None


@pytest.mark.parametrize("sid, reason, code, status", [
    ("not-a-ulid", "wrong batch", "invalid-submission-id", 400),
    ("01JD3Y8X6J6ZQ8K8N7W4ZK3V2S", "   ", "reason-required", 400),
    ("01JD3Y8X6J6ZQ8K8N7W4ZK3V2S", None, "reason-required", 400),
    ("01JD3Y8X6J6ZQ8K8N7W4ZK3V2S", "x" * 2001, "reason-too-long", 400),
])
def test_retract_refuses_bad_input_before_touching_anything(sid, reason, code, status):
    from shared.ops.retract import retract

    class NoPool:
        def connection(self):
            raise AssertionError("the database must not be used for bad input")

    outcome = retract(sid, reason, erase=False, pool=NoPool(), vault=FakeVault(), store=FakeStore())
    assert outcome.code == code
    assert answer(outcome)[0] == status


def test_a_retraction_report_is_answered_as_it_is():
    from shared.pipeline.outcomes import RetractionDone

    status, body, _ = answer(RetractionDone({"submissionId": "01JD3Y8X6J6ZQ8K8N7W4ZK3V2S", "status": "retracted"}))
    assert status == 200 and body["status"] == "retracted"

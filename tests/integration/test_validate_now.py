"""Waiting imports validated in the receiver (shared/pipeline/validate_now.py) on the real engine,
vault (Azurite) and PostgreSQL: the safety-net message, its cancelling, and a receiver that dies."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared import bootstrap
from shared.bus.port import OutgoingMessage
from shared.bus.queues import VALIDATION
from tests.documents import make_document
from tests.pipeline_harness import pipeline_env

DOC = make_document([{"student_number": "1", "test_id": "t", "available": 10, "obtained": 7},
                     {"student_number": "2", "test_id": "t", "available": 10, "obtained": 4}])


@pytest.fixture
def pipeline(monkeypatch, database_url, vault_storage, vault_table):
    with pipeline_env(monkeypatch, database_url, vault_storage, vault_table) as p:
        yield p


def test_a_waiting_import_is_answered_201_with_no_message_left_behind(pipeline):
    answer = pipeline.post_document(DOC, wait=True)
    assert answer.status == 201, answer.body
    assert answer.json()["status"] == "completed"
    assert pipeline.http("GET", "/api/results/t/aggregate").json()["count"] == 2
    counts = pipeline.engine.counts(VALIDATION)
    assert (counts.active, counts.scheduled) == (0, 0)  # the safety net was withdrawn
    assert pipeline.drain() == 0


def test_a_receiver_that_dies_mid_validation_leaves_a_safety_net_that_completes_the_import(pipeline):
    class Died(BaseException):
        """The process going away: nothing after it runs in the receiver."""

    store = bootstrap.services().store

    def die(*args, **kwargs):
        raise Died()

    store.record_and_complete = die
    with pytest.raises(Died):
        pipeline.post_document(DOC, wait=True)
    del store.record_and_complete
    (deferred,) = pipeline.peek(VALIDATION)
    assert deferred.message_id.endswith("/validation/deferred") and deferred.state == "scheduled"
    assert deferred.scheduled_enqueue_time_utc > datetime.now(UTC) + timedelta(seconds=60)
    assert pipeline.drain() == 0  # not receivable before it falls due
    pipeline.sql("UPDATE bus.messages SET scheduled_enqueue_at = now(), visible_at = now() RETURNING 1")  # time passes
    assert pipeline.drain() == 1
    (sid,) = {row[0] for row in pipeline.sql("SELECT submission_id FROM submissions")}
    state = pipeline.http("GET", f"/api/submissions/{sid}").json()
    assert state["status"] == "completed" and state["results"] == 2


def test_cancel_withdraws_only_messages_no_consumer_has_taken(pipeline):
    engine = pipeline.engine
    later = datetime.now(UTC) + timedelta(minutes=5)
    tokens = engine.schedule(VALIDATION, [OutgoingMessage(b"{}", "a"), OutgoingMessage(b"{}", "b")], later)
    engine.send(VALIDATION, OutgoingMessage(b"{}", "c"))
    (taken,) = engine.receive(VALIDATION, 5)  # only c is receivable
    assert taken.message_id == "c"
    assert engine.cancel_scheduled(VALIDATION, [*tokens, "c"]) == 2
    assert [m.message_id for m in engine.peek(VALIDATION)] == ["c"]  # still held by its consumer
    assert engine.cancel_scheduled(VALIDATION, tokens) == 0  # already gone: nothing to do


@pytest.fixture
def impatient(monkeypatch, database_url, vault_storage, vault_table):
    """A pipeline whose receiver waits 1 s on the queue path (nothing consumes here unless drained)."""
    with pipeline_env(monkeypatch, database_url, vault_storage, vault_table, MARKR_IMPORT_WAIT_SECONDS=1) as p:
        yield p


def test_staging_and_marking_in_the_receiver_are_one_transaction(impatient, monkeypatch):
    """A marking that fails leaves nothing of the document recorded; the queue path then does it all."""
    from shared.db import results

    pipeline = impatient
    real = results.apply_markings

    def broken(conn, runs):
        raise RuntimeError("marking failed")

    monkeypatch.setattr(results, "apply_markings", broken)
    answer = pipeline.post_document(DOC, wait=True)
    assert answer.status == 202, answer.body  # the queue path's wait saw nothing settle (nobody consumed)
    sid = answer.json()["submissionId"]
    assert pipeline.sql("SELECT count(*) FROM validated_results") == [(0,)]
    assert pipeline.sql("SELECT count(*) FROM submissions") == [(0,)]  # not even `validated`
    monkeypatch.setattr(results, "apply_markings", real)
    assert pipeline.drain() == 1  # the immediate message; the deferred one is still scheduled
    state = pipeline.http("GET", f"/api/submissions/{sid}").json()
    assert state["status"] == "completed" and state["results"] == 2


def test_statistics_commit_with_the_marking_or_not_at_all(impatient, monkeypatch):
    """A refresh that fails undoes the verdict and the marking with it; the validator then takes the
    steps one at a time, and the aggregator the statistics."""
    from shared.bus.queues import AGGREGATION
    from shared.db import results

    pipeline = impatient
    real = results._COMPUTE
    monkeypatch.setattr(results, "_COMPUTE", "SELECT 1/0 WHERE %(test_id)s::text IS NOT NULL"
                                             " AND %(at_least)s::bigint IS NOT NULL")
    answer = pipeline.post_document(DOC, wait=True)
    assert answer.status == 202, answer.body
    sid = answer.json()["submissionId"]
    for table in ("validated_results", "student_results", "test_statistics", "submissions"):
        assert pipeline.sql(f"SELECT count(*) FROM {table}") == [(0,)], table
    assert pipeline.deliver_one(VALIDATION)  # together fails again; then verdict and marking stand
    assert pipeline.sql("SELECT status, marked_at IS NOT NULL FROM submissions") == [("validated", True)]
    assert len(pipeline.peek(AGGREGATION)) == 1
    monkeypatch.setattr(results, "_COMPUTE", real)
    assert pipeline.drain() >= 1
    assert pipeline.http("GET", f"/api/submissions/{sid}").json()["status"] == "completed"
    assert pipeline.http("GET", "/api/results/t/aggregate").json()["count"] == 2


def test_concurrent_validations_of_one_test_leave_statistics_covering_all_of_them(pipeline):
    """Each transaction refreshes under the tests row lock its version bump took, so whichever
    commits last computed over every marking before it: nothing is left uncounted."""
    import threading

    from shared.pipeline import stages
    from shared.pipeline.messages import SubmissionRef
    from shared.pipeline.stages import Received

    services = bootstrap.services()
    docs = [make_document([{"student_number": f"{i}-{j}", "test_id": "t", "available": 10, "obtained": i % 11}
                           for j in range(3)]) for i in range(24)]
    errors = []

    def validate(i):
        ref = SubmissionRef(f"sub{i:03d}", "default", f"sub{i:03d}")
        try:
            stages.validate_received([Received(ref, docs[i], datetime.now(UTC), None)],
                                     bus=services.bus, store=services.store)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=validate, args=(i,)) for i in range(len(docs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert pipeline.sql("SELECT count(*) FROM submissions WHERE status = 'completed'") == [(24,)]
    (version, computed, count), = pipeline.sql(
        "SELECT t.results_version, s.computed_version, s.count FROM tests t JOIN test_statistics s USING (test_id)")
    assert (computed, count) == (version, 72)
    assert pipeline.http("GET", "/api/results/t/aggregate").json()["count"] == 72

"""The stages' branches on in-memory ports: idempotency, permanent failures, batching, status order."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.bus.queues import AGGREGATION, MARKING, VALIDATION
from shared.pipeline import stages
from shared.pipeline.receive import ImportRequest, import_document
from tests.documents import make_document
from tests.fakes import FakeBus, FakeStore, FakeVault

GOOD = {"student_number": "1", "test_id": "t", "available": 10, "obtained": 5}


@pytest.fixture
def ports():
    return FakeVault(), FakeBus(), FakeStore()


def receive(ports, doc: bytes) -> str:
    vault, bus, _ = ports
    outcome = import_document(ImportRequest("text/xml+markr", doc, respond_async=True), vault=vault, bus=bus,
                              source="default", max_body_bytes=1 << 20, wait_seconds=0,
                              wait_for_settled=lambda *a: None)
    return outcome.submission_id


def bodies(bus: FakeBus, queue: str) -> list[dict]:
    return [json.loads(m.body) for m in bus.on(queue)]


def run_all(ports) -> None:
    """Deliver every queued stage message once, each queue as one batch."""
    vault, bus, store = ports
    stages.validate(bodies(bus, VALIDATION), vault=vault, bus=bus, store=store)
    if bodies(bus, MARKING):
        stages.mark(bodies(bus, MARKING), bus=bus, store=store)
    if bodies(bus, AGGREGATION):
        stages.aggregate(bodies(bus, AGGREGATION), store=store)


def test_a_batch_completes_every_submission_with_one_recomputation_per_test(ports):
    vault, bus, store = ports
    sids = [receive(ports, make_document([{**GOOD, "student_number": str(i)}, {**GOOD, "test_id": "u"}]))
            for i in range(5)]
    run_all(ports)
    assert [store.states[s].status for s in sids] == ["completed"] * 5
    assert sorted(store.recomputations) == ["t", "u"]  # coalesced over the batch
    assert store.statistics("t").count == 5 and store.statistics("u").count == 1
    # marked and aggregated by the validator, in the same invocation: nothing for the other stages
    assert bus.on(MARKING) == [] and bus.on(AGGREGATION) == []
    assert vault.reads == 0  # small bodies came inline with the validation message


def test_the_highest_marks_are_kept_independently_across_documents(ports):
    _, _, store = ports
    receive(ports, make_document([{**GOOD, "available": 10, "obtained": 9}]))
    receive(ports, make_document([{**GOOD, "available": 20, "obtained": 8}]))
    run_all(ports)
    assert store.statistics("t").mean == pytest.approx(45.0)


def test_a_rejected_document_stages_nothing_and_says_why(ports):
    vault, bus, store = ports
    sid = receive(ports, make_document([{**GOOD, "obtained": 11}]))
    run_all(ports)
    state = store.states[sid]
    assert state.status == "rejected" and state.error_count == 1
    assert state.errors[0]["code"] == "out-of-range" and state.errors[0]["result"] == 1
    assert store.staged == {} and bus.on(MARKING) == []


def test_warnings_are_kept_on_the_status(ports):
    _, _, store = ports
    sid = receive(ports, make_document([{**GOOD, "scanned_on": "not a date"}]))
    run_all(ports)
    assert store.states[sid].status == "completed"
    assert [w["field"] for w in store.states[sid].warnings] == ["@scanned-on"]


def test_redelivering_every_stage_changes_nothing(ports):
    vault, bus, store = ports
    sid = receive(ports, make_document([GOOD, {**GOOD, "student_number": "2", "obtained": 7}]))
    run_all(ports)
    before = (dict(store.best), dict(store.versions), store.states[sid])
    run_all(ports)  # every message again, as at-least-once delivery may
    assert (dict(store.best), dict(store.versions), store.states[sid]) == before
    assert store.recomputations == ["t"]  # the second time, the statistics were already current


def test_a_missing_vault_entry_fails_permanently(ports):
    vault, bus, store = ports
    ref = {"submissionId": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "source": "default", "runId": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}
    counts = stages.validate([ref], vault=vault, bus=bus, store=store)
    assert counts == {"validated": 0, "rejected": 0, "failed": 1}
    state = store.states[ref["submissionId"]]
    assert state.status == "failed"
    assert (state.failure["stage"], state.failure["reason"]) == ("validation", "vault-entry-missing")


def test_a_damaged_inline_body_fails_permanently(ports):
    vault, bus, store = ports
    sid = receive(ports, make_document([GOOD]))
    message = bodies(bus, VALIDATION)[0]
    message["body"]["sha256"] = "0" * 64
    stages.validate([message], vault=vault, bus=bus, store=store)
    assert store.states[sid].failure["reason"] == "vault-entry-corrupt"
    assert bus.on(MARKING) == []


def test_a_large_body_is_read_from_the_vault(ports):
    vault, bus, store = ports
    vault.inline_limit = 0
    sid = receive(ports, make_document([GOOD]))
    assert "body" not in bodies(bus, VALIDATION)[0]
    run_all(ports)
    assert vault.reads == 1 and store.states[sid].status == "completed"


def test_marking_without_staged_rows_fails_permanently(ports):
    _, bus, store = ports
    ref = {"submissionId": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "source": "default", "runId": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}
    assert stages.mark([ref], bus=bus, store=store) == {"marked": 0, "failed": 1}
    assert store.states[ref["submissionId"]].failure["reason"] == "nothing-to-mark"
    assert bus.on(AGGREGATION) == []


def test_a_store_outage_raises_so_the_batch_is_redelivered(ports):
    vault, bus, store = ports
    receive(ports, make_document([GOOD]))
    store.fail = ConnectionError("database down")
    with pytest.raises(ConnectionError):
        stages.validate(bodies(bus, VALIDATION), vault=vault, bus=bus, store=store)
    assert bus.on(MARKING) == []


def test_isolate_returns_only_the_items_that_fail_alone():
    calls = []

    def run(items):
        calls.append(list(items))
        if "bad" in items:
            raise ValueError("bad item")

    failed = stages.isolate(["a", "bad", "b"], run)
    assert [(item, str(exc)) for item, exc in failed] == [("bad", "bad item")]
    assert calls == [["a", "bad", "b"], ["a"], ["bad"], ["b"]]


def test_isolate_raises_when_every_item_fails():
    def run(items):
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        stages.isolate(["a", "b"], run)


def test_status_moves_in_order_and_records_each_stage_time(ports):
    _, _, store = ports
    start = datetime.now(UTC)
    times = iter(start + timedelta(seconds=n + 1) for n in range(10))
    sid = receive(ports, make_document([GOOD]))
    vault, bus, _ = ports
    stages.validate(bodies(bus, VALIDATION), vault=vault, bus=bus, store=store, clock=lambda: next(times))
    state = store.states[sid]
    assert state.status == "completed"
    # One transaction did all three: one time for them.
    assert state.received_at < state.validated_at == state.marked_at == state.completed_at


def test_step_at_a_time_each_stage_records_its_own_time(ports):
    _, _, store = ports
    start = datetime.now(UTC)
    times = iter(start + timedelta(seconds=n + 1) for n in range(10))
    sid = receive(ports, make_document([GOOD]))
    vault, bus, _ = ports

    def together_fails(*args):
        raise ConnectionError("lost the connection mid-transaction")

    store.record_and_complete = together_fails
    counts = stages.validate(bodies(bus, VALIDATION), vault=vault, bus=bus, store=store, clock=lambda: next(times))
    assert counts == {"validated": 1, "rejected": 0, "failed": 0, "marked": 1, "completed": 1}
    state = store.states[sid]
    assert state.status == "completed"
    assert state.received_at < state.validated_at < state.marked_at < state.completed_at


def test_the_validator_marks_in_place_and_hands_over_to_the_marker_when_that_fails(ports):
    vault, bus, store = ports
    sids = [receive(ports, make_document([{**GOOD, "student_number": str(i)}])) for i in range(3)]
    real_apply, calls = store.apply_markings, []

    def failing_in_this_invocation(refs, at):  # together with the verdicts, then on its own
        calls.append([r.submission_id for r in refs])
        if len(calls) <= 2:
            raise ConnectionError("lost the connection mid-marking")
        return real_apply(refs, at)

    store.apply_markings = failing_in_this_invocation
    counts = stages.validate(bodies(bus, VALIDATION), vault=vault, bus=bus, store=store)
    assert counts == {"validated": 3, "rejected": 0, "failed": 0, "marked": 0, "queued_for_marking": 3}
    assert [store.states[s].status for s in sids] == ["validated"] * 3  # the validation itself stands
    assert [m["submissionId"] for m in bodies(bus, MARKING)] == sids and bus.on(AGGREGATION) == []
    assert stages.mark(bodies(bus, MARKING), bus=bus, store=store) == {"marked": 3, "failed": 0}
    stages.aggregate(bodies(bus, AGGREGATION), store=store)
    assert [store.states[s].status for s in sids] == ["completed"] * 3 and calls == [sids, sids, sids]


def test_a_redelivered_validation_marks_again_without_duplicates(ports):
    vault, bus, store = ports
    sid = receive(ports, make_document([GOOD]))
    batch = bodies(bus, VALIDATION)
    assert stages.validate(batch, vault=vault, bus=bus, store=store)["marked"] == 1
    assert stages.validate(batch, vault=vault, bus=bus, store=store)["marked"] == 1  # at-least-once delivery
    assert bus.on(AGGREGATION) == [] and bus.on(MARKING) == []
    assert store.states[sid].status == "completed" and store.statistics("t").count == 1
    assert store.recomputations == ["t"]


def test_the_validator_hands_over_to_the_aggregator_when_the_statistics_fail_in_place(ports):
    vault, bus, store = ports
    sids = [receive(ports, make_document([{**GOOD, "student_number": str(i)}])) for i in range(2)]
    real_refresh = store.refresh_statistics
    failures = iter([ConnectionError("lost the connection mid-recompute")] * 2)

    def failing_in_this_invocation(needed):  # together with the marking, then on its own
        failure = next(failures, None)
        if failure is None:
            return real_refresh(needed)
        raise failure

    store.refresh_statistics = failing_in_this_invocation
    counts = stages.validate(bodies(bus, VALIDATION), vault=vault, bus=bus, store=store)
    assert counts == {"validated": 2, "rejected": 0, "failed": 0, "marked": 2, "queued_for_aggregation": 2}
    assert [store.states[s].marked_at is not None for s in sids] == [True, True]  # the marking stands
    assert [store.states[s].status for s in sids] == ["validated"] * 2
    assert [m["submissionId"] for m in bodies(bus, AGGREGATION)] == sids and bus.on(MARKING) == []
    stages.aggregate(bodies(bus, AGGREGATION), store=store)
    assert [store.states[s].status for s in sids] == ["completed"] * 2 and store.statistics("t").count == 2

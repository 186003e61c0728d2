"""Waiting imports validated in the receiver's process (shared/pipeline/validate_now.py), on fakes."""
from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from shared.bus.queues import VALIDATION
from shared.domain.submission_status import Status
from shared.pipeline.outcomes import ImportPending, ImportSettled, Problem
from shared.pipeline.receive import ImportRequest, import_document
from shared.pipeline.validate_now import ValidateNow
from tests.documents import make_document
from tests.fakes import FakeBus, FakeStore, FakeVault

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def doc(*results: tuple[str, str, int, int]) -> bytes:
    return make_document([{"test_id": t, "student_number": n, "obtained": o, "available": a}
                          for t, n, o, a in results])


GOOD = doc(("9001", "s1", 7, 10), ("9001", "s2", 3, 10))
BROKEN = b"<mcq-test-results><mcq-test-result>"


class Stack:
    def __init__(self) -> None:
        self.vault, self.bus, self.store = FakeVault(), FakeBus(), FakeStore()
        self.waits: list[float] = []
        self.now = ValidateNow(bus=self.bus, store=self.store, safety_seconds=90, clock=lambda: NOW)

    def wait(self, sid, run, timeout):
        self.waits.append(timeout)
        return self.store.states.get(sid)

    def post(self, body=GOOD, respond_async=False):
        return import_document(ImportRequest("text/xml+markr", body, respond_async), vault=self.vault, bus=self.bus,
                               source="default", max_body_bytes=10**6, wait_seconds=5.0,
                               wait_for_settled=self.wait, validate_now=self.now)


def test_a_waiting_import_is_settled_in_place_and_its_safety_net_withdrawn():
    s = Stack()
    outcome = s.post()
    assert isinstance(outcome, ImportSettled) and outcome.state.status == Status.COMPLETED
    assert s.store.computed == {"9001": 1}  # marked and aggregated before the answer
    # the deferred validation message was scheduled (90 s on) and cancelled; nothing else was queued
    (token,) = s.bus.cancelled
    assert token.endswith("/validation/deferred") and s.bus.on(VALIDATION) == []
    assert s.waits == []  # no waiting on notifications


def test_a_broken_document_is_rejected_in_place():
    s = Stack()
    outcome = s.post(BROKEN)
    assert isinstance(outcome, ImportSettled) and outcome.state.status == Status.REJECTED
    assert s.bus.on(VALIDATION) == [] and len(s.bus.cancelled) == 1


def test_the_safety_net_is_scheduled_before_any_work_and_stays_if_the_process_dies():
    s = Stack()

    class Died(BaseException):
        """The process going away mid-validation (nothing after it runs)."""

    def die(*args, **kwargs):
        raise Died()

    s.store.record_validation = die
    with pytest.raises(Died):
        s.post()
    (deferred,) = s.bus.on(VALIDATION)
    assert deferred.scheduled_enqueue_time_utc == NOW + timedelta(seconds=90)
    assert deferred.message_id.endswith("/validation/deferred") and s.bus.cancelled == []
    assert b'"body"' in deferred.body  # the validator needs no vault read for it


def test_a_failure_in_place_hands_the_document_to_the_queue_at_once_and_keeps_the_safety_net():
    s = Stack()
    s.store.fail = ConnectionError("database restarting")
    outcome = s.post()
    assert isinstance(outcome, ImportPending)  # the wait (on the queue path) saw nothing settle
    deferred, immediate = s.bus.on(VALIDATION)
    assert deferred.scheduled_enqueue_time_utc is not None and immediate.scheduled_enqueue_time_utc is None
    assert immediate.message_id == deferred.message_id.removesuffix("/deferred")
    assert s.bus.cancelled == [] and len(s.waits) == 1 and 0 < s.waits[0] <= 5.0


def test_the_queue_down_before_any_work_is_a_503_and_nothing_is_validated():
    s = Stack()
    s.bus.fail_sends = True
    outcome = s.post()
    assert isinstance(outcome, Problem) and outcome.code == "queue-unavailable"
    assert s.store.states == {} and "enqueueError" in next(iter(s.vault.records.values())).status


def test_respond_async_goes_through_the_queue():
    s = Stack()
    outcome = s.post(respond_async=True)
    assert isinstance(outcome, ImportPending)
    (message,) = s.bus.on(VALIDATION)
    assert message.scheduled_enqueue_time_utc is None and s.now.runs == 0 and s.store.states == {}


def test_concurrent_imports_share_one_run_and_a_failing_one_fails_alone():
    s = Stack()
    entered, release = threading.Event(), threading.Event()
    original = s.store.record_validation

    def slow_first(accepted, rejected):
        if not entered.is_set():
            entered.set()
            assert release.wait(10)
        original(accepted, rejected)

    s.store.record_validation = slow_first
    outcomes: dict[int, object] = {}

    def post(i, body):
        outcomes[i] = s.post(body)

    first = threading.Thread(target=post, args=(0, GOOD))
    first.start()
    assert entered.wait(10)
    bodies = {1: doc(("9002", "s1", 1, 2)), 2: doc(("9002", "s9", 2, 2)), 3: GOOD}
    rest = [threading.Thread(target=post, args=(i, b)) for i, b in bodies.items()]
    for t in rest:
        t.start()
    for _ in range(1000):
        if s.now._groups.waiting(None) == 3:
            break
        threading.Event().wait(0.005)
    # one of the three waiting documents cannot be stored: the group fails, then each goes alone
    late = sorted(r.submission_id for r in s.vault.records.values())[-1]  # one of the waiting three
    s.store.fail_for = {late}
    release.set()
    for t in [first, *rest]:
        t.join(10)
    settled = [o for o in outcomes.values() if isinstance(o, ImportSettled)]
    pending = [o for o in outcomes.values() if isinstance(o, ImportPending)]
    assert len(settled) == 3 and [p.submission_id for p in pending] == [late]
    assert all(o.state.status == Status.COMPLETED for o in settled)
    # two runs: the first document alone, then the three together (tried one by one after that failed)
    assert s.now.runs == 2
    assert len(s.bus.cancelled) == 3 and not any(t.startswith(late) for t in s.bus.cancelled)
    immediate = [m for m in s.bus.on(VALIDATION) if m.scheduled_enqueue_time_utc is None]
    assert [m.correlation_id for m in immediate] == [late]


def test_an_import_is_announced_while_it_is_vaulted_and_withdrawn_if_the_vault_fails():
    s = Stack()
    seen = []
    put = s.vault.put

    def watching_put(**kwargs):
        seen.append(dict(s.now._groups._expected))  # announced while being vaulted
        return put(**kwargs)

    s.vault.put = watching_put
    assert isinstance(s.post(), ImportSettled)
    assert seen == [{None: 1}] and s.now._groups._expected == {}
    s.vault.fail_puts = True
    s.vault.put = put
    outcome = s.post()
    assert isinstance(outcome, Problem) and outcome.code == "storage-unavailable"
    assert s.now._groups._expected == {}  # withdrawn: no run waits for it
    seen.clear()
    s.vault.put = watching_put
    s.post(respond_async=True)
    assert seen == [{}]  # an import that does not wait is not validated here, so not announced


def test_the_verdict_comes_from_the_recording_transaction_without_reading_it_back():
    s = Stack()
    reads = []
    s.store.statuses = lambda ids: reads.append(ids) or {}
    outcome = s.post()
    assert isinstance(outcome, ImportSettled) and outcome.state.status == Status.COMPLETED
    assert reads == [] and s.waits == []


def test_if_the_statuses_cannot_be_read_back_the_receiver_waits_for_them_as_on_the_queue_path():
    s = Stack()
    real = s.store.record_and_complete

    def answering_without_statuses(*args):
        outcome = real(*args)
        outcome.statuses = {}
        return outcome

    def unreadable(ids):
        raise ConnectionError("connection lost after the commit")

    s.store.record_and_complete = answering_without_statuses
    s.store.statuses = unreadable
    outcome = s.post()
    assert isinstance(outcome, ImportSettled) and outcome.state.status == Status.COMPLETED
    assert len(s.waits) == 1 and s.bus.on(VALIDATION) == []  # waited; nothing handed to the queue


def test_a_large_document_is_parsed_while_it_is_vaulted_and_only_then(monkeypatch):
    from shared.pipeline import receive, stages

    s = Stack()
    monkeypatch.setattr(receive, "PARSE_WHILE_VAULTING_BYTES", len(GOOD))
    parsing, parses = threading.Event(), []
    real_parse, real_put = stages.parse_received, s.vault.put

    def parse(body):
        parses.append(threading.current_thread().name)
        parsing.set()
        return real_parse(body)

    monkeypatch.setattr(receive, "parse_received", parse)
    monkeypatch.setattr(stages, "parse_received", parse)

    def put(**kwargs):
        assert parsing.wait(5), "the parse did not start while the vault write ran"
        return real_put(**kwargs)

    s.vault.put = put
    outcome = s.post()
    assert isinstance(outcome, ImportSettled) and outcome.state.status == Status.COMPLETED
    assert len(parses) == 1 and parses[0].startswith("parse-while-vaulting")  # not parsed again by its run
    monkeypatch.setattr(receive, "PARSE_WHILE_VAULTING_BYTES", len(GOOD) + 1)  # a smaller body: by its run
    s.vault.put = real_put
    outcome = s.post()
    assert isinstance(outcome, ImportSettled) and outcome.state.status == Status.COMPLETED
    assert len(parses) == 2 and not parses[1].startswith("parse-while-vaulting")

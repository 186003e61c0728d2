"""The Azure BusAdmin side (shared/bus/azure.py) offline, over a fake ServiceBusClient and
administration client that behave like Service Bus where it matters: a peek may return fewer
messages than asked for, a dead-letter receive locks what it returns, settling is per message."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from shared.bus.azure import AzureServiceBus, AzureServiceBusError
from shared.bus.dead_letters import all_dead_letters
from shared.bus.queues import AGGREGATION, MARKING, NOTIFICATION, VALIDATION
from shared.ops.sweep import sweep
from shared.pipeline import messages
from shared.pipeline.messages import SubmissionRef

T0 = datetime(2024, 5, 1, tzinfo=UTC)


@dataclass
class Dead:
    """A dead-lettered message as the SDK hands it out (the attributes the adapter reads)."""

    message_id: str
    sequence_number: int
    body: bytes = b"{}"
    correlation_id: str | None = "corr"
    content_type: str | None = "application/json"
    application_properties: dict = field(default_factory=lambda: {b"kind": b"test"})
    delivery_count: int = 10
    enqueued_time_utc: datetime = T0
    dead_letter_reason: str | None = "MaxDeliveryCountExceeded"
    dead_letter_error_description: str | None = "boom"


class Namespace:
    """The broker: dead-letter sub-queues, sent messages, and a log of what happened in order."""

    def __init__(self, peek_at_most: int = 1000) -> None:
        self.dlq: dict[str, list[Dead]] = {}
        self.sent: dict[str, list] = {}
        self.log: list[tuple[str, str]] = []
        self.locked: set[int] = set()
        self.peek_at_most = peek_at_most
        self.fail_sends = False
        self.scheduled: dict[int, tuple] = {}  # sequence number -> (queue, message, time)

    def dead_letter(self, queue: str, count: int, body=lambda i: b"{}") -> list[Dead]:
        start = sum(len(q) for q in self.dlq.values())
        new = [Dead(f"{queue}-{i}", start + i + 1, body=body(i)) for i in range(count)]
        self.dlq.setdefault(queue, []).extend(new)
        return new


class FakeReceiver:
    def __init__(self, ns: Namespace, queue: str, dead_letter: bool) -> None:
        assert dead_letter, "only the dead-letter sub-queue is read here"
        self.ns, self.queue = ns, queue

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for m in self.ns.dlq.get(self.queue, []):  # closing the link releases its locks
            self.ns.locked.discard(m.sequence_number)

    def peek_messages(self, max_message_count: int = 1, sequence_number: int = 0):
        found = [m for m in self.ns.dlq.get(self.queue, []) if m.sequence_number >= sequence_number]
        return found[:min(max_message_count, self.ns.peek_at_most)]

    def receive_messages(self, max_message_count: int = 1, max_wait_time: float | None = None):
        free = [m for m in self.ns.dlq.get(self.queue, []) if m.sequence_number not in self.ns.locked]
        got = free[:max_message_count]
        self.ns.locked.update(m.sequence_number for m in got)
        return got

    def complete_message(self, m: Dead) -> None:
        assert m.sequence_number in self.ns.locked, "settling a message this receiver does not hold"
        self.ns.dlq[self.queue].remove(m)
        self.ns.locked.discard(m.sequence_number)
        self.ns.log.append(("complete", m.message_id))

    def abandon_message(self, m: Dead) -> None:
        self.ns.locked.discard(m.sequence_number)
        self.ns.log.append(("abandon", m.message_id))


class FakeBatch(list):
    def add_message(self, message) -> None:
        self.append(message)


class FakeSender:
    def __init__(self, ns: Namespace, queue: str) -> None:
        self.ns, self.queue = ns, queue

    def create_message_batch(self) -> FakeBatch:
        return FakeBatch()

    def send_messages(self, batch) -> None:
        if self.ns.fail_sends:
            raise ConnectionError("the namespace is unreachable")
        for m in batch:
            self.ns.sent.setdefault(self.queue, []).append(m)
            self.ns.log.append(("send", str(m.message_id)))

    def schedule_messages(self, messages, schedule_time_utc):
        numbers = []
        for m in messages:
            number = 1000 + len(self.ns.scheduled)
            self.ns.scheduled[number] = (self.queue, m, schedule_time_utc)
            numbers.append(number)
        return numbers

    def cancel_scheduled_messages(self, sequence_numbers):
        numbers = sequence_numbers if isinstance(sequence_numbers, list) else [sequence_numbers]
        if any(n not in self.ns.scheduled for n in numbers):  # the whole call is refused
            raise ValueError(f"message not found: {numbers}")
        for n in numbers:
            del self.ns.scheduled[n]

    def close(self) -> None:
        pass


class FakeClient:
    def __init__(self, ns: Namespace) -> None:
        self.ns, self.closed = ns, False

    def get_queue_receiver(self, queue_name: str, sub_queue=None, **kwargs) -> FakeReceiver:
        return FakeReceiver(self.ns, queue_name, sub_queue is not None)

    def get_queue_sender(self, queue_name: str) -> FakeSender:
        return FakeSender(self.ns, queue_name)

    def close(self) -> None:
        self.closed = True


class FakeAdminClient:
    def __init__(self, ns: Namespace) -> None:
        self.ns, self.closed = ns, False

    def get_queue_runtime_properties(self, queue: str):
        return SimpleNamespace(active_message_count=0, scheduled_message_count=2,
                               dead_letter_message_count=len(self.ns.dlq.get(queue, [])))

    def close(self) -> None:
        self.closed = True


def adapter(ns: Namespace) -> AzureServiceBus:
    return AzureServiceBus(FakeClient(ns), make_admin=lambda: FakeAdminClient(ns))


def test_dead_letters_are_read_past_short_pages() -> None:
    ns = Namespace(peek_at_most=7)  # Service Bus may answer a peek of 100 with fewer
    dead = ns.dead_letter(MARKING, 30)
    admin = adapter(ns)
    assert [d.message_id for d in all_dead_letters(admin, MARKING, 100)] == [d.message_id for d in dead]
    last = admin.dead_letter(MARKING, dead[-1].message_id)
    assert last is not None and last.application_properties == {"kind": "test"}
    assert (last.reason, last.description, last.dead_lettered_at_utc) == ("MaxDeliveryCountExceeded", "boom", None)
    assert admin.dead_letter(MARKING, "nope") is None


def test_resubmit_sends_before_it_removes_and_leaves_the_rest_alone() -> None:
    ns = Namespace(peek_at_most=3)
    a, b, c = ns.dead_letter(VALIDATION, 3)
    result = adapter(ns).resubmit(VALIDATION, [a.message_id, c.message_id, "missing"])
    assert set(result.resubmitted) == {a.message_id, c.message_id} and result.not_found == ["missing"]
    for old in (a, c):
        new = result.resubmitted[old.message_id]
        assert new.startswith(f"{old.message_id}/resubmit/")
        assert ns.log.index(("send", new)) < ns.log.index(("complete", old.message_id))
    assert ("abandon", b.message_id) in ns.log and [m.message_id for m in ns.dlq[VALIDATION]] == [b.message_id]
    [first, _] = ns.sent[VALIDATION]
    assert first.application_properties == {"kind": "test", "resubmittedFrom": a.message_id}
    assert (b"".join(first.body), first.correlation_id) == (a.body, a.correlation_id)
    assert ns.locked == set()  # every lock released


def test_a_failed_send_abandons_and_the_dead_letter_stays() -> None:
    ns = Namespace()
    [a] = ns.dead_letter(MARKING, 1)
    ns.fail_sends = True
    with pytest.raises(AzureServiceBusError):
        adapter(ns).resubmit(MARKING, [a.message_id])
    assert ns.log == [("abandon", a.message_id)] and ns.dlq[MARKING] == [a]


def test_purge_all_removes_the_snapshot_only() -> None:
    ns = Namespace(peek_at_most=4)
    ns.dead_letter(MARKING, 10)
    assert adapter(ns).purge(MARKING) == 10 and ns.dlq[MARKING] == []
    assert all(kind == "complete" for kind, _ in ns.log)


def test_counts_come_from_the_admin_client_created_on_first_use() -> None:
    ns = Namespace()
    ns.dead_letter(VALIDATION, 2)
    made: list[FakeAdminClient] = []
    bus = AzureServiceBus(FakeClient(ns), make_admin=lambda: made.append(FakeAdminClient(ns)) or made[-1])
    bus.send(VALIDATION, messages.validation(SubmissionRef("01HZX3K9Q5M7B2C4D6E8F0G1H2", "s", "r")))
    assert made == []  # sending never needs the Manage right
    counts = bus.counts(VALIDATION)
    assert (counts.active, counts.scheduled, counts.dead_lettered) == (0, 2, 2) and len(made) == 1
    bus.counts(MARKING)
    assert len(made) == 1
    bus.close()
    assert made[0].closed


def test_sweep_over_azure_reports_every_dead_letter_once() -> None:
    ns = Namespace(peek_at_most=5)
    runs = [f"01HZX3K9Q5M7B2C4D6E8F0G{i:03d}" for i in range(12)]
    ns.dead_letter(MARKING, 12, body=lambda i: messages.marking(
        SubmissionRef("01HZX3K9Q5M7B2C4D6E8F0G1H2", "s", runs[i])).body)

    class Memory:
        def __init__(self) -> None:
            self.marks: dict[str, int] = {}

        def load(self, queue: str) -> int:
            return self.marks.get(queue, -1)

        def save(self, queue: str, sequence_number: int) -> None:
            self.marks[queue] = sequence_number

    checkpoints, reported = Memory(), []
    admin = adapter(ns)
    report = sweep(admin, report_failed=lambda ref, failure: reported.append((ref.run_id, failure)),
                   checkpoints=checkpoints)
    assert report.notified[MARKING] == 12 and sorted(r for r, _ in reported) == runs
    assert {f.at for _, f in reported} == {T0}  # Azure gives no dead-letter time: the enqueue time
    assert sweep(admin, report_failed=lambda *a: reported.append(a), checkpoints=checkpoints).notified[MARKING] == 0
    assert len(reported) == 12 and NOTIFICATION not in ns.sent  # reported through the hook only
    ns.dead_letter(MARKING, 1, body=lambda i: messages.marking(
        SubmissionRef("01HZX3K9Q5M7B2C4D6E8F0G1H2", "s", "01HZX3K9Q5M7B2C4D6E8F0GZZZ")).body)
    assert sweep(admin, report_failed=lambda *a: reported.append(a), checkpoints=checkpoints).notified[MARKING] == 1


def test_one_object_serves_bus_and_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import bootstrap

    monkeypatch.setenv("MARKR_BUS", "azure")
    monkeypatch.setenv("ServiceBusConnection",
                       "Endpoint=sb://markr.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=c2VjcmV0")
    bootstrap.reset()
    try:
        s = bootstrap.services()
        assert s.bus_admin is s.bus  # one client, one credential
    finally:
        bootstrap.reset()


def test_a_trigger_s_message_cannot_be_dead_lettered_through_the_sdk_client() -> None:
    from shared.bus.port import DeadLetterUnsupported

    with pytest.raises(DeadLetterUnsupported):
        adapter(Namespace()).dead_letter_held(MARKING, "lock", "MessageSchemaInvalid", "bad")


def test_a_dead_letter_that_fails_its_schema_but_names_a_run_fails_that_run() -> None:
    import json

    ns = Namespace()
    sid = "01HZX3K9Q5M7B2C4D6E8F0G1H2"
    named = json.loads(messages.marking(SubmissionRef(sid, "s", sid)).body)  # no testVersions: invalid here
    ns.dead_letter(AGGREGATION, 3, body=lambda i: [json.dumps(named).encode(), b'{"runId": 42}',
                                               b'{"submissionId": "x", "source": "s", "runId": "y"}'][i])

    class Memory:
        def load(self, queue: str) -> int:
            return -1

        def save(self, queue: str, sequence_number: int) -> None:
            pass

    reported = []
    report = sweep(adapter(ns), report_failed=lambda ref, failure: reported.append(ref), checkpoints=Memory())
    assert reported == [SubmissionRef(sid, "s", sid)] and len(report.unreadable) == 2


def test_scheduled_messages_are_cancelled_by_sequence_number_skipping_those_already_gone() -> None:
    ns = Namespace()
    bus = adapter(ns)
    ref = SubmissionRef("s1", "v", "s1")
    at = datetime(2030, 1, 1, tzinfo=UTC)
    first = bus.schedule(VALIDATION, [messages.validation(ref, deferred=True)], at)
    others = bus.schedule(VALIDATION, [messages.validation(SubmissionRef(f"s{i}", "v", f"s{i}"), deferred=True)
                                       for i in (2, 3)], at)
    assert [ns.scheduled[int(t)][2] for t in first + others] == [at, at, at]
    assert ns.scheduled[int(first[0])][1].message_id == "s1/s1/validation/deferred"
    del ns.scheduled[int(others[0])]  # delivered meanwhile: Service Bus refuses a call naming it
    assert bus.cancel_scheduled(VALIDATION, first + others) == 2
    assert ns.scheduled == {}
    assert bus.cancel_scheduled(VALIDATION, first) == 0  # gone: nothing to do, no error
    with pytest.raises(ValueError):
        bus.schedule(VALIDATION, [messages.validation(ref)], datetime(2030, 1, 1))  # naive time

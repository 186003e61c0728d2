"""The reconciler: a document vaulted but never queued is enqueued once it is older than the grace
period, with the receiver's own message; what a stage has seen, or what is still young, is not."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from ulid import ULID

from shared.bus.queues import VALIDATION
from shared.ops import reconcile as rec
from shared.pipeline.receive import ImportRequest, import_document
from tests.fakes import FakeBus, FakeVault

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
DOC = b"<mcq-test-results/>"


class FakeProgress:
    def __init__(self, known: set[str] | None = None) -> None:
        self.marks: dict[str, int] = {}
        self.known_ids = known if known is not None else set()
        self.lookups: list[list[str]] = []

    def load(self, source: str) -> int:
        return self.marks.get(source, 0)

    def save(self, source: str, before_ms: int) -> None:
        self.marks[source] = max(self.marks.get(source, 0), before_ms)

    def known(self, submission_ids: list[str]) -> set[str]:
        self.lookups.append(list(submission_ids))
        return self.known_ids & set(submission_ids)


def vaulted(vault: FakeVault, at: datetime, source: str = "default") -> str:
    sid = str(ULID.from_datetime(at))
    vault.put(source=source, submission_id=sid, content_type="text/xml+markr", body=DOC, received_at=at)
    return sid


def run(vault, bus, progress, now=NOW, **kw):
    return rec.reconcile(["default"], vault=vault, bus=bus, progress=progress, now=now, **kw)


def test_an_old_unqueued_document_gets_the_receiver_s_own_validation_message() -> None:
    vault, bus, progress = FakeVault(), FakeBus(), FakeProgress()
    orphan = vaulted(vault, NOW - timedelta(minutes=10))
    report = run(vault, bus, progress)
    assert report.requeued == [orphan] and report.checked == 1
    [msg] = bus.on(VALIDATION)
    assert msg.message_id == f"{orphan}/{orphan}/validation"  # the receiver's id: a repeat is a duplicate
    body = json.loads(msg.body)
    assert body["runId"] == orphan and body["receivedAt"] == (NOW - timedelta(minutes=10)).isoformat()
    assert "body" in body  # small bodies travel inline, as from the receiver
    assert rec.REQUEUED_AT in vault.get("default", orphan).status


def test_the_message_equals_what_the_receiver_sends() -> None:
    vault, sent = FakeVault(), FakeBus()
    outcome = import_document(ImportRequest("text/xml+markr", DOC, True), vault=vault, bus=sent, source="default",
                              max_body_bytes=10**6, wait_seconds=0, wait_for_settled=lambda *a: None)
    [from_receiver] = sent.on(VALIDATION)
    record = vault.get("default", outcome.submission_id)
    assert rec.validation_message(record) == from_receiver


def test_documents_a_stage_has_seen_or_younger_than_the_grace_are_left_alone() -> None:
    vault, bus = FakeVault(), FakeBus()
    seen = vaulted(vault, NOW - timedelta(minutes=30))
    young = vaulted(vault, NOW - timedelta(minutes=1))
    orphan = vaulted(vault, NOW - timedelta(minutes=20))
    other_source = vaulted(vault, NOW - timedelta(minutes=20), source="vendor-b")
    progress = FakeProgress(known={seen})
    assert run(vault, bus, progress).requeued == [orphan]
    assert [m.correlation_id for m in bus.on(VALIDATION)] == [orphan]
    assert young not in sum(progress.lookups, []) and other_source not in sum(progress.lookups, [])
    # The young one is picked up once it is old enough, if still unseen.
    assert run(vault, bus, progress, now=NOW + timedelta(minutes=10)).requeued == [young]


def test_a_second_run_reads_only_what_arrived_since_and_sends_nothing_twice() -> None:
    vault, bus, progress = FakeVault(), FakeBus(), FakeProgress()
    first = vaulted(vault, NOW - timedelta(minutes=10))
    run(vault, bus, progress)
    assert progress.marks["default"] == int((NOW - rec.GRACE).timestamp() * 1000)
    progress.lookups.clear()
    assert run(vault, bus, progress).requeued == [] and progress.lookups == []
    # Even from scratch (checkpoint lost), the repeat is the same message: duplicate detection drops it.
    assert run(vault, bus, FakeProgress()).requeued == [first]
    assert len(bus.on(VALIDATION)) == 1


def test_pages_advance_the_checkpoint_and_a_run_stops_at_its_limit() -> None:
    vault, bus, progress = FakeVault(), FakeBus(), FakeProgress()
    ids = [vaulted(vault, NOW - timedelta(minutes=60 - i)) for i in range(7)]
    report = run(vault, bus, progress, page=2, max_ids=5)
    assert report.requeued == ids[:5]
    assert progress.marks["default"] == rec.id_ms(ids[4])  # not past what was read
    # The last millisecond read is read again (ids[4]); its repeat is the same message, dropped.
    assert run(vault, bus, progress, page=2, max_ids=5).requeued == ids[4:]
    assert [m.correlation_id for m in bus.on(VALIDATION)] == ids  # each sent once


def test_a_failed_send_leaves_the_checkpoint_so_the_next_run_tries_again() -> None:
    vault, bus, progress = FakeVault(), FakeBus(), FakeProgress()
    orphan = vaulted(vault, NOW - timedelta(minutes=10))
    bus.fail_sends = True
    with pytest.raises(ConnectionError):
        run(vault, bus, progress)
    assert progress.marks == {}
    bus.fail_sends = False
    assert run(vault, bus, progress).requeued == [orphan]


def test_id_floor_orders_ids_by_receipt_time() -> None:
    at = NOW - timedelta(seconds=1)
    sid = str(ULID.from_datetime(at))
    ms = rec.id_ms(sid)
    assert rec.id_floor(ms) <= sid < rec.id_floor(ms + 1)


def test_the_housekeeping_timer_runs_both_steps_even_when_the_first_fails(monkeypatch) -> None:
    from functions import dead_letter_sweeper as timer

    ran = []

    def sweep_down() -> None:
        ran.append("sweep")
        raise ConnectionError("bus admin unreachable")

    monkeypatch.setattr(timer, "_sweep", sweep_down)
    monkeypatch.setattr(timer, "_reconcile", lambda: ran.append("reconcile"))
    with pytest.raises(ConnectionError):
        timer.housekeeping()
    assert ran == ["sweep", "reconcile"]

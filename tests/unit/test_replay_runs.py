"""A replayed run starts as the receiver starts one: small bodies travel inline with the validation message."""
from __future__ import annotations

import json
from datetime import UTC, datetime

from shared.bus.queues import NOTIFICATION, VALIDATION
from shared.domain.submission_status import Event
from shared.ops.replay import start_runs
from shared.pipeline import stages
from tests.documents import make_document
from tests.fakes import FakeBus, FakeStore, FakeVault

GOOD = {"student_number": "1", "test_id": "t", "available": 10, "obtained": 5}
SID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"


def vault_with_one(inline_limit: int = 48 * 1024) -> FakeVault:
    vault = FakeVault(inline_limit=inline_limit)
    vault.put(source="default", submission_id=SID, content_type="text/xml+markr", body=make_document([GOOD]),
              received_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    return vault


def test_a_small_body_travels_inline_and_the_validator_reads_no_vault():
    vault, bus, store = vault_with_one(), FakeBus(), FakeStore()
    (ref,) = start_runs(vault.list(), bus, store)
    (message,) = [json.loads(m.body) for m in bus.on(VALIDATION)]
    assert message["body"]["byteSize"] == vault.records[("default", SID)].byte_size
    assert message["receivedAt"] == "2026-01-02T03:04:05+00:00" and message["runId"] == ref.run_id
    assert stages.validate([message], vault=vault, bus=bus, store=store)["validated"] == 1
    assert vault.reads == 0


def test_a_large_body_is_left_in_the_vault():
    vault, bus, store = vault_with_one(inline_limit=0), FakeBus(), FakeStore()
    start_runs(vault.list(), bus, store)
    (message,) = [json.loads(m.body) for m in bus.on(VALIDATION)]
    assert "body" not in message
    assert stages.validate([message], vault=vault, bus=bus, store=store)["validated"] == 1
    assert vault.reads == 1


def test_the_new_runs_received_status_is_recorded_at_once_without_a_notification():
    vault, bus, store = vault_with_one(), FakeBus(), FakeStore()
    store.record_events([Event(SID, "default", "01ARZ3NDEKTSV4RRFFQ69G5FA0", "received",
                               datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))])  # an earlier run
    (ref,) = start_runs(vault.list(), bus, store)
    state = store.status(SID)
    assert (state.run_id, state.status) == (ref.run_id, "received")
    assert state.received_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)  # when it first arrived
    assert bus.on(NOTIFICATION) == []


def test_a_received_record_that_arrives_after_the_validator_moves_nothing_back():
    vault, bus, store = vault_with_one(), FakeBus(), FakeStore()
    (ref,) = start_runs(vault.list(), bus, store)
    stages.validate([json.loads(m.body) for m in bus.on(VALIDATION)], vault=vault, bus=bus, store=store)
    done = store.status(SID)
    assert done.status == "completed"  # the validator marks and aggregates in the same invocation
    store.record_events([Event(SID, "default", ref.run_id, "received", datetime.now(UTC))])  # late
    assert store.status(SID) == done

"""A replayed run starts as the receiver starts one: small bodies travel inline with the validation message."""
from __future__ import annotations

import json
from datetime import UTC, datetime

from shared.bus.queues import VALIDATION
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
    (ref,) = start_runs(vault.list(), bus)
    (message,) = [json.loads(m.body) for m in bus.on(VALIDATION)]
    assert message["body"]["byteSize"] == vault.records[("default", SID)].byte_size
    assert message["receivedAt"] == "2026-01-02T03:04:05+00:00" and message["runId"] == ref.run_id
    assert stages.validate([message], vault=vault, bus=bus, store=store)["validated"] == 1
    assert vault.reads == 0


def test_a_large_body_is_left_in_the_vault():
    vault, bus, store = vault_with_one(inline_limit=0), FakeBus(), FakeStore()
    start_runs(vault.list(), bus)
    (message,) = [json.loads(m.body) for m in bus.on(VALIDATION)]
    assert "body" not in message
    assert stages.validate([message], vault=vault, bus=bus, store=store)["validated"] == 1
    assert vault.reads == 1

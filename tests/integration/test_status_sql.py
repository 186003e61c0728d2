"""The status table on the real PostgreSQL: every field a batch of events sets is stored as the state
machine computed it (the changed rows are written in one statement)."""
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from shared.db import submissions
from shared.domain.submission_status import Event

SID = ["01JB0000000000000000000000", "01JB0000000000000000000001", "01JB0000000000000000000002"]
T0 = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)


@pytest.fixture
def conn(database_url):
    with psycopg.connect(database_url) as c:
        c.execute("DELETE FROM submissions WHERE submission_id = ANY(%s)", (SID,))
        c.commit()
        yield c


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_batch_of_events_stores_every_field_of_each_state(conn):
    events = [
        Event(SID[0], "default", SID[0], "received", at(0)),
        Event(SID[0], "default", SID[0], "validated", at(1), result_count=2, test_ids=("t1", "t2"),
              warnings=({"field": "@scanned-on", "message": "ignored"},)),
        Event(SID[0], "default", SID[0], "marked", at(2), result_count=2, test_ids=("t1", "t2")),
        Event(SID[0], "default", SID[0], "aggregated", at(3), test_ids=("t1", "t2")),
        Event(SID[1], "vendor-b", SID[1], "rejected", at(4), errors=({"result": 1, "message": "bad ü"},),
              error_count=7),
        Event(SID[2], "default", SID[2], "failed", at(5),
              failure={"stage": "validation", "reason": "vault-entry-missing", "description": None}),
    ]
    with conn.transaction():
        returned = submissions.record_events(conn, events)
    stored = [submissions.get(conn, sid) for sid in SID]
    assert stored == returned
    done, rejected, failed = stored
    assert (done.status, done.received_at, done.validated_at, done.marked_at, done.completed_at) == (
        "completed", at(0), at(1), at(2), at(3))
    assert done.test_ids == ("t1", "t2") and done.aggregated_test_ids == ("t1", "t2") and done.result_count == 2
    assert done.warnings == ({"field": "@scanned-on", "message": "ignored"},) and done.failure is None
    assert (rejected.source, rejected.status, rejected.error_count) == ("vendor-b", "rejected", 7)
    assert rejected.errors == ({"result": 1, "message": "bad ü"},) and rejected.test_ids is None
    assert failed.failure == {"stage": "validation", "reason": "vault-entry-missing", "description": None}


def test_events_that_change_nothing_leave_the_row_alone(conn):
    first = [Event(SID[0], "default", SID[0], "validated", at(1), result_count=1, test_ids=("t1",))]
    with conn.transaction():
        submissions.record_events(conn, first)
    before = conn.execute("SELECT updated_at FROM submissions WHERE submission_id = %s", (SID[0],)).fetchone()
    with conn.transaction():
        submissions.record_events(conn, first)  # a redelivery
    after = conn.execute("SELECT updated_at FROM submissions WHERE submission_id = %s", (SID[0],)).fetchone()
    assert before == after and submissions.get(conn, SID[0]).validated_at == at(1)

"""The housekeeping timer on the real app (local host, queue engine, PostgreSQL, Azurite):
a document vaulted but never queued completes once the timer runs; a message that fails its schema is
dead-lettered at once with the schema error, and `markr-ops dead-letters list` shows it."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from ulid import ULID

from shared.bus.port import OutgoingMessage
from shared.bus.queues import MARKING, VALIDATION
from shared.ops import reconcile
from shared.pipeline import messages
from shared.pipeline.messages import SubmissionRef
from shared.vault.table_vault import TableVault
from tests.auth import TEST_VENDOR
from tests.documents import make_document
from tests.e2e.test_ops_app import AppHost, cli, post_document, start_app

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TEST_ID = "8080"


@pytest.fixture
def app(database_url: str, vault_storage: str, vault_table: str,
        monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[AppHost]:
    with start_app(database_url, vault_storage, vault_table, monkeypatch, tmp_path,
                   sweep_schedule="*/1 * * * * *") as host:
        yield host


def _rows(url: str, sql: str, *args) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, args).fetchall()


def test_a_document_vaulted_but_never_queued_completes_once_and_only_once(
        app: AppHost, vault_storage: str, vault_table: str) -> None:
    # As the receiver leaves it after a crash between its vault write and its send: vaulted, no message.
    vault = TableVault.from_connection_string(vault_storage, vault_table)
    received = datetime.now(UTC) - reconcile.GRACE - timedelta(minutes=1)
    orphan = str(ULID.from_datetime(received))
    # The vendor's partition; the reconciler finds it among the sources the pipeline knows (here: the
    # vendor's fresh submission below; in Azure every submitting vendor is registered).
    vault.put(source=TEST_VENDOR, submission_id=orphan, content_type="text/xml+markr", received_at=received,
              body=make_document([{"student_number": "S1", "test_id": TEST_ID, "available": 20, "obtained": 15},
                                  {"student_number": "S2", "test_id": TEST_ID, "available": 20, "obtained": 5}]))
    vault.record_status(TEST_VENDOR, orphan, {"enqueueError": "ConnectionError: the bus is down"})
    # A fresh one, queued normally, is undisturbed (and too young for the reconciler anyway).
    fresh = post_document(app, make_document([{"student_number": "S3", "test_id": TEST_ID, "available": 20,
                                               "obtained": 10}]))

    done = app.wait_for_status(orphan, {"completed", "rejected", "failed"})
    assert done["status"] == "completed" and done["results"] == 2
    # The vault's receipt time, as the receiver sends it.
    assert abs(datetime.fromisoformat(done["receivedAt"]) - received) < timedelta(milliseconds=1)
    assert app.wait_for_status(fresh, {"completed"})["status"] == "completed"
    assert "requeuedAt" in vault.get(TEST_VENDOR, orphan).status

    # Later runs (one per second) send nothing again: one validation, one marking, counted once.
    checkpoint = _rows(app.database_url, "SELECT last_sequence_number FROM dead_letter_sweep_checkpoints"
                                         " WHERE queue = %s", f"vault:{TEST_VENDOR}")
    assert checkpoint and checkpoint[0][0] >= reconcile.id_ms(orphan)
    time.sleep(2.5)
    assert _rows(app.database_url, "SELECT count(*) FROM applied_markings WHERE submission_id = %s", orphan) == [(1,)]
    assert _rows(app.database_url, "SELECT count(*) FROM bus.seen_message_ids WHERE message_id = %s",
                 f"{orphan}/{orphan}/validation") == [(1,)]
    status, stats = app.get(f"/api/results/{TEST_ID}/aggregate")
    assert status == 200 and stats["count"] == 3

    # From scratch (checkpoint lost), a run finds the status row and sends nothing; and the message it
    # would send, if it raced the receiver's, is the receiver's own: duplicate detection drops it.
    from shared.bootstrap import services

    s = services()
    report = reconcile.reconcile([TEST_VENDOR], vault=vault, bus=s.bus, progress=_Forgetful(s.pool))
    assert report.checked == 1 and report.requeued == []
    s.bus.send(VALIDATION, reconcile.validation_message(vault.get(TEST_VENDOR, orphan)))
    assert _rows(app.database_url, "SELECT count(*) FROM bus.messages WHERE queue = %s", VALIDATION) == [(0,)]
    time.sleep(1.0)
    assert _rows(app.database_url, "SELECT count(*) FROM applied_markings WHERE submission_id = %s", orphan) == [(1,)]
    assert app.get(f"/api/results/{TEST_ID}/aggregate")[1]["count"] == 3


class _Forgetful(reconcile.PostgresProgress):
    def load(self, source: str) -> int:
        return 0


def test_a_message_that_fails_its_schema_is_dead_lettered_at_once_and_listed(app: AppHost) -> None:
    from shared.bootstrap import services

    good = post_document(app, make_document([{"student_number": "G1", "test_id": TEST_ID}]))
    app.wait_for_status(good, {"completed"})
    bad_run = str(ULID())
    body = json.loads(messages.marking(SubmissionRef(bad_run, "default", bad_run)).body)
    body["runId"] = 42  # not a string: the marking schema refuses it
    services().bus.send(MARKING, OutgoingMessage(json.dumps(body).encode(), message_id="bad-marking",
                                                 correlation_id=bad_run))
    deadline = time.monotonic() + 30
    while True:
        listed = cli(app, "dead-letters", "list", MARKING, "--json")
        assert listed.exit_code == 0, listed.output
        dead = json.loads(listed.output)["deadLetters"]
        if dead or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    [one] = dead
    assert (one["messageId"], one["deadLetterReason"], one["deliveryCount"]) == ("bad-marking", "MessageSchemaInvalid", 1)
    assert "does not match its schema" in one["deadLetterErrorDescription"]
    assert "runId" in one["deadLetterErrorDescription"]
    table = cli(app, "dead-letters", "list", MARKING)
    assert "bad-marking" in table.output and "MessageSchemaInvalid" in table.output
    status, counts = app.get("/api/ops/queues")
    assert {q["queue"]: q["deadLettered"] for q in counts["queues"]}[MARKING] == 1

"""A poison submission on the real app (local host, queue engine, PostgreSQL, Azurite): it dead-letters,
its status says `failed`, an operator sees it with `markr-ops`, fixes the cause, resubmits, and it
completes - while the other submissions are undisturbed."""
from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest

from tests.documents import make_document
from tests.e2e.test_ops_app import AppHost, cli, post_document, start_app

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TEST_ID = "4711"
RETRY_QUEUE = "submission-marking-retry"


@pytest.fixture
def app(database_url: str, vault_storage: str, vault_table: str,
        monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[AppHost]:
    with start_app(database_url, vault_storage, vault_table, monkeypatch, tmp_path,
                   sweep_schedule="*/1 * * * * *") as host:
        yield host


def _doc(students: list[tuple[str, int]]) -> bytes:
    return make_document([{"student_number": s, "test_id": TEST_ID, "available": 20, "obtained": o}
                          for s, o in students])


def _results(url: str, submission_id: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT s.test_id, s.student_number, available, obtained FROM student_results s"
            " JOIN student_submissions l USING (test_id, student_number) WHERE l.submission_id = %s"
            " ORDER BY 1, 2", (submission_id,)).fetchall()


def test_poison_submission_dead_letters_shows_failed_and_completes_after_resubmit(app: AppHost) -> None:
    with psycopg.connect(app.database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE student_results ADD CONSTRAINT poison CHECK (student_number <> 'P1') NOT VALID")

    before = post_document(app, _doc([("A1", 10), ("A2", 12)]))
    poison = post_document(app, _doc([("P1", 20), ("P2", 4)]))
    after = post_document(app, _doc([("B1", 15)]))

    # The marker's batch failed; the poison message alone moved to the retry queue and died there.
    failed = app.wait_for_status(poison, {"failed"})
    assert failed["failure"]["stage"] == RETRY_QUEUE
    assert failed["failure"]["reason"] == "MaxDeliveryCountExceeded"
    assert "poison" in (failed["failure"]["description"] or "")  # the constraint violation, as raised
    for sid in (before, after):
        assert app.wait_for_status(sid, {"completed"})["status"] == "completed"
    undisturbed = {sid: _results(app.database_url, sid) for sid in (before, after)}
    assert app.get(f"/api/results/{TEST_ID}/aggregate")[1]["count"] == 3

    listed = cli(app, "dead-letters", "list", RETRY_QUEUE, "--json")
    assert listed.exit_code == 0, listed.output
    dead = json.loads(listed.output)["deadLetters"]
    assert [(d["messageId"], d["correlationId"], d["deadLetterReason"], d["deliveryCount"]) for d in dead] == [
        (f"{poison}/{poison}/marking/retry", poison, "MaxDeliveryCountExceeded", 10)]
    table = cli(app, "dead-letters", "list", RETRY_QUEUE)
    assert poison in table.output and "MaxDeliveryCountExceeded" in table.output

    status, counts = app.get("/api/ops/queues")
    assert status == 200
    by_queue = {q["queue"]: q for q in counts["queues"]}
    assert by_queue[RETRY_QUEUE]["deadLettered"] == 1 and by_queue["submission-marking"]["deadLettered"] == 0
    cli_counts = json.loads(cli(app, "queues", "--json").output)["queues"]
    assert {q["queue"]: q["deadLettered"] for q in cli_counts} == {q: c["deadLettered"] for q, c in by_queue.items()}

    shown = cli(app, "dead-letters", "show", RETRY_QUEUE, dead[0]["messageId"])
    assert shown.exit_code == 0 and json.loads(shown.output)["body"]["submissionId"] == poison

    # Still failed after more sweeps: re-sweeping the same dead letter is dropped as a duplicate.
    assert app.get(f"/api/submissions/{poison}")[1]["status"] == "failed"

    with psycopg.connect(app.database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE student_results DROP CONSTRAINT poison")
    resubmitted = cli(app, "dead-letters", "resubmit", RETRY_QUEUE, dead[0]["messageId"], "--json")
    assert resubmitted.exit_code == 0, resubmitted.output
    new_id = json.loads(resubmitted.output)["resubmitted"][dead[0]["messageId"]]
    assert new_id.startswith(f"{poison}/{poison}/marking/retry/resubmit/")

    app.wait_for_status(poison, {"completed"})
    assert _results(app.database_url, poison) == [(TEST_ID, "P1", 20, 20), (TEST_ID, "P2", 20, 4)]
    assert app.get(f"/api/results/{TEST_ID}/aggregate")[1]["count"] == 5
    assert {sid: _results(app.database_url, sid) for sid in (before, after)} == undisturbed
    assert json.loads(cli(app, "dead-letters", "list", RETRY_QUEUE, "--json").output)["deadLetters"] == []
    assert app.get(f"/api/submissions/{poison}")[1]["status"] == "completed"

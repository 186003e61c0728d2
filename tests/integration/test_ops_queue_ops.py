"""The local BusAdmin adapter, the dead-letter sweeper and the markr-ops CLI's exit codes, against a
real PostgreSQL queue engine."""
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from markr_ops.cli import main
from shared import bootstrap
from shared.bus.local import LocalBusAdmin, LocalQueueEngine
from shared.bus.port import BusAdminError, OutgoingMessage
from shared.bus.queues import AGGREGATION, MARKING, MARKING_RETRY, NOTIFICATION, VALIDATION
from shared.db.connection import make_pool
from shared.ops.sweep import PostgresCheckpoints, sweep
from shared.pipeline import messages
from shared.pipeline.messages import SubmissionRef

pytestmark = pytest.mark.integration

SID = "01HZX3K9Q5M7B2C4D6E8F0G1H2"


@pytest.fixture
def engine(database_url: str) -> Iterator[LocalQueueEngine]:
    e = LocalQueueEngine(database_url)
    yield e
    e.close()


def dead_letter(engine: LocalQueueEngine, queue: str, message: OutgoingMessage, reason: str = "Broken",
                description: str = "it broke") -> str:
    engine.send(queue, message)
    [received] = engine.receive(queue, 1, message_ids=[message.message_id])
    engine.dead_letter(queue, received.lock_token, reason, description)
    return message.message_id


def pipeline_message(queue: str, run: str, stage: str = "x") -> OutgoingMessage:
    ref = SubmissionRef(SID, "default", run)
    if queue == VALIDATION:
        return messages.validation(ref)
    if queue == MARKING:
        return messages.marking(ref)
    if queue == AGGREGATION:
        return messages.aggregation(ref, {f"test-{stage}": 1})
    return messages.notification(ref, "received")


def plain(message_id: str) -> OutgoingMessage:
    return OutgoingMessage(body=json.dumps({"n": message_id}).encode(), message_id=message_id,
                           correlation_id="corr", application_properties={"kind": "test", "n": 7})


def test_purge_removes_only_the_named_dead_letters(engine: LocalQueueEngine) -> None:
    ops = LocalBusAdmin(engine)
    ids = [dead_letter(engine, MARKING, plain(f"m-{i}")) for i in range(4)]
    engine.send(MARKING, plain("alive"))
    assert ops.purge(MARKING, [ids[0], ids[2], "no-such-id"]) == 2
    assert [d.message_id for d in ops.dead_letters(MARKING)] == [ids[1], ids[3]]
    assert [m.message_id for m in engine.peek(MARKING)] == ["alive"]  # the live queue is untouched
    assert ops.purge(MARKING) == 2
    assert ops.dead_letters(MARKING) == [] and ops.counts(MARKING).active == 1


def test_resubmit_sends_a_new_message_then_removes_the_dead_letter(engine: LocalQueueEngine) -> None:
    ops = LocalBusAdmin(engine)
    first, second = dead_letter(engine, VALIDATION, plain("v-1")), dead_letter(engine, VALIDATION, plain("v-2"))
    result = ops.resubmit(VALIDATION, [second, "missing"])
    assert result.not_found == ["missing"] and list(result.resubmitted) == [second]
    [live] = engine.peek(VALIDATION)
    assert live.message_id == result.resubmitted[second] and live.message_id.startswith("v-2/resubmit/")
    assert (live.body, live.correlation_id, live.delivery_count) == (b'{"n": "v-2"}', "corr", 0)
    assert live.application_properties == {"kind": "test", "n": 7, "resubmittedFrom": "v-2"}
    assert [d.message_id for d in ops.dead_letters(VALIDATION)] == [first]
    # A resubmitted message that dead-letters again can be resubmitted again: another new id.
    [again] = engine.receive(VALIDATION, 1)
    engine.dead_letter(VALIDATION, again.lock_token, "Broken")
    retry = ops.resubmit(VALIDATION, [again.message_id]).resubmitted[again.message_id]
    assert retry.startswith("v-2/resubmit/") and retry != again.message_id
    assert [m.message_id for m in engine.peek(VALIDATION)] == [retry]
    assert ops.resubmit(VALIDATION).resubmitted.keys() == {first}
    assert ops.counts(VALIDATION).dead_lettered == 0 and ops.counts(VALIDATION).active == 2


def test_a_failed_send_leaves_the_message_dead_lettered(database_url: str, engine: LocalQueueEngine) -> None:
    class Unsendable(LocalQueueEngine):
        def send_many(self, queue: str, messages: list[OutgoingMessage]) -> None:
            raise ConnectionError("the queue is unreachable")

    broken = Unsendable(database_url)
    dead_letter(engine, MARKING, plain("m-1"))
    with pytest.raises(ConnectionError):
        LocalBusAdmin(broken).resubmit(MARKING, ["m-1"])
    [still] = LocalBusAdmin(engine).dead_letters(MARKING)
    assert (still.message_id, still.reason) == ("m-1", "Broken")
    assert engine.peek(MARKING) == []


def test_counts_and_peek_show_dead_letters_with_their_reason(engine: LocalQueueEngine) -> None:
    ops = LocalBusAdmin(engine)
    dead_letter(engine, AGGREGATION, plain("a-1"), "MaxDeliveryCountExceeded", "lock expired")
    engine.send(AGGREGATION, plain("a-2"))
    counts = ops.counts(AGGREGATION)
    assert (counts.active, counts.scheduled, counts.dead_lettered) == (1, 0, 1)
    assert counts.oldest_active_enqueued_utc is not None
    [dead] = ops.dead_letters(AGGREGATION)
    assert (dead.reason, dead.description, dead.correlation_id) == ("MaxDeliveryCountExceeded", "lock expired", "corr")
    assert ops.dead_letter(AGGREGATION, "a-1") == dead and ops.dead_letter(AGGREGATION, "a-2") is None
    with pytest.raises(BusAdminError, match="unknown queue 'nope'"):
        ops.counts("nope")


@pytest.fixture
def checkpoints(database_url: str) -> Iterator[PostgresCheckpoints]:
    pool = make_pool(database_url, max_size=2)
    yield PostgresCheckpoints(pool)
    pool.close()


def notified_failures(engine: LocalQueueEngine) -> list[tuple]:
    events = [json.loads(e.body) for e in engine.peek(NOTIFICATION, max_messages=1000)]
    return sorted((e["failure"]["stage"], e["failure"]["reason"], e["runId"]) for e in events)


def test_sweep_reports_each_dead_letter_once_and_never_loops_on_notifications(
        engine: LocalQueueEngine, checkpoints: PostgresCheckpoints) -> None:
    ops = LocalBusAdmin(engine)
    run = "01HZX3K9Q5M7B2C4D6E8F0G1H3"
    dead_letter(engine, VALIDATION, pipeline_message(VALIDATION, run), "TTLExpiredException", "expired")
    dead_letter(engine, MARKING, pipeline_message(MARKING, run), "MaxDeliveryCountExceeded", "CheckViolation")
    dead_letter(engine, AGGREGATION, pipeline_message(AGGREGATION, run, "a"))
    dead_letter(engine, AGGREGATION, plain("not-a-pipeline-message"))
    retried = "01HZX3K9Q5M7B2C4D6E8F0G1H4"  # a retry queue carries its queue's messages
    dead_letter(engine, MARKING_RETRY, pipeline_message(MARKING, retried), "MaxDeliveryCountExceeded", "retry")
    dead_letter(engine, NOTIFICATION, pipeline_message(NOTIFICATION, run))

    report = sweep(ops, engine, checkpoints=checkpoints, settle=timedelta(0))
    assert {q: n for q, n in report.notified.items() if n} == {
        VALIDATION: 1, MARKING: 1, AGGREGATION: 1, MARKING_RETRY: 1}
    assert report.unreadable == [f"{AGGREGATION}/not-a-pipeline-message"]
    again = sweep(ops, engine, checkpoints=checkpoints, settle=timedelta(0))
    assert not any(again.notified.values()) and again.unreadable == []  # nothing read twice
    # The notification dead letter is not reported; each other one once.
    assert notified_failures(engine) == [
        (AGGREGATION, "Broken", run), (MARKING, "MaxDeliveryCountExceeded", run),
        (MARKING_RETRY, "MaxDeliveryCountExceeded", retried), (VALIDATION, "TTLExpiredException", run)]
    for e in engine.peek(NOTIFICATION):
        messages.decode(NOTIFICATION, e.body)  # valid notifications
        assert e.correlation_id == SID


class ShortPages:
    """A BusAdmin whose peek returns fewer dead letters than asked for, as a Service Bus peek may."""

    def __init__(self, admin: LocalBusAdmin, most: int) -> None:
        self.admin, self.most, self.calls = admin, most, 0

    def dead_letters(self, queue: str, limit: int = 100, from_sequence_number: int = 0):
        self.calls += 1
        return self.admin.dead_letters(queue, min(limit, self.most), from_sequence_number)


@pytest.mark.parametrize("page, most", [(3, 3), (100, 2)], ids=["several-pages", "short-pages"])
def test_sweep_reads_every_page_and_reports_each_dead_letter_once(
        engine: LocalQueueEngine, checkpoints: PostgresCheckpoints, page: int, most: int) -> None:
    runs = [f"01HZX3K9Q5M7B2C4D6E8F0G{i:03d}" for i in range(8)]
    for run in runs:
        dead_letter(engine, MARKING, pipeline_message(MARKING, run))
    reported: list[tuple] = []
    admin = ShortPages(LocalBusAdmin(engine), most)
    report = sweep(admin, report_failed=lambda ref, failure: reported.append((ref, failure)),
                   checkpoints=checkpoints, page=page, settle=timedelta(0))
    assert report.notified[MARKING] == 8
    assert sorted(ref.run_id for ref, _ in reported) == runs
    assert {(f.stage, f.reason) for _, f in reported} == {(MARKING, "Broken")}
    assert len({f.dead_letter_id for _, f in reported}) == 8
    reported.clear()
    assert sweep(admin, report_failed=lambda *a: reported.append(a), checkpoints=checkpoints,
                 settle=timedelta(0)).notified[MARKING] == 0
    assert reported == []


def test_sweep_reports_an_older_message_that_dies_after_the_checkpoint_passed_it(
        engine: LocalQueueEngine, checkpoints: PostgresCheckpoints) -> None:
    ops = LocalBusAdmin(engine)
    older, newer = pipeline_message(MARKING, "01HZX3K9Q5M7B2C4D6E8F0G001"), \
        pipeline_message(MARKING, "01HZX3K9Q5M7B2C4D6E8F0G002")
    engine.send_many(MARKING, [older, newer])
    held, other = engine.receive(MARKING, 2)  # `older` is still being processed ...
    engine.dead_letter(MARKING, other.lock_token, "Broken")
    assert sweep(ops, engine, checkpoints=checkpoints, settle=timedelta(0)).notified[MARKING] == 1
    engine.dead_letter(MARKING, held.lock_token, "Broken")  # ... and dies after the sweep
    assert sweep(ops, engine, checkpoints=checkpoints, settle=timedelta(0)).notified[MARKING] == 1
    assert [r for _, _, r in notified_failures(engine)] == ["01HZX3K9Q5M7B2C4D6E8F0G001",
                                                           "01HZX3K9Q5M7B2C4D6E8F0G002"]


def test_sweep_reads_young_dead_letters_again_without_announcing_them_twice(
        engine: LocalQueueEngine, checkpoints: PostgresCheckpoints) -> None:
    ops = LocalBusAdmin(engine)
    dead_letter(engine, VALIDATION, pipeline_message(VALIDATION, "01HZX3K9Q5M7B2C4D6E8F0G001"))
    # Younger than `settle`: one that took an earlier number may still commit, so the checkpoint waits.
    assert sweep(ops, engine, checkpoints=checkpoints, settle=timedelta(hours=1)).notified[VALIDATION] == 1
    assert checkpoints.load(VALIDATION) == -1
    assert sweep(ops, engine, checkpoints=checkpoints, settle=timedelta(hours=1)).notified[VALIDATION] == 1
    assert len(engine.peek(NOTIFICATION)) == 1  # the repeat was dropped by duplicate detection
    assert sweep(ops, engine, checkpoints=checkpoints, settle=timedelta(0)).notified[VALIDATION] == 1
    assert sweep(ops, engine, checkpoints=checkpoints, settle=timedelta(0)).notified[VALIDATION] == 0


# --- the CLI's exit codes ---------------------------------------------------------------------------

@pytest.fixture
def run_cli(database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("MARKR_DATABASE_URL", database_url)
    monkeypatch.setenv("MARKR_BUS", "local")
    settings = tmp_path / "settings.json"
    settings.write_text('{"Values": {}}')
    bootstrap.reset()

    def run(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(main, ["--settings", str(settings), *args], input=input, env={"COLUMNS": "250"})

    yield run
    bootstrap.reset()


def test_cli_exit_codes(run_cli, engine: LocalQueueEngine) -> None:
    dead_letter(engine, MARKING, plain("m-1"))
    dead_letter(engine, MARKING, plain("m-2"))
    queues = run_cli("queues", "--json")
    assert queues.exit_code == 0
    assert {q["queue"]: q["deadLettered"] for q in json.loads(queues.output)["queues"]}[MARKING] == 2
    assert "submission-marking" in run_cli("queues").output

    assert run_cli("dead-letters", "purge", MARKING).exit_code == 2  # neither ids nor --all
    assert run_cli("dead-letters", "purge", MARKING, "m-1", "--all").exit_code == 2
    assert run_cli("dead-letters", "list", "no-such-queue").exit_code == 2
    assert run_cli("reprocess").exit_code == 2  # --all is required
    assert run_cli("reprocess", "--all", "--since", "last tuesday").exit_code == 2

    declined = run_cli("dead-letters", "purge", MARKING, "m-1", input="n\n")
    assert declined.exit_code == 1 and len(LocalBusAdmin(engine).dead_letters(MARKING)) == 2
    purged = run_cli("dead-letters", "purge", MARKING, "m-1", input="y\n")
    assert purged.exit_code == 0 and "1 dead letter(s) purged" in purged.output

    missing = run_cli("dead-letters", "show", MARKING, "m-404")
    assert missing.exit_code == 1 and "no dead letter 'm-404'" in missing.output
    unknown = run_cli("dead-letters", "resubmit", MARKING, "m-404")
    assert unknown.exit_code == 1 and "m-404" in unknown.output
    bad_replay = run_cli("replay", "not-a-ulid!")
    assert bad_replay.exit_code == 1 and "Traceback" not in bad_replay.output


def test_cli_reports_an_unreachable_database_in_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MARKR_DATABASE_URL", "postgresql://markr@127.0.0.1:9/markr?connect_timeout=2")
    monkeypatch.setenv("MARKR_BUS", "local")
    settings = tmp_path / "settings.json"
    settings.write_text('{"Values": {}}')
    bootstrap.reset()
    try:
        result = CliRunner().invoke(main, ["--settings", str(settings), "queues"])
    finally:
        bootstrap.reset()
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "Traceback" not in result.output

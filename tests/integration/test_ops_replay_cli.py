"""`markr-ops replay` and `reprocess` against a real vault (Azurite) and local queue engine: what they
send, and what they must not send. Nothing consumes the queues here, so every message sent stays
in the validation queue to be counted."""
from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result
from ulid import ULID

from markr_ops.cli import main
from shared import bootstrap
from shared.bus.local import LocalQueueEngine
from shared.bus.queues import NOTIFICATION, VALIDATION

pytestmark = pytest.mark.integration

MAY_1 = datetime(2024, 5, 1, tzinfo=UTC)
RECORDS = [  # (source, received at)
    ("vendor-a", datetime(2024, 4, 30, 23, 59, 59, tzinfo=UTC)),
    ("vendor-a", MAY_1),
    ("vendor-b", datetime(2024, 5, 2, 8, tzinfo=UTC)),
    ("vendor-b", datetime(2024, 4, 1, tzinfo=UTC)),
]


class Ops:
    def __init__(self, database_url: str, settings: Path, engine: LocalQueueEngine, vaulted: dict) -> None:
        self.database_url, self.settings, self.engine, self.vaulted = database_url, settings, engine, vaulted

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(main, ["--settings", str(self.settings), *args], input=input,
                                  env={"COLUMNS": "250"})

    def sent(self, queue: str = VALIDATION) -> list[str]:
        """The submissions that have a message waiting in `queue`, sorted."""
        return sorted(json.loads(m.body)["submissionId"] for m in self.engine.peek(queue, max_messages=1000))


@pytest.fixture
def ops(database_url: str, vault_storage: str, vault_table: str, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> Iterator[Ops]:
    for key, value in {"MARKR_DATABASE_URL": database_url, "MARKR_BUS": "local", "VaultStorage": vault_storage,
                       "MARKR_VAULT_TABLE": vault_table, "MARKR_VAULT_KEY_FILE": str(tmp_path / "kek.json")}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)  # the default checkpoint goes under the current directory
    settings = tmp_path / "settings.json"
    settings.write_text('{"Values": {}}')
    bootstrap.reset()
    vault = bootstrap.services().vault
    vaulted = {}
    for source, at in RECORDS:
        sid = str(ULID())
        vault.put(source=source, submission_id=sid, content_type="text/xml+markr", body=b"<x/>", received_at=at)
        vaulted[sid] = (source, at)
    engine = LocalQueueEngine(database_url)
    try:
        yield Ops(database_url, settings, engine, vaulted)
    finally:
        engine.close()
        bootstrap.reset()


def ids(ops: Ops, keep) -> list[str]:
    return sorted(sid for sid, (source, at) in ops.vaulted.items() if keep(source, at))


def test_replay_checks_every_id_before_sending_any(ops: Ops) -> None:
    known = sorted(ops.vaulted)[:2]
    unknown = str(ULID())
    for order in ([*known, unknown], [unknown, *known], [known[0], unknown, known[1]]):
        result = ops("replay", *order)
        assert result.exit_code == 1 and unknown in result.output, result.output
        assert ops.sent(VALIDATION) == [] and ops.sent(NOTIFICATION) == []
    done = ops("replay", *known, "--json")
    assert done.exit_code == 0, done.output
    assert ops.sent(VALIDATION) == known and ops.sent(NOTIFICATION) == []
    # Each new run's `received` is recorded directly (one transaction), not announced to the notifier.
    runs = {r["submissionId"]: r["runId"] for r in json.loads(done.output)["runs"]}
    with psycopg.connect(ops.database_url) as conn:
        rows = conn.execute("SELECT submission_id, run_id, status, received_at FROM submissions"
                            " WHERE submission_id = ANY(%s) ORDER BY submission_id", (known,)).fetchall()
    assert [(sid, run, status) for sid, run, status, _ in rows] == [(sid, runs[sid], "received") for sid in known]
    assert [at for *_, at in rows] == [ops.vaulted[sid][1] for sid in known]


def test_reprocess_since_selects_what_was_received_from_then_on(ops: Ops) -> None:
    result = ops("reprocess", "--all", "--since", "2024-05-01", "--json")
    assert result.exit_code == 0, result.output
    wanted = ids(ops, lambda source, at: at >= MAY_1)
    assert len(wanted) == 2 and json.loads(result.output)["selected"] == 2
    assert ops.sent() == wanted


def test_reprocess_since_with_a_zone(ops: Ops) -> None:
    # 2024-05-01T01:00+02:00 is 2024-04-30T23:00Z: the record received at 23:59:59Z counts.
    result = ops("reprocess", "--all", "--since", "2024-05-01T01:00:00+02:00", "--json")
    assert result.exit_code == 0, result.output
    assert ops.sent() == ids(ops, lambda source, at: at >= datetime(2024, 4, 30, 23, tzinfo=UTC))


def test_reprocess_source_selects_one_source(ops: Ops) -> None:
    result = ops("reprocess", "--all", "--source", "vendor-b", "--json")
    assert result.exit_code == 0, result.output
    assert ops.sent() == ids(ops, lambda source, at: source == "vendor-b")
    both = ops("reprocess", "--all", "--source", "vendor-a", "--since", "2024-05-01", "--restart", "--json")
    assert both.exit_code == 0, both.output
    assert ops.sent() == sorted(ids(ops, lambda source, at: source == "vendor-b")
                                + ids(ops, lambda source, at: source == "vendor-a" and at >= MAY_1))


def test_rebuild_without_yes_asks_and_a_no_changes_nothing(ops: Ops) -> None:
    with psycopg.connect(ops.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO tests (test_id, results_version) VALUES ('101', 1)")
    declined = ops("reprocess", "--all", "--rebuild", input="n\n")
    assert declined.exit_code == 1 and "Empty all results" in declined.output
    with psycopg.connect(ops.database_url) as conn:
        assert conn.execute("SELECT test_id FROM tests").fetchall() == [("101",)]  # not emptied
    assert ops.sent() == []  # and nothing replayed
    accepted = ops("reprocess", "--all", "--rebuild", "--json", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    with psycopg.connect(ops.database_url) as conn:
        assert conn.execute("SELECT count(*) FROM tests").fetchone() == (0,)
    assert ops.sent() == sorted(ops.vaulted)

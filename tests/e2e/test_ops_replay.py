"""Replaying from the vault on the real app: `replay` and `reprocess --all` give exactly the results of
the original run, twice changes nothing, and an interrupted reprocess resumes from its checkpoint."""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from shared import bootstrap
from shared.ops.replay import Checkpoint, reprocess
from tests.documents import make_document
from tests.e2e.test_ops_app import FINAL, AppHost, cli, post_document, start_app

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DOCUMENTS = [
    # valid, test 101
    [{"student_number": "S1", "test_id": "101", "available": 20, "obtained": 9},
     {"student_number": "S2", "test_id": "101", "available": 20, "obtained": 17}],
    # re-scans: S3 twice in one document, S1 again with more marks, and a second test
    [{"student_number": "S3", "test_id": "101", "available": 20, "obtained": 5},
     {"student_number": "S3", "test_id": "101", "available": 22, "obtained": 11},
     {"student_number": "S1", "test_id": "101", "available": 20, "obtained": 14},
     {"student_number": "S9", "test_id": "202", "available": 10, "obtained": 10}],
    # rejected: obtained above available
    [{"student_number": "S4", "test_id": "101", "available": 20, "obtained": 25}],
    # a re-scan with lower marks than before: keeps the higher ones
    [{"student_number": "S2", "test_id": "101", "available": 20, "obtained": 3}],
    [{"student_number": "S5", "test_id": "202", "available": 10, "obtained": 4}],
    [{"student_number": "S6", "test_id": "303", "available": 5, "obtained": 1}],
    [{"student_number": "S7", "test_id": "303", "available": 5, "obtained": 5}],
]


@pytest.fixture
def app(database_url: str, vault_storage: str, vault_table: str,
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[AppHost]:
    with start_app(database_url, vault_storage, vault_table, monkeypatch, tmp_path) as host:
        yield host


@pytest.fixture
def originals(app: AppHost) -> dict[str, str]:
    """The documents posted and processed once; submission id -> final status."""
    ids = [post_document(app, make_document(spec)) for spec in DOCUMENTS]
    return {sid: app.wait_for_status(sid, FINAL)["status"] for sid in ids}


def snapshot(url: str) -> dict[str, list]:
    with psycopg.connect(url) as conn:
        return {
            "results": conn.execute(
                "SELECT test_id, student_number, available, obtained,"
                " ARRAY(SELECT l.submission_id FROM student_submissions l WHERE l.test_id = s.test_id"
                " AND l.student_number = s.student_number ORDER BY 1) FROM student_results s ORDER BY 1, 2").fetchall(),
            "statistics": conn.execute(
                "SELECT test_id, count, mean, stddev, min, max, p25, p50, p75 FROM test_statistics ORDER BY 1"
            ).fetchall(),
            "statuses": conn.execute(
                "SELECT submission_id, status, result_count, test_ids, error_count FROM submissions ORDER BY 1"
            ).fetchall(),
        }


def run_ids(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        return dict(conn.execute("SELECT submission_id, run_id FROM submissions").fetchall())


def wait_for_new_runs(app: AppHost, old_runs: dict[str, str], ids: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for sid in ids:
        while True:
            body = app.get(f"/api/submissions/{sid}")[1]
            if body["runId"] != old_runs[sid] and body["status"] in FINAL:
                break
            assert time.monotonic() < deadline, f"{sid} has no finished new run: {body}"
            time.sleep(0.1)


def test_replay_and_reprocess_reproduce_the_original_results(app: AppHost, originals: dict[str, str],
                                                             tmp_path: Path) -> None:
    assert sorted(originals.values()) == ["completed"] * 6 + ["rejected"]
    original = snapshot(app.database_url)
    assert [r[:4] for r in original["results"] if r[1] in ("S1", "S2", "S3")] == [
        ("101", "S1", 20, 14), ("101", "S2", 20, 17), ("101", "S3", 22, 11)]

    rejected = next(sid for sid, status in originals.items() if status == "rejected")
    valid = next(sid for sid, status in originals.items() if status == "completed")
    before = run_ids(app.database_url)
    replayed = cli(app, "replay", valid, rejected, "--json")
    assert replayed.exit_code == 0, replayed.output
    runs = {r["submissionId"]: r["runId"] for r in json.loads(replayed.output)["runs"]}
    assert set(runs) == {valid, rejected} and all(runs[s] > before[s] for s in runs)
    wait_for_new_runs(app, before, [valid, rejected])
    assert snapshot(app.database_url) == original

    checkpoint = tmp_path / "reprocess.jsonl"
    for extra in ([], ["--restart"]):  # the second time over a finished checkpoint: twice = once
        done = cli(app, "reprocess", "--all", "--wait", "--timeout", "120", "--checkpoint", str(checkpoint),
                   "--json", *extra)
        assert done.exit_code == 0, done.output
        summary = json.loads(done.output)
        assert (summary["selected"], summary["started"], summary["alreadyStarted"]) == (7, 7, 0)
        assert summary["statuses"] == {"completed": 6, "rejected": 1}
        assert snapshot(app.database_url) == original

    again = cli(app, "reprocess", "--all", "--checkpoint", str(checkpoint), "--json")
    assert again.exit_code == 0 and json.loads(again.output)["alreadyFinished"] is True


class FailingBus:
    """The real bus, cut off after `sends` calls: an interrupted reprocess."""

    def __init__(self, bus, sends: int) -> None:
        self.bus, self.left = bus, sends

    def send_many(self, queue, messages) -> None:
        if self.left == 0:
            raise ConnectionError("the bus went away")
        self.left -= 1
        self.bus.send_many(queue, messages)


def test_interrupted_reprocess_resumes_from_its_checkpoint(app: AppHost, originals: dict[str, str],
                                                           tmp_path: Path) -> None:
    original = snapshot(app.database_url)
    checkpoint = tmp_path / "reprocess.jsonl"
    with pytest.raises(ConnectionError):
        # batches of 2: one send per batch, so the second send (batch 2) fails after one batch
        app_services = bootstrap.services()
        reprocess(vault=app_services.vault, bus=FailingBus(app_services.bus, 1), store=app_services.store,
                  checkpoint=checkpoint, batch=2)
    assert len(Checkpoint.load(checkpoint).runs) == 2
    with checkpoint.open("a") as out:
        out.write('{"submissionId": "01')  # killed in the middle of writing a line

    resumed = cli(app, "reprocess", "--all", "--wait", "--timeout", "120", "--checkpoint", str(checkpoint),
                  "--json")
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads(resumed.output)
    assert (summary["selected"], summary["started"], summary["alreadyStarted"]) == (7, 5, 2)
    assert summary["statuses"] == {"completed": 6, "rejected": 1}
    assert snapshot(app.database_url) == original
    assert Checkpoint.load(checkpoint).finished

    mismatch = cli(app, "reprocess", "--all", "--source", "other", "--checkpoint", str(checkpoint))
    assert mismatch.exit_code == 1 and "pass --restart" in mismatch.output and "Traceback" not in mismatch.output


def test_rebuild_replaces_results_with_what_the_vault_supports(app: AppHost, originals: dict[str, str],
                                                               tmp_path: Path) -> None:
    """A plain reprocess can only raise marks (GREATEST); --rebuild recomputes them from the vault alone."""
    original = snapshot(app.database_url)
    with psycopg.connect(app.database_url, autocommit=True) as conn:  # marks no document supports
        conn.execute("UPDATE student_results SET obtained = available WHERE student_number = 'S2'")
    checkpoint = tmp_path / "reprocess.jsonl"
    plain = cli(app, "reprocess", "--all", "--wait", "--timeout", "120", "--checkpoint", str(checkpoint), "--json")
    assert plain.exit_code == 0, plain.output
    assert snapshot(app.database_url)["results"] != original["results"]  # the bogus marks survive a replay

    refused = cli(app, "reprocess", "--all", "--rebuild", "--source", "default", "--checkpoint", str(checkpoint))
    assert refused.exit_code == 2
    rebuilt = cli(app, "reprocess", "--all", "--rebuild", "--yes", "--wait", "--timeout", "120",
                  "--checkpoint", str(checkpoint), "--json")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert json.loads(rebuilt.output)["statuses"] == {"completed": 6, "rejected": 1}
    after = snapshot(app.database_url)
    assert (after["results"], after["statistics"]) == (original["results"], original["statistics"])

"""Replaying submissions from the vault: each one starts a new run (a new ULID run id).

A run starts the way the receiver starts one: a validation message carrying the receipt time. Its
`received` status is recorded here too, for a whole batch in one transaction (rather than one
notification, so one notifier invocation, per run), so the status shows the new run at once. The
run id sorts after every earlier run, so the status starts over; results are merged with GREATEST,
so replaying a submission any number of times leaves the same results as once.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ulid import ULID

from shared.bus.port import Bus
from shared.bus.queues import VALIDATION
from shared.domain.submission_status import Event
from shared.ops.retract import RETRACTED_FIELD
from shared.pipeline import messages
from shared.pipeline.messages import InlineBody, SubmissionRef
from shared.pipeline.ports import PipelineStore

log = logging.getLogger(__name__)

BATCH = 100
FINAL = ("rejected", "completed", "failed", "retracted")


class ReplayError(Exception):
    """A replay that cannot be done as asked (unknown submission, checkpoint mismatch)."""


def start_runs(records: Iterable[Any], bus: Bus, store: PipelineStore) -> list[SubmissionRef]:
    """Start a new run for each vault record (VaultRecord: source, submission_id, received_at)."""
    records = list(records)
    refs = [SubmissionRef(r.submission_id, r.source, str(ULID())) for r in records]
    if not refs:
        return refs
    # Small bodies travel inline, as from the receiver: the listing already read them, so the
    # validator need not read each one back from the vault.
    bus.send_many(VALIDATION, [messages.validation(ref, InlineBody.of(r), r.received_at)
                               for ref, r in zip(refs, records, strict=True)])
    # Recorded after the send: if this fails, the validator still records `received` from the
    # message's receipt time; if the send had failed, no status points at a run that never starts.
    # Racing the validator is harmless: `received` never moves a status back.
    store.record_events([Event(ref.submission_id, ref.source, ref.run_id, "received", r.received_at)
                         for ref, r in zip(refs, records, strict=True)])
    for ref in refs:
        log.info("replay: run %s started", ref.run_id, extra={"submission_id": ref.submission_id})
    return refs


def replay(submission_ids: list[str], *, vault, bus: Bus, store: PipelineStore) -> list[SubmissionRef]:
    """Replay these submissions (any source). Nothing is sent unless every one is in the vault."""
    records, missing = [], []
    for sid in dict.fromkeys(submission_ids):
        try:
            record = vault.find(sid)
        except ValueError as exc:
            raise ReplayError(f"{sid!r} is not a submission id: {exc}") from None
        (records if record else missing).append(record or sid)
    if missing:
        raise ReplayError(f"not in the vault: {', '.join(missing)}")
    retracted = [r.submission_id for r in records if RETRACTED_FIELD in r.status]
    if retracted:
        raise ReplayError(f"retracted, so never processed again: {', '.join(retracted)}")
    return start_runs(records, bus, store)


# --- reprocess: the whole vault, resumable ---------------------------------------------------------

@dataclass
class Checkpoint:
    """A JSON-lines file: a header with the filters, one line per run started, a `finished` line."""

    path: Path
    header: dict[str, Any]
    runs: dict[str, str] = field(default_factory=dict)  # submission id -> run id
    finished: bool = False

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        if not path.exists():
            return None
        text = path.read_text()
        if text and not text.endswith("\n"):
            # The process died mid-write: drop the torn line (that batch is simply sent again).
            text = text[: text.rfind("\n") + 1]
            with path.open("r+") as out:
                out.truncate(len(text.encode()))
        entries = []
        for number, line in enumerate(text.splitlines(), 1):
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                raise ReplayError(f"checkpoint {path} line {number} is not JSON; remove it or pass --restart") from None
        if not entries or entries[0].get("checkpoint") != "markr-ops reprocess":
            raise ReplayError(f"{path} is not a reprocess checkpoint; remove it or pass --restart")
        cp = cls(path, entries[0])
        for entry in entries[1:]:
            if "submissionId" in entry:
                cp.runs[entry["submissionId"]] = entry["runId"]
            elif entry.get("finished"):
                cp.finished = True
        return cp

    @classmethod
    def create(cls, path: Path, since: datetime | None, source: str | None) -> Checkpoint:
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"checkpoint": "markr-ops reprocess", "since": since.isoformat() if since else None,
                  "source": source, "startedAt": datetime.now(UTC).isoformat()}
        cp = cls(path, header)
        path.write_text(json.dumps(header) + "\n")
        return cp

    def _append(self, entries: list[dict[str, Any]]) -> None:
        with self.path.open("a") as out:
            out.write("".join(json.dumps(e) + "\n" for e in entries))
            out.flush()
            os.fsync(out.fileno())

    def record(self, refs: list[SubmissionRef]) -> None:
        self._append([{"submissionId": r.submission_id, "source": r.source, "runId": r.run_id} for r in refs])
        self.runs.update({r.submission_id: r.run_id for r in refs})

    def finish(self) -> None:
        self._append([{"finished": True, "at": datetime.now(UTC).isoformat()}])
        self.finished = True


@dataclass(frozen=True)
class ReprocessReport:
    total: int  # submissions the filters select
    started: int  # runs started by this invocation
    already: int  # runs an earlier, interrupted invocation had started
    runs: dict[str, str]  # every run of this checkpoint: submission id -> run id
    was_finished: bool  # the checkpoint was already finished: nothing was done


def reprocess(*, vault, bus: Bus, store: PipelineStore, checkpoint: Path, since: datetime | None = None, source: str | None = None,
              restart: bool = False, batch: int = BATCH,
              progress: Callable[[int, int], None] | None = None) -> ReprocessReport:
    """Start a new run for every vaulted submission (filtered by `since`/`source`), in vault order.

    Progress is recorded in `checkpoint` after every batch, so an interrupted reprocess picks up where
    it stopped (a batch sent but not recorded is sent again, which is harmless). A finished checkpoint
    is left alone unless `restart`.
    """
    since = since.astimezone(UTC) if since else None
    cp = None if restart else Checkpoint.load(checkpoint)
    wanted = {"since": since.isoformat() if since else None, "source": source}
    if cp is not None:
        recorded = {"since": cp.header.get("since"), "source": cp.header.get("source")}
        if recorded != wanted:
            raise ReplayError(f"checkpoint {checkpoint} is for {recorded}, not {wanted}; "
                              "pass --restart to start over, or use another --checkpoint")
        if cp.finished:
            return ReprocessReport(len(cp.runs), 0, len(cp.runs), dict(cp.runs), was_finished=True)
    else:
        cp = Checkpoint.create(checkpoint, since, source)
    # A snapshot (later arrivals run anyway), without retracted submissions: they never come back.
    records = [r for r in vault.list(source=source, since=since) if RETRACTED_FIELD not in r.status]
    already = sum(1 for r in records if r.submission_id in cp.runs)
    todo = [r for r in records if r.submission_id not in cp.runs]
    done = already
    if progress:
        progress(done, len(records))
    for start in range(0, len(todo), batch):
        refs = start_runs(todo[start:start + batch], bus, store)
        cp.record(refs)
        done += len(refs)
        if progress:
            progress(done, len(records))
    cp.finish()
    return ReprocessReport(len(records), len(todo), already, dict(cp.runs), was_finished=False)


_FINISHED = """
SELECT s.status, count(*)
  FROM unnest(%s::text[], %s::text[]) AS r(submission_id, run_id)
  JOIN submissions s ON s.submission_id = r.submission_id
 WHERE s.run_id > r.run_id OR (s.run_id = r.run_id AND s.status = ANY(%s))
 GROUP BY s.status
"""


def finished_runs(conn, runs: dict[str, str]) -> dict[str, int]:
    """How many of `runs` reached a final status, by status (a newer run counts as its own status)."""
    ids, run_ids = list(runs), [runs[i] for i in runs]
    return dict(conn.execute(_FINISHED, (ids, run_ids, list(FINAL))).fetchall())


def wait_for_runs(pool, runs: dict[str, str], *, timeout: float, poll: float = 0.5,
                  progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Block until every run is rejected, completed or failed; returns counts by status.

    Raises TimeoutError (with the counts so far) if that takes longer than `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        with pool.connection() as conn:
            counts = finished_runs(conn, runs)
        finished = sum(counts.values())
        if progress:
            progress(finished, len(runs))
        if finished >= len(runs):
            return counts
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(runs) - finished} of {len(runs)} run(s) not finished after "
                               f"{timeout:.0f} s (so far: {counts})")
        time.sleep(poll)

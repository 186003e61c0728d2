"""The queue-triggered stages: validate, mark, aggregate (batches) and notify.

The validator records its verdicts, marks what it accepted and brings the statistics up to date in
one transaction (`_record_verdicts`); the marking and aggregation stages only take over the
submissions for which that failed there (see `_finish_in_place`).

Each takes the decoded messages of one batch and the ports it needs, works set-based (one store
transaction, one send per batch), and records the status transitions it causes itself. Every stage
is safe to run again for the same messages (queues deliver at least once).

Failures:
- permanent (the message can never succeed: vault entry missing or damaged, nothing to mark) are
  recorded as a `failed` status and the message completes; no retries are burnt;
- transient ones raise. `isolate` then finds which messages of the batch fail on their own, so the
  trigger can move just those to the stage's retry queue (see functions/batches.py) while the rest
  complete; a batch in which every message fails raises as a whole (an outage: redeliver it all).
"""
from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from shared.bus.queues import AGGREGATION, MARKING
from shared.domain.model import ParsedDocument
from shared.domain.results_document import parse_results_document
from shared.domain.submission_status import Event, SubmissionStatus
from shared.pipeline import messages
from shared.pipeline.messages import InlineBody, SubmissionRef
from shared.pipeline.ports import (
    Accepted,
    Bus,
    Failure,
    Marked,
    MarkingOutcome,
    PipelineStore,
    Rejected,
    Vault,
    needed_versions,
)
from shared.vault.body import open_stream
from shared.vault.crypto import Envelope
from shared.vault.model import FORMAT_ENCRYPTED, FORMAT_PLAIN, VaultCorruptionError, VaultRecord

log = logging.getLogger(__name__)

MAX_REPORTED_PROBLEMS = 1000
T = TypeVar("T")
Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


def isolate(items: Sequence[T], run: Callable[[Sequence[T]], Any]) -> list[tuple[T, Exception]]:
    """Run the whole batch; if that fails, run each item alone and return the ones that still fail.

    Raises when every item fails (nothing in the batch can make progress: an outage, most likely).
    """
    try:
        run(items)
        return []
    except Exception as whole:
        if len(items) <= 1:
            raise
        log.warning("batch of %d failed (%s: %s); retrying its messages one by one",
                    len(items), type(whole).__name__, whole)
    failed = []
    for item in items:
        try:
            run([item])
        except Exception as exc:  # noqa: BLE001 - collected; the caller retries these on their own
            failed.append((item, exc))
    if len(failed) == len(items):
        raise failed[0][1]
    return failed


def _failed(ref: SubmissionRef, failure: Failure, at: datetime) -> Event:
    log.error("%s failed permanently: %s: %s", failure.stage, failure.reason, failure.description,
              extra={"submission_id": ref.submission_id})
    return Event(ref.submission_id, ref.source, ref.run_id, "failed", at, failure=failure.as_json())


def _parse(data: dict[str, Any], ref: SubmissionRef, vault: Vault) -> ParsedDocument | Failure:
    inline = data.get("body")
    if inline is not None:
        body = InlineBody.from_json(inline)
        sealed = body.envelope is not None
        record = VaultRecord(ref.source, ref.submission_id, "", _now(), body.byte_size, body.sha256,
                             body.compression, len(body.data), FORMAT_ENCRYPTED if sealed else FORMAT_PLAIN, 0, {},
                             body.data, Envelope.from_json(body.envelope) if sealed else None)  # type: ignore[arg-type]
        # A sealed inline body needs the vault's key to open; a plain one is opened right here.
        opener = (lambda: vault.open_body(record)) if sealed else (lambda: open_stream(record, body.data))  # noqa: E731
    else:
        stored = vault.get(ref.source, ref.submission_id)
        if stored is None:
            return Failure("validation", "vault-entry-missing",
                           f"no vault entry for submission {ref.submission_id} in source {ref.source}")
        opener = lambda: vault.open_body(stored)  # noqa: E731
    try:
        with opener() as stream:
            return parse_results_document(stream, max_errors=MAX_REPORTED_PROBLEMS)
    except (VaultCorruptionError, EOFError, zlib.error) as exc:
        # The stored bytes themselves are damaged: no retry can help, and nothing was parsed.
        return Failure("validation", "vault-entry-corrupt", f"{type(exc).__name__}: {exc}")


def validate(batch: Sequence[dict[str, Any]], *, vault: Vault, bus: Bus, store: PipelineStore,
             clock: Clock = _now) -> dict[str, int]:
    """The validation stage: documents named by queue messages (bodies inline or in the vault)."""
    started = time.perf_counter()
    parsed = []
    for data in batch:
        ref = messages.ref_of(data)
        received_at = datetime.fromisoformat(data["receivedAt"]) if "receivedAt" in data else None
        parsed.append((ref, _parse(data, ref, vault), received_at))
    return _record_verdicts(parsed, started, bus=bus, store=store, clock=clock)


@dataclass(frozen=True)
class Received:
    """A document the receiver still holds in memory, just vaulted (see validate_now.py)."""

    ref: SubmissionRef
    body: bytes
    received_at: datetime
    inline: InlineBody | None  # what a validation message for it carries
    parsed: ParsedDocument | None = None  # parsed already (a large body, while it was vaulted)


def parse_received(body: bytes) -> ParsedDocument:
    """A document the receiver holds, parsed as the validation stage parses it."""
    return parse_results_document(body, max_errors=MAX_REPORTED_PROBLEMS)


def validate_received(documents: Sequence[Received], *, bus: Bus, store: PipelineStore,
                      clock: Clock = _now) -> dict[str, SubmissionStatus]:
    """Validation of documents the receiver holds: the same verdicts and records, no vault read.
    Returns the statuses the recording left, as committed (some may be missing: read them)."""
    started = time.perf_counter()
    parsed = [(d.ref, d.parsed if d.parsed is not None else parse_received(d.body), d.received_at)
              for d in documents]
    statuses: dict[str, SubmissionStatus] = {}
    _record_verdicts(parsed, started, bus=bus, store=store, clock=clock, in_receiver=True, statuses=statuses)
    return statuses


def _record_verdicts(parsed: Sequence[tuple[SubmissionRef, ParsedDocument | Failure, datetime | None]],
                     started: float, *, bus: Bus, store: PipelineStore, clock: Clock,
                     in_receiver: bool = False, statuses: dict[str, SubmissionStatus] | None = None,
                     ) -> dict[str, int]:
    """Record the verdicts, mark what was accepted and bring its tests' statistics up to date, in one
    transaction (store.record_and_complete).

    If that fails, nothing of it is recorded. In the receiver (`in_receiver`, validate_now.py) the
    failure goes up, and the receiver hands the documents to the queue path. In the validation stage
    the steps run again one at a time: the verdicts commit first, and a failed marking or refresh is
    handed to its own stage (see `_finish_in_place`), which retries and dead-letters it alone.
    `statuses` (if given) receives the statuses the transaction left."""
    accepted: list[Accepted] = []
    rejected: list[Rejected] = []
    failed: list[Event] = []
    at = clock()
    for ref, document, received_at in parsed:
        if isinstance(document, Failure):
            failed.append(_failed(ref, document, at))
            continue
        warnings = tuple(w.to_json() for w in document.warnings[:MAX_REPORTED_PROBLEMS])
        if document.valid:
            accepted.append(Accepted(ref, document.results, tuple(document.test_ids), warnings, at, received_at))
        else:
            rejected.append(Rejected(ref, tuple(e.to_json() for e in document.errors), document.error_count,
                                     document.result_count, warnings, at, received_at))
    parsed_at = time.perf_counter()
    outcome: MarkingOutcome | None = None
    if accepted or rejected:
        try:
            outcome = store.record_and_complete(accepted, rejected, at)
        except Exception as exc:
            if in_receiver:
                raise
            log.warning("recording, marking and aggregating %d document(s) together failed (%s: %s); "
                        "one step at a time", len(accepted) + len(rejected), type(exc).__name__, exc)
            store.record_validation(accepted, rejected)
    if failed:
        store.record_events(failed)
    # One line per batch (the ids in it), not per submission: logging was a tenth of a busy host's CPU.
    # The seconds say where a large document's time goes (reading and parsing, then staging).
    if accepted:
        done = ("staged" if outcome is None else
                f"staged, marked and statistics of {len(outcome.recomputed)} test(s) recomputed")
        log.info("validated %d submission(s) (read and parsed in %.2f s, %s in %.2f s): %s", len(accepted),
                 parsed_at - started, done, time.perf_counter() - parsed_at,
                 " ".join(a.ref.submission_id for a in accepted))
    for r in rejected:
        log.info("rejected: %d problem(s)", r.error_count, extra={"submission_id": r.ref.submission_id})
    counts = {"validated": len(accepted), "rejected": len(rejected), "failed": len(failed)}
    if outcome is not None:
        _marked(outcome, store=store, at=at, seconds=None)  # its time is in the line above
        if statuses is not None:
            nothing = {ref.submission_id for ref in outcome.nothing_to_mark}  # failed since: read them
            statuses.update((sid, state) for sid, state in outcome.statuses.items() if sid not in nothing)
        counts["failed"] += len(outcome.nothing_to_mark)
        counts["marked"] = len(outcome.marked)
        counts["completed"] = len(outcome.marked)
    elif accepted:
        for key, n in _finish_in_place([a.ref for a in accepted], bus=bus, store=store, clock=clock).items():
            counts[key] = counts.get(key, 0) + n
    return counts


def _finish_in_place(refs: list[SubmissionRef], *, bus: Bus, store: PipelineStore,
                     clock: Clock) -> dict[str, int]:
    """Mark what was just validated and bring its tests' statistics up to date, in the same
    invocation: no queue hops (sends, receives, settles) between the stages of a submission.

    If marking fails here, the marking stage takes over (its messages go to the marker, whose
    batches isolate the failing submission, retry it and dead-letter it on its own); if the
    statistics fail, the aggregation stage takes over the same way. What was committed here is not
    repeated. Every message id is fixed per (submission, run, stage), so a redelivered validation
    adds no duplicates.
    """
    try:
        outcome = _apply_markings(refs, store=store, at=clock())
    except Exception as exc:  # noqa: BLE001 - handed to the marking stage, which retries on its own
        log.warning("marking %d validated submission(s) in place failed (%s: %s); queueing them for the marker",
                    len(refs), type(exc).__name__, exc)
        bus.send_many(MARKING, [messages.marking(ref) for ref in refs])
        return {"marked": 0, "queued_for_marking": len(refs)}
    counts = {"marked": len(outcome.marked), "failed": len(outcome.nothing_to_mark)}
    if not outcome.marked:
        return counts
    try:
        aggregate([_aggregation(m) for m in outcome.marked], store=store, clock=clock)
    except Exception as exc:  # noqa: BLE001 - handed to the aggregation stage, which retries on its own
        log.warning("statistics for %d marked submission(s) failed in place (%s: %s); queueing them for the "
                    "aggregator", len(outcome.marked), type(exc).__name__, exc)
        bus.send_many(AGGREGATION, [messages.aggregation(m.ref, dict(m.test_versions)) for m in outcome.marked])
        counts["queued_for_aggregation"] = len(outcome.marked)
    else:
        counts["completed"] = len(outcome.marked)
    return counts


def _aggregation(marked: Marked) -> dict[str, Any]:
    """What an aggregation message carries (messages.aggregation), as `aggregate` reads it."""
    return {**marked.ref.as_json(), "testVersions": dict(marked.test_versions)}


def mark(batch: Sequence[dict[str, Any]], *, bus: Bus, store: PipelineStore, clock: Clock = _now) -> dict[str, int]:
    """The marking stage: submissions the validator handed over (see `_finish_in_place`)."""
    outcome = _apply_markings([messages.ref_of(data) for data in batch], store=store, at=clock())
    if outcome.marked:
        bus.send_many(AGGREGATION, [messages.aggregation(m.ref, dict(m.test_versions)) for m in outcome.marked])
    return {"marked": len(outcome.marked), "failed": len(outcome.nothing_to_mark)}


def _apply_markings(refs: Sequence[SubmissionRef], *, store: PipelineStore, at: datetime) -> MarkingOutcome:
    started = time.perf_counter()
    outcome = store.apply_markings(refs, at)
    return _marked(outcome, store=store, at=at, seconds=time.perf_counter() - started)


def _marked(outcome: MarkingOutcome, *, store: PipelineStore, at: datetime, seconds: float | None) -> MarkingOutcome:
    """Record the marking's permanent failures and log what it did."""
    if outcome.nothing_to_mark:
        store.record_events([
            _failed(ref, Failure("marking", "nothing-to-mark",
                                 f"submission {ref.submission_id} has no validated results to mark"), at)
            for ref in outcome.nothing_to_mark])
    if outcome.marked:
        took = "" if seconds is None else f" in {seconds:.2f} s"
        log.info("marked %d submission(s) (%d applied before)%s: %s", len(outcome.marked),
                 sum(not m.newly_applied for m in outcome.marked), took,
                 " ".join(m.ref.submission_id for m in outcome.marked))
    return outcome


def aggregate(batch: Sequence[dict[str, Any]], *, store: PipelineStore, clock: Clock = _now) -> dict[str, int]:
    """One recomputation per test for the whole batch, then every submission in it is complete."""
    needed = needed_versions(data["testVersions"] for data in batch)
    started = time.perf_counter()
    recomputed = store.refresh_statistics(needed)
    seconds = time.perf_counter() - started
    at = clock()
    store.record_events([Event(d["submissionId"], d["source"], d["runId"], "aggregated", at,
                               test_ids=tuple(sorted(d["testVersions"]))) for d in batch])
    log.info("statistics of %d test(s) recomputed (%d already covered) in %.2f s for %d submission(s): %s",
             len(recomputed), len(needed) - len(recomputed), seconds, len(batch),
             " ".join(d["submissionId"] for d in batch))
    return {"recomputed": len(recomputed), "covered": len(needed) - len(recomputed)}


def event_of(data: dict[str, Any]) -> Event:
    return Event(
        submission_id=data["submissionId"], source=data["source"], run_id=data["runId"], event=data["event"],
        at=datetime.fromisoformat(data["at"]), result_count=data.get("resultCount"),
        test_ids=tuple(data["testIds"]) if "testIds" in data else None, test_id=data.get("testId"),
        errors=tuple(data.get("errors", ())), error_count=data.get("errorCount"),
        warnings=tuple(data.get("warnings", ())), failure=data.get("failure"),
    )


def notify(batch: Sequence[dict[str, Any]], *, store: PipelineStore) -> list[str]:
    """Events announced from outside the stages (a replay's start, the dead-letter sweeper's failures)."""
    states = store.record_events([event_of(d) for d in batch])
    for state in states:
        log.info("status %s", state.status, extra={"submission_id": state.submission_id})
    return [str(s.status) for s in states]

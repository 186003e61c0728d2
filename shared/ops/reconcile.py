"""Nothing accepted stays `received` forever: enqueue vaulted documents that were never queued.

The receiver vaults a document, then sends its validation message. A crash between the two, or a
send that failed (`503 queue-unavailable`, with `enqueueError` recorded on the vault entry), leaves a
document in the vault that no stage will ever see. The vault is the truth of what was accepted,
and nothing is written to PostgreSQL before the validator runs, so the reconciler starts from the
vault: it reads the ids vaulted since its checkpoint (a key-range query on the source's partition,
no bodies: ids are ULIDs, so ids sort by receipt time), asks PostgreSQL in one query which of them
have a status row, and sends the others the validation message the receiver would have sent.

Idempotent: the message is the receiver's own (same id `<submission>/<submission>/validation`), so
if the receiver's send did get through, duplicate detection (1 day) drops the repeat, and the
pipeline is idempotent per run anyway. Only documents older than GRACE are looked at, so a
receiver still between its vault write and its send is left alone.

The checkpoint is a receipt time (milliseconds): every document of the source vaulted before it has
been looked at. It is kept in dead_letter_sweep_checkpoints under `vault:<source>` (a name no queue
can have), saved after each page, and never moves back.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Protocol

from ulid import ULID

from shared.bus.port import Bus, OutgoingMessage
from shared.bus.queues import VALIDATION
from shared.pipeline import messages
from shared.pipeline.messages import InlineBody, SubmissionRef
from shared.vault.port import Vault

log = logging.getLogger(__name__)

GRACE = timedelta(minutes=5)  # how old a vault entry must be before a missing status row counts
PAGE = 500
MAX_PER_RUN = 10_000  # ids read per source per run; a larger backlog is read by the next runs
REQUEUED_AT = "requeuedAt"  # recorded on the vault entry of a document the reconciler enqueued


class Progress(Protocol):
    def load(self, source: str) -> int:
        """The receipt time (ms since the epoch) before which every id of `source` was looked at."""

    def save(self, source: str, before_ms: int) -> None: ...

    def known(self, submission_ids: list[str]) -> set[str]:
        """Those of the ids that have a status row (some stage has seen them)."""


class PostgresProgress:
    """Checkpoints in dead_letter_sweep_checkpoints (`vault:<source>`), status rows in submissions."""

    def __init__(self, pool) -> None:
        self._pool = pool

    @staticmethod
    def _key(source: str) -> str:
        return f"vault:{source}"  # ':' is not allowed in a queue name, so no queue's row is touched

    def load(self, source: str) -> int:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT last_sequence_number FROM dead_letter_sweep_checkpoints WHERE queue = %s",
                               (self._key(source),)).fetchone()
        return row[0] if row else 0

    def save(self, source: str, before_ms: int) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO dead_letter_sweep_checkpoints AS c (queue, last_sequence_number)"
                " VALUES (%(key)s, %(ms)s)"
                " ON CONFLICT (queue) DO UPDATE SET"
                "   last_sequence_number = greatest(c.last_sequence_number, excluded.last_sequence_number),"
                "   updated_at = now()",
                {"key": self._key(source), "ms": before_ms})

    def sources(self) -> list[str]:
        """The vault partitions to look at: every registered vendor (in Azure a vendor must be
        registered to submit), every source already in the pipeline (local development tokens may
        name any vendor), and every partition reconciled before."""
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT name FROM vendors"
                " UNION SELECT DISTINCT source FROM submissions"
                " UNION SELECT substr(queue, 7) FROM dead_letter_sweep_checkpoints WHERE queue LIKE 'vault:%'"
                " ORDER BY 1").fetchall()
        return [r[0] for r in rows]

    def known(self, submission_ids: list[str]) -> set[str]:
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT submission_id FROM submissions WHERE submission_id = ANY(%s)",
                                (submission_ids,)).fetchall()
        return {r[0] for r in rows}


@dataclass
class ReconcileReport:
    checked: int = 0  # vault ids looked at
    requeued: list[str] = field(default_factory=list)  # submission ids sent to validation


def id_floor(ms: int) -> str:
    """The smallest ULID of that millisecond: ids >= it were received at or after `ms`."""
    return str(ULID.from_bytes(ms.to_bytes(6, "big") + bytes(10)))


def id_ms(submission_id: str) -> int:
    return ULID.from_str(submission_id).milliseconds


def _pages(ids: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(ids)
    while page := list(islice(it, size)):
        yield page


def validation_message(record) -> OutgoingMessage:
    """The message the receiver sends for a vault record (same id, body and receipt time)."""
    ref = SubmissionRef(record.submission_id, record.source, run_id=record.submission_id)
    inline = (InlineBody(record.compression, record.inline, record.byte_size, record.sha256)
              if record.inline is not None else None)
    return messages.validation(ref, inline, record.received_at)


def reconcile_source(source: str, *, vault: Vault, bus: Bus, progress: Progress, now: datetime | None = None,
                     grace: timedelta = GRACE, page: int = PAGE, max_ids: int = MAX_PER_RUN) -> ReconcileReport:
    report = ReconcileReport()
    stop_ms = int(((now or datetime.now(UTC)) - grace).timestamp() * 1000)
    start_ms = progress.load(source)
    if start_ms >= stop_ms:
        return report
    ids = vault.ids(source, start=id_floor(start_ms), stop=id_floor(stop_ms))
    for ids_page in _pages(islice(ids, max_ids), page):
        report.checked += len(ids_page)
        known = progress.known(ids_page)
        orphans = [vault.get(source, sid) for sid in ids_page if sid not in known]
        orphans = [r for r in orphans if r is not None]
        if orphans:
            bus.send_many(VALIDATION, [validation_message(r) for r in orphans])
            for r in orphans:
                report.requeued.append(r.submission_id)
                log.warning("enqueued a document that was vaulted but never queued (enqueueError: %s)",
                            r.status.get("enqueueError", "none recorded"), extra={"submission_id": r.submission_id})
                try:
                    vault.record_status(source, r.submission_id, {REQUEUED_AT: datetime.now(UTC)})
                except Exception:  # noqa: BLE001 - only a note for operators; the message is sent
                    log.warning("could not record %s on the vault entry", REQUEUED_AT,
                                extra={"submission_id": r.submission_id})
        # Ids of the last millisecond are read again next time (harmless), never skipped.
        progress.save(source, id_ms(ids_page[-1]))
    if report.checked < max_ids:
        progress.save(source, stop_ms)  # the whole range was read
    return report


def reconcile(sources: Iterable[str], **kwargs) -> ReconcileReport:
    """Reconcile every given source (vault partition: one per vendor)."""
    total = ReconcileReport()
    for source in dict.fromkeys(sources):
        one = reconcile_source(source, **kwargs)
        total.checked += one.checked
        total.requeued += one.requeued
    return total

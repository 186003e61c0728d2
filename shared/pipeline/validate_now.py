"""Imports whose client waits for the verdict are validated in the receiver's own process.

The document is in memory and the client is waiting: a hop through the validation queue (send,
wake-up, receive, vault read, settle, status notification) would only add work and latency. So the
receiver runs the validation stage's own use case (stages.validate_received) right after vaulting.
Concurrent imports in one process share one run (shared/coalescing.py): one marking and one
statistics refresh per test for all of them, as a validator batch would. A run about to start waits
briefly for the documents that are still being vaulted (announced with `expecting`), so under load
runs hold what is on its way rather than what happened to be queued already.

Nothing is lost if this process dies mid-way: before any work, each document's validation message is
scheduled on the validation queue for `safety_seconds` later, and it is cancelled only once the
verdicts are recorded. If the process dies in between, the message falls due and the validator does
the work (a validation is idempotent per run, so one that falls due while the work here is still
finishing repeats it harmlessly). A document whose work fails here (an outage, a deadlock) keeps its
scheduled message, and the caller hands it to the queue path at once (see receive.py).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from shared.bus.queues import VALIDATION
from shared.coalescing import Announcement, Coalescer
from shared.domain.submission_status import SubmissionStatus
from shared.pipeline import messages, stages
from shared.pipeline.ports import Bus, PipelineStore
from shared.pipeline.stages import Received

log = logging.getLogger(__name__)

MAX_GROUP = 50
# The longest a run waits for documents still being vaulted: about one vault write. Each document
# in a run shares its marking and statistics refreshes, which cost more than the wait.
LINGER_SECONDS = 0.010


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Verdict:
    """What validating one document in place came to: its status afterwards, or why it failed."""

    status: SubmissionStatus | None = None
    error: Exception | None = None


class ValidateNow:
    def __init__(self, *, bus: Bus, store: PipelineStore, safety_seconds: float,
                 clock: Callable[[], datetime] = _now, max_group: int = MAX_GROUP,
                 linger_seconds: float = LINGER_SECONDS) -> None:
        self._bus = bus
        self._store = store
        self._safety = timedelta(seconds=safety_seconds)
        self._clock = clock
        self._groups: Coalescer[None, Received, Verdict] = Coalescer(self._run, max_group, linger_seconds)

    @property
    def runs(self) -> int:  # for tests and benchmarks
        return self._groups.groups

    def expecting(self) -> AbstractContextManager[Announcement]:
        """Say that a document is on its way (being vaulted): a run starting meanwhile waits for it,
        up to `linger_seconds`. Nothing is announced on an idle system, so nothing waits there."""
        return self._groups.expecting(None)

    def __call__(self, document: Received, announced: Announcement | None = None) -> Verdict:
        """Raises only if the safety-net message could not be scheduled (nothing was done then)."""
        return self._groups.submit(None, document, announced=announced)

    def _run(self, _key: None, documents: Sequence[Received]) -> list[Verdict]:
        deferred = [messages.validation(d.ref, d.inline, d.received_at, deferred=True) for d in documents]
        tokens = self._bus.schedule(VALIDATION, deferred, self._clock() + self._safety)
        statuses: dict[str, SubmissionStatus] = {}
        errors = self._validate(documents, statuses)
        done = [(d.ref.submission_id, t) for d, t in zip(documents, tokens, strict=True)
                if d.ref.submission_id not in errors]
        if done:
            statuses.update(self._settle([sid for sid, _ in done if sid not in statuses], [t for _, t in done]))
        return [Verdict(error=errors[d.ref.submission_id]) if d.ref.submission_id in errors
                else Verdict(status=statuses.get(d.ref.submission_id)) for d in documents]

    def _settle(self, submission_ids: list[str], tokens: list[str]) -> dict[str, SubmissionStatus]:
        """Withdraw the safety nets of the documents done, and read the statuses of `submission_ids`
        (those the recording did not answer with)."""
        try:
            self._bus.cancel_scheduled(VALIDATION, tokens)
        except Exception as exc:  # noqa: BLE001 - the messages fall due later and find the work done
            log.warning("could not cancel %d scheduled validation message(s) (%s: %s)", len(tokens),
                        type(exc).__name__, exc)
        if not submission_ids:
            return {}
        try:
            return self._store.statuses(submission_ids)
        except Exception as exc:  # noqa: BLE001 - the verdicts are recorded; the receiver waits for them instead
            log.warning("reading the statuses of %d document(s) validated in place failed (%s: %s)",
                        len(submission_ids), type(exc).__name__, exc)
            return {}

    def _validate(self, documents: Sequence[Received], statuses: dict[str, SubmissionStatus]) -> dict[str, Exception]:
        """The documents whose validation failed (each tried on its own after a failed group); the
        statuses the others' recording left go into `statuses`."""
        try:
            statuses.update(stages.validate_received(documents, bus=self._bus, store=self._store, clock=self._clock))
            return {}
        except Exception as whole:  # noqa: BLE001 - find out which documents fail on their own
            if len(documents) == 1:
                log.warning("validating in place failed (%s: %s)", type(whole).__name__, whole,
                            extra={"submission_id": documents[0].ref.submission_id})
                return {documents[0].ref.submission_id: whole}
            log.warning("validating %d documents in place failed (%s: %s); trying them one by one",
                        len(documents), type(whole).__name__, whole)
        errors: dict[str, Exception] = {}
        for document in documents:
            errors.update(self._validate([document], statuses))
        return errors

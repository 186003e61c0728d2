"""The receiver's use case: vault the raw document, enqueue it, and (by default) wait for the verdict."""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime

from ulid import ULID

from shared.bus.queues import VALIDATION
from shared.coalescing import Announcement
from shared.domain.model import ParsedDocument
from shared.domain.submission_status import FINAL, SubmissionStatus
from shared.pipeline import messages
from shared.pipeline.messages import InlineBody, SubmissionRef
from shared.pipeline.outcomes import ImportPending, ImportSettled, Problem
from shared.pipeline.ports import Bus, Vault
from shared.pipeline.stages import Received, parse_received
from shared.pipeline.validate_now import ValidateNow

log = logging.getLogger(__name__)

MEDIA_TYPE = "text/xml+markr"
# A body validated here at least this large is parsed while it is vaulted: compressing, sealing and
# writing it mostly wait outside the interpreter (a 50,000-result document: 0.4 s of a 1.9 s total).
PARSE_WHILE_VAULTING_BYTES = 1 << 20
_parsers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="parse-while-vaulting")

Waiter = Callable[[str, str, float], SubmissionStatus | None]


@dataclass(frozen=True)
class ImportRequest:
    content_type: str | None
    body: bytes
    respond_async: bool  # Prefer: respond-async


def media_type(content_type: str | None) -> str:
    """`Text/XML+Markr; charset=utf-8` -> `text/xml+markr` (parameters are allowed and ignored)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_request(req: ImportRequest, max_body_bytes: int) -> Problem | None:
    """The reasons to refuse a request outright (nothing is stored for these)."""
    if media_type(req.content_type) != MEDIA_TYPE:
        got = req.content_type or "none"
        return Problem("unsupported-media-type", f"Content-Type must be {MEDIA_TYPE}, got {got}")
    if len(req.body) > max_body_bytes:
        return Problem("body-too-large", f"body is {len(req.body)} bytes; the limit is {max_body_bytes} bytes")
    if not req.body:
        return Problem("empty-body", "the request body is empty; send a mcq-test-results document")
    return None


def import_document(req: ImportRequest, *, vault: Vault, bus: Bus, source: str, max_body_bytes: int,
                    wait_seconds: float, wait_for_settled: Waiter,
                    validate_now: ValidateNow | None = None) -> Problem | ImportPending | ImportSettled:
    """`validate_now` (validate_now.py): validate here when the client waits for the verdict, instead
    of handing the document to the validator through the queue."""
    refused = check_request(req, max_body_bytes)
    if refused:
        return refused
    waits = not req.respond_async and wait_seconds > 0
    deadline = time.monotonic() + wait_seconds
    here = validate_now if waits else None
    # Announced while it is being vaulted, so a validation run starting meanwhile waits for it.
    with here.expecting() if here is not None else nullcontext() as announced:
        parsing = (_parsers.submit(parse_received, req.body)
                   if here is not None and len(req.body) >= PARSE_WHILE_VAULTING_BYTES else None)
        vaulted = _vault(vault, req, source)
        if isinstance(vaulted, Problem):
            return vaulted
        if here is not None:
            answer = _validate_here(here, vaulted, req.body, announced, vault=vault, bus=bus,
                                    parsed=_parsed(parsing))
        else:
            answer = _enqueue(vaulted, vault=vault, bus=bus)
        if answer is not None:
            return answer
    submission_id = vaulted.ref.submission_id
    if not waits:
        return ImportPending(submission_id)
    try:
        state = wait_for_settled(submission_id, submission_id, max(0.0, deadline - time.monotonic()))
    except Exception:  # noqa: BLE001 - the document is accepted; the client polls for the verdict
        log.warning("waiting for the verdict failed; answering 202", exc_info=True,
                    extra={"submission_id": submission_id})
        return ImportPending(submission_id)
    if state is not None and state.run_id == submission_id and state.status in FINAL:
        return ImportSettled(state)
    return ImportPending(submission_id, state)


@dataclass(frozen=True)
class _Vaulted:
    ref: SubmissionRef
    received_at: datetime
    inline: InlineBody | None  # the stored bytes, when the body is small enough to travel in a message


def _vault(vault: Vault, req: ImportRequest, source: str) -> _Vaulted | Problem:
    submission_id = str(ULID())
    received_at = datetime.now(UTC)
    try:
        record = vault.put(source=source, submission_id=submission_id, content_type=req.content_type or MEDIA_TYPE,
                           body=req.body, received_at=received_at)
    except Exception:
        log.exception("vault write failed; nothing was stored", extra={"submission_id": submission_id})
        return Problem("storage-unavailable", "the document could not be stored; retry later")
    log.info("vaulted %d bytes (sha256 %s)", record.byte_size, record.sha256[:12],
             extra={"submission_id": submission_id})
    return _Vaulted(SubmissionRef(submission_id, source, run_id=submission_id), received_at, InlineBody.of(record))


def _enqueue(vaulted: _Vaulted, *, vault: Vault, bus: Bus) -> Problem | None:
    """Hand the document to the validator; None once it is queued."""
    try:
        bus.send(VALIDATION, messages.validation(vaulted.ref, vaulted.inline, vaulted.received_at))
    except Exception as exc:
        return _not_queued(vault, vaulted.ref, exc)
    return None


def _parsed(parsing: Future[ParsedDocument] | None) -> ParsedDocument | None:
    """The document parsed while it was vaulted, or None to parse it with its validation run."""
    if parsing is None:
        return None
    try:
        return parsing.result()
    except Exception:  # noqa: BLE001 - the run parses it again and meets the same failure there
        return None


def _validate_here(here: ValidateNow, vaulted: _Vaulted, body: bytes, announced: Announcement | None, *,
                   vault: Vault, bus: Bus,
                   parsed: ParsedDocument | None = None) -> Problem | ImportPending | ImportSettled | None:
    """The verdict, or None when the document went to the queue path after all (wait for it there)."""
    try:
        verdict = here(Received(vaulted.ref, body, vaulted.received_at, vaulted.inline, parsed), announced=announced)
    except Exception as exc:  # its safety-net message could not be scheduled: nothing was done
        return _not_queued(vault, vaulted.ref, exc)
    state = verdict.status
    if verdict.error is None:
        if state is not None and state.run_id == vaulted.ref.run_id and state.status in FINAL:
            return ImportSettled(state)
        return None  # recorded, but not settled here (or not read back): wait for it
    try:  # the queue path takes over at once; the scheduled message stays too
        bus.send(VALIDATION, messages.validation(vaulted.ref, vaulted.inline, vaulted.received_at))
    except Exception:  # noqa: BLE001 - the scheduled message validates it later
        log.warning("enqueue after a failed validation in place failed; the scheduled message remains",
                    exc_info=True, extra={"submission_id": vaulted.ref.submission_id})
        return ImportPending(vaulted.ref.submission_id)
    return None


def _not_queued(vault: Vault, ref: SubmissionRef, exc: Exception) -> Problem:
    # The document is safe in the vault; `markr-ops reprocess` finds it. Tell the client to retry.
    log.error("enqueue failed after vaulting (%s: %s)", type(exc).__name__, exc,
              extra={"submission_id": ref.submission_id})
    try:
        vault.record_status(ref.source, ref.submission_id, {"enqueueError": f"{type(exc).__name__}: {exc}"[:1000]})
    except Exception:  # noqa: BLE001 - best effort; the failure is already logged
        log.warning("could not record the enqueue error on the vault entity")
    return Problem("queue-unavailable", "the document was stored but could not be queued; retry later",
                   {"submissionId": ref.submission_id})

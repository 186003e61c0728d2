"""The receiver's use case: vault the raw document, enqueue it, and (by default) wait for the verdict."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ulid import ULID

from shared.bus.queues import VALIDATION
from shared.domain.submission_status import FINAL, SubmissionStatus
from shared.pipeline import messages
from shared.pipeline.messages import InlineBody, SubmissionRef
from shared.pipeline.outcomes import ImportPending, ImportSettled, Problem
from shared.pipeline.ports import Bus, Vault

log = logging.getLogger(__name__)

MEDIA_TYPE = "text/xml+markr"

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
                    wait_seconds: float, wait_for_settled: Waiter) -> Problem | ImportPending | ImportSettled:
    refused = check_request(req, max_body_bytes)
    if refused:
        return refused
    submission_id = str(ULID())
    ref = SubmissionRef(submission_id, source, run_id=submission_id)
    received_at = datetime.now(UTC)
    try:
        record = vault.put(source=source, submission_id=submission_id, content_type=req.content_type or MEDIA_TYPE,
                           body=req.body, received_at=received_at)
    except Exception:
        log.exception("vault write failed; nothing was stored", extra={"submission_id": submission_id})
        return Problem("storage-unavailable", "the document could not be stored; retry later")
    log.info("vaulted %d bytes (sha256 %s)", record.byte_size, record.sha256[:12],
             extra={"submission_id": submission_id})
    inline = InlineBody.of(record)
    try:
        bus.send(VALIDATION, messages.validation(ref, inline, received_at))
    except Exception as exc:
        # The document is safe in the vault; `markr-ops reprocess` finds it. Tell the client to retry.
        log.exception("enqueue failed after vaulting", extra={"submission_id": submission_id})
        try:
            vault.record_status(source, submission_id, {"enqueueError": f"{type(exc).__name__}: {exc}"[:1000]})
        except Exception:  # noqa: BLE001 - best effort; the failure is already logged
            log.warning("could not record the enqueue error on the vault entity")
        return Problem("queue-unavailable", "the document was stored but could not be queued; retry later",
                       {"submissionId": submission_id})
    if req.respond_async or wait_seconds <= 0:
        return ImportPending(submission_id)
    try:
        state = wait_for_settled(submission_id, submission_id, wait_seconds)
    except Exception:  # noqa: BLE001 - the document is accepted; the client polls for the verdict
        log.warning("waiting for the verdict failed; answering 202", exc_info=True,
                    extra={"submission_id": submission_id})
        return ImportPending(submission_id)
    if state is not None and state.run_id == submission_id and state.status in FINAL:
        return ImportSettled(state)
    return ImportPending(submission_id, state)

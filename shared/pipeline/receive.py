"""The receiver's use case: vault the raw document, enqueue it, and (by default) wait for the verdict."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ulid import ULID

from shared.bus.port import Bus
from shared.bus.queues import NOTIFICATION, VALIDATION
from shared.domain.submission_status import SubmissionStatus
from shared.pipeline import messages
from shared.pipeline.api import ApiResponse, error
from shared.pipeline.messages import SubmissionRef

log = logging.getLogger(__name__)

MEDIA_TYPE = "text/xml+markr"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ImportRequest:
    content_type: str | None
    body: bytes
    respond_async: bool  # Prefer: respond-async


def media_type(content_type: str | None) -> str:
    """`Text/XML+Markr; charset=utf-8` -> `text/xml+markr` (parameters are allowed and ignored)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def status_url(submission_id: str) -> str:
    return f"/api/submissions/{submission_id}"


def check_request(req: ImportRequest, max_body_bytes: int) -> ApiResponse | None:
    """The reasons to refuse a request outright (nothing is stored for these)."""
    if media_type(req.content_type) != MEDIA_TYPE:
        got = req.content_type or "none"
        return error(415, "unsupported-media-type", f"Content-Type must be {MEDIA_TYPE}, got {got}")
    if len(req.body) > max_body_bytes:
        return error(413, "body-too-large",
                     f"body is {len(req.body)} bytes; the limit is {max_body_bytes} bytes")
    if not req.body:
        return error(400, "empty-body", "the request body is empty; send a mcq-test-results document")
    return None


def import_document(
    req: ImportRequest, *, vault, bus: Bus, source: str, max_body_bytes: int, wait_seconds: float,
    wait_for_final: Callable[[str, str, float], SubmissionStatus | None],
) -> ApiResponse:
    refused = check_request(req, max_body_bytes)
    if refused:
        return refused
    submission_id = str(ULID())
    ref = SubmissionRef(submission_id, source, run_id=submission_id)
    received_at = datetime.now(UTC)
    try:
        record = vault.put(source=source, submission_id=submission_id,
                           content_type=req.content_type or MEDIA_TYPE, body=req.body, received_at=received_at)
    except Exception:
        log.exception("vault write failed; nothing was stored", extra={"submission_id": submission_id})
        return error(503, "storage-unavailable", "the document could not be stored; retry later")
    log.info("vaulted %d bytes (sha256 %s)", record.byte_size, record.sha256[:12],
             extra={"submission_id": submission_id})
    try:
        bus.send(VALIDATION, messages.validation(ref))
        bus.send(NOTIFICATION, messages.notification(ref, "received", at=received_at.isoformat()))
    except Exception as exc:
        # The document is safe in the vault; `markr-ops reprocess` finds it. Tell the client to retry.
        log.exception("enqueue failed after vaulting", extra={"submission_id": submission_id})
        try:
            vault.record_status(source, submission_id, {"enqueueError": f"{type(exc).__name__}: {exc}"[:1000]})
        except Exception:  # noqa: BLE001 - best effort; the failure is already logged
            log.warning("could not record the enqueue error on the vault entity")
        return error(503, "queue-unavailable", "the document was stored but could not be queued; retry later",
                     submissionId=submission_id)

    location = {"Location": status_url(submission_id)}
    pending = ApiResponse(202, {"submissionId": submission_id, "status": "received",
                                "statusUrl": status_url(submission_id)}, location)
    if req.respond_async or wait_seconds <= 0:
        return pending
    state = wait_for_final(submission_id, submission_id, wait_seconds)
    if state is None or state.status not in ("completed", "rejected"):
        if state is not None and state.status == "failed":
            return ApiResponse(202, {**pending.body, "status": "failed", "failure": state.failure}, location)
        return pending
    if state.status == "rejected":
        return ApiResponse(400, {"submissionId": submission_id, "status": "rejected",
                                 "errors": list(state.errors), "errorCount": state.error_count,
                                 "statusUrl": status_url(submission_id)}, location)
    return ApiResponse(201, {"submissionId": submission_id, "status": "completed",
                             "results": state.result_count, "testIds": list(state.test_ids or ()),
                             "statusUrl": status_url(submission_id)}, location)

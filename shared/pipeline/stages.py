"""The queue-triggered stages: validate, mark, aggregate, notify.

Each takes a decoded message and the adapters it needs, and is safe to run more than once for the
same message (queues deliver at least once). Transient failures (storage, database, bus) raise so
the trigger retries; permanent ones (a message that can never be processed) are recorded as a
`failed` status and logged once at error level, and the message is completed without retrying.
"""
from __future__ import annotations

import logging
import zlib
from datetime import UTC, datetime
from typing import Any

from shared.bus.port import Bus
from shared.bus.queues import AGGREGATION, MARKING, NOTIFICATION
from shared.db import results as results_db
from shared.db import submissions as submissions_db
from shared.domain.results_document import parse_results_document
from shared.domain.submission_status import Event
from shared.pipeline import messages
from shared.pipeline.messages import SubmissionRef
from shared.vault.table_vault import VaultCorruptionError

log = logging.getLogger(__name__)

MAX_REPORTED_PROBLEMS = 1000


def fail_permanently(bus: Bus, ref: SubmissionRef, stage: str, reason: str, description: str) -> None:
    log.error("%s failed permanently: %s: %s", stage, reason, description,
              extra={"submission_id": ref.submission_id})
    failure = {"stage": stage, "reason": reason, "description": description}
    bus.send(NOTIFICATION, messages.notification(ref, "failed", failure=failure, discriminator=reason))


def validate(data: dict[str, Any], *, vault, bus: Bus, pool) -> str:
    ref = messages.ref_of(data)
    record = vault.get(ref.source, ref.submission_id)
    if record is None:
        fail_permanently(bus, ref, "validation", "vault-entry-missing",
                         f"no vault entry for submission {ref.submission_id} in source {ref.source}")
        return "failed"
    try:
        with vault.open_body(record) as body:
            parsed = parse_results_document(body, max_errors=MAX_REPORTED_PROBLEMS)
    except (VaultCorruptionError, EOFError, zlib.error) as exc:
        # The stored bytes themselves are damaged: no retry can help, and nothing was parsed.
        fail_permanently(bus, ref, "validation", "vault-entry-corrupt", f"{type(exc).__name__}: {exc}")
        return "failed"
    warnings = [w.to_json() for w in parsed.warnings[:MAX_REPORTED_PROBLEMS]]
    now = datetime.now(UTC)
    if not parsed.valid:
        errors = [e.to_json() for e in parsed.errors]
        vault.record_status(ref.source, ref.submission_id, {
            "rejectedAt": now, "validationErrors": errors, "errorCount": parsed.error_count,
            "resultCount": parsed.result_count})
        bus.send(NOTIFICATION, messages.notification(ref, "rejected", at=now.isoformat(), errors=errors,
                                                     errorCount=parsed.error_count, warnings=warnings))
        log.info("rejected: %d problem(s)", parsed.error_count, extra={"submission_id": ref.submission_id})
        return "rejected"
    with pool.connection() as conn:
        results_db.stage_validated(conn, ref.submission_id, parsed.results)
    vault.record_status(ref.source, ref.submission_id, {
        "validatedAt": now, "resultCount": len(parsed.results), "testIds": parsed.test_ids,
        "validationWarnings": warnings})
    bus.send(NOTIFICATION, messages.notification(ref, "validated", at=now.isoformat(),
                                                 resultCount=len(parsed.results), testIds=parsed.test_ids,
                                                 warnings=warnings))
    bus.send(MARKING, messages.marking(ref))
    log.info("validated %d result(s) for test(s) %s", len(parsed.results), ",".join(parsed.test_ids),
             extra={"submission_id": ref.submission_id})
    return "validated"


def mark(data: dict[str, Any], *, vault, bus: Bus, pool) -> str:
    ref = messages.ref_of(data)
    try:
        with pool.connection() as conn:
            marking = results_db.apply_marking(conn, ref.submission_id, ref.run_id)
    except results_db.NothingToMarkError as exc:
        fail_permanently(bus, ref, "marking", "nothing-to-mark", str(exc))
        return "failed"
    now = datetime.now(UTC)
    vault.record_status(ref.source, ref.submission_id, {"markedAt": now})
    test_ids = sorted(marking.test_versions)
    # Sent again on a redelivery: the message ids are the same, so duplicate detection drops them.
    bus.send_many(AGGREGATION, [messages.aggregation(ref, t, v) for t, v in sorted(marking.test_versions.items())])
    bus.send(NOTIFICATION, messages.notification(ref, "marked", at=now.isoformat(), testIds=test_ids,
                                                 resultCount=marking.result_count))
    log.info("marked %d result(s) into test(s) %s%s", marking.result_count, ",".join(test_ids),
             "" if marking.newly_applied else " (already applied)", extra={"submission_id": ref.submission_id})
    return "marked"


def aggregate(data: dict[str, Any], *, bus: Bus, pool) -> str:
    ref = messages.ref_of(data)
    with pool.connection() as conn:
        recomputed = results_db.refresh_statistics(conn, data["testId"], data["resultsVersion"])
    bus.send(NOTIFICATION, messages.notification(ref, "aggregated", testId=data["testId"]))
    log.info("statistics for test %s %s", data["testId"],
             "recomputed" if recomputed else "already cover this marking",
             extra={"submission_id": ref.submission_id})
    return "recomputed" if recomputed else "covered"


def event_of(data: dict[str, Any]) -> Event:
    return Event(
        submission_id=data["submissionId"], source=data["source"], run_id=data["runId"], event=data["event"],
        at=datetime.fromisoformat(data["at"]), result_count=data.get("resultCount"),
        test_ids=tuple(data["testIds"]) if "testIds" in data else None, test_id=data.get("testId"),
        errors=tuple(data.get("errors", ())), error_count=data.get("errorCount"),
        warnings=tuple(data.get("warnings", ())), failure=data.get("failure"),
    )


def notify(data: dict[str, Any], *, pool) -> str:
    with pool.connection() as conn:
        state = submissions_db.record_event(conn, event_of(data))
    log.info("%s -> status %s", data["event"], state.status, extra={"submission_id": data["submissionId"]})
    return state.status

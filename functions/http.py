"""The HTTP edge: use-case outcomes become responses here, and only here."""
from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from functools import singledispatch
from typing import Any
from urllib.parse import quote

import azure.functions as func
from psycopg import OperationalError
from psycopg_pool import PoolTimeout

from shared.bootstrap import DatabaseUnavailable
from shared.pipeline.outcomes import (
    CatalogueFound,
    CsvFound,
    HealthReport,
    HistogramFound,
    ImportPending,
    ImportSettled,
    ItemsFound,
    Problem,
    QueueReport,
    StatisticsFound,
    StatusFound,
)
from shared.pipeline.queries import status_json

log = logging.getLogger(__name__)

STATUS_OF_PROBLEM = {
    "empty-body": 400, "invalid-submission-id": 400, "invalid-test-id": 400,
    "invalid-limit": 400, "invalid-continuation-token": 400,
    "submission-not-found": 404, "test-not-found": 404,
    "body-too-large": 413, "unsupported-media-type": 415,
    "storage-unavailable": 503, "queue-unavailable": 503, "database-unavailable": 503, "bus-unavailable": 503,
}
RETRY_AFTER_SECONDS = "5"


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, separators=(",", ":"), default=str).encode(), status_code=status,
                             headers=headers or {}, mimetype="application/json", charset="utf-8")


def status_url(submission_id: str) -> str:
    return f"/api/submissions/{submission_id}"


@singledispatch
def respond(outcome: Any) -> func.HttpResponse:
    raise TypeError(f"no HTTP mapping for {type(outcome).__name__}")


@respond.register
def _(outcome: Problem) -> func.HttpResponse:
    status = STATUS_OF_PROBLEM[outcome.code]
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if status == 503 else {}
    return json_response(status, {"error": {"code": outcome.code, "message": outcome.message, **outcome.details}},
                         headers)


@respond.register
def _(outcome: ImportPending) -> func.HttpResponse:
    sid = outcome.submission_id
    body: dict[str, Any] = {"submissionId": sid, "status": "received", "statusUrl": status_url(sid)}
    state = outcome.state
    if state is not None and state.run_id == sid:
        body["status"] = str(state.status)
        if state.failure is not None:
            body["failure"] = state.failure
    return json_response(202, body, {"Location": status_url(sid)})


@respond.register
def _(outcome: ImportSettled) -> func.HttpResponse:
    state = outcome.state
    sid = state.submission_id
    if state.status == "rejected":
        body = {"submissionId": sid, "status": "rejected", "errors": list(state.errors),
                "errorCount": state.error_count, "warnings": list(state.warnings), "statusUrl": status_url(sid)}
        return json_response(400, body, {"Location": status_url(sid)})
    body = {"submissionId": sid, "status": "completed", "results": state.result_count,
            "testIds": list(state.test_ids or ()), "warnings": list(state.warnings), "statusUrl": status_url(sid)}
    return json_response(201, body, {"Location": status_url(sid)})


@respond.register
def _(outcome: StatusFound) -> func.HttpResponse:
    return json_response(200, status_json(outcome.state))


@respond.register
def _(outcome: StatisticsFound) -> func.HttpResponse:
    return json_response(200, outcome.statistics.as_json())


@respond.register
def _(outcome: CatalogueFound) -> func.HttpResponse:
    return json_response(200, {"tests": [e.as_json() for e in outcome.entries],
                               "continuationToken": outcome.continuation_token})


@respond.register
def _(outcome: HistogramFound) -> func.HttpResponse:
    return json_response(200, outcome.histogram.as_json())


@respond.register
def _(outcome: ItemsFound) -> func.HttpResponse:
    return json_response(200, outcome.analysis.as_json())


@respond.register
def _(outcome: CsvFound) -> func.HttpResponse:
    ascii_name = re.sub(r"[^A-Za-z0-9._-]", "_", outcome.filename)
    disposition = f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(outcome.filename, safe='')}"
    return func.HttpResponse(outcome.body, status_code=200, mimetype="text/csv", charset="utf-8",
                             headers={"Content-Disposition": disposition})


@respond.register
def _(outcome: HealthReport) -> func.HttpResponse:
    body = {"status": "ok" if outcome.ok else "degraded", "components": outcome.components}
    return json_response(200 if outcome.ok else 503, body, {} if outcome.ok else {"Retry-After": RETRY_AFTER_SECONDS})


@respond.register
def _(outcome: QueueReport) -> func.HttpResponse:
    return json_response(200, outcome.report)


def serve(use_case: Callable[[], Any]) -> func.HttpResponse:
    """Run a use case and answer its outcome; an unreachable database is a 503, never a 500."""
    try:
        return respond(use_case())
    except (PoolTimeout, OperationalError, DatabaseUnavailable) as exc:
        log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
        return respond(Problem("database-unavailable", "the database cannot be reached; retry later"))


# Reads may be cached but must be revalidated: results change with every import, and a 304 is cheap.
# `private`: once access control is in place, the answers depend on who asks.
READ_CACHE_CONTROL = "private, no-cache"


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    tags = (t.strip().removeprefix("W/") for t in if_none_match.split(","))  # weak comparison (RFC 9110)
    return etag in tags


def conditional(req: func.HttpRequest, response: func.HttpResponse,
                cache_control: str = READ_CACHE_CONTROL) -> func.HttpResponse:
    """A 200 gets an ETag (a hash of its body) and Cache-Control; a matching If-None-Match gets 304."""
    if response.status_code != 200:
        return response
    body = response.get_body()
    etag = etag_of(body)
    headers = {"ETag": etag, "Cache-Control": cache_control}
    if _matches(req.headers.get("If-None-Match"), etag):
        return func.HttpResponse(status_code=304, headers=headers)
    headers.update({k: v for k, v in response.headers.items() if k.lower() != "content-type"})
    return func.HttpResponse(body, status_code=200, headers=headers, mimetype=response.mimetype,
                             charset=response.charset)


def serve_read(req: func.HttpRequest, use_case: Callable[[], Any]) -> func.HttpResponse:
    """serve() for GETs: ETag, Cache-Control and 304 on If-None-Match."""
    return conditional(req, serve(use_case))

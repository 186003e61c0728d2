"""Turning Azure Functions bindings into calls on plain Python, and results back into bindings."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import azure.functions as func

from shared.pipeline import messages
from shared.pipeline.api import ApiResponse
from shared.telemetry import submission_context

log = logging.getLogger(__name__)


def http_response(answer: ApiResponse) -> func.HttpResponse:
    return func.HttpResponse(answer.json_bytes(), status_code=answer.status_code,
                             headers=answer.headers, mimetype="application/json", charset="utf-8")


def consume(queue: str, msg: func.ServiceBusMessage, handle: Callable[[dict[str, Any]], Any]) -> Any:
    """Decode and check a queue message, then hand it to `handle`.

    A body that does not match its schema can never succeed, so it is logged once at error level and
    completed (retrying would only burn deliveries); anything `handle` raises propagates, so the host
    abandons the message and it is redelivered, then dead-lettered after maxDeliveryCount.
    """
    try:
        data = messages.decode(queue, msg.get_body())
    except messages.InvalidMessageError as exc:
        log.error("dropping message %s from %s: %s", msg.message_id, queue, exc,
                  extra={"submission_id": msg.correlation_id})
        return None
    with submission_context(data["submissionId"]):
        return handle(data)

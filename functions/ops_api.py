"""GET /api/ops/queues: message counts per queue and dead-letter sub-queue (admin key in Azure)."""
import logging

import azure.functions as func

from functions.bindings import http_response
from shared.ops import queue_ops
from shared.ops.report import queues_report
from shared.pipeline.api import ApiResponse, error

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("ops_queues")
@bp.route(route="ops/queues", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def ops_queues(req: func.HttpRequest) -> func.HttpResponse:
    try:
        answer = ApiResponse(200, queues_report(queue_ops()))
    except Exception as exc:  # noqa: BLE001 - the bus is unreachable: say so, as JSON
        log.exception("reading queue counts failed")
        answer = error(503, "bus-unavailable", f"queue counts could not be read: {type(exc).__name__}: {exc}")
    return http_response(answer)

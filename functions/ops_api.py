"""GET /api/ops/queues: message counts per queue and dead-letter sub-queue (operators: Ops.Admin)."""
import logging

import azure.functions as func

from functions.auth import requires
from functions.http import respond
from shared.auth import Principal, Role
from shared.bootstrap import services
from shared.ops.report import queues_report
from shared.pipeline.outcomes import Problem, QueueReport

bp = func.Blueprint()
log = logging.getLogger(__name__)


@bp.function_name("ops_queues")
@bp.route(route="ops/queues", methods=["GET"])
@requires(Role.ADMIN)
def ops_queues(req: func.HttpRequest, caller: Principal) -> func.HttpResponse:
    try:
        outcome = QueueReport(queues_report(services().bus_admin))
    except Exception as exc:  # noqa: BLE001 - the bus is unreachable: say so, as JSON
        log.exception("reading queue counts failed")
        outcome = Problem("bus-unavailable", f"queue counts could not be read: {type(exc).__name__}: {exc}")
    return respond(outcome)

"""Ops routes (operators: Ops.Admin): GET /api/ops/queues, message counts per queue and dead-letter
sub-queue; POST /api/ops/submissions/{submissionId}/retract, withdraw a submission's results."""
import json
import logging

import azure.functions as func
from azure.core.exceptions import AzureError

from functions.auth import requires
from functions.http import respond, serve
from shared.auth import Principal, Role
from shared.bootstrap import services
from shared.ops.report import queues_report
from shared.ops.retract import retract
from shared.pipeline.outcomes import Problem, QueueReport
from shared.vault.model import VaultError

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


@bp.function_name("ops_retract")
@bp.route(route="ops/submissions/{submissionId}/retract", methods=["POST"])
@requires(Role.ADMIN)
def ops_retract(req: func.HttpRequest, caller: Principal) -> func.HttpResponse:
    """Body: {"reason": "...", "erase": false}. Idempotent: a second call answers the first retraction."""
    try:
        body = json.loads(req.get_body() or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("erase", False), bool):
        return respond(Problem("invalid-body", 'send JSON {"reason": "why", "erase": false}'))
    app = services()

    def use_case() -> object:
        try:
            return retract(req.route_params.get("submissionId", ""), body.get("reason", ""),
                           erase=body.get("erase", False), pool=app.pool, vault=app.vault,
                           store=app.store)
        except (VaultError, AzureError) as exc:  # safe to call again: the retraction is idempotent
            log.warning("retract: vault unavailable: %s: %s", type(exc).__name__, exc)
            return Problem("storage-unavailable", "the vault could not be reached; retry (retracting is idempotent)")

    return serve(use_case)

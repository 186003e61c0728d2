"""GET /api/health: a bare liveness status for anyone; which component fails, and why, for operators."""
import dataclasses

import azure.functions as func

from functions.auth import requires
from functions.http import respond
from shared.auth import Principal, Role
from shared.bootstrap import services
from shared.pipeline.health import check

bp = func.Blueprint()


@bp.function_name("health")
@bp.route(route="health", methods=["GET"])
@requires(Role.ADMIN, anonymous=True)
def health(req: func.HttpRequest, caller: Principal) -> func.HttpResponse:
    return respond(dataclasses.replace(check(services()), detailed=caller.has(Role.ADMIN)))

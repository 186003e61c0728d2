"""GET /api/health: can the app reach its storage, database and message bus?"""
import azure.functions as func

from functions.http import respond
from shared.bootstrap import services
from shared.pipeline.health import check

bp = func.Blueprint()


@bp.function_name("health")
@bp.route(route="health", methods=["GET"])
def health(req: func.HttpRequest) -> func.HttpResponse:
    return respond(check(services()))

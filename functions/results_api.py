"""GET /api/results/{testId}/aggregate: a test's statistics, in percent of available marks."""
import azure.functions as func

from functions.auth import requires
from functions.http import serve
from shared.auth import Principal, Role
from shared.bootstrap import services
from shared.pipeline.queries import statistics_of

bp = func.Blueprint()


@bp.function_name("results_aggregate")
@bp.route(route="results/{testId}/aggregate", methods=["GET"])
@requires(Role.READ)
def results_aggregate(req: func.HttpRequest, caller: Principal) -> func.HttpResponse:
    return serve(lambda: statistics_of(req.route_params["testId"], store=services().store))

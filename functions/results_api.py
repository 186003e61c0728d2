"""GET /api/results/{testId}/aggregate: a test's statistics, in percent of available marks."""
import azure.functions as func

from functions.http import serve
from shared.bootstrap import services
from shared.pipeline.queries import test_aggregate

bp = func.Blueprint()


@bp.function_name("results_aggregate")
@bp.route(route="results/{testId}/aggregate", methods=["GET"])
def results_aggregate(req: func.HttpRequest) -> func.HttpResponse:
    return serve(lambda: test_aggregate(req.route_params["testId"], store=services().store))

"""GET /api/submissions/{submissionId}: where a submission is, and what was wrong with it."""
import azure.functions as func

from functions.bindings import http_response
from shared import wiring
from shared.config import settings
from shared.db.connection import pool
from shared.pipeline.queries import submission_status

bp = func.Blueprint()


@bp.function_name("submission_status")
@bp.route(route="submissions/{submissionId}", methods=["GET"])
def submission_status_api(req: func.HttpRequest) -> func.HttpResponse:
    return http_response(submission_status(req.route_params["submissionId"], pool=pool(), vault=wiring.vault(),
                                           default_source=settings().default_source))

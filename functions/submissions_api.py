"""GET /api/submissions/{submissionId}: where a submission is, and what was wrong with it."""
import azure.functions as func

from functions.http import serve_read
from shared.bootstrap import services
from shared.pipeline.queries import submission_status

bp = func.Blueprint()


@bp.function_name("submission_status")
@bp.route(route="submissions/{submissionId}", methods=["GET"])
def submission_status_api(req: func.HttpRequest) -> func.HttpResponse:
    s = services()
    return serve_read(req, lambda: submission_status(req.route_params["submissionId"], store=s.store, vault=s.vault,
                                           default_source=s.settings.default_source))

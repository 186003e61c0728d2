"""GET /api/submissions/{submissionId}: where a submission is, and what was wrong with it.

Analysts and operators read every submission; a vendor reads only its own (another's is a 404)."""
import azure.functions as func

from functions.auth import requires
from functions.http import serve_read
from shared.auth import Principal, Role
from shared.bootstrap import services
from shared.pipeline.queries import submission_status

bp = func.Blueprint()


@bp.function_name("submission_status")
@bp.route(route="submissions/{submissionId}", methods=["GET"])
@requires(Role.READ, Role.ADMIN, Role.SUBMIT)
def submission_status_api(req: func.HttpRequest, caller: Principal) -> func.HttpResponse:
    s = services()
    only_source = None if caller.reads_everything else (caller.vendor or "")
    return serve_read(req, lambda: submission_status(req.route_params["submissionId"], store=s.store, vault=s.vault,
                                                     only_source=only_source))

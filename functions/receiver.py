"""POST /api/import: vendors' machines send result documents here."""
import azure.functions as func

from functions.auth import requires
from functions.http import respond, serve
from shared.auth import Forbidden, Principal, Role
from shared.bootstrap import services
from shared.pipeline.receive import ImportRequest, import_document

bp = func.Blueprint()


@bp.function_name("receiver")
@bp.route(route="import", methods=["POST"])
@requires(Role.SUBMIT)
def receiver(req: func.HttpRequest, caller: Principal) -> func.HttpResponse:
    if caller.vendor is None:  # checked before the body is read: nothing is vaulted for a refusal
        return respond(Forbidden(f"{Role.SUBMIT} callers must be registered vendors; application "
                                 f"{caller.client_id or caller.subject} is not (markr-ops vendors add NAME "
                                 "--app-id ID)", (Role.SUBMIT,)))
    s = services()
    request = ImportRequest(content_type=req.headers.get("Content-Type"), body=req.get_body(),
                            respond_async="respond-async" in req.headers.get("Prefer", "").lower())
    return serve(lambda: import_document(
        request, vault=s.vault, bus=s.bus, source=caller.vendor,
        max_body_bytes=s.settings.max_body_bytes, wait_seconds=s.settings.import_wait_seconds,
        wait_for_settled=s.status_waiter.wait_for_settled, validate_now=s.validate_now))

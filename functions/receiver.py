"""POST /api/import: vendors' machines send result documents here."""
import azure.functions as func

from functions.http import serve
from shared.bootstrap import services
from shared.pipeline.receive import ImportRequest, import_document

bp = func.Blueprint()


@bp.function_name("receiver")
@bp.route(route="import", methods=["POST"])
def receiver(req: func.HttpRequest) -> func.HttpResponse:
    s = services()
    request = ImportRequest(content_type=req.headers.get("Content-Type"), body=req.get_body(),
                            respond_async="respond-async" in req.headers.get("Prefer", "").lower())
    return serve(lambda: import_document(
        request, vault=s.vault, bus=s.bus, source=s.settings.default_source,
        max_body_bytes=s.settings.max_body_bytes, wait_seconds=s.settings.import_wait_seconds,
        wait_for_settled=s.status_waiter.wait_for_settled))

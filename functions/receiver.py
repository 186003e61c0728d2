"""POST /api/import: vendors' machines send result documents here."""
import azure.functions as func

from functions.bindings import http_response
from shared import wiring
from shared.config import settings
from shared.db import submissions
from shared.db.connection import connect
from shared.pipeline.receive import ImportRequest, import_document

bp = func.Blueprint()


@bp.function_name("receiver")
@bp.route(route="import", methods=["POST"])
def receiver(req: func.HttpRequest) -> func.HttpResponse:
    s = settings()
    prefer = req.headers.get("Prefer", "")
    answer = import_document(
        ImportRequest(content_type=req.headers.get("Content-Type"), body=req.get_body(),
                      respond_async="respond-async" in prefer.lower()),
        vault=wiring.vault(), bus=wiring.bus(), source=s.default_source, max_body_bytes=s.max_body_bytes,
        wait_seconds=s.import_wait_seconds,
        wait_for_final=lambda sid, run, timeout: submissions.wait_for_final(s.database_url, sid, run, timeout, connect=connect),
    )
    return http_response(answer)

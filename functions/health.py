"""GET /api/health: can the app reach its storage, database and message bus?"""
import json

import azure.functions as func

from shared.pipeline import health as health_check

bp = func.Blueprint()


@bp.function_name("health")
@bp.route(route="health", methods=["GET"])
def health(req: func.HttpRequest) -> func.HttpResponse:
    report = health_check.check()
    status = 200 if report["status"] == "ok" else 503
    return func.HttpResponse(json.dumps(report), status_code=status, mimetype="application/json")

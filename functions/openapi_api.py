"""GET /api/openapi.json: the OpenAPI 3.1 description of the HTTP API (schemas/openapi.json)."""
import json
from functools import cache

import azure.functions as func

import schemas
from functions.http import conditional

bp = func.Blueprint()
OPENAPI = "openapi.json"


@cache
def _document() -> bytes:
    return json.dumps(schemas.resource(OPENAPI), separators=(",", ":")).encode()


@bp.function_name("openapi")
@bp.route(route="openapi.json", methods=["GET"])
def openapi(req: func.HttpRequest) -> func.HttpResponse:
    response = func.HttpResponse(_document(), status_code=200, mimetype="application/json", charset="utf-8")
    return conditional(req, response, cache_control="public, max-age=300")

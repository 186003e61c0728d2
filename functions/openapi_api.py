"""GET /api/openapi.json: the OpenAPI 3.1 description of the HTTP API (schemas/openapi.json)."""
import json
from functools import cache

import azure.functions as func

import schemas
from functions.auth import requires
from functions.http import conditional
from shared.auth import Principal, Role

bp = func.Blueprint()
OPENAPI = "openapi.json"


@cache
def _document() -> bytes:
    return json.dumps(schemas.resource(OPENAPI), separators=(",", ":")).encode()


@bp.function_name("openapi")
@bp.route(route="openapi.json", methods=["GET"])
@requires(Role.READ, anonymous=True)  # public: the API's description holds no student data
def openapi(req: func.HttpRequest, caller: Principal) -> func.HttpResponse:
    response = func.HttpResponse(_document(), status_code=200, mimetype="application/json", charset="utf-8")
    return conditional(req, response, cache_control="public, max-age=300")

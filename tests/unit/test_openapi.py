"""schemas/openapi.json is a valid OpenAPI 3.1 document that describes every HTTP function."""
import json
import re

from openapi_spec_validator import validate

import function_app
import schemas
from devhost.discovery import indexed_functions
from functions.http import STATUS_OF_PROBLEM, respond


def document() -> dict:
    return schemas.resource("openapi.json")


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_every_http_function_is_described_with_its_methods() -> None:
    paths = document()["paths"]
    for fn in indexed_functions(function_app.app):
        trigger = fn.get_trigger()
        if trigger.get_binding_name() != "httpTrigger":
            continue
        path = "/" + re.sub(r"\{(\w+)[^}]*\}", r"{\1}", trigger.route)
        assert path in paths, path
        methods = {str(getattr(m, "value", m)).lower() for m in trigger.methods}
        assert methods <= set(paths[path]), (path, methods)


def test_every_error_code_is_in_the_error_schema() -> None:
    codes = document()["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
    assert set(codes) == set(STATUS_OF_PROBLEM)


def http_functions():
    for fn in indexed_functions(function_app.app):
        trigger = fn.get_trigger()
        if trigger.get_binding_name() == "httpTrigger":
            path = "/" + re.sub(r"\{(\w+)[^}]*\}", r"{\1}", trigger.route)
            for method in trigger.methods:
                yield path, str(getattr(method, "value", method)).lower(), fn.get_user_function()


def test_every_operation_declares_the_roles_its_function_requires() -> None:
    doc = document()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer" and schemes["vendorApiKey"]["name"] == "X-Markr-Api-Key"
    for path, method, function in http_functions():
        op = doc["paths"][path][method]
        security = op["security"]
        bearer_roles = {role for requirement in security for role in requirement.get("bearer", [])}
        responses = op["responses"]
        assert "401" in responses and "503" in responses, (path, method)
        if path == "/openapi.json":
            assert security == [{}], "the description itself is public"
            continue
        assert bearer_roles == set(function.required_roles), (path, method)
        assert ({} in security) == function.allows_anonymous, (path, method)
        assert ({"vendorApiKey": []} in security) == ("Results.Submit" in function.required_roles), (path, method)
        assert ("403" in responses) != function.allows_anonymous, (path, method)
        for role in function.required_roles:
            assert role in op["description"], (path, method, role)


def test_refusals_are_described_as_the_edge_answers_them() -> None:
    from shared.auth import Forbidden, Unauthorized

    components = document()["components"]
    auth_codes = set(components["schemas"]["AuthError"]["properties"]["error"]["properties"]["code"]["enum"])
    seen = set()
    for outcome in (Unauthorized("no credentials", presented=False), Unauthorized("expired")):
        answer = respond(outcome)
        assert answer.status_code == 401 and answer.headers["WWW-Authenticate"].startswith("Bearer ")
        seen.add(json.loads(answer.get_body())["error"]["code"])
    assert seen == auth_codes
    assert "WWW-Authenticate" in components["responses"]["Unauthorized"]["headers"]
    forbidden = json.loads(respond(Forbidden("needs Results.Read", ("Results.Read",))).get_body())["error"]
    assert forbidden["code"] == components["schemas"]["Forbidden"]["properties"]["error"]["properties"]["code"]["const"]
    assert set(forbidden) <= set(components["schemas"]["Forbidden"]["properties"]["error"]["properties"])

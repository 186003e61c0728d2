"""schemas/openapi.json is a valid OpenAPI 3.1 document that describes every HTTP function."""
import re

from openapi_spec_validator import validate

import function_app
import schemas
from devhost.discovery import indexed_functions
from functions.http import STATUS_OF_PROBLEM


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

"""JSON Schemas (the results document, every queue message) and the queue definitions, as package data.

`resource(name)` is how code reads them, so the deployed app and the tools read the same files
whether they run from a checkout, an installed package or a Functions deployment.
"""
from __future__ import annotations

import json
from importlib.resources import files
from typing import Any


def resource(name: str) -> Any:
    """The parsed JSON file `name` (e.g. "messages/common.schema.json")."""
    return json.loads(files(__name__).joinpath(name).read_text(encoding="utf-8"))


def names(folder: str) -> list[str]:
    return sorted(f"{folder}/{entry.name}" for entry in files(__name__).joinpath(folder).iterdir()
                  if entry.name.endswith(".schema.json"))

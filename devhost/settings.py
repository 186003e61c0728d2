"""local.settings.json: the app settings the Functions host would load locally.

The file is gitignored; on first run it is created from local.settings.template.json. Values go
into the environment unless the environment already has them (the environment wins, as with func).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from devhost.stack import ROOT

SETTINGS_FILE = ROOT / "local.settings.json"
TEMPLATE_FILE = ROOT / "local.settings.template.json"


def load_local_settings(path: Path = SETTINGS_FILE, template: Path = TEMPLATE_FILE) -> dict:
    """Read (creating it from the template if missing) and return the whole settings document."""
    if not path.exists():
        shutil.copyfile(template, path)
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if spec.get("IsEncrypted"):
        raise ValueError(f"{path} is encrypted; the local host reads plain values only")
    return spec


def apply_values(values: dict[str, object]) -> list[str]:
    """Export Values not already in the environment; returns the names that were set."""
    applied = []
    for name, value in values.items():
        if name not in os.environ:
            os.environ[name] = "" if value is None else str(value)
            applied.append(name)
    return applied

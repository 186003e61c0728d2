"""Settings for the CLI, loaded the way the local host loads them.

local.settings.json's Values go into the environment unless already set (the environment wins).
When MARKR_DATABASE_URL is still empty and the bus is local, the database of the stack that
`scripts/up` runs (.local/run/pg) is used if it is running.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from devhost.settings import SETTINGS_FILE, apply_values


class SettingsError(Exception):
    pass


def load(path: Path | None) -> None:
    explicit = path is not None
    path = path or SETTINGS_FILE
    if path.exists():
        try:
            spec = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SettingsError(f"{path} is not valid JSON: {exc}") from None
        apply_values(spec.get("Values", {}))
    elif explicit:
        raise SettingsError(f"settings file {path} does not exist")
    if not os.environ.get("MARKR_DATABASE_URL") and os.environ.get("MARKR_BUS", "local").lower() == "local":
        url = _local_stack_database()
        if url:
            os.environ["MARKR_DATABASE_URL"] = url
    from shared.config import settings

    settings.cache_clear()


def _local_stack_database() -> str | None:
    """The URL of the PostgreSQL that `scripts/up` runs, if it is running.

    Uses only the local host's public surface (Postgres.url, port_open) and the port file that
    `scripts/up` writes next to the cluster's data directory.
    """
    from devhost.localstack import RUN_DIR
    from devhost.stack import Postgres, port_open

    port_file = RUN_DIR / "pg" / "postgres.port"
    try:
        port = int(port_file.read_text())
    except (OSError, ValueError):
        return None
    server = Postgres(RUN_DIR / "pg" / "data", port=port)
    return server.url if port_open(port) else None


def require_database() -> str:
    from shared.config import settings

    url = settings().database_url
    if not url:
        raise SettingsError("MARKR_DATABASE_URL is not set and the local stack is not running "
                            "(start it with scripts/up, or set MARKR_DATABASE_URL)")
    return url


def check_database() -> None:
    """Fail in seconds with the driver's reason, rather than after the pool's 30 s wait."""
    from shared.db.connection import connect

    url = require_database()
    try:
        with connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        raise SettingsError(f"cannot reach the database ({url.split('@')[-1]}): {str(exc).strip()}") from None

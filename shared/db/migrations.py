"""Schema migrations: numbered .sql files in shared/db/migrations/, applied in order, each once.

Applied versions are recorded in schema_migrations; an advisory lock keeps two processes from
migrating at the same time, so running this twice (or concurrently) is safe.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import psycopg

from shared.db.connection import connect

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x6D61726B72  # "markr"


def migration_files() -> list[tuple[int, Path]]:
    found = []
    for path in MIGRATIONS_DIR.glob("*.sql"):
        match = re.match(r"^(\d+)_", path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def migrate(url: str, connect=psycopg.connect) -> list[str]:
    """Apply pending migrations; returns the names applied. `connect` may add credentials."""
    applied_now: list[str] = []
    with connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, path in migration_files():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(path.read_text())
                    conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                                 (version, path.name))
                applied_now.append(path.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


if __name__ == "__main__":
    from shared.bootstrap import Services

    app = Services()  # Entra tokens when MARKR_DATABASE_ENTRA_AUTH=true, as the app itself connects
    target = sys.argv[1] if len(sys.argv) > 1 else app.settings.database_url
    for name in migrate(target, connect=lambda url, **kw: connect(url, app.db_password, **kw)):
        print(f"applied {name}")

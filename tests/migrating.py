"""A throw-away database at an older schema version, to test what a migration does to existing rows."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg

from shared.db.migrations import migration_files


@contextmanager
def database_before(postgres_server: str, version: int) -> Iterator[tuple[psycopg.Connection, Callable[[], None]]]:
    """A new database with every migration before `version` applied, and a function that applies
    `version` itself; dropped afterwards."""
    name = f"t_upgrade_{version:04d}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    try:
        with psycopg.connect(postgres_server.rpartition("/")[0] + "/" + name, autocommit=True) as conn:
            files = dict(migration_files())
            for earlier in sorted(v for v in files if v < version):
                conn.execute(files[earlier].read_text())
            yield conn, lambda: conn.execute(files[version].read_text())
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

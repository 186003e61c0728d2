"""PostgreSQL connections (psycopg 3): one pool per process, per database URL."""
from __future__ import annotations

import threading

import psycopg
from psycopg_pool import ConnectionPool

from shared.config import settings

_pools: dict[str, ConnectionPool] = {}
_lock = threading.Lock()


def _entra_password() -> str:
    """An Entra ID access token, used as the password for Azure Database for PostgreSQL."""
    from azure.identity import DefaultAzureCredential

    token = DefaultAzureCredential().get_token("https://ossrdbms-aad.database.windows.net/.default")
    return token.token


def connect(url: str | None = None, **kwargs) -> psycopg.Connection:
    url = url or settings().database_url
    if settings().database_entra_auth:
        kwargs.setdefault("password", _entra_password())
    return psycopg.connect(url, **kwargs)


def pool(url: str | None = None) -> ConnectionPool:
    """The shared pool for `url` (default: MARKR_DATABASE_URL). Connections are checked on checkout."""
    url = url or settings().database_url
    if not url:
        raise RuntimeError("MARKR_DATABASE_URL is not set")
    with _lock:
        p = _pools.get(url)
        if p is None:
            kwargs = {"password": _entra_password} if settings().database_entra_auth else {}
            p = ConnectionPool(
                url, min_size=0, max_size=20, open=True, check=ConnectionPool.check_connection,
                kwargs=kwargs or None, name=f"markr-{len(_pools)}",
            )
            _pools[url] = p
            if settings().migrate_on_start and url == settings().database_url:
                # In Azure the app identity applies the schema it owns, once per process, before
                # first use; the advisory lock in migrate() makes concurrent instances safe.
                from shared.db.migrations import migrate

                migrate(url, connect=connect)
        return p


def close_pools() -> None:
    with _lock:
        for p in _pools.values():
            p.close()
        _pools.clear()

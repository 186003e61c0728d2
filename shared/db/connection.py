"""PostgreSQL connections (psycopg 3): the pool and one-off connections, built from settings.

The composition root (shared/bootstrap.py) builds one pool per process; nothing else keeps pools.
Pooled connections are not checked on every checkout (a round trip each time, 16% of a busy host's
samples): only one that sat idle for over TRUST_SECONDS is pinged first (it may have died with a
server restart meanwhile). psycopg discards a connection that broke while in use, and
`max_lifetime`/`max_idle` retire old ones.
"""
from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

ENTRA_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"
# How long a request waits for a pooled connection before the database counts as unavailable
# (the HTTP edge answers 503 then; queue triggers raise and are retried). Below the 5 s promised for
# that 503, with room for the rest of the request (at 5.0 the answers came at 5.02-5.08 s).
CHECKOUT_TIMEOUT_SECONDS = 4.0

TRUST_SECONDS = 1.0
PasswordProvider = Callable[[], str]


def _check_if_idle(conn: psycopg.Connection) -> None:
    """Raise for a dead connection (the pool then takes another), without a round trip when it can:
    an idle connection has nothing to read, so readable bytes (a shutdown notice, EOF) or a long
    idle time are the reasons to ping it."""
    now = time.monotonic()
    readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    if readable or now - getattr(conn, "_markr_checked_at", 0.0) > TRUST_SECONDS:
        ConnectionPool.check_connection(conn)
    conn._markr_checked_at = now  # type: ignore[attr-defined]


class EntraPassword:
    """An Entra ID access token as the PostgreSQL password, refreshed five minutes before it expires.

    One per process, around one credential: each connection the pool opens asks for the current token.
    """

    def __init__(self, credential: Any, scope: str = ENTRA_SCOPE, refresh_margin: float = 300.0) -> None:
        self._credential = credential
        self._scope = scope
        self._margin = refresh_margin
        self._token: str | None = None
        self._expires_on = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            if self._token is None or time.time() > self._expires_on - self._margin:
                access = self._credential.get_token(self._scope)
                self._token, self._expires_on = access.token, float(access.expires_on)
            return self._token


def connect(url: str, password: PasswordProvider | None = None, **kwargs: Any) -> psycopg.Connection:
    if password is not None:
        kwargs.setdefault("password", password())
    return psycopg.connect(url, **kwargs)


def make_pool(url: str, *, max_size: int, password: PasswordProvider | None = None,
              name: str = "markr") -> ConnectionPool:
    if not url:
        raise RuntimeError("MARKR_DATABASE_URL is not set")
    # psycopg_pool calls `kwargs` for each new connection, so a rotating token is picked up.
    kwargs = (lambda: {"password": password()}) if password is not None else None
    return ConnectionPool(url, min_size=0, max_size=max_size, open=True, kwargs=kwargs, name=name,
                          timeout=CHECKOUT_TIMEOUT_SECONDS, check=_check_if_idle, max_lifetime=30 * 60, max_idle=5 * 60,
                          reconnect_timeout=60)


@contextmanager
def autocommit(pool: ConnectionPool) -> Iterator[psycopg.Connection]:
    """A pooled connection for statements that each stand alone: single-statement writes (atomic on
    their own) and reads. Skips the BEGIN and COMMIT round trips a pooled connection otherwise makes
    around every checkout, two of three round trips for a GET's one query. The connection goes
    back to the pool in its usual (transactional) mode."""
    with pool.connection() as conn:
        conn.autocommit = True
        try:
            yield conn
        finally:
            if not conn.closed:
                conn.autocommit = False


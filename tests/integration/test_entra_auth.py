"""Entra-authenticated PostgreSQL, offline: a role whose password is the token a stub credential
returns, reachable only by password (scram-sha-256, a pg_hba line of its own), while the rest of the
suite's cluster keeps trust authentication. With MARKR_DATABASE_ENTRA_AUTH=true every connection the
app opens (migrations, the pool, LISTEN) presents the process credential's current token."""
from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import psycopg
import pytest
from psycopg import sql
from psycopg_pool import PoolTimeout

from shared import bootstrap
from shared.bus.queues import NOTIFICATION
from shared.config import settings
from shared.db import connection
from shared.pipeline import messages
from shared.pipeline.messages import SubmissionRef

pytestmark = pytest.mark.integration

TOKEN = "eyJ0eXAiOiJKV1Qi.entra-token-" + uuid.uuid4().hex  # what an access token looks like, roughly


class StubCredential:
    """Stands in for DefaultAzureCredential: hands out a fixed token and counts the requests."""

    def __init__(self, token: str) -> None:
        self.token, self.scopes = token, []

    def get_token(self, scope: str):
        self.scopes.append(scope)
        return SimpleNamespace(token=self.token, expires_on=4_000_000_000)


@contextlib.contextmanager
def _password_only_role(admin_url: str, role: str, password: str) -> Iterator[None]:
    """Create `role` with `password`, and a first pg_hba line that lets it in by password only."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)))
        hba_file = conn.execute("SHOW hba_file").fetchone()[0]
        # COPY writes one line per row; tabs would be escaped, and pg_hba takes any whitespace.
        original = [line.replace("\t", " ")
                    for line in conn.execute("SELECT pg_read_file(%s)", (hba_file,)).fetchone()[0].splitlines()]
        write = sql.SQL("COPY (SELECT unnest({}::text[])) TO {}")
        try:
            conn.execute(write.format(sql.Literal([f"host all {role} 127.0.0.1/32 scram-sha-256", *original]),
                                      sql.Literal(hba_file)))
            conn.execute("SELECT pg_reload_conf()")
            _until_password_needed(_as(admin_url, role))
            yield
        finally:
            conn.execute(write.format(sql.Literal(original), sql.Literal(hba_file)))
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _until_password_needed(url: str, timeout: float = 10.0) -> None:
    """The postmaster reloads pg_hba.conf on SIGHUP, a moment after pg_reload_conf() returns."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=5).close()
        except psycopg.OperationalError:
            return
        if time.monotonic() > deadline:
            raise AssertionError("pg_hba.conf was not reloaded: the role still logs in without a password")
        time.sleep(0.05)


def _as(url: str, role: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{role}@{rest.split('@', 1)[1]}"


@pytest.fixture
def entra_url(database_url: str) -> Iterator[str]:
    role = f"entra_{uuid.uuid4().hex[:8]}"
    with _password_only_role(database_url, role, TOKEN):
        url = _as(database_url, role)
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(url, connect_timeout=5).close()  # trust does not apply: a password is needed
        yield url


def _services(url: str, credential: StubCredential) -> bootstrap.Services:
    config = dataclasses.replace(settings(), database_url=url, database_entra_auth=True, bus="local",
                                 migrate_on_start=True)
    return bootstrap.Services(config, credential=credential)


def test_pooled_connections_present_the_credential_s_token(entra_url: str) -> None:
    credential = StubCredential(TOKEN)
    s = _services(entra_url, credential)
    try:
        # Migrations on start, then several pooled connections held at once (each one a new login).
        held, barrier = [], threading.Barrier(4)

        def use_one() -> None:
            with s.pool.connection() as conn:
                held.append(conn.execute("SELECT current_user").fetchone()[0])
                barrier.wait(10)

        threads = [threading.Thread(target=use_one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert held == [entra_url.split("://")[1].split("@")[0]] * 4
        assert s.pool.get_stats()["connections_num"] >= 4
        # The app's own uses: the store, the bus (and its LISTEN connection), a connection of its own.
        ref = SubmissionRef("01HZX3K9Q5M7B2C4D6E8F0G1H2", "default", "01HZX3K9Q5M7B2C4D6E8F0G1H2")
        s.bus.send(NOTIFICATION, messages.notification(ref, "received"))
        s.bus.wait_for_messages(NOTIFICATION, 5)
        assert s.bus._listener is not None and s.bus._listener.ready.wait(5)
        assert [m.message_id for m in s.bus.receive(NOTIFICATION)] == [f"{ref.submission_id}/{ref.run_id}/notify/received"]
        assert s.store.status(ref.submission_id) is None
        with s.connect() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        # One credential for the process, asked once: the token is cached until near its expiry.
        assert credential.scopes == [connection.ENTRA_SCOPE]
        assert s.db_password._credential is s.credential is credential
    finally:
        s.close()


def test_a_wrong_token_is_refused(entra_url: str) -> None:
    s = _services(entra_url, StubCredential("not-the-token"))
    try:
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            s.connect()
        pool = connection.make_pool(entra_url, max_size=2, password=s.db_password)
        try:
            with pytest.raises(PoolTimeout), pool.connection(timeout=1.0):
                pass
        finally:
            pool.close()
    finally:
        s.close()

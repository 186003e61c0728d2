"""Shared fixtures: the real local stack (PostgreSQL + Azurite), started once per test session.

If MARKR_TEST_DATABASE_URL / MARKR_TEST_VAULT_STORAGE are set, those servers are used instead.
Each test that asks for `database_url` gets a fresh database cloned from a migrated template, and
each test that asks for `vault_table` gets a table of its own, so tests never see each other's data.
"""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devhost.stack import ROOT, Azurite, Postgres
from shared.db.migrations import migrate

TEST_DIR = ROOT / ".local" / "test"
LAYERS = ("unit", "integration", "e2e", "contract", "infra", "browser")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test is marked with its folder's layer, so `scripts/test -m unit` is the fast loop."""
    tests_root = Path(__file__).parent
    for item in items:
        parts = Path(item.fspath).relative_to(tests_root).parts
        if parts and parts[0] in LAYERS:
            item.add_marker(getattr(pytest.mark, parts[0]))
TEMPLATE_DB = "markr_template"


@pytest.fixture(scope="session", autouse=True)
def test_token_issuer() -> Iterator[None]:
    """Every host the tests start trusts the suite's own development issuer (tests/auth.py)."""
    from tests import auth

    saved = {name: os.environ.get(name) for name in auth.auth_env()}
    os.environ.update(auth.auth_env())
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(auth.ISSUER_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of a PostgreSQL server (any database on it may be created by tests)."""
    external = os.environ.get("MARKR_TEST_DATABASE_URL")
    if external:
        yield external
        return
    data = TEST_DIR / f"pg-{os.getpid()}"
    shutil.rmtree(data.parent / data.name, ignore_errors=True)
    server = Postgres(data / "data")
    url = server.start()
    try:
        yield url
    finally:
        server.stop()
        server.remove()  # also the relocated cluster, when this clone is out of the server user's reach
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server_handle(postgres_server: str) -> Postgres | None:
    """The Postgres object when the suite started its own cluster (for restart tests)."""
    if os.environ.get("MARKR_TEST_DATABASE_URL"):
        return None
    server = Postgres(TEST_DIR / f"pg-{os.getpid()}" / "data")
    server.port = int(server._port_file().read_text())
    return server


def _with_db(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def template_database(postgres_server: str) -> str:
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
        conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    url = _with_db(postgres_server, TEMPLATE_DB)
    migrate(url)
    return url


@pytest.fixture
def database_url(postgres_server: str, template_database: str) -> Iterator[str]:
    """A fresh, migrated database for this test only."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    try:
        yield _with_db(postgres_server, name)
    finally:
        from shared import bootstrap

        bootstrap.reset()
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def vault_storage() -> Iterator[str]:
    """Connection string of a Table Storage endpoint (Azurite started for the session)."""
    external = os.environ.get("MARKR_TEST_VAULT_STORAGE")
    if external:
        yield external
        return
    location = TEST_DIR / f"azurite-{os.getpid()}"
    shutil.rmtree(location, ignore_errors=True)
    azurite = Azurite(location)
    try:
        yield azurite.start()
    finally:
        azurite.stop()
        shutil.rmtree(location, ignore_errors=True)


@pytest.fixture
def vault_table() -> str:
    """A table name of this test's own."""
    return f"vault{uuid.uuid4().hex[:16]}"


SAMPLE_RESULTS = Path(__file__).parent / "data" / "sample_results.xml"


@pytest.fixture(scope="session")
def sample_results_xml() -> bytes:
    return Path(SAMPLE_RESULTS).read_bytes()

"""The composition root: replacements, migration on start retried until it succeeds, Entra tokens."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from shared import bootstrap
from shared.config import settings
from shared.db import connection
from tests.fakes import FakeBus, FakeStore, FakeVault


class StubCredential:
    def __init__(self) -> None:
        self.calls = 0

    def get_token(self, scope: str):
        self.calls += 1
        assert scope == connection.ENTRA_SCOPE
        return SimpleNamespace(token=f"token-{self.calls}", expires_on=4_000_000_000)


def test_replacements_are_used_and_unknown_names_refused():
    vault, bus, store = FakeVault(), FakeBus(), FakeStore()
    s = bootstrap.Services(settings(), vault=vault, bus=bus, store=store)
    assert (s.vault, s.bus, s.store) == (vault, bus, store)
    with pytest.raises(TypeError, match="unknown service"):
        bootstrap.Services(settings(), vaults=vault)


def test_a_failed_migration_on_start_is_retried_and_answers_unavailable_meanwhile(monkeypatch):
    attempts = []

    def migrate(url, connect):
        attempts.append(url)
        if len(attempts) == 1:
            raise OSError("role not propagated yet")
        return []

    monkeypatch.setattr("shared.db.migrations.migrate", migrate)
    config = dataclasses.replace(settings(), database_url="postgresql://x/y", migrate_on_start=True)
    s = bootstrap.Services(config, pool="the pool")
    with pytest.raises(bootstrap.DatabaseUnavailable, match="could not be migrated"):
        _ = s.pool
    with pytest.raises(bootstrap.DatabaseUnavailable, match="not migrated yet"):
        _ = s.pool  # too soon to try again: no second attempt
    assert len(attempts) == 1
    monkeypatch.setattr(bootstrap, "MIGRATION_RETRY_SECONDS", 0.0)
    assert s.pool == "the pool"
    assert s.pool == "the pool" and len(attempts) == 2  # migrated once, then never again


def test_the_pool_asks_for_a_current_token_per_connection_with_one_credential(monkeypatch):
    credential = StubCredential()
    password = connection.EntraPassword(credential)
    assert password() == "token-1" and password() == "token-1"  # cached until near expiry
    seen = {}

    class Pool:
        def __init__(self, url, **kwargs):
            seen.update(kwargs)

    monkeypatch.setattr(connection, "ConnectionPool", Pool)
    connection.make_pool("postgresql://x/y", max_size=3, password=password)
    assert callable(seen["kwargs"]) and seen["kwargs"]() == {"password": "token-1"}
    assert seen["max_size"] == 3 and seen["check"] is not None
    config = dataclasses.replace(settings(), database_entra_auth=True)
    s = bootstrap.Services(config, credential=credential)
    assert s.db_password() == "token-2"  # a password provider around the process's one credential


def test_an_expiring_token_is_refreshed():
    credential = StubCredential()
    password = connection.EntraPassword(credential, refresh_margin=10**10)
    assert password() == "token-1" and password() == "token-2"


def test_waiting_imports_are_validated_in_the_receiver_unless_switched_off(monkeypatch):
    bus, store = FakeBus(), FakeStore()
    monkeypatch.setenv("MARKR_IMPORT_WAIT_SECONDS", "12")
    settings.cache_clear()
    try:
        on = bootstrap.Services(settings(), bus=bus, store=store).validate_now
        assert on is not None and on._safety.total_seconds() == 72  # a minute after the longest wait
        monkeypatch.setenv("MARKR_VALIDATE_IN_RECEIVER", "false")
        settings.cache_clear()
        assert bootstrap.Services(settings(), bus=bus, store=store).validate_now is None
    finally:
        settings.cache_clear()

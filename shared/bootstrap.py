"""The composition root: builds every adapter the app uses from its settings, once per process.

Triggers, the ops CLI and the local host ask `services()` for what they need; nothing else builds
clients, pools or credentials. Tests build a `Services` with replacements (fakes, or adapters pointed
at their own database and table) and install it with `use()`.
"""
from __future__ import annotations

import logging
import threading
import time
from functools import cached_property
from typing import Any

from shared.config import Settings, settings

log = logging.getLogger(__name__)
MIGRATION_RETRY_SECONDS = 10.0


class DatabaseUnavailable(Exception):
    """The database cannot be used yet (e.g. its schema migration has not succeeded)."""


class Services:
    def __init__(self, config: Settings | None = None, **overrides: Any) -> None:
        self.settings = config or settings()
        self._lock = threading.Lock()
        self._migrated = not self.settings.migrate_on_start
        self._last_migration_attempt = 0.0
        for name, value in overrides.items():
            if name not in _BUILDABLE:
                raise TypeError(f"unknown service {name!r}; one of {', '.join(_BUILDABLE)}")
            self.__dict__[name] = value  # cached_property reads the instance dict first

    @cached_property
    def credential(self) -> Any:
        """One Azure credential per process (managed identity in Azure), shared by every client."""
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()

    @cached_property
    def db_password(self) -> Any:
        if not self.settings.database_entra_auth:
            return None
        from shared.db.connection import EntraPassword

        return EntraPassword(self.credential)

    @cached_property
    def _pool(self) -> Any:
        from shared.db.connection import make_pool

        return make_pool(self.settings.database_url, max_size=self.settings.db_pool_max,
                         password=self.db_password)

    @property
    def pool(self) -> Any:
        """The process's PostgreSQL pool; with MARKR_MIGRATE_ON_START the schema is applied first."""
        pool = self.__dict__.get("pool") or self._pool
        if not self._migrated:
            self._migrate()
        return pool

    def _migrate(self) -> None:
        # A failed migration (roles still propagating, server restarting) is retried on a later
        # use, at most every MIGRATION_RETRY_SECONDS; until then the database counts as unavailable.
        with self._lock:
            if self._migrated:
                return
            if time.monotonic() - self._last_migration_attempt < MIGRATION_RETRY_SECONDS \
                    and self._last_migration_attempt:
                raise DatabaseUnavailable("the database schema is not migrated yet; retry shortly")
            self._last_migration_attempt = time.monotonic()
            from shared.db.connection import connect
            from shared.db.migrations import migrate

            try:
                migrate(self.settings.database_url, connect=lambda url, **kw: connect(url, self.db_password, **kw))
            except Exception as exc:
                log.warning("schema migration failed; retrying on a later request: %s", exc)
                raise DatabaseUnavailable(f"the database schema could not be migrated: {exc}") from exc
            self._migrated = True

    def connect(self, **kwargs: Any) -> Any:
        """A connection of its own (LISTEN, migrations), with the same credentials as the pool."""
        from shared.db.connection import connect

        return connect(self.settings.database_url, self.db_password, **kwargs)

    @cached_property
    def store(self) -> Any:
        from shared.db.store import PostgresStore

        return PostgresStore(lambda: self.pool)

    @cached_property
    def bus(self) -> Any:
        s = self.settings
        if s.bus == "azure":
            from shared.bus.azure import AzureServiceBus

            return AzureServiceBus.from_settings(s, self.credential)
        if s.bus != "local":
            raise RuntimeError(f"MARKR_BUS must be 'local' or 'azure', not {s.bus!r}")
        from shared.bus.local import LocalQueueEngine

        return LocalQueueEngine(s.database_url, pool=self.pool, password=self.db_password)

    @cached_property
    def bus_admin(self) -> Any:
        if self.settings.bus == "azure":
            return self.bus  # one Service Bus adapter (one client, one credential) serves both sides
        from shared.bus.local import LocalBusAdmin

        return LocalBusAdmin(self.bus)

    @cached_property
    def kek(self) -> Any:
        """The vault's key-encryption key: Key Vault (MARKR_VAULT_KEY_URL) or the local key file."""
        from shared.vault.kek import from_settings

        s = self.settings
        return from_settings(s.vault_key_url, s.vault_key_file, self.credential if s.vault_key_url else None)

    @cached_property
    def vault(self) -> Any:
        from shared.vault.table_vault import TableVault

        credential = None if self.settings.vault_connection else self.credential
        return TableVault.from_settings(self.settings, credential, kek=self.kek)

    @cached_property
    def status_waiter(self) -> Any:
        from shared.db.status_waiter import StatusWaiter

        return StatusWaiter(lambda: self.connect(autocommit=True), self.store.status)

    @cached_property
    def validate_now(self) -> Any:
        """Waiting imports validated in the receiver's process, or None (MARKR_VALIDATE_IN_RECEIVER=false).
        Their safety-net messages fall due a minute after the longest wait."""
        if not self.settings.validate_in_receiver:
            return None
        from shared.pipeline.validate_now import ValidateNow

        return ValidateNow(bus=self.bus, store=self.store, safety_seconds=self.settings.import_wait_seconds + 60)

    @cached_property
    def vendors(self) -> Any:
        from shared.db.vendors import PostgresVendors

        return PostgresVendors(lambda: self.pool)

    @cached_property
    def authenticator(self) -> Any:
        """Who is calling (shared/auth): tokens from the configured issuer, vendor API keys."""
        from shared.auth.authenticator import build_authenticator

        return build_authenticator(self.settings, self.vendors)

    def close(self) -> None:
        for name in ("status_waiter", "bus_admin", "bus"):
            service = self.__dict__.pop(name, None)
            if service is not None and hasattr(service, "close"):
                service.close()
        for name in ("_pool", "pool"):
            pool = self.__dict__.pop(name, None)
            if pool is not None:
                pool.close()


_BUILDABLE = ("credential", "pool", "store", "bus", "bus_admin", "vault", "kek", "status_waiter", "validate_now",
              "vendors", "authenticator")
_current: Services | None = None
_current_lock = threading.Lock()


def services() -> Services:
    global _current
    if _current is None:
        with _current_lock:
            if _current is None:
                _current = Services()
    return _current


def use(replacement: Services | None) -> None:
    """Install the services the triggers will use (tests), closing the previous ones."""
    global _current
    with _current_lock:
        previous, _current = _current, replacement
    if previous is not None and previous is not replacement:
        previous.close()


def reset() -> None:
    """Forget the services and settings: the next use rebuilds them from the environment."""
    use(None)
    settings.cache_clear()

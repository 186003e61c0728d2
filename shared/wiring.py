"""Composition root: picks the adapters named by the app settings, once per process.

Functions call these instead of building clients themselves, so one place decides which bus,
vault and database the app talks to. Tests that change settings call `reset()`.
"""
from __future__ import annotations

from functools import lru_cache

from shared.bus.port import Bus
from shared.config import settings
from shared.db.connection import close_pools, pool


@lru_cache(maxsize=1)
def bus() -> Bus:
    s = settings()
    if s.bus == "azure":
        from shared.bus.azure_service_bus import AzureServiceBus

        return AzureServiceBus.from_settings(s)
    if s.bus != "local":
        raise RuntimeError(f"MARKR_BUS must be 'local' or 'azure', not {s.bus!r}")
    from shared.bus.local_engine import LocalQueueEngine

    return LocalQueueEngine(s.database_url)


@lru_cache(maxsize=1)
def vault():
    from shared.vault.table_vault import TableVault

    return TableVault.from_settings(settings())


def db_ping() -> None:
    with pool().connection() as conn:
        conn.execute("SELECT 1")


def reset() -> None:
    """Forget cached settings and adapters (tests, and the local host after loading settings)."""
    if bus.cache_info().currsize:
        bus().close()
    bus.cache_clear()
    vault.cache_clear()
    settings.cache_clear()
    close_pools()

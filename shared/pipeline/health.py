"""Reachability of the app's dependencies, for GET /api/health."""
from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared.pipeline.outcomes import HealthReport


def _probe(check: Callable[[], None]) -> dict:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:  # noqa: BLE001 - any failure means "unreachable"; report it, never raise
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    return {"ok": True, "ms": round(1000 * (time.perf_counter() - started), 1)}


def check(services: Any) -> HealthReport:
    """`services`: anything with vault, store and bus (shared.bootstrap.Services).

    The probes run at once, so an outage costs the answer one timeout, not one per component (the
    local queue engine and the store wait on the same pool while the database is down)."""
    probes = {"storage": lambda: services.vault.ping(), "database": lambda: services.store.ping(),
              "queues": lambda: services.bus.ping()}
    with ThreadPoolExecutor(len(probes), thread_name_prefix="health") as pool:
        futures = {name: pool.submit(_probe, probe) for name, probe in probes.items()}
        return HealthReport({name: future.result() for name, future in futures.items()})

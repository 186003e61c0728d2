"""Reachability of the app's dependencies, for GET /api/health."""
from __future__ import annotations

import time
from collections.abc import Callable
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
    """`services`: anything with vault, store and bus (shared.bootstrap.Services)."""
    return HealthReport({
        "storage": _probe(lambda: services.vault.ping()),
        "database": _probe(lambda: services.store.ping()),
        "queues": _probe(lambda: services.bus.ping()),
    })

"""Reachability of the app's dependencies, for GET /api/health."""
from __future__ import annotations

import time
from collections.abc import Callable

from shared import wiring


def _probe(check: Callable[[], None]) -> dict:
    started = time.perf_counter()
    try:
        check()
    except Exception as exc:  # noqa: BLE001 - any failure means "unreachable"; report it, never raise
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    return {"ok": True, "ms": round(1000 * (time.perf_counter() - started), 1)}


def check() -> dict:
    components = {
        "storage": _probe(lambda: wiring.vault().ping()),
        "database": _probe(lambda: wiring.db_ping()),
        "queues": _probe(lambda: wiring.bus().ping()),
    }
    ok = all(c["ok"] for c in components.values())
    return {"status": "ok" if ok else "degraded", "components": components}

"""Picks the QueueOps adapter for settings().bus, like shared.wiring does for the Bus port."""
from __future__ import annotations

from functools import lru_cache

from shared import wiring
from shared.config import Settings, settings
from shared.ops.port import OpsError, QueueOps


@lru_cache(maxsize=4)
def _azure(s: Settings) -> QueueOps:
    from shared.ops.azure import AzureQueueOps

    return AzureQueueOps.from_settings(s)


def queue_ops() -> QueueOps:
    s = settings()
    if s.bus == "local":
        from shared.bus.local_engine import LocalQueueEngine
        from shared.ops.local import LocalQueueOps

        engine = wiring.bus()
        if not isinstance(engine, LocalQueueEngine):
            raise OpsError("MARKR_BUS=local but the wired bus is not the local queue engine")
        return LocalQueueOps(engine)
    if s.bus == "azure":
        return _azure(s)
    raise OpsError(f"MARKR_BUS must be 'local' or 'azure', not {s.bus!r}")

"""Picks the BusAdmin adapter for settings().bus, sharing the adapter shared.wiring built for the Bus
port (for Azure the very same object, so one client and credential serve both).

To be replaced by the composition root (shared/bootstrap.py).
"""
from __future__ import annotations

from shared import wiring
from shared.bus.port import BusAdmin, BusAdminError
from shared.config import settings


def queue_ops() -> BusAdmin:
    s = settings()
    if s.bus == "local":
        from shared.bus.local import LocalBusAdmin, LocalQueueEngine

        engine = wiring.bus()
        if not isinstance(engine, LocalQueueEngine):
            raise BusAdminError("MARKR_BUS=local but the wired bus is not the local queue engine")
        return LocalBusAdmin(engine)
    if s.bus == "azure":
        from shared.bus.azure import AzureServiceBus

        bus = wiring.bus()
        if not isinstance(bus, AzureServiceBus):
            raise BusAdminError("MARKR_BUS=azure but the wired bus is not the Azure Service Bus adapter")
        return bus
    raise BusAdminError(f"MARKR_BUS must be 'local' or 'azure', not {s.bus!r}")

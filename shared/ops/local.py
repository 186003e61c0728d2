"""Old import path of the local BusAdmin adapter (now shared.bus.local.admin.LocalBusAdmin)."""
from shared.bus.local.admin import LocalBusAdmin

LocalQueueOps = LocalBusAdmin

__all__ = ["LocalBusAdmin", "LocalQueueOps"]

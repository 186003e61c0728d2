"""Operator use cases: replaying from the vault (replay.py), the dead-letter sweep (sweep.py) and
the queues report (report.py). The broker's admin side itself is shared.bus.port.BusAdmin.

`queue_ops()` returns the BusAdmin adapter for the configured bus (settings().bus).
"""
from shared.bus.port import BusAdmin, DeadLetter, QueueCounts, ResubmitResult
from shared.ops.factory import queue_ops

QueueOps = BusAdmin

__all__ = ["BusAdmin", "DeadLetter", "QueueCounts", "QueueOps", "ResubmitResult", "queue_ops"]

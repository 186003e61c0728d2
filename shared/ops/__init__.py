"""Operations: queue counts, dead-letter draining, and replaying submissions from the vault.

`queue_ops()` returns the QueueOps adapter for the configured bus (settings().bus).
"""
from shared.ops.factory import queue_ops
from shared.ops.port import DeadLetter, QueueCounts, QueueOps, ResubmitResult

__all__ = ["DeadLetter", "QueueCounts", "QueueOps", "ResubmitResult", "queue_ops"]

"""Operations: queue counts, dead-letter draining, and replaying submissions from the vault.

The adapters come from the composition root: `shared.bootstrap.services().bus_admin`.
"""
from shared.ops.port import DeadLetter, QueueCounts, QueueOps, ResubmitResult

__all__ = ["DeadLetter", "QueueCounts", "QueueOps", "ResubmitResult"]

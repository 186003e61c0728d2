"""Old import path of the ops port: the broker's admin side now lives in shared.bus.port (BusAdmin)
and shared.bus.dead_letters; these names stay until every caller has moved."""
from shared.bus.dead_letters import (
    MAX_MESSAGE_ID,
    RESUBMITTED_FROM,
    all_dead_letters,
    check_queue,
    find_dead_letter,
    resubmission,
    resubmit_id,
)
from shared.bus.port import BusAdmin, DeadLetter, QueueCounts, ResubmitResult
from shared.bus.port import BusAdminError as OpsError
from shared.bus.queues import PIPELINE_QUEUES

QueueOps = BusAdmin

__all__ = ["MAX_MESSAGE_ID", "PIPELINE_QUEUES", "RESUBMITTED_FROM", "BusAdmin", "DeadLetter", "OpsError",
           "QueueCounts", "QueueOps", "ResubmitResult", "all_dead_letters", "check_queue", "find_dead_letter",
           "resubmission", "resubmit_id"]

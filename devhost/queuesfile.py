"""Queue definitions from a file in the schemas/queues.json format (tests give the host short locks)."""
from __future__ import annotations

import json
from pathlib import Path

from shared.bus.queues import QueueDefinition, load_queue_definitions


def load_queues(path: Path) -> dict[str, QueueDefinition]:
    return load_queue_definitions(path)


def write_queues(path: Path, queues: dict[str, QueueDefinition]) -> None:
    """The inverse of load_queues, for tests that hand a subprocess host their own definitions."""

    def iso(td) -> str:
        seconds = td.total_seconds()
        return f"PT{int(seconds)}S" if seconds == int(seconds) else f"PT{seconds:.6f}S"

    path.write_text(json.dumps({"queues": [{
        "name": q.name, "lockDuration": iso(q.lock_duration),
        "defaultMessageTimeToLive": iso(q.default_message_time_to_live),
        "requiresDuplicateDetection": q.requires_duplicate_detection,
        "duplicateDetectionHistoryTimeWindow": iso(q.duplicate_detection_window),
        "deadLetteringOnMessageExpiration": q.dead_lettering_on_message_expiration,
        "maxDeliveryCount": q.max_delivery_count,
    } for q in queues.values()]}, indent=2))

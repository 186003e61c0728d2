"""The queues report that both `markr-ops queues` and GET /api/ops/queues answer."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.bus.port import BusAdmin, QueueCounts
from shared.bus.queues import PIPELINE_QUEUES


def all_counts(admin: BusAdmin) -> list[QueueCounts]:
    return [admin.counts(queue) for queue in PIPELINE_QUEUES]


def queues_report(admin: BusAdmin) -> dict[str, Any]:
    return {"generatedAt": datetime.now(UTC).isoformat(),
            "queues": [c.as_json() for c in all_counts(admin)]}

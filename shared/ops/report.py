"""The queues report that both `markr-ops queues` and GET /api/ops/queues answer."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.ops.port import PIPELINE_QUEUES, QueueCounts, QueueOps


def all_counts(ops: QueueOps) -> list[QueueCounts]:
    return [ops.counts(queue) for queue in PIPELINE_QUEUES]


def queues_report(ops: QueueOps) -> dict[str, Any]:
    return {"generatedAt": datetime.now(UTC).isoformat(),
            "queues": [c.as_json() for c in all_counts(ops)]}

"""Rich tables for people; --json output for scripts."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from shared.bus.port import DeadLetter, QueueCounts


def age(when: datetime | None) -> str:
    """How long ago, coarsely: 45s, 12m, 5h, 3d."""
    if when is None:
        return "-"
    seconds = max(int((datetime.now(UTC) - when).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def queues_table(counts: list[QueueCounts]) -> Table:
    table = Table(title="Markr queues")
    for name, justify in (("queue", "left"), ("active", "right"), ("scheduled", "right"),
                          ("dead-lettered", "right"), ("oldest active", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for c in counts:
        dead = f"[bold red]{c.dead_lettered}[/]" if c.dead_lettered else "0"
        table.add_row(c.queue, str(c.active), str(c.scheduled), dead, age(c.oldest_active_enqueued_utc))
    return table


def dead_letters_table(queue: str, dead: list[DeadLetter]) -> Table:
    table = Table(title=f"Dead letters of {queue} ({len(dead)})")
    for name in ("message id", "submission", "deliveries", "dead-lettered", "reason"):
        table.add_column(name, no_wrap=True)
    table.add_column("description", overflow="fold")
    for d in dead:
        when = d.dead_lettered_at_utc or d.enqueued_time_utc
        table.add_row(d.message_id, d.correlation_id or "-", str(d.delivery_count),
                      when.isoformat(timespec="seconds") if when else "-", d.reason or "-",
                      (d.description or "")[:200])
    return table


def as_json(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)

"""Queue definitions, read from schemas/queues.json (the same file infra/main.bicep reads).

The file is package data of `schemas`, so the deployed app, the tools and the Bicep read one file.

The one place queue names come from: the constants below are for code that needs a particular
queue, and must name a queue of the file (checked when the definitions load); PIPELINE_QUEUES
is the file's list, in its order (the order a document travels through them).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

QUEUES_FILE = Path(str(files("schemas").joinpath("queues.json")))

VALIDATION = "submission-validation"
MARKING = "submission-marking"
NOTIFICATION = "submission-notification"
AGGREGATION = "results-aggregation"
RETRY_SUFFIX = "-retry"
# Messages that failed inside a batch, consumed one at a time (Service Bus's delivery count and
# dead-lettering then apply per message). They carry the same messages as the queue they retry.
VALIDATION_RETRY = VALIDATION + RETRY_SUFFIX
MARKING_RETRY = MARKING + RETRY_SUFFIX
AGGREGATION_RETRY = AGGREGATION + RETRY_SUFFIX
_NAMED = (VALIDATION, VALIDATION_RETRY, MARKING, MARKING_RETRY, AGGREGATION, AGGREGATION_RETRY, NOTIFICATION)

_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def parse_duration(text: str) -> timedelta:
    """ISO 8601 durations as Service Bus uses them (PnDTnHnMnS)."""
    match = _DURATION.match(text)
    if not match or text in ("P", "PT"):
        raise ValueError(f"unsupported ISO 8601 duration: {text!r}")
    days, hours, minutes, seconds = match.groups()
    return timedelta(days=int(days or 0), hours=int(hours or 0), minutes=int(minutes or 0),
                     seconds=float(seconds or 0))


@dataclass(frozen=True)
class QueueDefinition:
    name: str
    lock_duration: timedelta
    default_message_time_to_live: timedelta
    requires_duplicate_detection: bool
    duplicate_detection_window: timedelta
    dead_lettering_on_message_expiration: bool
    max_delivery_count: int

    def with_overrides(self, **changes) -> QueueDefinition:
        return replace(self, **changes)


def load_queue_definitions(path: Path) -> dict[str, QueueDefinition]:
    """Queue definitions from a file in the schemas/queues.json format (defaults + per-queue overrides)."""
    spec = json.loads(Path(path).read_text())
    result = {}
    for queue in spec["queues"]:
        merged = {**spec.get("defaults", {}), **queue}
        try:
            result[merged["name"]] = QueueDefinition(
                name=merged["name"],
                lock_duration=parse_duration(merged["lockDuration"]),
                default_message_time_to_live=parse_duration(merged["defaultMessageTimeToLive"]),
                requires_duplicate_detection=bool(merged["requiresDuplicateDetection"]),
                duplicate_detection_window=parse_duration(merged["duplicateDetectionHistoryTimeWindow"]),
                dead_lettering_on_message_expiration=bool(merged["deadLetteringOnMessageExpiration"]),
                max_delivery_count=int(merged["maxDeliveryCount"]),
            )
        except KeyError as exc:
            raise ValueError(f"{path}: queue {merged.get('name')!r} lacks {exc.args[0]!r}") from exc
    return result


@lru_cache(maxsize=1)
def queue_definitions() -> dict[str, QueueDefinition]:
    definitions = load_queue_definitions(QUEUES_FILE)
    missing = [name for name in _NAMED if name not in definitions]
    if missing:
        raise ValueError(f"{QUEUES_FILE} lacks the queue(s) the code names: {', '.join(missing)}")
    return definitions


def pipeline_queues() -> tuple[str, ...]:
    """Every queue of schemas/queues.json, in the file's order."""
    return tuple(queue_definitions())


def retry_queue(queue: str) -> str:
    """Where messages that failed inside a batch of `queue` are retried one at a time."""
    return queue + RETRY_SUFFIX


def base_queue(queue: str) -> str:
    """The queue whose messages `queue` carries: itself, or for `<q>-retry` the queue `<q>`."""
    return queue.removesuffix(RETRY_SUFFIX)


PIPELINE_QUEUES: tuple[str, ...] = pipeline_queues()

"""What the use cases answer, free of HTTP: the edge (functions/http.py) maps these to responses."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.domain.submission_status import SubmissionStatus
from shared.pipeline.ports import CatalogueEntry, Histogram, ItemAnalysis, Statistics


@dataclass(frozen=True)
class Problem:
    """A request that could not be served: `code` names why (the edge picks the status from it)."""

    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImportPending:
    """Vaulted and queued; the verdict is not in yet (or was not waited for)."""

    submission_id: str
    state: SubmissionStatus | None = None  # set when the wait saw a `failed` run


@dataclass(frozen=True)
class ImportSettled:
    """The run was rejected or completed while the receiver waited."""

    state: SubmissionStatus


@dataclass(frozen=True)
class StatusFound:
    state: SubmissionStatus


@dataclass(frozen=True)
class StatisticsFound:
    statistics: Statistics


@dataclass(frozen=True)
class HealthReport:
    components: dict[str, dict[str, Any]]

    @property
    def ok(self) -> bool:
        return all(c["ok"] for c in self.components.values())


@dataclass(frozen=True)
class QueueReport:
    report: dict[str, Any]


@dataclass(frozen=True)
class CatalogueFound:
    entries: tuple[CatalogueEntry, ...]
    continuation_token: str | None  # None on the last page


@dataclass(frozen=True)
class HistogramFound:
    histogram: Histogram


@dataclass(frozen=True)
class ItemsFound:
    analysis: ItemAnalysis


@dataclass(frozen=True)
class CsvFound:
    body: bytes
    filename: str

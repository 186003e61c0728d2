"""The Markr scoring rule, as the reference the SQL marker is tested against.

A student may be scanned more than once for the same test (re-scans, pages folded over). For each
(test_id, student_number) the best marks are kept, taking the highest `available` and the highest
`obtained` independently, even when they come from different scans: 9/10 then 8/20 -> 9/20 = 45%.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shared.domain.model import TestResult


@dataclass(frozen=True, slots=True)
class BestMarks:
    available: int
    obtained: int

    @property
    def percent(self) -> float:
        return percent(self.obtained, self.available)


def best_marks(results: Iterable[TestResult]) -> dict[tuple[str, str], BestMarks]:
    """Best marks keyed by (test_id, student_number)."""
    best: dict[tuple[str, str], BestMarks] = {}
    for r in results:
        key = (r.test_id, r.student_number)
        seen = best.get(key)
        if seen is None:
            best[key] = BestMarks(r.available, r.obtained)
        else:
            best[key] = BestMarks(max(seen.available, r.available), max(seen.obtained, r.obtained))
    return best


def percent(obtained: int, available: int) -> float:
    if available <= 0:
        raise ValueError(f"available must be positive, got {available}")
    return 100.0 * obtained / available

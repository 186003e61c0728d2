"""The reference scoring rule: best available and best obtained per (test, student), independently."""

from __future__ import annotations

import pytest

from shared.domain.model import TestResult
from shared.domain.results_document import parse_results_document
from shared.domain.scoring_policy import BestMarks, best_marks, percent


def result(student: str, test: str, available: int, obtained: int, position: int = 1) -> TestResult:
    return TestResult(position, student, test, available, obtained, None, None, None)


def test_single_scan_is_kept_as_is() -> None:
    assert best_marks([result("002299", "9863", 20, 13)]) == {("9863", "002299"): BestMarks(20, 13)}


def test_maxima_are_taken_independently_across_rescans() -> None:
    best = best_marks([result("1", "t", 10, 9), result("1", "t", 20, 8)])
    assert best == {("t", "1"): BestMarks(available=20, obtained=9)}
    assert best[("t", "1")].percent == 45.0


def test_order_of_scans_does_not_matter() -> None:
    scans = [result("1", "t", 20, 8), result("1", "t", 10, 9), result("1", "t", 15, 3)]
    assert best_marks(scans) == best_marks(list(reversed(scans))) == {("t", "1"): BestMarks(20, 9)}


def test_students_and_tests_are_kept_apart() -> None:
    best = best_marks(
        [
            result("002299", "9863", 20, 13),
            result("2299", "9863", 20, 5),  # leading zeros make a different student
            result("002299", "9864", 10, 10),  # same student, another test
        ]
    )
    assert best == {
        ("9863", "002299"): BestMarks(20, 13),
        ("9863", "2299"): BestMarks(20, 5),
        ("9864", "002299"): BestMarks(10, 10),
    }


def test_empty_input() -> None:
    assert best_marks([]) == {}


def test_accepts_a_generator() -> None:
    assert best_marks(result(str(i % 3), "t", 10, i) for i in range(9)) == {
        ("t", "0"): BestMarks(10, 6),
        ("t", "1"): BestMarks(10, 7),
        ("t", "2"): BestMarks(10, 8),
    }


@pytest.mark.parametrize(
    ("obtained", "available", "expected"),
    [(13, 20, 65.0), (0, 20, 0.0), (20, 20, 100.0), (1, 3, 100.0 / 3), (9, 20, 45.0)],
)
def test_percent(obtained: int, available: int, expected: float) -> None:
    assert percent(obtained, available) == pytest.approx(expected)


def test_percent_refuses_zero_available() -> None:
    with pytest.raises(ValueError, match="available must be positive"):
        percent(0, 0)


def test_sample_document_scores(sample_results_xml: bytes) -> None:
    best = best_marks(parse_results_document(sample_results_xml).results)
    assert len(best) == 81
    assert {test for test, _ in best} == {"9863"}
    assert all(b.available >= 1 and 0 <= b.obtained <= b.available for b in best.values())
    assert best[("9863", "002299")] == BestMarks(20, 13)
    # Student 2326 was scanned twice in the sample (results 27 and 28): 15/20 then 9/20.
    assert best[("9863", "2326")] == BestMarks(20, 15)

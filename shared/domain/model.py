"""Value objects of a parsed results document (no I/O, no Azure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Answer:
    """One <answer> of a scan, judged usable (whole marks, awarded within available)."""

    question: str  # the question attribute, trimmed: "7" and "07" are different questions
    option: str  # the chosen option as written, trimmed ("" when blank)
    available: int
    awarded: int


SEPARATOR = "\x1f"  # cannot occur in XML text or attributes, so it joins values safely


@dataclass(frozen=True, slots=True)
class AnswerSheet:
    """A scan's usable answers, kept compact (a 100,000-result document carries two million):
    questions and options joined with SEPARATOR, marks as comma-separated whole numbers, and the
    sum of the awarded marks (validation adds them up anyway; staging a large document would
    otherwise split and add them again, 0.1 s per 50,000 results)."""

    questions: str
    options: str
    available: str
    awarded: str
    awarded_total: int

    @classmethod
    def of(cls, answers: Iterable[Answer]) -> AnswerSheet | None:
        answers = list(answers)
        if not answers:
            return None
        return cls(SEPARATOR.join(a.question for a in answers), SEPARATOR.join(a.option for a in answers),
                   ",".join(str(a.available) for a in answers), ",".join(str(a.awarded) for a in answers),
                   sum(a.awarded for a in answers))

    def answers(self) -> tuple[Answer, ...]:
        return tuple(Answer(q, o, int(av), int(aw)) for q, o, av, aw in zip(
            self.questions.split(SEPARATOR), self.options.split(SEPARATOR), self.available.split(","),
            self.awarded.split(","), strict=True))


@dataclass(frozen=True, slots=True)
class TestResult:
    __test__ = False  # not a pytest test class despite the name

    result: int  # position in the document, counting from 1
    student_number: str  # trimmed string: "002299" != "2299"
    test_id: str  # trimmed string
    available: int
    obtained: int
    first_name: str | None
    last_name: str | None
    scanned_on: str | None  # as written
    answer_sheet: AnswerSheet | None = None  # for item analysis only: scoring uses summary-marks

    @property
    def answers(self) -> tuple[Answer, ...]:
        return self.answer_sheet.answers() if self.answer_sheet else ()

    @property
    def awarded_total(self) -> int | None:
        """Sum of the awarded marks, or None when the scan has no usable answers."""
        return self.answer_sheet.awarded_total if self.answer_sheet else None

    def to_json(self) -> dict[str, Any]:
        """The result in the normalized JSON shape (schemas/results-document.schema.json)."""
        item: dict[str, Any] = {
            "studentNumber": self.student_number,
            "testId": self.test_id,
            "available": self.available,
            "obtained": self.obtained,
        }
        if self.first_name is not None:
            item["firstName"] = self.first_name
        if self.last_name is not None:
            item["lastName"] = self.last_name
        if self.scanned_on is not None:
            item["scannedOn"] = self.scanned_on
        return item


@dataclass(frozen=True)
class Problem:
    code: str  # stable kebab-case code, e.g. "missing-field"
    message: str  # human-readable and specific
    result: int | None = None  # 1-based result position; None for document-level problems
    field: str | None = None  # e.g. "student-number", "summary-marks/@available"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.result is not None:
            out["result"] = self.result
        if self.field is not None:
            out["field"] = self.field
        return out


@dataclass(frozen=True)
class ParsedDocument:
    results: tuple[TestResult, ...]  # empty whenever errors is non-empty: a document is rejected whole
    errors: tuple[Problem, ...]  # document-level problems first, then per result in document order; capped
    error_count: int  # true number of errors, even beyond the cap
    warnings: tuple[Problem, ...]  # capped like errors
    result_count: int  # number of <mcq-test-result> elements seen

    @property
    def valid(self) -> bool:
        return self.error_count == 0

    @property
    def test_ids(self) -> list[str]:
        return sorted({r.test_id for r in self.results})

    def normalized(self) -> dict[str, Any]:
        """The accepted document as normalized JSON (built on demand, not during parsing)."""
        return {"results": [r.to_json() for r in self.results]}

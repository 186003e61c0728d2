"""Parse and validate an <mcq-test-results> document: the whole document is accepted or rejected.

    parsed = parse_results_document(gzip.GzipFile(fileobj=stored))
    if not parsed.valid:
        ... parsed.errors (capped at max_errors), parsed.error_count (true number)

Every problem is listed (up to max_errors), not just the first: document-level problems first (not
well-formed, DOCTYPE, wrong root, no results), then each result's problems in document order. A DOCTYPE
or wrong root stops reading at once; a syntax error stops reading where it occurs, keeping the problems
already found in the results before it. Duplicate students and re-scans are not errors: the scoring
policy (scoring_policy.py) resolves them.
"""

from __future__ import annotations

from typing import BinaryIO

from shared.domain.model import ParsedDocument, Problem, TestResult
from shared.domain.plain_reader import read_plain_results
from shared.domain.validation import check, normalize, read_answers, to_test_result
from shared.domain.xml_reader import DocumentRejected

__all__ = ["ParsedDocument", "Problem", "TestResult", "parse_results_document"]


def parse_results_document(source: bytes | BinaryIO, *, max_errors: int = 1000) -> ParsedDocument:
    """Read `source` (bytes, or a binary stream such as gzip.GzipFile) in one streaming pass.

    The encoding comes from the XML declaration (UTF-8 by default). Errors raised while reading the
    stream itself (e.g. a corrupt gzip member) propagate: they are not properties of the document.
    """
    if max_errors < 1:
        raise ValueError("max_errors must be at least 1")
    results: list[TestResult] = []
    errors: list[Problem] = []
    warnings: list[Problem] = []
    error_count = 0
    result_count = 0
    fatal: Problem | None = None
    try:
        for raw in read_plain_results(source):
            result_count = raw.position
            item = normalize(raw)
            found, warned = check(raw, item)
            if found:
                error_count += len(found)
                errors.extend(found[: max(0, max_errors - len(errors))])
                results.clear()  # rejected whole: stop collecting results
            elif error_count == 0:
                answers, answer_warnings = read_answers(raw, item["obtained"])
                warned += answer_warnings
                results.append(to_test_result(raw, item, answers))
            warnings.extend(warned[: max(0, max_errors - len(warnings))])
    except DocumentRejected as rejected:
        fatal = rejected.problem
    if fatal is None and result_count == 0:
        fatal = Problem("no-results", "document has no <mcq-test-result> elements")
    if fatal is not None:
        error_count += 1
        errors = [fatal, *errors[: max_errors - 1]]
        results.clear()
    return ParsedDocument(
        results=tuple(results),
        errors=tuple(errors),
        error_count=error_count,
        warnings=tuple(warnings),
        result_count=result_count,
    )

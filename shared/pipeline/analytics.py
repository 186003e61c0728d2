"""Analysts' read side: the test catalogue, a test's histogram, item analysis and student export.

Each use case validates its input and answers an outcome (shared/pipeline/outcomes.py); the views
themselves are precomputed with the statistics (shared/db/results.py, _COMPUTE), except item
analysis, computed when read from the sums the marking keeps (_ITEM_ANALYSIS).
"""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

from shared.domain.ids import invalid_identifier
from shared.pipeline.outcomes import CatalogueFound, CsvFound, HistogramFound, ItemsFound, Problem
from shared.pipeline.ports import ResultsReader

DEFAULT_PAGE = 100
MAX_PAGE = 1000


def encode_token(after: str) -> str:
    """An opaque continuation token: the last test id of the page, base64url of a small JSON."""
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode().rstrip("=")


def decode_token(token: str) -> str | None:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    after = data.get("after") if isinstance(data, dict) else None
    return after if isinstance(after, str) else None


def catalogue(limit: str | None, token: str | None, *, reader: ResultsReader) -> Problem | CatalogueFound:
    if limit is None or limit == "":
        size = DEFAULT_PAGE
    elif limit.isascii() and limit.isdigit() and 1 <= int(limit) <= MAX_PAGE:
        size = int(limit)
    else:
        return Problem("invalid-limit", f"limit {limit[:40]!r} is not a whole number from 1 to {MAX_PAGE}")
    after = None
    if token:
        after = decode_token(token)
        if after is None:
            return Problem("invalid-continuation-token",
                           "continuationToken is not one this API gave out; start again without it")
    entries = list(reader.list_tests(after, size + 1))  # one more tells whether a next page exists
    more = len(entries) > size
    entries = entries[:size]
    return CatalogueFound(tuple(entries), encode_token(entries[-1].test_id) if more else None)


def _test_problem(test_id: str) -> Problem | None:
    bad = invalid_identifier(test_id)
    return Problem("invalid-test-id", f"test id {test_id!r} {bad}") if bad else None


def _not_found(test_id: str) -> Problem:
    return Problem("test-not-found", f"no results for test {test_id!r}")


def _per_test(test_id: str, read: Callable[[str], Any], found: Callable[[Any], Any]) -> Any:
    """One test's precomputed view: 400 for a bad id, 404 when the test has no results."""
    problem = _test_problem(test_id)
    if problem:
        return problem
    view = read(test_id)
    return found(view) if view is not None else _not_found(test_id)


def histogram_of(test_id: str, *, reader: ResultsReader) -> Problem | HistogramFound:
    return _per_test(test_id, reader.histogram, HistogramFound)


def items_of(test_id: str, *, reader: ResultsReader) -> Problem | ItemsFound:
    return _per_test(test_id, reader.item_analysis, ItemsFound)


def students_csv_of(test_id: str, *, reader: ResultsReader) -> Problem | CsvFound:
    return _per_test(test_id, reader.students_csv, lambda body: CsvFound(body, f"students-{test_id}.csv"))

"""The analysts' dashboard over the real local host, with the sample file and a few crafted tests."""
from __future__ import annotations

import csv
import io
import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import check_accessibility, post_document, screenshot, site
from tests.documents import make_document

EXPECTED_SAMPLE = {"mean": 50.80246913580247, "stddev": 9.92119535943923, "min": 30.0, "max": 75.0,
                   "p25": 45.0, "p50": 50.0, "p75": 55.0, "count": 81}
LABELS = {"mean": "Mean", "stddev": "Standard deviation", "min": "Minimum", "max": "Maximum",
          "p25": "25th percentile", "p50": "Median (50th percentile)", "p75": "75th percentile",
          "count": "Students"}
SAMPLE_BINS = [0, 0, 0, 6, 28, 28, 14, 5, 0, 0]


def items_document(test_id: str) -> bytes:
    """25 students, two questions: on question 1 one student chose D (4% < 5%: flagged)."""
    results = []
    for i in range(25):
        first = "D" if i == 0 else "A"
        second = "B" if i % 2 else "C"
        q1 = int(first == "A")
        q2 = int(second == "B")
        answers = (f'<answer question="1" marks-available="1" marks-awarded="{q1}">{first}</answer>'
                   f'<answer question="2" marks-available="1" marks-awarded="{q2}">{second}</answer>')
        results.append({"student_number": f"S{i:03d}", "test_id": test_id, "available": 2,
                        "obtained": q1 + q2, "answers": 0, "extra": answers})
    return make_document(results)


@pytest.fixture(scope="module")
def loaded(host, sample_results_xml):
    post_document(host, sample_results_xml)
    post_document(host, items_document("items-demo"))
    post_document(host, make_document([{"student_number": "1", "test_id": "alpha-1", "available": 10,
                                        "obtained": 7}]))
    return host


def test_list_shows_tests_and_search_filters_them(loaded, page: Page) -> None:
    page.goto(site(loaded))
    expect(page.get_by_role("heading", level=1, name="Tests")).to_be_visible()
    table = page.get_by_role("table")
    for test_id in ("9863", "items-demo", "alpha-1"):
        expect(table.get_by_role("link", name=f"Test {test_id}", exact=True)).to_be_visible()
    row = table.get_by_role("row").filter(has=page.get_by_role("link", name="Test 9863", exact=True))
    expect(row.get_by_role("cell").first).to_have_text("81")  # students
    check_accessibility(page)

    page.get_by_label("Search by test id").fill("alp")
    expect(page.locator("#search-count")).to_have_text("1 of 3 tests match “alp”.")
    expect(table.get_by_role("link")).to_have_count(1)
    expect(page.get_by_role("status")).to_have_text("1 of 3 tests match “alp”.")  # announced once typing stops
    page.get_by_label("Search by test id").fill("zzz")
    expect(page.get_by_text("No test id contains that text.")).to_be_visible()
    check_accessibility(page)


def test_test_page_shows_the_eight_statistics_tied_to_their_labels(loaded, page: Page) -> None:
    page.goto(site(loaded) + "#/tests/9863")
    expect(page.get_by_role("heading", level=1, name="Test 9863")).to_be_visible()
    for key, label in LABELS.items():
        value = page.get_by_label(label, exact=True)  # the <dd> is labelled by its <dt>
        expect(value).to_have_count(1)
        assert float(value.locator("data").get_attribute("value")) == pytest.approx(EXPECTED_SAMPLE[key])
    expect(page.get_by_label("Mean", exact=True)).to_have_text("50.8%")
    expect(page.get_by_label("Students", exact=True)).to_have_text("81")
    expect(page.get_by_label("Standard deviation", exact=True)).to_have_text("9.9 pts")
    check_accessibility(page)
    screenshot(page, "test-page")

"""The analysts' dashboard over the real local host, with the sample file and a few crafted tests."""
from __future__ import annotations

import csv
import io
import json
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
    screenshot(page, "test-list")

    expect(page.get_by_role("button", name="Show more tests")).to_be_hidden()  # one page holds them all
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
    page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing may need sideways scrolling
    assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    check_accessibility(page)
    screenshot(page, "test-page-narrow")


def test_histogram_bars_state_their_range_and_count(loaded, page: Page) -> None:
    page.goto(site(loaded) + "#/tests/9863")
    bars = page.locator(".histogram").get_by_role("img")
    expect(bars).to_have_count(10)
    for i, n in enumerate(SAMPLE_BINS):
        students = "student" if n == 1 else "students"
        name = (f"{10 * i}% to 100% inclusive: {n} {students}" if i == 9
                else f"{10 * i}% to under {10 * (i + 1)}%: {n} {students}")
        expect(page.get_by_role("img", name=name, exact=True)).to_have_count(1)
    # Bars are drawn to scale: the two 28-student bins are the tallest, the empty ones flat.
    heights = bars.evaluate_all("bars => bars.map(b => b.getBoundingClientRect().height)")
    assert heights[4] == heights[5] == max(heights) and heights[3] < heights[6] < heights[4]
    assert heights[0] <= 1
    expect(page.get_by_text("81 students in all.")).to_be_visible()


def test_item_table_shows_flagged_questions_in_words(loaded, page: Page) -> None:
    page.goto(site(loaded) + "#/tests/items-demo")
    table = page.get_by_role("table", name="Questions: difficulty, discrimination and the options chosen")
    q1 = table.get_by_role("row").filter(has=page.get_by_role("rowheader", name="Q1", exact=True))
    q2 = table.get_by_role("row").filter(has=page.get_by_role("rowheader", name="Q2", exact=True))
    expect(q1).to_contain_text("Flagged: option D chosen by 4.0% of students (under 5%)")
    expect(q1).to_contain_text("D: 4.0% (rare)")
    expect(q1.get_by_role("cell").nth(0)).to_have_text("25")  # answered
    expect(q1.get_by_role("cell").nth(1)).to_have_text("0.96")  # difficulty: 24 of 25 right
    expect(q2).not_to_contain_text("Flagged")
    expect(page.get_by_text("2 questions, 1 flagged.")).to_be_visible()
    check_accessibility(page)
    screenshot(page, "items-page")


def test_csv_download_carries_every_student(loaded, page: Page) -> None:
    page.goto(site(loaded) + "#/tests/9863")
    link = page.get_by_role("link", name="Download student results (CSV)")
    with page.expect_download() as download_info:
        link.click()
    download = download_info.value
    assert download.suggested_filename == "test-9863-students.csv"
    rows = list(csv.reader(io.StringIO(download.path().read_text(encoding="utf-8"))))
    assert [h.strip() for h in rows[0]] == ["student_number", "available", "obtained", "percent", "submissions"]
    assert len(rows) == 1 + 81
    assert {r[0] for r in rows[1:]} >= {"002299"}


def test_not_found_states_for_an_unknown_test_and_an_unknown_page(loaded, page: Page) -> None:
    page.goto(site(loaded) + "#/tests/no-such-test")
    expect(page.get_by_role("heading", level=1, name="Test not found")).to_be_visible()
    expect(page.get_by_text("No results have been imported for test “no-such-test”.")).to_be_visible()
    check_accessibility(page)
    page.goto(site(loaded) + "#/nowhere")
    expect(page.get_by_role("heading", level=1, name="Page not found")).to_be_visible()
    page.get_by_role("link", name="Back to all tests").click()
    expect(page.get_by_role("heading", level=1, name="Tests")).to_be_focused()
    check_accessibility(page)


def test_keyboard_path_from_the_list_to_a_test_and_back(loaded, page: Page) -> None:
    page.goto(site(loaded))
    expect(page.get_by_role("link", name="Test 9863", exact=True)).to_be_visible()
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to main content")
    expect(skip).to_be_focused()
    assert skip.evaluate("e => e.getBoundingClientRect().top >= 0")  # shown when focused
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    search = page.get_by_label("Search by test id")
    expect(search).to_be_focused()
    assert _outline(page) != "none"  # focus is visible
    page.keyboard.type("986")
    page.keyboard.press("Tab")
    link = page.get_by_role("link", name="Test 9863", exact=True)
    expect(link).to_be_focused()
    assert _outline(page) != "none"
    page.keyboard.press("Enter")
    heading = page.get_by_role("heading", level=1, name="Test 9863")
    expect(heading).to_be_focused()  # focus moves to the new page
    expect(page).to_have_title(re.compile("^Test 9863"))
    for _ in range(10):  # the item table's scroll region, then the CSV link
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.textContent") == "Download student results (CSV)":
            break
    expect(page.get_by_role("link", name="Download student results (CSV)")).to_be_focused()
    assert _outline(page) != "none"
    heading.focus()
    page.keyboard.press("Shift+Tab")
    expect(page.get_by_role("link", name="All tests")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1, name="Tests")).to_be_focused()


def _outline(page: Page) -> str:
    return page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")


def test_reduced_motion_turns_the_bar_transitions_off(loaded, browser, analyst_token: str) -> None:
    durations = {}
    for motion in ("no-preference", "reduce"):
        context = browser.new_context(reduced_motion=motion)
        context.add_init_script(f"sessionStorage.setItem('markr.token', {json.dumps(analyst_token)})")
        try:
            page = context.new_page()
            page.goto(site(loaded) + "#/tests/9863")
            bar = page.locator(".histogram .bar").first
            expect(bar).to_be_attached()
            durations[motion] = bar.evaluate("b => getComputedStyle(b).transitionDuration")
        finally:
            context.close()
    assert durations == {"no-preference": "0.4s", "reduce": "0s"}


def test_list_pages_through_the_catalogue(loaded, page: Page) -> None:
    page.route("**/config.json", lambda route: route.fulfill(
        content_type="application/json", body='{"apiBase": "/api", "pollSeconds": 5, "pageSize": 2}'))
    page.goto(site(loaded))
    links = page.get_by_role("table").get_by_role("link")
    expect(links).to_have_count(2)
    expect(links).to_have_text(["Test 9863", "Test alpha-1"])
    page.get_by_role("button", name="Show more tests").click()
    expect(links).to_have_text(["Test 9863", "Test alpha-1", "Test items-demo"])
    expect(page.get_by_role("button", name="Show more tests")).to_be_hidden()
    expect(page.get_by_role("status")).to_have_text("3 tests loaded.")

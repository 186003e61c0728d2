"""The dashboard on a host that starts empty: the empty state, live updates after an import (polling
with ETag / If-None-Match, polite announcements), and how the analyst's token reaches the API."""
from __future__ import annotations

import json
import re

from playwright.sync_api import Page, expect

import tests.auth
from shared.auth import Role
from tests.browser.conftest import check_accessibility, post_document, screenshot, site
from tests.documents import make_document

# The page polls every 5 s (dashboard/config.json) and must show new results within 10 s.
WITHIN_POLL = 10_000


def one_result(test_id: str, student: str, obtained: int = 6) -> bytes:
    return make_document([{"student_number": student, "test_id": test_id, "available": 10, "obtained": obtained}])


def test_empty_catalogue_then_a_new_test_appears_and_is_announced(host, page: Page) -> None:
    page.goto(site(host))
    expect(page.get_by_role("heading", name="No tests yet")).to_be_visible()
    check_accessibility(page)
    post_document(host, one_result("live-1", "A1"))
    expect(page.get_by_role("link", name="Test live-1", exact=True)).to_be_visible(timeout=WITHIN_POLL)
    expect(page.get_by_role("status")).to_have_text("1 new test with results.")


def test_test_page_refreshes_with_etags_and_announces_only_new_results(host, page: Page) -> None:
    post_document(host, one_result("live-2", "B1"))
    exchanges: list[tuple[str | None, int]] = []
    page.on("response", lambda r: exchanges.append((r.request.headers.get("if-none-match"), r.status))
            if r.url.endswith("/api/results/live-2/aggregate") else None)
    page.goto(site(host) + "#/tests/live-2")
    students = page.get_by_label("Students", exact=True)
    expect(students).to_have_text("1")
    # A poll that finds nothing new: a conditional GET answered 304, and nothing is announced.
    with page.expect_response(lambda r: r.url.endswith("/live-2/aggregate") and r.status == 304,
                              timeout=WITHIN_POLL):
        pass
    assert exchanges[0] == (None, 200) and exchanges[-1][0] is not None
    expect(page.get_by_role("status")).to_have_text("")

    post_document(host, one_result("live-2", "B2", obtained=9))
    expect(students).to_have_text("2", timeout=WITHIN_POLL)
    expect(page.get_by_label("Maximum", exact=True)).to_have_text("90.0%")
    expect(page.get_by_role("img", name="90% to 100% inclusive: 1 student")).to_have_count(1)
    expect(page.get_by_role("status")).to_have_text("New results for test live-2: 2 students (was 1).")
    assert (None, 200) not in exchanges[1:]  # every poll after the first was conditional


def test_token_from_the_fragment_is_kept_out_of_the_url_and_sent_as_bearer(host, page: Page, analyst_token) -> None:
    token = analyst_token or "dev-token-123"
    post_document(host, one_result("live-3", "C1"))
    sent: dict[str, str | None] = {}
    page.on("request", lambda r: sent.__setitem__(r.url, r.headers.get("authorization")) if "/api/" in r.url else None)
    page.goto(site(host) + f"#token={token}&next=/tests/live-3")
    expect(page.get_by_role("heading", level=1, name="Test live-3")).to_be_visible()
    assert page.evaluate("() => location.hash") == "#/tests/live-3"
    assert token not in page.evaluate("() => location.href")
    assert page.evaluate("() => sessionStorage.getItem('markr.token')") == token
    with page.expect_download():
        page.get_by_role("link", name="Download student results (CSV)").click()
    assert any(url.endswith("/students.csv") for url in sent)
    assert sent and set(sent.values()) == {f"Bearer {token}"}, sent

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()
    assert page.evaluate("() => sessionStorage.getItem('markr.token')") is None


def test_401_and_403_show_what_to_do_and_the_sign_in_box_sends_the_token(host, page: Page, analyst_token) -> None:
    token = analyst_token
    post_document(host, one_result("live-4", "D1"))
    # The API's own refusals: a token it cannot verify (401), then a vendor's token without the
    # analyst role (403), swapped into the page's requests on their way out.
    presented = {"token": "not-a-token"}
    page.route("**/api/**", lambda route: route.continue_(
        headers={**route.request.headers, "authorization": f"Bearer {presented['token']}"}))
    page.goto(site(host) + "#/tests/live-4")
    expect(page.get_by_role("heading", level=1, name="Sign-in required")).to_be_visible()
    expect(page.get_by_text(re.compile(r"\(401: "))).to_be_visible()
    check_accessibility(page)

    presented["token"] = tests.auth.token(Role.SUBMIT)
    page.reload()
    expect(page.get_by_role("heading", level=1, name="Access denied")).to_be_visible()
    expect(page.get_by_text(re.compile(r"\(403: .*\)\. Ask for the analyst role"))).to_be_visible()
    screenshot(page, "access-denied")

    page.unroute("**/api/**")
    sent: list[str | None] = []
    page.on("request", lambda r: sent.append(r.headers.get("authorization")) if "/api/" in r.url else None)
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1, name="Test live-4")).to_be_focused()
    assert sent and set(sent) == {f"Bearer {token}"}


def test_a_refused_csv_download_says_so(host, page: Page) -> None:
    post_document(host, one_result("live-5", "E1"))
    page.route("**/students.csv", lambda route: route.fulfill(
        status=401, content_type="application/json",
        body=json.dumps({"error": {"code": "unauthorized", "message": "a bearer token is required"}})))
    page.goto(site(host) + "#/tests/live-5")
    page.get_by_role("link", name="Download student results (CSV)").click()
    message = "The CSV could not be downloaded (a bearer token is required). Please sign in again."
    expect(page.locator("#csv-note")).to_have_text(message)  # under the link (and announced)
    expect(page.get_by_role("status")).to_have_text(message)


def test_sign_in_page_keeps_the_token_for_the_tab_and_returns_to_the_list(host, page: Page, analyst_token) -> None:
    token = analyst_token
    page.goto(site(host))
    expect(page.get_by_role("heading", level=1, name="Tests")).to_be_visible()
    if analyst_token:  # every page starts signed in: the header offers Sign out instead
        page.evaluate("() => { location.hash = '#/sign-in'; }")
    else:
        page.get_by_role("link", name="Sign in").click()
    expect(page.get_by_role("heading", level=1, name="Sign in")).to_be_focused()
    check_accessibility(page)
    page.get_by_label("Access token").fill(f"  {token}  ")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1, name="Tests")).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    assert page.evaluate("() => sessionStorage.getItem('markr.token')") == token


def test_a_failed_poll_keeps_the_page_and_says_so_until_the_api_is_back(host, page: Page) -> None:
    post_document(host, one_result("live-6", "F1"))
    page.goto(site(host) + "#/tests/live-6")
    students = page.get_by_label("Students", exact=True)
    expect(students).to_have_text("1")
    page.route("**/live-6/aggregate", lambda route: route.fulfill(
        status=503, content_type="application/json", headers={"Retry-After": "5"},
        body=json.dumps({"error": {"code": "database-unavailable", "message": "the database cannot be reached"}})))
    notice = page.locator("#notice")
    message = "The results could not be refreshed (the database cannot be reached). Trying again every 5 s."
    expect(notice).to_have_text(message, timeout=WITHIN_POLL)
    expect(page.get_by_role("status")).to_have_text(message)
    expect(students).to_have_text("1")  # the page stays
    check_accessibility(page)
    page.unroute("**/live-6/aggregate")
    expect(notice).to_be_hidden(timeout=WITHIN_POLL)
    expect(page.get_by_role("status")).to_have_text("Connection restored: results are up to date.")

"""The dashboard's MSAL token provider (dashboard/auth-msal.js), configured as in Azure, against a stub
of MSAL.js served in place of the vendored bundle: what the page asks the library for, and that the
token it hands back is what the real local host sees as the analyst's bearer token."""
from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

import tests.auth
from devhost.stack import ROOT
from shared.auth import Role
from tests.browser.conftest import check_accessibility, post_document, site
from tests.documents import make_document

# What the deploy step copies to dashboard/vendor/msal-browser.min.js (docs/deploy.md).
MSAL_BUNDLE = ROOT / "node_modules" / "@azure" / "msal-browser" / "lib" / "msal-browser.min.js"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
AUTHORITY = "https://login.microsoftonline.com/00000000-0000-0000-0000-00000000aaaa"
SCOPES = ["api://66666666-7777-8888-9999-000000000000/access_as_user"]
ACCOUNT = {"homeAccountId": "oid.tid", "username": "analyst@example.org", "tenantId": "tid"}

# MSAL.js as the page uses it, recording every call in sessionStorage (it outlives the page, as a
# real redirect would not let an in-memory log). "stub.*" keys steer it.
STUB = """
const log = () => JSON.parse(sessionStorage.getItem("stub.calls") || "[]");
const record = (name, arg) => sessionStorage.setItem("stub.calls", JSON.stringify([...log(), [name, arg ?? null]]));
class InteractionRequiredAuthError extends Error {}
class PublicClientApplication {
  constructor(config) { record("new", config); this.active = null; }
  async initialize() { record("initialize"); }
  async handleRedirectPromise() {
    record("handleRedirectPromise");
    const back = sessionStorage.getItem("stub.back");  // the account a redirect just signed in
    if (!back) return null;
    sessionStorage.removeItem("stub.back");
    sessionStorage.setItem("stub.account", back);
    return { account: JSON.parse(back), accessToken: "from-the-redirect" };
  }
  getAllAccounts() { const a = sessionStorage.getItem("stub.account"); return a ? [JSON.parse(a)] : []; }
  getActiveAccount() { return this.active; }
  setActiveAccount(account) { this.active = account; }
  async acquireTokenSilent(request) {
    record("acquireTokenSilent", request);
    if (sessionStorage.getItem("stub.interaction")) throw new InteractionRequiredAuthError("interaction_required");
    return { accessToken: sessionStorage.getItem("stub.token") };
  }
  async acquireTokenRedirect(request) { record("acquireTokenRedirect", request); }
  async loginRedirect(request) { record("loginRedirect", request); }
  async logoutRedirect(request) {
    record("logoutRedirect", request);
    sessionStorage.removeItem("stub.account");
    this.active = null;
  }
}
globalThis.msal = { PublicClientApplication, InteractionRequiredAuthError };
"""


@pytest.fixture
def analyst_token() -> None:
    """No development token in the tab: every token comes through the provider."""
    return None


@pytest.fixture(scope="module")
def loaded(host):
    post_document(host, make_document([{"student_number": "1", "test_id": "msal-1", "available": 10, "obtained": 7}]))
    return host


@pytest.fixture
def url(loaded) -> str:
    return site(loaded)


@pytest.fixture
def msal_page(page: Page) -> Iterator[Page]:
    config = {"apiBase": "/api", "pollSeconds": 5, "tokenProvider": "./auth-msal.js",
              "msal": {"clientId": CLIENT_ID, "authority": AUTHORITY, "scopes": SCOPES}}
    page.route("**/config.json", lambda route: route.fulfill(json=config))
    page.route("**/vendor/msal-browser.min.js",
               lambda route: route.fulfill(body=STUB, content_type="text/javascript; charset=utf-8"))
    yield page


def stub_state(page: Page, **keys: str) -> None:
    """sessionStorage keys set before the page's first script, on its first load only."""
    sets = "".join(f"sessionStorage.setItem({json.dumps('stub.' + k)}, {json.dumps(v)});" for k, v in keys.items())
    page.add_init_script(f"if (!sessionStorage.getItem('stub.ready')) {{ {sets} sessionStorage.setItem('stub.ready', '1'); }}")


def calls(page: Page, name: str | None = None) -> list:
    made = page.evaluate("() => JSON.parse(sessionStorage.getItem('stub.calls') || '[]')")
    return [arg for call, arg in made if call == name] if name else [call for call, _ in made]


def test_back_from_sign_in_the_page_calls_the_api_with_the_silently_acquired_token(msal_page: Page, url: str) -> None:
    page = msal_page
    token = tests.auth.token(Role.READ)
    stub_state(page, back=json.dumps(ACCOUNT), token=token)
    sent: list[str | None] = []
    page.on("request", lambda r: sent.append(r.headers.get("authorization")) if "/api/" in r.url else None)
    page.goto(url)
    expect(page.get_by_role("link", name="Test msal-1", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()

    [config] = calls(page, "new")
    assert config["auth"] == {"clientId": CLIENT_ID, "authority": AUTHORITY, "redirectUri": url,
                              "postLogoutRedirectUri": url}
    assert config["cache"] == {"cacheLocation": "sessionStorage"}
    order = calls(page)
    assert order[:3] == ["new", "initialize", "handleRedirectPromise"]
    silent = calls(page, "acquireTokenSilent")
    assert silent and all(r == {"scopes": SCOPES, "account": ACCOUNT} for r in silent)
    assert sent and all(header == f"Bearer {token}" for header in sent)  # the real host accepted it: 200s
    assert "acquireTokenRedirect" not in order and "loginRedirect" not in order
    check_accessibility(page)

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("link", name="Sign in")).to_be_visible()
    assert calls(page, "logoutRedirect") == [{"account": ACCOUNT}]


def test_when_entra_id_wants_the_analyst_the_page_redirects_for_a_token(msal_page: Page, url: str) -> None:
    page = msal_page
    stub_state(page, account=json.dumps(ACCOUNT), interaction="1")
    page.goto(url + "#/tests/msal-1")
    expect(page.get_by_role("heading", level=1, name="Sign-in required")).to_be_visible()
    assert calls(page, "acquireTokenRedirect")[0] == {"scopes": SCOPES, "account": ACCOUNT}
    assert calls(page, "acquireTokenSilent")[0] == {"scopes": SCOPES, "account": ACCOUNT}


def test_signed_out_the_sign_in_button_redirects_to_entra_id_for_the_api_scope(msal_page: Page, url: str) -> None:
    page = msal_page
    page.goto(url)
    expect(page.get_by_role("heading", level=1, name="Sign-in required")).to_be_visible()
    expect(page.get_by_label("Access token")).to_have_count(0)  # no token box: Entra ID signs in
    assert "acquireTokenSilent" not in calls(page)  # nobody to ask a token for
    check_accessibility(page)
    page.get_by_role("main").get_by_role("button", name="Sign in").click()
    page.wait_for_function("() => (sessionStorage.getItem('stub.calls') || '').includes('loginRedirect')")
    assert calls(page, "loginRedirect") == [{"scopes": SCOPES}]


def test_the_pinned_msal_bundle_loads_as_the_vendored_file_under_the_pages_csp(page: Page, url: str) -> None:
    """The real library (the file the deploy step copies), not the stub: it loads under the page's own
    Content-Security-Policy, takes the configuration, finds no redirect to finish and nobody signed in."""
    config = {"apiBase": "/api", "pollSeconds": 5, "tokenProvider": "./auth-msal.js",
              "msal": {"clientId": CLIENT_ID, "authority": AUTHORITY, "scopes": SCOPES}}
    page.route("**/config.json", lambda route: route.fulfill(json=config))
    page.route("**/vendor/msal-browser.min.js",
               lambda route: route.fulfill(path=str(MSAL_BUNDLE), content_type="text/javascript; charset=utf-8"))
    elsewhere: list[str] = []
    page.on("request", lambda r: elsewhere.append(r.url) if not r.url.startswith(url) else None)
    page.goto(url)
    expect(page.get_by_role("heading", level=1, name="Sign-in required")).to_be_visible()
    expect(page.get_by_role("main").get_by_role("button", name="Sign in")).to_be_visible()
    assert page.evaluate("() => typeof globalThis.msal.PublicClientApplication") == "function"
    assert elsewhere == []  # nothing asked of Entra ID before the analyst chooses to sign in


def test_a_provider_that_cannot_start_says_so_instead_of_loading_forever(msal_page: Page, url: str) -> None:
    page = msal_page
    page.unroute("**/config.json")
    page.route("**/config.json", lambda route: route.fulfill(json={"tokenProvider": "./auth-msal.js", "msal": {}}))
    page.goto(url)
    expect(page.get_by_role("heading", level=1, name="Sign-in is not available")).to_be_visible()
    expect(page.get_by_text('config.json: "msal" needs a clientId and at least one scope.')).to_be_visible()
    assert calls(page) == []  # MSAL.js was never asked for anything
    check_accessibility(page)

"""The dashboard in a real browser: Playwright for Python driving Debian's Chromium, against the real
local host (python -m devhost) on the suite's PostgreSQL and Azurite.

One host per test module, on a database of the module's own: starting a host per test would cost more
than the tests. Each test gets a fresh browser context (its own sessionStorage).
"""
from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

import tests.auth
from devhost.stack import ROOT
from devhost.testing import HostProcess, start_host_process
from shared.auth import Role

AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / ".local" / "screenshots"
# Chromium in a closed network: no background fetches, no component updates (see scripts/bootstrap.sh).
# Assertions wait up to 10 s for the page (Playwright's default, 5 s, is short on a busy 2-core machine).
expect.set_options(timeout=10_000)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]


def chromium_path() -> str:
    path = os.environ.get("MARKR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Chromium is missing: scripts/bootstrap.sh installs it as root (apt-get install chromium); "
                    "otherwise install it or set MARKR_CHROMIUM to a Chromium binary.")
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def module_database(postgres_server: str, template_database: str) -> Iterator[str]:
    name = f"b_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE markr_template")
    try:
        yield postgres_server.rpartition("/")[0] + "/" + name
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def host(module_database: str, vault_storage: str) -> Iterator[HostProcess]:
    env = {"MARKR_DATABASE_URL": module_database, "VaultStorage": vault_storage,
           "MARKR_VAULT_TABLE": f"vault{uuid.uuid4().hex[:16]}", "MARKR_BUS": "local",
           "MARKR_IMPORT_WAIT_SECONDS": "60"}
    process = start_host_process(env).wait_ready()
    try:
        yield process
    finally:
        process.close()


def site(host: HostProcess) -> str:
    """The dashboard's address: the host's root (its base_url ends in the /api route prefix)."""
    return host.base_url.removesuffix("/api") + "/"


def post_document(host: HostProcess, body: bytes) -> dict:
    req = urllib.request.Request(host.base_url + "/import", data=body, method="POST",
                                 headers=tests.auth.with_auth("POST", "/api/import", {"Content-Type": "text/xml+markr"}))
    try:
        with urllib.request.urlopen(req, timeout=90) as resp:
            answer = json.loads(resp.read())
    except urllib.error.HTTPError as err:
        raise AssertionError(f"import answered {err.code}: {err.read()!r}") from err
    assert answer["status"] == "completed", answer
    return answer


@pytest.fixture
def analyst_token() -> str:
    """The token every page starts with (as after #token=): an analyst's, from the suite's issuer."""
    return tests.auth.token(Role.READ)


@pytest.fixture
def page(browser: Browser, analyst_token: str | None) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    if analyst_token:
        context.add_init_script(f"sessionStorage.setItem('markr.token', {json.dumps(analyst_token)})")
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # The page must work under its own Content-Security-Policy (the local host sends it).
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and "Content Security Policy" in msg.text else None)
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript or CSP errors on the page: {errors}"


def check_accessibility(page: Page) -> None:
    """axe-core (pinned in package.json) on the page as it is: no serious or critical violation."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE.read_text())  # through the DevTools protocol, so the page's CSP allows it
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    bad = [v for v in result["violations"] if v["impact"] in ("serious", "critical")]
    assert not bad, json.dumps([{"id": v["id"], "impact": v["impact"], "help": v["help"],
                                 "nodes": [n["target"] for n in v["nodes"]][:5]} for v in bad], indent=1)


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path

"""How fast the dashboard shows new results, and what an idle poll costs.

Starts a throw-away stack (.local/bench/dashboard), opens a test page in Debian's Chromium, then N
times: imports one more student for that test and measures the time from the import's 201 to the
page showing the new student count (each import at a random point of the 5 s poll cycle). Also
counts the answers to the polls of an idle page (304s, body bytes). Prints numbers; asserts nothing.

    .venv/bin/python -m bench.dashboard_refresh [--imports 10] [--idle-seconds 20]
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import time
import urllib.request

from bench.harness import BenchStack, install_sigterm_as_interrupt, percentile
from tests.documents import make_document

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
        "--disable-background-networking", "--disable-component-update"]


def post(api: str, student: str, auth: dict[str, str]) -> float:
    doc = make_document([{"student_number": student, "test_id": "bench-live", "available": 10, "obtained": 7}])
    req = urllib.request.Request(f"{api}/import", data=doc, method="POST", headers={"Content-Type": "text/xml+markr", **auth})
    with urllib.request.urlopen(req, timeout=90) as resp:
        assert json.loads(resp.read())["status"] == "completed"
    return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imports", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    args = parser.parse_args()
    install_sigterm_as_interrupt()
    rng = random.Random(0)
    from playwright.sync_api import sync_playwright

    with BenchStack("dashboard", host_args=["--workers", "1"]) as stack, sync_playwright() as pw:
        api = stack.host.base_url
        post(api, "S0", stack.auth_headers)
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
        try:
            page = browser.new_page()
            polls: list[tuple[int, int]] = []
            page.on("response", lambda r: polls.append((r.status, int(r.headers.get("content-length") or 0)))
                    if r.url.endswith("/bench-live/aggregate") else None)
            token = stack.auth_headers["Authorization"].removeprefix("Bearer ")
            page.goto(f"{stack.root_url}/#token={token}&next=/tests/bench-live")
            students = page.get_by_label("Students", exact=True)
            students.filter(has_text="1").wait_for()

            polls.clear()
            page.wait_for_timeout(1000 * args.idle_seconds)  # (time.sleep would not deliver the events)
            idle = list(polls)

            delays = []
            for i in range(1, args.imports + 1):
                time.sleep(rng.uniform(0, 5))  # land anywhere in the poll cycle, not right after a poll
                done = post(api, f"S{i}", stack.auth_headers)
                page.wait_for_function("n => document.getElementById('stat-count').textContent === String(n)",
                                       arg=i + 1, timeout=30_000, polling=50)
                delays.append(time.perf_counter() - done)
        finally:
            browser.close()

    statuses = [s for s, _ in idle]
    print(f"idle {args.idle_seconds:.0f} s on a test page: {len(idle)} aggregate polls, "
          f"{statuses.count(304)} answered 304, {sum(b for _, b in idle)} body bytes in all")
    print(f"import 201 -> page shows the new student, {len(delays)} imports: "
          f"p50 {percentile(delays, 50):.2f} s, max {max(delays):.2f} s (poll interval 5 s)")


if __name__ == "__main__":
    main()

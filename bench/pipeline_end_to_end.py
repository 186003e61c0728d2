"""End-to-end timings through the local host: receiver latency, time to `completed`, host peak RSS.

Starts a throw-away PostgreSQL and Azurite under .local/bench/ and `python -m devhost` as a
subprocess, then posts the sample file and a generated N-result document (default 50,000).

    .venv/bin/python -m bench.pipeline_end_to_end [--results 50000]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import bench_auth  # noqa: E402
from devhost.stack import Azurite, Postgres  # noqa: E402
from devhost.testing import start_host_process  # noqa: E402
from shared.db.migrations import migrate  # noqa: E402
from tests.documents import make_large_document  # noqa: E402

SAMPLE = ROOT / "tests" / "data" / "sample_results.xml"
AUTH: dict[str, str] = {}  # a token with every role (bench_auth), sent with every request


def call(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=body, method=method, headers={**AUTH, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=900) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(base: str, pid: int, name: str, body: bytes) -> None:
    root = base.removesuffix("/api")
    headers = {"Content-Type": "text/xml+markr", "Prefer": "respond-async"}
    started = time.perf_counter()
    status, answer = call(f"{root}/api/import", "POST", body, headers)
    accepted = time.perf_counter() - started
    assert status == 202, answer
    sid = answer["submissionId"]
    while True:
        status, state = call(f"{root}/api/submissions/{sid}")
        if state.get("status") in ("completed", "rejected", "failed"):
            break
        time.sleep(0.05)
    done = time.perf_counter() - started
    print(f"{name}: {len(body) / 1e6:.1f} MB, {state['results']} results -> {state['status']}; "
          f"receiver answered 202 in {accepted:.2f} s; completed after {done:.2f} s; "
          f"host peak RSS so far {peak_rss_mib(pid):.0f} MiB", flush=True)

    # The legacy (synchronous) answer for the same document: one more full run, timed by the client.
    started = time.perf_counter()
    status, answer = call(f"{root}/api/import", "POST", body, {"Content-Type": "text/xml+markr"})
    print(f"{name}: legacy POST answered {status} in {time.perf_counter() - started:.2f} s", flush=True)


def aggregate_reads(base: str, test_id: str, count: int = 500) -> None:
    """Aggregate GET latency over one keep-alive connection, as a dashboard polls it."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        conn.request("GET", f"/api/results/{test_id}/aggregate", headers=AUTH)
        resp = conn.getresponse()
        resp.read()
        times.append(time.perf_counter() - started)
        assert resp.status == 200
    conn.close()
    times.sort()
    print(f"aggregate GET x{count}: p50 {1000 * times[len(times) // 2]:.2f} ms, "
          f"p99 {1000 * times[int(len(times) * 0.99)]:.2f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", type=int, default=50_000)
    args = parser.parse_args()
    work = ROOT / ".local" / "bench" / "pipeline"
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()
    pg, azurite = Postgres(work / "pg" / "data"), Azurite(work / "azurite")
    url = pg.start()
    storage = azurite.start()
    migrate(url)
    auth_env, headers = bench_auth(work / "auth")
    AUTH.update(headers)
    env = {"MARKR_DATABASE_URL": url, "VaultStorage": storage, "MARKR_BUS": "local",
           "MARKR_IMPORT_WAIT_SECONDS": "600", **auth_env}
    host = start_host_process(env).wait_ready(120)
    print(f"stack + host ready in {time.perf_counter() - started:.1f} s", flush=True)
    try:
        run(host.base_url, host.pid, "sample_results.xml", SAMPLE.read_bytes())
        aggregate_reads(host.base_url, "9863")
        big = b"".join(make_large_document(args.results, seed=1))
        run(host.base_url, host.pid, f"{args.results}-result document", big)
        print(f"host peak RSS over the run: {peak_rss_mib(host.pid):.0f} MiB")
        # Where the large document's time went, as the validator logged it (the last two runs).
        steps = [line.split("stages: ", 1)[1] for line in host.log().splitlines()
                 if "shared.pipeline.stages: " in line and " in " in line and " s" in line]
        for line in steps[-6:]:
            print(f"  host log: {line[:160]}")
    finally:
        host.terminate()
        azurite.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

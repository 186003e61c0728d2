"""Time of `markr-ops reprocess --all --wait` over a vault of small submissions, on the local host.

    .venv/bin/python bench/reprocess_vault.py            # 1,000 submissions
    .venv/bin/python bench/reprocess_vault.py 5000

Starts a throw-away PostgreSQL cluster and Azurite under .local/bench, runs the real function app in
`python -m devhost` (a subprocess), fills the vault directly (not timed), then runs the CLI as a
subprocess and prints its time and submissions/s, and the stack's CPU-seconds per 1,000 submissions
(host / PostgreSQL / Azurite, see bench/harness.py). Asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ulid import ULID  # noqa: E402

from bench.harness import (  # noqa: E402
    CpuMeter,
    ProcessGroup,
    bench_auth,
    cpu_delta,
    format_cpu_line,
    postmaster_pid,
)
from devhost.stack import ROOT, Azurite, Postgres  # noqa: E402
from devhost.testing import start_host_process  # noqa: E402
from shared.db.migrations import migrate  # noqa: E402
from shared.vault.table_vault import TableVault  # noqa: E402
from tests.documents import make_document  # noqa: E402


def fill_vault(vault: TableVault, n: int) -> None:
    def put(i: int) -> None:
        results = [{"student_number": f"{i * 3 + k:06d}", "test_id": str(9000 + i % 5),
                    "available": 20, "obtained": (i + k) % 21} for k in range(3)]
        vault.put(source="default", submission_id=str(ULID()), content_type="text/xml+markr",
                  body=make_document(results), received_at=datetime.now(UTC))

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, range(n)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("submissions", type=int, nargs="?", default=1000)
    args = parser.parse_args()
    work = ROOT / ".local" / "bench" / f"reprocess-{uuid.uuid4().hex[:6]}"
    server, azurite = Postgres(work / "pg" / "data"), Azurite(work / "azurite")
    host = None
    try:
        url, storage = server.start(), azurite.start()
        migrate(url)
        env = {"MARKR_DATABASE_URL": url, "VaultStorage": storage, "MARKR_VAULT_TABLE": "benchvault",
               "MARKR_BUS": "local", "MARKR_DEAD_LETTER_SWEEP_SCHEDULE": "0 */1 * * * *",
               **bench_auth(work / "auth")[0]}  # an issuer of its own (no HTTP calls here)
        started = time.perf_counter()
        fill_vault(TableVault.from_connection_string(storage, "benchvault"), args.submissions)
        print(f"vault filled with {args.submissions} submissions in {time.perf_counter() - started:.1f} s")
        host = start_host_process(env).wait_ready()
        settings = work / "settings.json"
        settings.write_text('{"Values": {}}')
        command = [str(Path(sys.executable).parent / "markr-ops"), "--settings", str(settings), "reprocess",
                   "--all", "--wait", "--json", "--checkpoint", str(work / "checkpoint.jsonl")]
        groups = [ProcessGroup("host", host.pid), ProcessGroup("postgres", postmaster_pid(server)),
                  ProcessGroup("azurite", azurite.process.pid)]
        with CpuMeter(groups) as meter:  # the stack's CPU only: markr-ops (the client) is not counted
            cpu_before = meter.snapshot()
            started = time.perf_counter()
            done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, cwd=work)
            elapsed = time.perf_counter() - started
            cpu = cpu_delta(cpu_before, meter.snapshot())
        if done.returncode != 0:
            raise SystemExit(f"markr-ops failed ({done.returncode}): {done.stdout}{done.stderr}")
        summary = json.loads(done.stdout)
        print(f"reprocess --all --wait: {summary['selected']} submissions in {elapsed:.2f} s "
              f"(runs started in {summary['sendSeconds']:.2f} s) = {summary['selected'] / elapsed:.0f} submissions/s; "
              f"statuses {summary['statuses']}")
        print(format_cpu_line(cpu, summary["selected"]))
    finally:
        if host is not None:
            host.terminate()
        azurite.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

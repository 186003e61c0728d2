"""Time every step after parsing for a large document, in process, against a throw-away PostgreSQL.

    .venv/bin/python -m bench.stage_large_document [--results 50000] [--repeat 2]

Parses a generated document once (make_large_document, seed 1: 20 answers per result, ~10 tests,
10% re-scans), then runs what the validator does for it, as the local host would:
record_validation (staging COPY), apply_markings, refresh_statistics; each statement inside them
is timed too (its first SQL line names it). Three deliveries in turn against one database:

  first      the document into an empty database (the asynchronous import's `complete`)
  same-again the same document under a new submission id (what bench.pipeline_end_to_end's legacy
             POST sends: every student's counted scan moves to an identical one)
  other      another document (seed 2) over the same students and tests (incremental sums)

Prints wall seconds and PostgreSQL CPU seconds (the server's process tree) per step.
"""
from __future__ import annotations

import argparse
import io
import shutil
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg_pool import ConnectionPool  # noqa: E402
from ulid import ULID  # noqa: E402

from bench.harness import ProcessGroup, _children_map  # noqa: E402
from devhost.stack import Postgres  # noqa: E402
from shared.db.migrations import migrate  # noqa: E402
from shared.db.store import PostgresStore  # noqa: E402
from shared.domain.results_document import parse_results_document  # noqa: E402
from shared.pipeline.messages import SubmissionRef  # noqa: E402
from shared.pipeline.ports import Accepted  # noqa: E402
from tests.documents import make_large_document  # noqa: E402

STATEMENTS: dict[str, float] = defaultdict(float)


def _timed_execute(original):
    def execute(self, query, params=None, **kwargs):
        text = query if isinstance(query, str) else repr(query)
        name = " ".join(next((line for line in text.splitlines() if line.strip()), "").split())[:70]
        started = time.perf_counter()
        try:
            return original(self, query, params, **kwargs)
        finally:
            STATEMENTS[name] += time.perf_counter() - started
    return execute


def _pg_cpu(pg_pid: int) -> float:
    return ProcessGroup("postgres", pg_pid).cumulative(_children_map())


def deliver(store: PostgresStore, parsed, pg_pid: int, label: str) -> None:
    sid = str(ULID())
    ref = SubmissionRef(sid, "bench", sid)
    now = datetime.now(UTC)
    steps = [
        ("stage (record_validation)",
         lambda: store.record_validation([Accepted(ref, parsed.results, tuple(parsed.test_ids), (), now)], [])),
        ("mark (apply_markings)", lambda: store.apply_markings([ref], now)),
    ]
    total_wall = total_cpu = 0.0
    marking = None
    print(f"-- {label} ({len(parsed.results)} results, {len(parsed.test_ids)} tests)")
    for name, step in steps + [("statistics (refresh_statistics)", None)]:
        STATEMENTS.clear()
        cpu, started = _pg_cpu(pg_pid), time.perf_counter()
        if step is None:
            store.refresh_statistics(dict(marking.marked[0].test_versions))
        else:
            out = step()
            marking = out if name.startswith("mark") else marking
        wall, used = time.perf_counter() - started, _pg_cpu(pg_pid) - cpu
        total_wall += wall
        total_cpu += used
        print(f"   {name:34s} {wall:6.2f} s wall  {used:6.2f} s PostgreSQL CPU")
        for statement, seconds in sorted(STATEMENTS.items(), key=lambda kv: -kv[1])[:6]:
            if seconds >= 0.02:
                print(f"      {seconds:6.2f} s  {statement}")
    print(f"   {'total after parsing':34s} {total_wall:6.2f} s wall  {total_cpu:6.2f} s PostgreSQL CPU", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--results", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=1, help="run the three deliveries this many times, each on a fresh database")
    args = parser.parse_args()

    started = time.perf_counter()
    documents = {}
    for seed in (1, 2):
        body = b"".join(make_large_document(args.results, seed=seed))
        t = time.perf_counter()
        documents[seed] = parse_results_document(io.BytesIO(body))
        if seed == 1:
            print(f"parse: {time.perf_counter() - t:.2f} s for {len(body) / 1e6:.1f} MB", flush=True)
        assert documents[seed].valid

    psycopg.Connection.execute = _timed_execute(psycopg.Connection.execute)  # type: ignore[method-assign]
    work = ROOT / ".local" / "bench" / "stage"
    for _ in range(args.repeat):
        shutil.rmtree(work, ignore_errors=True)
        pg = Postgres(work / "pg" / "data")
        url = pg.start()
        try:
            migrate(url)
            pg_pid = int((pg.server_data_dir / "postmaster.pid").read_text().split()[0])
            pool = ConnectionPool(url, min_size=1, max_size=2, open=True)
            store = PostgresStore(lambda pool=pool: pool)
            print(f"database ready after {time.perf_counter() - started:.1f} s", flush=True)
            deliver(store, documents[1], pg_pid, "first")
            deliver(store, documents[1], pg_pid, "same-again")
            deliver(store, documents[2], pg_pid, "other")
            pool.close()
        finally:
            pg.stop()
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

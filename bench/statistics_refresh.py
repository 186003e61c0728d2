"""Time of one statistics refresh as a test grows: from test_scores (students per exact score,
what the app reads) against the same statistics computed over every student's row (the former way).

    .venv/bin/python -m bench.statistics_refresh                 # 1,000 / 10,000 / 100,000 students
    .venv/bin/python -m bench.statistics_refresh 500000

Starts a throw-away PostgreSQL cluster under .local/bench/statistics; prints median milliseconds
(server execution, from EXPLAIN ANALYZE, and the client's round trip). Asserts nothing.
"""
from __future__ import annotations

import argparse
import random
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from bench.harness import median_seconds  # noqa: E402
from devhost.stack import Postgres  # noqa: E402
from shared.db import results  # noqa: E402
from shared.db.migrations import migrate  # noqa: E402

# The statistics over every student's row, as _COMPUTE read them before test_scores existed.
OVER_EVERY_ROW = """
SELECT count(*), avg(p), stddev_pop(p), min(p), max(p),
       percentile_cont(ARRAY[0.25, 0.5, 0.75]::float8[]) WITHIN GROUP (ORDER BY p),
       max(available), (SELECT array_agg(coalesce(h.c, 0) ORDER BY b) FROM generate_series(0, 9) AS b
          LEFT JOIN (SELECT least(10 * obtained / available, 9) AS bin, count(*)::int AS c
                       FROM student_results WHERE test_id = %(test_id)s GROUP BY 1) h ON h.bin = b)
  FROM (SELECT 100.0::float8 * obtained / available AS p, available FROM student_results
         WHERE test_id = %(test_id)s) x
"""


def fill(conn: psycopg.Connection, test_id: str, students: int, seed: int = 3) -> None:
    rng = random.Random(seed)
    with conn.cursor().copy("COPY student_results (test_id, student_number, available, obtained) FROM STDIN") as copy:
        for i in range(students):
            available = rng.choice((20, 20, 20, 25))
            copy.write_row((test_id, f"{i:07d}", available, rng.randint(0, available)))
    conn.execute("INSERT INTO tests (test_id, results_version) VALUES (%s, 1)", (test_id,))
    conn.commit()


def server_ms(conn: psycopg.Connection, statement: str, params: dict) -> float:
    plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params).fetchone()[0][0]
    conn.rollback()
    return plan["Execution Time"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sizes", nargs="*", type=int, default=[1_000, 10_000, 100_000])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    work = ROOT / ".local" / "bench" / "statistics"
    shutil.rmtree(work, ignore_errors=True)
    pg = Postgres(work / "pg" / "data")
    try:
        url = pg.start()
        migrate(url)
        print(f"{'students':>9}  {'test_scores rows':>16}  {'refresh (server)':>17}  {'every row (server)':>19}"
              f"  {'refresh (client)':>17}")
        with psycopg.connect(url) as conn:
            for n, size in enumerate(args.sizes):
                test_id = f"bench-{n}"
                fill(conn, test_id, size)
                rows = conn.execute("SELECT count(*) FROM test_scores WHERE test_id = %s", (test_id,)).fetchone()[0]
                params = {"test_id": test_id, "at_least": 1}
                new = sorted(server_ms(conn, results._COMPUTE, params) for _ in range(args.repeat))
                old = sorted(server_ms(conn, OVER_EVERY_ROW, params) for _ in range(args.repeat))
                version = iter(range(2, 10**6))

                def refresh(test_id=test_id, version=version) -> None:
                    bumped = next(version)
                    conn.execute("UPDATE tests SET results_version = %s WHERE test_id = %s", (bumped, test_id))
                    results.refresh_statistics(conn, test_id, bumped)
                    conn.commit()

                client = median_seconds(refresh, args.repeat)
                print(f"{size:>9}  {rows:>16}  {new[len(new) // 2]:>14.2f} ms  {old[len(old) // 2]:>16.2f} ms"
                      f"  {1000 * client:>14.2f} ms", flush=True)
    finally:
        pg.stop()
        pg.remove()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

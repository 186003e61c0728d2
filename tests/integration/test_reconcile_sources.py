"""Which vault partitions the reconciler looks at, read from PostgreSQL (shared/ops/reconcile.py)."""
from __future__ import annotations

import psycopg

from shared.db.connection import make_pool
from shared.ops.reconcile import PostgresProgress


def test_sources_are_vendors_known_sources_and_partitions_reconciled_before(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO vendors (name) VALUES ('registered-only')")
        conn.execute("INSERT INTO submissions (submission_id, source, run_id, status)"
                     " SELECT '01ARZ3NDEKTSV4RRFFQ69G5FAV', 'submitted-once', '01ARZ3NDEKTSV4RRFFQ69G5FAV', 'received'")
    pool = make_pool(database_url, max_size=2)
    try:
        progress = PostgresProgress(pool)
        assert progress.sources() == ["registered-only", "submitted-once"]
        progress.save("reconciled-before", 1)
        assert progress.sources() == ["reconciled-before", "registered-only", "submitted-once"]
    finally:
        pool.close()

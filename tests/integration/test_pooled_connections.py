"""shared.db.connection.autocommit: statements that stand alone skip BEGIN/COMMIT, and the
connection goes back to the pool in its usual transactional mode."""
from __future__ import annotations

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from shared.db.connection import autocommit, make_pool

pytestmark = pytest.mark.integration


def test_a_statement_commits_on_its_own_and_the_pool_gets_a_transactional_connection_back(database_url):
    pool = make_pool(database_url, max_size=1, name="autocommit-test")
    try:
        with autocommit(pool) as conn:
            conn.execute("CREATE TABLE standalone (x int)")
            conn.execute("INSERT INTO standalone VALUES (1)")
            assert conn.info.transaction_status == TransactionStatus.IDLE  # no BEGIN was sent
        with psycopg.connect(database_url) as other:  # committed, without a COMMIT round trip
            assert other.execute("SELECT x FROM standalone").fetchall() == [(1,)]
        with pool.connection() as conn:  # the same (only) connection, back in its usual mode
            assert conn.autocommit is False
            conn.execute("INSERT INTO standalone VALUES (2)")
            assert conn.info.transaction_status == TransactionStatus.INTRANS
    finally:
        pool.close()


def test_a_failed_statement_leaves_a_usable_transactional_connection(database_url):
    pool = make_pool(database_url, max_size=1, name="autocommit-test")
    try:
        with pytest.raises(psycopg.errors.UndefinedTable), autocommit(pool) as conn:
            conn.execute("SELECT * FROM no_such_table")
        with pool.connection() as conn:
            assert conn.autocommit is False
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()

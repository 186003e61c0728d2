"""Lock bookkeeping commits without waiting for the WAL flush; everything else keeps the server's
setting. Checked inside the statement's own transaction (the setting is transaction-local)."""
from __future__ import annotations

import uuid
from datetime import timedelta

import psycopg
import pytest

from shared.bus.local import LocalQueueEngine, sql
from shared.bus.port import OutgoingMessage
from shared.bus.queues import QueueDefinition

pytestmark = pytest.mark.integration

QUEUE = QueueDefinition(name="commit-check", lock_duration=timedelta(minutes=5),
                        default_message_time_to_live=timedelta(days=1), requires_duplicate_detection=False,
                        duplicate_detection_window=timedelta(minutes=10), dead_lettering_on_message_expiration=True,
                        max_delivery_count=3)


def setting(conn: psycopg.Connection) -> str:
    return conn.execute("SHOW synchronous_commit").fetchone()[0]


def receive_params(n: int = 10) -> dict:
    return {"queue": QUEUE.name, "state": "active", "dead_letter": False, "max_delivery": 3,
            "lock": QUEUE.lock_duration, "expiry_to_dlq": True, "ids": [], "n": n}


def test_receive_and_complete_do_not_wait_for_the_flush_but_sends_do(database_url):
    engine = LocalQueueEngine(database_url, {QUEUE.name: QUEUE})
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            default = setting(conn)
            assert default == "on"
            with conn.transaction():  # nothing to receive: nothing written, nothing changed
                assert conn.execute(sql.receive(False), receive_params()).fetchall() == []
                assert setting(conn) == default
            engine.send(QUEUE.name, OutgoingMessage(body=b"{}", message_id=uuid.uuid4().hex))
            with conn.transaction():
                rows = conn.execute(sql.receive(False), receive_params()).fetchall()
                assert len(rows) == 1 and rows[0][0] and setting(conn) == "off"
            token = rows[0][12]
            with conn.transaction():
                assert conn.execute(sql.COMPLETE_MANY, {"queue": QUEUE.name, "tokens": [token]}).fetchall()
                assert setting(conn) == "off"
            assert setting(conn) == default  # transaction-local: the next one is back to the default
            with conn.transaction():
                conn.execute(sql.send(False), {
                    "queue": QUEUE.name, "channel": "bus:commit-check", "window": QUEUE.duplicate_detection_window,
                    "ids": ["m"], "bodies": [b"{}"], "content_types": [None], "correlation_ids": [None],
                    "properties": [psycopg.types.json.Jsonb({})], "scheduled": [None], "ttls": [60.0]})
                assert setting(conn) == default
    finally:
        engine.close()

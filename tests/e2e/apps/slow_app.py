"""A test FunctionApp for host-process tests: one slow queue handler that records its work.

Settings (env): SLOW_APP_QUEUE (the queue, via a %SETTING% binding expression), SLOW_APP_SECONDS
(how long each handler runs), MARKR_DATABASE_URL (where the tables from SCHEMA live).
Every delivery inserts an `attempts` row when it starts; a handler that finishes claims the
message in `completions` (primary key: the effect happens once even if the message is
redelivered after a crash between the claim and the queue's complete).
"""
from __future__ import annotations

import logging
import os
import time

import azure.functions as func

from shared.bootstrap import services

SCHEMA = """
CREATE TABLE IF NOT EXISTS slow_attempts (
    id bigserial PRIMARY KEY, message_id text NOT NULL, delivery_count int NOT NULL, pid int NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE TABLE IF NOT EXISTS slow_completions (
    message_id text PRIMARY KEY, delivery_count int NOT NULL, pid int NOT NULL,
    completed_at timestamptz NOT NULL DEFAULT clock_timestamp());
"""

log = logging.getLogger(__name__)
app = func.FunctionApp()


@app.function_name("slow_worker")
@app.service_bus_queue_trigger(arg_name="msg", queue_name="%SLOW_APP_QUEUE%", connection="ServiceBusConnection")
def slow_worker(msg: func.ServiceBusMessage) -> None:
    with services().pool.connection() as conn:
        conn.execute("INSERT INTO slow_attempts (message_id, delivery_count, pid) VALUES (%s, %s, %s)",
                     (msg.message_id, msg.delivery_count, os.getpid()))
    time.sleep(float(os.environ.get("SLOW_APP_SECONDS", "1")))
    with services().pool.connection() as conn:
        claimed = conn.execute(
            "INSERT INTO slow_completions (message_id, delivery_count, pid) VALUES (%s, %s, %s)"
            " ON CONFLICT (message_id) DO NOTHING RETURNING 1",
            (msg.message_id, msg.delivery_count, os.getpid()),
        ).fetchone()
    log.info("message %s %s", msg.message_id, "done" if claimed else "was already done")

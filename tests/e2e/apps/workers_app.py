"""A test FunctionApp for multi-worker host tests: every function reports the process it ran in.

Settings (env): WORKERS_APP_QUEUE (single-message trigger), WORKERS_APP_BATCH_QUEUE (batch trigger,
cardinality=MANY), WORKERS_APP_SECONDS (how long a single-message invocation takes, default 0.1),
MARKR_DATABASE_URL (where the table from SCHEMA lives).
"""
from __future__ import annotations

import json
import os
import time
import uuid

import azure.functions as func

from shared.bootstrap import services

SCHEMA = """
CREATE TABLE IF NOT EXISTS worker_handled (
    message_id text NOT NULL, function_name text NOT NULL, invocation text NOT NULL, pid int NOT NULL);
"""

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def _record(function_name: str, message_ids: list[str]) -> None:
    invocation = uuid.uuid4().hex
    with services().pool.connection() as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO worker_handled VALUES (%s, %s, %s, %s)",
                        [(m, function_name, invocation, os.getpid()) for m in message_ids])


@app.route(route="pid", methods=["GET"])
def pid(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"pid": os.getpid()}), mimetype="application/json")


@app.function_name("one_by_one")
@app.service_bus_queue_trigger(arg_name="msg", queue_name="%WORKERS_APP_QUEUE%", connection="ServiceBusConnection")
def one_by_one(msg: func.ServiceBusMessage) -> None:
    # Long enough by default that one worker cannot take every message.
    time.sleep(float(os.environ.get("WORKERS_APP_SECONDS", "0.1")))
    _record("one_by_one", [msg.message_id])


@app.function_name("in_batches")
@app.service_bus_queue_trigger(arg_name="msgs", queue_name="%WORKERS_APP_BATCH_QUEUE%",
                               connection="ServiceBusConnection", cardinality=func.Cardinality.MANY)
def in_batches(msgs: list[func.ServiceBusMessage]) -> None:
    _record("in_batches", [m.message_id for m in msgs])

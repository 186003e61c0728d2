"""Throughput of the local function host: HTTP round trips, a 100 MB upload, queue messages/s
(single-message and batch triggers), then `python -m devhost --workers N` processes under load.

    .venv/bin/python bench/devhost_throughput.py

Starts a throw-away PostgreSQL cluster under .local/bench; prints numbers, asserts nothing.
Invocation counts come from the host's GET /admin/host/invocations.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import sys
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import azure.functions as func  # noqa: E402
import psycopg  # noqa: E402

from devhost.host import LocalFunctionHost  # noqa: E402
from devhost.queuesfile import write_queues  # noqa: E402
from devhost.stack import ROOT, Postgres  # noqa: E402
from devhost.testing import start_host_process  # noqa: E402
from shared.bus.local import LocalQueueEngine  # noqa: E402
from shared.bus.port import OutgoingMessage  # noqa: E402
from shared.bus.queues import QueueDefinition  # noqa: E402
from shared.db.migrations import migrate  # noqa: E402

QUEUE = QueueDefinition("bench", timedelta(minutes=5), timedelta(days=1), True, timedelta(minutes=10), True, 10)
BATCH_QUEUE = QUEUE.with_overrides(name="bench-batch")


def build_app(done: list[str], all_done: threading.Event, total: int) -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    lock = threading.Lock()

    @app.route(route="ping", methods=["GET"])
    def ping(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("pong")

    @app.route(route="upload", methods=["POST"])
    def upload(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(str(len(req.get_body())))

    def record(ids: list[str]) -> None:
        with lock:
            done.extend(ids)
            if len(done) >= total:
                all_done.set()

    @app.service_bus_queue_trigger(arg_name="msg", queue_name="bench", connection="ServiceBusConnection")
    def consume(msg: func.ServiceBusMessage) -> None:
        record([msg.message_id])

    @app.service_bus_queue_trigger(arg_name="msgs", queue_name="bench-batch", connection="ServiceBusConnection",
                                   cardinality=func.Cardinality.MANY)
    def consume_batch(msgs: list[func.ServiceBusMessage]) -> None:
        record([m.message_id for m in msgs])

    return app


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as resp:
        return json.loads(resp.read())


def queue_run(engine: LocalQueueEngine, queue: str, total: int, finished) -> float:
    messages = [OutgoingMessage(body=b"{}", message_id=f"{queue}-{uuid.uuid4().hex}") for _ in range(total)]
    start = time.perf_counter()
    for i in range(0, total, 500):
        engine.send_many(queue, messages[i:i + 500])
    finished()
    return time.perf_counter() - start


def in_process(url: str) -> None:
    engine = LocalQueueEngine(url, {"bench": QUEUE, "bench-batch": BATCH_QUEUE})
    total, done, all_done = 2000, [], threading.Event()
    host = LocalFunctionHost(build_app(done, all_done, total), engine, port=0).start()
    logging.getLogger().setLevel(logging.WARNING)
    conn = http.client.HTTPConnection("127.0.0.1", host.port)
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        conn.request("GET", "/api/ping")
        conn.getresponse().read()
    elapsed = time.perf_counter() - start
    print(f"http GET keep-alive: {n / elapsed:,.0f} req/s ({elapsed / n * 1000:.2f} ms each)")

    body = b"x" * (100 * 1024 * 1024)
    start = time.perf_counter()
    conn.request("POST", "/api/upload", body=body)
    answer = conn.getresponse().read()
    elapsed = time.perf_counter() - start
    print(f"http POST 100 MiB: {elapsed:.2f} s ({100 / elapsed:,.0f} MiB/s), handler saw {answer.decode()} bytes")
    conn.close()

    for queue, label in (("bench", "single-message trigger"), ("bench-batch", "batch trigger")):
        done.clear()
        all_done.clear()
        elapsed = queue_run(engine, queue, total, lambda: all_done.wait(300))
        print(f"queue, {label}: {len(done)} messages sent and completed in {elapsed:.2f} s "
              f"({len(done) / elapsed:,.0f} msg/s, maxConcurrentCalls={host.config.max_concurrent_calls})")
    print(f"invocations: {get_json(f'http://127.0.0.1:{host.port}/admin/host/invocations')}")
    host.stop(10)
    engine.close()


def with_workers(url: str, workers: int, work: Path) -> None:
    """The multi-process host: concurrent HTTP clients, a connection burst, both queue kinds."""
    from tests.e2e.apps.workers_app import SCHEMA

    queues = {"w-one": QUEUE.with_overrides(name="w-one"), "w-many": QUEUE.with_overrides(name="w-many")}
    queues_file = work / f"queues-{workers}.json"
    write_queues(queues_file, queues)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute("TRUNCATE worker_handled")
    env = {"MARKR_DATABASE_URL": url, "MARKR_BUS": "local", "WORKERS_APP_QUEUE": "w-one",
           "WORKERS_APP_BATCH_QUEUE": "w-many", "WORKERS_APP_SECONDS": "0"}
    host = start_host_process(env, app="tests.e2e.apps.workers_app:app", queues_file=queues_file,
                              workers=workers).wait_ready(120)
    engine = LocalQueueEngine(url, queues)
    try:
        clients, per_client = 8, 500

        def client(_: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=60)
            for _ in range(per_client):
                conn.request("GET", "/api/pid")
                conn.getresponse().read()
            conn.close()

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(client, range(clients)))
        elapsed = time.perf_counter() - start
        print(f"--workers {workers}: http GET, {clients} keep-alive clients: "
              f"{clients * per_client / elapsed:,.0f} req/s")

        def one_shot(_: int) -> int:
            try:
                with urllib.request.urlopen(f"{host.base_url}/pid", timeout=60) as resp:
                    return resp.status
            except OSError:
                return 0

        start = time.perf_counter()
        with ThreadPoolExecutor(200) as pool:
            statuses = list(pool.map(one_shot, range(200)))
        print(f"--workers {workers}: 200 simultaneous connections: {statuses.count(200)} answered 200 "
              f"in {time.perf_counter() - start:.2f} s")

        def drained(queue: str) -> None:
            deadline = time.monotonic() + 300
            while engine.counts(queue).active and time.monotonic() < deadline:
                time.sleep(0.05)

        for queue, label in (("w-one", "single-message trigger"), ("w-many", "batch trigger")):
            elapsed = queue_run(engine, queue, 2000, lambda q=queue: drained(q))
            print(f"--workers {workers}: queue, {label}: 2000 messages in {elapsed:.2f} s "
                  f"({2000 / elapsed:,.0f} msg/s)")
        with psycopg.connect(url) as conn:
            per_pid = conn.execute("SELECT pid, count(*) FROM worker_handled GROUP BY pid ORDER BY pid").fetchall()
        print(f"--workers {workers}: messages per worker pid: {dict(per_pid)}")
        print(f"--workers {workers}: invocations: {get_json(f'http://127.0.0.1:{host.port}/admin/host/invocations')}")
    finally:
        host.terminate(120)
        engine.close()


def main() -> None:
    data = ROOT / ".local" / "bench" / f"pg-{uuid.uuid4().hex[:6]}"
    server = Postgres(data / "data")
    url = server.start()
    try:
        migrate(url)
        in_process(url)
        for workers in (1, os.cpu_count() or 2):
            with_workers(url, workers, data)
    finally:
        server.stop()
        server.remove()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()

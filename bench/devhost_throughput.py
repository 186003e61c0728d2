"""Throughput of the local function host: HTTP round trips, a 100 MB upload, queue messages/s.

    .venv/bin/python bench/devhost_throughput.py

Starts a throw-away PostgreSQL cluster under .local/bench; prints numbers, asserts nothing.
"""
from __future__ import annotations

import http.client
import shutil
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import azure.functions as func  # noqa: E402

from devhost.host import LocalFunctionHost  # noqa: E402
from devhost.stack import ROOT, Postgres  # noqa: E402
from shared.bus.local_engine import LocalQueueEngine  # noqa: E402
from shared.bus.port import OutgoingMessage  # noqa: E402
from shared.bus.queues import QueueDefinition  # noqa: E402
from shared.db.migrations import migrate  # noqa: E402

QUEUE = QueueDefinition("bench", timedelta(minutes=5), timedelta(days=1), True, timedelta(minutes=10), True, 10)


def build_app(done: list[str], all_done: threading.Event, total: int) -> func.FunctionApp:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    lock = threading.Lock()

    @app.route(route="ping", methods=["GET"])
    def ping(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("pong")

    @app.route(route="upload", methods=["POST"])
    def upload(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(str(len(req.get_body())))

    @app.service_bus_queue_trigger(arg_name="msg", queue_name="bench", connection="ServiceBusConnection")
    def consume(msg: func.ServiceBusMessage) -> None:
        with lock:
            done.append(msg.message_id)
            if len(done) == total:
                all_done.set()

    return app


def main() -> None:
    data = ROOT / ".local" / "bench" / f"pg-{uuid.uuid4().hex[:6]}"
    server = Postgres(data / "data")
    url = server.start()
    try:
        migrate(url)
        engine = LocalQueueEngine(url, {"bench": QUEUE})
        total, done, all_done = 2000, [], threading.Event()
        host = LocalFunctionHost(build_app(done, all_done, total), engine, port=0).start()
        import logging

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

        messages = [OutgoingMessage(body=b"{}", message_id=f"m{i}") for i in range(total)]
        start = time.perf_counter()
        for i in range(0, total, 500):
            engine.send_many("bench", messages[i:i + 500])
        all_done.wait(300)
        elapsed = time.perf_counter() - start
        print(f"queue: {len(done)} messages sent and completed in {elapsed:.2f} s "
              f"({len(done) / elapsed:,.0f} msg/s, maxConcurrentCalls={host.config.max_concurrent_calls})")
        host.stop(10)
        engine.close()
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()

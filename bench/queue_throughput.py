"""Throughput of the local queue engine: send (one by one, send_many batches) and receive+complete
(each message completed on its own, or a received batch settled with one complete_many).

    .venv/bin/python bench/queue_throughput.py [--messages 5000]

Starts a throw-away PostgreSQL under .local/bench/ unless MARKR_DATABASE_URL is set (then it uses
that database, on a queue name of its own, and deletes the queue's rows afterwards).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from devhost.stack import ROOT, Postgres  # noqa: E402
from shared.bus.local import LocalQueueEngine  # noqa: E402
from shared.bus.port import OutgoingMessage  # noqa: E402
from shared.bus.queues import VALIDATION, queue_definitions  # noqa: E402
from shared.db.migrations import migrate  # noqa: E402

BODY = b'{"submission_id": "01J0000000000000000000000", "source": "bench", "part": 0}'


def messages(count: int) -> list[OutgoingMessage]:
    return [OutgoingMessage(body=BODY, message_id=uuid.uuid4().hex, application_properties={"n": i})
            for i in range(count)]


def rate(label: str, count: int, run: Callable[[], object]) -> None:
    """Time `run`; if it returns a number, that is how many messages it handled and must be `count`."""
    started = time.perf_counter()
    handled = run()
    elapsed = time.perf_counter() - started
    if isinstance(handled, int) and handled != count:
        raise RuntimeError(f"{label}: handled {handled} messages, expected {count}")
    print(f"{label:<44} {count:>6} msgs  {elapsed:7.2f} s  {count / elapsed:9.0f} msg/s", flush=True)


def drain(engine: LocalQueueEngine, queue: str, threads: int, batch: int, many: bool = False) -> int:
    done = [0] * threads

    def consume(slot: int) -> None:
        while got := engine.receive(queue, batch):
            if many:
                engine.complete_many(queue, [m.lock_token for m in got])
            else:
                for m in got:
                    engine.complete(queue, m.lock_token)
            done[slot] += len(got)

    workers = [threading.Thread(target=consume, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done)


def clear(url: str, queue: str) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM bus.messages WHERE queue = %s", (queue,))


def bench(url: str, count: int) -> None:
    migrate(url)
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    engine = LocalQueueEngine(url, {queue: queue_definitions()[VALIDATION].with_overrides(name=queue)})
    try:
        batch = messages(count)
        rate("send (one by one)", count, lambda: [engine.send(queue, m) for m in batch])
        rate("receive+complete, 1 thread, 1 at a time", count, lambda: drain(engine, queue, 1, 1))
        for size in (100, 500):
            batch = messages(count)
            rate(f"send_many (batches of {size})", count,
                 lambda size=size, batch=batch: [engine.send_many(queue, batch[i:i + size])
                                                 for i in range(0, count, size)])
            clear(url, queue)
        for threads, size in ((4, 1), (1, 10), (4, 10)):
            engine.send_many(queue, messages(count))
            rate(f"receive+complete, {threads} threads, {size} at a time", count,
                 lambda t=threads, s=size: drain(engine, queue, t, s))
        for threads, size in ((1, 10), (4, 10), (1, 100), (4, 100)):
            engine.send_many(queue, messages(count))
            rate(f"receive+complete_many, {threads} thr, {size} at a time", count,
                 lambda t=threads, s=size: drain(engine, queue, t, s, many=True))
    finally:
        engine.close()
        clear(url, queue)
        with psycopg.connect(url) as conn:
            conn.execute("DELETE FROM bus.seen_message_ids WHERE queue = %s", (queue,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    args = parser.parse_args()
    url = os.environ.get("MARKR_DATABASE_URL")
    if url:
        bench(url, args.messages)
        return
    location = ROOT / ".local" / "bench" / f"pg-{os.getpid()}"
    server = Postgres(location / "data")
    try:
        url = server.start()
        print(f"throw-away PostgreSQL at {url}", flush=True)
        bench(url, args.messages)
    finally:
        server.stop()
        shutil.rmtree(location, ignore_errors=True)


if __name__ == "__main__":
    main()

"""CPU the local queue engine's listener spends waking consumers, in process (no database).

    .venv/bin/python -m bench.bus_listener_wakeups [--consumers 8] [--notifications 2000]

Every consumer of every queue waits on its process's listener (shared/bus/local/listener.py). This
starts `--consumers` idle consumers, each waiting on a queue of its own, then notifies another
queue `--notifications` times, 0.5 ms apart, as a busy validation queue would be. It prints the
process's CPU per notification: the notifying loop itself, plus whatever the waiting consumers do
when a notification that is not theirs wakes them.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.bus.local.listener import Listener  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--consumers", type=int, default=8)
    parser.add_argument("--notifications", type=int, default=2000)
    args = parser.parse_args()
    queues = ["busy"] + [f"idle-{i}" for i in range(args.consumers)]
    listener = Listener("postgresql://unused", queues)  # never started: notifications are injected
    stop = threading.Event()

    def consume(queue: str) -> None:
        while not stop.is_set():
            listener.wait(queue, listener.generation(queue), 1.0)

    threads = [threading.Thread(target=consume, args=(q,)) for q in queues[1:]]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    cpu = time.process_time()
    for _ in range(args.notifications):
        listener._bump(["busy"])
        time.sleep(0.0005)
    used = time.process_time() - cpu
    stop.set()
    listener._bump(queues[1:])
    for thread in threads:
        thread.join()
    print(f"{args.consumers} idle consumers, {args.notifications} notifications of another queue: "
          f"{used * 1000:.0f} ms CPU, {used / args.notifications * 1e6:.0f} us per notification")


if __name__ == "__main__":
    main()

"""LISTEN/NOTIFY wake-ups for the local queue engine: one listening connection per engine."""
from __future__ import annotations

import threading

import psycopg
from psycopg import sql

from shared.db.connection import connect


def channel_name(queue: str) -> str:
    """The LISTEN/NOTIFY channel that send (and abandon) notify for `queue`."""
    return f"bus:{queue}"


class Listener:
    """One LISTEN connection on a background thread; counts notifications per queue and wakes waiters.

    Reconnects after the database restarts, and then wakes every waiter, since notifications sent
    while it was disconnected are lost.
    """

    POLL = 0.2  # seconds between checks for stop()

    def __init__(self, database_url: str, queues: list[str], password=None):
        self._url = database_url
        self._password = password  # the pool's password provider (Entra tokens), if any
        self._queues = {channel_name(q): q for q in queues}
        self._generations = dict.fromkeys(queues, 0)
        # A condition per queue on one lock: a notification wakes the waiters of its own queue only
        # (every consumer of every queue waits here, and one queue may be notified hundreds of
        # times a second).
        self._lock = threading.Lock()
        self._changed = {q: threading.Condition(self._lock) for q in queues}
        self._stopping = threading.Event()
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bus-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            for changed in self._changed.values():
                changed.notify_all()
        self._thread.join(timeout=self.POLL * 4)

    def generation(self, queue: str) -> int:
        """Bumped by every notification for `queue` and by every (re)connect."""
        with self._lock:
            return self._generations[queue]

    def wait(self, queue: str, seen: int, timeout: float) -> None:
        if timeout <= 0:
            return
        changed = self._changed[queue]
        with changed:
            changed.wait_for(lambda: self._generations[queue] != seen or self._stopping.is_set(), timeout)

    def _bump(self, queues: list[str]) -> None:
        with self._lock:
            for q in queues:
                self._generations[q] += 1
                self._changed[q].notify_all()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with connect(self._url, self._password, autocommit=True) as conn:
                    for channel in self._queues:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self._bump(list(self._queues.values()))
                    self.ready.set()
                    while not self._stopping.is_set():
                        # Wake waiters on each notification as it arrives: notifies() keeps
                        # yielding until its timeout, so collecting first would delay every wake-up.
                        for n in conn.notifies(timeout=self.POLL):
                            if n.channel in self._queues:
                                self._bump([self._queues[n.channel]])
            except psycopg.Error:
                self.ready.clear()
                self._stopping.wait(1.0)

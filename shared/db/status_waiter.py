"""Waiting imports share one LISTEN connection per process instead of opening one each.

A background thread listens on the status channel and wakes the waiters of the submission named in
each notification; a waiter then re-reads the row through the pool (the notification only says
"look again"). If the listening connection is lost, waiters fall back to polling every
POLL_SECONDS until it is back, so a lost notification can delay an answer but never lose it.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import psycopg

from shared.db.submissions import STATUS_CHANNEL
from shared.domain.submission_status import SETTLED, SubmissionStatus

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0


class StatusWaiter:
    def __init__(self, connect: Callable[[], psycopg.Connection],
                 read: Callable[[str], SubmissionStatus | None]) -> None:
        self._connect = connect  # a dedicated autocommit connection for LISTEN
        self._read = read  # reads a status through the pool
        self._lock = threading.Lock()
        self._waiting: dict[str, list[threading.Event]] = defaultdict(list)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def wait_for_settled(self, submission_id: str, run_id: str, timeout: float) -> SubmissionStatus | None:
        """The status once the run is rejected, completed or failed, or the latest one at `timeout`."""
        self._ensure_listening()
        woken = threading.Event()
        with self._lock:
            self._waiting[submission_id].append(woken)
        try:
            deadline = time.monotonic() + timeout
            while True:
                state = self._read(submission_id)  # registered first, so no notification slips between
                if state is not None and state.run_id == run_id and state.status in SETTLED:
                    return state
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return state
                woken.wait(min(POLL_SECONDS, remaining))
                woken.clear()
        finally:
            with self._lock:
                waiters = self._waiting.get(submission_id, [])
                if woken in waiters:
                    waiters.remove(woken)
                if not waiters:
                    self._waiting.pop(submission_id, None)

    def _ensure_listening(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._listen, name="status-listener", daemon=True)
                self._thread.start()

    def _listen(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {STATUS_CHANNEL}")
                    backoff = 0.5
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._wake(note.payload)
            except Exception as exc:  # noqa: BLE001 - reconnect; waiters poll meanwhile
                log.warning("status listener lost its connection (%s); reconnecting", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _wake(self, submission_id: str) -> None:
        with self._lock:
            for woken in self._waiting.get(submission_id, ()):
                woken.set()

    def close(self) -> None:
        self._stop.set()

"""Timer triggers: one thread per function, firing on its NCRONTAB schedule (UTC)."""
from __future__ import annotations

import logging
import threading
import traceback
import uuid
from datetime import UTC, datetime, timedelta

import azure.functions as func

from devhost import logs
from devhost.accounting import InvocationCounts
from devhost.discovery import TimerFunction
from devhost.invoke import call

log = logging.getLogger("devhost.timer")
PAST_DUE_AFTER = timedelta(seconds=1)  # woke up this late (or a run overran the slot): past_due


class TimerRunner:
    def __init__(self, fn: TimerFunction, counts: InvocationCounts | None = None) -> None:
        self.fn = fn
        self.counts = counts
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name=f"timer-{fn.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def wait_idle(self, timeout: float) -> bool:
        return self._idle.wait(timeout)

    def _run(self) -> None:
        if self.fn.run_on_startup:
            self._fire(past_due=False, due=datetime.now(UTC))
        due = self.fn.schedule.next_after(datetime.now(UTC))
        while not self._stop.wait(max(0.0, (due - datetime.now(UTC)).total_seconds())):
            now = datetime.now(UTC)
            self._fire(past_due=now - due > PAST_DUE_AFTER, due=due)
            due = self.fn.schedule.next_after(max(due, datetime.now(UTC) - PAST_DUE_AFTER))

    def _fire(self, *, past_due: bool, due: datetime) -> None:
        self._idle.clear()
        try:
            following = self.fn.schedule.next_after(due)
            request = func.timer.TimerRequest(  # the concrete class; func.TimerRequest is abstract
                past_due=past_due,
                schedule={"AdjustForDST": False},
                schedule_status={"Last": due.isoformat(), "Next": following.isoformat(),
                                 "LastUpdated": datetime.now(UTC).isoformat()},
            )
            with logs.invocation(self.fn.name, str(uuid.uuid4())):
                log.info("Executing '%s' (schedule %s, past_due=%s)", self.fn.name, self.fn.schedule.text,
                         past_due)
                try:
                    call(self.fn.handler, self.fn.arg_name, request)
                except Exception as exc:  # noqa: BLE001 - the next occurrence still runs
                    log.error("Executed '%s' (Failed): %s: %s\n%s", self.fn.name, type(exc).__name__, exc,
                              traceback.format_exc().rstrip())
                else:
                    log.info("Executed '%s' (Succeeded)", self.fn.name)
                if self.counts is not None:
                    self.counts.add(self.fn.name)
        finally:
            self._idle.set()

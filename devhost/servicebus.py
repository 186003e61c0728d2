"""Service Bus queue triggers on the local queue engine, settled the way the Functions host does.

Per queue function: one dispatcher thread peek-locks up to `max_concurrent_calls` messages and runs
each handler in a thread of its own. A handler that returns completes its message; one that raises
abandons it (the engine dead-letters at max delivery count). Locks are renewed while a handler
runs, for at most `max_auto_lock_renewal`; once a lock is lost the message is redelivered and the
late settlement is only logged, as with Service Bus.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from azure.functions.servicebus import ServiceBusMessage

from devhost import logs
from devhost.discovery import QueueFunction
from devhost.invoke import call

log = logging.getLogger("devhost.servicebus")
_STATE = {"active": 0, "deferred": 1, "scheduled": 2}


def to_function_message(msg: Any) -> ServiceBusMessage:
    """The engine's ReceivedMessage as the azure.functions type a trigger receives."""
    ttl = msg.expires_at_utc - msg.enqueued_time_utc if msg.expires_at_utc and msg.enqueued_time_utc else None
    return ServiceBusMessage(
        body=msg.body, message_id=msg.message_id, content_type=msg.content_type,
        correlation_id=msg.correlation_id, delivery_count=msg.delivery_count,
        enqueued_time_utc=msg.enqueued_time_utc, expires_at_utc=msg.expires_at_utc,
        locked_until=msg.locked_until_utc, lock_token=msg.lock_token,
        sequence_number=msg.sequence_number, enqueued_sequence_number=msg.sequence_number,
        scheduled_enqueue_time_utc=msg.scheduled_enqueue_time_utc, time_to_live=ttl,
        state=_STATE.get(msg.state), dead_letter_reason=msg.dead_letter_reason,
        dead_letter_error_description=msg.dead_letter_error_description,
        application_properties=dict(msg.application_properties),
        user_properties=dict(msg.application_properties),
    )


@dataclass
class _Delivery:
    message: Any
    received: float = field(default_factory=time.monotonic)
    next_renewal: float = 0.0
    settled: bool = False  # by the handler thread or by shutdown, whichever comes first
    lock_lost: bool = False


class QueueConsumer:
    def __init__(self, fn: QueueFunction, engine: Any, *, max_concurrent_calls: int,
                 max_auto_lock_renewal: timedelta, idle_wait: float = 1.0) -> None:
        if fn.queue not in engine.queues:
            raise LookupError(f"function {fn.name!r}: queue {fn.queue!r} is not defined for the local "
                              f"engine (known: {', '.join(sorted(engine.queues))})")
        if max_concurrent_calls < 1:
            raise ValueError("max_concurrent_calls must be at least 1")
        self.fn = fn
        self.engine = engine
        self.max_concurrent_calls = max_concurrent_calls
        self.renewal_limit = max_auto_lock_renewal.total_seconds()
        self.renew_every = engine.queues[fn.queue].lock_duration.total_seconds() / 2
        self.idle_wait = idle_wait
        self._slots = threading.BoundedSemaphore(max_concurrent_calls)
        self._stop = threading.Event()
        self._lock = threading.Condition()
        self._running: dict[str, _Delivery] = {}  # lock token -> delivery
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for target, role in ((self._pump, "pump"), (self._renewer, "renew")):
            thread = threading.Thread(target=target, name=f"sb-{role}-{self.fn.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop_receiving(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()

    def join_pump(self, timeout: float) -> None:
        self._threads[0].join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: not self._running, timeout)

    def abandon_unfinished(self, reason: str) -> int:
        """Release the messages whose handlers are still running (shutdown after the grace period)."""
        with self._lock:
            unfinished = [d for d in self._running.values() if not d.settled]
            for delivery in unfinished:
                delivery.settled = True
        for delivery in unfinished:
            self._settle(delivery, reason, abandon_only=True)
        return len(unfinished)

    # -- receiving ---------------------------------------------------------------------------
    def _take_slots(self) -> int:
        while not self._slots.acquire(timeout=0.5):
            if self._stop.is_set():
                return 0
        taken = 1
        while taken < self.max_concurrent_calls and self._slots.acquire(blocking=False):
            taken += 1
        return taken

    def _pump(self) -> None:
        failures = 0
        while not self._stop.is_set():
            slots = self._take_slots()
            if not slots:
                return
            if self._stop.is_set():
                self._release(slots)
                return
            try:
                messages = self.engine.receive(self.fn.queue, max_messages=slots)
                failures = 0
            except Exception as exc:  # noqa: BLE001 - keep pumping; the database may come back
                self._release(slots)
                failures += 1
                log.warning("receive from %r failed (%s: %s); retrying", self.fn.queue, type(exc).__name__, exc)
                self._stop.wait(min(5.0, 0.2 * 2 ** failures))
                continue
            self._release(slots - len(messages))
            for message in messages:
                self._start_handler(message)
            if not messages:
                try:
                    self.engine.wait_for_messages(self.fn.queue, self.idle_wait)
                except Exception as exc:  # noqa: BLE001
                    log.warning("waiting on %r failed (%s: %s)", self.fn.queue, type(exc).__name__, exc)
                    self._stop.wait(1.0)

    def _release(self, count: int) -> None:
        for _ in range(count):
            self._slots.release()

    def _start_handler(self, message: Any) -> None:
        delivery = _Delivery(message)
        delivery.next_renewal = delivery.received + self.renew_every
        with self._lock:
            self._running[message.lock_token] = delivery
            self._lock.notify_all()
        threading.Thread(target=self._handle, args=(delivery,), daemon=True,
                         name=f"sb-{self.fn.name}-{message.sequence_number}").start()

    # -- handling ----------------------------------------------------------------------------
    def _handle(self, delivery: _Delivery) -> None:
        message = delivery.message
        try:
            with logs.invocation(self.fn.name, str(uuid.uuid4()), message.message_id):
                log.info("Executing '%s' (queue %s, delivery %d, sequence %d)", self.fn.name,
                         self.fn.queue, message.delivery_count, message.sequence_number)
                error: str | None = None
                started = time.perf_counter()
                try:
                    call(self.fn.handler, self.fn.arg_name, to_function_message(message))
                except Exception as exc:  # noqa: BLE001 - any failure abandons, as the host does
                    error = f"{type(exc).__name__}: {exc}"
                    log.error("Executed '%s' (Failed, Duration=%.0fms): %s\n%s", self.fn.name,
                              1000 * (time.perf_counter() - started), error, traceback.format_exc().rstrip())
                else:
                    log.info("Executed '%s' (Succeeded, Duration=%.0fms)", self.fn.name,
                             1000 * (time.perf_counter() - started))
                with self._lock:
                    already = delivery.settled
                    delivery.settled = True
                if already:
                    log.warning("finished after the host gave the message up; it will be redelivered")
                else:
                    self._settle(delivery, error)
        finally:
            with self._lock:
                self._running.pop(message.lock_token, None)
                self._lock.notify_all()
            self._slots.release()

    def _settle(self, delivery: _Delivery, error: str | None, abandon_only: bool = False) -> None:
        from shared.bus.local_engine import LockLostError

        queue, token = self.fn.queue, delivery.message.lock_token
        try:
            if error is None and not abandon_only:
                self.engine.complete(queue, token)
            else:
                self.engine.abandon(queue, token, error_description=error)
        except LockLostError as exc:
            log.warning("lock on message %s was lost before settlement (%s); Service Bus will redeliver it",
                        delivery.message.message_id, exc)
        except Exception as exc:  # noqa: BLE001 - the lock expires and the message comes back
            log.error("settling message %s failed: %s: %s", delivery.message.message_id, type(exc).__name__, exc)

    # -- lock renewal ------------------------------------------------------------------------
    def _renewer(self) -> None:
        from shared.bus.local_engine import LockLostError

        if self.renewal_limit <= 0:
            return
        while True:
            with self._lock:
                due = self._due()
                while not due:
                    if self._stop.is_set() and not self._running:
                        return
                    upcoming = [d.next_renewal for d in self._renewable()]
                    timeout = max(0.0, min(upcoming) - time.monotonic()) if upcoming else None
                    self._lock.wait(timeout if timeout is None else max(timeout, 0.01))
                    due = self._due()
            for delivery in due:
                try:
                    self.engine.renew_lock(self.fn.queue, delivery.message.lock_token)
                except LockLostError as exc:
                    delivery.lock_lost = True
                    log.warning("lock on message %s lost while its handler runs: %s",
                                delivery.message.message_id, exc)
                except Exception as exc:  # noqa: BLE001 - try again at the next interval
                    log.warning("renewing the lock on %s failed: %s: %s", delivery.message.message_id,
                                type(exc).__name__, exc)
                delivery.next_renewal = time.monotonic() + self.renew_every

    def _renewable(self) -> list[_Delivery]:
        now = time.monotonic()
        return [d for d in self._running.values()
                if not d.settled and not d.lock_lost and now - d.received < self.renewal_limit]

    def _due(self) -> list[_Delivery]:
        now = time.monotonic()
        return [d for d in self._renewable() if d.next_renewal <= now]

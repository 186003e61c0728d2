"""Service Bus queue triggers on the local queue engine, settled the way the Functions host does.

Per queue function: one dispatcher thread peek-locks messages and runs each invocation in a thread
of its own. A single-message trigger gets up to `max_concurrent_calls` invocations at once; a batch
trigger (cardinality=MANY) gets one invocation in flight, with every message available at that
moment up to `max_message_batch_size`; with `min_message_batch_size` above 1 it first waits, up to
`max_batch_wait` seconds, for that many (host.json minMessageBatchSize and maxBatchWaitTime, as in
the Service Bus extension: fewer, larger batches when messages trickle in). An invocation
that returns completes its message(s); one that raises abandons them all (the engine dead-letters
at max delivery count). Locks are renewed while an invocation runs, for at most
`max_auto_lock_renewal`; once a lock is lost the message is redelivered and the late settlement is
only logged, as with Service Bus.
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
from devhost.accounting import InvocationCounts
from devhost.discovery import QueueFunction
from devhost.invoke import call

log = logging.getLogger("devhost.servicebus")
_FILL_RECEIVES = 5  # receives while a batch trigger waits to fill its batch
_STATE = {"active": 0, "deferred": 1, "scheduled": 2}


class EngineLink:
    """Every call the host makes to the local queue engine, kept in one place.

    Completing a batch takes one statement (complete_many); abandons go one by one (rare).
    """

    def __init__(self, engine: Any) -> None:
        from shared.bus.local import LockLostError

        self.engine = engine
        self.LockLostError = LockLostError

    def check_queue(self, queue: str, function_name: str) -> float:
        """The queue's lock duration in seconds; LookupError if the engine does not know the queue."""
        if queue not in self.engine.queues:
            raise LookupError(f"function {function_name!r}: queue {queue!r} is not defined for the local "
                              f"engine (known: {', '.join(sorted(self.engine.queues))})")
        return self.engine.queues[queue].lock_duration.total_seconds()

    def receive(self, queue: str, max_messages: int) -> list[Any]:
        return self.engine.receive(queue, max_messages=max_messages)  # never blocks

    def wait_for_messages(self, queue: str, timeout: float) -> None:
        self.engine.wait_for_messages(queue, timeout)  # LISTEN/NOTIFY wake-up

    def renew_lock(self, queue: str, lock_token: str) -> None:
        self.engine.renew_lock(queue, lock_token)

    def settle(self, queue: str, lock_token: str, error: str | None) -> None:
        """Complete (error None) or abandon."""
        if error is None:
            self.engine.complete(queue, lock_token)
        else:
            self.engine.abandon(queue, lock_token, error_description=error)

    def complete_many(self, queue: str, lock_tokens: list[str]) -> list[str]:
        """Complete in one statement; returns the tokens whose lock was lost."""
        try:
            self.engine.complete_many(queue, lock_tokens)
        except self.LockLostError as exc:
            return list(getattr(exc, "lock_tokens", lock_tokens))
        return []


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
    """One invocation's messages: one for a single-message trigger, a whole batch for MANY."""

    messages: list[Any]
    received: float = field(default_factory=time.monotonic)
    next_renewal: float = 0.0
    settled: bool = False  # by the handler thread or by shutdown, whichever comes first
    lost: set[str] = field(default_factory=set)  # lock tokens found lost while renewing

    @property
    def key(self) -> str:
        return self.messages[0].lock_token


class QueueConsumer:
    def __init__(self, fn: QueueFunction, engine: Any, *, max_concurrent_calls: int,
                 max_auto_lock_renewal: timedelta, idle_wait: float = 1.0, max_message_batch_size: int = 1000,
                 counts: InvocationCounts | None = None, min_message_batch_size: int = 1,
                 max_batch_wait: float = 30.0) -> None:
        self.link = engine if isinstance(engine, EngineLink) else EngineLink(engine)
        lock_seconds = self.link.check_queue(fn.queue, fn.name)
        if max_concurrent_calls < 1:
            raise ValueError("max_concurrent_calls must be at least 1")
        if max_message_batch_size < 1:
            raise ValueError("max_message_batch_size must be at least 1")
        self.fn = fn
        # A batch function has one batch in flight at a time, as in the Service Bus extension.
        self.max_concurrent_calls = 1 if fn.many else max_concurrent_calls
        self.batch_size = max_message_batch_size if fn.many else 1
        if fn.many and min_message_batch_size > 1 and max_batch_wait > lock_seconds / 2:
            # The extension's advice: its held messages' locks are not renewed while it waits.
            raise ValueError(f"max_batch_wait ({max_batch_wait} s) must be at most half of queue "
                             f"{fn.queue!r}'s lock duration ({lock_seconds} s)")
        self.min_batch_size = min(min_message_batch_size, self.batch_size) if fn.many else 1
        self.max_batch_wait = max_batch_wait
        self.renewal_limit = max_auto_lock_renewal.total_seconds()
        self.renew_every = lock_seconds / 2
        self.idle_wait = idle_wait
        self.counts = counts
        self._slots = threading.BoundedSemaphore(self.max_concurrent_calls)
        self._stop = threading.Event()
        self._lock = threading.Condition()
        self._running: dict[str, _Delivery] = {}  # first lock token -> delivery
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
            self._settle(delivery, reason)
        return sum(len(d.messages) for d in unfinished)

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
                # Whatever is available now (a batch trigger may then wait to fill its batch).
                messages = self.link.receive(self.fn.queue, slots * self.batch_size)
                failures = 0
            except Exception as exc:  # noqa: BLE001 - keep pumping; the database may come back
                self._release(slots)
                failures += 1
                log.warning("receive from %r failed (%s: %s); retrying", self.fn.queue, type(exc).__name__, exc)
                self._stop.wait(min(5.0, 0.2 * 2 ** failures))
                continue
            if self.fn.many:
                if 0 < len(messages) < self.min_batch_size:
                    self._fill(messages)
                deliveries = [messages] if messages else []
            else:
                deliveries = [[message] for message in messages]
            self._release(slots - len(deliveries))
            for batch in deliveries:
                self._start_handler(batch)
            if not messages:
                try:
                    self.link.wait_for_messages(self.fn.queue, self.idle_wait)
                except Exception as exc:  # noqa: BLE001
                    log.warning("waiting on %r failed (%s: %s)", self.fn.queue, type(exc).__name__, exc)
                    self._stop.wait(1.0)

    def _fill(self, messages: list[Any]) -> None:
        """Add to a batch until it has `min_batch_size` messages or `max_batch_wait` passed: a few
        receives spread over the wait, not one per message sent meanwhile."""
        deadline = time.monotonic() + self.max_batch_wait
        while len(messages) < self.min_batch_size and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._stop.wait(min(remaining, self.max_batch_wait / _FILL_RECEIVES))
            try:
                messages += self.link.receive(self.fn.queue, self.batch_size - len(messages))
            except Exception as exc:  # noqa: BLE001 - dispatch what is held; the pump retries receiving
                log.warning("receive from %r failed (%s: %s); dispatching a partial batch", self.fn.queue,
                            type(exc).__name__, exc)
                return

    def _release(self, count: int) -> None:
        for _ in range(count):
            self._slots.release()

    def _start_handler(self, messages: list[Any]) -> None:
        delivery = _Delivery(messages)
        delivery.next_renewal = delivery.received + self.renew_every
        with self._lock:
            self._running[delivery.key] = delivery
            self._lock.notify_all()
        threading.Thread(target=self._handle, args=(delivery,), daemon=True,
                         name=f"sb-{self.fn.name}-{messages[0].sequence_number}").start()

    # -- handling ----------------------------------------------------------------------------
    def _describe(self, delivery: _Delivery) -> str:
        first = delivery.messages[0]
        if not self.fn.many:
            return f"queue {self.fn.queue}, delivery {first.delivery_count}, sequence {first.sequence_number}"
        sequences = [m.sequence_number for m in delivery.messages]
        return (f"queue {self.fn.queue}, Messages={len(delivery.messages)}, "
                f"sequence {min(sequences)}..{max(sequences)}")

    def _handle(self, delivery: _Delivery) -> None:
        messages = delivery.messages
        size = f"Messages={len(messages)}, " if self.fn.many else ""
        try:
            with logs.invocation(self.fn.name, str(uuid.uuid4()), None if self.fn.many else messages[0].message_id):
                log.info("Executing '%s' (%s)", self.fn.name, self._describe(delivery))
                error: str | None = None
                started = time.perf_counter()
                if self.fn.many:
                    value: Any = [to_function_message(m) for m in messages]
                else:
                    value = to_function_message(messages[0])
                try:
                    call(self.fn.handler, self.fn.arg_name, value)
                except Exception as exc:  # noqa: BLE001 - any failure abandons, as the host does
                    error = f"{type(exc).__name__}: {exc}"
                    log.error("Executed '%s' (Failed, %sDuration=%.0fms): %s\n%s", self.fn.name, size,
                              1000 * (time.perf_counter() - started), error, traceback.format_exc().rstrip())
                else:
                    log.info("Executed '%s' (Succeeded, %sDuration=%.0fms)", self.fn.name, size,
                             1000 * (time.perf_counter() - started))
                if self.counts is not None:
                    self.counts.add(self.fn.name)
                with self._lock:
                    already = delivery.settled
                    delivery.settled = True
                if already:
                    log.warning("finished after the host gave the message(s) up; they will be redelivered")
                else:
                    self._settle(delivery, error)
        finally:
            with self._lock:
                self._running.pop(delivery.key, None)
                self._lock.notify_all()
            self._slots.release()

    def _settle(self, delivery: _Delivery, error: str | None) -> None:
        """Complete (error None) or abandon every message of the delivery."""
        if error is None and len(delivery.messages) > 1:
            try:
                lost = set(self.link.complete_many(self.fn.queue, [m.lock_token for m in delivery.messages]))
            except Exception as exc:  # noqa: BLE001 - the locks expire and the messages come back
                log.error("settling a batch of %d failed: %s: %s", len(delivery.messages), type(exc).__name__, exc)
                return
            for message in delivery.messages:
                if message.lock_token in lost:
                    log.warning("lock on message %s was lost before settlement; Service Bus will redeliver it",
                                message.message_id)
            return
        for message in delivery.messages:
            try:
                self.link.settle(self.fn.queue, message.lock_token, error)
            except self.link.LockLostError as exc:
                log.warning("lock on message %s was lost before settlement (%s); Service Bus will redeliver it",
                            message.message_id, exc)
            except Exception as exc:  # noqa: BLE001 - the lock expires and the message comes back
                log.error("settling message %s failed: %s: %s", message.message_id, type(exc).__name__, exc)

    # -- lock renewal ------------------------------------------------------------------------
    def _renewer(self) -> None:
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
                for message in delivery.messages:
                    if message.lock_token in delivery.lost:
                        continue
                    try:
                        self.link.renew_lock(self.fn.queue, message.lock_token)
                    except self.link.LockLostError as exc:
                        delivery.lost.add(message.lock_token)
                        log.warning("lock on message %s lost while its handler runs: %s", message.message_id, exc)
                    except Exception as exc:  # noqa: BLE001 - try again at the next interval
                        log.warning("renewing the lock on %s failed: %s: %s", message.message_id,
                                    type(exc).__name__, exc)
                delivery.next_renewal = time.monotonic() + self.renew_every

    def _renewable(self) -> list[_Delivery]:
        now = time.monotonic()
        return [d for d in self._running.values()
                if not d.settled and len(d.lost) < len(d.messages) and now - d.received < self.renewal_limit]

    def _due(self) -> list[_Delivery]:
        now = time.monotonic()
        return [d for d in self._renewable() if d.next_renewal <= now]

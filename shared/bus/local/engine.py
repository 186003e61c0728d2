"""The local queue engine: Service Bus queue semantics, durable in PostgreSQL (tables in schema `bus`).

Peek-lock receive uses `SELECT … FOR UPDATE SKIP LOCKED`, so any number of threads and processes can
receive from one queue without ever getting the same message. Every time (enqueue, lock expiry,
time-to-live, duplicate window) comes from the database clock, so processes agree on it.

Delivery rules, as in Service Bus: delivery_count goes up on each receive; a message whose lock
expires is receivable again, unless it already reached max_delivery_count, in which case it is
dead-lettered ('MaxDeliveryCountExceeded'); a message past its time-to-live is dead-lettered
('TTLExpiredException') before a receive could return it. A message id seen within the queue's
duplicate detection window is silently dropped, even if the first message was already completed.

Settling (complete/abandon/dead_letter/renew_lock) needs the message's current lock token: once
the message was received again (or settled, or is unknown), or once its lock ran out (even if
nobody took the message since), the token raises LockLostError, as Service Bus refuses it.

A message moved to the dead-letter sub-queue gets a new sequence number there, as in Service Bus.

Each operation is one statement: a receive of many takes them all at once, complete_many settles
a batch at once, and a send (of one or many) notifies once, in its transaction; concurrent single
sends to one queue share such a statement (coalesce.py).

Sends commit durably; lock bookkeeping (receive, renew, complete) does not wait for the WAL flush
(see sql._NO_FLUSH_WAIT: a crash can only cause a redelivery).

`wait_for_messages` uses LISTEN/NOTIFY on one listening connection per engine (listener.py), so
idle consumers wake within milliseconds of a send.
"""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from shared.bus.local import sql
from shared.bus.local.coalesce import SendCoalescer
from shared.bus.local.listener import Listener, channel_name
from shared.bus.port import OutgoingMessage, QueueCounts
from shared.bus.queues import QueueDefinition, queue_definitions
from shared.db.connection import autocommit, make_pool

SEEN_IDS_PURGE_INTERVAL = 60.0  # seconds between clean-ups of expired duplicate-detection ids


class LockLostError(Exception):
    """The lock token is unknown, its lock ran out, or the message was settled or received again."""

    def __init__(self, message: str, lock_tokens: list[str] | None = None):
        super().__init__(message)
        self.lock_tokens = lock_tokens or []  # the tokens that were not held


class UnknownQueueError(Exception):
    pass


@dataclass(frozen=True)
class ReceivedMessage:
    queue: str
    sequence_number: int
    message_id: str
    body: bytes
    content_type: str | None
    correlation_id: str | None
    application_properties: dict
    delivery_count: int
    enqueued_time_utc: datetime
    scheduled_enqueue_time_utc: datetime | None
    expires_at_utc: datetime
    lock_token: str | None
    locked_until_utc: datetime | None
    state: str
    dead_letter_reason: str | None
    dead_letter_error_description: str | None
    dead_lettered_at_utc: datetime | None


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def _message(row: tuple) -> ReceivedMessage:
    (queue, seq, message_id, body, content_type, correlation_id, props, delivery_count, enqueued,
     scheduled, expires, lock_token, locked_until, state, reason, description, dead_lettered) = row
    return ReceivedMessage(
        queue=queue, sequence_number=seq, message_id=message_id, body=bytes(body),
        content_type=content_type, correlation_id=correlation_id, application_properties=dict(props),
        delivery_count=delivery_count, enqueued_time_utc=enqueued.astimezone(UTC),
        scheduled_enqueue_time_utc=_utc(scheduled), expires_at_utc=expires.astimezone(UTC),
        lock_token=str(lock_token) if lock_token is not None else None,
        locked_until_utc=_utc(locked_until), state=state, dead_letter_reason=reason,
        dead_letter_error_description=description, dead_lettered_at_utc=_utc(dead_lettered),
    )


def _parse_token(lock_token: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(lock_token))
    except ValueError:
        return None


def _token(lock_token: str) -> uuid.UUID:
    parsed = _parse_token(lock_token)
    if parsed is None:
        raise LockLostError(f"lock token {lock_token!r} is not a lock token", [lock_token])
    return parsed


def _lock_lost(queue: str, lock_tokens: list[str]) -> LockLostError:
    return LockLostError(f"queue {queue!r}: lock(s) {', '.join(map(str, lock_tokens))} not held (unknown, "
                         "settled, or the lock expired)", list(lock_tokens))


class LocalQueueEngine:
    """Implements shared.bus.port.Bus, plus the receive side that the local host's triggers use."""

    def __init__(self, database_url: str, queues: dict[str, QueueDefinition] | None = None,
                 pool: ConnectionPool | None = None, password=None):
        self.database_url = database_url
        self._password = password  # for the LISTEN connection: the app pool's password provider
        self.queues: dict[str, QueueDefinition] = dict(queues if queues is not None else queue_definitions())
        # The app passes its process pool (shared/bootstrap.py); standalone engines own a small one.
        self._owns_pool = pool is None
        self._pool = pool if pool is not None else make_pool(database_url, max_size=8, name="markr-bus")
        self._listener: Listener | None = None
        self._listener_lock = threading.Lock()
        self._last_purge: dict[str, float] = {}
        self._coalescer = SendCoalescer(self.send_many)

    def _queue(self, queue: str) -> QueueDefinition:
        definition = self.queues.get(queue)
        if definition is None:
            raise UnknownQueueError(f"unknown queue {queue!r}; known queues: {', '.join(sorted(self.queues))}")
        return definition

    def _one(self, statement, params: dict) -> tuple | None:
        # Each statement is atomic on its own: no BEGIN/COMMIT round trips around it.
        with autocommit(self._pool) as conn:
            return conn.execute(statement, params).fetchone()

    def ping(self) -> None:
        """Raises unless the database is reachable and the bus schema is migrated."""
        with self._pool.connection() as conn:
            conn.execute(sql.PING)

    # --- sending ---------------------------------------------------------------------------------

    def send(self, queue: str, message: OutgoingMessage) -> None:
        """Concurrent sends to one queue share a statement (coalesce.py); an idle send goes at once."""
        self._queue(queue)
        self._coalescer.send(queue, message)

    def send_many(self, queue: str, messages: list[OutgoingMessage]) -> None:
        """All messages in one transaction; ids already seen within the window are dropped."""
        definition = self._queue(queue)
        dedupe = definition.requires_duplicate_detection
        if dedupe:
            unique: dict[str, OutgoingMessage] = {}
            for m in messages:
                unique.setdefault(m.message_id, m)  # a repeated id within the batch is a duplicate too
            messages = list(unique.values())
        if not messages:
            return
        for m in messages:
            if m.scheduled_enqueue_time_utc is not None and m.scheduled_enqueue_time_utc.tzinfo is None:
                raise ValueError(f"message {m.message_id!r}: scheduled_enqueue_time_utc must be timezone-aware")
            if not m.message_id:
                raise ValueError("message_id is required (duplicate detection relies on it)")
        default_ttl = definition.default_message_time_to_live
        self._one(sql.send(dedupe), {
            "queue": queue, "channel": channel_name(queue), "window": definition.duplicate_detection_window,
            "ids": [m.message_id for m in messages],
            "bodies": [bytes(m.body) for m in messages],
            "content_types": [m.content_type for m in messages],
            "correlation_ids": [m.correlation_id for m in messages],
            "properties": [Jsonb(dict(m.application_properties)) for m in messages],
            "scheduled": [m.scheduled_enqueue_time_utc for m in messages],
            "ttls": [(m.time_to_live or default_ttl).total_seconds() for m in messages],
        })
        if dedupe:
            self._purge_seen_ids(queue)

    def schedule(self, queue: str, messages: list[OutgoingMessage], at: datetime) -> list[str]:
        """Send `messages` to become receivable at `at`; their ids are the tokens to cancel them by."""
        if at.tzinfo is None:
            raise ValueError("the scheduled time must be timezone-aware")
        self.send_many(queue, [replace(m, scheduled_enqueue_time_utc=at) for m in messages])
        return [m.message_id for m in messages]

    def cancel_scheduled(self, queue: str, tokens: list[str]) -> int:
        """Withdraw scheduled messages that no consumer has taken yet (the others are left alone);
        answers how many were withdrawn."""
        self._queue(queue)
        if not tokens:
            return 0
        row = self._one(sql.CANCEL_SCHEDULED, {"queue": queue, "ids": list(tokens)})
        return int(row[0]) if row else 0

    def _purge_seen_ids(self, queue: str) -> None:
        now = time.monotonic()
        if now - self._last_purge.get(queue, 0.0) < SEEN_IDS_PURGE_INTERVAL:
            return
        self._last_purge[queue] = now
        with autocommit(self._pool) as conn:
            conn.execute(sql.PURGE_SEEN_IDS, {"queue": queue})

    # --- receiving -------------------------------------------------------------------------------

    def receive(self, queue: str, max_messages: int = 1, *, dead_letter: bool = False,
                message_ids: list[str] | None = None) -> list[ReceivedMessage]:
        """Peek-lock up to max_messages receivable messages, oldest first; never blocks."""
        definition = self._queue(queue)
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, not {max_messages}")
        statement = sql.receive(message_ids is not None)
        params = {
            "queue": queue, "state": "deadlettered" if dead_letter else "active", "dead_letter": dead_letter,
            "max_delivery": definition.max_delivery_count, "lock": definition.lock_duration,
            "expiry_to_dlq": definition.dead_lettering_on_message_expiration,
            "ids": list(message_ids or []),
        }
        received: list[ReceivedMessage] = []
        while len(received) < max_messages:
            wanted = max_messages - len(received)
            with autocommit(self._pool) as conn:
                rows = conn.execute(statement, {**params, "n": wanted}).fetchall()
            received.extend(_message(row[1:-1]) for row in rows if row[0])  # last: sql._NO_FLUSH_WAIT
            if len(rows) < wanted or all(row[0] for row in rows):
                break  # the queue ran out, or nothing was swept aside: no point looking again
        return received

    def wait_for_messages(self, queue: str, timeout: float) -> None:
        """Return when a message may be receivable from `queue`, or at timeout.

        Wakes on a send or abandon (NOTIFY), and when a scheduled message falls due or a lock runs out.

        Returns at once if something is receivable now. While the database is unreachable this
        simply waits out the timeout: the caller's next receive reports the failure.
        """
        self._queue(queue)
        deadline = time.monotonic() + max(timeout, 0.0)
        listener = self._ensure_listener()
        if not listener.ready.wait(max(timeout, 0.0)):
            return
        seen = listener.generation(queue)
        remaining = deadline - time.monotonic()
        try:
            row = self._one(sql.NEXT_VISIBLE, {"queue": queue})
            if row and row[0] is not None:
                if row[0] <= 0:
                    return
                remaining = min(remaining, row[0])
        except psycopg.OperationalError:
            pass
        listener.wait(queue, seen, remaining)

    def _ensure_listener(self) -> Listener:
        with self._listener_lock:
            if self._listener is None:
                self._listener = Listener(self.database_url, list(self.queues), self._password)
                self._listener.start()
            return self._listener

    # --- settling --------------------------------------------------------------------------------

    def renew_lock(self, queue: str, lock_token: str) -> datetime:
        definition = self._queue(queue)
        row = self._one(sql.RENEW_LOCK, {"queue": queue, "token": _token(lock_token),
                                         "lock": definition.lock_duration})
        if row is None:
            raise _lock_lost(queue, [lock_token])
        return row[0].astimezone(UTC)

    def complete(self, queue: str, lock_token: str) -> None:
        self._queue(queue)
        if self._one(sql.COMPLETE, {"queue": queue, "token": _token(lock_token)}) is None \
                and not self._settled_by_holder(queue, [_token(lock_token)]):
            raise _lock_lost(queue, [lock_token])

    def _settled_by_holder(self, queue: str, tokens: list[uuid.UUID]) -> set[uuid.UUID]:
        """Those tokens whose holder dead-lettered the message itself: there is nothing left to
        complete (the Functions host does not complete a message its function settled)."""
        with autocommit(self._pool) as conn:
            return {row[0] for row in conn.execute(sql.SETTLED_BY_HOLDER, {"queue": queue, "tokens": tokens})}

    def complete_many(self, queue: str, lock_tokens: list[str]) -> None:
        """Complete every message whose lock is held, in one statement.

        Raises LockLostError (its `lock_tokens` lists them) for the tokens not held; the others are
        completed all the same, as separate completes would have done.
        """
        self._queue(queue)
        parsed = {str(t): _parse_token(t) for t in lock_tokens}
        valid = [p for p in parsed.values() if p is not None]
        done: set[uuid.UUID] = set()
        if valid:
            with autocommit(self._pool) as conn:
                done = {row[0] for row in conn.execute(sql.COMPLETE_MANY, {"queue": queue, "tokens": valid})}
        lost = [t for t, p in parsed.items() if p is None or p not in done]
        if lost:
            done |= self._settled_by_holder(queue, [p for t in lost if (p := parsed[t]) is not None])
            lost = [t for t, p in parsed.items() if p is None or p not in done]
        if lost:
            raise _lock_lost(queue, lost)

    def abandon(self, queue: str, lock_token: str, error_description: str | None = None) -> None:
        """Release the lock; after the last allowed delivery the message is dead-lettered instead."""
        definition = self._queue(queue)
        params = {"queue": queue, "token": _token(lock_token), "description": error_description,
                  "max_delivery": definition.max_delivery_count}
        with self._pool.connection() as conn:
            row = conn.execute(sql.ABANDON, params).fetchone()
            if row is not None and row[0] == "active":
                conn.execute(sql.NOTIFY, {"channel": channel_name(queue)})
        if row is None:
            raise _lock_lost(queue, [lock_token])

    def dead_letter(self, queue: str, lock_token: str, reason: str, description: str | None = None) -> None:
        self._queue(queue)
        params = {"queue": queue, "token": _token(lock_token), "reason": reason, "description": description}
        with self._pool.connection() as conn:
            row = conn.execute(sql.LOCKED_STATE, params).fetchone()
            if row is None:
                raise _lock_lost(queue, [lock_token])
            if row[0] == "deadlettered":
                raise ValueError(f"queue {queue!r}: the message locked by {lock_token} is already dead-lettered")
            conn.execute(sql.DEAD_LETTER, params)

    def dead_letter_held(self, queue: str, lock_token: str, reason: str, description: str | None = None) -> None:
        """The Bus port's name for dead_letter: a trigger dead-letters the message it holds."""
        self.dead_letter(queue, lock_token, reason, description)

    # --- inspection ------------------------------------------------------------------------------

    def expire(self, queue: str) -> int:
        """Dead-letter (or drop) the queue's expired and lock-expired exhausted messages now.

        receive does this for the messages it comes across; peek and counts call this so that
        what they show is current. Returns how many messages were moved.
        """
        definition = self._queue(queue)
        row = self._one(sql.EXPIRE, {"queue": queue, "max_delivery": definition.max_delivery_count,
                                     "expiry_to_dlq": definition.dead_lettering_on_message_expiration})
        return int(row[0]) if row else 0

    def peek(self, queue: str, *, dead_letter: bool = False, max_messages: int = 100,
             from_sequence_number: int = 0) -> list[ReceivedMessage]:
        """Messages in sequence order without locking them (active includes scheduled ones)."""
        self.expire(queue)
        with self._pool.connection() as conn:
            rows = conn.execute(sql.PEEK, {
                "queue": queue, "state": "deadlettered" if dead_letter else "active",
                "from_sequence_number": from_sequence_number, "n": max_messages,
            }).fetchall()
        return [_message(row) for row in rows]

    def counts(self, queue: str) -> QueueCounts:
        self.expire(queue)
        active, scheduled, dead, oldest = self._one(sql.COUNTS, {"queue": queue})
        return QueueCounts(queue=queue, active=active, scheduled=scheduled, dead_lettered=dead,
                           oldest_active_enqueued_utc=_utc(oldest))

    def close(self) -> None:
        """Stop listening, and close the pool if this engine made it."""
        with self._listener_lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        if self._owns_pool:
            self._pool.close()

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

`wait_for_messages` uses LISTEN/NOTIFY (send notifies in its transaction) on one listening
connection per engine, so idle consumers wake within milliseconds of a send.
"""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from shared.bus.port import OutgoingMessage, QueueCounts
from shared.bus.queues import QueueDefinition, queue_definitions
from shared.db.connection import connect, pool

SEEN_IDS_PURGE_INTERVAL = 60.0  # seconds between clean-ups of expired duplicate-detection ids


class LockLostError(Exception):
    """The lock token is unknown, or the message was settled or received again since."""


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


# The ReceivedMessage fields, in order, for a row aliased {a}; peeks pass lock columns as NULL.
_FIELDS = (
    "{a}.queue, {a}.sequence_number, {a}.message_id, {a}.body, {a}.content_type, {a}.correlation_id,"
    " {a}.application_properties, {a}.delivery_count, {a}.enqueued_at, {a}.scheduled_enqueue_at,"
    " {a}.expires_at, {lock_token}, {locked_until},"
    " CASE WHEN {a}.state = 'active' AND {a}.scheduled_enqueue_at > now() THEN 'scheduled' ELSE {a}.state END,"
    " {a}.dead_letter_reason, {a}.dead_letter_error_description, {a}.dead_lettered_at"
)


def _fields(alias: str, *, peek: bool = False) -> str:
    lock_token = "NULL::uuid" if peek else "{a}.lock_token"
    locked_until = ("CASE WHEN {a}.locked_until > now() THEN {a}.locked_until END" if peek
                    else "{a}.locked_until")
    return (_FIELDS.replace("{lock_token}", lock_token).replace("{locked_until}", locked_until)
            .replace("{a}", alias))


_SEND = """
WITH input AS (
    SELECT * FROM unnest(%(ids)s::text[], %(bodies)s::bytea[], %(content_types)s::text[],
                         %(correlation_ids)s::text[], %(properties)s::jsonb[],
                         %(scheduled)s::timestamptz[], %(ttls)s::float8[])
        WITH ORDINALITY AS i(message_id, body, content_type, correlation_id, properties, scheduled, ttl, ord)
){fresh_cte}, inserted AS (
    INSERT INTO bus.messages (queue, message_id, body, content_type, correlation_id,
                              application_properties, enqueued_at, scheduled_enqueue_at, expires_at,
                              visible_at)
    SELECT %(queue)s, i.message_id, i.body, i.content_type, i.correlation_id, i.properties,
           greatest(now(), i.scheduled), i.scheduled,
           greatest(now(), i.scheduled) + make_interval(secs => i.ttl), coalesce(i.scheduled, now())
    FROM input i {fresh_filter}
    ORDER BY i.ord
    RETURNING 1
)
SELECT n, (SELECT pg_notify(%(channel)s, '') WHERE n > 0) FROM (SELECT count(*) AS n FROM inserted) c
"""

# Claims the id for the window; an id still inside its window makes the conflict update a no-op,
# so the message is not in `fresh` and is dropped. Concurrent senders of one id serialize here.
_FRESH_CTE = """, fresh AS (
    INSERT INTO bus.seen_message_ids AS s (queue, message_id, expires_at)
    SELECT %(queue)s, message_id, now() + %(window)s FROM input
    ON CONFLICT (queue, message_id) DO UPDATE SET expires_at = excluded.expires_at
        WHERE s.expires_at <= now()
    RETURNING message_id
)"""

# Messages past their time-to-live, or out of deliveries, leave the queue instead of being delivered:
# dropped, or moved to the dead-letter sub-queue. Shared by receive and the expiry sweep; `{src}` is a
# CTE of locked rows with columns (sequence_number, expired, exhausted).
_RETIRE = """
), dropped AS (
    DELETE FROM bus.messages m USING {src} c
    WHERE m.sequence_number = c.sequence_number AND c.expired AND NOT %(expiry_to_dlq)s
    RETURNING 1
), dead AS (
    UPDATE bus.messages m SET
        state = 'deadlettered',
        dead_letter_reason = CASE WHEN c.expired THEN 'TTLExpiredException' ELSE 'MaxDeliveryCountExceeded' END,
        dead_letter_error_description = CASE WHEN c.expired THEN 'message expired before it was consumed'
                                             ELSE 'lock expired' END,
        dead_lettered_at = now(), lock_token = NULL, locked_until = NULL, visible_at = now()
    FROM {src} c
    WHERE m.sequence_number = c.sequence_number
      AND ((c.expired AND %(expiry_to_dlq)s) OR (c.exhausted AND NOT c.expired))
    RETURNING 1
"""

# Takes up to n receivable messages; on the way, dead-letters (or drops) those that expired or
# whose lock ran out after their last allowed delivery, and locks the rest. One row per message
# taken: the message columns are NULL for the ones that were not delivered.
_RECEIVE = """
WITH picked AS (
    SELECT sequence_number,
           NOT %(dead_letter)s AND expires_at <= now() AS expired,
           NOT %(dead_letter)s AND delivery_count >= %(max_delivery)s AS exhausted
    FROM bus.messages
    WHERE queue = %(queue)s AND state = %(state)s AND visible_at <= now() {ids_filter}
    ORDER BY sequence_number
    LIMIT %(n)s
    FOR UPDATE SKIP LOCKED
{retire}), live AS (
    UPDATE bus.messages m SET
        delivery_count = m.delivery_count + 1, lock_token = gen_random_uuid(),
        locked_until = now() + %(lock)s, visible_at = now() + %(lock)s
    FROM picked p
    WHERE m.sequence_number = p.sequence_number AND NOT p.expired AND NOT p.exhausted
    RETURNING m.*
)
SELECT l.lock_token IS NOT NULL, {fields}
FROM picked p LEFT JOIN live l USING (sequence_number)
ORDER BY p.sequence_number
""".replace("{retire}", _RETIRE.format(src="picked").lstrip("\n"))

_SWEEP = """
WITH doomed AS (
    SELECT sequence_number, expires_at <= now() AS expired, delivery_count >= %(max_delivery)s AS exhausted
    FROM bus.messages
    WHERE queue = %(queue)s AND state = 'active' AND visible_at <= now()
      AND (expires_at <= now() OR delivery_count >= %(max_delivery)s)
    FOR UPDATE SKIP LOCKED
{retire})
SELECT (SELECT count(*) FROM dropped) + (SELECT count(*) FROM dead)
""".replace("{retire}", _RETIRE.format(src="doomed").lstrip("\n"))

_ABANDON = """
UPDATE bus.messages SET
    state = CASE WHEN {exhausted} THEN 'deadlettered' ELSE state END,
    dead_letter_reason = CASE WHEN {exhausted} THEN 'MaxDeliveryCountExceeded' ELSE dead_letter_reason END,
    dead_letter_error_description = CASE WHEN {exhausted} THEN %(description)s
                                         ELSE dead_letter_error_description END,
    dead_lettered_at = CASE WHEN {exhausted} THEN now() ELSE dead_lettered_at END,
    lock_token = NULL, locked_until = NULL, visible_at = now()
WHERE queue = %(queue)s AND lock_token = %(token)s AND locked_until > now()
RETURNING state
""".replace("{exhausted}", "(state = 'active' AND delivery_count >= %(max_delivery)s)")

_COUNTS = """
SELECT count(*) FILTER (WHERE state = 'active' AND NOT coalesce(scheduled_enqueue_at > now(), false)),
       count(*) FILTER (WHERE state = 'active' AND scheduled_enqueue_at > now()),
       count(*) FILTER (WHERE state = 'deadlettered'),
       min(enqueued_at) FILTER (WHERE state = 'active' AND NOT coalesce(scheduled_enqueue_at > now(), false))
FROM bus.messages WHERE queue = %s
"""


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


def _token(lock_token: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(lock_token))
    except ValueError:
        raise LockLostError(f"lock token {lock_token!r} is not a lock token") from None


def channel_name(queue: str) -> str:
    """The LISTEN/NOTIFY channel that send uses for `queue`."""
    return f"bus:{queue}"


class LocalQueueEngine:
    """Implements shared.bus.port.Bus, plus the receive side that the local host's triggers use."""

    def __init__(self, database_url: str, queues: dict[str, QueueDefinition] | None = None):
        self.database_url = database_url
        self.queues: dict[str, QueueDefinition] = dict(queues if queues is not None else queue_definitions())
        self._pool = pool(database_url)
        self._listener: _Listener | None = None
        self._listener_lock = threading.Lock()
        self._last_purge: dict[str, float] = {}

    def _queue(self, queue: str) -> QueueDefinition:
        definition = self.queues.get(queue)
        if definition is None:
            raise UnknownQueueError(f"unknown queue {queue!r}; known queues: {', '.join(sorted(self.queues))}")
        return definition

    def ping(self) -> None:
        """Raises unless the database is reachable and the bus schema is migrated."""
        with self._pool.connection() as conn:
            conn.execute("SELECT 1 FROM bus.messages LIMIT 0")

    # --- sending ---------------------------------------------------------------------------------

    def send(self, queue: str, message: OutgoingMessage) -> None:
        self.send_many(queue, [message])

    def send_many(self, queue: str, messages: list[OutgoingMessage]) -> None:
        """All messages in one transaction; ids already seen within the window are dropped."""
        definition = self._queue(queue)
        if definition.requires_duplicate_detection:
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
        params = {
            "queue": queue, "channel": channel_name(queue), "window": definition.duplicate_detection_window,
            "ids": [m.message_id for m in messages],
            "bodies": [bytes(m.body) for m in messages],
            "content_types": [m.content_type for m in messages],
            "correlation_ids": [m.correlation_id for m in messages],
            "properties": [Jsonb(dict(m.application_properties)) for m in messages],
            "scheduled": [m.scheduled_enqueue_time_utc for m in messages],
            "ttls": [(m.time_to_live or default_ttl).total_seconds() for m in messages],
        }
        dedupe = definition.requires_duplicate_detection
        statement = _SEND.format(
            fresh_cte=_FRESH_CTE if dedupe else "",
            fresh_filter="WHERE i.message_id IN (SELECT message_id FROM fresh)" if dedupe else "",
        )
        with self._pool.connection() as conn:
            conn.execute(statement, params)
        if dedupe:
            self._purge_seen_ids(queue)

    def _purge_seen_ids(self, queue: str) -> None:
        now = time.monotonic()
        if now - self._last_purge.get(queue, 0.0) < SEEN_IDS_PURGE_INTERVAL:
            return
        self._last_purge[queue] = now
        with self._pool.connection() as conn:
            conn.execute("DELETE FROM bus.seen_message_ids WHERE queue = %s AND expires_at <= now()", (queue,))

    # --- receiving -------------------------------------------------------------------------------

    def receive(self, queue: str, max_messages: int = 1, *, dead_letter: bool = False,
                message_ids: list[str] | None = None) -> list[ReceivedMessage]:
        """Peek-lock up to max_messages receivable messages, oldest first; never blocks."""
        definition = self._queue(queue)
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, not {max_messages}")
        statement = _RECEIVE.format(
            ids_filter="AND message_id = ANY(%(ids)s)" if message_ids is not None else "",
            fields=_fields("l"),
        )
        params = {
            "queue": queue, "state": "deadlettered" if dead_letter else "active", "dead_letter": dead_letter,
            "max_delivery": definition.max_delivery_count, "lock": definition.lock_duration,
            "expiry_to_dlq": definition.dead_lettering_on_message_expiration,
            "ids": list(message_ids or []),
        }
        received: list[ReceivedMessage] = []
        while len(received) < max_messages:
            wanted = max_messages - len(received)
            with self._pool.connection() as conn:
                rows = conn.execute(statement, {**params, "n": wanted}).fetchall()
            received.extend(_message(row[1:]) for row in rows if row[0])
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
            # Seconds until the next message becomes receivable (scheduled, or its lock runs out).
            with self._pool.connection() as conn:
                row = conn.execute(
                    "SELECT extract(epoch FROM min(visible_at) - now())::float8 FROM bus.messages"
                    " WHERE queue = %s AND state = 'active'", (queue,),
                ).fetchone()
            if row and row[0] is not None:
                if row[0] <= 0:
                    return
                remaining = min(remaining, row[0])
        except psycopg.OperationalError:
            pass
        listener.wait(queue, seen, remaining)

    def _ensure_listener(self) -> _Listener:
        with self._listener_lock:
            if self._listener is None:
                self._listener = _Listener(self.database_url, list(self.queues))
                self._listener.start()
            return self._listener

    # --- settling --------------------------------------------------------------------------------

    def renew_lock(self, queue: str, lock_token: str) -> datetime:
        definition = self._queue(queue)
        with self._pool.connection() as conn:
            row = conn.execute(
                "UPDATE bus.messages SET locked_until = now() + %(lock)s, visible_at = now() + %(lock)s"
                " WHERE queue = %(queue)s AND lock_token = %(token)s AND locked_until > now()"
                " RETURNING locked_until",
                {"queue": queue, "token": _token(lock_token), "lock": definition.lock_duration},
            ).fetchone()
        if row is None:
            raise self._lock_lost(queue, lock_token)
        return row[0].astimezone(UTC)

    def complete(self, queue: str, lock_token: str) -> None:
        self._queue(queue)
        with self._pool.connection() as conn:
            row = conn.execute("DELETE FROM bus.messages WHERE queue = %s AND lock_token = %s AND locked_until > now()"
                               " RETURNING 1",
                               (queue, _token(lock_token))).fetchone()
        if row is None:
            raise self._lock_lost(queue, lock_token)

    def abandon(self, queue: str, lock_token: str, error_description: str | None = None) -> None:
        """Release the lock; after the last allowed delivery the message is dead-lettered instead."""
        definition = self._queue(queue)
        with self._pool.connection() as conn:
            row = conn.execute(_ABANDON, {
                "queue": queue, "token": _token(lock_token), "description": error_description,
                "max_delivery": definition.max_delivery_count,
            }).fetchone()
            if row is not None and row[0] == "active":
                conn.execute("SELECT pg_notify(%s, '')", (channel_name(queue),))
        if row is None:
            raise self._lock_lost(queue, lock_token)

    def dead_letter(self, queue: str, lock_token: str, reason: str, description: str | None = None) -> None:
        self._queue(queue)
        with self._pool.connection() as conn:
            row = conn.execute("SELECT state FROM bus.messages WHERE queue = %s AND lock_token = %s"
                               " AND locked_until > now() FOR UPDATE",
                               (queue, _token(lock_token))).fetchone()
            if row is None:
                raise self._lock_lost(queue, lock_token)
            if row[0] == "deadlettered":
                raise ValueError(f"queue {queue!r}: the message locked by {lock_token} is already dead-lettered")
            conn.execute(
                "UPDATE bus.messages SET state = 'deadlettered', dead_letter_reason = %s,"
                " dead_letter_error_description = %s, dead_lettered_at = now(), lock_token = NULL,"
                " locked_until = NULL, visible_at = now() WHERE queue = %s AND lock_token = %s",
                (reason, description, queue, _token(lock_token)),
            )

    @staticmethod
    def _lock_lost(queue: str, lock_token: str) -> LockLostError:
        return LockLostError(f"queue {queue!r}: lock {lock_token} is not held (unknown, settled, or the "
                             "lock expired)")

    # --- inspection ------------------------------------------------------------------------------

    def expire(self, queue: str) -> int:
        """Dead-letter (or drop) the queue's expired and lock-expired exhausted messages now.

        receive does this for the messages it comes across; peek and counts call this so that
        what they show is current. Returns how many messages were moved.
        """
        definition = self._queue(queue)
        with self._pool.connection() as conn:
            row = conn.execute(_SWEEP, {
                "queue": queue, "max_delivery": definition.max_delivery_count,
                "expiry_to_dlq": definition.dead_lettering_on_message_expiration,
            }).fetchone()
        return int(row[0]) if row else 0

    def peek(self, queue: str, *, dead_letter: bool = False, max_messages: int = 100,
             from_sequence_number: int = 0) -> list[ReceivedMessage]:
        """Messages in sequence order without locking them (active includes scheduled ones)."""
        self.expire(queue)
        with self._pool.connection() as conn:
            rows = conn.execute(
                f"SELECT {_fields('m', peek=True)} FROM bus.messages m"
                " WHERE m.queue = %s AND m.state = %s AND m.sequence_number >= %s"
                " ORDER BY m.sequence_number LIMIT %s",
                (queue, "deadlettered" if dead_letter else "active", from_sequence_number, max_messages),
            ).fetchall()
        return [_message(row) for row in rows]

    def counts(self, queue: str) -> QueueCounts:
        self.expire(queue)
        with self._pool.connection() as conn:
            active, scheduled, dead, oldest = conn.execute(_COUNTS, (queue,)).fetchone()
        return QueueCounts(queue=queue, active=active, scheduled=scheduled, dead_lettered=dead,
                           oldest_active_enqueued_utc=_utc(oldest))

    def close(self) -> None:
        """Stop listening. The connection pool is shared per process and closed by its owner."""
        with self._listener_lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()


class _Listener:
    """One LISTEN connection on a background thread; counts notifications per queue and wakes waiters.

    Reconnects after the database restarts, and then wakes every waiter, since notifications sent
    while it was disconnected are lost.
    """

    POLL = 0.2  # seconds between checks for stop()

    def __init__(self, database_url: str, queues: list[str]):
        self._url = database_url
        self._queues = {channel_name(q): q for q in queues}
        self._generations = dict.fromkeys(queues, 0)
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bus-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        self._thread.join(timeout=self.POLL * 4)

    def generation(self, queue: str) -> int:
        with self._changed:
            return self._generations[queue]

    def wait(self, queue: str, seen: int, timeout: float) -> None:
        if timeout <= 0:
            return
        with self._changed:
            self._changed.wait_for(
                lambda: self._generations[queue] != seen or self._stopping.is_set(), timeout)

    def _bump(self, queues: list[str]) -> None:
        with self._changed:
            for q in queues:
                self._generations[q] += 1
            self._changed.notify_all()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with connect(self._url, autocommit=True) as conn:
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

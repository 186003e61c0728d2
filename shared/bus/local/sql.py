"""The local queue engine's SQL (tables in schema `bus`, see shared/db/migrations/0001_bus.sql).

Statements whose parts vary are composed with psycopg.sql from fixed fragments; nothing here is
built from values. Parameters are named (%(queue)s, ...) and documented per statement. Composed
statements are rendered to text once (`_text`), not on every execute: receive and complete are
the hot path of every consumer.
"""
from __future__ import annotations

from functools import cache

from psycopg import sql


def _text(statement: sql.Composable) -> str:
    return statement.as_string(None)


# Lock bookkeeping (receive, renew, complete) commits without waiting for its WAL flush. A crash can
# lose only the last such changes, and losing one means a message is delivered again, which every
# consumer tolerates (at-least-once). Nothing durable can depend on a lost one: WAL is flushed in
# order, so any later ordinary commit (a stage's work, a send) flushes it too. Evaluated per row,
# so a statement that changed nothing changes no setting (and such a transaction flushes nothing).
_NO_FLUSH_WAIT = "set_config('synchronous_commit', 'off', true)"


# The ReceivedMessage fields, in order, for a row aliased `alias`. A peek holds no lock, so it shows
# no token, and a lock that ran out as none.
_FIELDS = """{a}.queue, {a}.sequence_number, {a}.message_id, {a}.body, {a}.content_type, {a}.correlation_id,
 {a}.application_properties, {a}.delivery_count, {a}.enqueued_at, {a}.scheduled_enqueue_at,
 {a}.expires_at, {lock_token}, {locked_until},
 CASE WHEN {a}.state = 'active' AND {a}.scheduled_enqueue_at > now() THEN 'scheduled' ELSE {a}.state END,
 {a}.dead_letter_reason, {a}.dead_letter_error_description, {a}.dead_lettered_at"""


def fields(alias: str, *, peek: bool = False) -> sql.Composed:
    a = sql.Identifier(alias)
    if peek:
        lock_token = sql.SQL("NULL::uuid")
        locked_until = sql.SQL("CASE WHEN {a}.locked_until > now() THEN {a}.locked_until END").format(a=a)
    else:
        lock_token = sql.SQL("{a}.lock_token").format(a=a)
        locked_until = sql.SQL("{a}.locked_until").format(a=a)
    return sql.SQL(_FIELDS).format(a=a, lock_token=lock_token, locked_until=locked_until)


# --- send: %(queue)s %(channel)s %(window)s and one array per column ---------------------------------

# Claims each id for the duplicate window; an id still inside its window makes the conflict update a
# no-op, so its message is not in `fresh` and is dropped. Concurrent senders of one id serialize here.
_FRESH = sql.SQL(""", fresh AS (
    INSERT INTO bus.seen_message_ids AS s (queue, message_id, expires_at)
    SELECT %(queue)s, message_id, now() + %(window)s FROM input
    ON CONFLICT (queue, message_id) DO UPDATE SET expires_at = excluded.expires_at
        WHERE s.expires_at <= now()
    RETURNING message_id
)""")

# One statement, one transaction, one NOTIFY (only if something receivable now was inserted: a
# message scheduled for later is found by consumers' NEXT_VISIBLE when it falls due).
_SEND = """
WITH input AS (
    SELECT * FROM unnest(%(ids)s::text[], %(bodies)s::bytea[], %(content_types)s::text[],
                         %(correlation_ids)s::text[], %(properties)s::jsonb[],
                         %(scheduled)s::timestamptz[], %(ttls)s::float8[])
        WITH ORDINALITY AS i(message_id, body, content_type, correlation_id, properties, scheduled, ttl, ord)
){fresh}, inserted AS (
    INSERT INTO bus.messages (queue, message_id, body, content_type, correlation_id,
                              application_properties, enqueued_at, scheduled_enqueue_at, expires_at,
                              visible_at)
    SELECT %(queue)s, i.message_id, i.body, i.content_type, i.correlation_id, i.properties,
           greatest(now(), i.scheduled), i.scheduled,
           greatest(now(), i.scheduled) + make_interval(secs => i.ttl), coalesce(i.scheduled, now())
    FROM input i {fresh_filter}
    ORDER BY i.ord
    RETURNING visible_at <= now() AS due
)
SELECT n, (SELECT pg_notify(%(channel)s, '') WHERE due > 0)
FROM (SELECT count(*) AS n, count(*) FILTER (WHERE due) AS due FROM inserted) c
"""


@cache
def send(dedupe: bool) -> str:
    return _text(sql.SQL(_SEND).format(
        fresh=_FRESH if dedupe else sql.SQL(""),
        fresh_filter=sql.SQL("WHERE i.message_id IN (SELECT message_id FROM fresh)" if dedupe else ""),
    ))


# %(queue)s %(ids)s: scheduled messages withdrawn unless a consumer has already taken them.
CANCEL_SCHEDULED = """
WITH gone AS (
    DELETE FROM bus.messages
    WHERE queue = %(queue)s AND state = 'active' AND message_id = ANY(%(ids)s) AND delivery_count = 0
    RETURNING 1
)
SELECT count(*) FROM gone
"""

PURGE_SEEN_IDS = "DELETE FROM bus.seen_message_ids WHERE queue = %(queue)s AND expires_at <= now()"

# --- retiring: %(expiry_to_dlq)s ----------------------------------------------------------------------

# Messages past their time-to-live, or out of deliveries, leave the queue instead of being delivered:
# dropped, or moved to the dead-letter sub-queue. Shared by receive and the expiry sweep; `src` is a
# CTE of locked rows with columns (sequence_number, expired, exhausted).
# A message entering the dead-letter sub-queue gets a new sequence number, as in Service Bus (its
# sub-queue numbers messages in the order they arrive), so a reader that remembers the highest
# number it has seen (the dead-letter sweep) also sees a message that dies later with a lower one.
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
        dead_lettered_at = now(), lock_token = NULL, locked_until = NULL, visible_at = now(),
        sequence_number = DEFAULT
    FROM {src} c
    WHERE m.sequence_number = c.sequence_number
      AND ((c.expired AND %(expiry_to_dlq)s) OR (c.exhausted AND NOT c.expired))
    RETURNING 1
"""


def _retire(src: str) -> sql.Composed:
    return sql.SQL(_RETIRE).format(src=sql.Identifier(src))


# --- receive: %(queue)s %(state)s %(dead_letter)s %(max_delivery)s %(lock)s %(n)s [%(ids)s] -----------

# Takes up to n receivable messages in one statement; on the way, dead-letters (or drops) those that
# expired or whose lock ran out after their last allowed delivery, and locks the rest. One row per
# message taken: the first column says whether it was delivered (the others are NULL if not).
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
SELECT l.lock_token IS NOT NULL, {fields}, """ + _NO_FLUSH_WAIT + """
FROM picked p LEFT JOIN live l USING (sequence_number)
ORDER BY p.sequence_number
"""


@cache
def receive(by_id: bool) -> str:
    return _text(sql.SQL(_RECEIVE).format(
        ids_filter=sql.SQL("AND message_id = ANY(%(ids)s)" if by_id else ""),
        retire=_retire("picked"), fields=fields("l"),
    ))


# The expiry sweep: %(queue)s %(max_delivery)s %(expiry_to_dlq)s; answers how many messages moved.
EXPIRE = _text(sql.SQL("""
WITH doomed AS (
    SELECT sequence_number, expires_at <= now() AS expired, delivery_count >= %(max_delivery)s AS exhausted
    FROM bus.messages
    WHERE queue = %(queue)s AND state = 'active' AND visible_at <= now()
      AND (expires_at <= now() OR delivery_count >= %(max_delivery)s)
    FOR UPDATE SKIP LOCKED
{retire})
SELECT (SELECT count(*) FROM dropped) + (SELECT count(*) FROM dead)
""").format(retire=_retire("doomed")))

# Seconds until the queue's next message becomes receivable (scheduled, or its lock runs out).
NEXT_VISIBLE = """
SELECT extract(epoch FROM min(visible_at) - now())::float8 FROM bus.messages
WHERE queue = %(queue)s AND state = 'active'
"""

# --- settling: a token settles only while its lock is held (locked_until in the future) --------------

# %(queue)s %(lock)s %(token)s
RENEW_LOCK = """
UPDATE bus.messages SET locked_until = now() + %(lock)s, visible_at = now() + %(lock)s
WHERE queue = %(queue)s AND lock_token = %(token)s AND locked_until > now()
RETURNING locked_until, """ + _NO_FLUSH_WAIT

# %(queue)s %(token)s. One token on its own: `= ANY(array)` costs a third more per message.
COMPLETE = """
DELETE FROM bus.messages
WHERE queue = %(queue)s AND lock_token = %(token)s AND locked_until > now()
RETURNING lock_token, """ + _NO_FLUSH_WAIT

# %(queue)s %(tokens)s: every held token of the list in one statement; answers the ones completed.
COMPLETE_MANY = """
DELETE FROM bus.messages
WHERE queue = %(queue)s AND lock_token = ANY(%(tokens)s::uuid[]) AND locked_until > now()
RETURNING lock_token, """ + _NO_FLUSH_WAIT

# %(queue)s %(token)s %(max_delivery)s %(description)s: releases the lock; after the last allowed
# delivery the message is dead-lettered instead. Two updates of disjoint rows, since only DEFAULT may
# set the sequence number (no CASE); answers the message's state, or nothing if the lock is not held.
_HELD = "queue = %(queue)s AND lock_token = %(token)s AND locked_until > now()"
_EXHAUSTED = "state = 'active' AND delivery_count >= %(max_delivery)s"
ABANDON = _text(sql.SQL("""
WITH dead AS (
    UPDATE bus.messages SET
        state = 'deadlettered', dead_letter_reason = 'MaxDeliveryCountExceeded',
        dead_letter_error_description = %(description)s, dead_lettered_at = now(),
        lock_token = NULL, locked_until = NULL, visible_at = now(), sequence_number = DEFAULT
    WHERE {held} AND {exhausted}
    RETURNING state
), released AS (
    UPDATE bus.messages SET lock_token = NULL, locked_until = NULL, visible_at = now()
    WHERE {held} AND NOT ({exhausted})
    RETURNING state
)
SELECT state FROM dead UNION ALL SELECT state FROM released
""").format(held=sql.SQL(_HELD), exhausted=sql.SQL(_EXHAUSTED)))

NOTIFY = "SELECT pg_notify(%(channel)s, '')"

# %(queue)s %(token)s
LOCKED_STATE = """
SELECT state FROM bus.messages
WHERE queue = %(queue)s AND lock_token = %(token)s AND locked_until > now()
FOR UPDATE
"""

# %(queue)s %(token)s %(reason)s %(description)s
# The lock token stays on the dead letter (no longer a lock: locked_until is NULL), so the holder's
# later complete can tell that it settled the message itself (SETTLED_BY_HOLDER).
DEAD_LETTER = """
UPDATE bus.messages SET state = 'deadlettered', dead_letter_reason = %(reason)s,
    dead_letter_error_description = %(description)s, dead_lettered_at = now(),
    locked_until = NULL, visible_at = now(), sequence_number = DEFAULT
WHERE queue = %(queue)s AND lock_token = %(token)s
"""

# %(queue)s %(tokens)s
SETTLED_BY_HOLDER = """
SELECT lock_token FROM bus.messages
WHERE queue = %(queue)s AND lock_token = ANY(%(tokens)s::uuid[]) AND state = 'deadlettered' AND locked_until IS NULL
"""

# --- inspection ---------------------------------------------------------------------------------------

# %(queue)s %(state)s %(from_sequence_number)s %(n)s
PEEK = _text(sql.SQL("""
SELECT {fields} FROM bus.messages m
WHERE m.queue = %(queue)s AND m.state = %(state)s AND m.sequence_number >= %(from_sequence_number)s
ORDER BY m.sequence_number
LIMIT %(n)s
""").format(fields=fields("m", peek=True)))

# %(queue)s
COUNTS = """
SELECT count(*) FILTER (WHERE state = 'active' AND NOT coalesce(scheduled_enqueue_at > now(), false)),
       count(*) FILTER (WHERE state = 'active' AND scheduled_enqueue_at > now()),
       count(*) FILTER (WHERE state = 'deadlettered'),
       min(enqueued_at) FILTER (WHERE state = 'active' AND NOT coalesce(scheduled_enqueue_at > now(), false))
FROM bus.messages WHERE queue = %(queue)s
"""

PING = "SELECT 1 FROM bus.messages LIMIT 0"

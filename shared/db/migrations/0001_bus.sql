-- The local queue engine (shared/bus/local_engine.py): Service Bus queues kept in PostgreSQL.
-- All times come from the database clock so several processes agree on locks and expiry.
CREATE SCHEMA IF NOT EXISTS bus;

CREATE TABLE bus.messages (
    sequence_number bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue text NOT NULL,
    message_id text NOT NULL,
    body bytea NOT NULL,
    content_type text,
    correlation_id text,
    application_properties jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- 'active' (includes scheduled and locked messages) or 'deadlettered' (the dead-letter sub-queue).
    state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'deadlettered')),
    enqueued_at timestamptz NOT NULL,
    scheduled_enqueue_at timestamptz,
    expires_at timestamptz NOT NULL,
    -- The earliest time a receive may take the message: its scheduled time, or when its lock ends.
    visible_at timestamptz NOT NULL,
    delivery_count integer NOT NULL DEFAULT 0,
    lock_token uuid,
    locked_until timestamptz,
    dead_letter_reason text,
    dead_letter_error_description text,
    dead_lettered_at timestamptz
);

-- receive and peek walk a queue's messages in sequence order.
CREATE INDEX messages_queue_order ON bus.messages (queue, state, sequence_number);
-- The expiry sweep only looks at active messages past their time-to-live.
-- Finding whether anything is receivable now (wait_for_messages) without walking locked messages.
CREATE INDEX messages_queue_visible ON bus.messages (queue, visible_at) WHERE state = 'active';
CREATE INDEX messages_queue_expiry ON bus.messages (queue, expires_at) WHERE state = 'active';
CREATE UNIQUE INDEX messages_lock_token ON bus.messages (lock_token) WHERE lock_token IS NOT NULL;

-- Message ids seen per queue, kept for the duplicate detection window even after the message
-- itself is completed, so a resend within the window is dropped.
CREATE TABLE bus.seen_message_ids (
    queue text NOT NULL,
    message_id text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (queue, message_id)
);

CREATE INDEX seen_message_ids_expiry ON bus.seen_message_ids (queue, expires_at);

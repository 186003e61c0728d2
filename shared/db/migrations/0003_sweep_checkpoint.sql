-- The dead-letter sweep's progress (shared/ops/sweep.py), for the local engine and Azure alike:
-- per queue, the dead-letter sequence number up to which every dead letter has been reported as
-- `failed`. Dead-letter sub-queues number messages in the order they die, so the next sweep reads
-- only what died since. Delete a queue's row if the queue is re-created (its numbers restart).
CREATE TABLE dead_letter_sweep_checkpoints (
    queue                text PRIMARY KEY,
    last_sequence_number bigint NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
